/// Builds `lb-ebpf` with the nightly toolchain and bpf-linker so that its
/// object can be embedded in the `xlb` binary (see `xlb-build-support`: one
/// eBPF build, shared with the benchmarks' `bench/build.rs`).
fn main() -> anyhow::Result<()> {
    xlb_build_support::build_ebpf_object("lb-ebpf")
}
