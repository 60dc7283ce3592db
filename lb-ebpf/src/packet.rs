//! Parse: Ethernet (one optional 802.1Q tag), IPv4 (options skipped by IHL)
//! or IPv6, then UDP or TCP. Every access is bounds-checked against the end
//! of the packet, as the verifier demands.
use crate::words;
use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lb_common::{FlowKey, Stat, PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_LEN: usize = 4;
const IPV6_FRAGMENT: u8 = 44;
/// ICMP protocol numbers.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

/// TCP flag bits (byte 13 of the header).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A parsed UDP or TCP packet over IPv4 or IPv6. Lives in the per-CPU
/// scratch area, not on the (512-byte) stack.
#[derive(Clone, Copy)]
pub struct Packet {
    /// The 5-tuple as it arrived (addresses IPv4-mapped for IPv4, ports in
    /// network byte order): directly usable as a map key.
    pub key: FlowKey,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the UDP/TCP header.
    pub l4: usize,
    pub v6: bool,
    /// Length of the IP packet (header included).
    pub ip_len: u32,
    /// Length of the UDP/TCP segment (pseudo-header length).
    pub l4_len: u32,
    /// TCP flags, 0 for UDP.
    pub tcp_flags: u8,
    /// IPv4 "don't fragment" (always true for IPv6, which routers never fragment).
    pub df: bool,
    /// `FRAG_NONE`, `FRAG_FIRST` (carries the L4 header) or `FRAG_LATER`.
    pub frag: u8,
    /// IP ID (IPv4) or fragment identification (IPv6) of a fragment.
    pub frag_id: u32,
    /// ICMP error: ICMP type, and the quoted packet's tuple, IP header and
    /// L4 header offsets.
    pub icmp_type: u8,
    pub inner: FlowKey,
    pub inner_l3: usize,
    pub inner_l4: usize,
}

/// Not a fragment.
pub const FRAG_NONE: u8 = 0;
/// First fragment: has the L4 header.
pub const FRAG_FIRST: u8 = 1;
/// Later fragment: no L4 header.
pub const FRAG_LATER: u8 = 2;

impl Packet {
    #[inline(always)]
    pub fn has(&self, flag: u8) -> bool {
        self.tcp_flags & flag != 0
    }
}

/// What parsing found.
pub enum Parsed {
    /// A UDP or TCP packet to look at (written to the `Packet`).
    L4,
    /// A non-first fragment of a UDP/TCP datagram (no ports).
    LaterFragment,
    /// An ICMP/ICMPv6 error quoting a UDP/TCP packet (`inner`).
    IcmpError,
    /// An ICMP/ICMPv6 echo request.
    Echo,
    /// Not ours: pass to the kernel untouched, counting why.
    Pass(Stat),
    /// Truncated or inconsistent headers.
    Malformed,
}

/// Mask bounding every header offset the data path reads at (the deepest,
/// an ICMP error's quoted L4 header behind two IPv4 headers with options,
/// stays below 200). Offsets loaded from memory are unbounded for the
/// verifier; a mask (unlike a compare, which the compiler may turn into a
/// signed one) gives it a range.
pub const OFF_MASK: usize = 0x1ff;

/// A pointer to a `T` at `off`, if the packet holds all of it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let off = off & OFF_MASK;
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

macro_rules! hdr {
    ($ctx:expr, $ty:ty, $off:expr) => {
        match ptr_at::<$ty>($ctx, $off) {
            // SAFETY: bounds checked by ptr_at; packet memory is readable.
            Some(p) => unsafe { &*p },
            None => return Parsed::Malformed,
        }
    };
}

/// Like `hdr!`, but a short ICMP message is not ours to judge: pass it.
macro_rules! hdr_or_pass {
    ($ctx:expr, $ty:ty, $off:expr) => {
        match ptr_at::<$ty>($ctx, $off) {
            // SAFETY: bounds checked by ptr_at; packet memory is readable.
            Some(p) => unsafe { &*p },
            None => return Parsed::Pass(Stat::PassNotVip),
        }
    };
}

/// Parses the packet in `ctx` into `pkt`.
#[inline(always)]
pub fn parse(ctx: &XdpContext, pkt: &mut Packet) -> Parsed {
    let eth = hdr!(ctx, EthHdr, 0);
    let mut ether_type = u16::from_be(eth.ether_type);
    let mut l3 = EthHdr::LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let inner = hdr!(ctx, [u8; 4], EthHdr::LEN);
        ether_type = u16::from_be_bytes([inner[2], inner[3]]);
        l3 += VLAN_LEN;
    }
    let data_len = (ctx.data_end() - ctx.data()) as u32;
    pkt.l3 = l3;
    pkt.v6 = false;
    pkt.tcp_flags = 0;
    pkt.frag = FRAG_NONE;
    match ether_type {
        ETH_P_IP => {
            let ip = hdr!(ctx, Ipv4Hdr, l3);
            if ip.vihl >> 4 != 4 {
                return Parsed::Malformed;
            }
            let ihl = ((ip.vihl & 0x0f) as usize) * 4;
            let tot = u32::from(u16::from_be_bytes(ip.tot_len));
            if ihl < Ipv4Hdr::LEN || tot < ihl as u32 || tot > data_len - l3 as u32 {
                return Parsed::Malformed;
            }
            words::set_key(&mut pkt.key, words::v4(&ip.src_addr), words::v4(&ip.dst_addr), 0, 0, ip.proto);
            pkt.ip_len = tot;
            pkt.l4_len = tot - ihl as u32;
            pkt.l4 = l3 + ihl;
            let frags = u16::from_be_bytes(ip.frags);
            if pkt.key.proto == PROTO_ICMP {
                // A later fragment of an ICMP message holds no ICMP header.
                if frags & 0x1fff != 0 {
                    return Parsed::Pass(Stat::PassNotVip);
                }
                return icmp(ctx, pkt);
            }
            if pkt.key.proto != PROTO_UDP && pkt.key.proto != PROTO_TCP {
                return Parsed::Pass(Stat::PassNotVip);
            }
            pkt.df = frags & 0x4000 != 0;
            if frags & 0x3fff != 0 {
                pkt.frag_id = u32::from(u16::from_be_bytes(ip.id));
                if frags & 0x1fff != 0 {
                    pkt.frag = FRAG_LATER;
                    return Parsed::LaterFragment;
                }
                pkt.frag = FRAG_FIRST;
            }
        }
        ETH_P_IPV6 => {
            let ip = hdr!(ctx, Ipv6Hdr, l3);
            if ip.vcf[0] >> 4 != 6 {
                return Parsed::Malformed;
            }
            let payload = u32::from(u16::from_be_bytes(ip.payload_len));
            if payload + Ipv6Hdr::LEN as u32 > data_len - l3 as u32 {
                return Parsed::Malformed;
            }
            words::set_key(&mut pkt.key, words::v6(&ip.src_addr), words::v6(&ip.dst_addr), 0, 0, ip.next_hdr);
            pkt.v6 = true;
            pkt.df = true;
            pkt.ip_len = payload + Ipv6Hdr::LEN as u32;
            pkt.l4_len = payload;
            pkt.l4 = l3 + Ipv6Hdr::LEN;
            if pkt.key.proto == IPV6_FRAGMENT {
                // Fragment header: next header, reserved, offset|M, identification.
                let fh = hdr!(ctx, [u8; 8], pkt.l4);
                if payload < 8 {
                    return Parsed::Malformed;
                }
                words::set_tail(&mut pkt.key, 0, 0, fh[0]);
                pkt.frag_id = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
                pkt.l4 += 8;
                pkt.l4_len -= 8;
                if pkt.key.proto != PROTO_UDP && pkt.key.proto != PROTO_TCP {
                    return Parsed::Pass(Stat::PassNotVip);
                }
                if u16::from_be_bytes([fh[2], fh[3]]) >> 3 != 0 {
                    pkt.frag = FRAG_LATER;
                    return Parsed::LaterFragment;
                }
                pkt.frag = FRAG_FIRST;
            } else if pkt.key.proto == PROTO_ICMPV6 {
                return icmp(ctx, pkt);
            } else if pkt.key.proto != PROTO_UDP && pkt.key.proto != PROTO_TCP {
                return Parsed::Pass(Stat::PassNotVip);
            }
        }
        _ => return Parsed::Pass(Stat::PassNonIp),
    }
    if pkt.key.proto == PROTO_UDP {
        let udp = hdr!(ctx, UdpHdr, pkt.l4);
        if pkt.l4_len < UdpHdr::LEN as u32 {
            return Parsed::Malformed;
        }
        words::set_tail(&mut pkt.key, u16::from_ne_bytes(udp.src), u16::from_ne_bytes(udp.dst), PROTO_UDP);
    } else if pkt.frag == FRAG_FIRST {
        // A first fragment may end inside the TCP options, not inside the
        // fixed header (RFC 1858; the rewrite updates its checksum).
        let tcp = hdr!(ctx, [u8; 20], pkt.l4);
        if pkt.l4_len < TcpHdr::LEN as u32 {
            return Parsed::Malformed;
        }
        words::set_tail(
            &mut pkt.key,
            u16::from_ne_bytes([tcp[0], tcp[1]]),
            u16::from_ne_bytes([tcp[2], tcp[3]]),
            PROTO_TCP,
        );
        pkt.tcp_flags = tcp[13];
    } else {
        let tcp = hdr!(ctx, TcpHdr, pkt.l4);
        let doff = u32::from(tcp.doff()) * 4;
        if doff < TcpHdr::LEN as u32 || pkt.l4_len < doff {
            return Parsed::Malformed;
        }
        words::set_tail(&mut pkt.key, u16::from_ne_bytes(tcp.source), u16::from_ne_bytes(tcp.dest), PROTO_TCP);
        let flags = hdr!(ctx, [u8; 14], pkt.l4);
        pkt.tcp_flags = flags[13];
    }
    Parsed::L4
}

/// ICMP (v4) types handled.
const ICMP_ECHO_REQUEST: u8 = 8;
pub(crate) const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 types handled.
pub(crate) const ICMP6_DEST_UNREACH: u8 = 1;
pub(crate) const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;
const ICMP6_ECHO_REQUEST: u8 = 128;

/// Parses an ICMP/ICMPv6 message at `pkt.l4`: echo requests, and errors
/// whose quoted packet is UDP or TCP (its tuple goes to `pkt.inner`).
#[inline(always)]
fn icmp(ctx: &XdpContext, pkt: &mut Packet) -> Parsed {
    // Every header read must lie inside the IP packet, not in the padding
    // behind it.
    let end = pkt.l4 + pkt.l4_len as usize;
    if pkt.l4 + 8 > end {
        return Parsed::Pass(Stat::PassNotVip);
    }
    let h = hdr_or_pass!(ctx, [u8; 8], pkt.l4);
    pkt.icmp_type = h[0];
    let (echo, error) = if pkt.v6 {
        (ICMP6_ECHO_REQUEST, h[0] == ICMP6_DEST_UNREACH || h[0] == ICMP6_PACKET_TOO_BIG || h[0] == ICMP6_TIME_EXCEEDED)
    } else {
        (ICMP_ECHO_REQUEST, h[0] == ICMP_DEST_UNREACH || h[0] == ICMP_TIME_EXCEEDED)
    };
    if h[0] == echo {
        return Parsed::Echo;
    }
    if !error {
        return Parsed::Pass(Stat::PassNotVip);
    }
    pkt.inner_l3 = pkt.l4 + 8;
    let hl = if pkt.v6 { Ipv6Hdr::LEN } else { Ipv4Hdr::LEN };
    if pkt.inner_l3 + hl > end {
        return Parsed::Pass(Stat::PassNotVip);
    }
    if pkt.v6 {
        let ip = hdr_or_pass!(ctx, Ipv6Hdr, pkt.inner_l3);
        words::set_key(&mut pkt.inner, words::v6(&ip.src_addr), words::v6(&ip.dst_addr), 0, 0, ip.next_hdr);
        pkt.inner_l4 = pkt.inner_l3 + Ipv6Hdr::LEN;
    } else {
        let ip = hdr_or_pass!(ctx, Ipv4Hdr, pkt.inner_l3);
        let ihl = ((ip.vihl & 0x0f) as usize) * 4;
        if ihl < Ipv4Hdr::LEN {
            return Parsed::Pass(Stat::PassNotVip);
        }
        words::set_key(&mut pkt.inner, words::v4(&ip.src_addr), words::v4(&ip.dst_addr), 0, 0, ip.proto);
        pkt.inner_l4 = pkt.inner_l3 + ihl;
    }
    if pkt.inner.proto != PROTO_UDP && pkt.inner.proto != PROTO_TCP {
        return Parsed::Pass(Stat::PassNotVip);
    }
    if pkt.inner_l4 + 4 > end {
        return Parsed::Pass(Stat::PassNotVip);
    }
    let ports = hdr_or_pass!(ctx, [u8; 4], pkt.inner_l4);
    let proto = pkt.inner.proto;
    words::set_tail(
        &mut pkt.inner,
        u16::from_ne_bytes([ports[0], ports[1]]),
        u16::from_ne_bytes([ports[2], ports[3]]),
        proto,
    );
    Parsed::IcmpError
}
