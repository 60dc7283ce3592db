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

#[inline(always)]
fn word(b: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Murmur3-style hash of a flow's source and destination address and ports
/// and protocol.
#[inline(always)]
pub fn flow_hash(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, word(src, 0));
    h = mix(h, word(src, 4));
    h = mix(h, word(src, 8));
    h = mix(h, word(src, 12));
    h = mix(h, word(dst, 0));
    h = mix(h, word(dst, 4));
    h = mix(h, word(dst, 8));
    h = mix(h, word(dst, 12));
    h = mix(h, (sport as u32) << 16 | dport as u32);
    h = mix(h, proto as u32);
    finish(h)
}

#[cfg(test)]
mod tests {
    use super::*;

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
