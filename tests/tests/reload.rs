//! Reloading the configuration while traffic flows: by a file change and by
//! SIGHUP; adding, removing and draining backends; adding and removing
//! services; refusing a bad file while keeping the running configuration.
//! Needs root.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use xlb_tests::{tcp_probe, Agent, Probe, TcpSession, Topology};

const APPLY: Duration = Duration::from_secs(5);

fn sessions(pods: impl IntoIterator<Item = usize>) -> String {
    svc("sessions", Topology::VIP_V4.into(), 81, "tcp", "snat", &backends(Fam::V4, pods, TCP_SESSION_PORT))
}

/// A service that never changes across the reloads of a test.
fn stable() -> String {
    svc("stable", "192.0.2.20".parse().unwrap(), 53, "udp", "snat", &backends(Fam::V4, 0..2, UDP_BACKEND_PORT))
}

fn snat(i: usize) -> std::net::IpAddr {
    Fam::V4.pod_gw(i)
}

/// A configuration reached through a symlink in a directory of its own
/// (`<dir>/xlb.yaml -> <dir>/real/xlb.yaml`): the agent watches the
/// symlink's directory, so rewriting the real file there is invisible to the
/// file watcher and only SIGHUP makes the agent read it. (If an agent did
/// follow the link, the tests using this would still hold: they only check
/// that the new configuration is in force after SIGHUP.)
struct LinkedConfig {
    dir: PathBuf,
}

impl LinkedConfig {
    fn new(topo: &Topology, yaml: &str) -> Self {
        let dir = std::env::temp_dir().join(topo.unique_name("sighup"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).expect("create config dirs");
        let c = LinkedConfig { dir };
        c.write(yaml);
        std::os::unix::fs::symlink(c.dir.join("real/xlb.yaml"), c.path()).expect("symlink config");
        c
    }
    fn path(&self) -> PathBuf {
        self.dir.join("xlb.yaml")
    }
    fn write(&self, yaml: &str) {
        let tmp = self.dir.join("real/xlb.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.dir.join("real/xlb.yaml")).expect("replace config");
    }
}

impl Drop for LinkedConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Test 6a (file change): adding a 4th backend moves no existing UDP or TCP
/// flow, new flows reach the new backend, and an unchanged service loses no
/// packet during the reload.
#[test]
fn reload_file_change_adds_backend_without_moving_flows() {
    let yaml = config(&[dns(0..3), sessions(0..3), stable()]);
    let mut env = Env::start(4, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..4, UDP_BACKEND_PORT);
    env.servers.extend(tcp_session_servers(&env.topo, Fam::V4, 0..4, TCP_SESSION_PORT));
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    warm_up_udp(&env, "192.0.2.20:53".parse().unwrap());

    let flows = open_udp_flows(&env, vip, 40);
    let before = udp_open_flows_backends(&env, &flows, vip, &snat);
    let mut tcp: Vec<TcpSession> = (0..12)
        .map(|_| TcpSession::connect(&env.topo.client, vip4(81), T).expect("TCP session through the VIP"))
        .collect();
    let tcp_before: Vec<String> =
        tcp.iter_mut().map(|s| s.request(b"hello", T).expect("TCP session request")).collect();

    let bg = Background::new_flows(&env, "192.0.2.20:53".parse().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    env.config.write(&config(&[dns(0..4), sessions(0..4), stable()])).unwrap();
    wait_backends(env.agent(), "dns", &backends(Fam::V4, 0..4, UDP_BACKEND_PORT), APPLY);
    wait_backends(env.agent(), "sessions", &backends(Fam::V4, 0..4, TCP_SESSION_PORT), APPLY);
    std::thread::sleep(Duration::from_millis(300));
    let BackgroundReport { sent, lost, .. } = bg.finish();
    assert!(
        lost.is_empty(),
        "the unchanged service lost {} of {sent} requests during the reload: {lost:?}{}",
        lost.len(),
        env.diag()
    );

    let after = udp_open_flows_backends(&env, &flows, vip, &snat);
    assert_eq!(before, after, "adding a backend moved existing UDP flows{}", env.diag());
    for (i, s) in tcp.iter_mut().enumerate() {
        let r = s
            .request(b"again", T)
            .unwrap_or_else(|e| panic!("TCP session {i} broke after adding a backend: {e:#}{}", env.diag()));
        assert_eq!(r, tcp_before[i], "TCP session {i} moved");
    }

    let new = spread_udp(&env, vip, 100);
    let new = check_spread(&env, &new, &snat, "new UDP flows after adding pod3");
    assert!(new.get(&3).copied().unwrap_or(0) > 0, "no new flow reached the added backend: {new:?}{}", env.diag());
    let new_tcp = check_spread(&env, &spread_tcp(&env, vip4(81), 60), &snat, "new TCP connections after adding pod3");
    assert!(new_tcp.get(&3).copied().unwrap_or(0) > 0, "no new TCP connection reached the added backend: {new_tcp:?}");
}

/// Test 6b (SIGHUP): removing a backend moves its flows to the others on
/// their next packets (within a second), other flows stay.
#[test]
fn reload_sighup_removes_backend_and_moves_only_its_flows() {
    let mut env = Env::new(3, "services: []\n");
    let linked = LinkedConfig::new(&env.topo, &config(&[dns(0..3), stable()]));
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    env.agent = Some(
        Agent::start(&env.topo, &linked.path(), env.pin.path(), &[])
            .unwrap_or_else(|e| panic!("start the agent: {e:#}")),
    );
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    warm_up_udp(&env, "192.0.2.20:53".parse().unwrap());

    let flows = open_udp_flows(&env, vip, 45);
    let before = udp_open_flows_backends(&env, &flows, vip, &snat);
    assert!(before.contains(&1), "some flow should use pod1: {:?}", tally(&before));

    let bg = Background::new_flows(&env, "192.0.2.20:53".parse().unwrap());
    linked.write(&config(&[dns([0, 2]), stable()]));
    env.agent_mut().reload().expect("SIGHUP");
    let applied = wait_backends(env.agent(), "dns", &backends(Fam::V4, [0, 2], UDP_BACKEND_PORT), APPLY);

    // Flows of pod1: each must be answered by pod0 or pod2 within 1 s of the
    // reload taking effect, and then stay there.
    let deadline = applied + Duration::from_secs(1);
    let mut moved_to = vec![usize::MAX; flows.len()];
    for (k, f) in flows.iter().enumerate().filter(|(k, _)| before[*k] == 1) {
        let mut seen = Vec::new();
        loop {
            let r = f.request(b"where now?", Duration::from_millis(300));
            let tag = match &r {
                Ok((reply, from)) => check_reply(reply, *from, vip, snat, "moved flow").ok(),
                Err(_) => None,
            };
            seen.push(format!("{r:?}"));
            if let Some(i) = tag.filter(|&i| i != 1) {
                moved_to[k] = i;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "flow {} of the removed backend pod1 did not move within 1 s of the reload: {seen:?}{}",
                f.local_addr(),
                env.diag()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let BackgroundReport { sent, lost, .. } = bg.finish();
    assert!(lost.is_empty(), "the unchanged service lost {} of {sent} requests: {lost:?}", lost.len());

    let after = udp_open_flows_backends(&env, &flows, vip, &snat);
    for (k, f) in flows.iter().enumerate() {
        if before[k] == 1 {
            assert_eq!(after[k], moved_to[k], "moved flow {} should stay on its new backend", f.local_addr());
        } else {
            assert_eq!(
                after[k],
                before[k],
                "flow {} of pod{} moved when pod1 was removed{}",
                f.local_addr(),
                before[k],
                env.diag()
            );
        }
    }
    // New flows never reach the removed backend.
    let new = check_spread(&env, &spread_udp(&env, vip, 60), &snat, "new flows");
    assert!(!new.contains_key(&1), "a new flow went to the removed pod1: {new:?}");
}

/// Test 6c: services added by a reload appear in `xlb services` and carry
/// traffic; removed ones disappear and stop being served; the others stay.
/// Uses a file change to add and SIGHUP (after a file change) to remove.
#[test]
fn reload_adds_and_removes_services() {
    let mut env = Env::start(3, &config(&[dns(0..3)]), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    env.servers.extend(tcp_servers(&env.topo, Fam::V4, 0..3, TCP_BACKEND_PORT));
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    let flows = open_udp_flows(&env, vip, 20);
    let before = udp_open_flows_backends(&env, &flows, vip, &snat);
    assert!(service(env.agent(), "web").is_none());

    let web = svc("web", Topology::VIP_V4.into(), 80, "tcp", "snat", &backends(Fam::V4, 0..3, TCP_BACKEND_PORT));
    let ntp =
        svc("ntp", "192.0.2.11".parse().unwrap(), 123, "udp", "preserve", &backends(Fam::V4, 1..3, UDP_BACKEND_PORT));
    env.config.write(&config(&[dns(0..3), web.clone(), ntp])).unwrap();
    wait_services(env.agent(), "services web and ntp", APPLY, |all| {
        ["web", "ntp"].iter().all(|n| all.iter().any(|s| s["name"] == *n))
    });
    let w = service(env.agent(), "web").unwrap();
    assert_eq!(
        (w["vip"].as_str(), w["port"].as_u64(), w["protocol"].as_str()),
        (Some("192.0.2.10"), Some(80), Some("tcp")),
        "{w}"
    );
    let n = service(env.agent(), "ntp").unwrap();
    assert_eq!(
        (n["vip"].as_str(), n["port"].as_u64(), n["protocol"].as_str()),
        (Some("192.0.2.11"), Some(123), Some("udp")),
        "{n}"
    );
    let tcp = check_spread(&env, &spread_tcp(&env, vip4(80), 30), &snat, "new service web");
    assert_eq!(tcp.len(), 3, "{tcp:?}");
    let ntp_replies = spread_udp(&env, "192.0.2.11:123".parse().unwrap(), 30);
    let ntp_spread = check_spread(&env, &ntp_replies, &|_| Fam::V4.client(), "new service ntp (preserve)");
    assert!(!ntp_spread.contains_key(&0), "{ntp_spread:?}");
    assert_eq!(udp_open_flows_backends(&env, &flows, vip, &snat), before, "dns flows moved when services were added");

    // Remove web (file change, then SIGHUP as well).
    env.config
        .write(&config(&[
            dns(0..3),
            svc(
                "ntp",
                "192.0.2.11".parse().unwrap(),
                123,
                "udp",
                "preserve",
                &backends(Fam::V4, 1..3, UDP_BACKEND_PORT),
            ),
        ]))
        .unwrap();
    env.agent_mut().reload().expect("SIGHUP");
    wait_services(env.agent(), "service web gone", APPLY, |all| !all.iter().any(|s| s["name"] == "web"));
    let names: Vec<String> = services(env.agent()).iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 2, "dns and ntp remain: {names:?}");
    // Without the service the node's kernel gets the SYN and has no route
    // for the VIP: an error (unreachable), a refusal or silence, never a
    // backend's reply.
    let probe = tcp_probe(&env.topo.client, vip4(80), b"still there?\n", Duration::from_secs(1));
    assert!(!matches!(probe, Ok(Probe::Reply(_))), "the removed service web still answered: {probe:?}{}", env.diag());
    assert_eq!(udp_open_flows_backends(&env, &flows, vip, &snat), before, "dns flows moved when web was removed");
}

/// Test 6d: weight 0 drains a backend: its existing flows stay on it, new
/// flows never go to it.
#[test]
fn reload_weight_zero_drains_backend() {
    let mut env = Env::start(3, &config(&[dns(0..3)]), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    let flows = open_udp_flows(&env, vip, 45);
    let before = udp_open_flows_backends(&env, &flows, vip, &snat);
    assert!(before.contains(&2), "some flow should use pod2: {:?}", tally(&before));

    let mut list = backends(Fam::V4, 0..2, UDP_BACKEND_PORT);
    list.push(format!("{{address: \"{}\", weight: 0}}", backend(Fam::V4, 2, UDP_BACKEND_PORT)));
    env.config.write(&config(&[svc("dns", Topology::VIP_V4.into(), 53, "udp", "snat", &list)])).unwrap();
    let drained = backend(Fam::V4, 2, UDP_BACKEND_PORT);
    // Applied = the backend shows weight 0 and the service's lookup table
    // (what new flows pick from) no longer gives it any slot.
    let deadline = Instant::now() + APPLY;
    let maglev = loop {
        let rows = cli_json(env.agent(), &["backends", "dns", "-o", "json"]);
        let row = rows.as_array().and_then(|r| r.iter().find(|r| r["address"] == drained.as_str()).cloned());
        let m = cli_json(env.agent(), &["maglev", "dns", "-o", "json"]);
        let slots = m["backends"].as_array().and_then(|b| {
            b.iter().find(|b| b["address"] == drained.as_str()).map(|b| b["slots"].as_u64().unwrap_or(u64::MAX))
        });
        if row.as_ref().is_some_and(|r| r["weight"] == 0) && slots.unwrap_or(0) == 0 {
            eprintln!("drained backend row: {}", row.unwrap());
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "backend {drained} never showed weight 0 with no lookup-table slot: {rows}\nmaglev: {m}{}",
            env.diag()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    assert_eq!(
        udp_open_flows_backends(&env, &flows, vip, &snat),
        before,
        "draining pod2 moved existing flows (they must stay, pod2's included){}",
        env.diag()
    );
    // New flows from fixed ports below the ephemeral range: an ephemeral port
    // could be the warm-up's, a flow from before the drain that may be on pod2.
    let ports: Vec<u16> = (24000..24090).collect();
    let new = tally(&udp_flows_backends(&env, Fam::V4, &ports, vip, &snat));
    assert!(!new.contains_key(&2), "a new flow went to the drained pod2: {new:?}\nmaglev: {maglev}{}", env.diag());
    assert_eq!(new.len(), 2, "new flows should use both pod0 and pod1: {new:?}\nmaglev: {maglev}{}", env.diag());
}

/// The line of `yaml` (1-based) that contains `needle`.
fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines().position(|l| l.contains(needle)).expect("needle in yaml") + 1
}

fn wait_log(agent: &Agent, needle: &str, count: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if agent.log().matches(needle).count() >= count {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Test 7: a bad file (on change and on SIGHUP) is refused with
/// `FILE:LINE: FIELD: MESSAGE` lines in the log; the running configuration
/// stays (services and traffic unchanged); the fixed file is applied.
#[test]
fn reload_bad_file_keeps_running_config() {
    let mut env = Env::start(3, &config(&[dns(0..3)]), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..3, UDP_BACKEND_PORT);
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    let flows = open_udp_flows(&env, vip, 30);
    let before = udp_open_flows_backends(&env, &flows, vip, &snat);
    let services_before = services_without_counters(env.agent());

    // Two errors: a port out of range and an unknown key.
    let bad =
        config(&[dns([0]), svc("web", Topology::VIP_V4.into(), 7000, "tcp", "snat", &backends(Fam::V4, 0..3, 8080))])
            .replace("port: 7000\n", "port: 70000\n")
            .replace(
                "    source: snat\n    backends:\n      - \"10.1.0.2:5353\"",
                "    source: snat\n    colour: blue\n    backends:\n      - \"10.1.0.2:5353\"",
            );
    let port_line = line_of(&bad, "70000");
    let key_line = line_of(&bad, "colour");
    let file = file_name(env.config.path());
    let port_err = format!("{file}:{port_line}: services[1].port: ");
    let key_err = format!("{file}:{key_line}: services[0].colour: ");

    let bg = Background::one_flow(&env, vip);
    env.config.write(&bad).unwrap();
    let logged = wait_log(env.agent(), &port_err, 1, APPLY);
    assert!(logged, "the agent's log has no line with {port_err:?}; bad file:\n{bad}\nlog:\n{}", env.agent().log());
    assert!(
        env.agent().log().contains(&key_err),
        "every error is reported: no {key_err:?} in the log:\n{}",
        env.agent().log()
    );
    // And via SIGHUP: the errors are reported again, nothing changes.
    env.agent_mut().reload().expect("SIGHUP");
    assert!(
        wait_log(env.agent(), &port_err, 2, APPLY),
        "SIGHUP with a bad file logged no error:\n{}",
        env.agent().log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let BackgroundReport { sent, lost, replies } = bg.finish();
    assert!(lost.is_empty(), "traffic lost while a bad file was refused ({} of {sent}): {lost:?}", lost.len());
    assert_eq!(replies.len(), 1, "one flow, one backend, while bad files were refused: {replies:?}");

    assert!(env.agent_mut().try_status().is_none(), "the agent exited on a bad file:\n{}", env.agent().log());
    assert_eq!(services_without_counters(env.agent()), services_before, "a refused file changed the services");
    assert_eq!(udp_open_flows_backends(&env, &flows, vip, &snat), before, "a refused file moved flows");
    let new = check_spread(&env, &spread_udp(&env, vip, 45), &snat, "new flows after a bad file");
    assert_eq!(new.len(), 3, "old configuration (3 backends) still in force: {new:?}");

    // Unparseable YAML is refused as well.
    let mentions = env.agent().log().matches(&format!("{file}:")).count();
    env.config.write("services:\n  - name: dns\n    vip: [192.0.2.10\n").unwrap();
    assert!(
        wait_log(env.agent(), &format!("{file}:"), mentions + 1, APPLY),
        "no FILE:LINE error for unparseable YAML:\n{}",
        env.agent().log()
    );
    assert_eq!(services_without_counters(env.agent()), services_before);

    // The fixed file is applied.
    let web = svc("web", Topology::VIP_V4.into(), 80, "tcp", "snat", &backends(Fam::V4, 0..3, TCP_BACKEND_PORT));
    env.servers.extend(tcp_servers(&env.topo, Fam::V4, 0..3, TCP_BACKEND_PORT));
    env.config.write(&config(&[dns(0..2), web])).unwrap();
    wait_backends(env.agent(), "dns", &backends(Fam::V4, 0..2, UDP_BACKEND_PORT), APPLY);
    wait_services(env.agent(), "service web", APPLY, |all| all.iter().any(|s| s["name"] == "web"));
    let tcp = check_spread(&env, &spread_tcp(&env, vip4(80), 15), &snat, "web after the fix");
    assert!(!tcp.is_empty());
    let new = check_spread(&env, &spread_udp(&env, vip, 30), &snat, "dns after the fix");
    assert!(!new.contains_key(&2), "pod2 was removed by the fixed file: {new:?}");
}

/// A file changed while the agent starts (after it read the file, before
/// it serves) is followed: the agent watches the file before reading it,
/// so the change is applied without another edit or SIGHUP. The change is
/// made as soon as the log says XDP is attached — after the first read of
/// the file and before the agent is ready.
#[test]
fn a_change_made_while_the_agent_starts_is_applied() {
    let mut env = Env::new(2, &config(&[dns(0..1)]));
    let agent = Agent::spawn(&env.topo, env.config.path(), env.pin.path(), &[]).expect("spawn the agent");
    env.agent = Some(agent);
    assert!(
        wait_log(env.agent(), "XDP attached", 1, Duration::from_secs(30)),
        "the agent never attached:\n{}",
        env.agent().log()
    );
    env.config.write(&config(&[dns(0..2)])).unwrap();
    env.agent_mut().wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e:#}\n{}", env.diag()));
    let mut want = backends(Fam::V4, 0..2, UDP_BACKEND_PORT);
    want.sort();
    wait_services(env.agent(), "the second backend, written while the agent started", APPLY, |all| {
        all.iter().any(|s| {
            let mut have = service_backends(s);
            have.sort();
            s["name"] == "dns" && have == want
        })
    });
}

/// A file replaced behind a symlink (as a ConfigMap volume swaps its data
/// directory), which the directory watch cannot see, is still applied
/// without SIGHUP: the agent also compares the file's inode, size and
/// modification time every 2 s.
#[test]
fn a_file_replaced_behind_its_symlink_is_applied_without_sighup() {
    let mut env = Env::new(2, "services: []\n");
    let linked = LinkedConfig::new(&env.topo, &config(&[dns(0..1)]));
    env.agent = Some(
        Agent::start(&env.topo, &linked.path(), env.pin.path(), &[])
            .unwrap_or_else(|e| panic!("start the agent: {e:#}")),
    );
    wait_backends(env.agent(), "dns", &backends(Fam::V4, 0..1, UDP_BACKEND_PORT), APPLY);
    linked.write(&config(&[dns(0..2)]));
    let t0 = Instant::now();
    wait_backends(env.agent(), "dns", &backends(Fam::V4, 0..2, UDP_BACKEND_PORT), APPLY);
    eprintln!("replaced behind the symlink: applied after {:?}", t0.elapsed());
    assert!(
        env.agent().log().contains("seen by polling"),
        "the change should have been found by polling: {}",
        env.diag()
    );
}
