//! A `cargo` command with the environment of a plain `cargo` in a shell.
//!
//! `cargo run` and `cargo test` set variables for the program they run
//! (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...). Build scripts watch some of
//! them (ring's `rerun-if-env-changed=CARGO_MANIFEST_DIR`), so a nested
//! `cargo build` that inherits them rebuilds ring, rustls and kube, and a
//! later plain `cargo build --release` rebuilds them again. xtask and the
//! tests that build examples use [`cargo`] instead of `Command::new("cargo")`.
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Variables `cargo run`/`cargo test` set for the program they run, which a
/// plain `cargo build` in a shell does not have (`CARGO_PKG_*` and
/// `CARGO_BIN_EXE_*` are prefixes).
const CARGO_RUN_VARS: &[&str] = &[
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
    "CARGO_PKG_",
    "CARGO_BIN_EXE_",
];

/// Whether `name` is one of the variables `cargo run`/`cargo test` set.
#[must_use]
pub fn set_by_cargo_run(name: &str) -> bool {
    CARGO_RUN_VARS.iter().any(|v| name == *v || (v.ends_with('_') && name.starts_with(v)))
}

/// A `cargo` command (the one running us, when known) in `dir`, without the
/// variables `cargo run`/`cargo test` set for us.
#[must_use]
pub fn cargo(dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            cmd.env_remove(AsRef::<OsStr>::as_ref(&name));
        }
    }
    cmd
}
