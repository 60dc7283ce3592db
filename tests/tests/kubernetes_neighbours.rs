//! Kubernetes mode beside kube-proxy and under least privilege: a
//! health-check node port already held by another process (kube-proxy
//! serves the same port) neither stops, flaps nor floods the agent; and the
//! requests the agent sends to the API server stay within what
//! `deploy/rbac.yaml` grants, while every verb granted is used (with
//! `--announce l2`, whose Leases need list and watch). Needs root.

mod k8s;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use k8s::*;
use serde_json::Value;
use xlb_tests::k8s::{self as gw, service_path};
use xlb_tests::Topology;

const HC_PORT: u16 = 30112;
const TAKEN: &str = "health-check node port already in use";

#[test]
fn a_health_check_port_held_by_kube_proxy_is_left_to_it_and_taken_over_when_freed() {
    let mut c = Cluster::start(2, &[]);
    // kube-proxy listens on every address of the node for the port.
    let squatter = c
        .topo
        .node
        .run(|| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], HC_PORT))))
        .expect("bind the health-check port first, as kube-proxy would");

    let svc = dns_service("dns").external_traffic_policy("Local").health_check_node_port(HC_PORT);
    c.create_service(&svc);
    c.set_slice(NS, "dns", "dns", false, &[ready(0)], DNS_PORTS);
    c.wait_backends("apps/dns:dns", 1);
    // Several reconciles while the port stays taken.
    for eps in [&[ready(0), ready(1)][..], &[ready(0)], &[ready(0), ready(1)]] {
        c.set_slice(NS, "dns", "dns", false, eps, DNS_PORTS);
        c.wait_backends("apps/dns:dns", eps.len());
    }
    // ... and one retry period.
    std::thread::sleep(Duration::from_secs(6));
    assert!(c.agent.try_status().is_none(), "the agent exited:\n{}", c.agent.log());
    assert!(c.agent.is_healthy(), "the agent is not healthy:\n{}", c.agent.log());
    let log = c.agent.log();
    assert_eq!(log.matches(TAKEN).count(), 1, "one line about the taken port, no more:\n{log}");
    assert!(!log.contains("cannot serve the health-check node port"), "no warning for a port in use:\n{log}");
    // Still forwarding.
    let replies = xlb_tests::spread_udp_replies(&c.topo.client, vip4(53), 10, T);
    assert!(!replies.is_empty(), "the Service is not served: {replies:?}\n{}", c.agent.log());

    // kube-proxy goes away: xlb serves the port within a retry period.
    drop(squatter);
    let hc = SocketAddr::from((Topology::NODE_V4, HC_PORT));
    let http_get = |addr: SocketAddr| xlb_tests::http::get(&c.topo.client, addr, "/", T).ok();
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut last = None;
    while Instant::now() < deadline {
        last = http_get(hc);
        if last.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = last.unwrap_or_else(|| panic!("xlb did not take the freed port over:\n{}", c.agent.log()));
    assert_eq!(code, 200, "{body}");
    assert!(c.agent.log().contains("free again: xlb serves it now"), "{}", c.agent.log());
}

/// (group, resource, verb) of every rule of the Roles and ClusterRoles of
/// deploy/rbac.yaml.
fn granted() -> BTreeSet<xlb::source::k8s::rbac::Grant> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml");
    let text = std::fs::read_to_string(path).expect("read deploy/rbac.yaml");
    xlb::source::k8s::rbac::granted(&text).unwrap_or_else(|e| panic!("deploy/rbac.yaml: {e}"))
}

/// `"watch v1/services"`, `"patch v1/services/status"`,
/// `"get coordination.k8s.io/v1/leases"` → (group, resource, verb).
fn call_of(key: &str) -> Option<(String, String, String)> {
    let (verb, path) = key.split_once(' ')?;
    let parts: Vec<&str> = path.split('/').collect();
    let (group, rest) = if parts[0].contains('.') { (parts[0], &parts[2..]) } else { ("", &parts[1..]) };
    Some((group.to_string(), rest.join("/"), verb.to_string()))
}

#[test]
fn the_agent_calls_exactly_what_rbac_yaml_grants() {
    // --announce l2: the L2 announcers' Leases (list/watch, create, update) too.
    // With the Gateway API installed: its kinds and Namespaces listed and
    // watched, the statuses of a GatewayClass, a Gateway and its routes
    // written.
    let c = Cluster::start_gateway(1, &["--vip-pool", "192.0.2.32/29", "--announce", "l2"]);
    // A Service with no address (status written by the allocator), a
    // conflicting one (a Warning Event), endpoints.
    c.create_service(&lb_service_dns("first"));
    c.set_slice(NS, "first", "first", false, &[ready(0)], &[("dns", UDP_PORT, "UDP")]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let svc: Value = c.kc.get(&service_path(NS, "first")).expect("get Service");
        if svc["status"]["loadBalancer"]["ingress"][0]["ip"] == "192.0.2.33" {
            break;
        }
        assert!(Instant::now() < deadline, "no status written:\n{}", c.agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    c.create_service(&lb_service_dns("second").annotation("xlb.io/vip", "192.0.2.33"));
    c.wait_event(NS, "second", "PortClaimConflict");
    // This node announces the allocated VIP (its Lease created and renewed).
    c.wait_event(NS, "first", "AnnouncerChanged");
    gateway_objects_with_status(&c);
    // A few Lease renewals.
    std::thread::sleep(Duration::from_secs(5));

    let by_agent = c.api.request_counts_by_agent().expect("request counts");
    let ours = by_agent
        .iter()
        .find(|(agent, _)| agent.as_str() == "xlb")
        .map_or_else(|| panic!("no request with User-Agent xlb/...: {by_agent:?}"), |(_, counts)| counts.clone());
    let used: BTreeSet<_> = ours.keys().filter_map(|k| call_of(k)).collect();
    let granted = granted();
    let not_granted: Vec<_> = used.difference(&granted).collect();
    assert!(not_granted.is_empty(), "the agent makes calls deploy/rbac.yaml does not grant: {not_granted:?}");
    // Every verb granted is used, but the Event patch, which kube's
    // Recorder sends only for a repeat of the same Event within minutes.
    let series = ("events.k8s.io".to_string(), "events".to_string(), "patch".to_string());
    let unused: Vec<_> = granted.difference(&used).filter(|c| **c != series).collect();
    assert!(unused.is_empty(), "deploy/rbac.yaml grants calls the agent never made: {unused:?}; made: {used:?}");
}

/// A GatewayClass of xlb's controller, a Gateway with a UDP and a TCP
/// listener, a UDPRoute and a TCPRoute (the latter to a Service of another
/// namespace, with a ReferenceGrant there); waits until the agent has
/// written the status of each.
fn gateway_objects_with_status(c: &Cluster) {
    c.create_gateway_object(&gw::gateway_class("xlb", "xlb.io/gateway-controller"));
    c.create_gateway_object(
        &gw::gateway(NS, "gw", "xlb").listener("dns", "UDP", 53).listener("web", "TCP", 80).build(),
    );
    c.create_service(&backend_service(NS, "dns").port("dns", 53, "UDP"));
    c.set_slice(NS, "dns", "dns", false, &[ready(0)], &[("dns", UDP_PORT, "UDP")]);
    c.create_service(&backend_service("web", "web").port("http", 80, "TCP"));
    c.set_slice("web", "web", "web", false, &[ready(0)], &[("http", TCP_PORT, "TCP")]);
    c.create_gateway_object(&gw::reference_grant("web", "from-apps", NS, Some("web")));
    c.create_gateway_object(&gw::udp_route(NS, "dns").parent("gw", Some("dns")).backend("dns", 53, None).build());
    c.create_gateway_object(
        &gw::tcp_route(NS, "web").parent("gw", Some("web")).backend_ref(Some("web"), "web", 80, None).build(),
    );
    c.wait_object(&gw::gateway_class_path("xlb"), "GatewayClass Accepted", |o| is_true(&o["status"], "Accepted"));
    c.wait_object(&gw::gateway_path(NS, "gw"), "Gateway Programmed with an address", |o| {
        is_true(&o["status"], "Programmed") && o["status"]["addresses"][0]["value"].is_string()
    });
    for kind in ["UDPRoute", "TCPRoute"] {
        let name = if kind == "UDPRoute" { "dns" } else { "web" };
        c.wait_object(&gw::route_path(kind, NS, name), &format!("{kind} Accepted and ResolvedRefs"), |o| {
            is_true(&o["status"]["parents"][0], "Accepted") && is_true(&o["status"]["parents"][0], "ResolvedRefs")
        });
    }
}

/// A plain (ClusterIP) Service `ns/name`, a route's backend.
fn backend_service(ns: &str, name: &str) -> xlb_tests::k8s::LbService {
    xlb_tests::k8s::lb_service(ns, name).service_type("ClusterIP").class(None)
}

fn lb_service_dns(name: &str) -> xlb_tests::k8s::LbService {
    xlb_tests::k8s::lb_service(NS, name).port("dns", 53, "UDP")
}
