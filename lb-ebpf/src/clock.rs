//! The data path's clock (a leaf: every module that needs the time reads it
//! here).

/// Coarse monotonic time (CLOCK_MONOTONIC_COARSE, a few ms of resolution,
/// plenty for second-granularity timeouts and half the cost of a TSC read
/// here).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without side effects.
    unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() }
}
