//! Data-path tests: the XDP program `xlb_xdp` run through
//! `BPF_PROG_TEST_RUN` on hand-built frames, each case in a fresh network
//! namespace (see `datapath/harness.rs` for the topology) with its own pinned
//! maps, programmed through the real `MapWriter`.
//!
//! Every case asserts the verdict, the output frame (addresses, ports, MACs
//! from the FIB, checksums verified by full recomputation), the global
//! counter deltas (every counter not named must stay unchanged) and, where it
//! matters, the service/backend counters and the connection table.
//!
//! Needs root. Run with
//! `cargo test -p lb-userspace --test datapath -- --test-threads=1`.

#[path = "datapath/frame.rs"]
mod frame;
#[path = "datapath/harness.rs"]
mod harness;

use std::{collections::BTreeMap, net::SocketAddr};

use frame::{csum, fix_ipv4_csum, Csum, Pkt, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use harness::{mac, run_case, service, Lab, LAB_NODE_TAG, V0_MAC, V1_MAC, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use lb_common::{
    Counter, ForwardMeta, Stat, FLOW_CLOSING, FLOW_OPEN, IF_F_REDIRECT, IF_F_TX, META_MAGIC, SNAT_PORT_COUNT, SNAT_PORT_MIN,
};
use xlb::model::{
    Protocol::{self, Tcp, Udp},
    SourceMode::{self, Preserve, Snat},
};

/// `case!(name, |lab| { ... })`: a named `#[test]` running in its own lab.
macro_rules! case {
    ($(#[$m:meta])* $name:ident, $body:expr) => {
        $(#[$m])*
        #[test]
        fn $name() {
            run_case(stringify!($name), $body)
        }
    };
}

const VIP4: &str = "192.0.2.10";
const VIP6: &str = "2001:db8::10";
const CLIENT4: &str = "10.100.0.10";
const CLIENT6: &str = "fd00:100::10";
const BACKENDS4: [&str; 3] = ["10.1.0.2:5353", "10.1.0.3:5353", "10.1.0.4:5353"];

/// "ip:port" with brackets for IPv6.
fn sa(ip: &str, port: u16) -> String {
    SocketAddr::new(ip.parse().unwrap(), port).to_string()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A client packet of `proto` (TCP: `flags`) from the client's neighbour MAC to v0.
fn client_pkt(proto: Protocol, client: &str, dst: &str, flags: u8) -> Pkt {
    let p = match proto {
        Udp => Pkt::udp(client, dst),
        Tcp => Pkt::tcp(client, dst, flags),
    };
    p.macs(mac(client), V0_MAC)
}

/// `p` as it should leave: new MACs, source and destination.
fn rewritten(p: &Pkt, eth_src: [u8; 6], eth_dst: [u8; 6], src: SocketAddr, dst: SocketAddr) -> Pkt {
    let mut w = p.clone().macs(eth_src, eth_dst);
    w.src = src;
    w.dst = dst;
    w
}

/// MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
const SYN_OPTIONS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

fn in_snat_range(port: u16) -> bool {
    (SNAT_PORT_MIN..SNAT_PORT_MIN + SNAT_PORT_COUNT).contains(&port)
}

fn ip_len(frame: &[u8], l3: usize) -> u64 {
    (frame.len() - l3) as u64
}

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
    let want = |ingress: u32, node_tag: u32| ForwardMeta { magic: META_MAGIC, ifindex: v0, ingress, node_tag };
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
// Flows and backend choice.
// ---------------------------------------------------------------------------

fn three_backends(lab: &mut Lab, proto: Protocol, weights: [u16; 3]) {
    let b: Vec<(&str, u16)> = BACKENDS4.iter().copied().zip(weights).collect();
    lab.apply(vec![service("svc", VIP4, 53, proto, Snat, &b)]);
}

/// Sends one new UDP flow per client port; returns port → backend.
fn open_flows(lab: &mut Lab, ports: std::ops::Range<u16>) -> BTreeMap<u16, SocketAddr> {
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
fn one_port_per_backend(flows: &BTreeMap<u16, SocketAddr>) -> BTreeMap<SocketAddr, u16> {
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
    let t0 = xlb::reader::monotonic_ns();
    let syn = client_pkt(Tcp, &sa(CLIENT4, 50000), &sa(VIP4, 80), TCP_SYN).tcp_options(&SYN_OPTIONS);
    let out = lab.run(&syn.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let t1 = xlb::reader::monotonic_ns();
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
    assert_eq!((rev.client, rev.client_port), (xlb::writer::addr16(CLIENT4.parse().unwrap()), 50000u16.to_be()));
    assert_eq!((rev.vip, rev.vip_port), (xlb::writer::addr16(VIP4.parse().unwrap()), 80u16.to_be()));
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
    // Preserve: the same, its reverse entry keyed by the client's tuple.
    lab.apply(vec![service("web", VIP4, 80, Tcp, Preserve, &[("10.1.0.2:8080", 1)])]);
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

// ---------------------------------------------------------------------------
// A service without a usable backend: UDP is answered with ICMP port
// unreachable, a TCP SYN with an RST, anything else is dropped.
// ---------------------------------------------------------------------------

/// The ICMP (ICMPv6) port unreachable answering `orig`: from the VIP to the
/// client, quoting the IP header and the first 8 bytes of the datagram.
fn port_unreachable(orig: &Pkt, eth_src: [u8; 6], eth_dst: [u8; 6]) -> Vec<u8> {
    let f = orig.build();
    let l3 = orig.l3_off();
    let mut out = [eth_dst, eth_src].concat();
    if let Some(id) = orig.vlan {
        out.extend_from_slice(&[0x81, 0x00]);
        out.extend_from_slice(&id.to_be_bytes());
    }
    let (vip, client) = (orig.dst.ip(), orig.src.ip());
    let octets = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    if orig.is_v6() {
        let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&f[l3..l3 + 48]);
        let c = csum::complete(csum::sum(csum::pseudo(vip, client, 58, icmp.len() as u32), &icmp));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        out.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        out.extend_from_slice(&[58, 64]);
        out.extend(octets(vip));
        out.extend(octets(client));
        out.extend(icmp);
    } else {
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&f[l3..l3 + 28]);
        let c = csum::complete(csum::sum(0, &icmp));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&[0x08, 0x00]);
        let ip = out.len();
        out.extend_from_slice(&[0x45, 0, 0, 56, 0, 0, 0x40, 0, 64, 1, 0, 0]);
        out.extend(octets(vip));
        out.extend(octets(client));
        fix_ipv4_csum(&mut out, ip);
        out.extend(icmp);
    }
    out
}

/// The RST|ACK answering `syn`: seq 0, ack = the SYN's seq + 1, window 0,
/// options and payload cut; a partial checksum stays partial.
fn rst_for(syn: &Pkt, eth_src: [u8; 6], eth_dst: [u8; 6]) -> Pkt {
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

case!(
    rst_for_partial_checksum_syn_stays_an_skb,
    |lab| {
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
    }
);

// ---------------------------------------------------------------------------
// SNAT ports, the flood guard, timeouts, backend slots.
// ---------------------------------------------------------------------------

/// The SNAT ports the data path probes, in order, for a client tuple.
fn snat_probes(pkt: &Pkt) -> Vec<u16> {
    let k = harness::flow_key(pkt);
    let base = lb_common::hash::flow_hash(&k.src, &k.dst, k.sport, k.dport, k.proto, 0x5eed_5eed);
    (0..lb_common::SNAT_TRIES)
        .map(|i| SNAT_PORT_MIN + (base.wrapping_add(i.wrapping_mul(7919)) % SNAT_PORT_COUNT as u32) as u16)
        .collect()
}

/// Occupies the SNAT port `port` towards 10.1.0.2:5353 with another client's
/// flow, last seen at `last_seen_ns`.
fn occupy_snat_port(lab: &mut Lab, port: u16, last_seen_ns: u64) {
    let be = sock("10.1.0.2:5353");
    let key = lb_common::FlowKey {
        src: xlb::writer::addr16(be.ip()),
        dst: xlb::writer::addr16(ip("10.1.0.1")),
        sport: be.port().to_be(),
        dport: port.to_be(),
        proto: 17,
        _pad: [0; 3],
    };
    let value = lb_common::Reverse {
        client: xlb::writer::addr16(ip(CLIENT4)),
        vip: xlb::writer::addr16(ip(VIP4)),
        client_port: 1u16.to_be(),
        vip_port: 53u16.to_be(),
        service_id: lab.service_id(VIP4, 53, Udp),
        backend_id: lab.backend_id("10.1.0.2:5353"),
        timeout: 30,
        last_seen_ns,
    };
    lab.maps().reverse.insert(key, value, 0).expect("writing XLB_REVERSE");
}

case!(taken_snat_port_probes_the_next_one, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    let probes = snat_probes(&pkt);
    occupy_snat_port(lab, probes[0], xlb::reader::monotonic_ns());
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.decoded().sport, probes[1], "probes {probes:?}");
    out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), sock(&sa("10.1.0.1", probes[1])), sock("10.1.0.2:5353")));
});

case!(snat_probes_past_many_taken_ports, |lab| {
    // Every probe but the last taken by other live flows: still allocated.
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    let probes = snat_probes(&pkt);
    assert!(probes.len() >= 32, "at least 32 probes");
    let now = xlb::reader::monotonic_ns();
    for p in &probes[..probes.len() - 1] {
        occupy_snat_port(lab, *p, now);
    }
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.decoded().sport, *probes.last().unwrap(), "probes {probes:?}");
});

case!(snat_ports_exhausted_drops, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    let probes = snat_probes(&pkt);
    let now = xlb::reader::monotonic_ns();
    for p in &probes {
        occupy_snat_port(lab, *p, now);
    }
    lab.run(&pkt.build()).expect(XDP_DROP, &[Stat::DropSnatExhausted]);
    assert!(lab.flow(&pkt).is_none());
    // An entry idle for longer than its timeout may be taken over.
    occupy_snat_port(lab, probes[5], now - 31_000_000_000);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.decoded().sport, probes[5], "probes {probes:?}");
});

case!(flood_guard_forwards_without_recording, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1), ("10.1.0.3:5353", 1)])]);
    let settings = lb_common::settings::Settings { new_flows_per_cpu: 1, node_tag: LAB_NODE_TAG };
    lab.maps().settings.set(0, settings, 0).expect("writing XLB_SETTINGS");
    // The bucket starts full (one flow): the first new flow is recorded...
    let first = client_pkt(Udp, &sa(CLIENT4, 34000), &sa(VIP4, 53), 0);
    lab.run(&first.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert!(lab.flow(&first).is_some());
    // ...the next ones within the second are forwarded by hash, not recorded.
    let second = client_pkt(Udp, &sa(CLIENT4, 34001), &sa(VIP4, 53), 0);
    let a = lab.run(&second.build());
    a.expect(XDP_PASS, &[Stat::FlowNew, Stat::FloodGuard, Stat::FwdKernel]);
    assert!(lab.flow(&second).is_none(), "a flow above the rate is not recorded");
    let b = lab.run(&second.build());
    b.expect(XDP_PASS, &[Stat::FlowNew, Stat::FloodGuard, Stat::FwdKernel]);
    let (da, db) = (a.decoded(), b.decoded());
    assert_eq!((da.src_sock(), da.dst_sock()), (db.src_sock(), db.dst_sock()), "same backend and SNAT port by hash");
    // Its replies still find their way back.
    let reply = Pkt::udp(&da.dst_sock().to_string(), &da.src_sock().to_string()).macs(mac(&da.dst.to_string()), V0_MAC);
    let back = lab.run(&reply.build());
    back.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]);
    back.frame_is(&rewritten(&reply, V0_MAC, mac(CLIENT4), sock(&sa(VIP4, 53)), second.src));
    // The recorded flow is unaffected.
    lab.run(&first.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
});

// A flow finds its service through the flow's service id (`XLB_SVC_SLOTS`)
// only while that id still serves the flow's VIP, port and protocol: after
// the service went and its id went to a service on another port of the VIP,
// the old flow's packets are not forwarded to its old backend.
case!(flow_of_a_removed_service_is_not_followed_after_id_reuse, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = udp4_to_vip();
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    let old = lab.flow(&pkt).unwrap();
    lab.apply(vec![]);
    lab.apply(vec![service("other", VIP4, 54, Udp, Snat, &[("10.1.0.3:5353", 1)])]);
    assert!(lab.flow(&pkt).is_some_and(|f| f.service_id == old.service_id), "the id was reused and the entry kept");
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::PassVipOtherPort]).untouched();
    // And the service coming back on its port takes new flows again.
    lab.apply(vec![
        service("other", VIP4, 54, Udp, Snat, &[("10.1.0.3:5353", 1)]),
        service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.4:5353", 1)]),
    ]);
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.decoded().dst_sock(), sock("10.1.0.4:5353"));
});

fn with_udp_timeout(lab: &mut Lab, secs: u32) {
    let mut svc = service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]);
    svc.udp_timeout = Some(secs);
    lab.apply(vec![svc]);
}

case!(udp_flow_expires_after_its_idle_timeout, |lab| {
    with_udp_timeout(lab, 1);
    let pkt = udp4_to_vip();
    let first = lab.run(&pkt.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let created = lab.flow(&pkt).unwrap().created_ns;
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = lab.run(&pkt.build());
    again.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert!(lab.flow(&pkt).unwrap().created_ns > created, "a new entry replaced the expired one");
    assert_eq!(again.decoded().src_sock(), first.decoded().src_sock(), "the client's own SNAT port is reused");
});

case!(
    udp_flow_busier_than_its_timeout_does_not_expire,
    |lab| {
        with_udp_timeout(lab, 1);
        let pkt = udp4_to_vip();
        let t0 = std::time::Instant::now();
        lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(600));
            println!("packet at t = {} ms", t0.elapsed().as_millis());
            lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
        }
    }
);

case!(flow_cache_copy_is_used_only_until_the_entry_would_be_refreshed, |lab| {
    // The hot-flow cache keeps a per-CPU copy of a flow's entry (the harness
    // runs every packet on one CPU). To see which one a packet used, the
    // table's entry is pointed at another backend behind the data path's back.
    let mut svc = service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1), ("10.1.0.3:5353", 1)]);
    svc.udp_timeout = Some(1); // copies last until last_seen + min(1 s, 1 s / 2)
    lab.apply(vec![svc]);
    let pkt = udp4_to_vip();
    let first = lab.run(&pkt.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    // The flow's second packet (from the table) leaves the copy.
    lab.run(&pkt.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    let was = first.decoded().dst_sock().to_string();
    let other = if was == "10.1.0.2:5353" { "10.1.0.3:5353" } else { "10.1.0.2:5353" };
    let key = harness::flow_key(&pkt);
    let mut flow = lab.flow(&pkt).unwrap();
    flow.backend_id = lab.backend_id(other);
    flow.backend_gen = lab.maps().backends.get(&flow.backend_id, 0).unwrap().generation;
    lab.maps().flows.insert(key, flow, 0).expect("writing XLB_FLOWS");
    // Within the window: the copy, so still the first backend.
    let hit = lab.run(&pkt.build());
    hit.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(hit.decoded().dst_sock().to_string(), was, "the cached copy is used within its window");
    // Past it (a refresh is due): the table's entry, which is refreshed.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let later = lab.run(&pkt.build());
    later.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(later.decoded().dst_sock().to_string(), other, "the table's entry is used once a refresh is due");
    assert!(lab.flow(&pkt).unwrap().last_seen_ns > flow.last_seen_ns, "and it was refreshed");
    // A new flow epoch (another CPU changed a translation) voids the copy at once.
    let mut flow = lab.flow(&pkt).unwrap();
    flow.backend_id = lab.backend_id(&was);
    flow.backend_gen = lab.maps().backends.get(&flow.backend_id, 0).unwrap().generation;
    lab.maps().flows.insert(key, flow, 0).expect("writing XLB_FLOWS");
    let hit = lab.run(&pkt.build());
    assert_eq!(hit.decoded().dst_sock().to_string(), other, "the copy again");
    let e = lab.flow_epoch();
    lab.set_flow_epoch(e + 1);
    let after = lab.run(&pkt.build());
    after.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(after.decoded().dst_sock().to_string(), was, "a new epoch sends the packet to the table");
});

case!(syn_repicking_a_tuple_voids_the_cached_copies, |lab| {
    let (a, b) = ("10.1.0.2:8080", "10.1.0.3:8080");
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[(a, 1), (b, 1)])]);
    let syn = client_pkt(Tcp, &sa(CLIENT4, 50030), &sa(VIP4, 80), TCP_SYN);
    let ack = syn.clone().tcp_flags(TCP_ACK);
    let first = lab.run(&syn.build());
    first.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    lab.run(&ack.build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    let was = first.decoded().dst_sock().to_string();
    let other = if was == a { b } else { a };
    // Drain the tuple's backend (weight 0: its flows stay, new ones avoid it);
    // the same tuple's next SYN is a new connection, picked elsewhere.
    let w = |addr: &str| if addr == was { 0 } else { 1 };
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[(a, w(a)), (b, w(b))])]);
    let e0 = lab.flow_epoch();
    let again = lab.run(&syn.build());
    again.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(again.decoded().dst_sock().to_string(), other);
    assert_ne!(lab.flow_epoch(), e0, "a changed translation moves the epoch (other CPUs' copies go)");
    let next = lab.run(&ack.build());
    next.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(next.decoded().dst_sock().to_string(), other, "the voided copy is not used: the rewritten entry is");
    // The same SYN again, same pick: nothing changed, the epoch stays.
    let e1 = lab.flow_epoch();
    lab.run(&syn.build()).expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(lab.flow_epoch(), e1);
});

case!(reused_backend_slot_does_not_inherit_flows, |lab| {
    three_backends(lab, Udp, [1, 1, 1]);
    let flows = open_flows(lab, 25000..25060);
    let ports = one_port_per_backend(&flows);
    let gone = sock(BACKENDS4[1]);
    let old_id = lab.backend_id(BACKENDS4[1]);
    let pkt = client_pkt(Udp, &sa(CLIENT4, ports[&gone]), &sa(VIP4, 53), 0);
    let old_gen = lab.flow(&pkt).unwrap().backend_gen;
    // Remove it, then add another backend: it takes the free slot.
    lab.apply(vec![service("svc", VIP4, 53, Udp, Snat, &[(BACKENDS4[0], 1), (BACKENDS4[2], 1)])]);
    let newcomer = "10.1.0.4:7777";
    lab.apply(vec![service("svc", VIP4, 53, Udp, Snat, &[(BACKENDS4[0], 1), (BACKENDS4[2], 1), (newcomer, 1)])]);
    assert_eq!(lab.backend_id(newcomer), old_id, "the newcomer reuses the slot");
    // The old flow is re-picked, not sent to whoever holds the slot now.
    let out = lab.run(&pkt.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let flow = lab.flow(&pkt).unwrap();
    let holder = out.decoded().dst_sock();
    assert_eq!(flow.backend_id, lab.backend_id(&holder.to_string()));
    if flow.backend_id == old_id {
        assert_ne!(flow.backend_gen, old_gen, "re-picked onto the slot: with the new generation");
    }
});

// ---------------------------------------------------------------------------
// Frame shapes the parser must handle.
// ---------------------------------------------------------------------------

case!(vlan_tagged_frame_to_vip, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)])]);
    let pkt = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0).vlan(100);
    let frame = pkt.build();
    let out = lab.run(&frame);
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
    let d = out.decoded();
    assert_eq!(d.vlan, Some(100), "the tag stays");
    out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), sock(&sa("10.1.0.1", d.sport)), sock("10.1.0.2:5353")));
    assert_eq!(lab.service_counter(VIP4, 53, Udp).bytes, ip_len(&frame, 18));

    // One 802.1ad (S-)tag is accepted the same way, and stays.
    let pkt = pkt.src_port(33001);
    let mut frame = pkt.build();
    frame[12..14].copy_from_slice(&[0x88, 0xa8]);
    let out = lab.run(&frame);
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
    let mut tagged = out.frame.clone();
    tagged[12..14].copy_from_slice(&[0x81, 0x00]);
    let d = frame::decode(&tagged).expect("decodes");
    let mut want = rewritten(&pkt, V0_MAC, mac("10.1.0.2"), d.src_sock(), sock("10.1.0.2:5353")).build();
    want[12..14].copy_from_slice(&[0x88, 0xa8]);
    out.bytes_are(&want);
});

case!(ipv4_options_to_vip, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Preserve, &[("10.1.0.2:5353", 1)])]);
    // Router alert (IHL 6): read as ports at the wrong offset it would be
    // 0x9404 → 0, no service. Then the longest header (IHL 15).
    let nops = [1u8; 39];
    for (port, opts) in [(33001, &[0x94u8, 0x04, 0, 0][..]), (33002, &nops[..])] {
        let pkt = client_pkt(Udp, &sa(CLIENT4, port), &sa(VIP4, 53), 0).ip_options(opts);
        let out = lab.run(&pkt.build());
        out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(lab.v0);
        out.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), pkt.src, sock("10.1.0.2:5353")));
    }
});

case!(padded_short_frame_to_vip, |lab| {
    // A 2-byte datagram padded to the 60-byte Ethernet minimum: lengths come
    // from the IP header, the padding is left alone.
    lab.apply(vec![service("dns", VIP4, 53, Udp, Preserve, &[("10.1.0.2:5353", 1)])]);
    let pkt = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0).payload(b"hi");
    let mut frame = pkt.build();
    assert_eq!(frame.len(), 44);
    frame.resize(60, 0);
    let out = lab.run(&frame);
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    assert_eq!(out.frame.len(), 60);
    assert_eq!(&out.frame[44..], &[0u8; 16], "padding untouched");
    let mut trimmed = harness::Out { frame: out.frame[..44].to_vec(), ..out };
    trimmed.input.truncate(44);
    trimmed.frame_is(&rewritten(&pkt, V0_MAC, mac("10.1.0.2"), pkt.src, sock("10.1.0.2:5353")));
    assert_eq!(lab.service_counter(VIP4, 53, Udp).bytes, 30, "bytes are the IP length, not the frame's");
});

// ---------------------------------------------------------------------------
// Passed untouched.
// ---------------------------------------------------------------------------

fn dns_service(lab: &mut Lab) {
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

case!(ipv4_fragments_follow_their_first_fragment, |lab| fragments_case(lab, false));
case!(ipv6_fragments_follow_their_first_fragment, |lab| fragments_case(lab, true));

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

// ---------------------------------------------------------------------------
// Malformed → XDP_DROP + drop_malformed.
// ---------------------------------------------------------------------------

fn drops_malformed(lab: &mut Lab, what: &str, frame: &[u8]) {
    let out = lab.run(frame);
    assert_eq!(out.verdict, XDP_DROP, "{what}: expected XDP_DROP, got verdict {}", out.verdict);
    out.expect(XDP_DROP, &[Stat::DropMalformed]);
}

fn udp4_to_vip() -> Pkt {
    client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0)
}

fn set_tot_len(f: &mut [u8], l3: usize, tot: usize) {
    f[l3 + 2..l3 + 4].copy_from_slice(&(tot as u16).to_be_bytes());
    fix_ipv4_csum(f, l3);
}

case!(truncated_ethernet_drops, |lab| {
    dns_service(lab);
    // An 802.1Q ethertype without the tag behind it.
    let mut f = udp4_to_vip().build();
    f.truncate(14);
    f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    drops_malformed(lab, "VLAN ethertype, no tag", &f);
    // The tag but no inner header.
    let mut f = udp4_to_vip().vlan(5).build();
    f.truncate(17);
    drops_malformed(lab, "half a VLAN tag", &f);
    // Shorter than an Ethernet header: the kernel refuses to run such a
    // frame at all (a NIC never delivers one), so XDP never sees it.
    let f = udp4_to_vip().build();
    let v0 = lab.v0;
    assert!(lab.try_run_on(v0, &f[..10]).is_err(), "BPF_PROG_TEST_RUN accepted a 10-byte frame");
});

case!(truncated_ipv4_header_drops, |lab| {
    dns_service(lab);
    let f = udp4_to_vip().build();
    drops_malformed(lab, "IPv4 header cut at 12 bytes", &f[..14 + 12]);
    drops_malformed(lab, "IPv4 header cut at 19 bytes", &f[..14 + 19]);
    // IHL 15: a 60-byte header in a 28-byte packet.
    let mut f = udp4_to_vip().payload(b"").build();
    f[14] = 0x4f;
    drops_malformed(lab, "IHL 15 beyond the frame", &f);
});

case!(ipv4_ihl_below_5_drops, |lab| {
    dns_service(lab);
    for vihl in [0x44u8, 0x40, 0x41] {
        let mut f = udp4_to_vip().build();
        f[14] = vihl;
        fix_ipv4_csum(&mut f, 14);
        drops_malformed(lab, &format!("vihl {vihl:#x}"), &f);
    }
    // Version 5 with IHL 5 is not IPv4 either.
    let mut f = udp4_to_vip().build();
    f[14] = 0x55;
    fix_ipv4_csum(&mut f, 14);
    drops_malformed(lab, "version 5", &f);
});

case!(ipv4_tot_len_beyond_frame_drops, |lab| {
    dns_service(lab);
    let mut f = udp4_to_vip().build();
    let real = f.len() - 14;
    set_tot_len(&mut f, 14, real + 1);
    drops_malformed(lab, "tot_len one byte too long", &f);
    set_tot_len(&mut f, 14, 0xffff);
    drops_malformed(lab, "tot_len 65535", &f);
    set_tot_len(&mut f, 14, 19);
    drops_malformed(lab, "tot_len below the header", &f);
});

case!(truncated_udp_header_drops, |lab| {
    dns_service(lab);
    // The frame ends 4 bytes into the UDP header.
    let mut f = udp4_to_vip().payload(b"").build();
    f.truncate(14 + 20 + 4);
    set_tot_len(&mut f, 14, 24);
    drops_malformed(lab, "frame ends inside the UDP header", &f);
    // The frame holds 8 bytes but the IP length leaves only 4 for UDP.
    let mut f = udp4_to_vip().payload(b"").build();
    set_tot_len(&mut f, 14, 24);
    drops_malformed(lab, "IP length ends inside the UDP header", &f);
    // IPv6: payload length 4.
    let mut f = client_pkt(Udp, &sa(CLIENT6, 33000), &sa(VIP6, 53), 0).payload(b"").build();
    f[18..20].copy_from_slice(&4u16.to_be_bytes());
    drops_malformed(lab, "IPv6 payload length ends inside the UDP header", &f);
});

case!(truncated_tcp_header_drops, |lab| {
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[("10.1.0.2:8080", 1)])]);
    let pkt = client_pkt(Tcp, &sa(CLIENT4, 50000), &sa(VIP4, 80), TCP_SYN).payload(b"");
    let mut f = pkt.build();
    f.truncate(14 + 20 + 12);
    set_tot_len(&mut f, 14, 32);
    drops_malformed(lab, "frame ends inside the TCP header", &f);
    let mut f = pkt.build();
    set_tot_len(&mut f, 14, 20 + 16);
    drops_malformed(lab, "IP length ends inside the TCP header", &f);
});

case!(tcp_doff_below_5_drops, |lab| {
    lab.apply(vec![service("web", VIP4, 80, Tcp, Snat, &[("10.1.0.2:8080", 1)])]);
    let pkt = client_pkt(Tcp, &sa(CLIENT4, 50000), &sa(VIP4, 80), TCP_SYN);
    for doff in [0u8, 4] {
        let mut f = pkt.build();
        f[pkt.l4_off() + 12] = doff << 4;
        drops_malformed(lab, &format!("doff {doff}"), &f);
    }
    // doff larger than the segment.
    let mut f = pkt.clone().payload(b"").build();
    f[pkt.l4_off() + 12] = 6 << 4;
    drops_malformed(lab, "doff 6 with a 20-byte segment", &f);
    assert_eq!(lab.flow_count(), 0);
});

case!(ipv6_truncated_or_oversized_drops, |lab| {
    dns_service(lab);
    let pkt = client_pkt(Udp, &sa(CLIENT6, 33000), &sa(VIP6, 53), 0);
    let f = pkt.build();
    drops_malformed(lab, "IPv6 header cut at 39 bytes", &f[..14 + 39]);
    let mut g = f.clone();
    let payload = (f.len() - 54) as u16;
    g[18..20].copy_from_slice(&(payload + 1).to_be_bytes());
    drops_malformed(lab, "IPv6 payload length one byte too long", &g);
    let mut g = f.clone();
    g[14] = 0x40;
    drops_malformed(lab, "IPv6 ethertype with version 4", &g);
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
    assert!(lab.reverse(&reply).is_some(), "reverse entry for {}", d.src_sock());
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

// ---------------------------------------------------------------------------
// ICMP errors about translated flows are translated back.
// ---------------------------------------------------------------------------

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

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

case!(icmp_error_from_backend_snat_udp4, |lab| icmp_from_backend_case(lab, Udp, false, Snat));
case!(icmp_error_from_backend_preserve_tcp6, |lab| icmp_from_backend_case(lab, Tcp, true, Preserve));
case!(icmp_error_from_backend_snat_tcp4, |lab| icmp_from_backend_case(lab, Tcp, false, Snat));
case!(icmp_error_from_backend_preserve_udp6, |lab| icmp_from_backend_case(lab, Udp, true, Preserve));

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

// ---------------------------------------------------------------------------
// Checksums.
// ---------------------------------------------------------------------------

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
    let base = client_pkt(Udp, &sa(CLIENT4, 33000), &sa(VIP4, 53), 0).payload(b"\0\0zero");
    let after = rewritten(&base, V0_MAC, mac("10.1.0.2"), base.src, sock("10.1.0.2:5353"));
    let seg = &after.clone().csum(Csum::Zero).build()[34..];
    let s = csum::fold(csum::sum(csum::pseudo(after.src.ip(), after.dst.ip(), 17, seg.len() as u32), seg));
    let w = (0xffff - s).to_be_bytes();
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

case!(
    full_checksum_equal_to_pseudo_sum_is_not_taken_for_partial,
    |lab| {
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
    }
);

// ---------------------------------------------------------------------------
// Forwarding paths.
// ---------------------------------------------------------------------------

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
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]).to_tc(v0);
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
        let icmp = &f[l3 + 40..];
        assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
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
        assert_eq!(csum::fold(csum::sum(0, &f[l3..l3 + 20])), 0xffff, "IPv4 header checksum");
        assert_eq!(csum::fold(csum::sum(0, &icmp[..36])), 0xffff, "ICMP checksum");
    }
}

case!(too_big_with_df_gets_fragmentation_needed, |lab| too_big_case(lab, false, true));
case!(too_big_ipv6_gets_packet_too_big, |lab| too_big_case(lab, true, true));
case!(too_big_without_df_is_left_to_the_kernel_to_fragment, |lab| too_big_case(lab, false, false));

// ---------------------------------------------------------------------------
// Client-IP session affinity and source ranges.
// ---------------------------------------------------------------------------

/// Three equal backends on VIP4:53/udp (SNAT), with affinity `timeout`
/// and source `ranges`.
fn affinity_service(lab: &mut Lab, timeout: Option<u32>, ranges: &[&str]) {
    let b: Vec<(&str, u16)> = BACKENDS4.iter().map(|b| (*b, 1)).collect();
    let mut svc = service("svc", VIP4, 53, Udp, Snat, &b);
    svc.affinity_timeout = timeout;
    svc.source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
    lab.apply(vec![svc]);
}

/// A UDP packet from `client` ("ip:port", any address) to VIP4:53 (or VIP6).
fn from(client: &str) -> Pkt {
    let vip = if client.starts_with('[') { sa(VIP6, 53) } else { sa(VIP4, 53) };
    let m = if client.starts_with('[') { mac(CLIENT6) } else { mac(CLIENT4) };
    Pkt::udp(client, &vip).macs(m, V0_MAC)
}

/// Sends a new flow from `client`; returns the backend it went to.
fn new_flow(lab: &mut Lab, client: &str) -> SocketAddr {
    let out = lab.run(&from(client).build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    out.decoded().dst_sock()
}

/// The affinity entry of `client` (an address) for the VIP4:53 service.
fn affinity_key(lab: &mut Lab, client: &str) -> lb_common::AffinityKey {
    let service_id = lab.service_id(VIP4, 53, Udp);
    lb_common::AffinityKey { client: xlb::writer::addr16(ip(client)), service_id, _pad: 0 }
}

fn affinity_entry(lab: &mut Lab, client: &str) -> Option<lb_common::Affinity> {
    let key = affinity_key(lab, client);
    lab.maps().affinity.get(&key, 0).ok()
}

/// Points `client`'s affinity at backend `be` ("ip:port"), last used `age_ns` ago.
fn set_affinity(lab: &mut Lab, client: &str, be: &str, age_ns: u64) {
    let key = affinity_key(lab, client);
    let backend_id = lab.backend_id(be);
    let backend_gen = lab.maps().backends.get(&backend_id, 0).unwrap().generation;
    let last_ns = xlb::reader::monotonic_ns() - age_ns;
    lab.maps().affinity.insert(key, lb_common::Affinity { backend_id, backend_gen, last_ns }, 0).unwrap();
}

/// 40 client addresses, each opening flows from `ports`: per client, the backends.
fn per_client(lab: &mut Lab, ports: &[u16]) -> Vec<Vec<SocketAddr>> {
    (1..=40u8)
        .map(|c| ports.iter().map(|p| new_flow(lab, &sa(&format!("10.100.7.{c}"), *p))).collect())
        .collect()
}

case!(affinity_sends_a_clients_new_flows_to_one_backend, |lab| {
    // Without affinity, two flows of one client often go to different backends.
    affinity_service(lab, None, &[]);
    let split = per_client(lab, &[1000, 2000]).iter().filter(|b| b[0] != b[1]).count();
    assert!(split > 0, "without affinity some clients' two flows must differ (hash spread)");
    assert_eq!(lab.maps().affinity.keys().count(), 0, "no affinity entries without affinity");

    // With it, every new flow of a client goes where its first went.
    affinity_service(lab, Some(60), &[]);
    let sticky = per_client(lab, &[3000, 4000, 5000, 6000]);
    for (c, b) in sticky.iter().enumerate() {
        assert!(b.iter().all(|x| *x == b[0]), "client 10.100.7.{}: flows went to {b:?}", c + 1);
    }
    let used: std::collections::BTreeSet<SocketAddr> = sticky.iter().map(|b| b[0]).collect();
    assert!(used.len() > 1, "clients still spread over backends: {used:?}");
    let e = affinity_entry(lab, "10.100.7.1").expect("an affinity entry");
    assert_eq!(e.backend_id, lab.backend_id(&sticky[0][0].to_string()));
    // Existing flows are unaffected (and still hit the connection table).
    let out = lab.run(&from(&sa("10.100.7.1", 1000)).build());
    out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);

    // Switched off: the entries go, and flows spread again.
    affinity_service(lab, None, &[]);
    assert_eq!(lab.maps().affinity.keys().count(), 0, "entries deleted when affinity is turned off");
    let split = per_client(lab, &[7000, 8000]).iter().filter(|b| b[0] != b[1]).count();
    assert!(split > 0, "no stickiness after affinity is turned off");
});

case!(affinity_entry_older_than_the_timeout_is_ignored, |lab| {
    affinity_service(lab, Some(10), &[]);
    let client = "10.100.7.1";
    let first = new_flow(lab, &sa(client, 1000));
    let other = BACKENDS4.iter().copied().find(|b| sock(b) != first).unwrap();
    // A fresh entry steers (to whatever backend it names)...
    set_affinity(lab, client, other, 1_000_000_000);
    assert_eq!(new_flow(lab, &sa(client, 1001)), sock(other), "a live entry is followed");
    let t = xlb::reader::monotonic_ns();
    assert!(affinity_entry(lab, client).unwrap().last_ns + 100_000_000 >= t, "a followed entry is refreshed");
    // ...one last used longer ago than the timeout does not: the lookup
    // table picks, and the pick becomes the new entry.
    let mut picks = Vec::new();
    for port in 2000..2030 {
        set_affinity(lab, client, other, 11_000_000_000);
        let be = new_flow(lab, &sa(client, port));
        let e = affinity_entry(lab, client).unwrap();
        assert_eq!(e.backend_id, lab.backend_id(&be.to_string()), "the new pick is remembered");
        assert!(xlb::reader::monotonic_ns() - e.last_ns < 1_000_000_000);
        picks.push(be);
    }
    assert!(picks.iter().any(|b| *b != sock(other)), "an expired entry must not steer: {picks:?}");
});

case!(affinity_to_a_drained_or_removed_backend_is_not_used, |lab| {
    affinity_service(lab, Some(60), &[]);
    let client = "10.100.7.1";
    let a = new_flow(lab, &sa(client, 1000));
    assert_eq!(new_flow(lab, &sa(client, 1001)), a);
    // Drain it: new flows go elsewhere (and stick there); its flows stay.
    let b: Vec<(&str, u16)> = BACKENDS4.iter().map(|b| (*b, if sock(b) == a { 0 } else { 1 })).collect();
    let mut svc = service("svc", VIP4, 53, Udp, Snat, &b);
    svc.affinity_timeout = Some(60);
    lab.apply(vec![svc]);
    let c = new_flow(lab, &sa(client, 1002));
    assert_ne!(c, a, "no new flow to a drained backend through affinity");
    assert_eq!(new_flow(lab, &sa(client, 1003)), c, "the new pick sticks");
    let out = lab.run(&from(&sa(client, 1000)).build());
    out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(out.decoded().dst_sock(), a, "the drained backend keeps its flow");
    // Remove c: the entry names a backend that is gone.
    let left: Vec<(&str, u16)> = BACKENDS4.iter().filter(|x| sock(x) != c).map(|x| (*x, 1)).collect();
    let mut svc = service("svc", VIP4, 53, Udp, Snat, &left);
    svc.affinity_timeout = Some(60);
    lab.apply(vec![svc]);
    let d = new_flow(lab, &sa(client, 1004));
    assert_ne!(d, c, "no new flow to a removed backend through affinity");
    // An entry of an older generation of the slot is not followed either.
    let other = left.iter().map(|x| x.0).find(|x| sock(x) != d).unwrap();
    set_affinity(lab, client, other, 0);
    let key = affinity_key(lab, client);
    let mut e = lab.maps().affinity.get(&key, 0).unwrap();
    e.backend_gen = e.backend_gen.wrapping_sub(1);
    lab.maps().affinity.insert(key, e, 0).unwrap();
    for port in 1005..1035 {
        assert_eq!(new_flow(lab, &sa(client, port)), d, "port {port}: the stale-generation entry was replaced by d's");
    }
});

case!(source_ranges_allow_listed_clients_only, |lab| {
    let mut v4 = service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]);
    v4.source_ranges = vec!["10.100.0.10/32".parse().unwrap(), "10.100.8.0/24".parse().unwrap(), "::/0".parse().unwrap()];
    let mut v6 = service("dns6", VIP6, 53, Udp, Snat, &[("[fd00:1::2]:5353", 1)]);
    v6.source_ranges = vec!["fd00:100::/64".parse().unwrap()];
    lab.apply(vec![v4, v6]);
    for allowed in [sa(CLIENT4, 1000), sa("10.100.8.200", 1000), sa(CLIENT6, 1000), sa("fd00:100::99", 1000)] {
        new_flow(lab, &allowed);
    }
    for denied in [sa("10.100.0.11", 1000), sa("10.100.9.1", 1000), sa("fd00:101::10", 1000), sa("fd00:100:0:1::10", 1)] {
        lab.run(&from(&denied).build()).expect(XDP_DROP, &[Stat::DropSourceRange]).untouched();
    }
    assert_eq!(lab.service_counter(VIP4, 53, Udp).packets, 2, "dropped packets are not counted for the service");
    assert_eq!(lab.flow_count(), 4, "no flow for a disallowed client");

    // Only ranges of the other family: nobody is allowed.
    let mut v4 = service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]);
    v4.source_ranges = vec!["::/0".parse().unwrap()];
    lab.apply(vec![v4]);
    lab.run(&from(&sa(CLIENT4, 1001)).build()).expect(XDP_DROP, &[Stat::DropSourceRange]);
    // 0.0.0.0/0: everybody.
    let mut v4 = service("dns", VIP4, 53, Udp, Snat, &[("10.1.0.2:5353", 1)]);
    v4.source_ranges = vec!["0.0.0.0/0".parse().unwrap()];
    lab.apply(vec![v4]);
    new_flow(lab, &sa("10.100.9.1", 1002));
});

case!(source_range_added_cuts_flows_in_progress_removed_opens_again, |lab| {
    affinity_service(lab, None, &[]);
    let (kept, cut) = (sa(CLIENT4, 1000), sa("10.100.0.11", 1000));
    new_flow(lab, &kept);
    let before = new_flow(lab, &cut);
    lab.run(&from(&cut).build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);

    affinity_service(lab, None, &["10.100.0.10/32"]);
    lab.run(&from(&cut).build()).expect(XDP_DROP, &[Stat::DropSourceRange]).untouched();
    lab.run(&from(&kept).build()).expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    // A new flow of the disallowed client is dropped too, with affinity on as well.
    affinity_service(lab, Some(60), &["10.100.0.10/32"]);
    lab.run(&from(&sa("10.100.0.11", 1001)).build()).expect(XDP_DROP, &[Stat::DropSourceRange]);
    assert!(affinity_entry(lab, "10.100.0.11").is_none(), "a dropped client leaves no affinity entry");

    // No ranges: open again, and the flow in progress resumes on its backend.
    affinity_service(lab, None, &[]);
    let out = lab.run(&from(&cut).build());
    out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(out.decoded().dst_sock(), before);
});
