//! `cargo xtask bench datapath` runs this (release build, as root): the
//! per-packet cost of the XDP program `xlb_xdp` for each packet class,
//! measured with `BPF_PROG_TEST_RUN`, next to the minimal forwarder
//! (`min_fwd` of the bench object) on the same machine.
//!
//! Method. With `repeat > 1` (not live) the kernel runs the program again
//! and again on the same buffer, so a plain large repeat would time the
//! packet the previous iteration already rewrote (which no longer matches
//! the VIP). Each iteration therefore runs the bench object's `harness`
//! program: it copies the class's template frame over the packet (new-flow
//! classes also get a new source port and address, checksums adjusted) and
//! tail-calls the program under test through a prog array. The same
//! harness tail-calling `harness_nop` (returns at once) is timed in the same
//! run, interleaved round by round, and subtracted: *raw* is harness +
//! program, *net* is raw − baseline. Every timed iteration is checked: the
//! verdict of the last one, and the global counters of the data path, which
//! must have moved by exactly `repeat` on the class's own path and nowhere
//! else.
//!
//! Setup: a network namespace with a veth pair v0/v1 (addresses, static
//! neighbours, forwarding on) so that `bpf_fib_lookup` answers; the maps are
//! pinned in a directory of their own and programmed through the agent's
//! `MapWriter`; both interfaces are marked XDP_TX/XDP_REDIRECT capable, so
//! forwarded classes end in XDP_REDIRECT (as the minimal forwarder does).
//! Everything is removed at exit.
//!
//! Usage: `datapath_bench [--repeat N] [--rounds N] [--flow-entries N]
//! [--backends N] [--cpu N] [--json FILE] [--tiny]`.
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
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
    bpf::view::MapsView,
    state::model::{BackendSpec, DesiredState, Protocol, ServiceSpec, SourceMode},
    state::writer::MapWriter,
};

#[derive(Parser, Debug, Clone)]
#[command(about = "Per-packet cost of xlb's XDP program (BPF_PROG_TEST_RUN, frame-restoring harness)")]
struct Opts {
    /// Iterations per timed run.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Timed rounds per class (the median is reported), after one warm-up round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Entries of the connection and reverse-NAT tables (the agent's --flow-table-size).
    #[arg(long, default_value_t = 1 << 20)]
    flow_entries: u32,
    /// Backends per service (each with its own port, so SNAT has 20000 ports per backend).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=20000))]
    backends: u16,
    /// Pin the measuring thread to this CPU (default: the first allowed).
    #[arg(long)]
    cpu: Option<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the summary (Markdown) to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Only the classes whose name contains this (case-insensitive), e.g. "udp established".
    #[arg(long)]
    only: Option<String>,
    /// Tiny configuration for the test suite: repeat 1000, 1 round, 4096 flow entries, 4 backends.
    #[arg(long)]
    tiny: bool,
}

/// Set by SIGINT/SIGTERM: stop measuring, clean up, exit.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn catch_signals() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn stopped() -> Result<()> {
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "?",
    }
}

// ---------------------------------------------------------------------------
// Topology (the same as the data-path tests': lb-userspace/tests/datapath/harness.rs)
// ---------------------------------------------------------------------------

const V0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa0];
const V1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];
const CLIENT4: &str = "10.100.0.10";
const CLIENT6: &str = "fd00:100::10";
const CLIENT4_MAC: [u8; 6] = [0x02, 0, 0, 0x64, 0x00, 0x0a];
const CLIENT6_MAC: [u8; 6] = [0x02, 0, 0, 0x64, 0x06, 0x10];
const BACKEND4: &str = "10.2.0.5";
const BACKEND6: &str = "fd00:2::5";
const BACKEND4_MAC: [u8; 6] = [0x02, 0, 0, 0x02, 0x00, 0x05];
const BACKEND6_MAC: [u8; 6] = [0x02, 0, 0, 0x02, 0x06, 0x05];
const VIP4: &str = "192.0.2.10";
const VIP4_PRESERVE: &str = "192.0.2.11";
const VIP6: &str = "2001:db8::10";
const BACKEND_PORT: u16 = 10000;

#[expect(clippy::trivially_copy_pass_by_ref, reason = "MAC addresses are passed by reference throughout")]
fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn setup_commands() -> String {
    let mut c: Vec<String> = [
        "link set lo up",
        "link add v0 address 02:00:00:00:00:a0 type veth peer name v1 address 02:00:00:00:00:a1",
        "link set v0 up",
        "link set v1 up",
        "addr add 10.1.0.1/24 dev v0",
        "addr add 10.100.0.1/24 dev v0",
        "addr add fd00:1::1/64 dev v0 nodad",
        "addr add fd00:100::1/64 dev v0 nodad",
        "addr add 10.2.0.1/24 dev v1",
        "addr add fd00:2::1/64 dev v1 nodad",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    for (ip, m, dev) in [
        (CLIENT4, CLIENT4_MAC, "v0"),
        (CLIENT6, CLIENT6_MAC, "v0"),
        (BACKEND4, BACKEND4_MAC, "v1"),
        (BACKEND6, BACKEND6_MAC, "v1"),
    ] {
        c.push(format!("neigh add {ip} lladdr {} dev {dev} nud permanent", mac_str(&m)));
    }
    c.join("\n") + "\n"
}

fn sh(args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::io::Write as _;
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().with_context(|| format!("running {} (is iproute2 installed?)", args[0]))?;
    if let Some(text) = stdin {
        child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

const NETNS_PREFIX: &str = "xlbbench-dp-";
const PIN_PREFIX: &str = "/sys/fs/bpf/xlb-bench-dp-";

/// The namespace and the pin directory, removed on drop (also on panic).
struct Cleanup {
    netns: String,
    pin: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.netns], None);
        let _ = std::fs::remove_dir_all(&self.pin);
    }
}

/// Removes namespaces and pin directories of earlier runs that were killed.
fn cleanup_stale() {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = name.strip_prefix(NETNS_PREFIX) {
                if !alive(pid) {
                    let _ = sh(&["ip", "netns", "del", name], None);
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for e in dir.flatten() {
            let path = e.path();
            if let Some(pid) = path.to_str().and_then(|p| p.strip_prefix(PIN_PREFIX)) {
                if !alive(pid) {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }
}

fn ensure_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "));
    if !mounted {
        std::fs::create_dir_all("/sys/fs/bpf")?;
        sh(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], None)?;
    }
    Ok(())
}

fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: valid namespace fd; only this thread changes namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `cpu` (default: the first allowed CPU), so
/// per-CPU maps, LRU lists and caches stay on one CPU. Returns the CPU.
fn pin_thread(cpu: Option<usize>) -> Result<usize> {
    // SAFETY: plain libc calls with valid buffers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) != 0 {
            bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        let cpu = match cpu {
            Some(c) => c,
            None => (0..libc::CPU_SETSIZE as usize).find(|c| libc::CPU_ISSET(*c, &set)).context("no CPU allowed")?,
        };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const one) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
        Ok(cpu)
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum L4 {
    Udp,
    Tcp(u8),
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const PAYLOAD: &[u8] = b"xlb-bench-payload!"; // 18 bytes: a 64-byte IPv4/UDP frame

/// A frame and the offsets the harness needs.
#[derive(Clone)]
struct Frame {
    bytes: Vec<u8>,
    sport_off: u32,
    saddr_off: u32,
    l4_csum_off: u32,
    ip_csum_off: u32,
}

fn sum(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Ethernet + IPv4/IPv6 + UDP/TCP with correct checksums.
fn frame(smac: [u8; 6], dmac: [u8; 6], src: SocketAddr, dst: SocketAddr, l4: L4) -> Frame {
    let proto = match l4 {
        L4::Udp => 17u8,
        L4::Tcp(_) => 6,
    };
    let mut seg = Vec::new();
    seg.extend_from_slice(&src.port().to_be_bytes());
    seg.extend_from_slice(&dst.port().to_be_bytes());
    match l4 {
        L4::Udp => {
            seg.extend_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
        }
        L4::Tcp(flags) => {
            seg.extend_from_slice(&0x1000_0000u32.to_be_bytes());
            seg.extend_from_slice(&(if flags & TCP_ACK != 0 { 0x2000_0000u32 } else { 0 }).to_be_bytes());
            seg.push(5 << 4);
            seg.push(flags);
            seg.extend_from_slice(&64240u16.to_be_bytes());
            seg.extend_from_slice(&[0, 0, 0, 0]);
        }
    }
    seg.extend_from_slice(PAYLOAD);
    let csum_in_seg = if l4 == L4::Udp { 6 } else { 16 };
    let (sa, da): (Vec<u8>, Vec<u8>) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        _ => panic!("mixed address families"),
    };
    let pseudo = sum(sum(0, &sa), &da) + u64::from(proto) + seg.len() as u64;
    let mut c = !fold(sum(pseudo, &seg));
    if c == 0 && l4 == L4::Udp {
        c = 0xffff;
    }
    seg[csum_in_seg..csum_in_seg + 2].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::new();
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    let v4 = src.is_ipv4();
    let (l4_off, ip_csum_off, saddr_end) = if v4 {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let l3 = f.len();
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
        f.extend_from_slice(&sa);
        f.extend_from_slice(&da);
        let c = !fold(sum(0, &f[l3..l3 + 20]));
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        (l3 + 20, l3 + 10, l3 + 16)
    } else {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let l3 = f.len();
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend_from_slice(&sa);
        f.extend_from_slice(&da);
        (l3 + 40, 0, l3 + 24)
    };
    f.extend_from_slice(&seg);
    Frame {
        bytes: f,
        sport_off: l4_off as u32,
        saddr_off: (saddr_end - 2) as u32,
        l4_csum_off: (l4_off + csum_in_seg) as u32,
        ip_csum_off: ip_csum_off as u32,
    }
}

/// (source, destination) of an output frame.
fn tuple_of(f: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0800 => {
            let ip = |o: usize| -> Option<IpAddr> { Some(IpAddr::from(<[u8; 4]>::try_from(f.get(o..o + 4)?).ok()?)) };
            let port = |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?])) };
            Some((SocketAddr::new(ip(26)?, port(34)?), SocketAddr::new(ip(30)?, port(36)?)))
        }
        0x86dd => {
            let ip = |o: usize| -> Option<IpAddr> { Some(IpAddr::from(<[u8; 16]>::try_from(f.get(o..o + 16)?).ok()?)) };
            let port = |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?])) };
            Some((SocketAddr::new(ip(22)?, port(54)?), SocketAddr::new(ip(38)?, port(56)?)))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The harness maps (mirrors of lb-ebpf/src/bin/xlb-bench.rs)
// ---------------------------------------------------------------------------

const TEMPLATE_MAX: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
struct Template {
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
struct FwdConf {
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
enum Target {
    /// `xlb_xdp` of the data-path object.
    Xlb,
    /// A program of the bench object (`min_fwd`, `harness_nop`, `stage_*`).
    Bench(&'static str),
}

const NOP: Target = Target::Bench("harness_nop");
const MIN_FWD: Target = Target::Bench("min_fwd");
const BENCH_PROGRAMS: [&str; 12] = [
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
struct FibConf {
    family: u32,
    src: [u32; 4],
    dst: [u32; 4],
}
// SAFETY: as above.
unsafe impl aya::Pod for FibConf {}

fn fib_conf(src: &str, dst: &str) -> FibConf {
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

/// One measured class.
#[derive(Clone, Debug, serde::Serialize)]
struct Row {
    class: String,
    verdict: String,
    ok: bool,
    problem: Option<String>,
    /// Something worth knowing that is not a failure.
    note: Option<String>,
    /// "class" (a packet class through xlb_xdp or min_fwd) or "stage" (one
    /// operation of the data path alone).
    kind: &'static str,
    /// Median over rounds, ns per packet.
    raw_ns: u64,
    base_ns: u64,
    net_ns: i64,
    raw_min_ns: u64,
    raw_max_ns: u64,
    /// Target (net ns) from the issue, and Katran's figure, when there is one.
    target_net_ns: Option<u64>,
    katran_net_ns: Option<u64>,
}

#[expect(clippy::struct_field_names, reason = "`bench` is the benchmark programs' object, beside `xlb`'s")]
struct Bench {
    opts: Opts,
    xlb: Ebpf,
    /// The writer that programmed the services, kept for the bench's life.
    _writer: MapWriter,
    view: MapsView,
    bench: Ebpf,
    progs: ProgramArray<MapData>,
    template: Array<MapData, Template>,
    fib: Array<MapData, FibConf>,
    v0: u32,
    v1: u32,
    rows: Vec<Row>,
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn backends_of(ip: &str, n: u16) -> Vec<BackendSpec> {
    (0..n).map(|i| BackendSpec { addr: SocketAddr::new(ip.parse().unwrap(), BACKEND_PORT + i), weight: 1 }).collect()
}

fn spec(
    name: &str,
    vip: &str,
    port: u16,
    protocol: Protocol,
    source: SourceMode,
    backends: Vec<BackendSpec>,
) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        vip: vip.parse().unwrap(),
        port,
        protocol,
        source,
        snat_address: None,
        udp_timeout: None,
        tcp_timeout: None,
        maglev_table_size: None,
        affinity_timeout: None,
        source_ranges: vec![],
        backends,
    }
}

impl Bench {
    fn new(opts: Opts, pin: &Path) -> Result<Self> {
        // The data path, as the agent loads it, with its maps programmed.
        let mut xlb = xlb::bpf::datapath::load(pin, opts.flow_entries).context("loading the data path")?;
        let xdp: &mut Xdp = xlb.program_mut("xlb_xdp").context("program xlb_xdp")?.try_into()?;
        xdp.load().context("loading xlb_xdp")?;
        let maps = Maps::take(&mut xlb).context("taking the maps")?;
        let mut writer = MapWriter::restore(maps, 0).context("MapWriter::restore")?;
        let b = opts.backends;
        let state = DesiredState {
            services: vec![
                spec("udp4", VIP4, 53, Protocol::Udp, SourceMode::Snat, backends_of(BACKEND4, b)),
                spec("tcp4", VIP4, 80, Protocol::Tcp, SourceMode::Snat, backends_of(BACKEND4, b)),
                spec("udp6", VIP6, 53, Protocol::Udp, SourceMode::Snat, backends_of(BACKEND6, b)),
                spec("tcp6", VIP6, 80, Protocol::Tcp, SourceMode::Snat, backends_of(BACKEND6, b)),
                spec("udp4-preserve", VIP4_PRESERVE, 53, Protocol::Udp, SourceMode::Preserve, backends_of(BACKEND4, b)),
            ],
        };
        writer.apply(&state).context("programming the services")?;
        let v0 = xlb::host::iface::ifindex("v0")?;
        let v1 = xlb::host::iface::ifindex("v1")?;
        for i in [v0, v1] {
            writer.set_interface_caps(i, IF_F_TX | IF_F_REDIRECT)?;
        }
        // No flood guard: every new flow takes the insert path.
        writer.set_settings(lb_common::settings::Settings { new_flows_per_cpu: 0, node_tag: 0 })?;
        // The counters, read through a read-only view like the CLI's.
        let view = MapsView::open_pinned(pin).context("opening the maps read-only")?;

        // The bench object: harness, baseline, minimal forwarder.
        let mut bench = aya::EbpfLoader::new()
            .map_max_entries("BENCH_LRU_INS", opts.flow_entries)
            .map_max_entries("BENCH_PCPU_LRU_INS", opts.flow_entries)
            .map_max_entries("BENCH_HASH_INS", opts.flow_entries)
            .map_max_entries("BENCH_BUCKETS", 1 << 20)
            .load(xlb::BENCH_OBJECT)
            .context("loading the bench object")?;
        for name in BENCH_PROGRAMS {
            let p: &mut Xdp = bench.program_mut(name).with_context(|| format!("program {name}"))?.try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let mut fwd: Array<MapData, FwdConf> = bench.take_map("BENCH_FWD").context("BENCH_FWD")?.try_into()?;
        let b4: std::net::Ipv4Addr = BACKEND4.parse()?;
        fwd.set(0, FwdConf { backend: [b4.octets(); 2], dmac: [BACKEND4_MAC; 2], smac: [V1_MAC; 2] }, 0)?;
        let mut ports: DevMap<MapData> = bench.take_map("BENCH_PORTS").context("BENCH_PORTS")?.try_into()?;
        ports.set(0, v1, None, 0)?;
        ports.set(1, v1, None, 0)?;
        let progs: ProgramArray<MapData> = bench.take_map("BENCH_PROGS").context("BENCH_PROGS")?.try_into()?;
        let template: Array<MapData, Template> =
            bench.take_map("BENCH_TEMPLATE").context("BENCH_TEMPLATE")?.try_into()?;
        let fib: Array<MapData, FibConf> = bench.take_map("BENCH_FIB").context("BENCH_FIB")?.try_into()?;
        let mut hash: aya::maps::HashMap<MapData, [u32; 5], u64> =
            bench.take_map("BENCH_HASH").context("BENCH_HASH")?.try_into()?;
        hash.insert([1, 2, 3, 4, 5], 1, 0)?;
        let mut lru: aya::maps::HashMap<MapData, [u64; 5], u64> =
            bench.take_map("BENCH_LRU").context("BENCH_LRU")?.try_into()?;
        lru.insert([1, 2, 3, 4, 5], 1, 0)?;
        // The maps taken out may close: the programs keep theirs referenced.
        Ok(Bench { opts, xlb, _writer: writer, view, bench, progs, template, fib, v0, v1, rows: Vec::new() })
    }

    fn set_target(&mut self, t: Target) -> Result<()> {
        let prog: &Xdp = match t {
            Target::Xlb => self.xlb.program("xlb_xdp"),
            Target::Bench(name) => self.bench.program(name),
        }
        .context("program")?
        .try_into()?;
        self.progs
            .set(0, prog.fd()?, 0)
            .with_context(|| format!("putting {t:?} into the harness's prog array (tail call across objects)"))?;
        Ok(())
    }

    fn set_template(&mut self, f: &Frame, vary: bool) -> Result<()> {
        ensure!(f.bytes.len() < TEMPLATE_MAX, "frame of {} bytes: too long for the template", f.bytes.len());
        let mut data = [0u8; TEMPLATE_MAX];
        data[..f.bytes.len()].copy_from_slice(&f.bytes);
        let t = Template {
            len: f.bytes.len() as u32,
            vary: u32::from(vary),
            sport_off: f.sport_off,
            saddr_off: f.saddr_off,
            l4_csum_off: f.l4_csum_off,
            ip_csum_off: f.ip_csum_off,
            data,
        };
        self.template.set(0, t, 0)?;
        Ok(())
    }

    /// Runs the harness `repeat` times on a frame of `len` bytes arriving on
    /// `ingress`; returns (last verdict, ns per iteration, output frame).
    fn run(&mut self, ingress: u32, frame: &[u8], repeat: u32) -> Result<(u32, u64, Vec<u8>)> {
        let md = [0u32, frame.len() as u32, 0, ingress, 0, 0];
        let ctx_in: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut ctx_out = [0u8; 24];
        let mut data_out = vec![0u8; 512];
        let prog: &Xdp = self.bench.program("harness").context("harness")?.try_into()?;
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut data_out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                repeat,
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN")?;
        let w = |i: usize| u32::from_ne_bytes(ctx_out[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
        let (meta, end) = (w(0), w(1).min(data_out.len()));
        let out = data_out.get(meta..end).unwrap_or_default().to_vec();
        Ok((res.return_value, res.duration.as_nanos() as u64, out))
    }

    fn stats(&mut self) -> Result<Vec<u64>> {
        let m = &self.view;
        (0..STAT_COUNT).map(|i| Ok(m.stats.get(&i, 0)?.iter().sum())).collect()
    }

    /// Sends one packet through xlb (through the harness, repeat 1) and
    /// returns the output frame: to create a flow before the established
    /// and reply classes.
    fn prime(&mut self, f: &Frame, ingress: u32) -> Result<Vec<u8>> {
        self.set_template(f, false)?;
        self.set_target(Target::Xlb)?;
        let (verdict, _, out) = self.run(ingress, &f.bytes, 1)?;
        ensure!(verdict == XDP_REDIRECT, "priming packet: {} instead of XDP_REDIRECT", verdict_name(verdict));
        Ok(out)
    }

    /// Measures one class: warm-up round, then `rounds` interleaved pairs of
    /// (baseline, program) runs. `expect`: the counters every iteration must
    /// move (besides `packets`, which xlb moves always).
    #[expect(clippy::too_many_arguments, reason = "one argument per field of the object built")]
    fn measure(
        &mut self,
        class: &str,
        f: &Frame,
        vary: bool,
        ingress: u32,
        target: Target,
        verdict: u32,
        expect: &[Stat],
        target_net_ns: Option<u64>,
        katran_net_ns: Option<u64>,
    ) -> Result<()> {
        if let Some(only) = &self.opts.only {
            if !class.to_lowercase().contains(&only.to_lowercase()) {
                return Ok(());
            }
        }
        let repeat = self.opts.repeat;
        self.set_template(f, vary)?;
        let mut raws = Vec::new();
        let mut bases = Vec::new();
        let mut problem = None;
        let mut note = None;
        let mut last = XDP_ABORTED;
        for round in 0..=self.opts.rounds {
            stopped()?;
            self.set_target(NOP)?;
            let (bv, base, _) = self.run(ingress, &f.bytes, repeat)?;
            if bv != XDP_PASS {
                problem.get_or_insert(format!("baseline returned {}", verdict_name(bv)));
            }
            self.set_target(target)?;
            let before = self.stats()?;
            let (v, raw, _) = self.run(ingress, &f.bytes, repeat)?;
            let after = self.stats()?;
            last = v;
            if v != verdict {
                problem.get_or_insert(format!("verdict {} instead of {}", verdict_name(v), verdict_name(verdict)));
            }
            let mut want = vec![0u64; STAT_COUNT as usize];
            if target == Target::Xlb {
                want[Stat::Packets as usize] = u64::from(repeat);
                for s in expect {
                    want[*s as usize] += u64::from(repeat);
                }
            }
            let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            if got != want {
                let diff: Vec<String> = Stat::ALL
                    .iter()
                    .filter(|s| got[**s as usize] != want[**s as usize])
                    .map(|s| format!("{} {} (expected {})", s.name(), got[*s as usize], want[*s as usize]))
                    .collect();
                // Up to 1 in 1000 packets may leave the path (e.g. a SNAT
                // port search that fails once the ports of a backend fill up).
                let off = got.iter().zip(&want).map(|(g, w)| g.abs_diff(*w)).max().unwrap_or(0);
                if off * 1000 > u64::from(repeat) {
                    problem.get_or_insert(format!("counters off the class's path: {}", diff.join(", ")));
                } else {
                    note.get_or_insert(format!("a few packets off the path: {}", diff.join(", ")));
                }
            }
            if round > 0 {
                raws.push(raw);
                bases.push(base);
            }
        }
        let (raw, base) = (median(&mut raws), median(&mut bases));
        let row = Row {
            kind: if matches!(target, Target::Bench(p) if p.starts_with("stage_")) { "stage" } else { "class" },
            class: class.to_string(),
            verdict: verdict_name(last).to_string(),
            ok: problem.is_none(),
            problem,
            note,
            raw_ns: raw,
            base_ns: base,
            net_ns: raw as i64 - base as i64,
            raw_min_ns: raws[0],
            raw_max_ns: *raws.last().unwrap(),
            target_net_ns,
            katran_net_ns,
        };
        println!(
            "    {:<34} {:<13} raw {:>5} ns  harness {:>4} ns  net {:>5} ns{}",
            row.class,
            row.verdict,
            row.raw_ns,
            row.base_ns,
            row.net_ns,
            row.problem.as_ref().map(|p| format!("  FAILED: {p}")).unwrap_or_default()
        );
        if let Some(n) = &row.note {
            println!("      note: {n}");
        }
        self.rows.push(row);
        Ok(())
    }

    fn all(&mut self) -> Result<()> {
        let (v0, v1) = (self.v0, self.v1);
        let sock = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);

        // The minimal forwarder: IPv4/UDP, fixed rewrite, XDP_REDIRECT.
        let udp4 = frame(CLIENT4_MAC, V0_MAC, sock(CLIENT4, 33000), sock(VIP4, 53), L4::Udp);
        self.measure("min_fwd: IPv4 UDP", &udp4, false, v0, MIN_FWD, XDP_REDIRECT, &[], Some(17), None)?;

        let fwd = Stat::FwdRedirect;
        // New flows while the connection tables still have free entries
        // (first, before anything fills them): no insert evicts.
        let full_repeat = self.opts.repeat;
        self.opts.repeat = (self.opts.flow_entries / (4 * (self.opts.rounds + 1))).clamp(1, full_repeat);
        let note = format!("{} flows a run", self.opts.repeat);
        let f = frame(CLIENT4_MAC, V0_MAC, sock(CLIENT4, 1024), sock(VIP4, 53), L4::Udp);
        self.measure(
            &format!("IPv4 UDP new flow, tables not full ({note})"),
            &f,
            true,
            v0,
            Target::Xlb,
            XDP_REDIRECT,
            &[Stat::FlowNew, fwd],
            Some(400),
            None,
        )?;
        let f = frame(CLIENT4_MAC, V0_MAC, sock(CLIENT4, 1024), sock(VIP4, 80), L4::Tcp(TCP_SYN));
        self.measure(
            &format!("IPv4 TCP SYN, tables not full ({note})"),
            &f,
            true,
            v0,
            Target::Xlb,
            XDP_REDIRECT,
            &[Stat::FlowNew, fwd],
            Some(400),
            Some(445),
        )?;
        self.opts.repeat = full_repeat;
        for (v6, client, cmac, vip, bmac) in
            [(false, CLIENT4, CLIENT4_MAC, VIP4, BACKEND4_MAC), (true, CLIENT6, CLIENT6_MAC, VIP6, BACKEND6_MAC)]
        {
            let fam = if v6 { "IPv6" } else { "IPv4" };
            for (proto, port) in [("UDP", 53), ("TCP", 80)] {
                let udp = proto == "UDP";
                let first = if udp { L4::Udp } else { L4::Tcp(TCP_SYN) };
                let next = if udp { L4::Udp } else { L4::Tcp(TCP_ACK) };
                // New flow: every iteration from another source port/address; the
                // tables are full by now (steady state): every insert evicts.
                let f = frame(cmac, V0_MAC, sock(client, 1024), sock(vip, port), first);
                let name = if udp {
                    format!("{fam} UDP new flow, full tables")
                } else {
                    format!("{fam} TCP SYN, full tables")
                };
                let (target, katran) = match (v6, udp) {
                    (false, false) => (Some(400), Some(445)),
                    (false, true) => (Some(400), None),
                    _ => (None, None),
                };
                self.measure(&name, &f, true, v0, Target::Xlb, XDP_REDIRECT, &[Stat::FlowNew, fwd], target, katran)?;

                // Established: one packet creates the flow, then its next packets.
                let syn = frame(cmac, V0_MAC, sock(client, 33000), sock(vip, port), first);
                let out = self.prime(&syn, v0)?;
                let f = frame(cmac, V0_MAC, sock(client, 33000), sock(vip, port), next);
                let name = if udp { format!("{fam} UDP established") } else { format!("{fam} TCP ACK (established)") };
                let (target, katran) = match (v6, udp) {
                    (false, true) => (Some(170), Some(225)),
                    (false, false) => (None, Some(176)),
                    _ => (None, None),
                };
                self.measure(&name, &f, false, v0, Target::Xlb, XDP_REDIRECT, &[Stat::FlowHit, fwd], target, katran)?;

                // The backend's reply to the tuple it saw.
                let (src, dst) = tuple_of(&out).context("priming output is not IPv4/IPv6")?;
                let r = frame(bmac, V1_MAC, dst, src, next);
                self.measure(
                    &format!("{fam} {proto} reply"),
                    &r,
                    false,
                    v1,
                    Target::Xlb,
                    XDP_REDIRECT,
                    &[Stat::Reply, fwd],
                    None,
                    None,
                )?;
            }
        }

        // Katran's own perf test repeats one SYN frame: every iteration picks
        // a backend and writes the flow's entries again — the same, cache-hot
        // entries (xlb rewrites them in place). Comparable with Katran's
        // 445 ns; a SYN of a new tuple (above) also pays for cold entries.
        let f = frame(CLIENT4_MAC, V0_MAC, sock(CLIENT4, 34000), sock(VIP4, 80), L4::Tcp(TCP_SYN));
        self.measure(
            "IPv4 TCP SYN, same tuple every time (Katran's method)",
            &f,
            false,
            v0,
            Target::Xlb,
            XDP_REDIRECT,
            &[Stat::FlowNew, fwd],
            Some(400),
            Some(445),
        )?;

        // source: preserve (Katran-like: the client address is kept).
        let f = frame(CLIENT4_MAC, V0_MAC, sock(CLIENT4, 1024), sock(VIP4_PRESERVE, 53), L4::Udp);
        self.measure(
            "IPv4 UDP new flow, full tables (preserve)",
            &f,
            true,
            v0,
            Target::Xlb,
            XDP_REDIRECT,
            &[Stat::FlowNew, fwd],
            Some(400),
            None,
        )?;
        let f = frame(CLIENT4_MAC, V0_MAC, sock(CLIENT4, 33000), sock(VIP4_PRESERVE, 53), L4::Udp);
        self.prime(&f, v0)?;
        self.measure(
            "IPv4 UDP established (preserve)",
            &f,
            false,
            v0,
            Target::Xlb,
            XDP_REDIRECT,
            &[Stat::FlowHit, fwd],
            Some(170),
            Some(225),
        )?;

        // Not for a VIP: passed to the kernel untouched.
        let f = frame(CLIENT4_MAC, V0_MAC, sock(CLIENT4, 33000), sock("10.1.0.1", 22), L4::Tcp(TCP_ACK));
        self.measure(
            "IPv4 non-VIP pass",
            &f,
            false,
            v0,
            Target::Xlb,
            XDP_PASS,
            &[Stat::PassNotVip],
            Some(30),
            Some(62),
        )?;
        let f = frame(CLIENT6_MAC, V0_MAC, sock(CLIENT6, 33000), sock("fd00:1::1", 22), L4::Tcp(TCP_ACK));
        self.measure("IPv6 non-VIP pass", &f, false, v0, Target::Xlb, XDP_PASS, &[Stat::PassNotVip], Some(30), None)?;

        // Malformed: an IPv4 total length beyond the frame.
        let mut f = frame(CLIENT4_MAC, V0_MAC, sock(CLIENT4, 33000), sock(VIP4, 53), L4::Udp);
        let tot = (f.bytes.len() - 14 + 20) as u16;
        f.bytes[16..18].copy_from_slice(&tot.to_be_bytes());
        self.measure("IPv4 malformed drop", &f, false, v0, Target::Xlb, XDP_DROP, &[Stat::DropMalformed], None, None)?;

        // Per-stage costs: one operation each, through the same harness.
        println!("  per-stage costs (one operation of the data path alone):");
        self.fib.set(0, fib_conf("10.2.0.1", BACKEND4), 0)?;
        self.measure(
            "stage: FIB lookup IPv4",
            &udp4,
            false,
            v0,
            Target::Bench("stage_fib"),
            XDP_PASS,
            &[],
            None,
            None,
        )?;
        self.fib.set(0, fib_conf("fd00:2::1", BACKEND6), 0)?;
        self.measure(
            "stage: FIB lookup IPv6",
            &udp4,
            false,
            v0,
            Target::Bench("stage_fib"),
            XDP_PASS,
            &[],
            None,
            None,
        )?;
        self.measure(
            "stage: bpf_ktime_get_ns",
            &udp4,
            false,
            v0,
            Target::Bench("stage_ktime"),
            XDP_PASS,
            &[],
            None,
            None,
        )?;
        self.measure(
            "stage: bpf_ktime_get_coarse_ns",
            &udp4,
            false,
            v0,
            Target::Bench("stage_ktime_coarse"),
            XDP_PASS,
            &[],
            None,
            None,
        )?;
        self.measure(
            "stage: hash lookup, 20-byte key",
            &udp4,
            false,
            v0,
            Target::Bench("stage_hash"),
            XDP_PASS,
            &[],
            None,
            None,
        )?;
        self.measure(
            "stage: LRU hash lookup, 40-byte key",
            &udp4,
            false,
            v0,
            Target::Bench("stage_lru"),
            XDP_PASS,
            &[],
            None,
            None,
        )?;
        let n = self.opts.flow_entries;
        let full_repeat = self.opts.repeat;
        self.opts.repeat = (n / (4 * (self.opts.rounds + 1))).clamp(1, full_repeat);
        self.measure(
            "stage: plain hash insert, new key, not full",
            &udp4,
            false,
            v0,
            Target::Bench("stage_hash_insert"),
            XDP_PASS,
            &[],
            None,
            None,
        )?;
        self.measure(
            "stage: random 64-byte bucket read+write, 64 MiB array",
            &udp4,
            false,
            v0,
            Target::Bench("stage_bucket"),
            XDP_PASS,
            &[],
            None,
            None,
        )?;
        for (lists, prog) in [("common list", "stage_lru_insert"), ("per-CPU lists", "stage_pcpu_lru_insert")] {
            let name = format!("stage: LRU insert, new key, {lists}, {n} entries, not full");
            self.measure(&name, &udp4, false, v0, Target::Bench(prog), XDP_PASS, &[], None, None)?;
        }
        self.opts.repeat = full_repeat;
        for (lists, prog) in [("common list", "stage_lru_insert"), ("per-CPU lists", "stage_pcpu_lru_insert")] {
            let name = format!("stage: LRU insert, new key, {lists}, {n} entries, full (evicts)");
            self.measure(&name, &udp4, false, v0, Target::Bench(prog), XDP_PASS, &[], None, None)?;
        }
        Ok(())
    }
}

/// The machine: CPU model, CPUs, kernel, memory.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown CPU".into(), |s| s.trim().to_string());
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
        .map(|k| format!("{:.1} GiB", k as f64 / f64::from(1 << 20)))
        .unwrap_or_default();
    format!("{model}, {cpus} CPUs, kernel {kernel}, {mem} RAM")
}

fn summary(rows: &[Row]) -> String {
    let min = rows.iter().find(|r| r.class.starts_with("min_fwd"));
    let (min_raw, min_net) = min.map_or((0, 0), |m| (m.raw_ns, m.net_ns));
    let mut s = String::new();
    let _ = writeln!(s, "| class | verdict | raw ns | net ns | raw ÷ min_fwd raw | net target (Katran) | |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---|---|");
    for r in rows.iter().filter(|r| r.kind == "class") {
        let ratio = if min_raw > 0 { format!("{:.2}×", r.raw_ns as f64 / min_raw as f64) } else { "-".into() };
        let target = match (r.target_net_ns, r.katran_net_ns) {
            (Some(t), Some(k)) => format!("≤ {t} ({k})"),
            (Some(t), None) => format!("≤ {t}"),
            (None, Some(k)) => format!("({k})"),
            (None, None) => String::new(),
        };
        let mark = if !r.ok {
            "FAILED".to_string()
        } else if r.class.starts_with("min_fwd") {
            String::new()
        } else {
            match r.target_net_ns {
                Some(t) if r.net_ns <= t as i64 => "met".into(),
                Some(_) => "missed".into(),
                None => String::new(),
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.class, r.verdict, r.raw_ns, r.net_ns, ratio, target, mark
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "min_fwd: {min_raw} ns raw, {min_net} ns net; 3.5 × its raw figure (the target for xlb's established IPv4 UDP) = {} ns raw.",
        min_raw * 7 / 2
    );
    if rows.iter().any(|r| r.kind == "stage") {
        let _ = writeln!(s);
        let _ = writeln!(s, "| stage (one operation alone) | net ns |");
        let _ = writeln!(s, "|---|---:|");
        for r in rows.iter().filter(|r| r.kind == "stage") {
            let fail = if r.ok { String::new() } else { " FAILED".into() };
            let _ = writeln!(s, "| {} | {}{} |", r.class.trim_start_matches("stage: "), r.net_ns, fail);
        }
    }
    s
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("datapath_bench: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<bool> {
    let mut opts = Opts::parse();
    if opts.tiny {
        opts.repeat = 1000;
        opts.rounds = 1;
        opts.flow_entries = 4096;
        opts.backends = 4;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (BPF_PROG_TEST_RUN, network namespaces, bpffs): run it as root");
    }
    ensure_bpffs()?;
    cleanup_stale();
    catch_signals();
    let pid = std::process::id();
    let cleanup = Cleanup { netns: format!("{NETNS_PREFIX}{pid}"), pin: PathBuf::from(format!("{PIN_PREFIX}{pid}")) };
    sh(&["ip", "netns", "add", &cleanup.netns], None)?;
    sh(
        &[
            "ip",
            "netns",
            "exec",
            &cleanup.netns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ],
        None,
    )?;
    sh(&["ip", "-n", &cleanup.netns, "-batch", "-"], Some(&setup_commands()))?;

    let machine = machine();
    println!("Per-packet cost of xlb_xdp (BPF_PROG_TEST_RUN through the frame-restoring harness)");
    println!("machine: {machine}");
    println!(
        "repeat {} per run, {} rounds (+1 warm-up), median; flow tables {} entries; {} backends per service; snat unless noted",
        opts.repeat, opts.rounds, opts.flow_entries, opts.backends
    );
    let (ns, pin, o) = (cleanup.netns.clone(), cleanup.pin.clone(), opts.clone());
    let started = Instant::now();
    let handle = std::thread::Builder::new().name("measure".into()).spawn(move || -> Result<(Vec<Row>, usize)> {
        enter_netns(&ns)?;
        let cpu = pin_thread(o.cpu)?;
        println!("measuring on CPU {cpu}");
        let mut b = Bench::new(o, &pin)?;
        b.all()?;
        Ok((std::mem::take(&mut b.rows), cpu))
    })?;
    let result = handle.join().map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?;
    drop(cleanup);
    let (rows, cpu) = result?;
    println!("\ndone in {:.1} s\n", started.elapsed().as_secs_f64());
    let table = summary(&rows);
    println!("{table}");
    if let Some(path) = &opts.markdown {
        let head = format!(
            "Machine: {machine}; measured on CPU {cpu}.\n\nrepeat {} per run, {} rounds (+1 warm-up), median; flow tables {} entries; {} backends per service.\n\n",
            opts.repeat, opts.rounds, opts.flow_entries, opts.backends
        );
        std::fs::write(path, head + &table).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &opts.json {
        let j = serde_json::json!({
            "machine": machine,
            "cpu": cpu,
            "repeat": opts.repeat,
            "rounds": opts.rounds,
            "flow_entries": opts.flow_entries,
            "backends": opts.backends,
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&j)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        eprintln!("datapath_bench: {}: {}", r.class, r.problem.as_deref().unwrap_or(""));
    }
    Ok(failed.is_empty())
}
