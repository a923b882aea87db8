//! Aggregate accumulators: incremental (one update per row), mergeable (slices merge into windows, sessions
//! merge into sessions), with Flink's result rules: COUNT never NULL; SUM, MIN, MAX, AVG NULL over no
//! non-null input; AVG of an integer type is integer division truncating toward zero, as in Flink.

use std::collections::HashSet;

use crate::record::types::{DataType, Datum, Value};
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
}

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
        }
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

const _: () = assert!(std::mem::size_of::<Acc>() <= 32, "accumulators stay small: they are stored per key and slice");
