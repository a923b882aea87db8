//! A shard's side of a restore: it reads the state logs of the checkpoint's shards whose key groups it now
//! owns and replays their entries straight into its jobs' operators (each state table's entries to the
//! operator the log names). Every shard does this at once on its own core before it reads any input, so a
//! restore takes about 1/N of the replay on N cores.
//!
//! Every record of a log a shard reads is checked (length, CRC-32C, framing, BEGIN/END pairing); entries of
//! key groups another shard owns are skipped after the check. A log is read by every shard that owns one of
//! its key groups, so each is checked by at least one. Damage is fatal: the run stops before any output.

use std::collections::HashMap;

use super::job::JobInstance;
use crate::checkpoint::recovery::read_range;
use crate::checkpoint::LogToRestore;
use crate::operator::StateEntry;
use crate::state::log::{
    replay_with, CheckpointKind, Joined, Located, LogError, Reassembler, Record, SegmentRange, StateId,
};

/// What a shard replayed.
pub struct Replayed {
    pub entries: u64,
    pub bytes: u64,
}

/// Replays into `jobs` (this shard's job instances, in job order) the state of the key groups in `owned`,
/// out of `log`. `shard` is this shard's index, `key_groups` the job graph's count.
pub fn replay_owned(
    log: &LogToRestore,
    shard: usize,
    owned: &[u16],
    key_groups: u32,
    jobs: &mut [&mut JobInstance],
) -> Result<Replayed, String> {
    let mut mine = vec![false; key_groups as usize];
    for &kg in owned {
        mine[kg as usize] = true;
    }
    let mut done = Replayed { entries: 0, bytes: 0 };
    for old in &log.shards {
        let overlaps = old.key_groups.iter().any(|kg| mine[*kg as usize]);
        // A shard of the checkpoint that owned no key group holds no state; shard 0 still checks its log.
        if !(overlaps || old.key_groups.is_empty() && shard == 0) {
            continue;
        }
        let mut ranges = Vec::with_capacity(old.log.len());
        for r in &old.log {
            ranges.push((r.clone(), read_range(&log.log_dir, r)?));
        }
        let damaged = |e: LogError| {
            format!(
                "checkpoint {} is damaged: {}/{e}. Nothing was restored; move {} away to start from the previous checkpoint, or restore a savepoint",
                log.epoch,
                log.log_dir.display(),
                crate::checkpoint::manifest::manifest_name(log.epoch)
            )
        };
        // Every record of the log, checked, in order (entries stay undecoded in the read buffers).
        let mut records: Vec<(&SegmentRange, Located<'_>)> = Vec::new();
        let mut first = true;
        done.bytes += replay_with(&ranges, log.epoch, |kind, range, checkpoint| {
            if kind == CheckpointKind::Base && !std::mem::take(&mut first) {
                let at = checkpoint.first().map_or(range.from, |r| r.0);
                return Err((at, "a second base among the ranges of one checkpoint".into()));
            }
            records.extend(checkpoint.iter().map(|r| (range, r.clone())));
            Ok(())
        })
        .map_err(damaged)?;
        // A DROP deletes the namespace's entries written before it in this log, and only those: another log
        // replayed into this shard may hold live entries of the same namespace (its shard had not fired the
        // window yet). So entries are put only if no later DROP of their namespace follows in their log.
        let mut last_drop: HashMap<(StateId, i64), usize> = HashMap::new();
        for (i, (_, (_, r))) in records.iter().enumerate() {
            if let Record::Drop { state, namespace } = r {
                last_drop.insert((*state, *namespace), i);
            }
        }
        let dropped_later = |state: StateId, ns: i64, i: usize| last_drop.get(&(state, ns)).is_some_and(|d| *d > i);
        // Room in each namespace for its entries up front: a table that grows as it fills copies itself over
        // and over.
        let mut sizes: Vec<((StateId, i64), usize, usize)> = Vec::new();
        for (i, (_, (_, record))) in records.iter().enumerate() {
            let Record::Entries { state, key_group, entries } = record else { continue };
            if !mine.get(*key_group as usize).copied().unwrap_or(false) {
                continue;
            }
            for e in entries.iter().filter(|e| e.value.is_some() && !dropped_later(*state, e.namespace, i)) {
                // Entries of one namespace come in runs: the last one counted is nearly always it.
                match sizes.iter_mut().rev().find(|(g, _, _)| *g == (*state, e.namespace)) {
                    Some((_, n, bytes)) => {
                        *n += 1;
                        *bytes += e.key.len();
                    }
                    None => sizes.push(((*state, e.namespace), 1, e.key.len())),
                }
            }
        }
        for ((state, namespace), keys, key_bytes) in sizes {
            if let Some(job) = jobs.get_mut(state.job as usize) {
                job.reserve(state.node, state.table, namespace, keys, key_bytes);
            }
        }
        // Then every record's entries in log order, handed to their operator a record at a time.
        let mut parts = Reassembler::default();
        for (i, (range, (offset, record))) in records.iter().enumerate() {
            let Record::Entries { state, key_group, entries } = record else { continue };
            if !mine.get(*key_group as usize).copied().unwrap_or(false) {
                continue;
            }
            let fail = |what: String| damaged(LogError { file: range.file.clone(), offset: *offset, what });
            let n_jobs = jobs.len();
            let job = jobs
                .get_mut(state.job as usize)
                .ok_or_else(|| fail(format!("state of job {}, but the config has {n_jobs} jobs", state.job)))?;
            // Values joined from parts are owned: gathered first, then referenced by the batch.
            let mut joined: Vec<Vec<u8>> = Vec::new();
            let mut kinds = Vec::with_capacity(entries.len());
            for e in entries.iter() {
                match parts.feed(*state, *key_group, &e).map_err(&fail)? {
                    Joined::Pending => kinds.push(None),
                    Joined::Delete => kinds.push(Some(None)),
                    Joined::Put(std::borrow::Cow::Borrowed(_)) => kinds.push(Some(Some(usize::MAX))),
                    Joined::Put(std::borrow::Cow::Owned(v)) => {
                        joined.push(v);
                        kinds.push(Some(Some(joined.len() - 1)));
                    }
                }
            }
            let mut batch: Vec<StateEntry<'_>> = Vec::with_capacity(entries.len());
            for (e, kind) in entries.iter().zip(kinds) {
                let Some(value) = kind else { continue };
                if !last_drop.is_empty() && dropped_later(*state, e.namespace, i) {
                    continue;
                }
                let value = match value {
                    None => None,
                    Some(usize::MAX) => e.value,
                    Some(j) => Some(joined[j].as_slice()),
                };
                batch.push(StateEntry { namespace: e.namespace, key: e.key, value });
            }
            done.entries += batch.len() as u64;
            job.restore(state.node, state.table, *key_group, &batch)
                .map_err(|what| fail(format!("{state}, key group {key_group}: {what}")))?;
        }
        parts.finish().map_err(|what| damaged(LogError { file: String::new(), offset: 0, what }))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::checkpoint::manifest::ShardEntry;
    use crate::operator::accumulator::{encode_accs, Acc};
    use crate::queue::ShardId;
    use crate::record::Schema;
    use crate::shard::job::{Effects, Wiring};
    use crate::shard::routing::RoutingTable;
    use crate::sql::physical::NodeOp;
    use crate::sql::plan::TableInfo;
    use crate::sql::{plan_job, WatermarkSpec};
    use crate::state::log::{replay, BlobEncoder};

    /// A job counting bids per bidder in 10 s windows, on one shard, and the id of its window's slice table.
    fn count_by_bidder() -> (JobInstance, StateId) {
        let schema = Schema::parse(crate::config::NEXMARK_BID_SCHEMA).unwrap();
        let mut tables = BTreeMap::new();
        tables
            .insert("bid".to_string(), TableInfo { schema, watermark: Some(WatermarkSpec { column: 5, delay_ms: 0 }) });
        let sql = "INSERT INTO out SELECT bidder, COUNT(*) AS n, window_start, window_end \
                   FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) \
                   GROUP BY bidder, window_start, window_end";
        let plan = plan_job(sql, &tables, &["out".to_string()]).unwrap();
        let node = plan.nodes.iter().position(|n| matches!(n.op, NodeOp::WindowAgg(_))).unwrap();
        let wiring = Wiring {
            job: 0,
            shard: ShardId(0),
            n_shards: 1,
            epoch: 2,
            routing: Arc::new(RoutingTable::new(2, 1)),
            channels: vec![((node, 0), 0)],
            window_lineage: false,
            track_changes: true,
        };
        let slices = StateId { job: 0, node: node as u16, table: crate::operator::window_agg::TABLE_SLICES };
        (JobInstance::new(&plan, &wiring), slices)
    }

    /// Writes one old shard's log (checkpoints 1 and 2) and returns its manifest entry.
    fn write_log(dir: &std::path::Path, shard: u16, kg: u16, checkpoints: [BlobEncoder; 2]) -> ShardEntry {
        let mut bytes = Vec::new();
        for (i, enc) in checkpoints.into_iter().enumerate() {
            bytes.extend_from_slice(&enc.finish(i as u64 + 1));
        }
        let file = crate::state::segment_name(shard, 0);
        std::fs::write(dir.join(&file), &bytes).unwrap();
        ShardEntry {
            shard,
            log: vec![SegmentRange { file, from: 0, to: bytes.len() as u64 }],
            key_groups: vec![kg],
            watermarks: Vec::new(),
        }
    }

    /// A slice that one old shard fired (and dropped) while another still held it: restored onto one shard,
    /// the drop removes only the first shard's rows, whichever log is replayed first; a value written in
    /// parts comes back whole.
    #[test]
    fn a_drop_removes_only_the_rows_of_its_own_log() {
        let dir = std::env::temp_dir().join(format!("shardflow-restore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, slices) = count_by_bidder();
        let count = |n| move |b: &mut Vec<u8>| encode_accs(&[Acc::Count(n)], b);
        // Old shard 0 (key group 0): a row of slice 10, then the slice dropped.
        let mut base = BlobEncoder::new(1, 0, CheckpointKind::Base);
        base.put(slices, 0, 10, b"fired", count(1));
        let mut delta = BlobEncoder::new(2, 0, CheckpointKind::Delta);
        delta.drop_namespace(slices, 10);
        let fired = write_log(&dir, 0, 0, [base, delta]);
        // Old shard 1 (key group 1): a row of slice 10, still live.
        let mut base = BlobEncoder::new(1, 1, CheckpointKind::Base);
        base.put(slices, 1, 10, b"live", count(5));
        let live = write_log(&dir, 1, 1, [base, BlobEncoder::new(2, 1, CheckpointKind::Delta)]);
        for shards in [vec![live.clone(), fired.clone()], vec![fired, live]] {
            let log = LogToRestore {
                epoch: 2,
                log_dir: dir.clone(),
                shards,
                from: PathBuf::from("state"),
                started: Instant::now(),
                pending: AtomicUsize::new(1),
                entries: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            };
            let (mut job, _) = count_by_bidder();
            let done = replay_owned(&log, 0, &[0, 1], 2, &mut [&mut job]).unwrap();
            assert_eq!(done.entries, 1);
            // What the restored operator holds, as its next base checkpoint writes it.
            let mut enc = BlobEncoder::new(3, 0, CheckpointKind::Base);
            let mut fx = Effects::default();
            for stage in 0..job.n_stages() {
                job.align_stage(stage, 3, true, &mut enc, Instant::now(), &mut fx);
            }
            let blob = enc.finish(3);
            let image =
                replay(&[(SegmentRange { file: "x".into(), from: 0, to: blob.len() as u64 }, blob)], 3).unwrap();
            let keys: Vec<(i64, Vec<u8>)> = image.into_entries().into_iter().map(|e| (e.2, e.3.to_vec())).collect();
            assert_eq!(keys, vec![(10, b"live".to_vec())]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
