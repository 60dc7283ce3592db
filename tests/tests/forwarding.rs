//! Forwarding through the VIP: UDP and TCP, IPv4 and IPv6, `snat` and
//! `preserve`, flow stickiness, and the active rejection of new flows by a
//! service without backends. Needs root (CI runs it as root with
//! `--test-threads=1`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use xlb_tests::{tcp_probe, udp_probe, Probe, Topology};

/// Test 1: 150 UDP flows from distinct source ports reach all three
/// backends through the VIP, every reply comes from VIP:53, the pods see the
/// node's address on their link; the same flows again land on the same
/// backends.
#[test]
fn udp_snat_spreads_over_backends_and_flows_stick() {
    let yaml =
        config(&[svc("dns", Topology::VIP_V4.into(), 53, "udp", "snat", &backends(Fam::V4, 0..3, UDP_BACKEND_PORT))]);
    let mut env = Env::start(3, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    let vip = vip4(53);
    warm_up_udp(&env, vip);

    // Fixed source ports below the ephemeral range, so we can replay them.
    let ports: Vec<u16> = (0..150).map(|i| 21000 + i).collect();
    let snat_peer = |i: usize| Fam::V4.pod_gw(i);
    let first = udp_flows_backends(&env, Fam::V4, &ports, vip, &snat_peer);
    let spread = tally(&first);
    assert_eq!(
        spread.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "150 UDP flows should reach all 3 backends; spread {spread:?}{}",
        env.diag()
    );

    // The same flows again: same backends.
    let second = udp_flows_backends(&env, Fam::V4, &ports, vip, &snat_peer);
    let moved: Vec<String> = ports
        .iter()
        .zip(first.iter().zip(&second))
        .filter(|(_, (a, b))| a != b)
        .map(|(p, (a, b))| format!("port {p}: pod{a} -> pod{b}"))
        .collect();
    assert!(moved.is_empty(), "UDP flows changed backend: {moved:?}{}", env.diag());

    // And through the library's fixed-port helper (same ports, same tally).
    let again = xlb_tests::spread_udp_ports(&env.topo.client, vip, &ports, T);
    for (i, n) in &spread {
        assert_eq!(
            again.get(&format!("pod{i}")).copied().unwrap_or(0),
            *n,
            "spread_udp_ports over the same ports: {again:?}, first pass {spread:?}"
        );
    }
}

/// Test 2: 60 TCP connections through the VIP spread over all three
/// backends, each seeing the node's address.
#[test]
fn tcp_snat_spreads_over_backends() {
    let yaml =
        config(&[svc("web", Topology::VIP_V4.into(), 80, "tcp", "snat", &backends(Fam::V4, 0..3, TCP_BACKEND_PORT))]);
    let mut env = Env::start(3, &yaml, &[]);
    env.servers = tcp_servers(&env.topo, Fam::V4, 0..3, TCP_BACKEND_PORT);
    let replies = spread_tcp(&env, vip4(80), 60);
    let per_pod = check_spread(&env, &replies, &|i| Fam::V4.pod_gw(i), "60 TCP connections to 192.0.2.10:80");
    assert_eq!(per_pod.values().sum::<usize>(), 60);
    assert_eq!(
        per_pod.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "TCP connections should reach all 3 backends: {per_pod:?}"
    );
}

/// Test 3: `source: preserve` keeps the client's address (UDP and TCP),
/// replies still come from the VIP.
#[test]
fn preserve_keeps_the_client_address() {
    let yaml = config(&dns_and_web(Fam::V4, "preserve", 0..3));
    let mut env = Env::start(3, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    env.servers.extend(tcp_servers(&env.topo, Fam::V4, 0..3, TCP_BACKEND_PORT));
    warm_up_udp(&env, vip4(53));
    let client = |_: usize| Fam::V4.client();

    let ports: Vec<u16> = (0..60).map(|i| 22000 + i).collect();
    let udp = tally(&udp_flows_backends(&env, Fam::V4, &ports, vip4(53), &client));
    assert_eq!(udp.len(), 3, "UDP (preserve) should reach all 3 backends: {udp:?}");

    let tcp = spread_tcp(&env, vip4(80), 45);
    let tcp = check_spread(&env, &tcp, &client, "TCP (preserve) to 192.0.2.10:80");
    assert_eq!(tcp.len(), 3, "TCP (preserve) should reach all 3 backends: {tcp:?}");
}

/// Test 3b: a `flow_tracking: none` service (source: preserve) forwards real
/// UDP flows over all three backends, the same flows again to the same
/// backends, replies from the VIP to the client; it records no flow and no
/// reverse entry (counter `flow_new` unchanged, `reply_translated` counts the answers).
#[test]
fn flow_tracking_none_forwards_and_translates_replies() {
    let dns = svc("dns", Topology::VIP_V4.into(), 53, "udp", "preserve", &backends(Fam::V4, 0..3, UDP_BACKEND_PORT));
    let yaml = config(&[dns.replace("    backends:", "    flow_tracking: none\n    backends:")]);
    let mut env = Env::start(3, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    warm_up_udp(&env, vip4(53));
    let client = |_: usize| Fam::V4.client();
    let before = stats(env.agent());

    let ports: Vec<u16> = (0..90).map(|i| 23000 + i).collect();
    let first = udp_flows_backends(&env, Fam::V4, &ports, vip4(53), &client);
    let spread = tally(&first);
    assert_eq!(spread.len(), 3, "90 untracked UDP flows should reach all 3 backends: {spread:?}{}", env.diag());
    let second = udp_flows_backends(&env, Fam::V4, &ports, vip4(53), &client);
    assert_eq!(first, second, "the lookup table sends a tuple to the same backend every time{}", env.diag());

    let after = stats(env.agent());
    assert_eq!(counter(&after, "flow_new"), counter(&before, "flow_new"), "no flow recorded{}", env.diag());
    assert_eq!(counter(&after, "flow_hit"), counter(&before, "flow_hit"), "no flow looked up{}", env.diag());
    assert!(
        counter(&after, "reply_translated") >= counter(&before, "reply_translated") + 180,
        "every answer translated by the data path: reply {} -> {}{}",
        counter(&before, "reply_translated"),
        counter(&after, "reply_translated"),
        env.diag()
    );
    assert_eq!(service(env.agent(), "dns").unwrap()["flow_tracking"], "none", "xlb services shows the mode");
}

fn ipv6(source: &str) {
    let yaml = config(&[
        svc("dns6", Topology::VIP_V6.into(), 53, "udp", source, &backends(Fam::V6, 0..3, UDP_BACKEND_PORT)),
        svc("web6", Topology::VIP_V6.into(), 80, "tcp", source, &backends(Fam::V6, 0..3, TCP_BACKEND_PORT)),
    ]);
    let mut env = Env::start(3, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V6, 0..3, UDP_BACKEND_PORT);
    env.servers.extend(tcp_servers(&env.topo, Fam::V6, 0..3, TCP_BACKEND_PORT));
    let expect = move |i: usize| {
        if source == "snat" {
            Fam::V6.pod_gw(i)
        } else {
            Fam::V6.client()
        }
    };

    // The CLI shows IPv6 addresses as the contract says.
    let s = service(env.agent(), "dns6").expect("dns6 listed");
    assert_eq!(s["vip"], "2001:db8:ffff::10", "{s}");
    assert_eq!(service_backends(&s), vec!["[fd00:1:1::2]:5353", "[fd00:1:2::2]:5353", "[fd00:1::2]:5353"], "{s}");

    warm_up_udp(&env, vip6(53));
    let ports: Vec<u16> = (0..60).map(|i| 23000 + i).collect();
    let first = udp_flows_backends(&env, Fam::V6, &ports, vip6(53), &expect);
    assert_eq!(tally(&first).len(), 3, "IPv6 UDP ({source}) should reach all 3 backends: {:?}", tally(&first));
    let second = udp_flows_backends(&env, Fam::V6, &ports, vip6(53), &expect);
    assert_eq!(first, second, "IPv6 UDP ({source}) flows changed backends{}", env.diag());

    let tcp = spread_tcp(&env, vip6(80), 45);
    let tcp = check_spread(&env, &tcp, &expect, &format!("IPv6 TCP ({source})"));
    assert_eq!(tcp.len(), 3, "IPv6 TCP ({source}) should reach all 3 backends: {tcp:?}");
}

/// Test 4a: IPv6 VIP with IPv6 backends, `snat` (pods see fd00:1:<i>::1).
#[test]
fn ipv6_snat_udp_and_tcp() {
    ipv6("snat");
}

/// Test 4b: IPv6 VIP with IPv6 backends, `preserve` (pods see fd00:100::2).
#[test]
fn ipv6_preserve_udp_and_tcp() {
    ipv6("preserve");
}

/// Test 9: a service with an empty backend list rejects new flows actively
/// and quickly: ICMP (ICMPv6) port unreachable for UDP, RST for a TCP SYN.
#[test]
fn empty_backend_list_rejects_new_flows() {
    let yaml = format!(
        "{}  - name: web6\n    vip: \"{}\"\n    port: 80\n    protocol: tcp\n",
        config(&[
            svc("dns", Topology::VIP_V4.into(), 53, "udp", "snat", &[]),
            svc("web", Topology::VIP_V4.into(), 80, "tcp", "snat", &[]),
            svc("dns6", Topology::VIP_V6.into(), 53, "udp", "snat", &[]),
        ]),
        Topology::VIP_V6
    );
    let mut env = Env::start(1, &yaml, &[]);
    // A server that would answer if xlb forwarded anything anywhere.
    env.servers = udp_servers(&env.topo, Fam::V4, 0..1, UDP_BACKEND_PORT);
    env.servers.extend(tcp_servers(&env.topo, Fam::V4, 0..1, TCP_BACKEND_PORT));

    let names: BTreeSet<String> =
        services(env.agent()).iter().filter_map(|s| s["name"].as_str().map(str::to_string)).collect();
    assert!(
        ["dns", "web", "dns6", "web6"].iter().all(|n| names.contains(*n)),
        "services without backends are valid and programmed: {names:?}{}",
        env.diag()
    );

    let timeout = Duration::from_secs(3);
    let quick = Duration::from_secs(1);
    let cases = [("UDP", vip4(53)), ("TCP", vip4(80)), ("UDP/IPv6", vip6(53)), ("TCP/IPv6", vip6(80))];
    for (what, to) in cases {
        for attempt in 0..3 {
            let t0 = Instant::now();
            let got = if what.starts_with("UDP") {
                udp_probe(&env.topo.client, to, b"anyone?", timeout)
            } else {
                tcp_probe(&env.topo.client, to, b"anyone?\n", timeout)
            }
            .unwrap_or_else(|e| panic!("{what} probe to {to}: {e:#}"));
            let took = t0.elapsed();
            assert_eq!(
                got,
                Probe::Refused,
                "{what} to {to} (no backends, attempt {attempt}) should be refused, took {took:?}{}",
                env.diag()
            );
            assert!(took < quick, "{what} to {to}: refusal took {took:?} (want < {quick:?})");
        }
    }
    let s = stats(env.agent());
    assert!(
        s.get("reject_no_backend").copied().unwrap_or(0) >= 12,
        "12 rejected new flows should be counted in reject_no_backend: {s:?}"
    );
}
