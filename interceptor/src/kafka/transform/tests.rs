//! Frames built with the `kafka-protocol` crate's encoders at every supported version, located
//! and rewritten here, and decoded back with the crate: the records found must be the ones
//! encoded, and a rewrite must change nothing but the records.

use std::{collections::BTreeMap, fmt::Debug};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        fetch_response::{
            AbortedTransaction, EpochEndOffset, FetchableTopicResponse,
            LeaderIdAndEpoch as FetchLeader, NodeEndpoint as FetchNode, PartitionData, SnapshotId,
        },
        produce_request::{PartitionProduceData, TopicProduceData},
        share_fetch_response::{
            AcquiredRecords, LeaderIdAndEpoch as ShareLeader, NodeEndpoint as ShareNode,
            PartitionData as SharePartition, ShareFetchableTopicResponse,
        },
        ApiKey, BrokerId, FetchResponse, ProduceRequest, ProducerId, RequestHeader as CrateHeader,
        ResponseHeader, ShareFetchResponse, TopicName, TransactionalId,
    },
    protocol::{Decodable, Encodable, StrBytes},
    records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType},
};
use proptest::prelude::*;

use super::*;
use crate::kafka::{HeaderError, RequestHeader};

// ---------------------------------------------------------------------------------------------
// Building frames

/// A record batch of `n` records whose bytes depend on `seed`.
fn batch(seed: u8, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 3,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{seed}-{i}"))),
            value: Some(Bytes::from(vec![seed; 10 + i])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn tags(n: u8) -> BTreeMap<i32, Bytes> {
    BTreeMap::from([
        (50 + i32::from(n), Bytes::from(vec![n; 3])),
        (90, Bytes::new()),
    ])
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

fn id(n: u8) -> uuid::Uuid {
    let mut id = [0x5a; 16];
    id[15] = n;
    uuid::Uuid::from_bytes(id)
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The records of the fixtures' partitions, in frame order: batches of several sizes (one
/// whose length needs a two-byte varint), null, and empty.
fn fixture_records() -> Vec<Option<Bytes>> {
    vec![
        Some(batch(1, 3)),
        None,
        Some(batch(2, 1)),
        Some(Bytes::new()),
        Some(batch(3, 2)),
    ]
}

/// Topic `t` of the fixtures and its partitions' records: topic 0 gets records 0–2, topic 1
/// records 3–4.
fn split_records(records: Vec<Option<Bytes>>) -> [Vec<(i32, Option<Bytes>)>; 2] {
    let mut it = records.into_iter();
    let first = (0..3).map(|p| (p, it.next().unwrap())).collect();
    let second = (7..9).map(|p| (p, it.next().unwrap())).collect();
    [first, second]
}

fn put_frame(body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(0);
    body(&mut out);
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

fn produce_request(version: i16) -> ProduceRequest {
    let flexible = produce_is_flexible(version);
    let topics = split_records(fixture_records());
    let topic = |t: usize, parts: &[(i32, Option<Bytes>)]| {
        let parts = parts
            .iter()
            .map(|(index, records)| {
                let p = PartitionProduceData::default()
                    .with_index(*index)
                    .with_records(records.clone());
                if flexible {
                    p.with_unknown_tagged_fields(tags(*index as u8))
                } else {
                    p
                }
            })
            .collect();
        let data = TopicProduceData::default().with_partition_data(parts);
        let data = if version >= 13 {
            data.with_topic_id(id(t as u8))
        } else {
            data.with_name(name(["alpha", "beta"][t]))
        };
        if flexible {
            data.with_unknown_tagged_fields(tags(20 + t as u8))
        } else {
            data
        }
    };
    let request = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(text("tx-1"))))
        .with_acks(-1)
        .with_timeout_ms(1234)
        .with_topic_data(vec![topic(0, &topics[0]), topic(1, &topics[1])]);
    if flexible {
        request.with_unknown_tagged_fields(tags(30))
    } else {
        request
    }
}

fn produce_frame(version: i16, body: &ProduceRequest) -> Bytes {
    let header_version = ApiKey::Produce.request_header_version(version);
    let mut header = CrateHeader::default()
        .with_request_api_key(PRODUCE)
        .with_request_api_version(version)
        .with_correlation_id(99)
        .with_client_id(Some(text("producer-1")));
    if header_version >= 2 {
        header.unknown_tagged_fields = tags(40);
    }
    put_frame(|out| {
        header.encode(out, header_version).unwrap();
        body.encode(out, version).unwrap();
    })
}

fn response_frame<T: Encodable>(version: i16, header_version: i16, body: &T) -> Bytes {
    let mut header = ResponseHeader::default().with_correlation_id(99);
    if header_version >= 1 {
        header.unknown_tagged_fields = tags(41);
    }
    put_frame(|out| {
        header.encode(out, header_version).unwrap();
        body.encode(out, version).unwrap();
    })
}

fn fetch_response(version: i16) -> FetchResponse {
    let flexible = fetch_is_flexible(version);
    let topics = split_records(fixture_records());
    let partition = |index: i32, records: &Option<Bytes>| {
        let mut p = PartitionData::default()
            .with_partition_index(index)
            .with_error_code(index as i16)
            .with_high_watermark(1000 + i64::from(index))
            .with_last_stable_offset(900 + i64::from(index))
            .with_records(records.clone());
        if version >= 5 {
            p.log_start_offset = 10 + i64::from(index);
        }
        // Null, empty and non-empty aborted transactions.
        p.aborted_transactions = match index % 3 {
            0 => Some(vec![
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(77))
                    .with_first_offset(5),
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(78))
                    .with_first_offset(6),
            ]),
            1 => None,
            _ => Some(vec![]),
        };
        if flexible {
            if let Some(aborted) = &mut p.aborted_transactions {
                for a in aborted {
                    a.unknown_tagged_fields = tags(1);
                }
            }
        }
        if version >= 11 {
            p.preferred_read_replica = BrokerId(index + 100);
        }
        if flexible {
            if index % 2 == 0 {
                p.diverging_epoch = EpochEndOffset::default().with_epoch(4).with_end_offset(444);
                p.snapshot_id = SnapshotId::default().with_end_offset(55).with_epoch(5);
            }
            p.current_leader = FetchLeader::default()
                .with_leader_id(BrokerId(2))
                .with_leader_epoch(index + 1);
            p.unknown_tagged_fields = tags(index as u8);
        }
        p
    };
    let topic = |t: usize, parts: &[(i32, Option<Bytes>)]| {
        let mut topic = FetchableTopicResponse::default()
            .with_partitions(parts.iter().map(|(i, r)| partition(*i, r)).collect());
        if version >= 13 {
            topic.topic_id = id(t as u8);
        } else {
            topic.topic = name(["alpha", "beta"][t]);
        }
        if flexible {
            topic.unknown_tagged_fields = tags(20 + t as u8);
        }
        topic
    };
    let mut response = FetchResponse::default()
        .with_throttle_time_ms(17)
        .with_responses(vec![topic(0, &topics[0]), topic(1, &topics[1])]);
    if version >= 7 {
        response.error_code = 0;
        response.session_id = 4321;
    }
    if version >= 16 {
        response.node_endpoints = vec![FetchNode::default()
            .with_node_id(BrokerId(2))
            .with_host(text("broker-2"))
            .with_port(9092)
            .with_rack(Some(text("rack-a")))];
    }
    if flexible {
        response.unknown_tagged_fields = tags(30);
    }
    response
}

fn share_fetch_response() -> ShareFetchResponse {
    let topics = split_records(fixture_records());
    let partition = |index: i32, records: &Option<Bytes>| {
        SharePartition::default()
            .with_partition_index(index)
            .with_error_code(0)
            .with_error_message((index == 1).then(|| text("not this one")))
            .with_acknowledge_error_code(index as i16)
            .with_acknowledge_error_message((index == 2).then(|| text("ack failed")))
            .with_current_leader(
                ShareLeader::default()
                    .with_leader_id(3)
                    .with_leader_epoch(index)
                    .with_unknown_tagged_fields(tags(2)),
            )
            .with_records(records.clone())
            .with_acquired_records(
                (0..index)
                    .map(|i| {
                        AcquiredRecords::default()
                            .with_first_offset(i64::from(i) * 10)
                            .with_last_offset(i64::from(i) * 10 + 9)
                            .with_delivery_count(1)
                            .with_unknown_tagged_fields(tags(3))
                    })
                    .collect(),
            )
            .with_unknown_tagged_fields(tags(index as u8))
    };
    let topic = |t: usize, parts: &[(i32, Option<Bytes>)]| {
        ShareFetchableTopicResponse::default()
            .with_topic_id(id(t as u8))
            .with_partitions(parts.iter().map(|(i, r)| partition(*i, r)).collect())
            .with_unknown_tagged_fields(tags(20 + t as u8))
    };
    ShareFetchResponse::default()
        .with_throttle_time_ms(3)
        .with_error_code(0)
        .with_error_message(Some(text("fine")))
        .with_acquisition_lock_timeout_ms(30_000)
        .with_responses(vec![topic(0, &topics[0]), topic(1, &topics[1])])
        .with_node_endpoints(vec![
            ShareNode::default()
                .with_node_id(BrokerId(3))
                .with_host(text("broker-3"))
                .with_port(9093)
                .with_rack(None)
                .with_unknown_tagged_fields(tags(4)),
            ShareNode::default()
                .with_node_id(BrokerId(4))
                .with_host(text("broker-4"))
                .with_port(9094)
                .with_rack(Some(text("rack-b"))),
        ])
        .with_unknown_tagged_fields(tags(30))
}

// ---------------------------------------------------------------------------------------------
// Decoding frames back

/// A topic as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Name(String),
    Id([u8; 16]),
}

impl From<TopicRef<'_>> for Key {
    fn from(topic: TopicRef<'_>) -> Self {
        match topic {
            TopicRef::Name(name) => Key::Name(name.into()),
            TopicRef::Id(id) => Key::Id(id),
        }
    }
}

/// One api's frames: how to find their records, decode them, and reach each partition's
/// records in the decoded message.
trait Api {
    type Body: Decodable + PartialEq + Debug + Clone;
    fn flexible(version: i16) -> bool;
    fn locate(frame: &[u8], version: i16) -> Result<Vec<RecordsField<'_>>, TransformError>;
    /// The header (decoded, for comparing) and the body.
    fn decode(frame: &Bytes, version: i16) -> (Vec<u8>, Self::Body);
    fn partitions(body: &mut Self::Body, version: i16) -> Vec<(Key, i32, &mut Option<Bytes>)>;
}

fn decode_response<T: Decodable>(frame: &Bytes, version: i16, header_version: i16) -> (Vec<u8>, T) {
    let len = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4, "length prefix");
    let mut buf = frame.slice(4..);
    let header = ResponseHeader::decode(&mut buf, header_version).unwrap();
    let body = T::decode(&mut buf, version).unwrap();
    assert!(buf.is_empty(), "bytes after the body");
    (format!("{header:?}").into_bytes(), body)
}

fn key(by_id: bool, name: &TopicName, id: uuid::Uuid) -> Key {
    if by_id {
        Key::Id(id.into_bytes())
    } else {
        Key::Name(name.0.to_string())
    }
}

struct Produce;
struct Fetch;
struct ShareFetch;

impl Api for Produce {
    type Body = ProduceRequest;
    fn flexible(version: i16) -> bool {
        produce_is_flexible(version)
    }
    fn locate(frame: &[u8], _version: i16) -> Result<Vec<RecordsField<'_>>, TransformError> {
        let header = RequestHeader::parse(&Bytes::copy_from_slice(frame)).unwrap();
        produce_records(frame, &header)
    }
    fn decode(frame: &Bytes, version: i16) -> (Vec<u8>, ProduceRequest) {
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "length prefix");
        let header = RequestHeader::parse(frame).unwrap();
        assert_eq!(header.api_version, version);
        let mut buf = frame.slice(header.body_offset..);
        let body = ProduceRequest::decode(&mut buf, version).unwrap();
        assert!(buf.is_empty(), "bytes after the body");
        (frame[4..header.body_offset].to_vec(), body)
    }
    fn partitions(body: &mut ProduceRequest, version: i16) -> Vec<(Key, i32, &mut Option<Bytes>)> {
        body.topic_data
            .iter_mut()
            .flat_map(|t| {
                let key = key(version >= 13, &t.name, t.topic_id);
                t.partition_data
                    .iter_mut()
                    .map(move |p| (key.clone(), p.index, &mut p.records))
            })
            .collect()
    }
}

impl Api for Fetch {
    type Body = FetchResponse;
    fn flexible(version: i16) -> bool {
        fetch_is_flexible(version)
    }
    fn locate(frame: &[u8], version: i16) -> Result<Vec<RecordsField<'_>>, TransformError> {
        fetch_records(frame, version)
    }
    fn decode(frame: &Bytes, version: i16) -> (Vec<u8>, FetchResponse) {
        decode_response(
            frame,
            version,
            ApiKey::Fetch.response_header_version(version),
        )
    }
    fn partitions(body: &mut FetchResponse, version: i16) -> Vec<(Key, i32, &mut Option<Bytes>)> {
        body.responses
            .iter_mut()
            .flat_map(|t| {
                let key = key(version >= 13, &t.topic, t.topic_id);
                t.partitions
                    .iter_mut()
                    .map(move |p| (key.clone(), p.partition_index, &mut p.records))
            })
            .collect()
    }
}

impl Api for ShareFetch {
    type Body = ShareFetchResponse;
    fn flexible(version: i16) -> bool {
        share_fetch_is_flexible(version)
    }
    fn locate(frame: &[u8], version: i16) -> Result<Vec<RecordsField<'_>>, TransformError> {
        share_fetch_records(frame, version)
    }
    fn decode(frame: &Bytes, version: i16) -> (Vec<u8>, ShareFetchResponse) {
        decode_response(frame, version, 1)
    }
    fn partitions(
        body: &mut ShareFetchResponse,
        _version: i16,
    ) -> Vec<(Key, i32, &mut Option<Bytes>)> {
        body.responses
            .iter_mut()
            .flat_map(|t| {
                let key = Key::Id(t.topic_id.into_bytes());
                t.partitions
                    .iter_mut()
                    .map(move |p| (key.clone(), p.partition_index, &mut p.records))
            })
            .collect()
    }
}

fn produce_fixture(version: i16) -> Bytes {
    produce_frame(version, &produce_request(version))
}

fn fetch_fixture(version: i16) -> Bytes {
    response_frame(
        version,
        ApiKey::Fetch.response_header_version(version),
        &fetch_response(version),
    )
}

fn share_fetch_fixture() -> Bytes {
    response_frame(1, 1, &share_fetch_response())
}

/// Every fixture: which api, its version, the frame.
fn all_fixtures() -> Vec<(i16, i16, Bytes)> {
    let mut out = Vec::new();
    for v in PRODUCE_VERSIONS {
        out.push((PRODUCE, v, produce_fixture(v)));
    }
    for v in FETCH_VERSIONS {
        out.push((FETCH, v, fetch_fixture(v)));
    }
    out.push((SHARE_FETCH, 1, share_fetch_fixture()));
    out
}

fn locate_any(
    key: i16,
    frame: &[u8],
    version: i16,
) -> Result<Vec<RecordsField<'_>>, TransformError> {
    match key {
        PRODUCE => Produce::locate(frame, version),
        FETCH => fetch_records(frame, version),
        _ => share_fetch_records(frame, version),
    }
}

fn flexible_any(key: i16, version: i16) -> bool {
    match key {
        PRODUCE => produce_is_flexible(version),
        FETCH => fetch_is_flexible(version),
        _ => share_fetch_is_flexible(version),
    }
}

// ---------------------------------------------------------------------------------------------
// The round trip

fn contents(frame: &[u8], field: &RecordsField<'_>) -> Option<Bytes> {
    (!field.null).then(|| Bytes::copy_from_slice(&frame[field.records.clone()]))
}

/// New records for field `i` of a rewrite: longer, shorter, null, or left alone (`None`).
fn rewrite(i: usize) -> Option<Option<Bytes>> {
    match i % 4 {
        0 => Some(Some(batch(9, 12))),
        1 => Some(Some(batch(8, 1))),
        2 => Some(None),
        _ => None,
    }
}

fn round_trip<A: Api>(version: i16, frame: &Bytes) {
    let what = format!("{} v{version}", std::any::type_name::<A>());
    let flexible = A::flexible(version);
    let (header, mut original) = A::decode(frame, version);
    let found = A::locate(frame, version).unwrap_or_else(|e| panic!("{what}: {e}"));

    // The fields found are the ones encoded, in frame order.
    let expected: Vec<(Key, i32, Option<Bytes>)> = A::partitions(&mut original, version)
        .into_iter()
        .map(|(k, p, r)| (k, p, r.clone()))
        .collect();
    let got: Vec<(Key, i32, Option<Bytes>)> = found
        .iter()
        .map(|f| (Key::from(f.topic), f.partition, contents(frame, f)))
        .collect();
    assert_eq!(got, expected, "{what}");
    assert_eq!(got.len(), 5, "{what}");
    for f in &found {
        assert!(f.field.start < f.records.start || f.null, "{what}: {f:?}");
        assert_eq!(f.records.end, f.field.end, "{what}: {f:?}");
        if f.null {
            assert!(f.records.is_empty(), "{what}: {f:?}");
        }
    }

    // Nothing replaced, or each field replaced by itself: the same frame, bit for bit.
    let none: &[(RecordsField<'_>, Option<Bytes>)] = &[];
    assert_eq!(
        replace_records(frame, flexible, none).unwrap(),
        *frame,
        "{what}"
    );
    let same: Vec<_> = found
        .iter()
        .map(|f| (f.clone(), contents(frame, f)))
        .collect();
    assert_eq!(
        replace_records(frame, flexible, &same).unwrap(),
        *frame,
        "{what}"
    );

    // Longer, shorter, null and untouched records, given in reverse frame order.
    let mut changes: Vec<(RecordsField<'_>, Option<Bytes>)> = found
        .iter()
        .enumerate()
        .filter_map(|(i, f)| rewrite(i).map(|r| (f.clone(), r)))
        .rev()
        .collect();
    let rewritten = replace_records(frame, flexible, &changes).unwrap();
    let (new_header, decoded) = A::decode(&rewritten, version);
    assert_eq!(new_header, header, "{what}: header");
    let mut want = original.clone();
    for (i, (_, _, records)) in A::partitions(&mut want, version).into_iter().enumerate() {
        if let Some(new) = rewrite(i) {
            *records = new;
        }
    }
    assert_eq!(decoded, want, "{what}");
    // Everything before the first replaced field is untouched.
    let first = found[0].field.start;
    assert_eq!(rewritten[4..first], frame[4..first], "{what}");

    // The rewritten frame locates to the new records.
    let again = A::locate(&rewritten, version).unwrap();
    let got: Vec<Option<Bytes>> = again.iter().map(|f| contents(&rewritten, f)).collect();
    let mut want_records = Vec::new();
    for (i, f) in found.iter().enumerate() {
        want_records.push(rewrite(i).unwrap_or_else(|| contents(frame, f)));
    }
    assert_eq!(got, want_records, "{what}");

    // And rewriting it back gives the original frame.
    changes.clear();
    for (f, records) in again.iter().zip(&expected) {
        changes.push((f.clone(), records.2.clone()));
    }
    assert_eq!(
        replace_records(&rewritten, flexible, &changes).unwrap(),
        *frame,
        "{what}: back"
    );
}

#[test]
fn produce_every_version_round_trips() {
    for version in PRODUCE_VERSIONS {
        round_trip::<Produce>(version, &produce_fixture(version));
    }
}

#[test]
fn fetch_every_version_round_trips() {
    for version in FETCH_VERSIONS {
        round_trip::<Fetch>(version, &fetch_fixture(version));
    }
}

#[test]
fn share_fetch_round_trips() {
    for version in SHARE_FETCH_VERSIONS {
        round_trip::<ShareFetch>(version, &share_fetch_fixture());
    }
}

#[test]
fn records_are_zero_copy_ranges_into_the_frame() {
    let frame = fetch_fixture(18);
    let found = fetch_records(&frame, 18).unwrap();
    let batch = batch(1, 3);
    assert_eq!(&frame[found[0].records.clone()], &batch[..]);
    // The first partition's records: varint length + 1, then the batch.
    let mut prefix = Vec::new();
    crate::kafka::wire::tests::put_uvarint(&mut prefix, batch.len() as u32 + 1);
    assert_eq!(&frame[found[0].field.clone()][..prefix.len()], &prefix[..]);
    assert!(found[1].null);
    assert_eq!(&frame[found[1].field.clone()], &[0]);
    assert_eq!(found[1].records, found[1].field.end..found[1].field.end);

    let frame = fetch_fixture(11);
    let found = fetch_records(&frame, 11).unwrap();
    assert_eq!(&frame[found[1].field.clone()], &(-1i32).to_be_bytes());
    assert_eq!(&frame[found[3].field.clone()], &0i32.to_be_bytes());
}

#[test]
fn empty_topic_and_partition_arrays() {
    for version in FETCH_VERSIONS {
        let body = FetchResponse::default()
            .with_responses(vec![FetchableTopicResponse::default().with_topic_id(id(1))]);
        let frame = response_frame(
            version,
            ApiKey::Fetch.response_header_version(version),
            &body,
        );
        assert_eq!(fetch_records(&frame, version), Ok(vec![]), "v{version}");
    }
    for version in PRODUCE_VERSIONS {
        let frame = produce_frame(version, &ProduceRequest::default());
        let header = RequestHeader::parse(&frame).unwrap();
        assert_eq!(produce_records(&frame, &header), Ok(vec![]), "v{version}");
    }
}

#[test]
fn a_non_minimal_varint_prefix_is_kept_when_the_length_does_not_change() {
    // Produce v9 with one partition whose records length is written in two bytes.
    let records = batch(1, 1);
    let body = ProduceRequest::default().with_topic_data(vec![TopicProduceData::default()
        .with_name(name("t"))
        .with_partition_data(vec![PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(records.clone()))])]);
    let frame = produce_frame(9, &body);
    let header = RequestHeader::parse(&frame).unwrap();
    let field = produce_records(&frame, &header).unwrap().remove(0);
    let at = field.field.start;
    let value = records.len() as u32 + 1;
    assert!(value < 0x80, "the fixture's length fits one byte");
    let mut bytes = frame[..at].to_vec();
    bytes.extend([(value as u8) | 0x80, 0x00]);
    bytes.extend_from_slice(&frame[at + 1..]);
    let len = (bytes.len() - 4) as i32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    let long = Bytes::from(bytes);

    let header = RequestHeader::parse(&long).unwrap();
    let field = produce_records(&long, &header).unwrap().remove(0);
    assert_eq!(field.field.len(), records.len() + 2);
    let same = [(field.clone(), Some(records.clone()))];
    assert_eq!(replace_records(&long, true, &same).unwrap(), long);
    // A new length is written minimally: the frame shrinks by the byte saved and the batch.
    let shorter = [(field, Some(Bytes::from_static(b"x")))];
    let out = replace_records(&long, true, &shorter).unwrap();
    assert_eq!(out.len(), long.len() - 1 - (records.len() - 1));
    let header = RequestHeader::parse(&out).unwrap();
    let field = produce_records(&out, &header).unwrap().remove(0);
    assert_eq!(&out[field.field.clone()], &[2, b'x']);
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[test]
fn versions_and_keys_outside_the_supported_ones_are_refused() {
    let frame = produce_fixture(3);
    let mut header = RequestHeader::parse(&frame).unwrap();
    header.api_version = 2;
    assert_eq!(
        produce_records(&frame, &header),
        Err(TransformError::UnsupportedVersion {
            api: "Produce",
            version: 2
        })
    );
    header.api_version = 14;
    assert!(matches!(
        produce_records(&frame, &header),
        Err(TransformError::UnsupportedVersion { .. })
    ));
    header.api_key = 1;
    assert_eq!(
        produce_records(&frame, &header),
        Err(TransformError::WrongApiKey {
            expected: "Produce",
            found: 1
        })
    );
    let frame = fetch_fixture(4);
    for version in [3, 19, -1] {
        assert!(matches!(
            fetch_records(&frame, version),
            Err(TransformError::UnsupportedVersion { api: "Fetch", .. })
        ));
    }
    for version in [0, 2] {
        assert!(matches!(
            share_fetch_records(&share_fetch_fixture(), version),
            Err(TransformError::UnsupportedVersion {
                api: "ShareFetch",
                ..
            })
        ));
    }
}

/// `frame` with its body cut to `len` bytes after the prefix, and the prefix fixed.
fn cut(frame: &[u8], len: usize) -> Vec<u8> {
    let mut out = frame[..len].to_vec();
    if len >= 4 {
        let declared = (len - 4) as i32;
        out[..4].copy_from_slice(&declared.to_be_bytes());
    }
    out
}

#[test]
fn every_truncation_is_an_error_at_or_before_the_cut() {
    for (key, version, frame) in all_fixtures() {
        for len in 0..frame.len() {
            let short = cut(&frame, len);
            let got = if key == PRODUCE {
                // The caller parsed the header, from a frame that may be cut short after it.
                let header = RequestHeader::parse(&frame).unwrap();
                produce_records(&short, &header)
            } else {
                locate_any(key, &short, version)
            };
            match got {
                Ok(found) => panic!("key {key} v{version} cut at {len}: {found:?}"),
                Err(TransformError::Malformed { offset, .. }) => {
                    assert!(offset <= len, "key {key} v{version}: {offset} > {len}")
                }
                Err(e) => panic!("key {key} v{version} cut at {len}: {e}"),
            }
        }
    }
}

#[test]
fn a_wrong_length_prefix_and_trailing_bytes_are_refused() {
    let frame = fetch_fixture(12);
    let mut longer = frame.to_vec();
    longer.push(0);
    assert_eq!(
        fetch_records(&longer, 12),
        Err(TransformError::Malformed {
            api: "Fetch",
            version: 12,
            offset: 0,
            error: HeaderError::Invalid("length prefix")
        })
    );
    let len = (longer.len() - 4) as i32;
    longer[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        fetch_records(&longer, 12),
        Err(TransformError::Malformed {
            api: "Fetch",
            version: 12,
            offset: frame.len(),
            error: HeaderError::Invalid("bytes after the body")
        })
    );
}

#[test]
fn a_lying_count_is_refused_before_anything_is_sized_from_it() {
    // Fetch v11: the topic count right after throttle, error code and session id.
    let frame = fetch_fixture(11);
    let at = 4 + 4 + 4 + 2 + 4;
    let mut bad = frame.to_vec();
    bad[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
    let err = fetch_records(&bad, 11).unwrap_err();
    assert_eq!(
        err,
        TransformError::Malformed {
            api: "Fetch",
            version: 11,
            offset: at + 4,
            error: HeaderError::Truncated("responses")
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "Fetch v11: frame truncated in responses (at byte {} of the frame)",
            at + 4
        )
    );
    bad[at..at + 4].copy_from_slice(&(-2i32).to_be_bytes());
    assert!(matches!(
        fetch_records(&bad, 11),
        Err(TransformError::Malformed {
            error: HeaderError::Invalid("responses"),
            ..
        })
    ));
}

#[test]
fn a_topic_name_that_is_not_utf8_is_refused() {
    let frame = produce_fixture(8);
    let at = frame.windows(5).position(|w| w == b"alpha").unwrap();
    let mut bad = frame.to_vec();
    bad[at] = 0xff;
    let err = Produce::locate(&bad, 8).unwrap_err();
    assert!(
        matches!(
            err,
            TransformError::Malformed {
                error: HeaderError::Invalid("topic name"),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn replacements_that_are_not_fields_of_the_frame_are_refused() {
    let frame = fetch_fixture(12);
    let found = fetch_records(&frame, 12).unwrap();
    fn some<'a>(f: &RecordsField<'a>) -> (RecordsField<'a>, Option<Bytes>) {
        (f.clone(), Some(Bytes::from_static(b"r")))
    }
    let reason = |r: Result<Bytes, TransformError>| match r {
        Err(TransformError::BadReplacement { reason, .. }) => reason,
        other => panic!("{other:?}"),
    };

    // The classic encoding of a flexible frame's field.
    assert_eq!(
        reason(replace_records(&frame, false, &[some(&found[0])])),
        "not a records field of this frame in this encoding"
    );
    // The same field twice.
    assert_eq!(
        reason(replace_records(
            &frame,
            true,
            &[some(&found[2]), some(&found[2])]
        )),
        "overlaps the length prefix or another replaced field"
    );
    // Moved, shortened, out of bounds, over the length prefix, null-ness flipped.
    let mut moved = found[0].clone();
    moved.field.start += 1;
    let mut short = found[0].clone();
    short.records.end -= 1;
    let mut outside = found[4].clone();
    outside.field = frame.len()..frame.len() + 5;
    let mut prefix = found[0].clone();
    prefix.field = 0..found[0].field.end;
    let mut flipped = found[1].clone();
    flipped.null = false;
    for bad in [moved, short, outside, flipped] {
        assert_eq!(
            reason(replace_records(&frame, true, &[some(&bad)])),
            "not a records field of this frame in this encoding",
            "{bad:?}"
        );
    }
    assert_eq!(
        reason(replace_records(&frame, true, &[some(&prefix)])),
        "overlaps the length prefix or another replaced field"
    );
    assert_eq!(
        replace_records(&frame[..3], true, &[some(&found[0])]),
        Err(TransformError::ShortFrame)
    );
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input

fn fixtures() -> &'static [(i16, i16, Bytes)] {
    static FIXTURES: std::sync::OnceLock<Vec<(i16, i16, Bytes)>> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(all_fixtures)
}

/// Everything the module offers, on one frame: never a panic; whatever is located is inside
/// the frame, and a rewrite of an accepted frame is accepted again with the new records.
fn exercise(key: i16, version: i16, frame: &[u8]) {
    let Ok(found) = locate_any(key, frame, version) else {
        return;
    };
    let flexible = flexible_any(key, version);
    for f in &found {
        assert!(f.field.end <= frame.len() && f.field.start < f.field.end);
        assert!(f.field.start <= f.records.start && f.records.end == f.field.end);
    }
    let changes: Vec<_> = found
        .iter()
        .enumerate()
        .map(|(i, f)| (f.clone(), (i % 2 == 0).then(|| vec![i as u8; i * 70])))
        .collect();
    let out = replace_records(frame, flexible, &changes).unwrap();
    let again = locate_any(key, &out, version).unwrap();
    assert_eq!(again.len(), found.len());
    for (f, (_, records)) in again.iter().zip(&changes) {
        assert_eq!(f.null, records.is_none());
        assert_eq!(
            &out[f.records.clone()],
            records.as_deref().unwrap_or_default()
        );
    }
}

proptest! {
    #[test]
    fn mutated_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut_at in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (key, version, frame) = pick.get(fixtures()).clone();
        let mut bytes = frame.to_vec();
        for (at, byte) in edits {
            // Leave the length prefix alone so the body is what gets exercised.
            let at = 4 + at.index(bytes.len() - 4);
            bytes[at] = byte;
        }
        if truncate {
            bytes = cut(&bytes, cut_at.index(bytes.len()));
        }
        if key == PRODUCE {
            // The request header is the caller's; only frames whose header still parses
            // reach this module.
            let Ok(header) = RequestHeader::parse(&Bytes::from(bytes.clone())) else {
                return Ok(());
            };
            if produce_records(&bytes, &header).is_ok() {
                exercise_produce(&bytes, &header);
            }
        } else {
            exercise(key, version, &bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        version in 0i16..20,
        fix_prefix in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if fix_prefix && bytes.len() >= 4 {
            let len = (bytes.len() - 4) as i32;
            bytes[..4].copy_from_slice(&len.to_be_bytes());
        }
        exercise(FETCH, version, &bytes);
        exercise(SHARE_FETCH, version, &bytes);
        if let Ok(header) = RequestHeader::parse(&Bytes::from(bytes.clone())) {
            let header = RequestHeader { api_key: PRODUCE, api_version: version, ..header };
            let _ = produce_records(&bytes, &header);
        }
        let fake = RecordsField {
            topic: TopicRef::Id([0; 16]),
            partition: 0,
            records: 5..7,
            null: false,
            field: 4..7,
        };
        let _ = replace_records(&bytes, version % 2 == 0, &[(fake, Some(b"abc".to_vec()))]);
    }
}

/// [`exercise`] for Produce, whose header the caller parses.
fn exercise_produce(frame: &[u8], header: &RequestHeader) {
    let found = produce_records(frame, header).unwrap();
    let flexible = produce_is_flexible(header.api_version);
    let changes: Vec<_> = found
        .iter()
        .enumerate()
        .map(|(i, f)| (f.clone(), (i % 2 == 1).then(|| vec![7u8; i * 90])))
        .collect();
    let out = replace_records(frame, flexible, &changes).unwrap();
    let out_header = RequestHeader::parse(&out).unwrap();
    let again = produce_records(&out, &out_header).unwrap();
    assert_eq!(again.len(), found.len());
    for (f, (_, records)) in again.iter().zip(&changes) {
        assert_eq!(
            &out[f.records.clone()],
            records.as_deref().unwrap_or_default()
        );
    }
}
