//! The non-VIP pre-filter (`XLB_PREFILTER`): two bit sets indexed by a hash
//! of an address, one holding the VIPs, one the backends' addresses. A
//! UDP/TCP packet whose destination's bit is clear in the first set and
//! whose source's bit is clear in the second can be neither for a service
//! nor a backend's reply, so the data path passes it after two array reads,
//! before any parsing into scratch or hash lookup. Collisions only send a
//! packet down the full path. The agent's map writer keeps the sets (bits
//! are set before the services that need them are written and cleared
//! after) and sets the ready word last; until then the filter is not used.

/// Bits of the hash: each set has `1 << PREFILTER_BITS` bits.
pub const PREFILTER_BITS: u32 = 19;
/// Words of one set.
pub const PREFILTER_SET_WORDS: u32 = 1 << (PREFILTER_BITS - 6);
/// First word of the VIP set (looked up by destination).
pub const PREFILTER_VIPS: u32 = 0;
/// First word of the backend set (looked up by source).
pub const PREFILTER_BACKENDS: u32 = PREFILTER_SET_WORDS;
/// Index of the ready word: non-zero once the writer has filled the sets.
pub const PREFILTER_READY: u32 = 2 * PREFILTER_SET_WORDS;
/// Entries of the array (128 KiB of bits and the ready word).
pub const PREFILTER_ENTRIES: u32 = PREFILTER_READY + 1;

/// The bit of an address given as its two native-endian 64-bit words
/// (`u64::from_ne_bytes` of bytes 0..8 and 8..16): (word offset within a
/// set, mask).
#[inline(always)]
pub fn prefilter_bit(w: [u64; 2]) -> (u32, u64) {
    let x = (w[0] ^ w[1].rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let bit = (x >> (64 - PREFILTER_BITS)) as u32;
    (bit >> 6, 1u64 << (bit & 63))
}

/// [`prefilter_bit`] of a 16-byte address (IPv4-mapped for IPv4).
#[inline(always)]
pub fn prefilter_bit_of(a: &[u8; 16]) -> (u32, u64) {
    let w0 = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let w1 = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    prefilter_bit([w0, w1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_spread_and_stay_in_range() {
        let mut seen = [0u32; 64];
        for i in 0..4096u32 {
            let a = crate::v4_mapped((0x0a00_0000 + i).to_be_bytes());
            let (w, m) = prefilter_bit_of(&a);
            assert!(w < PREFILTER_SET_WORDS);
            assert_eq!(m.count_ones(), 1);
            seen[m.trailing_zeros() as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
    }
}
