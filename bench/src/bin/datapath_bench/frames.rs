//! Test frames of each packet class and their checksums.

use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4 {
    Udp,
    Tcp(u8),
}

pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_ACK: u8 = 0x10;
pub(crate) const PAYLOAD: &[u8] = b"xlb-bench-payload!"; // 18 bytes: a 64-byte IPv4/UDP frame

/// A frame and the offsets the harness needs.
#[derive(Clone)]
pub(crate) struct Frame {
    pub(crate) bytes: Vec<u8>,
    pub(crate) sport_off: u32,
    pub(crate) saddr_off: u32,
    pub(crate) l4_csum_off: u32,
    pub(crate) ip_csum_off: u32,
}

pub(crate) fn sum(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Ethernet + IPv4/IPv6 + UDP/TCP with correct checksums.
pub(crate) fn frame(smac: [u8; 6], dmac: [u8; 6], src: SocketAddr, dst: SocketAddr, l4: L4) -> Frame {
    let proto = match l4 {
        L4::Udp => 17u8,
        L4::Tcp(_) => 6,
    };
    let mut seg = Vec::new();
    seg.extend_from_slice(&src.port().to_be_bytes());
    seg.extend_from_slice(&dst.port().to_be_bytes());
    match l4 {
        L4::Udp => {
            seg.extend_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
        }
        L4::Tcp(flags) => {
            seg.extend_from_slice(&0x1000_0000u32.to_be_bytes());
            seg.extend_from_slice(&(if flags & TCP_ACK != 0 { 0x2000_0000u32 } else { 0 }).to_be_bytes());
            seg.push(5 << 4);
            seg.push(flags);
            seg.extend_from_slice(&64240u16.to_be_bytes());
            seg.extend_from_slice(&[0, 0, 0, 0]);
        }
    }
    seg.extend_from_slice(PAYLOAD);
    let csum_in_seg = if l4 == L4::Udp { 6 } else { 16 };
    let (sa, da): (Vec<u8>, Vec<u8>) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        _ => panic!("mixed address families"),
    };
    let pseudo = sum(sum(0, &sa), &da) + u64::from(proto) + seg.len() as u64;
    let mut c = !fold(sum(pseudo, &seg));
    if c == 0 && l4 == L4::Udp {
        c = 0xffff;
    }
    seg[csum_in_seg..csum_in_seg + 2].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::new();
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    let v4 = src.is_ipv4();
    let (l4_off, ip_csum_off, saddr_end) = if v4 {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let l3 = f.len();
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
        f.extend_from_slice(&sa);
        f.extend_from_slice(&da);
        let c = !fold(sum(0, &f[l3..l3 + 20]));
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        (l3 + 20, l3 + 10, l3 + 16)
    } else {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let l3 = f.len();
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend_from_slice(&sa);
        f.extend_from_slice(&da);
        (l3 + 40, 0, l3 + 24)
    };
    f.extend_from_slice(&seg);
    Frame {
        bytes: f,
        sport_off: l4_off as u32,
        saddr_off: (saddr_end - 2) as u32,
        l4_csum_off: (l4_off + csum_in_seg) as u32,
        ip_csum_off: ip_csum_off as u32,
    }
}

/// (source, destination) of an output frame.
pub(crate) fn tuple_of(f: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0800 => {
            let ip = |o: usize| -> Option<IpAddr> { Some(IpAddr::from(<[u8; 4]>::try_from(f.get(o..o + 4)?).ok()?)) };
            let port = |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?])) };
            Some((SocketAddr::new(ip(26)?, port(34)?), SocketAddr::new(ip(30)?, port(36)?)))
        }
        0x86dd => {
            let ip = |o: usize| -> Option<IpAddr> { Some(IpAddr::from(<[u8; 16]>::try_from(f.get(o..o + 16)?).ok()?)) };
            let port = |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?])) };
            Some((SocketAddr::new(ip(22)?, port(54)?), SocketAddr::new(ip(38)?, port(56)?)))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The harness maps (mirrors of lb-ebpf/src/bin/xlb-bench.rs)
// ---------------------------------------------------------------------------
