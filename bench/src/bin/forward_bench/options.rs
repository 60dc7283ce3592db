//! Command-line flags and the measuring plan derived from them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "forward_bench",
    about = "Forwarding benchmark of xlb (run by `cargo xtask bench forward`; needs root)"
)]
#[expect(clippy::struct_field_names, reason = "the fields are the command-line flags")]
pub(crate) struct Args {
    /// Tiny configuration for the smoke test: 1 run of 1 round, short slices.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Runs (the median is reported). Default 3 (1 with --quick).
    #[arg(long)]
    pub(crate) runs: Option<u32>,
    /// Interleaved rounds per run (every forwarder gets one slice per round). Default 3 (1 with --quick).
    #[arg(long)]
    pub(crate) rounds: Option<u32>,
    /// Measured length of one slice. Default 1000 ms (700 with --quick).
    #[arg(long)]
    pub(crate) slice_ms: Option<u64>,
    /// Unmeasured warm-up before each slice. Default 300 ms (150 with --quick).
    #[arg(long)]
    pub(crate) warmup_ms: Option<u64>,
    /// Live-frame batch size of BPF_PROG_RUN (1..=256).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) batch: u32,
    /// Distinct UDP source ports (flows) of the generator: a power of two up
    /// to 32768. xlb's SNAT pool has 20000 ports per backend and node
    /// address (32 probes per new flow): the default keeps it under half
    /// full; 32768 flows over two backends fill it to 82 %.
    #[arg(long, default_value_t = 16384)]
    pub(crate) ports: u32,
    /// Frames of the first BPF_PROG_RUN call of a slice (later calls are
    /// sized to ~0.25 s at the rate measured).
    #[arg(long, default_value_t = 1 << 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) frames_per_call: u32,
    /// Generator program: `full` (rewrites the whole header of every frame;
    /// `gen_full`) or `bench-gen` (`gen` of the bench object: source port
    /// only, so frames recycled after a forwarder rewrote them are resent
    /// rewritten: wrong results for every forwarder that rewrites in place).
    #[arg(long, default_value = "full", value_parser = ["full", "bench-gen"])]
    pub(crate) generator: String,
    /// The xlb binary (default: $XLB_BIN, else `xlb` next to this program).
    #[arg(long)]
    pub(crate) xlb: Option<PathBuf>,
    /// Where the results also go.
    #[command(flatten)]
    pub(crate) out: xlb_bench::results::ResultFiles,
    /// Skip the nftables rows.
    #[arg(long)]
    pub(crate) no_nft: bool,
    /// Skip the nginx row.
    #[arg(long)]
    pub(crate) no_nginx: bool,
    /// Skip the TCP part.
    #[arg(long)]
    pub(crate) no_tcp: bool,
    /// Skip the UDP flood part.
    #[arg(long)]
    pub(crate) no_udp: bool,
    /// Extra argument for `xlb agent` (repeatable, e.g. `--agent-arg=--flow-table-size=65536`).
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) agent_args: Vec<String>,
    /// Also measure each XDP program's own cost per packet (kernel BPF
    /// run-time statistics; adds a little overhead to every program run).
    #[arg(long)]
    pub(crate) bpf_stats: bool,
    /// Wait up to SECS for the machine to be quiet (under 15% busy) before
    /// starting; other work on the CPUs skews the numbers.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub(crate) wait_quiet: u64,
    /// Total time the bench may spend measuring again slices during
    /// which other processes used more than 10% of the CPUs.
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub(crate) retry_budget_s: u64,
    /// Measure only these UDP cases (comma-separated keys: generator,
    /// min_fwd, xlb_snat, xlb_preserve, nft_dnat, nginx_udp_proxy; churn:
    /// min_fwd_new_flows, xlb_preserve_new_flows, nft_dnat_new_flows,
    /// xlb_preserve_flows_of_10, nft_dnat_flows_of_10, xlb_untracked_new_flows).
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
}

pub(crate) struct Plan {
    pub(crate) runs: u32,
    pub(crate) rounds: u32,
    pub(crate) slice: Duration,
    pub(crate) warmup: Duration,
    pub(crate) batch: u32,
    pub(crate) frames_per_call: u32,
    pub(crate) bench_gen: bool,
    pub(crate) ports: u32,
}
