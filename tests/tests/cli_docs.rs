//! What the CLI says about itself matches what it prints: `xlb services
//! --help` names the columns `xlb services` prints, and `xlb maglev`'s
//! max/avg judges a weighted table against its weights (a correct 1:3 split
//! is 1.0, not 1.5). Needs root (a running agent).

mod common;

use common::*;
use serde_json::Value;
use xlb_tests::Topology;

/// `dns` with pod 0 at weight 1 and pod 1 at weight 3.
fn weighted() -> String {
    config(&[svc(
        "dns",
        Topology::VIP_V4.into(),
        53,
        "udp",
        "snat",
        &[
            format!("{{address: \"{}\", weight: 1}}", backend(Fam::V4, 0, UDP_BACKEND_PORT)),
            format!("{{address: \"{}\", weight: 3}}", backend(Fam::V4, 1, UDP_BACKEND_PORT)),
        ],
    )])
}

fn stdout(agent: &xlb_tests::Agent, args: &[&str]) -> String {
    let out = agent.cli(args).expect("run the CLI");
    assert!(out.status.success(), "xlb {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn services_help_names_the_printed_columns() {
    let env = Env::start(2, &weighted(), &[]);
    let agent = env.agent();

    // The table's header, as printed.
    let table = stdout(agent, &["services"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert!(header.len() >= 7, "no header in:\n{table}");
    // `--help`'s summary line must name them all, in order.
    let help = stdout(agent, &["services", "--help"]);
    let summary = help.lines().next().unwrap_or_default();
    let mut rest = summary;
    for col in &header {
        let Some(at) = rest.find(col) else {
            panic!("`xlb services --help` does not name the column {col} (in order); printed header {header:?}; help:\n{help}");
        };
        rest = &rest[at + col.len()..];
    }
    // ... and nothing the table does not print.
    let listed: Vec<&str> = summary
        .split_once(':')
        .map(|(_, cols)| cols)
        .unwrap_or_default()
        .split([',', '.'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(listed, header, "help: {summary:?}");
}

#[test]
fn maglev_max_avg_compares_with_the_weights() {
    let env = Env::start(2, &weighted(), &[]);
    let agent = env.agent();
    // A 1:3 table: the max/avg of the JSON (key max_avg) and of the table
    // compare each backend with its weight's share.
    let json: Value = serde_json::from_str(&stdout(agent, &["maglev", "dns", "-o", "json"])).expect("maglev JSON");
    let max_avg = json["max_avg"].as_f64().unwrap_or_else(|| panic!("no max_avg in {json}"));
    assert!((1.0..1.01).contains(&max_avg), "max_avg {max_avg} for a 1:3 table: {json}");
    let slots: Vec<u64> =
        json["backends"].as_array().expect("backends").iter().map(|b| b["slots"].as_u64().expect("slots")).collect();
    assert_eq!(slots.len(), 2, "{json}");
    let ratio = slots[1] as f64 / slots[0] as f64;
    assert!((2.9..3.1).contains(&ratio), "slots {slots:?}");
    let table = stdout(agent, &["maglev", "dns"]);
    assert!(table.lines().next().unwrap_or_default().contains("max/avg 1.00"), "{table}");
}
