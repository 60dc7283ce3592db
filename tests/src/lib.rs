//! Test fixtures for xlb: a Kubernetes-node-like topology in network
//! namespaces, echo servers and clients with real sockets, and a driver for
//! the `xlb` agent and CLI.
//!
//! Used by the integration tests in `tests/tests/*.rs` and by `cargo xtask
//! demo`. Everything here needs root (network namespaces, XDP, bpffs); the
//! constructors return an error that says so otherwise.
//!
//! ```text
//!   client ns                  node ns                       pod<i> ns
//!   eth0 10.100.0.2/24  <->  c0 10.100.0.1/24
//!        fd00:100::2/64         fd00:100::1/64
//!                            p<i> 10.1.<i>.1/24       <->  eth0 10.1.<i>.2/24
//!                                 fd00:1:<i>::1/64             fd00:1:<i>::2/64
//! ```
//!
//! The client routes everything (the VIP ranges 192.0.2.0/24 and
//! 2001:db8:ffff::/64 included) to the node; pods route everything to the
//! node; the node forwards (IPv4 and IPv6) and owns no VIP.
//!
//! Cleanup: [`Topology`]'s `Drop` stops the processes started through its
//! namespaces and deletes the namespaces; [`ServerHandle`], [`Agent`] and
//! [`PinDir`] clean up after themselves on drop. Leftovers of runs that were
//! killed are removed by [`cleanup_stale`] (which [`Topology::new`] calls).

#![warn(missing_docs)]

mod agent;
pub mod bird;
pub mod cargo;
pub mod datapath_topology;
pub mod host;
pub mod http;
pub mod icmp;
pub mod k8s;
pub mod l2;
pub mod l2cluster;
pub mod netbuild;
mod netns;
pub mod packet;
pub mod previous;
mod servers;
mod topology;
mod traffic;
pub mod xdp_pass;

pub use agent::{read_pipes, run_xlb, xlb_binary, Agent, ConfigFile, PinDir};
pub use netns::Netns;
pub use servers::{
    tcp_echo_server, tcp_session_server, try_tcp_echo_server, try_tcp_session_server, try_udp_echo_server,
    try_udp_server, udp_echo_server, udp_sized_server, ServerHandle,
};
pub use topology::{cleanup_stale, Topology, PREFIX};
pub use traffic::{
    reply_tag, spread_tcp, spread_tcp_replies, spread_udp, spread_udp_ports, spread_udp_ports_replies,
    spread_udp_replies, tcp_probe, tcp_request, udp_probe, udp_request, Probe, TcpSession, UdpFlow, NO_REPLY,
    WRONG_SOURCE,
};

/// Fails with a clear message unless the process runs as root (uid 0).
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        anyhow::bail!(
            "xlb's integration fixtures need root (network namespaces, XDP, bpffs); \
             this process runs as uid {euid}: run it as root, e.g. `sudo -E cargo xtask test`"
        );
    }
    Ok(())
}

/// True when the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command to completion and fails (with its stderr) on a non-zero
/// exit. Used for `ip` and friends (here and by the benches).
pub fn run_cmd(program: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    use anyhow::Context as _;
    let out = std::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).output().with_context(
        || format!("cannot run `{program}`: is it installed? (`ip` comes with iproute2: apt-get install -y iproute2)"),
    )?;
    if !out.status.success() {
        anyhow::bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `true` when a process with this pid exists (any state but reaped).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
