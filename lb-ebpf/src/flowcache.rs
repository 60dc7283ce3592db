//! Hot-flow cache: per CPU, a direct-mapped array of copies of connection
//! table entries (`XLB_FLOWS`) indexed by a hash of the flow key, so that a
//! busy flow's packets skip the LRU hash lookup (jhash of the 40-byte key,
//! a bucket and an element that are cold when many flows are active: the
//! bucket array of a 1,048,576-entry table alone spans 16 MiB).
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
//! copy on every CPU (a copy records the epoch read before its entry was).
//! Left: a copy whose entry the LRU evicted early (a table under a flood)
//! may serve its tuple's next connection for up to a second.
use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use lb_common::{Flow, FlowKey};

use crate::words;

/// Slots of the per-CPU cache (88 bytes each: 1.4 MiB per CPU).
const SLOTS: u32 = 16384;
const SLOT_BITS: u32 = 14;

/// One cached entry, with its key.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Cached {
    key: FlowKey,
    flow: Flow,
    /// The copy is used while the data path's clock is below this.
    until_ns: u64,
    /// `XLB_FLOW_EPOCH` when the entry was read.
    epoch: u64,
}

#[map(name = "XLB_FLOW_CACHE")]
static CACHE: PerCpuArray<Cached> = PerCpuArray::with_max_entries(SLOTS, 0);

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

#[inline(always)]
fn slot(w: &[u64; 5]) -> u32 {
    let x = (w[0] ^ w[1].rotate_left(17) ^ w[2].rotate_left(29) ^ w[3].rotate_left(43) ^ w[4])
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> (64 - SLOT_BITS)) as u32
}

/// This CPU's copy of the entry of `k`, when it may be used at `now` in
/// flow epoch `epoch`.
#[inline(always)]
pub fn get(k: &FlowKey, now: u64, epoch: u64) -> Option<&'static mut Flow> {
    let w = words_of(k);
    let c = CACHE.get_ptr_mut(slot(&w))?;
    // SAFETY: per-CPU slot; XDP runs with preemption disabled, so nothing
    // else on this CPU touches it during the program run.
    let c = unsafe { &mut *c };
    let cw = words_of(&c.key);
    let same = cw[0] == w[0] && cw[1] == w[1] && cw[2] == w[2] && cw[3] == w[3] && cw[4] == w[4];
    (same && now < c.until_ns && c.epoch == epoch).then_some(&mut c.flow)
}

/// Keeps a copy of `f`, the entry of `k` as read in flow epoch `epoch`,
/// usable until `until_ns`.
#[inline(always)]
pub fn put(k: &FlowKey, f: &Flow, until_ns: u64, epoch: u64) {
    let w = words_of(k);
    let Some(c) = CACHE.get_ptr_mut(slot(&w)) else { return };
    // SAFETY: as in `get`.
    let c = unsafe { &mut *c };
    words::copy_value(&mut c.key, k);
    words::copy_value(&mut c.flow, f);
    c.until_ns = until_ns;
    c.epoch = epoch;
}
