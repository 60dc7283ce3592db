//! The same services through the `xlb` agent.

use std::os::fd::AsRawFd as _;
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use xlb_bench::stop::check_stop;

use crate::measure::AgentResults;
use crate::measure::{ms, progress};
use crate::state::{backend_addr, desired, yaml};
use crate::Opts;

/// A `/proc/PID/status` field in KiB.
pub(crate) fn pid_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// Runs the agent in the namespace on the generated file: start time, RSS,
/// and file change → reloaded maps, `reloads` times.
pub(crate) fn agent_run(opts: &Opts, xlb: &Path, netns: &str, pin: &Path, config: &Path) -> Result<AgentResults> {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt as _;
    let mut state = desired(opts);
    let text = yaml(&state);
    std::fs::write(config, &text).with_context(|| format!("writing {}", config.display()))?;
    let mut r = AgentResults { config_bytes: text.len() as u64, reloads: 3, ..Default::default() };
    let t = Instant::now();
    let parsed = xlb::source::config::parse("bench.yaml", &text)
        .map_err(|e| anyhow::anyhow!("the generated file does not validate: {e}"))?;
    r.parse_ms = ms(t.elapsed());
    ensure!(parsed.state.services.len() == state.services.len(), "the generated file lost services");
    drop(parsed);

    let ns = std::fs::File::open(format!("/var/run/netns/{netns}"))?;
    let ns_fd = ns.as_raw_fd();
    let mut cmd = Command::new(xlb);
    cmd.args(["agent", "--config"])
        .arg(config)
        .args(["--interface", "v0", "--pin-path"])
        .arg(pin)
        .args(["--metrics-addr", "127.0.0.1:19464", "--flow-table-size"])
        .arg(opts.flow_entries.to_string())
        .arg("--table-entries")
        .arg(opts.table_entries.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only setns (async-signal-safe) between fork and exec, on an fd
    // that stays open until the child is spawned.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", xlb.display()))?;
    drop(ns);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    let stderr = child.stderr.take().context("agent stderr")?;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let mut wait_for = |needle: &str, limit: Duration| -> Result<(Instant, String)> {
        let deadline = Instant::now() + limit;
        loop {
            check_stop()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok((at, line)) => {
                    if line.contains(needle) {
                        return Ok((at, line));
                    }
                    log.push(line);
                    if log.last().is_some_and(|l| l.contains("ERROR")) {
                        bail!("the agent logged an error:\n{}", log.join("\n"));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => bail!("no {needle:?} from the agent within {limit:?}; its log:\n{}", log.join("\n")),
            }
        }
    };
    let result = (|| -> Result<()> {
        let (running, _) = wait_for("xlb agent running", Duration::from_mins(2))?;
        r.start_ms = ms(running.duration_since(t));
        progress(&format!("agent started on the {} byte file in {:.0} ms", r.config_bytes, r.start_ms));
        std::thread::sleep(Duration::from_millis(300));
        r.rss_kib = pid_status_kib(pid, "VmRSS:");
        r.rss_anon_kib = pid_status_kib(pid, "RssAnon:");
        r.rss_file_kib = pid_status_kib(pid, "RssFile:") + pid_status_kib(pid, "RssShmem:");
        r.hwm_kib = pid_status_kib(pid, "VmHWM:");
        let mut times = Vec::new();
        for c in 0..r.reloads {
            let svc = ((u64::from(c) * 104729) % u64::from(opts.services)) as usize;
            let new = backend_addr(opts.services * opts.backends + 1_000_000 + c);
            state.services[svc].backends[0].addr = new;
            let text = yaml(&state);
            let t = Instant::now();
            std::fs::write(config, &text)?;
            let (done, line) = wait_for("configuration reloaded", Duration::from_mins(1))?;
            times.push(done.duration_since(t));
            ensure!(line.contains("updated: 1,"), "the reload did not update exactly one service: {line}");
        }
        times.sort();
        r.reload_median_ms = ms(times[times.len() / 2]);
        progress(&format!("agent: file change → maps reloaded, median of {}: {:.0} ms", r.reloads, r.reload_median_ms));
        Ok(())
    })();
    // SAFETY: our child, not yet reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    result.map(|()| r)
}
