//! Keyed state on disk: the per-shard incremental log (format in [`log`], writer in [`writer`]).
//!
//! At each checkpoint barrier a shard encodes what changed in its operators' state since its previous
//! checkpoint (a *delta*) or, when the deltas since its last *base* outgrow the base, all of it (a new base),
//! into one blob; the blob is appended to the shard's log through io_uring (glommio DMA files, O_DIRECT) and
//! synced before the shard acknowledges the checkpoint. Recovery replays, per shard, the base and the deltas a
//! manifest names (`checkpoint/`).
//!
//! Invariant: bytes in the log are only ever appended and checked on the way back in; nothing corrupt is
//! applied.

pub mod backend;
pub mod log;
pub mod writer;

/// Directory of the log segments under the state directory.
pub const LOG_DIR: &str = "log";

/// The file name of segment `seg` of shard `shard`'s log. Segment numbers only grow, also across runs, so a
/// new run never writes into a file an old checkpoint refers to.
pub fn segment_name(shard: u16, seg: u64) -> String {
    format!("shard-{shard:04}-{seg:010}.log")
}

/// Parses a segment file name back into (shard, segment).
pub fn parse_segment_name(name: &str) -> Option<(u16, u64)> {
    let rest = name.strip_prefix("shard-")?.strip_suffix(".log")?;
    let (shard, seg) = rest.split_once('-')?;
    Some((shard.parse().ok()?, seg.parse().ok()?))
}

/// Makes a directory's entries (created, renamed or removed files) durable. Blocking: for the control thread.
pub fn sync_dir(dir: &std::path::Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// [`sync_dir`] through io_uring, for shards.
pub async fn sync_dir_async(dir: &std::path::Path) -> Result<(), String> {
    // glommio opens directories relative to no directory at all (`dirfd` -1): a relative path fails there.
    let path = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let fail = |e: glommio::GlommioError<()>| format!("cannot sync {}: {e}", dir.display());
    let d = glommio::io::Directory::open(&path).await.map_err(fail)?;
    d.sync().await.map_err(fail)?;
    let _ = d.close().await;
    Ok(())
}
