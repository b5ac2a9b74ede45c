//! Arbitrary bytes as a Produce request, a Fetch response or a ShareFetch response body, at
//! arbitrary versions, through the records locators, and every frame they accept through
//! `replace_records`. The length prefix is fixed before locating (a wrong one is refused at
//! once) so mutations reach the bodies. Beyond "no panic, no out-of-bounds, no huge
//! allocation" it asserts:
//! - every located field lies inside the frame, in frame order, without overlaps, and its
//!   records end where the field ends (empty for null);
//! - replacing every field with its own records gives back the frame bit for bit;
//! - a rewrite (new records, some null, some left alone) is a well-formed frame that locates
//!   again to the same partitions with the new records.
#![no_main]

use bytes::{BufMut, BytesMut};
use interceptor::kafka::{
    header::request_header_version,
    transform::{
        fetch_is_flexible, fetch_records, produce_is_flexible, produce_records, replace_records,
        share_fetch_is_flexible, share_fetch_records, RecordsField, TransformError,
    },
    RequestHeader,
};
use libfuzzer_sys::fuzz_target;

fn frame_len_ok(frame: &[u8]) -> bool {
    frame.len() >= 4
        && i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize == frame.len() - 4
}

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<3>() else {
        return;
    };
    let version = i16::from(head[1] % 20);
    let seed = head[2];
    match head[0] % 3 {
        0 => {
            let mut f = BytesMut::new();
            f.put_i32(0);
            f.put_i16(0);
            f.put_i16(version);
            f.put_i32(7);
            f.put_i16(1);
            f.put_u8(b'f');
            if request_header_version(0, version) >= 2 {
                f.put_u8(0);
            }
            f.extend_from_slice(body);
            let frame = fix_prefix(f.to_vec());
            let Ok(header) = RequestHeader::parse(&frame.clone().into()) else {
                return;
            };
            let locate = |frame: &[u8]| {
                let header = RequestHeader::parse(&bytes::Bytes::copy_from_slice(frame))
                    .expect("a rewrite keeps the header");
                produce_records(frame, &header).map(owned)
            };
            if let Ok(found) = produce_records(&frame, &header) {
                check(
                    &frame,
                    produce_is_flexible(version),
                    &owned(found),
                    seed,
                    locate,
                );
            }
        }
        1 => {
            let frame = response(body);
            let locate = |frame: &[u8]| fetch_records(frame, version).map(owned);
            if let Ok(found) = locate(&frame) {
                check(&frame, fetch_is_flexible(version), &found, seed, locate);
            }
        }
        _ => {
            let frame = response(body);
            let locate = |frame: &[u8]| share_fetch_records(frame, version).map(owned);
            if let Ok(found) = locate(&frame) {
                check(
                    &frame,
                    share_fetch_is_flexible(version),
                    &found,
                    seed,
                    locate,
                );
            }
        }
    }
});

/// The body after a length prefix (a response header's correlation id is in `body`).
fn response(body: &[u8]) -> Vec<u8> {
    let mut f = vec![0; 4];
    f.extend_from_slice(body);
    fix_prefix(f)
}

fn fix_prefix(mut frame: Vec<u8>) -> Vec<u8> {
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// A located field without its borrow of the frame, so a rewritten frame can be located too.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    topic: String,
    partition: i32,
    records: std::ops::Range<usize>,
    null: bool,
    field: std::ops::Range<usize>,
}

fn owned(found: Vec<RecordsField<'_>>) -> Vec<(Owned, RecordsField<'static>)> {
    found
        .into_iter()
        .map(|f| {
            let o = Owned {
                topic: format!("{:?}", f.topic),
                partition: f.partition,
                records: f.records.clone(),
                null: f.null,
                field: f.field.clone(),
            };
            // The topic is only compared through `Owned`; the field handed back to
            // `replace_records` needs no borrow.
            let field = RecordsField {
                topic: interceptor::kafka::transform::TopicRef::Id([0; 16]),
                partition: f.partition,
                records: f.records,
                null: f.null,
                field: f.field,
            };
            (o, field)
        })
        .collect()
}

fn check(
    frame: &[u8],
    flexible: bool,
    found: &[(Owned, RecordsField<'static>)],
    seed: u8,
    locate: impl Fn(&[u8]) -> Result<Vec<(Owned, RecordsField<'static>)>, TransformError>,
) {
    let mut end = 4;
    for (o, _) in found {
        assert!(o.field.start >= end, "fields in order, not overlapping");
        assert!(o.field.start < o.field.end && o.field.end <= frame.len());
        assert!(o.records.start >= o.field.start && o.records.end == o.field.end);
        assert!(!o.null || o.records.is_empty());
        end = o.field.end;
    }

    let same: Vec<_> = found
        .iter()
        .map(|(o, f)| (f.clone(), (!o.null).then(|| &frame[o.records.clone()])))
        .collect();
    assert_eq!(
        replace_records(frame, flexible, &same).expect("own fields"),
        frame
    );

    // Per field, from the seed: left alone, null, or new records of a length crossing varint
    // widths.
    let new_records = |i: usize| -> Option<Option<Vec<u8>>> {
        match (usize::from(seed) + i) % 4 {
            0 => None,
            1 => Some(None),
            n => Some(Some(vec![seed; (n * 97 + i) % 300])),
        }
    };
    let changes: Vec<_> = found
        .iter()
        .enumerate()
        .filter_map(|(i, (_, f))| new_records(i).map(|r| (f.clone(), r)))
        .collect();
    let out = replace_records(frame, flexible, &changes).expect("own fields");
    assert!(frame_len_ok(&out), "rewritten framing");
    let again = locate(&out).expect("a rewrite locates again");
    assert_eq!(again.len(), found.len());
    for (i, ((before, _), (after, _))) in found.iter().zip(&again).enumerate() {
        assert_eq!(
            (&before.topic, before.partition),
            (&after.topic, after.partition)
        );
        let want = new_records(i)
            .unwrap_or_else(|| (!before.null).then(|| frame[before.records.clone()].to_vec()));
        assert_eq!(after.null, want.is_none());
        assert_eq!(
            &out[after.records.clone()],
            want.as_deref().unwrap_or_default()
        );
    }
}
