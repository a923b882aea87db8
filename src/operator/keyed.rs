//! Accumulators by key for one slice or window, in flat storage: a hash table of small slots, one byte arena
//! for the keys, one vector of accumulators (a row of `n_aggs` per key). A new key costs no allocation of its
//! own, and a lookup compares the full 64-bit hash before it touches the key bytes. With change tracking on
//! (checkpoints), a bit per key says whether it changed since the last checkpoint.

use hashbrown::HashTable;

use super::accumulator::Acc;
use crate::sql::AggCall;

#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    key_start: u32,
    key_len: u32,
    row: u32,
}

#[derive(Debug, Default)]
pub struct KeyedAccs {
    table: HashTable<Slot>,
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
        KeyedAccs {
            table: HashTable::new(),
            keys: Vec::new(),
            accs: Vec::new(),
            key_ends: Vec::new(),
            n_aggs,
            changed: None,
        }
    }

    /// From now on, remember which keys change (for incremental checkpoints).
    pub fn track_changes(&mut self) {
        if self.changed.is_none() {
            self.changed = Some(vec![0; self.table.len().div_ceil(64)]);
        }
    }

    /// An empty table sized for `n_keys` keys of about `key_bytes` bytes each, so that a slice that grows as
    /// large as the previous one never rehashes.
    pub fn with_capacity(n_aggs: usize, n_keys: usize, key_bytes: usize) -> KeyedAccs {
        KeyedAccs {
            table: HashTable::with_capacity(n_keys),
            keys: Vec::with_capacity(n_keys * key_bytes),
            accs: Vec::with_capacity(n_keys * n_aggs),
            key_ends: Vec::with_capacity(n_keys),
            n_aggs,
            changed: None,
        }
    }

    /// Bytes of key per entry, on average.
    pub fn mean_key_bytes(&self) -> usize {
        self.keys.len() / self.table.len().max(1)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The accumulators of `key` (whose stable hash is `hash`), created from `calls` if the key is new.
    #[inline]
    pub fn row_mut(&mut self, hash: u64, key: &[u8], calls: &[AggCall]) -> &mut [Acc] {
        let row = self.find_or_insert(hash, key, || calls.iter().map(Acc::new));
        let n = self.n_aggs;
        &mut self.accs[row as usize * n..(row as usize + 1) * n]
    }

    /// The row of `key`, inserted with `new()`'s accumulators if the key is new; marked changed.
    #[inline]
    fn find_or_insert<I: Iterator<Item = Acc>>(&mut self, hash: u64, key: &[u8], new: impl FnOnce() -> I) -> u32 {
        let keys = &self.keys;
        let found = self
            .table
            .find(hash, |s| s.hash == hash && &keys[s.key_start as usize..(s.key_start + s.key_len) as usize] == key)
            .map(|s| s.row);
        let row = match found {
            Some(row) => row,
            None => {
                let row = self.table.len() as u32;
                let slot = Slot { hash, key_start: self.keys.len() as u32, key_len: key.len() as u32, row };
                self.keys.extend_from_slice(key);
                self.key_ends.push(self.keys.len() as u32);
                self.accs.extend(new());
                self.table.insert_unique(hash, slot, |s| s.hash);
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

    /// Puts a key with restored accumulators (not marked changed: it is in the checkpoint it came from).
    pub fn restore(&mut self, hash: u64, key: &[u8], accs: Box<[Acc]>) {
        let tracking = self.changed.take();
        let row = self.find_or_insert(hash, key, || accs.iter().cloned());
        let n = self.n_aggs;
        self.accs[row as usize * n..(row as usize + 1) * n].clone_from_slice(&accs);
        self.changed = tracking;
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

    /// Every key with its hash and accumulators.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8], &[Acc])> {
        let n = self.n_aggs;
        self.table.iter().map(move |s| {
            let key = &self.keys[s.key_start as usize..(s.key_start + s.key_len) as usize];
            (s.hash, key, &self.accs[s.row as usize * n..(s.row as usize + 1) * n])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::key::key_hash;
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
        }]
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
