//! The plan and its write order, on the in-memory maps (no root): what a
//! packet could see between two writes is never a half-built service.
use std::collections::BTreeSet;

use lb_common::{Backend, ServiceKey, BE_F_ACTIVE, BE_F_UNROUTABLE, SVC_F_RANGES};

use super::spec;
use crate::{
    state::maglev,
    state::model::{DesiredState, ServiceSpec, SourceMode},
    state::writer::{
        plan::{self, BackendArray, ServiceInput},
        service_key, ApplyReport, MapWriter, MemoryMaps, Op, Pair, WriteError,
    },
};

fn key(s: &ServiceSpec) -> ServiceKey {
    service_key(s.vip, s.port, s.protocol)
}

fn state(specs: Vec<ServiceSpec>) -> DesiredState {
    DesiredState { services: specs }
}

/// The log since the last call, without the pre-filter's words (checked
/// on their own).
fn take(w: &mut MapWriter<MemoryMaps>) -> Vec<Op> {
    std::mem::take(&mut w.memory().log).into_iter().filter(|op| !matches!(op, Op::SetPrefilter(..))).collect()
}

/// Index of the first op matching `f`.
fn first(ops: &[Op], what: &str, f: impl Fn(&Op) -> bool) -> usize {
    ops.iter().position(f).unwrap_or_else(|| panic!("no {what} in {ops:#?}"))
}

/// Index of the last op matching `f`.
fn last(ops: &[Op], what: &str, f: impl Fn(&Op) -> bool) -> usize {
    ops.iter().rposition(f).unwrap_or_else(|| panic!("no {what} in {ops:#?}"))
}

fn is_backend(op: &Op) -> bool {
    matches!(op, Op::SetBackend(..))
}

fn is_table(op: &Op) -> bool {
    matches!(op, Op::WriteTable { .. })
}

fn is_service(op: &Op) -> bool {
    matches!(op, Op::SetService(..))
}

/// The table built from these backends (ids in slot order, as a new
/// service gets them).
fn table_of(backends: &[(&str, u16)], size: u32, seed: u32) -> Vec<u32> {
    let mut sorted: Vec<(std::net::SocketAddr, u32, u32)> =
        backends.iter().enumerate().map(|(i, (a, w))| (a.parse().unwrap(), i as u32, u32::from(*w))).collect();
    sorted.sort();
    let entries: Vec<maglev::Entry> =
        sorted.iter().map(|(a, id, w)| maglev::Entry { name: a.to_string(), id: *id, weight: *w }).collect();
    maglev::build(&entries, size, seed)
}

#[test]
fn new_service_backends_then_table_then_its_value() {
    let mut w = MapWriter::in_memory(1 << 16, 3);
    let two = [("10.1.0.1:53", 1), ("10.1.0.2:53", 1)];
    let a = spec("a", 53, &two, Some(251));
    w.memory().log.clear();
    let r = w.apply(&state(vec![a.clone()])).unwrap();
    assert_eq!((r.added, r.table_writes), (1, 251 - table_of(&two, 251, 3).iter().filter(|i| **i == 0).count()));
    let log = std::mem::take(&mut w.memory().log);
    // The pre-filter lets the new addresses through before anything else.
    assert!(matches!(log[0], Op::SetPrefilter(..)), "{:?}", log[0]);
    // (The notes bit of a preserve service: `the_notes_settings_bit_*`.)
    let ops: Vec<Op> =
        log.into_iter().filter(|op| !matches!(op, Op::SetPrefilter(..) | Op::SetSettingsFlags(_))).collect();
    assert_eq!(ops[0], Op::ZeroServiceStats(0));
    let backends = last(&ops, "backend", is_backend);
    let table = first(&ops, "table", is_table);
    let name = first(&ops, "name", |op| matches!(op, Op::SetName(0, n) if n == "a"));
    let value = first(&ops, "service value", is_service);
    let slot = first(&ops, "slot", |op| matches!(op, Op::SetSlot(0, s) if s.key == key(&a)));
    let vip = first(&ops, "vip", |op| matches!(op, Op::SetVip(..)));
    assert_eq!(ops.iter().filter(|op| is_backend(op)).count(), 2);
    assert!(backends < table && table < name && name < value && value < slot && slot < vip, "{ops:#?}");
    // What the maps hold: the value names region A of a pair at 0.
    let m = w.memory();
    let v = m.services[&key(&a)];
    assert_eq!((v.table_offset, v.table_size, v.hash_seed), (0, 251, 3));
    assert_eq!(m.table[..251], table_of(&two, 251, 3)[..]);
    assert!(m.backends[..2].iter().all(|b| b.flags == BE_F_ACTIVE && b.generation == 1));
    assert!(m.prefilter_ready());
}

#[test]
fn unchanged_state_writes_nothing() {
    let mut w = MapWriter::in_memory(1 << 16, 0);
    let s = state(vec![spec("a", 53, &[("10.1.0.1:53", 1)], Some(251)), spec("b", 54, &[], None)]);
    w.apply(&s).unwrap();
    w.memory().log.clear();
    assert_eq!(w.apply(&s).unwrap(), ApplyReport { unchanged: 2, ..Default::default() });
    assert_eq!(w.memory().log, vec![], "nothing written");
}

#[test]
fn removed_service_value_first_then_slot_ranges_backends_name() {
    let mut w = MapWriter::in_memory(1 << 16, 0);
    let mut a = spec("a", 53, &[("10.1.0.1:53", 1), ("10.1.0.2:53", 1)], Some(251));
    a.source_ranges = vec!["10.0.0.0/8".parse().unwrap()];
    a.affinity_timeout = Some(30);
    let b = spec("b", 54, &[("10.2.0.1:53", 1)], Some(251));
    w.apply(&state(vec![a.clone(), b.clone()])).unwrap();
    let id = w.memory().services[&key(&a)].id;
    let pair = Pair { base: 0, size: 251 };
    w.memory().log.clear();
    let r = w.apply(&state(vec![b.clone()])).unwrap();
    assert_eq!((r.removed, r.unchanged, r.range_writes), (1, 1, 1));
    let log = std::mem::take(&mut w.memory().log);
    let ops: Vec<Op> = log.iter().filter(|op| !matches!(op, Op::SetPrefilter(..))).cloned().collect();
    assert_eq!(ops[0], Op::DeleteService(key(&a)), "{ops:#?}");
    assert_eq!(ops[1], Op::ClearSlot(id, key(&a)));
    assert!(matches!(ops[2], Op::DeleteRange(i, _) if i == id));
    assert!(
        ops[3..5].iter().all(|op| matches!(op, Op::SetBackend(_, v) if v.flags == 0 && v.generation == 1)),
        "{ops:#?}"
    );
    assert_eq!(ops[5], Op::SetName(id, String::new()));
    assert!(ops[6..].contains(&Op::PurgeAffinity(BTreeSet::from([id]))));
    assert!(ops[6..].contains(&Op::SetVip(key(&b).addr, 1)), "one service left on the VIP");
    // The pre-filter's bits of a's backends go last.
    let cleared = log.iter().rposition(|op| matches!(op, Op::SetPrefilter(..))).expect("pre-filter cleared");
    assert!(cleared > log.iter().position(|op| *op == ops[5]).unwrap());
    // Its pair is retired, not reused at once; its id is free again.
    assert_eq!(w.retired.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![pair]);
    assert!(w.free_services.contains(&id));
    assert!(w.memory().ranges.is_empty() && !w.memory().services.contains_key(&key(&a)));
}

#[test]
fn changed_table_goes_to_the_twin_before_the_switch() {
    let mut w = MapWriter::in_memory(1 << 16, 0);
    let three = [("10.1.0.1:53", 1), ("10.1.0.2:53", 2), ("10.1.0.3:53", 1)];
    let two = &three[..2];
    w.apply(&state(vec![spec("a", 53, &three, Some(251))])).unwrap();
    let region_a = w.memory().table[..251].to_vec();
    w.memory().log.clear();

    let r = w.apply(&state(vec![spec("a", 53, two, Some(251))])).unwrap();
    assert_eq!(r.updated, 1);
    let ops = take(&mut w);
    let table = first(&ops, "table", is_table);
    assert!(matches!(&ops[table], Op::WriteTable { offset: 251, entries } if entries.len() == 251), "into region B");
    let value = first(&ops, "service value", is_service);
    assert!(matches!(ops[value], Op::SetService(_, v) if v.table_offset == 251), "the switch names region B");
    let gone = first(&ops, "deactivated backend", |op| matches!(op, Op::SetBackend(2, v) if v.flags == 0));
    assert!(table < value && value < gone, "table, switch, then the backend that left: {ops:#?}");
    assert_eq!(w.memory().table[..251], region_a[..], "the live region A untouched");

    // Back: region A still holds exactly that table: nothing to write.
    let r = w.apply(&state(vec![spec("a", 53, &three, Some(251))])).unwrap();
    assert_eq!(r.table_writes, 0);
    let ops = take(&mut w);
    let table = first(&ops, "table", is_table);
    let value = first(&ops, "service value", is_service);
    assert!(matches!(&ops[table], Op::WriteTable { offset: 0, .. }) && table < value, "{ops:#?}");
    assert!(last(&ops, "re-added backend", is_backend) < table);
}

#[test]
fn ranges_added_before_the_value_and_deleted_after_it() {
    let mut w = MapWriter::in_memory(1 << 16, 0);
    let with = |ranges: &[&str]| {
        let mut a = spec("a", 53, &[("10.1.0.1:53", 1)], Some(251));
        a.source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
        state(vec![a])
    };
    w.apply(&with(&[])).unwrap();
    w.memory().log.clear();
    // The first: the entry, then the value that sets the flag.
    w.apply(&with(&["10.0.0.0/8"])).unwrap();
    let ops = take(&mut w);
    let add = first(&ops, "added range", |op| matches!(op, Op::AddRange(..)));
    let value = first(&ops, "service value", |op| matches!(op, Op::SetService(_, v) if v.flags & SVC_F_RANGES != 0));
    assert!(add < value, "{ops:#?}");
    // Another: added before the old one goes (the value is unchanged).
    let r = w.apply(&with(&["172.16.0.0/12"])).unwrap();
    assert_eq!((r.updated, r.range_writes), (1, 2));
    let ops = take(&mut w);
    let add = first(&ops, "added range", |op| matches!(op, Op::AddRange(..)));
    let del = first(&ops, "deleted range", |op| matches!(op, Op::DeleteRange(..)));
    assert!(add < del, "{ops:#?}");
    assert!(!ops.iter().any(|op| is_table(op) || is_backend(op) || is_service(op)), "nothing else changed: {ops:#?}");

    // None left: the value clears the flag before the entry goes.
    w.apply(&with(&[])).unwrap();
    let ops = take(&mut w);
    let value = first(&ops, "service value", |op| matches!(op, Op::SetService(_, v) if v.flags & SVC_F_RANGES == 0));
    let del = first(&ops, "deleted range", |op| matches!(op, Op::DeleteRange(..)));
    assert!(value < del, "{ops:#?}");
}

#[test]
fn too_few_backend_slots_fails_before_any_write() {
    let mut w = MapWriter::in_memory(1 << 16, 0);
    w.free_backends = BTreeSet::from([0, 1]);
    w.memory().log.clear();
    let e =
        w.apply(&state(vec![spec("a", 53, &[("10.1.0.1:53", 1), ("10.1.0.2:53", 1), ("10.1.0.3:53", 1)], Some(251))]));
    assert!(matches!(e, Err(WriteError::TooManyBackends)), "{e:?}");
    assert!(!take(&mut w).iter().any(|op| is_backend(op) || is_table(op) || is_service(op)));
    assert_eq!(w.free_backends, BTreeSet::from([0, 1]), "no slot taken");
    assert_eq!(w.len(), 0);
    assert_eq!(w.regions.free_entries(), (1 << 16) as u64, "its pair given back");
}

/// A backend without a route is written unroutable, never in the table;
/// one that loses its route is taken out (a new generation) only after the
/// value that switches to a table without it.
#[test]
fn unroutable_backends_planned_out_of_the_table() {
    let near: std::net::SocketAddr = "10.98.0.7:53".parse().unwrap();
    let far: std::net::SocketAddr = "10.99.0.5:53".parse().unwrap();
    let s = ServiceSpec {
        source: SourceMode::Snat,
        snat_address: Some("10.98.0.1".parse().unwrap()),
        ..spec("a", 53, &[("10.98.0.7:53", 1), ("10.99.0.5:53", 1)], Some(251))
    };
    let slots = vec![Backend::default(); 8];
    let free: BTreeSet<u32> = (0..8).collect();
    let unreachable = || Err(std::io::Error::from_raw_os_error(libc::ENETUNREACH));
    let src = crate::state::writer::addr16("10.98.0.1".parse().unwrap());
    let resolved = vec![Ok(src), unreachable()];
    let input = ServiceInput {
        spec: &s,
        resolved: &resolved,
        key: key(&s),
        old: None,
        id: 4,
        size: 251,
        pair: Some(Pair { base: 0, size: 251 }),
        seed: 0,
        route_epoch: 1,
        reply_note: false,
    };
    let p = plan::service(&input, &BackendArray { slots: &slots, free: &free }).unwrap();
    let written: Vec<(u32, u16)> = p
        .ops
        .iter()
        .filter_map(|op| if let Op::SetBackend(id, v) = op { Some((*id, v.flags)) } else { None })
        .collect();
    assert_eq!(written, vec![(0, BE_F_ACTIVE), (1, BE_F_UNROUTABLE)]);
    let Some(Op::WriteTable { entries, .. }) = p.ops.iter().find(|op| is_table(op)) else { panic!("no table") };
    assert!(entries.iter().all(|id| *id == 0), "only the routable backend in the table");
    assert_eq!(p.programmed.unroutable.keys().copied().collect::<Vec<_>>(), vec![far]);
    assert_eq!(p.programmed.backends.keys().copied().collect::<Vec<_>>(), vec![near]);

    // Both routable now; then `near` loses its route.
    let resolved = vec![Ok(src), Ok(src)];
    let p = plan::service(&ServiceInput { resolved: &resolved, ..input }, &BackendArray { slots: &slots, free: &free })
        .unwrap();
    let mut slots = slots;
    for op in &p.ops {
        if let Op::SetBackend(id, v) = op {
            slots[*id as usize] = *v;
        }
    }
    let old = p.programmed;
    let resolved = vec![unreachable(), Ok(src)];
    let free: BTreeSet<u32> = (2..8).collect();
    let p = plan::service(
        &ServiceInput { resolved: &resolved, old: Some(&old), ..input },
        &BackendArray { slots: &slots, free: &free },
    )
    .unwrap();
    let table = first(&p.ops, "table", is_table);
    let value = first(&p.ops, "service value", is_service);
    let lost = first(&p.ops, "near unroutable", |op| matches!(op, Op::SetBackend(0, v) if v.flags == BE_F_UNROUTABLE));
    assert!(table < value && value < lost, "{:#?}", p.ops);
    let Op::SetBackend(_, v) = p.ops[lost] else { unreachable!() };
    assert_eq!(v.generation, slots[0].generation + 1, "a new generation: its flows never come back");
    let Op::WriteTable { offset, entries } = &p.ops[table] else { unreachable!() };
    assert_eq!(*offset, 251, "into the twin");
    assert!(entries.iter().all(|id| *id == 1));
    assert!(p.changed);
}

/// `XLB_SETTINGS.flags` says whether any service is `source: preserve`
/// (its replies may be translated through a backend's note): set before
/// the first such service is written (its replies are translated from its
/// first packet), cleared after the last one is gone, written only on a
/// change.
#[test]
fn the_notes_settings_bit_follows_the_preserve_services() {
    use lb_common::settings::SETTINGS_F_NOTES;
    let mut w = MapWriter::in_memory(1 << 16, 0);
    let snat = ServiceSpec { source: SourceMode::Snat, ..spec("a", 53, &[("10.1.0.1:53", 1)], Some(251)) };
    let preserve = spec("u", 54, &[("10.1.0.2:53", 1)], Some(251));
    w.apply(&state(vec![snat.clone()])).unwrap();
    assert_eq!(w.memory().settings_flags, 0);
    assert!(!take(&mut w).iter().any(|o| matches!(o, Op::SetSettingsFlags(_))));

    w.apply(&state(vec![snat.clone(), preserve.clone()])).unwrap();
    assert_eq!(w.memory().settings_flags, SETTINGS_F_NOTES);
    let ops = take(&mut w);
    let flag = first(&ops, "the settings bit", |o| matches!(o, Op::SetSettingsFlags(f) if *f == SETTINGS_F_NOTES));
    let value =
        first(&ops, "the preserve service's value", |o| matches!(o, Op::SetService(k, _) if *k == key(&preserve)));
    assert!(flag < value, "the bit is set before the service is published: {ops:#?}");

    w.apply(&state(vec![snat.clone(), preserve])).unwrap();
    assert!(!take(&mut w).iter().any(|o| matches!(o, Op::SetSettingsFlags(_))), "no change, no write");

    w.apply(&state(vec![snat])).unwrap();
    assert_eq!(w.memory().settings_flags, 0);
    let ops = take(&mut w);
    let gone = first(&ops, "the preserve service's removal", |o| matches!(o, Op::DeleteService(_)));
    let flag = last(&ops, "the settings bit cleared", |o| matches!(o, Op::SetSettingsFlags(0)));
    assert!(gone < flag, "the bit is cleared after the service is gone: {ops:#?}");
}

/// A tracked `source: preserve` service gets `SVC_F_REPLY_NOTE` (no reverse
/// entry per flow) exactly while none of its backends serves another
/// service; the flag follows a backend becoming shared and unshared again,
/// though the service's own spec did not change. `source: snat` and
/// `flow_tracking: none` services never get it.
#[test]
fn the_reply_note_flag_follows_backend_sharing() {
    use crate::state::model::FlowTracking;
    use lb_common::SVC_F_REPLY_NOTE;
    let flags = |w: &MapWriter<MemoryMaps>, s: &ServiceSpec| w.services[&key(s)].value.flags;
    let mut w = MapWriter::in_memory(1 << 16, 0);
    let a = spec("a", 53, &[("10.1.0.1:53", 1), ("10.1.0.2:53", 1)], Some(251));
    let b = spec("b", 54, &[("10.1.0.3:53", 1)], Some(251));
    let snat = ServiceSpec { source: SourceMode::Snat, ..spec("s", 55, &[("10.1.0.4:53", 1)], Some(251)) };
    let none = ServiceSpec { flow_tracking: FlowTracking::None, ..spec("n", 56, &[("10.1.0.5:53", 1)], Some(251)) };
    w.apply(&state(vec![a.clone(), b.clone(), snat.clone(), none.clone()])).unwrap();
    assert_ne!(flags(&w, &a) & SVC_F_REPLY_NOTE, 0, "a: backends of its own");
    assert_ne!(flags(&w, &b) & SVC_F_REPLY_NOTE, 0, "b: backends of its own");
    assert_eq!(flags(&w, &snat) & SVC_F_REPLY_NOTE, 0, "snat: replies reach the node's address");
    assert_eq!(flags(&w, &none) & SVC_F_REPLY_NOTE, 0, "untracked: its own flag");

    // b takes one of a's backends: neither can tell the replies apart.
    let b2 = spec("b", 54, &[("10.1.0.3:53", 1), ("10.1.0.2:53", 1)], Some(251));
    w.apply(&state(vec![a.clone(), b2, snat.clone(), none.clone()])).unwrap();
    assert_eq!(flags(&w, &a) & SVC_F_REPLY_NOTE, 0, "a shares 10.1.0.2:53 with b");
    assert_eq!(flags(&w, &b) & SVC_F_REPLY_NOTE, 0, "b shares 10.1.0.2:53 with a");
    // The same address on another port is another backend.
    let b3 = spec("b", 54, &[("10.1.0.3:53", 1), ("10.1.0.2:5353", 1)], Some(251));
    w.apply(&state(vec![a.clone(), b3, snat, none])).unwrap();
    assert_ne!(flags(&w, &a) & SVC_F_REPLY_NOTE, 0, "a's backends are its own again");
    assert_ne!(flags(&w, &b) & SVC_F_REPLY_NOTE, 0);
}
