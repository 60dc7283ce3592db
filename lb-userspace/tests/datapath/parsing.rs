//! Frame shapes the parser must handle. / Malformed → XDP_DROP + drop_malformed.

use super::*;

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
// Malformed → XDP_DROP + drop_malformed.
// ---------------------------------------------------------------------------

fn drops_malformed(lab: &mut Lab, what: &str, frame: &[u8]) {
    let out = lab.run(frame);
    assert_eq!(out.verdict, XDP_DROP, "{what}: expected XDP_DROP, got verdict {}", out.verdict);
    out.expect(XDP_DROP, &[Stat::DropMalformed]);
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
