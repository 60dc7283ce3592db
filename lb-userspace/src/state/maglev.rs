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
//! A service's reject share ([`reject_entry`]: a Gateway API backendRef
//! that does not resolve keeps its weighted share of new flows, and that
//! share is rejected) is one more entry, named [`REJECT_NAME`] (no backend's
//! "ip:port" is), so it takes `reject_weight / (reject_weight + the
//! backends' weights)` of the slots like any backend of that weight, at the
//! same places on every node.
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

/// The name of the reject share's entry (never an "ip:port").
pub const REJECT_NAME: &str = "reject";

/// The entry of a service's reject share: `id` (the slot the data path
/// finds marked `BE_F_REJECT`) in the slots of `weight`.
pub fn reject_entry(id: u32, weight: u32) -> Entry {
    Entry { name: REJECT_NAME.to_owned(), id, weight }
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
mod tests;
