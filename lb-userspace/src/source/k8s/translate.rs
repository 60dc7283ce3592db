//! Services + EndpointSlices → the desired-state model (the same one the
//! YAML loader produces), plus, per Service, what was programmed or why not
//! (for Events) and the health checks this node must answer.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};

use super::{
    address,
    endpoints::{self, EndpointState},
};
use crate::state::model::{self, Claims, DesiredState, FlowTracking, Protocol, ServiceSpec, SourceMode};
pub use crate::state::model::{DEFAULT_AFFINITY_TIMEOUT, MAX_AFFINITY_TIMEOUT};
/// `none` serves the Service without flow tracking (`flow_tracking: none`
/// in the YAML file); `full` (the default) tracks every flow.
pub const FLOW_TRACKING_ANNOTATION: &str = "xlb.io/flow-tracking";
/// Legacy annotation for source ranges (used when the field is absent).
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// Event reasons.
pub mod reason {
    /// The Service is programmed.
    pub const PROGRAMMED: &str = "Programmed";
    /// Another Service claims the same VIP, port and protocol.
    pub const PORT_CLAIM_CONFLICT: &str = "PortClaimConflict";
    /// The Service cannot be programmed as written.
    pub const INVALID: &str = "InvalidService";
    /// No VIP could be found or allocated.
    pub const NO_ADDRESS: &str = "NoAddress";
    /// A port's protocol is neither TCP nor UDP.
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
}

/// What the watcher saw.
pub struct Inputs<'a> {
    /// The Services in the cache.
    pub services: &'a [Arc<Service>],
    /// The EndpointSlices in the cache.
    pub slices: &'a [Arc<EndpointSlice>],
    /// This node's name (`--node-name`).
    pub node_name: &'a str,
    /// `--lb-class`.
    pub lb_class: &'a str,
    /// `--vip-pool`s.
    pub pools: &'a [IpNet],
    /// What Gateway listeners claim ([`super::gateway`]): a Service older
    /// than the listener takes the key from it (see
    /// [`Translation::taken`]), a younger one yields it.
    pub reserved: &'a [Reservation],
}

/// The order in which claims on a VIP, port and protocol are served:
/// objects without a `creationTimestamp` last, then the oldest first, then
/// by `namespace/name`.
pub type ClaimRank = (bool, Option<Timestamp>, String);

/// The [`ClaimRank`] of an object.
pub fn claim_rank(meta: &ObjectMeta) -> ClaimRank {
    let t = meta.creation_timestamp.as_ref().map(|t| t.0);
    let name = format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""));
    (t.is_none(), t, name)
}

/// A VIP, port and protocol claimed by someone other than a Service (a
/// Gateway listener), with the claimant's rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The VIP, port and protocol.
    pub key: (IpAddr, u16, Protocol),
    /// The claimant's rank.
    pub rank: ClaimRank,
    /// The claimant, as named in messages (`Gateway NS/NAME listener L`).
    pub owner: String,
}

/// Something to tell about a Service (an Event).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    /// `true`: Warning, `false`: Normal.
    pub warning: bool,
    /// The Event's reason (one of [`reason`]).
    pub reason: &'static str,
    /// The Event's message.
    pub message: String,
}

/// A health check this node answers on `spec.healthCheckNodePort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// `spec.healthCheckNodePort`.
    pub port: u16,
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Ready (not terminating) endpoints on this node.
    pub local_ready: usize,
}

/// The result of a translation.
#[derive(Debug, Default)]
pub struct Translation {
    /// The services to program.
    pub state: DesiredState,
    /// Per Service of ours (`namespace`, `name`): what to tell about it.
    pub notes: BTreeMap<(String, String), Vec<Note>>,
    /// The health checks this node answers.
    pub health_checks: Vec<HealthCheck>,
    /// Per VIP in `state`: the Services (`namespace`, `name`) programmed on it.
    pub vip_services: BTreeMap<IpAddr, BTreeSet<(String, String)>>,
    /// Per Service programmed: where its traffic may go from this node.
    pub placements: BTreeMap<(String, String), Placement>,
    /// The [`Inputs::reserved`] keys a Service claimed first: key → the
    /// Service's `namespace/name`.
    pub taken: BTreeMap<(IpAddr, u16, Protocol), String>,
    /// xlb service name → its Service (namespace, name), for notes.
    pub owners: HashMap<String, (String, String)>,
}

/// Where a programmed Service's traffic may go from this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// `externalTrafficPolicy: Local`: to this node's endpoints only.
    pub local: bool,
    /// The addresses of its ready (not terminating) endpoints on this node.
    pub local_ready: BTreeSet<IpAddr>,
    /// Whether it has a ready (not terminating) IPv4 endpoint on any node.
    pub ready_v4: bool,
    /// Whether it has a ready (not terminating) IPv6 endpoint on any node.
    pub ready_v6: bool,
}

impl Placement {
    /// Whether it has a ready endpoint of `vip`'s family: on this node
    /// when `local`, else on any node.
    pub fn ready_for(&self, vip: IpAddr) -> bool {
        if self.local {
            self.local_ready.iter().any(|a| a.is_ipv4() == vip.is_ipv4())
        } else if vip.is_ipv4() {
            self.ready_v4
        } else {
            self.ready_v6
        }
    }
}

/// Whether xlb serves this Service: `type: LoadBalancer` with our class.
pub fn is_ours(svc: &Service, lb_class: &str) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.as_deref() == Some(lb_class)
    })
}

/// `namespace/name`.
pub fn full_name(svc: &Service) -> String {
    format!("{}/{}", svc.metadata.namespace.as_deref().unwrap_or(""), svc.metadata.name.as_deref().unwrap_or(""))
}

/// Services of ours in claim order: oldest `creationTimestamp` first, then
/// namespace/name.
pub fn ours_in_claim_order(services: &[Arc<Service>], lb_class: &str) -> Vec<Arc<Service>> {
    let mut ours: Vec<Arc<Service>> = services.iter().filter(|s| is_ours(s, lb_class)).cloned().collect();
    ours.sort_by_cached_key(|s| claim_rank(&s.metadata));
    ours
}

fn source_ranges(svc: &Service) -> Result<Vec<IpNet>, String> {
    let spec = svc.spec.as_ref();
    let texts: Vec<String> = match spec.and_then(|s| s.load_balancer_source_ranges.clone()).filter(|r| !r.is_empty()) {
        Some(r) => r,
        None => svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION))
            .map(|t| t.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default(),
    };
    texts
        .iter()
        .map(|t| {
            t.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                format!("loadBalancerSourceRanges: {t:?} is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32); fix it")
            })
        })
        .collect()
}

/// The Service's [`FLOW_TRACKING_ANNOTATION`] (absent: full).
fn flow_tracking(svc: &Service) -> Result<FlowTracking, String> {
    let value = svc.metadata.annotations.as_ref().and_then(|a| a.get(FLOW_TRACKING_ANNOTATION));
    match value.map(|v| v.trim()) {
        None | Some("full") => Ok(FlowTracking::Full),
        Some("none") => Ok(FlowTracking::None),
        Some(other) => Err(format!(
            "{FLOW_TRACKING_ANNOTATION}: {other:?} is neither \"none\" nor \"full\"; the Service's flows are tracked"
        )),
    }
}

/// Why a Service asking for `flow_tracking: none` is tracked after all
/// (the model's rules), or `None` when it can be served untracked.
fn untracked_refusal(local: bool, affinity: Option<u32>) -> Option<&'static str> {
    if !local {
        Some(
            "needs externalTrafficPolicy: Local (with Cluster the source is translated, and replies need a flow entry)",
        )
    } else if affinity.is_some() {
        Some("is not possible with sessionAffinity: ClientIP (affinity is recorded per client)")
    } else {
        None
    }
}

/// A `flow_tracking: none` service whose backend another service (a
/// Service's, or a Gateway route's once merged in) also uses cannot tell
/// whose reply it sees: such services are tracked after all, each with a
/// note on its Service, until no backend is shared.
pub fn track_shared_backends(out: &mut Translation) {
    while let Err(model::ModelError::UntrackedSharedBackend { addr, untracked, other, .. }) =
        model::check_untracked_backends(&out.state.services)
    {
        let found =
            out.state.services.iter_mut().find(|s| s.name == untracked && s.flow_tracking == FlowTracking::None);
        let Some(s) = found else { return };
        s.flow_tracking = FlowTracking::Full;
        if let Some(owner) = out.owners.get(&untracked).cloned() {
            out.notes.entry(owner).or_default().push(Note {
                warning: true,
                reason: reason::INVALID,
                message: format!(
                    "{FLOW_TRACKING_ANNOTATION}: none: backend {addr} of {untracked} also serves {other}, so its replies \
                     could not be told apart; {untracked} is served with flow tracking"
                ),
            });
        }
    }
}

fn affinity(svc: &Service) -> Option<u32> {
    let spec = svc.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let t = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .map(|t| t.clamp(1, MAX_AFFINITY_TIMEOUT as i32) as u32);
    Some(t.unwrap_or(DEFAULT_AFFINITY_TIMEOUT))
}

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

/// Translates what the watcher saw.
pub fn translate(inp: &Inputs<'_>) -> Translation {
    let mut out = Translation::default();
    // (vip, port, protocol) → owner's namespace/name
    let mut claims: Claims<(IpAddr, u16, Protocol), String> = Claims::default();
    for svc in ours_in_claim_order(inp.services, inp.lb_class) {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let me = format!("{ns}/{name}");
        let rank = claim_rank(&svc.metadata);
        let notes = out.notes.entry((ns.clone(), name.clone())).or_default();
        let warn = |reason: &'static str, message: String| Note { warning: true, reason, message };
        let vips = match address::vips(&svc, inp.pools) {
            Ok(v) if v.is_empty() => {
                let hint = if inp.pools.is_empty() {
                    "set spec.loadBalancerIP or the xlb.io/vip annotation, or run the agents with --vip-pool"
                } else {
                    "waiting for the allocator to assign one from --vip-pool (a pool may be full)"
                };
                notes.push(warn(reason::NO_ADDRESS, format!("no address for {me}: {hint}")));
                continue;
            }
            Ok(v) => v,
            Err(e) => {
                notes.push(warn(reason::INVALID, e.to_string()));
                continue;
            }
        };
        // The YAML file's rule: no unspecified, loopback, broadcast or
        // multicast VIP (the API server accepts them in status and spec).
        let (vips, unusable): (Vec<IpAddr>, Vec<IpAddr>) = vips.into_iter().partition(|v| model::check_vip(*v).is_ok());
        for v in &unusable {
            let problem = model::check_vip(*v).err().map(|e| e.to_string()).unwrap_or_default();
            notes.push(warn(
                reason::INVALID,
                format!("{problem}; {me} is not programmed on it: give it a unicast address that clients send to"),
            ));
        }
        if vips.is_empty() {
            continue;
        }
        let ranges = match source_ranges(&svc) {
            Ok(r) => r,
            Err(e) => {
                notes.push(warn(reason::INVALID, e));
                continue;
            }
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let affinity_timeout = affinity(&svc);
        let tracking = match flow_tracking(&svc) {
            Ok(FlowTracking::None) => match untracked_refusal(local, affinity_timeout) {
                Some(why) => {
                    notes.push(warn(
                        reason::INVALID,
                        format!("{FLOW_TRACKING_ANNOTATION}: none {why}; {me} is served with flow tracking"),
                    ));
                    FlowTracking::Full
                }
                None => FlowTracking::None,
            },
            Ok(t) => t,
            Err(e) => {
                notes.push(warn(reason::INVALID, format!("{me}: {e}")));
                FlowTracking::Full
            }
        };
        let mut programmed = Vec::new();
        let mut local_ready: BTreeSet<IpAddr> = BTreeSet::new();
        let (mut ready_v4, mut ready_v6) = (false, false);
        let mut labels: BTreeSet<String> = BTreeSet::new();
        for port in spec.ports.iter().flatten() {
            let Some(proto) = protocol(port.protocol.as_deref()) else {
                notes.push(warn(
                    reason::UNSUPPORTED_PROTOCOL,
                    format!(
                        "port {}: protocol {} is not served by xlb (UDP and TCP are)",
                        port.port,
                        port.protocol.as_deref().unwrap_or("")
                    ),
                ));
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else { continue };
            if number == 0 {
                continue;
            }
            let port_name = port.name.clone().unwrap_or_default();
            let label = if port_name.is_empty() { number.to_string() } else { port_name.clone() };
            // Names a service in the CLI: two ports of one name (which the
            // API server does not admit) would make two services of one
            // name, and the model would refuse the whole state.
            if !labels.insert(label.clone()) {
                notes.push(warn(
                    reason::INVALID,
                    format!("port {number}/{proto}: the name {label:?} is taken by another port of this Service; only the first is served"),
                ));
                continue;
            }
            let eps = endpoints::endpoints(inp.slices, &ns, &name, &port_name, proto, inp.node_name);
            for e in eps.iter().filter(|e| e.state == EndpointState::Ready) {
                if e.local {
                    local_ready.insert(e.addr.ip());
                }
                if e.addr.is_ipv4() {
                    ready_v4 = true;
                } else {
                    ready_v6 = true;
                }
            }
            for (i, vip) in vips.iter().enumerate() {
                let key = (*vip, number, proto);
                let reserved = inp.reserved.iter().find(|r| r.key == key);
                if let Some(r) = reserved.filter(|r| r.rank < rank) {
                    notes.push(warn(
                        reason::PORT_CLAIM_CONFLICT,
                        format!("{vip} port {number}/{proto} belongs to {}, which claimed it first; {me} is not programmed for it", r.owner),
                    ));
                    continue;
                }
                match claims.claim(key, me.clone()) {
                    Err(owner) if owner == me => continue, // the same port listed twice
                    Err(owner) => {
                        notes.push(warn(
                            reason::PORT_CLAIM_CONFLICT,
                            format!("{vip} port {number}/{proto} belongs to Service {owner}, which claimed it first; {me} is not programmed for it"),
                        ));
                        continue;
                    }
                    Ok(()) => {
                        if reserved.is_some() {
                            out.taken.insert(key, me.clone());
                        }
                    }
                }
                let family: Vec<_> =
                    eps.iter().filter(|e| e.addr.is_ipv4() == vip.is_ipv4() && (!local || e.local)).copied().collect();
                // The model's rule for backends (the file's too): an
                // unusable address or the service's own vip:port is left out.
                let mut backends = endpoints::backends(&family);
                backends.retain(|b| match model::check_backend(b.addr, *vip, number) {
                    Ok(()) => true,
                    Err(e) => {
                        notes.push(warn(reason::INVALID, format!("{me}: {e}; it is left out")));
                        false
                    }
                });
                let xlb_name = if i == 0 { format!("{me}:{label}") } else { format!("{me}:{label}@{vip}") };
                let spec = ServiceSpec {
                    name: xlb_name,
                    vip: *vip,
                    port: number,
                    protocol: proto,
                    source: if local { SourceMode::Preserve } else { SourceMode::Snat },
                    snat_address: None,
                    udp_timeout: None,
                    tcp_timeout: None,
                    maglev_table_size: None,
                    affinity_timeout,
                    source_ranges: ranges.clone(),
                    flow_tracking: tracking,
                    backends,
                    reject_weight: 0,
                };
                if let Err(e) = spec.validate() {
                    notes.push(warn(reason::INVALID, format!("{me}: {e}; {} is not programmed", spec.name)));
                    continue;
                }
                programmed.push(format!("{} ({proto})", spec.name));
                out.owners.insert(spec.name.clone(), (ns.clone(), name.clone()));
                out.vip_services.entry(*vip).or_default().insert((ns.clone(), name.clone()));
                out.state.services.push(spec);
            }
        }
        if !programmed.is_empty() {
            out.placements.insert(
                (ns.clone(), name.clone()),
                Placement { local, local_ready: local_ready.clone(), ready_v4, ready_v6 },
            );
            let vip_list: Vec<String> = vips.iter().map(std::string::ToString::to_string).collect();
            notes.push(Note {
                warning: false,
                reason: reason::PROGRAMMED,
                message: format!("xlb serves {} on {}", programmed.join(", "), vip_list.join(", ")),
            });
        }
        if let (true, Some(port)) =
            (local, spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0))
        {
            if !programmed.is_empty() {
                out.health_checks.push(HealthCheck { port, namespace: ns, name, local_ready: local_ready.len() });
            }
        }
    }
    track_shared_backends(&mut out);
    out
}
