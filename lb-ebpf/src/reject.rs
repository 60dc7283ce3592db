//! Active rejection for a service without a usable backend, from the data
//! path: a UDP datagram is answered with ICMP (ICMPv6) port unreachable, a
//! TCP SYN with an RST, so the client learns at once instead of timing out.
//! The packet is turned into the answer in place and sent back like any
//! other rewritten packet.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{csum::fold, Stat, PROTO_TCP};

use crate::{
    forward::send,
    packet::{
        ptr_at, ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP_DEST_UNREACH, PROTO_ICMP, PROTO_ICMPV6, TCP_ACK,
        TCP_RST, TCP_SYN,
    },
    scratch::Scratch,
    stats::bump,
    words,
};

const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;
/// Bytes of the offending datagram quoted after the IP header.
const QUOTE_L4: usize = 8;

/// Answers the packet in `s` with a rejection, or drops it when it is
/// neither UDP nor a TCP SYN. Each builder returns whether the answer
/// carries a partial checksum.
#[inline(never)]
pub fn reject(ctx: &XdpContext, s: &mut Scratch) -> u32 {
    let k = s.pkt.key;
    let ok = if k.proto == PROTO_TCP {
        if !s.pkt.has(TCP_SYN) || s.pkt.has(TCP_ACK) || s.pkt.has(TCP_RST) {
            None
        } else {
            tcp_rst(ctx, s)
        }
    } else if s.pkt.v6 {
        icmp6_error(ctx, s, ICMP6_DEST_UNREACH, ICMP6_PORT_UNREACH, 0)
    } else {
        icmp4_error(ctx, s, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0)
    };
    let Some(partial) = ok else {
        bump(Stat::DropNoBackend);
        return xdp_action::XDP_DROP;
    };
    bump(Stat::Reject);
    answer(ctx, s, partial)
}

/// Answers a packet too big for its egress link (and not to be fragmented)
/// with ICMP fragmentation needed / ICMPv6 packet too big carrying the MTU
/// that `bpf_fib_lookup` reported, quoting the packet as its sender sent it.
#[inline(never)]
pub fn too_big(ctx: &XdpContext, s: &mut Scratch) -> u32 {
    // SAFETY: the lookup that returned "fragmentation needed" set mtu_result.
    let mtu = u32::from(unsafe { s.fib.__bindgen_anon_1.mtu_result });
    let ok = if s.pkt.v6 {
        icmp6_error(ctx, s, ICMP6_PACKET_TOO_BIG, 0, mtu.max(1280))
    } else {
        icmp4_error(ctx, s, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu & 0xffff)
    };
    if ok.is_none() {
        bump(Stat::DropMalformed);
        return xdp_action::XDP_DROP;
    }
    bump(Stat::TooBig);
    answer(ctx, s, false)
}

/// Sends the answer built in place back to the packet's sender, from the
/// packet's destination.
#[inline(always)]
fn answer(ctx: &XdpContext, s: &mut Scratch, partial: bool) -> u32 {
    let k = &s.pkt.key;
    let (src, dst, sport, dport, proto) =
        (words::get(k.src_aligned()), words::get(k.dst_aligned()), k.sport, k.dport, k.proto);
    words::put(s.rw.src_aligned_mut(), dst);
    words::put(s.rw.dst_aligned_mut(), src);
    s.rw.sport = dport;
    s.rw.dport = sport;
    words::set_key(&mut s.pkt.key, dst, src, dport, sport, proto);
    send(ctx, &s.pkt, &s.rw, &mut s.fib, partial)
}

/// Trims the frame to `len` bytes.
#[inline(always)]
fn trim_to(ctx: &XdpContext, len: usize) -> Option<()> {
    let cur = ctx.data_end() - ctx.data();
    if cur < len {
        return None;
    }
    if cur > len {
        // SAFETY: helper on our own context; shrinking only.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((cur - len) as i32)) } != 0 {
            return None;
        }
    }
    Some(())
}

/// Grows the frame at the front by `n` bytes and copies the L2 header
/// (`l3` bytes: Ethernet, maybe one VLAN tag) to the new front, swapping
/// the MAC addresses.
#[inline(always)]
fn grow_front(ctx: &XdpContext, n: usize, l3: usize) -> Option<()> {
    // SAFETY: helper on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(n as i32)) } != 0 {
        return None;
    }
    let old = ptr_at::<[u8; 18]>(ctx, n)?;
    let new = ptr_at::<[u8; 18]>(ctx, 0)?;
    // SAFETY: both ranges bounds-checked; they do not overlap (n >= 18).
    unsafe {
        let o = *old;
        let d = &mut *new;
        let mut i = 0;
        while i < 6 {
            d[i] = o[i + 6];
            d[i + 6] = o[i];
            i += 1;
        }
        d[12] = o[12];
        d[13] = o[13];
        if l3 == 18 {
            d[14] = o[14];
            d[15] = o[15];
            d[16] = o[16];
            d[17] = o[17];
        }
    }
    Some(())
}

/// Sums `len` bytes (even) of `b` from `from` as 16-bit words.
#[inline(always)]
fn sum<const N: usize>(acc: u32, b: &[u8; N], from: usize) -> u32 {
    let mut acc = acc;
    let mut i = from;
    while i + 1 < N {
        acc += u32::from(u16::from_ne_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    acc
}

/// Writes an ICMP header (checksum zero) at the front of `icmp`.
#[inline(always)]
fn icmp_header<const N: usize>(icmp: &mut [u8; N], ty: u8, code: u8, info: u32) {
    let i = info.to_be_bytes();
    let h = [ty, code, 0, 0, i[0], i[1], i[2], i[3]];
    let mut j = 0;
    while j < 8 && j < N {
        icmp[j] = h[j];
        j += 1;
    }
}

#[inline(always)]
fn last4(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

const ICMP_PORT_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMP6_PORT_UNREACH: u8 = 4;

/// The IPv4 packet → an ICMP error of `ty`/`code` to its sender, quoting its
/// header and first 8 L4 bytes; `info` fills the ICMP header's last 4 bytes
/// (the next-hop MTU for fragmentation needed).
#[inline(never)]
fn icmp4_error(ctx: &XdpContext, s: &mut Scratch, ty: u8, code: u8, info: u32) -> Option<bool> {
    let l3 = s.pkt.l3;
    // Only plain 20-byte IPv4 headers are quoted (options: drop instead).
    if s.pkt.l4 != l3 + IPV4_LEN || (l3 != 14 && l3 != 18) {
        return None;
    }
    let grow = IPV4_LEN + 8;
    trim_to(ctx, l3 + IPV4_LEN + QUOTE_L4)?;
    grow_front(ctx, grow, l3)?;
    let total = (IPV4_LEN + 8 + IPV4_LEN + QUOTE_L4) as u16;
    let ip = ptr_at::<[u8; 20]>(ctx, l3)?;
    let icmp = ptr_at::<[u8; 36]>(ctx, l3 + IPV4_LEN)?;
    // SAFETY: bounds checked by ptr_at.
    let (ip, icmp) = unsafe { (&mut *ip, &mut *icmp) };
    let src = last4(&s.pkt.key.dst);
    let dst = last4(&s.pkt.key.src);
    *ip = [
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        PROTO_ICMP,
        0,
        0,
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ];
    let c = (!fold(sum(0, ip, 0))).to_ne_bytes();
    ip[10] = c[0];
    ip[11] = c[1];
    icmp_header(icmp, ty, code, info);
    let c = (!fold(sum(0, icmp, 0))).to_ne_bytes();
    icmp[2] = c[0];
    icmp[3] = c[1];
    s.pkt.key.proto = PROTO_ICMP;
    s.pkt.ip_len = u32::from(total);
    s.pkt.l4 = l3 + IPV4_LEN;
    Some(false)
}

/// The IPv6 packet → an ICMPv6 error of `ty`/`code` to its sender, quoting
/// its header and first 8 L4 bytes; `info` is the MTU for packet too big.
#[inline(never)]
fn icmp6_error(ctx: &XdpContext, s: &mut Scratch, ty: u8, code: u8, info: u32) -> Option<bool> {
    let l3 = s.pkt.l3;
    if l3 != 14 && l3 != 18 {
        return None;
    }
    let grow = IPV6_LEN + 8;
    trim_to(ctx, l3 + IPV6_LEN + QUOTE_L4)?;
    grow_front(ctx, grow, l3)?;
    let payload = (8 + IPV6_LEN + QUOTE_L4) as u16;
    let ip = ptr_at::<[u8; 40]>(ctx, l3)?;
    let icmp = ptr_at::<[u8; 56]>(ctx, l3 + IPV6_LEN)?;
    // SAFETY: bounds checked by ptr_at.
    let (ip, icmp) = unsafe { (&mut *ip, &mut *icmp) };
    ip[0] = 0x60;
    ip[1] = 0;
    ip[2] = 0;
    ip[3] = 0;
    ip[4] = (payload >> 8) as u8;
    ip[5] = payload as u8;
    ip[6] = PROTO_ICMPV6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&s.pkt.key.dst);
    ip[24..40].copy_from_slice(&s.pkt.key.src);
    icmp_header(icmp, ty, code, info);
    let mut acc2 = sum(0, ip, 8);
    acc2 += u32::from(u16::from_ne_bytes([(payload >> 8) as u8, payload as u8]));
    acc2 += u32::from(u16::from_ne_bytes([0, PROTO_ICMPV6]));
    acc2 = sum(acc2, icmp, 0);
    let c = (!fold(acc2)).to_ne_bytes();
    icmp[2] = c[0];
    icmp[3] = c[1];
    s.pkt.key.proto = PROTO_ICMPV6;
    s.pkt.ip_len = (IPV6_LEN as u32) + u32::from(payload);
    s.pkt.l4 = l3 + IPV6_LEN;
    Some(false)
}

/// TCP SYN → RST|ACK (seq 0, ack = SYN's seq + 1), options and payload cut.
#[inline(never)]
fn tcp_rst(ctx: &XdpContext, s: &mut Scratch) -> Option<bool> {
    let l3 = s.pkt.l3;
    let ip_len = if s.pkt.v6 { IPV6_LEN } else { IPV4_LEN };
    if s.pkt.l4 != l3 + ip_len || (l3 != 14 && l3 != 18) {
        return None;
    }
    let tcp = ptr_at::<[u8; 20]>(ctx, s.pkt.l4)?;
    // SAFETY: bounds checked by ptr_at.
    let t = unsafe { *tcp };
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]).wrapping_add(1).to_be_bytes();
    // Was the SYN's checksum a partial one (local sender with offload)?
    let old_pseudo = pseudo(s, ip_len, (s.pkt.l4_len) as u16, false);
    let partial = u16::from_ne_bytes([t[16], t[17]]) == old_pseudo;
    trim_to(ctx, l3 + ip_len + TCP_LEN)?;
    let tcp = ptr_at::<[u8; 20]>(ctx, l3 + ip_len)?;
    // SAFETY: bounds checked by ptr_at.
    let tcp = unsafe { &mut *tcp };
    *tcp =
        [t[2], t[3], t[0], t[1], 0, 0, 0, 0, seq[0], seq[1], seq[2], seq[3], 0x50, TCP_RST | TCP_ACK, 0, 0, 0, 0, 0, 0];
    // Pseudo header of the answer: addresses swapped, length 20.
    let p = pseudo(s, ip_len, TCP_LEN as u16, true);
    let c = if partial { p } else { !fold(sum(u32::from(p), tcp, 0)) };
    let c = c.to_ne_bytes();
    tcp[16] = c[0];
    tcp[17] = c[1];
    if s.pkt.v6 {
        let ip = ptr_at::<[u8; 40]>(ctx, l3)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        ip[4] = 0;
        ip[5] = TCP_LEN as u8;
        ip[8..24].copy_from_slice(&s.pkt.key.dst);
        ip[24..40].copy_from_slice(&s.pkt.key.src);
    } else {
        let ip = ptr_at::<[u8; 20]>(ctx, l3)?;
        // SAFETY: bounds checked by ptr_at.
        let ip = unsafe { &mut *ip };
        let total = (IPV4_LEN + TCP_LEN) as u16;
        ip[2] = (total >> 8) as u8;
        ip[3] = total as u8;
        ip[8] = 64;
        ip[10] = 0;
        ip[11] = 0;
        let (src, dst) = (last4(&s.pkt.key.dst), last4(&s.pkt.key.src));
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let c = (!fold(sum(0, ip, 0))).to_ne_bytes();
        ip[10] = c[0];
        ip[11] = c[1];
    }
    s.pkt.ip_len = (ip_len + TCP_LEN) as u32;
    // A partial checksum must stay one: the answer stays an skb.
    Some(partial)
}

/// Folded pseudo-header sum (not complemented) for TCP, addresses as in the
/// packet (`swapped`: as in the answer).
#[inline(always)]
fn pseudo(s: &Scratch, ip_len: usize, l4_len: u16, swapped: bool) -> u16 {
    let (a, b) = if swapped { (&s.pkt.key.dst, &s.pkt.key.src) } else { (&s.pkt.key.src, &s.pkt.key.dst) };
    let from = if ip_len == IPV6_LEN { 0 } else { 12 };
    let mut acc = sum(sum(0, a, from), b, from);
    acc += u32::from(u16::from_ne_bytes([0, PROTO_TCP]));
    acc += u32::from(u16::from_ne_bytes([(l4_len >> 8) as u8, l4_len as u8]));
    fold(acc)
}
