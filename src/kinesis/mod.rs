//! Kinesis on the control thread: every AWS call of the connector runs here, on one tokio runtime in a thread
//! of its own. Shards exchange batches with it through bounded channels and never wait on it: a shard takes
//! what is there with `try_recv`, and a full channel makes a reader wait (backpressure), never drop.
//!
//! Source side, per source: the stream shards are listed (ListShards, paginated) at start and every
//! [`KINESIS_DISCOVERY_INTERVAL_MS`], each is given to a shard (a child to the shard of its first parent, so
//! that one FIFO channel carries a key's records across a split; others round robin), and read by one reader
//! task (GetShardIterator, then GetRecords at most [`KINESIS_POLL_INTERVAL_MS`] apart, faster never than
//! Kinesis' 5 calls/s per stream shard, slower while idle). A child is read only once all its parents have
//! ended. Positions (the last sequence number the shard consumed) come back in checkpoints; a restored run
//! resumes AFTER_SEQUENCE_NUMBER.
//!
//! Sink side: `sink.rs`.
//!
//! Credentials and region come from the AWS default provider chain; the endpoint from the config's
//! `endpoint` key, or `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL` (the SDK reads them).

pub mod sink;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use crossbeam_channel::{Sender, TrySendError};

use crate::config::{KinesisEndpoint, KinesisSourceConfig, KinesisStart};
use crate::constants::{
    KINESIS_DISCOVERY_INTERVAL_MS, KINESIS_GET_RECORDS_MAX, KINESIS_IDLE_POLL_MAX_MS, KINESIS_POLL_INTERVAL_MS,
    KINESIS_RETRY_BASE_MS, KINESIS_RETRY_MAX_MS,
};

/// One record as read from a stream shard.
#[derive(Debug)]
pub struct KinesisRecord {
    pub sequence: String,
    pub data: Vec<u8>,
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

/// Per stream shard read: records read and how far behind the stream's tip the last GetRecords call was.
#[derive(Debug, Default)]
pub struct ReaderStats {
    pub records: std::sync::atomic::AtomicU64,
    pub millis_behind: std::sync::atomic::AtomicI64,
}

/// Every reader's stats, by (source, stream shard).
pub type ReaderMetrics = std::sync::Mutex<BTreeMap<(String, String), Arc<ReaderStats>>>;

/// The control thread's Kinesis work; stops (and joins its thread) when dropped.
pub struct KinesisService {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    metrics: Arc<ReaderMetrics>,
}

impl KinesisService {
    /// Starts reading `sources` and writing `sinks` on a thread of its own.
    pub fn start(sources: Vec<SourceTask>, sinks: Vec<sink::SinkTask>) -> Result<KinesisService, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the AWS runtime: {e}"))?;
        let flag = stop.clone();
        let metrics: Arc<ReaderMetrics> = Arc::default();
        let readers = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("aws".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for s in sources {
                        tasks.spawn(run_source(s, flag.clone(), readers.clone()));
                    }
                    for s in sinks {
                        let c = client(&s.at).await;
                        let stream = Stream::new(&s.at.stream);
                        for rx in s.from_shards {
                            tasks.spawn(sink::run_writer(c.clone(), s.name.clone(), stream.clone(), rx, flag.clone()));
                        }
                    }
                    while tasks.join_next().await.is_some() {}
                });
            })
            .map_err(|e| format!("cannot start the AWS thread: {e}"))?;
        Ok(KinesisService { stop, thread: Some(thread), metrics })
    }

    /// One line per stream shard read: records read, and milliseconds behind the stream's tip.
    pub fn report_lines(&self) -> Vec<String> {
        let m = self.metrics.lock().expect("reader metrics lock");
        m.iter()
            .map(|((source, shard), s)| {
                format!(
                    "source {source}: stream shard {shard}: {} records read, {} ms behind latest",
                    s.records.load(Ordering::Relaxed),
                    s.millis_behind.load(Ordering::Relaxed)
                )
            })
            .collect()
    }
}

impl Drop for KinesisService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
    name: Option<String>,
    arn: Option<String>,
    label: String,
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

/// A stream shard as listed.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    parents: Vec<String>,
    closed: bool,
}

/// Whether an error is worth retrying: throttling, limits, expired credentials being refreshed, the server
/// or the network failing for a moment.
pub(crate) fn retryable<E: ProvideErrorMetadata + std::error::Error + 'static, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
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

/// Bounded, jittered exponential backoff: the delay before retry `attempt` (0-based).
pub(crate) fn backoff(attempt: u32) -> Duration {
    let cap = KINESIS_RETRY_BASE_MS.saturating_mul(1 << attempt.min(16)).min(KINESIS_RETRY_MAX_MS);
    // Full jitter: a uniform delay in [cap/2, cap], from the clock's low bits (no RNG needed for this).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(cap / 2 + u64::from(nanos) % (cap / 2 + 1))
}

async fn list_shards(client: &Client, stream: &Stream, stop: &AtomicBool) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut attempt = 0;
    loop {
        let mut req = client.list_shards();
        req = match &token {
            Some(t) => req.next_token(t),
            None => req.set_stream_name(stream.name.clone()).set_stream_arn(stream.arn.clone()),
        };
        match req.send().await {
            Ok(page) => {
                attempt = 0;
                for s in page.shards() {
                    let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()].into_iter().flatten();
                    out.push(Listed {
                        id: s.shard_id().to_string(),
                        parents: parents.map(str::to_string).collect(),
                        closed: s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some(),
                    });
                }
                match page.next_token() {
                    Some(t) => token = Some(t.to_string()),
                    None => return Ok(out),
                }
            }
            Err(e) if retryable(&e) && !stop.load(Ordering::Relaxed) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(format!("cannot list the shards of stream {}: {}", stream.label, DisplayErrorContext(&e)))
            }
        }
    }
}

/// Where a reader starts.
#[derive(Debug, Clone)]
enum StartAt {
    After(String),
    Config(KinesisStart),
}

/// A stream shard's state in the source's bookkeeping.
struct Tracked {
    parents: Vec<String>,
    shard: usize,
    /// Where reading starts; `None` once a reader was started.
    start: Option<StartAt>,
    /// Set by the consuming shard once it has taken every record of the stream shard (its end marker):
    /// only then may a child start, so that a key's records are consumed in lineage order.
    consumed: Arc<AtomicBool>,
}

impl Tracked {
    fn ended(&self) -> bool {
        self.consumed.load(Ordering::Acquire)
    }
}

/// Reads one source until stopped: discovers stream shards, starts their readers in lineage order.
async fn run_source(task: SourceTask, stop: Arc<AtomicBool>, metrics: Arc<ReaderMetrics>) {
    let fail = |msg: String| {
        tracing::error!("source {}: {msg}", task.name);
        for tx in &task.to_shards {
            let _ = tx.send(FromKinesis::Failed(msg.clone()));
        }
    };
    let client = client(&task.cfg.at).await;
    let stream = Stream::new(&task.cfg.at.stream);
    let n = task.to_shards.len();
    let restored: BTreeMap<String, StreamShardPosition> =
        task.restored.iter().flatten().map(|p| (p.shard_id.clone(), p.clone())).collect();
    let mut tracked: BTreeMap<String, Tracked> = BTreeMap::new();
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let mut readers = tokio::task::JoinSet::new();
    let mut first_listing = true;
    let mut next_round_robin = 0;
    while !stop.load(Ordering::Relaxed) {
        match list_shards(&client, &stream, &stop).await {
            Ok(listed) => {
                for s in listed {
                    if tracked.contains_key(&s.id) {
                        continue;
                    }
                    let shard = match s.parents.iter().find_map(|p| tracked.get(p)) {
                        Some(parent) => parent.shard,
                        None => {
                            next_round_robin += 1;
                            (next_round_robin - 1) % n
                        }
                    };
                    let (start, ended) = match restored.get(&s.id) {
                        Some(p) if p.finished => (None, true),
                        Some(p) => (
                            Some(p.sequence.clone().map_or(StartAt::Config(KinesisStart::TrimHorizon), StartAt::After)),
                            false,
                        ),
                        // Appeared since the checkpoint, or after the job started: all of it is new.
                        None if task.restored.is_some() || !first_listing => {
                            (Some(StartAt::Config(KinesisStart::TrimHorizon)), false)
                        }
                        // At the first start, a closed stream shard holds nothing newer than LATEST.
                        None if s.closed && task.cfg.start == KinesisStart::Latest => (None, true),
                        None => (Some(StartAt::Config(task.cfg.start)), false),
                    };
                    if let Some(p) = restored.get(&s.id) {
                        let _ = task.to_shards[shard].send(FromKinesis::Assigned(p.clone()));
                    }
                    let consumed = Arc::new(AtomicBool::new(ended));
                    tracked.insert(s.id.clone(), Tracked { parents: s.parents, shard, start, consumed });
                }
                first_listing = false;
            }
            Err(e) => {
                fail(e);
                return;
            }
        }
        // Start every stream shard whose parents have all ended (or are unknown: expired past retention).
        let ready: Vec<String> = tracked
            .iter()
            .filter(|(_, t)| t.start.is_some() && t.parents.iter().all(|p| tracked.get(p).is_none_or(Tracked::ended)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            let t = tracked.get_mut(&id).expect("listed above");
            let start = t.start.take().expect("filtered on it");
            let tx = task.to_shards[t.shard].clone();
            if !restored.contains_key(&id) {
                let _ = tx.send(FromKinesis::Assigned(StreamShardPosition {
                    shard_id: id.clone(),
                    sequence: None,
                    finished: false,
                }));
            }
            tracing::info!("source {}: reading stream shard {id} of {} on shard {}", task.name, stream.label, t.shard);
            let stats = Arc::new(ReaderStats::default());
            metrics.lock().expect("reader metrics lock").insert((task.name.clone(), id.clone()), stats.clone());
            readers.spawn(read_stream_shard(
                client.clone(),
                stream.clone(),
                id,
                start,
                Channel { tx, failed: ended_tx.clone(), stats, consumed: t.consumed.clone() },
                stop.clone(),
            ));
        }
        // Until the next listing, or until a stream shard with a waiting child was consumed to its end (list
        // again at once: the child is listed by then); a failed reader stops the source.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(KINESIS_DISCOVERY_INTERVAL_MS);
        let waiting: Vec<Arc<AtomicBool>> =
            tracked.values().filter(|t| !t.ended() && t.start.is_none()).map(|t| t.consumed.clone()).collect();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep(Duration::from_millis(KINESIS_POLL_INTERVAL_MS)) => {
                    if stop.load(Ordering::Relaxed) || waiting.iter().any(|c| c.load(Ordering::Acquire)) {
                        break;
                    }
                }
                Some((_, error)) = ended_rx.recv() => {
                    fail(error);
                    return;
                }
            }
        }
    }
    readers.shutdown().await;
}

/// Reads one stream shard from `start` to its end (or until stopped), sending its records to `tx`. Reports
/// the end (or a fatal error) on `ended`.
/// Where a reader sends: its shard's channel, the source's error channel, its stats, and the flag the shard
/// sets once it consumed the stream shard's end.
struct Channel {
    tx: Sender<FromKinesis>,
    failed: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    stats: Arc<ReaderStats>,
    consumed: Arc<AtomicBool>,
}

async fn read_stream_shard(
    client: Client,
    stream: Stream,
    id: String,
    start: StartAt,
    to: Channel,
    stop: Arc<AtomicBool>,
) {
    let Channel { tx, failed, stats, consumed } = to;
    let shard_name: Arc<str> = Arc::from(id.as_str());
    let mut last: Option<String> = match &start {
        StartAt::After(s) => Some(s.clone()),
        StartAt::Config(_) => None,
    };
    let mut iterator: Option<String> = None;
    let mut attempt = 0u32;
    let mut idle_ms = KINESIS_POLL_INTERVAL_MS;
    while !stop.load(Ordering::Relaxed) {
        let Some(it) = iterator.clone() else {
            let req = client
                .get_shard_iterator()
                .set_stream_name(stream.name.clone())
                .set_stream_arn(stream.arn.clone())
                .shard_id(&id);
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
                        let _ =
                            send(&tx, FromKinesis::Ended { stream_shard: shard_name.clone(), consumed }, &stop).await;
                        return;
                    }
                }
                Err(e) if retryable(&e) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    let at = last.as_deref().map_or(String::new(), |s| format!(" after sequence number {s}"));
                    let _ = failed.send((
                        id.clone(),
                        (format!(
                            "cannot read stream shard {id} of {}{at}: {} (a position older than the stream's retention cannot be resumed: the records after it are gone)",
                            stream.label,
                            DisplayErrorContext(&e)
                        )),
                    ));
                    return;
                }
            }
            continue;
        };
        match client.get_records().shard_iterator(it).limit(KINESIS_GET_RECORDS_MAX).send().await {
            Ok(out) => {
                attempt = 0;
                let records: Vec<KinesisRecord> = out
                    .records()
                    .iter()
                    .map(|r| KinesisRecord {
                        sequence: r.sequence_number().to_string(),
                        data: r.data().as_ref().to_vec(),
                    })
                    .collect();
                let got = records.len();
                stats.records.fetch_add(got as u64, Ordering::Relaxed);
                stats.millis_behind.store(out.millis_behind_latest().unwrap_or(0), Ordering::Relaxed);
                if let Some(r) = records.last() {
                    last = Some(r.sequence.clone());
                }
                if got > 0
                    && !send(&tx, FromKinesis::Records { stream_shard: shard_name.clone(), records }, &stop).await
                {
                    return;
                }
                match out.next_shard_iterator() {
                    None => {
                        let _ =
                            send(&tx, FromKinesis::Ended { stream_shard: shard_name.clone(), consumed }, &stop).await;
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
                let _ = failed.send((
                    id.clone(),
                    format!("cannot read stream shard {id} of {}: {}", stream.label, DisplayErrorContext(&e)),
                ));
                return;
            }
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
