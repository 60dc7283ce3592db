//! L2 as a client on the segment sees it, for the announcement tests
//! (`--announce l2`): an `AF_PACKET` [`Capture`] on one interface that also
//! sends whole frames, ARP requests and neighbour solicitations built with
//! etherparse, decoders for the answers and announcements, and a
//! namespace's neighbour entries and MACs (from `ip -j`).
//!
//! The questions can be asked from any identity (MAC and address): asked
//! from one the client's kernel does not own, the answers leave the
//! client's own neighbour table alone (a veth delivers frames for other
//! MACs, which the capture sees and the kernel drops).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use etherparse::{
    ArpOperation, Icmpv6Header, Icmpv6Type, IpNumber, Ipv6FlowLabel, Ipv6Header, LinkSlice, NetSlice, SlicedPacket,
    TransportSlice,
};

use crate::Netns;

/// The MAC of `ifname` in `ns`; panics if it has none.
pub fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let out = ns.ip(&["-j", "link", "show", ifname]).unwrap_or_else(|e| panic!("ip link show {ifname}: {e:#}"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link prints JSON");
    parse_mac(v[0]["address"].as_str().unwrap_or_else(|| panic!("{ifname} in {} has no MAC: {v}", ns.name)))
}

/// `"02:de:ad:be:ef:01"` as bytes; panics on anything else.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let b: Vec<u8> =
        s.split(':').map(|x| u8::from_str_radix(x, 16).unwrap_or_else(|e| panic!("MAC {s:?}: {e}"))).collect();
    b.try_into().unwrap_or_else(|_| panic!("MAC {s:?}: not 6 bytes"))
}

/// `ns`'s neighbour entry for `ip` on `dev`: (MAC, states joined by
/// commas), if there is one with a MAC.
pub fn neighbour(ns: &Netns, dev: &str, ip: IpAddr) -> Option<([u8; 6], String)> {
    let out = ns.ip(&["-j", "neigh", "show", &ip.to_string(), "dev", dev]).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let e = v.get(0)?;
    let mac = parse_mac(e.get("lladdr")?.as_str()?);
    let state = e["state"].as_array().map(|s| s.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","));
    Some((mac, state.unwrap_or_default()))
}

/// An ARP frame's (operation, sender MAC, sender IP, target IP).
pub type Arp = (ArpOperation, [u8; 6], [u8; 4], [u8; 4]);

/// The ARP message in Ethernet frame `f`, if it is one.
pub fn arp_of(f: &[u8]) -> Option<Arp> {
    let p = SlicedPacket::from_ethernet(f).ok()?;
    let Some(NetSlice::Arp(a)) = p.net else { return None };
    Some((
        a.operation(),
        a.sender_hw_addr().try_into().ok()?,
        a.sender_protocol_addr().try_into().ok()?,
        a.target_protocol_addr().try_into().ok()?,
    ))
}

/// A neighbour advertisement's (Ethernet source, IPv6 destination,
/// override flag, solicited flag, target).
pub type Advert = ([u8; 6], [u8; 16], bool, bool, [u8; 16]);

/// Six bytes as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Whether `f` is a gratuitous ARP for `vip` sent by `mac`: a request or a
/// reply whose sender and target addresses are both `vip`.
pub fn is_gratuitous_arp(f: &[u8], vip: Ipv4Addr, mac: [u8; 6]) -> bool {
    arp_of(f).is_some_and(|(op, sha, spa, tpa)| {
        (op == ArpOperation::REQUEST || op == ArpOperation::REPLY)
            && sha == mac
            && spa == vip.octets()
            && tpa == vip.octets()
    })
}

/// The sender MAC of `f` if it is an ARP reply for `ip` (sender address `ip`).
pub fn arp_reply_for(f: &[u8], ip: Ipv4Addr) -> Option<[u8; 6]> {
    arp_of(f).and_then(|(op, sha, spa, _)| (op == ArpOperation::REPLY && spa == ip.octets()).then_some(sha))
}

/// The neighbour advertisement in Ethernet frame `f`, if it is one; panics
/// if its ICMPv6 checksum is wrong (etherparse computes it).
pub fn neighbour_advert(f: &[u8]) -> Option<Advert> {
    let p = SlicedPacket::from_ethernet(f).ok()?;
    let Some(LinkSlice::Ethernet2(eth)) = p.link else { return None };
    let Some(NetSlice::Ipv6(ip)) = &p.net else { return None };
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else { return None };
    let Icmpv6Type::NeighborAdvertisement(na) = icmp.icmp_type() else { return None };
    let h = ip.header();
    let sum = icmp.icmp_type().calc_checksum(h.source(), h.destination(), icmp.payload()).ok()?;
    assert_eq!(sum, icmp.checksum(), "the NA's ICMPv6 checksum");
    Some((eth.source(), h.destination(), na.r#override, na.solicited, icmp.payload().get(..16)?.try_into().ok()?))
}

/// The target of the neighbour solicitation in frame `f` and its
/// Ethernet source, if it is one.
pub fn neighbour_solicitation_of(f: &[u8]) -> Option<([u8; 6], [u8; 16])> {
    let p = SlicedPacket::from_ethernet(f).ok()?;
    let Some(LinkSlice::Ethernet2(eth)) = p.link else { return None };
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else { return None };
    if icmp.icmp_type() != Icmpv6Type::NeighborSolicitation {
        return None;
    }
    Some((eth.source(), icmp.payload().get(..16)?.try_into().ok()?))
}

/// A broadcast ARP request "who has `ip`? tell `from` (`mac`)".
pub fn arp_request(mac: [u8; 6], from: Ipv4Addr, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&from.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// A neighbour solicitation for `target` from `from` (`mac`, given in the
/// source link-layer address option), to the target's solicited-node
/// multicast group, as a kernel resolving `target` sends it.
pub fn neighbour_solicitation(mac: [u8; 6], from: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
    let g = group.octets();
    let mut payload = t.to_vec();
    payload.extend_from_slice(&[1, 1]);
    payload.extend_from_slice(&mac);
    let icmp =
        Icmpv6Header::with_checksum(Icmpv6Type::NeighborSolicitation, from.octets(), g, &payload).expect("an NS fits");
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: u16::try_from(icmp.header_len() + payload.len()).expect("an NS fits"),
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: 255,
        source: from.octets(),
        destination: g,
    };
    let mut f = vec![0x33, 0x33, g[12], g[13], g[14], g[15]];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    ip.write(&mut f).expect("writing to a Vec");
    icmp.write(&mut f).expect("writing to a Vec");
    f.extend_from_slice(&payload);
    f
}

/// A raw packet socket on one interface of a namespace: sees every frame
/// that arrives there or leaves from there, sends whole frames. Reads time
/// out after 100 ms, so every wait on it is bounded.
pub struct Capture {
    fd: OwnedFd,
    ifindex: i32,
}

impl Capture {
    /// Opens the capture on `ifname` in `ns`; panics with what failed.
    pub fn open(ns: &Netns, ifname: &str) -> Capture {
        let ifname = ifname.to_string();
        ns.run(move || {
            let c = std::ffi::CString::new(ifname.clone()).expect("an interface name");
            // SAFETY: NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
            assert!(ifindex > 0, "no interface {ifname}");
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: socket(2) with constant arguments.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: a new descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: zeroed sockaddr_ll is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto;
            sa.sll_ifindex = ifindex;
            // SAFETY: bind(2) with a sockaddr_ll of its size.
            let rc = unsafe {
                libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
            };
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
            // SAFETY: setsockopt with a timeval of its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
            Capture { fd, ifindex }
        })
    }

    /// The next frame within 100 ms, if any.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        // SAFETY: recv(2) into a buffer we own, of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        (n > 0).then(|| buf[..n as usize].to_vec())
    }

    /// Frames arriving until `pred` holds for one (returned) or `limit` passes.
    pub fn wait_for(&self, limit: Duration, mut pred: impl FnMut(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(f) = self.recv() {
                if pred(&f) {
                    return Some(f);
                }
            }
        }
        None
    }

    /// Sends one whole frame; panics if it cannot.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: sendto(2) with a frame and a sockaddr_ll we own.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(n, frame.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    }

    /// Reads and drops the frames queued so far (for 300 ms), so that what
    /// follows is an answer to what is sent next.
    pub fn drain(&self) {
        self.wait_for(Duration::from_millis(300), |_| false);
    }

    /// Asks who has `ip` (an ARP request from `mac`/`from`); the MAC that
    /// answers first within 2 s, if any.
    pub fn arp_ask(&self, mac: [u8; 6], from: Ipv4Addr, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.drain();
        self.send(&arp_request(mac, from, ip));
        let reply = self.wait_for(Duration::from_secs(2), |fr| {
            arp_of(fr).is_some_and(|(op, _, spa, _)| op == ArpOperation::REPLY && spa == ip.octets())
        })?;
        arp_of(&reply).map(|(_, sha, _, _)| sha)
    }

    /// Asks who has `ip` (an ARP request from `mac`/`from`) and collects
    /// for `window` every ARP reply for it sent to `mac`: the answering
    /// MACs, one per reply (so two nodes answering show as two entries).
    pub fn arp_answers(&self, mac: [u8; 6], from: Ipv4Addr, ip: Ipv4Addr, window: Duration) -> Vec<[u8; 6]> {
        self.drain();
        self.send(&arp_request(mac, from, ip));
        self.collect(window, |f| {
            let (op, sha, spa, tpa) = arp_of(f)?;
            (op == ArpOperation::REPLY && spa == ip.octets() && tpa == from.octets() && f[..6] == mac).then_some(sha)
        })
    }

    /// Solicits `ip` (an NS from `mac`/`from`) and collects for `window`
    /// every solicited neighbour advertisement for it sent to `from`: the
    /// answering MACs (Ethernet source), one per advertisement.
    pub fn ns_answers(&self, mac: [u8; 6], from: Ipv6Addr, ip: Ipv6Addr, window: Duration) -> Vec<[u8; 6]> {
        self.drain();
        self.send(&neighbour_solicitation(mac, from, ip));
        self.collect(window, |f| {
            let (src, dst, _, solicited, target) = neighbour_advert(f)?;
            (solicited && target == ip.octets() && dst == from.octets() && f[..6] == mac).then_some(src)
        })
    }

    /// What `pick` returns for the frames arriving within `window`.
    pub fn collect<T>(&self, window: Duration, mut pick: impl FnMut(&[u8]) -> Option<T>) -> Vec<T> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            if let Some(t) = self.recv().as_deref().and_then(&mut pick) {
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(op: u8, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&sha);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op]);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&spa.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa.octets());
        f
    }

    #[test]
    fn macs_round_trip() {
        let m = parse_mac("02:de:ad:be:ef:01");
        assert_eq!(m, [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01]);
        assert_eq!(format_mac(m), "02:de:ad:be:ef:01");
    }

    #[test]
    fn gratuitous_arp_is_recognised() {
        let vip = Ipv4Addr::new(10, 100, 0, 100);
        let other = Ipv4Addr::new(10, 100, 0, 2);
        let mac = [2, 0, 0, 0, 0, 1];
        assert!(is_gratuitous_arp(&arp(1, mac, vip, vip), vip, mac));
        assert!(is_gratuitous_arp(&arp(2, mac, vip, vip), vip, mac));
        assert!(!is_gratuitous_arp(&arp(1, mac, other, vip), vip, mac), "an ordinary request");
        assert!(!is_gratuitous_arp(&arp(1, [2, 0, 0, 0, 0, 2], vip, vip), vip, mac), "another sender");
        assert!(!is_gratuitous_arp(&arp(1, mac, other, other), vip, mac), "another address");
        assert_eq!(arp_of(&arp(1, mac, other, vip)), Some((ArpOperation::REQUEST, mac, other.octets(), vip.octets())));
        assert_eq!(arp_of(&[0u8; 10]), None);
        assert_eq!(arp_reply_for(&arp(2, mac, vip, other), vip), Some(mac));
        assert_eq!(arp_reply_for(&arp(1, mac, vip, other), vip), None, "a request");
        assert_eq!(arp_reply_for(&arp(2, mac, other, vip), vip), None, "another address");
    }
}
