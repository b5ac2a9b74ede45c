//! Arbitrary bytes, arriving in arbitrary chunks, through everything the data path runs on a
//! frame before any filter: framing, the request header, Produce acks, the response header,
//! ApiVersions trimming. Beyond "no panic, no out-of-bounds, no huge allocation" (libFuzzer's
//! malloc limit turns those into crashes) it asserts:
//! - each frame is exactly the next bytes of the input, its prefix giving its length;
//! - what framing has not returned stays in the buffer, untouched;
//! - parsed offsets lie inside the frame and the client id is the bytes at its place;
//! - a trimmed ApiVersions response is a well-formed frame that trimming leaves alone.
#![no_main]

use bytes::{Bytes, BytesMut};
use interceptor::kafka::{
    api_versions::trim_api_versions_response,
    frame::LENGTH_PREFIX,
    header::{response_body_offset, response_correlation_id},
    produce::produce_acks,
    split_frame, RequestHeader,
};
use libfuzzer_sys::fuzz_target;

/// Small enough that libFuzzer reaches "oversized" often; large enough for real ApiVersions.
const MAX_FRAME_BYTES: usize = 16 * 1024;

/// Response (api key, version) pairs tried on every frame: flexible and classic headers,
/// ApiVersions (always header v0), a vendor key.
const RESPONSE_KINDS: &[(i16, i16)] = &[(3, 12), (3, 8), (18, 3), (0, 9), (10000, 1)];

fuzz_target!(|data: &[u8]| {
    // The first two bytes seed the chunk sizes; the rest is the byte stream.
    let Some((seed, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    feed_in_chunks(u16::from_be_bytes(*seed), stream);
});

/// Feeds `stream` to `split_frame` the way socket reads would, checking every frame.
fn feed_in_chunks(seed: u16, stream: &[u8]) {
    let mut chunks = Chunks(u32::from(seed) | 1);
    let mut buf = BytesMut::new();
    let mut fed = 0; // bytes of `stream` appended to `buf`
    let mut framed = 0; // bytes of `stream` returned as frames
    while fed < stream.len() {
        let n = chunks.next().min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            match split_frame(&mut buf, MAX_FRAME_BYTES) {
                Ok(Some(frame)) => {
                    check_frame(&frame, &stream[framed..]);
                    framed += frame.len();
                    exercise(&frame);
                }
                Ok(None) => break,
                Err(_) => return, // the session would close the connection here
            }
        }
        assert_eq!(
            &buf[..],
            &stream[framed..fed],
            "unframed bytes must stay as received"
        );
    }
}

/// A frame is the next bytes of the input, and its prefix is its length.
fn check_frame(frame: &Bytes, rest_of_stream: &[u8]) {
    assert!(frame.len() >= LENGTH_PREFIX);
    assert_eq!(&frame[..], &rest_of_stream[..frame.len()]);
    let declared = i32::from_be_bytes(frame[..4].try_into().unwrap());
    assert_eq!(
        usize::try_from(declared).unwrap(),
        frame.len() - LENGTH_PREFIX
    );
    assert!(frame.len() - LENGTH_PREFIX <= MAX_FRAME_BYTES);
}

/// Runs every parser on the frame, read both as a request and as a response.
fn exercise(frame: &Bytes) {
    if let Ok(header) = RequestHeader::parse(frame) {
        check_header(frame, &header);
        let _ = produce_acks(frame, &header);
        // Read it as a Produce whatever its key, to reach the acks parser more often.
        let _ = produce_acks(
            frame,
            &RequestHeader {
                api_key: 0,
                ..header.clone()
            },
        );
        let _ = response_body_offset(frame, header.api_key, header.api_version);
        check_trim(frame, header.api_version);
    }
    let _ = response_correlation_id(frame);
    for &(api_key, api_version) in RESPONSE_KINDS {
        if let Ok(offset) = response_body_offset(frame, api_key, api_version) {
            assert!(offset <= frame.len());
        }
    }
    for request_version in 0..=5 {
        check_trim(frame, request_version);
    }
}

fn check_header(frame: &Bytes, header: &RequestHeader) {
    assert!(header.body_offset <= frame.len());
    assert_eq!(&frame[4..6], &header.api_key.to_be_bytes());
    assert_eq!(&frame[6..8], &header.api_version.to_be_bytes());
    assert_eq!(&frame[8..12], &header.correlation_id.to_be_bytes());
    match &header.client_id {
        Some(client_id) => assert_eq!(&frame[14..14 + client_id.len()], &client_id[..]),
        None => assert_eq!(&frame[12..14], &[0xff, 0xff]),
    }
    let _ = header.client_id_lossy();
}

/// Trimming either errs, changes nothing, or makes a frame that trims to itself.
fn check_trim(frame: &Bytes, request_version: i16) {
    let Ok(Some(trimmed)) = trim_api_versions_response(frame, request_version) else {
        return;
    };
    let declared = i32::from_be_bytes(trimmed[..4].try_into().unwrap());
    assert_eq!(
        usize::try_from(declared).unwrap(),
        trimmed.len() - LENGTH_PREFIX
    );
    assert_eq!(
        response_correlation_id(&trimmed),
        response_correlation_id(frame)
    );
    assert_eq!(
        trim_api_versions_response(&trimmed, request_version),
        Ok(None),
        "trimming must be idempotent"
    );
}

/// Chunk sizes from a xorshift generator: mostly small reads, sometimes large ones, so frame
/// boundaries fall everywhere inside a chunk and across chunks.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        let r = self.0 as usize;
        if r % 8 == 0 {
            1 + r % 4096
        } else {
            1 + r % 16
        }
    }
}
