//! Hostile configuration files: a "billion laughs" file of nested YAML
//! aliases (a few hundred bytes that expand to hundreds of millions of
//! nodes) is refused with a `FILE:LINE: FIELD: MESSAGE` line, quickly and in
//! a few MB: exit 2 at start, the running configuration kept on reload.
//! Needs root.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use xlb_tests::{reply_tag, udp_request, xlb_binary};

/// Nine lists of nine aliases to the list before: 9^9 (387 million) nodes
/// once expanded, 350 bytes on disk.
fn bomb() -> String {
    let mut text = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..9 {
        let p = format!("*a{}", i - 1);
        text.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 9].join(",")));
    }
    text
}

/// The start of the agent's error about [`bomb`] in the file of `env`.
fn bomb_error(env: &Env) -> String {
    let file = file_name(env.config.path());
    format!("{file}:5: yaml: aliases expand to more than")
}

/// The agent's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

/// Most the agent may grow while refusing the bomb.
const BOMB_BUDGET_KIB: u64 = 32 << 10;

#[test]
fn alias_bomb_at_start_exits_2_quickly_and_small() {
    let env = Env::new(1, &bomb());
    let bin = xlb_binary().expect("xlb binary");
    let mut cmd = Command::new(bin);
    cmd.arg("agent")
        .arg("--config")
        .arg(env.config.path())
        .arg("--pin-path")
        .arg(env.pin.path())
        .arg("--metrics-addr")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for ifname in env.topo.node_interfaces() {
        cmd.arg("--interface").arg(ifname);
    }
    let started = Instant::now();
    let mut child = env.topo.node.spawn(&mut cmd).expect("spawn the agent");
    let pid = child.id() as libc::pid_t;
    let (_out, err) = xlb_tests::read_pipes(&mut child).expect("pipes");
    // Reap with wait4 to read the child's own peak memory; bounded wait.
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let deadline = started + Duration::from_secs(20);
    loop {
        // SAFETY: waiting on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if Instant::now() > deadline {
            // SAFETY: our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
            panic!("the agent was still reading the alias bomb after 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let log = String::from_utf8_lossy(&err.join().expect("stderr")).into_owned();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 2,
        "the agent should exit 2 on the alias bomb; wait status {status:#x}; stderr:\n{log}"
    );
    let needle = bomb_error(&env);
    assert!(log.contains(&needle), "no {needle:?} in stderr:\n{log}");
    assert!(elapsed < Duration::from_secs(3), "refusing the bomb took {elapsed:?}");
    // ru_maxrss is in KiB on Linux.
    assert!(
        (usage.ru_maxrss as u64) < BOMB_BUDGET_KIB,
        "the agent grew to {} KiB refusing a {}-byte file",
        usage.ru_maxrss,
        bomb().len()
    );
}

#[test]
fn alias_bomb_on_reload_keeps_the_running_config() {
    let mut env = Env::start(1, &config(&[dns(0..1)]), &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..1, UDP_BACKEND_PORT);
    let vip = vip4(53);
    warm_up_udp(&env, vip);
    let pid = env.agent().pid().expect("agent pid");
    let before = peak_rss_kib(pid);

    env.config.write(&bomb()).expect("write the bomb");
    let needle = bomb_error(&env);
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = |log: String| log.contains(&needle) && log.contains("keeping the running one");
    while !refused(env.agent().log()) {
        assert!(env.agent_mut().try_status().is_none(), "the agent exited on the alias bomb:\n{}", env.agent().log());
        assert!(
            Instant::now() < deadline,
            "no {needle:?} and \"keeping the running one\" in the log within 10 s:\n{}",
            env.agent().log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let grown = peak_rss_kib(pid).saturating_sub(before);
    assert!(grown < BOMB_BUDGET_KIB, "the agent grew by {grown} KiB reading the bomb");
    // Still running and still serving.
    assert!(env.agent_mut().try_status().is_none(), "{}", env.agent().log());
    let (reply, _) = udp_request(&env.topo.client, None, vip, b"after", T)
        .unwrap_or_else(|e| panic!("the VIP stopped answering after the bomb: {e:#}\n{}", env.diag()));
    assert_eq!(reply_tag(&reply), "pod0", "{reply}");
}
