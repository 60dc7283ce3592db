//! `--announce bgp` without a BGP daemon: the agent's routing table is the
//! contract, checked with `ip route` in the node's namespace. YAML mode, one
//! node: the VIPs with a serving backend are in `--announce-table` with
//! protocol 249 (xlb's), a stale route of ours is removed at start, a route
//! of another protocol in that table is left alone, a VIP whose service
//! loses its last backend of non-zero weight leaves the table within 1 s,
//! and SIGTERM withdraws every route before the programs detach. Needs root
//! (CI runs it as root with `--test-threads=1`).

mod common;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use common::*;
use xlb_tests::{Netns, Topology};

const TABLE: &str = "4243";
/// A route of another protocol in the table: never touched.
const OTHER: &str = "198.51.100.7";
/// The same, IPv6 (which also makes the IPv6 table exist for `ip route show`).
const OTHER6: &str = "2001:db8:beef::7";
/// A route of ours left by an earlier run: removed at start.
const STALE: &str = "203.0.113.9";
/// Bound of a withdrawal measured from before an API write: the 1 s
/// contract, plus 1 s for what this measures besides the agent on a loaded
/// 2-core CI VM (the GET and PUT to the API server, the watch delivering
/// the change, the `ip route` processes polling the table).
const API_WITHDRAWN_WITHIN: Duration = Duration::from_secs(2);

fn services(v4_weight: u16) -> String {
    let b4 = format!("{{address: \"{}\", weight: {v4_weight}}}", backend(Fam::V4, 0, UDP_BACKEND_PORT));
    config(&[
        svc("dns", Topology::VIP_V4.into(), 53, "udp", "snat", &[b4]),
        svc("dns6", Topology::VIP_V6.into(), 53, "udp", "snat", &backends(Fam::V6, 0..1, UDP_BACKEND_PORT)),
    ])
}

/// `ip [-6] route show table TABLE [proto P]` in `ns`.
fn routes(ns: &Netns, v6: bool, proto: Option<&str>) -> String {
    let mut args = vec![if v6 { "-6" } else { "-4" }, "route", "show", "table", TABLE];
    if let Some(p) = proto {
        args.extend(["proto", p]);
    }
    let out = ns.ip(&args).unwrap_or_else(|e| panic!("ip route show table {TABLE}: {e:#}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The destinations of our routes (protocol 249), both families.
fn ours(ns: &Netns) -> Vec<String> {
    let mut v: Vec<String> = [false, true]
        .iter()
        .flat_map(|v6| {
            routes(ns, *v6, Some("249"))
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v
}

fn host(ip: IpAddr) -> String {
    // `ip route` prints a host route without its prefix length.
    ip.to_string()
}

/// Polls `pred` on our routes every 10 ms, up to `limit`; returns how long
/// it took, or `None`.
fn wait_routes(ns: &Netns, limit: Duration, pred: impl Fn(&[String]) -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if pred(&ours(ns)) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn bgp_vip_routes_are_kept_in_the_table_and_withdrawn() {
    let mut env = Env::new(1, &services(1));
    let node = env.topo.node.clone();
    node.ip(&["route", "add", &format!("{OTHER}/32"), "dev", "lo", "table", TABLE, "proto", "static"])
        .expect("a route of another protocol");
    node.ip(&["-6", "route", "add", &format!("{OTHER6}/128"), "dev", "lo", "table", TABLE, "proto", "static"])
        .expect("an IPv6 route of another protocol");
    node.ip(&["route", "add", &format!("{STALE}/32"), "dev", "lo", "table", TABLE, "proto", "249"])
        .expect("a stale route of ours");
    assert_eq!(ours(&node), [STALE.to_string()]);
    env.start_agent(&["--announce", "bgp", "--announce-table", TABLE]);

    // At start: the VIPs in, the stale route out, the other one kept.
    let v4 = host(Topology::VIP_V4.into());
    let v6 = host(Topology::VIP_V6.into());
    let mut want = vec![v4.clone(), v6.clone()];
    want.sort();
    let took = wait_routes(&node, Duration::from_secs(5), |r| r == want.as_slice());
    assert!(took.is_some(), "routes of ours: {:?}, want {want:?}{}", ours(&node), env.diag());
    let r4 = routes(&node, false, Some("249"));
    assert!(r4.contains(&format!("{v4} dev lo")), "{r4}");
    assert!(routes(&node, true, Some("249")).contains(&format!("{v6} dev lo")), "{}", routes(&node, true, None));
    assert!(routes(&node, false, Some("static")).contains(OTHER), "{}", routes(&node, false, None));
    // No ARP/NDP answers come with bgp, but xlb status and /metrics show the VIPs.
    let st = cli_json(env.agent(), &["status", "-o", "json"]);
    assert_eq!(st["announced_vips"], serde_json::json!([v4, v6]), "{st}");
    let metrics = env.agent().metrics().expect("/metrics");
    assert!(metrics.lines().any(|l| l == "xlb_bgp_routes 2"), "{metrics}");

    // The IPv4 service drained (its only backend at weight 0): withdrawn within 1 s.
    let written = Instant::now();
    env.config.write(&services(0)).expect("write the config");
    env.agent_mut().reload().expect("SIGHUP");
    let gone = wait_routes(&node, Duration::from_secs(5), |r| r == [v6.clone()]);
    let took = gone.map(|_| written.elapsed());
    println!("bgp_table: withdraw after the service lost its last serving backend took {took:?}");
    let took = took.unwrap_or_else(|| panic!("{v4} still routed: {:?}{}", ours(&node), env.diag()));
    assert!(took < Duration::from_secs(1), "withdrawn after {took:?} (contract: within 1 s)");
    assert!(routes(&node, false, Some("static")).contains(OTHER));

    // Back: announced again.
    env.config.write(&services(1)).expect("write the config");
    env.agent_mut().reload().expect("SIGHUP");
    assert!(wait_routes(&node, Duration::from_secs(5), |r| r == want.as_slice()).is_some(), "{:?}", ours(&node));

    // SIGTERM: every route of ours withdrawn while the program is still attached.
    let c0 = env.topo.client_if.clone();
    let signalled = Instant::now();
    env.agent_mut().signal(libc::SIGTERM).expect("SIGTERM");
    let empty = wait_routes(&node, Duration::from_secs(5), <[String]>::is_empty);
    let attached = xdp_attached(&node, &c0);
    println!("bgp_table: routes withdrawn {:?} after SIGTERM (program attached then: {attached})", signalled.elapsed());
    assert!(empty.is_some(), "routes left after SIGTERM: {:?}", ours(&node));
    assert!(attached, "the program detached before the routes were all withdrawn");
    let status = env.agent_mut().wait_exit(Duration::from_secs(15)).expect("the agent exits");
    assert!(status.success(), "{status:?}\n{}", env.agent().log());
    assert!(!xdp_attached(&node, &c0), "{}", ip_link(&node, &c0));
    assert!(ours(&node).is_empty(), "{:?}", ours(&node));
    assert!(routes(&node, false, Some("static")).contains(OTHER), "{}", routes(&node, false, None));
    assert!(routes(&node, true, Some("static")).contains(OTHER6), "{}", routes(&node, true, None));
}

#[test]
fn bgp_flags_are_checked() {
    let env = Env::new(0, &services(1));
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["agent".into(), "--config".into(), env.config.path().display().to_string()];
        args.extend(["--interface".to_string(), env.topo.client_if.clone()]);
        args.extend(extra.iter().map(ToString::to_string));
        args.extend(["--pin-path".to_string(), env.pin.path().display().to_string()]);
        xlb_tests::run_xlb(&env.topo.node, &args, Duration::from_secs(20)).expect("run xlb")
    };
    for (extra, says) in [
        (&["--announce", "bgp", "--announce-table", "254"][..], "main"),
        (&["--announce", "bgp", "--announce-table", "0"][..], "unspec"),
        (&["--announce", "l2", "--announce-table", "4243"][..], "needs --announce bgp"),
        (&["--announce-table", "4243"][..], "needs --announce bgp"),
        (&["--announce", "bgp", "--announce-interface", "c0"][..], "needs --announce l2"),
    ] {
        let out = run(extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
    }
}

/// Kubernetes mode against the fake API server, one node (`node-1`): a
/// `Local` Service is routed only while node-1 has a ready endpoint of it
/// (withdrawn within 1 s when it stops being ready), a `Cluster` Service
/// while it has a ready endpoint on any node; SIGTERM withdraws both.
#[test]
fn bgp_kubernetes_routes_follow_ready_endpoints() {
    use xlb_tests::k8s::{endpoint, endpoint_slice, endpointslice_path, endpointslices_path, lb_service, node};
    use xlb_tests::k8s::{nodes_path, services_path, ApiServer};
    use xlb_tests::netbuild::{link, wait_carrier, Net};

    const LOCAL: &str = "192.0.2.10";
    const CLUSTER: &str = "192.0.2.20";
    require_root();
    let mut net = Net::new("bgpk");
    let api_ns = net.add("api", false);
    let n1 = net.add("n1", false);
    link(&n1, "eth0", Some("10.212.0.11/24"), &api_ns, "v0", Some("10.212.0.1/24"));
    wait_carrier(&n1);
    // Routes of another protocol (which also make the tables exist for `ip route show`).
    n1.ip(&["route", "add", &format!("{OTHER}/32"), "dev", "lo", "table", TABLE, "proto", "static"])
        .expect("a route of another protocol");
    n1.ip(&["-6", "route", "add", &format!("{OTHER6}/128"), "dev", "lo", "table", TABLE, "proto", "static"])
        .expect("an IPv6 route of another protocol");
    let api = ApiServer::start_listening(&api_ns, "10.212.0.1:0".parse().unwrap()).expect("fake API server");
    let kc = api.client();
    kc.create(&nodes_path(), &node("node-1", "10.212.0.11")).expect("create Node");
    let pin = xlb_tests::PinDir::new().expect("pin dir");
    let kubeconfig = api.kubeconfig().display().to_string();
    let args: Vec<String> = [
        "agent",
        "--kubernetes",
        "--node-name",
        "node-1",
        "--kubeconfig",
        &kubeconfig,
        "--interface",
        "eth0",
        "--announce",
        "bgp",
        "--announce-table",
        TABLE,
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let mut agent = xlb_tests::Agent::spawn_args(&n1, pin.path(), &args).expect("spawn the agent");
    agent.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("agent not healthy: {e:#}\n{}", api.log()));

    let slice = |svc: &str, eps: &[(&str, &str, bool)]| {
        let mut b = endpoint_slice("apps", svc, svc).address_type("IPv4").port("dns", 5353, "UDP");
        for (addr, n, ready) in eps {
            b = b.endpoint(endpoint(addr).node(n).conditions(*ready, *ready, false));
        }
        b.build()
    };
    let replace = |svc: &str, eps: &[(&str, &str, bool)]| {
        let mut obj = slice(svc, eps);
        let old = kc.get(&endpointslice_path("apps", svc)).expect("get the slice");
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        kc.replace(&endpointslice_path("apps", svc), &obj).expect("replace the slice");
    };
    let local = lb_service("apps", "local")
        .annotation("xlb.io/vip", LOCAL)
        .port("dns", 53, "UDP")
        .external_traffic_policy("Local");
    let cluster = lb_service("apps", "cluster").annotation("xlb.io/vip", CLUSTER).port("dns", 53, "UDP");
    for s in [local.build(), cluster.build()] {
        kc.create(&services_path(Some("apps")), &s).expect("create Service");
    }
    // Both Services' endpoints only behind node-2: Cluster routed, Local not.
    kc.create(&endpointslices_path(Some("apps")), &slice("local", &[("10.1.1.2", "node-2", true)])).expect("slice");
    kc.create(&endpointslices_path(Some("apps")), &slice("cluster", &[("10.1.1.3", "node-2", true)])).expect("slice");
    let cluster_only = [CLUSTER.to_string()];
    let seen = wait_routes(&n1, Duration::from_secs(10), |r| r == cluster_only);
    assert!(seen.is_some(), "routes of ours: {:?}\n{}", ours(&n1), agent.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ours(&n1), cluster_only, "the Local Service routed without a local endpoint");

    // A ready endpoint on node-1: the Local Service is routed too.
    replace("local", &[("10.1.1.2", "node-2", true), ("10.1.0.2", "node-1", true)]);
    let both = [LOCAL.to_string(), CLUSTER.to_string()];
    assert!(wait_routes(&n1, Duration::from_secs(5), |r| r == both).is_some(), "{:?}\n{}", ours(&n1), agent.log());

    // It stops being ready: withdrawn within 1 s (node-2's does not count).
    let t0 = Instant::now();
    replace("local", &[("10.1.1.2", "node-2", true), ("10.1.0.2", "node-1", false)]);
    let gone = wait_routes(&n1, Duration::from_secs(5), |r| r == cluster_only).map(|_| t0.elapsed());
    println!("bgp_table: Local Service's last local endpoint not ready → route withdrawn after {gone:?}");
    let took = gone.unwrap_or_else(|| panic!("{LOCAL} still routed: {:?}\n{}", ours(&n1), agent.log()));
    assert!(
        took < API_WITHDRAWN_WITHIN,
        "withdrawn {took:?} after the API write (contract: 1 s; see API_WITHDRAWN_WITHIN)"
    );

    // The Cluster Service's only endpoint stops being ready: withdrawn.
    let t0 = Instant::now();
    replace("cluster", &[("10.1.1.3", "node-2", false)]);
    let gone = wait_routes(&n1, Duration::from_secs(5), <[String]>::is_empty).map(|_| t0.elapsed());
    println!("bgp_table: Cluster Service's last endpoint not ready → route withdrawn after {gone:?}");
    let took = gone.unwrap_or_else(|| panic!("{CLUSTER} still routed: {:?}\n{}", ours(&n1), agent.log()));
    assert!(
        took < API_WITHDRAWN_WITHIN,
        "withdrawn {took:?} after the API write (contract: 1 s; see API_WITHDRAWN_WITHIN)"
    );

    // Back, then SIGTERM: withdrawn, the agent exits cleanly.
    replace("cluster", &[("10.1.1.3", "node-2", true)]);
    assert!(wait_routes(&n1, Duration::from_secs(5), |r| r == cluster_only).is_some(), "{:?}", ours(&n1));
    let status = agent.stop().expect("stop the agent");
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert!(ours(&n1).is_empty(), "{:?}", ours(&n1));
    assert!(routes(&n1, true, Some("static")).contains(OTHER6));
}
