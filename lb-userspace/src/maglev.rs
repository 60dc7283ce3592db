//! Lookup-table construction (Maglev, Eisenbud et al., NSDI 2016) with
//! weights: every backend owns a permutation of the table's slots derived
//! from its address and a seed, and backends take turns claiming their next
//! free slot, each turn granted in proportion to its weight. The same
//! backend set and seed give the same table on every node, in any order.

/// One backend as the table builder sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Stable identity of the backend (its "ip:port"); drives the permutation.
    pub name: String,
    /// Value stored in the table slots (the backend id).
    pub id: u32,
    /// Relative weight; 0 takes no slot.
    pub weight: u32,
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // final avalanche (splitmix64)
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Builds a table of `size` slots (a prime). Returns an empty table when no
/// backend has a weight above zero.
pub fn build(entries: &[Entry], size: u32, seed: u32) -> Vec<u32> {
    let mut live: Vec<&Entry> = entries.iter().filter(|e| e.weight > 0).collect();
    if live.is_empty() {
        return Vec::new();
    }
    live.sort_by(|a, b| a.name.cmp(&b.name));
    let m = size as u64;
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|e| {
            let offset = fnv1a(e.name.as_bytes(), seed as u64) % m;
            let skip = fnv1a(e.name.as_bytes(), (seed as u64) ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let max_w = live.iter().map(|e| e.weight as u64).max().unwrap_or(1);
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    while filled < m {
        for (i, e) in live.iter().enumerate() {
            credit[i] += e.weight as u64;
            if credit[i] < max_w {
                continue;
            }
            credit[i] -= max_w;
            let (offset, skip) = perms[i];
            loop {
                let slot = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = e.id;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entries(n: u32) -> Vec<Entry> {
        (0..n).map(|i| Entry { name: format!("10.0.{}.{}:53", i / 250, i % 250), id: i, weight: 1 }).collect()
    }

    fn shares(t: &[u32]) -> HashMap<u32, usize> {
        let mut m = HashMap::new();
        for id in t {
            *m.entry(*id).or_default() += 1;
        }
        m
    }

    #[test]
    fn balanced_and_complete() {
        let t = build(&entries(10), 1031, 0);
        assert_eq!(t.len(), 1031);
        let s = shares(&t);
        assert_eq!(s.len(), 10);
        assert!(s.values().all(|&c| (100..=106).contains(&c)), "{s:?}");
    }

    #[test]
    fn order_independent() {
        let mut e = entries(7);
        let a = build(&e, 1031, 42);
        e.reverse();
        assert_eq!(a, build(&e, 1031, 42));
        assert_ne!(a, build(&e, 1031, 43), "seed changes the table");
    }

    #[test]
    fn weights_are_proportional_and_zero_drains() {
        let mut e = entries(3);
        e[0].weight = 2;
        e[2].weight = 0;
        let s = shares(&build(&e, 1031, 0));
        assert_eq!(s.get(&2), None);
        let (a, b) = (s[&0] as f64, s[&1] as f64);
        assert!((a / b - 2.0).abs() < 0.02, "{a} {b}");
    }

    #[test]
    fn removal_moves_little() {
        let e = entries(10);
        let a = build(&e, 1031, 0);
        let b = build(&e[..9], 1031, 0);
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y && **x != 9).count();
        assert!(moved < 1031 / 10, "collateral moves: {moved}");
    }

    #[test]
    fn empty_when_no_weight() {
        let mut e = entries(2);
        e.iter_mut().for_each(|x| x.weight = 0);
        assert!(build(&e, 1031, 0).is_empty());
        assert!(build(&[], 1031, 0).is_empty());
    }
}
