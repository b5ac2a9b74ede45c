//! Keys that read offsets or producer state of partitions, checked per topic: ListOffsets (2,
//! v1–v10, Describe), OffsetForLeaderEpoch (23, v2–v4, Describe; a replica's request needs
//! ClusterAction) and DescribeProducers (61, v0, Consume: Kafka's Read).

use kafka_protocol::messages::{
    describe_producers_response::{PartitionResponse, TopicResponse},
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
    offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
    DescribeProducersResponse, ListOffsetsResponse, OffsetForLeaderEpochResponse,
};

use super::{
    answer, check_topics, parse_topic_array, resolve_all, topic_entry, topics_response, Authorized,
    Naming, Plan, Refusal, DESCRIBE_PRODUCERS, LIST_OFFSETS, OFFSET_FOR_LEADER_EPOCH,
};
use crate::{
    kafka::{
        authz::{AuthzError, Context, Request},
        wire::Reader,
    },
    policy::{Operation, Resource, ResourceKind},
};

pub(super) fn authorize(request: &Request<'_>, ctx: &mut Context<'_>) -> Authorized {
    let version = request.header.api_version;
    let frame: &[u8] = request.frame;
    let malformed = |e| request.malformed(e);
    let mut r = Reader::at(frame, request.header.body_offset, "body").map_err(malformed)?;
    let key = request.header.api_key;
    let flexible = request.flexible();

    // Everything before the topic array, and how one partition element reads.
    let mut replica_id = -1;
    let mut part_reader = |r: &mut Reader<'_>| {
        let index = r.i32("partition index")?;
        match key {
            LIST_OFFSETS => {
                if version >= 4 {
                    r.i32("current leader epoch")?;
                }
                r.i64("timestamp")?;
            }
            OFFSET_FOR_LEADER_EPOCH => {
                r.i32("current leader epoch")?;
                r.i32("leader epoch")?;
            }
            _ => return Ok(index), // DescribeProducers: a bare i32
        }
        r.tagged(flexible, "partition tagged fields")?;
        Ok(index)
    };
    let (op, part_min) = match key {
        LIST_OFFSETS => {
            r.i32("replica id").map_err(malformed)?;
            if version >= 2 {
                r.i8("isolation level").map_err(malformed)?;
            }
            (Operation::Describe, 12)
        }
        OFFSET_FOR_LEADER_EPOCH => {
            if version >= 3 {
                replica_id = r.i32("replica id").map_err(malformed)?;
            }
            (Operation::Describe, 12)
        }
        _ => (Operation::Consume, 4),
    };
    let (array, topics) = parse_topic_array(
        &mut r,
        frame,
        flexible,
        Naming::Name,
        Some((&mut part_reader, part_min)),
    )
    .map_err(malformed)?;
    if key == LIST_OFFSETS && version >= 10 {
        r.i32("timeout").map_err(malformed)?;
    }
    r.tagged(flexible, "tagged fields").map_err(malformed)?;

    let plans: Vec<Plan> = if replica_id >= 0 {
        // A replica's request: Kafka lets cluster-action cover every topic.
        let check = ctx
            .check
            .check(Operation::ClusterAction, Resource::cluster());
        let refusal = Refusal::of(check, ResourceKind::Cluster);
        topics.iter().map(|t| Plan::whole(t, refusal)).collect()
    } else {
        let names = resolve_all(&topics, ctx.topic_ids);
        let refusals = check_topics(&topics, &names, &**ctx.check, op);
        topics
            .iter()
            .zip(refusals)
            .map(|(t, refusal)| Plan::whole(t, refusal))
            .collect()
    };
    match key {
        LIST_OFFSETS => {
            answer::<ListOffsetsResponse>(request, &array, &topics, plans, flexible, false)
        }
        OFFSET_FOR_LEADER_EPOCH => {
            answer::<OffsetForLeaderEpochResponse>(request, &array, &topics, plans, flexible, false)
        }
        DESCRIBE_PRODUCERS => {
            answer::<DescribeProducersResponse>(request, &array, &topics, plans, flexible, false)
        }
        _ => Err(AuthzError::UnknownApiKey(key)),
    }
}

topics_response! {
    ListOffsetsResponse => topics: ListOffsetsTopicResponse,
    OffsetForLeaderEpochResponse => topics: OffsetForLeaderTopicResult,
    DescribeProducersResponse => topics: TopicResponse,
}

topic_entry! {
    ListOffsetsTopicResponse[name / with_name]
        => ListOffsetsPartitionResponse[partition_index / with_partition_index];
    OffsetForLeaderTopicResult[topic / with_topic] => EpochEndOffset[partition / with_partition];
    TopicResponse[name / with_name]
        => PartitionResponse[partition_index / with_partition_index] + with_error_message;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::{
        describe_producers_request::TopicRequest,
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
        ApiKey, DescribeProducersRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest,
    };

    use super::super::{test_support::*, Key, TopicEntry};
    use super::*;
    use crate::kafka::authz::response::{CLUSTER_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED};
    use crate::kafka::authz::Outcome;

    /// Topics a (0, 1), secret (0) and b (2), in that order.
    const TOPICS: [(&str, &[i32]); 3] = [("a", &[0, 1]), ("secret", &[0]), ("b", &[2])];

    /// [`TOPICS`] as a request's topics: `entry` builds each from its name and the partitions
    /// `part` builds.
    fn request_topics<T, P>(entry: impl Fn(&str, Vec<P>) -> T, part: impl Fn(i32) -> P) -> Vec<T> {
        TOPICS
            .iter()
            .map(|(name, parts)| entry(name, parts.iter().map(|&p| part(p)).collect()))
            .collect()
    }

    fn list_offsets(version: i16) -> Bytes {
        let topics = request_topics(
            |name, parts| {
                ListOffsetsTopic::default()
                    .with_name(topic(name))
                    .with_partitions(parts)
            },
            |p| {
                ListOffsetsPartition::default()
                    .with_partition_index(p)
                    .with_timestamp(-1)
            },
        );
        let body = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(topics)
            .with_timeout_ms(if version >= 10 { 5000 } else { 0 });
        frame(ApiKey::ListOffsets, version, &body)
    }

    fn leader_epoch(version: i16, replica: i32) -> Bytes {
        let topics = request_topics(
            |name, parts| {
                OffsetForLeaderTopic::default()
                    .with_topic(topic(name))
                    .with_partitions(parts)
            },
            |p| {
                OffsetForLeaderPartition::default()
                    .with_partition(p)
                    .with_leader_epoch(3)
            },
        );
        let body = OffsetForLeaderEpochRequest::default()
            .with_replica_id(replica.into())
            .with_topics(topics);
        frame(ApiKey::OffsetForLeaderEpoch, version, &body)
    }

    fn describe_producers() -> Bytes {
        let topics = request_topics(
            |name, parts| {
                TopicRequest::default()
                    .with_name(topic(name))
                    .with_partition_indexes(parts)
            },
            |p| p,
        );
        frame(
            ApiKey::DescribeProducers,
            0,
            &DescribeProducersRequest::default().with_topics(topics),
        )
    }

    fn flat<T: TopicEntry>(topics: &mut [T]) -> Vec<(String, i32, bool)>
    where
        T::Part: HasCode,
    {
        topics
            .iter_mut()
            .flat_map(|t| {
                let Key::Name(name) = t.key(false) else {
                    unreachable!()
                };
                t.parts()
                    .iter()
                    .map(|p| (name.clone(), T::part_index(p), p.code() == 0))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    trait HasCode {
        fn code(&self) -> i16;
    }
    impl HasCode for ListOffsetsPartitionResponse {
        fn code(&self) -> i16 {
            self.error_code
        }
    }
    impl HasCode for EpochEndOffset {
        fn code(&self) -> i16 {
            self.error_code
        }
    }
    impl HasCode for PartitionResponse {
        fn code(&self) -> i16 {
            self.error_code
        }
    }

    fn expected() -> Vec<(String, i32, bool)> {
        vec![
            ("a".into(), 0, true),
            ("a".into(), 1, true),
            ("secret".into(), 0, false),
            ("b".into(), 2, true),
        ]
    }

    #[test]
    fn list_offsets_forward_refuse_and_merge() {
        for version in [1, 5, 6, 10] {
            let req = list_offsets(version);
            let mut h = Harness::new(Fake::allow_all());
            assert!(matches!(h.run(&req).unwrap(), Outcome::Forward));
            assert_eq!(
                h.fake.calls(),
                [
                    "describe topic:a",
                    "describe topic:secret",
                    "describe topic:b"
                ]
            );

            let mut h = Harness::new(Fake::denying(&[
                (Operation::Describe, "a"),
                (Operation::Describe, "secret"),
                (Operation::Describe, "b"),
            ]));
            let out = respond_frame(h.run(&req).unwrap());
            let mut resp: ListOffsetsResponse = decode_answer(ApiKey::ListOffsets, version, &out);
            assert!(flat(&mut resp.topics).iter().all(|p| !p.2));
            assert_eq!(resp.topics[0].partitions[0].offset, -1);

            let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
            let (spliced, rewrite) = outcome_frame(h.run(&req).unwrap());
            let fwd: ListOffsetsRequest = decode_request(ApiKey::ListOffsets, &spliced);
            let names: Vec<_> = fwd.topics.iter().map(|t| t.name.to_string()).collect();
            assert_eq!(names, ["a", "b"], "v{version}");
            assert_eq!(fwd.topics[0].partitions.len(), 2);
            // The broker answers in its own order; the client gets request order.
            let entry = |name: &str, parts: &[i32]| {
                ListOffsetsTopicResponse::default()
                    .with_name(topic(name))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p)
                                    .with_offset(100)
                            })
                            .collect(),
                    )
            };
            let broker = ListOffsetsResponse::default()
                .with_topics(vec![entry("b", &[2]), entry("a", &[0, 1])]);
            let merged =
                rewrite.unwrap()(broker_response(ApiKey::ListOffsets, version, &broker)).unwrap();
            let mut resp: ListOffsetsResponse =
                decode_answer(ApiKey::ListOffsets, version, &merged);
            assert_eq!(flat(&mut resp.topics), expected(), "v{version}");
            assert_eq!(
                resp.topics[1].partitions[0].error_code,
                TOPIC_AUTHORIZATION_FAILED
            );
            assert_eq!(resp.topics[0].partitions[1].offset, 100);
        }
    }

    #[test]
    fn offset_for_leader_epoch_checks_topics_or_cluster_action() {
        for version in [2, 3, 4] {
            let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
            let (spliced, rewrite) = outcome_frame(h.run(&leader_epoch(version, -1)).unwrap());
            let fwd: OffsetForLeaderEpochRequest =
                decode_request(ApiKey::OffsetForLeaderEpoch, &spliced);
            assert_eq!(fwd.topics.len(), 2);
            assert_eq!(fwd.topics[1].partitions[0].leader_epoch, 3);
            let broker = OffsetForLeaderEpochResponse::default().with_topics(vec![
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic("a"))
                    .with_partitions(vec![
                        EpochEndOffset::default().with_partition(0),
                        EpochEndOffset::default().with_partition(1),
                    ]),
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic("b"))
                    .with_partitions(vec![EpochEndOffset::default().with_partition(2)]),
            ]);
            let merged = rewrite.unwrap()(broker_response(
                ApiKey::OffsetForLeaderEpoch,
                version,
                &broker,
            ))
            .unwrap();
            let mut resp: OffsetForLeaderEpochResponse =
                decode_answer(ApiKey::OffsetForLeaderEpoch, version, &merged);
            assert_eq!(flat(&mut resp.topics), expected());
        }
        // A replica (v3+): cluster-action decides, no topic checks.
        let mut h = Harness::new(Fake::allow_all());
        assert!(matches!(
            h.run(&leader_epoch(4, 2)).unwrap(),
            Outcome::Forward
        ));
        assert_eq!(h.fake.calls(), ["cluster-action cluster:kafka-cluster"]);
        let mut h = Harness::new(Fake::denying(&[(
            Operation::ClusterAction,
            "kafka-cluster",
        )]));
        let out = respond_frame(h.run(&leader_epoch(3, 2)).unwrap());
        let resp: OffsetForLeaderEpochResponse =
            decode_answer(ApiKey::OffsetForLeaderEpoch, 3, &out);
        assert!(resp
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .all(|p| p.error_code == CLUSTER_AUTHORIZATION_FAILED));
        assert_eq!(resp.topics.len(), 3);
    }

    #[test]
    fn describe_producers_needs_consume() {
        let req = describe_producers();
        let mut h = Harness::new(Fake::denying(&[(Operation::Consume, "secret")]));
        let (spliced, rewrite) = outcome_frame(h.run(&req).unwrap());
        assert_eq!(
            h.fake.calls(),
            ["consume topic:a", "consume topic:secret", "consume topic:b"]
        );
        let fwd: DescribeProducersRequest = decode_request(ApiKey::DescribeProducers, &spliced);
        assert_eq!(fwd.topics.len(), 2);
        assert_eq!(fwd.topics[0].partition_indexes, [0, 1]);
        let broker = DescribeProducersResponse::default().with_topics(vec![
            TopicResponse::default()
                .with_name(topic("a"))
                .with_partitions(vec![
                    PartitionResponse::default().with_partition_index(0),
                    PartitionResponse::default().with_partition_index(1),
                ]),
            TopicResponse::default()
                .with_name(topic("b"))
                .with_partitions(vec![PartitionResponse::default().with_partition_index(2)]),
        ]);
        let merged =
            rewrite.unwrap()(broker_response(ApiKey::DescribeProducers, 0, &broker)).unwrap();
        let mut resp: DescribeProducersResponse =
            decode_answer(ApiKey::DescribeProducers, 0, &merged);
        assert_eq!(flat(&mut resp.topics), expected());
        assert!(resp.topics[1].partitions[0].error_message.is_some());
    }

    #[test]
    fn truncated_and_garbage_requests_are_malformed() {
        let mut frames = vec![describe_producers()];
        frames.extend([1, 4, 6, 10].map(list_offsets));
        frames.extend([2, 3, 4].map(|v| leader_epoch(v, -1)));
        for frame in &frames {
            assert_truncations_are_malformed(frame);
            assert_garbage_is_no_panic(frame);
        }
    }
}
