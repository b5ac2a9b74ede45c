//! The events the interceptor records. One JSON object per event, `event` names its type.

use std::{net::SocketAddr, sync::Arc};

use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// When the event happened, Unix epoch milliseconds (OCSF `time`).
    pub time_ms: i64,
    /// The same instant, RFC 3339 UTC (OCSF `time_dt`).
    pub time_dt: String,
    /// The policy set in force: for a decision, the set that made it.
    pub policy_version: Arc<str>,
    pub event: AuditEvent,
}

impl AuditRecord {
    pub fn now(event: AuditEvent, policy_version: Arc<str>) -> Self {
        let now = OffsetDateTime::now_utc();
        let time_dt = now.format(&Rfc3339).unwrap_or_else(|_| "unknown".into());
        Self {
            time_ms: i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
            time_dt,
            policy_version,
            event,
        }
    }

    /// OCSF severity: 1 informational ... 5 critical.
    pub fn severity_id(&self) -> u8 {
        super::ocsf::severity_id(&self.event, &self.policy_version)
    }

    /// The event's type name (`decision`, `records`, ...).
    pub fn name(&self) -> &'static str {
        self.event.name()
    }
}

/// The line as written: OCSF's common attributes first, then the interceptor's own fields of
/// the event (flat, named by `event`).
#[derive(Serialize)]
struct Wire<'a> {
    time: i64,
    time_dt: &'a str,
    #[serde(flatten)]
    ocsf: super::ocsf::Envelope<'a>,
    policy_version: &'a str,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

impl Serialize for AuditRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            time: self.time_ms,
            time_dt: &self.time_dt,
            ocsf: super::ocsf::Envelope::of(&self.event, &self.policy_version),
            policy_version: &self.policy_version,
            event: &self.event,
        }
        .serialize(serializer)
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
        /// MQTT: allowed messages of one session, topic and rule decided in one read, counted
        /// in one event (`correlation_id` is the first one's packet id). Absent: one.
        #[serde(skip_serializing_if = "Option::is_none")]
        messages: Option<u64>,
        /// MQTT, with `[audit] records`: the payload bytes of those messages as they went on
        /// (after masking), and a `blake3:` digest of them in order. MQTT has no `records`
        /// event: a message's decision is its delivery.
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
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
    /// What a client got from the broker's records: on produce, the partitions the broker
    /// acknowledged (offsets assigned) for this request; on fetch, the record batches sent to
    /// the consumer. Written before the client sees the answer; `digest` is of the records
    /// as they crossed the interceptor (after masking).
    Records {
        session: u64,
        client: SocketAddr,
        principal: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        api: &'static str,
        correlation_id: i32,
        /// `produce` or `fetch`.
        stage: &'static str,
        partitions: Vec<PartitionRecords>,
    },
    /// Events the writer could not write and gave up on (`on_failure = "continue"`), counted
    /// and recorded here once writing works again.
    AuditLoss {
        events: u64,
    },
    /// What the steering program did with a new connection.
    Kernel {
        kind: &'static str,
        client: SocketAddr,
        original_dst: SocketAddr,
    },
}

impl AuditEvent {
    /// The type name the line carries in `event`.
    pub fn name(&self) -> &'static str {
        use AuditEvent as E;
        match self {
            E::DaemonStart { .. } => "daemon_start",
            E::DaemonStop { .. } => "daemon_stop",
            E::ConnectionOpen { .. } => "connection_open",
            E::ConnectionClose { .. } => "connection_close",
            E::ConnectionRefused { .. } => "connection_refused",
            E::Authentication { .. } => "authentication",
            E::RequestRefused { .. } => "request_refused",
            E::UpstreamAuthentication { .. } => "upstream_authentication",
            E::Decision { .. } => "decision",
            E::PolicyReload { .. } => "policy_reload",
            E::Transform { .. } => "transform",
            E::Detokenize { .. } => "detokenize",
            E::Records { .. } => "records",
            E::AuditLoss { .. } => "audit_loss",
            E::Kernel { .. } => "kernel",
        }
    }
}

/// One partition's records in a produce acknowledgement or a fetch answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionRecords {
    pub topic: String,
    pub partition: i32,
    /// The broker's error code for the partition (0: none).
    pub error_code: i16,
    /// Produce: the offset of the first record the broker appended. Fetch: the base offset
    /// of the first batch sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<i64>,
    /// The offset of the last record (produce: first + records - 1; fetch: the last batch's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<i64>,
    pub records: u64,
    pub bytes: u64,
    /// `blake3:<hex>` of the partition's record batches as they crossed the interceptor
    /// (BLAKE3: a cryptographic hash about twice as fast as SHA-256 here, which matters at
    /// fetch rates; `b3sum` computes the same).
    pub digest: String,
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
    /// The client speaks another protocol than the listener's (an MQTT CONNECT on a Kafka
    /// listener, a Kafka request or TLS on an MQTT one).
    ProtocolMismatch,
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
    /// The audit trail could not be written and the configuration says to refuse traffic.
    AuditUnavailable,
    /// A request the policy layer cannot decide: an unknown api key, a malformed body, or a
    /// broker-to-broker request the interceptor refuses and has no error answer for.
    PolicyRefused,
}
