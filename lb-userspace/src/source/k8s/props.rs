//! Property tests of the Kubernetes translation: random Services and
//! EndpointSlices (k8s-openapi types, fields drawn from valid, odd and
//! invalid values: classes, VIP sources, ports, protocols, traffic policies,
//! affinity, source ranges, address types, endpoint addresses and
//! conditions, duplicates) never make `translate` panic, and what it
//! produces is a valid desired state by the model's own rules
//! ([`DesiredState::new`]) and by its invariants spelled out here.
use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use proptest::{prelude::*, sample::select};
use serde_json::{json, Value};

use super::translate::{translate, Inputs};
use crate::state::model::DesiredState;

const CLASS: &str = "xlb.io/xdp";
const NODE: &str = "node-a";
const NAMES: &[&str] = &["a", "b", "c"];
/// `--vip-pool` choices.
const POOLS: &[&[&str]] = &[&[], &["192.0.2.0/28"], &["192.0.2.0/30", "2001:db8::/126"]];

fn opt<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

/// A VIP (or endpoint) address: mostly usable, sometimes not an address
/// xlb can use, sometimes no address at all.
fn addr() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => select(&["192.0.2.10", "192.0.2.11", "2001:db8::10"][..]),
        1 => select(&[
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:192.0.2.10",
            "::",
            "not-an-ip",
            "192.0.2.10,2001:db8::10",
            "",
        ][..]),
    ]
}

/// An endpoint address: pods of both families, sometimes unusable.
fn endpoint_addr() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => select(&["10.1.0.5", "10.1.0.6", "fd00:1::5", "fd00:1::6"][..]),
        1 => select(&["0.0.0.0", "224.0.0.1", "ff02::1", "192.0.2.10", "x", "pod.example"][..]),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => select(&[53i64, 80, 443, 5353, 8080][..]).prop_map(Value::from),
        1 => select(&[0i64, 65535, 65536, -1][..]).prop_map(Value::from),
    ]
}

fn protocol() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![8 => opt(select(&["UDP", "TCP"][..])), 1 => opt(select(&["SCTP", "udp"][..]))]
}

fn service_port() -> impl Strategy<Value = Value> {
    (opt(select(&["dns", "web", "x"][..])), port(), protocol(), opt(port())).prop_map(|(name, port, proto, target)| {
        let mut p = json!({ "port": port });
        if let Some(n) = name {
            p["name"] = json!(n);
        }
        if let Some(pr) = proto {
            p["protocol"] = json!(pr);
        }
        if let Some(t) = target {
            p["targetPort"] = t;
        }
        p
    })
}

prop_compose! {
    fn service()(
        ns in select(&["a", "b"][..]),
        name in select(NAMES),
        ty in prop_oneof![9 => Just("LoadBalancer"), 1 => Just("ClusterIP")],
        class in prop_oneof![8 => Just(Some(CLASS)), 1 => Just(Some("other")), 1 => Just(None)],
        created in opt(select(&["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"][..])),
        annotation in prop_oneof![3 => addr().prop_map(Some), 1 => Just(None)],
        lb_ip in opt(addr()),
        status in opt(proptest::collection::vec(addr(), 0..3)),
        ports in proptest::collection::vec(service_port(), 1..4).prop_map(unique_port_names),
        policy in opt(select(&["Local", "Cluster"][..])),
        health in opt(port()),
        affinity in opt(select(&["ClientIP", "None"][..])),
        timeout in opt(select(&[-5i64, 0, 10, 86400, 100_000][..])),
        ranges in opt(proptest::collection::vec(
            prop_oneof![6 => select(&["10.100.0.0/24", "fd00:100::/64", "10.0.0.1/8"][..]), 1 => select(&["bad", ""][..])],
            0..3,
        )),
        ranges_annotation in opt(prop_oneof![4 => Just("10.100.0.0/24, fd00:100::/64"), 1 => select(&["x,", ""][..])]),
    ) -> Value {
        let mut spec = json!({ "type": ty, "ports": ports });
        if let Some(c) = class { spec["loadBalancerClass"] = json!(c); }
        if let Some(ip) = lb_ip { spec["loadBalancerIP"] = json!(ip); }
        if let Some(p) = policy { spec["externalTrafficPolicy"] = json!(p); }
        if let Some(h) = health { spec["healthCheckNodePort"] = h; }
        if let Some(a) = affinity { spec["sessionAffinity"] = json!(a); }
        if let Some(t) = timeout { spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": t}}); }
        if let Some(r) = ranges { spec["loadBalancerSourceRanges"] = json!(r); }
        let mut annotations = serde_json::Map::new();
        if let Some(a) = annotation { annotations.insert("xlb.io/vip".into(), json!(a)); }
        if let Some(r) = ranges_annotation {
            annotations.insert("service.beta.kubernetes.io/load-balancer-source-ranges".into(), json!(r));
        }
        let mut meta = json!({ "namespace": ns, "name": name, "annotations": annotations });
        if let Some(c) = created { meta["creationTimestamp"] = json!(c); }
        let mut svc = json!({ "apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec });
        if let Some(ips) = status {
            let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
            svc["status"] = json!({"loadBalancer": {"ingress": ingress}});
        }
        svc
    }
}

/// As the API server admits them: with more than one port, every port has
/// a name of its own.
fn unique_port_names(mut ports: Vec<Value>) -> Vec<Value> {
    if ports.len() > 1 {
        for (i, p) in ports.iter_mut().enumerate() {
            p["name"] = json!(["dns", "web", "x", "y"][i]);
        }
    }
    ports
}

/// As a cache holds them: one object per namespace and name.
fn unique_objects(objects: Vec<Value>) -> Vec<Value> {
    let mut seen = HashSet::new();
    objects
        .into_iter()
        .filter(|o| seen.insert((o["metadata"]["namespace"].to_string(), o["metadata"]["name"].to_string())))
        .collect()
}

fn endpoint() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(endpoint_addr(), 0..3),
        opt(select(&[NODE, "node-b"][..])),
        prop_oneof![4 => Just(Some(true)), 1 => opt(any::<bool>())],
        opt(any::<bool>()),
        opt(any::<bool>()),
    )
        .prop_map(|(addresses, node, ready, serving, terminating)| {
            let mut c = serde_json::Map::new();
            for (k, v) in [("ready", ready), ("serving", serving), ("terminating", terminating)] {
                if let Some(v) = v {
                    c.insert(k.into(), json!(v));
                }
            }
            let mut e = json!({ "addresses": addresses, "conditions": c });
            if let Some(n) = node {
                e["nodeName"] = json!(n);
            }
            e
        })
}

prop_compose! {
    fn slice()(
        ns in select(&["a", "b"][..]),
        service in prop_oneof![8 => select(NAMES).prop_map(Some), 1 => Just(None)],
        name in select(&["s1", "s2", "s3"][..]),
        family in prop_oneof![4 => select(&["IPv4", "IPv6"][..]), 1 => Just("FQDN")],
        ports in prop_oneof![6 => proptest::collection::vec(service_port(), 1..3).prop_map(Some), 1 => Just(None)],
        endpoints in proptest::collection::vec(endpoint(), 0..5),
    ) -> Value {
        let mut labels = serde_json::Map::new();
        if let Some(s) = service { labels.insert("kubernetes.io/service-name".into(), json!(s)); }
        let mut s = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "addressType": family,
            "endpoints": endpoints,
        });
        if let Some(p) = ports { s["ports"] = json!(p); }
        s
    }
}

prop_compose! {
    /// Services, random EndpointSlices, and for some Services a slice of
    /// theirs (same namespace, the Service's port names and protocols).
    fn world()(
        services in proptest::collection::vec(service(), 1..6).prop_map(unique_objects),
        random in proptest::collection::vec(slice(), 0..4),
        theirs in proptest::collection::vec(
            (any::<bool>(), select(&["IPv4", "IPv6"][..]), proptest::collection::vec(endpoint(), 1..4)),
            6,
        ),
    ) -> (Vec<Value>, Vec<Value>) {
        let mut slices = random;
        for (i, (svc, (on, family, endpoints))) in services.iter().zip(theirs).enumerate() {
            if !on {
                continue;
            }
            let ports: Vec<Value> = svc["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|p| json!({"name": p["name"], "protocol": p["protocol"], "port": 5353}))
                .collect();
            slices.push(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "namespace": svc["metadata"]["namespace"],
                    "name": format!("m{i}"),
                    "labels": {"kubernetes.io/service-name": svc["metadata"]["name"]},
                },
                "addressType": family,
                "ports": ports,
                "endpoints": endpoints,
            }));
        }
        (services, unique_objects(slices))
    }
}

/// The model's invariants of a translation's state.
fn assert_valid(state: &DesiredState) {
    crate::state::model::test_support::assert_invariants(&state.services, "the translation");
}

proptest! {
    #[test]
    fn random_services_and_slices_translate_to_a_valid_state(
        (services, slices) in world(),
        pools in select(POOLS),
    ) {
        let services: Vec<Arc<Service>> = services
            .into_iter()
            .map(|v| Arc::new(serde_json::from_value(v).expect("a Service")))
            .collect();
        let slices: Vec<Arc<EndpointSlice>> = slices
            .into_iter()
            .map(|v| Arc::new(serde_json::from_value(v).expect("an EndpointSlice")))
            .collect();
        let pools: Vec<IpNet> = pools.iter().map(|p| p.parse().expect("pool")).collect();
        let t = translate(&Inputs { services: &services, slices: &slices, node_name: NODE, lb_class: CLASS, pools: &pools, reserved: &[] });
        assert_valid(&t.state);
        // Every VIP named per Service is a VIP of the state, and back.
        let vips: BTreeSet<IpAddr> = t.state.services.iter().map(|s| s.vip).collect();
        let named: BTreeSet<IpAddr> = t.vip_services.keys().copied().collect();
        prop_assert_eq!(vips, named);
    }
}
