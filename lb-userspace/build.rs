use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

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

/// Builds `lb-ebpf` with the nightly toolchain and bpf-linker so the object
/// can be embedded in the `xlb` binary. Without its `bench` feature: the
/// benchmarks' programs (`xlb-bench`) are built by `bench/build.rs`.
fn main() -> anyhow::Result<()> {
    git_commit();
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        // Unit tests of pure logic may skip the eBPF build; leave an empty
        // object so the crate still compiles (loading it fails clearly).
        let dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
        let out = dir.join("lb-ebpf");
        if !out.exists() {
            std::fs::write(&out, b"").context("write placeholder eBPF object")?;
        }
    }
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "lb-ebpf")
        .ok_or_else(|| anyhow!("lb-ebpf package not found"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("lb-ebpf manifest has no parent"))?.as_str();
    // The eBPF object also depends on the shared types.
    println!("cargo:rerun-if-changed=../lb-common/src");
    // aya-build passes every line the nested cargo writes to stderr on as a
    // `cargo:warning`, so its progress ("Compiling core ...", about 80 of
    // them) looked like warnings. Quiet, it writes only errors there; the
    // compiler's own warnings and errors come through its JSON messages and
    // are still shown.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf([Package { name: ebpf.name.as_str(), root_dir, ..Default::default() }], Toolchain::default())
}
