//! IP fragments through the VIP: UDP datagrams larger than the MTU
//! (fragmented by the sender, in both directions) are load-balanced whole,
//! a fragmented flow always reaches the same pod, and the later fragments
//! are counted. IPv4 and IPv6, `snat` and `preserve`. Needs root (CI runs
//! it as root with `--test-threads=1`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use common::*;
use xlb_tests::{udp_sized_server, ServerHandle, UdpFlow};

/// Size of the requests the client sends in the fragment test (UDP payload).
const BIG_REQUEST: usize = 3000;
/// Size of the replies the pods send in the fragment test (UDP payload).
const BIG_REPLY: usize = 4000;

/// Checks one big reply; returns the answering pod.
fn check_big_reply(
    reply: &str,
    from: SocketAddr,
    to: SocketAddr,
    fam: Fam,
    source: &str,
    ctx: &str,
) -> Result<usize, String> {
    if from != to {
        return Err(format!("{ctx}: reply came from {from}, not from the VIP {to}"));
    }
    if reply.len() != BIG_REPLY {
        return Err(format!(
            "{ctx}: reply of {} bytes, expected {BIG_REPLY} (starts {:?})",
            reply.len(),
            &reply[..reply.len().min(60)]
        ));
    }
    let mut it = reply.split_whitespace();
    let (tag, len, peer) = (it.next(), it.next(), it.next());
    let i: usize = tag
        .and_then(|t| t.strip_prefix("pod"))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("{ctx}: unexpected reply {:?}", &reply[..reply.len().min(60)]))?;
    let len: usize = len
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| format!("{ctx}: no length in {:?}", &reply[..reply.len().min(60)]))?;
    if len != BIG_REQUEST {
        return Err(format!("{ctx}: pod{i} received {len} bytes, expected the whole {BIG_REQUEST}-byte datagram"));
    }
    let peer: IpAddr = peer
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{ctx}: no peer address in {:?}", &reply[..reply.len().min(60)]))?;
    let want = fam.peer_seen(source, i);
    if peer != want {
        return Err(format!("{ctx}: pod{i} saw the source address {peer}, expected {want}"));
    }
    if !reply.ends_with('.') {
        return Err(format!("{ctx}: reply does not end with its padding"));
    }
    Ok(i)
}

fn large_udp(source: &str) {
    let yaml = config(&[dns_svc("dns", Fam::V4, source, 0..3), dns_svc("dns6", Fam::V6, source, 0..3)]);
    let env = Env::start(3, &yaml, &[]);
    require_counters(&env, &["fragment_translated", "pass_fragment"]);
    let servers: Vec<ServerHandle> = [Fam::V4, Fam::V6]
        .iter()
        .flat_map(|&fam| {
            let topo = &env.topo;
            (0..3).map(move |i| {
                udp_sized_server(&topo.pods[i], fam.pod_sock(i, UDP_BACKEND_PORT), &format!("pod{i}"), BIG_REPLY)
            })
        })
        .collect();

    // The client's link has the default 1500-byte MTU: the requests and the
    // replies are fragmented by their senders.
    let link = ip_link(&env.topo.client, "eth0");
    assert!(link.contains("mtu 1500"), "the client's eth0 should have MTU 1500: {link}");

    for (fam, base) in [(Fam::V4, 27000u16), (Fam::V6, 27100u16)] {
        let to = fam.vip(53);
        warm_up_udp(&env, to);
        let before = stats(env.agent());
        let ports: Vec<u16> = (0..12).map(|i| base + i).collect();
        let flows: Vec<UdpFlow> = ports
            .iter()
            .map(|&p| {
                UdpFlow::new(&env.topo.client, Some(fam.unspecified(p)), to)
                    .unwrap_or_else(|e| panic!("bind UDP port {p}: {e:#}"))
            })
            .collect();
        let mut errors = Vec::new();
        let mut per_flow: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
        let mut exchanges = 0u64;
        'rounds: for round in 0..3 {
            for (flow, &port) in flows.iter().zip(&ports) {
                let ctx = format!("{source} {fam:?}: {BIG_REQUEST}-byte datagram #{round} from port {port} to {to}");
                let mut payload = format!("big request {round} from {port} ").into_bytes();
                payload.resize(BIG_REQUEST, b'x');
                match flow.request(&payload, T) {
                    Ok((reply, from)) => match check_big_reply(&reply, from, to, fam, source, &ctx) {
                        Ok(i) => {
                            exchanges += 1;
                            per_flow.entry(port).or_default().insert(i);
                        }
                        Err(e) => errors.push(e),
                    },
                    Err(e) => errors.push(format!("{ctx}: {e:#}")),
                }
                if errors.len() >= 5 {
                    break 'rounds;
                }
            }
        }
        let after = stats(env.agent());
        let served: Vec<usize> = servers.iter().map(ServerHandle::served).collect();
        assert!(
            errors.is_empty(),
            "{} large UDP exchanges failed (servers answered {served:?}; stats delta \
             fragment_translated {} pass_fragment {}):\n{}{}",
            errors.len(),
            counter(&after, "fragment_translated") - counter(&before, "fragment_translated"),
            counter(&after, "pass_fragment") - counter(&before, "pass_fragment"),
            errors.join("\n"),
            env.diag()
        );
        let moved: Vec<String> = per_flow
            .iter()
            .filter(|(_, pods)| pods.len() > 1)
            .map(|(p, pods)| format!("port {p}: pods {pods:?}"))
            .collect();
        assert!(
            moved.is_empty(),
            "{source} {fam:?}: fragmented flows reached more than one pod: {moved:?}{}",
            env.diag()
        );
        let pods: BTreeSet<usize> = per_flow.values().flatten().copied().collect();
        assert!(
            pods.len() >= 2,
            "{source} {fam:?}: 12 fragmented flows all reached {pods:?}; \
             expected them spread over the 3 pods{}",
            env.diag()
        );
        // Both datagrams of an exchange are larger than the MTU: each has at
        // least one later fragment.
        let frags = counter(&after, "fragment_translated") - counter(&before, "fragment_translated");
        eprintln!(
            "{source} {fam:?}: {exchanges} whole exchanges, flows per pod {:?}, \
             fragment_translated +{frags}, pass_fragment +{}",
            tally(&per_flow.values().flatten().copied().collect::<Vec<_>>()),
            counter(&after, "pass_fragment") - counter(&before, "pass_fragment")
        );
        assert!(
            frags > 0 && frags >= 2 * exchanges,
            "{source} {fam:?}: {exchanges} whole exchanges of fragmented datagrams but \
             fragment_translated grew by {frags}{}",
            env.diag()
        );
    }
}

/// 3000-byte UDP requests (fragmented by the client's kernel) to VIP:53
/// from 12 source ports, 3 rounds, answered by 4000-byte replies
/// (fragmented by the pods' kernels) carrying the tag and the received
/// length: every request arrives whole, every reply arrives whole from
/// VIP:53, a flow always reaches the same pod, and `fragment_translated`
/// counts the later fragments. IPv4 and IPv6, `snat` and `preserve`.
#[test]
fn large_udp_datagrams_are_fragmented_and_delivered_whole() {
    require_root();
    large_udp("snat");
    large_udp("preserve");
}
