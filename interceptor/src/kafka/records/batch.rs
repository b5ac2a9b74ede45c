//! The fixed 61-byte header of a magic v2 record batch (KIP-98) and the walk over the batches
//! of a partition's records field.

use super::{Compression, RecordsError};

/// baseOffset (8) + batchLength (4): what precedes the part `batchLength` counts.
const LOG_OVERHEAD: usize = 12;
/// The whole header, up to and including the records count.
pub(super) const HEADER_BYTES: usize = 61;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const ATTRIBUTES_OFFSET: usize = 21;

const COMPRESSION_MASK: i16 = 0x07;
const TRANSACTIONAL_FLAG: i16 = 1 << 4;
const CONTROL_FLAG: i16 = 1 << 5;

/// The header of one record batch. Plain data, so a writer can re-encode a batch from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Index of the batch in the records field, from 0.
    pub index: usize,
    /// Byte offset of the batch in the records field.
    pub position: usize,
    /// Bytes the batch takes on the wire, its 12-byte offset and length prefix included.
    pub batch_bytes: usize,
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    /// The raw attributes; the fields below decode the bits that matter here.
    pub attributes: i16,
    pub compression: Compression,
    pub transactional: bool,
    /// A control batch (transaction markers): not data. See [`scan`](super::scan).
    pub control: bool,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// As declared by the header; [`scan`](super::scan) checks it against the records.
    pub record_count: i32,
}

/// One batch as found in the records field: its header, the CRC as stored, and its bytes.
pub(super) struct RawBatch<'a> {
    pub(super) info: BatchInfo,
    pub(super) stored_crc: u32,
    /// The whole batch, from baseOffset to its last byte.
    pub(super) bytes: &'a [u8],
}

impl<'a> RawBatch<'a> {
    pub(super) fn computed_crc(&self) -> u32 {
        crc32c::crc32c(self.bytes.get(ATTRIBUTES_OFFSET..).unwrap_or_default())
    }

    /// The records, compressed or not: everything after the header.
    pub(super) fn records_data(&self) -> &'a [u8] {
        self.bytes.get(HEADER_BYTES..).unwrap_or_default()
    }
}

/// Walks the batches of a records field, in order; stops after the first error.
pub(super) struct RawBatches<'a> {
    records: &'a [u8],
    pos: usize,
    index: usize,
    failed: bool,
}

impl<'a> RawBatches<'a> {
    pub(super) fn new(records: &'a [u8]) -> Self {
        Self {
            records,
            pos: 0,
            index: 0,
            failed: false,
        }
    }

    fn parse_next(&mut self) -> Result<RawBatch<'a>, RecordsError> {
        let (batch, offset) = (self.index, self.pos);
        let rest = self.records.get(offset..).unwrap_or_default();
        let truncated = RecordsError::Truncated { batch, offset };
        // Magic first: a legacy message set has its magic at the same place but a different
        // (shorter) header, so its length must not be judged by v2's rules.
        let magic = *rest.get(MAGIC_OFFSET).ok_or(truncated.clone())? as i8;
        match magic {
            2 => {}
            0 | 1 => {
                return Err(RecordsError::LegacyFormat {
                    batch,
                    offset,
                    magic,
                })
            }
            _ => {
                return Err(RecordsError::UnknownMagic {
                    batch,
                    offset: offset + MAGIC_OFFSET,
                    magic,
                })
            }
        }
        let length = i32_at(rest, 8).ok_or(truncated.clone())?;
        let body = usize::try_from(length)
            .ok()
            .filter(|&body| body >= HEADER_BYTES - LOG_OVERHEAD)
            .ok_or(RecordsError::BatchLength {
                batch,
                offset: offset + 8,
                length,
            })?;
        let bytes = rest.get(..LOG_OVERHEAD + body).ok_or(truncated)?;
        let header = |at: usize| offset + at;
        // The length check above guarantees the whole header is in `bytes`.
        let attributes = i16::from_be_bytes(array_at(bytes, ATTRIBUTES_OFFSET));
        let codec = (attributes & COMPRESSION_MASK) as u8;
        let compression =
            Compression::from_codec(codec).ok_or(RecordsError::UnknownCompression {
                batch,
                offset: header(ATTRIBUTES_OFFSET),
                codec,
            })?;
        let info = BatchInfo {
            index: batch,
            position: offset,
            batch_bytes: bytes.len(),
            base_offset: i64::from_be_bytes(array_at(bytes, 0)),
            partition_leader_epoch: i32::from_be_bytes(array_at(bytes, 12)),
            attributes,
            compression,
            transactional: attributes & TRANSACTIONAL_FLAG != 0,
            control: attributes & CONTROL_FLAG != 0,
            last_offset_delta: i32::from_be_bytes(array_at(bytes, 23)),
            base_timestamp: i64::from_be_bytes(array_at(bytes, 27)),
            max_timestamp: i64::from_be_bytes(array_at(bytes, 35)),
            producer_id: i64::from_be_bytes(array_at(bytes, 43)),
            producer_epoch: i16::from_be_bytes(array_at(bytes, 51)),
            base_sequence: i32::from_be_bytes(array_at(bytes, 53)),
            record_count: i32::from_be_bytes(array_at(bytes, 57)),
        };
        Ok(RawBatch {
            info,
            stored_crc: u32::from_be_bytes(array_at(bytes, CRC_OFFSET)),
            bytes,
        })
    }
}

impl<'a> Iterator for RawBatches<'a> {
    type Item = Result<RawBatch<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.records.len() {
            return None;
        }
        let result = self.parse_next();
        match &result {
            Ok(batch) => {
                self.pos += batch.bytes.len();
                self.index += 1;
            }
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

fn i32_at(bytes: &[u8], at: usize) -> Option<i32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(field.try_into().ok()?))
}

/// `N` bytes at `at`, zeros if out of range: callers only read inside a length-checked header.
fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..at + N)
        .and_then(|field| field.try_into().ok())
        .unwrap_or([0; N])
}
