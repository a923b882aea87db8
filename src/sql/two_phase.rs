//! Two-phase (local-global) aggregation, as Flink's `table.optimizer.agg-phase-strategy = TWO_PHASE`: an
//! aggregation behind a hash exchange is split into a local half on the shard that reads the rows (partial
//! accumulators per batch, per key and, for windows, per slice) and a global half on the shard that owns
//! the key, which merges the partials. A keyless or hot-key aggregation then uses every core: the exchange
//! carries one row per key and slice per batch, not every row.
//!
//! The global half is the same operator as a one-phase aggregation with its aggregates marked `partial`, so
//! results, windows, firing and lateness are the same: a partial row's event time is its slice's last
//! millisecond, and the global aggregation judges it late exactly when it would have judged each of the rows
//! it stands for late (they all share that slice), counting them through the partial's row count.
//!
//! When ([`AggPhaseStrategy`], Flink's `table.optimizer.agg-phase-strategy`): `auto` splits aggregations with
//! one group per window or none (no key, or only the bounds of the windows the rows carry) — those that would
//! otherwise run on one core; measured on Nexmark, splitting a keyed aggregation whose keys already spread
//! over the cores cost 7-12% (bench/RESULTS.md). `two-phase` splits every aggregation that can be split (for
//! hot keys), `one-phase` none.
//!
//! Not split: COUNT DISTINCT (its partial would be its whole set), session windows (a session is known only
//! once merged), and unbounded aggregations over a changelog (retraction needs every value of MIN and MAX).

use super::ops::{GroupAggPlan, LocalAggPlan};
use super::plan::{AggCall, WindowAggPlan};
use crate::operator::accumulator::{has_partial, partial_types};
use crate::record::types::{DataType, Field, Schema};

/// The local output's columns: the keys, the slice's time (windows), each aggregate's partial accumulator,
/// and how many rows the partial stands for; and the global aggregates reading the partials.
fn partial_layout(input: &Schema, n_keys: usize, windowed: bool, aggs: &[AggCall]) -> (Schema, Vec<AggCall>) {
    let mut fields: Vec<Field> = input.fields[..n_keys].to_vec();
    if windowed {
        fields.push(Field { name: "$rowtime".into(), ty: DataType::Timestamp });
    }
    let mut global = Vec::with_capacity(aggs.len());
    for (i, call) in aggs.iter().enumerate() {
        let first = fields.len();
        for (j, ty) in partial_types(call).into_iter().enumerate() {
            fields.push(Field { name: format!("$partial{i}_{j}"), ty });
        }
        global.push(AggCall { arg: Some(first), partial: true, ..call.clone() });
    }
    fields.push(Field { name: "$rows".into(), ty: DataType::BigInt });
    (Schema::new(fields), global)
}

/// When aggregations run in two phases (`[runtime] agg_phase_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AggPhaseStrategy {
    /// Two phases where an aggregation has one group per window (or, unbounded, one group): no key.
    #[default]
    Auto,
    /// Always one phase.
    OnePhase,
    /// Two phases wherever the aggregates allow.
    TwoPhase,
}

impl AggPhaseStrategy {
    /// Whether an aggregation of `keys` keys, of which `carried` only repeat the bounds of the input's
    /// windows, is split.
    fn splits(self, keys: usize, carried: usize) -> bool {
        match self {
            AggPhaseStrategy::Auto => keys == carried,
            AggPhaseStrategy::OnePhase => false,
            AggPhaseStrategy::TwoPhase => true,
        }
    }
}

/// Splits a window aggregation, unless `strategy` says not to, it keeps session windows or it has an
/// aggregate without a partial form.
pub fn split_window(w: &WindowAggPlan, strategy: AggPhaseStrategy) -> Option<(LocalAggPlan, WindowAggPlan)> {
    if !strategy.splits(w.n_keys, w.carried_keys)
        || w.spec.is_session()
        || !w.aggs.iter().all(has_partial)
        || w.aggs.iter().any(|a| a.partial)
    {
        return None;
    }
    let (output, aggs) = partial_layout(&w.input, w.n_keys, true, &w.aggs);
    let rows_col = Some(output.len() - 1);
    let local = LocalAggPlan {
        input: w.input.clone(),
        n_keys: w.n_keys,
        window: Some((w.spec, w.time_col)),
        aggs: w.aggs.clone(),
        output: output.clone(),
    };
    let global = WindowAggPlan { input: output, time_col: w.n_keys, aggs, rows_col, ..w.clone() };
    Some((local, global))
}

/// Splits an unbounded aggregation of an append-only input whose aggregates all have a partial form, unless
/// `strategy` says not to.
pub fn split_group(g: &GroupAggPlan, strategy: AggPhaseStrategy) -> Option<(LocalAggPlan, GroupAggPlan)> {
    if !strategy.splits(g.n_keys, 0)
        || g.retracting
        || !g.aggs.iter().all(has_partial)
        || g.aggs.iter().any(|a| a.partial)
    {
        return None;
    }
    let (output, aggs) = partial_layout(&g.input, g.n_keys, false, &g.aggs);
    let local = LocalAggPlan {
        input: g.input.clone(),
        n_keys: g.n_keys,
        window: None,
        aggs: g.aggs.clone(),
        output: output.clone(),
    };
    let global = GroupAggPlan { input: output, aggs, ..g.clone() };
    Some((local, global))
}
