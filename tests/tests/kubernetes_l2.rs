//! Kubernetes mode, L2 announcement, the election: two agents
//! (`--announce l2`) on one segment against the fake API server compete for
//! the Lease `xlb-l2-<VIP>` of each VIP. Exactly one holds it; SIGTERM moves
//! it within 3 s (released first), kill -9 within 10 s (expiry); for
//! `externalTrafficPolicy: Local` only a node with a ready local endpoint
//! ever holds it, and a node that loses its last one releases at once; a
//! deleted Service's Lease is released; IPv6 VIPs have their Lease too. The
//! assertions are on the Lease objects, the agents' metrics, logs and the
//! Services' Events (the ARP/NDP answers are the data path's tests).
//!
//! ```text
//!  [n1] eth0 10.210.0.11 ──┐
//!                          br0 10.210.0.1 [sw]  (xlb-fake-apiserver)
//!  [n2] eth0 10.210.0.12 ──┘
//! ```
//!
//! Needs root; run with `--test-threads=1`. Prints the measured failover
//! times (5 runs each, graceful and crash: min/median/max).

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_tests::k8s::{
    endpoint, endpoint_slice, endpointslice_path, endpointslices_path, events_path, lb_service, leases_path,
    service_path, services_path,
};
use xlb_tests::l2cluster::{L2Cluster, L2Segment, LEASE_NS, NODES};

const NS: &str = "apps";
const VIP4: &str = "192.0.2.10";
const LEASE4: &str = "xlb-l2-192-0-2-10";
const VIP6: &str = "2001:db8:ffff::10";
const LEASE6: &str = "xlb-l2-2001-db8-ffff--10";
/// The contract's bounds.
const GRACEFUL: Duration = Duration::from_secs(3);
const CRASH: Duration = Duration::from_secs(10);

/// The two-node cluster of `xlb_tests::l2cluster`, with what these tests
/// read from it.
struct L2(L2Cluster);

impl Deref for L2 {
    type Target = L2Cluster;
    fn deref(&self) -> &L2Cluster {
        &self.0
    }
}

impl DerefMut for L2 {
    fn deref_mut(&mut self) -> &mut L2Cluster {
        &mut self.0
    }
}

impl L2 {
    /// The segment, the API server with both Node objects, both agents healthy.
    fn start(tag: &str) -> L2 {
        L2(L2Segment::new(tag, false).start(&["--interface", "eth0", "--announce", "l2"]))
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, a) in self.agents.iter().enumerate() {
            if let Some(a) = a {
                out.push_str(&format!("--- agent {} ---\n{}\n", NODES[i], a.log()));
            }
        }
        out
    }

    /// Polls (every 10 ms, up to `limit`) until `pred` holds for the holder;
    /// returns it and how long it took.
    fn wait_holder(
        &self,
        name: &str,
        limit: Duration,
        pred: impl Fn(Option<&str>) -> bool,
    ) -> (Option<String>, Duration) {
        self.0
            .wait_holder(name, limit, pred, || format!(": {:#}\n{}", self.lease(name).unwrap_or_default(), self.logs()))
    }

    /// The `xlb_l2_lease_*` sample of agent `i` with these labels.
    fn metric(&self, i: usize, sample: &str) -> Option<f64> {
        let text = self.agent(i).metrics().expect("metrics");
        text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
    }

    fn create(&self, obj: &Value) {
        let ns = obj["metadata"]["namespace"].as_str().unwrap();
        let path = if obj["kind"] == "Service" { services_path(Some(ns)) } else { endpointslices_path(Some(ns)) };
        self.kc.create(&path, obj).expect("create");
    }

    /// Events in `NS` with `reason` about Service `name`: their notes.
    fn events(&self, name: &str, reason: &str) -> Vec<String> {
        let list = self.kc.list(&events_path(Some(NS))).expect("list events");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
            .map(|e| e["note"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Names of the `xlb-l2-*` Leases.
    fn l2_leases(&self) -> BTreeSet<String> {
        let list = self.kc.list(&leases_path(LEASE_NS, None)).expect("list leases");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["metadata"]["name"].as_str())
            .filter(|n| n.starts_with("xlb-l2-"))
            .map(str::to_string)
            .collect()
    }
}

fn held(vip: &str) -> String {
    format!("xlb_l2_lease_held{{vip=\"{vip}\"}}")
}

fn transitions(vip: &str, t: &str) -> String {
    format!("xlb_l2_lease_transitions_total{{vip=\"{vip}\",transition=\"{t}\"}}")
}

/// `Cluster` Service `name` on `vips` with one port.
fn service(name: &str, vips: &str, port: (&str, u16, &str)) -> Value {
    lb_service(NS, name).annotation("xlb.io/vip", vips).port(port.0, port.1, port.2).build()
}

/// EndpointSlice of Service `svc` with one ready endpoint per `(address, node)`.
fn slice(svc: &str, family: &str, eps: &[(&str, &str)]) -> Value {
    let mut b = endpoint_slice(NS, svc, svc).address_type(family).port("dns", 5353, "UDP");
    for (addr, n) in eps {
        b = b.endpoint(endpoint(addr).node(n).conditions(true, true, false));
    }
    b.build()
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("min {:?} median {:?} max {:?}", v[0], v[v.len() / 2], v[v.len() - 1])
}

/// One graceful failover: SIGTERM the holder; the other holds the Lease
/// within 3 s; the stopped agent released it before it stopped answering
/// and detaching, and exits 0. Returns the time from the signal.
fn graceful_failover(c: &mut L2) -> Duration {
    let (h, _) = c.wait_holder(LEASE4, CRASH, |h| h.is_some());
    let i = L2Cluster::index(&h.unwrap());
    let other = NODES[1 - i];
    let mut a = c.agents[i].take().unwrap();
    let t0 = Instant::now();
    a.signal(libc::SIGTERM).expect("SIGTERM");
    c.wait_holder(LEASE4, GRACEFUL, |h| h == Some(other));
    let took = t0.elapsed();
    let status = a.wait_exit(Duration::from_secs(15)).expect("agent exits");
    let log = a.log();
    assert!(status.success(), "{status:?}\n{log}");
    let released = log.find("L2 Lease released").unwrap_or_else(|| panic!("no release logged:\n{log}"));
    let emptied = log.find("announces no VIP any more").unwrap_or_else(|| panic!("no empty set logged:\n{log}"));
    let detached = log.find("detaching").unwrap_or_else(|| panic!("no detach logged:\n{log}"));
    assert!(released < emptied && emptied < detached, "release, then stop answering, then detach:\n{log}");
    drop(a);
    took
}

/// One crash: kill -9 the holder; the other holds the Lease within 10 s.
fn crash_failover(c: &mut L2) -> Duration {
    let (h, _) = c.wait_holder(LEASE4, CRASH, |h| h.is_some());
    let i = L2Cluster::index(&h.unwrap());
    let other = NODES[1 - i];
    let mut a = c.agents[i].take().unwrap();
    let t0 = Instant::now();
    a.signal(libc::SIGKILL).expect("SIGKILL");
    c.wait_holder(LEASE4, CRASH, |h| h == Some(other));
    let took = t0.elapsed();
    let _ = a.wait_exit(Duration::from_secs(5));
    took
}

#[test]
fn one_holder_per_vip_shared_by_its_services_and_sigterm_moves_it_within_3s() {
    let mut c = L2::start("l2g");
    // Two Services on one VIP (UDP and TCP): one Lease.
    c.create(&service("dns", VIP4, ("dns", 53, "UDP")));
    c.create(&service("dns-tcp", VIP4, ("dns-tcp", 53, "TCP")));
    let (h, _) = c.wait_holder(LEASE4, Duration::from_secs(10), |h| h.is_some());
    let h = L2Cluster::index(&h.unwrap());
    assert_eq!(c.l2_leases(), BTreeSet::from([LEASE4.to_string()]), "one Lease for the shared VIP");
    // Stable: the holder keeps it over several renewals, the other waits.
    let lease0 = c.lease(LEASE4).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let lease1 = c.lease(LEASE4).unwrap();
    assert_eq!(lease1["spec"]["holderIdentity"], NODES[h]);
    assert_eq!(lease1["spec"]["leaseDurationSeconds"], 6);
    assert_eq!(lease1["spec"]["leaseTransitions"], lease0["spec"]["leaseTransitions"], "no transition while renewed");
    assert_ne!(lease1["spec"]["renewTime"], lease0["spec"]["renewTime"], "renewed");
    assert_eq!(c.metric(h, &held(VIP4)), Some(1.0));
    assert_eq!(c.metric(h, &transitions(VIP4, "acquired")), Some(1.0));
    assert_ne!(c.metric(1 - h, &held(VIP4)), Some(1.0), "both nodes announce");
    assert!(c.agent(h).log().contains("L2 Lease acquired"), "{}", c.agent(h).log());
    // The Services heard who announces them.
    for svc in ["dns", "dns-tcp"] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.events(svc, "AnnouncerChanged").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let notes = c.events(svc, "AnnouncerChanged");
        assert!(notes.iter().any(|n| n.contains(NODES[h]) && n.contains(VIP4)), "{svc}: {notes:?}");
    }

    // SIGTERM the holder: the other node holds it within 3 s, counted.
    let other = 1 - h;
    let took = graceful_failover(&mut c);
    assert_eq!(c.metric(other, &held(VIP4)), Some(1.0));
    assert_eq!(c.metric(other, &transitions(VIP4, "acquired")), Some(1.0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.events("dns", "AnnouncerChanged").iter().any(|n| n.contains(&format!("{} announces", NODES[other])))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let notes = c.events("dns", "AnnouncerChanged");
    assert!(notes.iter().any(|n| n.contains(&format!("{} announces", NODES[other]))), "{notes:?}");

    // Four more runs, restarting the stopped agent each time.
    let mut times = vec![took];
    for _ in 0..4 {
        let stopped = c.agents.iter().position(Option::is_none).unwrap();
        c.spawn(stopped);
        times.push(graceful_failover(&mut c));
    }
    eprintln!("graceful failover (SIGTERM → other holder), 5 runs: {}", stats(times));
}

#[test]
fn kill_9_of_the_holder_moves_the_lease_within_10s() {
    let mut c = L2::start("l2k");
    c.create(&service("dns", VIP4, ("dns", 53, "UDP")));
    let mut times = Vec::new();
    for run in 0..5 {
        if run > 0 {
            let stopped = c.agents.iter().position(Option::is_none).unwrap();
            c.spawn(stopped);
        }
        times.push(crash_failover(&mut c));
        let i = c.agents.iter().position(Option::is_some).unwrap();
        assert_eq!(c.metric(i, &held(VIP4)), Some(1.0));
    }
    // Expiry, not a release: the dead holder wrote nothing; never earlier
    // than the Lease's 6 s after the last renewal (at most 2 s before the kill).
    assert!(times.iter().all(|t| *t >= Duration::from_secs(3)), "taken over before expiry: {times:?}");
    eprintln!("crash failover (kill -9 → other holder), 5 runs: {}", stats(times));
}

#[test]
fn local_policy_only_nodes_with_a_ready_local_endpoint_hold_it_and_losing_it_releases() {
    let c = L2::start("l2l");
    let mut w = c.kc.watch(&leases_path(LEASE_NS, None)).expect("watch leases");
    let svc = lb_service(NS, "dns")
        .annotation("xlb.io/vip", VIP4)
        .port("dns", 53, "UDP")
        .external_traffic_policy("Local")
        .build();
    c.create(&svc);
    // No endpoint anywhere: nobody competes, no Lease.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.holder(LEASE4), None, "{:?}", c.lease(LEASE4));
    // Endpoints only behind node-2 (and one not ready behind node-1).
    let mut s = endpoint_slice(NS, "dns", "dns").address_type("IPv4").port("dns", 5353, "UDP");
    s = s.endpoint(endpoint("10.1.1.2").node("node-2").conditions(true, true, false));
    s = s.endpoint(endpoint("10.1.0.2").node("node-1").conditions(false, false, false));
    c.create(&s.build());
    c.wait_holder(LEASE4, Duration::from_secs(5), |h| h == Some("node-2"));
    // Over a few renewals, only node-2 ever held it.
    let events = w.events_for(Duration::from_secs(5)).expect("lease events");
    let holders: BTreeSet<String> = events
        .iter()
        .filter(|e| e["object"]["metadata"]["name"] == LEASE4)
        .filter_map(|e| e["object"]["spec"]["holderIdentity"].as_str().map(str::to_string))
        .collect();
    assert_eq!(holders, BTreeSet::from(["node-2".to_string()]), "{events:#?}");
    assert_eq!(c.metric(0, &held(VIP4)), None, "node-1 competed:\n{}", c.logs());

    // node-2's endpoint goes, node-1's becomes ready: node-2 releases at
    // once (no expiry wait) and node-1 takes it.
    let mut moved = endpoint_slice(NS, "dns", "dns").address_type("IPv4").port("dns", 5353, "UDP");
    moved = moved.endpoint(endpoint("10.1.0.2").node("node-1").conditions(true, true, false));
    let mut obj = moved.build();
    let old = c.kc.get(&endpointslice_path(NS, "dns")).unwrap();
    obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    let t0 = Instant::now();
    c.kc.replace(&endpointslice_path(NS, "dns"), &obj).expect("replace slice");
    c.wait_holder(LEASE4, GRACEFUL, |h| h == Some("node-1"));
    eprintln!("Local: node-2 lost its endpoint → node-1 holds the Lease after {:?}", t0.elapsed());
    assert_eq!(c.metric(1, &transitions(VIP4, "released")), Some(1.0), "{}", c.logs());
    assert_eq!(c.metric(1, &held(VIP4)), Some(0.0));
    assert!(c.agent(1).log().contains("no longer eligible"), "{}", c.agent(1).log());
}

#[test]
fn a_deleted_services_lease_is_released_and_ipv6_vips_have_their_lease() {
    let c = L2::start("l2d");
    c.create(&service("dual", &format!("{VIP4},{VIP6}"), ("dns", 53, "UDP")));
    c.create(&slice("dual", "IPv6", &[("fd00:1:1::2", "node-2")]));
    let (h4, _) = c.wait_holder(LEASE4, Duration::from_secs(10), |h| h.is_some());
    let (h6, _) = c.wait_holder(LEASE6, Duration::from_secs(10), |h| h.is_some());
    assert_eq!(c.l2_leases(), BTreeSet::from([LEASE4.to_string(), LEASE6.to_string()]));
    let i6 = L2Cluster::index(&h6.unwrap());
    assert_eq!(c.metric(i6, &held(VIP6)), Some(1.0));
    let i4 = L2Cluster::index(&h4.unwrap());

    c.kc.delete(&service_path(NS, "dual")).expect("delete Service");
    for (name, vip, i) in [(LEASE4, VIP4, i4), (LEASE6, VIP6, i6)] {
        c.wait_holder(name, GRACEFUL, |h| h.is_none());
        let l = c.lease(name).expect("the Lease stays, released");
        assert_eq!(l["spec"]["holderIdentity"], "", "{l:#}");
        assert_eq!(l["spec"]["leaseDurationSeconds"], 1, "released as client-go does: {l:#}");
        assert_eq!(c.metric(i, &transitions(vip, "released")), Some(1.0), "{}", c.logs());
        assert_eq!(c.metric(i, &held(vip)), Some(0.0));
    }
    // Nobody takes a Lease of a VIP no longer programmed.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((c.holder(LEASE4), c.holder(LEASE6)), (None, None));
}

#[test]
fn the_holder_keeps_announcing_while_the_api_server_is_down_for_everyone() {
    let mut c = L2::start("l2a");
    c.create(&service("dns", VIP4, ("dns", 53, "UDP")));
    let (h, _) = c.wait_holder(LEASE4, Duration::from_secs(10), |h| h.is_some());
    let h = L2Cluster::index(&h.unwrap());
    let state = c.api.snapshot().expect("snapshot");
    c.api.stop();
    // Well past the Lease's 6 s: the holder still announces, the other
    // node has not taken over (it cannot write the Lease).
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(c.metric(h, &held(VIP4)), Some(1.0), "{}", c.logs());
    assert_ne!(c.metric(1 - h, &held(VIP4)), Some(1.0), "{}", c.logs());
    assert_eq!(c.metric(h, &transitions(VIP4, "lost")), None, "{}", c.logs());
    // Back (new resourceVersions, so the watches list again): the holder
    // renews and keeps it.
    c.api.restart(Some(&state), 1_000_000).expect("restart the API server");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(c.holder(LEASE4).as_deref(), Some(NODES[h]), "{}", c.logs());
    assert_eq!(c.metric(h, &held(VIP4)), Some(1.0));
    assert_ne!(c.metric(1 - h, &held(VIP4)), Some(1.0));
}
