//! The local half of a two-phase aggregation (`sql/two_phase.rs`): each batch's rows folded per key (and
//! slice, for a window) into partial accumulators, written as one row per group at the end of the batch.
//! No state outlives a batch, so there is nothing to checkpoint and nothing waits for a watermark.
//!
//! Where a batch hardly folds (about as many groups as rows, e.g. a million keys), folding costs more than it
//! saves: after such a batch the operator writes each row's partial directly for the next
//! [`LOCAL_AGG_PASS_BATCHES`] batches, then tries folding again.
//!
//! Invariant: no I/O.

use std::collections::HashMap;

use super::accumulator::{new_row, write_row_partial, AccRow};
use super::key::{decode_key_into, encode_key};
use super::{Operator, Output};
use crate::constants::{LOCAL_AGG_FOLD_PERCENT_MIN, LOCAL_AGG_JUDGE_ROWS_MIN, LOCAL_AGG_PASS_BATCHES};
use crate::record::types::DataType;
use crate::record::{BatchBuf, BatchView};
use crate::sql::ops::LocalAggPlan;

/// One group of the batch: its key (encoded, then the slice end for a window), accumulators and row count.
struct Partial {
    key: Box<[u8]>,
    slice_end: i64,
    accs: AccRow,
    rows: i64,
}

pub struct LocalAggregator {
    plan: LocalAggPlan,
    key_types: Vec<DataType>,
    groups: Vec<Partial>,
    index: HashMap<Box<[u8]>, usize, xxhash_rust::xxh3::Xxh3Builder>,
    key_buf: Vec<u8>,
    scratch: Vec<u8>,
    /// Batches left to pass through without folding.
    pass_left: u32,
    late: u64,
}

impl LocalAggregator {
    pub fn new(plan: &LocalAggPlan) -> LocalAggregator {
        LocalAggregator {
            key_types: plan.input.types()[..plan.n_keys].to_vec(),
            groups: Vec::new(),
            index: HashMap::with_hasher(xxhash_rust::xxh3::Xxh3Builder::new()),
            key_buf: Vec::new(),
            scratch: Vec::new(),
            pass_left: 0,
            late: 0,
            plan: plan.clone(),
        }
    }

    /// The row's slice end for a window (`None`: no event time, the row is dropped as late), or 0.
    fn slice_end(&self, view: &BatchView<'_>, row: usize) -> Option<i64> {
        match self.plan.window {
            Some((_, col)) if view.is_null(col, row) => None,
            Some((spec, col)) => Some(spec.slice_end(view.int(col, row))),
            None => Some(0),
        }
    }

    /// Folds the batch per group; returns how many groups it made.
    fn fold(&mut self, view: &BatchView<'_>) -> usize {
        let n_keys = self.plan.n_keys;
        let mut last: Option<usize> = None;
        for row in 0..view.n_rows() {
            let Some(slice_end) = self.slice_end(view, row) else {
                self.late += 1;
                continue;
            };
            encode_key(view, row, n_keys, &mut self.key_buf);
            self.key_buf.extend_from_slice(&slice_end.to_le_bytes());
            // Rows of one group often come together (a keyless aggregation, a hot key): check the last first.
            let at = match last {
                Some(i) if *self.groups[i].key == *self.key_buf => i,
                _ => match self.index.get(self.key_buf.as_slice()) {
                    Some(&i) => i,
                    None => {
                        let key: Box<[u8]> = self.key_buf.as_slice().into();
                        self.index.insert(key.clone(), self.groups.len());
                        let accs = new_row(&self.plan.aggs);
                        self.groups.push(Partial { key, slice_end, accs, rows: 0 });
                        self.groups.len() - 1
                    }
                },
            };
            last = Some(at);
            let g = &mut self.groups[at];
            for (acc, call) in g.accs.iter_mut().zip(&self.plan.aggs) {
                acc.add_row(call, view, row, &mut self.scratch);
            }
            g.rows += 1;
        }
        self.groups.len()
    }

    /// Writes one row per group of the batch and forgets them.
    fn emit_groups(&mut self, out: &mut Output) {
        let n_keys = self.plan.n_keys;
        for g in self.groups.drain(..) {
            decode_key_into(&g.key[..g.key.len() - 8], &self.key_types, &mut out.rows);
            let mut col = n_keys;
            if self.plan.window.is_some() {
                out.rows.push_int(col, g.slice_end - 1);
                col += 1;
            }
            for (acc, ty) in g.accs.iter().zip(&self.plan.aggs) {
                acc.write_partial(&mut out.rows, col);
                col += super::accumulator::partial_types(ty).len();
            }
            out.rows.push_int(col, g.rows);
            out.rows.end_row();
            out.row_done();
        }
        self.index.clear();
    }

    /// Writes each row's partial directly.
    fn pass_through(&mut self, view: &BatchView<'_>, out: &mut Output) {
        let n_keys = self.plan.n_keys;
        for row in 0..view.n_rows() {
            let Some(slice_end) = self.slice_end(view, row) else {
                self.late += 1;
                continue;
            };
            for k in 0..n_keys {
                out.rows.push_datum(k, &view.datum(k, row));
            }
            let mut col = n_keys;
            if self.plan.window.is_some() {
                out.rows.push_int(col, slice_end - 1);
                col += 1;
            }
            for call in &self.plan.aggs {
                write_row_partial(call, view, row, &mut out.rows, col);
                col += super::accumulator::partial_types(call).len();
            }
            out.rows.push_int(col, 1);
            out.rows.end_row();
            out.row_done();
        }
    }
}

impl Operator for LocalAggregator {
    fn process(&mut self, _port: usize, input: &BatchBuf, out: &mut Output) {
        let view = input.view();
        if self.pass_left > 0 {
            self.pass_left -= 1;
            self.pass_through(&view, out);
            return;
        }
        let groups = self.fold(&view);
        let rows = view.n_rows();
        if rows >= LOCAL_AGG_JUDGE_ROWS_MIN && (rows - groups) * 100 < rows * LOCAL_AGG_FOLD_PERCENT_MIN {
            self.pass_left = LOCAL_AGG_PASS_BATCHES;
        }
        self.emit_groups(out);
    }

    fn late_records(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::window_agg::WindowAggregator;
    use crate::record::types::Schema;
    use crate::record::{BatchBuilder, Datum};
    use crate::sql::physical::NodeOp;
    use crate::sql::plan::TableInfo;
    use crate::sql::{plan_job_with, AggPhaseStrategy, Catalog, WatermarkSpec};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The two-phase plan of `sql` over `t(k BIGINT, v BIGINT, d DOUBLE, s VARCHAR, ts TIMESTAMP(3))`.
    fn plan(sql: &str) -> crate::sql::JobPlan {
        let schema = Schema::parse("k BIGINT, v BIGINT, d DOUBLE, s VARCHAR, ts TIMESTAMP(3)").unwrap();
        let mut tables = BTreeMap::new();
        tables.insert("t".to_string(), TableInfo { schema, watermark: Some(WatermarkSpec { column: 4, delay_ms: 0 }) });
        let views = BTreeMap::new();
        let sinks = ["o".to_string()];
        let cat = Catalog {
            tables: &tables,
            views: &views,
            sinks: &sinks,
            state_ttl_ms: None,
            agg_phases: AggPhaseStrategy::TwoPhase,
        };
        plan_job_with(sql, &cat).unwrap().plan
    }

    /// A row `(k, v, d, s, ts)`, NULL where `None`.
    type Row = (i64, Option<i64>, Option<f64>, Option<String>, i64);

    /// Rows as the pre-aggregation calc would make them.
    fn batch(plan: &crate::sql::JobPlan, rows: &[Row]) -> BatchBuf {
        let schema = Schema::parse("k BIGINT, v BIGINT, d DOUBLE, s VARCHAR, ts TIMESTAMP(3)").unwrap();
        let mut b = BatchBuilder::new(&schema.types());
        for (k, v, d, s, ts) in rows {
            b.push_int(0, *k);
            match v {
                Some(v) => b.push_int(1, *v),
                None => b.push_null(1),
            }
            match d {
                Some(d) => b.push_double(2, *d),
                None => b.push_null(2),
            }
            match s {
                Some(s) => b.push_str(3, s.as_bytes()),
                None => b.push_null(3),
            }
            b.push_int(4, *ts);
            b.end_row();
        }
        let raw = b.finish();
        let calc = plan.first_calc().unwrap();
        let mut out = BatchBuilder::new(&calc.schema.types());
        crate::operator::calc::run_calc_columnar(calc, &raw.view(), &mut out, &mut Vec::new());
        out.finish()
    }

    /// Every fired row of a window aggregator, as text, sorted.
    fn fired(agg: &mut WindowAggregator, types: &[DataType], input: &[BatchBuf]) -> Vec<String> {
        let mut out = Output::new(types);
        for b in input {
            agg.process(0, b, &mut out);
        }
        agg.advance_watermark(i64::MAX, &mut out);
        out.flush();
        let mut rows = Vec::new();
        for b in out.take_done() {
            let v = b.view();
            for r in 0..v.n_rows() {
                // Sums of doubles depend on the order of additions in their last bits (as in Flink).
                let cell = |c| match v.datum(c, r) {
                    Datum::Double(x) => format!("{x:.9e}"),
                    d => format!("{d:?}"),
                };
                rows.push((0..v.n_columns()).map(cell).collect::<Vec<_>>().join("|"));
            }
        }
        rows.sort();
        rows
    }

    const SQL: &str = "INSERT INTO o SELECT k, COUNT(*) AS n, COUNT(v) AS nv, SUM(v) AS sv, AVG(v) AS av, \
        SUM(d) AS sd, AVG(d) AS ad, MIN(s) AS lo, MAX(v) AS hi, window_start, window_end \
        FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND)) \
        GROUP BY k, window_start, window_end";

    proptest! {
        /// Local partials (folded or passed through) merged by the global aggregation give exactly the
        /// one-phase results, NULLs included.
        #[test]
        fn two_phase_equals_one_phase(
            rows in proptest::collection::vec(
                (0i64..4, proptest::option::of(-100i64..100), proptest::option::of(-5.0f64..5.0),
                 proptest::option::of("[a-d]{0,2}"), 0i64..20_000),
                1..300),
            split in 1usize..50,
            pass in any::<bool>(),
        ) {
            let p = plan(SQL);
            let (local_plan, global_plan) = p.nodes.iter().fold((None, None), |acc, n| match &n.op {
                NodeOp::LocalAgg(l) => (Some(l.clone()), acc.1),
                NodeOp::WindowAgg(w) => (acc.0, Some(w.clone())),
                _ => acc,
            });
            let (local_plan, global_plan) = (local_plan.expect("a local aggregate"), global_plan.unwrap());
            let one_phase = crate::sql::WindowAggPlan {
                input: local_plan.input.clone(),
                time_col: local_plan.n_keys,
                aggs: local_plan.aggs.clone(),
                rows_col: None,
                ..global_plan.clone()
            };
            let input: Vec<BatchBuf> = rows.chunks(split).map(|c| batch(&p, c)).collect();
            let types = global_plan.post.schema.types();
            let want = fired(&mut WindowAggregator::new(&one_phase, 4), &types, &input);
            let mut local = LocalAggregator::new(&local_plan);
            let mut partials = Vec::new();
            for b in &input {
                if pass {
                    local.pass_left = 1;
                }
                let mut out = Output::new(&local_plan.output.types());
                local.process(0, b, &mut out);
                out.flush();
                partials.extend(out.take_done());
            }
            let got = fired(&mut WindowAggregator::new(&global_plan, 4), &types, &partials);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_batch_of_one_key_folds_into_one_row_per_slice() {
        let p = plan(SQL);
        let local_plan = p.nodes.iter().find_map(|n| match &n.op {
            NodeOp::LocalAgg(l) => Some(l.clone()),
            _ => None,
        });
        let mut local = LocalAggregator::new(&local_plan.unwrap());
        let rows: Vec<_> = (0..100).map(|i| (7, Some(i), None, None, i * 30)).collect();
        let mut out = Output::new(&local.plan.output.types());
        local.process(0, &batch(&p, &rows), &mut out);
        out.flush();
        let done: Vec<BatchBuf> = out.take_done().collect();
        // 100 rows over 3 s: slices [0, 2 s) and [2 s, 4 s).
        assert_eq!(done.iter().map(|b| b.view().n_rows()).sum::<usize>(), 2);
        assert_eq!(local.pass_left, 0, "a batch that folds keeps folding");
        // A batch of distinct keys does not fold: the next batches pass through.
        let rows: Vec<_> = (0..LOCAL_AGG_JUDGE_ROWS_MIN as i64).map(|i| (i, Some(i), None, None, 0)).collect();
        let mut out = Output::new(&local.plan.output.types());
        local.process(0, &batch(&p, &rows), &mut out);
        assert_eq!(local.pass_left, LOCAL_AGG_PASS_BATCHES);
    }
}
