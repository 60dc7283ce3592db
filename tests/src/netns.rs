//! A named network namespace (`/var/run/netns/<name>`, as `ip netns` makes
//! them) and ways to run code, commands and processes inside it.

use std::ffi::CString;
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

    /// Starts `cmd` inside this namespace, through `setns` between fork and
    /// exec (not `ip netns exec`).
    ///
    /// Like `ip netns exec`, the child gets a private mount namespace with a
    /// fresh sysfs on `/sys`, so `/sys/class/net` shows this namespace's
    /// interfaces; unlike it, the mounts that were under `/sys` (bpffs on
    /// `/sys/fs/bpf` above all, so pins are shared with the host and the
    /// CLI) are carried over into the new `/sys`. If the mount namespace
    /// cannot be set up before `/sys` is touched, the child keeps the host's
    /// mounts (only its network namespace changes).
    ///
    /// The child gets SIGTERM when the *thread* that called `spawn` exits
    /// (`PR_SET_PDEATHSIG`), so a killed test leaves no process behind: call
    /// it from the thread that owns the process (not inside [`Netns::run`]).
    /// The [`Topology`](crate::Topology) that owns this namespace stops the
    /// child on drop if it still runs. `cmd` keeps a `pre_exec` hook bound to
    /// this call: do not spawn it again.
    #[expect(clippy::unnecessary_debug_formatting, reason = "the program name, quoted")]
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        let fd = self.open()?;
        let raw = fd.as_raw_fd();
        let sys = SysRemount::prepare();
        // SAFETY: the hook only makes async-signal-safe system calls (setns,
        // prctl, unshare, mount, open_tree, move_mount) on data prepared
        // before the fork and an fd that stays open until after spawn; it
        // does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
                sys.apply()
            });
        }
        let child =
            cmd.spawn().with_context(|| format!("cannot start {:?} in netns {}", cmd.get_program(), self.name))?;
        drop(fd);
        self.children.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(child.id());
        Ok(child)
    }

    /// Stops every process started with [`Netns::spawn`] that still runs:
    /// SIGTERM, then SIGKILL after `grace`. Only our own unreaped children
    /// are signalled (checked with `waitid(WNOWAIT)`), so a pid that was
    /// already reaped (and might be reused) is never touched. Children are
    /// not reaped here, so a `Child` the caller still holds can be waited.
    pub fn stop_children(&self, grace: Duration) {
        let pids: Vec<u32> =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
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

/// What a spawned child needs to remount `/sys` for its network namespace
/// while keeping the mounts below it: prepared (allocated) before the fork,
/// applied after it without allocating.
struct SysRemount {
    sys: CString,
    sysfs: CString,
    root: CString,
    empty: CString,
    /// Mount points below `/sys` (outermost only), bpffs first.
    subs: Vec<CString>,
    /// How many leading entries of `subs` must be carried over (bpffs).
    required: usize,
}

const MAX_SUBMOUNTS: usize = 16;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

impl SysRemount {
    fn prepare() -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let subs = sys_submounts(&mountinfo);
        let required = usize::from(subs.first().map(String::as_str) == Some("/sys/fs/bpf"));
        SysRemount {
            sys: CString::new("/sys").unwrap(),
            sysfs: CString::new("sysfs").unwrap(),
            root: CString::new("/").unwrap(),
            empty: CString::new("").unwrap(),
            subs: subs.into_iter().filter_map(|s| CString::new(s).ok()).take(MAX_SUBMOUNTS).collect(),
            required,
        }
    }

    /// Runs in the child between fork and exec.
    unsafe fn apply(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // Soft part: failing here leaves the host's /sys in place.
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Ok(());
        }
        if libc::mount(
            std::ptr::null(),
            self.root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            return Ok(());
        }
        let mut fds = [-1 as libc::c_int; MAX_SUBMOUNTS];
        for (i, sub) in self.subs.iter().enumerate() {
            let fd = libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                sub.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
            );
            if fd < 0 && i < self.required {
                return Ok(());
            }
            fds[i] = fd as libc::c_int;
        }
        // Hard part: /sys is being replaced.
        if libc::umount2(self.sys.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(err());
        }
        if libc::mount(self.sysfs.as_ptr(), self.sys.as_ptr(), self.sysfs.as_ptr(), 0, std::ptr::null()) != 0 {
            return Err(err());
        }
        for (i, sub) in self.subs.iter().enumerate() {
            if fds[i] < 0 {
                continue;
            }
            let r = libc::syscall(
                libc::SYS_move_mount,
                fds[i],
                self.empty.as_ptr(),
                libc::AT_FDCWD,
                sub.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            );
            if r != 0 && i < self.required {
                return Err(err());
            }
        }
        Ok(())
    }
}

/// The outermost mount points strictly below `/sys` in a mountinfo text,
/// `/sys/fs/bpf` first when present.
fn sys_submounts(mountinfo: &str) -> Vec<String> {
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with("/sys/") && !p.contains('\\'))
        .map(str::to_string)
        .collect();
    points.sort();
    points.dedup();
    let mut outer: Vec<String> = Vec::new();
    for p in points {
        if !outer.iter().any(|o| p.starts_with(&format!("{o}/"))) {
            outer.push(p);
        }
    }
    if let Some(i) = outer.iter().position(|p| p == "/sys/fs/bpf") {
        let bpf = outer.remove(i);
        outer.insert(0, bpf);
    }
    outer
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
        let r =
            libc::waitid(libc::P_PID, pid as libc::id_t, &raw mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT);
        r == 0 && info.si_pid() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submounts_outermost_bpf_first() {
        let mi = "\
22 1 0:21 / /sys rw - sysfs sysfs rw
23 22 0:6 / /sys/kernel/security rw - securityfs securityfs rw
26 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
27 26 0:50 / /sys/fs/cgroup/x rw - cgroup2 cgroup2 rw
28 22 0:24 / /sys/fs/bpf rw - bpf bpf rw
29 1 0:25 / /proc rw - proc proc rw
30 22 0:26 / /sys/weird\\040dir rw - x x rw
";
        assert_eq!(sys_submounts(mi), vec!["/sys/fs/bpf", "/sys/fs/cgroup", "/sys/kernel/security"]);
        assert!(sys_submounts("22 1 0:21 / /sys rw - sysfs sysfs rw").is_empty());
    }
}
