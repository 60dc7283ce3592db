//! The flow hash used to pick a backend. It must give the same value on
//! every node for the same 5-tuple, so it is a fixed function of the bytes
//! plus a seed (no per-boot randomness).

#[inline(always)]
const fn mix(mut h: u32, v: u32) -> u32 {
    h ^= v.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
    h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// An address as two little-endian words (the data path's aligned reads).
#[inline(always)]
fn words(b: &[u8; 16]) -> [u64; 2] {
    let w = |i: usize| u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
    [w(0), w(8)]
}

/// Murmur3-style hash of a flow's source and destination address and ports
/// and protocol.
#[inline(always)]
pub fn flow_hash(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8, seed: u32) -> u32 {
    flow_hash_words(words(src), words(dst), sport, dport, proto, seed)
}

/// `flow_hash` of addresses given as two `u64` words each, as the data
/// path reads them from its 8-aligned keys (whole-word loads instead of
/// sixteen byte loads per address): the low half of a word holds the
/// address's first four bytes, as on the (little-endian) BPF target.
#[inline(always)]
pub fn flow_hash_words(src: [u64; 2], dst: [u64; 2], sport: u16, dport: u16, proto: u8, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, src[0] as u32);
    h = mix(h, (src[0] >> 32) as u32);
    h = mix(h, src[1] as u32);
    h = mix(h, (src[1] >> 32) as u32);
    h = mix(h, dst[0] as u32);
    h = mix(h, (dst[0] >> 32) as u32);
    h = mix(h, dst[1] as u32);
    h = mix(h, (dst[1] >> 32) as u32);
    h = mix(h, u32::from(sport) << 16 | u32::from(dport));
    h = mix(h, u32::from(proto));
    finish(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn words_variant_equals_the_byte_variant() {
        let w = |b: &[u8; 16]| {
            [u64::from_le_bytes(b[..8].try_into().unwrap()), u64::from_le_bytes(b[8..].try_into().unwrap())]
        };
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..1000 {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            for i in 0..16 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                a[i] = (x >> 56) as u8;
                b[i] = (x >> 48) as u8;
            }
            let (sp, dp, pr, seed) = ((x >> 8) as u16, (x >> 24) as u16, (x >> 40) as u8, x as u32);
            assert_eq!(flow_hash(&a, &b, sp, dp, pr, seed), flow_hash_words(w(&a), w(&b), sp, dp, pr, seed));
        }
    }

    #[test]
    fn deterministic_and_spread() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        assert_eq!(flow_hash(&a, &b, 1, 2, 17, 0), flow_hash(&a, &b, 1, 2, 17, 0));
        assert_ne!(flow_hash(&a, &b, 1, 2, 17, 0), flow_hash(&a, &b, 1, 3, 17, 0));
        assert_ne!(flow_hash(&a, &b, 1, 2, 17, 0), flow_hash(&a, &b, 1, 2, 6, 0));
        let mut buckets = [0u32; 3];
        for p in 0..3000u16 {
            buckets[(flow_hash(&a, &b, 10000 + p, 53, 17, 7) % 3) as usize] += 1;
        }
        for n in buckets {
            assert!((850..1150).contains(&n), "{buckets:?}");
        }
    }
}
