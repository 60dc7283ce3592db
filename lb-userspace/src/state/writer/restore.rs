//! Restore from pins: a new writer reads back what a previous agent left
//! in the maps, so that an unchanged configuration rewrites nothing. It
//! reads and fixes the maps through [`MapOps`], as apply writes them, so it
//! runs on [`MemoryMaps`] too.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
};

use lb_common::{
    prefilter::PREFILTER_ENTRIES, settings::SETTINGS_F_NOTES, Service, ServiceKey, ServiceSlot, BE_F_ACTIVE,
    BE_F_IN_USE, BE_F_REJECT, BE_F_UNROUTABLE, MAX_SERVICES, SVC_F_SNAT,
};
use tracing::{debug, info, warn};

use super::{
    encode::{ip_from16, RangeEntry},
    ops::{MapOps, Op},
    plan::{Programmed, Reject, Unroutable},
    regions::restore_regions,
    routes::Routes,
    MapWriter, MemoryMaps, WriteError,
};
use crate::bpf::maps::Maps;

impl MapWriter {
    /// Takes the maps and reads back what a previous agent left in them, so
    /// that an unchanged configuration rewrites nothing and moves no flow.
    /// `seed` is the Maglev seed (`maglev_seed`), also the flow-hash seed.
    pub fn restore(maps: Maps, seed: u32) -> Result<Self, WriteError> {
        Self::restore_with(maps, seed, Routes::new())
    }
}

impl MapWriter<MemoryMaps> {
    /// [`MapWriter::restore`] on in-memory maps (no system call, routes
    /// looked up uncached as in [`MapWriter::in_memory`]): what a new agent
    /// would make of maps holding this. The fixes restore writes are in the
    /// maps' log.
    pub fn restore_in_memory(maps: MemoryMaps, seed: u32) -> Result<Self, WriteError> {
        Self::restore_with(maps, seed, Routes::unwatched())
    }
}

impl<M: MapOps> MapWriter<M> {
    /// Restore from `maps`, with `routes` to look up backends' routes.
    pub(super) fn restore_with(mut maps: M, seed: u32, routes: Routes) -> Result<Self, WriteError> {
        let mut backends = maps.read_backends()?;
        // Active (and unroutable) backends by service id, in one pass over the array.
        let mut by_service: HashMap<u32, BTreeMap<SocketAddr, (u32, u32)>> = HashMap::new();
        let mut unroutable_by_service: HashMap<u32, BTreeMap<SocketAddr, Unroutable>> = HashMap::new();
        // Reject shares by service id (the first slot of each: a second is
        // corrupt and freed below, with those of no service).
        let mut reject_by_service: HashMap<u32, Reject> = HashMap::new();
        let mut stray_rejects = Vec::new();
        for (id, b) in backends.iter().enumerate() {
            let addr = SocketAddr::new(ip_from16(b.addr), u16::from_be(b.port));
            if b.flags & BE_F_REJECT != 0 && b.flags & BE_F_ACTIVE == 0 {
                let r = Reject { id: id as u32, weight: b.weight };
                if b.weight == 0 || reject_by_service.contains_key(&b.service_id) {
                    stray_rejects.push(r.id);
                } else {
                    reject_by_service.insert(b.service_id, r);
                }
            } else if b.flags & BE_F_ACTIVE != 0 {
                by_service.entry(b.service_id).or_default().insert(addr, (id as u32, b.weight));
            } else if b.flags & BE_F_UNROUTABLE != 0 {
                unroutable_by_service
                    .entry(b.service_id)
                    .or_default()
                    .insert(addr, Unroutable { id: id as u32, warned: false });
            }
        }
        let mut found = Vec::new();
        for (key, value) in maps.read_services()? {
            let name = maps.read_name(value.id)?;
            let be = by_service.get(&value.id).cloned().unwrap_or_default();
            found.push((key, value, name, be));
        }
        // Deterministic claim order for overlapping (corrupt) regions.
        found.sort_by_key(|(_, v, _, _)| v.id);
        let live: Vec<(u32, u32)> = found.iter().map(|(_, v, _, _)| (v.table_offset, v.table_size)).collect();
        // Source ranges by service id; those of no service (left by an
        // agent stopped halfway through a removal) are deleted.
        sync_slots(&mut maps, &found)?;
        let mut ranges: HashMap<u32, BTreeSet<RangeEntry>> = HashMap::new();
        let ids: BTreeSet<u32> = found.iter().map(|(_, v, _, _)| v.id).collect();
        let mut range_count = 0;
        for (id, entry) in maps.read_ranges()? {
            if ids.contains(&id) {
                ranges.entry(id).or_default().insert(entry);
                range_count += 1;
            } else {
                debug!(service_id = id, "deleting a source range of no service");
                maps.exec(&Op::DeleteRange(id, entry))?;
            }
        }
        let (regions, pairs) = restore_regions(maps.table_len(), &live);
        let mut services = HashMap::new();
        for ((key, value, name, backends), pair) in found.into_iter().zip(pairs) {
            let table_ok = match pair {
                _ if value.table_size == 0 => true,
                None => {
                    warn!(
                        service = %name,
                        offset = value.table_offset,
                        size = value.table_size,
                        entries = maps.table_len(),
                        "the live lookup table lies outside the table array or overlaps another: rebuilding it"
                    );
                    false
                }
                Some(_) => {
                    let reject = reject_by_service.get(&value.id).map(|r| r.id);
                    let ids: BTreeSet<u32> =
                        backends.values().filter(|(_, w)| *w > 0).map(|(id, _)| *id).chain(reject).collect();
                    let ok = maps
                        .read_table(value.table_offset, value.table_size)
                        .is_some_and(|t| t.iter().all(|id| ids.contains(id)));
                    if !ok {
                        warn!(service = %name, "the live lookup table holds entries of no usable backend of the service: rebuilding it");
                    }
                    ok
                }
            };
            let ranges = ranges.remove(&value.id).unwrap_or_default();
            let unroutable = unroutable_by_service.remove(&value.id).unwrap_or_default();
            let reject = reject_by_service.remove(&value.id);
            services.insert(
                key,
                Programmed {
                    value,
                    name,
                    backends,
                    pair,
                    table_ok,
                    spec: None,
                    route_epoch: 0,
                    ranges,
                    unroutable,
                    reject,
                },
            );
        }
        if !services.is_empty() {
            info!(services = services.len(), "reusing pinned maps left by a previous agent");
        }
        let used: BTreeSet<u32> = services.values().map(|p| p.value.id).collect();
        let free_services = (0..MAX_SERVICES).filter(|i| !used.contains(i)).collect();
        // Unroutable backends of no service (an agent stopped halfway
        // through a removal): their slots are freed.
        // So are reject shares of no service, and a service's second one.
        let unroutable = unroutable_by_service.values().flat_map(|m| m.values().map(|u| u.id));
        let rejects = reject_by_service.values().map(|r| r.id).chain(stray_rejects);
        for id in unroutable.chain(rejects) {
            let mut b = backends[id as usize];
            b.flags &= !BE_F_IN_USE;
            maps.exec(&Op::SetBackend(id, b))?;
            backends[id as usize] = b;
        }
        let free_backends =
            backends.iter().enumerate().filter(|(_, b)| b.flags & BE_F_IN_USE == 0).map(|(i, _)| i as u32).collect();
        let vips = maps.read_vips();
        // What a previous agent announced stays announced until the
        // announcer says otherwise (no gap across a restart).
        let announced = maps.read_announced();
        // Replies through notes (restored preserve services) go on being
        // translated.
        let preserve = services.values().any(|p| p.value.flags & SVC_F_SNAT == 0);
        let settings_flags = if preserve { SETTINGS_F_NOTES } else { 0 };
        Self {
            maps,
            services,
            backends,
            seed,
            regions,
            retired: Vec::new(),
            table_writes: 0,
            free_services,
            free_backends,
            vips,
            routes,
            range_count,
            range_writes: 0,
            purge: BTreeSet::new(),
            prefilter: vec![0; PREFILTER_ENTRIES as usize],
            prefilter_ready: false,
            announce_wanted: announced.clone(),
            announced,
            settings_flags,
            ifaces: super::ifaces::IfaceCaps::default(),
        }
        .with_prefilter()
    }

    /// Fills the pre-filter from the restored state and marks it ready.
    fn with_prefilter(mut self) -> Result<Self, WriteError> {
        self.sync_prefilter(&[], &[])?;
        Ok(self)
    }
}

/// Makes `XLB_SVC_SLOTS` mirror the restored services: each one's slot,
/// every other slot empty (a slot left by an agent stopped halfway through a
/// removal, or a map created by this load, is fixed here).
fn sync_slots<M: MapOps, N, B>(maps: &mut M, found: &[(ServiceKey, Service, N, B)]) -> Result<(), WriteError> {
    let mut want = vec![ServiceSlot::default(); MAX_SERVICES as usize];
    for (key, value, _, _) in found {
        if let Some(w) = want.get_mut(value.id as usize) {
            *w = ServiceSlot { key: *key, _pad: 0, svc: *value };
        }
    }
    for (id, w) in want.into_iter().enumerate() {
        let id = id as u32;
        if maps.read_slot(id)? != w {
            maps.exec(&Op::SetSlot(id, w))?;
        }
    }
    Ok(())
}
