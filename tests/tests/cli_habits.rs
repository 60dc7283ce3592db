//! CLI habits (issue 16): shell completions that the shell accepts, man
//! pages, `--version` with the commit, `--no-headers`, and one way to name
//! a service in `backends`, `flows` and `maglev` (positional or
//! `--service`), an unknown one being an error that lists the services.
//! The last two need root (a running agent); the others only the binary.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;
use xlb_tests::xlb_binary;

/// Runs `xlb ARGS` (no agent), returning its output.
fn xlb(args: &[&str]) -> Output {
    let bin = xlb_binary().expect("xlb binary (XLB_BIN)");
    Command::new(&bin).args(args).stdin(Stdio::null()).output().expect("run xlb")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn completions_are_valid_scripts() {
    for (shell, marker) in [("bash", "complete -F _xlb"), ("zsh", "#compdef xlb"), ("fish", "complete -c xlb")] {
        let out = xlb(&["completions", shell]);
        assert!(out.status.success(), "xlb completions {shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell} completion lacks {marker:?}:\n{script}");
        for sub in ["services", "backends", "flows", "maglev", "status", "top", "no-headers"] {
            assert!(script.contains(sub), "{shell} completion does not offer {sub}");
        }
    }
    // bash parses the bash script (`bash -n`: syntax only, runs nothing).
    let dir = tempdir();
    let path = dir.join("xlb.bash");
    std::fs::write(&path, xlb(&["completions", "bash"]).stdout).expect("write script");
    let check = Command::new("bash").arg("-n").arg(&path).output().expect("run bash -n");
    assert!(check.status.success(), "bash -n rejects the completion script: {}", text(&check.stderr));
    // ... and, sourced, registers a completion for xlb.
    let registered = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p xlb", path.display()))
        .output()
        .expect("run bash");
    assert!(text(&registered.stdout).contains("_xlb"), "{}", text(&registered.stderr));
    let _ = std::fs::remove_dir_all(&dir);

    let out = xlb(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is bad usage");
}

/// A directory of this test process under the system's temporary directory.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("xlb-cli-habits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

#[test]
fn man_pages_have_a_title_per_command_and_the_examples() {
    let dir = tempdir().join("man");
    let out = xlb(&["man-pages", dir.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "xlb man-pages: {}", text(&out.stderr));
    for (page, title) in [
        ("xlb.1", ".TH xlb 1 "),
        ("xlb-services.1", ".TH xlb-services 1 "),
        ("xlb-backends.1", ".TH xlb-backends 1 "),
        ("xlb-flows.1", ".TH xlb-flows 1 "),
        ("xlb-maglev.1", ".TH xlb-maglev 1 "),
        ("xlb-top.1", ".TH xlb-top 1 "),
        ("xlb-agent.1", ".TH xlb-agent 1 "),
        ("xlb-completions.1", ".TH xlb-completions 1 "),
    ] {
        let roff = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(roff.lines().any(|l| l.starts_with(title)), "{page} has no `{title}` header:\n{roff}");
        assert!(roff.contains(".SH NAME") && roff.contains(".SH SYNOPSIS"), "{page}:\n{roff}");
        assert!(roff.contains("Examples:"), "{page} has no examples");
    }
    assert!(!dir.join("xlb-man-pages.1").exists(), "the hidden command got a page");
    let _ = std::fs::remove_dir_all(dir.parent().expect("parent"));
}

#[test]
fn version_names_the_commit() {
    let out = xlb(&["--version"]);
    assert!(out.status.success());
    let v = text(&out.stdout);
    let commit = v
        .trim()
        .strip_prefix("xlb ")
        .and_then(|r| r.split_once(" (commit "))
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`xlb --version` is not `xlb VERSION (commit HASH)`: {v:?}"));
    assert!(
        commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "the commit should be a short hash (this test runs from a git checkout): {v:?}"
    );
    // It names a commit of this repository.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let known = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(&root)
        .status()
        .expect("run git");
    assert!(known.success(), "{commit} is not a commit of this repository");
}

/// `--no-headers`, and `backends`/`flows`/`maglev` with the service given
/// either way; an unknown service fails in each (exit 1) naming the services.
#[test]
fn no_headers_and_service_selection() {
    let yaml = config(&dns_and_web(Fam::V4, "snat", 0..2));
    let mut env = Env::start(2, &yaml, &[]);
    env.servers = udp_servers(&env.topo, Fam::V4, 0..2, UDP_BACKEND_PORT);
    let ports: Vec<u16> = (0..4).map(|i| 28000 + i).collect();
    udp_flows_backends(&env, Fam::V4, &ports, vip4(53), &|i| Fam::V4.pod_gw(i));
    let agent = env.agent();
    let run = |args: &[&str]| agent.cli(args).expect("run xlb");
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(out.status.success(), "xlb {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };

    for (args, header) in [
        (&["services"][..], "NAME"),
        (&["backends"], "SERVICE"),
        (&["flows"], "SERVICE"),
        (&["stats"], "COUNTER"),
        (&["maglev", "dns"], "service dns"),
    ] {
        let with = ok(args);
        let without = ok(&[args, &["--no-headers"]].concat());
        assert!(with.lines().next().is_some_and(|l| l.starts_with(header)), "{args:?}:\n{with}");
        assert!(!without.contains(header), "{args:?} --no-headers still has {header:?}:\n{without}");
        let body: Vec<&str> = with.lines().filter(|l| !l.starts_with(header) && !l.starts_with("BACKEND")).collect();
        // The same rows (first column; counters and ages may move between runs).
        let first = |lines: Vec<&str>| -> Vec<String> {
            lines.iter().map(|l| l.split_whitespace().next().unwrap_or_default().to_owned()).collect()
        };
        assert_eq!(first(without.lines().collect()), first(body.clone()), "{args:?}: only the header lines go");
        assert!(!body.is_empty(), "{args:?}: no rows");
    }

    // The service, positional or with --service, selects the same rows.
    for sub in ["backends", "flows", "maglev"] {
        let a = ok(&[sub, "dns", "-o", "json"]);
        let b = ok(&[sub, "--service", "dns", "-o", "json"]);
        assert_eq!(a, b, "xlb {sub} dns vs --service dns");
        assert!(a.contains("\"dns\"") && !a.contains("\"web\""), "xlb {sub} dns:\n{a}");
        let out = run(&[sub, "dns", "--service", "web"]);
        assert_eq!(out.status.code(), Some(2), "both forms at once is bad usage: {}", text(&out.stderr));
        for form in [&[sub, "no-such"][..], &[sub, "--service", "no-such"]] {
            let out = run(form);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "xlb {form:?}: {err}");
            assert!(
                err.contains("no service named \"no-such\"") && err.contains("dns") && err.contains("web"),
                "xlb {form:?} should name the services there are: {err}"
            );
            assert!(out.stdout.is_empty(), "xlb {form:?} printed {}", text(&out.stdout));
        }
    }
}
