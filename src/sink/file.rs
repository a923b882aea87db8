//! The file sink's writer: JSON lines into hidden in-progress part files, renamed into view when closed —
//! or, with checkpoints, when the checkpoint of their epoch completes (two-phase commit).
//!
//! Part names: `part-<writer>-<shard>-<seq>.json` without checkpoints; `part-<writer>-<shard>-e<epoch>-<seq>.json`
//! with them, where `<epoch>` is the checkpoint that commits the part. Hidden parts are `.<name>.inprogress`.
//! A part of epoch N holds rows produced after barrier N-1 and before barrier N; at barrier N it is closed
//! and synced (before the shard acknowledges), and renamed into view once checkpoint N is complete. At
//! recovery from checkpoint N ([`settle_parts`]), hidden parts of epochs up to N are committed (they were
//! synced before N completed; a crash came between the manifest and the rename) and later ones deleted.

use std::path::{Path, PathBuf};

use glommio::io::BufferedFile;

use super::SinkError;
use crate::constants::{FILE_SINK_BUFFER_BYTES, FILE_SINK_PART_BYTES_MAX};
use crate::record::json::{ChangeEncoder, ChangeMode};
use crate::record::{BatchView, Schema};

/// An open part file. Written with positioned writes (`write_at`), not glommio's stream writer: that one
/// panics when its task is polled before its write completes, and a shard's task can be woken early by a
/// doorbell ring that raced with its parking.
struct OpenPart {
    file: BufferedFile,
    hidden: PathBuf,
    visible: PathBuf,
    bytes: u64,
}

impl OpenPart {
    async fn create(hidden: PathBuf, visible: PathBuf) -> Result<OpenPart, SinkError> {
        let file = BufferedFile::create(&hidden).await.map_err(|e| error("create", &hidden, e))?;
        Ok(OpenPart { file, hidden, visible, bytes: 0 })
    }

    /// Appends all of `buf`.
    async fn append(&mut self, mut buf: Vec<u8>) -> Result<(), SinkError> {
        while !buf.is_empty() {
            let n = self.file.write_at(buf.clone(), self.bytes).await.map_err(|e| error("write", &self.hidden, e))?;
            if n == 0 {
                return Err(error("write", &self.hidden, "the write made no progress"));
            }
            self.bytes += n as u64;
            buf.drain(..n);
        }
        Ok(())
    }
}

/// A closed part waiting for its epoch's checkpoint.
struct PendingPart {
    epoch: u64,
    hidden: PathBuf,
    visible: PathBuf,
}

pub struct FileSinkWriter {
    dir: PathBuf,
    /// `<writer>-<shard>`: unique per job (or dead-letter source) and shard, so writers never collide.
    prefix: String,
    encoder: ChangeEncoder,
    buf: Vec<u8>,
    part: Option<OpenPart>,
    next_seq: u64,
    /// With checkpoints: the epoch that will commit what is written now.
    epoch: Option<u64>,
    pending: Vec<PendingPart>,
}

fn error(what: &str, path: &Path, e: impl std::fmt::Display) -> SinkError {
    SinkError { retryable: false, message: format!("file sink: cannot {what} {}: {e}", path.display()) }
}

/// Closes a part: writes what is buffered for it, syncs it, and renames it into view unless `publish` is
/// false (checkpointed parts wait for their epoch).
async fn close_part(mut part: OpenPart, tail: Vec<u8>, publish: bool) -> Result<(), SinkError> {
    part.append(tail).await?;
    part.file.fdatasync().await.map_err(|e| error("sync", &part.hidden, e))?;
    part.file.close().await.map_err(|e| error("close", &part.hidden, e))?;
    if publish {
        glommio::io::rename(&part.hidden, &part.visible).await.map_err(|e| error("publish", &part.visible, e))?;
    }
    Ok(())
}

impl FileSinkWriter {
    /// `epoch`: the first epoch of the run when checkpoints are on, `None` otherwise.
    pub fn new(
        dir: &Path,
        writer: &str,
        shard: usize,
        schema: &Schema,
        mode: ChangeMode,
        epoch: Option<u64>,
    ) -> FileSinkWriter {
        FileSinkWriter {
            dir: dir.to_path_buf(),
            prefix: format!("{writer}-{shard}"),
            encoder: ChangeEncoder::new(schema, mode),
            buf: Vec::with_capacity(FILE_SINK_BUFFER_BYTES),
            part: None,
            next_seq: 0,
            epoch,
            pending: Vec::new(),
        }
    }

    pub async fn write(&mut self, view: &BatchView<'_>) -> Result<(), SinkError> {
        for row in 0..view.n_rows() {
            self.encoder.encode(view, row, &mut self.buf);
            if self.buf.len() >= FILE_SINK_BUFFER_BYTES {
                self.write_buffer().await?;
            }
        }
        Ok(())
    }

    async fn write_buffer(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.part.is_none() {
            let name = match self.epoch {
                Some(e) => format!("part-{}-e{e:010}-{:06}.json", self.prefix, self.next_seq),
                None => format!("part-{}-{:06}.json", self.prefix, self.next_seq),
            };
            self.next_seq += 1;
            let visible = self.dir.join(&name);
            let hidden = self.dir.join(format!(".{name}.inprogress"));
            self.part = Some(OpenPart::create(hidden, visible).await?);
        }
        let part = self.part.as_mut().expect("opened above");
        let buf = std::mem::replace(&mut self.buf, Vec::with_capacity(FILE_SINK_BUFFER_BYTES));
        part.append(buf).await?;
        if part.bytes >= FILE_SINK_PART_BYTES_MAX {
            let part = self.part.take().expect("checked above");
            self.finish_part(part, Vec::new()).await?;
        }
        Ok(())
    }

    /// Closes a part now: published at once without checkpoints, pending its epoch with them.
    async fn finish_part(&mut self, part: OpenPart, tail: Vec<u8>) -> Result<(), SinkError> {
        match self.epoch {
            None => close_part(part, tail, true).await,
            Some(epoch) => {
                self.pending.push(PendingPart { epoch, hidden: part.hidden.clone(), visible: part.visible.clone() });
                close_part(part, tail, false).await
            }
        }
    }

    /// Barrier `epoch`: what was written so far belongs to it. Returns the work that makes it durable
    /// (write, sync), to be awaited before the shard acknowledges; rows written from now on belong to the
    /// next epoch.
    pub fn roll(&mut self, epoch: u64) -> Option<impl std::future::Future<Output = Result<(), SinkError>> + 'static> {
        let current = self.epoch.replace(epoch + 1)?;
        debug_assert_eq!(current, epoch);
        self.encoder.finish(&mut self.buf);
        let tail = std::mem::take(&mut self.buf);
        let part = match self.part.take() {
            Some(p) => p,
            None if tail.is_empty() => return None,
            None => {
                // Rows buffered but no part yet: open one for them synchronously below.
                let name = format!("part-{}-e{epoch:010}-{:06}.json", self.prefix, self.next_seq);
                self.next_seq += 1;
                let visible = self.dir.join(&name);
                let hidden = self.dir.join(format!(".{name}.inprogress"));
                self.pending.push(PendingPart { epoch, hidden: hidden.clone(), visible: visible.clone() });
                return Some(futures_lite::future::FutureExt::boxed_local(async move {
                    let part = OpenPart::create(hidden, visible).await?;
                    close_part(part, tail, false).await
                }));
            }
        };
        self.pending.push(PendingPart { epoch, hidden: part.hidden.clone(), visible: part.visible.clone() });
        Some(futures_lite::future::FutureExt::boxed_local(close_part(part, tail, false)))
    }

    /// Checkpoint `epoch` is complete: parts of it and earlier epochs become visible.
    pub async fn commit(&mut self, epoch: u64) -> Result<(), SinkError> {
        let mut renamed = false;
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            if p.epoch <= epoch {
                glommio::io::rename(&p.hidden, &p.visible).await.map_err(|e| error("publish", &p.visible, e))?;
                renamed = true;
            } else {
                keep.push(p);
            }
        }
        self.pending = keep;
        if renamed {
            crate::state::sync_dir_async(&self.dir)
                .await
                .map_err(|message| SinkError { retryable: false, message: format!("file sink: {message}") })?;
        }
        Ok(())
    }

    /// Makes everything written so far visible and releases the writer (without checkpoints; with them,
    /// everything was rolled and committed by the final checkpoint).
    pub async fn close(mut self) -> Result<(), SinkError> {
        if self.epoch.is_some() {
            return Ok(());
        }
        self.encoder.finish(&mut self.buf);
        self.write_buffer().await?;
        match self.part.take() {
            Some(part) => close_part(part, Vec::new(), true).await,
            None => Ok(()),
        }
    }
}

/// The epoch of a checkpointed part file name of one of `writers` (`part-<writer>-<shard>-e<epoch>-<seq>.json`,
/// hidden or not), and whether it is hidden.
fn part_epoch(name: &str, writers: &[String]) -> Option<(u64, bool)> {
    let (hidden, name) = match name.strip_prefix('.').and_then(|n| n.strip_suffix(".inprogress")) {
        Some(n) => (true, n),
        None => (false, name),
    };
    let rest = name.strip_prefix("part-")?.strip_suffix(".json")?;
    writers.iter().find_map(|w| {
        let rest = rest.strip_prefix(w.as_str())?.strip_prefix('-')?;
        let (shard, rest) = rest.split_once('-')?;
        shard.parse::<u32>().ok()?;
        let (epoch, seq) = rest.strip_prefix('e')?.split_once('-')?;
        seq.parse::<u64>().ok()?;
        Some((epoch.parse().ok()?, hidden))
    })
}

/// Bytes in the hidden (not yet committed) part files of a sink directory.
pub fn uncommitted_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') && name.ends_with(".inprogress")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Recovery from checkpoint `epoch`: commits the hidden parts of `writers` in `dir` of epochs up to it and
/// deletes later ones. Returns (committed, deleted).
pub fn settle_parts(dir: &Path, writers: &[String], epoch: u64) -> Result<(usize, usize), String> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
        Ok(entries) => entries,
    };
    let (mut committed, mut deleted) = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((e, true)) = part_epoch(&name, writers) else { continue };
        let path = entry.path();
        if e <= epoch {
            let visible = dir.join(name.trim_start_matches('.').trim_end_matches(".inprogress"));
            std::fs::rename(&path, &visible).map_err(|err| format!("cannot commit {}: {err}", path.display()))?;
            committed += 1;
        } else {
            std::fs::remove_file(&path).map_err(|err| format!("cannot delete {}: {err}", path.display()))?;
            deleted += 1;
        }
    }
    if committed + deleted > 0 {
        crate::state::sync_dir(dir)?;
    }
    Ok((committed, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_carry_their_epoch() {
        let w = vec!["job".to_string(), "deadletter-job".to_string()];
        assert_eq!(part_epoch(".part-job-1-e0000000007-000003.json.inprogress", &w), Some((7, true)));
        assert_eq!(part_epoch("part-job-0-e0000000012-000000.json", &w), Some((12, false)));
        assert_eq!(part_epoch(".part-deadletter-job-0-e0000000002-000000.json.inprogress", &w), Some((2, true)));
        assert_eq!(part_epoch("part-job-0-000000.json", &w), None);
        assert_eq!(part_epoch(".part-other-0-e0000000002-000000.json.inprogress", &w), None);
    }

    #[test]
    fn settling_commits_old_epochs_and_deletes_new_ones() {
        let dir = std::env::temp_dir().join(format!("shardflow-settle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            ".part-j-0-e0000000003-000000.json.inprogress",
            ".part-j-1-e0000000004-000001.json.inprogress",
            ".part-j-0-e0000000005-000002.json.inprogress",
            "part-j-0-e0000000002-000000.json",
            ".part-x-0-e0000000009-000000.json.inprogress",
        ] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        let got = settle_parts(&dir, &["j".to_string()], 4).unwrap();
        assert_eq!(got, (2, 1));
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".part-x-0-e0000000009-000000.json.inprogress",
                "part-j-0-e0000000002-000000.json",
                "part-j-0-e0000000003-000000.json",
                "part-j-1-e0000000004-000001.json",
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
