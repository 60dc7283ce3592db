//! Passed untouched.

use super::*;

/// A one-backend SNAT DNS service on VIP4:53 and VIP6:53.
pub(crate) fn dns_service(lab: &mut Lab) {
    lab.apply(vec![
        service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]),
        service("dns6", VIP6, 53, Udp, Snat, &[("[fd00:1::2]:5353", 1)]),
    ]);
}

case!(non_vip_udp_passes_untouched, |lab| {
    dns_service(lab);
    for dst in ["10.1.0.77:53", "[fd00:1::77]:53", "10.1.0.2:5353"] {
        let client = if dst.starts_with('[') { sa(CLIENT6, 33000) } else { sa(CLIENT4, 33000) };
        let pkt = client_pkt(Udp, &client, dst, 0);
        lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    }
    assert_eq!(lab.flow_count(), 0);
});

case!(arp_passes_untouched, |lab| {
    dns_service(lab);
    let arp = frame::arp_request(mac(CLIENT4), [10, 100, 0, 10], [192, 0, 2, 10]);
    lab.run(&arp).expect(XDP_PASS, &[Stat::PassNonIp]).untouched();
});

case!(icmp_not_for_a_vip_passes_untouched, |lab| {
    dns_service(lab);
    // Echo requests to other addresses.
    let v4 = Pkt::icmp(CLIENT4, "10.1.0.2").macs(mac(CLIENT4), V0_MAC);
    lab.run(&v4.build()).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    let v6 = Pkt::icmp(CLIENT6, "fd00:1::2").macs(mac(CLIENT6), V0_MAC);
    lab.run(&v6.build()).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    // Neither echo request nor error (timestamp request; ICMPv6 neighbour
    // solicitation), even to a VIP.
    for (src, dst, proto, msg) in
        [(CLIENT4, VIP4, 1u8, vec![13u8, 0, 0, 0, 0, 0, 0, 0]), (CLIENT6, VIP6, 58, vec![135, 0, 0, 0, 0, 0, 0, 0])]
    {
        let f = frame::ip_frame(mac(src), V0_MAC, ip(src), ip(dst), proto, &msg);
        lab.run(&f).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    }
});

case!(icmp_echo_to_a_vip_is_answered, |lab| {
    dns_service(lab);
    for (client, vip, reply_type) in [(CLIENT4, VIP4, 0u8), (CLIENT6, VIP6, 129)] {
        let req = Pkt::icmp(client, vip).macs(mac(client), V0_MAC).payload(b"ping payload 0123456789");
        let out = lab.run(&req.build());
        out.expect(XDP_PASS, &[Stat::IcmpEcho, Stat::FwdKernel]).to_tc(lab.v0);
        let mut rep = Pkt::icmp(vip, client).macs(V0_MAC, mac(client)).payload(&req.payload);
        rep.l4 = frame::L4::Icmp(reply_type);
        out.bytes_are(&rep.build());
    }
    assert_eq!(lab.flow_count(), 0);
});

case!(unknown_port_on_vip_passes_untouched, |lab| {
    dns_service(lab);
    // Another port, and the right port with the other protocol.
    let other_port = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 54), 0);
    let other_proto = client_pkt(Tcp, &sa(CLIENT4, 33000), &sa(VIP4, 53), TCP_SYN);
    for pkt in [other_port, other_proto] {
        lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::PassVipOtherPort]).untouched();
    }
    assert_eq!(lab.flow_count(), 0);
});

/// A fragmented datagram to the VIP: a later fragment seen before its first
/// is passed untouched; the first fragment takes the normal path and the
/// later ones follow it (same addresses, same backend, payload untouched).
fn fragments_case(lab: &mut Lab, v6: bool) {
    let (client, vip, backends, snat) = if v6 {
        (sa(CLIENT6, 33000), VIP6, ["[fd00:1::2]:5353", "[fd00:1::3]:5353", "[fd00:1::4]:5353"], "fd00:1::1")
    } else {
        (sa(CLIENT4, 33000), VIP4, BACKENDS4, "10.1.0.1")
    };
    let b: Vec<(&str, u16)> = backends.iter().map(|b| (*b, 1)).collect();
    lab.apply(vec![service("dns", vip, 53, Udp, Snat, &b)]);
    let payload: Vec<u8> = (0..200u8).collect();
    let pkt = client_pkt(Udp, &client, &sa(vip, 53), 0).payload(&payload);
    let (first, later) = pkt.fragments(64);

    lab.run(&later).expect(XDP_PASS, &[Stat::PassFragment]).untouched();

    let out = lab.run(&first);
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
    let d = out.decoded();
    assert!(in_snat_range(d.sport));
    assert_eq!(d.src, snat.parse::<std::net::IpAddr>().unwrap());
    let want = rewritten(&pkt, V0_MAC, mac(&d.dst.to_string()), d.src_sock(), d.dst_sock()).fragments(64);
    // Byte-exact: the UDP checksum of the whole datagram is updated
    // incrementally in the first fragment.
    out.bytes_are(&want.0);

    let out = lab.run(&later);
    out.expect(XDP_PASS, &[Stat::Fragment, Stat::FwdKernel]).to_tc(lab.v0);
    out.bytes_are(&want.1);

    let l3 = pkt.l3_off() as u64;
    let bytes = first.len() as u64 - l3 + later.len() as u64 - l3;
    assert_eq!(lab.service_counter(vip, 53, Udp), Counter { packets: 2, bytes });
    assert_eq!(lab.backend_packets(&d.dst_sock().to_string()), 2);
    assert!(lab.flow(&pkt).is_some(), "the first fragment records the flow");
}

case!(ipv4_fragments_follow_their_first_fragment, |lab| { fragments_case(lab, false) });
case!(ipv6_fragments_follow_their_first_fragment, |lab| { fragments_case(lab, true) });

case!(ipv4_fragment_flags_and_offsets, |lab| {
    dns_service(lab);
    // Later fragments (offset > 0, with or without MF) whose first fragment
    // was never seen pass untouched; DF alone is not a fragment.
    for field in [0x0010u16, 0x2010, 0x4010] {
        let pkt = udp4_to_vip().frag(field);
        lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::PassFragment]).untouched();
    }
    assert_eq!(lab.flow_count(), 0);
    for field in [0x0000u16, 0x4000] {
        let pkt = udp4_to_vip().frag(field).src_port(33000 + field / 0x100);
        lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    }
});

case!(fragmented_reply_follows_its_first_fragment, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let node = out.decoded().src_sock();

    let payload: Vec<u8> = (0..150u8).rev().collect();
    let reply = Pkt::udp("10.1.0.2:5353", &node.to_string()).macs(mac("10.1.0.2"), V0_MAC).payload(&payload);
    let (first, later) = reply.fragments(80);
    let want = rewritten(&reply, V0_MAC, mac(CLIENT4), sock(&sa(VIP4, 53)), pkt.src).fragments(80);
    let out = lab.run(&first);
    out.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]).to_tc(lab.v0);
    out.bytes_are(&want.0);
    let out = lab.run(&later);
    out.expect(XDP_PASS, &[Stat::Fragment, Stat::FwdKernel]).to_tc(lab.v0);
    out.bytes_are(&want.1);
    // Replies are not counted per service.
    assert_eq!(lab.service_counter(VIP4, 53, Udp).packets, 1);
});
