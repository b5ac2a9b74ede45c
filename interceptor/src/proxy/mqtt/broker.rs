//! Packets from the broker: each delivery checked against this subscriber's rights (a
//! narrowed subscription, a session resumed by another principal, a retained message) and
//! masked for it; a delivery it may not have is acknowledged to the broker here, so the
//! broker's flow completes and the client never sees it. SUBACKs for SUBSCRIBEs with refused
//! filters get the refusals merged back in the client's order.

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::mpsc::Sender,
};

use super::{
    batch::{Allowed, Batch},
    client::disconnect,
    End, LocalQos2, Outgoing, Session,
};
use crate::{
    audit::CloseReason,
    mqtt::codec::{decode, reason, split_packet, Ack, Packet, Publish, QoS, RawPacket, SubAck},
    policy::Operation,
    proxy::masking::payload::mask_delivery,
};

struct BrokerSide<'s> {
    s: &'s Session,
    to_client: Sender<Outgoing>,
    to_broker: Sender<Outgoing>,
    /// QoS 2 deliveries dropped here: their PUBREL is answered here.
    local_qos2: LocalQos2,
    batch: Batch,
}

pub(super) async fn run<R: AsyncRead + Unpin>(
    mut rd: R,
    mut buf: BytesMut,
    s: &Session,
    to_client: Sender<Outgoing>,
    to_broker: Sender<Outgoing>,
) -> End {
    let mut side = BrokerSide {
        s,
        to_client,
        to_broker,
        local_qos2: LocalQos2::default(),
        batch: Batch::new(s.audit.for_session()),
    };
    loop {
        let ended = loop {
            let raw = match split_packet(&mut buf, &s.limits) {
                Ok(Some(raw)) => raw,
                Ok(None) => break None,
                Err(e) => break Some(side.broken(format!("bad packet from the broker: {e}"))),
            };
            if let Err(end) = side.handle(raw).await {
                break Some(end);
            }
        };
        if ended.is_none() && super::batch::read_more_now(&mut rd, &mut buf, &side.batch).await {
            continue;
        }
        let flushed = side.batch.flush(s, &side.to_broker, &side.to_client).await;
        if let Some(end) = ended {
            return end;
        }
        if let Err(end) = flushed {
            return end;
        }
        buf.reserve(8 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => return End::clean(CloseReason::UpstreamClosed),
            Ok(0) => {
                return End::new(
                    CloseReason::UpstreamProtocolError,
                    "the broker closed in the middle of a packet",
                )
            }
            Ok(_) => {}
            Err(e) => return End::new(CloseReason::UpstreamError, e.to_string()),
        }
    }
}

impl BrokerSide<'_> {
    async fn handle(&mut self, raw: RawPacket) -> Result<(), End> {
        let packet = match decode(&raw, self.s.version, &self.s.limits) {
            Ok(packet) => packet,
            Err(e) => {
                return Err(self.broken(format!(
                    "malformed {} from the broker: {e}",
                    raw.packet_type.name()
                )))
            }
        };
        match packet {
            Packet::Publish(p) => self.deliver(raw, p).await,
            Packet::PubRel(ack) => match self.local_qos2.take(ack.packet_id) {
                Some(reason_code) => {
                    self.answer_broker(&Packet::PubComp(Ack {
                        packet_id: ack.packet_id,
                        reason_code,
                        properties: Default::default(),
                    }));
                    Ok(())
                }
                None => {
                    self.batch.send_client(raw.frame);
                    Ok(())
                }
            },
            Packet::SubAck(ack) => self.suback(raw, ack),
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubComp(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                self.batch.send_client(raw.frame);
                Ok(())
            }
            Packet::Disconnect(d) => {
                self.batch.send_client(raw.frame);
                Err(End::new(
                    CloseReason::UpstreamClosed,
                    format!("the broker disconnected (reason 0x{:02x})", d.reason_code),
                ))
            }
            other => Err(self.broken(format!(
                "the broker sent {}, which a server never sends",
                other.packet_type().name()
            ))),
        }
    }

    async fn deliver(&mut self, raw: RawPacket, mut p: Publish) -> Result<(), End> {
        let s = self.s;
        let id = p.packet_id.unwrap_or(0);
        if p.topic.is_empty() {
            // The interceptor's CONNECT allowed the broker no aliases.
            return Err(self.broken("the broker used a topic alias it was not allowed".into()));
        }
        let policy = s.policy.current();
        let Some(rule) = s
            .check_delivery(&self.batch.audit, &policy, id, &p.topic)
            .await
        else {
            self.drop_delivery(&p);
            return Ok(());
        };
        let rules = policy.set.delivery_masking(&p.topic, &s.subject());
        let mut rewrite = false;
        if !rules.is_empty() {
            match mask_delivery(&s.masking, &rules, &p.payload).await {
                Ok(masked) => {
                    s.transform_event(
                        &self.batch.audit,
                        &policy,
                        "DELIVERY",
                        id,
                        "delivery",
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
                Err(reason) => {
                    tracing::warn!(session = s.id, topic = %p.topic, "delivery withheld: {reason}");
                    s.transform_event(
                        &self.batch.audit,
                        &policy,
                        "DELIVERY",
                        id,
                        "delivery",
                        &p.topic,
                        &Default::default(),
                        Some(reason),
                    )
                    .await;
                    self.drop_delivery(&p);
                    return Ok(());
                }
            }
        }
        self.batch
            .allowed(
                s,
                Allowed {
                    api: "DELIVERY",
                    op: Operation::Subscribe,
                    topic: &p.topic,
                    rule: rule.as_ref(),
                    version: &policy.version,
                    packet_id: id,
                    payload: Some(&p.payload),
                },
            )
            .await;
        if rewrite {
            let mut out = BytesMut::with_capacity(p.payload.len() + p.topic.len() + 16);
            p.encode(s.version, &mut out);
            self.batch.send_client(out.freeze());
        } else {
            self.batch.send_client(raw.frame);
        }
        Ok(())
    }

    /// A delivery this subscriber does not get: the broker's flow is completed here.
    fn drop_delivery(&mut self, p: &Publish) {
        let Some(id) = p.packet_id else {
            return;
        };
        let ack = Ack {
            packet_id: id,
            reason_code: reason::SUCCESS,
            properties: Default::default(),
        };
        match p.qos {
            QoS::AtLeastOnce => self.answer_broker(&Packet::PubAck(ack)),
            _ => {
                self.local_qos2.insert(id, reason::SUCCESS);
                self.answer_broker(&Packet::PubRec(ack));
            }
        }
    }

    fn suback(&mut self, raw: RawPacket, ack: SubAck) -> Result<(), End> {
        let merged = match self.s.pending_subacks.lock() {
            Ok(mut pending) => pending.remove(&ack.packet_id),
            Err(_) => None,
        };
        let Some(codes) = merged else {
            self.batch.send_client(raw.frame);
            return Ok(());
        };
        let mut from_broker = ack.reason_codes.into_iter();
        let mut reason_codes = Vec::with_capacity(codes.len());
        for code in codes {
            match code {
                Some(refused) => reason_codes.push(refused),
                None => match from_broker.next() {
                    Some(code) => reason_codes.push(code),
                    None => {
                        return Err(self.broken(format!(
                            "the broker's SUBACK {} has fewer codes than filters sent",
                            ack.packet_id
                        )))
                    }
                },
            }
        }
        let mut out = BytesMut::new();
        Packet::SubAck(SubAck {
            packet_id: ack.packet_id,
            properties: ack.properties,
            reason_codes,
        })
        .encode(self.s.version, &mut out);
        self.batch.send_client(out.freeze());
        Ok(())
    }

    fn answer_broker(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.s.version, &mut out);
        self.batch.send_broker(out.freeze());
    }

    /// The broker broke the protocol: the client is told the server failed.
    fn broken(&mut self, detail: String) -> End {
        if let Some(packet) = disconnect(self.s, reason::UNSPECIFIED_ERROR, &detail) {
            self.batch.send_client(packet);
        }
        End::new(CloseReason::UpstreamProtocolError, detail)
    }
}
