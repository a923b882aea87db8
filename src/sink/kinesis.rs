//! A shard's Kinesis sink writer: rows encoded as JSON objects, one record each, with the partition key taken
//! from a column; handed in batches to the control thread's writer (`kinesis/sink.rs`) through a bounded
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
use crate::record::json::{write_json_double, JsonEncoder};
use crate::record::timestamp::write_timestamp;
use crate::record::types::DataType;
use crate::record::{BatchView, Schema};

/// How often a shard looks whether its writer took a batch or finished a flush, while it waits for it.
const WAIT_POLL: Duration = Duration::from_millis(1);

/// Kinesis' limit on partition keys (characters).
const PARTITION_KEY_MAX: usize = 256;

pub struct KinesisSinkWriter {
    name: String,
    encoder: JsonEncoder,
    key_col: usize,
    key_type: DataType,
    tx: Sender<ToKinesis>,
    batch: Vec<OutRecord>,
    bad: Arc<AtomicU64>,
    logged: u64,
}

impl KinesisSinkWriter {
    /// `key_col` is the output column whose value is each record's partition key.
    pub fn new(name: &str, schema: &Schema, key_col: usize, tx: Sender<ToKinesis>, bad: Arc<AtomicU64>) -> Self {
        KinesisSinkWriter {
            name: name.to_string(),
            encoder: JsonEncoder::new(schema),
            key_col,
            key_type: schema.fields[key_col].ty,
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
            self.encoder.encode_row(view, row, &mut data);
            if data.last() == Some(&b'\n') {
                data.pop();
            }
            key.clear();
            if !view.is_null(self.key_col, row) {
                // The value as the record's JSON writes it (a string without its quotes).
                let c = self.key_col;
                match self.key_type {
                    DataType::Varchar => key.extend_from_slice(view.str(c, row)),
                    DataType::Int | DataType::BigInt => {
                        key.extend_from_slice(itoa::Buffer::new().format(view.int(c, row)).as_bytes())
                    }
                    DataType::Double => write_json_double(view.double(c, row), &mut key),
                    DataType::Boolean => key.extend_from_slice(if view.bool(c, row) { b"true" } else { b"false" }),
                    DataType::Timestamp => write_timestamp(view.int(c, row), &mut key),
                }
            }
            let key = String::from_utf8_lossy(&key).into_owned();
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
