//! The map writer's measurements.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use aya::programs::Xdp;
use xlb::{
    bpf::{maps::Maps, view::MapsView},
    state::model::BackendSpec,
    state::writer::{addr16, MapWriter},
};
use xlb_bench::{host::sh, stop::check_stop};

use crate::agent::agent_run;

use crate::state::{backend_addr, desired};

use crate::Opts;

/// One map's kernel memory, from `/proc/self/fdinfo`.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct MapMem {
    pub(crate) name: String,
    pub(crate) map_type: u32,
    pub(crate) max_entries: u64,
    pub(crate) memlock: u64,
}

/// The BPF maps this process holds open, by id (deduplicated).
pub(crate) fn map_memory() -> Vec<MapMem> {
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
pub(crate) fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct Results {
    pub(crate) services: u32,
    pub(crate) backends_per_service: u32,
    pub(crate) table_size: u32,
    pub(crate) load_ms: f64,
    pub(crate) restore_ms: f64,
    pub(crate) generate_ms: f64,
    pub(crate) apply_empty_ms: f64,
    pub(crate) reapply_unchanged_ms: f64,
    /// Re-apply of the unchanged state right after a route was added: every
    /// `source: snat` backend's route is resolved again.
    pub(crate) reapply_after_route_change_ms: f64,
    pub(crate) change_median_ms: f64,
    pub(crate) change_max_ms: f64,
    pub(crate) changes: u32,
    pub(crate) maps_memlock_bytes: u64,
    pub(crate) maps: Vec<MapMem>,
    pub(crate) rss_kib: u64,
    pub(crate) rss_anon_kib: u64,
    pub(crate) rss_shmem_kib: u64,
    pub(crate) rss_file_kib: u64,
    pub(crate) hwm_kib: u64,
    /// The real agent (`--xlb`), when run.
    pub(crate) agent: Option<AgentResults>,
}

/// What the real agent showed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct AgentResults {
    /// From exec to its "xlb agent running" line: load, parse and validate
    /// the YAML file, apply, attach.
    pub(crate) start_ms: f64,
    pub(crate) config_bytes: u64,
    pub(crate) rss_kib: u64,
    pub(crate) rss_anon_kib: u64,
    pub(crate) rss_file_kib: u64,
    pub(crate) hwm_kib: u64,
    /// From writing the changed file to its "configuration reloaded" line
    /// (includes the agent's 200 ms coalescing of file events).
    pub(crate) reload_median_ms: f64,
    /// Of which: parsing and validating the file (`xlb::source::config::parse`,
    /// timed in this process on the same text).
    pub(crate) parse_ms: f64,
    pub(crate) reloads: u32,
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn progress(text: &str) {
    use std::io::Write as _;
    if xlb_bench::stop::stopped() {
        return;
    }
    println!("    {text}");
    let _ = std::io::stdout().flush();
}

pub(crate) fn measure(opts: &Opts, pin: &Path, agent: Option<(&Path, &str, &Path, &Path)>) -> Result<Results> {
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
    check_stop()?;
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

    check_stop()?;
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
        check_stop()?;
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
