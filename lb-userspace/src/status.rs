//! The agent record (`XLB_AGENT`, `lb_common::status`): the running agent
//! refreshes it about once a second ([`Recorder`]); `xlb status` and the
//! other read commands read it ([`read`]) to tell a running agent from maps
//! left pinned by one that is gone. Only pinned state is read: no agent API,
//! and it works across pid and mount namespaces (the heartbeat is
//! `CLOCK_BOOTTIME`, the same host-wide).
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData, MapInfo};
use lb_common::status::{
    AgentIface, AgentRecord, AGENT_IFACES, AGENT_RUNNING, AGENT_STOPPED, APPLY_FAILED, APPLY_NONE, APPLY_OK,
    IFNAME_LEN, MESSAGE_LEN, SOURCE_FILE, SOURCE_KUBERNETES, XDP_MODE_GENERIC, XDP_MODE_NATIVE, XDP_MODE_OFFLOAD,
    XDP_MODE_UNKNOWN,
};
use nix::time::{clock_gettime, ClockId};
use serde::Serialize;
use tracing::warn;

use crate::{bpf::maps::map_dir, metrics::LastApply};

/// A heartbeat older than this means the agent is gone (killed, hung).
pub const FRESH: Duration = Duration::from_secs(5);
/// How often the running agent refreshes its record.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// `CLOCK_BOOTTIME` in milliseconds.
pub fn boottime_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME).map_or(0, |ts| ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000)
}

fn map_path(pin_path: &Path) -> PathBuf {
    map_dir(pin_path).join(lb_common::names::AGENT)
}

/// Before loading: removes a pinned agent record of another layout (left by
/// another xlb build) so that loading creates one of this layout. It only
/// ever holds the state of an agent, which the new agent rewrites.
pub fn prepare_pin(pin_path: &Path) -> Result<()> {
    let path = map_path(pin_path);
    let Ok(info) = MapInfo::from_pin(&path) else { return Ok(()) };
    if info.value_size() as usize != std::mem::size_of::<AgentRecord>()
        || info.max_entries() != 1
        || info.key_size() != 4
    {
        std::fs::remove_file(&path).with_context(|| format!("removing the old agent record {}", path.display()))?;
    }
    Ok(())
}

fn open(pin_path: &Path) -> Result<Array<MapData, AgentRecord>> {
    let path = map_path(pin_path);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map = Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))?;
    map.try_into().with_context(|| format!("{} is not an agent record of this xlb", path.display()))
}

/// The attach mode the last agent on `pin_path` recorded for `iface`, for a
/// link taken over from it (the takeover does not tell the mode).
pub fn recorded_mode(pin_path: &Path, iface: &str) -> Option<aya::programs::XdpMode> {
    use aya::programs::XdpMode;
    match *recorded_modes(pin_path).get(iface)? {
        XDP_MODE_NATIVE => Some(XdpMode::Driver),
        XDP_MODE_GENERIC => Some(XdpMode::Skb),
        XDP_MODE_OFFLOAD => Some(XdpMode::Hardware),
        _ => None,
    }
}

/// `XDP_MODE_*` of an attach mode.
pub fn mode_code(mode: aya::programs::XdpMode) -> u32 {
    use aya::programs::XdpMode;
    match mode {
        XdpMode::Driver => XDP_MODE_NATIVE,
        XdpMode::Skb => XDP_MODE_GENERIC,
        XdpMode::Hardware => XDP_MODE_OFFLOAD,
        XdpMode::Default => XDP_MODE_UNKNOWN,
    }
}

fn mode_name(code: u32) -> &'static str {
    match code {
        XDP_MODE_NATIVE => "native",
        XDP_MODE_GENERIC => "generic",
        XDP_MODE_OFFLOAD => "offload",
        _ => "unknown",
    }
}

/// Copies `s` into a NUL-padded buffer, cut at a character boundary.
fn put_str<const N: usize>(buf: &mut [u8; N], s: &str) {
    *buf = [0; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf[..end].copy_from_slice(&s.as_bytes()[..end]);
}

fn get_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What the agent reports at each heartbeat.
pub struct Snapshot {
    /// Attached interfaces, their `XDP_MODE_*` and their transmit path
    /// (`host::xdp_path::Path` code).
    pub interfaces: Vec<(String, u32, u32)>,
    /// The last apply.
    pub last_apply: Option<LastApply>,
}

/// The running agent's side: keeps the record fresh from a thread of its
/// own (so a busy runtime does not make the agent look gone).
pub struct Recorder {
    map: Mutex<Array<MapData, AgentRecord>>,
    record: Mutex<AgentRecord>,
    stopped: AtomicBool,
    /// Modes the previous agent recorded, for the links taken over from it
    /// (whose mode the takeover does not tell).
    inherited: HashMap<String, u32>,
}

impl Recorder {
    /// Opens the record (after loading), writes it once and keeps it fresh
    /// every [`BEAT_EVERY`] with what `snapshot` says.
    pub fn start(
        pin_path: &Path,
        kubernetes: bool,
        snapshot: impl Fn() -> Snapshot + Send + 'static,
    ) -> Result<Arc<Self>> {
        let map = open(pin_path)?;
        let previous = map.get(&0, 0).unwrap_or(AgentRecord::EMPTY);
        let inherited = previous.ifaces[..(previous.iface_count as usize).min(AGENT_IFACES)]
            .iter()
            .map(|i| (get_str(&i.name), i.mode))
            .collect();
        let mut record = AgentRecord::EMPTY;
        record.state = AGENT_RUNNING;
        record.pid = std::process::id();
        record.started_unix = crate::metrics::unix_now();
        record.source = if kubernetes { SOURCE_KUBERNETES } else { SOURCE_FILE };
        let rec = Arc::new(Recorder {
            map: Mutex::new(map),
            record: Mutex::new(record),
            stopped: AtomicBool::new(false),
            inherited,
        });
        rec.beat(&snapshot());
        let weak = Arc::downgrade(&rec);
        std::thread::Builder::new()
            .name("xlb-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(BEAT_EVERY);
                let Some(rec) = weak.upgrade() else { return };
                if rec.stopped.load(Ordering::SeqCst) {
                    return;
                }
                rec.beat(&snapshot());
            })
            .context("starting the heartbeat thread")?;
        Ok(rec)
    }

    /// Refreshes the record with `snap` and a new heartbeat.
    fn beat(&self, snap: &Snapshot) {
        let mut r = self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        r.heartbeat_boot_ms = boottime_ms();
        r.heartbeat_unix = crate::metrics::unix_now();
        r.iface_count = snap.interfaces.len().min(AGENT_IFACES) as u32;
        r.ifaces = [AgentIface::EMPTY; AGENT_IFACES];
        for (slot, (name, mode, path)) in r.ifaces.iter_mut().zip(&snap.interfaces) {
            let mode =
                if *mode == XDP_MODE_UNKNOWN { self.inherited.get(name).copied().unwrap_or(*mode) } else { *mode };
            let mut n = [0u8; IFNAME_LEN];
            put_str(&mut n, name);
            *slot = AgentIface { name: n, mode, path: *path };
        }
        if let Some(a) = &snap.last_apply {
            r.apply_unix = a.unix;
            r.apply_ok_unix = a.last_ok_unix;
            r.apply_result = if a.ok { APPLY_OK } else { APPLY_FAILED };
            let mut m = [0u8; MESSAGE_LEN];
            put_str(&mut m, &a.message);
            r.apply_message = m;
        }
        self.write(&r);
    }

    fn write(&self, r: &AgentRecord) {
        if let Err(e) = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).set(0, *r, 0) {
            warn!(error = %e, "writing the agent record (xlb status)");
        }
    }

    /// Marks the agent stopped (clean exit); the heartbeat stops.
    pub fn stop(&self) {
        let mut r = self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.stopped.store(true, Ordering::SeqCst);
        r.state = AGENT_STOPPED;
        r.heartbeat_unix = crate::metrics::unix_now();
        self.write(&r);
    }
}

/// One attached interface, as `xlb status` shows it.
#[derive(Debug, Serialize)]
pub struct Attachment {
    /// Interface name.
    pub interface: String,
    /// `native`, `generic`, `offload` or `unknown`.
    pub xdp_mode: String,
    /// How packets leave through it: `xdp-redirect` (XDP transmits into
    /// it: zero-copy), `tc-redirect` (XDP_PASS, then the tc program sends
    /// it) or `unknown`.
    pub path: String,
    /// Why that path, e.g. `kernel reports ndo_xmit: peer has XDP or NAPI`.
    pub path_reason: String,
}

impl Attachment {
    fn new(interface: String, mode: u32, path: u32) -> Self {
        let path = crate::host::xdp_path::Path::from_code(path);
        Self {
            interface,
            xdp_mode: mode_name(mode).into(),
            path: path.name().into(),
            path_reason: path.reason().into(),
        }
    }
}

/// The XDP modes the last agent recorded for its interfaces (before this
/// agent writes its own record), for the links it takes over.
pub fn recorded_modes(pin_path: &Path) -> HashMap<String, u32> {
    let Some(r) = open(pin_path).ok().and_then(|m| m.get(&0, 0).ok()) else { return HashMap::new() };
    r.ifaces[..(r.iface_count as usize).min(AGENT_IFACES)].iter().map(|i| (get_str(&i.name), i.mode)).collect()
}

/// The last apply, as `xlb status` shows it.
#[derive(Debug, Serialize)]
pub struct ApplyView {
    /// Unix seconds.
    pub time_unix: u64,
    /// `ok` or `failed`.
    pub result: String,
    /// The apply's message (its error when it failed).
    pub message: String,
    /// Unix seconds of the last successful apply (null: never).
    pub last_success_unix: Option<u64>,
}

/// What `xlb status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    /// An agent runs with this pin path (its heartbeat is fresh).
    pub running: bool,
    /// `running`, `stopped` (clean exit), `not responding` (no heartbeat
    /// for [`FRESH`]: killed or hung), `unknown` (maps of an xlb without
    /// the record) or `never started` (nothing pinned).
    pub state: String,
    /// The pin path asked about.
    pub pin_path: String,
    /// The agent's pid (in its pid namespace), when the record has one.
    pub pid: Option<u32>,
    /// `file` or `kubernetes`.
    pub source: Option<String>,
    /// Unix seconds.
    pub started_unix: Option<u64>,
    /// Seconds since the last heartbeat.
    pub heartbeat_age_seconds: Option<f64>,
    /// Interfaces with xlb's programs attached: the agent's while it runs,
    /// else those whose links were kept pinned (`--keep-on-exit`).
    pub interfaces: Vec<String>,
    /// The same, with their XDP modes.
    pub attachments: Vec<Attachment>,
    /// The last apply; `null` before the first.
    pub last_apply: Option<ApplyView>,
    /// VIPs this node announces (`--announce l2`: answers ARP/NDP for),
    /// from the pinned `XLB_ANNOUNCE`.
    pub announced_vips: Vec<String>,
    /// Pods' veths whose packets the tc program sends straight into the
    /// pod's namespace (`bpf_redirect_peer`; the rest of the skb path uses
    /// `bpf_redirect_neigh`), from the pinned `XLB_IFACES`.
    pub peer_redirect: Vec<String>,
}

/// Interfaces whose XDP links are pinned under `pin_path/links`.
fn kept_links(pin_path: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(pin_path.join("links")) else { return Vec::new() };
    let mut v: Vec<String> =
        dir.filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_prefix("xdp-").map(str::to_owned)).collect();
    v.sort();
    v
}

/// Reads the agent's state from what is pinned under `pin_path`.
pub fn read(pin_path: &Path) -> Status {
    let mut st = Status {
        running: false,
        state: "never started".into(),
        pin_path: pin_path.display().to_string(),
        pid: None,
        source: None,
        started_unix: None,
        heartbeat_age_seconds: None,
        interfaces: Vec::new(),
        attachments: Vec::new(),
        last_apply: None,
        announced_vips: Vec::new(),
        peer_redirect: Vec::new(),
    };
    let record = match open(pin_path) {
        Ok(map) => map.get(&0, 0).ok(),
        Err(_) => None,
    };
    let kept = kept_links(pin_path);
    if let Ok(Some(vips)) = crate::bpf::view::announced_vips(pin_path) {
        st.announced_vips = vips.iter().map(ToString::to_string).collect();
    }
    if let Ok(Some(veths)) = crate::bpf::view::peer_veths(pin_path) {
        st.peer_redirect = veths;
    }
    let Some(r) = record.filter(|r| r.state != lb_common::status::AGENT_NONE) else {
        if map_dir(pin_path).exists() {
            st.state = "unknown".into();
        }
        st.attachments = kept.iter().map(|i| Attachment::new(i.clone(), XDP_MODE_UNKNOWN, 0)).collect();
        st.interfaces = kept;
        return st;
    };
    let age_ms = boottime_ms().saturating_sub(r.heartbeat_boot_ms);
    st.running = r.state == AGENT_RUNNING && age_ms < FRESH.as_millis() as u64;
    st.state = match (r.state, st.running) {
        (_, true) => "running",
        (AGENT_STOPPED, _) => "stopped",
        _ => "not responding",
    }
    .into();
    st.pid = Some(r.pid);
    st.source = match r.source {
        SOURCE_FILE => Some("file".into()),
        SOURCE_KUBERNETES => Some("kubernetes".into()),
        _ => None,
    };
    st.started_unix = Some(r.started_unix);
    st.heartbeat_age_seconds = (r.state == AGENT_RUNNING).then_some(age_ms as f64 / 1000.0);
    let recorded: Vec<(String, u32, u32)> = r.ifaces[..(r.iface_count as usize).min(AGENT_IFACES)]
        .iter()
        .map(|i| (get_str(&i.name), i.mode, i.path))
        .collect();
    let attached: Vec<(String, u32, u32)> = if st.running {
        recorded
    } else {
        kept.into_iter()
            .map(|k| recorded.iter().find(|(n, ..)| *n == k).cloned().unwrap_or((k, XDP_MODE_UNKNOWN, 0)))
            .collect()
    };
    st.interfaces = attached.iter().map(|(n, ..)| n.clone()).collect();
    st.attachments = attached.into_iter().map(|(interface, m, p)| Attachment::new(interface, m, p)).collect();
    if r.apply_result != APPLY_NONE {
        st.last_apply = Some(ApplyView {
            time_unix: r.apply_unix,
            result: if r.apply_result == APPLY_OK { "ok" } else { "failed" }.into(),
            message: get_str(&r.apply_message),
            last_success_unix: (r.apply_ok_unix != 0).then_some(r.apply_ok_unix),
        });
    }
    st
}

/// The warning the read commands print when no agent runs with
/// `pin_path` and maps are pinned there (their contents are stale), or
/// `None` when an agent runs or nothing is pinned.
pub fn stale_warning(pin_path: &Path) -> Option<String> {
    if !map_dir(pin_path).exists() {
        return None;
    }
    let st = read(pin_path);
    if st.running {
        return None;
    }
    let why = match st.state.as_str() {
        "stopped" => "the agent exited".to_string(),
        "not responding" => format!(
            "the agent (pid {}) has not refreshed its record for {}s: killed or hung",
            st.pid.unwrap_or(0),
            st.heartbeat_age_seconds.map_or(0, |a| a as u64)
        ),
        _ => "no agent record (an agent of an older xlb, or none)".to_string(),
    };
    let effect = if st.interfaces.is_empty() {
        "nothing is attached: these maps are left over and forward nothing".to_string()
    } else {
        format!(
            "the programs kept attached to {} (--keep-on-exit) still forward with these maps, but nothing updates them",
            st.interfaces.join(", ")
        )
    };
    Some(format!(
        "warning: no xlb agent is running with --pin-path {} ({why}); {effect}. Start the agent (`xlb status` tells more)",
        pin_path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_cut_at_char_boundaries() {
        let mut b = [0u8; 4];
        put_str(&mut b, "abé!");
        assert_eq!(get_str(&b), "abé");
        put_str(&mut b, "aé€");
        assert_eq!(get_str(&b), "aé");
        put_str(&mut b, "x");
        assert_eq!(get_str(&b), "x");
    }

    #[test]
    fn nothing_pinned_is_never_started() {
        let st = read(Path::new("/nonexistent/xlb-status-test"));
        assert!(!st.running);
        assert_eq!(st.state, "never started");
        assert!(st.interfaces.is_empty());
        assert!(stale_warning(Path::new("/nonexistent/xlb-status-test")).is_none());
    }
}
