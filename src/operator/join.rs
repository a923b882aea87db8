//! Joins. Both inputs arrive hashed by their equality keys, so rows that can match meet on one shard; a key
//! with a NULL never matches (SQL), though an outer join still emits its row.
//!
//! - [`RegularJoin`]: every row of each side is kept (per key, with its multiplicity and, for outer joins,
//!   how many rows of the other side it matches) until a retraction takes it away or the state TTL expires it.
//!   A row arriving is matched against the other side's rows (and the residual condition): `+I` per match for
//!   an accumulation, `-D` for a retraction. An outer side's row without matches is emitted with NULLs
//!   (`+I`), and retracted (`-D`) when its first match arrives (and re-emitted when its last one goes).
//! - [`IntervalJoin`]: append-only inputs with event time; a row is kept until the watermark passes the last
//!   time a row of the other side could match it (`left.time - right.time` within `[lower, upper]`), then
//!   dropped (an outer side's row never matched is emitted with NULLs then). Append-only output; the output
//!   watermark is held back by the bounds so no joined row is late downstream.
//! - [`WindowJoin`]: both inputs carry their windows (of one window table function, the window's end in a
//!   column); rows of a window are kept until it fires, then joined per key and dropped. Append-only output.

use super::key::{encode_key_cols, key_hash};
use super::row::{encode_row, push_nulls, push_values, read_row, same_row, Reader, Row};
use super::{Operator, Output, StateEntry, StateWriter};
use crate::constants::{PROCESSING_TICK_MS, STATE_TTL_SWEEP_ENTRIES, STATE_TTL_SWEEP_INTERVAL_MS};
use crate::record::types::{Datum, Value};
use crate::record::{BatchBuf, BatchView, RowKind};
use crate::sql::expr::Joined;
use crate::sql::ops::{IntervalJoinPlan, JoinPlan, JoinSides, WindowJoinPlan};
use crate::state::backend::{KeyedTable, StateValue, Timers, WindowedTable};

const LEFT: usize = 0;
const RIGHT: usize = 1;

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The key of row `r` of a side's batch, or `None` if a key column is NULL (it matches nothing).
fn join_key(view: &BatchView<'_>, r: usize, cols: &[usize], buf: &mut Vec<u8>) -> bool {
    if cols.iter().any(|c| view.is_null(*c, r)) {
        return false;
    }
    encode_key_cols(view, r, cols, buf);
    true
}

/// The residual condition of a join over a candidate pair.
fn passes(sides: &JoinSides, left: &[Value], right: &[Value]) -> bool {
    sides.residual.as_ref().is_none_or(|e| e.eval_row(Joined { left, right }) == Datum::Bool(true))
}

/// Appends a joined row: `left` (or NULLs), then `right` (or NULLs).
fn emit(out: &mut Output, sides: &JoinSides, left: Option<&[Value]>, right: Option<&[Value]>, kind: RowKind) {
    let lw = sides.left.len();
    match left {
        Some(l) => push_values(&mut out.rows, 0, l),
        None => push_nulls(&mut out.rows, 0, lw),
    }
    match right {
        Some(r) => push_values(&mut out.rows, lw, r),
        None => push_nulls(&mut out.rows, lw, sides.right.len()),
    }
    out.rows.end_row_as(kind);
    out.row_done();
}

/// The rows of one key on one side of a regular join: each distinct row with its multiplicity and the
/// number of rows of the other side it matches.
#[derive(Debug, Clone, Default)]
pub struct SideRows(Vec<(Row, u32, u32)>);

impl StateValue for SideRows {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (row, count, matches) in &self.0 {
            encode_row(row, out);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&matches.to_le_bytes());
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let n = r.u32()? as usize;
        let mut rows = Vec::with_capacity(n.min(bytes.len()));
        for _ in 0..n {
            rows.push((r.row()?, r.u32()?, r.u32()?));
        }
        r.done()?;
        Ok(SideRows(rows))
    }
}

pub struct RegularJoin {
    plan: JoinPlan,
    sides: [KeyedTable<SideRows>; 2],
    key_buf: Vec<u8>,
    now_ms: i64,
    next_sweep_ms: i64,
}

impl RegularJoin {
    pub fn new(plan: &JoinPlan, key_groups: u32) -> RegularJoin {
        RegularJoin {
            sides: [
                KeyedTable::new(LEFT as u16, key_groups, plan.ttl_ms),
                KeyedTable::new(RIGHT as u16, key_groups, plan.ttl_ms),
            ],
            key_buf: Vec::new(),
            now_ms: wall_ms(),
            next_sweep_ms: 0,
            plan: plan.clone(),
        }
    }

    fn outer(&self, side: usize) -> bool {
        if side == LEFT {
            self.plan.sides.kind.keeps_left()
        } else {
            self.plan.sides.kind.keeps_right()
        }
    }

    /// One row of `side` arrived: matched against the other side, then kept (or taken back).
    fn row(&mut self, side: usize, row: Row, keyed: bool, kind: RowKind, out: &mut Output) {
        let other = 1 - side;
        let (this_outer, other_outer) = (self.outer(side), self.outer(other));
        let accumulate = kind.is_accumulate();
        let hash = key_hash(&self.key_buf);
        let key = std::mem::take(&mut self.key_buf);
        let sides = &self.plan.sides;
        let mut matched = 0u32;
        if keyed {
            if let Some(rows) = self.sides[other].get_mut(hash, &key, self.now_ms) {
                for (orow, ocount, omatches) in rows.0.iter_mut() {
                    let theirs: &[Value] = orow;
                    let (l, r): (&[Value], &[Value]) = if side == LEFT { (&row, theirs) } else { (theirs, &row) };
                    if !passes(sides, l, r) {
                        continue;
                    }
                    matched += 1;
                    // The other side's row as emitted alone (NULLs for this side), for an outer join.
                    let padded = |out: &mut Output, kind| {
                        if side == LEFT {
                            emit(out, sides, None, Some(theirs), kind)
                        } else {
                            emit(out, sides, Some(theirs), None, kind)
                        }
                    };
                    for _ in 0..*ocount {
                        if accumulate {
                            if other_outer && *omatches == 0 {
                                padded(out, RowKind::Delete);
                            }
                            emit(out, sides, Some(l), Some(r), RowKind::Insert);
                        } else {
                            emit(out, sides, Some(l), Some(r), RowKind::Delete);
                            if other_outer && *omatches == 1 {
                                padded(out, RowKind::Insert);
                            }
                        }
                    }
                    if accumulate {
                        *omatches += 1;
                    } else {
                        *omatches = omatches.saturating_sub(1);
                    }
                }
            }
        }
        if this_outer && matched == 0 {
            let kind = if accumulate { RowKind::Insert } else { RowKind::Delete };
            if side == LEFT {
                emit(out, sides, Some(&row), None, kind);
            } else {
                emit(out, sides, None, Some(&row), kind);
            }
        }
        // Keep (or take back) the row; a row with a NULL key is kept too, for the outer join's sake. An
        // append-only side is never asked to take a row back, so equal rows are kept apart rather than
        // searched for (a hot key's arrivals stay O(1)).
        let retracting = if side == LEFT { self.plan.left_retracting } else { self.plan.right_retracting };
        let mine = &mut self.sides[side];
        if accumulate {
            let rows = mine.get_or_insert_with(hash, &key, self.now_ms, SideRows::default);
            let equal = if retracting { rows.0.iter_mut().find(|(r, _, _)| same_row(r, &row)) } else { None };
            match equal {
                Some((_, count, _)) => *count += 1,
                None => rows.0.push((row, 1, matched)),
            }
        } else if let Some(rows) = mine.get_mut(hash, &key, self.now_ms) {
            if let Some(at) = rows.0.iter().position(|(r, _, _)| same_row(r, &row)) {
                rows.0[at].1 -= 1;
                if rows.0[at].1 == 0 {
                    rows.0.remove(at);
                }
                if rows.0.is_empty() {
                    mine.remove(hash, &key);
                }
            }
        }
        self.key_buf = key;
    }
}

impl Operator for RegularJoin {
    fn process(&mut self, port: usize, input: &BatchBuf, out: &mut Output) {
        let view = input.view();
        let keys = if port == LEFT { self.plan.sides.left_keys.clone() } else { self.plan.sides.right_keys.clone() };
        for r in 0..view.n_rows() {
            let keyed = join_key(&view, r, &keys, &mut self.key_buf);
            if !keyed {
                self.key_buf.clear();
                self.key_buf.push(0xFF);
            }
            self.row(port, read_row(&view, r), keyed, view.kind(r), out);
        }
    }

    fn on_processing_time(&mut self, now_ms: i64, _out: &mut Output) {
        self.now_ms = now_ms;
        if now_ms >= self.next_sweep_ms {
            for s in &mut self.sides {
                let _ = s.expire(now_ms, STATE_TTL_SWEEP_ENTRIES);
            }
            self.next_sweep_ms = now_ms + STATE_TTL_SWEEP_INTERVAL_MS;
        }
    }

    fn next_processing_time(&self) -> Option<i64> {
        self.plan.ttl_ms.map(|_| self.now_ms + PROCESSING_TICK_MS)
    }

    fn track_changes(&mut self, _key_groups: u32) {
        for s in &mut self.sides {
            s.track_changes();
        }
    }

    fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        for s in &mut self.sides {
            s.snapshot(full, w);
        }
    }

    fn restore(&mut self, table: u16, key_group: u32, entries: &[StateEntry<'_>]) -> Result<(), String> {
        match self.sides.get_mut(table as usize) {
            Some(s) => s.restore(key_group, entries),
            None => Err(format!("a join has no state table {table}")),
        }
    }
}

/// Rows of one key on one side of an interval join: each with whether it matched yet.
#[derive(Debug, Clone, Default)]
pub struct TimedRows(Vec<(Row, bool)>);

impl StateValue for TimedRows {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (row, matched) in &self.0 {
            encode_row(row, out);
            out.push(u8::from(*matched));
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let n = r.u32()? as usize;
        let mut rows = Vec::with_capacity(n.min(bytes.len()));
        for _ in 0..n {
            rows.push((r.row()?, r.u8()? != 0));
        }
        r.done()?;
        Ok(TimedRows(rows))
    }
}

pub struct IntervalJoin {
    plan: IntervalJoinPlan,
    sides: [KeyedTable<TimedRows>; 2],
    /// Per side: when a key's rows may have expired (the time a row stops being able to match).
    timers: [Timers; 2],
    watermark: i64,
    late: u64,
    key_buf: Vec<u8>,
}

impl IntervalJoin {
    pub fn new(plan: &IntervalJoinPlan, key_groups: u32) -> IntervalJoin {
        IntervalJoin {
            sides: [KeyedTable::new(0, key_groups, None), KeyedTable::new(1, key_groups, None)],
            timers: [Timers::new(2, key_groups), Timers::new(3, key_groups)],
            watermark: i64::MIN,
            late: 0,
            key_buf: Vec::new(),
            plan: plan.clone(),
        }
    }

    fn time(&self, side: usize, row: &[Value]) -> Option<i64> {
        let col = if side == LEFT { self.plan.left_time } else { self.plan.right_time };
        match row[col] {
            Value::Int(t) => Some(t),
            _ => None,
        }
    }

    /// The last watermark at which a row of `side` at `t` can still be matched.
    fn expiry(&self, side: usize, t: i64) -> i64 {
        if side == LEFT {
            t.saturating_sub(self.plan.lower_ms)
        } else {
            t.saturating_add(self.plan.upper_ms)
        }
    }

    fn outer(&self, side: usize) -> bool {
        if side == LEFT {
            self.plan.sides.kind.keeps_left()
        } else {
            self.plan.sides.kind.keeps_right()
        }
    }
}

impl Operator for IntervalJoin {
    fn process(&mut self, port: usize, input: &BatchBuf, out: &mut Output) {
        let view = input.view();
        let side = port;
        let other = 1 - side;
        let keys = if side == LEFT { self.plan.sides.left_keys.clone() } else { self.plan.sides.right_keys.clone() };
        for r in 0..view.n_rows() {
            let row = read_row(&view, r);
            let Some(t) = self.time(side, &row) else {
                self.late += 1;
                continue;
            };
            let expiry = self.expiry(side, t);
            if expiry <= self.watermark {
                self.late += 1;
                continue;
            }
            let keyed = join_key(&view, r, &keys, &mut self.key_buf);
            let mut matched = false;
            if keyed {
                let hash = key_hash(&self.key_buf);
                let (lower, upper) = (self.plan.lower_ms, self.plan.upper_ms);
                let other_time = if other == LEFT { self.plan.left_time } else { self.plan.right_time };
                let sides = &self.plan.sides;
                if let Some(rows) = self.sides[other].get_mut(hash, &self.key_buf, 0) {
                    for (orow, omatched) in rows.0.iter_mut() {
                        let Value::Int(ot) = orow[other_time] else { continue };
                        let diff = if side == LEFT { t - ot } else { ot - t };
                        if diff < lower || diff > upper {
                            continue;
                        }
                        let (l, rr) = if side == LEFT { (&row[..], &orow[..]) } else { (&orow[..], &row[..]) };
                        if !passes(sides, l, rr) {
                            continue;
                        }
                        matched = true;
                        *omatched = true;
                        emit(out, sides, Some(l), Some(rr), RowKind::Insert);
                    }
                }
                self.sides[side].get_or_insert_with(hash, &self.key_buf, 0, TimedRows::default).0.push((row, matched));
                self.timers[side].register(expiry, &self.key_buf);
            } else if self.outer(side) {
                // A NULL key matches nothing: an outer row is emitted at once.
                if side == LEFT {
                    emit(out, &self.plan.sides, Some(&row), None, RowKind::Insert);
                } else {
                    emit(out, &self.plan.sides, None, Some(&row), RowKind::Insert);
                }
            }
        }
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut Output) {
        self.watermark = watermark;
        for side in [LEFT, RIGHT] {
            while let Some((_, key)) = self.timers[side].pop_due(watermark) {
                let hash = key_hash(&key);
                let outer = self.outer(side);
                let mut expired = Vec::new();
                let mut empty = false;
                if let Some(rows) = self.sides[side].get_mut(hash, &key, 0) {
                    let mut keep = Vec::new();
                    for (row, matched) in std::mem::take(&mut rows.0) {
                        let t = match self.time(side, &row) {
                            Some(t) => t,
                            None => continue,
                        };
                        if self.expiry(side, t) <= watermark {
                            if outer && !matched {
                                expired.push(row);
                            }
                        } else {
                            keep.push((row, matched));
                        }
                    }
                    empty = keep.is_empty();
                    if let Some(rows) = self.sides[side].get_mut(hash, &key, 0) {
                        rows.0 = keep;
                    }
                }
                if empty {
                    self.sides[side].remove(hash, &key);
                }
                for row in expired {
                    if side == LEFT {
                        emit(out, &self.plan.sides, Some(&row), None, RowKind::Insert);
                    } else {
                        emit(out, &self.plan.sides, None, Some(&row), RowKind::Insert);
                    }
                }
            }
        }
    }

    fn output_watermark(&self, input: i64) -> i64 {
        if input == i64::MAX {
            return input;
        }
        // No row emitted from now on is older than this (see the module doc).
        input.saturating_add(self.plan.lower_ms).saturating_sub(self.plan.upper_ms.max(0)).min(input)
    }

    fn late_records(&self) -> u64 {
        self.late
    }

    fn track_changes(&mut self, _key_groups: u32) {
        for s in &mut self.sides {
            s.track_changes();
        }
        for t in &mut self.timers {
            t.track_changes();
        }
    }

    fn snapshot(&mut self, full: bool, w: &mut StateWriter<'_>) {
        for s in &mut self.sides {
            s.snapshot(full, w);
        }
        for t in &mut self.timers {
            t.snapshot(full, w);
        }
    }

    fn restore(&mut self, table: u16, key_group: u32, entries: &[StateEntry<'_>]) -> Result<(), String> {
        match table {
            0 | 1 => self.sides[table as usize].restore(key_group, entries),
            2 | 3 => {
                self.timers[table as usize - 2].restore(entries);
                Ok(())
            }
            t => Err(format!("an interval join has no state table {t}")),
        }
    }

    fn finish_restore(&mut self, floors: &[i64], owned: &[u16]) {
        self.watermark = super::restored_watermark(floors, owned);
    }

    fn checkpoint_watermark(&self) -> i64 {
        self.watermark
    }
}

/// A window's rows of one key: the left side's and the right side's.
#[derive(Debug, Clone, Default)]
pub struct WindowRows([Vec<Row>; 2]);

impl StateValue for WindowRows {
    fn encode(&self, out: &mut Vec<u8>) {
        for side in &self.0 {
            out.extend_from_slice(&(side.len() as u32).to_le_bytes());
            for row in side {
                encode_row(row, out);
            }
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let mut sides: [Vec<Row>; 2] = Default::default();
        for side in &mut sides {
            let n = r.u32()? as usize;
            for _ in 0..n {
                side.push(r.row()?);
            }
        }
        r.done()?;
        Ok(WindowRows(sides))
    }
}

pub struct WindowJoin {
    plan: WindowJoinPlan,
    windows: WindowedTable<WindowRows>,
    watermark: i64,
    late: u64,
    key_buf: Vec<u8>,
    /// Numbers rows with a NULL key, each kept under a key of its own.
    null_keys: u64,
}

impl WindowJoin {
    pub fn new(plan: &WindowJoinPlan, key_groups: u32) -> WindowJoin {
        WindowJoin {
            windows: WindowedTable::new(0, key_groups),
            watermark: i64::MIN,
            late: 0,
            key_buf: Vec::new(),
            null_keys: 0,
            plan: plan.clone(),
        }
    }
}

impl Operator for WindowJoin {
    fn process(&mut self, port: usize, input: &BatchBuf, _out: &mut Output) {
        let view = input.view();
        let side = port;
        let (keys, end_col) = if side == LEFT {
            (self.plan.sides.left_keys.clone(), self.plan.left_end)
        } else {
            (self.plan.sides.right_keys.clone(), self.plan.right_end)
        };
        for r in 0..view.n_rows() {
            if view.is_null(end_col, r) {
                self.late += 1;
                continue;
            }
            let end = view.int(end_col, r);
            if end - 1 <= self.watermark {
                self.late += 1;
                continue;
            }
            if !join_key(&view, r, &keys, &mut self.key_buf) {
                // A NULL key: in no pair; kept under a key of its own (of its side only, so it never meets a row
                // of the other side) for an outer join's NULL-padded row.
                self.null_keys += 1;
                self.key_buf.clear();
                self.key_buf.extend_from_slice(&[0xFF, side as u8]);
                self.key_buf.extend_from_slice(&self.null_keys.to_le_bytes());
            }
            let row = read_row(&view, r);
            self.windows.get_or_insert_with(end, &self.key_buf, WindowRows::default).0[side].push(row);
        }
    }

    fn advance_watermark(&mut self, watermark: i64, out: &mut Output) {
        self.watermark = watermark;
        let sides = self.plan.sides.clone();
        while let Some(end) = self.windows.first_end().filter(|e| e - 1 <= watermark) {
            for (_, WindowRows([lefts, rights])) in self.windows.take_window(end) {
                let mut right_matched = vec![false; rights.len()];
                for l in &lefts {
                    let mut matched = false;
                    for (ri, r) in rights.iter().enumerate() {
                        if passes(&sides, l, r) {
                            matched = true;
                            right_matched[ri] = true;
                            emit(out, &sides, Some(l), Some(r), RowKind::Insert);
                        }
                    }
                    if !matched && sides.kind.keeps_left() {
                        emit(out, &sides, Some(l), None, RowKind::Insert);
                    }
                }
                if sides.kind.keeps_right() {
                    for (r, m) in rights.iter().zip(right_matched) {
                        if !m {
                            emit(out, &sides, None, Some(r), RowKind::Insert);
                        }
                    }
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
            0 => self.windows.restore_with(entries, WindowRows::decode),
            t => Err(format!("a window join has no state table {t}")),
        }
    }

    fn finish_restore(&mut self, floors: &[i64], owned: &[u16]) {
        self.watermark = super::restored_watermark(floors, owned);
    }

    fn checkpoint_watermark(&self) -> i64 {
        self.watermark
    }
}
