//! BIRD 2 (the routing daemon) inside network namespaces, for the BGP
//! announcement tests: a [`Bird`] runs `bird -f` with its own configuration,
//! control socket and log in a private temporary directory; the shipped
//! node configuration (`deploy/bgp/bird.conf`) is rendered with
//! [`render_node_config`], so the file users install is the one tested.
//!
//! Also: reading a namespace's kernel routes ([`kernel_route`]) and a
//! bounded wait ([`wait_until`]).

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::Netns;

static BIRD_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The routing table the shipped configuration reads (the agent's default
/// `--announce-table`).
pub const XLB_TABLE: u32 = 4242;
/// The rtnetlink protocol number of the agent's routes.
pub const XLB_PROTO: u32 = 249;

/// `deploy/bgp/bird.conf` in this repository.
pub fn shipped_node_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bgp/bird.conf")
}

/// What a node's copy of `deploy/bgp/bird.conf` is edited with.
#[derive(Clone, Debug)]
pub struct NodeBgp {
    /// `@LOCAL_AS@`: the node's AS number.
    pub local_as: u32,
    /// `@PEER_AS@`: the router's AS number.
    pub peer_as: u32,
    /// `@PEER_ADDRESS@`: the router's IPv4 address.
    pub peer: IpAddr,
    /// `@PEER_ADDRESS6@`: the router's IPv6 address.
    pub peer6: IpAddr,
}

/// The shipped node configuration with its placeholders replaced as a user
/// would (only the `@...@` values; nothing else is changed). Fails if the
/// file has a placeholder this does not know (it must be updated with the
/// file) or lost one of them.
pub fn render_node_config(vars: &NodeBgp) -> Result<String> {
    let path = shipped_node_config();
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    render(&text, vars).with_context(|| format!("rendering {}", path.display()))
}

fn render(text: &str, vars: &NodeBgp) -> Result<String> {
    let subs = [
        ("@LOCAL_AS@", vars.local_as.to_string()),
        ("@PEER_AS@", vars.peer_as.to_string()),
        ("@PEER_ADDRESS@", vars.peer.to_string()),
        ("@PEER_ADDRESS6@", vars.peer6.to_string()),
    ];
    let mut out = text.to_string();
    for (placeholder, value) in &subs {
        if !out.contains(placeholder) {
            bail!("the configuration has no placeholder {placeholder}");
        }
        out = out.replace(placeholder, value);
    }
    if let Some(line) = out.lines().find(|l| l.split('#').next().unwrap_or_default().contains('@')) {
        bail!("a placeholder is left after rendering: {line:?}");
    }
    Ok(out)
}

/// A BGP neighbour of a [`router_config`].
#[derive(Clone, Debug)]
pub struct Neighbour {
    /// The protocol's name in BIRD (`birdc show protocols NAME`).
    pub name: String,
    /// The neighbour's address (IPv4 or IPv6: the session carries that family).
    pub address: IpAddr,
    /// Its AS number.
    pub asn: u32,
}

/// A router's BIRD configuration (test-owned, not shipped): BGP sessions to
/// `neighbours` importing everything and exporting nothing, and kernel
/// protocols writing the best routes into the main table, with equal paths
/// from several neighbours merged into one multipath route (`merge paths`:
/// ECMP). The timers make sessions come up within about a second; updates
/// themselves are never delayed (BIRD has no advertisement interval).
pub fn router_config(local_as: u32, neighbours: &[Neighbour]) -> String {
    let mut c = format!(
        "log stderr all;\n\
         protocol device {{}}\n\
         protocol kernel kernel4 {{ merge paths on; ipv4 {{ import none; export all; }}; }}\n\
         protocol kernel kernel6 {{ merge paths on; ipv6 {{ import none; export all; }}; }}\n\
         template bgp node {{\n\
         \tlocal as {local_as};\n\
         \thold time 9; keepalive time 3;\n\
         \tconnect delay time 1; connect retry time 1; error wait time 1, 5;\n\
         }}\n"
    );
    for n in neighbours {
        let family = if n.address.is_ipv4() { "ipv4" } else { "ipv6" };
        c.push_str(&format!(
            "protocol bgp {} from node {{ neighbor {} as {}; {family} {{ import all; export none; }}; }}\n",
            n.name, n.address, n.asn
        ));
    }
    c
}

/// A `bird -f` process in a network namespace, with its configuration,
/// control socket and log in a temporary directory of its own. Dropping it
/// stops that process (SIGTERM, then SIGKILL; only this pid) and removes the
/// directory.
pub struct Bird {
    /// A name for messages (`router`, `node1`, ...).
    pub name: String,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Bird {
    /// Checks `config` (`bird -p`), starts BIRD with it in `ns` and waits
    /// (at most 10 s) until its control socket answers.
    pub fn start(ns: &Netns, name: &str, config: &str) -> Result<Bird> {
        let n = BIRD_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("{}{}-bird-{n}-{name}", crate::PREFIX, std::process::id()));
        if dir.exists() {
            bail!("{} already exists; remove it if no test uses it", dir.display());
        }
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut bird =
            Bird { name: name.to_string(), socket: dir.join("bird.ctl"), log: dir.join("bird.log"), dir, child: None };
        let conf = bird.dir.join("bird.conf");
        std::fs::write(&conf, config).with_context(|| format!("cannot write {}", conf.display()))?;
        let parse = Command::new("bird").arg("-p").arg("-c").arg(&conf).stdin(Stdio::null()).output().context(
            "cannot run `bird`: BIRD 2 is needed for the BGP tests (`cargo xtask setup` installs it; \
             or apt-get install -y bird2)",
        )?;
        if !parse.status.success() {
            bail!(
                "BIRD ({name}) rejects its configuration: {}\n--- {} ---\n{config}",
                String::from_utf8_lossy(&parse.stderr).trim(),
                conf.display()
            );
        }
        let log = File::create(&bird.log).with_context(|| format!("cannot create {}", bird.log.display()))?;
        let mut cmd = Command::new("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&bird.socket)
            .arg("-P")
            .arg(bird.dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        bird.child = Some(ns.spawn(&mut cmd)?);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if bird.birdc(&["show", "status"]).is_ok() {
                return Ok(bird);
            }
            if let Some(status) = bird.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("BIRD ({name}) exited at start ({status}):\n{}", bird.log());
            }
            if Instant::now() > deadline {
                bail!("BIRD ({name}) did not answer on {} within 10 s:\n{}", bird.socket.display(), bird.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The control socket (`birdc -s`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// BIRD's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What BIRD logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// `birdc -s SOCKET ARGS...`: its output without the greeting line, or
    /// an error when birdc fails or cannot reach BIRD.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run `birdc` (apt-get install -y bird2)")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains("Unable to connect to server") {
            bail!(
                "`birdc -s {} {}` failed ({}): {}{}",
                self.socket.display(),
                args.join(" "),
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(text.lines().filter(|l| !l.starts_with("BIRD ") || !l.ends_with(" ready.")).collect::<Vec<_>>().join("\n"))
    }

    /// The line of `birdc show protocols NAME` (name, protocol, table,
    /// state, since, info; e.g. `peer1 BGP --- up 13:21:18.967 Established`).
    pub fn protocol(&self, name: &str) -> Result<String> {
        let text = self.birdc(&["show", "protocols", name])?;
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .with_context(|| format!("BIRD ({}) has no protocol {name}: {text}", self.name))?;
        Ok(line.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// Waits (at most `limit`) until every protocol of `names` is an
    /// established BGP session; returns how long that took.
    pub fn wait_established(&self, names: &[&str], limit: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let states: Vec<String> =
                names.iter().map(|n| self.protocol(n).unwrap_or_else(|e| format!("{e:#}"))).collect();
            if states.iter().all(|s| s.split_whitespace().any(|w| w == "Established")) {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                let all = self.birdc(&["show", "protocols", "all"]).unwrap_or_else(|e| format!("{e:#}"));
                bail!(
                    "BIRD ({}): sessions not established within {limit:?}: {states:?}\n{all}\n--- log ---\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `birdc show route all` of every table: for failure messages.
    pub fn diag(&self) -> String {
        format!(
            "--- BIRD {}: show protocols ---\n{}\n--- BIRD {}: show route all table all ---\n{}\n",
            self.name,
            self.birdc(&["show", "protocols"]).unwrap_or_else(|e| format!("{e:#}")),
            self.name,
            self.birdc(&["show", "route", "all", "table", "all"]).unwrap_or_else(|e| format!("{e:#}")),
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let pid = child.id() as i32;
                // SAFETY: pid is our own child, not reaped yet (try_wait
                // just saw it running), so it cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    eprintln!("xlb-tests: BIRD ({}) ignored SIGTERM; killing it", self.name);
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("xlb-tests: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// One path of a kernel route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextHop {
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
    /// The output device.
    pub dev: String,
}

/// A kernel route as `ip -j route show` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    /// `dst` (e.g. `192.0.2.10`, a host route printed without `/32`).
    pub dst: String,
    /// `protocol` (`bird`, `249`, `static`, ...).
    pub protocol: String,
    /// Its paths, sorted: one, or several for a multipath route.
    pub nexthops: Vec<NextHop>,
}

impl KernelRoute {
    /// The output devices of its paths, sorted.
    pub fn devs(&self) -> Vec<String> {
        self.nexthops.iter().map(|n| n.dev.clone()).collect()
    }
}

/// The route for exactly `prefix` in `ns`'s table `table` (`main`, `4242`,
/// ...), if there is one.
pub fn kernel_route(ns: &Netns, table: &str, prefix: &str) -> Result<Option<KernelRoute>> {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    let routes = show_routes(ns, &["-j", family, "route", "show", "table", table, "exact", prefix])?;
    Ok(routes.into_iter().next())
}

/// Every route of `ns`'s table `table` in one family (`-4`/`-6`).
pub fn kernel_routes(ns: &Netns, family: &str, table: &str) -> Result<Vec<KernelRoute>> {
    show_routes(ns, &["-j", family, "route", "show", "table", table])
}

/// `ip -n NS ARGS` parsed; a table that never held a route does not exist
/// for the kernel (IPv4): no routes.
fn show_routes(ns: &Netns, args: &[&str]) -> Result<Vec<KernelRoute>> {
    let mut all = vec!["-n", ns.name.as_str()];
    all.extend_from_slice(args);
    let out = Command::new("ip").args(&all).stdin(Stdio::null()).output().context("cannot run `ip`")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("FIB table does not exist") {
            return Ok(Vec::new());
        }
        bail!("`ip {}` failed ({}): {}", all.join(" "), out.status, stderr.trim());
    }
    parse_routes(&String::from_utf8_lossy(&out.stdout))
}

fn parse_routes(json: &str) -> Result<Vec<KernelRoute>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value = serde_json::from_str(json).with_context(|| format!("`ip -j route` printed {json:?}"))?;
    let hop = |h: &serde_json::Value| NextHop {
        gateway: h["gateway"].as_str().and_then(|g| g.parse().ok()),
        dev: h["dev"].as_str().unwrap_or_default().to_string(),
    };
    let mut out = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let mut nexthops: Vec<NextHop> = match r["nexthops"].as_array() {
            Some(hops) => hops.iter().map(hop).collect(),
            None => vec![hop(r)],
        };
        nexthops.sort();
        let protocol = match &r["protocol"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        out.push(KernelRoute { dst: r["dst"].as_str().unwrap_or_default().to_string(), protocol, nexthops });
    }
    Ok(out)
}

/// Calls `probe` every `every` until it returns `Some`, for at most
/// `limit`; returns the value and when it came (measured from the call), or
/// the last time waited when it never did.
pub fn wait_until<T>(limit: Duration, every: Duration, mut probe: impl FnMut() -> Option<T>) -> Result<(T, Duration)> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Ok((v, t0.elapsed()));
        }
        if t0.elapsed() > limit {
            bail!("not within {limit:?}");
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> NodeBgp {
        NodeBgp {
            local_as: 64512,
            peer_as: 64500,
            peer: "10.0.0.1".parse().unwrap(),
            peer6: "fd00::1".parse().unwrap(),
        }
    }

    #[test]
    fn renders_every_placeholder_of_the_shipped_file() {
        let text = render_node_config(&vars()).unwrap();
        assert!(text.contains("define PEER_ADDRESS = 10.0.0.1;"), "{text}");
        assert!(text.contains("define LOCAL_AS = 64512;"), "{text}");
        assert!(text.contains(&format!("define XLB_TABLE = {XLB_TABLE};")), "{text}");
    }

    #[test]
    fn unknown_or_missing_placeholders_are_errors() {
        let full = "a @LOCAL_AS@ @PEER_AS@ @PEER_ADDRESS@ @PEER_ADDRESS6@\n";
        assert!(render(full, &vars()).is_ok());
        assert!(render("a @LOCAL_AS@ @PEER_AS@ @PEER_ADDRESS@\n", &vars()).is_err());
        assert!(render(&format!("{full}x = @ROUTER_ID@;\n"), &vars()).is_err());
        // A comment may mention a placeholder-like word.
        assert!(render(&format!("{full}# see @...@\n"), &vars()).is_ok());
    }

    #[test]
    fn parses_single_and_multipath_routes() {
        let one =
            r#"[{"dst":"192.0.2.10","gateway":"10.201.1.1","dev":"r1","protocol":"bird","metric":32,"flags":[]}]"#;
        let r = parse_routes(one).unwrap();
        assert_eq!(r[0].dst, "192.0.2.10");
        assert_eq!(r[0].protocol, "bird");
        assert_eq!(r[0].nexthops, vec![NextHop { gateway: Some("10.201.1.1".parse().unwrap()), dev: "r1".into() }]);
        let multi = r#"[{"dst":"192.0.2.10","protocol":"bird","metric":32,"flags":[],"nexthops":[
            {"gateway":"10.201.2.1","dev":"r2","weight":1,"flags":[]},
            {"gateway":"10.201.1.1","dev":"r1","weight":1,"flags":[]}]}]"#;
        assert_eq!(parse_routes(multi).unwrap()[0].devs(), vec!["r1", "r2"]);
        let lo = r#"[{"dst":"192.0.2.10","dev":"lo","protocol":249,"scope":"link","flags":[]}]"#;
        let r = parse_routes(lo).unwrap();
        assert_eq!((r[0].protocol.as_str(), r[0].nexthops[0].gateway), ("249", None));
        assert!(parse_routes("").unwrap().is_empty());
    }
}
