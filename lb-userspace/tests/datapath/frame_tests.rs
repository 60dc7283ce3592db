//! The frame builder's own tests: etherparse's checksums against
//! lb_common's, and the decoder reading back what the builder wrote.

use super::*;
use lb_common::csum as lbc;

/// etherparse's checksums (big-endian values) agree with lb_common's
/// native-order ones.
#[test]
fn builder_checksums_match_lb_common() {
    for p in [
        Pkt::udp("10.100.0.10:33000", "192.0.2.10:53"),
        Pkt::udp("[fd00:100::10]:33000", "[2001:db8::10]:53").payload(b"odd"),
        Pkt::tcp("10.100.0.10:33000", "192.0.2.10:80", TCP_SYN).ip_options(&[0x94, 4, 0, 0]),
        Pkt::tcp("[fd00:100::10]:1", "[2001:db8::10]:443", TCP_ACK | TCP_PSH).vlan(7),
    ] {
        let f = p.build();
        let d = decode(&f).expect("decodes");
        assert!(d.ip_csum_ok && d.l4_csum_ok, "{d}");
        let l4 = p.l4_off();
        let seg = &f[l4..];
        let (s, dst): (Vec<u8>, Vec<u8>) = match (p.src.ip(), p.dst.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (a.octets().to_vec(), b.octets().to_vec()),
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.octets().to_vec(), b.octets().to_vec()),
            _ => unreachable!(),
        };
        let ps = lbc::pseudo_sum(&s, &dst, p.proto(), seg.len() as u32);
        // lb_common works on native-order words: the stored bytes agree.
        assert_eq!(lbc::fold(lbc::sum_bytes(ps, seg)), 0xffff);
        assert_eq!(
            lbc::fold(ps).to_ne_bytes(),
            csum::pseudo(p.src.ip(), p.dst.ip(), p.proto(), seg.len() as u32).to_be_bytes()
        );
        if !p.is_v6() {
            let l3 = p.l3_off();
            assert_eq!(lbc::fold(lbc::sum_bytes(0, &f[l3..l4])), 0xffff);
        }
        // The partial form is the folded pseudo-header sum.
        let pf = p.clone().partial().build();
        let off = p.l4_csum_off();
        assert_eq!([pf[off], pf[off + 1]], lbc::fold(ps).to_ne_bytes());
    }
}

#[test]
fn decoder_reads_what_builder_wrote() {
    let p = Pkt::udp("10.100.0.10:33000", "192.0.2.10:53").vlan(100).ip_options(&[1, 1, 1, 0]);
    let d = decode(&p.build()).unwrap();
    assert_eq!(d.vlan, Some(100));
    assert_eq!(d.src_sock(), p.src);
    assert_eq!(d.dst_sock(), p.dst);
    assert_eq!(d.l4_off, 14 + 4 + 24);
    let z = decode(&p.clone().csum(Csum::Zero).build()).unwrap();
    assert_eq!(z.l4_csum, 0);
}
