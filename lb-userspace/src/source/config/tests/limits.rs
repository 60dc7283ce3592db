//! The bounds on what one file may cost: services, aliases, nesting, size.
use super::*;

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
