//! Group keys as bytes: a canonical, self-delimiting encoding of key columns, used as hash-map keys in
//! operator state and hashed (stably, forever) to key groups.
//!
//! Encoding per value: a tag byte (0 NULL, 1 integer, 2 double, 3 boolean, 4 string), then 8 bytes little
//! endian for integers and doubles (doubles normalized so -0.0 = 0.0 and all NaNs are one), 1 byte for a
//! boolean, a u32 little-endian length and the bytes for a string.

use crate::record::types::{DataType, Datum, Storage};
use crate::record::{BatchBuilder, BatchView};

const TAG_NULL: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_DOUBLE: u8 = 2;
const TAG_BOOL: u8 = 3;
const TAG_STR: u8 = 4;

/// Appends the encoding of one datum.
pub fn encode_datum(d: &Datum<'_>, out: &mut Vec<u8>) {
    match d {
        Datum::Null => out.push(TAG_NULL),
        Datum::Int(v) => {
            out.push(TAG_INT);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Datum::Double(v) => {
            out.push(TAG_DOUBLE);
            let v = if *v == 0.0 {
                0.0
            } else if v.is_nan() {
                f64::NAN
            } else {
                *v
            };
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Datum::Bool(b) => {
            out.push(TAG_BOOL);
            out.push(u8::from(*b));
        }
        Datum::Str(_) | Datum::OwnedStr(_) => {
            let s = d.as_bytes().unwrap_or_default();
            out.push(TAG_STR);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
    }
}

/// Encodes columns `0..n_keys` of `row` into `out` (cleared first).
#[inline]
pub fn encode_key(view: &BatchView<'_>, row: usize, n_keys: usize, out: &mut Vec<u8>) {
    out.clear();
    for col in 0..n_keys {
        encode_datum(&view.datum(col, row), out);
    }
}

/// Encodes columns `cols` of `row` into `out` (cleared first): the key a hash edge routes by, and the keyed
/// operator behind it keeps its state under.
#[inline]
pub fn encode_key_cols(view: &BatchView<'_>, row: usize, cols: &[usize], out: &mut Vec<u8>) {
    out.clear();
    for &col in cols {
        encode_datum(&view.datum(col, row), out);
    }
}

/// The stable 64-bit hash of an encoded key. Fixed forever: it decides key groups, which checkpoints record.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Decodes an encoded key into columns `0..types.len()` of the row being built in `out`.
pub fn decode_key_into(mut key: &[u8], types: &[DataType], out: &mut BatchBuilder) {
    for (col, ty) in types.iter().enumerate() {
        let (tag, rest) = key.split_first().expect("an encoded key holds every key column");
        key = rest;
        match *tag {
            TAG_NULL => out.push_null(col),
            TAG_INT => out.push_int(col, i64::from_le_bytes(take(&mut key, 8).try_into().expect("8 bytes"))),
            TAG_DOUBLE => {
                out.push_double(col, f64::from_bits(u64::from_le_bytes(take(&mut key, 8).try_into().expect("8 bytes"))))
            }
            TAG_BOOL => out.push_bool(col, take(&mut key, 1)[0] != 0),
            _ => {
                let len = u32::from_le_bytes(take(&mut key, 4).try_into().expect("4 bytes")) as usize;
                out.push_str(col, take(&mut key, len));
            }
        }
        debug_assert!(*tag == TAG_NULL || storage_tag(ty.storage()) == *tag);
    }
}

/// Splits `n` bytes off the front of `key`.
fn take<'k>(key: &mut &'k [u8], n: usize) -> &'k [u8] {
    let (head, tail) = key.split_at(n);
    *key = tail;
    head
}

fn storage_tag(s: Storage) -> u8 {
    match s {
        Storage::Int => TAG_INT,
        Storage::Double => TAG_DOUBLE,
        Storage::Bool => TAG_BOOL,
        Storage::Str => TAG_STR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_hash_stably() {
        let types = [DataType::BigInt, DataType::Varchar, DataType::Double, DataType::Boolean];
        let mut b = BatchBuilder::new(&types);
        b.push_int(0, -7);
        b.push_str(1, "kéy".as_bytes());
        b.push_double(2, -0.0);
        b.push_null(3);
        b.end_row();
        let buf = b.finish();
        let mut key = Vec::new();
        encode_key(&buf.view(), 0, 4, &mut key);
        let mut again = BatchBuilder::new(&types);
        decode_key_into(&key, &types, &mut again);
        again.end_row();
        let buf2 = again.finish();
        let mut key2 = Vec::new();
        encode_key(&buf2.view(), 0, 4, &mut key2);
        assert_eq!(key, key2);
        // The hash decides key groups, which checkpoints record: it must never change.
        assert_eq!(key_hash(b""), 0x2d06800538d394c2);
        assert_eq!(key_hash(&key), key_hash(&key2));
    }
}
