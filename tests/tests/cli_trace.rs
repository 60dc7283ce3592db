//! `xlb trace` beside a running agent: its answers match where real packets
//! go for 100 flows (UDP and TCP, IPv4 and IPv6), each reason is reported
//! as the data path decides (existing flow, lookup-table slot, affinity, no
//! backend, source range, not a VIP, the reply of a UDP and a TCP flow),
//! and batches of traces change no pinned map (every key and value of every
//! map byte-identical before and after). The traces run in batches
//! (`xlb trace --batch`: one load of the program for many packets). Needs
//! root.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;
use xlb_tests::{udp_probe, udp_request, Probe, TcpSession, Topology};

/// The table size of `dns` and the other UDP services (small, so that the
/// slots span it).
const DNS_TABLE: u64 = 251;
/// The table size of `web`.
const WEB_TABLE: u64 = 509;
/// The UDP services' idle timeout, seconds: longer than the test.
const UDP_TIMEOUT: u32 = 600;
/// The agent's lookup-table array: room for every service's two regions.
const TABLE_ENTRIES: &str = "8192";

/// One traced flow.
#[derive(Clone, Copy, Debug)]
struct Flow {
    tcp: bool,
    fam: Fam,
    port: u16,
}

impl Flow {
    fn client(self) -> SocketAddr {
        SocketAddr::new(self.fam.client(), self.port)
    }
    fn vip(self) -> SocketAddr {
        self.fam.vip(if self.tcp { 80 } else { 53 })
    }
    fn service(self) -> &'static str {
        match (self.tcp, self.fam) {
            (false, Fam::V4) => "dns",
            (true, Fam::V4) => "web",
            (false, Fam::V6) => "dns6",
            (true, Fam::V6) => "web6",
        }
    }
    fn backend_port(self) -> u16 {
        if self.tcp {
            TCP_SESSION_PORT
        } else {
            UDP_BACKEND_PORT
        }
    }
    /// The batch line of this flow's packet: a SYN for a new TCP flow, an
    /// ACK for an existing one.
    fn line(self, new: bool) -> String {
        let proto = if self.tcp { "tcp" } else { "udp" };
        let syn = if self.tcp && new { " --syn" } else { "" };
        format!("{proto} {} {}{syn}", self.client(), self.vip())
    }
    /// The pod whose backend is `backend` ("ip:port").
    fn pod_of(self, backend: &str) -> Option<usize> {
        (0..3).find(|i| self.fam.pod_sock(*i, self.backend_port()).to_string() == backend)
    }
}

/// The 100 flows: 60 UDP and 30 TCP over IPv4, 10 UDP over IPv6.
fn hundred_flows() -> Vec<Flow> {
    let udp4 = (25000..25060).map(|port| Flow { tcp: false, fam: Fam::V4, port });
    let tcp4 = (27000..27030).map(|port| Flow { tcp: true, fam: Fam::V4, port });
    let udp6 = (25200..25210).map(|port| Flow { tcp: false, fam: Fam::V6, port });
    udp4.chain(tcp4).chain(udp6).collect()
}

fn client4(port: u16) -> String {
    SocketAddr::new(Topology::CLIENT_V4.into(), port).to_string()
}

/// `xlb trace --batch FILE -o json` of `lines` (ingress: the client-side
/// interface), asserted to succeed with one answer per line.
fn trace_batch(env: &Env, lines: &[String]) -> Vec<Value> {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "xlb-cli-trace-{}-{}.txt",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, lines.join("\n")).expect("write the batch file");
    let file = path.to_string_lossy().into_owned();
    let v = cli_json(env.agent(), &["trace", "--batch", &file, "--interface", &env.topo.client_if, "-o", "json"]);
    let _ = std::fs::remove_file(&path);
    let answers = v.as_array().unwrap_or_else(|| panic!("xlb trace --batch -o json is not an array: {v}")).clone();
    assert_eq!(answers.len(), lines.len(), "one answer per line: {v}");
    answers
}

/// The slot of a "lookup-table slot N" answer (also its `slot` field).
fn slot_of(t: &Value) -> u64 {
    let reason = t["reason"].as_str().unwrap_or_default();
    let n: u64 = reason
        .strip_prefix("lookup-table slot ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a new flow's reason is a lookup-table slot: {t}"));
    assert_eq!(t["slot"].as_u64(), Some(n), "the slot field is the reason's slot: {t}");
    n
}

/// `xlb maglev SERVICE -o json`: the table size and each backend's slots.
fn maglev(env: &Env, service: &str) -> (u64, HashMap<String, u64>) {
    let m = cli_json(env.agent(), &["maglev", service, "-o", "json"]);
    let size = m["table_size"].as_u64().unwrap_or_else(|| panic!("table_size in {m}"));
    let slots = m["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("backends in {m}"))
        .iter()
        .map(|b| (b["address"].as_str().unwrap_or_default().to_owned(), b["slots"].as_u64().unwrap_or(0)))
        .collect();
    (size, slots)
}

/// The real flow: one request from the flow's client port; the pod that
/// answered (from the VIP, having seen the node's SNAT address). TCP
/// connections stay open in `sessions` (their flows stay established).
fn real_backend(env: &Env, f: Flow, sessions: &mut Vec<TcpSession>) -> Result<usize, String> {
    if !f.tcp {
        return udp_flow_backend(env, f.fam, f.port, f.vip(), &|i| f.fam.pod_gw(i));
    }
    let ctx = format!("TCP from {} to {}", f.client(), f.vip());
    let mut s =
        TcpSession::connect_from(&env.topo.client, f.client(), f.vip(), T).map_err(|e| format!("{ctx}: {e:#}"))?;
    let reply = s.request(b"which pod?\n", T).map_err(|e| format!("{ctx}: {e:#}"))?;
    sessions.push(s);
    let (i, peer) = parse_reply(&reply).ok_or_else(|| format!("{ctx}: unexpected reply {reply:?}"))?;
    if peer != f.fam.pod_gw(i) {
        return Err(format!("{ctx}: pod{i} saw {peer}, not the node's SNAT address {}", f.fam.pod_gw(i)));
    }
    Ok(i)
}

/// The services: `dns`/`web`/`dns6` on the usual pods; `guarded` (UDP/54,
/// a source range without the client); `sticky` (UDP/55, session
/// affinity); `drained` (UDP/56, every backend of weight 0) and `empty`
/// (UDP/57, no backend). Small tables ([`DNS_TABLE`] slots, 509 for
/// `web`), so that the agent's lookup-table array is small
/// ([`TABLE_ENTRIES`]) and dumped quickly. The UDP services keep idle
/// flows for [`UDP_TIMEOUT`] s instead of the default 30 s: the test traces
/// its first UDP flows again as existing flows, which on a slow, loaded
/// machine can come more than 30 s after their last packet.
fn services() -> String {
    let udp = |i: usize| backend(Fam::V4, i, UDP_BACKEND_PORT);
    let vip: IpAddr = Topology::VIP_V4.into();
    let sized = |yaml: String, size: u64, extra: &str| {
        let timeout = if yaml.contains("    protocol: udp\n") {
            format!("    udp_timeout: {UDP_TIMEOUT}\n")
        } else {
            String::new()
        };
        yaml.replacen("    backends:", &format!("    maglev_table_size: {size}\n{timeout}{extra}    backends:"), 1)
    };
    let pods = |fam: Fam, port: u16| backends(fam, 0..3, port);
    let dns = sized(svc("dns", vip, 53, "udp", "snat", &pods(Fam::V4, UDP_BACKEND_PORT)), DNS_TABLE, "");
    let web = sized(svc("web", vip, 80, "tcp", "snat", &pods(Fam::V4, TCP_SESSION_PORT)), WEB_TABLE, "");
    let dns6 = sized(dns_svc("dns6", Fam::V6, "snat", 0..3), DNS_TABLE, "");
    let guarded = svc("guarded", vip, 54, "udp", "snat", &pods(Fam::V4, UDP_BACKEND_PORT));
    let guarded = sized(guarded, DNS_TABLE, "    source_ranges: [10.100.1.0/24]\n");
    let sticky = svc("sticky", vip, 55, "udp", "snat", &pods(Fam::V4, UDP_BACKEND_PORT));
    let sticky = sized(sticky, DNS_TABLE, "    session_affinity_timeout: 600\n");
    let zero: Vec<String> = (0..3).map(|i| format!("{{address: \"{}\", weight: 0}}", udp(i))).collect();
    let drained = sized(svc("drained", vip, 56, "udp", "snat", &zero), DNS_TABLE, "");
    let empty = sized(svc("empty", vip, 57, "udp", "snat", &[]), DNS_TABLE, "");
    config(&[dns, web, dns6, guarded, sticky, drained, empty])
}

#[test]
fn trace_answers_match_real_packets_for_100_flows_and_change_nothing() {
    let mut env = Env::start(3, &services(), &["--table-entries", TABLE_ENTRIES]);
    env.servers.extend(udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT));
    env.servers.extend(udp_servers(&env.topo, Fam::V6, 0..3, UDP_BACKEND_PORT));
    env.servers.extend(tcp_session_servers(&env.topo, Fam::V4, 0..3, TCP_SESSION_PORT));
    let flows = hundred_flows();
    assert_eq!(flows.len(), 100);

    // 1. New flows: the trace names the service, a table slot within the
    // service's table (as `xlb maglev` reports it) and the backend that
    // table holds in that slot.
    let new: Vec<String> = flows.iter().map(|f| f.line(true)).collect();
    let answers = trace_batch(&env, &new);
    let tables: HashMap<&str, (u64, HashMap<String, u64>)> =
        ["dns", "web", "dns6"].into_iter().map(|s| (s, maglev(&env, s))).collect();
    assert_eq!(tables["dns"].0, DNS_TABLE, "xlb maglev dns shows the configured table size");
    assert_eq!(tables["web"].0, WEB_TABLE, "xlb maglev web shows the configured table size");
    // The table `xlb maglev` reads: each service's live region of the
    // pinned lookup-table array, and its backends by id.
    let view = xlb::bpf::view::MapsView::open_pinned(env.pin.path()).expect("open the pinned maps");
    let rows = xlb::state::reader::services(&view).expect("read the services");
    let table_holds = |service: &str, slot: u64| -> String {
        let row = rows.iter().find(|r| r.name == service).unwrap_or_else(|| panic!("{service} programmed"));
        let (offset, size) = row.table;
        assert_eq!(u64::from(size), tables[service].0, "{service}: the table xlb maglev reports");
        let id = view.table.get(&(offset + u32::try_from(slot).unwrap()), 0).expect("XLB_TABLE entry");
        let b = row.backend_rows.iter().find(|b| b.id == id).unwrap_or_else(|| panic!("{service}: backend #{id}"));
        b.address.clone()
    };
    let mut slot_backend: BTreeMap<(&str, u64), String> = BTreeMap::new();
    let mut predicted = Vec::new();
    for (f, t) in flows.iter().zip(&answers) {
        assert_eq!(t["service"], f.service(), "{t}");
        assert_eq!(t["verdict"], "forward", "{t}");
        let slot = slot_of(t);
        let backend = t["backend"].as_str().unwrap_or_else(|| panic!("backend in {t}")).to_owned();
        let (size, slots) = &tables[f.service()];
        assert!(slot < *size, "slot {slot} within {}'s table of {size} (xlb maglev): {t}", f.service());
        assert!(slots.get(&backend).is_some_and(|n| *n > 0), "{backend} holds slots in xlb maglev: {slots:?}, {t}");
        assert_eq!(
            table_holds(f.service(), slot),
            backend,
            "the backend in slot {slot} of {}'s table: {t}",
            f.service()
        );
        if let Some(other) = slot_backend.insert((f.service(), slot), backend.clone()) {
            assert_eq!(other, backend, "slot {slot} of {} names one backend", f.service());
        }
        predicted.push(f.pod_of(&backend).unwrap_or_else(|| panic!("{backend} is none of the pods' backends: {t}")));
    }
    let dns_slots: Vec<u64> = slot_backend.keys().filter(|(s, _)| *s == "dns").map(|(_, n)| *n).collect();
    assert!(dns_slots.len() >= 30, "60 dns flows spread over the table's slots: {dns_slots:?}");

    // 2. The real packets of those flows reach the predicted pods.
    let mut sessions = Vec::new();
    let mut wrong = Vec::new();
    for (f, want) in flows.iter().zip(&predicted) {
        match real_backend(&env, *f, &mut sessions) {
            Ok(got) if got == *want => {}
            Ok(got) => wrong.push(format!("{}: trace said pod{want}, the real packet reached pod{got}", f.line(true))),
            Err(e) => wrong.push(e),
        }
        assert!(wrong.len() < 5, "{}{}", wrong.join("\n"), env.diag());
    }
    assert!(wrong.is_empty(), "{} of 100 flows went elsewhere:\n{}{}", wrong.len(), wrong.join("\n"), env.diag());

    // Session affinity: a real flow from 28000 makes the client sticky.
    let sticky_vip = vip4(55);
    let sticky_pod = udp_flow_backend(&env, Fam::V4, 28000, sticky_vip, &|i| Fam::V4.pod_gw(i))
        .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
    let sticky_backend = backend(Fam::V4, sticky_pod, UDP_BACKEND_PORT);

    // 3. Existing flows, replies and every other reason, in one batch.
    let (udp0, tcp0) = (flows[0], flows[60]);
    let (udp0_be, tcp0_be) = (answers[0]["backend"].as_str().unwrap(), answers[60]["backend"].as_str().unwrap());
    let mut again: Vec<String> = flows.iter().map(|f| f.line(false)).collect();
    let extra = [
        format!("udp {} {} --reply {udp0_be}", udp0.client(), udp0.vip()),
        format!("tcp {} {} --reply {tcp0_be}", tcp0.client(), tcp0.vip()),
        format!("udp {} {sticky_vip}", client4(28001)),
        format!("udp {} {sticky_vip}", client4(28000)),
        format!("udp {} {}", client4(28002), vip4(56)),
        format!("udp {} {}", client4(28003), vip4(57)),
        format!("udp {} {}", client4(28004), vip4(54)),
        format!("udp 10.100.1.7:4000 {}", vip4(54)),
        format!("udp {} 192.0.2.99:53", client4(28005)),
        format!("tcp {} {}", client4(28006), vip4(8080)),
    ];
    again.extend(extra.iter().cloned());
    let answers2 = trace_batch(&env, &again);
    for ((f, t), want) in flows.iter().zip(&answers2).zip(&predicted) {
        let backend = f.fam.pod_sock(*want, f.backend_port()).to_string();
        assert_eq!((t["reason"].as_str(), t["verdict"].as_str()), (Some("existing flow"), Some("forward")), "{t}");
        assert!(t["slot"].is_null(), "no slot for an existing flow: {t}");
        assert_eq!(t["service"], f.service(), "{t}");
        assert_eq!(t["backend"].as_str(), Some(backend.as_str()), "{t}");
        // It leaves toward the backend, from the node's SNAT address, on the pod's link.
        assert_eq!(t["out"]["dst"].as_str(), Some(backend.as_str()), "{t}");
        let src: SocketAddr =
            t["out"]["src"].as_str().unwrap_or_default().parse().unwrap_or_else(|e| panic!("{e}: {t}"));
        assert_eq!(src.ip(), f.fam.pod_gw(*want), "SNAT source: {t}");
        assert_eq!(t["out"]["interface"].as_str(), Some(env.topo.pod_ifs[*want].as_str()), "egress: {t}");
    }
    let r = &answers2[100..];
    // The replies of a UDP and a TCP flow, translated back to VIP -> client.
    for (t, f) in [(&r[0], udp0), (&r[1], tcp0)] {
        assert_eq!(
            (t["reason"].as_str(), t["verdict"].as_str()),
            (Some("reply of a tracked flow"), Some("forward")),
            "{t}"
        );
        assert!(t["service"].is_null(), "{t}");
        assert_eq!(t["out"]["src"].as_str(), Some(f.vip().to_string().as_str()), "{t}");
        assert_eq!(t["out"]["dst"].as_str(), Some(f.client().to_string().as_str()), "{t}");
        assert_eq!(t["out"]["interface"].as_str(), Some(env.topo.client_if.as_str()), "{t}");
    }
    assert_eq!(r[1]["packet"].as_str().map(|p| p.starts_with("tcp ")), Some(true), "{}", r[1]);
    assert_eq!(r[1]["backend"].as_str(), Some(tcp0_be), "the TCP reply's backend: {}", r[1]);
    // Affinity: a new flow of the sticky client goes to its backend; the
    // flow that made it sticky is an existing flow.
    let t = &r[2];
    assert_eq!((t["service"].as_str(), t["reason"].as_str()), (Some("sticky"), Some("affinity")), "{t}");
    assert_eq!((t["verdict"].as_str(), t["backend"].as_str()), (Some("forward"), Some(sticky_backend.as_str())), "{t}");
    assert!(t["slot"].is_null(), "{t}");
    assert_eq!(
        (r[3]["reason"].as_str(), r[3]["backend"].as_str()),
        (Some("existing flow"), Some(sticky_backend.as_str()))
    );
    // No backend: every weight 0, or none at all.
    for (t, name) in [(&r[4], "drained"), (&r[5], "empty")] {
        assert_eq!(t["service"], name, "{t}");
        assert_eq!((t["reason"].as_str(), t["verdict"].as_str()), (Some("no backend"), Some("reject")), "{t}");
        assert!(t["backend"].is_null() && t["out"].is_null(), "{t}");
    }
    // Source range: the client is outside, 10.100.1.7 inside.
    let t = &r[6];
    assert_eq!(t["service"], "guarded", "{t}");
    assert_eq!((t["reason"].as_str(), t["verdict"].as_str()), (Some("source range refused"), Some("drop")), "{t}");
    assert!(t["backend"].is_null(), "{t}");
    assert_eq!((r[7]["service"].as_str(), r[7]["verdict"].as_str()), (Some("guarded"), Some("forward")), "{}", r[7]);
    assert!(r[7]["reason"].as_str().unwrap_or_default().starts_with("lookup-table slot "), "{}", r[7]);
    // Not a VIP; a VIP's port without a service.
    for (t, why) in [(&r[8], "not a VIP"), (&r[9], "no service on this port of the VIP")] {
        assert_eq!((t["reason"].as_str(), t["verdict"].as_str()), (Some(why), Some("pass")), "{t}");
        assert!(t["service"].is_null() && t["backend"].is_null() && t["out"].is_null(), "{t}");
    }

    // The real packets agree: the sticky client's new flow reaches its
    // pod; the drained service refuses; the guarded one drops silently.
    let got = udp_flow_backend(&env, Fam::V4, 28001, sticky_vip, &|i| Fam::V4.pod_gw(i))
        .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
    assert_eq!(got, sticky_pod, "the affinity trace said pod{sticky_pod}, the real packet reached pod{got}");
    let probe = udp_probe(&env.topo.client, vip4(56), b"anyone?", T).expect("probe drained");
    assert_eq!(probe, Probe::Refused, "the no-backend trace said reject{}", env.diag());
    let quiet =
        udp_request(&env.topo.client, Some(Fam::V4.unspecified(28004)), vip4(54), b"x", Duration::from_millis(500));
    assert!(quiet.is_err(), "the source-range trace said drop, the real packet was answered: {quiet:?}");

    // 4. Nothing changes: close the TCP connections, stop the agent (its
    // heartbeat is the only other writer; its maps stay pinned), then dump
    // every pinned map before and after a batch of every kind of trace.
    drop(sessions);
    std::thread::sleep(Duration::from_millis(300));
    env.agent_mut().stop().expect("stop the agent");
    let pin = env.pin.path().to_path_buf();
    let before = dump_all(&pin);
    assert!(before.len() >= 20, "every pinned map dumped: {:?}", before.keys().collect::<Vec<_>>());
    let in_table = before.iter().find(|(k, _)| k.ends_with("XLB_FLOWS")).map_or(0, |(_, v)| v.len());
    assert!(in_table >= 70, "the real UDP flows are in the dump ({in_table})");
    let mut all = new.clone();
    all.extend(extra.iter().cloned());
    all.extend((26000..26020u16).map(|p| format!("udp {} {}", client4(p), vip4(53))));
    all.extend((26000..26010u16).map(|p| format!("tcp {} {} --syn", client4(p), vip4(80))));
    all.push(format!("udp {} {sticky_vip}", client4(28007)));
    let answers3 = trace_batch(&env, &all);
    let after = dump_all(&pin);
    // The stopped agent's maps give the same answers.
    // (those that do not depend on how old the flows are: UDP flows expire
    // after 30 s).
    for (i, (a, b)) in answers3[100..100 + extra.len()].iter().zip(r).enumerate().skip(4) {
        assert_eq!((&a["reason"], &a["backend"]), (&b["reason"], &b["backend"]), "extra line {i}: {a} vs {b}");
    }
    assert_eq!(answers3.last().map(|t| t["reason"].clone()), Some("affinity".into()), "{:?}", answers3.last());
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "the same pinned maps");
    for (name, entries) in &before {
        let other = &after[name];
        assert!(
            entries == other,
            "{name} changed under xlb trace ({} entries before, {} after)",
            entries.len(),
            other.len()
        );
    }
}

// --- every entry of every pinned map, by raw bpf(2) calls ---

/// A map's (key, value) pairs.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> i64 {
    // SAFETY: bpf(2) with a zero-padded attribute buffer of its size whose
    // pointers (set by the callers) outlive the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

fn put32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn possible_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("cpu/possible");
    s.trim().split(',').map(|r| r.split('-').next_back().unwrap().parse::<usize>().unwrap() + 1).max().unwrap()
}

/// Every (key, value) of the map pinned at `path`, in key-iteration order
/// (sorted, so that a changed iteration order alone is no difference).
fn dump_map(path: &Path) -> Entries {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut a = [0u8; 128];
    put64(&mut a, 0, c.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut a);
    assert!(fd >= 0, "BPF_OBJ_GET {}: {}", path.display(), std::io::Error::last_os_error());
    let fd = fd as u32;
    let mut info = [0u8; 256];
    let mut a = [0u8; 128];
    put32(&mut a, 0, fd);
    put32(&mut a, 4, info.len() as u32);
    put64(&mut a, 8, info.as_mut_ptr() as u64);
    assert_eq!(bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a), 0, "map info of {}", path.display());
    let word = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().unwrap()) as usize;
    let (ty, key_size, value_size) = (word(0), word(8), word(12));
    // Per-CPU hash, per-CPU array, LRU per-CPU hash: one value per possible CPU.
    let percpu = matches!(ty, 5 | 6 | 10);
    let vlen = if percpu { value_size.div_ceil(8) * 8 * possible_cpus() } else { value_size };
    let mut out = lookup_batch(fd, key_size, vlen).unwrap_or_else(|| lookup_each(fd, key_size, vlen));
    // An array has every index (the batch lookup returned them all).
    if matches!(ty, 2 | 6) {
        assert_eq!(out.len(), word(16), "{}: every entry of the array", path.display());
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd as i32) };
    out.sort();
    out
}

/// Every entry by `BPF_MAP_LOOKUP_BATCH`, a few thousand per call (the
/// arrays have up to 131072 entries: one call per entry took a minute);
/// `None` when the map type has no batch operations (an LPM trie, a devmap).
fn lookup_batch(fd: u32, key_size: usize, vlen: usize) -> Option<Entries> {
    const CHUNK: usize = 4096;
    let mut keys = vec![0u8; key_size * CHUNK];
    let mut values = vec![0u8; vlen * CHUNK];
    // The batch token: a key (arrays) or a bucket number (hashes).
    let (mut token_in, mut token_out) = (vec![0u8; key_size.max(8)], vec![0u8; key_size.max(8)]);
    let mut out = Vec::new();
    for round in 0..100_000 {
        let mut a = [0u8; 128];
        put64(&mut a, 0, if round == 0 { 0 } else { token_in.as_ptr() as u64 });
        put64(&mut a, 8, token_out.as_mut_ptr() as u64);
        put64(&mut a, 16, keys.as_mut_ptr() as u64);
        put64(&mut a, 24, values.as_mut_ptr() as u64);
        put32(&mut a, 32, CHUNK as u32);
        put32(&mut a, 36, fd);
        let rc = bpf(BPF_MAP_LOOKUP_BATCH, &mut a);
        let err = std::io::Error::last_os_error().raw_os_error();
        let count = u32::from_ne_bytes(a[32..36].try_into().unwrap()) as usize;
        if rc != 0 && err != Some(libc::ENOENT) {
            assert_eq!(round, 0, "BPF_MAP_LOOKUP_BATCH failed midway: {:?}", std::io::Error::last_os_error());
            return None;
        }
        for i in 0..count.min(CHUNK) {
            out.push((keys[i * key_size..(i + 1) * key_size].to_vec(), values[i * vlen..(i + 1) * vlen].to_vec()));
        }
        if rc != 0 {
            return Some(out);
        }
        token_in.copy_from_slice(&token_out);
    }
    panic!("BPF_MAP_LOOKUP_BATCH did not end");
}

/// Every entry, one `BPF_MAP_GET_NEXT_KEY` and `BPF_MAP_LOOKUP_ELEM` each.
fn lookup_each(fd: u32, key_size: usize, vlen: usize) -> Entries {
    let mut out = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    for _ in 0..20_000_000 {
        let mut next = vec![0u8; key_size];
        let mut a = [0u8; 128];
        put32(&mut a, 0, fd);
        put64(&mut a, 8, key.as_ref().map_or(0, |k| k.as_ptr() as u64));
        put64(&mut a, 16, next.as_mut_ptr() as u64);
        if bpf(BPF_MAP_GET_NEXT_KEY, &mut a) != 0 {
            break;
        }
        let mut value = vec![0u8; vlen];
        let mut a = [0u8; 128];
        put32(&mut a, 0, fd);
        put64(&mut a, 8, next.as_ptr() as u64);
        put64(&mut a, 16, value.as_mut_ptr() as u64);
        if bpf(BPF_MAP_LOOKUP_ELEM, &mut a) != 0 {
            value = b"<no value>".to_vec();
        }
        out.push((next.clone(), value));
        key = Some(next);
    }
    out
}

/// Every map pinned under the pin path's map directories (`v<N>/`).
fn dump_all(pin: &Path) -> BTreeMap<String, Entries> {
    let mut all = BTreeMap::new();
    for dir in std::fs::read_dir(pin).expect("read the pin path").flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if !(dir.path().is_dir() && name.starts_with('v') && name[1..].chars().all(|c| c.is_ascii_digit())) {
            continue;
        }
        for map in std::fs::read_dir(dir.path()).expect("read the map directory").flatten() {
            let key = format!("{name}/{}", map.file_name().to_string_lossy());
            all.insert(key, dump_map(&map.path()));
        }
    }
    all
}
