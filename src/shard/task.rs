//! One shard's event loop: read the scans' splits, run each job's operator DAG (`job.rs`), move rows
//! through the exchange lanes, write the sinks, take part in checkpoints. One task per shard; nothing in it
//! blocks the executor.
//!
//! Order of work in a turn: checkpoint duties (inject a requested barrier, complete the shard's checkpoint
//! once every stage aligned, commit completed epochs); retry sends that found a lane full; drain inbound
//! lanes (a bounded number of messages each, skipping lanes held by a barrier and lanes of stages whose own
//! outputs are full); read one batch from each scan whose stage may read; flush what lingered past its
//! deadline. With no progress the task parks on its doorbell until woken or until the next deadline.
//!
//! Backpressure is per stage: a stage with a message waiting for room on any of its output lanes reads
//! neither its sources nor its input lanes. The plan is acyclic, so the stages at its end (which write only
//! to sinks) always drain, and every other stage drains in turn.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::{Effects, JobInstance, Wiring};
use super::scan::ScanReader;
use super::{JobGraph, JobSpec};
use crate::checkpoint::{AckData, CheckpointControl, OpWatermark, ShardAck};
use crate::constants::{
    EXCHANGE_DRAIN_BATCHES_MAX, SHARD_PARK_TIMEOUT_MS, SHARD_SLOW_TURN_MS, SHARD_SPIN_BEFORE_PARK_US,
    SHARD_SPIN_TO_DEADLINE_MAX_US,
};
use crate::queue::{ChannelId, Doorbell, Message, ShardId};
use crate::record::{BatchBuf, Lineage};
use crate::sink::file::FileSinkWriter;
use crate::sink::kinesis::KinesisSinkWriter;
use crate::sink::SinkWriter;
use crate::source::{dead_letter_schema, SplitState};
use crate::state::log::{BlobEncoder, CheckpointKind};
use crate::state::writer::LogWriter;

/// The error text of a shard stopped because another one failed.
pub const ABORTED: &str = "stopped because another shard failed";

type ShardResult<T> = Result<T, String>;

/// One job on this shard: its DAG instance, its scans' readers, its sink.
struct JobRun {
    inst: JobInstance,
    scans: Vec<ScanReader>,
    sink: Option<SinkWriter>,
    /// Every input ended and the sink has all its rows (its writer stays open until the final checkpoint).
    finished: bool,
}

/// Messages waiting for room on this shard's outbound lanes, per (channel, destination), in order.
struct OutLanes {
    n_shards: usize,
    queues: Vec<VecDeque<Message>>,
    waiting: usize,
}

impl OutLanes {
    fn new(n_channels: usize, n_shards: usize) -> OutLanes {
        OutLanes { n_shards, queues: (0..n_channels * n_shards).map(|_| VecDeque::new()).collect(), waiting: 0 }
    }

    fn queue(&mut self, ch: ChannelId, to: ShardId) -> &mut VecDeque<Message> {
        &mut self.queues[ch as usize * self.n_shards + to.idx()]
    }

    /// True when a message waits for room on any lane of `ch`.
    fn channel_blocked(&self, ch: ChannelId) -> bool {
        let at = ch as usize * self.n_shards;
        self.queues[at..at + self.n_shards].iter().any(|q| !q.is_empty())
    }
}

pub struct ShardTask {
    id: ShardId,
    graph: Arc<JobGraph>,
    bell: Arc<Doorbell>,
    jobs: Vec<JobRun>,
    lanes: OutLanes,
    started: Instant,
    /// Checkpointing, when configured.
    ckpt: Option<Checkpoints>,
}

/// The work that makes a sink's rows of an epoch durable (awaited before the acknowledgement).
type Roll = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), crate::sink::SinkError>>>>;

/// The checkpoint this shard is taking: injected at its sources, not yet complete on every stage.
struct InFlight {
    epoch: u64,
    enc: BlobEncoder,
    full: bool,
    /// Per job, its splits' states at the injection.
    positions: Vec<Vec<SplitState>>,
    /// Sink parts to close and sync before the acknowledgement.
    rolls: Vec<Roll>,
    injected_at: Instant,
}

/// A shard's side of checkpointing (see `checkpoint/`).
struct Checkpoints {
    ctl: Arc<CheckpointControl>,
    /// Taken by the background task that writes a checkpoint, put back when it is done.
    writer: Rc<RefCell<Option<LogWriter>>>,
    /// The newest barrier this shard injected.
    injected: u64,
    in_flight: Option<InFlight>,
    /// The newest epoch whose sink output this shard committed.
    committed: u64,
    /// This shard told the coordinator that all its jobs ended.
    finished_reported: bool,
}

fn sink_writer(
    cfg: &crate::config::SinkConfig,
    writer: &str,
    shard: usize,
    schema: &crate::record::Schema,
    epoch: Option<u64>,
) -> SinkWriter {
    let mode = crate::sink::change_mode(cfg, schema);
    match &cfg.connector {
        crate::config::SinkConnector::File { path } => {
            SinkWriter::File(Box::new(FileSinkWriter::new(path, writer, shard, schema, mode, epoch)))
        }
        crate::config::SinkConnector::Stdout => SinkWriter::stdout(schema, mode),
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
                    in_flight: None,
                    committed: epoch,
                    finished_reported: false,
                };
                (Some(ckpt), restore)
            }
        };
        let restored_epoch = ckpt.as_ref().map_or(0, |c| c.injected);
        let first_epoch = ckpt.as_ref().map(|_| restored_epoch + 1);
        let mut jobs: Vec<JobRun> = Vec::new();
        for (j, spec) in graph.jobs.iter().enumerate() {
            jobs.push(Self::job_run(&graph, spec, j as u16, id, first_epoch, restored_epoch, ckpt.is_some())?);
        }
        if let Some(r) = &restore {
            let owned = graph.routing.ranges(graph.n_shards()).swap_remove(id.idx());
            let mut insts: Vec<&mut JobInstance> = jobs.iter_mut().map(|j| &mut j.inst).collect();
            let replayed =
                super::restore::replay_owned(&r.log, id.idx(), &owned, graph.routing.key_groups(), &mut insts)
                    .map_err(|e| format!("restore: {e}"))?;
            for ((spec, job), jr) in graph.jobs.iter().zip(&mut jobs).zip(&r.jobs) {
                job.inst
                    .finish_restore(|node| jr.floors.iter().find(|(n, _)| *n == node).map(|(_, f)| f.clone()), &owned);
                for (scan, reader) in job.scans.iter_mut().enumerate() {
                    let states: Vec<SplitState> =
                        jr.sources.iter().filter(|s| s.scan as usize == scan).cloned().collect();
                    reader.restore(&states).map_err(|e| format!("job {}: restore: {e}", spec.name))?;
                }
            }
            r.log.shard_done(replayed.entries, replayed.bytes);
        }
        let n_channels = graph.n_channels;
        Ok(ShardTask {
            bell: graph.exchange.doorbell(id),
            id,
            jobs,
            lanes: OutLanes::new(n_channels, graph.n_shards()),
            graph,
            started,
            ckpt,
        })
    }

    fn job_run(
        graph: &JobGraph,
        spec: &JobSpec,
        job: u16,
        id: ShardId,
        epoch: Option<u64>,
        restored_epoch: u64,
        track_changes: bool,
    ) -> ShardResult<JobRun> {
        let wiring = Wiring {
            job,
            shard: id,
            epoch: restored_epoch,
            n_shards: graph.n_shards(),
            routing: graph.routing.clone(),
            channels: spec.channels.clone(),
            window_lineage: spec.probe.as_ref().is_some_and(|p| p.is_windowed()),
            track_changes,
        };
        let inst = JobInstance::new(&spec.plan, &wiring);
        let scans = spec
            .scans
            .iter()
            .map(|scan| {
                let dead_letter = scan.dead_letter.as_ref().map(|cfg| {
                    sink_writer(cfg, &format!("deadletter-{}", spec.name), id.idx(), &dead_letter_schema(), epoch)
                });
                ScanReader::new(scan, id.idx(), dead_letter, spec.metrics.bad_records.clone())
            })
            .collect();
        let out_schema = &spec.plan.out_schema;
        let sink = Some(match &spec.kinesis_sink {
            Some(k) => SinkWriter::Kinesis(Box::new(KinesisSinkWriter::new(
                &spec.sink.name,
                out_schema,
                crate::sink::change_mode(&spec.sink, out_schema),
                k.partition_key.clone(),
                k.to_writers[id.idx()].clone(),
                spec.metrics.bad_records.clone(),
            ))),
            None => sink_writer(&spec.sink, &spec.name, id.idx(), out_schema, epoch),
        });
        Ok(JobRun { inst, scans, sink, finished: false })
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
            if self.ckpt.is_some() && self.checkpoint_turn().await? {
                return self.close_sinks().await;
            }
            progress |= self.retry_blocked();
            progress |= self.drain_inbound().await?;
            progress |= self.read_sources().await?;
            self.timers(Instant::now()).await?;
            let all_finished = self.lanes.waiting == 0 && self.jobs.iter().all(|j| j.finished);
            match &mut self.ckpt {
                None if all_finished => return self.close_sinks().await,
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

    /// Waits for a ring or the next deadline (lingering batches, a rate-limited source's next record, an
    /// operator's processing-time timer), whichever comes first: spinning for up to
    /// `SHARD_SPIN_BEFORE_PARK_US` (a deadline within it is met to the microsecond), then parked. The time is
    /// counted as this shard's idle time.
    async fn park(&self) {
        let now = Instant::now();
        let mut deadline = now + Duration::from_millis(SHARD_PARK_TIMEOUT_MS);
        for job in &self.jobs {
            if let Some(d) = job.inst.deadline() {
                deadline = deadline.min(d);
            }
            for scan in &job.scans {
                if let Some(r) = scan.resume_at {
                    deadline = deadline.min(r);
                }
            }
            if let Some(t) = job.inst.next_processing_time() {
                let wall = wall_clock_ms();
                let at = now + Duration::from_millis(t.saturating_sub(wall).max(0) as u64);
                deadline = deadline.min(at);
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

    // ----- effects -----

    /// Performs what a job's step asked for: messages onto lanes, rows into the sink, counters.
    async fn perform(&mut self, job: usize, fx: Effects) -> ShardResult<()> {
        let graph = self.graph.clone();
        let spec = &graph.jobs[job];
        for (ch, to, msg) in fx.sends {
            self.send(ch, to, msg);
        }
        if fx.late > 0 {
            spec.metrics.late_records.fetch_add(fx.late, Ordering::Relaxed);
        }
        if let Some(wm) = fx.sink_watermark {
            spec.metrics.watermarks[self.id.idx()].store(wm, Ordering::Relaxed);
        }
        for batch in fx.writes {
            self.write_sink(job, batch).await?;
        }
        Ok(())
    }

    /// Writes rows to the job's sink and counts them (and, under a probe, their latency).
    async fn write_sink(&mut self, job: usize, batch: BatchBuf) -> ShardResult<()> {
        let graph = self.graph.clone();
        let spec = &graph.jobs[job];
        spec.metrics.records_out.fetch_add(batch.n_rows() as u64, Ordering::Relaxed);
        let sink =
            self.jobs[job].sink.as_mut().ok_or_else(|| format!("job {}: rows after the sink closed", spec.name))?;
        sink.write(&batch.view()).await.map_err(|e| format!("job {}: {e}", spec.name))?;
        if let (Some(p), Some(lineage)) = (&spec.probe, &batch.lineage) {
            let now = p.now_ns();
            match lineage.as_ref() {
                Lineage::Due(due) => p.record_due(self.id.idx(), now, due.iter().copied()),
                Lineage::WindowEnd(ends) => {
                    let mut i = 0;
                    while i < ends.len() {
                        let run = ends[i..].iter().take_while(|e| **e == ends[i]).count();
                        p.record_window(self.id.idx(), now, ends[i], run as u64);
                        i += run;
                    }
                }
            }
        }
        Ok(())
    }

    // ----- checkpoints -----

    /// Injects a requested barrier, aligns the stages that can, completes the shard's checkpoint, commits
    /// completed epochs. Returns true when the run's final checkpoint is complete and committed.
    async fn checkpoint_turn(&mut self) -> ShardResult<bool> {
        let c = self.ckpt.as_ref().expect("checkpoints are on");
        let arrived = self.jobs.iter().map(|j| j.inst.newest_barrier()).max().unwrap_or(0);
        let requested = c.ctl.requested.load(Ordering::SeqCst).max(arrived);
        if requested > c.injected && c.in_flight.is_none() {
            self.inject(requested).await?;
        }
        self.complete_if_aligned()?;
        let c = self.ckpt.as_ref().expect("checkpoints are on");
        let committable = c.ctl.committable();
        if committable > c.committed {
            self.commit(committable).await?;
        }
        let c = self.ckpt.as_ref().expect("checkpoints are on");
        let final_epoch = c.ctl.final_epoch.load(Ordering::SeqCst);
        Ok(final_epoch != 0 && c.committed >= final_epoch)
    }

    /// Barrier `epoch` at this shard's sources: records where every split is, starts the checkpoint's blob,
    /// and aligns every stage that can (stages fed only by scans, at once).
    async fn inject(&mut self, epoch: u64) -> ShardResult<()> {
        let c = self.ckpt.as_mut().expect("checkpoints are on");
        // The run's final checkpoint is always a base: the next run then restores one base, the fast path.
        let last = c.ctl.final_epoch.load(Ordering::SeqCst) == epoch;
        let full = match c.writer.borrow().as_ref() {
            Some(w) => last || w.wants_base(),
            None => return Err(format!("checkpoint {epoch}: the previous checkpoint's write has not finished")),
        };
        let positions = self
            .jobs
            .iter()
            .map(|j| j.scans.iter().enumerate().flat_map(|(i, s)| s.positions(i as u16)).collect())
            .collect();
        let kind = if full { CheckpointKind::Base } else { CheckpointKind::Delta };
        c.in_flight = Some(InFlight {
            epoch,
            enc: BlobEncoder::new(epoch, self.id.0, kind),
            full,
            positions,
            rolls: Vec::new(),
            injected_at: Instant::now(),
        });
        c.injected = epoch;
        tracing::debug!(shard = self.id.0, epoch, "barrier injected");
        for job in 0..self.jobs.len() {
            self.align_ready(job).await?;
        }
        Ok(())
    }

    /// Aligns the stages of `job` whose inputs all delivered the barrier in flight.
    async fn align_ready(&mut self, job: usize) -> ShardResult<()> {
        let Some(epoch) = self.ckpt.as_ref().and_then(|c| c.in_flight.as_ref()).map(|f| f.epoch) else {
            return Ok(());
        };
        for stage in self.jobs[job].inst.ready_stages(epoch) {
            let mut fx = Effects::default();
            let now = Instant::now();
            {
                let f = self.ckpt.as_mut().and_then(|c| c.in_flight.as_mut()).expect("in flight");
                self.jobs[job].inst.align_stage(stage, epoch, f.full, &mut f.enc, now, &mut fx);
            }
            self.perform(job, fx).await?;
            let graph = self.graph.clone();
            let spec = &graph.jobs[job];
            let mut rolls = Vec::new();
            let j = &mut self.jobs[job];
            if j.inst.stage_has_sink(stage) {
                if let Some(sink) = j.sink.as_mut() {
                    rolls.extend(sink.roll(epoch).await.map_err(|e| format!("job {}: {e}", spec.name))?);
                }
            }
            for scan in 0..j.scans.len() {
                if j.inst.scan_stage(scan) == stage {
                    if let Some(dl) = j.scans[scan].dead_letter.as_mut() {
                        rolls.extend(dl.roll(epoch).await.map_err(|e| format!("job {} dead letters: {e}", spec.name))?);
                    }
                }
            }
            let f = self.ckpt.as_mut().and_then(|c| c.in_flight.as_mut()).expect("in flight");
            f.rolls.extend(rolls);
        }
        Ok(())
    }

    /// Every stage of every job aligned the epoch in flight: the blob is complete. A spawned task writes and
    /// syncs it and the sink parts, then acknowledges.
    fn complete_if_aligned(&mut self) -> ShardResult<()> {
        let Some(epoch) = self.ckpt.as_ref().and_then(|c| c.in_flight.as_ref()).map(|f| f.epoch) else {
            return Ok(());
        };
        if !self.jobs.iter().all(|j| j.inst.all_aligned(epoch)) {
            return Ok(());
        }
        let watermarks: Vec<OpWatermark> = self
            .jobs
            .iter()
            .enumerate()
            .flat_map(|(job, j)| {
                j.inst.checkpoint_watermarks().into_iter().map(move |(node, watermark)| OpWatermark {
                    job: job as u16,
                    node,
                    watermark,
                })
            })
            .collect();
        let c = self.ckpt.as_mut().expect("checkpoints are on");
        let f = c.in_flight.take().expect("in flight");
        tracing::debug!(shard = self.id.0, epoch, "every stage aligned");
        let align = f.injected_at.elapsed();
        let encoding = Instant::now();
        let entries = f.enc.entries();
        let blob = f.enc.finish(epoch);
        let encode = encoding.elapsed();
        let kind = if f.full { CheckpointKind::Base } else { CheckpointKind::Delta };
        let (full, sources, rolls) = (f.full, f.positions, f.rolls);
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
            let dead_letters = j.scans.iter_mut().filter_map(|s| s.dead_letter.as_mut());
            for sink in j.sink.iter_mut().chain(dead_letters) {
                sink.commit(epoch).await.map_err(|e| format!("job {}: {e}", spec.name))?;
            }
        }
        self.ckpt.as_mut().expect("checkpoints are on").committed = epoch;
        Ok(())
    }

    /// The run is over (final checkpoint committed, or every input ended without checkpoints): releases the
    /// sinks.
    async fn close_sinks(&mut self) -> ShardResult<()> {
        let graph = self.graph.clone();
        for (j, spec) in self.jobs.iter_mut().zip(&graph.jobs) {
            let dead_letters = j.scans.iter_mut().filter_map(|s| s.dead_letter.take());
            for sink in j.sink.take().into_iter().chain(dead_letters.collect::<Vec<_>>()) {
                sink.close().await.map_err(|e| format!("job {}: {e}", spec.name))?;
            }
            j.finished = true;
        }
        Ok(())
    }

    // ----- exchange -----

    fn send(&mut self, ch: ChannelId, to: ShardId, msg: Message) {
        let q = self.lanes.queue(ch, to);
        if !q.is_empty() {
            q.push_back(msg);
            self.lanes.waiting += 1;
            return;
        }
        if let Err(msg) = self.graph.exchange.try_send(ch, self.id, to, msg) {
            self.lanes.queue(ch, to).push_back(msg);
            self.lanes.waiting += 1;
        }
    }

    fn retry_blocked(&mut self) -> bool {
        if self.lanes.waiting == 0 {
            return false;
        }
        let mut progress = false;
        let n = self.lanes.n_shards;
        for i in 0..self.lanes.queues.len() {
            let (ch, to) = ((i / n) as ChannelId, ShardId((i % n) as u16));
            while let Some(msg) = self.lanes.queues[i].pop_front() {
                match self.graph.exchange.try_send(ch, self.id, to, msg) {
                    Ok(()) => {
                        self.lanes.waiting -= 1;
                        progress = true;
                    }
                    Err(msg) => {
                        self.lanes.queues[i].push_front(msg);
                        break;
                    }
                }
            }
        }
        progress
    }

    /// True when a stage of a job has a message waiting for room on one of its output lanes.
    fn stage_blocked(&self, job: usize, stage: usize) -> bool {
        self.lanes.waiting > 0 && self.jobs[job].inst.stage_out_channels(stage).any(|ch| self.lanes.channel_blocked(ch))
    }

    async fn drain_inbound(&mut self) -> ShardResult<bool> {
        let mut progress = false;
        for job in 0..self.jobs.len() {
            for k in 0..self.jobs[job].inst.ins.len() {
                let (ch, stage) = (self.jobs[job].inst.ins[k].id, self.jobs[job].inst.ins[k].stage);
                for from in 0..self.graph.n_shards() {
                    let from = ShardId(from as u16);
                    for _ in 0..EXCHANGE_DRAIN_BATCHES_MAX {
                        if self.jobs[job].inst.lane_blocked(k, from) || self.stage_blocked(job, stage) {
                            break;
                        }
                        let Some(msg) = self.graph.exchange.try_recv(ch, from, self.id) else { break };
                        progress = true;
                        let barrier = matches!(msg, Message::Barrier(_));
                        let mut fx = Effects::default();
                        self.jobs[job].inst.on_message(k, from, msg, Instant::now(), &mut fx);
                        self.perform(job, fx).await?;
                        if barrier {
                            if self.ckpt.is_none() {
                                return Err("a checkpoint barrier arrived, but checkpoints are off".into());
                            }
                            self.align_ready(job).await?;
                        }
                    }
                }
            }
            self.check_finished(job);
        }
        Ok(progress)
    }

    fn check_finished(&mut self, job: usize) {
        let j = &mut self.jobs[job];
        if j.inst.finished && !j.finished {
            j.finished = true;
        }
    }

    // ----- sources -----

    async fn read_sources(&mut self) -> ShardResult<bool> {
        let stopping = self.graph.stop.load(Ordering::Relaxed);
        let held = self.ckpt.as_ref().is_some_and(|c| c.ctl.held.load(Ordering::Relaxed));
        if (stopping && self.ckpt.is_some()) || held {
            // Stop with a final checkpoint: nothing more is read, no window is forced to fire.
            for j in &mut self.jobs {
                for s in &mut j.scans {
                    s.resume_at = None;
                }
            }
            return Ok(false);
        }
        let injected = self.ckpt.as_ref().map_or(0, |c| c.injected);
        let now_ms = self.now_ms();
        let graph = self.graph.clone();
        let mut progress = false;
        for job in 0..self.jobs.len() {
            let spec = &graph.jobs[job];
            for scan in 0..self.jobs[job].scans.len() {
                let stage = self.jobs[job].inst.scan_stage(scan);
                // Held by the barrier until its stage aligned, or by a full lane of its stage.
                if self.jobs[job].inst.stage_aligned(stage) < injected || self.stage_blocked(job, stage) {
                    continue;
                }
                let read = self.jobs[job].scans[scan].read(now_ms, stopping, spec.probe.as_deref()).await?;
                progress |= read.batch.is_some() || read.watermark.is_some();
                if let Some(dl) = read.dead_letters {
                    let j = &mut self.jobs[job];
                    if let Some(sink) = j.scans[scan].dead_letter.as_mut() {
                        sink.write(&dl.view())
                            .await
                            .map_err(|e| format!("source {} dead letters: {e}", j.scans[scan].name))?;
                    }
                }
                let now = Instant::now();
                let mut fx = Effects::default();
                let inst = &mut self.jobs[job].inst;
                if let Some((batch, caught_up)) = read.batch {
                    spec.metrics.records_in.fetch_add(batch.n_rows() as u64, Ordering::Relaxed);
                    inst.scan_batch(scan, batch, caught_up, now, &mut fx);
                }
                if let Some(wm) = read.watermark {
                    inst.scan_watermark(scan, wm, now, &mut fx);
                } else if read.idle {
                    inst.scan_idle(scan, now, &mut fx);
                }
                if read.ended {
                    inst.scan_end(scan, now, &mut fx);
                }
                self.perform(job, fx).await?;
                self.check_finished(job);
            }
        }
        Ok(progress)
    }

    /// Lingering rows past their deadline, and operators' processing-time work.
    async fn timers(&mut self, now: Instant) -> ShardResult<()> {
        let mut wall = None;
        for job in 0..self.jobs.len() {
            let mut fx = Effects::default();
            self.jobs[job].inst.flush_expired(now, &mut fx);
            if let Some(t) = self.jobs[job].inst.next_processing_time() {
                let w = *wall.get_or_insert_with(wall_clock_ms);
                if t <= w {
                    self.jobs[job].inst.on_processing_time(w, now, &mut fx);
                }
            }
            if !fx.is_empty() || fx.sink_watermark.is_some() {
                self.perform(job, fx).await?;
            }
        }
        Ok(())
    }
}

/// Wall-clock milliseconds since the epoch (processing time).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
