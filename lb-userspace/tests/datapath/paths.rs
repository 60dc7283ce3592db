//! Forwarding paths.

use super::*;

case!(xdp_tx_when_egress_is_ingress, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let v0 = lab.v0;
    lab.set_iface(v0, IF_F_TX | IF_F_REDIRECT);
    lab.add_tx_port(v0);
    let pkt = udp4_to_vip();
    let out = lab.run(&pkt.build());
    out.expect(XDP_TX, &[Stat::FlowNew, Stat::FwdTx]).no_meta();
    let d = out.decoded();
    out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), sock(&sa("10.1.0.1", d.sport)), sock("10.1.0.2:5353")));

    // The reply goes back out of v0 as well.
    let reply = Pkt::udp("10.1.0.2:5353", &d.src_sock().to_string()).macs(mac("10.1.0.2"), V0_MAC);
    let back = lab.run(&reply.build());
    back.expect(XDP_TX, &[Stat::Reply, Stat::FwdTx]).no_meta();
    back.frame_is(&rewritten(&reply, V0_MAC, mac(CLIENT4), sock(&sa(VIP4, 53)), pkt.src));
});

fn redirect_setup(lab: &mut Lab, v6: bool) -> (Pkt, &'static str, &'static str) {
    let (client, vip, backend, snat) = if v6 {
        (sa(CLIENT6, 33000), VIP6, "[fd00:2::5]:5353", "fd00:2::1")
    } else {
        (sa(CLIENT4, 33000), VIP4, "10.2.0.5:5353", "10.2.0.1")
    };
    lab.apply(vec![service("dns", vip, 53, Udp, Snat, &[(backend, 1)])]);
    (client_pkt(Udp, &client, &sa(vip, 53), 0), backend, snat)
}

case!(xdp_redirect_to_another_interface, |lab| {
    let (v0, v1) = (lab.v0, lab.v1);
    for ifindex in [v0, v1] {
        lab.set_iface(ifindex, IF_F_TX | IF_F_REDIRECT);
        lab.add_tx_port(ifindex);
    }
    for v6 in [false, true] {
        let (pkt, backend, snat) = redirect_setup(lab, v6);
        let out = lab.run(&pkt.build());
        out.expect(XDP_REDIRECT, &[Stat::FlowNew, Stat::FwdRedirect]).no_meta();
        let d = out.decoded();
        out.frame_is(&rewritten(&pkt, V1_MAC, mac(backend), sock(&sa(snat, d.sport)), sock(backend)));
    }
});

case!(redirect_refused_by_devmap_falls_back_to_kernel, |lab| {
    // v1 claims XDP_REDIRECT but has no devmap entry.
    let v1 = lab.v1;
    lab.set_iface(v1, IF_F_REDIRECT);
    let (pkt, backend, snat) = redirect_setup(lab, false);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::RedirectFail, Stat::FwdKernel]).to_tc(v1);
    let d = out.decoded();
    out.frame_is(&rewritten(&pkt, V1_MAC, mac(backend), sock(&sa(snat, d.sport)), sock(backend)));
});

case!(egress_without_xdp_caps_goes_through_tc, |lab| {
    // Only the ingress can transmit: the egress v1 gets the tc hand-off.
    let v0 = lab.v0;
    lab.set_iface(v0, IF_F_TX | IF_F_REDIRECT);
    lab.add_tx_port(v0);
    let (pkt, backend, snat) = redirect_setup(lab, true);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v1);
    let d = out.decoded();
    out.frame_is(&rewritten(&pkt, V1_MAC, mac(backend), sock(&sa(snat, d.sport)), sock(backend)));
});

case!(backend_without_neighbour_goes_to_kernel, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Preserve, &[("10.1.0.99:53", 1)])]);
    let v0 = lab.v0;
    lab.set_iface(v0, IF_F_TX | IF_F_REDIRECT);
    lab.add_tx_port(v0);
    let pkt = udp4_to_vip();
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc_unresolved(v0);
    // No MACs from the FIB: the Ethernet header is left for tc's redirect_neigh.
    out.frame_is(&rewritten(&pkt, pkt.eth_src, pkt.eth_dst, pkt.src, sock("10.1.0.99:53")));
});

case!(backend_without_route_counts_fib_failure, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Preserve, &[("198.51.100.7:53", 1)])]);
    let pkt = udp4_to_vip();
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FibFail]).no_meta();
    out.frame_is(&rewritten(&pkt, pkt.eth_src, pkt.eth_dst, pkt.src, sock("198.51.100.7:53")));
});

case!(tcp_segments_with_payload_keep_their_checksums, |lab| {
    // A longer exchange on one flow: every segment is rewritten correctly.
    lab.apply(vec![service("web", VIP6, 443, Tcp, Snat, &[("[fd00:1::2]:8443", 1), ("[fd00:1::3]:8443", 1)])]);
    let syn = client_pkt(Tcp, &sa(CLIENT6, 51000), &sa(VIP6, 443), TCP_SYN);
    let first = lab.run(&syn.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let d = first.decoded();
    for (i, len) in [1usize, 100, 1000, 1399].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let seg = syn.clone().tcp_flags(TCP_ACK | TCP_PSH).payload(&data);
        let out = lab.run(&seg.build());
        out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
        out.frame_is(&rewritten(&seg, V0_MAC, mac(&d.dst.to_string()), d.src_sock(), d.dst_sock()));
    }
});

/// A packet larger than the egress MTU (1500 on the test veth): with DF (or
/// IPv6) the sender is told the MTU, quoting its packet untranslated; without
/// DF it goes to the kernel, which fragments it.
fn too_big_case(lab: &mut Lab, v6: bool, df: bool) {
    dns_service(lab);
    let (client, vip) = if v6 { (CLIENT6, VIP6) } else { (CLIENT4, VIP4) };
    let mut pkt = client_pkt(Udp, &sa(client, 33100), &sa(vip, 53), 0).payload(&[7u8; 1500]);
    if !v6 {
        pkt = pkt.frag(if df { 0x4000 } else { 0 });
    }
    let input = pkt.build();
    let out = lab.run(&input);
    if !(v6 || df) {
        out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdFragment]);
        assert!(out.meta.is_empty(), "no tc metadata: the kernel routes and fragments it");
        return;
    }
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::TooBig, Stat::FwdKernel]).to_tc(lab.v0);
    let f = &out.frame;
    let l3 = pkt.l3_off();
    let quoted_ip = &input[l3..l3 + if v6 { 40 } else { 20 }];
    if v6 {
        assert_eq!(f[l3 + 6], 58, "ICMPv6");
        assert_eq!(&f[l3 + 8..l3 + 24], &input[l3 + 24..l3 + 40], "from the VIP");
        assert_eq!(&f[l3 + 24..l3 + 40], &input[l3 + 8..l3 + 24], "to the client");
        let icmp = &f[l3 + 40..l3 + 40 + usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]))];
        assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
        assert!(frame::icmp_csum_ok(ip(vip), ip(client), icmp), "ICMPv6 checksum (etherparse)");
        assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), 1500);
        assert_eq!(&icmp[8..48], quoted_ip, "quotes the untranslated header");
    } else {
        assert_eq!(f[l3 + 9], 1, "ICMP");
        assert_eq!(&f[l3 + 12..l3 + 16], &input[l3 + 16..l3 + 20], "from the VIP");
        assert_eq!(&f[l3 + 16..l3 + 20], &input[l3 + 12..l3 + 16], "to the client");
        let icmp = &f[l3 + 20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1500, "next-hop MTU");
        assert_eq!(&icmp[8..28], quoted_ip, "quotes the untranslated header");
        assert!(frame::ipv4_header_csum_ok(&f[l3..]), "IPv4 header checksum (etherparse)");
        assert!(frame::icmp_csum_ok(ip(vip), ip(client), &icmp[..36]), "ICMP checksum (etherparse)");
    }
}

case!(too_big_with_df_gets_fragmentation_needed, |lab| { too_big_case(lab, false, true) });
case!(too_big_ipv6_gets_packet_too_big, |lab| too_big_case(lab, true, true));
case!(too_big_without_df_is_left_to_the_kernel_to_fragment, |lab| too_big_case(lab, false, false));
