//! Two Kubernetes nodes on one L2 segment, each running `xlb agent
//! --kubernetes` against the fake API server, for the L2 announcement tests
//! (`tests/tests/kubernetes_l2.rs`: the election;
//! `tests/tests/kubernetes_l2_traffic.rs`: the traffic).
//!
//! ```text
//!  [n1] eth0 10.210.0.11 ──┐
//!                          br0 10.210.0.1 [sw]  (bridge, xlb-fake-apiserver)
//!  [n2] eth0 10.210.0.12 ──┘
//! ```
//!
//! [`L2Segment::new`] builds the segment; a test adds what else it needs
//! (addresses, pods, a client) through its public fields, then
//! [`L2Segment::start`] starts the API server with both Node objects and
//! both agents. Set-up steps panic with what failed (they are for tests).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::k8s::{leases_path, node, nodes_path, ApiServer, KubeClient};
use crate::netbuild::{ip, link, wait_carrier, Net};
use crate::{Agent, Netns, PinDir};

/// The Node objects' names, node `i` being `NODES[i]`.
pub const NODES: [&str; 2] = ["node-1", "node-2"];
/// The namespace of the `xlb-l2-<VIP>` Leases.
pub const LEASE_NS: &str = "xlb-system";

/// Node `i`'s `eth0` address on the segment (10.210.0.11, .12).
pub fn node4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 210, 0, 11 + i as u8)
}

/// The segment, before the agents run.
pub struct L2Segment {
    /// The namespace with the bridge `br0` (10.210.0.1/24), where the API
    /// server listens.
    pub sw: Netns,
    /// The nodes, each with `eth0` on `br0` (see [`node4`]).
    pub nodes: Vec<Netns>,
    /// Owns every namespace: add more through it.
    pub net: Net,
    /// Install the Gateway API's CRDs before the agents start.
    pub gateway_api: bool,
}

impl L2Segment {
    /// The bridge namespace `sw` and the nodes `n1`, `n2` (IPv4 forwarding
    /// on when `forwarding`), their `eth0` ports on `br0`.
    pub fn new(tag: &str, forwarding: bool) -> L2Segment {
        crate::require_root().expect("these integration tests must run as root");
        let mut net = Net::new(tag);
        let sw = net.add("sw", false);
        ip(&sw, &["link", "add", "br0", "type", "bridge"]);
        ip(&sw, &["addr", "add", "10.210.0.1/24", "dev", "br0"]);
        ip(&sw, &["link", "set", "br0", "up"]);
        let mut nodes = Vec::new();
        for i in 0..NODES.len() {
            let n = net.add(&format!("n{}", i + 1), forwarding);
            link(&n, "eth0", Some(&format!("{}/24", node4(i))), &sw, &format!("v{i}"), None);
            ip(&sw, &["link", "set", &format!("v{i}"), "master", "br0"]);
            nodes.push(n);
        }
        L2Segment { sw, nodes, net, gateway_api: false }
    }

    /// Waits for the nodes' and the bridge's links, starts the API server
    /// (on 10.210.0.1; with the Gateway API's CRDs if [`L2Segment::gateway_api`])
    /// with both Node objects, then both agents with
    /// `agent --kubernetes --node-name NODE --kubeconfig FILE ARGS...
    /// --log-level debug`, each healthy.
    pub fn start(self, args: &[&str]) -> L2Cluster {
        let L2Segment { sw, nodes, net, gateway_api } = self;
        for ns in nodes.iter().chain([&sw]) {
            wait_carrier(ns);
        }
        let api = ApiServer::start_listening(&sw, "10.210.0.1:0".parse().unwrap()).expect("fake API server");
        if gateway_api {
            api.install_gateway_api().expect("install the Gateway API CRDs");
        }
        let kc = api.client();
        for (i, name) in NODES.iter().enumerate() {
            kc.create(&nodes_path(), &node(name, &node4(i).to_string())).expect("create Node");
        }
        let pins = NODES.iter().map(|_| PinDir::new().expect("pin dir")).collect();
        let mut c = L2Cluster {
            api,
            kc,
            sw,
            nodes,
            pins,
            agents: vec![None, None],
            args: args.iter().map(|s| (*s).to_string()).collect(),
            _net: net,
        };
        for i in 0..NODES.len() {
            c.spawn(i);
        }
        c
    }
}

/// The segment with the API server and the agents. Drop stops the agents,
/// then deletes the namespaces.
pub struct L2Cluster {
    /// The fake API server, in [`L2Cluster::sw`].
    pub api: ApiServer,
    /// A client of it.
    pub kc: KubeClient,
    /// The bridge's namespace.
    pub sw: Netns,
    /// The nodes.
    pub nodes: Vec<Netns>,
    /// Each node's pin directory.
    pub pins: Vec<PinDir>,
    /// Each node's agent (`None` while stopped).
    pub agents: Vec<Option<Agent>>,
    /// The agents' arguments after `--kubeconfig FILE`.
    args: Vec<String>,
    // Last: its drop deletes the namespaces once the processes are gone.
    _net: Net,
}

impl L2Cluster {
    /// Starts agent `i` and waits until it is healthy.
    pub fn spawn(&mut self, i: usize) {
        let kubeconfig = self.api.kubeconfig().display().to_string();
        let mut args: Vec<String> = ["agent", "--kubernetes", "--node-name", NODES[i], "--kubeconfig", &kubeconfig]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        args.extend(self.args.iter().cloned());
        args.extend(["--log-level".to_string(), "debug".to_string()]);
        let mut a = Agent::spawn_args(&self.nodes[i], self.pins[i].path(), &args).expect("spawn agent");
        if let Err(e) = a.wait_healthy(Duration::from_secs(30)) {
            panic!("agent {} not healthy: {e:#}\nAPI server log:\n{}", NODES[i], self.api.log());
        }
        self.agents[i] = Some(a);
    }

    /// Agent `i` (panics when it is stopped).
    pub fn agent(&self, i: usize) -> &Agent {
        self.agents[i].as_ref().expect("agent running")
    }

    /// The Lease `name` in [`LEASE_NS`], if there is one.
    pub fn lease(&self, name: &str) -> Option<Value> {
        self.kc.get(&leases_path(LEASE_NS, Some(name))).ok()
    }

    /// The Lease's holder (`None`: no Lease, or released).
    pub fn holder(&self, name: &str) -> Option<String> {
        let l = self.lease(name)?;
        l["spec"]["holderIdentity"].as_str().filter(|h| !h.is_empty()).map(str::to_string)
    }

    /// Polls (every 10 ms, up to `limit`) until `pred` holds for the holder
    /// of the Lease `name`; returns it and how long it took. Past `limit`,
    /// panics with the holder and `diag()`.
    pub fn wait_holder(
        &self,
        name: &str,
        limit: Duration,
        pred: impl Fn(Option<&str>) -> bool,
        diag: impl Fn() -> String,
    ) -> (Option<String>, Duration) {
        let t0 = Instant::now();
        loop {
            let h = self.holder(name);
            if pred(h.as_deref()) {
                return (h, t0.elapsed());
            }
            assert!(t0.elapsed() <= limit, "Lease {name}: holder {h:?} after {limit:?}{}", diag());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The index in [`NODES`] of the node `name`.
    pub fn index(name: &str) -> usize {
        NODES.iter().position(|n| *n == name).unwrap_or_else(|| panic!("unknown holder {name}"))
    }
}
