//! Produce (0), v3–v13: the transactional id, then each topic, then each partition's records.
//!
//! A refused transactional id refuses the whole request (Kafka answers every partition with
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED). Otherwise refusals are per partition: a topic that
//! may not be written refuses all its partitions, and records a blocking rule refuses refuse
//! their partition with POLICY_VIOLATION. acks=0 requests get no answer at all, so their
//! refused partitions are only dropped.

use std::ops::Range;

use kafka_protocol::messages::{
    produce_response::{PartitionProduceResponse, TopicProduceResponse},
    ProduceResponse,
};

use super::{
    keyed_plans, merge_topics, message, min_bytes, name_or_id, parse_body, resolve_all,
    splice_topics, topic_entry, utf8, uuid, verdict, ArraySpan, Authorized, Checks, Key, PartSpan,
    Plan, Refusal, TopicSpan, Verdict, PRODUCE,
};
use crate::{
    kafka::{
        authz::{
            response::{decode_response, encode_response},
            Context, Outcome, Request,
        },
        wire::Reader,
        HeaderError,
    },
    policy::{Operation, Resource, ResourceKind},
};

const API: &str = "Produce";

/// The parts of a Produce request the checks need.
struct Parsed<'a> {
    transactional_id: Option<&'a str>,
    acks: i16,
    array: ArraySpan,
    topics: Vec<TopicSpan<'a>>,
}

fn parse(frame: &[u8], body: usize, version: i16) -> Result<Parsed<'_>, HeaderError> {
    let flexible = version >= 9;
    let mut r = Reader::at(frame, body, "produce body")?;
    let transactional_id = r
        .nullable_str(flexible, "transactional id")?
        .map(|range| utf8(frame, range, "transactional id"))
        .transpose()?;
    let acks = r.i16("acks")?;
    r.i32("timeout")?;
    let count_at = r.pos();
    // A topic is at least a name or id and a partition count (and a tag section).
    let n = r.count(flexible, min_bytes(flexible, 6, 3), "produce topics")?;
    let count = count_at..r.pos();
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let start = r.pos();
        let (name, id) = if version >= 13 {
            (None, r.uuid("topic id")?)
        } else {
            let range = r.string(flexible, "topic name")?;
            (Some(utf8(frame, range, "topic name")?), [0; 16])
        };
        let parts_at = r.pos();
        // A partition is at least an index and a records length.
        let np = r.count(flexible, min_bytes(flexible, 8, 6), "produce partitions")?;
        let parts_count = parts_at..r.pos();
        let mut parts = Vec::with_capacity(np);
        for _ in 0..np {
            let part_start = r.pos();
            let index = r.i32("partition index")?;
            let records = r.nullable_bytes(flexible, "records")?;
            r.tagged(flexible, "partition tagged fields")?;
            parts.push(PartSpan {
                index,
                span: part_start..r.pos(),
                records: records.unwrap_or(r.pos()..r.pos()),
            });
        }
        r.tagged(flexible, "topic tagged fields")?;
        topics.push(TopicSpan {
            name,
            id,
            span: start..r.pos(),
            parts_count,
            parts,
        });
    }
    let array = ArraySpan {
        count,
        end: r.pos(),
    };
    r.tagged(flexible, "produce tagged fields")?;
    Ok(Parsed {
        transactional_id,
        acks,
        array,
        topics,
    })
}

pub(super) fn authorize(request: &Request<'_>, ctx: &mut Context<'_>) -> Authorized {
    let version = request.header.api_version;
    let frame: &[u8] = request.frame;
    let parsed = parse_body(request, parse)?;
    let check = &**ctx.check;

    let txn_refusal = parsed.transactional_id.and_then(|txn| {
        Refusal::of(
            check.check(Operation::Transactions, Resource::transactional_id(txn)),
            ResourceKind::TransactionalId,
        )
    });
    let plans: Vec<Plan> = match txn_refusal {
        Some(refusal) => parsed
            .topics
            .iter()
            .map(|t| Plan::whole(t, Some(refusal)))
            .collect(),
        None => {
            let names = resolve_all(&parsed.topics, ctx.topic_ids);
            let mut checks = Checks::new(check);
            parsed
                .topics
                .iter()
                .zip(&names)
                .map(|(topic, name)| {
                    let Some(name) = name else {
                        return Plan::whole(topic, Some(Refusal::UNKNOWN_TOPIC_ID));
                    };
                    if let Some(refusal) = Refusal::topic(checks.topic(Operation::Produce, name)) {
                        return Plan::whole(topic, Some(refusal));
                    }
                    let parts: Vec<_> = topic
                        .parts
                        .iter()
                        .map(|p| {
                            let records = slice(frame, &p.records);
                            let c = check.check_records(name, p.index, records);
                            (p.index, Refusal::topic(c))
                        })
                        .collect();
                    if parts.iter().all(|(_, r)| r.is_none()) {
                        Plan::Forwarded
                    } else {
                        Plan::Mixed(parts)
                    }
                })
                .collect()
        }
    };

    let by_id = version >= 13;
    let no_response = parsed.acks == 0;
    match verdict(&plans) {
        Verdict::AllForwarded => Ok(Outcome::Forward),
        Verdict::NoneForwarded if no_response => Ok(Outcome::Drop),
        Verdict::NoneForwarded => {
            let plan = keyed_plans(&parsed.topics, plans);
            let body = ProduceResponse::default().with_responses(merge_topics(
                Vec::<TopicProduceResponse>::new(),
                &plan,
                by_id,
            ));
            let frame =
                encode_response(PRODUCE, version, request.header.correlation_id, &body, API)?;
            Ok(Outcome::Respond(frame))
        }
        Verdict::Some => {
            let spliced = splice_topics(
                frame,
                &parsed.array,
                &parsed.topics,
                version >= 9,
                |t| plans[t].forwards(),
                |t, p| plans[t].forwards_part(p),
            )
            .finish();
            if no_response {
                return Ok(Outcome::Rewrite {
                    frame: spliced,
                    response: None,
                });
            }
            let plan = keyed_plans(&parsed.topics, plans);
            Ok(Outcome::Rewrite {
                frame: spliced,
                response: Some(Box::new(move |answer| {
                    let (correlation_id, mut body): (i32, ProduceResponse) =
                        decode_response(PRODUCE, version, &answer, API)?;
                    body.responses =
                        merge_topics(std::mem::take(&mut body.responses), &plan, by_id);
                    encode_response(PRODUCE, version, correlation_id, &body, API)
                })),
            })
        }
    }
}

fn slice<'a>(frame: &'a [u8], range: &Range<usize>) -> &'a [u8] {
    frame.get(range.clone()).unwrap_or_default()
}

topic_entry!(TopicProduceResponse {
    parts: partition_responses: PartitionProduceResponse,
    index: index,
    refused: |index, refusal| PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(refusal.code)
        .with_base_offset(-1)
        .with_error_message(message(refusal)),
} {
    fn key(&self, by_id: bool) -> Key {
        name_or_id(by_id, &self.name, self.topic_id)
    }

    fn new_entry(key: &Key, parts: Vec<PartitionProduceResponse>) -> Self {
        let entry = TopicProduceResponse::default().with_partition_responses(parts);
        match key {
            Key::Name(name) => entry.with_name(super::topic_name(name)),
            Key::Id(id) => entry.with_topic_id(uuid(*id)),
        }
    }
});

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::{
        messages::{
            produce_request::{PartitionProduceData, TopicProduceData},
            ApiKey, ProduceRequest,
        },
        protocol::StrBytes,
    };

    use super::super::test_support::*;
    use super::*;
    use crate::kafka::authz::response::{
        POLICY_VIOLATION, TOPIC_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        UNKNOWN_TOPIC_ID,
    };
    use crate::kafka::authz::AuthzError;

    const VERSIONS: [i16; 5] = [3, 8, 9, 12, 13];

    fn part(index: i32) -> PartitionProduceData {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(Some(Bytes::from(format!("records-{index}"))))
    }

    /// Topics "a" (partitions 0, 1) and "b" (partition 0), by name or by ids 1 and 2.
    fn request(version: i16, acks: i16, txn: Option<&str>) -> Bytes {
        let topic = |name: &str, n: u8, parts: Vec<PartitionProduceData>| {
            let t = TopicProduceData::default().with_partition_data(parts);
            if version >= 13 {
                t.with_topic_id(uuid_of(n))
            } else {
                t.with_name(crate::kafka::authz::data::topic_name(name))
            }
        };
        let body = ProduceRequest::default()
            .with_transactional_id(txn.map(|t| StrBytes::from_string(t.into()).into()))
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                topic("a", 1, vec![part(0), part(1)]),
                topic("b", 2, vec![part(0)]),
            ]);
        frame(ApiKey::Produce, version, &body)
    }

    fn harness(fake: std::sync::Arc<Fake>) -> Harness {
        let h = Harness::new(fake);
        h.ids.learn(uuid_of(1).into_bytes(), "a");
        h.ids.learn(uuid_of(2).into_bytes(), "b");
        h
    }

    fn codes(resp: &ProduceResponse) -> Vec<(String, i32, i16)> {
        resp.responses
            .iter()
            .flat_map(|t| {
                let name = if t.name.is_empty() {
                    format!("id{}", t.topic_id.as_bytes()[15])
                } else {
                    t.name.to_string()
                };
                t.partition_responses
                    .iter()
                    .map(move |p| (name.clone(), p.index, p.error_code))
            })
            .collect()
    }

    fn label(version: i16, name: &str) -> String {
        match (version >= 13, name) {
            (true, "a") => "id1".into(),
            (true, "b") => "id2".into(),
            (_, other) => other.into(),
        }
    }

    #[test]
    fn all_allowed_is_forwarded_after_one_check_per_topic_and_partition() {
        for version in VERSIONS {
            let mut h = harness(Fake::allow_all());
            let out = h.run(&request(version, -1, Some("tx"))).unwrap();
            assert!(matches!(out, Outcome::Forward), "v{version}: {out:?}");
            assert_eq!(
                h.fake.calls(),
                [
                    "transactions transactional-id:tx",
                    "produce topic:a",
                    "records a/0",
                    "records a/1",
                    "produce topic:b",
                    "records b/0"
                ],
                "v{version}"
            );
        }
    }

    #[test]
    fn a_refused_transactional_id_refuses_every_partition_without_topic_checks() {
        for version in VERSIONS {
            let mut h = harness(Fake::denying(&[(Operation::Transactions, "tx")]));
            let out = respond_frame(h.run(&request(version, -1, Some("tx"))).unwrap());
            let resp: ProduceResponse = decode_answer(ApiKey::Produce, version, &out);
            let codes = codes(&resp);
            assert_eq!(codes.len(), 3, "v{version}");
            assert!(codes
                .iter()
                .all(|c| c.2 == TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
            assert_eq!(h.fake.calls(), ["transactions transactional-id:tx"]);
            if version >= 8 {
                assert!(resp.responses[0].partition_responses[0]
                    .error_message
                    .is_some());
            }
        }
    }

    #[test]
    fn everything_refused_with_acks_0_is_dropped() {
        for version in VERSIONS {
            let mut h = harness(Fake::denying(&[
                (Operation::Produce, "a"),
                (Operation::Produce, "b"),
            ]));
            let out = h.run(&request(version, 0, None)).unwrap();
            assert!(matches!(out, Outcome::Drop), "v{version}: {out:?}");
        }
    }

    #[test]
    fn a_refused_topic_and_a_violating_partition_are_spliced_out_and_merged_back() {
        for version in VERSIONS {
            let fake = Fake::with_violations(&[(Operation::Produce, "b")], &[("a", 1)]);
            let mut h = harness(fake);
            let (spliced, rewrite) = outcome_frame(h.run(&request(version, -1, None)).unwrap());
            assert_eq!(
                h.fake.calls(),
                [
                    "produce topic:a",
                    "records a/0",
                    "records a/1",
                    "produce topic:b"
                ]
            );
            let forwarded: ProduceRequest = decode_request(ApiKey::Produce, &spliced);
            assert_eq!(forwarded.topic_data.len(), 1, "v{version}");
            assert_eq!(forwarded.topic_data[0].partition_data, vec![part(0)]);
            assert_eq!(forwarded.acks, -1);
            assert_eq!(forwarded.timeout_ms, 30_000);

            // The broker answers for a/0 only; the client sees a/0, a/1, b/0 in order.
            let mut answered = TopicProduceResponse::default().with_partition_responses(vec![
                PartitionProduceResponse::default()
                    .with_index(0)
                    .with_base_offset(41),
            ]);
            answered = if version >= 13 {
                answered.with_topic_id(uuid_of(1))
            } else {
                answered.with_name(topic("a"))
            };
            let broker = ProduceResponse::default()
                .with_throttle_time_ms(5)
                .with_responses(vec![answered]);
            let merged =
                rewrite.unwrap()(broker_response(ApiKey::Produce, version, &broker)).unwrap();
            let resp: ProduceResponse = decode_answer(ApiKey::Produce, version, &merged);
            assert_eq!(resp.throttle_time_ms, 5);
            assert_eq!(
                codes(&resp),
                [
                    (label(version, "a"), 0, 0),
                    (label(version, "a"), 1, POLICY_VIOLATION),
                    (label(version, "b"), 0, TOPIC_AUTHORIZATION_FAILED)
                ],
                "v{version}"
            );
            assert_eq!(resp.responses[0].partition_responses[0].base_offset, 41);
        }
    }

    #[test]
    fn partial_acks_0_forwards_the_allowed_part_without_a_rewrite() {
        let mut h = harness(Fake::denying(&[(Operation::Produce, "a")]));
        let out = h.run(&request(9, 0, None)).unwrap();
        let (spliced, rewrite) = outcome_frame(out);
        assert!(rewrite.is_none());
        let forwarded: ProduceRequest = decode_request(ApiKey::Produce, &spliced);
        assert_eq!(forwarded.topic_data.len(), 1);
        assert_eq!(forwarded.topic_data[0].name, topic("b"));
    }

    #[test]
    fn unknown_topic_ids_are_refused_without_a_check() {
        let mut h = Harness::new(Fake::allow_all());
        h.ids.learn(uuid_of(2).into_bytes(), "b");
        let (spliced, rewrite) = outcome_frame(h.run(&request(13, 1, None)).unwrap());
        assert_eq!(h.fake.calls(), ["produce topic:b", "records b/0"]);
        let forwarded: ProduceRequest = decode_request(ApiKey::Produce, &spliced);
        assert_eq!(forwarded.topic_data.len(), 1);
        assert_eq!(forwarded.topic_data[0].topic_id, uuid_of(2));
        let broker =
            ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                .with_topic_id(uuid_of(2))
                .with_partition_responses(vec![PartitionProduceResponse::default()])]);
        let merged = rewrite.unwrap()(broker_response(ApiKey::Produce, 13, &broker)).unwrap();
        let resp: ProduceResponse = decode_answer(ApiKey::Produce, 13, &merged);
        assert_eq!(
            codes(&resp),
            [
                ("id1".into(), 0, UNKNOWN_TOPIC_ID),
                ("id1".into(), 1, UNKNOWN_TOPIC_ID),
                ("id2".into(), 0, 0)
            ]
        );
    }

    #[test]
    fn versions_outside_the_parsed_range_are_unsupported() {
        let mut h = harness(Fake::allow_all());
        let mut frame = request(3, 1, None).to_vec();
        frame[6..8].copy_from_slice(&2i16.to_be_bytes());
        let err = h.run(&Bytes::from(frame)).unwrap_err();
        assert!(
            matches!(err, AuthzError::UnsupportedVersion { .. }),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_garbage_requests_are_malformed() {
        for version in VERSIONS {
            let frame = request(version, -1, Some("tx"));
            assert_truncations_are_malformed(&frame);
            assert_garbage_is_no_panic(&frame);
        }
        // Not UTF-8 in a topic name.
        let mut bad = request(3, 1, None).to_vec();
        let at = bad.windows(3).position(|w| w == b"\0\x01a").unwrap() + 2;
        bad[at] = 0xff;
        let err = harness(Fake::allow_all())
            .run(&Bytes::from(bad))
            .unwrap_err();
        assert!(matches!(err, AuthzError::Malformed { .. }), "{err}");
    }
}
