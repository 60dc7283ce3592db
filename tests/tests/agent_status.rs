//! Telling a running agent from stale state: `xlb status`, the warning of
//! the read commands when no agent runs, the last reload's result in
//! `/healthz`, `/readyz` and the metrics, and the `ip netns exec` trap.
//! Needs root.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use xlb_tests::{xlb_binary, Agent, PinDir, Topology};

/// `xlb status -o json`: (exit code, parsed object).
fn status_json(agent: &Agent) -> (Option<i32>, Value) {
    let out = agent.cli(&["status", "-o", "json"]).expect("run xlb status");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "xlb status -o json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// Stops the environment's agent (SIGTERM), checks that it exited 0 and
/// returns it: its pins and log stay readable.
fn stop_agent(env: &mut Env) -> Agent {
    let mut agent = env.agent.take().expect("a running agent");
    let status = agent.stop().expect("stop the agent");
    assert_eq!(status.code(), Some(0), "exit code after SIGTERM:\n{}", agent.log());
    agent
}

/// `xlb status -o json` when no agent runs: checks exit 1 and
/// `running: false`, returns the object.
fn status_not_running(agent: &Agent) -> Value {
    let (code, v) = status_json(agent);
    assert_eq!(code, Some(1), "xlb status when no agent runs: {v}");
    assert_eq!(v["running"], false, "{v}");
    v
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("interfaces should be an array: {v}"))
        .iter()
        .map(|i| i.as_str().expect("interface names are strings").to_string())
        .collect();
    n.sort();
    n
}

/// `xlb services` (table): (exit code, stdout, stderr).
fn services_table(agent: &Agent) -> (Option<i32>, String, String) {
    let out = agent.cli(&["services"]).expect("run xlb services");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 100 ms until it returns true or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 10, defect 6: `xlb status` says running (exit 0) with the attached
/// interfaces and the last apply; after SIGTERM it says not running (exit
/// 1, no interface) and `xlb services` still prints its table (exit 0) but
/// warns that no agent runs; an agent killed with SIGKILL is seen as gone
/// once its heartbeat is stale.
#[test]
fn status_running_stopped_and_killed() {
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..2));
    let mut env = Env::start(2, &yaml, &[]);
    let mut want_ifaces = env.topo.node_interfaces();
    want_ifaces.sort();

    let (code, v) = status_json(env.agent());
    assert_eq!(code, Some(0), "xlb status with an agent running: {v}");
    assert_eq!(v["running"], true, "{v}");
    assert_eq!(names(&v), want_ifaces, "attached interfaces: {v}");
    for a in v["attachments"].as_array().expect("attachments") {
        let mode = a["xdp_mode"].as_str().unwrap_or_default();
        assert!(mode == "native" || mode == "generic", "XDP mode of {a}");
    }
    assert_eq!(v["last_apply"]["result"], "ok", "{v}");
    assert!(v["last_apply"]["time_unix"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["announced_vips"], Value::Array(vec![]), "{v}");
    let table = env.agent().cli(&["status"]).expect("xlb status");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.contains("running"), "xlb status table: {text}");
    let (code, out, err) = services_table(env.agent());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("dns"), "{out}");
    assert!(!err.contains("warning"), "no warning while the agent runs: {err}");
    assert!(!env.agent().log().contains("nsenter"), "no `ip netns exec` warning here:\n{}", env.agent().log());

    // SIGTERM: detached, marked stopped.
    let agent = stop_agent(&mut env);
    let v = status_not_running(&agent);
    assert_eq!(v["state"], "stopped", "{v}");
    assert!(names(&v).is_empty(), "nothing is attached after SIGTERM: {v}");
    let (code, out, err) = services_table(&agent);
    assert_eq!(code, Some(0), "services still prints the pinned maps: {err}");
    assert!(out.contains("dns"), "{out}");
    assert!(
        err.contains("warning") && err.contains("no xlb agent is running") && err.contains("nothing is attached"),
        "xlb services after the agent exited should warn that the maps are stale: {err:?}"
    );
    for cmd in [&["stats"][..], &["flows"], &["backends"], &["maglev", "dns"]] {
        let out = agent.cli(cmd).expect("run xlb");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.contains("no xlb agent is running"),
            "xlb {} after the agent exited: {}: {err}",
            cmd.join(" "),
            out.status
        );
    }
    drop(agent);

    // SIGKILL: no clean exit; the stale heartbeat tells.
    env.start_agent(&[]);
    let (code, v) = status_json(env.agent());
    assert_eq!((code, &v["running"]), (Some(0), &Value::Bool(true)), "{v}");
    let mut agent = env.agent.take().unwrap();
    agent.signal(libc::SIGKILL).expect("SIGKILL");
    agent.wait_exit(Duration::from_secs(10)).expect("killed agent exits");
    let mut last = Value::Null;
    let gone = wait_for(Duration::from_secs(10), || {
        let (code, v) = status_json(&agent);
        let done = code == Some(1) && v["running"] == false && v["state"] == "not responding";
        last = v;
        done
    });
    assert!(gone, "xlb status never said the killed agent is gone: {last}");
    let (_, _, err) = services_table(&agent);
    assert!(err.contains("no xlb agent is running"), "{err}");
}

/// Issue 10, defect 6: with `--keep-on-exit` the programs stay attached
/// after the agent exits: `xlb status` says not running (exit 1) but lists
/// the kept interfaces, and `xlb services` warns that nothing updates the
/// maps. The next agent takes the links over and knows their XDP modes.
#[test]
fn status_after_keep_on_exit() {
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..1));
    let mut env = Env::start(1, &yaml, &["--keep-on-exit"]);
    let mut want_ifaces = env.topo.node_interfaces();
    want_ifaces.sort();
    let (_, before) = status_json(env.agent());
    let agent = stop_agent(&mut env);
    assert!(xdp_attached(&env.topo.node, "c0"), "--keep-on-exit keeps XDP on c0");
    let v = status_not_running(&agent);
    assert_eq!(names(&v), want_ifaces, "the kept interfaces: {v}");
    let (code, out, err) = services_table(&agent);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("dns"), "{out}");
    assert!(
        err.contains("no xlb agent is running") && err.contains("--keep-on-exit"),
        "xlb services with programs kept but no agent: {err:?}"
    );
    drop(agent);

    // The next agent takes the links over; their modes are carried on.
    env.start_agent(&[]);
    let (code, v) = status_json(env.agent());
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(names(&v), want_ifaces, "{v}");
    assert_eq!(v["attachments"], before["attachments"], "modes after the takeover: {v}\nbefore: {before}");
    stop_agent(&mut env);
    assert!(!xdp_attached(&env.topo.node, "c0"), "{}", ip_link(&env.topo.node, "c0"));
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Issue 10, defect 6: a reload that fails (an invalid file, SIGHUP) shows
/// in `/healthz` (still 200: restarting would not help, a liveness probe
/// must not kill the agent), in `/readyz` (503), in the metrics
/// `xlb_config_last_reload_success` (0) and `..._timestamp_seconds`
/// (unchanged) and in `xlb status`; a good reload clears it.
#[test]
fn failed_reload_shows_in_healthz_metrics_and_status() {
    let good = config(&dns_and_web(Fam::V4, "snat", 0..1));
    let mut env = Env::start(1, &good, &[]);
    let agent = env.agent();
    assert_eq!(agent.http_get("/healthz").expect("healthz"), (200, "ok\n".to_string()));
    let m = agent.metrics().expect("metrics");
    assert_eq!(metric(&m, "xlb_config_last_reload_success"), Some(1.0), "{m}");
    let ok_ts = metric(&m, "xlb_config_last_reload_success_timestamp_seconds").expect("timestamp metric");
    assert!(ok_ts > 1.0e9, "{m}");
    // The map metrics, read through the read-only view the agent keeps
    // across scrapes.
    for _ in 0..2 {
        let m = agent.metrics().expect("metrics");
        assert_eq!(metric(&m, "xlb_maps_readable"), Some(1.0), "{m}");
        assert!(m.lines().any(|l| l.starts_with("xlb_service_packets") && l.contains("service=\"")), "{m}");
    }

    env.config.write(&good.replace("port: 53", "port: 70000")).expect("write the bad file");
    env.agent_mut().reload().expect("SIGHUP");
    let agent = env.agent();
    let mut last = (0, String::new());
    let seen = wait_for(Duration::from_secs(10), || {
        last = agent.http_get("/healthz").unwrap_or_default();
        last.1.contains("reload failed")
    });
    assert!(seen, "/healthz after a failed reload: {last:?}\nlog:\n{}", agent.log());
    assert_eq!(last.0, 200, "/healthz stays 200 (liveness) after a failed reload: {last:?}");
    assert!(last.1.contains("70000"), "/healthz should say what failed: {last:?}");
    let ready = agent.http_get("/readyz").expect("readyz");
    assert_eq!(ready.0, 503, "/readyz after a failed reload: {ready:?}");
    let m = agent.metrics().expect("metrics");
    assert_eq!(metric(&m, "xlb_config_last_reload_success"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "xlb_config_last_reload_success_timestamp_seconds"), Some(ok_ts), "{m}");
    let mut st = Value::Null;
    let failed = wait_for(Duration::from_secs(5), || {
        st = status_json(agent).1;
        st["last_apply"]["result"] == "failed"
    });
    assert!(failed, "xlb status after a failed reload: {st}");
    assert_eq!(st["running"], true, "{st}");

    env.config.write(&good).expect("write the good file");
    env.agent_mut().reload().expect("SIGHUP");
    let agent = env.agent();
    let cleared = wait_for(Duration::from_secs(10), || {
        last = agent.http_get("/healthz").unwrap_or_default();
        last == (200, "ok\n".to_string())
    });
    assert!(cleared, "/healthz after a good reload: {last:?}");
    assert_eq!(agent.http_get("/readyz").expect("readyz").0, 200);
    let m = agent.metrics().expect("metrics");
    assert_eq!(metric(&m, "xlb_config_last_reload_success"), Some(1.0), "{m}");
}

/// Issue 10, defect 7: an agent started with `ip netns exec` (which
/// remounts /sys, hiding the host's bpffs) warns that its pins are private
/// and names the `nsenter --net=...` command to use instead.
#[test]
fn ip_netns_exec_is_detected_with_the_fix() {
    require_root();
    let topo = Topology::new(1).expect("topology");
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..1));
    let cfg = xlb_tests::ConfigFile::new(&topo, &yaml).expect("config file");
    let pin = PinDir::new().expect("pin dir");
    let port = topo
        .node
        .run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()))
        .expect("a free port")
        .port();
    let bin = xlb_binary().expect("xlb binary");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &topo.node.name])
        .arg(&bin)
        .args(["agent", "--config"])
        .arg(cfg.path())
        .arg("--pin-path")
        .arg(pin.path())
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
    for i in topo.node_interfaces() {
        cmd.args(["--interface", &i]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ip netns exec xlb agent");
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    let text = || log.lock().unwrap().clone();
    let warned = wait_for(Duration::from_secs(30), || {
        let t = text();
        t.contains("nsenter") || t.contains("xlb agent running") || matches!(child.try_wait(), Ok(Some(_)))
    });
    // Stop it (our child: `ip netns exec` execs the agent in place).
    if let Ok(None) = child.try_wait() {
        // SAFETY: our unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let t = text();
    assert!(warned, "the agent neither warned nor started within 30 s:\n{t}");
    let want = format!("nsenter --net=/var/run/netns/{}", topo.node.name);
    let line = t.lines().find(|l| l.contains("nsenter")).unwrap_or_default();
    assert!(
        line.contains("WARN") && line.contains(&want) && line.contains("ip netns exec"),
        "an agent started with `ip netns exec` should warn (WARN) and name `{want}`; its log:\n{t}"
    );
}
