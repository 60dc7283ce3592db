//! ICMP through the VIP: errors about a translated flow are translated
//! back to the right party (port unreachable from a backend to the client,
//! fragmentation needed / packet too big from the client side to the
//! backend, and from the node itself when the client's link is narrower
//! than the pods'); echo requests to a VIP are answered. IPv4 and IPv6,
//! `snat` and `preserve`. Needs root (CI runs it as root with
//! `--test-threads=1`).

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use xlb_tests::icmp::{allow_ping_sockets, df_udp_socket, ping, route_get, send_frag_needed};
use xlb_tests::packet::quoted_udp;
use xlb_tests::{udp_probe, Netns, Probe, Topology, UdpFlow};

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
        let to = fam.vip(53);
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

/// A UDP service whose one backend has no listener on the backend
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

/// Echo requests to a VIP with services are answered (by xlb, the
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
        let to = fam.vip(53);
        warm_up_udp(&env, to);
        // One flow through the VIP, so the node knows it.
        let flow = UdpFlow::new(&env.topo.client, Some(fam.unspecified(port)), to)
            .unwrap_or_else(|e| panic!("bind UDP port {port}: {e:#}"));
        let (reply, from) = flow
            .request(b"hello", T)
            .unwrap_or_else(|e| panic!("{source} {fam:?}: UDP from port {port} to {to}: {e:#}{}", env.diag()));
        let i = check_reply(&reply, from, to, |i| fam.peer_seen(source, i), "the flow")
            .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
        assert_eq!(i, 0, "one backend only");
        // The address pod0 sends this flow's replies to.
        let peer = fam.peer_seen(source, 0);
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
        check_reply(&reply, from, to, |i| fam.peer_seen(source, i), "the flow afterwards")
            .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
    }
}

/// An ICMP "fragmentation needed" (ICMPv6 "packet too big") from
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
        let to = fam.vip(53);
        let server0 = df_udp_socket(&env.topo.pods[0], fam.pod_sock(0, UDP_BACKEND_PORT));
        let flow0 = UdpFlow::new(&env.topo.client, Some(fam.unspecified(port + 10)), to)
            .unwrap_or_else(|e| panic!("bind UDP port {}: {e:#}", port + 10));
        let peer = fam.peer_seen(source, 0);
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

/// The client's link has a smaller MTU (1300) than the pods'
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
