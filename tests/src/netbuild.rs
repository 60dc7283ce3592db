//! Hand-built topologies of several namespaces (nodes, routers, switches,
//! pods), for the tests that need more than [`Topology`](crate::Topology):
//! a [`Net`] owns the namespaces and the configuration file, and the free
//! functions join them with veths, routes and sysctls.
//!
//! Set-up steps panic with what failed (they are for tests); teardown only
//! reports.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{cleanup_stale, Agent, Netns, PREFIX};

/// Owns the namespaces and the configuration file of one test: on drop,
/// stops every process started through the namespaces (only those),
/// deletes the namespaces (which removes their veths, bridges and XDP
/// programs) and removes the file.
pub struct Net {
    prefix: String,
    created: Vec<Netns>,
    config: Option<PathBuf>,
}

impl Net {
    /// An empty set whose namespaces are named `xlbt<pid>-<tag>-<name>`.
    /// Removes what killed runs left behind first ([`cleanup_stale`]).
    pub fn new(tag: &str) -> Net {
        if let Err(e) = cleanup_stale(PREFIX) {
            eprintln!("xlb-tests: cleaning stale namespaces failed: {e:#}");
        }
        Net { prefix: format!("{PREFIX}{}-{tag}", std::process::id()), created: Vec::new(), config: None }
    }

    /// A new namespace `<prefix>-<name>` with loopback up, rp_filter and
    /// IPv6 DAD off (inherited by the interfaces made later), and IPv4
    /// forwarding on if asked.
    pub fn add(&mut self, name: &str, forwarding: bool) -> Netns {
        let name = format!("{}-{name}", self.prefix);
        crate::run_cmd("ip", &["netns", "add", &name]).unwrap_or_else(|e| panic!("{e:#}"));
        let ns = Netns::existing(name);
        self.created.push(ns.clone());
        ip(&ns, &["link", "set", "lo", "up"]);
        // Before any veth exists, so new interfaces inherit these.
        sysctl(&ns, "net/ipv4/conf/all/rp_filter", "0");
        sysctl(&ns, "net/ipv4/conf/default/rp_filter", "0");
        sysctl(&ns, "net/ipv6/conf/all/accept_dad", "0");
        sysctl(&ns, "net/ipv6/conf/default/accept_dad", "0");
        if forwarding {
            sysctl(&ns, "net/ipv4/ip_forward", "1");
        }
        ns
    }

    /// Every namespace made so far, in order of creation.
    pub fn namespaces(&self) -> &[Netns] {
        &self.created
    }

    /// Writes `yaml` to `$TMPDIR/<prefix>.yaml` (removed on drop) and
    /// returns the path.
    pub fn write_config(&mut self, yaml: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{}.yaml", self.prefix));
        self.config = Some(path.clone());
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Starts `xlb agent --config FILE --interface IF... EXTRA...` in `ns`
    /// with pins under `pin` (the file of [`Net::write_config`]); does not
    /// wait for health.
    pub fn spawn_agent(&self, ns: &Netns, pin: &Path, interfaces: &[&str], extra: &[&str]) -> Agent {
        let config = self.config.as_ref().expect("Net::write_config before Net::spawn_agent");
        let mut args = vec!["agent".to_string(), "--config".into(), config.display().to_string()];
        for i in interfaces {
            args.push("--interface".into());
            args.push(i.to_string());
        }
        args.extend(extra.iter().map(std::string::ToString::to_string));
        Agent::spawn_args(ns, pin, &args).unwrap_or_else(|e| panic!("start the agent in {}: {e:#}", ns.name))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        crate::topology::delete_namespaces(&self.created);
        if let Some(p) = &self.config {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `ip -n NS ARGS...`; panics with its stderr on failure.
pub fn ip(ns: &Netns, args: &[&str]) {
    ns.ip(args).unwrap_or_else(|e| panic!("ip -n {} {}: {e:#}", ns.name, args.join(" ")));
}

/// The output of `ip -n NS ARGS...`, or what failed (for diagnostics).
pub fn ip_out(ns: &Netns, args: &[&str]) -> String {
    match ns.ip(args) {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(ip -n {} {} failed: {e:#})", ns.name, args.join(" ")),
    }
}

/// Writes `/proc/sys/<key>` from a thread inside `ns`.
pub fn sysctl(ns: &Netns, key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    ns.run(|| std::fs::write(&path, value))
        .unwrap_or_else(|e| panic!("netns {}: cannot set {path} to {value}: {e}", ns.name));
}

/// rp_filter off on every interface of `ns` (all, default and each device).
pub fn rp_filter_off(ns: &Netns) {
    let names: Vec<String> = ns.run(|| {
        std::fs::read_dir("/proc/sys/net/ipv4/conf")
            .map(|d| {
                d.filter_map(std::result::Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default()
    });
    assert!(names.iter().any(|n| n == "all"), "netns {}: no /proc/sys/net/ipv4/conf/all", ns.name);
    for n in names {
        sysctl(ns, &format!("net/ipv4/conf/{n}/rp_filter"), "0");
    }
}

/// A veth pair `a_if` (in `a`, address `a_addr` if any) — `b_if` (in `b`,
/// `b_addr` if any), both up.
pub fn link(a: &Netns, a_if: &str, a_addr: Option<&str>, b: &Netns, b_if: &str, b_addr: Option<&str>) {
    ip(a, &["link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name]);
    if let Some(addr) = a_addr {
        ip(a, &["addr", "add", addr, "dev", a_if]);
    }
    if let Some(addr) = b_addr {
        ip(b, &["addr", "add", addr, "dev", b_if]);
    }
    ip(a, &["link", "set", a_if, "up"]);
    ip(b, &["link", "set", b_if, "up"]);
}

/// Waits (at most 10 s) until every veth of `ns` has its carrier.
pub fn wait_carrier(ns: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let links = ip_out(ns, &["-o", "link", "show"]);
        if !links.lines().filter(|l| l.contains('@')).any(|l| !l.contains("LOWER_UP")) {
            return;
        }
        assert!(Instant::now() < deadline, "netns {}: links without carrier after 10 s:\n{links}", ns.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One datagram from `ns` to `to`:9 (nobody listens), so that the
/// neighbour entries on the way are resolved before the measured traffic.
pub fn poke(ns: &Netns, to: &str) {
    let to: SocketAddr = format!("{to}:9").parse().unwrap();
    ns.run(|| -> std::io::Result<()> { UdpSocket::bind("0.0.0.0:0")?.send_to(b"warm-up", to).map(|_| ()) })
        .unwrap_or_else(|e| panic!("netns {}: warm-up datagram to {to}: {e}", ns.name));
}

/// `xlb stats -o json` as counter name → value, or what went wrong.
pub fn stats(agent: &Agent) -> Result<BTreeMap<String, u64>, String> {
    let out = agent.cli(&["stats", "-o", "json"]).map_err(|e| format!("cannot run xlb stats: {e:#}"))?;
    if !out.status.success() {
        return Err(format!("xlb stats failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("xlb stats -o json printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))?;
    let obj = v.as_object().ok_or_else(|| format!("xlb stats -o json is not an object: {v}"))?;
    Ok(obj.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
}

/// Non-zero counters and the last 40 lines of the log of each named agent:
/// for failure messages.
pub fn agents_diag(agents: &[(&str, &Agent)]) -> String {
    let mut s = String::new();
    for (name, a) in agents {
        let st = match stats(a) {
            Ok(m) => {
                m.into_iter().filter(|(_, v)| *v != 0).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            }
            Err(e) => e,
        };
        let tail = a.log_tail(40);
        s.push_str(&format!(
            "\n--- {name}: xlb stats (non-zero) ---\n{st}\n--- {name}: agent log (tail) ---\n{tail}\n"
        ));
    }
    s
}
