//! Rows of a typed schema: types, batches (rkyv, read in place), JSON at the edges, timestamp text.

pub mod batch;
pub mod json;
pub mod timestamp;
pub mod types;

pub use batch::{BatchBuf, BatchBuilder, BatchView, Lineage, RowKind};
pub use types::{DataType, Datum, Field, Schema, Value};
