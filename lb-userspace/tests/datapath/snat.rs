//! SNAT ports, the flood guard, timeouts, backend slots.

use super::*;

/// The SNAT ports the data path probes, in order, for a client tuple.
fn snat_probes(pkt: &Pkt) -> Vec<u16> {
    let k = harness::flow_key(pkt);
    let base = lb_common::hash::flow_hash(&k.src, &k.dst, k.sport, k.dport, k.proto, 0x5eed_5eed);
    (0..lb_common::SNAT_TRIES)
        .map(|i| SNAT_PORT_MIN + (base.wrapping_add(i.wrapping_mul(7919)) % u32::from(SNAT_PORT_COUNT)) as u16)
        .collect()
}

/// Occupies the SNAT port `port` towards 10.1.0.2:5353 with another client's
/// flow, last seen at `last_seen_ns`.
fn occupy_snat_port(lab: &mut Lab, port: u16, last_seen_ns: u64) {
    let be = sock("10.1.0.2:5353");
    let key = lb_common::FlowKey {
        src: xlb::state::writer::addr16(be.ip()),
        dst: xlb::state::writer::addr16(ip("10.1.0.1")),
        sport: be.port().to_be(),
        dport: port.to_be(),
        proto: 17,
        _pad: [0; 3],
    };
    let value = lb_common::Reverse {
        client: xlb::state::writer::addr16(ip(CLIENT4)),
        vip: xlb::state::writer::addr16(ip(VIP4)),
        client_port: 1u16.to_be(),
        vip_port: 53u16.to_be(),
        service_id: lab.service_id(VIP4, 53, Udp),
        backend_id: lab.backend_id("10.1.0.2:5353"),
        timeout: 30,
        last_seen_ns,
    };
    lab.maps().reverse.insert(key, value, 0).expect("writing XLB_REVERSE");
}

case!(taken_snat_port_probes_the_next_one, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    let probes = snat_probes(&pkt);
    occupy_snat_port(lab, probes[0], xlb::state::reader::monotonic_ns());
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.decoded().sport, probes[1], "probes {probes:?}");
    out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), sock(&sa("10.1.0.1", probes[1])), sock("10.1.0.2:5353")));
});

case!(snat_probes_past_many_taken_ports, |lab| {
    // Every probe but the last taken by other live flows: still allocated.
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    let probes = snat_probes(&pkt);
    assert!(probes.len() >= 32, "at least 32 probes");
    let now = xlb::state::reader::monotonic_ns();
    for p in &probes[..probes.len() - 1] {
        occupy_snat_port(lab, *p, now);
    }
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.decoded().sport, *probes.last().unwrap(), "probes {probes:?}");
});

case!(snat_ports_exhausted_drops, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    let probes = snat_probes(&pkt);
    let now = xlb::state::reader::monotonic_ns();
    for p in &probes {
        occupy_snat_port(lab, *p, now);
    }
    lab.run(&pkt.build()).expect(XDP_DROP, &[Stat::DropSnatExhausted]);
    assert!(lab.flow(&pkt).is_none());
    // An entry idle for longer than its timeout may be taken over.
    occupy_snat_port(lab, probes[5], now - 31_000_000_000);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.decoded().sport, probes[5], "probes {probes:?}");
});

case!(flood_guard_forwards_without_recording, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1), ("10.1.0.3:5353", 1)])]);
    let settings = lb_common::settings::Settings { new_flows_per_cpu: 1, node_tag: LAB_NODE_TAG, flags: 0 };
    lab.maps().settings.set(0, settings, 0).expect("writing XLB_SETTINGS");
    // The bucket starts full (one flow): the first new flow is recorded...
    let first = client_pkt(Udp, &sa(CLIENT4, 34000), &sa(VIP4, 53), 0);
    lab.run(&first.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert!(lab.flow(&first).is_some());
    // ...the next ones within the second are forwarded by hash, not recorded.
    let second = client_pkt(Udp, &sa(CLIENT4, 34001), &sa(VIP4, 53), 0);
    let a = lab.run(&second.build());
    a.expect(XDP_PASS, &[Stat::FlowNew, Stat::FloodGuard, Stat::FwdKernel]);
    assert!(lab.flow(&second).is_none(), "a flow above the rate is not recorded");
    let b = lab.run(&second.build());
    b.expect(XDP_PASS, &[Stat::FlowNew, Stat::FloodGuard, Stat::FwdKernel]);
    let (da, db) = (a.decoded(), b.decoded());
    assert_eq!((da.src_sock(), da.dst_sock()), (db.src_sock(), db.dst_sock()), "same backend and SNAT port by hash");
    // Its replies still find their way back.
    let reply = Pkt::udp(&da.dst_sock().to_string(), &da.src_sock().to_string()).macs(mac(&da.dst.to_string()), V0_MAC);
    let back = lab.run(&reply.build());
    back.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]);
    back.frame_is(&rewritten(&reply, V0_MAC, mac(CLIENT4), sock(&sa(VIP4, 53)), second.src));
    // The recorded flow is unaffected.
    lab.run(&first.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
});

// A flow finds its service through the flow's service id (`XLB_SVC_SLOTS`)
// only while that id still serves the flow's VIP, port and protocol: after
// the service went and its id went to a service on another port of the VIP,
// the old flow's packets are not forwarded to its old backend.
case!(flow_of_a_removed_service_is_not_followed_after_id_reuse, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    let old = lab.flow(&pkt).unwrap();
    lab.apply(vec![]);
    lab.apply(vec![service("other", VIP4, 54, Udp, Snat, &[("10.1.0.3:5353", 1)])]);
    assert!(lab.flow(&pkt).is_some_and(|f| f.service_id == old.service_id), "the id was reused and the entry kept");
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::PassVipOtherPort]).untouched();
    // And the service coming back on its port takes new flows again.
    lab.apply(vec![
        service("other", VIP4, 54, Udp, Snat, &[("10.1.0.3:5353", 1)]),
        service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.4:5353", 1)]),
    ]);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.decoded().dst_sock(), sock("10.1.0.4:5353"));
});

fn with_udp_timeout(lab: &mut Lab, secs: u32) {
    let mut svc = service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]);
    svc.udp_timeout = Some(secs);
    lab.apply(vec![svc]);
}

case!(udp_flow_expires_after_its_idle_timeout, |lab| {
    with_udp_timeout(lab, 1);
    let pkt = udp4_to_vip();
    let first = lab.run(&pkt.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let created = lab.flow(&pkt).unwrap().created_ns;
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = lab.run(&pkt.build());
    again.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert!(lab.flow(&pkt).unwrap().created_ns > created, "a new entry replaced the expired one");
    assert_eq!(again.decoded().src_sock(), first.decoded().src_sock(), "the client's own SNAT port is reused");
});

case!(udp_flow_busier_than_its_timeout_does_not_expire, |lab| {
    with_udp_timeout(lab, 1);
    let pkt = udp4_to_vip();
    let t0 = std::time::Instant::now();
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(600));
        println!("packet at t = {} ms", t0.elapsed().as_millis());
        lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    }
});

case!(flow_cache_copy_is_used_only_until_the_entry_would_be_refreshed, |lab| {
    // The hot-flow cache keeps a per-CPU copy of a flow's entry (the harness
    // runs every packet on one CPU). To see which one a packet used, the
    // table's entry is pointed at another backend behind the data path's back.
    let mut svc = service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1), ("10.1.0.3:5353", 1)]);
    svc.udp_timeout = Some(1); // copies last until last_seen + min(1 s, 1 s / 2)
    lab.apply(vec![svc]);
    let pkt = udp4_to_vip();
    let first = lab.run(&pkt.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    // The flow's second packet (from the table) leaves the copy.
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    let was = first.decoded().dst_sock().to_string();
    let other = if was == "10.1.0.2:5353" { "10.1.0.3:5353" } else { "10.1.0.2:5353" };
    let key = harness::flow_key(&pkt);
    let mut flow = lab.flow(&pkt).unwrap();
    flow.backend_id = lab.backend_id(other);
    flow.backend_gen = lab.maps().backends.get(&flow.backend_id, 0).unwrap().generation;
    lab.maps().flows.insert(key, flow, 0).expect("writing XLB_FLOWS");
    // Within the window: the copy, so still the first backend.
    let hit = lab.run(&pkt.build());
    hit.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(hit.decoded().dst_sock().to_string(), was, "the cached copy is used within its window");
    // Past it (a refresh is due): the table's entry, which is refreshed.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let later = lab.run(&pkt.build());
    later.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(later.decoded().dst_sock().to_string(), other, "the table's entry is used once a refresh is due");
    assert!(lab.flow(&pkt).unwrap().last_seen_ns > flow.last_seen_ns, "and it was refreshed");
    // A new flow epoch (another CPU changed a translation) voids the copy at once.
    let mut flow = lab.flow(&pkt).unwrap();
    flow.backend_id = lab.backend_id(&was);
    flow.backend_gen = lab.maps().backends.get(&flow.backend_id, 0).unwrap().generation;
    lab.maps().flows.insert(key, flow, 0).expect("writing XLB_FLOWS");
    let hit = lab.run(&pkt.build());
    assert_eq!(hit.decoded().dst_sock().to_string(), other, "the copy again");
    let e = lab.flow_epoch();
    lab.set_flow_epoch(e + 1);
    let after = lab.run(&pkt.build());
    after.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(after.decoded().dst_sock().to_string(), was, "a new epoch sends the packet to the table");
});

case!(syn_repicking_a_tuple_voids_the_cached_copies, |lab| {
    let (a, b) = ("10.1.0.2:8080", "10.1.0.3:8080");
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[(a, 1), (b, 1)])]);
    let syn = client_pkt(Tcp, &sa(CLIENT4, 50030), &sa(VIP4, 80), TCP_SYN);
    let ack = syn.clone().tcp_flags(TCP_ACK);
    let first = lab.run(&syn.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    lab.run(&ack.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    let was = first.decoded().dst_sock().to_string();
    let other = if was == a { b } else { a };
    // Drain the tuple's backend (weight 0: its flows stay, new ones avoid it);
    // the same tuple's next SYN is a new connection, picked elsewhere.
    let w = |addr: &str| u16::from(addr != was);
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[(a, w(a)), (b, w(b))])]);
    let e0 = lab.flow_epoch();
    let again = lab.run(&syn.build());
    again.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(again.decoded().dst_sock().to_string(), other);
    assert_ne!(lab.flow_epoch(), e0, "a changed translation moves the epoch (other CPUs' copies go)");
    let next = lab.run(&ack.build());
    next.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(next.decoded().dst_sock().to_string(), other, "the voided copy is not used: the rewritten entry is");
    // The same SYN again, same pick: nothing changed, the epoch stays.
    let e1 = lab.flow_epoch();
    lab.run(&syn.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(lab.flow_epoch(), e1);
});

case!(reused_backend_slot_does_not_inherit_flows, |lab| {
    three_backends(lab, Udp, [1, 1, 1]);
    let flows = open_flows(lab, 25000..25060);
    let ports = one_port_per_backend(&flows);
    let gone = sock(BACKENDS4[1]);
    let old_id = lab.backend_id(BACKENDS4[1]);
    let pkt = client_pkt(Udp, &sa(CLIENT4, ports[&gone]), &sa(VIP4, 53), 0);
    let old_gen = lab.flow(&pkt).unwrap().backend_gen;
    // Remove it, then add another backend: it takes the free slot.
    lab.apply(vec![service("svc", VIP4, 53, Udp, Snat, &[(BACKENDS4[0], 1), (BACKENDS4[2], 1)])]);
    let newcomer = "10.1.0.4:7777";
    lab.apply(vec![service("svc", VIP4, 53, Udp, Snat, &[(BACKENDS4[0], 1), (BACKENDS4[2], 1), (newcomer, 1)])]);
    assert_eq!(lab.backend_id(newcomer), old_id, "the newcomer reuses the slot");
    // The old flow is re-picked, not sent to whoever holds the slot now.
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let flow = lab.flow(&pkt).unwrap();
    let holder = out.decoded().dst_sock();
    assert_eq!(flow.backend_id, lab.backend_id(&holder.to_string()));
    if flow.backend_id == old_id {
        assert_ne!(flow.backend_gen, old_gen, "re-picked onto the slot: with the new generation");
    }
});

case!(a_flow_follows_its_service_switching_between_preserve_and_snat, |lab| {
    let svc = |mode| vec![service("dns", VIP4, 53, Udp, mode, &[("10.1.0.2:5353", 1)])];
    lab.apply(svc(Preserve));
    let pkt = udp4_to_vip();
    let first = lab.run(&pkt.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(first.decoded().src_sock(), sock(&sa(CLIENT4, 33000)), "preserve keeps the client's address");
    assert_eq!(lab.flow(&pkt).unwrap().snat_port, 0);
    // Switched to snat: the flow (which has no SNAT port) is picked again
    // and gets one; it no longer leaves with the client's address.
    lab.apply(svc(Snat));
    let snat = lab.run(&pkt.build());
    snat.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let port = lab.flow(&pkt).unwrap().snat_port;
    assert_ne!(port, 0, "the flow got a SNAT port");
    assert_eq!(snat.decoded().src_sock().port(), u16::from_be(port));
    assert_ne!(snat.decoded().src_sock().ip(), ip(CLIENT4));
    assert_eq!(snat.decoded().dst_sock(), sock("10.1.0.2:5353"));
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    // And back to preserve: the client's address again.
    lab.apply(svc(Preserve));
    let back = lab.run(&pkt.build());
    back.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(back.decoded().src_sock(), sock(&sa(CLIENT4, 33000)));
    assert_eq!(lab.flow(&pkt).unwrap().snat_port, 0);
});

/// The set of the hot-flow cache `k` falls in: a mirror of
/// `lb-ebpf/src/flowcache.rs` `set_base` (without the CPU's block).
fn cache_set(k: &lb_common::FlowKey) -> u64 {
    // SAFETY: FlowKey is 40 bytes of plain data, align(8).
    let w: [u64; 5] = unsafe { std::mem::transmute(*k) };
    let sets = u64::from(lb_common::FLOW_CACHE_ENTRIES_PER_CPU / 2);
    let x = (w[0] ^ w[1].rotate_left(17) ^ w[2].rotate_left(29) ^ w[3].rotate_left(43) ^ w[4])
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x >> (64 - sets.trailing_zeros())
}

case!(flow_cache_keeps_two_flows_of_one_set_and_evicts_the_older_for_a_third, |lab| {
    // Three client tuples whose copies fall in one set of the (two-way)
    // cache. As above, the table's entries are pointed at the other backend
    // behind the data path's back to see which packets use a copy.
    let (a, b) = ("10.1.0.2:5353", "10.1.0.3:5353");
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[(a, 1), (b, 1)])]);
    let pkt = |port: u16| client_pkt(Udp, &sa(CLIENT4, port), &sa(VIP4, 53), 0);
    let mut by_set: BTreeMap<u64, Vec<u16>> = BTreeMap::new();
    let three = (20000..u16::MAX)
        .find_map(|port| {
            let v = by_set.entry(cache_set(&harness::flow_key(&pkt(port)))).or_default();
            v.push(port);
            (v.len() == 3).then(|| v.clone())
        })
        .expect("three tuples of one set");
    // Each flow: its first packet records it, its second leaves the copy.
    let mut was = Vec::new();
    let open = |lab: &mut Lab, port: u16, was: &mut Vec<String>| {
        let first = lab.run(&pkt(port).build());
        first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
        lab.run(&pkt(port).build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
        was.push(first.decoded().dst_sock().to_string());
    };
    let retarget = |lab: &mut Lab, port: u16, to: &str| {
        let mut flow = lab.flow(&pkt(port)).unwrap();
        flow.backend_id = lab.backend_id(to);
        flow.backend_gen = lab.maps().backends.get(&flow.backend_id, 0).unwrap().generation;
        lab.maps().flows.insert(harness::flow_key(&pkt(port)), flow, 0).expect("writing XLB_FLOWS");
    };
    let other = |be: &str| if be == a { b } else { a };
    let goes_to = |lab: &mut Lab, port: u16| {
        let out = lab.run(&pkt(port).build());
        out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
        out.decoded().dst_sock().to_string()
    };
    open(lab, three[0], &mut was);
    std::thread::sleep(std::time::Duration::from_millis(20));
    open(lab, three[1], &mut was);
    for i in 0..2 {
        retarget(lab, three[i], other(&was[i]));
    }
    // Both copies held (a direct-mapped cache would keep one).
    assert_eq!(goes_to(lab, three[0]), was[0], "first flow from its copy");
    assert_eq!(goes_to(lab, three[1]), was[1], "second flow from its copy");
    // A third flow of the set takes the way of the copy that runs out first.
    std::thread::sleep(std::time::Duration::from_millis(20));
    open(lab, three[2], &mut was);
    // (The younger one first: a packet served from the table caches its
    // flow again, evicting in turn.)
    assert_eq!(goes_to(lab, three[1]), was[1], "the younger copy stays");
    assert_eq!(goes_to(lab, three[0]), other(&was[0]), "the older copy was evicted: the table's entry is used");
});
