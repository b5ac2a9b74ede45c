//! The replay of an MQTT session: each recorded packet decoded with the daemon's own codec.
//! The version comes from the recorded CONNECT (recorded without its password), which is the
//! first packet of every MQTT recording.

use bytes::{Bytes, BytesMut};

use super::replay::{MqttPacket, Text};
use crate::mqtt::codec::{decode, decode_connect, split_packet, Limits, Packet, QoS, Version};

/// Packets in a recording are at most a recorded frame long.
const LIMITS: Limits = Limits {
    max_packet_bytes: super::format::MAX_RECORD_BYTES,
    max_topic_bytes: 65_535,
};

#[derive(Default)]
pub(super) struct Decoder {
    version: Option<Version>,
}

impl Decoder {
    /// One recorded packet; `payloads` shows PUBLISH payloads.
    pub fn packet(&mut self, frame: &Bytes, payloads: bool) -> MqttPacket {
        let mut out = MqttPacket {
            size: frame.len() as u64,
            packet: "?",
            ..Default::default()
        };
        let mut buf = BytesMut::from(&frame[..]);
        let raw = match split_packet(&mut buf, &LIMITS) {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                out.decode_error = Some("an incomplete packet".into());
                return out;
            }
            Err(e) => {
                out.decode_error = Some(e.to_string());
                return out;
            }
        };
        out.packet = raw.packet_type.name();
        let packet = match self.version {
            None => decode_connect(&raw, &LIMITS).map(Packet::Connect),
            Some(version) => decode(&raw, version, &LIMITS),
        };
        let packet = match packet {
            Ok(packet) => packet,
            Err(e) => {
                out.decode_error = Some(e.to_string());
                return out;
            }
        };
        match packet {
            Packet::Connect(c) => {
                self.version = Some(c.version);
                out.topic = c.will.as_ref().map(|w| format!("will {}", w.topic));
                out.filters = vec![format!(
                    "client id {:?}, MQTT {}, clean start {}",
                    c.client_id,
                    c.version.name(),
                    c.clean_start
                )];
            }
            Packet::Publish(p) => {
                out.packet_id = p.packet_id;
                out.topic = Some(p.topic.clone());
                out.qos = Some(qos(p.qos));
                out.retain = p.retain;
                if payloads {
                    out.payload = Some(Text::of(Some(&p.payload)));
                }
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                out.packet_id = Some(a.packet_id);
                out.reason_codes = vec![a.reason_code];
            }
            Packet::Subscribe(s) => {
                out.packet_id = Some(s.packet_id);
                out.filters = s.filters.iter().map(|(f, _)| f.clone()).collect();
            }
            Packet::SubAck(s) => {
                out.packet_id = Some(s.packet_id);
                out.reason_codes = s.reason_codes;
            }
            Packet::Unsubscribe(u) => {
                out.packet_id = Some(u.packet_id);
                out.filters = u.filters;
            }
            Packet::UnsubAck(u) => {
                out.packet_id = Some(u.packet_id);
                out.reason_codes = u.reason_codes;
            }
            Packet::ConnAck(c) => out.reason_codes = vec![c.reason_code],
            Packet::Disconnect(d) => out.reason_codes = vec![d.reason_code],
            Packet::Auth(a) => out.reason_codes = vec![a.reason_code],
            Packet::PingReq | Packet::PingResp => {}
        }
        out
    }
}

fn qos(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// One line of the text timeline.
pub(super) fn text(p: &MqttPacket) -> String {
    let mut s = p.packet.to_string();
    if let Some(id) = p.packet_id {
        s.push_str(&format!(" id {id}"));
    }
    if let Some(topic) = &p.topic {
        s.push_str(&format!(" {topic}"));
    }
    if let Some(q) = p.qos {
        s.push_str(&format!(" qos {q}"));
    }
    if p.retain {
        s.push_str(" retained");
    }
    if !p.filters.is_empty() {
        s.push_str(&format!(" [{}]", p.filters.join(", ")));
    }
    if !p.reason_codes.is_empty() {
        let codes: Vec<String> = p
            .reason_codes
            .iter()
            .map(|c| format!("0x{c:02x}"))
            .collect();
        s.push_str(&format!(" codes {}", codes.join(" ")));
    }
    s.push_str(&format!(" ({} B)", p.size));
    if let Some(payload) = &p.payload {
        s.push_str(&format!(" payload {}", payload.show()));
    }
    if let Some(e) = &p.decode_error {
        s.push_str(&format!(" (not decoded: {e})"));
    }
    s
}
