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
