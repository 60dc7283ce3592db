//! ICMP and path MTU with real sockets: ping sockets, a raw ICMP sender,
//! UDP sockets that never fragment, and the path MTU a namespace learnt.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::time::{Duration, Instant};

use crate::Netns;

/// Lets root open ICMP "ping" sockets (`SOCK_DGRAM`, `IPPROTO_ICMP[V6]`) in
/// `ns`: `net.ipv4.ping_group_range` is per network namespace and empty by
/// default.
pub fn allow_ping_sockets(ns: &Netns) {
    ns.run(|| std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"))
        .unwrap_or_else(|e| panic!("set net.ipv4.ping_group_range in {}: {e}", ns.name));
}

/// Opens a datagram-style socket of any kind inside `ns` and wraps it in a
/// `UdpSocket`, which is only a file descriptor with `sendto`/`recvfrom`
/// (that is all ping and raw sockets need here).
pub fn socket_in(ns: &Netns, domain: i32, ty: i32, proto: i32) -> std::io::Result<UdpSocket> {
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
pub struct PingReport {
    /// Echo requests sent.
    pub sent: usize,
    /// Requests answered by a matching echo reply.
    pub answered: usize,
    /// Anything unexpected: errors, foreign replies.
    pub notes: Vec<String>,
}

/// Sends `count` ICMP/ICMPv6 echo requests from `ns` to `dst` (one at a
/// time, each waiting up to `wait` for its reply) through a ping socket, as
/// `ping -c COUNT -W WAIT` does (see [`allow_ping_sockets`]). A reply
/// counts when it comes from `dst`, is an echo reply with the request's
/// sequence number and echoes the payload.
pub fn ping(ns: &Netns, dst: IpAddr, count: u16, wait: Duration) -> PingReport {
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

/// Sends, from `ns` through a raw socket, an ICMP "fragmentation needed"
/// (IPv4) or ICMPv6 "packet too big" with next-hop MTU `mtu` to `to`,
/// quoting `quoted` (see [`crate::packet::quoted_udp`]): what a router says
/// about a packet too big for its next link.
pub fn send_frag_needed(ns: &Netns, to: IpAddr, mtu: u16, quoted: &[u8]) {
    let (domain, proto) = match to {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    let sock = socket_in(ns, domain, libc::SOCK_RAW, proto)
        .unwrap_or_else(|e| panic!("open a raw ICMP socket in {}: {e}", ns.name));
    let msg = crate::packet::frag_needed(to.is_ipv6(), mtu, quoted);
    sock.send_to(&msg, SocketAddr::new(to, 0)).unwrap_or_else(|e| panic!("send the ICMP error to {to}: {e}"));
}

/// A UDP socket in `ns` bound to `bind` whose datagrams carry DF and are
/// never fragmented locally (`IP_PMTUDISC_DO` / `IPV6_PMTUDISC_DO`), as
/// QUIC servers send theirs. Reads time out after 50 ms.
pub fn df_udp_socket(ns: &Netns, bind: SocketAddr) -> UdpSocket {
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

/// `ip route get DST` inside `ns` (shows a learnt path MTU as `mtu N`), or
/// why it failed.
pub fn route_get(ns: &Netns, dst: IpAddr) -> String {
    ns.ip(&["route", "get", &dst.to_string()])
        .map_or_else(|e| format!("(ip route get {dst}: {e:#})"), |o| String::from_utf8_lossy(&o.stdout).into_owned())
}
