//! The summary: tables, JSON and Markdown.

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

pub(crate) fn fmt_pps(pps: f64) -> String {
    if !pps.is_finite() {
        "-".into()
    } else if pps >= 1e6 {
        format!("{:.2} M", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} k", pps / 1e3)
    } else {
        format!("{pps:.0}")
    }
}

pub(crate) fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

pub(crate) fn num(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}


}

pub(crate) struct UdpRow {
    case: Case,
    offered: f64,
    delivered: f64,
    ratio_offered: f64,
    vs: BTreeMap<Case, f64>,
    backend0_share: f64,
    runs: Vec<Sample>,
}

/// Median over runs of the per-run ratio delivered(a) / delivered(b).
pub(crate) fn run_ratio(udp: &BTreeMap<Case, Vec<Sample>>, a: Case, b: Case) -> f64 {
    match (udp.get(&a), udp.get(&b)) {
        (Some(x), Some(y)) => median(x.iter().zip(y).map(|(x, y)| x.delivered_pps() / y.delivered_pps()).collect()),
        _ => f64::NAN,
    }
}

pub(crate) fn udp_rows(udp: &BTreeMap<Case, Vec<Sample>>) -> Vec<UdpRow> {
    udp.iter()
        .map(|(&case, runs)| UdpRow {
            case,
            offered: median(runs.iter().map(Sample::offered_pps).collect()),
            delivered: median(runs.iter().map(Sample::delivered_pps).collect()),
            ratio_offered: median(runs.iter().map(|s| s.delivered as f64 / s.offered as f64).collect()),
            vs: [Case::MinFwd, Case::Nft, Case::Nginx]
                .into_iter()
                .filter(|r| udp.contains_key(r) && case != Case::Ceiling)
                .map(|r| (r, run_ratio(udp, case, r)))
                .collect(),
            backend0_share: median(runs.iter().map(|s| s.delivered0 as f64 / s.delivered as f64).collect()),
            runs: runs.clone(),
        })
        .collect()
}

pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header.to_vec()));
    println!(
        "{}",
        line(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().iter().map(String::as_str).collect())
    );
    for r in rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}

pub(crate) fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        header.iter().enumerate().map(|(i, _)| if i == 0 { "---|" } else { "---:|" }).collect::<String>()
    );
    for r in rows {
        s += &format!("| {} |\n", r.join(" | "));
    }
    s
}

pub(crate) const UDP_HEADER: [&str; 8] = [
    "forwarder",
    "offered pps",
    "delivered pps",
    "delivered/offered",
    "÷ min_fwd",
    "÷ nft DNAT",
    "÷ nginx",
    "backend 0/1",
];
pub(crate) const TCP_HEADER: [&str; 5] = ["path", "connections/s", "requests/s (1 conn)", "conn ÷ nft", "req ÷ nft"];

pub(crate) fn targets(udp: &BTreeMap<Case, Vec<Sample>>) -> Vec<(String, f64, f64)> {
    let mut t = Vec::new();
    for x in [Case::XlbSnat, Case::XlbPreserve] {
        for (r, target) in [(Case::MinFwd, 0.9), (Case::Nft, 7.0), (Case::Nginx, 50.0)] {
            if udp.contains_key(&x) && udp.contains_key(&r) {
                t.push((format!("{} / {}", x.key(), r.key()), target, run_ratio(udp, x, r)));
            }
        }
    }
    t
}


pub(crate) fn counter_delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter().map(|(k, v)| (k.clone(), v.saturating_sub(a.get(k).copied().unwrap_or(0)))).collect()
}

pub(crate) fn plan_runs(method: &Value) -> u64 {
    method["runs"].as_u64().unwrap_or(0)
}
