//! A route's `backendRefs` → the backends of a listener's xlb service:
//! which references resolve (a Service of the route's namespace, or of
//! another with a ReferenceGrant there, with the port asked for), and how
//! each reference's `weight` is shared among its Service's endpoints, the
//! unresolved references' weights becoming the reject share.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::types::{BackendRef, ReferenceGrant, RouteKind, RouteRule, GROUP};
use crate::{
    source::k8s::endpoints,
    state::model::{self, BackendSpec, Protocol},
};

/// Route condition reasons for `ResolvedRefs=False` (upstream names).
pub mod reason {
    /// A Service (or its port) that does not exist.
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    /// A cross-namespace reference without a ReferenceGrant.
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    /// A reference to something other than a core Service.
    pub const INVALID_KIND: &str = "InvalidKind";
}

/// Where a resolved reference's traffic goes: a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The Service port's name (`""` when unnamed): its EndpointSlices'
    /// port of that name carries the target port.
    pub port_name: String,
    /// The protocol.
    pub protocol: Protocol,
}

/// One backendRef after resolution, with its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref {
    /// It names a Service port the route may use.
    Resolved(Target, u32),
    /// It does not resolve: its share of new flows is rejected.
    Unresolved(u32),
}

/// The references of a route and the first problem found, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Each backendRef, in order.
    pub refs: Vec<Ref>,
    /// `(reason, message)` of the first reference that does not resolve.
    pub problem: Option<(&'static str, String)>,
}

/// Whether a ReferenceGrant in `to_ns` lets a `from_kind` of `from_ns`
/// refer to Service `to_name`.
pub fn permitted(grants: &[Arc<ReferenceGrant>], from_kind: &str, from_ns: &str, to_ns: &str, to_name: &str) -> bool {
    grants.iter().filter(|g| g.metadata.namespace.as_deref() == Some(to_ns)).any(|g| {
        g.spec.from.iter().any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
            && g.spec
                .to
                .iter()
                .any(|t| t.group.is_empty() && t.kind == "Service" && t.name.as_deref().is_none_or(|n| n == to_name))
    })
}

fn resolve_one(
    b: &BackendRef,
    route_ns: &str,
    kind: RouteKind,
    services: &[Arc<Service>],
    grants: &[Arc<ReferenceGrant>],
) -> Result<Target, (&'static str, String)> {
    let group = b.group.as_deref().unwrap_or("");
    let k = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || k != "Service" {
        return Err((
            reason::INVALID_KIND,
            format!("backendRef {group}/{k} {}: only core Services are supported", b.name),
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns && !permitted(grants, kind.kind(), route_ns, ns, &b.name) {
        return Err((
            reason::REF_NOT_PERMITTED,
            format!(
                "backendRef Service {ns}/{}: no ReferenceGrant in namespace {ns} lets {}s of {route_ns} refer to it; create one",
                b.name,
                kind.kind()
            ),
        ));
    }
    let Some(svc) = services
        .iter()
        .find(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(&b.name))
    else {
        return Err((reason::BACKEND_NOT_FOUND, format!("backendRef Service {ns}/{} does not exist", b.name)));
    };
    let Some(port) = b.port else {
        return Err((
            reason::BACKEND_NOT_FOUND,
            format!("backendRef Service {ns}/{} has no port; give it one", b.name),
        ));
    };
    let proto = kind.protocol();
    let found =
        svc.spec.as_ref().and_then(|s| s.ports.as_ref()).into_iter().flatten().find(|p| {
            p.port == port && p.protocol.as_deref().unwrap_or("TCP").eq_ignore_ascii_case(&proto.to_string())
        });
    let Some(p) = found else {
        return Err((
            reason::BACKEND_NOT_FOUND,
            format!("Service {ns}/{} has no {} port {port}", b.name, proto.to_string().to_uppercase()),
        ));
    };
    Ok(Target {
        namespace: ns.to_owned(),
        service: b.name.clone(),
        port_name: p.name.clone().unwrap_or_default(),
        protocol: proto,
    })
}

/// Resolves the backendRefs of every rule of a route of `kind` in
/// `route_ns` (a weight absent is 1, a negative one 0).
pub fn resolve(
    rules: &[RouteRule],
    route_ns: &str,
    kind: RouteKind,
    services: &[Arc<Service>],
    grants: &[Arc<ReferenceGrant>],
) -> Resolution {
    let mut out = Resolution::default();
    for b in rules.iter().flat_map(|r| &r.backend_refs) {
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        match resolve_one(b, route_ns, kind, services, grants) {
            Ok(t) => out.refs.push(Ref::Resolved(t, weight)),
            Err(p) => {
                out.refs.push(Ref::Unresolved(weight));
                out.problem.get_or_insert(p);
            }
        }
    }
    out
}

/// The backends and reject share of a listener on `vip`:`port` whose
/// traffic goes to `refs`: each resolved reference's endpoints of the VIP's
/// family (ready ones, terminating ones as for Services) share its weight;
/// a reference with no endpoint to take new flows, and each unresolved one,
/// adds its weight to the reject share. Weights are exact where they fit
/// (a common multiple of the endpoint counts), else scaled to the largest
/// backend weight. Returns the backends, the reject weight and messages
/// about endpoints left out.
pub fn backends(
    refs: &[Ref],
    slices: &[Arc<EndpointSlice>],
    node_name: &str,
    vip: IpAddr,
    port: u16,
) -> (Vec<BackendSpec>, u32, Vec<String>) {
    let mut left_out = Vec::new();
    // Per reference: its weight and its endpoints (weight 1 takes new
    // flows, 0 keeps its flows).
    let mut parts: Vec<(u64, Vec<BackendSpec>)> = Vec::new();
    let mut reject: u64 = 0;
    for r in refs {
        match r {
            Ref::Unresolved(w) => reject += u64::from(*w),
            Ref::Resolved(t, w) => {
                let eps = endpoints::endpoints(slices, &t.namespace, &t.service, &t.port_name, t.protocol, node_name);
                let family: Vec<_> = eps.into_iter().filter(|e| e.addr.is_ipv4() == vip.is_ipv4()).collect();
                let mut bs = endpoints::backends(&family);
                bs.retain(|b| match model::check_backend(b.addr, vip, port) {
                    Ok(()) => true,
                    Err(e) => {
                        left_out.push(format!("Service {}/{}: {e}; it is left out", t.namespace, t.service));
                        false
                    }
                });
                if bs.iter().all(|b| b.weight == 0) {
                    reject += u64::from(*w);
                }
                parts.push((u64::from(*w), bs));
            }
        }
    }
    let (backends, reject) = share(&parts, reject);
    (backends, reject, left_out)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Shares each part's weight among its endpoints of weight 1 (the others
/// stay at 0) and scales `reject` alike; an endpoint in several parts adds
/// up. The result is reduced by the common divisor; backend weights fit
/// `u16` (scaled, each taking part keeps at least 1), the reject share `u32`.
pub fn share(parts: &[(u64, Vec<BackendSpec>)], reject: u64) -> (Vec<BackendSpec>, u32) {
    let counts =
        || parts.iter().filter(|(w, _)| *w > 0).map(|(_, bs)| bs.iter().filter(|b| b.weight > 0).count() as u64);
    // A common multiple of the endpoint counts, while it stays small.
    let lcm = counts().filter(|n| *n > 0).try_fold(1u64, |l, n| {
        let m = l / gcd(l, n) * n;
        (m <= 1 << 20).then_some(m)
    });
    let exact = lcm.is_some();
    let lcm = lcm.unwrap_or(1);
    let mut by_addr: BTreeMap<std::net::SocketAddr, f64> = BTreeMap::new();
    for (w, bs) in parts {
        let n = bs.iter().filter(|b| b.weight > 0).count() as u64;
        for b in bs {
            let v = if b.weight > 0 && n > 0 {
                if exact {
                    (w * (lcm / n)) as f64
                } else {
                    *w as f64 / n as f64
                }
            } else {
                0.0
            };
            *by_addr.entry(b.addr).or_default() += v;
        }
    }
    let mut reject = if exact { (reject * lcm) as f64 } else { reject as f64 };
    if exact {
        // Reduce first: a ratio like 1000000:500000 fits as 2:1.
        let d = by_addr.values().map(|v| *v as u64).chain([reject as u64]).filter(|v| *v > 0).reduce(gcd).unwrap_or(1);
        for v in by_addr.values_mut() {
            *v = (*v as u64 / d) as f64;
        }
        reject = (reject as u64 / d) as f64;
    }
    let max = by_addr.values().copied().fold(0.0, f64::max);
    let exact = exact && max <= f64::from(u16::MAX) && reject <= f64::from(u32::MAX) - max * by_addr.len() as f64;
    if !exact && max > 0.0 {
        let f = f64::from(u16::MAX) / max;
        for v in by_addr.values_mut() {
            *v = if *v > 0.0 { (*v * f).round().max(1.0) } else { 0.0 };
        }
        reject = if reject > 0.0 { (reject * f).round().clamp(1.0, f64::from(u32::MAX / 2)) } else { 0.0 };
    } else if max == 0.0 {
        // No backend takes new flows: any reject share rejects them all.
        reject = reject.min(1.0);
    }
    let ints: Vec<u64> = by_addr.values().map(|v| *v as u64).chain([reject as u64]).filter(|v| *v > 0).collect();
    let d = ints.iter().copied().reduce(gcd).unwrap_or(1).max(1);
    let backends = by_addr.into_iter().map(|(addr, v)| BackendSpec { addr, weight: ((v as u64) / d) as u16 }).collect();
    (backends, ((reject as u64) / d) as u32)
}
