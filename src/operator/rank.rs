//! Ranking: `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)` filtered to the first N rows.
//!
//! - Top-N ([`Ranker`] with [`RankKind::TopN`]): per partition, its rows sorted by the order (ties in arrival
//!   order); a change in the first N is emitted as updates of the ranks that changed: `-U` of the old row and
//!   `+U` of the new one at that rank, `+I` for a rank filled for the first time, `-D` for a rank emptied. Over
//!   an append-only input only the first N rows are kept; over a changelog every row is (a retracted row's
//!   place is refilled from the rows below it).
//! - Deduplication (limit 1 ordered by a time): keep first on processing time emits a key's first row and
//!   drops the rest; keep first on event time waits until the watermark passes the earliest row seen and emits
//!   that one (so the result is append-only even with out-of-order input); keep last emits each newer row as an
//!   update of the previous one.
//! - Window Top-N ([`WindowRanker`]): over rows that carry their window (its end in a column); when a window
//!   fires, its first N per partition are emitted, append-only.
//!
//! Output rows: the input row, then the row number.

use std::cmp::Ordering;

use super::key::{encode_key_cols, key_hash};
use super::row::{cmp_by, encode_row, push_values, read_row, same_row, Reader, Row};
use super::{Operator, Output, StateEntry, StateWriter};
use crate::constants::{PROCESSING_TICK_MS, STATE_TTL_SWEEP_ENTRIES, STATE_TTL_SWEEP_INTERVAL_MS};
use crate::record::types::Value;
use crate::record::{BatchBuf, RowKind};
use crate::sql::ops::{RankKind, RankPlan, RankTime, WindowRankPlan};
use crate::state::backend::{KeyedTable, StateValue, Timers, WindowedTable};
use crate::window::WindowSpec;

/// A partition's state.
#[derive(Debug, Clone)]
pub enum RankState {
    /// Top-N: the rows, in rank order.
    Top(Vec<Row>),
    /// Keep first: the earliest row seen (event time, waiting for the watermark), or none once emitted.
    First { candidate: Option<Row>, emitted: bool },
    /// Keep last: the row emitted last.
    Last(Row),
}

impl StateValue for RankState {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RankState::Top(rows) => {
                out.push(1);
                out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
                for r in rows {
                    encode_row(r, out);
                }
            }
            RankState::First { candidate, emitted } => {
                out.push(2);
                out.push(u8::from(*emitted));
                match candidate {
                    None => out.push(0),
                    Some(r) => {
                        out.push(1);
                        encode_row(r, out);
                    }
                }
            }
            RankState::Last(r) => {
                out.push(3);
                encode_row(r, out);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let state = match r.u8()? {
            1 => {
                let n = r.u32()? as usize;
                let rows = (0..n).map(|_| r.row()).collect::<Result<Vec<_>, _>>()?;
                RankState::Top(rows)
            }
            2 => {
                let emitted = r.u8()? != 0;
                let candidate = if r.u8()? == 1 { Some(r.row()?) } else { None };
                RankState::First { candidate, emitted }
            }
            3 => RankState::Last(r.row()?),
            t => return Err(format!("unknown ranking state {t}")),
        };
        r.done()?;
        Ok(state)
    }
}

const TABLE_PARTITIONS: u16 = 0;
const TABLE_TIMERS: u16 = 1;

pub struct Ranker {
    plan: RankPlan,
    partitions: KeyedTable<RankState>,
    /// Keep first on event time: a partition's candidate is emitted when the watermark passes its time.
    timers: Timers,
    watermark: i64,
    late: u64,
    key_buf: Vec<u8>,
    now_ms: i64,
    next_sweep_ms: i64,
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn time_of(row: &[Value], col: usize) -> i64 {
    match row[col] {
        Value::Int(t) => t,
        _ => i64::MIN,
    }
}

/// Appends `row` with its row number, as `kind`.
fn emit(out: &mut Output, row: &[Value], rank: usize, kind: RowKind) {
    push_values(&mut out.rows, 0, row);
    out.rows.push_int(row.len(), rank as i64);
    out.rows.end_row_as(kind);
    out.row_done();
}

impl Ranker {
    pub fn new(plan: &RankPlan, key_groups: u32) -> Ranker {
        Ranker {
            partitions: KeyedTable::new(TABLE_PARTITIONS, key_groups, plan.ttl_ms),
            timers: Timers::new(TABLE_TIMERS, key_groups),
            watermark: i64::MIN,
            late: 0,
            key_buf: Vec::new(),
            now_ms: wall_ms(),
            next_sweep_ms: 0,
            plan: plan.clone(),
        }
    }

    fn top_insert(&mut self, hash: u64, key: &[u8], row: Row, out: &mut Output) {
        let (limit, order, keep_all) = (self.plan.limit as usize, self.plan.order.clone(), self.plan.retracting);
        let state = self.partitions.get_or_insert_with(hash, key, self.now_ms, || RankState::Top(Vec::new()));
        let RankState::Top(rows) = state else { return };
        // After the rows that sort before it or equal to it (ties keep arrival order).
        let at = rows.partition_point(|r| cmp_by(r, &row, &order) != Ordering::Greater);
        if at >= limit && !keep_all {
            return;
        }
        let old: Vec<Row> = rows.iter().take(limit).skip(at).cloned().collect();
        rows.insert(at, row);
        if !keep_all {
            rows.truncate(limit);
        }
        for (i, new) in rows.iter().enumerate().take(limit).skip(at) {
            match old.get(i - at) {
                Some(o) => {
                    emit(out, o, i + 1, RowKind::UpdateBefore);
                    emit(out, new, i + 1, RowKind::UpdateAfter);
                }
                None => emit(out, new, i + 1, RowKind::Insert),
            }
        }
    }

    fn top_retract(&mut self, hash: u64, key: &[u8], row: &[Value], out: &mut Output) {
        let limit = self.plan.limit as usize;
        let Some(RankState::Top(rows)) = self.partitions.get_mut(hash, key, self.now_ms) else { return };
        let Some(at) = rows.iter().position(|r| same_row(r, row)) else { return };
        let old: Vec<Row> = rows.iter().take(limit).skip(at).cloned().collect();
        rows.remove(at);
        for (i, o) in old.iter().enumerate() {
            let rank = at + i + 1;
            match rows.get(at + i) {
                Some(new) => {
                    emit(out, o, rank, RowKind::UpdateBefore);
                    emit(out, new, rank, RowKind::UpdateAfter);
                }
                None => emit(out, o, rank, RowKind::Delete),
            }
        }
        if rows.is_empty() {
            self.partitions.remove(hash, key);
        }
    }

    fn first(&mut self, hash: u64, key: &[u8], row: Row, time: RankTime, out: &mut Output) {
        let state = self
            .partitions
            .get_or_insert_with(hash, key, self.now_ms, || RankState::First { candidate: None, emitted: false });
        let RankState::First { candidate, emitted } = state else { return };
        if *emitted {
            return;
        }
        match time {
            RankTime::Processing => {
                *emitted = true;
                emit(out, &row, 1, RowKind::Insert);
            }
            RankTime::Event(col) => {
                let t = time_of(&row, col);
                if t <= self.watermark {
                    self.late += 1;
                    if candidate.is_none() {
                        self.partitions.remove(hash, key);
                    }
                    return;
                }
                let replace = candidate.as_ref().is_none_or(|c| t < time_of(c, col));
                if replace {
                    if let Some(old) = candidate.replace(row) {
                        self.timers.delete(time_of(&old, col), key);
                    }
                    self.timers.register(t, key);
                }
            }
        }
    }

    fn last(&mut self, hash: u64, key: &[u8], row: Row, time: RankTime, out: &mut Output) {
        match self.partitions.get_mut(hash, key, self.now_ms) {
            Some(RankState::Last(prev)) => {
                if let RankTime::Event(col) = time {
                    if time_of(&row, col) < time_of(prev, col) {
                        return;
                    }
                }
                let old = std::mem::replace(prev, row.clone());
                emit(out, &old, 1, RowKind::UpdateBefore);
                emit(out, &row, 1, RowKind::UpdateAfter);
            }
            _ => {
                emit(out, &row, 1, RowKind::Insert);
                self.partitions.put(hash, key, self.now_ms, RankState::Last(row));
            }
        }
    }
}

impl Operator for Ranker {
    fn process(&mut self, _port: usize, input: &BatchBuf, out: &mut Output) {
        let view = input.view();
        for r in 0..view.n_rows() {
            encode_key_cols(&view, r, &self.plan.partition, &mut self.key_buf);
            let key = std::mem::take(&mut self.key_buf);
            let hash = key_hash(&key);
            let row = read_row(&view, r);
            let kind = view.kind(r);
            match self.plan.kind.clone() {
                RankKind::TopN if kind.is_accumulate() => self.top_insert(hash, &key, row, out),
                RankKind::TopN => self.top_retract(hash, &key, &row, out),
                // Deduplication takes append-only input (the planner checks).
                RankKind::KeepFirst(t) => self.first(hash, &key, row, t, out),
                RankKind::KeepLast(t) => self.last(hash, &key, row, t, out),
            }
            self.key_buf = key;
        }
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut Output) {
        self.watermark = watermark;
        while let Some((_, key)) = self.timers.pop_due(watermark) {
            let hash = key_hash(&key);
            if let Some(RankState::First { candidate, emitted }) = self.partitions.get_mut(hash, &key, self.now_ms) {
                if let Some(row) = candidate.take() {
                    *emitted = true;
                    emit(out, &row, 1, RowKind::Insert);
                }
            }
        }
    }

    fn late_records(&self) -> u64 {
        self.late
    }

    fn finish_restore(&mut self, floors: &[i64], owned: &[u16]) {
        self.watermark = super::restored_watermark(floors, owned);
    }

    fn on_processing_time(&mut self, now_ms: i64, _out: &mut Output) {
        self.now_ms = now_ms;
        if now_ms >= self.next_sweep_ms {
            let _ = self.partitions.expire(now_ms, STATE_TTL_SWEEP_ENTRIES);
            self.next_sweep_ms = now_ms + STATE_TTL_SWEEP_INTERVAL_MS;
        }
    }

    fn next_processing_time(&self) -> Option<i64> {
        self.plan.ttl_ms.map(|_| self.now_ms + PROCESSING_TICK_MS)
    }

    fn track_changes(&mut self, _key_groups: u32) {
        self.partitions.track_changes();
        self.timers.track_changes();
    }

    fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        self.partitions.snapshot(full, w);
        self.timers.snapshot(full, w);
    }

    fn restore(&mut self, table: u16, key_group: u32, entries: &[StateEntry<'_>]) -> Result<(), String> {
        match table {
            TABLE_PARTITIONS => self.partitions.restore(key_group, entries),
            TABLE_TIMERS => {
                self.timers.restore(entries);
                Ok(())
            }
            t => Err(format!("a ranking has no state table {t}")),
        }
    }

    fn checkpoint_watermark(&self) -> i64 {
        self.watermark
    }
}

/// A window's rows of one partition, in rank order (at most N).
#[derive(Debug, Clone)]
pub struct WindowTop(Vec<Row>);

impl StateValue for WindowTop {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for r in &self.0 {
            encode_row(r, out);
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let n = r.u32()? as usize;
        let rows = (0..n).map(|_| r.row()).collect::<Result<Vec<_>, _>>()?;
        r.done()?;
        Ok(WindowTop(rows))
    }
}

pub struct WindowRanker {
    plan: WindowRankPlan,
    windows: WindowedTable<WindowTop>,
    watermark: i64,
    late: u64,
    key_buf: Vec<u8>,
}

impl WindowRanker {
    pub fn new(plan: &WindowRankPlan, key_groups: u32) -> WindowRanker {
        WindowRanker {
            windows: WindowedTable::new(0, key_groups),
            watermark: i64::MIN,
            late: 0,
            key_buf: Vec::new(),
            plan: plan.clone(),
        }
    }
}

/// The ends of the windows of `spec` that contain `ts`.
pub fn window_ends(spec: &WindowSpec, ts: i64) -> impl Iterator<Item = i64> {
    spec.window_ends(spec.slice_end(ts))
}

impl Operator for WindowRanker {
    fn process(&mut self, _port: usize, input: &BatchBuf, _out: &mut Output) {
        let view = input.view();
        let limit = self.plan.limit as usize;
        for r in 0..view.n_rows() {
            // The row's window: its end, in the row.
            if view.is_null(self.plan.end_col, r) {
                self.late += 1;
                continue;
            }
            let end = view.int(self.plan.end_col, r);
            if end - 1 <= self.watermark {
                self.late += 1;
                continue;
            }
            encode_key_cols(&view, r, &self.plan.partition, &mut self.key_buf);
            let row = read_row(&view, r);
            let top = self.windows.get_or_insert_with(end, &self.key_buf, || WindowTop(Vec::new()));
            let at = top.0.partition_point(|x| cmp_by(x, &row, &self.plan.order) != Ordering::Greater);
            if at < limit {
                top.0.insert(at, row);
                top.0.truncate(limit);
            }
        }
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut Output) {
        self.watermark = watermark;
        while let Some(end) = self.windows.first_end().filter(|e| e - 1 <= watermark) {
            for (_, top) in self.windows.take_window(end) {
                for (i, row) in top.0.iter().enumerate() {
                    emit(out, row, i + 1, RowKind::Insert);
                }
            }
        }
    }

    fn late_records(&self) -> u64 {
        self.late
    }

    fn track_changes(&mut self, _key_groups: u32) {
        self.windows.track_changes();
    }

    fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        self.windows.snapshot(full, w);
    }

    fn restore(&mut self, table: u16, _key_group: u32, entries: &[StateEntry<'_>]) -> Result<(), String> {
        match table {
            0 => self.windows.restore_with(entries, WindowTop::decode),
            t => Err(format!("a window ranking has no state table {t}")),
        }
    }

    fn finish_restore(&mut self, floors: &[i64], owned: &[u16]) {
        // Windows fire from the least watermark any of this shard's key groups had reached; a window already
        // fired on another layout (above its key group's floor) is not in the state any more.
        self.watermark = super::restored_watermark(floors, owned);
    }

    fn checkpoint_watermark(&self) -> i64 {
        self.watermark
    }
}
