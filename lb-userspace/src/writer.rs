//! The map writer: the only writer of the configuration maps. It diffs a
//! desired state against what the maps hold and writes only the difference,
//! in an order that never lets a packet see a half-built service: backends
//! first, then the lookup table (into the region the service does not use),
//! then the service value that switches to it; removals in reverse.
//!
//! # Lookup-table regions
//!
//! All services' Maglev tables live in one flat array, `XLB_TABLE` (Katran's
//! layout too), mapped into this process ([`crate::maps::Table`]) so that
//! reading, comparing and writing entries costs no system call. A service
//! whose table has `M` slots owns a [`Pair`] of adjacent regions of `M`
//! entries: A = `[base, base+M)` and B = `[base+M, base+2M)`. Its service
//! value's `table_offset`/`table_size` name the live one. A new table is
//! written into the other region, only the entries that differ from what
//! that region already holds, and then the service value is switched to it:
//! one map update, so a packet sees the old table or the new one, never a
//! half-written one.
//!
//! Pairs are carved out of the array by a first-fit [`RegionAllocator`] in
//! units of two entries starting at offset 0, so every `base` is even; `M` is
//! an odd prime, so the parity of the live offset tells which half is live:
//! even → A (`base = table_offset`), odd → B (`base = table_offset − M`).
//! The service values alone thus record every pair, and
//! [`MapWriter::restore`] rebuilds the allocator from them (and checks that
//! each live table holds only that service's backends). A service without a
//! usable backend has `table_size` 0 and no pair. A pair given up (service
//! removed, table size changed, no usable backend left) is reused only after
//! [`GRACE`], so a packet that read the old service value just before the
//! switch never reads another service's table.
//!
//! # Source ranges and session affinity
//!
//! A service's `source_ranges` are entries of the `XLB_RANGES` LPM trie
//! keyed by (service id, prefix), and the `SVC_F_RANGES` flag in its value
//! makes the data path look them up. They are diffed like the rest: new
//! prefixes are added before the service value (which sets the flag), and
//! prefixes that went are deleted after it (which, when none is left,
//! clears the flag first); so a change never shuts out a client allowed
//! both before and after it. The data path writes `XLB_AFFINITY`; the
//! writer deletes a service's entries when it removes the service or turns
//! its affinity off (entries are also validated by backend generation, so
//! a stale one never steers to a foreign backend).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::atomic::{fence, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{lpm_trie::Key, MapError};
use lb_common::{
    range_prefix_len, AffinityKey, Backend, Counter, RangeKey, Service, ServiceKey, ServiceName, ServiceSlot, AFFINITY_ENTRIES,
    BE_F_ACTIVE, BE_F_UNROUTABLE, DEFAULT_TCP_TIMEOUT, DEFAULT_UDP_TIMEOUT, MAX_BACKENDS, MAX_SERVICES, NAME_LEN, RANGE_ENTRIES,
    SVC_F_IPV6, SVC_F_RANGES, SVC_F_SNAT,
    prefilter::{prefilter_bit_of, PREFILTER_BACKENDS, PREFILTER_ENTRIES, PREFILTER_READY, PREFILTER_VIPS},
};
use tracing::{debug, info, warn};

use crate::{
    maglev,
    maps::Maps,
    model::{DesiredState, Protocol, ServiceSpec, SourceMode},
};

/// A failure to program the maps.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading the CPU count: {0}")]
    Cpus(std::io::Error),
    #[error("too many services: the data path holds at most {MAX_SERVICES}")]
    TooManyServices,
    #[error("too many backends: the data path holds at most {MAX_BACKENDS} over all services")]
    TooManyBackends,
    #[error(
        "service {service}: the lookup-table array is full: its two tables of {size} entries need {need} \
         contiguous entries, but only {free} of {total} are free (largest free piece: {largest}); \
         lower maglev_table_size (of this or other services) or raise the agent's --table-entries"
    )]
    TableFull { service: String, size: u32, need: u64, free: u64, largest: u32, total: u32 },
    #[error(
        "service {service}: too many source ranges: its {adding} new prefixes would make {total} over all services, \
         and the data path holds at most {RANGE_ENTRIES}; use fewer, wider source_ranges"
    )]
    TooManyRanges { service: String, adding: usize, total: usize },
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> WriteError {
    move |source| WriteError::Map { map, source }
}

/// Converts an address to the 16-byte form of the maps.
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => lb_common::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Converts back from the 16-byte form.
pub fn ip_from16(a: [u8; 16]) -> IpAddr {
    if lb_common::is_v4_mapped(&a) {
        IpAddr::V4([a[12], a[13], a[14], a[15]].into())
    } else {
        IpAddr::V6(a.into())
    }
}

/// The `snat_addr` of an unroutable backend: the errno of the failed route
/// lookup (see [`lb_common::BE_F_UNROUTABLE`]).
fn unroutable_snat(err: &std::io::Error) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&err.raw_os_error().unwrap_or(0).to_ne_bytes());
    a
}

/// Why a backend value flagged [`BE_F_UNROUTABLE`] is not usable, for the
/// CLI; `None` for any other backend.
pub fn unroutable_reason(b: &Backend) -> Option<String> {
    if b.flags & BE_F_UNROUTABLE == 0 || b.flags & BE_F_ACTIVE != 0 {
        return None;
    }
    let errno = i32::from_ne_bytes([b.snat_addr[0], b.snat_addr[1], b.snat_addr[2], b.snat_addr[3]]);
    let why = if errno == 0 { "route lookup failed".to_string() } else { std::io::Error::from_raw_os_error(errno).to_string() };
    Some(format!(
        "no route to {}: {why}; without a SNAT source address it takes no new flows until a route appears \
         (add one, or set snat_address)",
        ip_from16(b.addr)
    ))
}

/// A service's prefix in `XLB_RANGES` without the service id: (LPM prefix
/// length, address), see [`lb_common::range_prefix_len`].
pub type RangeEntry = (u32, [u8; 16]);

/// The `XLB_RANGES` entries a service's `source_ranges` need: those of the
/// VIP's family (an IPv4 service only ever sees IPv4 clients, and the other
/// way round), host bits cleared.
pub fn range_entries(spec: &ServiceSpec) -> BTreeSet<RangeEntry> {
    spec.source_ranges
        .iter()
        .filter(|n| n.addr().is_ipv4() == spec.vip.is_ipv4())
        .map(|n| {
            let n = n.trunc();
            (range_prefix_len(n.addr().is_ipv4(), n.prefix_len()), addr16(n.network()))
        })
        .collect()
}

/// Converts an `XLB_RANGES` entry back to the prefix it holds.
pub fn range_net((plen, addr): RangeEntry) -> Option<ipnet::IpNet> {
    let ip = ip_from16(addr);
    let len = plen.checked_sub(range_prefix_len(ip.is_ipv4(), 0))?;
    ipnet::IpNet::new(ip, u8::try_from(len).ok()?).ok()
}

/// The `XLB_RANGES` key of a service's entry.
pub fn range_key(service_id: u32, (plen, addr): RangeEntry) -> Key<RangeKey> {
    Key::new(plen, RangeKey { service: service_id.to_be_bytes(), addr })
}

/// The map key of a service.
pub fn service_key(vip: IpAddr, port: u16, protocol: Protocol) -> ServiceKey {
    ServiceKey { addr: addr16(vip), port: port.to_be(), proto: protocol.number(), _pad: 0 }
}

/// Regions given up are reused only after this long: far longer than any
/// packet takes between reading a service value and its table entry.
pub const GRACE: Duration = Duration::from_millis(20);

/// A service's two adjacent table regions of `size` entries each, starting
/// at `base` (even). See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    pub base: u32,
    pub size: u32,
}

impl Pair {
    /// The pair whose live region starts at `offset` and has `size`
    /// entries, by the layout's parity rule; `None` when no pair can have
    /// such a live region (an even or tiny size, or B before the start).
    pub fn of_live(offset: u32, size: u32) -> Option<Pair> {
        if size < 3 || size.is_multiple_of(2) {
            return None;
        }
        let base = if offset.is_multiple_of(2) { offset } else { offset.checked_sub(size)? };
        Some(Pair { base, size })
    }

    /// Entries of both regions.
    pub fn entries(&self) -> u64 {
        2 * self.size as u64
    }

    /// One past the last entry of region B.
    pub fn end(&self) -> u64 {
        self.base as u64 + self.entries()
    }

    /// The region that is not `live`.
    pub fn twin(&self, live: u32) -> u32 {
        if live == self.base {
            self.base + self.size
        } else {
            self.base
        }
    }
}

/// First-fit allocator of ranges of the table array, in units of two
/// entries (so every range starts at an even offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionAllocator {
    len: u32,
    /// Free ranges: start → length, disjoint and never adjacent (merged).
    free: BTreeMap<u32, u32>,
}

impl RegionAllocator {
    /// An allocator over `len` entries, all free (an odd last entry is never used).
    pub fn new(len: u32) -> Self {
        let usable = len & !1;
        let mut free = BTreeMap::new();
        if usable > 0 {
            free.insert(0, usable);
        }
        Self { len, free }
    }

    fn units(n: u64) -> Option<u32> {
        u32::try_from(n.div_ceil(2) * 2).ok().filter(|n| *n > 0)
    }

    /// Entries of the array.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the array has no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the first free range of `n` entries (rounded up to even);
    /// returns its start.
    pub fn alloc(&mut self, n: u64) -> Option<u32> {
        let n = Self::units(n)?;
        let (&start, &len) = self.free.iter().find(|(_, l)| **l >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Some(start)
    }

    /// Takes the range `[start, start + n)` (n rounded up to even), when it
    /// is entirely free and `start` is even.
    pub fn reserve(&mut self, start: u32, n: u64) -> bool {
        let Some(n) = Self::units(n) else { return false };
        if !start.is_multiple_of(2) {
            return false;
        }
        let Some((&fs, &fl)) = self.free.range(..=start).next_back() else { return false };
        let (end, free_end) = (start as u64 + n as u64, fs as u64 + fl as u64);
        if end > free_end {
            return false;
        }
        self.free.remove(&fs);
        if start > fs {
            self.free.insert(fs, start - fs);
        }
        if free_end > end {
            self.free.insert(end as u32, (free_end - end) as u32);
        }
        true
    }

    /// Gives back `[start, start + n)` (n rounded up to even), which must
    /// have been allocated or reserved.
    pub fn free(&mut self, start: u32, n: u64) {
        let Some(n) = Self::units(n) else { return };
        let (mut start, mut len) = (start, n);
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            debug_assert!(ps as u64 + pl as u64 <= start as u64, "freeing a free range");
            if ps as u64 + pl as u64 == start as u64 {
                self.free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        let end = start as u64 + len as u64;
        if let Some((&ns, &nl)) = self.free.range(start..).next() {
            debug_assert!(ns as u64 >= end, "freeing a free range");
            if ns as u64 == end {
                self.free.remove(&ns);
                len += nl;
            }
        }
        self.free.insert(start, len);
    }

    /// Free entries in total.
    pub fn free_entries(&self) -> u64 {
        self.free.values().map(|l| *l as u64).sum()
    }

    /// The largest free range.
    pub fn largest_free(&self) -> u32 {
        self.free.values().copied().max().unwrap_or(0)
    }
}

/// Rebuilds the allocator of an array of `len` entries from the live
/// `(table_offset, table_size)` of each service, in the given order (the
/// first claimant of an entry wins). Returns, per service, its pair (`None`
/// for `table_size` 0, and for a live region that no valid pair can hold:
/// outside the array or overlapping an earlier one).
pub fn restore_regions(len: u32, live: &[(u32, u32)]) -> (RegionAllocator, Vec<Option<Pair>>) {
    let mut regions = RegionAllocator::new(len);
    let pairs = live
        .iter()
        .map(|&(offset, size)| {
            if size == 0 {
                return None;
            }
            Pair::of_live(offset, size).filter(|p| p.end() <= len as u64 && regions.reserve(p.base, p.entries()))
        })
        .collect();
    (regions, pairs)
}

/// The source address the kernel would pick for the route to each backend
/// (what `source: snat` without `snat_address` uses), cached until the
/// routing may have changed: a netlink socket subscribed to link, address,
/// route and rule events tells, and [`Routes::refresh`] (at the start of
/// every `apply`) then drops the cache and starts a new epoch, so services
/// resolved in an older epoch are resolved again. Without that socket
/// nothing is cached and every `apply` resolves every backend again.
struct Routes {
    watch: Option<std::os::fd::OwnedFd>,
    epoch: u64,
    cache: HashMap<IpAddr, IpAddr>,
    /// UDP sockets (IPv4, IPv6) connected to each destination in turn to
    /// learn the source address, then disconnected: three system calls a
    /// backend instead of five with a new socket each time.
    probes: [Option<std::net::UdpSocket>; 2],
}

impl Routes {
    fn new() -> Self {
        use crate::rtnetlink::*;
        let groups = GROUP_LINK | GROUP_IPV4_IFADDR | GROUP_IPV4_ROUTE | GROUP_IPV4_RULE | GROUP_IPV6_IFADDR | GROUP_IPV6_ROUTE;
        let watch = subscribe(groups, &[GROUP_NR_IPV6_RULE])
            .map_err(|e| warn!(error = %e, "not watching routing changes (netlink); every reload resolves every backend's route"))
            .ok();
        Self { watch, epoch: 1, cache: HashMap::new(), probes: [None, None] }
    }

    /// Reads every pending notification; true when there was any (or the
    /// socket overflowed, or there is no socket).
    fn changed(&mut self) -> bool {
        let Some(fd) = &self.watch else { return true };
        let mut buf = [0u8; 8192];
        crate::rtnetlink::drain(fd, &mut buf).unwrap_or(true)
    }

    /// Starts a new epoch (and forgets every answer) when the routing may
    /// have changed since the last call.
    fn refresh(&mut self) {
        if self.changed() {
            self.epoch += 1;
            self.cache.clear();
        }
    }

    /// The source address for the route to `dst`.
    fn source(&mut self, dst: IpAddr) -> std::io::Result<IpAddr> {
        if let Some(src) = self.cache.get(&dst) {
            return Ok(*src);
        }
        let src = self.resolve(dst)?;
        if self.watch.is_some() {
            self.cache.insert(dst, src);
        }
        Ok(src)
    }

    /// What [`crate::iface::route_source`] answers, on a reused socket.
    fn resolve(&mut self, dst: IpAddr) -> std::io::Result<IpAddr> {
        use std::os::fd::AsRawFd as _;
        let i = dst.is_ipv6() as usize;
        let sock = match &mut self.probes[i] {
            Some(s) => s,
            slot => {
                let any: SocketAddr = if dst.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
                slot.insert(std::net::UdpSocket::bind(any)?)
            }
        };
        sock.connect((dst, 9))?;
        let src = sock.local_addr().map(|a| a.ip());
        // Disconnect (AF_UNSPEC): the socket, bound to the wildcard
        // address, forgets the source address the connect chose.
        // SAFETY: a zeroed sockaddr with family AF_UNSPEC, of its size.
        let rc = unsafe {
            let mut unspec: libc::sockaddr = std::mem::zeroed();
            unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
            libc::connect(sock.as_raw_fd(), &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t)
        };
        if rc != 0 {
            // Start over with a new socket next time.
            self.probes[i] = None;
        }
        src
    }
}

/// Wakes the agent's loop when the routing may have changed, for
/// [`MapWriter::retry_unroutable`]. Needs a Tokio runtime.
pub struct RouteChanges {
    /// The writer's notification socket (a second descriptor of it): the
    /// writer drains it, this only waits for it to become readable.
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl RouteChanges {
    /// How often to try again without the notification socket.
    pub const POLL: Duration = Duration::from_secs(5);

    /// Resolves when routing notifications are queued (possibly already
    /// consumed by an `apply` meanwhile: then the retry finds nothing to
    /// do), or after [`Self::POLL`] without the socket.
    pub async fn next(&mut self) {
        let Some(fd) = &self.fd else {
            tokio::time::sleep(Self::POLL).await;
            return;
        };
        match fd.readable().await {
            // The retry drains the socket; a notification queued after
            // this makes it readable again.
            Ok(mut guard) => guard.clear_ready(),
            Err(e) => {
                warn!(error = %e, "routing notifications lost: unroutable backends are retried every {:?}", Self::POLL);
                self.fd = None;
            }
        }
    }
}

/// One service as it sits in the maps.
#[derive(Clone, Debug)]
struct Programmed {
    value: Service,
    name: String,
    /// Active backends: address → (id, weight).
    backends: BTreeMap<SocketAddr, (u32, u32)>,
    /// The regions of its table (`None` when `table_size` is 0, or when a
    /// restored value named no valid pair).
    pair: Option<Pair>,
    /// The live table is the one its backends, size and seed give (false:
    /// rebuild it on the next apply).
    table_ok: bool,
    /// The spec it was programmed from (`None` when restored from the
    /// maps), and the [`Routes`] epoch its SNAT addresses were resolved in:
    /// while both still hold, `apply` skips the service without looking
    /// further.
    spec: Option<ServiceSpec>,
    route_epoch: u64,
    /// Its entries in `XLB_RANGES`.
    ranges: BTreeSet<RangeEntry>,
    /// Backends without a route (written with [`BE_F_UNROUTABLE`], in no
    /// table): address → slot.
    unroutable: BTreeMap<SocketAddr, Unroutable>,
}

/// A backend slot held by a backend the node has no route to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Unroutable {
    id: u32,
    /// Its warning was logged (once per backend while it stays unroutable).
    warned: bool,
}

/// The SNAT source address of each backend of a service (zeros for
/// `source: preserve`), or the error of its route lookup.
type Resolved = Vec<Result<[u8; 16], std::io::Error>>;

/// What an `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Lookup-table entries written (only those that differed).
    pub table_writes: usize,
    /// `XLB_RANGES` entries added or deleted.
    pub range_writes: usize,
    /// `XLB_AFFINITY` entries deleted (services removed or whose affinity
    /// was turned off).
    pub affinity_deleted: usize,
}

/// Owns the maps and knows what they hold.
pub struct MapWriter {
    maps: Maps,
    services: HashMap<ServiceKey, Programmed>,
    /// Mirror of the backend array (generations survive deactivation).
    backends: Vec<Backend>,
    seed: u32,
    /// Free and used ranges of the table array.
    regions: RegionAllocator,
    /// Pairs given up, reusable after [`GRACE`].
    retired: Vec<(Pair, Instant)>,
    /// Table build buffer.
    scratch: Vec<u32>,
    /// Table entries written by the current `apply`.
    table_writes: usize,
    /// Service ids not in use (lowest first).
    free_services: BTreeSet<u32>,
    /// Backend slots without a backend (lowest first): exactly the ids
    /// whose mirror entry has neither `BE_F_ACTIVE` nor `BE_F_UNROUTABLE`.
    free_backends: BTreeSet<u32>,
    /// Mirror of `XLB_VIPS`.
    vips: HashMap<[u8; 16], u32>,
    /// Source addresses of the routes to backends (`source: snat` without
    /// `snat_address`).
    routes: Routes,
    /// Entries in `XLB_RANGES` over all services.
    range_count: usize,
    /// `XLB_RANGES` entries written by the current `apply`.
    range_writes: usize,
    /// Service ids whose `XLB_AFFINITY` entries the current `apply` deletes
    /// at its end (removed, or affinity turned off).
    purge: BTreeSet<u32>,    /// Mirror of the `XLB_PREFILTER` words this writer wrote (zero: not
    /// written; a restored map may hold stale set bits, which only send
    /// packets down the full path), and whether its ready word is set.
    prefilter: Vec<u64>,
    prefilter_ready: bool,
}

impl MapWriter {
    /// Takes the maps and reads back what a previous agent left in them, so
    /// that an unchanged configuration rewrites nothing and moves no flow.
    /// `seed` is the Maglev seed (`maglev_seed`), also the flow-hash seed.
    pub fn restore(maps: Maps, seed: u32) -> Result<Self, WriteError> {
        let mut backends = Vec::with_capacity(MAX_BACKENDS as usize);
        for i in 0..MAX_BACKENDS {
            backends.push(maps.backends.get(&i, 0).map_err(map_err("backends"))?);
        }
        // Active (and unroutable) backends by service id, in one pass over the array.
        let mut by_service: HashMap<u32, BTreeMap<SocketAddr, (u32, u32)>> = HashMap::new();
        let mut unroutable_by_service: HashMap<u32, BTreeMap<SocketAddr, Unroutable>> = HashMap::new();
        for (id, b) in backends.iter().enumerate() {
            let addr = SocketAddr::new(ip_from16(b.addr), u16::from_be(b.port));
            if b.flags & BE_F_ACTIVE != 0 {
                by_service.entry(b.service_id).or_default().insert(addr, (id as u32, b.weight));
            } else if b.flags & BE_F_UNROUTABLE != 0 {
                unroutable_by_service.entry(b.service_id).or_default().insert(addr, Unroutable { id: id as u32, warned: false });
            }
        }
        let mut found = Vec::new();
        for entry in maps.services.iter() {
            let (key, value) = entry.map_err(map_err("services"))?;
            let name = maps
                .names
                .get(&value.id, 0)
                .map(|n| name_from(&n))
                .map_err(map_err("service names"))?;
            let be = by_service.get(&value.id).cloned().unwrap_or_default();
            found.push((key, value, name, be));
        }
        // Deterministic claim order for overlapping (corrupt) regions.
        found.sort_by_key(|(_, v, _, _)| v.id);
        let live: Vec<(u32, u32)> = found.iter().map(|(_, v, _, _)| (v.table_offset, v.table_size)).collect();
        // Source ranges by service id; those of no service (left by an
        // agent stopped halfway through a removal) are deleted.
        let mut maps = maps;
        sync_slots(&mut maps, &found)?;
        let mut ranges: HashMap<u32, BTreeSet<RangeEntry>> = HashMap::new();
        let keys: Vec<Key<RangeKey>> = maps.ranges.keys().collect::<Result<_, _>>().map_err(map_err("source ranges"))?;
        let ids: BTreeSet<u32> = found.iter().map(|(_, v, _, _)| v.id).collect();
        let mut range_count = 0;
        for k in keys {
            let (id, entry) = (u32::from_be_bytes(k.data().service), (k.prefix_len(), k.data().addr));
            if ids.contains(&id) {
                ranges.entry(id).or_default().insert(entry);
                range_count += 1;
            } else {
                debug!(service_id = id, "deleting a source range of no service");
                match maps.ranges.remove(&k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err("source ranges")(e)),
                }
            }
        }
        let (regions, pairs) = restore_regions(maps.table.len(), &live);
        let mut services = HashMap::new();
        for ((key, value, name, backends), pair) in found.into_iter().zip(pairs) {
            let table_ok = match pair {
                _ if value.table_size == 0 => true,
                None => {
                    warn!(
                        service = %name,
                        offset = value.table_offset,
                        size = value.table_size,
                        entries = maps.table.len(),
                        "the live lookup table lies outside the table array or overlaps another: rebuilding it"
                    );
                    false
                }
                Some(_) => {
                    let ids: BTreeSet<u32> = backends.values().filter(|(_, w)| *w > 0).map(|(id, _)| *id).collect();
                    let ok = maps
                        .table
                        .region(value.table_offset, value.table_size)
                        .is_some_and(|r| r.values().all(|id| ids.contains(&id)));
                    if !ok {
                        warn!(service = %name, "the live lookup table holds entries of no usable backend of the service: rebuilding it");
                    }
                    ok
                }
            };
            let ranges = ranges.remove(&value.id).unwrap_or_default();
            let unroutable = unroutable_by_service.remove(&value.id).unwrap_or_default();
            services.insert(key, Programmed { value, name, backends, pair, table_ok, spec: None, route_epoch: 0, ranges, unroutable });
        }
        if !services.is_empty() {
            info!(services = services.len(), "reusing pinned maps left by a previous agent");
        }
        let used: BTreeSet<u32> = services.values().map(|p| p.value.id).collect();
        let free_services = (0..MAX_SERVICES).filter(|i| !used.contains(i)).collect();
        // Unroutable backends of no service (an agent stopped halfway
        // through a removal): their slots are freed.
        for u in unroutable_by_service.values().flat_map(|m| m.values()) {
            let mut b = backends[u.id as usize];
            b.flags &= !BE_F_UNROUTABLE;
            maps.backends.set(u.id, b, 0).map_err(map_err("backends"))?;
            backends[u.id as usize] = b;
        }
        let free_backends = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.flags & (BE_F_ACTIVE | BE_F_UNROUTABLE) == 0)
            .map(|(i, _)| i as u32)
            .collect();
        let mut vips = HashMap::new();
        let keys: Vec<[u8; 16]> = maps.vips.keys().filter_map(Result::ok).collect();
        for vip in keys {
            if let Ok(n) = maps.vips.get(&vip, 0) {
                vips.insert(vip, n);
            }
        }
        Self {
            maps,
            services,
            backends,
            seed,
            regions,
            retired: Vec::new(),
            scratch: Vec::new(),
            table_writes: 0,
            free_services,
            free_backends,
            vips,
            routes: Routes::new(),
            range_count,
            range_writes: 0,
            purge: BTreeSet::new(),
            prefilter: vec![0; PREFILTER_ENTRIES as usize],
            prefilter_ready: false,
        }
        .with_prefilter()
    }

    /// Fills the pre-filter from the restored state and marks it ready.
    fn with_prefilter(mut self) -> Result<Self, WriteError> {
        self.sync_prefilter(&[], &[])?;
        Ok(self)
    }

    /// Read access to the maps (for the interface setup).
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Number of programmed services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no service is programmed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The Maglev (and flow-hash) seed.
    pub fn seed(&self) -> u32 {
        self.seed
    }

    /// Changes the seed; the next [`apply`](Self::apply) rebuilds every
    /// table with it (which moves new flows' picks, not existing flows).
    pub fn set_seed(&mut self, seed: u32) -> &mut Self {
        self.seed = seed;
        self
    }

    /// Entries of the table array not held by any service.
    pub fn table_free(&self) -> u64 {
        self.regions.free_entries() + self.retired.iter().map(|(p, _)| p.entries()).sum::<u64>()
    }

    /// The backends without a route, as (service name, address), sorted.
    pub fn unroutable(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<(String, SocketAddr)> =
            self.services.values().flat_map(|p| p.unroutable.keys().map(|a| (p.name.clone(), *a))).collect();
        v.sort();
        v
    }

    /// Whether some backend waits for a route (see [`Self::retry_unroutable`]).
    pub fn has_unroutable(&self) -> bool {
        self.services.values().any(|p| !p.unroutable.is_empty())
    }

    /// What tells the agent's loop when the routing changed, so that it
    /// calls [`Self::retry_unroutable`] (a second handle on the writer's
    /// routing-notification socket; without one, a timer).
    pub fn route_changes(&self) -> RouteChanges {
        let fd = self.routes.watch.as_ref().and_then(|fd| {
            let registered = fd.try_clone().and_then(|fd| {
                // SAFETY: an OwnedFd's as_raw_fd is the same open descriptor
                // for as long as the AsyncFd owns it.
                unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
            });
            registered.map_err(|e| warn!(error = %e, "unroutable backends are retried every {:?}", RouteChanges::POLL)).ok()
        });
        RouteChanges { fd }
    }

    /// Programs again every service with an unroutable backend whose routes
    /// may have changed since (see [`Routes`]); returns how many backends
    /// got a route and are now programmed. Nothing else is touched.
    pub fn retry_unroutable(&mut self) -> Result<usize, WriteError> {
        self.routes.refresh();
        let epoch = self.routes.epoch;
        let specs: Vec<ServiceSpec> = self
            .services
            .values()
            .filter(|p| !p.unroutable.is_empty() && p.route_epoch != epoch)
            .filter_map(|p| p.spec.clone())
            .collect();
        if specs.is_empty() {
            return Ok(0);
        }
        let before = self.unroutable().len();
        self.reclaim(false);
        self.table_writes = 0;
        self.range_writes = 0;
        let backends: Vec<[u8; 16]> = specs.iter().flat_map(|s| s.backends.iter().map(|b| addr16(b.addr.ip()))).collect();
        self.sync_prefilter(&[], &backends)?;
        let mut first_error = None;
        for spec in &specs {
            if let Err(e) = self.apply_service(spec) {
                tracing::error!(service = %spec.name, error = %e, "service not programmed");
                first_error.get_or_insert(e);
            }
        }
        self.sync_prefilter(&[], &[])?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(before.saturating_sub(self.unroutable().len())),
        }
    }

    /// Brings the maps to `desired`, writing only what differs.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, WriteError> {
        self.reclaim(false);
        self.routes.refresh();
        self.table_writes = 0;
        self.range_writes = 0;
        let mut report = ApplyReport::default();
        let wanted: HashMap<ServiceKey, &ServiceSpec> =
            desired.services.iter().map(|s| (service_key(s.vip, s.port, s.protocol), s)).collect();
        if wanted.len() > MAX_SERVICES as usize {
            return Err(WriteError::TooManyServices);
        }
        // The pre-filter lets packets of the new VIPs and backends through
        // before they are written; bits of what goes are cleared at the end.
        let new_vips: Vec<[u8; 16]> = desired.services.iter().map(|s| addr16(s.vip)).collect();
        let new_backends: Vec<[u8; 16]> =
            desired.services.iter().flat_map(|s| s.backends.iter().map(|b| addr16(b.addr.ip()))).collect();
        self.sync_prefilter(&new_vips, &new_backends)?;
        let gone: Vec<ServiceKey> = self.services.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        for key in gone {
            self.remove_service(&key)?;
            report.removed += 1;
        }
        // Deterministic order: by name.
        let mut specs: Vec<&ServiceSpec> = desired.services.iter().collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        // One service that cannot be programmed does not hold up the others.
        let mut first_error = None;
        for spec in specs {
            let change = self.apply_service(spec);
            report.table_writes = self.table_writes;
            report.range_writes = self.range_writes;
            match change {
                Ok(Change::Added) => report.added += 1,
                Ok(Change::Updated) => report.updated += 1,
                Ok(Change::Unchanged) => report.unchanged += 1,
                Err(e) => {
                    tracing::error!(service = %spec.name, error = %e, "service not programmed");
                    first_error.get_or_insert(e);
                }
            }
        }
        report.range_writes = self.range_writes;
        report.affinity_deleted = self.purge_affinity();
        self.sync_vips()?;
        self.sync_prefilter(&[], &[])?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Deletes the `XLB_AFFINITY` entries of the services in `purge` (one
    /// pass over the table, only when there is any); returns how many.
    /// Failures are logged, not returned: an entry left behind is ignored
    /// while its service has no affinity, and never names a backend of
    /// another service (generations).
    fn purge_affinity(&mut self) -> usize {
        if self.purge.is_empty() {
            return 0;
        }
        let purge = std::mem::take(&mut self.purge);
        // The data path adds and evicts entries meanwhile: bound the walk.
        let keys: Vec<AffinityKey> = self
            .maps
            .affinity
            .keys()
            .take(2 * AFFINITY_ENTRIES as usize)
            .filter_map(Result::ok)
            .filter(|k| purge.contains(&k.service_id))
            .collect();
        let mut deleted = 0;
        for k in keys {
            match self.maps.affinity.remove(&k) {
                Ok(()) => deleted += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => {
                    warn!(error = %e, "deleting session-affinity entries");
                    break;
                }
            }
        }
        debug!(services = ?purge, deleted, "session-affinity entries deleted");
        deleted
    }

    /// Adds (`add`) or deletes a service's `XLB_RANGES` entries.
    fn write_ranges<'a>(
        &mut self,
        id: u32,
        entries: impl Iterator<Item = &'a RangeEntry>,
        add: bool,
    ) -> Result<bool, WriteError> {
        let mut any = false;
        for e in entries {
            let key = range_key(id, *e);
            if add {
                self.maps.ranges.insert(&key, 1, 0).map_err(map_err("source ranges"))?;
                self.range_count += 1;
            } else {
                match self.maps.ranges.remove(&key) {
                    Ok(()) => self.range_count = self.range_count.saturating_sub(1),
                    Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err("source ranges")(e)),
                }
            }
            self.range_writes += 1;
            any = true;
        }
        Ok(any)
    }

    /// Keeps `XLB_VIPS` (VIP → number of services on it; the data path
    /// answers pings to these) in step with the programmed services.
    fn sync_vips(&mut self) -> Result<(), WriteError> {
        let mut wanted: HashMap<[u8; 16], u32> = HashMap::new();
        for key in self.services.keys() {
            *wanted.entry(key.addr).or_default() += 1;
        }
        let gone: Vec<[u8; 16]> = self.vips.keys().filter(|v| !wanted.contains_key(*v)).copied().collect();
        for vip in gone {
            match self.maps.vips.remove(&vip) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("vips")(e)),
            }
            self.vips.remove(&vip);
        }
        for (vip, n) in wanted {
            if self.vips.get(&vip) != Some(&n) {
                self.maps.vips.insert(vip, n, 0).map_err(map_err("vips"))?;
                self.vips.insert(vip, n);
            }
        }
        Ok(())
    }

    /// Brings `XLB_PREFILTER` to the programmed VIPs and active backends'
    /// addresses plus `vips` and `backends` (about to be programmed),
    /// writing only the words that differ, then sets its ready word.
    fn sync_prefilter(&mut self, vips: &[[u8; 16]], backends: &[[u8; 16]]) -> Result<(), WriteError> {
        let mut want = vec![0u64; PREFILTER_ENTRIES as usize];
        let mut set = |base: u32, a: &[u8; 16]| {
            let (w, m) = prefilter_bit_of(a);
            want[(base + w) as usize] |= m;
        };
        for a in self.services.keys().map(|k| &k.addr).chain(vips) {
            set(PREFILTER_VIPS, a);
        }
        for a in self.backends.iter().filter(|b| b.flags & BE_F_ACTIVE != 0).map(|b| &b.addr).chain(backends) {
            set(PREFILTER_BACKENDS, a);
        }
        for i in 0..PREFILTER_READY {
            let w = want[i as usize];
            if self.prefilter[i as usize] != w {
                self.maps.prefilter.set(i, w, 0).map_err(map_err("prefilter"))?;
                self.prefilter[i as usize] = w;
            }
        }
        if !self.prefilter_ready {
            self.maps.prefilter.set(PREFILTER_READY, 1, 0).map_err(map_err("prefilter"))?;
            self.prefilter_ready = true;
        }
        Ok(())
    }

    /// Returns retired pairs to the allocator: those older than [`GRACE`],
    /// or, with `wait`, all of them after sleeping out the youngest's grace.
    fn reclaim(&mut self, wait: bool) {
        if wait {
            if let Some(youngest) = self.retired.iter().map(|(_, t)| *t).max() {
                let left = GRACE.saturating_sub(youngest.elapsed());
                if !left.is_zero() {
                    std::thread::sleep(left);
                }
            }
        }
        let now = Instant::now();
        let regions = &mut self.regions;
        self.retired.retain(|(p, t)| {
            if now.duration_since(*t) >= GRACE {
                regions.free(p.base, p.entries());
                false
            } else {
                true
            }
        });
    }

    fn retire(&mut self, pair: Pair) {
        self.retired.push((pair, Instant::now()));
    }

    /// Allocates a pair of regions of `size` entries for `service`.
    fn alloc_pair(&mut self, service: &str, size: u32) -> Result<Pair, WriteError> {
        let need = 2 * size as u64;
        let mut base = self.regions.alloc(need);
        if base.is_none() && !self.retired.is_empty() {
            self.reclaim(true);
            base = self.regions.alloc(need);
        }
        match base {
            Some(base) => Ok(Pair { base, size }),
            None => Err(WriteError::TableFull {
                service: service.to_owned(),
                size,
                need,
                free: self.regions.free_entries(),
                largest: self.regions.largest_free(),
                total: self.regions.len(),
            }),
        }
    }

    /// The lowest service id not in use.
    fn free_service_id(&self) -> Result<u32, WriteError> {
        self.free_services.first().copied().ok_or(WriteError::TooManyServices)
    }

    /// The lowest backend slot without an active backend, other than `taken`.
    fn free_backend_id(&self, taken: &BTreeSet<u32>) -> Result<u32, WriteError> {
        self.free_backends.iter().find(|i| !taken.contains(i)).copied().ok_or(WriteError::TooManyBackends)
    }

    fn write_backend(&mut self, id: u32, value: Backend) -> Result<(), WriteError> {
        self.maps.backends.set(id, value, 0).map_err(map_err("backends"))?;
        self.backends[id as usize] = value;
        if value.flags & (BE_F_ACTIVE | BE_F_UNROUTABLE) != 0 {
            self.free_backends.remove(&id);
        } else {
            self.free_backends.insert(id);
        }
        Ok(())
    }

    fn zero_stats(&mut self, service: Option<u32>, backend: Option<u32>) -> Result<(), WriteError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| WriteError::Cpus(e))?;
        let zeros = || aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(WriteError::Cpus);
        if let Some(id) = service {
            self.maps.service_stats.set(id, zeros()?, 0).map_err(map_err("service stats"))?;
        }
        if let Some(id) = backend {
            self.maps.backend_stats.set(id, zeros()?, 0).map_err(map_err("backend stats"))?;
        }
        Ok(())
    }

    fn apply_service(&mut self, spec: &ServiceSpec) -> Result<Change, WriteError> {
        let key = service_key(spec.vip, spec.port, spec.protocol);
        // Programmed from this very spec, with the same seed, and (when its
        // SNAT addresses come from the routes) no routing change since: the
        // maps already hold exactly what the full path below would write.
        if let Some(p) = self.services.get(&key) {
            let routed = spec.source == SourceMode::Snat && spec.snat_address.is_none() && !spec.backends.is_empty();
            if p.table_ok
                && p.value.hash_seed == self.seed
                && (!routed || p.route_epoch == self.routes.epoch)
                && p.spec.as_ref() == Some(spec)
            {
                return Ok(Change::Unchanged);
            }
        }
        let old = self.services.get(&key).cloned();
        let id = match &old {
            Some(p) => p.value.id,
            None => self.free_service_id()?,
        };
        // Each backend's SNAT source address: one without a route is
        // written unroutable (no flow picks it) and retried when the
        // routing changes; it does not hold up the others.
        let resolved = self.resolve(spec);
        // The table's size, and its space, first: a full array fails the
        // service before anything of it is written.
        let usable = spec.backends.iter().zip(&resolved).any(|(b, r)| b.weight > 0 && r.is_ok());
        let size = if usable { spec.maglev_table_size.unwrap_or(maglev::DEFAULT_SIZE) } else { 0 };
        let ranges = range_entries(spec);
        let adding = match &old {
            Some(p) => ranges.difference(&p.ranges).count(),
            None => ranges.len(),
        };
        if self.range_count + adding > RANGE_ENTRIES as usize {
            return Err(WriteError::TooManyRanges { service: spec.name.clone(), adding, total: self.range_count + adding });
        }
        let kept_pair = old.as_ref().and_then(|p| p.pair).filter(|p| p.size == size);
        let new_pair = if size > 0 && kept_pair.is_none() { Some(self.alloc_pair(&spec.name, size)?) } else { None };
        let result = self.write_service(spec, &resolved, key, old, id, size, kept_pair.or(new_pair));
        if result.is_err() {
            if let Some(p) = new_pair {
                // Nothing refers to it yet.
                self.regions.free(p.base, p.entries());
            }
            // Part of it may have been written: the next apply takes the
            // full path whatever the spec.
            if let Some(p) = self.services.get_mut(&key) {
                p.spec = None;
            }
        }
        result
    }

    /// The SNAT source address of each of `spec`'s backends (see [`Resolved`]).
    fn resolve(&mut self, spec: &ServiceSpec) -> Resolved {
        spec.backends
            .iter()
            .map(|b| match (spec.source, spec.snat_address) {
                (SourceMode::Preserve, _) => Ok([0; 16]),
                (SourceMode::Snat, Some(a)) => Ok(addr16(a)),
                (SourceMode::Snat, None) => self.routes.source(b.addr.ip()).map(addr16),
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn write_service(
        &mut self,
        spec: &ServiceSpec,
        resolved: &Resolved,
        key: ServiceKey,
        old: Option<Programmed>,
        id: u32,
        size: u32,
        pair: Option<Pair>,
    ) -> Result<Change, WriteError> {
        let ranges = range_entries(spec);
        if old.is_none() {
            self.zero_stats(Some(id), None)?;
        }

        // 1. Backends: keep the ids of those that remain, add new ones;
        //    those without a route are written unroutable (inactive).
        let mut backends = BTreeMap::new();
        let mut unroutable = BTreeMap::new();
        let mut taken = BTreeSet::new();
        let mut changed = false;
        // Active backends that lost their route: written in 4, after the
        // table that no longer holds them.
        let mut lost_route = Vec::new();
        for (b, snat) in spec.backends.iter().zip(resolved) {
            let was_active = old.as_ref().and_then(|p| p.backends.get(&b.addr)).map(|(id, _)| *id);
            let was_unroutable = old.as_ref().and_then(|p| p.unroutable.get(&b.addr)).copied();
            let existing = was_active.or(was_unroutable.map(|u| u.id));
            let (bid, generation) = match existing {
                // Active → unroutable: a new generation, so that its flows
                // (re-picked now) never come back to it.
                Some(bid) if was_active.is_some() && snat.is_err() => (bid, self.backends[bid as usize].generation.wrapping_add(1)),
                Some(bid) => (bid, self.backends[bid as usize].generation),
                None => {
                    let bid = self.free_backend_id(&taken)?;
                    (bid, self.backends[bid as usize].generation.wrapping_add(1))
                }
            };
            taken.insert(bid);
            let (flags, snat_addr) = match snat {
                Ok(a) => (BE_F_ACTIVE, *a),
                Err(e) => (BE_F_UNROUTABLE, unroutable_snat(e)),
            };
            let value = Backend {
                addr: addr16(b.addr.ip()),
                port: b.addr.port().to_be(),
                flags,
                service_id: id,
                generation,
                weight: b.weight as u32,
                snat_addr,
            };
            if was_active.is_some() && snat.is_err() {
                lost_route.push((bid, value));
            } else if self.backends[bid as usize] != value {
                // A slot never used (generation 0) has never been counted.
                if existing.is_none() && self.backends[bid as usize].generation != 0 {
                    self.zero_stats(None, Some(bid))?;
                }
                self.write_backend(bid, value)?;
                changed = true;
            }
            match snat {
                Ok(_) => {
                    if was_unroutable.is_some() {
                        info!(service = %spec.name, backend = %b.addr, "backend has a route now: programmed");
                    }
                    backends.insert(b.addr, (bid, b.weight as u32));
                }
                Err(e) => {
                    if !was_unroutable.is_some_and(|u| u.warned) {
                        warn!(
                            service = %spec.name,
                            backend = %b.addr,
                            error = %e,
                            "no route to the backend, so no SNAT source address: it takes no new flows until a route \
                             to it appears (tried again on every routing change); add a route or set snat_address"
                        );
                    }
                    unroutable.insert(b.addr, Unroutable { id: bid, warned: true });
                }
            }
        }

        // 2. The lookup table, when its inputs (backends and weights, size,
        //    seed) changed: into the region not in use, entries that differ
        //    only.
        let unchanged = old.as_ref().is_some_and(|p| {
            p.table_ok
                && p.backends == backends
                && p.value.table_size == size
                && p.value.hash_seed == self.seed
                && (size == 0 || p.pair == pair)
        });
        let table_offset = match (pair, &old) {
            (None, _) => 0,
            (Some(_), Some(p)) if unchanged => p.value.table_offset,
            (Some(pair), _) => {
                let target = match &old {
                    Some(p) if p.pair == Some(pair) => pair.twin(p.value.table_offset),
                    _ => pair.base,
                };
                let entries: Vec<maglev::Entry> = backends
                    .iter()
                    .map(|(addr, (bid, w))| maglev::Entry { name: addr.to_string(), id: *bid, weight: *w })
                    .collect();
                maglev::build_into(&entries, size, self.seed, &mut self.scratch);
                let region = self.maps.table.region(target, size).expect("pairs lie within the table array");
                let mut written = 0;
                for (slot, want) in region.slots().zip(&self.scratch) {
                    if slot.load(Ordering::Relaxed) != *want {
                        slot.store(*want, Ordering::Relaxed);
                        written += 1;
                    }
                }
                // The entries before the service value that publishes them.
                fence(Ordering::SeqCst);
                self.table_writes += written;
                debug!(service = %spec.name, offset = target, size, written, "lookup table written");
                target
            }
        };
        let table_size = if pair.is_some() { size } else { 0 };

        // 3. New source ranges, before the service value that may set the
        //    flag; then the service value, which switches the data path over.
        let empty = BTreeSet::new();
        let old_ranges = old.as_ref().map_or(&empty, |p| &p.ranges);
        let added: Vec<RangeEntry> = ranges.difference(old_ranges).copied().collect();
        let gone: Vec<RangeEntry> = old_ranges.difference(&ranges).copied().collect();
        if self.write_ranges(id, added.iter(), true)? {
            changed = true;
        }
        // Recorded at once, so a failure below leaves the mirror knowing
        // what the trie holds.
        if let Some(p) = self.services.get_mut(&key) {
            p.ranges.extend(added.iter().copied());
        }
        let mut flags = 0;
        if spec.source == SourceMode::Snat {
            flags |= SVC_F_SNAT;
        }
        if spec.vip.is_ipv6() {
            flags |= SVC_F_IPV6;
        }
        if !spec.source_ranges.is_empty() {
            flags |= SVC_F_RANGES;
        }
        let value = Service {
            id,
            flags,
            table_offset,
            table_size,
            udp_timeout: spec.udp_timeout.unwrap_or(DEFAULT_UDP_TIMEOUT),
            tcp_timeout: spec.tcp_timeout.unwrap_or(DEFAULT_TCP_TIMEOUT),
            hash_seed: self.seed,
            affinity_timeout: spec.affinity_timeout.unwrap_or(0),
        };
        if old.as_ref().map(|p| p.name.as_str()) != Some(spec.name.as_str()) {
            self.maps.names.set(id, name_to(&spec.name), 0).map_err(map_err("service names"))?;
            changed = true;
        }
        if old.as_ref().map(|p| p.value) != Some(value) {
            self.maps.services.insert(key, value, 0).map_err(map_err("services"))?;
            self.write_slot(id, ServiceSlot { key, _pad: 0, svc: value })?;
            changed = true;
        }
        // Prefixes that went, after the value (which no longer has the flag
        // when none is left).
        if self.write_ranges(id, gone.iter(), false)? {
            changed = true;
        }
        if old.as_ref().is_some_and(|p| p.value.affinity_timeout != 0) && value.affinity_timeout == 0 {
            self.purge.insert(id);
        }

        // 4. Backends that left, or lost their route: deactivate (their flows
        //    re-pick on their next packet).
        for (bid, value) in lost_route {
            self.write_backend(bid, value)?;
            changed = true;
        }
        if let Some(p) = &old {
            let left = p.backends.iter().map(|(a, (bid, _))| (a, *bid)).chain(p.unroutable.iter().map(|(a, u)| (a, u.id)));
            for (addr, bid) in left {
                if !backends.contains_key(addr) && !unroutable.contains_key(addr) {
                    let mut b = self.backends[bid as usize];
                    b.flags &= !(BE_F_ACTIVE | BE_F_UNROUTABLE);
                    self.write_backend(bid, b)?;
                    changed = true;
                    debug!(service = %spec.name, backend = %addr, "backend removed");
                }
            }
        }

        // 5. Regions no longer used: retire (reused after the grace period).
        if let Some(op) = old.as_ref().and_then(|p| p.pair) {
            if Some(op) != pair {
                self.retire(op);
            }
        }
        self.free_services.remove(&id);
        let route_epoch = self.routes.epoch;
        self.services.insert(
            key,
            Programmed {
                value,
                name: spec.name.clone(),
                backends,
                pair,
                table_ok: true,
                spec: Some(spec.clone()),
                route_epoch,
                ranges,
                unroutable,
            },
        );
        Ok(match (old.is_some(), changed) {
            (false, _) => Change::Added,
            (true, true) => Change::Updated,
            (true, false) => Change::Unchanged,
        })
    }

    /// Writes a service's slot in `XLB_SVC_SLOTS` (the established path's
    /// mirror of `XLB_SERVICES`, see `lb_common::ServiceSlot`).
    fn write_slot(&mut self, id: u32, slot: ServiceSlot) -> Result<(), WriteError> {
        self.maps.service_slots.set(id, slot, 0).map_err(map_err("service slots"))
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), WriteError> {
        let Some(p) = self.services.remove(key) else { return Ok(()) };
        match self.maps.services.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("services")(e)),
        }
        // After the service's key is gone: its flows then find neither.
        if self.maps.service_slots.get(&p.value.id, 0).is_ok_and(|sl| sl.key == *key) {
            self.write_slot(p.value.id, ServiceSlot::default())?;
        }
        if let Some(pair) = p.pair {
            self.retire(pair);
        }
        self.write_ranges(p.value.id, p.ranges.iter(), false)?;
        if p.value.affinity_timeout != 0 {
            self.purge.insert(p.value.id);
        }
        // (Restored maps may, if corrupt, give two services one id.)
        if !self.services.values().any(|q| q.value.id == p.value.id) {
            self.free_services.insert(p.value.id);
        }
        for bid in p.backends.values().map(|(bid, _)| *bid).chain(p.unroutable.values().map(|u| u.id)) {
            let mut b = self.backends[bid as usize];
            b.flags &= !(BE_F_ACTIVE | BE_F_UNROUTABLE);
            self.write_backend(bid, b)?;
        }
        self.maps.names.set(p.value.id, name_to(""), 0).map_err(map_err("service names"))?;
        debug!(service = %p.name, "service removed");
        Ok(())
    }
}

enum Change {
    Added,
    Updated,
    Unchanged,
}

/// Encodes a name for the names map (truncated to its size).
/// Makes `XLB_SVC_SLOTS` mirror the restored services: each one's slot,
/// every other slot empty (a slot left by an agent stopped halfway through a
/// removal, or a map created by this load, is fixed here).
fn sync_slots<N, B>(maps: &mut Maps, found: &[(ServiceKey, Service, N, B)]) -> Result<(), WriteError> {
    let mut want = vec![ServiceSlot::default(); MAX_SERVICES as usize];
    for (key, value, _, _) in found {
        if let Some(w) = want.get_mut(value.id as usize) {
            *w = ServiceSlot { key: *key, _pad: 0, svc: *value };
        }
    }
    for (id, w) in want.into_iter().enumerate() {
        let id = id as u32;
        if maps.service_slots.get(&id, 0).map_err(map_err("service slots"))? != w {
            maps.service_slots.set(id, w, 0).map_err(map_err("service slots"))?;
        }
    }
    Ok(())
}

pub fn name_to(name: &str) -> ServiceName {
    let mut n = ServiceName { name: [0; NAME_LEN] };
    let bytes = name.as_bytes();
    let len = bytes.len().min(NAME_LEN);
    n.name[..len].copy_from_slice(&bytes[..len]);
    n
}

/// Decodes a name from the names map.
pub fn name_from(n: &ServiceName) -> String {
    let end = n.name.iter().position(|b| *b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&n.name[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trip() {
        for a in ["10.1.2.3", "2001:db8::1", "::1", "0.0.0.0"] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(ip_from16(addr16(ip)), ip);
        }
    }

    #[test]
    fn names_round_trip_and_truncate() {
        assert_eq!(name_from(&name_to("default/dns:53")), "default/dns:53");
        assert_eq!(name_from(&name_to(&"x".repeat(500))).len(), NAME_LEN);
    }

    #[test]
    fn keys_use_network_order() {
        let k = service_key("192.0.2.1".parse().unwrap(), 53, Protocol::Udp);
        assert_eq!(k.port.to_ne_bytes(), [0, 53]);
        assert_eq!(k.proto, 17);
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 192, 0, 2, 1]);
    }

    #[test]
    fn reused_route_probe_answers_like_a_new_socket() {
        let mut r = Routes { watch: None, epoch: 1, cache: HashMap::new(), probes: [None, None] };
        for a in ["127.0.0.1", "127.0.0.2", "::1", "127.0.0.1", "::1"] {
            let ip: IpAddr = a.parse().unwrap();
            let want = crate::iface::route_source(ip).ok();
            assert_eq!(r.source(ip).ok(), want, "{a}");
        }
        // Without a netlink watch nothing is cached and every refresh is a new epoch.
        assert!(r.cache.is_empty());
        r.refresh();
        assert_eq!(r.epoch, 2);
    }

    #[test]
    fn allocator_first_fit_split_and_merge() {
        let mut a = RegionAllocator::new(100);
        assert_eq!(a.alloc(10), Some(0));
        assert_eq!(a.alloc(21), Some(10), "sizes round up to even");
        assert_eq!(a.alloc(30), Some(32));
        assert_eq!(a.free_entries(), 38);
        a.free(10, 21);
        assert_eq!(a.alloc(8), Some(10), "first fit: the hole comes first");
        assert_eq!(a.alloc(20), Some(62), "the hole left (14) is too small");
        assert_eq!(a.largest_free(), 18);
        assert_eq!(a.alloc(19), None);
        assert_eq!(a.alloc(0), None);
        // Freeing everything merges back into one range.
        for (s, n) in [(0, 10), (32, 30), (10, 8), (62, 20)] {
            a.free(s, n);
        }
        assert_eq!(a, RegionAllocator::new(100));
        assert_eq!(a.alloc(100), Some(0));
        assert_eq!(a.alloc(1), None);
    }

    #[test]
    fn allocator_reserve() {
        let mut a = RegionAllocator::new(1000);
        assert!(a.reserve(100, 50));
        assert!(!a.reserve(120, 10), "taken");
        assert!(!a.reserve(141, 10), "odd start");
        assert!(!a.reserve(990, 12), "past the end");
        assert!(a.reserve(150, 2), "adjacent");
        assert!(a.reserve(0, 100));
        assert_eq!(a.alloc(10), Some(152));
        assert_eq!(a.free_entries(), 1000 - 162);
        a.free(0, 100);
        assert_eq!(a.alloc(100), Some(0));
        assert!(!RegionAllocator::new(0).reserve(0, 2));
        assert_eq!(RegionAllocator::new(7).alloc(8), None, "an odd last entry is never used");
    }

    #[test]
    fn pairs_are_recovered_from_the_live_region() {
        let mut a = RegionAllocator::new(1 << 20);
        for size in [251, 65537, 509, 131071, 251] {
            let base = a.alloc(2 * size as u64).unwrap();
            let p = Pair { base, size };
            assert_eq!(base % 2, 0);
            assert_eq!(Pair::of_live(base, size), Some(p), "region A");
            assert_eq!(Pair::of_live(p.twin(base), size), Some(p), "region B");
            assert_eq!(p.twin(p.twin(base)), base);
        }
        assert_eq!(Pair::of_live(0, 0), None);
        assert_eq!(Pair::of_live(0, 1030), None, "sizes are odd primes");
        assert_eq!(Pair::of_live(1, 251), None, "region B cannot start before 251");
    }

    #[test]
    fn regions_restored_from_service_values() {
        let mut a = RegionAllocator::new(10_000);
        let x = Pair { base: a.alloc(502).unwrap(), size: 251 };
        let y = Pair { base: a.alloc(2042).unwrap(), size: 1021 };
        let z = Pair { base: a.alloc(1018).unwrap(), size: 509 };
        a.free(y.base, y.entries());
        let live = [
            (x.twin(x.base), 251),
            (0, 0),
            (z.base, 509),
            (9_999, 251),         // outside the array
            (x.base + 2, 251),    // overlaps x
        ];
        let (restored, pairs) = restore_regions(10_000, &live);
        assert_eq!(pairs, vec![Some(x), None, Some(z), None, None]);
        assert_eq!(restored, a, "same free ranges as the allocator that made them");
        // The old fixed layout (1031 slots, two regions per service id) is
        // read the same way.
        let old: Vec<(u32, u32)> = (0..4).map(|id| ((id * 2 + id % 2) * 1031, 1031)).collect();
        let (_, pairs) = restore_regions(8248, &old);
        assert!(pairs.iter().enumerate().all(|(id, p)| *p == Some(Pair { base: id as u32 * 2062, size: 1031 })));
    }

    /// Root and a bpffs at /sys/fs/bpf, which the tests below need.
    fn bpf_available() -> bool {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let bpffs = std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "));
        if !(root && bpffs) {
            eprintln!("skipped: needs root and bpffs on /sys/fs/bpf");
        }
        root && bpffs
    }

    /// A pin directory removed on drop.
    struct Pins(std::path::PathBuf);
    impl Pins {
        fn new(tag: &str) -> Self {
            Self(std::path::PathBuf::from(format!("/sys/fs/bpf/xlb-unit-{tag}-{}", std::process::id())))
        }
    }
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn writer(pins: &Pins, entries: u32, seed: u32) -> MapWriter {
        let mut ebpf = crate::datapath::load_with(&pins.0, 1024, entries).expect("loading the data path");
        MapWriter::restore(Maps::take(&mut ebpf).expect("maps"), seed).expect("restore")
    }

    fn spec(name: &str, port: u16, backends: &[(&str, u16)], size: Option<u32>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            vip: "192.0.2.1".parse().unwrap(),
            port,
            protocol: Protocol::Udp,
            source: SourceMode::Preserve,
            snat_address: None,
            udp_timeout: None,
            tcp_timeout: None,
            maglev_table_size: size,
            affinity_timeout: None,
            source_ranges: vec![],
            backends: backends
                .iter()
                .map(|(a, w)| crate::model::BackendSpec { addr: a.parse().unwrap(), weight: *w })
                .collect(),
        }
    }

    /// The table the data path sees for a service, read with the kernel's
    /// lookup (not through the mapping), as backend addresses.
    fn live_table(w: &MapWriter, name: &str) -> (Service, Vec<String>) {
        let p = w.services.values().find(|p| p.name == name).expect("programmed");
        let by_id: HashMap<u32, SocketAddr> = p.backends.iter().map(|(a, (id, _))| (*id, *a)).collect();
        let v = p.value;
        let t = (0..v.table_size)
            .map(|i| {
                let id = w.maps.table.map().get(&(v.table_offset + i), 0).expect("lookup");
                by_id.get(&id).map_or_else(|| format!("?{id}"), |a| a.to_string())
            })
            .collect();
        (v, t)
    }

    /// `XLB_SVC_SLOTS` mirrors `XLB_SERVICES`: written with a service,
    /// emptied when it goes, and re-synced (stale slots emptied, missing ones
    /// written) when an agent restarts on the pinned maps.
    #[test]
    fn service_slots_mirror_the_services() {
        if !bpf_available() {
            return;
        }
        let pins = Pins::new("slots");
        let slot = |w: &MapWriter, id: u32| w.maps.service_slots.get(&id, 0).expect("slot");
        let desired = |specs: Vec<ServiceSpec>| DesiredState { services: specs };
        let mut w = writer(&pins, 1 << 16, 0);
        w.apply(&desired(vec![spec("a", 53, &[("10.0.0.1:53", 1)], Some(251)), spec("b", 54, &[], Some(251))]))
            .expect("apply");
        let ids: Vec<(ServiceKey, Service)> = w.services.iter().map(|(k, p)| (*k, p.value)).collect();
        for (key, value) in &ids {
            assert_eq!(slot(&w, value.id), ServiceSlot { key: *key, _pad: 0, svc: *value });
        }
        w.apply(&desired(vec![spec("a", 53, &[("10.0.0.1:53", 1)], Some(251))])).expect("apply");
        let gone = ids.iter().find(|(k, _)| !w.services.contains_key(k)).expect("b removed").1.id;
        assert_eq!(slot(&w, gone), ServiceSlot::default());
        // A stale slot (an agent stopped halfway) and a lost one: fixed on restart.
        let (key_a, value_a) = ids.iter().find(|(k, _)| w.services.contains_key(k)).copied().expect("a kept");
        w.maps.service_slots.set(gone, ServiceSlot { key: key_a, _pad: 0, svc: value_a }, 0).expect("set");
        w.maps.service_slots.set(value_a.id, ServiceSlot::default(), 0).expect("set");
        drop(w);
        let w = writer(&pins, 1 << 16, 0);
        assert_eq!(slot(&w, gone), ServiceSlot::default());
        assert_eq!(slot(&w, value_a.id), ServiceSlot { key: key_a, _pad: 0, svc: value_a });
    }

    fn expected(backends: &[(&str, u16)], size: u32, seed: u32) -> Vec<String> {
        let entries: Vec<maglev::Entry> =
            backends.iter().enumerate().map(|(i, (a, w))| maglev::Entry { name: a.to_string(), id: i as u32, weight: *w as u32 }).collect();
        maglev::build(&entries, size, seed).into_iter().map(|i| backends[i as usize].0.to_string()).collect()
    }

    #[test]
    fn tables_double_buffered_through_the_mapping_and_kept_across_restart() {
        if !bpf_available() {
            return;
        }
        let pins = Pins::new("tables");
        let three = [("10.1.0.1:53", 1), ("10.1.0.2:53", 2), ("10.1.0.3:53", 1)];
        let two = [("10.1.0.1:53", 1), ("10.1.0.2:53", 2)];
        let state = |b: &[(&str, u16)]| DesiredState {
            services: vec![spec("a", 53, b, Some(251)), spec("b", 54, &three, None), spec("empty", 55, &[("10.1.0.9:53", 0)], Some(509))],
        };
        let mut w = writer(&pins, 1 << 20, 7);
        let r = w.apply(&state(&three)).unwrap();
        assert_eq!(r.added, 3);
        // Entries the fresh array already held (0: a's first backend) are not written.
        let zeros = expected(&three, 251, 7).iter().filter(|a| *a == "10.1.0.1:53").count();
        assert_eq!(r.table_writes, 251 + 65537 - zeros);
        let (va, ta) = live_table(&w, "a");
        assert_eq!((va.table_offset, va.table_size, va.hash_seed), (0, 251, 7));
        assert_eq!(ta, expected(&three, 251, 7), "the kernel sees the table written through the mapping");
        let (vb, tb) = live_table(&w, "b");
        assert_eq!((vb.table_offset, vb.table_size), (502, 65537), "b's pair follows a's");
        assert_eq!(tb, expected(&three, 65537, 7));
        let (ve, _) = live_table(&w, "empty");
        assert_eq!(ve.table_size, 0, "no usable backend: no table");

        // A change goes into the other region, then back.
        let r = w.apply(&state(&two)).unwrap();
        assert_eq!((r.updated, r.unchanged), (1, 2));
        let (va, ta) = live_table(&w, "a");
        assert_eq!((va.table_offset, va.table_size), (251, 251));
        assert_eq!(ta, expected(&two, 251, 7));
        let r = w.apply(&state(&three)).unwrap();
        let (va, ta) = live_table(&w, "a");
        assert_eq!(va.table_offset, 0);
        assert_eq!(ta, expected(&three, 251, 7));
        assert!(r.table_writes < 251, "only the entries that differ from region A's old table: {}", r.table_writes);
        assert_eq!(r.table_writes, 0, "region A still held exactly this table");

        // Restart on the same pins: nothing is rewritten.
        drop(w);
        let mut w = writer(&pins, 1 << 20, 7);
        let r = w.apply(&state(&three)).unwrap();
        assert_eq!(r, ApplyReport { unchanged: 3, ..Default::default() });
        // Its allocator knows the pairs: a new service goes after them.
        let mut more = state(&three);
        more.services.push(spec("c", 56, &two, Some(1021)));
        w.apply(&more).unwrap();
        assert_eq!(live_table(&w, "c").0.table_offset, 502 + 2 * 65537);
        // A new seed rebuilds every table.
        let r = w.set_seed(8).apply(&more).unwrap();
        assert_eq!(r.updated, 4, "every service's hash seed changes");
        assert_eq!(live_table(&w, "b").1, expected(&three, 65537, 8));

        // Restart with a larger array: the tables are carried over.
        drop(w);
        let mut w = writer(&pins, 1 << 21, 8);
        assert_eq!(w.maps.table.len(), 1 << 21);
        let r = w.apply(&more).unwrap();
        assert_eq!((r.unchanged, r.table_writes), (4, 0));
        assert_eq!(live_table(&w, "b").1, expected(&three, 65537, 8));
    }

    /// Every `XLB_RANGES` entry as (service id, CIDR).
    fn trie(w: &MapWriter) -> BTreeSet<(u32, String)> {
        w.maps
            .ranges
            .keys()
            .map(|k| {
                let k = k.expect("XLB_RANGES key");
                let net = range_net((k.prefix_len(), k.data().addr)).expect("a valid prefix");
                (u32::from_be_bytes(k.data().service), net.to_string())
            })
            .collect()
    }

    fn with_ranges(ranges: &[&str], affinity: Option<u32>) -> DesiredState {
        let one = [("10.1.0.1:53", 1)];
        let mut a = spec("a", 53, &one, Some(251));
        a.source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
        a.affinity_timeout = affinity;
        DesiredState { services: vec![a, spec("b", 54, &one, Some(251))] }
    }

    #[test]
    fn source_ranges_diffed_and_restored() {
        if !bpf_available() {
            return;
        }
        let pins = Pins::new("ranges");
        let mut w = writer(&pins, 1 << 20, 0);
        let r = w.apply(&with_ranges(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"], Some(60))).unwrap();
        assert_eq!((r.added, r.range_writes), (2, 2), "the IPv6 range of an IPv4 service is not programmed");
        let id = live_table(&w, "a").0.id;
        let b = live_table(&w, "b").0;
        assert_eq!(trie(&w), BTreeSet::from([(id, "10.0.0.0/8".into()), (id, "192.0.2.7/32".into())]));
        let (va, _) = live_table(&w, "a");
        assert_ne!(va.flags & SVC_F_RANGES, 0);
        assert_eq!(va.affinity_timeout, 60);
        assert_eq!((b.flags & SVC_F_RANGES, b.affinity_timeout), (0, 0), "b has neither");

        // Unchanged services: no writes, also with the list reordered.
        let same = with_ranges(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"], Some(60));
        assert_eq!(w.apply(&same).unwrap(), ApplyReport { unchanged: 2, ..Default::default() });
        let reordered = with_ranges(&["2001:db8::/32", "192.0.2.7/32", "10.0.0.0/8"], Some(60));
        assert_eq!(w.apply(&reordered).unwrap(), ApplyReport { unchanged: 2, ..Default::default() });

        // A change writes only the difference.
        let r = w.apply(&with_ranges(&["10.0.0.0/8", "172.16.0.0/12"], Some(60))).unwrap();
        assert_eq!((r.updated, r.unchanged, r.range_writes, r.table_writes), (1, 1, 2, 0));
        assert_eq!(trie(&w), BTreeSet::from([(id, "10.0.0.0/8".into()), (id, "172.16.0.0/12".into())]));

        // Restart: the entries are read back; nothing is written. An entry
        // of no service (left by a crash) is deleted.
        w.maps.ranges.insert(&range_key(999, (range_prefix_len(true, 8), addr16("10.0.0.0".parse().unwrap()))), 1, 0).unwrap();
        drop(w);
        let mut w = writer(&pins, 1 << 20, 0);
        assert!(!trie(&w).iter().any(|(i, _)| *i == 999), "orphan deleted");
        let current = with_ranges(&["10.0.0.0/8", "172.16.0.0/12"], Some(60));
        assert_eq!(w.apply(&current).unwrap(), ApplyReport { unchanged: 2, ..Default::default() });

        // Affinity off deletes the service's affinity entries only.
        for (sid, last) in [(id, 1), (id, 2), (b.id, 3)] {
            let mut client = [0u8; 16];
            client[15] = last;
            let key = AffinityKey { client, service_id: sid, _pad: 0 };
            let value = lb_common::Affinity { backend_id: 0, backend_gen: 1, last_ns: 5 };
            w.maps.affinity.insert(key, value, 0).unwrap();
        }
        let r = w.apply(&with_ranges(&["10.0.0.0/8", "172.16.0.0/12"], None)).unwrap();
        assert_eq!((r.updated, r.affinity_deleted, r.range_writes), (1, 2, 0));
        let left: Vec<u32> = w.maps.affinity.keys().map(|k| k.unwrap().service_id).collect();
        assert_eq!(left, vec![b.id]);
        assert_eq!(live_table(&w, "a").0.affinity_timeout, 0);

        // No ranges: the flag goes, then the entries.
        let r = w.apply(&with_ranges(&[], None)).unwrap();
        assert_eq!((r.updated, r.range_writes), (1, 2));
        assert_eq!(live_table(&w, "a").0.flags & SVC_F_RANGES, 0);
        assert!(trie(&w).is_empty());

        // Ranges of only the other family: enforced, nothing allowed.
        w.apply(&with_ranges(&["2001:db8::/32"], None)).unwrap();
        assert_ne!(live_table(&w, "a").0.flags & SVC_F_RANGES, 0);
        assert!(trie(&w).is_empty());

        // Removing a service removes its ranges.
        w.apply(&with_ranges(&["10.0.0.0/8"], Some(5))).unwrap();
        assert_eq!(trie(&w).len(), 1);
        let r = w.apply(&DesiredState { services: vec![spec("b", 54, &[("10.1.0.1:53", 1)], Some(251))] }).unwrap();
        assert_eq!((r.removed, r.range_writes), (1, 1));
        assert!(trie(&w).is_empty());
    }

    #[test]
    fn unroutable_reason_names_the_backend_and_the_lookup_error() {
        let err = std::io::Error::from_raw_os_error(libc::ENETUNREACH);
        let b = Backend {
            addr: addr16("10.99.0.5".parse().unwrap()),
            flags: BE_F_UNROUTABLE,
            snat_addr: unroutable_snat(&err),
            ..Default::default()
        };
        let r = unroutable_reason(&b).expect("an unroutable backend has a reason");
        assert!(r.starts_with("no route to 10.99.0.5: "), "{r}");
        assert!(r.contains(&err.to_string()), "the lookup's error ({err}) in {r}");
        assert!(r.contains("snat_address"), "what to do: {r}");
        assert_eq!(unroutable_reason(&Backend { flags: BE_F_ACTIVE, ..b }), None);
        assert_eq!(unroutable_reason(&Backend { flags: 0, ..b }), None, "a free slot");
        let other = std::io::Error::other("no errno");
        let r = unroutable_reason(&Backend { snat_addr: unroutable_snat(&other), ..b }).unwrap();
        assert!(r.contains("route lookup failed"), "{r}");
    }

    /// Runs `f` on a thread of its own in a new network namespace with only
    /// `lo` (up): the writer's route lookups and netlink socket see it.
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            // SAFETY: unshare affects only this thread's network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
            ip(&["link", "set", "lo", "up"]);
            f()
        })
        .join()
        .expect("the test thread")
    }

    /// `ip ARGS` in the calling thread's network namespace (a child
    /// inherits it).
    fn ip(args: &[&str]) {
        let st = std::process::Command::new("ip").args(args).status().expect("run ip");
        assert!(st.success(), "ip {args:?}: {st}");
    }

    fn snat_spec(name: &str, port: u16, backends: &[(&str, u16)]) -> ServiceSpec {
        ServiceSpec { source: SourceMode::Snat, ..spec(name, port, backends, Some(251)) }
    }

    fn backend_of(w: &MapWriter, addr: &str) -> Backend {
        let ip = addr16(addr.parse::<SocketAddr>().unwrap().ip());
        *w.backends.iter().find(|b| b.addr == ip && b.flags != 0).unwrap_or_else(|| panic!("no backend {addr}"))
    }

    /// A `source: snat` backend without a route is written unroutable (not
    /// in the table, shown with its reason) while the rest of its service
    /// and the other services are programmed; a route appearing makes
    /// [`MapWriter::retry_unroutable`] program it; losing the route again
    /// takes it out; removing it frees its slot.
    #[test]
    fn unroutable_backends_wait_for_a_route() {
        if !bpf_available() {
            return;
        }
        in_new_netns(|| {
            ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
            ip(&["addr", "add", "10.98.0.1/24", "dev", "d0"]);
            ip(&["link", "set", "d0", "up"]);
            ip(&["link", "set", "d1", "up"]);
            let pins = Pins::new("unroutable");
            let mut w = writer(&pins, 1 << 16, 0);
            let (near, far) = ("10.98.0.7:53", "10.99.0.5:53");
            let state = |b: &[(&str, u16)]| DesiredState {
                services: vec![snat_spec("a", 53, b), snat_spec("b", 54, &[("10.98.0.8:53", 1)]), snat_spec("c", 55, &[(far, 1)])],
            };
            let r = w.apply(&state(&[(near, 1), (far, 1)])).expect("an unroutable backend is no error");
            assert_eq!(r.added, 3);
            assert_eq!(w.unroutable(), vec![("a".to_string(), far.parse().unwrap()), ("c".to_string(), far.parse().unwrap())]);
            assert!(w.has_unroutable());
            let (va, ta) = live_table(&w, "a");
            assert_eq!(va.table_size, 251);
            assert!(ta.iter().all(|a| a == near), "only the routable backend in a's table");
            assert_eq!(live_table(&w, "c").0.table_size, 0, "no usable backend: no table (new flows rejected)");
            let fb = backend_of(&w, far);
            assert_eq!(fb.flags, BE_F_UNROUTABLE, "never active");
            assert!(unroutable_reason(&fb).unwrap().contains(&std::io::Error::from_raw_os_error(libc::ENETUNREACH).to_string()));
            assert_eq!(backend_of(&w, near).snat_addr, addr16("10.98.0.1".parse().unwrap()));
            // What `xlb backends` reads.
            let rows = crate::reader::services(&w.maps).expect("read");
            let a = rows.iter().find(|r| r.name == "a").unwrap();
            assert_eq!(a.backends, vec![near.to_string()], "services lists what is programmed");
            let states: Vec<(&str, &str, bool)> =
                a.backend_rows.iter().map(|b| (b.address.as_str(), b.state.as_str(), b.reason.is_some())).collect();
            assert_eq!(states.len(), 2);
            assert!(states.contains(&(near, "active", false)) && states.contains(&(far, "unroutable", true)), "{states:?}");

            // Nothing changed: a retry or a re-apply writes nothing.
            assert_eq!(w.retry_unroutable().unwrap(), 0);
            assert_eq!(w.apply(&state(&[(near, 1), (far, 1)])).unwrap(), ApplyReport { unchanged: 3, ..Default::default() });

            // A route appears: the retry programs it, in a and in c.
            ip(&["route", "add", "10.99.0.0/16", "dev", "d0"]);
            assert_eq!(w.retry_unroutable().unwrap(), 2);
            assert!(w.unroutable().is_empty() && !w.has_unroutable());
            let fb2 = backend_of(&w, far);
            assert_eq!((fb2.flags, fb2.snat_addr), (BE_F_ACTIVE, addr16("10.98.0.1".parse().unwrap())));
            assert_eq!(fb2.generation, fb.generation, "same slot, same generation: it never had flows");
            let (_, ta) = live_table(&w, "a");
            assert_eq!(ta, expected(&[(near, 1), (far, 1)], 251, 0));
            assert_eq!(live_table(&w, "c").1, vec![far.to_string(); 251]);

            // The route goes; the next apply takes the backend out again (a
            // new generation: its flows re-pick and never come back).
            let gens: HashMap<u32, u32> =
                w.services.values().filter(|p| p.name != "b").flat_map(|p| p.backends.values()).map(|(id, _)| (*id, w.backends[*id as usize].generation)).collect();
            ip(&["route", "del", "10.99.0.0/16", "dev", "d0"]);
            let r = w.apply(&state(&[(near, 1), (far, 1)])).unwrap();
            assert_eq!((r.updated, r.unchanged), (2, 1));
            let ids: Vec<u32> = w.services.values().flat_map(|p| p.unroutable.values().map(|u| u.id)).collect();
            assert_eq!(ids.len(), 2);
            for id in &ids {
                let b = w.backends[*id as usize];
                assert_eq!(b.flags, BE_F_UNROUTABLE);
                assert_eq!(b.generation, gens[id].wrapping_add(1), "a new generation");
                assert!(!w.free_backends.contains(id), "an unroutable backend keeps its slot");
            }
            assert!(live_table(&w, "a").1.iter().all(|a| a == near));

            // Restart on the pins: the unroutable slots are known again.
            drop(w);
            let mut w = writer(&pins, 1 << 16, 0);
            assert_eq!(w.unroutable().len(), 2);
            assert!(ids.iter().all(|id| !w.free_backends.contains(id)));
            w.apply(&state(&[(near, 1), (far, 1)])).unwrap();
            let again: BTreeSet<u32> = w.services.values().flat_map(|p| p.unroutable.values().map(|u| u.id)).collect();
            assert_eq!(again, ids.iter().copied().collect(), "same slots after the restart");

            // Removed from a, and c removed: the slots are free again.
            w.apply(&DesiredState { services: vec![snat_spec("a", 53, &[(near, 1)]), snat_spec("b", 54, &[("10.98.0.8:53", 1)])] })
                .unwrap();
            assert!(w.unroutable().is_empty());
            for id in &ids {
                assert_eq!(w.backends[*id as usize].flags, 0);
                assert_eq!(w.maps.backends.get(id, 0).unwrap().flags, 0, "written");
                assert!(w.free_backends.contains(id));
            }
        });
    }

    #[test]
    fn range_entries_mask_host_bits_and_keep_the_family() {
        let mut s = spec("a", 53, &[], None);
        s.source_ranges = ["10.1.2.3/16", "2001:db8::1/32", "192.0.2.1/32"].iter().map(|r| r.parse().unwrap()).collect();
        let e = range_entries(&s);
        let nets: Vec<String> = e.iter().map(|e| range_net(*e).unwrap().to_string()).collect();
        assert_eq!(nets, vec!["10.1.0.0/16", "192.0.2.1/32"]);
        assert!(e.contains(&(32 + 96 + 16, addr16("10.1.0.0".parse().unwrap()))));
        s.vip = "2001:db8::10".parse().unwrap();
        let e = range_entries(&s);
        assert_eq!(e.into_iter().collect::<Vec<_>>(), vec![(32 + 32, addr16("2001:db8::".parse().unwrap()))]);
    }

    #[test]
    fn full_array_is_refused_with_what_to_do() {
        if !bpf_available() {
            return;
        }
        let pins = Pins::new("full");
        let mut w = writer(&pins, 3000, 0);
        let one = [("10.1.0.1:53", 1)];
        let s = |name: &str, port, size| spec(name, port, &one, Some(size));
        w.apply(&DesiredState { services: vec![s("a", 1, 1021)] }).unwrap();
        let e = w.apply(&DesiredState { services: vec![s("a", 1, 1021), s("b", 2, 509)] }).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("service b: the lookup-table array is full"), "{m}");
        assert!(m.contains("lower maglev_table_size") && m.contains("--table-entries"), "{m}");
        // Nothing of b was programmed; a stays.
        assert_eq!(w.len(), 1);
        // Shrinking a makes room (its old pair is reused after the grace period).
        let r = w.apply(&DesiredState { services: vec![s("a", 1, 251), s("b", 2, 509)] }).unwrap();
        assert_eq!((r.added, r.updated), (1, 1));
        assert_eq!(live_table(&w, "b").0.table_size, 509);
    }
}
