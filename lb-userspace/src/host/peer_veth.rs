//! Which of this namespace's veths the tc program may send packets straight
//! into the peer of (`bpf_redirect_peer`, [`lb_common::IF_F_PEER`]) instead
//! of out of the host side (`bpf_redirect_neigh`).
//!
//! `bpf_redirect_peer` hands the packet to the peer device's receive path
//! in the pod's namespace: no transmit on the host side, no backlog queue
//! (measured 1.25–1.45× the packets per second of `bpf_redirect_neigh`,
//! docs/BENCHMARKS.md). It skips exactly what runs on the host side's way
//! out and the peer's XDP, so a veth qualifies only when that is nothing:
//!
//! * its peer is in another network namespace (the kernel drops a peer
//!   redirect within one namespace) and the link is up;
//! * its root qdisc is `noqueue` (no shaping, e.g. the bandwidth plugin's
//!   `tbf`), and it has no `clsact`/`ingress` qdisc (tc filters, as
//!   Calico's and other CNIs' policy programs use) and no tcx egress
//!   program;
//! * its peer has neither an XDP program nor NAPI (the kernel's
//!   `ndo_xmit` XDP feature of the host side is off; when the kernel does
//!   not say, the veth does not qualify).
//!
//! [`decide`] is pure; [`scan`] asks the kernel (a link dump, a qdisc dump,
//! a tcx query per veth). The agent re-scans on link and qdisc events and
//! every `RECHECK_EVERY` (`agent::xdp_paths`): a tcx program attached later
//! makes no netlink event, so until the next re-check (at most 2 s) its
//! veth may still get peer redirects.
use std::{
    collections::{BTreeMap, HashMap},
    io,
};

use aya::programs::tc::{SchedClassifier, TcAttachType};

use crate::host::{
    rtnetlink::{self, attrs},
    xdp_features::Features,
};

/// `IFLA_IFNAME`.
const IFLA_IFNAME: u16 = 3;
/// `IFLA_LINKINFO` (nested).
const IFLA_LINKINFO: u16 = 18;
/// `IFLA_INFO_KIND`, inside `IFLA_LINKINFO`.
const IFLA_INFO_KIND: u16 = 1;
/// `IFLA_LINK_NETNSID`: the peer's namespace, as this namespace numbers it.
const IFLA_LINK_NETNSID: u16 = 37;
/// `TCA_KIND`.
const TCA_KIND: u16 = 1;
/// `TC_H_ROOT`.
const TC_H_ROOT: u32 = 0xffff_ffff;
/// `TC_H_INGRESS` (also `clsact`'s parent).
const TC_H_INGRESS: u32 = 0xffff_fff1;

/// What is known about one veth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Interface name.
    pub name: String,
    /// Administratively up.
    pub up: bool,
    /// The peer is in another namespace (`IFLA_LINK_NETNSID` present).
    pub peer_elsewhere: bool,
    /// Kind of the root qdisc (`None`: the dump showed none).
    pub root_qdisc: Option<String>,
    /// Kind of the `clsact`/`ingress` qdisc, if any.
    pub tc_qdisc: Option<String>,
    /// tcx egress programs (`None`: the query failed).
    pub tcx_egress: Option<usize>,
    /// The host side's `ndo_xmit` XDP feature: the peer has an XDP program
    /// or NAPI (`None`: the kernel does not say).
    pub peer_xdp_or_napi: Option<bool>,
}

/// Why a veth does not qualify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The link is down.
    #[error("link down")]
    Down,
    /// The peer is in this namespace.
    #[error("peer in this namespace")]
    PeerHere,
    /// A root qdisc other than `noqueue`.
    #[error("root qdisc {0} on the way out")]
    Qdisc(String),
    /// A `clsact`/`ingress` qdisc: tc filters may run on the way out.
    #[error("{0} qdisc (tc filters)")]
    TcQdisc(String),
    /// tcx egress programs.
    #[error("{0} tcx egress program(s)")]
    Tcx(usize),
    /// The tcx query failed.
    #[error("tcx egress programs not known")]
    TcxUnknown,
    /// The peer has an XDP program or NAPI.
    #[error("peer has XDP or NAPI")]
    PeerXdp,
    /// The kernel does not report the XDP features.
    #[error("peer's XDP state not known")]
    PeerUnknown,
}

/// Whether the tc program may redirect into this veth's peer.
pub fn decide(f: &Facts) -> Result<(), Refusal> {
    if !f.up {
        return Err(Refusal::Down);
    }
    if !f.peer_elsewhere {
        return Err(Refusal::PeerHere);
    }
    match f.root_qdisc.as_deref() {
        Some("noqueue") => {}
        other => return Err(Refusal::Qdisc(other.unwrap_or("none").to_owned())),
    }
    if let Some(kind) = &f.tc_qdisc {
        return Err(Refusal::TcQdisc(kind.clone()));
    }
    match f.tcx_egress {
        None => return Err(Refusal::TcxUnknown),
        Some(0) => {}
        Some(n) => return Err(Refusal::Tcx(n)),
    }
    match f.peer_xdp_or_napi {
        None => Err(Refusal::PeerUnknown),
        Some(true) => Err(Refusal::PeerXdp),
        Some(false) => Ok(()),
    }
}

/// A link of the dump: (ifindex, name, up, veth, peer elsewhere).
#[derive(Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
    /// `IFF_UP`.
    pub up: bool,
    /// `IFLA_INFO_KIND` is `veth`.
    pub veth: bool,
    /// `IFLA_LINK_NETNSID` present.
    pub peer_elsewhere: bool,
}

/// The link of an `RTM_NEWLINK` payload.
pub fn parse_link(payload: &[u8]) -> Option<Link> {
    let ifindex = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let flags = u32::from_ne_bytes(payload.get(8..12)?.try_into().ok()?);
    let mut link =
        Link { ifindex, name: String::new(), up: flags & libc::IFF_UP as u32 != 0, veth: false, peer_elsewhere: false };
    for (kind, value) in attrs(payload.get(16..)?) {
        match kind {
            IFLA_IFNAME => link.name = c_string(value),
            IFLA_LINKINFO => link.veth = attrs(value).any(|(k, v)| k == IFLA_INFO_KIND && c_string(v) == "veth"),
            IFLA_LINK_NETNSID => link.peer_elsewhere = true,
            _ => {}
        }
    }
    Some(link)
}

/// A qdisc of the dump: (ifindex, parent, kind).
pub fn parse_qdisc(payload: &[u8]) -> Option<(u32, u32, String)> {
    let ifindex = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let parent = u32::from_ne_bytes(payload.get(12..16)?.try_into().ok()?);
    let kind = attrs(payload.get(20..)?).find(|(k, _)| *k == TCA_KIND).map(|(_, v)| c_string(v))?;
    Some((ifindex, parent, kind))
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// Every veth of this namespace with its facts.
pub fn scan(features: Option<&Features>) -> io::Result<BTreeMap<u32, Facts>> {
    // ifinfomsg: AF_UNSPEC, everything else 0.
    let links = rtnetlink::dump(&rtnetlink::dump_request(libc::RTM_GETLINK, 1, &[0u8; 16]), 1, libc::RTM_NEWLINK)?;
    let veths: Vec<Link> = links.iter().filter_map(|p| parse_link(p)).filter(|l| l.veth).collect();
    if veths.is_empty() {
        return Ok(BTreeMap::new());
    }
    // tcmsg: AF_UNSPEC, every device.
    let qdiscs = rtnetlink::dump(&rtnetlink::dump_request(libc::RTM_GETQDISC, 2, &[0u8; 20]), 2, libc::RTM_NEWQDISC)?;
    let mut root: HashMap<u32, String> = HashMap::new();
    let mut tc: HashMap<u32, String> = HashMap::new();
    for (ifindex, parent, kind) in qdiscs.iter().filter_map(|p| parse_qdisc(p)) {
        match parent {
            TC_H_ROOT => {
                root.insert(ifindex, kind);
            }
            TC_H_INGRESS => {
                tc.insert(ifindex, kind);
            }
            _ => {}
        }
    }
    Ok(veths
        .into_iter()
        .map(|l| {
            let tcx_egress = SchedClassifier::query_tcx(&l.name, TcAttachType::Egress).ok().map(|(_, p)| p.len());
            let peer_xdp_or_napi = features.and_then(|f| f.ndo_xmit(l.ifindex).ok());
            let facts = Facts {
                up: l.up,
                peer_elsewhere: l.peer_elsewhere,
                root_qdisc: root.remove(&l.ifindex),
                tc_qdisc: tc.remove(&l.ifindex),
                tcx_egress,
                peer_xdp_or_napi,
                name: l.name,
            };
            (l.ifindex, facts)
        })
        .collect())
}

#[cfg(test)]
mod tests;
