//! Aggregate accumulators: incremental (one update per row), mergeable (slices merge into windows, sessions
//! merge into sessions), with Flink's result rules: COUNT never NULL; SUM, MIN, MAX, AVG NULL over no
//! non-null input; AVG of an integer type is integer division truncating toward zero, as in Flink.
//!
//! Over a changelog input (an unbounded aggregation of an updating query) rows are also *retracted*:
//! COUNT, SUM and AVG subtract; MIN, MAX and COUNT DISTINCT keep every value with its multiplicity
//! ([`Acc::new_retracting`]), so that taking the current minimum (or a distinct value) away finds the next.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::record::types::{DataType, Datum, Value};
use crate::record::{BatchBuilder, BatchView};
use crate::sql::expr::compare;
use crate::sql::{AggCall, AggKind};

#[derive(Clone, Debug)]
pub enum Acc {
    Count(i64),
    /// Boxed: a set is large, and most aggregates are not distinct counts; keeping `Acc` small keeps more
    /// accumulators per cache line.
    CountDistinct(Box<HashSet<Box<[u8]>>>),
    SumInt {
        sum: i64,
        n: i64,
    },
    SumDouble {
        sum: f64,
        n: i64,
    },
    Min(Option<Value>),
    Max(Option<Value>),
    /// MIN or MAX over a changelog: every value with its multiplicity.
    MinMax {
        max: bool,
        values: Box<BTreeMap<OrdValue, u64>>,
    },
    /// COUNT(DISTINCT) over a changelog: every value (encoded) with its multiplicity.
    DistinctCounts(Box<HashMap<Box<[u8]>, u64>>),
}

/// A value in a total order (doubles by `total_cmp`; values of different storage by kind), to key a
/// multiset: SQL comparison among values of one column's type, which is all a multiset holds.
#[derive(Clone, Debug)]
pub struct OrdValue(pub Value);

impl OrdValue {
    fn rank(&self) -> u8 {
        match self.0 {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Double(_) => 2,
            Value::Str(_) => 3,
        }
    }
}

impl Ord for OrdValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Double(a), Value::Double(b)) => a.total_cmp(b),
            (Value::Int(a), Value::Double(b)) => (*a as f64).total_cmp(b),
            (Value::Double(a), Value::Int(b)) => a.total_cmp(&(*b as f64)),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for OrdValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for OrdValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for OrdValue {}

impl Acc {
    pub fn new(call: &AggCall) -> Acc {
        let double = call.arg_ty == Some(DataType::Double);
        match call.kind {
            AggKind::Count if call.distinct => Acc::CountDistinct(Box::default()),
            AggKind::Count => Acc::Count(0),
            AggKind::Sum | AggKind::Avg if double => Acc::SumDouble { sum: 0.0, n: 0 },
            AggKind::Sum | AggKind::Avg => Acc::SumInt { sum: 0, n: 0 },
            AggKind::Min => Acc::Min(None),
            AggKind::Max => Acc::Max(None),
        }
    }

    /// An accumulator that can also take rows away ([`Acc::retract`]): MIN, MAX and COUNT DISTINCT keep
    /// their values' multiplicities.
    pub fn new_retracting(call: &AggCall) -> Acc {
        match call.kind {
            AggKind::Count if call.distinct => Acc::DistinctCounts(Box::default()),
            AggKind::Min => Acc::MinMax { max: false, values: Box::default() },
            AggKind::Max => Acc::MinMax { max: true, values: Box::default() },
            _ => Acc::new(call),
        }
    }

    /// Takes one row's argument away (`None` for COUNT(*)): the row was retracted (update-before, delete).
    pub fn retract(&mut self, arg: Option<Datum<'_>>, scratch: &mut Vec<u8>) {
        let d = match arg {
            None => {
                if let Acc::Count(n) = self {
                    *n -= 1;
                }
                return;
            }
            Some(Datum::Null) => return,
            Some(d) => d,
        };
        match self {
            Acc::Count(n) => *n -= 1,
            Acc::SumInt { sum, n } => {
                if let Datum::Int(v) = d {
                    *sum = sum.wrapping_sub(v);
                    *n -= 1;
                }
            }
            Acc::SumDouble { sum, n } => {
                if let Some(v) = crate::sql::expr::as_f64(&d) {
                    *sum -= v;
                    *n -= 1;
                }
            }
            Acc::MinMax { values, .. } => {
                let key = OrdValue(d.to_value());
                if let Some(c) = values.get_mut(&key) {
                    *c -= 1;
                    if *c == 0 {
                        values.remove(&key);
                    }
                }
            }
            Acc::DistinctCounts(counts) => {
                scratch.clear();
                super::key::encode_datum(&d, scratch);
                if let Some(c) = counts.get_mut(scratch.as_slice()) {
                    *c -= 1;
                    if *c == 0 {
                        counts.remove(scratch.as_slice());
                    }
                }
            }
            // Append-only accumulators are only built for inputs without retractions.
            Acc::CountDistinct(_) | Acc::Min(_) | Acc::Max(_) => {}
        }
    }

    /// Adds one row's argument (`None` for COUNT(*)).
    #[inline]
    pub fn update(&mut self, arg: Option<Datum<'_>>, scratch: &mut Vec<u8>) {
        let d = match arg {
            None => {
                if let Acc::Count(n) = self {
                    *n += 1;
                }
                return;
            }
            Some(Datum::Null) => return,
            Some(d) => d,
        };
        match self {
            Acc::Count(n) => *n += 1,
            Acc::CountDistinct(set) => {
                scratch.clear();
                super::key::encode_datum(&d, scratch);
                if !set.contains(scratch.as_slice()) {
                    set.insert(scratch.as_slice().into());
                }
            }
            Acc::SumInt { sum, n } => {
                if let Datum::Int(v) = d {
                    *sum = sum.wrapping_add(v);
                    *n += 1;
                }
            }
            Acc::SumDouble { sum, n } => {
                if let Some(v) = crate::sql::expr::as_f64(&d) {
                    *sum += v;
                    *n += 1;
                }
            }
            Acc::Min(cur) => keep_if(cur, d, std::cmp::Ordering::Less),
            Acc::Max(cur) => keep_if(cur, d, std::cmp::Ordering::Greater),
            Acc::MinMax { values, .. } => *values.entry(OrdValue(d.to_value())).or_insert(0) += 1,
            Acc::DistinctCounts(counts) => {
                scratch.clear();
                super::key::encode_datum(&d, scratch);
                match counts.get_mut(scratch.as_slice()) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(scratch.as_slice().into(), 1);
                    }
                }
            }
        }
    }

    /// Adds row `row` of `view` for `call`: its argument, or, for the global half of a two-phase
    /// aggregation, the partial accumulator a local aggregation wrote.
    #[inline]
    pub fn add_row(&mut self, call: &AggCall, view: &BatchView<'_>, row: usize, scratch: &mut Vec<u8>) {
        match call.arg {
            Some(col) if call.partial => self.merge_partial(view, row, col),
            arg => self.update(arg.map(|c| view.datum(c, row)), scratch),
        }
    }

    /// Writes this accumulator as a partial (the columns of [`partial_types`]) from column `col` on.
    pub fn write_partial(&self, out: &mut BatchBuilder, col: usize) {
        match self {
            Acc::Count(n) => out.push_int(col, *n),
            Acc::SumInt { sum, n } => {
                out.push_int(col, *sum);
                out.push_int(col + 1, *n);
            }
            Acc::SumDouble { sum, n } => {
                out.push_double(col, *sum);
                out.push_int(col + 1, *n);
            }
            Acc::Min(v) | Acc::Max(v) => match v {
                Some(v) => out.push_datum(col, &v.as_datum()),
                None => out.push_null(col),
            },
            other => unreachable!("{other:?} has no partial form (no two-phase aggregation plans it)"),
        }
    }

    /// Folds a partial accumulator (columns from `col` of row `row`, as [`Acc::write_partial`] wrote them)
    /// into `self`.
    fn merge_partial(&mut self, view: &BatchView<'_>, row: usize, col: usize) {
        match self {
            Acc::Count(n) => *n += view.int(col, row),
            Acc::SumInt { sum, n } => {
                *sum = sum.wrapping_add(view.int(col, row));
                *n += view.int(col + 1, row);
            }
            Acc::SumDouble { sum, n } => {
                *sum += view.double(col, row);
                *n += view.int(col + 1, row);
            }
            Acc::Min(cur) if !view.is_null(col, row) => keep_if(cur, view.datum(col, row), std::cmp::Ordering::Less),
            Acc::Max(cur) if !view.is_null(col, row) => keep_if(cur, view.datum(col, row), std::cmp::Ordering::Greater),
            Acc::Min(_) | Acc::Max(_) => {}
            other => unreachable!("{other:?} has no partial form (no two-phase aggregation plans it)"),
        }
    }

    /// Folds `other` (same aggregate) into `self`.
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::CountDistinct(a), Acc::CountDistinct(b)) => a.extend(b.iter().cloned()),
            (Acc::SumInt { sum, n }, Acc::SumInt { sum: s2, n: n2 }) => {
                *sum = sum.wrapping_add(*s2);
                *n += n2;
            }
            (Acc::SumDouble { sum, n }, Acc::SumDouble { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Min(a), Acc::Min(Some(b))) => keep_if(a, b.as_datum(), std::cmp::Ordering::Less),
            (Acc::Max(a), Acc::Max(Some(b))) => keep_if(a, b.as_datum(), std::cmp::Ordering::Greater),
            (Acc::Min(_) | Acc::Max(_), _) => {}
            (Acc::MinMax { values: a, .. }, Acc::MinMax { values: b, .. }) => {
                for (v, n) in b.iter() {
                    *a.entry(v.clone()).or_insert(0) += n;
                }
            }
            (Acc::DistinctCounts(a), Acc::DistinctCounts(b)) => {
                for (v, n) in b.iter() {
                    *a.entry(v.clone()).or_insert(0) += n;
                }
            }
            (a, b) => panic!("merging different aggregates {a:?} and {b:?}"),
        }
    }

    /// The aggregate's value for the result type of `call`.
    pub fn result(&self, call: &AggCall) -> Datum<'_> {
        let avg = call.kind == AggKind::Avg;
        match self {
            Acc::Count(n) => Datum::Int(*n),
            Acc::CountDistinct(set) => Datum::Int(set.len() as i64),
            Acc::SumInt { n: 0, .. } | Acc::SumDouble { n: 0, .. } => Datum::Null,
            Acc::SumInt { sum, n } if avg => Datum::Int(crate::sql::expr::wrap(sum.wrapping_div(*n), call.ty)),
            Acc::SumInt { sum, .. } => Datum::Int(crate::sql::expr::wrap(*sum, call.ty)),
            Acc::SumDouble { sum, n } if avg => Datum::Double(sum / *n as f64),
            Acc::SumDouble { sum, .. } => Datum::Double(*sum),
            Acc::Min(v) | Acc::Max(v) => v.as_ref().map_or(Datum::Null, Value::as_datum),
            Acc::MinMax { max: false, values } => values.keys().next().map_or(Datum::Null, |v| v.0.as_datum()),
            Acc::MinMax { max: true, values } => values.keys().next_back().map_or(Datum::Null, |v| v.0.as_datum()),
            Acc::DistinctCounts(counts) => Datum::Int(counts.len() as i64),
        }
    }
}

/// Whether `call` has a partial form, so that a two-phase aggregation can split it (COUNT DISTINCT has
/// none: its partial would be its whole set of values).
pub fn has_partial(call: &AggCall) -> bool {
    !call.distinct
}

/// The columns of `call`'s partial accumulator: COUNT its count; SUM and AVG the sum and how many values it
/// holds (no value: SUM is NULL); MIN and MAX the value (NULL: none).
pub fn partial_types(call: &AggCall) -> Vec<DataType> {
    match call.kind {
        AggKind::Count => vec![DataType::BigInt],
        AggKind::Sum | AggKind::Avg if call.arg_ty == Some(DataType::Double) => {
            vec![DataType::Double, DataType::BigInt]
        }
        AggKind::Sum | AggKind::Avg => vec![DataType::BigInt, DataType::BigInt],
        AggKind::Min | AggKind::Max => vec![call.ty],
    }
}

/// Writes the partial accumulator of one row alone (what [`Acc::write_partial`] writes after one
/// [`Acc::update`] of a fresh accumulator), without building the accumulator.
pub fn write_row_partial(call: &AggCall, view: &BatchView<'_>, row: usize, out: &mut BatchBuilder, col: usize) {
    let arg = call.arg.map(|c| view.datum(c, row));
    let present = !matches!(arg, Some(Datum::Null));
    match call.kind {
        AggKind::Count => out.push_int(col, i64::from(present)),
        AggKind::Sum | AggKind::Avg => {
            let double = call.arg_ty == Some(DataType::Double);
            match (double, arg) {
                (true, Some(d)) if present => out.push_double(col, crate::sql::expr::as_f64(&d).unwrap_or(0.0)),
                (true, _) => out.push_double(col, 0.0),
                (false, Some(Datum::Int(v))) => out.push_int(col, v),
                (false, _) => out.push_int(col, 0),
            }
            out.push_int(col + 1, i64::from(present));
        }
        AggKind::Min | AggKind::Max => match arg {
            Some(d) if present => out.push_datum(col, &d),
            _ => out.push_null(col),
        },
    }
}

/// Replaces `cur` by `d` when `cur` is empty or `d` compares as `want` against it.
fn keep_if(cur: &mut Option<Value>, d: Datum<'_>, want: std::cmp::Ordering) {
    let replace = match cur {
        None => true,
        Some(v) => compare(&d, &v.as_datum()) == Some(want),
    };
    if replace {
        *cur = Some(d.to_value());
    }
}

/// The accumulators of one key in one slice or window.
pub type AccRow = Box<[Acc]>;

pub fn new_row(calls: &[AggCall]) -> AccRow {
    calls.iter().map(Acc::new).collect()
}

pub fn merge_rows(into: &mut AccRow, from: &AccRow) {
    for (a, b) in into.iter_mut().zip(from.iter()) {
        a.merge(b);
    }
}

// ----- state encoding (checkpoints) -----
//
// A row of accumulators is encoded as the accumulators in order, each a tag byte and its fields, integers
// little endian: 1 COUNT n:i64; 2 COUNT DISTINCT count:u32 then count × (len:u32, bytes); 3 SUM/AVG of
// integers sum:i64 n:i64; 4 SUM/AVG of doubles sum:f64-bits n:i64; 5 MIN and 6 MAX, each a value:
// 0 none, 1 NULL, 2 integer i64, 3 double f64-bits, 4 boolean u8, 5 string (len:u32, bytes); 7 MIN/MAX over a
// changelog: max u8, count:u32, then count × (value, multiplicity u64); 8 COUNT(DISTINCT) over a changelog:
// count:u32, then count × (len:u32, bytes, multiplicity u64).

const ACC_COUNT: u8 = 1;
const ACC_COUNT_DISTINCT: u8 = 2;
const ACC_SUM_INT: u8 = 3;
const ACC_SUM_DOUBLE: u8 = 4;
const ACC_MIN: u8 = 5;
const ACC_MAX: u8 = 6;
const ACC_MIN_MAX_MULTISET: u8 = 7;
const ACC_DISTINCT_COUNTS: u8 = 8;

fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_value(v: &Option<Value>, out: &mut Vec<u8>) {
    match v {
        None => out.push(0),
        Some(Value::Null) => out.push(1),
        Some(Value::Int(i)) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Some(Value::Double(d)) => {
            out.push(3);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Some(Value::Bool(b)) => {
            out.push(4);
            out.push(u8::from(*b));
        }
        Some(Value::Str(s)) => {
            out.push(5);
            put_bytes(s, out);
        }
    }
}

/// Appends the encoding of a row of accumulators.
pub fn encode_accs(accs: &[Acc], out: &mut Vec<u8>) {
    for acc in accs {
        match acc {
            Acc::Count(n) => {
                out.push(ACC_COUNT);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::CountDistinct(set) => {
                out.push(ACC_COUNT_DISTINCT);
                out.extend_from_slice(&(set.len() as u32).to_le_bytes());
                for v in set.iter() {
                    put_bytes(v, out);
                }
            }
            Acc::SumInt { sum, n } => {
                out.push(ACC_SUM_INT);
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::SumDouble { sum, n } => {
                out.push(ACC_SUM_DOUBLE);
                out.extend_from_slice(&sum.to_bits().to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::Min(v) => {
                out.push(ACC_MIN);
                encode_value(v, out);
            }
            Acc::Max(v) => {
                out.push(ACC_MAX);
                encode_value(v, out);
            }
            Acc::MinMax { max, values } => {
                out.push(ACC_MIN_MAX_MULTISET);
                out.push(u8::from(*max));
                out.extend_from_slice(&(values.len() as u32).to_le_bytes());
                for (v, n) in values.iter() {
                    encode_value(&Some(v.0.clone()), out);
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
            Acc::DistinctCounts(counts) => {
                out.push(ACC_DISTINCT_COUNTS);
                out.extend_from_slice(&(counts.len() as u32).to_le_bytes());
                for (v, n) in counts.iter() {
                    put_bytes(v, out);
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
    }
}

/// Reads an encoding, failing on anything short or unknown (never panicking: the bytes come from disk).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("an accumulator ends early".into());
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn value(&mut self) -> Result<Option<Value>, String> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(Value::Null),
            2 => Some(Value::Int(self.i64()?)),
            3 => Some(Value::Double(f64::from_bits(self.i64()? as u64))),
            4 => Some(Value::Bool(self.u8()? != 0)),
            5 => Some(Value::Str(self.bytes()?.into())),
            t => return Err(format!("unknown value tag {t}")),
        })
    }
}

/// Decodes a row of accumulators for `calls`; each must be of the kind `calls` makes.
pub fn decode_accs(bytes: &[u8], calls: &[AggCall]) -> Result<AccRow, String> {
    let mut row = Vec::with_capacity(calls.len());
    decode_accs_into(bytes, calls, &mut row)?;
    Ok(row.into_boxed_slice())
}

/// Decodes a row of accumulators for `calls` onto the end of `row` (a restore reuses one buffer for every
/// entry).
pub fn decode_accs_into(bytes: &[u8], calls: &[AggCall], row: &mut Vec<Acc>) -> Result<(), String> {
    let rest = decode_accs_prefix(&mut Reader(bytes), calls, row)?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("{} bytes left over after the accumulators", rest.len()))
    }
}

fn decode_accs_prefix<'a>(r: &mut Reader<'a>, calls: &[AggCall], row: &mut Vec<Acc>) -> Result<&'a [u8], String> {
    for call in calls {
        let tag = r.u8()?;
        let acc = match (tag, call.kind) {
            (ACC_MIN_MAX_MULTISET, AggKind::Min | AggKind::Max) => {
                let max = r.u8()? != 0;
                let n = r.u32()?;
                let mut values = BTreeMap::new();
                for _ in 0..n {
                    let v = r.value()?.ok_or("a multiset value is missing")?;
                    values.insert(OrdValue(v), r.i64()? as u64);
                }
                row.push(Acc::MinMax { max, values: Box::new(values) });
                continue;
            }
            (ACC_DISTINCT_COUNTS, AggKind::Count) if call.distinct => {
                let n = r.u32()?;
                let mut counts = HashMap::new();
                for _ in 0..n {
                    let v: Box<[u8]> = r.bytes()?.into();
                    counts.insert(v, r.i64()? as u64);
                }
                row.push(Acc::DistinctCounts(Box::new(counts)));
                continue;
            }
            _ => (tag, Acc::new(call)),
        };
        let acc = match acc {
            (ACC_COUNT, Acc::Count(_)) => Acc::Count(r.i64()?),
            (ACC_COUNT_DISTINCT, Acc::CountDistinct(mut set)) => {
                let n = r.u32()?;
                for _ in 0..n {
                    set.insert(r.bytes()?.into());
                }
                Acc::CountDistinct(set)
            }
            (ACC_SUM_INT, Acc::SumInt { .. }) => Acc::SumInt { sum: r.i64()?, n: r.i64()? },
            (ACC_SUM_DOUBLE, Acc::SumDouble { .. }) => {
                Acc::SumDouble { sum: f64::from_bits(r.i64()? as u64), n: r.i64()? }
            }
            (ACC_MIN, Acc::Min(_)) => Acc::Min(r.value()?),
            (ACC_MAX, Acc::Max(_)) => Acc::Max(r.value()?),
            (tag, _) => return Err(format!("accumulator tag {tag} does not fit aggregate {}", call.text)),
        };
        row.push(acc);
    }
    Ok(r.0)
}

/// Decodes a row of accumulators from the front of `bytes`; returns it and the bytes after it.
pub fn decode_accs_from<'a>(bytes: &'a [u8], calls: &[AggCall]) -> Result<(AccRow, &'a [u8]), String> {
    let mut row = Vec::with_capacity(calls.len());
    let rest = decode_accs_prefix(&mut Reader(bytes), calls, &mut row)?;
    Ok((row.into_boxed_slice(), rest))
}

const _: () = assert!(std::mem::size_of::<Acc>() <= 32, "accumulators stay small: they are stored per key and slice");
