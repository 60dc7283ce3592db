//! `cargo xtask bench [NAME]`: the benchmarks. Without a name, runs every
//! one that is implemented.

use std::process::ExitCode;

use anyhow::Result;

use crate::{setup, util};

/// One benchmark.
#[derive(clap::Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bench {
    /// Maglev lookup tables: build time (median, release build), max/avg
    /// share, and the entries that move when one backend is removed or added
    /// ("must move" and "collateral"), for 10/100/1000 backends and table
    /// sizes 16381 and 65537.
    Maglev {
        /// Builds per row (the median is shown).
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
    /// Per-packet cost of the XDP program for each packet class (new flow,
    /// established, reply, non-VIP, malformed), raw and net of a
    /// frame-restoring harness, against the minimal forwarder, plus per-stage
    /// costs (needs root; see docs/BENCHMARKS.md).
    Datapath(crate::bench_datapath::DatapathArgs),
    /// Control plane at 10,000 services × 10 backends: apply to empty maps,
    /// one endpoint change, map memory, RSS (needs root; see docs/BENCHMARKS.md).
    Control(crate::bench_control::ControlArgs),
    /// Forwarding throughput through network namespaces: xlb vs a minimal
    /// XDP forwarder, nftables DNAT and nginx's UDP proxy; TCP setup and
    /// request/response rates (needs root; see docs/BENCHMARKS.md).
    #[command(alias = "forwarding")]
    Forward(crate::bench_forward::ForwardArgs),
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Maglev { .. } => "maglev",
            Bench::Datapath(_) => "datapath",
            Bench::Control(_) => "control",
            Bench::Forward(_) => "forward",
        }
    }

    fn implemented(self) -> bool {
        matches!(self, Bench::Maglev { .. } | Bench::Forward(_) | Bench::Datapath(_) | Bench::Control(_))
    }
}

/// Runs one benchmark, or (`None`) every implemented one.
pub fn bench(which: Option<Bench>) -> Result<ExitCode> {
    let all = [
        Bench::Maglev { runs: 15 },
        Bench::Datapath(crate::bench_datapath::DatapathArgs::default()),
        Bench::Control(crate::bench_control::ControlArgs::default()),
        Bench::Forward(crate::bench_forward::ForwardArgs::default()),
    ];
    let chosen: Vec<Bench> = match which {
        Some(b) if !b.implemented() => {
            eprintln!(
                "xtask: the {} benchmark is not implemented yet; available: {}",
                b.name(),
                all.iter().filter(|b| b.implemented()).map(|b| b.name()).collect::<Vec<_>>().join(", ")
            );
            return Ok(ExitCode::from(2));
        }
        Some(b) => vec![b],
        None => all.into_iter().filter(|b| b.implemented()).collect(),
    };
    setup::setup()?;
    for b in chosen {
        match b {
            Bench::Maglev { runs } => maglev(runs)?,
            Bench::Forward(args) => crate::bench_forward::run(args)?,
            Bench::Datapath(args) => crate::bench_datapath::run(args)?,
            Bench::Control(args) => crate::bench_control::run(args)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `lb-userspace/examples/maglev_bench.rs` in release mode: it calls
/// the table builder of the library (`xlb::state::maglev::measure`), the same code
/// the agent runs.
fn maglev(runs: u32) -> Result<()> {
    util::header("bench maglev (cargo run --release -p lb-userspace --example maglev_bench)");
    util::run(util::cargo().args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "lb-userspace",
        "--example",
        "maglev_bench",
        "--",
        &runs.to_string(),
    ]))
}
