//! The generated desired state and its YAML for the agent.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use xlb::state::model::{BackendSpec, DesiredState, Protocol, ServiceSpec};

use crate::Opts;

pub(crate) fn backend_addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0100u32 + i)), 8080)
}

/// Service `i`: its own VIP in 198.18.0.0/15, port 53/udp or 443/tcp.
pub(crate) fn service(i: u32, backends: impl Iterator<Item = u32>, table_size: u32) -> ServiceSpec {
    let (port, protocol) = if i.is_multiple_of(2) { (53, Protocol::Udp) } else { (443, Protocol::Tcp) };
    ServiceSpec {
        maglev_table_size: Some(table_size),
        backends: backends.map(|b| BackendSpec { addr: backend_addr(b), weight: 1 }).collect(),
        ..ServiceSpec::new(
            format!("ns{}/svc{i}:{port}", i % 100),
            IpAddr::V4(Ipv4Addr::from(0xc612_0000u32 + i)),
            port,
            protocol,
        )
    }
}

pub(crate) fn desired(opts: &Opts) -> DesiredState {
    let m = opts.backends;
    DesiredState { services: (0..opts.services).map(|i| service(i, i * m..(i + 1) * m, opts.table_size)).collect() }
}

/// The YAML form of the desired state (names made of [a-z0-9-]).
pub(crate) fn yaml(state: &DesiredState) -> String {
    let mut y = String::with_capacity(state.services.len() * 400);
    y.push_str("services:\n");
    for (i, s) in state.services.iter().enumerate() {
        let _ = writeln!(y, "  - name: svc-{i}");
        let _ = writeln!(y, "    vip: {}", s.vip);
        let _ = writeln!(y, "    port: {}", s.port);
        let _ = writeln!(y, "    protocol: {}", s.protocol);
        let _ = writeln!(y, "    maglev_table_size: {}", s.maglev_table_size.unwrap_or(lb_common::TABLE_SIZE));
        y.push_str("    backends:\n");
        for b in &s.backends {
            let _ = writeln!(y, "      - {}", b.addr);
        }
    }
    y
}
