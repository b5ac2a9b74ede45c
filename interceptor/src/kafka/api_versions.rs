//! ApiVersions response trimming (STUB: to be implemented).
use bytes::Bytes;
use super::HeaderError;

/// Caps each advertised api key's max version at what this build can decode; returns the
/// re-encoded frame (length prefix included) or `None` when nothing had to change.
pub fn trim_api_versions_response(frame: &Bytes, request_version: i16) -> Result<Option<Bytes>, HeaderError> {
    let _ = (frame, request_version);
    todo!()
}
