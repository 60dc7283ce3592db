//! The map writer: the only writer of the configuration maps. It diffs a
//! desired state against what the maps hold and writes only the difference,
//! in an order that never lets a packet see a half-built service: backends
//! first, then the lookup table (into the region the service does not use),
//! then the service value that switches to it; removals in reverse.
//!
//! # Plan, then apply
//!
//! - `plan`: pure; a service's spec and what the maps hold of
//!   it (the writer's mirrors) → a list of [`Op`]s in that order.
//! - `apply`: performs the ops in order through a [`MapOps`] — the real
//!   maps ([`Maps`]) or [`MemoryMaps`], which makes no system call and
//!   records every op ([`MapWriter::in_memory`]) — keeping the mirrors in
//!   step with each op that succeeds.
//! - [`encode`]: addresses, keys, names and source-range entries, shared
//!   with `reader.rs`; `regions`: the table array's allocator; `memory`:
//!   the in-memory maps; `restore`: restore from pins, which reads and
//!   fixes the maps through [`MapOps`] too (so it runs on [`MemoryMaps`]:
//!   [`MapWriter::restore_in_memory`]); `routes`: route lookups and
//!   routing-change notifications (unroutable backends).
//!
//! # Lookup-table regions
//!
//! All services' Maglev tables live in one flat array, `XLB_TABLE` (Katran's
//! layout too), mapped into this process ([`crate::bpf::maps::Table`]) so that
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
mod announce;
mod apply;
pub mod encode;
mod ifaces;
mod memory;
pub mod ops;
mod plan;
mod regions;
mod restore;
mod routes;

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    time::Instant,
};

use aya::maps::MapError;
pub use encode::{
    addr16, ip_from16, name_from, name_to, range_entries, range_key, range_net, service_key, unroutable_reason,
    RangeEntry,
};
use lb_common::{
    settings::{Settings, SETTINGS_F_NOTES},
    Backend, ServiceKey, MAX_BACKENDS, MAX_SERVICES, RANGE_ENTRIES, SVC_F_REPLY_NOTE, SVC_F_SNAT,
};
pub use memory::MemoryMaps;
pub use ops::{MapOps, Op};
use plan::Programmed;
pub use regions::{restore_regions, Pair, RegionAllocator, GRACE};
pub use routes::RouteChanges;
use routes::Routes;

use crate::{
    bpf::maps::Maps,
    state::model::{reply_note_services, DesiredState, ServiceSpec, SourceMode},
};

/// A failure to program the maps.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A map operation failed.
    #[error("writing map {map}: {source}")]
    Map {
        /// The map (its name or what it holds).
        map: &'static str,
        /// The failure.
        #[source]
        source: MapError,
    },
    /// Adding an interface to the devmap, or removing it, failed.
    #[error("writing map XLB_TX_PORTS: {0}")]
    Devmap(#[source] aya::maps::xdp::XdpMapError),
    /// The number of possible CPUs (for per-CPU counters) is unknown.
    #[error("reading the CPU count: {0}")]
    Cpus(std::io::Error),
    /// The desired state breaks a rule across services (two with one
    /// vip, port and protocol, or one name): nothing is written.
    #[error("{0}; nothing was changed")]
    Invalid(#[from] crate::state::model::ModelError),
    /// More services than the data path holds.
    #[error("too many services: the data path holds at most {MAX_SERVICES}")]
    TooManyServices,
    /// More backends over all services than the data path holds.
    #[error("too many backends: the data path holds at most {MAX_BACKENDS} over all services")]
    TooManyBackends,
    /// No room in the lookup-table array for a service's pair of tables.
    #[error(
        "service {service}: the lookup-table array is full: its two tables of {size} entries need {need} \
         contiguous entries, but only {free} of {total} are free (largest free piece: {largest}); \
         lower maglev_table_size (of this or other services) or raise the agent's --table-entries"
    )]
    TableFull {
        /// The service's name.
        service: String,
        /// Entries of one of its tables (`maglev_table_size`).
        size: u32,
        /// Contiguous entries its pair needs.
        need: u64,
        /// Free entries in the array.
        free: u64,
        /// The largest free piece of the array.
        largest: u32,
        /// Entries of the array (`--table-entries`).
        total: u32,
    },
    /// More source-range entries over all services than the data path holds.
    #[error(
        "service {service}: too many source ranges: its {adding} new prefixes would make {total} over all services, \
         and the data path holds at most {RANGE_ENTRIES}; use fewer, wider source_ranges"
    )]
    TooManyRanges {
        /// The service's name.
        service: String,
        /// Prefixes the service would add.
        adding: usize,
        /// Prefixes over all services with them.
        total: usize,
    },
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> WriteError {
    move |source| WriteError::Map { map, source }
}
/// What an `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Services programmed that were not there.
    pub added: usize,
    /// Services whose programming changed.
    pub updated: usize,
    /// Services removed.
    pub removed: usize,
    /// Services already programmed as desired (nothing written).
    pub unchanged: usize,
    /// Lookup-table entries written (only those that differed).
    pub table_writes: usize,
    /// `XLB_RANGES` entries added or deleted.
    pub range_writes: usize,
    /// `XLB_AFFINITY` entries deleted (services removed or whose affinity
    /// was turned off).
    pub affinity_deleted: usize,
}

/// Owns the maps and knows what they hold. `M` is what performs the
/// writes: the real maps ([`Maps`], the default), or [`MemoryMaps`] (see
/// [`MapWriter::in_memory`]).
pub struct MapWriter<M: MapOps = Maps> {
    maps: M,
    services: HashMap<ServiceKey, Programmed>,
    /// Mirror of the backend array (generations survive deactivation).
    backends: Vec<Backend>,
    seed: u32,
    /// Free and used ranges of the table array.
    regions: RegionAllocator,
    /// Pairs given up, reusable after [`GRACE`].
    retired: Vec<(Pair, Instant)>,
    /// Table entries written by the current `apply`.
    table_writes: usize,
    /// Service ids not in use (lowest first).
    free_services: BTreeSet<u32>,
    /// Backend slots without a backend (lowest first): exactly the ids
    /// whose mirror entry has none of `BE_F_IN_USE` (active, unroutable,
    /// reject share).
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
    /// The VIPs asked to be announced ([`Self::set_announced`]); those of
    /// them that are programmed are in `XLB_ANNOUNCE`.
    announce_wanted: BTreeSet<[u8; 16]>,
    /// Mirror of `XLB_ANNOUNCE`.
    announced: BTreeSet<[u8; 16]>,
    /// Mirror of `XLB_SETTINGS.flags` (`SETTINGS_F_*`).
    settings_flags: u32,
    /// Mirror of `XLB_IFACES` (`ifaces`).
    ifaces: ifaces::IfaceCaps,
}

impl MapWriter {
    /// The data-path settings (`XLB_SETTINGS`), as pinned by an earlier
    /// agent or zeroed in a new map.
    pub fn settings(&self) -> Result<lb_common::settings::Settings, WriteError> {
        self.maps.settings.get(&0, 0).map_err(map_err(lb_common::names::SETTINGS))
    }

    /// Writes the data-path settings (`XLB_SETTINGS`) but their `flags`,
    /// which follow the services this writer programs ([`Self::apply`]).
    pub fn set_settings(&mut self, settings: lb_common::settings::Settings) -> Result<(), WriteError> {
        let flags = self.settings_flags;
        self.maps.settings.set(0, Settings { flags, ..settings }, 0).map_err(map_err(lb_common::names::SETTINGS))
    }
}

impl MapWriter<MemoryMaps> {
    /// A writer on empty in-memory maps with a table array of `table_len`
    /// entries: no system call, no root (routes are looked up, uncached,
    /// only for `source: snat` without `snat_address`). Its maps record
    /// every write in order ([`MemoryMaps::log`]).
    pub fn in_memory(table_len: u32, seed: u32) -> Self {
        Self::restore_in_memory(MemoryMaps::new(table_len), seed).expect("in-memory maps do not fail")
    }

    /// The in-memory maps (and their log of writes).
    pub fn memory(&mut self) -> &mut MemoryMaps {
        &mut self.maps
    }
}

impl<M: MapOps> MapWriter<M> {
    /// Sets or clears `bits` of `XLB_SETTINGS.flags` (the other fields as
    /// pinned); writes only on a change.
    fn set_settings_flags(&mut self, bits: u32, on: bool) -> Result<(), WriteError> {
        let flags = if on { self.settings_flags | bits } else { self.settings_flags & !bits };
        if flags != self.settings_flags {
            self.maps.exec(&Op::SetSettingsFlags(flags))?;
            self.settings_flags = flags;
        }
        Ok(())
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
    /// subscription to routing notifications; without one, a timer).
    pub fn route_changes(&self) -> RouteChanges {
        self.routes.changes()
    }

    /// Programs again every service with an unroutable backend whose routes
    /// may have changed since (see `Routes`); returns how many backends
    /// got a route and are now programmed. Nothing else is touched.
    pub fn retry_unroutable(&mut self) -> Result<usize, WriteError> {
        self.routes.refresh();
        let epoch = self.routes.epoch;
        // Each with its reply-note flag as programmed (the other services
        // did not change).
        let specs: Vec<(ServiceSpec, bool)> = self
            .services
            .values()
            .filter(|p| !p.unroutable.is_empty() && p.route_epoch != epoch)
            .filter_map(|p| Some((p.spec.clone()?, p.value.flags & SVC_F_REPLY_NOTE != 0)))
            .collect();
        if specs.is_empty() {
            return Ok(0);
        }
        let before = self.unroutable().len();
        self.reclaim(false);
        self.table_writes = 0;
        self.range_writes = 0;
        let backends: Vec<[u8; 16]> =
            specs.iter().flat_map(|(s, _)| s.backends.iter().map(|b| addr16(b.addr.ip()))).collect();
        self.sync_prefilter(&[], &backends)?;
        let mut first_error = None;
        for (spec, reply_note) in &specs {
            if let Err(e) = self.apply_service(spec, *reply_note) {
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

    /// Brings the maps to `desired`, writing only what differs. A desired
    /// state with two services on one (vip, port, protocol) or name
    /// ([`DesiredState::check_unique`]) is refused before anything is written.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, WriteError> {
        if desired.services.len() <= MAX_SERVICES as usize {
            desired.check_unique()?;
        }
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
        // Replies are looked for through the backends' notes from before
        // the first `source: preserve` service is written until after the
        // last one is gone (its flows may have been recorded without a
        // reverse entry).
        let preserve = desired.services.iter().any(|s| s.source == SourceMode::Preserve);
        if preserve {
            self.set_settings_flags(SETTINGS_F_NOTES, true)?;
        }
        let gone: Vec<ServiceKey> = self.services.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        for key in gone {
            self.remove_service(&key)?;
            report.removed += 1;
        }
        let noted = reply_note_services(&desired.services);
        // Deterministic order: by name.
        let mut specs: Vec<&ServiceSpec> = desired.services.iter().collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        // One service that cannot be programmed does not hold up the others.
        let mut first_error = None;
        for spec in specs {
            let change = self.apply_service(spec, noted.contains(spec.name.as_str()));
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
        self.sync_announced()?;
        self.sync_prefilter(&[], &[])?;
        // Only after a complete apply: a failed one may have left a value in
        // the maps that the mirror does not show.
        if first_error.is_none() && !preserve && !self.services.values().any(|p| p.value.flags & SVC_F_SNAT == 0) {
            self.set_settings_flags(SETTINGS_F_NOTES, false)?;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// What `apply` did to one service.
enum Change {
    Added,
    Updated,
    Unchanged,
}

#[cfg(test)]
mod tests;
