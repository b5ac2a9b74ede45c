//! Decoding packet bodies, with the checks the specs ask of a receiver. Every error carries the
//! MQTT 5 reason code a DISCONNECT (or CONNACK) answering it uses.

use thiserror::Error;

use super::{
    cursor::Cursor,
    props::{Place, Properties, PropertyId},
    reason, Ack, Auth, ConnAck, Connect, Disconnect, Limits, Packet, PacketType, Publish, QoS,
    RawPacket, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Version, Will,
};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("the packet ends inside its {0}")]
    Truncated(&'static str),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the {0} is not valid UTF-8 (or holds U+0000)")]
    BadUtf8(&'static str),
    #[error("unsupported protocol {name:?} level {level} (MQTT 3.1.1 and 5 are supported)")]
    UnsupportedVersion { name: String, level: u8 },
    #[error("an empty client identifier needs a clean session (MQTT 3.1.1)")]
    ClientIdRejected,
    #[error("a topic name of {len} bytes is longer than the limit of {max}")]
    TopicTooLong { len: usize, max: usize },
    #[error("a topic filter of {len} bytes is longer than the limit of {max}")]
    FilterTooLong { len: usize, max: usize },
    #[error("invalid topic name: {0}")]
    TopicName(String),
}

impl DecodeError {
    /// The MQTT 5 reason code for a DISCONNECT or CONNACK answering it.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Truncated(_) | DecodeError::Malformed(_) | DecodeError::BadUtf8(_) => {
                reason::MALFORMED_PACKET
            }
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::UnsupportedVersion { .. } => reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::ClientIdRejected => reason::CLIENT_IDENTIFIER_NOT_VALID,
            DecodeError::TopicTooLong { .. } | DecodeError::TopicName(_) => {
                reason::TOPIC_NAME_INVALID
            }
            DecodeError::FilterTooLong { .. } => reason::TOPIC_FILTER_INVALID,
        }
    }
}

/// A CONNECT: its own bytes say the version.
pub fn decode_connect(raw: &RawPacket, limits: &Limits) -> Result<Connect, DecodeError> {
    if raw.packet_type != PacketType::Connect {
        return Err(DecodeError::Protocol(format!(
            "{} where a CONNECT was expected",
            raw.packet_type.name()
        )));
    }
    fixed_flags(raw, 0)?;
    let mut cur = Cursor::new(&raw.frame, raw.body_offset);
    let name = cur.string("protocol name")?;
    let level = cur.u8("protocol level")?;
    let version = match (name.as_str(), level) {
        ("MQTT", 4) => Version::V311,
        ("MQTT", 5) => Version::V5,
        _ => return Err(DecodeError::UnsupportedVersion { name, level }),
    };
    let flags = cur.u8("connect flags")?;
    // §3.1.2.3: the reserved flag must be 0.
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed(
            "the reserved connect flag is set".into(),
        ));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain set without a will".into(),
        ));
    }
    let will_qos =
        QoS::from_u8(will_qos).ok_or_else(|| DecodeError::Malformed("will QoS 3".into()))?;
    // 3.1.1 §3.1.2.9: a password needs a username; MQTT 5 dropped that rule.
    if version == Version::V311 && has_password && !has_username {
        return Err(DecodeError::Malformed(
            "a password without a username (MQTT 3.1.1)".into(),
        ));
    }
    let keep_alive = cur.u16("keep alive")?;
    let properties = match version {
        Version::V5 => Properties::decode(&mut cur, Place::Packet(PacketType::Connect))?,
        Version::V311 => Properties::default(),
    };
    let client_id = cur.string("client identifier")?;
    if version == Version::V311 && client_id.is_empty() && !clean_start {
        return Err(DecodeError::ClientIdRejected);
    }
    let will = if will_flag {
        let properties = match version {
            Version::V5 => Properties::decode(&mut cur, Place::Will)?,
            Version::V311 => Properties::default(),
        };
        let topic = cur.string("will topic")?;
        topic_name(&topic, limits, false)?;
        let payload = cur.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(cur.string("username")?)
    } else {
        None
    };
    let password = if has_password {
        Some(cur.binary("password")?)
    } else {
        None
    };
    cur.finish("CONNECT")?;
    Ok(Connect {
        version,
        protocol_name: name,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

/// Any packet of a session whose version is known.
pub fn decode(raw: &RawPacket, version: Version, limits: &Limits) -> Result<Packet, DecodeError> {
    let v5 = version == Version::V5;
    let mut cur = Cursor::new(&raw.frame, raw.body_offset);
    let props = |cur: &mut Cursor<'_>, packet: PacketType| -> Result<Properties, DecodeError> {
        if v5 {
            Properties::decode(cur, Place::Packet(packet))
        } else {
            Ok(Properties::default())
        }
    };
    let packet = match raw.packet_type {
        PacketType::Connect => return decode_connect(raw, limits).map(Packet::Connect),
        PacketType::ConnAck => {
            fixed_flags(raw, 0)?;
            let flags = cur.u8("acknowledge flags")?;
            if flags & 0xfe != 0 {
                return Err(DecodeError::Malformed(
                    "reserved CONNACK flags are set".into(),
                ));
            }
            let reason_code = cur.u8("reason code")?;
            let properties = props(&mut cur, PacketType::ConnAck)?;
            Packet::ConnAck(ConnAck {
                session_present: flags & 1 != 0,
                reason_code,
                properties,
            })
        }
        PacketType::Publish => Packet::Publish(publish(raw, &mut cur, version, limits)?),
        PacketType::PubAck => Packet::PubAck(ack(raw, &mut cur, version, 0)?),
        PacketType::PubRec => Packet::PubRec(ack(raw, &mut cur, version, 0)?),
        // §3.6.1: PUBREL's fixed-header flags are 0010.
        PacketType::PubRel => Packet::PubRel(ack(raw, &mut cur, version, 0b0010)?),
        PacketType::PubComp => Packet::PubComp(ack(raw, &mut cur, version, 0)?),
        PacketType::Subscribe => {
            fixed_flags(raw, 0b0010)?;
            let packet_id = packet_id(&mut cur)?;
            let properties = props(&mut cur, PacketType::Subscribe)?;
            let mut filters = Vec::new();
            while cur.remaining() > 0 {
                let filter = cur.string("topic filter")?;
                check_filter(&filter, limits)?;
                let options = cur.u8("subscription options")?;
                filters.push((filter, subscription_options(options, version)?));
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("a SUBSCRIBE without filters".into()));
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        }
        PacketType::SubAck => {
            fixed_flags(raw, 0)?;
            let packet_id = packet_id(&mut cur)?;
            let properties = props(&mut cur, PacketType::SubAck)?;
            let reason_codes = cur.rest().to_vec();
            if !v5 {
                if let Some(bad) = reason_codes.iter().find(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
                    return Err(DecodeError::Malformed(format!(
                        "SUBACK return code 0x{bad:02x}"
                    )));
                }
            }
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        }
        PacketType::Unsubscribe => {
            fixed_flags(raw, 0b0010)?;
            let packet_id = packet_id(&mut cur)?;
            let properties = props(&mut cur, PacketType::Unsubscribe)?;
            let mut filters = Vec::new();
            while cur.remaining() > 0 {
                let filter = cur.string("topic filter")?;
                check_filter(&filter, limits)?;
                filters.push(filter);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol(
                    "an UNSUBSCRIBE without filters".into(),
                ));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        }
        PacketType::UnsubAck => {
            fixed_flags(raw, 0)?;
            let packet_id = packet_id(&mut cur)?;
            let (properties, reason_codes) = if v5 {
                let p = props(&mut cur, PacketType::UnsubAck)?;
                (p, cur.rest().to_vec())
            } else {
                (Properties::default(), Vec::new())
            };
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        }
        PacketType::PingReq => {
            fixed_flags(raw, 0)?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            fixed_flags(raw, 0)?;
            Packet::PingResp
        }
        PacketType::Disconnect => {
            fixed_flags(raw, 0)?;
            let (reason_code, properties) = short_reason(&mut cur, v5, PacketType::Disconnect)?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        PacketType::Auth => {
            if !v5 {
                return Err(DecodeError::Protocol(
                    "AUTH does not exist in MQTT 3.1.1".into(),
                ));
            }
            fixed_flags(raw, 0)?;
            let (reason_code, properties) = short_reason(&mut cur, v5, PacketType::Auth)?;
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        }
    };
    cur.finish(raw.packet_type.name())?;
    Ok(packet)
}

fn publish(
    raw: &RawPacket,
    cur: &mut Cursor<'_>,
    version: Version,
    limits: &Limits,
) -> Result<Publish, DecodeError> {
    let dup = raw.flags & 0b1000 != 0;
    let retain = raw.flags & 0b0001 != 0;
    let qos = QoS::from_u8((raw.flags >> 1) & 0b11)
        .ok_or_else(|| DecodeError::Malformed("PUBLISH with QoS 3".into()))?;
    // §3.3.1.1: DUP must be 0 for QoS 0.
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH".into()));
    }
    let topic = cur.string("topic name")?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(packet_id(cur)?),
    };
    let properties = match version {
        Version::V5 => Properties::decode(cur, Place::Packet(PacketType::Publish))?,
        Version::V311 => Properties::default(),
    };
    let aliased = properties.get(PropertyId::TopicAlias).is_some();
    topic_name(&topic, limits, version == Version::V5 && aliased)?;
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload: cur.rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: the id, then (MQTT 5, when present) reason and properties.
fn ack(
    raw: &RawPacket,
    cur: &mut Cursor<'_>,
    version: Version,
    flags: u8,
) -> Result<Ack, DecodeError> {
    fixed_flags(raw, flags)?;
    let packet_id = packet_id(cur)?;
    let (reason_code, properties) = match version {
        Version::V5 => short_reason(cur, true, raw.packet_type)?,
        Version::V311 => (0, Properties::default()),
    };
    Ok(Ack {
        packet_id,
        reason_code,
        properties,
    })
}

/// MQTT 5's short forms: nothing left means success without properties; one byte, a reason
/// without properties.
fn short_reason(
    cur: &mut Cursor<'_>,
    v5: bool,
    packet: PacketType,
) -> Result<(u8, Properties), DecodeError> {
    if !v5 || cur.remaining() == 0 {
        return Ok((0, Properties::default()));
    }
    let code = cur.u8("reason code")?;
    if cur.remaining() == 0 {
        return Ok((code, Properties::default()));
    }
    Ok((code, Properties::decode(cur, Place::Packet(packet))?))
}

fn packet_id(cur: &mut Cursor<'_>) -> Result<u16, DecodeError> {
    match cur.u16("packet identifier")? {
        0 => Err(DecodeError::Protocol("packet identifier 0".into())),
        id => Ok(id),
    }
}

fn fixed_flags(raw: &RawPacket, want: u8) -> Result<(), DecodeError> {
    if raw.flags != want {
        return Err(DecodeError::Malformed(format!(
            "{} with fixed-header flags {:04b} (must be {want:04b})",
            raw.packet_type.name(),
            raw.flags
        )));
    }
    Ok(())
}

/// A topic name: within the limit, no wildcards, not empty (unless an alias stands in).
fn topic_name(topic: &str, limits: &Limits, may_be_empty: bool) -> Result<(), DecodeError> {
    if topic.len() > limits.max_topic_bytes {
        return Err(DecodeError::TopicTooLong {
            len: topic.len(),
            max: limits.max_topic_bytes,
        });
    }
    if topic.is_empty() && !may_be_empty {
        return Err(DecodeError::Protocol(
            "an empty topic name without a topic alias".into(),
        ));
    }
    if topic.contains(['+', '#']) {
        return Err(DecodeError::TopicName(format!(
            "{topic:?} holds a wildcard"
        )));
    }
    Ok(())
}

/// Filter syntax is the topic module's; here only what framing needs.
fn check_filter(filter: &str, limits: &Limits) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::Malformed("an empty topic filter".into()));
    }
    if filter.len() > limits.max_topic_bytes {
        return Err(DecodeError::FilterTooLong {
            len: filter.len(),
            max: limits.max_topic_bytes,
        });
    }
    Ok(())
}

fn subscription_options(b: u8, version: Version) -> Result<SubscriptionOptions, DecodeError> {
    let qos = QoS::from_u8(b & 0b11)
        .ok_or_else(|| DecodeError::Malformed("subscription QoS 3".into()))?;
    match version {
        Version::V311 => {
            if b & 0xfc != 0 {
                return Err(DecodeError::Malformed(
                    "reserved subscription option bits set (MQTT 3.1.1)".into(),
                ));
            }
            Ok(SubscriptionOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            })
        }
        Version::V5 => {
            if b & 0xc0 != 0 {
                return Err(DecodeError::Malformed(
                    "reserved subscription option bits set".into(),
                ));
            }
            let retain_handling = (b >> 4) & 0b11;
            if retain_handling == 3 {
                return Err(DecodeError::Malformed("retain handling 3".into()));
            }
            Ok(SubscriptionOptions {
                qos,
                no_local: b & 0b0100 != 0,
                retain_as_published: b & 0b1000 != 0,
                retain_handling,
            })
        }
    }
}
