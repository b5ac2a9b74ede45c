//! Which protocol a connection speaks, from its first bytes: a check against the listener's
//! configured protocol, so that a client pointed at the wrong port is refused by name (and
//! audited) instead of failing somewhere in a parser.
//!
//! - MQTT: a CONNECT (type 1, flags 0), a remaining length, then the protocol name `MQTT`
//!   (or `MQIsdp`, MQTT 3.1) as a length-prefixed string.
//! - Kafka: a 4-byte big-endian frame length, then an api key and version. Real frames are
//!   far smaller than 16 MiB, so the first byte is 0; an MQTT CONNECT starts with 0x10.
//! - TLS: a handshake record (0x16 0x03).

/// What the first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Mqtt,
    Kafka,
    Tls,
    Http,
    Unknown,
}

impl Detected {
    pub fn name(self) -> &'static str {
        match self {
            Detected::Mqtt => "an MQTT CONNECT",
            Detected::Kafka => "a Kafka request",
            Detected::Tls => "a TLS handshake",
            Detected::Http => "an HTTP request",
            Detected::Unknown => "bytes of no known protocol",
        }
    }
}

/// Looks at the first bytes a client sent (at least 2 make a guess; more make it surer).
pub fn detect(bytes: &[u8]) -> Detected {
    match bytes {
        [0x10, ..] if looks_like_connect(bytes) => Detected::Mqtt,
        [0x16, 0x03, ..] => Detected::Tls,
        [b'G' | b'P' | b'H' | b'D' | b'O', b'E' | b'O' | b'U' | b'A' | b'P', ..]
            if bytes
                .windows(5)
                .take(8)
                .any(|w| w == b"HTTP/" || w.starts_with(b" /")) =>
        {
            Detected::Http
        }
        [0, a, b, c, k0, k1, ..] => {
            let len = u32::from_be_bytes([0, *a, *b, *c]);
            let api_key = i16::from_be_bytes([*k0, *k1]);
            // Kafka's api keys are small; a request is at least a header long.
            if len >= 8 && (0..=200).contains(&api_key) {
                Detected::Kafka
            } else {
                Detected::Unknown
            }
        }
        _ => Detected::Unknown,
    }
}

/// A CONNECT fixed header followed by a protocol name that is MQTT's. With fewer bytes than
/// the name needs, the type byte alone decides.
fn looks_like_connect(bytes: &[u8]) -> bool {
    // Remaining length: 1 to 4 bytes, each but the last with the top bit set.
    let mut i = 1;
    while i < bytes.len() && i <= 4 {
        let more = bytes[i] & 0x80 != 0;
        i += 1;
        if !more {
            break;
        }
    }
    match bytes.get(i..) {
        Some(rest) if rest.len() >= 6 => {
            rest.starts_with(b"\x00\x04MQTT") || rest.starts_with(b"\x00\x06MQIs")
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_kafka_requests_and_tls_are_told_apart() {
        // CONNECT, remaining length 16, "MQTT", level 4.
        let mqtt = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd";
        assert_eq!(detect(mqtt), Detected::Mqtt);
        // MQTT 3.1: "MQIsdp".
        assert_eq!(detect(b"\x10\x12\x00\x06MQIsdp\x03"), Detected::Mqtt);
        // Kafka ApiVersions v3: length 35, api key 18, version 3.
        let kafka = b"\x00\x00\x00\x23\x00\x12\x00\x03\x00\x00\x00\x01";
        assert_eq!(detect(kafka), Detected::Kafka);
        assert_eq!(detect(b"\x16\x03\x01\x02\x00\x01"), Detected::Tls);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::Http);
        // A CONNECT type byte followed by some other protocol name.
        assert_eq!(detect(b"\x10\x10\x00\x04AMQP\x04"), Detected::Unknown);
        assert_eq!(detect(b"\xff\xff"), Detected::Unknown);
        assert_eq!(detect(b""), Detected::Unknown);
    }
}
