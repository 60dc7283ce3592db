//! `cargo xtask lint`: the checks CI runs before the tests.
//!
//! In order: `cargo xtask setup` (the eBPF crate needs the nightly
//! `rust-src` and bpf-linker), `cargo fmt --all -- --check`, clippy with
//! `-D warnings` on the workspace (every crate and target, the benches of
//! `bench/` included; the eBPF crate is checked for the host there, without
//! its bench-only programs), then clippy with `-D warnings` on the eBPF
//! crate for the BPF target with the nightly toolchain and its `bench`
//! feature (as `build-support` builds it for `lb-userspace` and `bench`). Every check
//! runs even when an earlier one fails; the summary lists the failures.
//!
//! The lint policy itself is `[workspace.lints]` in the root `Cargo.toml`.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{setup, util};

/// Runs setup, then every check; fails when any check fails.
pub fn lint() -> Result<()> {
    setup::setup()?;
    let mut failed: Vec<&str> = Vec::new();

    util::header("format (cargo fmt --all -- --check)");
    let mut fmt = util::cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    check(&mut fmt, "cargo fmt --check", &mut failed);

    util::header("clippy, workspace (-D warnings)");
    let mut clippy = util::cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    check(&mut clippy, "clippy (workspace)", &mut failed);

    util::header("clippy, eBPF crate on bpfel-unknown-none with nightly (-D warnings)");
    let mut ebpf = nightly_cargo();
    ebpf.args([
        "clippy",
        "-p",
        "lb-ebpf",
        "--features",
        "bench",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);
    check(&mut ebpf, "clippy (lb-ebpf)", &mut failed);

    util::header("lint summary");
    if !failed.is_empty() {
        for f in &failed {
            println!("  FAILED  {f}");
        }
        bail!(
            "{} check(s) failed: {}; `cargo fmt --all` fixes the format, clippy's messages say how to fix the rest",
            failed.len(),
            failed.join(", ")
        );
    }
    println!("  ok      format, clippy (workspace), clippy (lb-ebpf)");
    Ok(())
}

/// Runs one check, recording `name` in `failed` when it fails.
fn check<'a>(cmd: &mut Command, name: &'a str, failed: &mut Vec<&'a str>) {
    if let Err(e) = util::run(cmd) {
        eprintln!("xtask: {name}: {e:#}");
        failed.push(name);
    }
}

/// `rustup run nightly cargo` in the workspace root, with the environment of
/// [`util::cargo`] (the eBPF crate builds `core` itself: nightly only).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(util::workspace_root());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(util::set_by_cargo_run) || name == "RUSTUP_TOOLCHAIN" {
            cmd.env_remove(&name);
        }
    }
    cmd
}
