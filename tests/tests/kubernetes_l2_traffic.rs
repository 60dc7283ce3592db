//! Kubernetes mode, L2 announcement, end to end: two nodes running
//! `xlb agent --kubernetes --announce l2` against the fake API server, and
//! a client, on one L2 segment; a pod behind each node; the VIPs are in the
//! client's subnet and the client has no route for them, so it reaches them
//! only through the ARP/NDP answers and gratuitous announcements of the
//! node that holds the VIP's Lease (`xlb-l2-<VIP>`).
//!
//! ```text
//!              [sw] br0 10.210.0.1 fd00:210::1 (bridge, xlb-fake-apiserver)
//!             /        |          \
//!  [client] eth0   [n1] eth0       [n2] eth0 10.210.0.1{1,2}, fd00:210::1{1,2}
//!  10.210.0.100          p0 10.1.0.1     p0 10.1.1.1 (fd00:1:<i>::1)
//!  fd00:210::100         |               |
//!                     [pod1] 10.1.0.2   [pod2] 10.1.1.2 (fd00:1:<i>::2)
//!
//!  VIPs 10.210.0.50 and fd00:210::50: on the client's link, on no interface.
//! ```
//!
//! Each node routes the other's pod subnet through it; the agents attach
//! to `eth0` and `p0` and announce on `eth0`. The pods answer each datagram
//! with `"<pod> <peer address> <payload>"`; with `Cluster` (`source: snat`)
//! the peer is the address of the node that forwarded it, so a reply tells
//! which node carried the request.
//!
//! What is asserted, per the issue: exactly one node answers ARP (and NS)
//! for a VIP, asked from a prober identity on the segment (so the client's
//! own neighbour table is untouched by the asking); traffic flows; SIGTERM
//! of the announcer moves the answers and a UDP stream (one request every
//! 50 ms, from one socket) to the other node within 3 s, and the client's
//! existing neighbour entry for the VIP moves to the other node's MAC
//! without the client asking (it heard the gratuitous ARP / unsolicited
//! NA); a dead node is replaced within 10 s; with `externalTrafficPolicy:
//! Local` and endpoints only behind node 2, only node 2 ever answers; IPv6
//! the same with NDP.
//!
//! **What "a node dies" means here**: kill -9 of its agent and its `eth0`
//! taken down (`ip link set eth0 down` in the node's namespace) right after.
//! kill -9 alone is not a dead node: the killed agent's XDP program stays
//! attached with its pinned maps, so the node goes on answering ARP for the
//! VIP (its `XLB_ANNOUNCE` is never emptied) and forwarding, as a node whose
//! agent crashed does; a node that dies also leaves the segment.
//!
//! The client's neighbour entries are kept `REACHABLE` for an hour
//! (`base_reachable_time_ms`), so it never re-resolves the VIP by itself
//! during a failover: its entry can only move because it heard an
//! announcement; a capture on its interface checks that it sent no ARP
//! request / NS for the VIP meanwhile.
//!
//! Failover is measured on the traffic: the time from the signal to the
//! first reply to the stream carried by the new announcer (and the longest
//! time without any reply, the requests lost, and the time until the
//! client's entry moved), 5 runs each of graceful (SIGTERM) and crash
//! (kill -9 + link down), printed as min/median/max.
//!
//! After a graceful stop the stream may come back sooner than the
//! announcement: the old node's kernel (forwarding on, the VIP on-link)
//! sends what still reaches it on to the VIP's new announcer. After a
//! crash it must not: the bridge, its port down, forgets the dead node's
//! MAC and floods the client's frames for it to every port, and the other
//! node's data path leaves a VIP packet addressed to another host's MAC
//! on an announce interface to the kernel (`pass_other_host`), which drops
//! it; so the stream resumes only once the new holder announces the VIP,
//! after the dead holder's Lease expired. With a switch that floods
//! everything (learning off), two healthy nodes never both balance a
//! packet: no pod receives a datagram twice.
//!
//! Needs root; run with `--test-threads=1`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etherparse::ArpOperation;
use serde_json::Value;
use xlb_tests::k8s::{
    endpoint, endpoint_slice, endpointslice_path, endpointslices_path, lb_service, leases_path, services_path,
};
use xlb_tests::l2::{arp_of, mac_of, neighbour, neighbour_advert, neighbour_solicitation_of, Capture};
use xlb_tests::l2cluster::{node4, L2Cluster, L2Segment, LEASE_NS, NODES};
use xlb_tests::netbuild::{agents_diag, ip, ip_out, link, stats, sysctl, wait_carrier};
use xlb_tests::{try_udp_server, Agent, Netns, ServerHandle};

const NS: &str = "apps";
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 50);
const LEASE4: &str = "xlb-l2-10-210-0-50";
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x210, 0, 0, 0, 0, 0, 0x50);
const LEASE6: &str = "xlb-l2-fd00-210--50";
const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x210, 0, 0, 0, 0, 0, 0x100);
/// An identity on the segment that no namespace owns: ARP requests and
/// solicitations asked from it leave every neighbour table alone.
const PROBER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x99];
const PROBER4: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 199);
const PROBER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x210, 0, 0, 0, 0, 0, 0x199);
const PORT: u16 = 53;
const BACKEND_PORT: u16 = 5353;
/// The contract's bounds.
const GRACEFUL: Duration = Duration::from_secs(3);
const CRASH: Duration = Duration::from_secs(10);
/// How long ARP/NDP answers are collected after one question.
const ANSWER_WINDOW: Duration = Duration::from_secs(1);
/// The stream: one request this often, at most this many.
const STREAM_EVERY: Duration = Duration::from_millis(50);
const STREAM_MAX: u64 = 2400;

fn node6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x210, 0, 0, 0, 0, 0, 0x11 + i as u16)
}

fn pod4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, i as u8, 2)
}

fn pod6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, i as u16, 0, 0, 0, 0, 2)
}

/// The node that forwarded a request the pod saw from `peer` (`Cluster`:
/// the node's source towards the pod, its `eth0` address for the other
/// node's pod, its `p0` address for its own).
fn forwarded_by(peer: IpAddr) -> Option<usize> {
    (0..NODES.len()).find(|&i| {
        let own: [IpAddr; 4] = [
            node4(i).into(),
            node6(i).into(),
            Ipv4Addr::new(10, 1, i as u8, 1).into(),
            Ipv6Addr::new(0xfd00, 1, i as u16, 0, 0, 0, 0, 1).into(),
        ];
        own.contains(&peer)
    })
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

// ---------------------------------------------------------------------------
// The segment

struct Segment {
    client: Netns,
    /// Each node's `eth0` MAC.
    macs: [[u8; 6]; 2],
    client_mac: [u8; 6],
    _servers: Vec<ServerHandle>,
    /// The nodes, the bridge, the API server and the agents.
    c: L2Cluster,
}

impl Deref for Segment {
    type Target = L2Cluster;
    fn deref(&self) -> &L2Cluster {
        &self.c
    }
}

impl DerefMut for Segment {
    fn deref_mut(&mut self) -> &mut L2Cluster {
        &mut self.c
    }
}

impl Segment {
    /// The segment, the pods with their servers, the API server with both
    /// Node objects, both agents healthy.
    fn start(tag: &str) -> Segment {
        Self::start_opts(tag, false)
    }

    /// As [`Segment::start`], with the Gateway API's CRDs installed before
    /// the agents start.
    fn start_gateway(tag: &str) -> Segment {
        Self::start_opts(tag, true)
    }

    fn start_opts(tag: &str, gateway_api: bool) -> Segment {
        let mut seg = L2Segment::new(tag, true);
        seg.gateway_api = gateway_api;
        let sw = seg.sw.clone();
        // No multicast snooping: solicitations reach every port, as on a
        // switch without MLD snooping.
        ip(&sw, &["link", "set", "br0", "type", "bridge", "mcast_snooping", "0"]);
        ip(&sw, &["addr", "add", "fd00:210::1/64", "dev", "br0"]);
        let mut servers = Vec::new();
        for (i, n) in seg.nodes.clone().iter().enumerate() {
            sysctl(n, "net/ipv6/conf/all/forwarding", "1");
            // The address survives the link going down (a dead node's revival).
            sysctl(n, "net/ipv6/conf/eth0/keep_addr_on_down", "1");
            ip(n, &["addr", "add", &format!("{}/64", node6(i)), "dev", "eth0"]);
            let pod = seg.net.add(&format!("pod{}", i + 1), false);
            link(n, "p0", Some(&format!("10.1.{i}.1/24")), &pod, "eth0", Some(&format!("{}/24", pod4(i))));
            ip(n, &["addr", "add", &format!("fd00:1:{i}::1/64"), "dev", "p0"]);
            ip(&pod, &["addr", "add", &format!("{}/64", pod6(i)), "dev", "eth0"]);
            ip(&pod, &["route", "add", "default", "via", &format!("10.1.{i}.1")]);
            ip(&pod, &["-6", "route", "add", "default", "via", &format!("fd00:1:{i}::1")]);
            let tag = format!("pod{}", i + 1);
            for addr in [IpAddr::from(pod4(i)), pod6(i).into()] {
                servers.push(tagged_echo(&pod, SocketAddr::new(addr, BACKEND_PORT), &tag));
            }
        }
        let client = seg.net.add("client", false);
        link(&client, "eth0", Some(&format!("{CLIENT4}/24")), &sw, "vc", None);
        ip(&client, &["addr", "add", &format!("{CLIENT6}/64"), "dev", "eth0"]);
        ip(&sw, &["link", "set", "vc", "master", "br0"]);
        for fam in ["ipv4", "ipv6"] {
            sysctl(&client, &format!("net/{fam}/neigh/eth0/base_reachable_time_ms"), "3600000");
        }
        for ns in seg.nodes.iter().chain([&client, &sw]) {
            wait_carrier(ns);
        }
        for (i, n) in seg.nodes.iter().enumerate() {
            pod_routes(n, i);
        }
        let macs = [mac_of(&seg.nodes[0], "eth0"), mac_of(&seg.nodes[1], "eth0")];
        let client_mac = mac_of(&client, "eth0");
        let c = seg.start(&[
            "--interface",
            "eth0",
            "--interface",
            "p0",
            "--announce",
            "l2",
            "--announce-interface",
            "eth0",
        ]);
        Segment { client, macs, client_mac, _servers: servers, c }
    }

    /// The running agents' counters and log tails, the client's neighbours.
    fn diag(&self) -> String {
        let named: Vec<(&str, &Agent)> =
            self.agents.iter().enumerate().filter_map(|(i, a)| Some((NODES[i], a.as_ref()?))).collect();
        format!(
            "{}\n--- client neighbours ---\n{}--- bridge fdb ---\n{}",
            agents_diag(&named),
            ip_out(&self.client, &["neigh", "show", "dev", "eth0"]),
            xlb_tests::run_cmd("bridge", &["-n", &self.sw.name, "fdb", "show", "br", "br0"])
                .map_or_else(|e| format!("{e:#}"), |o| String::from_utf8_lossy(&o.stdout).into_owned()),
        )
    }

    /// The node whose `eth0` has this MAC.
    fn node_of(&self, mac: [u8; 6]) -> String {
        self.macs
            .iter()
            .position(|m| *m == mac)
            .map_or_else(|| format!("unknown {}", mac_str(mac)), |i| NODES[i].into())
    }

    fn names(&self, macs: &[[u8; 6]]) -> Vec<String> {
        macs.iter().map(|m| self.node_of(*m)).collect()
    }

    /// Polls (every 10 ms, up to `limit`) until `pred` holds for the holder.
    fn wait_holder(&self, lease: &str, limit: Duration, pred: impl Fn(Option<&str>) -> bool) -> Option<String> {
        self.c.wait_holder(lease, limit, pred, || self.diag()).0
    }

    /// The node index holding `lease` (waits up to 10 s for one).
    fn holder_index(&self, lease: &str) -> usize {
        let h = self.wait_holder(lease, CRASH, |h| h.is_some()).unwrap();
        L2Cluster::index(&h)
    }

    /// Replaces the EndpointSlice `dns` (IPv4): the pods of `nodes` ready.
    fn set_pods_ready(&self, nodes: &[usize]) {
        let eps: Vec<(usize, usize)> = nodes.iter().map(|&n| (n, n)).collect();
        let mut obj = slice("dns", false, &eps);
        let path = endpointslice_path(NS, "dns");
        let old = self.kc.get(&path).expect("the EndpointSlice");
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        self.kc.replace(&path, &obj).expect("replace the EndpointSlice");
    }

    fn create(&self, obj: &Value) {
        let path = if obj["kind"] == "Service" { services_path(Some(NS)) } else { endpointslices_path(Some(NS)) };
        self.kc.create(&path, obj).expect("create");
    }

    /// Waits (up to 10 s) until every running agent has service `name`
    /// programmed with `n` backends.
    fn wait_programmed(&self, name: &str, n: usize) {
        for i in 0..NODES.len() {
            if self.agents[i].is_some() {
                self.wait_backends(i, name, n);
            }
        }
    }

    /// Waits (up to 10 s) until agent `i` has service `name` programmed
    /// with `n` backends.
    fn wait_backends(&self, i: usize, name: &str, n: usize) {
        if let Err(e) = self.agent(i).wait_backends(name, n) {
            panic!("{}: {e:#}{}", NODES[i], self.diag());
        }
    }

    /// The MACs answering one ARP request / NS for `vip` from the prober,
    /// collected for [`ANSWER_WINDOW`].
    fn answers(&self, vip: IpAddr) -> Vec<[u8; 6]> {
        let cap = Capture::open(&self.client, "eth0");
        match vip {
            IpAddr::V4(v) => cap.arp_answers(PROBER_MAC, PROBER4, v, ANSWER_WINDOW),
            IpAddr::V6(v) => cap.ns_answers(PROBER_MAC, PROBER6, v, ANSWER_WINDOW),
        }
    }

    /// Waits (up to [`CRASH`]) until node `i`'s `xlb status -o json` lists
    /// `vip` in `announced_vips` (read from its pinned announce map): the
    /// Lease names its holder before that agent has learnt it and written
    /// the map, and a question asked in between has no answer.
    fn wait_announcing(&self, i: usize, vip: IpAddr) {
        let want = vip.to_string();
        let deadline = Instant::now() + CRASH;
        loop {
            let out = self.agent(i).cli(&["status", "-o", "json"]);
            let st: Value = out.as_ref().map_or(Value::Null, |o| serde_json::from_slice(&o.stdout).unwrap_or_default());
            if st["announced_vips"].as_array().is_some_and(|a| a.iter().any(|v| *v == want.as_str())) {
                return;
            }
            assert!(Instant::now() < deadline, "{} never listed {vip} as announced: {st}{}", NODES[i], self.diag());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that exactly node `i` answers for `vip`, once node `i` has
    /// the VIP in its announce map (see [`Segment::wait_announcing`]).
    fn assert_only_answers(&self, i: usize, vip: IpAddr, when: &str) {
        self.wait_announcing(i, vip);
        let got = self.answers(vip);
        assert_eq!(self.names(&got), vec![NODES[i].to_string()], "{when}: who answers for {vip}{}", self.diag());
    }

    /// Node `i`'s counter `name` (`xlb stats`).
    fn stat(&self, i: usize, name: &str) -> u64 {
        let m = stats(self.agent(i)).unwrap_or_else(|e| panic!("{e}"));
        *m.get(name).unwrap_or_else(|| panic!("no counter {name} in {m:?}"))
    }

    /// The client's neighbour entry for `vip`.
    fn client_neighbour(&self, vip: IpAddr) -> Option<([u8; 6], String)> {
        neighbour(&self.client, "eth0", vip)
    }

    /// Waits (up to 8 s) until the client's entry for `vip` is REACHABLE at
    /// node `i`'s MAC (after a move it is STALE until the client's kernel
    /// has confirmed it with its unicast probe, 5 s after its first use).
    fn wait_client_reachable(&self, vip: IpAddr, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let n = self.client_neighbour(vip);
            if n.as_ref().is_some_and(|(m, s)| *m == self.macs[i] && s.contains("REACHABLE")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "client's entry for {vip}: {n:?}, not REACHABLE at {}{}",
                NODES[i],
                self.diag()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `n` new flows (one socket each) from the client to [`VIP4`]:[`PORT`],
    /// which it resolves itself, are all answered, by both pods, through
    /// node `h` (the announcer), and the client's neighbour entry for the
    /// VIP is node `h`'s MAC.
    fn assert_served_through(&self, h: usize, n: usize) {
        let to = SocketAddr::new(VIP4.into(), PORT);
        let mut pods = BTreeSet::new();
        for i in 0..n {
            let (text, from) =
                xlb_tests::udp_request(&self.client, None, to, format!("seq {i}").as_bytes(), Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("request {i} to {to}: {e:#}{}", self.diag()));
            assert_eq!(from, to, "{text}");
            let w: Vec<&str> = text.split_whitespace().collect();
            let via = w.get(1).and_then(|p| p.parse().ok()).and_then(forwarded_by);
            assert_eq!(via, Some(h), "forwarded by the announcer: {text}");
            pods.insert(w[0].to_string());
        }
        assert_eq!(pods, BTreeSet::from(["pod1".to_string(), "pod2".to_string()]), "both pods reached");
        assert_eq!(self.client_neighbour(VIP4.into()).map(|n| n.0), Some(self.macs[h]), "the client resolved {to}");
    }

    /// Takes node `i` off the segment (its `eth0` down).
    fn unplug(&self, i: usize) {
        ip(&self.nodes[i], &["link", "set", "eth0", "down"]);
    }

    /// Puts node `i` back (link up, its routes again) and starts its agent.
    fn revive(&mut self, i: usize) {
        ip(&self.nodes[i], &["link", "set", "eth0", "up"]);
        wait_carrier(&self.nodes[i]);
        wait_carrier(&self.sw);
        pod_routes(&self.nodes[i], i);
        self.spawn(i);
    }
}

/// Node `i`'s routes to the other node's pods, through it.
fn pod_routes(n: &Netns, i: usize) {
    let j = 1 - i;
    ip(n, &["route", "replace", &format!("10.1.{j}.0/24"), "via", &node4(j).to_string()]);
    ip(n, &["-6", "route", "replace", &format!("fd00:1:{j}::/64"), "via", &node6(j).to_string()]);
}

/// A UDP server answering `"<tag> <peer ip> <payload>"`.
fn tagged_echo(ns: &Netns, bind: SocketAddr, tag: &str) -> ServerHandle {
    let t = tag.to_string();
    try_udp_server(ns, bind, tag, move |d, peer| {
        format!("{t} {} {}", peer.ip().to_canonical(), String::from_utf8_lossy(d)).into_bytes()
    })
    .unwrap_or_else(|e| panic!("UDP server {tag} on {bind}: {e:#}"))
}

fn service(name: &str, vip: IpAddr, policy: &str) -> Value {
    lb_service(NS, name)
        .annotation("xlb.io/vip", &vip.to_string())
        .port("dns", PORT, "UDP")
        .external_traffic_policy(policy)
        .build()
}

/// EndpointSlice of `svc` with one ready endpoint per `(pod index, node index)`.
fn slice(svc: &str, v6: bool, eps: &[(usize, usize)]) -> Value {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let mut b = endpoint_slice(NS, svc, svc).address_type(family).port("dns", BACKEND_PORT, "UDP");
    for (pod, n) in eps {
        let addr: IpAddr = if v6 { pod6(*pod).into() } else { pod4(*pod).into() };
        b = b.endpoint(endpoint(addr).node(NODES[*n]).conditions(true, true, false));
    }
    b.build()
}

// ---------------------------------------------------------------------------
// The client's UDP stream

/// One reply of the stream.
#[derive(Clone, Debug)]
struct Reply {
    seq: u64,
    got: Instant,
    /// The source the pod saw: the forwarding node (Cluster) or the client (Local).
    peer: IpAddr,
}

/// Requests `"seq N"` every [`STREAM_EVERY`] from one client socket to a
/// VIP (one flow), at most [`STREAM_MAX`]; the replies are recorded as
/// they arrive.
struct Stream {
    stop: Arc<AtomicBool>,
    replies: Arc<Mutex<Vec<Reply>>>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    fn start(client: &Netns, to: SocketAddr) -> Stream {
        let any: SocketAddr = if to.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
        let sock = client.run(|| UdpSocket::bind(any)).expect("bind the stream's socket");
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let (t_stop, t_replies) = (stop.clone(), replies.clone());
        let thread = std::thread::Builder::new()
            .name("udp-stream".into())
            .spawn(move || {
                let mut buf = [0u8; 512];
                for seq in 0..STREAM_MAX {
                    if t_stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let next = Instant::now() + STREAM_EVERY;
                    // Unreachable for a while (no neighbour): a send error is no reply.
                    let _ = sock.send_to(format!("seq {seq}").as_bytes(), to);
                    loop {
                        let left = next.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        sock.set_read_timeout(Some(left)).expect("read timeout");
                        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let w: Vec<&str> = text.split_whitespace().collect();
                        if from != to || w.len() != 4 || w[2] != "seq" {
                            continue;
                        }
                        let (Ok(peer), Ok(seq)) = (w[1].parse(), w[3].parse()) else { continue };
                        let r = Reply { seq, got: Instant::now(), peer };
                        t_replies.lock().unwrap_or_else(PoisonError::into_inner).push(r);
                    }
                }
            })
            .expect("stream thread");
        Stream { stop, replies, thread: Some(thread) }
    }

    fn replies(&self) -> Vec<Reply> {
        self.replies.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits (up to `limit` after `since`) for a reply arriving after
    /// `since` that node `via` forwarded; returns it.
    fn wait_reply(&self, since: Instant, via: usize, limit: Duration) -> Option<Reply> {
        loop {
            if let Some(r) = self.replies().into_iter().find(|r| r.got > since && forwarded_by(r.peer) == Some(via)) {
                return Some(r);
            }
            if since.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The longest time without a reply between the last reply before
    /// `since` and `until`.
    fn longest_gap(&self, since: Instant, until: Instant) -> Duration {
        let r = self.replies();
        let mut last = r.iter().rev().find(|r| r.got <= since).map_or(since, |r| r.got);
        let mut gap = Duration::ZERO;
        for x in r.iter().filter(|r| r.got > since && r.got <= until) {
            gap = gap.max(x.got - last);
            last = x.got;
        }
        gap
    }

    /// Requests without a reply between the last one answered before
    /// `since` and `reply`.
    fn lost_before(&self, since: Instant, reply: &Reply) -> u64 {
        let r = self.replies();
        let last = r.iter().filter(|r| r.got <= since).map(|r| r.seq).max();
        last.map_or(0, |l| reply.seq.saturating_sub(l + 1))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// What the client's interface sees about a VIP

#[derive(Clone, Debug, PartialEq)]
enum Seen {
    /// The client asked for the VIP (ARP request / NS from its MAC).
    Asked,
    /// A gratuitous ARP / unsolicited NA for the VIP from this MAC.
    Announced([u8; 6]),
    /// An ARP reply / solicited NA for the VIP from this MAC.
    Answered([u8; 6]),
}

fn classify(f: &[u8], vip: IpAddr, client_mac: [u8; 6]) -> Option<Seen> {
    match vip {
        IpAddr::V4(v) => {
            let (op, sha, spa, tpa) = arp_of(f)?;
            let v = v.octets();
            if op == ArpOperation::REQUEST && spa == v && tpa == v {
                Some(Seen::Announced(sha))
            } else if op == ArpOperation::REQUEST && tpa == v && sha == client_mac {
                Some(Seen::Asked)
            } else if op == ArpOperation::REPLY && spa == v {
                Some(Seen::Answered(sha))
            } else {
                None
            }
        }
        IpAddr::V6(v) => {
            if let Some((src, _, _, solicited, target)) = neighbour_advert(f) {
                return (target == v.octets()).then_some(if solicited {
                    Seen::Answered(src)
                } else {
                    Seen::Announced(src)
                });
            }
            let (src, target) = neighbour_solicitation_of(f)?;
            (target == v.octets() && src == client_mac).then_some(Seen::Asked)
        }
    }
}

/// Records, with their arrival time, the ARP/NDP frames about a VIP on the
/// client's interface, until dropped (bounded by its 100 ms reads).
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, Seen)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(s: &Segment, vip: IpAddr) -> Watcher {
        let cap = Capture::open(&s.client, "eth0");
        let client_mac = s.client_mac;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (t_stop, t_seen) = (stop.clone(), seen.clone());
        let thread = std::thread::Builder::new()
            .name("l2-watcher".into())
            .spawn(move || {
                while !t_stop.load(Ordering::SeqCst) {
                    if let Some(e) = cap.recv().and_then(|f| classify(&f, vip, client_mac)) {
                        t_seen.lock().unwrap_or_else(PoisonError::into_inner).push((Instant::now(), e));
                    }
                }
            })
            .expect("watcher thread");
        Watcher { stop, seen, thread: Some(thread) }
    }

    fn seen(&self) -> Vec<(Instant, Seen)> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Failover

/// How the announcer goes away.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// SIGTERM: it releases its Leases, then stops answering.
    Graceful,
    /// kill -9 and its link down: a node that dies.
    Crash,
}

/// One failover measured on the traffic.
struct Failover {
    /// From the signal to the first reply carried by the new announcer.
    resumed: Duration,
    /// The longest time without any reply around it.
    gap: Duration,
    /// From the signal to the client's entry for the VIP at the new MAC.
    moved: Duration,
    /// Requests of the stream lost meanwhile.
    lost: u64,
    /// From the signal to the first announcement of the VIP by the new
    /// holder heard on the client's link.
    announced: Duration,
    /// Flooded VIP packets the new holder left to the kernel meanwhile
    /// (`pass_other_host`).
    flooded: u64,
}

/// Streams to `vip`, stops its announcer as `how` says, and asserts: the
/// stream resumes through the other node within the bound, the other node
/// holds the Lease and alone answers, and the client's existing entry for
/// the VIP moved to the other node's MAC because it heard an announcement,
/// not because it asked. The stopped node stays stopped (and, after a
/// crash, off the segment).
fn failover(s: &mut Segment, vip: IpAddr, lease: &str, how: Stop) -> Failover {
    let h = s.holder_index(lease);
    let other = 1 - h;
    let limit = if how == Stop::Graceful { GRACEFUL } else { CRASH };
    let stream = Stream::start(&s.client, SocketAddr::new(vip, PORT));
    let first = stream.wait_reply(Instant::now(), h, Duration::from_secs(3));
    assert!(first.is_some(), "no reply through the announcer {} before the failover{}", NODES[h], s.diag());
    // The client's entry is confirmed (REACHABLE for an hour): from here
    // on only an announcement can move it.
    s.wait_client_reachable(vip, h);
    let watcher = Watcher::start(s, vip);
    let flooded_before = s.stat(other, "pass_other_host");
    let mut agent = s.agents[h].take().expect("the announcer's agent");
    let t0 = Instant::now();
    match how {
        Stop::Graceful => agent.signal(libc::SIGTERM).expect("SIGTERM"),
        Stop::Crash => {
            agent.signal(libc::SIGKILL).expect("SIGKILL");
            s.unplug(h);
            // The endpoint controller's part (in a cluster it marks the
            // dead node's pods not ready after node-monitor-grace-period):
            // done at once, so that the stream's one flow is not left on
            // the dead node's pod.
            s.set_pods_ready(&[1 - h]);
        }
    }
    let Some(r) = stream.wait_reply(t0, other, limit + Duration::from_secs(2)) else {
        panic!("{how:?}: no reply through {} within {limit:?} + 2 s{}", NODES[other], s.diag());
    };
    let resumed = r.got - t0;
    let gap = stream.longest_gap(t0, r.got);
    let lost = stream.lost_before(t0, &r);
    // The client's entry moves without the client asking.
    let moved = loop {
        if s.client_neighbour(vip).is_some_and(|(m, _)| m == s.macs[other]) {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit + Duration::from_secs(2),
            "{how:?}: the client's entry for {vip} is {:?}, not {}'s MAC; seen: {:?}{}",
            s.client_neighbour(vip),
            NODES[other],
            watcher.seen(),
            s.diag()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let seen = watcher.seen();
    drop(watcher);
    let moved_at = t0 + moved;
    let asked: Vec<_> = seen.iter().filter(|(t, e)| *e == Seen::Asked && *t <= moved_at).collect();
    assert!(asked.is_empty(), "{how:?}: the client asked for {vip} before its entry moved: {seen:?}");
    let announced = seen.iter().find(|(_, e)| *e == Seen::Announced(s.macs[other])).map(|(t, _)| *t);
    assert!(
        announced.is_some_and(|t| t <= moved_at + Duration::from_millis(200)),
        "{how:?}: no announcement of {vip} from {} heard before the client's entry moved: {seen:?}",
        NODES[other]
    );
    let announced = announced.map_or(Duration::ZERO, |t| t.saturating_duration_since(t0));
    let dead_answers: Vec<_> = seen
        .iter()
        .filter(|(t, e)| *t > moved_at && matches!(e, Seen::Answered(m) | Seen::Announced(m) if *m == s.macs[h]))
        .collect();
    assert!(dead_answers.is_empty(), "{how:?}: {} still answers for {vip}: {dead_answers:?}", NODES[h]);
    assert_eq!(s.holder(lease).as_deref(), Some(NODES[other]), "{how:?}: the Lease after the failover");
    drop(stream);
    s.assert_only_answers(other, vip, &format!("after {how:?} of {}", NODES[h]));
    match how {
        Stop::Graceful => {
            let status = agent.wait_exit(Duration::from_secs(15)).expect("the stopped agent exits");
            assert!(status.success(), "{status:?}\n{}", agent.log());
        }
        Stop::Crash => {
            let _ = agent.wait_exit(Duration::from_secs(5));
        }
    }
    assert!(resumed <= limit, "{how:?}: the stream resumed through {} after {resumed:?}{}", NODES[other], s.diag());
    let flooded = s.stat(other, "pass_other_host") - flooded_before;
    Failover { resumed, gap, moved, lost, announced, flooded }
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("min {:?} median {:?} max {:?}", v[0], v[v.len() / 2], v[v.len() - 1])
}

fn report(what: &str, runs: &[Failover]) {
    eprintln!(
        "{what}, {} runs: stream resumed through the new announcer: {}; longest gap without replies: {}; \
         new holder announced: {}; client's entry moved: {}; requests lost: {:?}",
        runs.len(),
        summary(runs.iter().map(|f| f.resumed).collect()),
        summary(runs.iter().map(|f| f.gap).collect()),
        summary(runs.iter().map(|f| f.announced).collect()),
        summary(runs.iter().map(|f| f.moved).collect()),
        runs.iter().map(|f| f.lost).collect::<Vec<_>>(),
    );
}

/// A `Cluster` Service on `vip` with a pod behind each node.
fn cluster(s: &Segment, vip: IpAddr) {
    s.create(&service("dns", vip, "Cluster"));
    s.create(&slice("dns", vip.is_ipv6(), &[(0, 0), (1, 1)]));
    s.wait_programmed("apps/dns:dns", 2);
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn one_node_answers_arp_traffic_flows_and_sigterm_moves_both_within_3s() {
    let mut s = Segment::start("l2tg");
    cluster(&s, VIP4.into());
    let h = s.holder_index(LEASE4);
    s.assert_only_answers(h, VIP4.into(), "with both nodes up");
    // Traffic flows, to both pods, through the announcer.
    s.assert_served_through(h, 40);
    assert!(s.stat(h, "arp_reply") >= 2, "the announcer's arp_reply counter{}", s.diag());
    assert_eq!(s.stat(1 - h, "arp_reply"), 0, "the other node answered ARP{}", s.diag());

    let mut runs = Vec::new();
    for run in 0..5 {
        if run > 0 {
            let stopped = s.agents.iter().position(Option::is_none).unwrap();
            s.spawn(stopped);
            s.wait_programmed("apps/dns:dns", 2);
        }
        runs.push(failover(&mut s, VIP4.into(), LEASE4, Stop::Graceful));
    }
    report("graceful failover (SIGTERM of the announcer), IPv4", &runs);
}

#[test]
fn a_dead_announcer_is_replaced_within_10s() {
    let mut s = Segment::start("l2tc");
    cluster(&s, VIP4.into());
    let mut runs = Vec::new();
    for run in 0..5 {
        if run > 0 {
            let dead = s.agents.iter().position(Option::is_none).unwrap();
            s.revive(dead);
            s.set_pods_ready(&[0, 1]);
            s.wait_programmed("apps/dns:dns", 2);
            // The revived node's agent took its pins over and withdrew
            // what the killed one had left in XLB_ANNOUNCE: one answer.
            let h = s.holder_index(LEASE4);
            assert_eq!(h, 1 - dead, "the Lease stays with the node that took it over");
            s.assert_only_answers(h, VIP4.into(), "after the dead node's revival");
        }
        runs.push(failover(&mut s, VIP4.into(), LEASE4, Stop::Crash));
    }
    // The new announcer announces on expiry, not before: never before the
    // Lease's 6 s after the last renewal (at most 2 s before the kill).
    assert!(
        runs.iter().all(|f| f.moved >= Duration::from_secs(3)),
        "the client's entry moved before the dead holder's Lease expired: {:?}",
        runs.iter().map(|f| f.moved).collect::<Vec<_>>()
    );
    // The stream resumes only through the new holder's announcement: the
    // client's frames for the dead node's MAC, flooded by the bridge to the
    // other node meanwhile, are not balanced there.
    let times: Vec<_> = runs.iter().map(|f| (f.announced, f.resumed, f.flooded)).collect();
    assert!(
        runs.iter().all(|f| f.resumed >= Duration::from_secs(3) && f.resumed >= f.announced),
        "the stream resumed before the dead holder's Lease expired and the new holder announced \
         (announced, resumed, flooded frames passed): {times:?}"
    );
    assert!(
        runs.iter().all(|f| f.flooded > 0),
        "no flooded frame reached the other node (the bridge did not flood: the test shows nothing): {times:?}"
    );
    report("crash failover (kill -9 of the announcer + its link down), IPv4", &runs);
}

#[test]
fn with_local_policy_and_endpoints_only_behind_node_2_only_node_2_ever_answers() {
    let s = Segment::start("l2tl");
    let watcher = Watcher::start(&s, VIP4.into());
    let mut leases = s.kc.watch(&leases_path(LEASE_NS, None)).expect("watch leases");
    s.create(&service("dns", VIP4.into(), "Local"));
    s.create(&slice("dns", false, &[(1, 1)]));
    // Local: node 1 has the VIP programmed without a backend of its own.
    s.wait_backends(0, "apps/dns:dns", 0);
    s.wait_backends(1, "apps/dns:dns", 1);
    s.wait_holder(LEASE4, Duration::from_secs(10), |h| h == Some(NODES[1]));
    // Asked several times over a few Lease renewals: node 2 alone answers,
    // and traffic flows to its pod with the client's address kept.
    let t0 = Instant::now();
    for n in 0..4 {
        s.assert_only_answers(1, VIP4.into(), &format!("question {n}"));
        let (text, _) = xlb_tests::udp_request(
            &s.client,
            None,
            SocketAddr::new(VIP4.into(), PORT),
            b"seq 0",
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("request to {VIP4}: {e:#}{}", s.diag()));
        assert_eq!(text, format!("pod2 {CLIENT4} seq 0"), "Local: the pod behind node 2, the client's address kept");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(t0.elapsed() >= Duration::from_secs(6), "spanning Lease renewals");
    assert_eq!(s.client_neighbour(VIP4.into()).map(|n| n.0), Some(s.macs[1]), "{}", s.diag());
    // Everything the client's link saw about the VIP came from node 2.
    let seen = watcher.seen();
    let from: BTreeSet<String> = seen
        .iter()
        .filter_map(|(_, e)| match e {
            Seen::Answered(m) | Seen::Announced(m) => Some(s.node_of(*m)),
            Seen::Asked => None,
        })
        .collect();
    assert_eq!(from, BTreeSet::from([NODES[1].to_string()]), "{seen:?}");
    assert!(seen.iter().any(|(_, e)| *e == Seen::Announced(s.macs[1])), "node 2 announced the VIP: {seen:?}");
    assert_eq!(s.stat(0, "arp_reply"), 0, "node 1 answered ARP{}", s.diag());
    assert!(s.stat(1, "arp_reply") >= 4, "{}", s.diag());
    let events = leases.events_for(Duration::from_millis(500)).expect("lease events");
    let holders: BTreeSet<String> = events
        .iter()
        .filter(|e| e["object"]["metadata"]["name"] == LEASE4)
        .filter_map(|e| e["object"]["spec"]["holderIdentity"].as_str().map(str::to_string))
        .collect();
    assert_eq!(holders, BTreeSet::from([NODES[1].to_string()]), "{events:#?}");
}

#[test]
fn ipv6_one_node_answers_ndp_traffic_flows_and_sigterm_moves_both_within_3s() {
    let mut s = Segment::start("l2t6");
    cluster(&s, VIP6.into());
    let h = s.holder_index(LEASE6);
    s.assert_only_answers(h, VIP6.into(), "with both nodes up");
    let mut pods = BTreeSet::new();
    for n in 0..40 {
        let (text, _) = xlb_tests::udp_request(
            &s.client,
            None,
            SocketAddr::new(VIP6.into(), PORT),
            format!("seq {n}").as_bytes(),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("request {n} to {VIP6}: {e:#}{}", s.diag()));
        let w: Vec<&str> = text.split_whitespace().collect();
        let via = w.get(1).and_then(|p| p.parse().ok()).and_then(forwarded_by);
        assert_eq!(via, Some(h), "forwarded by the announcer: {text}");
        pods.insert(w[0].to_string());
    }
    assert_eq!(pods, BTreeSet::from(["pod1".to_string(), "pod2".to_string()]), "both pods reached");
    assert_eq!(s.client_neighbour(VIP6.into()).map(|n| n.0), Some(s.macs[h]), "the client resolved the VIP");
    assert!(s.stat(h, "ndp_advert") >= 2, "{}", s.diag());
    assert_eq!(s.stat(1 - h, "ndp_advert"), 0, "the other node answered NS{}", s.diag());
    let f = failover(&mut s, VIP6.into(), LEASE6, Stop::Graceful);
    report("graceful failover (SIGTERM of the announcer), IPv6", &[f]);
}

#[test]
fn with_a_switch_that_floods_everything_only_the_announcer_balances_no_duplicates() {
    let s = Segment::start("l2tf");
    cluster(&s, VIP4.into());
    let h = s.holder_index(LEASE4);
    s.assert_only_answers(h, VIP4.into(), "with both nodes up");
    // A hub: no port learns, the table is emptied, so every unicast frame
    // (the client's to the announcer's MAC too) reaches every port, as
    // from a switch whose table aged out.
    for port in ["v0", "v1", "vc"] {
        ip(&s.sw, &["link", "set", "dev", port, "type", "bridge_slave", "learning", "off"]);
    }
    ip(&s.sw, &["link", "set", "dev", "br0", "type", "bridge", "fdb_flush"]);
    let flooded_before = [s.stat(0, "pass_other_host"), s.stat(1, "pass_other_host")];
    // Steady state: one flow, and new flows (a socket each), to both pods.
    let stream = Stream::start(&s.client, SocketAddr::new(VIP4.into(), PORT));
    let mut pods = BTreeSet::new();
    for n in 0..40 {
        let (text, _) = xlb_tests::udp_request(
            &s.client,
            None,
            SocketAddr::new(VIP4.into(), PORT),
            format!("new {n}").as_bytes(),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("request {n} to {VIP4}: {e:#}{}", s.diag()));
        pods.insert(text.split_whitespace().next().unwrap_or_default().to_string());
    }
    std::thread::sleep(Duration::from_secs(3));
    stream.stop.store(true, Ordering::SeqCst);
    // Late duplicates have time to arrive before the count.
    std::thread::sleep(Duration::from_millis(300));
    let replies = stream.replies();
    drop(stream);
    assert_eq!(pods, BTreeSet::from(["pod1".to_string(), "pod2".to_string()]), "both pods reached");
    assert!(replies.len() >= 30, "the stream got {} replies{}", replies.len(), s.diag());
    let mut per_seq = std::collections::BTreeMap::new();
    for r in &replies {
        *per_seq.entry(r.seq).or_insert(0u32) += 1;
    }
    let dup: Vec<_> = per_seq.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "requests a pod received more than once (seq, replies): {dup:?}{}", s.diag());
    let other: Vec<_> = replies.iter().filter(|r| forwarded_by(r.peer) != Some(h)).collect();
    assert!(other.is_empty(), "replies carried by the other node: {other:?}{}", s.diag());
    let flooded = [s.stat(0, "pass_other_host") - flooded_before[0], s.stat(1, "pass_other_host") - flooded_before[1]];
    assert!(flooded[1 - h] >= 40, "the other node saw no flooded VIP packets ({flooded:?}){}", s.diag());
    assert_eq!(flooded[h], 0, "the announcer left packets addressed to it to the kernel{}", s.diag());
}

/// A Gateway's address is announced as a Service VIP is (issue 13 with
/// `--announce l2`): a Gateway on [`VIP4`] with a UDP listener and a
/// UDPRoute to a plain Service of a pod behind each node, no Service of
/// xlb's class at all. One node holds the address's Lease and alone answers
/// ARP for it; the client, which has no route for it, resolves it by ARP to
/// that node and reaches both pods through it (the listener's backends are
/// any ready endpoint, as with `Cluster`).
#[test]
fn a_gateway_address_is_announced_and_its_udp_route_served_through_the_announcer() {
    use xlb_tests::k8s::{gateway, gateway_class, gateway_classes_path, routes_path, udp_route};
    let s = Segment::start_gateway("l2gw");
    s.kc.create(&gateway_classes_path(), &gateway_class("xlb", "xlb.io/gateway-controller"))
        .expect("create GatewayClass");
    let backend = lb_service(NS, "dns").service_type("ClusterIP").class(None).port("dns", PORT, "UDP").build();
    s.create(&backend);
    s.create(&slice("dns", false, &[(0, 0), (1, 1)]));
    let gw = gateway(NS, "gw", "xlb").address(&VIP4.to_string()).listener("dns", "UDP", PORT).build();
    s.kc.create(&routes_path("Gateway", Some(NS)), &gw).expect("create Gateway");
    let route = udp_route(NS, "dns").parent("gw", None).backend("dns", PORT, None).build();
    s.kc.create(&routes_path("UDPRoute", Some(NS)), &route).expect("create UDPRoute");
    s.wait_programmed(&format!("gateway/{NS}/gw:dns"), 2);

    let h = s.holder_index(LEASE4);
    s.assert_only_answers(h, VIP4.into(), "with both nodes up");
    s.assert_served_through(h, 20);
    assert_eq!(s.stat(1 - h, "arp_reply"), 0, "the other node answered ARP{}", s.diag());
}
