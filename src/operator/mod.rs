//! Operators: pure computation over batches. They do no I/O and know nothing of files, Kinesis or S3; the
//! shard feeds them batches and watermarks and delivers what they emit.

pub mod accumulator;
pub mod calc;
pub mod key;
pub mod keyed;
pub mod window_agg;
