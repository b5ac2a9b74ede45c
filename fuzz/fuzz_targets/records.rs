//! Arbitrary bytes as a partition's records field through `records::scan` and
//! `records::batches`, with small limits. Before scanning, the CRC of every batch whose length
//! fits is recomputed (unless the first byte says not to), so mutations reach the codecs and
//! the record parser instead of dying at the checksum. Beyond "no panic, no out-of-bounds, no
//! huge allocation" it asserts:
//! - the scratch buffer never grows past the decompression cap (+1);
//! - a successful scan agrees with `batches`: same batches, contiguous, covering the input,
//!   and exactly the declared record count seen in every data batch, none in control batches;
//! - every record's key, value and headers lie inside its encoded bytes, and `size` adds up;
//! - a scan that breaks at record N returns at record N.
#![no_main]

use std::ops::ControlFlow;

use interceptor::kafka::records::{batches, scan, BatchInfo, RecordLimits, RecordView};
use libfuzzer_sys::fuzz_target;

const LIMITS: RecordLimits = RecordLimits {
    max_decompressed_bytes: 64 * 1024,
    max_records_per_batch: 512,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, records)) = data.split_first() else {
        return;
    };
    let mut records = records.to_vec();
    if mode & 1 == 0 {
        seal(&mut records);
    }
    check(&records, usize::from(mode >> 1));
});

/// Recomputes the CRC-32C of each batch in place, walking batches as Kafka lays them out.
fn seal(records: &mut [u8]) {
    let mut pos = 0;
    while let Some(header) = records.get(pos..pos + 61) {
        let length = i32::from_be_bytes(header[8..12].try_into().unwrap());
        let Some(end) = usize::try_from(length)
            .ok()
            .filter(|&l| l >= 49)
            .map(|l| pos + 12 + l)
            .filter(|&end| end <= records.len())
        else {
            return;
        };
        let crc = crc32c::crc32c(&records[pos + 21..end]);
        records[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

fn check(records: &[u8], break_at: usize) {
    let mut scratch = Vec::new();
    let mut seen: Vec<(usize, i32)> = Vec::new(); // (batch index, records seen)
    let result = scan(records, &LIMITS, &mut scratch, |batch, record| {
        check_record(record);
        match seen.last_mut() {
            Some((index, n)) if *index == batch.index => *n += 1,
            _ => seen.push((batch.index, 1)),
        }
        ControlFlow::<()>::Continue(())
    });
    assert!(scratch.len() <= LIMITS.max_decompressed_bytes + 1);
    let headers: Vec<_> = batches(records).collect();
    if headers.iter().any(Result::is_err) {
        assert!(result.is_err(), "scan accepted what batches refused");
    }
    if result.is_err() {
        return;
    }
    assert_eq!(result, Ok(None));
    let infos: Vec<BatchInfo> = headers.into_iter().map(Result::unwrap).collect();
    let mut pos = 0;
    for (i, info) in infos.iter().enumerate() {
        assert_eq!((info.index, info.position), (i, pos));
        pos += info.batch_bytes;
    }
    assert_eq!(pos, records.len());
    let expected: Vec<(usize, i32)> = infos
        .iter()
        .filter(|b| !b.control && b.record_count > 0)
        .map(|b| (b.index, b.record_count))
        .collect();
    assert_eq!(seen, expected);

    let total: usize = expected.iter().map(|&(_, n)| n as usize).sum();
    let mut calls = 0;
    let stopped = scan(records, &LIMITS, &mut scratch, |_, _| {
        calls += 1;
        if calls > break_at {
            ControlFlow::Break(calls)
        } else {
            ControlFlow::Continue(())
        }
    });
    let want = (break_at < total).then_some(break_at + 1);
    assert_eq!(stopped, Ok(want));
}

fn check_record(record: &RecordView<'_>) {
    let encoded = record.encoded().as_ptr_range();
    let inside = |part: &[u8]| {
        part.is_empty()
            || (encoded.start <= part.as_ptr() && part.as_ptr_range().end <= encoded.end)
    };
    let mut size = 0;
    for part in [record.key, record.value].into_iter().flatten() {
        assert!(inside(part));
        size += part.len();
    }
    let headers = record.headers();
    let declared = headers.len();
    let mut count = 0;
    for (key, value) in headers {
        assert!(inside(key));
        size += key.len();
        if let Some(value) = value {
            assert!(inside(value));
            size += value.len();
        }
        count += 1;
    }
    assert_eq!(count, declared, "validated headers must all iterate");
    assert_eq!(record.size(), size);
}
