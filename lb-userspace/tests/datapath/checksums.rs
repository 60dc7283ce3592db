//! Checksums.

use super::*;

case!(udp4_zero_checksum_stays_zero, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0).csum(Csum::Zero);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
    let d = out.decoded();
    out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), sock(&sa("10.1.0.1", d.sport)), sock("10.1.0.2:5353")));
});

case!(udp_checksum_computing_to_zero_is_sent_as_ffff, |lab| {
    // Choose two payload bytes so that the rewritten datagram's checksum
    // computes to 0, which UDP must send as 0xffff.
    lab.apply(vec![service("dns", VIP4, 53, Udp, Preserve, &[("10.1.0.2:5353", 1)])]);
    // With the first payload word 0 the rewritten checksum is `c`; a first
    // word `c` adds ~sum to the sum, which then complements to 0.
    let base = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0).payload(b"\0\0zero");
    let after = rewritten(&base, V0_MAC, mac("10.1.0.2"), base.src, sock("10.1.0.2:5353"));
    let w = frame::decode(&after.build()).expect("decodes").l4_csum.to_be_bytes();
    let pkt = base.payload(&[w[0], w[1], b'z', b'e', b'r', b'o']);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let d = out.decoded();
    assert_eq!(d.l4_csum, 0xffff, "a computed 0 must be sent as 0xffff\n{d}");
    out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), pkt.src, sock("10.1.0.2:5353")));
});

/// A partial-checksum packet with XDP_TX available on v0: rewritten as a
/// pseudo-header sum and handed to the kernel (it must stay an skb).
fn partial_case(lab: &mut Lab, proto: Protocol, v6: bool) {
    let (client, vip, backend, snat) = if v6 {
        (sa(CLIENT6, 33000), VIP6, "[fd00:1::2]:8053", "fd00:1::1")
    } else {
        (sa(CLIENT4, 33000), VIP4, "10.1.0.2:8053", "10.1.0.1")
    };
    lab.apply(vec![service("svc", vip, 53, proto, Snat, &[(backend, 1)])]);
    let v0 = lab.v0;
    lab.set_iface(v0, IF_F_TX | IF_F_REDIRECT);
    lab.add_tx_port(v0);
    let pkt = client_pkt(proto, &client, &sa(vip, 53), TCP_SYN).partial();
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(v0);
    let d = out.decoded();
    out.frame_is(&rewritten(&pkt, V0_MAC, mac(backend), sock(&sa(snat, d.sport)), sock(backend)));
}

case!(partial_checksum_udp4_is_rewritten_and_handed_to_kernel, |lab| partial_case(lab, Udp, false));
case!(partial_checksum_tcp6_is_rewritten_and_handed_to_kernel, |lab| partial_case(lab, Tcp, true));

case!(full_checksum_equal_to_pseudo_sum_is_not_taken_for_partial, |lab| {
    // A remote client's datagram whose (correct, complete) checksum
    // equals the folded pseudo-header sum: 1 datagram in 65536.
    lab.apply(vec![service("dns", VIP4, 53, Udp, Preserve, &[("10.1.0.2:5353", 1)])]);
    let base = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0);
    let pkt = (0..=0xffffu16)
        .map(|w| base.clone().payload(&[(w >> 8) as u8, w as u8, 1, 2, 3, 4]))
        .find(|p| {
            let d = frame::decode(&p.build()).unwrap();
            d.l4_csum == d.pseudo
        })
        .expect("some payload makes the checksum equal the pseudo-header sum");
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), pkt.src, sock("10.1.0.2:5353")));
});
