//! Reading frames back with etherparse: the output of the data path is
//! parsed and its checksums recomputed by etherparse, not by the code that
//! built the input.

use std::net::{IpAddr, SocketAddr};

use etherparse::{
    Icmpv4Header, Icmpv4Slice, Icmpv6Slice, Ipv4Header, LinkExtSlice, LinkSlice, NetSlice, SlicedPacket,
    TcpHeaderSlice, UdpHeader, UdpHeaderSlice,
};

use xlb_tests::datapath_topology::mac_str;

use super::{csum, PROTO_TCP, PROTO_UDP};

/// True when the IPv4 header at the start of `ip` parses and its checksum
/// is what etherparse recomputes.
pub fn ipv4_header_csum_ok(ip: &[u8]) -> bool {
    Ipv4Header::from_slice(ip).is_ok_and(|(h, _)| csum::matches(h.header_checksum, h.calc_header_checksum()))
}

/// True when the ICMP (ICMPv6 for IPv6 addresses) message `msg` between
/// `src` and `dst` carries the checksum etherparse recomputes.
pub fn icmp_csum_ok(src: IpAddr, dst: IpAddr, msg: &[u8]) -> bool {
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Icmpv4Slice::from_slice(msg).is_ok_and(|m| {
            let h = m.header();
            csum::matches(h.checksum, Icmpv4Header::with_checksum(h.icmp_type, m.payload()).checksum)
        }),
        (IpAddr::V6(s), IpAddr::V6(d)) => Icmpv6Slice::from_slice(msg).is_ok_and(|m| {
            let h = m.header();
            h.icmp_type.calc_checksum(s.octets(), d.octets(), m.payload()).is_ok_and(|c| csum::matches(h.checksum, c))
        }),
        _ => false,
    }
}
/// A frame decoded (by etherparse) for assertions and failure messages.
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
    /// IPv4 header checksum is what etherparse recomputes (always true for
    /// IPv6).
    pub ip_csum_ok: bool,
    /// The L4 checksum field.
    pub l4_csum: u16,
    /// The L4 checksum is what etherparse recomputes over the whole segment.
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

/// Where `part` starts inside `whole` (a sub-slice of it).
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr().addr() - whole.as_ptr().addr()
}

/// Decodes an Ethernet/IP/UDP-or-TCP frame with etherparse, recomputing
/// its checksums; `None` for anything else or a truncated frame. A first
/// fragment decodes too (its L4 checksum covers the whole datagram, so it
/// does not verify here).
pub fn decode(f: &[u8]) -> Option<Decoded> {
    let p = SlicedPacket::from_ethernet(f).ok()?;
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else { return None };
    let vlan = match p.link_exts.first() {
        Some(LinkExtSlice::Vlan(v)) => Some(v.vlan_identifier().value()),
        Some(LinkExtSlice::Macsec(_)) => return None,
        None => None,
    };
    // (src, dst, ttl, IPv4 header and its offset, IP payload)
    let (src, dst, ttl, v4, ip) = match p.net.as_ref()? {
        NetSlice::Ipv4(s) => {
            let h = s.header().to_header();
            let l3 = offset_in(f, s.header().slice());
            (IpAddr::from(h.source), IpAddr::from(h.destination), h.time_to_live, Some((h, l3)), s.payload())
        }
        NetSlice::Ipv6(s) => {
            let h = s.header().to_header();
            (IpAddr::from(h.source), IpAddr::from(h.destination), h.hop_limit, None, s.payload())
        }
        NetSlice::Arp(_) => return None,
    };
    let (proto, seg) = (ip.ip_number.0, ip.payload);
    let l4_off = offset_in(f, seg);
    let (sport, dport, l4_csum, csum_rel, computed) = match proto {
        PROTO_UDP => {
            let u = UdpHeaderSlice::from_slice(seg).ok()?;
            let (h, body) = (u.to_header(), &seg[UdpHeader::LEN..]);
            let c = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), body),
                (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), body),
                _ => return None,
            };
            (h.source_port, h.destination_port, h.checksum, 6, c.ok()?)
        }
        PROTO_TCP => {
            let t = TcpHeaderSlice::from_slice(seg).ok()?;
            let (h, body) = (t.to_header(), &seg[t.slice().len()..]);
            let c = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), body),
                (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), body),
                _ => return None,
            };
            (h.source_port, h.destination_port, h.checksum, 16, c.ok()?)
        }
        _ => return None,
    };
    Some(Decoded {
        eth_dst: eth.destination(),
        eth_src: eth.source(),
        vlan,
        src,
        dst,
        proto,
        sport,
        dport,
        ttl,
        ip_csum_ok: v4.as_ref().is_none_or(|(h, _)| csum::matches(h.header_checksum, h.calc_header_checksum())),
        l4_csum,
        l4_csum_ok: csum::matches(l4_csum, computed),
        pseudo: csum::pseudo(src, dst, proto, seg.len() as u32),
        l4_off,
        l4_csum_off: l4_off + csum_rel,
        ip_csum_off: v4.map(|(_, l3)| l3 + 10),
    })
}
