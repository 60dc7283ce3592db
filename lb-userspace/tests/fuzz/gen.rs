//! Frames to fuzz with: a valid frame of some class (built with the
//! data-path tests' `Pkt` builders), then structured mutations of it
//! (truncation, header fields, lengths, checksums, TCP flags, tags, padding).
//! Every choice comes from one seeded ChaCha generator: a seed gives the
//! same frames.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
};

use proptest::{
    prelude::RngExt,
    test_runner::{RngAlgorithm, TestRng},
};

use super::{
    view::{self, Tuple},
    CLIENTS4, CLIENTS6, OTHERS4, OTHERS6, SERVICES,
};
use crate::frame::{
    fix_ipv4_csum, icmp_error, Csum, Pkt, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
};
use xlb_tests::datapath_topology::{NEIGHBOURS, V0_MAC};

/// A frame with a description of how it was made (for violation reports).
pub struct Frame {
    pub bytes: Vec<u8>,
    pub how: String,
}

/// A translated packet seen leaving (its tuple as sent): the source of
/// replies and of ICMP errors about it.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub t: Tuple,
}

pub struct Gen {
    rng: TestRng,
    queue: VecDeque<Frame>,
    /// Recently translated packets (bounded).
    sent: Vec<Sent>,
}

/// The MAC of `ip` when it is a neighbour of the topology, else a made-up one.
fn mac_of(ip: IpAddr) -> [u8; 6] {
    NEIGHBOURS
        .iter()
        .find(|(a, _, _)| a.parse::<IpAddr>().ok() == Some(ip))
        .map_or([0x02, 0, 0, 0xee, 0xee, 0x01], |(_, m, _)| *m)
}

const FLAG_SETS: [u8; 9] = [
    TCP_SYN,
    TCP_SYN | TCP_ACK,
    TCP_ACK,
    TCP_PSH | TCP_ACK,
    TCP_FIN | TCP_ACK,
    TCP_RST,
    TCP_RST | TCP_ACK,
    0,
    TCP_SYN | TCP_FIN | TCP_RST,
];

impl Gen {
    pub fn new(seed: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        Gen { rng: TestRng::from_seed(RngAlgorithm::ChaCha, &s), queue: VecDeque::new(), sent: Vec::new() }
    }

    /// Remembers a translated packet (replies and ICMP errors quote it).
    pub fn learn(&mut self, t: Tuple) {
        if self.sent.len() < 512 {
            self.sent.push(Sent { t });
        } else {
            let i = self.rng.random_range(0..self.sent.len());
            self.sent[i] = Sent { t };
        }
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> Frame {
        loop {
            if let Some(f) = self.queue.pop_front() {
                return f;
            }
            self.refill();
        }
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.rng.random_range(0..xs.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.random::<u8>()).collect()
    }

    fn client(&mut self, v6: bool) -> IpAddr {
        let s = if v6 { *self.pick(&CLIENTS6) } else { *self.pick(&CLIENTS4) };
        s.parse().expect("client address")
    }

    /// A packet of `proto` from `src` to `dst` with random flags, payload,
    /// checksum kind and optional VLAN tag / IPv4 options.
    fn l4_pkt(&mut self, proto: u8, src: SocketAddr, dst: SocketAddr) -> Pkt {
        let (s, d) = (src.to_string(), dst.to_string());
        let mut p = if proto == PROTO_UDP {
            Pkt::udp(&s, &d)
        } else {
            let flags = if self.chance(0.2) { self.rng.random::<u8>() & 0x1f } else { *self.pick(&FLAG_SETS) };
            Pkt::tcp(&s, &d, flags).tcp_seq(self.rng.random(), self.rng.random())
        };
        p = p.macs(mac_of(src.ip()), V0_MAC);
        let len = self.rng.random_range(0..80);
        p = p.payload(&self.bytes(len));
        if self.chance(0.1) {
            p = p.partial();
        } else if proto == PROTO_UDP && !src.is_ipv6() && self.chance(0.1) {
            p = p.csum(Csum::Zero);
        }
        if self.chance(0.1) {
            p = p.vlan(self.rng.random_range(1..4095));
        }
        if !src.is_ipv6() && self.chance(0.1) {
            let n = self.rng.random_range(1..=40);
            let opts: Vec<u8> = (0..n).map(|_| 1).collect();
            p = p.ip_options(&opts);
        }
        if proto == PROTO_TCP && self.chance(0.1) {
            p = p.tcp_options(&[2, 4, 5, 0xb4, 1, 1, 4, 2]);
        }
        if !src.is_ipv6() && self.chance(0.2) {
            p = p.frag(*self.pick(&[0u16, 0x4000]));
        }
        p
    }

    /// A packet from a client to a service (a random one, no-backend and
    /// source-range ones included).
    fn vip_pkt(&mut self) -> (Pkt, &'static str) {
        let svc = *self.pick(&SERVICES);
        let vip: IpAddr = svc.vip.parse().expect("VIP");
        let client = self.client(vip.is_ipv6());
        // A small port range: flows recur (hits, SYN on an existing flow).
        let sport = self.rng.random_range(40000..40048);
        let p = self.l4_pkt(svc.proto, SocketAddr::new(client, sport), SocketAddr::new(vip, svc.port));
        (p, svc.name)
    }

    /// A reply to a translated packet, or (none yet) a packet to a VIP.
    fn reply(&mut self) -> (Pkt, &'static str) {
        if self.sent.is_empty() {
            return self.vip_pkt();
        }
        let s = self.pick(&self.sent.clone()).t;
        let p = self.l4_pkt(s.proto, SocketAddr::new(s.dst, s.dport), SocketAddr::new(s.src, s.sport));
        (p, "reply")
    }

    /// UDP/TCP not for any service: other addresses, a VIP's other port or
    /// protocol, a backend's address without a flow.
    fn non_vip(&mut self) -> (Pkt, &'static str) {
        let v6 = self.chance(0.5);
        let client = self.client(v6);
        let dst: IpAddr = match self.rng.random_range(0..3) {
            0 => (if v6 { *self.pick(&OTHERS6) } else { *self.pick(&OTHERS4) }).parse().expect("address"),
            1 => (if v6 { super::VIP6 } else { super::VIP4 }).parse().expect("VIP"),
            _ => (if v6 { "fd00:1::2" } else { "10.1.0.2" }).parse().expect("backend"),
        };
        let proto = if self.chance(0.5) { PROTO_UDP } else { PROTO_TCP };
        let dport = {
            let r0 = self.rng.random();
            *self.pick(&[53u16, 80, 443, 5353, 8080, 9, r0])
        };
        let sport = self.rng.random();
        let p = self.l4_pkt(proto, SocketAddr::new(client, sport), SocketAddr::new(dst, dport));
        (p, "non-VIP")
    }

    /// An ICMP error quoting a translated packet, a translated reply, or garbage.
    fn icmp_error(&mut self) -> (Vec<u8>, String) {
        let v6 = self.chance(0.5);
        let known: Vec<Sent> = self.sent.iter().filter(|s| s.t.src.is_ipv6() == v6).copied().collect();
        let typ = if v6 {
            *self.pick(&[1u8, 2, 3, 1, 4, 128, 129, 200])
        } else {
            // (types etherparse builds from an 8-byte header)
            *self.pick(&[3u8, 11, 3, 12, 8, 0, 5, 4])
        };
        let code = {
            let r0 = self.rng.random();
            *self.pick(&[0u8, 1, 3, 4, r0])
        };
        let (src, dst, quote, how) = if !known.is_empty() && self.chance(0.7) {
            let s = self.pick(&known).t;
            let q = self.l4_pkt(s.proto, SocketAddr::new(s.src, s.sport), SocketAddr::new(s.dst, s.dport));
            let mut quote = q.ip_packet();
            let cut = self.rng.random_range(0..=quote.len());
            if self.chance(0.5) {
                quote.truncate(cut);
            }
            // From the quoted packet's destination (backend, client) or a router.
            let from = if self.chance(0.6) {
                s.dst
            } else {
                (if v6 { "fd00:1::99" } else { "10.1.0.99" }).parse().expect("router")
            };
            (from, s.src, quote, format!("ICMP {typ}/{code} quoting {s:?}"))
        } else {
            let n = self.rng.random_range(0..70);
            let mut quote = self.bytes(n);
            if !quote.is_empty() {
                quote[0] = if v6 { 0x60 | (quote[0] & 0x0f) } else { 0x40 | (quote[0] & 0x0f) };
            }
            if v6 && quote.len() > 6 {
                quote[6] = *self.pick(&[PROTO_UDP, PROTO_TCP, quote[6]]);
            } else if !v6 && quote.len() > 9 {
                quote[9] = *self.pick(&[PROTO_UDP, PROTO_TCP, quote[9]]);
            }
            let c = self.client(v6);
            let vip: IpAddr = (if v6 { super::VIP6 } else { super::VIP4 }).parse().expect("VIP");
            (c, vip, quote, format!("ICMP {typ}/{code} quoting garbage"))
        };
        (icmp_error(mac_of(src), V0_MAC, src, dst, typ, code, &quote), how)
    }

    /// Inserts IPv6 extension headers (hop-by-hop, routing, destination
    /// options, fragment) between the IPv6 header and the L4 header.
    fn ext_chain(&mut self, f: &mut Vec<u8>, l3: usize) {
        let n = self.rng.random_range(1..=3);
        let mut next = f[l3 + 6];
        let mut chain: Vec<u8> = Vec::new();
        for i in 0..n {
            let kind = if i == 0 { *self.pick(&[0u8, 60, 43, 44]) } else { *self.pick(&[60u8, 43, 44]) };
            let mut h = if kind == 44 { vec![0u8; 8] } else { vec![0u8; 8 * self.rng.random_range(1..=3)] };
            h[0] = next;
            if kind != 44 {
                h[1] = (h.len() / 8 - 1) as u8;
                // PadN over the rest (routing: type 0, 0 segments left).
                if kind != 43 {
                    h[2] = 1;
                    h[3] = (h.len() - 4) as u8;
                }
            }
            next = kind;
            chain.splice(0..0, h);
        }
        f[l3 + 6] = next;
        let plen = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) as usize + chain.len();
        f[l3 + 4..l3 + 6].copy_from_slice(&(plen as u16).to_be_bytes());
        f.splice(l3 + 40..l3 + 40, chain);
    }

    /// Queues the next seed frame, mutated or not, or a truncation sweep.
    fn refill(&mut self) {
        let class = self.rng.random_range(0..100u32);
        let (mut pkt, how): (Option<Pkt>, String) = match class {
            0..=29 => {
                let (p, h) = self.vip_pkt();
                (Some(p), format!("to service {h}"))
            }
            30..=49 => {
                let (p, h) = self.reply();
                (Some(p), h.to_string())
            }
            50..=59 => {
                let (p, h) = self.non_vip();
                (Some(p), h.to_string())
            }
            60..=71 => {
                let (f, how) = self.icmp_error();
                return self.push_mutated(f, how);
            }
            72..=81 => {
                // Fragments of a packet to a VIP or of a reply: first, later,
                // or the later one alone / first.
                let (p, h) = if self.chance(0.6) { self.vip_pkt() } else { self.reply() };
                let p = if p.is_v6() { p } else { p.frag(0) };
                let n = self.rng.random_range(40..160);
                let p = p.payload(&self.bytes(n));
                let cut = 8 * self.rng.random_range(1..=4);
                let (first, later) = p.fragments(cut);
                let how = format!("fragments ({h}) cut {cut}");
                match self.rng.random_range(0..3) {
                    0 => {
                        self.push_mutated(first, format!("{how}: first"));
                        self.push_mutated(later, format!("{how}: later"));
                    }
                    1 => self.push_mutated(later, format!("{how}: later alone")),
                    _ => {
                        self.push_mutated(later.clone(), format!("{how}: later before first"));
                        self.push_mutated(first, format!("{how}: first"));
                        self.queue.push_back(Frame { bytes: later, how: format!("{how}: later after first") });
                    }
                }
                return;
            }
            82..=86 => {
                // Stacked VLAN tags (802.1ad over 802.1Q, or two 802.1Q).
                let (p, h) = self.vip_pkt();
                let mut f = p.vlan(7).build();
                let outer = *self.pick(&[0x8100u16, 0x88a8]);
                f.splice(12..12, [(outer >> 8) as u8, outer as u8, 0, 9]);
                return self.push_mutated(f, format!("stacked VLAN ({h})"));
            }
            87..=91 => {
                // IPv6 extension header chain in front of the L4 header.
                let svc = *self.pick(&SERVICES.iter().filter(|s| s.vip.contains(':')).copied().collect::<Vec<_>>());
                let client = self.client(true);
                let p = self.l4_pkt(
                    svc.proto,
                    SocketAddr::new(client, 40000),
                    SocketAddr::new(svc.vip.parse().expect("VIP"), svc.port),
                );
                let mut f = p.build();
                let l3 = p.l3_off();
                self.ext_chain(&mut f, l3);
                return self.push_mutated(f, format!("IPv6 extension chain to {}", svc.name));
            }
            92..=95 => {
                let v6 = self.chance(0.5);
                let c = self.client(v6);
                let dst = match (v6, self.chance(0.7)) {
                    (false, true) => super::VIP4,
                    (true, true) => super::VIP6,
                    (false, false) => "10.1.0.2",
                    (true, false) => "fd00:1::2",
                };
                let len = self.rng.random_range(0..40);
                let p = Pkt::icmp(&c.to_string(), dst).macs(mac_of(c), V0_MAC).payload(&self.bytes(len));
                (Some(p), "echo request".to_string())
            }
            _ => {
                // Not IP, or garbage behind an IP ethertype.
                let et = {
                    let r0 = self.rng.random();
                    *self.pick(&[0x0806u16, 0x0800, 0x86dd, 0x8100, 0x88cc, r0])
                };
                let n = self.rng.random_range(0..80);
                let mut f = vec![0x02, 0, 0, 0, 0, 0xa0, 0x02, 0, 0, 0x64, 0, 0x0a, (et >> 8) as u8, et as u8];
                f.extend(self.bytes(n));
                if et == 0x0806 && self.chance(0.5) {
                    f = crate::frame::arp_request(mac_of(self.client(false)), [10, 100, 0, 10], [192, 0, 2, 10]);
                }
                return self.push_mutated(f, format!("ethertype {et:#06x}"));
            }
        };
        let p = pkt.take().expect("a packet");
        let f = p.build();
        // Now and then every truncation of one frame, in order.
        if self.chance(0.01) {
            for cut in 14..f.len() {
                self.queue.push_back(Frame { bytes: f[..cut].to_vec(), how: format!("{how}, cut at {cut}") });
            }
            return;
        }
        self.push_mutated(f, how);
    }

    /// Queues `f`, unchanged or with one to three mutations.
    fn push_mutated(&mut self, mut f: Vec<u8>, mut how: String) {
        if self.chance(0.55) {
            let n = self.rng.random_range(1..=3);
            for _ in 0..n {
                let m = self.mutate(&mut f);
                how.push_str(", ");
                how.push_str(&m);
            }
        }
        self.queue.push_back(Frame { bytes: f, how });
    }

    /// One structured mutation of `f`; says which.
    fn mutate(&mut self, f: &mut Vec<u8>) -> String {
        let Some((l3, et)) = view::link(f) else {
            return "none (no link header)".into();
        };
        let v4 = et == 0x0800 && f.len() >= l3 + 20;
        let v6 = et == 0x86dd && f.len() >= l3 + 40;
        let l4 = if v4 {
            l3 + usize::from(f[l3] & 0x0f) * 4
        } else if v6 {
            l3 + 40 + if f[l3 + 6] == 44 { 8 } else { 0 }
        } else {
            l3
        };
        let proto = if v4 {
            f[l3 + 9]
        } else if v6 {
            if f[l3 + 6] == 44 {
                f.get(l3 + 40).copied().unwrap_or(0)
            } else {
                f[l3 + 6]
            }
        } else {
            0
        };
        let has = |f: &Vec<u8>, off: usize, n: usize| f.len() >= off + n;
        let what = self.rng.random_range(0..14u32);
        let mut fix = false;
        let m = match what {
            0 => {
                let cut = self.rng.random_range(14..f.len().max(15));
                f.truncate(cut.max(14));
                format!("truncated at {cut}")
            }
            1 => {
                let end = f.len().min(l4 + 24);
                let off = self.rng.random_range(0..end);
                f[off] = self.rng.random();
                fix = self.chance(0.5);
                format!("byte {off} = {:#04x}", f[off])
            }
            2 if v4 => {
                f[l3] = 0x40 | self.rng.random_range(0..16u8);
                fix = self.chance(0.7);
                format!("IHL {}", f[l3] & 0x0f)
            }
            3 if v4 => {
                let tot = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]);
                let new = {
                    let r0 = self.rng.random_range(0..64);
                    let r1 = self.rng.random();
                    *self.pick(&[
                        tot.wrapping_add(1),
                        tot.wrapping_sub(1),
                        tot.wrapping_sub(8),
                        tot.wrapping_add(40),
                        r0,
                        r1,
                    ])
                };
                f[l3 + 2..l3 + 4].copy_from_slice(&new.to_be_bytes());
                fix = self.chance(0.7);
                format!("IPv4 total length {new}")
            }
            3 if v6 => {
                let pl = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]);
                let new = {
                    let r0 = self.rng.random_range(0..64);
                    let r1 = self.rng.random();
                    *self.pick(&[pl.wrapping_add(1), pl.wrapping_sub(1), pl.wrapping_sub(8), r0, r1])
                };
                f[l3 + 4..l3 + 6].copy_from_slice(&new.to_be_bytes());
                format!("IPv6 payload length {new}")
            }
            4 if v4 || v6 => {
                let p = {
                    let r0 = self.rng.random();
                    *self.pick(&[0u8, 1, 6, 17, 44, 58, 43, 60, 47, r0])
                };
                let off = if v4 { l3 + 9 } else { l3 + 6 };
                f[off] = p;
                fix = true;
                format!("protocol {p}")
            }
            5 if proto == PROTO_TCP && has(f, l4, 14) => {
                let doff = self.rng.random_range(0..16u8);
                f[l4 + 12] = (doff << 4) | (f[l4 + 12] & 0x0f);
                format!("TCP data offset {doff}")
            }
            6 if proto == PROTO_TCP && has(f, l4, 14) => {
                f[l4 + 13] = self.rng.random();
                format!("TCP flags {:#04x}", f[l4 + 13])
            }
            7 if proto == PROTO_UDP && has(f, l4, 6) => {
                let len = self.rng.random::<u16>() % 128;
                f[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
                format!("UDP length {len}")
            }
            8 if v4 => {
                let field = {
                    let r0 = self.rng.random();
                    *self.pick(&[0x2000u16, 0x2001, 0x0001, 0x3fff, 0x4000, r0])
                };
                f[l3 + 6..l3 + 8].copy_from_slice(&field.to_be_bytes());
                fix = self.chance(0.8);
                format!("IPv4 flags/offset {field:#06x}")
            }
            8 if v6 && f[l3 + 6] == 44 && has(f, l3 + 40, 8) => {
                let field = self.rng.random::<u16>();
                f[l3 + 42..l3 + 44].copy_from_slice(&field.to_be_bytes());
                format!("IPv6 fragment offset field {field:#06x}")
            }
            9 => {
                let et = {
                    let r0 = self.rng.random();
                    *self.pick(&[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806, r0])
                };
                f[12..14].copy_from_slice(&et.to_be_bytes());
                format!("ethertype {et:#06x}")
            }
            10 if v4 || v6 => {
                // Bad checksum: the IPv4 header's or the L4 one's.
                let off = if v4 && self.chance(0.4) {
                    l3 + 10
                } else {
                    l4 + if proto == PROTO_TCP {
                        16
                    } else if proto == PROTO_UDP {
                        6
                    } else {
                        2
                    }
                };
                if has(f, off, 2) {
                    let x: u16 = self.rng.random_range(1..=0xffff);
                    let old = u16::from_be_bytes([f[off], f[off + 1]]);
                    f[off..off + 2].copy_from_slice(&(old ^ x).to_be_bytes());
                }
                format!("checksum at {off} broken")
            }
            11 if v4 || v6 => {
                // Version nibble.
                let v = self.rng.random_range(0..16u8);
                f[l3] = (v << 4) | (f[l3] & 0x0f);
                fix = v4;
                format!("IP version {v}")
            }
            12 => {
                let n = self.rng.random_range(1..40);
                let pad = if self.chance(0.5) { vec![0; n] } else { self.bytes(n) };
                f.extend(pad);
                format!("{n} bytes of padding")
            }
            13 if (v4 || v6) && has(f, l4, 4) && (proto == PROTO_UDP || proto == PROTO_TCP) => {
                let port: u16 = {
                    let r0 = self.rng.random();
                    *self.pick(&[53u16, 80, 443, 9, r0])
                };
                let off = l4 + if self.chance(0.5) { 0 } else { 2 };
                f[off..off + 2].copy_from_slice(&port.to_be_bytes());
                format!("port at {off} = {port}")
            }
            _ => {
                let off = self.rng.random_range(0..f.len());
                f[off] ^= 1 << self.rng.random_range(0..8);
                format!("bit flip at {off}")
            }
        };
        if fix && v4 && f.len() >= l3 + 20 {
            fix_ipv4_csum(f, l3);
        }
        m
    }
}
