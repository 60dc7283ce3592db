//! `xlb trace` beside a running agent: its answers match where real packets
//! go, and a batch of traces changes no pinned map (every key and value of
//! every map byte-identical before and after). Needs root.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use common::*;
use serde_json::Value;
use xlb_tests::Topology;

const CLIENT: Ipv4 = Topology::CLIENT_V4;
type Ipv4 = std::net::Ipv4Addr;

fn client(port: u16) -> String {
    SocketAddr::new(CLIENT.into(), port).to_string()
}

/// `xlb trace ARGS -o json`, asserted to succeed.
fn trace(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["trace"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    cli_json(env.agent(), &all)
}

/// The pod index of a backend "ip:port" of `backends(Fam::V4, 0..3, port)`.
fn pod_of(backend: &str, port: u16) -> usize {
    (0..3)
        .find(|i| SocketAddr::new(Fam::V4.pod_addr(*i), port).to_string() == backend)
        .unwrap_or_else(|| panic!("{backend} is none of the pods' backends"))
}

#[test]
fn trace_answers_match_real_packets_and_change_nothing() {
    let guarded =
        svc("guarded", Topology::VIP_V4.into(), 54, "udp", "snat", &backends(Fam::V4, 0..3, UDP_BACKEND_PORT))
            .replacen("    backends:", "    source_ranges: [10.100.1.0/24]\n    backends:", 1);
    let mut services = dns_and_web(Fam::V4, "snat", 0..3);
    services.push(guarded);
    services.push(dns_svc("dns6", Fam::V6, "snat", 0..3));
    let mut env = Env::start(3, &config(&services), &[]);
    env.servers.extend(udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT));
    env.servers.extend(udp_servers(&env.topo, Fam::V6, 0..3, UDP_BACKEND_PORT));
    let vip53 = vip4(53).to_string();

    // New clients: the trace names the service, a table slot and the
    // backend; the real packet sent afterwards reaches that backend.
    for port in 25000..25012u16 {
        let t = trace(&env, &["udp", &client(port), &vip53]);
        assert_eq!(t["service"], "dns", "{t}");
        assert_eq!(t["verdict"], "forward", "{t}");
        let reason = t["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("lookup-table slot "), "new client: {t}");
        assert!(reason["lookup-table slot ".len()..].parse::<u32>().is_ok(), "slot number in {t}");
        let backend = t["backend"].as_str().unwrap_or_else(|| panic!("backend in {t}")).to_string();
        let want = pod_of(&backend, UDP_BACKEND_PORT);
        let real = udp_flow_backend(&env, Fam::V4, port, vip4(53), &|i| Fam::V4.pod_gw(i))
            .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
        assert_eq!(real, want, "trace said {backend} for port {port}, the real packet reached pod {real}: {t}");
        // Now a flow exists: the same backend, as an existing flow.
        let again = trace(&env, &["udp", &client(port), &vip53]);
        assert_eq!(again["reason"], "existing flow", "{again}");
        assert_eq!(again["backend"].as_str(), Some(backend.as_str()), "{again}");
        // Its packet leaves toward the backend from the node's SNAT address.
        let out = &again["out"];
        assert_eq!(out["dst"].as_str(), Some(backend.as_str()), "{again}");
        let src: SocketAddr =
            out["src"].as_str().unwrap_or_default().parse().unwrap_or_else(|e| panic!("{e}: {again}"));
        assert_eq!(src.ip(), Fam::V4.pod_gw(want), "SNAT source: {again}");
        assert_eq!(out["interface"].as_str(), Some(env.topo.pod_ifs[want].as_str()), "egress: {again}");
        if port == 25000 {
            // The reply of that flow: from the backend to the SNAT address,
            // translated back to VIP -> client.
            let r = trace(&env, &["udp", &client(port), &vip53, "--reply", &backend]);
            assert_eq!(r["reason"], "reply of a tracked flow", "{r}");
            assert_eq!(r["verdict"], "forward", "{r}");
            assert_eq!(r["out"]["src"].as_str(), Some(vip53.as_str()), "{r}");
            assert_eq!(r["out"]["dst"].as_str(), Some(client(port).as_str()), "{r}");
            assert_eq!(r["out"]["interface"].as_str(), Some(env.topo.client_if.as_str()), "{r}");
        }
    }

    // IPv6: the trace's backend is where the real packet goes.
    for port in 25200..25204u16 {
        let c6 = SocketAddr::new(Fam::V6.client(), port).to_string();
        let t = trace(&env, &["udp", &c6, &vip6(53).to_string()]);
        assert_eq!(t["service"], "dns6", "{t}");
        assert!(t["reason"].as_str().unwrap_or_default().starts_with("lookup-table slot "), "{t}");
        let backend = t["backend"].as_str().unwrap_or_else(|| panic!("backend in {t}")).to_string();
        let want = (0..3)
            .find(|i| Fam::V6.pod_sock(*i, UDP_BACKEND_PORT).to_string() == backend)
            .unwrap_or_else(|| panic!("{backend} is none of the pods' IPv6 backends"));
        let real = udp_flow_backend(&env, Fam::V6, port, vip6(53), &|i| Fam::V6.pod_gw(i))
            .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
        assert_eq!(real, want, "IPv6: trace said {backend}, the real packet reached pod {real}: {t}");
        let again = trace(&env, &["udp", &c6, &vip6(53).to_string()]);
        assert_eq!(again["reason"], "existing flow", "{again}");
        assert_eq!(again["out"]["dst"].as_str(), Some(backend.as_str()), "{again}");
    }

    // Not a VIP.
    let t = trace(&env, &["udp", &client(25100), "192.0.2.99:53"]);
    assert_eq!((t["reason"].as_str(), t["verdict"].as_str()), (Some("not a VIP"), Some("pass")), "{t}");
    assert!(t["service"].is_null() && t["backend"].is_null(), "{t}");
    // A source range that excludes the client.
    let t = trace(&env, &["udp", &client(25101), &vip4(54).to_string()]);
    assert_eq!(t["service"], "guarded", "{t}");
    assert_eq!((t["reason"].as_str(), t["verdict"].as_str()), (Some("source range refused"), Some("drop")), "{t}");
    // A client inside the range is admitted.
    let t = trace(&env, &["udp", "10.100.1.7:4000", &vip4(54).to_string()]);
    assert_eq!(t["verdict"], "forward", "{t}");
    // A TCP SYN to web.
    let t = trace(&env, &["tcp", &client(25102), &vip4(80).to_string(), "--syn"]);
    assert_eq!(t["service"], "web", "{t}");
    assert!(t["reason"].as_str().unwrap_or_default().starts_with("lookup-table slot "), "{t}");

    // Nothing changes: stop the agent (its heartbeat is the only other
    // writer; its maps stay pinned), then dump every pinned map before and
    // after a batch of traces of every kind.
    env.agent_mut().stop().expect("stop the agent");
    let pin = env.pin.path().to_path_buf();
    let before = dump_all(&pin);
    assert!(before.len() >= 20, "every pinned map dumped: {:?}", before.keys().collect::<Vec<_>>());
    let flows = before.iter().find(|(k, _)| k.ends_with("XLB_FLOWS")).map_or(0, |(_, v)| v.len());
    assert!(flows >= 16, "the real flows are in the dump ({flows})");
    let ci = env.topo.client_if.clone();
    let batch: Vec<Vec<String>> = vec![
        vec!["udp".into(), client(25000), vip53.clone()],
        vec!["udp".into(), client(26000), vip53.clone()],
        vec!["udp".into(), client(26001), vip4(54).to_string()],
        vec!["udp".into(), "10.100.1.7:4000".into(), vip4(54).to_string()],
        vec!["udp".into(), client(26002), "192.0.2.99:53".into()],
        vec!["tcp".into(), client(26003), vip4(80).to_string(), "--syn".into()],
        vec!["tcp".into(), client(26004), vip4(80).to_string()],
        vec!["udp".into(), SocketAddr::new(Fam::V6.client(), 25200).to_string(), vip6(53).to_string()],
        vec!["udp".into(), SocketAddr::new(Fam::V6.client(), 26005).to_string(), vip6(53).to_string()],
    ];
    let first = trace(&env, &["udp", &client(25000), &vip53, "--interface", &ci]);
    let backend = first["backend"].as_str().expect("backend").to_string();
    let mut runs = 0;
    for args in &batch {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend_from_slice(&["--interface", &ci]);
        let t = trace(&env, &a);
        assert!(t["verdict"].is_string(), "{t}");
        runs += 1;
    }
    let r = trace(&env, &["udp", &client(25000), &vip53, "--reply", &backend, "--interface", &ci]);
    assert_eq!(r["reason"], "reply of a tracked flow", "{r}");
    assert_eq!(runs, batch.len());
    let after = dump_all(&pin);
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
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd as i32) };
    out.sort();
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
