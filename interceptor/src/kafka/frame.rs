//! Length-prefixed framing: a Kafka frame is an i32 big-endian length, then that many bytes.
//!
//! Frames are split off the read buffer without copying and keep their length prefix, so a
//! frame that passes every check is forwarded as the exact bytes received. "Incomplete" (read
//! more) and "invalid" (close the connection) are kept apart, as in mini-redis.
use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Size of the length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    #[error("negative frame length {0}")]
    NegativeLength(i32),
}

/// Splits one complete frame off the front of `buf`, length prefix included, so forwarding it
/// writes the exact bytes received. `Ok(None)`: incomplete, read more. Never copies.
///
/// `max_frame_bytes` bounds the length field (the bytes after the prefix). It is enforced as
/// soon as the prefix is in, before any of the body arrives, so a hostile 2 GiB prefix costs
/// nothing. While a frame of known length is incomplete, `buf` is reserved up to the end of
/// that frame (and no further than the limit allows), so reads land in one allocation instead
/// of growing it step by step.
pub fn split_frame(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let Some(body_len) = peek_body_len(buf, max_frame_bytes)? else {
        return Ok(None);
    };
    // Cannot overflow: body_len <= max_frame_bytes, checked above, and both come from an i32.
    let frame_len = LENGTH_PREFIX.saturating_add(body_len);
    if buf.len() < frame_len {
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(frame_len).freeze()))
}

/// The whole length (prefix included) of the frame at the front of `buf`, checked against the
/// limit as [`split_frame`] does, as soon as its prefix is in; `None` before that. For
/// forwarding a frame as its bytes arrive instead of waiting for all of it.
pub fn peek_frame_len(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, FrameError> {
    Ok(peek_body_len(buf, max_frame_bytes)?.map(|body| LENGTH_PREFIX.saturating_add(body)))
}

/// The length field of the frame at the front of `buf`, checked; `None` until all four bytes
/// of the prefix are in.
fn peek_body_len(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(*prefix);
    // A negative i32 is exactly the case where the conversion to usize fails.
    let len = usize::try_from(len).map_err(|_| FrameError::NegativeLength(len))?;
    if len > max_frame_bytes {
        return Err(FrameError::Oversized {
            len,
            max: max_frame_bytes,
        });
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024 * 1024;

    /// A frame: i32 length prefix, then the body.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_complete_frame_is_split_off_with_its_prefix() {
        let bytes = frame(b"hello");
        let mut buf = BytesMut::from(&bytes[..]);
        let got = split_frame(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(&got[..], &bytes[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn split_is_zero_copy() {
        let mut buf = BytesMut::from(&frame(b"payload")[..]);
        let base = buf.as_ptr();
        let got = split_frame(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(
            got.as_ptr(),
            base,
            "the frame must share the read buffer's memory"
        );
    }

    #[test]
    fn incomplete_at_every_byte_boundary() {
        let bytes = frame(b"0123456789abcdef");
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(split_frame(&mut buf, MAX), Ok(None), "cut at {cut}");
            assert_eq!(
                &buf[..],
                &bytes[..cut],
                "an incomplete frame consumes nothing"
            );
        }
    }

    #[test]
    fn a_frame_fed_one_byte_at_a_time_comes_out_once() {
        let bytes = frame(b"one byte at a time");
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in &bytes {
            buf.extend_from_slice(&[*b]);
            if let Some(f) = split_frame(&mut buf, MAX).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames, vec![Bytes::from(bytes)]);
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let first = frame(b"first");
        let second = frame(b"second!");
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second);
        buf.extend_from_slice(&[0, 0]); // half of a third prefix
        assert_eq!(split_frame(&mut buf, MAX).unwrap().unwrap(), first);
        assert_eq!(split_frame(&mut buf, MAX).unwrap().unwrap(), second);
        assert_eq!(split_frame(&mut buf, MAX), Ok(None));
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn an_empty_body_is_a_frame() {
        // Length 0: framing accepts it; the header parser refuses it later.
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(
            split_frame(&mut buf, MAX).unwrap().unwrap(),
            &[0u8, 0, 0, 0][..]
        );
    }

    #[test]
    fn a_frame_at_the_limit_passes_and_one_past_it_is_oversized() {
        let mut buf = BytesMut::from(&frame(&[7; 16])[..]);
        assert!(split_frame(&mut buf, 16).unwrap().is_some());
        let mut buf = BytesMut::from(&frame(&[7; 17])[..]);
        assert_eq!(
            split_frame(&mut buf, 16),
            Err(FrameError::Oversized { len: 17, max: 16 })
        );
    }

    #[test]
    fn a_2_gib_prefix_is_refused_before_the_body_arrives() {
        // i32::MAX = 2 GiB - 1, and nothing after it: refused at once, nothing reserved.
        let mut buf = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        let capacity = buf.capacity();
        assert_eq!(
            split_frame(&mut buf, MAX),
            Err(FrameError::Oversized {
                len: i32::MAX as usize,
                max: MAX
            })
        );
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn negative_and_garbage_lengths() {
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert_eq!(
            split_frame(&mut buf, MAX),
            Err(FrameError::NegativeLength(-1))
        );
        // An HTTP request on the Kafka port: "GET " is a length of 1_195_725_856.
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(
            split_frame(&mut buf, MAX),
            Err(FrameError::Oversized {
                len: 0x4745_5420,
                max: MAX
            })
        );
        // A TLS ClientHello on a plaintext port: 0x16 0x03 0x01 0x02 reads as 369 MB.
        let mut buf = BytesMut::from(&[0x16u8, 0x03, 0x01, 0x02, 0x00][..]);
        assert!(matches!(
            split_frame(&mut buf, MAX),
            Err(FrameError::Oversized { .. })
        ));
        let mut buf = BytesMut::from(&[0x80u8, 0, 0, 0][..]);
        assert_eq!(
            split_frame(&mut buf, MAX),
            Err(FrameError::NegativeLength(i32::MIN))
        );
    }

    #[test]
    fn an_incomplete_frame_reserves_its_remainder() {
        let bytes = frame(&[1; 4000]);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&bytes[..10]);
        assert_eq!(split_frame(&mut buf, MAX), Ok(None));
        assert!(buf.capacity() >= bytes.len(), "capacity {}", buf.capacity());
    }

    #[test]
    fn reserving_stays_within_the_limit() {
        // Prefix at the limit, 10 bytes in: the reservation is for this frame only, not more
        // than prefix + limit (a fresh buffer has no earlier capacity to double).
        let max = 100_000;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(max as i32).to_be_bytes());
        buf.extend_from_slice(&[0; 6]);
        assert_eq!(split_frame(&mut buf, max), Ok(None));
        assert!(buf.capacity() >= LENGTH_PREFIX + max);
        assert!(
            buf.capacity() <= 2 * (LENGTH_PREFIX + max),
            "{}",
            buf.capacity()
        );
    }
}
