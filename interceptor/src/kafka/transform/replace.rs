//! Building a frame with some records fields replaced.

use bytes::{BufMut, Bytes, BytesMut};

use super::{RecordsField, TransformError};
use crate::kafka::{frame::LENGTH_PREFIX, wire::Reader};

/// A new frame where each field of `replacements` holds the given records (`None` = null), and
/// everything else is copied from `frame` byte for byte. The fields must come from locating
/// `frame` (any order); `flexible` is the encoding of the records fields in that version
/// (see [`produce_is_flexible`](super::produce_is_flexible) and its siblings).
///
/// Each replaced field's length prefix is written in the field's own form: an i32 (−1 for
/// null) in classic versions, an unsigned varint of length + 1 (0 for null) in flexible ones.
/// A field whose new records have the length of the old ones keeps its original prefix
/// bytes, so replacing records with themselves gives back the frame bit for bit even where
/// the peer wrote a non-minimal varint. The frame's length prefix is rewritten.
///
/// Fails, without panicking, on fields that are not records fields of `frame` in that
/// encoding (out of bounds, overlapping, a prefix that does not read back as the field says)
/// and on records or frames too long for their length prefix.
pub fn replace_records<B: AsRef<[u8]>>(
    frame: &[u8],
    flexible: bool,
    replacements: &[(RecordsField<'_>, Option<B>)],
) -> Result<Bytes, TransformError> {
    if frame.len() < LENGTH_PREFIX {
        return Err(TransformError::ShortFrame);
    }
    let mut order: Vec<usize> = (0..replacements.len()).collect();
    order.sort_by_key(|&i| replacements[i].0.field.start);

    // Checked and sized before anything is copied, so a bad replacement allocates nothing.
    let mut prefixes = Vec::with_capacity(order.len());
    let mut size = frame.len();
    let mut copied_to = LENGTH_PREFIX;
    for &index in &order {
        let (field, records) = &replacements[index];
        let bad = |reason| TransformError::BadReplacement {
            index,
            offset: field.field.start,
            reason,
        };
        if field.field.start < copied_to {
            return Err(bad("overlaps the length prefix or another replaced field"));
        }
        if !reads_back(frame, flexible, field) {
            return Err(bad("not a records field of this frame in this encoding"));
        }
        let records = records.as_ref().map(AsRef::as_ref);
        let prefix = if records.is_none() == field.null
            && records.map_or(0, <[u8]>::len) == field.records.len()
        {
            Prefix::Original(field.field.start..field.records.start)
        } else {
            let (bytes, len) = encode_prefix(flexible, records.map(<[u8]>::len))
                .ok_or(bad("records too long for the field's length prefix"))?;
            Prefix::New(bytes, len)
        };
        let old = field.field.len();
        let new = prefix.len() + records.map_or(0, <[u8]>::len);
        size = (size - old)
            .checked_add(new)
            .ok_or(TransformError::TooLarge(usize::MAX))?;
        prefixes.push(prefix);
        copied_to = field.field.end;
    }
    let declared =
        i32::try_from(size - LENGTH_PREFIX).map_err(|_| TransformError::TooLarge(size))?;

    let mut out = BytesMut::with_capacity(size);
    out.put_i32(declared);
    let mut copied_to = LENGTH_PREFIX;
    for (&index, prefix) in order.iter().zip(&prefixes) {
        let (field, records) = &replacements[index];
        out.extend_from_slice(&frame[copied_to..field.field.start]);
        match prefix {
            Prefix::Original(range) => out.extend_from_slice(&frame[range.clone()]),
            Prefix::New(bytes, len) => out.extend_from_slice(&bytes[..*len]),
        }
        if let Some(records) = records {
            out.extend_from_slice(records.as_ref());
        }
        copied_to = field.field.end;
    }
    out.extend_from_slice(&frame[copied_to..]);
    debug_assert_eq!(out.len(), size);
    Ok(out.freeze())
}

enum Prefix {
    /// The field's own prefix bytes, kept because the length did not change.
    Original(std::ops::Range<usize>),
    /// A new prefix: its bytes (a varint takes at most 5) and how many are used. Inline,
    /// because a Fetch response can carry thousands of partitions.
    New([u8; 5], usize),
}

impl Prefix {
    fn len(&self) -> usize {
        match self {
            Prefix::Original(range) => range.len(),
            Prefix::New(_, len) => *len,
        }
    }
}

/// Whether `field` is what reading a records field at its start in `frame` gives: the same
/// extent, content and null-ness. This is what lets the copy loop slice without checks.
fn reads_back(frame: &[u8], flexible: bool, field: &RecordsField<'_>) -> bool {
    let Ok(mut r) = Reader::at(frame, field.field.start, "records") else {
        return false;
    };
    let Ok(content) = r.nullable_bytes(flexible, "records") else {
        return false;
    };
    let end = r.pos();
    end == field.field.end
        && content.is_none() == field.null
        && content.unwrap_or(end..end) == field.records
}

/// The length prefix of records of `len` bytes (`None` = null): its bytes and how many are
/// used; `None` when the length does not fit the encoding.
fn encode_prefix(flexible: bool, len: Option<usize>) -> Option<([u8; 5], usize)> {
    let mut out = [0; 5];
    if flexible {
        let mut value = match len {
            None => 0,
            Some(len) => u32::try_from(len).ok()?.checked_add(1)?,
        };
        let mut used = 0;
        while value >= 0x80 {
            out[used] = (value as u8) | 0x80;
            value >>= 7;
            used += 1;
        }
        out[used] = value as u8;
        Some((out, used + 1))
    } else {
        let value = match len {
            None => -1,
            Some(len) => i32::try_from(len).ok()?,
        };
        out[..4].copy_from_slice(&value.to_be_bytes());
        Some((out, 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::wire::tests::put_uvarint;

    #[test]
    fn prefixes_in_both_encodings() {
        let prefix = |flexible, len| encode_prefix(flexible, len).map(|(b, n)| b[..n].to_vec());
        assert_eq!(prefix(false, None), Some(vec![0xff; 4]));
        assert_eq!(prefix(false, Some(0x0102)), Some(vec![0, 0, 1, 2]));
        assert_eq!(prefix(false, Some(1 << 31)), None);
        assert_eq!(prefix(true, None), Some(vec![0]));
        for len in [
            0,
            126,
            127,
            0x3ffe,
            0x3fff,
            0x1f_fffe,
            0x1f_ffff,
            u32::MAX as usize - 1,
        ] {
            let mut want = Vec::new();
            put_uvarint(&mut want, len as u32 + 1);
            assert_eq!(prefix(true, Some(len)), Some(want), "{len}");
        }
        assert_eq!(prefix(true, Some(u32::MAX as usize)), None);
    }
}
