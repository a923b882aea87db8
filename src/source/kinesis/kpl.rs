//! De-aggregation of records written by the Kinesis Producer Library (KPL), which packs many user records
//! into one Kinesis record:
//!
//! ```text
//! F3 89 9A C2                     magic
//! protobuf AggregatedRecord      partition_key_table (1, repeated string), explicit_hash_key_table (2,
//!                                repeated string), records (3, repeated Record: partition_key_index (1),
//!                                explicit_hash_key_index (2), data (3, bytes), tags (4))
//! 16 bytes                       MD5 of the protobuf
//! ```
//!
//! Only `data` matters here (the rows are decoded from it); the protobuf is read by hand, skipping what it
//! does not need.

use md5::{Digest, Md5};

const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_BYTES: usize = 16;

/// The user records packed in `record` if it is a KPL aggregate (`None` if it is a plain record); an
/// aggregate whose checksum or framing is wrong is an error.
pub fn deaggregate(record: &[u8]) -> Option<Result<Vec<&[u8]>, String>> {
    let body = record.strip_prefix(&MAGIC)?;
    if body.len() < DIGEST_BYTES {
        return Some(Err("a KPL aggregated record too short for its checksum".into()));
    }
    let (message, digest) = body.split_at(body.len() - DIGEST_BYTES);
    if Md5::digest(message).as_slice() != digest {
        return Some(Err("a KPL aggregated record whose MD5 checksum does not match".into()));
    }
    Some(records(message))
}

/// The `data` of every `records` entry of an AggregatedRecord message.
fn records(message: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut r = Reader(message);
    while !r.0.is_empty() {
        let (field, value) = r.field()?;
        if let (3, Value::Bytes(record)) = (field, value) {
            let mut inner = Reader(record);
            let mut data = None;
            while !inner.0.is_empty() {
                if let (3, Value::Bytes(d)) = inner.field()? {
                    data = Some(d);
                }
            }
            out.push(data.ok_or("a KPL user record without data")?);
        }
    }
    Ok(out)
}

enum Value<'a> {
    Number,
    Bytes(&'a [u8]),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or("a KPL aggregated record ends inside a number")?;
            self.0 = rest;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a KPL aggregated record holds a number longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "a KPL field length out of range")?;
        if self.0.len() < n {
            return Err("a KPL aggregated record ends inside a field".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// The next field's number and value.
    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => {
                self.varint()?;
                Value::Number
            }
            1 => {
                self.take(8)?;
                Value::Number
            }
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Number
            }
            t => return Err(format!("a KPL aggregated record holds protobuf wire type {t}")),
        };
        Ok((key >> 3, value))
    }
}

/// Packs `records` as the KPL does (for tests, here and end to end).
pub fn aggregate(partition_key: &str, records: &[&[u8]]) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    let mut message = Vec::new();
    bytes(1, partition_key.as_bytes(), &mut message);
    for r in records {
        let mut record = Vec::new();
        varint(1 << 3, &mut record);
        varint(0, &mut record);
        bytes(3, r, &mut record);
        bytes(3, &record, &mut message);
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&message);
    out.extend_from_slice(&Md5::digest(&message));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the KPL packs comes back out, in order; a plain record is left alone.
        #[test]
        fn round_trips(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let packed = aggregate("pk", &refs);
            prop_assert_eq!(deaggregate(&packed).unwrap().unwrap(), refs);
        }

        /// Any changed byte after the magic is caught (checksum, or framing).
        #[test]
        fn damage_is_an_error(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 1..5),
                              at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let mut packed = aggregate("pk", &refs);
            let i = 4 + at.index(packed.len() - 4);
            packed[i] ^= flip;
            prop_assert!(deaggregate(&packed).unwrap().is_err());
        }
    }

    #[test]
    fn a_plain_record_is_not_an_aggregate() {
        assert!(deaggregate(br#"{"k":"a"}"#).is_none());
    }
}
