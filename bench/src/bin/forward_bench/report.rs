//! The summary: tables, JSON and Markdown.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use xlb_bench::median;

use crate::cases::{Case, Sample};

pub(crate) fn fmt_pps(pps: f64) -> String {
    if !pps.is_finite() {
        "-".into()
    } else if pps >= 1e6 {
        format!("{:.2} M", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} k", pps / 1e3)
    } else {
        format!("{pps:.0}")
    }
}

pub(crate) fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

pub(crate) fn num(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

pub(crate) struct UdpRow {
    pub(crate) case: Case,
    pub(crate) offered: f64,
    pub(crate) delivered: f64,
    pub(crate) ratio_offered: f64,
    pub(crate) vs: BTreeMap<Case, f64>,
    pub(crate) backend0_share: f64,
    pub(crate) runs: Vec<Sample>,
}

/// Median over runs of the per-run ratio delivered(a) / delivered(b).
pub(crate) fn run_ratio(udp: &BTreeMap<Case, Vec<Sample>>, a: Case, b: Case) -> f64 {
    match (udp.get(&a), udp.get(&b)) {
        (Some(x), Some(y)) => median(x.iter().zip(y).map(|(x, y)| x.delivered_pps() / y.delivered_pps()).collect()),
        _ => f64::NAN,
    }
}

pub(crate) fn udp_rows(udp: &BTreeMap<Case, Vec<Sample>>) -> Vec<UdpRow> {
    udp.iter()
        .map(|(&case, runs)| UdpRow {
            case,
            offered: median(runs.iter().map(Sample::offered_pps).collect()),
            delivered: median(runs.iter().map(Sample::delivered_pps).collect()),
            ratio_offered: median(runs.iter().map(|s| s.delivered as f64 / s.offered as f64).collect()),
            vs: [Case::MinFwd, Case::Nft, Case::Nginx]
                .into_iter()
                .filter(|_| case != Case::Ceiling)
                .filter_map(|r| case.baseline(r).filter(|b| udp.contains_key(b)).map(|b| (r, run_ratio(udp, case, b))))
                .collect(),
            backend0_share: median(runs.iter().map(|s| s.delivered0 as f64 / s.delivered as f64).collect()),
            runs: runs.clone(),
        })
        .collect()
}

pub(crate) const UDP_HEADER: [&str; 8] = [
    "forwarder",
    "offered pps",
    "delivered pps",
    "delivered/offered",
    "÷ min_fwd",
    "÷ nft DNAT",
    "÷ nginx",
    "backend 0/1",
];
pub(crate) const TCP_HEADER: [&str; 5] = ["path", "connections/s", "requests/s (1 conn)", "conn ÷ nft", "req ÷ nft"];

pub(crate) fn targets(udp: &BTreeMap<Case, Vec<Sample>>) -> Vec<(String, f64, f64)> {
    let mut t = Vec::new();
    for x in [Case::XlbSnat, Case::XlbPreserve] {
        for (r, target) in [(Case::MinFwd, 0.9), (Case::Nft, 7.0), (Case::Nginx, 50.0)] {
            if udp.contains_key(&x) && udp.contains_key(&r) {
                t.push((format!("{} / {}", x.key(), r.key()), target, run_ratio(udp, x, r)));
            }
        }
    }
    // Churn: new flows per second against nftables DNAT's with the same traffic.
    for (x, r, target) in [
        (Case::XlbPreserveNew, Case::NftNew, 3.0),
        (Case::XlbPreserveFlows10, Case::NftFlows10, 3.0),
        (Case::XlbUntrackedNew, Case::NftNew, 3.0),
        // flow_tracking: none against xlb's own established rate.
        (Case::XlbUntrackedNew, Case::XlbPreserve, 0.8),
    ] {
        if udp.contains_key(&x) && udp.contains_key(&r) {
            t.push((format!("{} / {}", x.key(), r.key()), target, run_ratio(udp, x, r)));
        }
    }
    t
}

pub(crate) fn counter_delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter().map(|(k, v)| (k.clone(), v.saturating_sub(a.get(k).copied().unwrap_or(0)))).collect()
}

pub(crate) fn plan_runs(method: &Value) -> u64 {
    method["runs"].as_u64().unwrap_or(0)
}
