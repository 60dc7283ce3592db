//! `xlb agent`: loads the data path, attaches it, programs the maps from the
//! configuration and keeps them in step with it (SIGHUP or a file change
//! reloads; a bad file keeps the running configuration).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result};
use clap::Args;
use lb_common::DEFAULT_FLOW_ENTRIES;
use tracing::{error, info, warn};

mod bpffs;
mod mountns;
mod reload;
mod signals;
pub(crate) mod xdp_paths;

use bpffs::ensure_bpffs;
use reload::follow_file;
use signals::{install_signals, terminated};

use crate::{
    bpf::{
        attach::{self, XdpModeArg},
        datapath,
        maps::Maps,
    },
    host::{follow, iface},
    metrics::{self, Health},
    source::config::{self, ConfigErrors},
    state::{desired, writer::MapWriter},
    status,
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
    /// Serve the Gateway API GatewayClasses whose `spec.controllerName` is
    /// this (Kubernetes mode).
    #[arg(long, default_value = crate::source::k8s::gateway::DEFAULT_CONTROLLER_NAME)]
    pub gateway_controller_name: String,
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
    /// Also attach to the interfaces of this node's default routes (IPv4
    /// and IPv6, main table), whatever their names (`ens3`, `eno1`,
    /// `bond0`...). Resolved once at start; a later change of default route
    /// is logged, not followed (restart the agent).
    #[arg(long)]
    pub interface_default_route: bool,
    /// Force XDP to transmit into IF (XDP_TX/XDP_REDIRECT) whatever the
    /// kernel reports (repeatable; IF must also be an --interface). Not
    /// needed where the kernel reports `ndo_xmit` (e.g. a veth whose peer
    /// runs an XDP program): the agent picks XDP there by itself.
    #[arg(long = "xdp-transmit", value_name = "IF")]
    pub xdp_transmit: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t)]
    pub xdp_mode: XdpModeArg,
    /// bpffs directory for the pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/xlb")]
    pub pin_path: PathBuf,
    /// Address of the Prometheus `/metrics` and `/healthz` server:
    /// `IP:PORT`, `[IPv6]:PORT`, or an IP alone (port 9464), e.g. the
    /// node's IP from the downward API (`status.hostIP`). `0.0.0.0` serves
    /// every address of the node.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
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

/// The port of `--metrics-addr` when only an IP is given.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// `--metrics-addr`: `IP:PORT`, `[IPv6]:PORT`, or an IP alone (port
/// [`DEFAULT_METRICS_PORT`]).
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    bare.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, DEFAULT_METRICS_PORT)).map_err(|_| {
        format!("{s:?} is not an address: give IP:PORT, [IPv6]:PORT or an IP alone (port {DEFAULT_METRICS_PORT})")
    })
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
pub(crate) fn apply_summary(r: &crate::state::writer::ApplyReport) -> String {
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

/// Decides and writes the transmit path of every attached interface, then
/// follows the changes (`xdp_paths`); returns the apply loop's end and the
/// table of paths for `xlb status`.
fn program_interfaces(
    writer: &mut MapWriter,
    programs: &Arc<std::sync::Mutex<follow::Programs>>,
    forced: &[String],
) -> Result<(xdp_paths::Receiver, xdp_paths::Table)> {
    let decider = xdp_paths::Decider::new(forced.to_vec());
    let table = xdp_paths::Table::default();
    for (name, mode) in xdp_paths::modes(programs) {
        let change = decider.decide(&name, mode).with_context(|| format!("interface {name}: gone"))?;
        xdp_paths::apply(writer, &table, &change).context("writing the interface map and the devmap")?;
    }
    let peers = decider.peers();
    xdp_paths::apply_peers(writer, &peers).context("writing the veths for peer redirects (interface map)")?;
    writer.drop_stale_interfaces().context("removing an earlier agent's interface entries")?;
    Ok((xdp_paths::spawn(decider, programs.clone(), table.clone(), peers), table))
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

/// The `--interface`s, then the interfaces of the default routes if
/// `--interface-default-route` (each once). No default route is bad usage
/// (exit 2), as an `--interface` that does not exist; a netlink failure is
/// a runtime failure. Also returns the default routes' interfaces alone.
fn cli_interfaces(args: &AgentArgs) -> Result<(Vec<String>, Vec<String>), AgentError> {
    use crate::host::defroute::{self, DefaultRouteError};
    let mut out = args.interfaces.clone();
    if args.interface_default_route {
        let found = defroute::interfaces().map_err(|e| match e {
            DefaultRouteError::NoDefaultRoute => AgentError::Usage(format!("--interface-default-route: {e}")),
            DefaultRouteError::Dump(_) => {
                AgentError::Runtime(anyhow::Error::from(e).context("--interface-default-route"))
            }
        })?;
        info!(interfaces = ?found, "interfaces of the default routes (--interface-default-route)");
        for i in &found {
            if !out.contains(i) {
                out.push(i.clone());
            }
        }
        return Ok((out, found));
    }
    Ok((out, Vec::new()))
}

/// Where the services come from.
enum Source {
    /// What the file held at start, and the watch on the file (set up
    /// before the file was read, so no change after that read is missed).
    File(config::Config, reload::FileWatch),
    Kubernetes(crate::source::k8s::Options),
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    let signals = install_signals()?;
    let (cli_ifaces, default_route_ifaces) = cli_interfaces(&args)?;
    let mut ifaces = Vec::new();
    let source = if args.kubernetes {
        let node_name = args.node_name.clone().filter(|n| !n.is_empty()).ok_or_else(|| {
            AgentError::Usage("--kubernetes needs --node-name NAME (or NODE_NAME in the environment)".into())
        })?;
        if !args.vip_pools.is_empty() {
            info!(pools = ?args.vip_pools, "VIP pools");
        }
        Source::Kubernetes(crate::source::k8s::Options {
            node_name,
            kubeconfig: args.kubeconfig.clone(),
            lb_class: args.lb_class.clone(),
            pools: args.vip_pools.iter().map(ipnet::IpNet::trunc).collect(),
            namespace: args.namespace.clone(),
            interfaces: cli_ifaces.clone(),
            announce_l2: args.announce.announce == crate::announce::Mode::L2,
            announce_bgp: args.announce.announce == crate::announce::Mode::Bgp,
            gateway_controller_name: args.gateway_controller_name.clone(),
        })
    } else {
        let path = args.config.clone().ok_or_else(|| AgentError::Usage("--config FILE is required".into()))?;
        let watch = reload::FileWatch::start(&path);
        let cfg = config::load(&path)?;
        ifaces.clone_from(&cfg.interfaces);
        Source::File(cfg, watch)
    };
    for i in &cli_ifaces {
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
            "no interface: pass --interface IF, --interface-glob PATTERN or --interface-default-route \
             (or list `interfaces:` in the file)"
                .into(),
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
    // An upgrade: the older layout's maps that did not change are shared
    // with the new program, the others converted before anything reads
    // them; the old program forwards meanwhile.
    let migration = crate::bpf::migrate::Migration::pending(&args.pin_path);
    // A failure before the new program is attached abandons the upgrade.
    let abandon = |_: &anyhow::Error| {
        if let Some(m) = &migration {
            m.abandon();
        }
    };
    let shared = match &migration {
        Some(m) => m.share().map_err(anyhow::Error::from).inspect_err(abandon)?,
        None => Vec::new(),
    };
    crate::bpf::pins::check(&args.pin_path, &crate::bpf::pins::Wanted { flow_entries: args.flow_table_size })
        .map_err(anyhow::Error::from)
        .inspect_err(abandon)?;
    status::prepare_pin(&args.pin_path)?;

    let mut ebpf =
        datapath::load_with(&args.pin_path, args.flow_table_size, args.table_entries).inspect_err(abandon)?;
    if let Some(m) = &migration {
        m.copy(&shared).map_err(anyhow::Error::from).inspect_err(abandon)?;
    }
    if let Err(e) = crate::host::routegen::spawn(&args.pin_path) {
        warn!(error = %e, "route changes not followed: next hops cached in XDP expire only by age (1 s)");
    }
    spawn_datapath_log(&mut ebpf);
    let maps = Maps::take(&mut ebpf).context("opening the maps")?;
    let file_seed = match &source {
        Source::File(cfg, _) => cfg.maglev_seed,
        Source::Kubernetes(_) => None,
    };
    let mut writer =
        MapWriter::restore(maps, args.maglev_seed.or(file_seed).unwrap_or(0)).context("reading the pinned maps")?;
    // Before anything is attached: the XDP→tc hand-off carries the node tag.
    let node_tag = node_tag(writer.settings().map_or(0, |s| s.node_tag));
    let settings = lb_common::settings::Settings { new_flows_per_cpu: args.max_new_flows_per_cpu, node_tag, flags: 0 };
    writer.set_settings(settings).context("writing the data-path settings")?;
    let health = Arc::new(Health::default());
    if let Source::File(cfg, _) = &source {
        let start =
            desired::Update { state: cfg.state.clone(), seed: None, origin: desired::Origin::Start, applied: None };
        desired::apply(&mut writer, &health, &start).context("programming the services")?;
    }
    let mut attached = attach::attach_all(&mut ebpf, &ifaces, args.xdp_mode, &args.pin_path)?;
    if args.interface_default_route {
        crate::host::defroute::spawn_watch(default_route_ifaces);
    }
    // The VIPs this node announces: in YAML mode every VIP of the file, or
    // with BGP those with a serving backend (`follow_file` sends them again
    // on reload); in Kubernetes mode the Leases' producer (L2) or the
    // translation (BGP) sends on `announce_tx`.
    let initial = match &source {
        Source::File(cfg, _) => args.announce.file_wanted(&cfg.state),
        Source::Kubernetes(_) => std::collections::BTreeSet::new(),
    };
    let (announce_tx, announce_rx) = tokio::sync::watch::channel(initial);
    let mut announcer = crate::announce::Announcer::start(&args.announce, &ifaces, &mut writer, announce_rx)?;
    let programs = Arc::new(std::sync::Mutex::new(follow::Programs { ebpf, attached: Vec::new() }));
    if patterns.is_empty() {
        programs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).attached = attached;
    } else {
        programs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).attached.append(&mut attached);
        follow::sync(&programs, &patterns, &ifaces, args.xdp_mode, &args.pin_path);
        follow::spawn(programs.clone(), patterns, ifaces.clone(), args.xdp_mode, args.pin_path.clone());
    }
    attach::release_stale(&args.pin_path, &programs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).attached);
    // The new program runs everywhere: the flows the old one recorded since
    // the copy come over too, and the old maps go.
    if let Some(m) = migration {
        let from = m.from();
        if let Err(e) = m.finish() {
            warn!(error = %e, "finishing the upgrade from map layout v{from}: forwarding on the new maps goes on");
        }
    }
    let (mut path_changes, paths) = program_interfaces(&mut writer, &programs, &args.xdp_transmit)?;

    let snapshot = {
        let (programs, health) = (programs.clone(), health.clone());
        move || status::Snapshot {
            interfaces: {
                let paths = paths.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                xdp_paths::modes(&programs)
                    .into_iter()
                    .map(|(name, mode)| {
                        let path = paths.get(&name).map_or(0, |p| p.code());
                        (name, status::mode_code(mode), path)
                    })
                    .collect()
            },
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
    // Announced while the programs stay (YAML mode, --keep-on-exit): the
    // next agent carries on.
    let keep_announced = args.keep_on_exit && !args.kubernetes;
    match source {
        Source::File(_, watch) => {
            health.set_ready(true);
            info!(services = writer.len(), metrics = %args.metrics_addr, "xlb agent running");
            let hup = signals.hup;
            let producer = tokio::spawn(follow_file(
                watch,
                args.maglev_seed,
                health.clone(),
                hup,
                updates,
                announce_tx,
                args.announce.clone(),
            ));
            desired::apply_loop(&mut writer, &health, received, &mut announcer, &mut path_changes, done).await;
            withdraw_routes(&mut announcer, keep_announced).await;
            producer.abort();
        }
        Source::Kubernetes(opts) => {
            // Ready once the first complete lists are applied; until then
            // the pinned state (if any) keeps forwarding.
            let producer = tokio::spawn(crate::source::k8s::run(
                opts,
                updates,
                health.clone(),
                announce_tx,
                terminated(signals.stop.clone()),
            ));
            desired::apply_loop(&mut writer, &health, received, &mut announcer, &mut path_changes, done).await;
            withdraw_routes(&mut announcer, keep_announced).await;
            // Stops with the same signal (releasing the Lease), or has
            // stopped on an error, which is the agent's.
            producer.await.context("the Kubernetes task")??;
        }
    }
    health.set_ready(false);
    // No more ARP/NDP answers before the programs go (YAML mode with
    // --keep-on-exit: the next agent carries on answering).
    announcer.stop(&mut writer, keep_announced);
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

/// At a stop, `--announce bgp`: withdraws the VIP routes first (unless
/// `keep`), then keeps forwarding for [`crate::announce::WITHDRAW_DRAIN`]
/// while the BGP daemon's peers move the traffic away, before anything
/// else stops and the programs detach.
async fn withdraw_routes(announcer: &mut crate::announce::Announcer, keep: bool) {
    if !keep && announcer.withdraw_routes() {
        info!(drain = ?crate::announce::WITHDRAW_DRAIN, "VIP routes withdrawn; forwarding a little longer before detaching");
        tokio::time::sleep(crate::announce::WITHDRAW_DRAIN).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_takes_an_address_with_or_without_port() {
        let p = |s: &str| parse_metrics_addr(s).map(|a| a.to_string());
        assert_eq!(p("0.0.0.0:9464").unwrap(), "0.0.0.0:9464");
        assert_eq!(p("10.0.0.7").unwrap(), "10.0.0.7:9464", "the node IP alone (status.hostIP)");
        assert_eq!(p("10.0.0.7:9100").unwrap(), "10.0.0.7:9100");
        assert_eq!(p("fd00::7").unwrap(), "[fd00::7]:9464", "an IPv6 hostIP has no brackets");
        assert_eq!(p("[fd00::7]").unwrap(), "[fd00::7]:9464");
        assert_eq!(p("[fd00::7]:9100").unwrap(), "[fd00::7]:9100");
        for bad in ["", "node1", "10.0.0.7:", "10.0.0.7:99999", "$(HOST_IP)"] {
            let e = parse_metrics_addr(bad).unwrap_err();
            assert!(e.contains("IP:PORT"), "{bad:?}: {e}");
        }
    }

    /// The shipped DaemonSet's `args`, with the downward-API variables
    /// Kubernetes substitutes, are a valid `xlb agent` command line: the
    /// uplink by default route, metrics on the node IP.
    #[test]
    fn the_daemonset_args_parse() {
        use clap::Parser as _;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
        let container = &docs[0]["spec"]["template"]["spec"]["containers"][0];
        let env: Vec<&str> = container["env"].as_vec().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
        assert!(env.contains(&"HOST_IP"), "{env:?}");
        let args: Vec<String> = container["args"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().replace("$(NODE_NAME)", "node1").replace("$(HOST_IP)", "10.0.0.7"))
            .collect();
        let cli = crate::cli::args::Cli::try_parse_from(std::iter::once("xlb".to_string()).chain(args))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let crate::cli::args::Cmd::Agent { args, .. } = cli.cmd else { panic!("not `xlb agent`") };
        assert!(args.interface_default_route, "the uplink by default route");
        assert!(args.interfaces.is_empty(), "no interface name hard-coded: {:?}", args.interfaces);
        assert_eq!(args.metrics_addr, "10.0.0.7:9464".parse().unwrap(), "metrics on the node IP only");
    }

    #[test]
    fn interface_default_route_is_a_flag_combinable_with_the_others() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        let cli = Cli::try_parse_from([
            "xlb",
            "--config",
            "x.yaml",
            "--interface-default-route",
            "--interface",
            "c0",
            "--interface-glob",
            "veth*",
            "--metrics-addr",
            "192.0.2.1",
        ])
        .unwrap();
        assert!(cli.agent.interface_default_route);
        assert_eq!(cli.agent.interfaces, vec!["c0"]);
        assert_eq!(cli.agent.metrics_addr, "192.0.2.1:9464".parse().unwrap());
    }
}
