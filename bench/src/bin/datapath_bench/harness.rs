//! Userspace mirrors of the harness' map types (lb-ebpf/src/bin/xlb-bench.rs)
//! and the programs under test.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, DevMap, MapData, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use clap::Parser;
use lb_common::{stats::STAT_COUNT, Stat, IF_F_REDIRECT, IF_F_TX};
use xlb::{
    bpf::maps::Maps,
    state::model::{BackendSpec, DesiredState, Protocol, ServiceSpec, SourceMode},
    state::writer::MapWriter,
};
use xlb_bench::{
    host::{cleanup_stale, enter_netns, ensure_bpffs, pin_thread, sh},
    machine::Machine,
    stop::{catch_signals, check_stop},
    BENCH_OBJECT,
};

use crate::bench::{Bench, Row};
use crate::frames::{frame, tuple_of, Frame, L4, PAYLOAD, TCP_ACK, TCP_SYN};
use crate::harness::{fib_conf, FibConf, FwdConf, Target, Template, BENCH_PROGRAMS, MIN_FWD, NOP, TEMPLATE_MAX};
use crate::report::summary;
use crate::{
    mac_str, setup_commands, verdict_name, Opts, BACKEND4, BACKEND4_MAC, BACKEND6, BACKEND6_MAC, BACKEND_PORT,
    CLIENT4, CLIENT4_MAC, CLIENT6, CLIENT6_MAC, V0_MAC, V1_MAC, VIP4, VIP4_PRESERVE, VIP6, XDP_ABORTED, XDP_DROP,
    XDP_PASS, XDP_REDIRECT, XDP_TX,
};

pub(crate) const TEMPLATE_MAX: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Template {
    len: u32,
    vary: u32,
    sport_off: u32,
    saddr_off: u32,
    l4_csum_off: u32,
    ip_csum_off: u32,
    data: [u8; TEMPLATE_MAX],
}
// SAFETY: repr(C), Copy, no padding, every bit pattern valid.
unsafe impl aya::Pod for Template {}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FwdConf {
    backend: [[u8; 4]; 2],
    dmac: [[u8; 6]; 2],
    smac: [[u8; 6]; 2],
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
    family: u32,
    src: [u32; 4],
    dst: [u32; 4],
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

