//! What `/metrics` exports, checked against what documents and uses it:
//! the table of `deploy/monitoring/README.md` lists exactly the exported
//! series (name, type, labels) and the data-path counters, and every
//! PromQL query of `deploy/monitoring/grafana-dashboard.json` names only
//! exported metrics, with labels they have.
use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{encode_snapshot, lease_metrics, registry, LastApply, Snapshot};
use crate::state::reader::{BackendRow, ServiceRow};

const README: &str = include_str!("../../../deploy/monitoring/README.md");
const DASHBOARD: &str = include_str!("../../../deploy/monitoring/grafana-dashboard.json");

/// A collector of a fixed snapshot, so every series appears.
#[derive(Debug)]
struct Fixed(Snapshot, LastApply);

impl Collector for Fixed {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_snapshot(enc, &self.0, Some(&self.1))
    }
}

fn row() -> ServiceRow {
    let backend = BackendRow {
        service: "dns".into(),
        address: "10.1.0.5:5353".into(),
        weight: 1,
        state: "active".into(),
        reason: None,
        packets: 3,
        bytes: 120,
        id: 0,
    };
    ServiceRow {
        name: "dns".into(),
        vip: "192.0.2.10".into(),
        port: 53,
        protocol: "udp".into(),
        source: "snat".into(),
        backends: vec![backend.address.clone()],
        packets: 3,
        bytes: 120,
        affinity_timeout: None,
        source_ranges: Vec::new(),
        source_ranges_enforced: false,
        flow_tracking: "full".into(),
        id: 0,
        backend_rows: vec![backend],
        table: (0, 7),
    }
}

/// Exported series: name -> (type, label names), from the text that the
/// `/metrics` registry encodes with one of everything in it.
fn exported() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let vip: std::net::IpAddr = "192.0.2.10".parse().expect("ip");
    lease_metrics().count(vip, "acquired");
    lease_metrics().set_held(vip, true);
    // `--announce bgp`: its series appear once the route table is known.
    crate::announce::bgp::metrics().routes.store(1, std::sync::atomic::Ordering::Relaxed);
    let stats = lb_common::stats::Stat::ALL.iter().map(|s| (s.name(), 1)).collect();
    let snap = Snapshot { services: Some(vec![row()]), stats, announced: Some(1) };
    let apply = LastApply { unix: 1, ok: true, message: "applied".into(), last_ok_unix: 1 };
    let reg = registry(Box::new(Fixed(snap, apply)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");

    let mut types = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("# TYPE name type");
            types.insert(name.to_owned(), ty.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample line");
        let name = &line[..name_end];
        let family = types
            .keys()
            .filter(|f| name == f.as_str() || name.strip_prefix(f.as_str()).is_some_and(|s| s == "_total"))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample {name} of no # TYPE in\n{text}"));
        let labels: BTreeSet<String> = line[name_end..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .map(|(l, _)| l.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default();
        out.insert(name.to_owned(), (types[family].clone(), labels));
    }
    assert!(out.len() >= 10, "too few series:\n{text}");
    out
}

/// The first cells of the README's table rows, backticks removed, with the
/// row's cells.
fn readme_rows() -> Vec<Vec<String>> {
    README
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().replace('`', "")).collect())
        .collect()
}

#[test]
fn the_docs_table_lists_exactly_the_exported_metrics() {
    let exported = exported();
    let mut documented = BTreeMap::new();
    for cells in readme_rows().into_iter().filter(|c| c[0].starts_with("xlb_")) {
        assert!(cells.len() >= 4, "a metric row has name, type, labels, meaning: {cells:?}");
        let labels: BTreeSet<String> =
            cells[2].split(',').map(str::trim).filter(|l| !l.is_empty() && *l != "-").map(str::to_owned).collect();
        assert!(documented.insert(cells[0].clone(), (cells[1].clone(), labels)).is_none(), "{} twice", cells[0]);
    }
    assert_eq!(documented, exported, "deploy/monitoring/README.md's table vs /metrics (name: (type, labels))");
}

#[test]
fn the_docs_list_every_data_path_counter() {
    let documented: BTreeSet<String> = readme_rows()
        .into_iter()
        .map(|c| c[0].clone())
        .filter(|n| !n.starts_with("xlb_") && n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    let counters: BTreeSet<String> = lb_common::stats::Stat::ALL.iter().map(|s| s.name().to_owned()).collect();
    assert_eq!(documented, counters, "the counter label values in deploy/monitoring/README.md");
}

/// Every string under a key `expr` or `query` (Grafana targets and
/// template variables; not the datasource variable, whose query is a
/// datasource type).
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) if m.get("type").is_some_and(|t| t == "datasource") => {}
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The `xlb_*` identifiers of a PromQL expression.
fn metric_names(expr: &str) -> Vec<&str> {
    expr.match_indices("xlb_")
        .filter(|(i, _)| !expr[..*i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        .map(|(i, _)| {
            let rest = &expr[i..];
            &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
        })
        .collect()
}

#[test]
fn every_dashboard_query_names_exported_metrics_and_labels() {
    let exported = exported();
    let labels: BTreeSet<&str> = exported.values().flat_map(|(_, l)| l.iter().map(String::as_str)).collect();
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut qs = Vec::new();
    queries(&dash, &mut qs);
    assert!(qs.len() >= 8, "too few queries: {qs:?}");
    let mut used = BTreeSet::new();
    for q in &qs {
        let names = metric_names(q);
        assert!(!names.is_empty(), "a query without an xlb metric: {q}");
        for n in names {
            assert!(exported.contains_key(n), "the dashboard queries {n}, which /metrics does not export: {q}");
            used.insert(n);
        }
        // Labels in `by (...)` and matchers `{l="..."}` are exported ones
        // (or the target labels Prometheus adds).
        for l in grouping_and_matcher_labels(q) {
            assert!(
                labels.contains(l.as_str()) || ["instance", "job", "pod", "node"].contains(&l.as_str()),
                "the dashboard uses label {l}, which no xlb metric has: {q}"
            );
        }
    }
    for key in ["xlb_service_packets_total", "xlb_backend_bytes_total", "xlb_datapath_events_total"] {
        assert!(used.contains(key), "the dashboard does not show {key}");
    }
}

/// Label names in `by (a, b)` / `without (a)` and in `{a="x", b=~"y"}`.
fn grouping_and_matcher_labels(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in ["by (", "without ("] {
        for (i, _) in q.match_indices(kw) {
            let rest = &q[i + kw.len()..];
            let inner = &rest[..rest.find(')').unwrap_or(0)];
            out.extend(inner.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
        }
    }
    for (i, _) in q.match_indices('{') {
        let rest = &q[i + 1..];
        let inner = &rest[..rest.find('}').unwrap_or(0)];
        for m in inner.split(',') {
            let name = m.split(['=', '!']).next().unwrap_or("").trim();
            if !name.is_empty() {
                out.push(name.to_owned());
            }
        }
    }
    out
}

#[test]
fn the_query_checks_can_fail() {
    assert_eq!(metric_names("sum(rate(xlb_a_total[5m])) / xlb_b"), ["xlb_a_total", "xlb_b"]);
    assert_eq!(
        grouping_and_matcher_labels("sum by (service, backend) (x{counter=~\"drop_.*\"})"),
        ["service", "backend", "counter"]
    );
}
