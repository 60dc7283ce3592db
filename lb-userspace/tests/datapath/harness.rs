//! The harness: every case runs on its own thread inside a fresh network
//! namespace (so `bpf_fib_lookup` sees a known topology), with the data path
//! loaded from the embedded object and its maps pinned in a directory of its
//! own. Both are removed when the case ends, also when it panics.
//!
//! Topology inside the namespace (veth pair `v0`/`v1`, both up):
//!
//! ```text
//!   v0  02:00:00:00:00:a0  10.1.0.1/24 fd00:1::1/64     backends 10.1.0.2-4, fd00:1::2-4
//!                          10.100.0.1/24 fd00:100::1/64 clients 10.100.0.10-11, fd00:100::10
//!   v1  02:00:00:00:00:a1  10.2.0.1/24 fd00:2::1/64     backend 10.2.0.5, fd00:2::5
//! ```
//!
//! Every neighbour above is a permanent entry with a known MAC (see
//! [`NEIGHBOURS`]); 10.1.0.99 is on-link without a neighbour entry and
//! 198.51.100.0/24 has no route. Forwarding is enabled (the FIB helper
//! refuses to answer on an interface that does not forward).
#![allow(dead_code, reason = "shared by several test binaries, each using a part")]

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
};

use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use lb_common::{stats::STAT_COUNT, Counter, Flow, FlowKey, Reverse};
use xlb::{
    bpf::maps::{sum_counter, Maps},
    state::model::{BackendSpec, DesiredState, Protocol, ServiceSpec, SourceMode},
    state::writer::{addr16, service_key, MapWriter},
};

use crate::frame::{mac_str, Pkt};

#[path = "output.rs"]
mod output;
pub use output::{Out, StatDelta};

/// The node tag every lab starts with (`XLB_SETTINGS.node_tag`).
pub const LAB_NODE_TAG: u32 = 0x7a9_5eed;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "?",
    }
}

pub const V0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa0];
pub const V1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];

/// Static neighbours: (address, MAC, device).
pub const NEIGHBOURS: &[(&str, [u8; 6], &str)] = &[
    ("10.1.0.2", [0x02, 0, 0, 0x01, 0x00, 0x02], "v0"),
    ("10.1.0.3", [0x02, 0, 0, 0x01, 0x00, 0x03], "v0"),
    ("10.1.0.4", [0x02, 0, 0, 0x01, 0x00, 0x04], "v0"),
    ("fd00:1::2", [0x02, 0, 0, 0x01, 0x06, 0x02], "v0"),
    ("fd00:1::3", [0x02, 0, 0, 0x01, 0x06, 0x03], "v0"),
    ("fd00:1::4", [0x02, 0, 0, 0x01, 0x06, 0x04], "v0"),
    ("10.100.0.10", [0x02, 0, 0, 0x64, 0x00, 0x0a], "v0"),
    ("10.100.0.11", [0x02, 0, 0, 0x64, 0x00, 0x0b], "v0"),
    ("fd00:100::10", [0x02, 0, 0, 0x64, 0x06, 0x10], "v0"),
    ("10.2.0.5", [0x02, 0, 0, 0x02, 0x00, 0x05], "v1"),
    ("fd00:2::5", [0x02, 0, 0, 0x02, 0x06, 0x05], "v1"),
];

/// The MAC of a neighbour in [`NEIGHBOURS`] (address with or without port).
pub fn mac(addr: &str) -> [u8; 6] {
    let ip: IpAddr = addr
        .parse()
        .or_else(|_| addr.parse::<SocketAddr>().map(|s| s.ip()))
        .unwrap_or_else(|_| panic!("bad address {addr}"));
    NEIGHBOURS
        .iter()
        .find(|(a, _, _)| a.parse::<IpAddr>().unwrap() == ip)
        .unwrap_or_else(|| panic!("{addr} is not a neighbour of the test topology"))
        .1
}

fn setup_commands() -> Vec<String> {
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
    for (ip, m, dev) in NEIGHBOURS {
        c.push(format!("neigh add {ip} lladdr {} dev {dev} nud permanent", mac_str(m)));
    }
    c
}

fn sh(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write as _;
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e} (is iproute2 installed?)", args[0]))?;
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Fails (does not skip) when not root: CI runs these as root.
fn require_root(case: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "{case}: the data-path tests need root (BPF_PROG_TEST_RUN, network namespaces, bpffs); \
         run them as root: cargo test -p lb-userspace --test datapath -- --test-threads=1"
    );
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn ensure_bpffs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let path = std::ffi::CString::new("/sys/fs/bpf").unwrap();
        // SAFETY: zeroed statfs is a valid out buffer; path is NUL-terminated.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above; statfs writes at most one struct statfs.
        let rc = unsafe { libc::statfs(path.as_ptr(), &raw mut st) };
        if rc != 0 || st.f_type as i64 != BPF_FS_MAGIC {
            std::fs::create_dir_all("/sys/fs/bpf").expect("creating /sys/fs/bpf");
            sh(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], None).expect("mounting bpffs at /sys/fs/bpf");
        }
    });
}

/// Removes the namespace and the pin directory, also on panic.
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

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs one case: a fresh namespace and pin directory, a thread inside the
/// namespace (pinned to one CPU), the data path loaded there.
pub fn run_case<F>(name: &str, f: F)
where
    F: FnOnce(&mut Lab) + Send + 'static,
{
    require_root(name);
    ensure_bpffs();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let cleanup =
        Cleanup { netns: format!("xlbdp{pid}-{n}"), pin: PathBuf::from(format!("/sys/fs/bpf/xlb-dptest-{pid}-{n}")) };
    let ns = cleanup.netns.clone();
    sh(&["ip", "netns", "add", &ns], None).unwrap_or_else(|e| panic!("{name}: {e}"));
    sh(&["ip", "netns", "exec", &ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], None)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let batch = setup_commands().join("\n") + "\n";
    sh(&["ip", "-n", &ns, "-batch", "-"], Some(&batch)).unwrap_or_else(|e| panic!("{name}: {e}"));

    let pin = cleanup.pin.clone();
    let case = name.to_string();
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter_netns(&ns);
            pin_to_one_cpu();
            let mut lab = Lab::new(&case, &pin);
            f(&mut lab);
        })
        .expect("spawning the case thread");
    let result = handle.join();
    drop(cleanup);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn enter_netns(name: &str) {
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: valid namespace fd; only this thread changes namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert!(rc == 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Keeps the per-CPU LRU lists and counters of one run on one CPU.
fn pin_to_one_cpu() {
    // SAFETY: plain libc calls with valid buffers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) != 0 {
            return;
        }
        let Some(cpu) = (0..libc::CPU_SETSIZE as usize).find(|c| libc::CPU_ISSET(*c, &set)) else { return };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const one);
    }
}

/// A service description for `Lab::apply`.
pub fn service(
    name: &str,
    vip: &str,
    port: u16,
    protocol: Protocol,
    source: SourceMode,
    backends: &[(&str, u16)],
) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        vip: vip.parse().unwrap_or_else(|_| panic!("bad VIP {vip}")),
        port,
        protocol,
        source,
        snat_address: None,
        udp_timeout: None,
        tcp_timeout: None,
        maglev_table_size: None,
        affinity_timeout: None,
        source_ranges: vec![],
        backends: backends
            .iter()
            .map(|(a, w)| BackendSpec { addr: a.parse().unwrap_or_else(|_| panic!("bad backend {a}")), weight: *w })
            .collect(),
        reject_weight: 0,
    }
}

/// One loaded data path in one namespace.
pub struct Lab {
    pub case: String,
    ebpf: Ebpf,
    pub writer: MapWriter,
    /// A second handle on the pinned maps, for the tests that poke the data
    /// path directly (flows, affinity, settings, ...), bypassing the writer.
    maps: Maps,
    pub v0: u32,
    pub v1: u32,
}

impl Lab {
    fn new(case: &str, pin: &Path) -> Self {
        let mut ebpf =
            xlb::bpf::datapath::load(pin, 4096).unwrap_or_else(|e| panic!("{case}: loading the data path: {e:#}"));
        let xdp: &mut Xdp = ebpf.program_mut("xlb_xdp").expect("program xlb_xdp").try_into().expect("an XDP program");
        xdp.load().unwrap_or_else(|e| panic!("{case}: loading xlb_xdp: {e:#}"));
        let maps = Maps::take(&mut ebpf).unwrap_or_else(|e| panic!("{case}: taking the maps: {e}"));
        let writer = MapWriter::restore(maps, 0).unwrap_or_else(|e| panic!("{case}: MapWriter::restore: {e}"));
        let maps = Maps::open_pinned(pin).unwrap_or_else(|e| panic!("{case}: opening the pinned maps: {e}"));
        let v0 = xlb::host::iface::ifindex("v0").expect("v0");
        let v1 = xlb::host::iface::ifindex("v1").expect("v1");
        let mut lab = Lab { case: case.to_string(), ebpf, writer, maps, v0, v1 };
        lab.set_node_tag(LAB_NODE_TAG);
        lab
    }

    /// `XLB_SETTINGS.node_tag = tag` (the rest of the settings kept).
    pub fn set_node_tag(&mut self, tag: u32) {
        let settings = &mut self.maps().settings;
        let s = settings.get(&0, 0).expect("reading XLB_SETTINGS");
        settings.set(0, lb_common::settings::Settings { node_tag: tag, ..s }, 0).expect("writing XLB_SETTINGS");
    }

    /// `XLB_SETTINGS.node_tag`.
    pub fn node_tag(&mut self) -> u32 {
        self.maps().settings.get(&0, 0).expect("reading XLB_SETTINGS").node_tag
    }

    pub fn maps(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// The flow epoch (`XLB_FLOW_EPOCH`): moves on when a rewrite voids
    /// every CPU's cached flow copies.
    pub fn flow_epoch(&mut self) -> u64 {
        let m: aya::maps::Array<_, u64> =
            self.ebpf.map("XLB_FLOW_EPOCH").expect("map XLB_FLOW_EPOCH").try_into().expect("an array");
        m.get(&0, 0).expect("reading XLB_FLOW_EPOCH")
    }

    /// Sets the flow epoch (as a rewrite on another CPU would).
    pub fn set_flow_epoch(&mut self, e: u64) {
        let mut m: aya::maps::Array<_, u64> =
            self.ebpf.map_mut("XLB_FLOW_EPOCH").expect("map XLB_FLOW_EPOCH").try_into().expect("an array");
        m.set(0, e, 0).expect("writing XLB_FLOW_EPOCH");
    }

    /// Programs the services (snat addresses from the namespace's routes).
    pub fn apply(&mut self, services: Vec<ServiceSpec>) {
        self.writer
            .apply(&DesiredState { services })
            .unwrap_or_else(|e| panic!("{}: MapWriter::apply: {e}", self.case));
    }

    /// `XLB_IFACES[ifindex] = caps`.
    pub fn set_iface(&mut self, ifindex: u32, caps: u32) {
        self.maps().ifaces.insert(ifindex, caps, 0).expect("writing XLB_IFACES");
    }

    /// `XLB_TX_PORTS[ifindex] = ifindex`.
    pub fn add_tx_port(&mut self, ifindex: u32) {
        self.maps().tx_ports.insert(ifindex, ifindex, None, 0).expect("writing XLB_TX_PORTS");
    }

    pub fn stats(&mut self) -> Vec<u64> {
        let m = self.maps();
        (0..STAT_COUNT).map(|i| m.stats.get(&i, 0).expect("reading XLB_STATS").iter().sum()).collect()
    }

    /// Runs the program on `frame` arriving on v0.
    pub fn run(&mut self, frame: &[u8]) -> Out {
        let v0 = self.v0;
        self.run_on(v0, frame)
    }

    /// Runs the program on `frame` arriving on `ingress`.
    pub fn run_on(&mut self, ingress: u32, frame: &[u8]) -> Out {
        self.try_run_on(ingress, frame).unwrap_or_else(|e| panic!("{}: BPF_PROG_TEST_RUN: {e:#}", self.case))
    }

    /// Like `run_on`, but a refusal of the kernel is returned.
    pub fn try_run_on(&mut self, ingress: u32, frame: &[u8]) -> Result<Out, aya::programs::ProgramError> {
        let before = self.stats();
        let node_tag = self.node_tag();
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        let md = [0u32, frame.len() as u32, 0, ingress, 0, 0];
        let ctx_in: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut ctx_out = [0u8; 24];
        let mut data_out = vec![0u8; 4096];
        let prog: &Xdp = self.ebpf.program("xlb_xdp").expect("xlb_xdp").try_into().expect("XDP");
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::new()
        })?;
        let after = self.stats();
        let word = |i: usize| u32::from_ne_bytes(ctx_out[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
        // The output starts at data_meta: ctx_out.data is the metadata length.
        let (meta_len, end) = (word(0), word(1));
        assert_eq!(end, res.data_size_out as usize, "ctx_out.data_end vs data_size_out");
        Ok(Out {
            case: self.case.clone(),
            verdict: res.return_value,
            meta: data_out[..meta_len].to_vec(),
            frame: data_out[meta_len..end].to_vec(),
            input: frame.to_vec(),
            delta: StatDelta(after.iter().zip(&before).map(|(a, b)| *a as i64 - *b as i64).collect()),
            ingress,
            node_tag,
        })
    }

    /// The service's id.
    pub fn service_id(&mut self, vip: &str, port: u16, proto: Protocol) -> u32 {
        let key = service_key(vip.parse().unwrap(), port, proto);
        self.maps().services.get(&key, 0).expect("service in XLB_SERVICES").id
    }

    pub fn service_counter(&mut self, vip: &str, port: u16, proto: Protocol) -> Counter {
        let id = self.service_id(vip, port, proto);
        sum_counter(&self.maps().service_stats.get(&id, 0).expect("XLB_SVC_STATS"))
    }

    /// The id of the active backend at `addr` ("ip:port").
    pub fn backend_id(&mut self, addr: &str) -> u32 {
        let sa: SocketAddr = addr.parse().unwrap();
        let m = self.maps();
        (0..1024u32)
            .find(|i| {
                let b = m.backends.get(i, 0).expect("XLB_BACKENDS");
                b.flags & lb_common::BE_F_ACTIVE != 0 && b.addr == addr16(sa.ip()) && b.port == sa.port().to_be()
            })
            .unwrap_or_else(|| panic!("no active backend {addr}"))
    }

    /// Packets counted for the backend with id `id`.
    pub fn backend_packets_by_id(&mut self, id: u32) -> u64 {
        sum_counter(&self.maps().backend_stats.get(&id, 0).expect("XLB_BE_STATS")).packets
    }

    pub fn backend_packets(&mut self, addr: &str) -> u64 {
        let id = self.backend_id(addr);
        self.backend_packets_by_id(id)
    }

    /// The connection-table entry of a client packet.
    pub fn flow(&mut self, pkt: &Pkt) -> Option<Flow> {
        let key = flow_key(pkt);
        match self.maps().flows.get(&key, 0) {
            Ok(f) => Some(f),
            Err(aya::maps::MapError::KeyNotFound) => None,
            Err(e) => panic!("reading XLB_FLOWS: {e}"),
        }
    }

    /// The reverse-NAT entry of a reply packet.
    pub fn reverse(&mut self, reply: &Pkt) -> Option<Reverse> {
        let key = flow_key(reply);
        match self.maps().reverse.get(&key, 0) {
            Ok(r) => Some(r),
            Err(aya::maps::MapError::KeyNotFound) => None,
            Err(e) => panic!("reading XLB_REVERSE: {e}"),
        }
    }

    pub fn flow_count(&mut self) -> usize {
        self.maps().flows.keys().count()
    }

    pub fn reverse_count(&mut self) -> usize {
        self.maps().reverse.keys().count()
    }
}

/// The map key of a packet's 5-tuple as it arrives.
pub fn flow_key(p: &Pkt) -> FlowKey {
    FlowKey {
        src: addr16(p.src.ip()),
        dst: addr16(p.dst.ip()),
        sport: p.src.port().to_be(),
        dport: p.dst.port().to_be(),
        proto: p.proto(),
        _pad: [0; 3],
    }
}
