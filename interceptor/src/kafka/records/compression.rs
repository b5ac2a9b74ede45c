//! Decompression of a batch's records into one reusable buffer, stopped at a hard cap *while*
//! decompressing: a bomb costs at most the cap in memory and the time to produce it.
//!
//! Decoder state is bounded too: gzip 32 KiB, lz4 at most twice its 4 MiB maximum block plus
//! 64 KiB, zstd its window, capped by [`zstd_window_log_max`]; snappy decodes straight into the
//! buffer after checking its declared length against the cap.

use std::io::{self, Read};

/// The codec of a batch: attributes bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub(super) fn from_codec(codec: u8) -> Option<Self> {
        Some(match codec {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub(super) enum DecompressError {
    /// The output would exceed the cap.
    TooLarge,
    Corrupt(String),
}

/// snappy-java's stream header (`SnappyCodec`): 8 magic bytes, then version and compatible
/// version (i32 each). The Java client frames snappy this way; librdkafka sends raw snappy.
/// Like both of them (and the broker), anything not starting with the magic is raw snappy.
pub(super) const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
pub(super) const XERIAL_HEADER_BYTES: usize = 16;

/// The first buffer size tried for streaming codecs; doubled as output arrives.
const INITIAL_OUTPUT: usize = 16 * 1024;

/// The zstd window this accepts: enough for any frame Kafka clients make at ordinary levels
/// (level ≤ 19 uses ≤ 8 MiB), more when the cap is larger, never beyond zstd's own streaming
/// default of 128 MiB. The decoder allocates the window a frame declares, so this bounds memory
/// that the sender would otherwise choose.
fn zstd_window_log_max(cap: usize) -> u32 {
    let needed = usize::BITS - cap.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

/// Decompresses `input` into `out`, returning how many bytes of `out` hold the result. `out`
/// is reused between calls and never grows past `cap + 1` bytes (the extra byte detects
/// overflow); it is not truncated, so the next call need not zero it again.
pub(super) fn decompress(
    compression: Compression,
    input: &[u8],
    cap: usize,
    out: &mut Vec<u8>,
) -> Result<usize, DecompressError> {
    match compression {
        Compression::None => {
            if input.len() > cap {
                return Err(DecompressError::TooLarge);
            }
            grow(out, input.len());
            out[..input.len()].copy_from_slice(input);
            Ok(input.len())
        }
        Compression::Gzip => read_capped(flate2::bufread::MultiGzDecoder::new(input), cap, out),
        // The decoder reports the end of each frame; stopping at the first one is what Kafka's
        // `Lz4BlockInputStream` does (it ignores anything after the end mark).
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(input), cap, out),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt)?;
            decoder
                .window_log_max(zstd_window_log_max(cap))
                .map_err(corrupt)?;
            read_capped(decoder, cap, out)
        }
        Compression::Snappy => match input.strip_prefix(XERIAL_MAGIC) {
            Some(_) => xerial_snappy(input, cap, out),
            None => {
                let mut filled = 0;
                raw_snappy_block(input, cap, out, &mut filled)?;
                Ok(filled)
            }
        },
    }
}

/// Reads `reader` until it first reports its end, into `out`, failing once more than `cap` bytes came out.
fn read_capped(
    mut reader: impl Read,
    cap: usize,
    out: &mut Vec<u8>,
) -> Result<usize, DecompressError> {
    let limit = cap.saturating_add(1);
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if out.len() >= limit {
                return Err(DecompressError::TooLarge);
            }
            let target = out.len().saturating_mul(2).max(INITIAL_OUTPUT).min(limit);
            grow(out, target);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
    }
    if filled > cap {
        return Err(DecompressError::TooLarge);
    }
    Ok(filled)
}

/// snappy-java framing: the header, then blocks of (u32 big-endian length, raw snappy block).
fn xerial_snappy(input: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<usize, DecompressError> {
    let mut rest = input
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| DecompressError::Corrupt("truncated snappy-java header".into()))?;
    let mut filled = 0;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| DecompressError::Corrupt("truncated snappy-java block length".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return Err(DecompressError::Corrupt(
                "truncated snappy-java block".into(),
            ));
        }
        let (block, tail) = tail.split_at(len);
        raw_snappy_block(block, cap, out, &mut filled)?;
        rest = tail;
    }
    Ok(filled)
}

/// Decodes one raw snappy stream to `out[*filled..]`, after checking its declared length.
fn raw_snappy_block(
    block: &[u8],
    cap: usize,
    out: &mut Vec<u8>,
    filled: &mut usize,
) -> Result<(), DecompressError> {
    let len = snap::raw::decompress_len(block).map_err(corrupt)?;
    let end = filled
        .checked_add(len)
        .filter(|&end| end <= cap)
        .ok_or(DecompressError::TooLarge)?;
    grow(out, end);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[*filled..end])
        .map_err(corrupt)?;
    if written != len {
        return Err(DecompressError::Corrupt("snappy length mismatch".into()));
    }
    *filled = end;
    Ok(())
}

/// Makes `out` at least `len` long; bytes already there are kept (they are overwritten later).
fn grow(out: &mut Vec<u8>, len: usize) {
    if out.len() < len {
        out.resize(len, 0);
    }
}

fn corrupt(e: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt(e.to_string())
}
