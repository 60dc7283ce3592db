//! Host helpers of the benches and the data-path tests: commands, bpffs,
//! joining a namespace on the calling thread, CPU pinning and priorities,
//! leftovers of killed runs.

use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _, Result};

/// Runs `args[0] args[1..]` with `stdin` as its input (e.g. `ip -batch -`);
/// fails with its stderr on a non-zero exit.
pub fn sh(args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::io::Write as _;
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().with_context(|| format!("running {} (is iproute2 installed?)", args[0]))?;
    if let Some(text) = stdin {
        child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// Mounts the BPF filesystem on /sys/fs/bpf unless it is there.
pub fn ensure_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "));
    if !mounted {
        std::fs::create_dir_all("/sys/fs/bpf")?;
        sh(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], None)?;
    }
    Ok(())
}

/// Moves the calling thread into the named network namespace (for good:
/// the per-packet and control-plane benches and each data-path test case
/// run there from start to end).
pub fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: valid namespace fd; only this thread changes namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU mask of the calling thread (empty if it cannot be read).
pub fn get_affinity() -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is valid; on failure it stays empty.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set);
        set
    }
}

/// Sets the CPU mask of `pid` (0: the calling thread) to `mask`.
pub fn set_affinity_mask(pid: libc::pid_t, mask: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: a valid mask of the size given.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), mask) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Restricts `pid` (0: the calling thread) to `cpus`.
pub fn set_affinity(pid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in bounds for cpu < 1024.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: as above.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set_affinity_mask(pid, &set)
}

/// Pins the calling thread to `cpu` (default: the first allowed CPU), so
/// per-CPU maps, LRU lists and caches stay on one CPU. Returns the CPU.
pub fn pin_thread(cpu: Option<usize>) -> Result<usize> {
    let cpu = match cpu {
        Some(c) => c,
        None => {
            // SAFETY: a zeroed cpu_set_t is valid; plain libc calls on it.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) != 0 {
                    bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
                }
                (0..libc::CPU_SETSIZE as usize).find(|c| libc::CPU_ISSET(*c, &set)).context("no CPU allowed")?
            }
        }
    };
    set_affinity(0, &[cpu]).with_context(|| format!("pinning to CPU {cpu}"))?;
    Ok(cpu)
}

/// Sets the nice value of thread `tid` (0: the calling thread).
pub fn set_nice(tid: i32, nice: i32) {
    // SAFETY: plain syscall; PRIO_PROCESS with a thread id acts on that thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
}

/// The nice value of thread `tid` (0: the calling thread).
pub fn get_nice(tid: i32) -> i32 {
    // SAFETY: plain syscall (-1 is also a valid value; errors leave 0 below).
    unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
}

/// Removes network namespaces `<netns_prefix><pid>` and pin directories
/// `<pin_prefix><pid>[-agent]` of earlier runs whose process is gone.
pub fn cleanup_stale(netns_prefix: &str, pin_prefix: &str) {
    let alive = |pid: &str| pid.parse::<i32>().is_ok_and(crate::pid_alive);
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = name.strip_prefix(netns_prefix) {
                if !alive(pid) {
                    let _ = sh(&["ip", "netns", "del", name], None);
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for e in dir.flatten() {
            let path = e.path();
            if let Some(pid) = path.to_str().and_then(|p| p.strip_prefix(pin_prefix)) {
                if !alive(pid.trim_end_matches("-agent")) {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }
}
