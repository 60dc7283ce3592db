//! Counter updates.
use lb_common::{Counter, Stat};

use crate::maps::{BACKEND_STATS, SERVICE_STATS, STATS};

/// Adds one to a global counter.
#[inline(always)]
pub fn bump(stat: Stat) {
    if crate::trace::enabled() {
        return;
    }
    if let Some(v) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
fn add(c: Option<*mut Counter>, bytes: u64) {
    if let Some(c) = c {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Counts a client packet for its service and backend.
#[inline(always)]
pub fn count(service_id: u32, backend_id: u32, bytes: u64) {
    if crate::trace::enabled() {
        return;
    }
    add(SERVICE_STATS.get_ptr_mut(service_id), bytes);
    add(BACKEND_STATS.get_ptr_mut(backend_id), bytes);
}
