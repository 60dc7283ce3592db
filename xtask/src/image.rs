//! `cargo xtask image`: the xlb OCI image, built from this repository
//! without pulling anything (no base image): `buildah from scratch`, then
//! the release binary, exactly the shared libraries it loads (from `ldd`:
//! libc, libm, libgcc_s and the dynamic loader, copied from this machine)
//! and the licenses. The layout ([`BINARY`], [`ENTRYPOINT`], [`CMD`],
//! [`USER`], [`WORKDIR`], [`LICENSE_DIR`], [`LABELS`]) is the one
//! `deploy/Containerfile` produces on `gcr.io/distroless/cc-debian12` for
//! registries; a unit test parses the Containerfile's final stage and
//! compares, so the two cannot drift.
//!
//! The agent execs nothing at run time, with one exception: when
//! `/sys/fs/bpf` is not a bpffs it runs `mount -t bpf` (neither image has
//! `mount`; the DaemonSet mounts the host's bpffs, and the agent's error
//! says what to do otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::util::{header, info, output, run, workspace_root};

/// Where the binary is in the image.
pub const BINARY: &str = "/xlb";
/// The image's entrypoint.
pub const ENTRYPOINT: &[&str] = &["/xlb"];
/// The image's default arguments.
pub const CMD: &[&str] = &["--help"];
/// The user the image runs as (root: see deploy/daemonset.yaml).
pub const USER: &str = "0";
/// The working directory.
pub const WORKDIR: &str = "/";
/// Where the licenses go (a directory).
pub const LICENSE_DIR: &str = "/usr/share/doc/xlb/";
/// The license files copied from the repository root into [`LICENSE_DIR`].
pub const LICENSES: &[&str] = &["LICENSE-MIT", "LICENSE-APACHE", "LICENSE-GPL-2.0"];
/// The label that carries the commit (`XLB_GIT_COMMIT`).
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";
/// The labels with fixed values; [`REVISION_LABEL`] comes on top.
pub const LABELS: &[(&str, &str)] = &[
    ("org.opencontainers.image.title", "xlb"),
    ("org.opencontainers.image.description", "XDP load balancer for UDP and TCP: agent and CLI"),
    ("org.opencontainers.image.licenses", "(MIT OR Apache-2.0) AND (MIT OR GPL-2.0-only)"),
];
/// The repository of the default tags.
pub const REPOSITORY: &str = "localhost/xlb";

/// `cargo xtask image` arguments.
#[derive(clap::Args)]
pub struct ImageArgs {
    /// Skip setup and the build: package $XLB_BIN when set, else the existing target/release/xlb.
    #[arg(long)]
    no_build: bool,
    /// Tag the image NAME (repeatable; default: localhost/xlb:<version> and localhost/xlb:latest).
    #[arg(long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Also save the image as an OCI archive to FILE (`podman load -i FILE` loads it).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Builds the binary (unless `--no-build`), then the image; prints its id,
/// tags and size.
pub fn image(args: &ImageArgs) -> Result<()> {
    let bin = if args.no_build {
        let bin = std::env::var_os("XLB_BIN")
            .map_or_else(|| crate::util::target_dir().join("release").join("xlb"), PathBuf::from);
        if !bin.is_file() {
            bail!("{} is missing: run `cargo xtask build` (or drop --no-build, or set XLB_BIN)", bin.display());
        }
        info(&format!("--no-build: packaging {}", bin.display()));
        bin
    } else {
        crate::setup::setup()?;
        build_with_commit()?
    };
    let started = std::time::Instant::now();
    header("image (buildah from scratch: the binary, its shared libraries, the licenses)");
    let version = output(Command::new(&bin).arg("--version")).context("cannot run `xlb --version`")?;
    let (version, commit) = parse_version(&version)
        .ok_or_else(|| anyhow!("`{} --version` printed {version:?}, not `xlb VERSION (commit C)`", bin.display()))?;
    let tags = if args.tags.is_empty() {
        vec![format!("{REPOSITORY}:{version}"), format!("{REPOSITORY}:latest")]
    } else {
        args.tags.clone()
    };

    // The images these tags name now: untagged by the new build, they are
    // removed after it (when nothing else tags or uses them).
    let previous: Vec<String> = tags
        .iter()
        .filter_map(|t| output(Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", t])).ok())
        .map(|id| id.trim().to_string())
        .collect();
    let rootfs = crate::util::target_dir().join("image").join(format!("rootfs-{}", std::process::id()));
    let staged = stage_rootfs(&bin, &rootfs);
    let built = staged.and_then(|libs| {
        for l in &libs {
            info(&format!("library {l}"));
        }
        commit_image(&rootfs, &commit, &tags)
    });
    let _ = std::fs::remove_dir_all(&rootfs);
    let id = built?;

    for old in previous.iter().filter(|p| **p != id) {
        let tagged = output(Command::new("podman").args(["image", "inspect", "--format", "{{len .RepoTags}}", old]));
        if tagged.is_ok_and(|n| n.trim() == "0") && output(Command::new("podman").args(["rmi", old])).is_ok() {
            info(&format!("removed the previous image {old} (no tag left)"));
        }
    }
    let size: u64 = output(Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", &id]))?
        .trim()
        .parse()
        .context("`podman image inspect --format {{.Size}}` printed no number")?;
    info(&format!("image id {id}"));
    for t in &tags {
        info(&format!("tagged   {t}"));
    }
    #[expect(clippy::cast_precision_loss, reason = "a size in MB for people")]
    let mb = size as f64 / 1e6;
    info(&format!("size     {mb:.1} MB ({size} bytes); xlb {version} (commit {commit})"));
    if let Some(file) = &args.output {
        let _ = std::fs::remove_file(file);
        run(Command::new("podman").args(["save", "--format", "oci-archive", "-o"]).arg(file).arg(&tags[0]))?;
        info(&format!("saved    {} (OCI archive; `podman load -i` it)", file.display()));
    }
    info(&format!("built in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// `cargo build --release -p lb-userspace`: its build script records the
/// checkout's commit as `XLB_GIT_COMMIT` (`git rev-parse --short HEAD`,
/// unless the variable is set), so `xlb --version` in the image names it.
/// The variable is not set here, so that a later plain `cargo build` does
/// not rebuild; the image step checks the commit instead ([`check_commit`]).
fn build_with_commit() -> Result<PathBuf> {
    let bin = crate::util::build_release()?;
    if std::env::var_os("XLB_GIT_COMMIT").is_none() {
        let head = output(Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(workspace_root()));
        if let Ok(head) = head {
            check_commit(&bin, head.trim())?;
        }
    }
    Ok(bin)
}

/// Fails unless `xlb --version` names `commit`.
fn check_commit(bin: &Path, commit: &str) -> Result<()> {
    let version = output(Command::new(bin).arg("--version"))?;
    match parse_version(&version) {
        Some((_, c)) if c == commit => Ok(()),
        _ => bail!("{} --version says {:?}, not commit {commit}: rebuild it", bin.display(), version.trim()),
    }
}

/// `xlb 0.1.0 (commit abc1234)` → ("0.1.0", "abc1234").
fn parse_version(text: &str) -> Option<(String, String)> {
    let rest = text.trim().strip_prefix("xlb ")?;
    let (version, rest) = rest.split_once(' ')?;
    let commit = rest.strip_prefix("(commit ")?.strip_suffix(')')?;
    Some((version.to_string(), commit.to_string()))
}

/// The files `ldd` names for a binary: every `=> /path` and the loader's
/// absolute path (no vDSO). A library `ldd` cannot find is an error.
fn parse_ldd(text: &str) -> Result<Vec<String>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd: {line}: install that library");
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_string());
        }
    }
    if libs.is_empty() {
        bail!("ldd named no library: is this a dynamically linked binary?\n{text}");
    }
    Ok(libs)
}

/// Copies `src` (symlinks followed) to `root` + `dest`, with `mode`.
fn place(root: &Path, src: &Path, dest: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let to = root.join(dest.trim_start_matches('/'));
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::copy(src, &to).with_context(|| format!("cannot copy {} to {}", src.display(), to.display()))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The image's files under `rootfs`: the binary at [`BINARY`], the
/// libraries where `ldd` found them, the licenses. Returns the libraries.
fn stage_rootfs(bin: &Path, rootfs: &Path) -> Result<Vec<String>> {
    let _ = std::fs::remove_dir_all(rootfs);
    std::fs::create_dir_all(rootfs).with_context(|| format!("cannot create {}", rootfs.display()))?;
    place(rootfs, bin, BINARY, 0o755)?;
    let libs = parse_ldd(&output(Command::new("ldd").arg(bin)).context("ldd (libc-bin) lists the libraries")?)?;
    for lib in &libs {
        place(rootfs, Path::new(lib), lib, 0o755)?;
    }
    let root = workspace_root();
    for l in LICENSES {
        place(rootfs, &root.join(l), &format!("{LICENSE_DIR}{l}"), 0o644)?;
    }
    Ok(libs)
}

/// A buildah working container, removed on drop unless committed.
struct Working(String);

impl Drop for Working {
    fn drop(&mut self) {
        let _ = Command::new("buildah").args(["rm", &self.0]).output();
    }
}

/// `buildah from scratch`, the files, the configuration, commit, tags.
/// Returns the image id.
fn commit_image(rootfs: &Path, commit: &str, tags: &[String]) -> Result<String> {
    let name = format!("xlb-image-{}", std::process::id());
    let _ = Command::new("buildah").args(["rm", &name]).output();
    output(Command::new("buildah").args(["from", "--name", &name, "scratch"]))
        .context("buildah is needed (`cargo xtask setup` installs it, as root)")?;
    let working = Working(name);
    let mut src = rootfs.as_os_str().to_owned();
    src.push("/");
    run(Command::new("buildah").args(["copy", "--quiet", "--chown", "0:0", &working.0]).arg(&src).arg("/"))?;
    let json = |v: &[&str]| serde_json::to_string(v).expect("strings serialise");
    let mut config = Command::new("buildah");
    config.args(["config", "--entrypoint", &json(ENTRYPOINT), "--cmd", &json(CMD), "--user", USER]);
    config.args(["--workingdir", WORKDIR]);
    for (k, v) in LABELS {
        config.arg("--label").arg(format!("{k}={v}"));
    }
    config.arg("--label").arg(format!("{REVISION_LABEL}={commit}"));
    run(config.arg(&working.0))?;
    let id =
        output(Command::new("buildah").args(["commit", "--quiet", "--format", "oci", "--rm", &working.0, &tags[0]]))?
            .trim()
            .to_string();
    std::mem::forget(working); // `--rm` removed it
    if id.is_empty() {
        bail!("buildah commit printed no image id");
    }
    for t in &tags[1..] {
        run(Command::new("buildah").args(["tag", &id, t]))?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_version_line() {
        assert_eq!(parse_version("xlb 0.1.0 (commit 39ac464)\n"), Some(("0.1.0".into(), "39ac464".into())));
        assert_eq!(parse_version("xlb 0.1.0"), None);
    }

    #[test]
    fn ldd_gives_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007f4f80e53000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f4f80e22000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f4f7f81e000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f4f80e55000)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            vec![
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err().to_string().contains("libfoo"));
        assert!(parse_ldd("\tnot a dynamic executable\n").is_err());
    }
}
