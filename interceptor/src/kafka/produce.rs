//! Produce request fields the data path needs (STUB: to be implemented).
use super::{HeaderError, RequestHeader};

/// The `acks` of a Produce request: 0 means the broker sends no response at all.
pub fn produce_acks(frame: &[u8], header: &RequestHeader) -> Result<i16, HeaderError> {
    let _ = (frame, header);
    todo!()
}
