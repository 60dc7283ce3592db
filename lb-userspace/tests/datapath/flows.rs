//! Flows and backend choice.

use super::*;

/// Three backends of VIP4:53 (SNAT) with these weights.
pub(crate) fn three_backends(lab: &mut Lab, proto: Protocol, weights: [u16; 3]) {
    let b: Vec<(&str, u16)> = BACKENDS4.iter().copied().zip(weights).collect();
    lab.apply(vec![service("svc", VIP4, 53, proto, Snat, &b)]);
}

/// Sends one new UDP flow per client port; returns port → backend.
pub(crate) fn open_flows(lab: &mut Lab, ports: std::ops::Range<u16>) -> BTreeMap<u16, SocketAddr> {
    let mut by_port = BTreeMap::new();
    for port in ports {
        let pkt = client_pkt(Udp, &sa(CLIENT4, port), &sa(VIP4, 53), 0);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
        let d = out.decoded();
        assert!(in_snat_range(d.sport));
        out.frame_is(&rewritten(&pkt, V0_MAC, mac(&d.dst.to_string()), d.src_sock(), d.dst_sock()));
        by_port.insert(port, d.dst_sock());
    }
    by_port
}

/// One client port per backend (the first flow that landed on each).
pub(crate) fn one_port_per_backend(flows: &BTreeMap<u16, SocketAddr>) -> BTreeMap<SocketAddr, u16> {
    let mut m = BTreeMap::new();
    for (port, be) in flows {
        m.entry(*be).or_insert(*port);
    }
    m
}

case!(second_packet_of_a_flow_goes_to_the_same_backend, |lab| {
    three_backends(lab, Udp, [1, 1, 1]);
    let pkt = client_pkt(Udp, &sa(CLIENT4, 41000), &sa(VIP4, 53), 0);
    let first = lab.run(&pkt.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let d1 = first.decoded();

    let again = pkt.clone().payload(b"the second datagram of the flow");
    let second = lab.run(&again.build());
    second.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]).to_tc(lab.v0);
    let d2 = second.decoded();
    assert_eq!((d2.src_sock(), d2.dst_sock()), (d1.src_sock(), d1.dst_sock()), "same backend, same SNAT port");
    second.frame_is(&rewritten(&again, V0_MAC, mac(&d1.dst.to_string()), d1.src_sock(), d1.dst_sock()));

    for be in BACKENDS4 {
        let want = if sock(be) == d1.dst_sock() { 2 } else { 0 };
        assert_eq!(lab.backend_packets(be), want, "backend {be}");
    }
    assert_eq!(lab.service_counter(VIP4, 53, Udp).packets, 2);
    assert_eq!(lab.flow_count(), 1);
});

case!(many_flows_spread_over_three_backends, |lab| {
    three_backends(lab, Udp, [1, 1, 1]);
    let flows = open_flows(lab, 20000..20300);
    let mut per: BTreeMap<SocketAddr, u64> = BTreeMap::new();
    for be in flows.values() {
        *per.entry(*be).or_default() += 1;
    }
    for be in BACKENDS4 {
        let n = per.get(&sock(be)).copied().unwrap_or(0);
        assert!(n > 0, "backend {be} got no flow: {per:?}");
        assert_eq!(lab.backend_packets(be), n, "backend counter of {be}");
    }
    assert_eq!(per.values().sum::<u64>(), 300);
    assert_eq!(lab.service_counter(VIP4, 53, Udp).packets, 300);
    assert_eq!(lab.flow_count(), 300);
});

case!(tcp_syn_creates_a_flow, |lab| {
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[("10.1.0.2:8080", 1)])]);
    let t0 = xlb::state::reader::monotonic_ns();
    let syn = client_pkt(Tcp, &sa(CLIENT4, 50000), &sa(VIP4, 80), TCP_SYN).tcp_options(&SYN_OPTIONS);
    let out = lab.run(&syn.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let t1 = xlb::state::reader::monotonic_ns();
    let d = out.decoded();
    out.frame_is(&rewritten(&syn, V0_MAC, mac("10.1.0.2"), d.src_sock(), sock("10.1.0.2:8080")));

    let flow = lab.flow(&syn).expect("SYN creates an entry in XLB_FLOWS");
    let bid = lab.backend_id("10.1.0.2:8080");
    let be = lab.maps().backends.get(&bid, 0).unwrap();
    assert_eq!(flow.backend_id, bid);
    assert_eq!(flow.backend_gen, be.generation);
    assert_eq!(flow.service_id, lab.service_id(VIP4, 80, Tcp));
    assert_eq!(u16::from_be(flow.snat_port), d.sport);
    assert_eq!(flow.state, FLOW_OPEN);
    assert!((t0..=t1).contains(&flow.created_ns), "created_ns {} not in [{t0}, {t1}]", flow.created_ns);
    assert_eq!(flow.last_seen_ns, flow.created_ns);

    // The reverse entry is keyed by the reply tuple the backend will send.
    let reply = Pkt::tcp("10.1.0.2:8080", &sa("10.1.0.1", d.sport), TCP_SYN | TCP_ACK);
    let rev = lab.reverse(&reply).expect("a reverse entry for the backend's reply");
    assert_eq!((rev.client, rev.client_port), (xlb::state::writer::addr16(CLIENT4.parse().unwrap()), 50000u16.to_be()));
    assert_eq!((rev.vip, rev.vip_port), (xlb::state::writer::addr16(VIP4.parse().unwrap()), 80u16.to_be()));
    assert_eq!((rev.backend_id, rev.timeout), (bid, lb_common::DEFAULT_TCP_TIMEOUT));
});

case!(syn_again_on_a_tuple_rewrites_its_entries_in_place, |lab| {
    // A SYN retransmitted, or a new connection on the same tuple: picked
    // again, its SNAT port and both entries reused (no second reverse entry).
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[("10.1.0.2:8080", 1)])]);
    let syn = client_pkt(Tcp, &sa(CLIENT4, 50020), &sa(VIP4, 80), TCP_SYN);
    let first = lab.run(&syn.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let created = lab.flow(&syn).unwrap().created_ns;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = lab.run(&syn.build());
    again.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(again.decoded().sport, first.decoded().sport, "same SNAT port for the same client tuple");
    assert_eq!((lab.flow_count(), lab.reverse_count()), (1, 1));
    let flow = lab.flow(&syn).unwrap();
    assert!(flow.created_ns > created, "the entry was written again by the second SYN");
    assert_eq!(u16::from_be(flow.snat_port), again.decoded().sport);
    // Preserve: the same; with a backend shared with another service, its
    // reverse entry keyed by the client's tuple (with backends of its own
    // it has none: `notes::*`).
    lab.apply(vec![
        service("web", VIP4, 80, Tcp, Preserve, &[("10.1.0.2:8080", 1)]),
        service("web2", VIP4, 81, Tcp, Preserve, &[("10.1.0.2:8080", 1)]),
    ]);
    let syn = client_pkt(Tcp, &sa(CLIENT4, 50021), &sa(VIP4, 80), TCP_SYN);
    for _ in 0..2 {
        lab.run(&syn.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    }
    let reply = Pkt::tcp("10.1.0.2:8080", &sa(CLIENT4, 50021), TCP_SYN | TCP_ACK);
    assert!(lab.reverse(&reply).is_some());
    assert!(lab.flow(&syn).is_some());
});

case!(tcp_rst_as_first_packet_creates_no_flow, |lab| {
    lab.apply(vec![service("web", VIP4, 80, Tcp, Preserve, &[("10.1.0.2:8080", 1)])]);
    for (port, flags) in [(50001, TCP_RST), (50002, TCP_RST | TCP_ACK)] {
        let rst = client_pkt(Tcp, &sa(CLIENT4, port), &sa(VIP4, 80), flags);
        let out = lab.run(&rst.build());
        // Still forwarded to a backend (FlowNew counts the pick), but not recorded.
        out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
        out.frame_is(&rewritten(&rst, V0_MAC, mac("10.1.0.2"), rst.src, sock("10.1.0.2:8080")));
        assert!(lab.flow(&rst).is_none(), "an RST must not create an XLB_FLOWS entry");
    }
    assert_eq!(lab.flow_count(), 0);
    assert_eq!(lab.reverse_count(), 0, "no reverse entry either (preserve)");
});

case!(tcp_rst_without_flow_to_snat_service_is_dropped, |lab| {
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[("10.1.0.2:8080", 1)])]);
    let rst = client_pkt(Tcp, &sa(CLIENT4, 50003), &sa(VIP4, 80), TCP_RST | TCP_ACK);
    lab.run(&rst.build()).expect(XDP_DROP, &[Stat::DropRstNoFlow]);
    assert_eq!(lab.flow_count(), 0);
    assert_eq!(lab.reverse_count(), 0, "no SNAT port allocated for an RST");
});

case!(tcp_fin_marks_the_flow_closing, |lab| {
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[("10.1.0.2:8080", 1), ("10.1.0.3:8080", 1)])]);
    let syn = client_pkt(Tcp, &sa(CLIENT4, 50010), &sa(VIP4, 80), TCP_SYN);
    let first = lab.run(&syn.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let d = first.decoded();
    assert_eq!(lab.flow(&syn).unwrap().state, FLOW_OPEN);

    let ack = syn.clone().tcp_flags(TCP_ACK);
    lab.run(&ack.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(lab.flow(&syn).unwrap().state, FLOW_OPEN);

    let fin = syn.clone().tcp_flags(TCP_FIN | TCP_ACK);
    let out = lab.run(&fin.build());
    out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    out.frame_is(&rewritten(&fin, V0_MAC, mac(&d.dst.to_string()), d.src_sock(), d.dst_sock()));
    let flow = lab.flow(&syn).unwrap();
    assert_eq!(flow.state, FLOW_CLOSING, "FIN marks the flow closing");

    // Packets of the closing flow still hit it...
    lab.run(&ack.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    // ...but a new SYN on the same tuple starts a new flow.
    let out = lab.run(&syn.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(lab.flow(&syn).unwrap().state, FLOW_OPEN);
    assert_eq!(out.decoded().dst_sock(), d.dst_sock(), "same hash, same table: same backend");
});

case!(backend_with_weight_0_takes_no_new_flow, |lab| {
    three_backends(lab, Udp, [1, 0, 1]);
    let flows = open_flows(lab, 21000..21200);
    let hit: Vec<SocketAddr> = flows.values().copied().collect();
    assert!(!hit.contains(&sock(BACKENDS4[1])), "weight-0 backend got a new flow");
    for be in [BACKENDS4[0], BACKENDS4[2]] {
        assert!(hit.contains(&sock(be)), "backend {be} got no flow");
    }
    assert_eq!(lab.backend_packets(BACKENDS4[1]), 0);
});

case!(backend_set_to_weight_0_keeps_its_flows, |lab| {
    three_backends(lab, Udp, [1, 1, 1]);
    let flows = open_flows(lab, 22000..22060);
    let ports = one_port_per_backend(&flows);
    assert_eq!(ports.len(), 3, "60 flows cover all backends: {flows:?}");
    three_backends(lab, Udp, [1, 0, 1]);

    let drained = sock(BACKENDS4[1]);
    let pkt = client_pkt(Udp, &sa(CLIENT4, ports[&drained]), &sa(VIP4, 53), 0);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(out.decoded().dst_sock(), drained, "draining keeps existing flows");
    let new = open_flows(lab, 23000..23100);
    assert!(!new.values().any(|b| *b == drained), "no new flow to a drained backend");
});

case!(removed_backend_flow_repicks_others_stay, |lab| {
    three_backends(lab, Udp, [1, 1, 1]);
    let flows = open_flows(lab, 24000..24060);
    let ports = one_port_per_backend(&flows);
    assert_eq!(ports.len(), 3, "60 flows cover all backends: {flows:?}");
    // Remember where each flow went and with which SNAT source.
    let mut before = BTreeMap::new();
    for (be, port) in &ports {
        let pkt = client_pkt(Udp, &sa(CLIENT4, *port), &sa(VIP4, 53), 0);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
        before.insert(*be, out.decoded().src_sock());
    }

    let removed = sock(BACKENDS4[1]);
    lab.apply(vec![service("svc", VIP4, 53, Udp, Snat, &[(BACKENDS4[0], 1), (BACKENDS4[2], 1)])]);
    for (be, port) in &ports {
        let pkt = client_pkt(Udp, &sa(CLIENT4, *port), &sa(VIP4, 53), 0);
        let out = lab.run(&pkt.build());
        let d = out.decoded();
        if *be == removed {
            out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
            assert_ne!(d.dst_sock(), removed, "flow of a removed backend must re-pick");
            assert!(d.dst_sock() == sock(BACKENDS4[0]) || d.dst_sock() == sock(BACKENDS4[2]));
            let flow = lab.flow(&pkt).unwrap();
            let bid = lab.backend_id(&d.dst_sock().to_string());
            assert_eq!(flow.backend_id, bid, "the flow entry follows the new backend");
        } else {
            out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
            assert_eq!((d.dst_sock(), d.src_sock()), (*be, before[be]), "other flows stay");
        }
        out.frame_is(&rewritten(&pkt, V0_MAC, mac(&d.dst.to_string()), d.src_sock(), d.dst_sock()));
    }
});
