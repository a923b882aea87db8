//! Recovery: from the newest complete checkpoint in a state directory to what each shard restores.
//!
//! Runs on the control thread before the shards start. The newest manifest is read and its binding compared
//! with the current config; every shard's log ranges are read and replayed (each record checked: corruption
//! bytes after the last complete checkpoint (a torn write, or a checkpoint that never completed) are reported
//! and cut off. The shards then replay the logs themselves, in parallel (`shard::restore`), each the key
//! groups it owns: they may be more or fewer than when the checkpoint was taken.

use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use super::manifest::{list_manifests, read_manifest, Binding, Manifest, MANIFEST_DIR};
use super::{JobRestore, LogToRestore, ShardRestore};
use crate::shard::routing::RoutingTable;
use crate::state::log::{scan_tail, SegmentRange};
use crate::state::{parse_segment_name, sync_dir, LOG_DIR};

/// Why a recovery cannot proceed.
#[derive(Debug)]
pub enum RecoveryError {
    /// The checkpoint does not fit the current config (exit 2: the config must change, or the state go).
    Binding(String),
    /// The state is unreadable or damaged (exit 1).
    Fatal(String),
}

/// A checkpoint ready to restore.
pub struct Recovered {
    pub manifest: Manifest,
    /// Per new shard.
    pub shards: Vec<ShardRestore>,
}

/// Reads a range of a segment file.
pub fn read_range(dir: &Path, r: &SegmentRange) -> Result<Vec<u8>, String> {
    let path = dir.join(&r.file);
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
    let to = r.to.min(len);
    let mut buf = vec![0; to.saturating_sub(r.from) as usize];
    file.read_exact_at(&mut buf, r.from).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(buf)
}

/// Cuts off what follows the last complete checkpoint of each shard's log, and deletes the shard's later
/// segments: they hold only checkpoints that never completed.
fn truncate_tails(log_dir: &Path, m: &Manifest) -> Result<(), String> {
    for shard in &m.shards {
        let Some(last) = shard.log.last() else { continue };
        let path = log_dir.join(&last.file);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
        if len > last.to {
            let mut tail = Vec::new();
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(last.to))
                .and_then(|_| file.read_to_end(&mut tail))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let (_, torn) = scan_tail(&last.file, &tail, last.to);
            let why = if torn { "a torn or unfinished write" } else { "a checkpoint that never completed" };
            tracing::warn!(
                "{}: discarding {} bytes after byte {} ({why}; the newest complete checkpoint ends there)",
                path.display(),
                len - last.to,
                last.to
            );
            file.set_len(last.to)
                .and_then(|_| file.sync_all())
                .map_err(|e| format!("cannot truncate {}: {e}", path.display()))?;
        }
        let (shard_idx, seg) = parse_segment_name(&last.file)
            .ok_or_else(|| format!("the manifest names {}, which is not a log segment name", last.file))?;
        let entries = std::fs::read_dir(log_dir).map_err(|e| format!("cannot list {}: {e}", log_dir.display()))?;
        for entry in entries.flatten() {
            if let Some((s, n)) = parse_segment_name(&entry.file_name().to_string_lossy()) {
                if s == shard_idx && n > seg {
                    tracing::warn!(
                        "{}: deleting a segment of a checkpoint that never completed",
                        entry.path().display()
                    );
                    std::fs::remove_file(entry.path())
                        .map_err(|e| format!("cannot delete {}: {e}", entry.path().display()))?;
                }
            }
        }
    }
    sync_dir(log_dir)
}

/// Refuses a manifest of another format version (exit 2: the state must go, or another release restore it).
fn check_format(dir: &Path, epoch: u64) -> Result<(), RecoveryError> {
    let path = dir.join(super::manifest::manifest_name(epoch));
    let text =
        std::fs::read(&path).map_err(|e| RecoveryError::Fatal(format!("cannot read {}: {e}", path.display())))?;
    match super::manifest::format_version_of(&text) {
        Some(v) if v != u64::from(super::manifest::FORMAT_VERSION) => {
            Err(RecoveryError::Binding(super::manifest::format_refusal(&path.display().to_string(), v)))
        }
        _ => Ok(()),
    }
}

/// Refuses a checkpoint whose binding differs from the current config's: `what` introduces the list of
/// differences, `advice` follows it.
fn check_binding(
    m: &Manifest,
    binding: &Binding,
    what: impl FnOnce() -> String,
    advice: &str,
) -> Result<(), RecoveryError> {
    let diffs = m.binding.differences(binding);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(RecoveryError::Binding(format!("{}: {}{advice}", what(), diffs.join("; "))))
}

/// The newest complete checkpoint of `state_dir`, if any, restored for `n_shards` shards routed by
/// `routing`; `binding` is the current config's.
pub fn recover(
    state_dir: &Path,
    binding: &Binding,
    routing: &RoutingTable,
    n_shards: usize,
) -> Result<Option<Recovered>, RecoveryError> {
    let started = Instant::now();
    let dir = state_dir.join(MANIFEST_DIR);
    let epochs = list_manifests(&dir).map_err(RecoveryError::Fatal)?;
    let Some(&epoch) = epochs.first() else { return Ok(None) };
    check_format(&dir, epoch)?;
    let manifest = read_manifest(&dir, epoch).map_err(RecoveryError::Fatal)?;
    check_binding(
        &manifest,
        binding,
        || format!("{} holds checkpoint {epoch} of a job whose config differs", state_dir.display()),
        ". Restore with the config it was taken with, or start from an empty runtime.state_dir",
    )?;
    restore_manifest(state_dir, manifest, routing, n_shards, started, true).map(Some)
}

/// The checkpoint of the savepoint in `dir` (see `savepoint.rs`), restored for `n_shards` shards.
pub fn recover_savepoint(
    dir: &Path,
    binding: &Binding,
    routing: &RoutingTable,
    n_shards: usize,
) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    let manifests = dir.join(MANIFEST_DIR);
    let epochs = list_manifests(&manifests).map_err(RecoveryError::Fatal)?;
    let [epoch] = epochs[..] else {
        return Err(RecoveryError::Fatal(format!(
            "{} is not a savepoint: it must hold exactly one manifest in {MANIFEST_DIR}/, it holds {}",
            dir.display(),
            epochs.len()
        )));
    };
    check_format(&manifests, epoch)?;
    let manifest = read_manifest(&manifests, epoch).map_err(RecoveryError::Fatal)?;
    check_binding(
        &manifest,
        binding,
        || format!("savepoint {} was taken from a job whose config differs", dir.display()),
        "",
    )?;
    restore_manifest(dir, manifest, routing, n_shards, started, false)
}

/// Restores from a manifest whose log lives under `state_dir` (a state directory or a savepoint);
/// `repair` cuts torn tails (never done to a savepoint).
pub fn restore_manifest(
    state_dir: &Path,
    manifest: Manifest,
    routing: &RoutingTable,
    n_shards: usize,
    started: Instant,
    repair: bool,
) -> Result<Recovered, RecoveryError> {
    let log_dir = state_dir.join(LOG_DIR);
    if repair {
        truncate_tails(&log_dir, &manifest).map_err(RecoveryError::Fatal)?;
    }
    let key_groups = routing.key_groups() as usize;
    let n_jobs = manifest.binding.jobs.len();
    // Per job, per stateful operator, per key group: the watermark the instance owning it had fired up to.
    let mut floors: Vec<Vec<(u16, Vec<i64>)>> = vec![Vec::new(); n_jobs];
    for shard in &manifest.shards {
        for w in &shard.watermarks {
            let Some(job) = floors.get_mut(w.job as usize) else { continue };
            let at = match job.iter().position(|(n, _)| *n == w.node) {
                Some(at) => at,
                None => {
                    job.push((w.node, vec![i64::MIN; key_groups]));
                    job.len() - 1
                }
            };
            for &kg in &shard.key_groups {
                if let Some(f) = job[at].1.get_mut(kg as usize) {
                    *f = w.watermark;
                }
            }
        }
    }
    for shard in &manifest.shards {
        if let Some(kg) = shard.key_groups.iter().find(|kg| **kg as usize >= key_groups) {
            return Err(RecoveryError::Fatal(format!(
                "checkpoint {}: shard {} owned key group {kg}, but the checkpoint has {key_groups} key groups",
                manifest.epoch, shard.shard
            )));
        }
    }
    let log = Arc::new(LogToRestore {
        epoch: manifest.epoch,
        log_dir,
        shards: manifest.shards.clone(),
        from: state_dir.to_path_buf(),
        started,
        pending: AtomicUsize::new(n_shards),
        entries: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let shards = (0..n_shards)
        .map(|_| ShardRestore {
            epoch: manifest.epoch,
            jobs: (0..n_jobs)
                .map(|job| JobRestore {
                    floors: floors[job].clone(),
                    sources: manifest.sources.get(job).cloned().unwrap_or_default(),
                })
                .collect(),
            log: log.clone(),
        })
        .collect();
    Ok(Recovered { manifest, shards })
}
