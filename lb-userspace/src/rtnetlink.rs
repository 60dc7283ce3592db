//! Routing-netlink notifications, low level: a socket subscribed to groups
//! of kernel events (links, addresses, routes, neighbours, rules), a
//! non-blocking read of what is queued, and the kind of each message.
//! [`crate::netwatch`] builds the one watcher of a network namespace on it.
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

/// Every group above: what the watcher of a namespace listens to.
pub const ALL_GROUPS: u32 =
    GROUP_LINK | GROUP_NEIGH | GROUP_IPV4_IFADDR | GROUP_IPV4_ROUTE | GROUP_IPV4_RULE | GROUP_IPV6_IFADDR | GROUP_IPV6_ROUTE;

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `RTM_NEWLINK`/`RTM_DELLINK`.
    Link,
    /// `RTM_NEWADDR`/`RTM_DELADDR` (IPv4 and IPv6).
    Address,
    /// `RTM_NEWROUTE`/`RTM_DELROUTE` (IPv4 and IPv6).
    Route,
    /// `RTM_NEWNEIGH`/`RTM_DELNEIGH`.
    Neighbour,
    /// `RTM_NEWRULE`/`RTM_DELRULE` (IPv4 and IPv6).
    Rule,
}

impl Kind {
    /// How many kinds there are (for arrays indexed by `kind as usize`).
    pub const COUNT: usize = 5;

    /// The kind of a message of type `nlmsg_type`; `None` for the rest
    /// (`NLMSG_DONE`, errors, types no group above sends).
    pub fn of(nlmsg_type: u16) -> Option<Self> {
        match nlmsg_type {
            libc::RTM_NEWLINK | libc::RTM_DELLINK => Some(Self::Link),
            libc::RTM_NEWADDR | libc::RTM_DELADDR => Some(Self::Address),
            libc::RTM_NEWROUTE | libc::RTM_DELROUTE => Some(Self::Route),
            libc::RTM_NEWNEIGH | libc::RTM_DELNEIGH => Some(Self::Neighbour),
            libc::RTM_NEWRULE | libc::RTM_DELRULE => Some(Self::Rule),
            _ => None,
        }
    }
}

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
            (&addr as *const libc::sockaddr_nl).cast(),
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
                (group as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            );
        }
    }
    Ok(fd)
}

/// What one non-blocking read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A datagram of this many bytes, at the start of the buffer.
    Batch(usize),
    /// Notifications were lost (ENOBUFS: the socket's buffer overflowed);
    /// anything may have changed.
    Overrun,
    /// Nothing queued.
    Empty,
}

/// Reads the next queued datagram without blocking.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Read> {
    loop {
        // SAFETY: recv into a buffer we own, of its size, non-blocking.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n > 0 {
            return Ok(Read::Batch(n as usize));
        }
        if n == 0 {
            return Ok(Read::Empty);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(Read::Empty),
            Some(libc::EINTR) => continue,
            Some(libc::ENOBUFS) => return Ok(Read::Overrun),
            _ => return Err(err),
        }
    }
}

/// The type of every netlink message in a datagram, in order (a
/// truncated or malformed tail is ignored).
pub fn message_types(datagram: &[u8]) -> impl Iterator<Item = u16> + '_ {
    const HEADER: usize = std::mem::size_of::<libc::nlmsghdr>();
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.len() < HEADER {
            return None;
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        if len < HEADER || len > rest.len() {
            return None;
        }
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some(ty)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, payload: usize) -> Vec<u8> {
        let len = 16 + payload;
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.resize(len.next_multiple_of(4), 0xaa);
        m
    }

    #[test]
    fn message_types_walk_aligned_messages_and_stop_at_a_bad_tail() {
        let mut d = message(libc::RTM_NEWLINK, 3);
        d.extend(message(libc::RTM_DELROUTE, 8));
        d.extend(message(libc::NLMSG_DONE as u16, 0));
        assert_eq!(message_types(&d).collect::<Vec<_>>(), [libc::RTM_NEWLINK, libc::RTM_DELROUTE, libc::NLMSG_DONE as u16]);
        // A length past the end: nothing more.
        let mut bad = message(libc::RTM_NEWADDR, 0);
        bad.extend_from_slice(&200u32.to_ne_bytes());
        bad.extend_from_slice(&libc::RTM_NEWRULE.to_ne_bytes());
        bad.extend_from_slice(&[0; 10]);
        assert_eq!(message_types(&bad).collect::<Vec<_>>(), [libc::RTM_NEWADDR]);
    }

    #[test]
    fn kinds_of_the_subscribed_messages() {
        assert_eq!(Kind::of(libc::RTM_DELLINK), Some(Kind::Link));
        assert_eq!(Kind::of(libc::RTM_NEWADDR), Some(Kind::Address));
        assert_eq!(Kind::of(libc::RTM_NEWROUTE), Some(Kind::Route));
        assert_eq!(Kind::of(libc::RTM_NEWNEIGH), Some(Kind::Neighbour));
        assert_eq!(Kind::of(libc::RTM_DELRULE), Some(Kind::Rule));
        assert_eq!(Kind::of(libc::NLMSG_ERROR as u16), None);
    }
}
