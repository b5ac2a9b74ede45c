//! Length-prefixed framing (STUB: to be implemented).
use bytes::{Bytes, BytesMut};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    #[error("negative frame length {0}")]
    NegativeLength(i32),
}

/// Splits one complete frame off the front of `buf`, length prefix included, so forwarding it
/// writes the exact bytes received. `Ok(None)`: incomplete, read more. Never copies.
pub fn split_frame(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Bytes>, FrameError> {
    let _ = (buf, max_frame_bytes);
    todo!()
}
