//! Endpoint churn under traffic (issue 17): 1,000 EndpointSlice changes, as
//! fast as the API server takes them, while UDP clients keep sending
//! through the VIP. No request reaches a pod later than a second after the
//! last state that had it was replaced; the agent ends on the final state;
//! its memory stays bounded (RSS before/after printed). Needs root.

mod k8s;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s::*;
use xlb_tests::{udp_request, UdpFlow};

/// Changes made to the EndpointSlice.
const CHANGES: usize = 1000;
/// The contract: a flow of a removed backend moves within a second.
const MOVE_WITHIN: Duration = Duration::from_secs(1);

/// The agent's resident set size in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the agent's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

/// The pod index of a reply such as `"pod2 10.1.2.1"`.
fn pod_of(reply: &str) -> Option<usize> {
    reply.split_whitespace().next()?.strip_prefix("pod")?.parse().ok()
}

/// The two endpoint sets the churn alternates between, so a pod is absent
/// for a whole state at a time; `final` is kept at the end.
const STATE_A: [usize; 2] = [0, 1];
const STATE_B: [usize; 2] = [2, 3];

#[test]
fn a_thousand_endpoint_changes_under_traffic() {
    let c = Cluster::start(4, &[]);
    c.create_service(&dns_service("dns"));
    let set = |pods: &[usize]| {
        let eps: Vec<_> = pods.iter().map(|&i| ready(i)).collect();
        c.set_slice(NS, "dns", "dns", false, &eps, DNS_PORTS);
    };
    set(&STATE_A);
    c.wait_backends("apps/dns:dns", 2);
    let pid = c.agent.pid().expect("agent pid");
    // Warm: a few hundred flows, so the first RSS sample is not of a cold agent.
    let _ = c.udp(vip4(53), 200);
    let rss_before = rss_kib(pid);

    // Senders: new flows and fixed flows, each reply stamped with its time.
    let senders_start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let replies: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::default();
    let mut senders = Vec::new();
    for fixed in [false, true] {
        let (ns, stop, replies) = (c.topo.client.clone(), stop.clone(), replies.clone());
        senders.push(std::thread::spawn(move || {
            let flows: Vec<UdpFlow> = if fixed {
                (0..16).map(|_| UdpFlow::new(&ns, None, vip4(53)).expect("udp flow")).collect()
            } else {
                vec![]
            };
            let deadline = Instant::now() + Duration::from_mins(3);
            let (mut sent, mut i) = (0usize, 0usize);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && sent < 200_000 {
                sent += 1;
                let got = if fixed {
                    i = (i + 1) % flows.len();
                    // A late reply to this flow's previous request (answered
                    // after its 200 ms) may be queued: read now, it would be
                    // stamped with a later time and a state it did not meet.
                    let _ = flows[i].drain();
                    flows[i].request(b"churn", Duration::from_millis(200))
                } else {
                    udp_request(&ns, None, vip4(53), b"churn", Duration::from_millis(200))
                };
                if let Ok((text, _)) = got {
                    if let Some(p) = pod_of(&text) {
                        replies.lock().unwrap().push((Instant::now(), p));
                    }
                }
            }
        }));
    }

    // The churn: alternating A and B, ending on B; each change's time recorded
    // once the API server took it.
    // (sent, taken, pods): the agent may see a change before the API
    // server's answer reaches us, so a change's time is a window.
    let mut changes: Vec<(Instant, Instant, &[usize])> = Vec::with_capacity(CHANGES);
    let started = Instant::now();
    for n in 0..CHANGES {
        let state: &[usize] = if (CHANGES - 1 - n).is_multiple_of(2) { &STATE_B } else { &STATE_A };
        let sent = Instant::now();
        set(state);
        changes.push((sent, Instant::now(), state));
    }
    let churn_time = started.elapsed();
    let last_change = changes.last().unwrap().1;
    // The agent catches up with the final state (measured, bounded).
    let want: Vec<String> = STATE_B.iter().map(|&i| format!("{}:", xlb_tests::Topology::pod_addr_v4(i))).collect();
    c.wait_programmed("the final state (pod2, pod3)", |p| {
        p.get("apps/dns:dns").and_then(|s| s["backends"].as_array()).is_some_and(|b| {
            b.len() == 2 && want.iter().all(|w| b.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with(w.as_str()))))
        })
    });
    let settled = last_change.elapsed();
    // Keep sending on the final state for 3 s.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(last_change.elapsed()));
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().expect("sender");
    }
    let rss_after = rss_kib(pid);

    // Every reply came from a pod of a state that was in force at most
    // MOVE_WITHIN before it (a state is in force from its change until the
    // next one).
    let replies = replies.lock().unwrap().clone();
    // State k is in force from when its change was sent until the next
    // change was taken; a pod of it may answer until MOVE_WITHIN after that.
    let mut states: Vec<(Instant, Instant, &[usize])> = Vec::with_capacity(CHANGES + 1);
    for (sent, taken, pods) in
        std::iter::once((senders_start, senders_start, &STATE_A[..])).chain(changes.iter().copied())
    {
        if let Some(prev) = states.last_mut() {
            prev.1 = taken + MOVE_WITHIN;
        }
        states.push((sent, Instant::now() + Duration::from_hours(1), pods));
    }
    let mut late = Vec::new();
    for (t, pod) in &replies {
        // The windows are in time order at both ends.
        let first = states.partition_point(|(_, until, _)| until < t);
        let last = states.partition_point(|(from, _, _)| from <= t);
        let ok = states[first..last.max(first)].iter().any(|(_, _, pods)| pods.contains(pod));
        if !ok {
            late.push(format!(
                "pod{pod} answered {:?} after the last change",
                t.saturating_duration_since(last_change)
            ));
        }
    }
    let after_final: Vec<usize> =
        replies.iter().filter(|(t, _)| *t > last_change + MOVE_WITHIN).map(|(_, p)| *p).collect();
    println!(
        "churn: {CHANGES} EndpointSlice changes in {churn_time:?} ({:.0}/s); {} replies; agent RSS {rss_before} KiB before, {rss_after} KiB after; final state shown by the CLI {settled:?} after the last change",
        CHANGES as f64 / churn_time.as_secs_f64(),
        replies.len()
    );
    assert!(
        late.is_empty(),
        "{} replies from removed pods later than {MOVE_WITHIN:?}: {:?}",
        late.len(),
        &late[..late.len().min(10)]
    );
    assert!(after_final.len() >= 10, "too few replies on the final state to tell: {}", after_final.len());
    assert!(after_final.iter().all(|p| STATE_B.contains(p)), "replies after the final state settled: {after_final:?}");
    assert!(replies.len() >= 200, "too few replies during the churn to tell: {}", replies.len());
    assert!(
        rss_after <= rss_before * 2 + 32 * 1024,
        "agent memory grew from {rss_before} KiB to {rss_after} KiB over {CHANGES} changes"
    );
}
