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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xlb_tests::netbuild::{agents_diag, ip, ip_out, link, poke, rp_filter_off, stats, sysctl, wait_carrier, Net};
use xlb_tests::{Agent, Netns, PinDir};

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
            let sock = pod.run(|| UdpSocket::bind(bind)).unwrap_or_else(|e| panic!("bind {bind} in {}: {e}", pod.name));
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
                            let mut r = records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
                                    let c = format!("phase {}: port {port} reached {old} and {tag}", phase + 1);
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

    #[expect(clippy::type_complexity, reason = "a private snapshot, destructured at once")]
    fn snapshot(&self) -> (HashMap<u16, String>, HashMap<u16, String>, Vec<String>, Vec<String>) {
        let r = self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (r.phases[0].clone(), r.phases[1].clone(), r.conflicts.clone(), r.odd.clone())
    }

    fn recorded(&self, phase: usize) -> HashMap<u16, String> {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner).phases[phase].clone()
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
fn run_phase(phase: usize, flows: &[(u16, UdpSocket)], recorders: &Recorders) -> (HashMap<u16, String>, Duration) {
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

fn flow_new(agent: &Agent, name: &str) -> u64 {
    let s = stats(agent).unwrap_or_else(|e| panic!("{name}: {e}"));
    *s.get("flow_new").unwrap_or_else(|| panic!("{name}: xlb stats has no flow_new counter: {s:?}"))
}

/// Non-zero counters of both agents, the tails of their logs and the
/// router's route and link counters: for failure messages.
fn diag(agents: &[(&str, &Agent)], router: &Netns) -> String {
    format!(
        "{}--- router: ip route ---\n{}--- router: ip -s link ---\n{}",
        agents_diag(agents),
        ip_out(router, &["route", "show"]),
        ip_out(router, &["-s", "-o", "link", "show"])
    )
}

// ---------------------------------------------------------------------------

#[test]
fn ecmp_node_loss_keeps_backends_with_preserve() {
    xlb_tests::require_root().expect("this integration test must run as root");
    let t0 = Instant::now();

    // --- topology -------------------------------------------------------
    let mut net = Net::new("mn");
    let client = net.add("client", false);
    let router = net.add("router", true);
    let lb1 = net.add("lb1", true);
    let lb2 = net.add("lb2", true);
    let podnet = net.add("podnet", true);
    let pods: Vec<Netns> = (0..PODS).map(|i| net.add(&format!("pod{i}"), false)).collect();

    sysctl(&router, "net/ipv4/fib_multipath_hash_policy", "1");

    link(&router, "rc", Some("10.200.0.1/24"), &client, "eth0", Some("10.200.0.2/24"));
    link(&router, "r1", Some("10.201.1.2/24"), &lb1, "ext", Some("10.201.1.1/24"));
    link(&router, "r2", Some("10.201.2.2/24"), &lb2, "ext", Some("10.201.2.1/24"));
    link(&lb1, "int", Some("10.202.1.1/24"), &podnet, "l1", Some("10.202.1.2/24"));
    link(&lb2, "int", Some("10.202.2.1/24"), &podnet, "l2", Some("10.202.2.2/24"));
    for (i, pod) in pods.iter().enumerate() {
        link(&podnet, &format!("p{i}"), Some(&format!("10.1.{i}.1/24")), pod, "eth0", Some(&format!("10.1.{i}.2/24")));
        ip(pod, &["route", "add", "default", "via", &format!("10.1.{i}.1"), "dev", "eth0"]);
    }
    ip(&client, &["route", "add", "default", "via", "10.200.0.1", "dev", "eth0"]);
    ip(&router, &["route", "add", "192.0.2.0/24", "nexthop", "via", "10.201.1.1", "nexthop", "via", "10.201.2.1"]);
    for (lb, n) in [(&lb1, 1), (&lb2, 2)] {
        ip(lb, &["route", "add", "10.1.0.0/16", "via", &format!("10.202.{n}.2"), "dev", "int"]);
        ip(lb, &["route", "add", "10.200.0.0/24", "via", &format!("10.201.{n}.2"), "dev", "ext"]);
    }
    ip(&podnet, &["route", "add", "10.200.0.0/24", "via", "10.202.1.1", "dev", "l1"]);
    for ns in net.namespaces() {
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

    #[expect(clippy::format_collect, reason = "a small test input")]
    let backends: String = (0..PODS).map(|i| format!("      - \"10.1.{i}.2:{BACKEND_PORT}\"\n")).collect();
    let yaml = format!(
        "services:\n  - name: dns\n    vip: \"{VIP}\"\n    port: {VIP_PORT}\n    protocol: udp\n    source: preserve\n    backends:\n{backends}"
    );
    net.write_config(&yaml);

    let pin1 = PinDir::new().expect("pin directory for lb1");
    let pin2 = PinDir::new().expect("pin directory for lb2");
    let start_agent = |ns: &Netns, pin: &PinDir| -> Agent {
        net.spawn_agent(ns, pin.path(), &["ext", "int"], &["--hash-seed", HASH_SEED])
    };
    let t_agents = Instant::now();
    let mut agent1 = start_agent(&lb1, &pin1);
    let mut agent2 = start_agent(&lb2, &pin2);
    agent1.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("lb1's agent: {e:#}"));
    agent2.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("lb2's agent: {e:#}"));
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
