//! `--announce bgp`: the VIP routes a BGP daemon on the node (BIRD 2, FRR)
//! exports to its peers, kept in the kernel routing table
//! `--announce-table N` through rtnetlink.
//!
//! The table is the contract between xlb and the daemon: one route per VIP
//! this node should attract, `VIP/32` or `VIP/128`, a unicast route on `lo`,
//! written with xlb's own routing protocol number [`RTPROT_XLB`] (249). Only
//! routes of that protocol are read, added or deleted: routes of any other
//! protocol in the table are never touched. No `ip rule` should use the
//! table, so forwarding on the node is unchanged.
//!
//! [`plan`] (pure) says which routes to add and delete to go from what the
//! table holds to what is wanted; [`RouteTable`] dumps the table, and adds
//! and deletes routes, over a `NETLINK_ROUTE` socket.
use std::{
    collections::BTreeSet,
    io,
    net::IpAddr,
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use ipnet::IpNet;
use netlink_packet_core::{NetlinkBuffer, NlasIterator};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// xlb's routing protocol number (`proto 249` in `ip route`): the routes
/// xlb writes carry it, and xlb reads, replaces and deletes only routes
/// that carry it. Numbers above `RTPROT_STATIC` (4) are free for routing
/// daemons; 249 is listed by no daemon in Linux's `rtnetlink.h` nor in
/// iproute2's `rt_protos`.
pub const RTPROT_XLB: u8 = 249;

/// The default `--announce-table`.
pub const DEFAULT_TABLE: u32 = 4242;

/// Tables `--announce-table` refuses: the kernel's own (`unspec`, and the
/// `default`, `main` and `local` tables, which forwarding uses).
pub const RESERVED_TABLES: [(u32, &str); 4] = [(0, "unspec"), (253, "default"), (254, "main"), (255, "local")];

/// The scope of xlb's routes: universe (global), as a route BIRD's kernel
/// protocol imports with `learn` and exports to BGP like any other.
pub const SCOPE: u8 = libc::RT_SCOPE_UNIVERSE;

/// The BGP announcer's metrics: `xlb_bgp_routes` (VIP routes of ours in
/// the table; absent without `--announce bgp`) and
/// `xlb_bgp_route_changes_total{change}` (`added`, `withdrawn`).
#[derive(Debug)]
pub struct Metrics {
    /// Routes in the table after the last reconcile (-1: none yet).
    pub routes: AtomicI64,
    /// Routes added.
    pub added: AtomicU64,
    /// Routes withdrawn.
    pub withdrawn: AtomicU64,
}

impl Metrics {
    /// Records a reconcile.
    pub fn record(&self, r: &Reconciled) {
        self.routes.store(i64::try_from(r.routes).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.added.fetch_add(r.added.len() as u64, Ordering::Relaxed);
        self.withdrawn.fetch_add(r.deleted.len() as u64, Ordering::Relaxed);
    }
}

/// The process's [`Metrics`].
pub fn metrics() -> &'static Metrics {
    static M: Metrics = Metrics { routes: AtomicI64::new(-1), added: AtomicU64::new(0), withdrawn: AtomicU64::new(0) };
    &M
}

/// The longest a netlink answer is waited for.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// `RTA_TABLE`: the table, for numbers above 255.
const RTA_TABLE: u16 = 15;
/// `RTA_DST`.
const RTA_DST: u16 = 1;
/// `RTA_OIF`.
const RTA_OIF: u16 = 4;
/// `RTA_GATEWAY`.
const RTA_GATEWAY: u16 = 5;
/// `RTA_MULTIPATH`.
const RTA_MULTIPATH: u16 = 9;

/// How a route table operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The netlink socket could not be opened or used.
    #[error("rtnetlink: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused a request.
    #[error("{what} {dst} in table {table}: {err}")]
    Refused {
        /// `adding` or `deleting`.
        what: &'static str,
        /// The route's destination.
        dst: IpNet,
        /// The table.
        table: u32,
        /// The kernel's error.
        err: io::Error,
    },
    /// The kernel's answer could not be read.
    #[error("rtnetlink: malformed answer: {0}")]
    Malformed(String),
    /// No answer in time.
    #[error("rtnetlink: no answer within {0:?}")]
    Timeout(Duration),
}

/// A route of ours ([`RTPROT_XLB`]) found in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Its destination.
    pub dst: IpNet,
    /// Whether it is what xlb writes for a VIP (a unicast host route on
    /// `lo`, no gateway, [`SCOPE`]); one of another shape is replaced.
    pub shaped: bool,
}

/// The host route of `vip`: `VIP/32` or `VIP/128`.
pub fn host_net(vip: IpAddr) -> IpNet {
    IpNet::from(vip)
}

/// Which routes to add and delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes to delete (first: a replaced route is deleted, then added).
    pub delete: Vec<IpNet>,
    /// Routes to add.
    pub add: Vec<IpNet>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }
}

/// The changes that bring the table's routes of ours (`current`) to one
/// host route per VIP of `wanted`: every route of ours that is not a
/// wanted VIP's host route of the right shape goes, every wanted VIP
/// without one comes.
pub fn plan(current: &[Found], wanted: &BTreeSet<IpAddr>) -> Plan {
    let wanted: BTreeSet<IpNet> = wanted.iter().copied().map(host_net).collect();
    let keep: BTreeSet<IpNet> = current.iter().filter(|f| f.shaped && wanted.contains(&f.dst)).map(|f| f.dst).collect();
    let delete: BTreeSet<IpNet> = current.iter().filter(|f| !keep.contains(&f.dst)).map(|f| f.dst).collect();
    Plan { delete: delete.into_iter().collect(), add: wanted.difference(&keep).copied().collect() }
}

/// What a [`RouteTable::reconcile`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Routes added.
    pub added: Vec<IpNet>,
    /// Routes deleted.
    pub deleted: Vec<IpNet>,
    /// Routes of ours now in the table.
    pub routes: usize,
}

/// The routing table `--announce-table`, through rtnetlink.
pub struct RouteTable {
    socket: Socket,
    table: u32,
    lo: u32,
    seq: u32,
}

impl RouteTable {
    /// Opens a `NETLINK_ROUTE` socket for `table` (in this thread's network
    /// namespace).
    pub fn open(table: u32) -> Result<Self, RouteError> {
        let lo = crate::host::iface::ifindex("lo").map_err(|e| io::Error::other(format!("interface lo: {e}")))?;
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        let timeout = nix::sys::time::TimeVal::new(
            ANSWER_TIMEOUT.as_secs().try_into().unwrap_or(2),
            ANSWER_TIMEOUT.subsec_micros().into(),
        );
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(io::Error::from)?;
        // Linux 4.20+: dumps filtered by the kernel (table and protocol),
        // so a host with many routes elsewhere is not read whole. Older
        // kernels dump everything; the routes are filtered here as well.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Self { socket, table, lo, seq: 0 })
    }

    /// The table's number.
    pub fn table(&self) -> u32 {
        self.table
    }

    /// The routes of ours in the table, both families.
    pub fn dump(&mut self) -> Result<Vec<Found>, RouteError> {
        let mut found = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            let seq = self.next_seq();
            let req = dump_request(seq, family as u8, self.table);
            self.send(&req)?;
            let mut buf = vec![0u8; 64 * 1024];
            'recv: loop {
                let n = self.recv(&mut buf)?;
                for m in messages(&buf[..n]) {
                    let m = m?;
                    if m.seq != seq {
                        continue;
                    }
                    match m.ty {
                        t if t == libc::NLMSG_DONE as u16 => {
                            // A dump that failed ends with its error here.
                            let code = error_code(m.payload).unwrap_or(0);
                            if code < 0 && code != -libc::ENOENT {
                                return Err(RouteError::Io(io::Error::from_raw_os_error(-code)));
                            }
                            break 'recv;
                        }
                        t if t == libc::NLMSG_ERROR as u16 => {
                            let code = error_code(m.payload)?;
                            // ENOENT: the table does not exist (no route in it).
                            if code != 0 && code != -libc::ENOENT {
                                return Err(RouteError::Io(io::Error::from_raw_os_error(-code)));
                            }
                            break 'recv;
                        }
                        libc::RTM_NEWROUTE => {
                            if let Some(f) = parse_route(m.payload, self.table, self.lo)? {
                                found.push(f);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(found)
    }

    /// Adds the host route of ours to `dst` (`EEXIST`, a route of another
    /// protocol to the same destination, is an error: it is left alone).
    pub fn add(&mut self, dst: IpNet) -> Result<(), RouteError> {
        let seq = self.next_seq();
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        let req = route_request(libc::RTM_NEWROUTE, flags as u16, seq, self.table, dst, Some(self.lo));
        self.request(&req, seq).map_err(|err| refused("adding", dst, self.table, err))
    }

    /// Deletes the route of ours to `dst` (gone already: fine).
    pub fn delete(&mut self, dst: IpNet) -> Result<(), RouteError> {
        let seq = self.next_seq();
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK;
        let req = route_request(libc::RTM_DELROUTE, flags as u16, seq, self.table, dst, None);
        match self.request(&req, seq) {
            Err(RouteError::Io(e)) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(|err| refused("deleting", dst, self.table, err)),
        }
    }

    /// Brings the table's routes of ours to one per VIP of `wanted`: dumps
    /// the table and deletes, then adds, what [`plan`] says. Stops at the
    /// first failure (the next call starts over from a new dump).
    pub fn reconcile(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<Reconciled, RouteError> {
        let current = self.dump()?;
        let p = plan(&current, wanted);
        let mut done = Reconciled { routes: current.len(), ..Reconciled::default() };
        for dst in p.delete {
            self.delete(dst)?;
            done.routes -= 1;
            done.deleted.push(dst);
        }
        for dst in p.add {
            self.add(dst)?;
            done.routes += 1;
            done.added.push(dst);
        }
        Ok(done)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, req: &[u8]) -> Result<(), RouteError> {
        self.socket.send_to(req, &SocketAddr::new(0, 0), 0)?;
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> Result<usize, RouteError> {
        loop {
            match self.socket.recv(&mut &mut *buf, 0) {
                Ok(n) => return Ok(n.min(buf.len())),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN)) => {
                    return Err(RouteError::Timeout(ANSWER_TIMEOUT));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a request with `NLM_F_ACK` and waits for its answer.
    fn request(&self, req: &[u8], seq: u32) -> Result<(), RouteError> {
        self.send(req)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf)?;
            for m in messages(&buf[..n]) {
                let m = m?;
                if m.seq == seq && m.ty == libc::NLMSG_ERROR as u16 {
                    return match error_code(m.payload)? {
                        0 => Ok(()),
                        code => Err(RouteError::Io(io::Error::from_raw_os_error(-code))),
                    };
                }
            }
        }
    }
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("fd", &self.socket.as_raw_fd())
            .field("table", &self.table)
            .field("lo", &self.lo)
            .finish_non_exhaustive()
    }
}

fn refused(what: &'static str, dst: IpNet, table: u32, e: RouteError) -> RouteError {
    match e {
        RouteError::Io(err) => RouteError::Refused { what, dst, table, err },
        e => e,
    }
}

/// One netlink message of a datagram.
struct Message<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of a datagram.
fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, RouteError>> + '_ {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let m = match NetlinkBuffer::new_checked(rest) {
            Ok(m) => m,
            Err(e) => {
                rest = &[];
                return Some(Err(RouteError::Malformed(e.to_string())));
            }
        };
        let len = m.length() as usize;
        let out = Message { ty: m.message_type(), seq: m.sequence_number(), payload: &rest[16..len] };
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some(Ok(out))
    })
}

/// The error code of an `NLMSG_ERROR` payload (0: an acknowledgement).
fn error_code(payload: &[u8]) -> Result<i32, RouteError> {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| RouteError::Malformed("short NLMSG_ERROR".into()))
}

/// `nlmsghdr` followed by `rtmsg`.
fn header(ty: u16, flags: u16, seq: u32, rtmsg: [u8; 12]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&0u32.to_ne_bytes()); // length, set at the end
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    m.extend_from_slice(&rtmsg);
    m
}

fn attr(m: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    m.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(value);
    m.resize(m.len().next_multiple_of(4), 0);
}

fn finish(mut m: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(m.len()).unwrap_or(u32::MAX);
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

fn family_of(dst: &IpNet) -> u8 {
    match dst {
        IpNet::V4(_) => libc::AF_INET as u8,
        IpNet::V6(_) => libc::AF_INET6 as u8,
    }
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `RTM_GETROUTE` dump of one family, asking (strict checking) for the
/// routes of ours in `table` only.
fn dump_request(seq: u32, family: u8, table: u32) -> Vec<u8> {
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let short_table = u8::try_from(table).unwrap_or(libc::RT_TABLE_UNSPEC);
    let rtmsg = [family, 0, 0, 0, short_table, RTPROT_XLB, 0, 0, 0, 0, 0, 0];
    let mut m = header(libc::RTM_GETROUTE, flags, seq, rtmsg);
    attr(&mut m, RTA_TABLE, &table.to_ne_bytes());
    finish(m)
}

/// `RTM_NEWROUTE` (with `oif`: a unicast route of ours on it, [`SCOPE`])
/// or `RTM_DELROUTE` (any scope and type, protocol ours) for `dst` in
/// `table`.
fn route_request(ty: u16, flags: u16, seq: u32, table: u32, dst: IpNet, oif: Option<u32>) -> Vec<u8> {
    let add = ty == libc::RTM_NEWROUTE;
    let (scope, kind) = if add { (SCOPE, libc::RTN_UNICAST) } else { (libc::RT_SCOPE_NOWHERE, libc::RTN_UNSPEC) };
    let short_table = u8::try_from(table).unwrap_or(libc::RT_TABLE_UNSPEC);
    let rtmsg = [family_of(&dst), dst.prefix_len(), 0, 0, short_table, RTPROT_XLB, scope, kind, 0, 0, 0, 0];
    let mut m = header(ty, flags, seq, rtmsg);
    attr(&mut m, RTA_TABLE, &table.to_ne_bytes());
    attr(&mut m, RTA_DST, &addr_bytes(dst.addr()));
    if let Some(oif) = oif {
        attr(&mut m, RTA_OIF, &oif.to_ne_bytes());
    }
    finish(m)
}

/// The route of an `RTM_NEWROUTE` payload, if it is one of ours in `table`.
fn parse_route(payload: &[u8], table: u32, lo: u32) -> Result<Option<Found>, RouteError> {
    let rtmsg: &[u8; 12] =
        payload.get(..12).and_then(|b| b.try_into().ok()).ok_or_else(|| RouteError::Malformed("short rtmsg".into()))?;
    let [family, dst_len, _src_len, _tos, short_table, protocol, scope, kind, ..] = *rtmsg;
    if protocol != RTPROT_XLB {
        return Ok(None);
    }
    let (mut in_table, mut dst, mut oif, mut gateway) = (u32::from(short_table), None, None, false);
    for nla in NlasIterator::new(&payload[12..]) {
        let nla = nla.map_err(|e| RouteError::Malformed(e.to_string()))?;
        let v = nla.value();
        match nla.kind() {
            RTA_TABLE if v.len() == 4 => in_table = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
            RTA_DST => dst = addr_from(family, v),
            RTA_OIF if v.len() == 4 => oif = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])),
            RTA_GATEWAY | RTA_MULTIPATH => gateway = true,
            _ => {}
        }
    }
    if in_table != table {
        return Ok(None);
    }
    let dst = match dst {
        Some(a) => a,
        None if family == libc::AF_INET as u8 => IpAddr::from([0u8; 4]),
        None if family == libc::AF_INET6 as u8 => IpAddr::from([0u8; 16]),
        None => return Ok(None),
    };
    let Ok(dst) = IpNet::new(dst, dst_len) else { return Ok(None) };
    let shaped = dst.prefix_len() == dst.max_prefix_len()
        && kind == libc::RTN_UNICAST
        && scope == SCOPE
        && oif == Some(lo)
        && !gateway;
    Ok(Some(Found { dst, shaped }))
}

fn addr_from(family: u8, v: &[u8]) -> Option<IpAddr> {
    if family == libc::AF_INET as u8 {
        <[u8; 4]>::try_from(v).ok().map(IpAddr::from)
    } else if family == libc::AF_INET6 as u8 {
        <[u8; 16]>::try_from(v).ok().map(IpAddr::from)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ips(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn found(dst: &str, shaped: bool) -> Found {
        Found { dst: net(dst), shaped }
    }

    #[test]
    fn the_plan_adds_the_missing_and_deletes_the_stale_and_the_misshapen() {
        let current = [
            found("192.0.2.10/32", true),     // wanted, kept
            found("192.0.2.11/32", true),     // no longer wanted
            found("2001:db8::10/128", false), // wanted but misshapen: replaced
            found("198.51.100.0/24", true),   // not a host route of a VIP
        ];
        let p = plan(&current, &ips(&["192.0.2.10", "192.0.2.12", "2001:db8::10"]));
        assert_eq!(p.delete, [net("192.0.2.11/32"), net("198.51.100.0/24"), net("2001:db8::10/128")]);
        assert_eq!(p.add, [net("192.0.2.12/32"), net("2001:db8::10/128")]);
        // Reached: nothing to do.
        let now = [found("192.0.2.10/32", true), found("192.0.2.12/32", true), found("2001:db8::10/128", true)];
        assert!(plan(&now, &ips(&["192.0.2.10", "192.0.2.12", "2001:db8::10"])).is_empty());
        // Nothing wanted: everything of ours goes.
        assert_eq!(plan(&now, &BTreeSet::new()).delete.len(), 3);
        assert!(plan(&[], &BTreeSet::new()).is_empty());
    }

    #[test]
    fn requests_carry_our_protocol_the_table_and_the_host_route() {
        let m = route_request(libc::RTM_NEWROUTE, 0x605, 7, 4242, net("192.0.2.10/32"), Some(1));
        let msgs: Vec<_> = messages(&m).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].ty, msgs[0].seq), (libc::RTM_NEWROUTE, 7));
        // A dump answer is the same layout: it parses back as ours, shaped.
        assert_eq!(parse_route(msgs[0].payload, 4242, 1).unwrap(), Some(found("192.0.2.10/32", true)));
        assert_eq!(parse_route(msgs[0].payload, 4243, 1).unwrap(), None, "another table");
        assert_eq!(parse_route(msgs[0].payload, 4242, 2).unwrap(), Some(found("192.0.2.10/32", false)), "not on lo");
        let mut other = msgs[0].payload.to_vec();
        other[5] = libc::RTPROT_STATIC;
        assert_eq!(parse_route(&other, 4242, 1).unwrap(), None, "another protocol");
        let d = route_request(libc::RTM_DELROUTE, 5, 8, 100, net("2001:db8::10/128"), None);
        let msgs: Vec<_> = messages(&d).collect::<Result<_, _>>().unwrap();
        let p = msgs[0].payload;
        assert_eq!((p[0], p[1], p[4], p[5]), (libc::AF_INET6 as u8, 128, 100, RTPROT_XLB));
        assert_eq!(p[6], libc::RT_SCOPE_NOWHERE);
    }

    #[test]
    fn dumps_ask_for_our_protocol_in_our_table_only() {
        // A table above 255: rtm_table 0 (RT_TABLE_UNSPEC), the number in RTA_TABLE.
        let d = dump_request(3, libc::AF_INET6 as u8, 4242);
        let msgs: Vec<_> = messages(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!((msgs[0].ty, msgs[0].seq), (libc::RTM_GETROUTE, 3));
        let p = msgs[0].payload;
        assert_eq!(&p[..8], &[libc::AF_INET6 as u8, 0, 0, 0, 0, RTPROT_XLB, 0, 0]);
        let attrs: Vec<(u16, Vec<u8>)> = NlasIterator::new(&p[12..])
            .map(|a| a.map(|a| (a.kind(), a.value().to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(attrs, [(RTA_TABLE, 4242u32.to_ne_bytes().to_vec())]);
        let d = dump_request(4, libc::AF_INET as u8, 100);
        assert_eq!(messages(&d).next().unwrap().unwrap().payload[4], 100);
    }

    #[test]
    fn answers_end_with_their_error_code() {
        let mut ack = header(libc::NLMSG_ERROR as u16, 0, 9, [0; 12]);
        ack.truncate(16);
        ack.extend_from_slice(&(-libc::EEXIST).to_ne_bytes());
        let ack = finish(ack);
        let m = messages(&ack).next().unwrap().unwrap();
        assert_eq!((m.ty, m.seq), (libc::NLMSG_ERROR as u16, 9));
        assert_eq!(error_code(m.payload).unwrap(), -libc::EEXIST);
        assert!(error_code(&[0, 0]).is_err());
    }
}
