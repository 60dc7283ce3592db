//! `cargo xtask bench forward` runs this (release mode, as root): forwarding
//! throughput of xlb against a minimal XDP forwarder, nftables DNAT and a
//! userspace UDP proxy (nginx `stream`), plus TCP connection-setup and
//! request/response rates through xlb and nftables DNAT.
//!
//! Topology (network namespaces `xlbt<pid>-fwd-*`, removed at exit):
//!
//! ```text
//!  gen ns                     lb ns                                be<i> ns (i = 0, 1)
//!  g0 10.200.0.2 <-> l0 10.200.0.1  min_fwd (XDP)  -> b0/b1 -> eth0 10.1.<i>.2  sink (XDP)
//!  g1 10.200.1.2 <-> l1 10.200.1.1  xlb agent (XDP) -> b0/b1 -> eth0
//!  g2 10.200.2.2 <-> l2 10.200.2.1  kernel: nft DNAT / nginx -> b2/b3 -> eth1 10.2.<i>.2  sink (XDP)
//!  g3 10.200.3.2 <-> l3             sink (XDP): the generator's ceiling
//! ```
//!
//! The generator runs with `BPF_PROG_RUN` in live-frame mode on g<x>
//! (XDP_TX into the peer l<x>) from a thread pinned to CPU 0: `gen_full`
//! (lb-ebpf/src/bin/xlb-bench.rs) writes the whole header of every frame
//! and a new UDP source port, because pages recycled within one call keep
//! the bytes the forwarder rewrote (`gen`, which only sets the port, stays
//! available as `--generator bench-gen`). Every l<x> runs
//! threaded NAPI with its kthread pinned to CPU 1, so the forwarder (and the
//! backends' receive path it triggers) runs there; the generator, the NAPI
//! kthreads and nginx's worker run at nice -20. Backends count what they
//! receive with `sink` (XDP_DROP) on their veths.
//!
//! Each forwarder has its own ingress veth (and VIP), so switching between
//! them costs nothing: runs are made of interleaved short slices.
//!
//! Usage: `forward_bench --help`. It installs nothing: without `nft` or
//! nginx's stream module those rows are skipped (and listed as skipped).
//! docs/BENCHMARKS.md ("Forwarding") describes the method and its limits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use serde_json::{json, Value};
use xlb_bench::median;
use xlb_bench::stop::{check_stop, stopped};
use xlb_bench::table::{markdown_table, print_table};

use crate::bench::Bench;
use crate::cases::{Case, CHURN_POOL};
use crate::options::{Args, Plan};
use crate::report::{counter_delta, fmt_pps, fmt_ratio, num, plan_runs, targets, udp_rows, TCP_HEADER, UDP_HEADER};
use crate::sys::{cpu_busy, progress};
use crate::topology::{cleanup_stale, FRAME_LEN, FWD_CPU, GEN_CPU};

mod bench;
mod cases;
mod options;
mod proc;
mod programs;
mod report;
mod sys;
mod topology;

fn main() {
    let args = Args::parse();
    xlb_bench::stop::catch_signals();
    match real_main(args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("forward_bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn real_main(args: Args) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the forwarding bench needs root (network namespaces, XDP, BPF_PROG_RUN)");
    }
    let plan = Plan {
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        slice: Duration::from_millis(args.slice_ms.unwrap_or(if args.quick { 700 } else { 1000 }).max(50)),
        warmup: Duration::from_millis(args.warmup_ms.unwrap_or(if args.quick { 150 } else { 300 })),
        batch: args.batch,
        frames_per_call: args.frames_per_call,
        bench_gen: args.generator == "bench-gen",
        ports: args.ports,
    };
    let method = json!({
        "runs": plan.runs,
        "rounds_per_run": plan.rounds,
        "slice_ms": plan.slice.as_millis() as u64,
        "warmup_ms": plan.warmup.as_millis() as u64,
        "frame_bytes_on_wire": FRAME_LEN + 4,
        "live_frame_batch": plan.batch,
        "source_ports": if plan.bench_gen { 60000 } else { plan.ports },
        "generator": if plan.bench_gen { "gen (source port only)" } else { "gen_full (full-header rewrite)" },
        "churn_tuples": CHURN_POOL,
        "generator_cpu": GEN_CPU,
        "forwarder_cpu": FWD_CPU,
    });
    let machine = xlb_bench::machine::Machine::read().json();
    println!(
        "forwarding bench: {} runs x {} interleaved rounds, {} ms slices (+{} ms warm-up), 64-byte UDP frames, {} source ports",
        plan.runs,
        plan.rounds,
        plan.slice.as_millis(),
        plan.warmup.as_millis(),
        if plan.bench_gen { 60000 } else { plan.ports }
    );
    println!(
        "machine: {} ({} CPUs{}), kernel {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        if machine["virtual_machine"] == json!(true) { ", VM" } else { "" },
        machine["kernel"].as_str().unwrap_or("?")
    );
    cleanup_stale();
    let mut busy = cpu_busy(Duration::from_millis(500));
    if busy > 0.15 && args.wait_quiet > 0 {
        println!("the machine is {:.0}% busy: waiting up to {} s for it to quieten", busy * 100.0, args.wait_quiet);
        let deadline = Instant::now() + Duration::from_secs(args.wait_quiet);
        while busy > 0.15 && Instant::now() < deadline && !stopped() {
            busy = cpu_busy(Duration::from_secs(1));
        }
        check_stop()?;
    }
    let busy_note = (busy > 0.15).then(|| {
        format!(
            "the machine was {:.0}% busy before the bench started: other work competes with the generator and the forwarders, expect noisier numbers",
            busy * 100.0
        )
    });
    if let Some(n) = &busy_note {
        println!("warning: {n}");
    }
    let started = Instant::now();
    let mut bench = Bench::setup(plan, &args)?;
    let mut xlb_counters = serde_json::Map::new();
    let s0 = bench.xlb_stats();
    let udp = if args.no_udp {
        BTreeMap::new()
    } else {
        println!("UDP flood (the generator's frames, counted by XDP_DROP sinks on the backends):");
        bench.udp_phase()?
    };
    let s1 = bench.xlb_stats();
    let tcp = if args.no_tcp {
        BTreeMap::new()
    } else {
        println!("TCP (one client in the generator namespace, sequential):");
        bench.tcp_phase()?
    };
    let s2 = bench.xlb_stats();
    for (phase, a, b, ran) in [("udp", &s0, &s1, !args.no_udp), ("tcp", &s1, &s2, !args.no_tcp)] {
        if !ran {
            continue;
        }
        let d = counter_delta(a, b);
        let bad: Vec<String> = d
            .iter()
            .filter(|(k, v)| **v > 0 && (k.starts_with("drop_") || k.ends_with("_failed") || k.starts_with("reject_")))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !bad.is_empty() {
            bench.notes.push(format!("xlb counters during the {phase} phase: {}", bad.join(", ")));
        }
        xlb_counters.insert(phase.into(), json!(d));
    }
    let bpf_costs = std::mem::take(&mut bench.bpf_costs);
    let skipped = std::mem::take(&mut bench.skipped);
    let nproc = bench.nproc as f64;
    let tcp_failed = bench.tcp_failed.clone();
    let bench_retried = bench.retried;
    let mut notes = std::mem::take(&mut bench.notes);
    notes.extend(busy_note);
    if bench_retried > 0 {
        notes.push(format!(
            "{bench_retried} slice(s) were measured again because other processes used over 10% of the CPUs"
        ));
    }
    let (foreign, cpu_secs) = udp.values().flatten().fold((0.0, 0.0), |(f, c), s| (f + s.foreign, c + s.secs * nproc));
    let foreign_share = if cpu_secs > 0.0 { foreign / cpu_secs } else { 0.0 };
    if foreign_share > 0.03 {
        notes.push(format!(
            "other processes used {:.0}% of the CPUs during the measured UDP slices (they compete with the generator and the forwarders)",
            foreign_share * 100.0
        ));
    }
    for (c, n) in &bench.tcp_failed {
        if *n > 0 {
            notes.push(format!("TCP {}: {n} connection attempt(s) failed or timed out (1 s each)", c.label()));
        }
    }
    progress("cleaning up (agent, nginx, programs, namespaces)");
    drop(bench);

    // ---- UDP table
    let rows = udp_rows(&udp);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let vs = |c: Case| r.vs.get(&c).map_or_else(|| "-".into(), |v| fmt_ratio(*v));
            vec![
                r.case.label().to_string(),
                fmt_pps(r.offered),
                fmt_pps(r.delivered),
                format!("{:.3}", r.ratio_offered),
                vs(Case::MinFwd),
                vs(Case::Nft),
                vs(Case::Nginx),
                if r.case == Case::Ceiling {
                    "-".into()
                } else {
                    format!("{:.0}/{:.0}%", r.backend0_share * 100.0, (1.0 - r.backend0_share) * 100.0)
                },
            ]
        })
        .collect();
    let tcp_rows: Vec<Vec<String>> = tcp
        .iter()
        .map(|(c, runs)| {
            let vs = |i: usize| match tcp.get(&Case::Nft) {
                Some(n) if *c != Case::Nft => fmt_ratio(median(
                    runs.iter().zip(n).map(|(a, b)| if i == 0 { a.0 / b.0 } else { a.1 / b.1 }).collect(),
                )),
                _ => "-".into(),
            };
            vec![
                c.label().to_string(),
                format!("{:.0}", median(runs.iter().map(|r| r.0).collect())),
                format!("{:.0}", median(runs.iter().map(|r| r.1).collect())),
                vs(0),
                vs(1),
            ]
        })
        .collect();
    let tg = targets(&udp);

    println!();
    println!("==> forwarding summary (median of {} runs; ratios are medians of per-run ratios)", plan_runs(&method));
    if !udp.is_empty() {
        print_table(&UDP_HEADER, &cells);
    }
    if !tcp.is_empty() {
        println!();
        print_table(&TCP_HEADER, &tcp_rows);
    }
    if !tg.is_empty() {
        println!();
        println!("targets:");
        for (what, target, v) in &tg {
            println!(
                "  {what:<34} {:>8}  (target >= {target}x)  {}",
                fmt_ratio(*v),
                if *v >= *target { "met" } else { "NOT met" }
            );
        }
    }
    if !bpf_costs.is_empty() {
        println!();
        println!("XDP program cost per run (kernel BPF statistics, measured slices):");
        let mut last = None;
        for ((c, label), (ns, runs)) in &bpf_costs {
            if last != Some(*c) {
                print!("{}{:<32}", if last.is_some() { "\n" } else { "" }, c.label());
                last = Some(*c);
            }
            print!("  {label} {:.0} ns", *ns as f64 / *runs as f64);
        }
        println!();
    }
    for (c, why) in &skipped {
        println!("skipped {c}: {why}");
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());

    let report = json!({
        "benchmark": "forward",
        "machine": machine,
        "method": method,
        "udp": rows.iter().map(|r| json!({
            "case": r.case.key(),
            "label": r.case.label(),
            "offered_pps": num(r.offered),
            "delivered_pps": num(r.delivered),
            "delivered_over_offered": num(r.ratio_offered),
            "vs_min_fwd": r.vs.get(&Case::MinFwd).copied().map_or(Value::Null, num),
            "vs_nft_dnat": r.vs.get(&Case::Nft).copied().map_or(Value::Null, num),
            "vs_nginx_udp_proxy": r.vs.get(&Case::Nginx).copied().map_or(Value::Null, num),
            "backend0_share": num(r.backend0_share),
            "other_processes_cpu_share": num(median(r.runs.iter().map(|s| s.foreign / (s.secs * nproc)).collect())),
            "generator_busy_share": num(median(r.runs.iter().map(|s| s.gen_busy / s.secs).collect())),
            "runs": r.runs.iter().map(|s| json!({"offered_pps": num(s.offered_pps()), "delivered_pps": num(s.delivered_pps()), "seconds": num(s.secs)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "tcp": tcp.iter().map(|(c, runs)| json!({
            "case": c.key(),
            "label": c.label(),
            "connections_per_s": num(median(runs.iter().map(|r| r.0).collect())),
            "requests_per_s": num(median(runs.iter().map(|r| r.1).collect())),
            "failed_connection_attempts": tcp_failed.get(c).copied().unwrap_or(0),
            "runs": runs.iter().map(|r| json!({"connections_per_s": num(r.0), "requests_per_s": num(r.1)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "targets": tg.iter().map(|(w, t, v)| json!({"ratio": w, "target": t, "value": num(*v), "met": *v >= *t})).collect::<Vec<_>>(),
        "xlb_counters": xlb_counters,
        "other_processes_cpu_share": num(foreign_share),
        "bpf_ns_per_run": bpf_costs.iter().fold(serde_json::Map::new(), |mut m, ((c, label), (ns, runs))| {
            let e = m.entry(c.key().to_string()).or_insert_with(|| json!({}));
            e[*label] = num(*ns as f64 / *runs as f64);
            m
        }),
        "skipped": skipped.iter().map(|(c, w)| json!({"case": c, "reason": w})).collect::<Vec<_>>(),
        "notes": notes,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!();
    println!("JSON:");
    println!("{text}");
    args.out.write_json(&report)?;
    args.out.write_markdown(|| {
        let mut md = String::new();
        md += &format!(
            "Machine: {} ({} CPUs{}), kernel {}. {} runs x {} interleaved rounds of {} ms slices (+{} ms warm-up); medians.\n\n",
            report["machine"]["cpu"].as_str().unwrap_or("?"),
            report["machine"]["cpus"],
            if report["machine"]["virtual_machine"] == json!(true) { ", VM" } else { "" },
            report["machine"]["kernel"].as_str().unwrap_or("?"),
            report["method"]["runs"],
            report["method"]["rounds_per_run"],
            report["method"]["slice_ms"],
            report["method"]["warmup_ms"],
        );
        if !udp.is_empty() {
            md += &markdown_table(&UDP_HEADER, &cells);
        }
        if !tcp.is_empty() {
            md += "\n";
            md += &markdown_table(&TCP_HEADER, &tcp_rows);
        }
        if !tg.is_empty() {
            md += "\n| target | value | target | met |\n|---|---:|---:|---|\n";
            for (w, t, v) in &tg {
                md += &format!("| {w} | {} | ≥ {t}x | {} |\n", fmt_ratio(*v), if *v >= *t { "yes" } else { "**no**" });
            }
        }
        for (c, why) in &skipped {
            md += &format!("\nSkipped {c}: {why}\n");
        }
        md
    })?;
    Ok(())
}
