//! Column pruning below joins: a join keeps its input rows in state (a regular join every row, until its
//! TTL), so each side's rows are narrowed, before the join, to the columns the query reads above it (and the
//! join's own keys, condition, times and windows). Flink's planner does the same projection push-down.
//!
//! Applied where a calc reads a join (a SELECT list, a WHERE, an aggregation's arguments over a join).
//! Invariant: pure; the query computes the same rows.

use std::collections::BTreeSet;

use super::expr::Expr;
use super::logical::{LNode, LOp, WindowCols};
use super::ops::JoinSides;
use super::plan::Calc;
use crate::record::Schema;

/// Narrows the inputs of every join read by a calc in the tree under `node`.
pub fn prune_joins(mut node: LNode) -> LNode {
    if let LOp::Calc(calc) = &node.op {
        if matches!(node.inputs[0].op, LOp::Join(_) | LOp::IntervalJoin(_) | LOp::WindowJoin(_)) {
            let mut used: BTreeSet<usize> = calc.exprs.iter().flat_map(Expr::columns).collect();
            if let Some(f) = &calc.filter {
                used.extend(f.columns());
            }
            let join = node.inputs.remove(0);
            let (join, map) = narrow(join, &used);
            let at = |idx: usize| map[idx].expect("a column the calc reads is kept");
            let remap =
                |e: &Expr| e.map_columns(&|idx, name, ty| Expr::Column { idx: at(idx), name: name.to_string(), ty });
            let calc = Calc {
                filter: calc.filter.as_ref().map(remap),
                exprs: calc.exprs.iter().map(remap).collect(),
                schema: calc.schema.clone(),
            };
            node.op = LOp::Calc(calc);
            node.inputs.push(join);
        }
    }
    node.inputs = node.inputs.into_iter().map(prune_joins).collect();
    node
}

/// A join whose sides keep only the columns in `used` (of its output) and those the join needs itself;
/// with, per old output column, its new position (`None`: dropped).
fn narrow(mut join: LNode, used: &BTreeSet<usize>) -> (LNode, Vec<Option<usize>>) {
    let width = join.schema.len();
    let identity = || (0..width).map(Some).collect();
    let lw = join.inputs[0].schema.len();
    let mut needed = used.clone();
    let sides: &JoinSides = match &join.op {
        LOp::Join(j) => &j.sides,
        LOp::IntervalJoin(j) => {
            needed.extend([j.left_time, lw + j.right_time]);
            &j.sides
        }
        LOp::WindowJoin(j) => {
            needed.extend([j.left_end, lw + j.right_end]);
            &j.sides
        }
        _ => unreachable!("narrow takes joins"),
    };
    needed.extend(sides.left_keys.iter().copied());
    needed.extend(sides.right_keys.iter().map(|k| lw + k));
    if let Some(r) = &sides.residual {
        needed.extend(r.columns());
    }
    needed.extend(join.rowtime);
    if let Some(w) = join.window {
        needed.extend([w.start, w.end]);
    }
    if needed.len() == width {
        return (join, identity());
    }
    let left_keep: Vec<usize> = needed.iter().copied().filter(|c| *c < lw).collect();
    let right_keep: Vec<usize> = needed.iter().copied().filter(|c| *c >= lw).map(|c| c - lw).collect();
    let mut map: Vec<Option<usize>> = vec![None; width];
    for (new, old) in left_keep.iter().enumerate() {
        map[*old] = Some(new);
    }
    for (new, old) in right_keep.iter().enumerate() {
        map[lw + old] = Some(left_keep.len() + new);
    }
    let side_map = |keep: &[usize], old: usize| keep.iter().position(|c| *c == old).expect("a needed column is kept");
    let at = |old: usize| map[old].expect("a needed column is kept");
    let remap = |e: &Expr| e.map_columns(&|idx, name, ty| Expr::Column { idx: at(idx), name: name.to_string(), ty });
    let right = join.inputs.pop().expect("a join has two inputs");
    let left = join.inputs.pop().expect("a join has two inputs");
    let (left, right) = (project(left, &left_keep), project(right, &right_keep));
    let narrow_sides = |s: &JoinSides| JoinSides {
        kind: s.kind,
        left_keys: s.left_keys.iter().map(|k| side_map(&left_keep, *k)).collect(),
        right_keys: s.right_keys.iter().map(|k| side_map(&right_keep, *k)).collect(),
        residual: s.residual.as_ref().map(remap),
        left: left.schema.clone(),
        right: right.schema.clone(),
    };
    join.op = match join.op {
        LOp::Join(mut j) => {
            j.sides = narrow_sides(&j.sides);
            LOp::Join(j)
        }
        LOp::IntervalJoin(mut j) => {
            j.sides = narrow_sides(&j.sides);
            j.left_time = side_map(&left_keep, j.left_time);
            j.right_time = side_map(&right_keep, j.right_time);
            LOp::IntervalJoin(j)
        }
        LOp::WindowJoin(mut j) => {
            j.sides = narrow_sides(&j.sides);
            j.left_end = side_map(&left_keep, j.left_end);
            j.right_end = side_map(&right_keep, j.right_end);
            LOp::WindowJoin(j)
        }
        _ => unreachable!("narrow takes joins"),
    };
    join.schema = Schema::new(left.schema.fields.iter().chain(&right.schema.fields).cloned().collect());
    join.rowtime = join.rowtime.map(at);
    join.window = join.window.map(|w| WindowCols { spec: w.spec, start: at(w.start), end: at(w.end) });
    join.inputs = vec![left, right];
    (join, map)
}

/// `rel` projected to its columns `keep` (in order), keeping its event time and window where kept.
fn project(rel: LNode, keep: &[usize]) -> LNode {
    if keep.len() == rel.schema.len() {
        return rel;
    }
    let exprs: Vec<Expr> = keep
        .iter()
        .map(|c| {
            let f = &rel.schema.fields[*c];
            Expr::Column { idx: *c, name: f.name.clone(), ty: f.ty }
        })
        .collect();
    let schema = Schema::new(keep.iter().map(|c| rel.schema.fields[*c].clone()).collect());
    let at = |c: usize| keep.iter().position(|k| *k == c);
    let rowtime = rel.rowtime.and_then(at);
    let window = rel.window.and_then(|w| Some(WindowCols { spec: w.spec, start: at(w.start)?, end: at(w.end)? }));
    LNode {
        op: LOp::Calc(Calc { filter: None, exprs, schema: schema.clone() }),
        updating: rel.updating.clone(),
        inputs: vec![rel],
        schema,
        rowtime,
        window,
    }
}
