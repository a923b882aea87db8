//! The logical plan: a tree of relational operators as the binder builds it from the SQL, with what is known
//! of each one's rows (schema, event-time attribute, whether it is a changelog), and its lowering into the
//! physical DAG: each operator gets the distribution its input needs (keyed operators hash by their keys),
//! adjacent calcs are fused, and scans of the same source are shared.
//!
//! Invariant: pure; lowering never changes what a query computes.

use super::expr::Expr;
use super::ops::{GroupAggPlan, IntervalJoinPlan, JoinPlan, LocalAggPlan, RankPlan, WindowJoinPlan, WindowRankPlan};
use super::physical::{Distribution, Input, JobPlan, Node, NodeOp};
use super::plan::{Calc, WindowAggPlan};
use super::two_phase;
use crate::record::Schema;
use crate::window::WindowSpec;

#[derive(Debug, Clone)]
pub enum LOp {
    Scan {
        source: String,
    },
    Calc(Calc),
    /// A window table function whose rows are used as they are: each row once per window it is in, with
    /// `window_start, window_end, window_time` appended.
    WindowAssign {
        spec: WindowSpec,
        time_col: usize,
    },
    WindowAgg(WindowAggPlan),
    GroupAgg(GroupAggPlan),
    Rank(RankPlan),
    WindowRank(WindowRankPlan),
    Join(JoinPlan),
    IntervalJoin(IntervalJoinPlan),
    WindowJoin(WindowJoinPlan),
    /// UNION ALL of the inputs (same column types).
    Union,
}

/// A node of the logical plan.
#[derive(Debug, Clone)]
pub struct LNode {
    pub op: LOp,
    pub inputs: Vec<LNode>,
    pub schema: Schema,
    /// The column holding the rows' event-time attribute (watermarks are on it), if any.
    pub rowtime: Option<usize>,
    /// Why the rows are a changelog (updates and deletes, not only inserts): the operator that makes them so.
    pub updating: Option<String>,
    /// The rows carry the window of a window table function they belong to (a window TVF's rows, a window
    /// aggregate's result): which columns hold its start and end.
    pub window: Option<WindowCols>,
}

/// Where a relation's rows carry their window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCols {
    pub spec: WindowSpec,
    pub start: usize,
    pub end: usize,
}

impl LNode {
    pub fn scan(source: &str, schema: Schema, rowtime: Option<usize>) -> LNode {
        LNode {
            op: LOp::Scan { source: source.to_string() },
            inputs: Vec::new(),
            schema,
            rowtime,
            updating: None,
            window: None,
        }
    }
}

/// Lowers the tree rooted at `root` into a physical plan writing to `sink`.
pub fn lower(root: LNode, sink: String, agg_phases: two_phase::AggPhaseStrategy) -> JobPlan {
    let root = super::prune::prune_joins(root);
    let mut b = Lowering { nodes: Vec::new(), scans: Vec::new(), agg_phases };
    let out_schema = root.schema.clone();
    let updating = root.updating.clone();
    let top = b.node(root);
    b.nodes.push(Node {
        op: NodeOp::Sink,
        inputs: vec![Input { node: top, dist: Distribution::Forward }],
        schema: out_schema.clone(),
    });
    JobPlan { sink, nodes: b.nodes, out_schema, updating }
}

struct Lowering {
    nodes: Vec<Node>,
    /// Scan nodes made so far, by source: a job reads each source once.
    scans: Vec<(String, usize)>,
    agg_phases: two_phase::AggPhaseStrategy,
}

impl Lowering {
    fn push(&mut self, op: NodeOp, inputs: Vec<Input>, schema: Schema) -> usize {
        self.nodes.push(Node { op, inputs, schema });
        self.nodes.len() - 1
    }

    fn node(&mut self, n: LNode) -> usize {
        let LNode { op, inputs, schema, .. } = n;
        if let LOp::Scan { source } = &op {
            if let Some((_, at)) = self.scans.iter().find(|(s, _)| s == source) {
                return *at;
            }
            let at = self.push(NodeOp::Scan { source: source.clone() }, Vec::new(), schema);
            self.scans.push((source.clone(), at));
            return at;
        }
        let ins: Vec<usize> = inputs.into_iter().map(|c| self.node(c)).collect();
        let forward = |node: usize| Input { node, dist: Distribution::Forward };
        let hash = |node: usize, cols: Vec<usize>| Input { node, dist: Distribution::Hash(cols) };
        match op {
            LOp::Scan { .. } => unreachable!("handled above"),
            LOp::Calc(calc) => {
                let input = ins[0];
                // A calc that passes every column on as it is does nothing.
                let identity = calc.filter.is_none()
                    && calc.exprs.len() == self.nodes[input].schema.len()
                    && calc.exprs.iter().enumerate().all(|(i, e)| e.as_column() == Some(i));
                if identity {
                    return input;
                }
                // A calc over a calc read by nothing else: one calc.
                if let NodeOp::Calc(inner) = &self.nodes[input].op {
                    if input == self.nodes.len() - 1 && self.consumers_of(input) == 0 {
                        let fused = fuse(inner, &calc);
                        let inner_inputs = self.nodes[input].inputs.clone();
                        self.nodes.pop();
                        return self.push(NodeOp::Calc(fused), inner_inputs, schema);
                    }
                }
                self.push(NodeOp::Calc(calc), vec![forward(input)], schema)
            }
            LOp::WindowAssign { spec, time_col } => {
                self.push(NodeOp::WindowAssign { spec, time_col }, vec![forward(ins[0])], schema)
            }
            LOp::WindowAgg(w) => {
                let keys: Vec<usize> = (0..w.n_keys).collect();
                match two_phase::split_window(&w, self.agg_phases) {
                    Some((local, global)) => self.two_phase(ins[0], local, NodeOp::WindowAgg(global), keys, schema),
                    None => self.push(NodeOp::WindowAgg(w), vec![hash(ins[0], keys)], schema),
                }
            }
            LOp::GroupAgg(g) => {
                let keys: Vec<usize> = (0..g.n_keys).collect();
                match two_phase::split_group(&g, self.agg_phases) {
                    Some((local, global)) => self.two_phase(ins[0], local, NodeOp::GroupAgg(global), keys, schema),
                    None => self.push(NodeOp::GroupAgg(g), vec![hash(ins[0], keys)], schema),
                }
            }
            LOp::Rank(r) => {
                let keys = r.partition.clone();
                self.push(NodeOp::Rank(r), vec![hash(ins[0], keys)], schema)
            }
            LOp::WindowRank(r) => {
                let keys = r.partition.clone();
                self.push(NodeOp::WindowRank(r), vec![hash(ins[0], keys)], schema)
            }
            LOp::Join(j) => {
                let (lk, rk) = (j.sides.left_keys.clone(), j.sides.right_keys.clone());
                self.push(NodeOp::Join(j), vec![hash(ins[0], lk), hash(ins[1], rk)], schema)
            }
            LOp::IntervalJoin(j) => {
                let (lk, rk) = (j.sides.left_keys.clone(), j.sides.right_keys.clone());
                self.push(NodeOp::IntervalJoin(j), vec![hash(ins[0], lk), hash(ins[1], rk)], schema)
            }
            LOp::WindowJoin(j) => {
                let (lk, rk) = (j.sides.left_keys.clone(), j.sides.right_keys.clone());
                self.push(NodeOp::WindowJoin(j), vec![hash(ins[0], lk), hash(ins[1], rk)], schema)
            }
            LOp::Union => self.push(NodeOp::Union, ins.into_iter().map(forward).collect(), schema),
        }
    }

    /// A two-phase aggregation: `local` on `input`'s shard, then `global` behind the exchange by `keys`.
    fn two_phase(
        &mut self,
        input: usize,
        local: LocalAggPlan,
        global: NodeOp,
        keys: Vec<usize>,
        schema: Schema,
    ) -> usize {
        let out = local.output.clone();
        let l = self.push(NodeOp::LocalAgg(local), vec![Input { node: input, dist: Distribution::Forward }], out);
        self.push(global, vec![Input { node: l, dist: Distribution::Hash(keys) }], schema)
    }

    fn consumers_of(&self, i: usize) -> usize {
        self.nodes.iter().flat_map(|n| &n.inputs).filter(|inp| inp.node == i).count()
    }
}

/// One calc doing what `outer` over `inner` does: rows pass if both filters pass, the outer expressions
/// read the inner ones.
pub fn fuse(inner: &Calc, outer: &Calc) -> Calc {
    let filter = match (&inner.filter, &outer.filter) {
        (None, None) => None,
        (Some(f), None) => Some(f.clone()),
        (None, Some(g)) => Some(g.substitute(&inner.exprs)),
        (Some(f), Some(g)) => Some(Expr::and(f.clone(), g.substitute(&inner.exprs))),
    };
    Calc {
        filter,
        exprs: outer.exprs.iter().map(|e| e.substitute(&inner.exprs)).collect(),
        schema: outer.schema.clone(),
    }
}
