//! Rows as operators keep them in state (joins, rankings): owned values, read from a batch, written back
//! into a builder, ordered by sort keys, and encoded for checkpoints.
//!
//! Encoding of a value: a tag byte (0 NULL, 1 integer i64, 2 double f64-bits, 3 boolean u8, 4 string
//! len:u32 + bytes), little endian; a row is a count u32 then its values.

use std::cmp::Ordering;

use crate::record::types::{Datum, Value};
use crate::record::{BatchBuilder, BatchView};
use crate::sql::expr::compare;

/// A row of owned values.
pub type Row = Box<[Value]>;

/// Row `row` of `view` as owned values.
pub fn read_row(view: &BatchView<'_>, row: usize) -> Row {
    (0..view.n_columns()).map(|c| view.datum(c, row).to_value()).collect()
}

/// Appends `values` to the row being built in `out`, from column `at` on.
pub fn push_values(out: &mut BatchBuilder, at: usize, values: &[Value]) {
    for (i, v) in values.iter().enumerate() {
        out.push_datum(at + i, &v.as_datum());
    }
}

/// Appends `n` NULLs to the row being built in `out`, from column `at` on.
pub fn push_nulls(out: &mut BatchBuilder, at: usize, n: usize) {
    for i in 0..n {
        out.push_null(at + i);
    }
}

/// SQL order of two values for sorting: NULLs first ascending (Flink's default), then by value.
pub fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Double(x), Value::Double(y)) => x.total_cmp(y),
        _ => compare(&a.as_datum(), &b.as_datum()).unwrap_or(Ordering::Equal),
    }
}

/// Compares two rows by `order` (column, ascending).
pub fn cmp_by(a: &[Value], b: &[Value], order: &[(usize, bool)]) -> Ordering {
    for &(c, asc) in order {
        let o = cmp_values(&a[c], &b[c]);
        if o != Ordering::Equal {
            return if asc { o } else { o.reverse() };
        }
    }
    Ordering::Equal
}

/// True when two rows hold the same values (NULL equals NULL: rows as a whole, not SQL comparison).
pub fn same_row(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| cmp_values(x, y) == Ordering::Equal && x.is_null() == y.is_null())
}

pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0),
        Value::Int(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Double(d) => {
            out.push(2);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Value::Bool(b) => {
            out.push(3);
            out.push(u8::from(*b));
        }
        Value::Str(s) => {
            out.push(4);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
    }
}

pub fn encode_row(row: &[Value], out: &mut Vec<u8>) {
    out.extend_from_slice(&(row.len() as u32).to_le_bytes());
    for v in row {
        encode_value(v, out);
    }
}

/// Reads encoded state, failing (never panicking) on anything short or unknown: the bytes come from disk.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("a state value ends early".into());
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn value(&mut self) -> Result<Value, String> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Int(self.i64()?),
            2 => Value::Double(f64::from_bits(self.i64()? as u64)),
            3 => Value::Bool(self.u8()? != 0),
            4 => {
                let n = self.u32()? as usize;
                Value::Str(self.take(n)?.into())
            }
            t => return Err(format!("unknown value tag {t}")),
        })
    }
    pub fn row(&mut self) -> Result<Row, String> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return Err("a row longer than its value".into());
        }
        (0..n).map(|_| self.value()).collect()
    }
    pub fn done(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes left over in a state value", self.0.len()))
        }
    }
}

/// A datum as an owned value (for rows built in an operator).
pub fn value_of(d: &Datum<'_>) -> Value {
    d.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_sort() {
        let a: Row = vec![Value::Int(3), Value::Str(b"x".to_vec().into()), Value::Null, Value::Double(-0.5)].into();
        let mut buf = Vec::new();
        encode_row(&a, &mut buf);
        let mut r = Reader(&buf);
        let back = r.row().unwrap();
        r.done().unwrap();
        assert!(same_row(&a, &back));
        let b: Row = vec![Value::Int(3), Value::Str(b"y".to_vec().into()), Value::Int(1), Value::Double(1.0)].into();
        assert_eq!(cmp_by(&a, &b, &[(0, true), (1, false)]), Ordering::Greater);
        assert_eq!(cmp_by(&a, &b, &[(2, true)]), Ordering::Less, "NULL first");
        assert!(Reader(&buf[..buf.len() - 1]).row().is_err());
    }
}
