//! `cargo xtask bench [NAME]`: the benchmarks. Without a name, runs every
//! one that is implemented.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _, Result};

use crate::{bench_charts, setup, util};

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
    /// Only the charts (docs/bench/*.svg) and the summary table of
    /// docs/BENCHMARKS.md, from the committed results docs/bench/*.json (no
    /// root, no build, no measuring). A full run of a bench does this too,
    /// after copying its results there.
    Charts,
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Maglev { .. } => "maglev",
            Bench::Datapath(_) => "datapath",
            Bench::Control(_) => "control",
            Bench::Forward(_) => "forward",
            Bench::Charts => "charts",
        }
    }

    fn implemented(self) -> bool {
        matches!(
            self,
            Bench::Maglev { .. } | Bench::Forward(_) | Bench::Datapath(_) | Bench::Control(_) | Bench::Charts
        )
    }

    /// The run measures the default configuration (what docs/BENCHMARKS.md
    /// shows): its results replace the committed ones in docs/bench/.
    fn publishes(self) -> bool {
        match self {
            Bench::Maglev { .. } | Bench::Charts => false,
            Bench::Datapath(a) => !a.quick && a.repeat.is_none() && a.rounds.is_none(),
            Bench::Control(a) => a == crate::bench_control::ControlArgs::default(),
            Bench::Forward(a) => {
                !a.quick && a.runs.is_none() && a.rounds.is_none() && a.slice_ms.is_none() && !a.no_tcp
            }
        }
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
        Some(Bench::Charts) => {
            bench_charts::charts()?;
            return Ok(ExitCode::SUCCESS);
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
            Bench::Charts => {}
        }
        charts_after(b)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// After a bench: a run of the default configuration replaces the committed
/// results (`docs/bench/NAME.json`) and redraws the committed charts and the
/// page's summary; any other run (`--quick`, other sizes) draws its charts
/// beside its results in `target/bench/`, leaving docs/ alone.
fn charts_after(b: Bench) -> Result<()> {
    let name = b.name();
    if !bench_charts::WITH_CHARTS.contains(&name) {
        return Ok(());
    }
    let results = util::target_dir().join("bench");
    if b.publishes() {
        let docs = bench_charts::docs_dir();
        std::fs::create_dir_all(&docs)?;
        let (from, to) = (results.join(format!("{name}.json")), docs.join(format!("{name}.json")));
        std::fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        util::info(&format!(
            "{} updated from this run; commit it with the charts and docs/BENCHMARKS.md",
            to.display()
        ));
        bench_charts::charts()
    } else {
        let data = bench_charts::Data::load(&results)?;
        for path in bench_charts::render(&data, &results)? {
            util::info(&format!("chart: {} (not a default run: docs/bench/ left alone)", path.display()));
        }
        Ok(())
    }
}

/// Runs `bench/src/bin/maglev_bench.rs` in release mode: it calls the table
/// builder of the library (`xlb::state::maglev::measure`), the same code the
/// agent runs.
fn maglev(runs: u32) -> Result<()> {
    util::header("bench maglev (cargo run --release -p xlb-bench-runner --bin maglev_bench)");
    util::run(runner_binary("maglev_bench").arg(runs.to_string()))
}

/// Fails unless root: `what` (e.g. "the forwarding bench") needs `why`.
pub fn require_root(name: &str, what: &str, why: &str) -> Result<()> {
    if !util::is_root() {
        bail!("{what} needs root ({why}): run it as root, e.g. `sudo -E cargo xtask bench {name}`");
    }
    Ok(())
}

/// `cargo run --quiet --release -p xlb-bench-runner --bin BIN --`: the
/// measuring binaries live in the `bench/` package, which the xtask does not
/// depend on (it does not link aya).
fn runner_binary(bin: &str) -> Command {
    let mut cmd = util::cargo();
    cmd.args(["run", "--quiet", "--release", "-p", "xlb-bench-runner", "--bin", bin, "--"]);
    cmd
}

/// One measuring binary of `xlb-bench-runner` (`<name>_bench`), run in
/// release mode, writing its results to `target/bench/<name>.{json,md}`.
pub struct Runner {
    cmd: Command,
    json: PathBuf,
    md: PathBuf,
}

impl Runner {
    /// Creates `target/bench/`, prints the phase header and prepares the
    /// command with `--json` and `--markdown`.
    pub fn new(name: &str) -> Result<Self> {
        let out = util::target_dir().join("bench");
        std::fs::create_dir_all(&out)?;
        let json = out.join(format!("{name}.json"));
        let md = out.join(format!("{name}.md"));
        let bin = format!("{name}_bench");
        util::header(&format!("bench {name} (cargo run --release -p xlb-bench-runner --bin {bin})"));
        let mut cmd = runner_binary(&bin);
        cmd.arg("--json").arg(&json).arg("--markdown").arg(&md);
        Ok(Self { cmd, json, md })
    }

    /// Adds arguments as they are.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Adds `flag PATH`.
    pub fn path(&mut self, flag: &str, path: &Path) -> &mut Self {
        self.cmd.arg(flag).arg(path);
        self
    }

    /// Adds `flag` when `on`.
    pub fn flag(&mut self, flag: &str, on: bool) -> &mut Self {
        if on {
            self.cmd.arg(flag);
        }
        self
    }

    /// Adds `flag VALUE` when there is a value.
    pub fn opt(&mut self, flag: &str, value: Option<impl Display>) -> &mut Self {
        if let Some(v) = value {
            self.cmd.arg(flag).arg(v.to_string());
        }
        self
    }

    /// Runs the bench and names the result files. Ctrl-C reaches the bench
    /// too, which stops, removes what it created (namespaces, pins) and
    /// exits; we wait for it instead of dying first.
    pub fn run(mut self) -> Result<()> {
        // SAFETY: SIG_IGN for SIGINT in this process only, restored below.
        let old = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
        let result = util::run(&mut self.cmd);
        // SAFETY: restoring the previous disposition.
        unsafe { libc::signal(libc::SIGINT, old) };
        result?;
        util::info(&format!(
            "results: {} and {} (the table for docs/BENCHMARKS.md)",
            self.json.display(),
            self.md.display()
        ));
        Ok(())
    }
}
