//! The namespaces, addresses and frames of the topology (see main.rs).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use xlb_bench::host::{get_affinity, get_nice, set_affinity, set_nice};
use xlb_tests::Netns;

use crate::sys::{write_sysctl, BENCH_NICE};

pub(crate) const FRAME_LEN: usize = 60; // 64 bytes on the wire with the FCS
pub(crate) const UDP_PORT: u16 = 53;
pub(crate) const TCP_SETUP_PORT: u16 = 80;
pub(crate) const TCP_RR_PORT: u16 = 81;
pub(crate) const RR_BYTES: usize = 64;
pub(crate) const GEN_CPU: usize = 0;
/// Target duration of one generator BPF_PROG_RUN call.
pub(crate) const CALL_SECS: f64 = 0.25;
/// A slice during which other processes used more than this share of the
/// CPUs is measured again (within `--retry-budget-s`).
pub(crate) const CONTENDED: f64 = 0.10;
pub(crate) const FWD_CPU: usize = 1;

pub(crate) const VIP_SNAT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub(crate) const VIP_PRESERVE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
pub(crate) const VIP_NFT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
pub(crate) const VIP_PROXY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 13);
/// xlb's `flow_tracking: none` service (source: preserve; its backends on
/// their own port, [`UNTRACKED_BACKEND_PORT`]).
pub(crate) const VIP_UNTRACKED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 15);
/// The backends' port of the `flow_tracking: none` service: a backend of
/// such a service may belong to no other service.
pub(crate) const UNTRACKED_BACKEND_PORT: u16 = 5353;
/// The backends' port of the UDP `source: preserve` service: no other
/// service's, so xlb finds its replies by the backend (no reverse entry
/// per flow).
pub(crate) const PRESERVE_BACKEND_PORT: u16 = 5354;
/// The minimal tc forwarders' destination (`tc_fwd` on l4's tc ingress,
/// to backends behind b4/b5 whose peers run no XDP).
pub(crate) const VIP_TC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 16);
/// xlb's service whose backends sit behind b4/b5 (not xlb's interfaces,
/// peers without XDP): xlb's skb fallback.
pub(crate) const VIP_FALLBACK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 17);
/// The backends' port of that service.
pub(crate) const FALLBACK_BACKEND_PORT: u16 = 5355;
/// Destination of the ceiling frames (l3 drops everything).
pub(crate) const VIP_SINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);

pub(crate) fn mac_g(x: u8) -> [u8; 6] {
    [0x02, 0xfb, 0, 0, x, 2]
}
pub(crate) fn mac_l(x: u8) -> [u8; 6] {
    [0x02, 0xfb, 0, 0, x, 1]
}
/// LB side of the backend link `b<n>` (n = 0..6; b0/b1 -> 10.1.<i>, b2/b3 ->
/// 10.2.<i>, b4/b5 -> 10.3.<i>).
pub(crate) fn mac_b(n: u8) -> [u8; 6] {
    [0x02, 0xfb, 1, n, 0, 1]
}
/// Backend side of `b<n>` (eth0 for n < 2, eth1 for n < 4, eth2 otherwise).
pub(crate) fn mac_be(n: u8) -> [u8; 6] {
    [0x02, 0xfb, 1, n, 0, 2]
}
pub(crate) fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
pub(crate) fn gen_addr(x: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, x, 2)
}
pub(crate) fn lb_addr(x: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, x, 1)
}
/// Backend i's address on b<n>'s link: 10.1.i.2 (n = i), 10.2.i.2 (n = i + 2)
/// or 10.3.i.2 (n = i + 4).
pub(crate) fn be_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1 + n / 2, n % 2, 2)
}
pub(crate) fn be_gw(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1 + n / 2, n % 2, 1)
}

// ---------------------------------------------------------------- namespaces

/// A named network namespace made by us (the tests' [`Netns`]); its
/// processes are stopped and it is deleted on drop.
pub(crate) struct Ns {
    pub(crate) ns: Netns,
}

impl Ns {
    /// `ip netns add NAME`, loopback up, IPv6 and reverse-path filtering off.
    pub(crate) fn create(name: String) -> Result<Ns> {
        run_cmd("ip", &["netns", "add", &name])?;
        let ns = Ns { ns: Netns::existing(name) };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.run(|| -> Result<()> {
            // Before any veth exists, so new interfaces inherit it. IPv6 off:
            // the sinks would otherwise count neighbour discovery too.
            write_sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
            write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
            write_sysctl("net/ipv4/conf/all/rp_filter", "0")?;
            write_sysctl("net/ipv4/conf/default/rp_filter", "0")?;
            Ok(())
        })??;
        Ok(ns)
    }

    /// The tests' handle of this namespace.
    pub(crate) fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The name under /var/run/netns.
    pub(crate) fn name(&self) -> &str {
        &self.ns.name
    }

    pub(crate) fn open(&self) -> Result<OwnedFd> {
        let f = File::open(self.ns.path()).with_context(|| format!("cannot open netns {}", self.name()))?;
        Ok(OwnedFd::from(f))
    }

    /// `ip -n NAME ARGS...`; its standard output.
    pub(crate) fn ip(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.ns.ip(args)?.stdout).into_owned())
    }

    /// `ip netns exec NAME sh -c SCRIPT` (its /sys is this namespace's).
    pub(crate) fn sh(&self, script: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.ns.exec_ok(&["sh", "-c", script])?.stdout).into_owned())
    }

    /// Runs `f` on a thread inside this namespace.
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        self.ns.try_run(f)
    }

    /// Starts `cmd` in this namespace (see [`Netns::spawn`]).
    pub(crate) fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        self.ns.spawn(cmd)
    }

    /// Runs `cmd` in this namespace to completion; its output.
    pub(crate) fn output(&self, cmd: &mut Command) -> Result<Output> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Ok(self.spawn(cmd)?.wait_with_output()?)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        self.ns.stop_children(Duration::from_secs(10));
        if let Err(e) = run_cmd("ip", &["netns", "del", self.name()]) {
            eprintln!("forward_bench: cannot delete netns {}: {e:#}", self.name());
        }
    }
}

/// `run_cmd` of the tests' toolkit; its standard output.
pub(crate) fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    Ok(String::from_utf8_lossy(&xlb_tests::run_cmd(program, args)?.stdout).into_owned())
}

pub(crate) fn setns(fd: &OwnedFd) -> Result<()> {
    // SAFETY: plain syscall on a valid fd.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

/// The current thread inside a namespace (and optionally pinned to a CPU)
/// until dropped.
pub(crate) struct InNs {
    pub(crate) orig: OwnedFd,
    pub(crate) mask: Option<libc::cpu_set_t>,
    pub(crate) nice: Option<i32>,
}

impl InNs {
    pub(crate) fn enter(ns: &Ns, cpu: Option<usize>) -> Result<InNs> {
        let orig = OwnedFd::from(File::open("/proc/thread-self/ns/net").context("opening our netns")?);
        let target = ns.open()?;
        let mask = cpu.map(|_| get_affinity());
        setns(&target)?;
        let mut guard = InNs { orig, mask, nice: None };
        if let Some(c) = cpu {
            set_affinity(0, &[c]).with_context(|| format!("pinning the generator to CPU {c}"))?;
            guard.nice = Some(get_nice(0));
            set_nice(0, BENCH_NICE);
        }
        Ok(guard)
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        if let Some(n) = self.nice {
            set_nice(0, n);
        }
        if let Some(mask) = self.mask {
            // SAFETY: restoring the mask read before.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const mask) };
        }
        if let Err(e) = setns(&self.orig) {
            eprintln!("forward_bench: cannot return to our netns: {e:#}");
        }
    }
}

/// Deletes namespaces, pins and temporary files of earlier runs whose
/// process is gone: those of the tests' toolkit (`xlbt<pid>-...`), then our
/// own temporary directory and files (`xlbt<pid>-fwd...`).
pub(crate) fn cleanup_stale() {
    if let Err(e) = xlb_tests::cleanup_stale(xlb_tests::PREFIX) {
        eprintln!("forward_bench: cleaning up earlier runs: {e:#}");
    }
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some((pid, rest)) = name.strip_prefix(xlb_tests::PREFIX).and_then(|r| r.split_once('-')) else {
            continue;
        };
        if rest.starts_with("fwd") && pid.parse::<i32>().is_ok_and(|p| !xlb_tests::pid_alive(p)) {
            let _ = if e.path().is_dir() { std::fs::remove_dir_all(e.path()) } else { std::fs::remove_file(e.path()) };
        }
    }
}

pub(crate) fn udp_frame(x: u8, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&mac_l(x));
    f[6..12].copy_from_slice(&mac_g(x));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (FRAME_LEN - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[20] = 0x40; // DF
    f[22] = 64; // TTL
    f[23] = 17; // UDP
    f[26..30].copy_from_slice(&gen_addr(x).octets());
    f[30..34].copy_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for i in (14..34).step_by(2) {
        sum += u32::from(u16::from_be_bytes([f[i], f[i + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&1024u16.to_be_bytes());
    f[36..38].copy_from_slice(&UDP_PORT.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    // UDP checksum 0 (none), payload zero.
    f
}
