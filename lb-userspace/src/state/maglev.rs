//! Lookup-table construction (Maglev, Eisenbud et al., NSDI 2016) with
//! weights.
//!
//! Every backend owns a permutation of the table's `M` slots (M prime),
//! derived from its identity (its "ip:port") and the seed: an `offset` and a
//! `skip`, both from a hash, visiting `offset, offset + skip, offset + 2·skip,
//! … (mod M)`. Backends take turns claiming the next slot of their
//! permutation that is still free, until the table is full.
//!
//! Weights decide whose turn it is, over the whole fill (not only in its
//! first round), with credit: a backend of weight `w` starts with half a
//! turn of credit (`max_w/2`, `max_w` the largest weight), earns `w` more in
//! each round `r = 1, 2, …`, and takes a turn (spending `max_w`) whenever
//! its credit reaches `max_w`; within a round, backends go in name order.
//! So after `r` rounds each backend has taken `round(r·w/max_w)` slots: the
//! shares are proportional to the weights (each within about one slot) at
//! every point of the fill, and therefore in the final table. (The half turn
//! of starting credit rounds instead of truncating, so that light backends
//! are not systematically short-changed in favour of heavy ones.)
//! Weight 0 takes no slot ("no new flows"); no backend with a weight above
//! zero gives an empty table.
//!
//! The same backend set (in any order) and seed give the same table on every
//! node. Building costs one hash pair per backend and, per probe, an add and
//! a compare (no division), about M·ln M probes in all: N = 1000, M = 65537
//! builds in about 2 ms (`cargo xtask bench maglev`).
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    time::{Duration, Instant},
};

/// Table sizes a service may choose (`maglev_table_size`), all prime.
pub const SIZES: [u32; 10] = lb_common::TABLE_SIZES;
/// Table size of a service that does not choose one.
pub const DEFAULT_SIZE: u32 = lb_common::TABLE_SIZE;

/// The allowed sizes as "251, 509, …" for messages.
pub fn sizes_list() -> String {
    SIZES.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

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

/// Marks a slot not claimed yet while building.
const EMPTY: u32 = u32::MAX;

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // final avalanche (splitmix64)
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The permutation of a backend in a table of `m` slots: `(offset, skip)`,
/// `offset < m`, `1 <= skip < m`.
fn permutation(name: &str, m: u32, seed: u32) -> (u32, u32) {
    let offset = fnv1a(name.as_bytes(), u64::from(seed)) % u64::from(m);
    let skip = fnv1a(name.as_bytes(), u64::from(seed) ^ 0x9e37_79b9_7f4a_7c15) % (u64::from(m) - 1).max(1) + 1;
    (offset as u32, skip as u32)
}

/// Whether `n` is prime (trial division; table sizes are small).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Builds a table of `size` slots (a prime). Returns an empty table when no
/// backend has a weight above zero.
pub fn build(entries: &[Entry], size: u32, seed: u32) -> Vec<u32> {
    let mut table = Vec::new();
    build_into(entries, size, seed, &mut table);
    table
}

/// A backend while the table is built.
struct Cursor {
    /// Next slot of its permutation to try.
    pos: u32,
    skip: u32,
    id: u32,
}

/// How weighted turns are scheduled (the same order either way; the tests
/// force each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), expect(dead_code, reason = "Auto is the only schedule outside the tests"))]
enum Schedule {
    /// The cheaper of the two for the weights.
    Auto,
    /// Round by round over every backend.
    Rounds,
    /// A heap of each backend's next turn.
    Heap,
}

/// [`build`] into a caller-owned buffer (cleared first).
///
/// # Panics
///
/// When `size` is not prime (a permutation would not visit every slot).
pub fn build_into(entries: &[Entry], size: u32, seed: u32, table: &mut Vec<u32>) {
    build_scheduled(entries, size, seed, table, Schedule::Auto);
}

fn build_scheduled(entries: &[Entry], size: u32, seed: u32, table: &mut Vec<u32>, schedule: Schedule) {
    assert!(is_prime(size), "maglev table size {size} is not prime");
    table.clear();
    let mut live: Vec<&Entry> = entries.iter().filter(|e| e.weight > 0).collect();
    if live.is_empty() {
        return;
    }
    live.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let m = size;
    let mut cursors: Vec<Cursor> = live
        .iter()
        .map(|e| {
            let (offset, skip) = permutation(&e.name, m, seed);
            Cursor { pos: offset, skip, id: e.id }
        })
        .collect();
    table.resize(m as usize, EMPTY);
    let slots = table.as_mut_slice();
    // The backend's next free slot in its permutation: claim it.
    let claim = |c: &mut Cursor, slots: &mut [u32]| loop {
        let p = c.pos;
        let mut next = p + c.skip;
        if next >= m {
            next -= m;
        }
        c.pos = next;
        let s = &mut slots[p as usize];
        if *s == EMPTY {
            *s = c.id;
            return;
        }
    };
    let mut left = m;
    let w0 = live[0].weight;
    if live.iter().all(|e| e.weight == w0) {
        // Equal weights: every backend has a turn in every round.
        'fill: loop {
            for c in &mut cursors {
                claim(c, slots);
                left -= 1;
                if left == 0 {
                    break 'fill;
                }
            }
        }
        return;
    }
    // Weighted: turns ordered by (round, name order). Backend i's k-th turn
    // is in the first round r with max_w/2 + r·w_i >= k·max_w, that is
    // r = ceil((2k-1)·max_w / 2w_i) = floor(((2k-1)·max_w + 2w_i - 1) / 2w_i),
    // advanced without a division per turn: quotient and remainder of the
    // numerator (which grows by 2·max_w per turn) by 2w_i.
    let max_w = live.iter().map(|e| u64::from(e.weight)).max().expect("non-empty");
    let sum_w: u64 = live.iter().map(|e| u64::from(e.weight)).sum();
    // Two ways to the same order of turns: round by round over every
    // backend (cheap per step, but a round gives a turn only to some), or a
    // heap of next turns (log N per turn). Take the cheaper: the rounds
    // number about M·max_w/sum_w.
    let n = live.len() as u64;
    let rounds = (u64::from(m) * max_w).div_ceil(sum_w) + 1;
    let by_rounds = match schedule {
        Schedule::Auto => rounds * n <= u64::from(m) * 4 * (64 - u64::from(n.leading_zeros())),
        Schedule::Rounds => true,
        Schedule::Heap => false,
    };
    if by_rounds {
        // Credit in half turns: start at half a turn, 2w per round, a turn
        // costs 2·max_w (at most one turn per round, as w <= max_w).
        let mut credit: Vec<u64> = vec![max_w; live.len()];
        let gain: Vec<u64> = live.iter().map(|e| 2 * u64::from(e.weight)).collect();
        'rounds: loop {
            for (i, c) in cursors.iter_mut().enumerate() {
                credit[i] += gain[i];
                if credit[i] >= 2 * max_w {
                    credit[i] -= 2 * max_w;
                    claim(c, slots);
                    left -= 1;
                    if left == 0 {
                        break 'rounds;
                    }
                }
            }
        }
        return;
    }
    struct Turns {
        round: u64,
        rem: u64,
        step_q: u64,
        step_r: u64,
        w: u64,
    }
    let mut turns: Vec<Turns> = live
        .iter()
        .map(|e| {
            let w = 2 * u64::from(e.weight);
            let first = max_w + w - 1;
            Turns { round: first / w, rem: first % w, step_q: 2 * max_w / w, step_r: 2 * max_w % w, w }
        })
        .collect();
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> =
        turns.iter().enumerate().map(|(i, t)| Reverse((t.round, i as u32))).collect();
    while left > 0 {
        let mut top = heap.peek_mut().expect("one entry per live backend");
        let i = top.0 .1 as usize;
        claim(&mut cursors[i], slots);
        left -= 1;
        let t = &mut turns[i];
        t.round += t.step_q;
        t.rem += t.step_r;
        if t.rem >= t.w {
            t.rem -= t.w;
            t.round += 1;
        }
        *top = Reverse((t.round, i as u32));
    }
}

/// Slots per backend id.
pub fn counts(table: &[u32]) -> std::collections::HashMap<u32, u32> {
    let mut m = std::collections::HashMap::new();
    for id in table {
        *m.entry(*id).or_default() += 1;
    }
    m
}

/// Largest share over the average share of the backends that hold slots
/// (1.0 is perfect balance); 0 for an empty table.
pub fn max_avg(table: &[u32]) -> f64 {
    let c = counts(table);
    let Some(max) = c.values().max() else { return 0.0 };
    f64::from(*max) / (table.len() as f64 / c.len() as f64)
}

/// How far a table is from its weights: the largest ratio of a backend's
/// slots to its weight-proportional share of the slots, over the backends
/// that hold slots and have a weight (1.0: each holds exactly its weight's
/// share; equal weights make it the plain max/avg of [`max_avg`]); 0 when no
/// backend holds a slot. `backends` are (slots, weight) pairs.
pub fn weighted_max_avg(backends: impl IntoIterator<Item = (u32, u32)>) -> f64 {
    let taking: Vec<(u32, u32)> = backends.into_iter().filter(|(s, w)| *s > 0 && *w > 0).collect();
    let slots: u64 = taking.iter().map(|(s, _)| u64::from(*s)).sum();
    let weight: u64 = taking.iter().map(|(_, w)| u64::from(*w)).sum();
    taking.iter().map(|(s, w)| f64::from(*s) / (slots as f64 * f64::from(*w) / weight as f64)).fold(0.0, f64::max)
}

/// Entries that differ between two tables of the same size, split into those
/// that had to move (`must`: the old owner is `gone`, or the new owner is
/// `new`) and the others (`collateral`: moved between backends present in
/// both tables).
pub fn moved(old: &[u32], new: &[u32], gone: Option<u32>, added: Option<u32>) -> (usize, usize) {
    let mut must = 0;
    let mut collateral = 0;
    for (a, b) in old.iter().zip(new) {
        if a != b {
            if Some(*a) == gone || Some(*b) == added {
                must += 1;
            } else {
                collateral += 1;
            }
        }
    }
    (must, collateral)
}

/// One row of `cargo xtask bench maglev`.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Backends (all weight 1).
    pub backends: u32,
    /// Table size.
    pub size: u32,
    /// Median build time.
    pub build: Duration,
    /// Largest share over the average share.
    pub max_avg: f64,
    /// Percent of the entries that move when one backend is removed, because
    /// they belonged to it.
    pub remove_must: f64,
    /// Percent of the entries that move between the remaining backends when
    /// one backend is removed.
    pub remove_collateral: f64,
    /// Percent of the entries the added backend takes when one is added.
    pub add_must: f64,
    /// Percent of the entries that move between the old backends when one is added.
    pub add_collateral: f64,
}

/// Backend `i` of the benchmark and the tests: a distinct "ip:port".
pub fn sample_entry(i: u32) -> Entry {
    Entry { name: format!("10.{}.{}.{}:8080", (i >> 16) & 255, (i >> 8) & 255, i & 255), id: i, weight: 1 }
}

/// Builds tables of `backends` equal-weight backends and `size` slots
/// (`runs` times, for the median build time) and measures the balance and
/// the entries that move when one backend is removed and when one is added.
pub fn measure(backends: u32, size: u32, runs: usize, seed: u32) -> Measurement {
    let set: Vec<Entry> = (0..backends).map(sample_entry).collect();
    let mut times = Vec::with_capacity(runs.max(1));
    let mut table = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        table = build(&set, size, seed);
        times.push(start.elapsed());
        std::hint::black_box(&table);
    }
    times.sort();
    let build_time = times[times.len() / 2];
    let pct = |n: usize| n as f64 * 100.0 / f64::from(size);

    let victim = backends / 2;
    let fewer: Vec<Entry> = set.iter().filter(|e| e.id != victim).cloned().collect();
    let (rm_must, rm_coll) = moved(&table, &build(&fewer, size, seed), Some(victim), None);

    let mut more = set.clone();
    more.push(sample_entry(backends));
    let (add_must, add_coll) = moved(&table, &build(&more, size, seed), None, Some(backends));

    Measurement {
        backends,
        size,
        build: build_time,
        max_avg: max_avg(&table),
        remove_must: pct(rm_must),
        remove_collateral: pct(rm_coll),
        add_must: pct(add_must),
        add_collateral: pct(add_coll),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entries(n: u32) -> Vec<Entry> {
        (0..n).map(sample_entry).collect()
    }

    fn shares(t: &[u32]) -> HashMap<u32, u32> {
        counts(t)
    }

    /// The credit scheme written out round by round (credit counted in
    /// half units: start at one half turn, `2w` per round, `2·max_w` a
    /// turn), with a `%` per probe: the fast paths of `build_into` must give
    /// exactly this table.
    fn reference(entries: &[Entry], size: u32, seed: u32) -> Vec<u32> {
        let mut live: Vec<&Entry> = entries.iter().filter(|e| e.weight > 0).collect();
        if live.is_empty() {
            return Vec::new();
        }
        live.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let m = u64::from(size);
        let perms: Vec<(u64, u64)> = live
            .iter()
            .map(|e| {
                let (o, s) = permutation(&e.name, size, seed);
                (u64::from(o), u64::from(s))
            })
            .collect();
        let max_w = live.iter().map(|e| u64::from(e.weight)).max().unwrap();
        let mut next = vec![0u64; live.len()];
        let mut credit = vec![max_w; live.len()];
        let mut table = vec![EMPTY; size as usize];
        let mut filled = 0u64;
        while filled < m {
            for (i, e) in live.iter().enumerate() {
                credit[i] += 2 * u64::from(e.weight);
                if credit[i] < 2 * max_w {
                    continue;
                }
                credit[i] -= 2 * max_w;
                let (offset, skip) = perms[i];
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == EMPTY {
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

    #[test]
    fn sizes_are_prime_and_include_the_default() {
        assert!(SIZES.iter().all(|s| is_prime(*s)), "{SIZES:?}");
        assert!(SIZES.contains(&DEFAULT_SIZE));
        assert!(SIZES.windows(2).all(|w| w[0] < w[1]));
        assert!(!is_prime(1) && !is_prime(65535) && is_prime(2) && is_prime(65537));
    }

    #[test]
    fn matches_the_reference_scheme() {
        for (n, size) in [(1, 251), (7, 251), (10, 1021), (33, 4093)] {
            let e = entries(n);
            assert_eq!(build(&e, size, 3), reference(&e, size, 3), "equal weights n={n} m={size}");
        }
        // Weighted: both schedules of turns give the reference's table.
        for weights in [&[1, 2, 3, 7, 0, 100, 65535][..], &[1, 2, 3, 2, 0][..], &[65535, 1, 1, 1, 1, 1][..]] {
            let mut e = entries(20);
            for (i, x) in e.iter_mut().enumerate() {
                x.weight = weights[i % weights.len()];
            }
            for size in [251, 1021, 65537] {
                let want = reference(&e, size, 9);
                assert_eq!(build(&e, size, 9), want, "weights {weights:?} m={size}");
                for schedule in [Schedule::Rounds, Schedule::Heap] {
                    let mut t = Vec::new();
                    build_scheduled(&e, size, 9, &mut t, schedule);
                    assert_eq!(t, want, "{schedule:?}, weights {weights:?} m={size}");
                }
            }
        }
    }

    #[test]
    #[expect(clippy::float_cmp, reason = "the ratios compared are exact")]
    fn weighted_max_avg_compares_with_the_weights() {
        // A perfect 1:3 split is 1.0, not the plain max/avg's 1.5.
        assert_eq!(weighted_max_avg([(250, 1), (750, 3)]), 1.0);
        assert_eq!(weighted_max_avg([(500, 1), (500, 1)]), 1.0);
        // The backend over its share sets it; draining (weight 0, no slots)
        // and empty tables are left out.
        assert!((weighted_max_avg([(300, 1), (700, 3), (0, 0)]) - 1.2).abs() < 1e-9);
        assert_eq!(weighted_max_avg([(0, 1), (0, 3)]), 0.0);
        assert_eq!(weighted_max_avg([]), 0.0);
        // A built 1:3 table (and a 1:2:7 one) is within 1% of its weights.
        for weights in [&[1, 3][..], &[1, 2, 7][..]] {
            let e: Vec<Entry> =
                weights.iter().enumerate().map(|(i, w)| Entry { weight: *w, ..sample_entry(i as u32) }).collect();
            let t = build(&e, 65537, 0);
            let c = counts(&t);
            let r = weighted_max_avg(e.iter().map(|x| (c.get(&x.id).copied().unwrap_or(0), x.weight)));
            assert!((1.0..1.01).contains(&r), "weights {weights:?}: {r}");
        }
    }

    #[test]
    fn complete_and_balanced() {
        // max/avg <= 1.01 whenever M >= 100·N.
        for (n, size) in
            [(1, 251), (2, 251), (10, 1021), (40, 4093), (100, 16381), (300, 32749), (655, 65537), (1000, 131071)]
        {
            let t = build(&entries(n), size, 0);
            assert_eq!(t.len(), size as usize);
            assert!(t.iter().all(|id| *id < n), "every slot holds a backend");
            let s = shares(&t);
            assert_eq!(s.len(), n as usize, "every backend holds slots");
            let r = max_avg(&t);
            assert!(r <= 1.01, "n={n} m={size}: max/avg {r}");
            let (lo, hi) = (s.values().min().unwrap(), s.values().max().unwrap());
            assert!(hi - lo <= 1, "equal weights differ by at most one slot: {lo}..{hi}");
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        let mut e = entries(50);
        let a = build(&e, 4093, 42);
        assert_eq!(a, build(&e, 4093, 42));
        e.reverse();
        assert_eq!(a, build(&e, 4093, 42));
        e.swap(3, 17);
        e.rotate_left(11);
        assert_eq!(a, build(&e, 4093, 42));
        // Ids are what the slots hold, names what decides: renumbering the
        // same names maps the same table through the renumbering.
        let renum: Vec<Entry> = e.iter().map(|x| Entry { id: x.id + 1000, ..x.clone() }).collect();
        let b = build(&renum, 4093, 42);
        assert!(a.iter().zip(&b).all(|(x, y)| x + 1000 == *y));
    }

    #[test]
    fn seed_changes_the_table() {
        let e = entries(20);
        let a = build(&e, 4093, 1);
        for seed in [0, 2, 0xffff_ffff] {
            let b = build(&e, 4093, seed);
            let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            // Two unrelated tables of 20 backends agree on about 1/20 of the slots.
            assert!(differ > 4093 * 8 / 10, "seed {seed}: only {differ} slots differ");
        }
    }

    #[test]
    fn weights_are_proportional() {
        let mut e = entries(6);
        let weights = [1, 2, 3, 5, 10, 100];
        for (x, w) in e.iter_mut().zip(weights) {
            x.weight = w;
        }
        let total: u32 = weights.iter().sum();
        for size in [251, 4093, 65537] {
            let s = shares(&build(&e, size, 7));
            for (x, w) in e.iter().zip(weights) {
                let want = f64::from(size) * f64::from(w) / f64::from(total);
                let got = f64::from(s.get(&x.id).copied().unwrap_or(0));
                assert!((got - want).abs() <= 2.0, "m={size} weight {w}: {got} slots, expected {want:.1}");
            }
        }
        // Extreme skew: one heavy backend and many light ones.
        let mut e = entries(100);
        e[0].weight = 65535;
        let s = shares(&build(&e, 65537, 0));
        let want_light = 65537.0 / (65535.0 + 99.0);
        assert!((f64::from(s[&0]) - 65535.0 * want_light).abs() <= 2.0, "{}", s[&0]);
        assert!(e[1..].iter().all(|x| (f64::from(s.get(&x.id).copied().unwrap_or(0)) - want_light).abs() <= 1.0));
    }

    #[test]
    fn zero_weight_takes_nothing_and_all_zero_is_empty() {
        let mut e = entries(3);
        e[2].weight = 0;
        let t = build(&e, 1021, 0);
        assert_eq!(t.len(), 1021);
        assert!(!t.contains(&2));
        // Draining a backend is removing it from the table.
        assert_eq!(t, build(&e[..2], 1021, 0));
        for x in &mut e {
            x.weight = 0;
        }
        assert!(build(&e, 1021, 0).is_empty());
        assert!(build(&[], 1021, 0).is_empty());
        let mut buf = vec![1, 2, 3];
        build_into(&[], 251, 0, &mut buf);
        assert!(buf.is_empty(), "build_into clears the buffer");
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn refuses_a_size_that_is_not_prime() {
        build(&entries(2), 1000, 0);
    }

    #[test]
    fn removing_one_of_100_moves_little_else() {
        let e = entries(100);
        let a = build(&e, 65537, 0);
        for victim in [0u32, 37, 99] {
            let rest: Vec<Entry> = e.iter().filter(|x| x.id != victim).cloned().collect();
            let b = build(&rest, 65537, 0);
            let (must, collateral) = moved(&a, &b, Some(victim), None);
            assert_eq!(must as u32, shares(&a)[&victim], "all of the removed backend's slots move");
            assert!(collateral <= 65537 / 100, "removing {victim}: {collateral} collateral moves");
        }
    }

    #[test]
    fn adding_one_moves_little_else() {
        let e = entries(100);
        let a = build(&e, 65537, 0);
        let mut more = e.clone();
        more.push(sample_entry(100));
        let b = build(&more, 65537, 0);
        let (must, collateral) = moved(&a, &b, None, Some(100));
        assert_eq!(must as u32, shares(&b)[&100]);
        assert!((must as f64 - 65537.0 / 101.0).abs() <= 1.0, "the new backend takes its share: {must}");
        assert!(collateral <= 65537 / 100, "{collateral} collateral moves");
    }

    #[test]
    fn bench_measurement_runs() {
        let m = measure(10, 1021, 3, 0);
        assert_eq!((m.backends, m.size), (10, 1021));
        assert!(m.build > Duration::ZERO);
        assert!((1.0..1.05).contains(&m.max_avg), "{}", m.max_avg);
        assert!((5.0..15.0).contains(&m.remove_must), "{}", m.remove_must);
        assert!((4.0..14.0).contains(&m.add_must), "{}", m.add_must);
        for c in [m.remove_collateral, m.add_collateral] {
            assert!((0.0..20.0).contains(&c), "{c}");
        }
    }
}
