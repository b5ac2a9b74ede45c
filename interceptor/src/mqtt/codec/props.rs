//! MQTT 5 properties (§2.2.2): decoded with the checks the spec asks of a receiver (each
//! property allowed in its packet, at most once unless it may repeat, no zero where zero is a
//! protocol error) and encoded back in their order.

use bytes::{Bytes, BytesMut};

use super::{
    cursor::Cursor,
    frame::{put_varint, varint_len},
    DecodeError, PacketType,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQoS = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

/// The wire types of property values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Byte,
    TwoByte,
    FourByte,
    VarInt,
    Utf8,
    Binary,
    Pair,
}

/// Where a property list sits: a packet, or the will in a CONNECT's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Packet(PacketType),
    Will,
}

impl PropertyId {
    pub fn from_u8(n: u8) -> Option<PropertyId> {
        use PropertyId::*;
        Some(match n {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQoS,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    fn wire(self) -> Wire {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | RequestProblemInformation
            | RequestResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => Wire::Byte,
            ServerKeepAlive | ReceiveMaximum | TopicAliasMaximum | TopicAlias => Wire::TwoByte,
            MessageExpiryInterval
            | SessionExpiryInterval
            | WillDelayInterval
            | MaximumPacketSize => Wire::FourByte,
            SubscriptionIdentifier => Wire::VarInt,
            ContentType
            | ResponseTopic
            | AssignedClientIdentifier
            | AuthenticationMethod
            | ResponseInformation
            | ServerReference
            | ReasonString => Wire::Utf8,
            CorrelationData | AuthenticationData => Wire::Binary,
            UserProperty => Wire::Pair,
        }
    }

    /// MQTT 5 §2.2.2.2: which packets (or the will) may carry the property.
    fn allowed_in(self, place: Place) -> bool {
        use PacketType as P;
        use PropertyId::*;
        let Place::Packet(packet) = place else {
            return matches!(
                self,
                PayloadFormatIndicator
                    | MessageExpiryInterval
                    | ContentType
                    | ResponseTopic
                    | CorrelationData
                    | WillDelayInterval
                    | UserProperty
            );
        };
        match self {
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData => packet == P::Publish,
            SubscriptionIdentifier => matches!(packet, P::Publish | P::Subscribe),
            SessionExpiryInterval => matches!(packet, P::Connect | P::ConnAck | P::Disconnect),
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => packet == P::ConnAck,
            AuthenticationMethod | AuthenticationData => {
                matches!(packet, P::Connect | P::ConnAck | P::Auth)
            }
            RequestProblemInformation | RequestResponseInformation => packet == P::Connect,
            WillDelayInterval => false,
            ServerReference => matches!(packet, P::ConnAck | P::Disconnect),
            ReasonString => !matches!(
                packet,
                P::Connect | P::Publish | P::Subscribe | P::Unsubscribe | P::PingReq | P::PingResp
            ),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => {
                matches!(packet, P::Connect | P::ConnAck)
            }
            TopicAlias => packet == P::Publish,
            UserProperty => !matches!(packet, P::PingReq | P::PingResp),
        }
    }

    fn may_repeat(self, place: Place) -> bool {
        self == PropertyId::UserProperty
            || (self == PropertyId::SubscriptionIdentifier
                && place == Place::Packet(PacketType::Publish))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    Byte(PropertyId, u8),
    TwoByte(PropertyId, u16),
    FourByte(PropertyId, u32),
    VarInt(PropertyId, u32),
    Utf8(PropertyId, String),
    Binary(PropertyId, Bytes),
    UserProperty(String, String),
}

impl Property {
    pub fn id(&self) -> PropertyId {
        match self {
            Property::Byte(id, _)
            | Property::TwoByte(id, _)
            | Property::FourByte(id, _)
            | Property::VarInt(id, _)
            | Property::Utf8(id, _)
            | Property::Binary(id, _) => *id,
            Property::UserProperty(..) => PropertyId::UserProperty,
        }
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            Property::Byte(..) => 1,
            Property::TwoByte(..) => 2,
            Property::FourByte(..) => 4,
            Property::VarInt(_, v) => varint_len(*v as usize),
            Property::Utf8(_, s) => 2 + s.len(),
            Property::Binary(_, b) => 2 + b.len(),
            Property::UserProperty(k, v) => 4 + k.len() + v.len(),
        }
    }
}

/// MQTT 5 properties in their wire order. MQTT 3.1.1 packets have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub items: Vec<Property>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, id: PropertyId) -> Option<&Property> {
        self.items.iter().find(|p| p.id() == id)
    }

    /// Removes every property with that id; how many there were.
    pub fn remove(&mut self, id: PropertyId) -> usize {
        let before = self.items.len();
        self.items.retain(|p| p.id() != id);
        before - self.items.len()
    }

    /// Replaces the first property with that id, or appends it.
    pub fn set(&mut self, p: Property) {
        let id = p.id();
        match self.items.iter_mut().find(|q| q.id() == id) {
            Some(slot) => *slot = p,
            None => self.items.push(p),
        }
    }

    pub fn u16_of(&self, id: PropertyId) -> Option<u16> {
        match self.get(id)? {
            Property::TwoByte(_, v) => Some(*v),
            _ => None,
        }
    }

    pub fn u32_of(&self, id: PropertyId) -> Option<u32> {
        match self.get(id)? {
            Property::FourByte(_, v) | Property::VarInt(_, v) => Some(*v),
            Property::TwoByte(_, v) => Some(u32::from(*v)),
            Property::Byte(_, v) => Some(u32::from(*v)),
            _ => None,
        }
    }

    pub fn str_of(&self, id: PropertyId) -> Option<&str> {
        match self.get(id)? {
            Property::Utf8(_, s) => Some(s),
            _ => None,
        }
    }

    pub fn bytes_of(&self, id: PropertyId) -> Option<&[u8]> {
        match self.get(id)? {
            Property::Binary(_, b) => Some(b),
            _ => None,
        }
    }

    /// The property list's length on the wire (without its own length prefix).
    fn body_len(&self) -> usize {
        self.items.iter().map(Property::encoded_len).sum()
    }

    /// Length prefix and properties.
    pub(super) fn encoded_len(&self) -> usize {
        let n = self.body_len();
        varint_len(n) + n
    }

    pub(super) fn encode(&self, out: &mut BytesMut) {
        put_varint(out, self.body_len());
        for p in &self.items {
            out.extend_from_slice(&[p.id() as u8]);
            match p {
                Property::Byte(_, v) => out.extend_from_slice(&[*v]),
                Property::TwoByte(_, v) => out.extend_from_slice(&v.to_be_bytes()),
                Property::FourByte(_, v) => out.extend_from_slice(&v.to_be_bytes()),
                Property::VarInt(_, v) => put_varint(out, *v as usize),
                Property::Utf8(_, s) => put_bytes(out, s.as_bytes()),
                Property::Binary(_, b) => put_bytes(out, b),
                Property::UserProperty(k, v) => {
                    put_bytes(out, k.as_bytes());
                    put_bytes(out, v.as_bytes());
                }
            }
        }
    }

    /// Reads a property list (length prefix first) for `place`.
    pub(super) fn decode(cur: &mut Cursor<'_>, place: Place) -> Result<Properties, DecodeError> {
        let len = cur.varint("property length")? as usize;
        let mut list = cur.take(len, "properties")?;
        let mut items: Vec<Property> = Vec::new();
        while list.remaining() > 0 {
            let raw = list.varint("property identifier")?;
            let id = u8::try_from(raw)
                .ok()
                .and_then(PropertyId::from_u8)
                .ok_or_else(|| DecodeError::Malformed(format!("unknown property 0x{raw:02x}")))?;
            if !id.allowed_in(place) {
                return Err(DecodeError::Protocol(format!(
                    "property {id:?} is not allowed in {}",
                    place_name(place)
                )));
            }
            if !id.may_repeat(place) && items.iter().any(|p| p.id() == id) {
                return Err(DecodeError::Protocol(format!(
                    "property {id:?} appears twice"
                )));
            }
            let p = match id.wire() {
                Wire::Byte => Property::Byte(id, list.u8("property value")?),
                Wire::TwoByte => Property::TwoByte(id, list.u16("property value")?),
                Wire::FourByte => Property::FourByte(id, list.u32("property value")?),
                Wire::VarInt => Property::VarInt(id, list.varint("property value")?),
                Wire::Utf8 => Property::Utf8(id, list.string("property value")?),
                Wire::Binary => Property::Binary(id, list.binary("property value")?),
                Wire::Pair => Property::UserProperty(
                    list.string("user property")?,
                    list.string("user property")?,
                ),
            };
            check_value(&p)?;
            items.push(p);
        }
        Ok(Properties { items })
    }
}

/// Values the spec makes a protocol error.
fn check_value(p: &Property) -> Result<(), DecodeError> {
    use PropertyId::*;
    let bad = match p {
        Property::Byte(
            PayloadFormatIndicator
            | RequestProblemInformation
            | RequestResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable,
            v,
        ) => *v > 1,
        Property::TwoByte(ReceiveMaximum | TopicAlias, 0) => true,
        Property::FourByte(MaximumPacketSize, 0) => true,
        Property::VarInt(SubscriptionIdentifier, 0) => true,
        _ => false,
    };
    if bad {
        return Err(DecodeError::Protocol(format!(
            "property {:?} has a value the protocol forbids",
            p.id()
        )));
    }
    Ok(())
}

fn place_name(place: Place) -> &'static str {
    match place {
        Place::Packet(p) => p.name(),
        Place::Will => "a will",
    }
}

pub(super) fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    // Callers keep strings and binaries under 64 KiB (they were decoded as such, or are
    // short texts of the interceptor's own); longer ones are cut rather than mis-framed.
    let len = b.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&b[..len]);
}
