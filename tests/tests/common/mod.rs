//! Helpers shared by the integration test files (each `tests/*.rs` file is
//! its own crate and includes this module with `mod common;`).
//!
//! Everything here is local to the tests: the fixtures themselves live in the
//! `xlb-tests` library.

#![allow(dead_code, reason = "shared by several test binaries, each using a part")]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_tests::{
    tcp_echo_server, tcp_session_server, udp_echo_server, udp_request, Agent, ConfigFile, PinDir, ServerHandle,
    Topology, UdpFlow,
};

/// Per-request timeout.
pub const T: Duration = Duration::from_secs(2);

/// UDP port the echo servers listen on inside each pod.
pub const UDP_BACKEND_PORT: u16 = 5353;
/// TCP port the echo servers listen on inside each pod.
pub const TCP_BACKEND_PORT: u16 = 8080;
/// TCP port the session servers (long-lived flows) listen on inside each pod.
pub const TCP_SESSION_PORT: u16 = 8081;

/// The tests need root; fail (never skip) otherwise.
pub fn require_root() {
    xlb_tests::require_root().expect("these integration tests must run as root");
}

pub fn vip4(port: u16) -> SocketAddr {
    SocketAddr::new(Topology::VIP_V4.into(), port)
}

pub fn vip6(port: u16) -> SocketAddr {
    SocketAddr::new(Topology::VIP_V6.into(), port)
}

/// Address family of a service / its backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
}

impl Fam {
    pub fn pod_addr(self, i: usize) -> IpAddr {
        match self {
            Fam::V4 => Topology::pod_addr_v4(i).into(),
            Fam::V6 => Topology::pod_addr_v6(i).into(),
        }
    }
    /// The node's address toward pod i: what a `snat` backend sees.
    pub fn pod_gw(self, i: usize) -> IpAddr {
        match self {
            Fam::V4 => Topology::pod_gw_v4(i).into(),
            Fam::V6 => Topology::pod_gw_v6(i).into(),
        }
    }
    pub fn client(self) -> IpAddr {
        match self {
            Fam::V4 => Topology::CLIENT_V4.into(),
            Fam::V6 => Topology::CLIENT_V6.into(),
        }
    }
    pub fn unspecified(self, port: u16) -> SocketAddr {
        match self {
            Fam::V4 => SocketAddr::from(([0, 0, 0, 0], port)),
            Fam::V6 => SocketAddr::from(([0u16; 8], port)),
        }
    }
    pub fn pod_sock(self, i: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.pod_addr(i), port)
    }
}

/// `"ip:port"` of pod i's backend, as the config and the CLI write it.
pub fn backend(fam: Fam, i: usize, port: u16) -> String {
    fam.pod_sock(i, port).to_string()
}

/// One service entry of the YAML file (indented for the `services:` list).
/// `backends` are raw YAML list items (e.g. `10.1.0.2:5353` or
/// `{address: "10.1.0.2:5353", weight: 0}`); an empty slice gives
/// `backends: []`.
pub fn svc(name: &str, vip: IpAddr, port: u16, proto: &str, source: &str, backends: &[String]) -> String {
    let mut s = format!(
        "  - name: {name}\n    vip: \"{vip}\"\n    port: {port}\n    protocol: {proto}\n    source: {source}\n"
    );
    if backends.is_empty() {
        s.push_str("    backends: []\n");
    } else {
        s.push_str("    backends:\n");
        for b in backends {
            if b.starts_with('{') {
                s.push_str(&format!("      - {b}\n"));
            } else {
                s.push_str(&format!("      - \"{b}\"\n"));
            }
        }
    }
    s
}

/// A UDP service `name` on the IPv4 VIP, port `port`, `source: snat`.
pub fn udp_snat4(name: &str, port: u16, backends: &[String]) -> String {
    svc(name, Topology::VIP_V4.into(), port, "udp", "snat", backends)
}

/// `dns`: UDP/53 on the IPv4 VIP, `source: snat`, to the UDP echo servers
/// of pods `pods`.
pub fn dns(pods: impl IntoIterator<Item = usize>) -> String {
    udp_snat4("dns", 53, &backends(Fam::V4, pods, UDP_BACKEND_PORT))
}

/// The last component of `p` (e.g. the configuration file's name, as the
/// agent's `FILE:LINE:` errors print it).
pub fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A whole configuration file from service entries.
pub fn config(services: &[String]) -> String {
    format!("services:\n{}", services.concat())
}

/// The usual pair of services: `dns` (UDP/53 → pods' UDP_BACKEND_PORT)
/// and `web` (TCP/80 → TCP_BACKEND_PORT) on the family's VIP, named
/// `dns6`/`web6` for IPv6.
pub fn dns_and_web(fam: Fam, source: &str, pods: std::ops::Range<usize>) -> Vec<String> {
    let (vip, suffix): (IpAddr, &str) = match fam {
        Fam::V4 => (Topology::VIP_V4.into(), ""),
        Fam::V6 => (Topology::VIP_V6.into(), "6"),
    };
    vec![
        svc(&format!("dns{suffix}"), vip, 53, "udp", source, &backends(fam, pods.clone(), UDP_BACKEND_PORT)),
        svc(&format!("web{suffix}"), vip, 80, "tcp", source, &backends(fam, pods, TCP_BACKEND_PORT)),
    ]
}

/// Backends of pods `pods` on `port`.
pub fn backends(fam: Fam, pods: impl IntoIterator<Item = usize>, port: u16) -> Vec<String> {
    pods.into_iter().map(|i| backend(fam, i, port)).collect()
}

/// UDP echo servers on `port` in the given pods, tagged `pod<i>`.
pub fn udp_servers(topo: &Topology, fam: Fam, pods: impl IntoIterator<Item = usize>, port: u16) -> Vec<ServerHandle> {
    pods.into_iter().map(|i| udp_echo_server(&topo.pods[i], fam.pod_sock(i, port), &format!("pod{i}"))).collect()
}

/// TCP echo servers (one request per connection) on `port`, tagged `pod<i>`.
pub fn tcp_servers(topo: &Topology, fam: Fam, pods: impl IntoIterator<Item = usize>, port: u16) -> Vec<ServerHandle> {
    pods.into_iter().map(|i| tcp_echo_server(&topo.pods[i], fam.pod_sock(i, port), &format!("pod{i}"))).collect()
}

/// TCP session servers (many requests per connection), tagged `pod<i>`.
pub fn tcp_session_servers(
    topo: &Topology,
    fam: Fam,
    pods: impl IntoIterator<Item = usize>,
    port: u16,
) -> Vec<ServerHandle> {
    pods.into_iter().map(|i| tcp_session_server(&topo.pods[i], fam.pod_sock(i, port), &format!("pod{i}"))).collect()
}

/// A topology, its configuration file, pin directory, servers and agent.
/// Field order is drop order: agent first, topology last.
pub struct Env {
    pub agent: Option<Agent>,
    pub servers: Vec<ServerHandle>,
    pub config: ConfigFile,
    pub pin: PinDir,
    pub topo: Topology,
}

impl Env {
    /// Builds a topology with `pods` pods and writes `yaml`; does not start
    /// the agent.
    pub fn new(pods: usize, yaml: &str) -> Env {
        require_root();
        let topo = Topology::new(pods).expect("build the topology");
        let config = ConfigFile::new(&topo, yaml).expect("write the configuration file");
        let pin = PinDir::new().expect("pin directory");
        Env { agent: None, servers: Vec::new(), config, pin, topo }
    }

    /// [`Env::new`] and starts the agent with `extra` arguments.
    pub fn start(pods: usize, yaml: &str, extra: &[&str]) -> Env {
        let mut env = Env::new(pods, yaml);
        env.start_agent(extra);
        env
    }

    /// Starts an agent (there must be none running) and waits for /healthz.
    pub fn start_agent(&mut self, extra: &[&str]) {
        assert!(self.agent.is_none(), "an agent is already running");
        let agent = Agent::start(&self.topo, self.config.path(), self.pin.path(), extra)
            .unwrap_or_else(|e| panic!("start the agent: {e:#}"));
        self.agent = Some(agent);
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent runs")
    }

    pub fn agent_mut(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("the agent runs")
    }

    /// Everything useful for a failure message: stats, services, the tail
    /// of the agent's log.
    pub fn diag(&self) -> String {
        match &self.agent {
            Some(a) => diag(a),
            None => "(no agent running)".into(),
        }
    }
}

/// `xlb stats`, `xlb services` and the last lines of the agent's log.
pub fn diag(agent: &Agent) -> String {
    let run = |args: &[&str]| match agent.cli(args) {
        Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("(cannot run xlb {}: {e:#})", args.join(" ")),
    };
    let log = agent.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    format!(
        "\n--- xlb stats -o json ---\n{}\n--- xlb services ---\n{}\n--- agent log (tail) ---\n{}\n",
        run(&["stats", "-o", "json"]),
        run(&["services"]),
        tail
    )
}

/// Runs `xlb ARGS` against the agent's pins, asserts success and parses
/// the JSON it prints.
pub fn cli_json(agent: &Agent, args: &[&str]) -> Value {
    let out = agent.cli(args).unwrap_or_else(|e| panic!("run xlb {}: {e:#}", args.join(" ")));
    assert!(
        out.status.success(),
        "xlb {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("xlb {} printed no JSON ({e}): {}", args.join(" "), String::from_utf8_lossy(&out.stdout))
    })
}

/// `xlb stats -o json` as counter name → value.
pub fn stats(agent: &Agent) -> BTreeMap<String, u64> {
    let v = cli_json(agent, &["stats", "-o", "json"]);
    let obj = v.as_object().unwrap_or_else(|| panic!("xlb stats -o json is not an object: {v}"));
    obj.iter()
        .map(|(k, v)| {
            let n = v.as_u64().unwrap_or_else(|| panic!("xlb stats: counter {k} is not a number: {v}"));
            (k.clone(), n)
        })
        .collect()
}

pub fn stat(agent: &Agent, name: &str) -> u64 {
    *stats(agent).get(name).unwrap_or_else(|| panic!("xlb stats has no counter {name}"))
}

/// `xlb services -o json`, as an array.
pub fn services(agent: &Agent) -> Vec<Value> {
    let v = agent.services_json().unwrap_or_else(|e| panic!("xlb services -o json: {e:#}"));
    v.as_array().unwrap_or_else(|| panic!("xlb services -o json is not an array: {v}")).clone()
}

/// The service named `name` in `xlb services -o json`, if listed.
pub fn service(agent: &Agent, name: &str) -> Option<Value> {
    services(agent).into_iter().find(|s| s["name"].as_str() == Some(name))
}

/// The `backends` strings of a service object, sorted.
pub fn service_backends(s: &Value) -> Vec<String> {
    let mut b: Vec<String> = s["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("service without a backends array: {s}"))
        .iter()
        .map(|b| b.as_str().unwrap_or_else(|| panic!("backend is not a string: {b}")).to_string())
        .collect();
    b.sort();
    b
}

/// Services without their counters (for "unchanged" comparisons), sorted
/// by name.
pub fn services_without_counters(agent: &Agent) -> Vec<Value> {
    let mut v: Vec<Value> = services(agent)
        .into_iter()
        .map(|mut s| {
            if let Some(o) = s.as_object_mut() {
                o.remove("packets");
                o.remove("bytes");
            }
            s
        })
        .collect();
    v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    v
}

/// Polls `xlb services -o json` (every 50 ms, up to `timeout`) until `pred`
/// holds; returns when it did, panics with diagnostics otherwise.
pub fn wait_services(agent: &Agent, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let s = services(agent);
        if pred(&s) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what}; xlb services -o json: {}{}",
            serde_json::to_string_pretty(&s).unwrap_or_default(),
            diag(agent)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the service `name` lists exactly `want` backends.
pub fn wait_backends(agent: &Agent, name: &str, want: &[String], timeout: Duration) -> Instant {
    let mut want: Vec<String> = want.to_vec();
    want.sort();
    wait_services(agent, &format!("service {name} with backends {want:?}"), timeout, |all| {
        all.iter().find(|s| s["name"].as_str() == Some(name)).is_some_and(|s| service_backends(s) == want)
    })
}

/// Parses `"pod<i> <addr>"` into (i, addr).
pub fn parse_reply(reply: &str) -> Option<(usize, IpAddr)> {
    let mut it = reply.split_whitespace();
    let tag = it.next()?;
    let addr = it.next()?.parse().ok()?;
    let i = tag.strip_prefix("pod")?.parse().ok()?;
    Some((i, addr))
}

/// Checks one reply: it came from `vip` and pod i saw `expect_peer(i)`.
/// Returns the pod index.
pub fn check_reply(
    reply: &str,
    from: SocketAddr,
    vip: SocketAddr,
    expect_peer: impl Fn(usize) -> IpAddr,
    ctx: &str,
) -> Result<usize, String> {
    if from != vip {
        return Err(format!("{ctx}: reply {reply:?} came from {from}, not from the VIP {vip}"));
    }
    let (i, peer) = parse_reply(reply).ok_or_else(|| format!("{ctx}: unexpected reply {reply:?}"))?;
    if peer != expect_peer(i) {
        return Err(format!("{ctx}: pod{i} saw the source address {peer}, expected {}", expect_peer(i)));
    }
    Ok(i)
}

/// One UDP request from `client:port` (fixed source port, so the same port
/// is the same flow) to `vip`; returns the backend's pod index after
/// checking the reply (source VIP, peer address seen by the pod).
pub fn udp_flow_backend(
    env: &Env,
    fam: Fam,
    port: u16,
    vip: SocketAddr,
    expect_peer: &dyn Fn(usize) -> IpAddr,
) -> Result<usize, String> {
    let (reply, from) = udp_request(&env.topo.client, Some(fam.unspecified(port)), vip, b"0123456789", T)
        .map_err(|e| format!("UDP from port {port} to {vip}: {e:#}"))?;
    check_reply(&reply, from, vip, expect_peer, &format!("UDP from port {port} to {vip}"))
}

/// [`udp_flow_backend`] for each port; gives up after 5 failures (so a
/// broken data path costs at most ~5 timeouts) and panics with diagnostics.
pub fn udp_flows_backends(
    env: &Env,
    fam: Fam,
    ports: &[u16],
    vip: SocketAddr,
    expect_peer: &dyn Fn(usize) -> IpAddr,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(ports.len());
    let mut errors = Vec::new();
    for &p in ports {
        match udp_flow_backend(env, fam, p, vip, expect_peer) {
            Ok(i) => out.push(i),
            Err(e) => {
                errors.push(e);
                out.push(usize::MAX);
                if errors.len() >= 5 {
                    break;
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {} UDP flows to {vip} failed:\n{}{}",
        errors.len(),
        ports.len(),
        errors.join("\n"),
        env.diag()
    );
    out
}

/// Sends one request on each open flow and returns the answering pods.
pub fn udp_open_flows_backends(
    env: &Env,
    flows: &[UdpFlow],
    vip: SocketAddr,
    expect_peer: &dyn Fn(usize) -> IpAddr,
) -> Vec<usize> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in flows {
        let ctx = format!("UDP flow {} -> {vip}", f.local_addr());
        match f.request(b"0123456789", T) {
            Ok((reply, from)) => match check_reply(&reply, from, vip, expect_peer, &ctx) {
                Ok(i) => out.push(i),
                Err(e) => {
                    errors.push(e);
                    out.push(usize::MAX);
                }
            },
            Err(e) => {
                errors.push(format!("{ctx}: {e:#}"));
                out.push(usize::MAX);
            }
        }
        if errors.len() >= 5 {
            break;
        }
    }
    assert!(errors.is_empty(), "UDP flows failed:\n{}{}", errors.join("\n"), env.diag());
    out
}

/// Opens `n` UDP flows (sockets kept open, ephemeral ports).
pub fn open_udp_flows(env: &Env, vip: SocketAddr, n: usize) -> Vec<UdpFlow> {
    (0..n).map(|_| UdpFlow::new(&env.topo.client, None, vip).expect("bind a UDP flow socket")).collect()
}

/// Counts per pod index.
pub fn tally(pods: &[usize]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for &p in pods {
        *m.entry(p).or_insert(0) += 1;
    }
    m
}

/// Checks a `spread_*_replies` result: every request answered, every reply
/// with the expected peer address; returns the count per pod.
pub fn check_spread(
    env: &Env,
    replies: &HashMap<String, usize>,
    expect_peer: &dyn Fn(usize) -> IpAddr,
    what: &str,
) -> BTreeMap<usize, usize> {
    let mut per_pod = BTreeMap::new();
    let mut bad = Vec::new();
    for (text, n) in replies {
        match parse_reply(text) {
            Some((i, peer)) if peer == expect_peer(i) => *per_pod.entry(i).or_insert(0) += n,
            _ => bad.push(format!("{n} × {text:?}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: unexpected replies {bad:?} (all replies: {replies:?}; pod i should see {}){}",
        expect_peer(0),
        env.diag()
    );
    per_pod
}

/// True when `ip -n NS link show dev IF` shows an XDP program.
pub fn xdp_attached(ns: &xlb_tests::Netns, ifname: &str) -> bool {
    let out = ns.ip(&["link", "show", "dev", ifname]).unwrap_or_else(|e| panic!("ip link show {ifname}: {e:#}"));
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// `ip -n NS link show dev IF` text.
pub fn ip_link(ns: &xlb_tests::Netns, ifname: &str) -> String {
    ns.ip(&["link", "show", "dev", ifname])
        .map_or_else(|e| format!("{e:#}"), |o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// One UDP request to `vip` that must be answered within 3 tries (the
/// very first packets of a topology); a lost first try is noted on stderr.
pub fn warm_up_udp(env: &Env, vip: SocketAddr) {
    let mut errs = Vec::new();
    for _ in 0..3 {
        match udp_request(&env.topo.client, None, vip, b"warm-up", T) {
            Ok(_) => {
                if !errs.is_empty() {
                    eprintln!("note: first UDP request(s) to {vip} were not answered: {errs:?}");
                }
                return;
            }
            Err(e) => errs.push(format!("{e:#}")),
        }
    }
    panic!("no UDP reply from {vip} after 3 tries: {errs:?}{}", env.diag());
}

/// UDP requests sent from a background thread, one every 10 ms (at most
/// 5000, at most 60 s), until [`Background::finish`]: either each from a new
/// socket (a new flow each time) or all on one flow. A request counts as
/// lost when it gets no reply within 1 s or the reply does not come from the
/// address it was sent to.
pub struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<BackgroundReport>>,
}

/// What a [`Background`] sender saw.
#[derive(Debug, Default)]
pub struct BackgroundReport {
    pub sent: usize,
    pub lost: Vec<String>,
    /// Distinct reply texts (`"pod1 10.1.1.1"`), with counts.
    pub replies: BTreeMap<String, usize>,
}

impl Background {
    /// Each request on a new flow.
    pub fn new_flows(env: &Env, to: SocketAddr) -> Self {
        Self::spawn(env, to, false)
    }

    /// Every request on the same flow (one socket).
    pub fn one_flow(env: &Env, to: SocketAddr) -> Self {
        Self::spawn(env, to, true)
    }

    fn spawn(env: &Env, to: SocketAddr, same_flow: bool) -> Self {
        use std::sync::atomic::Ordering;
        let ns = env.topo.client.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let flow = same_flow.then(|| UdpFlow::new(&ns, None, to).expect("bind a UDP socket"));
        let thread = std::thread::spawn(move || {
            let mut r = BackgroundReport::default();
            let deadline = Instant::now() + Duration::from_mins(1);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline && r.sent < 5000 {
                r.sent += 1;
                let got = match &flow {
                    Some(f) => f.request(b"steady", Duration::from_secs(1)),
                    None => udp_request(&ns, None, to, b"steady", Duration::from_secs(1)),
                };
                match got {
                    Ok((text, from)) if from == to => *r.replies.entry(text).or_insert(0) += 1,
                    Ok((text, from)) => r.lost.push(format!("#{}: {text:?} from {from}", r.sent)),
                    Err(e) => r.lost.push(format!("#{}: {e:#}", r.sent)),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            r
        });
        Background { stop, thread: Some(thread) }
    }

    /// Stops the sender and returns what it saw.
    pub fn finish(mut self) -> BackgroundReport {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("background sender")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Like `xlb_tests::spread_udp_replies` (each request a new flow from a new
/// ephemeral port; replies counted by text, `NO_REPLY` / `WRONG_SOURCE`
/// for failures) but stops after 5 failures, so a broken data path costs a
/// few timeouts, not `count` of them.
pub fn spread_udp(env: &Env, to: SocketAddr, count: usize) -> HashMap<String, usize> {
    let mut replies = HashMap::new();
    let mut failures = 0;
    for i in 0..count {
        let key = match udp_request(&env.topo.client, None, to, format!("request {i}").as_bytes(), T) {
            Ok((_, from)) if from != to => xlb_tests::WRONG_SOURCE.to_string(),
            Ok((text, _)) => text,
            Err(_) => xlb_tests::NO_REPLY.to_string(),
        };
        if key.starts_with('<') {
            failures += 1;
        }
        *replies.entry(key).or_insert(0) += 1;
        if failures >= 5 {
            break;
        }
    }
    replies
}

/// Like `xlb_tests::spread_tcp_replies` (a new connection per request) but
/// stops after 5 failures.
pub fn spread_tcp(env: &Env, to: SocketAddr, count: usize) -> HashMap<String, usize> {
    let mut replies = HashMap::new();
    let mut failures = 0;
    for i in 0..count {
        let key = match xlb_tests::tcp_request(&env.topo.client, to, format!("request {i}\n").as_bytes(), T) {
            Ok(text) if !text.is_empty() => text,
            Ok(_) => xlb_tests::NO_REPLY.to_string(),
            Err(e) => format!("{} ({e:#})", xlb_tests::NO_REPLY),
        };
        if key.starts_with('<') {
            failures += 1;
        }
        *replies.entry(key).or_insert(0) += 1;
        if failures >= 5 {
            break;
        }
    }
    replies
}

/// The workspace's root directory.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Waits for `child` up to `limit`; on overrun SIGTERM (the benches clean
/// up on it), then SIGKILL. Returns (success, stdout, stderr).
pub fn wait_bounded(mut child: std::process::Child, limit: Duration, what: &str) -> (bool, String, String) {
    let (t_out, t_err) = xlb_tests::read_pipes(&mut child).expect("stdout and stderr piped");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            eprintln!("{what} still running after {limit:?}; stopping it");
            // SAFETY: our unreaped child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let grace = Instant::now() + Duration::from_secs(20);
            while Instant::now() < grace {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text =
        |t: std::thread::JoinHandle<Vec<u8>>| String::from_utf8_lossy(&t.join().unwrap_or_default()).into_owned();
    (status.is_some_and(|s| s.success()), text(t_out), text(t_err))
}
