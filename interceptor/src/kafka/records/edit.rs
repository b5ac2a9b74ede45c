//! What a rewrite callback asks to change in one record, and the record re-encoded with it.

use super::RecordView;

/// The changes to one record, filled in by the callback of [`rewrite`](super::rewrite); left
/// empty, the record is kept. Replacement bytes are copied into a buffer the scratch keeps, so
/// editing allocates nothing once the buffers have grown.
///
/// A field set to the bytes it already has is no change: a batch whose records all come out
/// the same is forwarded byte for byte.
#[derive(Debug, Default)]
pub struct RecordEdit {
    key: Slot,
    value: Slot,
    /// (header index, new value); for an index set twice the last one counts.
    headers: Vec<(usize, Slot)>,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Slot {
    #[default]
    Keep,
    Null,
    /// A range of `RecordEdit::bytes`.
    Bytes {
        start: usize,
        end: usize,
    },
}

/// A field of the re-encoded record does not fit Kafka's i32 lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLarge;

impl RecordEdit {
    /// The new key; `None` makes it null.
    pub fn set_key(&mut self, key: Option<&[u8]>) {
        self.key = self.store(key);
    }

    /// The new value; `None` makes it null.
    pub fn set_value(&mut self, value: Option<&[u8]>) {
        self.value = self.store(value);
    }

    /// The new value of the record's `index`th header (in [`RecordView::headers`] order); its
    /// key stays. An index past the record's headers is ignored.
    pub fn set_header_value(&mut self, index: usize, value: Option<&[u8]>) {
        let slot = self.store(value);
        self.headers.push((index, slot));
    }

    /// Nothing was set.
    pub fn is_empty(&self) -> bool {
        self.key == Slot::Keep && self.value == Slot::Keep && self.headers.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.key = Slot::Keep;
        self.value = Slot::Keep;
        self.headers.clear();
        self.bytes.clear();
    }

    fn store(&mut self, bytes: Option<&[u8]>) -> Slot {
        match bytes {
            None => Slot::Null,
            Some(bytes) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(bytes);
                Slot::Bytes {
                    start,
                    end: self.bytes.len(),
                }
            }
        }
    }

    fn resolve<'a>(&'a self, slot: Slot, original: Option<&'a [u8]>) -> Option<&'a [u8]> {
        match slot {
            Slot::Keep => original,
            Slot::Null => None,
            // A range this edit stored, so always in bounds.
            Slot::Bytes { start, end } => Some(self.bytes.get(start..end).unwrap_or_default()),
        }
    }

    fn header_value<'a>(&'a self, index: usize, original: Option<&'a [u8]>) -> Option<&'a [u8]> {
        let slot = self
            .headers
            .iter()
            .rev()
            .find(|(at, _)| *at == index)
            .map_or(Slot::Keep, |(_, slot)| *slot);
        self.resolve(slot, original)
    }

    /// Whether applying this edit gives `record` different content.
    pub(super) fn changes(&self, record: &RecordView<'_>) -> bool {
        self.resolve(self.key, record.key) != record.key
            || self.resolve(self.value, record.value) != record.value
            || (!self.headers.is_empty()
                && record
                    .headers()
                    .enumerate()
                    .any(|(i, (_, value))| self.header_value(i, value) != value))
    }

    /// Appends `record` with this edit applied, length prefix first. Attributes and deltas are
    /// copied as they were encoded; so are the headers when none of them is edited.
    pub(super) fn encode(
        &self,
        record: &RecordView<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), TooLarge> {
        let key = self.resolve(self.key, record.key);
        let value = self.resolve(self.value, record.value);
        let prefix = record.prefix();
        let headers_len = if self.headers.is_empty() {
            record.encoded_headers().len()
        } else {
            self.headers_len(record)?
        };
        let body = [nullable_len(key)?, nullable_len(value)?, headers_len]
            .into_iter()
            .try_fold(prefix.len(), usize::checked_add)
            .ok_or(TooLarge)?;
        let body = i32::try_from(body).map_err(|_| TooLarge)?;
        out.reserve(5 + body as usize);
        put_varint(out, body);
        out.extend_from_slice(prefix);
        put_nullable(out, key);
        put_nullable(out, value);
        if self.headers.is_empty() {
            out.extend_from_slice(record.encoded_headers());
        } else {
            let headers = record.headers();
            put_varint(out, headers.len() as i32);
            for (i, (key, value)) in headers.enumerate() {
                put_nullable(out, Some(key));
                put_nullable(out, self.header_value(i, value));
            }
        }
        Ok(())
    }

    fn headers_len(&self, record: &RecordView<'_>) -> Result<usize, TooLarge> {
        let headers = record.headers();
        let count = i32::try_from(headers.len()).map_err(|_| TooLarge)?;
        headers
            .enumerate()
            .try_fold(varint_len(count), |sum, (i, (key, value))| {
                let header = nullable_len(Some(key))?
                    .checked_add(nullable_len(self.header_value(i, value))?);
                sum.checked_add(header.ok_or(TooLarge)?).ok_or(TooLarge)
            })
    }
}

/// Bytes a varint-length-prefixed nullable byte string takes.
fn nullable_len(bytes: Option<&[u8]>) -> Result<usize, TooLarge> {
    match bytes {
        None => Ok(varint_len(-1)),
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).map_err(|_| TooLarge)?;
            Ok(varint_len(len) + bytes.len())
        }
    }
}

/// Callers checked that a present `bytes` fits an i32 length (via [`nullable_len`]).
fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}

fn zigzag(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

fn varint_len(value: i32) -> usize {
    let bits = u32::BITS - zigzag(value).leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

/// Kafka's `ByteUtils.writeVarint`: zigzag, then LEB128.
fn put_varint(out: &mut Vec<u8>, value: i32) {
    let mut raw = zigzag(value);
    while raw >= 0x80 {
        out.push(raw as u8 | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_what_is_written() {
        for value in [0, 1, -1, 63, -64, 64, -65, 8191, 8192, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            let mut cursor = super::super::cursor::Cursor::new(&out);
            assert_eq!(cursor.varint(), Ok(value));
        }
    }
}
