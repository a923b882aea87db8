//! JSON lines at the edges: decoding one line into a typed row (ingress, where outside bytes are validated
//! once) and encoding a row as one line (sinks).
//!
//! Decoding follows Flink's JSON format where it is well defined: fields match columns by name, unknown fields
//! are ignored, missing fields and `null` are NULL, numbers in strings are accepted for numeric columns.
//! Stricter than Flink: a fractional number for an integer column is an error rather than truncated.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::batch::{BatchBuilder, BatchView, RowKind};
use super::timestamp::{parse_timestamp, write_timestamp};
use super::types::{DataType, Schema};

/// Why one input line was rejected; the source adds the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug)]
enum Staged {
    Missing,
    Null,
    Int(i64),
    Double(f64),
    Bool(bool),
    /// A range of `JsonDecoder::arena`.
    Str(u32, u32),
}

/// Decodes JSON lines of one schema into a [`BatchBuilder`]. Keeps its scratch space across lines, so a warm
/// decoder allocates nothing per line.
pub struct JsonDecoder {
    schema: Schema,
    staged: Vec<Staged>,
    arena: Vec<u8>,
}

impl JsonDecoder {
    pub fn new(schema: Schema) -> JsonDecoder {
        let n = schema.len();
        JsonDecoder { schema, staged: vec![Staged::Missing; n], arena: Vec::new() }
    }

    /// Decodes `line` and appends it as one row to `out`, or leaves `out` untouched and says why not.
    pub fn decode_into(&mut self, line: &[u8], out: &mut BatchBuilder) -> Result<(), DecodeError> {
        self.staged.fill(Staged::Missing);
        self.arena.clear();
        let mut de = serde_json::Deserializer::from_slice(line);
        RowSeed { schema: &self.schema, staged: &mut self.staged, arena: &mut self.arena }
            .deserialize(&mut de)
            .map_err(|e| DecodeError(clean_serde_message(&e)))?;
        de.end().map_err(|e| DecodeError(format!("trailing characters after the JSON object ({e})")))?;
        for (col, staged) in self.staged.iter().enumerate() {
            match *staged {
                Staged::Missing | Staged::Null => out.push_null(col),
                Staged::Int(v) => out.push_int(col, v),
                Staged::Double(v) => out.push_double(col, v),
                Staged::Bool(v) => out.push_bool(col, v),
                Staged::Str(s, e) => out.push_str(col, &self.arena[s as usize..e as usize]),
            }
        }
        out.end_row();
        Ok(())
    }
}

fn clean_serde_message(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("not valid JSON: {e}")
        }
        _ => e.to_string(),
    }
}

struct RowSeed<'s> {
    schema: &'s Schema,
    staged: &'s mut [Staged],
    arena: &'s mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object, one per line")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(column) = map.next_key_seed(KeySeed { schema: self.schema })? {
            match column {
                Some(col) => {
                    let ty = self.schema.fields[col].ty;
                    let seed = ValueSeed { ty, name: &self.schema.fields[col].name, arena: self.arena };
                    self.staged[col] = map.next_value_seed(seed)?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Maps a field name to its column without allocating.
struct KeySeed<'s> {
    schema: &'s Schema,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.schema.index_of(v))
    }
}

struct ValueSeed<'s> {
    ty: DataType,
    name: &'s str,
    arena: &'s mut Vec<u8>,
}

impl ValueSeed<'_> {
    fn wrong<E: de::Error>(&self, found: impl fmt::Display) -> E {
        E::custom(format!("field `{}`: expected {}, found {found}", self.name, self.ty))
    }

    fn stage_str(&mut self, s: &str) -> Staged {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(s.as_bytes());
        Staged::Str(start, self.arena.len() as u32)
    }

    fn int_in_range<E: de::Error>(&self, v: i64) -> Result<Staged, E> {
        if self.ty == DataType::Int && i32::try_from(v).is_err() {
            return Err(self.wrong(format_args!("{v}, outside INT's range")));
        }
        Ok(Staged::Int(v))
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Staged;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Staged, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Staged;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {} value for field `{}`", self.ty, self.name)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Staged, E> {
        Ok(Staged::Null)
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<Staged, E> {
        match self.ty {
            DataType::Boolean => Ok(Staged::Bool(v)),
            DataType::Varchar => Ok(self.stage_str(if v { "true" } else { "false" })),
            _ => Err(self.wrong(v)),
        }
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<Staged, E> {
        match self.ty {
            DataType::Int | DataType::BigInt | DataType::Timestamp => self.int_in_range(v),
            DataType::Double => Ok(Staged::Double(v as f64)),
            DataType::Varchar => Ok(self.stage_str(&v.to_string())),
            DataType::Boolean => Err(self.wrong(v)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Staged, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) if self.ty == DataType::Double => Ok(Staged::Double(v as f64)),
            Err(_) => Err(self.wrong(format_args!("{v}, outside BIGINT's range"))),
        }
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<Staged, E> {
        match self.ty {
            DataType::Double => Ok(Staged::Double(v)),
            DataType::Int | DataType::BigInt | DataType::Timestamp
                if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 =>
            {
                self.int_in_range(v as i64)
            }
            DataType::Varchar => Ok(self.stage_str(&v.to_string())),
            _ => Err(self.wrong(format_args!("the number {v}"))),
        }
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<Staged, E> {
        let t = v.trim();
        match self.ty {
            DataType::Varchar => Ok(self.stage_str(v)),
            DataType::Int | DataType::BigInt => match t.parse::<i64>() {
                Ok(n) => self.int_in_range(n),
                Err(_) => Err(self.wrong(format_args!("the string {v:?}"))),
            },
            DataType::Double => t.parse::<f64>().map(Staged::Double).map_err(|_| self.wrong(format_args!("the string {v:?}"))),
            DataType::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" => Ok(Staged::Bool(true)),
                "false" => Ok(Staged::Bool(false)),
                _ => Err(self.wrong(format_args!("the string {v:?}"))),
            },
            DataType::Timestamp => parse_timestamp(t).map(Staged::Int).ok_or_else(|| {
                E::custom(format!(
                    "field `{}`: {v:?} is not a timestamp; write epoch milliseconds or \"yyyy-MM-dd HH:mm:ss[.SSS]\" (UTC)",
                    self.name
                ))
            }),
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<Staged, A::Error> {
        if self.ty != DataType::Varchar {
            return Err(self.wrong("an object"));
        }
        let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(self.stage_str(&v.to_string()))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(mut self, seq: A) -> Result<Staged, A::Error> {
        if self.ty != DataType::Varchar {
            return Err(self.wrong("an array"));
        }
        let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(self.stage_str(&v.to_string()))
    }
}

use serde::Deserialize as _;

/// Encodes rows as JSON objects, one per line, with the given column names.
pub struct JsonEncoder {
    /// `"name":` for each column, pre-escaped.
    keys: Vec<Vec<u8>>,
    types: Vec<DataType>,
}

impl JsonEncoder {
    pub fn new(schema: &Schema) -> JsonEncoder {
        let keys = schema
            .fields
            .iter()
            .map(|f| {
                let mut k = Vec::new();
                write_json_string(f.name.as_bytes(), &mut k);
                k.push(b':');
                k
            })
            .collect();
        JsonEncoder { keys, types: schema.types() }
    }

    /// Appends row `row` of `view` as one JSON line (with its newline) to `out`.
    pub fn encode_row(&self, view: &BatchView<'_>, row: usize, out: &mut Vec<u8>) {
        self.encode_object(view, row, None, out);
        out.push(b'\n');
    }

    /// Appends row `row` of `view` as a JSON object (no newline); only columns `only`, if given.
    pub fn encode_object(&self, view: &BatchView<'_>, row: usize, only: Option<&[usize]>, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (col, key) in self.keys.iter().enumerate() {
            if only.is_some_and(|o| !o.contains(&col)) {
                continue;
            }
            if !std::mem::replace(&mut first, false) {
                out.push(b',');
            }
            out.extend_from_slice(key);
            if view.is_null(col, row) {
                out.extend_from_slice(b"null");
                continue;
            }
            match self.types[col] {
                DataType::Int | DataType::BigInt => {
                    out.extend_from_slice(itoa::Buffer::new().format(view.int(col, row)).as_bytes())
                }
                DataType::Timestamp => {
                    out.push(b'"');
                    write_timestamp(view.int(col, row), out);
                    out.push(b'"');
                }
                DataType::Double => write_json_double(view.double(col, row), out),
                DataType::Boolean => out.extend_from_slice(if view.bool(col, row) { b"true" } else { b"false" }),
                DataType::Varchar => write_json_string(view.str(col, row), out),
            }
        }
        out.push(b'}');
    }
}

/// How a sink writes rows with their kinds (see `config::SinkFormat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeMode {
    /// One JSON object per row (inserts only: the planner refuses an updating result for this mode).
    Append,
    /// Flink's debezium-json: `{"before": ..., "after": ..., "op": "c"|"u"|"d"}`; an update-before followed by
    /// its update-after is one `"u"`.
    Debezium,
    /// Upserts by these key columns: inserts and updates write the row, deletes write the key with
    /// `"__deleted": true`, update-befores are dropped.
    Upsert(Vec<usize>),
}

/// Encodes a sink's rows as lines, by [`ChangeMode`].
pub struct ChangeEncoder {
    json: JsonEncoder,
    mode: ChangeMode,
    /// An update-before waiting for its update-after (debezium), as a JSON object.
    before: Option<Vec<u8>>,
}

impl ChangeEncoder {
    pub fn new(schema: &Schema, mode: ChangeMode) -> ChangeEncoder {
        ChangeEncoder { json: JsonEncoder::new(schema), mode, before: None }
    }

    /// Appends the line(s) for row `row` of `view` (none for a row held back or dropped).
    pub fn encode(&mut self, view: &BatchView<'_>, row: usize, out: &mut Vec<u8>) {
        let kind = view.kind(row);
        match &self.mode {
            ChangeMode::Append => self.json.encode_row(view, row, out),
            ChangeMode::Upsert(key) => match kind {
                RowKind::Insert | RowKind::UpdateAfter => self.json.encode_row(view, row, out),
                RowKind::UpdateBefore => {}
                RowKind::Delete => {
                    self.json.encode_object(view, row, Some(key), out);
                    out.pop();
                    out.extend_from_slice(b",\"__deleted\":true}\n");
                }
            },
            ChangeMode::Debezium => {
                if kind != RowKind::UpdateAfter {
                    self.finish(out);
                }
                match kind {
                    RowKind::UpdateBefore => {
                        let mut b = Vec::new();
                        self.json.encode_object(view, row, None, &mut b);
                        self.before = Some(b);
                    }
                    RowKind::Insert | RowKind::UpdateAfter => {
                        let before = self.before.take();
                        out.extend_from_slice(b"{\"before\":");
                        match &before {
                            Some(b) => out.extend_from_slice(b),
                            None => out.extend_from_slice(b"null"),
                        }
                        out.extend_from_slice(b",\"after\":");
                        self.json.encode_object(view, row, None, out);
                        let op: &[u8] = if before.is_some() { b"u" } else { b"c" };
                        out.extend_from_slice(b",\"op\":\"");
                        out.extend_from_slice(op);
                        out.extend_from_slice(b"\"}\n");
                    }
                    RowKind::Delete => {
                        out.extend_from_slice(b"{\"before\":");
                        self.json.encode_object(view, row, None, out);
                        out.extend_from_slice(b",\"after\":null,\"op\":\"d\"}\n");
                    }
                }
            }
        }
    }

    /// Appends what is held back: an update-before without its update-after is a delete.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(b) = self.before.take() {
            out.extend_from_slice(b"{\"before\":");
            out.extend_from_slice(&b);
            out.extend_from_slice(b",\"after\":null,\"op\":\"d\"}\n");
        }
    }

    /// True when a row is held back.
    pub fn holds(&self) -> bool {
        self.before.is_some()
    }
}

/// Writes a JSON string literal for UTF-8 bytes.
pub fn write_json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Writes a DOUBLE as Java's `Double.toString` does (what Flink's JSON format writes): `100.0`, `0.908`,
/// `1.0E7`, `1.5E-4`; NaN and infinities as the strings Jackson writes for them.
pub fn write_json_double(v: f64, out: &mut Vec<u8>) {
    if !v.is_finite() {
        let s: &[u8] = if v.is_nan() {
            b"\"NaN\""
        } else if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        };
        out.extend_from_slice(s);
        return;
    }
    let a = v.abs();
    if a == 0.0 || (1e-3..1e7).contains(&a) {
        let s = format!("{v}");
        out.extend_from_slice(s.as_bytes());
        if !s.contains('.') {
            out.extend_from_slice(b".0");
        }
    } else {
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').expect("{:e} has an exponent");
        out.extend_from_slice(mantissa.as_bytes());
        if !mantissa.contains('.') {
            out.extend_from_slice(b".0");
        }
        out.push(b'E');
        out.extend_from_slice(exp.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::types::Datum;

    fn decoder() -> (JsonDecoder, BatchBuilder) {
        let schema = Schema::parse("k VARCHAR, v BIGINT, px DOUBLE, ok BOOLEAN, ts TIMESTAMP(3), i INT").unwrap();
        let b = BatchBuilder::new(&schema.types());
        (JsonDecoder::new(schema), b)
    }

    #[test]
    fn decodes_good_lines_and_rejects_bad_ones_without_touching_the_batch() {
        let (mut d, mut b) = decoder();
        let good: &[&[u8]] = &[
            br#"{"k":"a","v":1,"px":1.5,"ok":true,"ts":1000,"i":7}"#,
            br#"{"ts":"1970-01-01 00:00:02.500","v":"42","extra":{"x":[1,2]},"k":"b\"q"}"#,
            br#"{"k":null,"v":3.0}"#,
        ];
        for line in good {
            d.decode_into(line, &mut b).unwrap();
        }
        let bad: &[(&[u8], &str)] = &[
            (b"{\"k\":", "not valid JSON"),
            (br#"{"v":"abc"}"#, "field `v`: expected BIGINT"),
            (br#"{"v":1.5}"#, "field `v`: expected BIGINT"),
            (br#"{"ts":"noon"}"#, "is not a timestamp"),
            (br#"{"i":3000000000}"#, "outside INT's range"),
            (br#"{"ok":"maybe"}"#, "expected BOOLEAN"),
            (br#"[1,2]"#, "invalid type"),
            (br#"{"v":1} x"#, "trailing characters"),
            (b"", "not valid JSON"),
        ];
        for (line, want) in bad {
            let err = d.decode_into(line, &mut b).unwrap_err();
            assert!(err.0.contains(want), "{:?}: {err}", String::from_utf8_lossy(line));
        }
        let buf = b.finish();
        let v = buf.view();
        assert_eq!(v.n_rows(), 3);
        assert_eq!(v.datum(0, 0), Datum::Str(b"a"));
        assert_eq!(v.datum(4, 0), Datum::Int(1000));
        assert_eq!(v.datum(1, 1), Datum::Int(42));
        assert_eq!(v.datum(4, 1), Datum::Int(2500));
        assert_eq!(v.datum(0, 1), Datum::Str(b"b\"q"));
        assert_eq!(v.datum(0, 2), Datum::Null);
        assert_eq!(v.datum(1, 2), Datum::Int(3));
        assert_eq!(v.datum(2, 2), Datum::Null);
    }

    #[test]
    fn encodes_rows_as_flink_json() {
        let (mut d, mut b) = decoder();
        d.decode_into(br#"{"k":"a\nb","v":-5,"px":100,"ok":false,"ts":1767225600123}"#, &mut b).unwrap();
        let buf = b.finish();
        let enc = JsonEncoder::new(
            &Schema::parse("k VARCHAR, v BIGINT, px DOUBLE, ok BOOLEAN, ts TIMESTAMP(3), i INT").unwrap(),
        );
        let mut out = Vec::new();
        enc.encode_row(&buf.view(), 0, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"k\":\"a\\nb\",\"v\":-5,\"px\":100.0,\"ok\":false,\"ts\":\"2026-01-01 00:00:00.123\",\"i\":null}\n"
        );
    }

    #[test]
    fn writes_doubles_like_java() {
        for (v, want) in [
            (100.0, "100.0"),
            (0.908, "0.908"),
            (1e7, "1.0E7"),
            (1.5e-4, "1.5E-4"),
            (-0.5, "-0.5"),
            (0.0, "0.0"),
            (123456.75, "123456.75"),
        ] {
            let mut out = Vec::new();
            write_json_double(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
