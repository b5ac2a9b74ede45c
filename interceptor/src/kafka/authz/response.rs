//! Responses the interceptor writes itself, and the broker's responses it rewrites: framing
//! (length prefix and response header) around bodies the `kafka-protocol` crate encodes and
//! decodes. Only broker responses are decoded with the crate; client requests never are.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::AuthzError;
use crate::{
    kafka::{frame::LENGTH_PREFIX, header::response_header_version, wire::Reader},
    policy::{Check, ResourceKind},
};

pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const POLICY_VIOLATION: i16 = 44;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const UNKNOWN_TOPIC_ID: i16 = 100;

/// The error a broker gives for a refused operation on a resource of `kind`.
pub fn refusal_code(check: Check, kind: ResourceKind) -> i16 {
    match (check, kind) {
        (Check::Allowed, _) => 0,
        (Check::Violation, _) => POLICY_VIOLATION,
        // No Kafka request names an MQTT topic; the topic code is the closest.
        (Check::Denied, ResourceKind::Topic | ResourceKind::MqttTopic) => {
            TOPIC_AUTHORIZATION_FAILED
        }
        (Check::Denied, ResourceKind::Group) => GROUP_AUTHORIZATION_FAILED,
        (Check::Denied, ResourceKind::TransactionalId) => TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        (Check::Denied, ResourceKind::Cluster) => CLUSTER_AUTHORIZATION_FAILED,
    }
}

/// The message clients show next to the code, for versions that carry one.
pub fn refusal_message(check: Check) -> &'static str {
    match check {
        Check::Violation => "Refused by the interceptor's policy",
        _ => "Not authorized by the interceptor's policy",
    }
}

/// A complete response frame: length prefix, the header version `api_key`/`version` use, and
/// `body` encoded at `version`.
pub fn encode_response<T: Encodable>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    body: &T,
    api: &'static str,
) -> Result<Bytes, AuthzError> {
    let fail = |detail: String| AuthzError::Response { api, detail };
    let flexible_header = response_header_version(api_key, version) >= 1;
    let body_len = body
        .compute_size(version)
        .map_err(|e| fail(format!("size: {e}")))?;
    let header_len = 4 + usize::from(flexible_header);
    let prefix = i32::try_from(header_len + body_len).map_err(|_| fail("too large".into()))?;
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX + header_len + body_len);
    out.put_i32(prefix);
    out.put_i32(correlation_id);
    if flexible_header {
        out.put_u8(0); // no tagged fields
    }
    body.encode(&mut out, version)
        .map_err(|e| fail(format!("encode: {e}")))?;
    if out.len() != LENGTH_PREFIX + header_len + body_len {
        // The crate's size and its encoding disagree: never send a wrong length prefix.
        return Err(fail("encoded size differs from the computed size".into()));
    }
    Ok(out.freeze())
}

/// Decodes a broker response frame (length prefix included): its correlation id and body.
pub fn decode_response<T: Decodable>(
    api_key: i16,
    version: i16,
    frame: &Bytes,
    api: &'static str,
) -> Result<(i32, T), AuthzError> {
    let fail = |detail: String| AuthzError::Response { api, detail };
    let mut r =
        Reader::at(frame, LENGTH_PREFIX, "response header").map_err(|e| fail(e.to_string()))?;
    let correlation_id = r.i32("correlation id").map_err(|e| fail(e.to_string()))?;
    if response_header_version(api_key, version) >= 1 {
        r.skip_tagged_fields("response header tagged fields")
            .map_err(|e| fail(e.to_string()))?;
    }
    let mut body = frame.slice(r.pos()..);
    let decoded = T::decode(&mut body, version).map_err(|e| fail(format!("decode: {e}")))?;
    Ok((correlation_id, decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{HeartbeatResponse, ProduceResponse};

    #[test]
    fn encoded_responses_decode_back_with_their_header_version() {
        let body = HeartbeatResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED);
        for version in [0, 3, 4] {
            let frame = encode_response(12, version, 42, &body, "Heartbeat").unwrap();
            let len = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len + 4, frame.len());
            let (id, back): (i32, HeartbeatResponse) =
                decode_response(12, version, &frame, "Heartbeat").unwrap();
            assert_eq!(id, 42);
            assert_eq!(back.error_code, GROUP_AUTHORIZATION_FAILED);
        }
    }

    #[test]
    fn garbage_from_the_broker_is_an_error() {
        let frame = Bytes::from_static(b"\0\0\0\x06\0\0\0\x01\xff\xff");
        assert!(decode_response::<ProduceResponse>(0, 9, &frame, "Produce").is_err());
    }
}
