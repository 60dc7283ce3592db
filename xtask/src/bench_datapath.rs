//! `cargo xtask bench datapath`: the per-packet cost of the XDP program for
//! each packet class, against the minimal forwarder (see docs/BENCHMARKS.md,
//! "Per packet").
//!
//! The xtask does not depend on aya, so the measuring is done by
//! `bench/src/bin/datapath_bench/` (package `xlb-bench-runner`), run here in release mode; it
//! prints each class as it is measured and a summary table at the end, and
//! this module has it write the results to `target/bench/datapath.{json,md}`.

use anyhow::{bail, Result};

use crate::util;

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
    if !util::is_root() {
        bail!(
            "the per-packet bench needs root (BPF_PROG_TEST_RUN, network namespaces, bpffs): run it as root, e.g. `sudo -E cargo xtask bench datapath`"
        );
    }
    let out = util::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let json = out.join("datapath.json");
    let md = out.join("datapath.md");
    util::header("bench datapath (cargo run --release -p xlb-bench-runner --bin datapath_bench)");
    let mut cmd = util::cargo();
    cmd.args(["run", "--quiet", "--release", "-p", "xlb-bench-runner", "--bin", "datapath_bench", "--"])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md);
    if args.quick {
        cmd.arg("--tiny");
    }
    if let Some(r) = args.repeat {
        cmd.arg("--repeat").arg(r.to_string());
    }
    if let Some(r) = args.rounds {
        cmd.arg("--rounds").arg(r.to_string());
    }
    if let Some(c) = args.cpu {
        cmd.arg("--cpu").arg(c.to_string());
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
