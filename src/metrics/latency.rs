//! Latency probes for `shardflow bench`: where a job's shards record, per output row, how long after its
//! input was due the row reached the sink.
//!
//! Latency is counted from each record's *scheduled* send time (the nexmark source's [`Pace`]), not from
//! when it was generated: a record the engine could only generate late still counts from when it was due,
//! so a stalled engine cannot hide its stall (no coordinated omission).
//! - Stateless jobs: ingest → emit, per output row: the time its sink write returned minus its input bid's
//!   due time.
//! - Windowed jobs: watermark → window emit, per result row: the time its sink write returned minus the due
//!   time of the bid that let the watermark pass the window's end (the first bid, on every split, whose event
//!   time minus the watermark delay reaches `end - 1`).
//!
//! Only rows whose due time falls in the measured interval (after the warm-up) are counted. Each shard
//! records into its own histogram behind its own lock; the bench's thread swaps a spare in (a pointer swap
//! under the lock) and merges outside it, so reading never holds a shard up.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::constants::LATENCY_MAX_NS;
use crate::source::nexmark::gen::BASE_TIME_MS;
use crate::source::nexmark::Pace;

/// Nanosecond latencies, 3 significant digits, from 1 ns to [`LATENCY_MAX_NS`].
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

/// How a windowed job's event time maps to the schedule.
#[derive(Debug, Clone, Copy)]
pub struct WindowClock {
    /// Bids per event-time second (the nexmark source's `event_rate`).
    pub event_rate: u64,
    /// The watermark's delay behind the largest event time.
    pub delay_ms: i64,
    /// Splits of the source: the watermark passes once every split has passed.
    pub splits: u64,
}

/// One job's probe.
pub struct LatencyProbe {
    pub pace: Arc<Pace>,
    /// Rows due in `[from_ns, to_ns)` after the pace's start are measured.
    from_ns: u64,
    to_ns: u64,
    /// Set for windowed jobs.
    windows: Option<WindowClock>,
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl LatencyProbe {
    pub fn new(pace: Arc<Pace>, from_ns: u64, to_ns: u64, windows: Option<WindowClock>, shards: usize) -> Self {
        let shards = (0..shards).map(|_| Mutex::new(new_histogram())).collect();
        LatencyProbe { pace, from_ns, to_ns, windows, shards }
    }

    pub fn is_windowed(&self) -> bool {
        self.windows.is_some()
    }

    /// Nanoseconds since the schedule's start (0 before it started).
    pub fn now_ns(&self) -> u64 {
        self.pace.started().map_or(0, |s| Instant::now().saturating_duration_since(s).as_nanos() as u64)
    }

    /// Records rows written at `emitted_ns`, given their due times.
    pub fn record_due(&self, shard: usize, emitted_ns: u64, due: impl IntoIterator<Item = u64>) {
        let mut h = self.shards[shard].lock().expect("latency histogram lock");
        for d in due {
            if (self.from_ns..self.to_ns).contains(&d) {
                h.saturating_record(emitted_ns.saturating_sub(d).max(1));
            }
        }
    }

    /// The due time of the bid that lets the watermark pass window end `end`: the first bid whose event
    /// time minus the delay reaches `end - 1`, then one bid more per further split (split j makes the bids
    /// j, j + splits, ...: the last split to pass is at most `splits - 1` bids later).
    pub fn window_due_ns(&self, end: i64) -> Option<u64> {
        let w = self.windows?;
        let ms = (end - 1).saturating_add(w.delay_ms).saturating_sub(BASE_TIME_MS);
        // dateTime(b) = BASE + floor(b * 1000 / event_rate) >= BASE + ms  <=>  b >= ms * event_rate / 1000.
        let first = (ms.max(0) as u128 * u128::from(w.event_rate.max(1))).div_ceil(1000);
        let bid = u64::try_from(first).unwrap_or(u64::MAX).saturating_add(w.splits.saturating_sub(1));
        Some(self.pace.due_ns(bid))
    }

    /// Records `rows` result rows of windows ending at `end`, written at `emitted_ns`.
    pub fn record_window(&self, shard: usize, emitted_ns: u64, end: i64, rows: u64) {
        let Some(due) = self.window_due_ns(end) else { return };
        if (self.from_ns..self.to_ns).contains(&due) {
            let mut h = self.shards[shard].lock().expect("latency histogram lock");
            let _ = h.record_n(emitted_ns.saturating_sub(due).clamp(1, LATENCY_MAX_NS), rows);
        }
    }

    /// Moves what every shard recorded since the last call into `into`; `spare` is an empty histogram
    /// swapped in for each shard (and left empty again).
    pub fn drain(&self, into: &mut Histogram<u64>, spare: &mut Histogram<u64>) {
        for shard in &self.shards {
            std::mem::swap(&mut *shard.lock().expect("latency histogram lock"), spare);
            into.add(&*spare).expect("histograms of one configuration");
            spare.reset();
        }
    }
}
