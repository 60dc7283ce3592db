//! Smoke test of the forwarding benchmark (`cargo xtask bench forward`), so
//! its code cannot rot: builds `forward_bench` of the `xlb-bench-runner`
//! package (bench/src/bin/forward_bench/) in release mode, runs its
//! `--quick` mode once (1 run, ~0.7 s slices, about 15 s)
//! and checks only that it produced numbers: the JSON parses, the minimal
//! forwarder and both xlb rows delivered packets, and the TCP rows through
//! xlb completed connections and requests. Speed is not asserted.
//!
//! Tests install nothing: when `nft` or nginx's stream module is missing on
//! the machine (CI), the bench skips those rows by itself and lists them
//! under "skipped"; whatever rows it did measure must have numbers. The
//! bench removes its namespaces, pins and files itself (also on SIGTERM,
//! which this test sends if it overruns).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{wait_bounded, workspace_root};
use serde_json::Value;

fn number(row: &Value, key: &str) -> f64 {
    row[key].as_f64().unwrap_or_else(|| panic!("row {row} has no number {key}"))
}

#[test]
fn forward_bench_quick_produces_numbers() {
    xlb_tests::require_root().expect("the forwarding bench smoke test must run as root");
    let xlb = xlb_tests::xlb_binary().expect("the xlb binary (cargo build --release -p lb-userspace)");
    let build = xlb_tests::cargo::cargo(&workspace_root())
        .args(["build", "--quiet", "--release", "-p", "xlb-bench-runner", "--bin", "forward_bench"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo");
    let (ok, _, err) = wait_bounded(build, Duration::from_mins(5), "cargo build of forward_bench");
    assert!(ok, "building forward_bench failed:\n{err}");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let bench = target.join("release/forward_bench");

    // The bench's own stale cleanup removes this file if we die before it.
    let json = std::env::temp_dir().join(format!("xlbt{}-fwd-smoke.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let child = Command::new(&bench)
        .arg("--quick")
        .arg("--xlb")
        .arg(&xlb)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run forward_bench");
    let (ok, out, err) = wait_bounded(child, Duration::from_mins(2), "forward_bench --quick");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    assert!(ok, "forward_bench --quick failed\nstdout:\n{out}\nstderr:\n{err}");
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("forward_bench wrote no valid JSON ({e}): {text:?}\nstdout:\n{out}"));

    let udp = report["udp"].as_array().expect("udp rows");
    for key in [
        "generator",
        "min_fwd",
        "xlb_snat",
        "xlb_preserve",
        "min_fwd_new_flows",
        "xlb_preserve_new_flows",
        "xlb_preserve_flows_of_10",
        "xlb_untracked_new_flows",
    ] {
        assert!(udp.iter().any(|r| r["case"] == key), "no UDP row {key}: {report:#}");
    }
    for row in udp {
        assert!(number(row, "offered_pps") > 0.0, "nothing offered: {row}");
        assert!(number(row, "delivered_pps") > 0.0, "nothing delivered: {row}");
    }
    let tcp = report["tcp"].as_array().expect("tcp rows");
    for key in ["xlb_snat", "xlb_preserve"] {
        let row = tcp.iter().find(|r| r["case"] == key).unwrap_or_else(|| panic!("no TCP row {key}: {report:#}"));
        assert!(number(row, "connections_per_s") > 0.0, "no TCP connection: {row}");
        assert!(number(row, "requests_per_s") > 0.0, "no TCP request: {row}");
    }
    for s in report["skipped"].as_array().into_iter().flatten() {
        eprintln!("forward bench skipped {}: {}", s["case"], s["reason"]);
    }
}
