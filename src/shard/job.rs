//! One job's plan instantiated on one shard: every node of the DAG with its operator, the watermark and
//! end-of-input bookkeeping of its inputs, the outboxes of its hash edges, and the checkpoint alignment of
//! its stages. Synchronous and free of I/O: batches, watermarks, idleness, ends and barriers go in; what the
//! shard must do comes out as [`Effects`] (messages for exchange lanes, rows for the sink), which the shard
//! task performs. So the whole dataflow logic is tested without glommio.
//!
//! Rows move by *push*: a batch a node emits is handed at once to each forward consumer (same shard, same
//! call) and gathered into the outbox of each hash edge, per destination shard. A node whose only consumer
//! is the sink keeps its partial output for a short linger (batching at high rates, no wait at low ones);
//! every other node passes its output on at once.
//!
//! Stages and checkpoints: a *stage* is a set of nodes connected by forward edges; its inputs are scans and
//! hash edges (lanes). A stage aligns epoch E once the shard injected E at its sources and every input lane
//! delivered barrier E; lanes whose barrier arrived are not read until then. At alignment its operators
//! snapshot into the shard's checkpoint, its outputs are flushed (sink rows included, before the sink is
//! rolled) and barrier E goes out on every lane of its hash edges. A stage never waits for another stage of
//! its shard: the plan is acyclic, so barriers reach every stage in topological order.
//!
//! Invariants: a node's rows reach each consumer in emission order, before the watermark, idleness, end or
//! barrier that follows them; nothing here blocks or does I/O.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::constants::BATCH_LINGER_US;
use crate::operator::calc::CalcOp;
use crate::operator::key::key_hash;
use crate::operator::window_agg::WindowAggregator;
use crate::operator::{Operator, Output, StateEntry, StateWriter};
use crate::queue::{ChannelId, Message, ShardId};
use crate::record::{BatchBuf, BatchBuilder, DataType};
use crate::shard::routing::RoutingTable;
use crate::sql::physical::{Distribution, JobPlan, NodeOp};
use crate::state::log::BlobEncoder;
use crate::time::WatermarkCombiner;

const LINGER: Duration = Duration::from_micros(BATCH_LINGER_US);

/// What the shard must do after a call: send messages on exchange lanes, write rows to the job's sink.
#[derive(Debug, Default)]
pub struct Effects {
    /// (channel, destination shard, message), in order per lane.
    pub sends: Vec<(ChannelId, ShardId, Message)>,
    /// Rows for the job's sink, in order.
    pub writes: Vec<BatchBuf>,
    /// Stages that aligned the epoch in flight: the shard snapshots them ([`JobInstance::align_stage`]).
    pub aligned: Vec<usize>,
    /// The watermark reached the sink.
    pub sink_watermark: Option<i64>,
    /// Rows operators dropped as late.
    pub late: u64,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.writes.is_empty() && self.aligned.is_empty()
    }
}

/// Rows waiting for a destination, with the time the first of them arrived (for the linger).
struct Pending {
    rows: BatchBuilder,
    since: Option<Instant>,
}

impl Pending {
    fn new(types: &[DataType]) -> Pending {
        Pending { rows: BatchBuilder::new(types), since: None }
    }

    fn touch(&mut self, now: Instant) {
        if self.since.is_none() && !self.rows.is_empty() {
            self.since = Some(now);
        }
    }

    fn take(&mut self) -> Option<BatchBuf> {
        self.since = None;
        (!self.rows.is_empty()).then(|| self.rows.finish())
    }

    fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + LINGER)
    }

    fn is_full(&self) -> bool {
        self.rows.n_rows() >= crate::constants::EXCHANGE_BATCH_ROWS_MAX
            || self.rows.size_bytes() >= crate::constants::BATCH_BYTES_MAX
    }
}

enum Role {
    /// Scan `i` of the job (the shard's source driver reads it).
    Scan(usize),
    Op(Box<dyn Operator>),
    Sink,
}

struct NodeRt {
    role: Role,
    /// What the node emitted and has not passed on.
    out: Output,
    /// Its only consumer is the sink: a partial output waits for the linger.
    lingers: bool,
    /// When the first row of a lingering partial output was emitted.
    since: Option<Instant>,
    /// Forward consumers: (node, port).
    forward: Vec<(usize, usize)>,
    /// Hash edges out of this node: indices into `JobInstance::outs`.
    outs: Vec<usize>,
    /// Per input port, its first input slot (a forward port has one slot, a hash port one per shard).
    port_slot: Vec<usize>,
    /// Watermarks over every input slot.
    combiner: WatermarkCombiner,
    ended: Vec<bool>,
    /// Consumers were told this node is idle (until its next watermark).
    idle_out: bool,
    ended_out: bool,
    stage: usize,
    late_seen: u64,
}

/// A hash edge as this shard produces into it.
struct ChannelOut {
    id: ChannelId,
    keys: Vec<usize>,
    /// Per destination shard.
    outbox: Vec<Pending>,
    by_shard: Vec<Vec<u32>>,
    key_buf: Vec<u8>,
}

/// A hash edge as this shard consumes it.
pub struct ChannelIn {
    pub id: ChannelId,
    node: usize,
    port: usize,
    /// Per producer shard, the newest barrier received.
    barriers: Vec<u64>,
    pub stage: usize,
}

#[derive(Default)]
struct Stage {
    nodes: Vec<usize>,
    scans: Vec<usize>,
    ins: Vec<usize>,
    outs: Vec<usize>,
    has_sink: bool,
    /// The newest epoch this stage aligned and snapshotted.
    aligned: u64,
}

/// How the instance is wired into its shard and job graph.
pub struct Wiring {
    pub job: u16,
    pub shard: ShardId,
    pub n_shards: usize,
    /// The epoch the run restored (0: none): every stage starts aligned up to it.
    pub epoch: u64,
    pub routing: Arc<RoutingTable>,
    /// The exchange channel of each hash edge, by (consumer node, port).
    pub channels: Vec<((usize, usize), ChannelId)>,
    /// Window aggregates tag their rows with the window's end (latency measurement).
    pub window_lineage: bool,
    /// Checkpoints are on: operators track what changes.
    pub track_changes: bool,
}

pub struct JobInstance {
    job: u16,
    shard: ShardId,
    n_shards: usize,
    routing: Arc<RoutingTable>,
    key_groups: u32,
    nodes: Vec<NodeRt>,
    outs: Vec<ChannelOut>,
    pub ins: Vec<ChannelIn>,
    stages: Vec<Stage>,
    /// Scan index → node.
    scans: Vec<usize>,
    /// The sink received the end of its input.
    pub finished: bool,
    work: VecDeque<(usize, usize, BatchBuf)>,
}

fn make_operator(op: &NodeOp, w: &Wiring) -> Option<Box<dyn Operator>> {
    let kgs = w.routing.key_groups();
    use crate::operator::{group_agg, join, local_agg, rank, union, window_assign};
    match op {
        NodeOp::Scan { .. } | NodeOp::Sink => None,
        NodeOp::Calc(c) => Some(Box::new(CalcOp::new(c))),
        NodeOp::WindowAssign { spec, time_col } => Some(Box::new(window_assign::WindowAssigner::new(*spec, *time_col))),
        NodeOp::GroupAgg(g) => Some(Box::new(group_agg::GroupAggregator::new(g, kgs))),
        NodeOp::Rank(r) => Some(Box::new(rank::Ranker::new(r, kgs))),
        NodeOp::WindowRank(r) => Some(Box::new(rank::WindowRanker::new(r, kgs))),
        NodeOp::Join(j) => Some(Box::new(join::RegularJoin::new(j, kgs))),
        NodeOp::IntervalJoin(j) => Some(Box::new(join::IntervalJoin::new(j, kgs))),
        NodeOp::WindowJoin(j) => Some(Box::new(join::WindowJoin::new(j, kgs))),
        NodeOp::Union => Some(Box::new(union::UnionOp::default())),
        NodeOp::LocalAgg(l) => Some(Box::new(local_agg::LocalAggregator::new(l))),
        NodeOp::WindowAgg(p) => {
            let mut agg = WindowAggregator::new(p, w.routing.key_groups());
            if w.window_lineage {
                agg.track_lineage();
            }
            Some(Box::new(agg))
        }
    }
}

impl JobInstance {
    pub fn new(plan: &JobPlan, w: &Wiring) -> JobInstance {
        let n = w.n_shards;
        let mut nodes: Vec<NodeRt> = Vec::with_capacity(plan.nodes.len());
        let mut scans = Vec::new();
        let sink = plan.sink_node();
        for (i, node) in plan.nodes.iter().enumerate() {
            let role = match &node.op {
                NodeOp::Scan { .. } => {
                    scans.push(i);
                    Role::Scan(scans.len() - 1)
                }
                NodeOp::Sink => Role::Sink,
                op => {
                    let mut o = make_operator(op, w).expect("operator nodes make operators");
                    if w.track_changes {
                        o.track_changes(w.routing.key_groups());
                    }
                    Role::Op(o)
                }
            };
            let mut port_slot = Vec::new();
            let mut slots = 0;
            for input in &node.inputs {
                port_slot.push(slots);
                slots += match input.dist {
                    Distribution::Forward => 1,
                    Distribution::Hash(_) => n,
                };
            }
            let consumers = plan.consumers(i);
            let lingers = !consumers.is_empty()
                && consumers
                    .iter()
                    .all(|(c, _)| *c == sink && plan.nodes[sink].inputs[0].dist == Distribution::Forward);
            nodes.push(NodeRt {
                role,
                out: Output::new(&node.schema.types()),
                lingers,
                since: None,
                forward: Vec::new(),
                outs: Vec::new(),
                port_slot,
                combiner: WatermarkCombiner::new(slots),
                ended: vec![false; slots],
                idle_out: false,
                ended_out: false,
                stage: usize::MAX,
                late_seen: 0,
            });
        }
        // Edges.
        let mut outs = Vec::new();
        let mut ins = Vec::new();
        for (c, node) in plan.nodes.iter().enumerate() {
            for (port, input) in node.inputs.iter().enumerate() {
                match &input.dist {
                    Distribution::Forward => nodes[input.node].forward.push((c, port)),
                    Distribution::Hash(keys) => {
                        let id = w
                            .channels
                            .iter()
                            .find(|(at, _)| *at == (c, port))
                            .map(|(_, id)| *id)
                            .expect("every hash edge has a channel");
                        let types = plan.nodes[input.node].schema.types();
                        nodes[input.node].outs.push(outs.len());
                        outs.push(ChannelOut {
                            id,
                            keys: keys.clone(),
                            outbox: (0..n).map(|_| Pending::new(&types)).collect(),
                            by_shard: vec![Vec::new(); n],
                            key_buf: Vec::new(),
                        });
                        ins.push(ChannelIn { id, node: c, port, barriers: vec![w.epoch; n], stage: usize::MAX });
                    }
                }
            }
        }
        // Stages: connected components of forward edges.
        let mut stages: Vec<Stage> = Vec::new();
        for start in 0..nodes.len() {
            if nodes[start].stage != usize::MAX {
                continue;
            }
            let s = stages.len();
            stages.push(Stage { aligned: w.epoch, ..Stage::default() });
            let mut todo = vec![start];
            while let Some(x) = todo.pop() {
                if nodes[x].stage != usize::MAX {
                    continue;
                }
                nodes[x].stage = s;
                stages[s].nodes.push(x);
                todo.extend(nodes[x].forward.iter().map(|(c, _)| *c));
                let forward_inputs = plan.nodes[x].inputs.iter().filter(|i| i.dist == Distribution::Forward);
                todo.extend(forward_inputs.map(|i| i.node));
            }
        }
        for node in &nodes {
            let st = &mut stages[node.stage];
            match node.role {
                Role::Scan(s) => st.scans.push(s),
                Role::Sink => st.has_sink = true,
                Role::Op(_) => {}
            }
            st.outs.extend(node.outs.iter().copied());
        }
        for (k, ch) in ins.iter_mut().enumerate() {
            ch.stage = nodes[ch.node].stage;
            stages[ch.stage].ins.push(k);
        }
        JobInstance {
            job: w.job,
            shard: w.shard,
            n_shards: n,
            routing: w.routing.clone(),
            key_groups: w.routing.key_groups(),
            nodes,
            outs,
            ins,
            stages,
            scans,
            finished: false,
            work: VecDeque::new(),
        }
    }

    pub fn n_scans(&self) -> usize {
        self.scans.len()
    }

    /// The stage a scan feeds.
    pub fn scan_stage(&self, scan: usize) -> usize {
        self.nodes[self.scans[scan]].stage
    }

    pub fn n_stages(&self) -> usize {
        self.stages.len()
    }

    /// The exchange channels a stage produces into (its backpressure: any of their lanes full).
    pub fn stage_out_channels(&self, stage: usize) -> impl Iterator<Item = ChannelId> + '_ {
        self.stages[stage].outs.iter().map(|o| self.outs[*o].id)
    }

    pub fn stage_has_sink(&self, stage: usize) -> bool {
        self.stages[stage].has_sink
    }

    pub fn stage_aligned(&self, stage: usize) -> u64 {
        self.stages[stage].aligned
    }

    // ----- rows -----

    /// A batch read by scan `scan`. `caught_up`: the source gave what it had, so rows lingering for the
    /// sink go now.
    pub fn scan_batch(&mut self, scan: usize, batch: BatchBuf, caught_up: bool, now: Instant, fx: &mut Effects) {
        let node = self.scans[scan];
        self.emit(node, vec![batch], now, fx);
        self.run(now, fx);
        if caught_up {
            let stage = self.nodes[node].stage;
            let lingering: Vec<usize> =
                self.stages[stage].nodes.iter().copied().filter(|n| self.nodes[*n].lingers).collect();
            for n in lingering {
                self.flush_node(n, now, fx);
            }
        }
    }

    /// Passes batches emitted by `node` on: to forward consumers (queued), into hash edges' outboxes.
    fn emit(&mut self, node: usize, batches: Vec<BatchBuf>, now: Instant, fx: &mut Effects) {
        for batch in batches {
            let forward = &self.nodes[node].forward;
            let outs = self.nodes[node].outs.clone();
            let n_forward = forward.len();
            let mut batch = Some(batch);
            for k in 0..n_forward {
                let (c, port) = self.nodes[node].forward[k];
                let last = k + 1 == n_forward && outs.is_empty();
                let b =
                    if last { batch.take().expect("not taken") } else { batch.as_ref().expect("kept").clone_batch() };
                if matches!(self.nodes[c].role, Role::Sink) {
                    fx.writes.push(b);
                } else {
                    self.work.push_back((c, port, b));
                }
            }
            for o in outs {
                if let Some(b) = &batch {
                    self.route(o, b, now, fx);
                }
            }
        }
    }

    /// Processes queued batches until none is left.
    fn run(&mut self, now: Instant, fx: &mut Effects) {
        while let Some((node, port, batch)) = self.work.pop_front() {
            let n = &mut self.nodes[node];
            let Role::Op(op) = &mut n.role else { continue };
            op.process(port, &batch, &mut n.out);
            let late = op.late_records();
            fx.late += late - n.late_seen;
            n.late_seen = late;
            self.pass_on(node, now, fx);
        }
    }

    /// Passes a node's output on: full batches always, a partial one unless the node lingers.
    fn pass_on(&mut self, node: usize, now: Instant, fx: &mut Effects) {
        let n = &mut self.nodes[node];
        if !n.lingers {
            n.out.flush();
        } else if n.out.rows.is_empty() {
            n.since = None;
        } else if n.since.is_none() {
            n.since = Some(now);
        }
        if n.out.has_done() {
            let done: Vec<BatchBuf> = n.out.take_done().collect();
            if n.lingers && n.out.rows.is_empty() {
                n.since = None;
            }
            self.emit(node, done, now, fx);
        }
    }

    /// Everything a node holds goes on now.
    fn flush_node(&mut self, node: usize, now: Instant, fx: &mut Effects) {
        self.nodes[node].out.flush();
        self.nodes[node].since = None;
        self.pass_on(node, now, fx);
        self.run(now, fx);
    }

    /// Gathers the rows of `batch` into edge `o`'s outboxes by the shard owning each row's key group.
    fn route(&mut self, o: usize, batch: &BatchBuf, now: Instant, fx: &mut Effects) {
        let n_shards = self.n_shards;
        let routing = self.routing.clone();
        let ch = &mut self.outs[o];
        let view = batch.view();
        for sel in &mut ch.by_shard {
            sel.clear();
        }
        if ch.keys.is_empty() {
            // One key group for every row: the empty key's.
            let to = routing.route(key_hash(&[]));
            ch.by_shard[to.idx()].extend(0..view.n_rows() as u32);
        } else {
            for row in 0..view.n_rows() {
                let to = if n_shards == 1 {
                    ShardId(0)
                } else {
                    crate::operator::key::encode_key_cols(&view, row, &ch.keys, &mut ch.key_buf);
                    routing.route(key_hash(&ch.key_buf))
                };
                ch.by_shard[to.idx()].push(row as u32);
            }
        }
        let mut full = Vec::new();
        for (to, sel) in ch.by_shard.iter().enumerate() {
            if sel.is_empty() {
                continue;
            }
            let out = &mut ch.outbox[to];
            for col in 0..view.n_columns() {
                out.rows.gather(col, &view, col, sel);
            }
            out.rows.end_rows_from(&view, sel);
            if let Some(l) = &batch.lineage {
                out.rows.lineage.get_or_insert_with(|| l.empty_like()).gather(l, sel);
            }
            out.touch(now);
            if out.is_full() {
                full.push(to);
            }
        }
        for to in full {
            self.send_outbox(o, to, fx);
        }
    }

    fn send_outbox(&mut self, o: usize, to: usize, fx: &mut Effects) {
        let ch = &mut self.outs[o];
        if let Some(b) = ch.outbox[to].take() {
            fx.sends.push((ch.id, ShardId(to as u16), Message::Batch(b)));
        }
    }

    /// Sends `msg` on every lane of edge `o`, after the rows waiting for each destination.
    fn broadcast(&mut self, o: usize, msg: impl Fn() -> Message, fx: &mut Effects) {
        for to in 0..self.n_shards {
            self.send_outbox(o, to, fx);
            fx.sends.push((self.outs[o].id, ShardId(to as u16), msg()));
        }
    }

    /// A message from lane `from` of input edge `k`.
    pub fn on_message(&mut self, k: usize, from: ShardId, msg: Message, now: Instant, fx: &mut Effects) {
        let (node, port) = (self.ins[k].node, self.ins[k].port);
        let slot = self.nodes[node].port_slot[port] + from.idx();
        match msg {
            Message::Batch(batch) => {
                self.work.push_back((node, port, batch));
                self.run(now, fx);
            }
            Message::Watermark(wm) => self.input_watermark(node, slot, wm, now, fx),
            Message::Idle => self.input_idle(node, slot, now, fx),
            Message::EndOfInput => self.input_end(node, slot, now, fx),
            Message::Barrier(epoch) => {
                let b = &mut self.ins[k].barriers[from.idx()];
                *b = (*b).max(epoch);
            }
        }
    }

    // ----- event time, idleness, end of input -----

    fn input_watermark(&mut self, node: usize, slot: usize, wm: i64, now: Instant, fx: &mut Effects) {
        if let Some(combined) = self.nodes[node].combiner.update(slot, wm) {
            self.node_watermark(node, combined, now, fx);
        }
    }

    /// Node `node`'s event time reached `wm`: its operator fires, then the watermark goes downstream.
    fn node_watermark(&mut self, node: usize, wm: i64, now: Instant, fx: &mut Effects) {
        let n = &mut self.nodes[node];
        n.idle_out = false;
        let out_wm = match &mut n.role {
            Role::Sink => {
                fx.sink_watermark = Some(wm);
                return;
            }
            Role::Scan(_) => wm,
            Role::Op(op) => {
                op.advance_watermark(wm, &mut n.out);
                let late = op.late_records();
                fx.late += late - n.late_seen;
                n.late_seen = late;
                op.output_watermark(wm)
            }
        };
        // Rows before the watermark they are covered by: a firing's output goes now, lingering or not.
        self.flush_node(node, now, fx);
        self.forward_watermark(node, out_wm, now, fx);
    }

    fn forward_watermark(&mut self, node: usize, wm: i64, now: Instant, fx: &mut Effects) {
        for k in 0..self.nodes[node].forward.len() {
            let (c, port) = self.nodes[node].forward[k];
            let slot = self.nodes[c].port_slot[port];
            self.input_watermark(c, slot, wm, now, fx);
        }
        for o in self.nodes[node].outs.clone() {
            self.broadcast(o, || Message::Watermark(wm), fx);
        }
    }

    fn input_idle(&mut self, node: usize, slot: usize, now: Instant, fx: &mut Effects) {
        if let Some(combined) = self.nodes[node].combiner.set_idle(slot) {
            self.node_watermark(node, combined, now, fx);
        }
        if self.nodes[node].combiner.all_idle() {
            self.node_idle(node, now, fx);
        }
    }

    /// Every input of `node` is idle: its consumers stop waiting for its watermark.
    fn node_idle(&mut self, node: usize, now: Instant, fx: &mut Effects) {
        if std::mem::replace(&mut self.nodes[node].idle_out, true) {
            return;
        }
        self.flush_node(node, now, fx);
        for k in 0..self.nodes[node].forward.len() {
            let (c, port) = self.nodes[node].forward[k];
            let slot = self.nodes[c].port_slot[port];
            self.input_idle(c, slot, now, fx);
        }
        for o in self.nodes[node].outs.clone() {
            self.broadcast(o, || Message::Idle, fx);
        }
    }

    fn input_end(&mut self, node: usize, slot: usize, now: Instant, fx: &mut Effects) {
        self.nodes[node].ended[slot] = true;
        if self.nodes[node].ended.iter().all(|e| *e) {
            self.node_end(node, now, fx);
        }
    }

    /// Every input of `node` ended: it emits what is left, and its consumers are told.
    fn node_end(&mut self, node: usize, now: Instant, fx: &mut Effects) {
        if std::mem::replace(&mut self.nodes[node].ended_out, true) {
            return;
        }
        let n = &mut self.nodes[node];
        match &mut n.role {
            Role::Sink => {
                self.finished = true;
                return;
            }
            Role::Op(op) => op.end_of_input(&mut n.out),
            Role::Scan(_) => {}
        }
        self.flush_node(node, now, fx);
        for k in 0..self.nodes[node].forward.len() {
            let (c, port) = self.nodes[node].forward[k];
            let slot = self.nodes[c].port_slot[port];
            self.input_end(c, slot, now, fx);
        }
        for o in self.nodes[node].outs.clone() {
            self.broadcast(o, || Message::EndOfInput, fx);
        }
    }

    /// Scan `scan`'s watermark advanced to `wm` on this shard.
    pub fn scan_watermark(&mut self, scan: usize, wm: i64, now: Instant, fx: &mut Effects) {
        self.node_watermark(self.scans[scan], wm, now, fx);
    }

    /// Scan `scan`'s splits on this shard are idle.
    pub fn scan_idle(&mut self, scan: usize, now: Instant, fx: &mut Effects) {
        let node = self.scans[scan];
        self.nodes[node].idle_out = false;
        self.node_idle(node, now, fx);
    }

    /// Scan `scan`'s splits on this shard are all read (its final watermark went out before).
    pub fn scan_end(&mut self, scan: usize, now: Instant, fx: &mut Effects) {
        self.node_end(self.scans[scan], now, fx);
    }

    // ----- time -----

    /// Sends what lingered past its deadline.
    pub fn flush_expired(&mut self, now: Instant, fx: &mut Effects) {
        for node in 0..self.nodes.len() {
            if self.nodes[node].since.is_some_and(|s| s + LINGER <= now) {
                self.flush_node(node, now, fx);
            }
        }
        for o in 0..self.outs.len() {
            for to in 0..self.n_shards {
                if self.outs[o].outbox[to].deadline().is_some_and(|d| d <= now) {
                    self.send_outbox(o, to, fx);
                }
            }
        }
    }

    /// The earliest linger deadline, if anything lingers.
    pub fn deadline(&self) -> Option<Instant> {
        let nodes = self.nodes.iter().filter_map(|n| n.since.map(|s| s + LINGER));
        let outs = self.outs.iter().flat_map(|o| o.outbox.iter().filter_map(Pending::deadline));
        nodes.chain(outs).min()
    }

    /// Wall-clock time reached `now_ms`: operators with processing-time work do it.
    pub fn on_processing_time(&mut self, now_ms: i64, now: Instant, fx: &mut Effects) {
        for node in 0..self.nodes.len() {
            let n = &mut self.nodes[node];
            let Role::Op(op) = &mut n.role else { continue };
            if op.next_processing_time().is_some_and(|t| t <= now_ms) {
                op.on_processing_time(now_ms, &mut n.out);
                self.pass_on(node, now, fx);
                self.run(now, fx);
            }
        }
    }

    /// The earliest processing time an operator waits for.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.role {
                Role::Op(op) => op.next_processing_time(),
                _ => None,
            })
            .min()
    }

    // ----- checkpoints -----

    /// True when lane `from` of input edge `k` must not be read: its barrier arrived and the stage it feeds
    /// has not aligned that epoch yet.
    pub fn lane_blocked(&self, k: usize, from: ShardId) -> bool {
        let ch = &self.ins[k];
        ch.barriers[from.idx()] > self.stages[ch.stage].aligned
    }

    /// The newest barrier any lane delivered (a shard injects an epoch it sees arriving).
    pub fn newest_barrier(&self) -> u64 {
        self.ins.iter().flat_map(|c| c.barriers.iter().copied()).max().unwrap_or(0)
    }

    /// The stages that can align `epoch` now (the shard injected it at its sources).
    pub fn ready_stages(&self, epoch: u64) -> Vec<usize> {
        (0..self.stages.len())
            .filter(|&s| {
                let st = &self.stages[s];
                st.aligned < epoch && st.ins.iter().all(|k| self.ins[*k].barriers.iter().all(|b| *b >= epoch))
            })
            .collect()
    }

    /// True when every stage aligned `epoch`.
    pub fn all_aligned(&self, epoch: u64) -> bool {
        self.stages.iter().all(|s| s.aligned >= epoch)
    }

    /// Aligns `stage` at `epoch`: its operators' state goes into `enc` (all of it if `full`), its output is
    /// flushed (sink rows into `fx.writes`, before the sink is rolled), and barrier `epoch` goes out on every
    /// lane of its hash edges.
    pub fn align_stage(
        &mut self,
        stage: usize,
        epoch: u64,
        full: bool,
        enc: &mut BlobEncoder,
        now: Instant,
        fx: &mut Effects,
    ) {
        let nodes = self.stages[stage].nodes.clone();
        for &node in &nodes {
            if let Role::Op(op) = &mut self.nodes[node].role {
                let mut w = StateWriter { enc, job: self.job, node: node as u16, key_groups: self.key_groups };
                op.snapshot(full, &mut w);
            }
        }
        for &node in &nodes {
            self.flush_node(node, now, fx);
        }
        for o in self.stages[stage].outs.clone() {
            self.broadcast(o, || Message::Barrier(epoch), fx);
        }
        self.stages[stage].aligned = epoch;
    }

    /// Flushes everything waiting in a stage's outputs and outboxes (before a barrier is injected at its
    /// sources).
    pub fn flush_stage(&mut self, stage: usize, now: Instant, fx: &mut Effects) {
        for node in self.stages[stage].nodes.clone() {
            self.flush_node(node, now, fx);
        }
        for o in self.stages[stage].outs.clone() {
            for to in 0..self.n_shards {
                self.send_outbox(o, to, fx);
            }
        }
    }

    /// The stateful operators' watermarks, for the checkpoint: (node, watermark).
    pub fn checkpoint_watermarks(&self) -> Vec<(u16, i64)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.role {
                Role::Op(op) if op.checkpoint_watermark() != i64::MIN => Some((i as u16, op.checkpoint_watermark())),
                _ => None,
            })
            .collect()
    }

    // ----- restore -----

    fn op_mut(&mut self, node: u16) -> Result<&mut Box<dyn Operator>, String> {
        match self.nodes.get_mut(node as usize).map(|n| &mut n.role) {
            Some(Role::Op(op)) => Ok(op),
            _ => Err(format!("state of operator {node}, which this job's plan has no operator at")),
        }
    }

    pub fn restore(&mut self, node: u16, table: u16, kg: u32, entries: &[StateEntry<'_>]) -> Result<(), String> {
        self.op_mut(node)?.restore(table, kg, entries)
    }

    pub fn reserve(&mut self, node: u16, table: u16, namespace: i64, keys: usize, key_bytes: usize) {
        if let Ok(op) = self.op_mut(node) {
            op.reserve(table, namespace, keys, key_bytes);
        }
    }

    /// Ends a restore: `floors(node)` gives a stateful operator's per-key-group floors.
    pub fn finish_restore(&mut self, floors: impl Fn(u16) -> Option<Vec<i64>>, owned: &[u16]) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Role::Op(op) = &mut n.role {
                if let Some(f) = floors(i as u16) {
                    op.finish_restore(&f, owned);
                }
            }
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::record::{Datum, Schema};
    use crate::sql::plan::TableInfo;
    use crate::sql::{plan_job, WatermarkSpec};
    use crate::state::log::CheckpointKind;

    const SCHEMA: &str = "k VARCHAR, v BIGINT, ts TIMESTAMP(3)";

    fn plan(sql: &str) -> JobPlan {
        let schema = Schema::parse(SCHEMA).unwrap();
        let mut tables = BTreeMap::new();
        tables.insert("t".to_string(), TableInfo { schema, watermark: Some(WatermarkSpec { column: 2, delay_ms: 0 }) });
        plan_job(sql, &tables, &["out".to_string()]).unwrap()
    }

    /// One instance of `plan` per shard, wired as the daemon wires them (one channel per hash edge).
    fn instances(plan: &JobPlan, n: usize) -> Vec<JobInstance> {
        let mut channels = Vec::new();
        for (c, node) in plan.nodes.iter().enumerate() {
            for (port, input) in node.inputs.iter().enumerate() {
                if input.dist != Distribution::Forward {
                    channels.push(((c, port), channels.len() as ChannelId));
                }
            }
        }
        let routing = Arc::new(RoutingTable::new(16, n));
        (0..n)
            .map(|s| {
                let w = Wiring {
                    job: 0,
                    shard: ShardId(s as u16),
                    n_shards: n,
                    epoch: 0,
                    routing: routing.clone(),
                    channels: channels.clone(),
                    window_lineage: false,
                    track_changes: true,
                };
                JobInstance::new(plan, &w)
            })
            .collect()
    }

    fn rows(batch: &[(&str, i64, i64)]) -> BatchBuf {
        let mut b = BatchBuilder::new(&Schema::parse(SCHEMA).unwrap().types());
        for (k, v, ts) in batch {
            b.push_str(0, k.as_bytes());
            b.push_int(1, *v);
            b.push_int(2, *ts);
            b.end_row();
        }
        b.finish()
    }

    fn cells(batches: &[BatchBuf]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for b in batches {
            let v = b.view();
            for r in 0..v.n_rows() {
                out.push(
                    (0..v.n_columns())
                        .map(|c| match v.datum(c, r) {
                            Datum::Str(s) => String::from_utf8_lossy(s).into_owned(),
                            d => format!("{d:?}"),
                        })
                        .collect(),
                );
            }
        }
        out.sort();
        out
    }

    /// The lanes between instances: messages sent, not yet taken, per (channel, from, to), in order.
    #[derive(Default)]
    struct Lanes(BTreeMap<(ChannelId, u16, u16), VecDeque<Message>>);

    impl Lanes {
        fn take(&mut self, from: usize, fx: &mut Effects) {
            for (ch, to, msg) in fx.sends.drain(..) {
                self.0.entry((ch, from as u16, to.0)).or_default().push_back(msg);
            }
        }

        /// Delivers every deliverable message (lanes a barrier holds are skipped); returns the sink's rows.
        fn deliver(&mut self, jobs: &mut [JobInstance], now: Instant) -> Vec<BatchBuf> {
            let mut written = Vec::new();
            loop {
                let mut moved = false;
                let keys: Vec<_> = self.0.keys().copied().collect();
                for (ch, from, to) in keys {
                    let k = jobs[to as usize].ins.iter().position(|c| c.id == ch).unwrap();
                    while !jobs[to as usize].lane_blocked(k, ShardId(from)) {
                        let Some(msg) = self.0.get_mut(&(ch, from, to)).unwrap().pop_front() else { break };
                        let mut fx = Effects::default();
                        jobs[to as usize].on_message(k, ShardId(from), msg, now, &mut fx);
                        written.append(&mut fx.writes);
                        self.take(to as usize, &mut fx);
                        moved = true;
                    }
                }
                if !moved {
                    return written;
                }
            }
        }
    }

    #[test]
    fn a_stateless_job_lingers_for_its_sink_unless_the_source_caught_up() {
        let p = plan("INSERT INTO out SELECT k, v * 2 AS w FROM t WHERE v > 1");
        let mut job = instances(&p, 1).remove(0);
        let t0 = Instant::now();
        let mut fx = Effects::default();
        job.scan_batch(0, rows(&[("a", 1, 0), ("b", 2, 0)]), false, t0, &mut fx);
        assert!(fx.writes.is_empty(), "a partial batch lingers");
        assert_eq!(job.deadline(), Some(t0 + LINGER));
        job.flush_expired(t0 + LINGER, &mut fx);
        assert_eq!(cells(&fx.writes), vec![vec!["b".to_string(), "Int(4)".to_string()]]);
        let mut fx = Effects::default();
        job.scan_batch(0, rows(&[("c", 3, 0)]), true, t0, &mut fx);
        assert_eq!(fx.writes.len(), 1, "a caught-up source's rows go at once");
        assert!(job.deadline().is_none());
    }

    /// Two shards: rows go to the shard owning their key, windows fire when the watermarks of both
    /// producers pass, and the end of input reaches the sink on each shard.
    #[test]
    fn a_window_job_on_two_shards_routes_by_key_and_fires_on_the_combined_watermark() {
        let p = plan(
            "INSERT INTO out SELECT k, COUNT(*) AS n, SUM(v) AS s, window_end FROM TABLE(TUMBLE(TABLE t, \
             DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end",
        );
        let mut jobs = instances(&p, 2);
        let mut lanes = Lanes::default();
        let now = Instant::now();
        let mut written = Vec::new();
        for (shard, batch) in [(0, rows(&[("a", 1, 1_000), ("b", 2, 2_000)])), (1, rows(&[("a", 3, 9_999)]))] {
            let mut fx = Effects::default();
            jobs[shard].scan_batch(0, batch, false, now, &mut fx);
            jobs[shard].scan_watermark(0, 9_998, now, &mut fx);
            lanes.take(shard, &mut fx);
        }
        written.extend(lanes.deliver(&mut jobs, now));
        assert!(written.is_empty(), "the window [0 s, 10 s) fires at 9.999 s; the watermark is 9.998 s");
        let mut fx = Effects::default();
        jobs[0].scan_watermark(0, 20_000, now, &mut fx);
        lanes.take(0, &mut fx);
        written.extend(lanes.deliver(&mut jobs, now));
        assert!(written.is_empty(), "shard 1's watermark still holds the window");
        for (shard, job) in jobs.iter_mut().enumerate() {
            let mut fx = Effects::default();
            job.scan_watermark(0, crate::time::WATERMARK_END, now, &mut fx);
            job.scan_end(0, now, &mut fx);
            lanes.take(shard, &mut fx);
        }
        written.extend(lanes.deliver(&mut jobs, now));
        let end = 10_000;
        assert_eq!(
            cells(&written),
            vec![
                vec!["a".to_string(), "Int(2)".into(), "Int(4)".into(), format!("Int({end})")],
                vec!["b".to_string(), "Int(1)".into(), "Int(2)".into(), format!("Int({end})")],
            ]
        );
        assert!(jobs.iter().all(|j| j.finished), "the end of input reached both sinks");
    }

    /// A stage aligns only once every lane delivered the barrier; a lane whose barrier arrived is held
    /// (its later rows belong to the next epoch), and the aligned stage's state is in the checkpoint.
    #[test]
    fn a_stage_aligns_once_every_lane_delivered_its_barrier_and_holds_the_early_lanes() {
        let p = plan(
            "INSERT INTO out SELECT k, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' \
             SECOND)) GROUP BY k, window_start, window_end",
        );
        let mut jobs = instances(&p, 2);
        let mut lanes = Lanes::default();
        let now = Instant::now();
        let source_stage = jobs[0].scan_stage(0);
        let agg_stage =
            (0..jobs[0].n_stages()).find(|s| *s != source_stage && !jobs[0].stages[*s].ins.is_empty()).unwrap();
        // Shard 0 injects epoch 1: its source stage aligns at once and sends the barrier on every lane.
        let mut enc = BlobEncoder::new(1, 0, CheckpointKind::Base);
        assert_eq!(jobs[0].ready_stages(1), vec![source_stage], "the aggregate waits for its lanes");
        let mut fx = Effects::default();
        jobs[0].scan_batch(0, rows(&[("a", 1, 1)]), false, now, &mut fx);
        jobs[0].align_stage(source_stage, 1, true, &mut enc, now, &mut fx);
        // After the barrier, a row of epoch 2.
        jobs[0].scan_batch(0, rows(&[("a", 1, 2)]), false, now, &mut fx);
        jobs[0].flush_stage(source_stage, now, &mut fx);
        lanes.take(0, &mut fx);
        lanes.deliver(&mut jobs, now);
        assert!(jobs.iter().all(|j| j.lane_blocked(0, ShardId(0))), "shard 0's barrier holds its lanes");
        assert!(jobs.iter().all(|j| !j.lane_blocked(0, ShardId(1))));
        assert!(!jobs.iter().any(|j| j.ready_stages(1).contains(&agg_stage)), "shard 1's barrier is missing");
        // Shard 1 injects: now both aggregate stages can align.
        let mut enc1 = BlobEncoder::new(1, 1, CheckpointKind::Base);
        let mut fx = Effects::default();
        jobs[1].align_stage(source_stage, 1, true, &mut enc1, now, &mut fx);
        lanes.take(1, &mut fx);
        lanes.deliver(&mut jobs, now);
        for (shard, enc) in [(0, &mut enc), (1, &mut enc1)] {
            assert_eq!(jobs[shard].ready_stages(1), vec![agg_stage]);
            let mut fx = Effects::default();
            jobs[shard].align_stage(agg_stage, 1, true, enc, now, &mut fx);
            assert!(jobs[shard].all_aligned(1));
        }
        // The row of epoch 1 is in the checkpoint of the shard owning "a", the row of epoch 2 is not.
        let entries = enc.entries() + enc1.entries();
        assert_eq!(entries, 1, "one slice row, counting only the row before the barrier");
        lanes.deliver(&mut jobs, now);
    }
}
