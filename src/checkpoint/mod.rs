//! Checkpoints: aligned barriers (Flink's asynchronous barrier snapshotting), coordinated from the control
//! thread.
//!
//! Epoch N begins when the coordinator raises [`CheckpointControl::requested`] and rings every shard. A shard
//! *injects* the barrier between two source reads: it records its splits' positions, sends what it holds for
//! other shards, then a `Barrier` on every lane. It *aligns*: a lane whose barrier has arrived is not read
//! further (its later rows belong to the next epoch), and the shard reads no source, until every lane's
//! barrier is in. Then it encodes its state's delta into a blob (in memory, the only work on the data path),
//! rolls its sink parts, and goes on; a background task writes and syncs the blob and the parts, then
//! acknowledges. When every shard has acknowledged, the coordinator writes the manifest (`manifest.rs`):
//! the checkpoint is complete, shards commit the epoch's sink parts, and old checkpoints are deleted.
//!
//! Invariant: a manifest only ever names log bytes and sink parts that were synced before it was written, and
//! sink output becomes visible only after the manifest of its epoch is durable.

pub mod manifest;
pub mod recovery;
pub mod savepoint;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::constants::CHECKPOINTS_RETAINED;
use crate::mirror::MirrorProgress;
use crate::source::SplitState;
use crate::state::log::SegmentRange;
use crate::state::{parse_segment_name, LOG_DIR};
pub use manifest::OpWatermark;
use manifest::{list_manifests, read_manifest, write_manifest, Binding, Manifest, RunState, ShardEntry, MANIFEST_DIR};

/// What the coordinator and the shards share.
pub struct CheckpointControl {
    pub interval: Duration,
    pub state_dir: PathBuf,
    /// The newest epoch the coordinator asked for.
    pub requested: AtomicU64,
    /// The newest epoch whose manifest is durable.
    pub completed: AtomicU64,
    /// Nonzero: the run ends with this epoch; shards exit once it is complete and committed.
    pub final_epoch: AtomicU64,
    /// Shards whose jobs have all ended (bounded inputs), waiting for the final checkpoint.
    pub finished_shards: AtomicUsize,
    pub acks: Sender<ShardAck>,
    /// What each shard restores at start (taken by the shard).
    pub restore: Mutex<Vec<Option<ShardRestore>>>,
    /// With a mirror: how far it got (sink output waits for it).
    pub mirror: Option<Arc<MirrorProgress>>,
    /// Set while the mirror's backlog is past its limit: shards read no source (backpressure).
    pub held: AtomicBool,
}

impl CheckpointControl {
    /// The newest epoch whose sink output may be committed: complete, and mirrored when there is a mirror
    /// (a job resumed from the mirror must never find output committed past the checkpoint it resumes from).
    pub fn committable(&self) -> u64 {
        let completed = self.completed.load(Ordering::SeqCst);
        match &self.mirror {
            None => completed,
            Some(m) => completed.min(m.mirrored.load(Ordering::SeqCst)),
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join(LOG_DIR)
    }
}

/// A shard's answer to a barrier: its part of the checkpoint, durable.
pub struct ShardAck {
    pub shard: u16,
    pub epoch: u64,
    pub result: Result<AckData, String>,
}

pub struct AckData {
    pub log: Vec<SegmentRange>,
    /// Per job, the state of each of this shard's splits at the barrier.
    pub sources: Vec<Vec<SplitState>>,
    /// The stateful operators' watermarks (what they had fired up to).
    pub watermarks: Vec<OpWatermark>,
    pub key_groups: Vec<u16>,
    pub bytes: u64,
    pub entries: u64,
    pub base: bool,
    /// From the barrier's injection to the end of alignment.
    pub align: Duration,
    /// Encoding the state at the barrier (the data path's pause beyond alignment).
    pub encode: Duration,
}

/// What one shard restores at start.
#[derive(Debug)]
pub struct ShardRestore {
    pub epoch: u64,
    /// Per job.
    pub jobs: Vec<JobRestore>,
    /// The checkpoint's state logs, shared by every shard: each replays the key groups it owns, in parallel.
    pub log: Arc<LogToRestore>,
}

#[derive(Debug, Default)]
pub struct JobRestore {
    /// Per stateful operator (node), per key group, the watermark the instance that owned it had fired up to.
    pub floors: Vec<(u16, Vec<i64>)>,
    /// Every split of the job, as checkpointed (each tagged with its scan); each shard picks its own.
    pub sources: Vec<SplitState>,
}

/// The logs of a checkpoint to restore, and the restore's progress over the shards replaying them.
#[derive(Debug)]
pub struct LogToRestore {
    pub epoch: u64,
    /// The directory the ranges' segment files are in.
    pub log_dir: PathBuf,
    /// The shards of the checkpoint: each one's log ranges and the key groups it owned.
    pub shards: Vec<ShardEntry>,
    /// Where the checkpoint came from (state directory or savepoint), for the report.
    pub from: PathBuf,
    pub started: Instant,
    /// Shards still replaying; the last one to finish reports the restore.
    pub pending: AtomicUsize,
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
}

impl LogToRestore {
    /// Adds one shard's share; the last shard to finish logs the whole restore.
    pub fn shard_done(&self, entries: u64, bytes: u64) {
        self.entries.fetch_add(entries, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::info!(
                "restored checkpoint {} from {}: {} state entries, {} bytes of log read in {:.1} ms",
                self.epoch,
                self.from.display(),
                self.entries.load(Ordering::Relaxed),
                self.bytes.load(Ordering::Relaxed),
                self.started.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

/// Per-checkpoint numbers, kept for the final report and the benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointStats {
    pub epoch: u64,
    pub duration: Duration,
    pub align_max: Duration,
    pub encode_max: Duration,
    pub bytes: u64,
    pub entries: u64,
    pub bases: usize,
}

struct InFlight {
    epoch: u64,
    run: RunState,
    started: Instant,
    acks: Vec<Option<AckData>>,
}

/// Starts checkpoints on time, gathers acknowledgements, writes manifests, deletes what no retained
/// checkpoint needs. Runs on the control thread.
pub struct Coordinator {
    ctl: Arc<CheckpointControl>,
    acks: Receiver<ShardAck>,
    n_shards: usize,
    binding: Binding,
    next_epoch: u64,
    next_due: Instant,
    in_flight: Option<InFlight>,
    /// The run's final checkpoint was started.
    ending: bool,
    /// Epochs of the manifests kept, oldest first.
    retained: VecDeque<u64>,
    pub history: Vec<CheckpointStats>,
}

impl Coordinator {
    /// `last_epoch` is the epoch restored from (0 for a fresh start): epochs continue after it.
    pub fn new(
        ctl: Arc<CheckpointControl>,
        acks: Receiver<ShardAck>,
        n_shards: usize,
        binding: Binding,
        last_epoch: u64,
    ) -> Result<Coordinator, String> {
        let mut retained: Vec<u64> = list_manifests(&ctl.state_dir.join(MANIFEST_DIR))?;
        retained.reverse();
        ctl.completed.store(last_epoch, Ordering::SeqCst);
        ctl.requested.store(last_epoch, Ordering::SeqCst);
        Ok(Coordinator {
            next_due: Instant::now() + ctl.interval,
            ctl,
            acks,
            n_shards,
            binding,
            next_epoch: last_epoch + 1,
            in_flight: None,
            ending: false,
            retained: retained.into(),
            history: Vec::new(),
        })
    }

    /// The periodic report's line: the newest completed checkpoint.
    pub fn report_line(&self) -> Option<String> {
        let last = self.history.last()?;
        Some(format!(
            "checkpoints: last completed epoch {} ({:.1} ms, alignment {:.1} ms, {} bytes), {} completed this run",
            last.epoch,
            last.duration.as_secs_f64() * 1e3,
            last.align_max.as_secs_f64() * 1e3,
            last.bytes,
            self.history.len()
        ))
    }

    /// One line on the checkpoints of this run: count, duration percentiles, alignment, bytes.
    pub fn summary(&self) -> Option<String> {
        if self.history.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = self.history.iter().map(|s| s.duration.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        let n = self.history.len() as f64;
        let align = self.history.iter().map(|s| s.align_max.as_secs_f64() * 1e3).fold(0.0, f64::max);
        let encode = self.history.iter().map(|s| s.encode_max.as_secs_f64() * 1e3).fold(0.0, f64::max);
        let bytes = self.history.iter().map(|s| s.bytes as f64).sum::<f64>() / n;
        let entries = self.history.iter().map(|s| s.entries as f64).sum::<f64>() / n;
        Some(format!(
            "checkpoints: {} completed, last epoch {}; duration p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; alignment max {:.1} ms; state encoding max {:.1} ms; mean {:.0} entries, {:.0} bytes per checkpoint",
            self.history.len(),
            self.history.last().map_or(0, |s| s.epoch),
            pct(0.5),
            pct(0.99),
            ms[ms.len() - 1],
            align,
            encode,
            entries,
            bytes
        ))
    }

    /// Bytes of state log the checkpoints completed after `epoch` wrote in this run.
    pub fn log_bytes_after(&self, epoch: u64) -> u64 {
        self.history.iter().rev().take_while(|s| s.epoch > epoch).map(|s| s.bytes).sum()
    }

    /// The checkpoint in flight and how long since it started.
    pub fn in_flight_for(&self, now: Instant) -> Option<(u64, Duration)> {
        self.in_flight.as_ref().map(|f| (f.epoch, now.saturating_duration_since(f.started)))
    }

    pub fn acks(&self) -> &Receiver<ShardAck> {
        &self.acks
    }

    /// How long the control thread may sleep before [`Self::tick`] has something to do.
    pub fn due_in(&self, now: Instant) -> Duration {
        if self.in_flight.is_some() || self.ending {
            return Duration::from_millis(50);
        }
        self.next_due.saturating_duration_since(now).min(Duration::from_millis(50))
    }

    /// Starts a checkpoint when one is due, or the final one when the run ends (`stopping`: a signal asked
    /// for it; or every shard's inputs ended). `ring` wakes every shard.
    pub fn tick(&mut self, now: Instant, stopping: bool, ring: &dyn Fn()) {
        if self.in_flight.is_some() || self.ending {
            return;
        }
        let finished = self.ctl.finished_shards.load(Ordering::SeqCst) == self.n_shards;
        let run = if finished {
            RunState::Finished
        } else if stopping {
            RunState::Stopped
        } else if now >= self.next_due {
            RunState::Running
        } else {
            return;
        };
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        if run != RunState::Running {
            self.ending = true;
            self.ctl.final_epoch.store(epoch, Ordering::SeqCst);
        }
        self.ctl.requested.store(epoch, Ordering::SeqCst);
        self.in_flight = Some(InFlight { epoch, run, started: now, acks: (0..self.n_shards).map(|_| None).collect() });
        tracing::debug!(epoch, "checkpoint started");
        ring();
    }

    /// Takes one shard's acknowledgement; completes the checkpoint when it is the last.
    pub fn on_ack(&mut self, ack: ShardAck, ring: &dyn Fn()) -> Result<(), String> {
        let data = ack.result.map_err(|e| format!("checkpoint {} failed on shard {}: {e}", ack.epoch, ack.shard))?;
        let Some(f) = &mut self.in_flight else {
            return Err(format!("shard {} acknowledged checkpoint {} that is not in flight", ack.shard, ack.epoch));
        };
        if f.epoch != ack.epoch {
            return Err(format!("shard {} acknowledged checkpoint {}, {} is in flight", ack.shard, ack.epoch, f.epoch));
        }
        f.acks[ack.shard as usize] = Some(data);
        if f.acks.iter().all(Option::is_some) {
            let f = self.in_flight.take().expect("checked above");
            self.complete(f, ring)?;
        }
        Ok(())
    }

    fn complete(&mut self, f: InFlight, ring: &dyn Fn()) -> Result<(), String> {
        let acks: Vec<AckData> = f.acks.into_iter().map(|a| a.expect("all present")).collect();
        let n_jobs = self.binding.jobs.len();
        let mut sources = vec![Vec::new(); n_jobs];
        for a in &acks {
            for (job, splits) in a.sources.iter().enumerate() {
                sources[job].extend(splits.iter().cloned());
            }
        }
        let shards = acks
            .iter()
            .enumerate()
            .map(|(i, a)| ShardEntry {
                shard: i as u16,
                log: a.log.clone(),
                key_groups: a.key_groups.clone(),
                watermarks: a.watermarks.clone(),
            })
            .collect();
        let completed_at_ms =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let manifest =
            Manifest { epoch: f.epoch, run: f.run, completed_at_ms, binding: self.binding.clone(), shards, sources };
        let dir = self.ctl.state_dir.join(MANIFEST_DIR);
        write_manifest(&dir, &manifest)?;
        self.ctl.completed.store(f.epoch, Ordering::SeqCst);
        ring();
        let stats = CheckpointStats {
            epoch: f.epoch,
            duration: f.started.elapsed(),
            align_max: acks.iter().map(|a| a.align).max().unwrap_or_default(),
            encode_max: acks.iter().map(|a| a.encode).max().unwrap_or_default(),
            bytes: acks.iter().map(|a| a.bytes).sum(),
            entries: acks.iter().map(|a| a.entries).sum(),
            bases: acks.iter().filter(|a| a.base).count(),
        };
        tracing::info!(
            "checkpoint {} complete in {:.1} ms (alignment {:.1} ms, state encoding {:.1} ms): {} entries, {} bytes, {} of {} shard(s) wrote a base{}",
            stats.epoch,
            stats.duration.as_secs_f64() * 1e3,
            stats.align_max.as_secs_f64() * 1e3,
            stats.encode_max.as_secs_f64() * 1e3,
            stats.entries,
            stats.bytes,
            stats.bases,
            self.n_shards,
            match f.run {
                RunState::Running => "",
                RunState::Stopped => " (final: stopped)",
                RunState::Finished => " (final: input finished)",
            }
        );
        self.history.push(stats);
        self.next_due = Instant::now() + self.ctl.interval;
        self.retained.push_back(f.epoch);
        self.collect_garbage(&dir, &manifest);
        Ok(())
    }

    /// Deletes manifests beyond the retained count and log segments no retained manifest names. Failures
    /// only cost disk space: they are logged, not fatal.
    fn collect_garbage(&mut self, dir: &Path, newest: &Manifest) {
        while self.retained.len() > CHECKPOINTS_RETAINED {
            let old = self.retained.pop_front().expect("non-empty");
            let path = dir.join(manifest::manifest_name(old));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot delete old checkpoint manifest {}: {e}", path.display());
            }
        }
        let mut needed: BTreeSet<String> =
            newest.shards.iter().flat_map(|s| s.log.iter().map(|r| r.file.clone())).collect();
        for &epoch in &self.retained {
            if epoch == newest.epoch {
                continue;
            }
            match read_manifest(dir, epoch) {
                Ok(m) => needed.extend(m.shards.iter().flat_map(|s| s.log.iter().map(|r| r.file.clone()))),
                Err(e) => {
                    tracing::warn!("not deleting old log segments: {e}");
                    return;
                }
            }
        }
        let log_dir = self.ctl.log_dir();
        let Ok(entries) = std::fs::read_dir(&log_dir) else { return };
        // Between two checkpoints no shard is writing: every segment of this run is named by the newest
        // manifest or superseded.
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if parse_segment_name(&name).is_none() || needed.contains(&name) {
                continue;
            }
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!("cannot delete log segment {}: {e}", entry.path().display());
            }
        }
    }
}
