//! The keyed state backend operators keep their state in: tables of values by key, partitioned in memory by
//! key group (so a key group's state can be picked out, as a restore onto another layout or a future live
//! rescale does), with change tracking for incremental snapshots, state TTL, and event-time timers.
//!
//! An operator declares its tables (fields of its own), manipulates values in memory, and writes them into a
//! checkpoint only when the runtime calls its `snapshot` (through [`KeyedTable::snapshot`]); a restore hands
//! the entries back through [`KeyedTable::restore`]. The tables know nothing of files or shards.
//!
//! TTL (Flink's state TTL, on processing time, "on create and write"): an entry not written for `ttl_ms` is
//! expired: it reads as absent and is deleted, at its next access or by [`KeyedTable::expire`], which walks
//! the table a bounded number of entries at a time. A value's write time is kept with it in checkpoints, so
//! TTL counts across restarts.
//!
//! Invariant: every change to a table between two snapshots is in the next delta (a put of the key's value,
//! or a delete); a base holds exactly the live entries.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::operator::{StateEntry, StateWriter};
use crate::shard::routing::key_group_of;

type Map<V> = HashMap<Box<[u8]>, Slot<V>, xxhash_rust::xxh3::Xxh3Builder>;

/// A value as a table keeps it: the value and when it was last written (wall-clock ms, for TTL).
#[derive(Debug, Clone)]
struct Slot<V> {
    value: V,
    written_ms: i64,
}

/// How a table's values are stored in checkpoints.
pub trait StateValue: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// Keys (entries) of one key group that changed since the last snapshot.
type Changed = HashSet<Box<[u8]>, xxhash_rust::xxh3::Xxh3Builder>;

/// Values by key, per key group. `V` is the operator's value type.
#[derive(Debug)]
pub struct KeyedTable<V> {
    table: u16,
    key_groups: u32,
    /// Indexed by key group; a map allocates nothing until its first entry.
    groups: Vec<Map<V>>,
    /// Per key group, the keys changed since the last snapshot (`None`: changes are not tracked).
    changed: Option<Vec<Changed>>,
    ttl_ms: Option<i64>,
    /// The key group [`Self::expire`] looks at next.
    expire_cursor: usize,
    len: usize,
}

impl<V: StateValue> KeyedTable<V> {
    /// Table `table` of its operator (its id in checkpoints), over `key_groups` key groups; entries not
    /// written for `ttl_ms` expire.
    pub fn new(table: u16, key_groups: u32, ttl_ms: Option<i64>) -> KeyedTable<V> {
        KeyedTable {
            table,
            key_groups,
            groups: (0..key_groups).map(|_| Map::default()).collect(),
            changed: None,
            ttl_ms,
            expire_cursor: 0,
            len: 0,
        }
    }

    /// From now on, remember what changes (for incremental snapshots).
    pub fn track_changes(&mut self) {
        if self.changed.is_none() {
            self.changed = Some((0..self.key_groups).map(|_| Changed::default()).collect());
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn kg(&self, hash: u64) -> usize {
        key_group_of(hash, self.key_groups).0 as usize
    }

    fn expired(&self, written_ms: i64, now_ms: i64) -> bool {
        self.ttl_ms.is_some_and(|ttl| now_ms.saturating_sub(written_ms) >= ttl)
    }

    fn mark(&mut self, kg: usize, key: &[u8]) {
        if let Some(c) = &mut self.changed {
            if !c[kg].contains(key) {
                c[kg].insert(key.into());
            }
        }
    }

    /// The value of `key` (whose stable hash is `hash`), unless absent or expired (an expired one is
    /// deleted).
    pub fn get(&mut self, hash: u64, key: &[u8], now_ms: i64) -> Option<&V> {
        self.get_mut_untouched(hash, key, now_ms).map(|v| &*v)
    }

    /// The value of `key` for reading and changing in place, without counting as a write (TTL) and without
    /// marking it changed: for values the caller will put back with [`Self::touch`] if it changes them.
    fn get_mut_untouched(&mut self, hash: u64, key: &[u8], now_ms: i64) -> Option<&mut V> {
        let kg = self.kg(hash);
        let expired = match self.groups[kg].get(key) {
            None => return None,
            Some(slot) => self.expired(slot.written_ms, now_ms),
        };
        if expired {
            self.groups[kg].remove(key);
            self.len -= 1;
            self.mark(kg, key);
            return None;
        }
        self.groups[kg].get_mut(key).map(|s| &mut s.value)
    }

    /// The value of `key` to change: marked changed, its write time now.
    pub fn get_mut(&mut self, hash: u64, key: &[u8], now_ms: i64) -> Option<&mut V> {
        let kg = self.kg(hash);
        self.get_mut_untouched(hash, key, now_ms)?;
        self.mark(kg, key);
        let slot = self.groups[kg].get_mut(key).expect("present: looked up above");
        slot.written_ms = now_ms;
        Some(&mut slot.value)
    }

    /// The value of `key` to change, inserted with `new()` if absent (or expired).
    pub fn get_or_insert_with(&mut self, hash: u64, key: &[u8], now_ms: i64, new: impl FnOnce() -> V) -> &mut V {
        let kg = self.kg(hash);
        if self.get_mut_untouched(hash, key, now_ms).is_none() {
            self.groups[kg].insert(key.into(), Slot { value: new(), written_ms: now_ms });
            self.len += 1;
        }
        self.mark(kg, key);
        let slot = self.groups[kg].get_mut(key).expect("present: inserted above");
        slot.written_ms = now_ms;
        &mut slot.value
    }

    /// Sets the value of `key`.
    pub fn put(&mut self, hash: u64, key: &[u8], now_ms: i64, value: V) {
        let kg = self.kg(hash);
        if self.groups[kg].insert(key.into(), Slot { value, written_ms: now_ms }).is_none() {
            self.len += 1;
        }
        self.mark(kg, key);
    }

    /// Deletes `key`; returns its value.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> Option<V> {
        let kg = self.kg(hash);
        let slot = self.groups[kg].remove(key)?;
        self.len -= 1;
        self.mark(kg, key);
        Some(slot.value)
    }

    /// Deletes the expired entries of whole key groups, going on where the previous call stopped, until
    /// about `budget` entries were looked at; returns the keys deleted (with their values), so an operator
    /// can act on them.
    pub fn expire(&mut self, now_ms: i64, budget: usize) -> Vec<(Box<[u8]>, V)> {
        let mut out = Vec::new();
        let Some(ttl) = self.ttl_ms else { return out };
        let mut looked = 0;
        for _ in 0..self.groups.len() {
            let kg = self.expire_cursor;
            self.expire_cursor = (kg + 1) % self.groups.len();
            looked += self.groups[kg].len();
            let keys: Vec<Box<[u8]>> = self.groups[kg]
                .iter()
                .filter(|(_, s)| now_ms.saturating_sub(s.written_ms) >= ttl)
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                if let Some(slot) = self.groups[kg].remove(&k) {
                    self.len -= 1;
                    self.mark(kg, &k);
                    out.push((k, slot.value));
                }
            }
            if looked >= budget {
                break;
            }
        }
        out
    }

    /// Every live entry of key group `kg`.
    pub fn iter_group(&self, kg: usize) -> impl Iterator<Item = (&[u8], &V)> {
        self.groups[kg].iter().map(|(k, s)| (&**k, &s.value))
    }

    /// Writes the entries changed since the last snapshot (all of them if `full`) and forgets the changes.
    /// A value is written with its write time in front (8 bytes), for TTL.
    pub fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        let id = w.id(self.table);
        let mut buf = Vec::new();
        for kg in 0..self.groups.len() {
            let changed = self.changed.as_mut().map(|c| std::mem::take(&mut c[kg]));
            let write = |key: &[u8], slot: &Slot<V>, w: &mut StateWriter<'_>, buf: &mut Vec<u8>| {
                buf.clear();
                buf.extend_from_slice(&slot.written_ms.to_le_bytes());
                slot.value.encode(buf);
                w.enc.put(id, kg as u32, 0, key, |b| b.extend_from_slice(buf));
            };
            if full {
                for (key, slot) in &self.groups[kg] {
                    write(key, slot, w, &mut buf);
                }
                continue;
            }
            let Some(changed) = changed else { continue };
            let mut keys: Vec<&Box<[u8]>> = changed.iter().collect();
            keys.sort_unstable();
            for key in keys {
                match self.groups[kg].get(&**key) {
                    Some(slot) => write(key, slot, w, &mut buf),
                    None => w.enc.delete(id, kg as u32, 0, key),
                }
            }
        }
    }

    /// Puts back a checkpoint's entries of key group `kg` (in log order: a later one wins).
    pub fn restore(&mut self, kg: u32, entries: &[StateEntry<'_>]) -> Result<(), String> {
        self.restore_with(kg, entries, V::decode)
    }

    /// [`Self::restore`] with a decoder of the operator's (for values that need more than their bytes).
    pub fn restore_with(
        &mut self,
        kg: u32,
        entries: &[StateEntry<'_>],
        decode: impl Fn(&[u8]) -> Result<V, String>,
    ) -> Result<(), String> {
        let kg = kg as usize;
        if kg >= self.groups.len() {
            return Err(format!("key group {kg} of {} key groups", self.groups.len()));
        }
        for e in entries {
            match e.value {
                None => {
                    if self.groups[kg].remove(e.key).is_some() {
                        self.len -= 1;
                    }
                }
                Some(bytes) => {
                    if bytes.len() < 8 {
                        return Err("a state value without its write time".into());
                    }
                    let written_ms = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
                    let value = decode(&bytes[8..])?;
                    if self.groups[kg].insert(e.key.into(), Slot { value, written_ms }).is_none() {
                        self.len += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A time (a window's end, a timer's) and a key.
type Timed = (i64, Box<[u8]>);

/// Values by (window end, key), for operators that keep state per window until it fires (window Top-N,
/// window join): a fired window is dropped whole. Checkpointed with the window end as the namespace; a
/// dropped window is a DROP of its namespace.
#[derive(Debug)]
pub struct WindowedTable<V> {
    table: u16,
    key_groups: u32,
    windows: std::collections::BTreeMap<i64, HashMap<Box<[u8]>, V, xxhash_rust::xxh3::Xxh3Builder>>,
    /// Changed (window end, key) since the last snapshot, and windows dropped (`None`: not tracked).
    changed: Option<(HashSet<Timed>, Vec<i64>)>,
}

impl<V: StateValue> WindowedTable<V> {
    pub fn new(table: u16, key_groups: u32) -> WindowedTable<V> {
        WindowedTable { table, key_groups, windows: std::collections::BTreeMap::new(), changed: None }
    }

    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(Default::default);
    }

    /// The value of `key` in the window ending at `end`, inserted with `new()` if absent; marked changed.
    pub fn get_or_insert_with(&mut self, end: i64, key: &[u8], new: impl FnOnce() -> V) -> &mut V {
        if let Some((c, _)) = &mut self.changed {
            c.insert((end, key.into()));
        }
        let w = self.windows.entry(end).or_default();
        if !w.contains_key(key) {
            w.insert(key.into(), new());
        }
        w.get_mut(key).expect("inserted above")
    }

    /// The earliest window end, if any window holds state.
    pub fn first_end(&self) -> Option<i64> {
        self.windows.keys().next().copied()
    }

    /// Removes the window ending at `end` and returns its keys and values.
    pub fn take_window(&mut self, end: i64) -> Vec<(Box<[u8]>, V)> {
        let Some(w) = self.windows.remove(&end) else { return Vec::new() };
        if let Some((c, dropped)) = &mut self.changed {
            c.retain(|(e, _)| *e != end);
            dropped.push(end);
        }
        let mut all: Vec<(Box<[u8]>, V)> = w.into_iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        let id = w.id(self.table);
        let kg = |key: &[u8]| key_group_of(crate::operator::key::key_hash(key), self.key_groups).0 as u32;
        let mut buf = Vec::new();
        let mut put = |end: i64, key: &[u8], v: &V, w: &mut StateWriter<'_>| {
            buf.clear();
            v.encode(&mut buf);
            w.enc.put(id, kg(key), end, key, |b| b.extend_from_slice(&buf));
        };
        if full {
            for (end, keys) in &self.windows {
                let mut keys: Vec<_> = keys.iter().collect();
                keys.sort_unstable_by_key(|(k, _)| (kg(k), *k));
                for (key, v) in keys {
                    put(*end, key, v, w);
                }
            }
            if let Some((c, d)) = &mut self.changed {
                c.clear();
                d.clear();
            }
            return;
        }
        let Some((changed, dropped)) = &mut self.changed else { return };
        for end in dropped.drain(..) {
            w.enc.drop_namespace(id, end);
        }
        let mut all: Vec<(i64, Box<[u8]>)> = changed.drain().collect();
        all.sort_unstable_by(|a, b| (kg(&a.1), a.0, &a.1).cmp(&(kg(&b.1), b.0, &b.1)));
        for (end, key) in all {
            if let Some(v) = self.windows.get(&end).and_then(|m| m.get(&key)) {
                put(end, &key, v, w);
            }
        }
    }

    pub fn restore_with(
        &mut self,
        entries: &[StateEntry<'_>],
        decode: impl Fn(&[u8]) -> Result<V, String>,
    ) -> Result<(), String> {
        for e in entries {
            match e.value {
                Some(bytes) => {
                    self.windows.entry(e.namespace).or_default().insert(e.key.into(), decode(bytes)?);
                }
                None => {
                    if let Some(w) = self.windows.get_mut(&e.namespace) {
                        w.remove(e.key);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Event-time timers of an operator: (time, key) pairs that fire when the watermark passes their time,
/// checkpointed as a table of their own (namespace: the time, key: the key, no value).
#[derive(Debug)]
pub struct Timers {
    table: u16,
    key_groups: u32,
    set: BTreeSet<(i64, Box<[u8]>)>,
    /// Changes since the last snapshot: added (true) or removed (false), per timer.
    changed: Option<HashMap<Timed, bool>>,
}

impl Timers {
    pub fn new(table: u16, key_groups: u32) -> Timers {
        Timers { table, key_groups, set: BTreeSet::new(), changed: None }
    }

    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(HashMap::new);
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Registers a timer for `key` at `time` (once: a second registration is the same timer).
    pub fn register(&mut self, time: i64, key: &[u8]) {
        let t = (time, Box::<[u8]>::from(key));
        if self.set.insert(t.clone()) {
            if let Some(c) = &mut self.changed {
                c.insert(t, true);
            }
        }
    }

    pub fn delete(&mut self, time: i64, key: &[u8]) {
        let t = (time, Box::<[u8]>::from(key));
        if self.set.remove(&t) {
            if let Some(c) = &mut self.changed {
                c.insert(t, false);
            }
        }
    }

    /// Removes and returns the earliest timer at or before `watermark`, if any.
    pub fn pop_due(&mut self, watermark: i64) -> Option<(i64, Box<[u8]>)> {
        if self.set.first().is_some_and(|(t, _)| *t <= watermark) {
            let t = self.set.pop_first().expect("checked non-empty");
            if let Some(c) = &mut self.changed {
                c.insert(t.clone(), false);
            }
            return Some(t);
        }
        None
    }

    /// The earliest timer's time.
    pub fn next(&self) -> Option<i64> {
        self.set.first().map(|(t, _)| *t)
    }

    pub fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        let id = w.id(self.table);
        let kg = |key: &[u8]| key_group_of(crate::operator::key::key_hash(key), self.key_groups).0 as u32;
        if full {
            for (time, key) in &self.set {
                w.enc.put(id, kg(key), *time, key, |_| {});
            }
            if let Some(c) = &mut self.changed {
                c.clear();
            }
            return;
        }
        let Some(changed) = &mut self.changed else { return };
        let mut all: Vec<(Timed, bool)> = changed.drain().collect();
        all.sort_unstable_by(|a, b| (kg(&a.0 .1), &a.0).cmp(&(kg(&b.0 .1), &b.0)));
        for ((time, key), added) in all {
            if added {
                w.enc.put(id, kg(&key), time, &key, |_| {});
            } else {
                w.enc.delete(id, kg(&key), time, &key);
            }
        }
    }

    pub fn restore(&mut self, entries: &[StateEntry<'_>]) {
        for e in entries {
            let t = (e.namespace, Box::<[u8]>::from(e.key));
            match e.value {
                Some(_) => self.set.insert(t),
                None => self.set.remove(&t),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::log::{replay, BlobEncoder, CheckpointKind, SegmentRange};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    impl StateValue for i64 {
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_le_bytes());
        }
        fn decode(bytes: &[u8]) -> Result<Self, String> {
            Ok(i64::from_le_bytes(bytes.try_into().map_err(|_| "not 8 bytes")?))
        }
    }

    fn hash(k: &[u8]) -> u64 {
        crate::operator::key::key_hash(k)
    }

    /// Replays blobs and restores a fresh table from them.
    fn restored(blobs: &[Vec<u8>], key_groups: u32) -> KeyedTable<i64> {
        let mut file = Vec::new();
        for b in blobs {
            file.extend_from_slice(b);
        }
        let range = SegmentRange { file: "t".into(), from: 0, to: file.len() as u64 };
        let image = replay(&[(range, file)], blobs.len() as u64).unwrap();
        let mut t = KeyedTable::new(0, key_groups, None);
        for (_, kg, ns, key, value) in image.into_entries() {
            t.restore(kg, &[StateEntry { namespace: ns, key: &key, value: Some(&value) }]).unwrap();
        }
        t
    }

    fn contents(t: &KeyedTable<i64>) -> BTreeMap<Vec<u8>, i64> {
        (0..t.groups.len()).flat_map(|kg| t.iter_group(kg).map(|(k, v)| (k.to_vec(), *v))).collect()
    }

    proptest! {
        /// A base then deltas of a table under puts, updates and removes restore to what the table holds.
        #[test]
        fn deltas_restore_to_the_table(checkpoints in proptest::collection::vec(
            proptest::collection::vec((0u8..20, proptest::option::of(-5i64..5)), 0..30), 1..5)) {
            let mut t: KeyedTable<i64> = KeyedTable::new(0, 8, None);
            t.track_changes();
            let mut blobs = Vec::new();
            for (i, ops) in checkpoints.iter().enumerate() {
                for (k, v) in ops {
                    let key = [*k];
                    match v {
                        Some(v) => *t.get_or_insert_with(hash(&key), &key, 0, || 0) += v,
                        None => { t.remove(hash(&key), &key); }
                    }
                }
                let epoch = i as u64 + 1;
                let kind = if i == 0 { CheckpointKind::Base } else { CheckpointKind::Delta };
                let mut enc = BlobEncoder::new(epoch, 0, kind);
                t.snapshot(i == 0, &mut StateWriter { enc: &mut enc, job: 0, node: 1, key_groups: 8 });
                blobs.push(enc.finish(epoch));
            }
            prop_assert_eq!(contents(&restored(&blobs, 8)), contents(&t));
        }
    }

    #[test]
    fn entries_not_written_within_the_ttl_expire_on_access_and_by_the_sweep() {
        let mut t: KeyedTable<i64> = KeyedTable::new(0, 4, Some(1_000));
        t.track_changes();
        for k in 0..10u8 {
            t.put(hash(&[k]), &[k], 0, i64::from(k));
        }
        *t.get_mut(hash(&[1]), &[1], 900).unwrap() += 1;
        assert_eq!(t.get(hash(&[2]), &[2], 999), Some(&2), "not expired yet");
        assert_eq!(t.get(hash(&[2]), &[2], 1_000), None, "expired on access");
        let swept: BTreeMap<Vec<u8>, i64> = t.expire(1_500, 100).into_iter().map(|(k, v)| (k.to_vec(), v)).collect();
        assert_eq!(swept.len(), 8, "all but key 1 (written at 900) and key 2 (gone already)");
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(hash(&[1]), &[1], 1_899), Some(&2));
    }

    #[test]
    fn timers_fire_in_time_order_and_restore() {
        let mut t = Timers::new(3, 4);
        t.track_changes();
        t.register(20, b"b");
        t.register(10, b"a");
        t.register(10, b"a");
        t.register(30, b"c");
        t.delete(30, b"c");
        let mut enc = BlobEncoder::new(1, 0, CheckpointKind::Base);
        t.snapshot(true, &mut StateWriter { enc: &mut enc, job: 0, node: 1, key_groups: 4 });
        let blob = enc.finish(1);
        let image = replay(&[(SegmentRange { file: "t".into(), from: 0, to: blob.len() as u64 }, blob)], 1).unwrap();
        let mut back = Timers::new(3, 4);
        for (_, _, ns, key, value) in image.into_entries() {
            back.restore(&[StateEntry { namespace: ns, key: &key, value: Some(&value) }]);
        }
        for timers in [&mut t, &mut back] {
            assert_eq!(timers.pop_due(15).map(|(t, k)| (t, k.to_vec())), Some((10, b"a".to_vec())));
            assert_eq!(timers.pop_due(15), None);
            assert_eq!(timers.next(), Some(20));
        }
    }
}
