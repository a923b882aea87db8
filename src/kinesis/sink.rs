//! The Kinesis sink's control-thread side: one writer task per (sink, shard) takes the shard's records from a
//! bounded channel, batches them into PutRecords calls (at most [`KINESIS_PUT_RECORDS_MAX`] records and
//! [`KINESIS_PUT_BYTES_MAX`] bytes, after at most [`KINESIS_PUT_LINGER_MS`]), and retries exactly the records
//! a partially failed call rejected, with bounded jittered backoff. One call is in flight per writer, so a
//! shard's records reach each stream shard in the order the shard wrote them. A `Flush` completes once every
//! record sent before it is stored: the shard acknowledges a checkpoint only then (at least once).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc::Receiver;

use super::{backoff, retryable, Stream};
use crate::config::KinesisEndpoint;
use crate::constants::{
    KINESIS_POLL_INTERVAL_MS, KINESIS_PUT_BYTES_MAX, KINESIS_PUT_LINGER_MS, KINESIS_PUT_RECORDS_MAX,
};

/// One record for a stream.
#[derive(Debug)]
pub struct OutRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
}

impl OutRecord {
    /// What the record counts toward a PutRecords call's size limit.
    pub fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }
}

/// A flush's state, shared by the shard that waits for it and the writer that completes it.
#[derive(Debug, Default)]
pub struct Flush {
    /// 0 pending, 1 done, 2 failed (the reason in `error`).
    state: AtomicU8,
    error: Mutex<Option<String>>,
}

impl Flush {
    /// `None` while pending; then `Ok` or the error that stopped the writer.
    pub fn outcome(&self) -> Option<Result<(), String>> {
        match self.state.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Ok(())),
            _ => Some(Err(self.error.lock().expect("flush lock").clone().unwrap_or_default())),
        }
    }

    fn finish(&self, result: Result<(), String>) {
        if let Err(e) = result {
            *self.error.lock().expect("flush lock") = Some(e);
            self.state.store(2, Ordering::Release);
        } else {
            self.state.store(1, Ordering::Release);
        }
    }
}

/// What a shard sends a Kinesis sink writer.
#[derive(Debug)]
pub enum ToKinesis {
    Records(Vec<OutRecord>),
    /// Completes once every record sent before it is stored.
    Flush(Arc<Flush>),
}

/// A Kinesis sink to write: one channel per shard.
pub struct SinkTask {
    pub name: String,
    pub at: KinesisEndpoint,
    pub from_shards: Vec<Receiver<ToKinesis>>,
}

/// Writes one shard's records of one sink until its channel closes.
pub(crate) async fn run_writer(
    client: Client,
    name: String,
    stream: Stream,
    mut rx: Receiver<ToKinesis>,
    stop: Arc<AtomicBool>,
) {
    let mut batch: Vec<OutRecord> = Vec::new();
    let mut bytes = 0;
    let mut failed: Option<String> = None;
    loop {
        let msg = if batch.is_empty() {
            match tokio::time::timeout(Duration::from_millis(KINESIS_POLL_INTERVAL_MS), rx.recv()).await {
                Ok(m) => m,
                // The run ends once every shard closed its sinks (flushed): nothing is left to write.
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => continue,
            }
        } else {
            match tokio::time::timeout(Duration::from_millis(KINESIS_PUT_LINGER_MS), rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    put_all(&client, &name, &stream, &mut batch, &mut failed, &stop).await;
                    bytes = 0;
                    continue;
                }
            }
        };
        match msg {
            None => {
                put_all(&client, &name, &stream, &mut batch, &mut failed, &stop).await;
                return;
            }
            Some(ToKinesis::Records(records)) => {
                for r in records {
                    if batch.len() == KINESIS_PUT_RECORDS_MAX || bytes + r.size() > KINESIS_PUT_BYTES_MAX {
                        put_all(&client, &name, &stream, &mut batch, &mut failed, &stop).await;
                        bytes = 0;
                    }
                    bytes += r.size();
                    batch.push(r);
                }
            }
            Some(ToKinesis::Flush(f)) => {
                put_all(&client, &name, &stream, &mut batch, &mut failed, &stop).await;
                bytes = 0;
                f.finish(failed.clone().map_or(Ok(()), Err));
            }
        }
    }
}

/// Stores every record of `batch` (retrying those a call rejects), then empties it. After a fatal error the
/// records are dropped and `failed` says why: the shard's next flush fails, and with it the job.
async fn put_all(
    client: &Client,
    name: &str,
    stream: &Stream,
    batch: &mut Vec<OutRecord>,
    failed: &mut Option<String>,
    stop: &AtomicBool,
) {
    let mut attempt = 0u32;
    while !batch.is_empty() && failed.is_none() {
        let entries: Vec<PutRecordsRequestEntry> = batch
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(r.data.clone()))
                    .partition_key(&r.partition_key)
                    .build()
                    .expect("data and partition key are set")
            })
            .collect();
        let call = client
            .put_records()
            .set_stream_name(stream.name.clone())
            .set_stream_arn(stream.arn.clone())
            .set_records(Some(entries))
            .send()
            .await;
        match call {
            Ok(out) if out.failed_record_count().unwrap_or(0) == 0 => batch.clear(),
            Ok(out) => {
                // Keep exactly the records the call rejected (throttled or failed inside Kinesis), in order.
                let results = out.records();
                let mut i = 0;
                batch.retain(|_| {
                    let rejected = results.get(i).is_none_or(|r| r.error_code().is_some());
                    i += 1;
                    rejected
                });
                tracing::debug!("sink {name}: {} record(s) rejected by PutRecords, retrying them", batch.len());
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) if retryable(&e) && !stop.load(Ordering::Relaxed) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                let why = format!("sink {name}: cannot write to stream {}: {}", stream.label, DisplayErrorContext(&e));
                tracing::error!("{why}");
                *failed = Some(why);
                batch.clear();
            }
        }
    }
    batch.clear();
}
