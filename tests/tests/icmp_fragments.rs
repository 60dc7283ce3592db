//! IP fragments and ICMP through the VIP: UDP datagrams larger than the MTU
//! (fragmented by the sender, in both directions) are load-balanced whole;
//! ICMP errors about a translated flow are translated back to the right
//! party (port unreachable from a backend to the client, fragmentation
//! needed / packet too big from the client side to the backend, and from
//! the node itself when the client's link is narrower than the pods'); echo
//! requests to a VIP are answered; pinned maps of another size are refused
//! with advice. IPv4 and IPv6, `snat` and `preserve`. Needs root (CI runs it
//! as root with `--test-threads=1`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::FromRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use xlb_tests::{udp_probe, Agent, Netns, Probe, Topology, UdpFlow};

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

/// Size of the requests the client sends in the fragment test (UDP payload).
const BIG_REQUEST: usize = 3000;
/// Size of the replies the pods send in the fragment test (UDP payload).
const BIG_REPLY: usize = 4000;

fn vip(fam: Fam, port: u16) -> SocketAddr {
    match fam {
        Fam::V4 => vip4(port),
        Fam::V6 => vip6(port),
    }
}

/// What pod `i` sees as the client's address for a `source` mode.
fn expected_peer(fam: Fam, source: &str, i: usize) -> IpAddr {
    if source == "snat" {
        fam.pod_gw(i)
    } else {
        fam.client()
    }
}

/// A UDP service named `name` on the family's VIP:53 with the given pods'
/// backends on `UDP_BACKEND_PORT`.
fn dns_svc(name: &str, fam: Fam, source: &str, pods: impl IntoIterator<Item = usize>) -> String {
    let vip_ip = vip(fam, 53).ip();
    svc(name, vip_ip, 53, "udp", source, &backends(fam, pods, UDP_BACKEND_PORT))
}

/// The value of a counter (0 when absent: the assertions say which).
fn counter(s: &BTreeMap<String, u64>, name: &str) -> u64 {
    s.get(name).copied().unwrap_or(0)
}

/// Fails (with the list) unless `xlb stats` has every counter named.
fn require_counters(env: &Env, names: &[&str]) {
    let s = stats(env.agent());
    let missing: Vec<&&str> = names.iter().filter(|n| !s.contains_key(**n)).collect();
    assert!(missing.is_empty(), "xlb stats -o json lacks the counters {missing:?}: {s:?}");
}

/// A UDP server that answers every datagram with exactly `reply_len` bytes:
/// `"<tag> <received length> <peer ip> "` padded with dots, so that a reply
/// larger than the MTU is fragmented by the pod's kernel.
struct BigUdpServer {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl BigUdpServer {
    fn start(ns: &Netns, bind: SocketAddr, tag: &str, reply_len: usize) -> Self {
        let sock = ns.run(|| UdpSocket::bind(bind)).unwrap_or_else(|e| panic!("bind UDP {bind} in {}: {e}", ns.name));
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("set_read_timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (t_stop, t_served, tag) = (stop.clone(), served.clone(), tag.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("big-udp-{tag}"))
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !t_stop.load(Ordering::SeqCst) {
                    // Errors (timeouts, ICMP errors of earlier sends): keep serving.
                    if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                        let mut reply = format!("{tag} {n} {} ", peer.ip().to_canonical()).into_bytes();
                        reply.resize(reply_len.max(reply.len()), b'.');
                        let _ = sock.send_to(&reply, peer);
                        t_served.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .expect("spawn the big UDP server thread");
        BigUdpServer { stop, served, thread: Some(thread) }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for BigUdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks one big reply; returns the answering pod.
fn check_big_reply(
    reply: &str,
    from: SocketAddr,
    to: SocketAddr,
    fam: Fam,
    source: &str,
    ctx: &str,
) -> Result<usize, String> {
    if from != to {
        return Err(format!("{ctx}: reply came from {from}, not from the VIP {to}"));
    }
    if reply.len() != BIG_REPLY {
        return Err(format!(
            "{ctx}: reply of {} bytes, expected {BIG_REPLY} (starts {:?})",
            reply.len(),
            &reply[..reply.len().min(60)]
        ));
    }
    let mut it = reply.split_whitespace();
    let (tag, len, peer) = (it.next(), it.next(), it.next());
    let i: usize = tag
        .and_then(|t| t.strip_prefix("pod"))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("{ctx}: unexpected reply {:?}", &reply[..reply.len().min(60)]))?;
    let len: usize = len
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| format!("{ctx}: no length in {:?}", &reply[..reply.len().min(60)]))?;
    if len != BIG_REQUEST {
        return Err(format!("{ctx}: pod{i} received {len} bytes, expected the whole {BIG_REQUEST}-byte datagram"));
    }
    let peer: IpAddr = peer
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{ctx}: no peer address in {:?}", &reply[..reply.len().min(60)]))?;
    let want = expected_peer(fam, source, i);
    if peer != want {
        return Err(format!("{ctx}: pod{i} saw the source address {peer}, expected {want}"));
    }
    if !reply.ends_with('.') {
        return Err(format!("{ctx}: reply does not end with its padding"));
    }
    Ok(i)
}

/// Lets root open ICMP "ping" sockets (`SOCK_DGRAM`, `IPPROTO_ICMP[V6]`) in
/// `ns`: `net.ipv4.ping_group_range` is per network namespace and empty by
/// default.
fn allow_ping_sockets(ns: &Netns) {
    ns.run(|| std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"))
        .unwrap_or_else(|e| panic!("set net.ipv4.ping_group_range in {}: {e}", ns.name));
}

/// Opens a datagram-style socket of any kind inside `ns` and wraps it in a
/// `UdpSocket`, which is only a file descriptor with `sendto`/`recvfrom`
/// (that is all ping and raw sockets need here).
fn socket_in(ns: &Netns, domain: i32, ty: i32, proto: i32) -> std::io::Result<UdpSocket> {
    ns.run(move || {
        // SAFETY: plain socket(2) call; the fd is owned by the UdpSocket.
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid socket we own.
        Ok(unsafe { UdpSocket::from_raw_fd(fd) })
    })
}

/// What a ping run saw.
#[derive(Debug, Default)]
struct PingReport {
    sent: usize,
    answered: usize,
    /// Anything unexpected: errors, foreign replies.
    notes: Vec<String>,
}

/// Sends `count` ICMP/ICMPv6 echo requests from `ns` to `dst` (one at a
/// time, each waiting up to `wait` for its reply) through a ping socket, as
/// `ping -c COUNT -W WAIT` does. A reply counts when it comes from `dst`,
/// is an echo reply with the request's sequence number and echoes the
/// payload.
fn ping(ns: &Netns, dst: IpAddr, count: u16, wait: Duration) -> PingReport {
    let (domain, proto, req_type, reply_type) = match dst {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8),
    };
    let sock = socket_in(ns, domain, libc::SOCK_DGRAM, proto)
        .unwrap_or_else(|e| panic!("open an ICMP ping socket in {} (is net.ipv4.ping_group_range set?): {e}", ns.name));
    let to = SocketAddr::new(dst, 0);
    let mut r = PingReport::default();
    let mut buf = [0u8; 2048];
    for seq in 1..=count {
        // type, code, checksum (the kernel fills it), id (the kernel sets
        // it to the socket's), sequence, payload.
        let payload = format!("xlb-ping {seq} to {dst}");
        let mut msg = vec![req_type, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(payload.as_bytes());
        if let Err(e) = sock.send_to(&msg, to) {
            r.notes.push(format!("seq {seq}: send: {e}"));
            continue;
        }
        r.sent += 1;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).expect("set_read_timeout");
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let m = &buf[..n];
                    if n >= 8
                        && m[0] == reply_type
                        && m[6..8] == seq.to_be_bytes()
                        && &m[8..] == payload.as_bytes()
                        && from.ip() == dst
                    {
                        r.answered += 1;
                        break;
                    }
                    r.notes.push(format!(
                        "seq {seq}: unexpected {n}-byte ICMP message type {} from {from}",
                        m.first().copied().unwrap_or(0)
                    ));
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // An ICMP error about our request (e.g. no route): not an answer.
                Err(e) => {
                    r.notes.push(format!("seq {seq}: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    r
}

/// The Internet checksum of `data`.
fn inet_csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The first bytes of a packet `src -> dst` (UDP) as an ICMP error quotes
/// them: the IP header (as if the packet were `ip_len` bytes long) and the
/// UDP header.
fn quoted_udp(src: SocketAddr, dst: SocketAddr, ip_len: u16) -> Vec<u8> {
    let mut q = Vec::new();
    let udp_len = match src.ip() {
        IpAddr::V4(_) => ip_len - 20,
        IpAddr::V6(_) => ip_len - 40,
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
            h[2..4].copy_from_slice(&ip_len.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = inet_csum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            q.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            q.extend_from_slice(&[0x60, 0, 0, 0]);
            q.extend_from_slice(&udp_len.to_be_bytes());
            q.extend_from_slice(&[17, 64]);
            q.extend_from_slice(&s.octets());
            q.extend_from_slice(&d.octets());
        }
        _ => panic!("quoted_udp: mixed families {src} -> {dst}"),
    }
    q.extend_from_slice(&src.port().to_be_bytes());
    q.extend_from_slice(&dst.port().to_be_bytes());
    q.extend_from_slice(&udp_len.to_be_bytes());
    // Checksum: arbitrary but non-zero (zero means "none" in IPv4 and is
    // invalid in IPv6); only its translation matters.
    q.extend_from_slice(&[0x5a, 0x5a]);
    q
}

/// Sends, from `ns` through a raw socket, an ICMP "fragmentation needed"
/// (IPv4: type 3 code 4) or ICMPv6 "packet too big" (type 2) with next-hop
/// MTU `mtu` to `to`, quoting `quoted`: what a router on the client's side
/// says about a packet too big for its next link.
fn send_frag_needed(ns: &Netns, to: IpAddr, mtu: u16, quoted: &[u8]) {
    let (domain, proto) = match to {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    let sock = socket_in(ns, domain, libc::SOCK_RAW, proto)
        .unwrap_or_else(|e| panic!("open a raw ICMP socket in {}: {e}", ns.name));
    let mut msg = match to {
        // type 3 code 4, checksum, unused, next-hop MTU
        IpAddr::V4(_) => vec![3, 4, 0, 0, 0, 0],
        // type 2 code 0, checksum (the kernel computes it), MTU (32 bits)
        IpAddr::V6(_) => vec![2, 0, 0, 0, 0, 0],
    };
    msg.extend_from_slice(&mtu.to_be_bytes());
    msg.extend_from_slice(quoted);
    if to.is_ipv4() {
        let c = inet_csum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    sock.send_to(&msg, SocketAddr::new(to, 0)).unwrap_or_else(|e| panic!("send the ICMP error to {to}: {e}"));
}

/// `ip route get DST` inside `ns` (shows a learnt path MTU as `mtu N`).
fn route_get(ns: &Netns, dst: IpAddr) -> String {
    ns.ip(&["route", "get", &dst.to_string()])
        .map_or_else(|e| format!("(ip route get {dst}: {e:#})"), |o| String::from_utf8_lossy(&o.stdout).into_owned())
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

fn large_udp(source: &str) {
    let yaml = config(&[dns_svc("dns", Fam::V4, source, 0..3), dns_svc("dns6", Fam::V6, source, 0..3)]);
    let env = Env::start(3, &yaml, &[]);
    require_counters(&env, &["fragment_translated", "pass_fragment"]);
    let servers: Vec<BigUdpServer> = [Fam::V4, Fam::V6]
        .iter()
        .flat_map(|&fam| {
            let topo = &env.topo;
            (0..3).map(move |i| {
                BigUdpServer::start(&topo.pods[i], fam.pod_sock(i, UDP_BACKEND_PORT), &format!("pod{i}"), BIG_REPLY)
            })
        })
        .collect();

    // The client's link has the default 1500-byte MTU: the requests and the
    // replies are fragmented by their senders.
    let link = ip_link(&env.topo.client, "eth0");
    assert!(link.contains("mtu 1500"), "the client's eth0 should have MTU 1500: {link}");

    for (fam, base) in [(Fam::V4, 27000u16), (Fam::V6, 27100u16)] {
        let to = vip(fam, 53);
        warm_up_udp(&env, to);
        let before = stats(env.agent());
        let ports: Vec<u16> = (0..12).map(|i| base + i).collect();
        let flows: Vec<UdpFlow> = ports
            .iter()
            .map(|&p| {
                UdpFlow::new(&env.topo.client, Some(fam.unspecified(p)), to)
                    .unwrap_or_else(|e| panic!("bind UDP port {p}: {e:#}"))
            })
            .collect();
        let mut errors = Vec::new();
        let mut per_flow: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
        let mut exchanges = 0u64;
        'rounds: for round in 0..3 {
            for (flow, &port) in flows.iter().zip(&ports) {
                let ctx = format!("{source} {fam:?}: {BIG_REQUEST}-byte datagram #{round} from port {port} to {to}");
                let mut payload = format!("big request {round} from {port} ").into_bytes();
                payload.resize(BIG_REQUEST, b'x');
                match flow.request(&payload, T) {
                    Ok((reply, from)) => match check_big_reply(&reply, from, to, fam, source, &ctx) {
                        Ok(i) => {
                            exchanges += 1;
                            per_flow.entry(port).or_default().insert(i);
                        }
                        Err(e) => errors.push(e),
                    },
                    Err(e) => errors.push(format!("{ctx}: {e:#}")),
                }
                if errors.len() >= 5 {
                    break 'rounds;
                }
            }
        }
        let after = stats(env.agent());
        let served: Vec<usize> = servers.iter().map(BigUdpServer::served).collect();
        assert!(
            errors.is_empty(),
            "{} large UDP exchanges failed (servers answered {served:?}; stats delta \
             fragment_translated {} pass_fragment {}):\n{}{}",
            errors.len(),
            counter(&after, "fragment_translated") - counter(&before, "fragment_translated"),
            counter(&after, "pass_fragment") - counter(&before, "pass_fragment"),
            errors.join("\n"),
            env.diag()
        );
        let moved: Vec<String> = per_flow
            .iter()
            .filter(|(_, pods)| pods.len() > 1)
            .map(|(p, pods)| format!("port {p}: pods {pods:?}"))
            .collect();
        assert!(
            moved.is_empty(),
            "{source} {fam:?}: fragmented flows reached more than one pod: {moved:?}{}",
            env.diag()
        );
        let pods: BTreeSet<usize> = per_flow.values().flatten().copied().collect();
        assert!(
            pods.len() >= 2,
            "{source} {fam:?}: 12 fragmented flows all reached {pods:?}; \
             expected them spread over the 3 pods{}",
            env.diag()
        );
        // Both datagrams of an exchange are larger than the MTU: each has at
        // least one later fragment.
        let frags = counter(&after, "fragment_translated") - counter(&before, "fragment_translated");
        eprintln!(
            "{source} {fam:?}: {exchanges} whole exchanges, flows per pod {:?}, \
             fragment_translated +{frags}, pass_fragment +{}",
            tally(&per_flow.values().flatten().copied().collect::<Vec<_>>()),
            counter(&after, "pass_fragment") - counter(&before, "pass_fragment")
        );
        assert!(
            frags > 0 && frags >= 2 * exchanges,
            "{source} {fam:?}: {exchanges} whole exchanges of fragmented datagrams but \
             fragment_translated grew by {frags}{}",
            env.diag()
        );
    }
}

/// Test 1: 3000-byte UDP requests (fragmented by the client's kernel) to
/// VIP:53 from 12 source ports, 3 rounds, answered by 4000-byte replies
/// (fragmented by the pods' kernels) carrying the tag and the received
/// length: every request arrives whole, every reply arrives whole from
/// VIP:53, a flow always reaches the same pod, and `fragment_translated`
/// counts the later fragments. IPv4 and IPv6, `snat` and `preserve`.
#[test]
fn large_udp_datagrams_are_fragmented_and_delivered_whole() {
    require_root();
    large_udp("snat");
    large_udp("preserve");
}

fn port_unreachable(source: &str) {
    // The service has a backend (pod0:5353) but nothing listens there.
    let yaml = config(&[dns_svc("dns", Fam::V4, source, 0..1), dns_svc("dns6", Fam::V6, source, 0..1)]);
    let env = Env::start(1, &yaml, &[]);
    require_counters(&env, &["icmp_error_translated", "reject_no_backend"]);
    for name in ["dns", "dns6"] {
        let s = service(env.agent(), name).unwrap_or_else(|| panic!("service {name} not listed{}", env.diag()));
        assert_eq!(service_backends(&s).len(), 1, "service {name} should have its one backend: {s}");
    }
    for fam in [Fam::V4, Fam::V6] {
        let to = vip(fam, 53);
        let before = stats(env.agent());
        // Two probes: well within the pod's ICMP rate limit (a burst of 6).
        for attempt in 0..2 {
            let got = udp_probe(&env.topo.client, to, b"anyone on 5353?", Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("UDP probe to {to}: {e:#}"));
            assert_eq!(
                got,
                Probe::Refused,
                "{source} {fam:?}: a connected UDP socket sending to {to} (backend {} without \
                 a listener, attempt {attempt}) should get ECONNREFUSED from the backend's \
                 port unreachable{}",
                fam.pod_sock(0, UDP_BACKEND_PORT),
                env.diag()
            );
        }
        let after = stats(env.agent());
        let icmp = counter(&after, "icmp_error_translated") - counter(&before, "icmp_error_translated");
        assert!(
            icmp >= 2,
            "{source} {fam:?}: 2 port unreachables translated back, but icmp_error_translated \
             grew by {icmp}{}",
            env.diag()
        );
        assert_eq!(
            counter(&after, "reject_no_backend"),
            counter(&before, "reject_no_backend"),
            "{source} {fam:?}: the service has a backend; the refusal must come from the \
             backend, not from xlb's no-backend reject path{}",
            env.diag()
        );
    }
}

/// Test 2: a UDP service whose one backend has no listener on the backend
/// port: the backend's ICMP (ICMPv6) port unreachable is translated back
/// (quoted packet and outer addresses), so a connected client socket sees
/// ECONNREFUSED, counted in `icmp_error_translated`, not in
/// `reject_no_backend`. IPv4 and IPv6, `snat` and `preserve`.
#[test]
fn backend_port_unreachable_reaches_the_client_through_the_vip() {
    require_root();
    port_unreachable("snat");
    port_unreachable("preserve");
}

/// Test 3: echo requests to a VIP with services are answered (by xlb, the
/// VIP is on no interface), counted in `icmp_echo_reply`; echo requests to
/// an address of the VIP range without services are not.
#[test]
fn ping_to_a_vip_is_answered() {
    require_root();
    let yaml = config(&[dns_svc("dns", Fam::V4, "snat", 0..1), dns_svc("dns6", Fam::V6, "snat", 0..1)]);
    let mut env = Env::start(1, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..1, UDP_BACKEND_PORT);
    env.servers.extend(udp_servers(&env.topo, Fam::V6, 0..1, UDP_BACKEND_PORT));
    require_counters(&env, &["icmp_echo_reply"]);
    allow_ping_sockets(&env.topo.client);
    let wait = Duration::from_secs(1);

    for vip_ip in [IpAddr::from(Topology::VIP_V4), IpAddr::from(Topology::VIP_V6)] {
        let before = stat(env.agent(), "icmp_echo_reply");
        let r = ping(&env.topo.client, vip_ip, 3, wait);
        let after = stat(env.agent(), "icmp_echo_reply");
        assert_eq!(
            (r.sent, r.answered),
            (3, 3),
            "ping -c 3 -W 1 {vip_ip} (a VIP with a service) should be answered 3 times: \
             {r:?}; icmp_echo_reply {before} -> {after}{}",
            env.diag()
        );
        assert!(
            after >= before + 3,
            "3 echo replies from {vip_ip} but icmp_echo_reply went {before} -> {after}{}",
            env.diag()
        );
    }

    let unused_v4: IpAddr = "192.0.2.99".parse().unwrap();
    let unused_v6: IpAddr = "2001:db8:ffff::99".parse().unwrap();
    for addr in [unused_v4, unused_v6] {
        let before = stat(env.agent(), "icmp_echo_reply");
        let r = ping(&env.topo.client, addr, 2, wait);
        let after = stat(env.agent(), "icmp_echo_reply");
        eprintln!("ping {addr} (no service): {r:?}");
        assert_eq!(r.sent, 2, "ping {addr}: {r:?}");
        assert_eq!(r.answered, 0, "ping {addr} (no service on it) should get no echo reply: {r:?}{}", env.diag());
        assert_eq!(
            after,
            before,
            "icmp_echo_reply grew for echo requests to {addr}, which has no service{}",
            env.diag()
        );
    }
}

fn pmtu_from_client_side(source: &str) {
    let yaml = config(&[dns_svc("dns", Fam::V4, source, 0..1), dns_svc("dns6", Fam::V6, source, 0..1)]);
    let mut env = Env::start(1, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..1, UDP_BACKEND_PORT);
    env.servers.extend(udp_servers(&env.topo, Fam::V6, 0..1, UDP_BACKEND_PORT));
    require_counters(&env, &["icmp_error_translated"]);
    let mtu: u16 = 1280;

    for (fam, port) in [(Fam::V4, 28000u16), (Fam::V6, 28001u16)] {
        let to = vip(fam, 53);
        warm_up_udp(&env, to);
        // One flow through the VIP, so the node knows it.
        let flow = UdpFlow::new(&env.topo.client, Some(fam.unspecified(port)), to)
            .unwrap_or_else(|e| panic!("bind UDP port {port}: {e:#}"));
        let (reply, from) = flow
            .request(b"hello", T)
            .unwrap_or_else(|e| panic!("{source} {fam:?}: UDP from port {port} to {to}: {e:#}{}", env.diag()));
        let i = check_reply(&reply, from, to, |i| expected_peer(fam, source, i), "the flow")
            .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
        assert_eq!(i, 0, "one backend only");
        // The address pod0 sends this flow's replies to.
        let peer = expected_peer(fam, source, 0);
        let pod = &env.topo.pods[0];
        let route = route_get(pod, peer);
        assert!(
            !route.contains(&format!("mtu {mtu}")),
            "pod0 already has a path MTU {mtu} towards {peer} before the test: {route}"
        );

        // A router on the client's side cannot forward a 1500-byte reply of
        // that flow (VIP:53 -> client:port) and says so to its source, the
        // VIP. xlb must translate it to the backend (the quoted packet
        // becoming pod0:5353 -> peer:port') so pod0 learns the path MTU.
        let client = SocketAddr::new(fam.client(), port);
        let before = stat(env.agent(), "icmp_error_translated");
        send_frag_needed(&env.topo.client, to.ip(), mtu, &quoted_udp(to, client, 1500));

        let deadline = Instant::now() + Duration::from_secs(3);
        let mut route = route_get(pod, peer);
        while !route.contains(&format!("mtu {mtu}")) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            route = route_get(pod, peer);
        }
        let after = stat(env.agent(), "icmp_error_translated");
        assert!(
            route.contains(&format!("mtu {mtu}")),
            "{source} {fam:?}: after a fragmentation-needed/packet-too-big (MTU {mtu}) about \
             the reply {to} -> {client} sent to the VIP, pod0 should have learnt the path MTU \
             {mtu} towards {peer}; `ip route get {peer}` in pod0: {route}; \
             icmp_error_translated {before} -> {after}{}",
            env.diag()
        );
        assert!(
            after > before,
            "{source} {fam:?}: icmp_error_translated did not grow ({before} -> {after}){}",
            env.diag()
        );
        // The flow still works.
        let (reply, from) = flow
            .request(b"still there?", T)
            .unwrap_or_else(|e| panic!("{source} {fam:?}: the flow after the ICMP error: {e:#}{}", env.diag()));
        check_reply(&reply, from, to, |i| expected_peer(fam, source, i), "the flow afterwards")
            .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
    }
}

/// Test 4: an ICMP "fragmentation needed" (ICMPv6 "packet too big") from
/// the client's side about a reply of a translated flow (quoting VIP:53 ->
/// client) reaches the backend translated (quoting backend -> its peer), so
/// the backend's kernel learns the path MTU towards its peer. The error is
/// sent by the client namespace itself, playing the router on the client's
/// side (the topology has no router between client and node), which makes
/// it deterministic. IPv4 and IPv6, `snat` and `preserve`.
#[test]
fn pmtu_error_from_the_client_side_reaches_the_backend() {
    require_root();
    pmtu_from_client_side("snat");
    pmtu_from_client_side("preserve");
}

/// A UDP socket in `ns` bound to `bind` whose datagrams carry DF and are
/// never fragmented locally (`IP_PMTUDISC_DO` / `IPV6_PMTUDISC_DO`), as
/// QUIC servers send theirs.
fn df_udp_socket(ns: &Netns, bind: SocketAddr) -> UdpSocket {
    use std::os::fd::AsRawFd as _;
    let sock = ns.run(|| UdpSocket::bind(bind)).unwrap_or_else(|e| panic!("bind UDP {bind} in {}: {e}", ns.name));
    let (level, opt, value) = match bind {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO),
    };
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (&raw const value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt(PMTUDISC_DO) on {bind}: {}", std::io::Error::last_os_error());
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("set_read_timeout");
    sock
}

/// One exchange: the client sends a small request on `flow`, `server`
/// answers it with `reply_len` bytes (DF). Returns what the server saw as
/// the peer (None when the request did not arrive) and the client's result.
fn df_exchange(flow: &UdpFlow, server: &UdpSocket, reply_len: usize) -> (Option<SocketAddr>, Result<String, String>) {
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            flow.request(b"small request", Duration::from_secs(1))
                .map(|(text, from)| format!("{} bytes from {from}", text.len()))
                .map_err(|e| format!("{e:#}"))
        });
        let mut buf = [0u8; 2048];
        let mut peer = None;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok((_, p)) = server.recv_from(&mut buf) {
                // EMSGSIZE here means the path MTU is already known.
                let _ = server.send_to(&vec![b'x'; reply_len], p);
                peer = Some(p);
                break;
            }
        }
        let got = client.join().expect("client thread");
        (peer, got)
    })
}

/// Runs up to 3 exchanges (each followed by up to 1 s of polling) until
/// `ip route get PEER` in `pod` shows `mtu MTU`; returns the last route
/// text and a log of the exchanges.
fn learn_pmtu(
    pod: &Netns,
    peer: IpAddr,
    mtu: u16,
    flow: &UdpFlow,
    server: &UdpSocket,
    reply_len: usize,
) -> (bool, String, Vec<String>) {
    let want = format!("mtu {mtu}");
    let mut log = Vec::new();
    let mut route = route_get(pod, peer);
    for round in 0..3 {
        let (seen, got) = df_exchange(flow, server, reply_len);
        log.push(format!("round {round}: server saw the request from {seen:?}; client: {got:?}"));
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            route = route_get(pod, peer);
            if route.contains(&want) {
                return (true, route, log);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (false, route, log)
}

fn pmtu_narrow_client_link(source: &str) {
    // pod0 is the backend; pod1 is reached directly (not through a VIP) as
    // the control: the kernel's own PMTU discovery on the same path.
    let yaml = config(&[dns_svc("dns", Fam::V4, source, 0..1), dns_svc("dns6", Fam::V6, source, 0..1)]);
    let env = Env::start(2, &yaml, &[]);
    let mtu: u16 = 1300;
    let reply_len = 1400;
    // Both ends of the client link: the node's c0 and the client's eth0.
    for (ns, ifname) in [(&env.topo.node, "c0"), (&env.topo.client, "eth0")] {
        ns.ip(&["link", "set", "dev", ifname, "mtu", &mtu.to_string()])
            .unwrap_or_else(|e| panic!("set the MTU of {ifname}: {e:#}"));
    }

    for (fam, port) in [(Fam::V4, 28100u16), (Fam::V6, 28101u16)] {
        // Control: client <-> pod1 directly. The node cannot forward pod1's
        // 1400-byte DF reply onto the 1300-byte client link and tells pod1.
        let direct = fam.pod_sock(1, UDP_BACKEND_PORT);
        let server1 = df_udp_socket(&env.topo.pods[1], direct);
        let flow1 = UdpFlow::new(&env.topo.client, Some(fam.unspecified(port)), direct)
            .unwrap_or_else(|e| panic!("bind UDP port {port}: {e:#}"));
        let (ok, route, log) = learn_pmtu(&env.topo.pods[1], fam.client(), mtu, &flow1, &server1, reply_len);
        assert!(
            ok,
            "{source} {fam:?} control (no VIP, plain kernel forwarding): pod1 should learn the \
             path MTU {mtu} towards the client; `ip route get {}`: {route}; {log:?}",
            fam.client()
        );

        // Through the VIP: the translated reply does not fit the client
        // link either; the backend must be told (translated back), or
        // every such reply is lost.
        let to = vip(fam, 53);
        let server0 = df_udp_socket(&env.topo.pods[0], fam.pod_sock(0, UDP_BACKEND_PORT));
        let flow0 = UdpFlow::new(&env.topo.client, Some(fam.unspecified(port + 10)), to)
            .unwrap_or_else(|e| panic!("bind UDP port {}: {e:#}", port + 10));
        let peer = expected_peer(fam, source, 0);
        let before = stats(env.agent());
        let (ok, route, log) = learn_pmtu(&env.topo.pods[0], peer, mtu, &flow0, &server0, reply_len);
        let after = stats(env.agent());
        let delta: BTreeMap<&str, u64> = after
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(counter(&before, k));
                (d > 0).then_some((k.as_str(), d))
            })
            .collect();
        assert!(
            ok,
            "{source} {fam:?}: pod0 answers through {to} with {reply_len}-byte DF datagrams that \
             do not fit the {mtu}-byte client link; it should learn the path MTU {mtu} towards \
             {peer} (a fragmentation needed / packet too big translated back to it), as pod1 \
             did without a VIP. `ip route get {peer}` in pod0: {route}; exchanges: {log:?}; \
             stats delta: {delta:?}{}",
            env.diag()
        );
    }
}

/// Test 4b: the client's link has a smaller MTU (1300) than the pods'
/// (1500). A backend answering through the VIP with 1400-byte DF datagrams
/// (as QUIC does) must learn the path MTU, as it does without xlb (checked
/// first, on pod1, with plain kernel forwarding): otherwise every such
/// reply is silently lost. IPv4 and IPv6, `snat` and `preserve`.
#[test]
fn pmtu_of_a_narrower_client_link_reaches_the_backend() {
    require_root();
    pmtu_narrow_client_link("snat");
    pmtu_narrow_client_link("preserve");
}

/// Test 5: an agent started on pins whose connection table has another
/// size than `--flow-table-size` refuses to start (exit 1) and says which
/// flag and which pinned size; started with the pinned size it works and
/// keeps the services.
#[test]
fn pinned_maps_of_another_size_are_refused_with_advice() {
    require_root();
    let yaml = config(&[dns_svc("dns", Fam::V4, "snat", 0..2)]);
    let mut env = Env::new(2, &yaml);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..2, UDP_BACKEND_PORT);
    env.start_agent(&["--flow-table-size", "4096"]);
    let to = vip4(53);
    warm_up_udp(&env, to);
    let services_before = services_without_counters(env.agent());

    let mut first = env.agent.take().unwrap();
    let status = first.stop().expect("stop the first agent");
    assert_eq!(status.code(), Some(0), "SIGTERM exit status; log:\n{}", first.log());
    drop(first);
    let flows_pin = env.pin.path().join("v1").join("XLB_FLOWS");
    assert!(flows_pin.exists(), "{} should stay pinned after SIGTERM", flows_pin.display());

    let mut refused = Agent::spawn(&env.topo, env.config.path(), env.pin.path(), &["--flow-table-size", "8192"])
        .expect("spawn the second agent");
    let status = match refused.wait_exit(Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => {
            let healthy = refused.is_healthy();
            let _ = refused.stop();
            panic!(
                "an agent with --flow-table-size 8192 on pins made with 4096 should refuse to \
                 start (healthy: {healthy}): {e:#}"
            );
        }
    };
    let log = refused.log();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status of an agent started with --flow-table-size 8192 on a pinned table of \
         4096 entries; stderr:\n{log}"
    );
    assert!(
        log.contains("--flow-table-size") && log.contains("4096"),
        "the refusal should name --flow-table-size and the pinned size 4096; stderr:\n{log}"
    );
    drop(refused);
    for ifname in env.topo.node_interfaces() {
        assert!(
            !xdp_attached(&env.topo.node, &ifname),
            "the refused agent left an XDP program on {ifname}: {}",
            ip_link(&env.topo.node, &ifname)
        );
    }

    // With the pinned size it starts and keeps the services.
    env.start_agent(&["--flow-table-size", "4096"]);
    assert_eq!(
        services_without_counters(env.agent()),
        services_before,
        "xlb services after restarting with the pinned --flow-table-size{}",
        env.diag()
    );
    let (reply, from) = xlb_tests::udp_request(&env.topo.client, None, to, b"after", T)
        .unwrap_or_else(|e| panic!("UDP to {to} after the restart: {e:#}{}", env.diag()));
    check_reply(&reply, from, to, |i| Fam::V4.pod_gw(i), "after the restart")
        .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
}
