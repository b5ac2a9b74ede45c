//! The events the interceptor records. One JSON object per event, `event` names its type.

use std::{net::SocketAddr, sync::Arc};

use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// The policy set in force: for a decision, the set that made it.
    pub policy_version: Arc<str>,
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl AuditRecord {
    pub fn now(event: AuditEvent, policy_version: Arc<str>) -> Self {
        let time = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_else(|_| "unknown".into());
        Self {
            time,
            policy_version,
            event,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    DaemonStart {
        mode: &'static str,
        fail_open: bool,
        protected: Vec<SocketAddr>,
        version: &'static str,
    },
    DaemonStop {
        sessions_open: usize,
    },
    ConnectionOpen {
        session: u64,
        protocol: &'static str,
        client: SocketAddr,
        original_dst: SocketAddr,
        upstream: SocketAddr,
    },
    ConnectionClose {
        session: u64,
        client: SocketAddr,
        original_dst: SocketAddr,
        /// Who the connection was, if it got as far as that.
        #[serde(skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        bytes_from_client: u64,
        bytes_to_client: u64,
        duration_ms: u64,
        reason: CloseReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A connection refused before any upstream connection existed.
    ConnectionRefused {
        session: u64,
        client: SocketAddr,
        original_dst: SocketAddr,
        reason: CloseReason,
        detail: String,
    },
    /// One SASL authentication (or re-authentication), or an anonymous session starting. Never
    /// carries the token or password; `token_sha256` identifies the token.
    Authentication {
        session: u64,
        client: SocketAddr,
        mechanism: String,
        outcome: AuthOutcome,
        reauthentication: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        issuer: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// When the session must re-authenticate (RFC 3339).
        #[serde(skip_serializing_if = "Option::is_none")]
        session_expires: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token_sha256: Option<String>,
        /// Stable code of a failure (`expired`, `bad_signature`, `unknown_user`, ...).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A request the interceptor refused without a policy decision (before authentication,
    /// after the session expired, out of SASL order).
    RequestRefused {
        session: u64,
        client: SocketAddr,
        #[serde(skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
        reason: &'static str,
        detail: String,
    },
    /// The interceptor could not authenticate to the broker with its own credentials.
    UpstreamAuthentication {
        session: u64,
        upstream: SocketAddr,
        mechanism: &'static str,
        detail: String,
    },
    /// One policy decision: an operation of a request on one resource.
    Decision {
        session: u64,
        client: SocketAddr,
        principal: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        api: &'static str,
        correlation_id: i32,
        operation: &'static str,
        resource_type: &'static str,
        resource: String,
        /// `allow`, `deny` or `violation` (a blocking rule).
        decision: &'static str,
        /// The rule that decided; absent when nothing matched (default deny).
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// Where that rule is: `file:line` in the policy directory.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule_source: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The policy directory was read again: a new set in force, or a set refused.
    PolicyReload {
        outcome: &'static str,
        /// The version in force afterwards (the previous one when the new set was refused).
        version: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous_version: Option<String>,
        files: usize,
        rules: usize,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<String>,
    },
    /// Masking rewrote (or refused to pass) the records of one partition: before the broker
    /// on produce, for this consumer on fetch. Counts only, never values.
    Transform {
        session: u64,
        client: SocketAddr,
        principal: String,
        api: &'static str,
        correlation_id: i32,
        /// `produce` or `fetch`.
        stage: &'static str,
        topic: String,
        partition: i32,
        /// `masked`, `revealed` (tokens put back for a consumer allowed to see them),
        /// `refused` (nothing forwarded) or `withheld` (a fetched partition sent empty).
        outcome: &'static str,
        /// Records changed.
        records: u64,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        fields: Vec<TransformCount>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// `interceptor detokenize`: who asked for which token's value, and the answer. Never the
    /// value or the token itself; `token_sha256` identifies the token.
    Detokenize {
        principal: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
        token_sha256: String,
        /// The masking rule that made the token, when the vault knows it.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// `revealed`, `denied`, `unknown_token`, `unauthenticated` or `error`.
        outcome: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// What the steering program did with a new connection.
    Kernel {
        kind: &'static str,
        client: SocketAddr,
        original_dst: SocketAddr,
    },
}

/// How many values one rule's field or detector changed in one partition's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransformCount {
    pub rule: String,
    /// The field path or detector name.
    pub selector: String,
    pub action: &'static str,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthOutcome {
    Success,
    Failure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    ClientClosed,
    UpstreamClosed,
    ClientError,
    UpstreamError,
    /// The client broke the protocol (bad length, oversized frame, undecodable header,
    /// disconnect in the middle of a frame).
    ClientProtocolError,
    UpstreamProtocolError,
    UpstreamUnreachable,
    /// No protected listener matches the destination the client connected to.
    NotProtected,
    FilterClosed,
    DaemonShutdown,
    /// SASL failed (bad token, bad credentials, disallowed mechanism, broken exchange).
    AuthenticationFailed,
    /// A request other than ApiVersions or SASL came before authentication.
    Unauthenticated,
    /// The session's token (or maximum lifetime) expired and it did not re-authenticate.
    SessionExpired,
    /// The broker refused the interceptor's own credentials.
    UpstreamAuthFailed,
    /// A request the policy layer cannot decide: an unknown api key, a malformed body, or a
    /// broker-to-broker request the interceptor refuses and has no error answer for.
    PolicyRefused,
}
