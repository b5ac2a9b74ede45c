//! The start of an MQTT session: the client's CONNECT read and authenticated here, its will
//! message checked (and masked) like any publish, then the interceptor's own CONNECT to the
//! broker with its own credentials, and the broker's CONNACK passed back with the limits this
//! side enforces. A client that fails any of it never reaches the broker.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    batch::{Allowed, Batch},
    decide::Verdict,
    detect::{detect, Detected},
    login::{login, LoggedIn},
    End, Session,
};
use crate::{
    addr::{ClientAddr, OrigDst},
    audit::{AuditEvent, AuditLog, AuthOutcome, CloseReason},
    config::{Listener, Protocol},
    mqtt::codec::{
        decode, decode_connect, reason, split_packet, ConnAck, Connect, DecodeError, Limits,
        Packet, PacketType, Property, PropertyId, RawPacket, Version,
    },
    policy::Operation,
    proxy::{
        masking::payload::{mask_publish, PublishRefusal},
        session::SessionContext,
        upstream::{self, Upstream},
    },
};

/// A session past its CONNACK.
pub(super) struct Opened {
    pub upstream: Upstream,
    /// Bytes the broker sent after its CONNACK (already read).
    pub upstream_buf: BytesMut,
    pub session: Session,
}

/// Why reading one packet stopped.
pub(super) enum ReadError {
    Closed,
    /// The peer closed in the middle of a packet.
    Cut,
    Io(std::io::Error),
    Frame(String),
}

/// Reads until one whole packet is in `buf` and splits it off.
pub(super) async fn read_packet<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<RawPacket, ReadError> {
    loop {
        match split_packet(buf, limits) {
            Ok(Some(raw)) => return Ok(raw),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Frame(e.to_string())),
        }
        buf.reserve(8 * 1024);
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Err(ReadError::Closed),
            Ok(0) => return Err(ReadError::Cut),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn open(
    ctx: &Arc<SessionContext>,
    listener: &Listener,
    target: SocketAddr,
    session: u64,
    (client_addr, orig_dst): (ClientAddr, OrigDst),
    client: &mut TcpStream,
    buf: &mut BytesMut,
    audit: &AuditLog,
) -> Result<Opened, End> {
    let config = &ctx.config.mqtt;
    let limits = Limits {
        max_packet_bytes: config.max_packet_bytes,
        max_topic_bytes: config.max_topic_bytes,
    };
    let wait = Duration::from_millis(config.connect_timeout_ms);
    let refuse_connection = |reason: CloseReason, detail: String| {
        tracing::warn!(session, client = %client_addr, original_dst = %orig_dst, "refused: {detail}");
        ctx.audit.emit(AuditEvent::ConnectionRefused {
            session,
            client: client_addr.0,
            original_dst: orig_dst.0,
            reason,
            detail: detail.clone(),
        })
    };

    // The CONNECT, within the time limit, and only a CONNECT.
    let raw = match tokio::time::timeout(wait, read_packet(client, buf, &limits)).await {
        Err(_) => {
            let detail = format!("no CONNECT within {wait:?}");
            refuse_connection(CloseReason::ClientProtocolError, detail.clone()).await;
            return Err(End::new(CloseReason::ClientProtocolError, detail));
        }
        Ok(Ok(raw)) if raw.packet_type == PacketType::Connect => raw,
        Ok(read) => {
            let seen = detect(buf.as_ref());
            let (reason, detail) = match (&read, seen) {
                (_, Detected::Kafka | Detected::Tls | Detected::Http) => (
                    CloseReason::ProtocolMismatch,
                    format!(
                        "{} on an MQTT listener ({})",
                        seen.name(),
                        listener.protocol.as_str()
                    ),
                ),
                (Ok(raw), _) => (
                    CloseReason::ClientProtocolError,
                    format!("{} before CONNECT", raw.packet_type.name()),
                ),
                (Err(ReadError::Closed), _) => (
                    CloseReason::ClientClosed,
                    "closed before sending CONNECT".into(),
                ),
                (Err(ReadError::Cut), _) => (
                    CloseReason::ClientProtocolError,
                    "closed in the middle of its CONNECT".into(),
                ),
                (Err(ReadError::Io(e)), _) => (CloseReason::ClientError, e.to_string()),
                (Err(ReadError::Frame(e)), _) => (
                    CloseReason::ClientProtocolError,
                    format!("bad CONNECT: {e}"),
                ),
            };
            refuse_connection(reason, detail.clone()).await;
            return Err(End::new(reason, detail));
        }
    };
    let connect = match decode_connect(&raw, &limits) {
        Ok(connect) => connect,
        Err(e) => {
            let detail = format!("malformed CONNECT: {e}");
            // The level byte says which CONNACK the client can read.
            // 3.1.1 has return codes for two of these; otherwise it just closes.
            match (&e, connect_level(&raw)) {
                (_, Some(5)) => {
                    let _ =
                        write_connack(client, Version::V5, e.reason_code(), Some(&detail)).await;
                }
                (DecodeError::UnsupportedVersion { .. }, _) => {
                    let code = reason::V3_UNACCEPTABLE_PROTOCOL_VERSION;
                    let _ = write_connack(client, Version::V311, code, None).await;
                }
                (DecodeError::ClientIdRejected, _) => {
                    let code = reason::V3_IDENTIFIER_REJECTED;
                    let _ = write_connack(client, Version::V311, code, None).await;
                }
                _ => {}
            }
            refuse_connection(CloseReason::ClientProtocolError, detail.clone()).await;
            return Err(End::new(CloseReason::ClientProtocolError, detail));
        }
    };
    let version = connect.version;

    // Who it is.
    let logged_in = match login(&ctx.authenticator, listener, config.username, &connect).await {
        Ok(l) => l,
        Err(refused) => {
            tracing::warn!(session, client = %client_addr, mechanism = refused.mechanism, reason = refused.reason, "mqtt authentication failed: {}", refused.detail);
            audit
                .emit(AuditEvent::Authentication {
                    session,
                    client: client_addr.0,
                    mechanism: refused.mechanism.to_owned(),
                    outcome: AuthOutcome::Failure,
                    reauthentication: false,
                    principal: None,
                    groups: Vec::new(),
                    issuer: None,
                    client_id: Some(connect.client_id.clone()),
                    session_expires: None,
                    token_sha256: refused.token_sha256,
                    reason: Some(refused.reason),
                    detail: Some(refused.detail.clone()),
                })
                .await;
            let code = match version {
                Version::V5 => reason::BAD_USERNAME_OR_PASSWORD,
                Version::V311 => reason::V3_BAD_USERNAME_OR_PASSWORD,
            };
            let _ = audit.sync().await;
            let _ = write_connack(client, version, code, Some(&refused.detail)).await;
            return Err(End::new(CloseReason::AuthenticationFailed, refused.detail));
        }
    };
    audit_login(audit, session, client_addr, &connect, &logged_in).await;

    let mut state = Session {
        id: session,
        client: client_addr.0,
        version,
        limits,
        identity: logged_in.identity,
        client_id: connect.client_id.clone(),
        policy: ctx.policy.clone(),
        masking: Arc::clone(&ctx.masking),
        audit: audit.clone(),
        records: ctx.config.audit.records,
        config: config.clone(),
        max_pending: ctx.config.limits.max_in_flight,
        pending_subacks: Mutex::new(HashMap::new()),
        recorder: crate::recording::mqtt_session(session, client_addr.0),
        expires: logged_in.expires,
    };
    if let Some(recorder) = &state.recorder {
        recorder.identity(&state.identity.principal);
    }

    // The will is a publish the broker makes on the client's behalf later: checked now.
    let mut upstream_connect = connect.clone();
    if let Some(will) = upstream_connect.will.as_mut() {
        let policy = state.policy.current();
        let verdict = state
            .check_publish(
                audit,
                &policy,
                "CONNECT",
                0,
                &will.topic,
                will.retain,
                &will.payload,
            )
            .await;
        if let Verdict::Allow { publish, retain } = verdict {
            let rules = policy.set.publish_masking(&will.topic);
            if !rules.is_empty() {
                match mask_publish(&state.masking, &rules, &will.payload).await {
                    Ok(masked) => {
                        state
                            .transform_event(
                                audit,
                                &policy,
                                "CONNECT",
                                0,
                                "publish",
                                &will.topic,
                                &masked,
                                None,
                            )
                            .await;
                        if let Some(payload) = masked.payload {
                            will.payload = Bytes::from(payload);
                        }
                    }
                    Err(refusal) => {
                        let detail = match refusal {
                            PublishRefusal::Rule { rule, detail } => {
                                format!("masking rule {rule}: {detail}")
                            }
                            PublishRefusal::Vault(detail) => detail,
                        };
                        return Err(refuse_will(client, audit, version, detail).await);
                    }
                }
            }
            let mut batch = Batch::new(audit.clone());
            // After masking: the records digest is of the will the broker gets.
            let mut allowed = vec![(Operation::Publish, publish, Some(&will.payload[..]))];
            if let Some(rule) = retain {
                allowed.push((Operation::Retain, rule, None));
            }
            for (op, rule, payload) in &allowed {
                batch
                    .allowed(
                        &state,
                        Allowed {
                            api: "CONNECT",
                            op: *op,
                            topic: &will.topic,
                            rule: rule.as_ref(),
                            version: &policy.version,
                            packet_id: 0,
                            payload: *payload,
                        },
                    )
                    .await;
            }
            batch.emit(&state).await;
        } else {
            let detail = format!("the will message to {:?} is not allowed", will.topic);
            return Err(refuse_will(client, audit, version, detail).await);
        }
    }

    // The broker, with the interceptor's own login.
    let timeout = Duration::from_millis(ctx.config.limits.upstream_connect_timeout_ms);
    let mut upstream = match upstream::connect(target, &ctx.exempt, timeout).await {
        Ok(upstream) => upstream,
        Err(e) => {
            let detail = e.to_string();
            refuse_connection(CloseReason::UpstreamUnreachable, detail.clone()).await;
            let _ = write_connack(client, version, server_unavailable(version), None).await;
            return Err(End::new(CloseReason::UpstreamUnreachable, detail));
        }
    };
    let credentials = &ctx.mqtt_credentials;
    upstream_connect.username = credentials.as_ref().map(|c| c.username.clone());
    upstream_connect.password = credentials
        .as_ref()
        .map(|c| Bytes::from(c.password.clone().into_bytes()));
    // Aliases are resolved here: the broker must not set any up towards the interceptor.
    upstream_connect
        .properties
        .remove(PropertyId::TopicAliasMaximum);
    upstream_connect
        .properties
        .remove(PropertyId::AuthenticationMethod);
    upstream_connect
        .properties
        .remove(PropertyId::AuthenticationData);
    if version == Version::V5 {
        let ours = u32::try_from(limits.max_packet_bytes).unwrap_or(u32::MAX);
        let theirs = upstream_connect
            .properties
            .u32_of(PropertyId::MaximumPacketSize)
            .unwrap_or(u32::MAX);
        upstream_connect.properties.set(Property::FourByte(
            PropertyId::MaximumPacketSize,
            ours.min(theirs),
        ));
    }
    let mut out = BytesMut::new();
    upstream_connect.encode(version, &mut out);
    let mut upstream_buf = BytesMut::with_capacity(8 * 1024);
    let connack = async {
        upstream
            .stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        let raw = read_packet(&mut upstream.stream, &mut upstream_buf, &limits)
            .await
            .map_err(|e| match e {
                ReadError::Closed | ReadError::Cut => "the broker closed before its CONNACK".into(),
                ReadError::Io(e) => e.to_string(),
                ReadError::Frame(e) => e,
            })?;
        match decode(&raw, version, &limits) {
            Ok(Packet::ConnAck(ack)) => Ok(ack),
            Ok(other) => Err(format!(
                "the broker answered CONNECT with {}",
                other.packet_type().name()
            )),
            Err(e) => Err(format!("malformed CONNACK: {e}")),
        }
    };
    let connack = match tokio::time::timeout(wait, connack).await {
        Ok(Ok(ack)) => ack,
        Ok(Err(detail)) => {
            let _ = write_connack(client, version, server_unavailable(version), None).await;
            return Err(End::new(CloseReason::UpstreamProtocolError, detail));
        }
        Err(_) => {
            let detail = format!("the broker sent no CONNACK within {wait:?}");
            let _ = write_connack(client, version, server_unavailable(version), None).await;
            return Err(End::new(CloseReason::UpstreamUnreachable, detail));
        }
    };
    if connack.reason_code != reason::SUCCESS {
        let refused_us = matches!(
            (version, connack.reason_code),
            (
                Version::V5,
                reason::BAD_USERNAME_OR_PASSWORD | reason::NOT_AUTHORIZED
            ) | (
                Version::V311,
                reason::V3_BAD_USERNAME_OR_PASSWORD | reason::V3_NOT_AUTHORIZED
            )
        );
        if refused_us {
            let detail = format!(
                "the broker refused the interceptor's credentials (CONNACK 0x{:02x})",
                connack.reason_code
            );
            tracing::error!(session, upstream = %target, "{detail}");
            audit
                .emit(AuditEvent::UpstreamAuthentication {
                    session,
                    upstream: target,
                    mechanism: "MQTT",
                    detail: detail.clone(),
                })
                .await;
            let _ = audit.sync().await;
            let _ = write_connack(client, version, server_unavailable(version), None).await;
            return Err(End::new(CloseReason::UpstreamAuthFailed, detail));
        }
        // Anything else (a client id the broker refuses, a banned client): the broker's answer.
        let detail = format!(
            "the broker refused the session (CONNACK 0x{:02x})",
            connack.reason_code
        );
        let _ = audit.sync().await;
        let _ = write_ack(client, version, &connack).await;
        return Err(End::new(CloseReason::UpstreamClosed, detail));
    }
    if let Some(assigned) = connack
        .properties
        .str_of(PropertyId::AssignedClientIdentifier)
    {
        state.client_id = assigned.to_owned();
    }
    audit
        .emit(AuditEvent::ConnectionOpen {
            session,
            protocol: Protocol::Mqtt.as_str(),
            client: client_addr.0,
            original_dst: orig_dst.0,
            upstream: target,
        })
        .await;
    tracing::info!(session, client = %client_addr, original_dst = %orig_dst, upstream = %target, principal = %state.identity.principal, client_id = %state.client_id, "mqtt connection open");
    let mut to_client = connack.clone();
    if version == Version::V5 {
        // Aliases from the client are resolved here, up to this many.
        to_client.properties.remove(PropertyId::TopicAlias);
        let aliases = config.max_topic_aliases;
        if aliases == 0 {
            to_client.properties.remove(PropertyId::TopicAliasMaximum);
        } else {
            to_client
                .properties
                .set(Property::TwoByte(PropertyId::TopicAliasMaximum, aliases));
        }
        let ours = u32::try_from(limits.max_packet_bytes).unwrap_or(u32::MAX);
        let theirs = connack
            .properties
            .u32_of(PropertyId::MaximumPacketSize)
            .unwrap_or(u32::MAX);
        to_client.properties.set(Property::FourByte(
            PropertyId::MaximumPacketSize,
            ours.min(theirs),
        ));
    }
    if let Some(recorder) = &state.recorder {
        // The client's CONNECT without its password: the recording never holds a secret.
        let mut recorded = connect.clone();
        recorded.password = None;
        let mut frame = BytesMut::new();
        recorded.encode(version, &mut frame);
        recorder.to_broker(&[frame.freeze()]);
    }
    if let Err(e) = audit.sync().await {
        let _ = write_connack(client, version, server_unavailable(version), None).await;
        return Err(End::new(CloseReason::AuditUnavailable, e.to_string()));
    }
    if let Err(e) = write_ack(client, version, &to_client).await {
        return Err(End::new(CloseReason::ClientError, e.to_string()));
    }
    Ok(Opened {
        upstream,
        upstream_buf,
        session: state,
    })
}

/// The protocol level byte of a CONNECT that did not decode, when it can be read.
fn connect_level(raw: &RawPacket) -> Option<u8> {
    let body = raw.body();
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

fn server_unavailable(version: Version) -> u8 {
    match version {
        Version::V5 => reason::SERVER_UNAVAILABLE,
        Version::V311 => reason::V3_SERVER_UNAVAILABLE,
    }
}

async fn write_connack(
    client: &mut TcpStream,
    version: Version,
    code: u8,
    reason_string: Option<&str>,
) -> std::io::Result<()> {
    let mut ack = ConnAck {
        session_present: false,
        reason_code: code,
        properties: Default::default(),
    };
    if let (Version::V5, Some(text)) = (version, reason_string) {
        ack.properties.set(Property::Utf8(
            PropertyId::ReasonString,
            truncate(text, 256).to_owned(),
        ));
    }
    write_ack(client, version, &ack).await
}

async fn write_ack(client: &mut TcpStream, version: Version, ack: &ConnAck) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    ack.encode(version, &mut out);
    client.write_all(&out).await?;
    client.flush().await
}

/// A will the policy refuses: CONNACK "not authorized", audited, closed.
async fn refuse_will(
    client: &mut TcpStream,
    audit: &AuditLog,
    version: Version,
    detail: String,
) -> End {
    let code = match version {
        Version::V5 => reason::NOT_AUTHORIZED,
        Version::V311 => reason::V3_NOT_AUTHORIZED,
    };
    let _ = audit.sync().await;
    let _ = write_connack(client, version, code, Some(&detail)).await;
    End::new(CloseReason::PolicyRefused, detail)
}

async fn audit_login(
    audit: &AuditLog,
    session: u64,
    client: ClientAddr,
    connect: &Connect,
    logged_in: &LoggedIn,
) {
    let identity = &logged_in.identity;
    tracing::info!(session, client = %client, principal = %identity.principal, mechanism = identity.mechanism, "mqtt client authenticated");
    audit
        .emit(AuditEvent::Authentication {
            session,
            client: client.0,
            mechanism: identity.mechanism.to_owned(),
            outcome: AuthOutcome::Success,
            reauthentication: false,
            principal: Some(identity.principal.clone()),
            groups: identity.groups.clone(),
            issuer: identity.issuer.clone(),
            client_id: Some(connect.client_id.clone()),
            session_expires: logged_in.session_expires.map(crate::proxy::auth::rfc3339),
            token_sha256: logged_in.token_sha256.clone(),
            reason: None,
            detail: logged_in
                .token_client_id
                .as_ref()
                .map(|c| format!("token client_id {c}")),
        })
        .await;
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
