//! `cargo xtask bench control` runs this (release build, as root): the
//! control plane at scale. From a generated desired state of N services × M
//! backends (default 10,000 × 10) it measures, with the agent's own code
//! (`MapWriter` on maps loaded as the agent loads them):
//!
//! - the time to apply it to empty maps;
//! - the time to re-apply it unchanged (what every reload of an unchanged
//!   configuration costs);
//! - the time for one endpoint change (a backend of one service replaced by
//!   another address) to reach the maps: from the new desired state to the
//!   return of `apply`, whose map updates are synchronous; each change is
//!   then checked in the kernel's backend array;
//! - the kernel memory of the maps (`memlock` of each map's
//!   `/proc/self/fdinfo` entry) and this process's memory (it holds what the
//!   agent holds: the loaded object, the writer's mirror of the maps, the
//!   desired state, the mapping of the lookup-table array).
//!
//! It runs in a network namespace of its own (so that the source address of
//! the routes to the backends, which `source: snat` services use, resolves),
//! with the maps pinned in a directory of its own; both are removed at exit.
//!
//! Usage: `control_bench [--services N] [--backends N] [--changes N]
//! [--table-size P] [--json FILE] [--tiny]`.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::programs::Xdp;
use clap::Parser;
use xlb::{
    bpf::maps::Maps,
    bpf::view::MapsView,
    state::model::{BackendSpec, DesiredState, Protocol, ServiceSpec, SourceMode},
    state::writer::{addr16, MapWriter},
};

#[derive(Parser, Debug, Clone)]
#[command(about = "Control-plane cost of xlb at scale (apply, one endpoint change, memory)")]
struct Opts {
    /// Services in the desired state.
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    /// Backends per service.
    #[arg(long, default_value_t = 10)]
    backends: u32,
    /// Endpoint changes to time (median and worst are reported).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    changes: u32,
    /// maglev_table_size of every service (a prime of the allowed list).
    #[arg(long, default_value_t = 251)]
    table_size: u32,
    /// Entries of the lookup-table array (the agent's --table-entries).
    #[arg(long, default_value_t = lb_common::TABLE_ENTRIES)]
    table_entries: u32,
    /// Entries of the connection and reverse-NAT tables (the agent's --flow-table-size).
    #[arg(long, default_value_t = lb_common::DEFAULT_FLOW_ENTRIES)]
    flow_entries: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the summary (Markdown) to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also run this `xlb` binary as an agent on the same services (from a
    /// generated YAML file) and report its start time, RSS and the time
    /// from a file change to the reloaded maps.
    #[arg(long)]
    xlb: Option<PathBuf>,
    /// Tiny configuration for the test suite: 100 services × 10 backends,
    /// 5 changes, 1 Mi table entries, 4096 flow entries.
    #[arg(long)]
    tiny: bool,
}

/// Set by SIGINT/SIGTERM: stop at the next phase, clean up, exit.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn stopped() -> Result<()> {
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn sh(args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::io::Write as _;
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().with_context(|| format!("running {} (is iproute2 installed?)", args[0]))?;
    if let Some(text) = stdin {
        child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

const NETNS_PREFIX: &str = "xlbbench-cp-";
const PIN_PREFIX: &str = "/sys/fs/bpf/xlb-bench-cp-";

/// The namespace, the pin directories and the agent's configuration file,
/// removed on drop (also on panic).
struct Cleanup {
    netns: String,
    pin: PathBuf,
    agent_pin: PathBuf,
    config: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.netns], None);
        let _ = std::fs::remove_dir_all(&self.pin);
        let _ = std::fs::remove_dir_all(&self.agent_pin);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Removes namespaces and pin directories of earlier runs that were killed.
fn cleanup_stale() {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = name.strip_prefix(NETNS_PREFIX) {
                if !alive(pid) {
                    let _ = sh(&["ip", "netns", "del", name], None);
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for e in dir.flatten() {
            let path = e.path();
            if let Some(pid) = path.to_str().and_then(|p| p.strip_prefix(PIN_PREFIX)) {
                if !alive(pid.trim_end_matches("-agent")) {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }
}

fn ensure_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "));
    if !mounted {
        std::fs::create_dir_all("/sys/fs/bpf")?;
        sh(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], None)?;
    }
    Ok(())
}

fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: valid namespace fd; only this thread changes namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Backend `i` (0-based, over all services): 10.0.0.0/8 from 10.0.1.0 on,
/// reached through the namespace's v0 (10.255.255.254/8).
fn backend_addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0100u32 + i)), 8080)
}

/// Service `i`: its own VIP in 198.18.0.0/15, port 53/udp or 443/tcp.
fn service(i: u32, backends: impl Iterator<Item = u32>, table_size: u32) -> ServiceSpec {
    let (port, protocol) = if i.is_multiple_of(2) { (53, Protocol::Udp) } else { (443, Protocol::Tcp) };
    ServiceSpec {
        name: format!("ns{}/svc{i}:{port}", i % 100),
        vip: IpAddr::V4(Ipv4Addr::from(0xc612_0000u32 + i)),
        port,
        protocol,
        source: SourceMode::Snat,
        snat_address: None,
        udp_timeout: None,
        tcp_timeout: None,
        maglev_table_size: Some(table_size),
        affinity_timeout: None,
        source_ranges: vec![],
        backends: backends.map(|b| BackendSpec { addr: backend_addr(b), weight: 1 }).collect(),
    }
}

fn desired(opts: &Opts) -> DesiredState {
    let m = opts.backends;
    DesiredState { services: (0..opts.services).map(|i| service(i, i * m..(i + 1) * m, opts.table_size)).collect() }
}

/// One map's kernel memory, from `/proc/self/fdinfo`.
#[derive(Clone, Debug, serde::Serialize)]
struct MapMem {
    name: String,
    map_type: u32,
    max_entries: u64,
    memlock: u64,
}

/// The BPF maps this process holds open, by id (deduplicated).
fn map_memory() -> Vec<MapMem> {
    let mut by_id: BTreeMap<u32, MapMem> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else { return Vec::new() };
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<u64>().ok()));
        let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) else { continue };
        let name = aya::maps::MapInfo::from_id(id as u32)
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_string))
            .unwrap_or_else(|| format!("map {id}"));
        by_id.insert(
            id as u32,
            MapMem {
                name,
                map_type: field("map_type:").unwrap_or(0) as u32,
                max_entries: field("max_entries:").unwrap_or(0),
                memlock,
            },
        );
    }
    let mut v: Vec<MapMem> = by_id.into_values().collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.memlock));
    v
}

/// A `/proc/self/status` field in KiB.
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

#[derive(Clone, Debug, Default, serde::Serialize)]
struct Results {
    services: u32,
    backends_per_service: u32,
    table_size: u32,
    load_ms: f64,
    restore_ms: f64,
    generate_ms: f64,
    apply_empty_ms: f64,
    reapply_unchanged_ms: f64,
    /// Re-apply of the unchanged state right after a route was added: every
    /// `source: snat` backend's route is resolved again.
    reapply_after_route_change_ms: f64,
    change_median_ms: f64,
    change_max_ms: f64,
    changes: u32,
    maps_memlock_bytes: u64,
    maps: Vec<MapMem>,
    rss_kib: u64,
    rss_anon_kib: u64,
    rss_shmem_kib: u64,
    rss_file_kib: u64,
    hwm_kib: u64,
    /// The real agent (`--xlb`), when run.
    agent: Option<AgentResults>,
}

/// What the real agent showed.
#[derive(Clone, Debug, Default, serde::Serialize)]
struct AgentResults {
    /// From exec to its "xlb agent running" line: load, parse and validate
    /// the YAML file, apply, attach.
    start_ms: f64,
    config_bytes: u64,
    rss_kib: u64,
    rss_anon_kib: u64,
    rss_file_kib: u64,
    hwm_kib: u64,
    /// From writing the changed file to its "configuration reloaded" line
    /// (includes the agent's 200 ms coalescing of file events).
    reload_median_ms: f64,
    /// Of which: parsing and validating the file (`xlb::source::config::parse`,
    /// timed in this process on the same text).
    parse_ms: f64,
    reloads: u32,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn progress(text: &str) {
    use std::io::Write as _;
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    println!("    {text}");
    let _ = std::io::stdout().flush();
}

fn measure(opts: &Opts, pin: &Path, agent: Option<(&Path, &str, &Path, &Path)>) -> Result<Results> {
    let mut r = Results {
        services: opts.services,
        backends_per_service: opts.backends,
        table_size: opts.table_size,
        changes: opts.changes,
        ..Default::default()
    };
    let t = Instant::now();
    let mut ebpf =
        xlb::bpf::datapath::load_with(pin, opts.flow_entries, opts.table_entries).context("loading the data path")?;
    let xdp: &mut Xdp = ebpf.program_mut("xlb_xdp").context("program xlb_xdp")?.try_into()?;
    xdp.load().context("loading xlb_xdp")?;
    r.load_ms = ms(t.elapsed());
    stopped()?;
    progress(&format!("loaded the data path (maps created, program verified) in {:.0} ms", r.load_ms));

    let t = Instant::now();
    let maps = Maps::take(&mut ebpf).context("taking the maps")?;
    let mut writer = MapWriter::restore(maps, 0).context("MapWriter::restore")?;
    r.restore_ms = ms(t.elapsed());
    progress(&format!("MapWriter::restore on empty maps: {:.1} ms", r.restore_ms));

    let t = Instant::now();
    let mut state = desired(opts);
    r.generate_ms = ms(t.elapsed());
    progress(&format!(
        "generated {} services × {} backends ({} backends) in {:.1} ms",
        opts.services,
        opts.backends,
        opts.services * opts.backends,
        r.generate_ms
    ));

    stopped()?;
    let t = Instant::now();
    let report = writer.apply(&state).context("applying to empty maps")?;
    r.apply_empty_ms = ms(t.elapsed());
    ensure!(report.added == opts.services as usize, "added {} services, expected {}", report.added, opts.services);
    progress(&format!("apply to empty maps: {:.1} ms ({report:?})", r.apply_empty_ms));

    let t = Instant::now();
    let report = writer.apply(&state).context("re-applying")?;
    r.reapply_unchanged_ms = ms(t.elapsed());
    ensure!(report.unchanged == opts.services as usize, "re-apply changed something: {report:?}");
    progress(&format!("re-apply unchanged: {:.1} ms", r.reapply_unchanged_ms));

    // A routing change (a route added, as a CNI does for a new pod): the
    // next apply resolves every backend's route again.
    sh(&["ip", "route", "add", "192.0.2.0/24", "dev", "v0"], None).context("adding a route")?;
    let t = Instant::now();
    let report = writer.apply(&state).context("re-applying after a routing change")?;
    r.reapply_after_route_change_ms = ms(t.elapsed());
    ensure!(report.unchanged == opts.services as usize, "re-apply after a route change changed something: {report:?}");
    progress(&format!("re-apply after a routing change: {:.1} ms", r.reapply_after_route_change_ms));

    // One endpoint change at a time: a backend of one service is replaced
    // by a new address (a pod replaced by another).
    let mut times = Vec::new();
    for c in 0..opts.changes {
        stopped()?;
        let svc = ((u64::from(c) * 7919) % u64::from(opts.services)) as usize;
        let slot = (c % opts.backends.max(1)) as usize;
        let new = backend_addr(opts.services * opts.backends + c);
        if let Some(b) = state.services[svc].backends.get_mut(slot) {
            b.addr = new;
        } else {
            state.services[svc].backends.push(BackendSpec { addr: new, weight: 1 });
        }
        let t = Instant::now();
        let report = writer.apply(&state).context("applying an endpoint change")?;
        let took = t.elapsed();
        ensure!(report.updated == 1, "an endpoint change should update one service: {report:?}");
        times.push(took);
    }
    // The kernel's backend array holds exactly the desired backends (not timed).
    let view = MapsView::open_pinned(pin).context("opening the maps read-only")?;
    let backends = &view.backends;
    let mut active = std::collections::HashSet::new();
    for i in 0..lb_common::MAX_BACKENDS {
        let b = backends.get(&i, 0).context("reading the backend array")?;
        if b.flags & lb_common::BE_F_ACTIVE != 0 {
            active.insert((b.addr, u16::from_be(b.port)));
        }
    }
    let want: std::collections::HashSet<([u8; 16], u16)> =
        state.services.iter().flat_map(|s| s.backends.iter().map(|b| (addr16(b.addr.ip()), b.addr.port()))).collect();
    ensure!(active == want, "the kernel's backend array does not hold the desired backends after the changes");
    times.sort();
    r.change_median_ms = ms(times[times.len() / 2]);
    r.change_max_ms = ms(*times.last().unwrap());
    progress(&format!(
        "{} endpoint changes: median {:.2} ms, worst {:.2} ms",
        opts.changes, r.change_median_ms, r.change_max_ms
    ));

    r.maps = map_memory();
    r.maps_memlock_bytes = r.maps.iter().map(|m| m.memlock).sum();
    r.rss_kib = status_kib("VmRSS:");
    r.rss_anon_kib = status_kib("RssAnon:");
    r.rss_shmem_kib = status_kib("RssShmem:");
    r.rss_file_kib = status_kib("RssFile:");
    r.hwm_kib = status_kib("VmHWM:");
    drop(writer);
    drop(ebpf);
    if let Some((xlb, netns, pin, config)) = agent {
        r.agent = Some(agent_run(opts, xlb, netns, pin, config)?);
    }
    Ok(r)
}

/// The YAML form of the desired state (names made of [a-z0-9-]).
fn yaml(state: &DesiredState) -> String {
    let mut y = String::with_capacity(state.services.len() * 400);
    y.push_str("services:\n");
    for (i, s) in state.services.iter().enumerate() {
        let _ = writeln!(y, "  - name: svc-{i}");
        let _ = writeln!(y, "    vip: {}", s.vip);
        let _ = writeln!(y, "    port: {}", s.port);
        let _ = writeln!(y, "    protocol: {}", s.protocol);
        let _ = writeln!(y, "    maglev_table_size: {}", s.maglev_table_size.unwrap_or(lb_common::TABLE_SIZE));
        y.push_str("    backends:\n");
        for b in &s.backends {
            let _ = writeln!(y, "      - {}", b.addr);
        }
    }
    y
}

/// A `/proc/PID/status` field in KiB.
fn pid_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// Runs the agent in the namespace on the generated file: start time, RSS,
/// and file change → reloaded maps, `reloads` times.
fn agent_run(opts: &Opts, xlb: &Path, netns: &str, pin: &Path, config: &Path) -> Result<AgentResults> {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt as _;
    let mut state = desired(opts);
    let text = yaml(&state);
    std::fs::write(config, &text).with_context(|| format!("writing {}", config.display()))?;
    let mut r = AgentResults { config_bytes: text.len() as u64, reloads: 3, ..Default::default() };
    let t = Instant::now();
    let parsed = xlb::source::config::parse("bench.yaml", &text)
        .map_err(|e| anyhow::anyhow!("the generated file does not validate: {e}"))?;
    r.parse_ms = ms(t.elapsed());
    ensure!(parsed.state.services.len() == state.services.len(), "the generated file lost services");
    drop(parsed);

    let ns = std::fs::File::open(format!("/var/run/netns/{netns}"))?;
    let ns_fd = ns.as_raw_fd();
    let mut cmd = Command::new(xlb);
    cmd.args(["agent", "--config"])
        .arg(config)
        .args(["--interface", "v0", "--pin-path"])
        .arg(pin)
        .args(["--metrics-addr", "127.0.0.1:19464", "--flow-table-size"])
        .arg(opts.flow_entries.to_string())
        .arg("--table-entries")
        .arg(opts.table_entries.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only setns (async-signal-safe) between fork and exec, on an fd
    // that stays open until the child is spawned.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", xlb.display()))?;
    drop(ns);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    let stderr = child.stderr.take().context("agent stderr")?;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let mut wait_for = |needle: &str, limit: Duration| -> Result<(Instant, String)> {
        let deadline = Instant::now() + limit;
        loop {
            stopped()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok((at, line)) => {
                    if line.contains(needle) {
                        return Ok((at, line));
                    }
                    log.push(line);
                    if log.last().is_some_and(|l| l.contains("ERROR")) {
                        bail!("the agent logged an error:\n{}", log.join("\n"));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => bail!("no {needle:?} from the agent within {limit:?}; its log:\n{}", log.join("\n")),
            }
        }
    };
    let result = (|| -> Result<()> {
        let (running, _) = wait_for("xlb agent running", Duration::from_mins(2))?;
        r.start_ms = ms(running.duration_since(t));
        progress(&format!("agent started on the {} byte file in {:.0} ms", r.config_bytes, r.start_ms));
        std::thread::sleep(Duration::from_millis(300));
        r.rss_kib = pid_status_kib(pid, "VmRSS:");
        r.rss_anon_kib = pid_status_kib(pid, "RssAnon:");
        r.rss_file_kib = pid_status_kib(pid, "RssFile:") + pid_status_kib(pid, "RssShmem:");
        r.hwm_kib = pid_status_kib(pid, "VmHWM:");
        let mut times = Vec::new();
        for c in 0..r.reloads {
            let svc = ((u64::from(c) * 104729) % u64::from(opts.services)) as usize;
            let new = backend_addr(opts.services * opts.backends + 1_000_000 + c);
            state.services[svc].backends[0].addr = new;
            let text = yaml(&state);
            let t = Instant::now();
            std::fs::write(config, &text)?;
            let (done, line) = wait_for("configuration reloaded", Duration::from_mins(1))?;
            times.push(done.duration_since(t));
            ensure!(line.contains("updated: 1,"), "the reload did not update exactly one service: {line}");
        }
        times.sort();
        r.reload_median_ms = ms(times[times.len() / 2]);
        progress(&format!("agent: file change → maps reloaded, median of {}: {:.0} ms", r.reloads, r.reload_median_ms));
        Ok(())
    })();
    // SAFETY: our child, not yet reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    result.map(|()| r)
}

/// The machine: CPU model, CPUs, kernel, memory.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown CPU".into(), |s| s.trim().to_string());
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    format!("{model}, {cpus} CPUs, kernel {kernel}")
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn summary(r: &Results, opts: &Opts) -> String {
    let mut s = String::new();
    let target = |v: f64, t: f64| if v <= t { "met" } else { "missed" };
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---:|---|---|");
    let _ = writeln!(
        s,
        "| apply {} services × {} backends to empty maps | {:.0} ms | ≤ 2000 ms | {} |",
        r.services,
        r.backends_per_service,
        r.apply_empty_ms,
        target(r.apply_empty_ms, 2000.0)
    );
    let _ = writeln!(s, "| re-apply unchanged | {:.1} ms | | |", r.reapply_unchanged_ms);
    let _ = writeln!(
        s,
        "| re-apply unchanged after a routing change (every backend's route resolved again) | {:.0} ms | | |",
        r.reapply_after_route_change_ms
    );
    let _ = writeln!(
        s,
        "| one endpoint change in the maps (median of {}) | {:.2} ms | ≤ 50 ms | {} |",
        r.changes,
        r.change_median_ms,
        target(r.change_median_ms, 50.0)
    );
    let _ = writeln!(
        s,
        "| one endpoint change, worst | {:.2} ms | ≤ 50 ms | {} |",
        r.change_max_ms,
        target(r.change_max_ms, 50.0)
    );
    let _ = writeln!(s, "| kernel memory of the maps (memlock) | {} | | |", mib(r.maps_memlock_bytes));
    let _ = writeln!(
        s,
        "| process RSS: total (anonymous + mapped maps and files) | {} ({} + {}) | | |",
        mib(r.rss_kib * 1024),
        mib(r.rss_anon_kib * 1024),
        mib((r.rss_file_kib + r.rss_shmem_kib) * 1024)
    );
    let _ = writeln!(s, "| process peak RSS | {} | | |", mib(r.hwm_kib * 1024));
    if let Some(a) = &r.agent {
        let _ = writeln!(
            s,
            "| agent (`xlb agent`, same services from a {} YAML file): start to running | {:.0} ms | | |",
            mib(a.config_bytes),
            a.start_ms
        );
        let _ = writeln!(
            s,
            "| agent RSS: total (anonymous + mapped maps and files) | {} ({} + {}) | | |",
            mib(a.rss_kib * 1024),
            mib(a.rss_anon_kib * 1024),
            mib(a.rss_file_kib * 1024)
        );
        let _ = writeln!(s, "| agent peak RSS | {} | | |", mib(a.hwm_kib * 1024));
        let _ = writeln!(
            s,
            "| agent: one endpoint changed in the file → maps reloaded (median of {}; includes its 200 ms event coalescing and {:.0} ms of parsing and validating the file) | {:.0} ms | | |",
            a.reloads, a.parse_ms, a.reload_median_ms
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "(maglev_table_size {}, --table-entries {}, --flow-table-size {}; load {:.0} ms, restore {:.0} ms)",
        opts.table_size, opts.table_entries, opts.flow_entries, r.load_ms, r.restore_ms
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| map | max entries | memlock |");
    let _ = writeln!(s, "|---|---:|---:|");
    for m in &r.maps {
        let _ = writeln!(s, "| {} | {} | {} |", m.name, m.max_entries, mib(m.memlock));
    }
    s
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control_bench: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<()> {
    let mut opts = Opts::parse();
    if opts.tiny {
        opts.services = 100;
        opts.backends = 10;
        opts.changes = 5;
        opts.table_entries = 1 << 20;
        opts.flow_entries = 4096;
    }
    ensure!(
        lb_common::TABLE_SIZES.contains(&opts.table_size),
        "--table-size {} is not one of {:?}",
        opts.table_size,
        lb_common::TABLE_SIZES
    );
    ensure!(opts.services > 0 && opts.backends > 0, "--services and --backends must be positive");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (BPF maps, network namespaces, bpffs): run it as root");
    }
    ensure_bpffs()?;
    cleanup_stale();
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let pid = std::process::id();
    let cleanup = Cleanup {
        netns: format!("{NETNS_PREFIX}{pid}"),
        pin: PathBuf::from(format!("{PIN_PREFIX}{pid}")),
        agent_pin: PathBuf::from(format!("{PIN_PREFIX}{pid}-agent")),
        config: std::env::temp_dir().join(format!("xlb-bench-cp-{pid}.yaml")),
    };
    sh(&["ip", "netns", "add", &cleanup.netns], None)?;
    let setup = "link set lo up\n\
                 link add v0 type veth peer name v1\n\
                 link set v0 up\n\
                 link set v1 up\n\
                 addr add 10.255.255.254/8 dev v0\n";
    sh(&["ip", "-n", &cleanup.netns, "-batch", "-"], Some(setup))?;

    println!(
        "Control plane: {} services × {} backends (source: snat, maglev_table_size {}), {} endpoint changes",
        opts.services, opts.backends, opts.table_size, opts.changes
    );
    let (ns, pin, o) = (cleanup.netns.clone(), cleanup.pin.clone(), opts.clone());
    let (agent_pin, config) = (cleanup.agent_pin.clone(), cleanup.config.clone());
    let handle = std::thread::Builder::new().name("control".into()).spawn(move || -> Result<Results> {
        enter_netns(&ns)?;
        let agent = o.xlb.as_deref().map(|x| (x, ns.as_str(), agent_pin.as_path(), config.as_path()));
        measure(&o, &pin, agent)
    })?;
    let result = handle.join().map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?;
    drop(cleanup);
    let r = result?;
    println!();
    let machine = machine();
    let table = summary(&r, &opts);
    println!("machine: {machine}\n");
    println!("{table}");
    if let Some(path) = &opts.markdown {
        std::fs::write(path, format!("Machine: {machine}.\n\n{table}"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
