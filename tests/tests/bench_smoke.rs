//! Smoke tests of the per-packet and control-plane benchmarks (`cargo xtask
//! bench datapath`, `cargo xtask bench control`), so that their code cannot
//! rot: each builds its program of the `xlb-bench-runner` package (bench/)
//! in release mode, runs it once in its tiny
//! configuration (`--tiny`: a few seconds) and checks only that it produced
//! numbers — every packet class measured with the verdict and counters its
//! path must give; the control-plane times, map memory and RSS non-zero,
//! and the same for the `xlb` agent run on the generated file —
//! and that it left no network namespace or pin directory behind. Speed is
//! not asserted.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{wait_bounded, workspace_root};
use serde_json::Value;

/// Builds the bench program and runs it with `--tiny --json FILE`; returns
/// the JSON it wrote. Also checks that its namespace and pins are gone.
fn run_tiny(example: &str, tag: &str, extra: &[std::ffi::OsString]) -> Value {
    xlb_tests::require_root().expect("the bench smoke tests must run as root");
    let build = xlb_tests::cargo::cargo(&workspace_root())
        .args(["build", "--quiet", "--release", "-p", "xlb-bench-runner", "--bin", example])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo");
    let (ok, _, err) = wait_bounded(build, Duration::from_mins(5), &format!("cargo build of {example}"));
    assert!(ok, "building the {example} bench program failed:\n{err}");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let bench = target.join("release").join(example);

    let json = std::env::temp_dir().join(format!("xlbt{}-{tag}-smoke.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let child = Command::new(&bench)
        .arg("--tiny")
        .arg("--json")
        .arg(&json)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", bench.display()));
    let pid = child.id();
    let (ok, out, err) = wait_bounded(child, Duration::from_mins(1), &format!("{example} --tiny"));
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    assert!(ok, "{example} --tiny failed\nstdout:\n{out}\nstderr:\n{err}");

    // Nothing left behind.
    let netns = format!("xlbbench-{tag}-{pid}");
    let list = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&list.stdout).lines().any(|l| l.split_whitespace().next() == Some(netns.as_str())),
        "{example} left its network namespace {netns}"
    );
    let pins = PathBuf::from(format!("/sys/fs/bpf/xlb-bench-{tag}-{pid}"));
    assert!(!pins.exists(), "{example} left its pin directory {}", pins.display());

    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{example} wrote no valid JSON ({e}): {text:?}\nstdout:\n{out}"))
}

fn number(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{v} has no number {key}"))
}

#[test]
fn datapath_bench_tiny_produces_numbers() {
    let report = run_tiny("datapath_bench", "dp", &[]);
    let rows = report["rows"].as_array().expect("rows");
    let classes: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "class").collect();
    let stages: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "stage").collect();
    assert!(classes.len() >= 18, "expected every packet class and min_fwd: {report:#}");
    assert!(!stages.is_empty(), "no per-stage rows: {report:#}");
    for want in ["min_fwd", "new flow", "established", "reply", "non-VIP", "malformed"] {
        assert!(
            classes.iter().any(|r| r["class"].as_str().unwrap_or("").contains(want)),
            "no {want} class: {report:#}"
        );
    }
    for r in rows {
        let class = r["class"].as_str().unwrap_or("");
        assert_eq!(r["ok"], true, "class failed its checks: {r}");
        assert!(number(r, "raw_ns") > 0.0, "no time measured: {r}");
        assert!(number(r, "base_ns") > 0.0, "no harness time measured: {r}");
        let verdict = if r["kind"] == "stage" || class.contains("non-VIP") {
            "XDP_PASS"
        } else if class.contains("malformed") {
            "XDP_DROP"
        } else {
            "XDP_REDIRECT"
        };
        assert_eq!(r["verdict"], verdict, "{r}");
    }
}

#[test]
fn control_bench_tiny_produces_numbers() {
    // The agent part too, with the xlb that `cargo xtask test` built.
    let xlb = xlb_tests::xlb_binary().expect("the xlb binary (cargo build --release -p lb-userspace)");
    let r = run_tiny("control_bench", "cp", &["--xlb".into(), xlb.into_os_string()]);
    assert_eq!(r["services"], 100, "{r:#}");
    for key in
        ["apply_empty_ms", "reapply_unchanged_ms", "change_median_ms", "change_max_ms", "maps_memlock_bytes", "rss_kib"]
    {
        assert!(number(&r, key) > 0.0, "{key} is not positive: {r:#}");
    }
    let maps = r["maps"].as_array().expect("maps");
    for name in ["XLB_SERVICES", "XLB_BACKENDS", "XLB_TABLE", "XLB_FLOWS"] {
        let m = maps.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("no map {name}: {r:#}"));
        assert!(number(m, "memlock") > 0.0, "{m}");
    }
    let agent = &r["agent"];
    for key in ["start_ms", "rss_kib", "reload_median_ms"] {
        assert!(number(agent, key) > 0.0, "agent {key} is not positive: {r:#}");
    }
}
