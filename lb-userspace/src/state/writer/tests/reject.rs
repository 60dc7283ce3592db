//! The reject share on the in-memory maps (no root): its slot, its share of
//! the table, the write order around it, its removal, and restore.
use lb_common::{Backend, ServiceKey, BE_F_ACTIVE, BE_F_REJECT};

use super::spec;
use crate::state::{
    maglev,
    model::{DesiredState, ServiceSpec},
    writer::{service_key, MapWriter, MemoryMaps, Op},
};

const SEED: u32 = 9;
const THREE: [(&str, u16); 3] = [("10.1.0.1:53", 70), ("10.1.0.2:53", 70), ("10.1.0.3:53", 70)];

fn key(s: &ServiceSpec) -> ServiceKey {
    service_key(s.vip, s.port, s.protocol)
}

fn state(specs: Vec<ServiceSpec>) -> DesiredState {
    DesiredState { services: specs }
}

/// Three backends of weight 70 and a reject share of `weight`.
fn with_reject(weight: u32) -> ServiceSpec {
    ServiceSpec { reject_weight: weight, ..spec("gw", 53, &THREE, Some(4093)) }
}

/// The log since the last call, without the pre-filter's words.
fn take(w: &mut MapWriter<MemoryMaps>) -> Vec<Op> {
    std::mem::take(&mut w.memory().log).into_iter().filter(|op| !matches!(op, Op::SetPrefilter(..))).collect()
}

fn position(ops: &[Op], what: &str, f: impl Fn(&Op) -> bool) -> usize {
    ops.iter().position(f).unwrap_or_else(|| panic!("no {what} in {ops:#?}"))
}

/// The reject slots in the backend array: (id, value).
fn reject_slots(m: &MemoryMaps) -> Vec<(u32, Backend)> {
    m.backends.iter().enumerate().filter(|(_, b)| b.flags & BE_F_REJECT != 0).map(|(i, b)| (i as u32, *b)).collect()
}

/// The live table of `s`.
fn live(m: &MemoryMaps, s: &ServiceSpec) -> Vec<u32> {
    let v = m.services[&key(s)];
    m.table[v.table_offset as usize..(v.table_offset + v.table_size) as usize].to_vec()
}

#[test]
fn reject_share_is_a_slot_written_before_the_table_that_names_it() {
    let mut w = MapWriter::in_memory(1 << 16, SEED);
    let s = with_reject(90);
    w.memory().log.clear();
    w.apply(&state(vec![s.clone()])).unwrap();
    let ops = take(&mut w);
    let m = w.memory().clone();
    let id = m.services[&key(&s)].id;
    let rejects = reject_slots(&m);
    assert_eq!(rejects.len(), 1, "one reject slot: {rejects:?}");
    let (rid, rv) = rejects[0];
    assert_eq!(rv, Backend { flags: BE_F_REJECT, service_id: id, generation: 1, weight: 90, ..Backend::default() });
    assert_eq!(rv.flags & BE_F_ACTIVE, 0, "never active: a data path rejects on it");
    // Its slot, then the table holding it, then the switch.
    let slot =
        position(&ops, "reject slot", |op| matches!(op, Op::SetBackend(i, v) if *i == rid && v.flags == BE_F_REJECT));
    let table = position(&ops, "table", |op| matches!(op, Op::WriteTable { .. }));
    let value = position(&ops, "service value", |op| matches!(op, Op::SetService(..)));
    assert!(slot < table && table < value, "{ops:#?}");
    // 90 / (3·70 + 90) = 30 % of the slots.
    let t = live(&m, &s);
    let share = t.iter().filter(|i| **i == rid).count() as f64 / t.len() as f64;
    assert!((share - 0.3).abs() < 0.01, "reject share {share}");
    for (addr, _) in THREE {
        let bid = m.backends.iter().position(|b| {
            b.flags == BE_F_ACTIVE && b.port == 53u16.to_be() && {
                crate::state::writer::ip_from16(b.addr).to_string() + ":53" == addr
            }
        });
        let bid = bid.unwrap_or_else(|| panic!("no backend {addr}")) as u32;
        let got = t.iter().filter(|i| **i == bid).count() as f64 / t.len() as f64;
        assert!((got - 0.7 / 3.0).abs() < 0.01, "{addr}: {got}");
    }
    // Exactly the table Maglev builds with the reject entry.
    let mut entries: Vec<maglev::Entry> = m
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.flags == BE_F_ACTIVE)
        .map(|(i, b)| maglev::Entry {
            name: std::net::SocketAddr::new(crate::state::writer::ip_from16(b.addr), u16::from_be(b.port)).to_string(),
            id: i as u32,
            weight: b.weight,
        })
        .collect();
    entries.push(maglev::reject_entry(rid, 90));
    assert_eq!(t, maglev::build(&entries, 4093, SEED));

    // The same again: nothing written.
    let r = w.apply(&state(vec![s.clone()])).unwrap();
    assert_eq!((r.unchanged, r.table_writes), (1, 0));
    assert_eq!(take(&mut w), []);
}

#[test]
fn reject_weight_changes_rebuild_the_table_keeping_the_slot() {
    let mut w = MapWriter::in_memory(1 << 16, SEED);
    w.apply(&state(vec![with_reject(90)])).unwrap();
    let (rid, _) = reject_slots(w.memory())[0];
    take(&mut w);
    let s = with_reject(210);
    let r = w.apply(&state(vec![s.clone()])).unwrap();
    assert_eq!(r.updated, 1);
    let ops = take(&mut w);
    let slot = position(&ops, "reject slot", |op| matches!(op, Op::SetBackend(i, v) if *i == rid && v.weight == 210));
    let table = position(&ops, "table", |op| matches!(op, Op::WriteTable { offset: 4093, .. }));
    let value = position(&ops, "service value", |op| matches!(op, Op::SetService(_, v) if v.table_offset == 4093));
    assert!(slot < table && table < value, "{ops:#?}");
    let m = w.memory().clone();
    assert_eq!(reject_slots(&m).len(), 1, "the same slot, rewritten");
    assert_eq!(m.backends[rid as usize].generation, 1, "kept its generation");
    let t = live(&m, &s);
    let share = t.iter().filter(|i| **i == rid).count() as f64 / t.len() as f64;
    assert!((share - 0.5).abs() < 0.01, "210 / 420: {share}");
}

#[test]
fn reject_share_removed_after_the_switch_away_from_it() {
    let mut w = MapWriter::in_memory(1 << 16, SEED);
    w.apply(&state(vec![with_reject(90)])).unwrap();
    let (rid, rv) = reject_slots(w.memory())[0];
    take(&mut w);
    let s = with_reject(0);
    w.apply(&state(vec![s.clone()])).unwrap();
    let ops = take(&mut w);
    let table = position(&ops, "table", |op| matches!(op, Op::WriteTable { .. }));
    let value = position(&ops, "service value", |op| matches!(op, Op::SetService(..)));
    let freed =
        position(&ops, "freed reject slot", |op| matches!(op, Op::SetBackend(i, v) if *i == rid && v.flags == 0));
    assert!(table < value && value < freed, "{ops:#?}");
    let m = w.memory().clone();
    assert!(reject_slots(&m).is_empty());
    assert!(!live(&m, &s).contains(&rid), "no slot of the table rejects");
    assert_eq!(m.backends[rid as usize].generation, rv.generation, "a freed slot keeps its generation");
    assert!(w.free_backends.contains(&rid), "its slot is free again");
}

#[test]
fn reject_share_alone_has_no_table_and_no_slot() {
    // No usable backend: no table (every new flow is rejected anyway).
    let mut w = MapWriter::in_memory(1 << 16, SEED);
    let only = ServiceSpec { reject_weight: 100, ..spec("only", 53, &[], Some(251)) };
    let drained = ServiceSpec { reject_weight: 100, ..spec("drained", 54, &[("10.1.0.1:54", 0)], Some(251)) };
    w.apply(&state(vec![only.clone(), drained.clone()])).unwrap();
    let m = w.memory().clone();
    assert_eq!(m.services[&key(&only)].table_size, 0);
    assert_eq!(m.services[&key(&drained)].table_size, 0);
    assert!(reject_slots(&m).is_empty());
    // A backend comes: table and slot; it goes: both go again.
    let up = ServiceSpec { reject_weight: 100, ..spec("only", 53, &[("10.1.0.1:53", 100)], Some(251)) };
    w.apply(&state(vec![up.clone(), drained.clone()])).unwrap();
    let (rid, _) = reject_slots(w.memory())[0];
    let t = live(w.memory(), &up);
    assert_eq!(t.len(), 251);
    let n = t.iter().filter(|i| **i == rid).count();
    assert!((120..=131).contains(&n), "half of 251 slots: {n}");
    take(&mut w);
    w.apply(&state(vec![only.clone(), drained])).unwrap();
    let ops = take(&mut w);
    let value = position(&ops, "service value", |op| matches!(op, Op::SetService(_, v) if v.table_size == 0));
    let freed =
        position(&ops, "freed reject slot", |op| matches!(op, Op::SetBackend(i, v) if *i == rid && v.flags == 0));
    assert!(value < freed, "{ops:#?}");
    assert!(reject_slots(w.memory()).is_empty());
}

#[test]
fn removed_service_frees_its_reject_slot_after_its_value() {
    let mut w = MapWriter::in_memory(1 << 16, SEED);
    let s = with_reject(90);
    w.apply(&state(vec![s.clone()])).unwrap();
    let (rid, _) = reject_slots(w.memory())[0];
    take(&mut w);
    w.apply(&state(vec![])).unwrap();
    let ops = take(&mut w);
    assert_eq!(ops[0], Op::DeleteService(key(&s)));
    assert!(ops.iter().any(|op| matches!(op, Op::SetBackend(i, v) if *i == rid && v.flags == 0)), "{ops:#?}");
    assert!(reject_slots(w.memory()).is_empty());
    assert!(w.free_backends.contains(&rid));
}

#[test]
fn restored_writer_reads_the_reject_share_back() {
    let mut w = MapWriter::in_memory(1 << 16, SEED);
    let s = with_reject(90);
    let other = spec("plain", 54, &[("10.1.0.9:54", 1)], Some(251));
    w.apply(&state(vec![s.clone(), other.clone()])).unwrap();
    let (rid, _) = reject_slots(w.memory())[0];
    let mut maps = w.memory().clone();
    maps.log.clear();
    let mut w = MapWriter::restore_in_memory(maps, SEED).expect("restore");
    assert_eq!(take(&mut w), [], "a consistent reject share is no fix");
    assert!(!w.free_backends.contains(&rid), "the reject slot is in use");
    let r = w.apply(&state(vec![s.clone(), other.clone()])).unwrap();
    assert_eq!((r.unchanged, r.table_writes), (2, 0), "{r:?}");
    assert_eq!(take(&mut w), [], "an unchanged state writes nothing after a restore");
    // A new backend of another service does not take the reject slot.
    let third = spec("third", 55, &[("10.1.0.10:55", 1)], Some(251));
    w.apply(&state(vec![s.clone(), other, third])).unwrap();
    assert_eq!(w.memory().backends[rid as usize].flags, BE_F_REJECT);
}

#[test]
fn restore_frees_reject_slots_of_no_service() {
    let mut w = MapWriter::in_memory(1 << 16, SEED);
    let s = with_reject(90);
    w.apply(&state(vec![s.clone()])).unwrap();
    let mut maps = w.memory().clone();
    maps.log.clear();
    // Left by an agent stopped halfway through a removal: a reject slot of
    // a service that is gone, and a second one of a live service.
    let id = maps.services[&key(&s)].id;
    let orphan = Backend { flags: BE_F_REJECT, service_id: 77, generation: 4, weight: 5, ..Backend::default() };
    let second = Backend { flags: BE_F_REJECT, service_id: id, generation: 2, weight: 5, ..Backend::default() };
    maps.backends[600] = orphan;
    maps.backends[601] = second;
    let mut w = MapWriter::restore_in_memory(maps, SEED).expect("restore");
    let fixes = take(&mut w);
    assert!(fixes.contains(&Op::SetBackend(600, Backend { flags: 0, ..orphan })), "{fixes:?}");
    assert!(fixes.contains(&Op::SetBackend(601, Backend { flags: 0, ..second })), "{fixes:?}");
    assert_eq!(fixes.len(), 2, "nothing else: {fixes:?}");
    assert!(w.free_backends.contains(&600) && w.free_backends.contains(&601));
    let r = w.apply(&state(vec![s])).unwrap();
    assert_eq!((r.unchanged, r.table_writes), (1, 0), "the service's own share intact: {r:?}");
}
