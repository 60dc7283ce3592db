//! The plan: from a service's spec and what the maps hold of it, the list
//! of [`Op`]s that brings the maps there, in the order that never lets a
//! packet see a half-built service. Pure: no map is read or written here
//! (the writer's mirrors are the input), so the order is unit-tested
//! without root.
//!
//! A service's ops, in order:
//! 1. its counters zeroed (a new service), backends added or changed
//!    (unroutable ones written inactive), its reject share's slot;
//! 2. its lookup table, when its inputs changed, into the region the live
//!    value does not name;
//! 3. new source ranges, its name, then the service value and its slot:
//!    the switch; then the source ranges that went;
//! 4. backends that left or lost their route, and a reject share no longer
//!    wanted, deactivated.
//!
//! A removal is the other way round: the service value first, then its
//! slot, source ranges, backends and name.
//!
//! # The reject share
//!
//! A service with `reject_weight` above 0 and a table (some usable
//! backend) holds one more backend slot: flags [`BE_F_REJECT`] (never
//! active), address and port zero, its `weight` the reject weight, and its
//! id in the table as the Maglev entry [`maglev::reject_entry`]. A new flow
//! whose pick lands there is rejected by the data path as for a service
//! without a usable backend. The slot is kept (same id) while the share
//! stays, written like a backend (before the table that names it, freed
//! after the switch away from it), so restore reads the weight back from
//! it. A service without a usable backend has no table and no slot: it
//! rejects every new flow anyway.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use lb_common::{
    prefilter::{prefilter_bit_of, PREFILTER_BACKENDS, PREFILTER_ENTRIES, PREFILTER_READY, PREFILTER_VIPS},
    Backend, Service, ServiceKey, ServiceSlot, BE_F_ACTIVE, BE_F_IN_USE, BE_F_REJECT, BE_F_UNROUTABLE,
    DEFAULT_TCP_TIMEOUT, DEFAULT_UDP_TIMEOUT, SVC_F_IPV6, SVC_F_RANGES, SVC_F_REPLY_NOTE, SVC_F_SNAT, SVC_F_UNTRACKED,
};
use tracing::{debug, info, warn};

use super::{
    encode::{addr16, range_entries, unroutable_snat, RangeEntry},
    ops::Op,
    regions::Pair,
    WriteError,
};
use crate::{
    state::maglev,
    state::model::{FlowTracking, ServiceSpec, SourceMode},
};

/// One service as it sits in the maps.
#[derive(Clone, Debug)]
pub(super) struct Programmed {
    pub(super) value: Service,
    pub(super) name: String,
    /// Active backends: address → (id, weight).
    pub(super) backends: BTreeMap<SocketAddr, (u32, u32)>,
    /// The regions of its table (`None` when `table_size` is 0, or when a
    /// restored value named no valid pair).
    pub(super) pair: Option<Pair>,
    /// The live table is the one its backends, size and seed give (false:
    /// rebuild it on the next apply).
    pub(super) table_ok: bool,
    /// The spec it was programmed from (`None` when restored from the
    /// maps), and the routes epoch its SNAT addresses were resolved in:
    /// while both still hold, `apply` skips the service without looking
    /// further.
    pub(super) spec: Option<ServiceSpec>,
    pub(super) route_epoch: u64,
    /// Its entries in `XLB_RANGES`.
    pub(super) ranges: BTreeSet<RangeEntry>,
    /// Backends without a route (written with [`BE_F_UNROUTABLE`], in no
    /// table): address → slot.
    pub(super) unroutable: BTreeMap<SocketAddr, Unroutable>,
    /// Its reject share's slot (see the module documentation).
    pub(super) reject: Option<Reject>,
}

/// A service's reject share: a backend slot marked [`BE_F_REJECT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reject {
    /// Its slot in the backend array (its id in the table).
    pub(super) id: u32,
    /// Its weight (`reject_weight`), above 0.
    pub(super) weight: u32,
}

/// A backend slot held by a backend the node has no route to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Unroutable {
    pub(super) id: u32,
    /// Its warning was logged (once per backend while it stays unroutable).
    pub(super) warned: bool,
}

/// The SNAT source address of each backend of a service (zeros for
/// `source: preserve`), or the error of its route lookup.
pub(super) type Resolved = Vec<Result<[u8; 16], std::io::Error>>;

/// What the plan of one service starts from, besides the backend array.
pub(super) struct ServiceInput<'a> {
    pub(super) spec: &'a ServiceSpec,
    /// Per backend of `spec`, in order.
    pub(super) resolved: &'a Resolved,
    pub(super) key: ServiceKey,
    /// What the maps hold of it.
    pub(super) old: Option<&'a Programmed>,
    /// Its service id (kept, or the lowest free one).
    pub(super) id: u32,
    /// Its table's size (0: no usable backend, no table) and regions.
    pub(super) size: u32,
    pub(super) pair: Option<Pair>,
    pub(super) seed: u32,
    pub(super) route_epoch: u64,
    /// Its replies can be told apart by the backend alone: flagged
    /// [`SVC_F_REPLY_NOTE`] (tracked `source: preserve` only).
    pub(super) reply_note: bool,
}

/// What the writer knows of the backend array.
pub(super) struct BackendArray<'a> {
    /// Mirror of every slot (generations survive deactivation).
    pub(super) slots: &'a [Backend],
    /// Slots without a backend.
    pub(super) free: &'a BTreeSet<u32>,
}

/// The plan of one service, and what the writer records once it is done.
#[derive(Debug)]
pub(super) struct ServicePlan {
    pub(super) ops: Vec<Op>,
    /// The service as the maps hold it after the ops.
    pub(super) programmed: Programmed,
    /// Whether any op changes what the data path sees of it.
    pub(super) changed: bool,
    /// Its affinity was turned off: delete its `XLB_AFFINITY` entries.
    pub(super) purge_affinity: bool,
    /// Regions it no longer uses.
    pub(super) retire: Option<Pair>,
}

/// Plans one service (see the module documentation for the order).
pub(super) fn service(input: &ServiceInput<'_>, array: &BackendArray<'_>) -> Result<ServicePlan, WriteError> {
    let ServiceInput { spec, resolved, key, old, id, size, pair, seed, route_epoch, reply_note } = *input;
    let ranges = range_entries(spec);
    let mut ops = Vec::new();
    // Slots written by this plan, over the mirror.
    let mut written: BTreeMap<u32, Backend> = BTreeMap::new();
    let slot =
        |written: &BTreeMap<u32, Backend>, bid: u32| written.get(&bid).copied().unwrap_or(array.slots[bid as usize]);
    if old.is_none() {
        ops.push(Op::ZeroServiceStats(id));
    }

    // 1. Backends: keep the ids of those that remain, add new ones; those
    //    without a route are written unroutable (inactive).
    let mut backends = BTreeMap::new();
    let mut unroutable = BTreeMap::new();
    let mut taken = BTreeSet::new();
    let mut changed = false;
    // Active backends that lost their route: written in 4, after the table
    // that no longer holds them.
    let mut lost_route = Vec::new();
    for (b, snat) in spec.backends.iter().zip(resolved) {
        let was_active = old.and_then(|p| p.backends.get(&b.addr)).map(|(id, _)| *id);
        let was_unroutable = old.and_then(|p| p.unroutable.get(&b.addr)).copied();
        let existing = was_active.or(was_unroutable.map(|u| u.id));
        let (bid, generation) = match existing {
            // Active → unroutable: a new generation, so that its flows
            // (re-picked now) never come back to it.
            Some(bid) if was_active.is_some() && snat.is_err() => (bid, slot(&written, bid).generation.wrapping_add(1)),
            Some(bid) => (bid, slot(&written, bid).generation),
            None => {
                let bid =
                    array.free.iter().find(|i| !taken.contains(*i)).copied().ok_or(WriteError::TooManyBackends)?;
                (bid, slot(&written, bid).generation.wrapping_add(1))
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
            weight: u32::from(b.weight),
            snat_addr,
        };
        if was_active.is_some() && snat.is_err() {
            lost_route.push((bid, value));
        } else if slot(&written, bid) != value {
            // A slot never used (generation 0) has never been counted.
            if existing.is_none() && slot(&written, bid).generation != 0 {
                ops.push(Op::ZeroBackendStats(bid));
            }
            ops.push(Op::SetBackend(bid, value));
            written.insert(bid, value);
            changed = true;
        }
        match snat {
            Ok(_) => {
                if was_unroutable.is_some() {
                    info!(service = %spec.name, backend = %b.addr, "backend has a route now: programmed");
                }
                backends.insert(b.addr, (bid, u32::from(b.weight)));
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

    // The reject share's slot: only in a table (without a usable backend
    // every new flow is rejected anyway).
    let reject = match (pair, spec.reject_weight) {
        (Some(_), weight) if weight > 0 => {
            let (bid, generation) = if let Some(r) = old.and_then(|p| p.reject) {
                (r.id, slot(&written, r.id).generation)
            } else {
                let bid =
                    array.free.iter().find(|i| !taken.contains(*i)).copied().ok_or(WriteError::TooManyBackends)?;
                (bid, slot(&written, bid).generation.wrapping_add(1))
            };
            taken.insert(bid);
            let value = Backend { flags: BE_F_REJECT, service_id: id, generation, weight, ..Backend::default() };
            if slot(&written, bid) != value {
                ops.push(Op::SetBackend(bid, value));
                written.insert(bid, value);
                changed = true;
            }
            Some(Reject { id: bid, weight })
        }
        _ => None,
    };

    // 2. The lookup table, when its inputs (backends and weights, reject
    //    share, size, seed) changed: into the region not in use.
    let unchanged = old.is_some_and(|p| {
        p.table_ok
            && p.backends == backends
            && p.reject == reject
            && p.value.table_size == size
            && p.value.hash_seed == seed
            && (size == 0 || p.pair == pair)
    });
    let table_offset = match (pair, old) {
        (None, _) => 0,
        (Some(_), Some(p)) if unchanged => p.value.table_offset,
        (Some(pair), _) => {
            let target = match old {
                Some(p) if p.pair == Some(pair) => pair.twin(p.value.table_offset),
                _ => pair.base,
            };
            let entries: Vec<maglev::Entry> = backends
                .iter()
                .map(|(addr, (bid, w))| maglev::Entry { name: addr.to_string(), id: *bid, weight: *w })
                .chain(reject.map(|r| maglev::reject_entry(r.id, r.weight)))
                .collect();
            let mut table = Vec::new();
            maglev::build_into(&entries, size, seed, &mut table);
            ops.push(Op::WriteTable { offset: target, entries: table });
            target
        }
    };
    let table_size = if pair.is_some() { size } else { 0 };

    // 3. New source ranges, before the service value that may set the
    //    flag; then the service value, which switches the data path over.
    let empty = BTreeSet::new();
    let old_ranges = old.map_or(&empty, |p| &p.ranges);
    let added: Vec<RangeEntry> = ranges.difference(old_ranges).copied().collect();
    let gone: Vec<RangeEntry> = old_ranges.difference(&ranges).copied().collect();
    changed |= !added.is_empty();
    ops.extend(added.iter().map(|e| Op::AddRange(id, *e)));
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
    if spec.flow_tracking == FlowTracking::None {
        flags |= SVC_F_UNTRACKED;
    } else if reply_note && spec.source == SourceMode::Preserve {
        flags |= SVC_F_REPLY_NOTE;
    }
    let value = Service {
        id,
        flags,
        table_offset,
        table_size,
        udp_timeout: spec.udp_timeout.unwrap_or(DEFAULT_UDP_TIMEOUT),
        tcp_timeout: spec.tcp_timeout.unwrap_or(DEFAULT_TCP_TIMEOUT),
        hash_seed: seed,
        affinity_timeout: spec.affinity_timeout.unwrap_or(0),
    };
    if old.map(|p| p.name.as_str()) != Some(spec.name.as_str()) {
        ops.push(Op::SetName(id, spec.name.clone()));
        changed = true;
    }
    if old.map(|p| p.value) != Some(value) {
        ops.push(Op::SetService(key, value));
        ops.push(Op::SetSlot(id, ServiceSlot { key, _pad: 0, svc: value }));
        changed = true;
    }
    // Prefixes that went, after the value (which no longer has the flag
    // when none is left).
    changed |= !gone.is_empty();
    ops.extend(gone.iter().map(|e| Op::DeleteRange(id, *e)));
    let purge_affinity = old.is_some_and(|p| p.value.affinity_timeout != 0) && value.affinity_timeout == 0;

    // 4. Backends that left, or lost their route, and a reject share no
    //    longer wanted: deactivate (their flows re-pick on their next packet).
    for (bid, value) in lost_route {
        ops.push(Op::SetBackend(bid, value));
        written.insert(bid, value);
        changed = true;
    }
    if let Some(p) = old {
        let left = p.backends.iter().map(|(a, (bid, _))| (a, *bid)).chain(p.unroutable.iter().map(|(a, u)| (a, u.id)));
        for (addr, bid) in left {
            if !backends.contains_key(addr) && !unroutable.contains_key(addr) {
                let mut b = slot(&written, bid);
                b.flags &= !BE_F_IN_USE;
                ops.push(Op::SetBackend(bid, b));
                written.insert(bid, b);
                changed = true;
                debug!(service = %spec.name, backend = %addr, "backend removed");
            }
        }
        if let Some(r) = p.reject.filter(|r| reject.map(|n| n.id) != Some(r.id)) {
            let mut b = slot(&written, r.id);
            b.flags &= !BE_F_IN_USE;
            ops.push(Op::SetBackend(r.id, b));
            written.insert(r.id, b);
            changed = true;
            debug!(service = %spec.name, "reject share removed");
        }
    }

    // 5. Regions no longer used: retired by the writer.
    let retire = old.and_then(|p| p.pair).filter(|op| Some(*op) != pair);
    let programmed = Programmed {
        value,
        name: spec.name.clone(),
        backends,
        pair,
        table_ok: true,
        spec: Some(spec.clone()),
        route_epoch,
        ranges,
        unroutable,
        reject,
    };
    Ok(ServicePlan { ops, programmed, changed, purge_affinity, retire })
}

/// Plans a service's removal: its value first (its flows then find
/// nothing), its slot, source ranges, backends (deactivated, generations
/// kept) and name.
pub(super) fn removal(key: ServiceKey, p: &Programmed, slots: &[Backend]) -> Vec<Op> {
    let id = p.value.id;
    let mut ops = vec![Op::DeleteService(key), Op::ClearSlot(id, key)];
    ops.extend(p.ranges.iter().map(|e| Op::DeleteRange(id, *e)));
    let backends = p.backends.values().map(|(bid, _)| *bid).chain(p.unroutable.values().map(|u| u.id));
    for bid in backends.chain(p.reject.map(|r| r.id)) {
        let mut b = slots[bid as usize];
        b.flags &= !BE_F_IN_USE;
        ops.push(Op::SetBackend(bid, b));
    }
    ops.push(Op::SetName(id, String::new()));
    ops
}

/// Plans `XLB_VIPS` (VIP → number of services on it; the data path answers
/// pings to these) for the programmed services' keys, given what it holds.
pub(super) fn vips<'a>(keys: impl Iterator<Item = &'a ServiceKey>, held: &HashMap<[u8; 16], u32>) -> Vec<Op> {
    let mut wanted: HashMap<[u8; 16], u32> = HashMap::new();
    for key in keys {
        *wanted.entry(key.addr).or_default() += 1;
    }
    let mut ops: Vec<Op> = held.keys().filter(|v| !wanted.contains_key(*v)).map(|v| Op::DeleteVip(*v)).collect();
    ops.extend(wanted.into_iter().filter(|(v, n)| held.get(v) != Some(n)).map(|(v, n)| Op::SetVip(v, n)));
    ops
}

/// Plans `XLB_PREFILTER` for these VIPs and backend addresses, given the
/// words it holds (`held`, by index) and whether its ready word is set:
/// the words that differ, then the ready word.
pub(super) fn prefilter<'a>(
    vips: impl Iterator<Item = &'a [u8; 16]>,
    backends: impl Iterator<Item = &'a [u8; 16]>,
    held: &[u64],
    ready: bool,
) -> Vec<Op> {
    let mut want = vec![0u64; PREFILTER_ENTRIES as usize];
    let mut set = |base: u32, a: &[u8; 16]| {
        let (w, m) = prefilter_bit_of(a);
        want[(base + w) as usize] |= m;
    };
    vips.for_each(|a| set(PREFILTER_VIPS, a));
    backends.for_each(|a| set(PREFILTER_BACKENDS, a));
    let mut ops: Vec<Op> = (0..PREFILTER_READY)
        .filter(|i| held[*i as usize] != want[*i as usize])
        .map(|i| Op::SetPrefilter(i, want[i as usize]))
        .collect();
    if !ready {
        ops.push(Op::SetPrefilter(PREFILTER_READY, 1));
    }
    ops
}
