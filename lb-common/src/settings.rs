//! Data-path settings written once by the agent (`XLB_SETTINGS`, one entry).

/// Global data-path settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// New flows per second per CPU that get a connection-table entry;
    /// above it, new flows are still forwarded by the hash but not recorded,
    /// so a SYN/UDP flood cannot flush the table. 0: no limit.
    pub new_flows_per_cpu: u32,
    /// This node's tag, random and non-zero, written into every XDP→tc
    /// hand-off ([`crate::ForwardMeta`]) so that a tc program never acts on
    /// metadata another node's XDP program wrote. Kept across agent restarts
    /// with the same pin path; 0 (maps pinned by an older agent) means unset.
    pub node_tag: u32,
    /// `SETTINGS_F_*` bits, written by the agent's map writer.
    pub flags: u32,
}

/// [`Settings::flags`]: some service is `source: preserve`, so a reply
/// without a reverse entry may be one of its replies, translated through
/// its backend's note (`XLB_NOTES`: services with `SVC_F_UNTRACKED` or
/// `SVC_F_REPLY_NOTE`, and flows recorded while their service had it).
/// Clear: that lookup is skipped, and traffic that is not a VIP's pays
/// nothing for it.
pub const SETTINGS_F_NOTES: u32 = 1;

/// Per-CPU token bucket of the flood guard.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodBucket {
    /// Available tokens, in flow·nanoseconds (one flow = 1e9).
    pub tokens: u64,
    /// Last refill, `bpf_ktime_get_ns`.
    pub last_ns: u64,
}

/// Default of `--max-new-flows-per-cpu`.
pub const DEFAULT_NEW_FLOWS_PER_CPU: u32 = 250_000;

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, every bit pattern valid.
unsafe impl aya::Pod for Settings {}
