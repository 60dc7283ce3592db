//! A small builder and decoder of Ethernet frames for the data-path tests:
//! Ethernet (optional 802.1Q tag), IPv4 (optional options) or IPv6 (optional
//! fragment header), then UDP, TCP or ICMP with correct checksums — or a
//! *partial* L4 checksum (the non-complemented folded pseudo-header sum a
//! local sender with checksum offload leaves in the field), or a zero UDP
//! checksum.
//!
//! The checksum code here is written independently of `lb_common::csum`
//! (big-endian words, as RFC 1071 states it) so that the tests do not check
//! the data path against itself; a unit test below compares the two.
#![allow(dead_code, reason = "shared by several test binaries, each using a part")]

use std::net::{IpAddr, SocketAddr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_FRAGMENT: u8 = 44;
pub const PROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Internet checksum arithmetic on big-endian 16-bit words.
pub mod csum {
    use std::net::IpAddr;

    /// Adds `bytes` as big-endian 16-bit words (odd tail padded with zero).
    pub fn sum(mut acc: u64, bytes: &[u8]) -> u64 {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [b] = chunks.remainder() {
            acc += u64::from(*b) << 8;
        }
        acc
    }

    /// Folds the accumulator to 16 bits with end-around carry.
    pub fn fold(mut acc: u64) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// The pseudo-header sum of TCP/UDP/ICMPv6 (not folded, not complemented).
    pub fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: u32) -> u64 {
        let mut acc = 0;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                acc = sum(acc, &s.octets());
                acc = sum(acc, &d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                acc = sum(acc, &s.octets());
                acc = sum(acc, &d.octets());
            }
            _ => panic!("mixed address families {src} / {dst}"),
        }
        acc + u64::from(proto) + u64::from(len >> 16) + u64::from(len & 0xffff)
    }

    /// The value a complete checksum field must hold: `~fold(sum)`.
    pub fn complete(acc: u64) -> u16 {
        !fold(acc)
    }

    /// True when a header or segment (checksum field included) verifies.
    pub fn verifies(acc: u64) -> bool {
        fold(acc) == 0xffff
    }
}

/// Transport header of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Udp,
    Tcp {
        flags: u8,
        seq: u32,
        ack: u32,
    },
    /// ICMP (ICMPv6 over IPv6) echo message of this type (8/128 request,
    /// 0/129 reply), id 0x1234, sequence 1; ports are ignored.
    Icmp(u8),
}

/// What the L4 checksum field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// A complete, correct checksum.
    Full,
    /// The folded, non-complemented pseudo-header sum (`CHECKSUM_PARTIAL`).
    Partial,
    /// Zero (UDP over IPv4: "no checksum").
    Zero,
}

/// One frame to build.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub vlan: Option<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l4: L4,
    /// IPv4 options (padded to a multiple of 4 with EOL).
    pub ip_options: Vec<u8>,
    /// IPv4 flags + fragment offset field (host order), e.g. 0x4000 = DF.
    pub frag: u16,
    /// IPv6: insert a fragment header (offset 0, more fragments).
    pub v6_fragment: bool,
    pub ttl: u8,
    /// TCP window.
    pub window: u16,
    /// TCP options (padded to a multiple of 4 with EOL).
    pub tcp_options: Vec<u8>,
    pub payload: Vec<u8>,
    pub csum: Csum,
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("bad socket address {s:?}: {e}"))
}

impl Pkt {
    fn new(src: &str, dst: &str, l4: L4) -> Self {
        Pkt {
            eth_src: [0x02, 0, 0, 0xee, 0xee, 0xee],
            eth_dst: [0x02, 0, 0, 0xdd, 0xdd, 0xdd],
            vlan: None,
            src: sock(src),
            dst: sock(dst),
            l4,
            ip_options: Vec::new(),
            frag: 0x4000,
            v6_fragment: false,
            ttl: 64,
            window: 64240,
            tcp_options: Vec::new(),
            payload: b"xlb data path test payload".to_vec(),
            csum: Csum::Full,
        }
    }

    /// A UDP datagram from `src` to `dst` ("ip:port", "[v6]:port").
    pub fn udp(src: &str, dst: &str) -> Self {
        Self::new(src, dst, L4::Udp)
    }

    /// A TCP segment with `flags`.
    pub fn tcp(src: &str, dst: &str, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp { flags, seq: 0x1000_0000, ack: if flags & TCP_ACK != 0 { 0x2000_0000 } else { 0 } },
        )
    }

    /// An ICMP (ICMPv6) echo request between two addresses.
    pub fn icmp(src: &str, dst: &str) -> Self {
        let s: IpAddr = src.parse().expect("address");
        let d: IpAddr = dst.parse().expect("address");
        let mut p = Self::new("0.0.0.0:0", "0.0.0.0:0", L4::Icmp(if s.is_ipv6() { 128 } else { 8 }));
        p.src = SocketAddr::new(s, 0);
        p.dst = SocketAddr::new(d, 0);
        p
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.eth_src = src;
        self.eth_dst = dst;
        self
    }
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
        self
    }
    pub fn ip_options(mut self, opts: &[u8]) -> Self {
        self.ip_options = opts.to_vec();
        while !self.ip_options.len().is_multiple_of(4) {
            self.ip_options.push(0);
        }
        assert!(self.ip_options.len() <= 40, "IPv4 options are at most 40 bytes");
        self
    }
    pub fn tcp_options(mut self, opts: &[u8]) -> Self {
        self.tcp_options = opts.to_vec();
        while !self.tcp_options.len().is_multiple_of(4) {
            self.tcp_options.push(0);
        }
        assert!(self.tcp_options.len() <= 40, "TCP options are at most 40 bytes");
        self
    }
    pub fn frag(mut self, field: u16) -> Self {
        self.frag = field;
        self
    }
    pub fn v6_fragment(mut self) -> Self {
        self.v6_fragment = true;
        self
    }
    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }
    pub fn csum(mut self, c: Csum) -> Self {
        self.csum = c;
        self
    }
    pub fn partial(self) -> Self {
        self.csum(Csum::Partial)
    }
    pub fn src(mut self, s: &str) -> Self {
        self.src = sock(s);
        self
    }
    pub fn dst(mut self, s: &str) -> Self {
        self.dst = sock(s);
        self
    }
    pub fn src_port(mut self, port: u16) -> Self {
        self.src.set_port(port);
        self
    }
    /// TCP sequence and acknowledgment numbers.
    pub fn tcp_seq(mut self, s: u32, a: u32) -> Self {
        match &mut self.l4 {
            L4::Tcp { seq, ack, .. } => {
                *seq = s;
                *ack = a;
            }
            other => panic!("tcp_seq on {other:?}"),
        }
        self
    }

    pub fn tcp_flags(mut self, f: u8) -> Self {
        match &mut self.l4 {
            L4::Tcp { flags, ack, .. } => {
                *flags = f;
                if f & TCP_ACK != 0 && *ack == 0 {
                    *ack = 0x2000_0000;
                }
            }
            other => panic!("tcp_flags on {other:?}"),
        }
        self
    }

    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }

    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Udp => PROTO_UDP,
            L4::Tcp { .. } => PROTO_TCP,
            L4::Icmp(_) if self.is_v6() => PROTO_ICMPV6,
            L4::Icmp(_) => PROTO_ICMP,
        }
    }

    /// Offset of the IP header.
    pub fn l3_off(&self) -> usize {
        14 + if self.vlan.is_some() { 4 } else { 0 }
    }

    /// Offset of the transport header.
    pub fn l4_off(&self) -> usize {
        self.l3_off()
            + if self.is_v6() { 40 + if self.v6_fragment { 8 } else { 0 } } else { 20 + self.ip_options.len() }
    }

    /// Offset of the L4 checksum field.
    pub fn l4_csum_off(&self) -> usize {
        self.l4_off()
            + match self.l4 {
                L4::Udp => 6,
                L4::Tcp { .. } => 16,
                L4::Icmp(_) => 2,
            }
    }

    /// The transport segment with its checksum field.
    fn segment(&self) -> Vec<u8> {
        let mut seg = Vec::new();
        match self.l4 {
            L4::Udp => {
                seg.extend_from_slice(&self.src.port().to_be_bytes());
                seg.extend_from_slice(&self.dst.port().to_be_bytes());
                seg.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
            }
            L4::Tcp { flags, seq, ack } => {
                seg.extend_from_slice(&self.src.port().to_be_bytes());
                seg.extend_from_slice(&self.dst.port().to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.push(((5 + self.tcp_options.len() / 4) as u8) << 4);
                seg.push(flags);
                seg.extend_from_slice(&self.window.to_be_bytes());
                seg.extend_from_slice(&[0, 0, 0, 0]);
                seg.extend_from_slice(&self.tcp_options);
            }
            L4::Icmp(t) => {
                seg.extend_from_slice(&[t, 0, 0, 0]);
                seg.extend_from_slice(&[0x12, 0x34, 0, 1]);
            }
        }
        seg.extend_from_slice(&self.payload);
        let len = seg.len() as u32;
        let pseudo = csum::pseudo(self.src.ip(), self.dst.ip(), self.proto(), len);
        let c = match (&self.l4, self.csum) {
            (L4::Icmp(_), _) if !self.is_v6() => csum::complete(csum::sum(0, &seg)),
            (_, Csum::Full) => {
                let c = csum::complete(csum::sum(pseudo, &seg));
                if c == 0 && self.l4 == L4::Udp {
                    0xffff
                } else {
                    c
                }
            }
            (_, Csum::Partial) => csum::fold(pseudo),
            (_, Csum::Zero) => 0,
        };
        let off = self.l4_csum_off() - self.l4_off();
        seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
        seg
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let v6_frag = if self.v6_fragment { Some((0, true)) } else { None };
        self.frame_with(&self.segment(), self.frag, v6_frag)
    }

    /// The datagram split in two fragments after `cut` bytes of its L4
    /// segment (a multiple of 8): the first carries the L4 header (IPv4: MF
    /// set; IPv6: a fragment header with M set), the second the rest.
    pub fn fragments(&self, cut: usize) -> (Vec<u8>, Vec<u8>) {
        assert!(cut.is_multiple_of(8) && cut > 0, "fragment boundaries are multiples of 8");
        let seg = self.segment();
        assert!(cut < seg.len(), "nothing left for the second fragment");
        let units = (cut / 8) as u16;
        (
            self.frame_with(&seg[..cut], 0x2000, Some((0, true))),
            self.frame_with(&seg[cut..], units, Some((units, false))),
        )
    }

    /// Ethernet + IP header (+ IPv6 fragment header) around `l4`. IPv4:
    /// `v4_frag` is the flags/offset field; IPv6: `v6_frag` = (offset in
    /// 8-byte units, more fragments) adds a fragment header.
    fn frame_with(&self, l4: &[u8], v4_frag: u16, v6_frag: Option<(u16, bool)>) -> Vec<u8> {
        assert_eq!(self.src.is_ipv6(), self.dst.is_ipv6(), "mixed families");
        let mut f = Vec::new();
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        if let Some(id) = self.vlan {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let l3 = f.len();
                let ihl = 20 + self.ip_options.len();
                f.push(0x40 | (ihl / 4) as u8);
                f.push(0);
                f.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
                f.extend_from_slice(&IP_ID.to_be_bytes());
                f.extend_from_slice(&v4_frag.to_be_bytes());
                f.push(self.ttl);
                f.push(self.proto());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&self.ip_options);
                fix_ipv4_csum(&mut f, l3);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                let ext = if v6_frag.is_some() { 8 } else { 0 };
                f.extend_from_slice(&((ext + l4.len()) as u16).to_be_bytes());
                f.push(if v6_frag.is_some() { PROTO_FRAGMENT } else { self.proto() });
                f.push(self.ttl);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                if let Some((units, more)) = v6_frag {
                    f.extend_from_slice(&[self.proto(), 0]);
                    f.extend_from_slice(&((units << 3) | u16::from(more)).to_be_bytes());
                    f.extend_from_slice(&IP6_FRAG_ID.to_be_bytes());
                }
            }
            _ => unreachable!(),
        }
        f.extend_from_slice(l4);
        f
    }

    /// The IP packet (no Ethernet header) as `build` makes it: what an ICMP
    /// error quotes.
    pub fn ip_packet(&self) -> Vec<u8> {
        self.build()[self.l3_off()..].to_vec()
    }
}

/// IPv4 identification of every built packet.
pub const IP_ID: u16 = 0x1234;
/// Identification of every built IPv6 fragment header.
pub const IP6_FRAG_ID: u32 = 0xcafe_babe;

/// An ICMP error (IPv4: type/code as given; IPv6: ICMPv6) from `src` to
/// `dst` quoting `quote` (an IP packet, possibly cut), with correct
/// checksums. IPv4 outer header: id 0x1234, DF, TTL 64.
pub fn icmp_error(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    typ: u8,
    code: u8,
    quote: &[u8],
) -> Vec<u8> {
    let mut msg = vec![typ, code, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(quote);
    let v6 = src.is_ipv6();
    let c = if v6 {
        csum::complete(csum::sum(csum::pseudo(src, dst, PROTO_ICMPV6, msg.len() as u32), &msg))
    } else {
        csum::complete(csum::sum(0, &msg))
    };
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    ip_frame(eth_src, eth_dst, src, dst, if v6 { PROTO_ICMPV6 } else { PROTO_ICMP }, &msg)
}

/// Ethernet + IP header (IPv4: id 0x1234, DF, TTL 64; IPv6: hop limit 64)
/// around `payload`.
pub fn ip_frame(eth_src: [u8; 6], eth_dst: [u8; 6], src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = [eth_dst, eth_src].concat();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            f.extend_from_slice(&IP_ID.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            fix_ipv4_csum(&mut f, 14);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    f.extend_from_slice(payload);
    f
}

/// Recomputes the IPv4 header checksum of the header at `l3` (after a test
/// mangled the header on purpose, so only the mangled field is wrong).
pub fn fix_ipv4_csum(f: &mut [u8], l3: usize) {
    let ihl = ((f[l3] & 0x0f) as usize * 4).max(20).min(f.len() - l3);
    f[l3 + 10] = 0;
    f[l3 + 11] = 0;
    let c = csum::complete(csum::sum(0, &f[l3..l3 + ihl]));
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// An ARP request (who-has `target` tell `sender`).
pub fn arp_request(src_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

/// A frame decoded for assertions and failure messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    /// IPv4 header checksum verifies (always true for IPv6).
    pub ip_csum_ok: bool,
    /// The L4 checksum field.
    pub l4_csum: u16,
    /// The L4 checksum verifies by full recomputation.
    pub l4_csum_ok: bool,
    /// The folded pseudo-header sum of this header (what a partial
    /// checksum field must hold).
    pub pseudo: u16,
    pub l4_off: usize,
    pub l4_csum_off: usize,
    pub ip_csum_off: Option<usize>,
}

impl Decoded {
    pub fn src_sock(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.sport)
    }
    pub fn dst_sock(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dport)
    }
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "MAC addresses are passed by reference throughout")]
pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl std::fmt::Display for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}{} {} -> {} proto {} ttl {} ip_csum_ok={} l4_csum={:#06x} (verifies={}, pseudo={:#06x})",
            mac_str(&self.eth_src),
            mac_str(&self.eth_dst),
            self.vlan.map(|v| format!(" vlan {v}")).unwrap_or_default(),
            self.src_sock(),
            self.dst_sock(),
            self.proto,
            self.ttl,
            self.ip_csum_ok,
            self.l4_csum,
            self.l4_csum_ok,
            self.pseudo,
        )
    }
}

/// Decodes an Ethernet/IP/UDP-or-TCP frame; `None` for anything else or a
/// truncated frame.
pub fn decode(f: &[u8]) -> Option<Decoded> {
    let be16 = |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?])) };
    let mut l3 = 14;
    let mut ethertype = be16(12)?;
    let mut vlan = None;
    if ethertype == ETH_P_8021Q {
        vlan = Some(be16(14)? & 0x0fff);
        ethertype = be16(16)?;
        l3 = 18;
    }
    let (src, dst, proto, ttl, l4, l4_len, ip_csum_ok, ip_csum_off) = match ethertype {
        ETH_P_IP => {
            let ihl = (*f.get(l3)? as usize & 0x0f) * 4;
            let tot = be16(l3 + 2)? as usize;
            let hdr = f.get(l3..l3 + ihl)?;
            let ok = csum::verifies(csum::sum(0, hdr));
            let s: [u8; 4] = f.get(l3 + 12..l3 + 16)?.try_into().ok()?;
            let d: [u8; 4] = f.get(l3 + 16..l3 + 20)?.try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), f[l3 + 9], f[l3 + 8], l3 + ihl, tot.checked_sub(ihl)?, ok, Some(l3 + 10))
        }
        ETH_P_IPV6 => {
            let s: [u8; 16] = f.get(l3 + 8..l3 + 24)?.try_into().ok()?;
            let d: [u8; 16] = f.get(l3 + 24..l3 + 40)?.try_into().ok()?;
            let (mut proto, mut l4, mut len) = (f[l3 + 6], l3 + 40, be16(l3 + 4)? as usize);
            if proto == PROTO_FRAGMENT {
                proto = *f.get(l4)?;
                l4 += 8;
                len = len.checked_sub(8)?;
            }
            (IpAddr::from(s), IpAddr::from(d), proto, f[l3 + 7], l4, len, true, None)
        }
        _ => return None,
    };
    let csum_rel = match proto {
        PROTO_UDP => 6,
        PROTO_TCP => 16,
        _ => return None,
    };
    let seg = f.get(l4..l4 + l4_len)?;
    let pseudo = csum::pseudo(src, dst, proto, l4_len as u32);
    Some(Decoded {
        eth_dst: f[0..6].try_into().ok()?,
        eth_src: f[6..12].try_into().ok()?,
        vlan,
        src,
        dst,
        proto,
        sport: be16(l4)?,
        dport: be16(l4 + 2)?,
        ttl,
        ip_csum_ok,
        l4_csum: be16(l4 + csum_rel)?,
        l4_csum_ok: csum::verifies(csum::sum(pseudo, seg)),
        pseudo: csum::fold(pseudo),
        l4_off: l4,
        l4_csum_off: l4 + csum_rel,
        ip_csum_off,
    })
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
