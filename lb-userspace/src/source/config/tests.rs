//! Unit tests of the configuration loader.
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::state::model::{BackendSpec, Protocol, ServiceSpec, SourceMode};

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

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
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
            name: "dns".into(),
            vip: ip("192.0.2.10"),
            port: 53,
            protocol: Protocol::Udp,
            source: SourceMode::Snat,
            snat_address: Some(ip("10.0.0.1")),
            udp_timeout: Some(30),
            tcp_timeout: Some(3600),
            maglev_table_size: Some(4093),
            affinity_timeout: None,
            source_ranges: vec![],
            backends: vec![
                BackendSpec { addr: sa("10.1.0.5:5353"), weight: 1 },
                BackendSpec { addr: sa("10.1.0.6:5353"), weight: 3 },
                BackendSpec { addr: sa("10.1.0.7:5353"), weight: 0 },
            ],
        },
        ServiceSpec {
            name: "web6".into(),
            vip: ip("2001:db8::10"),
            port: 443,
            protocol: Protocol::Tcp,
            source: SourceMode::Preserve,
            snat_address: None,
            udp_timeout: None,
            tcp_timeout: None,
            maglev_table_size: None,
            affinity_timeout: None,
            source_ranges: vec![],
            backends: vec![
                BackendSpec { addr: sa("[2001:db8::5]:53"), weight: 1 },
                BackendSpec { addr: sa("[2001:db8::6]:8443"), weight: 65535 },
            ],
        },
        ServiceSpec {
            name: "empty-1".into(),
            vip: ip("192.0.2.11"),
            port: 65535,
            protocol: Protocol::Tcp,
            source: SourceMode::Snat,
            snat_address: None,
            udp_timeout: None,
            tcp_timeout: None,
            maglev_table_size: None,
            affinity_timeout: None,
            source_ranges: vec![],
            backends: vec![],
        },
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
fn port_out_of_range_and_not_integer() {
    let text = "# c\n\n\nservices:\n  - name: dns\n    vip: 192.0.2.10\n    port: 70000\n    protocol: udp\n";
    let err = parse("xlb.yaml", text).unwrap_err();
    assert_eq!(err.to_string(), "xlb.yaml:7: services[0].port: 70000 is outside 1..=65535");
    let bad = |port: &str| {
        one_at(
            &format!("services:\n  - name: dns\n    vip: 192.0.2.10\n    port: {port}\n    protocol: udp\n"),
            4,
            "services[0].port",
        )
    };
    assert_eq!(bad("0"), "0 is outside 1..=65535");
    assert_eq!(bad("-1"), "-1 is outside 1..=65535");
    assert_eq!(
        bad("99999999999999999999999999999999999999999"),
        "99999999999999999999999999999999999999999 is outside 1..=65535"
    );
    assert_eq!(bad("http"), "\"http\" is not an integer; use a port in 1..=65535");
    assert_eq!(bad("53.5"), "\"53.5\" is not an integer; use a port in 1..=65535");
    assert_eq!(bad("\"53\""), "\"53\" is quoted text; write a port as a plain integer in 1..=65535");
    assert_eq!(bad("[53]"), "expected a port in 1..=65535, found a list");
}

#[test]
fn unknown_protocol() {
    let text = "services:\n  - name: dns\n    vip: 192.0.2.10\n    port: 53\n    protocol: udpp\n";
    assert_eq!(one_at(text, 5, "services[0].protocol"), "\"udpp\" is not a protocol; use udp or tcp");
}

#[test]
fn unknown_source_mode() {
    let m = one_at(&service("    source: nat\n"), 6, "services[0].source");
    assert_eq!(m, "\"nat\" is not a source mode; use snat or preserve");
}

#[test]
fn bad_backend_addresses() {
    let bad = |b: &str| {
        one_at(&service(&format!("    backends:\n      - 10.1.0.1:53\n      - {b}\n")), 8, "services[0].backends[1]")
    };
    assert_eq!(bad("10.1.0.5"), "\"10.1.0.5\" has no port; write it as 10.1.0.5:PORT");
    assert_eq!(bad("\"10.1.0.5:\""), "\"10.1.0.5:\" has no port; write it as 10.1.0.5:PORT");
    // Unquoted, YAML reads these as one-entry mappings; the messages say so.
    assert_eq!(bad("10.1.0.5:"), "\"10.1.0.5:\" has no port; write it as 10.1.0.5:PORT");
    assert_eq!(
        bad("10.1.0.5: 53"),
        "\"10.1.0.5: 53\" is read as a mapping; write the backend as 10.1.0.5:53, without a space"
    );
    assert_eq!(bad("10.1.0.5:0"), "port 0 in \"10.1.0.5:0\" is outside 1..=65535");
    assert_eq!(bad("10.1.0.5:70000"), "port 70000 in \"10.1.0.5:70000\" is outside 1..=65535");
    assert_eq!(
        bad("10.1.0.500:53"),
        "\"10.1.0.500:53\" is not a backend address; use ip:port, or [v6addr]:port for IPv6"
    );
    assert_eq!(
        bad("host.example:53"),
        "\"host.example:53\" is not a backend address; use ip:port, or [v6addr]:port for IPv6"
    );
    let m = one_at(&service("    backends:\n      - {address: 10.1.0.5}\n"), 7, "services[0].backends[0].address");
    assert_eq!(m, "\"10.1.0.5\" has no port; write it as 10.1.0.5:PORT");
    let m = one_at(&service("    backends:\n      - {weight: 2}\n"), 7, "services[0].backends[0].address");
    assert_eq!(m, "missing required key address; use ip:port, or [v6addr]:port for IPv6");
}

#[test]
fn ipv6_backend_forms() {
    let v6 = "services:\n  - name: v6\n    vip: 2001:db8::10\n    port: 53\n    protocol: udp\n    backends:\n";
    let m = one_at(&format!("{v6}      - \"2001:db8::5\"\n"), 7, "services[0].backends[0]");
    assert_eq!(m, "\"2001:db8::5\" has no port; write it as [2001:db8::5]:PORT");
    let m = one_at(&format!("{v6}      - \"[2001:db8::5]\"\n"), 7, "services[0].backends[0]");
    assert_eq!(m, "\"[2001:db8::5]\" has no port; write it as [2001:db8::5]:PORT");
    // Unquoted "[v6]" is a YAML list: the message says to quote it.
    let m = one_at(&format!("{v6}      - [2001:db8::5]\n"), 7, "services[0].backends[0]");
    assert!(m.contains("quote IPv6 backends"), "{m}");
}

#[test]
fn backend_family_must_match_vip() {
    let m = one_at(&service("    backends:\n      - \"[2001:db8::5]:53\"\n"), 7, "services[0].backends[0]");
    assert_eq!(m, "backend [2001:db8::5]:53 is IPv6 but the vip 192.0.2.10 is IPv4; use IPv4 backends");
    let text = "services:\n  - name: v6\n    vip: 2001:db8::10\n    port: 53\n    protocol: udp\n    backends:\n      - {address: 10.1.0.5:53}\n";
    let m = one_at(text, 7, "services[0].backends[0].address");
    assert_eq!(m, "backend 10.1.0.5:53 is IPv4 but the vip 2001:db8::10 is IPv6; use IPv6 backends");
}

#[test]
fn duplicate_backend() {
    let text =
        service("    backends:\n      - 10.1.0.5:53\n      - 10.1.0.6:53\n      - {address: 10.1.0.5:53, weight: 2}\n");
    let m = one_at(&text, 9, "services[0].backends[2].address");
    assert_eq!(m, "10.1.0.5:53 is already listed as services[0].backends[0]; list each backend once");
    // The same address in two services is fine.
    let two = format!(
        "{}  - name: dns2\n    vip: 192.0.2.11\n    port: 53\n    protocol: udp\n    backends: [10.1.0.5:53]\n",
        service("    backends: [10.1.0.5:53]\n")
    );
    assert_eq!(ok(&two).state.services.len(), 2);
}

#[test]
fn duplicate_service_name() {
    let text = format!("{}  - name: dns\n    vip: 192.0.2.11\n    port: 53\n    protocol: udp\n", service(""));
    let m = one_at(&text, 6, "services[1].name");
    assert_eq!(m, "\"dns\" is already the name of services[0]; service names must be unique");
}

#[test]
fn duplicate_vip_port_protocol() {
    let text = format!("{}  - name: dns-b\n    vip: 192.0.2.10\n    port: 53\n    protocol: udp\n", service(""));
    let m = one_at(&text, 6, "services[1]");
    assert_eq!(
        m,
        "192.0.2.10:53/udp is already used by service \"dns\" (services[0]); each vip, port and protocol may belong to one service"
    );
    // A different protocol is a different service.
    let tcp = format!("{}  - name: dns-tcp\n    vip: 192.0.2.10\n    port: 53\n    protocol: tcp\n", service(""));
    assert_eq!(ok(&tcp).state.services.len(), 2);
    let v6 = "services:\n  - {name: a, vip: \"2001:db8::1\", port: 53, protocol: tcp}\n  - {name: b, vip: \"2001:db8::1\", port: 53, protocol: tcp}\n";
    let m = one_at(v6, 3, "services[1]");
    assert!(m.starts_with("[2001:db8::1]:53/tcp is already used by service \"a\""), "{m}");
}

#[test]
fn weight_out_of_range_and_not_integer() {
    let bad = |w: &str| {
        one_at(
            &service(&format!("    backends:\n      - address: 10.1.0.5:53\n        weight: {w}\n")),
            8,
            "services[0].backends[0].weight",
        )
    };
    assert_eq!(bad("70000"), "70000 is outside 0..=65535");
    assert_eq!(bad("-1"), "-1 is outside 0..=65535");
    assert_eq!(bad("heavy"), "\"heavy\" is not an integer; use a weight in 0..=65535");
}

#[test]
fn bad_names() {
    let bad = |name: &str| {
        one_at(
            &format!("services:\n  - vip: 192.0.2.10\n    name: {name}\n    port: 53\n    protocol: udp\n"),
            3,
            "services[0].name",
        )
    };
    assert_eq!(bad("\"\""), "the name is empty; use 1 to 63 characters from a-z, 0-9 and -");
    assert_eq!(bad("Dns"), "\"Dns\" contains 'D'; use 1 to 63 characters from a-z, 0-9 and -");
    assert_eq!(bad("dns_1"), "\"dns_1\" contains '_'; use 1 to 63 characters from a-z, 0-9 and -");
    let long = "a".repeat(64);
    assert_eq!(bad(&long), format!("{long:?} is 64 characters long; use 1 to 63 characters from a-z, 0-9 and -"));
    assert!(
        ok(&format!("services:\n  - {{name: {}, vip: 192.0.2.1, port: 1, protocol: tcp}}\n", "a".repeat(63)))
            .state
            .services
            .len()
            == 1
    );
    assert_eq!(bad("[a]"), "expected a service name, found a list");
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
fn bad_vip() {
    let text = "services:\n  - name: dns\n    vip: 192.0.2.300\n    port: 53\n    protocol: udp\n";
    let m = one_at(text, 3, "services[0].vip");
    assert_eq!(
        m,
        "\"192.0.2.300\" is not an IP address; use an IPv4 or IPv6 address such as 192.0.2.10 or 2001:db8::10"
    );
}

#[test]
fn snat_address_checks() {
    let m = one_at(&service("    snat_address: 2001:db8::1\n"), 6, "services[0].snat_address");
    assert_eq!(m, "2001:db8::1 is IPv6 but the vip 192.0.2.10 is IPv4; use an IPv4 address");
    let m = one_at(&service("    snat_address: nope\n"), 6, "services[0].snat_address");
    assert!(m.starts_with("\"nope\" is not an IP address"), "{m}");
}

#[test]
fn timeouts_out_of_range() {
    let m = one_at(&service("    udp_timeout: 0\n"), 6, "services[0].udp_timeout");
    assert_eq!(m, "0 is outside 1..=604800");
    let m = one_at(&service("    tcp_timeout: 604801\n"), 6, "services[0].tcp_timeout");
    assert_eq!(m, "604801 is outside 1..=604800");
    let m = one_at(&service("    tcp_timeout: 1h\n"), 6, "services[0].tcp_timeout");
    assert_eq!(m, "\"1h\" is not an integer; use a timeout in seconds in 1..=604800");
    let s = &ok(&service("    udp_timeout: 1\n    tcp_timeout: 604800\n")).state.services[0];
    assert_eq!((s.udp_timeout, s.tcp_timeout), (Some(1), Some(604800)));
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
fn interface_names() {
    let all = errors("interfaces:\n  - eth0\n  - eth0\n  - averyveryverylongname\n  - \"eth 1\"\n  - \"\"\n");
    let got: Vec<(usize, &str)> = all.iter().map(|(l, f, _)| (*l, f.as_str())).collect();
    assert_eq!(got, vec![(3, "interfaces[1]"), (4, "interfaces[2]"), (5, "interfaces[3]"), (6, "interfaces[4]")]);
    assert_eq!(all[0].2, "\"eth0\" is already listed as interfaces[0]; list each interface once");
    assert!(all[1].2.contains("is 21 bytes long"), "{}", all[1].2);
}

#[test]
fn too_many_services() {
    let n = lb_common::MAX_SERVICES as usize;
    let mut text = String::from("services:\n");
    for i in 0..=n {
        text.push_str(&format!(
            "  - {{name: s{i}, vip: 192.0.2.{}, port: {}, protocol: udp}}\n",
            1 + i / 60000,
            1 + i % 60000
        ));
    }
    let m = one_at(&text, n + 2, "services");
    assert!(m.starts_with(&format!("{} services are listed; at most {n} are allowed", n + 1)), "{m}");
    #[expect(clippy::format_collect, reason = "a small test input")]
    let max: String = text.lines().take(n + 1).map(|l| format!("{l}\n")).collect();
    assert_eq!(ok(&max).state.services.len(), n);
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

#[test]
fn maglev_table_size_from_the_list() {
    for size in crate::state::maglev::SIZES {
        let s = &ok(&service(&format!("    maglev_table_size: {size}\n"))).state.services[0];
        assert_eq!(s.maglev_table_size, Some(size));
    }
    let allowed = "251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65537, 131071";
    let bad = |v: &str| one_at(&service(&format!("    maglev_table_size: {v}\n")), 6, "services[0].maglev_table_size");
    assert_eq!(bad("1000"), format!("1000 is not an allowed table size; use one of {allowed} (primes; default 65537)"));
    // Primes outside the list and absurd values are refused the same way.
    assert!(bad("1031").starts_with("1031 is not an allowed table size; use one of 251, "));
    assert!(bad("0").starts_with("0 is not an allowed table size"));
    assert!(bad("-251").starts_with("-251 is not an allowed table size"));
    assert!(bad("99999999999999999999999999999999999999999")
        .starts_with("99999999999999999999999999999999999999999 is not an allowed table size; use one of 251"));
    assert_eq!(
        bad("\"4093\""),
        format!("\"4093\" is quoted text; write the table size as a plain integer, one of {allowed}")
    );
    assert_eq!(bad("big"), format!("\"big\" is not an integer; use a table size, one of {allowed}"));
    assert_eq!(bad("[251]"), format!("expected a table size (one of {allowed}), found a list"));
    // Null means "not given".
    assert_eq!(ok(&service("    maglev_table_size:\n")).state.services[0].maglev_table_size, None);
}

#[test]
fn maglev_table_size_errors_are_reported_with_the_others() {
    let text = format!(
        "{}  - name: b\n    vip: 192.0.2.11\n    port: 70000\n    protocol: udp\n    maglev_table_size: 100\n",
        service("    maglev_table_size: 65537\n")
    );
    let got: Vec<(usize, String)> = errors(&text).into_iter().map(|(l, f, _)| (l, f)).collect();
    assert_eq!(got, vec![(9, "services[1].port".into()), (11, "services[1].maglev_table_size".into())]);
}

#[test]
fn maglev_seed_is_a_u32() {
    assert_eq!(ok("maglev_seed: 0\n").maglev_seed, Some(0));
    assert_eq!(ok("maglev_seed: 4294967295\nservices: []\n").maglev_seed, Some(u32::MAX));
    assert_eq!(ok("maglev_seed:\n").maglev_seed, None);
    assert_eq!(one_at("maglev_seed: 4294967296\n", 1, "maglev_seed"), "4294967296 is outside 0..=4294967295");
    assert_eq!(one_at("maglev_seed: -1\n", 1, "maglev_seed"), "-1 is outside 0..=4294967295");
    assert_eq!(
        one_at("maglev_seed: abc\n", 1, "maglev_seed"),
        "\"abc\" is not an integer; use a seed in 0..=4294967295"
    );
    assert_eq!(
        one_at("services: []\nmaglev_seed: \"7\"\n", 2, "maglev_seed"),
        "\"7\" is quoted text; write a seed as a plain integer in 0..=4294967295"
    );
    // Per service it is not a key.
    let m = one_at(&service("    maglev_seed: 1\n"), 6, "services[0].maglev_seed");
    assert!(m.starts_with("unknown key \"maglev_seed\""), "{m}");
}

#[test]
fn session_affinity_and_source_ranges() {
    let c = ok(&service(
        "    session_affinity_timeout: 10800\n    source_ranges: [203.0.113.0/24, 198.51.100.7, 0.0.0.0/0]\n",
    ));
    let s = &c.state.services[0];
    assert_eq!(s.affinity_timeout, Some(10800));
    let want: Vec<ipnet::IpNet> =
        ["203.0.113.0/24", "198.51.100.7/32", "0.0.0.0/0"].iter().map(|n| n.parse().unwrap()).collect();
    assert_eq!(s.source_ranges, want, "a bare address is one host");

    // IPv6.
    let v6 = "services:\n  - name: dns6\n    vip: 2001:db8::10\n    port: 53\n    protocol: udp\n    \
              source_ranges: [\"2001:db8:1::/48\", \"fd00::1\"]\n";
    let s = &ok(v6).state.services[0];
    assert_eq!(s.source_ranges, vec!["2001:db8:1::/48".parse().unwrap(), "fd00::1/128".parse().unwrap()]);

    // Absent: off and open.
    let s = &ok(&service("")).state.services[0];
    assert_eq!((s.affinity_timeout, s.source_ranges.len()), (None, 0));
}

#[test]
fn session_affinity_timeout_bounds() {
    for (v, msg) in [("0", "0 is outside 1..=86400"), ("86401", "86401 is outside 1..=86400")] {
        let m = one_at(
            &service(&format!("    session_affinity_timeout: {v}\n")),
            6,
            "services[0].session_affinity_timeout",
        );
        assert!(m.contains(msg), "{m}");
    }
    assert_eq!(ok(&service("    session_affinity_timeout: 86400\n")).state.services[0].affinity_timeout, Some(86400));
    let m = one_at(&service("    session_affinity_timeout: long\n"), 6, "services[0].session_affinity_timeout");
    assert!(m.contains("not an integer"), "{m}");
}

#[test]
fn bad_source_ranges_are_all_reported() {
    let text = service(
        "    source_ranges:\n      - 10.1.2.0/16\n      - nonsense\n      - 10.0.0.0/33\n      - \"2001:db8::/32\"\n      - 10.0.0.0/8\n      - 10.0.0.0/8\n      - [1]\n",
    );
    let errs = errors(&text);
    let fields: Vec<(usize, &str)> = errs.iter().map(|(l, f, _)| (*l, f.as_str())).collect();
    assert_eq!(
        fields,
        vec![
            (7, "services[0].source_ranges[0]"),
            (8, "services[0].source_ranges[1]"),
            (9, "services[0].source_ranges[2]"),
            (10, "services[0].source_ranges[3]"),
            (12, "services[0].source_ranges[5]"),
            (13, "services[0].source_ranges[6]"),
        ],
        "{errs:#?}"
    );
    assert!(errs[0].2.contains("host bits set; write the network 10.1.0.0/16"), "{}", errs[0].2);
    assert!(errs[1].2.contains("is not a CIDR"), "{}", errs[1].2);
    assert!(errs[2].2.contains("outside 0..=32"), "{}", errs[2].2);
    assert!(errs[3].2.contains("is IPv6 but the vip 192.0.2.10 is IPv4"), "{}", errs[3].2);
    assert!(errs[4].2.contains("already listed as services[0].source_ranges[4]"), "{}", errs[4].2);
    assert!(errs[5].2.contains("expected a CIDR"), "{}", errs[5].2);
    let m = one_at(&service("    source_ranges: 10.0.0.0/8\n"), 6, "services[0].source_ranges");
    assert!(m.contains("expected a list of CIDRs"), "{m}");
    // Rendered as FILE:LINE: FIELD: MESSAGE.
    let e = parse("xlb.yaml", &service("    source_ranges: [10.1.2.3/24]\n")).unwrap_err().to_string();
    assert!(e.starts_with("xlb.yaml:6: services[0].source_ranges[0]: 10.1.2.3/24 has host bits set"), "{e}");
}

/// A "billion laughs" file: `levels` levels of nine aliases each to the level
/// before, about 9^levels nodes once expanded.
fn alias_bomb(levels: usize) -> String {
    let mut text = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..levels {
        let p = format!("*a{}", i - 1);
        text.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 9].join(",")));
    }
    text
}

#[test]
fn alias_bomb_is_refused_quickly() {
    // 9^7 (4.8 million) nodes once expanded: small enough that the loader
    // without bounds still finishes (and reports unknown keys instead), large
    // enough to be far over the bound.
    let text = alias_bomb(7);
    assert!(text.len() < 400, "{}", text.len());
    let started = std::time::Instant::now();
    let (line, field, message) = one(&text);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(field, "yaml");
    assert!(message.contains("aliases expand to more than 10000 nodes"), "{message}");
    // The line of the alias whose copy crossed the bound: 9^4 > 10 000 only
    // with the fifth list's aliases.
    assert_eq!(line, 5, "{message}");

    // The full nine-level bomb (387 million nodes) is refused as fast.
    let started = std::time::Instant::now();
    let (_, field, message) = one(&alias_bomb(9));
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(field, "yaml", "{message}");

    // Big scalars count by their text: 2 KiB aliased 600 times is over 1 MiB.
    let big = "x".repeat(2048);
    let text = format!("a: &a {big}\nb: [{}]\n", ["*a"; 600].join(","));
    let (line, field, message) = one(&text);
    assert_eq!((line, field.as_str()), (2, "yaml"), "{message}");
    assert!(message.contains("KiB of text"), "{message}");
}

#[test]
fn aliases_within_the_bound_still_work() {
    // One list of backends shared by 100 services: 200 nodes copied.
    let mut text = String::from("services:\n");
    for i in 0..100 {
        let backends = if i == 0 { "&b [10.1.0.5:53, 10.1.0.6:53]".to_owned() } else { "*b".to_owned() };
        text.push_str(&format!(
            "  - {{name: s{i}, vip: 192.0.2.10, port: {}, protocol: udp, backends: {backends}}}\n",
            i + 1
        ));
    }
    let services = ok(&text).state.services;
    assert_eq!(services.len(), 100);
    assert!(services.iter().all(|s| s.backends.len() == 2));
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    // 200 000 levels of block lists would overflow a recursive reader's stack
    // (flow lists stop at the scanner's own limit of 255).
    for text in [format!("{}x\n", "- ".repeat(200_000)), format!("{}{}", "[".repeat(100), "]".repeat(100))] {
        let (line, field, message) = one(&text);
        assert_eq!((line, field.as_str()), (1, "yaml"));
        assert!(message.contains("nest more than 64 deep"), "{message}");
    }
    // An alias may not carry a deep anchor deeper either.
    let deep = |n: usize| format!("{}x{}", "[".repeat(n), "]".repeat(n));
    let text = format!("a: &a {}\nb: {}*a{}\n", deep(40), "[".repeat(30), "]".repeat(30));
    let (line, _, message) = one(&text);
    assert_eq!(line, 2, "{message}");
    assert!(message.contains("alias would nest"), "{message}");
}

#[test]
fn oversized_file_is_refused() {
    let text = format!("# {}\nservices: []\n", "x".repeat(MAX_FILE_BYTES));
    let e = &errors(&text)[..];
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].0, e[0].1.as_str()), (0, "file"));
    assert!(e[0].2.contains("larger than 16 MiB"), "{}", e[0].2);

    let dir = std::env::temp_dir().join(format!("xlb-config-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xlb.yaml");
    std::fs::write(&path, &text).unwrap();
    let err = load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(err.0.len(), 1);
    assert_eq!((err.0[0].line, err.0[0].field.as_str()), (0, "file"));
    assert!(err.to_string().starts_with(&format!("{}:0: file: the file is larger", path.display())), "{err}");
}

#[test]
fn unusable_vips_are_refused() {
    for bad in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.251", "\"::\"", "\"::1\"", "\"ff02::fb\""] {
        let text = format!("services:\n  - name: dns\n    vip: {bad}\n    port: 53\n    protocol: udp\n");
        let m = one_at(&text, 3, "services[0].vip");
        assert!(m.starts_with(&format!("{} is ", bad.trim_matches('"'))), "{m}");
        assert!(m.contains("use a unicast address"), "{m}");
    }
    // The same rule for snat_address.
    let m = one_at(&service("    snat_address: 0.0.0.0\n"), 6, "services[0].snat_address");
    assert!(m.starts_with("0.0.0.0 is the unspecified address"), "{m}");
}

#[test]
fn unusable_backends_are_refused() {
    for (bad, what) in [
        ("0.0.0.0:53", "the unspecified address"),
        ("255.255.255.255:53", "the broadcast address"),
        ("239.1.1.1:53", "a multicast address"),
        ("192.0.2.10:53", "the service's own vip and port: a loop"),
    ] {
        let text = service(&format!("    backends:\n      - 10.1.0.5:53\n      - {bad}\n"));
        let m = one_at(&text, 8, "services[0].backends[1]");
        assert!(m.contains(what), "{bad}: {m}");
    }
    // In the mapping form too, pointing at the address.
    let text = service("    backends:\n      - {address: \"192.0.2.10:53\", weight: 2}\n");
    let m = one_at(&text, 7, "services[0].backends[0].address");
    assert!(m.contains("a loop"), "{m}");
    // The vip on another port is a different service's business: allowed.
    let c = ok(&service("    backends: [192.0.2.10:5353]\n"));
    assert_eq!(c.state.services[0].backends[0].addr, sa("192.0.2.10:5353"));
}

#[test]
fn snat_address_with_preserve_is_refused() {
    let m = one_at(&service("    source: preserve\n    snat_address: 10.0.0.1\n"), 7, "services[0].snat_address");
    assert!(m.contains("source: preserve (line 6)"), "{m}");
    assert!(m.contains("remove snat_address or use source: snat"), "{m}");
    // With snat (given or by default) it is taken.
    for source in ["    source: snat\n", ""] {
        let c = ok(&service(&format!("{source}    snat_address: 10.0.0.1\n")));
        assert_eq!(c.state.services[0].snat_address, Some(ip("10.0.0.1")));
    }
}

#[test]
fn empty_source_ranges_are_refused() {
    let m = one_at(&service("    source_ranges: []\n"), 6, "services[0].source_ranges");
    assert!(m.contains("remove source_ranges to admit every client"), "{m}");
}
