//! ICMP errors about translated flows are translated back.

use super::*;

/// Destination unreachable / port unreachable: (type, code) for the family.
fn port_unreach_type(v6: bool) -> (u8, u8) {
    if v6 {
        (1, 4)
    } else {
        (3, 3)
    }
}

/// The backend answers the packet it received with an ICMP error: the
/// client gets it from the VIP, quoting its own packet to the VIP.
fn icmp_from_backend_case(lab: &mut Lab, proto: Protocol, v6: bool, source: SourceMode) {
    let (client, vip, backend) =
        if v6 { (sa(CLIENT6, 33200), VIP6, "[fd00:1::4]:8053") } else { (sa(CLIENT4, 33200), VIP4, "10.1.0.4:8053") };
    lab.apply(vec![service("svc", vip, 53, proto, source, &[(backend, 1)])]);
    let pkt = client_pkt(proto, &client, &sa(vip, 53), TCP_SYN);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let d = out.decoded();
    let received = &out.frame[14..];

    let (t, c) = port_unreach_type(v6);
    let be = sock(backend).ip();
    let err = frame::icmp_error(mac(backend), V0_MAC, be, d.src, t, c, received);
    let back = lab.run(&err);
    back.expect(XDP_PASS, &[Stat::IcmpError, Stat::FwdKernel]).to_tc(lab.v0);
    back.bytes_are(&frame::icmp_error(V0_MAC, mac(&client), ip(vip), pkt.src.ip(), t, c, &pkt.ip_packet()));
}

case!(icmp_error_from_backend_snat_udp4, |lab| { icmp_from_backend_case(lab, Udp, false, Snat) });
case!(icmp_error_from_backend_preserve_tcp6, |lab| { icmp_from_backend_case(lab, Tcp, true, Preserve) });
case!(icmp_error_from_backend_snat_tcp4, |lab| { icmp_from_backend_case(lab, Tcp, false, Snat) });
case!(icmp_error_from_backend_preserve_udp6, |lab| { icmp_from_backend_case(lab, Udp, true, Preserve) });

case!(icmp_error_from_a_router_keeps_its_source, |lab| {
    // ICMPv6 time exceeded from a router between node and backend, quoting
    // only the IPv6 header and 8 bytes of TCP (no TCP checksum in the quote).
    lab.apply(vec![service("web", VIP6, 443, Tcp, Snat, &[("[fd00:1::2]:8443", 1)])]);
    let syn = client_pkt(Tcp, &sa(CLIENT6, 51000), &sa(VIP6, 443), TCP_SYN);
    let out = lab.run(&syn.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let d = out.decoded();
    let router = ip("fd00:1::fe");
    let err = frame::icmp_error([2, 0, 0, 0, 0, 0xfe], V0_MAC, router, d.src, 3, 0, &out.frame[14..14 + 48]);
    let back = lab.run(&err);
    back.expect(XDP_PASS, &[Stat::IcmpError, Stat::FwdKernel]).to_tc(lab.v0);
    back.bytes_are(&frame::icmp_error(V0_MAC, mac(CLIENT6), router, ip(CLIENT6), 3, 0, &syn.ip_packet()[..48]));
});

case!(icmp_error_from_client_about_a_reply_goes_to_the_backend, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let node = out.decoded().src_sock();
    let reply = Pkt::udp("10.1.0.2:5353", &node.to_string()).macs(mac("10.1.0.2"), V0_MAC);
    let back = lab.run(&reply.build());
    back.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]);

    // The client refuses the reply it got (from the VIP).
    let err = frame::icmp_error(mac(CLIENT4), V0_MAC, ip(CLIENT4), ip(VIP4), 3, 3, &back.frame[14..]);
    let fwd = lab.run(&err);
    fwd.expect(XDP_PASS, &[Stat::IcmpError, Stat::FwdKernel]).to_tc(lab.v0);
    // The backend gets it from the node's SNAT address, quoting its reply.
    fwd.bytes_are(&frame::icmp_error(V0_MAC, mac("10.1.0.2"), node.ip(), ip("10.1.0.2"), 3, 3, &reply.ip_packet()));
});

case!(icmp_error_about_an_unknown_flow_passes_untouched, |lab| {
    dns_service(lab);
    let never_sent = Pkt::udp("10.1.0.1:40001", "10.1.0.2:5353");
    let err = frame::icmp_error(mac("10.1.0.2"), V0_MAC, ip("10.1.0.2"), ip("10.1.0.1"), 3, 3, &never_sent.ip_packet());
    lab.run(&err).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    // Quoting an ICMP packet, or too little to hold the ports: not ours either.
    let echo = Pkt::icmp("10.1.0.1", "10.1.0.2");
    let err = frame::icmp_error(mac("10.1.0.2"), V0_MAC, ip("10.1.0.2"), ip("10.1.0.1"), 3, 1, &echo.ip_packet());
    lab.run(&err).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    let err =
        frame::icmp_error(mac("10.1.0.2"), V0_MAC, ip("10.1.0.2"), ip("10.1.0.1"), 3, 3, &never_sent.ip_packet()[..22]);
    lab.run(&err).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
});
