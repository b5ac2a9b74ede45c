//! Packets from the client: each PUBLISH checked (publish, retain, payload limits), masked and
//! forwarded or refused; each SUBSCRIBE decided filter by filter; acknowledgements of
//! deliveries passed on. A malformed packet ends the session with the reason code MQTT 5
//! has for it (3.1.1 has none: the connection closes).

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::mpsc::Sender,
};

use super::{
    batch::{Allowed, Batch},
    decide::Verdict,
    End, LocalQos2, Outgoing, Session,
};
use crate::{
    audit::CloseReason,
    config::V3DeniedPublish,
    mqtt::{
        codec::{
            decode, reason, split_packet, Ack, Disconnect, Packet, Property, PropertyId, Publish,
            QoS, RawPacket, SubAck, Subscribe, Version,
        },
        topic::{parse_shared, TopicFilter},
    },
    policy::Operation,
    proxy::masking::payload::{mask_publish, PublishRefusal},
};

/// The client's side of one session.
struct ClientSide<'s> {
    s: &'s Session,
    to_broker: Sender<Outgoing>,
    to_client: Sender<Outgoing>,
    /// Topic aliases the client set up (MQTT 5), resolved here.
    aliases: HashMap<u16, String>,
    /// QoS 2 publishes acknowledged here (3.1.1 refusals acknowledged as mosquitto does).
    local_qos2: LocalQos2,
    batch: Batch,
}

pub(super) async fn run<R: AsyncRead + Unpin>(
    mut rd: R,
    mut buf: BytesMut,
    s: &Session,
    to_broker: Sender<Outgoing>,
    to_client: Sender<Outgoing>,
    expires: Option<tokio::time::Instant>,
    bytes_in: &mut u64,
) -> End {
    let mut side = ClientSide {
        s,
        to_broker,
        to_client,
        aliases: HashMap::new(),
        local_qos2: LocalQos2::default(),
        batch: Batch::new(s.audit.for_session()),
    };
    loop {
        // Everything this read brought, decided; then its events, then its packets.
        let ended = loop {
            let raw = match split_packet(&mut buf, &s.limits) {
                Ok(Some(raw)) => raw,
                Ok(None) => break None,
                Err(e) => {
                    break Some(side.protocol_error(e.reason_code(), format!("bad packet: {e}")))
                }
            };
            *bytes_in += raw.frame.len() as u64;
            if let Err(end) = side.handle(raw).await {
                break Some(end);
            }
        };
        if ended.is_none() && super::batch::read_more_now(&mut rd, &mut buf, &side.batch).await {
            continue;
        }
        let flushed = side.flush().await;
        if let Some(end) = ended {
            return end;
        }
        if let Err(end) = flushed {
            return end;
        }
        buf.reserve(8 * 1024);
        let read = rd.read_buf(&mut buf);
        let n = match expires {
            Some(at) => tokio::select! {
                n = read => n,
                _ = tokio::time::sleep_until(at) => {
                    let end = side.expired();
                    let _ = side.flush().await;
                    return end;
                }
            },
            None => read.await,
        };
        match n {
            Ok(0) if buf.is_empty() => return End::clean(CloseReason::ClientClosed),
            Ok(0) => {
                return End::new(
                    CloseReason::ClientProtocolError,
                    "closed in the middle of a packet",
                )
            }
            Ok(_) => {}
            Err(e) => return End::new(CloseReason::ClientError, e.to_string()),
        }
    }
}

impl ClientSide<'_> {
    async fn flush(&mut self) -> Result<(), End> {
        self.batch
            .flush(self.s, &self.to_broker, &self.to_client)
            .await
    }

    async fn handle(&mut self, raw: RawPacket) -> Result<(), End> {
        let packet = match decode(&raw, self.s.version, &self.s.limits) {
            Ok(packet) => packet,
            Err(e) => {
                return Err(self.protocol_error(
                    e.reason_code(),
                    format!("malformed {}: {e}", raw.packet_type.name()),
                ))
            }
        };
        match packet {
            Packet::Publish(p) => self.publish(raw, p).await,
            Packet::Subscribe(sub) => self.subscribe(raw, sub).await,
            Packet::PubRel(ack) => match self.local_qos2.take(ack.packet_id) {
                Some(reason_code) => {
                    let done = Packet::PubComp(Ack {
                        packet_id: ack.packet_id,
                        reason_code,
                        properties: Default::default(),
                    });
                    self.answer(&done);
                    Ok(())
                }
                None => {
                    self.batch.send_broker(raw.frame);
                    Ok(())
                }
            },
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubComp(_)
            | Packet::PingReq
            | Packet::Unsubscribe(_) => {
                self.batch.send_broker(raw.frame);
                Ok(())
            }
            Packet::Disconnect(_) => {
                self.batch.send_broker(raw.frame);
                Err(End::clean(CloseReason::ClientClosed))
            }
            Packet::Auth(_) => Err(self.protocol_error(
                reason::BAD_AUTHENTICATION_METHOD,
                "enhanced authentication (AUTH) is not offered: the token goes in the CONNECT \
                 password"
                    .into(),
            )),
            other => Err(self.protocol_error(
                reason::PROTOCOL_ERROR,
                format!("{} from a client", other.packet_type().name()),
            )),
        }
    }

    async fn publish(&mut self, raw: RawPacket, mut p: Publish) -> Result<(), End> {
        let s = self.s;
        let id = p.packet_id.unwrap_or(0);
        let mut rewrite = false;
        if let Some(alias) = p.properties.u16_of(PropertyId::TopicAlias) {
            if alias == 0 || alias > s.config.max_topic_aliases {
                return Err(self.protocol_error(
                    reason::TOPIC_ALIAS_INVALID,
                    format!(
                        "topic alias {alias} over the maximum of {}",
                        s.config.max_topic_aliases
                    ),
                ));
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(topic) => p.topic = topic.clone(),
                    None => {
                        return Err(self.protocol_error(
                            reason::PROTOCOL_ERROR,
                            format!("topic alias {alias} was never set"),
                        ))
                    }
                }
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
            p.properties.remove(PropertyId::TopicAlias);
            rewrite = true;
        }
        let policy = s.policy.current();
        let verdict = s
            .check_publish(
                &self.batch.audit,
                &policy,
                "PUBLISH",
                id,
                &p.topic,
                p.retain,
                &p.payload,
            )
            .await;
        let (publish_rule, retain_rule) = match verdict {
            Verdict::Allow { publish, retain } => (publish, retain),
            Verdict::Deny => return self.refuse(&p, reason::NOT_AUTHORIZED),
            Verdict::Violation => return self.refuse(&p, reason::IMPLEMENTATION_SPECIFIC_ERROR),
        };
        let rules = policy.set.publish_masking(&p.topic);
        if !rules.is_empty() {
            match mask_publish(&s.masking, &rules, &p.payload).await {
                Ok(masked) => {
                    s.transform_event(
                        &self.batch.audit,
                        &policy,
                        "PUBLISH",
                        id,
                        "publish",
                        &p.topic,
                        &masked,
                        None,
                    )
                    .await;
                    if let Some(payload) = masked.payload {
                        p.payload = Bytes::from(payload);
                        rewrite = true;
                    }
                }
                Err(PublishRefusal::Rule { rule, detail }) => {
                    tracing::info!(session = s.id, topic = %p.topic, "publish refused by masking rule {rule}: {detail}");
                    s.transform_event(
                        &self.batch.audit,
                        &policy,
                        "PUBLISH",
                        id,
                        "publish",
                        &p.topic,
                        &Default::default(),
                        Some(format!("refused by {rule}: {detail}")),
                    )
                    .await;
                    return self.refuse(&p, reason::PAYLOAD_FORMAT_INVALID);
                }
                Err(PublishRefusal::Vault(detail)) => {
                    tracing::warn!(session = s.id, topic = %p.topic, "publish refused, masking needs the vault: {detail}");
                    s.transform_event(
                        &self.batch.audit,
                        &policy,
                        "PUBLISH",
                        id,
                        "publish",
                        &p.topic,
                        &Default::default(),
                        Some(detail),
                    )
                    .await;
                    return self.refuse(&p, reason::UNSPECIFIED_ERROR);
                }
            }
        }
        self.batch
            .allowed(
                s,
                Allowed {
                    api: "PUBLISH",
                    op: Operation::Publish,
                    topic: &p.topic,
                    rule: publish_rule.as_ref(),
                    version: &policy.version,
                    packet_id: id,
                    payload: Some(&p.payload),
                },
            )
            .await;
        if let Some(rule) = &retain_rule {
            self.batch
                .allowed(
                    s,
                    Allowed {
                        api: "PUBLISH",
                        op: Operation::Retain,
                        topic: &p.topic,
                        rule: rule.as_ref(),
                        version: &policy.version,
                        packet_id: id,
                        payload: None,
                    },
                )
                .await;
        }
        if rewrite {
            let mut out = BytesMut::with_capacity(p.payload.len() + p.topic.len() + 16);
            p.encode(s.version, &mut out);
            self.batch.send_broker(out.freeze());
        } else {
            self.batch.send_broker(raw.frame);
        }
        Ok(())
    }

    /// A PUBLISH that does not go on: answered as the broker would refuse it.
    fn refuse(&mut self, p: &Publish, code: u8) -> Result<(), End> {
        let Some(id) = p.packet_id else {
            // QoS 0 has no answer in either version: dropped, and the decision is audited.
            return Ok(());
        };
        // The PUBCOMP owed if a PUBREL follows the local PUBREC. MQTT 5 ends the flow with a
        // failed PUBREC, but clients send PUBREL anyway (paho-mqtt 2.1 does): it never reaches
        // the broker, and PUBCOMP "packet identifier not found" keeps the failure visible.
        let (code, pubcomp) = match self.s.version {
            Version::V5 => (code, reason::PACKET_IDENTIFIER_NOT_FOUND),
            Version::V311 => match self.s.config.v3_denied_publish {
                V3DeniedPublish::Disconnect => {
                    return Err(End::new(
                        CloseReason::PolicyRefused,
                        format!(
                            "PUBLISH to {:?} refused; MQTT 3.1.1 has no negative acknowledgement, \
                             so the connection closes",
                            p.topic
                        ),
                    ))
                }
                V3DeniedPublish::Acknowledge => (reason::SUCCESS, reason::SUCCESS),
            },
        };
        let ack = Ack {
            packet_id: id,
            reason_code: code,
            properties: Default::default(),
        };
        let answer = match p.qos {
            QoS::AtLeastOnce => Packet::PubAck(ack),
            _ => {
                self.local_qos2.insert(id, pubcomp);
                Packet::PubRec(ack)
            }
        };
        self.answer(&answer);
        Ok(())
    }

    async fn subscribe(&mut self, raw: RawPacket, sub: Subscribe) -> Result<(), End> {
        let s = self.s;
        let policy = s.policy.current();
        let (denied, invalid) = match s.version {
            Version::V5 => (reason::NOT_AUTHORIZED, reason::TOPIC_FILTER_INVALID),
            Version::V311 => (reason::V3_SUBACK_FAILURE, reason::V3_SUBACK_FAILURE),
        };
        let mut codes: Vec<Option<u8>> = Vec::with_capacity(sub.filters.len());
        let mut kept = Vec::with_capacity(sub.filters.len());
        for (text, options) in &sub.filters {
            let filter = match parse_shared(text) {
                Ok(Some((_share, filter))) => TopicFilter::parse(filter),
                Ok(None) => TopicFilter::parse(text),
                Err(e) => Err(e),
            };
            let granted = match filter {
                Ok(filter) => {
                    s.check_subscription(&self.batch.audit, &policy, sub.packet_id, text, &filter)
                        .await
                }
                Err(e) => {
                    s.invalid_filter(
                        &self.batch.audit,
                        &policy,
                        sub.packet_id,
                        text,
                        e.to_string(),
                    )
                    .await;
                    codes.push(Some(invalid));
                    continue;
                }
            };
            if granted {
                codes.push(None);
                kept.push((text.clone(), *options));
            } else {
                codes.push(Some(denied));
            }
        }
        if kept.is_empty() {
            let answer = Packet::SubAck(SubAck {
                packet_id: sub.packet_id,
                properties: Default::default(),
                reason_codes: codes.into_iter().map(|c| c.unwrap_or(denied)).collect(),
            });
            self.answer(&answer);
            return Ok(());
        }
        if kept.len() == sub.filters.len() {
            self.batch.send_broker(raw.frame);
            return Ok(());
        }
        let queued = match s.pending_subacks.lock() {
            Ok(mut pending) if pending.len() < s.max_pending => {
                pending.insert(sub.packet_id, codes);
                true
            }
            _ => false,
        };
        if !queued {
            return Err(self.protocol_error(
                reason::QUOTA_EXCEEDED,
                format!(
                    "more than {} SUBSCRIBEs awaiting their SUBACK",
                    s.max_pending
                ),
            ));
        }
        let narrowed = Subscribe {
            packet_id: sub.packet_id,
            properties: sub.properties,
            filters: kept,
        };
        let mut out = BytesMut::new();
        narrowed.encode(s.version, &mut out);
        self.batch.send_broker(out.freeze());
        Ok(())
    }

    /// A packet the interceptor answers itself.
    fn answer(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.s.version, &mut out);
        self.batch.send_client(out.freeze());
    }

    /// Ends the session for a packet the client should not have sent: MQTT 5 gets a
    /// DISCONNECT with the reason, 3.1.1 just the close.
    fn protocol_error(&mut self, code: u8, detail: String) -> End {
        if let Some(packet) = disconnect(self.s, code, &detail) {
            self.batch.send_client(packet);
        }
        End::new(CloseReason::ClientProtocolError, detail)
    }

    /// The token (or the maximum session lifetime) ran out: MQTT 5 has a reason code for it.
    fn expired(&mut self) -> End {
        let detail = "the session's token expired".to_string();
        if let Some(packet) = disconnect(self.s, reason::MAXIMUM_CONNECT_TIME, &detail) {
            self.batch.send_client(packet);
        }
        End::new(CloseReason::SessionExpired, detail)
    }
}

/// A DISCONNECT for the client (MQTT 5 only; 3.1.1 servers just close).
pub(super) fn disconnect(s: &Session, code: u8, detail: &str) -> Option<Bytes> {
    if s.version != Version::V5 {
        return None;
    }
    let mut properties = crate::mqtt::codec::Properties::default();
    let mut end = detail.len().min(256);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    properties.set(Property::Utf8(
        PropertyId::ReasonString,
        detail.get(..end).unwrap_or_default().to_owned(),
    ));
    let mut out = BytesMut::new();
    Packet::Disconnect(Disconnect {
        reason_code: code,
        properties,
    })
    .encode(s.version, &mut out);
    Some(out.freeze())
}
