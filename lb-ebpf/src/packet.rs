//! Parse: Ethernet (one optional 802.1Q tag), IPv4 (options skipped by IHL)
//! or IPv6, then UDP or TCP. Every access is bounds-checked against the end
//! of the packet, as the verifier demands.
use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lb_common::{v4_mapped, FlowKey, Stat, PROTO_TCP, PROTO_UDP};
use network_types::{eth::EthHdr, ip::{Ipv4Hdr, Ipv6Hdr}, tcp::TcpHdr, udp::UdpHdr};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_LEN: usize = 4;
const IPV6_FRAGMENT: u8 = 44;

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
}

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
    /// Not ours: pass to the kernel untouched, counting why.
    Pass(Stat),
    /// Truncated or inconsistent headers.
    Malformed,
}

/// Largest header offset the data path reads at (Ethernet + VLAN + IPv4
/// with options + L4 header fits well below it). Also bounds offsets loaded
/// from memory, which the verifier otherwise sees as unbounded.
const MAX_OFF: usize = 256;

/// A pointer to a `T` at `off`, if the packet holds all of it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    if off > MAX_OFF {
        return None;
    }
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
    pkt.key._pad = [0; 3];
    match ether_type {
        ETH_P_IP => {
            let ip = hdr!(ctx, Ipv4Hdr, l3);
            if ip.vihl >> 4 != 4 {
                return Parsed::Malformed;
            }
            let ihl = ((ip.vihl & 0x0f) as usize) * 4;
            let tot = u16::from_be_bytes(ip.tot_len) as u32;
            if ihl < Ipv4Hdr::LEN || tot < ihl as u32 || tot > data_len - l3 as u32 {
                return Parsed::Malformed;
            }
            pkt.key.proto = ip.proto;
            if pkt.key.proto != PROTO_UDP && pkt.key.proto != PROTO_TCP {
                return Parsed::Pass(Stat::PassNotVip);
            }
            // More-fragments flag or a fragment offset: not handled here.
            if u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
                return Parsed::Pass(Stat::PassFragment);
            }
            pkt.key.src = v4_mapped(ip.src_addr);
            pkt.key.dst = v4_mapped(ip.dst_addr);
            pkt.ip_len = tot;
            pkt.l4_len = tot - ihl as u32;
            pkt.l4 = l3 + ihl;
        }
        ETH_P_IPV6 => {
            let ip = hdr!(ctx, Ipv6Hdr, l3);
            if ip.vcf[0] >> 4 != 6 {
                return Parsed::Malformed;
            }
            let payload = u16::from_be_bytes(ip.payload_len) as u32;
            if payload + Ipv6Hdr::LEN as u32 > data_len - l3 as u32 {
                return Parsed::Malformed;
            }
            pkt.key.proto = ip.next_hdr;
            if pkt.key.proto == IPV6_FRAGMENT {
                return Parsed::Pass(Stat::PassFragment);
            }
            if pkt.key.proto != PROTO_UDP && pkt.key.proto != PROTO_TCP {
                return Parsed::Pass(Stat::PassNotVip);
            }
            pkt.v6 = true;
            pkt.key.src = ip.src_addr;
            pkt.key.dst = ip.dst_addr;
            pkt.ip_len = payload + Ipv6Hdr::LEN as u32;
            pkt.l4_len = payload;
            pkt.l4 = l3 + Ipv6Hdr::LEN;
        }
        _ => return Parsed::Pass(Stat::PassNonIp),
    }
    if pkt.key.proto == PROTO_UDP {
        let udp = hdr!(ctx, UdpHdr, pkt.l4);
        if pkt.l4_len < UdpHdr::LEN as u32 {
            return Parsed::Malformed;
        }
        pkt.key.sport = u16::from_ne_bytes(udp.src);
        pkt.key.dport = u16::from_ne_bytes(udp.dst);
    } else {
        let tcp = hdr!(ctx, TcpHdr, pkt.l4);
        let doff = tcp.doff() as u32 * 4;
        if doff < TcpHdr::LEN as u32 || pkt.l4_len < doff {
            return Parsed::Malformed;
        }
        pkt.key.sport = u16::from_ne_bytes(tcp.source);
        pkt.key.dport = u16::from_ne_bytes(tcp.dest);
        let flags = hdr!(ctx, [u8; 14], pkt.l4);
        pkt.tcp_flags = flags[13];
    }
    Parsed::L4
}
