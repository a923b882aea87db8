//! A shard's Kinesis split: the records of the stream shards the control thread gave this shard
//! (`kinesis/`), taken from a bounded channel without waiting, each decoded and validated once as a JSON
//! object of the source's schema (records the KPL aggregated are unpacked first: `kpl.rs`). It tracks, per stream shard, the last sequence number it consumed: the
//! position a checkpoint records.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};

pub mod kpl;

use super::BadInput;
use crate::kinesis::{FromKinesis, KinesisRecord, StreamShardPosition};
use crate::record::json::JsonDecoder;
use crate::record::{BatchBuilder, Schema};

/// A record taken from the channel, with its stream shard; `Err` is the stream shard's end, with the flag to
/// set once it is consumed.
type Taken = (Arc<str>, Result<KinesisRecord, Arc<AtomicBool>>);

pub struct KinesisSplit {
    stream: String,
    rx: Receiver<FromKinesis>,
    decoder: JsonDecoder,
    /// Records received and not yet decoded, with their stream shard; `Err` marks the end of a stream shard
    /// (it counts as finished, and its children may start, only once every record before it was consumed).
    pending: VecDeque<Taken>,
    positions: BTreeMap<String, StreamShardPosition>,
    /// Per stream shard being consumed: the largest event time read and when it last read (shard clock, ms),
    /// for the split's event time (see [`Self::event_time`]).
    times: BTreeMap<Arc<str>, (i64, u64)>,
    /// The stream shard whose records the last `read` returned.
    last_read: Option<Arc<str>>,
}

impl KinesisSplit {
    pub fn new(stream: &str, rx: Receiver<FromKinesis>, schema: Schema) -> KinesisSplit {
        KinesisSplit {
            stream: stream.to_string(),
            rx,
            decoder: JsonDecoder::new(schema),
            pending: VecDeque::new(),
            positions: BTreeMap::new(),
            times: BTreeMap::new(),
            last_read: None,
        }
    }

    /// The split's event time at `now_ms`: the least largest-event-time over its stream shards that read
    /// within `idle_ms` (Kinesis watermarks per stream shard, as Flink's: a lagging stream shard holds the
    /// watermark back, a quiet one stops doing so after the idle timeout; one that has read nothing yet holds
    /// it until then). `None` when every stream shard is idle or finished.
    pub fn event_time(&self, now_ms: u64, idle_ms: u64) -> Option<i64> {
        self.times
            .values()
            .filter(|(_, last)| idle_ms == 0 || now_ms.saturating_sub(*last) < idle_ms)
            .map(|(max, _)| *max)
            .min()
    }

    /// Notes that the last `read` returned rows up to event time `max_event` at `now_ms`.
    pub fn observe(&mut self, max_event: i64, now_ms: u64) {
        if let Some(t) = self.last_read.as_ref().and_then(|s| self.times.get_mut(s)) {
            t.0 = t.0.max(max_event);
            t.1 = now_ms;
        }
    }

    /// Decodes up to `max` records of one stream shard into `out` (so that [`Self::observe`] can credit their
    /// event times to it); bad ones go to `bad`. Returns the rows added, or the error that stopped the source.
    /// `now_ms` is the shard's clock.
    pub fn read(
        &mut self,
        out: &mut BatchBuilder,
        max: usize,
        bad: &mut BadInput,
        now_ms: u64,
    ) -> Result<usize, String> {
        let mut rows = 0;
        self.last_read = None;
        while rows < max {
            if let (Some(last), Some((next, _))) = (&self.last_read, self.pending.front()) {
                if last != next && rows > 0 {
                    break;
                }
            }
            let Some((stream_shard, record)) = self.pending.pop_front() else {
                match self.rx.try_recv() {
                    Ok(msg) => self.take(msg, now_ms)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        return Err("the Kinesis reader stopped (see the error logged before)".into())
                    }
                }
                continue;
            };
            let record = match record {
                Ok(r) => r,
                Err(consumed) => {
                    if let Some(p) = self.positions.get_mut(&*stream_shard) {
                        p.finished = true;
                    }
                    consumed.store(true, Ordering::Release);
                    // A finished stream shard holds nothing back any more.
                    self.times.remove(&stream_shard);
                    continue;
                }
            };
            self.last_read = Some(stream_shard.clone());
            let at = || format!("kinesis {}/{stream_shard} sequence number {}", self.stream, record.sequence);
            // A KPL aggregate carries many user records: all of them are decoded now, so that the position
            // (the aggregate's sequence number) never splits one. Line numbers name the user record in it.
            let users = match kpl::deaggregate(&record.data) {
                None => Ok(vec![record.data.as_slice()]),
                Some(r) => r,
            };
            match users {
                Ok(users) => {
                    for (i, data) in users.into_iter().enumerate() {
                        match self.decoder.decode_into(data, out) {
                            Ok(()) => rows += 1,
                            Err(e) => bad.report(&at(), i as u64, &e.0, Some(data)),
                        }
                    }
                }
                Err(e) => bad.report(&at(), 0, &e, Some(&record.data)),
            }
            if let Some(p) = self.positions.get_mut(&*stream_shard) {
                p.sequence = Some(record.sequence);
            }
        }
        Ok(rows)
    }

    fn take(&mut self, msg: FromKinesis, now_ms: u64) -> Result<(), String> {
        match msg {
            FromKinesis::Assigned(p) => {
                if !p.finished {
                    self.times.insert(Arc::from(p.shard_id.as_str()), (i64::MIN, now_ms));
                }
                self.positions.insert(p.shard_id.clone(), p);
            }
            FromKinesis::Records { stream_shard, records } => {
                self.pending.extend(records.into_iter().map(|r| (stream_shard.clone(), Ok(r))));
            }
            FromKinesis::Ended { stream_shard, consumed } => self.pending.push_back((stream_shard, Err(consumed))),
            FromKinesis::Failed(e) => return Err(e),
        }
        Ok(())
    }

    /// The position of every stream shard this split was given: what a checkpoint records. Records received
    /// but not decoded yet are not in it (a restored run reads them again).
    pub fn positions(&self) -> Vec<StreamShardPosition> {
        self.positions.values().cloned().collect()
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::BadInput;

    fn record(seq: u64, ts: i64) -> KinesisRecord {
        KinesisRecord { sequence: seq.to_string(), data: format!(r#"{{"ts":{ts}}}"#).into_bytes() }
    }

    /// Per stream shard event time: the lagging stream shard holds it back, one that read nothing holds it
    /// back until idle, a quiet one stops holding it back after the idle timeout, a finished one at once.
    #[test]
    fn the_least_active_stream_shard_sets_the_event_time() {
        let schema = Schema::parse("ts BIGINT").unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut split = KinesisSplit::new("s", rx, schema.clone());
        let mut out = BatchBuilder::new(&schema.types());
        let mut bad = BadInput::new("s", Arc::default(), false);
        let assign = |id: &str| {
            FromKinesis::Assigned(StreamShardPosition { shard_id: id.into(), sequence: None, finished: false })
        };
        tx.send(assign("a")).unwrap();
        tx.send(assign("b")).unwrap();
        tx.send(FromKinesis::Records { stream_shard: "a".into(), records: vec![record(1, 100), record(2, 200)] })
            .unwrap();
        tx.send(FromKinesis::Records { stream_shard: "b".into(), records: vec![record(1, 50)] }).unwrap();
        // One read takes one stream shard's records.
        assert_eq!(split.read(&mut out, 100, &mut bad, 0).unwrap(), 2);
        split.observe(200, 0);
        assert_eq!(split.event_time(10, 1000), Some(i64::MIN), "b has read nothing yet");
        assert_eq!(split.read(&mut out, 100, &mut bad, 10).unwrap(), 1);
        split.observe(50, 10);
        assert_eq!(split.event_time(20, 1000), Some(50), "b lags");
        assert_eq!(split.event_time(1005, 1000), Some(50), "b read at 10: still active");
        assert_eq!(split.event_time(1015, 1000), None, "both idle");
        let consumed = Arc::new(AtomicBool::new(false));
        tx.send(FromKinesis::Ended { stream_shard: "b".into(), consumed: consumed.clone() }).unwrap();
        split.read(&mut out, 100, &mut bad, 20).unwrap();
        assert!(consumed.load(Ordering::Acquire));
        assert_eq!(split.event_time(30, 1000), Some(200), "b finished: a alone counts");
        assert!(split
            .positions()
            .iter()
            .any(|p| p.shard_id == "b" && p.finished && p.sequence.as_deref() == Some("1")));
    }
}
