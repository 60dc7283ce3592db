//! Kubernetes mode against a real HTTP API server process (the fake one in
//! this crate, checked against kubectl in `apiserver.rs`), with real UDP and
//! TCP traffic through the VIP: endpoints and their states, rejects,
//! traffic policies and health checks, session affinity, source ranges.

mod k8s;

use std::time::{Duration, Instant};

use k8s::*;
use serde_json::json;
use xlb_tests::{tcp_probe, udp_probe, Probe, TcpSession, Topology, UdpFlow, NO_REPLY};

#[test]
fn services_and_endpoint_slices_become_xlb_services_udp_and_tcp_on_one_port() {
    let c = Cluster::start(2, &[]);
    c.create_service(&dns_service("dns"));
    // not ours: another class, and a ClusterIP Service
    c.create_service(&dns_service("metal").class(Some("metallb.io/metallb")));
    c.create_service(&dns_service("plain").service_type("ClusterIP"));
    // two slices (one per pod), aggregated
    c.set_slice(NS, "dns-a", "dns", false, &[ready(0)], DNS_PORTS);
    c.set_slice(NS, "dns-b", "dns", false, &[ready(1)], DNS_PORTS);
    let udp = c.wait_backends("apps/dns:dns", 2);
    let tcp = c.wait_backends("apps/dns:dns-tcp", 2);
    assert_eq!(
        (udp["vip"].as_str(), udp["port"].as_u64(), udp["protocol"].as_str()),
        (Some("192.0.2.10"), Some(53), Some("udp"))
    );
    assert_eq!((tcp["port"].as_u64(), tcp["protocol"].as_str()), (Some(53), Some("tcp")));
    assert_eq!(c.programmed().len(), 2, "only the Service of our class: {:?}", c.programmed().keys());

    let u = c.udp(vip4(53), 40);
    assert_eq!(tags(&u), ["pod0", "pod1"], "UDP spread over both pods: {u:?}");
    let t = c.tcp(vip4(53), 20);
    assert_eq!(tags(&t), ["pod0", "pod1"], "TCP spread over both pods: {t:?}");

    let (ty, _, note) = c.wait_event(NS, "dns", "Programmed");
    assert_eq!(ty, "Normal");
    assert!(note.contains("apps/dns:dns") && note.contains("192.0.2.10"), "{note}");

    // No polling: with nothing changing, no list requests are made.
    let before = c.api.request_counts().expect("request counts");
    std::thread::sleep(Duration::from_secs(3));
    let after = c.api.request_counts().expect("request counts");
    let lists = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter().filter(|(k, _)| k.starts_with("list ")).map(|(_, v)| *v).sum::<u64>()
    };
    assert_eq!(lists(&before), lists(&after), "the agent re-listed without a reason: {before:?} -> {after:?}");
    assert!(after.keys().any(|k| k.starts_with("watch ")), "the agent watches: {after:?}");

    c.delete_service(NS, "dns");
    c.wait_programmed("the deleted Service gone", std::collections::HashMap::is_empty);
}

#[test]
fn a_udp_client_follows_a_cycled_pod_within_a_second() {
    let c = Cluster::start(3, &[]);
    c.create_service(&dns_service("dns"));
    c.set_slice(NS, "dns", "dns", false, &[ready(0)], DNS_PORTS);
    c.wait_backends("apps/dns:dns", 1);
    // a client that always sends from the same source port
    let flow = UdpFlow::new(&c.topo.client, None, vip4(53)).expect("udp flow");
    assert!(flow.request(b"hello", T).expect("first request").0.starts_with("pod0"));

    // The 1 s windows below start when the agent shows the change (`xlb
    // services`), not at the API write: the watch's delivery and the
    // agent's reconcile on a loaded 2-core CI machine are not what is
    // measured here, the flow following its changed service is.
    //
    // the pod cycles: pod0 gone, pod1 (a new address) ready
    let written = Instant::now();
    c.set_slice(NS, "dns", "dns", false, &[ready(1)], DNS_PORTS);
    let pod1 = format!("{}:{UDP_PORT}", Topology::pod_addr_v4(1));
    c.wait_programmed("pod1 the only backend", |p| {
        p.get("apps/dns:dns").and_then(|s| s["backends"].as_array()).is_some_and(|b| b.len() == 1 && b[0] == pod1)
    });
    eprintln!("agent showed pod1 {:?} after the API write", written.elapsed());
    let changed = Instant::now();
    let mut last = String::new();
    while changed.elapsed() < Duration::from_secs(1) {
        if let Ok((text, _)) = flow.request(b"again", Duration::from_millis(100)) {
            last = text;
            if last.starts_with("pod1") {
                break;
            }
        }
    }
    assert!(last.starts_with("pod1"), "the same client flow must reach the new pod within 1 s; last reply {last:?}");

    // an endpoint that is at first not ready, then ready
    c.set_slice(NS, "dns", "dns", false, &[(2, NODE, false, false, false)], DNS_PORTS);
    c.wait_backends("apps/dns:dns", 0);
    assert!(
        matches!(udp_probe(&c.topo.client, vip4(53), b"x", T).unwrap(), Probe::Refused),
        "no ready endpoint: rejected"
    );
    // Late replies to the 100 ms requests above (answered, but after their
    // timeout) are still queued on the socket: they are not this request's.
    let stale = flow.drain().expect("drain the flow's socket");
    if !stale.is_empty() {
        eprintln!("note: late replies to earlier requests discarded: {stale:?}");
    }
    let nobody = flow.request(b"nobody", Duration::from_millis(300));
    assert!(nobody.is_err(), "no ready endpoint: no reply, got {nobody:?}");
    let written = Instant::now();
    c.set_slice(NS, "dns", "dns", false, &[ready(2)], DNS_PORTS);
    c.wait_backends("apps/dns:dns", 1);
    eprintln!("agent showed pod2 {:?} after the API write", written.elapsed());
    let ready_at = Instant::now();
    let mut got = None;
    while ready_at.elapsed() < Duration::from_secs(1) {
        if let Ok((text, _)) = flow.request(b"now?", Duration::from_millis(100)) {
            got = Some(text);
            break;
        }
    }
    assert!(
        got.as_deref().is_some_and(|t| t.starts_with("pod2")),
        "after the endpoint became ready the same flow reaches it within 1 s: {got:?}"
    );
}

#[test]
fn no_endpoints_rejects_udp_with_icmp_and_tcp_with_rst() {
    let c = Cluster::start(1, &[]);
    c.create_service(&dns_service("dns"));
    c.wait_backends("apps/dns:dns", 0);
    c.wait_backends("apps/dns:dns-tcp", 0);
    assert!(
        matches!(udp_probe(&c.topo.client, vip4(53), b"x", T).unwrap(), Probe::Refused),
        "UDP: ICMP port unreachable"
    );
    assert!(matches!(tcp_probe(&c.topo.client, vip4(53), b"x", T).unwrap(), Probe::Refused), "TCP: RST");
    // and once an endpoint exists, traffic flows
    c.set_slice(NS, "dns", "dns", false, &[ready(0)], DNS_PORTS);
    c.wait_backends("apps/dns:dns", 1);
    assert!(matches!(udp_probe(&c.topo.client, vip4(53), b"x", T).unwrap(), Probe::Reply(t) if t.starts_with("pod0")));
}

fn session_service() -> xlb_tests::k8s::LbService {
    xlb_tests::k8s::lb_service(NS, "sess")
        .annotation("xlb.io/vip", &Topology::VIP_V4.to_string())
        .port("sess", 81, "TCP")
}
const SESS_PORTS: &[(&str, u16, &str)] = &[("sess", SESSION_PORT, "TCP")];

/// Addresses of the backends of `service` that take new flows (`xlb
/// backends -o json`: state active, weight above 0); empty if the CLI fails.
fn active_backends(c: &Cluster, service: &str) -> Vec<String> {
    let Ok(out) = c.agent.cli(&["backends", service, "-o", "json"]) else { return Vec::new() };
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    rows.as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["state"] == "active" && b["weight"].as_u64().is_some_and(|w| w > 0))
        .filter_map(|b| b["address"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn terminating_endpoints_keep_their_flows_and_serve_only_when_none_is_ready() {
    let c = Cluster::start(2, &[]);
    c.create_service(&session_service());
    c.set_slice(NS, "sess", "sess", false, &[ready(0), ready(1)], SESS_PORTS);
    c.wait_backends("apps/sess:sess", 2);
    // open sessions until one lands on each pod
    let mut sessions: Vec<(String, TcpSession)> = Vec::new();
    for _ in 0..40 {
        let mut s = TcpSession::connect(&c.topo.client, vip4(81), T).expect("connect");
        let tag = s.request(b"hi\n", T).expect("request").split_whitespace().next().unwrap_or("").to_string();
        sessions.push((tag, s));
        if sessions.iter().any(|(t, _)| t == "pod0") && sessions.iter().any(|(t, _)| t == "pod1") {
            break;
        }
    }
    let (_, s0) =
        sessions.iter_mut().find(|(t, _)| t == "pod0").map(|(t, s)| (t.clone(), s)).expect("a session on pod0");
    // pod0 terminates but still serves: its session goes on, new ones avoid it
    c.set_slice(NS, "sess", "sess", false, &[(0, NODE, false, true, true), ready(1)], SESS_PORTS);
    c.wait_programmed("pod0 draining", |p| {
        p.get("apps/sess:sess").is_some()
            && c.agent.cli(&["backends", "apps/sess:sess", "-o", "json"]).is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).contains("\"weight\": 0")
                    || String::from_utf8_lossy(&o.stdout).contains("\"weight\":0")
            })
    });
    let reply = s0.request(b"still there?\n", T).expect("the terminating pod's session keeps working");
    assert!(reply.starts_with("pod0"), "{reply}");
    let fresh = c.tcp(vip4(81), 20);
    assert_eq!(tags(&fresh), ["pod1"], "new connections only to the ready pod: {fresh:?}");

    // no endpoint ready: the serving, terminating ones take new flows
    c.set_slice(NS, "sess", "sess", false, &[(0, NODE, false, true, true), (1, NODE, false, true, true)], SESS_PORTS);
    let both: Vec<String> = (0..2).map(|i| format!("{}:{SESSION_PORT}", Topology::pod_addr_v4(i))).collect();
    c.wait_programmed("both terminating pods taking new flows", |_| {
        let mut active = active_backends(&c, "apps/sess:sess");
        active.sort();
        active == both
    });
    let fallback = c.tcp(vip4(81), 30);
    assert_eq!(tags(&fallback), ["pod0", "pod1"], "fallback to serving+terminating endpoints: {fallback:?}");

    // pod0 stops serving: it gets nothing new
    c.set_slice(NS, "sess", "sess", false, &[(0, NODE, false, false, true), (1, NODE, false, true, true)], SESS_PORTS);
    c.wait_backends("apps/sess:sess", 1);
    let after = c.tcp(vip4(81), 20);
    assert_eq!(tags(&after), ["pod1"], "{after:?}");
}

#[test]
fn traffic_policy_local_preserves_the_client_and_answers_health_checks() {
    let c = Cluster::start(2, &[]);
    let svc = dns_service("dns").external_traffic_policy("Local").health_check_node_port(30111);
    c.create_service(&svc);
    c.set_slice(NS, "dns", "dns", false, &[ready(0), (1, OTHER_NODE, true, true, false)], DNS_PORTS);
    let s = c.wait_backends("apps/dns:dns", 1);
    assert_eq!(s["backends"][0], format!("{}:{UDP_PORT}", Topology::pod_addr_v4(0)));
    // Each phase from its own fixed source ports, below the ephemeral range:
    // an ephemeral port reused by the Cluster phase could be a flow of this
    // phase, still in the connection table, keeping its pod and its address.
    let local_ports: Vec<u16> = (24000..24020).collect();
    let replies = xlb_tests::spread_udp_ports_replies(&c.topo.client, vip4(53), &local_ports, T);
    let want = format!("pod0 {}", Topology::CLIENT_V4);
    assert_eq!(replies.get(&want), Some(&20), "only the local pod, seeing the client's address: {replies:?}");

    let hc = std::net::SocketAddr::from((Topology::NODE_V4, 30111));
    let (code, body) = c.http_get(hc, "/healthz").expect("health check");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"localEndpoints\":1"), "{body}");
    // only a terminating local endpoint: 503
    c.set_slice(
        NS,
        "dns",
        "dns",
        false,
        &[(0, NODE, false, true, true), (1, OTHER_NODE, true, true, false)],
        DNS_PORTS,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = c.http_get(hc, "/").expect("health check");
        if last.0 == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last.0, 503, "{}", last.1);

    // Cluster: every endpoint, source NATed to the node
    c.set_slice(NS, "dns", "dns", false, &[ready(0), (1, OTHER_NODE, true, true, false)], DNS_PORTS);
    c.patch_service(NS, "dns", json!({"spec": {"externalTrafficPolicy": "Cluster", "healthCheckNodePort": null}}));
    c.wait_backends("apps/dns:dns", 2);
    let cluster_ports: Vec<u16> = (24100..24140).collect();
    let replies = xlb_tests::spread_udp_ports_replies(&c.topo.client, vip4(53), &cluster_ports, T);
    let snat0 = format!("pod0 {}", Topology::pod_gw_v4(0));
    let snat1 = format!("pod1 {}", Topology::pod_gw_v4(1));
    assert!(
        replies.contains_key(&snat0) && replies.contains_key(&snat1) && replies.len() == 2,
        "both pods, from the node's address: {replies:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.http_get(hc, "/").is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.http_get(hc, "/").is_err(), "the health-check port closes with Cluster");
}

/// Three ready DNS pods behind a Service with ClientIP affinity of
/// `timeout` seconds, programmed.
fn affinity_cluster(timeout: u32) -> Cluster {
    let c = Cluster::start(3, &[]);
    c.create_service(&dns_service("dns").session_affinity_client_ip(timeout));
    c.set_slice(NS, "dns", "dns", false, &[ready(0), ready(1), ready(2)], DNS_PORTS);
    c.wait_programmed(&format!("affinity {timeout} s"), |p| {
        p.get("apps/dns:dns")
            .is_some_and(|s| s["affinity_timeout"] == timeout && s["backends"].as_array().is_some_and(|b| b.len() == 3))
    });
    c
}

#[test]
fn session_affinity_client_ip_sticks_and_switches_off_and_on() {
    let c = affinity_cluster(600);
    // Each phase from its own source ports: a port of an earlier phase would
    // be that phase's flow, still in the connection table, and keep its pod.
    let sticky = c.udp_from_ports(vip4(53), 21000, 30);
    assert_eq!(sticky.len(), 1, "one client, one backend: {sticky:?}");
    assert!(!sticky.contains_key(NO_REPLY));

    c.patch_service(NS, "dns", json!({"spec": {"sessionAffinity": "None", "sessionAffinityConfig": null}}));
    c.wait_programmed("affinity off", |p| p.get("apps/dns:dns").is_some_and(|s| s["affinity_timeout"].is_null()));
    let spread = c.udp_from_ports(vip4(53), 22000, 40);
    assert!(spread.len() >= 2 && !spread.contains_key(NO_REPLY), "without affinity new flows spread: {spread:?}");

    c.patch_service(
        NS,
        "dns",
        json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}),
    );
    c.wait_programmed("affinity on again", |p| p.get("apps/dns:dns").is_some_and(|s| s["affinity_timeout"] == 60));
    let again = c.udp_from_ports(vip4(53), 23000, 30);
    assert_eq!(again.len(), 1, "sticky again: {again:?}");
}

#[test]
fn load_balancer_source_ranges_are_enforced_for_ipv4_and_ipv6_and_removable() {
    let c = Cluster::start(1, &[]);
    let vips = format!("{},{}", Topology::VIP_V4, Topology::VIP_V6);
    let svc = xlb_tests::k8s::lb_service(NS, "dns")
        .annotation("xlb.io/vip", &vips)
        .port("dns", 53, "UDP")
        .source_ranges(&["10.200.0.0/16", "fd00:999::/64"]);
    c.create_service(&svc);
    c.set_slice(NS, "dns4", "dns", false, &[ready(0)], DNS_PORTS);
    c.set_slice(NS, "dns6", "dns", true, &[ready(0)], DNS_PORTS);
    let v6name = format!("apps/dns:dns@{}", Topology::VIP_V6);
    c.wait_backends("apps/dns:dns", 1);
    c.wait_backends(&v6name, 1);
    let blocked = |what: &str| {
        for vip in [vip4(53), vip6(53)] {
            let r = c.udp(vip, 3);
            assert_eq!(r.get(NO_REPLY), Some(&3), "{what}: {vip} must not answer the client: {r:?}");
        }
    };
    let open = |what: &str| {
        for vip in [vip4(53), vip6(53)] {
            let r = c.udp(vip, 5);
            assert_eq!(r.get("pod0"), Some(&5), "{what}: {vip} must answer: {r:?}");
        }
    };
    blocked("client outside the ranges");
    c.patch_service(NS, "dns", json!({"spec": {"loadBalancerSourceRanges": ["10.100.0.0/24", "fd00:100::/64"]}}));
    c.wait_programmed("ranges with the client", |p| {
        p.get("apps/dns:dns").is_some_and(|s| s["source_ranges"].to_string().contains("10.100.0.0/24"))
    });
    open("client inside the ranges");
    c.patch_service(NS, "dns", json!({"spec": {"loadBalancerSourceRanges": ["10.200.0.0/16", "fd00:999::/64"]}}));
    c.wait_programmed("ranges without the client", |p| {
        p.get("apps/dns:dns").is_some_and(|s| s["source_ranges"].to_string().contains("10.200.0.0/16"))
    });
    blocked("client outside again");
    c.patch_service(NS, "dns", json!({"spec": {"loadBalancerSourceRanges": null}}));
    c.wait_programmed("no ranges", |p| {
        p.get("apps/dns:dns").is_some_and(|s| s["source_ranges"].as_array().is_some_and(std::vec::Vec::is_empty))
    });
    open("field removed");
}

#[test]
fn changing_a_services_port_and_type_reprograms_it() {
    let c = Cluster::start(1, &[]);
    c.create_service(&dns_service("dns"));
    c.set_slice(NS, "dns", "dns", false, &[ready(0)], DNS_PORTS);
    c.wait_backends("apps/dns:dns", 1);
    assert!(matches!(udp_probe(&c.topo.client, vip4(53), b"x", T).unwrap(), Probe::Reply(t) if t.starts_with("pod0")));
    // the UDP port moves from 53 to 5300 (same name, same endpoints)
    c.patch_service(
        NS,
        "dns",
        json!({"spec": {"ports": [{"name": "dns", "port": 5300, "protocol": "UDP", "targetPort": 5353}, {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 8080}]}}),
    );
    c.wait_programmed("port 5300", |p| p.get("apps/dns:dns").is_some_and(|s| s["port"] == 5300));
    assert!(
        matches!(udp_probe(&c.topo.client, vip4(5300), b"x", T).unwrap(), Probe::Reply(t) if t.starts_with("pod0"))
    );
    assert!(
        !matches!(udp_probe(&c.topo.client, vip4(53), b"x", Duration::from_millis(500)).unwrap(), Probe::Reply(_)),
        "the old port is no longer served"
    );
    // no longer a LoadBalancer: no longer ours
    c.patch_service(NS, "dns", json!({"spec": {"type": "ClusterIP", "loadBalancerClass": null}}));
    c.wait_programmed("the ClusterIP Service gone", std::collections::HashMap::is_empty);
    // and back
    c.patch_service(NS, "dns", json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "xlb.io/xdp"}}));
    c.wait_backends("apps/dns:dns", 1);
}

#[test]
fn session_affinity_expires_after_its_timeout() {
    let c = affinity_cluster(1);
    // Within the timeout every new flow sticks; after an idle timeout the
    // next flow is picked afresh (by its own hash), so over a few rounds the
    // client must land on another pod at least once (each round keeps the
    // same pod with probability about 1/3).
    // Every round from new source ports (a flow of an earlier round is
    // still in the connection table and keeps its pod).
    let first = c.udp_from_ports(vip4(53), 21000, 5);
    assert_eq!(first.len(), 1, "sticky within the timeout: {first:?}");
    let mut seen: std::collections::BTreeSet<String> = first.keys().cloned().collect();
    for round_no in 1..=12 {
        std::thread::sleep(Duration::from_millis(1600));
        let round = c.udp_from_ports(vip4(53), 21000 + round_no * 10, 5);
        assert_eq!(round.len(), 1, "sticky again right after the re-pick: {round:?}");
        seen.extend(round.keys().cloned());
        if seen.len() > 1 {
            break;
        }
    }
    assert!(seen.len() > 1, "after the affinity timed out the client never moved: {seen:?}");
}
