//! EndpointSlices → the backends of one Service port: aggregated over every
//! slice of the Service (IPv4 and IPv6), de-duplicated, with the states that
//! decide which endpoints take new flows (KEP-1669, as kube-proxy does).
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::state::model::{BackendSpec, Protocol};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How an endpoint may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointState {
    /// Neither ready nor serving+terminating: no traffic at all.
    Gone,
    /// Terminating but still serving: keeps its flows; takes new ones only
    /// when no endpoint is ready.
    Terminating,
    /// Ready: takes new flows.
    Ready,
}

/// One endpoint address and port of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Endpoint address and target port.
    pub addr: SocketAddr,
    /// Whether it is ready, serving or terminating.
    pub state: EndpointState,
    /// On this node (`nodeName` equals the agent's node).
    pub local: bool,
}

fn state_of(c: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>) -> EndpointState {
    // Absent conditions mean "unknown", which consumers treat as true for
    // ready and serving and as false for terminating.
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    if ready && !terminating {
        EndpointState::Ready
    } else if serving && terminating {
        EndpointState::Terminating
    } else {
        EndpointState::Gone
    }
}

/// The endpoints of Service `namespace/service`'s port named `port_name`
/// (`""` for an unnamed port) with `protocol`, from all its slices,
/// de-duplicated by address (the best state wins), in address order.
pub fn endpoints(
    slices: &[std::sync::Arc<EndpointSlice>],
    namespace: &str,
    service: &str,
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Endpoint> {
    let mut found: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.metadata.namespace.as_deref() != Some(namespace)
            || slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str)
                != Some(service)
            || !matches!(slice.address_type.as_str(), "IPv4" | "IPv6")
        {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find_map(|p| {
            let name_ok = p.name.as_deref().unwrap_or("") == port_name;
            let proto_ok = p.protocol.as_deref().unwrap_or("TCP").eq_ignore_ascii_case(&protocol.to_string());
            p.port.filter(|n| name_ok && proto_ok && (1..=65535).contains(n)).map(|n| n as u16)
        }) else {
            continue;
        };
        for ep in &slice.endpoints {
            // Addresses are fungible; consumers may use only the first.
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            let addr = SocketAddr::new(ip, port);
            let new = Endpoint {
                addr,
                state: state_of(ep.conditions.as_ref()),
                local: ep.node_name.as_deref() == Some(node_name),
            };
            found
                .entry(addr)
                .and_modify(|e| {
                    e.state = e.state.max(new.state);
                    e.local |= new.local;
                })
                .or_insert(new);
        }
    }
    found.into_values().collect()
}

/// The backends for a set of endpoints: ready ones with weight 1; serving
/// terminating ones with weight 0 (they keep their flows) unless no endpoint
/// is ready, then with weight 1; the rest left out (their flows move).
pub fn backends(eps: &[Endpoint]) -> Vec<BackendSpec> {
    let any_ready = eps.iter().any(|e| e.state == EndpointState::Ready);
    eps.iter()
        .filter_map(|e| match e.state {
            EndpointState::Ready => Some(BackendSpec { addr: e.addr, weight: 1 }),
            EndpointState::Terminating => Some(BackendSpec { addr: e.addr, weight: u16::from(!any_ready) }),
            EndpointState::Gone => None,
        })
        .collect()
}
