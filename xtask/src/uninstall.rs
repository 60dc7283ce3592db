//! Runs deploy/README.md's uninstall commands offline against
//! `deploy/daemonset.yaml` and checks that they remove exactly
//! `--keep-on-exit` from the agent's args, wherever it is in the list.
//!
//! The README's "Uninstall" code block is run by bash with a stand-in
//! `kubectl` first on `PATH`: reading the DaemonSet (`get ds xlb`) and
//! patching it (`patch ds xlb`) become `kubectl patch --local` on a copy of
//! the manifest (no cluster, `KUBECONFIG` pointing nowhere); every other
//! command (`rollout status`, `delete`) is only recorded. Three manifests:
//! the shipped one, one edited the way users do (flags added before
//! `--keep-on-exit`, so its index moves), and one without the flag (the
//! commands must fail and change nothing).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::util::{info, output, target_dir, workspace_root};

/// The flag the uninstall commands must remove.
const FLAG: &str = "--keep-on-exit";

/// The agent's args, one per line, as a go-template for `kubectl -o`.
const ARGS_TEMPLATE: &str = "{{range (index .spec.template.spec.containers 0).args}}{{.}}{{\"\\n\"}}{{end}}";

/// The stand-in `kubectl`.
const SHIM: &str = r#"#!/bin/bash
# Offline stand-in for kubectl (written by cargo xtask validate): the
# DaemonSet is read from and patched into a local manifest.
set -euo pipefail
args=("$@")
if [[ "${args[0]:-}" == "-n" ]]; then args=("${args[@]:2}"); fi
case "${args[0]:-} ${args[1]:-} ${args[2]:-}" in
  "get ds xlb")
    echo "get $*" >> "$XLB_UNINSTALL_LOG"
    exec "$XLB_REAL_KUBECTL" patch --local -f "$XLB_MANIFEST" --type merge -p '{}' "${args[@]:3}" ;;
  "patch ds xlb")
    echo "patch $*" >> "$XLB_UNINSTALL_LOG"
    "$XLB_REAL_KUBECTL" patch --local -f "$XLB_MANIFEST" "${args[@]:3}" -o yaml > "$XLB_MANIFEST.new"
    mv "$XLB_MANIFEST.new" "$XLB_MANIFEST" ;;
  *)
    echo "skipped $*" >> "$XLB_UNINSTALL_LOG" ;;
esac
"#;

/// The indented code block of the `## Uninstall` section of `readme`,
/// dedented, one command per line.
fn uninstall_block(readme: &str) -> Result<Vec<String>> {
    let section = format!("\n{readme}");
    let section = section
        .split("\n## ")
        .find(|s| s.starts_with("Uninstall"))
        .context("deploy/README.md has no \"## Uninstall\" section")?;
    let lines: Vec<String> = section
        .lines()
        .skip_while(|l| !l.starts_with("    "))
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .filter(|l| !l.trim().is_empty())
        .map(|l| l[4..].to_string())
        .collect();
    if lines.is_empty() {
        bail!("the Uninstall section of deploy/README.md has no indented command block");
    }
    // A single-quoted argument may span lines: one command per entry.
    let mut commands: Vec<String> = Vec::new();
    for l in lines {
        match commands.last_mut() {
            Some(open) if open.matches('\'').count() % 2 == 1 => {
                open.push('\n');
                open.push_str(&l);
            }
            _ => commands.push(l),
        }
    }
    // Only kubectl commands, shell variables and comments: nothing else of
    // the README is ever run.
    for l in &commands {
        let assignment = l
            .split_once('=')
            .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        if !(l.starts_with("kubectl ") || l.starts_with('#') || assignment) {
            bail!("the uninstall block of deploy/README.md has a line that is not a kubectl command: {l:?}");
        }
    }
    Ok(commands)
}

/// The agent's args in `manifest`.
fn args_of(kubectl: &Path, manifest: &Path) -> Result<Vec<String>> {
    let text = output(
        Command::new(kubectl)
            .env("KUBECONFIG", "/nonexistent")
            .args(["patch", "--local", "--type", "merge", "-p", "{}", "-f"])
            .arg(manifest)
            .arg("-o")
            .arg(format!("go-template={ARGS_TEMPLATE}")),
    )?;
    Ok(text.lines().map(str::to_string).collect())
}

/// `kubectl` on `PATH`.
pub fn find_kubectl() -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .context("kubectl is not installed; `cargo xtask setup` installs it (as root)")
}

/// Runs the block with the stand-in on `manifest` (modified in place);
/// returns whether bash succeeded and the stand-in's log.
fn run_block(dir: &Path, kubectl: &Path, block: &[String], manifest: &Path) -> Result<(bool, String)> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let shim = bin.join("kubectl");
    std::fs::write(&shim, SHIM).with_context(|| format!("cannot write {}", shim.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
    let log = dir.join("commands.log");
    let _ = std::fs::remove_file(&log);
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::var_os("PATH").iter().flat_map(std::env::split_paths)),
    )?;
    let script = format!("set -euo pipefail\n{}\n", block.join("\n"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(workspace_root())
        .env("PATH", path)
        .env("KUBECONFIG", "/nonexistent")
        .env("XLB_REAL_KUBECTL", kubectl)
        .env("XLB_MANIFEST", manifest)
        .env("XLB_UNINSTALL_LOG", &log)
        .output()
        .context("cannot run bash")?;
    let mut text = std::fs::read_to_string(&log).unwrap_or_default();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// What the args should be after the uninstall patch: `before` without
/// the one [`FLAG`].
fn expected_after(before: &[String]) -> Vec<String> {
    before.iter().filter(|a| *a != FLAG).cloned().collect()
}

/// The check (see the module documentation).
pub fn check_uninstall() -> Result<()> {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("deploy/README.md")).context("cannot read deploy/README.md")?;
    let block = uninstall_block(&readme)?;
    let shipped =
        std::fs::read_to_string(root.join("deploy/daemonset.yaml")).context("cannot read deploy/daemonset.yaml")?;
    let kubectl = find_kubectl()?;
    let dir = target_dir().join("xtask").join("uninstall");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let flag_line = format!("            - {FLAG}\n");
    if !shipped.contains(&flag_line) {
        bail!("deploy/daemonset.yaml does not pass {FLAG} as its own args line; the uninstall check expects it");
    }
    let edited = shipped.replace(
        &flag_line,
        &format!("            - --vip-pool\n            - 192.0.2.0/24\n            - --maglev-seed\n            - \"7\"\n{flag_line}"),
    );
    let without = shipped.replace(&flag_line, "");
    for (name, text, should_remove) in
        [("shipped", &shipped, true), ("edited", &edited, true), ("without", &without, false)]
    {
        let manifest = dir.join(format!("daemonset-{name}.yaml"));
        std::fs::write(&manifest, text).with_context(|| format!("cannot write {}", manifest.display()))?;
        let before = args_of(&kubectl, &manifest)?;
        let (ok, log) = run_block(&dir, &kubectl, &block, &manifest)?;
        let after = args_of(&kubectl, &manifest)?;
        if should_remove {
            if !ok {
                bail!("deploy/README.md's uninstall commands failed on the {name} daemonset.yaml:\n{log}");
            }
            if !before.iter().any(|a| a == FLAG) || after != expected_after(&before) {
                bail!(
                    "deploy/README.md's uninstall commands on the {name} daemonset.yaml should remove only {FLAG}:\n  before: {before:?}\n  after:  {after:?}\n{log}"
                );
            }
            if !log.lines().any(|l| l.starts_with("patch ")) {
                bail!("deploy/README.md's uninstall commands never patch the DaemonSet:\n{log}");
            }
        } else if ok || after != before {
            bail!(
                "deploy/README.md's uninstall commands should fail and change nothing when {FLAG} is absent (ok: {ok}):\n  before: {before:?}\n  after:  {after:?}\n{log}"
            );
        }
    }
    info(&format!(
        "uninstall commands of deploy/README.md: remove exactly {FLAG} (shipped and edited args), refuse when it is absent (offline)"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_the_uninstall_sections_commands() {
        let readme = "# T\n\n## Upgrades\n\n    kubectl apply -k deploy/\n\n## Uninstall\n\nText.\n\n    I=$(kubectl get x)\n    kubectl patch ds xlb   # note\n\n    kubectl delete -k deploy/\n\nMore text.\n\n    rm -rf /\n";
        let block = uninstall_block(readme).unwrap();
        assert_eq!(block, ["I=$(kubectl get x)", "kubectl patch ds xlb   # note", "kubectl delete -k deploy/"]);
        assert!(uninstall_block("## Uninstall\n\n    rm -rf /sys/fs/bpf/xlb\n").is_err());
        let multi =
            uninstall_block("## Uninstall\n\n    kubectl patch -p '[\n      {\"op\":1}]'\n    kubectl x\n").unwrap();
        assert_eq!(multi, ["kubectl patch -p '[\n  {\"op\":1}]'", "kubectl x"]);
        assert!(uninstall_block("## Install\n\n    kubectl apply\n").is_err());
    }

    #[test]
    fn the_shipped_readme_block_parses() {
        let readme = std::fs::read_to_string(workspace_root().join("deploy/README.md")).unwrap();
        let block = uninstall_block(&readme).unwrap();
        assert!(block.iter().any(|l| l.starts_with("kubectl -n xlb-system patch ds xlb")), "{block:?}");
    }

    #[test]
    fn expected_after_drops_only_the_flag() {
        let before: Vec<String> = ["agent", "--keep-on-exit", "--log-level", "info"].map(String::from).to_vec();
        assert_eq!(expected_after(&before), ["agent", "--log-level", "info"]);
    }
}
