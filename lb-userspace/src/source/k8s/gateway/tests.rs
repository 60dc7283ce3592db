//! Unit tests of the Gateway API translation, attachment, backend weights,
//! claims shared with Services, pool addresses and statuses.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use ipnet::IpNet;
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use serde_json::{json, Value};

use super::{
    address, backends,
    status::{self, Cond},
    translate::{self, AddressProblem, Inputs, Route, Translation},
    types::{Gateway, GatewayClass, ReferenceGrant, RouteKind, TCPRoute, UDPRoute},
};
use crate::{
    source::k8s::translate as svc_translate,
    state::model::{BackendSpec, Protocol},
};

const CTRL: &str = "xlb.io/gateway-controller";
const NODE: &str = "node-a";

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("object json"))
}

fn class(name: &str, ctrl: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
           "metadata": {"name": name, "generation": 1}, "spec": {"controllerName": ctrl}})
}

fn gateway(ns: &str, name: &str, created: &str, addr: Option<&str>, listeners: Value) -> Value {
    let addresses: Vec<Value> = addr.into_iter().map(|a| json!({"type": "IPAddress", "value": a})).collect();
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"namespace": ns, "name": name, "creationTimestamp": created, "generation": 2},
           "spec": {"gatewayClassName": "xlb", "addresses": addresses, "listeners": listeners}})
}

/// A Gateway with one UDP listener `dns` on port 53.
fn dns_gateway(ns: &str, name: &str, created: &str, addr: Option<&str>) -> Value {
    gateway(ns, name, created, addr, json!([udp_listener("dns", 53)]))
}

fn route(kind: RouteKind, ns: &str, name: &str, created: &str, parents: Value, backends: Value) -> Route {
    let v = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind.kind(),
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": created, "generation": 3},
        "spec": {"parentRefs": parents, "rules": [{"backendRefs": backends}]}});
    match kind {
        RouteKind::Tcp => Route::tcp(&serde_json::from_value::<TCPRoute>(v).unwrap()),
        RouteKind::Udp => Route::udp(&serde_json::from_value::<UDPRoute>(v).unwrap()),
    }
}

fn service(ns: &str, name: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name,
           "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"type": "ClusterIP", "ports": ports}})
}

fn slice(ns: &str, svc: &str, port_name: &str, port: u16, proto: &str, addrs: &[&str]) -> Value {
    let eps: Vec<Value> = addrs
        .iter()
        .map(|a| json!({"addresses": [a], "nodeName": NODE, "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"namespace": ns, "name": format!("{svc}-x"), "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4", "ports": [{"name": port_name, "port": port, "protocol": proto}], "endpoints": eps})
}

/// A world: Gateway API objects + Services + slices.
#[derive(Default)]
struct World {
    classes: Vec<Value>,
    gateways: Vec<Value>,
    routes: Vec<Route>,
    grants: Vec<Value>,
    namespaces: Vec<Value>,
    services: Vec<Value>,
    slices: Vec<Value>,
    pools: Vec<IpNet>,
}

impl World {
    /// The class `xlb`, the DNS Service `apps/dns` (UDP 53 → 5353 on two
    /// endpoints, TCP 53 too), and `apps/web` (TCP 80 → 8080, one endpoint).
    fn new() -> Self {
        let mut w =
            World { classes: vec![class("xlb", CTRL), class("other", "example.com/ctrl")], ..Default::default() };
        w.services.push(service(
            "apps",
            "dns",
            json!([
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353}]),
        ));
        w.slices.push(slice("apps", "dns", "dns", 5353, "UDP", &["10.1.0.5", "10.1.0.6"]));
        w.services.push(service(
            "apps",
            "web",
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]),
        ));
        w.slices.push(slice("apps", "web", "http", 8080, "TCP", &["10.1.0.7"]));
        w
    }

    fn run(&self) -> Translation {
        let classes: Vec<Arc<GatewayClass>> = self.classes.iter().cloned().map(obj).collect();
        let gateways: Vec<Arc<Gateway>> = self.gateways.iter().cloned().map(obj).collect();
        let grants: Vec<Arc<ReferenceGrant>> = self.grants.iter().cloned().map(obj).collect();
        let namespaces: Vec<Arc<Namespace>> = self.namespaces.iter().cloned().map(obj).collect();
        let services: Vec<Arc<Service>> = self.services.iter().cloned().map(obj).collect();
        let slices: Vec<Arc<EndpointSlice>> = self.slices.iter().cloned().map(obj).collect();
        translate::translate(&Inputs {
            classes: &classes,
            gateways: &gateways,
            routes: &self.routes,
            grants: &grants,
            namespaces: &namespaces,
            services: &services,
            slices: &slices,
            controller_name: CTRL,
            node_name: NODE,
            pools: &self.pools,
        })
    }
}

impl World {
    /// Adds the Gateway `apps/gw` of class `xlb` on 192.0.2.10 with `listeners`.
    fn gw(&mut self, listeners: Value) {
        self.gateways.push(gateway("apps", "gw", "2024-02-01T00:00:00Z", Some("192.0.2.10"), listeners));
    }

    /// Adds a route of `kind` in `apps`.
    fn route(&mut self, kind: RouteKind, name: &str, created: &str, parents: Value, backends: Value) {
        self.routes.push(route(kind, "apps", name, created, parents, backends));
    }

    /// Adds a route of `kind` in `apps` to every listener of `apps/gw`, to
    /// the Service `dns` at port 53.
    fn dns_route(&mut self, kind: RouteKind, name: &str, created: &str) {
        self.route(kind, name, created, gw_ref("gw"), dns_backend());
    }
}

fn udp_listener(name: &str, port: u16) -> Value {
    json!({"name": name, "port": port, "protocol": "UDP"})
}

fn tcp_listener(name: &str, port: u16) -> Value {
    json!({"name": name, "port": port, "protocol": "TCP"})
}

fn gw_ref(name: &str) -> Value {
    json!([{"name": name}])
}

fn dns_backend() -> Value {
    json!([{"name": "dns", "port": 53}])
}

fn spec<'a>(t: &'a Translation, name: &str) -> &'a crate::state::model::ServiceSpec {
    t.services().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} not in {:?}", t.candidates))
}

fn weights(s: &crate::state::model::ServiceSpec) -> Vec<(String, u16)> {
    s.backends.iter().map(|b| (b.addr.to_string(), b.weight)).collect()
}

fn parent<'a>(t: &'a Translation, kind: RouteKind, ns: &str, name: &str) -> &'a translate::RouteResult {
    &t.routes[&(kind, ns.to_string(), name.to_string())]
}

fn accepted_reason(t: &Translation, kind: RouteKind, name: &str) -> Vec<&'static str> {
    parent(t, kind, "apps", name)
        .parents
        .iter()
        .map(|p| p.accepted.as_ref().err().map_or("Accepted", |e| e.0))
        .collect()
}

#[test]
fn a_udp_route_on_a_gateway_of_our_class_is_one_service_per_listener() {
    let mut w = World::new();
    w.gw(json!([udp_listener("dns", 53)]));
    w.dns_route(RouteKind::Udp, "dns", "2024-02-02T00:00:00Z");
    // A Gateway of another class is not ours.
    let mut other = dns_gateway("apps", "theirs", "2024-02-01T00:00:00Z", Some("192.0.2.11"));
    other["spec"]["gatewayClassName"] = json!("other");
    w.gateways.push(other);
    let t = w.run();
    assert_eq!(t.classes.keys().collect::<Vec<_>>(), ["xlb"]);
    assert_eq!(t.candidates.len(), 1, "{:?}", t.candidates);
    let s = spec(&t, "gateway/apps/gw:dns");
    assert_eq!((s.vip, s.port, s.protocol), ("192.0.2.10".parse().unwrap(), 53, Protocol::Udp));
    // The backendRef's port resolved through the Service's targetPort (5353).
    assert_eq!(weights(s), [("10.1.0.5:5353".into(), 1), ("10.1.0.6:5353".into(), 1)]);
    assert_eq!(s.reject_weight, 0);
    assert_eq!(accepted_reason(&t, RouteKind::Udp, "dns"), ["Accepted"]);
    let g = &t.gateways[&("apps".into(), "gw".into())];
    assert_eq!(g.listeners[0].attached_routes, 1);
}

#[test]
fn parent_refs_by_section_name_by_port_and_to_every_listener_of_the_protocol() {
    let mut w = World::new();
    let ls = json!([udp_listener("a", 5300), udp_listener("b", 5301), tcp_listener("t", 5302)]);
    w.gw(ls);
    w.route(
        RouteKind::Udp,
        "by-section",
        "2024-02-02T00:00:00Z",
        json!([{"name": "gw", "sectionName": "b"}]),
        dns_backend(),
    );
    w.route(RouteKind::Udp, "by-port", "2024-02-03T00:00:00Z", json!([{"name": "gw", "port": 5300}]), dns_backend());
    w.dns_route(RouteKind::Udp, "all", "2024-02-04T00:00:00Z");
    w.route(
        RouteKind::Udp,
        "no-such",
        "2024-02-05T00:00:00Z",
        json!([{"name": "gw", "sectionName": "zz"}]),
        dns_backend(),
    );
    let t = w.run();
    let g = &t.gateways[&("apps".into(), "gw".into())];
    let attached: Vec<(String, usize, Option<String>)> = g
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.attached_routes, l.route.as_ref().map(|r| r.2.clone())))
        .collect();
    assert_eq!(
        attached,
        [
            ("a".into(), 2, Some("by-port".into())),
            ("b".into(), 2, Some("by-section".into())),
            // The UDPRoutes attach to the UDP listeners only.
            ("t".into(), 0, None)
        ]
    );
    assert_eq!(accepted_reason(&t, RouteKind::Udp, "no-such"), ["NoMatchingParent"]);
    // Every listener is programmed; the TCP one without a route has no backend.
    assert!(spec(&t, "gateway/apps/gw:t").backends.is_empty());
    assert_eq!(spec(&t, "gateway/apps/gw:a").backends.len(), 2);
}

#[test]
fn a_route_of_the_other_protocol_is_not_allowed_by_listeners() {
    let mut w = World::new();
    w.gw(json!([tcp_listener("t", 53)]));
    w.route(RouteKind::Udp, "dns", "2024-02-02T00:00:00Z", json!([{"name": "gw", "sectionName": "t"}]), dns_backend());
    let mut w2 = World::new();
    w2.gw(json!([udp_listener("u", 53)]));
    w2.route(RouteKind::Tcp, "web", "2024-02-02T00:00:00Z", gw_ref("gw"), json!([{"name": "web", "port": 80}]));
    for (t, kind, name) in [(w.run(), RouteKind::Udp, "dns"), (w2.run(), RouteKind::Tcp, "web")] {
        assert_eq!(accepted_reason(&t, kind, name), ["NotAllowedByListeners"]);
        assert_eq!(t.gateways[&("apps".into(), "gw".into())].listeners[0].attached_routes, 0);
        assert!(t.candidates[0].spec.backends.is_empty());
    }
}

#[test]
fn allowed_routes_namespaces_same_all_selector_and_kinds() {
    let mut w = World::new();
    let ls = json!([
        udp_listener("same", 5300),
        {"name": "all", "port": 5301, "protocol": "UDP", "allowedRoutes": {"namespaces": {"from": "All"}}},
        {"name": "sel", "port": 5302, "protocol": "UDP", "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "dns"}}}}},
        {"name": "kinds", "port": 5303, "protocol": "UDP", "allowedRoutes": {"namespaces": {"from": "All"}, "kinds": [{"kind": "TCPRoute"}]}},
    ]);
    w.gateways.push(gateway("infra", "gw", "2024-02-01T00:00:00Z", Some("192.0.2.10"), ls));
    w.namespaces.push(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": {"team": "dns"}}}),
    );
    w.route(
        RouteKind::Udp,
        "dns",
        "2024-02-02T00:00:00Z",
        json!([{"name": "gw", "namespace": "infra"}]),
        dns_backend(),
    );
    let t = w.run();
    let g = &t.gateways[&("infra".into(), "gw".into())];
    let counts: Vec<usize> = g.listeners.iter().map(|l| l.attached_routes).collect();
    assert_eq!(counts, [0, 1, 1, 0], "Same refuses another namespace; All and a matching Selector take it");
    assert_eq!(g.listeners[3].invalid_kinds, ["TCPRoute"]);
    assert!(g.listeners[3].supported_kinds.is_empty());
    let conds = status::listener_conditions(&g.listeners[3], &g.address);
    assert!(
        conds.iter().any(|c| c.type_ == "ResolvedRefs" && !c.status && c.reason == "InvalidRouteKinds"),
        "{conds:?}"
    );
    // A selector that does not match: no attachment.
    w.namespaces[0]["metadata"]["labels"]["team"] = json!("web");
    assert_eq!(w.run().gateways[&("infra".into(), "gw".into())].listeners[2].attached_routes, 0);
}

#[test]
fn an_unresolved_backend_keeps_its_share_as_the_reject_share() {
    let mut w = World::new();
    w.gw(json!([udp_listener("dns", 53)]));
    let b = json!([{"name": "dns", "port": 53, "weight": 1}, {"name": "nope", "port": 53, "weight": 1}]);
    w.route(RouteKind::Udp, "dns", "2024-02-02T00:00:00Z", gw_ref("gw"), b);
    let t = w.run();
    let s = spec(&t, "gateway/apps/gw:dns");
    // Two endpoints share weight 1 (1/2 each), the missing one rejects 1.
    assert_eq!(weights(s), [("10.1.0.5:5353".into(), 1), ("10.1.0.6:5353".into(), 1)]);
    assert_eq!(s.reject_weight, 2);
    let r = parent(&t, RouteKind::Udp, "apps", "dns");
    assert_eq!(r.resolution.problem.as_ref().map(|p| p.0), Some("BackendNotFound"));
    assert_eq!(accepted_reason(&t, RouteKind::Udp, "dns"), ["Accepted"]);
}

#[test]
fn cross_namespace_backends_need_a_reference_grant() {
    let mut w = World::new();
    w.gateways.push(dns_gateway("edge", "gw", "2024-02-01T00:00:00Z", Some("192.0.2.10")));
    w.routes.push(route(
        RouteKind::Udp,
        "edge",
        "dns",
        "2024-02-02T00:00:00Z",
        gw_ref("gw"),
        json!([{"name": "dns", "namespace": "apps", "port": 53}]),
    ));
    let t = w.run();
    let r = &t.routes[&(RouteKind::Udp, "edge".into(), "dns".into())];
    assert_eq!(r.resolution.problem.as_ref().map(|p| p.0), Some("RefNotPermitted"));
    let s = spec(&t, "gateway/edge/gw:dns");
    assert!(s.backends.is_empty());
    assert_eq!(s.reject_weight, 1, "all new flows rejected");
    // A grant for TCPRoutes does not do; one for UDPRoutes from edge does.
    let grant = |kind: &str| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "ReferenceGrant",
        "metadata": {"namespace": "apps", "name": "g"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": kind, "namespace": "edge"}], "to": [{"group": "", "kind": "Service"}]}})
    };
    w.grants.push(grant("TCPRoute"));
    assert!(spec(&w.run(), "gateway/edge/gw:dns").backends.is_empty());
    w.grants = vec![grant("UDPRoute")];
    let t = w.run();
    assert_eq!(spec(&t, "gateway/edge/gw:dns").backends.len(), 2);
    assert_eq!(t.routes[&(RouteKind::Udp, "edge".into(), "dns".into())].resolution.problem, None);
}

#[test]
fn weights_are_shared_among_each_services_endpoints() {
    let mut w = World::new();
    w.services.push(service("apps", "dns2", json!([{"name": "dns", "port": 53, "protocol": "UDP"}])));
    w.slices.push(slice("apps", "dns2", "dns", 5300, "UDP", &["10.1.0.9"]));
    w.gw(json!([udp_listener("dns", 53)]));
    let b = json!([{"name": "dns", "port": 53, "weight": 70}, {"name": "dns2", "port": 53, "weight": 30}]);
    w.route(RouteKind::Udp, "dns", "2024-02-02T00:00:00Z", gw_ref("gw"), b);
    let s = spec(&w.run(), "gateway/apps/gw:dns").clone();
    // 70 over two endpoints (35 each), 30 on one: 7:7:6 once reduced.
    assert_eq!(weights(&s), [("10.1.0.5:5353".into(), 7), ("10.1.0.6:5353".into(), 7), ("10.1.0.9:5300".into(), 6)]);
    // Weight 0 gets nothing.
    w.routes[0].spec.rules[0].backend_refs[1].weight = Some(0);
    let s = spec(&w.run(), "gateway/apps/gw:dns").clone();
    assert_eq!(weights(&s), [("10.1.0.5:5353".into(), 1), ("10.1.0.6:5353".into(), 1), ("10.1.0.9:5300".into(), 0)]);
}

#[test]
fn share_is_exact_when_it_fits_and_scaled_otherwise() {
    let b = |a: &str, w: u16| BackendSpec { addr: a.parse().unwrap(), weight: w };
    // 3 and 2 endpoints with weights 1 and 1: lcm 6 → 2,2,2 and 3,3.
    let (bs, r) = backends::share(
        &[
            (1, vec![b("10.0.0.1:1", 1), b("10.0.0.2:1", 1), b("10.0.0.3:1", 1)]),
            (1, vec![b("10.0.0.4:1", 1), b("10.0.0.5:1", 1)]),
        ],
        1,
    );
    assert_eq!(bs.iter().map(|b| b.weight).collect::<Vec<_>>(), [2, 2, 2, 3, 3]);
    assert_eq!(r, 6);
    // Weights above u16: scaled, the ratio kept.
    let (bs, r) = backends::share(&[(1_000_000, vec![b("10.0.0.1:1", 1)]), (500_000, vec![b("10.0.0.2:1", 1)])], 0);
    assert_eq!((bs[0].weight, bs[1].weight, r), (2, 1, 0));
    let (bs, r) = backends::share(&[(100_000, vec![b("10.0.0.1:1", 1)]), (99_001, vec![b("10.0.0.2:1", 1)])], 7_001);
    let ratio = |x: f64| x / f64::from(bs[0].weight);
    assert!((ratio(f64::from(bs[1].weight)) - 0.990_01).abs() < 1e-4, "{bs:?}");
    assert!((ratio(f64::from(r)) - 0.070_01).abs() < 1e-4, "{r}");
    // No endpoint takes new flows: the reject share takes everything.
    let (bs, r) = backends::share(&[(5, vec![b("10.0.0.1:1", 0)])], 5);
    assert_eq!((bs[0].weight, r), (0, 1));
}

#[test]
fn several_routes_on_one_listener_are_all_accepted_and_the_oldest_carries_traffic() {
    let mut w = World::new();
    w.gw(json!([tcp_listener("t", 80)]));
    w.route(RouteKind::Tcp, "young", "2024-03-01T00:00:00Z", gw_ref("gw"), json!([{"name": "dns", "port": 53}]));
    w.route(RouteKind::Tcp, "old", "2024-02-01T00:00:00Z", gw_ref("gw"), json!([{"name": "web", "port": 80}]));
    let t = w.run();
    assert_eq!(accepted_reason(&t, RouteKind::Tcp, "young"), ["Accepted"]);
    assert_eq!(accepted_reason(&t, RouteKind::Tcp, "old"), ["Accepted"]);
    assert_eq!(t.gateways[&("apps".into(), "gw".into())].listeners[0].attached_routes, 2);
    assert_eq!(weights(spec(&t, "gateway/apps/gw:t")), [("10.1.0.7:8080".into(), 1)]);
}

#[test]
fn listener_conflicts_and_unsupported_protocols() {
    let mut w = World::new();
    let ls = json!([tcp_listener("a", 80), tcp_listener("b", 80), udp_listener("c", 80), {"name": "h", "port": 81, "protocol": "HTTP"}]);
    w.gw(ls);
    let t = w.run();
    let g = &t.gateways[&("apps".into(), "gw".into())];
    let get = |l: usize, ty: &str| -> Cond {
        status::listener_conditions(&g.listeners[l], &g.address).into_iter().find(|c| c.type_ == ty).unwrap()
    };
    for l in [0, 1] {
        let c = get(l, "Conflicted");
        assert!(c.status && c.reason == "ProtocolConflict", "{c:?}");
        assert!(!get(l, "Programmed").status);
    }
    assert!(!get(2, "Conflicted").status, "UDP on the same port is another key");
    assert!(get(2, "Programmed").status);
    let h = get(3, "Accepted");
    assert!(!h.status && h.reason == "UnsupportedProtocol", "{h:?}");
    assert_eq!(t.candidates.iter().map(|c| c.listener.as_str()).collect::<Vec<_>>(), ["c"]);
    let gc = status::gateway_conditions(g, None);
    assert_eq!(gc[0].reason, "ListenersNotValid");
}

#[test]
fn gateways_and_services_share_port_claims_in_age_order() {
    let svc = |created: &str| -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"namespace": "apps", "name": "lb", "creationTimestamp": created, "annotations": {"xlb.io/vip": "192.0.2.10"}},
               "spec": {"type": "LoadBalancer", "loadBalancerClass": "xlb.io/xdp", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}})
    };
    let mut w = World::new();
    w.gw(json!([udp_listener("dns", 53)]));
    let both = |service_created: &str| {
        let gw = w.run();
        let services: Vec<Arc<Service>> = vec![obj(svc(service_created))];
        let reserved = gw.reservations();
        let t = svc_translate::translate(&svc_translate::Inputs {
            services: &services,
            slices: &[],
            node_name: NODE,
            lb_class: "xlb.io/xdp",
            pools: &[],
            reserved: &reserved,
        });
        let mut gw = gw;
        gw.yield_to(&t.taken);
        (t, gw)
    };
    // The Service is older: it keeps the key, the listener yields.
    let (t, gw) = both("2024-01-01T00:00:00Z");
    assert_eq!(t.state.services.len(), 1);
    assert!(gw.candidates.is_empty());
    let g = &gw.gateways[&("apps".into(), "gw".into())];
    assert_eq!(g.listeners[0].port_taken_by.as_deref(), Some("Service apps/lb"));
    assert!(g.notes.iter().any(|n| n.warning && n.reason == "PortClaimConflict"), "{:?}", g.notes);
    let acc = status::listener_conditions(&g.listeners[0], &g.address).remove(0);
    assert_eq!((acc.status, acc.reason), (false, "PortUnavailable"));
    // The Gateway is older: the Service yields with a Warning.
    let (t, gw) = both("2024-03-01T00:00:00Z");
    assert!(t.state.services.is_empty());
    assert_eq!(gw.candidates.len(), 1);
    let notes = &t.notes[&("apps".to_string(), "lb".to_string())];
    assert!(
        notes.iter().any(|n| n.reason == "PortClaimConflict" && n.message.contains("Gateway apps/gw listener dns")),
        "{notes:?}"
    );
}

#[test]
fn two_gateways_on_one_address_and_port_the_older_wins() {
    let mut w = World::new();
    w.gateways.push(dns_gateway("apps", "young", "2024-03-01T00:00:00Z", Some("192.0.2.10")));
    w.gateways.push(dns_gateway("apps", "old", "2024-02-01T00:00:00Z", Some("192.0.2.10")));
    let t = w.run();
    assert_eq!(t.services().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["gateway/apps/old:dns"]);
    assert_eq!(
        t.gateways[&("apps".into(), "young".into())].listeners[0].port_taken_by.as_deref(),
        Some("Gateway apps/old listener dns")
    );
}

#[test]
fn addresses_from_spec_status_or_the_pool() {
    let mut w = World::new();
    w.pools = vec!["192.0.2.32/29".parse().unwrap()];
    w.gateways.push(dns_gateway("apps", "b", "2024-03-01T00:00:00Z", None));
    w.gateways.push(dns_gateway("apps", "a", "2024-02-01T00:00:00Z", None));
    w.gateways.push(dns_gateway("apps", "out", "2024-02-01T00:00:00Z", Some("198.51.100.1")));
    let mut bad = dns_gateway("apps", "host", "2024-02-01T00:00:00Z", None);
    bad["spec"]["addresses"] = json!([{"type": "Hostname", "value": "lb.example.com"}]);
    w.gateways.push(bad);
    let t = w.run();
    let g = |n: &str| &t.gateways[&("apps".to_string(), n.to_string())];
    assert!(matches!(g("a").address, Err(AddressProblem::NotAssigned(_))));
    assert!(matches!(g("out").address, Err(AddressProblem::NotUsable(_))));
    assert!(matches!(g("host").address, Err(AddressProblem::Unsupported(_))));
    assert!(t.candidates.is_empty(), "nothing programmed without an address");
    // The allocator: oldest first, skipping what Services hold (.33).
    let used = [ip("192.0.2.33")].into_iter().collect();
    let plan = address::plan(&t, &used, &w.pools);
    assert_eq!(plan[&("apps".into(), "a".into())], ip("192.0.2.34"));
    assert_eq!(plan[&("apps".into(), "b".into())], ip("192.0.2.35"));
    assert_eq!(plan.len(), 2);
    // Once in status.addresses, it is programmed.
    w.gateways[1]["status"] = json!({"addresses": [{"type": "IPAddress", "value": "192.0.2.34"}]});
    let t = w.run();
    assert_eq!(spec(&t, "gateway/apps/a:dns").vip, ip("192.0.2.34"));
    let accepted = status::gateway_conditions(&t.gateways[&("apps".into(), "host".into())], None);
    assert_eq!((accepted[0].status, accepted[0].reason), (false, "UnsupportedAddress"));
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn statuses_carry_generation_keep_transition_times_and_are_stable() {
    let mut w = World::new();
    w.gw(json!([udp_listener("dns", 53)]));
    w.dns_route(RouteKind::Udp, "dns", "2024-02-02T00:00:00Z");
    let t = w.run();
    let t0 = Time(Timestamp::from_second(1_800_000_000).unwrap());
    let t1 = Time(Timestamp::from_second(1_800_000_100).unwrap());
    let g = &t.gateways[&("apps".into(), "gw".into())];
    let s0 = status::gateway_status(g, None, None, &t0);
    assert_eq!(s0.addresses[0].value, "192.0.2.10");
    assert!(s0.conditions.iter().all(|c| c.observed_generation == Some(2) && c.status == "True"), "{s0:?}");
    let l = &s0.listeners[0];
    assert_eq!((l.attached_routes, l.supported_kinds[0].kind.as_str()), (1, "UDPRoute"));
    // Recomputed later from the same facts: equal (not written again).
    let s1 = status::gateway_status(g, None, Some(&s0), &t1);
    assert_eq!(s1, s0);
    // Route status: other controllers' parents kept, ours replaced.
    let r = &t.routes[&(RouteKind::Udp, "apps".into(), "dns".into())];
    let mut theirs = status::route_status(r, "example.com/ctrl", None, &t0);
    theirs.parents[0].parent_ref.name = "their-gw".into();
    let ours = status::route_status(r, CTRL, Some(&theirs), &t0);
    assert_eq!(ours.parents.len(), 2);
    assert_eq!(ours.parents[0].controller_name, "example.com/ctrl");
    let mine = &ours.parents[1];
    let types: Vec<(&str, &str)> = mine.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
    assert_eq!(types, [("Accepted", "True"), ("ResolvedRefs", "True")]);
    assert_eq!(status::route_status(r, CTRL, Some(&ours), &t1), ours);
    // A condition that flips gets a new transition time.
    w.routes[0].spec.rules[0].backend_refs[0].name = "nope".into();
    let t2 = w.run();
    let r2 = &t2.routes[&(RouteKind::Udp, "apps".into(), "dns".into())];
    let flipped = status::route_status(r2, CTRL, Some(&ours), &t1);
    let rr = &flipped.parents[1].conditions[1];
    assert_eq!((rr.status.as_str(), rr.reason.as_str()), ("False", "BackendNotFound"));
    assert_eq!(rr.last_transition_time, Some(t1.clone()));
    assert_eq!(flipped.parents[1].conditions[0].last_transition_time, Some(t0));
    // GatewayClass: Accepted and the supported features, sorted.
    let c = status::class_status(Some(1), None, &t1);
    assert_eq!(c.conditions[0].reason, "Accepted");
    let names: Vec<&str> = c.supported_features.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&"TCPRoute") && names.contains(&"UDPRoute"));
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}

#[test]
fn gateway_notes_say_what_is_programmed() {
    let mut w = World::new();
    w.gw(json!([udp_listener("dns", 53)]));
    let notes: BTreeMap<_, _> = w.run().notes();
    let n = &notes[&("apps".to_string(), "gw".to_string())];
    assert!(n.iter().any(|n| !n.warning && n.message.contains("gateway/apps/gw:dns")), "{n:?}");
}

/// The condition reasons of the Gateway API v1 (`apis/v1/shared_types.go`,
/// `gateway_types.go`, `gatewayclass_types.go`) by (object, condition type).
fn upstream_reasons(scope: &str, type_: &str) -> &'static [&'static str] {
    match (scope, type_) {
        ("route", "Accepted") => &[
            "Accepted",
            "NotAllowedByListeners",
            "NoMatchingListenerHostname",
            "NoMatchingParent",
            "UnsupportedValue",
            "Pending",
        ],
        ("route", "ResolvedRefs") => {
            &["ResolvedRefs", "RefNotPermitted", "InvalidKind", "BackendNotFound", "UnsupportedProtocol"]
        }
        ("listener", "Accepted") => {
            &["Accepted", "PortUnavailable", "UnsupportedProtocol", "UnsupportedValue", "Pending"]
        }
        ("listener", "Programmed") => &["Programmed", "Invalid", "Pending"],
        ("listener", "ResolvedRefs") => {
            &["ResolvedRefs", "InvalidCertificateRef", "InvalidRouteKinds", "RefNotPermitted"]
        }
        ("listener", "Conflicted") => &["HostnameConflict", "ProtocolConflict", "NoConflicts"],
        ("gateway", "Accepted") => {
            &["Accepted", "ListenersNotValid", "Invalid", "InvalidParameters", "UnsupportedAddress", "Pending"]
        }
        ("gateway", "Programmed") => {
            &["Programmed", "Invalid", "Pending", "NoResources", "AddressNotAssigned", "AddressNotUsable"]
        }
        ("gatewayclass", "Accepted") => {
            &["Accepted", "InvalidParameters", "Pending", "Unsupported", "UnsupportedVersion"]
        }
        _ => &[],
    }
}

/// Every condition xlb writes, in every case the translation tells apart,
/// has a reason the upstream API defines for its type.
#[test]
fn every_condition_reason_is_an_upstream_one() {
    let mut w = World::new();
    w.pools = vec!["192.0.2.0/24".parse().unwrap()];
    let ls = json!([
        udp_listener("dns", 53), tcp_listener("web", 80), tcp_listener("a", 81), tcp_listener("b", 81),
        {"name": "h", "port": 82, "protocol": "HTTP"},
        {"name": "k", "port": 83, "protocol": "UDP", "allowedRoutes": {"kinds": [{"kind": "TCPRoute"}]}}
    ]);
    w.gw(ls);
    w.gateways.push(dns_gateway("apps", "pending", "2024-02-01T00:00:00Z", None));
    w.gateways.push(gateway(
        "apps",
        "out",
        "2024-02-01T00:00:00Z",
        Some("198.51.100.1"),
        json!([udp_listener("d", 53)]),
    ));
    let mut host = gateway("apps", "host", "2024-02-01T00:00:00Z", None, json!([udp_listener("d", 53)]));
    host["spec"]["addresses"] = json!([{"type": "Hostname", "value": "lb.example.com"}]);
    w.gateways.push(host);
    let created = "2024-02-02T00:00:00Z";
    let sec = |s: &str| json!([{"name": "gw", "sectionName": s}]);
    w.dns_route(RouteKind::Udp, "ok", created);
    w.route(RouteKind::Udp, "wrong-kind", created, sec("web"), dns_backend());
    w.route(RouteKind::Udp, "no-parent", created, sec("nope"), dns_backend());
    w.route(RouteKind::Udp, "missing", created, gw_ref("gw"), json!([{"name": "nope", "port": 53}]));
    let other_ns = json!([{"name": "dns", "namespace": "other", "port": 53}]);
    w.route(RouteKind::Udp, "cross", created, gw_ref("gw"), other_ns);
    let kind = json!([{"group": "example.com", "kind": "Thing", "name": "x", "port": 53}]);
    w.route(RouteKind::Udp, "kind", created, gw_ref("gw"), kind);
    let t = w.run();
    let now = Time(Timestamp::from_second(1_800_000_000).unwrap());
    let mut seen: Vec<(&str, String, String)> = Vec::new();
    for g in t.gateways.values() {
        let s = status::gateway_status(g, None, None, &now);
        seen.extend(s.conditions.iter().map(|c| ("gateway", c.type_.clone(), c.reason.clone())));
        for l in &s.listeners {
            seen.extend(l.conditions.iter().map(|c| ("listener", c.type_.clone(), c.reason.clone())));
        }
    }
    for r in t.routes.values() {
        for p in status::route_status(r, CTRL, None, &now).parents {
            seen.extend(p.conditions.iter().map(|c| ("route", c.type_.clone(), c.reason.clone())));
        }
    }
    seen.extend(
        status::class_status(Some(1), None, &now)
            .conditions
            .iter()
            .map(|c| ("gatewayclass", c.type_.clone(), c.reason.clone())),
    );
    for (scope, type_, reason) in &seen {
        assert!(
            upstream_reasons(scope, type_).contains(&reason.as_str()),
            "{scope} {type_}: {reason} is not an upstream reason"
        );
    }
    // Each case was reached.
    let reasons: std::collections::BTreeSet<&str> = seen.iter().map(|(_, _, r)| r.as_str()).collect();
    for r in [
        "NotAllowedByListeners",
        "NoMatchingParent",
        "BackendNotFound",
        "RefNotPermitted",
        "InvalidKind",
        "ProtocolConflict",
        "UnsupportedProtocol",
        "InvalidRouteKinds",
        "ListenersNotValid",
        "UnsupportedAddress",
        "AddressNotUsable",
        "AddressNotAssigned",
        "Pending",
        "Invalid",
        "NoConflicts",
        "Programmed",
        "Accepted",
        "ResolvedRefs",
    ] {
        assert!(reasons.contains(r), "no case gave {r}: {reasons:?}");
    }
}

/// A YAML document as JSON (what the API server would store).
fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().map_or_else(|| format!("{k:?}"), str::to_string), yaml_to_json(v)))
                .collect(),
        ),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::String(s) => json!(s),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().expect("a YAML real")),
        Yaml::Boolean(b) => json!(b),
        _ => Value::Null,
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    yaml_rust2::YamlLoader::load_from_str(text).expect("YAML").iter().map(yaml_to_json).collect()
}

/// The indented YAML block of `deploy/README.md`'s Gateway API section (the
/// example shown there).
fn readme_gateway_example() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/README.md")).expect("deploy/README.md");
    let section = &readme[readme.find("## Gateway API").expect("the Gateway API section")..];
    let start = section.find("    apiVersion: gateway.networking.k8s.io/v1").expect("an example in the section");
    section[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `deploy/examples/gateway-dns.yaml` and the example of `deploy/README.md`
/// translated as they say: two listeners on the Gateway's address (from
/// the pool, or the commented `spec.addresses`), each with its route to the
/// ClusterIP Service's endpoints at the target port; the README's objects
/// are the file's.
#[test]
fn the_shipped_examples_translate_as_documented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/gateway-dns.yaml");
    let file = yaml_docs(&std::fs::read_to_string(path).expect("deploy/examples/gateway-dns.yaml"));
    let of_kind =
        |docs: &[Value], kind: &str| -> Vec<Value> { docs.iter().filter(|d| d["kind"] == kind).cloned().collect() };
    let readme = yaml_docs(&readme_gateway_example());
    for kind in ["GatewayClass", "Gateway", "UDPRoute", "TCPRoute"] {
        assert_eq!(of_kind(&readme, kind), of_kind(&file, kind), "deploy/README.md's {kind} is the example file's");
        assert_eq!(of_kind(&file, kind).len(), 1, "one {kind} in the example");
    }
    let mut w = World {
        classes: of_kind(&file, "GatewayClass"),
        gateways: of_kind(&file, "Gateway"),
        services: of_kind(&file, "Service"),
        pools: vec!["192.0.2.48/28".parse().unwrap()],
        ..Default::default()
    };
    for (kind, tcp) in [("UDPRoute", false), ("TCPRoute", true)] {
        let v = of_kind(&file, kind).remove(0);
        w.routes.push(if tcp {
            Route::tcp(&serde_json::from_value::<TCPRoute>(v).unwrap())
        } else {
            Route::udp(&serde_json::from_value::<UDPRoute>(v).unwrap())
        });
    }
    // The Deployment's two pods, as the EndpointSlice controller lists them.
    let mut s = slice("xlb-gw-demo", "dns", "dns", 5353, "UDP", &["10.1.0.5", "10.1.0.6"]);
    s["ports"] =
        json!([{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "dns-tcp", "port": 5353, "protocol": "TCP"}]);
    w.slices.push(s);
    assert_eq!(w.classes[0]["spec"]["controllerName"], CTRL, "the default --gateway-controller-name");
    let key = ("xlb-gw-demo".to_string(), "dns".to_string());

    // No address yet: the allocator gives one from the pool.
    let t = w.run();
    assert!(matches!(t.gateways[&key].address, Err(AddressProblem::NotAssigned(_))));
    let given = address::plan(&t, &std::collections::BTreeSet::new(), &w.pools)[&key];
    w.gateways[0]["status"] = json!({"addresses": [{"type": "IPAddress", "value": given.to_string()}]});
    let check = |t: &Translation, vip: IpAddr| {
        let names: Vec<&str> = t.services().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["gateway/xlb-gw-demo/dns:dns-udp", "gateway/xlb-gw-demo/dns:dns-tcp"]);
        for (name, proto) in
            [("gateway/xlb-gw-demo/dns:dns-udp", Protocol::Udp), ("gateway/xlb-gw-demo/dns:dns-tcp", Protocol::Tcp)]
        {
            let s = spec(t, name);
            assert_eq!((s.vip, s.port, s.protocol, s.reject_weight), (vip, 53, proto, 0), "{name}");
            assert_eq!(weights(s), [("10.1.0.5:5353".into(), 1), ("10.1.0.6:5353".into(), 1)], "{name}");
        }
        for (kind, name) in [(RouteKind::Udp, "dns"), (RouteKind::Tcp, "dns-tcp")] {
            let r = parent(t, kind, "xlb-gw-demo", name);
            assert_eq!(r.parents.len(), 1);
            assert!(r.parents[0].accepted.is_ok() && r.resolution.problem.is_none(), "{name}: {r:?}");
        }
        let g = &t.gateways[&("xlb-gw-demo".to_string(), "dns".to_string())];
        assert!(g.listeners.iter().all(|l| l.attached_routes == 1 && l.invalid_kinds.is_empty()), "{g:?}");
    };
    check(&w.run(), given);
    // The commented address, uncommented.
    w.gateways[0]["spec"]["addresses"] = json!([{"type": "IPAddress", "value": "192.0.2.53"}]);
    check(&w.run(), ip("192.0.2.53"));
}
