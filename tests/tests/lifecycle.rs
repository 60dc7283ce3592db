//! The agent's life: refusing an invalid file at start (exit 2, every error
//! as FILE:LINE, nothing attached), SIGTERM (exit 0, programs detached),
//! restarting on the same pins (no flow moves), refusing pins of another
//! table size (exit 1, with advice) and handing over with `--keep-on-exit`.
//! Needs root.

mod common;

use std::time::Duration;

use common::*;
use xlb_tests::{udp_request, Agent, Topology};

fn web(pods: impl IntoIterator<Item = usize>) -> String {
    svc("web", Topology::VIP_V4.into(), 80, "tcp", "snat", &backends(Fam::V4, pods, TCP_BACKEND_PORT))
}

fn snat(i: usize) -> std::net::IpAddr {
    Fam::V4.pod_gw(i)
}

fn assert_nothing_attached(env: &Env, when: &str) {
    for ifname in env.topo.node_interfaces() {
        assert!(
            !xdp_attached(&env.topo.node, &ifname),
            "{when}: an XDP program is still attached to {ifname}: {}",
            ip_link(&env.topo.node, &ifname)
        );
    }
}

/// Plain kernel forwarding from the client to pod 0 (not through xlb) works.
fn assert_direct_traffic(env: &Env, when: &str) {
    let to = Fam::V4.pod_sock(0, UDP_BACKEND_PORT);
    let (reply, from) = udp_request(&env.topo.client, None, to, b"direct", T)
        .unwrap_or_else(|e| panic!("{when}: direct UDP to {to} failed: {e:#}"));
    assert_eq!((reply.as_str(), from), ("pod0 10.100.0.2", to), "{when}: direct UDP to pod0");
}

/// Test 8: an invalid file at start: exit 2, every error listed as
/// `FILE:LINE: FIELD: MESSAGE`, and nothing attached.
#[test]
fn invalid_config_at_start_exits_2_with_all_errors() {
    // Line numbers matter: keep this text as is.
    let bad = "\
services:
  - name: dns
    vip: 192.0.2.10
    port: 70000
    protocol: udp
    backends:
      - 10.1.0.2:5353
  - name: web
    vip: 192.0.2.10
    port: 80
    protocol: sctp
    colour: blue
    backends:
      - {address: \"10.1.0.2:8080\", weight: 70000}
";
    let mut env = Env::new(1, bad);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..1, UDP_BACKEND_PORT);
    let mut agent = Agent::spawn(&env.topo, env.config.path(), env.pin.path(), &[]).expect("spawn the agent");
    let status = agent.wait_exit(Duration::from_secs(30)).expect("the agent should exit on an invalid file");
    let log = agent.log();
    assert_eq!(status.code(), Some(2), "exit code for an invalid file; stderr:\n{log}");

    let file = file_name(env.config.path());
    let expected = [
        (4, "services[0].port"),
        (11, "services[1].protocol"),
        (12, "services[1].colour"),
        (14, "services[1].backends[0].weight"),
    ];
    for (line, field) in expected {
        let needle = format!("{file}:{line}: {field}: ");
        let found = log.lines().find(|l| l.contains(&needle));
        let Some(found) = found else {
            panic!("no error line containing {needle:?} in stderr:\n{log}");
        };
        // FILE:LINE: FIELD: MESSAGE, with a non-empty message.
        let message = &found[found.find(&needle).unwrap() + needle.len()..];
        assert!(!message.trim().is_empty(), "error without a message: {found:?}");
    }
    assert_nothing_attached(&env, "after refusing an invalid file");
    assert_direct_traffic(&env, "after refusing an invalid file");
    // The VIP is not served.
    assert!(
        udp_request(&env.topo.client, None, vip4(53), b"x", Duration::from_millis(500)).is_err(),
        "something answered on the VIP although the agent refused its file"
    );
}

/// Test 12: SIGTERM ends the agent with exit 0 and detaches its programs;
/// the VIP is no longer served, plain forwarding still works.
#[test]
fn sigterm_exits_0_and_detaches() {
    let mut env = Env::start(3, &config(&[dns(0..3)]), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    warm_up_udp(&env, vip4(53));
    for ifname in env.topo.node_interfaces() {
        assert!(
            xdp_attached(&env.topo.node, &ifname),
            "XDP on {ifname} while the agent runs: {}",
            ip_link(&env.topo.node, &ifname)
        );
    }
    let mut agent = env.agent.take().unwrap();
    let status = agent.stop().expect("stop the agent");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM; log:\n{}", agent.log());
    assert_nothing_attached(&env, "after SIGTERM");
    assert!(
        udp_request(&env.topo.client, None, vip4(53), b"x", Duration::from_millis(500)).is_err(),
        "the VIP is still served after the agent stopped"
    );
    assert_direct_traffic(&env, "after SIGTERM");
}

/// Test 11: restarting the agent with the same pin path and configuration
/// keeps every flow on its backend, even flows whose backend a fresh pick
/// would change (a backend added while they were open), and `xlb services`
/// shows the same.
#[test]
fn restart_with_same_pins_keeps_flows() {
    let mut env = Env::start(4, &config(&[dns(0..3), web(0..3)]), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..4, UDP_BACKEND_PORT);
    env.servers.extend(tcp_servers(&env.topo, Fam::V4, 0..4, TCP_BACKEND_PORT));
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    let ports: Vec<u16> = (0..60).map(|i| 25000 + i).collect();
    let before = udp_flows_backends(&env, Fam::V4, &ports, vip, &snat);
    let services_before = services_without_counters(env.agent());
    let packets_before = service(env.agent(), "dns").unwrap()["packets"].as_u64().unwrap();

    // Plain restart.
    let status = env.agent.take().unwrap().stop().expect("stop");
    assert_eq!(status.code(), Some(0));
    env.start_agent(&[]);
    assert_eq!(services_without_counters(env.agent()), services_before, "xlb services after a restart");
    let packets_after = service(env.agent(), "dns").unwrap()["packets"].as_u64().unwrap();
    assert!(
        packets_after >= packets_before,
        "the pinned counters were reset by the restart: {packets_before} -> {packets_after}"
    );
    let after = udp_flows_backends(&env, Fam::V4, &ports, vip, &snat);
    assert_eq!(before, after, "flows moved across a restart{}", env.diag());

    // Add pod3 (no flow moves), then restart on that configuration: a fresh
    // pick would send about a quarter of the flows to pod3, the reused
    // connection table must not.
    env.config.write(&config(&[dns(0..4), web(0..3)])).unwrap();
    wait_backends(env.agent(), "dns", &backends(Fam::V4, 0..4, UDP_BACKEND_PORT), Duration::from_secs(5));
    assert_eq!(udp_flows_backends(&env, Fam::V4, &ports, vip, &snat), before, "adding pod3 moved flows");
    let services_before = services_without_counters(env.agent());
    let status = env.agent.take().unwrap().stop().expect("stop");
    assert_eq!(status.code(), Some(0));
    env.start_agent(&[]);
    assert_eq!(services_without_counters(env.agent()), services_before, "xlb services after the second restart");
    let after = udp_flows_backends(&env, Fam::V4, &ports, vip, &snat);
    let moved: Vec<String> = ports
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (a, b))| a != b)
        .map(|(p, (a, b))| format!("port {p}: pod{a} -> pod{b}"))
        .collect();
    assert!(moved.is_empty(), "flows moved across a restart with the same pins: {moved:?}{}", env.diag());
    // New flows do use pod3.
    let new = check_spread(&env, &spread_udp(&env, vip, 80), &snat, "new flows");
    assert!(new.contains_key(&3), "new flows should reach pod3 after the restart: {new:?}");
    // TCP still works after the restarts.
    let tcp = check_spread(&env, &spread_tcp(&env, vip4(80), 15), &snat, "TCP");
    assert!(!tcp.contains_key(&3), "web has no pod3: {tcp:?}");
}

/// `--keep-on-exit`: the programs stay attached after the agent exits (0),
/// traffic keeps flowing without an agent, and the next agent on the same
/// pins takes over without losing a packet or moving a flow.
#[test]
fn keep_on_exit_hands_over_without_loss() {
    let mut env = Env::start(3, &config(&[dns(0..3)]), &["--keep-on-exit"]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    let ports: Vec<u16> = (0..30).map(|i| 26000 + i).collect();
    let before = udp_flows_backends(&env, Fam::V4, &ports, vip, &snat);

    let bg = Background::one_flow(&env, vip);
    let bg_new = Background::new_flows(&env, vip);
    std::thread::sleep(Duration::from_millis(200));
    let mut first = env.agent.take().unwrap();
    let status = first.stop().expect("stop");
    assert_eq!(status.code(), Some(0), "log:\n{}", first.log());
    drop(first);
    assert!(
        xdp_attached(&env.topo.node, "c0"),
        "--keep-on-exit: XDP should stay on c0: {}",
        ip_link(&env.topo.node, "c0")
    );
    assert_eq!(udp_flows_backends(&env, Fam::V4, &ports, vip, &snat), before, "flows without an agent (programs kept)");
    env.start_agent(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let one = bg.finish();
    let new = bg_new.finish();
    assert!(
        one.lost.is_empty(),
        "the open flow lost {} of {} packets across the handover: {:?}",
        one.lost.len(),
        one.sent,
        one.lost
    );
    assert_eq!(one.replies.len(), 1, "the open flow changed backend across the handover: {:?}", one.replies);
    assert!(
        new.lost.is_empty(),
        "new flows lost {} of {} packets across the handover: {:?}",
        new.lost.len(),
        new.sent,
        new.lost
    );
    assert_eq!(udp_flows_backends(&env, Fam::V4, &ports, vip, &snat), before, "flows after the handover");

    // The new agent (without --keep-on-exit) detaches on SIGTERM.
    let status = env.agent.take().unwrap().stop().expect("stop");
    assert_eq!(status.code(), Some(0));
    assert_nothing_attached(&env, "after the second agent's SIGTERM");
}

/// An agent started on pins whose connection table has another
/// size than `--flow-table-size` refuses to start (exit 1) and says which
/// flag and which pinned size; started with the pinned size it works and
/// keeps the services.
#[test]
fn pinned_maps_of_another_size_are_refused_with_advice() {
    require_root();
    let yaml = config(&[dns(0..2)]);
    let mut env = Env::new(2, &yaml);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..2, UDP_BACKEND_PORT);
    env.start_agent(&["--flow-table-size", "4096"]);
    let to = vip4(53);
    warm_up_udp(&env, to);
    let services_before = services_without_counters(env.agent());

    let mut first = env.agent.take().unwrap();
    let status = first.stop().expect("stop the first agent");
    assert_eq!(status.code(), Some(0), "SIGTERM exit status; log:\n{}", first.log());
    drop(first);
    let flows_pin = xlb::bpf::maps::map_dir(env.pin.path()).join("XLB_FLOWS");
    assert!(flows_pin.exists(), "{} should stay pinned after SIGTERM", flows_pin.display());

    let mut refused = Agent::spawn(&env.topo, env.config.path(), env.pin.path(), &["--flow-table-size", "8192"])
        .expect("spawn the second agent");
    let status = match refused.wait_exit(Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => {
            let healthy = refused.is_healthy();
            let _ = refused.stop();
            panic!(
                "an agent with --flow-table-size 8192 on pins made with 4096 should refuse to \
                 start (healthy: {healthy}): {e:#}"
            );
        }
    };
    let log = refused.log();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status of an agent started with --flow-table-size 8192 on a pinned table of \
         4096 entries; stderr:\n{log}"
    );
    assert!(
        log.contains("--flow-table-size") && log.contains("4096"),
        "the refusal should name --flow-table-size and the pinned size 4096; stderr:\n{log}"
    );
    drop(refused);
    assert_nothing_attached(&env, "after the refused start");

    // With the pinned size it starts and keeps the services.
    env.start_agent(&["--flow-table-size", "4096"]);
    assert_eq!(
        services_without_counters(env.agent()),
        services_before,
        "xlb services after restarting with the pinned --flow-table-size{}",
        env.diag()
    );
    let (reply, from) = xlb_tests::udp_request(&env.topo.client, None, to, b"after", T)
        .unwrap_or_else(|e| panic!("UDP to {to} after the restart: {e:#}{}", env.diag()));
    check_reply(&reply, from, to, |i| Fam::V4.pod_gw(i), "after the restart")
        .unwrap_or_else(|e| panic!("{e}{}", env.diag()));
}

/// kill -9 under traffic: the programs stay attached (their links are
/// pinned from the start), forwarding goes on with the pinned maps, the next
/// agent adopts them with no flow moved and no request lost. Then again
/// with an endpoint change made while no agent runs (pod2 removed, pod3
/// added): the restarted agent picks it up — pod2's flows move, the others
/// stay, new flows reach pod3.
#[test]
fn kill_9_under_traffic_keeps_forwarding_and_the_next_agent_adopts() {
    let mut env = Env::start(4, &config(&[dns(0..3)]), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..4, UDP_BACKEND_PORT);
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    let ports: Vec<u16> = (0..60).map(|i| 27000 + i).collect();
    let before = udp_flows_backends(&env, Fam::V4, &ports, vip, &snat);
    let packets_before = service(env.agent(), "dns").unwrap()["packets"].as_u64().unwrap();

    let kill = |env: &mut Env| {
        let mut agent = env.agent.take().unwrap();
        agent.signal(libc::SIGKILL).expect("kill -9 the agent");
        let status = agent.wait_exit(Duration::from_secs(10)).expect("the killed agent exits");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status:?}");
    };

    // 1. Same configuration.
    let bg = Background::one_flow(&env, vip);
    let bg_new = Background::new_flows(&env, vip);
    std::thread::sleep(Duration::from_millis(200));
    kill(&mut env);
    for ifname in env.topo.node_interfaces() {
        assert!(
            xdp_attached(&env.topo.node, &ifname),
            "after kill -9, XDP should stay on {ifname}: {}",
            ip_link(&env.topo.node, &ifname)
        );
    }
    assert_eq!(udp_flows_backends(&env, Fam::V4, &ports, vip, &snat), before, "flows with the agent dead");
    env.start_agent(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let (one, new) = (bg.finish(), bg_new.finish());
    assert!(one.lost.is_empty(), "the open flow lost {} of {}: {:?}", one.lost.len(), one.sent, one.lost);
    assert_eq!(one.replies.len(), 1, "the open flow changed backend: {:?}", one.replies);
    assert!(new.lost.is_empty(), "new flows lost {} of {}: {:?}", new.lost.len(), new.sent, new.lost);
    assert!(one.sent >= 10 && new.sent >= 10, "too little traffic to tell: {} / {}", one.sent, new.sent);
    assert_eq!(udp_flows_backends(&env, Fam::V4, &ports, vip, &snat), before, "flows after the adoption");
    // The adopted links keep their recorded XDP mode (not "unknown").
    let status = cli_json(env.agent(), &["status", "-o", "json"]);
    for a in status["attachments"].as_array().expect("attachments in xlb status") {
        assert_eq!(a["xdp_mode"], "native", "the mode of an adopted link: {status}");
        let reason = a["path_reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty() && !reason.contains("not known"), "the path of an adopted link: {status}");
    }
    let packets_after = service(env.agent(), "dns").unwrap()["packets"].as_u64().unwrap();
    assert!(packets_after > packets_before, "counters kept and counting: {packets_before} -> {packets_after}");

    // 2. An endpoint change while no agent runs.
    kill(&mut env);
    env.config.write(&config(&[dns([0, 1, 3])])).unwrap();
    assert_eq!(udp_flows_backends(&env, Fam::V4, &ports, vip, &snat), before, "dead agent: old state forwards");
    env.start_agent(&[]);
    wait_backends(env.agent(), "dns", &backends(Fam::V4, [0, 1, 3], UDP_BACKEND_PORT), Duration::from_secs(5));
    let after = udp_flows_backends(&env, Fam::V4, &ports, vip, &snat);
    for ((p, b), a) in ports.iter().zip(&before).zip(&after) {
        if *b == 2 {
            assert_ne!(*a, 2, "port {p}: still on the removed pod2{}", env.diag());
        } else {
            assert_eq!(a, b, "port {p}: moved from pod{b} to pod{a} although pod{b} stayed{}", env.diag());
        }
    }
    assert!(before.contains(&2), "no flow was on pod2 to begin with: {before:?}");
    let new = check_spread(&env, &spread_udp(&env, vip, 80), &snat, "new flows");
    assert!(new.contains_key(&3) && !new.contains_key(&2), "new flows after the restart: {new:?}");

    // A clean stop still detaches (the pins are removed).
    let status = env.agent.take().unwrap().stop().expect("stop");
    assert_eq!(status.code(), Some(0));
    assert_nothing_attached(&env, "after SIGTERM following a kill -9 adoption");
}

/// An agent killed with kill -9 left links on an interface the next agent is
/// not told to attach: the next agent releases them (nothing forwards there
/// with state nobody updates), and attaches where it is told.
#[test]
fn links_left_on_an_interface_no_longer_named_are_released() {
    let mut env = Env::start(2, &config(&[dns(0..2)]), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..2, UDP_BACKEND_PORT);
    warm_up_udp(&env, vip4(53));
    let mut agent = env.agent.take().unwrap();
    agent.signal(libc::SIGKILL).expect("kill -9 the agent");
    agent.wait_exit(Duration::from_secs(10)).expect("the killed agent exits");
    let ifaces = env.topo.node_interfaces();
    let dropped = ifaces.last().unwrap().clone();
    assert!(xdp_attached(&env.topo.node, &dropped), "kill -9 left XDP on {dropped}");
    let args: Vec<String> = std::iter::once("agent".to_owned())
        .chain(["--config".to_owned(), env.config.path().display().to_string()])
        .chain(ifaces.iter().filter(|i| **i != dropped).flat_map(|i| ["--interface".to_owned(), i.clone()]))
        .collect();
    let mut next = Agent::spawn_args(&env.topo.node, env.pin.path(), &args).expect("spawn the next agent");
    next.wait_healthy(Duration::from_secs(30)).expect("the next agent is healthy");
    assert!(!xdp_attached(&env.topo.node, &dropped), "the stale link on {dropped} was not released: {}", next.log());
    assert!(next.log().contains("released a link"), "no log line about the released link:\n{}", next.log());
    for i in ifaces.iter().filter(|i| **i != dropped) {
        assert!(xdp_attached(&env.topo.node, i), "XDP on {i}");
    }
    let status = next.stop().expect("stop");
    assert_eq!(status.code(), Some(0), "{}", next.log());
}

/// A pin path holding maps of a newer layout (a downgrade): the agent
/// refuses (exit 1, saying what to do) with nothing attached, and the CLI
/// refuses to read them rather than print wrong numbers; maps of an older
/// layout beside ours are only warned about.
#[test]
fn a_newer_map_layout_is_refused_by_the_agent_and_the_cli() {
    let mut env = Env::new(1, &config(&[dns(0..1)]));
    std::fs::create_dir_all(env.pin.path().join("v999")).expect("create a newer layout's directory on bpffs");
    let mut agent = Agent::spawn(&env.topo, env.config.path(), env.pin.path(), &[]).expect("spawn the agent");
    let status = agent.wait_exit(Duration::from_secs(30)).expect("the agent should refuse a newer layout");
    let log = agent.log();
    assert_eq!(status.code(), Some(1), "exit code for a newer layout; log:\n{log}");
    assert!(log.contains("newer xlb (map layout v999)") && log.contains("remove that directory"), "{log}");
    assert_nothing_attached(&env, "after refusing a newer layout");
    let out = agent.cli(&["services"]).expect("run xlb services");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "xlb services on a newer layout: {err}");
    assert!(err.contains("layout v999") && err.contains("this xlb reads v"), "xlb services on a newer layout: {err}");

    // Older layout beside ours: warned about, the agent runs.
    std::fs::remove_dir(env.pin.path().join("v999")).unwrap();
    std::fs::create_dir(env.pin.path().join("v0")).unwrap();
    env.start_agent(&[]);
    assert!(env.agent().log().contains("older xlb layout (v0)"), "{}", env.agent().log());
}
