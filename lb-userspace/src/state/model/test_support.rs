//! Builders for unit tests, so every test module builds its services the
//! same way: a service with every option at its default, backends and
//! addresses from text.
use std::net::{IpAddr, SocketAddr};

use std::collections::HashSet;

use super::{BackendSpec, DesiredState, Protocol, ServiceSpec, SourceMode};

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

/// Panics unless `services` keep the model's invariants, checked directly
/// as well as through [`DesiredState::new`]: unique names and
/// VIP:port:protocol keys, no port 0, backends unique and of the VIP's
/// family, an SNAT address only with `source: snat` and of the VIP's
/// family. (Source ranges may be of both families: a Kubernetes Service
/// lists both for its dual-stack clients.) `what` names the producer.
pub(crate) fn assert_invariants(services: &[ServiceSpec], what: &str) {
    DesiredState::new(services.to_vec())
        .unwrap_or_else(|e| panic!("{what} produced an invalid state: {e}\n{services:#?}"));
    let (mut names, mut keys) = (HashSet::new(), HashSet::new());
    for s in services {
        assert!(names.insert(s.name.clone()), "duplicate name {}", s.name);
        assert!(keys.insert(s.key()), "duplicate VIP:port:protocol {:?}", s.key());
        assert!(s.port != 0, "port 0 in {}", s.name);
        let mut addrs = HashSet::new();
        for b in &s.backends {
            assert_eq!(
                b.addr.is_ipv4(),
                s.vip.is_ipv4(),
                "backend {} of {} ({}): another family",
                b.addr,
                s.name,
                s.vip
            );
            assert!(addrs.insert(b.addr), "duplicate backend {} in {}", b.addr, s.name);
            assert!(b.addr.port() != 0, "backend {} of {} has port 0", b.addr, s.name);
        }
        if let Some(a) = s.snat_address {
            assert_eq!(a.is_ipv4(), s.vip.is_ipv4(), "SNAT address of another family in {}", s.name);
            assert_eq!(s.source, SourceMode::Snat, "SNAT address with source: preserve in {}", s.name);
        }
    }
}
