//! Which addresses (VIPs) a Service gets: the ones in its status, else the
//! one it asks for (`spec.loadBalancerIP`, else the `xlb.io/vip`
//! annotation); and, for the elected allocator, which addresses to write
//! into Services' status from the `--vip-pool` ranges.
use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;

/// Annotation naming the VIP(s) of a Service (comma-separated for more than one).
pub const VIP_ANNOTATION: &str = "xlb.io/vip";

/// Why a Service's address is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The VIP annotation does not parse.
    #[error("annotation {VIP_ANNOTATION}: {0:?} is not an IP address (or a comma-separated list of them); fix the annotation")]
    BadAnnotation(String),
    /// `spec.loadBalancerIP` does not parse.
    #[error("spec.loadBalancerIP: {0:?} is not an IP address; fix the field")]
    BadLoadBalancerIp(String),
    /// A requested address is in no VIP pool.
    #[error("address {0} is outside every --vip-pool of the xlb agents; pick one inside a pool or remove it to get one allocated")]
    OutsidePools(IpAddr),
}

/// Addresses in `status.loadBalancer.ingress` (entries without an IP skipped).
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// Addresses the Service asks for: `spec.loadBalancerIP`, else the
/// annotation. With pools configured they must lie inside one.
pub fn requested(svc: &Service, pools: &[IpNet]) -> Result<Vec<IpAddr>, AddressError> {
    let spec_ip = svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).filter(|s| !s.trim().is_empty());
    let ips = if let Some(text) = spec_ip {
        vec![text.trim().parse().map_err(|_| AddressError::BadLoadBalancerIp(text.to_owned()))?]
    } else if let Some(text) = svc.metadata.annotations.as_ref().and_then(|a| a.get(VIP_ANNOTATION)) {
        let parsed: Result<Vec<IpAddr>, _> = text.split(',').map(|p| p.trim().parse()).collect();
        parsed.map_err(|_| AddressError::BadAnnotation(text.clone()))?
    } else {
        Vec::new()
    };
    if !pools.is_empty() {
        if let Some(ip) = ips.iter().find(|ip| !pools.iter().any(|p| p.contains(*ip))) {
            return Err(AddressError::OutsidePools(*ip));
        }
    }
    Ok(ips)
}

/// The VIPs to program for a Service of ours, de-duplicated, in order:
/// its status addresses, else the requested ones. An invalid request is an
/// error even when the status has addresses (the user asked for something
/// that cannot be honoured).
pub fn vips(svc: &Service, pools: &[IpNet]) -> Result<Vec<IpAddr>, AddressError> {
    let asked = requested(svc, pools)?;
    let status = status_ips(svc);
    let mut seen = BTreeSet::new();
    Ok(if status.is_empty() { asked } else { status }.into_iter().filter(|ip| seen.insert(*ip)).collect())
}

/// A status the allocator should write: `ingress` IPs for `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The addresses to write as `status.loadBalancer.ingress`.
    pub ips: Vec<IpAddr>,
}

/// What the elected allocator should write. `ours` are the Services of our
/// class in claim order (oldest first), `others` the rest. A Service of ours
/// gets what it asks for, else keeps its status, else the lowest free
/// address of the first pool with one. A Service no longer ours (deleted
/// ones simply vanish) gives back the pool addresses in its status.
pub fn plan(ours: &[Arc<Service>], others: &[Arc<Service>], pools: &[IpNet]) -> Vec<StatusUpdate> {
    plan_beside(ours, others, pools, &BTreeSet::new())
}

/// [`plan`], allocating none of `taken` (the Gateways' addresses).
pub fn plan_beside(
    ours: &[Arc<Service>],
    others: &[Arc<Service>],
    pools: &[IpNet],
    taken: &BTreeSet<IpAddr>,
) -> Vec<StatusUpdate> {
    let mut used: BTreeSet<IpAddr> = taken.clone();
    let mut wanted: Vec<Option<Vec<IpAddr>>> = Vec::with_capacity(ours.len());
    for svc in ours {
        let want = match requested(svc, pools) {
            Ok(ips) if !ips.is_empty() => Some(ips),
            Ok(_) => Some(status_ips(svc)).filter(|s| !s.is_empty()),
            Err(_) => None, // reported as an Event by the translation; status left alone
        };
        used.extend(want.iter().flatten());
        wanted.push(want);
    }
    let mut out = Vec::new();
    for (svc, want) in ours.iter().zip(wanted) {
        let have = status_ips(svc);
        let want = match want {
            Some(w) => w,
            None if have.is_empty() && !pools.is_empty() => match allocate(pools, &used) {
                Some(ip) => {
                    used.insert(ip);
                    vec![ip]
                }
                None => continue,
            },
            None => continue,
        };
        if want != have {
            out.push(update(svc, want));
        }
    }
    for svc in others {
        let have = status_ips(svc);
        let keep: Vec<IpAddr> = have.iter().copied().filter(|ip| !pools.iter().any(|p| p.contains(ip))).collect();
        if keep != have {
            out.push(update(svc, keep));
        }
    }
    out
}

fn update(svc: &Service, ips: Vec<IpAddr>) -> StatusUpdate {
    StatusUpdate {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        ips,
    }
}

/// The lowest address of the first pool that is not in `used`, skipping
/// the network address (IPv6's subnet-router anycast too) and IPv4's
/// broadcast address (as `hosts()` does) except in /31, /32, /127, /128.
pub fn allocate(pools: &[IpNet], used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    pools.iter().find_map(|p| {
        let skip_network = p.prefix_len() + 1 < p.max_prefix_len();
        p.hosts().take(1 << 20).find(|ip| !(used.contains(ip) || skip_network && *ip == p.network()))
    })
}
