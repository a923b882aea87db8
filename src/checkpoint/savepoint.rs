//! Savepoints: a self-contained copy of a complete checkpoint, compacted, that a job can start from —
//! also with another core count (key groups are redistributed at restore, see `recovery.rs`).
//!
//! Layout: the same as a state directory (`checkpoints/chk-<epoch>.json` and `log/`), with exactly one
//! manifest and, per shard of the checkpoint, one segment holding a single base: the state that shard's log
//! replays to. Taking one only reads the state directory, so it works on a stopped job and on a running one
//! (the newest complete checkpoint is immutable until it is retired).

use std::io::Write as _;
use std::path::Path;

use super::manifest::{list_manifests, manifest_name, read_manifest, write_manifest, MANIFEST_DIR};
use super::recovery::read_range;
use crate::state::log::{replay, BlobEncoder, CheckpointKind, SegmentRange};
use crate::state::{segment_name, sync_dir, LOG_DIR};

/// What a savepoint holds.
pub struct SavepointInfo {
    pub epoch: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// Writes a savepoint of the newest complete checkpoint of `state_dir` into `to` (which must be empty or
/// missing).
pub fn take(state_dir: &Path, to: &Path) -> Result<SavepointInfo, String> {
    if std::fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!("{} is not empty: a savepoint goes into a new directory", to.display()));
    }
    let manifests = state_dir.join(MANIFEST_DIR);
    let epoch = *list_manifests(&manifests)?
        .first()
        .ok_or_else(|| format!("{} holds no complete checkpoint to save", state_dir.display()))?;
    let mut manifest = read_manifest(&manifests, epoch)?;
    let log_dir = state_dir.join(LOG_DIR);
    let out_log = to.join(LOG_DIR);
    std::fs::create_dir_all(&out_log).map_err(|e| format!("cannot create {}: {e}", out_log.display()))?;
    let (mut entries, mut bytes) = (0, 0);
    for shard in &mut manifest.shards {
        let mut ranges = Vec::new();
        for r in &shard.log {
            ranges.push((
                r.clone(),
                read_range(&log_dir, r).map_err(|e| {
                    format!("{e} (if the job is running, the checkpoint was retired meanwhile: try again)")
                })?,
            ));
        }
        let image = replay(&ranges, epoch).map_err(|e| format!("checkpoint {epoch} is damaged: {e}"))?;
        let mut enc = BlobEncoder::new(epoch, shard.shard, CheckpointKind::Base);
        let mut all = image.into_entries();
        all.sort_unstable_by(|a, b| (a.0, a.1, a.2, &a.3).cmp(&(b.0, b.1, b.2, &b.3)));
        for (job, kg, ns, key, value) in &all {
            enc.put(*job, *kg, *ns, key, |b| b.extend_from_slice(value));
        }
        entries += enc.entries();
        let blob = enc.finish(epoch);
        let name = segment_name(shard.shard, 0);
        let path = out_log.join(&name);
        let mut f = std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        f.write_all(&blob).and_then(|_| f.sync_all()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        bytes += blob.len() as u64;
        shard.log = vec![SegmentRange { file: name, from: 0, to: blob.len() as u64 }];
    }
    sync_dir(&out_log)?;
    write_manifest(&to.join(MANIFEST_DIR), &manifest)?;
    debug_assert!(to.join(MANIFEST_DIR).join(manifest_name(epoch)).exists());
    Ok(SavepointInfo { epoch, entries, bytes })
}
