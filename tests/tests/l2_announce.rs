//! `--announce l2` in YAML mode on one node: the VIPs are in the client's
//! own subnet and nothing routes them, so the client reaches them only
//! because the data path answers its ARP requests and neighbour
//! solicitations with the node's MAC. The agent sends gratuitous ARP /
//! unsolicited NA when it starts (which moves a stale neighbour entry of the
//! client to the node), a VIP removed by a reload is no longer answered,
//! and a stopped agent answers nothing. Needs root (CI runs it as root with
//! `--test-threads=1`).

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use common::*;
use etherparse::ArpOperation;
use xlb_tests::l2::{self, arp_of, mac_of, neighbour_advert, Capture};
use xlb_tests::{tcp_probe, udp_probe, Netns, Probe, Topology};

/// VIPs on the client's link (10.100.0.0/24, fd00:100::/64): no route
/// needed, the client asks its neighbours.
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 0x100);
const BOGUS_MAC: [u8; 6] = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];

fn services(with_v4: bool) -> String {
    let mut s = Vec::new();
    if with_v4 {
        s.push(svc("dns", VIP4.into(), 53, "udp", "snat", &backends(Fam::V4, 0..1, UDP_BACKEND_PORT)));
        s.push(svc("web", VIP4.into(), 80, "tcp", "snat", &backends(Fam::V4, 0..1, TCP_BACKEND_PORT)));
    }
    s.push(svc("dns6", VIP6.into(), 53, "udp", "snat", &backends(Fam::V6, 0..1, UDP_BACKEND_PORT)));
    s.push(svc("web6", VIP6.into(), 80, "tcp", "snat", &backends(Fam::V6, 0..1, TCP_BACKEND_PORT)));
    config(&s)
}

/// The client's neighbour entry for `ip` on eth0.
fn neighbour(ns: &Netns, ip: IpAddr) -> Option<([u8; 6], String)> {
    l2::neighbour(ns, "eth0", ip)
}

fn replied(p: &Probe, what: &str, diag: &str) {
    match p {
        Probe::Reply(r) => assert!(r.starts_with("pod0"), "{what}: reply {r:?}{diag}"),
        other => panic!("{what}: {other:?}{diag}"),
    }
}

fn status_vips(env: &Env) -> Vec<String> {
    let v = cli_json(env.agent(), &["status", "-o", "json"]);
    v["announced_vips"].as_array().expect("announced_vips").iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

#[test]
fn l2_vips_are_answered_announced_and_withdrawn() {
    let mut env = Env::new(1, &services(true));
    let topo = &env.topo;
    let node_mac = mac_of(&topo.node, &topo.client_if);
    let client_mac = mac_of(&topo.client, "eth0");
    // A stale entry for the VIP pointing elsewhere: the gratuitous ARP must move it.
    topo.client
        .ip(&["neigh", "add", &VIP4.to_string(), "lladdr", "02:de:ad:be:ef:01", "dev", "eth0", "nud", "stale"])
        .expect("stale neighbour entry");
    assert_eq!(neighbour(&topo.client, VIP4.into()).map(|n| n.0), Some(BOGUS_MAC));
    let cap = Capture::open(&topo.client, "eth0");
    env.servers = udp_servers(&env.topo, Fam::V4, 0..1, UDP_BACKEND_PORT);
    env.servers.extend(tcp_servers(&env.topo, Fam::V4, 0..1, TCP_BACKEND_PORT));
    env.servers.extend(udp_servers(&env.topo, Fam::V6, 0..1, UDP_BACKEND_PORT));
    env.servers.extend(tcp_servers(&env.topo, Fam::V6, 0..1, TCP_BACKEND_PORT));
    let c0 = env.topo.client_if.clone();
    env.start_agent(&["--announce", "l2", "--announce-interface", &c0]);

    // Gratuitous ARP and unsolicited NA at start, from the node's MAC.
    let garp = cap.wait_for(Duration::from_secs(5), |f| {
        arp_of(f).is_some_and(|(op, sha, spa, tpa)| {
            op == ArpOperation::REQUEST && sha == node_mac && spa == VIP4.octets() && tpa == VIP4.octets()
        })
    });
    assert!(garp.is_some(), "no gratuitous ARP for {VIP4} from {node_mac:02x?} within 5 s{}", env.diag());
    let na = cap.wait_for(Duration::from_secs(5), |f| neighbour_advert(f).is_some_and(|n| n.4 == VIP6.octets()));
    let na = na.unwrap_or_else(|| panic!("no unsolicited NA for {VIP6} within 5 s{}", env.diag()));
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    assert_eq!(neighbour_advert(&na), Some((node_mac, all_nodes.octets(), true, false, VIP6.octets())));
    // The client's stale entry moved to the node without the client asking.
    let moved = (0..20).find_map(|_| {
        let n = neighbour(&env.topo.client, VIP4.into()).filter(|n| n.0 == node_mac);
        if n.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    });
    assert!(moved.is_some(), "the client's entry for {VIP4}: {:?}", neighbour(&env.topo.client, VIP4.into()));

    // Resolved by asking: ARP and NDP answered by the data path, traffic flows.
    env.topo.client.ip(&["neigh", "flush", "dev", "eth0"]).expect("flush");
    let d = env.diag();
    replied(&udp_probe(&env.topo.client, SocketAddr::new(VIP4.into(), 53), b"hi", T).unwrap(), "UDP to VIP4", &d);
    replied(&tcp_probe(&env.topo.client, SocketAddr::new(VIP4.into(), 80), b"hi", T).unwrap(), "TCP to VIP4", &d);
    replied(&udp_probe(&env.topo.client, SocketAddr::new(VIP6.into(), 53), b"hi", T).unwrap(), "UDP to VIP6", &d);
    replied(&tcp_probe(&env.topo.client, SocketAddr::new(VIP6.into(), 80), b"hi", T).unwrap(), "TCP to VIP6", &d);
    assert_eq!(neighbour(&env.topo.client, VIP4.into()).map(|n| n.0), Some(node_mac), "{}", env.diag());
    assert_eq!(neighbour(&env.topo.client, VIP6.into()).map(|n| n.0), Some(node_mac), "{}", env.diag());
    assert!(stat(env.agent(), "arp_reply") >= 1, "{}", env.diag());
    assert!(stat(env.agent(), "ndp_advert") >= 1, "{}", env.diag());
    assert_eq!(status_vips(&env), vec![VIP4.to_string(), VIP6.to_string()]);
    let metrics = env.agent().metrics().expect("/metrics");
    assert!(metrics.contains("xlb_announced_vips 2"), "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with("xlb_gratuitous_sent_total{family=\"ipv4\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert_eq!(cap.arp_ask(client_mac, Topology::CLIENT_V4, VIP4), Some(node_mac));

    // The IPv4 VIP removed by a reload: no longer answered.
    env.config.write(&services(false)).expect("write the config");
    env.agent_mut().reload().expect("SIGHUP");
    wait_services(env.agent(), "dns and web removed", Duration::from_secs(10), |s| s.len() == 2);
    assert_eq!(status_vips(&env), vec![VIP6.to_string()]);
    assert_eq!(cap.arp_ask(client_mac, Topology::CLIENT_V4, VIP4), None, "{VIP4} still answered after its removal");

    // A stopped agent answers nothing: XLB_ANNOUNCE is emptied before it detaches.
    env.agent_mut().stop().expect("stop the agent");
    let v = serde_json::from_slice::<serde_json::Value>(
        &xlb_tests::run_xlb(
            &env.topo.node,
            &["status".into(), "-o".into(), "json".into(), "--pin-path".into(), env.pin.path().display().to_string()],
            Duration::from_secs(10),
        )
        .expect("xlb status")
        .stdout,
    )
    .expect("status JSON");
    assert_eq!(v["announced_vips"], serde_json::json!([]), "{v}");
}

#[test]
fn announce_flags_are_checked() {
    let env = Env::new(0, &services(true));
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["agent".into(), "--config".into(), env.config.path().display().to_string()];
        args.extend(["--interface".to_string(), env.topo.client_if.clone()]);
        args.extend(extra.iter().map(ToString::to_string));
        args.extend(["--pin-path".to_string(), env.pin.path().display().to_string()]);
        xlb_tests::run_xlb(&env.topo.node, &args, Duration::from_secs(20)).expect("run xlb")
    };
    let out = run(&["--announce", "l2", "--announce-table", "4242"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --announce bgp"));
    let out = run(&["--announce", "l2", "--announce-interface", "nosuch0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interface nosuch0"));
}

/// An agent started over pins of an xlb without announcements (no
/// `XLB_ANNOUNCE`, no `XLB_L2_IFACES` pinned) creates them and answers.
#[test]
fn announcing_over_pins_of_an_older_agent() {
    let mut env = Env::new(1, &services(true));
    env.start_agent(&["--keep-on-exit"]);
    let client_mac = mac_of(&env.topo.client, "eth0");
    let node_mac = mac_of(&env.topo.node, &env.topo.client_if);
    let cap = Capture::open(&env.topo.client, "eth0");
    assert_eq!(cap.arp_ask(client_mac, Topology::CLIENT_V4, VIP4), None, "answered without --announce l2");
    env.agent_mut().stop().expect("stop the agent");
    env.agent = None;
    let dir = xlb::bpf::maps::map_dir(env.pin.path());
    for name in ["XLB_ANNOUNCE", "XLB_L2_IFACES"] {
        std::fs::remove_file(dir.join(name)).unwrap_or_else(|e| panic!("removing the pin {name}: {e}"));
    }
    env.start_agent(&["--announce", "l2"]);
    assert_eq!(cap.arp_ask(client_mac, Topology::CLIENT_V4, VIP4), Some(node_mac), "{}", env.diag());
    assert_eq!(status_vips(&env), vec![VIP4.to_string(), VIP6.to_string()]);
}
