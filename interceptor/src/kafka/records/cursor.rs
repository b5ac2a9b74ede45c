//! The record-level primitives of magic v2 (KIP-98): zigzag varints and varlongs, and
//! varint-length byte strings, read forward through untrusted bytes without panicking.

use super::RecordProblem;

/// A u32 takes at most 5 varint bytes, a u64 at most 10.
const MAX_VARINT_BYTES: usize = 5;
const MAX_VARLONG_BYTES: usize = 10;

#[derive(Debug, Clone)]
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(super) fn u8(&mut self) -> Result<u8, RecordProblem> {
        let byte = *self.buf.get(self.pos).ok_or(RecordProblem::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    pub(super) fn bytes(&mut self, len: usize) -> Result<&'a [u8], RecordProblem> {
        let end = self.pos.checked_add(len).ok_or(RecordProblem::Truncated)?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(RecordProblem::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// Unsigned LEB128 of at most `max_bytes` bytes whose value fits in `bits` bits. Kafka's
    /// reader silently drops the excess bits of an over-long last byte; rejecting them instead
    /// means a value never reads differently here than at the broker.
    fn uvarint(&mut self, max_bytes: usize, bits: u32) -> Result<u64, RecordProblem> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let byte = self.u8()?;
            let shift = 7 * i as u32;
            let payload = u64::from(byte & 0x7f);
            if shift + 7 > bits && payload >> (bits - shift) != 0 {
                return Err(RecordProblem::Varint);
            }
            value |= payload << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordProblem::Varint)
    }

    /// A zigzag-encoded i32 (Kafka's `ByteUtils.readVarint`).
    pub(super) fn varint(&mut self) -> Result<i32, RecordProblem> {
        let raw = self.uvarint(MAX_VARINT_BYTES, 32)? as u32;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }

    /// A zigzag-encoded i64 (Kafka's `ByteUtils.readVarlong`).
    pub(super) fn varlong(&mut self) -> Result<i64, RecordProblem> {
        let raw = self.uvarint(MAX_VARLONG_BYTES, 64)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A varint length then that many bytes; -1 is null, below -1 an error.
    /// A bad length leaves the cursor at the length, so the error points at it.
    pub(super) fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordProblem> {
        let start = self.pos;
        match self.varint()? {
            -1 => Ok(None),
            len => {
                let Ok(len) = usize::try_from(len) else {
                    self.pos = start;
                    return Err(RecordProblem::NegativeLength);
                };
                self.bytes(len).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag32(v: i32) -> Vec<u8> {
        let mut u = ((v << 1) ^ (v >> 31)) as u32;
        let mut out = Vec::new();
        loop {
            if u < 0x80 {
                out.push(u as u8);
                return out;
            }
            out.push((u as u8 & 0x7f) | 0x80);
            u >>= 7;
        }
    }

    fn zigzag64(v: i64) -> Vec<u8> {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if u < 0x80 {
                out.push(u as u8);
                return out;
            }
            out.push((u as u8 & 0x7f) | 0x80);
            u >>= 7;
        }
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, -1, 63, -64, 64, -65, 8191, i32::MAX, i32::MIN] {
            let bytes = zigzag32(v);
            let mut c = Cursor::new(&bytes);
            assert_eq!(c.varint(), Ok(v), "{v}");
            assert!(c.is_empty());
        }
        for v in [0, -1, i64::from(i32::MAX) + 1, i64::MAX, i64::MIN] {
            let bytes = zigzag64(v);
            let mut c = Cursor::new(&bytes);
            assert_eq!(c.varlong(), Ok(v), "{v}");
            assert!(c.is_empty());
        }
    }

    #[test]
    fn overlong_and_overflowing_varints_are_rejected() {
        // Six bytes for an i32.
        let mut c = Cursor::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
        assert_eq!(c.varint(), Err(RecordProblem::Varint));
        // Five bytes whose last carries bits past 32 (Kafka would drop them).
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]);
        assert_eq!(c.varint(), Err(RecordProblem::Varint));
        // The largest legal five-byte value is accepted.
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(c.varint(), Ok(i32::MIN));
        // Eleven bytes for an i64, and ten whose last carries bits past 64.
        let mut c = Cursor::new(&[0x80; 11]);
        assert_eq!(c.varlong(), Err(RecordProblem::Varint));
        let mut long = [0xff; 10];
        long[9] = 0x02;
        assert_eq!(Cursor::new(&long).varlong(), Err(RecordProblem::Varint));
        long[9] = 0x01;
        assert_eq!(Cursor::new(&long).varlong(), Ok(i64::MIN));
        // Continuation bit on the last byte of the input.
        assert_eq!(
            Cursor::new(&[0x80, 0x80]).varint(),
            Err(RecordProblem::Truncated)
        );
    }

    #[test]
    fn nullable_bytes_reads_null_empty_and_rejects_below_minus_one() {
        let mut input = zigzag32(-1);
        input.extend(zigzag32(0));
        input.extend(zigzag32(2));
        input.extend(b"ab");
        input.extend(zigzag32(-2));
        let mut c = Cursor::new(&input);
        assert_eq!(c.nullable_bytes(), Ok(None));
        assert_eq!(c.nullable_bytes(), Ok(Some(&b""[..])));
        assert_eq!(c.nullable_bytes(), Ok(Some(&b"ab"[..])));
        assert_eq!(c.nullable_bytes(), Err(RecordProblem::NegativeLength));
        let too_long = [zigzag32(5), b"abc".to_vec()].concat();
        assert_eq!(
            Cursor::new(&too_long).nullable_bytes(),
            Err(RecordProblem::Truncated)
        );
    }
}
