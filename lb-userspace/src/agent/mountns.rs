//! Whether the agent runs in a mount namespace of its own, as `ip netns
//! exec` makes one (from /proc/self/mountinfo).
use std::path::Path;

/// `Some` when /sys was remounted by `ip netns exec` (which unshares the
/// mount namespace and mounts a fresh sysfs on /sys, with the network
/// namespace's name as its source, and no bpffs below it), with that name
/// when /var/run/netns has it.
#[expect(clippy::option_option, reason = "none, unnamed or named: three outcomes")]
pub(super) fn private_mount_namespace() -> Option<Option<String>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let source = netns_exec_sysfs(&mountinfo)?;
    let known = Path::new("/var/run/netns").join(&source).exists();
    Some(known.then_some(source))
}

/// The source of the sysfs mounted last on /sys in a mountinfo text, when
/// it is not the usual `sysfs` (`ip netns exec` names it after the network
/// namespace).
fn netns_exec_sysfs(mountinfo: &str) -> Option<String> {
    let mut sys = mountinfo.lines().filter_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        let mut r = right.split_whitespace();
        let (fstype, source) = (r.next()?, r.next()?);
        (point == "/sys" && fstype == "sysfs").then_some(source)
    });
    let source = sys.next_back()?;
    (source != "sysfs" && source != "none").then(|| source.to_owned())
}

#[cfg(test)]
mod tests {
    use super::netns_exec_sysfs;

    #[test]
    fn ip_netns_exec_sysfs_is_recognised() {
        let host = "22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n\
                    30 22 0:26 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw,mode=700\n";
        assert_eq!(netns_exec_sysfs(host), None);
        let netns_exec = format!("{host}52 49 0:41 / /sys rw,relatime - sysfs blue rw\n");
        assert_eq!(netns_exec_sysfs(&netns_exec).as_deref(), Some("blue"));
        assert_eq!(netns_exec_sysfs(""), None);
    }
}
