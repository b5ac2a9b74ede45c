//! Rewriting the records of a records field (masking): only batches with a changed record are
//! re-encoded, everything else is copied as it came.

use super::{
    batch::{RawBatch, RawBatches, HEADER_BYTES},
    check_batch,
    compress::Compressors,
    edit::RecordEdit,
    record::RecordReader,
    records_of, BatchInfo, Compression, RecordLimits, RecordView, RecordsError,
};

/// baseOffset + batchLength, before what the length counts.
const LENGTH_OFFSET: usize = 8;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// What to do with a legacy message set (magic 0 or 1) anywhere in the records field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyFormat {
    /// Fail with [`RecordsError::LegacyFormat`].
    Refuse,
    /// Leave the whole records field as it is: [`Rewritten::LegacyPassed`]. The callback is not
    /// called at all.
    Pass,
}

/// What to do with a batch cut short at the end of the records field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailingPartial {
    /// Cut it off (Fetch: the broker stopped at its byte limit; the consumer fetches that
    /// offset again, as clients do with a partial batch anyway).
    Drop,
    /// Fail with [`RecordsError::Truncated`] (Produce: the request is malformed).
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteOptions {
    /// As for [`scan`](super::scan). A compressed batch's re-encoded records must fit
    /// `max_decompressed_bytes` too, so the output reads back under the same limits.
    pub limits: RecordLimits,
    /// The most bytes the rewritten records field may take.
    pub max_output_bytes: usize,
    pub legacy: LegacyFormat,
    pub trailing_partial: TrailingPartial,
}

/// The records field after [`rewrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    /// No record changed and nothing was cut: forward the original.
    Unchanged,
    /// No record changed, but a trailing partial batch was dropped: forward the original's
    /// first `len` bytes.
    Truncated { len: usize },
    /// The new records field (any trailing partial batch dropped).
    Changed(Vec<u8>),
    /// A legacy message set was found and [`LegacyFormat::Pass`] asked to leave it all alone:
    /// nothing was read or changed, not even the v2 batches.
    LegacyPassed,
}

impl Rewritten {
    /// The bytes to forward, given the records field that was rewritten.
    pub fn output<'a>(&'a self, original: &'a [u8]) -> &'a [u8] {
        match self {
            Self::Unchanged | Self::LegacyPassed => original,
            Self::Truncated { len } => original.get(..*len).unwrap_or(original),
            Self::Changed(records) => records,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteStats {
    pub batches_reencoded: usize,
    pub records_changed: usize,
    /// Bytes of the trailing partial batch dropped (0: none).
    pub dropped_partial_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub records: Rewritten,
    pub stats: RewriteStats,
}

/// A rewrite stopped: the records were bad, or the callback failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError<E> {
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("record edit failed: {0}")]
    Edit(E),
}

/// Buffers and encoder state a caller keeps between [`rewrite`] calls so the hot path does not
/// allocate. Holds at most about two batches' worth of decompressed records
/// (`max_decompressed_bytes` each, plus one record) and the codecs' state.
#[derive(Debug, Default)]
pub struct RewriteScratch {
    pub(super) decompressed: Vec<u8>,
    /// A compressed batch's re-encoded records, before compression.
    pub(super) plain: Vec<u8>,
    edit: RecordEdit,
    compressors: Compressors,
}

/// Calls `f` for every record of every data batch of `records` (a partition's records field),
/// in order, with an empty [`RecordEdit`] to fill in, and re-encodes the batches where some
/// record changed.
///
/// Checked as [`scan`](super::scan) checks. A re-encoded batch keeps its header (offsets,
/// producer id, epoch, sequence, timestamps, attributes, leader epoch, record count) and codec;
/// only its length and CRC change. Every other batch, control batches included, is copied as
/// it came. On error nothing is to be forwarded: `f` may have seen records of a batch that
/// later proved malformed.
pub fn rewrite<E>(
    records: &[u8],
    opts: &RewriteOptions,
    scratch: &mut RewriteScratch,
    mut f: impl FnMut(&BatchInfo, &RecordView<'_>, &mut RecordEdit) -> Result<(), E>,
) -> Result<Rewrite, RewriteError<E>> {
    if let Some(legacy) = first_legacy_batch(records) {
        return match opts.legacy {
            LegacyFormat::Refuse => Err(legacy.into()),
            LegacyFormat::Pass => Ok(Rewrite {
                records: Rewritten::LegacyPassed,
                stats: RewriteStats::default(),
            }),
        };
    }
    let mut out = Output::new(records, opts.max_output_bytes);
    let mut stats = RewriteStats::default();
    let mut end = records.len();
    for batch in RawBatches::new(records) {
        let batch = match batch {
            Ok(batch) => batch,
            Err(RecordsError::Truncated { offset, .. })
                if opts.trailing_partial == TrailingPartial::Drop =>
            {
                end = offset;
                stats.dropped_partial_bytes = records.len() - offset;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        check_batch(&batch, &opts.limits)?;
        if !batch.info.control {
            rewrite_batch(&batch, opts, scratch, &mut out, &mut f, &mut stats)?;
        }
        out.check_pending(&batch.info)?;
    }
    let records = if out.started {
        Rewritten::Changed(out.finish(end))
    } else if end < records.len() {
        Rewritten::Truncated { len: end }
    } else {
        Rewritten::Unchanged
    };
    Ok(Rewrite { records, stats })
}

/// Legacy sets are looked for before anything else so that passing them means the callback
/// never ran (it may have side effects, such as issuing tokens).
fn first_legacy_batch(records: &[u8]) -> Option<RecordsError> {
    RawBatches::new(records).find_map(|batch| match batch {
        Err(e @ RecordsError::LegacyFormat { .. }) => Some(e),
        _ => None,
    })
}

/// Reads one data batch, asking `f` about each record; if any changes, appends the batch
/// re-encoded to `out`. Unchanged records are copied in runs, encoded as they came.
fn rewrite_batch<E>(
    batch: &RawBatch<'_>,
    opts: &RewriteOptions,
    scratch: &mut RewriteScratch,
    out: &mut Output<'_>,
    f: &mut impl FnMut(&BatchInfo, &RecordView<'_>, &mut RecordEdit) -> Result<(), E>,
    stats: &mut RewriteStats,
) -> Result<(), RewriteError<E>> {
    let RewriteScratch {
        decompressed,
        plain,
        edit,
        compressors,
    } = scratch;
    let info = &batch.info;
    let compressed = info.compression != Compression::None;
    let data = records_of(batch, &opts.limits, decompressed)?;
    let count = usize::try_from(info.record_count).unwrap_or_default();
    let mut reader = RecordReader::new(data, count);
    let mut changed = false;
    // Record data up to here is in the output already.
    let mut copied = 0;
    for index in 0.. {
        let start = reader.pos();
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err((problem, record, offset)) => {
                return Err(RecordsError::Record {
                    batch: info.index,
                    record,
                    offset,
                    problem,
                }
                .into())
            }
        };
        edit.clear();
        f(info, &record, edit).map_err(RewriteError::Edit)?;
        if edit.is_empty() || !edit.changes(&record) {
            continue;
        }
        if !changed {
            changed = true;
            if compressed {
                plain.clear();
            } else {
                out.begin_batch(batch)?;
            }
        }
        let target = if compressed {
            &mut *plain
        } else {
            &mut out.buf
        };
        target.extend_from_slice(data.get(copied..start).unwrap_or_default());
        edit.encode(&record, target)
            .map_err(|_| RecordsError::RecordTooLarge {
                batch: info.index,
                offset: info.position,
                record: index,
            })?;
        copied = reader.pos();
        stats.records_changed += 1;
        check_size(target, compressed, opts, info)?;
    }
    if !changed {
        return Ok(());
    }
    let target = if compressed {
        &mut *plain
    } else {
        &mut out.buf
    };
    target.extend_from_slice(data.get(copied..).unwrap_or_default());
    check_size(target, compressed, opts, info)?;
    if compressed {
        out.begin_batch(batch)?;
        compressors
            .compress(info.compression, batch.records_data(), plain, &mut out.buf)
            .map_err(|detail| RecordsError::Compress {
                batch: info.index,
                offset: info.position,
                compression: info.compression,
                detail,
            })?;
    }
    out.end_batch(info)?;
    stats.batches_reencoded += 1;
    Ok(())
}

/// Checked as records are appended, so a callback inflating records stops early.
fn check_size(
    target: &[u8],
    compressed: bool,
    opts: &RewriteOptions,
    info: &BatchInfo,
) -> Result<(), RecordsError> {
    let (max, error) = if compressed {
        let max = opts.limits.max_decompressed_bytes;
        let error = RecordsError::ReencodedTooLarge {
            batch: info.index,
            offset: info.position,
            max,
        };
        (max, error)
    } else {
        let max = opts.max_output_bytes;
        (max, output_too_large(info, max))
    };
    if target.len() > max {
        return Err(error);
    }
    Ok(())
}

fn output_too_large(info: &BatchInfo, max: usize) -> RecordsError {
    RecordsError::OutputTooLarge {
        batch: info.index,
        offset: info.position,
        max,
    }
}

/// The rewritten records field, started at the first changed batch: until then the input is
/// only read.
struct Output<'r> {
    records: &'r [u8],
    buf: Vec<u8>,
    started: bool,
    /// Input up to here is accounted for in `buf`.
    flushed: usize,
    /// Where the batch being written starts in `buf`.
    batch_start: usize,
    max: usize,
}

impl<'r> Output<'r> {
    fn new(records: &'r [u8], max: usize) -> Self {
        Self {
            records,
            buf: Vec::new(),
            started: false,
            flushed: 0,
            batch_start: 0,
            max,
        }
    }

    /// Copies the input before `batch`, then `batch`'s header.
    fn begin_batch(&mut self, batch: &RawBatch<'_>) -> Result<(), RecordsError> {
        let info = &batch.info;
        if !self.started {
            self.started = true;
            self.buf.reserve(self.records.len().min(self.max));
        }
        let before = self
            .records
            .get(self.flushed..info.position)
            .unwrap_or_default();
        let header = batch.bytes.get(..HEADER_BYTES).unwrap_or_default();
        if self.buf.len() + before.len() + header.len() > self.max {
            return Err(output_too_large(info, self.max));
        }
        self.buf.extend_from_slice(before);
        self.batch_start = self.buf.len();
        self.buf.extend_from_slice(header);
        Ok(())
    }

    /// Seals the batch begun last: its new length and CRC.
    fn end_batch(&mut self, info: &BatchInfo) -> Result<(), RecordsError> {
        if self.buf.len() > self.max {
            return Err(output_too_large(info, self.max));
        }
        let batch = self.buf.get_mut(self.batch_start..).unwrap_or_default();
        let length = batch
            .len()
            .checked_sub(LENGTH_OFFSET + 4)
            .and_then(|length| i32::try_from(length).ok())
            .ok_or(RecordsError::BatchTooLarge {
                batch: info.index,
                offset: info.position,
            })?;
        put(batch, LENGTH_OFFSET, length.to_be_bytes());
        let crc = crc32c::crc32c(batch.get(ATTRIBUTES_OFFSET..).unwrap_or_default());
        put(batch, CRC_OFFSET, crc.to_be_bytes());
        self.flushed = info.position + info.batch_bytes;
        Ok(())
    }

    /// Whether the output would still fit with the input up to the end of `info`'s batch
    /// copied after it: checked batch by batch so the error names the batch.
    fn check_pending(&self, info: &BatchInfo) -> Result<(), RecordsError> {
        let pending = (info.position + info.batch_bytes).saturating_sub(self.flushed);
        if self.started && self.buf.len() + pending > self.max {
            return Err(output_too_large(info, self.max));
        }
        Ok(())
    }

    /// The output with the input up to `end` that follows the last rewritten batch (its size
    /// checked by [`Self::check_pending`]).
    fn finish(mut self, end: usize) -> Vec<u8> {
        let rest = self.records.get(self.flushed..end).unwrap_or_default();
        self.buf.extend_from_slice(rest);
        self.buf
    }
}

fn put<const N: usize>(bytes: &mut [u8], at: usize, value: [u8; N]) {
    if let Some(field) = bytes.get_mut(at..at + N) {
        field.copy_from_slice(&value);
    }
}
