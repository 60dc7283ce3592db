//! `xlb trace`: the record a data path loaded in trace mode (`XLB_TRACE`
//! set) leaves in its trace-output map (`XLB_TRACE_OUT`, one entry, never
//! pinned) about the one packet it ran on. The product data path (trace
//! mode off) never writes it.

/// Name of the read-only global that turns trace mode on (a `u8`, 0 or 1).
pub const TRACE_GLOBAL: &str = "XLB_TRACE";
/// Name of the trace-output map (an array of one [`TraceRecord`]).
pub const TRACE_OUT: &str = "XLB_TRACE_OUT";

/// No decision recorded: the packet was not for a service (or not parsed).
pub const REASON_NONE: u32 = 0;
/// The packet's flow is in the connection table and still valid.
pub const REASON_FLOW: u32 = 1;
/// A new flow, sent to the client's session-affinity backend.
pub const REASON_AFFINITY: u32 = 2;
/// A new flow, sent to the backend of lookup-table slot [`TraceRecord::slot`].
pub const REASON_SLOT: u32 = 3;
/// A new flow the service has no usable backend for (or a reject share's slot).
pub const REASON_NO_BACKEND: u32 = 4;
/// The client's address is outside the service's source ranges.
pub const REASON_SOURCE_RANGE: u32 = 5;
/// A backend's reply, translated back by its reverse entry.
pub const REASON_REPLY: u32 = 6;

/// What the data path decided about the traced packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceRecord {
    /// One of the `REASON_*` constants.
    pub reason: u32,
    /// The service id (valid unless `reason` is `REASON_NONE`/`REASON_REPLY`).
    pub service_id: u32,
    /// The backend id (forwarded packets and replies).
    pub backend_id: u32,
    /// Lookup-table slot within the service's table (`REASON_SLOT`).
    pub slot: u32,
    /// Egress ifindex of the route lookup (0 when none was made).
    pub egress: u32,
    /// Result of the route lookup (`bpf_fib_lookup`; meaningful when `routed`).
    pub fib_rc: i32,
    /// 1 when a route lookup was made.
    pub routed: u32,
    /// Explicit padding, zero.
    pub _pad: u32,
}

// SAFETY: repr(C), Copy, every bit pattern valid (padding is explicit).
#[cfg(feature = "user")]
unsafe impl aya::Pod for TraceRecord {}
