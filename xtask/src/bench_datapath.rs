//! `cargo xtask bench datapath`: the per-packet cost of the XDP program for
//! each packet class, against the minimal forwarder (see docs/BENCHMARKS.md,
//! "Per packet").
//!
//! The xtask does not depend on aya, so the measuring is done by
//! `bench/src/bin/datapath_bench/` (package `xlb-bench-runner`), run here in release mode; it
//! prints each class as it is measured and a summary table at the end, and
//! this module has it write the results to `target/bench/datapath.{json,md}`.

use anyhow::Result;

use crate::bench::{self, Runner};

/// Flags of `cargo xtask bench datapath`.
#[derive(clap::Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathArgs {
    /// Tiny configuration (the smoke test's): 1000 iterations, one round, small tables.
    #[arg(long)]
    pub quick: bool,
    /// Iterations per timed run (default 1000000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: Option<u32>,
    /// Timed rounds per class, after a warm-up round; the median is reported (default 5).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: Option<u32>,
    /// Pin the measuring thread to this CPU (default: the first allowed).
    #[arg(long)]
    pub cpu: Option<u32>,
}

/// Runs the per-packet benchmark.
pub fn run(args: DatapathArgs) -> Result<()> {
    bench::require_root("datapath", "the per-packet bench", "BPF_PROG_TEST_RUN, network namespaces, bpffs")?;
    let mut runner = Runner::new("datapath")?;
    runner.flag("--tiny", args.quick).opt("--repeat", args.repeat).opt("--rounds", args.rounds).opt("--cpu", args.cpu);
    runner.run()
}
