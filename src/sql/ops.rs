//! What the planner decides for each stateful operator beyond the window aggregate: the columns it keys
//! on, what it keeps, what it emits. Pure data; the operators in `operator/` execute them.

use std::fmt;

use super::expr::Expr;
use super::plan::{AggCall, Calc};
use crate::record::Schema;
use crate::window::WindowSpec;

/// The local half of a two-phase aggregation (Flink's LocalWindowAggregate / LocalGroupAggregate): on the
/// shard that reads the rows, before the exchange, each batch's rows are folded per key (and slice, for a
/// window) into partial accumulators, so that a hot key or a keyless aggregation sends one row per batch
/// rather than every row to the shard that owns the key. Keeps no state between batches.
#[derive(Debug, Clone)]
pub struct LocalAggPlan {
    /// The rows the aggregation takes: `[keys..., event time (windows), arguments...]`.
    pub input: Schema,
    pub n_keys: usize,
    /// For a window aggregation: its windows and the event-time column (rows are folded per slice).
    pub window: Option<(WindowSpec, usize)>,
    pub aggs: Vec<AggCall>,
    /// `[keys..., slice end - 1 (windows), partial accumulators..., rows]`.
    pub output: Schema,
}

/// An unbounded GROUP BY: an updating result (Flink's GroupAggregate).
#[derive(Debug, Clone)]
pub struct GroupAggPlan {
    /// Rows arriving: `[keys..., aggregate arguments...]`.
    pub input: Schema,
    pub n_keys: usize,
    pub aggs: Vec<AggCall>,
    /// The aggregation's rows: `[keys..., aggregates...]`.
    pub output: Schema,
    /// HAVING and the SELECT list, over `output`.
    pub post: Calc,
    /// The input is a changelog: accumulators must take rows back (MIN/MAX keep their values).
    pub retracting: bool,
    /// Keys whose state was not written for this long are forgotten (Flink's state TTL).
    pub ttl_ms: Option<i64>,
}

/// How a ranking orders rows, or which row a deduplication keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankTime {
    /// Event time: the row's value in this column.
    Event(usize),
    /// Processing time: arrival order.
    Processing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RankKind {
    /// `ROW_NUMBER() ... <= N` over any order: an updating Top-N.
    TopN,
    /// `ROW_NUMBER() OVER (... ORDER BY time ASC) = 1`: the first row per key, append-only (on event time,
    /// emitted once the watermark passes it).
    KeepFirst(RankTime),
    /// `ROW_NUMBER() OVER (... ORDER BY time DESC) = 1`: the last row per key, updating.
    KeepLast(RankTime),
}

/// `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)` filtered to the first `limit` rows.
#[derive(Debug, Clone)]
pub struct RankPlan {
    pub kind: RankKind,
    /// The order is one time: event time (a column) or processing time, ascending if true.
    pub by_time: Option<(RankTime, bool)>,
    /// Partition columns of the input (the hash edge's keys).
    pub partition: Vec<usize>,
    /// Sort columns, ascending if true.
    pub order: Vec<(usize, bool)>,
    pub limit: u64,
    /// The row number is an output column (the last one); rows whose rank changes are updated.
    pub emit_rank: bool,
    /// The input is a changelog (only Top-N takes one).
    pub retracting: bool,
    pub ttl_ms: Option<i64>,
}

/// A Top-N per window: over rows that carry their window (a window TVF's, a window aggregate's), the first
/// `limit` per window and partition are emitted, append-only, when the window fires.
#[derive(Debug, Clone)]
pub struct WindowRankPlan {
    /// The column holding each row's window end.
    pub end_col: usize,
    /// Partition columns of the input (the window's end among them).
    pub partition: Vec<usize>,
    pub order: Vec<(usize, bool)>,
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    /// Rows of the left side without a match are emitted (with NULLs for the right side).
    pub fn keeps_left(self) -> bool {
        matches!(self, JoinKind::Left | JoinKind::Full)
    }

    pub fn keeps_right(self) -> bool {
        matches!(self, JoinKind::Right | JoinKind::Full)
    }
}

impl fmt::Display for JoinKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JoinKind::Inner => "INNER",
            JoinKind::Left => "LEFT",
            JoinKind::Right => "RIGHT",
            JoinKind::Full => "FULL",
        })
    }
}

/// What every join has: the kind, the equality keys of each side, a residual condition over the joined row
/// (`[left columns..., right columns...]`), and each side's width.
#[derive(Debug, Clone)]
pub struct JoinSides {
    pub kind: JoinKind,
    pub left_keys: Vec<usize>,
    pub right_keys: Vec<usize>,
    pub residual: Option<Expr>,
    pub left: Schema,
    pub right: Schema,
}

/// A regular join: every row of each side is kept (until its TTL), matched against the other side's.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    pub sides: JoinSides,
    /// Either input is a changelog.
    pub left_retracting: bool,
    pub right_retracting: bool,
    pub ttl_ms: Option<i64>,
}

/// An interval join: `left.time - right.time` within `[lower_ms, upper_ms]`; rows are kept until the
/// watermark passes the last time they can match.
#[derive(Debug, Clone)]
pub struct IntervalJoinPlan {
    pub sides: JoinSides,
    pub left_time: usize,
    pub right_time: usize,
    pub lower_ms: i64,
    pub upper_ms: i64,
}

/// A window join: both inputs carry their windows (of one window table function); rows of the same window
/// and key (the window's end is one of the keys) are joined when the window fires.
#[derive(Debug, Clone)]
pub struct WindowJoinPlan {
    pub sides: JoinSides,
    pub spec: WindowSpec,
    /// The columns holding each side's window end.
    pub left_end: usize,
    pub right_end: usize,
}
