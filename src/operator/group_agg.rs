//! The unbounded aggregation (Flink's GroupAggregate): accumulators per group key, kept forever (or until the
//! state TTL), and an updating result: the first row of a key inserts its result (+I), a change of the
//! result retracts the old one and adds the new one (-U, +U), the last row of a key taken back deletes it
//! (-D). A result that does not change emits nothing.
//!
//! Over a changelog input, rows that are retracted (-U, -D) are taken back out of the accumulators
//! (`Acc::retract`): MIN and MAX keep every value with its multiplicity so that losing the current extreme
//! finds the next one.
//!
//! State: one table, key → (rows counted, accumulators).

use super::accumulator::{decode_accs_from, encode_accs, Acc};
use super::calc::run_calc_columnar;
use super::key::{decode_key_into, encode_key, key_hash};
use super::{Operator, Output, StateEntry, StateWriter};
use crate::constants::{
    EXCHANGE_BATCH_ROWS_MAX, PROCESSING_TICK_MS, STATE_TTL_SWEEP_ENTRIES, STATE_TTL_SWEEP_INTERVAL_MS,
};
use crate::record::types::{DataType, Value};
use crate::record::{BatchBuf, BatchBuilder, RowKind};
use crate::sql::ops::GroupAggPlan;
use crate::sql::AggCall;
use crate::state::backend::{KeyedTable, StateValue};

/// A group's state: how many rows it holds (it is deleted at zero), and its accumulators.
#[derive(Debug)]
pub struct Group {
    rows: i64,
    accs: Vec<Acc>,
}

/// Encodes as rows i64 then the accumulators; decoding needs the aggregate calls, so it goes through
/// [`GroupCodec`].
impl StateValue for Group {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rows.to_le_bytes());
        encode_accs(&self.accs, out);
    }
    fn decode(_: &[u8]) -> Result<Self, String> {
        Err("a group is decoded with its aggregates (GroupAggregator::restore)".into())
    }
}

const TABLE_GROUPS: u16 = 0;

pub struct GroupAggregator {
    plan: GroupAggPlan,
    key_types: Vec<DataType>,
    groups: KeyedTable<Group>,
    key_buf: Vec<u8>,
    scratch: Vec<u8>,
    /// `[keys..., aggregates...]` rows with their kinds, before HAVING and the SELECT list.
    agg_out: BatchBuilder,
    selection: Vec<u32>,
    /// Results before a change, to compare with after.
    before: Vec<Value>,
    now_ms: i64,
    next_sweep_ms: i64,
}

impl GroupAggregator {
    pub fn new(plan: &GroupAggPlan, key_groups: u32) -> GroupAggregator {
        GroupAggregator {
            key_types: plan.input.types()[..plan.n_keys].to_vec(),
            groups: KeyedTable::new(TABLE_GROUPS, key_groups, plan.ttl_ms),
            key_buf: Vec::new(),
            scratch: Vec::new(),
            agg_out: BatchBuilder::new(&plan.output.types()),
            selection: Vec::new(),
            before: Vec::new(),
            now_ms: wall_ms(),
            next_sweep_ms: 0,
            plan: plan.clone(),
        }
    }

    fn new_accs(&self) -> Vec<Acc> {
        let calls: &[AggCall] = &self.plan.aggs;
        if self.plan.retracting {
            calls.iter().map(Acc::new_retracting).collect()
        } else {
            calls.iter().map(Acc::new).collect()
        }
    }

    /// Appends `[key, results]` as a row of `kind`.
    fn emit(&mut self, key: &[u8], results: Option<&[Value]>, accs: Option<&[Acc]>, kind: RowKind) {
        let n = self.plan.n_keys;
        decode_key_into(key, &self.key_types, &mut self.agg_out);
        match (results, accs) {
            (Some(values), _) => {
                for (i, v) in values.iter().enumerate() {
                    self.agg_out.push_datum(n + i, &v.as_datum());
                }
            }
            (None, Some(accs)) => {
                for (i, (acc, call)) in accs.iter().zip(&self.plan.aggs).enumerate() {
                    self.agg_out.push_datum(n + i, &acc.result(call));
                }
            }
            (None, None) => unreachable!("a result comes from values or accumulators"),
        }
        self.agg_out.end_row_as(kind);
    }

    /// Runs HAVING and the SELECT list over the rows gathered so far and emits them.
    fn flush(&mut self, out: &mut Output) {
        if self.agg_out.is_empty() {
            return;
        }
        let rows = self.agg_out.finish();
        run_calc_columnar(&self.plan.post, &rows.view(), &mut out.rows, &mut self.selection);
        out.row_done();
    }
}

fn results(accs: &[Acc], calls: &[AggCall], into: &mut Vec<Value>) {
    into.clear();
    into.extend(accs.iter().zip(calls).map(|(a, c)| a.result(c).to_value()));
}

fn same(a: &[Value], b: &[Value]) -> bool {
    super::row::same_row(a, b)
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Operator for GroupAggregator {
    fn process(&mut self, _port: usize, input: &BatchBuf, out: &mut Output) {
        let view = input.view();
        let n_keys = self.plan.n_keys;
        let now = self.now_ms;
        let mut after = Vec::new();
        for row in 0..view.n_rows() {
            let kind = view.kind(row);
            encode_key(&view, row, n_keys, &mut self.key_buf);
            let hash = key_hash(&self.key_buf);
            let key = std::mem::take(&mut self.key_buf);
            if kind.is_accumulate() {
                let fresh = self.new_accs();
                let calls = &self.plan.aggs;
                let g = self.groups.get_or_insert_with(hash, &key, now, || Group { rows: 0, accs: fresh });
                let first = g.rows == 0;
                if !first {
                    results(&g.accs, calls, &mut self.before);
                }
                for (acc, call) in g.accs.iter_mut().zip(calls) {
                    acc.update(call.arg.map(|c| view.datum(c, row)), &mut self.scratch);
                }
                g.rows += 1;
                results(&g.accs, calls, &mut after);
                if first {
                    self.emit(&key, Some(&after), None, RowKind::Insert);
                } else if !same(&self.before, &after) {
                    let before = std::mem::take(&mut self.before);
                    self.emit(&key, Some(&before), None, RowKind::UpdateBefore);
                    self.emit(&key, Some(&after), None, RowKind::UpdateAfter);
                    self.before = before;
                }
            } else {
                let calls = &self.plan.aggs;
                // A retraction of a key with no state (expired, or never seen) takes nothing away.
                let Some(g) = self.groups.get_mut(hash, &key, now) else {
                    self.key_buf = key;
                    continue;
                };
                results(&g.accs, calls, &mut self.before);
                for (acc, call) in g.accs.iter_mut().zip(calls) {
                    acc.retract(call.arg.map(|c| view.datum(c, row)), &mut self.scratch);
                }
                g.rows -= 1;
                if g.rows <= 0 {
                    self.groups.remove(hash, &key);
                    let before = std::mem::take(&mut self.before);
                    self.emit(&key, Some(&before), None, RowKind::Delete);
                    self.before = before;
                } else {
                    results(&g.accs, calls, &mut after);
                    if !same(&self.before, &after) {
                        let before = std::mem::take(&mut self.before);
                        self.emit(&key, Some(&before), None, RowKind::UpdateBefore);
                        self.emit(&key, Some(&after), None, RowKind::UpdateAfter);
                        self.before = before;
                    }
                }
            }
            self.key_buf = key;
            if self.agg_out.n_rows() >= EXCHANGE_BATCH_ROWS_MAX {
                self.flush(out);
            }
        }
        self.flush(out);
    }

    fn on_processing_time(&mut self, now_ms: i64, _out: &mut Output) {
        self.now_ms = now_ms;
        if now_ms >= self.next_sweep_ms && self.plan.ttl_ms.is_some() {
            // Expired groups are forgotten without output, as Flink's state TTL does.
            let _ = self.groups.expire(now_ms, STATE_TTL_SWEEP_ENTRIES);
            self.next_sweep_ms = now_ms + STATE_TTL_SWEEP_INTERVAL_MS;
        }
    }

    fn next_processing_time(&self) -> Option<i64> {
        // With a TTL, the clock that stamps writes is kept current, and expired groups are swept.
        self.plan.ttl_ms.map(|_| self.now_ms + PROCESSING_TICK_MS)
    }

    fn track_changes(&mut self, _key_groups: u32) {
        self.groups.track_changes();
    }

    fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        self.groups.snapshot(full, w);
    }

    fn restore(&mut self, table: u16, key_group: u32, entries: &[StateEntry<'_>]) -> Result<(), String> {
        if table != TABLE_GROUPS {
            return Err(format!("a group aggregate has no state table {table}"));
        }
        let calls = self.plan.aggs.clone();
        self.groups.restore_with(key_group, entries, |bytes| {
            if bytes.len() < 8 {
                return Err("a group's state ends early".into());
            }
            let rows = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            let (accs, rest) = decode_accs_from(&bytes[8..], &calls)?;
            if !rest.is_empty() {
                return Err(format!("{} bytes left over after a group's accumulators", rest.len()));
            }
            Ok(Group { rows, accs: accs.into_vec() })
        })
    }
}
