//! The measured cases and one slice's sample.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, DevMap, MapData};
use aya::programs::XdpMode;
use aya::Ebpf;
use serde_json::{json, Value};
use xlb_bench::median;
use xlb_bench::stop::{check_stop, stopped};
use xlb_bench::host::{get_affinity, get_nice, set_affinity, set_nice};
use xlb_bench::table::{markdown_table, print_table};
use xlb_tests::Netns;

use crate::bench::Bench;
use crate::cases::{Case, Sample};
use crate::options::{Args, Plan};
use crate::proc::Proc;
use crate::programs::{attach, count, load_bench, xdp_ref, Generator};
use crate::report::{counter_delta, fmt_pps, fmt_ratio, num, plan_runs, targets, udp_rows, TCP_HEADER, UDP_HEADER};
use crate::sys::{clock_ticks, cpu_busy, ifindex, napi_threads, progress, set_gro, write_sysctl, BENCH_NICE};
use crate::topology::{
    be_addr, be_gw, cleanup_stale, gen_addr, lb_addr, mac_b, mac_be, mac_g, mac_l, mac_str, run_cmd, udp_frame, InNs, Ns,
    CALL_SECS, CONTENDED, FRAME_LEN, FWD_CPU, GEN_CPU, RR_BYTES, TCP_RR_PORT, TCP_SETUP_PORT, UDP_PORT, VIP_NFT,
    VIP_PRESERVE, VIP_PROXY, VIP_SINK, VIP_SNAT,
};
use crate::bench::start_servers;
use crate::bench::Servers;

// ---------------------------------------------------------------- the cases

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Case {
    Ceiling,
    MinFwd,
    XlbSnat,
    XlbPreserve,
    Nft,
    Nginx,
}

impl Case {
    const ALL: [Case; 6] = [Case::Ceiling, Case::MinFwd, Case::XlbSnat, Case::XlbPreserve, Case::Nft, Case::Nginx];

    fn key(self) -> &'static str {
        match self {
            Case::Ceiling => "generator",
            Case::MinFwd => "min_fwd",
            Case::XlbSnat => "xlb_snat",
            Case::XlbPreserve => "xlb_preserve",
            Case::Nft => "nft_dnat",
            Case::Nginx => "nginx_udp_proxy",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Ceiling => "generator -> XDP_DROP (ceiling)",
            Case::MinFwd => "minimal XDP forwarder",
            Case::XlbSnat => "xlb, source: snat",
            Case::XlbPreserve => "xlb, source: preserve",
            Case::Nft => "nftables DNAT",
            Case::Nginx => "nginx stream (UDP proxy)",
        }
    }

    /// The generator veth index (g<x>) and the frame's destination.
    fn target(self) -> (u8, Ipv4Addr) {
        match self {
            Case::Ceiling => (3, VIP_SINK),
            Case::MinFwd => (0, VIP_SNAT),
            Case::XlbSnat => (1, VIP_SNAT),
            Case::XlbPreserve => (1, VIP_PRESERVE),
            Case::Nft => (2, VIP_NFT),
            Case::Nginx => (2, VIP_PROXY),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    offered: u64,
    delivered: u64,
    /// Delivered to backend 0 (spread).
    delivered0: u64,
    secs: f64,
    /// CPU time other processes used meanwhile (seconds over all CPUs).
    foreign: f64,
    /// Seconds the kernel spent running the generator (the rest of the
    /// slice went to system-call and dispatcher overhead).
    gen_busy: f64,
}

impl Sample {
    fn add(&mut self, o: Sample) {
        self.offered += o.offered;
        self.delivered += o.delivered;
        self.delivered0 += o.delivered0;
        self.secs += o.secs;
        self.foreign += o.foreign;
        self.gen_busy += o.gen_busy;
    }
    fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.secs
    }
    fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.secs
    }
}

