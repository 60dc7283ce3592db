//! The bpffs under `--pin-path`: checked, and /sys/fs/bpf mounted when it
//! is not one yet.
use std::path::Path;

use anyhow::Context as _;
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
use tracing::{info, warn};

use super::{mountns::private_mount_namespace, AgentError};
use crate::bpf::maps::map_dir;

/// Whether `p` is on a bpffs (false also when it cannot be examined).
fn is_bpffs(p: &Path) -> bool {
    statfs(p).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// Makes sure `pin_path` is (or can be made) a directory on a bpffs,
/// mounting /sys/fs/bpf if needed. A path that cannot be one is bad usage.
pub(super) fn ensure_bpffs(pin_path: &Path) -> Result<(), AgentError> {
    let root = Path::new("/sys/fs/bpf");
    if pin_path.starts_with(root) && !is_bpffs(root) {
        let private = private_mount_namespace();
        let status = std::process::Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status();
        if !status.is_ok_and(|s| s.success()) {
            return Err(anyhow::anyhow!(
                "/sys/fs/bpf is not a bpffs and mounting one failed: run `mount -t bpf bpf /sys/fs/bpf`"
            )
            .into());
        }
        info!("mounted bpffs on /sys/fs/bpf");
        if let Some(netns) = private {
            let name = netns.as_deref().unwrap_or("NAME");
            warn!(
                "this agent runs in a mount namespace of its own where /sys/fs/bpf was not mounted, as `ip netns exec` makes \
                 (it remounts /sys): the bpffs just mounted is private to this agent, so its pinned maps and links are invisible \
                 from the host (`xlb status` and `xlb services` there find nothing) and --keep-on-exit cannot hand over to the \
                 next agent. Start it with `nsenter --net=/var/run/netns/{name} xlb agent ...` instead (it joins the network \
                 namespace only)"
            );
        }
    }
    let mut probe = pin_path.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if !probe.as_os_str().is_empty() && !probe.is_dir() {
        return Err(AgentError::Usage(format!(
            "--pin-path {}: {} is not a directory; give a directory on a bpffs, e.g. /sys/fs/bpf/xlb",
            pin_path.display(),
            probe.display()
        )));
    }
    if !is_bpffs(&probe) {
        return Err(AgentError::Usage(format!(
            "--pin-path {} is not on a bpffs: use a directory under /sys/fs/bpf (or where `mount -t bpf bpf DIR` mounted one)",
            pin_path.display()
        )));
    }
    std::fs::create_dir_all(map_dir(pin_path)).with_context(|| format!("creating {}", pin_path.display()))?;
    Ok(())
}
