//! Request and response headers, parsed in place from the frame.
//!
//! Request header v1: api key, api version, correlation id, client id (classic nullable
//! string). v2 (flexible versions, KIP-482) adds tagged fields. The client id stays a classic
//! string even in v2. Which version a request uses depends on its api key and version; the
//! `kafka-protocol` crate knows that for the keys it knows. Keys it does not know (vendor keys
//! ≥ 10000, keys newer or older than the crate) are parsed as v1: their header fields come out
//! right; only `body_offset` could be short by the tagged fields if such a key were flexible,
//! and their bodies are never decoded here.
//!
//! Response header v0: correlation id. v1 adds tagged fields. ApiVersions responses always use
//! v0 (KIP-511), whatever the request version.
use std::borrow::Cow;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use thiserror::Error;

use super::frame::LENGTH_PREFIX;
use super::wire::Reader;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("frame truncated in {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Api key of ApiVersions, whose response header is always v0.
pub const API_VERSIONS_KEY: i16 = 18;

/// A decoded request header. `frame` is the whole frame, length prefix included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// Zero-copy slice of the frame; `None` for a null client id.
    pub client_id: Option<Bytes>,
    /// Offset of the request body within the frame (length prefix included).
    pub body_offset: usize,
}

impl RequestHeader {
    /// Parses the header of one request frame as returned by
    /// [`split_frame`](super::split_frame) (length prefix included). Never panics: the frame
    /// is untrusted input.
    pub fn parse(frame: &Bytes) -> Result<Self, HeaderError> {
        let mut r = Reader::at(frame, LENGTH_PREFIX, "length prefix")?;
        let api_key = r.i16("api key")?;
        let api_version = r.i16("api version")?;
        let correlation_id = r.i32("correlation id")?;
        let client_id = r
            .nullable_string("client id")?
            .map(|range| frame.slice(range));
        if request_header_version(api_key, api_version) >= 2 {
            r.skip_tagged_fields("request header tagged fields")?;
        }
        Ok(Self {
            api_key,
            api_version,
            correlation_id,
            client_id,
            body_offset: r.pos(),
        })
    }

    /// The client id as text, for logs and audit: invalid UTF-8 is replaced (Kafka itself
    /// decodes it the same lossy way), and a null client id reads as "" — the same as an empty
    /// one; `client_id` tells the two apart where that matters.
    pub fn client_id_lossy(&self) -> Cow<'_, str> {
        match &self.client_id {
            Some(bytes) => String::from_utf8_lossy(bytes),
            None => Cow::Borrowed(""),
        }
    }

    /// Whether the `kafka-protocol` crate knows this api key (so its bodies can be decoded).
    pub fn is_known_api_key(&self) -> bool {
        ApiKey::try_from(self.api_key).is_ok()
    }
}

/// The request header version for an api key and version: the crate's answer where it knows
/// the key (its rule is a threshold on the version, so versions outside its supported range
/// still get the best guess), v1 otherwise.
pub fn request_header_version(api_key: i16, api_version: i16) -> i16 {
    match ApiKey::try_from(api_key) {
        Ok(key) => key.request_header_version(api_version),
        Err(()) => 1,
    }
}

/// The response header version for an api key and version: always v0 for ApiVersions
/// (KIP-511), the crate's answer for other keys it knows, v0 for keys it does not know (the
/// counterpart of request header v1).
pub fn response_header_version(api_key: i16, api_version: i16) -> i16 {
    if api_key == API_VERSIONS_KEY {
        return 0;
    }
    match ApiKey::try_from(api_key) {
        Ok(key) => key.response_header_version(api_version),
        Err(()) => 0,
    }
}

/// Correlation id of a response frame (length prefix included).
pub fn response_correlation_id(frame: &[u8]) -> Result<i32, HeaderError> {
    Reader::at(frame, LENGTH_PREFIX, "length prefix")?.i32("correlation id")
}

/// Offset of the body of a response frame (length prefix included), which answers a request
/// of `api_key` at `api_version`: after the correlation id, and after the tagged fields for
/// response header v1.
pub fn response_body_offset(
    frame: &[u8],
    api_key: i16,
    api_version: i16,
) -> Result<usize, HeaderError> {
    let mut r = Reader::at(frame, LENGTH_PREFIX, "length prefix")?;
    r.i32("correlation id")?;
    if response_header_version(api_key, api_version) >= 1 {
        r.skip_tagged_fields("response header tagged fields")?;
    }
    Ok(r.pos())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::{BufMut, BytesMut};
    use kafka_protocol::{
        messages::RequestHeader as CrateHeader,
        protocol::{Encodable, StrBytes},
    };

    use super::*;

    /// Body bytes after every header, so a wrong `body_offset` shows.
    const BODY: &[u8] = b"\xde\xad\xbe\xef";

    /// A frame: length prefix, the crate's encoding of `header` at `header_version`, BODY.
    fn crate_frame(header: &CrateHeader, header_version: i16) -> Bytes {
        let mut encoded = BytesMut::new();
        header.encode(&mut encoded, header_version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32((encoded.len() + BODY.len()) as i32);
        frame.extend_from_slice(&encoded);
        frame.extend_from_slice(BODY);
        frame.freeze()
    }

    fn crate_header(key: i16, version: i16, client_id: Option<&'static str>) -> CrateHeader {
        CrateHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(0x0102_0304 ^ i32::from(key))
            .with_client_id(client_id.map(StrBytes::from_static_str))
    }

    fn check_agrees(header: &CrateHeader, header_version: i16) {
        let frame = crate_frame(header, header_version);
        let parsed = RequestHeader::parse(&frame).unwrap();
        let what = format!(
            "key {} v{}",
            header.request_api_key, header.request_api_version
        );
        assert_eq!(parsed.api_key, header.request_api_key, "{what}");
        assert_eq!(parsed.api_version, header.request_api_version, "{what}");
        assert_eq!(parsed.correlation_id, header.correlation_id, "{what}");
        assert_eq!(
            parsed.client_id.as_deref(),
            header.client_id.as_ref().map(|s| s.as_bytes()),
            "{what}"
        );
        assert_eq!(&frame[parsed.body_offset..], BODY, "{what}");
    }

    #[test]
    fn every_known_api_key_at_its_min_and_max_version_agrees_with_the_crate() {
        let mut checked = 0;
        for key in ApiKey::iter() {
            let range = key.valid_versions();
            for version in [range.min, range.max] {
                let header_version = key.request_header_version(version);
                let mut header = crate_header(key as i16, version, Some("my-client"));
                check_agrees(&header, header_version);
                header.client_id = None;
                check_agrees(&header, header_version);
                if header_version >= 2 {
                    // Unknown tagged fields (tags 0 and 7, one empty) must be skipped.
                    header.unknown_tagged_fields =
                        BTreeMap::from([(0, Bytes::from_static(b"abc")), (7, Bytes::new())]);
                    check_agrees(&header, header_version);
                }
                checked += 1;
            }
        }
        assert!(checked >= 2 * 80, "only {checked} key/version pairs");
    }

    #[test]
    fn flexible_and_classic_header_fixture() {
        // Produce v9 (flexible: header v2).
        let frame = Bytes::from_static(&[
            0, 0, 0, 18, // length: 18 bytes follow
            0, 0, // api key 0 (Produce)
            0, 9, // api version 9
            0, 0, 0, 42, // correlation id 42
            0, 3, b'c', b'l', b'i', // client id "cli" (i16 length, not compact)
            1,    // one tagged field
            5, 1, 0xff, // tag 5, size 1, one byte
            0xaa, // body
        ]);
        let header = RequestHeader::parse(&frame).unwrap();
        assert_eq!(
            (header.api_key, header.api_version, header.correlation_id),
            (0, 9, 42)
        );
        assert_eq!(header.client_id_lossy(), "cli");
        assert_eq!(header.body_offset, 21);

        // Produce v8 (classic: header v1) with the same bytes: no tagged fields to skip.
        let mut bytes = frame.to_vec();
        bytes[7] = 8; // api version 8
        let header = RequestHeader::parse(&Bytes::from(bytes)).unwrap();
        assert_eq!(header.body_offset, 17);
    }

    #[test]
    fn vendor_and_unknown_keys_parse_as_header_v1() {
        for key in [10000, 10001, i16::MAX, 4, 7, 88, -1, i16::MIN] {
            let header = crate_header(key, 3, Some("vendor-client"));
            check_agrees(&header, 1);
            let parsed = RequestHeader::parse(&crate_frame(&header, 1)).unwrap();
            assert!(!parsed.is_known_api_key());
        }
    }

    #[test]
    fn versions_outside_the_crates_range_still_parse() {
        // Produce v100 follows the crate's rule (flexible from v9): header v2.
        check_agrees(&crate_header(0, 100, Some("c")), 2);
        assert_eq!(request_header_version(0, 100), 2);
        // Produce v0 (removed from the crate in Kafka 4 style) and negative versions: v1.
        check_agrees(&crate_header(0, 0, Some("c")), 1);
        check_agrees(&crate_header(0, -5, Some("c")), 1);
        // ApiVersions v5 (newer than the crate): flexible, header v2.
        check_agrees(&crate_header(18, 5, Some("c")), 2);
    }

    #[test]
    fn truncated_headers_at_every_length_are_errors() {
        let mut header = crate_header(0, 9, Some("client"));
        header.unknown_tagged_fields = BTreeMap::from([(3, Bytes::from_static(b"xyz"))]);
        let frame = crate_frame(&header, 2);
        let header_end = frame.len() - BODY.len();
        for cut in 0..header_end {
            let got = RequestHeader::parse(&frame.slice(..cut));
            assert!(
                matches!(got, Err(HeaderError::Truncated(_))),
                "cut at {cut}: {got:?}"
            );
        }
        // The body is not the header's business: a frame that ends with the header parses.
        let parsed = RequestHeader::parse(&frame.slice(..header_end)).unwrap();
        assert_eq!(parsed.body_offset, header_end);
    }

    #[test]
    fn invalid_client_id_length_and_lossy_text() {
        let frame = Bytes::from_static(&[
            0, 0, 0, 10, // length
            0, 3, // api key 3 (Metadata)
            0, 1, // api version 1
            0, 0, 0, 1, // correlation id 1
            0xff, 0xfe, // client id length -2: neither null nor a length
        ]);
        assert_eq!(
            RequestHeader::parse(&frame),
            Err(HeaderError::Invalid("client id"))
        );
        let frame = Bytes::from_static(&[
            0, 0, 0, 12, // length
            0, 3, // api key 3 (Metadata)
            0, 1, // api version 1
            0, 0, 0, 1, // correlation id 1
            0, 2, 0xc3, 0x28, // client id: 2 bytes of invalid UTF-8
        ]);
        let header = RequestHeader::parse(&frame).unwrap();
        assert_eq!(header.client_id_lossy(), "\u{fffd}(");
        let null = RequestHeader {
            client_id: None,
            ..header
        };
        assert_eq!(null.client_id_lossy(), "");
    }

    #[test]
    fn client_id_is_a_zero_copy_slice() {
        let frame = crate_frame(&crate_header(3, 12, Some("zero-copy")), 2);
        let parsed = RequestHeader::parse(&frame).unwrap();
        let client_id = parsed.client_id.unwrap();
        let start = client_id.as_ptr() as usize - frame.as_ptr() as usize;
        assert_eq!(&frame[start..start + client_id.len()], b"zero-copy");
    }

    #[test]
    fn response_headers() {
        // Response header v1 (Metadata v12 is flexible).
        let flexible = [
            0, 0, 0, 9, // length
            0, 0, 0, 77, // correlation id 77
            1,  // one tagged field
            0, 1, 0,    // tag 0, size 1, one byte
            0xaa, // body
        ];
        assert_eq!(response_correlation_id(&flexible), Ok(77));
        assert_eq!(response_body_offset(&flexible, 3, 12), Ok(12));
        // Metadata v8 (classic): response header v0.
        assert_eq!(response_body_offset(&flexible, 3, 8), Ok(8));
        // ApiVersions v3 is flexible, but its response header is always v0 (KIP-511).
        assert_eq!(response_body_offset(&flexible, 18, 3), Ok(8));
        assert_eq!(response_header_version(18, 4), 0);
        // Vendor key: v0.
        assert_eq!(response_body_offset(&flexible, 10000, 3), Ok(8));
        // Truncated.
        for cut in 0..8 {
            assert!(response_correlation_id(&flexible[..cut]).is_err(), "{cut}");
        }
        for cut in 0..12 {
            assert!(
                response_body_offset(&flexible[..cut], 3, 12).is_err(),
                "{cut}"
            );
        }
    }
}
