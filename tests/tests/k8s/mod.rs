//! The fixture of the Kubernetes-mode tests: a topology, the fake API
//! server in the node namespace, echo servers in the pods, and
//! `xlb agent --kubernetes --kubeconfig` pointed at the server.

#![allow(dead_code, reason = "shared by several test binaries, each using a part")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;
use xlb_tests::k8s::{
    endpoint, endpoint_slice, endpointslice_path, endpointslices_path, events_path, lb_service, node, nodes_path,
    service_path, services_path, ApiServer, KubeClient, LbService,
};
use xlb_tests::{
    spread_tcp, spread_udp, spread_udp_ports, tcp_echo_server, tcp_session_server, udp_echo_server, Agent, PinDir,
    ServerHandle, Topology,
};

/// This node's name.
pub const NODE: &str = "node-a";
/// Another node's name.
pub const OTHER_NODE: &str = "node-b";
/// Per-request timeout.
pub const T: Duration = Duration::from_secs(2);
/// UDP port of the pods' echo servers.
pub const UDP_PORT: u16 = 5353;
/// TCP port of the pods' echo servers.
pub const TCP_PORT: u16 = 8080;
/// TCP port of the pods' session servers (several requests per connection).
pub const SESSION_PORT: u16 = 8081;
/// Namespace of the Services in the tests.
pub const NS: &str = "apps";

pub struct Cluster {
    pub topo: Topology,
    pub api: ApiServer,
    pub kc: KubeClient,
    pub agent: Agent,
    _pins: PinDir,
    _servers: Vec<ServerHandle>,
}

impl Cluster {
    /// `pods` pods with UDP/TCP echo and TCP session servers, the API
    /// server with this node's Node object, and a healthy agent run with
    /// `extra` flags.
    pub fn start(pods: usize, extra: &[&str]) -> Cluster {
        Self::start_opts(pods, extra, false)
    }

    /// As [`Cluster::start`], with the Gateway API's CRDs installed before
    /// the agent starts.
    pub fn start_gateway(pods: usize, extra: &[&str]) -> Cluster {
        Self::start_opts(pods, extra, true)
    }

    fn start_opts(pods: usize, extra: &[&str], gateway_api: bool) -> Cluster {
        xlb_tests::require_root().expect("these integration tests must run as root");
        let topo = Topology::new(pods).expect("topology");
        let api = ApiServer::start(&topo.node).expect("fake API server");
        if gateway_api {
            api.install_gateway_api().expect("install the Gateway API CRDs");
        }
        let kc = api.client();
        kc.create(&nodes_path(), &node(NODE, &Topology::NODE_V4.to_string())).expect("create Node");
        let mut servers = Vec::new();
        for (i, pod) in topo.pods.iter().enumerate() {
            let tag = format!("pod{i}");
            for ip in [std::net::IpAddr::from(Topology::pod_addr_v4(i)), Topology::pod_addr_v6(i).into()] {
                servers.push(udp_echo_server(pod, SocketAddr::new(ip, UDP_PORT), &tag));
                servers.push(tcp_echo_server(pod, SocketAddr::new(ip, TCP_PORT), &tag));
                servers.push(tcp_session_server(pod, SocketAddr::new(ip, SESSION_PORT), &tag));
            }
        }
        let pins = PinDir::new().expect("pin dir");
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--kubernetes".into(),
            "--node-name".into(),
            NODE.into(),
            "--kubeconfig".into(),
            api.kubeconfig().display().to_string(),
            "--log-level".into(),
            "debug".into(),
        ];
        for ifname in topo.node_interfaces() {
            args.push("--interface".into());
            args.push(ifname);
        }
        args.extend(extra.iter().map(std::string::ToString::to_string));
        let mut agent = Agent::spawn_args(&topo.node, pins.path(), &args).expect("spawn agent");
        if let Err(e) = agent.wait_healthy(Duration::from_secs(30)) {
            panic!("agent not healthy: {e:#}\nAPI server log:\n{}", api.log());
        }
        Cluster { topo, api, kc, agent, _pins: pins, _servers: servers }
    }

    /// Creates a Service.
    pub fn create_service(&self, svc: &LbService) -> Value {
        let obj = svc.build();
        let ns = obj["metadata"]["namespace"].as_str().unwrap().to_string();
        self.kc.create(&services_path(Some(&ns)), &obj).expect("create Service")
    }

    /// Merge-patches Service `ns/name`.
    pub fn patch_service(&self, ns: &str, name: &str, patch: Value) {
        self.kc.merge_patch(&service_path(ns, name), &patch).expect("patch Service");
    }

    pub fn delete_service(&self, ns: &str, name: &str) {
        self.kc.delete(&service_path(ns, name)).expect("delete Service");
    }

    /// Creates or replaces EndpointSlice `ns/name` of `service` with the
    /// given endpoints `(pod index, node, ready, serving, terminating)` and
    /// ports `(name, port, protocol)`.
    pub fn set_slice(
        &self,
        ns: &str,
        name: &str,
        service: &str,
        v6: bool,
        eps: &[(usize, &str, bool, bool, bool)],
        ports: &[(&str, u16, &str)],
    ) {
        let mut b = endpoint_slice(ns, name, service).address_type(if v6 { "IPv6" } else { "IPv4" });
        for (i, n, r, s, t) in eps {
            let addr: std::net::IpAddr =
                if v6 { Topology::pod_addr_v6(*i).into() } else { Topology::pod_addr_v4(*i).into() };
            b = b.endpoint(endpoint(addr).node(n).conditions(*r, *s, *t));
        }
        for (n, p, proto) in ports {
            b = b.port(n, *p, proto);
        }
        let obj = b.build();
        let path = endpointslice_path(ns, name);
        match self.kc.get(&path) {
            Ok(old) => {
                let mut obj = obj;
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                self.kc.replace(&path, &obj).expect("replace EndpointSlice");
            }
            Err(_) => {
                self.kc.create(&endpointslices_path(Some(ns)), &obj).expect("create EndpointSlice");
            }
        }
    }

    pub fn delete_slice(&self, ns: &str, name: &str) {
        self.kc.delete(&endpointslice_path(ns, name)).expect("delete EndpointSlice");
    }

    /// Creates a Gateway API object (`kind` as in [`xlb_tests::k8s::routes_path`],
    /// or `GatewayClass`).
    pub fn create_gateway_object(&self, obj: &Value) -> Value {
        let kind = obj["kind"].as_str().expect("kind");
        let path = if kind == "GatewayClass" {
            xlb_tests::k8s::gateway_classes_path()
        } else {
            xlb_tests::k8s::routes_path(kind, obj["metadata"]["namespace"].as_str())
        };
        self.kc.create(&path, obj).unwrap_or_else(|e| panic!("create {kind}: {e}"))
    }

    /// Waits (up to 15 s) until the object at `path` satisfies `pred`;
    /// returns it.
    pub fn wait_object(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let obj = self.kc.get(path).unwrap_or(Value::Null);
            if pred(&obj) {
                return obj;
            }
            assert!(
                Instant::now() <= deadline,
                "timed out waiting for {what} at {path}; object: {obj:#}\nagent log:\n{}",
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `xlb services -o json` rows by name.
    pub fn programmed(&self) -> HashMap<String, Value> {
        let v = self.agent.services_json().expect("xlb services");
        v.as_array().expect("array").iter().map(|s| (s["name"].as_str().unwrap_or("").to_string(), s.clone())).collect()
    }

    /// Waits (up to 10 s) until `pred` holds for the programmed services.
    pub fn wait_programmed(
        &self,
        what: &str,
        pred: impl Fn(&HashMap<String, Value>) -> bool,
    ) -> HashMap<String, Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = self.programmed();
            if pred(&p) {
                return p;
            }
            assert!(
                Instant::now() <= deadline,
                "timed out waiting for {what}; programmed: {p:#?}\nagent log:\n{}",
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until service `name` is programmed with `n` backends.
    pub fn wait_backends(&self, name: &str, n: usize) -> Value {
        let p = self.wait_programmed(&format!("{name} with {n} backends"), |p| {
            p.get(name).and_then(|s| s["backends"].as_array()).is_some_and(|b| b.len() == n)
        });
        p[name].clone()
    }

    /// Events (events.k8s.io/v1) in `ns` about Service `name`, as
    /// (type, reason, note).
    pub fn events(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        let list = self.kc.list(&events_path(Some(ns))).expect("list events");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["name"] == name && e["regarding"]["kind"] == "Service")
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                (s("type"), s("reason"), s("note"))
            })
            .collect()
    }

    /// Waits (up to 10 s) for an Event with `reason` about `ns/name`.
    pub fn wait_event(&self, ns: &str, name: &str, reason: &str) -> (String, String, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.events(ns, name).into_iter().find(|e| e.1 == reason) {
                return e;
            }
            assert!(
                Instant::now() <= deadline,
                "no {reason} Event for {ns}/{name}: {:?}\nagent log:\n{}",
                self.events(ns, name),
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Tally of UDP replies per pod tag over `n` new flows.
    pub fn udp(&self, vip: SocketAddr, n: usize) -> HashMap<String, usize> {
        spread_udp(&self.topo.client, vip, n, T)
    }

    /// Tally of UDP replies per pod tag over `n` flows from the source
    /// ports `first..first + n` (below the ephemeral range): new flows for
    /// sure when no earlier call of the test used those ports, where
    /// [`Cluster::udp`]'s ephemeral ports may meet a flow of an earlier
    /// phase that is still in the connection table.
    pub fn udp_from_ports(&self, vip: SocketAddr, first: u16, n: u16) -> HashMap<String, usize> {
        let ports: Vec<u16> = (first..first + n).collect();
        spread_udp_ports(&self.topo.client, vip, &ports, T)
    }

    /// Tally of TCP replies per pod tag over `n` new connections.
    pub fn tcp(&self, vip: SocketAddr, n: usize) -> HashMap<String, usize> {
        spread_tcp(&self.topo.client, vip, n, T)
    }

    /// HTTP GET from the client namespace; (status, body).
    pub fn http_get(&self, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
        xlb_tests::http::get(&self.topo.client, addr, path, T)
    }
}

/// A UDP/TCP Service on the test VIP 192.0.2.10 (annotation), ports
/// `dns` 53/UDP and `dns-tcp` 53/TCP.
pub fn dns_service(name: &str) -> LbService {
    lb_service(NS, name)
        .annotation("xlb.io/vip", &Topology::VIP_V4.to_string())
        .port("dns", 53, "UDP")
        .port("dns-tcp", 53, "TCP")
}

/// The slice ports matching [`dns_service`].
pub const DNS_PORTS: &[(&str, u16, &str)] = &[("dns", UDP_PORT, "UDP"), ("dns-tcp", TCP_PORT, "TCP")];

pub fn vip4(port: u16) -> SocketAddr {
    SocketAddr::new(Topology::VIP_V4.into(), port)
}

pub fn vip6(port: u16) -> SocketAddr {
    SocketAddr::new(Topology::VIP_V6.into(), port)
}

/// Ready endpoint of pod `i` on this node.
pub fn ready(i: usize) -> (usize, &'static str, bool, bool, bool) {
    (i, NODE, true, true, false)
}

pub fn tags(t: &HashMap<String, usize>) -> Vec<String> {
    let mut v: Vec<String> = t.keys().cloned().collect();
    v.sort();
    v
}

/// `(status, reason)` of the condition `ty` in the `conditions` array of
/// `holder` (a status, a listener's or a route parent's status).
pub fn condition(holder: &Value, ty: &str) -> Option<(String, String)> {
    holder["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .map(|c| (c["status"].as_str().unwrap_or("").to_string(), c["reason"].as_str().unwrap_or("").to_string()))
}

/// Whether condition `ty` of `holder` is `True`.
pub fn is_true(holder: &Value, ty: &str) -> bool {
    condition(holder, ty).is_some_and(|(s, _)| s == "True")
}
