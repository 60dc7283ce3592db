//! `cargo xtask bench control`: the control plane at scale, from a generated
//! desired state of 10,000 services × 10 backends: time to apply it to empty
//! maps, time for one endpoint change to reach the maps, kernel memory of
//! the maps, process RSS (see docs/BENCHMARKS.md, "Control plane").
//!
//! The measuring is done by `bench/src/bin/control_bench/` (package `xlb-bench-runner`) (the
//! agent's own map writer), run here in release mode, which then also runs
//! the `xlb` agent built here on the same services (start time, RSS, file
//! change to reloaded maps); results go to `target/bench/control.{json,md}`.

use anyhow::{bail, Result};

use crate::util;

/// Flags of `cargo xtask bench control`.
#[derive(clap::Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlArgs {
    /// Tiny configuration (the smoke test's): 100 services × 10 backends, 5 changes.
    #[arg(long)]
    pub quick: bool,
    /// Services (default 10000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub services: Option<u32>,
    /// Backends per service (default 10).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub backends: Option<u32>,
    /// Endpoint changes to time (default 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub changes: Option<u32>,
}

/// Runs the control-plane benchmark.
pub fn run(args: ControlArgs) -> Result<()> {
    if !util::is_root() {
        bail!(
            "the control-plane bench needs root (BPF maps, network namespaces, bpffs): run it as root, e.g. `sudo -E cargo xtask bench control`"
        );
    }
    let bin = util::build_release()?;
    let out = util::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let json = out.join("control.json");
    let md = out.join("control.md");
    util::header("bench control (cargo run --release -p xlb-bench-runner --bin control_bench)");
    let mut cmd = util::cargo();
    cmd.args(["run", "--quiet", "--release", "-p", "xlb-bench-runner", "--bin", "control_bench", "--"])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .arg("--xlb")
        .arg(&bin);
    if args.quick {
        cmd.arg("--tiny");
    }
    if let Some(n) = args.services {
        cmd.arg("--services").arg(n.to_string());
    }
    if let Some(n) = args.backends {
        cmd.arg("--backends").arg(n.to_string());
    }
    if let Some(n) = args.changes {
        cmd.arg("--changes").arg(n.to_string());
    }
    // Ctrl-C reaches the bench too, which stops, removes its namespace and
    // pins, and exits; we wait for it instead of dying first.
    // SAFETY: SIG_IGN for SIGINT in this process only, restored below.
    let old = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let result = util::run(&mut cmd);
    // SAFETY: restoring the previous disposition.
    unsafe { libc::signal(libc::SIGINT, old) };
    result?;
    util::info(&format!("results: {} and {} (the table for docs/BENCHMARKS.md)", json.display(), md.display()));
    Ok(())
}
