//! `cargo xtask bench datapath` runs this (release build, as root): the
//! per-packet cost of the XDP program `xlb_xdp` for each packet class,
//! measured with `BPF_PROG_TEST_RUN`, next to the minimal forwarder
//! (`min_fwd` of the bench object) on the same machine.
//!
//! Method. With `repeat > 1` (not live) the kernel runs the program again
//! and again on the same buffer, so a plain large repeat would time the
//! packet the previous iteration already rewrote (which no longer matches
//! the VIP). Each iteration therefore runs the bench object's `harness`
//! program: it copies the class's template frame over the packet (new-flow
//! classes also get a new source port and address, checksums adjusted) and
//! tail-calls the program under test through a prog array. The same
//! harness tail-calling `harness_nop` (returns at once) is timed in the same
//! run, interleaved round by round, and subtracted: *raw* is harness +
//! program, *net* is raw − baseline. Every timed iteration is checked: the
//! verdict of the last one, and the global counters of the data path, which
//! must have moved by exactly `repeat` on the class's own path and nowhere
//! else.
//!
//! Setup: a network namespace with a veth pair v0/v1 (addresses, static
//! neighbours, forwarding on) so that `bpf_fib_lookup` answers; the maps are
//! pinned in a directory of their own and programmed through the agent's
//! `MapWriter`; both interfaces are marked XDP_TX/XDP_REDIRECT capable, so
//! forwarded classes end in XDP_REDIRECT (as the minimal forwarder does).
//! Everything is removed at exit.
//!
//! Usage: `datapath_bench [--repeat N] [--rounds N] [--flow-entries N]
//! [--backends N] [--cpu N] [--json FILE] [--tiny]`.

mod bench;
mod frames;
mod harness;
mod report;

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use xlb_bench::{
    host::{cleanup_stale, ensure_bpffs, enter_netns, pin_thread},
    machine::Machine,
    stop::catch_signals,
};
use xlb_tests::datapath_topology::DatapathNetns;

use crate::bench::{Bench, Row};
use crate::report::summary;

const NETNS_PREFIX: &str = "xlbbench-dp-";
const PIN_PREFIX: &str = "/sys/fs/bpf/xlb-bench-dp-";

#[derive(Parser, Debug, Clone)]
#[command(about = "Per-packet cost of xlb's XDP program (BPF_PROG_TEST_RUN, frame-restoring harness)")]
pub(crate) struct Opts {
    /// Iterations per timed run.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) repeat: u32,
    /// Timed rounds per class (the median is reported), after one warm-up round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Entries of the connection and reverse-NAT tables (the agent's --flow-table-size).
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) flow_entries: u32,
    /// Backends per service (each with its own port, so SNAT has 20000 ports per backend).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=20000))]
    pub(crate) backends: u16,
    /// Pin the measuring thread to this CPU (default: the first allowed).
    #[arg(long)]
    pub(crate) cpu: Option<usize>,
    /// Where the results also go.
    #[command(flatten)]
    pub(crate) out: xlb_bench::results::ResultFiles,
    /// Only the classes whose name contains this (case-insensitive), e.g. "udp established".
    #[arg(long)]
    pub(crate) only: Option<String>,
    /// Tiny configuration for the test suite: repeat 1000, 1 round, 4096 flow entries, 4 backends.
    #[arg(long)]
    pub(crate) tiny: bool,
}

pub(crate) use xlb_tests::datapath_topology::{verdict_name, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT};

// ---------------------------------------------------------------------------
// Topology: `xlb_tests::datapath_topology`, the same as the data-path tests'
// ---------------------------------------------------------------------------

pub(crate) use xlb_tests::datapath_topology::{mac, V0_MAC, V1_MAC};
pub(crate) const CLIENT4: &str = "10.100.0.10";
pub(crate) const CLIENT6: &str = "fd00:100::10";
pub(crate) const BACKEND4: &str = "10.2.0.5";
pub(crate) const BACKEND6: &str = "fd00:2::5";
pub(crate) const VIP4: &str = "192.0.2.10";
pub(crate) const VIP4_PRESERVE: &str = "192.0.2.11";
/// The `flow_tracking: none` service (source: preserve; backends on ports of
/// their own, from `BACKEND_PORT + UNTRACKED_PORT_OFFSET`).
pub(crate) const VIP4_UNTRACKED: &str = "192.0.2.12";
pub(crate) const UNTRACKED_PORT_OFFSET: u16 = 1000;
/// A tracked preserve service whose backends (ports from `BACKEND_PORT +
/// OWN_PORT_OFFSET`) serve no other service: a new flow records one entry
/// (`SVC_F_REPLY_NOTE`). `VIP4_PRESERVE` shares the SNAT service's
/// backends, so its new flows record two.
pub(crate) const VIP4_PRESERVE_OWN: &str = "192.0.2.13";
pub(crate) const OWN_PORT_OFFSET: u16 = 2000;
pub(crate) const VIP6: &str = "2001:db8::10";
pub(crate) const BACKEND_PORT: u16 = 10000;

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("datapath_bench: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<bool> {
    let mut opts = Opts::parse();
    if opts.tiny {
        opts.repeat = 1000;
        opts.rounds = 1;
        opts.flow_entries = 4096;
        opts.backends = 4;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (BPF_PROG_TEST_RUN, network namespaces, bpffs): run it as root");
    }
    ensure_bpffs()?;
    cleanup_stale(NETNS_PREFIX, PIN_PREFIX);
    catch_signals();
    let pid = std::process::id();
    let topology = DatapathNetns::create(format!("{NETNS_PREFIX}{pid}"), format!("{PIN_PREFIX}{pid}"))?;

    let machine = Machine::read().line_with_memory();
    println!("Per-packet cost of xlb_xdp (BPF_PROG_TEST_RUN through the frame-restoring harness)");
    println!("machine: {machine}");
    println!(
        "repeat {} per run, {} rounds (+1 warm-up), median; flow tables {} entries; {} backends per service; snat unless noted",
        opts.repeat, opts.rounds, opts.flow_entries, opts.backends
    );
    let (ns, pin, o) = (topology.netns().to_string(), topology.pin().to_path_buf(), opts.clone());
    let started = Instant::now();
    let handle = std::thread::Builder::new().name("measure".into()).spawn(move || -> Result<(Vec<Row>, usize)> {
        enter_netns(&ns)?;
        let cpu = pin_thread(o.cpu)?;
        println!("measuring on CPU {cpu}");
        let mut b = Bench::new(o, &pin)?;
        b.all()?;
        Ok((std::mem::take(&mut b.rows), cpu))
    })?;
    let result = handle.join().map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?;
    drop(topology);
    let (rows, cpu) = result?;
    println!("\ndone in {:.1} s\n", started.elapsed().as_secs_f64());
    let table = summary(&rows);
    println!("{table}");
    opts.out.write_markdown(|| {
        let head = format!(
            "Machine: {machine}; measured on CPU {cpu}.\n\nrepeat {} per run, {} rounds (+1 warm-up), median; flow tables {} entries; {} backends per service.\n\n",
            opts.repeat, opts.rounds, opts.flow_entries, opts.backends
        );
        head + &table
    })?;
    opts.out.write_json(&serde_json::json!({
        "machine": machine,
        "cpu": cpu,
        "repeat": opts.repeat,
        "rounds": opts.rounds,
        "flow_entries": opts.flow_entries,
        "backends": opts.backends,
        "rows": rows,
    }))?;
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        eprintln!("datapath_bench: {}: {}", r.class, r.problem.as_deref().unwrap_or(""));
    }
    Ok(failed.is_empty())
}
