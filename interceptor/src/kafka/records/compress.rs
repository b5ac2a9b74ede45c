//! Compression of re-encoded record data in the codec, framing and level class the batch came
//! in, with encoder state kept across batches and calls: a batch costs its output, not a fresh
//! hash table or deflate state.
//!
//! - gzip: level from the header's XFL byte (2: best, 4: fastest, else the default 6), as zlib
//!   and flate2 set it; Java's `GZIPOutputStream` writes 0, so it gets 6 as it used.
//! - snappy: raw snappy as librdkafka sends it, or snappy-java's stream (its header copied,
//!   32 KiB blocks) as the Java client sends it, whichever the input used.
//! - lz4: the frame Kafka's Java client writes: independent 64 KiB blocks, no checksums.
//! - zstd: level 3 (the Java client's and librdkafka's default).

use super::compression::{XERIAL_HEADER_BYTES, XERIAL_MAGIC};
use super::Compression;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const GZIP_XFL_OFFSET: usize = 8;
const GZIP_DEFAULT_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// Magic, FLG (version 1, independent blocks), BD (64 KiB blocks), header checksum.
const LZ4_FRAME_HEADER: [u8; 7] = [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82];
const LZ4_BLOCK_BYTES: usize = 64 * 1024;
const LZ4_UNCOMPRESSED_FLAG: u32 = 1 << 31;

/// snappy-java's `SnappyOutputStream` default block size, which Kafka's Java client uses.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// The header snappy-java writes: magic, version 1, compatible version 1.
const XERIAL_DEFAULT_HEADER: &[u8; XERIAL_HEADER_BYTES] =
    b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// Encoder state reused across batches; created on first use of each codec.
#[derive(Default)]
pub(super) struct Compressors {
    gzip: Option<(u32, flate2::Compress)>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    lz4: Option<Box<lz4_flex::block::CompressTable>>,
    snappy: Option<snap::raw::Encoder>,
    /// zstd writes from the start of its buffer, so it goes here before `out`.
    zstd_out: Vec<u8>,
}

impl std::fmt::Debug for Compressors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressors").finish_non_exhaustive()
    }
}

impl Compressors {
    /// Appends `plain` compressed with `compression` to `out`, framed and levelled like
    /// `original` (the batch's compressed records as received).
    pub(super) fn compress(
        &mut self,
        compression: Compression,
        original: &[u8],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        match compression {
            Compression::None => {
                out.extend_from_slice(plain);
                Ok(())
            }
            Compression::Gzip => self.gzip(gzip_level(original), plain, out),
            Compression::Snappy => self.snappy(original, plain, out),
            Compression::Lz4 => self.lz4(plain, out),
            Compression::Zstd => self.zstd(plain, out),
        }
    }

    /// The gzip member written by hand around a reusable raw deflate stream: flate2's
    /// `GzEncoder` would build a new deflate state (hundreds of KiB) per batch.
    fn gzip(&mut self, level: u32, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let deflate = match &mut self.gzip {
            Some((current, deflate)) if *current == level => {
                deflate.reset();
                deflate
            }
            slot => {
                let fresh = flate2::Compress::new(flate2::Compression::new(level), false);
                &mut slot.insert((level, fresh)).1
            }
        };
        out.extend_from_slice(&GZIP_MAGIC);
        // Deflate, no flags, no mtime, XFL, OS unknown.
        out.extend_from_slice(&[8, 0, 0, 0, 0, 0, gzip_xfl(level), 255]);
        loop {
            let consumed = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
            let rest = plain.get(consumed..).unwrap_or_default();
            out.reserve(rest.len() / 2 + 1024);
            let before = (deflate.total_in(), deflate.total_out());
            let status = deflate
                .compress_vec(rest, out, flate2::FlushCompress::Finish)
                .map_err(|e| e.to_string())?;
            if status == flate2::Status::StreamEnd {
                break;
            }
            if (deflate.total_in(), deflate.total_out()) == before {
                return Err("deflate made no progress".into());
            }
        }
        let mut crc = flate2::Crc::new();
        crc.update(plain);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE is the length modulo 2^32 by definition.
        out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        Ok(())
    }

    fn snappy(&mut self, original: &[u8], plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let encoder = self.snappy.get_or_insert_with(snap::raw::Encoder::new);
        if !original.starts_with(XERIAL_MAGIC) {
            return snappy_block(encoder, plain, out);
        }
        let header = original
            .get(..XERIAL_HEADER_BYTES)
            .unwrap_or(XERIAL_DEFAULT_HEADER);
        out.extend_from_slice(header);
        for block in plain.chunks(XERIAL_BLOCK_BYTES) {
            let length_at = out.len();
            out.extend_from_slice(&[0; 4]);
            snappy_block(encoder, block, out)?;
            let length = u32::try_from(out.len() - length_at - 4).map_err(|e| e.to_string())?;
            patch(out, length_at, length.to_be_bytes());
        }
        Ok(())
    }

    /// The frame written by hand around the block compressor, reusing its hash table.
    fn lz4(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let table = self.lz4.get_or_insert_with(Default::default);
        out.extend_from_slice(&LZ4_FRAME_HEADER);
        for block in plain.chunks(LZ4_BLOCK_BYTES) {
            let length_at = out.len();
            out.extend_from_slice(&[0; 4]);
            let start = out.len();
            out.resize(
                start + lz4_flex::block::get_maximum_output_size(block.len()),
                0,
            );
            let written = lz4_flex::block::compress_into_with_table(
                block,
                out.get_mut(start..).unwrap_or_default(),
                table,
            )
            .map_err(|e| e.to_string())?;
            // Incompressible blocks are stored as they are, as the reference encoder does.
            let length = if written < block.len() {
                out.truncate(start + written);
                written as u32
            } else {
                out.truncate(start);
                out.extend_from_slice(block);
                block.len() as u32 | LZ4_UNCOMPRESSED_FLAG
            };
            patch(out, length_at, length.to_le_bytes());
        }
        out.extend_from_slice(&[0; 4]); // end mark
        Ok(())
    }

    fn zstd(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let compressor = match &mut self.zstd {
            Some(compressor) => compressor,
            slot => {
                slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| e.to_string())?)
            }
        };
        self.zstd_out.clear();
        self.zstd_out
            .reserve(zstd::zstd_safe::compress_bound(plain.len()));
        compressor
            .compress_to_buffer(plain, &mut self.zstd_out)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&self.zstd_out);
        Ok(())
    }
}

fn snappy_block(
    encoder: &mut snap::raw::Encoder,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let start = out.len();
    out.resize(start + snap::raw::max_compress_len(plain.len()), 0);
    let written = encoder
        .compress(plain, out.get_mut(start..).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    out.truncate(start + written);
    Ok(())
}

/// The level class the sender used, from the XFL byte zlib and flate2 set.
fn gzip_level(original: &[u8]) -> u32 {
    if !original.starts_with(&GZIP_MAGIC) {
        return GZIP_DEFAULT_LEVEL;
    }
    match original.get(GZIP_XFL_OFFSET) {
        Some(2) => 9,
        Some(4) => 1,
        _ => GZIP_DEFAULT_LEVEL,
    }
}

fn gzip_xfl(level: u32) -> u8 {
    match level {
        9 => 2,
        1 => 4,
        _ => 0,
    }
}

/// Overwrites the placeholder at `at` (written by the caller, so in range).
fn patch<const N: usize>(out: &mut [u8], at: usize, bytes: [u8; N]) {
    if let Some(slot) = out.get_mut(at..at + N) {
        slot.copy_from_slice(&bytes);
    }
}
