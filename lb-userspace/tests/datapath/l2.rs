//! L2 announcement (`--announce l2`): ARP requests and neighbour
//! solicitations for announced VIPs answered on announce interfaces;
//! everything else passed as before. Replies are decoded with etherparse
//! (an independent parser, which also verifies the ICMPv6 checksum).

use etherparse::{ArpOperation, Icmpv6Type, LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use lb_common::META_MAGIC_L2;

use super::*;

const V0_L2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa0];
const ASKER_MAC: [u8; 6] = [0x02, 0, 0, 0x64, 0x00, 0x0a];
const ASKER4: [u8; 4] = [10, 100, 0, 10];
const ASKER6: &str = "fd00:100::10";

fn vip4() -> [u8; 4] {
    VIP4.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// VIP4 and VIP6 programmed, announced, v0 an announce interface.
fn announcing(lab: &mut Lab) {
    lab.apply(vec![
        service("dns4", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]),
        service("dns6", VIP6, 53, Udp, Snat, &[("[fd00:1::2]:5353", 1)]),
    ]);
    lab.writer.set_announced([ip(VIP4), ip(VIP6)]).expect("XLB_ANNOUNCE");
    let v0 = lab.v0;
    lab.writer.set_l2_interface(v0, V0_L2_MAC).expect("XLB_L2_IFACES");
}

/// An Ethernet ARP frame: `op`, sender (MAC, IP), target IP, padded to 60 bytes.
fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

/// A neighbour solicitation for `target` from `src` (`::` → duplicate
/// address detection: no source link-layer option), to the solicited-node
/// multicast address, with a valid checksum (etherparse computes it).
fn ns(src: &str, target: &str) -> Vec<u8> {
    let t = v6(target);
    let dst = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]];
    let src = v6(src);
    let mut payload = t.to_vec();
    if src != [0; 16] {
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(&ASKER_MAC);
    }
    let builder = etherparse::PacketBuilder::ethernet2(ASKER_MAC, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
        .ipv6(src, dst, 255)
        .icmpv6(Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] });
    let mut f = Vec::new();
    builder.write(&mut f, &payload).unwrap();
    f
}

/// An ARP frame's fields: (eth dst, eth src, op, sha, spa, tha, tpa).
type ArpFields = ([u8; 6], [u8; 6], ArpOperation, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

fn arp_fields(f: &[u8]) -> ArpFields {
    let p = SlicedPacket::from_ethernet(f).expect("an Ethernet frame");
    let Some(LinkSlice::Ethernet2(eth)) = p.link else { panic!("not Ethernet II") };
    let Some(NetSlice::Arp(a)) = p.net else { panic!("not ARP: {f:02x?}") };
    (
        eth.destination(),
        eth.source(),
        a.operation(),
        a.sender_hw_addr().to_vec(),
        a.sender_protocol_addr().to_vec(),
        a.target_hw_addr().to_vec(),
        a.target_protocol_addr().to_vec(),
    )
}

fn l2_handoff(out: &harness::Out, ifindex: u32) {
    assert_eq!(out.meta.len(), 16, "hand-off metadata");
    let w = |i: usize| u32::from_ne_bytes(out.meta[i * 4..i * 4 + 4].try_into().unwrap());
    let got = ForwardMeta { magic: w(0), ifindex: w(1), ingress: w(2), node_tag: w(3) };
    assert_eq!(got, ForwardMeta { magic: META_MAGIC_L2, ifindex, ingress: out.ingress, node_tag: LAB_NODE_TAG });
}

case!(arp_request_for_an_announced_vip_is_answered_through_tc, |lab| {
    announcing(lab);
    let out = lab.run(&arp(1, ASKER_MAC, ASKER4, vip4()));
    out.expect(XDP_PASS, &[Stat::ArpReply]);
    l2_handoff(&out, lab.v0);
    assert_eq!(out.frame.len(), 60, "answered in place");
    assert_eq!(
        arp_fields(&out.frame),
        (
            ASKER_MAC,
            V0_L2_MAC,
            ArpOperation::REPLY,
            V0_L2_MAC.to_vec(),
            vip4().to_vec(),
            ASKER_MAC.to_vec(),
            ASKER4.to_vec()
        )
    );
});

case!(arp_request_is_answered_with_xdp_tx_where_the_interface_can, |lab| {
    announcing(lab);
    let v0 = lab.v0;
    lab.set_iface(v0, IF_F_TX | IF_F_REDIRECT);
    let out = lab.run(&arp(1, ASKER_MAC, ASKER4, vip4()));
    out.expect(XDP_TX, &[Stat::ArpReply]).no_meta();
    assert_eq!(arp_fields(&out.frame).2, ArpOperation::REPLY);
    // An ARP probe (sender 0.0.0.0) for the VIP is answered too.
    let out = lab.run(&arp(1, ASKER_MAC, [0; 4], vip4()));
    out.expect(XDP_TX, &[Stat::ArpReply]);
    assert_eq!(arp_fields(&out.frame).6, vec![0, 0, 0, 0]);
});

case!(arp_that_is_not_a_request_for_an_announced_vip_passes, |lab| {
    announcing(lab);
    // A programmed VIP that is not announced, and an address that is no VIP.
    lab.apply(vec![
        service("dns4", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]),
        service("dns6", VIP6, 53, Udp, Snat, &[("[fd00:1::2]:5353", 1)]),
        service("other", "192.0.2.20", 53, Udp, Snat, &[("10.1.0.2:5353", 1)]),
    ]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a VIP not announced", arp(1, ASKER_MAC, ASKER4, [192, 0, 2, 20])),
        ("no VIP", arp(1, ASKER_MAC, ASKER4, [10, 100, 0, 1])),
        ("gratuitous ARP of another node for the VIP", arp(1, ASKER_MAC, vip4(), vip4())),
        ("an ARP reply", arp(2, ASKER_MAC, ASKER4, vip4())),
        ("truncated", arp(1, ASKER_MAC, ASKER4, vip4())[..14 + 20].to_vec()),
        ("hardware length 8", {
            let mut f = arp(1, ASKER_MAC, ASKER4, vip4());
            f[18] = 8;
            f
        }),
        ("protocol IPv6", {
            let mut f = arp(1, ASKER_MAC, ASKER4, vip4());
            f[16..18].copy_from_slice(&[0x86, 0xdd]);
            f
        }),
    ];
    for (what, frame) in cases {
        let out = lab.run(&frame);
        assert_eq!(out.verdict, XDP_PASS, "{what}");
        out.expect(XDP_PASS, &[Stat::PassNonIp]).untouched();
    }
});

case!(arp_on_an_interface_that_does_not_announce_passes, |lab| {
    announcing(lab);
    let v1 = lab.v1;
    let out = lab.run_on(v1, &arp(1, ASKER_MAC, ASKER4, vip4()));
    out.expect(XDP_PASS, &[Stat::PassNonIp]).untouched();
});

case!(a_vip_no_longer_announced_is_no_longer_answered, |lab| {
    announcing(lab);
    lab.run(&arp(1, ASKER_MAC, ASKER4, vip4())).expect(XDP_PASS, &[Stat::ArpReply]);
    // Its service removed: not answered, although still asked for.
    lab.apply(vec![service("dns6", VIP6, 53, Udp, Snat, &[("[fd00:1::2]:5353", 1)])]);
    lab.run(&arp(1, ASKER_MAC, ASKER4, vip4())).expect(XDP_PASS, &[Stat::PassNonIp]).untouched();
});

/// The NA in `f`: (eth dst, eth src, IPv6 src, IPv6 dst, hop limit,
/// solicited, override, router, target, the option bytes), the checksum
/// verified by etherparse against the addresses.
#[expect(clippy::type_complexity, reason = "a tuple to compare at once")]
fn na_fields(f: &[u8]) -> ([u8; 6], [u8; 6], [u8; 16], [u8; 16], u8, bool, bool, bool, [u8; 16], Vec<u8>) {
    let p = SlicedPacket::from_ethernet(f).expect("an Ethernet frame");
    let Some(LinkSlice::Ethernet2(eth)) = p.link else { panic!("not Ethernet II") };
    let Some(NetSlice::Ipv6(ip)) = &p.net else { panic!("not IPv6") };
    let h = ip.header();
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else { panic!("not ICMPv6") };
    let payload = icmp.payload();
    let Icmpv6Type::NeighborAdvertisement(na) = icmp.icmp_type() else {
        panic!("not a neighbour advertisement: {:?}", icmp.icmp_type())
    };
    let want = icmp.icmp_type().calc_checksum(h.source(), h.destination(), payload).expect("checksum");
    assert_eq!(icmp.checksum(), want, "ICMPv6 checksum (etherparse's computation)");
    assert_eq!(icmp.code_u8(), 0);
    (
        eth.destination(),
        eth.source(),
        h.source(),
        h.destination(),
        h.hop_limit(),
        na.solicited,
        na.r#override,
        na.router,
        payload[..16].try_into().unwrap(),
        payload[16..].to_vec(),
    )
}

fn tlla() -> Vec<u8> {
    let mut o = vec![2, 1];
    o.extend_from_slice(&V0_L2_MAC);
    o
}

case!(neighbour_solicitation_for_an_announced_vip_gets_an_advertisement, |lab| {
    announcing(lab);
    let out = lab.run(&ns(ASKER6, VIP6));
    out.expect(XDP_PASS, &[Stat::NdpAdvert]);
    l2_handoff(&out, lab.v0);
    assert_eq!(
        na_fields(&out.frame),
        (ASKER_MAC, V0_L2_MAC, v6(VIP6), v6(ASKER6), 255, true, true, false, v6(VIP6), tlla())
    );
    assert_eq!(out.frame.len(), 86);
    let v0 = lab.v0;
    lab.set_iface(v0, IF_F_TX);
    lab.run(&ns(ASKER6, VIP6)).expect(XDP_TX, &[Stat::NdpAdvert]).no_meta();
});

case!(duplicate_address_detection_for_a_vip_is_answered_to_all_nodes, |lab| {
    announcing(lab);
    let frame = ns("::", VIP6);
    assert_eq!(frame.len(), 78, "no source link-layer option: the answer is longer");
    let out = lab.run(&frame);
    out.expect(XDP_PASS, &[Stat::NdpAdvert]);
    assert_eq!(
        na_fields(&out.frame),
        ([0x33, 0x33, 0, 0, 0, 1], V0_L2_MAC, v6(VIP6), v6("ff02::1"), 255, false, true, false, v6(VIP6), tlla())
    );
});

case!(neighbour_solicitations_not_for_an_announced_vip_pass, |lab| {
    announcing(lab);
    // For another address.
    lab.run(&ns(ASKER6, "fd00:100::1")).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    // Hop limit not 255 (routed: forged or not from the link).
    let mut f = ns(ASKER6, VIP6);
    f[14 + 7] = 64;
    lab.run(&f).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    // On an interface that does not announce.
    let v1 = lab.v1;
    lab.run_on(v1, &ns(ASKER6, VIP6)).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    // Truncated (no complete target).
    let f = ns(ASKER6, VIP6);
    let short = &f[..14 + 40 + 12];
    // Not answered: the IPv6 parser drops it as malformed, as before.
    lab.run(short).expect(XDP_DROP, &[Stat::DropMalformed]);
});

// ---------------------------------------------------------------------------
// Frames flooded by a switch (unknown unicast): only the addressee balances.
// ---------------------------------------------------------------------------

/// Another node's MAC on the segment.
const OTHER_NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb0];

/// Client → VIP packets of every family and protocol (a TCP SYN for TCP),
/// from the client's MAC to `dst_mac`.
fn vip_packets(dst_mac: [u8; 6]) -> Vec<(&'static str, Pkt)> {
    vec![
        ("UDP4", client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0)),
        ("TCP4 SYN", client_pkt(Tcp, &sa(CLIENT4, 33001), &sa(VIP4, 80), TCP_SYN)),
        ("UDP6", client_pkt(Udp, &sa(CLIENT6, 33000), &sa(VIP6, 53), 0)),
        ("TCP6 SYN", client_pkt(Tcp, &sa(CLIENT6, 33001), &sa(VIP6, 80), TCP_SYN)),
    ]
    .into_iter()
    .map(|(what, p)| {
        let client = if p.is_v6() { CLIENT6 } else { CLIENT4 };
        (what, p.macs(mac(client), dst_mac))
    })
    .collect()
}

/// `announcing`, plus TCP services on both VIPs.
fn announcing_udp_and_tcp(lab: &mut Lab) {
    announcing(lab);
    lab.apply(vec![
        service("dns4", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]),
        service("dns6", VIP6, 53, Udp, Snat, &[("[fd00:1::2]:5353", 1)]),
        service("web4", VIP4, 80, Tcp, Snat, &[("10.1.0.2:8080", 1)]),
        service("web6", VIP6, 80, Tcp, Snat, &[("[fd00:1::2]:8080", 1)]),
    ]);
}

case!(vip_packet_to_another_hosts_mac_on_an_announce_interface_passes, |lab| {
    announcing_udp_and_tcp(lab);
    for (what, pkt) in vip_packets(OTHER_NODE_MAC) {
        let out = lab.run(&pkt.build());
        assert_eq!(out.verdict, XDP_PASS, "{what}");
        out.expect(XDP_PASS, &[Stat::PassOtherHost]).untouched();
        assert!(lab.flow(&pkt).is_none(), "{what}: a flow was recorded for a frame not addressed to this node");
    }
    assert_eq!(lab.flow_count(), 0);
    assert_eq!(lab.reverse_count(), 0);
    assert_eq!(lab.service_counter(VIP4, 53, Udp).packets, 0);
    // A flow this node already balances: its next packet, flooded, is not
    // translated again (the addressee handles it).
    let pkt = udp4_to_vip().macs(mac(CLIENT4), V0_L2_MAC);
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
    let flooded = pkt.macs(mac(CLIENT4), OTHER_NODE_MAC);
    lab.run(&flooded.build()).expect(XDP_PASS, &[Stat::PassOtherHost]).untouched();
    // An echo request to the VIP, flooded: not answered here.
    let echo = Pkt::icmp(CLIENT4, VIP4).macs(mac(CLIENT4), OTHER_NODE_MAC).payload(b"ping");
    lab.run(&echo.build()).expect(XDP_PASS, &[Stat::PassOtherHost]).untouched();
});

case!(vip_packet_to_the_announce_interfaces_own_mac_is_balanced, |lab| {
    announcing_udp_and_tcp(lab);
    for (what, pkt) in vip_packets(V0_L2_MAC) {
        let out = lab.run(&pkt.build());
        assert_eq!(out.verdict, XDP_PASS, "{what}");
        out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
        assert!(lab.flow(&pkt).is_some(), "{what}: no flow");
    }
    let echo = Pkt::icmp(CLIENT4, VIP4).macs(mac(CLIENT4), V0_L2_MAC).payload(b"ping");
    lab.run(&echo.build()).expect(XDP_PASS, &[Stat::IcmpEcho, Stat::FwdKernel]).to_tc(lab.v0);
});

case!(vip_packet_to_a_group_mac_is_balanced_as_before, |lab| {
    announcing_udp_and_tcp(lab);
    // Broadcast, IPv4 multicast, IPv6 multicast: group addresses, not
    // another host's.
    for (g, group) in [[0xff; 6], [0x01, 0, 0x5e, 0, 0, 1], [0x33, 0x33, 0, 0, 0, 1]].into_iter().enumerate() {
        for (k, (what, pkt)) in vip_packets(group).into_iter().enumerate() {
            // A new flow each time.
            let pkt = pkt.src_port(40000 + (g * 10 + k) as u16);
            let out = lab.run(&pkt.build());
            assert_eq!(out.verdict, XDP_PASS, "{what} to {group:02x?}");
            out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
        }
    }
});

case!(vip_packet_to_another_mac_on_a_non_announce_interface_is_balanced_as_before, |lab| {
    announcing_udp_and_tcp(lab);
    // v1 announces nothing: XDP does not know its MAC, nothing changes there.
    let v1 = lab.v1;
    for (what, pkt) in vip_packets(OTHER_NODE_MAC) {
        let out = lab.run_on(v1, &pkt.build());
        assert_eq!(out.verdict, XDP_PASS, "{what}");
        out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
    }
    // v0 no longer an announce interface: balanced there too, as before.
    let v0 = lab.v0;
    lab.writer.remove_l2_interface(v0).expect("XLB_L2_IFACES");
    let (what, pkt) = vip_packets(OTHER_NODE_MAC).remove(0);
    let out = lab.run(&pkt.src_port(34000).build());
    assert_eq!(out.verdict, XDP_PASS, "{what}");
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
});
