//! Two LB nodes behind an ECMP router: with the same configuration and hash
//! seed, both nodes pick the same backend for a flow, so when one node goes
//! away the flows it carried keep their backend through the other one.
//!
//! ```text
//!                           ┌─ r1 ── ext [lb1] int ── l1 ─┐
//!  [client] eth0 ── rc [router]                            [podnet] p<i> ── eth0 [pod<i>]
//!                           └─ r2 ── ext [lb2] int ── l2 ─┘
//! ```
//!
//! * client 10.200.0.2/24, router 10.200.0.1/24 on `rc`;
//! * router–lb<n>: 10.201.<n>.0/24 (router .2, lb .1); the router has
//!   `192.0.2.0/24 nexthop via 10.201.1.1 nexthop via 10.201.2.1` with
//!   `fib_multipath_hash_policy=1` (L4 hash);
//! * lb<n>–podnet: 10.202.<n>.0/24 (lb .1, podnet .2);
//! * podnet–pod<i>: 10.1.<i>.0/24 (podnet .1, pod .2).
//!
//! Each lb node runs `xlb agent` on `ext` and `int` with the same file and
//! `--hash-seed 7`; the service is `source: preserve`, so pods see the
//! client's address and the client port names the flow. Pods only record
//! which client ports reached them (no replies needed).
//!
//! Needs root; run with `--test-threads=1`.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xlb_tests::{cleanup_stale, Agent, Netns, PinDir, PREFIX};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VIP_PORT: u16 = 53;
const BACKEND_PORT: u16 = 5353;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const PODS: usize = 3;
const FLOWS: u16 = 200;
const FIRST_PORT: u16 = 30000;
const HASH_SEED: &str = "7";
/// Bound of each phase's wait for the pods to record every flow.
const PHASE_WAIT: Duration = Duration::from_secs(5);
/// Missing flows are sent again (same socket, so same flow) this often.
const RESEND_EVERY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Topology

/// Owns the namespaces and the configuration file: on drop, stops every
/// process started through the namespaces (only those), deletes the
/// namespaces (which removes the veths and the XDP programs on them) and
/// removes the file.
struct Net {
    created: Vec<Netns>,
    config: Option<PathBuf>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            ns.stop_children(Duration::from_secs(10));
        }
        for ns in self.created.iter().rev() {
            let out = Command::new("ip")
                .args(["netns", "del", &ns.name])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "multinode: cannot delete netns {}: {}",
                    ns.name,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("multinode: cannot run ip netns del {}: {e}", ns.name),
            }
        }
        if let Some(p) = &self.config {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip(ns: &Netns, args: &[&str]) {
    ns.ip(args)
        .unwrap_or_else(|e| panic!("ip -n {} {}: {e:#}", ns.name, args.join(" ")));
}

fn ip_out(ns: &Netns, args: &[&str]) -> String {
    match ns.ip(args) {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(ip -n {} {} failed: {e:#})", ns.name, args.join(" ")),
    }
}

/// Writes `/proc/sys/<key>` from a thread inside `ns`.
fn sysctl(ns: &Netns, key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    ns.run(|| std::fs::write(&path, value))
        .unwrap_or_else(|e| panic!("netns {}: cannot set {path} to {value}: {e}", ns.name));
}

/// rp_filter off on every interface of `ns` (all, default and each device).
fn rp_filter_off(ns: &Netns) {
    let names: Vec<String> = ns.run(|| {
        std::fs::read_dir("/proc/sys/net/ipv4/conf")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    });
    assert!(names.iter().any(|n| n == "all"), "netns {}: no /proc/sys/net/ipv4/conf/all", ns.name);
    for n in names {
        sysctl(ns, &format!("net/ipv4/conf/{n}/rp_filter"), "0");
    }
}

impl Net {
    fn add(&mut self, name: String, forwarding: bool) -> Netns {
        sh("ip", &["netns", "add", &name]);
        let ns = Netns::existing(name);
        self.created.push(ns.clone());
        ip(&ns, &["link", "set", "lo", "up"]);
        // Before any veth exists, so new interfaces inherit these.
        sysctl(&ns, "net/ipv4/conf/all/rp_filter", "0");
        sysctl(&ns, "net/ipv4/conf/default/rp_filter", "0");
        sysctl(&ns, "net/ipv6/conf/all/accept_dad", "0");
        sysctl(&ns, "net/ipv6/conf/default/accept_dad", "0");
        if forwarding {
            sysctl(&ns, "net/ipv4/ip_forward", "1");
        }
        ns
    }
}

/// A veth pair `a_if` (in `a`, address `a_addr`) — `b_if` (in `b`,
/// `b_addr`), both up.
fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    ip(a, &["link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name]);
    ip(a, &["addr", "add", a_addr, "dev", a_if]);
    ip(b, &["addr", "add", b_addr, "dev", b_if]);
    ip(a, &["link", "set", a_if, "up"]);
    ip(b, &["link", "set", b_if, "up"]);
}

/// Waits (bounded) until every veth of `ns` has its carrier.
fn wait_carrier(ns: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let links = ip_out(ns, &["-o", "link", "show"]);
        let down = links
            .lines()
            .filter(|l| l.contains('@'))
            .any(|l| !l.contains("LOWER_UP"));
        if !down {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "netns {}: links without carrier after 10 s:\n{links}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one datagram from `ns` to `to` (a closed port) so that the
/// neighbour entries on the way get resolved before the real traffic.
fn poke(ns: &Netns, to: &str) {
    let to: SocketAddr = format!("{to}:9").parse().unwrap();
    ns.run(|| -> std::io::Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.send_to(b"warm-up", to)?;
        Ok(())
    })
    .unwrap_or_else(|e| panic!("netns {}: warm-up datagram to {to}: {e}", ns.name));
}

// ---------------------------------------------------------------------------
// Pods: record which client ports reached which pod

/// Per phase (0, 1): client port → pod tag. Plus anything unexpected.
#[derive(Default)]
struct Records {
    phases: [HashMap<u16, String>; 2],
    /// A port seen by two pods within one phase.
    conflicts: Vec<String>,
    /// Datagrams whose source was not the client (preserve broken) or whose
    /// payload did not parse.
    odd: Vec<String>,
}

struct Recorders {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    records: Arc<Mutex<Records>>,
}

impl Recorders {
    fn start(pods: &[Netns]) -> Recorders {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Records::default()));
        let mut threads = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let bind = SocketAddr::from((Ipv4Addr::new(10, 1, i as u8, 2), BACKEND_PORT));
            let sock = pod
                .run(|| UdpSocket::bind(bind))
                .unwrap_or_else(|e| panic!("bind {bind} in {}: {e}", pod.name));
            sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let tag = format!("pod{i}");
            let (stop, records) = (stop.clone(), records.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("recorder-{tag}"))
                    .spawn(move || {
                        let mut buf = [0u8; 2048];
                        while !stop.load(Ordering::SeqCst) {
                            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                                continue;
                            };
                            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                            let mut r = records.lock().unwrap_or_else(|e| e.into_inner());
                            if peer.ip() != CLIENT {
                                r.odd.push(format!("{tag} got {text:?} from {peer}"));
                                continue;
                            }
                            // Payload: "phase<N> <port>".
                            let phase = match text.split_whitespace().next() {
                                Some("phase1") => 0,
                                Some("phase2") => 1,
                                _ => {
                                    r.odd.push(format!("{tag} got {text:?} from {peer}"));
                                    continue;
                                }
                            };
                            let port = peer.port();
                            match r.phases[phase].get(&port) {
                                Some(old) if *old != tag => {
                                    let c = format!(
                                        "phase {}: port {port} reached {old} and {tag}",
                                        phase + 1
                                    );
                                    r.conflicts.push(c);
                                }
                                Some(_) => {}
                                None => {
                                    r.phases[phase].insert(port, tag.clone());
                                }
                            }
                        }
                    })
                    .unwrap(),
            );
        }
        Recorders { stop, threads, records }
    }

    fn snapshot(&self) -> (HashMap<u16, String>, HashMap<u16, String>, Vec<String>, Vec<String>) {
        let r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        (
            r.phases[0].clone(),
            r.phases[1].clone(),
            r.conflicts.clone(),
            r.odd.clone(),
        )
    }

    fn recorded(&self, phase: usize) -> HashMap<u16, String> {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).phases[phase].clone()
    }
}

impl Drop for Recorders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends phase `phase` (0 or 1) of every flow, then waits (at most
/// [`PHASE_WAIT`]) until the pods recorded them all, sending the missing
/// ones again every [`RESEND_EVERY`]. Returns the recording and the time it
/// took.
fn run_phase(
    phase: usize,
    flows: &[(u16, UdpSocket)],
    recorders: &Recorders,
) -> (HashMap<u16, String>, Duration) {
    let vip = SocketAddr::from((VIP, VIP_PORT));
    let send = |port: u16, sock: &UdpSocket| {
        let payload = format!("phase{} {port}", phase + 1);
        if let Err(e) = sock.send_to(payload.as_bytes(), vip) {
            eprintln!("multinode: phase {}: send from port {port}: {e}", phase + 1);
        }
    };
    let start = Instant::now();
    for (port, sock) in flows {
        send(*port, sock);
    }
    let mut last_send = Instant::now();
    let mut resends = 0;
    loop {
        let got = recorders.recorded(phase);
        if got.len() >= flows.len() || start.elapsed() >= PHASE_WAIT {
            if resends > 0 {
                eprintln!("multinode: phase {}: {resends} datagrams sent again", phase + 1);
            }
            return (got, start.elapsed());
        }
        if last_send.elapsed() >= RESEND_EVERY {
            for (port, sock) in flows {
                if !got.contains_key(port) {
                    send(*port, sock);
                    resends += 1;
                }
            }
            last_send = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spread(m: &HashMap<u16, String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for tag in m.values() {
        *out.entry(tag.clone()).or_insert(0) += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Agents

fn stats(agent: &Agent) -> Result<BTreeMap<String, u64>, String> {
    let out = agent
        .cli(&["stats", "-o", "json"])
        .map_err(|e| format!("cannot run xlb stats: {e:#}"))?;
    if !out.status.success() {
        return Err(format!(
            "xlb stats failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!("xlb stats -o json printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })?;
    let obj = v.as_object().ok_or_else(|| format!("xlb stats -o json is not an object: {v}"))?;
    Ok(obj
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
        .collect())
}

fn flow_new(agent: &Agent, name: &str) -> u64 {
    let s = stats(agent).unwrap_or_else(|e| panic!("{name}: {e}"));
    *s.get("flow_new")
        .unwrap_or_else(|| panic!("{name}: xlb stats has no flow_new counter: {s:?}"))
}

/// Non-zero counters of both agents, the router's route and link counters
/// and the tails of the agents' logs: for failure messages.
fn diag(agents: &[(&str, &Agent)], router: &Netns) -> String {
    let mut s = String::new();
    for (name, a) in agents {
        let st = match stats(a) {
            Ok(m) => format!("{:?}", m.into_iter().filter(|(_, v)| *v != 0).collect::<BTreeMap<_, _>>()),
            Err(e) => e,
        };
        let log = a.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        s.push_str(&format!(
            "\n--- {name}: xlb stats (non-zero) ---\n{st}\n--- {name}: agent log (tail) ---\n{tail}\n"
        ));
    }
    s.push_str(&format!(
        "--- router: ip route ---\n{}--- router: ip -s link ---\n{}",
        ip_out(router, &["route", "show"]),
        ip_out(router, &["-s", "-o", "link", "show"])
    ));
    s
}

// ---------------------------------------------------------------------------

#[test]
fn ecmp_node_loss_keeps_backends_with_preserve() {
    xlb_tests::require_root().expect("this integration test must run as root");
    let t0 = Instant::now();
    if let Err(e) = cleanup_stale(PREFIX) {
        eprintln!("multinode: cleaning stale namespaces failed: {e:#}");
    }
    let prefix = format!("{PREFIX}{}-mn", std::process::id());

    // --- topology -------------------------------------------------------
    let mut net = Net { created: Vec::new(), config: None };
    let client = net.add(format!("{prefix}-client"), false);
    let router = net.add(format!("{prefix}-router"), true);
    let lb1 = net.add(format!("{prefix}-lb1"), true);
    let lb2 = net.add(format!("{prefix}-lb2"), true);
    let podnet = net.add(format!("{prefix}-podnet"), true);
    let pods: Vec<Netns> = (0..PODS)
        .map(|i| net.add(format!("{prefix}-pod{i}"), false))
        .collect();

    sysctl(&router, "net/ipv4/fib_multipath_hash_policy", "1");

    link(&router, "rc", "10.200.0.1/24", &client, "eth0", "10.200.0.2/24");
    link(&router, "r1", "10.201.1.2/24", &lb1, "ext", "10.201.1.1/24");
    link(&router, "r2", "10.201.2.2/24", &lb2, "ext", "10.201.2.1/24");
    link(&lb1, "int", "10.202.1.1/24", &podnet, "l1", "10.202.1.2/24");
    link(&lb2, "int", "10.202.2.1/24", &podnet, "l2", "10.202.2.2/24");
    for (i, pod) in pods.iter().enumerate() {
        link(
            &podnet,
            &format!("p{i}"),
            &format!("10.1.{i}.1/24"),
            pod,
            "eth0",
            &format!("10.1.{i}.2/24"),
        );
        ip(pod, &["route", "add", "default", "via", &format!("10.1.{i}.1"), "dev", "eth0"]);
    }
    ip(&client, &["route", "add", "default", "via", "10.200.0.1", "dev", "eth0"]);
    ip(
        &router,
        &["route", "add", "192.0.2.0/24", "nexthop", "via", "10.201.1.1", "nexthop", "via", "10.201.2.1"],
    );
    for (lb, n) in [(&lb1, 1), (&lb2, 2)] {
        ip(lb, &["route", "add", "10.1.0.0/16", "via", &format!("10.202.{n}.2"), "dev", "int"]);
        ip(lb, &["route", "add", "10.200.0.0/24", "via", &format!("10.201.{n}.2"), "dev", "ext"]);
    }
    ip(&podnet, &["route", "add", "10.200.0.0/24", "via", "10.202.1.1", "dev", "l1"]);
    for ns in &net.created {
        rp_filter_off(ns);
        wait_carrier(ns);
    }
    // Resolve the neighbours on the way before any measured traffic.
    poke(&router, "10.201.1.1");
    poke(&router, "10.201.2.1");
    poke(&lb1, "10.202.1.2");
    poke(&lb2, "10.202.2.2");
    for i in 0..PODS {
        poke(&podnet, &format!("10.1.{i}.2"));
    }
    let t_topo = t0.elapsed();

    // --- pods, config, agents -------------------------------------------
    let recorders = Recorders::start(&pods);

    let config_path = std::env::temp_dir().join(format!("{prefix}.yaml"));
    net.config = Some(config_path.clone());
    let backends: String = (0..PODS)
        .map(|i| format!("      - \"10.1.{i}.2:{BACKEND_PORT}\"\n"))
        .collect();
    let yaml = format!(
        "services:\n  - name: dns\n    vip: \"{VIP}\"\n    port: {VIP_PORT}\n    protocol: udp\n    source: preserve\n    backends:\n{backends}"
    );
    std::fs::write(&config_path, &yaml)
        .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));

    let pin1 = PinDir::new().expect("pin directory for lb1");
    let pin2 = PinDir::new().expect("pin directory for lb2");
    let start_agent = |ns: &Netns, pin: &Path| -> Agent {
        let args: Vec<String> = [
            "agent",
            "--config",
            &config_path.display().to_string(),
            "--interface",
            "ext",
            "--interface",
            "int",
            "--hash-seed",
            HASH_SEED,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Agent::spawn_args(ns, pin, &args)
            .unwrap_or_else(|e| panic!("start the agent in {}: {e:#}", ns.name))
    };
    let t_agents = Instant::now();
    let mut agent1 = start_agent(&lb1, pin1.path());
    let mut agent2 = start_agent(&lb2, pin2.path());
    agent1
        .wait_healthy(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("lb1's agent: {e:#}"));
    agent2
        .wait_healthy(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("lb2's agent: {e:#}"));
    let t_agents = t_agents.elapsed();
    let agents = [("lb1", &agent1), ("lb2", &agent2)];

    // --- client flows -----------------------------------------------------
    let ports: Vec<u16> = (FIRST_PORT..FIRST_PORT + FLOWS).collect();
    let flows: Vec<(u16, UdpSocket)> = ports
        .iter()
        .map(|&p| {
            let bind = SocketAddr::from((CLIENT, p));
            let s = client
                .run(|| UdpSocket::bind(bind))
                .unwrap_or_else(|e| panic!("bind {bind} in the client namespace: {e}"));
            (p, s)
        })
        .collect();

    // --- phase 1: both nodes up --------------------------------------------
    let (first, t_phase1) = run_phase(0, &flows, &recorders);
    let lb1_new1 = flow_new(&agent1, "lb1");
    let lb2_new1 = flow_new(&agent2, "lb2");
    eprintln!(
        "multinode: phase 1: {} of {FLOWS} flows recorded in {t_phase1:?}, spread {:?}; flow_new lb1={lb1_new1} lb2={lb2_new1}",
        first.len(),
        spread(&first)
    );
    assert_eq!(
        first.len(),
        FLOWS as usize,
        "phase 1: only {} of {FLOWS} flows reached a pod within {PHASE_WAIT:?}; missing ports {:?}{}",
        first.len(),
        ports.iter().filter(|p| !first.contains_key(p)).collect::<Vec<_>>(),
        diag(&agents, &router)
    );
    assert!(
        lb1_new1 > 0 && lb2_new1 > 0,
        "ECMP was not exercised: flow_new lb1={lb1_new1} lb2={lb2_new1}{}",
        diag(&agents, &router)
    );
    assert_eq!(
        lb1_new1 + lb2_new1,
        u64::from(FLOWS),
        "phase 1: the two nodes together should have seen exactly {FLOWS} new flows{}",
        diag(&agents, &router)
    );
    assert_eq!(
        spread(&first).len(),
        PODS,
        "phase 1: {FLOWS} flows should reach all {PODS} backends: {:?}",
        spread(&first)
    );

    // --- lb1 goes away -------------------------------------------------------
    let t_down = Instant::now();
    ip(&router, &["link", "del", "r1"]);
    // Unregistering a nexthop's device removes the whole multipath route on
    // Linux; then re-announce the VIP range through lb2 alone (as a routing
    // daemon withdrawing lb1 would).
    let route = ip_out(&router, &["route", "show", "192.0.2.0/24"]);
    eprintln!("multinode: router's VIP route after deleting r1: {:?}", route.trim());
    if !route.contains("10.201.2.1") {
        ip(&router, &["route", "replace", "192.0.2.0/24", "nexthop", "via", "10.201.2.1"]);
    }
    let route = ip_out(&router, &["route", "show", "192.0.2.0/24"]);
    assert!(
        route.contains("10.201.2.1") && !route.contains("10.201.1.1"),
        "router's VIP route should only lead to lb2 now: {route}"
    );

    // --- phase 2: the same flows through lb2 only -----------------------------
    let (second, t_phase2) = run_phase(1, &flows, &recorders);
    let t_down = t_down.elapsed();
    let lb2_new2 = flow_new(&agent2, "lb2");
    eprintln!(
        "multinode: phase 2: {} of {FLOWS} flows recorded in {t_phase2:?}, spread {:?}; lb2 flow_new {lb2_new1} -> {lb2_new2} (lb1 had {lb1_new1})",
        second.len(),
        spread(&second)
    );
    let (_, _, conflicts, odd) = recorders.snapshot();
    assert!(odd.is_empty(), "unexpected datagrams at the pods (source not preserved?): {odd:?}");
    assert!(conflicts.is_empty(), "a flow reached two backends within one phase: {conflicts:?}");
    assert_eq!(
        second.len(),
        FLOWS as usize,
        "phase 2: only {} of {FLOWS} flows reached a pod within {PHASE_WAIT:?} through lb2; missing ports {:?}{}",
        second.len(),
        ports.iter().filter(|p| !second.contains_key(p)).collect::<Vec<_>>(),
        diag(&agents, &router)
    );
    let moved: Vec<String> = ports
        .iter()
        .filter(|p| first.get(p) != second.get(p))
        .map(|p| format!("port {p}: {:?} -> {:?}", first.get(p), second.get(p)))
        .collect();
    assert!(
        moved.is_empty(),
        "{} of {FLOWS} flows changed backend when lb1 went away: {moved:?}{}",
        moved.len(),
        diag(&agents, &router)
    );
    assert!(
        lb2_new2 > lb2_new1,
        "lb2 saw no new flows in phase 2 (flow_new {lb2_new1} -> {lb2_new2}), so lb1's flows were not re-picked by lb2{}",
        diag(&agents, &router)
    );
    assert_eq!(
        lb2_new2 - lb2_new1,
        lb1_new1,
        "lb2 should have picked exactly the {lb1_new1} flows lb1 carried{}",
        diag(&agents, &router)
    );

    eprintln!(
        "multinode: timings: topology {t_topo:?}, agents healthy {t_agents:?}, phase 1 {t_phase1:?}, \
         node loss + phase 2 {t_down:?}, total {:?}",
        t0.elapsed()
    );

    // Teardown order: client sockets, agents (stopped), pin dirs, recorders,
    // then the namespaces and the config file (Net).
    drop(flows);
    drop(agent1);
    drop(agent2);
    drop(pin1);
    drop(pin2);
    drop(recorders);
    drop(net);
}
