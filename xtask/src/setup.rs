//! `cargo xtask setup`: install what is missing, idempotently.
//!
//! * the nightly toolchain's `rust-src` (the eBPF crate builds `core` for
//!   the BPF target with `-Z build-std`);
//! * `bpf-linker`, built against the LLVM shipped with the installed
//!   nightly (no dated nightly is pinned);
//! * bpffs mounted at `/sys/fs/bpf` (as root);
//! * `ip` from iproute2 (as root, through apt-get) for the tests and demo;
//! * `ethtool` (as root, through apt-get) for the transmit-path tests;
//! * `kubectl` (as root, through apt-get) for the Kubernetes tests;
//! * BIRD 2 (`bird`, `birdc`; Debian's `bird2`, as root, through apt-get)
//!   for the BGP announcement tests (`--announce bgp`);
//! * podman, buildah and runc (as root, through apt-get) for `cargo xtask
//!   image` and the test that runs the agent from that image (runc where
//!   crun cannot run containers, as on hybrid cgroup hierarchies);
//! * the Kubernetes manifest validator (see `validate.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::util::{header, info, is_root, output, run};

pub fn setup() -> Result<()> {
    header("setup");
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_bpffs()?;
    for tool in APT_TOOLS {
        ensure_apt_tool(tool)?;
    }
    crate::validate::setup_validator();
    info("setup complete");
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to manage the nightly toolchain (see https://rustup.rs)")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        info("nightly toolchain: missing, installing it");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let installed =
        output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        info("rust-src (nightly): present");
    } else {
        info("rust-src (nightly): missing, installing it");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home).join("bin"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").join("bin"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Makes sure `~/.cargo/bin` is on our PATH, so the builds we start find
/// `bpf-linker` there.
fn ensure_cargo_bin_on_path() {
    let Some(bin) = cargo_bin_dir() else { return };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let mut dirs: Vec<PathBuf> = vec![bin.clone()];
    dirs.extend(std::env::split_paths(&path));
    if let Ok(joined) = std::env::join_paths(dirs) {
        info(&format!("adding {} to PATH for this run (add it to your shell's PATH too)", bin.display()));
        std::env::set_var("PATH", joined);
    }
}

fn ensure_bpf_linker() -> Result<()> {
    ensure_cargo_bin_on_path();
    if let Some(p) = find_on_path("bpf-linker") {
        info(&format!("bpf-linker: {}", p.display()));
        return Ok(());
    }
    info("bpf-linker: missing, building it against the nightly toolchain's LLVM");
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim());
    let version = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = llvm_major(&version)
        .ok_or_else(|| anyhow!("cannot find `LLVM version:` in `rustc +nightly -vV`:\n{version}"))?;
    info(&format!("nightly sysroot {}, LLVM {major}", sysroot.display()));
    ensure_libllvm_symlink(&sysroot.join("lib"), major)?;
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--no-default-features", "--features", &format!("llvm-{major}")])
        .env("LLVM_PREFIX", &sysroot))?;
    match find_on_path("bpf-linker") {
        Some(p) => {
            info(&format!("bpf-linker: installed at {}", p.display()));
            Ok(())
        }
        None => bail!("`cargo install bpf-linker` succeeded but bpf-linker is not on PATH; add ~/.cargo/bin to PATH"),
    }
}

/// `LLVM version: 22.1.4` → 22.
fn llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
}

/// bpf-linker links against `<sysroot>/lib/libLLVM.so`, which rustup does
/// not ship under that name: point it at the real shared library.
fn ensure_libllvm_symlink(lib: &Path, major: u32) -> Result<()> {
    let link = lib.join("libLLVM.so");
    if link.symlink_metadata().is_ok() {
        info(&format!("{}: present", link.display()));
        return Ok(());
    }
    let names: Vec<(String, u64)> = std::fs::read_dir(lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let meta = e.metadata().ok()?;
            meta.is_file().then_some((name, meta.len()))
        })
        .collect();
    let target = pick_libllvm(&names, major)
        .ok_or_else(|| anyhow!("no libLLVM shared library in {}: is the nightly toolchain complete?", lib.display()))?;
    std::os::unix::fs::symlink(lib.join(&target), &link)
        .with_context(|| format!("cannot create {} -> {target}", link.display()))?;
    info(&format!("linked {} -> {target}", link.display()));
    Ok(())
}

/// Picks the real LLVM shared library among `(name, size)` entries: a
/// `libLLVM.so.<ver>...` or `libLLVM-<major>-rust-*.so` file, the largest
/// one (rustup ships one of them as a tiny linker script).
#[expect(clippy::case_sensitive_file_extension_comparisons, reason = "library names are lower case")]
fn pick_libllvm(entries: &[(String, u64)], major: u32) -> Option<String> {
    let dashed = format!("libLLVM-{major}");
    entries
        .iter()
        .filter(|(n, _)| n.starts_with("libLLVM.so.") || (n.starts_with(&dashed) && n.ends_with(".so")))
        .max_by_key(|(_, size)| *size)
        .map(|(n, _)| n.clone())
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").unwrap_or_default().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == "/sys/fs/bpf" && f[2] == "bpf"
    })
}

/// Something only root can install: says it is present, or that it is
/// missing and needs root, or installs it. `say` holds those three lines.
fn ensure_as_root(present: bool, say: [&str; 3], install: impl FnOnce() -> Result<()>) -> Result<()> {
    let [ok, needs_root, installing] = say;
    if present {
        info(ok);
        return Ok(());
    }
    if !is_root() {
        info(needs_root);
        return Ok(());
    }
    info(installing);
    install()
}

/// `apt-get ARGS`, non-interactive.
fn apt_get(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn ensure_bpffs() -> Result<()> {
    let say = [
        "bpffs: mounted at /sys/fs/bpf",
        "bpffs: not mounted at /sys/fs/bpf, and mounting it needs root (the agent needs it)",
        "bpffs: mounting at /sys/fs/bpf",
    ];
    ensure_as_root(bpffs_mounted(), say, || {
        std::fs::create_dir_all("/sys/fs/bpf").context("cannot create /sys/fs/bpf")?;
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
    })
}

/// A tool from Debian's packages that the tests or xtask run.
struct AptTool {
    /// What to call it in messages.
    name: &'static str,
    /// Who needs it, for the message when it is missing and we are not root.
    needed_by: &'static str,
    /// Whether it is present and usable.
    present: fn() -> bool,
    /// Package sets to try in order, until `present` says yes (repositories
    /// name some tools differently).
    packages: &'static [&'static [&'static str]],
}

/// `BIN --version` (or `BIN ARGS`) runs and succeeds.
fn runs(bin: &str, args: &[&str]) -> bool {
    Command::new(bin).args(args).output().is_ok_and(|o| o.status.success())
}

/// The tools `cargo xtask setup` installs with apt-get when missing.
const APT_TOOLS: &[AptTool] = &[
    AptTool {
        name: "iproute2 (ip)",
        needed_by: "the integration tests and the demo",
        present: || runs("ip", &["-V"]),
        packages: &[&["iproute2"]],
    },
    // The tests turn a veth's GRO or checksum offload on and off with it
    // (the transmit-path tests).
    AptTool {
        name: "ethtool",
        needed_by: "the integration tests",
        present: || runs("ethtool", &["--version"]),
        packages: &[&["ethtool"]],
    },
    // The real client the Kubernetes tests check the fake API server
    // against: Debian's `kubectl` package where a repository has it, else
    // `kubernetes-client`.
    AptTool {
        name: "kubectl",
        needed_by: "the Kubernetes tests",
        present: || runs("kubectl", &["version", "--client"]),
        packages: &[&["kubectl"], &["kubernetes-client"]],
    },
    // BIRD 2, the BGP daemon the `--announce bgp` tests run in the router
    // and node namespaces (`bird --version` prints "BIRD version 2.x" on
    // stderr).
    AptTool {
        name: "BIRD 2 (bird, birdc)",
        needed_by: "the BGP tests",
        present: || {
            Command::new("bird").arg("--version").output().is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).contains("version 2.")
            }) && Command::new("birdc").arg("--version").output().is_ok()
        },
        packages: &[&["bird2"]],
    },
    // `cargo xtask image` builds with buildah, the image test runs the agent
    // with podman (with runc where crun, podman's default runtime, refuses
    // the machine's cgroup layout).
    AptTool {
        name: "podman, buildah, runc",
        needed_by: "`cargo xtask image` and its test",
        present: || runs("podman", &["--version"]) && runs("buildah", &["--version"]) && runs("runc", &["--version"]),
        packages: &[&["podman", "buildah", "runc"]],
    },
];

/// Installs `tool` with apt-get when it is missing (as root), trying its
/// package sets in order.
fn ensure_apt_tool(tool: &AptTool) -> Result<()> {
    let first = tool.packages.first().map(|p| p.join(" ")).unwrap_or_default();
    let ok = format!("{}: present", tool.name);
    let needs_root = format!("{}: missing; {} need it (apt-get install {first}, as root)", tool.name, tool.needed_by);
    let installing = format!("{}: missing, installing it", tool.name);
    ensure_as_root((tool.present)(), [&ok, &needs_root, &installing], || {
        run(&mut apt_get(&["update"]))?;
        for packages in tool.packages {
            let mut args = vec!["install", "-y"];
            args.extend_from_slice(packages);
            let installed = apt_get(&args).status().is_ok_and(|s| s.success());
            if installed && (tool.present)() {
                return Ok(());
            }
        }
        let tried: Vec<String> = tool.packages.iter().map(|p| p.join(" ")).collect();
        bail!(
            "could not install {} with apt-get (tried: {}), or it is installed but does not run; install it by hand",
            tool.name,
            tried.join("; then ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llvm_major() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(vv), Some(22));
        assert_eq!(llvm_major("rustc 1.0"), None);
    }

    #[test]
    fn picks_the_real_libllvm() {
        let entries = vec![
            ("libLLVM-22-rust-1.97.0-nightly.so".to_string(), 43),
            ("libLLVM.so.22.1-rust-1.97.0-nightly".to_string(), 199_500_656),
            ("librustc_driver-b5a965480ee51f9a.so".to_string(), 1_000_000_000),
        ];
        assert_eq!(pick_libllvm(&entries, 22).as_deref(), Some("libLLVM.so.22.1-rust-1.97.0-nightly"));
        let only_dashed = vec![("libLLVM-22-rust-1.97.0-nightly.so".to_string(), 150_000_000)];
        assert_eq!(pick_libllvm(&only_dashed, 22).as_deref(), Some("libLLVM-22-rust-1.97.0-nightly.so"));
        assert_eq!(pick_libllvm(&only_dashed, 21), None);
    }
}
