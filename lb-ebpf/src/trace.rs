//! Trace mode (`xlb trace`): a second instance of this program, loaded by
//! the CLI with the read-only global `XLB_TRACE` set to 1, runs on one
//! built packet (BPF_PROG_TEST_RUN) against the agent's pinned maps. In
//! that mode every write to a map the agent or the CLI can see is skipped
//! ([`enabled`] gates them), and the decision is recorded in
//! `XLB_TRACE_OUT` instead. The product instance has `XLB_TRACE` = 0, a
//! constant of frozen rodata, so the verifier drops the trace branches.
use aya_ebpf::{macros::map, maps::Array};
use lb_common::trace::TraceRecord;

/// 1 in the CLI's trace instance (set at load time), 0 in the agent's.
#[unsafe(no_mangle)]
static XLB_TRACE: u8 = 0;

/// The trace instance's record of its one packet (never pinned).
#[map(name = "XLB_TRACE_OUT")]
static TRACE_OUT: Array<TraceRecord> = Array::with_max_entries(1, 0);

/// True in trace mode: no map write of the data path may happen.
#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: reading our own static; volatile so that the value set at
    // load time is read rather than the compile-time 0.
    unsafe { core::ptr::read_volatile(&raw const XLB_TRACE) != 0 }
}

/// In trace mode, updates the record with `f`; nothing otherwise.
#[inline(always)]
pub fn record(f: impl FnOnce(&mut TraceRecord)) {
    if !enabled() {
        return;
    }
    if let Some(r) = TRACE_OUT.get_ptr_mut(0) {
        // SAFETY: map value pointer valid for this program run.
        f(unsafe { &mut *r });
    }
}
