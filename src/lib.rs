//! shardflow: a thread-per-core stream processor that runs Flink SQL jobs from one config file.
//!
//! Reading order: `constants` (every limit) → `config` (the file) → `sql` (queries into plans) → `record`
//! (typed rows in rkyv batches) → `window` (window assignment) → `operator` (pure computation) → `time`
//! (watermarks) → `queue` (the exchange between shards) → `source` and `sink` (the edges) → `shard` (one
//! executor per core, its event loop) → `metrics` → `daemon` (wires it all and reports).

pub mod aws;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod constants;
pub mod cpu;
pub mod daemon;
pub mod kinesis;
pub mod metrics;
pub mod mirror;
pub mod operator;
pub mod queue;
pub mod record;
pub mod shard;
pub mod sink;
pub mod source;
pub mod sql;
pub mod state;
pub mod time;
pub mod tune;
pub mod window;
