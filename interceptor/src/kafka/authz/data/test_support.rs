//! Test helpers: a recording checker, request frames encoded with the crate, and running
//! `authorize` on them.

use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, RequestHeader as CrateHeader},
    protocol::{Decodable, Encodable, StrBytes},
};

use super::super::{
    response::encode_response, AuthzError, ConnectionState, Context, Outcome, Request, TopicIds,
};
use crate::{
    kafka::RequestHeader,
    policy::{AccessCheck, Check, Operation, Resource},
};

pub const CORRELATION_ID: i32 = 77;

/// Allows everything except what it is told; records every call as "op kind:name" or
/// "records topic/partition".
#[derive(Default)]
pub struct Fake {
    deny: Vec<(Operation, String)>,
    violate: Vec<(String, i32)>,
    pub calls: Mutex<Vec<String>>,
}

impl Fake {
    pub fn allow_all() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn denying(deny: &[(Operation, &str)]) -> Arc<Self> {
        Arc::new(Self {
            deny: deny.iter().map(|(op, n)| (*op, n.to_string())).collect(),
            ..Self::default()
        })
    }

    pub fn with_violations(deny: &[(Operation, &str)], violate: &[(&str, i32)]) -> Arc<Self> {
        Arc::new(Self {
            deny: deny.iter().map(|(op, n)| (*op, n.to_string())).collect(),
            violate: violate.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            ..Self::default()
        })
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl AccessCheck for Fake {
    fn check(&self, op: Operation, resource: Resource<'_>) -> Check {
        self.calls.lock().unwrap().push(format!("{op} {resource}"));
        if self
            .deny
            .iter()
            .any(|(o, n)| *o == op && n == resource.name)
        {
            Check::Denied
        } else {
            Check::Allowed
        }
    }

    fn check_records(&self, topic: &str, partition: i32, _records: &[u8]) -> Check {
        self.calls
            .lock()
            .unwrap()
            .push(format!("records {topic}/{partition}"));
        if self
            .violate
            .iter()
            .any(|(t, p)| t == topic && *p == partition)
        {
            Check::Violation
        } else {
            Check::Allowed
        }
    }
}

/// A request frame: length prefix, the header version the key uses, the body.
pub fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
    let header = CrateHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("test-client")));
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// Decodes a (spliced) request frame's body with the crate.
pub fn decode_request<T: Decodable>(key: ApiKey, frame: &Bytes) -> T {
    let header = RequestHeader::parse(frame).unwrap();
    let mut body = frame.slice(header.body_offset..);
    let decoded = T::decode(&mut body, header.api_version).unwrap();
    assert!(body.is_empty(), "{key:?}: bytes left after the body");
    decoded
}

/// Decodes a response frame the interceptor wrote or rewrote.
pub fn decode_answer<T: Decodable>(key: ApiKey, version: i16, frame: &Bytes) -> T {
    let (id, body) =
        super::super::response::decode_response::<T>(key as i16, version, frame, "test").unwrap();
    assert_eq!(id, CORRELATION_ID);
    body
}

/// A broker's answer, as a frame.
pub fn broker_response<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
    encode_response(key as i16, version, CORRELATION_ID, body, "test").unwrap()
}

/// Everything one test needs for `authorize`.
pub struct Harness {
    pub fake: Arc<Fake>,
    pub check: Arc<dyn AccessCheck>,
    pub state: ConnectionState,
    pub ids: Arc<TopicIds>,
    pub generation: u64,
}

impl Harness {
    pub fn new(fake: Arc<Fake>) -> Self {
        Self {
            check: fake.clone(),
            fake,
            state: ConnectionState::default(),
            ids: Arc::new(TopicIds::new(100)),
            generation: 1,
        }
    }

    pub fn run(&mut self, frame: &Bytes) -> Result<Outcome, AuthzError> {
        let header = RequestHeader::parse(frame).unwrap();
        let request = Request {
            header: &header,
            frame,
        };
        let mut ctx = Context {
            check: &self.check,
            state: &mut self.state,
            topic_ids: &self.ids,
            policy_generation: self.generation,
            settings: Default::default(),
        };
        super::super::authorize(&request, &mut ctx)
    }
}

/// Every truncation of a valid request is malformed, never a panic, never a decision.
pub fn assert_truncations_are_malformed(frame: &Bytes) {
    let header = RequestHeader::parse(frame).unwrap();
    for cut in header.body_offset..frame.len() {
        let mut cut_frame = BytesMut::from(&frame[..cut]);
        let len = (cut - 4) as i32;
        cut_frame[..4].copy_from_slice(&len.to_be_bytes());
        let cut_frame = cut_frame.freeze();
        let mut h = Harness::new(Fake::allow_all());
        match h.run(&cut_frame) {
            Err(AuthzError::Malformed { .. }) => {}
            other => panic!("cut at {cut} of {}: {other:?}", frame.len()),
        }
        assert!(
            h.fake.calls().is_empty(),
            "cut at {cut}: checked a partial request"
        );
    }
}

/// Garbage after a valid header: never a panic.
pub fn assert_garbage_is_no_panic(frame: &Bytes) {
    let header = RequestHeader::parse(frame).unwrap();
    let mut seed = 0x2545_f491_u32;
    for round in 0..300 {
        let mut out = BytesMut::from(&frame[..header.body_offset]);
        let len = (round * 7) % 200;
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            // Mostly small bytes, so counts and lengths look plausible.
            out.put_u8(if seed % 3 == 0 {
                seed as u8
            } else {
                (seed % 4) as u8
            });
        }
        let n = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&n.to_be_bytes());
        let _ = Harness::new(Fake::allow_all()).run(&out.freeze());
    }
}

pub fn topic(name: &str) -> kafka_protocol::messages::TopicName {
    StrBytes::from_string(name.to_owned()).into()
}

pub fn uuid_of(n: u8) -> uuid::Uuid {
    let mut id = [0; 16];
    id[0] = 0xab;
    id[15] = n;
    uuid::Uuid::from_bytes(id)
}

pub fn outcome_frame(outcome: Outcome) -> (Bytes, Option<super::super::ResponseRewrite>) {
    match outcome {
        Outcome::Rewrite { frame, response } => (frame, response),
        other => panic!("expected Rewrite, got {other:?}"),
    }
}

pub fn respond_frame(outcome: Outcome) -> Bytes {
    match outcome {
        Outcome::Respond(frame) => frame,
        other => panic!("expected Respond, got {other:?}"),
    }
}
