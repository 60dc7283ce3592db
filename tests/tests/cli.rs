//! The CLI beside a running agent: `xlb services|backends|flows|stats|maglev
//! -o json` read the pinned maps and reflect real traffic through the VIP.
//! Needs root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use common::*;
use serde_json::Value;
use xlb_tests::Topology;

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} should be a number in {v}"))
}

/// Test 5: the JSON outputs of every read command, and counters that grow
/// with the traffic sent.
#[test]
fn cli_json_outputs_reflect_traffic() {
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..3));
    let mut env = Env::start(3, &yaml, &[]);
    let udp = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    env.servers.extend(tcp_servers(&env.topo, Fam::V4, 0..3, TCP_BACKEND_PORT));
    let agent = env.agent();

    // services, before any traffic.
    let before = service(agent, "dns").expect("dns listed");
    assert_eq!(before["vip"], "192.0.2.10", "{before}");
    assert_eq!(before["port"], 53, "{before}");
    assert_eq!(before["protocol"], "udp", "{before}");
    assert_eq!(service_backends(&before), backends(Fam::V4, 0..3, UDP_BACKEND_PORT), "{before}");
    let web = service(agent, "web").expect("web listed");
    assert_eq!((web["port"].as_u64(), web["protocol"].as_str()), (Some(80), Some("tcp")), "{web}");
    assert_eq!(services(agent).len(), 2, "exactly the two configured services");
    let (p0, b0) = (num(&before, "packets"), num(&before, "bytes"));
    let web_p0 = num(&web, "packets");

    // 30 UDP flows with a 10-byte payload: 30 packets of 20 + 8 + 10 = 38
    // bytes (IP packet length) toward the backends.
    let ports: Vec<u16> = (0..30).map(|i| 24000 + i).collect();
    let pods = udp_flows_backends(&env, Fam::V4, &ports, vip4(53), &|i| Fam::V4.pod_gw(i));
    let tcp = spread_tcp(&env, vip4(80), 10);
    check_spread(&env, &tcp, &|i| Fam::V4.pod_gw(i), "TCP to 192.0.2.10:80");

    let after = service(agent, "dns").expect("dns listed");
    let (dp, db) = (num(&after, "packets") - p0, num(&after, "bytes") - b0);
    assert_eq!(dp, 30, "dns packets should grow by the 30 requests sent: {before} -> {after}");
    assert_eq!(db, 30 * 38, "dns bytes should grow by 30 IP packets of 38 bytes: {before} -> {after}");
    let web_after = service(agent, "web").expect("web listed");
    // At least SYN, request, FIN and final ACKs for each of 10 connections.
    assert!(
        num(&web_after, "packets") >= web_p0 + 30,
        "web packets should grow with 10 TCP connections: {web} -> {web_after}"
    );

    // backends: one row per backend, counters per backend match what each
    // pod's server answered (every request of ours reached exactly one).
    let rows = cli_json(agent, &["backends", "-o", "json"]);
    let rows = rows.as_array().unwrap_or_else(|| panic!("xlb backends -o json is not an array: {rows}"));
    let dns_rows: Vec<&Value> = rows.iter().filter(|r| r["service"] == "dns").collect();
    assert_eq!(dns_rows.len(), 3, "3 dns backends in {rows:?}");
    assert_eq!(rows.iter().filter(|r| r["service"] == "web").count(), 3, "{rows:?}");
    let per_pod = tally(&pods);
    for (i, server) in udp.iter().enumerate() {
        let addr = backend(Fam::V4, i, UDP_BACKEND_PORT);
        let row = dns_rows
            .iter()
            .find(|r| r["address"] == addr.as_str())
            .unwrap_or_else(|| panic!("no dns backend {addr} in {dns_rows:?}"));
        assert_eq!(row["weight"], 1, "{row}");
        assert!(row["state"].is_string(), "{row}");
        let want = per_pod.get(&i).copied().unwrap_or(0) as u64;
        assert_eq!(server.served() as u64, want, "pod{i} server count");
        assert_eq!(num(row, "packets"), want, "packets of backend {addr}: {row}");
        assert_eq!(num(row, "bytes"), want * 38, "bytes of backend {addr}: {row}");
    }

    // flows: the connection table has our 30 UDP flows, with the client's
    // address and the backend each flow went to.
    let flows = cli_json(agent, &["flows", "-o", "json"]);
    let flows = flows.as_array().unwrap_or_else(|| panic!("xlb flows -o json is not an array: {flows}"));
    for f in flows {
        for k in ["service", "protocol", "client", "backend", "state"] {
            assert!(f[k].is_string(), "flow entry without {k}: {f}");
        }
        assert!(f["age_seconds"].is_u64(), "flow entry without age_seconds: {f}");
    }
    let dns_flows: Vec<&Value> = flows.iter().filter(|f| f["service"] == "dns" && f["protocol"] == "udp").collect();
    assert!(
        dns_flows.iter().all(|f| f["client"].as_str().unwrap().contains("10.100.0.2")),
        "every dns flow comes from the client 10.100.0.2: {dns_flows:?}"
    );
    let by_client: BTreeMap<String, String> = dns_flows
        .iter()
        .map(|f| (f["client"].as_str().unwrap().to_string(), f["backend"].as_str().unwrap().to_string()))
        .collect();
    for (port, pod) in ports.iter().zip(&pods) {
        let client = SocketAddr::from((Topology::CLIENT_V4, *port)).to_string();
        let got =
            by_client.get(&client).unwrap_or_else(|| panic!("no flow entry for client {client} in {dns_flows:?}"));
        assert_eq!(got, &backend(Fam::V4, *pod, UDP_BACKEND_PORT), "backend of the flow from {client}");
    }
    let filtered = cli_json(agent, &["flows", "--service", "web", "-o", "json"]);
    let filtered = filtered.as_array().expect("flows --service web is an array");
    assert!(
        !filtered.is_empty() && filtered.iter().all(|f| f["service"] == "web" && f["protocol"] == "tcp"),
        "xlb flows --service web lists only (and some) web flows: {filtered:?}"
    );

    // stats: counters as numbers; the paths we used are counted.
    let s = stats(agent);
    for k in ["flow_new", "reply_translated", "packets"] {
        assert!(s.get(k).copied().unwrap_or(0) > 0, "{k} should be > 0: {s:?}");
    }
    assert!(s["flow_new"] >= 40, "30 UDP + 10 TCP new flows: {s:?}");
    assert!(s["reply_translated"] >= 40, "every flow got replies: {s:?}");

    // maglev: table size and shares.
    let m = cli_json(agent, &["maglev", "dns", "-o", "json"]);
    assert_eq!(m["service"], "dns", "{m}");
    let size = num(&m, "table_size");
    assert!(size > 0, "{m}");
    assert!(m["max_avg"].as_f64().is_some_and(|x| x >= 1.0), "max_avg >= 1: {m}");
    let bs = m["backends"].as_array().unwrap_or_else(|| panic!("maglev backends: {m}"));
    let addrs: BTreeSet<&str> = bs.iter().map(|b| b["address"].as_str().expect("address")).collect();
    let want = backends(Fam::V4, 0..3, UDP_BACKEND_PORT);
    assert_eq!(addrs, want.iter().map(String::as_str).collect(), "{m}");
    let slots: u64 = bs.iter().map(|b| num(b, "slots")).sum();
    assert_eq!(slots, size, "slots sum to table_size: {m}");
    for b in bs {
        let share = b["share"].as_f64().unwrap_or(-1.0);
        assert!(share > 0.2 && share < 0.5, "three equal backends get about a third each: {m}");
    }

    // Table output (the default) works too.
    for args in [&["services"][..], &["backends"], &["flows"], &["stats"], &["maglev", "dns"]] {
        let out = agent.cli(args).expect("run xlb");
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "xlb {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = agent.cli(&["maglev", "no-such-service", "-o", "json"]).expect("run xlb");
    assert!(!out.status.success(), "maglev of an unknown service should fail");
}
