use super::*;

fn ok() -> Facts {
    Facts {
        name: "veth1".into(),
        up: true,
        peer_elsewhere: true,
        root_qdisc: Some("noqueue".into()),
        tc_qdisc: None,
        tcx_egress: Some(0),
        peer_xdp_or_napi: Some(false),
    }
}

#[test]
fn a_veth_with_nothing_on_its_way_out_qualifies() {
    assert_eq!(decide(&ok()), Ok(()));
}

#[test]
fn anything_the_peer_redirect_would_skip_refuses_it() {
    let cases: [(Facts, Refusal); 9] = [
        (Facts { up: false, ..ok() }, Refusal::Down),
        (Facts { peer_elsewhere: false, ..ok() }, Refusal::PeerHere),
        (Facts { root_qdisc: Some("tbf".into()), ..ok() }, Refusal::Qdisc("tbf".into())),
        (Facts { root_qdisc: None, ..ok() }, Refusal::Qdisc("none".into())),
        (Facts { tc_qdisc: Some("clsact".into()), ..ok() }, Refusal::TcQdisc("clsact".into())),
        (Facts { tcx_egress: Some(1), ..ok() }, Refusal::Tcx(1)),
        (Facts { tcx_egress: None, ..ok() }, Refusal::TcxUnknown),
        (Facts { peer_xdp_or_napi: Some(true), ..ok() }, Refusal::PeerXdp),
        (Facts { peer_xdp_or_napi: None, ..ok() }, Refusal::PeerUnknown),
    ];
    for (facts, want) in cases {
        assert_eq!(decide(&facts), Err(want), "{facts:?}");
    }
}

fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(a.len().next_multiple_of(4), 0);
    a
}

fn link(ifindex: u32, flags: u32, rest: &[Vec<u8>]) -> Vec<u8> {
    let mut p = vec![0u8; 4];
    p.extend_from_slice(&ifindex.to_ne_bytes());
    p.extend_from_slice(&flags.to_ne_bytes());
    p.extend_from_slice(&[0; 4]);
    for a in rest {
        p.extend_from_slice(a);
    }
    p
}

#[test]
fn links_parse_name_kind_state_and_peer_namespace() {
    let info = attr(IFLA_LINKINFO | 0x8000, &attr(IFLA_INFO_KIND, b"veth\0"));
    let p = link(
        7,
        libc::IFF_UP as u32,
        &[attr(IFLA_IFNAME, b"cali12\0"), info, attr(IFLA_LINK_NETNSID, &3i32.to_ne_bytes())],
    );
    assert_eq!(
        parse_link(&p),
        Some(Link { ifindex: 7, name: "cali12".into(), up: true, veth: true, peer_elsewhere: true })
    );
    let bridge = attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, b"bridge\0"));
    let p = link(8, 0, &[attr(IFLA_IFNAME, b"br0\0"), bridge]);
    assert_eq!(
        parse_link(&p),
        Some(Link { ifindex: 8, name: "br0".into(), up: false, veth: false, peer_elsewhere: false })
    );
    assert_eq!(parse_link(&p[..10]), None, "shorter than ifinfomsg");
}

#[test]
fn qdiscs_parse_device_parent_and_kind() {
    let mut p = vec![0u8; 4];
    p.extend_from_slice(&7u32.to_ne_bytes());
    p.extend_from_slice(&0xffff_0000u32.to_ne_bytes());
    p.extend_from_slice(&TC_H_INGRESS.to_ne_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend(attr(TCA_KIND, b"clsact\0"));
    assert_eq!(parse_qdisc(&p), Some((7, TC_H_INGRESS, "clsact".into())));
    assert_eq!(parse_qdisc(&p[..20]), None, "no kind");
}
