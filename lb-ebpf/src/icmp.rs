//! ICMP and ICMPv6: errors (destination unreachable, fragmentation needed /
//! packet too big, time exceeded) that quote a packet of a translated flow
//! are translated back — outer and quoted headers and every checksum — and
//! delivered to the party that sent the quoted packet. Echo requests to a
//! VIP are answered.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    csum::{apply_full, diff16, diff16b, diff4},
    Stat, PROTO_UDP,
};

use crate::{
    forward::send,
    maps::{BACKENDS, FLOWS, REVERSE, VIPS},
    nat::{last4, rewrite_l3},
    notes,
    packet::{ptr_at, PROTO_ICMPV6},
    scratch::Scratch,
    stats::bump,
    words,
};

/// Finds the flow the quoted packet belongs to and fills `s.icmp`.
#[inline(always)]
fn lookup(s: &mut Scratch) -> bool {
    // The quoted packet is one we sent to a backend: the error goes to the client.
    let q = &s.pkt.inner;
    words::set_key(&mut s.rkey, words::get(q.dst_aligned()), words::get(q.src_aligned()), q.dport, q.sport, q.proto);
    let n = &mut s.icmp;
    // A reverse entry of its own, else the note of its backend (`notes`).
    // SAFETY: map value pointer valid for this program run.
    let rev = REVERSE.get_ptr(&s.rkey).map(|r| unsafe { &*r });
    if let Some(r) = rev.or_else(|| notes::reply_entry_if_any(&s.rkey).map(|r| &*r)) {
        words::copy(n.inner_src_aligned_mut(), r.client_aligned());
        n.inner_sport = r.client_port;
        words::copy(n.inner_dst_aligned_mut(), r.vip_aligned());
        n.inner_dport = r.vip_port;
        // An error from the backend itself now comes from the VIP.
        let from_backend = words::eq(s.pkt.key.src_aligned(), s.pkt.inner.dst_aligned());
        words::copy(n.outer_src_aligned_mut(), if from_backend { r.vip_aligned() } else { s.pkt.key.src_aligned() });
        words::copy(n.outer_dst_aligned_mut(), r.client_aligned());
        return true;
    }
    // The quoted packet is a reply we sent to a client: the error goes to the backend.
    let Some(f) = FLOWS.get_ptr(&s.rkey) else { return false };
    // SAFETY: map value pointer valid for this program run.
    let f = unsafe { &*f };
    let Some(be) = BACKENDS.get(f.backend_id) else { return false };
    if be.flags & lb_common::BE_F_ACTIVE == 0 || be.generation != f.backend_gen {
        return false;
    }
    words::copy(n.inner_src_aligned_mut(), be.addr_aligned());
    n.inner_sport = be.port;
    words::copy(n.outer_dst_aligned_mut(), be.addr_aligned());
    // Only SNAT flows carry a SNAT port.
    if f.snat_port != 0 {
        words::copy(n.inner_dst_aligned_mut(), be.snat_addr_aligned());
        n.inner_dport = f.snat_port;
        words::copy(n.outer_src_aligned_mut(), be.snat_addr_aligned());
    } else {
        words::copy(n.inner_dst_aligned_mut(), s.pkt.inner.dst_aligned());
        n.inner_dport = s.pkt.inner.dport;
        words::copy(n.outer_src_aligned_mut(), s.pkt.key.src_aligned());
    }
    true
}

#[inline(always)]
fn rd16(ctx: &XdpContext, off: usize) -> Option<(*mut [u8; 2], u16)> {
    let p = ptr_at::<[u8; 2]>(ctx, off)?;
    // SAFETY: bounds checked by ptr_at.
    Some((p, u16::from_ne_bytes(unsafe { *p })))
}

/// Translates an ICMP error about a tracked flow, or passes it.
#[inline(never)]
pub fn error(ctx: &XdpContext, s: &mut Scratch) -> u32 {
    if !lookup(s) {
        bump(Stat::PassNotVip);
        return xdp_action::XDP_PASS;
    }
    if rewrite(ctx, &*s).is_some() {
        bump(Stat::IcmpError);
        words::copy(s.rw.src_aligned_mut(), s.icmp.outer_src_aligned());
        words::copy(s.rw.dst_aligned_mut(), s.icmp.outer_dst_aligned());
        s.rw.sport = 0;
        s.rw.dport = 0;
        send(ctx, &s.pkt, &s.rw, &mut s.fib, false)
    } else {
        bump(Stat::DropMalformed);
        xdp_action::XDP_DROP
    }
}

#[inline(never)]
fn rewrite(ctx: &XdpContext, s: &Scratch) -> Option<()> {
    let v6 = s.pkt.v6;
    let q = &s.pkt.inner;
    let n = &s.icmp;
    // Difference of the quoted addresses and ports (part of the ICMP payload).
    let inner_addr = if v6 {
        diff16b(diff16b(0, &q.src, &n.inner_src), &q.dst, &n.inner_dst)
    } else {
        diff4(diff4(0, &last4(&q.src), &last4(&n.inner_src)), &last4(&q.dst), &last4(&n.inner_dst))
    };
    let inner_ports = diff16(diff16(0, q.sport, n.inner_sport), q.dport, n.inner_dport);
    let mut icmp_diff = inner_addr + inner_ports;

    // Quoted IPv4 header checksum.
    if !v6 {
        let (p, old) = rd16(ctx, s.pkt.inner_l3 + 10)?;
        let new = apply_full(old, inner_addr);
        // SAFETY: p bounds checked by rd16.
        unsafe { *p = new.to_ne_bytes() };
        icmp_diff = diff16(icmp_diff, old, new);
    }
    // Quoted UDP/TCP checksum, when the quote includes it (inside the IP
    // packet: bytes of the padding behind it are no part of the message).
    let l4_check = s.pkt.inner_l4 + if q.proto == PROTO_UDP { 6 } else { 16 };
    let quoted = l4_check + 2 <= s.pkt.l4 + s.pkt.l4_len as usize;
    if let Some((p, old)) = rd16(ctx, l4_check).filter(|_| quoted) {
        if !(q.proto == PROTO_UDP && !v6 && old == 0) {
            let new = apply_full(old, inner_addr + inner_ports);
            // SAFETY: p bounds checked by rd16.
            unsafe { *p = new.to_ne_bytes() };
            icmp_diff = diff16(icmp_diff, old, new);
        }
    }
    // Quoted ports and addresses.
    let ports = ptr_at::<[u16; 2]>(ctx, s.pkt.inner_l4)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { *ports = [n.inner_sport, n.inner_dport] };
    if v6 {
        let a = ptr_at::<[[u8; 16]; 2]>(ctx, s.pkt.inner_l3 + 8)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *a = [n.inner_src, n.inner_dst] };
    } else {
        let a = ptr_at::<[[u8; 4]; 2]>(ctx, s.pkt.inner_l3 + 12)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *a = [last4(&n.inner_src), last4(&n.inner_dst)] };
    }
    // Outer addresses: in the ICMPv6 pseudo header; in the IPv4 header checksum.
    let outer = if v6 {
        diff16b(diff16b(0, &s.pkt.key.src, &n.outer_src), &s.pkt.key.dst, &n.outer_dst)
    } else {
        diff4(diff4(0, &last4(&s.pkt.key.src), &last4(&n.outer_src)), &last4(&s.pkt.key.dst), &last4(&n.outer_dst))
    };
    if s.pkt.key.proto == PROTO_ICMPV6 {
        icmp_diff += outer;
    }
    let (p, old) = rd16(ctx, s.pkt.l4 + 2)?;
    // SAFETY: p bounds checked by rd16.
    unsafe { *p = apply_full(old, icmp_diff).to_ne_bytes() };
    if v6 {
        let a = ptr_at::<[[u8; 16]; 2]>(ctx, s.pkt.l3 + 8)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *a = [n.outer_src, n.outer_dst] };
    } else {
        let (p, old) = rd16(ctx, s.pkt.l3 + 10)?;
        // SAFETY: p bounds checked by rd16.
        unsafe { *p = apply_full(old, outer).to_ne_bytes() };
        let a = ptr_at::<[[u8; 4]; 2]>(ctx, s.pkt.l3 + 12)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *a = [last4(&n.outer_src), last4(&n.outer_dst)] };
    }
    Some(())
}

/// Answers an echo request to a VIP in place; other echo requests pass.
#[inline(never)]
pub fn echo(ctx: &XdpContext, s: &mut Scratch) -> u32 {
    // SAFETY: value only tested for presence.
    if unsafe { VIPS.get(&s.pkt.key.dst) }.is_none() {
        bump(Stat::PassNotVip);
        return xdp_action::XDP_PASS;
    }
    // Flooded to every node of the segment: answered by its addressee only.
    if crate::l2::for_other_host(ctx) {
        return xdp_action::XDP_PASS;
    }
    let reply_type: u8 = if s.pkt.v6 { 129 } else { 0 };
    let Some((tp, old_tc)) = rd16(ctx, s.pkt.l4) else {
        bump(Stat::DropMalformed);
        return xdp_action::XDP_DROP;
    };
    let Some((cp, old_c)) = rd16(ctx, s.pkt.l4 + 2) else {
        bump(Stat::DropMalformed);
        return xdp_action::XDP_DROP;
    };
    // SAFETY: tp bounds checked by rd16.
    let code = unsafe { (*tp)[1] };
    let new_tc = u16::from_ne_bytes([reply_type, code]);
    // SAFETY: tp, cp bounds checked by rd16.
    unsafe {
        *tp = new_tc.to_ne_bytes();
        *cp = apply_full(old_c, diff16(0, old_tc, new_tc)).to_ne_bytes();
    }
    // Swapping source and destination leaves every checksum sum unchanged.
    words::copy(s.rw.src_aligned_mut(), s.pkt.key.dst_aligned());
    words::copy(s.rw.dst_aligned_mut(), s.pkt.key.src_aligned());
    s.rw.sport = 0;
    s.rw.dport = 0;
    if rewrite_l3(ctx, &s.pkt, &s.rw).is_none() {
        bump(Stat::DropMalformed);
        return xdp_action::XDP_DROP;
    }
    bump(Stat::IcmpEcho);
    send(ctx, &s.pkt, &s.rw, &mut s.fib, false)
}
