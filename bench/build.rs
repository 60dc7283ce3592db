use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// Builds `lb-ebpf` with its `bench` feature (which adds the `xlb-bench`
/// binary: the benchmarks' own XDP programs) with the nightly toolchain and
/// bpf-linker, so that the bench programs can embed `xlb-bench`. The product
/// (`lb-userspace/build.rs`) builds `lb-ebpf` without that feature.
fn main() -> anyhow::Result<()> {
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        // Checks of pure logic may skip the eBPF build; leave an empty
        // object so the crate still compiles (loading it fails clearly).
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?).join("xlb-bench");
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
    println!("cargo:rerun-if-changed=../lb-common/src");
    // As in lb-userspace/build.rs: quiet, the nested cargo writes only errors
    // to stderr (which aya-build passes on as `cargo:warning`s).
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [Package { name: ebpf.name.as_str(), root_dir, features: &["bench"], ..Default::default() }],
        Toolchain::default(),
    )
}
