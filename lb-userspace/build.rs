/// Sets `XLB_GIT_COMMIT` for `xlb --version`: `XLB_GIT_COMMIT` from the
/// environment when set, else `git rev-parse --short HEAD`, else "unknown"
/// (a source tree without `.git`, or no git). Reruns when HEAD moves: on a
/// checkout (HEAD) and on a commit (the branch's ref, or packed-refs).
fn git_commit() {
    println!("cargo:rerun-if-env-changed=XLB_GIT_COMMIT");
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git").args(args).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = std::env::var("XLB_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=XLB_GIT_COMMIT={commit}");
    // `--git-path` resolves worktrees (HEAD is per worktree, refs shared).
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"]), git(&["rev-parse", "--git-path", "packed-refs"])];
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &head_ref]));
    }
    for path in watch.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// Builds `lb-ebpf` with the nightly toolchain and bpf-linker so that its
/// object can be embedded in the `xlb` binary (see `xlb-build-support`: one
/// eBPF build, shared with the benchmarks' `bench/build.rs`), and records the
/// commit for `--version`.
fn main() -> anyhow::Result<()> {
    git_commit();
    xlb_build_support::build_ebpf_object("lb-ebpf")
}
