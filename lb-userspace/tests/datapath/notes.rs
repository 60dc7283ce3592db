//! Tracked `source: preserve` services whose backends serve no other
//! service (`SVC_F_REPLY_NOTE`): a new flow records one entry (its
//! connection), not two; replies are translated through the backend's note.

use super::*;

/// The backend `be` answers the client tuple `client` (UDP): its reply as it
/// arrives on v0.
fn reply_from(be: &str, client: &str) -> Pkt {
    Pkt::udp(be, client).macs(mac(be), V0_MAC).payload(b"answer")
}

/// Sends the reply and checks it leaves from `vip`:`port` to the client.
fn reply_leaves_from(lab: &mut Lab, be: &str, client: &str, vip: &str, port: u16) {
    let reply = reply_from(be, client);
    let back = lab.run(&reply.build());
    back.expect(XDP_PASS, &[Stat::Reply, Stat::FwdKernel]).to_tc(lab.v0);
    back.frame_is(&rewritten(&reply, V0_MAC, mac(client), sock(&sa(vip, port)), sock(client)));
}

/// A new UDP flow from `client` to `vip`:`port`: the backend it went to.
fn open(lab: &mut Lab, client: &str, vip: &str, port: u16) -> String {
    let out = lab.run(&client_pkt(Udp, client, &sa(vip, port), 0).build());
    out.expect(XDP_PASS, &[Stat::FlowNew, Stat::FwdKernel]);
    out.decoded().dst_sock().to_string()
}

case!(a_new_flow_records_one_entry_and_its_reply_is_translated_by_the_note, |lab| {
    lab.apply(vec![service("dns", VIP4, 53, Udp, Preserve, &[(BACKENDS4[0], 1), (BACKENDS4[1], 1)])]);
    let clients: Vec<String> = (40000..40060).map(|p| sa(CLIENT4, p)).collect();
    let picked: Vec<String> = clients.iter().map(|c| open(lab, c, VIP4, 53)).collect();
    assert_eq!((lab.flow_count(), lab.reverse_count()), (60, 0), "a connection entry per flow, no reverse entry");
    assert!(BACKENDS4[..2].iter().all(|b| picked.iter().any(|p| p == b)), "both backends picked: {picked:?}");
    for (c, be) in clients.iter().zip(&picked) {
        reply_leaves_from(lab, be, c, VIP4, 53);
    }
    // The established path is unchanged: the flow's next packet is a hit.
    let out = lab.run(&client_pkt(Udp, &clients[0], &sa(VIP4, 53), 0).build());
    out.expect(XDP_PASS, &[Stat::FlowHit, Stat::FwdKernel]);
    assert_eq!(out.decoded().dst_sock().to_string(), picked[0]);
});

case!(a_backend_shared_by_two_services_keeps_reverse_entries, |lab| {
    // One backend behind two VIP ports: a reply alone cannot tell which.
    let be = BACKENDS4[0];
    lab.apply(vec![
        service("a", VIP4, 53, Udp, Preserve, &[(be, 1)]),
        service("b", VIP4, 54, Udp, Preserve, &[(be, 1)]),
    ]);
    let (ca, cb) = (sa(CLIENT4, 41000), sa(CLIENT4, 41001));
    assert_eq!(open(lab, &ca, VIP4, 53), be);
    assert_eq!(open(lab, &cb, VIP4, 54), be);
    assert_eq!((lab.flow_count(), lab.reverse_count()), (2, 2));
    reply_leaves_from(lab, be, &ca, VIP4, 53);
    reply_leaves_from(lab, be, &cb, VIP4, 54);
});

case!(a_flow_noted_before_its_backend_became_shared_keeps_its_replies, |lab| {
    let be = BACKENDS4[0];
    lab.apply(vec![service("a", VIP4, 53, Udp, Preserve, &[(be, 1)])]);
    let ca = sa(CLIENT4, 42000);
    assert_eq!(open(lab, &ca, VIP4, 53), be);
    assert_eq!(lab.reverse_count(), 0);
    // Another service takes the same backend: new flows of both get reverse
    // entries; the flow recorded before goes on through the note.
    lab.apply(vec![
        service("a", VIP4, 53, Udp, Preserve, &[(be, 1)]),
        service("b", VIP4, 54, Udp, Preserve, &[(be, 1)]),
    ]);
    let (ca2, cb) = (sa(CLIENT4, 42001), sa(CLIENT4, 42002));
    assert_eq!(open(lab, &cb, VIP4, 54), be);
    assert_eq!(open(lab, &ca2, VIP4, 53), be);
    assert_eq!((lab.flow_count(), lab.reverse_count()), (3, 2));
    reply_leaves_from(lab, be, &cb, VIP4, 54);
    reply_leaves_from(lab, be, &ca, VIP4, 53);
    reply_leaves_from(lab, be, &ca2, VIP4, 53);
});

case!(a_reply_through_a_stale_note_is_not_translated, |lab| {
    // The backend leaves the service (its slot is freed): its note no
    // longer translates; the reply passes untouched.
    let (be, other) = (BACKENDS4[0], BACKENDS4[1]);
    lab.apply(vec![service("a", VIP4, 53, Udp, Preserve, &[(be, 1)])]);
    let ca = sa(CLIENT4, 43000);
    assert_eq!(open(lab, &ca, VIP4, 53), be);
    lab.apply(vec![service("a", VIP4, 53, Udp, Preserve, &[(other, 1)])]);
    let back = lab.run(&reply_from(be, &ca).build());
    back.expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
    // The service switched to SNAT: the note no longer applies either.
    lab.apply(vec![service("a", VIP4, 53, Udp, Preserve, &[(be, 1)])]);
    let cb = sa(CLIENT4, 43001);
    assert_eq!(open(lab, &cb, VIP4, 53), be);
    lab.apply(vec![service("a", VIP4, 53, Udp, Snat, &[(be, 1)])]);
    lab.run(&reply_from(be, &cb).build()).expect(XDP_PASS, &[Stat::PassNotVip]).untouched();
});
