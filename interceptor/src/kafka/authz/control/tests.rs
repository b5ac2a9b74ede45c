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
use crate::policy::{AccessCheck, Check, Operation, Resource, ResourceKind};

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
