//! Announcing VIPs (`--announce`): making the network send a VIP's traffic
//! to this node.
//!
//! With `--announce l2` the data path answers ARP requests and neighbour
//! solicitations for the VIPs in `XLB_ANNOUNCE` on the interfaces in
//! `XLB_L2_IFACES` (`lb-ebpf/src/l2.rs`), and [`garp`] sends gratuitous ARP
//! / unsolicited neighbour advertisements when a VIP starts being announced
//! and periodically after.
//!
//! Which VIPs this node announces comes on a [`watch`] channel of
//! `BTreeSet<IpAddr>`: in YAML mode every VIP of the file ([`file_vips`],
//! sent again on each reload); in Kubernetes mode the VIPs whose Lease this
//! node holds ([`eligible`] says which VIPs this node may announce,
//! [`lease`] elects one announcer per VIP). The [`Announcer`] consumes it: the agent's apply loop gives
//! each new set to the map writer ([`MapWriter::set_announced`], which
//! keeps only programmed VIPs in the map, also across applies) and the
//! announcer publishes what the map then holds to the gratuitous sender.
//!
//! With `--announce bgp` the announcer keeps one route per VIP in the map
//! in the routing table `--announce-table` ([`bgp`]), which a BGP daemon on
//! the node exports; every eligible node announces (ECMP), no Lease. The
//! set comes from [`eligible::serving_vips`] in YAML mode and
//! [`eligible::bgp`] in Kubernetes mode, sent after every apply, so a VIP
//! that loses its last serving backend leaves the table in the same pass.
//! `XLB_ANNOUNCE` holds the same VIPs (for `xlb status`); with no
//! announce interface (`XLB_L2_IFACES`) the data path answers no ARP/NDP.
use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use clap::{Args, ValueEnum};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info, warn};

use crate::state::{
    model::DesiredState,
    writer::{MapOps, MapWriter},
};

pub mod bgp;
pub mod eligible;
pub mod garp;
pub mod iface;
pub mod lease;

/// `--announce`: how the VIPs are made reachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Not at all: the network routes the VIPs to the nodes.
    #[default]
    None,
    /// Answer ARP/NDP for the VIPs on the announce interfaces.
    L2,
    /// Keep a route per VIP in `--announce-table` for a BGP daemon.
    Bgp,
}

/// The agent's announcement flags.
#[derive(Args, Debug, Clone, Default)]
pub struct AnnounceArgs {
    /// Make the VIPs reachable: `l2` answers ARP and IPv6 neighbour
    /// solicitations for them on the announce interfaces (see
    /// --announce-interface); `bgp` keeps a route per VIP this node should
    /// attract in the routing table --announce-table, for a BGP daemon
    /// (BIRD, FRR) to export; `none`: the network routes them to the nodes.
    #[arg(long, value_enum, default_value_t)]
    pub announce: Mode,
    /// Interface where L2 answers and gratuitous ARP/NA are given
    /// (repeatable; each must be an --interface; default: every --interface).
    #[arg(long = "announce-interface", value_name = "IF")]
    pub announce_interfaces: Vec<String>,
    /// Routing table of the VIP routes with --announce bgp (default 4242):
    /// one that no `ip rule` uses; routes of protocol 249 (xlb's) in it are
    /// xlb's alone, the others are left alone.
    #[arg(long = "announce-table", value_name = "N")]
    pub announce_table: Option<u32>,
}

impl AnnounceArgs {
    /// Checks the flags against the agent's `--interface`s; the error is a
    /// usage error, worded for the user.
    pub fn check(&self, interfaces: &[String]) -> Result<(), String> {
        if self.announce != Mode::L2 && !self.announce_interfaces.is_empty() {
            return Err("--announce-interface needs --announce l2".into());
        }
        if let Some(n) = self.announce_table {
            if self.announce != Mode::Bgp {
                return Err("--announce-table needs --announce bgp".into());
            }
            if let Some((_, name)) = bgp::RESERVED_TABLES.iter().find(|(t, _)| *t == n) {
                return Err(format!(
                    "--announce-table {n}: that is the kernel's {name} table; pick a table no `ip rule` uses (default {})",
                    bgp::DEFAULT_TABLE
                ));
            }
        }
        if let Some(i) = self.announce_interfaces.iter().find(|i| !interfaces.contains(i)) {
            return Err(format!(
                "--announce-interface {i}: not an --interface (XDP answers only where it is attached); add --interface {i}"
            ));
        }
        Ok(())
    }

    /// The routing table of the VIP routes (`--announce bgp`).
    pub fn table(&self) -> u32 {
        self.announce_table.unwrap_or(bgp::DEFAULT_TABLE)
    }

    /// The VIPs to announce in YAML mode: with `--announce bgp` those with
    /// a backend of non-zero weight ([`eligible::serving_vips`]), else every
    /// VIP of the file ([`file_vips`]).
    pub fn file_wanted(&self, state: &DesiredState) -> BTreeSet<IpAddr> {
        match self.announce {
            Mode::Bgp => eligible::serving_vips(state),
            Mode::L2 | Mode::None => file_vips(state),
        }
    }

    /// The announce interfaces: the `--announce-interface`s, else every
    /// `--interface` (none unless `--announce l2`).
    pub fn interfaces(&self, interfaces: &[String]) -> Vec<String> {
        match self.announce {
            Mode::L2 if self.announce_interfaces.is_empty() => interfaces.to_vec(),
            Mode::L2 => self.announce_interfaces.clone(),
            Mode::None | Mode::Bgp => Vec::new(),
        }
    }
}

/// Every VIP of a desired state (YAML mode announces them all).
pub fn file_vips(state: &DesiredState) -> BTreeSet<IpAddr> {
    state.services.iter().map(|s| s.vip).collect()
}

/// How often the route table is checked again although nothing changed
/// (`--announce bgp`): a route someone deleted comes back within this.
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// How long the agent keeps forwarding after withdrawing its VIP routes
/// at a stop (`--announce bgp`), before the programs detach: the BGP daemon
/// tells its peers and they move the traffic to other nodes meanwhile.
pub const WITHDRAW_DRAIN: Duration = Duration::from_secs(1);

/// The consumer of the VIPs to announce: owns the gratuitous sender.
pub struct Announcer {
    /// The VIPs this node must announce (`None`: `--announce none`, or the
    /// producer has gone and the last set stays).
    wanted: Option<watch::Receiver<BTreeSet<IpAddr>>>,
    /// With `--announce none` nothing is announced, whatever is asked.
    enabled: bool,
    /// What `XLB_ANNOUNCE` holds, for the gratuitous sender.
    effective: watch::Sender<BTreeSet<IpAddr>>,
    sender: Option<JoinHandle<()>>,
    /// `--announce bgp`: the route table kept in step with `XLB_ANNOUNCE`.
    routes: Option<Routes>,
}

/// `--announce bgp`: the route table and what it was last brought to.
struct Routes {
    table: Box<dyn RouteOps + Send>,
    /// The VIPs the table was last brought to (`None`: bring it again).
    done: Option<BTreeSet<IpAddr>>,
    /// Checks the table again now and then ([`RESYNC_EVERY`]).
    resync: tokio::time::Interval,
    /// Withdrawn for good (the agent stops): nothing is added any more.
    withdrawn: bool,
}

/// What the announcer needs of a route table ([`bgp::RouteTable`]; a
/// recording fake in tests).
pub trait RouteOps {
    /// Brings the table's routes of ours to one per VIP of `wanted`.
    fn reconcile(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<bgp::Reconciled, bgp::RouteError>;
    /// The table's number.
    fn table(&self) -> u32;
}

impl RouteOps for bgp::RouteTable {
    fn reconcile(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<bgp::Reconciled, bgp::RouteError> {
        bgp::RouteTable::reconcile(self, wanted)
    }

    fn table(&self) -> u32 {
        bgp::RouteTable::table(self)
    }
}

impl Routes {
    fn new(table: Box<dyn RouteOps + Send>) -> Self {
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.reset();
        Self { table, done: None, resync, withdrawn: false }
    }

    /// Brings the table to `vips` unless it was brought there already;
    /// logs every route added or withdrawn. A failure is logged and retried
    /// on the next call. Returns what was done, if anything.
    fn sync(&mut self, vips: &BTreeSet<IpAddr>) -> Option<bgp::Reconciled> {
        let vips = if self.withdrawn { &BTreeSet::new() } else { vips };
        if self.done.as_ref() == Some(vips) {
            return None;
        }
        let table = self.table.table();
        match self.table.reconcile(vips) {
            Ok(r) => {
                for dst in &r.added {
                    info!(route = %dst, table, "BGP: VIP route added (announced)");
                }
                for dst in &r.deleted {
                    info!(route = %dst, table, "BGP: VIP route withdrawn");
                }
                bgp::metrics().record(&r);
                self.done = Some(vips.clone());
                Some(r)
            }
            Err(e) => {
                error!(error = %e, table, "BGP: updating the VIP routes failed; retrying on the next change or within 10 s");
                self.done = None;
                None
            }
        }
    }
}

impl Announcer {
    /// Programs the announce interfaces (`XLB_L2_IFACES`) and starts the
    /// gratuitous sender on them. `wanted` carries the VIPs to announce.
    pub fn start<M: MapOps>(
        args: &AnnounceArgs,
        interfaces: &[String],
        writer: &mut MapWriter<M>,
        wanted: watch::Receiver<BTreeSet<IpAddr>>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let (effective, effective_rx) = watch::channel(BTreeSet::new());
        let enabled = args.announce != Mode::None;
        let routes = if args.announce == Mode::Bgp {
            let table = bgp::RouteTable::open(args.table())
                .with_context(|| format!("opening the routing table {} (--announce-table)", args.table()))?;
            info!(table = args.table(), protocol = bgp::RTPROT_XLB, "BGP: VIP routes kept in this table");
            Some(Routes::new(Box::new(table)))
        } else {
            None
        };
        let mut l2 = Vec::new();
        for name in args.interfaces(interfaces) {
            let i = iface::L2Interface::resolve(&name).with_context(|| format!("announce interface {name}"))?;
            writer.set_l2_interface(i.ifindex, i.mac).context("writing the announce interfaces (XLB_L2_IFACES)")?;
            info!(iface = %i.name, ifindex = i.ifindex, mac = %iface::mac_str(&i.mac), "announce interface ready");
            l2.push(i);
        }
        // Announce interfaces a previous agent left (e.g. `--announce l2`
        // before an `--announce bgp` one, whose VIPs also enter
        // XLB_ANNOUNCE): no ARP/NDP answers there any more.
        let keep: BTreeSet<u32> = l2.iter().map(|i| i.ifindex).collect();
        match writer.retain_l2_interfaces(&keep) {
            Ok(0) => {}
            Ok(n) => info!(interfaces = n, "announce interfaces of a previous agent removed"),
            Err(e) => warn!(error = %e, "removing the announce interfaces of a previous agent (XLB_L2_IFACES)"),
        }
        let sender = (args.announce == Mode::L2).then(|| tokio::spawn(garp::run(effective_rx, l2)));
        Ok(Self { wanted: Some(wanted), enabled, effective, sender, routes })
    }

    /// An announcer for `--announce bgp` on `table` (tests: a fake table).
    #[cfg(test)]
    fn with_routes(wanted: watch::Receiver<BTreeSet<IpAddr>>, table: Box<dyn RouteOps + Send>) -> Self {
        let (effective, _) = watch::channel(BTreeSet::new());
        Self { wanted: Some(wanted), enabled: true, effective, sender: None, routes: Some(Routes::new(table)) }
    }

    /// Resolves when the VIPs to announce have changed (never once the
    /// producer has gone).
    /// With `--announce bgp` it also resolves every [`RESYNC_EVERY`], and
    /// the next [`Self::sync`] checks the route table again.
    pub async fn changed(&mut self) {
        let resync = async {
            match &mut self.routes {
                Some(r) => {
                    r.resync.tick().await;
                    r.done = None;
                }
                None => std::future::pending().await,
            }
        };
        let wanted = async {
            let Some(rx) = &mut self.wanted else { return std::future::pending().await };
            if rx.changed().await.is_err() {
                self.wanted = None;
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = resync => {}
            () = wanted => {}
        }
    }

    /// Gives the VIPs to announce to the writer and publishes what the map
    /// then holds. Called on every change and after every apply.
    pub fn sync<M: MapOps>(&mut self, writer: &mut MapWriter<M>) {
        if let Some(rx) = &mut self.wanted {
            let vips = if self.enabled { rx.borrow_and_update().clone() } else { BTreeSet::new() };
            if let Err(e) = writer.set_announced(vips) {
                error!(error = %e, "writing the announced VIPs (XLB_ANNOUNCE); the next change retries");
            }
        }
        let now = writer.announced();
        if let Some(r) = &mut self.routes {
            let _ = r.sync(&now);
        }
        self.effective.send_if_modified(|v| {
            if *v == now {
                return false;
            }
            info!(vips = ?now, "announced VIPs");
            *v = now;
            true
        });
    }

    /// Stops announcing: the gratuitous sender stops and, unless `keep`
    /// (`--keep-on-exit` in YAML mode, where the next agent carries on),
    /// `XLB_ANNOUNCE` is emptied, so the data path answers no more (called
    /// before the programs are detached).
    pub fn stop<M: MapOps>(mut self, writer: &mut MapWriter<M>, keep: bool) {
        if let Some(s) = self.sender.take() {
            s.abort();
        }
        if keep {
            return;
        }
        self.withdraw_routes();
        match writer.set_announced([]) {
            Ok(()) => {
                if self.enabled {
                    info!("announcements withdrawn");
                }
            }
            Err(e) => error!(error = %e, "emptying XLB_ANNOUNCE"),
        }
    }
}

impl Announcer {
    /// `--announce bgp`: deletes every VIP route of ours from the table, for
    /// good (called first thing at a stop, before the programs detach).
    /// Returns whether a route was announced until then. Nothing with
    /// another mode.
    pub fn withdraw_routes(&mut self) -> bool {
        let Some(r) = &mut self.routes else { return false };
        if r.withdrawn && r.done.as_ref().is_some_and(BTreeSet::is_empty) {
            return false;
        }
        r.withdrawn = true;
        let done = r.sync(&BTreeSet::new());
        if r.done.is_none() {
            warn!("BGP: the VIP routes could not all be withdrawn; the BGP daemon keeps announcing them");
            return true;
        }
        info!(table = r.table.table(), "BGP: no VIP route left in the table");
        done.is_some_and(|d| !d.deleted.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mode: Mode, ifs: &[&str]) -> AnnounceArgs {
        AnnounceArgs {
            announce: mode,
            announce_interfaces: ifs.iter().map(ToString::to_string).collect(),
            announce_table: None,
        }
    }

    fn bgp_table(mode: Mode, table: u32) -> AnnounceArgs {
        AnnounceArgs { announce_table: Some(table), ..args(mode, &[]) }
    }

    #[test]
    fn flags_are_checked_against_the_interfaces() {
        let ifs = vec!["eth0".to_string(), "eth1".to_string()];
        assert!(args(Mode::L2, &[]).check(&ifs).is_ok());
        assert_eq!(args(Mode::L2, &[]).interfaces(&ifs), ifs);
        assert_eq!(args(Mode::L2, &["eth1"]).interfaces(&ifs), vec!["eth1".to_string()]);
        assert!(args(Mode::None, &[]).interfaces(&ifs).is_empty());
        let e = args(Mode::L2, &["eth9"]).check(&ifs).unwrap_err();
        assert!(e.contains("eth9") && e.contains("--interface eth9"), "{e}");
        assert!(args(Mode::None, &["eth0"]).check(&ifs).unwrap_err().contains("--announce l2"));
    }

    #[test]
    fn bgp_flags_are_checked() {
        let ifs = vec!["eth0".to_string()];
        assert!(args(Mode::Bgp, &[]).check(&ifs).is_ok());
        assert_eq!(args(Mode::Bgp, &[]).table(), 4242);
        assert!(args(Mode::Bgp, &[]).interfaces(&ifs).is_empty(), "no ARP/NDP answers with bgp");
        assert_eq!(bgp_table(Mode::Bgp, 100).table(), 100);
        assert!(bgp_table(Mode::Bgp, 4243).check(&ifs).is_ok());
        for (t, name) in [(0, "unspec"), (253, "default"), (254, "main"), (255, "local")] {
            let e = bgp_table(Mode::Bgp, t).check(&ifs).unwrap_err();
            assert!(e.contains(&format!("--announce-table {t}")) && e.contains(name), "{e}");
        }
        for mode in [Mode::L2, Mode::None] {
            assert!(bgp_table(mode, 4242).check(&ifs).unwrap_err().contains("needs --announce bgp"));
        }
        assert!(args(Mode::Bgp, &["eth0"]).check(&ifs).unwrap_err().contains("--announce l2"));
    }

    /// What a [`FakeTable`] holds: its routes, how many reconciles, and
    /// whether the next ones fail.
    #[derive(Default)]
    struct Fake {
        routes: BTreeSet<IpAddr>,
        reconciles: usize,
        failing: bool,
    }

    /// A route table that records what it is brought to.
    #[derive(Clone, Default)]
    struct FakeTable(std::sync::Arc<std::sync::Mutex<Fake>>);

    impl RouteOps for FakeTable {
        fn reconcile(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<bgp::Reconciled, bgp::RouteError> {
            let mut g = self.0.lock().unwrap();
            if g.failing {
                return Err(bgp::RouteError::Timeout(Duration::from_secs(1)));
            }
            let deleted: Vec<_> = g.routes.difference(wanted).copied().map(bgp::host_net).collect();
            let added: Vec<_> = wanted.difference(&g.routes).copied().map(bgp::host_net).collect();
            g.routes.clone_from(wanted);
            g.reconciles += 1;
            Ok(bgp::Reconciled { added, deleted, routes: wanted.len() })
        }

        fn table(&self) -> u32 {
            4242
        }
    }

    /// Two TCP services (on an IPv4 and an IPv6 VIP) applied to an
    /// in-memory writer.
    fn two_vips() -> (DesiredState, MapWriter<crate::state::writer::MemoryMaps>) {
        use crate::state::model::{
            test_support::{backends, service},
            Protocol, ServiceSpec, SourceMode,
        };
        let spec = |vip: &str| ServiceSpec {
            source: SourceMode::Preserve,
            maglev_table_size: Some(251),
            backends: backends(&["10.1.0.2:80"]),
            ..service(&format!("s-{vip}"), vip, 80, Protocol::Tcp)
        };
        let state = DesiredState { services: vec![spec("192.0.2.10"), spec("2001:db8::10")] };
        let mut w = MapWriter::in_memory(1 << 16, 0);
        w.apply(&state).unwrap();
        (state, w)
    }

    #[tokio::test]
    async fn bgp_routes_follow_the_map_and_are_withdrawn_for_good() {
        let (state, mut w) = two_vips();
        let fake = FakeTable::default();
        // 192.0.2.99 is no VIP: never routed.
        let asked: BTreeSet<IpAddr> =
            ["192.0.2.10", "2001:db8::10", "192.0.2.99"].iter().map(|s| s.parse().unwrap()).collect();
        let (tx, rx) = watch::channel(asked);
        let mut a = Announcer::with_routes(rx, Box::new(fake.clone()));
        a.sync(&mut w);
        assert_eq!(fake.0.lock().unwrap().routes, file_vips(&state));
        assert_eq!(w.memory().announce.len(), 2, "XLB_ANNOUNCE shows them (xlb status)");
        // Unchanged: the table is not touched again.
        a.sync(&mut w);
        assert_eq!(fake.0.lock().unwrap().reconciles, 1);
        // A failure is retried on the next sync.
        fake.0.lock().unwrap().failing = true;
        tx.send_replace(["192.0.2.10".parse().unwrap()].into_iter().collect());
        a.sync(&mut w);
        fake.0.lock().unwrap().failing = false;
        a.sync(&mut w);
        assert_eq!(fake.0.lock().unwrap().routes, ["192.0.2.10".parse().unwrap()].into_iter().collect());
        assert!(a.withdraw_routes(), "a route was withdrawn");
        assert!(fake.0.lock().unwrap().routes.is_empty());
        // Withdrawn for good: a later change adds nothing.
        tx.send_replace(file_vips(&state));
        a.sync(&mut w);
        assert!(fake.0.lock().unwrap().routes.is_empty());
        assert!(!a.withdraw_routes(), "nothing left to withdraw");
    }

    #[tokio::test]
    async fn the_announcer_follows_its_channel_and_empties_the_map_on_stop() {
        let (state, mut w) = two_vips();
        let (tx, rx) = watch::channel(file_vips(&state));
        let mut a = Announcer::start(&args(Mode::L2, &[]), &[], &mut w, rx).unwrap();
        a.sync(&mut w);
        assert_eq!(w.memory().announce.len(), 2);
        let mut seen = a.effective.subscribe();
        assert_eq!(seen.borrow_and_update().len(), 2);
        tx.send_replace(["192.0.2.10".parse().unwrap()].into_iter().collect());
        tokio::time::timeout(std::time::Duration::from_secs(5), a.changed()).await.expect("a change");
        a.sync(&mut w);
        assert_eq!(w.memory().announce.len(), 1);
        assert!(seen.has_changed().unwrap());
        a.stop(&mut w, false);
        assert!(w.memory().announce.is_empty());
    }

    #[test]
    fn announce_none_announces_nothing() {
        let mut w = MapWriter::in_memory(1 << 16, 0);
        // An announce interface a previous agent left: removed.
        w.set_l2_interface(7, [2, 0, 0, 0, 0, 7]).unwrap();
        let (_tx, rx) = watch::channel(["192.0.2.10".parse().unwrap()].into_iter().collect());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let _guard = rt.enter();
        let mut a = Announcer::start(&AnnounceArgs::default(), &[], &mut w, rx).unwrap();
        a.sync(&mut w);
        assert!(w.memory().announce.is_empty());
        assert!(w.memory().l2_ifaces.is_empty(), "stale announce interface kept");
        assert!(a.sender.is_none());
        assert!(a.routes.is_none());
    }
}
