//! `cargo xtask bench forward` runs this (release mode, as root): forwarding
//! throughput of xlb against a minimal XDP forwarder, nftables DNAT and a
//! userspace UDP proxy (nginx `stream`), plus TCP connection-setup and
//! request/response rates through xlb and nftables DNAT.
//!
//! Topology (network namespaces `xlbt<pid>-fwd-*`, removed at exit):
//!
//! ```text
//!  gen ns                     lb ns                                be<i> ns (i = 0, 1)
//!  g0 10.200.0.2 <-> l0 10.200.0.1  min_fwd (XDP)  -> b0/b1 -> eth0 10.1.<i>.2  sink (XDP)
//!  g1 10.200.1.2 <-> l1 10.200.1.1  xlb agent (XDP) -> b0/b1 -> eth0
//!  g2 10.200.2.2 <-> l2 10.200.2.1  kernel: nft DNAT / nginx -> b2/b3 -> eth1 10.2.<i>.2  sink (XDP)
//!  g3 10.200.3.2 <-> l3             sink (XDP): the generator's ceiling
//! ```
//!
//! The generator runs with `BPF_PROG_RUN` in live-frame mode on g<x>
//! (XDP_TX into the peer l<x>) from a thread pinned to CPU 0: a program of
//! its own (`rawbpf`) that writes the whole header of every frame and a new
//! UDP source port, because pages recycled within one call keep the bytes
//! the forwarder rewrote (`gen` of `xlb::BENCH_OBJECT`, which only sets the
//! port, stays available as `--generator bench-gen`). Every l<x> runs
//! threaded NAPI with its kthread pinned to CPU 1, so the forwarder (and the
//! backends' receive path it triggers) runs there; the generator, the NAPI
//! kthreads and nginx's worker run at nice -20. Backends count what they
//! receive with `sink` (XDP_DROP) on their veths.
//!
//! Each forwarder has its own ingress veth (and VIP), so switching between
//! them costs nothing: runs are made of interleaved short slices.
//!
//! Usage: `forward_bench --help`. It installs nothing: without `nft` or
//! nginx's stream module those rows are skipped (and listed as skipped).
//! docs/BENCHMARKS.md ("Forwarding") describes the method and its limits.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, DevMap, MapData, PerCpuArray};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::Ebpf;
use clap::Parser;
use serde_json::{json, Value};

// ---------------------------------------------------------------- options

#[derive(Parser, Debug)]
#[command(
    name = "forward_bench",
    about = "Forwarding benchmark of xlb (run by `cargo xtask bench forward`; needs root)"
)]
#[expect(clippy::struct_field_names, reason = "the fields are the command-line flags")]
struct Args {
    /// Tiny configuration for the smoke test: 1 run of 1 round, short slices.
    #[arg(long)]
    quick: bool,
    /// Runs (the median is reported). Default 3 (1 with --quick).
    #[arg(long)]
    runs: Option<u32>,
    /// Interleaved rounds per run (every forwarder gets one slice per round). Default 3 (1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Measured length of one slice. Default 1000 ms (700 with --quick).
    #[arg(long)]
    slice_ms: Option<u64>,
    /// Unmeasured warm-up before each slice. Default 300 ms (150 with --quick).
    #[arg(long)]
    warmup_ms: Option<u64>,
    /// Live-frame batch size of BPF_PROG_RUN (1..=256).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    batch: u32,
    /// Distinct UDP source ports (flows) of the generator: a power of two up
    /// to 32768. xlb's SNAT pool has 20000 ports per backend and node
    /// address (32 probes per new flow): the default keeps it under half
    /// full; 32768 flows over two backends fill it to 82 %.
    #[arg(long, default_value_t = 16384)]
    ports: u32,
    /// Frames of the first BPF_PROG_RUN call of a slice (later calls are
    /// sized to ~0.25 s at the rate measured).
    #[arg(long, default_value_t = 1 << 16, value_parser = clap::value_parser!(u32).range(1..))]
    frames_per_call: u32,
    /// Generator program: `full` (rewrites the whole header of every frame;
    /// see `rawbpf`) or `bench-gen` (`gen` of xlb::BENCH_OBJECT: source port
    /// only, so frames recycled after a forwarder rewrote them are resent
    /// rewritten: wrong results for every forwarder that rewrites in place).
    #[arg(long, default_value = "full", value_parser = ["full", "bench-gen"])]
    generator: String,
    /// The xlb binary (default: $XLB_BIN, else `xlb` next to this example's directory).
    #[arg(long)]
    xlb: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the results as a Markdown section to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Skip the nftables rows.
    #[arg(long)]
    no_nft: bool,
    /// Skip the nginx row.
    #[arg(long)]
    no_nginx: bool,
    /// Skip the TCP part.
    #[arg(long)]
    no_tcp: bool,
    /// Skip the UDP flood part.
    #[arg(long)]
    no_udp: bool,
    /// Extra argument for `xlb agent` (repeatable, e.g. `--agent-arg=--flow-table-size=65536`).
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// Also measure each XDP program's own cost per packet (kernel BPF
    /// run-time statistics; adds a little overhead to every program run).
    #[arg(long)]
    bpf_stats: bool,
    /// Wait up to SECS for the machine to be quiet (under 15% busy) before
    /// starting; other work on the CPUs skews the numbers.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    wait_quiet: u64,
    /// Total time the bench may spend measuring again slices during
    /// which other processes used more than 10% of the CPUs.
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    retry_budget_s: u64,
    /// Measure only these UDP cases (comma-separated keys: generator,
    /// min_fwd, xlb_snat, xlb_preserve, nft_dnat, nginx_udp_proxy).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

struct Plan {
    runs: u32,
    rounds: u32,
    slice: Duration,
    warmup: Duration,
    batch: u32,
    frames_per_call: u32,
    bench_gen: bool,
    ports: u32,
}

// ---------------------------------------------------------------- constants

const FRAME_LEN: usize = 60; // 64 bytes on the wire with the FCS
const UDP_PORT: u16 = 53;
const TCP_SETUP_PORT: u16 = 80;
const TCP_RR_PORT: u16 = 81;
const RR_BYTES: usize = 64;
const GEN_CPU: usize = 0;
/// Target duration of one generator BPF_PROG_RUN call.
const CALL_SECS: f64 = 0.25;
/// A slice during which other processes used more than this share of the
/// CPUs is measured again (within `--retry-budget-s`).
const CONTENDED: f64 = 0.10;
const FWD_CPU: usize = 1;

const VIP_SNAT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VIP_PRESERVE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const VIP_NFT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const VIP_PROXY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 13);
/// Destination of the ceiling frames (l3 drops everything).
const VIP_SINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);

fn mac_g(x: u8) -> [u8; 6] {
    [0x02, 0xfb, 0, 0, x, 2]
}
fn mac_l(x: u8) -> [u8; 6] {
    [0x02, 0xfb, 0, 0, x, 1]
}
/// LB side of the backend link `b<n>` (n = 0..4; b0/b1 -> 10.1.<i>, b2/b3 -> 10.2.<i>).
fn mac_b(n: u8) -> [u8; 6] {
    [0x02, 0xfb, 1, n, 0, 1]
}
/// Backend side of `b<n>` (eth0 for n < 2, eth1 otherwise).
fn mac_be(n: u8) -> [u8; 6] {
    [0x02, 0xfb, 1, n, 0, 2]
}
fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
fn gen_addr(x: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, x, 2)
}
fn lb_addr(x: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, x, 1)
}
/// Backend i's address on b<n>'s link: 10.1.i.2 (n = i) or 10.2.i.2 (n = i + 2).
fn be_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1 + n / 2, n % 2, 2)
}
fn be_gw(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1 + n / 2, n % 2, 1)
}

// ---------------------------------------------------------------- stop flag

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn check_stop() -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------- small helpers

fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
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

fn progress(text: &str) {
    println!("    {text}");
    let _ = std::io::stdout().flush();
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).with_context(|| format!("cannot set {path} to {value}"))
}

fn set_affinity(pid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
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
const BENCH_NICE: i32 = -20;

/// Thread `tid` (0: the calling thread).
fn set_nice(tid: i32, nice: i32) {
    // SAFETY: plain syscall; PRIO_PROCESS with a thread id acts on that thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
}

fn get_nice(tid: i32) -> i32 {
    // SAFETY: plain syscall (-1 is also a valid value; errors leave 0 below).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
}

fn get_affinity() -> libc::cpu_set_t {
    // SAFETY: zeroed cpu_set_t is valid; on failure it stays empty and is not restored.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set);
        set
    }
}

fn median(mut v: Vec<f64>) -> f64 {
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

fn fmt_pps(pps: f64) -> String {
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

fn fmt_ratio(r: f64) -> String {
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

fn num(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

// ---------------------------------------------------------------- namespaces

/// A named network namespace made by us; deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn create(name: String) -> Result<Ns> {
        run_cmd("ip", &["netns", "add", &name])?;
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.run(|| -> Result<()> {
            // Before any veth exists, so new interfaces inherit it. IPv6 off:
            // the sinks would otherwise count neighbour discovery too.
            write_sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
            write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
            write_sysctl("net/ipv4/conf/all/rp_filter", "0")?;
            write_sysctl("net/ipv4/conf/default/rp_filter", "0")?;
            Ok(())
        })??;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    fn open(&self) -> Result<OwnedFd> {
        let f = File::open(self.path()).with_context(|| format!("cannot open netns {}", self.name))?;
        Ok(OwnedFd::from(f))
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_cmd("ip", &all)
    }

    /// `ip netns exec NAME sh -c SCRIPT` (its /sys is this namespace's).
    fn sh(&self, script: &str) -> Result<String> {
        run_cmd("ip", &["netns", "exec", &self.name, "sh", "-c", script])
    }

    /// Runs `f` on a thread inside this namespace.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        let fd = self.open()?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<R> {
                setns(&fd)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("thread in netns {} panicked", self.name))?
        })
    }

    /// A command that runs in this namespace (setns between fork and exec;
    /// SIGTERM when the spawning thread exits). The host's mounts stay, so
    /// the bpffs under /sys/fs/bpf is shared.
    fn command(&self, program: impl AsRef<OsStr>) -> Result<Command> {
        let fd = self.open()?;
        let mut cmd = Command::new(program);
        // SAFETY: setns and prctl are async-signal-safe; fd lives in the closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        Ok(cmd)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Err(e) = run_cmd("ip", &["netns", "del", &self.name]) {
            eprintln!("forward_bench: cannot delete netns {}: {e:#}", self.name);
        }
    }
}

fn setns(fd: &OwnedFd) -> Result<()> {
    // SAFETY: plain syscall on a valid fd.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

/// The current thread inside a namespace (and optionally pinned to a CPU)
/// until dropped.
struct InNs {
    orig: OwnedFd,
    mask: Option<libc::cpu_set_t>,
    nice: Option<i32>,
}

impl InNs {
    fn enter(ns: &Ns, cpu: Option<usize>) -> Result<InNs> {
        let orig = OwnedFd::from(File::open("/proc/thread-self/ns/net").context("opening our netns")?);
        let target = ns.open()?;
        let mask = cpu.map(|_| get_affinity());
        setns(&target)?;
        let mut guard = InNs { orig, mask, nice: None };
        if let Some(c) = cpu {
            set_affinity(0, &[c]).with_context(|| format!("pinning the generator to CPU {c}"))?;
            guard.nice = Some(get_nice(0));
            set_nice(0, BENCH_NICE);
        }
        Ok(guard)
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        if let Some(n) = self.nice {
            set_nice(0, n);
        }
        if let Some(mask) = self.mask {
            // SAFETY: restoring the mask read before.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const mask) };
        }
        if let Err(e) = setns(&self.orig) {
            eprintln!("forward_bench: cannot return to our netns: {e:#}");
        }
    }
}

/// Deletes namespaces, pins and temp files of earlier runs whose process is gone.
fn cleanup_stale() {
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("xlbt") else { return false };
        let Some((pid, rest)) = rest.split_once('-') else { return false };
        if !rest.starts_with("fwd") || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        pid.parse::<i32>().is_ok_and(|p| !pid_alive(p))
    };
    if let Ok(out) = run_cmd("ip", &["netns", "list"]) {
        for name in out.lines().filter_map(|l| l.split_whitespace().next()) {
            if stale(name) {
                let _ = run_cmd("ip", &["netns", "del", name]);
                eprintln!("forward_bench: removed stale netns {name}");
            }
        }
    }
    for dir in [PathBuf::from("/sys/fs/bpf"), std::env::temp_dir()] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if stale(&name) {
                    let _ = if e.path().is_dir() {
                        std::fs::remove_dir_all(e.path())
                    } else {
                        std::fs::remove_file(e.path())
                    };
                }
            }
        }
    }
}

// ---------------------------------------------------------------- processes

/// A process we started; SIGTERM (then SIGKILL) on drop.
struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?),
            Box::new(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?),
        ];
        for pipe in pipes {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if l.len() >= 200 {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        Ok(Proc { name: name.to_string(), child, log })
    }

    fn log_tail(&self) -> String {
        let l = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        l.iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n")
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(&mut self) {
        if !self.running() {
            return;
        }
        // SAFETY: our unreaped child (try_wait said it runs).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.running() {
            eprintln!("forward_bench: {} ignored SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- eBPF

fn load_bench(prog: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(xlb::BENCH_OBJECT).context("loading xlb::BENCH_OBJECT")?;
    let p: &mut Xdp =
        ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog} in the bench object"))?.try_into()?;
    p.load().with_context(|| format!("loading {prog}"))?;
    Ok(ebpf)
}

fn xdp<'a>(ebpf: &'a mut Ebpf, prog: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf.program_mut(prog).ok_or_else(|| anyhow!("no program {prog}"))?.try_into()?)
}

fn xdp_ref<'a>(ebpf: &'a Ebpf, prog: &str) -> Result<&'a Xdp> {
    Ok(ebpf.program(prog).ok_or_else(|| anyhow!("no program {prog}"))?.try_into()?)
}

/// Attaches `prog` of `ebpf` natively to `ifname` inside `ns`.
fn attach(ns: &Ns, ebpf: &mut Ebpf, prog: &str, ifname: &str) -> Result<()> {
    let p = xdp(ebpf, prog)?;
    ns.run(|| p.attach(ifname, XdpMode::Driver).map(|_| ()))?
        .with_context(|| format!("attaching {prog} to {ifname} in {} (native XDP)", ns.name))
}

/// Sum over CPUs of BENCH_COUNT[0].
fn count(ebpf: &Ebpf) -> Result<u64> {
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map("BENCH_COUNT").ok_or_else(|| anyhow!("no BENCH_COUNT"))?)?;
    Ok(map.get(&0, 0)?.iter().sum())
}

fn ifindex(name: &str) -> Result<u32> {
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
fn set_gro(ifname: &str, on: bool) -> Result<()> {
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
fn napi_threads() -> HashSet<i32> {
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

fn udp_frame(x: u8, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&mac_l(x));
    f[6..12].copy_from_slice(&mac_g(x));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (FRAME_LEN - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[20] = 0x40; // DF
    f[22] = 64; // TTL
    f[23] = 17; // UDP
    f[26..30].copy_from_slice(&gen_addr(x).octets());
    f[30..34].copy_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for i in (14..34).step_by(2) {
        sum += u32::from(u16::from_be_bytes([f[i], f[i + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&1024u16.to_be_bytes());
    f[36..38].copy_from_slice(&UDP_PORT.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    // UDP checksum 0 (none), payload zero.
    f
}

// ---------------------------------------------------------------- the generator program

/// The generator program: rewrites the whole 42-byte Ethernet/IPv4/UDP
/// header from a template (the frame it was built for), sets a random UDP
/// source port (`--ports` values from 1024 up) and returns XDP_TX.
///
/// Why not `gen` of `xlb::BENCH_OBJECT`: in live-frame mode the kernel resets
/// only the data pointers of a page recycled within one BPF_PROG_RUN call,
/// not its bytes, so a frame that a forwarder rewrote in place (xlb's NAT,
/// min_fwd, the kernel's DNAT: all zero-copy on veth) comes back to the
/// generator rewritten; `gen` only sets the source port and would resend it
/// addressed to a backend. One call per batch avoids the reuse but costs
/// ~20 ms per call here. `--generator bench-gen` still runs `gen`, to show it.
///
/// Loaded with the bpf(2) system call: a dozen instructions, built from the
/// template here because aya only loads programs from ELF objects.
mod rawbpf {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    use anyhow::{bail, Result};

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Insn {
        code: u8,
        regs: u8,
        off: i16,
        imm: i32,
    }

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, regs: dst | (src << 4), off, imm }
    }

    const LDX: u8 = 0x01;
    const ST: u8 = 0x02;
    const STX: u8 = 0x03;
    const JMP: u8 = 0x05;
    const ALU64: u8 = 0x07;
    const W: u8 = 0x00;
    const H: u8 = 0x08;
    const MEM: u8 = 0x60;
    const K: u8 = 0x00;
    const X: u8 = 0x08;
    const ALU: u8 = 0x04;
    const ADD: u8 = 0x00;
    const AND: u8 = 0x50;
    const END: u8 = 0xd0;
    const TO_BE: u8 = 0x08;
    const MOV: u8 = 0xb0;
    const JGT: u8 = 0x20;
    const CALL: u8 = 0x80;
    const EXIT: u8 = 0x90;
    const GET_PRANDOM_U32: i32 = 7;
    const HDR: usize = 42;
    const XDP_TX: i32 = 3;

    fn program(frame: &[u8], ports: u32) -> Vec<Insn> {
        let mut v = vec![
            insn(ALU64 | MOV | X, 6, 1, 0, 0),          // r6 = ctx
            insn(JMP | CALL, 0, 0, 0, GET_PRANDOM_U32), // r0 = random
            insn(ALU64 | MOV | X, 7, 0, 0, 0),          // r7 = r0
            insn(LDX | W | MEM, 2, 6, 0, 0),            // r2 = ctx->data
            insn(LDX | W | MEM, 3, 6, 4, 0),            // r3 = ctx->data_end
            insn(ALU64 | MOV | X, 4, 2, 0, 0),          // r4 = r2
            insn(ALU64 | ADD | K, 4, 0, 0, HDR as i32), // r4 += 42
        ];
        let jump_at = v.len();
        v.push(insn(JMP | JGT | X, 4, 3, 0, 0)); // if r4 > r3 goto abort (patched)
        for off in (0..40).step_by(4) {
            let imm = i32::from_ne_bytes([frame[off], frame[off + 1], frame[off + 2], frame[off + 3]]);
            v.push(insn(ST | W | MEM, 2, 0, off as i16, imm));
        }
        v.push(insn(ST | H | MEM, 2, 0, 40, i32::from(u16::from_ne_bytes([frame[40], frame[41]]))));
        v.push(insn(ALU64 | AND | K, 7, 0, 0, (ports - 1) as i32)); // r7 %= ports
        v.push(insn(ALU64 | ADD | K, 7, 0, 0, 1024)); // r7 += 1024
        v.push(insn(ALU | END | TO_BE, 7, 0, 0, 16)); // r7 = htons(r7)
        v.push(insn(STX | H | MEM, 2, 7, 34, 0)); // UDP source port
        v.push(insn(ALU64 | MOV | K, 0, 0, 0, XDP_TX));
        v.push(insn(JMP | EXIT, 0, 0, 0, 0));
        let abort = v.len();
        v[jump_at].off = (abort - jump_at - 1) as i16;
        v.push(insn(ALU64 | MOV | K, 0, 0, 0, 0)); // XDP_ABORTED
        v.push(insn(JMP | EXIT, 0, 0, 0, 0));
        v
    }

    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

    /// A loaded generator program.
    pub struct Generator {
        fd: OwnedFd,
        link: Option<OwnedFd>,
    }

    #[repr(C)]
    #[derive(Default)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        _rest: [u64; 6],
    }

    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_SKB_MODE: u32 = 2;

    impl Generator {
        /// `ports`: how many source ports (1024 up), a power of two <= 32768.
        pub fn load(frame: &[u8], ports: u32) -> Result<Generator> {
            if frame.len() < HDR {
                bail!("frame shorter than its headers");
            }
            if !ports.is_power_of_two() || ports > 32768 {
                bail!("--ports must be a power of two up to 32768");
            }
            let insns = program(frame, ports);
            let license = b"GPL\0";
            let mut log = vec![0u8; 1 << 16];
            let mut attr = ProgLoad {
                prog_type: BPF_PROG_TYPE_XDP,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level: 1,
                log_size: log.len() as u32,
                log_buf: log.as_mut_ptr() as u64,
                ..Default::default()
            };
            attr.prog_name[..7].copy_from_slice(b"fwd_gen");
            // SAFETY: attr points at valid instructions, license and log buffer that outlive the call.
            let fd =
                unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &raw mut attr, std::mem::size_of::<ProgLoad>()) };
            if fd < 0 {
                let err = std::io::Error::last_os_error();
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                bail!("loading the generator program: {err}\n{}", String::from_utf8_lossy(&log[..end]));
            }
            // SAFETY: a new fd we own.
            Ok(Generator { fd: unsafe { OwnedFd::from_raw_fd(fd as i32) }, link: None })
        }

        /// Attaches the program (generic XDP) to `ifindex` of the calling
        /// thread's namespace, a device that sees no traffic: attached, it
        /// stays in the kernel's XDP dispatcher, so test runs no longer swap
        /// it in and out (two RCU grace periods per call otherwise).
        pub fn attach_generic(&mut self, ifindex: u32) -> std::io::Result<()> {
            let mut attr = LinkCreate {
                prog_fd: self.fd.as_raw_fd() as u32,
                target_ifindex: ifindex,
                attach_type: BPF_XDP,
                flags: XDP_FLAGS_SKB_MODE,
                ..Default::default()
            };
            // SAFETY: attr is a valid link_create request.
            let fd = unsafe {
                libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, &raw mut attr, std::mem::size_of::<LinkCreate>())
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a new fd we own.
            self.link = Some(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            Ok(())
        }

        /// BPF_PROG_RUN in live-frame mode: `repeat` frames, `batch` per
        /// flush. Returns the kernel's time per frame (ns).
        pub fn run_live(&self, frame: &[u8], ctx: &[u8], repeat: u32, batch: u32) -> std::io::Result<u32> {
            let mut attr = TestRun {
                prog_fd: self.fd.as_raw_fd() as u32,
                data_size_in: frame.len() as u32,
                data_in: frame.as_ptr() as u64,
                repeat,
                ctx_size_in: ctx.len() as u32,
                ctx_in: ctx.as_ptr() as u64,
                flags: BPF_F_TEST_XDP_LIVE_FRAMES,
                batch_size: batch,
                ..Default::default()
            };
            // SAFETY: attr points at buffers that outlive the call; nothing is written back but attr.
            let r = unsafe {
                libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, std::mem::size_of::<TestRun>())
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(attr.duration)
        }
    }
}

// ---------------------------------------------------------------- the cases

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
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
struct Sample {
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

// ---------------------------------------------------------------- the bench

/// Everything we set up; fields drop in order: processes, programs, then
/// namespaces, pins and files.
struct Bench {
    plan: Plan,
    only: Vec<String>,
    nproc: usize,
    agent: Option<Proc>,
    nginx: Option<Proc>,
    servers: Option<Servers>,
    gen: Ebpf,
    xlb_bin: Option<PathBuf>,
    /// BPF run-time statistics on while held (`--bpf-stats`).
    stats_fd: Option<OwnedFd>,
    /// Programs whose run time is tracked: (label, program id).
    prog_ids: Vec<(&'static str, u32)>,
    /// Per case and program: (run time ns, runs) over the measured slices.
    bpf_costs: BTreeMap<(Case, &'static str), (u64, u64)>,
    /// Generator programs per case (`rawbpf`).
    gens: BTreeMap<Case, rawbpf::Generator>,
    min_fwd: Ebpf,
    ceiling_sink: Ebpf,
    /// One per backend (attached to its eth0 and eth1).
    sinks: Vec<Ebpf>,
    nft_rules: Option<PathBuf>,
    nft_loaded: bool,
    skipped: Vec<(String, String)>,
    notes: Vec<String>,
    /// Time left for measuring contended slices again.
    retry_budget: Duration,
    /// Slices measured again.
    retried: u32,
    /// Failed TCP connection attempts (each waited up to 1 s).
    tcp_failed: BTreeMap<Case, u64>,
    gen_ifindex: [u32; 4],
    lb: Ns,
    be: Vec<Ns>,
    gen_ns: Ns,
    pins: PathBuf,
    tmp: PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        if self.nft_loaded {
            let _ = self.nft(&["delete", "table", "ip", "xlbbench"]);
        }
        self.servers.take();
        self.nginx.take();
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        if self.pins.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pins) {
                eprintln!("forward_bench: cannot remove {}: {e}", self.pins.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
        // programs, then namespaces drop with the fields
    }
}

#[expect(clippy::ref_option, reason = "called with a field of the parsed arguments")]
fn xlb_binary(arg: &Option<PathBuf>) -> Result<PathBuf> {
    let p = if let Some(p) = arg {
        p.clone()
    } else if let Some(p) = std::env::var_os("XLB_BIN") {
        PathBuf::from(p)
    } else {
        let exe = std::env::current_exe()?;
        // target/<profile>/examples/forward_bench -> target/<profile>/xlb
        exe.parent().and_then(Path::parent).map(|d| d.join("xlb")).ok_or_else(|| anyhow!("cannot locate xlb"))?
    };
    if !p.is_file() {
        bail!("xlb binary {} not found: build it (`cargo build --release -p lb-userspace`) or pass --xlb", p.display());
    }
    Ok(p)
}

impl Bench {
    fn setup(plan: Plan, args: &Args) -> Result<Bench> {
        let nproc = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let prefix = format!("xlbt{}-fwd", std::process::id());
        let tmp = std::env::temp_dir().join(format!("{prefix}-tmp"));
        std::fs::create_dir_all(&tmp)?;
        let pins = PathBuf::from(format!("/sys/fs/bpf/{prefix}-pins"));
        progress("creating namespaces gen, lb, be0, be1 and their veths");
        let gen_ns = Ns::create(format!("{prefix}-gen"))?;
        let lb = Ns::create(format!("{prefix}-lb"))?;
        let be = vec![Ns::create(format!("{prefix}-be0"))?, Ns::create(format!("{prefix}-be1"))?];
        let mut b = Bench {
            plan,
            only: args.only.clone(),
            nproc,
            agent: None,
            nginx: None,
            servers: None,
            gen: load_bench("gen")?,
            gens: BTreeMap::new(),
            stats_fd: None,
            xlb_bin: None,
            prog_ids: Vec::new(),
            bpf_costs: BTreeMap::new(),
            min_fwd: load_bench("min_fwd")?,
            ceiling_sink: load_bench("sink")?,
            sinks: vec![load_bench("sink")?, load_bench("sink")?],
            nft_rules: None,
            nft_loaded: false,
            skipped: Vec::new(),
            notes: Vec::new(),
            tcp_failed: BTreeMap::new(),
            retry_budget: Duration::from_secs(if args.quick { 0 } else { args.retry_budget_s }),
            retried: 0,
            gen_ifindex: [0; 4],
            lb,
            be,
            gen_ns,
            pins,
            tmp,
        };
        b.build_links()?;
        b.attach_programs()?;
        b.start_agent(args)?;
        if args.no_nft {
            b.skipped.push(("nft_dnat".into(), "--no-nft".into()));
        } else if let Err(e) = b.prepare_nft() {
            b.skipped.push(("nft_dnat".into(), format!("{e:#}")));
        }
        if args.no_nginx || args.no_udp {
            if !args.no_udp {
                b.skipped.push(("nginx_udp_proxy".into(), "--no-nginx".into()));
            }
        } else if let Err(e) = b.start_nginx() {
            b.skipped.push(("nginx_udp_proxy".into(), format!("{e:#}")));
        }
        b.thread_napi()?;
        if args.bpf_stats {
            b.enable_bpf_stats()?;
        }
        Ok(b)
    }

    fn enable_bpf_stats(&mut self) -> Result<()> {
        self.stats_fd =
            Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?);
        let id = |e: &Ebpf, p: &str| -> Result<u32> { Ok(xdp_ref(e, p)?.info()?.id()) };
        self.prog_ids.push(("min_fwd", id(&self.min_fwd, "min_fwd")?));
        self.prog_ids.push(("sink", id(&self.sinks[0], "sink")?));
        self.prog_ids.push(("sink", id(&self.sinks[1], "sink")?));
        self.prog_ids.push(("sink", id(&self.ceiling_sink, "sink")?));
        let l1 = self.lb.ip(&["-d", "link", "show", "l1"])?;
        let xlb = l1
            .split_whitespace()
            .skip_while(|w| *w != "prog/xdp")
            .nth(2)
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| anyhow!("no XDP program id on l1: {l1}"))?;
        self.prog_ids.push(("xlb", xlb));
        self.notes.push(
            "--bpf-stats: kernel BPF run-time statistics were on (they add ~20-40 ns to every program run)".into(),
        );
        Ok(())
    }

    /// (run time ns, runs) per tracked label, summed over its programs.
    fn prog_stats(&self) -> BTreeMap<&'static str, (u64, u64)> {
        let mut out: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
        if self.prog_ids.is_empty() {
            return out;
        }
        for info in aya::programs::loaded_programs().flatten() {
            if let Some((label, _)) = self.prog_ids.iter().find(|(_, id)| *id == info.id()) {
                let e = out.entry(label).or_default();
                e.0 += info.run_time().as_nanos() as u64;
                e.1 += info.run_count();
            }
        }
        out
    }

    fn build_links(&mut self) -> Result<()> {
        let (g, lb) = (&self.gen_ns, &self.lb);
        lb.run(|| write_sysctl("net/ipv4/ip_forward", "1"))??;
        for x in 0..4u8 {
            let (gi, li) = (format!("g{x}"), format!("l{x}"));
            lb.ip(&[
                "link",
                "add",
                &li,
                "address",
                &mac_str(mac_l(x)),
                "type",
                "veth",
                "peer",
                "name",
                &gi,
                "address",
                &mac_str(mac_g(x)),
                "netns",
                &g.name,
            ])?;
            lb.ip(&["addr", "add", &format!("{}/24", lb_addr(x)), "dev", &li])?;
            g.ip(&["addr", "add", &format!("{}/24", gen_addr(x)), "dev", &gi])?;
            lb.ip(&["link", "set", &li, "up"])?;
            g.ip(&["link", "set", &gi, "up"])?;
            lb.ip(&[
                "neigh",
                "replace",
                &gen_addr(x).to_string(),
                "lladdr",
                &mac_str(mac_g(x)),
                "dev",
                &li,
                "nud",
                "permanent",
            ])?;
            g.ip(&[
                "neigh",
                "replace",
                &lb_addr(x).to_string(),
                "lladdr",
                &mac_str(mac_l(x)),
                "dev",
                &gi,
                "nud",
                "permanent",
            ])?;
        }
        // Devices without traffic (veth pairs left down: not every kernel has
        // `dummy`) that hold the generator programs in the XDP dispatcher
        // (see `rawbpf::Generator::attach_generic`): d0 .. d7.
        for d in (0..=Case::ALL.len()).step_by(2) {
            g.ip(&["link", "add", &format!("d{d}"), "type", "veth", "peer", "name", &format!("d{}", d + 1)])?;
        }
        for (vip, x) in [(VIP_SNAT, 1u8), (VIP_PRESERVE, 1), (VIP_NFT, 2), (VIP_PROXY, 2)] {
            g.ip(&["route", "add", &format!("{vip}/32"), "via", &lb_addr(x).to_string(), "dev", &format!("g{x}")])?;
        }
        for n in 0..4u8 {
            let i = (n % 2) as usize;
            let be = &self.be[i];
            let (bn, en) = (format!("b{n}"), if n < 2 { "eth0" } else { "eth1" });
            lb.ip(&[
                "link",
                "add",
                &bn,
                "address",
                &mac_str(mac_b(n)),
                "type",
                "veth",
                "peer",
                "name",
                en,
                "address",
                &mac_str(mac_be(n)),
                "netns",
                &be.name,
            ])?;
            lb.ip(&["addr", "add", &format!("{}/24", be_gw(n)), "dev", &bn])?;
            be.ip(&["addr", "add", &format!("{}/24", be_addr(n)), "dev", en])?;
            lb.ip(&["link", "set", &bn, "up"])?;
            be.ip(&["link", "set", en, "up"])?;
            // The sinks drop ARP: static neighbours both ways.
            lb.ip(&[
                "neigh",
                "replace",
                &be_addr(n).to_string(),
                "lladdr",
                &mac_str(mac_be(n)),
                "dev",
                &bn,
                "nud",
                "permanent",
            ])?;
            be.ip(&[
                "neigh",
                "replace",
                &be_gw(n).to_string(),
                "lladdr",
                &mac_str(mac_b(n)),
                "dev",
                en,
                "nud",
                "permanent",
            ])?;
            // Replies: xlb's clients via b0/b1 (through xlb), nft's via b2/b3.
            let client_net = if n < 2 { "10.200.1.0/24" } else { "10.200.2.0/24" };
            be.ip(&["route", "add", client_net, "via", &be_gw(n).to_string(), "dev", en])?;
        }
        lb.ip(&["addr", "add", &format!("{VIP_PROXY}/32"), "dev", "lo"])?;
        let ifs = ["l0", "l1", "l2", "l3", "b0", "b1", "b2", "b3"];
        lb.run(|| -> Result<()> {
            for i in ifs {
                write_sysctl(&format!("net/ipv4/conf/{i}/rp_filter"), "0")?;
            }
            Ok(())
        })??;
        self.gen_ifindex =
            g.run(|| -> Result<[u32; 4]> { Ok([ifindex("g0")?, ifindex("g1")?, ifindex("g2")?, ifindex("g3")?]) })??;
        Ok(())
    }

    fn attach_programs(&mut self) -> Result<()> {
        progress("attaching sink (backends, l3), min_fwd (l0); GRO on l2 (kernel paths)");
        if self.plan.bench_gen {
            let dummy = format!("d{}", Case::ALL.len());
            let p = xdp(&mut self.gen, "gen")?;
            self.gen_ns.run(|| p.attach(&dummy, XdpMode::Skb))?.context("attaching gen to a dummy device")?;
        }
        for (i, be) in self.be.iter().enumerate() {
            for ifname in ["eth0", "eth1"] {
                attach(be, &mut self.sinks[i], "sink", ifname)?;
            }
        }
        attach(&self.lb, &mut self.ceiling_sink, "sink", "l3")?;
        // min_fwd: rewrite to 10.1.<i>.2 out b<i>, like xlb's backends.
        let (b0, b1) = self.lb.run(|| -> Result<(u32, u32)> { Ok((ifindex("b0")?, ifindex("b1")?)) })??;
        {
            let mut conf = [0u8; 32];
            conf[0..4].copy_from_slice(&be_addr(0).octets());
            conf[4..8].copy_from_slice(&be_addr(1).octets());
            conf[8..14].copy_from_slice(&mac_be(0));
            conf[14..20].copy_from_slice(&mac_be(1));
            conf[20..26].copy_from_slice(&mac_b(0));
            conf[26..32].copy_from_slice(&mac_b(1));
            let mut fwd: Array<&mut MapData, [u8; 32]> =
                Array::try_from(self.min_fwd.map_mut("BENCH_FWD").ok_or_else(|| anyhow!("no BENCH_FWD"))?)?;
            fwd.set(0, conf, 0)?;
        }
        {
            let mut ports: DevMap<&mut MapData> =
                DevMap::try_from(self.min_fwd.map_mut("BENCH_PORTS").ok_or_else(|| anyhow!("no BENCH_PORTS"))?)?;
            // The devmap resolves ifindexes in the caller's namespace.
            self.lb.run(|| -> Result<()> {
                ports.set(0, b0, None, 0)?;
                ports.set(1, b1, None, 0)?;
                Ok(())
            })??;
        }
        attach(&self.lb, &mut self.min_fwd, "min_fwd", "l0")?;
        self.lb.run(|| set_gro("l2", true))??;
        Ok(())
    }

    /// CPU ticks (utime + stime) used so far by processes that are not part
    /// of the bench: not us or our children (agent, nginx master and
    /// workers, nft, ip), not the NAPI kthreads nor ksoftirqd.
    fn foreign_ticks(&self) -> u64 {
        let me = std::process::id() as i32;
        let mut ours: HashSet<i32> = [me].into_iter().collect();
        for p in [&self.agent, &self.nginx].into_iter().flatten() {
            ours.insert(p.child.id() as i32);
        }
        let mut total = 0;
        let Ok(rd) = std::fs::read_dir("/proc") else { return 0 };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let comm = &stat[open + 1..close];
            let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ppid: i32 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            if ours.contains(&pid)
                || ours.contains(&ppid)
                || comm.starts_with("napi/")
                || comm.starts_with("ksoftirqd/")
            {
                continue;
            }
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += t(11) + t(12);
        }
        total
    }

    /// `xlb stats -o json` (the CLI reads the pinned maps; empty on error).
    fn xlb_stats(&self) -> BTreeMap<String, u64> {
        let Some(bin) = &self.xlb_bin else { return BTreeMap::new() };
        let out =
            Command::new(bin).args(["stats", "-o", "json", "--pin-path"]).arg(&self.pins).stdin(Stdio::null()).output();
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<BTreeMap<String, Value>>(&o.stdout).ok())
            .map(|m| m.into_iter().filter_map(|(k, v)| v.as_u64().map(|n| (k, n))).collect())
            .unwrap_or_default()
    }

    fn start_agent(&mut self, args: &Args) -> Result<()> {
        let bin = xlb_binary(&args.xlb)?;
        self.xlb_bin = Some(bin.clone());
        let mut yaml = String::from("services:\n");
        let svc = |name: &str, vip: Ipv4Addr, port: u16, proto: &str, source: &str| {
            format!(
                "  - name: {name}\n    vip: {vip}\n    port: {port}\n    protocol: {proto}\n    source: {source}\n    backends:\n      - {}:{port}\n      - {}:{port}\n",
                be_addr(0),
                be_addr(1)
            )
        };
        yaml += &svc("udp-snat", VIP_SNAT, UDP_PORT, "udp", "snat");
        yaml += &svc("udp-preserve", VIP_PRESERVE, UDP_PORT, "udp", "preserve");
        for (port, what) in [(TCP_SETUP_PORT, "setup"), (TCP_RR_PORT, "rr")] {
            yaml += &svc(&format!("tcp-{what}-snat"), VIP_SNAT, port, "tcp", "snat");
            yaml += &svc(&format!("tcp-{what}-preserve"), VIP_PRESERVE, port, "tcp", "preserve");
        }
        let config = self.tmp.join("xlb.yaml");
        std::fs::write(&config, yaml)?;
        progress(&format!("starting {} agent in the lb namespace (l1, b0, b1; --xdp-transmit b0 b1)", bin.display()));
        let mut cmd = self.lb.command(&bin)?;
        cmd.arg("agent").arg("--config").arg(&config);
        for i in ["l1", "b0", "b1"] {
            cmd.args(["--interface", i]);
        }
        cmd.args(["--xdp-transmit", "b0", "--xdp-transmit", "b1", "--metrics-addr", "127.0.0.1:9464"]);
        cmd.arg("--pin-path").arg(&self.pins);
        cmd.args(&args.agent_args);
        let mut agent = Proc::spawn("xlb agent", cmd)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !agent.running() {
                bail!("the xlb agent exited during start; its log:\n{}", agent.log_tail());
            }
            let healthy = self
                .lb
                .run(|| http_status("127.0.0.1:9464".parse().unwrap(), "/healthz"))
                .ok()
                .and_then(std::result::Result::ok)
                == Some(200);
            if healthy {
                break;
            }
            if Instant::now() > deadline || stopped() {
                bail!("the xlb agent did not become healthy within 30 s; its log:\n{}", agent.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.agent = Some(agent);
        Ok(())
    }

    fn nft(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.lb.command("nft")?;
        cmd.args(args).stdin(Stdio::null());
        let out = cmd.output().context("cannot run nft (apt-get install nftables)")?;
        if !out.status.success() {
            bail!("nft {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// kube-proxy's nftables mode, reduced to its DNAT: service map ->
    /// numgen random -> endpoint chain -> dnat.
    fn prepare_nft(&mut self) -> Result<()> {
        let mut svc = String::new();
        let mut chains = String::new();
        for (proto, port) in [("udp", UDP_PORT), ("tcp", TCP_SETUP_PORT), ("tcp", TCP_RR_PORT)] {
            let s = format!("svc-{proto}-{port}");
            svc += &format!("{VIP_NFT} . {proto} . {port} : goto {s}, ");
            chains += &format!(
                "  chain {s} {{\n    numgen random mod 2 vmap {{ 0 : goto {s}-ep0, 1 : goto {s}-ep1 }}\n  }}\n"
            );
            for i in 0..2u8 {
                chains += &format!(
                    "  chain {s}-ep{i} {{\n    meta l4proto {proto} dnat to {}:{port}\n  }}\n",
                    be_addr(i + 2)
                );
            }
        }
        let rules = format!(
            "table ip xlbbench {{\n  map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n    elements = {{ {} }}\n  }}\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }}\n{chains}}}\n",
            svc.trim_end_matches(", ")
        );
        let path = self.tmp.join("nft.rules");
        std::fs::write(&path, rules)?;
        self.nft(&["-c", "-f", &path.display().to_string()]).context("checking the nft ruleset")?;
        self.nft_rules = Some(path);
        Ok(())
    }

    /// The DNAT table is loaded only while nftables is measured: loading
    /// it turns conntrack on in the lb namespace, which would tax nginx.
    fn nft_load(&mut self, on: bool) -> Result<()> {
        if on && !self.nft_loaded {
            let path = self.nft_rules.clone().ok_or_else(|| anyhow!("no nft rules"))?;
            self.nft(&["-f", &path.display().to_string()])?;
            self.nft_loaded = true;
        } else if !on && self.nft_loaded {
            self.nft(&["delete", "table", "ip", "xlbbench"])?;
            self.nft_loaded = false;
        }
        Ok(())
    }

    fn start_nginx(&mut self) -> Result<()> {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("nginx is not installed (apt-get install nginx libnginx-mod-stream)"))?;
        let v = Command::new(&nginx).arg("-V").output().context("nginx -V")?;
        let v = String::from_utf8_lossy(&v.stderr).to_string() + &String::from_utf8_lossy(&v.stdout);
        let load = if v.contains("--with-stream=dynamic") {
            let m = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"]
                .iter()
                .find(|p| Path::new(p).is_file())
                .ok_or_else(|| anyhow!("nginx's stream module is missing (apt-get install libnginx-mod-stream)"))?;
            format!("load_module {m};\n")
        } else if v.contains("--with-stream") {
            String::new()
        } else {
            bail!("this nginx has no stream module");
        };
        let dir = self.tmp.join("nginx");
        std::fs::create_dir_all(&dir)?;
        let affinity =
            if self.nproc > FWD_CPU { format!("worker_cpu_affinity {:b};\n", 1u64 << FWD_CPU) } else { String::new() };
        let conf = format!(
            "{load}daemon off;\nworker_processes 1;\n{affinity}worker_priority {BENCH_NICE};\nworker_rlimit_nofile 65536;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 16384; }}\n\
             stream {{\n  upstream backends {{ server {}:{UDP_PORT}; server {}:{UDP_PORT}; }}\n  \
             server {{\n    listen {VIP_PROXY}:{UDP_PORT} udp;\n    proxy_pass backends;\n    proxy_responses 0;\n    proxy_timeout 2s;\n  }}\n}}\n",
            be_addr(2),
            be_addr(3),
            d = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let args = |c: &mut Command| {
            c.arg("-p").arg(&dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&conf_path);
        };
        let mut t = self.lb.command(&nginx)?;
        args(&mut t);
        let out = t.arg("-t").stdin(Stdio::null()).output().context("nginx -t")?;
        if !out.status.success() {
            bail!("nginx -t refused the configuration: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        progress(&format!("starting nginx (stream, UDP {VIP_PROXY}:{UDP_PORT}, 1 worker) in the lb namespace"));
        let mut cmd = self.lb.command(&nginx)?;
        args(&mut cmd);
        let mut p = Proc::spawn("nginx", cmd)?;
        let pidfile = dir.join("nginx.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() {
            if !p.running() || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx did not start: {}\n{log}", p.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        self.nginx = Some(p);
        Ok(())
    }

    /// Threaded NAPI on l0..l3 with the kthreads pinned to the forwarder CPU.
    fn thread_napi(&mut self) -> Result<()> {
        if self.nproc <= FWD_CPU {
            self.notes.push(format!("only {} CPU: generator and forwarders share it (no pinning)", self.nproc));
            return Ok(());
        }
        let before = napi_threads();
        let threaded = ["l0", "l1", "l2", "l3"]
            .iter()
            .try_for_each(|i| self.lb.sh(&format!("echo 1 > /sys/class/net/{i}/threaded")).map(|_| ()));
        std::thread::sleep(Duration::from_millis(50));
        let new: Vec<i32> = napi_threads().difference(&before).copied().collect();
        if let Err(e) = threaded.and_then(|()| {
            if new.len() < 4 {
                bail!("expected 4 new NAPI kthreads for l0..l3, found {}", new.len());
            }
            Ok(())
        }) {
            self.notes.push(format!(
                "no threaded NAPI ({e:#}): the forwarders run in softirq on the CPU that queues the frames, the generator's; ratios only"
            ));
            return Ok(());
        }
        for pid in &new {
            set_affinity(*pid, &[FWD_CPU]).with_context(|| format!("pinning NAPI kthread {pid} to CPU {FWD_CPU}"))?;
            set_nice(*pid, BENCH_NICE);
        }
        self.notes.push(format!(
            "generator (BPF_PROG_RUN live frames) pinned to CPU {GEN_CPU}; l0..l3 use threaded NAPI, kthreads pinned to CPU {FWD_CPU}: \
             the forwarders and the backends' receive path they trigger run on CPU {FWD_CPU}; generator, NAPI kthreads and nginx's worker at nice {BENCH_NICE}"
        ));
        if self.nginx.is_some() {
            self.notes.push(format!(
                "nginx: 1 worker, worker_cpu_affinity CPU {FWD_CPU} (shares it with the kernel receive path)"
            ));
        }
        Ok(())
    }

    fn delivered(&self, case: Case) -> Result<(u64, u64)> {
        if case == Case::Ceiling {
            let c = count(&self.ceiling_sink)?;
            return Ok((c, c));
        }
        let a = count(&self.sinks[0])?;
        let b = count(&self.sinks[1])?;
        Ok((a + b, a))
    }

    /// Runs the generator toward `case` for `warmup + slice`; counts over the slice.
    fn udp_slice(&mut self, case: Case) -> Result<Sample> {
        if case == Case::Nft {
            self.nft_load(true)?;
        }
        let r = self.udp_slice_inner(case);
        if case == Case::Nft {
            self.nft_load(false)?;
        }
        r
    }

    fn udp_slice_inner(&mut self, case: Case) -> Result<Sample> {
        let (x, dst) = case.target();
        let frame = udp_frame(x, dst);
        let mut ctx = [0u8; 24]; // struct xdp_md
        ctx[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.gen_ifindex[x as usize].to_ne_bytes());
        let pin = (self.nproc > FWD_CPU).then_some(GEN_CPU);
        let batch = self.plan.batch;
        let frames_per_call = self.plan.frames_per_call;
        if !self.plan.bench_gen && !self.gens.contains_key(&case) {
            let mut g = rawbpf::Generator::load(&frame, self.plan.ports)?;
            let dummy = format!("d{}", self.gens.len());
            if let Err(e) = self.gen_ns.run(|| -> Result<()> { Ok(g.attach_generic(ifindex(&dummy)?)?) })? {
                self.notes.push(format!("generator not kept in the XDP dispatcher ({e:#}): each call waits for RCU"));
            }
            self.gens.insert(case, g);
        }
        let raw = self.gens.get(&case);
        let aya_gen = xdp_ref(&self.gen, "gen")?;
        let in_gen_ns = InNs::enter(&self.gen_ns, pin)?;
        // Returns the frames sent (each successful call sends `frames_per_call`).
        // Each call costs the kernel two RCU grace periods (it swaps the
        // program into the XDP dispatcher and back), during which nothing is
        // sent: calls are sized to ~CALL_SECS from the rate measured so far.
        let mut rate = 0.0f64;
        // Returns (frames sent, seconds the kernel spent sending them).
        let mut fire = |until: Instant| -> Result<(u64, f64)> {
            let (mut sent, mut busy) = (0u64, 0.0f64);
            loop {
                let now = Instant::now();
                if now >= until || stopped() {
                    break;
                }
                let left = (until - now).as_secs_f64();
                let repeat = if rate > 0.0 {
                    (rate * left.min(CALL_SECS)).clamp(1024.0, f64::from(1u32 << 24)) as u32
                } else {
                    frames_per_call
                };
                let r = match raw {
                    Some(g) => g.run_live(&frame, &ctx, repeat, batch).map_err(anyhow::Error::from),
                    None => aya_gen
                        .test_run(TestRunOptions {
                            data_in: Some(&frame),
                            ctx_in: Some(&ctx),
                            repeat,
                            attrs: TestRunAttrs::new().xdp_live_frames(batch),
                            ..Default::default()
                        })
                        .map(|r| r.duration.as_nanos() as u32)
                        .map_err(anyhow::Error::from),
                };
                match r {
                    Ok(ns) => {
                        sent += u64::from(repeat);
                        busy += f64::from(ns) * f64::from(repeat) / 1e9;
                        rate = f64::from(repeat) / now.elapsed().as_secs_f64();
                    }
                    Err(_) if stopped() => break,
                    Err(e) => return Err(e).context("BPF_PROG_RUN (live frames) of the generator"),
                }
            }
            Ok((sent, busy))
        };
        fire(Instant::now() + self.plan.warmup)?;
        let (d0, d00) = self.delivered(case)?;
        let p0 = self.prog_stats();
        let f0 = self.foreign_ticks();
        let t0 = Instant::now();
        let (offered, gen_busy) = fire(t0 + self.plan.slice)?;
        let secs = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(10)); // let the rings drain
        let (d1, d10) = self.delivered(case)?;
        let p1 = self.prog_stats();
        let foreign = self.foreign_ticks().saturating_sub(f0) as f64 / clock_ticks();
        drop(in_gen_ns);
        for (label, (ns, runs)) in p1 {
            let (ns0, runs0) = p0.get(label).copied().unwrap_or_default();
            if runs > runs0 {
                let e = self.bpf_costs.entry((case, label)).or_default();
                e.0 += ns - ns0;
                e.1 += runs - runs0;
            }
        }
        check_stop()?;
        Ok(Sample { offered, delivered: d1 - d0, delivered0: d10 - d00, secs, foreign, gen_busy })
    }

    fn udp_cases(&self) -> Vec<Case> {
        Case::ALL
            .into_iter()
            .filter(|c| self.only.is_empty() || self.only.iter().any(|o| o == c.key()))
            .filter(|c| match c {
                Case::Nft => self.nft_rules.is_some(),
                Case::Nginx => self.nginx.is_some(),
                _ => true,
            })
            .collect()
    }

    /// `runs` x `rounds` interleaved slices; returns per case the per-run sums.
    fn udp_phase(&mut self) -> Result<BTreeMap<Case, Vec<Sample>>> {
        let cases = self.udp_cases();
        let mut res: BTreeMap<Case, Vec<Sample>> = BTreeMap::new();
        let (runs, rounds) = (self.plan.runs, self.plan.rounds);
        for run in 0..runs {
            let mut per_run: BTreeMap<Case, Sample> = BTreeMap::new();
            for round in 0..rounds {
                // Rotate the order so no case always follows the same one.
                let k = (run * rounds + round) as usize % cases.len();
                for &case in cases[k..].iter().chain(&cases[..k]) {
                    let mut s = self.udp_slice(case)?;
                    // Another process took a share of the CPUs: measure the
                    // slice again, within a bounded budget per phase.
                    while s.foreign / (s.secs * self.nproc as f64) > CONTENDED && self.retry_budget > Duration::ZERO {
                        progress(&format!(
                            "{:<32} other processes used {:.0}% of the CPUs: measuring this slice again",
                            case.label(),
                            s.foreign / (s.secs * self.nproc as f64) * 100.0
                        ));
                        let t = Instant::now();
                        std::thread::sleep(Duration::from_secs(2));
                        s = self.udp_slice(case)?;
                        self.retry_budget = self.retry_budget.saturating_sub(t.elapsed());
                        self.retried += 1;
                    }
                    if case == Case::Nginx {
                        if let Some(p) = self.nginx.as_mut() {
                            if !p.running() {
                                bail!("nginx exited during the bench: {}", p.log_tail());
                            }
                        }
                    }
                    let other = s.foreign / (s.secs * self.nproc as f64);
                    progress(&format!(
                        "run {}/{runs} round {}/{rounds}  {:<32} offered {:>10}pps  delivered {:>10}pps  (generator busy {:.0}%){}",
                        run + 1,
                        round + 1,
                        case.label(),
                        fmt_pps(s.offered_pps()),
                        fmt_pps(s.delivered_pps()),
                        s.gen_busy / s.secs * 100.0,
                        if other > 0.05 { format!("  (other processes used {:.0}% of the CPUs)", other * 100.0) } else { String::new() }
                    ));
                    per_run.entry(case).or_default().add(s);
                }
            }
            for (c, s) in per_run {
                res.entry(c).or_default().push(s);
            }
        }
        Ok(res)
    }

    // ------------------------------------------------------------ TCP

    fn tcp_cases(&self) -> Vec<Case> {
        let mut v = vec![Case::XlbSnat, Case::XlbPreserve];
        if self.nft_rules.is_some() {
            v.push(Case::Nft);
        }
        v
    }

    /// Connection setup rate and request/response rate per case: per run,
    /// (connections/s, requests/s).
    fn tcp_phase(&mut self) -> Result<BTreeMap<Case, Vec<(f64, f64)>>> {
        // The sinks would drop TCP: detach them (dropping their objects);
        // GRO on the backends' eth0 keeps its NAPI on, so xlb's XDP_REDIRECT
        // into b0/b1 still lands.
        self.sinks.clear();
        for be in &self.be {
            be.run(|| -> Result<()> {
                set_gro("eth0", true)?;
                // The same NAPI hops on the kernel paths' links (b2/b3 <->
                // eth1) as on xlb's (b0/b1 run xlb's XDP, eth0 GRO).
                set_gro("eth1", true)
            })??;
        }
        self.lb.run(|| -> Result<()> {
            set_gro("b2", true)?;
            set_gro("b3", true)
        })??;
        self.servers = Some(start_servers(&self.be)?);
        let cases = self.tcp_cases();
        let mut res: BTreeMap<Case, Vec<(f64, f64)>> = BTreeMap::new();
        let (runs, rounds) = (self.plan.runs, self.plan.rounds);
        for run in 0..runs {
            let mut sums: BTreeMap<Case, (u64, f64, u64, f64)> = BTreeMap::new();
            for round in 0..rounds {
                let k = (run * rounds + round) as usize % cases.len();
                for &case in cases[k..].iter().chain(&cases[..k]) {
                    let (conns, csecs, reqs, rsecs) = loop {
                        if case == Case::Nft {
                            self.nft_load(true)?;
                        }
                        let f0 = self.foreign_ticks();
                        let t = Instant::now();
                        let r = self.tcp_slice(case);
                        let share = self.foreign_ticks().saturating_sub(f0) as f64
                            / clock_ticks()
                            / (t.elapsed().as_secs_f64() * self.nproc as f64);
                        if case == Case::Nft {
                            self.nft_load(false)?;
                        }
                        let r = r?;
                        if share <= CONTENDED || self.retry_budget == Duration::ZERO {
                            break r;
                        }
                        progress(&format!(
                            "TCP {:<28} other processes used {:.0}% of the CPUs: measuring this slice again",
                            case.label(),
                            share * 100.0
                        ));
                        std::thread::sleep(Duration::from_secs(2));
                        self.retry_budget = self.retry_budget.saturating_sub(t.elapsed());
                        self.retried += 1;
                    };
                    progress(&format!(
                        "run {}/{runs} round {}/{rounds}  TCP {:<26} {:>9.0} connections/s  {:>9.0} requests/s",
                        run + 1,
                        round + 1,
                        case.label(),
                        conns as f64 / csecs,
                        reqs as f64 / rsecs
                    ));
                    let e = sums.entry(case).or_default();
                    e.0 += conns;
                    e.1 += csecs;
                    e.2 += reqs;
                    e.3 += rsecs;
                }
            }
            for (c, (n, s, r, rs)) in sums {
                res.entry(c).or_default().push((n as f64 / s, r as f64 / rs));
            }
        }
        Ok(res)
    }

    /// One setup slice then one request/response slice toward `case`'s VIP,
    /// from the generator namespace (pinned like the generator).
    fn tcp_slice(&mut self, case: Case) -> Result<(u64, f64, u64, f64)> {
        let vip = match case {
            Case::XlbSnat => VIP_SNAT,
            Case::XlbPreserve => VIP_PRESERVE,
            Case::Nft => VIP_NFT,
            c => bail!("no TCP for {c:?}"),
        };
        let pin = (self.nproc > FWD_CPU).then_some(GEN_CPU);
        let _in = InNs::enter(&self.gen_ns, pin)?;
        let setup = SocketAddr::from((vip, TCP_SETUP_PORT));
        let connect = |until: Instant| -> (u64, u64) {
            let (mut ok, mut failed) = (0, 0);
            while Instant::now() < until && !stopped() {
                match TcpStream::connect_timeout(&setup, Duration::from_secs(1)) {
                    Ok(s) => {
                        // Close with RST: no TIME_WAIT, so the bench never runs out of ports.
                        let l = libc::linger { l_onoff: 1, l_linger: 0 };
                        // SAFETY: valid socket and option struct.
                        unsafe {
                            libc::setsockopt(
                                s.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&raw const l).cast(),
                                std::mem::size_of::<libc::linger>() as libc::socklen_t,
                            )
                        };
                        ok += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        };
        connect(Instant::now() + self.plan.warmup / 2);
        let t0 = Instant::now();
        let (conns, failed) = connect(t0 + self.plan.slice);
        let csecs = t0.elapsed().as_secs_f64();
        *self.tcp_failed.entry(case).or_default() += failed;
        check_stop()?;
        let rr = SocketAddr::from((vip, TCP_RR_PORT));
        let mut s = TcpStream::connect_timeout(&rr, Duration::from_secs(2))
            .with_context(|| format!("TCP connect to {rr} ({})", case.label()))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let req = [0x5au8; RR_BYTES];
        let mut resp = [0u8; RR_BYTES];
        let mut exchange = |until: Instant| -> Result<u64> {
            let mut n = 0;
            while Instant::now() < until && !stopped() {
                s.write_all(&req)?;
                s.read_exact(&mut resp)?;
                n += 1;
            }
            Ok(n)
        };
        exchange(Instant::now() + self.plan.warmup / 2).with_context(|| format!("TCP request/response via {rr}"))?;
        let t1 = Instant::now();
        let reqs = exchange(t1 + self.plan.slice).with_context(|| format!("TCP request/response via {rr}"))?;
        let rsecs = t1.elapsed().as_secs_f64();
        check_stop()?;
        Ok((conns, csecs, reqs, rsecs))
    }
}

// ---------------------------------------------------------------- TCP servers

struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("bad HTTP answer"))
}

/// In each backend namespace: port 80 accepts and closes (connection
/// setup), port 81 echoes (request/response).
fn start_servers(be: &[Ns]) -> Result<Servers> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for ns in be {
        let (setup, rr) = ns.run(|| -> std::io::Result<(TcpListener, TcpListener)> {
            Ok((TcpListener::bind(("0.0.0.0", TCP_SETUP_PORT))?, TcpListener::bind(("0.0.0.0", TCP_RR_PORT))?))
        })??;
        for (l, echo) in [(setup, false), (rr, true)] {
            // A deeper accept queue than std's 128: a full one drops SYNs,
            // and each costs the client a 1 s retransmission.
            // SAFETY: listen on our own listening socket.
            unsafe { libc::listen(l.as_raw_fd(), 4096) };
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || accept_loop(l, echo, stop)));
        }
    }
    Ok(Servers { stop, threads })
}

fn accept_loop(l: TcpListener, echo: bool, stop: Arc<AtomicBool>) {
    let _ = l.set_nonblocking(true);
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&raw mut pfd, 1, 50) };
        loop {
            match l.accept() {
                Ok((s, _)) if echo => {
                    let stop = stop.clone();
                    conns.push(std::thread::spawn(move || echo_conn(s, stop)));
                }
                Ok((s, _)) => drop(s),
                Err(_) => break,
            }
        }
        conns.retain(|c| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

fn echo_conn(mut s: TcpStream, stop: Arc<AtomicBool>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------- report

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_string());
    let vm = cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    json!({
        "cpu": model,
        "cpus": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "virtual_machine": vm,
        "kernel": kernel,
        "memory_gib": mem_gib,
    })
}

struct UdpRow {
    case: Case,
    offered: f64,
    delivered: f64,
    ratio_offered: f64,
    vs: BTreeMap<Case, f64>,
    backend0_share: f64,
    runs: Vec<Sample>,
}

/// Median over runs of the per-run ratio delivered(a) / delivered(b).
fn run_ratio(udp: &BTreeMap<Case, Vec<Sample>>, a: Case, b: Case) -> f64 {
    match (udp.get(&a), udp.get(&b)) {
        (Some(x), Some(y)) => median(x.iter().zip(y).map(|(x, y)| x.delivered_pps() / y.delivered_pps()).collect()),
        _ => f64::NAN,
    }
}

fn udp_rows(udp: &BTreeMap<Case, Vec<Sample>>) -> Vec<UdpRow> {
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

fn print_table(header: &[&str], rows: &[Vec<String>]) {
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

fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
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

const UDP_HEADER: [&str; 8] = [
    "forwarder",
    "offered pps",
    "delivered pps",
    "delivered/offered",
    "÷ min_fwd",
    "÷ nft DNAT",
    "÷ nginx",
    "backend 0/1",
];
const TCP_HEADER: [&str; 5] = ["path", "connections/s", "requests/s (1 conn)", "conn ÷ nft", "req ÷ nft"];

fn targets(udp: &BTreeMap<Case, Vec<Sample>>) -> Vec<(String, f64, f64)> {
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

fn main() {
    let args = Args::parse();
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    match real_main(args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("forward_bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn real_main(args: Args) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the forwarding bench needs root (network namespaces, XDP, BPF_PROG_RUN)");
    }
    let plan = Plan {
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        slice: Duration::from_millis(args.slice_ms.unwrap_or(if args.quick { 700 } else { 1000 }).max(50)),
        warmup: Duration::from_millis(args.warmup_ms.unwrap_or(if args.quick { 150 } else { 300 })),
        batch: args.batch,
        frames_per_call: args.frames_per_call,
        bench_gen: args.generator == "bench-gen",
        ports: args.ports,
    };
    let method = json!({
        "runs": plan.runs,
        "rounds_per_run": plan.rounds,
        "slice_ms": plan.slice.as_millis() as u64,
        "warmup_ms": plan.warmup.as_millis() as u64,
        "frame_bytes_on_wire": FRAME_LEN + 4,
        "live_frame_batch": plan.batch,
        "source_ports": if plan.bench_gen { 60000 } else { plan.ports },
        "generator": if plan.bench_gen { "gen (xlb::BENCH_OBJECT)" } else { "full-header rewrite (rawbpf)" },
        "generator_cpu": GEN_CPU,
        "forwarder_cpu": FWD_CPU,
    });
    let machine = machine();
    println!(
        "forwarding bench: {} runs x {} interleaved rounds, {} ms slices (+{} ms warm-up), 64-byte UDP frames, {} source ports",
        plan.runs,
        plan.rounds,
        plan.slice.as_millis(),
        plan.warmup.as_millis(),
        if plan.bench_gen { 60000 } else { plan.ports }
    );
    println!(
        "machine: {} ({} CPUs{}), kernel {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        if machine["virtual_machine"] == json!(true) { ", VM" } else { "" },
        machine["kernel"].as_str().unwrap_or("?")
    );
    cleanup_stale();
    let mut busy = cpu_busy(Duration::from_millis(500));
    if busy > 0.15 && args.wait_quiet > 0 {
        println!("the machine is {:.0}% busy: waiting up to {} s for it to quieten", busy * 100.0, args.wait_quiet);
        let deadline = Instant::now() + Duration::from_secs(args.wait_quiet);
        while busy > 0.15 && Instant::now() < deadline && !stopped() {
            busy = cpu_busy(Duration::from_secs(1));
        }
        check_stop()?;
    }
    let busy_note = (busy > 0.15).then(|| {
        format!(
            "the machine was {:.0}% busy before the bench started: other work competes with the generator and the forwarders, expect noisier numbers",
            busy * 100.0
        )
    });
    if let Some(n) = &busy_note {
        println!("warning: {n}");
    }
    let started = Instant::now();
    let mut bench = Bench::setup(plan, &args)?;
    let mut xlb_counters = serde_json::Map::new();
    let s0 = bench.xlb_stats();
    let udp = if args.no_udp {
        BTreeMap::new()
    } else {
        println!("UDP flood (the generator's frames, counted by XDP_DROP sinks on the backends):");
        bench.udp_phase()?
    };
    let s1 = bench.xlb_stats();
    let tcp = if args.no_tcp {
        BTreeMap::new()
    } else {
        println!("TCP (one client in the generator namespace, sequential):");
        bench.tcp_phase()?
    };
    let s2 = bench.xlb_stats();
    for (phase, a, b, ran) in [("udp", &s0, &s1, !args.no_udp), ("tcp", &s1, &s2, !args.no_tcp)] {
        if !ran {
            continue;
        }
        let d = counter_delta(a, b);
        let bad: Vec<String> = d
            .iter()
            .filter(|(k, v)| **v > 0 && (k.starts_with("drop_") || k.ends_with("_failed") || k.starts_with("reject_")))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !bad.is_empty() {
            bench.notes.push(format!("xlb counters during the {phase} phase: {}", bad.join(", ")));
        }
        xlb_counters.insert(phase.into(), json!(d));
    }
    let bpf_costs = std::mem::take(&mut bench.bpf_costs);
    let skipped = std::mem::take(&mut bench.skipped);
    let nproc = bench.nproc as f64;
    let tcp_failed = bench.tcp_failed.clone();
    let bench_retried = bench.retried;
    let mut notes = std::mem::take(&mut bench.notes);
    notes.extend(busy_note);
    if bench_retried > 0 {
        notes.push(format!(
            "{bench_retried} slice(s) were measured again because other processes used over 10% of the CPUs"
        ));
    }
    let (foreign, cpu_secs) = udp.values().flatten().fold((0.0, 0.0), |(f, c), s| (f + s.foreign, c + s.secs * nproc));
    let foreign_share = if cpu_secs > 0.0 { foreign / cpu_secs } else { 0.0 };
    if foreign_share > 0.03 {
        notes.push(format!(
            "other processes used {:.0}% of the CPUs during the measured UDP slices (they compete with the generator and the forwarders)",
            foreign_share * 100.0
        ));
    }
    for (c, n) in &bench.tcp_failed {
        if *n > 0 {
            notes.push(format!("TCP {}: {n} connection attempt(s) failed or timed out (1 s each)", c.label()));
        }
    }
    progress("cleaning up (agent, nginx, programs, namespaces)");
    drop(bench);

    // ---- UDP table
    let rows = udp_rows(&udp);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let vs = |c: Case| r.vs.get(&c).map_or_else(|| "-".into(), |v| fmt_ratio(*v));
            vec![
                r.case.label().to_string(),
                fmt_pps(r.offered),
                fmt_pps(r.delivered),
                format!("{:.3}", r.ratio_offered),
                vs(Case::MinFwd),
                vs(Case::Nft),
                vs(Case::Nginx),
                if r.case == Case::Ceiling {
                    "-".into()
                } else {
                    format!("{:.0}/{:.0}%", r.backend0_share * 100.0, (1.0 - r.backend0_share) * 100.0)
                },
            ]
        })
        .collect();
    let tcp_rows: Vec<Vec<String>> = tcp
        .iter()
        .map(|(c, runs)| {
            let vs = |i: usize| match tcp.get(&Case::Nft) {
                Some(n) if *c != Case::Nft => fmt_ratio(median(
                    runs.iter().zip(n).map(|(a, b)| if i == 0 { a.0 / b.0 } else { a.1 / b.1 }).collect(),
                )),
                _ => "-".into(),
            };
            vec![
                c.label().to_string(),
                format!("{:.0}", median(runs.iter().map(|r| r.0).collect())),
                format!("{:.0}", median(runs.iter().map(|r| r.1).collect())),
                vs(0),
                vs(1),
            ]
        })
        .collect();
    let tg = targets(&udp);

    println!();
    println!("==> forwarding summary (median of {} runs; ratios are medians of per-run ratios)", plan_runs(&method));
    if !udp.is_empty() {
        print_table(&UDP_HEADER, &cells);
    }
    if !tcp.is_empty() {
        println!();
        print_table(&TCP_HEADER, &tcp_rows);
    }
    if !tg.is_empty() {
        println!();
        println!("targets:");
        for (what, target, v) in &tg {
            println!(
                "  {what:<34} {:>8}  (target >= {target}x)  {}",
                fmt_ratio(*v),
                if *v >= *target { "met" } else { "NOT met" }
            );
        }
    }
    if !bpf_costs.is_empty() {
        println!();
        println!("XDP program cost per run (kernel BPF statistics, measured slices):");
        let mut last = None;
        for ((c, label), (ns, runs)) in &bpf_costs {
            if last != Some(*c) {
                print!("{}{:<32}", if last.is_some() { "\n" } else { "" }, c.label());
                last = Some(*c);
            }
            print!("  {label} {:.0} ns", *ns as f64 / *runs as f64);
        }
        println!();
    }
    for (c, why) in &skipped {
        println!("skipped {c}: {why}");
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());

    let report = json!({
        "benchmark": "forward",
        "machine": machine,
        "method": method,
        "udp": rows.iter().map(|r| json!({
            "case": r.case.key(),
            "label": r.case.label(),
            "offered_pps": num(r.offered),
            "delivered_pps": num(r.delivered),
            "delivered_over_offered": num(r.ratio_offered),
            "vs_min_fwd": r.vs.get(&Case::MinFwd).copied().map_or(Value::Null, num),
            "vs_nft_dnat": r.vs.get(&Case::Nft).copied().map_or(Value::Null, num),
            "vs_nginx_udp_proxy": r.vs.get(&Case::Nginx).copied().map_or(Value::Null, num),
            "backend0_share": num(r.backend0_share),
            "other_processes_cpu_share": num(median(r.runs.iter().map(|s| s.foreign / (s.secs * nproc)).collect())),
            "generator_busy_share": num(median(r.runs.iter().map(|s| s.gen_busy / s.secs).collect())),
            "runs": r.runs.iter().map(|s| json!({"offered_pps": num(s.offered_pps()), "delivered_pps": num(s.delivered_pps()), "seconds": num(s.secs)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "tcp": tcp.iter().map(|(c, runs)| json!({
            "case": c.key(),
            "label": c.label(),
            "connections_per_s": num(median(runs.iter().map(|r| r.0).collect())),
            "requests_per_s": num(median(runs.iter().map(|r| r.1).collect())),
            "failed_connection_attempts": tcp_failed.get(c).copied().unwrap_or(0),
            "runs": runs.iter().map(|r| json!({"connections_per_s": num(r.0), "requests_per_s": num(r.1)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "targets": tg.iter().map(|(w, t, v)| json!({"ratio": w, "target": t, "value": num(*v), "met": *v >= *t})).collect::<Vec<_>>(),
        "xlb_counters": xlb_counters,
        "other_processes_cpu_share": num(foreign_share),
        "bpf_ns_per_run": bpf_costs.iter().fold(serde_json::Map::new(), |mut m, ((c, label), (ns, runs))| {
            let e = m.entry(c.key().to_string()).or_insert_with(|| json!({}));
            e[*label] = num(*ns as f64 / *runs as f64);
            m
        }),
        "skipped": skipped.iter().map(|(c, w)| json!({"case": c, "reason": w})).collect::<Vec<_>>(),
        "notes": notes,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!();
    println!("JSON:");
    println!("{text}");
    if let Some(p) = &args.json {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.markdown {
        let mut md = String::new();
        md += &format!(
            "Machine: {} ({} CPUs{}), kernel {}. {} runs x {} interleaved rounds of {} ms slices (+{} ms warm-up); medians.\n\n",
            report["machine"]["cpu"].as_str().unwrap_or("?"),
            report["machine"]["cpus"],
            if report["machine"]["virtual_machine"] == json!(true) { ", VM" } else { "" },
            report["machine"]["kernel"].as_str().unwrap_or("?"),
            report["method"]["runs"],
            report["method"]["rounds_per_run"],
            report["method"]["slice_ms"],
            report["method"]["warmup_ms"],
        );
        if !udp.is_empty() {
            md += &markdown_table(&UDP_HEADER, &cells);
        }
        if !tcp.is_empty() {
            md += "\n";
            md += &markdown_table(&TCP_HEADER, &tcp_rows);
        }
        if !tg.is_empty() {
            md += "\n| target | value | target | met |\n|---|---:|---:|---|\n";
            for (w, t, v) in &tg {
                md += &format!("| {w} | {} | ≥ {t}x | {} |\n", fmt_ratio(*v), if *v >= *t { "yes" } else { "**no**" });
            }
        }
        for (c, why) in &skipped {
            md += &format!("\nSkipped {c}: {why}\n");
        }
        std::fs::write(p, md).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Share of all CPUs' time not idle over `dur` (from /proc/stat).
fn cpu_busy(dur: Duration) -> f64 {
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

fn counter_delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter().map(|(k, v)| (k.clone(), v.saturating_sub(a.get(k).copied().unwrap_or(0)))).collect()
}

fn plan_runs(method: &Value) -> u64 {
    method["runs"].as_u64().unwrap_or(0)
}
