//! Restore from pins on the in-memory maps (no root): a writer restored from
//! what another wrote rewrites nothing for the same state, and fixes what an
//! agent stopped halfway left behind.
use lb_common::{Backend, ServiceKey, ServiceSlot, BE_F_UNROUTABLE};

use super::spec;
use crate::state::{
    model::{DesiredState, ServiceSpec},
    writer::{service_key, MapWriter, MemoryMaps, Op},
};

const SEED: u32 = 5;

fn key(s: &ServiceSpec) -> ServiceKey {
    service_key(s.vip, s.port, s.protocol)
}

/// Two services, one with source ranges, programmed on in-memory maps.
fn programmed() -> (DesiredState, MemoryMaps) {
    let mut a = spec("a", 53, &[("10.1.0.1:53", 1), ("10.1.0.2:53", 2)], Some(251));
    a.source_ranges = vec!["203.0.113.0/24".parse().unwrap(), "198.51.100.7/32".parse().unwrap()];
    let b = spec("b", 54, &[("10.1.0.3:54", 1)], Some(509));
    let state = DesiredState { services: vec![a, b] };
    let mut w = MapWriter::in_memory(1 << 14, SEED);
    let r = w.apply(&state).expect("apply");
    assert_eq!(r.added, 2);
    let mut maps = w.memory().clone();
    maps.log.clear();
    (state, maps)
}

/// The log without the pre-filter's words.
fn writes(maps: &mut MemoryMaps) -> Vec<Op> {
    std::mem::take(&mut maps.log).into_iter().filter(|op| !matches!(op, Op::SetPrefilter(..))).collect()
}

#[test]
fn restored_writer_rewrites_nothing_for_the_same_state() {
    let (state, maps) = programmed();
    let mut w = MapWriter::restore_in_memory(maps, SEED).expect("restore");
    assert_eq!(w.len(), 2, "both services read back");
    assert_eq!(writes(w.memory()), [], "restoring consistent maps fixes nothing");
    let r = w.apply(&state).expect("apply");
    assert_eq!((r.added, r.updated, r.removed, r.unchanged), (0, 0, 0, 2), "{r:?}");
    assert_eq!((r.table_writes, r.range_writes), (0, 0), "{r:?}");
    assert_eq!(writes(w.memory()), [], "an unchanged state writes nothing after a restore");
}

#[test]
fn restored_writer_knows_ids_and_regions_in_use() {
    let (state, maps) = programmed();
    let ids: Vec<u32> = state.services.iter().map(|s| maps.services[&key(s)].id).collect();
    let mut w = MapWriter::restore_in_memory(maps, SEED).expect("restore");
    let fresh = MapWriter::in_memory(1 << 14, SEED);
    assert_eq!(w.table_free(), fresh.table_free() - 2 * (251 + 509), "both pairs held");
    // A new service gets an id and backend slots no restored one holds, and
    // a region that overlaps neither restored table.
    let mut more = state.clone();
    more.services.push(spec("c", 55, &[("10.1.0.4:55", 1)], Some(251)));
    w.apply(&more).expect("apply");
    let c = w.memory().services[&key(&more.services[2])];
    assert!(!ids.contains(&c.id), "new id {} not one of {ids:?}", c.id);
    for s in &state.services {
        let v = w.memory().services[&key(s)];
        let (a, b) = (u64::from(v.table_offset), u64::from(c.table_offset));
        let (sa, sb) = (u64::from(v.table_size), u64::from(c.table_size));
        assert!(a + sa <= b || b + sb <= a, "live tables of {} and c overlap: {v:?} {c:?}", s.name);
    }
    let active = w.memory().backends.iter().filter(|b| b.flags & lb_common::BE_F_ACTIVE != 0).count();
    assert_eq!(active, 4, "the three restored backends kept, one new");
}

#[test]
fn restore_fixes_what_a_stopped_agent_left() {
    let (state, mut maps) = programmed();
    // A slot of no service, a source range of no service, and an unroutable
    // backend of no service: an agent stopped halfway through a removal.
    let stale = ServiceSlot { key: key(&state.services[0]), ..ServiceSlot::default() };
    maps.service_slots[100] = stale;
    let range = (120, [0xfe; 16]);
    maps.ranges.insert((200, range));
    let orphan = Backend { flags: BE_F_UNROUTABLE, service_id: 99, generation: 3, ..Backend::default() };
    maps.backends[500] = orphan;
    let mut w = MapWriter::restore_in_memory(maps, SEED).expect("restore");
    let fixes = writes(w.memory());
    assert!(fixes.contains(&Op::SetSlot(100, ServiceSlot::default())), "{fixes:?}");
    assert!(fixes.contains(&Op::DeleteRange(200, range)), "{fixes:?}");
    assert!(fixes.contains(&Op::SetBackend(500, Backend { flags: 0, ..orphan })), "{fixes:?}");
    assert_eq!(fixes.len(), 3, "nothing else written: {fixes:?}");
    let m = w.memory();
    assert_eq!(m.service_slots[100], ServiceSlot::default());
    assert!(!m.ranges.contains(&(200, range)));
    assert_eq!(m.backends[500].generation, 3, "the freed slot keeps its generation");
    let r = w.apply(&state).expect("apply");
    assert_eq!(r.unchanged, 2, "the services themselves were intact: {r:?}");
}

#[test]
fn live_table_with_foreign_entries_is_rebuilt() {
    let (state, mut maps) = programmed();
    let a = maps.services[&key(&state.services[0])];
    let foreign = 4000;
    maps.table[a.table_offset as usize + 7] = foreign;
    let mut w = MapWriter::restore_in_memory(maps, SEED).expect("restore");
    let r = w.apply(&state).expect("apply");
    assert!(r.table_writes > 0, "the corrupt table is written again: {r:?}");
    let m = w.memory();
    let a = m.services[&key(&state.services[0])];
    let ids: Vec<u32> = m
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.service_id == a.id && b.weight > 0)
        .map(|(i, _)| i as u32)
        .collect();
    let live = &m.table[a.table_offset as usize..(a.table_offset + a.table_size) as usize];
    assert!(live.iter().all(|id| ids.contains(id)), "live table holds only a's backends {ids:?}");
}
