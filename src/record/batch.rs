//! Record batches: rows of a typed schema laid out column by column, serialized with rkyv into one aligned
//! buffer and read in place.
//!
//! A [`BatchBuilder`] appends rows into growable columns (no allocation per row once warm); [`BatchBuilder::finish`]
//! serializes them with rkyv into a [`BatchBuf`], the unit that moves between shards. Operators read a
//! [`BatchView`] over the archived bytes: no deserialization, no per-row allocation.
//!
//! Every row has a [`RowKind`] (Flink's RowKind: insert, update-before, update-after, delete), so updating
//! results travel as changelogs. A batch of inserts only (the common, append-only case) stores no kinds.
//!
//! Under `shardflow bench`, a batch may carry its rows' [`Lineage`] beside the archive (not serialized: it
//! never leaves the process): when each input row was due, or which window each result row closes.
//!
//! Invariant: strings in a batch are valid UTF-8 (checked once, at ingress). Columns are stored as bytes and
//! compared bytewise, which for UTF-8 is code-point order.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Serialize};

use super::types::{DataType, Datum, Storage};
use crate::constants::{BATCH_BUFFERS_POOLED_MAX, BATCH_BYTES_MAX};

/// One column's values. Null rows hold a default value in `data` and a set bit in `nulls`.
#[derive(Archive, Serialize, Debug, Default)]
pub struct Column {
    /// A bitmap, bit `row % 64` of word `row / 64`; empty when no row of the column is null.
    pub nulls: Vec<u64>,
    pub data: ColumnData,
}

#[derive(Archive, Serialize, Debug)]
pub enum ColumnData {
    Int(Vec<i64>),
    Double(Vec<f64>),
    Bool(Vec<bool>),
    /// Row `i` is `bytes[ends[i-1]..ends[i]]` (with `ends[-1]` = 0).
    Str {
        ends: Vec<u32>,
        bytes: Vec<u8>,
    },
}

impl Default for ColumnData {
    fn default() -> Self {
        ColumnData::Int(Vec::new())
    }
}

/// What a row means to a changelog's reader (Flink's RowKind): a new row, the old value of an updated row,
/// its new value, or a deleted row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RowKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl RowKind {
    fn from_u8(v: u8) -> RowKind {
        match v {
            1 => RowKind::UpdateBefore,
            2 => RowKind::UpdateAfter,
            3 => RowKind::Delete,
            _ => RowKind::Insert,
        }
    }

    /// Adds the row to a result (insert, update-after) rather than taking it away (update-before, delete).
    pub fn is_accumulate(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }

    /// Flink's short form: +I, -U, +U, -D.
    pub fn short(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }
}

/// The serialized form: what [`BatchBuf`] holds, archived.
#[derive(Archive, Serialize, Debug, Default)]
pub struct Batch {
    pub n_rows: u32,
    pub columns: Vec<Column>,
    /// Each row's [`RowKind`] as a byte; empty when every row is an insert.
    pub kinds: Vec<u8>,
}

/// Where a batch's rows came from, for latency measurement (`metrics::latency`): one entry per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lineage {
    /// When each row's input was due (nanoseconds into the source's schedule).
    Due(Vec<u64>),
    /// The end of the window each result row closes.
    WindowEnd(Vec<i64>),
}

impl Lineage {
    pub fn len(&self) -> usize {
        match self {
            Lineage::Due(v) => v.len(),
            Lineage::WindowEnd(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the entries of rows `sel` of `from` (of the same variant) to `self`.
    pub fn gather(&mut self, from: &Lineage, sel: &[u32]) {
        match (self, from) {
            (Lineage::Due(to), Lineage::Due(f)) => to.extend(sel.iter().map(|&r| f[r as usize])),
            (Lineage::WindowEnd(to), Lineage::WindowEnd(f)) => to.extend(sel.iter().map(|&r| f[r as usize])),
            _ => {}
        }
    }

    /// An empty lineage of the same variant.
    pub fn empty_like(&self) -> Lineage {
        match self {
            Lineage::Due(_) => Lineage::Due(Vec::new()),
            Lineage::WindowEnd(_) => Lineage::WindowEnd(Vec::new()),
        }
    }
}

/// A serialized batch: an rkyv archive of [`Batch`] in an aligned buffer. Moving it moves a pointer.
/// Dropping it gives the buffer to the dropping thread's pool for the next batch built there.
#[derive(Debug)]
pub struct BatchBuf {
    bytes: AlignedVec,
    n_rows: u32,
    /// Under a latency probe: where the rows came from.
    pub lineage: Option<Box<Lineage>>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Vec<AlignedVec>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn pooled_buffer() -> AlignedVec {
    BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default()
}

impl Drop for BatchBuf {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        if bytes.capacity() == 0 || bytes.capacity() > 2 * BATCH_BYTES_MAX {
            return;
        }
        bytes.clear();
        BUFFERS.with(|b| {
            let mut pool = b.borrow_mut();
            if pool.len() < BATCH_BUFFERS_POOLED_MAX {
                pool.push(bytes);
            }
        });
    }
}

impl BatchBuf {
    pub fn n_rows(&self) -> usize {
        self.n_rows as usize
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// A copy (for a node whose rows go to more than one consumer).
    pub fn clone_batch(&self) -> BatchBuf {
        let mut bytes = pooled_buffer();
        bytes.extend_from_slice(&self.bytes);
        BatchBuf { bytes, n_rows: self.n_rows, lineage: self.lineage.clone() }
    }

    /// Reads the batch in place. The archive is checked (a cost per column, not per row: the columns hold
    /// plain integers and bytes); a failure would be a bug in this process, so it panics.
    pub fn view(&self) -> BatchView<'_> {
        let batch = rkyv::access::<ArchivedBatch, rancor::Error>(&self.bytes)
            .expect("a batch built by BatchBuilder is a valid archive");
        BatchView { batch }
    }
}

/// Builds batches row by row. Columns keep their capacity across batches.
#[derive(Debug)]
pub struct BatchBuilder {
    types: Vec<DataType>,
    batch: Batch,
    /// Under a latency probe: the lineage of the rows built so far (kept in step with the rows by the caller).
    pub lineage: Option<Lineage>,
}

impl BatchBuilder {
    pub fn new(types: &[DataType]) -> BatchBuilder {
        let columns = types
            .iter()
            .map(|ty| Column {
                nulls: Vec::new(),
                data: match ty.storage() {
                    Storage::Int => ColumnData::Int(Vec::new()),
                    Storage::Double => ColumnData::Double(Vec::new()),
                    Storage::Bool => ColumnData::Bool(Vec::new()),
                    Storage::Str => ColumnData::Str { ends: Vec::new(), bytes: Vec::new() },
                },
            })
            .collect();
        BatchBuilder { types: types.to_vec(), batch: Batch { n_rows: 0, columns, kinds: Vec::new() }, lineage: None }
    }

    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    pub fn n_rows(&self) -> usize {
        self.batch.n_rows as usize
    }

    pub fn is_empty(&self) -> bool {
        self.batch.n_rows == 0
    }

    /// Bytes of row data held, approximately (strings plus 8 per fixed-width value).
    pub fn size_bytes(&self) -> usize {
        self.batch
            .columns
            .iter()
            .map(|c| match &c.data {
                ColumnData::Int(v) => v.len() * 8,
                ColumnData::Double(v) => v.len() * 8,
                ColumnData::Bool(v) => v.len(),
                ColumnData::Str { ends, bytes } => ends.len() * 4 + bytes.len(),
            })
            .sum()
    }

    /// Appends an integer (INT, BIGINT, TIMESTAMP) to column `col` of the row being built.
    #[inline]
    pub fn push_int(&mut self, col: usize, v: i64) {
        match &mut self.batch.columns[col].data {
            ColumnData::Int(vals) => vals.push(v),
            other => panic!("column {col} holds {other:?}, not integers"),
        }
    }

    #[inline]
    pub fn push_double(&mut self, col: usize, v: f64) {
        match &mut self.batch.columns[col].data {
            ColumnData::Double(vals) => vals.push(v),
            other => panic!("column {col} holds {other:?}, not doubles"),
        }
    }

    #[inline]
    pub fn push_bool(&mut self, col: usize, v: bool) {
        match &mut self.batch.columns[col].data {
            ColumnData::Bool(vals) => vals.push(v),
            other => panic!("column {col} holds {other:?}, not booleans"),
        }
    }

    /// Appends UTF-8 bytes. The caller guarantees they are valid UTF-8 (they come from a `&str`, or from
    /// another batch).
    #[inline]
    pub fn push_str(&mut self, col: usize, v: &[u8]) {
        match &mut self.batch.columns[col].data {
            ColumnData::Str { ends, bytes } => {
                bytes.extend_from_slice(v);
                ends.push(bytes.len() as u32);
            }
            other => panic!("column {col} holds {other:?}, not strings"),
        }
    }

    /// Appends NULL to column `col`.
    pub fn push_null(&mut self, col: usize) {
        let row = match &self.batch.columns[col].data {
            ColumnData::Int(v) => v.len(),
            ColumnData::Double(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
            ColumnData::Str { ends, .. } => ends.len(),
        };
        self.set_null_bit(col, row);
        match &mut self.batch.columns[col].data {
            ColumnData::Int(vals) => vals.push(0),
            ColumnData::Double(vals) => vals.push(0.0),
            ColumnData::Bool(vals) => vals.push(false),
            ColumnData::Str { ends, bytes } => ends.push(bytes.len() as u32),
        }
    }

    /// Appends a datum of the column's type (or NULL).
    pub fn push_datum(&mut self, col: usize, d: &Datum<'_>) {
        match d {
            Datum::Null => self.push_null(col),
            Datum::Int(v) => self.push_int(col, *v),
            Datum::Double(v) => self.push_double(col, *v),
            Datum::Bool(v) => self.push_bool(col, *v),
            Datum::Str(s) => self.push_str(col, s),
            Datum::OwnedStr(s) => self.push_str(col, s),
        }
    }

    /// Appends rows `sel` of column `col` of `view` to column `out_col` (same storage), column at a time.
    /// The rows are ended later, together, by [`BatchBuilder::end_rows`].
    pub fn gather(&mut self, out_col: usize, view: &BatchView<'_>, col: usize, sel: &[u32]) {
        let base = self.batch.n_rows as usize;
        let src = &view.batch.columns[col];
        match (&mut self.batch.columns[out_col].data, &src.data) {
            (ColumnData::Int(dst), ArchivedColumnData::Int(v)) => {
                dst.extend(sel.iter().map(|&r| v[r as usize].to_native()))
            }
            (ColumnData::Double(dst), ArchivedColumnData::Double(v)) => {
                dst.extend(sel.iter().map(|&r| v[r as usize].to_native()))
            }
            (ColumnData::Bool(dst), ArchivedColumnData::Bool(v)) => dst.extend(sel.iter().map(|&r| v[r as usize])),
            (ColumnData::Str { ends, bytes }, ArchivedColumnData::Str { .. }) => {
                for &r in sel {
                    bytes.extend_from_slice(view.str(col, r as usize));
                    ends.push(bytes.len() as u32);
                }
            }
            (dst, _) => panic!("column {out_col} holds {dst:?}, not the storage of input column {col}"),
        }
        if !src.nulls.is_empty() {
            for (i, &r) in sel.iter().enumerate() {
                if view.is_null(col, r as usize) {
                    self.set_null_bit(out_col, base + i);
                }
            }
        }
    }

    fn set_null_bit(&mut self, col: usize, row: usize) {
        let nulls = &mut self.batch.columns[col].nulls;
        if nulls.len() < row / 64 + 1 {
            nulls.resize(row / 64 + 1, 0);
        }
        nulls[row / 64] |= 1 << (row % 64);
    }

    /// Ends `n` rows whose columns were appended column at a time, with the kinds of rows `sel` of `from`
    /// (the rows they were gathered from; inserts when `from` has none).
    pub fn end_rows_from(&mut self, from: &BatchView<'_>, sel: &[u32]) {
        let n = sel.len();
        if !from.batch.kinds.is_empty() {
            if self.batch.kinds.is_empty() {
                self.batch.kinds.resize(self.batch.n_rows as usize, RowKind::Insert as u8);
            }
            self.batch.kinds.extend(sel.iter().map(|&r| from.batch.kinds[r as usize]));
        } else if !self.batch.kinds.is_empty() {
            self.batch.kinds.resize(self.batch.kinds.len() + n, RowKind::Insert as u8);
        }
        self.batch.n_rows += n as u32;
        assert!(self.columns_consistent(), "every column must get exactly one value per row");
    }

    /// Ends `n` inserted rows whose columns were appended column at a time.
    pub fn end_rows(&mut self, n: usize) {
        if !self.batch.kinds.is_empty() {
            self.batch.kinds.resize(self.batch.kinds.len() + n, RowKind::Insert as u8);
        }
        self.batch.n_rows += n as u32;
        assert!(self.columns_consistent(), "every column must get exactly one value per row");
    }

    /// Ends the inserted row whose columns were all pushed.
    #[inline]
    pub fn end_row(&mut self) {
        if !self.batch.kinds.is_empty() {
            self.batch.kinds.push(RowKind::Insert as u8);
        }
        self.batch.n_rows += 1;
        debug_assert!(self.columns_consistent(), "every column must get exactly one value per row");
    }

    /// Ends the row whose columns were all pushed, as a row of `kind`.
    #[inline]
    pub fn end_row_as(&mut self, kind: RowKind) {
        if kind != RowKind::Insert || !self.batch.kinds.is_empty() {
            // The rows before it, all inserts so far, get their kinds first.
            self.batch.kinds.resize(self.batch.n_rows as usize, RowKind::Insert as u8);
            self.batch.kinds.push(kind as u8);
        }
        self.batch.n_rows += 1;
        debug_assert!(self.columns_consistent(), "every column must get exactly one value per row");
    }

    /// Appends row `row` of `view` (same column types) as a row of `kind`.
    pub fn push_row(&mut self, view: &BatchView<'_>, row: usize, kind: RowKind) {
        for col in 0..self.types.len() {
            self.push_datum(col, &view.datum(col, row));
        }
        self.end_row_as(kind);
    }

    /// True when some row built so far is not an insert.
    pub fn has_changes(&self) -> bool {
        !self.batch.kinds.is_empty()
    }

    fn columns_consistent(&self) -> bool {
        let n = self.batch.n_rows as usize;
        (self.batch.kinds.is_empty() || self.batch.kinds.len() == n)
            && self.batch.columns.iter().all(|c| match &c.data {
                ColumnData::Int(v) => v.len() == n,
                ColumnData::Double(v) => v.len() == n,
                ColumnData::Bool(v) => v.len() == n,
                ColumnData::Str { ends, .. } => ends.len() == n,
            })
    }

    /// Serializes the rows built so far into a [`BatchBuf`] and starts a new, empty batch.
    pub fn finish(&mut self) -> BatchBuf {
        assert!(self.columns_consistent(), "a batch was finished in the middle of a row");
        let bytes = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&self.batch, pooled_buffer())
            .expect("serializing into memory cannot fail");
        let n_rows = self.batch.n_rows;
        let lineage = self.lineage.as_mut().map(|l| {
            let empty = l.empty_like();
            Box::new(std::mem::replace(l, empty))
        });
        self.clear();
        BatchBuf { bytes, n_rows, lineage }
    }

    pub fn clear(&mut self) {
        self.batch.n_rows = 0;
        self.batch.kinds.clear();
        for c in &mut self.batch.columns {
            c.nulls.clear();
            match &mut c.data {
                ColumnData::Int(v) => v.clear(),
                ColumnData::Double(v) => v.clear(),
                ColumnData::Bool(v) => v.clear(),
                ColumnData::Str { ends, bytes } => {
                    ends.clear();
                    bytes.clear();
                }
            }
        }
    }
}

/// A batch read in place.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    batch: &'a ArchivedBatch,
}

impl<'a> BatchView<'a> {
    pub fn n_rows(&self) -> usize {
        self.batch.n_rows.to_native() as usize
    }

    pub fn n_columns(&self) -> usize {
        self.batch.columns.len()
    }

    /// The kind of row `row`.
    #[inline]
    pub fn kind(&self, row: usize) -> RowKind {
        match self.batch.kinds.get(row) {
            None => RowKind::Insert,
            Some(k) => RowKind::from_u8(*k),
        }
    }

    /// True when some row is not an insert (the batch is part of a changelog).
    pub fn has_changes(&self) -> bool {
        !self.batch.kinds.is_empty()
    }

    #[inline]
    pub fn is_null(&self, col: usize, row: usize) -> bool {
        let nulls = &self.batch.columns[col].nulls;
        nulls.get(row / 64).is_some_and(|w| w.to_native() & (1 << (row % 64)) != 0)
    }

    /// The integer at (`col`, `row`); 0 when NULL.
    #[inline]
    pub fn int(&self, col: usize, row: usize) -> i64 {
        match &self.batch.columns[col].data {
            ArchivedColumnData::Int(v) => v[row].to_native(),
            _ => panic!("column {col} is not an integer column"),
        }
    }

    #[inline]
    pub fn double(&self, col: usize, row: usize) -> f64 {
        match &self.batch.columns[col].data {
            ArchivedColumnData::Double(v) => v[row].to_native(),
            _ => panic!("column {col} is not a double column"),
        }
    }

    #[inline]
    pub fn bool(&self, col: usize, row: usize) -> bool {
        match &self.batch.columns[col].data {
            ArchivedColumnData::Bool(v) => v[row],
            _ => panic!("column {col} is not a boolean column"),
        }
    }

    /// The UTF-8 bytes at (`col`, `row`); empty when NULL.
    #[inline]
    pub fn str(&self, col: usize, row: usize) -> &'a [u8] {
        match &self.batch.columns[col].data {
            ArchivedColumnData::Str { ends, bytes } => {
                let start = if row == 0 { 0 } else { ends[row - 1].to_native() as usize };
                &bytes[start..ends[row].to_native() as usize]
            }
            _ => panic!("column {col} is not a string column"),
        }
    }

    /// The value at (`col`, `row`) as a datum.
    #[inline]
    pub fn datum(&self, col: usize, row: usize) -> Datum<'a> {
        if self.is_null(col, row) {
            return Datum::Null;
        }
        match &self.batch.columns[col].data {
            ArchivedColumnData::Int(v) => Datum::Int(v[row].to_native()),
            ArchivedColumnData::Double(v) => Datum::Double(v[row].to_native()),
            ArchivedColumnData::Bool(v) => Datum::Bool(v[row]),
            ArchivedColumnData::Str { .. } => Datum::Str(self.str(col, row)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Cell {
        Null,
        Int(i64),
        Double(f64),
        Bool(bool),
        Str(String),
    }

    fn cell_for(ty: DataType) -> BoxedStrategy<Cell> {
        let value = match ty.storage() {
            Storage::Int => any::<i64>().prop_map(Cell::Int).boxed(),
            Storage::Double => any::<f64>().prop_filter("NaN != NaN", |v| !v.is_nan()).prop_map(Cell::Double).boxed(),
            Storage::Bool => any::<bool>().prop_map(Cell::Bool).boxed(),
            Storage::Str => ".{0,12}".prop_map(Cell::Str).boxed(),
        };
        prop_oneof![1 => Just(Cell::Null), 4 => value].boxed()
    }

    const TYPES: [DataType; 4] = [DataType::BigInt, DataType::Double, DataType::Boolean, DataType::Varchar];

    proptest! {
        /// Row kinds survive building, finishing at any row and gathering: an all-insert batch stores none,
        /// any other keeps each row's (the first row included).
        #[test]
        fn row_kinds_round_trip(kinds in proptest::collection::vec(0u8..4, 0..60), cut in 0usize..60, pick in proptest::collection::vec(any::<bool>(), 60)) {
            let kind = |k: u8| match k { 0 => RowKind::Insert, 1 => RowKind::UpdateBefore, 2 => RowKind::UpdateAfter, _ => RowKind::Delete };
            let mut b = BatchBuilder::new(&[DataType::BigInt]);
            let mut got = Vec::new();
            for (i, k) in kinds.iter().enumerate() {
                if i == cut {
                    got.push(b.finish());
                }
                b.push_int(0, i as i64);
                b.end_row_as(kind(*k));
            }
            got.push(b.finish());
            let mut seen = Vec::new();
            for batch in &got {
                let v = batch.view();
                prop_assert_eq!(v.has_changes(), (0..v.n_rows()).any(|r| v.kind(r) != RowKind::Insert));
                for r in 0..v.n_rows() {
                    seen.push((v.int(0, r), v.kind(r)));
                }
            }
            let want: Vec<(i64, RowKind)> = kinds.iter().enumerate().map(|(i, k)| (i as i64, kind(*k))).collect();
            prop_assert_eq!(&seen, &want);
            // Gathering a selection keeps its rows' kinds, after rows of a batch without kinds.
            let mut g = BatchBuilder::new(&[DataType::BigInt]);
            g.push_int(0, -1);
            g.end_row();
            let all = got.last().unwrap();
            let sel: Vec<u32> = (0..all.view().n_rows() as u32).filter(|r| pick[*r as usize]).collect();
            g.gather(0, &all.view(), 0, &sel);
            g.end_rows_from(&all.view(), &sel);
            let out = g.finish();
            let ov = out.view();
            prop_assert_eq!(ov.kind(0), RowKind::Insert);
            for (i, r) in sel.iter().enumerate() {
                prop_assert_eq!(ov.kind(i + 1), all.view().kind(*r as usize));
            }
        }

        /// Whatever rows go in come out, in place, through a serialized batch, twice with one builder.
        #[test]
        fn batches_round_trip(rows in proptest::collection::vec(
            (cell_for(TYPES[0]), cell_for(TYPES[1]), cell_for(TYPES[2]), cell_for(TYPES[3])), 0..200)) {
            let mut builder = BatchBuilder::new(&TYPES);
            for _round in 0..2 {
                for (a, b, c, d) in &rows {
                    for (col, cell) in [a, b, c, d].into_iter().enumerate() {
                        match cell {
                            Cell::Null => builder.push_null(col),
                            Cell::Int(v) => builder.push_int(col, *v),
                            Cell::Double(v) => builder.push_double(col, *v),
                            Cell::Bool(v) => builder.push_bool(col, *v),
                            Cell::Str(v) => builder.push_str(col, v.as_bytes()),
                        }
                    }
                    builder.end_row();
                }
                let buf = builder.finish();
                let view = buf.view();
                prop_assert_eq!(view.n_rows(), rows.len());
                for (row, (a, b, c, d)) in rows.iter().enumerate() {
                    for (col, cell) in [a, b, c, d].into_iter().enumerate() {
                        let got = view.datum(col, row);
                        match cell {
                            Cell::Null => prop_assert_eq!(got, Datum::Null),
                            Cell::Int(v) => prop_assert_eq!(got, Datum::Int(*v)),
                            Cell::Double(v) => prop_assert_eq!(got, Datum::Double(*v)),
                            Cell::Bool(v) => prop_assert_eq!(got, Datum::Bool(*v)),
                            Cell::Str(v) => prop_assert_eq!(got, Datum::Str(v.as_bytes())),
                        }
                    }
                }
                prop_assert!(builder.is_empty());
            }
        }
    }
}
