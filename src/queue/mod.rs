//! The exchange: per *channel* (one hash edge of one job's plan), N x N bounded lanes between shards, carrying
//! record batches and, in order with them, control messages. A shard sends to itself through its own lane
//! too, so that every consumer sees one ordered stream per producer.
//!
//! Each lane is a bounded crossbeam channel with exactly one producer shard and one consumer shard. A full
//! lane hands the message back ([`Outbox::try_send`] returns it): backpressure, never a drop and never an
//! unbounded buffer. Each shard has one [`Doorbell`]: a producer rings the consumer's bell after a send, and a
//! consumer rings a producer's bell after it makes room in a lane that producer found full, so a parked shard
//! wakes within microseconds (an eventfd write through glommio's cross-thread waker) without spinning forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use crate::constants::EXCHANGE_LANE_BATCHES_MAX;
use crate::record::BatchBuf;

/// Index of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

/// An exchange channel: one hash edge of one job's plan.
pub type ChannelId = u16;

/// What travels on a lane.
#[derive(Debug)]
pub enum Message {
    Batch(BatchBuf),
    /// The producer's event time on this edge: it will send no row older than this.
    Watermark(i64),
    /// The producer's inputs are idle: stop waiting for its watermark until it sends one.
    Idle,
    /// The producer will send nothing more on this edge.
    EndOfInput,
    /// An aligned checkpoint barrier: the producer's rows of epochs up to this one are all before it.
    Barrier(u64),
}

/// Wakes one parked shard. Ringing costs an atomic swap unless the shard is parked.
#[derive(Debug, Default)]
pub struct Doorbell {
    parked: AtomicBool,
    rung: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Doorbell {
    /// Wakes the shard if it is parked (or about to park).
    pub fn ring(&self) {
        self.rung.store(true, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(w) = self.waker.lock().expect("doorbell lock").take() {
                w.wake();
            }
        }
    }

    /// A future that completes when the bell is rung (or at once if it was rung since the last wait).
    pub fn wait(self: &Arc<Self>) -> DoorbellWait {
        DoorbellWait { bell: self.clone() }
    }

    /// Waits for the bell by watching it for `spin` (the task stays runnable, yielding to the executor, so a
    /// ring is seen within about a microsecond), then parks on it ([`Doorbell::wait`]: a cross-thread wake-up,
    /// tens of microseconds or more). Measured in bench/exchange_wake.rs.
    pub async fn wait_spinning(self: &Arc<Self>, spin: std::time::Duration) {
        if !self.spin_until(std::time::Instant::now() + spin).await {
            self.wait().await
        }
    }

    /// Watches the bell until `until`, yielding to the executor between looks; true if it was rung.
    pub async fn spin_until(&self, until: std::time::Instant) -> bool {
        loop {
            if self.rung.swap(false, Ordering::SeqCst) {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            futures_lite::future::yield_now().await;
        }
    }
}

pub struct DoorbellWait {
    bell: Arc<Doorbell>,
}

impl std::future::Future for DoorbellWait {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let bell = &self.bell;
        if bell.rung.swap(false, Ordering::SeqCst) {
            bell.parked.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        *bell.waker.lock().expect("doorbell lock") = Some(cx.waker().clone());
        bell.parked.store(true, Ordering::SeqCst);
        // A ring between the first check and parking would be missed: look again.
        if bell.rung.swap(false, Ordering::SeqCst) {
            bell.parked.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for DoorbellWait {
    fn drop(&mut self) {
        self.bell.parked.store(false, Ordering::SeqCst);
    }
}

struct Lane {
    tx: Sender<Message>,
    rx: Receiver<Message>,
    /// Set by the producer when it found the lane full; the consumer rings the producer when it takes.
    producer_waiting: AtomicBool,
}

/// All lanes and doorbells of a job graph; shared by the shards.
pub struct Exchange {
    n_shards: usize,
    /// `lanes[(channel * n + from) * n + to]`.
    lanes: Vec<Lane>,
    bells: Vec<Arc<Doorbell>>,
}

impl Exchange {
    pub fn new(n_shards: usize, n_channels: usize) -> Arc<Exchange> {
        let lanes = (0..n_channels * n_shards * n_shards)
            .map(|_| {
                let (tx, rx) = crossbeam_channel::bounded(EXCHANGE_LANE_BATCHES_MAX);
                Lane { tx, rx, producer_waiting: AtomicBool::new(false) }
            })
            .collect();
        let bells = (0..n_shards).map(|_| Arc::new(Doorbell::default())).collect();
        Arc::new(Exchange { n_shards, lanes, bells })
    }

    pub fn n_shards(&self) -> usize {
        self.n_shards
    }

    pub fn doorbell(&self, shard: ShardId) -> Arc<Doorbell> {
        self.bells[shard.idx()].clone()
    }

    fn lane(&self, channel: ChannelId, from: ShardId, to: ShardId) -> &Lane {
        &self.lanes[(channel as usize * self.n_shards + from.idx()) * self.n_shards + to.idx()]
    }

    /// Sends on `channel` from `from` to `to`; a full lane gives the message back.
    pub fn try_send(&self, channel: ChannelId, from: ShardId, to: ShardId, msg: Message) -> Result<(), Message> {
        let lane = self.lane(channel, from, to);
        match lane.tx.try_send(msg) {
            Ok(()) => {
                self.bells[to.idx()].ring();
                Ok(())
            }
            Err(TrySendError::Full(msg)) => {
                lane.producer_waiting.store(true, Ordering::SeqCst);
                // The consumer may have drained the lane between the failed send and the flag: try once more.
                match lane.tx.try_send(msg) {
                    Ok(()) => {
                        self.bells[to.idx()].ring();
                        Ok(())
                    }
                    Err(TrySendError::Full(msg)) | Err(TrySendError::Disconnected(msg)) => Err(msg),
                }
            }
            Err(TrySendError::Disconnected(msg)) => Err(msg),
        }
    }

    /// Takes the next message on `channel` `from` → `to`, if any; wakes `from` if it waits for room.
    pub fn try_recv(&self, channel: ChannelId, from: ShardId, to: ShardId) -> Option<Message> {
        let lane = self.lane(channel, from, to);
        match lane.rx.try_recv() {
            Ok(msg) => {
                if lane.producer_waiting.swap(false, Ordering::SeqCst) {
                    self.bells[from.idx()].ring();
                }
                Some(msg)
            }
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BatchBuilder, DataType};
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn batch(v: i64) -> BatchBuf {
        let mut b = BatchBuilder::new(&[DataType::BigInt]);
        b.push_int(0, v);
        b.end_row();
        b.finish()
    }

    fn value(m: &Message) -> i64 {
        match m {
            Message::Batch(batch) => batch.view().int(0, 0),
            Message::Watermark(watermark) => *watermark,
            _ => -1,
        }
    }

    proptest! {
        /// A lane behaves as a bounded FIFO: what a VecDeque of the same capacity would accept it accepts,
        /// in the same order, and a full lane hands the message back.
        #[test]
        fn lanes_are_bounded_fifos(ops in proptest::collection::vec(any::<bool>(), 0..200)) {
            let ex = Exchange::new(2, 2);
            let (a, b) = (ShardId(0), ShardId(1));
            let mut model: VecDeque<i64> = VecDeque::new();
            for (i, send) in ops.into_iter().enumerate() {
                if send {
                    let msg = if i % 3 == 0 { Message::Watermark(i as i64) } else { Message::Batch(batch(i as i64)) };
                    // Channel 0 carries nothing: channels do not share lanes.
                    match ex.try_send(1, a, b, msg) {
                        Ok(()) => model.push_back(i as i64),
                        Err(back) => {
                            prop_assert_eq!(model.len(), EXCHANGE_LANE_BATCHES_MAX);
                            prop_assert_eq!(value(&back), i as i64);
                        }
                    }
                } else {
                    prop_assert!(ex.try_recv(0, a, b).is_none());
                    prop_assert_eq!(ex.try_recv(1, a, b).map(|m| value(&m)), model.pop_front());
                }
            }
        }
    }

    #[test]
    fn a_consumer_rings_a_blocked_producer() {
        let ex = Exchange::new(2, 1);
        let (a, b) = (ShardId(0), ShardId(1));
        for i in 0..EXCHANGE_LANE_BATCHES_MAX {
            ex.try_send(0, a, b, Message::Watermark(i as i64)).unwrap();
        }
        assert!(ex.try_send(0, a, b, Message::EndOfInput).is_err());
        let bell = ex.doorbell(a);
        bell.rung.store(false, Ordering::SeqCst);
        ex.try_recv(0, a, b).unwrap();
        assert!(bell.rung.load(Ordering::SeqCst), "the producer's bell rings once there is room");
    }
}
