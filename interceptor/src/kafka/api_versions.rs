//! ApiVersions response trimming: clients must only pick versions this build can decode.
//!
//! Each advertised api key is capped at min(broker max, the `kafka-protocol` crate's max, the
//! highest version the policy layer parses);
//! a key whose broker minimum is above the crate's max, or that the crate does not know
//! (vendor keys ≥ 10000, keys newer than the crate), is removed. Minimums are never raised:
//! Kafka 4 brokers still advertise Produce v0 for librdkafka's sake (KAFKA-18659). Every other
//! field (throttle, features, tagged fields, unknown tagged fields) is kept.
//!
//! KIP-511: the response header is always v0, and when a client asks with an ApiVersions
//! version the broker does not know, the broker answers UNSUPPORTED_VERSION with a v0 body
//! listing its ranges; the client then retries with the ApiVersions max found there.
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{api_versions_response::ApiVersion, ApiKey, ApiVersionsResponse},
    protocol::{Decodable, Encodable},
};

use super::frame::LENGTH_PREFIX;
use super::header::{response_body_offset, response_correlation_id, API_VERSIONS_KEY};
use super::wire::{to_usize, Reader};
use super::HeaderError;

/// The error code a broker answers an ApiVersions version it does not know with.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Response header v0: the correlation id alone.
const RESPONSE_HEADER_V0_BYTES: usize = 4;

/// Caps each advertised api key's max version at what this build can decode; returns the
/// re-encoded frame (length prefix included) or `None` when nothing had to change.
///
/// `request_version` is the version of the ApiVersions request this frame answers. A version
/// the crate cannot decode is an error unless the broker refused it (error 35, v0 body):
/// answer such requests locally with [`unsupported_version_response`] instead of forwarding
/// them (see [`can_decode_response`]).
pub fn trim_api_versions_response(
    frame: &Bytes,
    request_version: i16,
) -> Result<Option<Bytes>, HeaderError> {
    rewrite_api_versions_response(frame, request_version, &[])
}

/// An api key the interceptor answers itself (SASL), whatever the broker supports: its entry
/// is replaced by these versions, or removed when `versions` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedApi {
    pub api_key: i16,
    pub versions: Option<(i16, i16)>,
}

/// [`trim_api_versions_response`], then the entries of `served` replace the broker's (only in
/// a successful answer: a KIP-511 refusal stays as the broker made it).
pub fn rewrite_api_versions_response(
    frame: &Bytes,
    request_version: i16,
    served: &[ServedApi],
) -> Result<Option<Bytes>, HeaderError> {
    let correlation_id = response_correlation_id(frame)?;
    let body_offset = response_body_offset(frame, API_VERSIONS_KEY, request_version)?;
    let body = frame.slice(body_offset..);
    let version = body_version(&body, request_version)?;
    let mut response = decode(&body, version)?;
    let mut changed = cap_to_decodable(&mut response.api_keys);
    if response.error_code == 0 {
        changed |= serve_locally(&mut response.api_keys, served);
    }
    if !changed {
        return Ok(None);
    }
    encode_frame(correlation_id, &response, version).map(Some)
}

/// Decodes an ApiVersions response frame (length prefix included) to a request of
/// `request_version`, every array count checked against the bytes present first. A KIP-511
/// refusal (UNSUPPORTED_VERSION) decodes from its v0 body. For the daemon's own producers.
pub fn decode_api_versions_response(
    frame: &Bytes,
    request_version: i16,
) -> Result<ApiVersionsResponse, HeaderError> {
    let body_offset = response_body_offset(frame, API_VERSIONS_KEY, request_version)?;
    let body = frame.slice(body_offset..);
    let version = body_version(&body, request_version)?;
    decode(&body, version)
}

/// Puts the interceptor's own entries in place of the broker's; whether anything changed.
fn serve_locally(api_keys: &mut Vec<ApiVersion>, served: &[ServedApi]) -> bool {
    if served.is_empty() {
        return false;
    }
    let before = api_keys.clone();
    for s in served {
        api_keys.retain(|e| e.api_key != s.api_key);
        if let Some((min, max)) = s.versions {
            api_keys.push(
                ApiVersion::default()
                    .with_api_key(s.api_key)
                    .with_min_version(min)
                    .with_max_version(max),
            );
        }
    }
    api_keys.sort_by_key(|e| e.api_key);
    *api_keys != before
}

/// Whether a response to an ApiVersions request of `request_version` can be decoded (and so
/// trimmed) by this build.
pub fn can_decode_response(request_version: i16) -> bool {
    let range = ApiKey::ApiVersions.valid_versions();
    (range.min..=range.max).contains(&request_version)
}

/// What a broker answers an ApiVersions request of a version it does not know with, for the
/// proxy to answer locally a version this build cannot decode: UNSUPPORTED_VERSION in a v0
/// body whose only entry is ApiVersions itself with the versions this build decodes. Clients
/// (Java's NetworkClient, librdkafka) retry with that max.
pub fn unsupported_version_response(correlation_id: i32) -> Bytes {
    let range = ApiKey::ApiVersions.valid_versions();
    let mut out = BytesMut::with_capacity(20);
    out.put_i32(16); // length: the 16 bytes below
    out.put_i32(correlation_id); // response header v0
    out.put_i16(UNSUPPORTED_VERSION); // error code
    out.put_i32(1); // api keys: one entry
    out.put_i16(API_VERSIONS_KEY); // api key 18 (ApiVersions)
    out.put_i16(range.min); // min version
    out.put_i16(range.max); // max version
    out.freeze()
}

/// The version the body is encoded in: v0 when the broker refused the request version
/// (KIP-511), the request version otherwise. The error code is the first field in every
/// version, so it can be read before the version is known.
fn body_version(body: &[u8], request_version: i16) -> Result<i16, HeaderError> {
    let error_code = Reader::new(body).i16("ApiVersions error code")?;
    if error_code == UNSUPPORTED_VERSION {
        return Ok(0);
    }
    if !can_decode_response(request_version) {
        return Err(HeaderError::Invalid(
            "ApiVersions version this build cannot decode",
        ));
    }
    Ok(request_version)
}

fn decode(body: &Bytes, version: i16) -> Result<ApiVersionsResponse, HeaderError> {
    check_counts(body, version)?;
    ApiVersionsResponse::decode(&mut body.clone(), version)
        .map_err(|_| HeaderError::Invalid("ApiVersions response body"))
}

/// Removes the keys this build cannot decode and caps the rest; whether anything changed.
fn cap_to_decodable(api_keys: &mut Vec<ApiVersion>) -> bool {
    let advertised = api_keys.len();
    let mut capped = false;
    api_keys.retain_mut(|entry| {
        let Some(max) = decodable_max(entry.api_key) else {
            return false; // unknown to the crate: nothing here could decode it
        };
        if entry.min_version > max {
            return false; // every version the broker accepts is beyond this build
        }
        if entry.max_version > max {
            entry.max_version = max;
            capped = true;
        }
        true
    });
    capped || api_keys.len() != advertised
}

/// The highest version of `api_key` this build handles: what the crate decodes and the
/// policy layer parses (its table); `None` for a key the crate does not know.
pub fn decodable_max(api_key: i16) -> Option<i16> {
    let crate_max = ApiKey::try_from(api_key)
        .ok()
        .map(|key| key.valid_versions().max)?;
    let parsed_max = super::authz::api_access(api_key).map_or(crate_max, |a| a.max_version);
    Some(crate_max.min(parsed_max))
}

fn encode_frame(
    correlation_id: i32,
    response: &ApiVersionsResponse,
    version: i16,
) -> Result<Bytes, HeaderError> {
    const ENCODE: HeaderError = HeaderError::Invalid("ApiVersions response re-encoding");
    let body_len = response.compute_size(version).map_err(|_| ENCODE)?;
    let frame_len = RESPONSE_HEADER_V0_BYTES + body_len;
    let prefix = i32::try_from(frame_len).map_err(|_| ENCODE)?;
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX + frame_len);
    out.put_i32(prefix);
    out.put_i32(correlation_id);
    response.encode(&mut out, version).map_err(|_| ENCODE)?;
    if out.len() != LENGTH_PREFIX + frame_len {
        return Err(ENCODE); // the crate's size and encoding disagree: never send a bad prefix
    }
    Ok(out.freeze())
}

/// Smallest encodings, for checking counts: an api key entry is three i16 (plus an empty
/// tagged-field count when flexible); a feature entry is an empty compact string, two i16
/// and an empty tagged-field count.
const API_KEY_ENTRY_MIN: usize = 6;
const FEATURE_ENTRY_MIN: usize = 6;

/// Walks the body exactly as the crate's decoder will, checking every array count against
/// the bytes left. The crate sizes `Vec::with_capacity` from the count on the wire, so without
/// this a 5-byte count could make it ask for hundreds of gigabytes and abort the daemon.
fn check_counts(body: &[u8], version: i16) -> Result<(), HeaderError> {
    let flexible = version >= 3;
    let mut r = Reader::new(body);
    r.i16("ApiVersions error code")?;
    let count = array_count(&mut r, flexible, "ApiVersions api keys")?;
    let entry_min = API_KEY_ENTRY_MIN + usize::from(flexible);
    r.check_count(count, entry_min, "ApiVersions api keys")?;
    for _ in 0..count {
        r.take(API_KEY_ENTRY_MIN, "ApiVersions api key entry")?;
        if flexible {
            r.skip_tagged_fields("ApiVersions api key tagged fields")?;
        }
    }
    if version >= 1 {
        r.i32("ApiVersions throttle time")?;
    }
    if flexible {
        check_response_tagged_fields(&mut r)?;
    }
    Ok(())
}

/// The response's tagged fields. Like the crate, the known tags are read by their type, not
/// by their declared size, so this walk stays in step with the decoder.
fn check_response_tagged_fields(r: &mut Reader<'_>) -> Result<(), HeaderError> {
    const WHAT: &str = "ApiVersions tagged fields";
    let count = r.uvarint(WHAT)?;
    for _ in 0..count {
        let tag = r.uvarint(WHAT)?;
        let size = r.uvarint(WHAT)?;
        match tag {
            0 | 2 => check_features(r)?, // supported / finalized features
            1 => {
                r.i64("finalized features epoch")?;
            }
            3 => {
                r.u8("zk migration ready")?;
            }
            _ => {
                r.take(to_usize(size), WHAT)?;
            }
        }
    }
    Ok(())
}

fn check_features(r: &mut Reader<'_>) -> Result<(), HeaderError> {
    const WHAT: &str = "ApiVersions features";
    let count = array_count(r, true, WHAT)?;
    r.check_count(count, FEATURE_ENTRY_MIN, WHAT)?;
    for _ in 0..count {
        r.compact_string("feature name")?;
        r.take(4, "feature versions")?;
        r.skip_tagged_fields("feature tagged fields")?;
    }
    Ok(())
}

/// A non-null array count: compact (uvarint n + 1) when flexible, i32 otherwise.
fn array_count(
    r: &mut Reader<'_>,
    flexible: bool,
    what: &'static str,
) -> Result<usize, HeaderError> {
    if flexible {
        match r.uvarint(what)? {
            0 => Err(HeaderError::Invalid(what)),
            n => Ok(to_usize(n - 1)),
        }
    } else {
        let n = r.i32(what)?;
        usize::try_from(n).map_err(|_| HeaderError::Invalid(what))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::{
        messages::api_versions_response::{FinalizedFeatureKey, SupportedFeatureKey},
        protocol::StrBytes,
    };

    use super::*;

    const CORRELATION_ID: i32 = 0x0a0b_0c0d;

    fn entry(key: i16, min: i16, max: i16) -> ApiVersion {
        ApiVersion::default()
            .with_api_key(key)
            .with_min_version(min)
            .with_max_version(max)
    }

    /// A response frame as a broker would send it (header v0), encoded by the crate.
    fn frame_of(response: &ApiVersionsResponse, version: i16) -> Bytes {
        let mut body = BytesMut::new();
        response.encode(&mut body, version).unwrap();
        let mut out = BytesMut::new();
        out.put_i32(4 + body.len() as i32);
        out.put_i32(CORRELATION_ID);
        out.extend_from_slice(&body);
        out.freeze()
    }

    /// Decodes a frame made by `trim_api_versions_response`, checking its prefix and header.
    fn decode_frame(frame: &Bytes, version: i16) -> ApiVersionsResponse {
        let declared = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(declared as usize, frame.len() - 4, "length prefix");
        assert_eq!(response_correlation_id(frame), Ok(CORRELATION_ID));
        let mut body = frame.slice(8..);
        let decoded = ApiVersionsResponse::decode(&mut body, version).unwrap();
        assert!(body.is_empty(), "trailing bytes after the body");
        decoded
    }

    fn crate_max(key: ApiKey) -> i16 {
        key.valid_versions().max
    }

    /// Every field set, so trimming must carry each one over.
    fn full_response(api_keys: Vec<ApiVersion>) -> ApiVersionsResponse {
        ApiVersionsResponse::default()
            .with_api_keys(api_keys)
            .with_throttle_time_ms(250)
            .with_supported_features(vec![SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str("metadata.version"))
                .with_min_version(1)
                .with_max_version(27)])
            .with_finalized_features_epoch(42)
            .with_finalized_features(vec![FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str("metadata.version"))
                .with_min_version_level(27)
                .with_max_version_level(27)])
            .with_zk_migration_ready(true)
            .with_unknown_tagged_field(9, Bytes::from_static(b"future"))
    }

    #[test]
    fn versions_above_the_crates_max_are_capped_at_every_response_version() {
        let produce_max = crate_max(ApiKey::Produce);
        for version in 0..=4 {
            let response = full_response(vec![
                entry(0, 0, produce_max + 5),          // Produce, newer than this build
                entry(1, 4, crate_max(ApiKey::Fetch)), // Fetch, exactly this build's max
                entry(18, 0, 9),                       // ApiVersions v0..9
            ]);
            let trimmed = trim_api_versions_response(&frame_of(&response, version), version)
                .unwrap()
                .expect("changed");
            let decoded = decode_frame(&trimmed, version);
            let mut expected = response.clone();
            expected.api_keys[0].max_version = produce_max;
            expected.api_keys[2].max_version = crate_max(ApiKey::ApiVersions);
            // Round trip at this version drops what the version cannot carry.
            let expected =
                ApiVersionsResponse::decode(&mut frame_of(&expected, version).slice(8..), version)
                    .unwrap();
            assert_eq!(decoded, expected, "v{version}");
        }
    }

    #[test]
    fn every_other_field_survives_trimming() {
        let response = full_response(vec![
            entry(0, 0, 99).with_unknown_tagged_field(4, Bytes::from_static(b"t")),
            entry(3, 0, 12),
        ]);
        let trimmed = trim_api_versions_response(&frame_of(&response, 4), 4)
            .unwrap()
            .unwrap();
        let decoded = decode_frame(&trimmed, 4);
        assert_eq!(decoded.throttle_time_ms, 250);
        assert_eq!(decoded.supported_features, response.supported_features);
        assert_eq!(decoded.finalized_features_epoch, 42);
        assert_eq!(decoded.finalized_features, response.finalized_features);
        assert!(decoded.zk_migration_ready);
        assert_eq!(
            decoded.unknown_tagged_fields,
            response.unknown_tagged_fields
        );
        assert_eq!(
            decoded.api_keys[0].unknown_tagged_fields,
            BTreeMap::from([(4, Bytes::from_static(b"t"))])
        );
        assert_eq!(decoded.api_keys[1], entry(3, 0, 12));
    }

    #[test]
    fn vendor_and_unknown_keys_are_removed() {
        let response = ApiVersionsResponse::default().with_api_keys(vec![
            entry(3, 0, 12),    // Metadata: kept as is
            entry(10000, 0, 3), // a vendor key
            entry(88, 0, 0),    // StreamsGroupHeartbeat: newer than the crate
            entry(7, 0, 3),     // ControlledShutdown: removed from Kafka 4 and the crate
        ]);
        let trimmed = trim_api_versions_response(&frame_of(&response, 3), 3)
            .unwrap()
            .unwrap();
        assert_eq!(decode_frame(&trimmed, 3).api_keys, vec![entry(3, 0, 12)]);
    }

    #[test]
    fn a_key_whose_minimum_is_beyond_the_crate_is_removed_and_minimums_never_rise() {
        let share_heartbeat = ApiKey::ShareGroupHeartbeat as i16;
        let beyond = crate_max(ApiKey::ShareGroupHeartbeat) + 1;
        let response = ApiVersionsResponse::default().with_api_keys(vec![
            entry(share_heartbeat, beyond, beyond + 1), // nothing this build decodes
            entry(0, 0, 99), // Produce from v0, below the crate's v3 minimum: min stays 0
        ]);
        let trimmed = trim_api_versions_response(&frame_of(&response, 2), 2)
            .unwrap()
            .unwrap();
        assert_eq!(
            decode_frame(&trimmed, 2).api_keys,
            vec![entry(0, 0, crate_max(ApiKey::Produce))]
        );
    }

    #[test]
    fn versions_the_policy_layer_does_not_parse_are_not_advertised() {
        for key in ApiKey::iter() {
            let parsed = crate::kafka::authz::api_access(key as i16).map(|a| a.max_version);
            if let Some(parsed) = parsed.filter(|&m| m < key.valid_versions().max) {
                let frame = frame_of(&full_response(vec![entry(key as i16, 0, i16::MAX)]), 3);
                let trimmed = trim_api_versions_response(&frame, 3).unwrap().unwrap();
                assert_eq!(
                    decode_frame(&trimmed, 3).api_keys,
                    vec![entry(key as i16, 0, parsed)],
                    "{key:?}"
                );
            }
        }
    }

    #[test]
    fn a_response_within_the_ranges_this_build_handles_is_left_alone() {
        let keys: Vec<_> = ApiKey::iter()
            .map(|key| {
                entry(
                    key as i16,
                    key.valid_versions().min,
                    decodable_max(key as i16).unwrap(),
                )
            })
            .collect();
        for version in 0..=4 {
            let frame = frame_of(&full_response(keys.clone()), version);
            assert_eq!(
                trim_api_versions_response(&frame, version),
                Ok(None),
                "v{version}"
            );
        }
    }

    #[test]
    fn unsupported_version_answers_are_v0_whatever_was_asked() {
        // A Kafka broker answering ApiVersions v7 (unknown to it): error 35, body v0.
        let frame = Bytes::from_static(&[
            0, 0, 0, 28, // length
            0x0a, 0x0b, 0x0c, 0x0d, // correlation id (response header v0)
            0, 35, // error code 35: UNSUPPORTED_VERSION
            0, 0, 0, 3, // api keys: 3 entries (classic i32 count: v0)
            0, 18, 0, 0, 0, 9, // ApiVersions v0..9
            0, 0, 0, 0, 0, 99, // Produce v0..99
            0x27, 0x10, 0, 0, 0,
            1, // vendor key 10000 v0..1
               // v0 has no throttle time and no tagged fields
        ]);
        let trimmed = trim_api_versions_response(&frame, 7).unwrap().unwrap();
        let decoded = decode_frame(&trimmed, 0);
        assert_eq!(decoded.error_code, UNSUPPORTED_VERSION);
        assert_eq!(
            decoded.api_keys,
            vec![
                entry(18, 0, crate_max(ApiKey::ApiVersions)),
                entry(0, 0, crate_max(ApiKey::Produce)),
            ]
        );
        // The same answer to a version this build knows is still a v0 body.
        assert!(trim_api_versions_response(&frame, 3).unwrap().is_some());
    }

    #[test]
    fn classic_and_flexible_fixtures() {
        // ApiVersions v2 response, already within this build's ranges.
        let v2 = Bytes::from_static(&[
            0, 0, 0, 26, // length
            0, 0, 0, 1, // correlation id 1
            0, 0, // error code 0
            0, 0, 0, 2, // api keys: 2 entries
            0, 18, 0, 0, 0, 3, // ApiVersions v0..3
            0, 3, 0, 0, 0, 12, // Metadata v0..12
            0, 0, 0, 0, // throttle time 0 ms
        ]);
        assert_eq!(trim_api_versions_response(&v2, 2), Ok(None));
        // ApiVersions v3 response advertising Produce up to v50 and one supported feature.
        let v3 = Bytes::from_static(&[
            0, 0, 0, 38, // length
            0, 0, 0, 2, // correlation id 2
            0, 0, // error code 0
            2, // api keys: 1 entry (compact: n + 1)
            0, 0, 0, 0, 0, 50, // Produce v0..50
            0,  // entry: no tagged fields
            0, 0, 0, 0, // throttle time 0 ms
            1, // one tagged field
            0, 17, // tag 0 (supported features), 17 bytes
            2,  // features: 1 entry
            11, b'k', b'r', b'a', b'f', b't', b'.', b'v', b'e', b'r', b's', // name (10 bytes)
            0, 0, 0, 1, // versions 0..1
            0, // feature: no tagged fields
        ]);
        let trimmed = trim_api_versions_response(&v3, 3).unwrap().unwrap();
        let decoded = ApiVersionsResponse::decode(&mut trimmed.slice(8..), 3).unwrap();
        assert_eq!(
            decoded.api_keys,
            vec![entry(0, 0, crate_max(ApiKey::Produce))]
        );
        assert_eq!(decoded.supported_features[0].name.as_str(), "kraft.vers");
        assert_eq!(response_correlation_id(&trimmed), Ok(2));
    }

    #[test]
    fn lying_counts_are_refused_before_the_crate_allocates() {
        let classic = Bytes::from_static(&[
            0, 0, 0, 16, // length
            0, 0, 0, 1, // correlation id 1
            0, 0, // error code 0
            0x7f, 0xff, 0xff, 0xff, // api keys: 2^31 - 1 entries
            0, 18, 0, 0, 0, 3, // one entry present
        ]);
        assert!(trim_api_versions_response(&classic, 1).is_err());
        let compact_features = Bytes::from_static(&[
            0, 0, 0, 19, // length
            0, 0, 0, 1, // correlation id 1
            0, 0, // error code 0
            1, // api keys: 0 entries
            0, 0, 0, 0, // throttle time
            1, // one tagged field
            2, 5, // tag 2 (finalized features), declared 5 bytes
            0xff, 0xff, 0xff, 0xff, 0x0f, // features: u32::MAX - 1 entries
        ]);
        assert!(trim_api_versions_response(&compact_features, 3).is_err());
    }

    #[test]
    fn truncated_responses_are_errors_at_every_length() {
        let response = full_response(vec![entry(0, 0, 99), entry(10000, 0, 1)]);
        for version in 0..=4 {
            let frame = frame_of(&response, version);
            for cut in 0..frame.len() {
                // Any answer but a panic; most cuts are errors (a cut in unknown trailing
                // bytes is not, as the crate ignores what follows the body).
                let _ = trim_api_versions_response(&frame.slice(..cut), version);
            }
            assert!(trim_api_versions_response(&frame.slice(..9), version).is_err());
        }
    }

    #[test]
    fn a_version_this_build_cannot_decode_is_an_error_not_a_guess() {
        let frame = frame_of(&ApiVersionsResponse::default(), 4);
        assert!(trim_api_versions_response(&frame, 5).is_err());
        assert!(trim_api_versions_response(&frame, -1).is_err());
        assert!(!can_decode_response(5));
        assert!(can_decode_response(0) && can_decode_response(4));
    }

    #[test]
    fn the_local_unsupported_version_answer_is_what_a_broker_sends() {
        let frame = unsupported_version_response(CORRELATION_ID);
        let decoded = decode_frame(&frame, 0);
        assert_eq!(decoded.error_code, UNSUPPORTED_VERSION);
        assert_eq!(
            decoded.api_keys,
            vec![entry(18, 0, crate_max(ApiKey::ApiVersions))]
        );
        // Already within range: trimming leaves it alone.
        assert_eq!(trim_api_versions_response(&frame, 9), Ok(None));
    }

    #[test]
    fn served_apis_replace_or_remove_the_brokers_entries() {
        let response = full_response(vec![entry(0, 0, 9), entry(17, 0, 1), entry(36, 0, 2)]);
        let served = [
            ServedApi {
                api_key: 17,
                versions: Some((1, 1)),
            },
            ServedApi {
                api_key: 36,
                versions: None,
            },
            ServedApi {
                api_key: 50,
                versions: Some((0, 1)),
            },
        ];
        let out = rewrite_api_versions_response(&frame_of(&response, 3), 3, &served)
            .unwrap()
            .unwrap();
        let keys: Vec<_> = decode_frame(&out, 3)
            .api_keys
            .iter()
            .map(|e| (e.api_key, e.min_version, e.max_version))
            .collect();
        assert_eq!(keys, vec![(0, 0, 9), (17, 1, 1), (50, 0, 1)]);
        // A KIP-511 refusal is left as the broker made it.
        let refusal = ApiVersionsResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .with_api_keys(vec![entry(18, 0, 3)]);
        assert_eq!(
            rewrite_api_versions_response(&frame_of(&refusal, 0), 0, &served),
            Ok(None)
        );
    }
}
