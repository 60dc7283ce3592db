//! What a new user gets wrong: the CLI on a closed pipe, and agent flags
//! that must be refused (exit 2) before anything is attached. Needs root.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use xlb_tests::{run_xlb, xlb_binary, Topology};

/// Issue 10, defect 3: every read command, its stdout closed by the reader
/// before it writes (`xlb flows -o json | true`), ends quietly: no panic
/// message and not Rust's panic exit code 101.
#[test]
fn read_commands_end_quietly_on_a_closed_pipe() {
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..2));
    let mut env = Env::start(2, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..2, UDP_BACKEND_PORT);
    // A few flows, so `flows` has rows to print.
    let ports: Vec<u16> = (0..10).map(|i| 27000 + i).collect();
    udp_flows_backends(&env, Fam::V4, &ports, vip4(53), &|i| Fam::V4.pod_gw(i));
    let bin = xlb_binary().expect("xlb binary");
    let pin = env.pin.path().display().to_string();
    let commands: [&[&str]; 7] = [
        &["flows", "-o", "json"],
        &["flows"],
        &["services", "-o", "json"],
        &["backends"],
        &["stats", "-o", "json"],
        &["maglev", "dns"],
        &["status"],
    ];
    let mut failures = Vec::new();
    for args in commands {
        let mut cmd = Command::new(&bin);
        cmd.args(args).args(["--pin-path", &pin]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = env.topo.node.spawn(&mut cmd).expect("spawn xlb");
        // Close the reading end at once: every write of the command fails
        // with EPIPE, as under `| true` or `| head -0`.
        drop(child.stdout.take());
        let stderr = child.stderr.take().expect("stderr pipe");
        let err_t = std::thread::spawn(move || {
            let mut v = String::new();
            let _ = std::io::Read::read_to_string(&mut { stderr }, &mut v);
            v
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = err_t.join().unwrap_or_default();
        match status {
            None => failures.push(format!("xlb {}: still running after 30 s", args.join(" "))),
            Some(s) if s.code() == Some(101) || stderr.contains("panicked") => {
                failures.push(format!("xlb {}: {s}, stderr: {stderr}", args.join(" ")));
            }
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "read commands on a closed pipe:\n{}", failures.join("\n"));
}

/// Issue 10, defect 4: flags that cannot work are refused with exit 2, a
/// message naming the flag, and no XDP program on any interface.
#[test]
fn bad_agent_flags_exit_2_before_attaching() {
    require_root();
    let topo = Topology::new(1).expect("topology");
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..1));
    let cfg = xlb_tests::ConfigFile::new(&topo, &yaml).expect("config file");
    let pin = xlb_tests::PinDir::new().expect("pin dir");
    let ifaces = topo.node_interfaces();
    // A port of the node namespace's loopback that is taken for the whole test.
    let busy =
        topo.node.run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).expect("bind a port in the node namespace");
    let busy_addr = busy.local_addr().unwrap().to_string();
    let free_port = topo
        .node
        .run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()))
        .expect("a free port")
        .to_string();
    let file = std::env::temp_dir().join(format!("{}-regular-file", topo.prefix));
    std::fs::write(&file, b"not a directory").unwrap();
    let dir = std::env::temp_dir().join(format!("{}-plain-dir", topo.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let pin_s = pin.path().display().to_string();
    let cfg_s = cfg.path().display().to_string();

    // (what, extra args, words the message must contain)
    let file_mode = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec!["agent".into(), "--config".into(), cfg_s.clone()];
        a.extend(extra.iter().map(std::string::ToString::to_string));
        a
    };
    let defaults = |mut a: Vec<String>, pin: bool, metrics: bool| -> Vec<String> {
        for i in &ifaces {
            a.push("--interface".into());
            a.push(i.clone());
        }
        if pin {
            a.extend(["--pin-path".into(), pin_s.clone()]);
        }
        if metrics {
            a.extend(["--metrics-addr".into(), free_port.clone()]);
        }
        a
    };
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "kubeconfig that does not exist",
            defaults(
                vec![
                    "agent".into(),
                    "--kubernetes".into(),
                    "--node-name".into(),
                    "node-1".into(),
                    "--kubeconfig".into(),
                    "/nonexistent/kubeconfig".into(),
                ],
                true,
                true,
            ),
            vec!["--kubeconfig", "/nonexistent/kubeconfig"],
        ),
        (
            "metrics address in use",
            defaults(file_mode(&["--metrics-addr", &busy_addr]), true, false),
            vec!["--metrics-addr", &busy_addr],
        ),
        (
            "pin path on a regular file",
            defaults(file_mode(&["--pin-path", &file.display().to_string()]), false, true),
            vec!["--pin-path", "not a directory"],
        ),
        (
            "pin path on a directory that is not a bpffs",
            defaults(file_mode(&["--pin-path", &dir.display().to_string()]), false, true),
            vec!["--pin-path", "bpffs"],
        ),
        ("flow table of 0", defaults(file_mode(&["--flow-table-size", "0"]), true, true), vec!["--flow-table-size"]),
        ("flow table of 1", defaults(file_mode(&["--flow-table-size", "1"]), true, true), vec!["--flow-table-size"]),
        (
            "flow table of 2^32-1",
            defaults(file_mode(&["--flow-table-size", "4294967295"]), true, true),
            vec!["--flow-table-size"],
        ),
        (
            "unknown log level",
            defaults(file_mode(&["--log-level", "warning"]), true, true),
            vec!["--log-level", "warning"],
        ),
        ("no mode", defaults(vec!["agent".into()], true, true), vec!["--config", "--kubernetes"]),
    ];
    let mut failures = Vec::new();
    for (what, args, words) in &cases {
        let out = run_xlb(&topo.node, args, Duration::from_secs(20)).expect("run xlb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let attached: Vec<&String> = ifaces.iter().filter(|i| xdp_attached(&topo.node, i)).collect();
        let missing: Vec<&&str> = words.iter().filter(|w| !stderr.contains(**w)).collect();
        if out.status.code() != Some(2) || !missing.is_empty() || !attached.is_empty() {
            failures.push(format!(
                "{what} (xlb {}): {}; message lacks {missing:?}; XDP attached to {attached:?}; stderr:\n{stderr}",
                args.join(" "),
                out.status
            ));
        }
    }
    drop(busy);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

/// The five levels and directives stay accepted (the agent starts).
#[test]
fn log_levels_and_directives_are_accepted() {
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..1));
    let mut env = Env::new(1, &yaml);
    for level in ["warn", "info,xlb=debug"] {
        env.start_agent(&["--log-level", level]);
        let status = env.agent.take().unwrap().stop().expect("stop");
        assert_eq!(status.code(), Some(0), "--log-level {level}");
    }
}

/// SIGTERM while the agent is still starting (maps loaded, programs not yet
/// attached) is not fatal: the agent finishes starting, then stops cleanly
/// (exit 0, nothing left attached). Found with the test above: stopping an
/// agent right after /healthz turned 200 killed it by the signal's default
/// action, the handlers being installed only later.
#[test]
fn sigterm_during_start_up_exits_0_and_detaches() {
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..1));
    let env = Env::new(1, &yaml);
    let mut agent =
        xlb_tests::Agent::spawn(&env.topo, env.config.path(), env.pin.path(), &[]).expect("spawn the agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.log().contains("configuration applied") && Instant::now() < deadline && agent.try_status().is_none() {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(agent.log().contains("configuration applied"), "the agent did not get that far:\n{}", agent.log());
    agent.signal(libc::SIGTERM).expect("SIGTERM");
    let status = agent.wait_exit(Duration::from_secs(30)).expect("the agent exits");
    assert_eq!(status.code(), Some(0), "SIGTERM during start-up: {status}; log:\n{}", agent.log());
    for i in env.topo.node_interfaces() {
        assert!(!xdp_attached(&env.topo.node, &i), "{}", ip_link(&env.topo.node, &i));
    }
}

/// `xlb trace` with a CLIENT and a VIP of different address families is a
/// usage error (exit 2) that says what to write, before any map is opened.
#[test]
fn trace_refuses_mixed_address_families() {
    let bin = xlb_binary().expect("xlb binary");
    for args in [
        ["trace", "udp", "10.0.0.7:5353", "[2001:db8::100]:53"].as_slice(),
        &["trace", "udp", "[2001:db8::7]:5353", "10.0.0.100:53"],
        &["trace", "udp", "10.0.0.7:5353", "10.0.0.100:53", "--reply", "[fd00::2]:53"],
    ] {
        let out = Command::new(&bin).args(args).args(["--pin-path", "/nonexistent/xlb"]).output().expect("run xlb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("one address family"), "{args:?}: {stderr}");
    }
}

/// `xlb trace --batch`: a line it cannot read is a usage error (exit 2)
/// naming the file's line, before any map is opened; so is --batch beside
/// a packet on the command line, or neither.
#[test]
fn trace_batch_usage_errors() {
    let bin = xlb_binary().expect("xlb binary");
    let dir = std::env::temp_dir().join(format!("xlb-usage-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let file = dir.join("batch.txt");
    let cases: [(&str, &[&str], &str); 5] = [
        ("udp 10.0.0.7:5353 10.0.0.100:53\nsctp 10.0.0.7:1 10.0.0.100:53\n", &[], "line 2"),
        ("# only a comment\nudp 10.0.0.7 10.0.0.100:53\n", &[], "line 2"),
        ("udp 10.0.0.7:5353 [2001:db8::100]:53\n", &[], "one address family"),
        ("udp 10.0.0.7:5353 10.0.0.100:53\n", &["udp", "10.0.0.7:1", "10.0.0.100:53"], "cannot be used with"),
        ("", &[], "no packet to trace"),
    ];
    for (text, extra, want) in cases {
        std::fs::write(&file, text).expect("write the batch file");
        let out = Command::new(&bin)
            .arg("trace")
            .arg("--batch")
            .arg(&file)
            .args(extra)
            .args(["--pin-path", "/nonexistent/xlb"])
            .output()
            .expect("run xlb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?} {extra:?}: {stderr}");
        assert!(stderr.contains(want), "{text:?} {extra:?}: {stderr}");
    }
    let out = Command::new(&bin).args(["trace", "--pin-path", "/nonexistent/xlb"]).output().expect("run xlb");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
