//! One record of a magic v2 batch (KIP-98), read in place: key, value and headers borrow the
//! record data, and the headers are walked again lazily instead of being collected.

use super::{cursor::Cursor, RecordProblem};

/// A record, borrowed from the request (uncompressed batch) or from the scratch buffer
/// (compressed batch). Its fields have been validated in full before it is handed out.
#[derive(Debug, Clone)]
pub struct RecordView<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    headers: Headers<'a>,
    /// The record as encoded, without its length prefix: what a writer copies when the
    /// record is left unchanged.
    encoded: &'a [u8],
    /// Offsets into `encoded` of the key's length and of the header count: a writer copies
    /// what lies before the key, and the headers when none of them changes, as they came.
    key_at: usize,
    headers_at: usize,
}

impl<'a> RecordView<'a> {
    /// The headers, in order, as (key, value) pairs; a value may be null.
    pub fn headers(&self) -> Headers<'a> {
        self.headers.clone()
    }

    /// The record's bytes as encoded (attributes to the last header), without its length.
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }

    /// attributes, timestampDelta and offsetDelta as encoded.
    pub(super) fn prefix(&self) -> &'a [u8] {
        self.encoded.get(..self.key_at).unwrap_or_default()
    }

    /// The header count and the headers as encoded.
    pub(super) fn encoded_headers(&self) -> &'a [u8] {
        self.encoded.get(self.headers_at..).unwrap_or_default()
    }

    /// The bytes the producer chose: key + value + every header key and value. Framing
    /// (varints, attributes, deltas) is left out so the limit reads the same whatever the
    /// codec or batch layout; null counts as 0.
    pub fn size(&self) -> usize {
        let len = |b: Option<&[u8]>| b.map_or(0, <[u8]>::len);
        self.headers()
            .map(|(key, value)| key.len() + len(value))
            .fold(len(self.key) + len(self.value), usize::saturating_add)
    }
}

/// The headers of one record. Validated when the record was read, so iterating cannot fail;
/// should it meet bad bytes anyway it just ends.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    cursor_bytes: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let mut cursor = Cursor::new(self.cursor_bytes);
        let Ok(header) = read_header(&mut cursor) else {
            self.remaining = 0;
            return None;
        };
        self.cursor_bytes = self.cursor_bytes.get(cursor.pos()..).unwrap_or_default();
        self.remaining -= 1;
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Headers<'_> {}

/// Kafka refuses a null header key ("Invalid negative header key size").
fn read_header<'a>(cursor: &mut Cursor<'a>) -> Result<(&'a [u8], Option<&'a [u8]>), RecordProblem> {
    let key = cursor
        .nullable_bytes()?
        .ok_or(RecordProblem::NullHeaderKey)?;
    let value = cursor.nullable_bytes()?;
    Ok((key, value))
}

/// Reads the records of one batch's (decompressed) record data: exactly `count` records, then
/// the end of the data, as the broker does.
pub(super) struct RecordReader<'a> {
    cursor: Cursor<'a>,
    left: usize,
    index: usize,
}

/// A problem, the index of the record it is in, and the byte offset it was found at.
pub(super) type ProblemAt = (RecordProblem, usize, usize);

impl<'a> RecordReader<'a> {
    pub(super) fn new(data: &'a [u8], count: usize) -> Self {
        Self {
            cursor: Cursor::new(data),
            left: count,
            index: 0,
        }
    }

    /// The offset in the record data of the next record's length.
    pub(super) fn pos(&self) -> usize {
        self.cursor.pos()
    }

    /// The next record; `Ok(None)` once `count` records were read and nothing follows.
    pub(super) fn next_record(&mut self) -> Result<Option<RecordView<'a>>, ProblemAt> {
        if self.left == 0 {
            if !self.cursor.is_empty() {
                return Err((RecordProblem::TrailingData, self.index, self.cursor.pos()));
            }
            return Ok(None);
        }
        let start = self.cursor.pos();
        let record = read_record(&mut self.cursor)
            .map_err(|(problem, at)| (problem, self.index, start + at))?;
        self.left -= 1;
        self.index += 1;
        Ok(Some(record))
    }
}

/// One length-prefixed record; on error, the offset is relative to the record's start.
fn read_record<'a>(outer: &mut Cursor<'a>) -> Result<RecordView<'a>, (RecordProblem, usize)> {
    let start = outer.pos();
    let length = outer.varint().map_err(|p| (p, 0))?;
    let length = usize::try_from(length).map_err(|_| (RecordProblem::NegativeRecordLength, 0))?;
    let prefix = outer.pos() - start;
    let encoded = outer.bytes(length).map_err(|p| (p, prefix))?;
    let mut cursor = Cursor::new(encoded);
    read_fields(&mut cursor, encoded).map_err(|p| (p, prefix + cursor.pos()))
}

/// The fields of a record, which must fill `encoded` exactly (the broker checks the same).
fn read_fields<'a>(c: &mut Cursor<'a>, encoded: &'a [u8]) -> Result<RecordView<'a>, RecordProblem> {
    let attributes = c.u8()? as i8;
    let timestamp_delta = c.varlong()?;
    let offset_delta = c.varint()?;
    let key_at = c.pos();
    let key = c.nullable_bytes()?;
    let value = c.nullable_bytes()?;
    let headers_at = c.pos();
    let header_count =
        usize::try_from(c.varint()?).map_err(|_| RecordProblem::NegativeHeaderCount)?;
    let headers_start = c.pos();
    for _ in 0..header_count {
        read_header(c)?;
    }
    if !c.is_empty() {
        return Err(RecordProblem::LengthMismatch);
    }
    Ok(RecordView {
        key,
        value,
        attributes,
        timestamp_delta,
        offset_delta,
        headers: Headers {
            cursor_bytes: encoded.get(headers_start..).unwrap_or_default(),
            remaining: header_count,
        },
        encoded,
        key_at,
        headers_at,
    })
}
