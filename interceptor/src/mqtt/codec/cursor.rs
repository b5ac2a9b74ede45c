//! Reading a packet body: every read checks what is left, so a short or lying packet is an
//! error, never a panic; binary fields are `Bytes` slices of the packet (no copy).

use bytes::Bytes;

use super::DecodeError;

pub(super) struct Cursor<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    /// Over `frame[start..]`.
    pub fn new(frame: &'a Bytes, start: usize) -> Self {
        Self {
            frame,
            pos: start.min(frame.len()),
            end: frame.len(),
        }
    }

    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// A sub-cursor over the next `len` bytes (a property list); this one skips them.
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<Cursor<'a>, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated(what));
        }
        let sub = Cursor {
            frame: self.frame,
            pos: self.pos,
            end: self.pos + len,
        };
        self.pos += len;
        Ok(sub)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self
            .frame
            .get(self.pos)
            .filter(|_| self.pos < self.end)
            .ok_or(DecodeError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes([self.u8(what)?, self.u8(what)?]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes([
            self.u8(what)?,
            self.u8(what)?,
            self.u8(what)?,
            self.u8(what)?,
        ]))
    }

    /// A variable byte integer (at most 4 bytes).
    pub fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut n: u32 = 0;
        for i in 0..4 {
            let b = self.u8(what)?;
            n |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError::Malformed(format!(
            "{what}: a variable byte integer longer than 4 bytes"
        )))
    }

    /// Length-prefixed bytes.
    pub fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16(what)?);
        self.bytes(len, what)
    }

    pub fn bytes(&mut self, len: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated(what));
        }
        let out = self.frame.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// The rest of the body (a PUBLISH payload).
    pub fn rest(&mut self) -> Bytes {
        let out = self.frame.slice(self.pos..self.end);
        self.pos = self.end;
        out
    }

    /// A UTF-8 string (MQTT 5 §1.5.4): valid UTF-8 without U+0000.
    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let raw = self.binary(what)?;
        let text = std::str::from_utf8(&raw).map_err(|_| DecodeError::BadUtf8(what))?;
        if text.contains('\0') {
            return Err(DecodeError::BadUtf8(what));
        }
        Ok(text.to_owned())
    }

    /// Nothing may follow the last field.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Malformed(format!(
                "{n} bytes after the end of the {what}"
            ))),
        }
    }
}
