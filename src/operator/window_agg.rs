//! The window aggregation operator: keyed, incremental, event time.
//!
//! Tumbling, hopping and cumulating windows keep one accumulator row per (slice, key) and merge a window's
//! slices when it fires; session windows keep a list of open sessions per key and merge them as Flink's
//! merging window assigner does (sessions that overlap or touch become one). A window fires exactly once,
//! when the watermark reaches its max timestamp; its state is dropped once no later window needs it.
//! A record all of whose windows have fired is late: dropped and counted.
//!
//! Invariant: no I/O. Rows in, rows out through a callback; the shard owns batching and delivery.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::accumulator::{merge_rows, new_row, Acc, AccRow};
use super::calc::run_calc_columnar;
use super::key::{decode_key_into, encode_key, key_hash};
use super::keyed::KeyedAccs;
use crate::constants::EXCHANGE_BATCH_ROWS_MAX;
use crate::record::types::{DataType, Datum};
use crate::record::{BatchBuf, BatchBuilder, BatchView};
use crate::sql::WindowAggPlan;
use crate::window::{Window, WindowSpec};

type Key = Box<[u8]>;
type KeyMap<V> = HashMap<Key, V, xxhash_rust::xxh3::Xxh3Builder>;

fn key_map<V>() -> KeyMap<V> {
    HashMap::with_hasher(xxhash_rust::xxh3::Xxh3Builder::new())
}

#[derive(Debug)]
struct Session {
    window: Window,
    accs: AccRow,
}

/// Counters the operator keeps; the shard reports them.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowAggStats {
    pub late_records: u64,
    pub windows_fired: u64,
    pub rows_emitted: u64,
}

pub struct WindowAggregator {
    plan: WindowAggPlan,
    key_types: Vec<DataType>,
    watermark: i64,
    /// Slice end → key → accumulators (tumble, hop, cumulate).
    slices: BTreeMap<i64, KeyedAccs>,
    /// Keys and mean key bytes of the largest slice fired so far: the size new slices start with.
    largest_slice: (usize, usize),
    /// Ends of windows that hold data and have not fired.
    pending_window_ends: BTreeSet<i64>,
    /// Key → open sessions, ordered by start.
    sessions: KeyMap<Vec<Session>>,
    /// (session end, key) of every open session.
    session_timers: BTreeSet<(i64, Key)>,
    key_buf: Vec<u8>,
    scratch: Vec<u8>,
    /// Fired rows that pass HAVING (reused between firings).
    selection: Vec<u32>,
    agg_out: BatchBuilder,
    out: BatchBuilder,
    pub stats: WindowAggStats,
}

impl WindowAggregator {
    pub fn new(plan: &WindowAggPlan) -> WindowAggregator {
        WindowAggregator {
            key_types: plan.input.types()[..plan.n_keys].to_vec(),
            watermark: i64::MIN,
            slices: BTreeMap::new(),
            largest_slice: (0, 0),
            pending_window_ends: BTreeSet::new(),
            sessions: key_map(),
            session_timers: BTreeSet::new(),
            key_buf: Vec::new(),
            scratch: Vec::new(),
            selection: Vec::new(),
            agg_out: BatchBuilder::new(&plan.output.types()),
            out: BatchBuilder::new(&plan.post.schema.types()),
            stats: WindowAggStats::default(),
            plan: plan.clone(),
        }
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Adds the rows of a batch of `plan.input` rows.
    pub fn process(&mut self, view: &BatchView<'_>) {
        let spec = self.plan.spec;
        for row in 0..view.n_rows() {
            if view.is_null(self.plan.time_col, row) {
                self.stats.late_records += 1;
                continue;
            }
            let ts = view.int(self.plan.time_col, row);
            encode_key(view, row, self.plan.n_keys, &mut self.key_buf);
            if spec.is_session() {
                self.add_to_session(ts, view, row);
            } else {
                self.add_to_slice(ts, view, row);
            }
        }
    }

    fn update_row(plan: &WindowAggPlan, accs: &mut [Acc], view: &BatchView<'_>, row: usize, scratch: &mut Vec<u8>) {
        for (acc, call) in accs.iter_mut().zip(&plan.aggs) {
            acc.update(call.arg.map(|c| view.datum(c, row)), scratch);
        }
    }

    fn add_to_slice(&mut self, ts: i64, view: &BatchView<'_>, row: usize) {
        let spec = self.plan.spec;
        let slice_end = spec.slice_end(ts);
        if spec.last_window_end(slice_end) - 1 <= self.watermark {
            self.stats.late_records += 1;
            return;
        }
        let n_aggs = self.plan.aggs.len();
        let slice = match self.slices.get_mut(&slice_end) {
            Some(s) => s,
            None => {
                let wm = self.watermark;
                self.pending_window_ends.extend(spec.window_ends(slice_end).filter(|e| e - 1 > wm));
                let (n_keys, key_bytes) = self.largest_slice;
                self.slices.entry(slice_end).or_insert_with(|| KeyedAccs::with_capacity(n_aggs, n_keys, key_bytes))
            }
        };
        let accs = slice.row_mut(key_hash(&self.key_buf), &self.key_buf, &self.plan.aggs);
        Self::update_row(&self.plan, accs, view, row, &mut self.scratch);
    }

    fn add_to_session(&mut self, ts: i64, view: &BatchView<'_>, row: usize) {
        let WindowSpec::Session { gap_ms } = self.plan.spec else { unreachable!("session windows only") };
        let mut window = Window { start: ts, end: ts.saturating_add(gap_ms) };
        if window.max_timestamp() <= self.watermark {
            self.stats.late_records += 1;
            return;
        }
        let mut accs = new_row(&self.plan.aggs);
        Self::update_row(&self.plan, &mut accs, view, row, &mut self.scratch);
        let key: &[u8] = &self.key_buf;
        let sessions = match self.sessions.get_mut(key) {
            Some(s) => s,
            None => self.sessions.entry(key.into()).or_default(),
        };
        // Merge every open session that overlaps or touches the new one (Flink's TimeWindow::intersects).
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i].window;
            if s.start <= window.end && s.end >= window.start {
                let old = sessions.remove(i);
                self.session_timers.remove(&(old.window.end, Key::from(key)));
                window = Window { start: window.start.min(old.window.start), end: window.end.max(old.window.end) };
                merge_rows(&mut accs, &old.accs);
            } else {
                i += 1;
            }
        }
        let at = sessions.partition_point(|s| s.window.start < window.start);
        sessions.insert(at, Session { window, accs });
        self.session_timers.insert((window.end, key.into()));
    }

    /// Advances event time to `watermark`, firing every window whose max timestamp it reaches; fired rows
    /// (after HAVING and the SELECT list) go to `emit` in batches.
    pub fn advance_watermark(&mut self, watermark: i64, emit: &mut dyn FnMut(BatchBuf)) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        if self.plan.spec.is_session() {
            self.fire_sessions(emit);
        } else {
            self.fire_slices(emit);
        }
        self.flush(emit);
    }

    fn fire_slices(&mut self, emit: &mut dyn FnMut(BatchBuf)) {
        let spec = self.plan.spec;
        while let Some(&end) = self.pending_window_ends.first() {
            if end - 1 > self.watermark {
                break;
            }
            self.pending_window_ends.pop_first();
            let window = spec.window_of_end(end);
            self.stats.windows_fired += 1;
            if let Some(slice) = self.slices.get(&end) {
                if slice.len() > self.largest_slice.0 {
                    self.largest_slice = (slice.len(), slice.mean_key_bytes());
                }
            }
            if let WindowSpec::Tumble { .. } = spec {
                if let Some(slice) = self.slices.remove(&end) {
                    for (_, key, accs) in slice.iter() {
                        self.emit_row(key, window, accs, emit);
                    }
                }
                continue;
            }
            let (first, last) = spec.slices_of_window(end);
            let mut merged = KeyedAccs::new(self.plan.aggs.len());
            for (_, slice) in self.slices.range(first..=last) {
                merged.merge_from(slice, &self.plan.aggs);
            }
            for (_, key, accs) in merged.iter() {
                self.emit_row(key, window, accs, emit);
            }
            // Slices whose last window was this one are no longer needed.
            while let Some((&slice_end, _)) = self.slices.first_key_value() {
                if spec.last_window_end(slice_end) > end {
                    break;
                }
                self.slices.pop_first();
            }
        }
    }

    fn fire_sessions(&mut self, emit: &mut dyn FnMut(BatchBuf)) {
        while let Some((end, _)) = self.session_timers.first() {
            if end - 1 > self.watermark {
                break;
            }
            let (end, key) = self.session_timers.pop_first().expect("checked non-empty");
            let Some(sessions) = self.sessions.get_mut(&key) else { continue };
            let Some(i) = sessions.iter().position(|s| s.window.end == end) else { continue };
            let session = sessions.remove(i);
            if sessions.is_empty() {
                self.sessions.remove(&key);
            }
            self.stats.windows_fired += 1;
            self.emit_row(&key, session.window, &session.accs, emit);
        }
    }

    fn emit_row(&mut self, key: &[u8], window: Window, accs: &[Acc], emit: &mut dyn FnMut(BatchBuf)) {
        let n = self.plan.n_keys;
        decode_key_into(key, &self.key_types, &mut self.agg_out);
        self.agg_out.push_int(n, window.start);
        self.agg_out.push_int(n + 1, window.end);
        for (i, (acc, call)) in accs.iter().zip(&self.plan.aggs).enumerate() {
            let d: Datum<'_> = acc.result(call);
            self.agg_out.push_datum(n + 2 + i, &d);
        }
        self.agg_out.end_row();
        if self.agg_out.n_rows() >= EXCHANGE_BATCH_ROWS_MAX {
            self.flush(emit);
        }
    }

    /// Runs HAVING and the SELECT list over the fired rows gathered so far and emits the result.
    fn flush(&mut self, emit: &mut dyn FnMut(BatchBuf)) {
        if self.agg_out.is_empty() {
            return;
        }
        // `agg_out` is flushed at a batch's worth of rows, and the calc emits at most one row per input row.
        let fired = self.agg_out.finish();
        run_calc_columnar(&self.plan.post, &fired.view(), &mut self.out, &mut self.selection);
        let emitted = self.out.n_rows() as u64;
        if emitted > 0 {
            emit(self.out.finish());
        }
        self.stats.rows_emitted += emitted;
    }
}
