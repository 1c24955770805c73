//! The free space of one identifier range: which ids of `[lo, hi]` are free, and where the
//! allocator puts the next claim. Ids are `u128` so one type serves VLANs (12 bits), AS numbers
//! (32), generic ids (up to 64) and IP addresses (IPv4 mapped into IPv6, 128).
//!
//! Free ids are kept as maximal runs (`start → end`, inclusive), and each run as its maximal
//! aligned power-of-two blocks, indexed by size. That index is what makes kuid's **best fit**
//! cheap: the next id or prefix comes from the smallest free aligned block that is large
//! enough, the lowest such block first — the answer kuid computes by listing the whole free set
//! on every claim. Claiming and releasing touch only the runs next to the change, so the
//! 65,536th /24 of a /8 costs what the first one did (`O(width · log n)`).
//!
//! Invariant: pure data structure: knows nothing of claims, owners, objects or storage.

use std::collections::{BTreeMap, BTreeSet};

/// An aligned block: `2^log` ids starting at `start` (a multiple of `2^log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Block {
    pub start: u128,
    pub log: u8,
}

impl Block {
    /// The last id of the block.
    pub fn end(&self) -> u128 {
        self.start | mask(self.log)
    }
}

/// `2^log - 1`: the low bits a block of `2^log` ids spans.
pub(crate) fn mask(log: u8) -> u128 {
    if log >= 128 {
        u128::MAX
    } else {
        (1u128 << log) - 1
    }
}

/// The number of ids in `[start, end]`, saturating at `u128::MAX` (only the whole 128-bit space
/// holds one more).
pub(crate) fn count(start: u128, end: u128) -> u128 {
    (end - start).saturating_add(1)
}

/// `[a, b]` split into maximal aligned blocks, in ascending order (how kuid and netipx split a
/// range into prefixes: `200-399` is 200/3, 208/4, 224/5, 256/7, 384/4 in sizes `2^log`).
pub(crate) fn aligned_blocks(mut a: u128, b: u128) -> Vec<Block> {
    let mut out = Vec::new();
    if a > b {
        return out;
    }
    loop {
        let mut log = if a == 0 { 128 } else { a.trailing_zeros() as u8 };
        while (a | mask(log)) > b {
            log -= 1;
        }
        let block = Block { start: a, log };
        out.push(block);
        let end = block.end();
        if end >= b {
            return out;
        }
        a = end + 1;
    }
}

/// Why a take or a give was refused: the ids were not (all) free, or not (all) taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SpaceError {
    #[error("{start}-{end} is outside {lo}-{hi}")]
    Outside { start: u128, end: u128, lo: u128, hi: u128 },
    #[error("{start}-{end} is not free")]
    NotFree { start: u128, end: u128 },
    #[error("{start}-{end} is not in use")]
    NotTaken { start: u128, end: u128 },
}

/// The free ids of `[lo, hi]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Space {
    lo: u128,
    hi: u128,
    /// Free runs, `start → end` inclusive, never adjacent (adjacent runs are merged).
    runs: BTreeMap<u128, u128>,
    /// The aligned blocks of every run, ordered by size then start: best fit is a range query.
    blocks: BTreeSet<(u8, u128)>,
    /// Free ids, saturating.
    free: u128,
}

impl Space {
    /// A space whose ids `[lo, hi]` are all free.
    pub fn new(lo: u128, hi: u128) -> Space {
        let mut s = Space { lo, hi, runs: BTreeMap::new(), blocks: BTreeSet::new(), free: 0 };
        if lo <= hi {
            s.add_run(lo, hi);
        }
        s
    }

    pub fn lo(&self) -> u128 {
        self.lo
    }

    pub fn hi(&self) -> u128 {
        self.hi
    }

    /// Ids in the space, saturating.
    pub fn size(&self) -> u128 {
        if self.lo > self.hi {
            0
        } else {
            count(self.lo, self.hi)
        }
    }

    /// Free ids, saturating.
    pub fn free(&self) -> u128 {
        self.free
    }

    /// The largest free aligned block.
    pub fn largest_free(&self) -> Option<Block> {
        let &(log, _) = self.blocks.iter().next_back()?;
        let &(_, start) = self.blocks.range((log, 0)..).next()?;
        Some(Block { start, log })
    }

    fn add_run(&mut self, start: u128, end: u128) {
        self.runs.insert(start, end);
        for b in aligned_blocks(start, end) {
            self.blocks.insert((b.log, b.start));
        }
        self.free = self.free.saturating_add(count(start, end));
    }

    fn remove_run(&mut self, start: u128) -> Option<u128> {
        let end = self.runs.remove(&start)?;
        for b in aligned_blocks(start, end) {
            self.blocks.remove(&(b.log, b.start));
        }
        // A saturated count is recomputed from the runs (only the full 128-bit space saturates).
        if self.free == u128::MAX {
            self.free = self.runs.iter().fold(0u128, |n, (s, e)| n.saturating_add(count(*s, *e)));
        } else {
            self.free -= count(start, end);
        }
        Some(end)
    }

    /// The free run holding `id`.
    fn run_of(&self, id: u128) -> Option<(u128, u128)> {
        let (&s, &e) = self.runs.range(..=id).next_back()?;
        (e >= id).then_some((s, e))
    }

    /// Whether every id of `[start, end]` is free.
    pub fn is_free(&self, start: u128, end: u128) -> bool {
        start <= end && self.run_of(start).is_some_and(|(_, e)| e >= end)
    }

    /// Whether no id of `[start, end]` is free.
    pub fn is_taken(&self, start: u128, end: u128) -> bool {
        if start > end || start < self.lo || end > self.hi {
            return false;
        }
        match self.runs.range(..=end).next_back() {
            Some((_, &e)) => e < start,
            None => true,
        }
    }

    /// Marks the free ids `[start, end]` taken.
    pub fn take(&mut self, start: u128, end: u128) -> Result<(), SpaceError> {
        self.check_inside(start, end)?;
        let (s, e) = match self.run_of(start) {
            Some((s, e)) if e >= end => (s, e),
            _ => return Err(SpaceError::NotFree { start, end }),
        };
        self.remove_run(s);
        if s < start {
            self.add_run(s, start - 1);
        }
        if end < e {
            self.add_run(end + 1, e);
        }
        Ok(())
    }

    /// Marks the taken ids `[start, end]` free again.
    pub fn give(&mut self, start: u128, end: u128) -> Result<(), SpaceError> {
        self.check_inside(start, end)?;
        if !self.is_taken(start, end) {
            return Err(SpaceError::NotTaken { start, end });
        }
        let (mut s, mut e) = (start, end);
        if start > 0 {
            if let Some((ps, _)) = self.run_of(start - 1) {
                self.remove_run(ps);
                s = ps;
            }
        }
        if end < u128::MAX && self.runs.contains_key(&(end + 1)) {
            if let Some(ne) = self.remove_run(end + 1) {
                e = ne;
            }
        }
        self.add_run(s, e);
        Ok(())
    }

    fn check_inside(&self, start: u128, end: u128) -> Result<(), SpaceError> {
        if start > end || start < self.lo || end > self.hi {
            return Err(SpaceError::Outside { start, end, lo: self.lo, hi: self.hi });
        }
        Ok(())
    }

    /// The lowest free id (how ids are handed out inside a range).
    pub fn lowest_free(&self) -> Option<u128> {
        self.runs.keys().next().copied()
    }

    /// kuid's best fit for a block of `2^log` ids: the smallest free aligned block that holds
    /// it, the lowest such block first; the claim gets its first `2^log` ids. `log` 0 is a single
    /// id.
    pub fn best_fit(&self, log: u8) -> Option<Block> {
        let &(_, start) = self.blocks.range((log, 0)..).next()?;
        Some(Block { start, log })
    }

    /// The next `n` blocks of `2^log` ids that best fit would hand out, in order, without
    /// taking them.
    pub fn next_fits(&self, log: u8, n: usize) -> Vec<Block> {
        let mut scratch = self.clone();
        let mut out = Vec::new();
        while out.len() < n {
            let Some(b) = scratch.best_fit(log) else { break };
            if scratch.take(b.start, b.end()).is_err() {
                break;
            }
            out.push(b);
        }
        out
    }

    /// The next `n` ids lowest-free would hand out, in order.
    pub fn next_lowest(&self, n: usize) -> Vec<u128> {
        let mut out = Vec::new();
        for (&s, &e) in &self.runs {
            let mut id = s;
            loop {
                if out.len() >= n {
                    return out;
                }
                out.push(id);
                if id == e {
                    break;
                }
                id += 1;
            }
        }
        out
    }

    /// The free runs, ascending.
    pub fn free_runs(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.runs.iter().map(|(s, e)| (*s, *e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_best(s: &mut Space, log: u8) -> u128 {
        let b = s.best_fit(log).expect("space left");
        s.take(b.start, b.end()).unwrap();
        b.start
    }

    #[test]
    fn ranges_split_into_aligned_blocks_as_kuid_does() {
        let got: Vec<(u128, u8)> = aligned_blocks(200, 399).iter().map(|b| (b.start, b.log)).collect();
        // kuid writes these as 200/13, 208/12, 224/11, 256/9, 384/12 in a 16-bit tree.
        assert_eq!(got, vec![(200, 3), (208, 4), (224, 5), (256, 7), (384, 4)]);
        assert_eq!(aligned_blocks(0, u128::MAX), vec![Block { start: 0, log: 128 }]);
        assert_eq!(aligned_blocks(5, 5), vec![Block { start: 5, log: 0 }]);
        assert!(aligned_blocks(6, 5).is_empty());
    }

    #[test]
    fn best_fit_hands_out_ids_in_kuids_order() {
        // A fresh VLAN space: 0, 1, 2, 3.
        let mut s = Space::new(0, 4095);
        assert_eq!((0..4).map(|_| take_best(&mut s, 0)).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        // minID 1 / maxID 4090: the isolated 4090 is the smallest block after 1.
        let mut s = Space::new(1, 4090);
        assert_eq!((0..4).map(|_| take_best(&mut s, 0)).collect::<Vec<_>>(), vec![1, 4090, 2, 3]);
        // 0-9 taken, then 4, 5 and 8 freed: 8 is the smallest free block.
        let mut s = Space::new(0, 4095);
        for _ in 0..10 {
            take_best(&mut s, 0);
        }
        for id in [4, 5, 8] {
            s.give(id, id).unwrap();
        }
        assert_eq!(take_best(&mut s, 0), 8);
        // A /24 network with its first and last address taken: .1, .254, .2, .3, .252.
        let mut s = Space::new(0, 255);
        s.take(0, 0).unwrap();
        s.take(255, 255).unwrap();
        assert_eq!((0..5).map(|_| take_best(&mut s, 0)).collect::<Vec<_>>(), vec![1, 254, 2, 3, 252]);
    }

    #[test]
    fn best_fit_of_prefixes_takes_the_smallest_block_that_holds_them() {
        // /24s out of a /8 (8 bits of host space per /24): .0, .1, .2, .3, .4 as kuid's table.
        let mut s = Space::new(0, (1 << 24) - 1);
        let got: Vec<u128> = (0..5).map(|_| take_best(&mut s, 8) >> 8).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        // Nothing of size 2^25 fits in a 2^24 space.
        assert_eq!(s.best_fit(25), None);
    }

    #[test]
    fn takes_and_gives_keep_runs_merged_and_counted() {
        let mut s = Space::new(10, 19);
        assert_eq!(s.free(), 10);
        s.take(12, 13).unwrap();
        assert_eq!(s.take(13, 14), Err(SpaceError::NotFree { start: 13, end: 14 }));
        assert_eq!(s.take(5, 6), Err(SpaceError::Outside { start: 5, end: 6, lo: 10, hi: 19 }));
        assert_eq!(s.free(), 8);
        assert_eq!(s.lowest_free(), Some(10));
        s.take(10, 11).unwrap();
        assert_eq!(s.lowest_free(), Some(14));
        assert_eq!(s.give(14, 14), Err(SpaceError::NotTaken { start: 14, end: 14 }));
        s.give(10, 13).unwrap();
        assert_eq!(s, Space::new(10, 19));
        assert_eq!(s.next_lowest(3), vec![10, 11, 12]);
    }

    #[test]
    fn the_whole_128_bit_space_works() {
        let mut s = Space::new(0, u128::MAX);
        assert_eq!(s.free(), u128::MAX);
        assert_eq!(s.largest_free(), Some(Block { start: 0, log: 128 }));
        let b = s.best_fit(64).unwrap();
        assert_eq!(b, Block { start: 0, log: 64 });
        s.take(b.start, b.end()).unwrap();
        assert_eq!(s.free(), u128::MAX - u128::from(u64::MAX));
        s.give(b.start, b.end()).unwrap();
        assert_eq!(s.free(), u128::MAX);
        s.take(u128::MAX, u128::MAX).unwrap();
        s.give(u128::MAX, u128::MAX).unwrap();
        assert_eq!(s, Space::new(0, u128::MAX));
    }

    #[test]
    fn next_fits_previews_without_taking() {
        let s = Space::new(1, 4090);
        let got: Vec<u128> = s.next_fits(0, 3).iter().map(|b| b.start).collect();
        assert_eq!(got, vec![1, 4090, 2]);
        assert_eq!(s.free(), 4090);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet as Set;

        #[derive(Debug, Clone)]
        enum Op {
            Best(u8),
            Take(u16, u16),
            Give(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..6).prop_map(Op::Best),
                (0u16..300, 0u16..8).prop_map(|(a, n)| Op::Take(a, a + n)),
                any::<usize>().prop_map(Op::Give),
            ]
        }

        proptest! {
            /// Against a plain set of taken ids: the same ids free, best fit returns the
            /// smallest aligned free block that holds the request (lowest first), and no take
            /// ever hands out a taken id.
            #[test]
            fn agrees_with_a_set_of_ids(lo in 0u128..40, len in 1u128..260, ops in proptest::collection::vec(op(), 1..80)) {
                let hi = lo + len - 1;
                let mut s = Space::new(lo, hi);
                let mut taken: Set<u128> = Set::new();
                let mut held: Vec<(u128, u128)> = Vec::new();
                for op in ops {
                    match op {
                        Op::Best(log) => {
                            let want = reference_best_fit(lo, hi, &taken, log);
                            let got = s.best_fit(log).map(|b| b.start);
                            prop_assert_eq!(got, want);
                            if let Some(b) = s.best_fit(log) {
                                s.take(b.start, b.end()).unwrap();
                                for id in b.start..=b.end() { prop_assert!(taken.insert(id)); }
                                held.push((b.start, b.end()));
                            }
                        }
                        Op::Take(a, b) => {
                            let (a, b) = (u128::from(a), u128::from(b));
                            let free = a >= lo && b <= hi && (a..=b).all(|i| !taken.contains(&i));
                            prop_assert_eq!(s.take(a, b).is_ok(), free);
                            if free {
                                taken.extend(a..=b);
                                held.push((a, b));
                            }
                        }
                        Op::Give(i) => {
                            if !held.is_empty() {
                                let (a, b) = held.remove(i % held.len());
                                s.give(a, b).unwrap();
                                for id in a..=b { taken.remove(&id); }
                            }
                        }
                    }
                    prop_assert_eq!(s.free(), len - taken.len() as u128);
                    prop_assert_eq!(s.lowest_free(), (lo..=hi).find(|i| !taken.contains(i)));
                }
                // Giving everything back restores the fresh space exactly.
                for (a, b) in held { s.give(a, b).unwrap(); }
                prop_assert_eq!(s, Space::new(lo, hi));
            }
        }

        /// Best fit the way kuid computes it: list the free set's maximal aligned blocks and
        /// take the first of the smallest ones that hold `2^log` ids.
        fn reference_best_fit(lo: u128, hi: u128, taken: &Set<u128>, log: u8) -> Option<u128> {
            let mut blocks = Vec::new();
            let mut i = lo;
            while i <= hi {
                if taken.contains(&i) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i <= hi && !taken.contains(&i) {
                    i += 1;
                }
                blocks.extend(aligned_blocks(start, i - 1));
            }
            blocks.iter().filter(|b| b.log >= log).min_by_key(|b| (b.log, b.start)).map(|b| b.start)
        }
    }
}
