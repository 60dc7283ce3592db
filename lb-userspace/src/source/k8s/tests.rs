//! Unit tests of the Kubernetes translation: Services + EndpointSlices →
//! desired state, notes, health checks and the allocator's plan.
use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use serde_json::{json, Value};

use super::{
    address::{self, plan},
    translate::{reason, translate, Inputs, Translation},
};
use crate::state::model::{test_support::ip, BackendSpec, Protocol, ServiceSpec, SourceMode};

const CLASS: &str = "xlb.io/xdp";
const NODE: &str = "node-a";

fn svc(ns: &str, name: &str, created: &str, spec: Value) -> Value {
    let mut base = json!({
        "type": "LoadBalancer",
        "loadBalancerClass": CLASS,
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}],
    });
    merge(&mut base, spec);
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": created, "annotations": {"xlb.io/vip": "192.0.2.10"}},
        "spec": base,
    })
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(&k);
                } else {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (a, b) => *a = b,
    }
}

fn with(mut v: Value, patch: Value) -> Value {
    merge(&mut v, patch);
    v
}

/// One endpoint: (address, node, ready, serving, terminating).
type Ep<'a> = (&'a str, &'a str, bool, bool, bool);

fn slice(ns: &str, service: &str, name: &str, family: &str, ports: Value, eps: &[Ep]) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(a, node, r, s, t)| {
            json!({"addresses": [a], "nodeName": node, "conditions": {"ready": r, "serving": s, "terminating": t}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "ports": ports,
        "endpoints": endpoints,
    })
}

fn dns_ports() -> Value {
    json!([{"name": "dns", "port": 5353, "protocol": "UDP"}])
}

fn ready(a: &str) -> Ep<'_> {
    (a, NODE, true, true, false)
}

/// The Service ns/dns created at `T0` (port dns, 53/UDP; vip 192.0.2.10 by
/// annotation), with `spec` merged into its spec.
fn dns(spec: Value) -> Value {
    svc("ns", "dns", T0, spec)
}

/// The IPv4 EndpointSlice "a" of ns/dns (port dns, 5353/UDP).
fn dns_slice(eps: &[Ep]) -> Value {
    slice("ns", "dns", "a", "IPv4", dns_ports(), eps)
}

/// `v` with its `xlb.io/vip` annotation set to `vip`.
fn with_vip(v: Value, vip: &str) -> Value {
    with(v, json!({"metadata": {"annotations": {"xlb.io/vip": vip}}}))
}

/// `v` with `ips` as its load balancer status.
fn with_status(v: Value, ips: &[&str]) -> Value {
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    with(v, json!({"status": {"loadBalancer": {"ingress": ingress}}}))
}

fn services(v: &[Value]) -> Vec<Arc<Service>> {
    v.iter().map(|s| Arc::new(serde_json::from_value(s.clone()).expect("service json"))).collect()
}

fn slices(v: &[Value]) -> Vec<Arc<EndpointSlice>> {
    v.iter().map(|s| Arc::new(serde_json::from_value(s.clone()).expect("slice json"))).collect()
}

fn run(svcs: &[Value], sls: &[Value], pools: &[&str]) -> Translation {
    let pools: Vec<IpNet> = pools.iter().map(|p| p.parse().unwrap()).collect();
    translate(&Inputs {
        services: &services(svcs),
        slices: &slices(sls),
        node_name: NODE,
        lb_class: CLASS,
        pools: &pools,
        reserved: &[],
    })
}

fn one<'a>(t: &'a Translation, name: &str) -> &'a ServiceSpec {
    t.state.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} not in {:#?}", t.state.services))
}

fn backends(s: &ServiceSpec) -> Vec<(String, u16)> {
    s.backends.iter().map(|b: &BackendSpec| (b.addr.to_string(), b.weight)).collect()
}

fn reasons(t: &Translation, ns: &str, name: &str) -> Vec<&'static str> {
    t.notes.get(&(ns.into(), name.into())).map(|n| n.iter().map(|n| n.reason).collect()).unwrap_or_default()
}

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-02T00:00:00Z";

#[test]
fn only_load_balancers_of_our_class() {
    let t = run(
        &[
            svc("a", "mine", T0, json!({})),
            svc("a", "other-class", T0, json!({"loadBalancerClass": "metallb"})),
            svc("a", "no-class", T0, json!({"loadBalancerClass": null})),
            svc("a", "cluster-ip", T0, json!({"type": "ClusterIP"})),
        ],
        &[],
        &[],
    );
    let names: Vec<&str> = t.state.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a/mine:dns"]);
    assert!(t.notes.keys().all(|(_, n)| n == "mine"), "{:?}", t.notes);
}

#[test]
fn one_service_per_port_and_protocol_named_by_port_name_or_number() {
    let t = run(
        &[dns(json!({"ports": [
            {"name": "dns-udp", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"port": 8080},
        ]}))],
        &[slice(
            "ns",
            "dns",
            "dns-1",
            "IPv4",
            json!([{"name": "dns-udp", "port": 5353, "protocol": "UDP"}, {"name": "dns-tcp", "port": 5353, "protocol": "TCP"}, {"port": 80}]),
            &[ready("10.1.0.5")],
        )],
        &[],
    );
    let udp = one(&t, "ns/dns:dns-udp");
    let tcp = one(&t, "ns/dns:dns-tcp");
    let web = one(&t, "ns/dns:8080");
    assert_eq!((udp.vip, udp.port, udp.protocol), (ip("192.0.2.10"), 53, Protocol::Udp));
    assert_eq!((tcp.port, tcp.protocol), (53, Protocol::Tcp));
    assert_eq!(web.protocol, Protocol::Tcp, "protocol defaults to TCP");
    assert_eq!(backends(udp), [("10.1.0.5:5353".into(), 1)]);
    assert_eq!(backends(web), [("10.1.0.5:80".into(), 1)]);
    assert_eq!(reasons(&t, "ns", "dns"), [reason::PROGRAMMED]);
}

#[test]
fn slices_aggregate_across_families_and_deduplicate() {
    let t = run(
        &[with_vip(dns(json!({})), "192.0.2.10,2001:db8:ffff::10")],
        &[
            dns_slice(&[ready("10.1.0.5"), ready("10.1.0.6")]),
            // the same endpoint in a second slice (as during a slice migration)
            slice("ns", "dns", "b", "IPv4", dns_ports(), &[ready("10.1.0.6"), ready("10.1.0.7")]),
            slice("ns", "dns", "c", "IPv6", dns_ports(), &[ready("fd00:1::5")]),
            // another Service's slice and an FQDN slice are ignored
            slice("ns", "other", "d", "IPv4", dns_ports(), &[ready("10.9.9.9")]),
            slice("ns", "dns", "e", "FQDN", dns_ports(), &[ready("example.com")]),
            slice("other-ns", "dns", "f", "IPv4", dns_ports(), &[ready("10.8.8.8")]),
        ],
        &[],
    );
    let v4 = one(&t, "ns/dns:dns");
    assert_eq!(backends(v4), [("10.1.0.5:5353".into(), 1), ("10.1.0.6:5353".into(), 1), ("10.1.0.7:5353".into(), 1)]);
    let v6 = one(&t, "ns/dns:dns@2001:db8:ffff::10");
    assert_eq!(v6.vip, ip("2001:db8:ffff::10"));
    assert_eq!(backends(v6), [("[fd00:1::5]:5353".into(), 1)]);
}

#[test]
fn terminating_endpoints_keep_flows_and_take_new_ones_only_when_none_is_ready() {
    let some_ready = run(
        &[dns(json!({}))],
        &[dns_slice(&[
            ready("10.1.0.5"),
            ("10.1.0.6", NODE, false, true, true),   // serving + terminating
            ("10.1.0.7", NODE, false, false, true),  // terminating, not serving
            ("10.1.0.8", NODE, false, false, false), // not ready
        ])],
        &[],
    );
    assert_eq!(backends(one(&some_ready, "ns/dns:dns")), [("10.1.0.5:5353".into(), 1), ("10.1.0.6:5353".into(), 0)]);
    let none_ready = run(
        &[dns(json!({}))],
        &[dns_slice(&[("10.1.0.6", NODE, false, true, true), ("10.1.0.8", NODE, false, false, false)])],
        &[],
    );
    assert_eq!(backends(one(&none_ready, "ns/dns:dns")), [("10.1.0.6:5353".into(), 1)]);
    // no conditions at all: unknown counts as ready
    let unknown: Value = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": "u", "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4", "ports": dns_ports(), "endpoints": [{"addresses": ["10.1.0.9"]}],
    });
    let t = run(&[dns(json!({}))], &[unknown], &[]);
    assert_eq!(backends(one(&t, "ns/dns:dns")), [("10.1.0.9:5353".into(), 1)]);
}

#[test]
fn no_endpoints_is_a_service_without_backends() {
    let t = run(&[dns(json!({}))], &[], &[]);
    assert!(one(&t, "ns/dns:dns").backends.is_empty());
}

#[test]
fn traffic_policy_local_keeps_local_endpoints_and_the_client_address() {
    let eps = [ready("10.1.0.5"), ("10.1.0.6", "node-b", true, true, false), ("10.1.0.7", NODE, false, true, true)];
    let local =
        run(&[dns(json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": 30111}))], &[dns_slice(&eps)], &[]);
    let s = one(&local, "ns/dns:dns");
    assert_eq!(s.source, SourceMode::Preserve);
    assert_eq!(backends(s), [("10.1.0.5:5353".into(), 1), ("10.1.0.7:5353".into(), 0)]);
    assert_eq!(local.health_checks.len(), 1);
    assert_eq!((local.health_checks[0].port, local.health_checks[0].local_ready), (30111, 1));

    let cluster = run(&[dns(json!({"externalTrafficPolicy": "Cluster"}))], &[dns_slice(&eps)], &[]);
    let s = one(&cluster, "ns/dns:dns");
    assert_eq!(s.source, SourceMode::Snat);
    assert_eq!(s.backends.len(), 3);
    assert!(cluster.health_checks.is_empty(), "no health check for Cluster");

    // only terminating local endpoints: 503
    let term = run(
        &[dns(json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": 30111}))],
        &[dns_slice(&[("10.1.0.7", NODE, false, true, true), ready("10.1.0.6").pipe_node("node-b")])],
        &[],
    );
    assert_eq!(term.health_checks[0].local_ready, 0);
    let (code, body) = super::health::answer(Some(&term.health_checks[0]));
    assert_eq!(code.as_u16(), 503, "{body}");
    let (code, body) = super::health::answer(Some(&local.health_checks[0]));
    assert_eq!(code.as_u16(), 200);
    assert!(body.contains("\"localEndpoints\":1"), "{body}");
}

trait EpNode<'a> {
    fn pipe_node(self, node: &'a str) -> Ep<'a>;
}
impl<'a> EpNode<'a> for Ep<'a> {
    fn pipe_node(self, node: &'a str) -> Ep<'a> {
        (self.0, node, self.2, self.3, self.4)
    }
}

#[test]
fn session_affinity_client_ip_with_timeout() {
    let none = run(&[dns(json!({}))], &[], &[]);
    assert_eq!(one(&none, "ns/dns:dns").affinity_timeout, None);
    let default = run(&[dns(json!({"sessionAffinity": "ClientIP"}))], &[], &[]);
    assert_eq!(one(&default, "ns/dns:dns").affinity_timeout, Some(10800));
    let set = run(
        &[dns(json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}))],
        &[],
        &[],
    );
    assert_eq!(one(&set, "ns/dns:dns").affinity_timeout, Some(60));
    let off = run(&[dns(json!({"sessionAffinity": "None"}))], &[], &[]);
    assert_eq!(one(&off, "ns/dns:dns").affinity_timeout, None);
}

#[test]
fn source_ranges_from_the_field_else_the_annotation_invalid_refused() {
    let t = run(&[dns(json!({"loadBalancerSourceRanges": ["10.100.0.0/24", "fd00:100::/64"]}))], &[], &[]);
    let want: Vec<IpNet> = vec!["10.100.0.0/24".parse().unwrap(), "fd00:100::/64".parse().unwrap()];
    assert_eq!(one(&t, "ns/dns:dns").source_ranges, want);
    let ann = with(
        dns(json!({})),
        json!({"metadata": {"annotations": {"service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8, 192.168.1.7/24"}}}),
    );
    let t = run(&[ann], &[], &[]);
    let want: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "192.168.1.0/24".parse().unwrap()];
    assert_eq!(one(&t, "ns/dns:dns").source_ranges, want, "host bits masked");
    let bad = run(&[dns(json!({"loadBalancerSourceRanges": ["10.0.0.0/33"]}))], &[], &[]);
    assert!(bad.state.services.is_empty(), "an invalid range must not open the service");
    assert_eq!(reasons(&bad, "ns", "dns"), [reason::INVALID]);
    let none = run(&[dns(json!({}))], &[], &[]);
    assert!(one(&none, "ns/dns:dns").source_ranges.is_empty());
}

#[test]
fn vip_from_status_then_load_balancer_ip_then_annotation() {
    let status = |v: Value| with_status(v, &["192.0.2.30"]);
    let spec_ip = json!({"loadBalancerIP": "192.0.2.20"});
    let t = run(&[status(dns(spec_ip.clone()))], &[], &[]);
    assert_eq!(one(&t, "ns/dns:dns").vip, ip("192.0.2.30"));
    let t = run(&[dns(spec_ip)], &[], &[]);
    assert_eq!(one(&t, "ns/dns:dns").vip, ip("192.0.2.20"));
    let t = run(&[dns(json!({}))], &[], &[]);
    assert_eq!(one(&t, "ns/dns:dns").vip, ip("192.0.2.10"));

    let bad = with_vip(dns(json!({})), "not-an-ip");
    let t = run(&[bad], &[], &[]);
    assert!(t.state.services.is_empty());
    assert_eq!(reasons(&t, "ns", "dns"), [reason::INVALID]);
    let msg = &t.notes[&("ns".into(), "dns".into())][0].message;
    assert!(msg.contains("xlb.io/vip") && msg.contains("not-an-ip"), "{msg}");

    let outside = run(&[dns(json!({}))], &[], &["198.51.100.0/24"]);
    assert!(outside.state.services.is_empty());
    assert_eq!(reasons(&outside, "ns", "dns"), [reason::INVALID]);
    assert!(outside.notes[&("ns".into(), "dns".into())][0].message.contains("outside every --vip-pool"));

    let none = no_vip(dns(json!({})));
    let t = run(&[none], &[], &[]);
    assert!(t.state.services.is_empty());
    assert_eq!(reasons(&t, "ns", "dns"), [reason::NO_ADDRESS]);
}

#[test]
fn port_claims_go_to_the_oldest_service_and_pass_on_when_it_goes() {
    let owner = svc("team-a", "dns", T0, json!({}));
    let thief = svc("team-b", "grab", T1, json!({}));
    let other_port = svc("team-b", "web", T1, json!({"ports": [{"port": 80}]}));
    // listed newest first: order must come from creationTimestamp
    let t = run(&[thief.clone(), other_port.clone(), owner.clone()], &[], &[]);
    assert_eq!(one(&t, "team-a/dns:dns").vip, ip("192.0.2.10"));
    assert!(t.state.services.iter().all(|s| s.name != "team-b/grab:dns"));
    one(&t, "team-b/web:80"); // same VIP, other port: fine
    assert_eq!(reasons(&t, "team-b", "grab"), [reason::PORT_CLAIM_CONFLICT]);
    let msg = &t.notes[&("team-b".into(), "grab".into())][0].message;
    assert!(msg.contains("team-a/dns"), "the conflict names the owner: {msg}");
    // TCP on the same port is not a conflict
    let tcp = svc("team-b", "tcp", T1, json!({"ports": [{"name": "dns", "port": 53, "protocol": "TCP"}]}));
    let t = run(&[owner.clone(), tcp], &[], &[]);
    assert_eq!(t.state.services.len(), 2);
    // the owner goes: the next claimant gets it
    let t = run(&[thief, other_port], &[], &[]);
    one(&t, "team-b/grab:dns");
    assert_eq!(reasons(&t, "team-b", "grab"), [reason::PROGRAMMED]);
    // equal timestamps: namespace/name decides
    let t = run(&[svc("b", "x", T0, json!({})), svc("a", "y", T0, json!({}))], &[], &[]);
    one(&t, "a/y:dns");
    assert_eq!(reasons(&t, "b", "x"), [reason::PORT_CLAIM_CONFLICT]);
}

#[test]
fn unsupported_protocol_is_reported_and_skipped() {
    let t = run(
        &[svc("ns", "s", T0, json!({"ports": [{"port": 9, "protocol": "SCTP"}, {"port": 10, "protocol": "UDP"}]}))],
        &[],
        &[],
    );
    assert_eq!(t.state.services.len(), 1);
    assert_eq!(reasons(&t, "ns", "s"), [reason::UNSUPPORTED_PROTOCOL, reason::PROGRAMMED]);
}

fn plan_of(ours: &[Value], others: &[Value], pools: &[&str]) -> Vec<(String, Vec<IpAddr>)> {
    let pools: Vec<IpNet> = pools.iter().map(|p| p.parse().unwrap()).collect();
    let ours = super::translate::ours_in_claim_order(&services(ours), CLASS);
    plan(&ours, &services(others), &pools).into_iter().map(|u| (format!("{}/{}", u.namespace, u.name), u.ips)).collect()
}

fn no_vip(v: Value) -> Value {
    with(v, json!({"metadata": {"annotations": null}}))
}

#[test]
fn allocator_hands_out_the_lowest_free_address_and_releases_on_class_change() {
    let held = with_status(no_vip(svc("ns", "old", T0, json!({}))), &["192.0.2.1"]);
    let asks = with_vip(svc("ns", "asks", T0, json!({})), "192.0.2.2");
    let new1 = no_vip(svc("ns", "new1", T1, json!({})));
    let new2 = no_vip(svc("ns", "new2", T1, json!({})));
    let p = plan_of(&[held.clone(), asks, new1, new2], &[], &["192.0.2.0/29"]);
    assert_eq!(
        p,
        [
            ("ns/asks".into(), vec![ip("192.0.2.2")]),
            ("ns/new1".into(), vec![ip("192.0.2.3")]),
            ("ns/new2".into(), vec![ip("192.0.2.4")])
        ]
    );
    // a full pool allocates nothing
    let p = plan_of(&[held.clone(), no_vip(svc("ns", "more", T1, json!({})))], &[], &["192.0.2.1/32"]);
    assert!(p.is_empty(), "{p:?}");
    // changed class: its pool address is released (removed from its status)
    let moved = with(held, json!({"spec": {"loadBalancerClass": "other"}}));
    let p = plan_of(&[], &[moved], &["192.0.2.0/29"]);
    assert_eq!(p, [("ns/old".into(), vec![])]);
    // IPv6 pools work too
    let p = plan_of(&[no_vip(svc("ns", "v6", T0, json!({})))], &[], &["2001:db8:ffff::/120"]);
    assert_eq!(p, [("ns/v6".into(), vec![ip("2001:db8:ffff::1")])]);
    // nothing to do when the status already matches
    let ok = with_status(svc("ns", "asks", T0, json!({})), &["192.0.2.10"]);
    assert!(plan_of(&[ok], &[], &[]).is_empty());
}

#[test]
fn requested_address_parsing() {
    let s: Service = serde_json::from_value(svc("ns", "x", T0, json!({"loadBalancerIP": " 192.0.2.9 "}))).unwrap();
    assert_eq!(address::requested(&s, &[]).unwrap(), vec![ip("192.0.2.9")]);
    let s: Service = serde_json::from_value(svc("ns", "x", T0, json!({"loadBalancerIP": "999.1.1.1"}))).unwrap();
    assert!(matches!(address::requested(&s, &[]), Err(address::AddressError::BadLoadBalancerIp(_))));
}

#[test]
fn unusable_vips_are_not_programmed() {
    for bad in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.251", "::1", "ff02::1"] {
        let v = with_vip(dns(json!({})), bad);
        let t = run(&[v], &[], &[]);
        assert!(t.state.services.is_empty(), "{bad}: {:#?}", t.state.services);
        assert_eq!(reasons(&t, "ns", "dns"), [reason::INVALID], "{bad}");
        let msg = &t.notes[&("ns".into(), "dns".into())][0].message;
        assert!(msg.starts_with(&format!("{bad} is ")) && msg.contains("ns/dns is not programmed"), "{msg}");
    }
    // Of two status addresses, the usable one is programmed, the other reported.
    let two = with_status(dns(json!({})), &["0.0.0.0", "192.0.2.30"]);
    let t = run(&[two], &[], &[]);
    assert_eq!(one(&t, "ns/dns:dns").vip, ip("192.0.2.30"));
    assert_eq!(t.state.services.len(), 1);
    assert_eq!(reasons(&t, "ns", "dns"), [reason::INVALID, reason::PROGRAMMED]);
}

/// The file and Kubernetes get their verdict on an address from the same
/// model function (`model::check_vip`, `model::check_backend`), so they
/// refuse the same things with the same words.
#[test]
fn the_file_and_kubernetes_get_the_models_verdict() {
    use crate::state::model;
    for bad in ["127.0.0.1", "224.0.0.251", "0.0.0.0"] {
        let verdict = model::check_vip(ip(bad)).expect_err(bad).to_string();
        let v = with_vip(dns(json!({})), bad);
        let t = run(&[v], &[], &[]);
        assert!(t.state.services.is_empty(), "{bad}");
        let note = &t.notes[&("ns".into(), "dns".into())][0].message;
        assert!(note.starts_with(&verdict), "{note} / {verdict}");
        let yaml = format!("services:\n  - name: dns\n    vip: {bad}\n    port: 53\n    protocol: udp\n");
        let e = crate::source::config::parse("f.yaml", &yaml).expect_err(bad);
        assert!(e.0[0].message.starts_with(&verdict), "{} / {verdict}", e.0[0].message);
    }
    // A backend on the service's own vip and port, and a multicast one.
    for bad in ["192.0.2.10", "224.0.0.5"] {
        let addr: std::net::SocketAddr = format!("{bad}:53").parse().unwrap();
        let verdict = model::check_backend(addr, ip("192.0.2.10"), 53).expect_err(bad).to_string();
        let v = with(dns(json!({})), json!({"spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}));
        let ports = json!([{"name": "dns", "port": 53, "protocol": "UDP"}]);
        let s = slice("ns", "dns", "dns-1", "IPv4", ports, &[ready(bad), ready("10.1.0.5")]);
        let t = run(&[v], &[s], &[]);
        assert_eq!(backends(one(&t, "ns/dns:dns")), [("10.1.0.5:53".to_owned(), 1)], "{bad}");
        let notes = &t.notes[&("ns".into(), "dns".into())];
        assert!(notes.iter().any(|n| n.warning && n.message.contains(&verdict)), "{notes:?} / {verdict}");
        let yaml = format!("services:\n  - name: dns\n    vip: 192.0.2.10\n    port: 53\n    protocol: udp\n    backends: [\"{addr}\"]\n");
        let e = crate::source::config::parse("f.yaml", &yaml).expect_err(bad);
        assert_eq!(e.0[0].message, verdict);
    }
}

/// Two ports of one name (not admitted by the API server, but a translation
/// must not produce two services of one name): the first is served, the
/// second told about, the other Services unaffected.
#[test]
fn two_ports_of_one_name_serve_the_first_and_say_so() {
    let twice = dns(json!({"ports": [
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
        {"name": "dns", "port": 54, "protocol": "UDP", "targetPort": 5353},
    ]}));
    let other = svc("ns", "other", T0, json!({}));
    let other = with_vip(other, "192.0.2.11");
    let t = run(&[twice, other], &[], &[]);
    assert_eq!(one(&t, "ns/dns:dns").port, 53);
    assert!(t.state.services.iter().any(|s| s.name == "ns/other:dns"), "{:?}", t.state.services);
    assert_eq!(t.state.services.len(), 2, "{:?}", t.state.services);
    assert_eq!(reasons(&t, "ns", "dns"), [reason::INVALID, reason::PROGRAMMED], "told, and the first port programmed");
}

/// `v` with the flow-tracking annotation set to `value`.
fn tracking(v: Value, value: &str) -> Value {
    with(v, json!({"metadata": {"annotations": {"xlb.io/flow-tracking": value}}}))
}

fn messages(t: &Translation, ns: &str, name: &str) -> String {
    t.notes
        .get(&(ns.into(), name.into()))
        .map(|n| n.iter().map(|n| n.message.clone()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

#[test]
fn flow_tracking_none_by_annotation_where_the_model_allows_it() {
    use crate::state::model::FlowTracking;
    let local = json!({"externalTrafficPolicy": "Local"});
    let eps = [dns_slice(&[ready("10.1.0.2")])];
    // Local (the client's address is kept): served untracked.
    let t = run(&[tracking(dns(local.clone()), "none")], &eps, &[]);
    assert_eq!(one(&t, "ns/dns:dns").flow_tracking, FlowTracking::None);
    assert!(!reasons(&t, "ns", "dns").contains(&"InvalidService"), "{}", messages(&t, "ns", "dns"));
    // Absent or "full": tracked.
    for svc in [dns(local.clone()), tracking(dns(local.clone()), "full")] {
        assert_eq!(one(&run(&[svc], &eps, &[]), "ns/dns:dns").flow_tracking, FlowTracking::Full);
    }
    // Cluster (SNAT), affinity, or a value that is neither: tracked, with a
    // warning that says why.
    let cases = [
        (tracking(dns(json!({})), "none"), "externalTrafficPolicy: Local"),
        (
            tracking(dns(json!({"externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP"})), "none"),
            "sessionAffinity",
        ),
        (tracking(dns(local), "off"), "neither"),
    ];
    for (svc, why) in cases {
        let t = run(&[svc], &eps, &[]);
        assert_eq!(one(&t, "ns/dns:dns").flow_tracking, FlowTracking::Full);
        assert!(reasons(&t, "ns", "dns").contains(&"InvalidService"));
        assert!(messages(&t, "ns", "dns").contains(why), "{why}: {}", messages(&t, "ns", "dns"));
    }
}

#[test]
fn an_untracked_service_sharing_a_backend_is_tracked_with_a_note() {
    use crate::state::model::FlowTracking;
    let local = json!({"externalTrafficPolicy": "Local"});
    let untracked = tracking(dns(local.clone()), "none");
    let other = with_vip(svc("ns", "other", T1, local), "192.0.2.11");
    let eps = [dns_slice(&[ready("10.1.0.2")]), slice("ns", "other", "b", "IPv4", dns_ports(), &[ready("10.1.0.2")])];
    let t = run(&[untracked, other], &eps, &[]);
    assert_eq!(one(&t, "ns/dns:dns").flow_tracking, FlowTracking::Full);
    assert!(messages(&t, "ns", "dns").contains("also serves ns/other:dns"), "{}", messages(&t, "ns", "dns"));
    crate::state::model::check_untracked_backends(&t.state.services).expect("a state the writer accepts");
}

/// A Gateway route's service merged in after the Services' translation
/// (as the watcher does) that shares a backend with an untracked Service:
/// the Service is tracked after all, with a note on it.
#[test]
fn an_untracked_service_sharing_a_backend_with_a_route_is_tracked() {
    use crate::state::model::FlowTracking;
    let untracked = tracking(dns(json!({"externalTrafficPolicy": "Local"})), "none");
    let mut t = run(&[untracked], &[dns_slice(&[ready("10.1.0.2")])], &[]);
    assert_eq!(one(&t, "ns/dns:dns").flow_tracking, FlowTracking::None);
    let mut route = one(&t, "ns/dns:dns").clone();
    route.name = "gw/route:dns".into();
    route.vip = "192.0.2.99".parse().unwrap();
    route.flow_tracking = FlowTracking::Full;
    t.state.services.push(route);
    super::translate::track_shared_backends(&mut t);
    assert_eq!(one(&t, "ns/dns:dns").flow_tracking, FlowTracking::Full);
    assert!(messages(&t, "ns", "dns").contains("also serves gw/route:dns"), "{}", messages(&t, "ns", "dns"));
    crate::state::model::check_untracked_backends(&t.state.services).expect("a state the writer accepts");
}
