//! IP fragments: the first fragment of a datagram (the one with the ports)
//! takes the normal path and records its translation; later fragments, which
//! carry no ports, look it up by (source, destination, protocol, IP ID) and
//! get the same addresses and the same backend. A later fragment that arrives
//! before its first fragment is passed to the kernel untouched (XDP cannot
//! hold packets); senders that fragment send the first fragment first, and
//! the datagram is retransmitted by the application otherwise.
use aya_ebpf::{bindings::xdp_action, macros::map, maps::LruHashMap, programs::XdpContext};
use lb_common::{
    frag::{FragKey, FragValue, FRAG_ENTRIES, FRAG_TIMEOUT, NO_SERVICE},
    Stat,
};

use crate::{
    clock::now,
    forward::send,
    nat::rewrite_l3,
    packet::FRAG_FIRST,
    scratch::Scratch,
    stats::{bump, count},
    words,
};

#[map(name = "XLB_FRAGS")]
static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(FRAG_ENTRIES, 0);

#[inline(always)]
fn key(s: &Scratch) -> FragKey {
    let (src, dst) = (words::get(s.pkt.key.src_aligned()), words::get(s.pkt.key.dst_aligned()));
    let w: [u64; 5] = [src[0], src[1], dst[0], dst[1], u64::from(s.pkt.frag_id) | u64::from(s.pkt.key.proto) << 32];
    // SAFETY: FragKey is 40 bytes, align(8): src, dst, id, proto, zero padding;
    // every bit pattern is valid.
    unsafe { core::mem::transmute::<[u64; 5], FragKey>(w) }
}

/// After a first fragment was translated to `s.rw`, remember it.
#[inline(always)]
pub fn remember(s: &Scratch, service_id: u32, backend_id: u32) {
    if s.pkt.frag != FRAG_FIRST {
        return;
    }
    let (src, dst) = (words::get(s.rw.src_aligned()), words::get(s.rw.dst_aligned()));
    let w: [u64; 6] = [src[0], src[1], dst[0], dst[1], u64::from(service_id) | u64::from(backend_id) << 32, now()];
    // SAFETY: FragValue is 48 bytes, align(8): src, dst, service_id,
    // backend_id, created_ns; every bit pattern is valid.
    let v = unsafe { core::mem::transmute::<[u64; 6], FragValue>(w) };
    let _ = FRAGS.insert(&key(s), &v, 0);
}

/// A later fragment: translate like its first fragment, or pass it.
#[inline(never)]
pub fn later(ctx: &XdpContext, s: &mut Scratch) -> u32 {
    let Some(v) = FRAGS.get_ptr(&key(s)) else {
        bump(Stat::PassFragment);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: map value pointer valid for this program run.
    let v = unsafe { &*v };
    let now = now();
    if now.saturating_sub(v.created_ns) > FRAG_TIMEOUT * 1_000_000_000 {
        bump(Stat::PassFragment);
        return xdp_action::XDP_PASS;
    }
    words::copy(s.rw.src_aligned_mut(), v.src_aligned());
    words::copy(s.rw.dst_aligned_mut(), v.dst_aligned());
    s.rw.sport = 0;
    s.rw.dport = 0;
    if v.service_id != NO_SERVICE {
        count(v.service_id, v.backend_id, u64::from(s.pkt.ip_len));
    }
    if rewrite_l3(ctx, &s.pkt, &s.rw).is_none() {
        bump(Stat::DropMalformed);
        return xdp_action::XDP_DROP;
    }
    bump(Stat::Fragment);
    send(ctx, &s.pkt, &s.rw, &mut s.fib, false)
}
