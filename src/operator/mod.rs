//! Operators: pure computation over batches. They do no I/O and know nothing of files, Kinesis, S3, shards
//! or queues; the shard's runtime (`shard::job`) feeds them batches, watermarks and time, delivers what they
//! emit, and owns when their state is snapshotted and restored.
//!
//! Every operator implements [`Operator`]. Its state lives in its own tables (the generic keyed tables of
//! `state::backend`, or a structure of its own such as the window aggregate's slices), which it writes into
//! the checkpoint through a [`StateWriter`] and reads back through [`Operator::restore`]: the runtime decides
//! when, never the operator.

pub mod accumulator;
pub mod calc;
pub mod group_agg;
pub mod join;
pub mod key;
pub mod keyed;
pub mod local_agg;
pub mod rank;
pub mod row;
pub mod union;
pub mod window_agg;
pub mod window_assign;

use crate::constants::{BATCH_BYTES_MAX, EXCHANGE_BATCH_ROWS_MAX};
use crate::record::{BatchBuf, BatchBuilder, DataType};
use crate::state::log::{BlobEncoder, StateId};

/// Where an operator puts the rows it emits: a builder of its output schema. Full batches are finished as
/// rows come ([`Output::row_done`]); the runtime decides when a partial one goes (at once for a downstream
/// operator, after a linger for a sink).
#[derive(Debug)]
pub struct Output {
    pub rows: BatchBuilder,
    done: Vec<BatchBuf>,
}

impl Output {
    pub fn new(types: &[DataType]) -> Output {
        Output { rows: BatchBuilder::new(types), done: Vec::new() }
    }

    /// True when the rows built so far make a full batch.
    pub fn is_full(&self) -> bool {
        self.rows.n_rows() >= EXCHANGE_BATCH_ROWS_MAX || self.rows.size_bytes() >= BATCH_BYTES_MAX
    }

    /// Call after appending rows: finishes the batch if it is full.
    #[inline]
    pub fn row_done(&mut self) {
        if self.is_full() {
            self.flush();
        }
    }

    /// Finishes the rows built so far into a batch (if any).
    pub fn flush(&mut self) {
        if !self.rows.is_empty() {
            self.done.push(self.rows.finish());
        }
    }

    /// The finished batches, in emission order.
    pub fn take_done(&mut self) -> std::vec::Drain<'_, BatchBuf> {
        self.done.drain(..)
    }

    pub fn has_done(&self) -> bool {
        !self.done.is_empty()
    }

    /// True when nothing is waiting: no finished batch and no partial one.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty() && self.rows.is_empty()
    }
}

/// The watermark an operator resumes at after a restore: the least its key groups had reached (`floors`, per
/// key group; `owned`, this shard's key groups). Windows fired above it on another layout are gone from the
/// state, so nothing fires twice.
pub fn restored_watermark(floors: &[i64], owned: &[u16]) -> i64 {
    owned.iter().filter_map(|kg| floors.get(*kg as usize)).copied().min().unwrap_or(i64::MIN)
}

/// Writes one operator's state into a checkpoint: the entries go to state table `table` of this operator.
pub struct StateWriter<'e> {
    pub enc: &'e mut BlobEncoder,
    pub job: u16,
    pub node: u16,
    pub key_groups: u32,
}

impl StateWriter<'_> {
    pub fn id(&self, table: u16) -> StateId {
        StateId { job: self.job, node: self.node, table }
    }
}

/// One restored entry of a state table: its namespace, key and value (`None`: the entry was deleted).
#[derive(Debug, Clone, Copy)]
pub struct StateEntry<'a> {
    pub namespace: i64,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// What every operator is to the runtime. Rows in through [`Operator::process`], out through the
/// [`Output`]; event time in through [`Operator::advance_watermark`]; processing time through
/// [`Operator::on_processing_time`].
pub trait Operator {
    /// Rows arrived on input `port` (the batch's lineage, under a probe, is beside it).
    fn process(&mut self, port: usize, input: &BatchBuf, out: &mut Output);

    /// Event time reached `watermark` on every input (never called with a smaller one): fire what it
    /// completes.
    fn advance_watermark(&mut self, _watermark: i64, _out: &mut Output) {}

    /// The watermark to pass downstream once this operator has seen `input` (its emitted rows must not be
    /// late for it): the input's by default.
    fn output_watermark(&self, input: i64) -> i64 {
        input
    }

    /// Wall-clock time reached `now_ms` (epoch milliseconds): processing-time timers and state TTL.
    fn on_processing_time(&mut self, _now_ms: i64, _out: &mut Output) {}

    /// When the operator next wants [`Operator::on_processing_time`], if ever.
    fn next_processing_time(&self) -> Option<i64> {
        None
    }

    /// Every input ended (after the final watermark): emit what is left.
    fn end_of_input(&mut self, _out: &mut Output) {}

    /// Rows dropped so far because event time had passed them.
    fn late_records(&self) -> u64 {
        0
    }

    /// From now on, remember what changes, so that [`Operator::snapshot`] can write deltas.
    fn track_changes(&mut self, _key_groups: u32) {}

    /// Writes the state that changed since the last snapshot (everything if `full`), and forgets the changes.
    fn snapshot(&mut self, _full: bool, _w: &mut StateWriter<'_>) {}

    /// Puts back entries of state table `table` of `key_group` (before any row is processed), in log order.
    fn restore(&mut self, table: u16, _key_group: u32, _entries: &[StateEntry<'_>]) -> Result<(), String> {
        Err(format!("state of table {table}, but this operator keeps no state"))
    }

    /// Room for `keys` more entries of `key_bytes` bytes of keys in all, in `namespace` of `table`, before a
    /// restore puts them there.
    fn reserve(&mut self, _table: u16, _namespace: i64, _keys: usize, _key_bytes: usize) {}

    /// Ends a restore. `floors` holds, per key group, the watermark this operator had fired up to on the
    /// shard that owned it; `owned` are the key groups this shard owns now.
    fn finish_restore(&mut self, _floors: &[i64], _owned: &[u16]) {}

    /// The watermark this operator has fired up to, recorded in checkpoints ([`Operator::finish_restore`]'s
    /// floors after a restore onto another layout).
    fn checkpoint_watermark(&self) -> i64 {
        i64::MIN
    }
}
