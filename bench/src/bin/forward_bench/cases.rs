//! The measured cases and one slice's sample.

use std::net::Ipv4Addr;

use crate::topology::{VIP_FALLBACK, VIP_NFT, VIP_PRESERVE, VIP_PROXY, VIP_SINK, VIP_SNAT, VIP_TC, VIP_UNTRACKED};

/// The generator's traffic: how long its flows live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Traffic {
    /// `--ports` flows picked at random, every packet (the flood classes):
    /// after the warm-up every flow is established.
    Flood,
    /// Every packet a new flow (DNS-like): a new (source address, port)
    /// per packet from a pool of [`CHURN_POOL`] tuples.
    NewPerPacket,
    /// Flows of 10 consecutive packets, each a new tuple from the same pool.
    Flows10,
}

/// Distinct tuples of the churn classes: 64512 source ports (1024..)
/// times 252 source addresses (10.200.x.2..=253). They are used in turn, so
/// a tuple comes back only after 16 M others: longer ago than any
/// connection table holds (xlb's `--flow-table-size` is at most 64 M but 1 M
/// by default; conntrack's `nf_conntrack_max` is smaller still), so the
/// tables see no reuse.
pub(crate) const CHURN_POOL: u64 = 64512 * 252;

impl Traffic {
    /// Packets per flow for the generator (0: the flood's random ports).
    pub(crate) fn flow_packets(self) -> u32 {
        match self {
            Traffic::Flood => 0,
            Traffic::NewPerPacket => 1,
            Traffic::Flows10 => 10,
        }
    }
}

// ---------------------------------------------------------------- the cases

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Case {
    Ceiling,
    MinFwd,
    XlbSnat,
    XlbPreserve,
    Nft,
    Nginx,
    /// Every packet a new flow, through the minimal forwarder (which keeps
    /// no state: its baseline).
    MinFwdNew,
    XlbPreserveNew,
    NftNew,
    XlbPreserveFlows10,
    NftFlows10,
    /// xlb's `flow_tracking: none` service, every packet a new flow.
    XlbUntrackedNew,
    /// The skb path to a veth whose peer runs no XDP: a minimal tc
    /// forwarder with `bpf_redirect_neigh` (what xlb's fallback uses) ...
    TcNeigh,
    /// ... and with `bpf_redirect_peer`.
    TcPeer,
    /// xlb (preserve) to backends behind such veths: its fallback, which
    /// sends into them with `bpf_redirect_peer` ...
    XlbFallback,
    /// ... and with `bpf_redirect_neigh` (a `clsact` qdisc on b4/b5 while
    /// it is measured takes them off the peer redirect).
    XlbFallbackNeigh,
}

impl Case {
    pub(crate) const ALL: [Case; 16] = [
        Case::Ceiling,
        Case::MinFwd,
        Case::XlbSnat,
        Case::XlbPreserve,
        Case::Nft,
        Case::Nginx,
        Case::MinFwdNew,
        Case::XlbPreserveNew,
        Case::NftNew,
        Case::XlbPreserveFlows10,
        Case::NftFlows10,
        Case::XlbUntrackedNew,
        Case::TcNeigh,
        Case::TcPeer,
        Case::XlbFallback,
        Case::XlbFallbackNeigh,
    ];

    /// The generator's traffic toward this case.
    pub(crate) fn traffic(self) -> Traffic {
        match self {
            Case::MinFwdNew | Case::XlbPreserveNew | Case::NftNew | Case::XlbUntrackedNew => Traffic::NewPerPacket,
            Case::XlbPreserveFlows10 | Case::NftFlows10 => Traffic::Flows10,
            _ => Traffic::Flood,
        }
    }

    /// nftables DNAT (whose table is loaded only while it is measured).
    pub(crate) fn is_nft(self) -> bool {
        matches!(self, Case::Nft | Case::NftNew | Case::NftFlows10)
    }

    /// The baseline `base` (min_fwd, nft DNAT or nginx) measured with the
    /// same traffic as this case, if there is one.
    pub(crate) fn baseline(self, base: Case) -> Option<Case> {
        match (self.traffic(), base) {
            (Traffic::Flood, b) => Some(b),
            (Traffic::NewPerPacket, Case::MinFwd) => Some(Case::MinFwdNew),
            (Traffic::NewPerPacket, Case::Nft) => Some(Case::NftNew),
            // min_fwd keeps no state: the flows' length changes nothing for it.
            (Traffic::Flows10, Case::MinFwd) => Some(Case::MinFwdNew),
            (Traffic::Flows10, Case::Nft) => Some(Case::NftFlows10),
            _ => None,
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Case::Ceiling => "generator",
            Case::MinFwd => "min_fwd",
            Case::XlbSnat => "xlb_snat",
            Case::XlbPreserve => "xlb_preserve",
            Case::Nft => "nft_dnat",
            Case::Nginx => "nginx_udp_proxy",
            Case::MinFwdNew => "min_fwd_new_flows",
            Case::XlbPreserveNew => "xlb_preserve_new_flows",
            Case::NftNew => "nft_dnat_new_flows",
            Case::XlbPreserveFlows10 => "xlb_preserve_flows_of_10",
            Case::NftFlows10 => "nft_dnat_flows_of_10",
            Case::XlbUntrackedNew => "xlb_untracked_new_flows",
            Case::TcNeigh => "tc_redirect_neigh",
            Case::TcPeer => "tc_redirect_peer",
            Case::XlbFallback => "xlb_preserve_skb_fallback",
            Case::XlbFallbackNeigh => "xlb_preserve_skb_fallback_neigh",
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
            Case::MinFwdNew => "new flow/packet: minimal XDP fwd",
            Case::XlbPreserveNew => "new flow/packet: xlb, preserve",
            Case::NftNew => "new flow/packet: nftables DNAT",
            Case::XlbPreserveFlows10 => "10-packet flows: xlb, preserve",
            Case::NftFlows10 => "10-packet flows: nftables DNAT",
            Case::XlbUntrackedNew => "new flow/packet: xlb, untracked",
            Case::TcNeigh => "no XDP on peer: tc, redirect_neigh",
            Case::TcPeer => "no XDP on peer: tc, redirect_peer",
            Case::XlbFallback => "no XDP on peer: xlb, preserve (redirect_peer)",
            Case::XlbFallbackNeigh => "no XDP on peer: xlb, preserve, clsact on b4/b5 (redirect_neigh)",
        }
    }

    /// The generator veth index (g<x>) and the frame's destination.
    pub(crate) fn target(self) -> (u8, Ipv4Addr) {
        match self {
            Case::Ceiling => (3, VIP_SINK),
            Case::MinFwd | Case::MinFwdNew => (0, VIP_SNAT),
            Case::XlbSnat => (1, VIP_SNAT),
            Case::XlbPreserve | Case::XlbPreserveNew | Case::XlbPreserveFlows10 => (1, VIP_PRESERVE),
            Case::Nft | Case::NftNew | Case::NftFlows10 => (2, VIP_NFT),
            Case::XlbUntrackedNew => (1, VIP_UNTRACKED),
            Case::TcNeigh | Case::TcPeer => (4, VIP_TC),
            Case::XlbFallback | Case::XlbFallbackNeigh => (1, VIP_FALLBACK),
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
