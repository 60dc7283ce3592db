//! Routing-netlink notifications, low level: a socket subscribed to groups
//! of kernel events (links, addresses, routes, neighbours, rules), a
//! non-blocking read of what is queued, and the kind of each message.
//! [`crate::host::netwatch`] builds the one watcher of a network namespace on it.
use std::io;

use netlink_packet_core::NetlinkBuffer;
pub use netlink_sys::Socket;
use netlink_sys::{protocols::NETLINK_ROUTE, SocketAddr};

/// `RTMGRP_LINK`: links appear, change, go.
pub const GROUP_LINK: u32 = 0x1;
/// `RTMGRP_TC`: qdiscs and tc filters.
pub const GROUP_TC: u32 = 0x8;
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
pub const ALL_GROUPS: u32 = GROUP_LINK
    | GROUP_TC
    | GROUP_NEIGH
    | GROUP_IPV4_IFADDR
    | GROUP_IPV4_ROUTE
    | GROUP_IPV4_RULE
    | GROUP_IPV6_IFADDR
    | GROUP_IPV6_ROUTE;

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
    /// `RTM_NEWQDISC`/`RTM_DELQDISC`.
    Qdisc,
}

impl Kind {
    /// How many kinds there are (for arrays indexed by `kind as usize`).
    pub const COUNT: usize = 6;

    /// The kind of a message of type `nlmsg_type`; `None` for the rest
    /// (`NLMSG_DONE`, errors, types no group above sends).
    pub fn of(nlmsg_type: u16) -> Option<Self> {
        match nlmsg_type {
            libc::RTM_NEWLINK | libc::RTM_DELLINK => Some(Self::Link),
            libc::RTM_NEWADDR | libc::RTM_DELADDR => Some(Self::Address),
            libc::RTM_NEWROUTE | libc::RTM_DELROUTE => Some(Self::Route),
            libc::RTM_NEWNEIGH | libc::RTM_DELNEIGH => Some(Self::Neighbour),
            libc::RTM_NEWRULE | libc::RTM_DELRULE => Some(Self::Rule),
            libc::RTM_NEWQDISC | libc::RTM_DELQDISC => Some(Self::Qdisc),
            _ => None,
        }
    }
}

/// A `NETLINK_ROUTE` socket in the legacy `groups` (bit mask) and, best
/// effort, the numbered groups `extra`.
pub fn subscribe(groups: u32, extra: &[u32]) -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, groups))?;
    for group in extra {
        // Best effort: an older kernel may not have the group.
        let _ = socket.add_membership(*group);
    }
    Ok(socket)
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
pub fn read(socket: &Socket, buf: &mut [u8]) -> io::Result<Read> {
    loop {
        let err = match socket.recv(&mut &mut *buf, libc::MSG_DONTWAIT) {
            Ok(0) => return Ok(Read::Empty),
            Ok(n) => return Ok(Read::Batch(n.min(buf.len()))),
            Err(e) => e,
        };
        match err.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(Read::Empty),
            Some(libc::EINTR) => {}
            Some(libc::ENOBUFS) => return Ok(Read::Overrun),
            _ => return Err(err),
        }
    }
}

/// A dump request (`NLM_F_REQUEST | NLM_F_DUMP`) of type `ty` whose
/// payload is `header` (the family's fixed header, e.g. `rtmsg`).
pub fn dump_request(ty: u16, seq: u32, header: &[u8]) -> Vec<u8> {
    let len = 16 + header.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(header);
    m
}

/// Sends the dump `request` (made by [`dump_request`] with sequence number
/// `seq`) on a new socket and returns the payload of every answer of type
/// `reply` (a 5-second timeout per read).
pub fn dump(request: &[u8], seq: u32, reply: u16) -> io::Result<Vec<Vec<u8>>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    let fd = std::os::fd::AsFd::as_fd(&socket);
    let timeout = nix::sys::time::TimeVal::new(5, 0);
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &timeout).map_err(io::Error::from)?;
    socket.send_to(request, &SocketAddr::new(0, 0), 0)?;
    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..100_000 {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut rest = &buf[..n.min(buf.len())];
        while let Ok(message) = NetlinkBuffer::new_checked(rest) {
            let (ty, len) = (message.message_type(), message.length() as usize);
            if message.sequence_number() == seq {
                match ty {
                    NLMSG_DONE => return Ok(found),
                    NLMSG_ERROR => {
                        let code = message
                            .payload()
                            .get(..4)
                            .map_or(0, |c| i32::from_ne_bytes(c.try_into().unwrap_or([0; 4])));
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    t if t == reply => found.push(message.payload().to_vec()),
                    _ => {}
                }
            }
            rest = rest.get(len.next_multiple_of(4).max(16)..).unwrap_or(&[]);
        }
    }
    Err(io::Error::other("the dump did not end"))
}

/// `NLMSG_DONE`.
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;

/// The `rtattr`s of a buffer: (type without the nested/byte-order bits,
/// value); a truncated tail ends the walk.
pub fn attrs(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let hdr = rest.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let kind = u16::from_ne_bytes([hdr[2], hdr[3]]) & 0x3fff;
        let value = rest.get(4..len)?;
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

/// The type of every netlink message in a datagram, in order (a
/// truncated or malformed tail is ignored).
pub fn message_types(datagram: &[u8]) -> impl Iterator<Item = u16> + '_ {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let message = NetlinkBuffer::new_checked(rest).ok()?;
        let ty = message.message_type();
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        rest = rest.get((message.length() as usize).next_multiple_of(4)..).unwrap_or(&[]);
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
        assert_eq!(
            message_types(&d).collect::<Vec<_>>(),
            [libc::RTM_NEWLINK, libc::RTM_DELROUTE, libc::NLMSG_DONE as u16]
        );
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
        assert_eq!(Kind::of(libc::RTM_NEWQDISC), Some(Kind::Qdisc));
        assert_eq!(Kind::of(libc::NLMSG_ERROR as u16), None);
    }
}
