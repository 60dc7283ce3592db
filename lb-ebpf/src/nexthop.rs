//! Next-hop cache: the result of a successful `bpf_fib_lookup` (egress
//! interface, MAC addresses, and the largest packet it was confirmed for),
//! kept per CPU in a direct-mapped array indexed by a hash of (ingress
//! interface, source, destination), so that the packets of a flow after its
//! first skip the kernel's FIB (≈ 170 ns for IPv4 and ≈ 400 ns for IPv6 on
//! the reference machine). Only successes are cached: no route, no
//! neighbour entry yet (the tc hand-off) and "fragmentation needed" always
//! ask the kernel.
//!
//! An entry is used only while
//! - the route generation (`XLB_ROUTE_GEN`, bumped by the agent on route,
//!   rule, address, link and neighbour changes) is the one it was filled
//!   in, and
//! - it is younger than [`TTL_NS`] (the bound on staleness when nothing
//!   bumps the generation), and
//! - the packet is no longer than a packet the kernel already accepted for
//!   this path (so a lookup still checks the MTU of every larger packet).
//!
//! An entry also keeps the egress interface's `IF_F_*` capabilities
//! (`XLB_IFACES`, looked up when the entry is filled; only non-zero ones are
//! kept), so a hit needs no hash lookup before XDP_TX/XDP_REDIRECT; a change
//! of an interface's capabilities reaches cached paths within [`TTL_NS`] (or
//! at the next generation bump).
//!
//! Not part of the key: ports and protocol. Policy-routing rules that match
//! on them (`ip rule ... sport/dport/ipproto`) are honoured for the first
//! packet of a path only.
use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};

use crate::{
    forward::{caps_of, lookup, CAPS_UNKNOWN},
    maps::ROUTE_GEN,
    nat::Rewrite,
    packet::Packet,
    scratch::FibParams,
    words,
};

/// Slots of the per-CPU cache (72 bytes each).
const SLOTS: u32 = 4096;
const SLOT_BITS: u32 = 12;
/// Longest an entry is trusted without a generation bump.
pub const TTL_NS: u64 = 1_000_000_000;
const FIB_SUCCESS: i64 = 0;

/// One cached next hop, with its key.
#[repr(C, align(8))]
pub struct Hop {
    dst: words::Addr,
    src: words::Addr,
    ingress: u32,
    gen: u32,
    expires_ns: u64,
    ifindex: u32,
    /// Largest IP length the kernel accepted (MTU) for this path.
    ok_len: u32,
    /// `smac` then `dmac` of the lookup, as 16-bit words.
    macs: [u16; 6],
    /// `IF_F_*` of `ifindex` when the entry was filled.
    caps: u32,
}

/// Offset of `smac` (followed by `dmac`) in `bpf_fib_lookup`.
const MACS_OFF: usize = 52;

/// The lookup's source and destination MAC as six 16-bit words (byte-array
/// copies would become `memmove` calls).
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "offset 52 of the align(4) bpf_fib_lookup is 2-aligned")]
fn macs(p: &FibParams) -> [u16; 6] {
    let m = core::ptr::from_ref::<FibParams>(p).cast::<u8>().wrapping_add(MACS_OFF).cast::<u16>();
    // SAFETY: bytes 52..64 of the 64-byte, align(4) bpf_fib_lookup: smac, dmac.
    unsafe { [*m, *m.add(1), *m.add(2), *m.add(3), *m.add(4), *m.add(5)] }
}

#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "offset 52 of the align(4) bpf_fib_lookup is 2-aligned")]
fn set_macs(p: &mut FibParams, w: &[u16; 6]) {
    let m = core::ptr::from_mut::<FibParams>(p).cast::<u8>().wrapping_add(MACS_OFF).cast::<u16>();
    // SAFETY: as in `macs`.
    unsafe {
        let mut i = 0;
        while i < 6 {
            *m.add(i) = w[i];
            i += 1;
        }
    }
}

#[map(name = "XLB_NEXTHOP")]
static HOPS: PerCpuArray<Hop> = PerCpuArray::with_max_entries(SLOTS, 0);

#[inline(always)]
fn slot(ingress: u32, src: words::Addr, dst: words::Addr) -> u32 {
    let x = (dst[0] ^ dst[1].rotate_left(29) ^ src[0].rotate_left(7) ^ src[1].rotate_left(43) ^ u64::from(ingress))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> (64 - SLOT_BITS)) as u32
}

/// `bpf_fib_lookup` towards `rw.dst` through the cache (`now`: the data
/// path's clock): on a hit, fills `p.ifindex`, `p.smac` and `p.dmac` (all
/// `transmit` reads) and returns success without asking the kernel. Also
/// returns the egress interface's capabilities for `transmit` (or
/// `CAPS_UNKNOWN`).
#[inline(always)]
pub fn route(ctx: &XdpContext, pkt: &Packet, rw: &Rewrite, p: &mut FibParams, now: u64) -> (i64, u32) {
    let ingress = ctx.ingress_ifindex() as u32;
    let (src, dst) = (words::get(rw.src_aligned()), words::get(rw.dst_aligned()));
    let gen = ROUTE_GEN.get(0).copied().unwrap_or(0);
    let Some(h) = HOPS.get_ptr_mut(slot(ingress, src, dst)) else {
        return (lookup(ctx, pkt, rw, p), CAPS_UNKNOWN);
    };
    // SAFETY: per-CPU slot; XDP runs with preemption disabled, so nothing
    // else on this CPU touches it during the program run.
    let h = unsafe { &mut *h };
    let same =
        h.dst[0] == dst[0] && h.dst[1] == dst[1] && h.src[0] == src[0] && h.src[1] == src[1] && h.ingress == ingress;
    let fresh = same && h.gen == gen && now < h.expires_ns;
    if fresh && pkt.ip_len <= h.ok_len {
        p.ifindex = h.ifindex;
        set_macs(p, &h.macs);
        return (FIB_SUCCESS, if h.caps != 0 { h.caps } else { CAPS_UNKNOWN });
    }
    let rc = lookup(ctx, pkt, rw, p);
    let mut caps = CAPS_UNKNOWN;
    if rc == FIB_SUCCESS {
        caps = caps_of(p.ifindex);
        // A longer packet confirmed on a still valid entry: keep its expiry.
        let m = macs(p);
        let same_hop = h.ifindex == p.ifindex
            && h.macs[0] == m[0]
            && h.macs[1] == m[1]
            && h.macs[2] == m[2]
            && h.macs[3] == m[3]
            && h.macs[4] == m[4]
            && h.macs[5] == m[5];
        if !(fresh && same_hop) {
            h.dst = dst;
            h.src = src;
            h.ingress = ingress;
            h.gen = gen;
            h.expires_ns = now + TTL_NS;
            h.ifindex = p.ifindex;
            h.macs = m;
            h.ok_len = pkt.ip_len;
        } else if pkt.ip_len > h.ok_len {
            h.ok_len = pkt.ip_len;
        }
        h.caps = caps;
    }
    (rc, caps)
}

const _: () = assert!(
    core::mem::offset_of!(FibParams, smac) == MACS_OFF && core::mem::offset_of!(FibParams, dmac) == MACS_OFF + 6
);
