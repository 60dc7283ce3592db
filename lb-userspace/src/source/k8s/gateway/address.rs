//! Gateway addresses from `--vip-pool`, for the agent holding the
//! allocator Lease: the same pools and allocator as Services'
//! ([`crate::source::k8s::address`]), each address given once across
//! Services and Gateways.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use super::translate::{AddressProblem, ObjKey, Translation};
use crate::source::k8s::address::allocate;

/// The addresses the Gateways of ours hold (static or from their status).
pub fn in_use(t: &Translation) -> BTreeSet<IpAddr> {
    t.gateways.values().filter_map(|g| g.address.as_ref().ok().copied()).collect()
}

/// Addresses to give the Gateways waiting for one (in claim order), none
/// of them in `used` (the Services' and the Gateways' own).
pub fn plan(t: &Translation, used: &BTreeSet<IpAddr>, pools: &[IpNet]) -> BTreeMap<ObjKey, IpAddr> {
    let mut used = used.clone();
    used.extend(in_use(t));
    let mut waiting: Vec<(&ObjKey, _)> = t
        .gateways
        .iter()
        .filter(|(_, g)| !g.static_address && matches!(g.address, Err(AddressProblem::NotAssigned(_))))
        .collect();
    waiting.sort_by(|a, b| a.1.rank.cmp(&b.1.rank));
    let mut out = BTreeMap::new();
    for (k, _) in waiting {
        let Some(ip) = allocate(pools, &used) else { break };
        used.insert(ip);
        out.insert(k.clone(), ip);
    }
    out
}
