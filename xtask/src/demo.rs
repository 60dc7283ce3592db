//! `cargo xtask demo`: xlb in a client / node / 3 pods topology.
//!
//! Builds xlb, makes the topology (network namespaces), starts UDP (5353)
//! and TCP (8080) echo servers in each pod, runs the agent in the node
//! namespace on `examples/demo.yaml`, sends UDP and TCP through the VIP from
//! the client, shows the per-backend spread and `xlb services`, and cleans
//! everything up, on failure and Ctrl-C too.
//!
//! With `--l2` the VIP is in the client's subnet instead, with no route of
//! its own, and the agent announces it (`--announce l2`): see
//! [`crate::demo_l2`].

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use xlb_tests::{
    reply_tag, spread_tcp_replies, spread_udp_replies, tcp_echo_server, udp_echo_server, Agent, PinDir, Topology,
    NO_REPLY, WRONG_SOURCE,
};

use crate::util::{header, info};

const PODS: usize = 3;
const UDP_REQUESTS: usize = 300;
const TCP_REQUESTS: usize = 60;
const UDP_PORT: u16 = 5353;
const TCP_PORT: u16 = 8080;
pub(crate) const VIP_UDP_PORT: u16 = 53;
const VIP_TCP_PORT: u16 = 80;
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // A third Ctrl-C gives up on the orderly cleanup.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 2 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

fn install_signal_handlers() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls _exit, both
        // async-signal-safe; the sigaction struct is fully initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&raw mut sa.sa_mask);
            if libc::sigaction(sig, &raw const sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error()).context("sigaction");
            }
        }
    }
    Ok(())
}

pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn demo(echo_agent_log: bool, no_build: bool, l2: bool) -> Result<()> {
    install_signal_handlers()?;
    let bin = if no_build {
        // As the integration tests: `$XLB_BIN` when set.
        let bin = std::env::var_os("XLB_BIN")
            .map_or_else(|| crate::util::target_dir().join("release").join("xlb"), std::path::PathBuf::from);
        if !bin.is_file() {
            bail!("{} is missing: run `cargo xtask build` (or drop --no-build, or set XLB_BIN)", bin.display());
        }
        bin
    } else {
        crate::setup::setup()?;
        check_interrupted()?;
        crate::util::build_release()?
    };
    check_interrupted()?;
    xlb_tests::require_root()?;
    // The fixtures find the binary through XLB_BIN; echoing the log is opt-in.
    std::env::set_var("XLB_BIN", &bin);
    if echo_agent_log {
        std::env::set_var("XLB_TEST_VERBOSE", "1");
    }
    let result = run_demo(l2);
    match &result {
        Ok(()) => header("demo finished; everything it created has been removed"),
        Err(_) => header("demo failed; everything it created has been removed"),
    }
    result
}

fn run_demo(l2: bool) -> Result<()> {
    header("cleaning leftovers of earlier runs");
    xlb_tests::cleanup_stale(xlb_tests::PREFIX)?;
    remove_stale_demo_pins();

    header(&format!("topology: client, node and {PODS} pods in network namespaces"));
    let topo = Topology::new(PODS)?;
    info(&format!("namespaces   {}-{{client,node,pod0..pod{}}}", topo.prefix, PODS - 1));
    info(&format!("client       eth0 {} / {}", Topology::CLIENT_V4, Topology::CLIENT_V6));
    info(&format!("node         {} {} / {} (toward the client)", topo.client_if, Topology::NODE_V4, Topology::NODE_V6));
    for i in 0..PODS {
        info(&format!(
            "pod{i}         eth0 {} (node side {} {})",
            Topology::pod_addr_v4(i),
            topo.pod_ifs[i],
            Topology::pod_gw_v4(i)
        ));
    }
    let vip = if l2 {
        info(&format!(
            "VIP          {} (in the client's subnet, assigned nowhere, announced by the node)",
            crate::demo_l2::VIP
        ));
        crate::demo_l2::VIP
    } else {
        info(&format!("VIP          {} (routed to the node, assigned nowhere)", Topology::VIP_V4));
        Topology::VIP_V4
    };
    check_interrupted()?;

    header(&format!("echo servers: UDP :{UDP_PORT} and TCP :{TCP_PORT} in each pod"));
    let mut servers = Vec::new();
    for i in 0..PODS {
        let tag = format!("pod{i}");
        servers.push(udp_echo_server(&topo.pods[i], Topology::pod_sock_v4(i, UDP_PORT), &tag));
        servers.push(tcp_echo_server(&topo.pods[i], Topology::pod_sock_v4(i, TCP_PORT), &tag));
    }
    info("pod i answers every request with \"pod<i> <source address it saw>\"");

    let config = crate::util::workspace_root().join(if l2 { crate::demo_l2::CONFIG } else { "examples/demo.yaml" });
    if !config.is_file() {
        bail!("{} is missing", config.display());
    }
    let pins = PinDir::at(format!("/sys/fs/bpf/xlb-demo-{}", std::process::id()))?;

    let watch = if l2 { Some(crate::demo_l2::prepare(&topo)?) } else { None };
    let extra = if l2 { crate::demo_l2::agent_flags(&topo) } else { Vec::new() };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();

    header("agent");
    let mut line = format!("xlb agent --config {}", config.display());
    for ifname in topo.node_interfaces() {
        line.push_str(&format!(" --interface {ifname}"));
    }
    for flag in &extra {
        line.push_str(&format!(" {flag}"));
    }
    line.push_str(&format!(" --pin-path {} --metrics-addr 127.0.0.1:<port>", pins.path().display()));
    info(&format!("(in netns {}) {line}", topo.node.name));
    let mut agent = Agent::spawn(&topo, &config, pins.path(), &extra)?;
    wait_healthy(&mut agent)?;
    info(&format!("healthy: http://{}/healthz answered 200 (inside the node namespace)", agent.metrics_addr()));

    let outcome = match &watch {
        Some(watch) => crate::demo_l2::show(&topo, &agent, watch).and_then(|()| traffic(&topo, &agent, vip)),
        None => traffic(&topo, &agent, vip),
    };
    if outcome.is_ok() {
        header(&format!("xlb services --pin-path {}", pins.path().display()));
        match agent.cli(&["services"]) {
            Ok(out) => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
                if !out.status.success() {
                    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                    eprintln!("xtask: `xlb services` failed ({})", out.status);
                }
            }
            Err(e) => eprintln!("xtask: cannot run `xlb services`: {e:#}"),
        }
    }

    header("stopping the agent (SIGTERM)");
    let stopped = agent.stop();
    match &stopped {
        Ok(status) => info(&format!("agent exited: {status}")),
        Err(e) => eprintln!("xtask: {e:#}"),
    }
    if outcome.is_err() || !matches!(&stopped, Ok(s) if s.success()) {
        print_log_tail(&agent.log(), 60);
    }
    drop(agent);
    drop(servers);
    drop(pins);
    header("removing the topology");
    drop(topo);
    outcome?;
    match stopped? {
        s if s.success() => Ok(()),
        s => bail!("the agent exited with {s} on SIGTERM (expected success)"),
    }
}

fn wait_healthy(agent: &mut Agent) -> Result<()> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        check_interrupted()?;
        if let Some(status) = agent.try_status() {
            let _ = agent.wait_exit(Duration::from_secs(1));
            eprintln!("xtask: the agent exited ({status}) before it became healthy; its stderr:");
            print_log_tail(&agent.log(), 200);
            bail!("xlb agent exited ({status}) during start-up");
        }
        if agent.is_healthy() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            print_log_tail(&agent.log(), 200);
            bail!("xlb agent did not answer 200 on /healthz within {HEALTH_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends the requests in chunks (checking for Ctrl-C between them) and
/// prints the spread. Fails if any request went unanswered.
fn traffic(topo: &Topology, agent: &Agent, vip: Ipv4Addr) -> Result<()> {
    let udp_vip = SocketAddr::new(vip.into(), VIP_UDP_PORT);
    let tcp_vip = SocketAddr::new(vip.into(), VIP_TCP_PORT);

    header(&format!("sending {UDP_REQUESTS} UDP requests to {udp_vip} (service dns), each from a new source port"));
    let udp = send_chunked(UDP_REQUESTS, 20, |n| spread_udp_replies(&topo.client, udp_vip, n, REQUEST_TIMEOUT), agent)?;
    header(&format!("sending {TCP_REQUESTS} TCP requests to {tcp_vip} (service web), one connection each"));
    let tcp = send_chunked(TCP_REQUESTS, 10, |n| spread_tcp_replies(&topo.client, tcp_vip, n, REQUEST_TIMEOUT), agent)?;

    header("replies per backend");
    let (udp_tags, udp_seen) = summarise(&udp);
    let (tcp_tags, tcp_seen) = summarise(&tcp);
    let mut rows: Vec<String> = (0..PODS).map(|i| format!("pod{i}")).collect();
    for key in udp_tags.keys().chain(tcp_tags.keys()) {
        if !rows.contains(key) {
            rows.push(key.clone());
        }
    }
    println!("    {:<16} {:>12} {:>12}   client address the backend saw", "backend", "UDP (dns)", "TCP (web)");
    for row in &rows {
        let u = udp_tags.get(row).copied().unwrap_or(0);
        let t = tcp_tags.get(row).copied().unwrap_or(0);
        let mut seen: Vec<&String> = udp_seen.get(row).into_iter().chain(tcp_seen.get(row)).flatten().collect();
        seen.sort();
        seen.dedup();
        let seen = seen.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        println!(
            "    {:<16} {:>5} ({:>3.0}%) {:>5} ({:>3.0}%)   {}",
            row,
            u,
            100.0 * u as f64 / UDP_REQUESTS as f64,
            t,
            100.0 * t as f64 / TCP_REQUESTS as f64,
            seen
        );
    }
    info("with `source: snat` each backend sees the node's address on its link (10.1.<i>.1)");

    let lost_udp = udp_tags.get(NO_REPLY).copied().unwrap_or(0) + udp_tags.get(WRONG_SOURCE).copied().unwrap_or(0);
    let lost_tcp = tcp_tags.get(NO_REPLY).copied().unwrap_or(0);
    let idle: Vec<String> = (0..PODS)
        .map(|i| format!("pod{i}"))
        .filter(|p| udp_tags.get(p).copied().unwrap_or(0) == 0 || tcp_tags.get(p).copied().unwrap_or(0) == 0)
        .collect();
    if lost_udp > 0 || lost_tcp > 0 {
        bail!("{lost_udp} UDP and {lost_tcp} TCP requests got no (correct) reply through the VIP");
    }
    if !idle.is_empty() {
        bail!("backends that got no traffic: {}", idle.join(", "));
    }
    Ok(())
}

/// Runs `send(n)` in chunks of `chunk` until `total` requests are sent;
/// stops early on Ctrl-C, if the agent died, or if the first chunk got no
/// reply at all.
fn send_chunked(
    total: usize,
    chunk: usize,
    mut send: impl FnMut(usize) -> HashMap<String, usize>,
    agent: &Agent,
) -> Result<HashMap<String, usize>> {
    let mut all: HashMap<String, usize> = HashMap::new();
    let mut sent = 0;
    while sent < total {
        check_interrupted()?;
        let n = chunk.min(total - sent);
        for (k, v) in send(n) {
            *all.entry(k).or_insert(0) += v;
        }
        sent += n;
        let answered: usize = all.iter().filter(|(k, _)| !k.starts_with('<')).map(|(_, v)| v).sum();
        if answered == 0 {
            if !agent.is_healthy() {
                bail!("no reply to the first {sent} requests, and the agent is not healthy any more");
            }
            bail!("no reply to the first {sent} requests through the VIP");
        }
    }
    info(&format!("{sent} sent"));
    Ok(all)
}

/// Per tag: reply count, and the source addresses the backend reported.
fn summarise(replies: &HashMap<String, usize>) -> (BTreeMap<String, usize>, BTreeMap<String, Vec<String>>) {
    let mut tags = BTreeMap::new();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (reply, n) in replies {
        if reply.starts_with('<') {
            *tags.entry(reply.clone()).or_insert(0) += n;
            continue;
        }
        let tag = reply_tag(reply).to_string();
        *tags.entry(tag.clone()).or_insert(0) += n;
        if let Some(addr) = reply.split_whitespace().nth(1) {
            let list = seen.entry(tag).or_default();
            if !list.iter().any(|a| a == addr) {
                list.push(addr.to_string());
            }
        }
    }
    (tags, seen)
}

fn print_log_tail(log: &str, lines: usize) {
    let all: Vec<&str> = log.lines().collect();
    let start = all.len().saturating_sub(lines);
    eprintln!("---- agent log (last {} lines) ----", all.len() - start);
    for l in &all[start..] {
        eprintln!("{l}");
    }
    eprintln!("---- end of agent log ----");
}

/// Removes `/sys/fs/bpf/xlb-demo-<pid>` directories of demos that died
/// without cleaning up (their pid no longer exists).
fn remove_stale_demo_pins() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("xlb-demo-").and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the pid exists.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && Path::new(&entry.path()).is_dir() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => info(&format!("removed stale pins {}", entry.path().display())),
                Err(e) => eprintln!("xtask: cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}
