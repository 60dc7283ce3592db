//! A topology with its configuration, pins, servers and agent, and what the
//! agent's CLI reports (`xlb stats`, `xlb services` as JSON).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_tests::{Agent, ConfigFile, PinDir, ServerHandle, Topology};

use super::require_root;

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
    let tail = agent.log_tail(60);
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

/// The value of a counter in a `stats` result (0 when absent: see
/// [`require_counters`]).
pub fn counter(s: &BTreeMap<String, u64>, name: &str) -> u64 {
    s.get(name).copied().unwrap_or(0)
}

/// Fails (with the list) unless `xlb stats` has every counter named.
pub fn require_counters(env: &Env, names: &[&str]) {
    let s = stats(env.agent());
    let missing: Vec<&&str> = names.iter().filter(|n| !s.contains_key(**n)).collect();
    assert!(missing.is_empty(), "xlb stats -o json lacks the counters {missing:?}: {s:?}");
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
