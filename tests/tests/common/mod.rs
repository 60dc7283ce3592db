//! Helpers shared by the integration test files (each `tests/*.rs` file is
//! its own crate and includes this module with `mod common;`).
//!
//! Everything here is local to the tests: the fixtures themselves live in the
//! `xlb-tests` library. By concern: `services` (the YAML of services and
//! the pods' servers), `env` (a topology with its agent, the CLI's JSON),
//! `flows` (requests through a VIP and their replies), `process` (bounded
//! child processes).

#![allow(dead_code, reason = "shared by several test binaries, each using a part")]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use xlb_tests::Topology;

mod env;
mod flows;
mod process;
mod services;

#[allow(unused_imports, reason = "each test binary uses a part")]
pub use env::*;
#[allow(unused_imports, reason = "each test binary uses a part")]
pub use flows::*;
#[allow(unused_imports, reason = "each test binary uses a part")]
pub use process::*;
#[allow(unused_imports, reason = "each test binary uses a part")]
pub use services::*;

/// Per-request timeout.
pub const T: Duration = Duration::from_secs(2);

/// UDP port the echo servers listen on inside each pod.
pub const UDP_BACKEND_PORT: u16 = 5353;
/// TCP port the echo servers listen on inside each pod.
pub const TCP_BACKEND_PORT: u16 = 8080;
/// TCP port the session servers (long-lived flows) listen on inside each pod.
pub const TCP_SESSION_PORT: u16 = 8081;

/// The tests need root; fail (never skip) otherwise.
pub fn require_root() {
    xlb_tests::require_root().expect("these integration tests must run as root");
}

pub fn vip4(port: u16) -> SocketAddr {
    SocketAddr::new(Topology::VIP_V4.into(), port)
}

pub fn vip6(port: u16) -> SocketAddr {
    SocketAddr::new(Topology::VIP_V6.into(), port)
}

/// Address family of a service / its backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
}

impl Fam {
    pub fn pod_addr(self, i: usize) -> IpAddr {
        match self {
            Fam::V4 => Topology::pod_addr_v4(i).into(),
            Fam::V6 => Topology::pod_addr_v6(i).into(),
        }
    }
    /// The node's address toward pod i: what a `snat` backend sees.
    pub fn pod_gw(self, i: usize) -> IpAddr {
        match self {
            Fam::V4 => Topology::pod_gw_v4(i).into(),
            Fam::V6 => Topology::pod_gw_v6(i).into(),
        }
    }
    pub fn client(self) -> IpAddr {
        match self {
            Fam::V4 => Topology::CLIENT_V4.into(),
            Fam::V6 => Topology::CLIENT_V6.into(),
        }
    }
    pub fn unspecified(self, port: u16) -> SocketAddr {
        match self {
            Fam::V4 => SocketAddr::from(([0, 0, 0, 0], port)),
            Fam::V6 => SocketAddr::from(([0u16; 8], port)),
        }
    }
    pub fn pod_sock(self, i: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.pod_addr(i), port)
    }
    /// The family's VIP with `port`.
    pub fn vip(self, port: u16) -> SocketAddr {
        match self {
            Fam::V4 => vip4(port),
            Fam::V6 => vip6(port),
        }
    }
    /// What pod `i` sees as the client's address for a `source` mode.
    pub fn peer_seen(self, source: &str, i: usize) -> IpAddr {
        if source == "snat" {
            self.pod_gw(i)
        } else {
            self.client()
        }
    }
}
