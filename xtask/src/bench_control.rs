//! `cargo xtask bench control`: the control plane at scale, from a generated
//! desired state of 10,000 services × 10 backends: time to apply it to empty
//! maps, time for one endpoint change to reach the maps, kernel memory of
//! the maps, process RSS (see docs/BENCHMARKS.md, "Control plane").
//!
//! The measuring is done by `bench/src/bin/control_bench/` (package `xlb-bench-runner`) (the
//! agent's own map writer), run here in release mode, which then also runs
//! the `xlb` agent built here on the same services (start time, RSS, file
//! change to reloaded maps); results go to `target/bench/control.{json,md}`.

use anyhow::Result;

use crate::bench::{self, Runner};
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
    bench::require_root("control", "the control-plane bench", "BPF maps, network namespaces, bpffs")?;
    let bin = util::build_release()?;
    let mut runner = Runner::new("control")?;
    runner
        .path("--xlb", &bin)
        .flag("--tiny", args.quick)
        .opt("--services", args.services)
        .opt("--backends", args.backends)
        .opt("--changes", args.changes);
    runner.run()
}
