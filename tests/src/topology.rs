//! The client / node / pods topology.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::Netns;

/// Every namespace (and pin directory) this crate creates starts with this,
/// followed by `<pid>-<counter>-`.
pub const PREFIX: &str = "xlbt";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A Kubernetes-node-like topology in network namespaces:
///
/// * `client`: `eth0` with 10.100.0.2/24 and fd00:100::2/64, default routes
///   (v4 and v6) and explicit VIP routes (192.0.2.0/24, 2001:db8:ffff::/64)
///   via the node;
/// * `node`: `c0` (toward the client) with 10.100.0.1/24 and fd00:100::1/64,
///   and `p<i>` (toward pod i) with 10.1.<i>.1/24 and fd00:1:<i>::1/64;
///   forwarding on, rp_filter off, no VIP address;
/// * `pods[i]`: `eth0` with 10.1.<i>.2/24 and fd00:1:<i>::2/64, default
///   routes via the node.
///
/// IPv6 DAD is off everywhere and `new` waits until no address is tentative.
/// Namespace names are `xlbt<pid>-<n>-client|node|pod<i>`, unique per
/// instance, so tests can run in parallel. Dropping the topology stops the
/// processes started through its namespaces and deletes the namespaces
/// (which removes every veth and any XDP program attached to them).
#[derive(Debug)]
pub struct Topology {
    /// `xlbt<pid>-<n>`: the start of every namespace name of this instance.
    pub prefix: String,
    /// The client namespace.
    pub client: Netns,
    /// The node namespace, where the agent runs.
    pub node: Netns,
    /// One namespace per pod.
    pub pods: Vec<Netns>,
    /// Node-side name of the client veth (`c0`).
    pub client_if: String,
    /// Node-side names of the pod veths (`p0`, `p1`, ...).
    pub pod_ifs: Vec<String>,
    created: Vec<Netns>,
}

impl Topology {
    /// Client address, IPv4.
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);
    /// Client address, IPv6.
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 2);
    /// Node address on the client link, IPv4.
    pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
    /// Node address on the client link, IPv6.
    pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 1);
    /// A VIP in the routed IPv4 VIP range 192.0.2.0/24 (not assigned anywhere).
    pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    /// A VIP in the routed IPv6 VIP range 2001:db8:ffff::/64.
    pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10);
    /// The IPv4 VIP range routed from the client to the node.
    pub const VIP_RANGE_V4: &'static str = "192.0.2.0/24";
    /// The IPv6 VIP range routed from the client to the node.
    pub const VIP_RANGE_V6: &'static str = "2001:db8:ffff::/64";
    /// Most pods a topology can have (the third octet of 10.1.<i>.2).
    pub const MAX_PODS: usize = 250;

    /// Builds the topology with `pods` pods. Needs root. Removes stale
    /// namespaces of dead earlier runs first (see [`cleanup_stale`]). On
    /// error everything created so far is removed.
    pub fn new(pods: usize) -> Result<Self> {
        crate::require_root()?;
        if pods > Self::MAX_PODS {
            bail!("a topology has at most {} pods, not {pods}", Self::MAX_PODS);
        }
        if let Err(e) = cleanup_stale(PREFIX) {
            eprintln!("xlb-tests: cleaning stale namespaces failed: {e:#}");
        }
        let prefix = format!("{PREFIX}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut topo = Topology {
            client: Netns::existing(format!("{prefix}-client")),
            node: Netns::existing(format!("{prefix}-node")),
            pods: (0..pods).map(|i| Netns::existing(format!("{prefix}-pod{i}"))).collect(),
            client_if: "c0".to_string(),
            pod_ifs: (0..pods).map(|i| format!("p{i}")).collect(),
            prefix,
            created: Vec::new(),
        };
        // On error `topo` is dropped, which deletes what was created.
        topo.build().with_context(|| format!("building topology {}", topo.prefix))?;
        Ok(topo)
    }

    fn build(&mut self) -> Result<()> {
        let all: Vec<Netns> =
            [self.client.clone(), self.node.clone()].into_iter().chain(self.pods.iter().cloned()).collect();
        for ns in &all {
            crate::run_cmd("ip", &["netns", "add", &ns.name])?;
            self.created.push(ns.clone());
            ns.ip(&["link", "set", "lo", "up"])?;
            // Before any veth exists, so new interfaces inherit it.
            let forwarding = ns.name == self.node.name;
            ns.try_run(|| base_sysctls(forwarding))??;
        }

        // client <-> node
        let node = self.node.clone();
        let client = self.client.clone();
        node.ip(&["link", "add", &self.client_if, "type", "veth", "peer", "name", "eth0", "netns", &client.name])?;
        node.ip(&["addr", "add", "10.100.0.1/24", "dev", &self.client_if])?;
        node.ip(&["-6", "addr", "add", "fd00:100::1/64", "dev", &self.client_if, "nodad"])?;
        client.ip(&["addr", "add", "10.100.0.2/24", "dev", "eth0"])?;
        client.ip(&["-6", "addr", "add", "fd00:100::2/64", "dev", "eth0", "nodad"])?;
        node.ip(&["link", "set", &self.client_if, "up"])?;
        client.ip(&["link", "set", "eth0", "up"])?;
        client.ip(&["route", "add", "default", "via", "10.100.0.1", "dev", "eth0"])?;
        client.ip(&["-6", "route", "add", "default", "via", "fd00:100::1", "dev", "eth0"])?;
        client.ip(&["route", "add", Self::VIP_RANGE_V4, "via", "10.100.0.1", "dev", "eth0"])?;
        client.ip(&["-6", "route", "add", Self::VIP_RANGE_V6, "via", "fd00:100::1", "dev", "eth0"])?;

        // node <-> pods
        for (i, pod) in self.pods.clone().iter().enumerate() {
            let nif = self.pod_ifs[i].clone();
            node.ip(&["link", "add", &nif, "type", "veth", "peer", "name", "eth0", "netns", &pod.name])?;
            node.ip(&["addr", "add", &format!("{}/24", Self::pod_gw_v4(i)), "dev", &nif])?;
            node.ip(&["-6", "addr", "add", &format!("{}/64", Self::pod_gw_v6(i)), "dev", &nif, "nodad"])?;
            pod.ip(&["addr", "add", &format!("{}/24", Self::pod_addr_v4(i)), "dev", "eth0"])?;
            pod.ip(&["-6", "addr", "add", &format!("{}/64", Self::pod_addr_v6(i)), "dev", "eth0", "nodad"])?;
            node.ip(&["link", "set", &nif, "up"])?;
            pod.ip(&["link", "set", "eth0", "up"])?;
            pod.ip(&["route", "add", "default", "via", &Self::pod_gw_v4(i).to_string(), "dev", "eth0"])?;
            pod.ip(&["-6", "route", "add", "default", "via", &Self::pod_gw_v6(i).to_string(), "dev", "eth0"])?;
        }

        // Per-interface rp_filter off (the effective value is max(all, dev)).
        let node_ifs = self.node_interfaces();
        node.try_run(|| -> Result<()> {
            for ifname in &node_ifs {
                write_sysctl(&format!("net/ipv4/conf/{ifname}/rp_filter"), "0")?;
            }
            Ok(())
        })??;
        for ns in std::iter::once(&self.client).chain(self.pods.iter()) {
            ns.try_run(|| write_sysctl("net/ipv4/conf/eth0/rp_filter", "0"))??;
        }

        for ns in &all {
            wait_ready(ns, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// The node-side interfaces xlb must attach to: the client veth, then
    /// every pod veth (pass each as `--interface`).
    pub fn node_interfaces(&self) -> Vec<String> {
        std::iter::once(self.client_if.clone()).chain(self.pod_ifs.iter().cloned()).collect()
    }

    /// Pod `i`'s IPv4 address, 10.1.<i>.2.
    pub fn pod_addr_v4(i: usize) -> Ipv4Addr {
        assert!(i < Self::MAX_PODS, "pod index {i} out of range");
        Ipv4Addr::new(10, 1, i as u8, 2)
    }

    /// Pod `i`'s IPv6 address, fd00:1:<i>::2 (i as a 16-bit group).
    pub fn pod_addr_v6(i: usize) -> Ipv6Addr {
        assert!(i < Self::MAX_PODS, "pod index {i} out of range");
        Ipv6Addr::new(0xfd00, 1, i as u16, 0, 0, 0, 0, 2)
    }

    /// The node's IPv4 address toward pod `i` (pod i's gateway), 10.1.<i>.1:
    /// the address SNAT uses for backends in pod i.
    pub fn pod_gw_v4(i: usize) -> Ipv4Addr {
        assert!(i < Self::MAX_PODS, "pod index {i} out of range");
        Ipv4Addr::new(10, 1, i as u8, 1)
    }

    /// The node's IPv6 address toward pod `i`, fd00:1:<i>::1.
    pub fn pod_gw_v6(i: usize) -> Ipv6Addr {
        assert!(i < Self::MAX_PODS, "pod index {i} out of range");
        Ipv6Addr::new(0xfd00, 1, i as u16, 0, 0, 0, 0, 1)
    }

    /// `ip:port` of pod `i` (IPv4).
    pub fn pod_sock_v4(i: usize, port: u16) -> SocketAddr {
        SocketAddr::new(Self::pod_addr_v4(i).into(), port)
    }

    /// `[ip]:port` of pod `i` (IPv6).
    pub fn pod_sock_v6(i: usize, port: u16) -> SocketAddr {
        SocketAddr::new(Self::pod_addr_v6(i).into(), port)
    }

    /// Every namespace of this topology: client, node, pods.
    pub fn namespaces(&self) -> Vec<&Netns> {
        [&self.client, &self.node].into_iter().chain(self.pods.iter()).collect()
    }

    /// A unique name derived from this topology (`<prefix>-<what>`), e.g. for
    /// temporary files.
    pub fn unique_name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        delete_namespaces(&self.created);
    }
}

/// Stops the processes started through `created` (only those), then
/// deletes the namespaces, last created first; failures are reported, not
/// raised (for `Drop`).
pub(crate) fn delete_namespaces(created: &[Netns]) {
    for ns in created.iter().rev() {
        ns.stop_children(Duration::from_secs(10));
    }
    for ns in created.iter().rev() {
        if let Err(e) = crate::run_cmd("ip", &["netns", "del", &ns.name]) {
            eprintln!("xlb-tests: cannot delete netns {}: {e:#}", ns.name);
        }
    }
}

fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).with_context(|| format!("cannot set {path} to {value}"))
}

fn base_sysctls(forwarding: bool) -> Result<()> {
    write_sysctl("net/ipv6/conf/all/accept_dad", "0")?;
    write_sysctl("net/ipv6/conf/default/accept_dad", "0")?;
    write_sysctl("net/ipv4/conf/all/rp_filter", "0")?;
    write_sysctl("net/ipv4/conf/default/rp_filter", "0")?;
    if forwarding {
        write_sysctl("net/ipv4/ip_forward", "1")?;
        write_sysctl("net/ipv6/conf/all/forwarding", "1")?;
        write_sysctl("net/ipv6/conf/default/forwarding", "1")?;
    }
    Ok(())
}

/// Waits until no IPv6 address in `ns` is tentative and every veth has its
/// carrier (bounded by `timeout`).
fn wait_ready(ns: &Netns, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let tentative = ns.ip(&["-6", "-o", "addr", "show", "tentative"])?;
        let links = ns.ip(&["-o", "link", "show"])?;
        let links = String::from_utf8_lossy(&links.stdout).to_string();
        let no_carrier =
            links.lines().filter(|l| l.contains("veth") || l.contains('@')).any(|l| !l.contains("LOWER_UP"));
        if tentative.stdout.iter().all(u8::is_ascii_whitespace) && !no_carrier {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "netns {}: addresses still tentative or links down after {timeout:?}:\n{}\n{links}",
                ns.name,
                String::from_utf8_lossy(&tentative.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `xlbt<pid>-<n>-...` (for any `prefix` starting with `xlbt`) and
/// returns the pid.
pub(crate) fn owner_pid(prefix: &str, name: &str) -> Option<i32> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, rest) = rest.split_once('-')?;
    if rest.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Deletes what dead runs left behind: network namespaces named
/// `<prefix><pid>-...`, bpffs directories `/sys/fs/bpf/<prefix><pid>-...`
/// and configuration files `$TMPDIR/<prefix><pid>-*.yaml` whose `<pid>` no
/// longer exists. `prefix` must start with `xlbt` so that
/// nothing else is ever touched; namespaces of live processes (parallel
/// runs) are kept. Processes still inside a stale namespace are not killed
/// (we did not start them); they keep it alive until they exit. Returns the
/// number of namespaces deleted.
pub fn cleanup_stale(prefix: &str) -> Result<usize> {
    if !prefix.starts_with(PREFIX) {
        bail!("cleanup_stale only removes our own leftovers: prefix {prefix:?} must start with {PREFIX:?}");
    }
    let mut deleted = 0;
    let out = crate::run_cmd("ip", &["netns", "list"])?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = owner_pid(prefix, name) else {
            continue;
        };
        if crate::pid_alive(pid) {
            continue;
        }
        match crate::run_cmd("ip", &["netns", "del", name]) {
            Ok(_) => {
                eprintln!("xlb-tests: removed stale netns {name}");
                deleted += 1;
            }
            Err(e) => eprintln!("xlb-tests: cannot remove stale netns {name}: {e:#}"),
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(pid) = owner_pid(prefix, &name) else {
                continue;
            };
            if crate::pid_alive(pid) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => eprintln!("xlb-tests: removed stale bpffs pins {}", entry.path().display()),
                Err(e) => eprintln!("xlb-tests: cannot remove stale pins {}: {e}", entry.path().display()),
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(pid) = owner_pid(prefix, &name) else {
                continue;
            };
            #[expect(clippy::case_sensitive_file_extension_comparisons, reason = "names this crate writes")]
            if !crate::pid_alive(pid) && (name.ends_with(".yaml") || name.ends_with(".yaml.tmp")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(Topology::pod_addr_v4(3).to_string(), "10.1.3.2");
        assert_eq!(Topology::pod_gw_v4(3).to_string(), "10.1.3.1");
        assert_eq!(Topology::pod_addr_v6(3).to_string(), "fd00:1:3::2");
        assert_eq!(Topology::pod_gw_v6(0).to_string(), "fd00:1:0::1".parse::<Ipv6Addr>().unwrap().to_string());
        assert_eq!(Topology::CLIENT_V6.to_string(), "fd00:100::2");
        assert_eq!(Topology::NODE_V6.to_string(), "fd00:100::1");
        assert_eq!(Topology::VIP_V6.to_string(), "2001:db8:ffff::10");
        assert_eq!(Topology::pod_sock_v6(1, 53).to_string(), "[fd00:1:1::2]:53");
    }

    #[test]
    fn owner_pid_parses_only_ours() {
        assert_eq!(owner_pid("xlbt", "xlbt123-0-client"), Some(123));
        assert_eq!(owner_pid("xlbt", "xlbt123-4-pod10"), Some(123));
        assert_eq!(owner_pid("xlbt", "xlbt123-"), None);
        assert_eq!(owner_pid("xlbt", "xlbtabc-0-node"), None);
        assert_eq!(owner_pid("xlbt", "other-0-node"), None);
        assert_eq!(owner_pid("xlbt", "xlb"), None);
        assert_eq!(owner_pid("xlbt", "xlbt-1-node"), None);
    }

    #[test]
    fn cleanup_refuses_foreign_prefixes() {
        assert!(cleanup_stale("cni-").is_err());
        assert!(cleanup_stale("").is_err());
    }

    #[test]
    fn interface_names_fit() {
        for i in 0..Topology::MAX_PODS {
            assert!(format!("p{i}").len() <= 15);
        }
    }
}
