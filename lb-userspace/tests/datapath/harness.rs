//! The harness: every case runs on its own thread inside a fresh network
//! namespace with the data-path topology of `xlb_tests::datapath_topology`
//! (so `bpf_fib_lookup` sees a known topology: veth pair `v0`/`v1`, the
//! neighbours of its `NEIGHBOURS`), with the data path loaded from the embedded
//! object and its maps pinned in a directory of its own. Both are removed
//! when the case ends, also when it panics.
#![allow(dead_code, reason = "shared by several test binaries, each using a part")]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
};

use aya::{programs::Xdp, Ebpf};
use lb_common::{stats::STAT_COUNT, Counter, Flow, FlowKey, Reverse};
use xlb::{
    bpf::{
        maps::{sum_counter, Maps},
        testrun::run_xdp,
    },
    state::model::{BackendSpec, DesiredState, Protocol, ServiceSpec, SourceMode},
    state::writer::{addr16, service_key, MapWriter},
};
pub use xlb_tests::datapath_topology::{mac, verdict_name, V0_MAC, V1_MAC, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use xlb_tests::{
    datapath_topology::DatapathNetns,
    host::{enter_netns, pin_thread},
};

use crate::frame::Pkt;

#[path = "output.rs"]
mod output;
pub use output::{Out, StatDelta};

/// The node tag every lab starts with (`XLB_SETTINGS.node_tag`).
pub const LAB_NODE_TAG: u32 = 0x7a9_5eed;

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

fn ensure_bpffs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        xlb_tests::host::ensure_bpffs().unwrap_or_else(|e| panic!("mounting bpffs at /sys/fs/bpf: {e:#}"));
    });
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
    let topology =
        DatapathNetns::create(format!("xlbdp{pid}-{n}"), PathBuf::from(format!("/sys/fs/bpf/xlb-dptest-{pid}-{n}")))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let ns = topology.netns().to_string();
    let pin = topology.pin().to_path_buf();
    let case = name.to_string();
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter_netns(&ns).unwrap_or_else(|e| panic!("{e:#}"));
            // Keeps the per-CPU LRU lists and counters of one run on one
            // CPU (the first allowed); left unpinned when that fails.
            let _ = pin_thread(None);
            let mut lab = Lab::new(&case, &pin);
            f(&mut lab);
        })
        .expect("spawning the case thread");
    let result = handle.join();
    drop(topology);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
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
        source,
        backends: backends
            .iter()
            .map(|(a, w)| BackendSpec { addr: a.parse().unwrap_or_else(|_| panic!("bad backend {a}")), weight: *w })
            .collect(),
        ..ServiceSpec::new(name, vip.parse().unwrap_or_else(|_| panic!("bad VIP {vip}")), port, protocol)
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
        let prog: &Xdp = self.ebpf.program("xlb_xdp").expect("xlb_xdp").try_into().expect("XDP");
        let res = run_xdp(prog, ingress, frame, 1)?;
        let after = self.stats();
        assert_eq!(res.data_end, res.data_size_out, "ctx_out.data_end vs data_size_out");
        Ok(Out {
            case: self.case.clone(),
            verdict: res.action,
            meta: res.meta,
            frame: res.frame,
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
