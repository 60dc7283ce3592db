//! Driving the `xlb` binary: the agent inside the node namespace and the CLI.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{Netns, Topology};

static PIN_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The `xlb` binary to test: `$XLB_BIN` when set (as `cargo xtask test`
/// does), else the newer of `target/release/xlb` and `target/debug/xlb`
/// (under `$CARGO_TARGET_DIR` when set).
pub fn xlb_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("XLB_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("XLB_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let target = target_dir();
    let newest = ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("xlb"))
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?.modified().ok()?;
            Some((m, p))
        })
        .max_by_key(|(m, _)| *m);
    match newest {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no xlb binary in {}/{{release,debug}}: build it with `cargo build --release -p lb-userspace` \
             (`cargo xtask test` does) or set XLB_BIN",
            target.display()
        ),
    }
}

/// A bpffs directory for one agent's pins, removed (recursively) on drop.
/// [`PinDir::new`] picks `/sys/fs/bpf/xlbt<pid>-<n>-pins`, which
/// [`crate::cleanup_stale`] also removes once this process is gone. The
/// directory itself is not created: the agent does that.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// A fresh, unique pin path under `/sys/fs/bpf` (bpffs must be mounted
    /// there: `cargo xtask setup` mounts it).
    pub fn new() -> Result<Self> {
        crate::require_root()?;
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        if !mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ")) {
            bail!("bpffs is not mounted at /sys/fs/bpf: run `cargo xtask setup` or `mount -t bpf bpf /sys/fs/bpf`");
        }
        let n = PIN_COUNTER.fetch_add(1, Ordering::SeqCst);
        Self::at(format!("/sys/fs/bpf/{}{}-{n}-pins", crate::PREFIX, std::process::id()))
    }

    /// Uses `path`, which must not exist yet (so that we only ever remove
    /// what we made); it is removed on drop.
    pub fn at(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if path.exists() {
            bail!("pin path {} already exists; remove it if no agent uses it", path.display());
        }
        Ok(PinDir { path })
    }

    /// The directory to pass as `--pin-path`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.path.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!("xlb-tests: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// A configuration file in the temporary directory, named after the
/// topology, removed on drop. [`ConfigFile::write`] replaces its content
/// atomically (write + rename), as an editor or a ConfigMap update would.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `yaml` to `$TMPDIR/<topology prefix>-<n>.yaml`.
    pub fn new(topo: &Topology, yaml: &str) -> Result<Self> {
        let n = PIN_COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("{}-{n}.yaml", topo.prefix));
        let file = ConfigFile { path };
        file.write(yaml)?;
        Ok(file)
    }

    /// The file's path (for `--config`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the content atomically.
    pub fn write(&self, yaml: &str) -> Result<()> {
        let tmp = self.path.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("cannot replace {}", self.path.display()))
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("yaml.tmp"));
    }
}

/// A running `xlb agent` inside a topology's node namespace, with its
/// stderr collected. Dropping it stops it (SIGTERM, SIGKILL after 10 s).
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    node: Netns,
    bin: PathBuf,
    pin_path: PathBuf,
    metrics_addr: SocketAddr,
    log: Arc<Mutex<String>>,
    log_thread: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Agent {
    /// Starts `xlb agent --config CONFIG --interface IF... --pin-path PIN
    /// --metrics-addr 127.0.0.1:PORT EXTRA...` in `topo.node` (one
    /// `--interface` per node-side veth) and waits up to 30 s for `/healthz`
    /// to answer 200. Fails with the agent's log if it exits or never
    /// becomes healthy.
    pub fn start(topo: &Topology, config: &Path, pin_path: &Path, extra: &[&str]) -> Result<Agent> {
        let mut agent = Self::spawn(topo, config, pin_path, extra)?;
        agent.wait_healthy(Duration::from_secs(30))?;
        Ok(agent)
    }

    /// Like [`Agent::start`] without waiting for health (for tests that
    /// expect the agent to refuse its configuration; see
    /// [`Agent::wait_exit`]).
    pub fn spawn(topo: &Topology, config: &Path, pin_path: &Path, extra: &[&str]) -> Result<Agent> {
        let mut args: Vec<String> = vec!["agent".into(), "--config".into(), config.display().to_string()];
        for ifname in topo.node_interfaces() {
            args.push("--interface".into());
            args.push(ifname);
        }
        args.extend(extra.iter().map(std::string::ToString::to_string));
        Self::spawn_args(&topo.node, pin_path, &args)
    }

    /// Starts `xlb ARGS... --pin-path PIN --metrics-addr 127.0.0.1:PORT` in
    /// `node` (a free port of the node namespace's loopback). ARGS start
    /// with the subcommand (`agent`). Does not wait.
    pub fn spawn_args(node: &Netns, pin_path: &Path, args: &[String]) -> Result<Agent> {
        Self::spawn_bin(&xlb_binary()?, node, pin_path, args)
    }

    /// [`Agent::spawn_args`] with another xlb binary (an older build).
    pub fn spawn_bin(bin: &Path, node: &Netns, pin_path: &Path, args: &[String]) -> Result<Agent> {
        let port = node.try_run(|| -> std::io::Result<u16> {
            Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
        })??;
        let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .arg("--pin-path")
            .arg(pin_path)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = node.spawn(&mut cmd)?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr pipe"))?;
        let log = Arc::new(Mutex::new(String::new()));
        let echo = std::env::var_os("XLB_TEST_VERBOSE").is_some();
        let t_log = log.clone();
        let log_thread = std::thread::Builder::new().name("xlb-agent-log".into()).spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if echo {
                            eprint!("[xlb agent] {line}");
                        }
                        let mut l = t_log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        // Keep memory bounded for chatty agents.
                        if l.len() > 4 << 20 {
                            let cut = l.len() - (2 << 20);
                            let cut = (cut..l.len()).find(|&i| l.is_char_boundary(i)).unwrap_or(l.len());
                            l.drain(..cut);
                        }
                        l.push_str(&line);
                    }
                }
            }
        })?;
        Ok(Agent {
            child: Some(child),
            node: node.clone(),
            bin: bin.to_path_buf(),
            pin_path: pin_path.to_path_buf(),
            metrics_addr,
            log,
            log_thread: Some(log_thread),
            status: None,
        })
    }

    /// The agent's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The pin path the agent was given.
    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    /// The metrics address (reachable from inside the node namespace only).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Everything the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The last `n` lines of the agent's log for a failure message, without
    /// the program loader's per-relocation debug lines (hundreds at every
    /// start with `--log-level debug`, which would hide everything else).
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains(" aya_obj::")).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The exit status if the agent has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// `true` when `GET /healthz` answers 200 right now.
    pub fn is_healthy(&self) -> bool {
        matches!(self.http_get("/healthz"), Ok((200, _)))
    }

    /// Waits until `GET /healthz` answers 200 (bounded by `timeout`); fails
    /// with the log if the agent exits first or the time runs out.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.join_log();
                bail!("xlb agent exited ({status}) before it became healthy; its log:\n{}", self.log());
            }
            if let Ok((200, _)) = self.http_get("/healthz") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "xlb agent not healthy on http://{}/healthz after {timeout:?}; its log:\n{}",
                    self.metrics_addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) for the agent to exit by itself and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.join_log();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("xlb agent still running after {timeout:?}; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the agent if it still runs.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_status().is_some() {
            bail!("xlb agent already exited ({:?}); its log:\n{}", self.status, self.log());
        }
        let pid = self.pid().ok_or_else(|| anyhow!("no agent process"))? as i32;
        // SAFETY: pid is our unreaped child (try_status saw it running).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        Ok(())
    }

    /// SIGHUP: reload the configuration.
    pub fn reload(&mut self) -> Result<()> {
        self.signal(libc::SIGHUP)
    }

    /// Stops the agent with SIGTERM and waits (up to 15 s, then SIGKILL) for
    /// it; returns its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.try_status() {
            self.join_log();
            return Ok(s);
        }
        self.signal(libc::SIGTERM)?;
        match self.wait_exit(Duration::from_secs(15)) {
            Ok(s) => Ok(s),
            Err(e) => {
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                    self.status = c.wait().ok();
                }
                self.join_log();
                Err(e.context("xlb agent ignored SIGTERM; killed it"))
            }
        }
    }

    fn join_log(&mut self) {
        // The pipe closes when the agent exits; do not hang if a grandchild
        // kept it open.
        if let Some(t) = self.log_thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }

    /// `GET path` on the metrics server from inside the node namespace:
    /// returns the status code and the body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        crate::http::get(&self.node, self.metrics_addr, path, Duration::from_secs(2))
    }

    /// The Prometheus text from `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        match self.http_get("/metrics")? {
            (200, body) => Ok(body),
            (code, body) => bail!("/metrics answered {code}: {body}"),
        }
    }

    /// Runs `xlb ARGS... --pin-path PIN` inside the node namespace (the CLI
    /// reads the agent's pinned maps) and returns its output, whatever the
    /// exit status.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        cli(&self.node, &self.bin, &self.pin_path, args)
    }

    /// Waits (up to 10 s) until `xlb services` shows `name` with `n`
    /// backends; the error carries the last `xlb services` output.
    pub fn wait_backends(&self, name: &str, n: usize) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let v = self.services_json()?;
            let ok = v
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == name && s["backends"].as_array().is_some_and(|b| b.len() == n));
            if ok {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!("{name} with {n} backends not programmed after 10 s: {v:#}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `xlb services -o json`, parsed.
    pub fn services_json(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["services", "-o", "json"])?;
        if !out.status.success() {
            bail!("xlb services failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("xlb services -o json printed: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() && self.try_status().is_none() {
            if let Err(e) = self.stop() {
                eprintln!("xlb-tests: stopping the agent: {e:#}");
            }
        }
        self.join_log();
    }
}

/// Reads a child's piped stdout and stderr to their ends on two threads (so
/// neither pipe fills up while the caller waits for the child).
#[expect(clippy::type_complexity, reason = "the stdout and stderr readers, as a pair")]
pub fn read_pipes(child: &mut Child) -> Result<(JoinHandle<Vec<u8>>, JoinHandle<Vec<u8>>)> {
    fn drain(mut r: impl std::io::Read + Send + 'static) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    }
    let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout pipe"))?;
    let err = child.stderr.take().ok_or_else(|| anyhow!("no stderr pipe"))?;
    Ok((drain(out), drain(err)))
}

/// Runs `BIN ARGS... --pin-path PIN` in `ns` (via [`Netns::spawn`], so the
/// host's bpffs is visible) with a 60 s bound, returning its output.
pub(crate) fn cli(ns: &Netns, bin: &Path, pin_path: &Path, args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(bin);
    cmd.args(args).arg("--pin-path").arg(pin_path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ns.spawn(&mut cmd)?;
    let (out_t, err_t) = read_pipes(&mut child)?;
    let deadline = Instant::now() + Duration::from_mins(1);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`xlb {}` did not finish within 60 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output { status, stdout: out_t.join().unwrap_or_default(), stderr: err_t.join().unwrap_or_default() })
}

/// Runs `xlb ARGS...` (nothing added) in `ns` via [`Netns::spawn`] and
/// waits up to `limit`; past it the process gets SIGTERM, then SIGKILL 15 s
/// later, and its (signalled) status is returned with what it printed.
pub fn run_xlb(ns: &Netns, args: &[String], limit: Duration) -> Result<Output> {
    let mut cmd = Command::new(xlb_binary()?);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ns.spawn(&mut cmd)?;
    let (out_t, err_t) = read_pipes(&mut child)?;
    let deadline = Instant::now() + limit;
    let mut termed = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline && !termed {
            // SAFETY: our unreaped child (try_wait saw it running).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            termed = true;
        }
        if Instant::now() >= deadline + Duration::from_secs(15) {
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output { status, stdout: out_t.join().unwrap_or_default(), stderr: err_t.join().unwrap_or_default() })
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else the workspace's.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dir_refuses_existing_paths() {
        assert!(PinDir::at("/").is_err());
    }
}
