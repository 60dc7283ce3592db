//! Rare data-path events (malformed packet, full connection table, failed
//! redirect) reach the agent's log through aya-log at debug level, at most
//! once a second per CPU so logging never costs the per-packet path.
use aya_ebpf::{macros::map, maps::PerCpuArray};

#[map(name = "XLB_LOG_RL")]
static LAST_LOG: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// True when this CPU may log now (and records that it did).
#[inline(always)]
pub fn allowed() -> bool {
    let now = crate::clock::now();
    match LAST_LOG.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        Some(last) => unsafe {
            if now.saturating_sub(*last) < 1_000_000_000 {
                return false;
            }
            *last = now;
            true
        },
        None => false,
    }
}
