//! Shards: one glommio executor per core, pinned, each running one [`task::ShardTask`] that owns its splits
//! (`scan.rs`), its instance of every job's operator DAG (`job.rs`) and its sink writers.
//!
//! Invariant: this module is the only one that creates executor threads.

pub mod job;
pub mod restore;
pub mod routing;
pub mod scan;
pub mod task;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{NexmarkConfig, SinkConfig, SourceConfig};
use crate::constants::{SHARD_PREEMPT_TIMER_MS, SHARD_SPIN_BEFORE_PARK_US};
use crate::metrics::JobMetrics;
use crate::queue::{ChannelId, Exchange, ShardId};
use crate::sql::{JobPlan, WatermarkSpec};
use routing::RoutingTable;

/// Where one split of a source comes from.
#[derive(Debug, Clone)]
pub enum SplitSpec {
    /// Split `split` of `n_splits` of a nexmark stream.
    Nexmark {
        split: u64,
        n_splits: u64,
    },
    File(PathBuf),
    /// The stream shards of a Kinesis stream that the control thread gives this shard, through `rx`.
    Kinesis {
        stream: String,
        rx: crossbeam_channel::Receiver<crate::kinesis::FromKinesis>,
    },
}

/// Everything a shard needs to run one job.
pub struct JobSpec {
    pub name: String,
    pub plan: JobPlan,
    /// One per scan node of the plan, in the plan's order.
    pub scans: Vec<ScanSpec>,
    pub sink: SinkConfig,
    pub metrics: Arc<JobMetrics>,
    /// With a Kinesis sink: the partition key over the output row, and per shard the channel to its writer.
    pub kinesis_sink: Option<KinesisSinkSpec>,
    /// The exchange channel of each hash edge of the plan: ((consumer node, input port), channel).
    pub channels: Vec<((usize, usize), ChannelId)>,
    /// Under `shardflow bench`: where the shards record each output row's latency.
    pub probe: Option<Arc<crate::metrics::latency::LatencyProbe>>,
}

/// One source a job reads, and how its splits are spread over the shards.
pub struct ScanSpec {
    pub source: SourceConfig,
    pub watermark: Option<WatermarkSpec>,
    pub dead_letter: Option<SinkConfig>,
    /// The splits, per shard.
    pub splits: Vec<Vec<SplitSpec>>,
    pub nexmark_tables: Option<Arc<crate::source::nexmark::gen::Tables>>,
    /// A rate-limited nexmark source's schedule, shared by its splits.
    pub pace: Option<Arc<crate::source::nexmark::Pace>>,
    /// The source columns the job reads (a generator leaves the others empty).
    pub used: Vec<bool>,
}

pub struct KinesisSinkSpec {
    pub partition_key: crate::sql::expr::Expr,
    pub to_writers: Vec<tokio::sync::mpsc::Sender<crate::kinesis::sink::ToKinesis>>,
}

impl ScanSpec {
    pub fn nexmark(&self) -> Option<&NexmarkConfig> {
        match &self.source.connector {
            crate::config::SourceConnector::Nexmark(n) => Some(n),
            _ => None,
        }
    }
}

impl JobSpec {
    /// The schedule of the job's first rate-limited scan, if any.
    pub fn pace(&self) -> Option<&Arc<crate::source::nexmark::Pace>> {
        self.scans.iter().find_map(|s| s.pace.as_ref())
    }
}

/// The running jobs, shared read-only by every shard.
pub struct JobGraph {
    pub cpus: Vec<usize>,
    pub routing: Arc<RoutingTable>,
    pub exchange: Arc<Exchange>,
    /// Exchange channels over all jobs (one per hash edge).
    pub n_channels: usize,
    pub jobs: Vec<JobSpec>,
    /// Set when a shard fails, or when the process is asked to stop; every shard watches it.
    pub abort: AtomicBool,
    pub stop: &'static AtomicBool,
    /// Checkpointing, when `[checkpoint]` is configured.
    pub checkpoints: Option<Arc<crate::checkpoint::CheckpointControl>>,
    /// Each running shard's thread, for [`JobGraph::kick_all`].
    pub threads: std::sync::Mutex<Vec<Option<libc::pthread_t>>>,
    /// Per shard, nanoseconds spent waiting for work (spinning or parked): busy time is the rest.
    pub idle_ns: Vec<std::sync::atomic::AtomicU64>,
    /// Per shard, its loop turns that took longer than `SHARD_SLOW_TURN_MS`.
    pub slow_turns: Vec<SlowTurns>,
}

/// A shard's slow loop turns: turns that kept it from its input (CPU work, or waiting on its own I/O) longer
/// than `SHARD_SLOW_TURN_MS`. Counted by the shard itself at the end of each turn: a clock read, where
/// glommio's stall detector interrupts the thread and captures a backtrace (milliseconds) per report.
#[derive(Debug, Default)]
pub struct SlowTurns {
    pub count: std::sync::atomic::AtomicU64,
    pub longest_ns: std::sync::atomic::AtomicU64,
}

impl SlowTurns {
    pub fn record(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.longest_ns.fetch_max(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// (count, longest) so far.
    pub fn read(&self) -> (u64, Duration) {
        (self.count.load(Ordering::Relaxed), Duration::from_nanos(self.longest_ns.load(Ordering::Relaxed)))
    }
}

impl JobGraph {
    pub fn n_shards(&self) -> usize {
        self.cpus.len()
    }

    /// Stops every shard after a failure: each exits at its next loop turn.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        self.ring_all();
    }

    /// Interrupts every running shard's thread with [`WAKE_SIGNAL`]: a shard asleep in the kernel wakes
    /// (EINTR) and looks at its work again. The watchdog's remedy for an executor that missed its wake-ups
    /// (seen, rarely, on a virtual machine whose timers stalled); harmless to a shard that is awake.
    pub fn kick_all(&self) {
        for t in self.threads.lock().expect("shard threads lock").iter().flatten() {
            // SAFETY: `t` is a live shard thread: a shard clears its entry before its thread ends.
            unsafe { libc::pthread_kill(*t, WAKE_SIGNAL) };
        }
    }

    /// Wakes every shard (a checkpoint was requested or completed, or the run stops).
    pub fn ring_all(&self) {
        for s in 0..self.n_shards() {
            self.exchange.doorbell(ShardId(s as u16)).ring();
        }
    }
}

/// The signal [`JobGraph::kick_all`] sends: one nothing else uses, whose default is to be ignored.
pub const WAKE_SIGNAL: i32 = libc::SIGURG;

extern "C" fn on_wake_signal(_: i32) {}

/// Runs every shard to completion; returns the first failure.
pub fn run(graph: Arc<JobGraph>) -> Result<(), String> {
    // A handler that does nothing, installed without SA_RESTART: the signal only interrupts a blocking call.
    // SAFETY: sigaction with a zeroed struct, an empty mask and a handler that touches nothing.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_wake_signal as extern "C" fn(i32) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut());
    }
    *graph.threads.lock().expect("shard threads lock") = vec![None; graph.n_shards()];
    let mut handles = Vec::new();
    for (idx, cpu) in graph.cpus.iter().copied().enumerate() {
        let g = graph.clone();
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{idx}"))
            .spin_before_park(Duration::from_micros(SHARD_SPIN_BEFORE_PARK_US))
            .preempt_timer(Duration::from_millis(SHARD_PREEMPT_TIMER_MS));
        let handle = builder
            .spawn(move || async move {
                // SAFETY: plain libc calls on this thread's own id and signal mask.
                unsafe {
                    g.threads.lock().expect("shard threads lock")[idx] = Some(libc::pthread_self());
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, WAKE_SIGNAL);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                }
                let task = task::ShardTask::new(g.clone(), ShardId(idx as u16));
                let result = match task {
                    Ok(t) => t.run().await,
                    Err(e) => Err(e),
                };
                if result.is_err() {
                    g.abort();
                }
                g.threads.lock().expect("shard threads lock")[idx] = None;
                result
            })
            .map_err(|e| format!("cannot start shard {idx} on CPU {cpu}: {e}"))?;
        handles.push(handle);
    }
    let mut first_error = None;
    for (idx, h) in handles.into_iter().enumerate() {
        let result = h.join().map_err(|e| format!("shard {idx} failed: {e}")).and_then(|r| r);
        if let Err(e) = result {
            // A shard stopped by another's failure reports "aborted"; keep the original cause.
            if first_error.is_none() || first_error.as_deref().is_some_and(|f: &str| f.contains(task::ABORTED)) {
                first_error = Some(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
