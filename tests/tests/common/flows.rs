//! Requests through a VIP and the checks of their replies: which pod
//! answered, with which peer address, spread over how many pods.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use xlb_tests::{udp_request, UdpFlow};

use super::{Env, Fam, T};

/// Parses `"pod<i> <addr>"` into (i, addr).
pub fn parse_reply(reply: &str) -> Option<(usize, IpAddr)> {
    let mut it = reply.split_whitespace();
    let tag = it.next()?;
    let addr = it.next()?.parse().ok()?;
    let i = tag.strip_prefix("pod")?.parse().ok()?;
    Some((i, addr))
}

/// Checks one reply: it came from `vip` and pod i saw `expect_peer(i)`.
/// Returns the pod index.
pub fn check_reply(
    reply: &str,
    from: SocketAddr,
    vip: SocketAddr,
    expect_peer: impl Fn(usize) -> IpAddr,
    ctx: &str,
) -> Result<usize, String> {
    if from != vip {
        return Err(format!("{ctx}: reply {reply:?} came from {from}, not from the VIP {vip}"));
    }
    let (i, peer) = parse_reply(reply).ok_or_else(|| format!("{ctx}: unexpected reply {reply:?}"))?;
    if peer != expect_peer(i) {
        return Err(format!("{ctx}: pod{i} saw the source address {peer}, expected {}", expect_peer(i)));
    }
    Ok(i)
}

/// One UDP request from `client:port` (fixed source port, so the same port
/// is the same flow) to `vip`; returns the backend's pod index after
/// checking the reply (source VIP, peer address seen by the pod).
pub fn udp_flow_backend(
    env: &Env,
    fam: Fam,
    port: u16,
    vip: SocketAddr,
    expect_peer: &dyn Fn(usize) -> IpAddr,
) -> Result<usize, String> {
    let (reply, from) = udp_request(&env.topo.client, Some(fam.unspecified(port)), vip, b"0123456789", T)
        .map_err(|e| format!("UDP from port {port} to {vip}: {e:#}"))?;
    check_reply(&reply, from, vip, expect_peer, &format!("UDP from port {port} to {vip}"))
}

/// [`udp_flow_backend`] for each port; gives up after 5 failures (so a
/// broken data path costs at most ~5 timeouts) and panics with diagnostics.
pub fn udp_flows_backends(
    env: &Env,
    fam: Fam,
    ports: &[u16],
    vip: SocketAddr,
    expect_peer: &dyn Fn(usize) -> IpAddr,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(ports.len());
    let mut errors = Vec::new();
    for &p in ports {
        match udp_flow_backend(env, fam, p, vip, expect_peer) {
            Ok(i) => out.push(i),
            Err(e) => {
                errors.push(e);
                out.push(usize::MAX);
                if errors.len() >= 5 {
                    break;
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {} UDP flows to {vip} failed:\n{}{}",
        errors.len(),
        ports.len(),
        errors.join("\n"),
        env.diag()
    );
    out
}

/// Sends one request on each open flow and returns the answering pods.
pub fn udp_open_flows_backends(
    env: &Env,
    flows: &[UdpFlow],
    vip: SocketAddr,
    expect_peer: &dyn Fn(usize) -> IpAddr,
) -> Vec<usize> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in flows {
        let ctx = format!("UDP flow {} -> {vip}", f.local_addr());
        match f.request(b"0123456789", T) {
            Ok((reply, from)) => match check_reply(&reply, from, vip, expect_peer, &ctx) {
                Ok(i) => out.push(i),
                Err(e) => {
                    errors.push(e);
                    out.push(usize::MAX);
                }
            },
            Err(e) => {
                errors.push(format!("{ctx}: {e:#}"));
                out.push(usize::MAX);
            }
        }
        if errors.len() >= 5 {
            break;
        }
    }
    assert!(errors.is_empty(), "UDP flows failed:\n{}{}", errors.join("\n"), env.diag());
    out
}

/// Opens `n` UDP flows (sockets kept open, ephemeral ports).
pub fn open_udp_flows(env: &Env, vip: SocketAddr, n: usize) -> Vec<UdpFlow> {
    (0..n).map(|_| UdpFlow::new(&env.topo.client, None, vip).expect("bind a UDP flow socket")).collect()
}

/// Counts per pod index.
pub fn tally(pods: &[usize]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for &p in pods {
        *m.entry(p).or_insert(0) += 1;
    }
    m
}

/// Checks a `spread_*_replies` result: every request answered, every reply
/// with the expected peer address; returns the count per pod.
pub fn check_spread(
    env: &Env,
    replies: &HashMap<String, usize>,
    expect_peer: &dyn Fn(usize) -> IpAddr,
    what: &str,
) -> BTreeMap<usize, usize> {
    let mut per_pod = BTreeMap::new();
    let mut bad = Vec::new();
    for (text, n) in replies {
        match parse_reply(text) {
            Some((i, peer)) if peer == expect_peer(i) => *per_pod.entry(i).or_insert(0) += n,
            _ => bad.push(format!("{n} × {text:?}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: unexpected replies {bad:?} (all replies: {replies:?}; pod i should see {}){}",
        expect_peer(0),
        env.diag()
    );
    per_pod
}

/// One UDP request to `vip` that must be answered within 3 tries (the
/// very first packets of a topology); a lost first try is noted on stderr.
pub fn warm_up_udp(env: &Env, vip: SocketAddr) {
    let mut errs = Vec::new();
    for _ in 0..3 {
        match udp_request(&env.topo.client, None, vip, b"warm-up", T) {
            Ok(_) => {
                if !errs.is_empty() {
                    eprintln!("note: first UDP request(s) to {vip} were not answered: {errs:?}");
                }
                return;
            }
            Err(e) => errs.push(format!("{e:#}")),
        }
    }
    panic!("no UDP reply from {vip} after 3 tries: {errs:?}{}", env.diag());
}

/// UDP requests sent from a background thread, one every 10 ms (at most
/// 5000, at most 60 s), until [`Background::finish`]: either each from a new
/// socket (a new flow each time) or all on one flow. A request counts as
/// lost when it gets no reply within 1 s or the reply does not come from the
/// address it was sent to.
pub struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<BackgroundReport>>,
}

/// What a [`Background`] sender saw.
#[derive(Debug, Default)]
pub struct BackgroundReport {
    pub sent: usize,
    pub lost: Vec<String>,
    /// Distinct reply texts (`"pod1 10.1.1.1"`), with counts.
    pub replies: BTreeMap<String, usize>,
}

impl Background {
    /// Each request on a new flow.
    pub fn new_flows(env: &Env, to: SocketAddr) -> Self {
        Self::spawn(env, to, false)
    }

    /// Every request on the same flow (one socket).
    pub fn one_flow(env: &Env, to: SocketAddr) -> Self {
        Self::spawn(env, to, true)
    }

    fn spawn(env: &Env, to: SocketAddr, same_flow: bool) -> Self {
        use std::sync::atomic::Ordering;
        let ns = env.topo.client.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let flow = same_flow.then(|| UdpFlow::new(&ns, None, to).expect("bind a UDP socket"));
        let thread = std::thread::spawn(move || {
            let mut r = BackgroundReport::default();
            let deadline = Instant::now() + Duration::from_mins(1);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline && r.sent < 5000 {
                r.sent += 1;
                let got = match &flow {
                    Some(f) => f.request(b"steady", Duration::from_secs(1)),
                    None => udp_request(&ns, None, to, b"steady", Duration::from_secs(1)),
                };
                match got {
                    Ok((text, from)) if from == to => *r.replies.entry(text).or_insert(0) += 1,
                    Ok((text, from)) => r.lost.push(format!("#{}: {text:?} from {from}", r.sent)),
                    Err(e) => r.lost.push(format!("#{}: {e:#}", r.sent)),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            r
        });
        Background { stop, thread: Some(thread) }
    }

    /// Stops the sender and returns what it saw.
    pub fn finish(mut self) -> BackgroundReport {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("background sender")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Like `xlb_tests::spread_udp_replies` (each request a new flow from a new
/// ephemeral port; replies counted by text, `NO_REPLY` / `WRONG_SOURCE`
/// for failures) but stops after 5 failures, so a broken data path costs a
/// few timeouts, not `count` of them.
pub fn spread_udp(env: &Env, to: SocketAddr, count: usize) -> HashMap<String, usize> {
    let mut replies = HashMap::new();
    let mut failures = 0;
    for i in 0..count {
        let key = match udp_request(&env.topo.client, None, to, format!("request {i}").as_bytes(), T) {
            Ok((_, from)) if from != to => xlb_tests::WRONG_SOURCE.to_string(),
            Ok((text, _)) => text,
            Err(_) => xlb_tests::NO_REPLY.to_string(),
        };
        if key.starts_with('<') {
            failures += 1;
        }
        *replies.entry(key).or_insert(0) += 1;
        if failures >= 5 {
            break;
        }
    }
    replies
}

/// Like `xlb_tests::spread_tcp_replies` (a new connection per request) but
/// stops after 5 failures.
pub fn spread_tcp(env: &Env, to: SocketAddr, count: usize) -> HashMap<String, usize> {
    let mut replies = HashMap::new();
    let mut failures = 0;
    for i in 0..count {
        let key = match xlb_tests::tcp_request(&env.topo.client, to, format!("request {i}\n").as_bytes(), T) {
            Ok(text) if !text.is_empty() => text,
            Ok(_) => xlb_tests::NO_REPLY.to_string(),
            Err(e) => format!("{} ({e:#})", xlb_tests::NO_REPLY),
        };
        if key.starts_with('<') {
            failures += 1;
        }
        *replies.entry(key).or_insert(0) += 1;
        if failures >= 5 {
            break;
        }
    }
    replies
}
