//! Routing-netlink notifications: a socket subscribed to groups of kernel
//! events (links, addresses, routes, neighbours...) and a blocking wait for
//! the next batch of them. Used to follow interfaces (`follow`) and to
//! invalidate cached next hops (`routegen`).
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// `RTMGRP_LINK`: links appear, change, go.
pub const GROUP_LINK: u32 = 0x1;
/// `RTMGRP_NEIGH`: neighbour entries.
pub const GROUP_NEIGH: u32 = 0x4;
/// `RTMGRP_IPV4_IFADDR`.
pub const GROUP_IPV4_IFADDR: u32 = 0x10;
/// `RTMGRP_IPV4_ROUTE`.
pub const GROUP_IPV4_ROUTE: u32 = 0x40;
/// `RTMGRP_IPV4_RULE`.
pub const GROUP_IPV4_RULE: u32 = 0x80;
/// `RTMGRP_IPV6_IFADDR`.
pub const GROUP_IPV6_IFADDR: u32 = 0x100;
/// `RTMGRP_IPV6_ROUTE`.
pub const GROUP_IPV6_ROUTE: u32 = 0x400;
/// `RTNLGRP_IPV6_RULE` (a group number: it has no legacy bit).
pub const GROUP_NR_IPV6_RULE: u32 = 19;

/// A blocking `NETLINK_ROUTE` socket in the legacy `groups` (bit mask)
/// and, best effort, the numbered groups `extra`.
pub fn subscribe(groups: u32, extra: &[u32]) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_nl is valid; fields set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = groups;
    // SAFETY: addr is a valid sockaddr_nl of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    for group in extra {
        // SAFETY: setsockopt with a valid u32 option value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                std::ptr::from_ref::<u32>(group).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            );
        }
    }
    Ok(fd)
}

/// Blocks until notifications arrive, then reads whatever else is queued.
/// `Ok` also when some were lost (ENOBUFS): the caller rescans anyway. An
/// error means the socket is unusable.
pub fn wait_batch(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<()> {
    loop {
        // SAFETY: recv into a buffer we own, of its size.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOBUFS) => break,
            _ => return Err(err),
        }
    }
    // Whatever the drain meets, a batch arrived: the caller rescans.
    let _ = drain(fd, buf);
    Ok(())
}

/// Reads every notification queued now, without blocking; `Ok(true)` when
/// there was any or some were lost (ENOBUFS: anything may have changed).
pub fn drain(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut any = false;
    loop {
        // SAFETY: recv into a buffer we own, of its size, non-blocking.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n > 0 {
            any = true;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            _ if n == 0 => return Ok(any),
            Some(libc::EAGAIN) => return Ok(any),
            Some(libc::EINTR) => {}
            Some(libc::ENOBUFS) => any = true,
            _ => return Err(err),
        }
    }
}
