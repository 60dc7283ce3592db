//! A rolling upgrade across map layouts, under traffic: an agent of the
//! previous layout (built from the commit in `tests/previous-layout`) runs
//! with `--keep-on-exit`, as the DaemonSet does, and forwards UDP (SNAT),
//! TCP sessions and a `source: preserve` service with session affinity;
//! this tree's agent replaces it. Every flow keeps its backend, the TCP
//! sessions go on, affinity holds, counters are carried over, the old
//! layout's maps are gone and the traffic running across the swap loses
//! nothing. Then the downgrade: the old agent refuses the newer maps (exit
//! 1, nothing detached) and the old CLI refuses to read them. Needs root.
//!
//! The first run builds the previous layout's xlb (several minutes; cached
//! under `target/previous-layout/`).

mod common;

use std::time::Duration;

use common::*;
use xlb_tests::previous::previous_layout_binary;
use xlb_tests::{Agent, TcpSession, Topology};

fn snat(i: usize) -> std::net::IpAddr {
    Fam::V4.pod_gw(i)
}

fn services() -> String {
    let sessions =
        svc("sessions", Topology::VIP_V4.into(), 81, "tcp", "snat", &backends(Fam::V4, 0..3, TCP_SESSION_PORT));
    let mut ntp =
        svc("ntp", "192.0.2.11".parse().unwrap(), 123, "udp", "preserve", &backends(Fam::V4, 0..3, UDP_BACKEND_PORT));
    ntp.push_str("    session_affinity_timeout: 600\n");
    config(&[dns(0..3), sessions, ntp])
}

/// `xlb agent --config FILE --interface IF... EXTRA...`, as `Agent::spawn`
/// builds it, for another binary.
fn agent_args(env: &Env, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["agent".to_string(), "--config".into(), env.config.path().display().to_string()];
    for ifname in env.topo.node_interfaces() {
        args.extend(["--interface".to_string(), ifname]);
    }
    args.extend(extra.iter().map(ToString::to_string));
    args
}

fn layouts(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.pin.path())
        .expect("read the pin path")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('v'))
        .collect();
    v.sort();
    v
}

#[test]
fn an_older_layout_is_upgraded_under_traffic_without_moving_a_flow() {
    let old_bin = previous_layout_binary().unwrap_or_else(|e| panic!("the previous layout's xlb: {e:#}"));
    let mut env = Env::new(3, &services());
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    env.servers.extend(tcp_session_servers(&env.topo, Fam::V4, 0..3, TCP_SESSION_PORT));
    let mut old = Agent::spawn_bin(&old_bin, &env.topo.node, env.pin.path(), &agent_args(&env, &["--keep-on-exit"]))
        .expect("spawn the old agent");
    old.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("the old agent: {e:#}\n{}", old.log()));
    env.agent = Some(old);
    let ours = xlb::bpf::maps::map_dir(env.pin.path()).file_name().unwrap().to_string_lossy().into_owned();
    let pinned = layouts(&env);
    assert!(pinned.len() == 1 && pinned[0] < ours, "the old agent pins an older layout than {ours}: {pinned:?}");
    let old_layout = pinned[0].clone();

    let vip = vip4(53);
    let ntp: std::net::SocketAddr = "192.0.2.11:123".parse().unwrap();
    warm_up_udp(&env, vip);
    let flows = open_udp_flows(&env, vip, 60);
    let before = udp_open_flows_backends(&env, &flows, vip, &snat);
    let mut tcp: Vec<TcpSession> = (0..12)
        .map(|_| TcpSession::connect(&env.topo.client, vip4(81), T).expect("TCP session through the VIP"))
        .collect();
    let tcp_before: Vec<String> = tcp.iter_mut().map(|s| s.request(b"hello", T).expect("TCP request")).collect();
    // Affinity: every flow of the client to ntp reaches one pod.
    let sticky =
        tally(&udp_flows_backends(&env, Fam::V4, &(24000..24010).collect::<Vec<_>>(), ntp, &|_| Fam::V4.client()));
    assert_eq!(sticky.len(), 1, "affinity before the upgrade: {sticky:?}");
    let old_flows = cli_json(env.agent(), &["flows", "-o", "json"]).as_array().map_or(0, Vec::len);
    let old_packets = service(env.agent(), "dns").unwrap()["packets"].as_u64().unwrap();
    assert!(old_flows >= 80, "the old agent's connection table: {old_flows} entries");

    // The upgrade, with traffic running across it.
    let bg = Background::one_flow(&env, vip);
    let bg_new = Background::new_flows(&env, vip);
    std::thread::sleep(Duration::from_millis(300));
    let mut old = env.agent.take().unwrap();
    let status = old.stop().expect("stop the old agent");
    assert_eq!(status.code(), Some(0), "the old agent's exit; log:\n{}", old.log());
    assert!(xdp_attached(&env.topo.node, "c0"), "--keep-on-exit: the old program stays while no agent runs");
    // Another Maglev seed: the lookup tables change, so a flow that the
    // new program picked afresh (its state lost) would move for about 2 in
    // 3 of them; only carried state keeps them all where they were.
    env.start_agent(&["--maglev-seed", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    let (one, new) = (bg.finish(), bg_new.finish());
    eprintln!(
        "upgrade {old_layout} -> {ours} under traffic: established flow {} sent, {} lost; new flows {} sent, {} lost",
        one.sent,
        one.lost.len(),
        new.sent,
        new.lost.len()
    );
    let log = env.agent().log();
    assert!(log.contains("carried the maps of the older layout over"), "no migration in the log:\n{log}");
    assert!(log.contains("upgrade done"), "the upgrade did not finish:\n{log}");
    // The stated bound: nothing lost, on the established flow or on the
    // new flows made while the program was swapped.
    assert!(one.lost.is_empty(), "the open flow lost {} of {}: {:?}", one.lost.len(), one.sent, one.lost);
    assert_eq!(one.replies.len(), 1, "the open flow changed backend across the upgrade: {:?}", one.replies);
    assert!(new.lost.is_empty(), "new flows lost {} of {}: {:?}", new.lost.len(), new.sent, new.lost);
    assert!(one.sent >= 20 && new.sent >= 20, "too little traffic to tell: {} / {}", one.sent, new.sent);

    assert_eq!(layouts(&env), std::slice::from_ref(&ours), "the old layout's maps are unpinned after the upgrade");
    let moved: Vec<usize> = udp_open_flows_backends(&env, &flows, vip, &snat)
        .iter()
        .zip(&before)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    assert!(moved.is_empty(), "UDP flows moved by the upgrade: {moved:?}{}", env.diag());
    for (i, s) in tcp.iter_mut().enumerate() {
        let r = s.request(b"again", T).unwrap_or_else(|e| panic!("TCP session {i} broke in the upgrade: {e:#}"));
        assert_eq!(r, tcp_before[i], "TCP session {i} moved");
    }
    let again =
        tally(&udp_flows_backends(&env, Fam::V4, &(24100..24110).collect::<Vec<_>>(), ntp, &|_| Fam::V4.client()));
    assert_eq!(again, sticky.keys().map(|k| (*k, 10)).collect(), "affinity across the upgrade");
    let new_flows = cli_json(env.agent(), &["flows", "-o", "json"]).as_array().map_or(0, Vec::len);
    assert!(new_flows >= old_flows, "flows carried over: {old_flows} before, {new_flows} after");
    let packets = service(env.agent(), "dns").unwrap()["packets"].as_u64().unwrap();
    let sent = (one.sent + new.sent) as u64;
    assert!(
        packets >= old_packets + sent,
        "counters carried over and counting: {old_packets} before, {sent} sent across the upgrade, {packets} after"
    );

    // Downgrade: the old agent refuses the newer maps and leaves the
    // running program alone; the old CLI refuses to read them.
    let mut down = Agent::spawn_bin(&old_bin, &env.topo.node, env.pin.path(), &agent_args(&env, &[]))
        .expect("spawn the old agent again");
    let status = down.wait_exit(Duration::from_secs(30)).expect("the old agent should refuse the newer layout");
    assert_eq!(status.code(), Some(1), "downgrade exit code; log:\n{}", down.log());
    assert!(down.log().contains(&format!("newer xlb (map layout {ours})")), "{}", down.log());
    let out = down.cli(&["services"]).expect("run the old xlb services");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the old CLI on the newer layout: {err}");
    assert!(
        err.contains(&format!("layout {ours}")) && err.contains(&format!("this xlb reads {old_layout}")),
        "the old CLI on the newer layout: {err}"
    );
    drop(down);
    assert!(xdp_attached(&env.topo.node, "c0"), "the refused downgrade detached the program");
    let after = udp_open_flows_backends(&env, &flows, vip, &snat);
    assert_eq!(after, before, "flows after the refused downgrade");
}
