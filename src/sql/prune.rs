//! Column pruning below joins: a join keeps its input rows in state (a regular join every row, until its
//! TTL), so each side's rows are narrowed, before the join, to the columns the query reads above it (and the
//! join's own keys, condition, times and windows). Flink's planner does the same projection push-down.
//!
//! Applied where a calc reads a join (a SELECT list, a WHERE, an aggregation's arguments over a join), or a
//! ranking of a join (Top-N, deduplication, window Top-N: the ranking keeps rows too).
//! Invariant: pure; the query computes the same rows.

use std::collections::BTreeSet;

use super::expr::Expr;
use super::logical::{LNode, LOp, WindowCols};
use super::ops::{JoinSides, RankKind, RankTime};
use super::plan::Calc;
use crate::record::Schema;

/// Narrows the inputs of every join read by a calc in the tree under `node`.
pub fn prune_joins(mut node: LNode) -> LNode {
    if let LOp::Calc(calc) = &node.op {
        let input = &node.inputs[0];
        let over_join = is_join(input);
        let ranks_join = matches!(input.op, LOp::Rank(_) | LOp::WindowRank(_)) && is_join(&input.inputs[0]);
        if over_join || ranks_join {
            let mut used: BTreeSet<usize> = calc.exprs.iter().flat_map(Expr::columns).collect();
            if let Some(f) = &calc.filter {
                used.extend(f.columns());
            }
            let input = node.inputs.remove(0);
            let (input, map) = if over_join { narrow(input, &used) } else { narrow_rank(input, &used) };
            let at = |idx: usize| map[idx].expect("a column the calc reads is kept");
            let remap =
                |e: &Expr| e.map_columns(&|idx, name, ty| Expr::Column { idx: at(idx), name: name.to_string(), ty });
            let calc = Calc {
                filter: calc.filter.as_ref().map(remap),
                exprs: calc.exprs.iter().map(remap).collect(),
                schema: calc.schema.clone(),
            };
            node.op = LOp::Calc(calc);
            node.inputs.push(input);
        }
    }
    node.inputs = node.inputs.into_iter().map(prune_joins).collect();
    node
}

fn is_join(n: &LNode) -> bool {
    matches!(n.op, LOp::Join(_) | LOp::IntervalJoin(_) | LOp::WindowJoin(_))
}

/// A ranking of a join, the join narrowed to the columns in `used` (of the ranking's output) and those the
/// ranking needs (partition, order, time); with, per old output column, its new position.
fn narrow_rank(mut rank: LNode, used: &BTreeSet<usize>) -> (LNode, Vec<Option<usize>>) {
    let old_in = rank.inputs[0].schema.len();
    let mut needed: BTreeSet<usize> = used.iter().copied().filter(|c| *c < old_in).collect();
    match &rank.op {
        LOp::Rank(r) => {
            needed.extend(r.partition.iter().copied());
            needed.extend(r.order.iter().map(|(c, _)| *c));
            if let Some((RankTime::Event(c), _)) = r.by_time {
                needed.insert(c);
            }
            if let RankKind::KeepFirst(RankTime::Event(c)) | RankKind::KeepLast(RankTime::Event(c)) = r.kind {
                needed.insert(c);
            }
        }
        LOp::WindowRank(r) => {
            needed.extend(r.partition.iter().copied());
            needed.extend(r.order.iter().map(|(c, _)| *c));
            needed.insert(r.end_col);
        }
        _ => unreachable!("narrow_rank takes rankings"),
    }
    needed.extend(rank.rowtime.filter(|t| *t < old_in));
    if let Some(w) = rank.window {
        needed.extend([w.start, w.end].into_iter().filter(|c| *c < old_in));
    }
    let join = rank.inputs.pop().expect("a ranking has an input");
    let (join, jmap) = narrow(join, &needed);
    let new_in = join.schema.len();
    let width = rank.schema.len();
    let map: Vec<Option<usize>> =
        (0..width).map(|c| if c < old_in { jmap[c] } else { Some(new_in + c - old_in) }).collect();
    let at = |c: usize| map[c].expect("a needed column is kept");
    let time = |t: RankTime| match t {
        RankTime::Event(c) => RankTime::Event(at(c)),
        RankTime::Processing => RankTime::Processing,
    };
    rank.op = match rank.op {
        LOp::Rank(mut r) => {
            r.partition = r.partition.iter().map(|c| at(*c)).collect();
            r.order = r.order.iter().map(|(c, asc)| (at(*c), *asc)).collect();
            r.by_time = r.by_time.map(|(t, asc)| (time(t), asc));
            r.kind = match r.kind {
                RankKind::KeepFirst(t) => RankKind::KeepFirst(time(t)),
                RankKind::KeepLast(t) => RankKind::KeepLast(time(t)),
                RankKind::TopN => RankKind::TopN,
            };
            LOp::Rank(r)
        }
        LOp::WindowRank(mut r) => {
            r.partition = r.partition.iter().map(|c| at(*c)).collect();
            r.order = r.order.iter().map(|(c, asc)| (at(*c), *asc)).collect();
            r.end_col = at(r.end_col);
            LOp::WindowRank(r)
        }
        _ => unreachable!("narrow_rank takes rankings"),
    };
    let extra = rank.schema.fields[old_in..].iter().cloned();
    rank.schema = Schema::new(join.schema.fields.iter().cloned().chain(extra).collect());
    rank.rowtime = rank.rowtime.map(at);
    rank.window = rank.window.map(|w| WindowCols { spec: w.spec, start: at(w.start), end: at(w.end) });
    rank.inputs = vec![join];
    (rank, map)
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
