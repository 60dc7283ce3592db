//! Backends, source ranges and interface names.
use super::*;

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
fn interface_names() {
    let all = errors("interfaces:\n  - eth0\n  - eth0\n  - averyveryverylongname\n  - \"eth 1\"\n  - \"\"\n");
    let got: Vec<(usize, &str)> = all.iter().map(|(l, f, _)| (*l, f.as_str())).collect();
    assert_eq!(got, vec![(3, "interfaces[1]"), (4, "interfaces[2]"), (5, "interfaces[3]"), (6, "interfaces[4]")]);
    assert_eq!(all[0].2, "\"eth0\" is already listed as interfaces[0]; list each interface once");
    assert!(all[1].2.contains("is 21 bytes long"), "{}", all[1].2);
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
fn empty_source_ranges_are_refused() {
    let m = one_at(&service("    source_ranges: []\n"), 6, "services[0].source_ranges");
    assert!(m.contains("remove source_ranges to admit every client"), "{m}");
}
