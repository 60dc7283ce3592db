//! The agent record (`XLB_AGENT`, one entry): written by the running agent
//! about once a second, read by `xlb status` and the other read commands to
//! tell a running agent from maps left pinned by one that is gone. The data
//! path never reads it.

/// Interfaces one record can list (as many as the agent attaches to).
pub const AGENT_IFACES: usize = crate::MAX_IFACES as usize;
/// Bytes of an interface name (`IFNAMSIZ`, NUL-padded).
pub const IFNAME_LEN: usize = 16;
/// Bytes of the last apply's message (UTF-8, NUL-padded, cut to fit).
pub const MESSAGE_LEN: usize = 240;

/// `AgentRecord::state`: never written.
pub const AGENT_NONE: u32 = 0;
/// `AgentRecord::state`: the agent runs (if its heartbeat is fresh).
pub const AGENT_RUNNING: u32 = 1;
/// `AgentRecord::state`: the agent exited cleanly.
pub const AGENT_STOPPED: u32 = 2;

/// `AgentRecord::apply_result`: nothing applied yet.
pub const APPLY_NONE: u32 = 0;
/// `AgentRecord::apply_result`: the last apply succeeded.
pub const APPLY_OK: u32 = 1;
/// `AgentRecord::apply_result`: the last apply failed (the running
/// configuration stays in force).
pub const APPLY_FAILED: u32 = 2;

/// `AgentIface::mode`: not known (a link taken over from an older agent).
pub const XDP_MODE_UNKNOWN: u32 = 0;
/// `AgentIface::mode`: native (driver) XDP.
pub const XDP_MODE_NATIVE: u32 = 1;
/// `AgentIface::mode`: generic (skb) XDP.
pub const XDP_MODE_GENERIC: u32 = 2;
/// `AgentIface::mode`: offloaded to the NIC.
pub const XDP_MODE_OFFLOAD: u32 = 3;

/// `AgentRecord::source`: a YAML file.
pub const SOURCE_FILE: u32 = 1;
/// `AgentRecord::source`: the Kubernetes API.
pub const SOURCE_KUBERNETES: u32 = 2;

/// One interface the agent has attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentIface {
    /// Interface name, NUL-padded.
    pub name: [u8; IFNAME_LEN],
    /// `XDP_MODE_*`.
    pub mode: u32,
    /// How XDP sends packets out of it and why (a code of the agent's
    /// `host::xdp_path::Path`; 0: not known). Was padding: older records
    /// hold 0 here.
    pub path: u32,
}

impl AgentIface {
    /// An unused slot.
    pub const EMPTY: Self = Self { name: [0; IFNAME_LEN], mode: XDP_MODE_UNKNOWN, path: 0 };
}

/// What the agent says about itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    /// `AGENT_*`.
    pub state: u32,
    /// Process id (in the agent's pid namespace).
    pub pid: u32,
    /// Start time, Unix seconds.
    pub started_unix: u64,
    /// Last heartbeat, `CLOCK_BOOTTIME` milliseconds (the same in every
    /// pid and mount namespace of the host, and immune to clock steps).
    pub heartbeat_boot_ms: u64,
    /// Last heartbeat, Unix seconds (for display).
    pub heartbeat_unix: u64,
    /// Time of the last apply (start, reload, Kubernetes change), Unix
    /// seconds; 0 before the first.
    pub apply_unix: u64,
    /// Time of the last successful apply, Unix seconds; 0 before the first.
    pub apply_ok_unix: u64,
    /// `APPLY_*`.
    pub apply_result: u32,
    /// `SOURCE_*`.
    pub source: u32,
    /// Entries of `ifaces` in use.
    pub iface_count: u32,
    /// Explicit padding, zero.
    pub _pad: u32,
    /// The last apply's message (its error when it failed), NUL-padded.
    pub apply_message: [u8; MESSAGE_LEN],
    /// Attached interfaces.
    pub ifaces: [AgentIface; AGENT_IFACES],
}

impl AgentRecord {
    /// A record never written (what a fresh map holds).
    pub const EMPTY: Self = Self {
        state: AGENT_NONE,
        pid: 0,
        started_unix: 0,
        heartbeat_boot_ms: 0,
        heartbeat_unix: 0,
        apply_unix: 0,
        apply_ok_unix: 0,
        apply_result: APPLY_NONE,
        source: 0,
        iface_count: 0,
        _pad: 0,
        apply_message: [0; MESSAGE_LEN],
        ifaces: [AgentIface::EMPTY; AGENT_IFACES],
    };
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, explicit padding, every bit pattern valid.
unsafe impl aya::Pod for AgentRecord {}
