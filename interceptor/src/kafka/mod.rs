//! Kafka wire protocol: framing, headers, the in-flight map, and the few bodies the data path
//! itself needs (Produce acks, ApiVersions trimming). Bodies are decoded with the
//! `kafka-protocol` crate only where a filter asks.

pub mod api_versions;
pub mod authz;
pub mod frame;
pub mod header;
pub mod inflight;
pub mod produce;
pub mod records;
pub mod sasl;
pub mod transform;
pub(crate) mod wire;

pub use frame::{split_frame, FrameError};
pub use header::{HeaderError, RequestHeader};
