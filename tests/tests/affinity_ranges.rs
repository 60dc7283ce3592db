//! Client-IP session affinity (`session_affinity_timeout`) and source
//! ranges (`source_ranges`) with real UDP traffic through the VIP, changed
//! by reloading the file. Needs root (CI runs it as root with
//! `--test-threads=1`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use xlb_tests::{udp_request, Topology, UdpFlow};

/// The `dns` service (UDP/53 → three pods, snat) on the family's VIP, with
/// `extra` YAML lines (4-space indented keys) added.
fn dns(fam: Fam, extra: &str) -> String {
    let (name, vip) = match fam {
        Fam::V4 => ("dns", Topology::VIP_V4.into()),
        Fam::V6 => ("dns6", Topology::VIP_V6.into()),
    };
    let s = svc(name, vip, 53, "udp", "snat", &backends(fam, 0..3, UDP_BACKEND_PORT));
    s.replacen("    backends:", &format!("{extra}    backends:"), 1)
}

/// Writes the file and waits until `xlb services` shows `name` with the
/// given `key` equal to `want`.
fn reload(env: &Env, services: &[String], name: &str, key: &str, want: serde_json::Value) {
    env.config.write(&config(services)).expect("rewrite the configuration");
    wait_services(env.agent(), &format!("{name}.{key} = {want}"), Duration::from_secs(10), |all| {
        all.iter().any(|s| s["name"].as_str() == Some(name) && s[key] == want)
    });
}

/// UDP requests from `n` fixed source ports starting at `first`: the pods
/// that answered.
fn flows(env: &Env, fam: Fam, first: u16, n: u16, vip: SocketAddr) -> Vec<usize> {
    let ports: Vec<u16> = (first..first + n).collect();
    udp_flows_backends(env, fam, &ports, vip, &|i| fam.pod_gw(i))
}

/// No reply to any of three new UDP flows from the client.
fn no_reply(env: &Env, fam: Fam, vip: SocketAddr, first: u16, ctx: &str) {
    for port in first..first + 3 {
        if let Ok((reply, from)) =
            udp_request(&env.topo.client, Some(fam.unspecified(port)), vip, b"x", Duration::from_millis(700))
        {
            panic!("{ctx}: UDP from port {port} to {vip} was answered ({reply:?} from {from}){}", env.diag());
        }
    }
}

/// Affinity on: flows from 40 source ports of the one client all reach one
/// pod; reloaded with affinity off, new flows spread over the pods again;
/// on again, they stick again.
#[test]
fn affinity_keeps_a_client_on_one_backend_until_turned_off() {
    let on = dns(Fam::V4, "    session_affinity_timeout: 600\n");
    let mut env = Env::start(3, &config(std::slice::from_ref(&on)), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    let s = service(env.agent(), "dns").expect("dns listed");
    assert_eq!(s["affinity_timeout"], 600, "xlb services shows the affinity timeout: {s}");

    let sticky = tally(&flows(&env, Fam::V4, 21000, 40, vip));
    assert_eq!(sticky.len(), 1, "with affinity, all 40 flows of the client reach one pod: {sticky:?}{}", env.diag());

    reload(&env, &[dns(Fam::V4, "")], "dns", "affinity_timeout", serde_json::Value::Null);
    let spread = tally(&flows(&env, Fam::V4, 22000, 60, vip));
    assert!(spread.len() >= 2, "without affinity, 60 new flows spread over the pods: {spread:?}{}", env.diag());

    reload(&env, &[on], "dns", "affinity_timeout", 600.into());
    let again = tally(&flows(&env, Fam::V4, 23000, 40, vip));
    assert_eq!(again.len(), 1, "affinity on again: one pod: {again:?}{}", env.diag());
}

/// Source ranges for IPv4 and IPv6: a range that excludes the client gets
/// no reply (and counts `drop_source_range`); the client's own prefix is
/// answered; a flow in progress is cut when its client is excluded and
/// resumes when the ranges are removed.
#[test]
fn source_ranges_admit_only_listed_clients() {
    let open = [dns(Fam::V4, ""), dns(Fam::V6, "")];
    let mut env = Env::start(3, &config(&open), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    env.servers.extend(udp_servers(&env.topo, Fam::V6, 0..3, UDP_BACKEND_PORT));
    let (v4, v6) = (vip4(53), vip6(53));
    warm_up_udp(&env, v4);
    warm_up_udp(&env, v6);
    // Flows in progress (sockets kept open), answered before any range.
    let f4 = UdpFlow::new(&env.topo.client, None, v4).expect("UDP socket");
    let f6 = UdpFlow::new(&env.topo.client, None, v6).expect("UDP socket");
    let p4 = f4.request(b"before", T).unwrap_or_else(|e| panic!("IPv4 flow before ranges: {e:#}{}", env.diag()));
    let p6 = f6.request(b"before", T).unwrap_or_else(|e| panic!("IPv6 flow before ranges: {e:#}{}", env.diag()));

    // Ranges that exclude the client (10.100.0.2, fd00:100::2).
    let excluding = [
        dns(Fam::V4, "    source_ranges: [10.100.1.0/24, 10.100.0.3/32]\n"),
        dns(Fam::V6, "    source_ranges: [\"fd00:101::/64\"]\n"),
    ];
    reload(&env, &excluding, "dns6", "source_ranges", serde_json::json!(["fd00:101::/64"]));
    let dropped = stat(env.agent(), "drop_source_range");
    no_reply(&env, Fam::V4, v4, 24000, "IPv4 client outside the ranges");
    no_reply(&env, Fam::V6, v6, 24000, "IPv6 client outside the ranges");
    assert!(f4.request(b"cut", Duration::from_millis(700)).is_err(), "the IPv4 flow in progress is cut");
    assert!(f6.request(b"cut", Duration::from_millis(700)).is_err(), "the IPv6 flow in progress is cut");
    let now = stat(env.agent(), "drop_source_range");
    assert!(now >= dropped + 8, "drop_source_range counted the drops: {dropped} -> {now}{}", env.diag());

    // The client's own prefixes: answered.
    let including = [
        dns(Fam::V4, "    source_ranges: [10.100.1.0/24, 10.100.0.2/32]\n"),
        dns(Fam::V6, "    source_ranges: [\"fd00:101::/64\", \"fd00:100::/64\"]\n"),
    ];
    reload(&env, &including, "dns6", "source_ranges", serde_json::json!(["fd00:100::/64", "fd00:101::/64"]));
    let s = service(env.agent(), "dns").expect("dns listed");
    assert_eq!(s["source_ranges"], serde_json::json!(["10.100.0.2/32", "10.100.1.0/24"]), "{s}");
    flows(&env, Fam::V4, 25000, 10, v4);
    flows(&env, Fam::V6, 25000, 10, v6);

    // Ranges removed: open again, and the flows in progress resume on their pods.
    reload(&env, &open, "dns6", "source_ranges", serde_json::json!([]));
    for (f, before, fam, vip) in [(&f4, &p4, Fam::V4, v4), (&f6, &p6, Fam::V6, v6)] {
        let (reply, from) =
            f.request(b"after", T).unwrap_or_else(|e| panic!("{fam:?} flow after: {e:#}{}", env.diag()));
        assert_eq!(from, vip);
        assert_eq!(parse_reply(&reply).map(|r| r.0), parse_reply(&before.0).map(|r| r.0), "same pod as before");
    }
}
