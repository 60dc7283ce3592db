//! The desired-state model: what the data path should do, independent of
//! where it came from (the YAML loader, the Kubernetes translation), and the
//! domain rules both obey ([`rules`], [`addresses`]). The map writer diffs
//! one of these against what the maps hold.
pub mod addresses;
pub mod rules;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

pub use addresses::{check_backend_addr, check_vip};
pub use rules::{
    check_affinity_timeout, check_backend, check_idle_timeout, check_same_family, check_snat_address,
    check_source_range_family, check_table_size, check_untracked_backends, check_weights, family, reply_note_services,
    Claims, ModelError, Role, AFFINITY_TIMEOUT, DEFAULT_AFFINITY_TIMEOUT, IDLE_TIMEOUT, MAX_AFFINITY_TIMEOUT,
};

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// UDP (IP protocol 17).
    Udp,
    /// TCP (IP protocol 6).
    Tcp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Udp => lb_common::PROTO_UDP,
            Protocol::Tcp => lb_common::PROTO_TCP,
        }
    }

    /// From an IP protocol number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            lb_common::PROTO_UDP => Some(Protocol::Udp),
            lb_common::PROTO_TCP => Some(Protocol::Tcp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        })
    }
}

/// What happens to the client's source address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceMode {
    /// Rewrite the source to the node's address (replies come back through
    /// this node wherever the backend is).
    #[default]
    Snat,
    /// Keep the client address (replies must pass this node).
    Preserve,
}

/// Whether a service keeps a connection entry per flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowTracking {
    /// A connection entry per flow: a flow stays on its backend while it
    /// lives, whatever the backend set does (the default).
    #[default]
    Full,
    /// No connection entry (`flow_tracking: none`, Katran's LRU bypass):
    /// every packet picks its backend from the lookup table, so new flows
    /// cost no insert; a change of the backend set moves the flows Maglev
    /// reassigns. Needs `source: preserve` and no session affinity.
    None,
}

/// One backend of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// Address and port the service's packets are forwarded to.
    pub addr: SocketAddr,
    /// 0 drains: existing flows stay, no new ones.
    pub weight: u16,
}

/// One service: a (VIP, port, protocol) and its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Unique name (the file's `name`; in Kubernetes `namespace/name:port`,
    /// with `@vip` for each VIP after the first), shown by the CLI and in
    /// messages.
    pub name: String,
    /// The address clients send to.
    pub vip: IpAddr,
    /// The port clients send to (1..=65535).
    pub port: u16,
    /// The transport protocol clients send with.
    pub protocol: Protocol,
    /// What happens to the client's source address.
    pub source: SourceMode,
    /// SNAT source address; `None` means the address the kernel would pick
    /// for the route to each backend.
    pub snat_address: Option<IpAddr>,
    /// UDP idle timeout in seconds (`None`: the default).
    pub udp_timeout: Option<u32>,
    /// Established TCP idle timeout in seconds (`None`: the default).
    pub tcp_timeout: Option<u32>,
    /// Slots of the service's Maglev lookup table, one of
    /// [`crate::state::maglev::SIZES`] (`None`: [`crate::state::maglev::DEFAULT_SIZE`]).
    pub maglev_table_size: Option<u32>,
    /// Client-IP session affinity: a client's new flows go to the backend
    /// its last flow went to, while that was less than this many seconds
    /// ago (`None`: no affinity).
    pub affinity_timeout: Option<u32>,
    /// Client source prefixes allowed to reach the service (empty: all).
    pub source_ranges: Vec<ipnet::IpNet>,
    /// Whether flows get a connection entry.
    pub flow_tracking: FlowTracking,
    /// Where new flows go, by weight (empty: packets are dropped).
    pub backends: Vec<BackendSpec>,
    /// Weight of the service's reject share (0: none): of the new flows,
    /// `reject_weight / (reject_weight + the usable backends' weights)` are
    /// rejected (UDP: ICMP port unreachable, TCP SYN: RST), as a Gateway
    /// API backendRef that does not resolve requires. With no usable
    /// backend every new flow is rejected, whatever this is. Not in the
    /// YAML file: the Gateway API translation sets it.
    pub reject_weight: u32,
}

impl ServiceSpec {
    /// The service `name` on `vip`:`port`/`protocol` with every option at
    /// its default (`source: snat`, no SNAT address, default timeouts and
    /// table size, no affinity, open to all, flows tracked, no reject share) and no
    /// backends. Set the rest with `ServiceSpec { field: value, ..ServiceSpec::new(...) }`.
    pub fn new(name: impl Into<String>, vip: IpAddr, port: u16, protocol: Protocol) -> Self {
        ServiceSpec {
            name: name.into(),
            vip,
            port,
            protocol,
            source: SourceMode::Snat,
            snat_address: None,
            udp_timeout: None,
            tcp_timeout: None,
            maglev_table_size: None,
            affinity_timeout: None,
            source_ranges: vec![],
            flow_tracking: FlowTracking::Full,
            backends: vec![],
            reject_weight: 0,
        }
    }

    /// The key the data path looks the service up by.
    pub fn key(&self) -> (IpAddr, u16, Protocol) {
        (self.vip, self.port, self.protocol)
    }
}

/// Everything the data path should serve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// The services, in no particular order; at most one per (vip, port,
    /// protocol) and per name ([`DesiredState::check_unique`]).
    pub services: Vec<ServiceSpec>,
}
