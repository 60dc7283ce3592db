//! Client → VIP, every family × protocol × source mode. / Replies of tracked flows.

use super::*;

// ---------------------------------------------------------------------------
// Client → VIP, every family × protocol × source mode.
// ---------------------------------------------------------------------------

/// Client → VIP:53 of a one-backend service with XLB_IFACES empty: the packet
/// is rewritten and handed to tc (XDP_PASS + metadata naming v0).
fn forward_case(lab: &mut Lab, proto: Protocol, v6: bool, source: SourceMode) {
    let (client, vip, backend, snat) = if v6 {
        (sa(CLIENT6, 33000), VIP6, "[fd00:1::2]:8053", "fd00:1::1")
    } else {
        (sa(CLIENT4, 33000), VIP4, "10.1.0.2:8053", "10.1.0.1")
    };
    lab.apply(vec![service("svc", vip, 53, proto, source, &[(backend, 1)])]);
    let pkt = client_pkt(proto, &client, &sa(vip, 53), TCP_SYN);
    let frame = pkt.build();
    let out = lab.run(&frame);
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);

    let d = out.decoded();
    let src = match source {
        Snat => {
            assert!(in_snat_range(d.sport), "SNAT port {} outside the range", d.sport);
            SocketAddr::new(snat.parse().unwrap(), d.sport)
        }
        Preserve => pkt.src,
    };
    out.frame_is(&rewritten(&pkt, V0_MAC, mac(backend), src, sock(backend)));

    assert_eq!(lab.service_counter(vip, 53, proto), Counter { packets: 1, bytes: ip_len(&frame, 14) });
    assert_eq!(lab.backend_packets(backend), 1);
    let flow = lab.flow(&pkt).expect("a flow entry for the client tuple");
    assert_eq!(flow.backend_id, lab.backend_id(backend));
    assert_eq!(flow.state, FLOW_OPEN);
    assert_eq!(u16::from_be(flow.snat_port), if source == Snat { d.sport } else { 0 });
}

case!(udp4_snat_to_backend, |lab| forward_case(lab, Udp, false, Snat));
case!(tcp4_snat_to_backend, |lab| forward_case(lab, Tcp, false, Snat));
case!(udp6_snat_to_backend, |lab| forward_case(lab, Udp, true, Snat));
case!(tcp6_snat_to_backend, |lab| forward_case(lab, Tcp, true, Snat));
case!(udp4_preserve_to_backend, |lab| forward_case(lab, Udp, false, Preserve));
case!(tcp4_preserve_to_backend, |lab| forward_case(lab, Tcp, false, Preserve));
case!(udp6_preserve_to_backend, |lab| forward_case(lab, Udp, true, Preserve));
case!(tcp6_preserve_to_backend, |lab| forward_case(lab, Tcp, true, Preserve));

// The hand-off to tc names this node (`XLB_SETTINGS.node_tag`) and the
// interface the packet came in on, so another node's or another device's
// tc program cannot mistake it for its own (issue 10, defect 0).
case!(handoff_to_tc_names_node_and_ingress, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0);
    let (v0, v1) = (lab.v0, lab.v1);
    let want = |ingress: u32, node_tag: u32| ForwardMeta { magic: META_MAGIC_ROUTED, ifindex: v0, ingress, node_tag };
    let meta = |out: &harness::Out| {
        let w = |i: usize| u32::from_ne_bytes(out.meta[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(out.meta.len(), 16, "forward metadata length");
        ForwardMeta { magic: w(0), ifindex: w(1), ingress: w(2), node_tag: w(3) }
    };
    let out = lab.run_on(v1, &pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(meta(&out), want(v1, LAB_NODE_TAG), "arrived on v1, out of v0");
    lab.set_node_tag(0x1234_5678);
    let out = lab.run_on(v0, &pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(meta(&out), want(v0, 0x1234_5678), "arrived on v0 after the node tag changed");
});

// ---------------------------------------------------------------------------
// Replies of tracked flows.
// ---------------------------------------------------------------------------

/// A client packet to the VIP, then the backend's reply to the tuple seen
/// in the output: the reply leaves from VIP:port to the client.
fn reply_case(lab: &mut Lab, proto: Protocol, v6: bool, source: SourceMode) {
    let (client, vip, backend) =
        if v6 { (sa(CLIENT6, 33100), VIP6, "[fd00:1::3]:8053") } else { (sa(CLIENT4, 33100), VIP4, "10.1.0.3:8053") };
    lab.apply(vec![service("svc", vip, 53, proto, source, &[(backend, 1)])]);
    let pkt = client_pkt(proto, &client, &sa(vip, 53), TCP_SYN);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let d = out.decoded();
    assert_eq!(d.dst_sock(), sock(backend));

    // The backend answers the tuple it saw.
    let reply = match proto {
        Udp => Pkt::udp(backend, &d.src_sock().to_string()),
        Tcp => Pkt::tcp(backend, &d.src_sock().to_string(), TCP_SYN | TCP_ACK),
    }
    .macs(mac(backend), V0_MAC)
    .payload(b"the answer");
    // SNAT: a reverse entry per flow. Preserve, with backends of its own:
    // none, the backend's note translates the reply (`notes`).
    let want_reverse = source == Snat;
    assert_eq!(lab.reverse(&reply).is_some(), want_reverse, "reverse entry for {}", d.src_sock());
    let back = lab.run(&reply.build());
    back.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]).to_tc(lab.v0);
    back.frame_is(&rewritten(&reply, V0_MAC, mac(&client), sock(&sa(vip, 53)), pkt.src));

    // Counters count the client → backend direction only.
    assert_eq!(lab.service_counter(vip, 53, proto).packets, 1);
    assert_eq!(lab.backend_packets(backend), 1);
}

case!(reply_translated_snat_udp4, |lab| reply_case(lab, Udp, false, Snat));
case!(reply_translated_snat_tcp6, |lab| reply_case(lab, Tcp, true, Snat));
case!(reply_translated_preserve_tcp4, |lab| reply_case(lab, Tcp, false, Preserve));
case!(reply_translated_preserve_udp6, |lab| reply_case(lab, Udp, true, Preserve));
case!(reply_translated_snat_tcp4, |lab| reply_case(lab, Tcp, false, Snat));
case!(reply_translated_preserve_udp4, |lab| reply_case(lab, Udp, false, Preserve));
