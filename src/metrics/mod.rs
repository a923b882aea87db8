//! Counters shared between shards and the reporter: per job, records in and out, bad and late records,
//! and each shard's current watermark. Shards only add (relaxed atomics, no locks); the control thread reads.

pub mod latency;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::record::timestamp::format_timestamp;
use crate::time::WATERMARK_END;

#[derive(Debug)]
pub struct JobMetrics {
    pub name: String,
    pub source: String,
    pub sink: String,
    pub records_in: AtomicU64,
    pub bad_records: std::sync::Arc<AtomicU64>,
    pub late_records: AtomicU64,
    pub records_out: AtomicU64,
    /// Each shard's event time for this job (i64::MIN before the first watermark).
    pub watermarks: Vec<AtomicI64>,
}

/// A point-in-time reading of a job's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobSnapshot {
    pub records_in: u64,
    pub bad_records: u64,
    pub late_records: u64,
    pub records_out: u64,
    pub watermark: i64,
}

impl JobMetrics {
    pub fn new(name: &str, source: &str, sink: &str, n_shards: usize) -> JobMetrics {
        JobMetrics {
            name: name.to_string(),
            source: source.to_string(),
            sink: sink.to_string(),
            records_in: AtomicU64::new(0),
            bad_records: Default::default(),
            late_records: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            watermarks: (0..n_shards).map(|_| AtomicI64::new(i64::MIN)).collect(),
        }
    }

    pub fn snapshot(&self) -> JobSnapshot {
        JobSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            late_records: self.late_records.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            watermark: self.watermarks.iter().map(|w| w.load(Ordering::Relaxed)).min().unwrap_or(i64::MIN),
        }
    }
}

pub fn format_watermark(wm: i64) -> String {
    match wm {
        i64::MIN => "none yet".to_string(),
        WATERMARK_END => "end of input".to_string(),
        wm => format_timestamp(wm),
    }
}

/// One report line for a job: counters, and the throughput since the previous report.
pub fn report_line(m: &JobMetrics, now: JobSnapshot, prev: JobSnapshot, interval: Duration) -> String {
    let secs = interval.as_secs_f64().max(1e-9);
    format!(
        "job {}: {} -> {}: in {} ({:.0}/s), out {} ({:.0}/s), bad {}, late {}, watermark {}",
        m.name,
        m.source,
        m.sink,
        now.records_in,
        (now.records_in - prev.records_in) as f64 / secs,
        now.records_out,
        (now.records_out - prev.records_out) as f64 / secs,
        now.bad_records,
        now.late_records,
        format_watermark(now.watermark)
    )
}
