//! One Kinesis source on the control thread: lists the stream shards (ListShards, paginated) at start and
//! every [`KINESIS_DISCOVERY_INTERVAL_MS`], gives each to a shard (a child to the shard of its first parent, so
//! that one FIFO channel carries a key's records across a split; others round robin), and starts one reader
//! per stream shard once all its parents were consumed to their end: `poll.rs` (GetRecords), or `fanout.rs`
//! (SubscribeToShard) when the source names a `consumer`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::Client;
use crossbeam_channel::Sender;

use super::{
    backoff, client, fanout, poll, retryable, FromKinesis, ReaderMetrics, ReaderStats, SourceTask, Stream,
    StreamShardPosition,
};
use crate::config::KinesisStart;
use crate::constants::{KINESIS_DISCOVERY_INTERVAL_MS, KINESIS_POLL_INTERVAL_MS};

/// A stream shard as listed.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    parents: Vec<String>,
    closed: bool,
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
pub(super) enum StartAt {
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
    /// Set once a listing shows the stream shard closed (split or merged): no record is added to it anymore.
    closed: Arc<AtomicBool>,
}

impl Tracked {
    fn ended(&self) -> bool {
        self.consumed.load(Ordering::Acquire)
    }
}

/// Reads one source until stopped: discovers stream shards, starts their readers in lineage order.
pub(super) async fn run_source(task: SourceTask, stop: Arc<AtomicBool>, metrics: Arc<ReaderMetrics>) {
    let fail = |msg: String| {
        tracing::error!("source {}: {msg}", task.name);
        for tx in &task.to_shards {
            let _ = tx.send(FromKinesis::Failed(msg.clone()));
        }
    };
    let client = client(&task.cfg.at).await;
    let stream = Stream::new(&task.cfg.at.stream);
    let fan_out = match &task.cfg.consumer {
        None => None,
        Some(c) => match fanout::register(&client, &stream, c, &stop).await {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                fail(e);
                return;
            }
        },
    };
    let n = task.to_shards.len();
    let restored: BTreeMap<String, StreamShardPosition> =
        task.restored.iter().flatten().map(|p| (p.shard_id.clone(), p.clone())).collect();
    let mut tracked: BTreeMap<String, Tracked> = BTreeMap::new();
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let mut readers = tokio::task::JoinSet::new();
    let start_ahead_logged = Arc::new(AtomicBool::new(false));
    let mut first_listing = true;
    let mut next_round_robin = 0;
    while !stop.load(Ordering::Relaxed) {
        match list_shards(&client, &stream, &stop).await {
            Ok(listed) => {
                for s in listed {
                    if let Some(t) = tracked.get(&s.id) {
                        if s.closed {
                            t.closed.store(true, Ordering::Release);
                        }
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
                    let closed = Arc::new(AtomicBool::new(s.closed));
                    tracked.insert(s.id.clone(), Tracked { parents: s.parents, shard, start, consumed, closed });
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
            let to =
                Channel { tx, failed: ended_tx.clone(), stats, consumed: t.consumed.clone(), closed: t.closed.clone() };
            let reader = Reader {
                client: client.clone(),
                stream: stream.clone(),
                id,
                stop: stop.clone(),
                start_ahead_logged: start_ahead_logged.clone(),
            };
            match &fan_out {
                None => readers.spawn(poll::read_stream_shard(reader, start, to)),
                Some(sub) => readers.spawn(fanout::read_stream_shard(reader, sub.clone(), start, to)),
            };
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

/// What a reader reads: one stream shard, until it ends or the run stops.
pub(super) struct Reader {
    pub client: Client,
    pub stream: Stream,
    pub id: String,
    pub stop: Arc<AtomicBool>,
    /// Set once a reader of the source logged that Kinesis refused its start as in the future.
    pub start_ahead_logged: Arc<AtomicBool>,
}

impl Reader {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Where a reader sends: its shard's channel, the source's error channel, its stats, the flag the shard sets
/// once it consumed the stream shard's end, and the flag the listing sets once the stream shard is closed.
pub(super) struct Channel {
    pub tx: Sender<FromKinesis>,
    pub failed: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    pub stats: Arc<ReaderStats>,
    pub consumed: Arc<AtomicBool>,
    pub closed: Arc<AtomicBool>,
}

impl Channel {
    /// Stops the source with `message` (the reader returns after this).
    pub fn fail(&self, id: &str, message: String) {
        let _ = self.failed.send((id.to_string(), message));
    }

    /// Stops the source because the records after `sequence` are gone, counting it in the stream shard's
    /// metrics: never skipped silently.
    pub fn fail_position_lost(&self, reader: &Reader, sequence: &str, error: impl std::fmt::Display) {
        self.stats.position_lost.store(true, Ordering::Relaxed);
        self.fail(
            &reader.id,
            format!(
                "cannot resume stream shard {} of {} after sequence number {sequence}: the position is past the \
                 stream's retention (or the stream was created again), so the records after it are gone; to go on \
                 knowing they are lost, start the job without its checkpoint (a new state_dir) and `start` set as \
                 wanted. The error: {error}",
                reader.id, reader.stream.label
            ),
        );
    }
}
