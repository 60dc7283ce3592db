//! Producers send desired states; the agent owns the only writer.
//!
//! The configuration file follower and the Kubernetes side each produce
//! [`Update`]s and send them on a channel ([`channel`]); the agent's
//! [`apply_loop`] receives them and is the one place that brings the maps to
//! them ([`MapWriter::apply`]) and retries backends that waited for a route
//! ([`MapWriter::retry_unroutable`]), in file and in Kubernetes mode alike.
use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use crate::{
    agent::{apply_summary, record_apply},
    announce::Announcer,
    metrics::Health,
    state::model::DesiredState,
    state::writer::{ApplyReport, MapWriter, WriteError},
};

/// Where a desired state came from; decides what the log and the apply
/// record (`/healthz`, `xlb status`) say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The file, at start (a failure stops the agent).
    Start,
    /// The file again, for this reason ("SIGHUP", "file change").
    Reload(&'static str),
    /// The Kubernetes translation.
    Kubernetes,
}

/// A desired state for the agent to apply.
#[derive(Debug)]
pub struct Update {
    /// The services to program.
    pub state: DesiredState,
    /// The Maglev seed to apply it with (`None`: keep the writer's).
    pub seed: Option<u32>,
    /// Who produced it (for logs and the recorded apply).
    pub origin: Origin,
    /// Told once the state is applied (or its apply failed), so that a
    /// producer says "programmed" only after the maps are.
    pub applied: Option<oneshot::Sender<()>>,
}

impl Update {
    /// An update to send that tells when it has been applied.
    pub fn acknowledged(state: DesiredState, seed: Option<u32>, origin: Origin) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self { state, seed, origin, applied: Some(tx) }, rx)
    }
}

/// The channel producers send [`Update`]s on.
pub fn channel() -> (mpsc::Sender<Update>, mpsc::Receiver<Update>) {
    mpsc::channel(4)
}

/// Applies one update and records the outcome (log, `/healthz`, `xlb
/// status`), worded by its [`Origin`].
pub fn apply(writer: &mut MapWriter, health: &Health, update: &Update) -> Result<ApplyReport, WriteError> {
    if let Some(seed) = update.seed {
        writer.set_seed(seed);
    }
    let applied = writer.apply(&update.state);
    match (update.origin, &applied) {
        (Origin::Start, Ok(report)) => {
            info!(?report, "configuration applied");
            record_apply(health, Ok(format!("start: {}", apply_summary(report))));
        }
        (Origin::Start, Err(_)) => {}
        (Origin::Reload(why), Ok(report)) => {
            info!(?report, trigger = why, "configuration reloaded");
            record_apply(health, Ok(format!("{why}: {}", apply_summary(report))));
        }
        (Origin::Reload(why), Err(e)) => {
            error!(error = %e, "reload could not be applied fully; fix the file and reload");
            record_apply(health, Err(format!("{why}: not applied fully: {e}")));
        }
        (Origin::Kubernetes, Ok(r)) => {
            record_apply(health, Ok(format!("Kubernetes state: {}", apply_summary(r))));
        }
        (Origin::Kubernetes, Err(e)) => {
            record_apply(health, Err(format!("Kubernetes state: {e}")));
            error!(error = %e, "some services could not be programmed");
        }
    }
    applied
}

/// The agent's loop: applies what producers send and retries unroutable
/// backends when the routing changes, until `done` resolves or every
/// producer has gone. In Kubernetes mode the agent becomes ready once the
/// first state (made from complete first lists) is applied. The VIPs to
/// announce (`announce`) are written when they change and after every apply.
pub async fn apply_loop(
    writer: &mut MapWriter,
    health: &Health,
    mut updates: mpsc::Receiver<Update>,
    announce: &mut Announcer,
    paths: &mut crate::agent::xdp_paths::Receiver,
    done: impl Future<Output = ()>,
) {
    let mut done = std::pin::pin!(done);
    announce.sync(writer);
    let mut routes = writer.route_changes();
    let mut first_kubernetes = true;
    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some(mut update) = update else { return };
                let applied = apply(writer, health, &update);
                if update.origin == Origin::Kubernetes {
                    match applied {
                        Ok(r) if first_kubernetes || r.added + r.updated + r.removed > 0 => {
                            info!(report = ?r, services = update.state.services.len(), "Kubernetes state applied");
                        }
                        _ => {}
                    }
                    if first_kubernetes {
                        health.set_ready(true);
                        info!(services = writer.len(), "xlb agent running (Kubernetes mode)");
                        first_kubernetes = false;
                    }
                }
                announce.sync(writer);
                if let Some(tx) = update.applied.take() {
                    let _ = tx.send(());
                }
            }
            () = announce.changed() => announce.sync(writer),
            change = paths.next() => paths.apply(writer, &change),
            () = routes.next(), if writer.has_unroutable() => crate::agent::retry_unroutable(writer),
            () = &mut done => return,
        }
    }
}
