//! What is wrong with a partition's records, and where.

use super::Compression;

/// Why a partition's records field was not read to the end. Every variant names the batch (its
/// index in the records field, from 0) and a byte offset: for batch-level problems the offset
/// into the records field, for record-level ones the offset into the batch's record data (after
/// decompression for a compressed batch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("record batch {batch} at byte {offset}: truncated")]
    Truncated { batch: usize, offset: usize },
    #[error(
        "record batch {batch} at byte {offset}: batch length {length} is below the header size"
    )]
    BatchLength {
        batch: usize,
        offset: usize,
        length: i32,
    },
    /// A magic 0 or 1 message set (pre-KIP-98): the caller decides whether to refuse it.
    #[error("record batch {batch} at byte {offset}: legacy message set (magic {magic})")]
    LegacyFormat {
        batch: usize,
        offset: usize,
        magic: i8,
    },
    #[error("record batch {batch} at byte {offset}: unknown magic {magic}")]
    UnknownMagic {
        batch: usize,
        offset: usize,
        magic: i8,
    },
    /// The broker answers CORRUPT_MESSAGE to the same batch.
    #[error("record batch {batch} at byte {offset}: CRC {stored:#010x} stored, {computed:#010x} computed")]
    Crc {
        batch: usize,
        offset: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record batch {batch} at byte {offset}: unknown compression codec {codec}")]
    UnknownCompression {
        batch: usize,
        offset: usize,
        codec: u8,
    },
    /// Negative, or above [`RecordLimits::max_records_per_batch`](super::RecordLimits).
    #[error(
        "record batch {batch} at byte {offset}: record count {count} not allowed (limit {max})"
    )]
    RecordCount {
        batch: usize,
        offset: usize,
        count: i32,
        max: usize,
    },
    /// Decompression stopped at [`RecordLimits::max_decompressed_bytes`](super::RecordLimits).
    #[error("record batch {batch} at byte {offset}: {compression:?} records exceed {max} bytes decompressed")]
    DecompressedTooLarge {
        batch: usize,
        offset: usize,
        compression: Compression,
        max: usize,
    },
    #[error(
        "record batch {batch} at byte {offset}: {compression:?} decompression failed: {detail}"
    )]
    Decompress {
        batch: usize,
        offset: usize,
        compression: Compression,
        detail: String,
    },
    /// `offset` is into the batch's record data (decompressed if the batch is compressed).
    #[error(
        "record batch {batch}, record {record}, at byte {offset} of the record data: {problem}"
    )]
    Record {
        batch: usize,
        record: usize,
        offset: usize,
        problem: RecordProblem,
    },
    /// The rewritten records field would exceed
    /// [`RewriteOptions::max_output_bytes`](super::RewriteOptions).
    #[error("record batch {batch} at byte {offset}: rewritten records exceed {max} bytes")]
    OutputTooLarge {
        batch: usize,
        offset: usize,
        max: usize,
    },
    /// A compressed batch's re-encoded records would exceed
    /// [`RecordLimits::max_decompressed_bytes`](super::RecordLimits).
    #[error("record batch {batch} at byte {offset}: re-encoded records exceed {max} bytes")]
    ReencodedTooLarge {
        batch: usize,
        offset: usize,
        max: usize,
    },
    /// A rewritten record's length or a field's does not fit Kafka's i32.
    #[error("record batch {batch} at byte {offset}, record {record}: rewritten record too large")]
    RecordTooLarge {
        batch: usize,
        offset: usize,
        record: usize,
    },
    /// The rewritten batch's length does not fit Kafka's i32.
    #[error("record batch {batch} at byte {offset}: rewritten batch too large")]
    BatchTooLarge { batch: usize, offset: usize },
    #[error("record batch {batch} at byte {offset}: {compression:?} compression failed: {detail}")]
    Compress {
        batch: usize,
        offset: usize,
        compression: Compression,
        detail: String,
    },
}

/// What is wrong inside one record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    /// The record data ends before the record (or before the declared record count).
    #[error("truncated")]
    Truncated,
    #[error("varint too long or out of range")]
    Varint,
    #[error("negative record length")]
    NegativeRecordLength,
    #[error("length below -1")]
    NegativeLength,
    #[error("negative header count")]
    NegativeHeaderCount,
    #[error("null header key")]
    NullHeaderKey,
    /// The fields do not end where the record's length prefix says (the broker rejects it too).
    #[error("record fields do not fill the record length")]
    LengthMismatch,
    /// Bytes after the last declared record (the broker rejects it too).
    #[error("data after the last declared record")]
    TrailingData,
}
