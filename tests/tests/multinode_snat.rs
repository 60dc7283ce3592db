//! Two nodes on one host, both running xlb, with backends behind each, and
//! `source: snat`: node 1 (where the VIP is routed) sends half of the flows
//! to the pod behind node 2, through node 2.
//!
//! The packets node 1 forwards go through its tc program (veths cannot take
//! XDP_TX/XDP_REDIRECT), and skb metadata survives veths, a bridge and a
//! forwarding hop: node 2's tc program must not act on the hand-off that
//! node 1's XDP program wrote (issue 10, defect 0: it did, and every flow to
//! the pod behind node 2 was lost). Run over an L2 segment and over a router.
//!
//! ```text
//!                                               L2:     [switch] br0 (s1, s2)
//!                                               routed: [router] r1, r2
//!  [client] eth0 ── ext [node1] int ────────────────────────────── ext [node2]
//!                          p1                                            p2
//!                          │                                             │
//!                       eth0 [pod1]                                   eth0 [pod2]
//! ```
//!
//! * client 10.200.0.2/24, node1 `ext` 10.200.0.1/24; the client routes
//!   everything (the VIP) to node 1;
//! * L2: node1 `int` 10.210.0.1/24 and node2 `ext` 10.210.0.2/24 on a bridge
//!   in the switch namespace;
//! * routed: node1 `int` 10.211.1.1/24 – router `r1` 10.211.1.2/24, router
//!   `r2` 10.211.2.2/24 – node2 `ext` 10.211.2.1/24;
//! * pod<n> 10.1.<n>.2/24 behind node<n>'s `p<n>` 10.1.<n>.1/24.
//!
//! Both agents run the same file (UDP 53 and TCP 80 on the VIP, backends
//! pod1 and pod2, `source: snat`), each with its own pin path, attached to
//! every interface of its node.
//!
//! Needs root; run with `--test-threads=1`.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{stats, svc};
use xlb_tests::{
    cleanup_stale, spread_tcp_replies, spread_udp_replies, tcp_echo_server, udp_echo_server, Agent,
    Netns, PinDir, ServerHandle, NO_REPLY, PREFIX, WRONG_SOURCE,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const UDP_PORT: u16 = 53;
const TCP_PORT: u16 = 80;
const UDP_BACKEND: u16 = 5353;
const TCP_BACKEND: u16 = 8080;
/// New UDP flows (one source port each) and TCP connections sent.
const UDP_FLOWS: usize = 60;
const TCP_FLOWS: usize = 30;
/// Per-request timeout: the path is a few local veths.
const T: Duration = Duration::from_secs(1);

/// How node 1 and node 2 are joined.
#[derive(Clone, Copy, Debug)]
enum Between {
    /// One L2 segment: both nodes' links on a bridge in a switch namespace.
    Switch,
    /// A router namespace between node 1's and node 2's networks.
    Router,
}

/// Owns the namespaces and the configuration file: on drop, stops the
/// processes started through the namespaces (only those), deletes the
/// namespaces (with their veths, bridge and XDP programs) and the file.
struct Net {
    created: Vec<Netns>,
    config: Option<PathBuf>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            ns.stop_children(Duration::from_secs(10));
        }
        for ns in self.created.iter().rev() {
            match Command::new("ip").args(["netns", "del", &ns.name]).stdin(Stdio::null()).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "multinode_snat: cannot delete netns {}: {}",
                    ns.name,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("multinode_snat: cannot run ip netns del {}: {e}", ns.name),
            }
        }
        if let Some(p) = &self.config {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Net {
    /// A new namespace `name` with loopback up, rp_filter off and DAD off
    /// (inherited by the interfaces made later), forwarding if asked.
    fn add(&mut self, name: String, forwarding: bool) -> Netns {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns add: {e}"));
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
        let ns = Netns::existing(name);
        self.created.push(ns.clone());
        ip(&ns, &["link", "set", "lo", "up"]);
        sysctl(&ns, "net/ipv4/conf/all/rp_filter", "0");
        sysctl(&ns, "net/ipv4/conf/default/rp_filter", "0");
        sysctl(&ns, "net/ipv6/conf/all/accept_dad", "0");
        sysctl(&ns, "net/ipv6/conf/default/accept_dad", "0");
        if forwarding {
            sysctl(&ns, "net/ipv4/ip_forward", "1");
        }
        ns
    }
}

fn ip(ns: &Netns, args: &[&str]) {
    ns.ip(args).unwrap_or_else(|e| panic!("ip -n {} {}: {e:#}", ns.name, args.join(" ")));
}

fn ip_out(ns: &Netns, args: &[&str]) -> String {
    match ns.ip(args) {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(ip -n {} {} failed: {e:#})", ns.name, args.join(" ")),
    }
}

/// Writes `/proc/sys/<key>` from a thread inside `ns`.
fn sysctl(ns: &Netns, key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    ns.run(|| std::fs::write(&path, value))
        .unwrap_or_else(|e| panic!("netns {}: cannot set {path} to {value}: {e}", ns.name));
}

/// A veth pair `a_if` (in `a`, address `a_addr` if any) — `b_if` (in `b`,
/// `b_addr` if any), both up.
fn link(a: &Netns, a_if: &str, a_addr: Option<&str>, b: &Netns, b_if: &str, b_addr: Option<&str>) {
    ip(a, &["link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name]);
    if let Some(addr) = a_addr {
        ip(a, &["addr", "add", addr, "dev", a_if]);
    }
    if let Some(addr) = b_addr {
        ip(b, &["addr", "add", addr, "dev", b_if]);
    }
    ip(a, &["link", "set", a_if, "up"]);
    ip(b, &["link", "set", b_if, "up"]);
}

/// Waits (bounded) until every veth of `ns` has its carrier.
fn wait_carrier(ns: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let links = ip_out(ns, &["-o", "link", "show"]);
        if !links.lines().filter(|l| l.contains('@')).any(|l| !l.contains("LOWER_UP")) {
            return;
        }
        assert!(Instant::now() < deadline, "netns {}: links without carrier after 10 s:\n{links}", ns.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One datagram from `ns` to `to`:9 (nobody listens), so the neighbour
/// entries on the way are resolved before the measured traffic.
fn poke(ns: &Netns, to: &str) {
    let to: SocketAddr = format!("{to}:9").parse().unwrap();
    ns.run(|| -> std::io::Result<()> { UdpSocket::bind("0.0.0.0:0")?.send_to(b"warm-up", to).map(|_| ()) })
        .unwrap_or_else(|e| panic!("netns {}: warm-up datagram to {to}: {e}", ns.name));
}

/// Non-zero counters of both agents and the tails of their logs.
fn diag(agents: &[(&str, &Agent)]) -> String {
    let mut s = String::new();
    for (name, a) in agents {
        let st: Vec<String> = stats(a).into_iter().filter(|(_, v)| *v != 0).map(|(k, v)| format!("{k}={v}")).collect();
        let log = a.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        s.push_str(&format!(
            "\n--- {name}: xlb stats (non-zero) ---\n{}\n--- {name}: agent log (tail) ---\n{tail}\n",
            st.join(" ")
        ));
    }
    s
}

/// Replies per whole text (`"pod2 10.210.0.1"`, [`NO_REPLY`], ...) →
/// count per pod tag, plus the failures under their own keys.
fn by_pod(replies: &HashMap<String, usize>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (text, n) in replies {
        let key = if text.starts_with('<') { text.clone() } else { xlb_tests::reply_tag(text).to_string() };
        *out.entry(key).or_insert(0) += n;
    }
    out
}

/// Builds the topology joined by `between`, starts both agents and the
/// pods' servers, sends [`UDP_FLOWS`] UDP flows and [`TCP_FLOWS`] TCP
/// connections to the VIP from the client, and checks that every one was
/// answered, through the VIP, with both pods serving a fair share.
fn cross_node_snat(between: Between) {
    common::require_root();
    let t0 = Instant::now();
    if let Err(e) = cleanup_stale(PREFIX) {
        eprintln!("multinode_snat: cleaning stale namespaces failed: {e:#}");
    }
    let prefix = format!("{PREFIX}{}-ms", std::process::id());

    // --- topology -------------------------------------------------------
    let mut net = Net { created: Vec::new(), config: None };
    let client = net.add(format!("{prefix}-client"), false);
    let node1 = net.add(format!("{prefix}-node1"), true);
    let node2 = net.add(format!("{prefix}-node2"), true);
    let pod1 = net.add(format!("{prefix}-pod1"), false);
    let pod2 = net.add(format!("{prefix}-pod2"), false);

    link(&node1, "ext", Some("10.200.0.1/24"), &client, "eth0", Some("10.200.0.2/24"));
    ip(&client, &["route", "add", "default", "via", "10.200.0.1", "dev", "eth0"]);
    for (n, node, pod) in [(1, &node1, &pod1), (2, &node2, &pod2)] {
        let gw = format!("10.1.{n}.1");
        link(node, &format!("p{n}"), Some(&format!("{gw}/24")), pod, "eth0", Some(&format!("10.1.{n}.2/24")));
        ip(pod, &["route", "add", "default", "via", &gw, "dev", "eth0"]);
    }
    // node1's address toward node2 (the SNAT address of pod2's flows), and
    // node1's and node2's next hops toward each other.
    let (node1_int, node1_next, node2_next) = match between {
        Between::Switch => {
            let switch = net.add(format!("{prefix}-switch"), false);
            ip(&switch, &["link", "add", "br0", "type", "bridge"]);
            ip(&switch, &["link", "set", "br0", "up"]);
            link(&node1, "int", Some("10.210.0.1/24"), &switch, "s1", None);
            link(&node2, "ext", Some("10.210.0.2/24"), &switch, "s2", None);
            ip(&switch, &["link", "set", "s1", "master", "br0"]);
            ip(&switch, &["link", "set", "s2", "master", "br0"]);
            ip(&node1, &["route", "add", "10.1.2.0/24", "via", "10.210.0.2", "dev", "int"]);
            ip(&node2, &["route", "add", "default", "via", "10.210.0.1", "dev", "ext"]);
            ("10.210.0.1", "10.210.0.2", "10.210.0.1")
        }
        Between::Router => {
            let router = net.add(format!("{prefix}-router"), true);
            link(&node1, "int", Some("10.211.1.1/24"), &router, "r1", Some("10.211.1.2/24"));
            link(&node2, "ext", Some("10.211.2.1/24"), &router, "r2", Some("10.211.2.2/24"));
            ip(&router, &["route", "add", "10.1.1.0/24", "via", "10.211.1.1", "dev", "r1"]);
            ip(&router, &["route", "add", "10.1.2.0/24", "via", "10.211.2.1", "dev", "r2"]);
            ip(&node1, &["route", "add", "10.1.2.0/24", "via", "10.211.1.2", "dev", "int"]);
            ip(&node2, &["route", "add", "default", "via", "10.211.2.2", "dev", "ext"]);
            poke(&router, "10.211.1.1");
            poke(&router, "10.211.2.1");
            ("10.211.1.1", "10.211.1.2", "10.211.2.2")
        }
    };
    for ns in &net.created {
        wait_carrier(ns);
    }
    poke(&client, "10.200.0.1");
    poke(&node1, "10.1.1.2");
    poke(&node1, node1_next);
    poke(&node2, "10.1.2.2");
    poke(&node2, node2_next);
    let t_topo = t0.elapsed();

    // --- pods, config, agents -------------------------------------------
    let pod_addr = |n: u8| IpAddr::from(Ipv4Addr::new(10, 1, n, 2));
    let mut servers: Vec<ServerHandle> = Vec::new();
    for (n, pod) in [(1u8, &pod1), (2u8, &pod2)] {
        let tag = format!("pod{n}");
        servers.push(udp_echo_server(pod, SocketAddr::new(pod_addr(n), UDP_BACKEND), &tag));
        servers.push(tcp_echo_server(pod, SocketAddr::new(pod_addr(n), TCP_BACKEND), &tag));
    }
    let backends = |port: u16| -> Vec<String> { [1u8, 2].iter().map(|&n| SocketAddr::new(pod_addr(n), port).to_string()).collect() };
    let yaml = common::config(&[
        svc("dns", VIP.into(), UDP_PORT, "udp", "snat", &backends(UDP_BACKEND)),
        svc("web", VIP.into(), TCP_PORT, "tcp", "snat", &backends(TCP_BACKEND)),
    ]);
    let config_path = std::env::temp_dir().join(format!("{prefix}.yaml"));
    net.config = Some(config_path.clone());
    std::fs::write(&config_path, &yaml).unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));

    let pin1 = PinDir::new().expect("pin directory for node1");
    let pin2 = PinDir::new().expect("pin directory for node2");
    let start = |ns: &Netns, pin: &PinDir, ifaces: &[&str]| -> Agent {
        let mut args = vec!["agent".to_string(), "--config".into(), config_path.display().to_string()];
        for i in ifaces {
            args.push("--interface".into());
            args.push(i.to_string());
        }
        Agent::spawn_args(ns, pin.path(), &args).unwrap_or_else(|e| panic!("start the agent in {}: {e:#}", ns.name))
    };
    let mut agent1 = start(&node1, &pin1, &["ext", "int", "p1"]);
    let mut agent2 = start(&node2, &pin2, &["ext", "p2"]);
    agent1.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("node1's agent: {e:#}"));
    agent2.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("node2's agent: {e:#}"));
    let t_agents = t0.elapsed();
    let agents = [("node1", &agent1), ("node2", &agent2)];

    // --- traffic ----------------------------------------------------------
    let udp = spread_udp_replies(&client, SocketAddr::new(VIP.into(), UDP_PORT), UDP_FLOWS, T);
    let tcp = spread_tcp_replies(&client, SocketAddr::new(VIP.into(), TCP_PORT), TCP_FLOWS, T);
    let t_traffic = t0.elapsed();
    let (s1, s2) = (stats(&agent1), stats(&agent2));
    let c = |s: &std::collections::BTreeMap<String, u64>, k: &str| s.get(k).copied().unwrap_or(0);
    eprintln!(
        "multinode_snat ({between:?}): UDP {udp:?}; TCP {tcp:?}; node1 fwd_kernel={} tc_forward={}; \
         node2 tc_forward={} tc_foreign_meta={} pass_not_vip={}; topology {t_topo:?}, agents {t_agents:?}, traffic {t_traffic:?}",
        c(&s1, "fwd_kernel"),
        c(&s1, "tc_forward"),
        c(&s2, "tc_forward"),
        c(&s2, "tc_foreign_meta"),
        c(&s2, "pass_not_vip"),
    );

    // Every flow answered, from the VIP (no wrong source), by a pod.
    for (what, replies, sent) in [("UDP", &udp, UDP_FLOWS), ("TCP", &tcp, TCP_FLOWS)] {
        let pods = by_pod(replies);
        let lost = pods.get(NO_REPLY).copied().unwrap_or(0);
        let wrong = pods.get(WRONG_SOURCE).copied().unwrap_or(0);
        assert!(
            lost == 0 && wrong == 0,
            "{between:?}: {what}: {lost} of {sent} flows got no reply and {wrong} a reply from an address other \
             than the VIP; per pod {pods:?} (node2's tc_forward counter moving means node2 acted on node1's \
             XDP→tc hand-off){}",
            diag(&agents)
        );
        // A fair share: Maglev splits 1:1, allow a wide margin.
        for pod in ["pod1", "pod2"] {
            let n = pods.get(pod).copied().unwrap_or(0);
            assert!(n * 5 >= sent, "{between:?}: {what}: {pod} served {n} of {sent} flows: {pods:?}{}", diag(&agents));
        }
        // SNAT: each pod saw its node-side address of node 1.
        for (text, _) in replies.iter().filter(|(t, _)| !t.starts_with('<')) {
            let want = match xlb_tests::reply_tag(text) {
                "pod1" => "10.1.1.1",
                _ => node1_int,
            };
            assert!(
                text.ends_with(&format!(" {want}")),
                "{between:?}: {what}: reply {text:?}: the pod should have seen node1's address {want} (source: snat)"
            );
        }
    }
    // The path under test: node1 hands the packets to its tc program, and
    // node2 (which sees no VIP traffic) never forwards through tc.
    assert!(
        c(&s1, "fwd_kernel") > 0 && c(&s1, "tc_forward") > 0,
        "{between:?}: node1 did not use the XDP→tc hand-off, so this test does not exercise it{}",
        diag(&agents)
    );
    assert_eq!(
        c(&s2, "tc_forward"),
        0,
        "{between:?}: node2's tc program forwarded packets its own XDP program never marked{}",
        diag(&agents)
    );

    drop(agent1);
    drop(agent2);
    drop(pin1);
    drop(pin2);
    drop(servers);
    drop(net);
}

#[test]
fn snat_to_pods_behind_another_xlb_node_over_l2_segment() {
    cross_node_snat(Between::Switch);
}

#[test]
fn snat_to_pods_behind_another_xlb_node_over_router() {
    cross_node_snat(Between::Router);
}
