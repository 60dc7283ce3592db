//! Smoke tests of `cargo xtask demo`, run as a user runs it (`cargo xtask
//! demo --no-build`, on the `xlb` under test: `$XLB_BIN`, which `cargo xtask
//! test` sets to the binary it has just built), so that the demo cannot rot: it must succeed, print what
//! it promises, and leave no network namespace or pin directory behind.
//! The plain demo routes its VIP to the node; `--l2` puts the VIP in the
//! client's subnet and the agent announces it (`--announce l2`), and the
//! demo must show the gratuitous ARP, `xlb status`'s announced VIPs, the
//! client's neighbour entry with the node's MAC and the node's `arp_reply`
//! counter. The demo checks each of those itself and fails otherwise; this
//! test checks its output as well. Needs root (CI runs it as root).

use std::process::Stdio;
use std::time::Duration;

mod common;

use common::{wait_bounded, workspace_root};

/// Runs `cargo xtask demo --no-build EXTRA...`; returns its stdout after
/// checking that it succeeded and removed its namespaces and pins.
fn run_demo(extra: &[&str]) -> String {
    xlb_tests::require_root().expect("the demo smoke tests must run as root");
    let xlb = xlb_tests::xlb_binary().expect("the xlb binary to run the demo with");
    let child = xlb_tests::cargo::cargo(&workspace_root())
        .args(["xtask", "demo", "--no-build"])
        .args(extra)
        .env("XLB_BIN", &xlb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo xtask demo");
    let what = format!("cargo xtask demo --no-build {}", extra.join(" "));
    let (ok, out, err) = wait_bounded(child, Duration::from_mins(10), &what);
    assert!(ok, "`{what}` failed\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("demo finished; everything it created has been removed"), "{out}");

    // Nothing left behind: its namespaces (`xlbt<pid>-<n>-...`) and pins (`xlb-demo-<pid>`).
    let prefix = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("namespaces"))
        .and_then(|rest| rest.trim().split('{').next())
        .unwrap_or_else(|| panic!("the demo did not print its namespaces:\n{out}"))
        .to_string();
    assert!(prefix.starts_with("xlbt") && prefix.ends_with('-'), "namespace prefix {prefix:?}");
    let list = xlb_tests::run_cmd("ip", &["netns", "list"]).expect("ip netns list");
    let left: Vec<String> =
        String::from_utf8_lossy(&list.stdout).lines().filter(|l| l.starts_with(&prefix)).map(String::from).collect();
    assert!(left.is_empty(), "the demo left namespaces behind: {left:?}");
    let pins = out
        .lines()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "--pin-path").nth(1))
        .unwrap_or_else(|| panic!("the demo did not print its pin path:\n{out}"));
    assert!(pins.starts_with("/sys/fs/bpf/xlb-demo-"), "pin path {pins}");
    assert!(!std::path::Path::new(pins).exists(), "the demo left its pins {pins}");
    out
}

/// The value after `key` on the first line that starts with it (trimmed).
fn after<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::trim)
}

/// Every pod got UDP and TCP requests (the rows of "replies per backend").
fn assert_spread(out: &str) {
    for pod in ["pod0", "pod1", "pod2"] {
        let row = out
            .lines()
            .skip_while(|l| !l.contains("replies per backend"))
            .find(|l| l.split_whitespace().next() == Some(pod))
            .unwrap_or_else(|| panic!("no row for {pod} in the spread:\n{out}"));
        let counts: Vec<u64> = row.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        assert!(counts.len() >= 2 && counts[0] > 0 && counts[1] > 0, "{pod} got no UDP or no TCP: {row:?}");
    }
}

#[test]
fn demo_routes_the_vip_and_spreads() {
    let out = run_demo(&[]);
    assert!(out.contains("VIP          192.0.2.10 (routed to the node"), "{out}");
    assert!(out.contains("sending 300 UDP requests to 192.0.2.10:53"), "{out}");
    assert!(!out.contains("--announce"), "the plain demo announces nothing:\n{out}");
    assert!(!out.contains("gratuitous ARP"), "{out}");
    assert_spread(&out);
}

#[test]
fn demo_l2_announces_the_vip_on_the_clients_segment() {
    let out = run_demo(&["--l2"]);
    let vip = "10.100.0.100";
    assert!(out.contains(&format!("VIP          {vip} (in the client's subnet")), "{out}");
    assert!(out.contains("--announce l2 --announce-interface c0"), "{out}");
    // No route of its own: on the client's link, no gateway.
    let route = after(&out, &format!("{vip} dev eth0")).unwrap_or_else(|| panic!("no `ip route get`:\n{out}"));
    assert!(!route.contains("via"), "{route}");

    let node_mac = after(&out, "node uplink  c0 MAC")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no node MAC:\n{out}"));
    let garps: u64 = out
        .lines()
        .find(|l| l.contains("gratuitous ARP(s) in the agent's first"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no gratuitous ARP count:\n{out}"));
    assert!(garps >= 1, "{out}");
    assert!(out.contains(&format!("who-has {vip} tell {vip}, from {node_mac}")), "{out}");
    assert_eq!(after(&out, "announced VIPs:"), Some(vip), "{out}");
    let neigh = after(&out, &format!("{vip} lladdr")).unwrap_or_else(|| panic!("no neighbour entry:\n{out}"));
    assert_eq!(neigh.split_whitespace().next(), Some(node_mac), "the client's entry for {vip}: {neigh}");
    let arp_reply: u64 =
        after(&out, "arp_reply").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no arp_reply counter:\n{out}"));
    assert!(arp_reply >= 1, "{out}");
    assert!(out.contains(&format!("sending 300 UDP requests to {vip}:53")), "{out}");
    assert_spread(&out);
}
