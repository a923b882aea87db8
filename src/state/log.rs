//! The state log's format (version 2): how a checkpoint's state is framed on disk, and how it is read back.
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
//! Types (`state` is the [`StateId`]: job u16, node u16, table u16 — which state table of which operator of
//! which job the entries belong to):
//!
//! ```text
//! 1 BEGIN    epoch u64, shard u16, kind u8 (0 delta: changes since the previous checkpoint; 1 base: everything)
//! 2 ENTRIES  state, key_group u32, count u32, then count entries:
//!              op u8 (1 put, 2 delete, 3 put part), namespace i64, key_len u32, key,
//!              and for a put or a put part: value_len u32, value
//! 3 DROP     state, namespace i64: every entry of the namespace is deleted (a fired window's slice)
//! 4 END      epoch u64, records u32 (the records of this checkpoint, BEGIN and END included)
//! ```
//!
//! A value longer than [`ENTRY_VALUE_BYTES_MAX`] is written as consecutive "put part" entries of the same
//! key followed by a put with its last part (so no record ever exceeds what a reader accepts); readers join
//! them with a [`Reassembler`].
//!
//! Zero bytes pad each blob from its END record to the next block boundary. A checkpoint counts only if its
//! END is present and its record count matches. Entries are grouped by key group (one or more ENTRIES records
//! per key group and state table), so a restore can pick the key groups it owns. What a namespace and a value
//! mean belongs to the operator that wrote them: the log only stores bytes.
//!
//! Version 1 (before operators had ids) had no `node` and `table` fields; it is refused at recovery.

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
const OP_PUT_PART: u8 = 3;

/// Which state table an entry belongs to: table `table` of node (operator) `node` of job `job`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId {
    pub job: u16,
    pub node: u16,
    pub table: u16,
}

impl std::fmt::Display for StateId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job {} operator {} table {}", self.job, self.node, self.table)
    }
}

/// Longest value one entry holds; a longer one is split into parts. Far below [`RECORD_BYTES_MAX`], so a
/// record (at most [`ENTRIES_RECORD_BYTES_MAX`] of entries before the one that passes it) always fits what a
/// reader accepts.
pub const ENTRY_VALUE_BYTES_MAX: usize = 8 << 20;

/// Largest payload of one ENTRIES record before the encoder starts another for the same key group: bounds
/// what a reader must hold to check one checksum.
const ENTRIES_RECORD_BYTES_MAX: usize = 1 << 20;

/// Largest record a reader accepts: a larger length can only be corruption.
const RECORD_BYTES_MAX: usize = 64 << 20;

/// Longest key an entry may have: keys are group and join keys taken from rows, which are far smaller (a
/// row is at most `RECORD_BYTES_MAX` of the input, 1 MiB); with the largest value part and a full record
/// before it, a record stays within [`RECORD_BYTES_MAX`].
pub const ENTRY_KEY_BYTES_MAX: usize = 16 << 20;

const _: () = assert!(
    ENTRIES_RECORD_BYTES_MAX + ENTRY_VALUE_BYTES_MAX + ENTRY_KEY_BYTES_MAX + 64 < RECORD_BYTES_MAX,
    "a record of entries always fits what a reader accepts"
);

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
    /// The open ENTRIES record: its start in `buf`, state table, key group, and entry count.
    group: Option<(usize, StateId, u32, u32)>,
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
            // The count sits after the type byte, the state id and the key group.
            let c = at + HEADER_BYTES + 1 + STATE_ID_BYTES + 4;
            self.buf[c..c + 4].copy_from_slice(&count.to_le_bytes());
            self.close(at);
        }
    }

    /// Makes the open ENTRIES record the one of `state` and `key_group`.
    fn group_for(&mut self, state: StateId, key_group: u32) {
        match self.group {
            Some((at, s, kg, _)) if s == state && kg == key_group && self.buf.len() - at < ENTRIES_RECORD_BYTES_MAX => {
            }
            _ => {
                self.close_group();
                let at = self.open(TYPE_ENTRIES);
                put_state_id(&mut self.buf, state);
                self.buf.extend_from_slice(&key_group.to_le_bytes());
                self.buf.extend_from_slice(&0u32.to_le_bytes());
                self.group = Some((at, state, key_group, 0));
            }
        }
    }

    fn entry_header(&mut self, state: StateId, key_group: u32, op: u8, namespace: i64, key: &[u8]) {
        assert!(key.len() <= ENTRY_KEY_BYTES_MAX, "{state}: a state key of {} bytes", key.len());
        self.group_for(state, key_group);
        if let Some(g) = &mut self.group {
            g.3 += 1;
        }
        self.entries += 1;
        self.buf.push(op);
        self.buf.extend_from_slice(&namespace.to_le_bytes());
        self.buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
    }

    /// Sets an entry; `value` writes the value's bytes onto the end of the buffer it is given. A value longer
    /// than [`ENTRY_VALUE_BYTES_MAX`] is written in parts.
    pub fn put(
        &mut self,
        state: StateId,
        key_group: u32,
        namespace: i64,
        key: &[u8],
        value: impl FnOnce(&mut Vec<u8>),
    ) {
        let entries_before = self.entries;
        let group_before = self.group;
        let entry_at = self.buf.len();
        self.entry_header(state, key_group, OP_PUT, namespace, key);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        value(&mut self.buf);
        let len = self.buf.len() - len_at - 4;
        if len <= ENTRY_VALUE_BYTES_MAX {
            self.buf[len_at..len_at + 4].copy_from_slice(&(len as u32).to_le_bytes());
            return;
        }
        // Too long for one entry: take it back out and write it in parts.
        let whole = self.buf.split_off(len_at + 4);
        if group_before.is_some_and(|g| g.0 < entry_at) && self.group.is_some_and(|g| g.0 < entry_at) {
            self.buf.truncate(entry_at);
            self.group = group_before;
        } else {
            // The entry opened a record of its own (not yet closed, so not counted): drop its header too.
            self.buf.truncate(entry_at);
            self.group = None;
        }
        self.entries = entries_before;
        let parts: Vec<&[u8]> = whole.chunks(ENTRY_VALUE_BYTES_MAX).collect();
        for (i, part) in parts.iter().enumerate() {
            let op = if i + 1 == parts.len() { OP_PUT } else { OP_PUT_PART };
            self.entry_header(state, key_group, op, namespace, key);
            self.buf.extend_from_slice(&(part.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(part);
        }
    }

    /// Appends an ENTRIES record of `count` entries already encoded with [`encode_put`].
    pub fn put_encoded(&mut self, state: StateId, key_group: u32, count: u32, entries: &[u8]) {
        self.close_group();
        let at = self.open(TYPE_ENTRIES);
        put_state_id(&mut self.buf, state);
        self.buf.extend_from_slice(&key_group.to_le_bytes());
        self.buf.extend_from_slice(&count.to_le_bytes());
        self.buf.extend_from_slice(entries);
        self.close(at);
        self.entries += u64::from(count);
    }

    pub fn delete(&mut self, state: StateId, key_group: u32, namespace: i64, key: &[u8]) {
        self.entry_header(state, key_group, OP_DELETE, namespace, key);
    }

    /// Deletes every entry of a namespace of `state`.
    pub fn drop_namespace(&mut self, state: StateId, namespace: i64) {
        self.close_group();
        let at = self.open(TYPE_DROP);
        put_state_id(&mut self.buf, state);
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

/// Bytes of a [`StateId`] in a record.
const STATE_ID_BYTES: usize = 6;

fn put_state_id(buf: &mut Vec<u8>, s: StateId) {
    buf.extend_from_slice(&s.job.to_le_bytes());
    buf.extend_from_slice(&s.node.to_le_bytes());
    buf.extend_from_slice(&s.table.to_le_bytes());
}

/// Encodes one put entry (as in an ENTRIES record) onto `out`, for [`BlobEncoder::put_encoded`]. Returns false,
/// with nothing appended, when the value is longer than one entry may hold: put it with [`BlobEncoder::put`],
/// which writes it in parts.
#[must_use]
pub fn encode_put(out: &mut Vec<u8>, namespace: i64, key: &[u8], value: impl FnOnce(&mut Vec<u8>)) -> bool {
    let at = out.len();
    out.push(OP_PUT);
    out.extend_from_slice(&namespace.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    value(out);
    let len = out.len() - len_at - 4;
    if len > ENTRY_VALUE_BYTES_MAX || key.len() > ENTRY_KEY_BYTES_MAX {
        out.truncate(at);
        return false;
    }
    out[len_at..len_at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    true
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
    /// The value is a part of a longer one, continued by the next entry (see [`Reassembler`]).
    pub part: bool,
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
        OP_PUT | OP_PUT_PART => Some(f.bytes()?),
        OP_DELETE => None,
        o => return Err(format!("unknown entry operation {o}")),
    };
    Ok(Entry { namespace, key, value, part: op == OP_PUT_PART })
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Begin { epoch: u64, shard: u16, kind: CheckpointKind },
    Entries { state: StateId, key_group: u32, entries: Entries<'a> },
    Drop { state: StateId, namespace: i64 },
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
    fn state_id(&mut self) -> Result<StateId, String> {
        Ok(StateId { job: self.u16()?, node: self.u16()?, table: self.u16()? })
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
            let state = f.state_id()?;
            let key_group = f.u32()?;
            let count = f.u32()?;
            let raw = f.bytes;
            for _ in 0..count {
                read_entry(&mut f)?;
            }
            Record::Entries { state, key_group, entries: Entries { count, raw: &raw[..raw.len() - f.bytes.len()] } }
        }
        TYPE_DROP => Record::Drop { state: f.state_id()?, namespace: f.u64()? as i64 },
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

/// The state of one state table in one shard's log, after replay: namespace → key → (key group, value).
pub type Namespaces = Map<i64, Map<Box<[u8]>, (u32, Box<[u8]>)>>;

/// One entry of a replayed state: state table, key group, namespace, key, value.
pub type FlatEntry = (StateId, u32, i64, Box<[u8]>, Box<[u8]>);

/// Whose value a run of parts is: state table, key group, namespace, key.
type PartsOf = (StateId, u32, i64, Box<[u8]>);

/// Joins the parts of a value that was too long for one entry (see [`BlobEncoder::put`]): the parts of a
/// value are consecutive entries of one checkpoint, the last one a plain put.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// The parts so far: whose they are (state, key group, namespace, key) and their bytes.
    pending: Option<(PartsOf, Vec<u8>)>,
}

/// What an entry means once its parts are joined.
pub enum Joined<'e> {
    /// A part of a longer value: nothing to apply yet.
    Pending,
    Put(std::borrow::Cow<'e, [u8]>),
    Delete,
}

impl Reassembler {
    /// Takes the next entry of `state` in `key_group`; an error when parts are not followed by the rest of
    /// their value (damage).
    pub fn feed<'e>(&mut self, state: StateId, key_group: u32, e: &Entry<'e>) -> Result<Joined<'e>, String> {
        let same = |p: &(StateId, u32, i64, Box<[u8]>)| {
            p.0 == state && p.1 == key_group && p.2 == e.namespace && *p.3 == *e.key
        };
        match (self.pending.take(), e.value) {
            (Some((who, _)), _) if !same(&who) => {
                Err(format!("{}: a value in parts is cut off by an entry of another key", who.0))
            }
            (None, None) => Ok(Joined::Delete),
            (Some(_), None) => Err(format!("{state}: a value in parts is followed by a delete of its key")),
            (None, Some(v)) if !e.part => Ok(Joined::Put(std::borrow::Cow::Borrowed(v))),
            (pending, Some(v)) => {
                let (who, mut bytes) =
                    pending.unwrap_or_else(|| ((state, key_group, e.namespace, e.key.into()), Vec::new()));
                bytes.extend_from_slice(v);
                if e.part {
                    self.pending = Some((who, bytes));
                    Ok(Joined::Pending)
                } else {
                    Ok(Joined::Put(std::borrow::Cow::Owned(bytes)))
                }
            }
        }
    }

    /// At the end of a checkpoint: an error if a value's parts were never completed.
    pub fn finish(&mut self) -> Result<(), String> {
        match self.pending.take() {
            None => Ok(()),
            Some((who, _)) => Err(format!("{}: a value in parts ends without its last part", who.0)),
        }
    }
}

/// The state a shard's log holds at a checkpoint. While only a base has been replayed (the common case after
/// a compaction or a savepoint), its entries are kept as a plain list; the first delta turns them into maps.
#[derive(Debug, Default)]
pub struct ShardImage {
    tables: Map<StateId, Namespaces>,
    /// The base's entries, while no delta has followed it.
    flat: Option<Vec<FlatEntry>>,
    parts: Reassembler,
    /// Checkpoints replayed and bytes read.
    pub checkpoints: u64,
    pub bytes: u64,
}

impl ShardImage {
    fn begin(&mut self, kind: CheckpointKind) {
        match kind {
            CheckpointKind::Base => {
                self.tables.clear();
                self.flat = Some(Vec::new());
            }
            CheckpointKind::Delta => {
                let flat = self.flat.take().unwrap_or_default();
                if !flat.is_empty() {
                    tracing::debug!("replaying deltas over a base of {} entries", flat.len());
                }
                for (state, kg, ns, key, value) in flat {
                    self.tables.entry(state).or_default().entry(ns).or_default().insert(key, (kg, value));
                }
            }
        }
    }

    fn apply(&mut self, record: &Record<'_>) -> Result<(), String> {
        match record {
            Record::Entries { state, key_group, entries } => {
                for e in entries.iter() {
                    let value = match self.parts.feed(*state, *key_group, &e)? {
                        Joined::Pending => continue,
                        Joined::Put(v) => Some(v),
                        Joined::Delete => None,
                    };
                    if let Some(flat) = &mut self.flat {
                        // A base holds puts only, each key once.
                        if let Some(v) = value {
                            flat.push((*state, *key_group, e.namespace, e.key.into(), v.into()));
                        }
                        continue;
                    }
                    let table = self.tables.entry(*state).or_default();
                    match value {
                        Some(v) => {
                            table.entry(e.namespace).or_default().insert(e.key.into(), (*key_group, v.into()));
                        }
                        None => {
                            if let Some(ns) = table.get_mut(&e.namespace) {
                                ns.remove(e.key);
                                if ns.is_empty() {
                                    table.remove(&e.namespace);
                                }
                            }
                        }
                    }
                }
            }
            Record::Drop { state, namespace } => {
                if let Some(flat) = &mut self.flat {
                    flat.retain(|e| !(e.0 == *state && e.2 == *namespace));
                } else if let Some(t) = self.tables.get_mut(state) {
                    t.remove(namespace);
                }
            }
            Record::Begin { .. } | Record::End { .. } => {}
        }
        Ok(())
    }

    /// Every entry.
    pub fn into_entries(self) -> Vec<FlatEntry> {
        if let Some(flat) = self.flat {
            return flat;
        }
        let mut out = Vec::new();
        for (state, namespaces) in self.tables {
            for (ns, keys) in namespaces {
                for (key, (kg, value)) in keys {
                    out.push((state, kg, ns, key, value));
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
        for (offset, r) in records {
            image.apply(r).map_err(|e| (*offset, e))?;
        }
        image.parts.finish().map_err(|e| (records.last().map_or(0, |r| r.0), e))?;
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

    /// The state table of generated job `job`.
    /// (job, key group, namespace, key) of a state entry.
    type EntryKey = (u32, u16, i64, Vec<u8>);

    fn sid(job: u16) -> StateId {
        StateId { job, node: 3, table: job % 2 }
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
            let mut last: BTreeMap<EntryKey, Option<Vec<u8>>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Drop { job, ns } => {
                        enc.drop_namespace(sid(*job), *ns);
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
                        enc.put(sid(job), g, ns, &key, |b| b.extend_from_slice(&v));
                        model.insert((job, ns, key), v);
                    }
                    None => {
                        enc.delete(sid(job), g, ns, &key);
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
        image.into_entries().into_iter().map(|(s, _, ns, key, v)| ((s.job, ns, key.to_vec()), v.to_vec())).collect()
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
            enc.put(sid(0), 0, 5, b"k", |b| b.resize(b.len() + value_len, 7));
            let mut file = enc.finish(1);
            let mut next = BlobEncoder::new(2, 0, CheckpointKind::Delta);
            next.put(sid(0), 0, 5, b"j", |b| b.push(1));
            file.extend_from_slice(&next.finish(2));
            let image =
                replay(&range(&file, file.len() as u64), 2).unwrap_or_else(|e| panic!("value of {value_len}: {e}"));
            let entries = image.into_entries();
            assert_eq!(entries.len(), 2);
            assert!(entries.iter().any(|e| &*e.3 == b"k" && e.4.len() == value_len));
        }
    }

    /// A value longer than one entry may hold is written in parts, in records a reader accepts, and read back
    /// whole, between ordinary entries; a cut-off value is damage.
    #[test]
    fn long_values_are_written_in_parts_and_joined() {
        let long: Vec<u8> = (0..2 * ENTRY_VALUE_BYTES_MAX + 12345).map(|i| (i % 251) as u8).collect();
        let mut enc = BlobEncoder::new(1, 0, CheckpointKind::Base);
        enc.put(sid(0), 0, 5, b"a", |b| b.push(1));
        enc.put(sid(0), 0, 5, b"big", |b| b.extend_from_slice(&long));
        enc.put(sid(0), 0, 5, b"c", |b| b.push(3));
        assert_eq!(enc.entries(), 2 + 3, "the long value takes three entries");
        let blob = enc.finish(1);
        let mut reader = RecordReader::new("seg", &blob, 0);
        while let Some(r) = reader.next_record() {
            let (_, at) = r.expect("every record is within the reader's limit");
            assert!(at as usize <= blob.len());
        }
        let image = replay(&range(&blob, blob.len() as u64), 1).unwrap();
        let model = image_as_model(image);
        assert_eq!(model.len(), 3);
        assert_eq!(model[&(0, 5, b"big".to_vec())], long);
        assert_eq!(model[&(0, 5, b"c".to_vec())], vec![3]);
        let mut parts = Reassembler::default();
        let part = Entry { namespace: 5, key: b"big", value: Some(b"xy"), part: true };
        assert!(matches!(parts.feed(sid(0), 0, &part), Ok(Joined::Pending)));
        let other = Entry { namespace: 5, key: b"other", value: Some(b"z"), part: false };
        assert!(parts.feed(sid(0), 0, &other).is_err(), "a part followed by another key");
        assert!(matches!(parts.feed(sid(0), 0, &part), Ok(Joined::Pending)));
        assert!(parts.finish().is_err(), "a value without its last part");
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
