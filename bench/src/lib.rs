//! Shared pieces of xlb's benchmark programs (`src/bin/*`, run by `cargo
//! xtask bench`): the benchmarks' own eBPF object, the stop flag set by
//! SIGINT/SIGTERM, host helpers (commands, bpffs, namespaces, CPU pinning),
//! the machine's description and result tables.
//!
//! Network namespaces, commands and processes come from the integration
//! tests' toolkit (`xlb_tests`): one implementation for benches and tests.

#![warn(missing_docs)]

/// Host helpers (commands, bpffs, namespaces, CPU pinning), shared with the
/// data-path tests.
pub use xlb_tests::host;
pub mod machine;
pub mod results;
pub mod stop;
pub mod table;

/// The benchmarks' XDP programs (minimal forwarder, sink, generators,
/// per-packet harness), built from `lb-ebpf/src/bin/xlb-bench.rs` by
/// `build.rs`. Not part of the `xlb` binary.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-bench"));

/// The median of `v` (the mean of the middle two for an even count); NaN
/// when `v` is empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(vec![4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(Vec::new()).is_nan());
    }
}
