/// Builds `lb-ebpf` with the nightly toolchain and bpf-linker so that the
/// bench programs can embed its `xlb-bench` binary (the benchmarks' own XDP
/// programs; see `xlb-build-support`: one eBPF build, shared with the
/// product's `lb-userspace/build.rs`).
fn main() -> anyhow::Result<()> {
    xlb_build_support::build_ebpf_object("xlb-bench")
}
