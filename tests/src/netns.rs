//! A named network namespace (`/var/run/netns/<name>`, as `ip netns` makes
//! them) and ways to run code, commands and processes inside it.

use std::fs::File;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// A named network namespace. Cloning shares the record of the processes
/// started in it (see [`Netns::spawn`]).
#[derive(Clone, Debug)]
pub struct Netns {
    /// The name under `/var/run/netns`, usable with `ip -n NAME` and
    /// `ip netns exec NAME`.
    pub name: String,
    children: Arc<Mutex<Vec<u32>>>,
}

impl Netns {
    /// Refers to an existing named namespace (does not create it).
    pub fn existing(name: impl Into<String>) -> Self {
        Netns { name: name.into(), children: Arc::default() }
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    fn open(&self) -> Result<OwnedFd> {
        let path = self.path();
        // File::open sets O_CLOEXEC.
        let f = File::open(&path).with_context(|| {
            format!("cannot open network namespace {} (does it exist? are we root?)", path.display())
        })?;
        Ok(OwnedFd::from(f))
    }

    /// Runs `f` on a new thread that has joined this namespace
    /// (`setns(CLONE_NEWNET)`) and returns its result. Sockets created inside
    /// `f` belong to this namespace for their whole life, so they can be
    /// returned and used from any thread afterwards. Panics in `f` propagate;
    /// failing to enter the namespace panics too (see [`Netns::try_run`]).
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        match self.try_run(f) {
            Ok(r) => r,
            Err(e) => panic!("cannot enter network namespace {}: {e:#}", self.name),
        }
    }

    /// Like [`Netns::run`], but failing to enter the namespace is an error.
    pub fn try_run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.open()?;
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(s, move || -> Result<R> {
                    enter(&fd)?;
                    drop(fd);
                    Ok(f())
                })
                .context("cannot spawn a thread")?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `ip netns exec <name> ARGS...` to completion and returns its
    /// output (whatever the exit status; see [`Netns::exec_ok`]). Note that
    /// `ip netns exec` remounts `/sys` (hiding the host's bpffs): use
    /// [`Netns::spawn`] for programs that need `/sys/fs/bpf`.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        Command::new("ip")
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `ip {}` (is iproute2 installed?)", all.join(" ")))
    }

    /// Like [`Netns::exec`] but a non-zero exit is an error carrying stderr.
    pub fn exec_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.exec(args)?;
        if !out.status.success() {
            bail!(
                "`{}` in netns {} failed ({}): {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Runs `ip -n <name> ARGS...`, failing with its stderr on error.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        crate::run_cmd("ip", &all)
    }

    /// Starts `cmd` inside this namespace. Only the network namespace
    /// changes (through `setns` between fork and exec, not `ip netns exec`),
    /// so the child sees the host's mounts, `/sys/fs/bpf` pins included.
    ///
    /// The child gets SIGTERM when the *thread* that called `spawn` exits
    /// (`PR_SET_PDEATHSIG`), so a killed test leaves no process behind: call
    /// it from the thread that owns the process (not inside [`Netns::run`]).
    /// The [`Topology`](crate::Topology) that owns this namespace stops the
    /// child on drop if it still runs. `cmd` keeps a `pre_exec` hook bound to
    /// this call: do not spawn it again.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        let fd = self.open()?;
        let raw = fd.as_raw_fd();
        // SAFETY: the hook only makes async-signal-safe system calls
        // (setns, prctl, getppid) on an fd that stays open until after spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {:?} in netns {}", cmd.get_program(), self.name))?;
        drop(fd);
        self.children.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
        Ok(child)
    }

    /// Stops every process started with [`Netns::spawn`] that still runs:
    /// SIGTERM, then SIGKILL after `grace`. Only our own unreaped children
    /// are signalled (checked with `waitid(WNOWAIT)`), so a pid that was
    /// already reaped (and might be reused) is never touched. Children are
    /// not reaped here, so a `Child` the caller still holds can be waited.
    pub fn stop_children(&self, grace: Duration) {
        let pids: Vec<u32> = std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        let running: Vec<i32> = pids.iter().map(|&p| p as i32).filter(|&p| child_running(p)).collect();
        for &pid in &running {
            // SAFETY: pid is our unreaped child (checked just above).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        for &pid in &running {
            while child_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if child_running(pid) {
                eprintln!("xlb-tests: pid {pid} in netns {} ignored SIGTERM; killing it", self.name);
                // SAFETY: still our unreaped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Give SIGKILLed children a moment so the namespace can go away.
        let deadline = Instant::now() + Duration::from_secs(2);
        for &pid in &running {
            while child_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Joins the network namespace behind `fd` on the calling thread.
fn enter(fd: &OwnedFd) -> Result<()> {
    // SAFETY: setns on a valid namespace fd affects only this thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
    }
    Ok(())
}

/// `true` while `pid` is our child and has not exited; `false` for a zombie,
/// a reaped child or a pid that is not our child.
pub(crate) fn child_running(pid: i32) -> bool {
    // SAFETY: waitid with WNOWAIT only queries; info is plain old data.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() == 0
    }
}
