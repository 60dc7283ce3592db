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
use std::{collections::BTreeSet, net::IpAddr};

use clap::{Args, ValueEnum};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info};

use crate::state::{
    model::DesiredState,
    writer::{MapOps, MapWriter},
};

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
    /// Keep a route per VIP for a BGP daemon (not implemented yet).
    Bgp,
}

/// The agent's announcement flags.
#[derive(Args, Debug, Clone, Default)]
pub struct AnnounceArgs {
    /// Make the VIPs reachable: `l2` answers ARP and IPv6 neighbour
    /// solicitations for them on the announce interfaces (see
    /// --announce-interface); `bgp` is not implemented yet; `none`: the
    /// network routes them to the nodes.
    #[arg(long, value_enum, default_value_t)]
    pub announce: Mode,
    /// Interface where L2 answers and gratuitous ARP/NA are given
    /// (repeatable; each must be an --interface; default: every --interface).
    #[arg(long = "announce-interface", value_name = "IF")]
    pub announce_interfaces: Vec<String>,
}

impl AnnounceArgs {
    /// Checks the flags against the agent's `--interface`s; the error is a
    /// usage error, worded for the user.
    pub fn check(&self, interfaces: &[String]) -> Result<(), String> {
        match self.announce {
            Mode::Bgp => {
                return Err("--announce bgp is not implemented yet; use --announce l2 or --announce none".into());
            }
            Mode::None if !self.announce_interfaces.is_empty() => {
                return Err("--announce-interface needs --announce l2".into());
            }
            _ => {}
        }
        if let Some(i) = self.announce_interfaces.iter().find(|i| !interfaces.contains(i)) {
            return Err(format!(
                "--announce-interface {i}: not an --interface (XDP answers only where it is attached); add --interface {i}"
            ));
        }
        Ok(())
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

/// The consumer of the VIPs to announce: owns the gratuitous sender.
pub struct Announcer {
    /// The VIPs this node must announce (`None`: `--announce none`, or the
    /// producer has gone and the last set stays).
    wanted: Option<watch::Receiver<BTreeSet<IpAddr>>>,
    /// Without `--announce l2` nothing is announced, whatever is asked.
    enabled: bool,
    /// What `XLB_ANNOUNCE` holds, for the gratuitous sender.
    effective: watch::Sender<BTreeSet<IpAddr>>,
    sender: Option<JoinHandle<()>>,
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
        let enabled = args.announce == Mode::L2;
        let mut l2 = Vec::new();
        for name in args.interfaces(interfaces) {
            let i = iface::L2Interface::resolve(&name).with_context(|| format!("announce interface {name}"))?;
            writer.set_l2_interface(i.ifindex, i.mac).context("writing the announce interfaces (XLB_L2_IFACES)")?;
            info!(iface = %i.name, ifindex = i.ifindex, mac = %iface::mac_str(&i.mac), "announce interface ready");
            l2.push(i);
        }
        let sender = enabled.then(|| tokio::spawn(garp::run(effective_rx, l2)));
        Ok(Self { wanted: Some(wanted), enabled, effective, sender })
    }

    /// Resolves when the VIPs to announce have changed (never once the
    /// producer has gone).
    pub async fn changed(&mut self) {
        let Some(rx) = &mut self.wanted else { return std::future::pending().await };
        if rx.changed().await.is_err() {
            self.wanted = None;
            std::future::pending::<()>().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mode: Mode, ifs: &[&str]) -> AnnounceArgs {
        AnnounceArgs { announce: mode, announce_interfaces: ifs.iter().map(ToString::to_string).collect() }
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
        assert!(args(Mode::Bgp, &[]).check(&ifs).unwrap_err().contains("not implemented"));
        assert!(args(Mode::None, &["eth0"]).check(&ifs).unwrap_err().contains("--announce l2"));
    }

    #[tokio::test]
    async fn the_announcer_follows_its_channel_and_empties_the_map_on_stop() {
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
        let (_tx, rx) = watch::channel(["192.0.2.10".parse().unwrap()].into_iter().collect());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _guard = rt.enter();
        let mut a = Announcer::start(&AnnounceArgs::default(), &[], &mut w, rx).unwrap();
        a.sync(&mut w);
        assert!(w.memory().announce.is_empty());
        assert!(a.sender.is_none());
    }
}
