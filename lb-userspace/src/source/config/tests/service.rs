//! The fields of one service: ports, protocols, names, modes, timeouts,
//! table sizes, and the uniqueness of names and (vip, port, protocol).
use super::*;

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
fn flow_tracking_none_with_preserve() {
    let c = ok(&service("    source: preserve\n    flow_tracking: none\n    backends: [10.1.0.5:53]\n"));
    assert_eq!(c.state.services[0].flow_tracking, crate::state::model::FlowTracking::None);
    let c = ok(&service("    flow_tracking: full\n"));
    assert_eq!(c.state.services[0].flow_tracking, crate::state::model::FlowTracking::Full);
    assert_eq!(ok(&service("")).state.services[0].flow_tracking, crate::state::model::FlowTracking::Full);
    let m = one_at(&service("    flow_tracking: off\n"), 6, "services[0].flow_tracking");
    assert!(m.contains("full or none"), "{m}");
}

#[test]
fn flow_tracking_none_refused_with_what_needs_a_connection_entry() {
    // source: snat (also the default): replies need the entry.
    for source in ["", "    source: snat\n"] {
        let m = one_at(
            &service(&format!("{source}    flow_tracking: none\n")),
            6 + usize::from(!source.is_empty()),
            "services[0].flow_tracking",
        );
        assert!(m.contains("needs source: preserve") && m.contains("set source: preserve"), "{m}");
    }
    let m = one_at(
        &service("    source: preserve\n    session_affinity_timeout: 60\n    flow_tracking: none\n"),
        8,
        "services[0].flow_tracking",
    );
    assert!(m.contains("session_affinity_timeout") && m.contains("remove one of the two"), "{m}");
    for key in ["udp_timeout", "tcp_timeout"] {
        let m = one_at(
            &service(&format!("    source: preserve\n    {key}: 60\n    flow_tracking: none\n")),
            8,
            "services[0].flow_tracking",
        );
        assert!(m.contains(key) && m.contains("connection entries"), "{m}");
    }
}

#[test]
fn flow_tracking_none_backend_shared_with_another_service_is_refused() {
    let two = |second_backend: &str, tracking: &str| {
        format!(
            "services:\n  - name: a\n    vip: 192.0.2.10\n    port: 53\n    protocol: udp\n    source: preserve\n    flow_tracking: none\n    backends: [10.1.0.5:53]\n  - name: b\n    vip: 192.0.2.11\n    port: 53\n    protocol: udp\n    source: preserve\n{tracking}    backends: [{second_backend}]\n"
        )
    };
    for tracking in ["", "    flow_tracking: none\n"] {
        let (line, field, m) = one(&two("10.1.0.5:53", tracking));
        assert_eq!((line, field.as_str()), (7, "services[0].flow_tracking"), "{m}");
        assert!(m.contains("10.1.0.5:53/udp") && m.contains("\"b\"") && m.contains("backends of its own"), "{m}");
    }
    // Another port, or the same backend over TCP, is not shared.
    ok(&two("10.1.0.5:54", ""));
    let tcp = two("10.1.0.5:53", "").replacen(
        "protocol: udp\n    source: preserve\n    backends",
        "protocol: tcp\n    source: preserve\n    backends",
        1,
    );
    ok(&tcp);
}
