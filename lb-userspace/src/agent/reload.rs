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
    let FileWatch { path, _watcher, mut rx } = watch;
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

/// The watch on the configuration file's directory: a change of the file
/// (written in place, or another file renamed over it) queues a reload.
/// Started before the agent first reads the file, so a change made while
/// the agent starts is followed too.
pub(super) struct FileWatch {
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
        Self { path: path.to_path_buf(), _watcher: watcher, rx }
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
