//! A shard's side of a restore: it reads the state logs of the checkpoint's shards whose key groups it now
//! owns and replays their entries straight into its jobs' window operators. Every shard does this at once on
//! its own core before it reads any input, so a restore takes about 1/N of the replay on N cores.
//!
//! Every record of a log a shard reads is checked (length, CRC-32C, framing, BEGIN/END pairing); entries of
//! key groups another shard owns are skipped after the check. A log is read by every shard that owns one of
//! its key groups, so each is checked by at least one. Damage is fatal: the run stops before any output.

use std::collections::{HashMap, VecDeque};

use crate::checkpoint::recovery::read_range;
use crate::checkpoint::LogToRestore;
use crate::constants::RESTORE_PREFETCH_AHEAD;
use crate::operator::key::key_hash;
use crate::operator::window_agg::{WindowAggregator, SESSION_NAMESPACE};
use crate::state::log::{replay_with, CheckpointKind, Located, LogError, Record, SegmentRange};

/// A slice row to restore: job, namespace, its key's hash, key, encoded accumulators, and the index of its
/// record.
type Row<'a> = (u16, i64, u64, &'a [u8], &'a [u8], usize);

/// What a shard replayed.
pub struct Replayed {
    pub entries: u64,
    pub bytes: u64,
}

/// Replays into `aggs` (per job: its window operator, `None` for a stateless job) the state of the key groups
/// in `owned`, out of `log`. `shard` is this shard's index, `key_groups` the job graph's count.
pub fn replay_owned(
    log: &LogToRestore,
    shard: usize,
    owned: &[u16],
    key_groups: u32,
    aggs: &mut [Option<&mut WindowAggregator>],
) -> Result<Replayed, String> {
    let mut mine = vec![false; key_groups as usize];
    for &kg in owned {
        mine[kg as usize] = true;
    }
    let mut done = Replayed { entries: 0, bytes: 0 };
    let mut accs = Vec::new();
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
        let mut last_drop: HashMap<(u16, i64), usize> = HashMap::new();
        for (i, (_, (_, r))) in records.iter().enumerate() {
            if let Record::Drop { job, namespace } = r {
                last_drop.insert((*job, *namespace), i);
            }
        }
        // Room in each slice for its rows up front: a table that grows as it fills copies itself over and over.
        let mut sizes: Vec<((u16, i64), usize, usize)> = Vec::new();
        for (_, (_, record)) in &records {
            if let Record::Entries { job, key_group, entries } = record {
                if mine.get(*key_group as usize).copied().unwrap_or(false) {
                    for e in entries.iter().filter(|e| e.namespace != SESSION_NAMESPACE) {
                        // Entries of one namespace come in runs: the last one counted is nearly always it.
                        match sizes.iter_mut().rev().find(|(g, _, _)| *g == (*job, e.namespace)) {
                            Some((_, n, bytes)) => {
                                *n += 1;
                                *bytes += e.key.len();
                            }
                            None => sizes.push(((*job, e.namespace), 1, e.key.len())),
                        }
                    }
                }
            }
        }
        for ((job, namespace), keys, key_bytes) in sizes {
            if let Some(agg) = aggs.get_mut(job as usize).and_then(Option::as_mut) {
                agg.reserve_slice(namespace, keys, key_bytes);
            }
        }
        // Then every entry in log order. A slice row is put RESTORE_PREFETCH_AHEAD rows after it is read, its table
        // slot prefetched meanwhile (a table of a million keys misses the cache on nearly every put).
        let mut ahead: VecDeque<Row<'_>> = VecDeque::with_capacity(RESTORE_PREFETCH_AHEAD + 1);
        let mut put = |row: Row<'_>, aggs: &mut [Option<&mut WindowAggregator>]| {
            let (job, namespace, hash, key, value, i) = row;
            let agg = aggs[job as usize].as_mut().expect("rows are read only for jobs with window state");
            agg.restore_row(namespace, hash, key, value, &mut accs).map_err(|what| {
                let (range, (offset, _)) = &records[i];
                damaged(LogError { file: range.file.clone(), offset: *offset, what: format!("job {job}: {what}") })
            })
        };
        for (i, (range, (offset, record))) in records.iter().enumerate() {
            let Record::Entries { job, key_group, entries } = record else { continue };
            if !mine.get(*key_group as usize).copied().unwrap_or(false) {
                continue;
            }
            let fail = |what: String| damaged(LogError { file: range.file.clone(), offset: *offset, what });
            if aggs.get(*job as usize).is_none_or(Option::is_none) {
                return Err(fail(format!("state of job {job}, which has no window state")));
            }
            for e in entries.iter() {
                if !last_drop.is_empty() && last_drop.get(&(*job, e.namespace)).is_some_and(|d| *d > i) {
                    continue;
                }
                done.entries += 1;
                let agg = aggs[*job as usize].as_mut().expect("checked above");
                if e.namespace == SESSION_NAMESPACE {
                    agg.restore_session(e.key, e.value)
                        .map_err(|what| fail(format!("job {job}, key group {key_group}: {what}")))?;
                    continue;
                }
                let Some(value) = e.value else {
                    return Err(fail(format!(
                        "job {job}: a delete of one key of slice {} (slices are only ever dropped whole)",
                        e.namespace
                    )));
                };
                let hash = key_hash(e.key);
                agg.prefetch_slot(e.namespace, hash);
                ahead.push_back((*job, e.namespace, hash, e.key, value, i));
                if ahead.len() > RESTORE_PREFETCH_AHEAD {
                    put(ahead.pop_front().expect("not empty"), aggs)?;
                }
            }
        }
        while let Some(row) = ahead.pop_front() {
            put(row, aggs)?;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    use std::time::Instant;

    use super::*;
    use crate::checkpoint::manifest::ShardEntry;
    use crate::operator::accumulator::{encode_accs, Acc};
    use crate::record::Schema;
    use crate::sql::plan::TableInfo;
    use crate::sql::{plan_job, WatermarkSpec};
    use crate::state::log::{replay, BlobEncoder};

    fn count_by_bidder() -> WindowAggregator {
        let schema = Schema::parse(crate::config::NEXMARK_BID_SCHEMA).unwrap();
        let mut tables = BTreeMap::new();
        tables
            .insert("bid".to_string(), TableInfo { schema, watermark: Some(WatermarkSpec { column: 5, delay_ms: 0 }) });
        let sql = "INSERT INTO out SELECT bidder, COUNT(*) AS n, window_start, window_end \
                   FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND)) \
                   GROUP BY bidder, window_start, window_end";
        let plan = plan_job(sql, &tables, &["out".to_string()]).unwrap();
        WindowAggregator::new(plan.window.as_ref().unwrap())
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
            watermarks: vec![i64::MIN],
        }
    }

    /// A slice that one old shard fired (and dropped) while another still held it: restored onto one shard,
    /// the drop removes only the first shard's rows, whichever log is replayed first.
    #[test]
    fn a_drop_removes_only_the_rows_of_its_own_log() {
        let dir = std::env::temp_dir().join(format!("shardflow-restore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let count = |n| move |b: &mut Vec<u8>| encode_accs(&[Acc::Count(n)], b);
        // Old shard 0 (key group 0): a row of slice 10, then the slice dropped.
        let mut base = BlobEncoder::new(1, 0, CheckpointKind::Base);
        base.put(0, 0, 10, b"fired", count(1));
        let mut delta = BlobEncoder::new(2, 0, CheckpointKind::Delta);
        delta.drop_namespace(0, 10);
        let fired = write_log(&dir, 0, 0, [base, delta]);
        // Old shard 1 (key group 1): a row of slice 10, still live.
        let mut base = BlobEncoder::new(1, 1, CheckpointKind::Base);
        base.put(0, 1, 10, b"live", count(5));
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
            let mut agg = count_by_bidder();
            let done = replay_owned(&log, 0, &[0, 1], 2, &mut [Some(&mut agg)]).unwrap();
            assert_eq!(done.entries, 1);
            let mut enc = BlobEncoder::new(3, 0, CheckpointKind::Base);
            agg.snapshot(0, true, &mut enc);
            let blob = enc.finish(3);
            let image =
                replay(&[(SegmentRange { file: "x".into(), from: 0, to: blob.len() as u64 }, blob)], 3).unwrap();
            let keys: Vec<(i64, Vec<u8>)> = image.into_entries().into_iter().map(|e| (e.2, e.3.to_vec())).collect();
            assert_eq!(keys, vec![(10, b"live".to_vec())]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
