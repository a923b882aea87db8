//! The window aggregation operator: keyed, incremental, event time.
//!
//! Tumbling, hopping and cumulating windows keep one accumulator row per (slice, key) and merge a window's
//! slices when it fires; session windows keep a list of open sessions per key and merge them as Flink's
//! merging window assigner does (sessions that overlap or touch become one). A window fires exactly once,
//! when the watermark reaches its max timestamp; its state is dropped once no later window needs it.
//! A record all of whose windows have fired is late: dropped and counted.
//!
//! State for checkpoints: with change tracking on, the operator remembers which (slice, key) rows and which
//! session keys changed and which slices were dropped since the last checkpoint, and writes exactly those
//! (or everything, for a base). Two state tables: [`TABLE_SLICES`] (namespace: the slice's end; value: the
//! key's accumulators) and [`TABLE_SESSIONS`] (a key's open sessions).
//!
//! Invariant: no I/O. Rows in, rows out through a callback; the shard owns batching, delivery and the log.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::accumulator::{decode_accs_from, decode_accs_into, encode_accs, merge_rows, new_row, Acc, AccRow};
use super::calc::run_calc_columnar;
use super::key::{decode_key_into, encode_key, key_hash};
use super::keyed::KeyedAccs;
use super::{Operator, Output, StateEntry, StateWriter};
use crate::constants::{EXCHANGE_BATCH_ROWS_MAX, RESTORE_PREFETCH_AHEAD};
use crate::record::types::{DataType, Datum};
use crate::record::{BatchBuf, BatchBuilder, BatchView, Lineage};
use crate::shard::routing::key_group_of;
use crate::sql::WindowAggPlan;
use crate::state::log::{encode_put, ENTRIES_BATCH_BYTES};
use crate::window::{Window, WindowSpec};

/// State table of slice rows: namespace = the slice's end, key = the group key, value = its accumulators.
pub const TABLE_SLICES: u16 = 0;

/// State table of open sessions: namespace 0, key = the group key, value = its sessions.
pub const TABLE_SESSIONS: u16 = 1;

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
    pub stats: WindowAggStats,
    /// Change tracking for incremental checkpoints (`None`: off).
    changes: Option<Changes>,
    /// After a restore onto a different shard layout: per key group, the watermark its windows had fired up
    /// to, where that is beyond this operator's own watermark. Rows and firings at or below it are skipped.
    floors: Option<Vec<i64>>,
    key_groups: u32,
    /// When on: emitted rows carry the end of their window as lineage (for latency measurement).
    lineage: bool,
}

/// What changed since the last checkpoint, beyond the per-row marks kept in each slice's table.
#[derive(Debug, Default)]
struct Changes {
    /// Slices dropped (all their windows fired).
    dropped: Vec<i64>,
    /// Keys whose sessions changed.
    sessions: HashSet<Key>,
}

impl WindowAggregator {
    /// `key_groups`: the job's key group count (state is grouped by key group in checkpoints).
    pub fn new(plan: &WindowAggPlan, key_groups: u32) -> WindowAggregator {
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
            stats: WindowAggStats::default(),
            changes: None,
            floors: None,
            key_groups,
            lineage: false,
            plan: plan.clone(),
        }
    }

    /// From now on, emitted rows carry the end of their window as lineage (for latency measurement).
    pub fn track_lineage(&mut self) {
        self.lineage = true;
    }

    fn key_group(&self, hash: u64) -> u32 {
        u32::from(key_group_of(hash, self.key_groups).0)
    }

    /// True if rows of `key_group` for a window ending at `end` must be skipped: it fired before a restore.
    fn below_floor(&self, hash: u64, end: i64) -> bool {
        self.floors.as_ref().is_some_and(|f| end - 1 <= f[self.key_group(hash) as usize])
    }

    /// Writes the state that changed since the last snapshot (everything if `full`), grouped by key group,
    /// and forgets the changes.
    fn write_snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        let (slices, sessions_table) = (w.id(TABLE_SLICES), w.id(TABLE_SESSIONS));
        let enc = &mut *w.enc;
        let changes = self.changes.get_or_insert_with(Changes::default);
        if !full {
            for ns in changes.dropped.drain(..) {
                enc.drop_namespace(slices, ns);
            }
        }
        changes.dropped.clear();
        // Slice rows, walked in memory order and encoded into one buffer per key group.
        let mut groups: Vec<(u32, Vec<u8>)> = vec![(0, Vec::new()); self.key_groups as usize];
        for (&ns, slice) in &self.slices {
            for (key, accs) in slice.rows(!full) {
                let kg = key_group_of(key_hash(key), self.key_groups).0 as usize;
                let (count, buf) = &mut groups[kg];
                if !encode_put(buf, ns, key, |b| encode_accs(accs, b)) {
                    // A value too long for one entry (a huge COUNT DISTINCT): the encoder writes it in parts.
                    enc.put(slices, kg as u32, ns, key, |b| encode_accs(accs, b));
                    continue;
                }
                *count += 1;
                if buf.len() >= ENTRIES_BATCH_BYTES {
                    enc.put_encoded(slices, kg as u32, *count, buf);
                    buf.clear();
                    *count = 0;
                }
            }
        }
        for (kg, (count, buf)) in groups.iter().enumerate() {
            if *count > 0 {
                enc.put_encoded(slices, kg as u32, *count, buf);
            }
        }
        let session_keys: Vec<&Key> =
            if full { self.sessions.keys().collect() } else { changes.sessions.iter().collect() };
        let mut session_values = Vec::new();
        for key in session_keys {
            let kg = key_group_of(key_hash(key), self.key_groups).0 as usize;
            session_values.push((kg, key, self.sessions.get(key)));
        }
        session_values.sort_unstable_by_key(|(kg, _, _)| *kg);
        for (kg, key, sessions) in session_values {
            match sessions {
                Some(list) => enc.put(sessions_table, kg as u32, 0, key, |b| encode_sessions(list, b)),
                None => enc.delete(sessions_table, kg as u32, 0, key),
            }
        }
        if let Some(c) = &mut self.changes {
            c.sessions.clear();
        }
        for slice in self.slices.values_mut() {
            slice.clear_changed();
        }
    }

    /// Replays a put (`Some` value) or a delete of one key's sessions (before any row is processed).
    pub fn restore_session(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if let Some(old) = self.sessions.remove(key) {
            for s in &old {
                self.session_timers.remove(&(s.window.end, Key::from(key)));
            }
        }
        if let Some(value) = value {
            let list = decode_sessions(value, &self.plan.aggs)?;
            for s in &list {
                self.session_timers.insert((s.window.end, key.into()));
            }
            self.sessions.insert(key.into(), list);
        }
        Ok(())
    }

    /// Makes room in slice `namespace` for `keys` more keys of `key_bytes` bytes in all, before a restore puts
    /// them there.
    pub fn reserve_slice(&mut self, namespace: i64, keys: usize, key_bytes: usize) {
        self.restored_slice(namespace).reserve(keys, key_bytes);
    }

    /// Prefetches the table slot of a key about to be put into slice `namespace` by [`Self::restore_row`].
    #[inline]
    pub fn prefetch_slot(&mut self, namespace: i64, hash: u64) {
        if let Some(slice) = self.slices.get(&namespace) {
            slice.prefetch(hash);
        }
    }

    /// Replays the put of one key's accumulators into slice `namespace` (before any row is processed); a
    /// later put of a key replaces an earlier one. `accs` is scratch the caller keeps between rows.
    #[inline]
    pub fn restore_row(
        &mut self,
        namespace: i64,
        hash: u64,
        key: &[u8],
        value: &[u8],
        accs: &mut Vec<Acc>,
    ) -> Result<(), String> {
        accs.clear();
        decode_accs_into(value, &self.plan.aggs, accs)?;
        self.restored_slice(namespace).restore(hash, key, accs);
        Ok(())
    }

    /// The slice `namespace`, created empty if a restore has not put anything there yet.
    fn restored_slice(&mut self, namespace: i64) -> &mut KeyedAccs {
        let n_aggs = self.plan.aggs.len();
        let tracking = self.changes.is_some();
        self.slices.entry(namespace).or_insert_with(|| {
            let mut s = KeyedAccs::new(n_aggs);
            if tracking {
                s.track_changes();
            }
            s
        })
    }

    /// Ends a restore: the operator resumes at the watermark its key groups had reached. `floors` holds, per
    /// key group, the watermark of the shard that owned it; `owned` are the key groups this shard owns now.
    pub fn end_restore(&mut self, floors: &[i64], owned: &[u16]) {
        let wm = super::restored_watermark(floors, owned);
        self.watermark = wm;
        if owned.iter().any(|kg| floors.get(*kg as usize).is_some_and(|f| *f > wm)) {
            self.floors = Some(floors.to_vec());
        }
        let spec = self.plan.spec;
        if !spec.is_session() {
            for &slice_end in self.slices.keys() {
                self.pending_window_ends.extend(spec.window_ends(slice_end).filter(|e| e - 1 > wm));
            }
        }
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Adds the rows of a batch of `plan.input` rows.
    pub fn add_rows(&mut self, view: &BatchView<'_>) {
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
            acc.add_row(call, view, row, scratch);
        }
    }

    /// How many input rows row `row` stands for: one, or a partial row's count.
    fn rows_of(&self, view: &BatchView<'_>, row: usize) -> u64 {
        self.plan.rows_col.map_or(1, |c| view.int(c, row) as u64)
    }

    fn add_to_slice(&mut self, ts: i64, view: &BatchView<'_>, row: usize) {
        let spec = self.plan.spec;
        let slice_end = spec.slice_end(ts);
        if spec.last_window_end(slice_end) - 1 <= self.watermark {
            self.stats.late_records += self.rows_of(view, row);
            return;
        }
        let hash = key_hash(&self.key_buf);
        if self.floors.is_some() && self.below_floor(hash, spec.last_window_end(slice_end)) {
            self.stats.late_records += self.rows_of(view, row);
            return;
        }
        let n_aggs = self.plan.aggs.len();
        let tracking = self.changes.is_some();
        let slice = match self.slices.get_mut(&slice_end) {
            Some(s) => s,
            None => {
                let wm = self.watermark;
                self.pending_window_ends.extend(spec.window_ends(slice_end).filter(|e| e - 1 > wm));
                let (n_keys, key_bytes) = self.largest_slice;
                self.slices.entry(slice_end).or_insert_with(|| {
                    let mut s = KeyedAccs::with_capacity(n_aggs, n_keys, key_bytes);
                    if tracking {
                        s.track_changes();
                    }
                    s
                })
            }
        };
        let accs = slice.row_mut(hash, &self.key_buf, &self.plan.aggs);
        Self::update_row(&self.plan, accs, view, row, &mut self.scratch);
    }

    fn add_to_session(&mut self, ts: i64, view: &BatchView<'_>, row: usize) {
        let WindowSpec::Session { gap_ms } = self.plan.spec else { unreachable!("session windows only") };
        let mut window = Window { start: ts, end: ts.saturating_add(gap_ms) };
        if window.max_timestamp() <= self.watermark
            || (self.floors.is_some() && self.below_floor(key_hash(&self.key_buf), window.end))
        {
            self.stats.late_records += 1;
            return;
        }
        if let Some(c) = &mut self.changes {
            if !c.sessions.contains(self.key_buf.as_slice()) {
                c.sessions.insert(self.key_buf.as_slice().into());
            }
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
    /// (after HAVING and the SELECT list) go to `out`.
    fn fire_to(&mut self, watermark: i64, out: &mut Output) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        if self.floors.as_ref().is_some_and(|f| f.iter().all(|f| *f <= watermark)) {
            self.floors = None;
        }
        if self.plan.spec.is_session() {
            self.fire_sessions(out);
        } else {
            self.fire_slices(out);
        }
        self.flush(out);
    }

    fn fire_slices(&mut self, out: &mut Output) {
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
                    for (hash, key, accs) in slice.iter() {
                        if !self.below_floor(hash, end) {
                            self.emit_row(key, window, accs, out);
                        }
                    }
                    if let Some(c) = &mut self.changes {
                        c.dropped.push(end);
                    }
                }
                continue;
            }
            let (first, last) = spec.slices_of_window(end);
            let mut merged = KeyedAccs::new(self.plan.aggs.len());
            for (_, slice) in self.slices.range(first..=last) {
                merged.merge_from(slice, &self.plan.aggs);
            }
            for (hash, key, accs) in merged.iter() {
                if !self.below_floor(hash, end) {
                    self.emit_row(key, window, accs, out);
                }
            }
            // Slices whose last window was this one are no longer needed.
            while let Some((&slice_end, _)) = self.slices.first_key_value() {
                if spec.last_window_end(slice_end) > end {
                    break;
                }
                self.slices.pop_first();
                if let Some(c) = &mut self.changes {
                    c.dropped.push(slice_end);
                }
            }
        }
    }

    fn fire_sessions(&mut self, out: &mut Output) {
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
            if !self.below_floor(key_hash(&key), session.window.end) {
                self.emit_row(&key, session.window, &session.accs, out);
            }
            if let Some(c) = &mut self.changes {
                c.sessions.insert(key);
            }
        }
    }

    fn emit_row(&mut self, key: &[u8], window: Window, accs: &[Acc], out: &mut Output) {
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
            self.flush(out);
        }
    }

    /// Runs HAVING and the SELECT list over the fired rows gathered so far and emits the result.
    fn flush(&mut self, out: &mut Output) {
        if self.agg_out.is_empty() {
            return;
        }
        // `agg_out` is flushed at a batch's worth of rows, and the calc emits at most one row per input row.
        let fired = self.agg_out.finish();
        let view = fired.view();
        let before = out.rows.n_rows();
        run_calc_columnar(&self.plan.post, &view, &mut out.rows, &mut self.selection);
        if self.lineage {
            let end_col = self.plan.n_keys + 1;
            let ends = self.selection.iter().map(|&r| view.int(end_col, r as usize));
            match out.rows.lineage.get_or_insert_with(|| Lineage::WindowEnd(Vec::new())) {
                Lineage::WindowEnd(v) => v.extend(ends),
                Lineage::Due(_) => {}
            }
        }
        self.stats.rows_emitted += (out.rows.n_rows() - before) as u64;
        out.row_done();
    }
}

impl Operator for WindowAggregator {
    fn process(&mut self, _port: usize, input: &BatchBuf, _out: &mut Output) {
        self.add_rows(&input.view());
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut Output) {
        self.fire_to(watermark, out);
    }

    fn end_of_input(&mut self, out: &mut Output) {
        // The final watermark fired every window already; nothing is left but rows of no window.
        self.flush(out);
    }

    fn late_records(&self) -> u64 {
        self.stats.late_records
    }

    fn track_changes(&mut self, _key_groups: u32) {
        self.changes = Some(Changes::default());
        for slice in self.slices.values_mut() {
            slice.track_changes();
        }
    }

    fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        self.write_snapshot(full, w);
    }

    fn restore(&mut self, table: u16, key_group: u32, entries: &[StateEntry<'_>]) -> Result<(), String> {
        match table {
            TABLE_SESSIONS => {
                for e in entries {
                    self.restore_session(e.key, e.value).map_err(|m| format!("key group {key_group}: {m}"))?;
                }
                Ok(())
            }
            TABLE_SLICES => {
                // A slice row is put RESTORE_PREFETCH_AHEAD rows after its table slot was prefetched (a table of
                // a million keys misses the cache on nearly every put).
                let mut accs = Vec::new();
                let hashes: Vec<u64> = entries.iter().map(|e| key_hash(e.key)).collect();
                for (i, e) in entries.iter().enumerate() {
                    if let Some(ahead) = entries.get(i + RESTORE_PREFETCH_AHEAD) {
                        self.prefetch_slot(ahead.namespace, hashes[i + RESTORE_PREFETCH_AHEAD]);
                    }
                    let Some(value) = e.value else {
                        return Err(format!(
                            "a delete of one key of slice {} (slices are only ever dropped whole)",
                            e.namespace
                        ));
                    };
                    self.restore_row(e.namespace, hashes[i], e.key, value, &mut accs)?;
                }
                Ok(())
            }
            other => Err(format!("a window aggregate has no state table {other}")),
        }
    }

    fn reserve(&mut self, table: u16, namespace: i64, keys: usize, key_bytes: usize) {
        if table == TABLE_SLICES {
            self.reserve_slice(namespace, keys, key_bytes);
        }
    }

    fn finish_restore(&mut self, floors: &[i64], owned: &[u16]) {
        self.end_restore(floors, owned);
    }

    fn checkpoint_watermark(&self) -> i64 {
        self.watermark
    }
}

/// A key's open sessions as a log value: count u32, then per session start i64, end i64, accumulators.
fn encode_sessions(list: &[Session], out: &mut Vec<u8>) {
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for s in list {
        out.extend_from_slice(&s.window.start.to_le_bytes());
        out.extend_from_slice(&s.window.end.to_le_bytes());
        encode_accs(&s.accs, out);
    }
}

fn decode_sessions(mut bytes: &[u8], calls: &[crate::sql::AggCall]) -> Result<Vec<Session>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("a session list ends early".into());
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    let n = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().expect("4 bytes"));
    let mut list = Vec::new();
    for _ in 0..n {
        let start = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().expect("8 bytes"));
        let end = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().expect("8 bytes"));
        let (accs, rest) = decode_accs_from(bytes, calls)?;
        bytes = rest;
        list.push(Session { window: Window { start, end }, accs });
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes left over after a session list", bytes.len()));
    }
    Ok(list)
}
