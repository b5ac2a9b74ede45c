//! SaslHandshake (key 17) and SaslAuthenticate (key 36) as whole frames (length prefix
//! included): the client's requests decoded and our responses encoded (server side, towards
//! clients), and our requests encoded and the broker's responses decoded (client side, towards
//! the broker).
//!
//! These bodies are tiny, so they are read by hand with the bounded [`Reader`] rather than the
//! `kafka-protocol` crate, whose decoders size allocations from counts read off the wire: every
//! length here is checked against the bytes actually present before anything is sliced, and a
//! body that does not decode exactly (truncated, null where Kafka forbids it, trailing bytes)
//! is an error. Byte strings are returned as zero-copy slices of the frame. The tests check
//! every version against the crate's own encoders and decoders.
//!
//! Layouts (all versions):
//! - SaslHandshake request v0–v1: `mechanism: string`. Response v0–v1 (header v0):
//!   `error_code: i16, mechanisms: [string]`.
//! - SaslAuthenticate request v0–v1: `auth_bytes: bytes`; v2 (flexible, header v2):
//!   `auth_bytes: compact bytes, tagged fields`. Response v0: `error_code: i16,
//!   error_message: nullable string, auth_bytes: bytes`; v1 adds `session_lifetime_ms: i64`;
//!   v2 is flexible (response header v1, compact encodings, tagged fields).

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    SaslError, SASL_AUTHENTICATE_KEY, SASL_AUTHENTICATE_MAX_VERSION, SASL_AUTHENTICATE_MIN_VERSION,
    SASL_HANDSHAKE_KEY,
};
use crate::kafka::frame::LENGTH_PREFIX;
use crate::kafka::header::{response_body_offset, response_correlation_id};
use crate::kafka::wire::{to_usize, Reader};
use crate::kafka::{HeaderError, RequestHeader};

/// SaslHandshake versions this module decodes and encodes (v0 has the same body as v1; whether
/// to serve it is the caller's decision).
pub const HANDSHAKE_DECODE_MIN_VERSION: i16 = 0;
pub const HANDSHAKE_DECODE_MAX_VERSION: i16 = 1;

/// A mechanism name longer than this is refused: Kafka's names are at most 20 characters.
pub const MAX_MECHANISM_NAME_BYTES: usize = 64;

/// The first SaslAuthenticate version that is flexible.
const AUTHENTICATE_FLEXIBLE_VERSION: i16 = 2;

const HANDSHAKE_REQUEST: &str = "SaslHandshake request";
const HANDSHAKE_RESPONSE: &str = "SaslHandshake response";
const AUTHENTICATE_REQUEST: &str = "SaslAuthenticate request";
const AUTHENTICATE_RESPONSE: &str = "SaslAuthenticate response";

/// A SaslHandshake response from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub correlation_id: i32,
    pub error_code: i16,
    /// The mechanisms the broker enables (lossy UTF-8).
    pub mechanisms: Vec<String>,
}

/// A SaslAuthenticate response from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateResponse {
    pub correlation_id: i32,
    pub error_code: i16,
    /// Lossy UTF-8; `None` when null.
    pub error_message: Option<String>,
    pub auth_bytes: Bytes,
    /// 0 in v0, and when the broker does not expire sessions.
    pub session_lifetime_ms: i64,
}

/// The mechanism a client asks for in a SaslHandshake request (v0 or v1).
pub fn decode_handshake(frame: &Bytes, header: &RequestHeader) -> Result<String, SaslError> {
    check_request(
        header,
        SASL_HANDSHAKE_KEY,
        HANDSHAKE_REQUEST,
        HANDSHAKE_DECODE_MIN_VERSION,
        HANDSHAKE_DECODE_MAX_VERSION,
    )?;
    let mut r = reader_at(frame, header.body_offset, HANDSHAKE_REQUEST)?;
    let range = r
        .nullable_string("mechanism")
        .map_err(|e| wire_error(HANDSHAKE_REQUEST, e))?
        .ok_or_else(|| SaslError::malformed(HANDSHAKE_REQUEST, "null mechanism"))?;
    if range.len() > MAX_MECHANISM_NAME_BYTES {
        return Err(SaslError::TooLarge {
            what: "SaslHandshake mechanism name",
            len: range.len(),
            max: MAX_MECHANISM_NAME_BYTES,
        });
    }
    check_end(&r, HANDSHAKE_REQUEST)?;
    let bytes = frame.get(range).unwrap_or_default();
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| SaslError::malformed(HANDSHAKE_REQUEST, "mechanism is not UTF-8"))
}

/// The SASL token of a SaslAuthenticate request (v0 to v2), as a zero-copy slice of `frame`.
pub fn decode_authenticate(frame: &Bytes, header: &RequestHeader) -> Result<Bytes, SaslError> {
    check_request(
        header,
        SASL_AUTHENTICATE_KEY,
        AUTHENTICATE_REQUEST,
        SASL_AUTHENTICATE_MIN_VERSION,
        SASL_AUTHENTICATE_MAX_VERSION,
    )?;
    let flexible = header.api_version >= AUTHENTICATE_FLEXIBLE_VERSION;
    let mut r = reader_at(frame, header.body_offset, AUTHENTICATE_REQUEST)?;
    let range = read_bytes(&mut r, flexible, "auth bytes", AUTHENTICATE_REQUEST)?;
    if flexible {
        r.skip_tagged_fields("tagged fields")
            .map_err(|e| wire_error(AUTHENTICATE_REQUEST, e))?;
    }
    check_end(&r, AUTHENTICATE_REQUEST)?;
    Ok(frame.slice(range))
}

/// A SaslHandshake response frame (v0 and v1 are identical; response header v0).
pub fn handshake_response(
    correlation_id: i32,
    api_version: i16,
    error_code: i16,
    mechanisms: &[&str],
) -> Bytes {
    let _ = api_version; // Same body in every version.
    let mut out = FrameBuilder::new(correlation_id);
    out.buf.put_i16(error_code);
    out.buf.put_i32(clamp_i32(mechanisms.len()));
    for mechanism in mechanisms {
        put_string(&mut out.buf, Some(mechanism));
    }
    out.finish()
}

/// A SaslAuthenticate response frame. `session_lifetime_ms` exists in v1 and later; v2 is
/// flexible (response header v1, compact strings, tagged fields). Versions above 2 are encoded
/// as v2 and below 0 as v0: callers only answer versions they accepted.
pub fn authenticate_response(
    correlation_id: i32,
    api_version: i16,
    error_code: i16,
    error_message: Option<&str>,
    auth_bytes: &[u8],
    session_lifetime_ms: i64,
) -> Bytes {
    let flexible = api_version >= AUTHENTICATE_FLEXIBLE_VERSION;
    let mut out = FrameBuilder::new(correlation_id);
    if flexible {
        out.buf.put_u8(0); // response header v1: no tagged fields
    }
    out.buf.put_i16(error_code);
    if flexible {
        put_compact_string(&mut out.buf, error_message);
        put_compact_bytes(&mut out.buf, auth_bytes);
    } else {
        put_string(&mut out.buf, error_message);
        put_bytes(&mut out.buf, auth_bytes);
    }
    if api_version >= 1 {
        out.buf.put_i64(session_lifetime_ms);
    }
    if flexible {
        out.buf.put_u8(0); // no tagged fields
    }
    out.finish()
}

/// A SaslHandshake request frame (request header v1).
pub fn handshake_request(
    correlation_id: i32,
    api_version: i16,
    client_id: &str,
    mechanism: &str,
) -> Bytes {
    let mut out = request_builder(
        SASL_HANDSHAKE_KEY,
        api_version,
        correlation_id,
        client_id,
        false,
    );
    put_string(&mut out.buf, Some(mechanism));
    out.finish()
}

/// A SaslAuthenticate request frame: request header v1 for v0 and v1, v2 (flexible) for v2.
pub fn authenticate_request(
    correlation_id: i32,
    api_version: i16,
    client_id: &str,
    auth_bytes: &[u8],
) -> Bytes {
    let flexible = api_version >= AUTHENTICATE_FLEXIBLE_VERSION;
    let mut out = request_builder(
        SASL_AUTHENTICATE_KEY,
        api_version,
        correlation_id,
        client_id,
        flexible,
    );
    if flexible {
        put_compact_bytes(&mut out.buf, auth_bytes);
        out.buf.put_u8(0); // no tagged fields
    } else {
        put_bytes(&mut out.buf, auth_bytes);
    }
    out.finish()
}

/// Decodes a SaslHandshake response (v0 or v1) from the broker.
pub fn decode_handshake_response(
    frame: &Bytes,
    api_version: i16,
) -> Result<HandshakeResponse, SaslError> {
    check_version(
        HANDSHAKE_RESPONSE,
        api_version,
        HANDSHAKE_DECODE_MIN_VERSION,
        HANDSHAKE_DECODE_MAX_VERSION,
    )?;
    let wire = |e| wire_error(HANDSHAKE_RESPONSE, e);
    let correlation_id = response_correlation_id(frame).map_err(wire)?;
    let offset = response_body_offset(frame, SASL_HANDSHAKE_KEY, api_version).map_err(wire)?;
    let mut r = reader_at(frame, offset, HANDSHAKE_RESPONSE)?;
    let error_code = r.i16("error code").map_err(wire)?;
    let count = r.i32("mechanisms").map_err(wire)?;
    let count = usize::try_from(count)
        .map_err(|_| SaslError::malformed(HANDSHAKE_RESPONSE, "negative mechanism count"))?;
    // Each name takes at least its 2-byte length: a lying count cannot size the Vec.
    r.check_count(count, 2, "mechanisms").map_err(wire)?;
    let mut mechanisms = Vec::with_capacity(count);
    for _ in 0..count {
        let range = r
            .nullable_string("mechanism")
            .map_err(wire)?
            .ok_or_else(|| SaslError::malformed(HANDSHAKE_RESPONSE, "null mechanism"))?;
        let bytes = frame.get(range).unwrap_or_default();
        mechanisms.push(String::from_utf8_lossy(bytes).into_owned());
    }
    check_end(&r, HANDSHAKE_RESPONSE)?;
    Ok(HandshakeResponse {
        correlation_id,
        error_code,
        mechanisms,
    })
}

/// Decodes a SaslAuthenticate response (v0 to v2) from the broker.
pub fn decode_authenticate_response(
    frame: &Bytes,
    api_version: i16,
) -> Result<AuthenticateResponse, SaslError> {
    check_version(
        AUTHENTICATE_RESPONSE,
        api_version,
        SASL_AUTHENTICATE_MIN_VERSION,
        SASL_AUTHENTICATE_MAX_VERSION,
    )?;
    let flexible = api_version >= AUTHENTICATE_FLEXIBLE_VERSION;
    let wire = |e| wire_error(AUTHENTICATE_RESPONSE, e);
    let correlation_id = response_correlation_id(frame).map_err(wire)?;
    let offset = response_body_offset(frame, SASL_AUTHENTICATE_KEY, api_version).map_err(wire)?;
    let mut r = reader_at(frame, offset, AUTHENTICATE_RESPONSE)?;
    let error_code = r.i16("error code").map_err(wire)?;
    let message = if flexible {
        r.compact_nullable_string("error message")
    } else {
        r.nullable_string("error message")
    }
    .map_err(wire)?;
    let error_message =
        message.map(|range| String::from_utf8_lossy(frame.get(range).unwrap_or_default()).into());
    let auth_range = read_bytes(&mut r, flexible, "auth bytes", AUTHENTICATE_RESPONSE)?;
    let session_lifetime_ms = if api_version >= 1 {
        r.i64("session lifetime").map_err(wire)?
    } else {
        0
    };
    if flexible {
        r.skip_tagged_fields("tagged fields").map_err(wire)?;
    }
    check_end(&r, AUTHENTICATE_RESPONSE)?;
    Ok(AuthenticateResponse {
        correlation_id,
        error_code,
        error_message,
        auth_bytes: frame.slice(auth_range),
        session_lifetime_ms,
    })
}

fn check_request(
    header: &RequestHeader,
    api_key: i16,
    what: &'static str,
    min: i16,
    max: i16,
) -> Result<(), SaslError> {
    if header.api_key != api_key {
        return Err(SaslError::malformed(
            what,
            format!("api key {} is not {api_key}", header.api_key),
        ));
    }
    check_version(what, header.api_version, min, max)
}

fn check_version(what: &'static str, version: i16, min: i16, max: i16) -> Result<(), SaslError> {
    if (min..=max).contains(&version) {
        return Ok(());
    }
    Err(SaslError::UnsupportedVersion {
        api: what,
        version,
        min,
        max,
    })
}

fn reader_at<'a>(
    frame: &'a [u8],
    offset: usize,
    what: &'static str,
) -> Result<Reader<'a>, SaslError> {
    Reader::at(frame, offset, "body").map_err(|e| wire_error(what, e))
}

/// Bytes (classic: i32 length; compact: uvarint length + 1), which Kafka never allows to be
/// null in these messages: the range of the content.
fn read_bytes(
    r: &mut Reader<'_>,
    flexible: bool,
    field: &'static str,
    what: &'static str,
) -> Result<std::ops::Range<usize>, SaslError> {
    let null = || SaslError::malformed(what, format!("null {field}"));
    if flexible {
        return r
            .compact_nullable_string(field)
            .map_err(|e| wire_error(what, e))?
            .ok_or_else(null);
    }
    let len = r.i32(field).map_err(|e| wire_error(what, e))?;
    if len == -1 {
        return Err(null());
    }
    let len = u32::try_from(len)
        .map_err(|_| SaslError::malformed(what, format!("negative length of {field}")))?;
    r.take_range(to_usize(len), field)
        .map_err(|e| wire_error(what, e))
}

fn check_end(r: &Reader<'_>, what: &'static str) -> Result<(), SaslError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(SaslError::malformed(
            what,
            format!("{n} trailing bytes after the body"),
        )),
    }
}

fn wire_error(what: &'static str, e: HeaderError) -> SaslError {
    SaslError::malformed(what, e.to_string())
}

/// Builds a frame: reserves the length prefix, fills it in at the end.
struct FrameBuilder {
    buf: BytesMut,
}

impl FrameBuilder {
    /// A response frame, starting with response header v0 (the correlation id).
    fn new(correlation_id: i32) -> Self {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0); // length, filled in by finish
        buf.put_i32(correlation_id);
        Self { buf }
    }

    fn finish(mut self) -> Bytes {
        let len = clamp_i32(self.buf.len() - LENGTH_PREFIX);
        if let Some(prefix) = self.buf.get_mut(..LENGTH_PREFIX) {
            prefix.copy_from_slice(&len.to_be_bytes());
        }
        self.buf.freeze()
    }
}

/// A request frame with request header v1 (v2 when `flexible`: an empty tagged-field section).
fn request_builder(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    client_id: &str,
    flexible: bool,
) -> FrameBuilder {
    let mut out = FrameBuilder {
        buf: BytesMut::with_capacity(64),
    };
    out.buf.put_i32(0); // length, filled in by finish
    out.buf.put_i16(api_key);
    out.buf.put_i16(api_version);
    out.buf.put_i32(correlation_id);
    put_string(&mut out.buf, Some(client_id)); // classic even in header v2
    if flexible {
        out.buf.put_u8(0);
    }
    out
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A prefix of `s` of at most `max` bytes, cut at a character boundary. Our own strings are
/// far below every limit; this only keeps an absurd one from producing a corrupt frame.
fn at_most(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Classic nullable string: i16 length (-1 = null).
fn put_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => buf.put_i16(-1),
        Some(s) => {
            let s = at_most(s, i16::MAX as usize);
            buf.put_i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
            buf.put_slice(s.as_bytes());
        }
    }
}

/// Classic bytes: i32 length.
fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    let b = b.get(..i32::MAX as usize).unwrap_or(b);
    buf.put_i32(clamp_i32(b.len()));
    buf.put_slice(b);
}

/// Compact nullable string: uvarint length + 1 (0 = null).
fn put_compact_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => buf.put_u8(0),
        Some(s) => put_compact_bytes(buf, at_most(s, i32::MAX as usize - 1).as_bytes()),
    }
}

/// Compact bytes: uvarint length + 1.
fn put_compact_bytes(buf: &mut BytesMut, b: &[u8]) {
    let b = b.get(..i32::MAX as usize - 1).unwrap_or(b);
    put_uvarint(buf, u32::try_from(b.len() + 1).unwrap_or(u32::MAX));
    buf.put_slice(b);
}

fn put_uvarint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::{
        messages::{
            RequestHeader as CrateRequestHeader, ResponseHeader as CrateResponseHeader,
            SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
            SaslHandshakeResponse,
        },
        protocol::{Decodable, Encodable, StrBytes},
    };

    use super::*;
    use crate::kafka::header::{request_header_version, response_header_version};

    /// A request frame encoded by the crate: header at the version Kafka uses, then the body.
    fn crate_request<B: Encodable>(key: i16, version: i16, correlation_id: i32, body: &B) -> Bytes {
        let header = CrateRequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("crate-client")));
        let mut encoded = BytesMut::new();
        header
            .encode(&mut encoded, request_header_version(key, version))
            .unwrap();
        body.encode(&mut encoded, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(encoded.len() as i32);
        frame.extend_from_slice(&encoded);
        frame.freeze()
    }

    /// A response frame encoded by the crate.
    fn crate_response<B: Encodable>(
        key: i16,
        version: i16,
        correlation_id: i32,
        body: &B,
    ) -> Bytes {
        let mut encoded = BytesMut::new();
        CrateResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut encoded, response_header_version(key, version))
            .unwrap();
        body.encode(&mut encoded, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(encoded.len() as i32);
        frame.extend_from_slice(&encoded);
        frame.freeze()
    }

    /// Checks the length prefix and splits a frame into the crate's request header and body.
    fn split_request(frame: &Bytes) -> (CrateRequestHeader, Bytes) {
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(len as usize, frame.len() - 4, "length prefix");
        let mut rest = frame.slice(4..);
        let key = i16::from_be_bytes(rest[..2].try_into().unwrap());
        let version = i16::from_be_bytes(rest[2..4].try_into().unwrap());
        let header =
            CrateRequestHeader::decode(&mut rest, request_header_version(key, version)).unwrap();
        (header, rest)
    }

    fn split_response(frame: &Bytes, key: i16, version: i16) -> (i32, Bytes) {
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(len as usize, frame.len() - 4, "length prefix");
        let mut rest = frame.slice(4..);
        let header =
            CrateResponseHeader::decode(&mut rest, response_header_version(key, version)).unwrap();
        (header.correlation_id, rest)
    }

    fn parse(frame: &Bytes) -> RequestHeader {
        RequestHeader::parse(frame).unwrap()
    }

    #[test]
    fn handshake_requests_from_the_crate_decode_at_v0_and_v1() {
        for version in [0, 1] {
            let body = SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-512"));
            let frame = crate_request(17, version, 7, &body);
            let header = parse(&frame);
            assert_eq!(decode_handshake(&frame, &header).unwrap(), "SCRAM-SHA-512");
        }
        // Our own encoder, read back by the crate.
        for version in [0, 1] {
            let frame = handshake_request(99, version, "me", "PLAIN");
            let (header, mut body) = split_request(&frame);
            assert_eq!(
                (
                    header.request_api_key,
                    header.request_api_version,
                    header.correlation_id
                ),
                (17, version, 99)
            );
            assert_eq!(header.client_id.as_deref(), Some("me"));
            let decoded = SaslHandshakeRequest::decode(&mut body, version).unwrap();
            assert_eq!(&*decoded.mechanism, "PLAIN");
            assert!(body.is_empty());
            // And by ourselves.
            assert_eq!(decode_handshake(&frame, &parse(&frame)).unwrap(), "PLAIN");
        }
    }

    #[test]
    fn authenticate_requests_from_the_crate_decode_at_v0_to_v2() {
        for version in 0..=2 {
            for auth in [
                &b""[..],
                b"n,,n=user,r=abc",
                &[0u8, 1, 2, 255][..],
                &[7; 300],
            ] {
                let body = SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::copy_from_slice(auth));
                let frame = crate_request(36, version, 8, &body);
                let got = decode_authenticate(&frame, &parse(&frame)).unwrap();
                assert_eq!(&got[..], auth, "v{version}");
            }
            // Unknown tagged fields in v2 are skipped.
            if version == 2 {
                let mut body = SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::from_static(b"token"));
                body.unknown_tagged_fields = BTreeMap::from([(5, Bytes::from_static(b"xyz"))]);
                let frame = crate_request(36, version, 8, &body);
                assert_eq!(
                    &decode_authenticate(&frame, &parse(&frame)).unwrap()[..],
                    b"token"
                );
            }
            // Our encoder, read back by the crate and by us.
            let frame = authenticate_request(-5, version, "cid", b"\x00user\x00pw");
            let (header, mut body) = split_request(&frame);
            assert_eq!(
                (header.request_api_key, header.request_api_version),
                (36, version)
            );
            assert_eq!(header.correlation_id, -5);
            let decoded = SaslAuthenticateRequest::decode(&mut body, version).unwrap();
            assert_eq!(&decoded.auth_bytes[..], b"\x00user\x00pw");
            assert!(body.is_empty(), "v{version}");
            assert_eq!(
                &decode_authenticate(&frame, &parse(&frame)).unwrap()[..],
                b"\x00user\x00pw"
            );
        }
    }

    #[test]
    fn decoded_auth_bytes_are_a_zero_copy_slice() {
        let frame = authenticate_request(1, 2, "c", b"zero-copy");
        let got = decode_authenticate(&frame, &parse(&frame)).unwrap();
        let start = got.as_ptr() as usize - frame.as_ptr() as usize;
        assert_eq!(&frame[start..start + got.len()], b"zero-copy");
    }

    #[test]
    fn handshake_responses_decode_with_the_crate() {
        for version in [0, 1] {
            for (code, mechs) in [
                (0, vec!["PLAIN", "SCRAM-SHA-256"]),
                (33, vec!["OAUTHBEARER"]),
                (0, vec![]),
            ] {
                let frame = handshake_response(1234, version, code, &mechs);
                let (correlation_id, mut body) = split_response(&frame, 17, version);
                assert_eq!(correlation_id, 1234);
                let decoded = SaslHandshakeResponse::decode(&mut body, version).unwrap();
                assert!(body.is_empty());
                assert_eq!(decoded.error_code, code);
                let names: Vec<&str> = decoded.mechanisms.iter().map(|m| &**m).collect();
                assert_eq!(names, mechs);
                // Our own decoder agrees.
                let ours = decode_handshake_response(&frame, version).unwrap();
                assert_eq!(
                    ours,
                    HandshakeResponse {
                        correlation_id: 1234,
                        error_code: code,
                        mechanisms: mechs.iter().map(|s| s.to_string()).collect(),
                    }
                );
            }
            // The crate's encoding decodes with ours.
            let body = SaslHandshakeResponse::default()
                .with_error_code(33)
                .with_mechanisms(vec![StrBytes::from_static_str("GSSAPI")]);
            let frame = crate_response(17, version, 5, &body);
            let ours = decode_handshake_response(&frame, version).unwrap();
            assert_eq!(ours.mechanisms, ["GSSAPI"]);
            assert_eq!((ours.correlation_id, ours.error_code), (5, 33));
        }
    }

    #[test]
    fn authenticate_responses_decode_with_the_crate() {
        for version in 0..=2 {
            for (code, message, auth, lifetime) in [
                (0, None, &b"v=signature"[..], 3_600_000),
                (58, Some("Authentication failed"), &b""[..], 0),
                (0, Some(""), &[0u8, 255][..], -1),
            ] {
                let frame = authenticate_response(77, version, code, message, auth, lifetime);
                let (correlation_id, mut body) = split_response(&frame, 36, version);
                assert_eq!(correlation_id, 77);
                let decoded = SaslAuthenticateResponse::decode(&mut body, version).unwrap();
                assert!(body.is_empty(), "v{version}");
                assert_eq!(decoded.error_code, code);
                assert_eq!(decoded.error_message.as_deref(), message);
                assert_eq!(&decoded.auth_bytes[..], auth);
                let expected_lifetime = if version >= 1 { lifetime } else { 0 };
                assert_eq!(decoded.session_lifetime_ms, expected_lifetime);
                let ours = decode_authenticate_response(&frame, version).unwrap();
                assert_eq!(
                    ours,
                    AuthenticateResponse {
                        correlation_id: 77,
                        error_code: code,
                        error_message: message.map(str::to_owned),
                        auth_bytes: Bytes::copy_from_slice(auth),
                        session_lifetime_ms: expected_lifetime,
                    }
                );
            }
            // The crate's encoding, with unknown tagged fields at v2, decodes with ours.
            let mut body = SaslAuthenticateResponse::default()
                .with_error_code(0)
                .with_error_message(None)
                .with_auth_bytes(Bytes::from_static(b"r=nonce"))
                .with_session_lifetime_ms(42);
            if version == 2 {
                body.unknown_tagged_fields = BTreeMap::from([(9, Bytes::from_static(b"??"))]);
            }
            let frame = crate_response(36, version, 6, &body);
            let ours = decode_authenticate_response(&frame, version).unwrap();
            assert_eq!(&ours.auth_bytes[..], b"r=nonce");
            assert_eq!(ours.error_message, None);
            assert_eq!(ours.correlation_id, 6);
        }
    }

    #[test]
    fn truncated_requests_and_responses_are_errors_at_every_length() {
        let frames: Vec<(Bytes, i16)> = vec![
            (handshake_request(1, 1, "client", "SCRAM-SHA-256"), 17),
            (authenticate_request(1, 0, "client", b"some auth bytes"), 36),
            (authenticate_request(1, 1, "client", b"some auth bytes"), 36),
            (authenticate_request(1, 2, "client", b"some auth bytes"), 36),
        ];
        for (frame, key) in frames {
            let full = parse(&frame);
            for cut in full.body_offset..frame.len() {
                let short = frame.slice(..cut);
                let header = parse(&short);
                let got = if key == 17 {
                    decode_handshake(&short, &header).map(|_| ())
                } else {
                    decode_authenticate(&short, &header).map(|_| ())
                };
                assert!(
                    matches!(got, Err(SaslError::Malformed { .. })),
                    "key {key} v{} cut {cut}: {got:?}",
                    full.api_version
                );
            }
        }
        for version in 0..=2 {
            let frame = authenticate_response(1, version, 0, Some("msg"), b"auth", 5);
            for cut in 0..frame.len() {
                let got = decode_authenticate_response(&frame.slice(..cut), version);
                assert!(got.is_err(), "v{version} cut {cut}");
            }
        }
        let frame = handshake_response(1, 1, 0, &["PLAIN", "OAUTHBEARER"]);
        for cut in 0..frame.len() {
            assert!(decode_handshake_response(&frame.slice(..cut), 1).is_err());
        }
    }

    #[test]
    fn trailing_bytes_are_errors() {
        let mut frame = BytesMut::from(&authenticate_request(1, 1, "c", b"x")[..]);
        frame.put_u8(0);
        let frame = frame.freeze();
        let got = decode_authenticate(&frame, &parse(&frame));
        assert!(
            matches!(&got, Err(SaslError::Malformed { reason, .. }) if reason.contains("trailing")),
            "{got:?}"
        );
    }

    /// A request frame of `key`/`version` (header v1, or v2 when flexible) with `body`.
    fn raw_request(key: i16, version: i16, body: &[u8]) -> Bytes {
        let mut out = request_builder(key, version, 3, "c", key == 36 && version >= 2);
        out.buf.put_slice(body);
        out.finish()
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        // Classic bytes of length i32::MAX with 3 bytes present.
        let frame = raw_request(36, 1, &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert!(matches!(
            decode_authenticate(&frame, &parse(&frame)),
            Err(SaslError::Malformed { .. })
        ));
        // Compact bytes of length u32::MAX - 1 (5-byte varint).
        let frame = raw_request(36, 2, &[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 0]);
        assert!(matches!(
            decode_authenticate(&frame, &parse(&frame)),
            Err(SaslError::Malformed { .. })
        ));
        // A tagged-field count of u32::MAX after valid auth bytes.
        let frame = raw_request(36, 2, &[2, b'a', 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode_authenticate(&frame, &parse(&frame)).is_err());
        // Negative and null lengths.
        let frame = raw_request(36, 0, &[0xff, 0xff, 0xff, 0xfe]);
        assert!(decode_authenticate(&frame, &parse(&frame)).is_err());
        let frame = raw_request(36, 0, &[0xff, 0xff, 0xff, 0xff]);
        let got = decode_authenticate(&frame, &parse(&frame));
        assert!(
            matches!(&got, Err(SaslError::Malformed { reason, .. }) if reason.contains("null")),
            "{got:?}"
        );
        let frame = raw_request(36, 2, &[0, 0]);
        assert!(decode_authenticate(&frame, &parse(&frame)).is_err());
        // Handshake: null, over-long and non-UTF-8 mechanisms.
        let frame = raw_request(17, 1, &[0xff, 0xff]);
        assert!(decode_handshake(&frame, &parse(&frame)).is_err());
        let frame = raw_request(17, 1, &[0x7f, 0xff, b'A']);
        assert!(decode_handshake(&frame, &parse(&frame)).is_err());
        let long = "X".repeat(MAX_MECHANISM_NAME_BYTES + 1);
        let frame = handshake_request(1, 1, "c", &long);
        assert!(matches!(
            decode_handshake(&frame, &parse(&frame)),
            Err(SaslError::TooLarge { .. })
        ));
        let frame = raw_request(17, 1, &[0, 2, 0xc3, 0x28]);
        assert!(decode_handshake(&frame, &parse(&frame)).is_err());
        // A handshake response claiming i32::MAX mechanisms in a few bytes.
        let mut response = FrameBuilder::new(1);
        response.buf.put_i16(0);
        response.buf.put_i32(i32::MAX);
        response.buf.put_slice(&[0, 1, b'A']);
        let frame = response.finish();
        assert!(decode_handshake_response(&frame, 1).is_err());
        let mut response = FrameBuilder::new(1);
        response.buf.put_i16(0);
        response.buf.put_i32(-1);
        assert!(decode_handshake_response(&response.finish(), 1).is_err());
    }

    #[test]
    fn wrong_keys_and_versions_are_refused() {
        let frame = authenticate_request(1, 1, "c", b"x");
        let header = parse(&frame);
        assert!(matches!(
            decode_handshake(&frame, &header),
            Err(SaslError::Malformed { .. })
        ));
        let frame = raw_request(36, 3, &[0, 0, 0, 0]);
        let got = decode_authenticate(&frame, &parse(&frame));
        assert!(
            matches!(got, Err(SaslError::UnsupportedVersion { version: 3, .. })),
            "{got:?}"
        );
        let frame = raw_request(17, 2, &[0, 0]);
        assert!(matches!(
            decode_handshake(&frame, &parse(&frame)),
            Err(SaslError::UnsupportedVersion { .. })
        ));
        let frame = raw_request(36, -1, &[0, 0, 0, 0]);
        assert!(decode_authenticate(&frame, &parse(&frame)).is_err());
        assert!(
            decode_authenticate_response(&authenticate_response(1, 1, 0, None, b"", 0), 3).is_err()
        );
    }

    #[test]
    fn flexible_response_header_has_its_tagged_fields() {
        // v2: length, correlation id, header tagged fields (0), then the body.
        let frame = authenticate_response(0x0102_0304, 2, 0, None, b"ab", 9);
        assert_eq!(
            &frame[..],
            &[
                0, 0, 0, 20, // length
                1, 2, 3, 4, // correlation id
                0, // header tagged fields
                0, 0, // error code
                0, // null error message
                3, b'a', b'b', // auth bytes
                0, 0, 0, 0, 0, 0, 0, 9, // session lifetime
                0, // tagged fields
            ][..]
        );
    }
}
