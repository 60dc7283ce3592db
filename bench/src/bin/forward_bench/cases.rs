//! The measured cases and one slice's sample.

use std::net::Ipv4Addr;

use crate::topology::{VIP_NFT, VIP_PRESERVE, VIP_PROXY, VIP_SINK, VIP_SNAT};

// ---------------------------------------------------------------- the cases

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Case {
    Ceiling,
    MinFwd,
    XlbSnat,
    XlbPreserve,
    Nft,
    Nginx,
}

impl Case {
    pub(crate) const ALL: [Case; 6] =
        [Case::Ceiling, Case::MinFwd, Case::XlbSnat, Case::XlbPreserve, Case::Nft, Case::Nginx];

    pub(crate) fn key(self) -> &'static str {
        match self {
            Case::Ceiling => "generator",
            Case::MinFwd => "min_fwd",
            Case::XlbSnat => "xlb_snat",
            Case::XlbPreserve => "xlb_preserve",
            Case::Nft => "nft_dnat",
            Case::Nginx => "nginx_udp_proxy",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Case::Ceiling => "generator -> XDP_DROP (ceiling)",
            Case::MinFwd => "minimal XDP forwarder",
            Case::XlbSnat => "xlb, source: snat",
            Case::XlbPreserve => "xlb, source: preserve",
            Case::Nft => "nftables DNAT",
            Case::Nginx => "nginx stream (UDP proxy)",
        }
    }

    /// The generator veth index (g<x>) and the frame's destination.
    pub(crate) fn target(self) -> (u8, Ipv4Addr) {
        match self {
            Case::Ceiling => (3, VIP_SINK),
            Case::MinFwd => (0, VIP_SNAT),
            Case::XlbSnat => (1, VIP_SNAT),
            Case::XlbPreserve => (1, VIP_PRESERVE),
            Case::Nft => (2, VIP_NFT),
            Case::Nginx => (2, VIP_PROXY),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    pub(crate) offered: u64,
    pub(crate) delivered: u64,
    /// Delivered to backend 0 (spread).
    pub(crate) delivered0: u64,
    pub(crate) secs: f64,
    /// CPU time other processes used meanwhile (seconds over all CPUs).
    pub(crate) foreign: f64,
    /// Seconds the kernel spent running the generator (the rest of the
    /// slice went to system-call and dispatcher overhead).
    pub(crate) gen_busy: f64,
}

impl Sample {
    pub(crate) fn add(&mut self, o: Sample) {
        self.offered += o.offered;
        self.delivered += o.delivered;
        self.delivered0 += o.delivered0;
        self.secs += o.secs;
        self.foreign += o.foreign;
        self.gen_busy += o.gen_busy;
    }
    pub(crate) fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.secs
    }
    pub(crate) fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.secs
    }
}
