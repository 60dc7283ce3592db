//! The Gateway API (v1.6 standard channel, L4) for the tests: its
//! CustomResourceDefinitions (what "installing the CRDs" creates in the fake
//! API server, which serves the resources only while they are stored), the
//! URL paths, and builders for GatewayClass, Gateway, TCPRoute, UDPRoute and
//! ReferenceGrant objects as plain JSON.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use xlb_tests::k8s::{self, gateway_path, route_path, ApiServer};
//! # let topo = xlb_tests::Topology::new(0)?;
//! let api = ApiServer::start(&topo.node)?;
//! api.install_gateway_api()?;
//! let c = api.client();
//! c.create(&k8s::gateway_classes_path(), &k8s::gateway_class("xlb", "xlb.io/gateway-controller"))?;
//! let gw = k8s::gateway("default", "gw", "xlb").listener("dns", "UDP", 53).build();
//! c.create(&k8s::gateways_path(Some("default")), &gw)?;
//! let route = k8s::udp_route("default", "dns").parent("gw", Some("dns")).backend("dns", 53, Some(70)).build();
//! c.create(&k8s::routes_path("UDPRoute", Some("default")), &route)?;
//! let status = c.get(&gateway_path("default", "gw"))?["status"].clone();
//! # let _ = (status, route_path("UDPRoute", "default", "dns"));
//! # Ok(()) }
//! ```

use serde_json::{json, Value};

use super::api_path;

/// The Gateway API's group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// `apiVersion` of GatewayClass, Gateway, TCPRoute, UDPRoute and
/// ReferenceGrant (ReferenceGrant is also served as `v1beta1`).
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The Gateway API release the CRDs name (`gateway.networking.k8s.io/bundle-version`).
pub const GATEWAY_BUNDLE_VERSION: &str = "v1.6.0";

/// One Gateway API resource xlb uses.
struct GatewayKind {
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    /// Has a status subresource.
    status: bool,
    /// Versions served, the stored one first.
    versions: &'static [&'static str],
}

const fn kind(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
) -> GatewayKind {
    GatewayKind { plural, singular, kind, namespaced, short, status, versions: &["v1"] }
}

const KINDS: &[GatewayKind] = &[
    kind("gatewayclasses", "gatewayclass", "GatewayClass", false, &["gc"], true),
    kind("gateways", "gateway", "Gateway", true, &["gtw"], true),
    kind("tcproutes", "tcproute", "TCPRoute", true, &[], true),
    kind("udproutes", "udproute", "UDPRoute", true, &[], true),
    // v1 since Gateway API v1.5; v1beta1 still served.
    GatewayKind {
        versions: &["v1", "v1beta1"],
        ..kind("referencegrants", "referencegrant", "ReferenceGrant", true, &["refgrant"], false)
    },
];

/// The plural of a Gateway API kind (`"UDPRoute"` → `"udproutes"`).
///
/// # Panics
///
/// For a kind not in the table.
pub fn gateway_plural(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| k.kind == kind)
        .unwrap_or_else(|| panic!("{kind} is no Gateway API kind the tests know"))
        .plural
}

/// The CustomResourceDefinitions of the Gateway API v1.6 standard channel
/// for GatewayClass, Gateway, TCPRoute, UDPRoute and ReferenceGrant (schemas
/// left open: the fake API server does not validate), named
/// `<plural>.gateway.networking.k8s.io`. Create them (in a `--state` or
/// through the API, [`super::ApiServer::install_gateway_api`]) and the fake
/// API server serves the resources; delete them and it stops.
pub fn gateway_api_crds() -> Vec<Value> {
    KINDS
        .iter()
        .map(|k| {
            let GatewayKind { plural, singular, kind, namespaced, short, status, versions } = k;
            let versions: Vec<Value> = versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut v = json!({
                        "name": v,
                        "served": true,
                        "storage": i == 0,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    });
                    if *status {
                        v["subresources"] = json!({"status": {}});
                    }
                    v
                })
                .collect();
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {
                    "name": format!("{plural}.{GATEWAY_GROUP}"),
                    "annotations": {
                        "gateway.networking.k8s.io/bundle-version": GATEWAY_BUNDLE_VERSION,
                        "gateway.networking.k8s.io/channel": "standard",
                    },
                },
                "spec": {
                    "group": GATEWAY_GROUP,
                    "names": {
                        "plural": plural,
                        "singular": singular,
                        "kind": kind,
                        "listKind": format!("{kind}List"),
                        "shortNames": short,
                        "categories": ["gateway-api"],
                    },
                    "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                    "versions": versions,
                },
            })
        })
        .collect()
}

/// `/apis/apiextensions.k8s.io/v1/customresourcedefinitions[/<name>]`.
pub fn crds_path(name: Option<&str>) -> String {
    api_path("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name)
}

/// `/apis/gateway.networking.k8s.io/v1/gatewayclasses`.
pub fn gateway_classes_path() -> String {
    api_path(GATEWAY_API_VERSION, "gatewayclasses", None, None)
}

/// `/apis/gateway.networking.k8s.io/v1/gatewayclasses/<name>`.
pub fn gateway_class_path(name: &str) -> String {
    api_path(GATEWAY_API_VERSION, "gatewayclasses", None, Some(name))
}

/// `/apis/gateway.networking.k8s.io/v1[/namespaces/<ns>]/gateways`.
pub fn gateways_path(ns: Option<&str>) -> String {
    api_path(GATEWAY_API_VERSION, "gateways", ns, None)
}

/// `/apis/gateway.networking.k8s.io/v1/namespaces/<ns>/gateways/<name>`.
pub fn gateway_path(ns: &str, name: &str) -> String {
    api_path(GATEWAY_API_VERSION, "gateways", Some(ns), Some(name))
}

/// The collection of a namespaced Gateway API `kind` (`"TCPRoute"`,
/// `"UDPRoute"`, `"ReferenceGrant"`, `"Gateway"`), in `ns` or all.
pub fn routes_path(kind: &str, ns: Option<&str>) -> String {
    api_path(GATEWAY_API_VERSION, gateway_plural(kind), ns, None)
}

/// One object of a namespaced Gateway API `kind` (as [`routes_path`]).
pub fn route_path(kind: &str, ns: &str, name: &str) -> String {
    api_path(GATEWAY_API_VERSION, gateway_plural(kind), Some(ns), Some(name))
}

/// `/apis/gateway.networking.k8s.io/v1[/namespaces/<ns>]/referencegrants`.
pub fn reference_grants_path(ns: Option<&str>) -> String {
    routes_path("ReferenceGrant", ns)
}

/// A GatewayClass `name` of controller `controller` (e.g.
/// `xlb.io/gateway-controller`).
pub fn gateway_class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    })
}

/// A Gateway, built with chained calls and [`GatewayBuilder::build`].
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    obj: Value,
}

/// Starts a Gateway `ns/name` of class `class`, without listeners or addresses.
pub fn gateway(ns: &str, name: &str, class: &str) -> GatewayBuilder {
    GatewayBuilder {
        obj: json!({
            "apiVersion": GATEWAY_API_VERSION,
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"gatewayClassName": class, "listeners": []},
        }),
    }
}

super::builders::object_builder!(GatewayBuilder);

impl GatewayBuilder {
    /// Adds a listener (`protocol` `TCP`, `UDP`, or another to test refusals)
    /// with the default `allowedRoutes` (routes of its namespace, the kinds
    /// of its protocol).
    #[must_use]
    pub fn listener(mut self, name: &str, protocol: &str, port: u16) -> Self {
        let l = json!({"name": name, "protocol": protocol, "port": port});
        self.obj["spec"]["listeners"].as_array_mut().expect("listeners is an array").push(l);
        self
    }

    /// Sets the last listener's `allowedRoutes.namespaces.from` (`Same`,
    /// `All` or `Selector`; with `Selector`, `selector` is its
    /// `matchLabels`).
    ///
    /// # Panics
    ///
    /// Without a listener.
    #[must_use]
    pub fn allowed_namespaces(mut self, from: &str, selector: Option<&[(&str, &str)]>) -> Self {
        let mut ns = json!({"from": from});
        if let Some(labels) = selector {
            let m: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
            ns["selector"] = json!({"matchLabels": m});
        }
        self.last_listener()["allowedRoutes"]["namespaces"] = ns;
        self
    }

    /// Sets the last listener's `allowedRoutes.kinds` (each a kind of the
    /// Gateway API group, e.g. `["UDPRoute"]`).
    ///
    /// # Panics
    ///
    /// Without a listener.
    #[must_use]
    pub fn allowed_kinds(mut self, kinds: &[&str]) -> Self {
        let k: Vec<Value> = kinds.iter().map(|k| json!({"group": GATEWAY_GROUP, "kind": k})).collect();
        self.last_listener()["allowedRoutes"]["kinds"] = json!(k);
        self
    }

    fn last_listener(&mut self) -> &mut Value {
        self.obj["spec"]["listeners"]
            .as_array_mut()
            .and_then(|l| l.last_mut())
            .expect("add a listener before setting its allowedRoutes")
    }

    /// Adds a `spec.addresses[]` entry of type `IPAddress`.
    #[must_use]
    pub fn address(mut self, ip: &str) -> Self {
        let a = json!({"type": "IPAddress", "value": ip});
        match self.obj["spec"]["addresses"].as_array_mut() {
            Some(list) => list.push(a),
            None => self.obj["spec"]["addresses"] = json!([a]),
        }
        self
    }
}

/// A TCPRoute or UDPRoute, built with chained calls and [`RouteBuilder::build`].
#[derive(Debug, Clone)]
pub struct RouteBuilder {
    obj: Value,
}

/// Starts a TCPRoute `ns/name` without parents or rules.
pub fn tcp_route(ns: &str, name: &str) -> RouteBuilder {
    route("TCPRoute", ns, name)
}

/// Starts a UDPRoute `ns/name` without parents or rules.
pub fn udp_route(ns: &str, name: &str) -> RouteBuilder {
    route("UDPRoute", ns, name)
}

fn route(kind: &str, ns: &str, name: &str) -> RouteBuilder {
    RouteBuilder {
        obj: json!({
            "apiVersion": GATEWAY_API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [], "rules": []},
        }),
    }
}

super::builders::object_builder!(RouteBuilder);

impl RouteBuilder {
    /// Adds a `parentRefs[]` entry: the Gateway `gateway` of the route's
    /// namespace, by `sectionName` when given.
    #[must_use]
    pub fn parent(self, gateway: &str, section: Option<&str>) -> Self {
        self.parent_ref(None, gateway, section, None)
    }

    /// Adds a `parentRefs[]` entry with every field: the Gateway's namespace
    /// (`None`: the route's), `sectionName` and `port`.
    #[must_use]
    pub fn parent_ref(mut self, ns: Option<&str>, gateway: &str, section: Option<&str>, port: Option<u16>) -> Self {
        let mut p = json!({"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway});
        if let Some(ns) = ns {
            p["namespace"] = json!(ns);
        }
        if let Some(s) = section {
            p["sectionName"] = json!(s);
        }
        if let Some(port) = port {
            p["port"] = json!(port);
        }
        self.obj["spec"]["parentRefs"].as_array_mut().expect("parentRefs is an array").push(p);
        self
    }

    /// Starts a new rule (the next backends go into it); the first
    /// [`RouteBuilder::backend`] starts one by itself.
    #[must_use]
    pub fn rule(mut self) -> Self {
        self.obj["spec"]["rules"].as_array_mut().expect("rules is an array").push(json!({"backendRefs": []}));
        self
    }

    /// Adds a backendRef to the last rule: the Service `service` of the
    /// route's namespace at `port`, with `weight` when given.
    #[must_use]
    pub fn backend(self, service: &str, port: u16, weight: Option<u32>) -> Self {
        self.backend_ref(None, service, port, weight)
    }

    /// Adds a backendRef to the last rule: the Service `service` in `ns`
    /// (`None`: the route's namespace) at `port`, with `weight` when given.
    #[must_use]
    pub fn backend_ref(mut self, ns: Option<&str>, service: &str, port: u16, weight: Option<u32>) -> Self {
        if self.obj["spec"]["rules"].as_array().is_none_or(Vec::is_empty) {
            self = self.rule();
        }
        let mut b = json!({"group": "", "kind": "Service", "name": service, "port": port});
        if let Some(ns) = ns {
            b["namespace"] = json!(ns);
        }
        if let Some(w) = weight {
            b["weight"] = json!(w);
        }
        let rules = self.obj["spec"]["rules"].as_array_mut().expect("rules is an array");
        let last = rules.last_mut().expect("a rule");
        last["backendRefs"].as_array_mut().expect("backendRefs is an array").push(b);
        self
    }
}

/// A ReferenceGrant in `ns` (the namespace of the Services it opens up)
/// letting the TCPRoutes and UDPRoutes of `from_ns` reference its Services
/// (all of them, or the one named `service`).
pub fn reference_grant(ns: &str, name: &str, from_ns: &str, service: Option<&str>) -> Value {
    let from: Vec<Value> = ["TCPRoute", "UDPRoute"]
        .iter()
        .map(|k| json!({"group": GATEWAY_GROUP, "kind": k, "namespace": from_ns}))
        .collect();
    let mut to = json!({"group": "", "kind": "Service"});
    if let Some(s) = service {
        to["name"] = json!(s);
    }
    json!({
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"from": from, "to": [to]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_give_the_upstream_shapes() {
        let gw = gateway("ns1", "gw", "xlb")
            .listener("dns", "UDP", 53)
            .allowed_namespaces("Selector", Some(&[("team", "net")]))
            .allowed_kinds(&["UDPRoute"])
            .listener("web", "TCP", 80)
            .address("192.0.2.10")
            .build();
        assert_eq!(gw["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["selector"]["matchLabels"]["team"], "net");
        assert_eq!(gw["spec"]["listeners"][0]["allowedRoutes"]["kinds"][0]["kind"], "UDPRoute");
        assert!(gw["spec"]["listeners"][1].get("allowedRoutes").is_none());
        assert_eq!(gw["spec"]["addresses"], json!([{"type": "IPAddress", "value": "192.0.2.10"}]));
        let r = udp_route("ns1", "dns")
            .parent_ref(None, "gw", Some("dns"), Some(53))
            .backend("a", 5353, Some(70))
            .backend_ref(Some("ns2"), "b", 5353, Some(30))
            .rule()
            .backend("c", 53, None)
            .build();
        assert_eq!(r["kind"], "UDPRoute");
        assert_eq!(
            r["spec"]["parentRefs"][0],
            json!({"group": GATEWAY_GROUP, "kind": "Gateway", "name": "gw", "sectionName": "dns", "port": 53})
        );
        assert_eq!(r["spec"]["rules"].as_array().unwrap().len(), 2);
        assert_eq!(r["spec"]["rules"][0]["backendRefs"][1]["namespace"], "ns2");
        assert!(r["spec"]["rules"][1]["backendRefs"][0].get("weight").is_none());
        assert_eq!(route_path("TCPRoute", "x", "y"), "/apis/gateway.networking.k8s.io/v1/namespaces/x/tcproutes/y");
        let crds = gateway_api_crds();
        let names: Vec<&str> = crds.iter().map(|c| c["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "gatewayclasses.gateway.networking.k8s.io",
                "gateways.gateway.networking.k8s.io",
                "tcproutes.gateway.networking.k8s.io",
                "udproutes.gateway.networking.k8s.io",
                "referencegrants.gateway.networking.k8s.io"
            ]
        );
        assert_eq!(crds[0]["spec"]["scope"], "Cluster");
        assert_eq!(crds[4]["spec"]["versions"][1]["name"], "v1beta1");
    }
}
