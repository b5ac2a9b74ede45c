//! One client connection: route it, connect upstream, relay both directions, audit both ends.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};

use super::{
    access::SessionCheck,
    auth::{Authenticator, ListenerAuth, SessionAuth},
    authorize::RequestAuthz,
    relay::{self, RelayEnd, RelayLimits},
    tap::SessionTap,
    upstream,
};
use crate::{
    addr::{canonical, ClientAddr, OrigDst},
    audit::{AuditEvent, AuditLog, CloseReason},
    config::{Config, Listener, Protocol, UpstreamMechanism},
    ebpf::ExemptRegistry,
    filter::FilterChain,
    kafka::{
        authz::{AuthzSettings, TopicIds},
        inflight::in_flight,
        records::RecordLimits,
        sasl::secrets::UpstreamSecrets,
        sasl::upstream as broker_auth,
    },
    policy::watch::PolicyHandle,
};

/// How a connection's broker is found.
#[derive(Debug, Clone)]
pub enum Router {
    /// Kernel steering: by the original destination, through the protected listeners.
    Steered,
    /// Listen mode: every connection goes to this broker.
    Fixed(SocketAddr),
}

/// What every session shares.
pub struct SessionContext {
    pub config: Arc<Config>,
    pub router: Router,
    pub exempt: ExemptRegistry,
    pub chain: FilterChain,
    pub audit: AuditLog,
    pub authenticator: Arc<Authenticator>,
    /// The interceptor's own credentials towards the broker (`None`: the broker wants none).
    pub broker_credentials: Option<UpstreamSecrets>,
    /// The policy set in force.
    pub policy: PolicyHandle,
    /// Topic ids learnt from Metadata responses, for requests that name topics by id.
    pub topic_ids: Arc<TopicIds>,
    /// Masking rules' shared parts: the vault and the rewrite limits.
    pub masking: Arc<super::Masking>,
    /// The interceptor's own login at MQTT brokers (`[mqtt] upstream_secrets_file`).
    pub mqtt_credentials: Option<UpstreamSecrets>,
}

/// The client id the interceptor's own SASL requests carry (visible in broker logs).
const CLIENT_ID: &str = "interceptor";

pub async fn serve(
    session: u64,
    mut client: TcpStream,
    ctx: Arc<SessionContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let (client_addr, orig_dst) = match (client.peer_addr(), client.local_addr()) {
        (Ok(peer), Ok(local)) => (ClientAddr(canonical(peer)), OrigDst(canonical(local))),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(
                session,
                "accepted connection vanished before it was read: {e}"
            );
            return;
        }
    };
    let refuse = |reason: CloseReason, detail: String| {
        tracing::warn!(session, client = %client_addr, original_dst = %orig_dst, "refused: {detail}");
        ctx.audit.emit(AuditEvent::ConnectionRefused {
            session,
            client: client_addr.0,
            original_dst: orig_dst.0,
            reason,
            detail,
        })
    };
    let Some((target, listener)) = route(&ctx, orig_dst) else {
        refuse(
            CloseReason::NotProtected,
            format!("{orig_dst} is not a protected listener"),
        )
        .await;
        return;
    };
    if listener.protocol == Protocol::Mqtt {
        let listener = listener.clone();
        super::mqtt::serve(
            session,
            client,
            Arc::clone(&ctx),
            &listener,
            target,
            (client_addr, orig_dst),
            shutdown,
            started,
        )
        .await;
        return;
    }
    let limits = &ctx.config.limits;
    let timeout = Duration::from_millis(limits.upstream_connect_timeout_ms);
    let mut upstream = match upstream::connect(target, &ctx.exempt, timeout).await {
        Ok(upstream) => upstream,
        Err(e) => {
            refuse(CloseReason::UpstreamUnreachable, e.to_string()).await;
            return;
        }
    };
    let mechanism = ctx.config.upstream_auth.mechanism;
    if let (Some(secrets), true) = (
        &ctx.broker_credentials,
        mechanism != UpstreamMechanism::None,
    ) {
        match broker_auth::authenticate(
            &mut upstream.stream,
            mechanism,
            secrets,
            CLIENT_ID,
            timeout,
        )
        .await
        {
            Ok(auth) if auth.session_lifetime_ms > 0 => tracing::warn!(
                session,
                upstream = %target,
                "the broker limits the interceptor's session to {} ms (connections.max.reauth.ms); \
                 upstream re-authentication is not implemented, so the broker will close this \
                 connection then",
                auth.session_lifetime_ms
            ),
            Ok(_) => {}
            Err(e) => {
                let detail = e.to_string();
                tracing::error!(session, upstream = %target, "the broker refused the interceptor's credentials: {detail}");
                ctx.audit
                    .emit(AuditEvent::UpstreamAuthentication {
                        session,
                        upstream: target,
                        mechanism: mechanism_name(mechanism),
                        detail: detail.clone(),
                    })
                    .await;
                refuse(CloseReason::UpstreamAuthFailed, detail).await;
                return;
            }
        }
    }
    let _ = client.set_nodelay(true);
    tracing::info!(session, client = %client_addr, original_dst = %orig_dst, upstream = %target, "connection open");
    ctx.audit
        .emit(AuditEvent::ConnectionOpen {
            session,
            protocol: "kafka",
            client: client_addr.0,
            original_dst: orig_dst.0,
            upstream: target,
        })
        .await;

    // Every event of this session goes through one handle, so the relay can wait for exactly
    // this session's events to be durable before their effects.
    let audit = ctx.audit.for_session();
    let tap = SessionTap::new(
        (session, client_addr.0),
        audit.clone(),
        Arc::clone(&ctx.topic_ids),
        ctx.config.audit.records,
        crate::recording::session(session, client_addr.0),
    );
    let listener_auth = ListenerAuth::from_listener(listener);
    let relay_limits = RelayLimits {
        max_frame_bytes: limits.max_frame_bytes,
        read_buffer_bytes: limits.read_buffer_bytes,
        max_unanswered: limits.max_in_flight,
        served: listener_auth.served_apis(),
    };
    let mut auth = SessionAuth::new(
        Arc::clone(&ctx.authenticator),
        listener_auth,
        audit.clone(),
        session,
        client_addr.0,
    );
    let policy_config = &ctx.config.policy;
    let check = Arc::new(SessionCheck::new(
        session,
        client_addr.0,
        ctx.policy.current(),
        RecordLimits {
            max_decompressed_bytes: policy_config.max_decompressed_batch_bytes,
            max_records_per_batch: policy_config.max_records_per_batch,
        },
        Arc::clone(&ctx.masking),
    ));
    let mut authz = RequestAuthz::new(
        (session, client_addr.0),
        check,
        Arc::clone(&ctx.topic_ids),
        ctx.policy.clone(),
        AuthzSettings {
            allow_unknown_api_keys: policy_config.allow_unknown_api_keys,
        },
        audit.clone(),
    );
    let response_audit = authz.response_audit();
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let end = {
        let (mut client_rd, mut client_wr) = client.split();
        let (mut up_rd, mut up_wr) = upstream.stream.split();
        let (tx, rx) = in_flight(limits.max_in_flight);
        let requests = relay::requests(
            &mut client_rd,
            &mut up_wr,
            tx,
            relay::Gates {
                auth: &mut auth,
                authz: &mut authz,
                chain: &ctx.chain,
                tap: &tap,
            },
            relay_limits,
            &mut bytes_in,
        );
        let responses = relay::responses(
            &mut up_rd,
            &mut client_wr,
            rx,
            Some(response_audit),
            &tap,
            relay_limits,
            &mut bytes_out,
        );
        tokio::pin!(requests, responses);
        // A broker closes on end of stream and drops responses still due; so does a session.
        tokio::select! {
            end = &mut requests => {
                if end.flush_responses {
                    // The last answer (an authentication failure) goes out before the close.
                    let _ = tokio::time::timeout(FLUSH_BEFORE_CLOSE, &mut responses).await;
                }
                end
            }
            end = &mut responses => end,
            _ = shutdown.changed() => RelayEnd {
                reason: CloseReason::DaemonShutdown,
                detail: None,
                flush_responses: false,
            },
        }
    };
    if end.reason == CloseReason::ClientClosed {
        drain_upstream(&mut upstream.stream).await;
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let routine = matches!(
        end.reason,
        CloseReason::ClientClosed | CloseReason::UpstreamClosed | CloseReason::DaemonShutdown
    );
    match &end.detail {
        Some(detail) if !routine => tracing::warn!(
            session, client = %client_addr, original_dst = %orig_dst, reason = ?end.reason,
            bytes_from_client = bytes_in, bytes_to_client = bytes_out, "connection closed: {detail}"
        ),
        detail => tracing::info!(
            session, client = %client_addr, original_dst = %orig_dst, reason = ?end.reason,
            bytes_from_client = bytes_in, bytes_to_client = bytes_out,
            "connection closed{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
        ),
    }
    ctx.audit
        .emit(AuditEvent::ConnectionClose {
            session,
            client: client_addr.0,
            original_dst: orig_dst.0,
            principal: auth.identity().map(|i| i.principal.clone()),
            bytes_from_client: bytes_in,
            bytes_to_client: bytes_out,
            duration_ms,
            reason: end.reason,
            detail: end.detail,
        })
        .await;
}

/// How long the last answers may take to reach a client that is being closed.
const FLUSH_BEFORE_CLOSE: Duration = Duration::from_secs(5);

/// How long a broker gets to close after the client has gone.
const UPSTREAM_DRAIN: Duration = Duration::from_secs(5);

/// Ends the upstream connection the way the client ended its own: with a FIN after the last
/// request, so the broker still reads and handles every request the client sent. Closing a
/// socket with unread data in it sends a reset instead, and a reset makes the broker drop the
/// requests it has not read yet. So the broker's remaining answers (nobody wants them now) are
/// read and discarded until it closes, for a bounded time.
async fn drain_upstream(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(UPSTREAM_DRAIN, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!("broker did not close within {UPSTREAM_DRAIN:?} of the client");
    }
}

/// The broker and the listener settings for a connection. In listen mode the first listener's
/// settings apply (it names the broker there).
fn route(ctx: &SessionContext, orig_dst: OrigDst) -> Option<(SocketAddr, &Listener)> {
    match &ctx.router {
        Router::Fixed(target) => ctx.config.listeners.first().map(|l| (*target, l)),
        Router::Steered => ctx
            .config
            .listener_for(orig_dst.0)
            .map(|l| (l.upstream.unwrap_or(orig_dst.0), l)),
    }
}

fn mechanism_name(mechanism: UpstreamMechanism) -> &'static str {
    match mechanism {
        UpstreamMechanism::None => "none",
        UpstreamMechanism::Plain => "PLAIN",
        UpstreamMechanism::ScramSha256 => "SCRAM-SHA-256",
        UpstreamMechanism::ScramSha512 => "SCRAM-SHA-512",
    }
}
