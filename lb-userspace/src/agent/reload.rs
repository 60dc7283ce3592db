//! File mode: the configuration file followed (SIGHUP, or a change seen by
//! `notify`) and sent again as a desired state; an invalid file is reported
//! and the running configuration kept.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    signal::unix::Signal,
    sync::{mpsc, watch},
};
use tracing::{error, warn};

use super::record_apply;
use crate::{metrics::Health, source::config, state::desired};

/// Sends the file again on SIGHUP or when it changes (the agent's loop
/// applies it), until the agent's loop stops; an invalid file is reported
/// and the running configuration kept.
pub(super) async fn follow_file(
    watch: FileWatch,
    seed_flag: Option<u32>,
    health: Arc<Health>,
    mut hup: Signal,
    updates: mpsc::Sender<desired::Update>,
    announce: watch::Sender<std::collections::BTreeSet<std::net::IpAddr>>,
    announce_args: crate::announce::AnnounceArgs,
) {
    let FileWatch { path, _watcher, mut rx, mut stamp } = watch;
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            Some(()) = rx.recv() => {
                // let the writer finish; coalesce bursts of events
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
                "file change"
            }
            _ = poll.tick() => {
                if Stamp::of(&path) == stamp {
                    continue;
                }
                "file change (seen by polling)"
            }
            () = updates.closed() => return,
        };
        stamp = Stamp::of(&path);
        if let Some(update) = reload(&path, seed_flag, why, &health) {
            announce.send_replace(announce_args.file_wanted(&update.state));
            if updates.send(update).await.is_err() {
                return;
            }
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

/// How often the file's [`Stamp`] is compared as well: a change the watch
/// did not report (an event queue overflow, a symlinked file replaced
/// behind its link as a ConfigMap volume does) is still applied.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// What tells a file's versions apart without reading it: the inode it
/// resolves to (through symlinks), its size, modification and change times
/// (the change time also moves when a copy keeps the modification time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// `None` when the file cannot be read (reported at the reload).
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

/// The watch on the configuration file's directory: a change of the file
/// (written in place, or another file renamed over it) queues a reload.
/// Started before the agent first reads the file, so a change made while
/// the agent starts is followed too.
pub(super) struct FileWatch {
    /// The file as it was when the watch started.
    stamp: Option<Stamp>,
    /// The configuration file.
    path: PathBuf,
    /// Kept alive for as long as the file is followed; `None` when the
    /// directory could not be watched (SIGHUP still reloads).
    _watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::Receiver<()>,
}

impl FileWatch {
    /// Watches `path`'s directory; a failure is logged and leaves SIGHUP.
    pub(super) fn start(path: &Path) -> Self {
        let (tx, rx) = mpsc::channel::<()>(4);
        let watcher =
            watch_file(path, tx).map_err(|e| warn!(error = %e, "not watching the file; reload with SIGHUP")).ok();
        Self { path: path.to_path_buf(), _watcher: watcher, rx, stamp: Stamp::of(path) }
    }
}

fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let file = path.file_name().map(std::borrow::ToOwned::to_owned);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let ours = ev.paths.iter().any(|p| p.file_name() == file.as_deref());
            // Events lost (queue overflow): the file may have changed.
            if ev.need_rescan() || ours && (ev.kind.is_modify() || ev.kind.is_create()) {
                let _ = tx.try_send(());
            }
        }
    })?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok(w)
}
