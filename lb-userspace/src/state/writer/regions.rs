//! The lookup-table array's allocator: pairs of regions carved out first
//! fit, and rebuilt from the service values on restore (see the parent
//! module's documentation).
use std::{collections::BTreeMap, time::Duration};

/// Regions given up are reused only after this long: far longer than any
/// packet takes between reading a service value and its table entry.
pub const GRACE: Duration = Duration::from_millis(20);

/// A service's two adjacent table regions of `size` entries each, starting
/// at `base` (even). See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// First entry of region A (even).
    pub base: u32,
    /// Entries of each region (the table size).
    pub size: u32,
}

impl Pair {
    /// The pair whose live region starts at `offset` and has `size`
    /// entries, by the layout's parity rule; `None` when no pair can have
    /// such a live region (an even or tiny size, or B before the start).
    pub fn of_live(offset: u32, size: u32) -> Option<Pair> {
        if size < 3 || size.is_multiple_of(2) {
            return None;
        }
        let base = if offset.is_multiple_of(2) { offset } else { offset.checked_sub(size)? };
        Some(Pair { base, size })
    }

    /// Entries of both regions.
    pub fn entries(&self) -> u64 {
        2 * u64::from(self.size)
    }

    /// One past the last entry of region B.
    pub fn end(&self) -> u64 {
        u64::from(self.base) + self.entries()
    }

    /// The region that is not `live`.
    pub fn twin(&self, live: u32) -> u32 {
        if live == self.base {
            self.base + self.size
        } else {
            self.base
        }
    }
}

/// First-fit allocator of ranges of the table array, in units of two
/// entries (so every range starts at an even offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionAllocator {
    len: u32,
    /// Free ranges: start → length, disjoint and never adjacent (merged).
    free: BTreeMap<u32, u32>,
}

impl RegionAllocator {
    /// An allocator over `len` entries, all free (an odd last entry is never used).
    pub fn new(len: u32) -> Self {
        let usable = len & !1;
        let mut free = BTreeMap::new();
        if usable > 0 {
            free.insert(0, usable);
        }
        Self { len, free }
    }

    fn units(n: u64) -> Option<u32> {
        u32::try_from(n.div_ceil(2) * 2).ok().filter(|n| *n > 0)
    }

    /// Entries of the array.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the array has no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the first free range of `n` entries (rounded up to even);
    /// returns its start.
    pub fn alloc(&mut self, n: u64) -> Option<u32> {
        let n = Self::units(n)?;
        let (&start, &len) = self.free.iter().find(|(_, l)| **l >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Some(start)
    }

    /// Takes the range `[start, start + n)` (n rounded up to even), when it
    /// is entirely free and `start` is even.
    pub fn reserve(&mut self, start: u32, n: u64) -> bool {
        let Some(n) = Self::units(n) else { return false };
        if !start.is_multiple_of(2) {
            return false;
        }
        let Some((&fs, &fl)) = self.free.range(..=start).next_back() else { return false };
        let (end, free_end) = (u64::from(start) + u64::from(n), u64::from(fs) + u64::from(fl));
        if end > free_end {
            return false;
        }
        self.free.remove(&fs);
        if start > fs {
            self.free.insert(fs, start - fs);
        }
        if free_end > end {
            self.free.insert(end as u32, (free_end - end) as u32);
        }
        true
    }

    /// Gives back `[start, start + n)` (n rounded up to even), which must
    /// have been allocated or reserved.
    pub fn free(&mut self, start: u32, n: u64) {
        let Some(n) = Self::units(n) else { return };
        let (mut start, mut len) = (start, n);
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            debug_assert!(u64::from(ps) + u64::from(pl) <= u64::from(start), "freeing a free range");
            if u64::from(ps) + u64::from(pl) == u64::from(start) {
                self.free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        let end = u64::from(start) + u64::from(len);
        if let Some((&ns, &nl)) = self.free.range(start..).next() {
            debug_assert!(u64::from(ns) >= end, "freeing a free range");
            if u64::from(ns) == end {
                self.free.remove(&ns);
                len += nl;
            }
        }
        self.free.insert(start, len);
    }

    /// Free entries in total.
    pub fn free_entries(&self) -> u64 {
        self.free.values().map(|l| u64::from(*l)).sum()
    }

    /// The largest free range.
    pub fn largest_free(&self) -> u32 {
        self.free.values().copied().max().unwrap_or(0)
    }
}

/// Rebuilds the allocator of an array of `len` entries from the live
/// `(table_offset, table_size)` of each service, in the given order (the
/// first claimant of an entry wins). Returns, per service, its pair (`None`
/// for `table_size` 0, and for a live region that no valid pair can hold:
/// outside the array or overlapping an earlier one).
pub fn restore_regions(len: u32, live: &[(u32, u32)]) -> (RegionAllocator, Vec<Option<Pair>>) {
    let mut regions = RegionAllocator::new(len);
    let pairs = live
        .iter()
        .map(|&(offset, size)| {
            if size == 0 {
                return None;
            }
            Pair::of_live(offset, size).filter(|p| p.end() <= u64::from(len) && regions.reserve(p.base, p.entries()))
        })
        .collect();
    (regions, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_first_fit_split_and_merge() {
        let mut a = RegionAllocator::new(100);
        assert_eq!(a.alloc(10), Some(0));
        assert_eq!(a.alloc(21), Some(10), "sizes round up to even");
        assert_eq!(a.alloc(30), Some(32));
        assert_eq!(a.free_entries(), 38);
        a.free(10, 21);
        assert_eq!(a.alloc(8), Some(10), "first fit: the hole comes first");
        assert_eq!(a.alloc(20), Some(62), "the hole left (14) is too small");
        assert_eq!(a.largest_free(), 18);
        assert_eq!(a.alloc(19), None);
        assert_eq!(a.alloc(0), None);
        // Freeing everything merges back into one range.
        for (s, n) in [(0, 10), (32, 30), (10, 8), (62, 20)] {
            a.free(s, n);
        }
        assert_eq!(a, RegionAllocator::new(100));
        assert_eq!(a.alloc(100), Some(0));
        assert_eq!(a.alloc(1), None);
    }

    #[test]
    fn allocator_reserve() {
        let mut a = RegionAllocator::new(1000);
        assert!(a.reserve(100, 50));
        assert!(!a.reserve(120, 10), "taken");
        assert!(!a.reserve(141, 10), "odd start");
        assert!(!a.reserve(990, 12), "past the end");
        assert!(a.reserve(150, 2), "adjacent");
        assert!(a.reserve(0, 100));
        assert_eq!(a.alloc(10), Some(152));
        assert_eq!(a.free_entries(), 1000 - 162);
        a.free(0, 100);
        assert_eq!(a.alloc(100), Some(0));
        assert!(!RegionAllocator::new(0).reserve(0, 2));
        assert_eq!(RegionAllocator::new(7).alloc(8), None, "an odd last entry is never used");
    }

    #[test]
    fn pairs_are_recovered_from_the_live_region() {
        let mut a = RegionAllocator::new(1 << 20);
        for size in [251, 65537, 509, 131071, 251] {
            let base = a.alloc(2 * u64::from(size)).unwrap();
            let p = Pair { base, size };
            assert_eq!(base % 2, 0);
            assert_eq!(Pair::of_live(base, size), Some(p), "region A");
            assert_eq!(Pair::of_live(p.twin(base), size), Some(p), "region B");
            assert_eq!(p.twin(p.twin(base)), base);
        }
        assert_eq!(Pair::of_live(0, 0), None);
        assert_eq!(Pair::of_live(0, 1030), None, "sizes are odd primes");
        assert_eq!(Pair::of_live(1, 251), None, "region B cannot start before 251");
    }

    #[test]
    fn regions_restored_from_service_values() {
        let mut a = RegionAllocator::new(10_000);
        let x = Pair { base: a.alloc(502).unwrap(), size: 251 };
        let y = Pair { base: a.alloc(2042).unwrap(), size: 1021 };
        let z = Pair { base: a.alloc(1018).unwrap(), size: 509 };
        a.free(y.base, y.entries());
        let live = [
            (x.twin(x.base), 251),
            (0, 0),
            (z.base, 509),
            (9_999, 251),      // outside the array
            (x.base + 2, 251), // overlaps x
        ];
        let (restored, pairs) = restore_regions(10_000, &live);
        assert_eq!(pairs, vec![Some(x), None, Some(z), None, None]);
        assert_eq!(restored, a, "same free ranges as the allocator that made them");
        // The old fixed layout (1031 slots, two regions per service id) is
        // read the same way.
        let old: Vec<(u32, u32)> = (0..4).map(|id| ((id * 2 + id % 2) * 1031, 1031)).collect();
        let (_, pairs) = restore_regions(8248, &old);
        assert!(pairs.iter().enumerate().all(|(id, p)| *p == Some(Pair { base: id as u32 * 2062, size: 1031 })));
    }
}
