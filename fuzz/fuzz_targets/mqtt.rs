//! Arbitrary bytes through the MQTT codec as the session runs it: split into packets, each
//! decoded as a CONNECT and as a packet of either version. Beyond "no panic, no out-of-bounds,
//! no huge allocation" it asserts:
//! - each packet is exactly the next bytes of the input, and what is not returned stays;
//! - every packet that decodes encodes to bytes that decode to the same packet;
//! - topic filters that parse give the same answer to `covers` themselves and to `overlaps`
//!   with themselves (a filter matches at least one topic).
#![no_main]

use bytes::BytesMut;
use interceptor::mqtt::{
    codec::{decode, decode_connect, split_packet, Limits, Packet, Version},
    topic::{parse_shared, TopicFilter},
};
use libfuzzer_sys::fuzz_target;

/// Small enough that "too large" and "topic too long" come up often.
const LIMITS: Limits = Limits {
    max_packet_bytes: 4096,
    max_topic_bytes: 64,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match split_packet(&mut buf, &LIMITS) {
            Ok(Some(raw)) => {
                assert_eq!(raw.frame.len(), before - buf.len());
                assert_eq!(&raw.frame[..], &data[consumed..consumed + raw.frame.len()]);
                consumed += raw.frame.len();
                if let Ok(c) = decode_connect(&raw, &LIMITS) {
                    check_round_trip(&Packet::Connect(c.clone()), c.version);
                }
                for version in [Version::V311, Version::V5] {
                    if let Ok(p) = decode(&raw, version, &LIMITS) {
                        check_round_trip(&p, version);
                        check_filters(&p);
                    }
                }
            }
            Ok(None) | Err(_) => {
                assert_eq!(&buf[..], &data[consumed..]);
                return;
            }
        }
    }
});

fn check_round_trip(p: &Packet, version: Version) {
    let mut out = BytesMut::new();
    p.encode(version, &mut out);
    let big = Limits {
        max_packet_bytes: 1 << 20,
        max_topic_bytes: 1 << 16,
    };
    let raw = split_packet(&mut out, &big)
        .expect("an encoded packet frames")
        .expect("an encoded packet is whole");
    assert!(out.is_empty(), "bytes after an encoded packet");
    let back = match p {
        Packet::Connect(_) => decode_connect(&raw, &big).map(Packet::Connect),
        _ => decode(&raw, version, &big),
    };
    assert_eq!(back.as_ref(), Ok(p), "round trip of {p:?}");
}

fn check_filters(p: &Packet) {
    let texts: Vec<&str> = match p {
        Packet::Subscribe(s) => s.filters.iter().map(|(f, _)| f.as_str()).collect(),
        Packet::Unsubscribe(u) => u.filters.iter().map(String::as_str).collect(),
        _ => return,
    };
    for text in texts {
        let filter = match parse_shared(text) {
            Ok(Some((_, f))) => f,
            Ok(None) => text,
            Err(_) => continue,
        };
        if let Ok(f) = TopicFilter::parse(filter) {
            assert!(f.covers(&f), "{f} covers itself");
            assert!(f.overlaps(&f), "{f} overlaps itself");
        }
    }
}
