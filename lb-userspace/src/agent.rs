//! `xlb agent`: loads the data path, attaches it, programs the maps from the
//! configuration and keeps them in step with it (SIGHUP or a file change
//! reloads; a bad file keeps the running configuration).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Args;
use lb_common::{DEFAULT_FLOW_ENTRIES, IF_F_REDIRECT, IF_F_TX};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::{mpsc, watch},
};
use tracing::{error, info, warn};

use crate::{
    attach::{self, XdpModeArg},
    config::{self, ConfigErrors},
    datapath, desired, follow, iface,
    maps::{map_dir, Maps},
    metrics::{self, Health},
    status,
    writer::MapWriter,
};

/// Flags of `xlb agent`.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["config", "kubernetes"])))]
pub struct AgentArgs {
    /// YAML file with the services (see README).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Take services from the Kubernetes API instead of a file.
    #[arg(long, conflicts_with = "config")]
    pub kubernetes: bool,
    /// This node's name (Kubernetes mode).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig file (Kubernetes mode; default: in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Serve LoadBalancer Services with this `spec.loadBalancerClass`
    /// (Kubernetes mode).
    #[arg(long, default_value = "xlb.io/xdp")]
    pub lb_class: String,
    /// Range to allocate VIPs from for Services that ask for none
    /// (repeatable, IPv4 or IPv6 CIDR; Kubernetes mode).
    #[arg(long = "vip-pool", value_name = "CIDR")]
    pub vip_pools: Vec<ipnet::IpNet>,
    /// Namespace of the allocator Lease `xlb-vip-allocator` (Kubernetes mode).
    #[arg(long, env = "POD_NAMESPACE", default_value = "xlb-system")]
    pub namespace: String,
    /// Interface to attach XDP to (repeatable): where clients' packets and
    /// backends' replies arrive.
    #[arg(long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Also attach to every interface whose name matches PATTERN (a glob,
    /// e.g. `cali*`, `lxc*`, `veth*`: the host ends of pod veths), now and
    /// as they appear (repeatable).
    #[arg(long = "interface-glob", value_name = "PATTERN")]
    pub interface_globs: Vec<String>,
    /// Let XDP transmit into IF (XDP_TX/XDP_REDIRECT) although its driver
    /// is one that needs help from the other side, e.g. a veth whose peer
    /// runs an XDP program (repeatable; IF must also be an --interface).
    #[arg(long = "xdp-transmit", value_name = "IF")]
    pub xdp_transmit: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t)]
    pub xdp_mode: XdpModeArg,
    /// bpffs directory for the pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/xlb")]
    pub pin_path: PathBuf,
    /// Address of the Prometheus `/metrics` and `/healthz` server.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Leave the programs attached on exit (the next agent takes them over
    /// without a gap).
    #[arg(long)]
    pub keep_on_exit: bool,
    /// Connection-table size (flows), 1024..=67108864; the reverse-NAT
    /// table gets as many entries (together roughly 300 bytes of kernel
    /// memory per entry).
    #[arg(long, default_value_t = DEFAULT_FLOW_ENTRIES,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_FLOW_ENTRIES)..=i64::from(MAX_FLOW_ENTRIES)))]
    pub flow_table_size: u32,
    /// New flows per second per CPU that get a connection-table entry
    /// (flood guard; above it flows are forwarded by hash, not recorded). 0: no limit.
    #[arg(long, default_value_t = lb_common::settings::DEFAULT_NEW_FLOWS_PER_CPU)]
    pub max_new_flows_per_cpu: u32,
    /// Seed of the flow hash and the Maglev lookup tables; give every node
    /// the same. Overrides the file's `maglev_seed`; default: that, else 0.
    #[arg(long = "maglev-seed", visible_alias = "hash-seed", value_name = "N")]
    pub maglev_seed: Option<u32>,
    /// Entries of the lookup-table array shared by all services (8 bytes of
    /// kernel memory each); each service takes twice its `maglev_table_size`.
    /// A pinned array of another size is replaced, keeping the tables that fit.
    #[arg(long, value_name = "N", default_value_t = lb_common::TABLE_ENTRIES,
          value_parser = clap::value_parser!(u32).range(502..))]
    pub table_entries: u32,
    /// VIP announcement (`--announce`, `--announce-interface`).
    #[command(flatten)]
    pub announce: crate::announce::AnnounceArgs,
}

/// How the agent failed, which decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Invalid configuration file (exit 2).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Bad usage (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Anything at run time (exit 1).
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

/// Smallest `--flow-table-size`: below it a handful of clients fill the
/// table and flows are evicted (and re-picked) all the time.
pub const MIN_FLOW_ENTRIES: u32 = 1024;
/// Largest `--flow-table-size` (about 20 GiB of kernel memory for both
/// tables).
pub const MAX_FLOW_ENTRIES: u32 = 1 << 26;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: zeroed statfs is valid; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs writes into the struct we own.
    unsafe { libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure `pin_path` is (or can be made) a directory on a bpffs,
/// mounting /sys/fs/bpf if needed. A path that cannot be one is bad usage.
fn ensure_bpffs(pin_path: &Path) -> Result<(), AgentError> {
    let root = Path::new("/sys/fs/bpf");
    if pin_path.starts_with(root) && !is_bpffs(root) {
        let private = private_mount_namespace();
        let status = std::process::Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status();
        if !status.is_ok_and(|s| s.success()) {
            return Err(anyhow::anyhow!(
                "/sys/fs/bpf is not a bpffs and mounting one failed: run `mount -t bpf bpf /sys/fs/bpf`"
            )
            .into());
        }
        info!("mounted bpffs on /sys/fs/bpf");
        if let Some(netns) = private {
            let name = netns.as_deref().unwrap_or("NAME");
            warn!(
                "this agent runs in a mount namespace of its own where /sys/fs/bpf was not mounted, as `ip netns exec` makes \
                 (it remounts /sys): the bpffs just mounted is private to this agent, so its pinned maps and links are invisible \
                 from the host (`xlb status` and `xlb services` there find nothing) and --keep-on-exit cannot hand over to the \
                 next agent. Start it with `nsenter --net=/var/run/netns/{name} xlb agent ...` instead (it joins the network \
                 namespace only)"
            );
        }
    }
    let mut probe = pin_path.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if !probe.as_os_str().is_empty() && !probe.is_dir() {
        return Err(AgentError::Usage(format!(
            "--pin-path {}: {} is not a directory; give a directory on a bpffs, e.g. /sys/fs/bpf/xlb",
            pin_path.display(),
            probe.display()
        )));
    }
    if !is_bpffs(&probe) {
        return Err(AgentError::Usage(format!(
            "--pin-path {} is not on a bpffs: use a directory under /sys/fs/bpf (or where `mount -t bpf bpf DIR` mounted one)",
            pin_path.display()
        )));
    }
    std::fs::create_dir_all(map_dir(pin_path)).with_context(|| format!("creating {}", pin_path.display()))?;
    Ok(())
}

/// `Some` when /sys was remounted by `ip netns exec` (which unshares the
/// mount namespace and mounts a fresh sysfs on /sys, with the network
/// namespace's name as its source, and no bpffs below it), with that name
/// when /var/run/netns has it.
#[expect(clippy::option_option, reason = "none, unnamed or named: three outcomes")]
fn private_mount_namespace() -> Option<Option<String>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let source = netns_exec_sysfs(&mountinfo)?;
    let known = Path::new("/var/run/netns").join(&source).exists();
    Some(known.then_some(source))
}

/// The source of the sysfs mounted last on /sys in a mountinfo text, when
/// it is not the usual `sysfs` (`ip netns exec` names it after the network
/// namespace).
fn netns_exec_sysfs(mountinfo: &str) -> Option<String> {
    let mut sys = mountinfo.lines().filter_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        let mut r = right.split_whitespace();
        let (fstype, source) = (r.next()?, r.next()?);
        (point == "/sys" && fstype == "sysfs").then_some(source)
    });
    let source = sys.next_back()?;
    (source != "sysfs" && source != "none").then(|| source.to_owned())
}

/// Checks the Kubernetes configuration (the --kubeconfig file, else the
/// in-cluster one) before anything is attached.
async fn check_kubeconfig(path: Option<&Path>) -> Result<(), AgentError> {
    match path {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                AgentError::Usage(format!("--kubeconfig {}: {e}; check the path and the file", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.map_err(
                |e| {
                    AgentError::Usage(format!(
                        "--kubeconfig {}: {e}; check its current context, cluster and user",
                        path.display()
                    ))
                },
            )?;
        }
        None => {
            kube::Config::infer().await.map_err(|e| {
                AgentError::Usage(format!(
                    "--kubernetes: no Kubernetes configuration ({e}): run in a pod with a service account, or pass --kubeconfig FILE"
                ))
            })?;
        }
    }
    Ok(())
}

/// Records the result of applying a configuration (at start, on a reload,
/// on a Kubernetes change): `/healthz`, `/readyz`, the
/// `xlb_config_last_reload_*` metrics and `xlb status` report it.
pub(crate) fn record_apply(health: &Health, result: Result<String, String>) {
    health.record_apply(result);
}

/// A short account of an apply, for [`record_apply`].
pub(crate) fn apply_summary(r: &crate::writer::ApplyReport) -> String {
    format!("services: {} added, {} updated, {} removed, {} unchanged", r.added, r.updated, r.removed, r.unchanged)
}

/// Marks the agent stopped in its record when the agent returns, whatever
/// way it returns.
struct StopRecord(Option<Arc<status::Recorder>>);

impl Drop for StopRecord {
    fn drop(&mut self) {
        if let Some(r) = &self.0 {
            r.stop();
        }
    }
}

/// Records which interfaces XDP may transmit into.
fn program_interfaces(
    writer: &mut MapWriter,
    ifaces: &[String],
    attached: &[attach::Attached],
    forced: &[String],
) -> Result<()> {
    for iface in ifaces {
        let idx = iface::ifindex(iface).with_context(|| format!("interface {iface}"))?;
        let native = attached.iter().any(|a| &a.iface == iface && a.mode == aya::programs::XdpMode::Driver);
        let capable = forced.contains(iface) || iface::xdp_transmit_capable(iface);
        let caps = if native && capable { IF_F_TX | IF_F_REDIRECT } else { 0 };
        writer.set_interface_caps(idx, caps).context("writing the interface map and the devmap")?;
        info!(%iface, ifindex = idx, xdp_transmit = caps != 0, "interface ready");
    }
    Ok(())
}

/// This node's tag for the XDP→tc hand-off (`Settings::node_tag`): the one
/// pinned by an earlier agent at this pin path, else a new random non-zero one.
fn node_tag(pinned: u32) -> u32 {
    use std::hash::BuildHasher as _;
    if pinned != 0 {
        return pinned;
    }
    // RandomState's keys come from the OS's random source.
    let h = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    match (h ^ (h >> 32)) as u32 {
        0 => 1,
        t => t,
    }
}

/// Where the services come from.
enum Source {
    File(PathBuf, config::Config),
    Kubernetes(crate::k8s::Options),
}

/// The agent's signal handlers, installed first thing in [`run`]: a
/// SIGTERM/SIGINT or SIGHUP that arrives while the agent starts is neither
/// fatal (the default action) nor lost; the agent finishes starting, then
/// stops cleanly (detaching, or pinning with `--keep-on-exit`).
struct Signals {
    /// Becomes true once SIGTERM or SIGINT has arrived.
    stop: watch::Receiver<bool>,
    hup: Signal,
}

fn install_signals() -> Result<Signals> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let (tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(Signals { stop, hup })
}

/// Resolves once SIGTERM or SIGINT has arrived (at any time since
/// [`install_signals`]).
async fn terminated(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    let signals = install_signals()?;
    let mut ifaces = Vec::new();
    let source = if args.kubernetes {
        let node_name = args.node_name.clone().filter(|n| !n.is_empty()).ok_or_else(|| {
            AgentError::Usage("--kubernetes needs --node-name NAME (or NODE_NAME in the environment)".into())
        })?;
        if !args.vip_pools.is_empty() {
            info!(pools = ?args.vip_pools, "VIP pools");
        }
        Source::Kubernetes(crate::k8s::Options {
            node_name,
            kubeconfig: args.kubeconfig.clone(),
            lb_class: args.lb_class.clone(),
            pools: args.vip_pools.iter().map(ipnet::IpNet::trunc).collect(),
            namespace: args.namespace.clone(),
            interfaces: args.interfaces.clone(),
        })
    } else {
        let path = args.config.clone().ok_or_else(|| AgentError::Usage("--config FILE is required".into()))?;
        let cfg = config::load(&path)?;
        ifaces.clone_from(&cfg.interfaces);
        Source::File(path, cfg)
    };
    for i in &args.interfaces {
        if !ifaces.contains(i) {
            ifaces.push(i.clone());
        }
    }
    let patterns = args
        .interface_globs
        .iter()
        .map(|g| {
            glob::Pattern::new(g).map_err(|e| {
                AgentError::Usage(format!("--interface-glob {g:?}: {e}; use a shell-style pattern like 'veth*'"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ifaces.is_empty() && patterns.is_empty() {
        return Err(AgentError::Usage(
            "no interface: pass --interface IF or --interface-glob PATTERN (or list `interfaces:` in the file)".into(),
        ));
    }
    args.announce.check(&ifaces).map_err(AgentError::Usage)?;
    if let Some(i) = args.xdp_transmit.iter().find(|i| !ifaces.contains(i)) {
        return Err(AgentError::Usage(format!("--xdp-transmit {i}: not an --interface; add --interface {i}")));
    }
    for i in &ifaces {
        iface::ifindex(i)
            .map_err(|e| AgentError::Usage(format!("interface {i}: {e}; check `ip link` in this network namespace")))?;
    }
    if args.kubernetes {
        check_kubeconfig(args.kubeconfig.as_deref()).await?;
    }
    // Bound before anything is attached: a busy or foreign address is bad usage.
    let listener = metrics::bind(args.metrics_addr).await.map_err(|e| {
        AgentError::Usage(format!("--metrics-addr {}: {e}; pick a free address:port", args.metrics_addr))
    })?;
    ensure_bpffs(&args.pin_path)?;
    crate::pins::check(&args.pin_path, &crate::pins::Wanted { flow_entries: args.flow_table_size })
        .map_err(anyhow::Error::from)?;
    status::prepare_pin(&args.pin_path)?;

    let mut ebpf = datapath::load_with(&args.pin_path, args.flow_table_size, args.table_entries)?;
    if let Err(e) = crate::routegen::spawn(&args.pin_path) {
        warn!(error = %e, "route changes not followed: next hops cached in XDP expire only by age (1 s)");
    }
    spawn_datapath_log(&mut ebpf);
    let maps = Maps::take(&mut ebpf).context("opening the maps")?;
    let file_seed = match &source {
        Source::File(_, cfg) => cfg.maglev_seed,
        Source::Kubernetes(_) => None,
    };
    let mut writer =
        MapWriter::restore(maps, args.maglev_seed.or(file_seed).unwrap_or(0)).context("reading the pinned maps")?;
    // Before anything is attached: the XDP→tc hand-off carries the node tag.
    let node_tag = node_tag(writer.settings().map_or(0, |s| s.node_tag));
    let settings = lb_common::settings::Settings { new_flows_per_cpu: args.max_new_flows_per_cpu, node_tag };
    writer.set_settings(settings).context("writing the data-path settings")?;
    let health = Arc::new(Health::default());
    if let Source::File(_, cfg) = &source {
        let start =
            desired::Update { state: cfg.state.clone(), seed: None, origin: desired::Origin::Start, applied: None };
        desired::apply(&mut writer, &health, &start).context("programming the services")?;
    }
    let mut attached = attach::attach_all(&mut ebpf, &ifaces, args.xdp_mode, &args.pin_path)?;
    program_interfaces(&mut writer, &ifaces, &attached, &args.xdp_transmit)?;
    // The VIPs this node announces: in YAML mode every VIP of the file
    // (`follow_file` sends it again on reload); in Kubernetes mode the
    // Leases' producer sends on `announce_tx`.
    let initial = match &source {
        Source::File(_, cfg) => crate::announce::file_vips(&cfg.state),
        Source::Kubernetes(_) => std::collections::BTreeSet::new(),
    };
    let (announce_tx, announce_rx) = watch::channel(initial);
    let mut announcer = crate::announce::Announcer::start(&args.announce, &ifaces, &mut writer, announce_rx)?;
    let programs = Arc::new(std::sync::Mutex::new(follow::Programs { ebpf, attached: Vec::new() }));
    if patterns.is_empty() {
        programs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).attached = attached;
    } else {
        programs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).attached.append(&mut attached);
        follow::sync(&programs, &patterns, &ifaces, args.xdp_mode, &args.pin_path);
        follow::spawn(programs.clone(), patterns, ifaces.clone(), args.xdp_mode, args.pin_path.clone());
    }

    let snapshot = {
        let (programs, health) = (programs.clone(), health.clone());
        move || status::Snapshot {
            interfaces: programs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .attached
                .iter()
                .map(|a| (a.iface.clone(), status::mode_code(a.mode)))
                .collect(),
            last_apply: health.last_apply(),
        }
    };
    let recorder = status::Recorder::start(&args.pin_path, args.kubernetes, snapshot)
        .map_err(|e| warn!(error = %format!("{e:#}"), "no agent record: `xlb status` will not see this agent"))
        .ok();
    let stop_record = StopRecord(recorder);
    metrics::serve(listener, args.pin_path.clone(), health.clone());
    // Producers send desired states; this agent's loop alone applies them.
    let (updates, received) = desired::channel();
    let done = terminated(signals.stop.clone());
    match source {
        Source::File(path, _) => {
            health.set_ready(true);
            info!(services = writer.len(), metrics = %args.metrics_addr, "xlb agent running");
            let hup = signals.hup;
            let producer = tokio::spawn(follow_file(path, args.maglev_seed, health.clone(), hup, updates, announce_tx));
            desired::apply_loop(&mut writer, &health, received, &mut announcer, done).await;
            producer.abort();
        }
        Source::Kubernetes(opts) => {
            // Ready once the first complete lists are applied; until then
            // the pinned state (if any) keeps forwarding.
            let producer =
                tokio::spawn(crate::k8s::run(opts, updates, health.clone(), terminated(signals.stop.clone())));
            drop(announce_tx);
            desired::apply_loop(&mut writer, &health, received, &mut announcer, done).await;
            // Stops with the same signal (releasing the Lease), or has
            // stopped on an error, which is the agent's.
            producer.await.context("the Kubernetes task")??;
        }
    }
    health.set_ready(false);
    // No more ARP/NDP answers before the programs go (YAML mode with
    // --keep-on-exit: the next agent carries on answering).
    announcer.stop(&mut writer, args.keep_on_exit && !args.kubernetes);
    // Stopped before the programs are detached or pinned, so no heartbeat
    // records the interfaces half gone (the next agent inherits their modes).
    if let Some(r) = &stop_record.0 {
        r.stop();
    }
    let mut p = programs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let follow::Programs { ebpf, attached } = &mut *p;
    let attached = std::mem::take(attached);
    if args.keep_on_exit {
        attach::keep(ebpf, attached, &args.pin_path)?;
    } else {
        info!("detaching");
        for a in attached {
            attach::detach(ebpf, a);
        }
    }
    Ok(())
}

/// Sends the file again on SIGHUP or when it changes (the agent's loop
/// applies it), until the agent's loop stops; an invalid file is reported
/// and the running configuration kept.
async fn follow_file(
    path: PathBuf,
    seed_flag: Option<u32>,
    health: Arc<Health>,
    mut hup: Signal,
    updates: mpsc::Sender<desired::Update>,
    announce: watch::Sender<std::collections::BTreeSet<std::net::IpAddr>>,
) {
    let (tx, mut rx) = mpsc::channel::<()>(4);
    let _watcher = watch_file(&path, tx).map_err(|e| warn!(error = %e, "not watching the file; reload with SIGHUP"));
    loop {
        let why = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            Some(()) = rx.recv() => {
                // let the writer finish; coalesce bursts of events
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
                "file change"
            }
            () = updates.closed() => return,
        };
        if let Some(update) = reload(&path, seed_flag, why, &health) {
            announce.send_replace(crate::announce::file_vips(&update.state));
            if updates.send(update).await.is_err() {
                return;
            }
        }
    }
}

/// Forwards the data path's aya-log records (rare events, debug level) to
/// our log.
fn spawn_datapath_log(ebpf: &mut aya::Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "data-path events will not be logged");
            return;
        }
    };
    // SAFETY: the logger owns its ring-buffer fd for as long as the AsyncFd
    // owns the logger, and as_raw_fd always returns that same fd.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let Ok(mut fd) = registered else {
        warn!("data-path events will not be logged (no poll on the log ring)");
        return;
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// Programs the backends that got a route since (see
/// [`MapWriter::retry_unroutable`]); shared with Kubernetes mode.
pub(crate) fn retry_unroutable(writer: &mut MapWriter) {
    match writer.retry_unroutable() {
        Ok(0) => {}
        Ok(n) => info!(
            backends = n,
            still_unroutable = writer.unroutable().len(),
            "backends programmed after a routing change"
        ),
        Err(e) => {
            error!(error = %e, "programming backends after a routing change failed; the next change or reload retries");
        }
    }
}

/// The file as a desired state to apply, or `None` (reported) when it is
/// invalid. `seed_flag`: `--maglev-seed`, which overrides the file's
/// `maglev_seed`.
fn reload(path: &Path, seed_flag: Option<u32>, why: &'static str, health: &Health) -> Option<desired::Update> {
    match config::load(path) {
        Ok(cfg) => Some(desired::Update {
            seed: Some(seed_flag.or(cfg.maglev_seed).unwrap_or(0)),
            state: cfg.state,
            origin: desired::Origin::Reload(why),
            applied: None,
        }),
        Err(errors) => {
            for e in &errors.0 {
                error!("{e}");
            }
            error!(trigger = why, "invalid configuration; keeping the running one");
            let first = errors.0.first().map(ToString::to_string).unwrap_or_default();
            let more = if errors.0.len() > 1 { format!(" (and {} more)", errors.0.len() - 1) } else { String::new() };
            record_apply(health, Err(format!("{why}: invalid configuration: {first}{more}")));
            None
        }
    }
}

fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let file = path.file_name().map(std::borrow::ToOwned::to_owned);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let ours = ev.paths.iter().any(|p| p.file_name() == file.as_deref());
            if ours && (ev.kind.is_modify() || ev.kind.is_create()) {
                let _ = tx.try_send(());
            }
        }
    })?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_netns_exec_sysfs_is_recognised() {
        let host = "22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n\
                    30 22 0:26 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw,mode=700\n";
        assert_eq!(netns_exec_sysfs(host), None);
        let netns_exec = format!("{host}52 49 0:41 / /sys rw,relatime - sysfs blue rw\n");
        assert_eq!(netns_exec_sysfs(&netns_exec).as_deref(), Some("blue"));
        assert_eq!(netns_exec_sysfs(""), None);
    }
}
