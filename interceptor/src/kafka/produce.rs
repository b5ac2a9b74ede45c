//! Produce request fields the data path needs before (or without) decoding the body.
//!
//! `acks` decides whether a response will come at all (acks=0 has none), so it is read for
//! every Produce, with a small parser of its own: the `kafka-protocol` crate no longer decodes
//! Produce v0–v2, which Kafka 4 brokers still advertise (KAFKA-18659).
use super::wire::Reader;
use super::{HeaderError, RequestHeader};

/// Api key of Produce.
pub const PRODUCE_KEY: i16 = 0;

/// The `acks` of a Produce request: 0 means the broker sends no response at all.
///
/// Body layout up to `acks`: v0–v2 start with it; v3–v8 put a classic nullable
/// `transactional_id` before it; v9+ (flexible) a compact nullable one. Versions newer than
/// v13 are assumed to keep that start. The value is returned as sent: anything but -1, 0 or 1
/// is answered by the broker with INVALID_REQUIRED_ACKS, which is the broker's business.
pub fn produce_acks(frame: &[u8], header: &RequestHeader) -> Result<i16, HeaderError> {
    if header.api_key != PRODUCE_KEY {
        return Err(HeaderError::Invalid("api key (not a Produce request)"));
    }
    let mut r = Reader::at(frame, header.body_offset, "produce body")?;
    match header.api_version {
        0..=2 => {}
        3..=8 => {
            r.nullable_string("transactional id")?;
        }
        9.. => {
            r.compact_nullable_string("transactional id")?;
        }
        _ => return Err(HeaderError::Invalid("produce version")),
    }
    r.i16("acks")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn acks_of(frame: &'static [u8]) -> Result<i16, HeaderError> {
        let declared = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(declared as usize, frame.len() - 4, "fixture length prefix");
        let frame = Bytes::from_static(frame);
        let header = RequestHeader::parse(&frame)?;
        produce_acks(&frame, &header)
    }

    #[test]
    fn produce_v0_acks_come_first() {
        let frame: &[u8] = &[
            0, 0, 0, 17, // length
            0, 0, // api key 0 (Produce)
            0, 0, // api version 0
            0, 0, 0, 1, // correlation id 1
            0, 1, b'p', // client id "p"
            0, 1, // acks 1
            0, 0, 0x75, 0x30, // timeout 30000 ms (rest of the body omitted)
        ];
        assert_eq!(acks_of(frame), Ok(1));
    }

    #[test]
    fn produce_v3_skips_a_classic_transactional_id() {
        let frame: &[u8] = &[
            0, 0, 0, 19, // length
            0, 0, // api key 0 (Produce)
            0, 3, // api version 3
            0, 0, 0, 2, // correlation id 2
            0xff, 0xff, // client id null
            0, 3, b't', b'x', b'n', // transactional id "txn"
            0, 0, // acks 0
            0, 0, // (first bytes of the timeout)
        ];
        assert_eq!(acks_of(frame), Ok(0));
        let null_txn: &[u8] = &[
            0, 0, 0, 14, // length
            0, 0, // api key 0 (Produce)
            0, 8, // api version 8
            0, 0, 0, 2, // correlation id 2
            0xff, 0xff, // client id null
            0xff, 0xff, // transactional id null
            0xff, 0xff, // acks -1
        ];
        assert_eq!(acks_of(null_txn), Ok(-1));
    }

    #[test]
    fn produce_v9_skips_a_compact_transactional_id() {
        let frame: &[u8] = &[
            0, 0, 0, 19, // length
            0, 0, // api key 0 (Produce)
            0, 9, // api version 9
            0, 0, 0, 3, // correlation id 3
            0, 2, b'c', b'1', // client id "c1" (classic even in header v2)
            0,    // no tagged fields
            4, b't', b'x', b'n', // transactional id "txn" (compact: length + 1)
            0xff, 0xff, // acks -1
        ];
        assert_eq!(acks_of(frame), Ok(-1));
    }

    #[test]
    fn produce_v11_with_header_tagged_fields_and_null_transactional_id() {
        let frame: &[u8] = &[
            0, 0, 0, 19, // length
            0, 0, // api key 0 (Produce)
            0, 11, // api version 11
            0, 0, 0, 4, // correlation id 4
            0, 1, b'c', // client id "c"
            1,    // one tagged field
            0, 2, 0xab, 0xcd, // tag 0, size 2, two bytes
            0,    // transactional id null (compact)
            0, 0, // acks 0
        ];
        assert_eq!(acks_of(frame), Ok(0));
    }

    #[test]
    fn truncated_and_foreign_frames_are_errors() {
        let full: &[u8] = &[
            0, 0, 0, 19, // length
            0, 0, // api key 0 (Produce)
            0, 9, // api version 9
            0, 0, 0, 3, // correlation id 3
            0, 2, b'c', b'1', // client id "c1"
            0,    // no tagged fields
            4, b't', b'x', b'n', // transactional id "txn"
            0xff, 0xff, // acks -1
        ];
        let frame = Bytes::from_static(full);
        let header = RequestHeader::parse(&frame).unwrap();
        for cut in header.body_offset..full.len() {
            assert!(
                matches!(
                    produce_acks(&full[..cut], &header),
                    Err(HeaderError::Truncated(_))
                ),
                "cut at {cut}"
            );
        }
        let fetch = RequestHeader {
            api_key: 1,
            ..header.clone()
        };
        assert!(produce_acks(full, &fetch).is_err());
        let negative = RequestHeader {
            api_version: -1,
            ..header.clone()
        };
        assert!(produce_acks(full, &negative).is_err());
        // A header whose body offset lies beyond the frame (a caller's mistake) is no panic.
        let beyond = RequestHeader {
            body_offset: 1000,
            ..header
        };
        assert!(produce_acks(full, &beyond).is_err());
    }
}
