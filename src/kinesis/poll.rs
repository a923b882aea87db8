//! Reading a stream shard by polling: GetShardIterator, then GetRecords (up to [`KINESIS_GET_RECORDS_MAX`]
//! records) at most every [`KINESIS_POLL_INTERVAL_MS`] (Kinesis allows 5 calls/s per stream shard, shared by
//! every consumer), backing off to [`KINESIS_IDLE_POLL_MAX_MS`] while calls return nothing and the stream
//! shard is not behind. An expired iterator is renewed after the last sequence number read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::ShardIteratorType;

use super::source::{Channel, Reader, StartAt};
use super::{
    answered_at_ms, backoff, position_lost, retryable, send, start_in_future, wait_for_start, FromKinesis,
    KinesisRecord,
};
use crate::config::KinesisStart;
use crate::constants::{KINESIS_GET_RECORDS_MAX, KINESIS_IDLE_POLL_MAX_MS, KINESIS_POLL_INTERVAL_MS};

/// Reads one stream shard from `start` to its end (or until stopped), sending its records and then its end
/// to the shard; a fatal error stops the source.
pub(super) async fn read_stream_shard(reader: Reader, start: StartAt, to: Channel) {
    let Reader { client, stream, id, stop, .. } = &reader;
    let shard_name: Arc<str> = Arc::from(id.as_str());
    let mut last: Option<String> = match &start {
        StartAt::After(s) => Some(s.clone()),
        StartAt::Config(_) => None,
    };
    let mut iterator: Option<String> = None;
    let at_timestamp = match &start {
        StartAt::Config(KinesisStart::AtTimestamp(ms)) => Some(*ms),
        _ => None,
    };
    let mut attempt = 0u32;
    let mut idle_ms = KINESIS_POLL_INTERVAL_MS;
    while !reader.stopped() {
        let Some(it) = iterator.clone() else {
            let req = client
                .get_shard_iterator()
                .set_stream_name(stream.name.clone())
                .set_stream_arn(stream.arn.clone())
                .shard_id(id);
            let req = match (&last, &start) {
                (Some(seq), _) => {
                    req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq)
                }
                (None, StartAt::Config(KinesisStart::Latest)) => req.shard_iterator_type(ShardIteratorType::Latest),
                (None, StartAt::Config(KinesisStart::AtTimestamp(ms))) => req
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(*ms)),
                (None, _) => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            match req.send().await {
                Ok(out) => {
                    attempt = 0;
                    iterator = out.shard_iterator().map(str::to_string);
                    if iterator.is_none() {
                        let end = FromKinesis::Ended { stream_shard: shard_name.clone(), consumed: to.consumed };
                        let _ = send(&to.tx, end, stop).await;
                        return;
                    }
                }
                Err(e) if at_timestamp.is_some() && last.is_none() && start_in_future(&e) => {
                    match wait_for_start(&reader, at_timestamp.unwrap_or_default(), answered_at_ms(&e)) {
                        Ok(wait) => tokio::time::sleep(wait).await,
                        Err(message) => {
                            to.fail(id, message);
                            return;
                        }
                    }
                }
                Err(e) if retryable(&e) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    match &last {
                        Some(seq) if position_lost(&e) => to.fail_position_lost(&reader, seq, DisplayErrorContext(&e)),
                        _ => to.fail(
                            id,
                            format!("cannot read stream shard {id} of {}: {}", stream.label, DisplayErrorContext(&e)),
                        ),
                    }
                    return;
                }
            }
            continue;
        };
        match client.get_records().shard_iterator(it).limit(KINESIS_GET_RECORDS_MAX).send().await {
            Ok(out) => {
                attempt = 0;
                let records = KinesisRecord::all_of(out.records());
                let got = records.len();
                to.stats.records.fetch_add(got as u64, Ordering::Relaxed);
                to.stats.millis_behind.store(out.millis_behind_latest().unwrap_or(0), Ordering::Relaxed);
                if let Some(r) = records.last() {
                    last = Some(r.sequence.clone());
                }
                if got > 0
                    && !send(&to.tx, FromKinesis::Records { stream_shard: shard_name.clone(), records }, stop).await
                {
                    return;
                }
                match out.next_shard_iterator() {
                    None => {
                        let end = FromKinesis::Ended { stream_shard: shard_name.clone(), consumed: to.consumed };
                        let _ = send(&to.tx, end, stop).await;
                        return;
                    }
                    Some(next) => iterator = Some(next.to_string()),
                }
                let behind = out.millis_behind_latest().unwrap_or(0) > 0;
                idle_ms = if got > 0 || behind {
                    KINESIS_POLL_INTERVAL_MS
                } else {
                    (idle_ms * 2).min(KINESIS_IDLE_POLL_MAX_MS)
                };
                tokio::time::sleep(Duration::from_millis(idle_ms)).await;
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_expired_iterator_exception()) => iterator = None,
            Err(e) if retryable(&e) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                to.fail(id, format!("cannot read stream shard {id} of {}: {}", stream.label, DisplayErrorContext(&e)));
                return;
            }
        }
    }
}
