//! Request and response headers (STUB: to be implemented).
use bytes::Bytes;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("frame truncated in {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A decoded request header. `frame` is the whole frame, length prefix included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// Zero-copy slice of the frame; `None` for a null client id.
    pub client_id: Option<Bytes>,
    /// Offset of the request body within the frame (length prefix included).
    pub body_offset: usize,
}

impl RequestHeader {
    pub fn parse(frame: &Bytes) -> Result<Self, HeaderError> {
        let _ = frame;
        todo!()
    }
    pub fn client_id_lossy(&self) -> std::borrow::Cow<'_, str> {
        todo!()
    }
}

/// Correlation id of a response frame (length prefix included).
pub fn response_correlation_id(frame: &[u8]) -> Result<i32, HeaderError> {
    let _ = frame;
    todo!()
}
