//! Kubernetes mode, the control side: VIP allocation from `--vip-pool` by
//! the Lease holder (status written, addresses released), port claims with
//! Events, invalid Services, and an API server that goes away and comes
//! back with changes (forwarding goes on, `/healthz` says degraded, the
//! watch re-lists after 410 Gone without a gap in traffic).

mod k8s;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s::*;
use serde_json::{json, Value};
use xlb_tests::k8s::{lb_service, leases_path, service_path};
use xlb_tests::{Topology, UdpFlow};

fn ingress_ips(c: &Cluster, ns: &str, name: &str) -> Vec<String> {
    let s = c.kc.get(&service_path(ns, name)).expect("get Service");
    s["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["ip"].as_str().unwrap_or("").to_string())
        .collect()
}

fn wait_ingress(c: &Cluster, ns: &str, name: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ips = ingress_ips(c, ns, name);
        if ips == want {
            return c.kc.get(&service_path(ns, name)).unwrap();
        }
        assert!(
            Instant::now() <= deadline,
            "{ns}/{name}: ingress {ips:?}, want {want:?}\nagent log:\n{}",
            c.agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pool_service(name: &str) -> xlb_tests::k8s::LbService {
    lb_service(NS, name).port("dns", 53, "UDP")
}

#[test]
fn vip_pool_allocation_by_the_lease_holder_writes_status_and_releases() {
    let c = Cluster::start(1, &["--vip-pool", "192.0.2.32/29", "--vip-pool", "2001:db8:ffff::/120"]);
    c.create_service(&pool_service("first"));
    c.set_slice(NS, "first", "first", false, &[ready(0)], &[("dns", UDP_PORT, "UDP")]);
    let svc = wait_ingress(&c, NS, "first", &["192.0.2.33"]);
    assert_eq!(svc["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    let lease = c.kc.get(&leases_path("xlb-system", Some("xlb-vip-allocator"))).expect("the allocator Lease");
    assert_eq!(lease["spec"]["holderIdentity"], NODE);
    // traffic reaches the allocated address
    c.wait_backends("apps/first:dns", 1);
    let r = c.udp(SocketAddr::new("192.0.2.33".parse().unwrap(), 53), 5);
    assert_eq!(r.get("pod0"), Some(&5), "{r:?}");

    c.create_service(&pool_service("second"));
    wait_ingress(&c, NS, "second", &["192.0.2.34"]);
    // a requested address is honoured and written too
    c.create_service(&pool_service("asks").load_balancer_ip("192.0.2.38"));
    wait_ingress(&c, NS, "asks", &["192.0.2.38"]);
    // outside every pool: refused with a Warning Event, not programmed
    c.create_service(&pool_service("outside").annotation("xlb.io/vip", "198.51.100.7"));
    let (ty, _, note) = c.wait_event(NS, "outside", "InvalidService");
    assert_eq!(ty, "Warning");
    assert!(note.contains("198.51.100.7") && note.contains("--vip-pool"), "{note}");
    assert!(!c.programmed().keys().any(|k| k.starts_with("apps/outside")));

    // deleted: its address is free again for the next Service
    c.delete_service(NS, "first");
    c.wait_programmed("first gone", |p| !p.contains_key("apps/first:dns"));
    c.create_service(&pool_service("third"));
    wait_ingress(&c, NS, "third", &["192.0.2.33"]);
    // changed class: the pool address is taken back from its status
    c.patch_service(NS, "second", json!({"spec": {"loadBalancerClass": "other.io/lb"}}));
    wait_ingress(&c, NS, "second", &[]);
    c.wait_programmed("second no longer ours", |p| !p.contains_key("apps/second:dns"));
}

#[test]
fn a_port_belongs_to_the_oldest_service_others_get_a_conflict_event_until_it_goes() {
    let c = Cluster::start(2, &[]);
    let vip = Topology::VIP_V4.to_string();
    // created newest first; the claim follows creationTimestamp
    let thief = lb_service("team-b", "grab")
        .annotation("xlb.io/vip", &vip)
        .port("dns", 53, "UDP")
        .created("2026-02-01T00:00:00Z");
    let owner = lb_service("team-a", "dns")
        .annotation("xlb.io/vip", &vip)
        .port("dns", 53, "UDP")
        .created("2026-01-01T00:00:00Z");
    c.create_service(&thief);
    c.set_slice("team-b", "grab", "grab", false, &[ready(1)], &[("dns", UDP_PORT, "UDP")]);
    c.create_service(&owner);
    c.set_slice("team-a", "dns", "dns", false, &[ready(0)], &[("dns", UDP_PORT, "UDP")]);
    c.wait_backends("team-a/dns:dns", 1);
    let (ty, _, note) = c.wait_event("team-b", "grab", "PortClaimConflict");
    assert_eq!(ty, "Warning");
    assert!(note.contains("team-a/dns"), "the Event names the owner: {note}");
    assert!(!c.programmed().contains_key("team-b/grab:dns"), "the conflicting Service is not listed");
    let r = c.udp(vip4(53), 20);
    assert_eq!(r.get("pod0"), Some(&20), "the owner's traffic stays the owner's: {r:?}");

    c.delete_service("team-a", "dns");
    c.wait_backends("team-b/grab:dns", 1);
    let r = c.udp(vip4(53), 20);
    assert_eq!(r.get("pod1"), Some(&20), "the next claimant got it: {r:?}");
    c.wait_event("team-b", "grab", "Programmed");
}

#[test]
fn invalid_services_get_warning_events_and_never_crash_the_agent() {
    let c = Cluster::start(1, &[]);
    c.create_service(&lb_service(NS, "bad-vip").annotation("xlb.io/vip", "not-an-address").port("dns", 53, "UDP"));
    c.create_service(&lb_service(NS, "no-vip").port("dns", 53, "UDP"));
    c.create_service(
        &lb_service(NS, "sctp")
            .annotation("xlb.io/vip", &Topology::VIP_V4.to_string())
            .port("sig", 2905, "SCTP")
            .port("dns", 53, "UDP"),
    );
    assert_eq!(c.wait_event(NS, "bad-vip", "InvalidService").0, "Warning");
    assert_eq!(c.wait_event(NS, "no-vip", "NoAddress").0, "Warning");
    assert_eq!(c.wait_event(NS, "sctp", "UnsupportedProtocol").0, "Warning");
    c.wait_backends("apps/sctp:dns", 0);
    assert!(c.agent.is_healthy(), "agent still healthy:\n{}", c.agent.log());
    assert_eq!(c.programmed().len(), 1, "{:?}", c.programmed().keys());
}

#[test]
fn forwarding_survives_the_api_server_going_away_and_changes_made_meanwhile_are_picked_up() {
    let mut c = Cluster::start(2, &[]);
    c.create_service(&dns_service("dns"));
    c.set_slice(NS, "dns", "dns", false, &[ready(0)], DNS_PORTS);
    c.wait_backends("apps/dns:dns", 1);

    // one client flow, sending all along; every request must be answered
    let flow = UdpFlow::new(&c.topo.client, None, vip4(53)).expect("flow");
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let last_tag = Arc::new(std::sync::Mutex::new(String::new()));
    let sender = {
        let (stop, sent, lost, last_tag) = (stop.clone(), sent.clone(), lost.clone(), last_tag.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_mins(1);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                sent.fetch_add(1, Ordering::SeqCst);
                match flow.request(b"ping", Duration::from_millis(500)) {
                    Ok((t, _)) => *last_tag.lock().unwrap() = t.split_whitespace().next().unwrap_or("").to_string(),
                    Err(_) => {
                        lost.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let state = c.api.snapshot().expect("snapshot");
    c.api.stop();
    std::thread::sleep(Duration::from_secs(2));
    let (code, body) = c.agent.http_get("/healthz").expect("healthz");
    assert_eq!(code, 200);
    assert!(body.starts_with("degraded"), "/healthz while the API server is away: {body}");
    assert_eq!(*last_tag.lock().unwrap(), "pod0");

    // meanwhile the pod moved; the server comes back with unrelated
    // resourceVersions, so the agent's watch gets 410 Gone and re-lists
    let mut moved = state.clone();
    let objects = moved["objects"].as_array_mut().or(None).expect("snapshot objects");
    let slice = objects
        .iter_mut()
        .find(|o| o["metadata"]["name"] == "dns" && o.get("addressType").is_some())
        .expect("the slice in the snapshot");
    slice["endpoints"][0]["addresses"] = json!([Topology::pod_addr_v4(1).to_string()]);
    c.api.restart(Some(&moved), 1_000_000).expect("restart the API server");

    let deadline = Instant::now() + Duration::from_secs(15);
    while *last_tag.lock().unwrap() != "pod1" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        *last_tag.lock().unwrap(),
        "pod1",
        "the change made meanwhile reached the maps\nagent log:\n{}",
        c.agent.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.agent.http_get("/healthz").is_ok_and(|(_, b)| b.starts_with("ok")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.agent.http_get("/healthz").unwrap().1.starts_with("ok"), "healthy again");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let (sent, lost) = (sent.load(Ordering::SeqCst), lost.load(Ordering::SeqCst));
    assert!(sent > 50, "the client kept sending ({sent})");
    assert_eq!(
        lost, 0,
        "no request lost while the API server was away and while the agent re-listed ({lost} of {sent})"
    );
    assert!(
        c.agent.log().contains("410")
            || c.agent.log().to_lowercase().contains("gone")
            || c.agent.log().contains("Expired"),
        "the watch was re-listed after 410:\n{}",
        c.agent.log()
    );
    let _ = IpAddr::from(Topology::NODE_V4);
}

#[test]
fn one_agent_holds_the_allocator_lease_and_hands_it_over_when_it_stops() {
    let mut c = Cluster::start(1, &["--vip-pool", "192.0.2.32/29"]);
    let lease_holder = |c: &Cluster| {
        c.kc.get(&leases_path("xlb-system", Some("xlb-vip-allocator")))
            .ok()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let wait_holder = |c: &Cluster, who: Option<&str>| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while lease_holder(c).as_deref() != who && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(lease_holder(c).as_deref(), who, "agent log:\n{}", c.agent.log());
    };
    wait_holder(&c, Some(NODE));

    // a second agent (another node) on an interface of its own (a veth
    // pair inside the node namespace)
    c.topo.node.ip(&["link", "add", "xa", "type", "veth", "peer", "name", "xb"]).expect("veth");
    c.topo.node.ip(&["link", "set", "xa", "up"]).expect("veth up");
    let pins = xlb_tests::PinDir::new().expect("pins");
    let args: Vec<String> = [
        "agent",
        "--kubernetes",
        "--node-name",
        OTHER_NODE,
        "--kubeconfig",
        &c.api.kubeconfig().display().to_string(),
        "--interface",
        "xa",
        "--vip-pool",
        "192.0.2.32/29",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    let mut second = xlb_tests::Agent::spawn_args(&c.topo.node, pins.path(), &args).expect("second agent");
    second.wait_healthy(Duration::from_secs(30)).expect("second agent healthy");
    // a Service both agents program: only the holder publishes its Events
    c.create_service(&pool_service("early"));
    c.wait_event(NS, "early", "Programmed");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lease_holder(&c).as_deref(), Some(NODE), "the first holder keeps the Lease while it renews it");
    assert!(second.log().contains("apps/early"), "the second agent programs the Service too:\n{}", second.log());
    let events = c.kc.list(&xlb_tests::k8s::events_path(Some(NS))).expect("events");
    let reporters: Vec<&str> =
        events["items"].as_array().unwrap().iter().filter_map(|e| e["reportingInstance"].as_str()).collect();
    assert!(
        !reporters.is_empty() && reporters.iter().all(|r| *r == NODE),
        "one publisher, the Lease holder: {reporters:?}"
    );

    // the holder stops: it gives the Lease up and the other agent allocates
    let status = c.agent.stop().expect("stop the first agent");
    assert!(status.success());
    assert!(c.agent.log().contains("allocator Lease released"), "{}", c.agent.log());
    wait_holder(&c, Some(OTHER_NODE));
    c.create_service(&pool_service("late"));
    wait_ingress(&c, NS, "late", &["192.0.2.34"]);
    assert!(second.log().contains("status.loadBalancer.ingress written"), "{}", second.log());
    second.stop().expect("stop the second agent");
}

/// `xlb.io/flow-tracking: none` on a `Local` Service: served from the
/// lookup table with no connection-table entry (the client's address kept,
/// replies translated); on a `Cluster` Service the annotation is refused
/// with a warning Event and the Service is served tracked.
#[test]
fn flow_tracking_none_by_annotation_records_no_flow() {
    let c = Cluster::start(2, &[]);
    let svc = dns_service("dns").external_traffic_policy("Local").annotation("xlb.io/flow-tracking", "none");
    c.create_service(&svc);
    c.set_slice(NS, "dns", "dns", false, &[ready(0)], DNS_PORTS);
    c.wait_programmed("dns untracked", |p| {
        p.get("apps/dns:dns")
            .is_some_and(|s| s["flow_tracking"] == "none" && s["backends"].as_array().is_some_and(|b| b.len() == 1))
    });
    let ports: Vec<u16> = (24000..24020).collect();
    let replies = xlb_tests::spread_udp_ports_replies(&c.topo.client, vip4(53), &ports, T);
    let want = format!("pod0 {}", Topology::CLIENT_V4);
    assert_eq!(replies.get(&want), Some(&20), "every flow answered, the client's address kept: {replies:?}");
    let flows = c.agent.cli(&["flows", "-o", "json"]).expect("xlb flows");
    let flows: Value = serde_json::from_slice(&flows.stdout).expect("flows json");
    assert_eq!(flows.as_array().map(Vec::len), Some(0), "no connection entry for an untracked service: {flows}");

    // Cluster: the annotation cannot apply (the source is translated).
    c.patch_service(NS, "dns", json!({"spec": {"externalTrafficPolicy": "Cluster"}}));
    c.wait_programmed("dns tracked", |p| p.get("apps/dns:dns").is_some_and(|s| s["flow_tracking"] == "full"));
    let (_, reason, message) = c.wait_event(NS, "dns", "InvalidService");
    assert!(message.contains("xlb.io/flow-tracking") && message.contains("Local"), "{reason}: {message}");
    let r = c.udp(vip4(53), 5);
    assert_eq!(r.get("pod0"), Some(&5), "served tracked: {r:?}");
}
