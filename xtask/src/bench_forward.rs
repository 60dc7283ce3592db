//! `cargo xtask bench forward`: forwarding throughput of xlb against a
//! minimal XDP forwarder, nftables DNAT and nginx's UDP proxy, plus TCP
//! setup and request/response rates (see docs/BENCHMARKS.md, "Forwarding").
//!
//! The xtask does not depend on aya, so the measuring is done by
//! `bench/src/bin/forward_bench/` (package `xlb-bench-runner`), run here in release mode. This
//! module builds xlb, installs what the comparison rows need when it is
//! missing (nftables, nginx with its stream module; Debian packages), and
//! writes the results to `target/bench/forward.{json,md}`.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::bench::{self, Runner};
use crate::util;

/// Flags of `cargo xtask bench forward`.
#[derive(clap::Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardArgs {
    /// Tiny configuration (the smoke test's): 1 run of 1 round, short slices.
    #[arg(long)]
    pub quick: bool,
    /// Runs; the median is reported (default 3, 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: Option<u32>,
    /// Interleaved rounds per run (default 3, 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: Option<u32>,
    /// Measured length of one slice in milliseconds (default 1000, 700 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(50..))]
    pub slice_ms: Option<u64>,
    /// Do not install nftables / nginx when missing (their rows are skipped).
    #[arg(long)]
    pub no_install: bool,
    /// Skip the TCP part.
    #[arg(long)]
    pub no_tcp: bool,
    /// Also report each XDP program's own cost per packet (kernel BPF
    /// run-time statistics, which add a little to every program run).
    #[arg(long)]
    pub bpf_stats: bool,
}

/// Runs the forwarding benchmark.
pub fn run(args: ForwardArgs) -> Result<()> {
    bench::require_root("forward", "the forwarding bench", "network namespaces, XDP, BPF_PROG_RUN")?;
    let bin = util::build_release()?;
    if args.no_install {
        util::info("--no-install: rows whose tool is missing (nft, nginx) are skipped");
    } else {
        install_missing();
    }
    let mut runner = Runner::new("forward")?;
    runner.path("--xlb", &bin);
    if args.quick {
        runner.args(["--quick"]);
    } else {
        // Other work on the 2 CPUs skews the numbers: wait (bounded) for quiet.
        runner.args(["--wait-quiet", "120"]);
    }
    runner
        .opt("--runs", args.runs)
        .opt("--rounds", args.rounds)
        .opt("--slice-ms", args.slice_ms)
        .flag("--no-tcp", args.no_tcp)
        .flag("--bpf-stats", args.bpf_stats);
    runner.run()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        || ["/usr/sbin", "/sbin"].iter().any(|d| Path::new(d).join(program).is_file())
}

/// Debian packages the comparison rows need and that are missing.
fn missing_packages() -> Vec<&'static str> {
    let mut need = Vec::new();
    if !on_path("nft") {
        need.push("nftables");
    }
    if on_path("nginx") {
        let v = Command::new("nginx").arg("-V").output().ok();
        let v = v.map(|o| String::from_utf8_lossy(&o.stderr).to_string()).unwrap_or_default();
        let dynamic = v.contains("--with-stream=dynamic");
        if dynamic && !Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").is_file() {
            need.push("libnginx-mod-stream");
        }
    } else {
        need.extend(["nginx", "libnginx-mod-stream"]);
    }
    need
}

/// Installs nftables and nginx (with its stream module) through apt-get when
/// missing. A failure only costs their rows: it is reported, not fatal.
fn install_missing() {
    let need = missing_packages();
    if need.is_empty() {
        util::info("nftables and nginx (stream module): present");
        return;
    }
    if !on_path("apt-get") {
        util::info(&format!(
            "missing {} and no apt-get: install them by hand, or their rows are skipped",
            need.join(", ")
        ));
        return;
    }
    util::header(&format!("installing {} for the comparison rows", need.join(", ")));
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        util::run(&mut c)
    };
    let r = apt(&["update", "-qq"]).and_then(|()| {
        let mut a = vec!["install", "-y", "-qq", "--no-install-recommends"];
        a.extend(&need);
        apt(&a)
    });
    if let Err(e) = r {
        util::info(&format!("installing {} failed ({e:#}); their rows are skipped", need.join(", ")));
    } else if need.contains(&"nginx") {
        util::info("note: on a systemd host the nginx package starts its default site; `systemctl disable --now nginx` if unwanted (the bench runs its own nginx in a namespace)");
    }
}
