//! Host helpers: sysctls, CPU affinity and priority, GRO, NAPI kthreads,
//! CPU time.

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

// ---------------------------------------------------------------- small helpers

pub(crate) fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{program}` (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn progress(text: &str) {
    println!("    {text}");
    let _ = std::io::stdout().flush();
}

pub(crate) fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).with_context(|| format!("cannot set {path} to {value}"))
}

pub(crate) fn set_affinity(pid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in bounds for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Nice value of the measured threads (the generator, the NAPI kthreads,
/// nginx's worker): other work on the machine gets ~1% of their CPU each.
pub(crate) const BENCH_NICE: i32 = -20;

/// Thread `tid` (0: the calling thread).
pub(crate) fn set_nice(tid: i32, nice: i32) {
    // SAFETY: plain syscall; PRIO_PROCESS with a thread id acts on that thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
}

pub(crate) fn get_nice(tid: i32) -> i32 {
    // SAFETY: plain syscall (-1 is also a valid value; errors leave 0 below).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
}

pub(crate) fn get_affinity() -> libc::cpu_set_t {
    // SAFETY: zeroed cpu_set_t is valid; on failure it stays empty and is not restored.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set);
        set
    }
}


pub(crate) fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("interface {name}"));
    }
    Ok(idx)
}

/// GRO on/off through the legacy ethtool ioctl (on a veth, GRO on enables
/// its NAPI, so XDP_TX/XDP_REDIRECT from the peer lands without an XDP program).
pub(crate) fn set_gro(ifname: &str, on: bool) -> Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_SGRO: u32 = 0x2c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut v = EthtoolValue { cmd: ETHTOOL_SGRO, data: u32::from(on) };
    // SAFETY: zeroed ifreq is valid; the name is NUL-terminated (IFNAMSIZ-1 bytes at most).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut v).cast();
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a live ethtool_value.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("ETHTOOL_SGRO on {ifname}"));
    }
    Ok(())
}

/// PIDs of the NAPI kthreads (`napi/<dev>-<id>`).
pub(crate) fn napi_threads() -> HashSet<i32> {
    let mut out = HashSet::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
                if comm.starts_with("napi/") {
                    out.insert(pid);
                }
            }
        }
    }
    out
}


pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Share of all CPUs' time not idle over `dur` (from /proc/stat).
pub(crate) fn cpu_busy(dur: Duration) -> f64 {
    let read = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
        Some((v.iter().take(8).sum(), idle))
    };
    let (Some((t0, i0)), Some((t1, i1))) = (read(), {
        std::thread::sleep(dur);
        read()
    }) else {
        return 0.0;
    };
    if t1 <= t0 {
        return 0.0;
    }
    1.0 - (i1 - i0) as f64 / (t1 - t0) as f64
}

