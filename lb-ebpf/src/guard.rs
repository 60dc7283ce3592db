//! Flood guard: a per-CPU token bucket on connection-table inserts, so a
//! SYN or UDP flood from random sources cannot flush the table of the flows
//! in progress. Above the rate, new flows are still forwarded (the lookup
//! table gives the same backend for the same 5-tuple), just not recorded.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::settings::FloodBucket;

use crate::maps::SETTINGS;

#[map(name = "XLB_FLOOD")]
static BUCKET: PerCpuArray<FloodBucket> = PerCpuArray::with_max_entries(1, 0);

const FLOW: u64 = 1_000_000_000;

/// True when a new flow may be recorded now (and takes a token).
#[inline(always)]
pub fn may_record(now: u64) -> bool {
    let rate = match SETTINGS.get(0) {
        Some(s) if s.new_flows_per_cpu != 0 => u64::from(s.new_flows_per_cpu),
        _ => return true,
    };
    let Some(b) = BUCKET.get_ptr_mut(0) else { return true };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let b = unsafe { &mut *b };
    let elapsed = now.saturating_sub(b.last_ns).min(FLOW);
    b.last_ns = now;
    let cap = rate * FLOW;
    b.tokens = (b.tokens + elapsed * rate).min(cap);
    if b.tokens >= FLOW {
        b.tokens -= FLOW;
        true
    } else {
        false
    }
}
