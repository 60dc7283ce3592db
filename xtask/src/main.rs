//! `cargo xtask <command>`: developer tasks for xlb.
//!
//! * `setup`: install what building and testing need (idempotent);
//! * `build`: setup, then `cargo build --release -p lb-userspace`;
//! * `lint`: setup, then `cargo fmt --check` and clippy with `-D warnings`
//!   (workspace, and the eBPF crate on its BPF target);
//! * `test`: setup, unit tests, then the root-only integration tests;
//! * `demo`: build, then a client/node/pods topology with the agent
//!   (`--l2`: the VIP announced on the client's segment);
//! * `bench [maglev|datapath|control|forward|charts]`: the benchmarks (every
//!   one without a name); `charts` only redraws docs/bench/*.svg and the
//!   summary of docs/BENCHMARKS.md from the committed results;
//! * `fuzz [--frames N] [--seed S]`: the data-path fuzzer with a million
//!   frames (the test suite runs it with fewer);
//! * `man`: build, then the man pages into `target/man/`;
//! * `image`: build, then the OCI image `localhost/xlb:<version>` with
//!   buildah from scratch, offline (`--no-build`, `--tag`, `--output FILE`);
//! * `validate`: the deploy/ manifests against the Kubernetes schemas, and
//!   deploy/README.md's uninstall commands against the DaemonSet.

mod bench;
mod bench_charts;
mod bench_control;
mod bench_datapath;
mod bench_forward;
mod bgp_component;
#[cfg(test)]
mod containerfile;
mod demo;
mod demo_l2;
mod fuzz;
mod image;
mod licenses;
mod lint;
mod man;
#[cfg(test)]
mod modgraph;
mod setup;
mod uninstall;
mod util;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Developer tasks for xlb", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nightly rust-src, bpf-linker, bpffs mount, iproute2, manifest validator.
    Setup,
    /// Setup, then build target/release/xlb.
    Build,
    /// Setup, then `cargo fmt --check` and clippy with -D warnings (workspace and eBPF crate).
    Lint,
    /// Setup, then the unit tests, then the integration tests (need root).
    Test(TestArgs),
    /// Build xlb and run it on a client/node/pods topology in network namespaces.
    Demo(DemoArgs),
    /// Run the benchmarks (every available one when none is named).
    Bench(BenchArgs),
    /// Setup, then drive fuzzed frames (1,000,000 by default) through the XDP program (needs root).
    Fuzz(fuzz::FuzzArgs),
    /// Build xlb, then write its man pages (xlb.1, xlb-SUBCOMMAND.1) to target/man/.
    Man,
    /// Build xlb, then its OCI image (buildah from scratch, nothing pulled): localhost/xlb:<version> and :latest.
    Image(image::ImageArgs),
    /// Validate deploy/ against the Kubernetes schemas, offline (part of `test`).
    Validate,
}

#[derive(clap::Args)]
struct BenchArgs {
    #[command(subcommand)]
    which: Option<bench::Bench>,
}

#[derive(clap::Args)]
struct TestArgs {
    /// Run only the unit tests.
    #[arg(long, conflicts_with = "integration")]
    unit: bool,
    /// Run only the integration tests.
    #[arg(long)]
    integration: bool,
    /// Only run integration tests whose name contains this (passed to the test harness).
    filter: Option<String>,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Echo the agent's log while the demo runs.
    #[arg(long)]
    agent_log: bool,
    /// Skip setup and the build (use $XLB_BIN when set, else the existing target/release/xlb).
    #[arg(long)]
    no_build: bool,
    /// Announce the VIP on L2 (`--announce l2`): the VIP is in the client's subnet, with no route of
    /// its own, and the client finds it by ARP; shows the gratuitous ARP, the client's neighbour
    /// entry, `arp_reply` and the announced VIPs.
    #[arg(long)]
    l2: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build => setup::setup().and_then(|()| util::build_release()).map(|_| ()),
        Cmd::Lint => lint::lint(),
        Cmd::Test(args) => test(&args),
        Cmd::Demo(args) => demo::demo(args.agent_log, args.no_build, args.l2),
        Cmd::Validate => validate::validate_manifests(),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
        Cmd::Man => man::man(),
        Cmd::Image(args) => image::image(&args),
        Cmd::Bench(args) => match bench::bench(args.which) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The test phases that passed and failed, for the summary.
#[derive(Default)]
struct Phases {
    passed: Vec<&'static str>,
    failed: Vec<&'static str>,
}

impl Phases {
    /// Records the phase `name`; a failure is printed as `xtask: {what}: {error}`.
    fn record(&mut self, name: &'static str, what: &str, result: anyhow::Result<()>) {
        match result {
            Ok(()) => self.passed.push(name),
            Err(e) => {
                eprintln!("xtask: {what}: {e:#}");
                self.failed.push(name);
            }
        }
    }
}

/// `cargo test --no-fail-fast -p PACKAGE --test '*' -- HARNESS` with `XLB_BIN`.
fn integration_tests(package: &str, harness: &[String], bin: &std::path::Path) -> anyhow::Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["test", "--no-fail-fast", "-p", package, "--test", "*", "--"]).args(harness).env("XLB_BIN", bin);
    util::run(&mut cmd)
}

fn test(args: &TestArgs) -> anyhow::Result<()> {
    setup::setup()?;
    let root = util::workspace_root();
    let mut phases = Phases::default();

    if !args.integration {
        util::header("deploy/ manifests (kubernetes-validate --strict, offline)");
        phases.record("deploy manifests", "deploy manifests", validate::validate_manifests());
        util::header("unit tests (cargo test --workspace --exclude lb-ebpf --lib --bins)");
        let mut cmd = util::cargo();
        cmd.args(["test", "--workspace", "--exclude", "lb-ebpf", "--lib", "--bins"]);
        phases.record("unit tests", "unit tests failed", util::run(&mut cmd));
    }

    if !args.unit {
        util::header("integration tests (network namespaces, XDP; need root)");
        if xlb_tests::is_root() {
            match util::build_release() {
                Err(e) => {
                    phases.record(
                        "integration tests (xlb build)",
                        "cannot build xlb for the integration tests",
                        Err(e),
                    );
                }
                Ok(bin) => {
                    let mut harness: Vec<String> = vec!["--test-threads=1".into()];
                    if let Some(f) = &args.filter {
                        harness.push(f.clone());
                    }
                    let result = integration_tests("xlb-tests", &harness, &bin);
                    phases.record("integration tests (xlb-tests)", "integration tests failed", result);
                    let has_userspace_tests = std::fs::read_dir(root.join("lb-userspace/tests"))
                        .is_ok_and(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "rs")));
                    if has_userspace_tests {
                        util::header("integration tests of lb-userspace (cargo test -p lb-userspace --test '*')");
                        let result = integration_tests("lb-userspace", &harness, &bin);
                        phases.record(
                            "integration tests (lb-userspace)",
                            "lb-userspace integration tests failed",
                            result,
                        );
                    }
                }
            }
        } else {
            eprintln!(
                "xtask: the integration tests need root (network namespaces, XDP, bpffs) and this is uid {}.\n\
                 xtask: run them as root, e.g. `sudo -E cargo xtask test`; `cargo xtask test --unit` runs only the unit tests.",
                // SAFETY: geteuid cannot fail.
                unsafe { libc::geteuid() }
            );
            phases.failed.push("integration tests (not root)");
        }
    }

    util::header("test summary");
    for p in &phases.passed {
        println!("  ok      {p}");
    }
    for f in &phases.failed {
        println!("  FAILED  {f}");
    }
    if !phases.failed.is_empty() {
        anyhow::bail!("{} test phase(s) failed: {}", phases.failed.len(), phases.failed.join(", "));
    }
    Ok(())
}
