//! Builders for unit tests, so every test module builds its services the
//! same way: a service with every option at its default, backends and
//! addresses from text.
use std::net::{IpAddr, SocketAddr};

use super::{BackendSpec, Protocol, ServiceSpec};

/// `s` as an IP address (panics when it is none).
pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// `s` as a socket address (panics when it is none).
pub(crate) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// A backend on `addr` with `weight`.
pub(crate) fn backend(addr: &str, weight: u16) -> BackendSpec {
    BackendSpec { addr: sa(addr), weight }
}

/// Backends on `addrs`, each of weight 1.
pub(crate) fn backends(addrs: &[&str]) -> Vec<BackendSpec> {
    addrs.iter().map(|a| backend(a, 1)).collect()
}

/// The service `name` on `vip`:`port`/`protocol` with every option at its
/// default (`source: snat`, no SNAT address, default timeouts and table
/// size, no affinity, open to all) and no backends. Set the rest with
/// `ServiceSpec { field: value, ..service(...) }`.
pub(crate) fn service(name: &str, vip: &str, port: u16, protocol: Protocol) -> ServiceSpec {
    ServiceSpec::new(name, ip(vip), port, protocol)
}
