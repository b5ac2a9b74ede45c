//! Batches made by the `kafka-protocol` crate's encoder (and by hand, for what it cannot
//! make) read back by `scan` and `batches`.

use std::{io::Write as _, ops::ControlFlow, time::Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    indexmap::IndexMap,
    protocol::StrBytes,
    records::{
        Compression as KpCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    },
};

use super::*;

pub(super) const LIMITS: RecordLimits = RecordLimits {
    max_decompressed_bytes: 1 << 20,
    max_records_per_batch: 10_000,
};

pub(super) const CODECS: [(KpCompression, Compression); 5] = [
    (KpCompression::None, Compression::None),
    (KpCompression::Gzip, Compression::Gzip),
    (KpCompression::Snappy, Compression::Snappy),
    (KpCompression::Lz4, Compression::Lz4),
    (KpCompression::Zstd, Compression::Zstd),
];

pub(super) type OwnedHeader = (Vec<u8>, Option<Vec<u8>>);

/// A record as `scan` saw it, owned so it outlives the call.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    pub(super) batch: usize,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) headers: Vec<OwnedHeader>,
    pub(super) offset_delta: i32,
    pub(super) size: usize,
}

pub(super) fn record(
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset as i32,
        timestamp: 1_700_000_000_000 + offset,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    StrBytes::from_string(k.to_string()),
                    v.map(Bytes::copy_from_slice),
                )
            })
            .collect::<IndexMap<_, _>>(),
    }
}

pub(super) fn encode(records: &[Record], compression: KpCompression) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.to_vec()
}

pub(super) fn scan_all(records: &[u8], limits: &RecordLimits) -> Result<Vec<Seen>, RecordsError> {
    let mut scratch = Vec::new();
    let mut seen = Vec::new();
    scan(records, limits, &mut scratch, |batch, r| {
        seen.push(Seen {
            batch: batch.index,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers()
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
            offset_delta: r.offset_delta,
            size: r.size(),
        });
        ControlFlow::<()>::Continue(())
    })?;
    Ok(seen)
}

pub(super) fn expected(batch: usize, records: &[Record]) -> Vec<Seen> {
    let base = records.iter().map(|r| r.offset).min().unwrap_or(0);
    records
        .iter()
        .map(|r| {
            let headers: Vec<OwnedHeader> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(|v| v.to_vec())))
                .collect();
            let size = r.key.as_ref().map_or(0, Bytes::len)
                + r.value.as_ref().map_or(0, Bytes::len)
                + headers
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                    .sum::<usize>();
            Seen {
                batch,
                key: r.key.as_ref().map(|b| b.to_vec()),
                value: r.value.as_ref().map(|b| b.to_vec()),
                headers,
                offset_delta: (r.offset - base) as i32,
                size,
            }
        })
        .collect()
}

/// Records with every shape: null and empty key and value, headers with null values,
/// repeated content (so the codecs actually compress).
pub(super) fn assorted(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let key = format!("key-{i}");
            let value = format!("value {i} ").repeat(i % 7 + 1);
            let (key, value) = match i % 5 {
                0 => (None, Some(value.as_bytes())),
                1 => (Some(key.as_bytes()), None),
                2 => (Some(&b""[..]), Some(&b""[..])),
                _ => (Some(key.as_bytes()), Some(value.as_bytes())),
            };
            let headers: &[(&str, Option<&[u8]>)] = match i % 3 {
                0 => &[],
                1 => &[("trace", Some(b"abc")), ("empty", None)],
                _ => &[("h", Some(b""))],
            };
            record(i as i64, key, value, headers)
        })
        .collect()
}

/// A v2 batch around `payload` (the records, compressed or not), CRC filled in.
pub(super) fn raw_batch(attributes: i16, count: i32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0i64.to_be_bytes()); // base offset
    b.extend((49 + payload.len() as i32).to_be_bytes());
    b.extend(0i32.to_be_bytes()); // partition leader epoch
    b.push(2);
    b.extend([0; 4]); // crc
    b.extend(attributes.to_be_bytes());
    b.extend(count.saturating_sub(1).max(0).to_be_bytes()); // last offset delta
    b.extend(0i64.to_be_bytes());
    b.extend(0i64.to_be_bytes());
    b.extend((-1i64).to_be_bytes()); // producer id
    b.extend((-1i16).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend(count.to_be_bytes());
    b.extend(payload);
    reseal(&mut b);
    b
}

/// Recomputes the CRC of the batch at the start of `batch` after a test edited it.
pub(super) fn reseal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

pub(super) fn varint(v: i64) -> Vec<u8> {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    while u >= 0x80 {
        out.push(u as u8 | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
    out
}

/// A record's body (after its length) with the given key and value and no headers.
pub(super) fn record_body(key: &[u8], value: &[u8]) -> Vec<u8> {
    [
        vec![0],   // attributes
        varint(0), // timestamp delta
        varint(0), // offset delta
        varint(key.len() as i64),
        key.to_vec(),
        varint(value.len() as i64),
        value.to_vec(),
        varint(0), // headers
    ]
    .concat()
}

pub(super) fn length_prefixed(body: &[u8]) -> Vec<u8> {
    [varint(body.len() as i64), body.to_vec()].concat()
}

#[test]
fn every_codec_round_trips_assorted_records() {
    let records = assorted(40);
    for (kp, ours) in CODECS {
        let bytes = encode(&records, kp);
        let infos: Vec<BatchInfo> = batches(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(infos.len(), 1, "{ours:?}");
        assert_eq!(infos[0].compression, ours);
        assert_eq!(infos[0].record_count, 40);
        assert_eq!(infos[0].batch_bytes, bytes.len());
        assert_eq!(infos[0].last_offset_delta, 39);
        assert!(!infos[0].transactional && !infos[0].control);
        assert_eq!(
            scan_all(&bytes, &LIMITS).unwrap(),
            expected(0, &records),
            "{ours:?}"
        );
    }
}

#[test]
fn many_records_in_every_codec() {
    let records: Vec<Record> = (0..5_000)
        .map(|i| record(i, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]))
        .collect();
    for (kp, ours) in CODECS {
        let bytes = encode(&records, kp);
        let seen = scan_all(&bytes, &LIMITS).unwrap();
        assert_eq!(seen, expected(0, &records), "{ours:?}");
    }
}

#[test]
fn several_batches_in_one_partition_are_read_in_order() {
    let first = assorted(3);
    let second: Vec<Record> = (0..4)
        .map(|i| record(100 + i, Some(b"second"), Some(b"batch"), &[]))
        .collect();
    let third = vec![record(7, None, Some(b"third"), &[("x", Some(b"y"))])];
    let parts = [
        encode(&first, KpCompression::Zstd),
        encode(&second, KpCompression::None),
        encode(&third, KpCompression::Snappy),
    ];
    let bytes = parts.concat();
    let infos: Vec<BatchInfo> = batches(&bytes).collect::<Result<_, _>>().unwrap();
    let positions: Vec<usize> = infos.iter().map(|b| b.position).collect();
    assert_eq!(
        positions,
        [0, parts[0].len(), parts[0].len() + parts[1].len()]
    );
    assert_eq!(infos[1].base_offset, 100);
    let mut want = expected(0, &first);
    want.extend(expected(1, &second));
    want.extend(expected(2, &third));
    assert_eq!(scan_all(&bytes, &LIMITS).unwrap(), want);
}

#[test]
fn breaking_stops_the_scan_and_returns_the_value() {
    let records = assorted(10);
    let bytes = [
        encode(&records, KpCompression::Lz4),
        encode(&records, KpCompression::None),
    ]
    .concat();
    let mut calls = 0;
    let found = scan(&bytes, &LIMITS, &mut Vec::new(), |batch, r| {
        calls += 1;
        if r.value == Some(b"value 3 value 3 value 3 value 3 ") {
            ControlFlow::Break((batch.index, r.offset_delta))
        } else {
            ControlFlow::Continue(())
        }
    });
    assert_eq!(found, Ok(Some((0, 3))));
    assert_eq!(calls, 4);
}

#[test]
fn transactional_batches_carry_their_producer_fields() {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: true,
            producer_id: 4242,
            producer_epoch: 7,
            sequence: 10 + i as i32,
            ..record(i, Some(b"k"), Some(b"v"), &[])
        })
        .collect();
    let bytes = encode(&records, KpCompression::Gzip);
    let info = batches(&bytes).next().unwrap().unwrap();
    assert!(info.transactional && !info.control);
    assert_eq!(
        (info.producer_id, info.producer_epoch, info.base_sequence),
        (4242, 7, 10)
    );
    assert_eq!(scan_all(&bytes, &LIMITS).unwrap().len(), 3);
}

#[test]
fn control_batches_are_reported_but_not_scanned() {
    // A commit marker: key = version 0, type 1 (commit); value = version 0, coordinator epoch.
    let marker = Record {
        transactional: true,
        control: true,
        producer_id: 9,
        ..record(0, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 5]), &[])
    };
    let data = vec![record(1, Some(b"data"), Some(b"forbidden"), &[])];
    let bytes = [
        encode(&[marker], KpCompression::None),
        encode(&data, KpCompression::None),
    ]
    .concat();
    let infos: Vec<BatchInfo> = batches(&bytes).collect::<Result<_, _>>().unwrap();
    assert!(infos[0].control && infos[0].transactional);
    assert!(!infos[1].control);
    let seen = scan_all(&bytes, &LIMITS).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].batch, 1);
    assert_eq!(seen[0].value.as_deref(), Some(&b"forbidden"[..]));
}

#[test]
fn a_control_batch_still_has_its_crc_checked() {
    let marker = Record {
        transactional: true,
        control: true,
        ..record(0, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 5]), &[])
    };
    let mut bytes = encode(&[marker], KpCompression::None);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        scan_all(&bytes, &LIMITS),
        Err(RecordsError::Crc { batch: 0, .. })
    ));
}

#[test]
fn any_flipped_bit_after_the_crc_field_fails_the_crc() {
    for (kp, ours) in CODECS {
        let good = encode(&assorted(5), kp);
        for at in 17..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            let result = scan_all(&bad, &LIMITS);
            // A flip in the attributes may make the codec unknown: found before the CRC.
            assert!(
                matches!(
                    result,
                    Err(RecordsError::Crc {
                        batch: 0,
                        offset: 0,
                        ..
                    }) | Err(RecordsError::UnknownCompression { .. })
                ),
                "{ours:?} byte {at}: {result:?}"
            );
        }
    }
}

#[test]
fn truncation_at_every_length_is_an_error() {
    for (kp, ours) in CODECS {
        let first = encode(&assorted(6), kp);
        let two = [first.clone(), encode(&assorted(2), kp)].concat();
        // Cut at the batch boundary it is a valid single batch.
        for len in (1..two.len()).filter(|&len| len != first.len()) {
            let cut = &two[..len];
            assert!(scan_all(cut, &LIMITS).is_err(), "{ours:?} cut at {len}");
            assert!(batches(cut).any(|b| b.is_err()), "{ours:?} cut at {len}");
        }
        assert_eq!(scan_all(&[], &LIMITS), Ok(vec![]));
    }
}

#[test]
fn a_truncated_second_batch_is_located() {
    let first = encode(&assorted(2), KpCompression::None);
    let second = encode(&assorted(2), KpCompression::None);
    let bytes = [first.clone(), second[..30].to_vec()].concat();
    assert_eq!(
        scan_all(&bytes, &LIMITS),
        Err(RecordsError::Truncated {
            batch: 1,
            offset: first.len()
        })
    );
}

#[test]
fn truncated_records_inside_a_well_sealed_batch_are_an_error() {
    // The batch length and CRC are consistent, but the record data stops short: every
    // prefix of the records must be refused, never panic.
    let body = [
        length_prefixed(&record_body(b"key", b"value")),
        length_prefixed(&record_body(b"", b"v2")),
    ]
    .concat();
    for len in 0..body.len() {
        let batch = raw_batch(0, 2, &body[..len]);
        assert!(
            matches!(scan_all(&batch, &LIMITS), Err(RecordsError::Record { .. })),
            "records cut at {len}"
        );
    }
    assert_eq!(scan_all(&raw_batch(0, 2, &body), &LIMITS).unwrap().len(), 2);
}

#[test]
fn a_record_count_that_lies_is_caught() {
    let body = [
        length_prefixed(&record_body(b"a", b"1")),
        length_prefixed(&record_body(b"b", b"2")),
    ]
    .concat();
    // More declared than present.
    let err = scan_all(&raw_batch(0, 3, &body), &LIMITS).unwrap_err();
    assert_eq!(
        err,
        RecordsError::Record {
            batch: 0,
            record: 2,
            offset: body.len(),
            problem: RecordProblem::Truncated
        }
    );
    // Fewer declared than present: the rest is trailing data, as at the broker.
    let second_at = length_prefixed(&record_body(b"a", b"1")).len();
    assert_eq!(
        scan_all(&raw_batch(0, 1, &body), &LIMITS).unwrap_err(),
        RecordsError::Record {
            batch: 0,
            record: 1,
            offset: second_at,
            problem: RecordProblem::TrailingData
        }
    );
    // Negative, and above the limit (refused before decompressing).
    for count in [-1, i32::MIN, 10_001, i32::MAX] {
        assert!(
            matches!(
                scan_all(&raw_batch(0, count, &body), &LIMITS),
                Err(RecordsError::RecordCount { .. })
            ),
            "{count}"
        );
    }
    // A huge count over compressed data does not cost a huge loop or allocation.
    let zstd = raw_batch(4, 10_000, &zstd::encode_all(&body[..], 3).unwrap());
    assert!(matches!(
        scan_all(&zstd, &LIMITS),
        Err(RecordsError::Record {
            record: 2,
            problem: RecordProblem::Truncated,
            ..
        })
    ));
}

#[test]
fn the_same_limits_hold_for_a_count_lying_in_a_real_encoded_batch() {
    let mut bytes = encode(&assorted(4), KpCompression::Snappy);
    bytes[57..61].copy_from_slice(&5i32.to_be_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        scan_all(&bytes, &LIMITS),
        Err(RecordsError::Record {
            record: 4,
            problem: RecordProblem::Truncated,
            ..
        })
    ));
}

#[test]
fn overflowing_varints_in_records_are_refused() {
    let cases: [(Vec<u8>, RecordProblem); 5] = [
        // Record length: six bytes.
        (
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            RecordProblem::Varint,
        ),
        // Record length: five bytes, bits past 32.
        (vec![0xfe, 0xff, 0xff, 0xff, 0x7f], RecordProblem::Varint),
        // Record length: negative.
        (varint(-3), RecordProblem::NegativeRecordLength),
        // Timestamp delta: an eleven-byte varlong inside a record of the right length.
        (
            length_prefixed(&[vec![0], vec![0x80; 10], vec![0x00], vec![0; 5]].concat()),
            RecordProblem::Varint,
        ),
        // Key length: out-of-range five-byte varint.
        (
            length_prefixed(
                &[
                    vec![0, 0, 0],
                    vec![0xff, 0xff, 0xff, 0xff, 0x7f],
                    vec![0; 3],
                ]
                .concat(),
            ),
            RecordProblem::Varint,
        ),
    ];
    for (body, problem) in cases {
        let result = scan_all(&raw_batch(0, 1, &body), &LIMITS);
        assert!(
            matches!(result, Err(RecordsError::Record { record: 0, problem: p, .. }) if p == problem),
            "{body:02x?}: {result:?}"
        );
    }
}

#[test]
fn malformed_record_fields_are_named() {
    let header = |key: i64, value: i64| {
        [
            vec![0],
            varint(0),
            varint(0),
            varint(-1),
            varint(-1),
            varint(1),
            varint(key),
            varint(value),
        ]
        .concat()
    };
    let cases = [
        (header(-1, -1), RecordProblem::NullHeaderKey),
        (header(0, -2), RecordProblem::NegativeLength),
        (
            [vec![0], varint(0), varint(0), varint(-2)].concat(),
            RecordProblem::NegativeLength,
        ),
        (
            [
                vec![0],
                varint(0),
                varint(0),
                varint(-1),
                varint(-1),
                varint(-1),
            ]
            .concat(),
            RecordProblem::NegativeHeaderCount,
        ),
        // Fields end before the record length says.
        (
            [record_body(b"k", b"v"), vec![0]].concat(),
            RecordProblem::LengthMismatch,
        ),
        // Fields run past the record length (a header count the body has no room for).
        (
            [
                vec![0],
                varint(0),
                varint(0),
                varint(-1),
                varint(-1),
                varint(3),
            ]
            .concat(),
            RecordProblem::Truncated,
        ),
    ];
    for (body, problem) in cases {
        let result = scan_all(&raw_batch(0, 1, &length_prefixed(&body)), &LIMITS);
        assert!(
            matches!(result, Err(RecordsError::Record { problem: p, .. }) if p == problem),
            "{body:02x?}: {result:?}"
        );
    }
    // A null header value is fine.
    let body = [
        vec![0],
        varint(0),
        varint(0),
        varint(-1),
        varint(-1),
        varint(1),
        varint(1),
        b"k".to_vec(),
        varint(-1),
    ]
    .concat();
    let seen = scan_all(&raw_batch(0, 1, &length_prefixed(&body)), &LIMITS).unwrap();
    assert_eq!(seen[0].headers, vec![(b"k".to_vec(), None)]);
}

#[test]
fn record_errors_report_the_offset_in_the_record_data() {
    let first = length_prefixed(&record_body(b"a", b"b"));
    let second = [varint(4), vec![0], varint(0), varint(0), varint(-5)].concat();
    let body = [first.clone(), second].concat();
    assert_eq!(
        scan_all(&raw_batch(0, 2, &body), &LIMITS),
        Err(RecordsError::Record {
            batch: 0,
            record: 1,
            offset: first.len() + 1 + 3, // the key length, after the record length, attributes, deltas
            problem: RecordProblem::NegativeLength
        })
    );
}

#[test]
fn batch_headers_are_validated() {
    let good = encode(&assorted(2), KpCompression::None);
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    for magic in [0u8, 1] {
        assert_eq!(
            scan_all(&with(16, &[magic]), &LIMITS),
            Err(RecordsError::LegacyFormat {
                batch: 0,
                offset: 0,
                magic: magic as i8
            })
        );
    }
    assert!(matches!(
        batches(&with(16, &[3])).next(),
        Some(Err(RecordsError::UnknownMagic { magic: 3, .. }))
    ));
    for length in [-1i32, 0, 48] {
        assert_eq!(
            batches(&with(8, &length.to_be_bytes())).next(),
            Some(Err(RecordsError::BatchLength {
                batch: 0,
                offset: 8,
                length
            }))
        );
    }
    let mut codec7 = with(22, &[good[22] | 7]);
    reseal(&mut codec7);
    assert_eq!(
        scan_all(&codec7, &LIMITS),
        Err(RecordsError::UnknownCompression {
            batch: 0,
            offset: 21,
            codec: 7
        })
    );
    // The batch length claims more than there is.
    assert!(matches!(
        scan_all(&with(8, &(i32::MAX).to_be_bytes()), &LIMITS),
        Err(RecordsError::Truncated {
            batch: 0,
            offset: 0
        })
    ));
    // A legacy set after a good batch is located.
    let mixed = [good.clone(), with(16, &[1])].concat();
    assert_eq!(
        scan_all(&mixed, &LIMITS),
        Err(RecordsError::LegacyFormat {
            batch: 1,
            offset: good.len(),
            magic: 1
        })
    );
}

#[test]
fn empty_batches_and_a_zero_count_read_as_no_records() {
    assert_eq!(scan_all(&raw_batch(0, 0, &[]), &LIMITS), Ok(vec![]));
    assert!(matches!(
        scan_all(&raw_batch(0, 0, &[0]), &LIMITS),
        Err(RecordsError::Record {
            problem: RecordProblem::TrailingData,
            ..
        })
    ));
}

#[test]
fn record_view_size_counts_key_value_and_headers() {
    let records = [record(
        0,
        Some(b"abc"),
        None,
        &[("hk", Some(b"hvv")), ("n", None)],
    )];
    let seen = scan_all(&encode(&records, KpCompression::None), &LIMITS).unwrap();
    assert_eq!(seen[0].size, 3 + 2 + 3 + 1);
}

#[test]
fn uncompressed_records_are_borrowed_from_the_input() {
    let bytes = encode(&assorted(3), KpCompression::None);
    let range = bytes.as_ptr_range();
    let mut scratch = Vec::new();
    scan(&bytes, &LIMITS, &mut scratch, |_, r| {
        for part in [r.key, r.value, Some(r.encoded())].into_iter().flatten() {
            assert!(range.contains(&part.as_ptr()) || part.is_empty());
        }
        ControlFlow::<()>::Continue(())
    })
    .unwrap();
    assert!(scratch.is_empty(), "no copy for an uncompressed batch");
}

/// librdkafka sends raw snappy (no snappy-java stream header); the broker reads both.
#[test]
fn raw_snappy_as_librdkafka_frames_it() {
    let records = assorted(20);
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: KpCompression::Snappy,
        },
        Some(|plain: &mut BytesMut, out: &mut BytesMut, _| {
            out.extend_from_slice(&snap::raw::Encoder::new().compress_vec(plain)?);
            Ok(())
        }),
    )
    .unwrap();
    assert_ne!(&buf[61..69], b"\x82SNAPPY\x00");
    assert_eq!(scan_all(&buf, &LIMITS).unwrap(), expected(0, &records));
}

/// snappy-java splits its stream into 32 KiB blocks; several blocks must be joined.
#[test]
fn xerial_snappy_with_several_blocks() {
    let body: Vec<u8> = (0..300)
        .flat_map(|i| length_prefixed(&record_body(b"k", format!("{i:0>300}").as_bytes())))
        .collect();
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for block in body.chunks(32 * 1024) {
        let compressed = snap::raw::Encoder::new().compress_vec(block).unwrap();
        framed.extend((compressed.len() as u32).to_be_bytes());
        framed.extend(compressed);
    }
    assert!(body.len() > 64 * 1024);
    assert_eq!(
        scan_all(&raw_batch(2, 300, &framed), &LIMITS)
            .unwrap()
            .len(),
        300
    );
    // A block length running past the data.
    let mut bad = framed.clone();
    bad[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        scan_all(&raw_batch(2, 300, &bad), &LIMITS),
        Err(RecordsError::Decompress {
            compression: Compression::Snappy,
            ..
        })
    ));
}

/// librdkafka's lz4 frames may declare the content size; other encoders link blocks or add
/// checksums. All are the standard frame format.
#[test]
fn lz4_frames_with_optional_fields() {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    let body: Vec<u8> = (0..2000)
        .flat_map(|i| length_prefixed(&record_body(b"key", format!("value {i}").as_bytes())))
        .collect();
    let infos = [
        FrameInfo::new().content_size(Some(body.len() as u64)),
        FrameInfo::new()
            .block_mode(BlockMode::Linked)
            .block_size(BlockSize::Max64KB)
            .content_checksum(true)
            .block_checksums(true),
    ];
    for info in infos {
        let mut encoder = FrameEncoder::with_frame_info(info, Vec::new());
        encoder.write_all(&body).unwrap();
        let compressed = encoder.finish().unwrap();
        assert_eq!(
            scan_all(&raw_batch(3, 2000, &compressed), &LIMITS)
                .unwrap()
                .len(),
            2000
        );
        let mut corrupt = compressed.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(scan_all(&raw_batch(3, 2000, &corrupt), &LIMITS).is_err());
    }
}

pub(super) fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(plain).unwrap();
    encoder.finish().unwrap()
}

pub(super) fn lz4(plain: &[u8]) -> Vec<u8> {
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
    encoder.write_all(plain).unwrap();
    encoder.finish().unwrap()
}

fn assert_bomb_stops(name: &str, attributes: i16, payload: &[u8]) {
    let limits = RecordLimits {
        max_decompressed_bytes: 1 << 20,
        max_records_per_batch: 1,
    };
    let batch = raw_batch(attributes, 1, payload);
    let mut scratch = Vec::new();
    let started = Instant::now();
    let result = scan(&batch, &limits, &mut scratch, |_, _| {
        ControlFlow::<()>::Continue(())
    });
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(RecordsError::DecompressedTooLarge { max, .. }) if max == 1 << 20),
        "{name}: {result:?}"
    );
    assert!(
        scratch.len() <= (1 << 20) + 1,
        "{name}: scratch grew to {}",
        scratch.len()
    );
    // Unoptimised, a few MiB take milliseconds; the whole gigabyte would take far longer.
    assert!(elapsed.as_secs() < 5, "{name}: took {elapsed:?}");
}

const GIB: usize = 1 << 30;

#[test]
fn a_zstd_bomb_stops_at_the_cap() {
    // One frame of 1 GiB of zeros in 128 KiB RLE blocks: 32 KiB on the wire.
    let mut frame = 0xFD2F_B528u32.to_le_bytes().to_vec();
    frame.push(0x00); // no content size, not single segment, no checksum
    frame.push(7 << 3); // window 2^17
    let blocks = GIB / (128 * 1024);
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = last | (1 << 1) | ((128 * 1024) << 3);
        frame.extend(&header.to_le_bytes()[..3]);
        frame.push(0);
    }
    assert!(frame.len() < 40 * 1024);
    assert_bomb_stops("zstd", 4, &frame);
}

#[test]
fn a_gzip_bomb_stops_at_the_cap() {
    // 1 GiB of zeros as 1024 concatenated members of 1 MiB (~1 KiB each).
    let member = gzip(&vec![0; 1 << 20]);
    assert!(member.len() < 2048);
    assert_bomb_stops("gzip", 1, &member.repeat(GIB >> 20));
}

#[test]
fn an_lz4_bomb_stops_at_the_cap() {
    // One frame of 1 GiB of zeros: 256 copies of a 4 MiB block (~16 KiB each).
    let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(
        lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max4MB),
        Vec::new(),
    );
    encoder.write_all(&vec![0; 4 << 20]).unwrap();
    let encoded = encoder.finish().unwrap();
    let (header, rest) = encoded.split_at(7); // magic, FLG, BD, header checksum
    let block_len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
    assert_eq!(rest.len(), 4 + block_len + 4, "one block then the end mark");
    let block = &rest[..4 + block_len];
    let frame = [header, &block.repeat(256), &[0; 4]].concat();
    assert!(frame.len() < 8 << 20);
    assert_bomb_stops("lz4", 3, &frame);
}

/// Kafka's lz4 reader stops at the end mark of the first frame and ignores what follows;
/// so does this, so both read the same records.
#[test]
fn lz4_reads_the_first_frame_only() {
    let body = length_prefixed(&record_body(b"k", b"v"));
    let frame = lz4(&body);
    let batch = raw_batch(3, 1, &[frame.clone(), frame].concat());
    assert_eq!(scan_all(&batch, &LIMITS).unwrap().len(), 1);
}

#[test]
fn a_snappy_bomb_stops_at_the_cap() {
    // Raw: a declared length of 1 GiB is refused before anything is allocated.
    let mut raw = varint(GIB as i64 / 2); // unsigned varint of GIB (zigzag halves it)
    raw.extend([0; 8]);
    assert_bomb_stops("raw snappy", 2, &raw);
    // Framed: each 1 MiB block is within the cap alone, their sum is not.
    let block = snap::raw::Encoder::new()
        .compress_vec(&vec![0; 1 << 20])
        .unwrap();
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for _ in 0..1024 {
        framed.extend((block.len() as u32).to_be_bytes());
        framed.extend(&block);
    }
    assert_bomb_stops("snappy-java", 2, &framed);
}

#[test]
fn output_exactly_at_the_cap_is_accepted() {
    let body = length_prefixed(&record_body(b"k", &[7; 1000]));
    let limits = |max| RecordLimits {
        max_decompressed_bytes: max,
        max_records_per_batch: 1,
    };
    for (codec, payload) in [
        (1, gzip(&body)),
        (2, snap::raw::Encoder::new().compress_vec(&body).unwrap()),
        (3, lz4(&body)),
        (4, zstd::encode_all(&body[..], 1).unwrap()),
    ] {
        let batch = raw_batch(codec, 1, &payload);
        assert!(
            scan_all(&batch, &limits(body.len())).is_ok(),
            "codec {codec}"
        );
        assert!(
            matches!(
                scan_all(&batch, &limits(body.len() - 1)),
                Err(RecordsError::DecompressedTooLarge { .. })
            ),
            "codec {codec}"
        );
    }
}

#[test]
fn the_scratch_buffer_is_reused_across_batches() {
    let bytes = [
        encode(&assorted(50), KpCompression::Zstd),
        encode(&assorted(50), KpCompression::Gzip),
    ]
    .concat();
    let mut scratch = Vec::new();
    scan(&bytes, &LIMITS, &mut scratch, |_, _| {
        ControlFlow::<()>::Continue(())
    })
    .unwrap();
    let (len, capacity) = (scratch.len(), scratch.capacity());
    assert!(len > 0);
    scan(&bytes, &LIMITS, &mut scratch, |_, _| {
        ControlFlow::<()>::Continue(())
    })
    .unwrap();
    assert_eq!((scratch.len(), scratch.capacity()), (len, capacity));
}

#[test]
fn garbage_compressed_payloads_are_decompression_errors() {
    for codec in 1..=4 {
        let result = scan_all(
            &raw_batch(codec, 1, b"definitely not compressed data"),
            &LIMITS,
        );
        assert!(
            matches!(result, Err(RecordsError::Decompress { .. })),
            "codec {codec}: {result:?}"
        );
    }
}

/// Writes the fuzz seeds (a mode byte, then the records field; mode 6: reseal, break at
/// record 3): `RECORDS_SEED_DIR=fuzz/seeds/records cargo test -p interceptor
/// --lib write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files; run by hand to refresh the fuzz seeds"]
fn write_fuzz_seeds() {
    let dir = std::env::var("RECORDS_SEED_DIR").expect("RECORDS_SEED_DIR");
    std::fs::create_dir_all(&dir).unwrap();
    for (kp, ours) in CODECS {
        let bytes = [encode(&assorted(4), kp), encode(&assorted(1), kp)].concat();
        let seed = [&[6][..], &bytes].concat();
        std::fs::write(format!("{dir}/{ours:?}").to_lowercase(), seed).unwrap();
    }
    let marker = Record {
        transactional: true,
        control: true,
        ..record(0, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 5]), &[])
    };
    let control = [vec![6], encode(&[marker], KpCompression::None)].concat();
    std::fs::write(format!("{dir}/control"), control).unwrap();
}

/// A zstd frame holding `plain` in one raw block, declaring a window of 2^`window_log`.
fn zstd_raw_frame(plain: &[u8], window_log: u8) -> Vec<u8> {
    let mut frame = 0xFD2F_B528u32.to_le_bytes().to_vec();
    frame.push(0x00); // no content size, not single segment, no checksum
    frame.push((window_log - 10) << 3);
    let header = 1 | ((plain.len() as u32) << 3); // last block, raw
    frame.extend(&header.to_le_bytes()[..3]);
    frame.extend(plain);
    frame
}

#[test]
fn zstd_windows_beyond_the_bound_are_refused_before_allocating() {
    let body = length_prefixed(&record_body(b"k", b"v"));
    // 8 MiB is always allowed (ordinary compression levels use it), 16 MiB not with a 1 MiB cap.
    let ok = raw_batch(4, 1, &zstd_raw_frame(&body, 23));
    assert_eq!(scan_all(&ok, &LIMITS).unwrap().len(), 1);
    let big = raw_batch(4, 1, &zstd_raw_frame(&body, 24));
    assert!(matches!(
        scan_all(&big, &LIMITS),
        Err(RecordsError::Decompress {
            compression: Compression::Zstd,
            ..
        })
    ));
    // A larger cap allows a larger window, up to zstd's own streaming default of 2^27.
    let roomy = RecordLimits {
        max_decompressed_bytes: 16 << 20,
        ..LIMITS
    };
    assert_eq!(scan_all(&big, &roomy).unwrap().len(), 1);
    let huge = raw_batch(4, 1, &zstd_raw_frame(&body, 28));
    let unlimited = RecordLimits {
        max_decompressed_bytes: usize::MAX,
        ..LIMITS
    };
    assert!(scan_all(&huge, &unlimited).is_err());
}
