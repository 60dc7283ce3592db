//! The fuzzer's own reading of a frame, written from the protocol
//! specifications (not from the data path's parser): what the frame *is*,
//! which decides what the data path may do with it. Every length is taken
//! from the IP header and every header must lie inside the IP packet (a
//! header in the Ethernet padding behind it is no header).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::frame::{PROTO_FRAGMENT, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// Fragment position of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    None,
    /// Offset 0 with more fragments: carries the L4 header.
    First,
    /// Offset > 0: no L4 header.
    Later,
}

/// The IP layer of a well-formed IPv4/IPv6 packet.
#[derive(Clone, Debug)]
pub struct Ip {
    pub l3: usize,
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Upper-layer protocol (behind an IPv6 fragment header, its next header).
    pub proto: u8,
    /// Offset of the upper-layer header.
    pub l4: usize,
    /// Length of the upper-layer data (to the end of the IP packet).
    pub l4_len: usize,
    /// IP packet length (header included).
    pub total: usize,
    pub frag: Frag,
    /// IPv4 identification / IPv6 fragment identification.
    pub frag_id: u32,
}

/// A UDP/TCP 5-tuple as the frame carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// What a frame is.
#[derive(Clone, Debug)]
pub enum Class {
    /// A header the data path needs is truncated or inconsistent: never
    /// forwarded (dropped as malformed or passed untouched).
    Malformed(&'static str),
    /// Well-formed (as far as the data path reads it) but not for it:
    /// passed to the kernel untouched.
    Other(&'static str),
    /// UDP or TCP (not a later fragment) with its ports.
    L4 { ip: Ip, t: Tuple, tcp_flags: u8 },
    /// A later fragment of a UDP/TCP datagram.
    LaterFrag { ip: Ip },
    /// An ICMP echo request (ICMPv6 128 / ICMP 8).
    Echo { ip: Ip },
    /// An ICMP error quoting a UDP/TCP packet (`inner`: its tuple, quoted
    /// IP header and quoted L4 header offsets).
    IcmpError { ip: Ip, inner: Tuple, inner_l3: usize, inner_l4: usize },
}

fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

fn v4(f: &[u8], off: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(f[off], f[off + 1], f[off + 2], f[off + 3]))
}

fn v6(f: &[u8], off: usize) -> IpAddr {
    let a: [u8; 16] = f[off..off + 16].try_into().expect("16 bytes");
    IpAddr::V6(Ipv6Addr::from(a))
}

/// Offset and ethertype of the layer behind the Ethernet header and at
/// most one 802.1Q/802.1ad tag; `None` when truncated.
pub fn link(f: &[u8]) -> Option<(usize, u16)> {
    if f.len() < 14 {
        return None;
    }
    let et = be16(f, 12);
    if et == 0x8100 || et == 0x88a8 {
        if f.len() < 18 {
            return None;
        }
        return Some((18, be16(f, 16)));
    }
    Some((14, et))
}

/// Reads the IP layer; `Err` is the class of a frame that has none.
#[allow(clippy::result_large_err, reason = "a test helper; the error is the frame's class")]
pub fn ip(f: &[u8]) -> Result<Ip, Class> {
    let (l3, et) = link(f).ok_or(Class::Malformed("truncated Ethernet/VLAN header"))?;
    let avail = f.len() - l3;
    match et {
        0x0800 => {
            if avail < 20 {
                return Err(Class::Malformed("truncated IPv4 header"));
            }
            if f[l3] >> 4 != 4 {
                return Err(Class::Malformed("IPv4 ethertype, version not 4"));
            }
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            let tot = usize::from(be16(f, l3 + 2));
            if ihl < 20 || tot < ihl || tot > avail {
                return Err(Class::Malformed("IPv4 IHL / total length"));
            }
            let frags = be16(f, l3 + 6);
            let frag = if frags & 0x1fff != 0 {
                Frag::Later
            } else if frags & 0x2000 != 0 {
                Frag::First
            } else {
                Frag::None
            };
            Ok(Ip {
                l3,
                v6: false,
                src: v4(f, l3 + 12),
                dst: v4(f, l3 + 16),
                proto: f[l3 + 9],
                l4: l3 + ihl,
                l4_len: tot - ihl,
                total: tot,
                frag,
                frag_id: u32::from(be16(f, l3 + 4)),
            })
        }
        0x86dd => {
            if avail < 40 {
                return Err(Class::Malformed("truncated IPv6 header"));
            }
            if f[l3] >> 4 != 6 {
                return Err(Class::Malformed("IPv6 ethertype, version not 6"));
            }
            let payload = usize::from(be16(f, l3 + 4));
            if payload + 40 > avail {
                return Err(Class::Malformed("IPv6 payload length beyond the frame"));
            }
            let mut ip = Ip {
                l3,
                v6: true,
                src: v6(f, l3 + 8),
                dst: v6(f, l3 + 24),
                proto: f[l3 + 6],
                l4: l3 + 40,
                l4_len: payload,
                total: payload + 40,
                frag: Frag::None,
                frag_id: 0,
            };
            if ip.proto == PROTO_FRAGMENT {
                if payload < 8 {
                    return Err(Class::Malformed("truncated IPv6 fragment header"));
                }
                let fh = &f[ip.l4..ip.l4 + 8];
                ip.proto = fh[0];
                ip.frag_id = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
                ip.frag = if be16(fh, 2) >> 3 != 0 { Frag::Later } else { Frag::First };
                ip.l4 += 8;
                ip.l4_len -= 8;
            }
            Ok(ip)
        }
        _ => Err(Class::Other("not IP")),
    }
}

/// What the frame is.
pub fn classify(f: &[u8]) -> Class {
    let ip = match ip(f) {
        Ok(ip) => ip,
        Err(c) => return c,
    };
    let seg = &f[ip.l4..ip.l4 + ip.l4_len];
    // A later IPv4 fragment of an ICMP message holds no ICMP header; ICMPv6
    // behind a fragment header is not read.
    let icmp = (ip.proto == PROTO_ICMP && !ip.v6 && ip.frag != Frag::Later)
        || (ip.proto == PROTO_ICMPV6 && ip.v6 && ip.frag == Frag::None);
    if icmp {
        return classify_icmp(f, ip);
    }
    if ip.proto != PROTO_UDP && ip.proto != PROTO_TCP {
        return Class::Other("not UDP/TCP/ICMP");
    }
    if ip.frag == Frag::Later {
        return Class::LaterFrag { ip };
    }
    let tcp_flags = if ip.proto == PROTO_UDP {
        if seg.len() < 8 {
            return Class::Malformed("truncated UDP header");
        }
        0
    } else if ip.frag == Frag::First {
        // A first fragment may end inside the TCP options, but must hold
        // the fixed header (RFC 1858: no tiny fragments).
        if seg.len() < 20 {
            return Class::Malformed("first fragment ends inside the fixed TCP header");
        }
        seg[13]
    } else {
        if seg.len() < 20 {
            return Class::Malformed("truncated TCP header");
        }
        let doff = usize::from(seg[12] >> 4) * 4;
        if doff < 20 || doff > seg.len() {
            return Class::Malformed("TCP data offset");
        }
        seg[13]
    };
    let t = Tuple { src: ip.src, dst: ip.dst, sport: be16(seg, 0), dport: be16(seg, 2), proto: ip.proto };
    Class::L4 { ip, t, tcp_flags }
}

fn classify_icmp(f: &[u8], ip: Ip) -> Class {
    let msg = &f[ip.l4..ip.l4 + ip.l4_len];
    if msg.len() < 8 {
        return Class::Other("ICMP message shorter than its header");
    }
    let t = msg[0];
    let (echo, error) = if ip.v6 { (t == 128, matches!(t, 1..=3)) } else { (t == 8, t == 3 || t == 11) };
    if echo {
        return Class::Echo { ip };
    }
    if !error {
        return Class::Other("ICMP neither echo request nor a handled error");
    }
    let q = &msg[8..];
    let inner_l3 = ip.l4 + 8;
    let (src, dst, proto, hl) = if ip.v6 {
        if q.len() < 40 {
            return Class::Other("ICMPv6 error quoting less than an IPv6 header");
        }
        (v6(q, 8), v6(q, 24), q[6], 40)
    } else {
        if q.len() < 20 {
            return Class::Other("ICMP error quoting less than an IPv4 header");
        }
        let ihl = usize::from(q[0] & 0x0f) * 4;
        if ihl < 20 {
            return Class::Other("ICMP error quoting an IPv4 header with IHL < 5");
        }
        (v4(q, 12), v4(q, 16), q[9], ihl)
    };
    if proto != PROTO_UDP && proto != PROTO_TCP {
        return Class::Other("ICMP error quoting neither UDP nor TCP");
    }
    if q.len() < hl + 4 {
        return Class::Other("ICMP error quote ends before the quoted ports");
    }
    let inner = Tuple { src, dst, sport: be16(q, hl), dport: be16(q, hl + 2), proto };
    Class::IcmpError { ip, inner, inner_l3, inner_l4: inner_l3 + hl }
}

/// Internet checksum arithmetic for the checks: the folded one's
/// complement sum (not complemented).
pub mod sum {
    use std::net::IpAddr;

    pub fn add(mut acc: u64, bytes: &[u8]) -> u64 {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            acc += u64::from(*last) << 8;
        }
        acc
    }

    pub fn fold(mut acc: u64) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// Pseudo-header words of TCP/UDP/ICMPv6.
    pub fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
        let acc = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => add(add(0, &s.octets()), &d.octets()),
            (IpAddr::V6(s), IpAddr::V6(d)) => add(add(0, &s.octets()), &d.octets()),
            _ => unreachable!("mixed families"),
        };
        acc + u64::from(proto) + (len as u64 & 0xffff) + (len as u64 >> 16)
    }

    /// Equal as one's complement numbers (0 and 0xffff are both zero).
    pub fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }
}
