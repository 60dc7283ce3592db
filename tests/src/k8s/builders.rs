//! Builders for the objects xlb reads: LoadBalancer Services,
//! EndpointSlices, Nodes.

use serde_json::{json, Value};

/// The `metadata` setters and [`build`](LbService::build) shared by the
/// builders of this crate, each keeping its object in a field `obj`.
macro_rules! object_builder {
    ($t:ty) => {
        impl $t {
            /// Adds `metadata.labels[key] = value`.
            #[must_use]
            pub fn label(mut self, key: &str, value: &str) -> Self {
                self.obj["metadata"]["labels"][key] = serde_json::json!(value);
                self
            }

            /// `metadata.creationTimestamp` (RFC 3339, e.g.
            /// `2024-01-01T00:00:00Z`), kept by the fake server on create:
            /// it orders competing claims (the oldest wins).
            #[must_use]
            pub fn created(mut self, rfc3339: &str) -> Self {
                self.obj["metadata"]["creationTimestamp"] = serde_json::json!(rfc3339);
                self
            }

            /// The object.
            pub fn build(&self) -> serde_json::Value {
                self.obj.clone()
            }
        }
    };
}
pub(crate) use object_builder;

/// A Service of `type: LoadBalancer` (class `xlb.io/xdp` unless changed),
/// built with chained calls and [`LbService::build`].
#[derive(Debug, Clone)]
pub struct LbService {
    obj: Value,
}

/// Starts a LoadBalancer Service `ns/name` with class `xlb.io/xdp`, no ports,
/// `externalTrafficPolicy: Cluster`, `sessionAffinity: None`.
pub fn lb_service(ns: &str, name: &str) -> LbService {
    LbService {
        obj: json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "xlb.io/xdp",
                "externalTrafficPolicy": "Cluster",
                "sessionAffinity": "None",
                "ports": [],
            },
        }),
    }
}

object_builder!(LbService);

impl LbService {
    /// `spec.loadBalancerClass` (`None` removes it).
    #[must_use]
    pub fn class(mut self, class: Option<&str>) -> Self {
        match class {
            Some(c) => self.obj["spec"]["loadBalancerClass"] = json!(c),
            None => {
                self.obj["spec"].as_object_mut().map(|m| m.remove("loadBalancerClass"));
            }
        }
        self
    }

    /// `spec.type` (default `LoadBalancer`).
    #[must_use]
    pub fn service_type(mut self, t: &str) -> Self {
        self.obj["spec"]["type"] = json!(t);
        self
    }

    /// Adds a port (`name` may be empty; `protocol` `UDP` or `TCP`); the
    /// target port is the same number.
    #[must_use]
    pub fn port(mut self, name: &str, port: u16, protocol: &str) -> Self {
        let mut p = json!({"port": port, "protocol": protocol, "targetPort": port});
        if !name.is_empty() {
            p["name"] = json!(name);
        }
        self.obj["spec"]["ports"].as_array_mut().expect("ports is an array").push(p);
        self
    }

    /// `spec.externalTrafficPolicy` (`Cluster` or `Local`).
    #[must_use]
    pub fn external_traffic_policy(mut self, policy: &str) -> Self {
        self.obj["spec"]["externalTrafficPolicy"] = json!(policy);
        self
    }

    /// `sessionAffinity: ClientIP` with `timeoutSeconds`.
    #[must_use]
    pub fn session_affinity_client_ip(mut self, timeout_seconds: u32) -> Self {
        self.obj["spec"]["sessionAffinity"] = json!("ClientIP");
        self.obj["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": timeout_seconds}});
        self
    }

    /// `spec.loadBalancerSourceRanges`.
    #[must_use]
    pub fn source_ranges(mut self, cidrs: &[&str]) -> Self {
        self.obj["spec"]["loadBalancerSourceRanges"] = json!(cidrs);
        self
    }

    /// Adds `metadata.annotations[key] = value`.
    #[must_use]
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.obj["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// `spec.loadBalancerIP`.
    #[must_use]
    pub fn load_balancer_ip(mut self, ip: &str) -> Self {
        self.obj["spec"]["loadBalancerIP"] = json!(ip);
        self
    }

    /// `spec.healthCheckNodePort`.
    #[must_use]
    pub fn health_check_node_port(mut self, port: u16) -> Self {
        self.obj["spec"]["healthCheckNodePort"] = json!(port);
        self
    }
}

/// One endpoint of an [`EndpointSliceBuilder`].
#[derive(Debug, Clone)]
pub struct Endpoint {
    addresses: Vec<String>,
    node_name: Option<String>,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// A ready, serving, not terminating endpoint with one address.
pub fn endpoint(address: impl ToString) -> Endpoint {
    Endpoint { addresses: vec![address.to_string()], node_name: None, ready: true, serving: true, terminating: false }
}

impl Endpoint {
    /// `nodeName`.
    #[must_use]
    pub fn node(mut self, name: &str) -> Self {
        self.node_name = Some(name.to_string());
        self
    }

    /// Sets the three conditions.
    #[must_use]
    pub fn conditions(mut self, ready: bool, serving: bool, terminating: bool) -> Self {
        self.ready = ready;
        self.serving = serving;
        self.terminating = terminating;
        self
    }

    fn to_json(&self) -> Value {
        let mut e = json!({
            "addresses": self.addresses,
            "conditions": {"ready": self.ready, "serving": self.serving, "terminating": self.terminating},
        });
        if let Some(n) = &self.node_name {
            e["nodeName"] = json!(n);
        }
        e
    }
}

/// An EndpointSlice, built with chained calls and
/// [`EndpointSliceBuilder::build`].
#[derive(Debug, Clone)]
pub struct EndpointSliceBuilder {
    obj: Value,
}

/// Starts an IPv4 EndpointSlice `ns/name` labelled
/// `kubernetes.io/service-name: service`, without endpoints or ports.
pub fn endpoint_slice(ns: &str, name: &str, service: &str) -> EndpointSliceBuilder {
    EndpointSliceBuilder {
        obj: json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "endpoints": [],
            "ports": [],
        }),
    }
}

object_builder!(EndpointSliceBuilder);

impl EndpointSliceBuilder {
    /// `addressType` (`IPv4`, `IPv6`).
    #[must_use]
    pub fn address_type(mut self, t: &str) -> Self {
        self.obj["addressType"] = json!(t);
        self
    }

    /// Adds an endpoint.
    #[must_use]
    pub fn endpoint(mut self, e: Endpoint) -> Self {
        self.obj["endpoints"].as_array_mut().expect("endpoints is an array").push(e.to_json());
        self
    }

    /// Adds a port (`name` may be empty: the port of an unnamed Service port).
    #[must_use]
    pub fn port(mut self, name: &str, port: u16, protocol: &str) -> Self {
        self.obj["ports"]
            .as_array_mut()
            .expect("ports is an array")
            .push(json!({"name": name, "port": port, "protocol": protocol}));
        self
    }
}

/// A Node with one `InternalIP` address.
pub fn node(name: &str, internal_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": internal_ip},
            {"type": "Hostname", "address": name},
        ]},
    })
}
