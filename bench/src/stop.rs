//! The stop flag: SIGINT and SIGTERM set it; the benches check it between
//! phases and slices, then clean up and exit.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT and SIGTERM handlers that set the flag.
pub fn catch_signals() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// An `interrupted` error once SIGINT or SIGTERM arrived.
pub fn check_stop() -> anyhow::Result<()> {
    if stopped() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}
