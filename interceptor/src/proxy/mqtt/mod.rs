//! One MQTT connection: the CONNECT authenticated here (the password carries the OIDC token),
//! the interceptor's own login at the broker, then every packet both ways through policy,
//! masking and audit.
//!
//! - `connect`: the CONNECT, the will, the upstream login and the CONNACK.
//! - `login`: who the client is (token, configured user, anonymous).
//! - `client`: packets from the client (PUBLISH, SUBSCRIBE, acknowledgements of deliveries).
//! - `broker`: packets from the broker (deliveries, SUBACK merges, acknowledgements).
//! - `writer`: one writer per side; each batch waits for the audit events behind it.
//! - `decide`: the policy's answers for this session and the audit events that record them.
//! - `detect`: telling MQTT from Kafka by the first bytes.
//!
//! Packet identifiers stay the client's and the broker's own: nothing is renumbered. A
//! message the interceptor refuses is answered (or acknowledged) by the interceptor in the
//! sender's id space, and the PUBREL that follows a locally answered QoS 2 PUBREC is answered
//! locally too, so neither side ever sees an id the other did not use.

mod batch;
mod broker;
mod client;
mod connect;
mod decide;
pub(crate) mod detect;
mod login;
mod writer;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use tokio::{net::TcpStream, sync::mpsc, sync::watch};

use super::{auth::Identity, session::SessionContext, upstream::Upstream, Masking};
use crate::{
    addr::{ClientAddr, OrigDst},
    audit::{AuditEvent, AuditLog, CloseReason, Ticket},
    config::{Listener, MqttConfig},
    mqtt::codec::{Limits, Version},
    policy::{watch::PolicyHandle, Subject},
    recording::Recorder,
};

/// Batches queued for one side's writer (each at most 256 packets or 256 KiB and one packet,
/// see `batch`).
const WRITE_QUEUE: usize = 16;

/// Packets for one side, and the audit event that must be durable before they are written.
pub(super) struct Outgoing {
    pub after: Ticket,
    pub frames: Vec<Bytes>,
}
/// How long the last packets may take to reach a side that is being closed.
const FLUSH_BEFORE_CLOSE: Duration = Duration::from_secs(5);

/// How one direction (or the whole session) ended.
#[derive(Debug)]
pub(super) struct End {
    pub reason: CloseReason,
    pub detail: Option<String>,
}

impl End {
    fn new(reason: CloseReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: Some(detail.into()),
        }
    }

    fn clean(reason: CloseReason) -> Self {
        Self {
            reason,
            detail: None,
        }
    }
}

/// What both directions of one session share.
pub(super) struct Session {
    pub id: u64,
    pub client: SocketAddr,
    pub version: Version,
    pub limits: Limits,
    pub identity: Identity,
    /// The MQTT client identifier (the broker's assigned one when the client sent none).
    pub client_id: String,
    pub policy: PolicyHandle,
    pub masking: Arc<Masking>,
    /// This session's audit handle: the writers wait for exactly its events.
    pub audit: AuditLog,
    /// Whether `records` events describe each message.
    pub records: bool,
    pub config: MqttConfig,
    /// Most SUBSCRIBEs with a refused filter awaiting the broker's SUBACK at once.
    pub max_pending: usize,
    /// SUBSCRIBE id → each filter's answer: `Some(code)` refused here, `None` forwarded (the
    /// broker's SUBACK supplies it, in order).
    pub pending_subacks: Mutex<HashMap<u16, Vec<Option<u8>>>>,
    pub recorder: Option<Recorder>,
    /// When the token (or the maximum session lifetime) runs out: the session closes then.
    pub expires: Option<Instant>,
}

impl Session {
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            principal: &self.identity.principal,
            groups: &self.identity.groups,
            client_id: Some(&self.client_id),
            source: self.client.ip(),
        }
    }
}

/// Packet ids one side's reader answers itself: QoS 2 flows whose PUBREC came from the
/// interceptor, so the PUBREL that follows is answered here too, with the PUBCOMP reason code
/// kept for it. Bounded: an id leaves when its PUBREL comes, and there are 65,535 ids.
#[derive(Default)]
pub(super) struct LocalQos2(HashMap<u16, u8>);

impl LocalQos2 {
    fn insert(&mut self, id: u16, pubcomp_reason: u8) {
        self.0.insert(id, pubcomp_reason);
    }

    /// The PUBCOMP reason code when the id is one answered here.
    fn take(&mut self, id: u16) -> Option<u8> {
        self.0.remove(&id)
    }
}

/// Entry point from the session router for a connection to an MQTT listener.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    session: u64,
    client: TcpStream,
    ctx: Arc<SessionContext>,
    listener: &Listener,
    target: SocketAddr,
    (client_addr, orig_dst): (ClientAddr, OrigDst),
    mut shutdown: watch::Receiver<bool>,
    started: Instant,
) {
    let _ = client.set_nodelay(true);
    let audit = ctx.audit.for_session();
    let mut client = client;
    let mut client_buf = BytesMut::with_capacity(8 * 1024);
    let opened = connect::open(
        &ctx,
        listener,
        target,
        session,
        (client_addr, orig_dst),
        &mut client,
        &mut client_buf,
        &audit,
    )
    .await;
    let connect::Opened {
        upstream,
        upstream_buf,
        session: state,
    } = match opened {
        Ok(opened) => opened,
        Err(end) => {
            close_event(
                &ctx.audit,
                session,
                (client_addr, orig_dst),
                None,
                (0, 0),
                started,
                end,
            )
            .await;
            return;
        }
    };
    let state = Arc::new(state);
    // The exemption lives as long as the upstream connection: dropped with it below.
    let mut upstream: Upstream = upstream;
    let (mut bytes_in, mut bytes_out, mut bytes_up) = (0u64, 0u64, 0u64);
    let end = {
        let (client_rd, client_wr) = client.split();
        let (up_rd, up_wr) = upstream.stream.split();
        let (to_client, to_client_rx) = mpsc::channel::<Outgoing>(WRITE_QUEUE);
        let (to_broker, to_broker_rx) = mpsc::channel::<Outgoing>(WRITE_QUEUE);
        let expires = state.expires.map(tokio::time::Instant::from_std);
        let mut readers = Box::pin(async {
            let client_side = client::run(
                client_rd,
                client_buf,
                &state,
                to_broker.clone(),
                to_client.clone(),
                expires,
                &mut bytes_in,
            );
            let broker_side = broker::run(up_rd, upstream_buf, &state, to_client, to_broker);
            tokio::pin!(client_side, broker_side);
            tokio::select! {
                end = &mut client_side => end,
                end = &mut broker_side => end,
            }
        });
        let client_writer = writer::run(
            client_wr,
            to_client_rx,
            &state,
            writer::Side::Client,
            &mut bytes_out,
        );
        let broker_writer = writer::run(
            up_wr,
            to_broker_rx,
            &state,
            writer::Side::Broker,
            &mut bytes_up,
        );
        tokio::pin!(client_writer, broker_writer);
        let end = tokio::select! {
            end = &mut readers => Some(end),
            end = &mut client_writer => end.err(),
            end = &mut broker_writer => end.err(),
            _ = shutdown.changed() => Some(End::clean(CloseReason::DaemonShutdown)),
        };
        // The readers (and their senders) are gone: the writers finish what is queued, then
        // see their queues close.
        drop(readers);
        let flushed = tokio::time::timeout(FLUSH_BEFORE_CLOSE, async {
            let _ = tokio::join!(&mut client_writer, &mut broker_writer);
        })
        .await;
        if flushed.is_err() {
            tracing::debug!(session, "packets still queued at close were dropped");
        }
        end.unwrap_or_else(|| End::clean(CloseReason::ClientClosed))
    };
    close_event(
        &ctx.audit,
        session,
        (client_addr, orig_dst),
        Some(state.identity.principal.clone()),
        (bytes_in, bytes_out),
        started,
        end,
    )
    .await;
}

async fn close_event(
    audit: &AuditLog,
    session: u64,
    (client_addr, orig_dst): (ClientAddr, OrigDst),
    principal: Option<String>,
    (bytes_in, bytes_out): (u64, u64),
    started: Instant,
    end: End,
) {
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let routine = matches!(
        end.reason,
        CloseReason::ClientClosed | CloseReason::UpstreamClosed | CloseReason::DaemonShutdown
    );
    let detail = end.detail.as_deref().unwrap_or("");
    if routine {
        tracing::info!(session, client = %client_addr, reason = ?end.reason, bytes_from_client = bytes_in, bytes_to_client = bytes_out, "mqtt connection closed {detail}");
    } else {
        tracing::warn!(session, client = %client_addr, reason = ?end.reason, bytes_from_client = bytes_in, bytes_to_client = bytes_out, "mqtt connection closed: {detail}");
    }
    audit
        .emit(AuditEvent::ConnectionClose {
            session,
            client: client_addr.0,
            original_dst: orig_dst.0,
            principal,
            bytes_from_client: bytes_in,
            bytes_to_client: bytes_out,
            duration_ms,
            reason: end.reason,
            detail: end.detail,
        })
        .await;
}
