//! Encoding packets for either version. MQTT 3.1.1 has no properties and fewer reason codes:
//! those are left out (a 3.1.1 PUBACK is its packet id, a DISCONNECT is empty). AUTH does not
//! exist in 3.1.1 and encodes to nothing there. MQTT 5 acknowledgements use the short forms
//! the spec allows when the reason is success and there are no properties.

use bytes::BytesMut;

use super::{
    frame::put_header, props::put_bytes, Ack, Auth, ConnAck, Connect, Disconnect, Packet,
    PacketType, Properties, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe, Version,
};

impl Packet {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        match self {
            Packet::Connect(p) => p.encode(version, out),
            Packet::ConnAck(p) => p.encode(version, out),
            Packet::Publish(p) => p.encode(version, out),
            Packet::PubAck(a) => a.encode(PacketType::PubAck, version, out),
            Packet::PubRec(a) => a.encode(PacketType::PubRec, version, out),
            Packet::PubRel(a) => a.encode(PacketType::PubRel, version, out),
            Packet::PubComp(a) => a.encode(PacketType::PubComp, version, out),
            Packet::Subscribe(p) => p.encode(version, out),
            Packet::SubAck(p) => p.encode(version, out),
            Packet::Unsubscribe(p) => p.encode(version, out),
            Packet::UnsubAck(p) => p.encode(version, out),
            Packet::PingReq => put_header(out, 0xc0, 0),
            Packet::PingResp => put_header(out, 0xd0, 0),
            Packet::Disconnect(p) => p.encode(version, out),
            Packet::Auth(p) => p.encode(version, out),
        }
    }
}

/// Properties with their length, in MQTT 5 only.
fn props_len(p: &Properties, version: Version) -> usize {
    match version {
        Version::V5 => p.encoded_len(),
        Version::V311 => 0,
    }
}

fn put_props(out: &mut BytesMut, p: &Properties, version: Version) {
    if version == Version::V5 {
        p.encode(out);
    }
}

fn str_len(s: &str) -> usize {
    2 + s.len().min(usize::from(u16::MAX))
}

impl Connect {
    /// A CONNECT says its own version: `_version` is ignored, `self.version` is encoded.
    pub fn encode(&self, _version: Version, out: &mut BytesMut) {
        let version = self.version;
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | ((w.qos as u8) << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        let mut len = str_len(&self.protocol_name) + 1 + 1 + 2;
        len += props_len(&self.properties, version);
        len += str_len(&self.client_id);
        if let Some(w) = &self.will {
            len += props_len(&w.properties, version) + str_len(&w.topic) + 2 + w.payload.len();
        }
        if let Some(u) = &self.username {
            len += str_len(u);
        }
        if let Some(p) = &self.password {
            len += 2 + p.len();
        }
        put_header(out, 0x10, len);
        put_bytes(out, self.protocol_name.as_bytes());
        out.extend_from_slice(&[version.level(), flags]);
        out.extend_from_slice(&self.keep_alive.to_be_bytes());
        put_props(out, &self.properties, version);
        put_bytes(out, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            put_props(out, &w.properties, version);
            put_bytes(out, w.topic.as_bytes());
            put_bytes(out, &w.payload);
        }
        if let Some(u) = &self.username {
            put_bytes(out, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_bytes(out, p);
        }
    }
}

impl ConnAck {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        put_header(out, 0x20, 2 + props_len(&self.properties, version));
        out.extend_from_slice(&[u8::from(self.session_present), self.reason_code]);
        put_props(out, &self.properties, version);
    }
}

impl Publish {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        let mut first = 0x30 | ((self.qos as u8) << 1);
        if self.dup {
            first |= 0x08;
        }
        if self.retain {
            first |= 0x01;
        }
        let id = match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, _) => None,
            (_, id) => Some(id.unwrap_or(1)),
        };
        let len = str_len(&self.topic)
            + if id.is_some() { 2 } else { 0 }
            + props_len(&self.properties, version)
            + self.payload.len();
        put_header(out, first, len);
        put_bytes(out, self.topic.as_bytes());
        if let Some(id) = id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        put_props(out, &self.properties, version);
        out.extend_from_slice(&self.payload);
    }
}

impl Ack {
    pub fn encode(&self, packet: PacketType, version: Version, out: &mut BytesMut) {
        let first = ((packet as u8) << 4)
            | if packet == PacketType::PubRel {
                0b0010
            } else {
                0
            };
        let short =
            version == Version::V311 || (self.reason_code == 0 && self.properties.is_empty());
        if short {
            put_header(out, first, 2);
            out.extend_from_slice(&self.packet_id.to_be_bytes());
            return;
        }
        let with_props = !self.properties.is_empty();
        let len = 3 + if with_props {
            self.properties.encoded_len()
        } else {
            0
        };
        put_header(out, first, len);
        out.extend_from_slice(&self.packet_id.to_be_bytes());
        out.extend_from_slice(&[self.reason_code]);
        if with_props {
            self.properties.encode(out);
        }
    }
}

impl Subscribe {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        let len = 2
            + props_len(&self.properties, version)
            + self
                .filters
                .iter()
                .map(|(f, _)| str_len(f) + 1)
                .sum::<usize>();
        put_header(out, 0x82, len);
        out.extend_from_slice(&self.packet_id.to_be_bytes());
        put_props(out, &self.properties, version);
        for (filter, o) in &self.filters {
            put_bytes(out, filter.as_bytes());
            let mut b = o.qos as u8;
            if version == Version::V5 {
                if o.no_local {
                    b |= 0b0100;
                }
                if o.retain_as_published {
                    b |= 0b1000;
                }
                b |= (o.retain_handling & 0b11) << 4;
            }
            out.extend_from_slice(&[b]);
        }
    }
}

impl SubAck {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        let len = 2 + props_len(&self.properties, version) + self.reason_codes.len();
        put_header(out, 0x90, len);
        out.extend_from_slice(&self.packet_id.to_be_bytes());
        put_props(out, &self.properties, version);
        out.extend_from_slice(&self.reason_codes);
    }
}

impl Unsubscribe {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        let len = 2
            + props_len(&self.properties, version)
            + self.filters.iter().map(|f| str_len(f)).sum::<usize>();
        put_header(out, 0xa2, len);
        out.extend_from_slice(&self.packet_id.to_be_bytes());
        put_props(out, &self.properties, version);
        for filter in &self.filters {
            put_bytes(out, filter.as_bytes());
        }
    }
}

impl UnsubAck {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        match version {
            Version::V311 => {
                put_header(out, 0xb0, 2);
                out.extend_from_slice(&self.packet_id.to_be_bytes());
            }
            Version::V5 => {
                let len = 2 + self.properties.encoded_len() + self.reason_codes.len();
                put_header(out, 0xb0, len);
                out.extend_from_slice(&self.packet_id.to_be_bytes());
                self.properties.encode(out);
                out.extend_from_slice(&self.reason_codes);
            }
        }
    }
}

/// DISCONNECT and AUTH share their MQTT 5 short forms.
fn reason_and_props(first: u8, code: u8, props: &Properties, out: &mut BytesMut) {
    if code == 0 && props.is_empty() {
        put_header(out, first, 0);
    } else if props.is_empty() {
        put_header(out, first, 1);
        out.extend_from_slice(&[code]);
    } else {
        put_header(out, first, 1 + props.encoded_len());
        out.extend_from_slice(&[code]);
        props.encode(out);
    }
}

impl Disconnect {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        match version {
            Version::V311 => put_header(out, 0xe0, 0),
            Version::V5 => reason_and_props(0xe0, self.reason_code, &self.properties, out),
        }
    }
}

impl Auth {
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        if version == Version::V5 {
            reason_and_props(0xf0, self.reason_code, &self.properties, out);
        }
    }
}
