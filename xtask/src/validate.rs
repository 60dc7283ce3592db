//! Offline validation of the Kubernetes manifests in `deploy/` against the
//! Kubernetes API schemas.
//!
//! The validator is `kubernetes-validate` from PyPI (a pinned version),
//! which bundles the JSON schemas of every Kubernetes release it supports:
//! nothing is fetched when the manifests are validated. `cargo xtask setup`
//! installs it into a virtualenv under `~/.cache/xlb/` (idempotently);
//! `cargo xtask test` (and `cargo xtask validate`) runs it in strict mode
//! (unknown fields are errors) on every document of `deploy/*.yaml` and
//! `deploy/examples/*.yaml`, then checks that it rejects a deliberately
//! broken DaemonSet, so a validator that accepts anything cannot pass.
//!
//! Then deploy/README.md's uninstall commands are run offline against the
//! DaemonSet (see the `uninstall` module).
//!
//! The Gateway API kinds (`gateway.networking.k8s.io/v1` GatewayClass,
//! Gateway, TCPRoute, UDPRoute, ReferenceGrant) are CRDs, not in the
//! validator's schemas: for those exact kinds and that apiVersion the
//! validator's "no schema" warning is accepted (see [`GATEWAY_KINDS`]), as
//! for the Prometheus Operator's `monitoring.coreos.com/v1` ServiceMonitor
//! ([`CRD_KINDS`]); a misspelled kind or another apiVersion is still an error.
//!
//! `deploy/kustomization.yaml` is not a Kubernetes object: it is not given
//! to the validator, but every file it lists must exist and every manifest
//! in `deploy/` must be listed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::util::{info, is_root, output, run, target_dir, workspace_root};

/// The PyPI package and its pinned version.
const VALIDATOR_PACKAGE: &str = "kubernetes-validate";
const VALIDATOR_VERSION: &str = "1.37.0";
/// The Kubernetes release whose schemas the manifests must satisfy.
pub const KUBERNETES_VERSION: &str = "1.33.0";
/// Set (to anything) to make `cargo xtask setup` skip installing the
/// validator (the image build does: it needs only the binary).
const SKIP_ENV: &str = "XLB_SKIP_MANIFEST_VALIDATOR";
/// The kustomization file, skipped by the schema validation.
const KUSTOMIZATION: &str = "kustomization.yaml";

/// The apiVersion of the Gateway API kinds the examples use.
const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The Gateway API kinds (CRDs, without a schema in the validator) whose
/// "no schema" warning is not a problem.
const GATEWAY_KINDS: [&str; 5] = ["GatewayClass", "Gateway", "TCPRoute", "UDPRoute", "ReferenceGrant"];

/// The CRDs (apiVersion, kinds) the manifests may use without a schema:
/// the Gateway API and the Prometheus Operator's ServiceMonitor.
const CRD_KINDS: [(&str, &[&str]); 2] =
    [(GATEWAY_API_VERSION, &GATEWAY_KINDS), ("monitoring.coreos.com/v1", &["ServiceMonitor"])];

/// The directories (under the workspace root) of manifests validated
/// besides `deploy/` itself (which must also match its kustomization).
const MORE_MANIFEST_DIRS: [&str; 3] = ["deploy/examples", "deploy/monitoring", "docs/examples"];

/// Whether `line` is the validator's "no schema" warning for one of the
/// [`CRD_KINDS`] at its apiVersion.
fn is_known_crd_without_schema(line: &str) -> bool {
    line.starts_with("WARN ")
        && CRD_KINDS.iter().any(|(version, kinds)| {
            kinds
                .iter()
                .any(|k| line.contains(&format!(" Couldn't find schema for kind {k} with api version {version} ")))
        })
}

/// The virtualenv of the pinned validator: `$XDG_CACHE_HOME/xlb/...`, else
/// `~/.cache/xlb/...`, else under the target directory.
fn venv_dir() -> PathBuf {
    let name = format!("{VALIDATOR_PACKAGE}-{VALIDATOR_VERSION}");
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")));
    match cache {
        Some(c) => c.join("xlb").join(name),
        None => target_dir().join("xtask").join(name),
    }
}

fn validator_exe(venv: &Path) -> PathBuf {
    venv.join("bin").join(VALIDATOR_PACKAGE)
}

/// The installed validator's version, when it runs.
fn installed_version(venv: &Path) -> Option<String> {
    let out = Command::new(validator_exe(venv)).arg("--version").stdin(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `cargo xtask setup`'s step: install the validator unless it is there.
/// A failure is reported but does not fail the setup (only `cargo xtask
/// test` needs the validator, and it tries again, failing then).
pub fn setup_validator() {
    if std::env::var_os(SKIP_ENV).is_some() {
        info(&format!("{VALIDATOR_PACKAGE}: skipped ({SKIP_ENV} is set)"));
        return;
    }
    if let Err(e) = ensure_validator() {
        info(&format!(
            "{VALIDATOR_PACKAGE}: cannot install it ({e:#}); `cargo xtask test` needs it to validate deploy/"
        ));
    }
}

/// Installs the pinned validator into its virtualenv unless it is already
/// there; returns the path of its executable.
pub fn ensure_validator() -> Result<PathBuf> {
    let venv = venv_dir();
    let exe = validator_exe(&venv);
    if installed_version(&venv).as_deref() == Some(VALIDATOR_VERSION) {
        info(&format!("{VALIDATOR_PACKAGE} {VALIDATOR_VERSION}: {}", exe.display()));
        return Ok(exe);
    }
    info(&format!("{VALIDATOR_PACKAGE} {VALIDATOR_VERSION}: missing, installing it from PyPI into {}", venv.display()));
    ensure_python_venv()?;
    if venv.exists() {
        std::fs::remove_dir_all(&venv).with_context(|| format!("cannot remove the stale {}", venv.display()))?;
    }
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let installed = run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).and_then(|()| {
        run(Command::new(venv.join("bin").join("python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
            .arg(format!("{VALIDATOR_PACKAGE}=={VALIDATOR_VERSION}")))
    });
    if let Err(e) = installed {
        let _ = std::fs::remove_dir_all(&venv);
        return Err(e.context(format!("cannot install {VALIDATOR_PACKAGE} from PyPI")));
    }
    match installed_version(&venv) {
        Some(v) if v == VALIDATOR_VERSION => {
            info(&format!("{VALIDATOR_PACKAGE} {VALIDATOR_VERSION}: installed at {}", exe.display()));
            Ok(exe)
        }
        other => bail!(
            "{VALIDATOR_PACKAGE} was installed into {} but `{} --version` says {other:?}, not {VALIDATOR_VERSION}",
            venv.display(),
            exe.display()
        ),
    }
}

/// Makes sure `python3 -m venv` works, installing Debian's python3-venv
/// (as root) when it does not.
fn ensure_python_venv() -> Result<()> {
    let works = || {
        Command::new("python3")
            .args(["-c", "import venv, ensurepip"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works() {
        return Ok(());
    }
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        bail!("python3 with the venv module is needed (Debian: apt-get install python3-venv)");
    }
    info("python3 venv: missing, installing python3-venv");
    run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "python3", "python3-venv"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if !works() {
        bail!("python3 -m venv still does not work after installing python3-venv");
    }
    Ok(())
}

/// The YAML files of `dir` (sorted), without the kustomization.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| p.file_name().is_some_and(|n| n != KUSTOMIZATION))
        .collect();
    files.sort();
    Ok(files)
}

/// Validates every manifest of `deploy/` and `deploy/examples/` against the
/// schemas of [`KUBERNETES_VERSION`], strictly, checks the kustomization,
/// and makes sure the validator rejects a broken manifest.
pub fn validate_manifests() -> Result<()> {
    let exe = ensure_validator()?;
    let deploy = workspace_root().join("deploy");
    let manifests = yaml_files(&deploy)?;
    if manifests.is_empty() {
        bail!("no manifests in {}", deploy.display());
    }
    let mut examples = Vec::new();
    for dir in MORE_MANIFEST_DIRS.map(|d| workspace_root().join(d)) {
        if dir.is_dir() {
            examples.extend(yaml_files(&dir)?);
        }
    }

    check_kustomization(&exe, &deploy, &manifests)?;

    let files: Vec<PathBuf> = manifests.iter().chain(&examples).cloned().collect();
    let rel: Vec<String> =
        files.iter().map(|f| f.strip_prefix(workspace_root()).unwrap_or(f).display().to_string()).collect();
    let (ok, text) = run_validator(&exe, &files)?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        info(line);
    }
    let problems = problems(ok, &text, &rel);
    if !problems.is_empty() {
        bail!(
            "the manifests do not validate against Kubernetes {KUBERNETES_VERSION} (strict):\n  {}",
            problems.join("\n  ")
        );
    }
    info(&format!(
        "{} file(s) valid against the Kubernetes {KUBERNETES_VERSION} schemas (strict, offline)",
        files.len()
    ));

    let rendered = crate::bgp_component::render()?;
    let (ok, text) = run_validator(&exe, std::slice::from_ref(&rendered))?;
    let rel = rendered.strip_prefix(workspace_root()).unwrap_or(&rendered).display().to_string();
    let bgp_problems = self::problems(ok, &text, &[rel]);
    if !bgp_problems.is_empty() {
        bail!(
            "deploy/ with the deploy/bgp component does not validate against Kubernetes {KUBERNETES_VERSION} \
             (strict):\n  {}",
            bgp_problems.join("\n  ")
        );
    }
    crate::bgp_component::check(&exe.with_file_name("python"), &rendered)?;
    info(
        "deploy/ with the deploy/bgp component (kubectl kustomize): valid; the agent gets --announce bgp, \
          the bird sidecar mounts deploy/bgp/bird.conf",
    );

    self_check(&exe)?;
    info("self-check: the validator rejects a DaemonSet with an unknown field");

    crate::uninstall::check_uninstall()?;

    let licenses = crate::licenses::problems(&workspace_root());
    if !licenses.is_empty() {
        bail!("the licenses disagree:\n  {}", licenses.join("\n  "));
    }
    info("licenses: Cargo.toml fields, LICENSE-* files and the eBPF object's string agree");
    Ok(())
}

/// Runs the validator, strict, against [`KUBERNETES_VERSION`] on `files`
/// (from the workspace root, so messages name `deploy/...`); returns
/// whether it exited 0 and its stdout and stderr.
fn run_validator(exe: &Path, files: &[PathBuf]) -> Result<(bool, String)> {
    let root = workspace_root();
    let mut cmd = Command::new(exe);
    cmd.args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files.iter().map(|f| f.strip_prefix(&root).unwrap_or(f)))
        .current_dir(&root)
        .stdin(Stdio::null());
    let out = cmd.output().with_context(|| format!("cannot run {}", exe.display()))?;
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// What is wrong with a validator run: a non-zero exit, any line that is
/// not a pass (kubernetes-validate only *warns*, exit 0, about a kind it
/// has no schema for: a misspelled kind or apiVersion is an error here),
/// and any file without a single validated resource.
fn problems(exit_ok: bool, text: &str, files: &[String]) -> Vec<String> {
    let mut problems: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !(l.starts_with("INFO ") && l.contains(" passed for resource ")))
        .filter(|l| !is_known_crd_without_schema(l))
        .map(str::to_string)
        .collect();
    for f in files {
        let prefix = format!("INFO {f} passed for resource ");
        if !text.lines().any(|l| l.trim().starts_with(&prefix)) {
            problems.push(format!("{f}: no resource was validated"));
        }
    }
    if !exit_ok && problems.is_empty() {
        problems.push("the validator failed without saying why".to_string());
    }
    problems
}

/// Checks `deploy/kustomization.yaml`: it is a Kustomization, every
/// resource it lists exists, and every manifest of `deploy/` is listed
/// (`kubectl apply -k deploy/` would silently leave it out otherwise).
fn check_kustomization(exe: &Path, deploy: &Path, manifests: &[PathBuf]) -> Result<()> {
    let path = deploy.join(KUSTOMIZATION);
    if !path.is_file() {
        bail!("{} is missing", path.display());
    }
    // The validator's own Python has PyYAML: let it read the file.
    let python = exe.with_file_name("python");
    let script = "import sys, yaml\n\
                  d = yaml.safe_load(open(sys.argv[1]))\n\
                  if not isinstance(d, dict) or d.get('kind') != 'Kustomization':\n\
                  \x20   sys.exit(sys.argv[1] + ': not a Kustomization')\n\
                  for r in d.get('resources') or []:\n\
                  \x20   print(r)\n";
    let listed = output(Command::new(&python).arg("-c").arg(script).arg(&path))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let listed: Vec<String> = listed.lines().map(|l| l.trim().to_string()).collect();
    let present: Vec<String> =
        manifests.iter().filter_map(|m| m.file_name().map(|n| n.to_string_lossy().to_string())).collect();
    let problems = kustomization_problems(&listed, &present, |r| deploy.join(r).exists());
    if !problems.is_empty() {
        bail!("{}:\n  {}", path.display(), problems.join("\n  "));
    }
    info(&format!("{KUSTOMIZATION}: lists {} (all present)", listed.join(", ")));
    Ok(())
}

fn kustomization_problems(listed: &[String], present: &[String], exists: impl Fn(&str) -> bool) -> Vec<String> {
    let mut problems = Vec::new();
    if listed.is_empty() {
        problems.push("lists no resources".to_string());
    }
    for r in listed {
        if !exists(r) {
            problems.push(format!("lists {r}, which does not exist"));
        }
    }
    for m in present {
        if !listed.iter().any(|r| r == m || r.strip_prefix("./") == Some(m)) {
            problems.push(format!("does not list {m}"));
        }
    }
    problems
}

/// A DaemonSet with a field that no Kubernetes version has, deep inside
/// the pod template: strict validation must reject it.
const BROKEN_DAEMONSET: &str = "\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: broken
  namespace: xlb-system
spec:
  selector:
    matchLabels: {app: broken}
  template:
    metadata:
      labels: {app: broken}
    spec:
      hostNetwork: true
      containers:
        - name: agent
          image: registry.example.com/xlb:0.1.0
          securityContext:
            xlbNoSuchField: true
";

/// The validator must fail on [`BROKEN_DAEMONSET`], naming the field.
fn self_check(exe: &Path) -> Result<()> {
    let dir = target_dir().join("xtask");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("broken-daemonset.yaml");
    std::fs::write(&path, BROKEN_DAEMONSET).with_context(|| format!("cannot write {}", path.display()))?;
    let (ok, text) = run_validator(exe, std::slice::from_ref(&path))?;
    let _ = std::fs::remove_file(&path);
    if ok || !text.contains("ERROR") || !text.contains("xlbNoSuchField") {
        bail!(
            "self-check failed: {VALIDATOR_PACKAGE} --strict did not reject a DaemonSet with an unknown field \
             (exit ok: {ok}); its output:\n{text}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<String> {
        vec!["deploy/a.yaml".to_string(), "deploy/b.yaml".to_string()]
    }

    #[test]
    fn all_passed_is_clean() {
        let text = "INFO deploy/a.yaml passed for resource namespace/x against version 1.33\n\
                    INFO deploy/b.yaml passed for resource daemonset/y against version 1.33\n";
        assert!(problems(true, text, &files()).is_empty());
    }

    #[test]
    fn errors_warnings_and_silence_are_problems() {
        let text = "INFO deploy/a.yaml passed for resource namespace/x against version 1.33\n\
                    ERROR deploy/b.yaml did not validate for resource daemonset/y against version 1.33: spec: bad\n";
        let p = problems(false, text, &files());
        assert!(p.iter().any(|l| l.starts_with("ERROR deploy/b.yaml")), "{p:?}");
        assert!(p.iter().any(|l| l == "deploy/b.yaml: no resource was validated"), "{p:?}");

        // A kind without a schema is only a warning (exit 0) to the tool.
        let text = "INFO deploy/a.yaml passed for resource namespace/x against version 1.33\n\
                    WARN deploy/b.yaml Couldn't find schema for kind DaemonSett\n";
        let p = problems(true, text, &files());
        assert!(p.iter().any(|l| l.starts_with("WARN ")), "{p:?}");

        assert!(!problems(false, "", &[]).is_empty());
    }

    #[test]
    fn only_gateway_api_kinds_may_lack_a_schema() {
        let ok = "INFO deploy/a.yaml passed for resource namespace/x against version 1.33\n\
                  WARN deploy/a.yaml Couldn't find schema for kind UDPRoute with api version \
                  gateway.networking.k8s.io/v1 for kubernetes version 1.33\n\
                  INFO deploy/b.yaml passed for resource service/y against version 1.33\n";
        assert!(problems(true, ok, &files()).is_empty(), "{:?}", problems(true, ok, &files()));
        for bad in [
            "WARN deploy/a.yaml Couldn't find schema for kind UDPRoutes with api version \
             gateway.networking.k8s.io/v1 for kubernetes version 1.33",
            "WARN deploy/a.yaml Couldn't find schema for kind UDPRoute with api version \
             gateway.networking.k8s.io/v1alpha2 for kubernetes version 1.33",
        ] {
            let text = format!("{ok}{bad}\n");
            assert_eq!(problems(true, &text, &files()), vec![bad.to_string()]);
        }
        let monitor = "INFO deploy/a.yaml passed for resource service/x against version 1.33\n\
                       WARN deploy/a.yaml Couldn't find schema for kind ServiceMonitor with api version \
                       monitoring.coreos.com/v1 for kubernetes version 1.33\n\
                       INFO deploy/b.yaml passed for resource service/y against version 1.33\n";
        assert!(problems(true, monitor, &files()).is_empty());
        let podmon = monitor.replace("ServiceMonitor", "PodMonitor");
        assert_eq!(problems(true, &podmon, &files()).len(), 1, "{podmon}");
        // A file of Gateway API kinds only has no validated resource.
        let only = "WARN deploy/a.yaml Couldn't find schema for kind Gateway with api version \
                    gateway.networking.k8s.io/v1 for kubernetes version 1.33\n\
                    INFO deploy/b.yaml passed for resource service/y against version 1.33\n";
        assert_eq!(problems(true, only, &files()), vec!["deploy/a.yaml: no resource was validated"]);
    }

    #[test]
    fn kustomization_must_list_existing_files_and_every_manifest() {
        let present = vec!["a.yaml".to_string(), "b.yaml".to_string()];
        let exists = |r: &str| r == "a.yaml" || r == "b.yaml" || r == "./b.yaml";
        let listed = vec!["a.yaml".to_string(), "./b.yaml".to_string()];
        assert!(kustomization_problems(&listed, &present, exists).is_empty());

        let listed = vec!["a.yaml".to_string(), "c.yaml".to_string()];
        let p = kustomization_problems(&listed, &present, exists);
        assert_eq!(p, vec!["lists c.yaml, which does not exist", "does not list b.yaml"]);

        assert!(kustomization_problems(&[], &[], exists).contains(&"lists no resources".to_string()));
    }

    #[test]
    fn venv_is_versioned() {
        let dir = venv_dir();
        assert!(dir.ends_with(format!("{VALIDATOR_PACKAGE}-{VALIDATOR_VERSION}")));
    }
}
