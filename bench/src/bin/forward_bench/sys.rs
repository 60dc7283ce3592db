//! Host helpers: sysctls, CPU affinity and priority, GRO, NAPI kthreads,
//! CPU time.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use anyhow::{Context as _, Result};

// ---------------------------------------------------------------- small helpers

pub(crate) fn progress(text: &str) {
    println!("    {text}");
    let _ = std::io::stdout().flush();
}

pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).with_context(|| format!("cannot set {path} to {value}"))
}

/// Nice value of the measured threads (the generator, the NAPI kthreads,
/// nginx's worker): other work on the machine gets ~1% of their CPU each.
pub(crate) const BENCH_NICE: i32 = -20;

pub(crate) fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("interface {name}"));
    }
    Ok(idx)
}

/// GRO on/off through the legacy ethtool ioctl (on a veth, GRO on enables
/// its NAPI, so XDP_TX/XDP_REDIRECT from the peer lands without an XDP program).
pub(crate) fn set_gro(ifname: &str, on: bool) -> Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_SGRO: u32 = 0x2c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut v = EthtoolValue { cmd: ETHTOOL_SGRO, data: u32::from(on) };
    // SAFETY: zeroed ifreq is valid; the name is NUL-terminated (IFNAMSIZ-1 bytes at most).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut v).cast();
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a live ethtool_value.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("ETHTOOL_SGRO on {ifname}"));
    }
    Ok(())
}

/// PIDs of the NAPI kthreads (`napi/<dev>-<id>`).
pub(crate) fn napi_threads() -> HashSet<i32> {
    let mut out = HashSet::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
                if comm.starts_with("napi/") {
                    out.insert(pid);
                }
            }
        }
    }
    out
}

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Share of all CPUs' time not idle over `dur` (from /proc/stat).
pub(crate) fn cpu_busy(dur: Duration) -> f64 {
    let read = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
        Some((v.iter().take(8).sum(), idle))
    };
    let (Some((t0, i0)), Some((t1, i1))) = (read(), {
        std::thread::sleep(dur);
        read()
    }) else {
        return 0.0;
    };
    if t1 <= t0 {
        return 0.0;
    }
    1.0 - (i1 - i0) as f64 / (t1 - t0) as f64
}
