//! A service's reject share (`reject_weight`: a Gateway backendRef that does
//! not resolve keeps its weighted share of new flows): the new flows whose
//! pick lands on it are answered as for a service without a usable backend
//! (UDP: ICMP port unreachable, TCP SYN: RST, anything else dropped) and
//! counted (`reject_share`); the others are forwarded.

use super::no_backend::{port_unreachable, rst_for};
use super::*;

/// VIP4:`port` with two backends of weight 35 and a reject share of 30
/// (30 % of new flows rejected).
fn gateway_like(lab: &mut Lab, proto: Protocol, port: u16) {
    let mut s = service("gw", VIP4, port, proto, Snat, &[(BACKENDS4[0], 35), (BACKENDS4[1], 35)]);
    s.reject_weight = 30;
    lab.apply(vec![s]);
}

/// Whether a run landed on the reject share.
fn rejected(out: &harness::Out) -> bool {
    out.delta.get(Stat::RejectShare) == 1
}

case!(udp_on_the_reject_share_answers_port_unreachable, |lab| {
    gateway_like(lab, Udp, 53);
    let (mut refused, mut forwarded) = (Vec::new(), 0u64);
    for port in 20000..20400u16 {
        let pkt = client_pkt(Udp, &sa(CLIENT4, port), &sa(VIP4, 53), 0);
        let out = lab.run(&pkt.build());
        if rejected(&out) {
            out.expect(XDP_PASS, &[Stat::RejectShare, Stat::Reject, Stat::FwdKernel]).to_tc(lab.v0);
            out.bytes_are(&port_unreachable(&pkt, V0_MAC, mac(CLIENT4)));
            assert!(lab.flow(&pkt).is_none(), "no flow for a rejected datagram");
            refused.push(pkt);
        } else {
            out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
            let d = out.decoded();
            assert!(BACKENDS4[..2].contains(&d.dst_sock().to_string().as_str()), "to a backend: {}", d.dst_sock());
            out.frame_is(&rewritten(&pkt, V0_MAC, mac(&d.dst.to_string()), d.src_sock(), d.dst_sock()));
            forwarded += 1;
        }
    }
    // 30 % of 400 new flows, within the spread of the flow hash.
    let share = refused.len() as f64 / 400.0;
    assert!((0.22..=0.38).contains(&share), "reject share {share} ({} of 400)", refused.len());
    assert_eq!(lab.flow_count() as u64, forwarded, "a flow for each forwarded datagram only");
    let to_backends: u64 = BACKENDS4[..2].iter().map(|b| lab.backend_packets(b)).sum();
    assert_eq!(to_backends, forwarded);
    assert_eq!(lab.service_counter(VIP4, 53, Udp).packets, forwarded, "rejects are not the service's traffic");
    // A flow's next datagram lands there again: rejected again.
    let again = lab.run(&refused[0].build());
    again.expect(XDP_PASS, &[Stat::RejectShare, Stat::Reject, Stat::FwdKernel]);
});

case!(tcp_syn_on_the_reject_share_answers_rst, |lab| {
    gateway_like(lab, Tcp, 80);
    let (mut refused, mut forwarded) = (Vec::new(), 0);
    for port in 50000..50200u16 {
        let syn =
            client_pkt(Tcp, &sa(CLIENT4, port), &sa(VIP4, 80), TCP_SYN).tcp_seq(1000, 0).tcp_options(&SYN_OPTIONS);
        let out = lab.run(&syn.build());
        if rejected(&out) {
            out.expect(XDP_PASS, &[Stat::RejectShare, Stat::Reject, Stat::FwdKernel]).to_tc(lab.v0);
            out.frame_is(&rst_for(&syn, V0_MAC, mac(CLIENT4)));
            assert!(lab.flow(&syn).is_none());
            refused.push(port);
        } else {
            out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
            assert!(lab.flow(&syn).is_some(), "a forwarded SYN opens a flow");
            forwarded += 1;
        }
    }
    assert!(!refused.is_empty() && forwarded > 0, "both kinds: {} refused, {forwarded} forwarded", refused.len());
    let share = refused.len() as f64 / 200.0;
    assert!((0.2..=0.4).contains(&share), "reject share {share}");
    // A packet that is no SYN and has no flow, landing there: dropped as
    // for a service without a backend (nothing to answer it with).
    let ack = client_pkt(Tcp, &sa(CLIENT4, refused[0]), &sa(VIP4, 80), TCP_ACK);
    lab.run(&ack.build()).expect(XDP_DROP, &[Stat::RejectShare, Stat::DropNoBackend]);
    assert_eq!(lab.flow_count(), forwarded);
});

case!(reject_share_alone_rejects_every_new_flow, |lab| {
    // No usable backend: every new flow is rejected (no table: counted as
    // for any service without a usable backend).
    let mut only = service("only", VIP4, 53, Udp, Snat, &[]);
    only.reject_weight = 100;
    let mut drained = service("drained", VIP4, 54, Udp, Snat, &[(BACKENDS4[0], 0)]);
    drained.reject_weight = 100;
    lab.apply(vec![only, drained]);
    for (port, vport) in (30000..30020u16).zip([53, 54].into_iter().cycle()) {
        let pkt = client_pkt(Udp, &sa(CLIENT4, port), &sa(VIP4, vport), 0);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::Reject, Stat::FwdKernel]);
        out.bytes_are(&port_unreachable(&pkt, V0_MAC, mac(CLIENT4)));
    }
    assert_eq!(lab.flow_count(), 0);
});

case!(flows_stay_when_a_reject_share_appears, |lab| {
    // Flows forwarded before the share appears keep their backend: the
    // share takes new flows only.
    three_backends(lab, Udp, [1, 1, 1]);
    let flows = open_flows(lab, 21000..21100);
    let mut s = service("svc", VIP4, 53, Udp, Snat, &[(BACKENDS4[0], 1), (BACKENDS4[1], 1), (BACKENDS4[2], 1)]);
    s.reject_weight = 3;
    lab.apply(vec![s]);
    for (port, be) in &flows {
        let pkt = client_pkt(Udp, &sa(CLIENT4, *port), &sa(VIP4, 53), 0);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
        assert_eq!(out.decoded().dst_sock(), *be, "client port {port} kept its backend");
    }
    let mut refused = 0;
    for port in 22000..22200u16 {
        let out = lab.run(&client_pkt(Udp, &sa(CLIENT4, port), &sa(VIP4, 53), 0).build());
        refused += i32::from(rejected(&out));
    }
    assert!((60..=140).contains(&refused), "half of 200 new flows rejected: {refused}");
});
