//! Requests built with the crate's encoder, decided with a fake policy, answers decoded with
//! the crate's decoder.

use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::super::{
    response::{decode_response, encode_response},
    AuthzError, ConnectionState, Context, Outcome, Request, TopicIds,
};
use crate::policy::{AccessCheck, Check, Operation, Resource};

/// Denies the resources named "kind:name" ("*" denies everything) and records every call.
struct Fake {
    deny: Vec<String>,
    calls: Mutex<Vec<String>>,
}

impl AccessCheck for Fake {
    fn check(&self, op: Operation, resource: Resource<'_>) -> Check {
        let name = resource.to_string();
        self.calls.lock().unwrap().push(format!("{op} {name}"));
        if self.deny.iter().any(|d| d == "*" || *d == name) {
            Check::Denied
        } else {
            Check::Allowed
        }
    }

    fn check_records(&self, _: &str, _: i32, _: &[u8]) -> Check {
        Check::Allowed
    }
}

fn fake(deny: &[&str]) -> Arc<Fake> {
    Arc::new(Fake {
        deny: deny.iter().map(|s| s.to_string()).collect(),
        calls: Mutex::new(Vec::new()),
    })
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}

fn group(v: &str) -> GroupId {
    GroupId(s(v))
}

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(s("test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = BytesMut::new();
    out.put_i32(buf.len() as i32);
    out.extend_from_slice(&buf);
    out.freeze()
}

fn run_with(frame: &Bytes, check: Arc<dyn AccessCheck>) -> Result<Outcome, AuthzError> {
    let header = crate::kafka::RequestHeader::parse(frame).unwrap();
    let request = Request {
        header: &header,
        frame,
    };
    let mut state = ConnectionState::default();
    let ids = Arc::new(TopicIds::new(16));
    let mut ctx = Context {
        check: &check,
        state: &mut state,
        topic_ids: &ids,
        policy_generation: 1,
        settings: Default::default(),
    };
    super::authorize(&request, &mut ctx).expect("a key of this module")
}

fn run(frame: &Bytes, deny: &[&str]) -> Result<Outcome, AuthzError> {
    run_with(frame, fake(deny))
}

/// The body of a request frame, decoded by the crate (which must consume it all).
fn request_body<T: Decodable>(frame: &Bytes, version: i16) -> T {
    let header = crate::kafka::RequestHeader::parse(frame).unwrap();
    let mut body = frame.slice(header.body_offset..);
    let decoded = T::decode(&mut body, version).unwrap();
    assert!(body.is_empty(), "bytes left after the body");
    decoded
}

fn answer<T: Decodable>(key: ApiKey, version: i16, frame: &Bytes) -> T {
    let (correlation_id, body) = decode_response(key as i16, version, frame, "test").unwrap();
    assert_eq!(correlation_id, 7);
    body
}

fn respond<T: Decodable>(outcome: Outcome, key: ApiKey, version: i16) -> T {
    match outcome {
        Outcome::Respond(frame) => answer(key, version, &frame),
        other => panic!("expected a local answer, got {other:?}"),
    }
}

/// The forwarded frame, and the client's answer when the broker answers `broker`.
fn rewrite<B: Encodable, T: Decodable>(
    outcome: Outcome,
    key: ApiKey,
    version: i16,
    broker: &B,
) -> (Bytes, T) {
    let broker = encode_response(key as i16, version, 7, broker, "test").unwrap();
    match outcome {
        Outcome::Rewrite {
            frame,
            response: Some(rewrite),
        } => (frame, answer(key, version, &rewrite(broker).unwrap())),
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

fn filtered<B: Encodable, T: Decodable>(
    outcome: Outcome,
    key: ApiKey,
    version: i16,
    broker: &B,
) -> T {
    let broker = encode_response(key as i16, version, 7, broker, "test").unwrap();
    match outcome {
        Outcome::FilterResponse(rewrite) => answer(key, version, &rewrite(broker).unwrap()),
        other => panic!("expected a filtered answer, got {other:?}"),
    }
}

fn is_forward(outcome: &Result<Outcome, AuthzError>) -> bool {
    matches!(outcome, Ok(Outcome::Forward))
}

const KEYS: [ApiKey; 27] = [
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::SyncGroup,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::InitProducerId,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
    ApiKey::ShareGroupHeartbeat,
    ApiKey::ShareGroupDescribe,
    ApiKey::ShareFetch,
    ApiKey::ShareAcknowledge,
    ApiKey::DescribeShareGroupOffsets,
    ApiKey::AlterShareGroupOffsets,
    ApiKey::DeleteShareGroupOffsets,
];

fn versions(key: ApiKey) -> [i16; 3] {
    let min = key.valid_versions().min;
    let max = super::TABLE
        .iter()
        .find(|a| a.key == key as i16)
        .unwrap()
        .max_version;
    [min, min + (max - min) / 2, max]
}

/// A typical request of `key`: group "g", topics "a" and "b", transactional id "tx".
fn sample(key: ApiKey, v: i16) -> Bytes {
    let names = || vec![topic("a"), topic("b")];
    match key {
        ApiKey::OffsetCommit => {
            let t = |n| {
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic(n))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(42)
                            .with_committed_metadata(Some(s("m"))),
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(1),
                    ])
            };
            let mut r = OffsetCommitRequest::default()
                .with_group_id(group("g"))
                .with_member_id(s("m1"))
                .with_topics(vec![t("a"), t("b")]);
            if v >= 7 {
                r.group_instance_id = Some(s("i"));
            }
            frame(key, v, &r)
        }
        ApiKey::OffsetFetch => {
            let r = if v <= 7 {
                let t = |n| {
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic(n))
                        .with_partition_indexes(vec![0, 1])
                };
                OffsetFetchRequest::default()
                    .with_group_id(group("g"))
                    .with_topics(Some(vec![t("a"), t("b")]))
            } else {
                let t = |n| {
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(topic(n))
                        .with_partition_indexes(vec![0, 1])
                };
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group("g"))
                    .with_topics(Some(vec![t("a"), t("b")]));
                if v >= 9 {
                    g.member_id = Some(s("m1"));
                }
                OffsetFetchRequest::default().with_groups(vec![g])
            };
            frame(key, v, &r)
        }
        ApiKey::FindCoordinator => {
            let r = if v <= 3 {
                FindCoordinatorRequest::default().with_key(s("g"))
            } else {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("g2")])
            };
            frame(key, v, &r)
        }
        ApiKey::JoinGroup => {
            let r = JoinGroupRequest::default()
                .with_group_id(group("g"))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"meta"))]);
            frame(key, v, &r)
        }
        ApiKey::Heartbeat => frame(key, v, &HeartbeatRequest::default().with_group_id(group("g"))),
        ApiKey::LeaveGroup => {
            let mut r = LeaveGroupRequest::default().with_group_id(group("g"));
            if v >= 3 {
                r.members = vec![leave_group_request::MemberIdentity::default().with_member_id(s("m1"))];
            } else {
                r.member_id = s("m1");
            }
            frame(key, v, &r)
        }
        ApiKey::SyncGroup => frame(
            key,
            v,
            &SyncGroupRequest::default()
                .with_group_id(group("g"))
                .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s("m1"))]),
        ),
        ApiKey::DescribeGroups => frame(
            key,
            v,
            &DescribeGroupsRequest::default().with_groups(vec![group("g"), group("g2")]),
        ),
        ApiKey::ListGroups => frame(key, v, &ListGroupsRequest::default()),
        ApiKey::InitProducerId => frame(
            key,
            v,
            &InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(s("tx")))),
        ),
        ApiKey::AddPartitionsToTxn => {
            let topics = vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic("a"))
                    .with_partitions(vec![0, 1]),
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic("b"))
                    .with_partitions(vec![2]),
            ];
            let r = if v <= 3 {
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
                    .with_v3_and_below_topics(topics)
            } else {
                AddPartitionsToTxnRequest::default().with_transactions(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(TransactionalId(s("tx")))
                        .with_topics(topics),
                ])
            };
            frame(key, v, &r)
        }
        ApiKey::AddOffsetsToTxn => frame(
            key,
            v,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(group("g")),
        ),
        ApiKey::EndTxn => frame(
            key,
            v,
            &EndTxnRequest::default().with_transactional_id(TransactionalId(s("tx"))),
        ),
        ApiKey::TxnOffsetCommit => {
            let t = |n| {
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(topic(n))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(3)
                            .with_committed_metadata(Some(s("md"))),
                    ])
            };
            let mut r = TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(group("g"))
                .with_topics(vec![t("a"), t("b")]);
            if v >= 3 {
                r.member_id = s("m1");
            }
            frame(key, v, &r)
        }
        ApiKey::DeleteGroups => frame(
            key,
            v,
            &DeleteGroupsRequest::default().with_groups_names(vec![group("g"), group("g2")]),
        ),
        ApiKey::OffsetDelete => {
            let t = |n| {
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(topic(n))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(5),
                    ])
            };
            frame(
                key,
                v,
                &OffsetDeleteRequest::default()
                    .with_group_id(group("g"))
                    .with_topics(vec![t("a"), t("b")]),
            )
        }
        ApiKey::DescribeTransactions => frame(
            key,
            v,
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("tx")), TransactionalId(s("tx2"))]),
        ),
        ApiKey::ListTransactions => frame(key, v, &ListTransactionsRequest::default()),
        ApiKey::ConsumerGroupHeartbeat => frame(
            key,
            v,
            &ConsumerGroupHeartbeatRequest::default()
                .with_group_id(group("g"))
                .with_subscribed_topic_names(Some(names())),
        ),
        ApiKey::ConsumerGroupDescribe => frame(
            key,
            v,
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group("g"), group("g2")]),
        ),
        ApiKey::ShareGroupHeartbeat => frame(
            key,
            v,
            &ShareGroupHeartbeatRequest::default()
                .with_group_id(group("g"))
                .with_subscribed_topic_names(Some(names())),
        ),
        ApiKey::ShareGroupDescribe => frame(
            key,
            v,
            &ShareGroupDescribeRequest::default().with_group_ids(vec![group("g"), group("g2")]),
        ),
        // Without topics: the interceptor knows no topic id in these tests.
        ApiKey::ShareFetch => frame(
            key,
            v,
            &ShareFetchRequest::default().with_group_id(Some(group("g"))),
        ),
        ApiKey::ShareAcknowledge => frame(
            key,
            v,
            &ShareAcknowledgeRequest::default().with_group_id(Some(group("g"))),
        ),
        ApiKey::DescribeShareGroupOffsets => {
            let t = |n| {
                describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestTopic::default()
                    .with_topic_name(topic(n))
                    .with_partitions(vec![0])
            };
            frame(
                key,
                v,
                &DescribeShareGroupOffsetsRequest::default().with_groups(vec![
                    describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup::default()
                        .with_group_id(group("g"))
                        .with_topics(Some(vec![t("a"), t("b")])),
                ]),
            )
        }
        ApiKey::AlterShareGroupOffsets => frame(
            key,
            v,
            &AlterShareGroupOffsetsRequest::default()
                .with_group_id(group("g"))
                .with_topics(vec![
                    alter_share_group_offsets_request::AlterShareGroupOffsetsRequestTopic::default()
                        .with_topic_name(topic("a"))
                        .with_partitions(vec![
                            alter_share_group_offsets_request::AlterShareGroupOffsetsRequestPartition::default()
                                .with_start_offset(9),
                        ]),
                ]),
        ),
        ApiKey::DeleteShareGroupOffsets => frame(
            key,
            v,
            &DeleteShareGroupOffsetsRequest::default()
                .with_group_id(group("g"))
                .with_topics(vec![
                    delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic::default()
                        .with_topic_name(topic("a")),
                ]),
        ),
        other => panic!("{other:?} is not in this module"),
    }
}

#[test]
fn the_table_lists_exactly_this_modules_keys() {
    let mut ours: Vec<i16> = super::TABLE.iter().map(|a| a.key).collect();
    ours.sort_unstable();
    let mut expected: Vec<i16> = KEYS.iter().map(|k| *k as i16).collect();
    expected.sort_unstable();
    assert_eq!(ours, expected);
    for entry in super::TABLE {
        let key = ApiKey::try_from(entry.key).unwrap();
        let range = key.valid_versions();
        assert!(
            entry.max_version >= range.min && entry.max_version <= range.max,
            "{}",
            entry.name
        );
        assert!(!entry.touches.is_empty(), "{}", entry.name);
        for (op, kind) in entry.touches {
            assert!(
                op.applies_to().contains(kind),
                "{}: {op} on {kind}",
                entry.name
            );
        }
    }
}

#[test]
fn versions_outside_the_parsed_range_are_unsupported() {
    let frame = sample(ApiKey::OffsetCommit, 9);
    let mut bytes = BytesMut::from(&frame[..]);
    bytes[6..8].copy_from_slice(&10i16.to_be_bytes());
    assert!(matches!(
        run(&bytes.freeze(), &[]),
        Err(AuthzError::UnsupportedVersion { version: 10, .. })
    ));
}

#[test]
fn everything_allowed_is_forwarded_untouched() {
    for key in KEYS {
        for v in versions(key) {
            let outcome = run(&sample(key, v), &[]);
            match key {
                // Answers filtered whatever the request: topics in assignments, listed ids.
                ApiKey::ConsumerGroupDescribe
                | ApiKey::ShareGroupDescribe
                | ApiKey::ListTransactions => {
                    assert!(
                        matches!(outcome, Ok(Outcome::FilterResponse(_))),
                        "{key:?} v{v}"
                    )
                }
                _ => assert!(is_forward(&outcome), "{key:?} v{v}: {outcome:?}"),
            }
        }
    }
}

/// The code a refused request answers with, for each key, when everything is refused.
fn refused_code(key: ApiKey, v: i16) -> i16 {
    match key {
        ApiKey::InitProducerId
        | ApiKey::AddOffsetsToTxn
        | ApiKey::EndTxn
        | ApiKey::TxnOffsetCommit
        | ApiKey::DescribeTransactions => 53,
        ApiKey::AddPartitionsToTxn if v >= 4 => 31,
        ApiKey::AddPartitionsToTxn => 53,
        _ => 30,
    }
}

/// Every key answered locally when everything is refused: the answer decodes at the request's
/// version and carries the expected error.
#[test]
fn everything_refused_is_answered_locally_with_the_brokers_error() {
    for key in KEYS {
        if matches!(key, ApiKey::ListGroups | ApiKey::ListTransactions) {
            continue; // filtered answers: tested below
        }
        for v in versions(key) {
            let frame = sample(key, v);
            let Ok(Outcome::Respond(answer)) = run(&frame, &["*"]) else {
                panic!("{key:?} v{v}: not answered locally");
            };
            let code = refused_code(key, v);
            let text = decoded_debug(key, v, &answer);
            assert!(
                text.contains(&format!("error_code: {code},")),
                "{key:?} v{v}: no error {code} in {text}"
            );
        }
    }
}

fn decoded_debug(key: ApiKey, v: i16, frame: &Bytes) -> String {
    macro_rules! dbg_as {
        ($($key:ident => $ty:ty),* $(,)?) => {
            match key {
                $(ApiKey::$key => format!("{:?}", answer::<$ty>(key, v, frame)),)*
                _ => unreachable!(),
            }
        };
    }
    dbg_as! {
        OffsetCommit => OffsetCommitResponse,
        OffsetFetch => OffsetFetchResponse,
        FindCoordinator => FindCoordinatorResponse,
        JoinGroup => JoinGroupResponse,
        Heartbeat => HeartbeatResponse,
        LeaveGroup => LeaveGroupResponse,
        SyncGroup => SyncGroupResponse,
        DescribeGroups => DescribeGroupsResponse,
        InitProducerId => InitProducerIdResponse,
        AddPartitionsToTxn => AddPartitionsToTxnResponse,
        AddOffsetsToTxn => AddOffsetsToTxnResponse,
        EndTxn => EndTxnResponse,
        TxnOffsetCommit => TxnOffsetCommitResponse,
        DeleteGroups => DeleteGroupsResponse,
        OffsetDelete => OffsetDeleteResponse,
        DescribeTransactions => DescribeTransactionsResponse,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatResponse,
        ConsumerGroupDescribe => ConsumerGroupDescribeResponse,
        ShareGroupHeartbeat => ShareGroupHeartbeatResponse,
        ShareGroupDescribe => ShareGroupDescribeResponse,
        ShareFetch => ShareFetchResponse,
        ShareAcknowledge => ShareAcknowledgeResponse,
        DescribeShareGroupOffsets => DescribeShareGroupOffsetsResponse,
        AlterShareGroupOffsets => AlterShareGroupOffsetsResponse,
        DeleteShareGroupOffsets => DeleteShareGroupOffsetsResponse,
    }
}

/// Cut anywhere, a request is refused as malformed or (cut after the names it carries)
/// forwarded for the broker to refuse; never a panic, never a local answer built from half
/// a request.
#[test]
fn truncated_requests_are_malformed_never_a_panic() {
    for key in KEYS {
        for v in versions(key) {
            let frame = sample(key, v);
            let header = crate::kafka::RequestHeader::parse(&frame).unwrap();
            for len in header.body_offset..frame.len() {
                let mut cut = BytesMut::from(&frame[..len]);
                cut[..4].copy_from_slice(&((len - 4) as i32).to_be_bytes());
                let cut = cut.freeze();
                for deny in [&[][..], &["*"][..]] {
                    let outcome = run(&cut, deny);
                    // ListGroups, ListTransactions and broker-to-broker AddPartitionsToTxn
                    // name nothing in their requests: their bodies are the broker's to read.
                    let unparsed = matches!(key, ApiKey::ListGroups | ApiKey::ListTransactions)
                        || (key == ApiKey::AddPartitionsToTxn && v >= 4);
                    if len <= header.body_offset + 1 && !unparsed {
                        assert!(
                            matches!(outcome, Err(AuthzError::Malformed { .. })),
                            "{key:?} v{v} cut at {len}: {outcome:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn garbage_bodies_never_panic() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for key in KEYS {
        for v in versions(key) {
            let frame = sample(key, v);
            let header = crate::kafka::RequestHeader::parse(&frame).unwrap();
            for _ in 0..200 {
                let mut bytes = BytesMut::from(&frame[..]);
                for b in bytes[header.body_offset..].iter_mut() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    if seed % 4 == 0 {
                        *b = (seed >> 32) as u8;
                    }
                }
                let _ = run(&bytes.freeze(), &["topic:b", "group:g2"]);
            }
        }
    }
}

fn commit_request(v: i16, topics: &[&str]) -> Bytes {
    let t = |n: &&str| {
        offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(topic(n))
            .with_partitions(vec![
                offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(10)
                    .with_committed_metadata(Some(s(n))),
                offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(11),
            ])
    };
    frame(
        ApiKey::OffsetCommit,
        v,
        &OffsetCommitRequest::default()
            .with_group_id(group("g"))
            .with_generation_id_or_member_epoch(5)
            .with_member_id(s("m1"))
            .with_topics(topics.iter().map(t).collect()),
    )
}

fn commit_answer(topics: &[&str]) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        (topics.iter())
            .map(|n| {
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(topic(n))
                    .with_partitions(
                        (0..2)
                            .map(|p| {
                                offset_commit_response::OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn codes(answer: &OffsetCommitResponse) -> Vec<(String, Vec<i16>)> {
    (answer.topics.iter())
        .map(|t| {
            let codes = t.partitions.iter().map(|p| p.error_code).collect();
            (t.name.to_string(), codes)
        })
        .collect()
}

#[test]
fn offset_commit_forwards_allowed_topics_and_merges_refused_ones_in_order() {
    for v in [2, 6, 9] {
        let original = commit_request(v, &["a", "b", "c"]);
        let outcome = run(&original, &["topic:b"]).unwrap();
        let (forwarded, merged): (_, OffsetCommitResponse) = rewrite(
            outcome,
            ApiKey::OffsetCommit,
            v,
            &commit_answer(&["a", "c"]),
        );
        let sent: OffsetCommitRequest = request_body(&forwarded, v);
        let expected: OffsetCommitRequest = request_body(&commit_request(v, &["a", "c"]), v);
        assert_eq!(sent, expected, "v{v}");
        assert_eq!(
            codes(&merged),
            vec![
                ("a".into(), vec![0, 0]),
                ("b".into(), vec![29, 29]),
                ("c".into(), vec![0, 0])
            ],
            "v{v}"
        );
    }
}

#[test]
fn offset_commit_refused_group_fails_every_partition_without_checking_topics() {
    let check = fake(&["group:g"]);
    let outcome = run_with(&commit_request(9, &["a", "b"]), check.clone()).unwrap();
    let answer: OffsetCommitResponse = respond(outcome, ApiKey::OffsetCommit, 9);
    assert_eq!(
        codes(&answer),
        vec![("a".into(), vec![30, 30]), ("b".into(), vec![30, 30])]
    );
    assert_eq!(*check.calls.lock().unwrap(), vec!["commit group:g"]);
}

#[test]
fn each_resource_is_checked_once_in_request_order() {
    let check = fake(&[]);
    let outcome = run_with(&commit_request(8, &["b", "a", "b"]), check.clone());
    assert!(is_forward(&outcome));
    assert_eq!(
        *check.calls.lock().unwrap(),
        vec!["commit group:g", "consume topic:b", "consume topic:a"]
    );
}

#[test]
fn offset_commit_all_topics_refused_is_answered_locally() {
    let outcome = run(&commit_request(3, &["a", "b"]), &["topic:a", "topic:b"]).unwrap();
    let answer: OffsetCommitResponse = respond(outcome, ApiKey::OffsetCommit, 3);
    assert_eq!(
        codes(&answer),
        vec![("a".into(), vec![29, 29]), ("b".into(), vec![29, 29])]
    );
}

fn fetch_groups_request(v: i16, groups: &[(&str, Option<&[&str]>)]) -> Bytes {
    let g = |(name, topics): &(&str, Option<&[&str]>)| {
        let mut g = offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(group(name))
            .with_topics(topics.map(|ts| {
                (ts.iter())
                    .map(|t| {
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic(t))
                            .with_partition_indexes(vec![0, 1])
                    })
                    .collect()
            }));
        if v >= 9 {
            g.member_id = Some(s("m"));
            g.member_epoch = 3;
        }
        g
    };
    frame(
        ApiKey::OffsetFetch,
        v,
        &OffsetFetchRequest::default()
            .with_groups(groups.iter().map(g).collect())
            .with_require_stable(true),
    )
}

/// A group of an answer: its id, error, and each topic's name and first partition's error.
type GroupSummary = (String, i16, Vec<(String, i16)>);

fn fetched_group(name: &str, topics: &[&str]) -> offset_fetch_response::OffsetFetchResponseGroup {
    offset_fetch_response::OffsetFetchResponseGroup::default()
        .with_group_id(group(name))
        .with_topics(
            (topics.iter())
                .map(|t| {
                    offset_fetch_response::OffsetFetchResponseTopics::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            offset_fetch_response::OffsetFetchResponsePartitions::default()
                                .with_committed_offset(77),
                        ])
                })
                .collect(),
        )
}

#[test]
fn offset_fetch_groups_are_spliced_merged_and_filtered() {
    for v in [8, 9] {
        let original = fetch_groups_request(
            v,
            &[
                ("g1", Some(&["a", "b"])),
                ("g2", Some(&["a"])),
                ("g3", None),
            ],
        );
        let outcome = run(&original, &["topic:b", "group:g2", "topic:x"]).unwrap();
        let broker = OffsetFetchResponse::default().with_groups(vec![
            fetched_group("g1", &["a"]),
            fetched_group("g3", &["x", "y"]),
        ]);
        let (forwarded, merged): (_, OffsetFetchResponse) =
            rewrite(outcome, ApiKey::OffsetFetch, v, &broker);
        let sent: OffsetFetchRequest = request_body(&forwarded, v);
        let expected: OffsetFetchRequest = request_body(
            &fetch_groups_request(v, &[("g1", Some(&["a"])), ("g3", None)]),
            v,
        );
        assert_eq!(sent, expected);
        let summary: Vec<GroupSummary> = (merged.groups.iter())
            .map(|g| {
                let topics = (g.topics.iter())
                    .map(|t| (t.name.to_string(), t.partitions[0].error_code))
                    .collect();
                (g.group_id.to_string(), g.error_code, topics)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("g1".into(), 0, vec![("a".into(), 0), ("b".into(), 29)]),
                ("g2".into(), 30, vec![]),
                ("g3".into(), 0, vec![("y".into(), 0)]),
            ]
        );
        assert_eq!(merged.groups[0].topics[1].partitions.len(), 2);
        assert_eq!(
            merged.groups[0].topics[1].partitions[1].committed_offset,
            -1
        );
    }
}

#[test]
fn offset_fetch_single_group_refusals_follow_the_version() {
    let request = |v: i16, topics: Option<Vec<&str>>| {
        frame(
            ApiKey::OffsetFetch,
            v,
            &OffsetFetchRequest::default()
                .with_group_id(group("g"))
                .with_topics(topics.map(|ts| {
                    (ts.into_iter())
                        .map(|t| {
                            offset_fetch_request::OffsetFetchRequestTopic::default()
                                .with_name(topic(t))
                                .with_partition_indexes(vec![4])
                        })
                        .collect()
                })),
        )
    };
    // v1 has no top-level error: every partition carries it.
    let answer: OffsetFetchResponse = respond(
        run(&request(1, Some(vec!["a"])), &["group:g"]).unwrap(),
        ApiKey::OffsetFetch,
        1,
    );
    assert_eq!(answer.topics[0].partitions[0].error_code, 30);
    assert_eq!(answer.topics[0].partitions[0].partition_index, 4);
    let answer: OffsetFetchResponse = respond(
        run(&request(5, Some(vec!["a"])), &["group:g"]).unwrap(),
        ApiKey::OffsetFetch,
        5,
    );
    assert_eq!((answer.error_code, answer.topics.len()), (30, 0));
    // All topics (null): the answer keeps describable topics only.
    let outcome = run(&request(7, None), &["topic:x"]).unwrap();
    let broker = OffsetFetchResponse::default().with_topics(
        (["x", "y"].iter())
            .map(|t| offset_fetch_response::OffsetFetchResponseTopic::default().with_name(topic(t)))
            .collect(),
    );
    let answer: OffsetFetchResponse = filtered(outcome, ApiKey::OffsetFetch, 7, &broker);
    let names: Vec<_> = answer.topics.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, vec!["y"]);
    // Named topics, one refused: spliced and merged.
    let outcome = run(&request(6, Some(vec!["a", "b"])), &["topic:a"]).unwrap();
    let broker = OffsetFetchResponse::default().with_topics(vec![
        offset_fetch_response::OffsetFetchResponseTopic::default().with_name(topic("b")),
    ]);
    let (forwarded, answer): (_, OffsetFetchResponse) =
        rewrite(outcome, ApiKey::OffsetFetch, 6, &broker);
    let sent: OffsetFetchRequest = request_body(&forwarded, 6);
    assert_eq!(sent, request_body(&request(6, Some(vec!["b"])), 6));
    let names: Vec<_> = answer.topics.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, vec!["a", "b"]);
    assert_eq!(answer.topics[0].partitions[0].error_code, 29);
}

#[test]
fn find_coordinator_checks_each_key_by_its_type() {
    // v4+: per key, spliced and merged.
    let request = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![s("t1"), s("t2"), s("t3")]);
    let outcome = run(
        &frame(ApiKey::FindCoordinator, 6, &request),
        &["transactional-id:t2"],
    )
    .unwrap();
    let coordinator = |k: &str| {
        find_coordinator_response::Coordinator::default()
            .with_key(s(k))
            .with_node_id(BrokerId(1))
    };
    let broker = FindCoordinatorResponse::default()
        .with_coordinators(vec![coordinator("t1"), coordinator("t3")]);
    let (forwarded, answer): (_, FindCoordinatorResponse) =
        rewrite(outcome, ApiKey::FindCoordinator, 6, &broker);
    let sent: FindCoordinatorRequest = request_body(&forwarded, 6);
    assert_eq!(sent.coordinator_keys, vec![s("t1"), s("t3")]);
    assert_eq!(sent.key_type, 1);
    let keys: Vec<_> = (answer.coordinators.iter())
        .map(|c| (c.key.to_string(), c.error_code, c.node_id.0))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("t1".into(), 0, 1),
            ("t2".into(), 53, -1),
            ("t3".into(), 0, 1)
        ]
    );
    // v1-3: one key; the share coordinator (2) is for brokers.
    for (key_type, deny, code) in [
        (1, "transactional-id:k", 53),
        (2, "cluster:kafka-cluster", 31),
    ] {
        let request = FindCoordinatorRequest::default()
            .with_key(s("k"))
            .with_key_type(key_type);
        let outcome = run(&frame(ApiKey::FindCoordinator, 2, &request), &[deny]).unwrap();
        let answer: FindCoordinatorResponse = respond(outcome, ApiKey::FindCoordinator, 2);
        assert_eq!((answer.error_code, answer.node_id.0), (code, -1));
        assert!(answer.error_message.is_some());
    }
}

#[test]
fn describe_and_delete_groups_merge_refused_groups_in_order() {
    for v in [0, 3, 6] {
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![group("g1"), group("g2"), group("g3")])
            .with_include_authorized_operations(v >= 3);
        let outcome = run(&frame(ApiKey::DescribeGroups, v, &request), &["group:g1"]).unwrap();
        let described = |g: &str| {
            describe_groups_response::DescribedGroup::default()
                .with_group_id(group(g))
                .with_group_state(s("Stable"))
        };
        let broker =
            DescribeGroupsResponse::default().with_groups(vec![described("g2"), described("g3")]);
        let (forwarded, answer): (_, DescribeGroupsResponse) =
            rewrite(outcome, ApiKey::DescribeGroups, v, &broker);
        let sent: DescribeGroupsRequest = request_body(&forwarded, v);
        assert_eq!(sent.groups, vec![group("g2"), group("g3")]);
        assert_eq!(sent.include_authorized_operations, v >= 3);
        let groups: Vec<_> = (answer.groups.iter())
            .map(|g| (g.group_id.to_string(), g.error_code))
            .collect();
        assert_eq!(
            groups,
            vec![("g1".into(), 30), ("g2".into(), 0), ("g3".into(), 0)]
        );
        assert_eq!(answer.groups[0].error_message.is_some(), v >= 6);
    }
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group("g1"), group("g2")]);
    let outcome = run(&frame(ApiKey::DeleteGroups, 2, &request), &["group:g2"]).unwrap();
    let broker = DeleteGroupsResponse::default().with_results(vec![
        delete_groups_response::DeletableGroupResult::default().with_group_id(group("g1")),
    ]);
    let (_, answer): (_, DeleteGroupsResponse) = rewrite(outcome, ApiKey::DeleteGroups, 2, &broker);
    let results: Vec<_> = (answer.results.iter())
        .map(|g| (g.group_id.to_string(), g.error_code))
        .collect();
    assert_eq!(results, vec![("g1".into(), 0), ("g2".into(), 30)]);
}

#[test]
fn add_partitions_to_txn_refuses_whole_requests_as_kafka() {
    for v in [0, 3] {
        let outcome = run(&sample(ApiKey::AddPartitionsToTxn, v), &["topic:b"]).unwrap();
        let answer: AddPartitionsToTxnResponse = respond(outcome, ApiKey::AddPartitionsToTxn, v);
        let codes: Vec<_> = (answer.results_by_topic_v3_and_below.iter())
            .map(|t| {
                let codes: Vec<_> = t
                    .results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
                    .collect();
                (t.name.to_string(), codes)
            })
            .collect();
        assert_eq!(
            codes,
            vec![("a".into(), vec![55, 55]), ("b".into(), vec![29])]
        );
    }
}

#[test]
fn txn_offset_commit_checks_id_group_then_topics() {
    let check = fake(&["topic:a"]);
    let outcome = run_with(&sample(ApiKey::TxnOffsetCommit, 3), check.clone()).unwrap();
    assert_eq!(
        *check.calls.lock().unwrap(),
        vec![
            "transactions transactional-id:tx",
            "commit group:g",
            "consume topic:a",
            "consume topic:b"
        ]
    );
    let broker = TxnOffsetCommitResponse::default().with_topics(vec![
        txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
            .with_name(topic("b"))
            .with_partitions(vec![
                txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(3),
            ]),
    ]);
    let (forwarded, answer): (_, TxnOffsetCommitResponse) =
        rewrite(outcome, ApiKey::TxnOffsetCommit, 3, &broker);
    let sent: TxnOffsetCommitRequest = request_body(&forwarded, 3);
    assert_eq!(sent.topics.len(), 1);
    assert_eq!(sent.topics[0].name, topic("b"));
    assert_eq!(sent.member_id, s("m1"));
    let codes: Vec<_> = (answer.topics.iter())
        .map(|t| (t.name.to_string(), t.partitions[0].error_code))
        .collect();
    assert_eq!(codes, vec![("a".into(), 29), ("b".into(), 0)]);
    // A refused transactional id fails every partition with its own error.
    let outcome = run(
        &sample(ApiKey::TxnOffsetCommit, 0),
        &["transactional-id:tx"],
    )
    .unwrap();
    let answer: TxnOffsetCommitResponse = respond(outcome, ApiKey::TxnOffsetCommit, 0);
    assert!(answer
        .topics
        .iter()
        .all(|t| t.partitions[0].error_code == 53));
}

#[test]
fn idempotent_producers_need_idempotent_write_on_the_cluster() {
    let check = fake(&["cluster:kafka-cluster"]);
    let request = InitProducerIdRequest::default().with_transactional_id(None);
    let outcome = run_with(&frame(ApiKey::InitProducerId, 4, &request), check.clone()).unwrap();
    let answer: InitProducerIdResponse = respond(outcome, ApiKey::InitProducerId, 4);
    assert_eq!((answer.error_code, answer.producer_id.0), (31, -1));
    assert_eq!(
        *check.calls.lock().unwrap(),
        vec!["idempotent-write cluster:kafka-cluster"]
    );
}

#[test]
fn listings_keep_what_the_client_may_describe() {
    let listed = |g: &str| list_groups_response::ListedGroup::default().with_group_id(group(g));
    let broker = ListGroupsResponse::default().with_groups(vec![listed("g1"), listed("g2")]);
    let request = frame(ApiKey::ListGroups, 5, &ListGroupsRequest::default());
    assert!(is_forward(&run(&request, &[])));
    let answer: ListGroupsResponse = filtered(
        run(&request, &["cluster:kafka-cluster", "group:g1"]).unwrap(),
        ApiKey::ListGroups,
        5,
        &broker,
    );
    assert_eq!(answer.groups.len(), 1);
    assert_eq!(answer.groups[0].group_id, group("g2"));

    let state = |t: &str| {
        list_transactions_response::TransactionState::default()
            .with_transactional_id(TransactionalId(s(t)))
    };
    let broker =
        ListTransactionsResponse::default().with_transaction_states(vec![state("t1"), state("t2")]);
    let request = frame(
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default(),
    );
    let answer: ListTransactionsResponse = filtered(
        run(&request, &["transactional-id:t2"]).unwrap(),
        ApiKey::ListTransactions,
        1,
        &broker,
    );
    assert_eq!(answer.transaction_states.len(), 1);
    assert_eq!(
        answer.transaction_states[0].transactional_id,
        TransactionalId(s("t1"))
    );
}

#[test]
fn group_heartbeats_refuse_undescribable_subscriptions() {
    for v in [0, 1] {
        let answer: ConsumerGroupHeartbeatResponse = respond(
            run(&sample(ApiKey::ConsumerGroupHeartbeat, v), &["topic:b"]).unwrap(),
            ApiKey::ConsumerGroupHeartbeat,
            v,
        );
        assert_eq!(answer.error_code, 29);
    }
    let answer: ShareGroupHeartbeatResponse = respond(
        run(&sample(ApiKey::ShareGroupHeartbeat, 1), &["topic:a"]).unwrap(),
        ApiKey::ShareGroupHeartbeat,
        1,
    );
    assert_eq!(answer.error_code, 29);
    // A regex subscription is the broker's to resolve.
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group("g"))
        .with_subscribed_topic_regex(Some(s("secret.*")));
    assert!(is_forward(&run(
        &frame(ApiKey::ConsumerGroupHeartbeat, 1, &request),
        &["topic:b"]
    )));
}

#[test]
fn described_groups_with_hidden_assigned_topics_are_refused() {
    let member = |t: &str| {
        consumer_group_describe_response::Member::default().with_assignment(
            consumer_group_describe_response::Assignment::default().with_topic_partitions(vec![
                consumer_group_describe_response::TopicPartitions::default()
                    .with_topic_name(topic(t)),
            ]),
        )
    };
    let described = |g: &str, t: &str| {
        consumer_group_describe_response::DescribedGroup::default()
            .with_group_id(group(g))
            .with_group_state(s("Stable"))
            .with_members(vec![member(t)])
    };
    let broker = ConsumerGroupDescribeResponse::default()
        .with_groups(vec![described("g", "secret"), described("g2", "a")]);
    let outcome = run(&sample(ApiKey::ConsumerGroupDescribe, 1), &["topic:secret"]).unwrap();
    let answer: ConsumerGroupDescribeResponse =
        filtered(outcome, ApiKey::ConsumerGroupDescribe, 1, &broker);
    assert_eq!(
        (answer.groups[0].error_code, answer.groups[0].members.len()),
        (29, 0)
    );
    assert_eq!(
        (answer.groups[1].error_code, answer.groups[1].members.len()),
        (0, 1)
    );
}

#[test]
fn share_fetches_of_unknown_topic_ids_fail_closed() {
    let request = ShareFetchRequest::default()
        .with_group_id(Some(group("g")))
        .with_topics(vec![share_fetch_request::FetchTopic::default()
            .with_topic_id(Default::default())
            .with_partitions(vec![
                share_fetch_request::FetchPartition::default().with_acknowledgement_batches(vec![
                    share_fetch_request::AcknowledgementBatch::default()
                        .with_acknowledge_types(vec![1]),
                ]),
            ])]);
    let answer: ShareFetchResponse = respond(
        run(&frame(ApiKey::ShareFetch, 1, &request), &[]).unwrap(),
        ApiKey::ShareFetch,
        1,
    );
    assert_eq!(answer.error_code, 100);
}

#[test]
fn share_group_offsets_are_spliced_like_offset_fetch() {
    let outcome = run(&sample(ApiKey::DescribeShareGroupOffsets, 0), &["topic:a"]).unwrap();
    let broker = DescribeShareGroupOffsetsResponse::default().with_groups(vec![
        describe_share_group_offsets_response::DescribeShareGroupOffsetsResponseGroup::default()
            .with_group_id(group("g"))
            .with_topics(vec![
                describe_share_group_offsets_response::DescribeShareGroupOffsetsResponseTopic::default()
                    .with_topic_name(topic("b")),
            ]),
    ]);
    let (forwarded, answer): (_, DescribeShareGroupOffsetsResponse) =
        rewrite(outcome, ApiKey::DescribeShareGroupOffsets, 0, &broker);
    let sent: DescribeShareGroupOffsetsRequest = request_body(&forwarded, 0);
    let topics = sent.groups[0].topics.as_ref().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].topic_name, topic("b"));
    let names: Vec<_> = (answer.groups[0].topics.iter())
        .map(|t| {
            (
                t.topic_name.to_string(),
                t.partitions.first().map_or(0, |p| p.error_code),
            )
        })
        .collect();
    assert_eq!(names, vec![("a".into(), 29), ("b".into(), 0)]);
}
