//! The xlb of the previous map layout, for upgrade tests: built from the
//! commit named in `tests/previous-layout` (the last commit of that layout)
//! with `git archive` into `target/previous-layout/<commit>/src` and its own
//! target directory beside it, once (later runs reuse the binary).
//! `XLB_PREV_BIN` names a ready binary instead.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};

use crate::agent::target_dir;
use crate::cargo::cargo;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The commit of the previous layout, from `tests/previous-layout` (its
/// first word; the rest of the file says why).
pub fn previous_layout_commit() -> Result<String> {
    let path = repo().join("tests/previous-layout");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let commit = text.split_whitespace().next().unwrap_or_default().to_owned();
    ensure!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{}: the first word should be a full commit hash, found {commit:?}",
        path.display()
    );
    Ok(commit)
}

/// The previous layout's `xlb`, built when missing (several minutes the
/// first time: it has its own target directory).
pub fn previous_layout_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("XLB_PREV_BIN") {
        let p = PathBuf::from(p);
        ensure!(p.is_file(), "XLB_PREV_BIN={} is not a file", p.display());
        return Ok(p);
    }
    let commit = previous_layout_commit()?;
    let short = &commit[..12];
    let base = target_dir().join("previous-layout").join(short);
    let bin = base.join("target/release/xlb");
    let src = base.join("src");
    if !src.join("Cargo.toml").is_file() {
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
        // git archive | tar -x: the tree of that commit, no worktree to register.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("git -C '{}' archive {commit} | tar -x -C '{}'", repo().display(), src.display()))
            .status()
            .context("running git archive")?;
        if !status.success() || !src.join("Cargo.toml").is_file() {
            let _ = std::fs::remove_dir_all(&src);
            bail!(
                "could not extract commit {commit} (tests/previous-layout) with git archive: the upgrade test needs \
                 the repository's history (a full clone, not a shallow one)"
            );
        }
    }
    // Always asked: a no-op when built, a resumed build after an interruption.
    let out = cargo(&src)
        .args(["build", "--release", "-p", "lb-userspace", "--bin", "xlb"])
        .env("CARGO_TARGET_DIR", base.join("target"))
        .env("XLB_GIT_COMMIT", short)
        // Its build script must not find this repository's .git above it
        // (it would rebuild whenever this repository's HEAD moves).
        .env("GIT_CEILING_DIRECTORIES", &base)
        .output()
        .context("running cargo build for the previous layout")?;
    if !out.status.success() {
        bail!(
            "building xlb of commit {commit} (tests/previous-layout) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ensure!(bin.is_file(), "no {} after building commit {commit}", bin.display());
    Ok(bin)
}
