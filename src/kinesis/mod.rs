//! Kinesis on the control thread: every AWS call of the connector runs here, on one tokio runtime in a thread
//! of its own. Shards exchange batches with it through bounded channels and never wait on it: a shard takes
//! what is there with `try_recv`, and a full channel makes a reader wait (backpressure), never drop.
//!
//! Source side (`source.rs`), per source: the stream shards are discovered and given to shards; each is read
//! by one reader, polling (`poll.rs`: GetShardIterator, then GetRecords) or, when the source names a
//! `consumer`, through enhanced fan-out (`fanout.rs`: RegisterStreamConsumer, then SubscribeToShard). A child
//! is read only once all its parents were consumed to their end. Positions (the last sequence number the
//! shard consumed) come back in checkpoints; a restored run resumes AFTER_SEQUENCE_NUMBER.
//!
//! Sink side: `sink.rs`.
//!
//! Credentials and region come from the AWS default provider chain; the endpoint from the config's
//! `endpoint` key, or `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL` (the SDK reads them).

mod fanout;
mod poll;
pub mod sink;
mod source;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::Client;
use crossbeam_channel::{Sender, TrySendError};

pub(crate) use crate::aws::backoff;
use crate::aws::AwsThread;
use crate::config::{KinesisEndpoint, KinesisSourceConfig};
use crate::constants::{KINESIS_POLL_INTERVAL_MS, KINESIS_START_AHEAD_MAX_MS, KINESIS_START_AHEAD_POLL_MAX_MS};

/// One record as read from a stream shard.
#[derive(Debug)]
pub struct KinesisRecord {
    pub sequence: String,
    pub data: Vec<u8>,
}

impl KinesisRecord {
    /// The records of one GetRecords answer or SubscribeToShard event.
    fn all_of(records: &[aws_sdk_kinesis::types::Record]) -> Vec<KinesisRecord> {
        records
            .iter()
            .map(|r| KinesisRecord { sequence: r.sequence_number().to_string(), data: r.data().as_ref().to_vec() })
            .collect()
    }
}

/// What the control thread sends a shard about one source.
#[derive(Debug)]
pub enum FromKinesis {
    /// A stream shard is this shard's to consume, starting after `position` (what a checkpoint says, or
    /// nothing yet).
    Assigned(StreamShardPosition),
    Records {
        stream_shard: Arc<str>,
        records: Vec<KinesisRecord>,
    },
    /// The stream shard was closed (split or merged) and every record of it was sent; the shard sets
    /// `consumed` once it has taken them all (its children may then start).
    Ended {
        stream_shard: Arc<str>,
        consumed: Arc<AtomicBool>,
    },
    /// The source cannot go on (the stream is gone, access denied, ...): the job stops with this error.
    Failed(String),
}

/// Where the consumer of a stream shard is: the last sequence number it consumed, and whether it read the
/// stream shard to its end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamShardPosition {
    pub shard_id: String,
    pub sequence: Option<String>,
    pub finished: bool,
}

/// A Kinesis source to read: its config, one channel per shard, and the positions a checkpoint restored.
pub struct SourceTask {
    pub name: String,
    pub cfg: KinesisSourceConfig,
    pub to_shards: Vec<Sender<FromKinesis>>,
    /// Every stream shard's position in the restored checkpoint (`None`: no checkpoint, start per config).
    pub restored: Option<Vec<StreamShardPosition>>,
}

/// Per stream shard read: records read, how far behind the stream's tip the last read was, and (enhanced
/// fan-out) the subscriptions made.
#[derive(Debug, Default)]
pub struct ReaderStats {
    pub records: AtomicU64,
    pub millis_behind: AtomicI64,
    pub subscriptions: AtomicU64,
    /// Set when the position to resume from is gone (older than the stream's retention): the source stops.
    pub position_lost: AtomicBool,
}

/// Every reader's stats, by (source, stream shard).
pub type ReaderMetrics = std::sync::Mutex<BTreeMap<(String, String), Arc<ReaderStats>>>;

/// The Kinesis work on the control thread; it stops with the [`AwsThread`].
pub struct KinesisService {
    metrics: Arc<ReaderMetrics>,
}

impl KinesisService {
    /// Starts reading `sources` and writing `sinks` on the control thread.
    pub fn start(aws: &AwsThread, sources: Vec<SourceTask>, sinks: Vec<sink::SinkTask>) -> KinesisService {
        let metrics: Arc<ReaderMetrics> = Arc::default();
        for s in sources {
            aws.spawn(source::run_source(s, aws.stop_flag(), metrics.clone()));
        }
        for s in sinks {
            let stop = aws.stop_flag();
            aws.spawn(async move {
                let c = client(&s.at).await;
                let stream = Stream::new(&s.at.stream);
                let mut writers = tokio::task::JoinSet::new();
                for rx in s.from_shards {
                    writers.spawn(sink::run_writer(c.clone(), s.name.clone(), stream.clone(), rx, stop.clone()));
                }
                while writers.join_next().await.is_some() {}
            });
        }
        KinesisService { metrics }
    }

    /// One line per stream shard read: records read, and milliseconds behind the stream's tip.
    pub fn report_lines(&self) -> Vec<String> {
        let m = self.metrics.lock().expect("reader metrics lock");
        m.iter()
            .map(|((source, shard), s)| {
                let subscriptions = match s.subscriptions.load(Ordering::Relaxed) {
                    0 => String::new(),
                    n => format!(", {n} subscriptions"),
                };
                let lost = if s.position_lost.load(Ordering::Relaxed) { ", position past retention" } else { "" };
                format!(
                    "source {source}: stream shard {shard}: {} records read, {} ms behind latest{subscriptions}{lost}",
                    s.records.load(Ordering::Relaxed),
                    s.millis_behind.load(Ordering::Relaxed)
                )
            })
            .collect()
    }
}

/// A client for `at`: the default chain's credentials and region, `at`'s region and endpoint if set.
pub async fn client(at: &KinesisEndpoint) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &at.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &at.endpoint {
        loader = loader.endpoint_url(e);
    }
    Client::new(&loader.load().await)
}

/// A stream named by name or ARN, as the API's requests take it.
#[derive(Clone)]
pub(crate) struct Stream {
    pub name: Option<String>,
    pub arn: Option<String>,
    pub label: String,
}

impl Stream {
    pub(crate) fn new(s: &str) -> Stream {
        if s.starts_with("arn:") {
            Stream { name: None, arn: Some(s.to_string()), label: s.to_string() }
        } else {
            Stream { name: Some(s.to_string()), arn: None, label: s.to_string() }
        }
    }
}

/// Whether an error is worth retrying: throttling, limits, expired credentials being refreshed, the server
/// or the network failing for a moment.
pub(crate) fn retryable<E: ProvideErrorMetadata + std::error::Error + 'static, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        // A connection that failed or timed out; not a request that could not be made (no region, ...).
        SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "LimitExceededException"
                    | "KMSThrottlingException"
                    | "InternalFailure"
                    | "InternalFailureException"
                    | "ServiceUnavailable"
                    | "ThrottlingException"
            )
        ),
        _ => false,
    }
}

/// Whether resuming after a sequence number failed because the position is gone: older than the stream's
/// retention (Kinesis answers InvalidArgumentException), or not in the stream at all (ResourceNotFound: the
/// stream was deleted and created again).
pub(crate) fn position_lost<E: ProvideErrorMetadata + std::error::Error + 'static, R>(e: &SdkError<E, R>) -> bool {
    matches!(
        e.as_service_error().and_then(ProvideErrorMetadata::code),
        Some("InvalidArgumentException" | "ResourceNotFoundException")
    )
}

/// Whether Kinesis refused an AT_TIMESTAMP start because the timestamp is ahead of its own clock
/// (InvalidArgumentException, "Timestamp cannot be in the future").
fn start_in_future(e: &impl ProvideErrorMetadata) -> bool {
    e.code() == Some("InvalidArgumentException")
        && e.message().is_some_and(|m| m.to_ascii_lowercase().contains("future"))
}

/// Kinesis' clock when it answered, from the answer's `Date` header (whole seconds), in epoch milliseconds.
fn answered_at_ms<E>(e: &SdkError<E, HttpResponse>) -> Option<i64> {
    let date = e.raw_response()?.headers().get("date")?;
    let t =
        aws_sdk_kinesis::primitives::DateTime::from_str(date, aws_sdk_kinesis::primitives::DateTimeFormat::HttpDate)
            .ok()?;
    t.to_millis().ok()
}

/// What a reader does when Kinesis refused its AT_TIMESTAMP start as in the future: a start a little ahead of
/// Kinesis' clock means "the records from then on", so it waits (and asks again) until Kinesis' clock has
/// passed it; one more than [`KINESIS_START_AHEAD_MAX_MS`] ahead stops the job with a message. The first
/// refusal of a source is logged with the skew; `logged` is shared by the source's readers.
fn wait_for_start(reader: &source::Reader, start_ms: i64, kinesis_now_ms: Option<i64>) -> Result<Duration, String> {
    let local_now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (now_ms, whose) = match kinesis_now_ms {
        Some(t) => (t, "Kinesis' clock"),
        None => (local_now_ms, "this machine's clock"),
    };
    let ahead_ms = start_ms.saturating_sub(now_ms);
    let start = crate::record::timestamp::format_timestamp(start_ms);
    if ahead_ms > KINESIS_START_AHEAD_MAX_MS {
        return Err(format!(
            "start_timestamp {start} of stream {} is {:.0} s ahead of {whose}, more than the {} s a start may wait \
             for: Kinesis refuses a start in the future. Set start_timestamp to a time that has passed, or use \
             start = \"LATEST\"",
            reader.stream.label,
            ahead_ms as f64 / 1e3,
            KINESIS_START_AHEAD_MAX_MS / 1_000
        ));
    }
    if !reader.start_ahead_logged.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "stream {}: Kinesis refused start_timestamp {start} as in the future: it is {:.1} s ahead of {whose} \
             (this machine's clock differs from Kinesis' by {:+.1} s); reading the records from then on once \
             Kinesis' clock passes it",
            reader.stream.label,
            ahead_ms.max(0) as f64 / 1e3,
            (local_now_ms - now_ms) as f64 / 1e3,
        );
    }
    // The Date header has whole seconds: ask again at least every poll interval, at most every second.
    let wait = (ahead_ms.max(0) as u64).clamp(KINESIS_POLL_INTERVAL_MS, KINESIS_START_AHEAD_POLL_MAX_MS);
    Ok(Duration::from_millis(wait))
}

/// Runs `call` again, after a backoff, while it fails with a retryable error and the run goes on.
pub(crate) async fn with_retries<T, E, R, F, Fut>(stop: &AtomicBool, mut call: F) -> Result<T, SdkError<E, R>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if retryable(&e) && !stop.load(Ordering::Relaxed) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Sends to a shard, waiting while its channel is full (backpressure); false if the shard is gone or the run
/// stops.
async fn send(tx: &Sender<FromKinesis>, mut msg: FromKinesis, stop: &AtomicBool) -> bool {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(m)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                msg = m;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}
