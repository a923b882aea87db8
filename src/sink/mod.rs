//! Sinks: where rows leave. One writer per shard per job; a writer encodes rows of the job's output schema.
//!
//! - `file`: a directory of part files `part-<writer>-<shard>-<seq>.json`. A part is written hidden
//!   (`.part-...json.inprogress`) and renamed into view when it is closed: at the end of the input or when it
//!   reaches the rolling size. Readers of the directory never see a partial file. With checkpoints, parts
//!   are committed only when the checkpoint of their epoch completes: exactly-once output (see `file.rs`).
//! - `stdout`: JSON lines on standard output.
//! - `blackhole`: counts rows and discards them (for benchmarks).
//! - `kinesis`: a record per row, written by the control thread; at least once (see `kinesis.rs`).

pub mod file;
pub mod kinesis;

use std::fmt;
use std::io::Write;

use crate::record::json::{ChangeEncoder, ChangeMode};
use crate::record::{BatchView, Schema};

#[derive(Debug, Clone)]
pub struct SinkError {
    pub retryable: bool,
    pub message: String,
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {}

/// How a sink writes what a job produces: its format and primary key, over the job's output columns.
pub fn change_mode(cfg: &crate::config::SinkConfig, schema: &Schema) -> ChangeMode {
    match (cfg.format, &cfg.primary_key) {
        (crate::config::SinkFormat::DebeziumJson, _) => ChangeMode::Debezium,
        (crate::config::SinkFormat::Json, None) => ChangeMode::Append,
        (crate::config::SinkFormat::Json, Some(key)) => ChangeMode::Upsert(
            key.iter().filter_map(|k| schema.fields.iter().position(|f| f.name.eq_ignore_ascii_case(k))).collect(),
        ),
    }
}

pub enum SinkWriter {
    File(Box<file::FileSinkWriter>),
    Stdout { encoder: ChangeEncoder, buf: Vec<u8> },
    Blackhole,
    Kinesis(Box<kinesis::KinesisSinkWriter>),
}

impl SinkWriter {
    pub fn stdout(schema: &Schema, mode: ChangeMode) -> SinkWriter {
        SinkWriter::Stdout { encoder: ChangeEncoder::new(schema, mode), buf: Vec::new() }
    }

    /// Writes every row of a batch.
    pub async fn write(&mut self, view: &BatchView<'_>) -> Result<(), SinkError> {
        match self {
            SinkWriter::File(f) => f.write(view).await,
            SinkWriter::Stdout { encoder, buf } => {
                buf.clear();
                for row in 0..view.n_rows() {
                    encoder.encode(view, row, buf);
                }
                // Standard output is a terminal or a pipe: a short blocking write, batched per call.
                let mut out = std::io::stdout().lock();
                out.write_all(buf).and_then(|_| out.flush()).map_err(|e| SinkError {
                    retryable: false,
                    message: format!("writing to standard output failed: {e}"),
                })
            }
            SinkWriter::Blackhole => {
                std::hint::black_box(view.n_rows());
                Ok(())
            }
            SinkWriter::Kinesis(k) => k.write(view).await,
        }
    }

    /// Checkpoint barrier `epoch`: returns the work that makes this epoch's output durable (awaited before
    /// the shard acknowledges), if the sink has any. Stdout and blackhole output is not held back: at least
    /// once.
    pub async fn roll(
        &mut self,
        epoch: u64,
    ) -> Result<Option<std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>>>>>, SinkError> {
        match self {
            SinkWriter::File(f) => Ok(f.roll(epoch).map(|w| Box::pin(w) as _)),
            SinkWriter::Kinesis(k) => Ok(Some(Box::pin(k.flush().await?) as _)),
            _ => Ok(None),
        }
    }

    /// Checkpoint `epoch` is complete: its output (and earlier epochs') becomes visible.
    pub async fn commit(&mut self, epoch: u64) -> Result<(), SinkError> {
        match self {
            SinkWriter::File(f) => f.commit(epoch).await,
            _ => Ok(()),
        }
    }

    /// Makes everything written so far visible and releases the writer.
    pub async fn close(self) -> Result<(), SinkError> {
        match self {
            SinkWriter::Stdout { mut encoder, mut buf } => {
                buf.clear();
                encoder.finish(&mut buf);
                let mut out = std::io::stdout().lock();
                out.write_all(&buf).and_then(|_| out.flush()).map_err(|e| SinkError {
                    retryable: false,
                    message: format!("writing to standard output failed: {e}"),
                })
            }
            SinkWriter::File(f) => f.close().await,
            SinkWriter::Kinesis(mut k) => k.flush().await?.await,
            _ => Ok(()),
        }
    }
}
