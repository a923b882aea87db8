//! The unbounded aggregation (Flink's GroupAggregate): accumulators per group key, kept forever (or until the
//! state TTL), and an updating result: the first row of a key inserts its result (+I), a change of the
//! result retracts the old one and adds the new one (-U, +U), the last row of a key taken back deletes it
//! (-D). A result that does not change emits nothing. As with Flink's mini-batch aggregation, a batch's
//! changes are folded per key: a key emits once per input batch, from its result before the batch to its
//! result after it.
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
use std::collections::HashSet;

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
    /// The keys the batch being processed changed, in the order first changed.
    touched: Vec<Touched>,
    touched_keys: HashSet<Vec<u8>>,
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
            touched: Vec::new(),
            touched_keys: HashSet::new(),
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

    /// Emits each key the batch touched once, from its result before the batch to its result after it (as
    /// Flink's mini-batch aggregation does): +I for a new group, -D for a group gone, -U/+U for a changed
    /// result, nothing for an unchanged one.
    fn emit_changes(&mut self, out: &mut Output) {
        let now = self.now_ms;
        let mut after = Vec::new();
        let touched = std::mem::take(&mut self.touched);
        for t in &touched {
            let now_there = match self.groups.get(t.hash, &t.key, now) {
                Some(g) => {
                    results(&g.accs, &self.plan.aggs, &mut after);
                    true
                }
                None => false,
            };
            match (&t.before, now_there) {
                (None, true) => self.emit(&t.key, Some(&after), None, RowKind::Insert),
                (Some(before), false) => self.emit(&t.key, Some(before), None, RowKind::Delete),
                (Some(before), true) if !same(before, &after) => {
                    self.emit(&t.key, Some(before), None, RowKind::UpdateBefore);
                    self.emit(&t.key, Some(&after), None, RowKind::UpdateAfter);
                }
                _ => {}
            }
            if self.agg_out.n_rows() >= EXCHANGE_BATCH_ROWS_MAX {
                self.flush(out);
            }
        }
        self.flush(out);
        self.touched = touched;
        self.touched.clear();
        self.touched_keys.clear();
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

/// A key changed by the batch being processed, with its result before the batch (`None`: no group).
struct Touched {
    key: Vec<u8>,
    hash: u64,
    before: Option<Vec<Value>>,
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
        for row in 0..view.n_rows() {
            let kind = view.kind(row);
            encode_key(&view, row, n_keys, &mut self.key_buf);
            let hash = key_hash(&self.key_buf);
            if !self.touched_keys.contains(&self.key_buf) {
                // The key's result before this batch, to compare with after it.
                let calls = &self.plan.aggs;
                let before = self.groups.get(hash, &self.key_buf, now).map(|g| {
                    let mut r = Vec::with_capacity(calls.len());
                    results(&g.accs, calls, &mut r);
                    r
                });
                self.touched_keys.insert(self.key_buf.clone());
                self.touched.push(Touched { key: self.key_buf.clone(), hash, before });
            }
            let calls = &self.plan.aggs;
            if kind.is_accumulate() {
                let fresh = self.new_accs();
                let calls = &self.plan.aggs;
                let g = self.groups.get_or_insert_with(hash, &self.key_buf, now, || Group { rows: 0, accs: fresh });
                for (acc, call) in g.accs.iter_mut().zip(calls) {
                    acc.add_row(call, &view, row, &mut self.scratch);
                }
                g.rows += 1;
            } else if let Some(g) = self.groups.get_mut(hash, &self.key_buf, now) {
                for (acc, call) in g.accs.iter_mut().zip(calls) {
                    acc.retract(call.arg.map(|c| view.datum(c, row)), &mut self.scratch);
                }
                g.rows -= 1;
                if g.rows <= 0 {
                    self.groups.remove(hash, &self.key_buf);
                }
            }
            // (A retraction of a key with no state, expired or never seen, takes nothing away.)
        }
        self.emit_changes(out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::types::Schema;
    use crate::sql::physical::NodeOp;
    use crate::sql::plan::TableInfo;
    use crate::sql::plan_job;
    use std::collections::BTreeMap;

    fn aggregator() -> GroupAggregator {
        let mut tables = BTreeMap::new();
        let schema = Schema::parse("k VARCHAR, v BIGINT").unwrap();
        tables.insert("t".to_string(), TableInfo { schema, watermark: None });
        let sql = "INSERT INTO o SELECT k, SUM(v) AS s FROM t GROUP BY k";
        let plan = plan_job(sql, &tables, &["o".to_string()]).unwrap();
        let g = plan.nodes.iter().find_map(|n| match &n.op {
            NodeOp::GroupAgg(g) => Some(g.clone()),
            _ => None,
        });
        GroupAggregator::new(&g.expect("a group aggregate"), 4)
    }

    /// Feeds one batch of `(kind, k, v)` rows; the emitted `(kind, k, s)` rows.
    fn feed(agg: &mut GroupAggregator, rows: &[(RowKind, &str, i64)]) -> Vec<(RowKind, String, i64)> {
        let mut b = BatchBuilder::new(&[DataType::Varchar, DataType::BigInt]);
        for (kind, k, v) in rows {
            b.push_str(0, k.as_bytes());
            b.push_int(1, *v);
            b.end_row_as(*kind);
        }
        let mut out = Output::new(&[DataType::Varchar, DataType::BigInt]);
        agg.process(0, &b.finish(), &mut out);
        out.flush();
        let mut got = Vec::new();
        for batch in out.take_done() {
            let view = batch.view();
            for r in 0..view.n_rows() {
                got.push((view.kind(r), String::from_utf8(view.str(0, r).to_vec()).unwrap(), view.int(1, r)));
            }
        }
        got
    }

    #[test]
    fn a_batch_emits_each_key_once_from_its_result_before_to_its_result_after() {
        use RowKind::*;
        let mut agg = aggregator();
        // New keys insert their result after the whole batch.
        assert_eq!(
            feed(&mut agg, &[(Insert, "a", 1), (Insert, "b", 5), (Insert, "a", 2)]),
            vec![(Insert, "a".into(), 3), (Insert, "b".into(), 5)]
        );
        // A changed key retracts its result before the batch; an unchanged one says nothing; a key taken back
        // entirely is deleted with its result before the batch.
        assert_eq!(
            feed(
                &mut agg,
                &[(Insert, "a", 4), (Insert, "a", 1), (Insert, "b", 1), (UpdateBefore, "b", 1), (Delete, "a", 9)]
            ),
            vec![(UpdateBefore, "a".into(), 3), (UpdateAfter, "a".into(), -1)]
        );
        assert_eq!(
            feed(&mut agg, &[(Delete, "b", 5), (Insert, "c", 7), (Delete, "c", 7)]),
            vec![(Delete, "b".into(), 5)]
        );
    }
}
