//! The domain rules every producer of a [`DesiredState`] obeys (the YAML
//! validation, the Kubernetes translation, and the Gateway API next): the
//! limits, the address families, and which things must be unique. Each rule
//! is one function here; a producer maps its [`ModelError`] to its own way
//! of reporting (a `FILE:LINE: FIELD:` message, a Kubernetes Event).
use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    hash::Hash,
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
};

use super::{
    addresses::{check_backend_addr, check_vip},
    BackendSpec, DesiredState, FlowTracking, Protocol, ServiceSpec, SourceMode,
};

/// Idle timeouts (`udp_timeout`, `tcp_timeout`), seconds: up to one week.
pub const IDLE_TIMEOUT: RangeInclusive<u32> = 1..=86400 * 7;
/// Session-affinity timeouts, seconds: up to one day, as Kubernetes.
pub const AFFINITY_TIMEOUT: RangeInclusive<u32> = 1..=MAX_AFFINITY_TIMEOUT;
/// Largest session-affinity timeout (Kubernetes' limit too).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// Most services the data path holds.
pub const MAX_SERVICES: usize = lb_common::MAX_SERVICES as usize;

/// What an address of the other family was given as (for the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A backend address.
    Backend,
    /// A `snat_address`.
    SnatAddress,
    /// A source range.
    SourceRange,
}

/// "IPv4" or "IPv6".
pub fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// A broken domain rule. Displays as a sentence that says what is wrong and
/// (mostly) what to do; producers add where (a field, a Service).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// An address no client can send to, as a VIP or SNAT address.
    #[error("{ip} is {what}")]
    UnusableVip {
        /// The address given.
        ip: IpAddr,
        /// What kind of address it is ("the unspecified address", ...).
        what: &'static str,
    },
    /// An address nothing can be forwarded to, as a backend.
    #[error("backend {ip} is {what}; use the unicast address of a server")]
    UnusableBackend {
        /// The backend's address.
        ip: IpAddr,
        /// What kind of address it is.
        what: &'static str,
    },
    /// A backend that is the service itself.
    #[error("backend {addr} is the service's own vip and port: a loop; use the address of a server")]
    BackendLoop {
        /// The backend, equal to the service's vip and port.
        addr: SocketAddr,
    },
    /// An address (`given` as written) of the other family than the VIP.
    #[error("{}", family_message(*.role, .given, *.ip, *.vip))]
    FamilyMismatch {
        /// What the address was given as.
        role: Role,
        /// The address as written (a CIDR, `ip:port`, ...).
        given: String,
        /// The address itself.
        ip: IpAddr,
        /// The service's VIP, whose family it should have.
        vip: IpAddr,
    },
    /// A SNAT address on a service that keeps the client address.
    #[error("snat_address applies to source: snat only, and the service keeps the client's address (source: preserve); remove snat_address or use source: snat")]
    SnatWithPreserve,
    /// A service on port 0.
    #[error("port 0 is outside 1..=65535")]
    PortZero,
    /// A limit (a timeout) outside its range.
    #[error("{what} {value} is outside {}..={}", .range.start(), .range.end())]
    OutOfRange {
        /// The limit's name (`udp_timeout`, ...).
        what: &'static str,
        /// The value given.
        value: u32,
        /// The values allowed.
        range: RangeInclusive<u32>,
    },
    /// A Maglev table size that is not one of the allowed primes.
    #[error("maglev_table_size {0} is not an allowed table size; use one of {sizes}", sizes = crate::state::maglev::sizes_list())]
    TableSize(u32),
    /// Two services on one (vip, port, protocol).
    #[error("{vip_port}/{protocol} is used by two services ({first:?} and {second:?}); each vip, port and protocol may belong to one service", vip_port = SocketAddr::new(*.vip, *.port))]
    DuplicateService {
        /// The shared VIP.
        vip: IpAddr,
        /// The shared port.
        port: u16,
        /// The shared protocol.
        protocol: Protocol,
        /// Name of the service that claimed it first.
        first: String,
        /// Name of the other service.
        second: String,
    },
    /// Two services with one name.
    #[error("{name:?} is the name of two services; service names must be unique")]
    DuplicateName {
        /// The shared name.
        name: String,
    },
    /// One backend twice in a service.
    #[error("service {service:?}: backend {addr} is listed twice; list each backend once")]
    DuplicateBackend {
        /// The service's name.
        service: String,
        /// The backend listed twice.
        addr: SocketAddr,
    },
    /// Weights (the backends' and the reject share's) whose sum does not
    /// fit the 32 bits the lookup-table builder and the CLI count shares in.
    #[error(
        "the weights of the backends and of the reject share add up to {total}, above {}; scale the weights down",
        u32::MAX
    )]
    WeightTotal {
        /// The sum of the weights.
        total: u64,
    },
    /// `flow_tracking: none` with `source: snat`.
    #[error("flow_tracking: none needs source: preserve: with source: snat, replies are translated back through the flow's connection entry, which flow_tracking: none does not keep; set source: preserve or remove flow_tracking")]
    UntrackedSnat,
    /// `flow_tracking: none` with session affinity.
    #[error("flow_tracking: none cannot be combined with session_affinity_timeout: affinity remembers each client's backend, per-flow state that flow_tracking: none does not keep; remove one of the two")]
    UntrackedAffinity,
    /// `flow_tracking: none` with an idle timeout, which only applies to
    /// connection entries.
    #[error(
        "{what} applies to connection entries, which flow_tracking: none does not keep; remove {what} or flow_tracking"
    )]
    UntrackedTimeout {
        /// `udp_timeout` or `tcp_timeout`.
        what: &'static str,
    },
    /// A backend of a `flow_tracking: none` service that another service
    /// also uses: its replies, found by the backend's address, port and
    /// protocol alone, could not be told apart.
    #[error("backend {addr}/{protocol} of service {untracked:?} (flow_tracking: none) is also a backend of service {other:?}: replies of a service without connection entries are told apart by the backend's address, port and protocol alone; give the flow_tracking: none service backends of its own")]
    UntrackedSharedBackend {
        /// The shared backend.
        addr: SocketAddr,
        /// Its protocol.
        protocol: Protocol,
        /// The `flow_tracking: none` service.
        untracked: String,
        /// The other service.
        other: String,
    },
    /// More services than the data path holds.
    #[error("{count} services; at most {MAX_SERVICES} are allowed")]
    TooManyServices {
        /// Services in the desired state.
        count: usize,
    },
}

fn family_message(role: Role, given: &str, ip: IpAddr, vip: IpAddr) -> String {
    let (have, want) = (family(ip), family(vip));
    match role {
        Role::Backend => format!("backend {given} is {have} but the vip {vip} is {want}; use {want} backends"),
        Role::SnatAddress => format!("{given} is {have} but the vip {vip} is {want}; use an {want} address"),
        Role::SourceRange => {
            format!("{given} is {have} but the vip {vip} is {want}: it would never match a client; use {want} ranges")
        }
    }
}

/// Checks that `ip` (given as `role`) is of the VIP's family.
pub fn check_same_family(role: Role, ip: IpAddr, vip: IpAddr) -> Result<(), ModelError> {
    if ip.is_ipv4() == vip.is_ipv4() {
        return Ok(());
    }
    let given = ip.to_string();
    Err(ModelError::FamilyMismatch { role, given, ip, vip })
}

/// Checks one backend of the service on `vip`:`port`: a usable address of
/// the VIP's family.
pub fn check_backend(addr: SocketAddr, vip: IpAddr, port: u16) -> Result<(), ModelError> {
    check_backend_addr(addr, vip, port)?;
    check_same_family(Role::Backend, addr.ip(), vip).map_err(|e| with_given(e, addr.to_string()))
}

/// Checks a SNAT address of a service on `vip` with source mode `source`.
pub fn check_snat_address(ip: IpAddr, vip: IpAddr, source: SourceMode) -> Result<(), ModelError> {
    if source == SourceMode::Preserve {
        return Err(ModelError::SnatWithPreserve);
    }
    check_vip(ip)?;
    check_same_family(Role::SnatAddress, ip, vip)
}

/// Checks a source range of a service with one VIP, `vip` (a file's
/// service): a range of the other family would never match a client.
/// (Kubernetes' dual-stack Services list both families for all their VIPs;
/// the writer ignores, per VIP, the ranges of the other family.)
pub fn check_source_range_family(net: ipnet::IpNet, vip: IpAddr) -> Result<(), ModelError> {
    check_same_family(Role::SourceRange, net.addr(), vip).map_err(|e| with_given(e, net.to_string()))
}

/// Checks an idle timeout (`what`: its name for the message).
pub fn check_idle_timeout(what: &'static str, value: u32) -> Result<(), ModelError> {
    in_range(what, value, IDLE_TIMEOUT)
}

/// Checks a session-affinity timeout.
pub fn check_affinity_timeout(value: u32) -> Result<(), ModelError> {
    in_range("session_affinity_timeout", value, AFFINITY_TIMEOUT)
}

/// Checks a Maglev table size: one of [`crate::state::maglev::SIZES`].
pub fn check_table_size(size: u32) -> Result<(), ModelError> {
    if crate::state::maglev::SIZES.contains(&size) {
        Ok(())
    } else {
        Err(ModelError::TableSize(size))
    }
}

/// Checks a service's weights: its reject share's (`reject_weight`) and
/// its backends' add up to at most `u32::MAX` (any share of new flows is
/// then one 32-bit ratio).
pub fn check_weights(reject_weight: u32, backends: &[BackendSpec]) -> Result<(), ModelError> {
    let total = u64::from(reject_weight) + backends.iter().map(|b| u64::from(b.weight)).sum::<u64>();
    if total > u64::from(u32::MAX) {
        return Err(ModelError::WeightTotal { total });
    }
    Ok(())
}

fn in_range(what: &'static str, value: u32, range: RangeInclusive<u32>) -> Result<(), ModelError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ModelError::OutOfRange { what, value, range })
    }
}

fn with_given(e: ModelError, text: String) -> ModelError {
    match e {
        ModelError::FamilyMismatch { role, ip, vip, .. } => ModelError::FamilyMismatch { role, given: text, ip, vip },
        e => e,
    }
}

/// First users of things that must be unique (service names, service keys,
/// a service's backends): `claim` hands out a thing once and names its first
/// user after that. `T` is how a producer names a user (an index in the
/// file, a Kubernetes `namespace/name`).
#[derive(Debug)]
pub struct Claims<K, T> {
    first: HashMap<K, T>,
}

impl<K, T> Default for Claims<K, T> {
    fn default() -> Self {
        Self { first: HashMap::new() }
    }
}

impl<K: Eq + Hash, T: Clone> Claims<K, T> {
    /// Claims `key` for `user`; `Err(first user)` when it is taken.
    pub fn claim(&mut self, key: K, user: T) -> Result<(), T> {
        match self.first.entry(key) {
            Entry::Occupied(e) => Err(e.get().clone()),
            Entry::Vacant(e) => {
                e.insert(user);
                Ok(())
            }
        }
    }
}

impl ServiceSpec {
    /// Checks the service on its own (every rule but the ones across
    /// services, which are [`DesiredState::new`]'s).
    pub fn validate(&self) -> Result<(), ModelError> {
        check_vip(self.vip)?;
        if self.port == 0 {
            return Err(ModelError::PortZero);
        }
        if let Some(ip) = self.snat_address {
            check_snat_address(ip, self.vip, self.source)?;
        }
        if let Some(t) = self.udp_timeout {
            check_idle_timeout("udp_timeout", t)?;
        }
        if let Some(t) = self.tcp_timeout {
            check_idle_timeout("tcp_timeout", t)?;
        }
        if let Some(t) = self.affinity_timeout {
            check_affinity_timeout(t)?;
        }
        if let Some(s) = self.maglev_table_size {
            check_table_size(s)?;
        }
        self.check_flow_tracking()?;
        check_weights(self.reject_weight, &self.backends)?;
        let mut seen = Claims::default();
        for b in &self.backends {
            check_backend(b.addr, self.vip, self.port)?;
            seen.claim(b.addr, ())
                .map_err(|()| ModelError::DuplicateBackend { service: self.name.clone(), addr: b.addr })?;
        }
        Ok(())
    }
}

impl ServiceSpec {
    /// Checks `flow_tracking: none` against the options that need a
    /// connection entry: SNAT, session affinity, idle timeouts.
    pub fn check_flow_tracking(&self) -> Result<(), ModelError> {
        if self.flow_tracking == FlowTracking::Full {
            return Ok(());
        }
        if self.source == SourceMode::Snat {
            return Err(ModelError::UntrackedSnat);
        }
        if self.affinity_timeout.is_some() {
            return Err(ModelError::UntrackedAffinity);
        }
        if self.udp_timeout.is_some() {
            return Err(ModelError::UntrackedTimeout { what: "udp_timeout" });
        }
        if self.tcp_timeout.is_some() {
            return Err(ModelError::UntrackedTimeout { what: "tcp_timeout" });
        }
        Ok(())
    }
}

/// Checks that no backend (address, port, protocol) of a `flow_tracking:
/// none` service is a backend of another service.
pub fn check_untracked_backends(services: &[ServiceSpec]) -> Result<(), ModelError> {
    let users = backend_users(services);
    for s in services.iter().filter(|s| s.flow_tracking == FlowTracking::None) {
        for b in &s.backends {
            let shared = users.get(&(b.addr, s.protocol)).and_then(|u| u.iter().find(|o| o.name != s.name));
            if let Some(other) = shared {
                return Err(ModelError::UntrackedSharedBackend {
                    addr: b.addr,
                    protocol: s.protocol,
                    untracked: s.name.clone(),
                    other: other.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The services using each backend (address, port, protocol).
fn backend_users(services: &[ServiceSpec]) -> HashMap<(SocketAddr, Protocol), Vec<&ServiceSpec>> {
    let mut users: HashMap<(SocketAddr, Protocol), Vec<&ServiceSpec>> = HashMap::new();
    for s in services {
        for b in &s.backends {
            users.entry((b.addr, s.protocol)).or_default().push(s);
        }
    }
    users
}

/// The names of the tracked `source: preserve` services none of whose
/// backends (address, port, protocol) another service uses: their replies
/// can be told apart by the backend alone, so the data path records no
/// reverse entry per flow for them (`lb_common::SVC_F_REPLY_NOTE`).
pub fn reply_note_services(services: &[ServiceSpec]) -> HashSet<&str> {
    let users = backend_users(services);
    services
        .iter()
        .filter(|s| s.source == SourceMode::Preserve && s.flow_tracking == FlowTracking::Full)
        .filter(|s| s.backends.iter().all(|b| users.get(&(b.addr, s.protocol)).is_none_or(|u| u.len() == 1)))
        .map(|s| s.name.as_str())
        .collect()
}

impl DesiredState {
    /// A desired state of `services`, each valid ([`ServiceSpec::validate`])
    /// and none sharing a name or a (vip, port, protocol) with another.
    pub fn new(services: Vec<ServiceSpec>) -> Result<Self, ModelError> {
        let state = Self { services };
        for s in &state.services {
            s.validate()?;
        }
        state.check_unique()?;
        Ok(state)
    }

    /// Checks the rules across services: at most [`MAX_SERVICES`], no two
    /// with one (vip, port, protocol) or one name, no backend of a
    /// `flow_tracking: none` service shared ([`check_untracked_backends`]). The writer checks this
    /// before it writes anything, so it never keeps one of two at random.
    pub fn check_unique(&self) -> Result<(), ModelError> {
        if self.services.len() > MAX_SERVICES {
            return Err(ModelError::TooManyServices { count: self.services.len() });
        }
        let mut keys = Claims::default();
        let mut names = Claims::default();
        for s in &self.services {
            keys.claim(s.key(), &s.name).map_err(|first| {
                let (vip, port, protocol) = s.key();
                ModelError::DuplicateService { vip, port, protocol, first: first.clone(), second: s.name.clone() }
            })?;
            names.claim(s.name.as_str(), ()).map_err(|()| ModelError::DuplicateName { name: s.name.clone() })?;
        }
        check_untracked_backends(&self.services)
    }
}
