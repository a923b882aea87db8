//! A shard's log writer: appends checkpoint blobs to segment files through glommio's DMA files (io_uring,
//! O_DIRECT, block-aligned buffers) and syncs them.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use super::log::{CheckpointKind, SegmentRange, LOG_BLOCK_BYTES};
use super::{parse_segment_name, segment_name};
use crate::constants::{STATE_COMPACT_MIN_BYTES, STATE_SEGMENT_BYTES_MAX};

struct Segment {
    file: Rc<DmaFile>,
    name: String,
    /// Where the next blob goes: always a multiple of the block size.
    pos: u64,
}

/// Appends one shard's checkpoints. One append at a time: the shard starts the next checkpoint's write only
/// after the previous one was acknowledged.
pub struct LogWriter {
    dir: PathBuf,
    shard: u16,
    next_seg: u64,
    current: Option<Segment>,
    /// The log from the last base to the end of the last checkpoint written: what a manifest must name.
    since_base: Vec<SegmentRange>,
    base_bytes: u64,
    delta_bytes: u64,
}

impl LogWriter {
    /// A writer for shard `shard` in `dir` (created if missing); its first segment is numbered after every
    /// segment of that shard already there, so nothing an earlier run wrote is touched.
    pub fn new(dir: &Path, shard: u16) -> Result<LogWriter, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut next_seg = 0;
        for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            if let Some((s, seg)) = parse_segment_name(&entry.file_name().to_string_lossy()) {
                if s == shard {
                    next_seg = next_seg.max(seg + 1);
                }
            }
        }
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            shard,
            next_seg,
            current: None,
            since_base: Vec::new(),
            base_bytes: 0,
            delta_bytes: 0,
        })
    }

    /// Whether the next checkpoint should be a base: the first of a run (what was restored is not in this
    /// run's log yet), or once the deltas since the last base outgrow it (so replay reads at most about twice
    /// the live state, and old segments can go).
    pub fn wants_base(&self) -> bool {
        self.since_base.is_empty() || self.delta_bytes > self.base_bytes.max(STATE_COMPACT_MIN_BYTES)
    }

    fn error(&self, what: &str, name: &str, e: impl std::fmt::Display) -> String {
        format!("state log: cannot {what} {}: {e}", self.dir.join(name).display())
    }

    async fn open_segment(&mut self) -> Result<(), String> {
        let name = segment_name(self.shard, self.next_seg);
        self.next_seg += 1;
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| self.error("create", &name, e))?;
        // The new file's directory entry must be durable before a manifest names it.
        super::sync_dir_async(&self.dir).await.map_err(|e| format!("state log: {e}"))?;
        if let Some(old) = self.current.take() {
            if let Ok(file) = Rc::try_unwrap(old.file) {
                // Its data is synced; a failed close loses nothing.
                let _ = file.close().await;
            }
        }
        self.current = Some(Segment { file: Rc::new(file), name, pos: 0 });
        Ok(())
    }

    /// Appends a blob (a whole number of blocks) and syncs it; returns the log a manifest must name for this
    /// shard (from the last base through this blob).
    pub async fn append(&mut self, blob: &[u8], kind: CheckpointKind) -> Result<Vec<SegmentRange>, String> {
        debug_assert_eq!(blob.len() % LOG_BLOCK_BYTES, 0);
        let roll = match &self.current {
            None => true,
            Some(s) => s.pos > 0 && s.pos + blob.len() as u64 > STATE_SEGMENT_BYTES_MAX,
        };
        if roll {
            self.open_segment().await?;
        }
        let seg = self.current.as_mut().expect("opened above");
        let from = seg.pos;
        let mut written = 0;
        while written < blob.len() {
            let rest = &blob[written..];
            let mut buf = seg.file.alloc_dma_buffer(rest.len());
            buf.as_bytes_mut().copy_from_slice(rest);
            let n = seg
                .file
                .write_at(buf, seg.pos)
                .await
                .map_err(|e| format!("state log: cannot write {}: {e}", self.dir.join(&seg.name).display()))?;
            if n == 0 || n % LOG_BLOCK_BYTES != 0 {
                return Err(format!("state log: short write ({n} bytes) to {}", self.dir.join(&seg.name).display()));
            }
            written += n;
            seg.pos += n as u64;
        }
        seg.file
            .fdatasync()
            .await
            .map_err(|e| format!("state log: cannot sync {}: {e}", self.dir.join(&seg.name).display()))?;
        let range = SegmentRange { file: seg.name.clone(), from, to: seg.pos };
        match kind {
            CheckpointKind::Base => {
                self.since_base = vec![range];
                self.base_bytes = blob.len() as u64;
                self.delta_bytes = 0;
            }
            CheckpointKind::Delta => {
                self.delta_bytes += blob.len() as u64;
                match self.since_base.last_mut() {
                    Some(last) if last.file == range.file && last.to == range.from => last.to = range.to,
                    _ => self.since_base.push(range),
                }
            }
        }
        Ok(self.since_base.clone())
    }
}
