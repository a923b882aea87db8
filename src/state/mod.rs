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
