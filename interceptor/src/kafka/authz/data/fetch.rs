//! Fetch (1), v4–v18.
//!
//! A follower's fetch (replica id ≥ 0 before v15, a ReplicaState tagged field from v15) needs
//! cluster-action and nothing else, as in Kafka. A consumer's fetch needs consume on each
//! topic it names (v13+ by id, resolved through the shared map). Incremental requests of a
//! fetch session (KIP-227) only go on when the session was authorized under the current
//! policy (see [`super::sessions`]).
//!
//! All allowed is forwarded untouched: Fetch responses are the largest frames relayed, so only
//! a partly refused request decodes the broker's answer (records stay reference-counted
//! `Bytes`), to add the refused topics with TOPIC_AUTHORIZATION_FAILED. When every named topic
//! of an incremental request is refused, the request still goes on without them: the
//! session's other partitions may have data, and skipping the request would leave the
//! client's session epoch ahead of the broker's.

use kafka_protocol::messages::{
    fetch_response::{FetchableTopicResponse, PartitionData},
    FetchResponse,
};

use super::{
    check_topics, find_tag, keyed_plans, merge_topics, name_or_id, parse_body, parse_topic_array,
    resolve_all, splice_topics, topic_entry, topic_name, topics_response, uuid, verdict, ArraySpan,
    Authorized, Key, Naming, Plan, Refusal, TopicSpan, Verdict, FETCH,
};
use crate::{
    kafka::{
        authz::{
            response::{decode_response, encode_response, FETCH_SESSION_ID_NOT_FOUND},
            Context, Outcome, Request,
        },
        wire::Reader,
        HeaderError,
    },
    policy::{Operation, Resource, ResourceKind},
};

const API: &str = "Fetch";
/// The ReplicaState tagged field of a v15+ request (KIP-903).
const REPLICA_STATE_TAG: u32 = 1;

struct Parsed<'a> {
    replica_id: i32,
    session_id: i32,
    session_epoch: i32,
    array: ArraySpan,
    topics: Vec<TopicSpan<'a>>,
}

fn parse(frame: &[u8], body: usize, version: i16) -> Result<Parsed<'_>, HeaderError> {
    let flexible = version >= 12;
    let mut r = Reader::at(frame, body, "fetch body")?;
    let mut replica_id = if version <= 14 {
        r.i32("replica id")?
    } else {
        -1
    };
    // max wait, min bytes, max bytes, isolation level
    r.skip(13, "fetch limits")?;
    let (session_id, session_epoch) = if version >= 7 {
        (r.i32("session id")?, r.i32("session epoch")?)
    } else {
        (0, -1)
    };
    let naming = if version >= 13 {
        Naming::Id
    } else {
        Naming::Name
    };
    let mut partition = |r: &mut Reader<'_>| {
        let index = r.i32("partition")?;
        if version >= 9 {
            r.i32("current leader epoch")?;
        }
        r.i64("fetch offset")?;
        if version >= 12 {
            r.i32("last fetched epoch")?;
        }
        if version >= 5 {
            r.i64("log start offset")?;
        }
        r.i32("partition max bytes")?;
        r.tagged(flexible, "partition tagged fields")?;
        Ok(index)
    };
    let (array, topics) =
        parse_topic_array(&mut r, frame, flexible, naming, Some((&mut partition, 16)))?;
    if version >= 7 {
        // Forgotten topics: left to the broker, parsed only to reach what follows.
        let mut index = |r: &mut Reader<'_>| r.i32("forgotten partition");
        parse_topic_array(&mut r, frame, flexible, naming, Some((&mut index, 4)))?;
    }
    if version >= 11 {
        r.string(flexible, "rack id")?;
    }
    if flexible {
        if let Some(state) = find_tag(&mut r, REPLICA_STATE_TAG, "fetch tagged fields")? {
            // Bounded by the field's own size: a short field is malformed, not read on.
            let field = frame.get(..state.end).unwrap_or_default();
            let mut state = Reader::at(field, state.start, "replica state")?;
            replica_id = state.i32("replica state replica id")?;
        }
    }
    Ok(Parsed {
        replica_id,
        session_id,
        session_epoch,
        array,
        topics,
    })
}

pub(super) fn authorize(request: &Request<'_>, ctx: &mut Context<'_>) -> Authorized {
    let version = request.header.api_version;
    let frame: &[u8] = request.frame;
    let parsed = parse_body(request, parse)?;
    let by_id = version >= 13;
    let respond = |body: &FetchResponse| {
        encode_response(FETCH, version, request.header.correlation_id, body, API)
            .map(Outcome::Respond)
    };

    if parsed.replica_id >= 0 {
        let check = ctx
            .check
            .check(Operation::ClusterAction, Resource::cluster());
        if check.is_allowed() {
            return Ok(Outcome::Forward);
        }
        // Kafka answers a follower without cluster-action with TOPIC_AUTHORIZATION_FAILED on
        // every partition.
        let refusal = Refusal::of(check, ResourceKind::Topic);
        let plans = parsed.topics.iter().map(|t| Plan::whole(t, refusal));
        let plan = keyed_plans(&parsed.topics, plans.collect());
        return respond(&FetchResponse::default().with_responses(merge_topics(
            Vec::new(),
            &plan,
            by_id,
        )));
    }

    let sessions = version >= 7;
    let incremental = sessions && parsed.session_epoch > 0;
    let generation = ctx.policy_generation;
    if incremental
        && !ctx
            .state
            .fetch
            .incremental(parsed.session_id, parsed.session_epoch, generation)
    {
        return respond(&FetchResponse::default().with_error_code(FETCH_SESSION_ID_NOT_FOUND));
    }

    let names = resolve_all(&parsed.topics, ctx.topic_ids);
    let refusals = check_topics(&parsed.topics, &names, &**ctx.check, Operation::Consume);
    let plans: Vec<Plan> = parsed
        .topics
        .iter()
        .zip(refusals)
        .map(|(t, refusal)| Plan::whole(t, refusal))
        .collect();
    let verdict = verdict(&plans);
    if sessions && !incremental {
        if verdict == Verdict::NoneForwarded {
            ctx.state
                .fetch
                .full_fetch_answered_locally(parsed.session_id);
        } else {
            let state = &mut ctx.state.fetch;
            state.full_fetch(parsed.session_id, parsed.session_epoch, generation);
        }
    }
    match verdict {
        Verdict::AllForwarded => Ok(Outcome::Forward),
        Verdict::NoneForwarded if !incremental => {
            let plan = keyed_plans(&parsed.topics, plans);
            respond(&FetchResponse::default().with_responses(merge_topics(
                Vec::new(),
                &plan,
                by_id,
            )))
        }
        Verdict::NoneForwarded | Verdict::Some => {
            let spliced = splice_topics(
                frame,
                &parsed.array,
                &parsed.topics,
                version >= 12,
                |t| plans[t].forwards(),
                |t, p| plans[t].forwards_part(p),
            )
            .finish();
            let plan = keyed_plans(&parsed.topics, plans);
            Ok(Outcome::Rewrite {
                frame: spliced,
                response: Some(Box::new(move |answer| {
                    let (correlation_id, mut body): (i32, FetchResponse) =
                        decode_response(FETCH, version, &answer, API)?;
                    let broker = std::mem::take(&mut body.responses);
                    body.responses = merge_topics(broker, &plan, by_id);
                    encode_response(FETCH, version, correlation_id, &body, API)
                })),
            })
        }
    }
}

topics_response!(FetchResponse => responses: FetchableTopicResponse);

topic_entry!(FetchableTopicResponse {
    parts: partitions: PartitionData,
    index: partition_index,
    // As Kafka's own error partition: no watermark, no records.
    refused: |index, refusal| PartitionData::default()
        .with_partition_index(index)
        .with_error_code(refusal.code)
        .with_high_watermark(-1)
        .with_aborted_transactions(None),
} {
    fn key(&self, by_id: bool) -> Key {
        name_or_id(by_id, &self.topic, self.topic_id)
    }

    fn new_entry(key: &Key, parts: Vec<PartitionData>) -> Self {
        let entry = Self::default().with_partitions(parts);
        match key {
            Key::Name(name) => entry.with_topic(topic_name(name)),
            Key::Id(id) => entry.with_topic_id(uuid(*id)),
        }
    }
});

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::{
        fetch_request::{FetchPartition, FetchTopic, ForgottenTopic, ReplicaState},
        ApiKey, FetchRequest,
    };

    use super::super::test_support::*;
    use super::*;
    use crate::kafka::authz::response::{TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_ID};

    const VERSIONS: [i16; 7] = [4, 7, 11, 12, 13, 15, 18];

    struct Req {
        version: i16,
        replica: i32,
        session: (i32, i32),
        topics: Vec<(&'static str, u8, Vec<i32>)>,
    }

    impl Req {
        fn new(version: i16) -> Self {
            Self {
                version,
                replica: -1,
                session: (0, if version >= 7 { 0 } else { -1 }),
                topics: vec![
                    ("a", 1, vec![0, 1]),
                    ("secret", 2, vec![0]),
                    ("b", 3, vec![2]),
                ],
            }
        }

        fn frame(&self) -> Bytes {
            let v = self.version;
            let topics = self
                .topics
                .iter()
                .map(|(name, id, parts)| {
                    let t = FetchTopic::default().with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(10)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    );
                    if v >= 13 {
                        t.with_topic_id(uuid_of(*id))
                    } else {
                        t.with_topic(topic(name))
                    }
                })
                .collect();
            let mut body = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_topics(topics)
                .with_session_id(self.session.0)
                .with_session_epoch(self.session.1);
            if v >= 7 {
                let forgotten = ForgottenTopic::default().with_partitions(vec![7]);
                body.forgotten_topics_data = vec![if v >= 13 {
                    forgotten.with_topic_id(uuid_of(9))
                } else {
                    forgotten.with_topic(topic("old"))
                }];
            }
            if v >= 11 {
                body.rack_id = kafka_protocol::protocol::StrBytes::from_static_str("rack-1");
            }
            if v >= 15 {
                if self.replica >= 0 {
                    body.replica_state = ReplicaState::default()
                        .with_replica_id(self.replica.into())
                        .with_replica_epoch(1);
                }
            } else {
                body.replica_id = self.replica.into();
            }
            frame(ApiKey::Fetch, v, &body)
        }
    }

    fn harness(fake: std::sync::Arc<Fake>) -> Harness {
        let h = Harness::new(fake);
        for (n, name) in [(1, "a"), (2, "secret"), (3, "b")] {
            h.ids.learn(uuid_of(n).into_bytes(), name);
        }
        h
    }

    fn label(t: &FetchableTopicResponse) -> String {
        if t.topic.is_empty() {
            format!("id{}", t.topic_id.as_bytes()[15])
        } else {
            t.topic.to_string()
        }
    }

    fn codes(resp: &FetchResponse) -> Vec<(String, i32, i16)> {
        resp.responses
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (label(t), p.partition_index, p.error_code))
            })
            .collect()
    }

    fn broker_entry(version: i16, name: &str, id: u8, parts: &[i32]) -> FetchableTopicResponse {
        let entry = FetchableTopicResponse::default().with_partitions(
            parts
                .iter()
                .map(|&p| {
                    PartitionData::default()
                        .with_partition_index(p)
                        .with_high_watermark(99)
                        .with_records(Some(Bytes::from_static(b"batch")))
                })
                .collect(),
        );
        if version >= 13 {
            entry.with_topic_id(uuid_of(id))
        } else {
            entry.with_topic(topic(name))
        }
    }

    #[test]
    fn allowed_fetches_are_forwarded() {
        for version in VERSIONS {
            let mut h = harness(Fake::allow_all());
            assert!(matches!(
                h.run(&Req::new(version).frame()).unwrap(),
                Outcome::Forward
            ));
            assert_eq!(
                h.fake.calls(),
                ["consume topic:a", "consume topic:secret", "consume topic:b"],
                "v{version}"
            );
        }
    }

    #[test]
    fn refused_topics_are_spliced_out_and_answered_in_request_order() {
        for version in VERSIONS {
            let mut h = harness(Fake::denying(&[(Operation::Consume, "secret")]));
            let (spliced, rewrite) = outcome_frame(h.run(&Req::new(version).frame()).unwrap());
            let fwd: FetchRequest = decode_request(ApiKey::Fetch, &spliced);
            assert_eq!(fwd.topics.len(), 2, "v{version}");
            assert_eq!(fwd.topics[1].partitions[0].partition, 2);
            assert_eq!(fwd.max_wait_ms, 500);
            if version >= 7 {
                assert_eq!(fwd.forgotten_topics_data.len(), 1, "forgotten topics stay");
            }
            if version >= 11 {
                assert_eq!(fwd.rack_id.as_str(), "rack-1");
            }
            let broker = FetchResponse::default().with_responses(vec![
                broker_entry(version, "b", 3, &[2]),
                broker_entry(version, "a", 1, &[0, 1]),
            ]);
            let merged =
                rewrite.unwrap()(broker_response(ApiKey::Fetch, version, &broker)).unwrap();
            let resp: FetchResponse = decode_answer(ApiKey::Fetch, version, &merged);
            let (a, s, b) = if version >= 13 {
                ("id1", "id2", "id3")
            } else {
                ("a", "secret", "b")
            };
            assert_eq!(
                codes(&resp),
                [
                    (a.into(), 0, 0),
                    (a.into(), 1, 0),
                    (s.into(), 0, TOPIC_AUTHORIZATION_FAILED),
                    (b.into(), 2, 0)
                ],
                "v{version}"
            );
            let refused = &resp.responses[1].partitions[0];
            assert_eq!(refused.high_watermark, -1);
            assert!(refused.records.as_ref().is_none_or(|r| r.is_empty()));
            assert_eq!(
                resp.responses[0].partitions[0].records.as_deref(),
                Some(&b"batch"[..])
            );
        }
    }

    #[test]
    fn a_fully_refused_full_fetch_is_answered_locally() {
        for version in VERSIONS {
            let mut h = harness(Fake::denying(&[
                (Operation::Consume, "a"),
                (Operation::Consume, "secret"),
                (Operation::Consume, "b"),
            ]));
            let out = respond_frame(h.run(&Req::new(version).frame()).unwrap());
            let resp: FetchResponse = decode_answer(ApiKey::Fetch, version, &out);
            assert_eq!(resp.session_id, 0);
            assert_eq!(codes(&resp).len(), 4);
            assert!(codes(&resp)
                .iter()
                .all(|c| c.2 == TOPIC_AUTHORIZATION_FAILED));
        }
    }

    #[test]
    fn followers_need_cluster_action_only() {
        for version in [4, 14, 15, 18] {
            let mut req = Req::new(version);
            req.replica = 3;
            let mut h = harness(Fake::allow_all());
            assert!(matches!(h.run(&req.frame()).unwrap(), Outcome::Forward));
            assert_eq!(h.fake.calls(), ["cluster-action cluster:kafka-cluster"]);
            let mut h = harness(Fake::denying(&[(
                Operation::ClusterAction,
                "kafka-cluster",
            )]));
            let out = respond_frame(h.run(&req.frame()).unwrap());
            let resp: FetchResponse = decode_answer(ApiKey::Fetch, version, &out);
            assert_eq!(codes(&resp).len(), 4, "v{version}");
            assert!(codes(&resp)
                .iter()
                .all(|c| c.2 == TOPIC_AUTHORIZATION_FAILED));
        }
    }

    #[test]
    fn unknown_topic_ids_are_refused_without_a_check() {
        let mut h = Harness::new(Fake::allow_all());
        h.ids.learn(uuid_of(1).into_bytes(), "a");
        h.ids.learn(uuid_of(3).into_bytes(), "b");
        let (spliced, rewrite) = outcome_frame(h.run(&Req::new(13).frame()).unwrap());
        assert_eq!(h.fake.calls(), ["consume topic:a", "consume topic:b"]);
        let fwd: FetchRequest = decode_request(ApiKey::Fetch, &spliced);
        assert_eq!(fwd.topics.len(), 2);
        let merged = rewrite.unwrap()(broker_response(
            ApiKey::Fetch,
            13,
            &FetchResponse::default(),
        ))
        .unwrap();
        let resp: FetchResponse = decode_answer(ApiKey::Fetch, 13, &merged);
        assert_eq!(codes(&resp), [("id2".into(), 0, UNKNOWN_TOPIC_ID)]);
    }

    #[test]
    fn incremental_sessions_are_refused_once_the_policy_changes() {
        for version in [7, 12, 18] {
            let mut h = harness(Fake::allow_all());
            let full = Req::new(version);
            assert!(matches!(h.run(&full.frame()).unwrap(), Outcome::Forward));
            // The broker gave the session id 42; the client's next request is incremental.
            let mut inc = Req::new(version);
            inc.session = (42, 1);
            inc.topics.clear();
            assert!(matches!(h.run(&inc.frame()).unwrap(), Outcome::Forward));
            inc.session = (42, 2);
            inc.topics = vec![("b", 3, vec![5])];
            assert!(matches!(h.run(&inc.frame()).unwrap(), Outcome::Forward));
            assert_eq!(h.fake.calls().last().unwrap(), "consume topic:b");

            h.generation += 1;
            let calls = h.fake.calls().len();
            inc.session = (42, 3);
            let out = respond_frame(h.run(&inc.frame()).unwrap());
            let resp: FetchResponse = decode_answer(ApiKey::Fetch, version, &out);
            assert_eq!(resp.error_code, FETCH_SESSION_ID_NOT_FOUND);
            assert!(resp.responses.is_empty());
            assert_eq!(h.fake.calls().len(), calls, "no checks for a stale session");
            // An unknown session is refused the same way.
            inc.session = (7, 5);
            let out = respond_frame(h.run(&inc.frame()).unwrap());
            let resp: FetchResponse = decode_answer(ApiKey::Fetch, version, &out);
            assert_eq!(resp.error_code, FETCH_SESSION_ID_NOT_FOUND);
        }
    }

    #[test]
    fn an_incremental_fetch_naming_only_refused_topics_still_goes_on() {
        let mut h = harness(Fake::denying(&[(Operation::Consume, "secret")]));
        let mut full = Req::new(12);
        full.topics = vec![("a", 1, vec![0])];
        assert!(matches!(h.run(&full.frame()).unwrap(), Outcome::Forward));
        let mut inc = Req::new(12);
        inc.session = (42, 1);
        inc.topics = vec![("secret", 2, vec![0])];
        let (spliced, rewrite) = outcome_frame(h.run(&inc.frame()).unwrap());
        let fwd: FetchRequest = decode_request(ApiKey::Fetch, &spliced);
        assert!(fwd.topics.is_empty());
        assert_eq!((fwd.session_id, fwd.session_epoch), (42, 1));
        let broker = FetchResponse::default()
            .with_session_id(42)
            .with_responses(vec![broker_entry(12, "a", 1, &[0])]);
        let merged = rewrite.unwrap()(broker_response(ApiKey::Fetch, 12, &broker)).unwrap();
        let resp: FetchResponse = decode_answer(ApiKey::Fetch, 12, &merged);
        assert_eq!(resp.session_id, 42);
        assert_eq!(
            codes(&resp),
            [
                ("secret".into(), 0, TOPIC_AUTHORIZATION_FAILED),
                ("a".into(), 0, 0)
            ]
        );
    }

    #[test]
    fn truncated_and_garbage_requests_are_malformed() {
        for version in VERSIONS {
            let mut req = Req::new(version);
            if version >= 15 {
                req.replica = 1;
            }
            let frame = req.frame();
            assert_truncations_are_malformed(&frame);
            assert_garbage_is_no_panic(&frame);
        }
    }
}
