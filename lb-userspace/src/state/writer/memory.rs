//! [`MemoryMaps`]: the writer's maps held in memory, for tests of the plan,
//! the write order and restore from pins without root or a system call.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use lb_common::{
    prefilter::{PREFILTER_ENTRIES, PREFILTER_READY},
    AffinityKey, Backend, L2Iface, Service, ServiceKey, ServiceSlot, MAX_BACKENDS, MAX_SERVICES,
};

use super::{
    ops::{MapOps, Op},
    RangeEntry, WriteError,
};

/// Maps held in memory: what [`MapOps`] wrote, and every [`Op`] in the
/// order it came ([`Self::log`]). No system call, no root: for tests of the
/// writer's plan and write order.
#[derive(Clone, Debug)]
pub struct MemoryMaps {
    /// Every operation performed, in order.
    pub log: Vec<Op>,
    /// `XLB_SERVICES`: service values by key.
    pub services: HashMap<ServiceKey, Service>,
    /// `XLB_SVC_SLOTS`, by service id.
    pub service_slots: Vec<ServiceSlot>,
    /// `XLB_BACKENDS`, by backend id.
    pub backends: Vec<Backend>,
    /// `XLB_TABLE`: the lookup-table array.
    pub table: Vec<u32>,
    /// Service names by id (those written).
    pub names: BTreeMap<u32, String>,
    /// `XLB_RANGES`, as (service id, entry).
    pub ranges: BTreeSet<(u32, RangeEntry)>,
    /// `XLB_VIPS`: VIP → number of services on it.
    pub vips: HashMap<[u8; 16], u32>,
    /// `XLB_PREFILTER`'s words (the ready word included).
    pub prefilter: Vec<u64>,
    /// Session-affinity entries (the data path's, in real maps).
    pub affinity: HashSet<AffinityKey>,
    /// `XLB_ANNOUNCE`: the announced VIPs.
    pub announce: BTreeSet<[u8; 16]>,
    /// `XLB_L2_IFACES`: the announce interfaces.
    pub l2_ifaces: BTreeMap<u32, L2Iface>,
    /// `XLB_SETTINGS.flags`.
    pub settings_flags: u32,
}

impl MemoryMaps {
    /// Empty maps with a lookup-table array of `table_len` entries.
    pub fn new(table_len: u32) -> Self {
        Self {
            log: Vec::new(),
            services: HashMap::new(),
            service_slots: vec![ServiceSlot::default(); MAX_SERVICES as usize],
            backends: vec![Backend::default(); MAX_BACKENDS as usize],
            table: vec![0; table_len as usize],
            names: BTreeMap::new(),
            ranges: BTreeSet::new(),
            vips: HashMap::new(),
            prefilter: vec![0; PREFILTER_ENTRIES as usize],
            affinity: HashSet::new(),
            announce: BTreeSet::new(),
            l2_ifaces: BTreeMap::new(),
            settings_flags: 0,
        }
    }

    /// Whether the pre-filter's ready word is set.
    pub fn prefilter_ready(&self) -> bool {
        self.prefilter[PREFILTER_READY as usize] != 0
    }
}

impl MapOps for MemoryMaps {
    fn exec(&mut self, op: &Op) -> Result<usize, WriteError> {
        self.log.push(op.clone());
        let n = match op {
            Op::ZeroServiceStats(_) | Op::ZeroBackendStats(_) => 1,
            Op::SetBackend(id, value) => {
                self.backends[*id as usize] = *value;
                1
            }
            Op::WriteTable { offset, entries } => {
                let region = &mut self.table[*offset as usize..*offset as usize + entries.len()];
                let mut written = 0;
                for (slot, want) in region.iter_mut().zip(entries) {
                    if slot != want {
                        *slot = *want;
                        written += 1;
                    }
                }
                written
            }
            Op::AddRange(id, e) => {
                self.ranges.insert((*id, *e));
                1
            }
            Op::DeleteRange(id, e) => usize::from(self.ranges.remove(&(*id, *e))),
            Op::SetName(id, name) => {
                self.names.insert(*id, name.clone());
                1
            }
            Op::SetService(key, value) => {
                self.services.insert(*key, *value);
                1
            }
            Op::SetSlot(id, slot) => {
                self.service_slots[*id as usize] = *slot;
                1
            }
            Op::DeleteService(key) => usize::from(self.services.remove(key).is_some()),
            Op::ClearSlot(id, key) => {
                let slot = &mut self.service_slots[*id as usize];
                if slot.key == *key {
                    *slot = ServiceSlot::default();
                }
                1
            }
            Op::SetVip(vip, n) => {
                self.vips.insert(*vip, *n);
                1
            }
            Op::DeleteVip(vip) => usize::from(self.vips.remove(vip).is_some()),
            Op::SetPrefilter(i, w) => {
                self.prefilter[*i as usize] = *w;
                1
            }
            Op::PurgeAffinity(purge) => {
                let before = self.affinity.len();
                self.affinity.retain(|k| !purge.contains(&k.service_id));
                before - self.affinity.len()
            }
            Op::Announce(vip) => {
                self.announce.insert(*vip);
                1
            }
            Op::Unannounce(vip) => usize::from(self.announce.remove(vip)),
            Op::SetL2Iface(i, v) => {
                self.l2_ifaces.insert(*i, *v);
                1
            }
            Op::DeleteL2Iface(i) => usize::from(self.l2_ifaces.remove(i).is_some()),
            Op::SetSettingsFlags(flags) => {
                self.settings_flags = *flags;
                1
            }
        };
        Ok(n)
    }

    fn table_len(&self) -> u32 {
        self.table.len() as u32
    }

    fn read_backends(&self) -> Result<Vec<Backend>, WriteError> {
        Ok(self.backends.clone())
    }

    fn read_services(&self) -> Result<Vec<(ServiceKey, Service)>, WriteError> {
        Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn read_name(&self, id: u32) -> Result<String, WriteError> {
        Ok(self.names.get(&id).cloned().unwrap_or_default())
    }

    fn read_slot(&self, id: u32) -> Result<ServiceSlot, WriteError> {
        Ok(self.service_slots[id as usize])
    }

    fn read_ranges(&self) -> Result<Vec<(u32, RangeEntry)>, WriteError> {
        Ok(self.ranges.iter().copied().collect())
    }

    fn read_vips(&self) -> HashMap<[u8; 16], u32> {
        self.vips.clone()
    }

    fn read_announced(&self) -> BTreeSet<[u8; 16]> {
        self.announce.clone()
    }

    fn read_l2_ifaces(&self) -> BTreeSet<u32> {
        self.l2_ifaces.keys().copied().collect()
    }

    fn read_table(&self, offset: u32, size: u32) -> Option<Vec<u32>> {
        let end = (offset as usize).checked_add(size as usize)?;
        self.table.get(offset as usize..end).map(<[u32]>::to_vec)
    }
}
