//! The fixed header: packet type, flags and the remaining length (a variable byte integer of
//! one to four bytes). Splitting tells "not all here yet" (`Ok(None)`) from "cannot be a
//! packet" (`Err`), and refuses a packet larger than the limit as soon as its length is read,
//! before its body is buffered.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::{reason, Limits};

/// The control packet types (MQTT 5 §2.1.2; AUTH is MQTT 5 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    pub fn from_u8(n: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match n {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        }
    }
}

/// One whole packet split off the read buffer, not decoded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    pub packet_type: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// The whole packet, fixed header included: what is forwarded when nothing changes.
    pub frame: Bytes,
    /// Where the variable header starts in `frame`.
    pub body_offset: usize,
}

impl RawPacket {
    /// The variable header and payload.
    pub fn body(&self) -> &[u8] {
        self.frame.get(self.body_offset..).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("packet type 0 is reserved")]
    ReservedType,
    #[error("the remaining length takes more than 4 bytes")]
    BadLength,
    #[error("a packet of {size} bytes is larger than the limit of {max}")]
    TooLarge { size: usize, max: usize },
}

impl FrameError {
    /// The MQTT 5 reason code of a DISCONNECT answering it.
    pub fn reason_code(&self) -> u8 {
        match self {
            FrameError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            _ => reason::MALFORMED_PACKET,
        }
    }
}

/// Splits the next whole packet off `buf` (zero-copy).
pub fn split_packet(buf: &mut BytesMut, limits: &Limits) -> Result<Option<RawPacket>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = PacketType::from_u8(first >> 4).ok_or(FrameError::ReservedType)?;
    let mut len = 0usize;
    let mut at = 1;
    loop {
        let Some(&byte) = buf.get(at) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Err(FrameError::BadLength);
        }
    }
    let size = at + len;
    if size > limits.max_packet_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: limits.max_packet_bytes,
        });
    }
    if buf.len() < size {
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(size).freeze();
    Ok(Some(RawPacket {
        packet_type,
        flags: first & 0x0f,
        frame,
        body_offset: at,
    }))
}

/// Appends the fixed header of a packet whose body is `body_len` bytes.
pub(super) fn put_header(out: &mut BytesMut, first: u8, body_len: usize) {
    out.reserve(5 + body_len);
    out.extend_from_slice(&[first]);
    put_varint(out, body_len);
}

/// A variable byte integer (minimal form).
pub(super) fn put_varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.extend_from_slice(&[byte]);
        if n == 0 {
            return;
        }
    }
}

/// Bytes of `n` as a variable byte integer.
pub(super) fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}
