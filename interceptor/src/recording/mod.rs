//! Session recording (placeholder: the recorder arrives with the recording work).

use bytes::Bytes;

use crate::{kafka::RequestHeader, proxy::tap::Handling};

/// Records one session's frames both ways.
pub struct Recorder;

impl Recorder {
    /// A request that was not forwarded: its header only (its body may hold what the policy
    /// refused to let through).
    pub fn refused_request(&self, _header: &RequestHeader, _handling: Handling) {}

    /// Frames as written to the broker (after masking).
    pub fn to_broker(&self, _frames: &[Bytes]) {}

    /// Bytes as written to the client (whole frames, or pieces of one streaming through).
    pub fn to_client(&self, _chunks: &[Bytes]) {}
}
