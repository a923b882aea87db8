//! Reading a stream shard through enhanced fan-out: the source registers its `consumer` on the stream
//! (RegisterStreamConsumer; one of that name already there is used as it is) and waits until it is ACTIVE;
//! each reader then subscribes to its stream shard (SubscribeToShard) and takes the events Kinesis pushes.
//! Kinesis ends a subscription after 5 minutes; a reader subscribes again `resubscribe_after` (by default
//! [`KINESIS_RESUBSCRIBE_DEFAULT_MS`]) after it subscribed, and whenever Kinesis ended the subscription or
//! the connection failed, always after the last sequence number it delivered, so nothing is skipped or read
//! twice. The consumer stays registered when the job stops (a restart reuses it); deregister it when the job
//! is retired.
//!
//! A closed stream shard's end is confirmed by polling (`poll.rs`), which knows it for certain: the reader
//! hands over once an event names the child shards, or once the listing says the stream shard is closed and an
//! event shows the reader caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use aws_sdk_kinesis::Client;

use super::source::{Channel, Reader, StartAt};
use super::{
    answered_at_ms, backoff, poll, position_lost, retryable, send, start_in_future, wait_for_start, with_retries,
    FromKinesis, KinesisRecord, Stream,
};
use crate::config::{FanOutConfig, KinesisStart};
use crate::constants::{KINESIS_CONSUMER_ACTIVE_TIMEOUT_MS, KINESIS_POLL_INTERVAL_MS};

/// A registered, active consumer and how often its readers subscribe again.
pub(super) struct Subscription {
    pub consumer_arn: String,
    pub resubscribe_after: Duration,
}

/// Registers `cfg`'s consumer on `stream` (or finds it registered) and waits until it is ACTIVE.
pub(super) async fn register(
    client: &Client,
    stream: &Stream,
    cfg: &FanOutConfig,
    stop: &AtomicBool,
) -> Result<Subscription, String> {
    let cannot = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot {what} enhanced fan-out consumer {} of stream {}: {e}", cfg.name, stream.label)
    };
    let stream_arn = match &stream.arn {
        Some(arn) => arn.clone(),
        None => {
            let out =
                with_retries(stop, || client.describe_stream_summary().set_stream_name(stream.name.clone()).send())
                    .await
                    .map_err(|e| cannot("register the", &DisplayErrorContext(&e)))?;
            out.stream_description_summary().map(|s| s.stream_arn().to_string()).unwrap_or_default()
        }
    };
    let registered = with_retries(stop, || {
        client.register_stream_consumer().stream_arn(&stream_arn).consumer_name(&cfg.name).send()
    })
    .await;
    match registered {
        Ok(_) => tracing::info!("registered enhanced fan-out consumer {} on stream {}", cfg.name, stream.label),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
            tracing::info!("enhanced fan-out consumer {} of stream {} is registered: using it", cfg.name, stream.label)
        }
        Err(e) => return Err(cannot("register the", &DisplayErrorContext(&e))),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(KINESIS_CONSUMER_ACTIVE_TIMEOUT_MS);
    loop {
        let described = with_retries(stop, || {
            client.describe_stream_consumer().stream_arn(&stream_arn).consumer_name(&cfg.name).send()
        })
        .await
        .map_err(|e| cannot("describe the", &DisplayErrorContext(&e)))?;
        let Some(c) = described.consumer_description() else {
            return Err(cannot("describe the", &"the answer has no consumer description"));
        };
        match c.consumer_status() {
            ConsumerStatus::Active => {
                return Ok(Subscription {
                    consumer_arn: c.consumer_arn().to_string(),
                    resubscribe_after: Duration::from_millis(cfg.resubscribe_after_ms),
                })
            }
            ConsumerStatus::Deleting => {
                return Err(cannot("use the", &"it is being deregistered; start the job again once it is gone"))
            }
            _ if tokio::time::Instant::now() >= deadline || stop.load(Ordering::Relaxed) => {
                return Err(cannot(
                    "use the",
                    &format!("it did not become ACTIVE within {} s", KINESIS_CONSUMER_ACTIVE_TIMEOUT_MS / 1000),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(KINESIS_POLL_INTERVAL_MS)).await,
        }
    }
}

/// Whether an error in a subscription's event stream ends only that subscription: another one is still active
/// (the previous one being released), or Kinesis failed for a moment.
fn renewable(e: &SubscribeToShardEventStreamError) -> bool {
    e.is_resource_in_use_exception() || e.is_internal_failure_exception() || e.is_kms_throttling_exception()
}

/// The sequence number a subscription resumes after, if it resumes after one.
fn resumed_after<'a>(after: &'a Option<String>, start: &'a StartAt) -> Option<&'a str> {
    match (after, start) {
        (Some(seq), _) | (None, StartAt::After(seq)) => Some(seq),
        _ => None,
    }
}

/// Where the next subscription starts: after the last sequence number delivered, or where the reader was
/// told to start while nothing was.
fn starting_position(after: &Option<String>, start: &StartAt) -> StartingPosition {
    let b = StartingPosition::builder();
    let b = match (resumed_after(after, start), start) {
        (Some(seq), _) => b.r#type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq),
        (None, StartAt::Config(KinesisStart::Latest)) => b.r#type(ShardIteratorType::Latest),
        (None, StartAt::Config(KinesisStart::AtTimestamp(ms))) => {
            b.r#type(ShardIteratorType::AtTimestamp).timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(*ms))
        }
        (None, _) => b.r#type(ShardIteratorType::TrimHorizon),
    };
    b.build().expect("the type is always set")
}

/// Reads one stream shard through `sub` from `start` to its end (or until stopped), sending its records and
/// then its end to the shard; a fatal error stops the source.
pub(super) async fn read_stream_shard(reader: Reader, sub: Arc<Subscription>, start: StartAt, to: Channel) {
    let Reader { client, stream, id, stop, .. } = &reader;
    let shard_name: Arc<str> = Arc::from(id.as_str());
    // The last sequence number delivered to the shard: where the next subscription starts. Before any record,
    // a LATEST start moves to the subscription's continuation (else a resubscription would skip what arrived
    // in between); other starts stay as they are, since they name the same records again.
    let mut after: Option<String> = None;
    let at_timestamp = match &start {
        StartAt::Config(KinesisStart::AtTimestamp(ms)) => Some(*ms),
        _ => None,
    };
    let mut attempt = 0u32;
    // Why the last subscription ended, for the log line of the next one.
    let mut ended = "";
    while !reader.stopped() {
        let subscribed = client
            .subscribe_to_shard()
            .consumer_arn(&sub.consumer_arn)
            .shard_id(id)
            .starting_position(starting_position(&after, &start))
            .send()
            .await;
        let mut events = match subscribed {
            Ok(out) => out.event_stream,
            Err(e) if at_timestamp.is_some() && resumed_after(&after, &start).is_none() && start_in_future(&e) => {
                match wait_for_start(&reader, at_timestamp.unwrap_or_default(), answered_at_ms(&e)) {
                    Ok(wait) => {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(message) => {
                        to.fail(id, message);
                        return;
                    }
                }
            }
            // In use: the previous subscription is still being released, or was made less than 5 s ago.
            Err(e) if retryable(&e) || e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            Err(e) => {
                match resumed_after(&after, &start) {
                    Some(seq) if position_lost(&e) => to.fail_position_lost(&reader, seq, DisplayErrorContext(&e)),
                    _ => to.fail(
                        id,
                        format!(
                            "cannot subscribe to stream shard {id} of {}: {}",
                            stream.label,
                            DisplayErrorContext(&e)
                        ),
                    ),
                }
                return;
            }
        };
        // Counted at its first event: Kinesis may still refuse it in the stream (another one is active).
        let mut counted = false;
        let renew = tokio::time::Instant::now() + sub.resubscribe_after;
        let mut tick = tokio::time::interval(Duration::from_millis(KINESIS_POLL_INTERVAL_MS));
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = tokio::time::sleep_until(renew) => {
                    ended = "renewed";
                    break;
                }
                _ = tick.tick() => if reader.stopped() { return } else { continue },
            };
            match event {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev))) => {
                    attempt = 0;
                    if !counted {
                        counted = true;
                        let n = to.stats.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
                        if n > 1 {
                            let at =
                                after.as_deref().map_or(String::from("its start"), |s| format!("sequence number {s}"));
                            tracing::info!(
                                "stream shard {id} of {}: subscription {n} ({ended}), after {at}",
                                stream.label
                            );
                        }
                    }
                    let records = KinesisRecord::all_of(ev.records());
                    to.stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                    to.stats.millis_behind.store(ev.millis_behind_latest(), Ordering::Relaxed);
                    let caught_up = records.is_empty() && ev.millis_behind_latest() == 0;
                    match records.last() {
                        Some(r) => after = Some(r.sequence.clone()),
                        None if after.is_none() && matches!(start, StartAt::Config(KinesisStart::Latest)) => {
                            let c = ev.continuation_sequence_number();
                            after = (!c.is_empty()).then(|| c.to_string());
                        }
                        None => {}
                    }
                    if !records.is_empty()
                        && !send(&to.tx, FromKinesis::Records { stream_shard: shard_name.clone(), records }, stop).await
                    {
                        return;
                    }
                    if !ev.child_shards().is_empty() || (caught_up && to.closed.load(Ordering::Acquire)) {
                        drop(events);
                        let rest = after.map_or(start, StartAt::After);
                        return poll::read_stream_shard(reader, rest, to).await;
                    }
                }
                Ok(Some(_)) => {} // an event type this build does not know: nothing to deliver
                Ok(None) => {
                    ended = "Kinesis ended the last one";
                    break;
                }
                Err(e) if at_timestamp.is_some() && resumed_after(&after, &start).is_none() && start_in_future(&e) => {
                    drop(events);
                    match wait_for_start(&reader, at_timestamp.unwrap_or_default(), None) {
                        Ok(wait) => {
                            tokio::time::sleep(wait).await;
                            break;
                        }
                        Err(message) => {
                            to.fail(id, message);
                            return;
                        }
                    }
                }
                Err(e) if retryable(&e) || e.as_service_error().is_some_and(renewable) => {
                    tracing::debug!(
                        "stream shard {id} of {}: subscription failed: {}",
                        stream.label,
                        DisplayErrorContext(&e)
                    );
                    if counted {
                        ended = "the last one failed";
                    }
                    drop(events);
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                    break;
                }
                Err(e) => {
                    match resumed_after(&after, &start) {
                        Some(seq) if !counted && position_lost(&e) => {
                            to.fail_position_lost(&reader, seq, DisplayErrorContext(&e))
                        }
                        _ => to.fail(
                            id,
                            format!(
                                "subscription to stream shard {id} of {} failed: {}",
                                stream.label,
                                DisplayErrorContext(&e)
                            ),
                        ),
                    }
                    return;
                }
            }
        }
    }
}
