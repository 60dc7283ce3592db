//! Keeps each attached interface on the fastest safe transmit path
//! (`host::xdp_path`): decides it at start, then re-decides whenever the
//! kernel announces a change of an interface's XDP features (the `netdev`
//! family's `mgmt` group: e.g. a veth's peer gains or loses its XDP program
//! or GRO), on link events, and every [`RECHECK_EVERY`] as a backstop (new
//! `--interface-glob` interfaces, lost notifications). The same loop keeps
//! the set of pods' veths the tc program may redirect straight into
//! (`host::peer_veth`), re-scanned on link and qdisc events and on every
//! re-check. A change goes to the agent's apply loop, the one writer of the
//! maps ([`Receiver`]), which writes the interfaces' capabilities: only the
//! way packets leave changes, flows in progress keep their backends.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aya::programs::XdpMode;
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::{
    host::{
        follow::Programs,
        iface,
        netwatch::{Interest, Watcher},
        peer_veth,
        xdp_features::{Features, Notifications},
        xdp_path::{decide, Facts, Path},
    },
    state::writer::{MapWriter, WriteError},
};

/// How often every interface is re-checked without a notification.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// A new path for an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Interface name.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// The path it takes from now on.
    pub path: Path,
}

/// The path of each interface as written to the maps (for `xlb status`).
pub type Table = Arc<Mutex<HashMap<String, Path>>>;

/// What the watcher sends the apply loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An attached interface's new path.
    Path(Change),
    /// The veths that get peer redirects from now on (ifindex → name).
    Peers(BTreeMap<u32, String>),
}

/// Decides the path of an attached interface from what the kernel says.
pub struct Decider {
    features: Option<Features>,
    forced: Vec<String>,
}

impl Decider {
    /// `forced`: the `--xdp-transmit` interfaces. (A link taken over from
    /// the previous agent comes with the mode that agent recorded, see
    /// `bpf::attach`; `XdpMode::Default` means no record told it.)
    pub fn new(forced: Vec<String>) -> Self {
        let features = match Features::open() {
            Ok(Some(f)) => Some(f),
            Ok(None) => {
                warn!("this kernel does not report XDP features (netdev netlink family, Linux 6.3+): XDP transmits only into interfaces whose driver is known to take redirected frames, or those of --xdp-transmit");
                None
            }
            Err(e) => {
                warn!(error = %e, "cannot read the kernel's XDP features: deciding by driver");
                None
            }
        };
        Self { features, forced }
    }

    /// Whether an attachment in `mode` is native (`None`: not known).
    fn native(mode: XdpMode) -> Option<bool> {
        match mode {
            XdpMode::Driver => Some(true),
            XdpMode::Skb | XdpMode::Hardware => Some(false),
            XdpMode::Default => None,
        }
    }

    /// The path of interface `name`, attached in `mode`; `None` if it is gone.
    pub fn decide(&self, name: &str, mode: XdpMode) -> Option<Change> {
        let ifindex = iface::ifindex(name).ok()?;
        let ndo_xmit = self.features.as_ref().and_then(|f| match f.ndo_xmit(ifindex) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(iface = %name, error = %e, "reading the interface's XDP features; deciding by driver");
                None
            }
        });
        let driver = iface::driver(name).unwrap_or_default();
        let facts = Facts {
            native: Self::native(mode),
            forced: self.forced.iter().any(|f| f == name),
            ndo_xmit,
            veth: driver == "veth",
            driver_capable: iface::xdp_transmit_capable(name),
        };
        Some(Change { iface: name.to_owned(), ifindex, path: decide(&facts) })
    }

    /// The veths the tc program may redirect into the peer of (ifindex →
    /// name); each refused one is logged at debug level with its reason.
    pub fn peers(&self) -> BTreeMap<u32, String> {
        let scanned = match peer_veth::scan(self.features.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "listing the veths for peer redirects: none get them until the next re-check");
                return BTreeMap::new();
            }
        };
        scanned
            .into_iter()
            .filter_map(|(ifindex, facts)| match peer_veth::decide(&facts) {
                Ok(()) => Some((ifindex, facts.name)),
                Err(why) => {
                    tracing::debug!(iface = %facts.name, reason = %why, "veth: bpf_redirect_neigh");
                    None
                }
            })
            .collect()
    }

    /// The `mgmt` notifications of the kernel's `netdev` family, if any.
    fn notifications(&self) -> Option<Notifications> {
        let family = self.features.as_ref()?.family();
        match Notifications::join(family) {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot listen for XDP feature changes: re-checking every {RECHECK_EVERY:?} only");
                None
            }
        }
    }
}

/// Writes a change through the map writer and records it in `table`.
pub fn apply(writer: &mut MapWriter, table: &Table, change: &Change) -> Result<(), WriteError> {
    let Change { iface, ifindex, path } = change;
    writer.set_interface_caps(*ifindex, path.caps())?;
    let before = table.lock().unwrap_or_else(PoisonError::into_inner).insert(iface.clone(), *path);
    match before {
        None => info!(%iface, ifindex, path = %path, "interface ready"),
        Some(b) if b != *path => info!(%iface, ifindex, from = %b, to = %path, "transmit path changed"),
        Some(_) => {}
    }
    Ok(())
}

/// Writes the veths that get peer redirects, logging those that gain or
/// lose them.
pub fn apply_peers(writer: &mut MapWriter, peers: &BTreeMap<u32, String>) -> Result<(), WriteError> {
    let before = writer.peer_veths().clone();
    let wanted: BTreeSet<u32> = peers.keys().copied().collect();
    let written = writer.set_peer_veths(&wanted);
    let after = writer.peer_veths();
    for (ifindex, name) in peers {
        if after.contains(ifindex) && !before.contains(ifindex) {
            info!(iface = %name, ifindex, "veth: packets to its pod go straight into the pod's namespace (bpf_redirect_peer)");
        }
    }
    for ifindex in before.difference(after) {
        info!(ifindex, "veth: back to bpf_redirect_neigh (changed or gone)");
    }
    written
}

/// The apply loop's end: the changes the watcher sends.
pub struct Receiver {
    rx: mpsc::UnboundedReceiver<Event>,
    table: Table,
}

impl Receiver {
    /// The next change (pending forever once the watcher is gone).
    pub async fn next(&mut self) -> Event {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    /// Writes it (see [`apply`], [`apply_peers`]).
    pub fn apply(&self, writer: &mut MapWriter, event: &Event) {
        match event {
            Event::Path(change) => {
                if let Err(e) = apply(writer, &self.table, change) {
                    warn!(iface = %change.iface, error = %e, "writing the interface's transmit path; the next re-check retries");
                }
            }
            Event::Peers(peers) => {
                if let Err(e) = apply_peers(writer, peers) {
                    warn!(error = %e, "writing the veths for peer redirects; the next re-check retries");
                }
            }
        }
    }
}

/// Starts the watcher of the interfaces in `programs`; `table` holds the
/// paths written at start, `peers` the veths. Returns the apply loop's end.
pub fn spawn(decider: Decider, programs: Arc<Mutex<Programs>>, table: Table, peers: BTreeMap<u32, String>) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    let notify = Arc::new(Notify::new());
    if let Some(notes) = decider.notifications() {
        let notify = notify.clone();
        let spawned = std::thread::Builder::new().name("xlb-xdp-features".into()).spawn(move || loop {
            if let Err(e) = notes.wait() {
                warn!(error = %e, "XDP feature notifications: stopped listening; re-checking every {RECHECK_EVERY:?} only");
                return;
            }
            notify.notify_one();
        });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot listen for XDP feature changes");
        }
    }
    let mut links = Watcher::shared().map(|w| w.subscribe(Interest::LINKS_AND_QDISCS)).ok();
    let written = table.clone();
    let mut sent_peers = peers;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RECHECK_EVERY);
        loop {
            tokio::select! {
                () = notify.notified() => {}
                r = async { links.as_mut()?.changed().await.ok() }, if links.is_some() => {
                    if r.is_none() {
                        links = None;
                    }
                }
                _ = tick.tick() => {}
            }
            let attached = modes(&programs);
            // Compared with what was written: a failed write is sent again.
            let table = {
                let mut t = written.lock().unwrap_or_else(PoisonError::into_inner);
                t.retain(|name, _| attached.iter().any(|(n, _)| n == name));
                t.clone()
            };
            for (name, mode) in &attached {
                let Some(change) = decider.decide(name, *mode) else { continue };
                if table.get(name) != Some(&change.path) && tx.send(Event::Path(change)).is_err() {
                    return;
                }
            }
            // Sent when it changed, and on every tick (the writer writes
            // only what differs from its mirror: a failed write is retried).
            let peers = decider.peers();
            if (peers != sent_peers || !peers.is_empty()) && tx.send(Event::Peers(peers.clone())).is_err() {
                return;
            }
            sent_peers = peers;
        }
    });
    Receiver { rx, table }
}

/// The attached interfaces and their modes.
pub fn modes(programs: &Mutex<Programs>) -> Vec<(String, XdpMode)> {
    programs.lock().unwrap_or_else(PoisonError::into_inner).attached.iter().map(|a| (a.iface.clone(), a.mode)).collect()
}
