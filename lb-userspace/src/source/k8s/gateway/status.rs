//! The statuses xlb writes, computed from the translation's facts (pure):
//! GatewayClass `Accepted` + `supportedFeatures`; Gateway `Accepted`,
//! `Programmed`, `addresses` and per listener `supportedKinds`,
//! `attachedRoutes`, `Accepted`, `Programmed`, `ResolvedRefs`,
//! `Conflicted`; per route, its `status.parents[]` entries of ours with
//! `Accepted` and `ResolvedRefs`. Every condition carries the object's
//! `observedGeneration`; `lastTransitionTime` moves only when a
//! condition's status does, so a status computed twice from the same facts
//! is equal to the one written and is not written again.
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    translate::{AddressProblem, GatewayResult, ListenerResult, RouteResult},
    types::{
        Condition, GatewayAddress, GatewayClassStatus, GatewayStatus, ListenerStatus, RouteGroupKind,
        RouteParentStatus, RouteStatus, SupportedFeature, GROUP,
    },
};

/// A condition before its generation and time are added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// `type`.
    pub type_: &'static str,
    /// `status` (`True`/`False`).
    pub status: bool,
    /// `reason`.
    pub reason: &'static str,
    /// `message`.
    pub message: String,
}

fn cond(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Cond {
    Cond { type_, status, reason, message: message.into() }
}

/// The features a GatewayClass of ours supports (sorted, as upstream asks).
pub const SUPPORTED_FEATURES: &[&str] = &["Gateway", "ReferenceGrant", "TCPRoute", "UDPRoute"];

/// Full conditions from `conds`, keeping the `lastTransitionTime` of a
/// condition in `previous` whose type and status are the same.
pub fn conditions(conds: &[Cond], generation: Option<i64>, previous: &[Condition], now: &Time) -> Vec<Condition> {
    conds
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == status)
                .and_then(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.into(),
                status: status.into(),
                reason: c.reason.into(),
                message: c.message.clone(),
                observed_generation: generation,
                last_transition_time: Some(since),
            }
        })
        .collect()
}

/// A GatewayClass of ours.
pub fn class_status(generation: Option<i64>, current: Option<&GatewayClassStatus>, now: &Time) -> GatewayClassStatus {
    let previous = current.map(|c| c.conditions.as_slice()).unwrap_or_default();
    GatewayClassStatus {
        conditions: conditions(
            &[cond("Accepted", true, "Accepted", "xlb serves the TCP and UDP listeners of this class's Gateways")],
            generation,
            previous,
            now,
        ),
        supported_features: SUPPORTED_FEATURES.iter().map(|f| SupportedFeature { name: (*f).into() }).collect(),
    }
}

/// The conditions of a listener of a Gateway whose address is `address`.
pub fn listener_conditions(l: &ListenerResult, address: &Result<IpAddr, AddressProblem>) -> Vec<Cond> {
    let mut accepted = cond("Accepted", true, "Accepted", "");
    let mut programmed = cond("Programmed", true, "Programmed", "");
    let mut resolved = cond("ResolvedRefs", true, "ResolvedRefs", "");
    let mut conflicted = cond("Conflicted", false, "NoConflicts", "");
    if l.protocol.is_none() {
        accepted = cond(
            "Accepted",
            false,
            "UnsupportedProtocol",
            format!("protocol {} is not served by xlb (TCP and UDP are)", l.protocol_text),
        );
        programmed = cond("Programmed", false, "Invalid", "the listener is not accepted");
    } else if l.conflicted {
        conflicted = cond(
            "Conflicted",
            true,
            "ProtocolConflict",
            format!("another listener has port {} and protocol {}", l.port, l.protocol_text),
        );
        programmed = cond("Programmed", false, "Invalid", "the listener conflicts with another");
    } else if let Some(owner) = &l.port_taken_by {
        accepted = cond(
            "Accepted",
            false,
            "PortUnavailable",
            format!("the address and port {}/{} belong to {owner}, which claimed them first", l.port, l.protocol_text),
        );
        programmed = cond("Programmed", false, "Invalid", "the listener is not accepted");
    } else if let Err(p) = address {
        let m = match p {
            AddressProblem::Unsupported(m) | AddressProblem::NotUsable(m) | AddressProblem::NotAssigned(m) => m,
        };
        programmed = cond("Programmed", false, "Pending", format!("the Gateway has no usable address: {m}"));
    } else if let Some(e) = &l.invalid {
        programmed = cond("Programmed", false, "Invalid", e.clone());
    } else if l.service.is_none() {
        programmed = cond("Programmed", false, "Pending", "");
    }
    if !l.invalid_kinds.is_empty() {
        resolved = cond(
            "ResolvedRefs",
            false,
            "InvalidRouteKinds",
            format!(
                "allowedRoutes.kinds: {} cannot attach to a {} listener",
                l.invalid_kinds.join(", "),
                l.protocol_text
            ),
        );
    }
    vec![accepted, programmed, resolved, conflicted]
}

/// The conditions of a Gateway; `allocated`: the address the allocator
/// gives it now, if any.
pub fn gateway_conditions(g: &GatewayResult, allocated: Option<IpAddr>) -> Vec<Cond> {
    let all_valid = g.listeners.iter().all(|l| l.valid() && l.port_taken_by.is_none());
    let accepted_ok = if all_valid {
        cond("Accepted", true, "Accepted", "")
    } else {
        cond("Accepted", true, "ListenersNotValid", "some listeners are not valid; see their conditions")
    };
    match &g.address {
        Ok(_) => vec![accepted_ok, cond("Programmed", true, "Programmed", "")],
        Err(AddressProblem::Unsupported(m)) => {
            vec![
                cond("Accepted", false, "UnsupportedAddress", m.clone()),
                cond("Programmed", false, "Invalid", m.clone()),
            ]
        }
        Err(AddressProblem::NotUsable(m)) => {
            vec![accepted_ok, cond("Programmed", false, "AddressNotUsable", m.clone())]
        }
        Err(AddressProblem::NotAssigned(m)) => {
            let m = match allocated {
                Some(ip) => format!("{ip} is assigned from --vip-pool and about to be programmed"),
                None => m.clone(),
            };
            vec![accepted_ok, cond("Programmed", false, "AddressNotAssigned", m)]
        }
    }
}

/// A Gateway of ours.
pub fn gateway_status(
    g: &GatewayResult,
    allocated: Option<IpAddr>,
    current: Option<&GatewayStatus>,
    now: &Time,
) -> GatewayStatus {
    let empty = GatewayStatus::default();
    let current = current.unwrap_or(&empty);
    let ip = g.address.as_ref().ok().copied().or(allocated);
    let listeners = g
        .listeners
        .iter()
        .map(|l| {
            let previous = current.listeners.iter().find(|p| p.name == l.name).map(|p| p.conditions.as_slice());
            ListenerStatus {
                name: l.name.clone(),
                supported_kinds: l
                    .supported_kinds
                    .iter()
                    .map(|k| RouteGroupKind { group: Some(GROUP.into()), kind: k.kind().into() })
                    .collect(),
                attached_routes: i32::try_from(l.attached_routes).unwrap_or(i32::MAX),
                conditions: conditions(
                    &listener_conditions(l, &g.address),
                    g.generation,
                    previous.unwrap_or_default(),
                    now,
                ),
            }
        })
        .collect();
    GatewayStatus {
        addresses: ip
            .into_iter()
            .map(|ip| GatewayAddress { type_: Some("IPAddress".into()), value: ip.to_string() })
            .collect(),
        conditions: conditions(&gateway_conditions(g, allocated), g.generation, &current.conditions, now),
        listeners,
    }
}

/// A route's `status`: the parents other controllers wrote, then ours.
pub fn route_status(r: &RouteResult, controller: &str, current: Option<&RouteStatus>, now: &Time) -> RouteStatus {
    let previous: &[RouteParentStatus] = current.map(|c| c.parents.as_slice()).unwrap_or_default();
    let mut parents: Vec<RouteParentStatus> =
        previous.iter().filter(|p| p.controller_name != controller).cloned().collect();
    let resolved = match &r.resolution.problem {
        None => cond("ResolvedRefs", true, "ResolvedRefs", ""),
        Some((reason, m)) => cond("ResolvedRefs", false, reason, m.clone()),
    };
    for p in &r.parents {
        let accepted = match &p.accepted {
            Ok(()) => cond("Accepted", true, "Accepted", ""),
            Err((reason, m)) => cond("Accepted", false, reason, m.clone()),
        };
        let before = previous
            .iter()
            .find(|q| q.controller_name == controller && q.parent_ref == p.parent_ref)
            .map(|q| q.conditions.as_slice())
            .unwrap_or_default();
        parents.push(RouteParentStatus {
            parent_ref: p.parent_ref.clone(),
            controller_name: controller.into(),
            conditions: conditions(&[accepted, resolved.clone()], r.generation, before, now),
        });
    }
    RouteStatus { parents }
}
