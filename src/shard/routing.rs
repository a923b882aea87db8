//! Keys → key groups (a stable hash, fixed forever) → shards (a table that live rescaling will change while the
//! job runs). Nothing may cache a key group's shard: look it up per batch.

use std::sync::atomic::{AtomicU16, Ordering};

use crate::queue::ShardId;

/// A key group: the unit of keyed-state ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyGroup(pub u16);

/// The key group of a key hash: Flink's "max parallelism" partitioning, on our stable 64-bit hash.
#[inline]
pub fn key_group_of(hash: u64, key_groups: u32) -> KeyGroup {
    KeyGroup((hash % key_groups as u64) as u16)
}

/// Which shard owns each key group. Entries are atomics so a rescale can move a key group at run time.
#[derive(Debug)]
pub struct RoutingTable {
    owners: Vec<AtomicU16>,
}

impl RoutingTable {
    /// The initial assignment: contiguous ranges of key groups per shard, as Flink assigns them.
    pub fn new(key_groups: u32, n_shards: usize) -> RoutingTable {
        assert!(n_shards >= 1 && key_groups as usize >= n_shards);
        let owners =
            (0..key_groups as usize).map(|kg| AtomicU16::new((kg * n_shards / key_groups as usize) as u16)).collect();
        RoutingTable { owners }
    }

    pub fn key_groups(&self) -> u32 {
        self.owners.len() as u32
    }

    #[inline]
    pub fn owner(&self, kg: KeyGroup) -> ShardId {
        ShardId(self.owners[kg.0 as usize].load(Ordering::Acquire))
    }

    /// Moves a key group to another shard (used by rescaling).
    pub fn assign(&self, kg: KeyGroup, shard: ShardId) {
        self.owners[kg.0 as usize].store(shard.0, Ordering::Release);
    }

    /// The shard for a key hash.
    #[inline]
    pub fn route(&self, hash: u64) -> ShardId {
        self.owner(key_group_of(hash, self.key_groups()))
    }

    /// The key groups each shard owns, for plans and logs.
    pub fn ranges(&self, n_shards: usize) -> Vec<Vec<u16>> {
        let mut out = vec![Vec::new(); n_shards];
        for kg in 0..self.owners.len() {
            out[self.owner(KeyGroup(kg as u16)).idx()].push(kg as u16);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every key group has exactly one owner; owners are balanced to within one key group.
        #[test]
        fn initial_assignment_is_balanced(key_groups in 1u32..2000, n in 1usize..64) {
            prop_assume!(key_groups as usize >= n);
            let t = RoutingTable::new(key_groups, n);
            let ranges = t.ranges(n);
            prop_assert_eq!(ranges.iter().map(Vec::len).sum::<usize>(), key_groups as usize);
            let (lo, hi) = (ranges.iter().map(Vec::len).min().unwrap(), ranges.iter().map(Vec::len).max().unwrap());
            prop_assert!(hi - lo <= 1);
        }

        /// Routing depends only on the hash and the table, and follows reassignment.
        #[test]
        fn routing_follows_the_table(hash in any::<u64>(), to in 0u16..4) {
            let t = RoutingTable::new(128, 4);
            let kg = key_group_of(hash, 128);
            prop_assert_eq!(t.route(hash), t.owner(kg));
            t.assign(kg, ShardId(to));
            prop_assert_eq!(t.route(hash), ShardId(to));
        }
    }

    #[test]
    fn key_groups_are_fixed_forever() {
        // Checkpoints record key groups; this mapping must never change.
        assert_eq!(key_group_of(0x2d06800538d394c2, 128), KeyGroup(0x42));
        assert_eq!(key_group_of(u64::MAX, 128), KeyGroup(127));
    }
}
