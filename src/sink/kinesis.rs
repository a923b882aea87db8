//! A shard's Kinesis sink writer: rows encoded as JSON objects, one record each, with the partition key a
//! column or SQL expression of the row; handed in batches to the control thread's writer (`kinesis/sink.rs`) through a bounded
//! channel. A full channel makes the shard wait (backpressure). At a checkpoint barrier the writer sends a
//! flush and the shard acknowledges only once every record before it is stored: at least once (Kinesis has
//! no transactions; each window's row is identified by its key and window, which a consumer can deduplicate
//! on).
//!
//! A row whose record would exceed Kinesis' 1 MiB, or whose partition key is NULL or empty, is bad output:
//! counted in the job's bad records and logged (rate limited), never sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::SinkError;
use crate::constants::{KINESIS_RECORD_BYTES_MAX, KINESIS_SINK_BATCH_ROWS};
use crate::kinesis::sink::{Flush, OutRecord, ToKinesis};
use crate::record::json::{write_json_double, ChangeEncoder, ChangeMode};
use crate::record::timestamp::write_timestamp;
use crate::record::types::{DataType, Datum};
use crate::record::{BatchView, Schema};
use crate::sql::expr::Expr;

/// How often a shard looks whether its writer took a batch or finished a flush, while it waits for it.
const WAIT_POLL: Duration = Duration::from_millis(1);

/// Kinesis' limit on partition keys (characters).
const PARTITION_KEY_MAX: usize = 256;

pub struct KinesisSinkWriter {
    name: String,
    encoder: ChangeEncoder,
    /// The partition key of an update-before the encoder holds (it becomes a record of its own if no
    /// update-after follows).
    held_key: Option<String>,
    partition_key: Expr,
    tx: Sender<ToKinesis>,
    batch: Vec<OutRecord>,
    bad: Arc<AtomicU64>,
    logged: u64,
}

impl KinesisSinkWriter {
    /// `partition_key`, bound over the output schema, gives each record's partition key.
    pub fn new(
        name: &str,
        schema: &Schema,
        mode: ChangeMode,
        partition_key: Expr,
        tx: Sender<ToKinesis>,
        bad: Arc<AtomicU64>,
    ) -> Self {
        KinesisSinkWriter {
            name: name.to_string(),
            encoder: ChangeEncoder::new(schema, mode),
            held_key: None,
            partition_key,
            tx,
            batch: Vec::with_capacity(KINESIS_SINK_BATCH_ROWS),
            bad,
            logged: 0,
        }
    }

    pub async fn write(&mut self, view: &BatchView<'_>) -> Result<(), SinkError> {
        let mut data = Vec::new();
        let mut key = Vec::new();
        for row in 0..view.n_rows() {
            data.clear();
            let held = self.encoder.holds();
            self.encoder.encode(view, row, &mut data);
            if data.last() == Some(&b'\n') {
                data.pop();
            }
            key.clear();
            // The value as the record's JSON would write it (a string without its quotes); NULL: empty.
            match self.partition_key.eval(view, row) {
                Datum::Null => {}
                Datum::Str(b) => key.extend_from_slice(b),
                Datum::OwnedStr(b) => key.extend_from_slice(&b),
                Datum::Int(v) if self.partition_key.ty() == DataType::Timestamp => write_timestamp(v, &mut key),
                Datum::Int(v) => key.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
                Datum::Double(v) => write_json_double(v, &mut key),
                Datum::Bool(b) => key.extend_from_slice(if b { b"true" } else { b"false" }),
            }
            let key = String::from_utf8_lossy(&key).into_owned();
            if data.is_empty() {
                // Held back (an update-before waiting for its update-after) or dropped (upsert mode).
                if self.encoder.holds() {
                    self.held_key = Some(key);
                }
                continue;
            }
            if held && data.iter().filter(|b| **b == b'\n').count() == 1 {
                // The held update-before became a delete of its own, before this row's record.
                let (first, rest) = data.split_at(data.iter().position(|b| *b == b'\n').expect("counted") + 1);
                let k = self.held_key.take().unwrap_or_else(|| key.clone());
                self.batch.push(OutRecord { partition_key: k, data: first[..first.len() - 1].to_vec() });
                data = rest.to_vec();
            }
            let problem = if key.is_empty() {
                Some("its partition key is NULL or empty".to_string())
            } else if key.chars().count() > PARTITION_KEY_MAX {
                Some(format!("its partition key is longer than {PARTITION_KEY_MAX} characters"))
            } else if data.len() + key.len() > KINESIS_RECORD_BYTES_MAX {
                Some(format!("it is {} bytes, more than Kinesis' {KINESIS_RECORD_BYTES_MAX}", data.len() + key.len()))
            } else {
                None
            };
            if let Some(why) = problem {
                self.bad.fetch_add(1, Ordering::Relaxed);
                self.logged += 1;
                if self.logged <= crate::constants::BAD_INPUT_LOG_LINES_MAX.into() {
                    tracing::warn!("sink {}: a row was not written to Kinesis: {why}", self.name);
                }
                continue;
            }
            self.batch.push(OutRecord { partition_key: key, data: data.clone() });
            if self.batch.len() >= KINESIS_SINK_BATCH_ROWS {
                self.send_batch().await?;
            }
        }
        // The engine already batches rows (and lingers); the writer coalesces calls: nothing waits here.
        self.send_batch().await
    }

    async fn send(&mut self, mut msg: ToKinesis) -> Result<(), SinkError> {
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    glommio::timer::sleep(WAIT_POLL).await;
                }
                Err(TrySendError::Closed(_)) => {
                    return Err(SinkError {
                        retryable: false,
                        message: format!(
                            "sink {}: the Kinesis writer stopped (see the error logged before)",
                            self.name
                        ),
                    })
                }
            }
        }
    }

    async fn send_batch(&mut self) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(KINESIS_SINK_BATCH_ROWS));
        self.send(ToKinesis::Records(batch)).await
    }

    /// Sends what is gathered and a flush; returns the wait for the flush (every record so far stored).
    pub async fn flush(&mut self) -> Result<impl std::future::Future<Output = Result<(), SinkError>>, SinkError> {
        let mut data = Vec::new();
        self.encoder.finish(&mut data);
        if let (false, Some(key)) = (data.is_empty(), self.held_key.take()) {
            data.pop();
            self.batch.push(OutRecord { partition_key: key, data });
        }
        self.send_batch().await?;
        let flush = Arc::new(Flush::default());
        self.send(ToKinesis::Flush(flush.clone())).await?;
        Ok(async move {
            loop {
                match flush.outcome() {
                    None => glommio::timer::sleep(WAIT_POLL).await,
                    Some(r) => return r.map_err(|message| SinkError { retryable: false, message }),
                }
            }
        })
    }
}
