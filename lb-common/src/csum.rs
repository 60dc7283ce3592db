//! Internet checksum arithmetic (RFC 1071 / RFC 1624) shared by the data path
//! and the unit tests.
//!
//! All 16-bit words are taken exactly as they sit in memory (read with
//! `u16::from_ne_bytes`). One's-complement addition is byte-order independent,
//! so the result can be stored back the same way.

/// Adds `value` to a 32-bit accumulator of 16-bit words.
#[inline(always)]
pub const fn add(acc: u32, value: u16) -> u32 {
    acc + value as u32
}

/// Folds a 32-bit accumulator into 16 bits (end-around carry).
#[inline(always)]
pub const fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The difference `new - old` of one 16-bit word, ready to add to an
/// accumulator (RFC 1624: `~m + m'`).
#[inline(always)]
pub const fn diff16(acc: u32, old: u16, new: u16) -> u32 {
    acc + (!old) as u32 + new as u32
}

/// The difference of an N-byte field (N even).
#[inline(always)]
pub fn diff_bytes<const N: usize>(acc: u32, old: &[u8; N], new: &[u8; N]) -> u32 {
    let mut acc = acc;
    let mut i = 0;
    while i + 1 < N {
        acc = diff16(acc, u16::from_ne_bytes([old[i], old[i + 1]]), u16::from_ne_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    acc
}

/// The difference of a 4-byte field (an IPv4 address).
#[inline(always)]
pub fn diff4(acc: u32, old: &[u8; 4], new: &[u8; 4]) -> u32 {
    diff_bytes(acc, old, new)
}

/// The difference of a 16-byte field (an IPv6 address).
#[inline(always)]
pub fn diff16b(acc: u32, old: &[u8; 16], new: &[u8; 16]) -> u32 {
    diff_bytes(acc, old, new)
}

/// Applies an accumulated difference to a complete (complemented) checksum.
#[inline(always)]
pub const fn apply_full(check: u16, diff: u32) -> u16 {
    !fold((!check) as u32 + fold(diff) as u32)
}

/// Applies an accumulated difference to a *partial* checksum: the
/// non-complemented pseudo-header sum that a local sender leaves in the
/// field when the checksum is offloaded (`CHECKSUM_PARTIAL`).
#[inline(always)]
pub const fn apply_partial(check: u16, diff: u32) -> u16 {
    fold(check as u32 + fold(diff) as u32)
}

/// Sums a byte slice as 16-bit words (odd trailing byte padded with zero).
pub fn sum_bytes(acc: u32, bytes: &[u8]) -> u32 {
    let mut acc = u64::from(acc);
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_ne_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// The pseudo-header sum used by TCP and UDP (IPv4 when both addresses are 4
/// bytes, IPv6 when 16), not complemented.
pub fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, l4_len: u32) -> u32 {
    let mut acc = sum_bytes(0, src);
    acc = sum_bytes(acc, dst);
    acc = add(acc, u16::from_ne_bytes([0, proto]));
    acc = add(acc, u16::from_ne_bytes([(l4_len >> 8) as u8, l4_len as u8]));
    if l4_len > 0xffff {
        acc = add(acc, u16::from_ne_bytes([(l4_len >> 24) as u8, (l4_len >> 16) as u8]));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full checksum computed from scratch.
    fn full(pseudo: u32, l4: &[u8]) -> u16 {
        !fold(sum_bytes(pseudo, l4))
    }

    fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&src_port.to_be_bytes());
        b[2..4].copy_from_slice(&dst_port.to_be_bytes());
        b[4..6].copy_from_slice(&(16u16).to_be_bytes());
        b[8..16].copy_from_slice(&payload[..8]);
        b
    }

    #[test]
    fn incremental_matches_recompute_ipv4_udp() {
        let (s, d) = ([10, 0, 0, 1], [192, 0, 2, 10]);
        let (s2, d2) = ([10, 0, 0, 254], [10, 1, 0, 5]);
        let mut pkt = udp(40000, 53, b"abcdefgh");
        let c = full(pseudo_sum(&s, &d, 17, 16), &pkt);
        // rewrite: addresses (pseudo header) and destination port
        let mut delta = diff4(0, &s, &s2);
        delta = diff4(delta, &d, &d2);
        delta = diff16(delta, u16::from_ne_bytes([pkt[2], pkt[3]]), u16::from_ne_bytes(5353u16.to_be_bytes()));
        pkt[2..4].copy_from_slice(&5353u16.to_be_bytes());
        let expect = full(pseudo_sum(&s2, &d2, 17, 16), &pkt);
        assert_eq!(apply_full(c, delta), expect);
    }

    #[test]
    fn incremental_matches_recompute_ipv6() {
        let s = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut d = s;
        d[15] = 0x10;
        let mut s2 = s;
        s2[14] = 0xfe;
        let mut d2 = s;
        d2[3] = 0x99;
        let pkt = udp(1234, 443, b"quicquic");
        let c = full(pseudo_sum(&s, &d, 17, 16), &pkt);
        let delta = diff16b(diff16b(0, &s, &s2), &d, &d2);
        assert_eq!(apply_full(c, delta), full(pseudo_sum(&s2, &d2, 17, 16), &pkt));
    }

    #[test]
    fn partial_checksum_tracks_pseudo_header() {
        let (s, d) = ([10, 0, 0, 1], [192, 0, 2, 10]);
        let (s2, d2) = ([10, 0, 0, 254], [10, 1, 0, 5]);
        let partial = fold(pseudo_sum(&s, &d, 6, 40));
        let delta = diff4(diff4(0, &s, &s2), &d, &d2);
        assert_eq!(apply_partial(partial, delta), fold(pseudo_sum(&s2, &d2, 6, 40)));
    }

    #[test]
    fn ip_header_checksum_update() {
        let mut h = [0x45u8, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 192, 0, 2, 10];
        let c = !fold(sum_bytes(0, &h));
        h[10..12].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(fold(sum_bytes(0, &h)), 0xffff);
        let new_dst = [10, 1, 0, 6];
        let delta = diff4(0, &[192, 0, 2, 10], &new_dst);
        let c2 = apply_full(c, delta);
        h[16..20].copy_from_slice(&new_dst);
        h[10..12].copy_from_slice(&c2.to_ne_bytes());
        assert_eq!(fold(sum_bytes(0, &h)), 0xffff, "header must verify after update");
    }

    #[test]
    fn many_random_rewrites_match() {
        // xorshift: deterministic pseudo-random fields
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..2000 {
            let s = next().to_ne_bytes();
            let d = next().to_ne_bytes();
            let s2 = next().to_ne_bytes();
            let d2 = next().to_ne_bytes();
            let mut pkt = udp(next() as u16, next() as u16, &next().to_ne_bytes().repeat(2));
            let c = full(pseudo_sum(&s, &d, 17, 16), &pkt);
            let new_port = next() as u16;
            let delta = diff16(
                diff4(diff4(0, &s, &s2), &d, &d2),
                u16::from_ne_bytes([pkt[0], pkt[1]]),
                u16::from_ne_bytes(new_port.to_be_bytes()),
            );
            pkt[0..2].copy_from_slice(&new_port.to_be_bytes());
            let want = full(pseudo_sum(&s2, &d2, 17, 16), &pkt);
            let got = apply_full(c, delta);
            // 0x0000 and 0xffff are the same value in one's complement
            assert!(got == want || (got ^ want) == 0xffff && (got == 0 || want == 0), "{got:#x} vs {want:#x}");
        }
    }
}
