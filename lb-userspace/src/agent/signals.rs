//! The agent's signal handlers: SIGTERM/SIGINT stop it, SIGHUP reloads the
//! file.
use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::watch,
};

/// The agent's signal handlers, installed first thing in [`run`]: a
/// SIGTERM/SIGINT or SIGHUP that arrives while the agent starts is neither
/// fatal (the default action) nor lost; the agent finishes starting, then
/// stops cleanly (detaching, or pinning with `--keep-on-exit`).
pub(super) struct Signals {
    /// Becomes true once SIGTERM or SIGINT has arrived.
    pub(super) stop: watch::Receiver<bool>,
    /// SIGHUP: reload the file.
    pub(super) hup: Signal,
}

pub(super) fn install_signals() -> Result<Signals> {
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
pub(super) async fn terminated(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
