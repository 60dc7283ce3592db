//! Which VIPs this node may announce.
//!
//! L2, Kubernetes mode ([`eligible`]): the VIPs this node may compete for: a VIP
//! on which some Service is programmed here, unless a Service on it has
//! `externalTrafficPolicy: Local` and no ready endpoint on this node of the
//! VIP's family (its traffic would have nowhere to go from here). As
//! MetalLB: an announcer of a `Local` Service always has a local endpoint.
//!
//! Services sharing a VIP (TCP and UDP, say) are one VIP here, hence one
//! Lease. With several `Local` Services on one VIP (MetalLB requires them
//! to select the same pods), the node needs a ready endpoint of each.
//!
//! BGP (every eligible node announces, no Lease): in Kubernetes mode
//! ([`bgp`]) a VIP on which some programmed Service has a ready endpoint
//! of the VIP's family (on any node for `Cluster`, on this node for
//! `Local`), or some Gateway listener a backend of non-zero weight; in
//! YAML mode ([`serving_vips`]) a VIP with a service that has a backend of
//! non-zero weight. A VIP shared by several services is eligible when any
//! of them is.
//!
//! A Gateway's address ([`gateways`]) is eligible wherever one of its
//! listeners is programmed, as a `Cluster` Service's VIP: the listeners
//! reach any ready endpoint of their routes' backends, on any node, through
//! SNAT. It shares the Lease of a Service VIP it coincides with, and a
//! `Local` Service there that keeps the VIP from this node keeps it for the
//! Gateway too.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    source::k8s::{gateway::translate::Translation as GatewayTranslation, translate::Translation},
    state::model::{DesiredState, ServiceSpec},
};

/// The VIPs this node may announce, each with the Services (`namespace`,
/// `name`) programmed on it.
pub type Eligible = BTreeMap<IpAddr, BTreeSet<(String, String)>>;

/// The VIPs of `t` (a translation for this node) this node may announce.
pub fn eligible(t: &Translation) -> Eligible {
    t.vip_services
        .iter()
        .filter(|(vip, services)| {
            !services.is_empty()
                && services.iter().all(|key| {
                    t.placements
                        .get(key)
                        .is_none_or(|p| !p.local || p.local_ready.iter().any(|a| a.is_ipv4() == vip.is_ipv4()))
                })
        })
        .map(|(vip, services)| (*vip, services.clone()))
        .collect()
}

/// Whether `s` sends new flows somewhere: a backend of non-zero weight.
fn serving(s: &ServiceSpec) -> bool {
    s.backends.iter().any(|b| b.weight > 0)
}

/// `--announce bgp`, YAML mode: the VIPs of `state` with a service that has
/// a backend of non-zero weight.
pub fn serving_vips(state: &DesiredState) -> BTreeSet<IpAddr> {
    state.services.iter().filter(|s| serving(s)).map(|s| s.vip).collect()
}

/// `--announce bgp`, Kubernetes mode: the VIPs of `t` (a translation for
/// this node) with a programmed Service that has a ready endpoint of the
/// VIP's family (any node's for `Cluster`, this node's for `Local`), and
/// the VIPs of the Gateway `listeners` (programmed beside `t`'s Services)
/// with a backend of non-zero weight.
pub fn bgp(t: &Translation, listeners: &[ServiceSpec]) -> BTreeSet<IpAddr> {
    let services = t
        .vip_services
        .iter()
        .filter(|(vip, services)| services.iter().any(|key| t.placements.get(key).is_some_and(|p| p.ready_for(**vip))))
        .map(|(vip, _)| *vip);
    services.chain(listeners.iter().filter(|s| serving(s)).map(|s| s.vip)).collect()
}

/// The Gateway addresses this node may announce, each with the Gateways
/// (`namespace`, `name`) with a listener programmed on it: `gw` is the
/// Gateway translation once the listeners an older Service took have
/// yielded, `t` the Services' translation (a VIP a Service is programmed on
/// is eligible only if [`eligible`] says so).
pub fn gateways(t: &Translation, gw: &GatewayTranslation) -> Eligible {
    let services = eligible(t);
    let mut out = Eligible::new();
    for c in &gw.candidates {
        let vip = c.spec.vip;
        let service_vip = t.vip_services.get(&vip).is_some_and(|s| !s.is_empty());
        if !service_vip || services.contains_key(&vip) {
            out.entry(vip).or_default().insert(c.gateway.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
    use serde_json::{json, Value};

    use super::*;
    use crate::source::k8s::translate::{translate, Inputs};

    const NODE: &str = "node-a";
    const CLASS: &str = "xlb.io/xdp";

    fn svc(name: &str, vips: &str, policy: &str, ports: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "apps", "name": name, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"xlb.io/vip": vips}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": CLASS, "externalTrafficPolicy": policy,
                     "ports": ports},
        })
    }

    fn udp() -> Value {
        json!([{"name": "dns", "port": 53, "protocol": "UDP"}])
    }

    fn tcp() -> Value {
        json!([{"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    }

    /// A slice of `service` with endpoints (address, node, ready, terminating).
    fn slice(service: &str, name: &str, family: &str, ports: &Value, eps: &[(&str, &str, bool, bool)]) -> Value {
        let endpoints: Vec<Value> = eps
            .iter()
            .map(|(a, n, r, t)| {
                json!({"addresses": [a], "nodeName": n, "conditions": {"ready": r, "serving": true, "terminating": t}})
            })
            .collect();
        let ports: Vec<Value> = ports
            .as_array()
            .unwrap()
            .iter()
            .map(|p| json!({"name": p["name"], "port": 5353, "protocol": p["protocol"]}))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "apps", "name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": family, "ports": ports, "endpoints": endpoints,
        })
    }

    fn translation(svcs: &[Value], sls: &[Value]) -> Translation {
        translated(&parsed(svcs), &parsed(sls), &[])
    }

    fn bgp_of(svcs: &[Value], sls: &[Value]) -> Vec<String> {
        bgp(&translation(svcs, sls), &[]).iter().map(ToString::to_string).collect()
    }

    fn parsed<T: serde::de::DeserializeOwned>(objs: &[Value]) -> Vec<Arc<T>> {
        objs.iter().map(|o| Arc::new(serde_json::from_value(o.clone()).unwrap())).collect()
    }

    /// The Services' translation for this node, the `reserved` keys taken
    /// by Gateway listeners.
    fn translated(
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        reserved: &[crate::source::k8s::translate::Reservation],
    ) -> Translation {
        translate(&Inputs { services, slices, node_name: NODE, lb_class: CLASS, pools: &[], reserved })
    }

    /// An [`Eligible`] as (VIP, `namespace/name`s).
    fn named(e: Eligible) -> Vec<(String, Vec<String>)> {
        e.into_iter()
            .map(|(vip, s)| (vip.to_string(), s.into_iter().map(|(ns, n)| format!("{ns}/{n}")).collect()))
            .collect()
    }

    fn eligible_of(svcs: &[Value], sls: &[Value]) -> Vec<(String, Vec<String>)> {
        named(eligible(&translated(&parsed(svcs), &parsed(sls), &[])))
    }

    fn e(vip: &str, services: &[&str]) -> (String, Vec<String>) {
        (vip.into(), services.iter().map(|s| (*s).to_string()).collect())
    }

    #[test]
    fn cluster_services_are_eligible_wherever_programmed_even_without_endpoints() {
        let got = eligible_of(&[svc("dns", "192.0.2.10", "Cluster", udp())], &[]);
        assert_eq!(got, [e("192.0.2.10", &["apps/dns"])]);
        // Endpoints on other nodes only: still eligible (traffic is forwarded there).
        let remote = slice("dns", "dns-1", "IPv4", &udp(), &[("10.1.0.2", "node-b", true, false)]);
        assert_eq!(
            eligible_of(&[svc("dns", "192.0.2.10", "Cluster", udp())], &[remote]),
            [e("192.0.2.10", &["apps/dns"])]
        );
    }

    #[test]
    fn local_services_need_a_ready_local_endpoint_of_the_vips_family() {
        let s = svc("dns", "192.0.2.10,2001:db8::10", "Local", udp());
        let one = std::slice::from_ref(&s);
        assert!(eligible_of(one, &[]).is_empty());
        let remote = slice("dns", "r", "IPv4", &udp(), &[("10.1.0.2", "node-b", true, false)]);
        assert!(eligible_of(one, std::slice::from_ref(&remote)).is_empty());
        let terminating = slice("dns", "t", "IPv4", &udp(), &[("10.1.0.3", NODE, false, true)]);
        assert!(eligible_of(one, &[remote.clone(), terminating]).is_empty());
        let local4 = slice("dns", "l4", "IPv4", &udp(), &[("10.1.0.4", NODE, true, false)]);
        assert_eq!(eligible_of(one, &[remote, local4.clone()]), [e("192.0.2.10", &["apps/dns"])]);
        let local6 = slice("dns", "l6", "IPv6", &udp(), &[("fd00::4", NODE, true, false)]);
        assert_eq!(
            eligible_of(&[s], &[local4, local6]),
            [e("192.0.2.10", &["apps/dns"]), e("2001:db8::10", &["apps/dns"])]
        );
    }

    #[test]
    fn services_sharing_a_vip_are_one_entry_and_a_local_one_needs_its_endpoints() {
        let u = svc("dns", "192.0.2.10", "Cluster", udp());
        let t = svc("dns-tcp", "192.0.2.10", "Cluster", tcp());
        assert_eq!(eligible_of(&[u.clone(), t], &[]), [e("192.0.2.10", &["apps/dns", "apps/dns-tcp"])]);
        let tl = svc("dns-tcp", "192.0.2.10", "Local", tcp());
        assert!(eligible_of(&[u.clone(), tl.clone()], &[]).is_empty());
        let local = slice("dns-tcp", "l", "IPv4", &tcp(), &[("10.1.0.4", NODE, true, false)]);
        assert_eq!(eligible_of(&[u, tl], &[local]), [e("192.0.2.10", &["apps/dns", "apps/dns-tcp"])]);
    }

    #[test]
    fn a_service_not_programmed_makes_no_vip_eligible() {
        // Other class, and the loser of a port claim: nothing programmed on .11.
        let mut other = svc("other", "192.0.2.11", "Cluster", udp());
        other["spec"]["loadBalancerClass"] = json!("metallb");
        let owner = svc("owner", "192.0.2.10", "Cluster", udp());
        let mut loser = svc("loser", "192.0.2.10", "Cluster", udp());
        loser["metadata"]["creationTimestamp"] = json!("2026-01-02T00:00:00Z");
        assert_eq!(eligible_of(&[other, owner, loser], &[]), [e("192.0.2.10", &["apps/owner"])]);
    }

    #[test]
    fn bgp_cluster_services_need_a_ready_endpoint_of_the_family_on_any_node() {
        let s = svc("dns", "192.0.2.10,2001:db8::10", "Cluster", udp());
        let one = std::slice::from_ref(&s);
        assert!(bgp_of(one, &[]).is_empty(), "no endpoint at all");
        let terminating = slice("dns", "t", "IPv4", &udp(), &[("10.1.0.3", "node-b", false, true)]);
        assert!(bgp_of(one, std::slice::from_ref(&terminating)).is_empty(), "terminating only");
        let remote4 = slice("dns", "r4", "IPv4", &udp(), &[("10.1.0.2", "node-b", true, false)]);
        assert_eq!(bgp_of(one, &[terminating, remote4.clone()]), ["192.0.2.10"]);
        let remote6 = slice("dns", "r6", "IPv6", &udp(), &[("fd00::2", "node-b", true, false)]);
        assert_eq!(bgp_of(one, &[remote4, remote6]), ["192.0.2.10", "2001:db8::10"]);
    }

    #[test]
    fn bgp_local_services_need_a_ready_endpoint_on_this_node() {
        let s = svc("dns", "192.0.2.10", "Local", udp());
        let one = std::slice::from_ref(&s);
        let remote = slice("dns", "r", "IPv4", &udp(), &[("10.1.0.2", "node-b", true, false)]);
        assert!(bgp_of(one, std::slice::from_ref(&remote)).is_empty());
        let local = slice("dns", "l", "IPv4", &udp(), &[("10.1.0.4", NODE, true, false)]);
        assert_eq!(bgp_of(one, &[remote, local]), ["192.0.2.10"]);
    }

    #[test]
    fn bgp_a_shared_vip_is_eligible_when_any_service_on_it_is() {
        // A Local TCP Service without local endpoints beside a Cluster UDP
        // one with a remote endpoint: eligible (L2 would say no).
        let u = svc("dns", "192.0.2.10", "Cluster", udp());
        let t = svc("dns-tcp", "192.0.2.10", "Local", tcp());
        let remote = slice("dns", "r", "IPv4", &udp(), &[("10.1.0.2", "node-b", true, false)]);
        assert_eq!(bgp_of(&[u.clone(), t.clone()], std::slice::from_ref(&remote)), ["192.0.2.10"]);
        assert!(eligible_of(&[u.clone(), t.clone()], &[remote]).is_empty());
        assert!(bgp_of(&[u, t], &[]).is_empty());
    }

    #[test]
    fn bgp_gateway_listeners_count_with_a_serving_backend() {
        use crate::state::model::{
            test_support::{backend, backends, service},
            Protocol,
        };
        let mut l = service("gw/dns:53", "192.0.2.20", 53, Protocol::Udp);
        assert!(bgp(&translation(&[], &[]), std::slice::from_ref(&l)).is_empty(), "no backend");
        l.backends = vec![backend("10.1.0.2:53", 0)];
        assert!(bgp(&translation(&[], &[]), std::slice::from_ref(&l)).is_empty(), "weight 0 only");
        l.backends = backends(&["10.1.0.2:53"]);
        assert_eq!(bgp(&translation(&[], &[]), &[l]), ["192.0.2.20".parse::<IpAddr>().unwrap()].into());
    }

    #[test]
    fn bgp_yaml_vips_need_a_backend_of_non_zero_weight_in_any_service() {
        use crate::state::model::{
            test_support::{backend, backends, service},
            Protocol,
        };
        let mut drained = service("a", "192.0.2.10", 53, Protocol::Udp);
        drained.backends = vec![backend("10.1.0.2:53", 0)];
        let empty = service("b", "192.0.2.11", 53, Protocol::Udp);
        let mut serving = service("c", "192.0.2.10", 54, Protocol::Tcp);
        serving.backends = backends(&["10.1.0.2:54"]);
        let state = DesiredState { services: vec![drained.clone(), empty.clone()] };
        assert!(serving_vips(&state).is_empty());
        let state = DesiredState { services: vec![drained, empty, serving] };
        assert_eq!(serving_vips(&state), ["192.0.2.10".parse::<IpAddr>().unwrap()].into());
    }

    /// The Gateway addresses eligible beside the Services `svcs`: Gateway
    /// `apps/gw` of our class on `addr` with a UDP listener on `port` and a
    /// UDPRoute to Service `apps/dns` (port 53), the listener yielding to an
    /// older Service on the same key as the agent does.
    fn gateway_eligible(svcs: &[Value], sls: &[Value], addr: &str, port: u16) -> Vec<(String, Vec<String>)> {
        use crate::source::k8s::gateway::{
            translate::{translate as gw_translate, Inputs as GwInputs, Route},
            types::{Gateway, GatewayClass, UDPRoute},
        };
        const CTRL: &str = "xlb.io/gateway-controller";
        let mut svcs = svcs.to_vec();
        let mut backend = svc("dns", "", "Cluster", udp());
        backend["spec"] = json!({"type": "ClusterIP", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]});
        svcs.push(backend);
        let (services, slices) = (parsed(&svcs), parsed(sls));
        let class: GatewayClass = serde_json::from_value(json!({"apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass", "metadata": {"name": "xlb"}, "spec": {"controllerName": CTRL}}))
        .unwrap();
        let gw: Gateway = serde_json::from_value(json!({"apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway", "metadata": {"namespace": "apps", "name": "gw", "creationTimestamp": "2026-01-02T00:00:00Z"},
            "spec": {"gatewayClassName": "xlb", "addresses": [{"type": "IPAddress", "value": addr}],
                     "listeners": [{"name": "dns", "port": port, "protocol": "UDP"}]}}))
        .unwrap();
        let route: UDPRoute = serde_json::from_value(json!({"apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "UDPRoute", "metadata": {"namespace": "apps", "name": "dns"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "dns", "port": 53}]}]}}))
        .unwrap();
        let mut g = gw_translate(&GwInputs {
            classes: &[Arc::new(class)],
            gateways: &[Arc::new(gw)],
            routes: &[Route::udp(&route)],
            grants: &[],
            namespaces: &[],
            services: &services,
            slices: &slices,
            controller_name: CTRL,
            node_name: NODE,
            pools: &[],
        });
        let t = translated(&services, &slices, &g.reservations());
        g.yield_to(&t.taken);
        named(gateways(&t, &g))
    }

    #[test]
    fn a_gateway_address_is_eligible_wherever_a_listener_is_programmed_even_without_local_endpoints() {
        assert_eq!(gateway_eligible(&[], &[], "192.0.2.20", 53), [e("192.0.2.20", &["apps/gw"])]);
        assert_eq!(gateway_eligible(&[], &[], "2001:db8::20", 53), [e("2001:db8::20", &["apps/gw"])]);
        let remote = slice("dns", "dns-1", "IPv4", &udp(), &[("10.1.0.2", "node-b", true, false)]);
        assert_eq!(gateway_eligible(&[], &[remote], "192.0.2.20", 53), [e("192.0.2.20", &["apps/gw"])]);
    }

    #[test]
    fn a_gateway_address_follows_the_services_on_it() {
        // An older Service holds the listener's address and port: nothing of the Gateway programmed.
        let owner = svc("owner", "192.0.2.10", "Cluster", udp());
        assert!(gateway_eligible(std::slice::from_ref(&owner), &[], "192.0.2.10", 53).is_empty());
        // Another port of a Cluster Service's VIP: eligible as the Service's VIP is.
        assert_eq!(gateway_eligible(&[owner], &[], "192.0.2.10", 5300), [e("192.0.2.10", &["apps/gw"])]);
        // A Local Service without a local endpoint keeps the shared VIP from this node.
        let local = svc("local", "192.0.2.10", "Local", udp());
        assert!(gateway_eligible(std::slice::from_ref(&local), &[], "192.0.2.10", 5300).is_empty());
        let here = slice("local", "l", "IPv4", &udp(), &[("10.1.0.4", NODE, true, false)]);
        assert_eq!(gateway_eligible(&[local], &[here], "192.0.2.10", 5300), [e("192.0.2.10", &["apps/gw"])]);
    }
}
