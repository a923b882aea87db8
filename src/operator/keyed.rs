//! Accumulators by key for one slice or window, in flat storage: an open-addressing hash table of small
//! slots, one byte arena for the keys, one vector of accumulators (a row of `n_aggs` per key). A new key costs
//! no allocation of its own, and a lookup compares the full 64-bit hash (the engine's [`key_hash`]) before it
//! touches the key bytes. With change tracking on (checkpoints), a bit per key says whether it changed since
//! the last checkpoint.
//!
//! The table is written here rather than taken from a hash map crate because of two needs no map offers:
//! callers prefetch the slot a hash will probe a few keys ahead (a table of a million keys misses the cache
//! on nearly every probe), and a bulk insert in hash order walks the table front to back. Keys are never
//! removed (a slice is dropped whole), so linear probing needs no tombstones. The home slot of a hash is its
//! top bits: the low bits pick the key group, so a shard's keys share them.

use super::accumulator::Acc;
use super::key::key_hash;
use crate::sql::AggCall;

/// A slot: a key's full hash and its row; `row == EMPTY` for a free slot.
#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    row: u32,
}

const EMPTY: u32 = u32::MAX;
const FREE: Slot = Slot { hash: 0, row: EMPTY };

/// Smallest table (slots), once anything is inserted.
const SLOTS_MIN: usize = 16;

/// The table grows when it would be fuller than this many eighths: linear probing stays short below it.
const LOAD_EIGHTHS_MAX: usize = 6;

#[derive(Debug, Default)]
pub struct KeyedAccs {
    /// A power of two of slots (or none before the first insert).
    slots: Vec<Slot>,
    /// 64 minus log2 of the slot count: a hash shifted right by it is its home slot.
    shift: u32,
    keys: Vec<u8>,
    accs: Vec<Acc>,
    /// Where each row's key ends in `keys` (rows' keys are stored in row order), so rows can be walked in
    /// memory order.
    key_ends: Vec<u32>,
    n_aggs: usize,
    /// One bit per row, set when the row changes; `None` when changes are not tracked.
    changed: Option<Vec<u64>>,
}

impl KeyedAccs {
    pub fn new(n_aggs: usize) -> KeyedAccs {
        KeyedAccs { n_aggs, shift: 64, ..KeyedAccs::default() }
    }

    /// From now on, remember which keys change (for incremental checkpoints).
    pub fn track_changes(&mut self) {
        if self.changed.is_none() {
            self.changed = Some(vec![0; self.len().div_ceil(64)]);
        }
    }

    /// An empty table sized for `n_keys` keys of about `key_bytes` bytes each, so that a slice that grows as
    /// large as the previous one never rehashes.
    pub fn with_capacity(n_aggs: usize, n_keys: usize, key_bytes: usize) -> KeyedAccs {
        let mut t = KeyedAccs::new(n_aggs);
        t.reserve(n_keys, n_keys * key_bytes);
        t
    }

    /// Bytes of key per entry, on average.
    pub fn mean_key_bytes(&self) -> usize {
        self.keys.len() / self.len().max(1)
    }

    pub fn len(&self) -> usize {
        self.key_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.key_ends.is_empty()
    }

    fn key(&self, row: u32) -> &[u8] {
        let row = row as usize;
        let start = if row == 0 { 0 } else { self.key_ends[row - 1] as usize };
        &self.keys[start..self.key_ends[row] as usize]
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // A shift by 64 (no slots yet) would overflow: checked_shr gives 0, and callers check for no slots.
        hash.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// Asks the CPU to fetch the slot `hash` probes first: a caller that knows the hashes of the next keys
    /// prefetches a few ahead, so their lookups find the slot in cache.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(self.home(hash)) {
            crate::cpu::prefetch((slot as *const Slot).cast(), std::mem::size_of::<Slot>());
        }
    }

    /// The accumulators of `key` (whose stable hash is `hash`), created from `calls` if the key is new.
    #[inline]
    pub fn row_mut(&mut self, hash: u64, key: &[u8], calls: &[AggCall]) -> &mut [Acc] {
        let row = self.find_or_insert(hash, key, || calls.iter().map(Acc::new));
        let n = self.n_aggs;
        &mut self.accs[row as usize * n..(row as usize + 1) * n]
    }

    /// The slot holding `key`, or the free slot where it would go.
    #[inline]
    fn probe(&self, hash: u64, key: &[u8]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            if s.row == EMPTY {
                return Err(i);
            }
            if s.hash == hash && self.key(s.row) == key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the table (or creates it) when one more key would pass the load limit.
    fn grow_for(&mut self, keys: usize) {
        let needed = (keys * 8).div_ceil(LOAD_EIGHTHS_MAX).max(SLOTS_MIN).next_power_of_two();
        if needed <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![FREE; needed]);
        self.shift = 64 - needed.trailing_zeros();
        let mask = needed - 1;
        for s in old.into_iter().filter(|s| s.row != EMPTY) {
            let mut i = self.home(s.hash);
            while self.slots[i].row != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// The row of `key`, inserted with `new()`'s accumulators if the key is new; marked changed.
    #[inline]
    fn find_or_insert<I: Iterator<Item = Acc>>(&mut self, hash: u64, key: &[u8], new: impl FnOnce() -> I) -> u32 {
        if (self.len() + 1) * 8 > self.slots.len() * LOAD_EIGHTHS_MAX {
            self.grow_for(self.len() + 1);
        }
        let row = match self.probe(hash, key) {
            Ok(i) => self.slots[i].row,
            Err(i) => {
                let row = self.len() as u32;
                self.slots[i] = Slot { hash, row };
                self.keys.extend_from_slice(key);
                self.key_ends.push(self.keys.len() as u32);
                self.accs.extend(new());
                row
            }
        };
        if let Some(bits) = &mut self.changed {
            let word = row as usize / 64;
            if word >= bits.len() {
                bits.resize(word + 1, 0);
            }
            bits[word] |= 1 << (row % 64);
        }
        row
    }

    /// Puts a key with restored accumulators, taken from `accs` (not marked changed: it is in the checkpoint
    /// it came from). A key already there (a delta over a base) gets the new ones.
    pub fn restore(&mut self, hash: u64, key: &[u8], accs: &mut Vec<Acc>) {
        let tracking = self.changed.take();
        let before = self.len();
        let fresh = &mut *accs;
        let row = self.find_or_insert(hash, key, move || fresh.drain(..)) as usize;
        if self.len() == before {
            let n = self.n_aggs;
            for (into, acc) in self.accs[row * n..(row + 1) * n].iter_mut().zip(accs.drain(..)) {
                *into = acc;
            }
        }
        self.changed = tracking;
    }

    /// Room for `additional` more keys of `key_bytes` bytes in all, without growing.
    pub fn reserve(&mut self, additional: usize, key_bytes: usize) {
        self.grow_for(self.len() + additional);
        self.keys.reserve(key_bytes);
        self.key_ends.reserve(additional);
        self.accs.reserve(additional * self.n_aggs);
        if let Some(bits) = &mut self.changed {
            bits.reserve((self.key_ends.len() + additional).div_ceil(64).saturating_sub(bits.len()));
        }
    }

    /// Every row (or only those changed, when changes are tracked), in memory order — a sequential walk,
    /// for checkpoints: each row's key and accumulators.
    pub fn rows(&self, only_changed: bool) -> impl Iterator<Item = (&[u8], &[Acc])> {
        let n = self.n_aggs;
        let changed = if only_changed { self.changed.as_deref() } else { None };
        (0..self.key_ends.len())
            .filter(move |&r| changed.is_none_or(|b| b.get(r / 64).is_some_and(|w| w >> (r % 64) & 1 == 1)))
            .map(move |r| {
                let start = if r == 0 { 0 } else { self.key_ends[r - 1] as usize };
                (&self.keys[start..self.key_ends[r] as usize], &self.accs[r * n..(r + 1) * n])
            })
    }

    /// Forgets which keys changed.
    pub fn clear_changed(&mut self) {
        if let Some(bits) = &mut self.changed {
            bits.fill(0);
        }
    }

    /// Folds every key of `other` into this one.
    pub fn merge_from(&mut self, other: &KeyedAccs, calls: &[AggCall]) {
        for (hash, key, accs) in other.iter() {
            for (into, from) in self.row_mut(hash, key, calls).iter_mut().zip(accs) {
                into.merge(from);
            }
        }
    }

    /// Every key with its hash and accumulators, in row order. Not in slot order: slot order is hash order,
    /// and inserting keys in hash order into a table still growing piles them into its front (every key so
    /// far has a low hash), so merging one table into another would go quadratic.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8], &[Acc])> {
        self.rows(false).map(|(key, accs)| (key_hash(key), key, accs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DataType, Datum};
    use crate::sql::AggKind;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn count() -> Vec<AggCall> {
        vec![AggCall {
            kind: AggKind::Count,
            arg: None,
            arg_ty: None,
            distinct: false,
            ty: DataType::BigInt,
            text: "COUNT(*)".into(),
            partial: false,
        }]
    }

    /// Many keys, through several doublings and a reserve, each found again with its count; the changed
    /// bits follow the rows.
    #[test]
    fn grows_and_keeps_every_key() {
        let calls = count();
        let mut t = KeyedAccs::new(1);
        t.track_changes();
        let mut scratch = Vec::new();
        for round in 0..2 {
            if round == 1 {
                t.reserve(50_000, 50_000 * 8);
            }
            for i in 0..100_000u64 {
                let k = (i % (50_000 * (round + 1))).to_le_bytes();
                t.row_mut(key_hash(&k), &k, &calls)[0].update(None, &mut scratch);
            }
        }
        assert_eq!(t.len(), 100_000);
        let mut seen = 0;
        for (_, k, accs) in t.iter() {
            let i = u64::from_le_bytes(k.try_into().unwrap());
            let want = if i < 50_000 { 3 } else { 1 };
            assert_eq!(accs[0].result(&calls[0]), Datum::Int(want), "key {i}");
            seen += 1;
        }
        assert_eq!(seen, 100_000);
        assert_eq!(t.rows(true).count(), 100_000);
        t.clear_changed();
        assert_eq!(t.rows(true).count(), 0);
    }

    proptest! {
        /// Counting keys through the flat table matches a HashMap, also after merging two tables.
        #[test]
        fn matches_a_hash_map(a in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3), 0..200),
                              b in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3), 0..200)) {
            let calls = count();
            let mut model: HashMap<Vec<u8>, i64> = HashMap::new();
            let mut tables = [KeyedAccs::new(1), KeyedAccs::new(1)];
            let mut scratch = Vec::new();
            for (t, keys) in [&a, &b].into_iter().enumerate() {
                for k in keys {
                    tables[t].row_mut(key_hash(k), k, &calls)[0].update(None, &mut scratch);
                    *model.entry(k.clone()).or_default() += 1;
                }
            }
            let [mut first, second] = tables;
            first.merge_from(&second, &calls);
            let got: HashMap<Vec<u8>, i64> = first
                .iter()
                .map(|(_, k, accs)| (k.to_vec(), match accs[0].result(&calls[0]) { Datum::Int(n) => n, other => panic!("{other:?}") }))
                .collect();
            prop_assert_eq!(got, model);
        }
    }
}
