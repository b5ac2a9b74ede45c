//! Iteration over, and rewriting of, the records of a partition's records field: the
//! concatenated magic v2 record batches (KIP-98) of a Produce request or a Fetch response.
//!
//! Made for the produce hot path of topics with record rules (sizes, forbidden content):
//! - uncompressed batches are read in place, zero-copy;
//! - compressed ones are decompressed into one caller-owned scratch buffer, reused across
//!   batches and calls, stopped at [`RecordLimits::max_decompressed_bytes`] while
//!   decompressing;
//! - records are handed out one at a time as borrowed [`RecordView`]s: nothing is allocated
//!   per record.
//!
//! Checked as the broker checks them, so what this reads is what the broker would store:
//! the CRC-32C (a bad one is [`RecordsError::Crc`]; the broker answers CORRUPT_MESSAGE), each
//! record's length against its fields, the declared record count against the records, no
//! data after the last record. Where Kafka is lenient (bits past 32 in a 5-byte varint, key
//! lengths below -1 read as null) this refuses instead: a value never reads one way here and
//! another at the broker. Legacy message sets (magic 0/1) are reported as
//! [`RecordsError::LegacyFormat`] for the caller to refuse or let through.
//!
//! [`rewrite`] is the writer beside the reader (masking, in Produce requests and Fetch
//! responses). It reads with the same checks and calls back for each record with a
//! [`RecordEdit`] to fill in (new key, value, header values; null allowed):
//!
//! ```text
//! pub fn rewrite<E>(records: &[u8], opts: &RewriteOptions, scratch: &mut RewriteScratch,
//!     f: impl FnMut(&BatchInfo, &RecordView<'_>, &mut RecordEdit) -> Result<(), E>,
//! ) -> Result<Rewrite, RewriteError<E>>
//! ```
//!
//! - A batch where some record changes is re-encoded: same codec and level class (and snappy
//!   framing), same header but for batchLength and the CRC, unchanged records copied as
//!   encoded. Every other batch, control batches included, is copied byte for byte; a field set
//!   to the bytes it had is no change.
//! - [`Rewritten::Unchanged`] when nothing changed (forward the original, zero-copy);
//!   [`Rewritten::Truncated`] when only a trailing partial batch was dropped
//!   ([`TrailingPartial::Drop`], for Fetch); [`Rewritten::LegacyPassed`] when a magic 0/1 set
//!   was left alone ([`LegacyFormat::Pass`]). [`Rewritten::output`] gives the bytes to forward.
//! - Bounded: [`RewriteOptions::max_output_bytes`], decompression as in [`scan`], and a
//!   compressed batch's re-encoded records within [`RecordLimits::max_decompressed_bytes`].
//!   [`RewriteScratch`] keeps the buffers and codec state between calls: nothing is allocated
//!   per record, nor per batch once warm, only the output once per changed records field.

mod batch;
mod compress;
mod compression;
mod cursor;
mod edit;
mod error;
mod record;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_write;
mod write;

use std::ops::ControlFlow;

pub use batch::BatchInfo;
pub use compression::Compression;
pub use edit::RecordEdit;
pub use error::{RecordProblem, RecordsError};
pub use record::{Headers, RecordView};
pub use write::{
    rewrite, LegacyFormat, Rewrite, RewriteError, RewriteOptions, RewriteScratch, RewriteStats,
    Rewritten, TrailingPartial,
};

use batch::{RawBatch, RawBatches};
use compression::DecompressError;
use record::RecordReader;

/// Bounds on what one batch may cost to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// The most bytes a compressed batch's records may decompress to; uncompressed batches are
    /// already bounded by the request frame. The scratch buffer grows to at most one more.
    pub max_decompressed_bytes: usize,
    /// The most records a batch may declare, checked before any decompression.
    pub max_records_per_batch: usize,
}

/// Calls `f` for every record of every data batch in `records` (a partition's records field),
/// in order; stops early when `f` breaks, returning its value.
///
/// Each batch's CRC, codec and record count are checked before its records are read; `f` may
/// have seen the first records of a batch by the time a later record proves malformed, so a
/// caller deciding on content must treat an error as a refusal, not as "nothing found".
///
/// Control batches (transaction markers) are checked (CRC, header) but their records are not
/// passed to `f`: they are not data, and the broker refuses them from clients anyway ("Clients
/// are not allowed to write control records"). [`batches`] reports them.
///
/// `scratch` holds decompressed records; pass the same buffer every time to keep the
/// allocation. It is left at most `max_decompressed_bytes + 1` long.
pub fn scan<B>(
    records: &[u8],
    limits: &RecordLimits,
    scratch: &mut Vec<u8>,
    mut f: impl FnMut(&BatchInfo, &RecordView<'_>) -> ControlFlow<B>,
) -> Result<Option<B>, RecordsError> {
    for batch in RawBatches::new(records) {
        let batch = batch?;
        check_batch(&batch, limits)?;
        if batch.info.control {
            continue;
        }
        let data = records_of(&batch, limits, scratch)?;
        let count = usize::try_from(batch.info.record_count).unwrap_or_default();
        let mut reader = RecordReader::new(data, count);
        loop {
            match reader.next_record() {
                Ok(Some(record)) => {
                    if let ControlFlow::Break(b) = f(&batch.info, &record) {
                        return Ok(Some(b));
                    }
                }
                Ok(None) => break,
                Err((problem, record, offset)) => {
                    return Err(RecordsError::Record {
                        batch: batch.info.index,
                        record,
                        offset,
                        problem,
                    })
                }
            }
        }
    }
    Ok(None)
}

/// The headers of the batches in `records`, for batch-level checks (size, control,
/// transactional). Reads headers only: no CRC check, no decompression, no record parsing (use
/// [`scan`] for those). Ends after the first error.
pub fn batches(records: &[u8]) -> impl Iterator<Item = Result<BatchInfo, RecordsError>> + '_ {
    RawBatches::new(records).map(|batch| batch.map(|b| b.info))
}

/// CRC and declared record count, before anything costly.
fn check_batch(batch: &RawBatch<'_>, limits: &RecordLimits) -> Result<(), RecordsError> {
    let info = &batch.info;
    let computed = batch.computed_crc();
    if computed != batch.stored_crc {
        return Err(RecordsError::Crc {
            batch: info.index,
            offset: info.position,
            stored: batch.stored_crc,
            computed,
        });
    }
    let count_ok =
        usize::try_from(info.record_count).is_ok_and(|count| count <= limits.max_records_per_batch);
    if !count_ok {
        return Err(RecordsError::RecordCount {
            batch: info.index,
            offset: info.position,
            count: info.record_count,
            max: limits.max_records_per_batch,
        });
    }
    Ok(())
}

/// The batch's record data: in place if uncompressed, else decompressed into `scratch`.
fn records_of<'a>(
    batch: &RawBatch<'a>,
    limits: &RecordLimits,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], RecordsError> {
    let info = &batch.info;
    let data = batch.records_data();
    if info.compression == Compression::None {
        return Ok(data);
    }
    let cap = limits.max_decompressed_bytes;
    match compression::decompress(info.compression, data, cap, scratch) {
        Ok(len) => Ok(scratch.get(..len).unwrap_or_default()),
        Err(DecompressError::TooLarge) => Err(RecordsError::DecompressedTooLarge {
            batch: info.index,
            offset: info.position,
            compression: info.compression,
            max: cap,
        }),
        Err(DecompressError::Corrupt(detail)) => Err(RecordsError::Decompress {
            batch: info.index,
            offset: info.position,
            compression: info.compression,
            detail,
        }),
    }
}
