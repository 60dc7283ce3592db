//! Hot-flow cache: per CPU, a two-way set-associative array of compact
//! copies of connection-table entries (`XLB_FLOWS`), so that a busy flow's
//! packets skip the LRU hash lookup (jhash of the 40-byte key, a bucket and
//! an element that are cold when many flows are active: the bucket array of
//! a 1,048,576-entry table alone spans 16 MiB, its elements 120 MiB, so a
//! lookup pays cache and TLB misses).
//!
//! One plain array (not per-CPU: a per-CPU array's elements are separate
//! allocations behind a pointer table, 8-byte aligned) holds each CPU's
//! block of [`lb_common::FLOW_CACHE_ENTRIES_PER_CPU`] entries of exactly
//! one cache line, page-aligned (`BPF_F_MMAPABLE`); the agent sizes it to
//! the possible CPUs. A set is two adjacent lines: a lookup reads one or
//! two lines, and with two ways a flow shares its set with fewer rivals
//! than in a direct-mapped cache (under a uniform flood of as many flows as
//! sets, about 90 % of packets hit instead of 63 %).
//!
//! A copy is used only while its flow's entry would not be refreshed
//! anyway: until `last_seen + min(1 s, timeout / 2)`, the moment the data
//! path would next write `last_seen` (see `xdp::existing`). So a hit never
//! has anything to write back, the connection table stays the one
//! authority (expiry, the CLI's view, ICMP errors and fragments read it),
//! and nothing a hit decides differs from what the entry would decide:
//! the backend's generation and state and the service slot are still
//! checked on every packet. Packets that change a flow's state (SYN, FIN,
//! RST) always take the table.
//!
//! Copies are filled when a packet found its flow in the table, so a flow
//! is cached from its second packet on (flows of one packet, such as a DNS
//! query, would only pay for the copy). Whenever a rewrite changes an
//! existing entry's backend, SNAT port or service (a SYN re-picking its
//! tuple), the flow epoch (`XLB_FLOW_EPOCH`) moves on, which voids every
//! copy on every CPU (a copy records the low 24 bits of the epoch read
//! before its entry was; 16 M re-picks within a copy's second would be
//! needed to alias). Left: a copy whose entry the LRU evicted early (a
//! table under a flood) may serve its tuple's next connection for up to a
//! second.
use aya_ebpf::{helpers::generated::bpf_get_smp_processor_id, macros::map, maps::Array};
use lb_common::{Flow, FlowKey, FLOW_CACHE_ENTRIES_PER_CPU, TABLE_MAP_FLAGS};

use crate::words;

/// Sets per CPU (two ways each) and the bits that index them.
const SETS: u32 = FLOW_CACHE_ENTRIES_PER_CPU / 2;
const SET_BITS: u32 = SETS.trailing_zeros();
/// `tag` = low 24 bits of the epoch << 8 | the flow's state.
const EPOCH_MASK: u64 = 0xff_ffff;

/// One cached entry with its key: one cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Cached {
    key: FlowKey,
    /// The copy is used while the data path's clock is below this.
    until_ns: u64,
    backend_id: u32,
    backend_gen: u32,
    /// Service ids are below `MAX_SERVICES` (16384).
    service_id: u16,
    snat_port: u16,
    /// See [`EPOCH_MASK`].
    tag: u32,
}

// One line per entry; service ids fit the 16 bits kept.
const _: () = assert!(core::mem::size_of::<Cached>() == 64);
const _: () = assert!(lb_common::MAX_SERVICES <= 1 << 16);

/// Every CPU's block of entries; sized by the agent (possible CPUs × the
/// entries per CPU); a CPU beyond it caches nothing.
#[map(name = "XLB_FLOW_CACHE")]
static CACHE: Array<Cached> = Array::with_max_entries(FLOW_CACHE_ENTRIES_PER_CPU, TABLE_MAP_FLAGS);

/// The flow epoch (one entry): moves on when an entry's translation changes.
#[map(name = "XLB_FLOW_EPOCH")]
static EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// The current flow epoch; read before the flow's entry is.
#[inline(always)]
pub fn epoch() -> u64 {
    EPOCH.get(0).copied().unwrap_or(0)
}

/// Voids every copy on every CPU. Concurrent bumps may lose an increment,
/// never the change of value that voids the copies.
#[inline(always)]
pub fn bump() {
    let Some(e) = EPOCH.get_ptr_mut(0) else { return };
    // SAFETY: map value pointer valid for this program run.
    unsafe { core::ptr::write_volatile(e, core::ptr::read_volatile(e).wrapping_add(1)) }
}

/// The key as five words (`FlowKey` is 40 bytes, align(8)).
#[inline(always)]
fn words_of(k: &FlowKey) -> [u64; 5] {
    let w = core::ptr::from_ref::<FlowKey>(k).cast::<u64>();
    // SAFETY: five aligned words of one FlowKey.
    unsafe { [w.read(), w.add(1).read(), w.add(2).read(), w.add(3).read(), w.add(4).read()] }
}

/// The index of way 0 of `w`'s set in this CPU's block.
#[inline(always)]
fn set_base(w: &[u64; 5]) -> u32 {
    let x = (w[0] ^ w[1].rotate_left(17) ^ w[2].rotate_left(29) ^ w[3].rotate_left(43) ^ w[4])
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    cpu * FLOW_CACHE_ENTRIES_PER_CPU + ((x >> (64 - SET_BITS)) as u32) * 2
}

#[inline(always)]
fn entry(i: u32) -> Option<&'static mut Cached> {
    // SAFETY: this CPU's block only; XDP runs with preemption disabled, so
    // nothing else touches it during the program run.
    CACHE.get_ptr_mut(i).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn same(c: &Cached, w: &[u64; 5]) -> bool {
    let cw = words_of(&c.key);
    cw[0] == w[0] && cw[1] == w[1] && cw[2] == w[2] && cw[3] == w[3] && cw[4] == w[4]
}

/// This CPU's copy of the entry of `k`, written into `out` (its
/// `last_seen_ns` set to `now`: a copy is used only where the entry needs
/// no refresh), when it may be used at `now` in flow epoch `epoch`.
#[inline(always)]
pub fn get(k: &FlowKey, now: u64, epoch: u64, out: &mut Flow) -> bool {
    let w = words_of(k);
    let base = set_base(&w);
    let Some(c) = entry(base) else { return false };
    let c = if same(c, &w) {
        c
    } else {
        let Some(c) = entry(base + 1) else { return false };
        if !same(c, &w) {
            return false;
        }
        c
    };
    if now >= c.until_ns || u64::from(c.tag >> 8) != epoch & EPOCH_MASK {
        return false;
    }
    out.backend_id = c.backend_id;
    out.backend_gen = c.backend_gen;
    out.service_id = u32::from(c.service_id);
    out.snat_port = c.snat_port;
    out.state = c.tag as u8;
    out._pad = 0;
    out.created_ns = 0;
    out.last_seen_ns = now;
    true
}

/// Keeps a copy of `f`, the entry of `k` as read in flow epoch `epoch`,
/// usable until `until_ns`: in the way that holds `k` already, else in the
/// one whose copy runs out first (the older one, or an unused one).
#[inline(always)]
pub fn put(k: &FlowKey, f: &Flow, until_ns: u64, epoch: u64) {
    let w = words_of(k);
    let base = set_base(&w);
    let (Some(c0), Some(c1)) = (entry(base), entry(base + 1)) else { return };
    let c = if same(c0, &w) || (!same(c1, &w) && c0.until_ns <= c1.until_ns) { c0 } else { c1 };
    words::copy_value(&mut c.key, k);
    c.until_ns = until_ns;
    c.backend_id = f.backend_id;
    c.backend_gen = f.backend_gen;
    c.service_id = f.service_id as u16;
    c.snat_port = f.snat_port;
    c.tag = ((epoch & EPOCH_MASK) as u32) << 8 | u32::from(f.state);
}
