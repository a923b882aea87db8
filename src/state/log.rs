//! The state log's format: how a checkpoint's state is framed on disk, and how it is read back.
//!
//! A shard's log is a sequence of segment files. Each checkpoint appends one *blob*: a run of records, padded
//! with zero bytes to a multiple of [`LOG_BLOCK_BYTES`] (direct I/O writes whole aligned blocks). A record is
//!
//! ```text
//! len: u32 LE      bytes of the payload (the type byte and what follows), at least 1
//! crc: u32 LE      CRC-32C of the 4 len bytes followed by the payload
//! payload          type: u8, then the fields of that type (all integers little endian)
//! ```
//!
//! Types:
//!
//! ```text
//! 1 BEGIN    epoch u64, shard u16, kind u8 (0 delta: changes since the previous checkpoint; 1 base: everything)
//! 2 ENTRIES  job u16, key_group u32, count u32, then count entries:
//!              op u8 (1 put, 2 delete), namespace i64, key_len u32, key, and for a put: value_len u32, value
//! 3 DROP     job u16, namespace i64: every entry of the namespace is deleted (a fired window's slice)
//! 4 END      epoch u64, records u32 (the records of this checkpoint, BEGIN and END included)
//! ```
//!
//! Zero bytes pad each blob from its END record to the next block boundary. A checkpoint counts only if its
//! END is present and its record count matches. Entries are grouped by key
//! group (one or more ENTRIES records per key group), so a restore can pick the key groups it owns. What a
//! namespace and a value mean belongs to the operator that wrote them (`operator::window_agg`): the log only
//! stores bytes.

use std::collections::HashMap;
use std::fmt;

/// Alignment of every blob: the direct-I/O block size.
pub const LOG_BLOCK_BYTES: usize = 4096;

/// Bytes of a record's header (`len` and `crc`).
const HEADER_BYTES: usize = 8;

const TYPE_BEGIN: u8 = 1;
const TYPE_ENTRIES: u8 = 2;
const TYPE_DROP: u8 = 3;
const TYPE_END: u8 = 4;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// Largest payload of one ENTRIES record before the encoder starts another for the same key group: bounds
/// what a reader must hold to check one checksum.
const ENTRIES_RECORD_BYTES_MAX: usize = 1 << 20;

/// Largest record a reader accepts: a larger length can only be corruption.
const RECORD_BYTES_MAX: usize = 64 << 20;

/// What kind of checkpoint a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Only what changed since the previous checkpoint of this shard.
    Delta,
    /// The shard's whole state: replay may start here.
    Base,
}

/// Builds one checkpoint's blob in memory (the shard does this at the barrier; the write happens later, off
/// the data path).
pub struct BlobEncoder {
    buf: Vec<u8>,
    records: u32,
    /// The open ENTRIES record: its start in `buf`, job, key group, and entry count.
    group: Option<(usize, u16, u32, u32)>,
    entries: u64,
}

impl BlobEncoder {
    pub fn new(epoch: u64, shard: u16, kind: CheckpointKind) -> BlobEncoder {
        let mut e = BlobEncoder { buf: Vec::new(), records: 0, group: None, entries: 0 };
        let at = e.open(TYPE_BEGIN);
        e.buf.extend_from_slice(&epoch.to_le_bytes());
        e.buf.extend_from_slice(&shard.to_le_bytes());
        e.buf.push(u8::from(kind == CheckpointKind::Base));
        e.close(at);
        e
    }

    /// Starts a record; returns where its header is.
    fn open(&mut self, ty: u8) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER_BYTES]);
        self.buf.push(ty);
        at
    }

    /// Fills in the header of the record started at `at`.
    fn close(&mut self, at: usize) {
        let len = (self.buf.len() - at - HEADER_BYTES) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &self.buf[at + HEADER_BYTES..]);
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        self.records += 1;
    }

    fn close_group(&mut self) {
        if let Some((at, _, _, count)) = self.group.take() {
            // The count sits after the type byte, job and key group.
            let c = at + HEADER_BYTES + 1 + 2 + 4;
            self.buf[c..c + 4].copy_from_slice(&count.to_le_bytes());
            self.close(at);
        }
    }

    /// Makes the open ENTRIES record the one of `job` and `key_group`.
    fn group_for(&mut self, job: u16, key_group: u32) {
        match self.group {
            Some((at, j, kg, _)) if j == job && kg == key_group && self.buf.len() - at < ENTRIES_RECORD_BYTES_MAX => {}
            _ => {
                self.close_group();
                let at = self.open(TYPE_ENTRIES);
                self.buf.extend_from_slice(&job.to_le_bytes());
                self.buf.extend_from_slice(&key_group.to_le_bytes());
                self.buf.extend_from_slice(&0u32.to_le_bytes());
                self.group = Some((at, job, key_group, 0));
            }
        }
    }

    fn entry_header(&mut self, job: u16, key_group: u32, op: u8, namespace: i64, key: &[u8]) {
        self.group_for(job, key_group);
        if let Some(g) = &mut self.group {
            g.3 += 1;
        }
        self.entries += 1;
        self.buf.push(op);
        self.buf.extend_from_slice(&namespace.to_le_bytes());
        self.buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
    }

    /// Sets an entry; `value` writes the value's bytes onto the end of the buffer it is given.
    pub fn put(&mut self, job: u16, key_group: u32, namespace: i64, key: &[u8], value: impl FnOnce(&mut Vec<u8>)) {
        self.entry_header(job, key_group, OP_PUT, namespace, key);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        value(&mut self.buf);
        let len = (self.buf.len() - len_at - 4) as u32;
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Appends an ENTRIES record of `count` entries already encoded with [`encode_put`].
    pub fn put_encoded(&mut self, job: u16, key_group: u32, count: u32, entries: &[u8]) {
        self.close_group();
        let at = self.open(TYPE_ENTRIES);
        self.buf.extend_from_slice(&job.to_le_bytes());
        self.buf.extend_from_slice(&key_group.to_le_bytes());
        self.buf.extend_from_slice(&count.to_le_bytes());
        self.buf.extend_from_slice(entries);
        self.close(at);
        self.entries += u64::from(count);
    }

    pub fn delete(&mut self, job: u16, key_group: u32, namespace: i64, key: &[u8]) {
        self.entry_header(job, key_group, OP_DELETE, namespace, key);
    }

    /// Deletes every entry of a namespace of `job`.
    pub fn drop_namespace(&mut self, job: u16, namespace: i64) {
        self.close_group();
        let at = self.open(TYPE_DROP);
        self.buf.extend_from_slice(&job.to_le_bytes());
        self.buf.extend_from_slice(&namespace.to_le_bytes());
        self.close(at);
    }

    /// Entries put or deleted so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Ends the checkpoint and returns the blob, padded to whole blocks.
    pub fn finish(mut self, epoch: u64) -> Vec<u8> {
        self.close_group();
        let at = self.open(TYPE_END);
        self.buf.extend_from_slice(&epoch.to_le_bytes());
        self.buf.extend_from_slice(&(self.records + 1).to_le_bytes());
        self.close(at);
        let padded = self.buf.len().div_ceil(LOG_BLOCK_BYTES) * LOG_BLOCK_BYTES;
        self.buf.resize(padded, 0);
        self.buf
    }
}

/// Encodes one put entry (as in an ENTRIES record) onto `out`, for [`BlobEncoder::put_encoded`].
pub fn encode_put(out: &mut Vec<u8>, namespace: i64, key: &[u8], value: impl FnOnce(&mut Vec<u8>)) {
    out.push(OP_PUT);
    out.extend_from_slice(&namespace.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    value(out);
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Bytes of entries a caller gathers per key group before it hands them to [`BlobEncoder::put_encoded`].
pub const ENTRIES_BATCH_BYTES: usize = ENTRIES_RECORD_BYTES_MAX;

/// Something wrong in a log file, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError {
    pub file: String,
    pub offset: u64,
    pub what: String,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: {}", self.file, self.offset, self.what)
    }
}

/// One entry of an ENTRIES record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub namespace: i64,
    pub key: &'a [u8],
    /// `None` deletes the entry.
    pub value: Option<&'a [u8]>,
}

/// The entries of an ENTRIES record: checked when the record was read, decoded as they are walked (a
/// restore walks them once, straight into the operator's tables, without collecting them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entries<'a> {
    count: u32,
    raw: &'a [u8],
}

impl<'a> Entries<'a> {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Entry<'a>> + use<'a> {
        let mut f = Fields { bytes: self.raw };
        (0..self.count).map(move |_| read_entry(&mut f).expect("entries are checked when their record is read"))
    }
}

fn read_entry<'a>(f: &mut Fields<'a>) -> Result<Entry<'a>, String> {
    let op = f.u8()?;
    let namespace = f.u64()? as i64;
    let key = f.bytes()?;
    let value = match op {
        OP_PUT => Some(f.bytes()?),
        OP_DELETE => None,
        o => return Err(format!("unknown entry operation {o}")),
    };
    Ok(Entry { namespace, key, value })
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Begin { epoch: u64, shard: u16, kind: CheckpointKind },
    Entries { job: u16, key_group: u32, entries: Entries<'a> },
    Drop { job: u16, namespace: i64 },
    End { epoch: u64, records: u32 },
}

/// Reads fields off a payload, failing (not panicking) when it is short.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("a record ends in the middle of a field".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn decode_payload(payload: &[u8]) -> Result<Record<'_>, String> {
    let mut f = Fields { bytes: payload };
    let record = match f.u8()? {
        TYPE_BEGIN => {
            let epoch = f.u64()?;
            let shard = f.u16()?;
            let kind = match f.u8()? {
                0 => CheckpointKind::Delta,
                1 => CheckpointKind::Base,
                k => return Err(format!("unknown checkpoint kind {k}")),
            };
            Record::Begin { epoch, shard, kind }
        }
        TYPE_ENTRIES => {
            let job = f.u16()?;
            let key_group = f.u32()?;
            let count = f.u32()?;
            let raw = f.bytes;
            for _ in 0..count {
                read_entry(&mut f)?;
            }
            Record::Entries { job, key_group, entries: Entries { count, raw: &raw[..raw.len() - f.bytes.len()] } }
        }
        TYPE_DROP => Record::Drop { job: f.u16()?, namespace: f.u64()? as i64 },
        TYPE_END => Record::End { epoch: f.u64()?, records: f.u32()? },
        t => return Err(format!("unknown record type {t}")),
    };
    if !f.bytes.is_empty() {
        return Err(format!("{} bytes left over after a record", f.bytes.len()));
    }
    Ok(record)
}

/// Reads the records of a byte range of one segment file. `base` is the file offset of `bytes[0]`, so errors
/// name the offset in the file.
pub struct RecordReader<'a> {
    file: &'a str,
    bytes: &'a [u8],
    base: u64,
    pos: usize,
}

impl<'a> RecordReader<'a> {
    pub fn new(file: &'a str, bytes: &'a [u8], base: u64) -> RecordReader<'a> {
        RecordReader { file, bytes, base, pos: 0 }
    }

    /// File offset of the next record.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn error(&self, what: impl Into<String>) -> LogError {
        LogError { file: self.file.to_string(), offset: self.offset(), what: what.into() }
    }

    /// The next record and the file offset just past it; `None` at the end of the range. Padding follows
    /// every END record up to the next block boundary (and only there: a zero length anywhere else is
    /// damage), so it is skipped right after an END.
    pub fn next_record(&mut self) -> Option<Result<(Record<'a>, u64), LogError>> {
        if self.pos == self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        if rest.len() < HEADER_BYTES {
            return Some(Err(self.error("the range ends inside a record header")));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > RECORD_BYTES_MAX || rest.len() < HEADER_BYTES + len {
            return Some(Err(self.error(format!("a record of {len} bytes does not fit the range (torn write?)"))));
        }
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let payload = &rest[HEADER_BYTES..HEADER_BYTES + len];
        if crc32c::crc32c_append(crc32c::crc32c(&rest[..4]), payload) != crc {
            return Some(Err(self.error("checksum mismatch")));
        }
        let record = match decode_payload(payload) {
            Ok(r) => r,
            Err(e) => return Some(Err(self.error(e))),
        };
        self.pos += HEADER_BYTES + len;
        if let Record::End { .. } = record {
            let offset = self.offset();
            let block = LOG_BLOCK_BYTES as u64;
            let skip = (offset.div_ceil(block) * block - offset) as usize;
            let rest = &self.bytes[self.pos..];
            // A range that ends inside the padding (a torn tail) keeps what it has.
            let pad = &rest[..skip.min(rest.len())];
            if pad.iter().any(|b| *b != 0) {
                return Some(Err(self.error("the padding after a checkpoint holds non-zero bytes")));
            }
            self.pos += pad.len();
        }
        Some(Ok((record, self.offset())))
    }
}

/// A piece of a segment file: the bytes `[from, to)` of `file`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentRange {
    pub file: String,
    pub from: u64,
    pub to: u64,
}

/// Hash maps of replay, with the fast hash the engine uses for keys (a replay inserts every entry).
type Map<K, V> = HashMap<K, V, xxhash_rust::xxh3::Xxh3Builder>;

/// The state of one job's operator in one shard's log, after replay: namespace → key → (key group, value).
pub type Namespaces = Map<i64, Map<Box<[u8]>, (u32, Box<[u8]>)>>;

/// One entry of a replayed state: job, key group, namespace, key, value.
pub type FlatEntry = (u16, u32, i64, Box<[u8]>, Box<[u8]>);

/// The state a shard's log holds at a checkpoint. While only a base has been replayed (the common case after
/// a compaction or a savepoint), its entries are kept as a plain list; the first delta turns them into maps.
#[derive(Debug, Default)]
pub struct ShardImage {
    jobs: Map<u16, Namespaces>,
    /// The base's entries, while no delta has followed it.
    flat: Option<Vec<FlatEntry>>,
    /// Checkpoints replayed and bytes read.
    pub checkpoints: u64,
    pub bytes: u64,
}

impl ShardImage {
    fn begin(&mut self, kind: CheckpointKind) {
        match kind {
            CheckpointKind::Base => {
                self.jobs.clear();
                self.flat = Some(Vec::new());
            }
            CheckpointKind::Delta => {
                let flat = self.flat.take().unwrap_or_default();
                if !flat.is_empty() {
                    tracing::debug!("replaying deltas over a base of {} entries", flat.len());
                }
                for (job, kg, ns, key, value) in flat {
                    self.jobs.entry(job).or_default().entry(ns).or_default().insert(key, (kg, value));
                }
            }
        }
    }

    fn apply(&mut self, record: &Record<'_>) {
        match record {
            Record::Entries { job, key_group, entries } => {
                if let Some(flat) = &mut self.flat {
                    // A base holds puts only, each key once.
                    for e in entries.iter() {
                        if let Some(v) = e.value {
                            flat.push((*job, *key_group, e.namespace, e.key.into(), v.into()));
                        }
                    }
                    return;
                }
                let job = self.jobs.entry(*job).or_default();
                for e in entries.iter() {
                    match e.value {
                        Some(v) => {
                            job.entry(e.namespace).or_default().insert(e.key.into(), (*key_group, v.into()));
                        }
                        None => {
                            if let Some(ns) = job.get_mut(&e.namespace) {
                                ns.remove(e.key);
                                if ns.is_empty() {
                                    job.remove(&e.namespace);
                                }
                            }
                        }
                    }
                }
            }
            Record::Drop { job, namespace } => {
                if let Some(flat) = &mut self.flat {
                    flat.retain(|e| !(e.0 == *job && e.2 == *namespace));
                } else if let Some(j) = self.jobs.get_mut(job) {
                    j.remove(namespace);
                }
            }
            Record::Begin { .. } | Record::End { .. } => {}
        }
    }

    /// Every entry.
    pub fn into_entries(self) -> Vec<FlatEntry> {
        if let Some(flat) = self.flat {
            return flat;
        }
        let mut out = Vec::new();
        for (job, namespaces) in self.jobs {
            for (ns, keys) in namespaces {
                for (key, (kg, value)) in keys {
                    out.push((job, kg, ns, key, value));
                }
            }
        }
        out
    }
}

/// Replays complete checkpoints from `ranges` (the bytes of each range in `data`, in order), which must start
/// with a base and end with the END of checkpoint `last_epoch`. Every record is checked; anything wrong is an
/// error naming the file and offset, and nothing of a checkpoint is applied unless all of it is sound.
pub fn replay(ranges: &[(SegmentRange, Vec<u8>)], last_epoch: u64) -> Result<ShardImage, LogError> {
    let mut image = ShardImage::default();
    image.bytes = replay_with(ranges, last_epoch, |kind, _, records| {
        image.begin(kind);
        for (_, r) in records {
            image.apply(r);
        }
        image.checkpoints += 1;
        Ok(())
    })?;
    Ok(image)
}

/// A record and its offset in its file.
pub type Located<'a> = (u64, Record<'a>);

/// Walks the checkpoints of `ranges` as [`replay`] does, handing each complete and sound checkpoint to
/// `apply` (its kind, the range it is in, and its records between BEGIN and END, in order); `apply` may refuse
/// a record by its offset. Returns the bytes read.
pub fn replay_with<'a>(
    ranges: &'a [(SegmentRange, Vec<u8>)],
    last_epoch: u64,
    mut apply: impl FnMut(CheckpointKind, &'a SegmentRange, &[Located<'a>]) -> Result<(), (u64, String)>,
) -> Result<u64, LogError> {
    let mut bytes_read = 0;
    let mut records: Vec<Located<'a>> = Vec::new();
    let mut open: Option<(u64, CheckpointKind, u32)> = None;
    let mut first = true;
    let mut last_end = None;
    let mut at = LogError { file: String::new(), offset: 0, what: String::new() };
    for (range, bytes) in ranges {
        if bytes.len() as u64 != range.to - range.from {
            return Err(LogError {
                file: range.file.clone(),
                offset: range.from + bytes.len() as u64,
                what: format!("the file ends before byte {} that the checkpoint needs", range.to),
            });
        }
        let mut reader = RecordReader::new(&range.file, bytes, range.from);
        at = LogError { file: range.file.clone(), offset: range.to, what: String::new() };
        loop {
            let offset = reader.offset();
            let Some(next) = reader.next_record() else { break };
            let (record, _) = next?;
            let fail = |offset: u64, what: String| LogError { file: range.file.clone(), offset, what };
            match (&mut open, record) {
                (None, Record::Begin { epoch, kind, .. }) => {
                    if first && kind != CheckpointKind::Base {
                        return Err(fail(offset, "replay must start at a base checkpoint, found a delta".into()));
                    }
                    first = false;
                    open = Some((epoch, kind, 1));
                }
                (None, other) => {
                    return Err(fail(offset, format!("a record outside a checkpoint: {}", kind_of(&other))))
                }
                (Some(_), Record::Begin { .. }) => {
                    return Err(fail(offset, "a checkpoint begins inside another".into()))
                }
                (Some((epoch, kind, n)), Record::End { epoch: e, records: count }) => {
                    *n += 1;
                    if e != *epoch || count != *n {
                        return Err(fail(
                            offset,
                            format!("checkpoint {epoch} ends as epoch {e} with {count} records, but {n} were read"),
                        ));
                    }
                    apply(*kind, range, &records).map_err(|(offset, what)| fail(offset, what))?;
                    records.clear();
                    last_end = Some(*epoch);
                    open = None;
                }
                (Some((_, _, n)), r) => {
                    *n += 1;
                    records.push((offset, r));
                }
            }
        }
        bytes_read += bytes.len() as u64;
    }
    if open.is_some() {
        return Err(LogError { what: "the last checkpoint has no END record".into(), ..at });
    }
    match last_end {
        Some(e) if e == last_epoch => Ok(bytes_read),
        Some(e) => {
            Err(LogError { what: format!("the log ends at checkpoint {e}, the manifest says {last_epoch}"), ..at })
        }
        None => Err(LogError { what: "no checkpoint in the log ranges the manifest names".into(), ..at }),
    }
}

fn kind_of(r: &Record<'_>) -> &'static str {
    match r {
        Record::Begin { .. } => "BEGIN",
        Record::Entries { .. } => "ENTRIES",
        Record::Drop { .. } => "DROP",
        Record::End { .. } => "END",
    }
}

/// Where the sound records of a file's tail end. `bytes` start at file offset `from`, the end of the last
/// checkpoint a manifest names; returns the block-aligned offset after the last complete checkpoint found in
/// them (`from` if none), and whether anything after that offset is torn or garbage rather than a clean end.
pub fn scan_tail(file: &str, bytes: &[u8], from: u64) -> (u64, bool) {
    let end = from + bytes.len() as u64;
    let align = |o: u64| o.div_ceil(LOG_BLOCK_BYTES as u64) * LOG_BLOCK_BYTES as u64;
    let mut reader = RecordReader::new(file, bytes, from);
    let mut good = from;
    let mut inside = false;
    while let Some(next) = reader.next_record() {
        match next {
            Ok((Record::Begin { .. }, _)) => inside = true,
            Ok((Record::End { .. }, after)) => {
                inside = false;
                good = after;
            }
            Ok(_) => {}
            Err(_) => {
                let aligned = align(good);
                return if aligned <= end { (aligned, end > aligned) } else { (good, true) };
            }
        }
    }
    let aligned = align(good);
    if aligned <= end {
        (aligned, inside || aligned < end)
    } else {
        (good, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// One operation of a generated checkpoint.
    #[derive(Debug, Clone)]
    enum Op {
        Put { job: u16, ns: i64, key: Vec<u8>, value: Vec<u8> },
        Delete { job: u16, ns: i64, key: Vec<u8> },
        Drop { job: u16, ns: i64 },
    }

    type Model = BTreeMap<(u16, i64, Vec<u8>), Vec<u8>>;

    fn op() -> impl Strategy<Value = Op> {
        let key = proptest::collection::vec(0u8..3, 0..3);
        prop_oneof![
            6 => (0u16..2, 0i64..3, key.clone(), proptest::collection::vec(any::<u8>(), 0..6))
                .prop_map(|(job, ns, key, value)| Op::Put { job, ns, key, value }),
            2 => (0u16..2, 0i64..3, key).prop_map(|(job, ns, key)| Op::Delete { job, ns, key }),
            1 => (0u16..2, 0i64..3).prop_map(|(job, ns)| Op::Drop { job, ns }),
        ]
    }

    /// Key group of a generated key (any function will do: the log only stores it).
    fn kg(key: &[u8]) -> u32 {
        key.iter().map(|b| u32::from(*b)).sum()
    }

    /// Encodes checkpoints into one "file" and applies them to the model; puts and deletes of a checkpoint
    /// are grouped by key group as the shard writes them, drops come first.
    fn encode(checkpoints: &[Vec<Op>], model: &mut Model) -> (Vec<u8>, Vec<u64>) {
        let mut file = Vec::new();
        let mut ends = Vec::new();
        for (i, ops) in checkpoints.iter().enumerate() {
            let epoch = i as u64 + 1;
            let mut enc = BlobEncoder::new(epoch, 0, if i == 0 { CheckpointKind::Base } else { CheckpointKind::Delta });
            // A checkpoint's net effect: drops, then the last operation per entry.
            let mut last: BTreeMap<(u32, u16, i64, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Drop { job, ns } => {
                        enc.drop_namespace(*job, *ns);
                        model.retain(|(j, n, _), _| !(j == job && n == ns));
                        last.retain(|(_, j, n, _), _| !(j == job && n == ns));
                    }
                    Op::Put { job, ns, key, value } => {
                        last.insert((kg(key), *job, *ns, key.clone()), Some(value.clone()));
                    }
                    Op::Delete { job, ns, key } => {
                        last.insert((kg(key), *job, *ns, key.clone()), None);
                    }
                }
            }
            for ((g, job, ns, key), v) in last {
                match v {
                    Some(v) => {
                        enc.put(job, g, ns, &key, |b| b.extend_from_slice(&v));
                        model.insert((job, ns, key), v);
                    }
                    None => {
                        enc.delete(job, g, ns, &key);
                        model.remove(&(job, ns, key));
                    }
                }
            }
            file.extend_from_slice(&enc.finish(epoch));
            ends.push(file.len() as u64);
        }
        (file, ends)
    }

    fn image_as_model(image: ShardImage) -> Model {
        image.into_entries().into_iter().map(|(job, _, ns, key, v)| ((job, ns, key.to_vec()), v.to_vec())).collect()
    }

    fn range(bytes: &[u8], to: u64) -> Vec<(SegmentRange, Vec<u8>)> {
        vec![(SegmentRange { file: "seg".into(), from: 0, to }, bytes[..to as usize].to_vec())]
    }

    proptest! {
        /// Replaying the log gives the model's state after every checkpoint.
        #[test]
        fn replay_matches_a_model(checkpoints in proptest::collection::vec(proptest::collection::vec(op(), 0..20), 1..6)) {
            let mut model = Model::new();
            let (file, ends) = encode(&checkpoints, &mut model);
            let image = replay(&range(&file, *ends.last().unwrap()), ends.len() as u64).unwrap();
            prop_assert_eq!(image.checkpoints, ends.len() as u64);
            prop_assert_eq!(image_as_model(image), model);
        }

        /// A flipped bit anywhere in the completed checkpoints is detected; nothing is applied.
        #[test]
        fn bit_flips_are_detected(checkpoints in proptest::collection::vec(proptest::collection::vec(op(), 1..10), 1..4),
                                  at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut model = Model::new();
            let (mut file, ends) = encode(&checkpoints, &mut model);
            let end = *ends.last().unwrap();
            let i = at.index(end as usize);
            file[i] ^= 1 << bit;
            prop_assert!(replay(&range(&file, end), ends.len() as u64).is_err(), "flip at byte {} bit {} accepted", i, bit);
        }

        /// A torn tail (the file cut anywhere inside the last checkpoint) is found by the tail scan, which
        /// keeps exactly the complete checkpoints before it.
        #[test]
        fn torn_tails_are_found(checkpoints in proptest::collection::vec(proptest::collection::vec(op(), 1..10), 2..5),
                                cut in any::<prop::sample::Index>()) {
            let mut model = Model::new();
            let (file, ends) = encode(&checkpoints, &mut model);
            let before = ends[ends.len() - 2];
            let last = *ends.last().unwrap();
            let cut = before + cut.index((last - before) as usize) as u64;
            let (good, torn) = scan_tail("seg", &file[before as usize..cut as usize], before);
            // Only a cut inside the last block's padding keeps the last checkpoint (its records are whole).
            if good != before {
                prop_assert!(cut > last - LOG_BLOCK_BYTES as u64 && good > cut - LOG_BLOCK_BYTES as u64);
            } else {
                prop_assert_eq!(torn, cut > before);
            }
            let (good, torn) = scan_tail("seg", &file[..last as usize], 0);
            prop_assert_eq!((good, torn), (last, false));
        }
    }

    /// Every amount of padding, down to 1 byte, reads back, also with the next checkpoint right after it:
    /// blobs of every length modulo the block size.
    #[test]
    fn every_padding_length_reads_back() {
        for value_len in 0..LOG_BLOCK_BYTES + 16 {
            let mut enc = BlobEncoder::new(1, 0, CheckpointKind::Base);
            enc.put(0, 0, 5, b"k", |b| b.resize(b.len() + value_len, 7));
            let mut file = enc.finish(1);
            let mut next = BlobEncoder::new(2, 0, CheckpointKind::Delta);
            next.put(0, 0, 5, b"j", |b| b.push(1));
            file.extend_from_slice(&next.finish(2));
            let image =
                replay(&range(&file, file.len() as u64), 2).unwrap_or_else(|e| panic!("value of {value_len}: {e}"));
            let entries = image.into_entries();
            assert_eq!(entries.len(), 2);
            assert!(entries.iter().any(|e| &*e.3 == b"k" && e.4.len() == value_len));
        }
    }

    #[test]
    fn a_delta_first_is_refused() {
        let enc = BlobEncoder::new(1, 0, CheckpointKind::Delta);
        let blob = enc.finish(1);
        let err = replay(&range(&blob, blob.len() as u64), 1).unwrap_err();
        assert!(err.what.contains("base"), "{err}");
    }

    #[test]
    fn the_manifest_epoch_must_be_the_last() {
        let blob = BlobEncoder::new(3, 0, CheckpointKind::Base).finish(3);
        assert!(replay(&range(&blob, blob.len() as u64), 4).is_err());
        assert!(replay(&range(&blob, blob.len() as u64), 3).is_ok());
    }
}
