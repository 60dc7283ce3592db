//! The domain rules, once for every producer.
use super::test_support::{backends, ip, sa, service};
use super::*;

fn spec(name: &str, vip: &str, port: u16, addrs: &[&str]) -> ServiceSpec {
    ServiceSpec { backends: backends(addrs), ..service(name, vip, port, Protocol::Udp) }
}

#[test]
fn a_valid_state_is_built() {
    let s = DesiredState::new(vec![
        spec("a", "192.0.2.10", 53, &["10.1.0.5:53"]),
        spec("b", "2001:db8::10", 53, &["[2001:db8::5]:53"]),
    ])
    .expect("valid");
    assert_eq!(s.services.len(), 2);
}

#[test]
fn two_services_on_one_vip_port_and_protocol_are_refused() {
    let e = DesiredState::new(vec![spec("a", "192.0.2.10", 53, &[]), spec("b", "192.0.2.10", 53, &[])]).unwrap_err();
    assert_eq!(
        e,
        ModelError::DuplicateService {
            vip: ip("192.0.2.10"),
            port: 53,
            protocol: Protocol::Udp,
            first: "a".into(),
            second: "b".into()
        }
    );
    // Another protocol or port is another service.
    let mut tcp = spec("b", "192.0.2.10", 53, &[]);
    tcp.protocol = Protocol::Tcp;
    DesiredState::new(vec![spec("a", "192.0.2.10", 53, &[]), tcp]).expect("udp and tcp on one port");
}

#[test]
fn two_services_with_one_name_are_refused() {
    let e = DesiredState::new(vec![spec("a", "192.0.2.10", 53, &[]), spec("a", "192.0.2.11", 53, &[])]).unwrap_err();
    assert_eq!(e, ModelError::DuplicateName { name: "a".into() });
}

#[test]
fn a_backend_listed_twice_is_refused() {
    let e = DesiredState::new(vec![spec("a", "192.0.2.10", 53, &["10.1.0.5:53", "10.1.0.6:53", "10.1.0.5:53"])])
        .unwrap_err();
    assert_eq!(e, ModelError::DuplicateBackend { service: "a".into(), addr: sa("10.1.0.5:53") });
}

#[test]
fn backends_of_the_other_family_unusable_or_looping_are_refused() {
    let vip = ip("192.0.2.10");
    let check = |a: &str| check_backend(sa(a), vip, 53);
    assert!(matches!(check("[2001:db8::5]:53"), Err(ModelError::FamilyMismatch { role: Role::Backend, .. })));
    assert_eq!(
        check("[2001:db8::5]:53").unwrap_err().to_string(),
        "backend [2001:db8::5]:53 is IPv6 but the vip 192.0.2.10 is IPv4; use IPv4 backends"
    );
    assert!(matches!(check("224.0.0.5:53"), Err(ModelError::UnusableBackend { .. })));
    assert!(matches!(check("192.0.2.10:53"), Err(ModelError::BackendLoop { .. })));
    assert_eq!(check("192.0.2.10:5353"), Ok(()));
    // ServiceSpec::validate applies the same function.
    for bad in ["[2001:db8::5]:53", "224.0.0.5:53", "192.0.2.10:53"] {
        assert_eq!(spec("a", "192.0.2.10", 53, &[bad]).validate(), check(bad), "{bad}");
    }
}

#[test]
fn snat_address_rules() {
    let vip = ip("192.0.2.10");
    assert_eq!(check_snat_address(ip("10.0.0.1"), vip, SourceMode::Snat), Ok(()));
    assert_eq!(check_snat_address(ip("10.0.0.1"), vip, SourceMode::Preserve), Err(ModelError::SnatWithPreserve));
    assert!(matches!(check_snat_address(ip("127.0.0.1"), vip, SourceMode::Snat), Err(ModelError::UnusableVip { .. })));
    assert_eq!(
        check_snat_address(ip("2001:db8::1"), vip, SourceMode::Snat).unwrap_err().to_string(),
        "2001:db8::1 is IPv6 but the vip 192.0.2.10 is IPv4; use an IPv4 address"
    );
    let mut s = spec("a", "192.0.2.10", 53, &[]);
    s.snat_address = Some(ip("2001:db8::1"));
    assert!(matches!(s.validate(), Err(ModelError::FamilyMismatch { role: Role::SnatAddress, .. })));
}

#[test]
fn limits_have_one_definition() {
    assert_eq!(check_affinity_timeout(MAX_AFFINITY_TIMEOUT), Ok(()));
    assert_eq!(check_affinity_timeout(1), Ok(()));
    for bad in [0, MAX_AFFINITY_TIMEOUT + 1] {
        assert!(check_affinity_timeout(bad).is_err(), "{bad}");
        let mut s = spec("a", "192.0.2.10", 53, &[]);
        s.affinity_timeout = Some(bad);
        assert_eq!(s.validate(), check_affinity_timeout(bad));
    }
    assert!(AFFINITY_TIMEOUT.contains(&DEFAULT_AFFINITY_TIMEOUT));
    assert_eq!(check_idle_timeout("udp_timeout", *IDLE_TIMEOUT.end()), Ok(()));
    assert!(check_idle_timeout("udp_timeout", *IDLE_TIMEOUT.end() + 1).is_err());
    assert!(check_table_size(crate::state::maglev::DEFAULT_SIZE).is_ok());
    assert_eq!(check_table_size(1000), Err(ModelError::TableSize(1000)));
    let mut zero = spec("a", "192.0.2.10", 0, &[]);
    assert_eq!(zero.validate(), Err(ModelError::PortZero));
    zero.port = 53;
    zero.vip = ip("0.0.0.0");
    assert!(matches!(zero.validate(), Err(ModelError::UnusableVip { .. })));
}

#[test]
fn source_ranges_of_the_other_family_are_named() {
    let vip = ip("192.0.2.10");
    assert_eq!(check_source_range_family("203.0.113.0/24".parse().unwrap(), vip), Ok(()));
    assert_eq!(
        check_source_range_family("2001:db8::/32".parse().unwrap(), vip).unwrap_err().to_string(),
        "2001:db8::/32 is IPv6 but the vip 192.0.2.10 is IPv4: it would never match a client; use IPv4 ranges"
    );
}

#[test]
fn claims_name_the_first_user() {
    let mut c: Claims<&str, usize> = Claims::default();
    assert_eq!(c.claim("a", 0), Ok(()));
    assert_eq!(c.claim("b", 1), Ok(()));
    assert_eq!(c.claim("a", 2), Err(0));
}

#[test]
fn reject_weight_fits_with_the_backends_weights() {
    let mut s = spec("a", "192.0.2.10", 53, &["10.1.0.5:53", "10.1.0.6:53"]);
    s.reject_weight = 30;
    assert_eq!(s.validate(), Ok(()));
    // Only a reject share (no backend) is valid: everything is rejected.
    let mut only = spec("b", "192.0.2.10", 54, &[]);
    only.reject_weight = u32::MAX;
    assert_eq!(only.validate(), Ok(()));
    // The backends' weights (1 + 1) on top of u32::MAX - 1 overflow 32 bits.
    s.reject_weight = u32::MAX - 1;
    assert_eq!(s.validate(), Err(ModelError::WeightTotal { total: u64::from(u32::MAX) + 1 }));
    assert_eq!(s.validate(), check_weights(s.reject_weight, &s.backends));
    assert!(s.validate().unwrap_err().to_string().contains("scale the weights down"), "{:?}", s.validate());
    s.reject_weight = u32::MAX - 2;
    assert_eq!(s.validate(), Ok(()));
}

fn untracked(name: &str, vip: &str, addrs: &[&str]) -> ServiceSpec {
    ServiceSpec { source: SourceMode::Preserve, flow_tracking: FlowTracking::None, ..spec(name, vip, 53, addrs) }
}

#[test]
fn flow_tracking_none_needs_preserve_and_no_per_flow_option() {
    untracked("a", "192.0.2.10", &["10.1.0.5:53"]).validate().expect("preserve, no affinity, no timeouts");
    let snat = ServiceSpec { source: SourceMode::Snat, ..untracked("a", "192.0.2.10", &[]) };
    assert_eq!(snat.validate(), Err(ModelError::UntrackedSnat));
    let sticky = ServiceSpec { affinity_timeout: Some(60), ..untracked("a", "192.0.2.10", &[]) };
    assert_eq!(sticky.validate(), Err(ModelError::UntrackedAffinity));
    let idle = ServiceSpec { tcp_timeout: Some(60), ..untracked("a", "192.0.2.10", &[]) };
    assert_eq!(idle.validate(), Err(ModelError::UntrackedTimeout { what: "tcp_timeout" }));
    // A tracked service may have them all.
    ServiceSpec { flow_tracking: FlowTracking::Full, ..sticky }.validate().expect("tracked");
}

#[test]
fn a_backend_of_a_flow_tracking_none_service_is_its_own() {
    let e = DesiredState::new(vec![
        spec("tracked", "192.0.2.11", 53, &["10.1.0.5:53"]),
        untracked("a", "192.0.2.10", &["10.1.0.6:53", "10.1.0.5:53"]),
    ])
    .unwrap_err();
    assert_eq!(
        e,
        ModelError::UntrackedSharedBackend {
            addr: sa("10.1.0.5:53"),
            protocol: Protocol::Udp,
            untracked: "a".into(),
            other: "tracked".into()
        }
    );
    // Two tracked services may share a backend; another port is another backend.
    DesiredState::new(vec![
        spec("t1", "192.0.2.11", 53, &["10.1.0.5:53"]),
        spec("t2", "192.0.2.12", 53, &["10.1.0.5:53"]),
        untracked("a", "192.0.2.10", &["10.1.0.5:54"]),
    ])
    .expect("nothing shared with the untracked service");
}
