//! Authorization of Kafka requests: what each api key does to which resources, and how a
//! request is answered when some or all of it is refused.
//!
//! For each request the protocol layer parses only what names resources (topics, groups,
//! transactional ids), in place and bounds-checked (never with the `kafka-protocol` crate's
//! decoder, which sizes allocations from counts on the wire), asks the session's
//! [`AccessCheck`] about each, and then:
//! - everything allowed: the original bytes go to the broker untouched ([`Outcome::Forward`]);
//! - nothing allowed: the interceptor answers with the error the broker itself would give
//!   ([`Outcome::Respond`]), or sends nothing for acks=0 Produce ([`Outcome::Drop`]);
//! - some allowed: the refused items are cut out of the request ([`splice`]), the rest is
//!   forwarded, and the broker's answer is merged with the interceptor's errors for the refused
//!   items, in request order ([`Outcome::Rewrite`]).
//!
//! Families of api keys live in their own modules: [`data`] (produce, fetch, offsets,
//! metadata, topic ids), [`control`] (consumer groups and transactions) and [`admin`] (topic
//! administration, configs, ACLs, cluster and broker-to-broker keys).

pub mod admin;
mod checks;
pub mod control;
pub mod data;
pub mod response;
pub mod splice;
pub mod table;
pub mod topic_ids;

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use super::{HeaderError, RequestHeader};
use crate::policy::AccessCheck;
pub use table::{api_access, ApiAccess};
pub use topic_ids::TopicIds;

#[derive(Debug, Error)]
pub enum AuthzError {
    /// The client's request cannot be parsed: the connection is closed, as a broker does.
    #[error("malformed {api} v{version} request: {source}")]
    Malformed {
        api: &'static str,
        version: i16,
        source: HeaderError,
    },
    /// A version this build does not parse (it is never advertised to clients).
    #[error("{api} v{version} is not supported by the interceptor")]
    UnsupportedVersion { api: &'static str, version: i16 },
    /// An api key outside the table (vendor keys, keys newer than this build).
    #[error("api key {0} is not known to the interceptor")]
    UnknownApiKey(i16),
    /// Refused, and the protocol has no error to say so in this request's answer (some
    /// broker-to-broker keys): the connection is closed, as a broker closes on requests it
    /// will not serve.
    #[error("{api} refused: {reason}")]
    Refused { api: &'static str, reason: String },
    /// The broker's answer could not be merged with the interceptor's errors.
    #[error("cannot rewrite the broker's {api} response: {detail}")]
    Response { api: &'static str, detail: String },
}

/// Rewrites the broker's answer to a forwarded request before the client sees it. Gets the
/// whole response frame (length prefix included) and returns the frame to send.
pub type ResponseRewrite = Box<dyn FnOnce(Bytes) -> Result<Bytes, AuthzError> + Send>;

/// What to do with one request.
pub enum Outcome {
    /// Everything allowed: forward the original frame.
    Forward,
    /// Forward the original frame, and rewrite the broker's answer (Metadata hides topics the
    /// client may not describe).
    FilterResponse(ResponseRewrite),
    /// Forward `frame` (the allowed part) instead; the broker's answer, if any, goes through
    /// `response` (which merges in the refused part's errors).
    Rewrite {
        frame: Bytes,
        response: Option<ResponseRewrite>,
    },
    /// Forward nothing; answer with this complete response frame.
    Respond(Bytes),
    /// Forward nothing and answer nothing: a refused acks=0 Produce.
    Drop,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Forward => f.write_str("Forward"),
            Outcome::FilterResponse(_) => f.write_str("FilterResponse"),
            Outcome::Rewrite { frame, response } => f
                .debug_struct("Rewrite")
                .field("frame_len", &frame.len())
                .field("rewrites_response", &response.is_some())
                .finish(),
            Outcome::Respond(frame) => f.debug_tuple("Respond").field(&frame.len()).finish(),
            Outcome::Drop => f.write_str("Drop"),
        }
    }
}

/// Per-connection state the authorization needs across requests.
#[derive(Default)]
pub struct ConnectionState {
    /// Incremental fetch sessions (KIP-227) and what they were authorized against.
    pub(crate) fetch: data::FetchSessions,
}

/// Settings that apply to every connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthzSettings {
    /// Forward api keys outside the table (vendor keys ≥ 10000, keys newer than this build)
    /// without checks. Off by default: such a request closes the connection.
    pub allow_unknown_api_keys: bool,
}

/// Everything one request is checked with.
pub struct Context<'a> {
    pub check: &'a Arc<dyn AccessCheck>,
    pub state: &'a mut ConnectionState,
    /// Shared by every session; response rewrites keep a clone (Metadata teaches ids).
    pub topic_ids: &'a Arc<TopicIds>,
    /// Changes whenever the active policy set changes: authorizations remembered across
    /// requests (fetch sessions) are redone when it differs.
    pub policy_generation: u64,
    pub settings: AuthzSettings,
}

/// One request, parsed as far as its header.
pub struct Request<'a> {
    pub header: &'a RequestHeader,
    /// The whole frame, length prefix included.
    pub frame: &'a Bytes,
}

impl Request<'_> {
    /// The body: everything after the request header.
    pub fn body(&self) -> &[u8] {
        &self.frame[self.header.body_offset.min(self.frame.len())..]
    }

    /// Whether this request uses flexible versions (compact encodings, tagged fields).
    pub fn flexible(&self) -> bool {
        super::header::request_header_version(self.header.api_key, self.header.api_version) >= 2
    }

    pub fn api_name(&self) -> &'static str {
        table::api_name(self.header.api_key)
    }

    pub fn malformed(&self, source: HeaderError) -> AuthzError {
        AuthzError::Malformed {
            api: self.api_name(),
            version: self.header.api_version,
            source,
        }
    }
}

/// Decides one request. ApiVersions and SASL never reach here: the session answers them.
pub fn authorize(request: &Request<'_>, ctx: &mut Context<'_>) -> Result<Outcome, AuthzError> {
    let key = request.header.api_key;
    match api_access(key) {
        None if ctx.settings.allow_unknown_api_keys => return Ok(Outcome::Forward),
        None => return Err(AuthzError::UnknownApiKey(key)),
        Some(access) if access.touches.is_empty() => return Ok(Outcome::Forward),
        Some(_) => {}
    }
    if let Some(outcome) = data::authorize(request, ctx) {
        return outcome;
    }
    if let Some(outcome) = control::authorize(request, ctx) {
        return outcome;
    }
    if let Some(outcome) = admin::authorize(request, ctx) {
        return outcome;
    }
    Err(AuthzError::UnsupportedVersion {
        api: request.api_name(),
        version: request.header.api_version,
    })
}
