//! Checkpoint manifests: the one small file that makes a checkpoint complete.
//!
//! `checkpoints/chk-<epoch>.json` (JSON, written to a temporary name, synced, renamed into place, and the
//! directory synced: a manifest is either wholly there or not at all). It names, per shard, the log ranges to
//! replay (a base and the deltas after it), the key groups the shard owned and its operators' watermarks; per
//! job, the position of every source split; and the *binding*: what a restored state only makes sense with
//! (format version, key group count, each job's source schema and state layout).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::SplitState;
use crate::state::log::SegmentRange;
use crate::state::sync_dir;

/// Version of the manifest and log formats; a different one is refused at recovery. Version 2: operators of
/// a job's DAG have ids in the log and the manifest (version 1 knew one window operator per job).
pub const FORMAT_VERSION: u32 = 2;

/// Directory of the manifests under the state directory.
pub const MANIFEST_DIR: &str = "checkpoints";

/// How a checkpoint relates to the run that took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Taken while the jobs ran.
    Running,
    /// The final checkpoint of a run stopped by a signal: resuming continues the jobs.
    Stopped,
    /// Taken after every bounded input ended and every window fired: nothing is left to do.
    Finished,
}

/// What a restored state is only valid with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub format_version: u32,
    pub key_groups: u32,
    pub jobs: Vec<JobBinding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobBinding {
    pub name: String,
    /// The source tables' names, connectors and schemas.
    pub source: String,
    /// The layout of the job's keyed state (its stateful operators: kind, keys, aggregates), or "stateless".
    pub state: String,
}

impl Binding {
    /// What differs between a checkpoint's binding (`self`) and the current config's, as sentences.
    pub fn differences(&self, now: &Binding) -> Vec<String> {
        let mut out = Vec::new();
        if self.format_version != now.format_version {
            out.push(format!(
                "the checkpoint is in format version {}, this build reads version {}",
                self.format_version, now.format_version
            ));
        }
        if self.key_groups != now.key_groups {
            out.push(format!(
                "runtime.key_groups was {} and is now {} (it is fixed for a job's lifetime)",
                self.key_groups, now.key_groups
            ));
        }
        let names = |b: &Binding| b.jobs.iter().map(|j| j.name.clone()).collect::<Vec<_>>();
        if names(self) != names(now) {
            out.push(format!("the jobs were {:?} and are now {:?}", names(self), names(now)));
            return out;
        }
        for (was, is) in self.jobs.iter().zip(&now.jobs) {
            if was.source != is.source {
                out.push(format!("job {}: the source was `{}` and is now `{}`", was.name, was.source, is.source));
            }
            if was.state != is.state {
                out.push(format!("job {}: the state was `{}` and is now `{}`", was.name, was.state, is.state));
            }
        }
        out
    }
}

/// One shard's part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub shard: u16,
    /// The log to replay, in order: a base, then deltas.
    pub log: Vec<SegmentRange>,
    /// Key groups the shard owned at the checkpoint.
    pub key_groups: Vec<u16>,
    /// The watermarks the shard's stateful operators had fired up to.
    pub watermarks: Vec<OpWatermark>,
}

/// The watermark one stateful operator (`node` of `job`) had fired up to on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpWatermark {
    pub job: u16,
    pub node: u16,
    pub watermark: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub epoch: u64,
    pub run: RunState,
    /// Wall-clock time the checkpoint completed, ms since the epoch (for people reading it).
    pub completed_at_ms: u64,
    pub binding: Binding,
    pub shards: Vec<ShardEntry>,
    /// Per job (in config order), every split's state.
    pub sources: Vec<Vec<SplitState>>,
}

/// The manifest file name of an epoch.
pub fn manifest_name(epoch: u64) -> String {
    format!("chk-{epoch:010}.json")
}

fn parse_manifest_name(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.strip_suffix(".json")?.parse().ok()
}

/// The epochs of the manifests in `dir`, newest first.
pub fn list_manifests(dir: &Path) -> Result<Vec<u64>, String> {
    let mut epochs = Vec::new();
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(epochs),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
                if let Some(epoch) = parse_manifest_name(&entry.file_name().to_string_lossy()) {
                    epochs.push(epoch);
                }
            }
        }
    }
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    Ok(epochs)
}

/// The format version a manifest (or anything holding one, such as a mirror's chain entry) was written in,
/// read before the rest: its layout depends on it.
pub fn format_version_of(json: &[u8]) -> Option<u64> {
    fn find(v: &serde_json::Value) -> Option<u64> {
        match v {
            serde_json::Value::Object(m) => {
                m.get("format_version").and_then(serde_json::Value::as_u64).or_else(|| m.values().find_map(find))
            }
            _ => None,
        }
    }
    find(&serde_json::from_slice::<serde_json::Value>(json).ok()?)
}

/// Why a checkpoint in another format version cannot be restored, and what to do.
pub fn format_refusal(what: &str, version: u64) -> String {
    let history =
        if version == 1 { " (written before jobs became operator graphs: its state has no operator ids)" } else { "" };
    format!(
        "{what} is in checkpoint format version {version}{history}; this build reads and writes version \
         {FORMAT_VERSION} and cannot convert it. Finish or savepoint the job with the release that wrote it and \
         start this one from an empty runtime.state_dir, or move the state away"
    )
}

pub fn read_manifest(dir: &Path, epoch: u64) -> Result<Manifest, String> {
    let path = dir.join(manifest_name(epoch));
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Some(v) = format_version_of(&text).filter(|v| *v != u64::from(FORMAT_VERSION)) {
        return Err(format_refusal(&path.display().to_string(), v));
    }
    serde_json::from_slice(&text).map_err(|e| {
        format!("{}: not a valid checkpoint manifest ({e}); it may be damaged: move it away to resume from an older checkpoint", path.display())
    })
}

/// Writes a manifest atomically: temporary file, sync, rename, sync of the directory.
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(manifest_name(m.epoch));
    let tmp = dir.join(format!(".{}.tmp", manifest_name(m.epoch)));
    let bytes = serde_json::to_vec_pretty(m).map_err(|e| format!("cannot encode manifest {}: {e}", m.epoch))?;
    let fail = |what: &str, p: &Path, e: std::io::Error| format!("cannot {what} {}: {e}", p.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create", &tmp, e))?;
    f.write_all(&bytes).map_err(|e| fail("write", &tmp, e))?;
    f.sync_all().map_err(|e| fail("sync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| fail("rename", &path, e))?;
    sync_dir(dir)?;
    Ok(path)
}
