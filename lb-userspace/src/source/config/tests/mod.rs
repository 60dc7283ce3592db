//! Unit tests of the configuration loader.
use super::*;
use crate::state::model::{
    test_support::{backend, ip, sa, service as spec},
    Protocol, ServiceSpec, SourceMode,
};

mod addresses;
mod limits;
mod props;
mod service;

/// Every error of `text` as (line, field, message), in reported order.
fn errors(text: &str) -> Vec<(usize, String, String)> {
    match parse("xlb.yaml", text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(ConfigErrors(errs)) => errs.into_iter().map(|e| (e.line, e.field, e.message)).collect(),
    }
}

/// The single error of `text`.
fn one(text: &str) -> (usize, String, String) {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}

/// Asserts `text` has exactly one error at `line` on `field`; returns the message.
fn one_at(text: &str, line: usize, field: &str) -> String {
    let (l, f, m) = one(text);
    assert_eq!((l, f.as_str()), (line, field), "message: {m}");
    m
}

fn ok(text: &str) -> Config {
    parse("xlb.yaml", text).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

/// A valid service with `extra` lines appended (indented 4 spaces).
fn service(extra: &str) -> String {
    format!("services:\n  - name: dns\n    vip: 192.0.2.10\n    port: 53\n    protocol: udp\n{extra}")
}

#[test]
fn marker_lines_are_one_based() {
    let root = yaml::parse("a: 1\nb:\n  - x\n").unwrap().unwrap();
    assert_eq!(root.line, 1);
    let yaml::Kind::Map(pairs) = &root.kind else { panic!("not a map") };
    assert_eq!((pairs[0].0.line, pairs[0].1.line), (1, 1));
    assert_eq!((pairs[1].0.line, pairs[1].1.line), (2, 3));
    let err = yaml::parse("a: [1, 2\nb: 3\n").unwrap_err();
    assert_eq!(err.line, 2);
}

#[test]
fn full_example() {
    let text = r#"# xlb configuration
interfaces: [eth0, eth1]
maglev_seed: 4294967295
services:
  - name: dns
    vip: 192.0.2.10
    port: 53
    protocol: udp
    source: snat
    snat_address: 10.0.0.1
    udp_timeout: 30
    tcp_timeout: 3600
    maglev_table_size: 4093
    backends:
      - 10.1.0.5:5353
      - {address: "10.1.0.6:5353", weight: 3}
      - address: 10.1.0.7:5353
        weight: 0
  - name: web6
    vip: 2001:db8::10
    port: 443
    protocol: tcp
    source: preserve
    backends:
      - "[2001:db8::5]:53"
      - {address: "[2001:db8::6]:8443", weight: 65535}
  - name: empty-1
    vip: 192.0.2.11
    port: 65535
    protocol: tcp
    backends: []
"#;
    let config = ok(text);
    assert_eq!(config.interfaces, vec!["eth0".to_owned(), "eth1".to_owned()]);
    let expected = vec![
        ServiceSpec {
            snat_address: Some(ip("10.0.0.1")),
            udp_timeout: Some(30),
            tcp_timeout: Some(3600),
            maglev_table_size: Some(4093),
            backends: vec![backend("10.1.0.5:5353", 1), backend("10.1.0.6:5353", 3), backend("10.1.0.7:5353", 0)],
            ..spec("dns", "192.0.2.10", 53, Protocol::Udp)
        },
        ServiceSpec {
            source: SourceMode::Preserve,
            backends: vec![backend("[2001:db8::5]:53", 1), backend("[2001:db8::6]:8443", 65535)],
            ..spec("web6", "2001:db8::10", 443, Protocol::Tcp)
        },
        spec("empty-1", "192.0.2.11", 65535, Protocol::Tcp),
    ];
    assert_eq!(config.state.services, expected);
    assert_eq!(config.maglev_seed, Some(u32::MAX));
}

#[test]
fn defaults_and_empty_files() {
    let config = ok(&service(""));
    let s = &config.state.services[0];
    assert!(config.interfaces.is_empty());
    assert_eq!(config.maglev_seed, None);
    assert_eq!(s.maglev_table_size, None);
    assert_eq!(s.source, SourceMode::Snat);
    assert_eq!((s.snat_address, s.udp_timeout, s.tcp_timeout), (None, None, None));
    assert!(s.backends.is_empty());
    for text in ["", "# only a comment\n", "services: []\n", "services:\n", "interfaces: [eth0]\n", "---\n"] {
        assert!(ok(text).state.services.is_empty(), "{text:?}");
    }
    assert_eq!(ok("interfaces: [eth0]\n").interfaces, vec!["eth0".to_owned()]);
    assert!(ok(&service("    backends:\n")).state.services[0].backends.is_empty());
}

#[test]
fn anchors_and_aliases_are_resolved() {
    let text = "services:\n  - name: a\n    vip: &v 192.0.2.1\n    port: 53\n    protocol: udp\n  - name: b\n    vip: *v\n    port: 54\n    protocol: udp\n";
    let services = ok(text).state.services;
    assert_eq!(services[1].vip, ip("192.0.2.1"));
}

#[test]
fn yaml_syntax_error() {
    let (line, field, message) = one("services:\n  - name: dns\n    vip: [1, 2\n    port: 53\n");
    assert_eq!((line, field.as_str()), (4, "yaml"));
    assert!(message.starts_with("syntax error: "), "{message}");
}

#[test]
fn second_document_is_an_error() {
    let m = one_at("services: []\n---\nservices: []\n", 2, "yaml");
    assert!(m.contains("one document"), "{m}");
}

#[test]
fn unknown_keys_at_every_level() {
    let m = one_at("interfaces: []\nservice: []\n", 2, "service");
    assert_eq!(m, "unknown key \"service\"; allowed keys are interfaces, maglev_seed, services");
    let m = one_at(&service("    prot: 5\n"), 6, "services[0].prot");
    assert!(m.starts_with("unknown key \"prot\"; allowed keys are name, vip, port"), "{m}");
    let m = one_at(
        &service("    backends:\n      - {address: \"10.1.0.5:53\", wieght: 2}\n"),
        7,
        "services[0].backends[0].wieght",
    );
    assert_eq!(m, "unknown key \"wieght\"; allowed keys are address, weight");
}

#[test]
fn duplicate_key_in_mapping() {
    let m = one_at(&service("    port: 54\n"), 6, "services[0].port");
    assert_eq!(m, "port is given twice (first on line 4); give each key once");
}

#[test]
fn missing_required_keys() {
    let text = "services:\n  - name: dns\n    vip: 192.0.2.10\n  - port: 53\n    protocol: tcp\n";
    let all = errors(text);
    let got: Vec<(usize, &str, &str)> = all.iter().map(|(l, f, m)| (*l, f.as_str(), m.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (2, "services[0].port", "missing required key port; give a port in 1..=65535"),
            (2, "services[0].protocol", "missing required key protocol; use udp or tcp"),
            (4, "services[1].name", "missing required key name; use 1 to 63 characters from a-z, 0-9 and -"),
            (4, "services[1].vip", "missing required key vip; give an IPv4 or IPv6 address"),
        ]
    );
}

#[test]
fn key_without_value_points_at_the_key() {
    let text = "services:\n  - name: dns\n    vip: 192.0.2.10\n    port:\n    protocol: udp\n";
    assert_eq!(one_at(text, 4, "services[0].port"), "port has no value; give a port in 1..=65535");
}

#[test]
fn wrong_node_types() {
    assert_eq!(one_at("services: dns\n", 1, "services"), "expected a list of services, found \"dns\"");
    assert_eq!(one_at("services: {name: dns}\n", 1, "services"), "expected a list of services, found a mapping");
    let m = one_at("services:\n  - dns\n", 2, "services[0]");
    assert_eq!(m, "expected a service: a mapping with at least name, vip, port and protocol, found \"dns\"");
    let m = one_at(&service("    backends: {a: 1}\n"), 6, "services[0].backends");
    assert_eq!(m, "expected a list of backends, found a mapping");
    let m = one_at(&service("    backends:\n      -\n      - 10.1.0.5:53\n"), 8, "services[0].backends[0]");
    assert!(m.ends_with("found nothing"), "{m}");
    let m = one_at("interfaces: eth0\n", 1, "interfaces");
    assert_eq!(m, "expected a list of interface names such as [eth0], found \"eth0\"");
    let m = one_at("- a\n- b\n", 1, "file");
    assert_eq!(m, "expected a mapping with the keys interfaces and services, found a list");
    let m = one_at("interfaces: [[eth0]]\n", 1, "interfaces[0]");
    assert_eq!(m, "expected an interface name, found a list");
}

#[test]
fn all_errors_are_reported_in_line_order() {
    let text = r#"interfaces: [eth0, "a/b"]
bogus: 1
services:
  - name: Bad_Name
    vip: 192.0.2.10
    port: 0
    protocol: udpp
    source: nat
    backends:
      - 10.1.0.5
      - {address: "10.1.0.6:53", weight: 70000, extra: 1}
  - name: ok
    vip: 192.0.2.10
    port: 53
    protocol: udp
    udp_timeout: 0
"#;
    let err = parse("xlb.yaml", text).unwrap_err();
    let got: Vec<(usize, &str)> = err.0.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (1, "interfaces[1]"),
            (2, "bogus"),
            (4, "services[0].name"),
            (6, "services[0].port"),
            (7, "services[0].protocol"),
            (8, "services[0].source"),
            (10, "services[0].backends[0]"),
            (11, "services[0].backends[1].extra"),
            (11, "services[0].backends[1].weight"),
            (16, "services[1].udp_timeout"),
        ]
    );
    let display = err.to_string();
    let lines: Vec<&str> = display.lines().collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[3], "xlb.yaml:6: services[0].port: 0 is outside 1..=65535");
    assert_eq!(lines[4], "xlb.yaml:7: services[0].protocol: \"udpp\" is not a protocol; use udp or tcp");
}

#[test]
fn errors_display_sorted_by_line() {
    let e = |line: usize| ConfigError { file: "f".into(), line, field: "x".into(), message: "m".into() };
    assert_eq!(ConfigErrors(vec![e(3), e(1)]).to_string(), "f:1: x: m\nf:3: x: m");
}

#[test]
fn load_from_disk() {
    let dir = std::env::temp_dir().join(format!("xlb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xlb.yaml");
    std::fs::write(&path, service("    backends: [10.1.0.5:53]\n")).unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.state.services[0].backends[0].addr, sa("10.1.0.5:53"));
    std::fs::write(&path, "services:\n  - name: x\n    port: 0\n").unwrap();
    let err = load(&path).unwrap_err();
    assert!(err.0.iter().all(|e| e.file == path.display().to_string()));
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = dir.join("missing.yaml");
    let err = load(&missing).unwrap_err();
    assert_eq!(err.0.len(), 1);
    let e = &err.0[0];
    assert_eq!((e.line, e.field.as_str(), e.file.clone()), (0, "file", missing.display().to_string()));
    assert!(e.message.starts_with("cannot read the configuration file: "), "{}", e.message);
}
