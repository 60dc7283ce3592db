//! The eBPF build shared by the build scripts of `lb-userspace` (which embeds
//! the `lb-ebpf` object in `xlb`) and `xlb-bench-runner` (which embeds the
//! benchmarks' `xlb-bench` object).
//!
//! Both objects come from one `lb-ebpf` build: with its `bench` feature (which
//! only adds the `xlb-bench` binary; the product's program is the same code
//! either way), by the nightly toolchain and bpf-linker through
//! [`aya_build::build_ebpf`], into one target directory shared by every
//! caller and profile, `<target dir>/ebpf`. The first build script to run
//! compiles the eBPF crate; the others find it fresh.
//!
//! Not the workspace's own `<target dir>/bpfel-unknown-none`: the nested
//! cargo runs while the outer one holds the workspace target directory's
//! lock (rust-lang/cargo#6412), so it needs a target directory of its own.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// The eBPF crate.
const EBPF_PACKAGE: &str = "lb-ebpf";

/// Builds `lb-ebpf` (both its binaries) into the shared target directory and
/// copies the binary `object` (`lb-ebpf` or `xlb-bench`) to `$OUT_DIR/object`,
/// for `include_bytes_aligned!(concat!(env!("OUT_DIR"), "/<object>"))`.
///
/// With `AYA_BUILD_SKIP` set, writes an empty placeholder there instead when
/// none exists (checks of pure logic skip the eBPF build; loading the
/// placeholder fails clearly); `aya-build` skips the build when its value is
/// `1` or `true`.
pub fn build_ebpf_object(object: &str) -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    let out = out_dir.join(object);
    let skip = std::env::var_os("AYA_BUILD_SKIP");
    if skip.is_some() && !out.exists() {
        fs::write(&out, b"").context("write placeholder eBPF object")?;
    }

    let cargo_metadata::Metadata { packages, target_directory, workspace_root, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("{EBPF_PACKAGE} package not found"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("{EBPF_PACKAGE} manifest has no parent"))?;
    // The eBPF object also depends on the shared types.
    println!("cargo:rerun-if-changed={}", workspace_root.join("lb-common").join("src"));
    let package =
        Package { name: EBPF_PACKAGE, root_dir: root_dir.as_str(), features: &["bench"], ..Default::default() };

    if skip.is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // aya-build prints its `rerun-if-env-changed` and a warning, and builds nothing.
        return aya_build::build_ebpf([package], Toolchain::default());
    }

    let shared = target_directory.join("ebpf").into_std_path_buf();
    fs::create_dir_all(&shared).with_context(|| format!("create {}", shared.display()))?;
    // Build scripts of one cargo run may run at once: one at a time builds
    // and copies, so none reads an object another is writing.
    let lock = File::create(shared.join(".lock")).context("create the eBPF build lock")?;
    lock.lock().context("lock the eBPF build")?;

    // aya-build passes every line the nested cargo writes to stderr on as a
    // `cargo:warning`, so its progress ("Compiling core ...", about 80 of
    // them) looked like warnings. Quiet, it writes only errors there; the
    // compiler's own warnings and errors come through its JSON messages and
    // are still shown.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    // aya-build builds into `$OUT_DIR/aya-build/target/<package>` and copies
    // the binaries to `$OUT_DIR`: pointed at the shared directory, every
    // caller uses the same nested target directory.
    std::env::set_var("OUT_DIR", &shared);
    let built = aya_build::build_ebpf([package], Toolchain::default());
    std::env::set_var("OUT_DIR", &out_dir);
    built?;
    copy(&shared.join(object), &out)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
