//! Property tests of the loader: random documents (every field drawn from
//! accepted and refused values) are accepted exactly when each value is
//! acceptable and nothing is duplicated; mutated and arbitrary texts never
//! panic; whatever is accepted is a valid desired state by the model's own
//! rules ([`crate::state::model::DesiredState::new`]) and by its invariants spelled out here.
use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

/// One rendered value and whether the loader must accept it.
#[derive(Clone, Debug)]
struct Field {
    text: String,
    ok: bool,
}

fn good(s: impl Into<String>) -> Field {
    Field { text: s.into(), ok: true }
}

fn bad(s: impl Into<String>) -> Field {
    Field { text: s.into(), ok: false }
}

fn pick(values: &'static [&'static str], ok: bool) -> impl Strategy<Value = Field> {
    proptest::sample::select(values).prop_map(move |s| Field { text: s.to_owned(), ok })
}

/// A backend: (address, port, weight in map form), each with validity.
#[derive(Clone, Debug)]
struct Backend {
    /// Index into the family's addresses (`None`: another family).
    addr: Field,
    port: u16,
    weight: Option<Field>,
}

#[derive(Clone, Debug)]
struct Svc {
    name: Field,
    v6: bool,
    vip: Field,
    port: Field,
    protocol: Field,
    source: Option<Field>,
    /// Same family (else the other).
    snat: Option<bool>,
    udp_timeout: Option<Field>,
    affinity: Option<Field>,
    table: Option<Field>,
    ranges: Option<Vec<Field>>,
    backends: Option<Vec<Backend>>,
}

fn opt<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

fn backend(v6: bool) -> impl Strategy<Value = Backend> {
    let same: &'static [&'static str] =
        if v6 { &["fd00:1::2", "fd00:1::3", "fd00:1::4"] } else { &["10.1.0.2", "10.1.0.3", "10.1.0.4"] };
    let other: &'static [&'static str] = if v6 { &["10.1.0.2"] } else { &["fd00:1::2"] };
    let unusable: &'static [&'static str] =
        if v6 { &["::", "ff02::1"] } else { &["0.0.0.0", "255.255.255.255", "224.0.0.1"] };
    let addr = prop_oneof![6 => pick(same, true), 1 => pick(other, false), 1 => pick(unusable, false)];
    let weight = prop_oneof![
        4 => (0u32..=65535).prop_map(|w| good(w.to_string())),
        1 => prop_oneof![Just(bad("65536")), Just(bad("-1")), Just(bad("heavy"))],
    ];
    (addr, proptest::sample::select(&[5353u16, 8080, 80][..]), opt(weight)).prop_map(|(addr, port, weight)| Backend {
        addr,
        port,
        weight,
    })
}

fn service() -> impl Strategy<Value = Svc> {
    let name = prop_oneof![
        8 => (0..6u8).prop_map(|i| good(format!("svc-{i}"))),
        1 => pick(&["Bad_Name", "\"\"", "dns.example"], false),
        1 => Just(bad("a".repeat(64))),
    ];
    any::<bool>().prop_flat_map(move |v6| {
        let vips: &'static [&'static str] = if v6 { &["2001:db8::10", "fd00::1"] } else { &["192.0.2.10", "198.51.100.1"] };
        let vip = prop_oneof![
            8 => pick(vips, true),
            1 => pick(if v6 { &["::1", "ff02::1", "::ffff:192.0.2.1", "::"] } else { &["0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.1"] }, false),
            1 => pick(&["not-an-ip", "300.1.1.1", "[fd00::1]"], false),
        ];
        let port = prop_oneof![
            8 => proptest::sample::select(&[53u32, 80, 443, 1, 65535][..]).prop_map(|p| good(p.to_string())),
            1 => pick(&["0", "65536", "-1", "http"], false),
        ];
        let protocol = prop_oneof![8 => pick(&["udp", "tcp"], true), 1 => pick(&["sctp", "7"], false)];
        let source = prop_oneof![4 => pick(&["snat", "preserve"], true), 1 => pick(&["nat"], false)];
        let timeout = prop_oneof![3 => pick(&["30", "604800", "1"], true), 1 => pick(&["0", "604801", "x"], false)];
        let affinity = prop_oneof![3 => pick(&["10", "86400"], true), 1 => pick(&["0", "86401"], false)];
        let table = prop_oneof![3 => pick(&["251", "65537", "131071"], true), 1 => pick(&["1000", "0"], false)];
        let same_ranges: &'static [&'static str] =
            if v6 { &["fd00:100::/64", "2001:db8:5::1"] } else { &["203.0.113.0/24", "10.100.0.10"] };
        let range = prop_oneof![
            4 => pick(same_ranges, true),
            1 => pick(if v6 { &["203.0.113.0/24"] } else { &["fd00:100::/64"] }, false),
            1 => pick(&["10.0.0.1/8", "garbage", "fd00::1/129"], false),
        ];
        (
            name.clone(),
            vip,
            port,
            protocol,
            opt(source),
            opt(any::<bool>()),
            opt(timeout),
            opt(affinity),
            opt(table),
            opt(proptest::collection::vec(range, 0..3)),
            opt(proptest::collection::vec(backend(v6), 0..4)),
        )
            .prop_map(
                move |(name, vip, port, protocol, source, snat, udp_timeout, affinity, table, ranges, backends)| Svc {
                    name,
                    v6,
                    vip,
                    port,
                    protocol,
                    source,
                    snat,
                    udp_timeout,
                    affinity,
                    table,
                    ranges,
                    backends,
                },
            )
    })
}

/// Appends `k: value` (quoted when `quote`), noting a refused value.
fn put(text: &mut String, ok: &mut bool, k: &str, f: &Field, quote: bool) {
    *ok &= f.ok;
    let v = if quote { format!("\"{}\"", f.text) } else { f.text.clone() };
    text.push_str(&format!("    {k}: {v}\n"));
}

/// The document and whether the loader must accept it.
fn render(services: &[Svc]) -> (String, bool) {
    let mut ok = true;
    let mut text = String::from(if services.is_empty() { "services: []\n" } else { "services:\n" });
    let (mut names, mut keys) = (HashSet::new(), HashSet::new());
    for s in services {
        text.push_str(&format!("  - name: {}\n", s.name.text));
        ok &= s.name.ok;
        put(&mut text, &mut ok, "vip", &s.vip, true);
        put(&mut text, &mut ok, "port", &s.port, false);
        put(&mut text, &mut ok, "protocol", &s.protocol, false);
        if let Some(f) = &s.source {
            put(&mut text, &mut ok, "source", f, false);
        }
        let preserve = s.source.as_ref().is_some_and(|f| f.text == "preserve");
        if let Some(same) = s.snat {
            let a = match (same, s.v6) {
                (true, false) => "10.0.0.5",
                (true, true) => "fd00::5",
                (false, false) => "fd00::5",
                (false, true) => "10.0.0.5",
            };
            put(&mut text, &mut ok, "snat_address", &Field { text: a.into(), ok: same && !preserve }, true);
        }
        if let Some(f) = &s.udp_timeout {
            put(&mut text, &mut ok, "udp_timeout", f, false);
        }
        if let Some(f) = &s.affinity {
            put(&mut text, &mut ok, "session_affinity_timeout", f, false);
        }
        if let Some(f) = &s.table {
            put(&mut text, &mut ok, "maglev_table_size", f, false);
        }
        if let Some(r) = &s.ranges {
            // An empty list is refused (leave the key out), so is a range twice.
            ok &= !r.is_empty() && r.iter().all(|f| f.ok);
            ok &= r.iter().map(|f| &f.text).collect::<HashSet<_>>().len() == r.len();
            let items: Vec<String> = r.iter().map(|f| format!("\"{}\"", f.text)).collect();
            text.push_str(&format!("    source_ranges: [{}]\n", items.join(", ")));
        }
        if let Some(bs) = &s.backends {
            text.push_str(if bs.is_empty() { "    backends: []\n" } else { "    backends:\n" });
            let mut seen = HashSet::new();
            for b in bs {
                ok &= b.addr.ok && b.weight.as_ref().is_none_or(|w| w.ok);
                let addr = if b.addr.text.contains(':') {
                    format!("[{}]:{}", b.addr.text, b.port)
                } else {
                    format!("{}:{}", b.addr.text, b.port)
                };
                ok &= seen.insert(addr.clone());
                match &b.weight {
                    None => text.push_str(&format!("      - \"{addr}\"\n")),
                    Some(w) => text.push_str(&format!("      - {{address: \"{addr}\", weight: {}}}\n", w.text)),
                }
            }
        }
        ok &= names.insert(s.name.text.clone());
        ok &= keys.insert((s.vip.text.clone(), s.port.text.clone(), s.protocol.text.clone()));
    }
    (text, ok)
}

/// The model's invariants of an accepted file, checked directly as well as
/// through [`crate::state::model::DesiredState::new`].
fn assert_valid(config: &Config) {
    let services = &config.state.services;
    crate::state::model::test_support::assert_invariants(services, "an accepted file");
    for s in services {
        assert_eq!(s.reject_weight, 0, "a file sets no reject share");
        for r in &s.source_ranges {
            assert_eq!(r.addr().is_ipv4(), s.vip.is_ipv4(), "source range {r} of another family in {}", s.name);
        }
    }
}

/// A text edit: at a position (fraction of the length), delete, insert or
/// replace with a YAML-significant character, or duplicate the line.
fn mutate(text: &str, edits: &[(u16, u8, u8)]) -> String {
    const CHARS: &[u8] = b":-[]{}&*!|>#'\" \n\t,?%@`0123456789abc";
    let mut t: Vec<u8> = text.as_bytes().to_vec();
    for (pos, op, ch) in edits {
        if t.is_empty() {
            break;
        }
        let i = usize::from(*pos) * t.len() / 65536;
        let c = CHARS[usize::from(*ch) % CHARS.len()];
        match op % 4 {
            0 => {
                t.remove(i);
            }
            1 => t.insert(i, c),
            2 => t[i] = c,
            _ => {
                let start = t[..i].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                let end = t[i..].iter().position(|b| *b == b'\n').map_or(t.len(), |p| i + p + 1);
                let line = t[start..end].to_vec();
                t.splice(start..start, line);
            }
        }
    }
    String::from_utf8_lossy(&t).into_owned()
}

proptest! {
    #[test]
    fn random_documents_are_accepted_exactly_when_valid(services in proptest::collection::vec(service(), 0..5)) {
        let (text, want_ok) = render(&services);
        match parse("xlb.yaml", &text) {
            Ok(config) => {
                prop_assert!(want_ok, "accepted a document with a refused value or a duplicate:\n{text}");
                assert_valid(&config);
                prop_assert_eq!(config.state.services.len(), services.len());
            }
            Err(e) => prop_assert!(!want_ok, "refused a valid document:\n{text}\nerrors:\n{e}"),
        }
    }

    #[test]
    fn mutated_documents_never_panic_and_accepted_ones_are_valid(
        services in proptest::collection::vec(service(), 1..4),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let (text, _) = render(&services);
        let text = mutate(&text, &edits);
        if let Ok(config) = parse("xlb.yaml", &text) {
            assert_valid(&config);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(services:\n  - )?[ -~\n\t]{0,200}") {
        if let Ok(config) = parse("xlb.yaml", &text) {
            assert_valid(&config);
        }
    }
}
