//! BGP announcement, end to end, with real BIRD 2 daemons: each node runs
//! the shipped `deploy/bgp/bird.conf` (placeholders substituted) next to
//! `xlb agent --kubernetes --announce bgp` (the fake API server); a router
//! runs BIRD with ECMP (`merge paths`) and L4 multipath hashing; a client
//! behind the router reaches the VIPs through whichever nodes announce them.
//!
//! ```text
//!                                     ┌ r1 ─ ext [node1] p0 ─ eth0 [pod1] 10.1.0.2
//!  [client] eth0 ── rc [router] ──────┤
//!  10.200.0.2        10.200.0.1       └ r2 ─ ext [node2] p0 ─ eth0 [pod2] 10.1.1.2
//!                    (BIRD, API server)
//! ```
//!
//! * router–node<n>: 10.201.<n>.0/24 and fd00:201:<n>::/64 (router .2,
//!   node .1), one BGP session per family (router AS 64500, nodes AS 64512);
//! * node<n>–pod<n>: 10.1.<n-1>.0/24 (node .1, pod .2); the router reaches
//!   the pods through their node (static routes), the nodes default to the
//!   router;
//! * each node's agent attaches to `ext` and `p0`, with `--maglev-seed 7`,
//!   and keeps its VIP routes in table 4242 (the default
//!   `--announce-table`, which the shipped configuration reads).
//!
//! The pods answer `"<pod> <peer address> <payload>"`: for a `Cluster`
//! Service (source NAT) the peer is the node that forwarded the request,
//! so a reply names both the backend and the node that carried the flow.
//!
//! BGP propagation: BIRD sends an update as soon as a route changes (it has
//! no minimum advertisement interval) and follows the kernel table through
//! netlink notifications (no scan timer involved), so between namespaces of
//! one machine an agent's route change reaches the router's kernel table
//! within milliseconds; the test emulating the agent's routes measures
//! exactly that leg and bounds it by [`BGP_PROPAGATION`].
//!
//! Needs root and BIRD 2 (`cargo xtask setup`); run with `--test-threads=1`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_tests::bird::{kernel_route, kernel_routes, render_node_config, router_config, wait_until, Bird, KernelRoute};
use xlb_tests::bird::{Neighbour, NodeBgp, XLB_PROTO, XLB_TABLE};
use xlb_tests::k8s::{
    endpoint, endpoint_slice, endpointslice_path, endpointslices_path, lb_service, node, nodes_path, services_path,
    ApiServer, KubeClient,
};
use xlb_tests::netbuild::{agents_diag, ip, ip_out, link, poke, sysctl, wait_carrier, Net};
use xlb_tests::{try_udp_server, Agent, Netns, PinDir, ServerHandle};

const NODES: [&str; 2] = ["node-1", "node-2"];
const ROUTER_AS: u32 = 64500;
const NODE_AS: u32 = 64512;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const NS: &str = "apps";
const PORT: u16 = 53;
const BACKEND_PORT: u16 = 5353;
const SEED: &str = "7";
/// A `Cluster` VIP and a `Local` one.
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VIP_LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
/// The VIP of the YAML-mode test.
const VIP_YAML: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
const VIP6: &str = "2001:db8:ffff::10";
/// The contract: a VIP leaves the table within 1 s of losing eligibility.
const WITHDRAW: Duration = Duration::from_secs(1);
/// Allowance for BIRD node → BIRD router → router's kernel table, and the
/// 5 ms polling of that table. Measured at well under 50 ms on an idle
/// machine (`bird_config_*` prints it); 750 ms because on a loaded 2-core
/// CI VM the BIRD processes, the poller and the `ip` processes it runs wait
/// for a core (what that measures is the machine, not the agent).
const BGP_PROPAGATION: Duration = Duration::from_millis(750);
/// Bound of each single measurement of that leg in `bird_config_*` (each
/// includes spawning `ip` for the change, and a scheduling hiccup of one
/// sample on a loaded machine is not a BIRD configuration fault; the
/// median is held to [`BGP_PROPAGATION`]).
const BGP_PROPAGATION_EACH: Duration = Duration::from_secs(1);
/// Client flows (one socket, so one source port, each).
const FLOWS: u16 = 200;
const FIRST_PORT: u16 = 30000;
/// The paced stream during a node's SIGTERM: one request every
/// `STREAM_EVERY`, `STREAM_COUNT` of them (3 s).
const STREAM_EVERY: Duration = Duration::from_millis(5);
const STREAM_COUNT: u64 = 600;

fn router_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, i as u8 + 1, 2)
}

fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, i as u8 + 1, 1)
}

fn router_addr6(i: usize) -> IpAddr {
    format!("fd00:201:{}::2", i + 1).parse().unwrap()
}

fn node_addr6(i: usize) -> IpAddr {
    format!("fd00:201:{}::1", i + 1).parse().unwrap()
}

fn pod_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, i as u8, 2)
}

/// The router's interface towards node `i`.
fn router_dev(i: usize) -> String {
    format!("r{}", i + 1)
}

/// The node that forwarded a request the pod saw from `peer` (its `ext`
/// or its `p0` address).
fn forwarded_by(peer: IpAddr) -> Option<usize> {
    (0..NODES.len())
        .find(|&i| peer == IpAddr::from(node_addr(i)) || peer == IpAddr::from(Ipv4Addr::new(10, 1, i as u8, 1)))
}

// ---------------------------------------------------------------------------
// The fabric

struct Fabric {
    agents: Vec<Option<Agent>>,
    pins: Vec<PinDir>,
    api: Option<(ApiServer, KubeClient)>,
    _servers: Vec<ServerHandle>,
    router_bird: Bird,
    birds: Vec<Bird>,
    router: Netns,
    client: Netns,
    nodes: Vec<Netns>,
    // Last: its drop deletes the namespaces once the processes are gone.
    net: Net,
}

impl Fabric {
    /// The namespaces, the pods' servers, BIRD on the router and on both
    /// nodes (the shipped configuration) with every session established;
    /// no agent yet.
    fn start(tag: &str) -> Fabric {
        xlb_tests::require_root().expect("these integration tests must run as root");
        let mut net = Net::new(tag);
        let client = net.add("client", false);
        let router = net.add("router", true);
        sysctl(&router, "net/ipv6/conf/all/forwarding", "1");
        // L4 hashing: the flows of one client spread over the next hops.
        sysctl(&router, "net/ipv4/fib_multipath_hash_policy", "1");
        sysctl(&router, "net/ipv6/fib_multipath_hash_policy", "1");
        link(&router, "rc", Some("10.200.0.1/24"), &client, "eth0", Some(&format!("{CLIENT}/24")));
        ip(&client, &["route", "add", "default", "via", "10.200.0.1"]);
        let mut nodes = Vec::new();
        let mut servers = Vec::new();
        for i in 0..NODES.len() {
            let n = net.add(&format!("n{}", i + 1), true);
            sysctl(&n, "net/ipv6/conf/all/forwarding", "1");
            let r = router_dev(i);
            link(
                &router,
                &r,
                Some(&format!("{}/24", router_addr(i))),
                &n,
                "ext",
                Some(&format!("{}/24", node_addr(i))),
            );
            ip(&router, &["addr", "add", &format!("{}/64", router_addr6(i)), "dev", &r]);
            ip(&n, &["addr", "add", &format!("{}/64", node_addr6(i)), "dev", "ext"]);
            ip(&n, &["route", "add", "default", "via", &router_addr(i).to_string()]);
            let pod = net.add(&format!("pod{}", i + 1), false);
            link(&n, "p0", Some(&format!("10.1.{i}.1/24")), &pod, "eth0", Some(&format!("{}/24", pod_addr(i))));
            ip(&pod, &["route", "add", "default", "via", &format!("10.1.{i}.1")]);
            ip(&router, &["route", "add", &format!("10.1.{i}.0/24"), "via", &node_addr(i).to_string()]);
            let tag = format!("pod{}", i + 1);
            servers.push(tagged_echo(&pod, SocketAddr::from((pod_addr(i), BACKEND_PORT)), &tag));
            wait_carrier(&pod);
            nodes.push(n);
        }
        for ns in nodes.iter().chain([&router, &client]) {
            wait_carrier(ns);
        }
        for (i, n) in nodes.iter().enumerate() {
            poke(&router, &node_addr(i).to_string());
            poke(n, &pod_addr(i).to_string());
        }

        let neighbours: Vec<Neighbour> = (0..NODES.len())
            .flat_map(|i| {
                [
                    Neighbour { name: format!("node{}", i + 1), address: node_addr(i).into(), asn: NODE_AS },
                    Neighbour { name: format!("node{}_v6", i + 1), address: node_addr6(i), asn: NODE_AS },
                ]
            })
            .collect();
        let router_bird =
            Bird::start(&router, "router", &router_config(ROUTER_AS, &neighbours)).unwrap_or_else(|e| panic!("{e:#}"));
        let birds: Vec<Bird> = (0..NODES.len())
            .map(|i| {
                let conf = render_node_config(&NodeBgp {
                    local_as: NODE_AS,
                    peer_as: ROUTER_AS,
                    peer: router_addr(i).into(),
                    peer6: router_addr6(i),
                })
                .unwrap_or_else(|e| panic!("{e:#}"));
                Bird::start(&nodes[i], &format!("node{}", i + 1), &conf).unwrap_or_else(|e| panic!("{e:#}"))
            })
            .collect();
        let names: Vec<&str> = neighbours.iter().map(|n| n.name.as_str()).collect();
        let t = router_bird.wait_established(&names, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e:#}"));
        for b in &birds {
            b.wait_established(&["peer1", "peer1_v6"], Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e:#}"));
        }
        eprintln!("bgp: BGP sessions established {t:?} after BIRD started");
        Fabric {
            agents: vec![None, None],
            pins: Vec::new(),
            api: None,
            _servers: servers,
            router_bird,
            birds,
            router,
            client,
            nodes,
            net,
        }
    }

    /// [`Fabric::start`], then the fake API server (on the router, reached
    /// by the nodes through their default route) with both Nodes, and both
    /// agents healthy.
    fn with_agents(tag: &str) -> Fabric {
        let mut f = Fabric::start(tag);
        let api = ApiServer::start_listening(&f.router, "10.200.0.1:0".parse().unwrap()).expect("fake API server");
        let kc = api.client();
        for (i, name) in NODES.iter().enumerate() {
            kc.create(&nodes_path(), &node(name, &node_addr(i).to_string())).expect("create Node");
        }
        f.api = Some((api, kc));
        f.pins = NODES.iter().map(|_| PinDir::new().expect("pin dir")).collect();
        for i in 0..NODES.len() {
            f.spawn(i);
        }
        f
    }

    fn spawn(&mut self, i: usize) {
        let (api, _) = self.api.as_ref().expect("the API server");
        let kubeconfig = api.kubeconfig().display().to_string();
        let args: Vec<String> = [
            "agent",
            "--kubernetes",
            "--node-name",
            NODES[i],
            "--kubeconfig",
            &kubeconfig,
            "--interface",
            "ext",
            "--interface",
            "p0",
            "--announce",
            "bgp",
            "--maglev-seed",
            SEED,
            "--log-level",
            "debug",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        let mut a = Agent::spawn_args(&self.nodes[i], self.pins[i].path(), &args).expect("spawn agent");
        if let Err(e) = a.wait_healthy(Duration::from_secs(30)) {
            panic!("agent {} not healthy: {e:#}\n{}\nAPI server log:\n{}", NODES[i], a.log(), api.log());
        }
        self.agents[i] = Some(a);
    }

    fn kc(&self) -> &KubeClient {
        &self.api.as_ref().expect("the API server").1
    }

    /// The router's route to `vip` (main table).
    fn router_route(&self, vip: &str) -> Option<KernelRoute> {
        kernel_route(&self.router, "main", vip).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The devices of the router's route to `vip` (`[]` without one).
    fn router_devs(&self, vip: &str) -> Vec<String> {
        self.router_route(vip).map(|r| r.devs()).unwrap_or_default()
    }

    /// Waits (polling every 5 ms, at most `limit`) until the router's route
    /// to `vip` leads exactly to the nodes `nodes` (none: no route);
    /// returns how long that took.
    fn wait_router(&self, vip: &str, nodes: &[usize], limit: Duration) -> Duration {
        let want: Vec<String> = nodes.iter().map(|&i| router_dev(i)).collect();
        match wait_until(limit, Duration::from_millis(5), || (self.router_devs(vip) == want).then_some(())) {
            Ok(((), t)) => t,
            Err(e) => panic!(
                "{e}: the router's route to {vip} should lead to {want:?} within {limit:?}: {:?}{}",
                self.router_route(vip),
                self.diag()
            ),
        }
    }

    /// Node `i`'s route to `vip` in the agent's table.
    fn node_route(&self, i: usize, vip: &str) -> Option<KernelRoute> {
        kernel_route(&self.nodes[i], &XLB_TABLE.to_string(), vip).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn diag(&self) -> String {
        let named: Vec<(&str, &Agent)> =
            self.agents.iter().enumerate().filter_map(|(i, a)| Some((NODES[i], a.as_ref()?))).collect();
        // The route tables first: the output may be cut after a few lines.
        let mut s = format!("\n--- router: ip route ---\n{}", ip_out(&self.router, &["route", "show"]));
        for (i, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!(
                "--- {}: ip route show table {XLB_TABLE} ---\n{}",
                NODES[i],
                ip_out(n, &["route", "show", "table", &XLB_TABLE.to_string()])
            ));
        }
        s.push_str(&agents_diag(&named));
        s.push_str(&self.router_bird.diag());
        for b in &self.birds {
            s.push_str(&b.diag());
        }
        s
    }

    fn create(&self, obj: &Value) {
        let path = if obj["kind"] == "Service" { services_path(Some(NS)) } else { endpointslices_path(Some(NS)) };
        self.kc().create(&path, obj).expect("create");
    }

    /// Replaces the EndpointSlice of `svc` with one ready endpoint per pod
    /// of `pods` (pod `i` is behind node `i`).
    fn set_endpoints(&self, svc: &str, pods: &[usize]) {
        let path = endpointslice_path(NS, svc);
        let old = self.kc().get(&path).expect("the EndpointSlice");
        let mut obj = slice(svc, pods);
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        self.kc().replace(&path, &obj).expect("replace the EndpointSlice");
    }

    /// Waits (up to 10 s) until every running agent has `name` programmed
    /// with `n` backends.
    fn wait_programmed(&self, name: &str, n: usize) {
        self.wait_backends(name, &[n; 2]);
    }

    /// Waits (up to 10 s) until each running agent `i` has `name`
    /// programmed with `n[i]` backends.
    fn wait_backends(&self, name: &str, n: &[usize; 2]) {
        for (i, agent) in self.agents.iter().enumerate() {
            let Some(agent) = agent else { continue };
            if let Err(e) = agent.wait_backends(name, n[i]) {
                panic!("{}: {e:#}{}", NODES[i], self.diag());
            }
        }
    }
}

/// A UDP server answering `"<tag> <peer ip> <payload>"`.
fn tagged_echo(ns: &Netns, bind: SocketAddr, tag: &str) -> ServerHandle {
    let t = tag.to_string();
    try_udp_server(ns, bind, tag, move |d, peer| {
        format!("{t} {} {}", peer.ip().to_canonical(), String::from_utf8_lossy(d)).into_bytes()
    })
    .unwrap_or_else(|e| panic!("UDP server {tag} on {bind}: {e:#}"))
}

fn service(name: &str, vip: Ipv4Addr, policy: &str) -> Value {
    lb_service(NS, name)
        .annotation("xlb.io/vip", &vip.to_string())
        .port("dns", PORT, "UDP")
        .external_traffic_policy(policy)
        .build()
}

/// EndpointSlice of `svc` with one ready endpoint per pod of `pods`.
fn slice(svc: &str, pods: &[usize]) -> Value {
    let mut b = endpoint_slice(NS, svc, svc).address_type("IPv4").port("dns", BACKEND_PORT, "UDP");
    for &i in pods {
        b = b.endpoint(endpoint(pod_addr(i)).node(NODES[i]).conditions(true, true, false));
    }
    b.build()
}

fn svc_name(name: &str) -> String {
    format!("{NS}/{name}:dns")
}

// ---------------------------------------------------------------------------
// Client flows

/// A reply: the pod that answered and the node that carried the request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    pod: String,
    node: Option<usize>,
}

fn parse_reply(text: &str) -> Option<(Answer, String)> {
    let w: Vec<&str> = text.split_whitespace().collect();
    let peer: IpAddr = w.get(1)?.parse().ok()?;
    Some((Answer { pod: w[0].to_string(), node: forwarded_by(peer) }, w[2..].join(" ")))
}

/// One request per flow (resent up to 3 times, 300 ms apart; at most 20 s
/// in all): client port → answer.
fn run_flows(flows: &[(u16, UdpSocket)], phase: &str) -> BTreeMap<u16, Answer> {
    let vip = SocketAddr::from((VIP, PORT));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = BTreeMap::new();
    let mut buf = [0u8; 512];
    for (port, sock) in flows {
        let payload = format!("{phase} {port}");
        'tries: for _ in 0..3 {
            if Instant::now() > deadline {
                break;
            }
            let _ = sock.send_to(payload.as_bytes(), vip);
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if from != vip {
                    continue;
                }
                if let Some((a, rest)) = parse_reply(&text) {
                    if rest == payload {
                        out.insert(*port, a);
                        break 'tries;
                    }
                }
            }
        }
    }
    out
}

fn spread(m: &BTreeMap<u16, Answer>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in m.values() {
        *out.entry(format!("{} via {:?}", a.pod, a.node.map(|n| NODES[n]))).or_insert(0) += 1;
    }
    out
}

/// A paced stream: request `seq` goes from flow `seq % flows.len()`, one
/// every [`STREAM_EVERY`], [`STREAM_COUNT`] in all; replies are recorded
/// by one reader per flow.
struct Stream {
    replies: Arc<Mutex<HashMap<u64, (Answer, Instant)>>>,
    sent: Arc<Mutex<Vec<Instant>>>,
    sender: Option<std::thread::JoinHandle<()>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Stream {
    fn start(flows: &[&UdpSocket]) -> Stream {
        let vip = SocketAddr::from((VIP, PORT));
        let replies = Arc::new(Mutex::new(HashMap::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for s in flows {
            let sock = s.try_clone().expect("clone the flow's socket");
            sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let (replies, stop) = (replies.clone(), stop.clone());
            readers.push(
                std::thread::Builder::new()
                    .name("stream-reader".into())
                    .spawn(move || {
                        let mut buf = [0u8; 512];
                        while !stop.load(Ordering::SeqCst) {
                            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                            let Some((a, rest)) = parse_reply(&text) else { continue };
                            let Some(seq) = rest.strip_prefix("stream ").and_then(|s| s.parse::<u64>().ok()) else {
                                continue;
                            };
                            if from == vip {
                                replies.lock().unwrap_or_else(PoisonError::into_inner).insert(seq, (a, Instant::now()));
                            }
                        }
                    })
                    .unwrap(),
            );
        }
        let socks: Vec<UdpSocket> = flows.iter().map(|s| s.try_clone().expect("clone the flow's socket")).collect();
        let t_sent = sent.clone();
        let sender = std::thread::Builder::new()
            .name("stream-sender".into())
            .spawn(move || {
                let t0 = Instant::now();
                for seq in 0..STREAM_COUNT {
                    let at = t0 + STREAM_EVERY * seq as u32;
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    let sock = &socks[seq as usize % socks.len()];
                    let _ = sock.send_to(format!("stream {seq}").as_bytes(), vip);
                    t_sent.lock().unwrap_or_else(PoisonError::into_inner).push(Instant::now());
                }
            })
            .unwrap();
        Stream { replies, sent, sender: Some(sender), readers, stop }
    }

    /// Waits for the sender to finish and the last replies (500 ms), then
    /// returns seq → (answer, arrival) and the send times.
    fn finish(mut self) -> (HashMap<u64, (Answer, Instant)>, Vec<Instant>) {
        if let Some(s) = self.sender.take() {
            let _ = s.join();
        }
        std::thread::sleep(Duration::from_millis(500));
        self.stop.store(true, Ordering::SeqCst);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let replies = self.replies.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (replies, sent)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.sender.take() {
            let _ = s.join();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("min {:?} median {:?} max {:?}", v[0], v[v.len() / 2], v[v.len() - 1])
}

// ---------------------------------------------------------------------------
// The tests

/// The shipped BIRD configuration, without an agent: routes written into
/// table 4242 with protocol 249 (as the agent does) reach the router, which
/// merges the two nodes' paths into one ECMP route; other routes of that
/// table are not announced; BIRD writes nothing into the nodes' tables; a
/// route removed from a node's table is withdrawn from the router at once.
#[test]
fn bird_config_announces_the_agents_table_with_ecmp_and_withdraws_at_once() {
    // Unedited, the shipped file is refused (its placeholders are obvious).
    let shipped = xlb_tests::bird::shipped_node_config();
    let out = std::process::Command::new("bird").arg("-p").arg("-c").arg(&shipped).output().expect("run bird -p");
    assert!(
        !out.status.success(),
        "BIRD accepts {} with its @...@ placeholders: {}",
        shipped.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let f = Fabric::start("bgpb");
    let table = XLB_TABLE.to_string();
    let proto = XLB_PROTO.to_string();
    let vip = VIP.to_string();
    for n in &f.nodes {
        ip(n, &["route", "add", &format!("{vip}/32"), "dev", "lo", "table", &table, "proto", &proto]);
        ip(n, &["-6", "route", "add", &format!("{VIP6}/128"), "dev", "lo", "table", &table, "proto", &proto]);
    }
    // Not the agent's: another protocol, and a prefix that is not a host route.
    ip(&f.nodes[0], &["route", "add", "192.0.2.99/32", "dev", "lo", "table", &table, "proto", "static"]);
    ip(&f.nodes[0], &["route", "add", "198.51.100.0/24", "dev", "lo", "table", &table, "proto", &proto]);
    let learned = f.wait_router(&vip, &[0, 1], Duration::from_secs(5));
    let learned6 = f.wait_router(VIP6, &[0, 1], Duration::from_secs(5));
    let route = f.router_route(&vip).unwrap();
    let gateways: BTreeSet<Option<IpAddr>> = route.nexthops.iter().map(|h| h.gateway).collect();
    assert_eq!(
        gateways,
        BTreeSet::from([Some(node_addr(0).into()), Some(node_addr(1).into())]),
        "the router's route to {vip}: next hops are the nodes' addresses: {route:?}"
    );
    assert_eq!(route.protocol, "bird", "{route:?}");
    eprintln!("bgp: routes added on both nodes: learned with two next hops after {learned:?} (IPv6 {learned6:?})");

    // Only the agent's host routes were announced.
    std::thread::sleep(Duration::from_millis(300));
    let router_routes = kernel_routes(&f.router, "-4", "main").unwrap();
    let dsts: Vec<&str> = router_routes.iter().filter(|r| r.protocol == "bird").map(|r| r.dst.as_str()).collect();
    assert_eq!(dsts, vec![vip.as_str()], "routes the router learned by BGP{}", f.diag());
    // BIRD wrote nothing into the nodes' tables.
    for (i, n) in f.nodes.iter().enumerate() {
        let main = kernel_routes(n, "-4", "main").unwrap();
        assert!(main.iter().all(|r| r.protocol != "bird"), "{}: BIRD wrote into main: {main:?}", NODES[i]);
        let ours = kernel_routes(n, "-4", &table).unwrap();
        assert!(ours.iter().all(|r| r.protocol != "bird"), "{}: BIRD wrote into {table}: {ours:?}", NODES[i]);
    }

    let mut withdrawn = Vec::new();
    let mut back = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        ip(&f.nodes[0], &["route", "del", &format!("{vip}/32"), "table", &table, "proto", &proto]);
        f.wait_router(&vip, &[1], Duration::from_secs(5));
        withdrawn.push(t0.elapsed());
        let t0 = Instant::now();
        ip(&f.nodes[0], &["route", "add", &format!("{vip}/32"), "dev", "lo", "table", &table, "proto", &proto]);
        f.wait_router(&vip, &[0, 1], Duration::from_secs(5));
        back.push(t0.elapsed());
    }
    let t0 = Instant::now();
    for n in &f.nodes {
        ip(n, &["route", "del", &format!("{vip}/32"), "table", &table, "proto", &proto]);
    }
    f.wait_router(&vip, &[], Duration::from_secs(5));
    let gone = t0.elapsed();
    eprintln!(
        "bgp: node 1's route removed -> router down to node 2: {}; added again -> two next hops: {}; \
         both removed -> no route: {gone:?}",
        summary(withdrawn.clone()),
        summary(back.clone()),
    );
    let mut all: Vec<Duration> = withdrawn.iter().chain(&back).chain([&gone]).copied().collect();
    all.sort();
    assert!(
        all.iter().all(|t| *t <= BGP_PROPAGATION_EACH) && all[all.len() / 2] <= BGP_PROPAGATION,
        "BGP propagation above {BGP_PROPAGATION_EACH:?} once or {BGP_PROPAGATION:?} in the median: \
         withdrawn {withdrawn:?}, announced {back:?}, gone {gone:?}"
    );
}

/// A `Cluster` Service with a pod behind each node: the router learns the
/// VIP from both nodes; 200 flows from the client use both nodes and every
/// flow keeps its backend; SIGTERM of node 1's agent during a paced stream
/// withdraws its route first: no request is lost, and every flow keeps its
/// backend through node 2.
#[test]
fn cluster_vip_ecmp_over_both_nodes_flows_keep_backends_and_sigterm_loses_nothing() {
    let mut f = Fabric::with_agents("bgpc");
    let vip = VIP.to_string();
    f.create(&service("dns", VIP, "Cluster"));
    f.create(&slice("dns", &[0, 1]));
    let learned = f.wait_router(&vip, &[0, 1], Duration::from_secs(10));
    f.wait_programmed(&svc_name("dns"), 2);
    for (i, name) in NODES.iter().enumerate() {
        let r = f.node_route(i, &vip).unwrap_or_else(|| panic!("{name}: no route in table {XLB_TABLE}"));
        assert_eq!(r.protocol, XLB_PROTO.to_string(), "{name}: {r:?}");
        assert_eq!(r.devs(), vec!["lo"], "{name}: {r:?}");
    }
    eprintln!(
        "bgp: Cluster VIP learned by the router with two next hops {learned:?} after the EndpointSlice was created"
    );

    // --- phase 1: 200 flows over both nodes --------------------------------
    let flows: Vec<(u16, UdpSocket)> = (FIRST_PORT..FIRST_PORT + FLOWS)
        .map(|p| {
            let bind = SocketAddr::from((CLIENT, p));
            let s = f.client.run(|| UdpSocket::bind(bind)).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            (p, s)
        })
        .collect();
    let first = run_flows(&flows, "one");
    eprintln!("bgp: phase 1: {} of {FLOWS} flows answered, spread {:?}", first.len(), spread(&first));
    let missing: Vec<u16> = flows.iter().map(|(p, _)| *p).filter(|p| !first.contains_key(p)).collect();
    assert!(missing.is_empty(), "phase 1: flows without a reply: {missing:?}{}", f.diag());
    assert!(first.values().all(|a| a.node.is_some()), "replies from an unknown node: {:?}", spread(&first));
    let via: Vec<BTreeSet<u16>> =
        (0..NODES.len()).map(|i| first.iter().filter(|(_, a)| a.node == Some(i)).map(|(p, _)| *p).collect()).collect();
    assert!(
        via.iter().all(|v| !v.is_empty()),
        "ECMP: both nodes should carry some of the {FLOWS} flows: {:?}{}",
        spread(&first),
        f.diag()
    );
    let pods: BTreeSet<&str> = first.values().map(|a| a.pod.as_str()).collect();
    assert_eq!(pods.len(), 2, "both backends should be used: {:?}", spread(&first));
    // The same flows again: same node, same backend.
    let again = run_flows(&flows, "two");
    let changed: Vec<_> = first.iter().filter(|(p, a)| again.get(p) != Some(a)).collect();
    assert!(changed.is_empty(), "flows that changed node or backend with both nodes up: {changed:?}");

    // --- SIGTERM of node 1's agent during a paced stream ------------------
    // Eight flows node 1 carries and eight node 2 carries; request `seq`
    // goes from `stream_ports[seq % 16]` (both in port order).
    let mut stream_ports: Vec<u16> = via[0].iter().take(8).chain(via[1].iter().take(8)).copied().collect();
    stream_ports.sort_unstable();
    let stream_socks: Vec<&UdpSocket> =
        flows.iter().filter(|(p, _)| stream_ports.contains(p)).map(|(_, s)| s).collect();
    let socket_port = |seq: u64| stream_ports[seq as usize % stream_ports.len()];
    let stream = Stream::start(&stream_socks);
    std::thread::sleep(Duration::from_secs(1));
    let mut agent1 = f.agents[0].take().expect("node 1's agent");
    let t_term = Instant::now();
    agent1.signal(libc::SIGTERM).expect("SIGTERM node 1's agent");
    let withdrawn = f.wait_router(&vip, &[1], Duration::from_secs(3));
    let status = agent1.wait_exit(Duration::from_secs(15)).expect("node 1's agent exits after SIGTERM");
    let exited = t_term.elapsed();
    let (replies, sent) = stream.finish();
    assert!(status.success(), "node 1's agent after SIGTERM: {status:?}\n{}", agent1.log());
    assert_eq!(f.node_route(0, &vip), None, "node 1's table after its agent stopped{}", f.diag());

    let lost: Vec<u64> = (0..sent.len() as u64).filter(|s| !replies.contains_key(s)).collect();
    let moved_after: Vec<u64> = replies
        .iter()
        .filter(|(s, (a, at))| *at > t_term + withdrawn && via[0].contains(&socket_port(**s)) && a.node == Some(1))
        .map(|(s, _)| *s)
        .collect();
    let before_on_1 = replies.iter().filter(|(_, (a, at))| *at < t_term && a.node == Some(0)).count();
    let wrong_backend: Vec<String> = replies
        .iter()
        .filter(|(s, (a, _))| first.get(&socket_port(**s)).is_some_and(|f| f.pod != a.pod))
        .map(|(s, (a, _))| format!("seq {s} port {}: {} then {}", socket_port(*s), first[&socket_port(*s)].pod, a.pod))
        .collect();
    eprintln!(
        "bgp: SIGTERM of node 1's agent: router down to node 2 after {withdrawn:?}, agent exited after {exited:?}; \
         stream: {} sent, {} answered, {} lost {lost:?} ({before_on_1} answered through node 1 before the signal, \
         {} requests of node 1's flows answered through node 2 after the withdrawal)",
        sent.len(),
        replies.len(),
        lost.len(),
        moved_after.len()
    );
    assert_eq!(sent.len() as u64, STREAM_COUNT, "the stream sent everything");
    assert!(before_on_1 > 0, "no stream request went through node 1 before the signal{}", f.diag());
    assert!(!moved_after.is_empty(), "node 1's flows were not carried by node 2 after the withdrawal{}", f.diag());
    assert!(wrong_backend.is_empty(), "stream requests that reached another backend: {wrong_backend:?}");
    assert!(lost.is_empty(), "{} stream requests lost during node 1's SIGTERM: {lost:?}{}", lost.len(), f.diag());
    assert!(withdrawn < exited, "the route was withdrawn ({withdrawn:?}) before the agent exited ({exited:?})");

    // --- phase 3: every flow through node 2, same backend -------------------
    let third = run_flows(&flows, "three");
    eprintln!(
        "bgp: after node 1's agent stopped: {} of {FLOWS} flows answered, spread {:?}",
        third.len(),
        spread(&third)
    );
    let missing: Vec<u16> = flows.iter().map(|(p, _)| *p).filter(|p| !third.contains_key(p)).collect();
    assert!(missing.is_empty(), "after the SIGTERM: flows without a reply: {missing:?}{}", f.diag());
    assert!(
        third.values().all(|a| a.node == Some(1)),
        "after the SIGTERM every flow goes through node 2: {:?}",
        spread(&third)
    );
    let moved: Vec<String> = first
        .iter()
        .filter(|(p, a)| third[*p].pod != a.pod)
        .map(|(p, a)| format!("port {p}: {} via {:?} then {}", a.pod, a.node, third[p].pod))
        .collect();
    assert!(
        moved.is_empty(),
        "{} of {FLOWS} flows changed backend when node 2 took them over (same seed, same backends): {moved:?}",
        moved.len()
    );
    drop(flows);
}

/// `externalTrafficPolicy: Local` with an endpoint only behind node 2: the
/// router learns the VIP from node 2 only (and keeps it so), node 1's table
/// never has it, and traffic reaches node 2's pod with the client's address.
#[test]
fn local_vip_with_endpoints_only_behind_node_2_is_learned_from_node_2_only() {
    let f = Fabric::with_agents("bgpl");
    let vip = VIP_LOCAL.to_string();
    f.create(&service("local", VIP_LOCAL, "Local"));
    f.create(&slice("local", &[1]));
    let learned = f.wait_router(&vip, &[1], Duration::from_secs(10));
    // Node 1 has the service programmed, without a local backend.
    f.wait_backends(&svc_name("local"), &[0, 1]);
    let t0 = Instant::now();
    let mut polls = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        let devs = f.router_devs(&vip);
        assert_eq!(devs, vec![router_dev(1)], "Local: the router's route to {vip}{}", f.diag());
        assert_eq!(f.node_route(0, &vip), None, "Local: node 1 has no local endpoint{}", f.diag());
        polls += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = f.node_route(1, &vip).expect("node 2's route");
    assert_eq!(r.protocol, XLB_PROTO.to_string(), "{r:?}");
    let (text, from) =
        xlb_tests::udp_request(&f.client, None, SocketAddr::from((VIP_LOCAL, PORT)), b"hello", Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("request to {vip}: {e:#}{}", f.diag()));
    assert_eq!(from, SocketAddr::from((VIP_LOCAL, PORT)));
    assert_eq!(text, format!("pod2 {CLIENT} hello"), "Local: node 2's pod, the client's address kept");
    eprintln!("bgp: Local VIP learned from node 2 only after {learned:?}; checked {polls} times over 2 s");
}

/// Removing a `Cluster` Service's endpoints: while one is left (behind
/// either node) both nodes announce; removing the last withdraws the route
/// from both, within 1 s (+ BGP propagation) as the router's table shows;
/// measured over several runs.
#[test]
fn removing_the_last_endpoint_withdraws_the_route_within_1s() {
    let f = Fabric::with_agents("bgpw");
    let vip = VIP.to_string();
    f.create(&service("dns", VIP, "Cluster"));
    f.create(&slice("dns", &[0, 1]));
    f.wait_router(&vip, &[0, 1], Duration::from_secs(10));
    // Cluster: one endpoint anywhere keeps both nodes announcing.
    f.set_endpoints("dns", &[1]);
    f.wait_programmed(&svc_name("dns"), 1);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            f.router_devs(&vip),
            vec![router_dev(0), router_dev(1)],
            "Cluster with one endpoint (behind node 2): both nodes announce{}",
            f.diag()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut withdrawn = Vec::new();
    let mut announced = Vec::new();
    for run in 0..3 {
        if run > 0 {
            let t0 = Instant::now();
            f.set_endpoints("dns", &[run % 2]);
            f.wait_router(&vip, &[0, 1], Duration::from_secs(5));
            announced.push(t0.elapsed());
        }
        let t0 = Instant::now();
        f.set_endpoints("dns", &[]);
        f.wait_router(&vip, &[], WITHDRAW + BGP_PROPAGATION + Duration::from_secs(3));
        // From before the API call: the agent's watch delay is included.
        withdrawn.push(t0.elapsed());
        for (i, name) in NODES.iter().enumerate() {
            assert_eq!(f.node_route(i, &vip), None, "{name}'s table after the last endpoint went{}", f.diag());
        }
    }
    eprintln!(
        "bgp: last endpoint removed -> route gone from the router: {} ({withdrawn:?}); endpoint back -> two next hops: {}",
        summary(withdrawn.clone()),
        if announced.is_empty() { "-".into() } else { summary(announced.clone()) }
    );
    assert!(
        withdrawn.iter().all(|t| *t <= WITHDRAW + BGP_PROPAGATION),
        "the route should leave the router's table within {WITHDRAW:?} + {BGP_PROPAGATION:?} of the last \
         endpoint's removal: {withdrawn:?}"
    );
}

/// The YAML file of the YAML-mode test: the service on [`VIP_YAML`] with
/// both pods, of weight `weight`.
fn yaml_config(weight: u16) -> String {
    format!(
        "services:\n  - name: dns\n    vip: \"{VIP_YAML}\"\n    port: {PORT}\n    protocol: udp\n    backends:\n\
         \x20     - {{address: \"{}:{BACKEND_PORT}\", weight: {weight}}}\n\
         \x20     - {{address: \"{}:{BACKEND_PORT}\", weight: {weight}}}\n",
        pod_addr(0),
        pod_addr(1)
    )
}

/// YAML mode: every node announces the VIP while its service has a backend
/// of non-zero weight; the file changed to weight 0 everywhere withdraws
/// it from the router within 1 s (+ BGP propagation); weights back
/// announce it again.
#[test]
fn yaml_mode_vip_is_announced_while_a_backend_has_weight() {
    let mut f = Fabric::start("bgpy");
    let path = f.net.write_config(&yaml_config(1));
    let vip = VIP_YAML.to_string();
    f.pins = NODES.iter().map(|_| PinDir::new().expect("pin dir")).collect();
    for (i, name) in NODES.iter().enumerate() {
        let mut a = f.net.spawn_agent(
            &f.nodes[i],
            f.pins[i].path(),
            &["ext", "p0"],
            &["--announce", "bgp", "--maglev-seed", SEED, "--log-level", "debug"],
        );
        a.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", a.log()));
        f.agents[i] = Some(a);
    }
    let learned = f.wait_router(&vip, &[0, 1], Duration::from_secs(10));
    let (text, _) =
        xlb_tests::udp_request(&f.client, None, SocketAddr::from((VIP_YAML, PORT)), b"hello", Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("request to {vip}: {e:#}{}", f.diag()));
    assert!(text.starts_with("pod") && text.ends_with(" hello"), "{text}");

    // Replaced atomically, as an editor or a ConfigMap update does.
    let write = |yaml: &str| {
        let tmp = path.with_extension("yaml.new");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let t0 = Instant::now();
    write(&yaml_config(0));
    f.wait_router(&vip, &[], WITHDRAW + BGP_PROPAGATION + Duration::from_secs(3));
    let withdrawn = t0.elapsed();
    for (i, name) in NODES.iter().enumerate() {
        assert_eq!(f.node_route(i, &vip), None, "{name}: weight 0 everywhere{}", f.diag());
    }
    let t0 = Instant::now();
    write(&yaml_config(1));
    f.wait_router(&vip, &[0, 1], Duration::from_secs(5));
    let back = t0.elapsed();
    eprintln!(
        "bgp: YAML mode: learned with two next hops {learned:?} after the agents were healthy; \
         weights 0 -> route gone from the router after {withdrawn:?}; weights 1 -> back after {back:?}"
    );
    assert!(
        withdrawn <= WITHDRAW + BGP_PROPAGATION,
        "YAML mode: the route should leave the router's table within {WITHDRAW:?} + {BGP_PROPAGATION:?} of \
         the file's change: {withdrawn:?}"
    );
}
