//! Userspace mirrors of the harness' map types (lb-ebpf/src/bin/xlb-bench.rs)
//! and the programs under test.

use std::net::IpAddr;

pub(crate) const TEMPLATE_MAX: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Template {
    pub(crate) len: u32,
    pub(crate) vary: u32,
    pub(crate) sport_off: u32,
    pub(crate) saddr_off: u32,
    pub(crate) l4_csum_off: u32,
    pub(crate) ip_csum_off: u32,
    pub(crate) data: [u8; TEMPLATE_MAX],
}
// SAFETY: repr(C), Copy, no padding, every bit pattern valid.
unsafe impl aya::Pod for Template {}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FwdConf {
    pub(crate) backend: [[u8; 4]; 2],
    pub(crate) dmac: [[u8; 6]; 2],
    pub(crate) smac: [[u8; 6]; 2],
}
// SAFETY: as above.
unsafe impl aya::Pod for FwdConf {}

// ---------------------------------------------------------------------------
// The bench
// ---------------------------------------------------------------------------

/// The program the harness tail-calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Target {
    /// `xlb_xdp` of the data-path object.
    Xlb,
    /// A program of the bench object (`min_fwd`, `harness_nop`, `stage_*`).
    Bench(&'static str),
}

pub(crate) const NOP: Target = Target::Bench("harness_nop");
pub(crate) const MIN_FWD: Target = Target::Bench("min_fwd");
pub(crate) const BENCH_PROGRAMS: [&str; 12] = [
    "harness",
    "harness_nop",
    "min_fwd",
    "stage_fib",
    "stage_ktime",
    "stage_ktime_coarse",
    "stage_hash",
    "stage_lru",
    "stage_lru_insert",
    "stage_pcpu_lru_insert",
    "stage_hash_insert",
    "stage_bucket",
];

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FibConf {
    pub(crate) family: u32,
    pub(crate) src: [u32; 4],
    pub(crate) dst: [u32; 4],
}
// SAFETY: as above.
unsafe impl aya::Pod for FibConf {}

pub(crate) fn fib_conf(src: &str, dst: &str) -> FibConf {
    let words = |ip: IpAddr| -> [u32; 4] {
        let b: Vec<u8> = match ip {
            IpAddr::V4(a) => a.octets().iter().copied().chain([0; 12]).collect(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        std::array::from_fn(|i| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap()))
    };
    let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    FibConf { family: if s.is_ipv4() { 2 } else { 10 }, src: words(s), dst: words(d) }
}
