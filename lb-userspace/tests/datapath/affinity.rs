//! Client-IP session affinity and source ranges.

use super::*;

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
    lb_common::AffinityKey { client: xlb::state::writer::addr16(ip(client)), service_id, _pad: 0 }
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
    let last_ns = xlb::state::reader::monotonic_ns() - age_ns;
    lab.maps().affinity.insert(key, lb_common::Affinity { backend_id, backend_gen, last_ns }, 0).unwrap();
}

/// 40 client addresses, each opening flows from `ports`: per client, the backends.
fn per_client(lab: &mut Lab, ports: &[u16]) -> Vec<Vec<SocketAddr>> {
    (1..=40u8).map(|c| ports.iter().map(|p| new_flow(lab, &sa(&format!("10.100.7.{c}"), *p))).collect()).collect()
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
    let t = xlb::state::reader::monotonic_ns();
    assert!(affinity_entry(lab, client).unwrap().last_ns + 100_000_000 >= t, "a followed entry is refreshed");
    // ...one last used longer ago than the timeout does not: the lookup
    // table picks, and the pick becomes the new entry.
    let mut picks = Vec::new();
    for port in 2000..2030 {
        set_affinity(lab, client, other, 11_000_000_000);
        let be = new_flow(lab, &sa(client, port));
        let e = affinity_entry(lab, client).unwrap();
        assert_eq!(e.backend_id, lab.backend_id(&be.to_string()), "the new pick is remembered");
        assert!(xlb::state::reader::monotonic_ns() - e.last_ns < 1_000_000_000);
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
    let b: Vec<(&str, u16)> = BACKENDS4.iter().map(|b| (*b, u16::from(sock(b) != a))).collect();
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
    v4.source_ranges =
        vec!["10.100.0.10/32".parse().unwrap(), "10.100.8.0/24".parse().unwrap(), "::/0".parse().unwrap()];
    let mut v6 = service("dns6", VIP6, 53, Udp, Snat, &[("[fd00:1::2]:5353", 1)]);
    v6.source_ranges = vec!["fd00:100::/64".parse().unwrap()];
    lab.apply(vec![v4, v6]);
    for allowed in [sa(CLIENT4, 1000), sa("10.100.8.200", 1000), sa(CLIENT6, 1000), sa("fd00:100::99", 1000)] {
        new_flow(lab, &allowed);
    }
    for denied in [sa("10.100.0.11", 1000), sa("10.100.9.1", 1000), sa("fd00:101::10", 1000), sa("fd00:100:0:1::10", 1)]
    {
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
