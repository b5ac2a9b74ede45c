//! Arbitrary request bodies, under every api key the policy layer knows and arbitrary versions,
//! through `authorize` with a check whose answers come from the input too. Beyond "no panic, no
//! out-of-bounds, no huge allocation" it asserts:
//! - a rewritten request is a well-formed frame with the original header (same api key,
//!   version, correlation id) and is never longer than the original;
//! - a local answer is a well-formed frame carrying the request's correlation id.
//!
//! Response rewrites are not fed arbitrary bytes: they decode the broker's answers with the
//! `kafka-protocol` crate, which sizes allocations from counts on the wire, so the broker (the
//! service the interceptor protects, on the same node) is trusted to speak the protocol.
#![no_main]

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

use bytes::{BufMut, BytesMut};
use interceptor::{
    kafka::{
        authz::{self, table, AuthzSettings, ConnectionState, Context, Outcome, TopicIds},
        header::request_header_version,
        RequestHeader,
    },
    policy::{AccessCheck, Check, Operation, Resource},
};
use libfuzzer_sys::fuzz_target;

/// Answers from a bit pattern: each call takes the next two bits.
struct Bits {
    pattern: u32,
    calls: AtomicU32,
}

impl Bits {
    fn next(&self) -> Check {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) % 16;
        match (self.pattern >> (2 * n)) & 3 {
            0 | 1 => Check::Allowed,
            2 => Check::Denied,
            _ => Check::Violation,
        }
    }
}

impl AccessCheck for Bits {
    fn check(&self, _: Operation, _: Resource<'_>) -> Check {
        self.next()
    }

    fn check_records(&self, _: &str, _: i32, _: &[u8]) -> Check {
        self.next()
    }
}

fn frame_len_ok(frame: &[u8]) -> bool {
    frame.len() >= 8
        && i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize == frame.len() - 4
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<6>() else {
        return;
    };
    let keys: Vec<i16> = table::all().map(|a| a.key).collect();
    let api_key = keys[usize::from(head[0]) % keys.len()];
    let api_version = i16::from(head[1] % 20);
    let pattern = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
    let body = rest;

    let mut f = BytesMut::new();
    f.put_i32(0);
    f.put_i16(api_key);
    f.put_i16(api_version);
    f.put_i32(7);
    f.put_i16(1);
    f.put_u8(b'f');
    if request_header_version(api_key, api_version) >= 2 {
        f.put_u8(0);
    }
    f.extend_from_slice(body);
    let len = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    let frame = f.freeze();
    let Ok(header) = RequestHeader::parse(&frame) else {
        return;
    };

    let check: Arc<dyn AccessCheck> = Arc::new(Bits {
        pattern,
        calls: AtomicU32::new(0),
    });
    let topic_ids = Arc::new(TopicIds::new(4));
    topic_ids.learn([1; 16], "known");
    let mut state = ConnectionState::default();
    let mut ctx = Context {
        check: &check,
        state: &mut state,
        topic_ids: &topic_ids,
        policy_generation: u64::from(head[0] & 1),
        settings: AuthzSettings::default(),
    };
    let outcome = authz::authorize(
        &authz::Request {
            header: &header,
            frame: &frame,
        },
        &mut ctx,
    );
    match outcome {
        Ok(Outcome::Rewrite { frame: out, .. }) => {
            assert!(frame_len_ok(&out), "rewritten request framing");
            assert!(out.len() <= frame.len(), "a rewrite only removes");
            let again = RequestHeader::parse(&out).expect("rewritten header parses");
            assert_eq!(
                (again.api_key, again.api_version, again.correlation_id),
                (header.api_key, header.api_version, header.correlation_id)
            );
        }
        Ok(Outcome::Respond(answer)) => {
            assert!(frame_len_ok(&answer), "local answer framing");
            assert_eq!(&answer[4..8], &7i32.to_be_bytes(), "correlation id");
        }
        Ok(Outcome::FilterResponse(_) | Outcome::Forward | Outcome::Drop) | Err(_) => {}
    }
});
