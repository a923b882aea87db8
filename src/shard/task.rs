//! One shard's event loop: read source splits, run the operator chain, exchange rows by key, fire windows on
//! watermarks, write sinks. One task per shard; nothing in it blocks the executor.
//!
//! Order of work in a turn: retry sends that found a lane full; drain inbound lanes (a bounded number of
//! messages each); read one batch from each job's next split unless a send is blocked (backpressure stops
//! the sources, never the draining, so two shards pushing at each other cannot deadlock: consumers of the
//! exchange never produce into it); flush batches that lingered. With no progress, the task parks on its
//! doorbell until woken or until the next deadline.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{JobGraph, JobSpec, SplitSpec};
use crate::checkpoint::{AckData, CheckpointControl, JobRestore, ShardAck};
use crate::constants::{
    BATCH_BYTES_MAX, BATCH_LINGER_US, EXCHANGE_BATCH_ROWS_MAX, EXCHANGE_DRAIN_BATCHES_MAX, SHARD_PARK_TIMEOUT_MS,
    SHARD_SLOW_TURN_MS, SHARD_SPIN_BEFORE_PARK_US, SHARD_SPIN_TO_DEADLINE_MAX_US, SOURCE_BATCH_ROWS_MAX,
};
use crate::operator::calc::run_calc_columnar;
use crate::operator::key::{encode_key, key_hash};
use crate::operator::window_agg::WindowAggregator;
use crate::queue::{Doorbell, Message, ShardId};
use crate::record::{BatchBuf, BatchBuilder, DataType};
use crate::sink::file::FileSinkWriter;
use crate::sink::kinesis::KinesisSinkWriter;
use crate::sink::SinkWriter;
use crate::source::file::FileSplit;
use crate::source::kinesis::KinesisSplit;
use crate::source::nexmark::{NexmarkSplit, ReadSchedule};
use crate::source::{dead_letter_schema, max_event_time, BadInput, Split, SplitPosition, SplitState};
use crate::state::log::{BlobEncoder, CheckpointKind};
use crate::state::writer::LogWriter;
use crate::time::{SplitWatermarks, WatermarkCombiner};

/// The error text of a shard stopped because another one failed.
pub const ABORTED: &str = "stopped because another shard failed";

const LINGER: Duration = Duration::from_micros(BATCH_LINGER_US);

fn full(b: &BatchBuilder) -> bool {
    b.n_rows() >= EXCHANGE_BATCH_ROWS_MAX || b.size_bytes() >= BATCH_BYTES_MAX
}

/// A batch builder that remembers when its first row arrived, for the linger deadline.
struct Pending {
    rows: BatchBuilder,
    since: Option<Instant>,
}

impl Pending {
    fn new(types: &[DataType]) -> Pending {
        Pending { rows: BatchBuilder::new(types), since: None }
    }

    fn touch(&mut self, now: Instant) {
        if self.since.is_none() && !self.rows.is_empty() {
            self.since = Some(now);
        }
    }

    fn take(&mut self) -> Option<BatchBuf> {
        self.since = None;
        (!self.rows.is_empty()).then(|| self.rows.finish())
    }

    fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + LINGER)
    }
}

/// A window aggregation's per-shard state.
struct WindowJob {
    agg: WindowAggregator,
    combiner: WatermarkCombiner,
    ended: Vec<bool>,
    /// Pre-aggregation rows waiting to be sent, per destination shard.
    outbox: Vec<Pending>,
    types: Vec<DataType>,
    n_keys: usize,
    key_buf: Vec<u8>,
    /// Rows of the batch being routed, per destination shard (reused between batches).
    by_shard: Vec<Vec<u32>>,
    /// Pre-aggregation rows of the source batch being routed.
    staged: BatchBuilder,
    late_reported: u64,
}

struct JobState {
    splits: Vec<Split>,
    split_done: Vec<bool>,
    next_split: usize,
    watermarks: SplitWatermarks,
    source_rows: BatchBuilder,
    bad: BadInput,
    dead_letter: Option<SinkWriter>,
    sink: Option<SinkWriter>,
    /// Stateless jobs: output rows waiting for the sink.
    out: Pending,
    /// Under a latency probe: when each row in `out` was due (nanoseconds into the source's schedule).
    out_due: Vec<u64>,
    window: Option<WindowJob>,
    /// The end of the input was sent downstream.
    input_ended: bool,
    /// Downstream was told this shard's sources are idle (until the next watermark).
    announced_idle: bool,
    /// The rows of a source batch that pass the job's filter (reused between batches).
    selection: Vec<u32>,
    finished: bool,
    /// A rate-limited source may read again at this instant.
    resume_at: Option<Instant>,
}

pub struct ShardTask {
    id: ShardId,
    graph: Arc<JobGraph>,
    bell: Arc<Doorbell>,
    jobs: Vec<JobState>,
    /// Sends that found their lane full, in order; while any waits, sources are not read.
    blocked: VecDeque<(ShardId, Message)>,
    started: Instant,
    /// Checkpointing, when configured.
    ckpt: Option<Checkpoints>,
}

/// A shard's side of checkpointing (see `checkpoint/`).
struct Checkpoints {
    ctl: Arc<CheckpointControl>,
    /// Taken by the background task that writes a checkpoint, put back when it is done.
    writer: Rc<RefCell<Option<LogWriter>>>,
    /// The newest barrier this shard injected.
    injected: u64,
    /// The newest barrier this shard aligned and snapshotted.
    aligned: u64,
    /// Per inbound lane, the newest barrier received on it: a lane whose barrier is newer than `aligned` is
    /// not read until the alignment completes.
    barriers: Vec<u64>,
    /// Split states recorded when `injected` was injected, per job.
    positions: Vec<Vec<SplitState>>,
    injected_at: Instant,
    /// The newest epoch whose sink output this shard committed.
    committed: u64,
    /// This shard told the coordinator that all its jobs ended.
    finished_reported: bool,
}

impl Checkpoints {
    fn aligning(&self) -> bool {
        self.injected > self.aligned
    }
}

type ShardResult<T> = Result<T, String>;

fn sink_writer(
    cfg: &crate::config::SinkConfig,
    writer: &str,
    shard: usize,
    schema: &crate::record::Schema,
    epoch: Option<u64>,
) -> SinkWriter {
    match &cfg.connector {
        crate::config::SinkConnector::File { path } => {
            SinkWriter::File(Box::new(FileSinkWriter::new(path, writer, shard, schema, epoch)))
        }
        crate::config::SinkConnector::Stdout => SinkWriter::stdout(schema),
        crate::config::SinkConnector::Blackhole => SinkWriter::Blackhole,
        crate::config::SinkConnector::Kinesis { .. } => {
            unreachable!("a job's Kinesis sink comes with its JobSpec; the daemon refuses Kinesis dead-letter sinks")
        }
    }
}

impl ShardTask {
    pub fn new(graph: Arc<JobGraph>, id: ShardId) -> ShardResult<ShardTask> {
        let started = Instant::now();
        let (ckpt, restore) = match &graph.checkpoints {
            None => (None, None),
            Some(ctl) => {
                let restore = ctl.restore.lock().expect("restore lock").get_mut(id.idx()).and_then(Option::take);
                let writer = LogWriter::new(&ctl.log_dir(), id.0)?;
                let epoch = restore.as_ref().map_or(0, |r| r.epoch);
                let ckpt = Checkpoints {
                    ctl: ctl.clone(),
                    writer: Rc::new(RefCell::new(Some(writer))),
                    injected: epoch,
                    aligned: epoch,
                    barriers: vec![epoch; graph.n_shards()],
                    positions: Vec::new(),
                    injected_at: started,
                    committed: epoch,
                    finished_reported: false,
                };
                (Some(ckpt), restore)
            }
        };
        let first_epoch = ckpt.as_ref().map(|c| c.aligned + 1);
        let mut jobs: Vec<JobState> =
            graph.jobs.iter().map(|spec| Self::job_state(&graph, spec, id, first_epoch)).collect();
        if ckpt.is_some() {
            for w in jobs.iter_mut().filter_map(|j| j.window.as_mut()) {
                w.agg.track_changes(graph.routing.key_groups());
            }
        }
        if let Some(r) = &restore {
            let owned = graph.routing.ranges(graph.n_shards()).swap_remove(id.idx());
            let mut aggs: Vec<Option<&mut WindowAggregator>> =
                jobs.iter_mut().map(|j| j.window.as_mut().map(|w| &mut w.agg)).collect();
            let replayed =
                super::restore::replay_owned(&r.log, id.idx(), &owned, graph.routing.key_groups(), &mut aggs)
                    .map_err(|e| format!("restore: {e}"))?;
            for ((spec, job), jr) in graph.jobs.iter().zip(&mut jobs).zip(&r.jobs) {
                Self::restore_job(&graph, spec, id, job, jr).map_err(|e| format!("job {}: restore: {e}", spec.name))?;
            }
            r.log.shard_done(replayed.entries, replayed.bytes);
        }
        Ok(ShardTask { bell: graph.exchange.doorbell(id), id, jobs, graph, blocked: VecDeque::new(), started, ckpt })
    }

    /// Puts a job's checkpointed state back: its window state, and its splits' positions and event times.
    fn restore_job(
        graph: &JobGraph,
        spec: &JobSpec,
        id: ShardId,
        job: &mut JobState,
        r: &JobRestore,
    ) -> ShardResult<()> {
        if let Some(w) = job.window.as_mut() {
            let owned = graph.routing.ranges(graph.n_shards()).swap_remove(id.idx());
            w.agg.finish_restore(&r.floors, &owned);
        }
        let nexmark: Vec<(u64, u64, u64)> = r
            .sources
            .iter()
            .filter_map(|s| match s.position {
                SplitPosition::Nexmark { split, n_splits, next } => Some((split, n_splits, next)),
                SplitPosition::File { .. } | SplitPosition::Kinesis { .. } => None,
            })
            .collect();
        let nexmark_max = r.sources.iter().filter_map(|s| s.max_event_time).max();
        for (i, split) in job.splits.iter_mut().enumerate() {
            match split {
                Split::Nexmark(n) => {
                    if nexmark.is_empty() {
                        return Err(format!(
                            "the checkpoint has no position for the nexmark source {}",
                            spec.source.name
                        ));
                    }
                    let (own, splits, _) = n.position();
                    let same = r.sources.iter().find(|s| {
                        matches!(s.position, SplitPosition::Nexmark { split, n_splits, .. } if split == own && n_splits == splits)
                    });
                    n.resume(&nexmark)?;
                    // With another split count, any old split's bids may come here: the largest time is safe.
                    let max = same.map_or(nexmark_max, |s| s.max_event_time);
                    if let Some(m) = max {
                        job.watermarks.restore(i, m);
                    }
                }
                Split::Kinesis(_) => {
                    // Stream shards move between shards across restarts; the least event time any shard had
                    // read keeps every restored watermark at or below the combined one before the restart.
                    let least = r
                        .sources
                        .iter()
                        .filter(|s| matches!(s.position, SplitPosition::Kinesis { .. }))
                        .filter_map(|s| s.max_event_time)
                        .min();
                    if let Some(m) = least {
                        job.watermarks.restore(i, m);
                    }
                }
                Split::File(f) => {
                    let path = f.path().display().to_string();
                    let found = r
                        .sources
                        .iter()
                        .find(|s| matches!(&s.position, SplitPosition::File { path: p, .. } if *p == path));
                    // A file the checkpoint does not know appeared since: read it from the start.
                    let Some(state) = found else { continue };
                    if let SplitPosition::File { offset, line, finished, .. } = state.position {
                        f.resume(offset, line);
                        if finished {
                            job.split_done[i] = true;
                            job.watermarks.finish(i);
                        }
                    }
                    if let Some(m) = state.max_event_time {
                        job.watermarks.restore(i, m);
                    }
                }
            }
        }
        Ok(())
    }

    fn job_state(graph: &JobGraph, spec: &JobSpec, id: ShardId, epoch: Option<u64>) -> JobState {
        let plan = &spec.plan;
        let used = plan.calc.used_columns(spec.source.schema.len());
        let splits: Vec<Split> = spec.splits[id.idx()]
            .iter()
            .map(|s| match s {
                SplitSpec::Nexmark { split, n_splits } => Split::Nexmark(NexmarkSplit::new(
                    spec.nexmark().expect("nexmark splits belong to nexmark sources"),
                    spec.nexmark_tables.clone().expect("nexmark tables are built for nexmark sources"),
                    spec.pace.clone(),
                    *split,
                    *n_splits,
                    &used,
                )),
                SplitSpec::File(path) => {
                    Split::File(Box::new(FileSplit::new(path.clone(), spec.source.schema.clone())))
                }
                SplitSpec::Kinesis { stream, rx } => {
                    Split::Kinesis(Box::new(KinesisSplit::new(stream, rx.clone(), spec.source.schema.clone())))
                }
            })
            .collect();
        let n = graph.n_shards();
        let delay = spec.watermark.map_or(0, |w| w.delay_ms);
        let window = plan.window.as_ref().map(|w| WindowJob {
            agg: {
                let mut agg = WindowAggregator::new(w);
                if spec.probe.is_some() {
                    agg.track_emitted_ends();
                }
                agg
            },
            combiner: WatermarkCombiner::new(n),
            ended: vec![false; n],
            outbox: (0..n).map(|_| Pending::new(&w.input.types())).collect(),
            types: w.input.types(),
            n_keys: w.n_keys,
            key_buf: Vec::new(),
            staged: BatchBuilder::new(&w.input.types()),
            by_shard: vec![Vec::new(); n],
            late_reported: 0,
        });
        let dead_letter = spec
            .dead_letter
            .as_ref()
            .map(|cfg| sink_writer(cfg, &format!("deadletter-{}", spec.name), id.idx(), &dead_letter_schema(), epoch));
        JobState {
            split_done: vec![false; splits.len()],
            watermarks: SplitWatermarks::new(splits.len(), delay, spec.source.idle_timeout_ms, 0),
            splits,
            next_split: 0,
            source_rows: BatchBuilder::new(&spec.source.schema.types()),
            bad: BadInput::new(&spec.source.name, spec.metrics.bad_records.clone(), spec.dead_letter.is_some()),
            dead_letter,
            sink: Some(match &spec.kinesis_sink {
                Some(k) => SinkWriter::Kinesis(Box::new(KinesisSinkWriter::new(
                    &spec.sink.name,
                    &plan.out_schema,
                    k.partition_key.clone(),
                    k.to_writers[id.idx()].clone(),
                    spec.metrics.bad_records.clone(),
                ))),
                None => sink_writer(&spec.sink, &spec.name, id.idx(), &plan.out_schema, epoch),
            }),
            out: Pending::new(&plan.out_schema.types()),
            out_due: Vec::new(),
            window,
            input_ended: false,
            announced_idle: false,
            selection: Vec::new(),
            finished: false,
            resume_at: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs until every job on this shard has finished (and, with checkpoints, until the run's final
    /// checkpoint is complete and committed).
    pub async fn run(mut self) -> ShardResult<()> {
        let slow = Duration::from_millis(SHARD_SLOW_TURN_MS);
        loop {
            if self.graph.abort.load(Ordering::Relaxed) {
                return Err(ABORTED.to_string());
            }
            let turn = Instant::now();
            let mut progress = false;
            if self.ckpt.is_some() {
                if self.checkpoint_turn().await? {
                    return self.close_sinks().await;
                }
            }
            progress |= self.retry_blocked();
            progress |= self.drain_inbound().await?;
            let held = self.ckpt.as_ref().is_some_and(|c| c.aligning() || c.ctl.held.load(Ordering::Relaxed));
            if self.blocked.is_empty() && !held {
                progress |= self.read_sources().await?;
            }
            self.flush_lingering(Instant::now()).await?;
            let all_finished = self.blocked.is_empty() && self.jobs.iter().all(|j| j.finished);
            match &mut self.ckpt {
                None if all_finished => return Ok(()),
                Some(c) if all_finished && !c.finished_reported => {
                    c.finished_reported = true;
                    c.ctl.finished_shards.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
            let took = turn.elapsed();
            if took > slow {
                self.graph.slow_turns[self.id.idx()].record(took);
            }
            if progress {
                glommio::yield_if_needed().await;
            } else {
                self.park().await;
            }
        }
    }

    /// Waits for a ring or the next deadline (lingering batches, a rate-limited source's next record),
    /// whichever comes first: spinning for up to `SHARD_SPIN_BEFORE_PARK_US` (a deadline within it is met
    /// to the microsecond), then parked. The time is counted as this shard's idle time.
    async fn park(&self) {
        let now = Instant::now();
        let mut deadline = now + Duration::from_millis(SHARD_PARK_TIMEOUT_MS);
        for job in &self.jobs {
            let window_outboxes = job.window.iter().flat_map(|w| w.outbox.iter());
            for p in window_outboxes.chain(std::iter::once(&job.out)) {
                if let Some(d) = p.deadline() {
                    deadline = deadline.min(d);
                }
            }
            if let Some(r) = job.resume_at {
                deadline = deadline.min(r);
            }
        }
        if deadline <= now {
            // Due now: let the shard's other tasks (checkpoint writes) run before the next turn.
            futures_lite::future::yield_now().await;
            return;
        }
        // A deadline close ahead is waited for by spinning: glommio's timers fire late at this scale (a sleep
        // of tens of microseconds was seen to end 8 ms later), which a paced source cannot afford.
        let spin_end = if deadline <= now + Duration::from_micros(SHARD_SPIN_TO_DEADLINE_MAX_US) {
            deadline
        } else {
            now + Duration::from_micros(SHARD_SPIN_BEFORE_PARK_US)
        };
        let rung = self.bell.spin_until(spin_end).await;
        if !rung && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            futures_lite::future::or(self.bell.wait(), glommio::timer::sleep(left)).await;
        }
        self.graph.idle_ns[self.id.idx()].fetch_add(now.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    // ----- checkpoints -----

    /// Injects a requested barrier, completes an alignment, commits completed epochs. Returns true when the
    /// run's final checkpoint is complete and committed: the shard is done.
    async fn checkpoint_turn(&mut self) -> ShardResult<bool> {
        let c = self.ckpt.as_ref().expect("checkpoints are on");
        let requested = c.ctl.requested.load(Ordering::SeqCst).max(c.barriers.iter().copied().max().unwrap_or(0));
        if requested > c.injected {
            self.inject(requested).await?;
        }
        let c = self.ckpt.as_ref().expect("checkpoints are on");
        if c.aligning() && c.barriers.iter().enumerate().all(|(i, b)| i == self.id.idx() || *b >= c.injected) {
            self.complete_alignment().await?;
        }
        let c = self.ckpt.as_ref().expect("checkpoints are on");
        let committable = c.ctl.committable();
        if committable > c.committed {
            self.commit(committable).await?;
        }
        let c = self.ckpt.as_ref().expect("checkpoints are on");
        let final_epoch = c.ctl.final_epoch.load(Ordering::SeqCst);
        Ok(final_epoch != 0 && c.committed >= final_epoch)
    }

    /// Barrier `epoch` at this shard's sources: records where every split is, sends everything read before
    /// it, then the barrier on every lane.
    async fn inject(&mut self, epoch: u64) -> ShardResult<()> {
        let positions = self
            .jobs
            .iter()
            .map(|j| {
                j.splits
                    .iter()
                    .enumerate()
                    .map(|(i, s)| SplitState { position: s.position(), max_event_time: j.watermarks.max_event_time(i) })
                    .collect()
            })
            .collect();
        for job in 0..self.jobs.len() as u16 {
            if self.jobs[job as usize].window.is_some() {
                for to in 0..self.graph.n_shards() {
                    self.flush_outbox(job, ShardId(to as u16)).await?;
                }
            } else {
                self.flush_output(job).await?;
            }
        }
        for to in 0..self.graph.n_shards() {
            let to = ShardId(to as u16);
            if to != self.id {
                self.send(to, Message::Barrier { epoch });
            }
        }
        tracing::debug!(shard = self.id.0, epoch, "barrier injected");
        let c = self.ckpt.as_mut().expect("checkpoints are on");
        c.injected = epoch;
        c.barriers[self.id.idx()] = epoch;
        c.positions = positions;
        c.injected_at = Instant::now();
        Ok(())
    }

    /// Every lane's barrier is in: encodes the state's changes, rolls the sinks, and leaves writing and
    /// syncing both to a background task that acknowledges when they are durable.
    async fn complete_alignment(&mut self) -> ShardResult<()> {
        let c = self.ckpt.as_mut().expect("checkpoints are on");
        let epoch = c.injected;
        tracing::debug!(shard = self.id.0, epoch, "barriers aligned");
        let align = c.injected_at.elapsed();
        let encoding = Instant::now();
        // The run's final checkpoint is always a base: the next run then restores one base, the fast path.
        let last = c.ctl.final_epoch.load(Ordering::SeqCst) == epoch;
        let full = match c.writer.borrow().as_ref() {
            Some(w) => last || w.wants_base(),
            None => return Err(format!("checkpoint {epoch}: the previous checkpoint's write has not finished")),
        };
        let kind = if full { CheckpointKind::Base } else { CheckpointKind::Delta };
        let mut enc = BlobEncoder::new(epoch, self.id.0, kind);
        let mut watermarks = Vec::new();
        for (job, j) in self.jobs.iter_mut().enumerate() {
            match j.window.as_mut() {
                Some(w) => {
                    w.agg.snapshot(job as u16, full, &mut enc);
                    watermarks.push(w.agg.watermark());
                }
                None => watermarks.push(i64::MIN),
            }
        }
        let entries = enc.entries();
        let blob = enc.finish(epoch);
        let encode = encoding.elapsed();
        let mut rolls = Vec::new();
        for (j, spec) in self.jobs.iter_mut().zip(&self.graph.jobs) {
            for sink in j.sink.iter_mut().chain(j.dead_letter.iter_mut()) {
                rolls.extend(sink.roll(epoch).await.map_err(|e| format!("job {}: {e}", spec.name))?);
            }
        }
        let c = self.ckpt.as_mut().expect("checkpoints are on");
        c.aligned = epoch;
        let sources = std::mem::take(&mut c.positions);
        let writer = c.writer.clone();
        let acks = c.ctl.acks.clone();
        let key_groups = self.graph.routing.ranges(self.graph.n_shards()).swap_remove(self.id.idx());
        let shard = self.id.0;
        glommio::spawn_local(async move {
            let result = async {
                for roll in rolls {
                    roll.await.map_err(|e| e.to_string())?;
                }
                let mut w = writer.borrow_mut().take().ok_or("the log writer is busy")?;
                let written = w.append(&blob, kind).await;
                *writer.borrow_mut() = Some(w);
                Ok(AckData {
                    log: written?,
                    sources,
                    watermarks,
                    key_groups,
                    bytes: blob.len() as u64,
                    entries,
                    base: full,
                    align,
                    encode,
                })
            }
            .await;
            // The coordinator waits on this channel; it is bounded by one checkpoint in flight per shard.
            let _ = acks.send(ShardAck { shard, epoch, result });
        })
        .detach();
        Ok(())
    }

    /// Checkpoint `epoch` is complete: the output of the epochs up to it becomes visible.
    async fn commit(&mut self, epoch: u64) -> ShardResult<()> {
        let graph = self.graph.clone();
        for (j, spec) in self.jobs.iter_mut().zip(&graph.jobs) {
            for sink in j.sink.iter_mut().chain(j.dead_letter.iter_mut()) {
                sink.commit(epoch).await.map_err(|e| format!("job {}: {e}", spec.name))?;
            }
        }
        self.ckpt.as_mut().expect("checkpoints are on").committed = epoch;
        Ok(())
    }

    /// The run's final checkpoint is committed: releases the sinks.
    async fn close_sinks(&mut self) -> ShardResult<()> {
        let graph = self.graph.clone();
        for (j, spec) in self.jobs.iter_mut().zip(&graph.jobs) {
            for sink in j.sink.take().into_iter().chain(j.dead_letter.take()) {
                sink.close().await.map_err(|e| format!("job {}: {e}", spec.name))?;
            }
            j.finished = true;
        }
        Ok(())
    }

    // ----- exchange -----

    fn send(&mut self, to: ShardId, msg: Message) {
        if !self.blocked.is_empty() {
            self.blocked.push_back((to, msg));
            return;
        }
        if let Err(msg) = self.graph.exchange.try_send(self.id, to, msg) {
            self.blocked.push_back((to, msg));
        }
    }

    fn retry_blocked(&mut self) -> bool {
        let mut progress = false;
        while let Some((to, msg)) = self.blocked.pop_front() {
            match self.graph.exchange.try_send(self.id, to, msg) {
                Ok(()) => progress = true,
                Err(msg) => {
                    self.blocked.push_front((to, msg));
                    break;
                }
            }
        }
        progress
    }

    async fn drain_inbound(&mut self) -> ShardResult<bool> {
        let mut progress = false;
        for from in 0..self.graph.n_shards() {
            let from = ShardId(from as u16);
            if from == self.id {
                continue;
            }
            for _ in 0..EXCHANGE_DRAIN_BATCHES_MAX {
                if self.ckpt.as_ref().is_some_and(|c| c.barriers[from.idx()] > c.aligned) {
                    // Aligning: what follows this lane's barrier belongs to the next epoch.
                    break;
                }
                let Some(msg) = self.graph.exchange.try_recv(from, self.id) else { break };
                progress = true;
                self.receive(from, msg).await?;
            }
        }
        Ok(progress)
    }

    /// Handles a message from `from` (also this shard's own rows and watermarks, which skip the lanes).
    async fn receive(&mut self, from: ShardId, msg: Message) -> ShardResult<()> {
        match msg {
            Message::Batch { job, batch } => {
                let j = &mut self.jobs[job as usize];
                let w = j.window.as_mut().expect("only window jobs exchange rows");
                w.agg.process(&batch.view());
                let late = w.agg.stats.late_records;
                let graph = self.graph.clone();
                let spec = &graph.jobs[job as usize];
                spec.metrics.late_records.fetch_add(late - w.late_reported, Ordering::Relaxed);
                w.late_reported = late;
                Ok(())
            }
            Message::Watermark { job, watermark } => self.on_watermark(job, from, watermark).await,
            Message::Idle { job } => self.on_idle(job, from).await,
            Message::EndOfInput { job } => self.on_end_of_input(job, from).await,
            Message::Barrier { epoch } => {
                let c = self.ckpt.as_mut().ok_or("a checkpoint barrier arrived, but checkpoints are off")?;
                c.barriers[from.idx()] = c.barriers[from.idx()].max(epoch);
                Ok(())
            }
        }
    }

    async fn on_watermark(&mut self, job: u16, from: ShardId, watermark: i64) -> ShardResult<()> {
        let w = self.jobs[job as usize].window.as_mut().expect("only window jobs exchange watermarks");
        match w.combiner.update(from.idx(), watermark) {
            Some(wm) => self.fire(job, wm).await,
            None => Ok(()),
        }
    }

    async fn on_idle(&mut self, job: u16, from: ShardId) -> ShardResult<()> {
        let w = self.jobs[job as usize].window.as_mut().expect("only window jobs exchange idleness");
        match w.combiner.set_idle(from.idx()) {
            Some(wm) => self.fire(job, wm).await,
            None => Ok(()),
        }
    }

    /// Advances the job's window operator to the combined watermark `wm` and writes what fires.
    async fn fire(&mut self, job: u16, wm: i64) -> ShardResult<()> {
        let j = &mut self.jobs[job as usize];
        let w = j.window.as_mut().expect("only window jobs fire windows");
        let mut fired = Vec::new();
        w.agg.advance_watermark(wm, &mut |b| fired.push(b));
        let graph = self.graph.clone();
        let spec = &graph.jobs[job as usize];
        spec.metrics.watermarks[self.id.idx()].store(wm, Ordering::Relaxed);
        // Under a probe: the window end of each emitted row, in runs, in emission order.
        let mut ends = w.agg.take_emitted_ends().into_iter().peekable();
        for b in fired {
            let mut rows = b.n_rows() as u64;
            self.write_sink(job, b).await?;
            let Some(p) = &spec.probe else { continue };
            let now = p.now_ns();
            while rows > 0 {
                let Some((end, n)) = ends.peek_mut() else { break };
                let take = rows.min(*n);
                p.record_window(self.id.idx(), now, *end, take);
                rows -= take;
                *n -= take;
                if *n == 0 {
                    ends.next();
                }
            }
        }
        Ok(())
    }

    async fn on_end_of_input(&mut self, job: u16, from: ShardId) -> ShardResult<()> {
        let j = &mut self.jobs[job as usize];
        let w = j.window.as_mut().expect("only window jobs exchange end-of-input");
        w.ended[from.idx()] = true;
        if w.ended.iter().all(|e| *e) {
            // Every producer sent its final watermark before its end of input, so every window has fired.
            debug_assert!(w.combiner.all_ended());
            self.finish_job(job).await?;
        }
        Ok(())
    }

    async fn finish_job(&mut self, job: u16) -> ShardResult<()> {
        self.flush_output(job).await?;
        if self.ckpt.is_some() {
            // The sinks stay open: the run's final checkpoint commits their output.
            self.jobs[job as usize].finished = true;
            return Ok(());
        }
        let graph = self.graph.clone();
        let spec = &graph.jobs[job as usize];
        let j = &mut self.jobs[job as usize];
        if let Some(sink) = j.sink.take() {
            sink.close().await.map_err(|e| format!("job {}: {e}", spec.name))?;
        }
        if let Some(dl) = j.dead_letter.take() {
            dl.close().await.map_err(|e| format!("job {} dead letters: {e}", spec.name))?;
        }
        j.finished = true;
        Ok(())
    }

    // ----- sources -----

    async fn read_sources(&mut self) -> ShardResult<bool> {
        let mut progress = false;
        for job in 0..self.jobs.len() {
            progress |= self.read_job_source(job as u16).await?;
        }
        Ok(progress)
    }

    /// Reads one batch from the job's next unfinished split; emits watermarks and the end of input.
    async fn read_job_source(&mut self, job: u16) -> ShardResult<bool> {
        let stopping = self.graph.stop.load(Ordering::Relaxed);
        if stopping && self.ckpt.is_some() {
            // Stop with a final checkpoint: nothing more is read, no window is forced to fire.
            self.jobs[job as usize].resume_at = None;
            return Ok(false);
        }
        let now_ms = self.now_ms();
        let graph = self.graph.clone();
        let spec = &graph.jobs[job as usize];
        let j = &mut self.jobs[job as usize];
        if j.input_ended {
            return Ok(false);
        }
        let mut rows = 0;
        if let Some(r) = j.resume_at {
            if Instant::now() < r && !stopping {
                return Ok(false);
            }
            j.resume_at = None;
        }
        let n_splits = j.splits.len();
        // Under a latency probe: when the rows of this read were due.
        let mut schedule = None;
        // The split gave what it had: rows waiting for the sink go out now rather than linger.
        let mut caught_up = false;
        for _ in 0..n_splits {
            let s = j.next_split;
            j.next_split = (j.next_split + 1) % n_splits;
            if j.split_done[s] {
                continue;
            }
            if stopping {
                j.split_done[s] = true;
                j.watermarks.finish(s);
                continue;
            }
            rows = match &mut j.splits[s] {
                Split::Nexmark(n) => {
                    let (allowed, wait) = n.allowance(SOURCE_BATCH_ROWS_MAX, Instant::now());
                    if let Some(w) = wait {
                        j.resume_at = Some(Instant::now() + w);
                    }
                    caught_up = allowed < SOURCE_BATCH_ROWS_MAX;
                    schedule = spec.probe.as_ref().and(n.next_read_schedule());
                    n.read(&mut j.source_rows, allowed)
                }
                Split::File(f) => f
                    .read(&mut j.source_rows, SOURCE_BATCH_ROWS_MAX, &mut j.bad)
                    .await
                    .map_err(|e| format!("source {}: {e}", spec.source.name))?,
                Split::Kinesis(k) => {
                    let rows = k
                        .read(&mut j.source_rows, SOURCE_BATCH_ROWS_MAX, &mut j.bad, now_ms)
                        .map_err(|e| format!("source {}: {e}", spec.source.name))?;
                    caught_up = rows < SOURCE_BATCH_ROWS_MAX;
                    rows
                }
            };
            if j.splits[s].is_finished() {
                j.split_done[s] = true;
                j.watermarks.finish(s);
            }
            let kinesis_time = |split: &Split| match split {
                Split::Kinesis(k) => k.event_time(now_ms, spec.source.idle_timeout_ms),
                _ => None,
            };
            if rows > 0 {
                let batch = j.source_rows.finish();
                if let Some(w) = spec.watermark {
                    if let Some(max) = max_event_time(&batch.view(), w.column) {
                        match &mut j.splits[s] {
                            // Per stream shard: the split's event time is the least over its active ones.
                            Split::Kinesis(k) => k.observe(max, now_ms),
                            _ => j.watermarks.observe(s, max, now_ms),
                        }
                    }
                    if let Some(t) = kinesis_time(&j.splits[s]) {
                        j.watermarks.observe(s, t, now_ms);
                    }
                }
                spec.metrics.records_in.fetch_add(rows as u64, Ordering::Relaxed);
                self.process_source_batch(job, &batch, schedule, caught_up).await?;
            } else if let (Some(_), Some(t)) = (spec.watermark, kinesis_time(&j.splits[s])) {
                // Nothing read, but a quiet stream shard may have gone idle: the others' time may now count.
                j.watermarks.observe(s, t, now_ms);
            }
            break;
        }
        let j = &mut self.jobs[job as usize];
        let dead_letters = j.bad.dead_letter.as_mut().filter(|d| !d.is_empty()).map(|d| d.finish());
        if let Some(dl) = dead_letters {
            self.write_dead_letters(job, dl).await?;
        }
        let j = &mut self.jobs[job as usize];
        let all_done = j.split_done.iter().all(|d| *d);
        let advanced = if spec.watermark.is_some() || all_done { j.watermarks.advance(now_ms) } else { None };
        if let Some(wm) = advanced {
            j.announced_idle = false;
            self.emit_watermark(job, wm).await?;
        } else if !all_done && !j.announced_idle && j.watermarks.is_idle(now_ms) {
            j.announced_idle = true;
            self.announce_idle(job).await?;
        }
        if all_done {
            self.end_input(job).await?;
        }
        Ok(rows > 0 || advanced.is_some())
    }

    async fn write_dead_letters(&mut self, job: u16, batch: BatchBuf) -> ShardResult<()> {
        let graph = self.graph.clone();
        let spec = &graph.jobs[job as usize];
        let j = &mut self.jobs[job as usize];
        if let Some(sink) = &mut j.dead_letter {
            sink.write(&batch.view()).await.map_err(|e| format!("source {} dead letters: {e}", spec.source.name))?;
        }
        Ok(())
    }

    /// Runs a source batch through the job: a stateless job's output waits for its sink (written at once
    /// when the batch fills or the source is `caught_up`, else after the linger); a windowed job's rows go
    /// to the shards that own their keys.
    async fn process_source_batch(
        &mut self,
        job: u16,
        batch: &BatchBuf,
        schedule: Option<ReadSchedule>,
        caught_up: bool,
    ) -> ShardResult<()> {
        let graph = self.graph.clone();
        let spec = &graph.jobs[job as usize];
        let view = batch.view();
        let now = Instant::now();
        let j = &mut self.jobs[job as usize];
        let Some(w) = j.window.as_mut() else {
            run_calc_columnar(&spec.plan.calc, &view, &mut j.out.rows, &mut j.selection);
            if let (Some(s), Some(p)) = (schedule, &spec.probe) {
                j.out_due.extend(j.selection.iter().map(|&r| s.due_ns(&p.pace, r)));
            }
            j.out.touch(now);
            if full(&j.out.rows) || caught_up {
                self.flush_output(job).await?;
            }
            return Ok(());
        };
        // Pre-aggregate projection, then route each row by its key.
        run_calc_columnar(&spec.plan.calc, &view, &mut w.staged, &mut j.selection);
        let staged = w.staged.finish();
        let sv = staged.view();
        // Partition the rows by destination shard, then copy each partition column at a time.
        let n_shards = self.graph.n_shards();
        for sel in &mut w.by_shard {
            sel.clear();
        }
        for row in 0..sv.n_rows() {
            let to = if n_shards == 1 {
                self.id
            } else {
                encode_key(&sv, row, w.n_keys, &mut w.key_buf);
                self.graph.routing.route(key_hash(&w.key_buf))
            };
            w.by_shard[to.idx()].push(row as u32);
        }
        let mut full_lanes = Vec::new();
        for (to, sel) in w.by_shard.iter().enumerate() {
            if sel.is_empty() {
                continue;
            }
            let out = &mut w.outbox[to].rows;
            for col in 0..w.types.len() {
                out.gather(col, &sv, col, sel);
            }
            out.end_rows(sel.len());
            if full(out) {
                full_lanes.push(ShardId(to as u16));
            }
        }
        for o in &mut w.outbox {
            o.touch(now);
        }
        for to in full_lanes {
            self.flush_outbox(job, to).await?;
        }
        Ok(())
    }

    /// Sends a window job's rows waiting for shard `to` (or aggregates them here, if `to` is this shard).
    async fn flush_outbox(&mut self, job: u16, to: ShardId) -> ShardResult<()> {
        let w = self.jobs[job as usize].window.as_mut().expect("window job");
        let Some(batch) = w.outbox[to.idx()].take() else { return Ok(()) };
        if to == self.id {
            return self.receive(to, Message::Batch { job, batch }).await;
        }
        self.send(to, Message::Batch { job, batch });
        Ok(())
    }

    /// Writes a stateless job's waiting output to its sink.
    async fn flush_output(&mut self, job: u16) -> ShardResult<()> {
        let Some(b) = self.jobs[job as usize].out.take() else { return Ok(()) };
        self.write_sink(job, b).await?;
        if let Some(p) = &self.graph.jobs[job as usize].probe {
            let due = &mut self.jobs[job as usize].out_due;
            p.record_due(self.id.idx(), p.now_ns(), due.drain(..));
        }
        Ok(())
    }

    /// Writes rows to the job's sink and counts them.
    async fn write_sink(&mut self, job: u16, batch: BatchBuf) -> ShardResult<()> {
        let graph = self.graph.clone();
        let spec = &graph.jobs[job as usize];
        spec.metrics.records_out.fetch_add(batch.n_rows() as u64, Ordering::Relaxed);
        let sink = self.jobs[job as usize].sink.as_mut().expect("the sink is open until the job finishes");
        sink.write(&batch.view()).await.map_err(|e| format!("job {}: {e}", spec.name))
    }

    /// Sends this shard's source watermark downstream, after the rows it covers.
    async fn emit_watermark(&mut self, job: u16, wm: i64) -> ShardResult<()> {
        if self.jobs[job as usize].window.is_none() {
            self.graph.jobs[job as usize].metrics.watermarks[self.id.idx()].store(wm, Ordering::Relaxed);
            return Ok(());
        }
        self.broadcast(job, || Message::Watermark { job, watermark: wm }).await
    }

    /// Sends a control message to every shard (this one included), after the rows waiting for each.
    async fn broadcast(&mut self, job: u16, message: impl Fn() -> Message) -> ShardResult<()> {
        for to in 0..self.graph.n_shards() {
            self.flush_outbox(job, ShardId(to as u16)).await?;
        }
        for to in 0..self.graph.n_shards() {
            let to = ShardId(to as u16);
            if to == self.id {
                self.receive(to, message()).await?;
            } else {
                self.send(to, message());
            }
        }
        Ok(())
    }

    /// Tells every shard that this shard's sources for the job are idle (after the rows already sent).
    async fn announce_idle(&mut self, job: u16) -> ShardResult<()> {
        if self.jobs[job as usize].window.is_none() {
            return Ok(());
        }
        self.broadcast(job, || Message::Idle { job }).await
    }

    async fn end_input(&mut self, job: u16) -> ShardResult<()> {
        self.jobs[job as usize].input_ended = true;
        if self.jobs[job as usize].window.is_none() {
            return self.finish_job(job).await;
        }
        // The final watermark went out when the last split finished; now the end marker, after it.
        self.broadcast(job, || Message::EndOfInput { job }).await
    }

    async fn flush_lingering(&mut self, now: Instant) -> ShardResult<()> {
        for job in 0..self.jobs.len() as u16 {
            let j = &self.jobs[job as usize];
            if j.finished {
                continue;
            }
            let expired = |p: &Pending| p.deadline().is_some_and(|d| d <= now);
            let lanes: Vec<ShardId> = j
                .window
                .iter()
                .flat_map(|w| w.outbox.iter().enumerate())
                .filter(|(_, p)| expired(p))
                .map(|(i, _)| ShardId(i as u16))
                .collect();
            let out = expired(&j.out);
            for to in lanes {
                self.flush_outbox(job, to).await?;
            }
            if out {
                self.flush_output(job).await?;
            }
        }
        Ok(())
    }
}
