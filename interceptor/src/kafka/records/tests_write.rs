//! `rewrite`: what changes and what must not, in every codec and framing; read back by `scan`
//! and by the `kafka-protocol` crate's decoder.

use std::{convert::Infallible, io::Write as _};

use bytes::Bytes;
use kafka_protocol::records::{Compression as KpCompression, Record, RecordBatchDecoder};
use proptest::prelude::*;

use super::record::RecordReader;
use super::tests::{
    assorted, encode, gzip, length_prefixed, lz4, raw_batch, record, record_body, reseal, scan_all,
    varint, Seen, CODECS, LIMITS,
};
use super::*;

const OPTS: RewriteOptions = RewriteOptions {
    limits: LIMITS,
    max_output_bytes: 64 << 20,
    legacy: LegacyFormat::Refuse,
    trailing_partial: TrailingPartial::Error,
};

type Edit = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<Option<Vec<u8>>>);

/// The masking used throughout: every `every`th record (counted over the whole field) gets a
/// value derived from its old one (null when it had none), a null key, and a new first header
/// value.
fn masked(index: usize, every: usize, seen: &Seen) -> Option<Edit> {
    if index % every != 0 {
        return None;
    }
    let value = seen
        .value
        .as_ref()
        .map(|v| format!("masked:{}", v.len()).into_bytes());
    let headers = seen
        .headers
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            if i == 0 {
                Some(b"h0".to_vec())
            } else {
                v.clone()
            }
        })
        .collect();
    Some((None, value, headers))
}

fn apply(seen: &Seen, edit: &Edit) -> Seen {
    let (key, value, header_values) = edit.clone();
    let headers: Vec<_> = seen
        .headers
        .iter()
        .zip(header_values)
        .map(|((k, _), v)| (k.clone(), v))
        .collect();
    let size = value.as_ref().map_or(0, Vec::len)
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
    Seen {
        key,
        value,
        headers,
        size,
        ..seen.clone()
    }
}

fn owned(r: &RecordView<'_>) -> Seen {
    Seen {
        batch: 0,
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.map(<[u8]>::to_vec),
        headers: r
            .headers()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect(),
        offset_delta: r.offset_delta,
        size: r.size(),
    }
}

/// Rewrites with [`masked`], returning the outcome.
fn mask(
    records: &[u8],
    every: usize,
    opts: &RewriteOptions,
) -> Result<Rewrite, RewriteError<Infallible>> {
    let mut index = 0;
    rewrite(
        records,
        opts,
        &mut RewriteScratch::default(),
        |_, r, edit| {
            if let Some((key, value, headers)) = masked(index, every, &owned(r)) {
                edit.set_key(key.as_deref());
                edit.set_value(value.as_deref());
                for (i, v) in headers.iter().enumerate() {
                    edit.set_header_value(i, v.as_deref());
                }
            }
            index += 1;
            Ok(())
        },
    )
}

fn keep(records: &[u8], opts: &RewriteOptions) -> Result<Rewrite, RewriteError<Infallible>> {
    rewrite(records, opts, &mut RewriteScratch::default(), |_, _, _| {
        Ok(())
    })
}

fn identity(r: &RecordView<'_>, edit: &mut RecordEdit) {
    edit.set_key(r.key);
    edit.set_value(r.value);
    for (i, (_, v)) in r.headers().enumerate() {
        edit.set_header_value(i, v);
    }
}

fn changed(rewrite: Rewrite) -> Vec<u8> {
    match rewrite.records {
        Rewritten::Changed(out) => out,
        other => panic!("expected a change, got {other:?}"),
    }
}

/// Batch headers without the two fields a rewrite may change (and its place).
fn headers_of(records: &[u8]) -> Vec<BatchInfo> {
    batches(records)
        .map(|b| BatchInfo {
            position: 0,
            batch_bytes: 0,
            ..b.unwrap()
        })
        .collect()
}

fn batch_bytes(records: &[u8]) -> Vec<&[u8]> {
    batches(records)
        .map(|b| {
            let b = b.unwrap();
            &records[b.position..b.position + b.batch_bytes]
        })
        .collect()
}

/// Records as the `kafka-protocol` crate decodes them, as (key, value, headers).
fn kp_decoded(records: &[u8]) -> Vec<(Option<Bytes>, Option<Bytes>, Vec<OwnedKpHeader>)> {
    let mut buf = Bytes::copy_from_slice(records);
    RecordBatchDecoder::decode_all(&mut buf)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| {
            let headers = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(|v| v.to_vec())))
                .collect();
            (r.key, r.value, headers)
        })
        .collect()
}

type OwnedKpHeader = (Vec<u8>, Option<Vec<u8>>);

/// Checks a masked output against the input: records changed as [`masked`] says, every batch
/// header the same but for length and CRC, batches without a change byte for byte, and the
/// `kafka-protocol` decoder reading the same records.
fn check_masked(input: &[u8], output: &[u8], every: usize) {
    let before = scan_all(input, &LIMITS).unwrap();
    let want: Vec<Seen> = before
        .iter()
        .enumerate()
        .map(|(i, s)| masked(i, every, s).map_or_else(|| s.clone(), |e| apply(s, &e)))
        .collect();
    let after = scan_all(output, &LIMITS).unwrap();
    assert_eq!(after, want);
    assert_eq!(headers_of(input), headers_of(output));
    let (old, new) = (batch_bytes(input), batch_bytes(output));
    for (i, (old, new)) in old.iter().zip(&new).enumerate() {
        let same = before
            .iter()
            .zip(&want)
            .all(|(b, w)| b.batch != i || b == w);
        if same {
            assert_eq!(old, new, "batch {i} has no change and must be copied");
        }
    }
    let decoded = kp_decoded(output);
    assert_eq!(decoded.len(), want.len());
    for (kp, seen) in decoded.iter().zip(&want) {
        assert_eq!(kp.0.as_deref(), seen.key.as_deref());
        assert_eq!(kp.1.as_deref(), seen.value.as_deref());
    }
}

fn kp_codec(i: usize) -> KpCompression {
    CODECS[i % CODECS.len()].0
}

prop_compose! {
    fn arb_record()(
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
        value in proptest::option::of(proptest::collection::vec(0u8..4, 0..300)),
        headers in proptest::collection::vec(
            ("[a-d]{0,3}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6))),
            0..4,
        ),
    ) -> (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>) {
        (key, value, headers)
    }
}

fn build(batches: &[(usize, Vec<ArbRecord>)]) -> Vec<u8> {
    let mut offset = 0;
    batches
        .iter()
        .flat_map(|(codec, records)| {
            let records: Vec<Record> = records
                .iter()
                .map(|(k, v, h)| {
                    offset += 1;
                    let h: Vec<(&str, Option<&[u8]>)> =
                        h.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                    record(offset, k.as_deref(), v.as_deref(), &h)
                })
                .collect();
            encode(&records, kp_codec(*codec))
        })
        .collect()
}

type ArbRecord = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn rewrites_keep_what_is_kept_and_change_what_is_changed(
        batches in proptest::collection::vec((0..5usize, proptest::collection::vec(arb_record(), 1..12)), 1..4),
        every in 1..6usize,
    ) {
        let input = build(&batches);
        prop_assert_eq!(keep(&input, &OPTS).unwrap().records, Rewritten::Unchanged);
        let same = rewrite(&input, &OPTS, &mut RewriteScratch::default(), |_, r, edit| {
            identity(r, edit);
            Ok::<_, Infallible>(())
        })
        .unwrap();
        prop_assert_eq!(same.records, Rewritten::Unchanged);
        let result = mask(&input, every, &OPTS).unwrap();
        match &result.records {
            Rewritten::Changed(output) => check_masked(&input, output, every),
            // Every masked record already looked masked.
            Rewritten::Unchanged => prop_assert_eq!(result.stats.records_changed, 0),
            other => prop_assert!(false, "{other:?}"),
        }
    }

    /// The encoder itself, without the "no change" shortcut: an edit setting every field to what
    /// it was re-encodes each record to exactly its original bytes.
    #[test]
    fn identity_edits_encode_to_the_original_bytes(records in proptest::collection::vec(arb_record(), 1..20)) {
        let input = build(&[(0, records)]);
        let info = batches(&input).next().unwrap().unwrap();
        let data = &input[61..];
        let mut reader = RecordReader::new(data, info.record_count as usize);
        let mut edit = RecordEdit::default();
        let (mut plain, mut headers_only) = (Vec::new(), Vec::new());
        while let Some(r) = reader.next_record().unwrap() {
            edit.clear();
            identity(&r, &mut edit);
            edit.encode(&r, &mut plain).unwrap();
            edit.clear();
            edit.set_value(r.value);
            edit.encode(&r, &mut headers_only).unwrap();
        }
        prop_assert_eq!(&plain[..], data);
        prop_assert_eq!(&headers_only[..], data);
    }
}

#[test]
fn every_codec_round_trips_a_change() {
    for (kp, ours) in CODECS {
        let input = [encode(&assorted(60), kp), encode(&assorted(3), kp)].concat();
        let result = mask(&input, 2, &OPTS).unwrap();
        assert_eq!(result.stats.batches_reencoded, 2, "{ours:?}");
        assert_eq!(result.stats.records_changed, 32, "{ours:?}");
        let output = changed(result);
        assert!(batches(&output).all(|b| b.unwrap().compression == ours));
        check_masked(&input, &output, 2);
    }
}

#[test]
fn only_the_batch_with_a_change_is_reencoded() {
    for (kp, ours) in CODECS {
        let parts = [
            encode(&assorted(5), kp),
            encode(&[record(9, Some(b"k"), Some(b"secret"), &[])], kp),
            encode(&assorted(5), kp),
        ];
        let input = parts.concat();
        let result = rewrite(
            &input,
            &OPTS,
            &mut RewriteScratch::default(),
            |_, r, edit| {
                if r.value == Some(b"secret") {
                    edit.set_value(Some(b"******"));
                }
                Ok::<_, Infallible>(())
            },
        )
        .unwrap();
        assert_eq!(result.stats.batches_reencoded, 1);
        let output = changed(result);
        let out = batch_bytes(&output);
        assert_eq!(out[0], &parts[0][..], "{ours:?}");
        assert_eq!(out[2], &parts[2][..], "{ours:?}");
        if ours == Compression::None {
            // Same length value: only the value bytes and the CRC differ.
            assert_eq!(out[1].len(), parts[1].len());
            let diff: Vec<usize> = (0..out[1].len())
                .filter(|&i| out[1][i] != parts[1][i])
                .collect();
            assert!(
                diff.iter().all(|&i| (17..21).contains(&i) || i >= 61),
                "{diff:?}"
            );
        }
        let values: Vec<_> = scan_all(&output, &LIMITS).unwrap();
        assert_eq!(values[5].value.as_deref(), Some(&b"******"[..]));
    }
}

fn raw_snappy(plain: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(plain).unwrap()
}

fn xerial(plain: &[u8]) -> Vec<u8> {
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for block in plain.chunks(32 * 1024) {
        let compressed = raw_snappy(block);
        framed.extend((compressed.len() as u32).to_be_bytes());
        framed.extend(compressed);
    }
    framed
}

fn many_records(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| length_prefixed(&record_body(b"k", format!("{i:0>200}").as_bytes())))
        .collect()
}

fn set_all_values(records: &[u8], value: &'static [u8]) -> Vec<u8> {
    let result = rewrite(
        records,
        &OPTS,
        &mut RewriteScratch::default(),
        |_, _, edit| {
            edit.set_value(Some(value));
            Ok::<_, Infallible>(())
        },
    );
    changed(result.unwrap())
}

#[test]
fn snappy_keeps_the_framing_it_came_in() {
    let body = many_records(400);
    assert!(body.len() > 64 * 1024);
    let raw = raw_batch(2, 400, &raw_snappy(&body));
    let out = set_all_values(&raw, b"v");
    assert_ne!(&out[61..69], b"\x82SNAPPY\x00");
    assert!(snap::raw::Decoder::new().decompress_vec(&out[61..]).is_ok());

    let framed = raw_batch(2, 400, &xerial(&body));
    let out = set_all_values(&framed, &[b'x'; 300]);
    assert_eq!(
        &out[61..77],
        b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"
    );
    // Several 32 KiB blocks, each at most 32 KiB decompressed.
    let mut rest = &out[77..];
    let mut blocks = 0;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let block = snap::raw::Decoder::new()
            .decompress_vec(&rest[4..4 + len])
            .unwrap();
        assert!(block.len() <= 32 * 1024);
        rest = &rest[4 + len..];
        blocks += 1;
    }
    assert!(blocks > 2, "{blocks}");
    for out in [set_all_values(&raw, b"v"), out] {
        let seen = scan_all(&out, &LIMITS).unwrap();
        assert_eq!(seen.len(), 400);
        assert!(seen
            .iter()
            .all(|s| s.value.as_deref() == Some(&b"v"[..]) || s.size == 301));
        kp_decoded(&out);
    }
}

#[test]
fn gzip_keeps_the_level_class() {
    let body = many_records(50);
    let level = |level: u32| {
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    };
    for (input, xfl) in [(level(1), 4), (level(6), 0), (gzip(&body), 2)] {
        assert_eq!(input[8], xfl);
        let out = set_all_values(&raw_batch(1, 50, &input), b"new");
        assert_eq!(out[61 + 8], xfl);
        assert_eq!(scan_all(&out, &LIMITS).unwrap().len(), 50);
    }
}

#[test]
fn lz4_output_is_a_standard_frame() {
    let body = many_records(1000);
    let out = set_all_values(&raw_batch(3, 1000, &lz4(&body)), b"new value");
    let mut decoded = Vec::new();
    std::io::copy(
        &mut lz4_flex::frame::FrameDecoder::new(&out[61..]),
        &mut decoded,
    )
    .unwrap();
    assert_eq!(scan_all(&out, &LIMITS).unwrap().len(), 1000);
    // Incompressible data goes in stored blocks.
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let input = raw_batch(3, 1, &lz4(&length_prefixed(&record_body(b"k", b"v"))));
    let out = set_all_values_to(&input, &noise);
    let seen = scan_all(&out, &LIMITS).unwrap();
    assert_eq!(seen[0].value.as_deref(), Some(&noise[..]));
    kp_decoded(&out);
}

fn set_all_values_to(records: &[u8], value: &[u8]) -> Vec<u8> {
    let result = rewrite(
        records,
        &OPTS,
        &mut RewriteScratch::default(),
        |_, _, edit| {
            edit.set_value(Some(value));
            Ok::<_, Infallible>(())
        },
    );
    changed(result.unwrap())
}

#[test]
fn control_and_transactional_batches() {
    let marker = Record {
        transactional: true,
        control: true,
        producer_id: 9,
        ..record(0, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 5]), &[])
    };
    let txn: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: true,
            producer_id: 4242,
            producer_epoch: 7,
            sequence: 10 + i as i32,
            ..record(i, Some(b"k"), Some(b"v"), &[])
        })
        .collect();
    for (kp, ours) in CODECS {
        let control = encode(std::slice::from_ref(&marker), kp);
        let input = [control.clone(), encode(&txn, kp)].concat();
        let mut calls = 0;
        let result = rewrite(
            &input,
            &OPTS,
            &mut RewriteScratch::default(),
            |b, _, edit| {
                assert!(!b.control);
                calls += 1;
                edit.set_value(Some(b"masked"));
                Ok::<_, Infallible>(())
            },
        )
        .unwrap();
        assert_eq!(calls, 3, "{ours:?}");
        let output = changed(result);
        assert_eq!(&output[..control.len()], &control[..], "{ours:?}");
        assert_eq!(headers_of(&input), headers_of(&output));
        let info = batches(&output).nth(1).unwrap().unwrap();
        assert!(info.transactional);
        assert_eq!(
            (info.producer_id, info.producer_epoch, info.base_sequence),
            (4242, 7, 10)
        );
        kp_decoded(&output);
    }
}

#[test]
fn legacy_message_sets_are_refused_or_passed_whole() {
    let good = encode(&assorted(3), KpCompression::None);
    let mut legacy = good.clone();
    legacy[16] = 1;
    let input = [good.clone(), legacy].concat();
    assert_eq!(
        keep(&input, &OPTS),
        Err(RewriteError::Records(RecordsError::LegacyFormat {
            batch: 1,
            offset: good.len(),
            magic: 1
        }))
    );
    let pass = RewriteOptions {
        legacy: LegacyFormat::Pass,
        ..OPTS
    };
    let mut calls = 0;
    let result = rewrite(
        &input,
        &pass,
        &mut RewriteScratch::default(),
        |_, _, edit| {
            calls += 1;
            edit.set_value(None);
            Ok::<_, Infallible>(())
        },
    )
    .unwrap();
    assert_eq!(result.records, Rewritten::LegacyPassed);
    assert_eq!(result.records.output(&input), &input[..]);
    assert_eq!(calls, 0, "the callback never sees a field that is passed");
}

#[test]
fn a_trailing_partial_batch_is_dropped_or_refused() {
    for (kp, ours) in CODECS {
        let first = encode(&assorted(4), kp);
        let second = encode(&assorted(6), kp);
        let drop = RewriteOptions {
            trailing_partial: TrailingPartial::Drop,
            ..OPTS
        };
        for cut in [1, 16, 17, 60, 61, second.len() - 1] {
            let input = [first.clone(), second[..cut].to_vec()].concat();
            assert!(
                matches!(
                    keep(&input, &OPTS),
                    Err(RewriteError::Records(RecordsError::Truncated {
                        batch: 1,
                        ..
                    }))
                ),
                "{ours:?} {cut}"
            );
            let kept = keep(&input, &drop).unwrap();
            assert_eq!(kept.records, Rewritten::Truncated { len: first.len() });
            assert_eq!(kept.stats.dropped_partial_bytes, cut);
            assert_eq!(kept.records.output(&input), &first[..]);
            let masked = changed(mask(&input, 1, &drop).unwrap());
            check_masked(&first, &masked, 1);
        }
        // A partial first batch leaves nothing.
        let kept = keep(&second[..100], &drop).unwrap();
        assert_eq!(kept.records.output(&second[..100]), b"");
    }
}

#[test]
fn the_output_is_bounded() {
    for (kp, ours) in CODECS {
        let input = [
            encode(&assorted(20), kp),
            encode(&assorted(20), KpCompression::None),
        ]
        .concat();
        let grow = |opts: &RewriteOptions, value: &[u8]| {
            rewrite(
                &input,
                opts,
                &mut RewriteScratch::default(),
                |b, _, edit| {
                    if b.index == 0 {
                        edit.set_value(Some(value));
                    }
                    Ok::<_, Infallible>(())
                },
            )
        };
        let tight = RewriteOptions {
            max_output_bytes: input.len() + 1000,
            ..OPTS
        };
        assert!(grow(&tight, b"short").is_ok(), "{ours:?}");
        let big = vec![b'x'; 10_000];
        let result = grow(&tight, &big);
        let expected_error = if ours == Compression::None {
            "OutputTooLarge"
        } else {
            "ReencodedTooLarge"
        };
        let small_cap = RewriteOptions {
            limits: RecordLimits {
                max_decompressed_bytes: 100_000,
                ..LIMITS
            },
            ..tight
        };
        let capped = grow(&small_cap, &big);
        if ours == Compression::None {
            assert!(format!("{result:?}").contains(expected_error), "{result:?}");
        } else {
            // Compressed zeros fit the output; the re-encoded records do not fit the cap.
            assert!(format!("{capped:?}").contains(expected_error), "{capped:?}");
        }
        // The unchanged batch after a grown one counts too.
        let exact = grow(&OPTS, &big).unwrap();
        let len = changed(exact).len();
        let just_under = RewriteOptions {
            max_output_bytes: len - 1,
            ..OPTS
        };
        assert!(matches!(
            grow(&just_under, &big),
            Err(RewriteError::Records(RecordsError::OutputTooLarge { .. }))
        ));
        let at = RewriteOptions {
            max_output_bytes: len,
            ..OPTS
        };
        assert!(grow(&at, &big).is_ok());
    }
}

#[test]
fn callback_errors_stop_the_rewrite() {
    let input = encode(&assorted(5), KpCompression::Lz4);
    let mut calls = 0;
    let result = rewrite(&input, &OPTS, &mut RewriteScratch::default(), |_, _, _| {
        calls += 1;
        if calls == 3 {
            Err("vault down")
        } else {
            Ok(())
        }
    });
    assert_eq!(result, Err(RewriteError::Edit("vault down")));
    assert_eq!(calls, 3);
}

#[test]
fn header_edits_change_values_and_keep_keys() {
    let records = [record(
        0,
        Some(b"k"),
        Some(b"v"),
        &[("a", Some(b"1")), ("b", None), ("c", Some(b""))],
    )];
    let input = encode(&records, KpCompression::None);
    let result = rewrite(
        &input,
        &OPTS,
        &mut RewriteScratch::default(),
        |_, _, edit| {
            edit.set_header_value(0, None);
            edit.set_header_value(1, Some(b"was null"));
            edit.set_header_value(2, Some(b"first"));
            edit.set_header_value(2, Some(b"last wins"));
            edit.set_header_value(7, Some(b"ignored"));
            Ok::<_, Infallible>(())
        },
    );
    let out = changed(result.unwrap());
    let seen = scan_all(&out, &LIMITS).unwrap();
    assert_eq!(
        seen[0].headers,
        vec![
            (b"a".to_vec(), None),
            (b"b".to_vec(), Some(b"was null".to_vec())),
            (b"c".to_vec(), Some(b"last wins".to_vec())),
        ]
    );
    assert_eq!(seen[0].key.as_deref(), Some(&b"k"[..]));
}

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let change_all = |records: &[u8]| {
        let mut scratch = RewriteScratch::default();
        for trailing_partial in [TrailingPartial::Drop, TrailingPartial::Error] {
            let opts = RewriteOptions {
                trailing_partial,
                ..OPTS
            };
            let _ = rewrite(records, &opts, &mut scratch, |_, r, edit| {
                edit.set_key(r.value);
                edit.set_value(Some(b"x"));
                edit.set_header_value(0, None);
                Ok::<_, Infallible>(())
            });
        }
    };
    for (kp, ours) in CODECS {
        let good = [encode(&assorted(6), kp), encode(&assorted(2), kp)].concat();
        for len in 0..good.len() {
            change_all(&good[..len]);
        }
        for at in 0..good.len() {
            for flip in [0x01, 0x80] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                change_all(&bad);
                // Resealed so the damage reaches the codec and the record parser.
                if at >= 21 && at < batches(&good).next().unwrap().unwrap().batch_bytes {
                    reseal(&mut bad);
                    change_all(&bad);
                }
            }
        }
        let _ = ours;
    }
    // A record count that lies, records with bad varints: errors.
    let body = length_prefixed(&record_body(b"a", b"1"));
    assert!(matches!(
        mask(&raw_batch(0, 2, &body), 1, &OPTS),
        Err(RewriteError::Records(RecordsError::Record { .. }))
    ));
    assert!(matches!(
        mask(
            &raw_batch(0, 1, &[varint(-3), vec![0; 4]].concat()),
            1,
            &OPTS
        ),
        Err(RewriteError::Records(RecordsError::Record { .. }))
    ));
    let mut crc = encode(&assorted(2), KpCompression::None);
    crc[70] ^= 1;
    assert!(matches!(
        keep(&crc, &OPTS),
        Err(RewriteError::Records(RecordsError::Crc { .. }))
    ));
}

#[test]
fn an_empty_field_and_empty_batches_are_unchanged() {
    assert_eq!(keep(&[], &OPTS).unwrap().records, Rewritten::Unchanged);
    let empty = raw_batch(0, 0, &[]);
    assert_eq!(
        mask(&empty, 1, &OPTS).unwrap().records,
        Rewritten::Unchanged
    );
}

#[test]
fn the_scratch_is_reused_across_calls() {
    let input = [
        encode(&assorted(50), KpCompression::Zstd),
        encode(&assorted(50), KpCompression::Gzip),
        encode(&assorted(50), KpCompression::Lz4),
        encode(&assorted(50), KpCompression::Snappy),
    ]
    .concat();
    let mut scratch = RewriteScratch::default();
    let run = |scratch: &mut RewriteScratch| {
        rewrite(&input, &OPTS, scratch, |_, _, edit| {
            edit.set_value(Some(b"masked"));
            Ok::<_, Infallible>(())
        })
        .unwrap()
    };
    let first = run(&mut scratch);
    let capacities = |s: &RewriteScratch| (s.decompressed.capacity(), s.plain.capacity());
    let before = capacities(&scratch);
    let second = run(&mut scratch);
    assert_eq!(first, second);
    assert_eq!(capacities(&scratch), before);
}

/// `cargo test -p interceptor --release --lib rewrite_throughput -- --ignored --nocapture`
#[test]
#[ignore = "a timing, for release builds"]
fn rewrite_throughput() {
    let records: Vec<Record> = (0..500)
        .map(|i| {
            record(
                i,
                Some(format!("user-{i}").as_bytes()),
                Some(
                    format!(
                        "{{\"id\":{i},\"email\":\"user{i}@example.com\",\"note\":\"{}\"}}",
                        "lorem ipsum ".repeat(i as usize % 20)
                    )
                    .as_bytes(),
                ),
                &[("trace", Some(b"0123456789abcdef"))],
            )
        })
        .collect();
    for (kp, ours) in CODECS {
        let batch = encode(&records, kp);
        let copies = (64 << 20) / batch.len();
        let input = batch.repeat(copies);
        let mut scratch = RewriteScratch::default();
        let opts = RewriteOptions {
            max_output_bytes: 1 << 30,
            ..OPTS
        };
        let mut masked = Vec::with_capacity(64);
        let mut run = || {
            rewrite(&input, &opts, &mut scratch, |_, r, edit| {
                masked.clear();
                masked.extend_from_slice(b"masked:");
                masked.extend_from_slice(&r.value.map_or(0, <[u8]>::len).to_be_bytes());
                edit.set_value(Some(&masked));
                Ok::<_, Infallible>(())
            })
            .unwrap()
        };
        run();
        let started = std::time::Instant::now();
        let result = run();
        let elapsed = started.elapsed();
        let plain = batches(&input).count() * (encode(&records, KpCompression::None).len() - 61);
        let rate = |bytes: usize| bytes as f64 / elapsed.as_secs_f64() / 1e6;
        println!(
            "{ours:?}: {} MiB on the wire ({} MiB of records) in {elapsed:?}: {:.0} MB/s wire, \
             {:.0} MB/s records; {} records changed in {} batches",
            input.len() >> 20,
            plain >> 20,
            rate(input.len()),
            rate(plain),
            result.stats.records_changed,
            result.stats.batches_reencoded,
        );
        let started = std::time::Instant::now();
        let kept = rewrite(&input, &opts, &mut scratch, |_, _, _| {
            Ok::<_, Infallible>(())
        })
        .unwrap();
        assert_eq!(kept.records, Rewritten::Unchanged);
        println!("{ours:?}: nothing changed: {:?}", started.elapsed());
    }
}
