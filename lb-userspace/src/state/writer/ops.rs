//! The apply step's vocabulary: one [`Op`] is one write to the maps, and a
//! [`MapOps`] performs it, either on the real (aya) maps (here) or on
//! [`MemoryMaps`](super::MemoryMaps), which records what it was asked to do
//! and makes no system call (the writer's testing mode, as Katran's
//! `KatranLb` has one). Restore from pins reads the maps through the same
//! trait.
use std::{
    collections::{BTreeSet, HashMap},
    sync::atomic::{fence, Ordering},
};

use aya::maps::{lpm_trie::Key, MapError};
use lb_common::{
    AffinityKey, Backend, Counter, L2Iface, RangeKey, Service, ServiceKey, ServiceSlot, AFFINITY_ENTRIES, MAX_BACKENDS,
};
use tracing::{debug, warn};

use super::{
    encode::{name_from, name_to, range_key},
    map_err, RangeEntry, WriteError,
};
use crate::bpf::maps::Maps;

/// One write to the maps, as the plan orders them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Zeroes a service's per-CPU counters (a new service id).
    ZeroServiceStats(u32),
    /// Zeroes a backend slot's per-CPU counters (a slot used before).
    ZeroBackendStats(u32),
    /// Writes a backend slot.
    SetBackend(u32, Backend),
    /// Writes a lookup table into the region at `offset` (only the entries
    /// that differ), then fences, so that the entries are visible before
    /// the service value that publishes them.
    WriteTable {
        /// First entry of the region in the array.
        offset: u32,
        /// The table, one backend id per entry.
        entries: Vec<u32>,
    },
    /// Adds a service's `XLB_RANGES` entry.
    AddRange(u32, RangeEntry),
    /// Deletes a service's `XLB_RANGES` entry (absent: nothing to do).
    DeleteRange(u32, RangeEntry),
    /// Writes a service id's name ("": none).
    SetName(u32, String),
    /// Writes a service value: the switch that publishes what came before.
    SetService(ServiceKey, Service),
    /// Writes a service id's slot in `XLB_SVC_SLOTS`.
    SetSlot(u32, ServiceSlot),
    /// Deletes a service value (absent: nothing to do).
    DeleteService(ServiceKey),
    /// Empties a service id's slot when it still holds `key`.
    ClearSlot(u32, ServiceKey),
    /// Sets a VIP's number of services in `XLB_VIPS`.
    SetVip([u8; 16], u32),
    /// Deletes a VIP from `XLB_VIPS` (absent: nothing to do).
    DeleteVip([u8; 16]),
    /// Writes a word of `XLB_PREFILTER` (its ready word included).
    SetPrefilter(u32, u64),
    /// Deletes the `XLB_AFFINITY` entries of these service ids.
    PurgeAffinity(BTreeSet<u32>),
    /// Adds a VIP to `XLB_ANNOUNCE` (its ARP/NDP is answered).
    Announce([u8; 16]),
    /// Deletes a VIP from `XLB_ANNOUNCE` (absent: nothing to do).
    Unannounce([u8; 16]),
    /// Writes an announce interface into `XLB_L2_IFACES`.
    SetL2Iface(u32, L2Iface),
    /// Deletes an interface from `XLB_L2_IFACES` (absent: nothing to do).
    DeleteL2Iface(u32),
    /// Writes `XLB_SETTINGS.flags` (`SETTINGS_F_*`), the rest kept.
    SetSettingsFlags(u32),
}

/// Performs [`Op`]s on a set of maps.
pub trait MapOps {
    /// Performs `op`. Returns how many entries it changed where that is
    /// counted: table entries that differed ([`Op::WriteTable`]), entries
    /// deleted ([`Op::DeleteRange`]: 0 or 1; [`Op::PurgeAffinity`]); 1
    /// otherwise.
    fn exec(&mut self, op: &Op) -> Result<usize, WriteError>;

    /// Entries of the lookup-table array.
    fn table_len(&self) -> u32;

    // Reads, for restore from pins (`MapWriter::restore`).

    /// Every slot of the backend array, in id order.
    fn read_backends(&self) -> Result<Vec<Backend>, WriteError>;

    /// Every service value, with its key.
    fn read_services(&self) -> Result<Vec<(ServiceKey, Service)>, WriteError>;

    /// The name of service id `id` ("" when none was written).
    fn read_name(&self, id: u32) -> Result<String, WriteError>;

    /// Service id `id`'s slot in `XLB_SVC_SLOTS`.
    fn read_slot(&self, id: u32) -> Result<ServiceSlot, WriteError>;

    /// Every `XLB_RANGES` entry, as (service id, entry).
    fn read_ranges(&self) -> Result<Vec<(u32, RangeEntry)>, WriteError>;

    /// Every VIP of `XLB_VIPS` with its number of services (an entry that
    /// cannot be read is left out: the next apply writes it again).
    fn read_vips(&self) -> HashMap<[u8; 16], u32>;

    /// The VIPs in `XLB_ANNOUNCE` (what a previous agent announced).
    fn read_announced(&self) -> BTreeSet<[u8; 16]>;

    /// The interfaces (ifindex) in `XLB_L2_IFACES` (a previous agent's
    /// announce interfaces included).
    fn read_l2_ifaces(&self) -> BTreeSet<u32>;

    /// The lookup-table entries `offset..offset + size`, if they lie within
    /// the array.
    fn read_table(&self, offset: u32, size: u32) -> Option<Vec<u32>>;
}

/// `Ok` also when the key was not there.
fn removed(r: Result<(), MapError>, map: &'static str) -> Result<usize, WriteError> {
    match r {
        Ok(()) => Ok(1),
        Err(MapError::KeyNotFound) => Ok(0),
        Err(e) => Err(map_err(map)(e)),
    }
}

impl MapOps for Maps {
    fn exec(&mut self, op: &Op) -> Result<usize, WriteError> {
        match op {
            Op::ZeroServiceStats(id) => {
                self.service_stats.set(*id, zero_counters()?, 0).map_err(map_err("service stats"))?;
            }
            Op::ZeroBackendStats(id) => {
                self.backend_stats.set(*id, zero_counters()?, 0).map_err(map_err("backend stats"))?;
            }
            Op::SetBackend(id, value) => self.backends.set(*id, value, 0).map_err(map_err("backends"))?,
            Op::WriteTable { offset, entries } => {
                let size = u32::try_from(entries.len()).expect("a table fits the array");
                let region = self.table.region(*offset, size).expect("pairs lie within the table array");
                let mut written = 0;
                for (slot, want) in region.slots().zip(entries) {
                    if slot.load(Ordering::Relaxed) != *want {
                        slot.store(*want, Ordering::Relaxed);
                        written += 1;
                    }
                }
                // The entries before the service value that publishes them.
                fence(Ordering::SeqCst);
                return Ok(written);
            }
            Op::AddRange(id, e) => self.ranges.insert(&range_key(*id, *e), 1, 0).map_err(map_err("source ranges"))?,
            Op::DeleteRange(id, e) => return removed(self.ranges.remove(&range_key(*id, *e)), "source ranges"),
            Op::SetName(id, name) => self.names.set(*id, name_to(name), 0).map_err(map_err("service names"))?,
            Op::SetService(key, value) => self.services.insert(key, value, 0).map_err(map_err("services"))?,
            Op::SetSlot(id, slot) => self.service_slots.set(*id, slot, 0).map_err(map_err("service slots"))?,
            Op::DeleteService(key) => return removed(self.services.remove(key), "services"),
            Op::ClearSlot(id, key) => {
                if self.service_slots.get(id, 0).is_ok_and(|sl| sl.key == *key) {
                    self.service_slots.set(*id, ServiceSlot::default(), 0).map_err(map_err("service slots"))?;
                }
            }
            Op::SetVip(vip, n) => self.vips.insert(vip, n, 0).map_err(map_err("vips"))?,
            Op::DeleteVip(vip) => return removed(self.vips.remove(vip), "vips"),
            Op::SetPrefilter(i, w) => self.prefilter.set(*i, w, 0).map_err(map_err("prefilter"))?,
            Op::PurgeAffinity(purge) => return Ok(purge_affinity(self, purge)),
            Op::Announce(vip) => self.announce.insert(vip, 1, 0).map_err(map_err(lb_common::names::ANNOUNCE))?,
            Op::Unannounce(vip) => return removed(self.announce.remove(vip), lb_common::names::ANNOUNCE),
            Op::SetL2Iface(i, v) => self.l2_ifaces.insert(i, v, 0).map_err(map_err(lb_common::names::L2_IFACES))?,
            Op::DeleteL2Iface(i) => return removed(self.l2_ifaces.remove(i), lb_common::names::L2_IFACES),
            Op::SetSettingsFlags(flags) => {
                let name = lb_common::names::SETTINGS;
                let current = self.settings.get(&0, 0).map_err(map_err(name))?;
                let new = lb_common::settings::Settings { flags: *flags, ..current };
                self.settings.set(0, new, 0).map_err(map_err(name))?;
            }
        }
        Ok(1)
    }

    fn table_len(&self) -> u32 {
        self.table.len()
    }

    fn read_backends(&self) -> Result<Vec<Backend>, WriteError> {
        (0..MAX_BACKENDS).map(|i| self.backends.get(&i, 0).map_err(map_err("backends"))).collect()
    }

    fn read_services(&self) -> Result<Vec<(ServiceKey, Service)>, WriteError> {
        self.services.iter().collect::<Result<_, _>>().map_err(map_err("services"))
    }

    fn read_name(&self, id: u32) -> Result<String, WriteError> {
        self.names.get(&id, 0).map(|n| name_from(&n)).map_err(map_err("service names"))
    }

    fn read_slot(&self, id: u32) -> Result<ServiceSlot, WriteError> {
        self.service_slots.get(&id, 0).map_err(map_err("service slots"))
    }

    fn read_ranges(&self) -> Result<Vec<(u32, RangeEntry)>, WriteError> {
        let keys: Vec<Key<RangeKey>> =
            self.ranges.keys().collect::<Result<_, _>>().map_err(map_err("source ranges"))?;
        Ok(keys.iter().map(|k| (u32::from_be_bytes(k.data().service), (k.prefix_len(), k.data().addr))).collect())
    }

    fn read_vips(&self) -> HashMap<[u8; 16], u32> {
        let keys: Vec<[u8; 16]> = self.vips.keys().filter_map(Result::ok).collect();
        keys.into_iter().filter_map(|vip| Some((vip, self.vips.get(&vip, 0).ok()?))).collect()
    }

    fn read_table(&self, offset: u32, size: u32) -> Option<Vec<u32>> {
        Some(self.table.region(offset, size)?.values().collect())
    }

    fn read_announced(&self) -> BTreeSet<[u8; 16]> {
        self.announce.keys().filter_map(Result::ok).collect()
    }

    fn read_l2_ifaces(&self) -> BTreeSet<u32> {
        self.l2_ifaces.keys().filter_map(Result::ok).collect()
    }
}

/// Per-CPU counters at zero, one per possible CPU.
fn zero_counters() -> Result<aya::maps::PerCpuValues<Counter>, WriteError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| WriteError::Cpus(e))?;
    aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(WriteError::Cpus)
}

/// Deletes the `XLB_AFFINITY` entries of the services in `purge` (one pass
/// over the table); returns how many. Failures are logged, not returned: an
/// entry left behind is ignored while its service has no affinity, and
/// never names a backend of another service (generations).
fn purge_affinity(maps: &mut Maps, purge: &BTreeSet<u32>) -> usize {
    // The data path adds and evicts entries meanwhile: bound the walk.
    let keys: Vec<AffinityKey> = maps
        .affinity
        .keys()
        .take(2 * AFFINITY_ENTRIES as usize)
        .filter_map(Result::ok)
        .filter(|k| purge.contains(&k.service_id))
        .collect();
    let mut deleted = 0;
    for k in keys {
        match maps.affinity.remove(&k) {
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
