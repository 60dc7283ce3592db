//! The BGP component of `deploy/` (`deploy/bgp/`: `--announce bgp` and a
//! BIRD 2 sidecar), checked offline by `cargo xtask validate`: `deploy/`
//! with the component is rendered with `kubectl kustomize`, the result is
//! validated against the Kubernetes schemas like the other manifests, and
//! the render is checked to do what the component says (the agent, still
//! the first container, gets `--announce bgp`; a `bird` container mounts a
//! ConfigMap holding exactly `deploy/bgp/bird.conf`).

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::util::{output, target_dir, workspace_root};

/// Checks what the render must contain; prints `ok` or the problems.
const CHECK: &str = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
conf = open(sys.argv[2]).read()
problems = []
ds = [d for d in docs if d.get("kind") == "DaemonSet"]
cms = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
if len(ds) != 1:
    problems.append("expected one DaemonSet, found %d" % len(ds))
else:
    spec = ds[0]["spec"]["template"]["spec"]
    cs = spec["containers"]
    if cs[0].get("name") != "agent" or cs[0].get("args", [])[-2:] != ["--announce", "bgp"]:
        problems.append("the first container is not the agent with --announce bgp: %r" % cs[0].get("args"))
    bird = [c for c in cs if c.get("name") == "bird"]
    if len(bird) != 1:
        problems.append("no container named bird")
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    cm = vols.get("bird-config", {}).get("configMap", {}).get("name")
    if cm not in cms:
        problems.append("the bird-config volume names no rendered ConfigMap: %r" % cm)
    elif cms[cm].get("data", {}).get("bird.conf") != conf:
        problems.append("ConfigMap %s does not hold deploy/bgp/bird.conf as it is" % cm)
    if bird and not any(m.get("name") == "bird-config" and m.get("mountPath") == "/etc/bird"
                        for m in bird[0].get("volumeMounts", [])):
        problems.append("the bird container does not mount bird-config at /etc/bird")
print("\n".join(problems) if problems else "ok")
"#;

/// `to` relative to the directory `from` (both absolute, no `..`).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// Renders `deploy/` with the component; returns the rendered file.
pub fn render() -> Result<PathBuf> {
    let root = workspace_root().canonicalize().context("cannot resolve the workspace root")?;
    let dir = target_dir().join("xtask").join("bgp-component");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    // kustomize takes only relative paths to other kustomizations.
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n  - {}\n",
        relative(&dir, &root.join("deploy")).display(),
        relative(&dir, &root.join("deploy/bgp")).display()
    );
    std::fs::write(dir.join("kustomization.yaml"), kustomization).context("cannot write the kustomization")?;
    let kubectl = crate::uninstall::find_kubectl()?;
    let rendered = output(Command::new(kubectl).arg("kustomize").arg(&dir))
        .context("`kubectl kustomize` of deploy/ with the deploy/bgp component failed")?;
    let path = dir.join("rendered.yaml");
    std::fs::write(&path, rendered).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Checks the render's content (see the module documentation) with the
/// validator's Python (which has PyYAML).
pub fn check(python: &Path, rendered: &Path) -> Result<()> {
    let conf = workspace_root().join("deploy/bgp/bird.conf");
    let out = output(Command::new(python).arg("-c").arg(CHECK).arg(rendered).arg(&conf))
        .with_context(|| format!("cannot check {}", rendered.display()))?;
    if out.trim() != "ok" {
        bail!(
            "deploy/ with the deploy/bgp component ({}):\n  {}",
            rendered.display(),
            out.trim().replace('\n', "\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/w/target/xtask/b"), Path::new("/w/deploy")), PathBuf::from("../../../deploy"));
        assert_eq!(relative(Path::new("/t/x"), Path::new("/w/deploy/bgp")), PathBuf::from("../../w/deploy/bgp"));
    }
}
