//! The apply step: the writer plans each service ([`super::plan`]), then
//! performs the plan's ops in order through its [`MapOps`], recording in
//! its mirrors what each op wrote (so a failure halfway leaves them knowing
//! what the maps hold), and, once all are done, the service itself.
use std::time::Instant;

use lb_common::{prefilter::PREFILTER_READY, ServiceKey, BE_F_ACTIVE, BE_F_IN_USE, RANGE_ENTRIES, SVC_F_REPLY_NOTE};
use tracing::debug;

use super::{
    encode::{addr16, range_entries, service_key},
    ops::{MapOps, Op},
    plan::{self, BackendArray, Resolved, ServiceInput},
    regions::{Pair, GRACE},
    Change, MapWriter, WriteError,
};
use crate::{
    state::maglev,
    state::model::{ServiceSpec, SourceMode},
};

impl<M: MapOps> MapWriter<M> {
    /// Performs `ops` in order, keeping the mirrors in step with each one
    /// that succeeds; `key` is the service they belong to (its recorded
    /// source ranges follow). Returns the table entries written.
    pub(super) fn run(&mut self, key: Option<&ServiceKey>, ops: &[Op]) -> Result<usize, WriteError> {
        let mut table_written = 0;
        for op in ops {
            let n = self.maps.exec(op)?;
            match op {
                Op::SetBackend(id, value) => {
                    self.backends[*id as usize] = *value;
                    if value.flags & BE_F_IN_USE != 0 {
                        self.free_backends.remove(id);
                    } else {
                        self.free_backends.insert(*id);
                    }
                }
                Op::WriteTable { .. } => {
                    self.table_writes += n;
                    table_written += n;
                }
                Op::AddRange(_, e) => {
                    self.range_count += 1;
                    self.range_writes += 1;
                    // Recorded at once, so a failure below leaves the
                    // mirror knowing what the trie holds.
                    if let Some(p) = key.and_then(|k| self.services.get_mut(k)) {
                        p.ranges.insert(*e);
                    }
                }
                Op::DeleteRange(..) => {
                    self.range_count = self.range_count.saturating_sub(n);
                    self.range_writes += 1;
                }
                Op::SetVip(vip, n) => {
                    self.vips.insert(*vip, *n);
                }
                Op::DeleteVip(vip) => {
                    self.vips.remove(vip);
                }
                Op::SetPrefilter(i, w) if *i == PREFILTER_READY => self.prefilter_ready = *w != 0,
                Op::SetPrefilter(i, w) => self.prefilter[*i as usize] = *w,
                _ => {}
            }
        }
        Ok(table_written)
    }

    /// Deletes the `XLB_AFFINITY` entries of the services in `purge` (only
    /// when there is any); returns how many.
    pub(super) fn purge_affinity(&mut self) -> usize {
        if self.purge.is_empty() {
            return 0;
        }
        let purge = std::mem::take(&mut self.purge);
        // Failures are logged by the maps and never returned.
        self.maps.exec(&Op::PurgeAffinity(purge)).unwrap_or(0)
    }

    /// Keeps `XLB_VIPS` in step with the programmed services.
    pub(super) fn sync_vips(&mut self) -> Result<(), WriteError> {
        let ops = plan::vips(self.services.keys(), &self.vips);
        self.run(None, &ops).map(drop)
    }

    /// Brings `XLB_PREFILTER` to the programmed VIPs and active backends'
    /// addresses plus `vips` and `backends` (about to be programmed),
    /// writing only the words that differ, then sets its ready word.
    pub(super) fn sync_prefilter(&mut self, vips: &[[u8; 16]], backends: &[[u8; 16]]) -> Result<(), WriteError> {
        let ops = plan::prefilter(
            self.services.keys().map(|k| &k.addr).chain(vips),
            self.backends.iter().filter(|b| b.flags & BE_F_ACTIVE != 0).map(|b| &b.addr).chain(backends),
            &self.prefilter,
            self.prefilter_ready,
        );
        self.run(None, &ops).map(drop)
    }

    /// Returns retired pairs to the allocator: those older than [`GRACE`],
    /// or, with `wait`, all of them after sleeping out the youngest's grace.
    pub(super) fn reclaim(&mut self, wait: bool) {
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
        let need = 2 * u64::from(size);
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

    /// Plans and applies one service; `reply_note`: its replies can be told
    /// apart by the backend alone ([`crate::state::model::reply_note_services`]).
    pub(super) fn apply_service(&mut self, spec: &ServiceSpec, reply_note: bool) -> Result<Change, WriteError> {
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
                && (p.value.flags & SVC_F_REPLY_NOTE != 0) == reply_note
            {
                return Ok(Change::Unchanged);
            }
        }
        let old = self.services.get(&key).cloned();
        let id = match &old {
            Some(p) => p.value.id,
            None => self.free_services.first().copied().ok_or(WriteError::TooManyServices)?,
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
            return Err(WriteError::TooManyRanges {
                service: spec.name.clone(),
                adding,
                total: self.range_count + adding,
            });
        }
        let kept_pair = old.as_ref().and_then(|p| p.pair).filter(|p| p.size == size);
        let new_pair = if size > 0 && kept_pair.is_none() { Some(self.alloc_pair(&spec.name, size)?) } else { None };
        let input = ServiceInput {
            spec,
            resolved: &resolved,
            key,
            old: old.as_ref(),
            id,
            size,
            pair: kept_pair.or(new_pair),
            seed: self.seed,
            route_epoch: self.routes.epoch,
            reply_note,
        };
        let result = plan::service(&input, &BackendArray { slots: &self.backends, free: &self.free_backends })
            .and_then(|plan| {
                let written = self.run(Some(&key), &plan.ops)?;
                if let Some(Op::WriteTable { offset, entries }) =
                    plan.ops.iter().find(|op| matches!(op, Op::WriteTable { .. }))
                {
                    debug!(service = %spec.name, offset, size = entries.len(), written, "lookup table written");
                }
                Ok(plan)
            });
        let plan = match result {
            Ok(plan) => plan,
            Err(e) => {
                if let Some(p) = new_pair {
                    // Nothing refers to it yet.
                    self.regions.free(p.base, p.entries());
                }
                // Part of it may have been written: the next apply takes
                // the full path whatever the spec.
                if let Some(p) = self.services.get_mut(&key) {
                    p.spec = None;
                }
                return Err(e);
            }
        };
        if plan.purge_affinity {
            self.purge.insert(id);
        }
        // Regions no longer used: retire (reused after the grace period).
        if let Some(pair) = plan.retire {
            self.retire(pair);
        }
        self.free_services.remove(&id);
        self.services.insert(key, plan.programmed);
        Ok(match (old.is_some(), plan.changed) {
            (false, _) => Change::Added,
            (true, true) => Change::Updated,
            (true, false) => Change::Unchanged,
        })
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

    /// Plans and applies a service's removal.
    pub(super) fn remove_service(&mut self, key: &ServiceKey) -> Result<(), WriteError> {
        let Some(p) = self.services.remove(key) else { return Ok(()) };
        let ops = plan::removal(*key, &p, &self.backends);
        self.run(None, &ops)?;
        if let Some(pair) = p.pair {
            self.retire(pair);
        }
        if p.value.affinity_timeout != 0 {
            self.purge.insert(p.value.id);
        }
        // (Restored maps may, if corrupt, give two services one id.)
        if !self.services.values().any(|q| q.value.id == p.value.id) {
            self.free_services.insert(p.value.id);
        }
        debug!(service = %p.name, "service removed");
        Ok(())
    }
}
