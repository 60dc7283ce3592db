use super::*;

/// A netlink attribute as the kernel lays it out (padded to 4 bytes).
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut v = Vec::new();
    v.extend_from_slice(&(len as u16).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(value);
    v.resize(len.next_multiple_of(4), 0);
    v
}

/// A generic-netlink datagram of family `ty`, command `cmd`, with `attrs`.
fn genl(ty: u16, cmd: u8, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut v = Vec::new();
    v.extend_from_slice(&(len as u32).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&7u32.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&[cmd, 1, 0, 0]);
    v.extend_from_slice(attrs);
    v
}

#[test]
fn dev_get_is_encoded_as_the_kernel_expects() {
    let mut msg = GenlMessage::from_payload(Netdev::dev_get(0x1234));
    msg.set_resolved_family_id(0x1b);
    let mut nl = NetlinkMessage::from(msg);
    nl.header.flags = NLM_F_REQUEST;
    nl.finalize();
    let mut buf = vec![0; nl.buffer_len()];
    nl.serialize(&mut buf);
    // nlmsghdr (len 28, type = family, flags = REQUEST, seq 0, pid 0),
    // genlmsghdr (cmd DEV_GET, version 1), NETDEV_A_DEV_IFINDEX u32.
    let mut want = genl(0x1b, 1, &nla(1, &0x1234u32.to_ne_bytes()));
    want[6..8].copy_from_slice(&1u16.to_ne_bytes());
    want[8..12].copy_from_slice(&0u32.to_ne_bytes());
    assert_eq!(buf, want);
}

#[test]
fn an_answer_gives_the_xdp_features_and_keeps_other_attributes() {
    let mut attrs = nla(1, &7u32.to_ne_bytes());
    attrs.extend(nla(3, &0x67u64.to_ne_bytes()));
    attrs.extend(nla(4, &1u32.to_ne_bytes()));
    let answer: Netdev = decode_answer(&genl(0x1b, 1, &attrs)).unwrap();
    assert_eq!(answer.xdp_features(), Some(0x67));
    assert_eq!(answer.attrs[0], DevAttr::Ifindex(7));
    assert!(matches!(&answer.attrs[2], DevAttr::Other(n) if n.kind() == 4));
    assert_ne!(answer.xdp_features().unwrap() & NDO_XMIT, 0);
    let plain: Netdev =
        decode_answer(&genl(0x1b, 1, &[nla(1, &7u32.to_ne_bytes()), nla(3, &0x23u64.to_ne_bytes())].concat())).unwrap();
    assert_eq!(plain.xdp_features().unwrap() & NDO_XMIT, 0, "0x23: a veth whose peer has neither XDP nor NAPI");
}

#[test]
fn a_kernel_error_is_an_error_not_features() {
    // NLMSG_ERROR: error code -ENODEV, then the request's header.
    let mut v = Vec::new();
    v.extend_from_slice(&36u32.to_ne_bytes());
    v.extend_from_slice(&2u16.to_ne_bytes());
    v.extend_from_slice(&[0; 10]);
    v.extend_from_slice(&(-libc::ENODEV).to_ne_bytes());
    v.extend_from_slice(&genl(0x1b, 1, &[])[..16]);
    let r: Result<Netdev, _> = decode_answer(&v);
    assert!(matches!(r, Err(FeaturesError::Kernel(libc::ENODEV))), "{r:?}");
    let r: Result<Netdev, _> = decode_answer(&[1, 2, 3]);
    assert!(matches!(r, Err(FeaturesError::Decode(_))), "{r:?}");
}

#[test]
fn the_family_answer_gives_the_id_and_the_mgmt_group() {
    let group = |name: &str, id: u32| vec![McastGrpAttrs::Name(name.into()), McastGrpAttrs::Id(id)];
    let answer = GenlCtrl {
        cmd: GenlCtrlCmd::NewFamily,
        nlas: vec![
            GenlCtrlAttrs::FamilyName("netdev".into()),
            GenlCtrlAttrs::FamilyId(0x1b),
            GenlCtrlAttrs::McastGroups(vec![group("page-pool", 5), group("mgmt", 4)]),
        ],
    };
    assert_eq!(family_of(&answer), Some(Family { id: 0x1b, mgmt_group: Some(4) }));
    let no_group = GenlCtrl { cmd: GenlCtrlCmd::NewFamily, nlas: vec![GenlCtrlAttrs::FamilyId(9)] };
    assert_eq!(family_of(&no_group), Some(Family { id: 9, mgmt_group: None }));
    assert_eq!(family_of(&GenlCtrl { cmd: GenlCtrlCmd::NewFamily, nlas: vec![] }), None);
}

/// The real kernel (root, in a new network namespace): a veth reports
/// `NDO_XMIT` only while its peer has NAPI (GRO) on, and the `mgmt` group
/// announces the change.
#[test]
fn a_veth_has_ndo_xmit_only_while_its_peer_has_napi() {
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}; this test needs root", io::Error::last_os_error());
        let run = |cmd: &str, args: &str| {
            let st = std::process::Command::new(cmd).args(args.split(' ')).status().expect(cmd);
            assert!(st.success(), "{cmd} {args}: {st}");
        };
        run("ip", "link add fx0 type veth peer name fx1");
        run("ip", "link set fx0 up");
        run("ip", "link set fx1 up");
        let features = Features::open().unwrap().expect("this kernel has the netdev family (6.3+)");
        let idx = crate::host::iface::ifindex("fx0").unwrap();
        assert!(!features.ndo_xmit(idx).unwrap(), "peer without XDP or NAPI: {:#x}", features.of(idx).unwrap());
        let notes = Notifications::join(features.family()).unwrap().expect("the mgmt group");
        // Bounded: a notification that never comes fails the test (EAGAIN).
        let limit = libc::timeval { tv_sec: 5, tv_usec: 0 };
        // SAFETY: a valid socket and a timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&notes.socket),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const limit).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", io::Error::last_os_error());
        run("ethtool", "-K fx1 gro on");
        notes.wait().unwrap();
        assert!(features.ndo_xmit(idx).unwrap(), "peer with GRO: {:#x}", features.of(idx).unwrap());
        run("ethtool", "-K fx1 gro off");
        notes.wait().unwrap();
        assert!(!features.ndo_xmit(idx).unwrap(), "peer's GRO off again");
        assert!(matches!(features.of(999_999), Err(FeaturesError::Kernel(_))), "no such interface");
    })
    .join()
    .expect("the test thread");
}
