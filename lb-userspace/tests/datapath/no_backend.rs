//! A service without a usable backend: UDP is answered with ICMP port
//! unreachable, a TCP SYN with an RST, anything else is dropped.

use super::*;

/// The ICMP (ICMPv6) port unreachable answering `orig`: from the VIP to the
/// client, quoting the IP header and the first 8 bytes of the datagram.
/// IPv4: id 0, DF, TTL 64; the VLAN tag stays.
pub(crate) fn port_unreachable(orig: &Pkt, eth_src: [u8; 6], eth_dst: [u8; 6]) -> Vec<u8> {
    let (typ, code, quoted) = if orig.is_v6() { (1, 4, 40 + 8) } else { (3, 3, 20 + 8) };
    let env = frame::Envelope {
        vlan: orig.vlan,
        ip_id: 0,
        ..frame::Envelope::new(eth_src, eth_dst, orig.dst.ip(), orig.src.ip())
    };
    env.icmp_error(typ, code, &orig.ip_packet()[..quoted])
}

/// The RST|ACK answering `syn`: seq 0, ack = the SYN's seq + 1, window 0,
/// options and payload cut; a partial checksum stays partial.
pub(crate) fn rst_for(syn: &Pkt, eth_src: [u8; 6], eth_dst: [u8; 6]) -> Pkt {
    let frame::L4::Tcp { seq, .. } = syn.l4 else { panic!("not TCP") };
    let mut r = Pkt::tcp(&syn.dst.to_string(), &syn.src.to_string(), TCP_RST | TCP_ACK)
        .tcp_seq(0, seq.wrapping_add(1))
        .macs(eth_src, eth_dst)
        .payload(b"")
        .csum(syn.csum);
    r.window = 0;
    r.vlan = syn.vlan;
    r
}

case!(udp_without_backend_answers_port_unreachable, |lab| {
    lab.apply(vec![
        service("empty4", VIP4, 53, Udp, Snat, &[]),
        service("empty6", VIP6, 53, Udp, Snat, &[]),
        // All weights 0 is the same as no backend.
        service("drained", VIP4, 54, Udp, Snat, &[("10.1.0.2:53", 0)]),
    ]);
    for (client, vip) in
        [(sa(CLIENT4, 33000), sa(VIP4, 53)), (sa(CLIENT6, 33000), sa(VIP6, 53)), (sa(CLIENT4, 33000), sa(VIP4, 54))]
    {
        let pkt = client_pkt(Udp, &client, &vip, 0);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::Reject, Stat::FwdKernel]).to_tc(lab.v0);
        out.bytes_are(&port_unreachable(&pkt, V0_MAC, mac(&client)));
        assert!(lab.flow(&pkt).is_none(), "no flow for a rejected datagram");
    }
    assert_eq!(lab.service_counter(VIP4, 53, Udp).packets, 0);

    // VLAN-tagged, with XDP_TX available: answered straight back out of v0.
    let v0 = lab.v0;
    lab.set_iface(v0, IF_F_TX | IF_F_REDIRECT);
    lab.add_tx_port(v0);
    let pkt = client_pkt(Udp, &sa(CLIENT4, 33001), &sa(VIP4, 53), 0).vlan(7);
    let out = lab.run(&pkt.build());
    out.expect(XDP_TX, &[Stat::Reject, Stat::FwdTx]).no_meta();
    out.bytes_are(&port_unreachable(&pkt, V0_MAC, mac(CLIENT4)));
    assert_eq!(lab.flow_count(), 0);
});

case!(tcp_syn_without_backend_answers_rst, |lab| {
    lab.apply(vec![service("web4", VIP4, 80, Tcp, Snat, &[]), service("web6", VIP6, 443, Tcp, Preserve, &[])]);
    for (client, vip) in [(sa(CLIENT4, 50000), sa(VIP4, 80)), (sa(CLIENT6, 50000), sa(VIP6, 443))] {
        let syn = client_pkt(Tcp, &client, &vip, TCP_SYN).tcp_seq(0xffff_ffff, 0).tcp_options(&SYN_OPTIONS);
        let out = lab.run(&syn.build());
        out.expect(XDP_PASS, &[Stat::Reject, Stat::FwdKernel]).to_tc(lab.v0);
        out.frame_is(&rst_for(&syn, V0_MAC, mac(&client)));
        assert!(lab.flow(&syn).is_none());
    }
});

case!(service_without_backends_drops_what_it_cannot_answer, |lab| {
    lab.apply(vec![service("web4", VIP4, 80, Tcp, Snat, &[]), service("dns4", VIP4, 53, Udp, Snat, &[])]);
    for flags in [TCP_ACK, TCP_SYN | TCP_ACK, TCP_RST, TCP_FIN | TCP_ACK, TCP_SYN | TCP_RST] {
        let pkt = client_pkt(Tcp, &sa(CLIENT4, 50000), &sa(VIP4, 80), flags);
        lab.run(&pkt.build()).expect(XDP_DROP, &[Stat::DropNoBackend]);
    }
    // A datagram with IPv4 options is not quoted in an ICMP error.
    let pkt = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0).ip_options(&[0x94, 4, 0, 0]);
    lab.run(&pkt.build()).expect(XDP_DROP, &[Stat::DropNoBackend]);
    assert_eq!(lab.flow_count(), 0);
    assert_eq!(lab.service_counter(VIP4, 80, Tcp).packets, 0);
});

case!(rst_for_partial_checksum_syn_stays_an_skb, |lab| {
    // A SYN from a local sender (partial checksum): the RST keeps a partial
    // checksum, so like any partial packet it must go to the kernel even
    // where XDP_TX is available.
    lab.apply(vec![service("web4", VIP4, 80, Tcp, Snat, &[])]);
    let v0 = lab.v0;
    lab.set_iface(v0, IF_F_TX | IF_F_REDIRECT);
    lab.add_tx_port(v0);
    let syn = client_pkt(Tcp, &sa(CLIENT4, 50000), &sa(VIP4, 80), TCP_SYN).partial();
    let out = lab.run(&syn.build());
    out.frame_is(&rst_for(&syn, V0_MAC, mac(CLIENT4)));
    out.expect(XDP_PASS, &[Stat::Reject, Stat::FwdKernel]).to_tc(v0);
});
