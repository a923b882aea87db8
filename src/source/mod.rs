//! Sources: where rows enter. Each source is divided into splits (a nexmark stream slice, a file); splits are
//! spread over shards. A split reads into a batch builder; the shard turns batches into watermarks and rows.

pub mod file;
pub mod kinesis;
pub mod nexmark;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::constants::{BAD_INPUT_LOG_INTERVAL_MS, BAD_INPUT_LOG_LINES_MAX};
use crate::record::{BatchBuilder, Schema};

#[derive(Debug, Clone)]
pub struct SourceError {
    pub retryable: bool,
    pub message: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {}

/// One split of a source, assigned to one shard.
pub enum Split {
    Nexmark(nexmark::NexmarkSplit),
    File(Box<file::FileSplit>),
    Kinesis(Box<kinesis::KinesisSplit>),
}

impl Split {
    pub fn is_finished(&self) -> bool {
        match self {
            Split::Nexmark(s) => s.is_finished(),
            Split::File(s) => s.is_finished(),
            // A stream has no end.
            Split::Kinesis(_) => false,
        }
    }

    /// Where the split is, between two reads: what a checkpoint records.
    pub fn position(&self) -> SplitPosition {
        match self {
            Split::Nexmark(s) => {
                let (split, n_splits, next) = s.position();
                SplitPosition::Nexmark { split, n_splits, next }
            }
            Split::File(f) => {
                let (offset, line) = f.position();
                SplitPosition::File { path: f.path().display().to_string(), offset, line, finished: f.is_finished() }
            }
            Split::Kinesis(k) => SplitPosition::Kinesis { stream: k.stream().to_string(), shards: k.positions() },
        }
    }
}

/// A split's position in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitPosition {
    /// Split `split` of `n_splits` of a nexmark stream; `next` is the next bid it would generate.
    Nexmark { split: u64, n_splits: u64, next: u64 },
    /// A file read up to byte `offset` (just past line `line`); `finished` once wholly read.
    File { path: String, offset: u64, line: u64, finished: bool },
    /// The stream shards one shard consumed from a Kinesis stream, each with its last sequence number.
    Kinesis { stream: String, shards: Vec<crate::kinesis::StreamShardPosition> },
}

/// A split's state in a checkpoint: its position, and the largest event time it had read (so that the
/// restored watermark does not go back).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitState {
    /// Which scan of the job (a job may read several sources) the split belongs to.
    pub scan: u16,
    pub position: SplitPosition,
    pub max_event_time: Option<i64>,
}

/// The columns of a dead-letter record.
pub const DEAD_LETTER_SCHEMA: &str = "source VARCHAR, file VARCHAR, line BIGINT, error VARCHAR, record VARCHAR";

pub fn dead_letter_schema() -> Schema {
    Schema::parse(DEAD_LETTER_SCHEMA).expect("the dead-letter schema parses")
}

/// Where a source's bad input goes: a counter, a rate-limited log, and optionally a dead-letter sink.
pub struct BadInput {
    source: String,
    counter: Arc<AtomicU64>,
    window_start: Instant,
    logged: u32,
    suppressed: u64,
    /// Rows of [`DEAD_LETTER_SCHEMA`] for the dead-letter sink, if one is configured.
    pub dead_letter: Option<BatchBuilder>,
}

impl BadInput {
    pub fn new(source: &str, counter: Arc<AtomicU64>, dead_letter: bool) -> BadInput {
        BadInput {
            source: source.to_string(),
            counter,
            window_start: Instant::now(),
            logged: 0,
            suppressed: 0,
            dead_letter: dead_letter.then(|| BatchBuilder::new(&dead_letter_schema().types())),
        }
    }

    /// Counts and logs (within the rate limit) one bad record, and sends it to the dead-letter sink.
    pub fn report(&mut self, file: &str, line: u64, error: &str, raw: Option<&[u8]>) {
        self.counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if now.duration_since(self.window_start).as_millis() as u64 >= BAD_INPUT_LOG_INTERVAL_MS {
            if self.suppressed > 0 {
                tracing::warn!(source = %self.source, "{} more bad records were skipped without a log line", self.suppressed);
            }
            self.window_start = now;
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < BAD_INPUT_LOG_LINES_MAX {
            self.logged += 1;
            tracing::warn!(source = %self.source, "bad record skipped at {file}:{line}: {error}");
        } else {
            self.suppressed += 1;
        }
        if let Some(dl) = &mut self.dead_letter {
            dl.push_str(0, self.source.as_bytes());
            dl.push_str(1, file.as_bytes());
            dl.push_int(2, line as i64);
            dl.push_str(3, error.as_bytes());
            match raw {
                Some(r) => dl.push_str(4, String::from_utf8_lossy(r).as_bytes()),
                None => dl.push_null(4),
            }
            dl.end_row();
        }
    }
}

/// Largest value of an integer column in a batch builder's finished view: the batch's max event time.
pub fn max_event_time(view: &crate::record::BatchView<'_>, col: usize) -> Option<i64> {
    (0..view.n_rows()).filter(|r| !view.is_null(col, *r)).map(|r| view.int(col, r)).max()
}
