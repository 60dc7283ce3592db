//! Gateway API L4 end to end: the agent against the fake API server (with
//! the Gateway API CRDs), real packets from the client namespace through
//! the Gateway's address to pods. Each test mirrors an upstream conformance
//! test of the GATEWAY-UDP / GATEWAY-TCP profiles (Gateway API v1.6), named
//! after it in snake case (`UDPRouteWeightedRouting` →
//! `udproute_weighted_routing`; `UDPRoute` → `udproute`). The `gateway_*`
//! and `service_*` tests have no upstream counterpart: they cover the
//! issue's extra cases (CRDs installed after start, address from the pool
//! and Gateway deleted, listener conflicts, a Service and a listener
//! claiming one port). Needs root.

mod k8s;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s::*;
use serde_json::{json, Value};
use xlb_tests::k8s::{self as gw, LbService};
use xlb_tests::{tcp_probe, udp_probe, Probe, Topology, NO_REPLY};

const CONTROLLER: &str = "xlb.io/gateway-controller";
const CLASS: &str = "xlb";
/// Namespace of the backends only a ReferenceGrant opens up.
const OTHER_NS: &str = "backends";

/// A plain (ClusterIP) Service `ns/name`, a route's backend.
fn backend_service(ns: &str, name: &str) -> LbService {
    xlb_tests::k8s::lb_service(ns, name).service_type("ClusterIP").class(None)
}

/// The GatewayClass of xlb's controller and two backend Services in
/// [`NS`] served by pods 0 and 1: `dns` (53/UDP → 5353) and `web`
/// (80/TCP → 8080).
fn cluster() -> Cluster {
    let c = Cluster::start_gateway(2, &[]);
    base_objects(&c);
    c
}

fn base_objects(c: &Cluster) {
    c.create_gateway_object(&gw::gateway_class(CLASS, CONTROLLER));
    c.create_service(&backend_service(NS, "dns").port("dns", 53, "UDP"));
    c.set_slice(NS, "dns", "dns", false, &[ready(0), ready(1)], &[("dns", UDP_PORT, "UDP")]);
    c.create_service(&backend_service(NS, "web").port("http", 80, "TCP"));
    c.set_slice(NS, "web", "web", false, &[ready(0), ready(1)], &[("http", TCP_PORT, "TCP")]);
}

/// A Gateway `gw` in [`NS`] on the test VIP.
fn gateway() -> gw::GatewayBuilder {
    gw::gateway(NS, "gw", CLASS).address(&Topology::VIP_V4.to_string())
}

fn route_status(c: &Cluster, kind: &str, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let obj = c.wait_object(&gw::route_path(kind, NS, name), what, |o| {
        o["status"]["parents"].as_array().and_then(|p| p.first()).is_some_and(&pred)
    });
    obj["status"]["parents"][0].clone()
}

/// Waits until route `name`'s first parent is `Accepted` and
/// `ResolvedRefs`, with the upstream reasons (`RouteReasonAccepted`,
/// `RouteReasonResolvedRefs`).
fn accepted_and_resolved(c: &Cluster, kind: &str, name: &str) -> Value {
    let p = route_status(c, kind, name, "parent Accepted and ResolvedRefs", |p| {
        is_true(p, "Accepted") && is_true(p, "ResolvedRefs")
    });
    assert_eq!(condition(&p, "Accepted"), Some(("True".into(), "Accepted".into())), "{p:#}");
    assert_eq!(condition(&p, "ResolvedRefs"), Some(("True".into(), "ResolvedRefs".into())), "{p:#}");
    p
}

/// `(status, reason)` of the conditions `types` of `holder`.
fn conditions(holder: &Value, types: &[&str]) -> Vec<Option<(String, String)>> {
    types.iter().map(|t| condition(holder, t)).collect()
}

/// `Some((status, reason))` for each pair.
fn expect(pairs: &[(&str, &str)]) -> Vec<Option<(String, String)>> {
    pairs.iter().map(|(s, r)| Some(((*s).to_string(), (*r).to_string()))).collect()
}

/// A listener of one route kind that is accepted, programmed and holds
/// `attached` routes, with the upstream reasons (`ListenerReasonAccepted`,
/// `ListenerReasonProgrammed`, `ListenerReasonResolvedRefs`,
/// `ListenerReasonNoConflicts`) and `supportedKinds` of the Gateway API group.
fn assert_listener_ok(l: &Value, kind: &str, attached: u64) {
    let got = conditions(l, &["Accepted", "Programmed", "ResolvedRefs", "Conflicted"]);
    let want =
        expect(&[("True", "Accepted"), ("True", "Programmed"), ("True", "ResolvedRefs"), ("False", "NoConflicts")]);
    assert_eq!(got, want, "{l:#}");
    assert_eq!(l["supportedKinds"], json!([{"group": gw::GATEWAY_GROUP, "kind": kind}]), "{l:#}");
    assert_eq!(l["attachedRoutes"], attached, "{l:#}");
}

/// Waits until `n` new UDP flows to `port` of the VIP all get a reply;
/// returns the tally of the last round.
fn wait_udp_served(c: &Cluster, port: u16, n: usize) -> HashMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = c.udp(vip4(port), n);
        if !t.contains_key(NO_REPLY) && t.values().sum::<usize>() == n {
            return t;
        }
        assert!(Instant::now() < deadline, "UDP {port} not served: {t:?}\n{}", c.agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (up to 10 s) until `n` new UDP flows to `to` are all answered,
/// by both pods.
fn wait_both_pods(c: &Cluster, to: std::net::SocketAddr, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = c.udp(to, n);
        if tags(&t) == ["pod0", "pod1"] {
            return;
        }
        assert!(Instant::now() < deadline, "{to} not served by both pods: {t:?}\n{}", c.agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until Gateway [`NS`]/`name` is `Programmed` with an address in its
/// status; returns the address.
fn programmed_address(c: &Cluster, name: &str) -> std::net::IpAddr {
    let g = c.wait_object(&gw::gateway_path(NS, name), "Programmed with an address", |o| {
        o["status"]["addresses"][0]["value"].is_string() && is_true(&o["status"], "Programmed")
    });
    g["status"]["addresses"][0]["value"].as_str().unwrap().parse().expect("an IP")
}

fn udp_outcomes(c: &Cluster, port: u16, n: usize) -> (usize, usize, usize) {
    UDP.outcomes(c, port, n)
}

/// What the UDP and TCP variants of a conformance test differ in: the
/// protocol, the route kind, and the backend Service of [`base_objects`]
/// (`dns` 53/UDP or `web` 80/TCP) with its listener name and a second port.
#[derive(Clone, Copy)]
struct L4 {
    protocol: &'static str,
    kind: &'static str,
    /// The Service, its port name and port, and the listener's name.
    service: &'static str,
    port_name: &'static str,
    port: u16,
    /// The pods' port (the Service's target port).
    target: u16,
    /// Another port for a second listener.
    alt_port: u16,
}

const UDP: L4 = L4 {
    protocol: "UDP",
    kind: "UDPRoute",
    service: "dns",
    port_name: "dns",
    port: 53,
    target: UDP_PORT,
    alt_port: 5300,
};
const TCP: L4 = L4 {
    protocol: "TCP",
    kind: "TCPRoute",
    service: "web",
    port_name: "http",
    port: 80,
    target: TCP_PORT,
    alt_port: 8000,
};

impl L4 {
    /// The listener's name in these tests (`dns` or `web`).
    fn listener(self) -> &'static str {
        if self.protocol == "UDP" {
            "dns"
        } else {
            "web"
        }
    }

    /// Starts a route of this kind.
    fn route(self, ns: &str, name: &str) -> gw::RouteBuilder {
        if self.protocol == "UDP" {
            gw::udp_route(ns, name)
        } else {
            gw::tcp_route(ns, name)
        }
    }

    /// A Service `ns/name` like the base one whose only endpoint is pod `pod`.
    fn backend_in(self, c: &Cluster, ns: &str, name: &str, pod: usize) {
        c.create_service(&backend_service(ns, name).port(self.port_name, self.port, self.protocol));
        c.set_slice(ns, name, name, false, &[ready(pod)], &[(self.port_name, self.target, self.protocol)]);
    }

    /// Tally of replies per pod over `n` new flows to VIP:`port` (UDP:
    /// once all are answered, [`wait_udp_served`]).
    fn tally(self, c: &Cluster, port: u16, n: usize) -> HashMap<String, usize> {
        if self.protocol == "UDP" {
            wait_udp_served(c, port, n)
        } else {
            c.tcp(vip4(port), n)
        }
    }

    /// `(served, refused, silent)` of `n` new flows to VIP:`port` (refused:
    /// UDP ICMP port unreachable, TCP RST).
    fn outcomes(self, c: &Cluster, port: u16, n: usize) -> (usize, usize, usize) {
        let (mut served, mut refused, mut silent) = (0, 0, 0);
        for _ in 0..n {
            let probe = if self.protocol == "UDP" { udp_probe } else { tcp_probe };
            match probe(&c.topo.client, vip4(port), b"x", T).expect("probe") {
                Probe::Reply(_) => served += 1,
                Probe::Refused => refused += 1,
                Probe::Timeout => silent += 1,
            }
        }
        (served, refused, silent)
    }
}

/// Waits until route `name`'s first parent has `ResolvedRefs=False`;
/// returns its reason, the route still Accepted.
fn unresolved_reason(c: &Cluster, kind: &str, name: &str) -> String {
    let p = route_status(c, kind, name, "ResolvedRefs=False", |p| {
        condition(p, "ResolvedRefs").is_some_and(|(s, _)| s == "False")
    });
    assert!(is_true(&p, "Accepted"), "{p:#}");
    condition(&p, "ResolvedRefs").unwrap().1
}

#[test]
fn udproute() {
    let c = cluster();
    c.create_gateway_object(&gateway().listener("dns", "UDP", 53).build());
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", None).backend("dns", 53, None).build());

    let class =
        c.wait_object(&gw::gateway_class_path(CLASS), "GatewayClass Accepted", |o| is_true(&o["status"], "Accepted"));
    assert_eq!(condition(&class["status"], "Accepted").unwrap().1, "Accepted", "{class:#}");
    let kinds = class["status"]["supportedFeatures"].to_string();
    assert!(kinds.contains("UDPRoute") && kinds.contains("TCPRoute"), "supportedFeatures: {kinds}");
    // The route may attach after the Gateway is first programmed (the
    // watches deliver the two objects in either order): wait for both.
    let g = c.wait_object(&gw::gateway_path(NS, "gw"), "Gateway Accepted and Programmed, the route attached", |o| {
        is_true(&o["status"], "Accepted")
            && is_true(&o["status"], "Programmed")
            && o["status"]["listeners"][0]["attachedRoutes"] == 1
    });
    let got = conditions(&g["status"], &["Accepted", "Programmed"]);
    assert_eq!(got, expect(&[("True", "Accepted"), ("True", "Programmed")]), "{g:#}");
    assert_eq!(g["status"]["addresses"][0]["value"], Topology::VIP_V4.to_string(), "{g:#}");
    let l = &g["status"]["listeners"][0];
    assert_eq!(l["name"], "dns", "{g:#}");
    assert_listener_ok(l, "UDPRoute", 1);
    let p = accepted_and_resolved(&c, "UDPRoute", "dns");
    assert_eq!(p["controllerName"], CONTROLLER, "{p:#}");
    assert_eq!(p["parentRef"]["name"], "gw", "{p:#}");

    c.wait_backends(&format!("gateway/{NS}/gw:dns"), 2);
    let t = wait_udp_served(&c, 53, 20);
    assert_eq!(tags(&t), ["pod0", "pod1"], "both endpoints serve: {t:?}");
}

/// A TCPRoute with neither `sectionName` nor `port` attaches to every TCP
/// listener (and to no UDP one): each serves it.
#[test]
fn tcproute_parent_ref_attach_all() {
    let c = cluster();
    c.create_gateway_object(
        &gateway().listener("web", "TCP", 80).listener("alt", "TCP", 8000).listener("dns", "UDP", 53).build(),
    );
    c.create_gateway_object(&gw::tcp_route(NS, "web").parent("gw", None).backend("web", 80, None).build());
    c.wait_object(&gw::gateway_path(NS, "gw"), "Gateway Programmed", |o| is_true(&o["status"], "Programmed"));
    let p = accepted_and_resolved(&c, "TCPRoute", "web");
    assert_eq!(p["controllerName"], CONTROLLER, "{p:#}");
    let g = c.wait_object(&gw::gateway_path(NS, "gw"), "attachedRoutes", |o| {
        o["status"]["listeners"].as_array().is_some_and(|l| l.len() == 3)
    });
    for l in g["status"]["listeners"].as_array().unwrap() {
        let want = u8::from(l["name"] != "dns");
        assert_eq!(l["attachedRoutes"], want, "{g:#}");
    }
    for (listener, port) in [("web", 80), ("alt", 8000)] {
        c.wait_backends(&format!("gateway/{NS}/gw:{listener}"), 2);
        let t = c.tcp(vip4(port), 20);
        assert_eq!(tags(&t), ["pod0", "pod1"], "port {port}: every connection answered, by both endpoints: {t:?}");
    }
}

/// TCP: weights 70/30/0 over three Services, ≥2000 new connections.
#[test]
fn tcproute_weighted_routing() {
    let c = weighted_cluster("TCP");
    let n = 2000;
    let t = c.tcp(vip4(80), n);
    check_weighted(&t, n);
}

/// TCP: a Service of another namespace, served only while a ReferenceGrant
/// there allows it.
#[test]
fn tcproute_reference_grant() {
    let c = cross_namespace_route(TCP);
    assert_eq!(unresolved_reason(&c, "TCPRoute", "web"), "RefNotPermitted");
    c.create_gateway_object(&gw::reference_grant(OTHER_NS, "from-apps", NS, None));
    accepted_and_resolved(&c, "TCPRoute", "web");
    c.wait_backends(&format!("gateway/{NS}/gw:web"), 1);
    let t = c.tcp(vip4(80), 10);
    assert_eq!(tags(&t), ["pod1"], "served by the other namespace's endpoint: {t:?}");
}

/// Two listeners; one route attaches by `sectionName`, the other by
/// `port`: each listener carries its route's backends.
fn parent_ref_port_and_section_name(p: L4) {
    let c = cluster();
    p.backend_in(&c, NS, "one", 1);
    let l = p.listener();
    c.create_gateway_object(&gateway().listener(l, p.protocol, p.port).listener("alt", p.protocol, p.alt_port).build());
    c.create_gateway_object(&p.route(NS, "by-section").parent("gw", Some("alt")).backend("one", p.port, None).build());
    c.create_gateway_object(
        &p.route(NS, "by-port").parent_ref(None, "gw", None, Some(p.port)).backend(p.service, p.port, None).build(),
    );
    for name in ["by-section", "by-port"] {
        accepted_and_resolved(&c, p.kind, name);
    }
    c.wait_backends(&format!("gateway/{NS}/gw:alt"), 1);
    c.wait_backends(&format!("gateway/{NS}/gw:{l}"), 2);
    let alt = p.tally(&c, p.alt_port, 10);
    assert_eq!(tags(&alt), ["pod1"], "the alt listener serves the by-section route's backend only: {alt:?}");
    let main = p.tally(&c, p.port, 20);
    assert_eq!(tags(&main), ["pod0", "pod1"], "the {l} listener serves the by-port route: {main:?}");
}

#[test]
fn udproute_parent_ref_port_and_section_name() {
    parent_ref_port_and_section_name(UDP);
}

/// A route whose parentRef names a listener of the other protocol (`other`,
/// on port 53): not accepted (`NotAllowedByListeners`), nothing attached,
/// nothing of the route's protocol programmed.
fn not_allowed_by_listeners(p: L4, other: L4) {
    let c = cluster();
    let (l, name) = (other.listener(), p.listener());
    c.create_gateway_object(&gateway().listener(l, other.protocol, 53).build());
    c.create_gateway_object(&p.route(NS, name).parent("gw", Some(l)).backend(p.service, p.port, None).build());
    let r = route_status(&c, p.kind, name, "parent Accepted=False", |r| {
        condition(r, "Accepted").is_some_and(|(s, _)| s == "False")
    });
    assert_eq!(condition(&r, "Accepted").unwrap().1, "NotAllowedByListeners", "{r:#}");
    let status = listener_status(&c, l, "listener status", |l| l["attachedRoutes"].is_number());
    assert_eq!(status["attachedRoutes"], 0, "{status:#}");
    let programmed = c.programmed();
    let proto = p.protocol.to_lowercase();
    assert!(
        programmed.values().all(|s| s["protocol"] != proto.as_str()),
        "no {proto} service from a route the listener refuses: {programmed:#?}"
    );
}

/// A TCPRoute whose parentRef names a UDP listener.
#[test]
fn tcproute_invalid_non_tcp_listener() {
    not_allowed_by_listeners(TCP, UDP);
}

/// A route with a Service that exists and one that does not, of equal
/// weight: `ResolvedRefs=False` (`BackendNotFound`), the route still
/// Accepted; the missing one's share of new flows is refused (UDP: ICMP
/// port unreachable, TCP: a RST), the rest served.
fn invalid_backend_ref_nonexistent(p: L4) {
    let c = cluster();
    let l = p.listener();
    c.create_gateway_object(&gateway().listener(l, p.protocol, p.port).build());
    c.create_gateway_object(
        &p.route(NS, l)
            .parent("gw", None)
            .backend(p.service, p.port, Some(50))
            .backend("nope", p.port, Some(50))
            .build(),
    );
    assert_eq!(unresolved_reason(&c, p.kind, l), "BackendNotFound");
    c.wait_backends(&format!("gateway/{NS}/gw:{l}"), 2);
    let (served, refused, silent) = p.outcomes(&c, p.port, 60);
    assert_eq!(silent, 0, "every flow served or refused ({served} served, {refused} refused)");
    assert!((10..=50).contains(&refused), "about half refused: {refused} of 60 ({served} served)");
}

#[test]
fn udproute_invalid_backend_ref_nonexistent() {
    invalid_backend_ref_nonexistent(UDP);
}

/// A route to the Service of [`OTHER_NS`] like the base one (pod 1), no
/// ReferenceGrant there.
fn cross_namespace_route(p: L4) -> Cluster {
    let c = cluster();
    p.backend_in(&c, OTHER_NS, p.service, 1);
    let l = p.listener();
    c.create_gateway_object(&gateway().listener(l, p.protocol, p.port).build());
    c.create_gateway_object(
        &p.route(NS, l).parent("gw", None).backend_ref(Some(OTHER_NS), p.service, p.port, None).build(),
    );
    c
}

/// Waits until every new UDP flow to VIP:53 is refused (ICMP port unreachable).
fn wait_udp_refused(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (replies, refused, silent) = udp_outcomes(c, 53, 5);
        if (replies, silent) == (0, 0) {
            return;
        }
        assert!(Instant::now() < deadline, "not refused: {replies} served, {refused} refused, {silent} silent");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A backendRef to a Service of another namespace without a ReferenceGrant
/// there: `ResolvedRefs=False` (`RefNotPermitted`), the route Accepted,
/// every new flow refused.
fn invalid_cross_namespace_backend_ref(p: L4) {
    let c = cross_namespace_route(p);
    let l = p.listener();
    assert_eq!(unresolved_reason(&c, p.kind, l), "RefNotPermitted");
    c.wait_programmed("the listener programmed", |s| s.contains_key(&format!("gateway/{NS}/gw:{l}")));
    let (served, refused, silent) = p.outcomes(&c, p.port, 10);
    assert_eq!((served, silent), (0, 0), "without a grant nothing is served, all refused ({refused})");
}

#[test]
fn udproute_invalid_cross_namespace_backend_ref() {
    invalid_cross_namespace_backend_ref(UDP);
}

/// The same route with a ReferenceGrant in the backend's namespace: served;
/// the grant deleted: refused again.
#[test]
fn udproute_reference_grant() {
    let c = cross_namespace_route(UDP);
    c.create_gateway_object(&gw::reference_grant(OTHER_NS, "from-apps", NS, Some("dns")));
    accepted_and_resolved(&c, "UDPRoute", "dns");
    let t = wait_udp_served(&c, 53, 10);
    assert_eq!(tags(&t), ["pod1"], "served by the other namespace's endpoint: {t:?}");

    c.kc.delete(&gw::route_path("ReferenceGrant", OTHER_NS, "from-apps")).expect("delete ReferenceGrant");
    route_status(&c, "UDPRoute", "dns", "ResolvedRefs=False again", |p| {
        condition(p, "ResolvedRefs").is_some_and(|(s, r)| s == "False" && r == "RefNotPermitted")
    });
    wait_udp_refused(&c);
}

/// A UDPRoute whose parentRef names a TCP listener.
#[test]
fn udproute_not_allowed_by_listeners() {
    not_allowed_by_listeners(UDP, TCP);
}

/// The CRDs are installed after the agent started: it keeps running, finds
/// them, and serves a Gateway created then.
#[test]
fn gateway_api_crds_installed_after_start() {
    let c = Cluster::start(2, &[]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(c.agent.is_healthy(), "healthy without the Gateway API:\n{}", c.agent.log());
    c.api.install_gateway_api().expect("install the Gateway API CRDs");
    base_objects(&c);
    c.create_gateway_object(&gateway().listener("dns", "UDP", 53).build());
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", None).backend("dns", 53, None).build());
    // Discovery runs every 15 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.programmed().contains_key(&format!("gateway/{NS}/gw:dns")) {
        assert!(Instant::now() < deadline, "the Gateway is never programmed:\n{}", c.agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    accepted_and_resolved(&c, "UDPRoute", "dns");
    let t = wait_udp_served(&c, 53, 20);
    assert_eq!(tags(&t), ["pod0", "pod1"], "{t:?}");
    assert!(c.agent.is_healthy(), "{}", c.agent.log());
}

/// A route without `sectionName` or `port` attaches to every listener of
/// its protocol: each serves it, each counts it.
#[test]
fn udproute_parent_ref_attach_all_listeners() {
    let c = cluster();
    c.create_gateway_object(&gateway().listener("dns", "UDP", 53).listener("alt", "UDP", 5300).build());
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", None).backend("dns", 53, None).build());
    accepted_and_resolved(&c, "UDPRoute", "dns");
    let g = c.wait_object(&gw::gateway_path(NS, "gw"), "both listeners with the route", |o| {
        o["status"]["listeners"].as_array().is_some_and(|l| l.len() == 2 && l.iter().all(|l| l["attachedRoutes"] == 1))
    });
    assert!(is_true(&g["status"], "Programmed"), "{g:#}");
    for port in [53, 5300] {
        let t = wait_udp_served(&c, port, 20);
        assert_eq!(tags(&t), ["pod0", "pod1"], "port {port}: {t:?}");
    }
}

/// Two routes on one listener: both Accepted, the oldest carries the traffic.
fn multiple_routes_attachment(p: L4) {
    let c = cluster();
    p.backend_in(&c, NS, "one", 1);
    let l = p.listener();
    c.create_gateway_object(&gateway().listener(l, p.protocol, p.port).build());
    // The newer first, so that the order of creation is not what decides.
    let route = |name: &str, backend: &str, created: &str| {
        p.route(NS, name).parent("gw", None).backend(backend, p.port, None).created(created).build()
    };
    c.create_gateway_object(&route("newer", p.service, "2026-02-01T00:00:00Z"));
    c.create_gateway_object(&route("older", "one", "2026-01-01T00:00:00Z"));
    for name in ["newer", "older"] {
        accepted_and_resolved(&c, p.kind, name);
    }
    let status = listener_status(&c, l, "both routes attached", |l| l["attachedRoutes"] == 2);
    assert_listener_ok(&status, p.kind, 2);
    c.wait_backends(&format!("gateway/{NS}/gw:{l}"), 1);
    let t = p.tally(&c, p.port, 20);
    assert_eq!(tags(&t), ["pod1"], "the oldest route's backend only: {t:?}");
}

#[test]
fn udproute_multiple_routes_attachment() {
    multiple_routes_attachment(UDP);
}

/// backendRef weights 70/30 over two Services (one endpoint each) and a
/// third of weight 0: the shares of ≥2000 new flows within ±5 %, none for
/// weight 0.
#[test]
fn udproute_weighted_routing() {
    let c = weighted_cluster("UDP");
    wait_udp_served(&c, 53, 5);
    let n = 2000;
    let t = c.udp(vip4(53), n);
    check_weighted(&t, n);
}

/// Three pods, a Service on each (`seventy`, `thirty`, `zero`: pod 0, 1,
/// 2), a Gateway listener of `protocol` (UDP 53, TCP 80) and a route with
/// those weights.
fn weighted_cluster(protocol: &str) -> Cluster {
    let c = Cluster::start_gateway(3, &[]);
    c.create_gateway_object(&gw::gateway_class(CLASS, CONTROLLER));
    let (port, target, kind) = if protocol == "UDP" { (53, UDP_PORT, "UDPRoute") } else { (80, TCP_PORT, "TCPRoute") };
    for (i, name) in ["seventy", "thirty", "zero"].iter().enumerate() {
        c.create_service(&backend_service(NS, name).port("p", port, protocol));
        c.set_slice(NS, name, name, false, &[ready(i)], &[("p", target, protocol)]);
    }
    c.create_gateway_object(&gateway().listener("l", protocol, port).build());
    let route = if protocol == "UDP" { gw::udp_route(NS, "r") } else { gw::tcp_route(NS, "r") };
    c.create_gateway_object(
        &route
            .parent("gw", None)
            .backend("seventy", port, Some(70))
            .backend("thirty", port, Some(30))
            .backend("zero", port, Some(0))
            .build(),
    );
    accepted_and_resolved(&c, kind, "r");
    // The final backend set, not a step on the way to it (e.g. two of the
    // three Services resolved, or weights not yet shared): pods 0, 1 and 2
    // at 70:30:0 (reduced, e.g. 7:3:0), no reject share.
    let service = format!("gateway/{NS}/gw:l");
    let want: Vec<String> = (0..3).map(|i| format!("{}:{target}", Topology::pod_addr_v4(i))).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.agent.cli(&["backends", &service, "-o", "json"]);
        let rows: Value = out.as_ref().map_or(Value::Null, |o| serde_json::from_slice(&o.stdout).unwrap_or_default());
        let rows = rows.as_array().cloned().unwrap_or_default();
        let weight = |addr: &str| -> Option<u64> {
            rows.iter().find(|r| r["address"] == addr && r["state"] != "reject").and_then(|r| r["weight"].as_u64())
        };
        let backends = rows.iter().filter(|r| r["state"] != "reject").count();
        let rejecting = rows.iter().any(|r| r["state"] == "reject" && r["weight"].as_u64() != Some(0));
        let done = match (weight(&want[0]), weight(&want[1]), weight(&want[2])) {
            (Some(w0), Some(w1), Some(0)) => backends == 3 && !rejecting && w1 > 0 && w0 * 30 == w1 * 70,
            _ => false,
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{service} never had exactly {want:?} at weights 70:30:0: {rows:#?}\n{}",
            c.agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

/// 70 % and 30 % (±5 %) of `n` new flows to pods 0 and 1, none to pod 2
/// (weight 0), none unanswered.
fn check_weighted(t: &HashMap<String, usize>, n: usize) {
    #[expect(clippy::cast_precision_loss, reason = "counts of a few thousand")]
    let share = |tag: &str| t.get(tag).copied().unwrap_or(0) as f64 / n as f64;
    assert!(!t.contains_key(NO_REPLY), "every flow answered: {t:?}");
    assert!((share("pod0") - 0.7).abs() <= 0.05, "70 % to weight 70: {t:?}");
    assert!((share("pod1") - 0.3).abs() <= 0.05, "30 % to weight 30: {t:?}");
    assert_eq!(t.get("pod2"), None, "nothing to weight 0: {t:?}");
}

/// A Gateway without `spec.addresses` gets one from `--vip-pool`, written
/// to its status and served; deleted, its service is gone.
#[test]
fn gateway_address_from_pool_and_deleted() {
    let c = Cluster::start_gateway(2, &["--vip-pool", "192.0.2.16/30"]);
    base_objects(&c);
    c.create_gateway_object(&gw::gateway(NS, "gw", CLASS).listener("dns", "UDP", 53).build());
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", None).backend("dns", 53, None).build());
    let ip = programmed_address(&c, "gw");
    let pool: Vec<String> = (16..20).map(|i| format!("192.0.2.{i}")).collect();
    assert!(pool.contains(&ip.to_string()), "{ip} from the pool {pool:?}");
    wait_both_pods(&c, std::net::SocketAddr::new(ip, 53), 10);
    c.kc.delete(&gw::gateway_path(NS, "gw")).expect("delete Gateway");
    c.wait_programmed("the listener's service gone", |p| !p.contains_key(&format!("gateway/{NS}/gw:dns")));
}

/// A Service of xlb's class holds VIP:53/UDP first; a Gateway listener on
/// the same address, port and protocol is not accepted (`PortUnavailable`)
/// and the Service keeps the traffic.
#[test]
fn service_and_gateway_listener_claim_the_same_port() {
    let c = cluster();
    c.create_service(&dns_service("svc").created("2026-01-01T00:00:00Z"));
    c.set_slice(NS, "svc", "svc", false, &[ready(1)], DNS_PORTS);
    c.wait_backends(&format!("{NS}/svc:dns"), 1);
    c.create_gateway_object(&gateway().listener("dns", "UDP", 53).build());
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", None).backend("dns", 53, None).build());
    let g = c.wait_object(&gw::gateway_path(NS, "gw"), "the listener refused", |o| {
        condition(&o["status"]["listeners"][0], "Accepted").is_some_and(|(s, _)| s == "False")
    });
    assert_eq!(condition(&g["status"]["listeners"][0], "Accepted").unwrap().1, "PortUnavailable", "{g:#}");
    let p = c.programmed();
    assert!(!p.contains_key(&format!("gateway/{NS}/gw:dns")), "{p:#?}");
    let t = wait_udp_served(&c, 53, 20);
    assert_eq!(tags(&t), ["pod1"], "the Service keeps the port: {t:?}");
}

/// TCP: a route with a Service that exists and one that does not: the
/// missing one's share of new connections is answered with a RST, the rest
/// served.
#[test]
fn tcproute_invalid_backend_ref_nonexistent() {
    let c = cluster();
    c.create_gateway_object(&gateway().listener("web", "TCP", 80).build());
    c.create_gateway_object(
        &gw::tcp_route(NS, "web").parent("gw", None).backend("web", 80, Some(50)).backend("nope", 80, Some(50)).build(),
    );
    let p = route_status(&c, "TCPRoute", "web", "ResolvedRefs=False", |p| {
        condition(p, "ResolvedRefs").is_some_and(|(s, _)| s == "False")
    });
    assert_eq!(condition(&p, "ResolvedRefs").unwrap().1, "BackendNotFound", "{p:#}");
    c.wait_backends(&format!("gateway/{NS}/gw:web"), 2);
    let (mut served, mut refused, mut silent) = (0, 0, 0);
    for _ in 0..60 {
        match tcp_probe(&c.topo.client, vip4(80), b"x", T).expect("TCP probe") {
            Probe::Reply(_) => served += 1,
            Probe::Refused => refused += 1,
            Probe::Timeout => silent += 1,
        }
    }
    assert_eq!(silent, 0, "every connection served or reset ({served} served, {refused} reset)");
    assert!((10..=50).contains(&refused), "about half reset: {refused} of 60 ({served} served)");
}

/// Listeners xlb cannot serve: two UDP listeners on one port
/// (`Conflicted=True`, `ProtocolConflict`) and an HTTP one (`Accepted=False`,
/// `UnsupportedProtocol`); a valid TCP listener beside them is served.
#[test]
fn gateway_listener_conflicts_and_unsupported_protocol() {
    let c = cluster();
    c.create_gateway_object(
        &gateway()
            .listener("dns-a", "UDP", 53)
            .listener("dns-b", "UDP", 53)
            .listener("http", "HTTP", 8000)
            .listener("web", "TCP", 80)
            .build(),
    );
    c.create_gateway_object(&gw::tcp_route(NS, "web").parent("gw", Some("web")).backend("web", 80, None).build());
    let g = c.wait_object(&gw::gateway_path(NS, "gw"), "four listener statuses", |o| {
        o["status"]["listeners"].as_array().is_some_and(|l| l.len() == 4)
    });
    let listener = |name: &str| -> Value {
        g["status"]["listeners"].as_array().unwrap().iter().find(|l| l["name"] == name).cloned().unwrap_or(Value::Null)
    };
    for name in ["dns-a", "dns-b"] {
        let l = listener(name);
        assert_eq!(condition(&l, "Conflicted"), Some(("True".into(), "ProtocolConflict".into())), "{g:#}");
        assert_eq!(condition(&l, "Programmed"), Some(("False".into(), "Invalid".into())), "{g:#}");
    }
    let http = listener("http");
    assert_eq!(condition(&http, "Accepted"), Some(("False".into(), "UnsupportedProtocol".into())), "{g:#}");
    assert_eq!(condition(&http, "Programmed"), Some(("False".into(), "Invalid".into())), "{g:#}");
    assert_eq!(condition(&g["status"], "Accepted"), Some(("True".into(), "ListenersNotValid".into())), "{g:#}");
    assert!(is_true(&listener("web"), "Programmed"), "{g:#}");
    accepted_and_resolved(&c, "TCPRoute", "web");
    c.wait_backends(&format!("gateway/{NS}/gw:web"), 2);
    let t = c.tcp(vip4(80), 10);
    assert_eq!(tags(&t), ["pod0", "pod1"], "{t:?}");
    let p = c.programmed();
    assert!(p.values().all(|s| s["protocol"] != "udp"), "no conflicting UDP listener programmed: {p:#?}");
}

/// TCP: two listeners; one route attaches by `sectionName`, the other by
/// `port`.
#[test]
fn tcproute_parent_ref_port_and_section_name() {
    let c = cluster();
    c.create_service(&backend_service(NS, "one").port("http", 80, "TCP"));
    c.set_slice(NS, "one", "one", false, &[ready(1)], &[("http", TCP_PORT, "TCP")]);
    c.create_gateway_object(&gateway().listener("web", "TCP", 80).listener("alt", "TCP", 8000).build());
    c.create_gateway_object(
        &gw::tcp_route(NS, "by-section").parent("gw", Some("alt")).backend("one", 80, None).build(),
    );
    c.create_gateway_object(
        &gw::tcp_route(NS, "by-port").parent_ref(None, "gw", None, Some(80)).backend("web", 80, None).build(),
    );
    for name in ["by-section", "by-port"] {
        accepted_and_resolved(&c, "TCPRoute", name);
    }
    c.wait_backends(&format!("gateway/{NS}/gw:alt"), 1);
    c.wait_backends(&format!("gateway/{NS}/gw:web"), 2);
    let alt = c.tcp(vip4(8000), 10);
    assert_eq!(tags(&alt), ["pod1"], "the alt listener serves the by-section route's backend only: {alt:?}");
    let web = c.tcp(vip4(80), 20);
    assert_eq!(tags(&web), ["pod0", "pod1"], "the web listener serves the by-port route: {web:?}");
}

/// TCP: two routes on one listener, both Accepted, the oldest carries the
/// connections.
#[test]
fn tcproute_multiple_routes_attachment() {
    let c = cluster();
    c.create_service(&backend_service(NS, "one").port("http", 80, "TCP"));
    c.set_slice(NS, "one", "one", false, &[ready(1)], &[("http", TCP_PORT, "TCP")]);
    c.create_gateway_object(&gateway().listener("web", "TCP", 80).build());
    c.create_gateway_object(
        &gw::tcp_route(NS, "newer").parent("gw", None).backend("web", 80, None).created("2026-02-01T00:00:00Z").build(),
    );
    c.create_gateway_object(
        &gw::tcp_route(NS, "older").parent("gw", None).backend("one", 80, None).created("2026-01-01T00:00:00Z").build(),
    );
    for name in ["newer", "older"] {
        accepted_and_resolved(&c, "TCPRoute", name);
    }
    let l = listener_status(&c, "web", "both routes attached", |l| l["attachedRoutes"] == 2);
    assert_listener_ok(&l, "TCPRoute", 2);
    c.wait_backends(&format!("gateway/{NS}/gw:web"), 1);
    let t = c.tcp(vip4(80), 20);
    assert_eq!(tags(&t), ["pod1"], "the oldest route's backend only: {t:?}");
}

/// TCP: a Service of another namespace without a ReferenceGrant:
/// `RefNotPermitted`, every SYN answered with a RST.
#[test]
fn tcproute_invalid_cross_namespace_backend_ref() {
    let c = cluster();
    c.create_service(&backend_service(OTHER_NS, "web").port("http", 80, "TCP"));
    c.set_slice(OTHER_NS, "web", "web", false, &[ready(1)], &[("http", TCP_PORT, "TCP")]);
    c.create_gateway_object(&gateway().listener("web", "TCP", 80).build());
    c.create_gateway_object(
        &gw::tcp_route(NS, "web").parent("gw", None).backend_ref(Some(OTHER_NS), "web", 80, None).build(),
    );
    let p = route_status(&c, "TCPRoute", "web", "ResolvedRefs=False", |p| {
        condition(p, "ResolvedRefs").is_some_and(|(s, _)| s == "False")
    });
    assert_eq!(condition(&p, "ResolvedRefs").unwrap().1, "RefNotPermitted", "{p:#}");
    assert!(is_true(&p, "Accepted"), "{p:#}");
    c.wait_programmed("the listener programmed", |p| p.contains_key(&format!("gateway/{NS}/gw:web")));
    for _ in 0..10 {
        let r = tcp_probe(&c.topo.client, vip4(80), b"x", T).expect("TCP probe");
        assert!(matches!(r, Probe::Refused), "reset without a grant: {r:?}");
    }
}

/// The `status.parents[]` entry of route `ns/name` whose parentRef names
/// `section`, once `pred` holds for it.
fn parent_status(c: &Cluster, kind: &str, ns: &str, name: &str, section: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let find = |o: &Value| -> Option<Value> {
        o["status"]["parents"].as_array()?.iter().find(|p| p["parentRef"]["sectionName"] == section).cloned()
    };
    let obj = c.wait_object(&gw::route_path(kind, ns, name), &format!("parent {section} of {kind} {ns}/{name}"), |o| {
        find(o).is_some_and(|p| pred(&p))
    });
    find(&obj).expect("the parent entry")
}

/// Waits until route `ns/name` has a parent entry for listener `section`
/// with `Accepted=False`, `NotAllowedByListeners`.
fn wait_not_allowed(c: &Cluster, kind: &str, ns: &str, name: &str, section: &str) {
    let p = parent_status(c, kind, ns, name, section, |p| condition(p, "Accepted").is_some_and(|(s, _)| s == "False"));
    assert_eq!(condition(&p, "Accepted").unwrap().1, "NotAllowedByListeners", "{p:#}");
}

/// The listener `name` of the Gateway `gw` once `pred` holds for it.
fn listener_status(c: &Cluster, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let find = |o: &Value| -> Option<Value> {
        o["status"]["listeners"].as_array()?.iter().find(|l| l["name"] == name).cloned()
    };
    let g = c.wait_object(&gw::gateway_path(NS, "gw"), what, |o| find(o).is_some_and(|l| pred(&l)));
    find(&g).expect("the listener entry")
}

/// A UDP Service `ns/dns` (53 → the pods' echo port) whose only endpoint
/// is pod `pod`.
fn dns_backend_in(c: &Cluster, ns: &str, pod: usize) {
    c.create_service(&backend_service(ns, "dns").port("dns", 53, "UDP"));
    c.set_slice(ns, "dns", "dns", false, &[ready(pod)], &[("dns", UDP_PORT, "UDP")]);
}

/// A UDPRoute `ns/dns` attached to listener `dns` of [`NS`]/gw, to the
/// Service `dns` of its own namespace.
fn udp_route_from(ns: &str) -> gw::RouteBuilder {
    gw::udp_route(ns, "dns").parent_ref(Some(NS), "gw", Some("dns"), None).backend("dns", 53, None)
}

/// Mirrors upstream `HTTPRouteInvalidCrossNamespaceParentRef` for UDP: a
/// listener with `allowedRoutes.namespaces.from: Same` refuses a route of
/// another namespace (`Accepted=False`, `NotAllowedByListeners`), counts
/// no route, and serves nothing.
#[test]
fn udproute_invalid_cross_namespace_parent_ref() {
    let c = cluster();
    dns_backend_in(&c, "edge", 1);
    c.create_gateway_object(&gateway().listener("dns", "UDP", 53).allowed_namespaces("Same", None).build());
    c.create_gateway_object(&udp_route_from("edge").build());
    wait_not_allowed(&c, "UDPRoute", "edge", "dns", "dns");
    let l = listener_status(&c, "dns", "listener dns Programmed", |l| is_true(l, "Programmed"));
    assert_eq!(l["attachedRoutes"], 0, "{l:#}");
    let (replies, _refused, _silent) = udp_outcomes(&c, 53, 10);
    assert_eq!(replies, 0, "a route of another namespace must not carry traffic through a Same listener");
}

/// Mirrors upstream `HTTPRouteCrossNamespace` (a listener whose
/// `allowedRoutes.namespaces` is a `Selector` takes routes of the
/// namespaces with a matching label) for UDP: the route of a labelled
/// namespace attaches and carries the traffic, that of an unlabelled one
/// (older, so it would win were it attached) is `NotAllowedByListeners`;
/// labelled in turn, the latter attaches and, the oldest, takes over.
#[test]
fn udproute_cross_namespace() {
    let c = cluster();
    for (ns, labels) in [("net-a", json!({"team": "net"})), ("other", json!({"team": "web"}))] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});
        c.kc.create("/api/v1/namespaces", &obj).unwrap_or_else(|e| panic!("create Namespace {ns}: {e}"));
    }
    dns_backend_in(&c, "net-a", 0);
    dns_backend_in(&c, "other", 1);
    c.create_gateway_object(
        &gateway().listener("dns", "UDP", 53).allowed_namespaces("Selector", Some(&[("team", "net")])).build(),
    );
    c.create_gateway_object(&udp_route_from("other").created("2020-01-01T00:00:00Z").build());
    c.create_gateway_object(&udp_route_from("net-a").created("2021-01-01T00:00:00Z").build());

    parent_status(&c, "UDPRoute", "net-a", "dns", "dns", |p| is_true(p, "Accepted") && is_true(p, "ResolvedRefs"));
    wait_not_allowed(&c, "UDPRoute", "other", "dns", "dns");
    let l = listener_status(&c, "dns", "one route attached", |l| l["attachedRoutes"] == 1);
    assert!(is_true(&l, "Programmed"), "{l:#}");
    let t = wait_udp_served(&c, 53, 10);
    assert_eq!(tags(&t), ["pod0"], "only the labelled namespace's route carries traffic: {t:?}");

    c.kc.merge_patch("/api/v1/namespaces/other", &json!({"metadata": {"labels": {"team": "net"}}}))
        .expect("label Namespace other");
    parent_status(&c, "UDPRoute", "other", "dns", "dns", |p| is_true(p, "Accepted"));
    listener_status(&c, "dns", "two routes attached", |l| l["attachedRoutes"] == 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = wait_udp_served(&c, 53, 10);
        if tags(&t) == ["pod1"] {
            break;
        }
        assert!(Instant::now() < deadline, "the older route, now allowed, did not take over: {t:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Mirrors upstream `HTTPRouteDisallowedKind` (with `GatewayInvalidRouteKind`'s
/// listener status) for UDP: a UDP listener whose `allowedRoutes.kinds` is
/// only TCPRoute supports no kind (`ResolvedRefs=False`,
/// `InvalidRouteKinds`) and refuses a UDPRoute (`NotAllowedByListeners`);
/// the same route's parentRef to an unrestricted UDP listener is accepted
/// and served there.
#[test]
fn udproute_disallowed_kind() {
    let c = cluster();
    c.create_gateway_object(
        &gateway().listener("dns", "UDP", 53).allowed_kinds(&["TCPRoute"]).listener("open", "UDP", 5300).build(),
    );
    c.create_gateway_object(
        &gw::udp_route(NS, "dns").parent("gw", Some("dns")).parent("gw", Some("open")).backend("dns", 53, None).build(),
    );
    wait_not_allowed(&c, "UDPRoute", NS, "dns", "dns");
    parent_status(&c, "UDPRoute", NS, "dns", "open", |p| is_true(p, "Accepted") && is_true(p, "ResolvedRefs"));
    let l = listener_status(&c, "dns", "listener dns ResolvedRefs=False", |l| {
        condition(l, "ResolvedRefs").is_some_and(|(s, _)| s == "False")
    });
    assert_eq!(condition(&l, "ResolvedRefs").unwrap().1, "InvalidRouteKinds", "{l:#}");
    assert_eq!(l["attachedRoutes"], 0, "{l:#}");
    assert!(l["supportedKinds"].as_array().is_none_or(Vec::is_empty), "{l:#}");
    let open = listener_status(&c, "open", "listener open with the route", |l| l["attachedRoutes"] == 1);
    assert!(is_true(&open, "Accepted"), "{open:#}");

    let t = wait_udp_served(&c, 5300, 10);
    assert_eq!(tags(&t), ["pod0", "pod1"], "the unrestricted listener serves the route: {t:?}");
    let (replies, _refused, _silent) = udp_outcomes(&c, 53, 10);
    assert_eq!(replies, 0, "the listener restricted to TCPRoute must not carry the UDPRoute");
}

/// The agent's (User-Agent `xlb/...`) status writes so far: the count of
/// each `patch .../status` request, by key (`patch
/// gateway.networking.k8s.io/v1/gateways/status`, ...).
fn status_patches(c: &Cluster) -> std::collections::BTreeMap<String, u64> {
    let by_agent = c.api.request_counts_by_agent().expect("request counts");
    by_agent
        .get("xlb")
        .map(|counts| {
            counts
                .iter()
                .filter(|(k, _)| k.starts_with("patch ") && k.ends_with("/status"))
                .map(|(k, n)| (k.clone(), *n))
                .collect()
        })
        .unwrap_or_default()
}

/// No write storm: with a Gateway and a route in a steady state, and their
/// objects touched without changing anything the status depends on (labels
/// on the Gateway, the route and a backend Service, which wake the
/// translation), the agent writes no further status over 5 s.
#[test]
fn gateway_status_not_rewritten_in_steady_state() {
    let c = cluster();
    c.create_gateway_object(&gateway().listener("dns", "UDP", 53).build());
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", None).backend("dns", 53, None).build());
    c.wait_object(&gw::gateway_class_path(CLASS), "GatewayClass Accepted", |o| is_true(&o["status"], "Accepted"));
    c.wait_object(&gw::gateway_path(NS, "gw"), "Gateway Programmed", |o| {
        is_true(&o["status"], "Programmed") && o["status"]["listeners"][0]["attachedRoutes"] == 1
    });
    accepted_and_resolved(&c, "UDPRoute", "dns");
    wait_udp_served(&c, 53, 10);
    // Let writes already under way land: the counts unchanged for 1 s (a
    // fixed pause was too short on a loaded machine). A storm never settles
    // and fails here.
    let mut before = status_patches(&c);
    let mut unchanged_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    while unchanged_since.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "status writes never settled: {before:?}\n{}", c.agent.log());
        std::thread::sleep(Duration::from_millis(100));
        let now = status_patches(&c);
        if now != before {
            before = now;
            unchanged_since = Instant::now();
        }
    }
    for kind in ["gatewayclasses", "gateways", "udproutes"] {
        let key = format!("patch gateway.networking.k8s.io/v1/{kind}/status");
        assert!(before.get(&key).is_some_and(|n| *n > 0), "the agent wrote no {kind} status: {before:?}");
    }
    let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
    c.kc.merge_patch(&gw::gateway_path(NS, "gw"), &touch).expect("label the Gateway");
    c.kc.merge_patch(&gw::route_path("UDPRoute", NS, "dns"), &touch).expect("label the UDPRoute");
    c.kc.merge_patch(&gw::service_path(NS, "dns"), &touch).expect("label the Service");
    std::thread::sleep(Duration::from_secs(5));
    let after = status_patches(&c);
    assert_eq!(before, after, "status written again with nothing changed:\n{}", c.agent.log());
    // Still served (the agent did not stall instead).
    wait_udp_served(&c, 53, 5);
}

/// IPv6: a Gateway on a static IPv6 address (UDP and TCP listeners) and one
/// given an IPv6 address by the pool, their routes to dual-stack Services
/// whose IPv6 endpoints serve, with real traffic; the IPv4 endpoints are
/// not used for an IPv6 address.
#[test]
fn gateway_ipv6_static_and_pool_addresses() {
    let c = Cluster::start_gateway(2, &["--vip-pool", "2001:db8:ffff::10/126"]);
    base_objects(&c);
    c.set_slice(NS, "dns6", "dns", true, &[ready(0), ready(1)], &[("dns", UDP_PORT, "UDP")]);
    c.set_slice(NS, "web6", "web", true, &[ready(0), ready(1)], &[("http", TCP_PORT, "TCP")]);
    let v6 = Topology::VIP_V6.to_string();
    c.create_gateway_object(
        &gw::gateway(NS, "gw", CLASS).address(&v6).listener("dns", "UDP", 53).listener("web", "TCP", 80).build(),
    );
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", Some("dns")).backend("dns", 53, None).build());
    c.create_gateway_object(&gw::tcp_route(NS, "web").parent("gw", Some("web")).backend("web", 80, None).build());
    c.create_gateway_object(&gw::gateway(NS, "pooled", CLASS).listener("dns", "UDP", 53).build());
    c.create_gateway_object(&gw::udp_route(NS, "pooled").parent("pooled", None).backend("dns", 53, None).build());

    let g = c.wait_object(&gw::gateway_path(NS, "gw"), "Gateway Programmed", |o| is_true(&o["status"], "Programmed"));
    assert_eq!(g["status"]["addresses"][0]["value"], v6, "{g:#}");
    accepted_and_resolved(&c, "UDPRoute", "dns");
    accepted_and_resolved(&c, "TCPRoute", "web");
    for name in ["dns", "web"] {
        let s = c.wait_backends(&format!("gateway/{NS}/gw:{name}"), 2);
        let backends = s["backends"].to_string();
        assert!(backends.contains("fd00:1:"), "IPv6 endpoints for an IPv6 address: {s:#}");
    }
    wait_both_pods(&c, vip6(53), 20);
    let t = c.tcp(vip6(80), 20);
    assert_eq!(tags(&t), ["pod0", "pod1"], "TCP [{v6}]:80, every connection answered by both endpoints: {t:?}");

    let ip = programmed_address(&c, "pooled");
    assert_eq!(ip.to_string(), "2001:db8:ffff::11", "the pool's first free address (::10 is gw's)");
    wait_both_pods(&c, std::net::SocketAddr::new(ip, 53), 10);
}

/// The Gateway's address in [`crds_uninstalled_and_reinstalled`] (beside
/// the Service's VIP).
const GW_ADDR: &str = "192.0.2.20";

/// The Gateway `gw` on [`GW_ADDR`] with a UDP listener on 53 and its
/// UDPRoute to Service `dns`, served by both pods.
fn gateway_on_its_own_address(c: &Cluster) {
    c.create_gateway_object(&gw::gateway(NS, "gw", CLASS).address(GW_ADDR).listener("dns", "UDP", 53).build());
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", None).backend("dns", 53, None).build());
    accepted_and_resolved(c, "UDPRoute", "dns");
    wait_both_pods(c, std::net::SocketAddr::new(GW_ADDR.parse().unwrap(), 53), 10);
}

/// The requests of the agent for Gateway API resources so far.
fn gateway_api_requests(c: &Cluster) -> u64 {
    let by_agent = c.api.request_counts_by_agent().expect("request counts");
    by_agent.get("xlb").map_or(0, |m| m.iter().filter(|(k, _)| k.contains(gw::GATEWAY_GROUP)).map(|(_, n)| n).sum())
}

/// The Gateway API CRDs uninstalled while a Gateway listener carries
/// traffic beside a Service VIP: the Gateway API objects are gone with
/// them, so is the listener's service (as with a deleted Gateway), the
/// agent stays healthy, tells it once per kind and asks the API server
/// at most every few seconds (no error loop); the Service's VIP is served
/// throughout. Installed again, the CRDs and new objects are picked up
/// without a restart and served.
#[test]
fn crds_uninstalled_and_reinstalled() {
    let c = cluster();
    c.create_service(&dns_service("svc"));
    c.set_slice(NS, "svc", "svc", false, &[ready(1)], DNS_PORTS);
    c.wait_backends(&format!("{NS}/svc:dns"), 1);
    gateway_on_its_own_address(&c);
    let listener = format!("gateway/{NS}/gw:dns");

    c.api.uninstall_gateway_api().expect("uninstall the Gateway API CRDs");
    c.wait_programmed("the listener's service gone with the CRDs", |p| !p.contains_key(&listener));
    let t = wait_udp_served(&c, 53, 10);
    assert_eq!(tags(&t), ["pod1"], "the Service VIP is served while the CRDs are gone: {t:?}");
    // Past the watches' first retries: from then on, a few requests per
    // kind (5) per period of the capped backoff (5 s), nothing like a loop.
    std::thread::sleep(Duration::from_secs(8));
    let before = gateway_api_requests(&c);
    std::thread::sleep(Duration::from_secs(10));
    let asked = gateway_api_requests(&c) - before;
    assert!(asked <= 20, "{asked} Gateway API requests in 10 s with the CRDs gone:\n{}", c.agent.log());
    assert!(c.agent.is_healthy(), "healthy without the CRDs:\n{}", c.agent.log());
    let log = c.agent.log();
    assert!(!log.contains("watch failed"), "a removed CRD is no watch failure:\n{log}");
    let told = log.matches("no longer serves this Gateway API kind").count();
    assert!((1..=5).contains(&told), "told {told} times that a kind is gone:\n{}", c.agent.log());
    assert!(!c.programmed().contains_key(&listener), "{:#?}", c.programmed());
    let t = wait_udp_served(&c, 53, 10);
    assert_eq!(tags(&t), ["pod1"], "the Service VIP is still served: {t:?}");

    c.api.install_gateway_api().expect("install the Gateway API CRDs again");
    c.create_gateway_object(&gw::gateway_class(CLASS, CONTROLLER));
    gateway_on_its_own_address(&c);
    c.wait_object(&gw::gateway_path(NS, "gw"), "Gateway Programmed again", |o| is_true(&o["status"], "Programmed"));
    let t = wait_udp_served(&c, 53, 10);
    assert_eq!(tags(&t), ["pod1"], "the Service VIP is served after: {t:?}");
    assert!(c.agent.is_healthy(), "{}", c.agent.log());
}
