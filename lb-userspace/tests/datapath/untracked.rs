//! `flow_tracking: none` services: every packet picks from the lookup table,
//! nothing is recorded, replies (source preserved) are still translated.

use super::*;

/// `spec` without flow tracking.
fn untracked(spec: xlb::state::model::ServiceSpec) -> xlb::state::model::ServiceSpec {
    xlb::state::model::ServiceSpec { flow_tracking: FlowTracking::None, ..spec }
}

/// VIP4:53 (preserve) on three backends, tracked or not.
fn three(lab: &mut Lab, proto: Protocol, tracking: FlowTracking, backends: &[(&str, u16)]) {
    let s = service("svc", VIP4, 53, proto, Preserve, backends);
    lab.apply(vec![xlb::state::model::ServiceSpec { flow_tracking: tracking, ..s }]);
}

const ALL3: [(&str, u16); 3] = [(BACKENDS4[0], 1), (BACKENDS4[1], 1), (BACKENDS4[2], 1)];

/// Sends one packet per client port to the untracked VIP4:53 (UDP) and
/// returns port → backend; each is forwarded unrecorded, client kept.
fn send_untracked(lab: &mut Lab, ports: std::ops::Range<u16>) -> BTreeMap<u16, SocketAddr> {
    let mut by_port = BTreeMap::new();
    for port in ports {
        let pkt = client_pkt(Udp, &sa(CLIENT4, port), &sa(VIP4, 53), 0);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::FwdKernel]);
        let d = out.decoded();
        assert_eq!(d.src_sock(), pkt.src, "the client's address is kept");
        out.frame_is(&rewritten(&pkt, V0_MAC, mac(&d.dst.to_string()), pkt.src, d.dst_sock()));
        by_port.insert(port, d.dst_sock());
    }
    by_port
}

case!(untracked_picks_from_the_lookup_table_and_records_nothing, |lab| {
    // Tracked first: the lookup table's picks, recorded.
    three(lab, Udp, FlowTracking::Full, &ALL3);
    let mut tracked = BTreeMap::new();
    for port in 30000..30120u16 {
        let pkt = client_pkt(Udp, &sa(CLIENT4, port), &sa(VIP4, 53), 0);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
        tracked.insert(port, out.decoded().dst_sock());
    }
    let (flows, reverse) = (lab.flow_count(), lab.reverse_count());
    assert_eq!((flows, reverse), (120, 0), "tracked, backends of its own: no reverse entry per flow");

    // The same service untracked (same backends, same table): the same
    // tuples go to the same backends, and new tuples add no entry.
    three(lab, Udp, FlowTracking::None, &ALL3);
    let again = send_untracked(lab, 30000..30120);
    assert_eq!(again, tracked, "every packet picks from the same lookup table");
    let fresh = send_untracked(lab, 31000..31300);
    for be in BACKENDS4 {
        assert!(fresh.values().any(|b| *b == sock(be)), "backend {be} got none of 300 flows");
    }
    // Every packet picks again: a second packet of a tuple goes the same way.
    let second = send_untracked(lab, 31000..31300);
    assert_eq!(second, fresh);
    assert_eq!((lab.flow_count(), lab.reverse_count()), (flows, reverse), "no connection or reverse entry added");
    assert_eq!(lab.service_counter(VIP4, 53, Udp).packets, 120 + 120 + 600);
});

case!(untracked_tcp_records_nothing_even_for_syn_and_fin, |lab| {
    lab.apply(vec![untracked(service("web", VIP4, 80, Tcp, Preserve, &[("10.1.0.2:8080", 1)]))]);
    for flags in [TCP_SYN, TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST] {
        let pkt = client_pkt(Tcp, &sa(CLIENT4, 40000), &sa(VIP4, 80), flags);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::FwdKernel]);
        out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2:8080"), pkt.src, sock("10.1.0.2:8080")));
    }
    assert_eq!((lab.flow_count(), lab.reverse_count()), (0, 0));
});

/// Client → untracked VIP, then the backend's reply: translated back from
/// VIP:port to the client without any reverse entry.
fn untracked_reply_case(lab: &mut Lab, proto: Protocol, v6: bool) {
    let (client, vip, backend) =
        if v6 { (sa(CLIENT6, 33100), VIP6, "[fd00:1::3]:8053") } else { (sa(CLIENT4, 33100), VIP4, "10.1.0.3:8053") };
    lab.apply(vec![untracked(service("svc", vip, 53, proto, Preserve, &[(backend, 1)]))]);
    let pkt = client_pkt(proto, &client, &sa(vip, 53), TCP_SYN);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FwdKernel]);
    assert_eq!(out.decoded().dst_sock(), sock(backend));

    let reply = match proto {
        Udp => Pkt::udp(backend, &client),
        Tcp => Pkt::tcp(backend, &client, TCP_SYN | TCP_ACK),
    }
    .macs(mac(backend), V0_MAC)
    .payload(b"the answer");
    assert!(lab.reverse(&reply).is_none(), "no reverse entry");
    let back = lab.run(&reply.build());
    back.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]).to_tc(lab.v0);
    back.frame_is(&rewritten(&reply, V0_MAC, mac(&client), sock(&sa(vip, 53)), pkt.src));
    // Another client's (or client port's) reply: the same translation.
    let other = if v6 { sa(CLIENT6, 1234) } else { sa("10.100.0.11", 1234) };
    let reply2 = match proto {
        Udp => Pkt::udp(backend, &other),
        Tcp => Pkt::tcp(backend, &other, TCP_ACK),
    }
    .macs(mac(backend), V0_MAC);
    let back = lab.run(&reply2.build());
    back.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]);
    back.frame_is(&rewritten(&reply2, V0_MAC, mac(&other), sock(&sa(vip, 53)), sock(&other)));
    assert_eq!((lab.flow_count(), lab.reverse_count()), (0, 0));
}

case!(untracked_reply_translated_udp4, |lab| untracked_reply_case(lab, Udp, false));
case!(untracked_reply_translated_tcp4, |lab| untracked_reply_case(lab, Tcp, false));
case!(untracked_reply_translated_udp6, |lab| untracked_reply_case(lab, Udp, true));

case!(untracked_reply_of_a_removed_backend_or_service_is_not_translated, |lab| {
    three(lab, Udp, FlowTracking::None, &ALL3);
    let by_port = send_untracked(lab, 32000..32060);
    assert!(by_port.values().any(|b| *b == sock(BACKENDS4[1])), "backend 1 noted");
    let reply = |be: &str| Pkt::udp(be, &sa(CLIENT4, 32000)).macs(mac(be), V0_MAC);
    // Backend 1 removed: its note no longer translates.
    three(lab, Udp, FlowTracking::None, &[ALL3[0], ALL3[2]]);
    let out = lab.run(&reply(BACKENDS4[1]).build());
    out.expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    // Backend 0 still does.
    let out = lab.run(&reply(BACKENDS4[0]).build());
    out.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]);
    // The service tracked again: the note still stands for it (replies to
    // requests sent before the change still arrive) ...
    three(lab, Udp, FlowTracking::Full, &[ALL3[0], ALL3[2]]);
    let out = lab.run(&reply(BACKENDS4[0]).build());
    out.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]);
    // ... but not once the service translates the source (SNAT): its
    // replies come to the node's address, through reverse entries.
    let s = service("svc", VIP4, 53, Udp, Snat, &[ALL3[0], ALL3[2]]);
    lab.apply(vec![s]);
    let out = lab.run(&reply(BACKENDS4[0]).build());
    out.expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
});

case!(untracked_removed_backend_moves_only_its_flows, |lab| {
    three(lab, Udp, FlowTracking::None, &ALL3);
    let before = send_untracked(lab, 34000..34300);
    let removed = sock(BACKENDS4[1]);
    assert!(before.values().any(|b| *b == removed));
    three(lab, Udp, FlowTracking::None, &[ALL3[0], ALL3[2]]);
    let after = send_untracked(lab, 34000..34300);
    // Maglev moves the removed backend's slots and about 1% of the others'
    // (`cargo xtask bench maglev`): every flow of the removed backend moves,
    // nearly all others stay.
    let (mut others, mut moved) = (0, 0);
    for (port, be) in &before {
        if *be == removed {
            assert_ne!(after[port], removed, "port {port}: flow of the removed backend moves");
        } else {
            others += 1;
            moved += usize::from(after[port] != *be);
        }
    }
    assert!(others >= 150, "{others} flows on the two remaining backends");
    assert!(moved * 20 <= others, "{moved} of {others} flows of the remaining backends moved (over 5%)");
    assert_eq!((lab.flow_count(), lab.reverse_count()), (0, 0));
});

case!(a_service_tracked_again_records_its_flows_at_once, |lab| {
    // Untracked: this CPU learns that VIP4:53 needs no flow lookup...
    three(lab, Udp, FlowTracking::None, &ALL3);
    send_untracked(lab, 35000..35010);
    assert_eq!(lab.flow_count(), 0);
    // ...which must not outlive the service's flag.
    three(lab, Udp, FlowTracking::Full, &ALL3);
    let pkt = client_pkt(Udp, &sa(CLIENT4, 35000), &sa(VIP4, 53), 0);
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(lab.flow_count(), 1);
    // And untracked once more: nothing recorded again.
    three(lab, Udp, FlowTracking::None, &ALL3);
    send_untracked(lab, 35100..35110);
    assert_eq!(lab.flow_count(), 1);
});
