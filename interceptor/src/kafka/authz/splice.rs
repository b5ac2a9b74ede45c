//! Building a request out of parts of another, for forwarding only the allowed part of a
//! request: the parts kept are copied from the original frame (which has been parsed, bounds
//! checked, already), array counts are written anew, and the length prefix is fixed at the
//! end. Nothing is decoded and re-encoded, so every field the interceptor does not touch
//! (tagged fields included, KIP-482) reaches the broker exactly as the client sent it.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::kafka::frame::LENGTH_PREFIX;

/// Copies spans of `src` (a whole frame, length prefix included) into a new frame. Positions
/// are offsets into `src`; they only move forward.
pub struct Splice<'a> {
    src: &'a [u8],
    out: BytesMut,
    /// Everything before this position has been copied or skipped.
    at: usize,
}

impl<'a> Splice<'a> {
    pub fn new(src: &'a [u8]) -> Self {
        let mut out = BytesMut::with_capacity(src.len());
        out.put_i32(0); // fixed in finish()
        Self {
            src,
            out,
            at: LENGTH_PREFIX.min(src.len()),
        }
    }

    /// Copies from the current position up to `pos`.
    pub fn copy_to(&mut self, pos: usize) {
        let pos = pos.clamp(self.at, self.src.len());
        self.out.extend_from_slice(&self.src[self.at..pos]);
        self.at = pos;
    }

    /// Leaves out everything from the current position up to `pos`.
    pub fn skip_to(&mut self, pos: usize) {
        self.at = pos.clamp(self.at, self.src.len());
    }

    /// Leaves out what lies between the current position and `range.start`, then copies
    /// `range`.
    pub fn copy(&mut self, range: Range<usize>) {
        self.skip_to(range.start);
        self.copy_to(range.end);
    }

    /// Writes an array count: i32 in classic versions, unsigned varint of count + 1 in
    /// flexible ones.
    pub fn put_count(&mut self, count: usize, flexible: bool) {
        if flexible {
            put_uvarint(&mut self.out, u32::try_from(count + 1).unwrap_or(u32::MAX));
        } else {
            self.out.put_i32(i32::try_from(count).unwrap_or(i32::MAX));
        }
    }

    /// Writes bytes that are not in the source (a changed flag, a new value).
    pub fn put(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Copies the rest of the source and returns the new frame with its length prefix.
    pub fn finish(mut self) -> Bytes {
        self.copy_to(self.src.len());
        let len = i32::try_from(self.out.len() - LENGTH_PREFIX).unwrap_or(i32::MAX);
        self.out[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
        self.out.freeze()
    }
}

pub fn put_uvarint(out: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_spans_and_new_counts_make_a_frame_with_the_right_prefix() {
        // prefix, "hd", count 3 (i32), elements "a" "b" "c", tail "z"
        let src = b"\0\0\0\x0ahd\0\0\0\x03abcz";
        let mut s = Splice::new(src);
        s.copy_to(6); // header
        s.put_count(2, false);
        s.copy(10..11); // a
        s.copy(12..13); // c
        let out = s.finish();
        assert_eq!(&out[..], b"\0\0\0\x09hd\0\0\0\x02acz");
    }

    #[test]
    fn flexible_counts_are_varints_of_count_plus_one() {
        let src = b"\0\0\0\x01x";
        let mut s = Splice::new(src);
        s.put_count(200, true);
        s.skip_to(5);
        assert_eq!(&s.finish()[..], b"\0\0\0\x02\xc9\x01");
    }

    #[test]
    fn positions_outside_the_source_are_clamped() {
        let src = b"\0\0\0\x02ab";
        let mut s = Splice::new(src);
        s.copy_to(100);
        s.skip_to(2);
        assert_eq!(&s.finish()[..], &src[..]);
    }
}
