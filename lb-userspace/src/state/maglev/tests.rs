//! Unit tests of the Maglev table builder.
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
fn reject_share_takes_its_weight_of_the_slots() {
    // A backendRef of weight 70 resolved to 3 endpoints (70 each, over a
    // share scaled by 3) and one of weight 30 that does not resolve (90).
    const REJECT: u32 = 999;
    let mut e = entries(3);
    for x in &mut e {
        x.weight = 70;
    }
    e.push(reject_entry(REJECT, 90));
    for (size, seed) in [(251, 0), (4093, 5), (65537, 11)] {
        let t = build(&e, size, seed);
        let s = shares(&t);
        let rejected = f64::from(s[&REJECT]) / f64::from(size);
        assert!((rejected - 0.3).abs() < 0.01, "m={size}: reject share {rejected}");
        for x in &e[..3] {
            let got = f64::from(s[&x.id]) / f64::from(size);
            assert!((got - 0.7 / 3.0).abs() < 0.01, "m={size}: backend {} share {got}", x.id);
        }
        // The order the entries come in does not matter.
        let mut other = e.clone();
        other.reverse();
        assert_eq!(t, build(&other, size, seed));
    }
    // Weight 0 is no reject share; a reject share alone fills the table.
    let mut none = e.clone();
    none[3].weight = 0;
    assert!(!build(&none, 1021, 0).contains(&REJECT));
    assert!(build(&[reject_entry(REJECT, 1)], 251, 0).iter().all(|id| *id == REJECT));
    assert_eq!(reject_entry(REJECT, 1).name, REJECT_NAME);
    assert!(REJECT_NAME.parse::<std::net::SocketAddr>().is_err());
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
