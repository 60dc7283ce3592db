//! `deploy/Containerfile`'s final stage against the layout `cargo xtask
//! image` builds (`image.rs`): same files from the repository at the same
//! paths, entrypoint, command, user, working directory and labels. Only the
//! base differs (distroless `cc-debian12` there; the libraries `ldd` names,
//! from this machine, here).

use std::collections::{BTreeMap, BTreeSet};

use crate::image::{BINARY, CMD, ENTRYPOINT, LABELS, LICENSES, LICENSE_DIR, REVISION_LABEL, USER, WORKDIR};

/// What a stage sets: image paths of the copied files (with the source's
/// file name), entrypoint, command, user, working directory, labels, ARGs.
#[derive(Debug, Default)]
struct Stage {
    files: BTreeMap<String, String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    user: Option<String>,
    workdir: Option<String>,
    labels: BTreeMap<String, String>,
    args: BTreeSet<String>,
}

/// The instructions of a Containerfile: continuation lines joined, comments
/// and blank lines dropped; (KEYWORD, rest).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let full = std::mem::take(&mut current);
        let (kw, rest) = full.trim().split_once(char::is_whitespace).unwrap_or((full.trim(), ""));
        out.push((kw.to_ascii_uppercase(), rest.trim().to_string()));
    }
    out
}

/// Whitespace-separated words, double quotes grouping (and removed).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// Parses the final stage (after the last FROM); unknown instructions are
/// errors, so that anything new there must be added to the layout too.
fn final_stage(text: &str) -> Result<Stage, String> {
    let all = instructions(text);
    let start = all.iter().rposition(|(k, _)| k == "FROM").ok_or("no FROM")?;
    let mut stage = Stage::default();
    for (kw, rest) in &all[start + 1..] {
        let json =
            || serde_json::from_str::<Vec<String>>(rest).map_err(|e| format!("{kw} {rest}: not a JSON array: {e}"));
        match kw.as_str() {
            "COPY" => {
                let w: Vec<String> = words(rest).into_iter().filter(|w| !w.starts_with("--")).collect();
                let (dest, sources) = w.split_last().ok_or_else(|| format!("COPY {rest}: no destination"))?;
                for src in sources {
                    let name = src.rsplit('/').next().unwrap_or(src).to_string();
                    let path = if dest.ends_with('/') { format!("{dest}{name}") } else { dest.clone() };
                    stage.files.insert(path, name);
                }
            }
            "ENTRYPOINT" => stage.entrypoint = Some(json()?),
            "CMD" => stage.cmd = Some(json()?),
            "USER" => stage.user = Some(rest.clone()),
            "WORKDIR" => stage.workdir = Some(rest.clone()),
            "LABEL" => {
                for w in words(rest) {
                    let (k, v) = w.split_once('=').ok_or_else(|| format!("LABEL {w}: not KEY=VALUE"))?;
                    stage.labels.insert(k.to_string(), v.to_string());
                }
            }
            "ARG" => {
                stage.args.insert(rest.split('=').next().unwrap_or_default().to_string());
            }
            other => return Err(format!("{other} {rest}: not part of the layout `cargo xtask image` builds")),
        }
    }
    Ok(stage)
}

/// How the Containerfile's final stage differs from the xtask image layout
/// (empty: same layout).
fn layout_differences(text: &str) -> Vec<String> {
    let stage = match final_stage(text) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let mut diffs = Vec::new();
    let mut want_files: BTreeMap<String, String> =
        LICENSES.iter().map(|l| (format!("{LICENSE_DIR}{l}"), (*l).to_string())).collect();
    want_files.insert(BINARY.to_string(), String::new());
    let got: BTreeSet<&String> = stage.files.keys().collect();
    if got != want_files.keys().collect::<BTreeSet<_>>() {
        diffs.push(format!("files: Containerfile {got:?}, xtask image {:?}", want_files.keys().collect::<Vec<_>>()));
    }
    for (path, name) in &stage.files {
        if want_files.get(path).is_some_and(|want| !want.is_empty() && want != name) {
            diffs.push(format!("{path}: copied from a file named {name}"));
        }
    }
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    if stage.entrypoint != Some(strings(ENTRYPOINT)) {
        diffs.push(format!("ENTRYPOINT {:?}, xtask image {ENTRYPOINT:?}", stage.entrypoint));
    }
    if stage.cmd != Some(strings(CMD)) {
        diffs.push(format!("CMD {:?}, xtask image {CMD:?}", stage.cmd));
    }
    if stage.user.as_deref() != Some(USER) {
        diffs.push(format!("USER {:?}, xtask image {USER}", stage.user));
    }
    if stage.workdir.as_deref().unwrap_or("/") != WORKDIR {
        diffs.push(format!("WORKDIR {:?}, xtask image {WORKDIR}", stage.workdir));
    }
    let mut want_labels: BTreeMap<String, String> =
        LABELS.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
    want_labels.insert(REVISION_LABEL.to_string(), "${XLB_GIT_COMMIT}".to_string());
    if stage.labels != want_labels {
        diffs.push(format!("LABEL {:?}, xtask image {want_labels:?}", stage.labels));
    }
    if !stage.args.contains("XLB_GIT_COMMIT") {
        diffs.push("no `ARG XLB_GIT_COMMIT` in the final stage (the revision label needs it)".to_string());
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn containerfile() -> String {
        std::fs::read_to_string(crate::util::workspace_root().join("deploy/Containerfile"))
            .expect("deploy/Containerfile")
    }

    #[test]
    fn deploy_containerfile_has_the_xtask_image_layout() {
        let diffs = layout_differences(&containerfile());
        assert!(
            diffs.is_empty(),
            "deploy/Containerfile and `cargo xtask image` (xtask/src/image.rs) differ:\n{}",
            diffs.join("\n")
        );
    }

    #[test]
    fn a_different_layout_is_found() {
        let text = containerfile();
        for (from, to) in [
            ("ENTRYPOINT [\"/xlb\"]", "ENTRYPOINT [\"/usr/bin/xlb\"]"),
            ("USER 0", "USER 65532"),
            ("CMD [\"--help\"]", "CMD [\"agent\"]"),
            ("org.opencontainers.image.title=\"xlb\"", "org.opencontainers.image.title=\"lb\""),
            ("/home/builder/xlb-bin /xlb", "/home/builder/xlb-bin /bin/xlb"),
            ("USER 0", "USER 0\nWORKDIR /var/lib/xlb"),
            ("USER 0", "USER 0\nRUN true"),
        ] {
            assert!(text.contains(from), "the Containerfile no longer has {from:?}; update this test");
            let changed = text.replacen(from, to, 1);
            assert!(!layout_differences(&changed).is_empty(), "{from:?} -> {to:?} not noticed");
        }
    }

    #[test]
    fn words_and_continuations() {
        assert_eq!(words(r#"a="x y" b=c"#), vec!["a=x y", "b=c"]);
        let ins = instructions("# c\nFROM x AS y\nCOPY a \\\n  # note\n  b /d/\n\nUSER 0\n");
        let kws: Vec<&str> = ins.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kws, vec!["FROM", "COPY", "USER"]);
        assert_eq!(words(&ins[1].1), vec!["a", "b", "/d/"]);
    }
}
