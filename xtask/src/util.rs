//! Small helpers: running commands, headers, paths.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

pub use xlb_tests::cargo::set_by_cargo_run;

/// A `cargo` command (the one running us, when known) in the workspace root,
/// with the environment of a plain `cargo` in a shell: without the variables
/// `cargo run` set for xtask (see [`xlb_tests::cargo`]).
pub fn cargo() -> Command {
    xlb_tests::cargo::cargo(&workspace_root())
}

/// Prints a phase header.
pub fn header(text: &str) {
    println!("\n==> {text}");
    let _ = std::io::stdout().flush();
}

/// Prints a progress line.
pub fn info(text: &str) {
    println!("    {text}");
    let _ = std::io::stdout().flush();
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().to_string();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    println!("    $ {what}");
    let _ = std::io::stdout().flush();
    let status = cmd.stdin(Stdio::null()).status().with_context(|| format!("cannot run `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; fails (with stderr) on a
/// non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run `{what}`"))?;
    if !out.status.success() {
        bail!("`{what}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `true` when the process runs as root.
pub fn is_root() -> bool {
    xlb_tests::is_root()
}

/// `cargo build --release -p lb-userspace`; returns the path of `xlb`.
pub fn build_release() -> Result<PathBuf> {
    header("build (cargo build --release -p lb-userspace)");
    run(cargo().args(["build", "--release", "-p", "lb-userspace"]))?;
    let bin = target_dir().join("release").join("xlb");
    if !bin.is_file() {
        bail!("the build succeeded but {} is missing", bin.display());
    }
    info(&format!("built {}", bin.display()));
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_run_variables_are_recognised() {
        for v in
            ["CARGO", "CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_PKG_VERSION_MAJOR", "CARGO_BIN_EXE_xlb", "OUT_DIR"]
        {
            assert!(set_by_cargo_run(v), "{v}");
        }
        for v in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_TERM_COLOR",
            "CARGO_BUILD_JOBS",
            "RUSTUP_TOOLCHAIN",
            "PATH",
            "CARGOX",
        ] {
            assert!(!set_by_cargo_run(v), "{v}");
        }
    }

    #[test]
    fn the_nested_cargo_gets_none_of_them() {
        // This test binary runs under cargo, which set these for it.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let cmd = cargo();
        let removed: Vec<String> =
            cmd.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        for v in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO"] {
            if std::env::var_os(v).is_some() {
                assert!(removed.iter().any(|r| r == v), "{v} not removed: {removed:?}");
            }
        }
    }
}
