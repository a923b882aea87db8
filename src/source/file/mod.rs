//! The `file` source: JSON lines from a file, or from every file of a directory in name order; one split per
//! file. Reads go through io_uring (glommio's buffered file streams), so a shard never blocks on the disk.
//!
//! Every line is decoded and validated once, here. A bad line (not JSON, wrong types, over the record size
//! limit) is reported to [`BadInput`] with the file and line number and skipped; good lines around it are
//! unaffected.

use std::path::{Path, PathBuf};

use glommio::io::BufferedFile;

use super::{BadInput, SourceError};
use crate::constants::{FILE_READ_BUFFER_BYTES, RECORD_BYTES_MAX};
use crate::record::json::JsonDecoder;
use crate::record::{BatchBuilder, Schema};

/// The files a `path` names: itself, or a directory's regular files (not hidden ones) in name order.
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| format!("cannot list {}: {e}", path.display()))? {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// One file being read. Its position (for checkpoints) is the byte offset just past the last whole line it
/// handed out or skipped, and that line's number: a restored split re-reads from there.
pub struct FileSplit {
    path: PathBuf,
    file: Option<BufferedFile>,
    /// File offset of the next read.
    file_pos: u64,
    /// File offset just past the last line handled.
    consumed: u64,
    decoder: JsonDecoder,
    chunk: Vec<u8>,
    chunk_pos: usize,
    chunk_len: usize,
    /// The start of a line whose end is not read yet.
    partial: Vec<u8>,
    /// The current line is over the size limit: its bytes are dropped up to the next newline.
    oversized: bool,
    line_no: u64,
    eof: bool,
}

impl FileSplit {
    pub fn new(path: PathBuf, schema: Schema) -> FileSplit {
        FileSplit {
            path,
            file: None,
            file_pos: 0,
            consumed: 0,
            decoder: JsonDecoder::new(schema),
            chunk: Vec::new(),
            chunk_pos: 0,
            chunk_len: 0,
            partial: Vec::new(),
            oversized: false,
            line_no: 0,
            eof: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a restored split resumes: (byte offset, lines read).
    pub fn position(&self) -> (u64, u64) {
        (self.consumed, self.line_no)
    }

    /// Continues from a checkpointed position (before the first read).
    pub fn resume(&mut self, offset: u64, line: u64) {
        self.file_pos = offset;
        self.consumed = offset;
        self.line_no = line;
    }

    pub fn is_finished(&self) -> bool {
        self.eof && self.chunk_pos == self.chunk_len && self.partial.is_empty() && !self.oversized
    }

    fn error(&self, e: impl std::fmt::Display) -> SourceError {
        SourceError { retryable: false, message: format!("{}: {e}", self.path.display()) }
    }

    async fn fill(&mut self) -> Result<(), SourceError> {
        if self.file.is_none() {
            let file =
                BufferedFile::open(&self.path).await.map_err(|e| self.error(format_args!("cannot open: {e}")))?;
            self.file = Some(file);
            self.chunk.resize(FILE_READ_BUFFER_BYTES, 0);
        }
        let file = self.file.as_ref().expect("opened above");
        let read = file.read_at(self.file_pos, FILE_READ_BUFFER_BYTES).await.map_err(|e| SourceError {
            retryable: false,
            message: format!("{}: read failed at byte {}: {e}", self.path.display(), self.file_pos),
        })?;
        let n = read.len();
        self.chunk[..n].copy_from_slice(&read);
        self.file_pos += n as u64;
        self.chunk_pos = 0;
        self.chunk_len = n;
        if n == 0 {
            self.eof = true;
            if let Some(f) = self.file.take() {
                let _ = f.close().await;
            }
        }
        Ok(())
    }

    /// File offset of `chunk[i]`.
    fn offset_of(&self, i: usize) -> u64 {
        self.file_pos - self.chunk_len as u64 + i as u64
    }

    /// Decodes up to `max_rows` good lines into `out`; returns how many. Zero with `is_finished()` means
    /// the file is done.
    pub async fn read(
        &mut self,
        out: &mut BatchBuilder,
        max_rows: usize,
        bad: &mut BadInput,
    ) -> Result<usize, SourceError> {
        let mut rows = 0;
        while rows < max_rows {
            if self.chunk_pos == self.chunk_len {
                if self.eof {
                    // A last line without a newline is still a line.
                    if !self.partial.is_empty() || self.oversized {
                        let line = std::mem::take(&mut self.partial);
                        rows += self.line(&line, out, bad);
                        self.consumed = self.file_pos;
                    }
                    break;
                }
                self.fill().await?;
                continue;
            }
            let avail = &self.chunk[self.chunk_pos..self.chunk_len];
            match memchr_newline(avail) {
                Some(i) => {
                    self.chunk_pos += i + 1;
                    self.consumed = self.offset_of(self.chunk_pos);
                    let start = self.chunk_pos - i - 1;
                    if self.partial.is_empty() && !self.oversized {
                        // The common case: the whole line is in the chunk; decode it in place.
                        let line = std::mem::take(&mut self.chunk);
                        rows += self.line(&line[start..start + i], out, bad);
                        self.chunk = line;
                    } else {
                        self.append_partial(start, start + i);
                        let line = std::mem::take(&mut self.partial);
                        rows += self.line(&line, out, bad);
                        self.partial = line;
                        self.partial.clear();
                    }
                }
                None => {
                    let (start, end) = (self.chunk_pos, self.chunk_len);
                    self.append_partial(start, end);
                    self.chunk_pos = self.chunk_len;
                }
            }
        }
        Ok(rows)
    }

    fn append_partial(&mut self, start: usize, end: usize) {
        if self.oversized {
            return;
        }
        if self.partial.len() + (end - start) > RECORD_BYTES_MAX {
            self.oversized = true;
            self.partial.clear();
            return;
        }
        self.partial.extend_from_slice(&self.chunk[start..end]);
    }

    /// Handles one complete line; returns 1 if it became a row.
    fn line(&mut self, line: &[u8], out: &mut BatchBuilder, bad: &mut BadInput) -> usize {
        self.line_no += 1;
        let file = self.path.display().to_string();
        if std::mem::take(&mut self.oversized) || line.len() > RECORD_BYTES_MAX {
            bad.report(
                &file,
                self.line_no,
                &format!("the line is longer than the {RECORD_BYTES_MAX}-byte record limit"),
                None,
            );
            return 0;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return 0;
        }
        match self.decoder.decode_into(line, out) {
            Ok(()) => 1,
            Err(e) => {
                bad.report(&file, self.line_no, &e.0, Some(line));
                0
            }
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}
