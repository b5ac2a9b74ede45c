//! A bounds-checked cursor over untrusted Kafka bytes: the primitive types of the protocol
//! (big-endian integers, unsigned varints, classic and compact strings, tagged fields), each
//! failing with a [`HeaderError`] that names the field instead of panicking or slicing out of
//! bounds. The header, Produce and ApiVersions parsers share it.

use std::ops::Range;

use super::HeaderError;

/// An unsigned varint for a u32 takes at most 5 bytes (KIP-482).
const MAX_UVARINT_BYTES: u32 = 5;

/// Reads forward through `buf`; `pos` never passes `buf.len()`.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// A reader positioned at `pos`; `what` names the field expected there.
    pub(crate) fn at(buf: &'a [u8], pos: usize, what: &'static str) -> Result<Self, HeaderError> {
        if pos > buf.len() {
            return Err(HeaderError::Truncated(what));
        }
        Ok(Self { buf, pos })
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The range of the next `n` bytes, consumed.
    pub(crate) fn take_range(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<Range<usize>, HeaderError> {
        if n > self.remaining() {
            return Err(HeaderError::Truncated(what));
        }
        let start = self.pos;
        self.pos += n;
        Ok(start..self.pos)
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HeaderError> {
        let range = self.take_range(n, what)?;
        Ok(&self.buf[range])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], HeaderError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, HeaderError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, HeaderError> {
        self.array(what).map(i16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, HeaderError> {
        self.array(what).map(i32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, HeaderError> {
        self.array(what).map(i64::from_be_bytes)
    }

    /// An unsigned varint (7 bits a byte, least significant first). Stricter than Kafka's own
    /// reader: a 5th byte that would overflow u32 is refused rather than silently truncated,
    /// so this parser never reads a value the broker would read differently.
    pub(crate) fn uvarint(&mut self, what: &'static str) -> Result<u32, HeaderError> {
        let mut value = 0u32;
        for i in 0..MAX_UVARINT_BYTES {
            let byte = self.u8(what)?;
            if i == MAX_UVARINT_BYTES - 1 && byte > 0x0f {
                return Err(HeaderError::Invalid(what));
            }
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        // Unreachable in practice: the 5th byte either ended the varint or was refused above.
        Err(HeaderError::Invalid(what))
    }

    /// A classic nullable string or bytes (i16 length, -1 = null): the range of its content.
    pub(crate) fn nullable_string(
        &mut self,
        what: &'static str,
    ) -> Result<Option<Range<usize>>, HeaderError> {
        match self.i16(what)? {
            -1 => Ok(None),
            len if len < 0 => Err(HeaderError::Invalid(what)),
            len => self
                .take_range(usize::from(len.unsigned_abs()), what)
                .map(Some),
        }
    }

    /// A compact nullable string (unsigned varint length + 1, 0 = null): the range of its
    /// content.
    pub(crate) fn compact_nullable_string(
        &mut self,
        what: &'static str,
    ) -> Result<Option<Range<usize>>, HeaderError> {
        match self.uvarint(what)? {
            0 => Ok(None),
            len_plus_one => self.take_range(to_usize(len_plus_one - 1), what).map(Some),
        }
    }

    /// A compact non-null string: null is invalid.
    pub(crate) fn compact_string(&mut self, what: &'static str) -> Result<(), HeaderError> {
        self.compact_nullable_string(what)?
            .map(|_| ())
            .ok_or(HeaderError::Invalid(what))
    }

    /// Skips a tagged-field section (count, then per field: tag, size, bytes). Every field
    /// consumes at least two bytes, so a lying count ends in `Truncated`, not a long loop.
    pub(crate) fn skip_tagged_fields(&mut self, what: &'static str) -> Result<(), HeaderError> {
        let count = self.uvarint(what)?;
        for _ in 0..count {
            self.uvarint(what)?; // tag
            let size = self.uvarint(what)?;
            self.take(to_usize(size), what)?;
        }
        Ok(())
    }

    pub(crate) fn i8(&mut self, what: &'static str) -> Result<i8, HeaderError> {
        self.array(what).map(i8::from_be_bytes)
    }

    /// A UUID (topic ids, KIP-516): 16 bytes.
    pub(crate) fn uuid(&mut self, what: &'static str) -> Result<[u8; 16], HeaderError> {
        self.array(what)
    }

    /// A non-null string in either encoding: the range of its content.
    pub(crate) fn string(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Range<usize>, HeaderError> {
        self.nullable_str(flexible, what)?
            .ok_or(HeaderError::Invalid(what))
    }

    /// A nullable string in either encoding (classic i16 length, or compact): the range of
    /// its content.
    pub(crate) fn nullable_str(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Option<Range<usize>>, HeaderError> {
        if flexible {
            self.compact_nullable_string(what)
        } else {
            self.nullable_string(what)
        }
    }

    /// Nullable bytes (records): classic i32 length (-1 = null), or compact (varint length
    /// + 1, 0 = null). The range of the content.
    pub(crate) fn nullable_bytes(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Option<Range<usize>>, HeaderError> {
        if flexible {
            return self.compact_nullable_string(what);
        }
        match self.i32(what)? {
            -1 => Ok(None),
            len if len < 0 => Err(HeaderError::Invalid(what)),
            len => self.take_range(len.unsigned_abs() as usize, what).map(Some),
        }
    }

    /// A nullable array's count in either encoding, checked against the bytes left given the
    /// smallest encoding of one element (at least 1). `None` for a null array.
    pub(crate) fn nullable_count(
        &mut self,
        flexible: bool,
        min_element_bytes: usize,
        what: &'static str,
    ) -> Result<Option<usize>, HeaderError> {
        let count = if flexible {
            match self.uvarint(what)? {
                0 => return Ok(None),
                n => to_usize(n - 1),
            }
        } else {
            match self.i32(what)? {
                -1 => return Ok(None),
                n if n < 0 => return Err(HeaderError::Invalid(what)),
                n => n.unsigned_abs() as usize,
            }
        };
        self.check_count(count, min_element_bytes.max(1), what)?;
        Ok(Some(count))
    }

    /// A non-null array's count (see [`Self::nullable_count`]).
    pub(crate) fn count(
        &mut self,
        flexible: bool,
        min_element_bytes: usize,
        what: &'static str,
    ) -> Result<usize, HeaderError> {
        self.nullable_count(flexible, min_element_bytes, what)?
            .ok_or(HeaderError::Invalid(what))
    }

    /// Skips the tagged fields of a flexible struct; nothing in classic versions.
    pub(crate) fn tagged(&mut self, flexible: bool, what: &'static str) -> Result<(), HeaderError> {
        if flexible {
            self.skip_tagged_fields(what)?;
        }
        Ok(())
    }

    /// Skips `n` bytes.
    pub(crate) fn skip(&mut self, n: usize, what: &'static str) -> Result<(), HeaderError> {
        self.take(n, what).map(|_| ())
    }

    /// Checks an array count against the bytes left, given the smallest encoding of one
    /// element, so a count read from the wire never sizes an allocation the frame cannot fill.
    pub(crate) fn check_count(
        &self,
        count: usize,
        min_element_bytes: usize,
        what: &'static str,
    ) -> Result<(), HeaderError> {
        if count.saturating_mul(min_element_bytes) > self.remaining() {
            return Err(HeaderError::Truncated(what));
        }
        Ok(())
    }
}

/// u32 → usize: lossless on every target this daemon runs on (64-bit Linux); saturates
/// elsewhere, which any bounds check then refuses.
pub(crate) fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes an unsigned varint, for building fixtures.
    pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut value: u32) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    #[test]
    fn uvarint_round_trips_at_every_width() {
        for value in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            0x1f_ffff,
            0x20_0000,
            u32::MAX,
        ] {
            let mut bytes = Vec::new();
            put_uvarint(&mut bytes, value);
            let mut reader = Reader::new(&bytes);
            assert_eq!(reader.uvarint("v"), Ok(value), "{value:#x}");
            assert_eq!(reader.remaining(), 0);
        }
    }

    #[test]
    fn uvarint_refuses_overlong_and_overflowing_encodings() {
        // Six bytes: the 5th still has its continuation bit.
        let overlong = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            Reader::new(&overlong).uvarint("v"),
            Err(HeaderError::Invalid("v"))
        );
        // Five bytes whose last carries bits beyond u32.
        let overflow = [0xff, 0xff, 0xff, 0xff, 0x1f];
        assert_eq!(
            Reader::new(&overflow).uvarint("v"),
            Err(HeaderError::Invalid("v"))
        );
        assert_eq!(
            Reader::new(&[0x80]).uvarint("v"),
            Err(HeaderError::Truncated("v"))
        );
    }

    #[test]
    fn strings_check_their_lengths() {
        // i16 length -2: neither null nor a length.
        assert_eq!(
            Reader::new(&[0xff, 0xfe]).nullable_string("s"),
            Err(HeaderError::Invalid("s"))
        );
        // Length 5, three bytes present.
        assert_eq!(
            Reader::new(&[0x00, 0x05, b'a', b'b', b'c']).nullable_string("s"),
            Err(HeaderError::Truncated("s"))
        );
        // Compact: 0 = null, 4 = three bytes.
        assert_eq!(Reader::new(&[0]).compact_nullable_string("s"), Ok(None));
        assert_eq!(
            Reader::new(&[4, b'a', b'b', b'c']).compact_nullable_string("s"),
            Ok(Some(1..4))
        );
        assert_eq!(
            Reader::new(&[0]).compact_string("s"),
            Err(HeaderError::Invalid("s"))
        );
    }

    #[test]
    fn tagged_fields_with_a_lying_count_are_truncated() {
        // Count u32::MAX, then one field: tag 0, size 1, one byte.
        let mut bytes = Vec::new();
        put_uvarint(&mut bytes, u32::MAX);
        bytes.extend([0, 1, 0xaa]);
        assert_eq!(
            Reader::new(&bytes).skip_tagged_fields("t"),
            Err(HeaderError::Truncated("t"))
        );
    }

    #[test]
    fn counts_are_checked_against_the_bytes_left() {
        let reader = Reader::new(&[0; 12]);
        assert_eq!(reader.check_count(2, 6, "a"), Ok(()));
        assert_eq!(
            reader.check_count(3, 6, "a"),
            Err(HeaderError::Truncated("a"))
        );
        assert_eq!(
            reader.check_count(usize::MAX, 6, "a"),
            Err(HeaderError::Truncated("a"))
        );
    }
}
