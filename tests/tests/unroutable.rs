//! A backend the node has no route to (so no SNAT source address) does not
//! stop the agent: the other backends and services are programmed and
//! forward, `xlb backends` shows it `unroutable` with the reason, the agent
//! warns once, and it is programmed (taking new flows, without a reload) as
//! soon as a route to it appears. The same in Kubernetes mode, where an
//! unroutable endpoint must not make every reconcile fail. Needs root.

mod common;
mod k8s;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use xlb_tests::k8s::{endpoint, endpoint_slice, endpointslices_path, lb_service};
use xlb_tests::{spread_udp, udp_echo_server, ServerHandle, Topology, NO_REPLY};

/// The backend no route leads to at first (nothing in the node namespace
/// covers 10.99.0.0/16, and the node has no default route).
const FAR: &str = "10.99.0.5";
/// The agent's warning about an unroutable backend.
const WARNING: &str = "no route to the backend";

fn far_backend() -> String {
    format!("{FAR}:{UDP_BACKEND_PORT}")
}

/// `dns` (UDP/53): pod 0 and the unroutable backend; `other` (UDP/54): pod 1.
fn yaml() -> String {
    config(&[
        udp_snat4("dns", 53, &[backend(Fam::V4, 0, UDP_BACKEND_PORT), far_backend()]),
        udp_snat4("other", 54, &[backend(Fam::V4, 1, UDP_BACKEND_PORT)]),
    ])
}

/// The `xlb backends -o json` row of `address` in service `service`.
fn backend_row(rows: &Value, service: &str, address: &str) -> Option<Value> {
    rows.as_array()?.iter().find(|r| r["service"] == service && r["address"] == address).cloned()
}

fn warnings(log: &str) -> usize {
    log.lines().filter(|l| l.contains(WARNING) && l.contains(FAR)).count()
}

/// Gives pod 1 the address FAR too, with a UDP echo server tagged `far` on
/// FAR's backend port.
fn serve_far(topo: &Topology) -> ServerHandle {
    topo.pods[1].ip(&["addr", "add", &format!("{FAR}/32"), "dev", "eth0"]).expect("add FAR to pod 1");
    udp_echo_server(&topo.pods[1], far_backend().parse().unwrap(), "far")
}

/// Routes FAR through pod 1 (which holds it) in the node namespace.
fn route_to_far(topo: &Topology) {
    let via = Topology::pod_addr_v4(1).to_string();
    topo.node.ip(&["route", "add", &format!("{FAR}/32"), "via", &via, "dev", "p1"]).expect("route to FAR");
}

fn no_reply(spread: &HashMap<String, usize>) -> usize {
    spread.get(NO_REPLY).copied().unwrap_or(0)
}

#[test]
fn unroutable_backend_does_not_stop_the_agent_and_is_programmed_when_a_route_appears() {
    let mut env = Env::new(2, &yaml());
    // Pod 0 and pod 1 serve on their addresses; pod 1 also holds FAR, which
    // the node reaches only once the route below is added.
    env.servers = udp_servers(&env.topo, Fam::V4, 0..2, UDP_BACKEND_PORT);
    env.servers.push(serve_far(&env.topo));
    env.start_agent(&[]);
    let agent = env.agent();

    // The unroutable backend is listed as such, with the reason.
    let rows = cli_json(agent, &["backends", "-o", "json"]);
    let far = backend_row(&rows, "dns", &far_backend())
        .unwrap_or_else(|| panic!("no dns backend {} in {rows}{}", far_backend(), env.diag()));
    assert_eq!(far["state"], "unroutable", "{far}");
    let reason = far["reason"].as_str().unwrap_or_else(|| panic!("no reason: {far}"));
    assert!(reason.contains("no route") && reason.contains(FAR), "{reason}");
    let near = backend_row(&rows, "dns", &backend(Fam::V4, 0, UDP_BACKEND_PORT)).expect("pod 0's dns backend");
    assert_eq!(near["state"], "active", "{near}");
    assert!(near["reason"].is_null(), "{near}");
    let table = agent.cli(&["backends", "dns"]).expect("xlb backends dns");
    let table = String::from_utf8_lossy(&table.stdout);
    let far_line = table.lines().find(|l| l.contains(&far_backend())).unwrap_or_else(|| panic!("{table}"));
    assert!(far_line.contains("unroutable") && far_line.contains("no route to"), "{table}");
    let dns = service(agent, "dns").expect("dns listed");
    assert_eq!(service_backends(&dns), vec![backend(Fam::V4, 0, UDP_BACKEND_PORT)], "{dns}");

    // The good backends forward; no new flow goes to the unroutable one.
    let spread = spread_udp(&env.topo.client, vip4(53), 30, T);
    assert_eq!(spread.get("pod0"), Some(&30), "every dns flow to pod 0: {spread:?}{}", env.diag());
    let spread = spread_udp(&env.topo.client, vip4(54), 10, T);
    assert_eq!(spread.get("pod1"), Some(&10), "every other flow to pod 1: {spread:?}{}", env.diag());
    assert_eq!(warnings(&agent.log()), 1, "one warning about {FAR}:\n{}", agent.log());

    // A routing change that does not help: still unroutable, no new warning.
    env.topo
        .node
        .ip(&["route", "add", "10.98.0.0/24", "via", &Topology::pod_addr_v4(0).to_string()])
        .expect("unrelated route");
    std::thread::sleep(Duration::from_millis(500));
    let rows = cli_json(agent, &["backends", "-o", "json"]);
    assert_eq!(backend_row(&rows, "dns", &far_backend()).expect("far row")["state"], "unroutable", "{rows}");
    assert_eq!(warnings(&agent.log()), 1, "warned once only:\n{}", agent.log());

    // A route to it (through pod 1): programmed without a reload.
    route_to_far(&env.topo);
    let took = wait_backend_state(agent, "dns", &far_backend(), "active");
    eprintln!("programmed {took:?} after the route was added");
    let rows = cli_json(agent, &["backends", "-o", "json"]);
    let row = backend_row(&rows, "dns", &far_backend()).expect("far row");
    assert!(row["reason"].is_null(), "an active backend has no reason: {row}");
    wait_backends(agent, "dns", &[backend(Fam::V4, 0, UDP_BACKEND_PORT), far_backend()], T);

    // New flows now reach it too (Maglev spreads them over both).
    let spread = spread_udp(&env.topo.client, vip4(53), 60, T);
    assert_eq!(no_reply(&spread), 0, "{spread:?}{}", env.diag());
    assert!(spread.get("far").copied().unwrap_or(0) >= 5, "new flows reach {FAR}: {spread:?}{}", env.diag());
    assert!(spread.get("pod0").copied().unwrap_or(0) >= 5, "and pod 0: {spread:?}{}", env.diag());
    let spread = spread_udp(&env.topo.client, vip4(54), 10, T);
    assert_eq!(spread.get("pod1"), Some(&10), "other unchanged: {spread:?}{}", env.diag());
    assert!(!agent.log().contains("configuration reloaded"), "no reload took place:\n{}", agent.log());
    assert_eq!(warnings(&agent.log()), 1, "{}", agent.log());
}

/// Waits (up to 10 s) until `xlb backends -o json` shows `address` of
/// `service` in `state`; returns how long it took.
fn wait_backend_state(agent: &xlb_tests::Agent, service: &str, address: &str, state: &str) -> Duration {
    let start = Instant::now();
    loop {
        let rows = cli_json(agent, &["backends", "-o", "json"]);
        let row = backend_row(&rows, service, address);
        if row.as_ref().is_some_and(|r| r["state"] == state) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{service} backend {address} not {state} within 10 s: {row:?}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kubernetes_mode_programs_the_rest_and_retries_an_unroutable_endpoint() {
    let c = k8s::Cluster::start(2, &[]);
    let _far = serve_far(&c.topo);
    // `Cluster` policy: source snat. One endpoint on this node's pod 0,
    // one (on another node) the node has no route to.
    c.create_service(
        &lb_service(k8s::NS, "dns").annotation("xlb.io/vip", &Topology::VIP_V4.to_string()).port("dns", 53, "UDP"),
    );
    let slice = endpoint_slice(k8s::NS, "dns", "dns")
        .address_type("IPv4")
        .endpoint(endpoint(Topology::pod_addr_v4(0)).node(k8s::NODE))
        .endpoint(endpoint(FAR).node(k8s::OTHER_NODE))
        .port("dns", UDP_BACKEND_PORT, "UDP")
        .build();
    c.kc.create(&endpointslices_path(Some(k8s::NS)), &slice).expect("create EndpointSlice");
    let name = "apps/dns:dns";
    c.wait_backends(name, 1);
    wait_backend_state(&c.agent, name, &far_backend(), "unroutable");
    let spread = spread_udp(&c.topo.client, vip4(53), 20, T);
    assert_eq!(spread.get("pod0"), Some(&20), "{spread:?}\nagent log:\n{}", c.agent.log());

    // Another change makes the agent reconcile again: no error, no new warning.
    c.create_service(
        &lb_service(k8s::NS, "other").annotation("xlb.io/vip", &Topology::VIP_V4.to_string()).port("other", 54, "UDP"),
    );
    c.set_slice(k8s::NS, "other", "other", false, &[k8s::ready(1)], &[("other", UDP_BACKEND_PORT, "UDP")]);
    c.wait_backends("apps/other:other", 1);
    let log = c.agent.log();
    assert_eq!(warnings(&log), 1, "one warning about {FAR}:\n{log}");
    assert!(!log.contains("could not be programmed") && !log.contains("not programmed"), "no error:\n{log}");

    // A route appears: programmed, new flows reach it.
    route_to_far(&c.topo);
    let took = wait_backend_state(&c.agent, name, &far_backend(), "active");
    eprintln!("programmed {took:?} after the route was added");
    let spread = spread_udp(&c.topo.client, vip4(53), 60, T);
    assert_eq!(no_reply(&spread), 0, "{spread:?}");
    assert!(spread.get("far").copied().unwrap_or(0) >= 5, "new flows reach {FAR}: {spread:?}");
    assert_eq!(warnings(&c.agent.log()), 1, "{}", c.agent.log());
}
