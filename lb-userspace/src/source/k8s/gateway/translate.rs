//! Gateway API objects → xlb services (one per TCP/UDP listener of an
//! accepted Gateway) and the facts their statuses are made of
//! ([`super::status`]). Pure: no I/O, every input a slice of cached objects.
//!
//! Port claims are shared with the Service path: [`Translation::reservations`]
//! go into the Service translation, which tells which ones an older Service
//! took ([`crate::source::k8s::translate::Translation::taken`]); then
//! [`Translation::yield_to`] drops those listeners.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::core::{Selector, SelectorExt as _};

use super::{
    backends::{self, Resolution},
    types::{Gateway, GatewayClass, Listener, ParentReference, ReferenceGrant, RouteKind, RouteSpec, GROUP},
};
use crate::{
    source::k8s::translate::{claim_rank, reason as svc_reason, ClaimRank, Note, Reservation},
    state::model::{self, Claims, Protocol, ServiceSpec},
};

/// `namespace`, `name`.
pub type ObjKey = (String, String);

/// A route: kind, namespace, name.
pub type RouteKey = (RouteKind, String, String);

/// A cached route of either kind.
#[derive(Clone, Debug)]
pub struct Route {
    /// TCPRoute or UDPRoute.
    pub kind: RouteKind,
    /// Its metadata.
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// Its spec.
    pub spec: RouteSpec,
    /// Its status.
    pub status: Option<super::types::RouteStatus>,
}

impl Route {
    /// A TCPRoute as a [`Route`].
    pub fn tcp(r: &super::types::TCPRoute) -> Self {
        Route {
            kind: RouteKind::Tcp,
            metadata: r.metadata.clone(),
            spec: r.spec.route.clone(),
            status: r.status.clone(),
        }
    }

    /// A UDPRoute as a [`Route`].
    pub fn udp(r: &super::types::UDPRoute) -> Self {
        Route {
            kind: RouteKind::Udp,
            metadata: r.metadata.clone(),
            spec: r.spec.route.clone(),
            status: r.status.clone(),
        }
    }
}

/// What the watches saw.
pub struct Inputs<'a> {
    /// GatewayClasses.
    pub classes: &'a [Arc<GatewayClass>],
    /// Gateways.
    pub gateways: &'a [Arc<Gateway>],
    /// TCPRoutes and UDPRoutes.
    pub routes: &'a [Route],
    /// ReferenceGrants (either version).
    pub grants: &'a [Arc<ReferenceGrant>],
    /// Namespaces (for `allowedRoutes.namespaces.selector`).
    pub namespaces: &'a [Arc<Namespace>],
    /// Services (backendRefs).
    pub services: &'a [Arc<Service>],
    /// EndpointSlices.
    pub slices: &'a [Arc<EndpointSlice>],
    /// `--gateway-controller-name`.
    pub controller_name: &'a str,
    /// This node's name.
    pub node_name: &'a str,
    /// `--vip-pool`s.
    pub pools: &'a [IpNet],
}

/// Why a Gateway has no usable address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressProblem {
    /// `spec.addresses` asks for something xlb does not give (a hostname,
    /// several addresses, an unparsable one): `Accepted=False`, `UnsupportedAddress`.
    Unsupported(String),
    /// An address xlb cannot program (outside the pools, not unicast):
    /// `Programmed=False`, `AddressNotUsable`.
    NotUsable(String),
    /// None yet (waiting for the allocator): `Programmed=False`, `AddressNotAssigned`.
    NotAssigned(String),
}

/// What became of one listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerResult {
    /// Its name.
    pub name: String,
    /// Its port.
    pub port: u16,
    /// TCP or UDP; `None`: another protocol (`protocol_text`).
    pub protocol: Option<Protocol>,
    /// The protocol as written.
    pub protocol_text: String,
    /// The route kinds it takes.
    pub supported_kinds: Vec<RouteKind>,
    /// Kinds in `allowedRoutes.kinds` it cannot take.
    pub invalid_kinds: Vec<String>,
    /// Another listener of the Gateway has the same port and protocol.
    pub conflicted: bool,
    /// The address, port and protocol belong to someone else (named).
    pub port_taken_by: Option<String>,
    /// Routes attached (accepted) to it.
    pub attached_routes: usize,
    /// The route carrying its traffic (the oldest attached).
    pub route: Option<RouteKey>,
    /// Its xlb service, when programmed.
    pub service: Option<String>,
    /// Why it could not be programmed although valid.
    pub invalid: Option<String>,
}

impl ListenerResult {
    /// Valid on its own: a supported protocol and no conflict in its Gateway.
    pub fn valid(&self) -> bool {
        self.protocol.is_some() && !self.conflicted
    }
}

/// What became of one Gateway of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayResult {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Claim order.
    pub rank: ClaimRank,
    /// The address programmed, or why there is none.
    pub address: Result<IpAddr, AddressProblem>,
    /// `spec.addresses` names the address (else the pool gives it).
    pub static_address: bool,
    /// Its listeners, in spec order.
    pub listeners: Vec<ListenerResult>,
    /// Events to tell.
    pub notes: Vec<Note>,
}

/// A route's status for one parentRef to a Gateway of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentResult {
    /// The parentRef as written.
    pub parent_ref: ParentReference,
    /// `Err((reason, message))`: not accepted.
    pub accepted: Result<(), (&'static str, String)>,
}

/// What became of one route with a parent of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteResult {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Its backendRefs.
    pub resolution: Resolution,
    /// One per parentRef to a Gateway of ours.
    pub parents: Vec<ParentResult>,
}

/// One listener's xlb service, before the claims shared with Services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its Gateway.
    pub gateway: ObjKey,
    /// Its listener's name.
    pub listener: String,
    /// The Gateway's claim rank.
    pub rank: ClaimRank,
    /// The service.
    pub spec: ServiceSpec,
}

/// The translation of the Gateway API objects.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    /// GatewayClasses of ours: name → generation.
    pub classes: BTreeMap<String, Option<i64>>,
    /// Gateways of ours.
    pub gateways: BTreeMap<ObjKey, GatewayResult>,
    /// Routes with a parentRef to a Gateway of ours.
    pub routes: BTreeMap<RouteKey, RouteResult>,
    /// The listeners' services.
    pub candidates: Vec<Candidate>,
}

/// Listener condition reasons and the Gateway's.
pub mod reason {
    /// Two listeners of one protocol on one port.
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    /// A protocol other than TCP and UDP.
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    /// The address, port and protocol belong to someone else.
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    /// `allowedRoutes.kinds` names a kind the listener cannot take.
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    /// A route not allowed by the listeners it names.
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    /// A parentRef whose sectionName/port match no listener.
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
}

/// The xlb service name of a listener.
pub fn service_name(ns: &str, name: &str, listener: &str) -> String {
    format!("gateway/{ns}/{name}:{listener}")
}

fn protocol(p: &str) -> Option<Protocol> {
    match p {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

fn kind_of(p: Protocol) -> RouteKind {
    match p {
        Protocol::Tcp => RouteKind::Tcp,
        Protocol::Udp => RouteKind::Udp,
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// The address of a Gateway: its `spec.addresses` entry (one, of type
/// `IPAddress`), else the first IP of `status.addresses` (the allocator's).
/// Returns the address (or why none) and whether it is static.
pub fn address(gw: &Gateway, pools: &[IpNet]) -> (Result<IpAddr, AddressProblem>, bool) {
    let asked: Vec<_> = gw.spec.addresses.iter().filter(|a| !a.value.is_empty()).collect();
    if let Some(a) = asked.iter().find(|a| a.type_.as_deref().is_some_and(|t| t != "IPAddress")) {
        let t = a.type_.clone().unwrap_or_default();
        return (Err(AddressProblem::Unsupported(format!("address type {t} is not supported; use IPAddress"))), true);
    }
    if asked.len() > 1 {
        return (Err(AddressProblem::Unsupported("xlb gives a Gateway one address; list one IPAddress".into())), true);
    }
    if let Some(a) = asked.first() {
        let Ok(ip) = a.value.trim().parse::<IpAddr>() else {
            return (Err(AddressProblem::Unsupported(format!("{:?} is not an IP address", a.value))), true);
        };
        if let Err(e) = model::check_vip(ip) {
            return (Err(AddressProblem::NotUsable(format!("{e}; use a unicast address that clients send to"))), true);
        }
        if !pools.is_empty() && !pools.iter().any(|p| p.contains(&ip)) {
            return (
                Err(AddressProblem::NotUsable(format!(
                    "{ip} is outside every --vip-pool of the xlb agents; pick one inside a pool or remove it to get one allocated"
                ))),
                true,
            );
        }
        return (Ok(ip), true);
    }
    let from_status = gw
        .status
        .as_ref()
        .into_iter()
        .flat_map(|s| &s.addresses)
        .filter(|a| a.type_.as_deref().is_none_or(|t| t == "IPAddress"))
        .find_map(|a| a.value.parse::<IpAddr>().ok())
        .filter(|ip| model::check_vip(*ip).is_ok());
    match from_status {
        Some(ip) => (Ok(ip), false),
        None if pools.is_empty() => (
            Err(AddressProblem::NotAssigned(
                "no address: give spec.addresses an IPAddress, or run the agents with --vip-pool".into(),
            )),
            false,
        ),
        None => (
            Err(AddressProblem::NotAssigned(
                "waiting for the allocator to assign one from --vip-pool (a pool may be full)".into(),
            )),
            false,
        ),
    }
}

fn listener_result(l: &Listener) -> ListenerResult {
    let proto = protocol(&l.protocol);
    let mut r = ListenerResult {
        name: l.name.clone(),
        port: u16::try_from(l.port).unwrap_or(0),
        protocol: proto,
        protocol_text: l.protocol.clone(),
        ..Default::default()
    };
    let Some(p) = proto else { return r };
    let mine = kind_of(p);
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()).filter(|k| !k.is_empty()) {
        None => r.supported_kinds.push(mine),
        Some(kinds) => {
            for k in kinds {
                let group_ok = k.group.as_deref().is_none_or(|g| g == GROUP);
                if group_ok && k.kind == mine.kind() {
                    if !r.supported_kinds.contains(&mine) {
                        r.supported_kinds.push(mine);
                    }
                } else {
                    r.invalid_kinds.push(k.kind.clone());
                }
            }
        }
    }
    r
}

/// Whether the listener's `allowedRoutes.namespaces` lets routes of
/// `route_ns` attach (the Gateway is in `gw_ns`).
fn namespace_allowed(l: &Listener, gw_ns: &str, route_ns: &str, namespaces: &[Arc<Namespace>]) -> bool {
    let ns = l.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
    match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Same" => gw_ns == route_ns,
        "Selector" => {
            let Some(sel) = ns.and_then(|n| n.selector.clone()) else { return false };
            let Ok(sel) = Selector::try_from(sel) else { return false };
            let mut labels = namespaces
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(route_ns))
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            labels.insert("kubernetes.io/metadata.name".into(), route_ns.into());
            sel.matches(&labels)
        }
        _ => false,
    }
}

/// Translates the Gateway API objects (see the module doc).
pub fn translate(inp: &Inputs<'_>) -> Translation {
    let mut out = Translation::default();
    for c in inp.classes {
        if c.spec.controller_name == inp.controller_name {
            out.classes.insert(c.metadata.name.clone().unwrap_or_default(), c.metadata.generation);
        }
    }
    let mut gateways: Vec<&Arc<Gateway>> =
        inp.gateways.iter().filter(|g| out.classes.contains_key(&g.spec.gateway_class_name)).collect();
    gateways.sort_by_cached_key(|g| claim_rank(&g.metadata));
    for gw in &gateways {
        let (address, static_address) = address(gw, inp.pools);
        let mut listeners: Vec<ListenerResult> = gw.spec.listeners.iter().map(listener_result).collect();
        let mut count: BTreeMap<(u16, Protocol), usize> = BTreeMap::new();
        for l in &listeners {
            if let Some(p) = l.protocol {
                *count.entry((l.port, p)).or_default() += 1;
            }
        }
        for l in &mut listeners {
            l.conflicted = l.protocol.is_some_and(|p| count[&(l.port, p)] > 1);
        }
        out.gateways.insert(
            key(&gw.metadata),
            GatewayResult {
                generation: gw.metadata.generation,
                rank: claim_rank(&gw.metadata),
                address,
                static_address,
                listeners,
                notes: Vec::new(),
            },
        );
    }
    // Attach the routes: per listener, the routes accepted on it.
    let mut attached: BTreeMap<(ObjKey, String), Vec<(ClaimRank, RouteKey)>> = BTreeMap::new();
    for route in inp.routes {
        let (ns, name) = key(&route.metadata);
        let rkey: RouteKey = (route.kind, ns.clone(), name.clone());
        let mut parents = Vec::new();
        let mut seen = BTreeSet::new();
        for p in &route.spec.parent_refs {
            if p.group.as_deref().is_some_and(|g| g != GROUP) || p.kind.as_deref().is_some_and(|k| k != "Gateway") {
                continue;
            }
            let gkey = (p.namespace.clone().unwrap_or_else(|| ns.clone()), p.name.clone());
            let Some(gw) = gateways.iter().find(|g| key(&g.metadata) == gkey) else { continue };
            if !seen.insert(p.clone()) {
                continue;
            }
            let results = &out.gateways[&gkey].listeners;
            let mut matching = 0;
            let mut accepted_on = Vec::new();
            for (l, r) in gw.spec.listeners.iter().zip(results) {
                if p.section_name.as_deref().is_some_and(|s| s != l.name) || p.port.is_some_and(|port| port != l.port) {
                    continue;
                }
                matching += 1;
                if r.valid()
                    && r.supported_kinds.contains(&route.kind)
                    && namespace_allowed(l, &gkey.0, &ns, inp.namespaces)
                {
                    accepted_on.push(l.name.clone());
                }
            }
            let accepted = if matching == 0 {
                Err((
                    reason::NO_MATCHING_PARENT,
                    "no listener of the Gateway matches the parentRef's sectionName and port".into(),
                ))
            } else if accepted_on.is_empty() {
                Err((
                    reason::NOT_ALLOWED_BY_LISTENERS,
                    format!("no listener the parentRef names allows a {} from namespace {ns}", route.kind.kind()),
                ))
            } else {
                for l in accepted_on {
                    attached.entry((gkey.clone(), l)).or_default().push((claim_rank(&route.metadata), rkey.clone()));
                }
                Ok(())
            };
            parents.push(ParentResult { parent_ref: p.clone(), accepted });
        }
        if parents.is_empty() {
            continue;
        }
        let resolution = backends::resolve(&route.spec.rules, &ns, route.kind, inp.services, inp.grants);
        out.routes.insert(rkey, RouteResult { generation: route.metadata.generation, resolution, parents });
    }
    // Program the listeners, claiming address, port and protocol among
    // Gateways in claim order.
    let mut claims: Claims<(IpAddr, u16, Protocol), String> = Claims::default();
    for gw in &gateways {
        let gkey = key(&gw.metadata);
        let result = out.gateways.get_mut(&gkey).expect("inserted above");
        for l in &mut result.listeners {
            let mut routes = attached.remove(&(gkey.clone(), l.name.clone())).unwrap_or_default();
            routes.sort();
            l.attached_routes = routes.len();
            l.route = routes.first().map(|(_, r)| r.clone());
        }
        let Ok(vip) = result.address else { continue };
        let owner = |l: &str| format!("Gateway {}/{} listener {l}", gkey.0, gkey.1);
        for l in &mut result.listeners {
            let Some(proto) = l.protocol.filter(|_| l.valid() && l.port != 0) else { continue };
            if let Err(first) = claims.claim((vip, l.port, proto), owner(&l.name)) {
                result.notes.push(Note {
                    warning: true,
                    reason: svc_reason::PORT_CLAIM_CONFLICT,
                    message: format!(
                        "{vip} port {}/{proto} belongs to {first}, which claimed it first; {} is not programmed",
                        l.port,
                        owner(&l.name)
                    ),
                });
                l.port_taken_by = Some(first);
                continue;
            }
            let refs =
                l.route.as_ref().and_then(|r| out.routes.get(r)).map(|r| r.resolution.refs.clone()).unwrap_or_default();
            let (backends, reject_weight, left_out) = backends::backends(&refs, inp.slices, inp.node_name, vip, l.port);
            for m in left_out {
                result.notes.push(Note { warning: true, reason: svc_reason::INVALID, message: m });
            }
            let spec = ServiceSpec {
                backends,
                reject_weight,
                ..ServiceSpec::new(service_name(&gkey.0, &gkey.1, &l.name), vip, l.port, proto)
            };
            if let Err(e) = spec.validate() {
                l.invalid = Some(e.to_string());
                continue;
            }
            l.service = Some(spec.name.clone());
            out.candidates.push(Candidate {
                gateway: gkey.clone(),
                listener: l.name.clone(),
                rank: result.rank.clone(),
                spec,
            });
        }
    }
    out
}

impl Translation {
    /// The keys the listeners' services claim, for the Service translation.
    pub fn reservations(&self) -> Vec<Reservation> {
        self.candidates
            .iter()
            .map(|c| Reservation {
                key: c.spec.key(),
                rank: c.rank.clone(),
                owner: format!("Gateway {}/{} listener {}", c.gateway.0, c.gateway.1, c.listener),
            })
            .collect()
    }

    /// Drops the listeners whose key an older Service took (`taken`: key →
    /// the Service's `namespace/name`), with a Warning note each.
    pub fn yield_to(&mut self, taken: &BTreeMap<(IpAddr, u16, Protocol), String>) {
        let gateways = &mut self.gateways;
        self.candidates.retain(|c| {
            let Some(svc) = taken.get(&c.spec.key()) else { return true };
            if let Some(g) = gateways.get_mut(&c.gateway) {
                if let Some(l) = g.listeners.iter_mut().find(|l| l.name == c.listener) {
                    l.service = None;
                    l.port_taken_by = Some(format!("Service {svc}"));
                }
                let (vip, port, proto) = c.spec.key();
                g.notes.push(Note {
                    warning: true,
                    reason: svc_reason::PORT_CLAIM_CONFLICT,
                    message: format!(
                        "{vip} port {port}/{proto} belongs to Service {svc}, which claimed it first; Gateway {}/{} listener {} is not programmed",
                        c.gateway.0, c.gateway.1, c.listener
                    ),
                });
            }
            false
        });
    }

    /// The services to program.
    pub fn services(&self) -> impl Iterator<Item = &ServiceSpec> {
        self.candidates.iter().map(|c| &c.spec)
    }

    /// The Gateway notes with their Gateways' keys, plus a `Programmed`
    /// note for each Gateway with a programmed listener.
    pub fn notes(&self) -> BTreeMap<ObjKey, Vec<Note>> {
        self.gateways
            .iter()
            .map(|(k, g)| {
                let mut notes = g.notes.clone();
                let programmed: Vec<String> = g.listeners.iter().filter_map(|l| l.service.clone()).collect();
                if let (Ok(vip), false) = (&g.address, programmed.is_empty()) {
                    notes.push(Note {
                        warning: false,
                        reason: svc_reason::PROGRAMMED,
                        message: format!("xlb serves {} on {vip}", programmed.join(", ")),
                    });
                }
                (k.clone(), notes)
            })
            .collect()
    }
}
