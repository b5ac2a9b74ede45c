//! The events the interceptor records. One JSON object per event, `event` names its type.

use std::net::SocketAddr;

use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl AuditRecord {
    pub fn now(event: AuditEvent) -> Self {
        let time = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_else(|_| "unknown".into());
        Self { time, event }
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
    /// What the steering program did with a new connection.
    Kernel {
        kind: &'static str,
        client: SocketAddr,
        original_dst: SocketAddr,
    },
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
}
