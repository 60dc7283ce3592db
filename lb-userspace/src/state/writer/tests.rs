//! The writer's tests on real maps (root and bpffs), and helpers; the
//! plan's, on in-memory maps, in `tests/plan.rs`.
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
};

use lb_common::{
    range_prefix_len, AffinityKey, Backend, Service, ServiceKey, ServiceSlot, BE_F_ACTIVE, BE_F_UNROUTABLE,
    SVC_F_RANGES,
};

use super::*;
use crate::{
    bpf::maps::Maps,
    state::maglev,
    state::model::{
        test_support::{backend, service},
        DesiredState, Protocol, ServiceSpec, SourceMode,
    },
};

mod plan;
mod reject;
mod restore;

/// Fails (never skips) unless the process runs as root with a bpffs on
/// /sys/fs/bpf, which the tests below need: CI runs the unit tests as root,
/// so a skipped case would count as a pass there.
fn require_bpf(case: &str) {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let bpffs = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "));
    assert!(
        euid == 0 && bpffs,
        "{case}: this test writes real BPF maps and needs root (uid {euid} now) and a bpffs mounted on \
         /sys/fs/bpf (mounted: {bpffs}); run it as root after `cargo xtask setup` (which mounts bpffs), \
         e.g. `sudo -E cargo test -p lb-userspace --lib`"
    );
}

/// A pin directory removed on drop.
struct Pins(std::path::PathBuf);
impl Pins {
    fn new(tag: &str) -> Self {
        Self(std::path::PathBuf::from(format!("/sys/fs/bpf/xlb-unit-{tag}-{}", std::process::id())))
    }
}
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn writer(pins: &Pins, entries: u32, seed: u32) -> MapWriter {
    let mut ebpf = crate::bpf::datapath::load_with(&pins.0, 1024, entries).expect("loading the data path");
    MapWriter::restore(Maps::take(&mut ebpf).expect("maps"), seed).expect("restore")
}

fn spec(name: &str, port: u16, backends: &[(&str, u16)], size: Option<u32>) -> ServiceSpec {
    ServiceSpec {
        source: SourceMode::Preserve,
        maglev_table_size: size,
        backends: backends.iter().map(|(a, w)| backend(a, *w)).collect(),
        ..service(name, "192.0.2.1", port, Protocol::Udp)
    }
}

/// The table the data path sees for a service, read with the kernel's
/// lookup (not through the mapping), as backend addresses.
fn live_table(w: &MapWriter, name: &str) -> (Service, Vec<String>) {
    let p = w.services.values().find(|p| p.name == name).expect("programmed");
    let by_id: HashMap<u32, SocketAddr> = p.backends.iter().map(|(a, (id, _))| (*id, *a)).collect();
    let v = p.value;
    let t = (0..v.table_size)
        .map(|i| {
            let id = w.maps.table.map().get(&(v.table_offset + i), 0).expect("lookup");
            by_id.get(&id).map_or_else(|| format!("?{id}"), std::string::ToString::to_string)
        })
        .collect();
    (v, t)
}

/// `XLB_SVC_SLOTS` mirrors `XLB_SERVICES`: written with a service,
/// emptied when it goes, and re-synced (stale slots emptied, missing ones
/// written) when an agent restarts on the pinned maps.
#[test]
fn service_slots_mirror_the_services() {
    require_bpf("service_slots_mirror_the_services");
    let pins = Pins::new("slots");
    let slot = |w: &MapWriter, id: u32| w.maps.service_slots.get(&id, 0).expect("slot");
    let desired = |specs: Vec<ServiceSpec>| DesiredState { services: specs };
    let mut w = writer(&pins, 1 << 16, 0);
    w.apply(&desired(vec![spec("a", 53, &[("10.0.0.1:53", 1)], Some(251)), spec("b", 54, &[], Some(251))]))
        .expect("apply");
    let ids: Vec<(ServiceKey, Service)> = w.services.iter().map(|(k, p)| (*k, p.value)).collect();
    for (key, value) in &ids {
        assert_eq!(slot(&w, value.id), ServiceSlot { key: *key, _pad: 0, svc: *value });
    }
    w.apply(&desired(vec![spec("a", 53, &[("10.0.0.1:53", 1)], Some(251))])).expect("apply");
    let gone = ids.iter().find(|(k, _)| !w.services.contains_key(k)).expect("b removed").1.id;
    assert_eq!(slot(&w, gone), ServiceSlot::default());
    // A stale slot (an agent stopped halfway) and a lost one: fixed on restart.
    let (key_a, value_a) = ids.iter().find(|(k, _)| w.services.contains_key(k)).copied().expect("a kept");
    w.maps.service_slots.set(gone, ServiceSlot { key: key_a, _pad: 0, svc: value_a }, 0).expect("set");
    w.maps.service_slots.set(value_a.id, ServiceSlot::default(), 0).expect("set");
    drop(w);
    let w = writer(&pins, 1 << 16, 0);
    assert_eq!(slot(&w, gone), ServiceSlot::default());
    assert_eq!(slot(&w, value_a.id), ServiceSlot { key: key_a, _pad: 0, svc: value_a });
}

fn expected(backends: &[(&str, u16)], size: u32, seed: u32) -> Vec<String> {
    let entries: Vec<maglev::Entry> = backends
        .iter()
        .enumerate()
        .map(|(i, (a, w))| maglev::Entry { name: a.to_string(), id: i as u32, weight: u32::from(*w) })
        .collect();
    maglev::build(&entries, size, seed).into_iter().map(|i| backends[i as usize].0.to_string()).collect()
}

#[test]
fn tables_double_buffered_through_the_mapping_and_kept_across_restart() {
    require_bpf("tables_double_buffered_through_the_mapping_and_kept_across_restart");
    let pins = Pins::new("tables");
    let three = [("10.1.0.1:53", 1), ("10.1.0.2:53", 2), ("10.1.0.3:53", 1)];
    let two = [("10.1.0.1:53", 1), ("10.1.0.2:53", 2)];
    let state = |b: &[(&str, u16)]| DesiredState {
        services: vec![
            spec("a", 53, b, Some(251)),
            spec("b", 54, &three, None),
            spec("empty", 55, &[("10.1.0.9:53", 0)], Some(509)),
        ],
    };
    let mut w = writer(&pins, 1 << 20, 7);
    let r = w.apply(&state(&three)).unwrap();
    assert_eq!(r.added, 3);
    // Entries the fresh array already held (0: a's first backend) are not written.
    let zeros = expected(&three, 251, 7).iter().filter(|a| *a == "10.1.0.1:53").count();
    assert_eq!(r.table_writes, 251 + 65537 - zeros);
    let (va, ta) = live_table(&w, "a");
    assert_eq!((va.table_offset, va.table_size, va.hash_seed), (0, 251, 7));
    assert_eq!(ta, expected(&three, 251, 7), "the kernel sees the table written through the mapping");
    let (vb, tb) = live_table(&w, "b");
    assert_eq!((vb.table_offset, vb.table_size), (502, 65537), "b's pair follows a's");
    assert_eq!(tb, expected(&three, 65537, 7));
    let (ve, _) = live_table(&w, "empty");
    assert_eq!(ve.table_size, 0, "no usable backend: no table");

    // A change goes into the other region, then back.
    let r = w.apply(&state(&two)).unwrap();
    assert_eq!((r.updated, r.unchanged), (1, 2));
    let (va, ta) = live_table(&w, "a");
    assert_eq!((va.table_offset, va.table_size), (251, 251));
    assert_eq!(ta, expected(&two, 251, 7));
    let r = w.apply(&state(&three)).unwrap();
    let (va, ta) = live_table(&w, "a");
    assert_eq!(va.table_offset, 0);
    assert_eq!(ta, expected(&three, 251, 7));
    assert!(r.table_writes < 251, "only the entries that differ from region A's old table: {}", r.table_writes);
    assert_eq!(r.table_writes, 0, "region A still held exactly this table");

    // Restart on the same pins: nothing is rewritten.
    drop(w);
    let mut w = writer(&pins, 1 << 20, 7);
    let r = w.apply(&state(&three)).unwrap();
    assert_eq!(r, ApplyReport { unchanged: 3, ..Default::default() });
    // Its allocator knows the pairs: a new service goes after them.
    let mut more = state(&three);
    more.services.push(spec("c", 56, &two, Some(1021)));
    w.apply(&more).unwrap();
    assert_eq!(live_table(&w, "c").0.table_offset, 502 + 2 * 65537);
    // A new seed rebuilds every table.
    let r = w.set_seed(8).apply(&more).unwrap();
    assert_eq!(r.updated, 4, "every service's hash seed changes");
    assert_eq!(live_table(&w, "b").1, expected(&three, 65537, 8));

    // Restart with a larger array: the tables are carried over.
    drop(w);
    let mut w = writer(&pins, 1 << 21, 8);
    assert_eq!(w.maps.table.len(), 1 << 21);
    let r = w.apply(&more).unwrap();
    assert_eq!((r.unchanged, r.table_writes), (4, 0));
    assert_eq!(live_table(&w, "b").1, expected(&three, 65537, 8));
}

/// Every `XLB_RANGES` entry as (service id, CIDR).
fn trie(w: &MapWriter) -> BTreeSet<(u32, String)> {
    w.maps
        .ranges
        .keys()
        .map(|k| {
            let k = k.expect("XLB_RANGES key");
            let net = range_net((k.prefix_len(), k.data().addr)).expect("a valid prefix");
            (u32::from_be_bytes(k.data().service), net.to_string())
        })
        .collect()
}

fn with_ranges(ranges: &[&str], affinity: Option<u32>) -> DesiredState {
    let one = [("10.1.0.1:53", 1)];
    let mut a = spec("a", 53, &one, Some(251));
    a.source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
    a.affinity_timeout = affinity;
    DesiredState { services: vec![a, spec("b", 54, &one, Some(251))] }
}

#[test]
fn source_ranges_diffed_and_restored() {
    require_bpf("source_ranges_diffed_and_restored");
    let pins = Pins::new("ranges");
    let mut w = writer(&pins, 1 << 20, 0);
    let r = w.apply(&with_ranges(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"], Some(60))).unwrap();
    assert_eq!((r.added, r.range_writes), (2, 2), "the IPv6 range of an IPv4 service is not programmed");
    let id = live_table(&w, "a").0.id;
    let b = live_table(&w, "b").0;
    assert_eq!(trie(&w), BTreeSet::from([(id, "10.0.0.0/8".into()), (id, "192.0.2.7/32".into())]));
    let (va, _) = live_table(&w, "a");
    assert_ne!(va.flags & SVC_F_RANGES, 0);
    assert_eq!(va.affinity_timeout, 60);
    assert_eq!((b.flags & SVC_F_RANGES, b.affinity_timeout), (0, 0), "b has neither");

    // Unchanged services: no writes, also with the list reordered.
    let same = with_ranges(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"], Some(60));
    assert_eq!(w.apply(&same).unwrap(), ApplyReport { unchanged: 2, ..Default::default() });
    let reordered = with_ranges(&["2001:db8::/32", "192.0.2.7/32", "10.0.0.0/8"], Some(60));
    assert_eq!(w.apply(&reordered).unwrap(), ApplyReport { unchanged: 2, ..Default::default() });

    // A change writes only the difference.
    let r = w.apply(&with_ranges(&["10.0.0.0/8", "172.16.0.0/12"], Some(60))).unwrap();
    assert_eq!((r.updated, r.unchanged, r.range_writes, r.table_writes), (1, 1, 2, 0));
    assert_eq!(trie(&w), BTreeSet::from([(id, "10.0.0.0/8".into()), (id, "172.16.0.0/12".into())]));

    // Restart: the entries are read back; nothing is written. An entry
    // of no service (left by a crash) is deleted.
    w.maps
        .ranges
        .insert(&range_key(999, (range_prefix_len(true, 8), addr16("10.0.0.0".parse().unwrap()))), 1, 0)
        .unwrap();
    drop(w);
    let mut w = writer(&pins, 1 << 20, 0);
    assert!(!trie(&w).iter().any(|(i, _)| *i == 999), "orphan deleted");
    let current = with_ranges(&["10.0.0.0/8", "172.16.0.0/12"], Some(60));
    assert_eq!(w.apply(&current).unwrap(), ApplyReport { unchanged: 2, ..Default::default() });

    // Affinity off deletes the service's affinity entries only.
    for (sid, last) in [(id, 1), (id, 2), (b.id, 3)] {
        let mut client = [0u8; 16];
        client[15] = last;
        let key = AffinityKey { client, service_id: sid, _pad: 0 };
        let value = lb_common::Affinity { backend_id: 0, backend_gen: 1, last_ns: 5 };
        w.maps.affinity.insert(key, value, 0).unwrap();
    }
    let r = w.apply(&with_ranges(&["10.0.0.0/8", "172.16.0.0/12"], None)).unwrap();
    assert_eq!((r.updated, r.affinity_deleted, r.range_writes), (1, 2, 0));
    let left: Vec<u32> = w.maps.affinity.keys().map(|k| k.unwrap().service_id).collect();
    assert_eq!(left, vec![b.id]);
    assert_eq!(live_table(&w, "a").0.affinity_timeout, 0);

    // No ranges: the flag goes, then the entries.
    let r = w.apply(&with_ranges(&[], None)).unwrap();
    assert_eq!((r.updated, r.range_writes), (1, 2));
    assert_eq!(live_table(&w, "a").0.flags & SVC_F_RANGES, 0);
    assert!(trie(&w).is_empty());

    // Ranges of only the other family: enforced, nothing allowed.
    w.apply(&with_ranges(&["2001:db8::/32"], None)).unwrap();
    assert_ne!(live_table(&w, "a").0.flags & SVC_F_RANGES, 0);
    assert!(trie(&w).is_empty());

    // Removing a service removes its ranges.
    w.apply(&with_ranges(&["10.0.0.0/8"], Some(5))).unwrap();
    assert_eq!(trie(&w).len(), 1);
    let r = w.apply(&DesiredState { services: vec![spec("b", 54, &[("10.1.0.1:53", 1)], Some(251))] }).unwrap();
    assert_eq!((r.removed, r.range_writes), (1, 1));
    assert!(trie(&w).is_empty());
}

/// Runs `f` on a thread of its own in a new network namespace with only
/// `lo` (up): the writer's route lookups and netlink socket see it.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        f()
    })
    .join()
    .expect("the test thread")
}

/// `ip ARGS` in the calling thread's network namespace (a child
/// inherits it).
fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?}: {st}");
}

fn snat_spec(name: &str, port: u16, backends: &[(&str, u16)]) -> ServiceSpec {
    ServiceSpec { source: SourceMode::Snat, ..spec(name, port, backends, Some(251)) }
}

fn backend_of(w: &MapWriter, addr: &str) -> Backend {
    let ip = addr16(addr.parse::<SocketAddr>().unwrap().ip());
    *w.backends.iter().find(|b| b.addr == ip && b.flags != 0).unwrap_or_else(|| panic!("no backend {addr}"))
}

/// A `source: snat` backend without a route is written unroutable (not
/// in the table, shown with its reason) while the rest of its service
/// and the other services are programmed; a route appearing makes
/// [`MapWriter::retry_unroutable`] program it; losing the route again
/// takes it out; removing it frees its slot.
#[test]
fn unroutable_backends_wait_for_a_route() {
    require_bpf("unroutable_backends_wait_for_a_route");
    in_new_netns(|| {
        ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
        ip(&["addr", "add", "10.98.0.1/24", "dev", "d0"]);
        ip(&["link", "set", "d0", "up"]);
        ip(&["link", "set", "d1", "up"]);
        let pins = Pins::new("unroutable");
        let mut w = writer(&pins, 1 << 16, 0);
        let (near, far) = ("10.98.0.7:53", "10.99.0.5:53");
        let state = |b: &[(&str, u16)]| DesiredState {
            services: vec![
                snat_spec("a", 53, b),
                snat_spec("b", 54, &[("10.98.0.8:53", 1)]),
                snat_spec("c", 55, &[(far, 1)]),
            ],
        };
        let r = w.apply(&state(&[(near, 1), (far, 1)])).expect("an unroutable backend is no error");
        assert_eq!(r.added, 3);
        assert_eq!(
            w.unroutable(),
            vec![("a".to_string(), far.parse().unwrap()), ("c".to_string(), far.parse().unwrap())]
        );
        assert!(w.has_unroutable());
        let (va, ta) = live_table(&w, "a");
        assert_eq!(va.table_size, 251);
        assert!(ta.iter().all(|a| a == near), "only the routable backend in a's table");
        assert_eq!(live_table(&w, "c").0.table_size, 0, "no usable backend: no table (new flows rejected)");
        let fb = backend_of(&w, far);
        assert_eq!(fb.flags, BE_F_UNROUTABLE, "never active");
        assert!(unroutable_reason(&fb)
            .unwrap()
            .contains(&std::io::Error::from_raw_os_error(libc::ENETUNREACH).to_string()));
        assert_eq!(backend_of(&w, near).snat_addr, addr16("10.98.0.1".parse().unwrap()));
        // What `xlb backends` reads.
        let view = crate::bpf::view::MapsView::open_pinned(&pins.0).expect("the pinned maps, read-only");
        let rows = crate::state::reader::services(&view).expect("read");
        let a = rows.iter().find(|r| r.name == "a").unwrap();
        assert_eq!(a.backends, vec![near.to_string()], "services lists what is programmed");
        let states: Vec<(&str, &str, bool)> =
            a.backend_rows.iter().map(|b| (b.address.as_str(), b.state.as_str(), b.reason.is_some())).collect();
        assert_eq!(states.len(), 2);
        assert!(states.contains(&(near, "active", false)) && states.contains(&(far, "unroutable", true)), "{states:?}");

        // Nothing changed: a retry or a re-apply writes nothing.
        assert_eq!(w.retry_unroutable().unwrap(), 0);
        assert_eq!(
            w.apply(&state(&[(near, 1), (far, 1)])).unwrap(),
            ApplyReport { unchanged: 3, ..Default::default() }
        );

        // A route appears: the retry programs it, in a and in c.
        ip(&["route", "add", "10.99.0.0/16", "dev", "d0"]);
        assert_eq!(w.retry_unroutable().unwrap(), 2);
        assert!(w.unroutable().is_empty() && !w.has_unroutable());
        let fb2 = backend_of(&w, far);
        assert_eq!((fb2.flags, fb2.snat_addr), (BE_F_ACTIVE, addr16("10.98.0.1".parse().unwrap())));
        assert_eq!(fb2.generation, fb.generation, "same slot, same generation: it never had flows");
        let (_, ta) = live_table(&w, "a");
        assert_eq!(ta, expected(&[(near, 1), (far, 1)], 251, 0));
        assert_eq!(live_table(&w, "c").1, vec![far.to_string(); 251]);

        // The route goes; the next apply takes the backend out again (a
        // new generation: its flows re-pick and never come back).
        let gens: HashMap<u32, u32> = w
            .services
            .values()
            .filter(|p| p.name != "b")
            .flat_map(|p| p.backends.values())
            .map(|(id, _)| (*id, w.backends[*id as usize].generation))
            .collect();
        ip(&["route", "del", "10.99.0.0/16", "dev", "d0"]);
        let r = w.apply(&state(&[(near, 1), (far, 1)])).unwrap();
        assert_eq!((r.updated, r.unchanged), (2, 1));
        let ids: Vec<u32> = w.services.values().flat_map(|p| p.unroutable.values().map(|u| u.id)).collect();
        assert_eq!(ids.len(), 2);
        for id in &ids {
            let b = w.backends[*id as usize];
            assert_eq!(b.flags, BE_F_UNROUTABLE);
            assert_eq!(b.generation, gens[id].wrapping_add(1), "a new generation");
            assert!(!w.free_backends.contains(id), "an unroutable backend keeps its slot");
        }
        assert!(live_table(&w, "a").1.iter().all(|a| a == near));

        // Restart on the pins: the unroutable slots are known again.
        drop(w);
        let mut w = writer(&pins, 1 << 16, 0);
        assert_eq!(w.unroutable().len(), 2);
        assert!(ids.iter().all(|id| !w.free_backends.contains(id)));
        w.apply(&state(&[(near, 1), (far, 1)])).unwrap();
        let again: BTreeSet<u32> = w.services.values().flat_map(|p| p.unroutable.values().map(|u| u.id)).collect();
        assert_eq!(again, ids.iter().copied().collect(), "same slots after the restart");

        // Removed from a, and c removed: the slots are free again.
        w.apply(&DesiredState {
            services: vec![snat_spec("a", 53, &[(near, 1)]), snat_spec("b", 54, &[("10.98.0.8:53", 1)])],
        })
        .unwrap();
        assert!(w.unroutable().is_empty());
        for id in &ids {
            assert_eq!(w.backends[*id as usize].flags, 0);
            assert_eq!(w.maps.backends.get(id, 0).unwrap().flags, 0, "written");
            assert!(w.free_backends.contains(id));
        }
    });
}

#[test]
fn range_entries_mask_host_bits_and_keep_the_family() {
    let mut s = spec("a", 53, &[], None);
    s.source_ranges = ["10.1.2.3/16", "2001:db8::1/32", "192.0.2.1/32"].iter().map(|r| r.parse().unwrap()).collect();
    let e = range_entries(&s);
    let nets: Vec<String> = e.iter().map(|e| range_net(*e).unwrap().to_string()).collect();
    assert_eq!(nets, vec!["10.1.0.0/16", "192.0.2.1/32"]);
    assert!(e.contains(&(32 + 96 + 16, addr16("10.1.0.0".parse().unwrap()))));
    s.vip = "2001:db8::10".parse().unwrap();
    let e = range_entries(&s);
    assert_eq!(e.into_iter().collect::<Vec<_>>(), vec![(32 + 32, addr16("2001:db8::".parse().unwrap()))]);
}

#[test]
fn full_array_is_refused_with_what_to_do() {
    require_bpf("full_array_is_refused_with_what_to_do");
    let pins = Pins::new("full");
    let mut w = writer(&pins, 3000, 0);
    let one = [("10.1.0.1:53", 1)];
    let s = |name: &str, port, size| spec(name, port, &one, Some(size));
    w.apply(&DesiredState { services: vec![s("a", 1, 1021)] }).unwrap();
    let e = w.apply(&DesiredState { services: vec![s("a", 1, 1021), s("b", 2, 509)] }).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("service b: the lookup-table array is full"), "{m}");
    assert!(m.contains("lower maglev_table_size") && m.contains("--table-entries"), "{m}");
    // Nothing of b was programmed; a stays.
    assert_eq!(w.len(), 1);
    // Shrinking a makes room (its old pair is reused after the grace period).
    let r = w.apply(&DesiredState { services: vec![s("a", 1, 251), s("b", 2, 509)] }).unwrap();
    assert_eq!((r.added, r.updated), (1, 1));
    assert_eq!(live_table(&w, "b").0.table_size, 509);
}

/// Of two services on one (vip, port, protocol), the writer does not keep
/// one at random: it refuses the state and writes nothing.
#[test]
fn duplicate_services_are_refused_before_anything_is_written() {
    let mut w = MapWriter::in_memory(4096, 0);
    let a = spec("a", 53, &[("10.1.0.5:53", 1)], Some(251));
    let mut b = a.clone();
    b.name = "b".into();
    b.backends[0].addr = "10.1.0.6:53".parse().unwrap();
    w.memory().log.clear();
    let e = w.apply(&DesiredState { services: vec![a.clone(), b] }).unwrap_err();
    assert!(matches!(e, WriteError::Invalid(crate::state::model::ModelError::DuplicateService { .. })), "{e}");
    assert!(w.memory().log.is_empty(), "{:?}", w.memory().log);
    assert_eq!(w.len(), 0);
    let mut same_name = a.clone();
    same_name.port = 54;
    assert!(matches!(
        w.apply(&DesiredState { services: vec![a.clone(), same_name] }),
        Err(WriteError::Invalid(crate::state::model::ModelError::DuplicateName { .. }))
    ));
    w.apply(&DesiredState { services: vec![a] }).expect("one service");
    assert_eq!(w.len(), 1);
}

/// A reject share on real maps: what `xlb backends` and `xlb maglev` read
/// of it, and an agent restarted on the pins rewrites nothing.
#[test]
fn reject_share_read_by_the_cli_and_kept_across_restart() {
    require_bpf("reject_share_read_by_the_cli_and_kept_across_restart");
    let pins = Pins::new("reject");
    let two = [("10.1.0.1:53", 35), ("10.1.0.2:53", 35)];
    let state = DesiredState { services: vec![ServiceSpec { reject_weight: 30, ..spec("gw", 53, &two, Some(4093)) }] };
    let mut w = writer(&pins, 1 << 16, 3);
    w.apply(&state).expect("apply");
    let view = crate::bpf::view::MapsView::open_pinned(&pins.0).expect("the pinned maps, read-only");
    let rows = crate::state::reader::services(&view).expect("read");
    assert_eq!(rows[0].backends, vec!["10.1.0.1:53", "10.1.0.2:53"], "the reject share is no backend address");
    let reject: Vec<_> = rows[0].backend_rows.iter().filter(|b| b.state == "reject").collect();
    assert_eq!(reject.len(), 1, "{:?}", rows[0].backend_rows);
    assert_eq!((reject[0].address.as_str(), reject[0].weight), (crate::state::reader::REJECT_ADDRESS, 30));
    let m = crate::state::reader::maglev(&view, "gw").expect("read").expect("gw");
    let share = |a: &str| m.backends.iter().find(|b| b.address == a).map_or(0.0, |b| b.share);
    assert!((share("reject") - 0.3).abs() < 0.01, "{m:?}");
    assert!((share("10.1.0.1:53") - 0.35).abs() < 0.01, "{m:?}");
    assert_eq!(m.backends.iter().map(|b| b.slots).sum::<u32>(), 4093, "every slot accounted for");
    assert!(m.max_avg < 1.02, "shares match the weights: {m:?}");
    drop(w);
    let mut w = writer(&pins, 1 << 16, 3);
    let r = w.apply(&state).expect("apply");
    assert_eq!(r, ApplyReport { unchanged: 1, ..Default::default() }, "restored with its reject share");
}
