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
}

impl KinesisSplit {
    pub fn new(stream: &str, rx: Receiver<FromKinesis>, schema: Schema) -> KinesisSplit {
        KinesisSplit {
            stream: stream.to_string(),
            rx,
            decoder: JsonDecoder::new(schema),
            pending: VecDeque::new(),
            positions: BTreeMap::new(),
        }
    }

    /// Decodes up to `max` records into `out`; bad ones go to `bad`. Returns the rows added, or the error that
    /// stopped the source.
    pub fn read(&mut self, out: &mut BatchBuilder, max: usize, bad: &mut BadInput) -> Result<usize, String> {
        let mut rows = 0;
        while rows < max {
            let Some((stream_shard, record)) = self.pending.pop_front() else {
                match self.rx.try_recv() {
                    Ok(msg) => self.take(msg)?,
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
                    continue;
                }
            };
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

    fn take(&mut self, msg: FromKinesis) -> Result<(), String> {
        match msg {
            FromKinesis::Assigned(p) => {
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
