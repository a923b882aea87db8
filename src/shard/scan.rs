//! A shard's side of one scan of a job: the splits of its source this shard reads, their watermarks, bad
//! input and dead letters. A read takes one batch from the next unfinished split (round robin) and says what
//! the shard should pass to the job: the rows, a watermark that advanced, that the source went idle, that it
//! ended.

use std::sync::Arc;
use std::time::Instant;

use super::{ScanSpec, SplitSpec};
use crate::constants::SOURCE_BATCH_ROWS_MAX;
use crate::metrics::latency::LatencyProbe;
use crate::record::{BatchBuf, BatchBuilder, Lineage};
use crate::sink::SinkWriter;
use crate::source::file::FileSplit;
use crate::source::kinesis::KinesisSplit;
use crate::source::nexmark::NexmarkSplit;
use crate::source::{max_event_time, BadInput, Split, SplitPosition, SplitState};
use crate::time::SplitWatermarks;

/// What one read produced.
#[derive(Default)]
pub struct Read {
    /// Rows, and whether the split gave what it had (rows lingering for the sink may go now).
    pub batch: Option<(BatchBuf, bool)>,
    pub watermark: Option<i64>,
    /// Every split went idle (announced once, until the next watermark).
    pub idle: bool,
    /// Every split is read to its end (announced once).
    pub ended: bool,
    /// Dead-letter rows to write.
    pub dead_letters: Option<BatchBuf>,
}

pub struct ScanReader {
    pub name: String,
    splits: Vec<Split>,
    split_done: Vec<bool>,
    next_split: usize,
    watermarks: SplitWatermarks,
    has_watermark: bool,
    watermark_column: Option<usize>,
    idle_timeout_ms: u64,
    rows: BatchBuilder,
    pub bad: BadInput,
    pub dead_letter: Option<SinkWriter>,
    /// The end of the input was announced.
    pub ended: bool,
    announced_idle: bool,
    /// A rate-limited source may read again at this instant.
    pub resume_at: Option<Instant>,
}

impl ScanReader {
    /// The scan's splits on `shard`; `used` are the source columns the job reads (a generator skips the rest).
    pub fn new(
        spec: &ScanSpec,
        shard: usize,
        dead_letter: Option<SinkWriter>,
        bad: Arc<std::sync::atomic::AtomicU64>,
    ) -> ScanReader {
        let schema = &spec.source.schema;
        let splits: Vec<Split> = spec.splits[shard]
            .iter()
            .map(|s| match s {
                SplitSpec::Nexmark { split, n_splits } => Split::Nexmark(NexmarkSplit::new(
                    spec.nexmark().expect("nexmark splits belong to nexmark sources"),
                    spec.nexmark_tables.clone().expect("nexmark tables are built for nexmark sources"),
                    spec.pace.clone(),
                    *split,
                    *n_splits,
                    &spec.used,
                )),
                SplitSpec::File(path) => Split::File(Box::new(FileSplit::new(path.clone(), schema.clone()))),
                SplitSpec::Kinesis { stream, rx } => {
                    Split::Kinesis(Box::new(KinesisSplit::new(stream, rx.clone(), schema.clone())))
                }
            })
            .collect();
        let delay = spec.watermark.map_or(0, |w| w.delay_ms);
        ScanReader {
            name: spec.source.name.clone(),
            split_done: vec![false; splits.len()],
            watermarks: SplitWatermarks::new(splits.len(), delay, spec.source.idle_timeout_ms, 0),
            has_watermark: spec.watermark.is_some(),
            watermark_column: spec.watermark.map(|w| w.column),
            idle_timeout_ms: spec.source.idle_timeout_ms,
            splits,
            next_split: 0,
            rows: BatchBuilder::new(&schema.types()),
            bad: BadInput::new(&spec.source.name, bad, dead_letter.is_some()),
            dead_letter,
            ended: false,
            announced_idle: false,
            resume_at: None,
        }
    }

    /// Where every split is, for a checkpoint of scan `scan`.
    pub fn positions(&self, scan: u16) -> Vec<SplitState> {
        self.splits
            .iter()
            .enumerate()
            .map(|(i, s)| SplitState {
                scan,
                position: s.position(),
                max_event_time: self.watermarks.max_event_time(i),
            })
            .collect()
    }

    /// Puts the splits back where a checkpoint says (`states`: every split of this scan, over all shards).
    pub fn restore(&mut self, states: &[SplitState]) -> Result<(), String> {
        let nexmark: Vec<(u64, u64, u64)> = states
            .iter()
            .filter_map(|s| match s.position {
                SplitPosition::Nexmark { split, n_splits, next } => Some((split, n_splits, next)),
                SplitPosition::File { .. } | SplitPosition::Kinesis { .. } => None,
            })
            .collect();
        let nexmark_max = states.iter().filter_map(|s| s.max_event_time).max();
        for (i, split) in self.splits.iter_mut().enumerate() {
            match split {
                Split::Nexmark(n) => {
                    if nexmark.is_empty() {
                        return Err(format!("the checkpoint has no position for the nexmark source {}", self.name));
                    }
                    let (own, splits, _) = n.position();
                    let same = states.iter().find(|s| {
                        matches!(s.position, SplitPosition::Nexmark { split, n_splits, .. } if split == own && n_splits == splits)
                    });
                    n.resume(&nexmark)?;
                    // With another split count, any old split's bids may come here: the largest time is safe.
                    let max = same.map_or(nexmark_max, |s| s.max_event_time);
                    if let Some(m) = max {
                        self.watermarks.restore(i, m);
                    }
                }
                Split::Kinesis(_) => {
                    // Stream shards move between shards across restarts; the least event time any shard had
                    // read keeps every restored watermark at or below the combined one before the restart.
                    let least = states
                        .iter()
                        .filter(|s| matches!(s.position, SplitPosition::Kinesis { .. }))
                        .filter_map(|s| s.max_event_time)
                        .min();
                    if let Some(m) = least {
                        self.watermarks.restore(i, m);
                    }
                }
                Split::File(f) => {
                    let path = f.path().display().to_string();
                    let found = states
                        .iter()
                        .find(|s| matches!(&s.position, SplitPosition::File { path: p, .. } if *p == path));
                    // A file the checkpoint does not know appeared since: read it from the start.
                    let Some(state) = found else { continue };
                    if let SplitPosition::File { offset, line, finished, .. } = state.position {
                        f.resume(offset, line);
                        if finished {
                            self.split_done[i] = true;
                            self.watermarks.finish(i);
                        }
                    }
                    if let Some(m) = state.max_event_time {
                        self.watermarks.restore(i, m);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads one batch from the next unfinished split. `stop_now`: the run stops without a final
    /// checkpoint, so every split counts as read to its end (windows fire). Under a probe, the rows carry
    /// when they were due.
    pub async fn read(&mut self, now_ms: u64, stop_now: bool, probe: Option<&LatencyProbe>) -> Result<Read, String> {
        let mut read = Read::default();
        if self.ended {
            return Ok(read);
        }
        if let Some(r) = self.resume_at {
            if Instant::now() < r && !stop_now {
                return Ok(read);
            }
            self.resume_at = None;
        }
        let n_splits = self.splits.len();
        let mut schedule = None;
        let mut caught_up = false;
        for _ in 0..n_splits {
            let s = self.next_split;
            self.next_split = (self.next_split + 1) % n_splits;
            if self.split_done[s] {
                continue;
            }
            if stop_now {
                self.split_done[s] = true;
                self.watermarks.finish(s);
                continue;
            }
            let rows = match &mut self.splits[s] {
                Split::Nexmark(n) => {
                    let (allowed, wait) = n.allowance(SOURCE_BATCH_ROWS_MAX, Instant::now());
                    if let Some(w) = wait {
                        self.resume_at = Some(Instant::now() + w);
                    }
                    caught_up = allowed < SOURCE_BATCH_ROWS_MAX;
                    schedule = probe.and(n.next_read_schedule());
                    n.read(&mut self.rows, allowed)
                }
                Split::File(f) => f
                    .read(&mut self.rows, SOURCE_BATCH_ROWS_MAX, &mut self.bad)
                    .await
                    .map_err(|e| format!("source {}: {e}", self.name))?,
                Split::Kinesis(k) => {
                    let rows = k
                        .read(&mut self.rows, SOURCE_BATCH_ROWS_MAX, &mut self.bad, now_ms)
                        .map_err(|e| format!("source {}: {e}", self.name))?;
                    caught_up = rows < SOURCE_BATCH_ROWS_MAX;
                    rows
                }
            };
            if self.splits[s].is_finished() {
                self.split_done[s] = true;
                self.watermarks.finish(s);
            }
            let idle_timeout_ms = self.idle_timeout_ms;
            let kinesis_time = |split: &Split| match split {
                Split::Kinesis(k) => k.event_time(now_ms, idle_timeout_ms),
                _ => None,
            };
            if rows > 0 {
                if let (Some(s), Some(p)) = (schedule, probe) {
                    self.rows.lineage = Some(Lineage::Due((0..rows as u32).map(|r| s.due_ns(&p.pace, r)).collect()));
                }
                let batch = self.rows.finish();
                self.rows.lineage = None;
                if let Some(col) = self.watermark_column {
                    if let Some(max) = max_event_time(&batch.view(), col) {
                        match &mut self.splits[s] {
                            // Per stream shard: the split's event time is the least over its active ones.
                            Split::Kinesis(k) => k.observe(max, now_ms),
                            _ => self.watermarks.observe(s, max, now_ms),
                        }
                    }
                    if let Some(t) = kinesis_time(&self.splits[s]) {
                        self.watermarks.observe(s, t, now_ms);
                    }
                }
                read.batch = Some((batch, caught_up));
            } else if let (true, Some(t)) = (self.has_watermark, kinesis_time(&self.splits[s])) {
                // Nothing read, but a quiet stream shard may have gone idle: the others' time may now count.
                self.watermarks.observe(s, t, now_ms);
            }
            break;
        }
        read.dead_letters = self.bad.dead_letter.as_mut().filter(|d| !d.is_empty()).map(|d| d.finish());
        let all_done = self.split_done.iter().all(|d| *d);
        let advanced = if self.has_watermark || all_done { self.watermarks.advance(now_ms) } else { None };
        if let Some(wm) = advanced {
            self.announced_idle = false;
            read.watermark = Some(wm);
        } else if !all_done && !self.announced_idle && self.watermarks.is_idle(now_ms) {
            self.announced_idle = true;
            read.idle = true;
        }
        if all_done {
            self.ended = true;
            read.ended = true;
        }
        Ok(read)
    }
}
