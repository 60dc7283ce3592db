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
pub mod encode;
mod regions;
mod restore;
mod routes;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::atomic::{fence, Ordering},
    time::Instant,
};

use aya::maps::MapError;
use encode::unroutable_snat;
pub use encode::{
    addr16, ip_from16, name_from, name_to, range_entries, range_key, range_net, service_key, unroutable_reason, RangeEntry,
};
use lb_common::{
    AffinityKey, Backend, Counter, Service, ServiceKey, ServiceSlot, AFFINITY_ENTRIES, BE_F_ACTIVE, BE_F_UNROUTABLE,
    DEFAULT_TCP_TIMEOUT, DEFAULT_UDP_TIMEOUT, MAX_BACKENDS, MAX_SERVICES, RANGE_ENTRIES, SVC_F_IPV6, SVC_F_RANGES, SVC_F_SNAT,
    prefilter::{prefilter_bit_of, PREFILTER_BACKENDS, PREFILTER_ENTRIES, PREFILTER_READY, PREFILTER_VIPS},
};
pub use regions::{restore_regions, Pair, RegionAllocator, GRACE};
pub use routes::RouteChanges;
use routes::Routes;
use tracing::{debug, info, warn};

use crate::{
    maglev,
    maps::Maps,
    model::{DesiredState, ServiceSpec, SourceMode},
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
    purge: BTreeSet<u32>,
    /// Mirror of the `XLB_PREFILTER` words this writer wrote (zero: not
    /// written; a restored map may hold stale set bits, which only send
    /// packets down the full path), and whether its ready word is set.
    prefilter: Vec<u64>,
    prefilter_ready: bool,
}


impl MapWriter {
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

#[cfg(test)]
mod tests;
