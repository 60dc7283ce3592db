//! The data-path tests' frames, built and read with `etherparse`: Ethernet
//! (optional 802.1Q tag), IPv4 (optional options) or IPv6 (optional
//! fragment header), then UDP, TCP or ICMP with the checksums etherparse
//! computes — or a *partial* L4 checksum (the non-complemented folded
//! pseudo-header sum a local sender with checksum offload leaves in the
//! field), or a zero UDP checksum.
//!
//! The output frames are parsed and their checksums recomputed by
//! etherparse too (`frame_decode.rs`: [`decode`], [`ipv4_header_csum_ok`],
//! [`icmp_csum_ok`]), independently of `lb_common::csum`, so the tests do
//! not check the data path against itself; a unit test compares the two.
//!
//! Deliberately malformed frames (bad IHL, version or lengths) are made by
//! mangling a built frame in the tests; [`fix_ipv4_csum`] then fixes only
//! the header checksum, as etherparse does not represent such headers.
#![allow(dead_code, reason = "shared by several test binaries, each using a part")]

use std::net::{IpAddr, SocketAddr};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, Icmpv4Header, Icmpv6Header, IpFragOffset, IpNumber,
    Ipv4Header, Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, SingleVlanHeader, TcpHeader, UdpHeader, VlanId, VlanPcp,
};

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

/// Internet checksum arithmetic, on etherparse's `Sum16BitWords`.
pub mod csum {
    use std::net::IpAddr;

    use etherparse::checksum::Sum16BitWords;

    /// The checksum field value (`~fold(sum)`, big-endian) of `bytes`.
    pub fn of(bytes: &[u8]) -> u16 {
        Sum16BitWords::new().add_slice(bytes).ones_complement().to_be()
    }

    /// The folded, non-complemented pseudo-header sum of TCP/UDP/ICMPv6: what
    /// a `CHECKSUM_PARTIAL` packet holds in its checksum field.
    pub fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: u32) -> u16 {
        let sum = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Sum16BitWords::new().add_4bytes(s.octets()).add_4bytes(d.octets()),
            (IpAddr::V6(s), IpAddr::V6(d)) => Sum16BitWords::new().add_16bytes(s.octets()).add_16bytes(d.octets()),
            _ => panic!("mixed address families {src} / {dst}"),
        };
        (!sum.add_2bytes([0, proto]).add_4bytes(len.to_be_bytes()).ones_complement()).to_be()
    }

    /// True when a checksum field holds the recomputed value; 0 and 0xffff
    /// are the same number in one's complement (a TCP checksum computing to
    /// 0 may be sent as either).
    pub fn matches(field: u16, computed: u16) -> bool {
        field == computed || (field, computed) == (0, 0xffff) || (field, computed) == (0xffff, 0)
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
        let (src, dst) = (self.src.ip(), self.dst.ip());
        let (sport, dport, payload) = (self.src.port(), self.dst.port(), &self.payload[..]);
        let header = match self.l4 {
            L4::Udp => {
                let mut h = UdpHeader::without_ipv4_checksum(sport, dport, payload.len()).expect("UDP length");
                h.checksum = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload),
                    (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload),
                    _ => panic!("mixed families {src} / {dst}"),
                }
                .expect("UDP checksum");
                h.to_bytes().to_vec()
            }
            L4::Tcp { flags, seq, ack } => {
                assert_eq!(flags & !(TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK), 0, "TCP flags {flags:#x}");
                let mut h = TcpHeader::new(sport, dport, seq, self.window);
                h.acknowledgment_number = ack;
                h.fin = flags & TCP_FIN != 0;
                h.syn = flags & TCP_SYN != 0;
                h.rst = flags & TCP_RST != 0;
                h.psh = flags & TCP_PSH != 0;
                h.ack = flags & TCP_ACK != 0;
                h.set_options_raw(&self.tcp_options).expect("TCP options");
                h.checksum = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload),
                    (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload),
                    _ => panic!("mixed families {src} / {dst}"),
                }
                .expect("TCP checksum");
                h.to_bytes().to_vec()
            }
            // Echo messages: id 0x1234, sequence 1.
            L4::Icmp(t) => icmp_message(src, dst, [t, 0, 0, 0, 0x12, 0x34, 0, 1], payload)[..8].to_vec(),
        };
        let mut seg = [&header[..], payload].concat();
        let off = self.l4_csum_off() - self.l4_off();
        let icmp4 = matches!(self.l4, L4::Icmp(_)) && !self.is_v6();
        let field = match self.csum {
            Csum::Full => None,
            _ if icmp4 => None,
            Csum::Partial => Some(csum::pseudo(src, dst, self.proto(), seg.len() as u32)),
            Csum::Zero => Some(0),
        };
        if let Some(c) = field {
            seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
        }
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
        let mut f = eth_header(self.eth_src, self.eth_dst, self.vlan, self.src.is_ipv6());
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h =
                    Ipv4Header::new(0, self.ttl, IpNumber(self.proto()), s.octets(), d.octets()).expect("IPv4 header");
                h.identification = IP_ID;
                h.dont_fragment = v4_frag & 0x4000 != 0;
                h.more_fragments = v4_frag & 0x2000 != 0;
                h.fragment_offset = IpFragOffset::try_new(v4_frag & 0x1fff).expect("fragment offset");
                h.options = self.ip_options.as_slice().try_into().expect("IPv4 options");
                h.set_payload_len(l4.len()).expect("IPv4 length");
                h.write(&mut f).expect("writing to a Vec");
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ext = if v6_frag.is_some() { Ipv6FragmentHeader::LEN } else { 0 };
                let h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: (ext + l4.len()) as u16,
                    next_header: IpNumber(if v6_frag.is_some() { PROTO_FRAGMENT } else { self.proto() }),
                    hop_limit: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                };
                h.write(&mut f).expect("writing to a Vec");
                if let Some((units, more)) = v6_frag {
                    let offset = IpFragOffset::try_new(units).expect("fragment offset");
                    let fh = Ipv6FragmentHeader::new(IpNumber(self.proto()), offset, more, IP6_FRAG_ID);
                    fh.write(&mut f).expect("writing to a Vec");
                }
            }
            _ => panic!("mixed families {} / {}", self.src, self.dst),
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

/// An Ethernet header (with an 802.1Q tag if `vlan`) for an IP packet.
fn eth_header(eth_src: [u8; 6], eth_dst: [u8; 6], vlan: Option<u16>, v6: bool) -> Vec<u8> {
    let ip = if v6 { EtherType::IPV6 } else { EtherType::IPV4 };
    let mut f = Vec::new();
    let outer = if vlan.is_some() { EtherType::VLAN_TAGGED_FRAME } else { ip };
    let eth = Ethernet2Header { source: eth_src, destination: eth_dst, ether_type: outer };
    eth.write(&mut f).expect("writing to a Vec");
    if let Some(id) = vlan {
        let tag = SingleVlanHeader {
            pcp: VlanPcp::ZERO,
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(id & 0x0fff).expect("VLAN id"),
            ether_type: ip,
        };
        tag.write(&mut f).expect("writing to a Vec");
    }
    f
}

/// An ICMP (ICMPv6 when the addresses are) message: the 8-byte `header`
/// (type, code, checksum, rest) with the checksum etherparse computes over
/// it and `body`, then `body`.
fn icmp_message(src: IpAddr, dst: IpAddr, header: [u8; 8], body: &[u8]) -> Vec<u8> {
    let mut m = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let (mut h, _) = Icmpv4Header::from_slice(&header).expect("an 8-byte ICMP header");
            h.update_checksum(body);
            h.to_bytes().to_vec()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let (mut h, _) = Icmpv6Header::from_slice(&header).expect("an 8-byte ICMPv6 header");
            h.update_checksum(s.octets(), d.octets(), body).expect("ICMPv6 length");
            h.to_bytes().to_vec()
        }
        _ => panic!("mixed families {src} / {dst}"),
    };
    m.extend_from_slice(body);
    m
}

/// The Ethernet and IP headers of a frame built around a ready payload
/// (IPv4: DF, TTL 64; IPv6: hop limit 64).
#[derive(Clone, Debug)]
pub struct Envelope {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification ([`IP_ID`] unless set).
    pub ip_id: u16,
}

impl Envelope {
    pub fn new(eth_src: [u8; 6], eth_dst: [u8; 6], src: IpAddr, dst: IpAddr) -> Self {
        Envelope { eth_src, eth_dst, vlan: None, src, dst, ip_id: IP_ID }
    }

    /// Ethernet + IP header around `payload`.
    pub fn frame(&self, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = eth_header(self.eth_src, self.eth_dst, self.vlan, self.src.is_ipv6());
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let len = u16::try_from(payload.len()).expect("IPv4 length");
                let mut h = Ipv4Header::new(len, 64, IpNumber(proto), s.octets(), d.octets()).expect("IPv4 header");
                h.identification = self.ip_id;
                h.write(&mut f).expect("writing to a Vec");
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: payload.len() as u16,
                    next_header: IpNumber(proto),
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                };
                h.write(&mut f).expect("writing to a Vec");
            }
            _ => panic!("mixed families {} / {}", self.src, self.dst),
        }
        f.extend_from_slice(payload);
        f
    }

    /// An ICMP error (IPv4: type/code as given; IPv6: ICMPv6) quoting
    /// `quote` (an IP packet, possibly cut), with correct checksums.
    pub fn icmp_error(&self, typ: u8, code: u8, quote: &[u8]) -> Vec<u8> {
        let msg = icmp_message(self.src, self.dst, [typ, code, 0, 0, 0, 0, 0, 0], quote);
        self.frame(if self.src.is_ipv6() { PROTO_ICMPV6 } else { PROTO_ICMP }, &msg)
    }
}

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
    Envelope::new(eth_src, eth_dst, src, dst).icmp_error(typ, code, quote)
}

/// Ethernet + IP header (IPv4: id 0x1234, DF, TTL 64; IPv6: hop limit 64)
/// around `payload`.
pub fn ip_frame(eth_src: [u8; 6], eth_dst: [u8; 6], src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    Envelope::new(eth_src, eth_dst, src, dst).frame(proto, payload)
}

/// Recomputes the IPv4 header checksum of the header at `l3` after a test
/// mangled the header on purpose (IHL, version, lengths etherparse will not
/// write), so that only the mangled field is wrong. Hand-written on purpose:
/// the header need not parse.
pub fn fix_ipv4_csum(f: &mut [u8], l3: usize) {
    let ihl = ((f[l3] & 0x0f) as usize * 4).clamp(20, f.len() - l3);
    f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let c = csum::of(&f[l3..l3 + ihl]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// An ARP request (who-has `target` tell `sender`), padded to 60 bytes.
pub fn arp_request(src_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f =
        Ethernet2Header { source: src_mac, destination: [0xff; 6], ether_type: EtherType::ARP }.to_bytes().to_vec();
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: src_mac,
        sender_ipv4: sender,
        target_mac: [0; 6],
        target_ipv4: target,
    };
    f.extend_from_slice(&arp.to_bytes());
    f.resize(60, 0);
    f
}

#[path = "frame_decode.rs"]
mod decode;
pub use decode::{decode, icmp_csum_ok, ipv4_header_csum_ok, Decoded};

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
