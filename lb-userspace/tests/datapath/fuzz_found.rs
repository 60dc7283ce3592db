//! Regressions found by the data-path fuzzer (`tests/fuzz.rs`).

use super::*;

case!(tcp_first_fragment_ending_inside_the_fixed_header_drops, |lab| {
    // A first fragment with 16 bytes of TCP header (ports and flags, not the
    // checksum): once counted, recorded as a flow and remembered for its
    // later fragments, then dropped when the rewrite found no checksum.
    lab.apply(vec![
        service("web", VIP4, 80, Tcp, Snat, &[("10.1.0.2:8080", 1)]),
        service("web6", VIP6, 80, Tcp, Snat, &[("[fd00:1::2]:8080", 1)]),
    ]);
    for (flows, v6, client, vip) in [(0, false, CLIENT4, VIP4), (1, true, CLIENT6, VIP6)] {
        let syn = client_pkt(Tcp, &sa(client, 50000), &sa(vip, 80), TCP_SYN).payload(&[7u8; 64]);
        let syn = if v6 { syn } else { syn.frag(0) };
        let (first, later) = syn.fragments(16);
        let out = lab.run(&first);
        assert_eq!(out.verdict, XDP_DROP, "v6={v6}: a 16-byte TCP first fragment is malformed");
        out.expect(XDP_DROP, &[Stat::DropMalformed]);
        assert_eq!(lab.flow_count(), flows, "v6={v6}: no flow from a dropped first fragment");
        assert_eq!(lab.service_counter(vip, 80, Tcp).packets, 0, "v6={v6}: not counted");
        // Its later fragment has no translation to follow.
        lab.run(&later).expect(XDP_PASS, &[Stat::PassFragment]).untouched();
        // The IP length decides, not the frame: 20 bytes in the frame but
        // 16 in the packet are dropped too.
        let mut f = syn.fragments(24).0;
        let l3 = syn.l3_off();
        if v6 {
            let pl = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) - 8;
            f[l3 + 4..l3 + 6].copy_from_slice(&pl.to_be_bytes());
        } else {
            let tot = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) - 8;
            f[l3 + 2..l3 + 4].copy_from_slice(&tot.to_be_bytes());
            fix_ipv4_csum(&mut f, l3);
        }
        lab.run(&f).expect(XDP_DROP, &[Stat::DropMalformed]);
        // 24 bytes (the fixed header and a little more) go through.
        let out = lab.run(&syn.fragments(24).0);
        out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
        assert_eq!(lab.flow_count(), flows + 1);
    }
});

case!(icmp_later_fragment_is_not_read_as_icmp, |lab| {
    dns_service(lab);
    // A later fragment of an ICMP message to a VIP whose data happens to
    // start like an echo request was answered as one.
    let echo = Pkt::icmp(CLIENT4, VIP4).macs(mac(CLIENT4), V0_MAC).frag(0x2001);
    lab.run(&echo.build()).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    let echo = echo.frag(0x0010);
    lab.run(&echo.build()).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    // The first fragment carries the ICMP header: answered.
    let first = Pkt::icmp(CLIENT4, VIP4).macs(mac(CLIENT4), V0_MAC).frag(0x2000);
    lab.run(&first.build()).expect(XDP_PASS, &[Stat::IcmpEcho, Stat::FwdKernel]);
});

case!(icmp_headers_in_the_padding_are_not_read, |lab| {
    dns_service(lab);
    // An echo request whose IP packet ends after 4 bytes of ICMP, the rest
    // of its header in the Ethernet padding.
    let echo = Pkt::icmp(CLIENT6, VIP6).macs(mac(CLIENT6), V0_MAC).payload(b"");
    let mut f = echo.build();
    f[18..20].copy_from_slice(&4u16.to_be_bytes());
    lab.run(&f).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    let echo = Pkt::icmp(CLIENT4, VIP4).macs(mac(CLIENT4), V0_MAC).payload(b"");
    let mut f = echo.build();
    f[16..18].copy_from_slice(&24u16.to_be_bytes());
    fix_ipv4_csum(&mut f, 14);
    lab.run(&f).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
});

case!(icmp_error_quote_ending_before_its_checksum_keeps_the_padding, |lab| {
    // An ICMPv6 error quoting the IPv6 header and 16 bytes of TCP (not the
    // checksum), in a frame with padding behind: the "quoted checksum" was
    // read from the padding and rewritten, and the ICMP checksum with it.
    lab.apply(vec![service("web", VIP6, 443, Tcp, Snat, &[("[fd00:1::2]:8443", 1)])]);
    let syn = client_pkt(Tcp, &sa(CLIENT6, 51000), &sa(VIP6, 443), TCP_SYN);
    let out = lab.run(&syn.build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    let d = out.decoded();
    let be = ip("fd00:1::2");
    let mut err = frame::icmp_error(mac("fd00:1::2"), V0_MAC, be, d.src, 1, 4, &out.frame[14..14 + 56]);
    let padding = [0x5au8; 28];
    err.extend_from_slice(&padding);
    let back = lab.run(&err);
    back.expect(XDP_PASS, &[Stat::IcmpError, Stat::FwdKernel]).to_tc(lab.v0);
    let want = frame::icmp_error(V0_MAC, mac(CLIENT6), ip(VIP6), ip(CLIENT6), 1, 4, &syn.ip_packet()[..56]);
    back.bytes_are(&[&want[..], &padding[..]].concat());
});
