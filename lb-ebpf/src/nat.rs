//! Rewrite: new addresses and ports, with incremental checksum updates for
//! the IPv4 header and the TCP/UDP checksum (complete or partial).
use aya_ebpf::programs::XdpContext;
use lb_common::{
    csum::{apply_full, apply_partial, diff16, diff16b, diff4, fold},
    PROTO_UDP,
};

use crate::packet::{ptr_at, Packet};

/// The tuple a packet leaves with.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Rewrite {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
}

lb_common::aligned_addrs!(Rewrite { src: src_aligned, src_aligned_mut; dst: dst_aligned, dst_aligned_mut; });

#[inline(always)]
pub fn last4(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from(u16::from_ne_bytes([a[i], a[i + 1]]))
}

/// The pseudo-header sum of the packet as it arrived (not complemented).
#[inline(always)]
fn pseudo(pkt: &Packet) -> u16 {
    let mut acc = 0u32;
    if pkt.v6 {
        let mut i = 0;
        while i < 16 {
            acc += word(&pkt.key.src, i) + word(&pkt.key.dst, i);
            i += 2;
        }
    } else {
        acc += word(&pkt.key.src, 12) + word(&pkt.key.src, 14) + word(&pkt.key.dst, 12) + word(&pkt.key.dst, 14);
    }
    acc += u32::from(u16::from_ne_bytes([0, pkt.key.proto]));
    acc += u32::from(u16::from_ne_bytes([(pkt.l4_len >> 8) as u8, pkt.l4_len as u8]));
    fold(acc)
}

/// Longest segment whose checksum is verified to tell a partial checksum
/// from a full one that equals the pseudo-header sum by chance; a longer
/// one (a GSO super-packet from a local sender) is taken as partial.
const VERIFY_MAX: usize = 1500;

/// True when the TCP/UDP checksum of the packet verifies as a complete one.
#[inline(never)]
fn full_checksum_verifies(ctx: &XdpContext, pkt: &Packet) -> bool {
    let len = pkt.l4_len as usize;
    if len > VERIFY_MAX {
        return false;
    }
    let start = ctx.data() + (pkt.l4 & crate::packet::OFF_MASK);
    let end = ctx.data_end();
    let mut acc = u32::from(pseudo(pkt));
    let mut p = start;
    for _ in 0..VERIFY_MAX / 2 {
        if p + 2 > start + len || p + 2 > end {
            break;
        }
        // SAFETY: p + 2 <= data_end checked just above.
        acc += u32::from(unsafe { *(p as *const u16) });
        p += 2;
    }
    if p + 1 == start + len {
        let mut last = [0u8; 1];
        let off = (p - ctx.data()) as u32;
        // SAFETY: helper copying one byte of our own packet into a local.
        if unsafe { aya_ebpf::helpers::generated::bpf_xdp_load_bytes(ctx.ctx, off, last.as_mut_ptr().cast(), 1) } != 0 {
            return false;
        }
        acc += u32::from(u16::from_ne_bytes([last[0], 0]));
    }
    fold(acc) == 0xffff
}

/// Rewrites the packet to `rw`. Returns true when the L4 checksum was a
/// partial one (left by a local sender with checksum offload): such a packet
/// must stay an skb, so it is handed to the kernel rather than transmitted
/// from XDP.
#[inline(never)]
pub fn rewrite(ctx: &XdpContext, pkt: &Packet, rw: &Rewrite) -> Option<bool> {
    let addr_diff = addr_diff(pkt, rw);
    let port_diff = diff16(diff16(0, pkt.key.sport, rw.sport), pkt.key.dport, rw.dport);

    let check_off = pkt.l4 + if pkt.key.proto == PROTO_UDP { 6 } else { 16 };
    let check_ptr = ptr_at::<[u8; 2]>(ctx, check_off)?;
    // SAFETY: bounds checked by ptr_at.
    let check = u16::from_ne_bytes(unsafe { *check_ptr });
    // A first fragment's pseudo-header length is the whole datagram's: never
    // a partial checksum (the sender completed it before fragmenting).
    // A full checksum can equal the pseudo-header sum by chance (1 in 65536):
    // confirm by summing the segment before treating it as partial.
    let partial = pkt.frag == crate::packet::FRAG_NONE && check == pseudo(pkt) && !full_checksum_verifies(ctx, pkt);
    let udp_v4_no_csum = pkt.key.proto == PROTO_UDP && !pkt.v6 && check == 0;
    if !udp_v4_no_csum {
        let mut new = if partial { apply_partial(check, addr_diff) } else { apply_full(check, addr_diff + port_diff) };
        if new == 0 && pkt.key.proto == PROTO_UDP && !partial {
            new = 0xffff;
        }
        // SAFETY: bounds checked by ptr_at.
        unsafe { *check_ptr = new.to_ne_bytes() };
    }

    let ports = ptr_at::<[u16; 2]>(ctx, pkt.l4)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { *ports = [rw.sport, rw.dport] };

    write_l3(ctx, pkt, rw, addr_diff)?;
    Some(partial)
}

/// The checksum difference of the address change alone.
#[inline(always)]
pub fn addr_diff(pkt: &Packet, rw: &Rewrite) -> u32 {
    if pkt.v6 {
        diff16b(diff16b(0, &pkt.key.src, &rw.src), &pkt.key.dst, &rw.dst)
    } else {
        diff4(diff4(0, &last4(&pkt.key.src), &last4(&rw.src)), &last4(&pkt.key.dst), &last4(&rw.dst))
    }
}

/// Rewrites only the IP addresses (later fragments, ICMP outer header).
#[inline(never)]
pub fn rewrite_l3(ctx: &XdpContext, pkt: &Packet, rw: &Rewrite) -> Option<()> {
    write_l3(ctx, pkt, rw, addr_diff(pkt, rw))
}

/// Writes the new addresses, updating the IPv4 header checksum.
#[inline(always)]
fn write_l3(ctx: &XdpContext, pkt: &Packet, rw: &Rewrite, addr_diff: u32) -> Option<()> {
    if pkt.v6 {
        let addrs = ptr_at::<[[u8; 16]; 2]>(ctx, pkt.l3 + 8)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *addrs = [rw.src, rw.dst] };
    } else {
        let hdr = ptr_at::<[u8; 20]>(ctx, pkt.l3)?;
        // SAFETY: bounds checked by ptr_at.
        let hdr = unsafe { &mut *hdr };
        let ip_check = u16::from_ne_bytes([hdr[10], hdr[11]]);
        let new = apply_full(ip_check, addr_diff).to_ne_bytes();
        hdr[10] = new[0];
        hdr[11] = new[1];
        let s = last4(&rw.src);
        let d = last4(&rw.dst);
        hdr[12..16].copy_from_slice(&s);
        hdr[16..20].copy_from_slice(&d);
    }
    Some(())
}
