//! The physical plan of a job: a DAG of operator nodes with the distribution of every edge, in topological
//! order (a node's inputs come before it), ending in the job's sink.
//!
//! An edge is either *forward* (the consumer runs on the shard where its input rows are, called in the same
//! turn) or *hash* (rows go to the shard owning the key group of the edge's key columns, through the
//! exchange). A keyed operator's state is keyed by exactly the columns its input edge hashes on, so every
//! key's state lives on the shard its rows are sent to.
//!
//! Invariant: pure data, built by the planner; the shards instantiate one copy of every node each.

use std::fmt;

use super::ops::{GroupAggPlan, IntervalJoinPlan, JoinPlan, LocalAggPlan, RankPlan, WindowJoinPlan, WindowRankPlan};
use super::plan::{Calc, WindowAggPlan};
use crate::record::Schema;
use crate::window::WindowSpec;

/// A job's operators, their edges, and the sink they end in.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// The sink's name (a `[sinks.<name>]` of the config).
    pub sink: String,
    /// In topological order; the last one is [`NodeOp::Sink`].
    pub nodes: Vec<Node>,
    /// The rows the sink receives.
    pub out_schema: Schema,
    /// Why the sink receives a changelog (updates and deletes): the operator that makes the result
    /// updating; `None` for an append-only result.
    pub updating: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op: NodeOp,
    /// One per input port, in port order.
    pub inputs: Vec<Input>,
    /// The rows the node emits.
    pub schema: Schema,
}

/// One input of a node: the node it reads and how rows get from there to here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub node: usize,
    pub dist: Distribution,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// Same shard, same turn.
    Forward,
    /// To the shard owning the key group of these columns of the input rows (none: one key group for all).
    Hash(Vec<usize>),
}

#[derive(Debug, Clone)]
pub enum NodeOp {
    /// The rows of a source table (`[sources.<name>]`), read by the splits each shard is given.
    Scan {
        source: String,
    },
    /// Filter and projection.
    Calc(Calc),
    /// A window aggregation (with its HAVING and SELECT list applied to the fired rows).
    WindowAgg(WindowAggPlan),
    /// Each row once per window of `spec` it is in, with `window_start, window_end, window_time` appended.
    WindowAssign {
        spec: WindowSpec,
        time_col: usize,
    },
    /// An unbounded aggregation (updating).
    GroupAgg(GroupAggPlan),
    /// Top-N and deduplication.
    Rank(RankPlan),
    /// Top-N per window.
    WindowRank(WindowRankPlan),
    /// A regular join (port 0 left, port 1 right).
    Join(JoinPlan),
    IntervalJoin(IntervalJoinPlan),
    WindowJoin(WindowJoinPlan),
    /// UNION ALL: every input's rows, as they come.
    Union,
    /// The local half of a two-phase aggregation: partial accumulators per batch, no state.
    LocalAgg(LocalAggPlan),
    /// The job's sink: its rows are written out.
    Sink,
}

impl NodeOp {
    /// A short name for plans and messages.
    pub fn name(&self) -> &'static str {
        match self {
            NodeOp::Scan { .. } => "scan",
            NodeOp::Calc(_) => "calc",
            NodeOp::WindowAgg(_) => "window aggregate",
            NodeOp::LocalAgg(_) => "local aggregate",
            NodeOp::WindowAssign { .. } => "window assignment",
            NodeOp::GroupAgg(_) => "group aggregate",
            NodeOp::Rank(_) => "rank",
            NodeOp::WindowRank(_) => "window rank",
            NodeOp::Join(_) => "join",
            NodeOp::IntervalJoin(_) => "interval join",
            NodeOp::WindowJoin(_) => "window join",
            NodeOp::Union => "union",
            NodeOp::Sink => "sink",
        }
    }

    /// True for operators that keep state across rows (and so have entries in checkpoints).
    pub fn is_stateful(&self) -> bool {
        !matches!(
            self,
            NodeOp::Scan { .. }
                | NodeOp::Calc(_)
                | NodeOp::WindowAssign { .. }
                | NodeOp::Union
                | NodeOp::LocalAgg(_)
                | NodeOp::Sink
        )
    }
}

impl JobPlan {
    /// The index of the sink node.
    pub fn sink_node(&self) -> usize {
        self.nodes.len() - 1
    }

    /// The scan nodes, with their source names.
    pub fn scans(&self) -> impl Iterator<Item = (usize, &str)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| match &n.op {
            NodeOp::Scan { source } => Some((i, source.as_str())),
            _ => None,
        })
    }

    /// The source tables the job reads, in the order of their scans.
    pub fn sources(&self) -> Vec<String> {
        self.scans().map(|(_, s)| s.to_string()).collect()
    }

    /// The job's first calc, if any.
    pub fn first_calc(&self) -> Option<&Calc> {
        self.nodes.iter().find_map(|n| match &n.op {
            NodeOp::Calc(c) => Some(c),
            _ => None,
        })
    }

    /// The job's first window aggregation, if any.
    pub fn window(&self) -> Option<&WindowAggPlan> {
        self.nodes.iter().find_map(|n| match &n.op {
            NodeOp::WindowAgg(w) => Some(w),
            _ => None,
        })
    }

    /// What the job's state is made of, for the checkpoint's binding: each stateful operator with its place
    /// in the plan and its layout (kind, input, keys, aggregates); "stateless" when there is none. A
    /// checkpoint restores only into a plan of the same layout.
    pub fn state_layout(&self) -> String {
        let fields =
            |s: &Schema| s.fields.iter().map(|f| format!("{} {}", f.name, f.ty)).collect::<Vec<_>>().join(", ");
        let aggs = |a: &[super::plan::AggCall]| a.iter().map(|a| a.text.as_str()).collect::<Vec<_>>().join(", ");
        let layouts: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op.is_stateful())
            .map(|(i, n)| {
                let inputs: Vec<String> = n.inputs.iter().map(|x| fields(&self.nodes[x.node].schema)).collect();
                let what = match &n.op {
                    NodeOp::WindowAgg(w) => {
                        format!("{} over ({}) keyed by {} with [{}]", w.spec, fields(&w.input), w.n_keys, aggs(&w.aggs))
                    }
                    NodeOp::GroupAgg(g) => format!(
                        "group aggregate over ({}) keyed by {} with [{}]{}",
                        fields(&g.input),
                        g.n_keys,
                        aggs(&g.aggs),
                        if g.retracting { " retracting" } else { "" }
                    ),
                    NodeOp::Rank(r) => format!(
                        "rank {:?} over ({}) by {:?} order {:?} limit {}",
                        r.kind, inputs[0], r.partition, r.order, r.limit
                    ),
                    NodeOp::WindowRank(r) => format!(
                        "window rank over ({}) by {:?} order {:?} limit {} (window end ${})",
                        inputs[0], r.partition, r.order, r.limit, r.end_col
                    ),
                    op => format!("{} of ({})", op.name(), inputs.join(") and (")),
                };
                format!("#{i} {what}")
            })
            .collect();
        if layouts.is_empty() {
            "stateless".to_string()
        } else {
            layouts.join("; ")
        }
    }

    /// The nodes reading node `i`'s rows: (consumer, input port).
    pub fn consumers(&self, i: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (c, n) in self.nodes.iter().enumerate() {
            for (port, input) in n.inputs.iter().enumerate() {
                if input.node == i {
                    out.push((c, port));
                }
            }
        }
        out
    }

    /// Checks the DAG's shape: inputs before their nodes, exactly one sink and it last, scans without
    /// inputs. A failure is a planner bug.
    pub fn check(&self) -> Result<(), String> {
        let last = self.nodes.len().checked_sub(1).ok_or("a plan without nodes")?;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.inputs.iter().any(|inp| inp.node >= i) {
                return Err(format!("node {i} reads a node that is not before it"));
            }
            match n.op {
                NodeOp::Sink if i != last => return Err(format!("node {i} is a sink but not the last node")),
                NodeOp::Scan { .. } if !n.inputs.is_empty() => return Err(format!("scan node {i} has inputs")),
                NodeOp::Sink | NodeOp::Scan { .. } => {}
                _ if n.inputs.is_empty() => return Err(format!("node {i} has no input")),
                _ => {}
            }
            if i != last && self.consumers(i).is_empty() {
                return Err(format!("node {i} ({}) has no consumer", n.op.name()));
            }
        }
        match self.nodes[last].op {
            NodeOp::Sink => Ok(()),
            _ => Err("the last node is not the sink".into()),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Forward => f.write_str("forward"),
            Distribution::Hash(cols) if cols.is_empty() => f.write_str("single key group"),
            Distribution::Hash(cols) => {
                let cols: Vec<String> = cols.iter().map(|c| format!("${c}")).collect();
                write!(f, "hash({})", cols.join(", "))
            }
        }
    }
}
