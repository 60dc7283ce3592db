//! The fuzz loop and the invariants checked on every frame (see the crate
//! documentation in `fuzz.rs`).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use lb_common::{FlowKey, Reverse, ServiceKey, Stat, SNAT_PORT_COUNT, SNAT_PORT_MIN};
use xlb::state::{
    model::{Protocol, SourceMode},
    writer::{addr16, ip_from16},
};

use super::{
    gen::Gen,
    view::{classify, sum, Class, Frag, Ip, Tuple},
    Svc, SERVICES,
};
use crate::frame::{PROTO_TCP, PROTO_UDP};
use crate::harness::{service, Lab, Out, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use xlb_tests::datapath_topology::{NEIGHBOURS, V0_MAC, V1_MAC};

/// Frames between two table checks.
const BATCH: u64 = 500;
/// Violations printed in full (the rest are counted).
const PRINT_MAX: u64 = 30;

/// What a run found.
pub struct Report {
    pub frames: u64,
    pub violations: u64,
    pub secs: f64,
    /// Frames per class, for the summary line.
    pub classes: String,
}

/// The translation recorded for a first fragment (what its later fragments get).
#[derive(Clone, Copy)]
struct FragRecord {
    src: IpAddr,
    dst: IpAddr,
    service: Option<usize>,
}

struct Fuzz<'a> {
    lab: &'a mut Lab,
    seed: u64,
    svc_ids: Vec<u32>,
    /// (service index, backend address, backend id).
    backends: Vec<(usize, SocketAddr, u32)>,
    frags: HashMap<(IpAddr, IpAddr, u8, u32), FragRecord>,
    violations: u64,
    /// Violations by kind (the message without numbers and context).
    kinds: BTreeMap<String, u64>,
    /// New flows counted in the current batch.
    batch_new: u64,
    classes: BTreeMap<&'static str, u64>,
}

/// The frame's service: its destination, port and protocol.
fn service_of(t: &Tuple) -> Option<usize> {
    SERVICES.iter().position(|s| s.vip.parse::<IpAddr>().ok() == Some(t.dst) && s.port == t.dport && s.proto == t.proto)
}

fn is_vip(ip: IpAddr) -> bool {
    SERVICES.iter().any(|s| s.vip.parse::<IpAddr>().ok() == Some(ip))
}

fn snat_addr(v6: bool) -> IpAddr {
    (if v6 { "fd00:1::1" } else { "10.1.0.1" }).parse().expect("address")
}

fn neighbour_mac(ip: IpAddr) -> Option<[u8; 6]> {
    NEIGHBOURS.iter().find(|(a, _, _)| a.parse::<IpAddr>().ok() == Some(ip)).map(|(_, m, _)| *m)
}

fn key_of(t: &Tuple) -> FlowKey {
    FlowKey {
        src: addr16(t.src),
        dst: addr16(t.dst),
        sport: t.sport.to_be(),
        dport: t.dport.to_be(),
        proto: t.proto,
        _pad: [0; 3],
    }
}

/// The translation a reply `t` without a reverse entry gets from its
/// backend's note (`SVC_F_REPLY_NOTE`): only from a backend of a preserve
/// service none of whose backends serves another service, once the data
/// path has noted that backend. The VIP comes from the configuration, so a
/// wrong note shows as a wrong translation.
fn noted_translation(notes_has: bool, t: &Tuple) -> Option<Reverse> {
    let src = SocketAddr::new(t.src, t.sport);
    let serves = |s: &Svc, b: &str| s.proto == t.proto && s.backends.contains(&b);
    let users: Vec<&Svc> =
        SERVICES.iter().filter(|s| s.backends.iter().any(|b| b.parse::<SocketAddr>().ok() == Some(src))).collect();
    let [svc] = users[..] else { return None };
    let unique = svc.backends.iter().all(|b| SERVICES.iter().filter(|o| serves(o, b)).count() == 1);
    if svc.proto != t.proto || !matches!(svc.source, SourceMode::Preserve) || !unique || !notes_has {
        return None;
    }
    Some(Reverse {
        client: addr16(t.dst),
        vip: addr16(svc.vip.parse().expect("vip")),
        client_port: t.dport.to_be(),
        vip_port: svc.port.to_be(),
        service_id: 0,
        backend_id: 0,
        timeout: 0,
        last_seen_ns: 0,
    })
}

fn hex(f: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in f.chunks(16).enumerate() {
        let _ = write!(s, "\n      {:04x}:", i * 16);
        for b in chunk {
            let _ = write!(s, " {b:02x}");
        }
    }
    s
}

fn in_ranges(svc: &Svc, src: IpAddr) -> bool {
    svc.ranges.is_empty() || svc.ranges.iter().any(|r| r.parse::<ipnet::IpNet>().expect("range").contains(&src))
}

const PASS_STATS: [Stat; 4] = [Stat::PassNotVip, Stat::PassNonIp, Stat::PassVipOtherPort, Stat::PassFragment];
const FWD_STATS: [Stat; 6] =
    [Stat::FwdTx, Stat::FwdRedirect, Stat::FwdKernel, Stat::FwdFragment, Stat::FibFail, Stat::RedirectFail];

/// Runs `frames` frames made from `seed` through the lab's program.
pub fn run(lab: &mut Lab, seed: u64, frames: u64) -> Report {
    let start = Instant::now();
    let services = SERVICES
        .iter()
        .map(|s| {
            let proto = if s.proto == PROTO_UDP { Protocol::Udp } else { Protocol::Tcp };
            let b: Vec<(&str, u16)> = s.backends.iter().map(|b| (*b, 1)).collect();
            let mut spec = service(s.name, s.vip, s.port, proto, s.source, &b);
            spec.source_ranges = s.ranges.iter().map(|r| r.parse().expect("range")).collect();
            if s.affinity {
                spec.affinity_timeout = Some(30);
            }
            spec
        })
        .collect();
    lab.apply(services);
    let svc_ids = SERVICES
        .iter()
        .map(|s| lab.service_id(s.vip, s.port, if s.proto == PROTO_UDP { Protocol::Udp } else { Protocol::Tcp }))
        .collect();
    let mut backends = Vec::new();
    for (i, s) in SERVICES.iter().enumerate() {
        for b in s.backends {
            let id = lab.backend_id(b);
            backends.push((i, b.parse().expect("backend"), id));
        }
    }
    let mut fz = Fuzz {
        lab,
        seed,
        svc_ids,
        backends,
        frags: HashMap::new(),
        violations: 0,
        kinds: BTreeMap::new(),
        batch_new: 0,
        classes: BTreeMap::new(),
    };
    let mut gen = Gen::new(seed);
    let mut sizes = fz.table_sizes();
    for i in 0..frames {
        let frame = gen.next_frame();
        let problems = fz.frame(&mut gen, &frame.bytes);
        for p in problems {
            fz.violation(i, &frame.how, &frame.bytes, &p);
        }
        if (i + 1) % BATCH == 0 || i + 1 == frames {
            let now = fz.table_sizes();
            for p in fz.tables(sizes, now) {
                fz.violation(i, "(table check after this frame's batch)", &[], &p);
            }
            sizes = now;
            fz.batch_new = 0;
        }
        if (i + 1) % 100_000 == 0 {
            println!("fuzz: {} frames, {} violations, {:.0} s", i + 1, fz.violations, start.elapsed().as_secs_f64());
        }
    }
    for (kind, n) in &fz.kinds {
        println!("fuzz: {n:>8} violations: {kind}");
    }
    let classes = fz.classes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
    Report { frames, violations: fz.violations, secs: start.elapsed().as_secs_f64(), classes }
}

impl Fuzz<'_> {
    /// [`noted_translation`] of `t` with this lab's `XLB_NOTES`.
    fn noted(&mut self, t: &Tuple) -> Option<Reverse> {
        let key = ServiceKey { addr: addr16(t.src), port: t.sport.to_be(), proto: t.proto, _pad: 0 };
        let has = self.lab.maps().notes.get(&key, 0).is_ok();
        noted_translation(has, t)
    }

    fn violation(&mut self, index: u64, how: &str, frame: &[u8], what: &str) {
        self.violations += 1;
        let kind: String =
            what.split("; class").next().unwrap_or(what).chars().filter(|c| !c.is_ascii_digit()).collect();
        *self.kinds.entry(kind).or_default() += 1;
        if self.violations <= PRINT_MAX {
            println!(
                "VIOLATION seed {:#x} frame {index}: {what}\n   frame: {how} ({} bytes){}",
                self.seed,
                frame.len(),
                hex(frame)
            );
        } else if self.violations == PRINT_MAX + 1 {
            println!("(further violations counted, not printed)");
        }
    }

    /// (flows, reverse entries, affinity entries).
    fn table_sizes(&mut self) -> (usize, usize, usize) {
        let aff = self.lab.maps().affinity.keys().count();
        (self.lab.flow_count(), self.lab.reverse_count(), aff)
    }

    /// Table growth over a batch, and what the tables hold.
    fn tables(&mut self, before: (usize, usize, usize), after: (usize, usize, usize)) -> Vec<String> {
        let mut v = Vec::new();
        let n = self.batch_new as usize;
        for (name, b, a) in
            [("flow", before.0, after.0), ("reverse-NAT", before.1, after.1), ("affinity", before.2, after.2)]
        {
            if a > b + n {
                v.push(format!("{name} table grew by {} in a batch with {n} new flows", a - b));
            }
        }
        let flows: Vec<FlowKey> = self.lab.maps().flows.keys().filter_map(Result::ok).collect();
        for k in flows {
            let t = Tuple {
                src: ip_from16(k.src),
                dst: ip_from16(k.dst),
                sport: u16::from_be(k.sport),
                dport: u16::from_be(k.dport),
                proto: k.proto,
            };
            if service_of(&t).is_none() {
                v.push(format!("flow table holds {t:?}, not a packet to a service"));
            }
        }
        let revs: Vec<FlowKey> = self.lab.maps().reverse.keys().filter_map(Result::ok).collect();
        for k in revs {
            let src = SocketAddr::new(ip_from16(k.src), u16::from_be(k.sport));
            if !self.backends.iter().any(|(_, b, _)| *b == src) {
                v.push(format!("reverse-NAT table holds a key from {src}, not a backend"));
            }
        }
        v
    }

    fn svc_counters(&mut self) -> Vec<(u64, u64)> {
        let ids = self.svc_ids.clone();
        ids.iter()
            .map(|id| {
                let c = xlb::bpf::maps::sum_counter(&self.lab.maps().service_stats.get(id, 0).expect("XLB_SVC_STATS"));
                (c.packets, c.bytes)
            })
            .collect()
    }

    fn be_counters(&mut self) -> Vec<u64> {
        let ids: Vec<u32> = self.backends.iter().map(|b| b.2).collect();
        ids.iter().map(|id| self.lab.backend_packets_by_id(*id)).collect()
    }

    /// Runs one frame; the violations it shows.
    fn frame(&mut self, gen: &mut Gen, f: &[u8]) -> Vec<String> {
        let class = classify(f);
        let name = match &class {
            Class::Malformed(_) => "malformed",
            Class::Other(_) => "other",
            Class::L4 { t, .. } if service_of(t).is_some() => "to-service",
            Class::L4 { .. } => "l4",
            Class::LaterFrag { .. } => "later-fragment",
            Class::Echo { .. } => "echo",
            Class::IcmpError { .. } => "icmp-error",
        };
        *self.classes.entry(name).or_default() += 1;
        // What the tables say before the run.
        let rev = match &class {
            Class::L4 { t, .. } => match self.lab.maps().reverse.get(&key_of(t), 0).ok() {
                Some(r) => Some(r),
                None => self.noted(t),
            },
            _ => None,
        };
        let quoted = match &class {
            Class::IcmpError { inner, .. } => {
                let k = key_of(&Tuple {
                    src: inner.dst,
                    dst: inner.src,
                    sport: inner.dport,
                    dport: inner.sport,
                    proto: inner.proto,
                });
                let r = match self.lab.maps().reverse.get(&k, 0).ok() {
                    Some(r) => Some(r),
                    None => self.noted(&Tuple {
                        src: inner.dst,
                        dst: inner.src,
                        sport: inner.dport,
                        dport: inner.sport,
                        proto: inner.proto,
                    }),
                };
                let fl = if r.is_none() { self.lab.maps().flows.get(&k, 0).ok() } else { None };
                let be = fl.and_then(|fl| self.lab.maps().backends.get(&fl.backend_id, 0).ok().map(|b| (fl, b)));
                Some((r, be))
            }
            _ => None,
        };
        let svc_before = self.svc_counters();
        let be_before = self.be_counters();
        let v0 = self.lab.v0;
        let out = match self.lab.try_run_on(v0, f) {
            Ok(o) => o,
            Err(e) => return vec![format!("BPF_PROG_TEST_RUN refused the frame: {e}")],
        };
        let svc_delta: Vec<(u64, u64)> =
            self.svc_counters().iter().zip(&svc_before).map(|(a, b)| (a.0 - b.0, a.1 - b.1)).collect();
        let be_delta: Vec<u64> = self.be_counters().iter().zip(&be_before).map(|(a, b)| a - b).collect();

        let mut v = Vec::new();
        let ctx = format!("class {class:?}, verdict {}, stats {}", out.verdict, out.delta);
        // Global counters: packets +1, each other at most +1.
        let mut bumped: Vec<Stat> = Vec::new();
        for s in Stat::ALL {
            let d = out.delta.get(*s);
            match (*s, d) {
                (Stat::Packets, 1) | (_, 0) => {}
                (_, 1) if *s != Stat::Packets => bumped.push(*s),
                _ => v.push(format!("counter {} moved by {d}; {ctx}", s.name())),
            }
        }
        if bumped.contains(&Stat::FlowNew) {
            self.batch_new += 1;
        }
        let untouched = out.verdict == XDP_PASS && out.meta.is_empty() && out.frame == out.input;
        let forwarded = matches!(out.verdict, XDP_TX | XDP_REDIRECT) || (out.verdict == XDP_PASS && !untouched);
        if !matches!(out.verdict, XDP_DROP | XDP_PASS | XDP_TX | XDP_REDIRECT) {
            v.push(format!("verdict {} is no XDP action the program returns; {ctx}", out.verdict));
        }
        let one_pass = || bumped.len() == 1 && PASS_STATS.contains(&bumped[0]);
        let only = |set: &[Stat]| bumped.len() == set.len() && set.iter().all(|s| bumped.contains(s));
        // The forwarding counters and the kind of forward among `bumped`.
        let fwd_ok = |kind: &[Stat], extra: &[Stat]| {
            let fwd = bumped.iter().filter(|s| FWD_STATS.contains(s)).count();
            let kinds = bumped.iter().filter(|s| kind.contains(s)).count();
            let rest =
                bumped.iter().filter(|s| !FWD_STATS.contains(s) && !kind.contains(s) && !extra.contains(s)).count();
            fwd >= 1 && kinds == 1 && rest == 0
        };
        let mut counted: Option<(usize, u64, SocketAddr)> = None; // (service, ip_len, backend)

        match &class {
            Class::Malformed(why) => {
                let dropped = out.verdict == XDP_DROP && only(&[Stat::DropMalformed]);
                if !(dropped || (untouched && one_pass())) {
                    v.push(format!("malformed frame ({why}) not dropped as malformed nor passed untouched; {ctx}"));
                }
            }
            Class::Other(why) => {
                if !(untouched && one_pass()) {
                    v.push(format!("frame not for the data path ({why}) not passed untouched; {ctx}"));
                }
            }
            Class::L4 { ip, t, tcp_flags } => {
                if let Some(si) = service_of(t) {
                    let svc = SERVICES[si];
                    let snat = matches!(svc.source, SourceMode::Snat);
                    if !in_ranges(&svc, t.src) {
                        if !(out.verdict == XDP_DROP && only(&[Stat::DropSourceRange])) {
                            v.push(format!("client outside the source ranges not dropped; {ctx}"));
                        }
                    } else if svc.backends.is_empty() {
                        // Answered: UDP, and TCP SYNs, without IPv4 options
                        // (TCP: nor IPv6 extension headers); the rest is dropped.
                        let plain = ip.l4 == ip.l3 + if ip.v6 { 40 } else { 20 };
                        let rejectable =
                            (t.proto == PROTO_UDP && (plain || ip.v6)) || ((tcp_flags & 0x16) == 0x02 && plain);
                        if out.verdict == XDP_DROP && only(&[Stat::DropNoBackend]) {
                            if rejectable {
                                v.push(format!(
                                    "UDP / TCP SYN to a service without backends dropped, not rejected; {ctx}"
                                ));
                            }
                        } else if forwarded && fwd_ok(&[Stat::Reject], &[]) && rejectable {
                            check_reject(&out, ip, t, &mut v, &ctx);
                        } else {
                            v.push(format!("service without backends: neither a reject nor a drop; {ctx}"));
                        }
                    } else if out.verdict == XDP_DROP {
                        let ok = (only(&[Stat::DropRstNoFlow]) && snat && tcp_flags & 0x04 != 0)
                            || (only(&[Stat::DropSnatExhausted]) && snat);
                        if !ok {
                            v.push(format!("packet to a service dropped; {ctx}"));
                        }
                    } else if forwarded
                        && fwd_ok(&[Stat::FlowNew, Stat::FlowHit], &[Stat::FloodGuard, Stat::DropTableFull])
                    {
                        // A translation to a backend of the service.
                        match check_translation(&out, ip, t, f) {
                            Ok(o) => {
                                let be = SocketAddr::new(o.dst, o.dport);
                                if !svc.backends.iter().any(|b| b.parse::<SocketAddr>().ok() == Some(be)) {
                                    v.push(format!("sent to {be}, not a backend of {}; {ctx}", svc.name));
                                }
                                let want_src = if snat {
                                    SocketAddr::new(snat_addr(ip.v6), o.sport)
                                } else {
                                    SocketAddr::new(t.src, t.sport)
                                };
                                if SocketAddr::new(o.src, o.sport) != want_src
                                    || (snat && !(SNAT_PORT_MIN..SNAT_PORT_MIN + SNAT_PORT_COUNT).contains(&o.sport))
                                {
                                    v.push(format!(
                                        "source {}:{} is not the expected {want_src} ({}); {ctx}",
                                        o.src,
                                        o.sport,
                                        if snat { "SNAT" } else { "preserved" }
                                    ));
                                }
                                counted = Some((si, ip.total as u64, be));
                                gen.learn(o);
                                if ip.frag == Frag::First {
                                    self.frags.insert(
                                        (t.src, t.dst, t.proto, ip.frag_id),
                                        FragRecord { src: o.src, dst: o.dst, service: Some(si) },
                                    );
                                }
                            }
                            Err(e) => v.push(format!("{e}; {ctx}")),
                        }
                    } else {
                        v.push(format!("packet to a service with backends neither forwarded nor dropped for a stated reason; {ctx}"));
                    }
                } else if let Some(r) = rev {
                    if forwarded && fwd_ok(&[Stat::Reply], &[]) {
                        match check_translation(&out, ip, t, f) {
                            Ok(o) => {
                                let want = (
                                    ip_from16(r.vip),
                                    u16::from_be(r.vip_port),
                                    ip_from16(r.client),
                                    u16::from_be(r.client_port),
                                );
                                if (o.src, o.sport, o.dst, o.dport) != want {
                                    v.push(format!("reply translated to {o:?}, reverse entry says {want:?}; {ctx}"));
                                }
                                gen.learn(o);
                                if ip.frag == Frag::First {
                                    self.frags.insert(
                                        (t.src, t.dst, t.proto, ip.frag_id),
                                        FragRecord { src: o.src, dst: o.dst, service: None },
                                    );
                                }
                            }
                            Err(e) => v.push(format!("{e}; {ctx}")),
                        }
                    } else {
                        v.push(format!("reply of a known flow not translated; {ctx}"));
                    }
                } else {
                    let want = if is_vip(t.dst) { Stat::PassVipOtherPort } else { Stat::PassNotVip };
                    if !(untouched && only(&[want])) {
                        v.push(format!(
                            "UDP/TCP neither to a service nor a known reply not passed untouched ({}); {ctx}",
                            want.name()
                        ));
                    }
                }
            }
            Class::LaterFrag { ip } => {
                let rec = self.frags.get(&(ip.src, ip.dst, ip.proto, ip.frag_id)).copied();
                if untouched && only(&[Stat::PassFragment]) {
                } else if forwarded && fwd_ok(&[Stat::Fragment], &[]) {
                    match rec {
                        None => v.push(format!("later fragment translated, but no first fragment of it was; {ctx}")),
                        Some(r) => {
                            if let Err(e) = check_l3_only(&out, ip, f, r.src, r.dst) {
                                v.push(format!("{e}; {ctx}"));
                            }
                            if let Some(si) = r.service {
                                // Counted to the service, to some backend of it.
                                if let Some((_, b, _)) =
                                    self.backends.iter().find(|(s, b, _)| *s == si && b.ip() == r.dst)
                                {
                                    counted = Some((si, ip.total as u64, *b));
                                }
                            }
                        }
                    }
                } else {
                    v.push(format!("later fragment neither passed untouched nor translated; {ctx}"));
                }
            }
            Class::Echo { ip } => {
                if is_vip(ip.dst) {
                    if !(forwarded && fwd_ok(&[Stat::IcmpEcho], &[])) {
                        v.push(format!("echo request to a VIP not answered; {ctx}"));
                    } else if let Err(e) = check_echo(&out, ip, f) {
                        v.push(format!("{e}; {ctx}"));
                    }
                } else if !(untouched && only(&[Stat::PassNotVip])) {
                    v.push(format!("echo request not to a VIP not passed untouched; {ctx}"));
                }
            }
            Class::IcmpError { ip, inner, inner_l3, inner_l4 } => {
                // The expected new outer (src, dst) and quoted (src, dst).
                let want = match quoted.expect("looked up") {
                    (Some(r), _) => {
                        let from_backend = ip.src == inner.dst;
                        let vip = SocketAddr::new(ip_from16(r.vip), u16::from_be(r.vip_port));
                        let client = SocketAddr::new(ip_from16(r.client), u16::from_be(r.client_port));
                        Some((if from_backend { vip.ip() } else { ip.src }, client.ip(), client, vip))
                    }
                    (None, Some((fl, be)))
                        if be.flags & lb_common::BE_F_ACTIVE != 0 && be.generation == fl.backend_gen =>
                    {
                        let b = SocketAddr::new(ip_from16(be.addr), u16::from_be(be.port));
                        if fl.snat_port != 0 {
                            let s = SocketAddr::new(ip_from16(be.snat_addr), u16::from_be(fl.snat_port));
                            Some((s.ip(), b.ip(), b, s))
                        } else {
                            Some((ip.src, b.ip(), b, SocketAddr::new(inner.dst, inner.dport)))
                        }
                    }
                    _ => None,
                };
                match want {
                    None => {
                        if !(untouched && only(&[Stat::PassNotVip])) {
                            v.push(format!("ICMP error about no known flow not passed untouched; {ctx}"));
                        }
                    }
                    Some(w) => {
                        if !(forwarded && fwd_ok(&[Stat::IcmpError], &[])) {
                            v.push(format!("ICMP error about a known flow not translated; {ctx}"));
                        } else if let Err(e) = check_icmp_error(&out, ip, f, *inner_l3, *inner_l4, inner.proto, w) {
                            v.push(format!("{e}; {ctx}"));
                        }
                    }
                }
            }
        }
        // Service and backend counters: only the frame's own.
        for (i, d) in svc_delta.iter().enumerate() {
            let want = match counted {
                Some((si, len, _)) if si == i => (1, len),
                _ => (0, 0),
            };
            if *d != want {
                v.push(format!("service {} counters moved by {d:?}, expected {want:?}; {ctx}", SERVICES[i].name));
            }
        }
        for (i, d) in be_delta.iter().enumerate() {
            let (si, addr, _) = self.backends[i];
            let want = u64::from(counted.is_some_and(|(s, _, b)| s == si && b == addr));
            if *d != want {
                v.push(format!("backend {addr} of {} counted {d} packets, expected {want}; {ctx}", SERVICES[si].name));
            }
        }
        v
    }
}

/// Checks a UDP/TCP translation: only MACs, addresses, ports and checksums
/// changed, checksums right. Returns the output tuple.
fn check_translation(out: &Out, ip: &Ip, t: &Tuple, input: &[u8]) -> Result<Tuple, String> {
    let o = &out.frame;
    if o.len() != input.len() {
        return Err(format!("output length {} differs from input {}", o.len(), input.len()));
    }
    let oip = super::view::ip(o).map_err(|c| format!("output IP layer unreadable: {c:?}"))?;
    let seg = &o[ip.l4..];
    let ot = Tuple {
        src: oip.src,
        dst: oip.dst,
        sport: u16::from_be_bytes([seg[0], seg[1]]),
        dport: u16::from_be_bytes([seg[2], seg[3]]),
        proto: t.proto,
    };
    check_macs(out, ot.dst)?;
    // Every byte but MACs, addresses, ports and checksum fields.
    let csum_off = ip.l4 + if t.proto == PROTO_TCP { 16 } else { 6 };
    let mut want = input.to_vec();
    want[..12].copy_from_slice(&o[..12]);
    let (a, n) = if ip.v6 { (ip.l3 + 8, 32) } else { (ip.l3 + 12, 8) };
    want[a..a + n].copy_from_slice(&o[a..a + n]);
    want[ip.l4..ip.l4 + 4].copy_from_slice(&o[ip.l4..ip.l4 + 4]);
    if !ip.v6 {
        want[ip.l3 + 10..ip.l3 + 12].copy_from_slice(&o[ip.l3 + 10..ip.l3 + 12]);
    }
    if csum_off + 2 <= want.len() {
        want[csum_off..csum_off + 2].copy_from_slice(&o[csum_off..csum_off + 2]);
    }
    if want != *o {
        let diff: Vec<usize> = (0..o.len()).filter(|i| want[*i] != o[*i]).collect();
        return Err(format!("output differs from the input beyond MACs/addresses/ports/checksums at {diff:?}"));
    }
    ipv4_header_sum_kept(ip, input, o)?;
    // The L4 checksum.
    let field = |f: &[u8]| u16::from_be_bytes([f[csum_off], f[csum_off + 1]]);
    let resid = |f: &[u8], src, dst| {
        sum::fold(sum::add(sum::pseudo(src, dst, t.proto, ip.l4_len), &f[ip.l4..ip.l4 + ip.l4_len]))
    };
    let (fin, fout) = (field(input), field(o));
    let pseudo = |src, dst| sum::fold(sum::pseudo(src, dst, t.proto, ip.l4_len));
    if t.proto == PROTO_UDP && !ip.v6 && fin == 0 {
        if fout != 0 {
            return Err("UDP checksum 0 (none) did not stay 0".into());
        }
    } else if ip.frag == Frag::None && fin == pseudo(t.src, t.dst) && !sum::same(resid(input, t.src, t.dst), 0xffff) {
        // A partial checksum: the new pseudo-header sum.
        if fout != pseudo(ot.src, ot.dst) {
            return Err(format!("partial checksum {fout:#06x} is not the new pseudo-header sum"));
        }
    } else {
        if !sum::same(resid(input, t.src, t.dst), resid(o, ot.src, ot.dst)) {
            return Err(format!(
                "L4 checksum {fin:#06x} -> {fout:#06x} not updated exactly (verifies before: {}, after: {})",
                sum::same(resid(input, t.src, t.dst), 0xffff),
                sum::same(resid(o, ot.src, ot.dst), 0xffff)
            ));
        }
        if t.proto == PROTO_UDP && fout == 0 {
            return Err("UDP checksum became 0 (none)".into());
        }
    }
    Ok(ot)
}

/// The MACs of a sent frame: from our interface to the next hop's
/// neighbour entry (left as they were when the FIB had no answer).
fn check_macs(out: &Out, dst: IpAddr) -> Result<(), String> {
    let (d, s) = (&out.frame[..6], &out.frame[6..12]);
    // No neighbour entry (or no route): the kernel finds the next hop.
    if out.frame[..12] == out.input[..12] {
        return Ok(());
    }
    if s != V0_MAC && s != V1_MAC {
        return Err(format!("source MAC {s:02x?} is not one of ours"));
    }
    if let Some(m) = neighbour_mac(dst) {
        if d != m {
            return Err(format!("destination MAC {d:02x?} is not {dst}'s {m:02x?}"));
        }
    }
    Ok(())
}

/// An IPv4 header checksum updated exactly: valid after iff valid before.
fn ipv4_header_sum_kept(ip: &Ip, input: &[u8], o: &[u8]) -> Result<(), String> {
    if ip.v6 {
        return Ok(());
    }
    let hl = ip.l4 - ip.l3;
    let a = sum::fold(sum::add(0, &input[ip.l3..ip.l3 + hl]));
    let b = sum::fold(sum::add(0, &o[ip.l3..ip.l3 + hl]));
    if !sum::same(a, b) {
        return Err(format!(
            "IPv4 header checksum not updated exactly (verified before: {}, after: {})",
            sum::same(a, 0xffff),
            sum::same(b, 0xffff)
        ));
    }
    Ok(())
}

/// A later fragment: only MACs, addresses and the IPv4 header checksum changed.
fn check_l3_only(out: &Out, ip: &Ip, input: &[u8], src: IpAddr, dst: IpAddr) -> Result<(), String> {
    let o = &out.frame;
    if o.len() != input.len() {
        return Err("output length differs".into());
    }
    let oip = super::view::ip(o).map_err(|c| format!("output IP layer unreadable: {c:?}"))?;
    if (oip.src, oip.dst) != (src, dst) {
        return Err(format!("later fragment sent {} -> {}, its first went {src} -> {dst}", oip.src, oip.dst));
    }
    check_macs(out, dst)?;
    let mut want = input.to_vec();
    want[..12].copy_from_slice(&o[..12]);
    let (a, n) = if ip.v6 { (ip.l3 + 8, 32) } else { (ip.l3 + 10, 10) };
    want[a..a + n].copy_from_slice(&o[a..a + n]);
    if want != *o {
        return Err("later fragment changed beyond MACs/addresses/IP checksum".into());
    }
    ipv4_header_sum_kept(ip, input, o)
}

/// The ICMP checksum residue of the message (with the ICMPv6 pseudo header).
fn icmp_resid(ip: &Ip, f: &[u8], src: IpAddr, dst: IpAddr) -> u16 {
    let msg = &f[ip.l4..ip.l4 + ip.l4_len];
    let acc = if ip.v6 { sum::pseudo(src, dst, 58, ip.l4_len) } else { 0 };
    sum::fold(sum::add(acc, msg))
}

/// An echo request answered: addresses swapped, type the reply's, rest kept.
fn check_echo(out: &Out, ip: &Ip, input: &[u8]) -> Result<(), String> {
    let o = &out.frame;
    if o.len() != input.len() {
        return Err("echo reply length differs".into());
    }
    let oip = super::view::ip(o).map_err(|c| format!("echo reply IP layer unreadable: {c:?}"))?;
    if (oip.src, oip.dst) != (ip.dst, ip.src) {
        return Err(format!("echo reply {} -> {}, request was {} -> {}", oip.src, oip.dst, ip.src, ip.dst));
    }
    check_macs(out, ip.src)?;
    let reply = if ip.v6 { 129 } else { 0 };
    if o[ip.l4] != reply {
        return Err(format!("echo reply type {}", o[ip.l4]));
    }
    let mut want = input.to_vec();
    want[..12].copy_from_slice(&o[..12]);
    let (a, n) = if ip.v6 { (ip.l3 + 8, 32) } else { (ip.l3 + 10, 10) };
    want[a..a + n].copy_from_slice(&o[a..a + n]);
    want[ip.l4] = reply;
    want[ip.l4 + 2..ip.l4 + 4].copy_from_slice(&o[ip.l4 + 2..ip.l4 + 4]);
    if want != *o {
        return Err("echo reply changed beyond MACs/addresses/type/checksums".into());
    }
    ipv4_header_sum_kept(ip, input, o)?;
    if !sum::same(icmp_resid(ip, input, ip.src, ip.dst), icmp_resid(ip, o, oip.src, oip.dst)) {
        return Err("echo reply ICMP checksum not updated exactly".into());
    }
    Ok(())
}

/// An ICMP error translated: new outer (src, dst) and quoted (src, dst)
/// addresses and ports, every checksum updated exactly, nothing else changed.
fn check_icmp_error(
    out: &Out,
    ip: &Ip,
    input: &[u8],
    inner_l3: usize,
    inner_l4: usize,
    inner_proto: u8,
    want: (IpAddr, IpAddr, SocketAddr, SocketAddr),
) -> Result<(), String> {
    let (osrc, odst, qsrc, qdst) = want;
    let o = &out.frame;
    if o.len() != input.len() {
        return Err("translated ICMP error length differs".into());
    }
    let oip = super::view::ip(o).map_err(|c| format!("output IP layer unreadable: {c:?}"))?;
    if (oip.src, oip.dst) != (osrc, odst) {
        return Err(format!("ICMP error sent {} -> {}, expected {osrc} -> {odst}", oip.src, oip.dst));
    }
    check_macs(out, odst)?;
    let (qa, qn) = if ip.v6 { (inner_l3 + 8, 16) } else { (inner_l3 + 12, 4) };
    let qs = addr16(qsrc.ip());
    let qd = addr16(qdst.ip());
    let (qs, qd) = if ip.v6 { (&qs[..], &qd[..]) } else { (&qs[12..], &qd[12..]) };
    if &o[qa..qa + qn] != qs || &o[qa + qn..qa + 2 * qn] != qd {
        return Err(format!("quoted addresses not {qsrc} -> {qdst}"));
    }
    let ports = [qsrc.port().to_be_bytes(), qdst.port().to_be_bytes()].concat();
    if o[inner_l4..inner_l4 + 4] != ports[..] {
        return Err(format!("quoted ports not {qsrc} -> {qdst}"));
    }
    let mut want = input.to_vec();
    let mut copy = |from: usize, n: usize| {
        let end = (from + n).min(o.len());
        if from < end {
            want[from..end].copy_from_slice(&o[from..end]);
        }
    };
    copy(0, 12);
    if ip.v6 {
        copy(ip.l3 + 8, 32);
        copy(inner_l3 + 8, 32);
    } else {
        copy(ip.l3 + 10, 10);
        copy(inner_l3 + 10, 10);
    }
    copy(ip.l4 + 2, 2);
    copy(inner_l4, 4);
    copy(inner_l4 + if inner_proto == PROTO_UDP { 6 } else { 16 }, 2);
    if want != *o {
        let diff: Vec<usize> = (0..o.len()).filter(|i| want[*i] != o[*i]).collect();
        return Err(format!("translated ICMP error changed beyond addresses/ports/checksums at {diff:?}"));
    }
    ipv4_header_sum_kept(ip, input, o)?;
    if !sum::same(icmp_resid(ip, input, ip.src, ip.dst), icmp_resid(ip, o, oip.src, oip.dst)) {
        return Err("ICMP checksum not updated exactly".into());
    }
    Ok(())
}

/// A reject of a service without backends: an ICMP port unreachable or a
/// TCP RST from the VIP back to the client, with valid checksums.
fn check_reject(out: &Out, ip: &Ip, t: &Tuple, v: &mut Vec<String>, ctx: &str) {
    let o = &out.frame;
    let oip = match super::view::ip(o) {
        Ok(x) => x,
        Err(c) => return v.push(format!("reject unreadable: {c:?}; {ctx}")),
    };
    if (oip.src, oip.dst) != (t.dst, t.src) {
        v.push(format!("reject sent {} -> {}, not {} -> {}; {ctx}", oip.src, oip.dst, t.dst, t.src));
    }
    if !ip.v6 && !crate::frame::ipv4_header_csum_ok(&o[oip.l3..]) {
        v.push(format!("reject's IPv4 header checksum does not verify; {ctx}"));
    }
    if t.proto == PROTO_UDP {
        let msg = &o[oip.l4..oip.l4 + oip.l4_len];
        if !crate::frame::icmp_csum_ok(oip.src, oip.dst, msg) {
            v.push(format!("reject's ICMP checksum does not verify; {ctx}"));
        }
    } else {
        match crate::frame::decode(o) {
            Some(d)
                if d.src_sock() == SocketAddr::new(t.dst, t.dport)
                    && d.dst_sock() == SocketAddr::new(t.src, t.sport) =>
            {
                if !(d.l4_csum_ok || d.l4_csum == d.pseudo) || o[d.l4_off + 13] & 0x04 == 0 {
                    v.push(format!("reject RST: checksum or RST flag wrong: {d}; {ctx}"));
                }
            }
            other => v.push(format!("reject is no RST back to the client: {other:?}; {ctx}")),
        }
    }
}
