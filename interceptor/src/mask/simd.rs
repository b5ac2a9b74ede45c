//! Byte classification over fixed-size blocks, as bit masks (bit i for byte i): the anchor
//! bytes of the detectors and the bytes that stop a JSON string. SSE2 on x86_64 (part of the
//! baseline, so no runtime detection), a portable version elsewhere; tests hold the two to
//! the same answers.

/// The classes of bytes the detectors' anchor scan looks at, one bit per byte of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Anchors {
    /// ASCII digits.
    pub digit: u64,
    /// ASCII uppercase letters.
    pub upper: u64,
    /// Group separators: space and `-`.
    pub sep: u64,
    /// `@` and `+`.
    pub other: u64,
}

/// The anchor classes of a 64-byte block.
#[inline]
pub fn anchors64(block: &[u8; 64]) -> Anchors {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::anchors64(block)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable::anchors64(block)
    }
}

/// Bytes in a 16-byte chunk that stop a JSON string scan: `"`, `\` and control characters.
#[inline]
pub fn string_stops16(chunk: &[u8; 16]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::string_stops16(chunk)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable::string_stops16(chunk)
    }
}

/// Whether every byte of the 64-byte block is ASCII.
#[inline]
pub fn ascii64(block: &[u8; 64]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::ascii64(block)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable::ascii64(block)
    }
}

/// Whether all of `b` is ASCII: 64 bytes at a time, the rest bytewise.
#[inline]
pub fn is_ascii(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(64);
    for block in &mut blocks {
        let Ok(block) = <&[u8; 64]>::try_from(block) else {
            return b.is_ascii();
        };
        if !ascii64(block) {
            return false;
        }
    }
    blocks.remainder().is_ascii()
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) mod portable {
    #[inline]
    fn bits<const N: usize>(b: &[u8; N], f: impl Fn(u8) -> bool) -> u64 {
        b.iter()
            .enumerate()
            .fold(0u64, |m, (i, &x)| if f(x) { m | (1 << i) } else { m })
    }

    pub fn anchors64(block: &[u8; 64]) -> super::Anchors {
        super::Anchors {
            digit: bits(block, |b| b.is_ascii_digit()),
            upper: bits(block, |b| b.is_ascii_uppercase()),
            sep: bits(block, |b| b == b' ' || b == b'-'),
            other: bits(block, |b| b == b'@' || b == b'+'),
        }
    }

    pub fn string_stops16(chunk: &[u8; 16]) -> u32 {
        bits(chunk, |b| b == b'"' || b == b'\\' || b < 0x20) as u32
    }

    pub fn ascii64(block: &[u8; 64]) -> bool {
        block.is_ascii()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_min_epu8,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    /// Loads the 16 bytes at `b[at..at + 16]`; `at + 16 <= N` is checked by the caller's
    /// constant offsets (and asserted in debug builds).
    #[inline(always)]
    fn load<const N: usize>(b: &[u8; N], at: usize) -> __m128i {
        debug_assert!(at + 16 <= N);
        let s = &b[at..at + 16];
        // SAFETY: `s` is 16 readable bytes (the slice above is bounds-checked);
        // `_mm_loadu_si128` has no alignment requirement, and SSE2 is part of the x86_64
        // baseline.
        unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
    }

    #[inline(always)]
    fn movemask(v: __m128i) -> u64 {
        // SAFETY: SSE2 is part of the x86_64 baseline; the intrinsic only reads `v`.
        u64::from(unsafe { _mm_movemask_epi8(v) } as u16)
    }

    /// Bytes of `v` in `lo..lo + len` (unsigned): shifted so the range starts at -128, then
    /// one signed compare.
    #[inline(always)]
    fn in_range(v: __m128i, lo: u8, len: u8) -> __m128i {
        // SAFETY: SSE2 is part of the x86_64 baseline; pure register arithmetic.
        unsafe {
            let shifted = _mm_add_epi8(v, _mm_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
            _mm_cmplt_epi8(shifted, _mm_set1_epi8(0x80u8.wrapping_add(len) as i8))
        }
    }

    #[inline(always)]
    fn eq(v: __m128i, c: u8) -> __m128i {
        // SAFETY: SSE2 is part of the x86_64 baseline; pure register arithmetic.
        unsafe { _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8)) }
    }

    #[inline]
    pub fn anchors64(block: &[u8; 64]) -> super::Anchors {
        let mut a = super::Anchors::default();
        for k in 0..4 {
            let v = load(block, 16 * k);
            let sh = 16 * k;
            a.digit |= movemask(in_range(v, b'0', 10)) << sh;
            a.upper |= movemask(in_range(v, b'A', 26)) << sh;
            // SAFETY: SSE2 is part of the x86_64 baseline; pure register arithmetic.
            let sep = unsafe { _mm_or_si128(eq(v, b' '), eq(v, b'-')) };
            a.sep |= movemask(sep) << sh;
            // SAFETY: as above.
            let other = unsafe { _mm_or_si128(eq(v, b'@'), eq(v, b'+')) };
            a.other |= movemask(other) << sh;
        }
        a
    }

    #[inline]
    pub fn string_stops16(chunk: &[u8; 16]) -> u32 {
        let v = load(chunk, 0);
        // SAFETY: SSE2 is part of the x86_64 baseline; pure register arithmetic.
        let m = unsafe {
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned b <= 0x1f: min(b, 0x1f) == b.
            let ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_or_si128(_mm_or_si128(quote, backslash), ctl)
        };
        movemask(m) as u32
    }

    #[inline]
    pub fn ascii64(block: &[u8; 64]) -> bool {
        let v = [
            load(block, 0),
            load(block, 16),
            load(block, 32),
            load(block, 48),
        ];
        // SAFETY: SSE2 is part of the x86_64 baseline; pure register arithmetic.
        let all = unsafe { _mm_or_si128(_mm_or_si128(v[0], v[1]), _mm_or_si128(v[2], v[3])) };
        movemask(all) == 0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn block<const N: usize>(bytes: &[u8]) -> [u8; N] {
        let mut b = [0u8; N];
        for (i, x) in b.iter_mut().enumerate() {
            *x = bytes[i % bytes.len()];
        }
        b
    }

    #[test]
    fn every_byte_value_in_every_lane() {
        for x in 0..=255u8 {
            for lane in 0..64 {
                let mut b = [b'a'; 64];
                b[lane] = x;
                let want = portable::anchors64(&b);
                let bit = |c: bool| u64::from(c) << lane;
                assert_eq!(want.digit, bit(x.is_ascii_digit()));
                assert_eq!(want.upper, bit(x.is_ascii_uppercase()));
                assert_eq!(want.sep, bit(x == b' ' || x == b'-'));
                assert_eq!(want.other, bit(x == b'@' || x == b'+'));
                assert_eq!(anchors64(&b), want, "{x} at {lane}");
                assert_eq!(ascii64(&b), x < 0x80);
                if lane < 16 {
                    let c: [u8; 16] = block(&b[..16]);
                    let want = portable::string_stops16(&c);
                    let stop = x == b'"' || x == b'\\' || x < 0x20;
                    assert_eq!(want, u32::from(stop) << lane);
                    assert_eq!(string_stops16(&c), want, "{x} at {lane}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn simd_agrees_with_portable(
            bytes in proptest::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    Just(b'0'), Just(b'9'), Just(b'@'), Just(b'+'), Just(b'"'), Just(b'\\'),
                    Just(0x1f), Just(0x20), Just(0x7f), Just(0x80), Just(0xff), Just(b'/'),
                    Just(b':'),
                ],
                1..200,
            )
        ) {
            let b64: [u8; 64] = block(&bytes);
            prop_assert_eq!(anchors64(&b64), portable::anchors64(&b64));
            prop_assert_eq!(ascii64(&b64), portable::ascii64(&b64));
            let b16: [u8; 16] = block(&bytes);
            prop_assert_eq!(string_stops16(&b16), portable::string_stops16(&b16));
            prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
        }
    }
}
