//! The Kafka sink's requests and the broker's answers to them.
//!
//! Requests and record batches are encoded with the `kafka-protocol` crate. Answers are
//! network input: the crate's decoders size `Vec::with_capacity` from counts read off the
//! wire, so every count is first checked against the bytes actually present (as the data
//! path does for ApiVersions), and a frame is at most [`MAX_RESPONSE_BYTES`].

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    indexmap::IndexMap,
    messages::{
        metadata_request::MetadataRequestTopic,
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiKey, ApiVersionsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
        ProduceResponse, RequestHeader as WireHeader, TopicName,
    },
    protocol::{Decodable, Encodable, StrBytes},
    records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
    },
};

use super::sink::Entry;
use crate::kafka::{
    frame::LENGTH_PREFIX,
    header::{response_body_offset, response_correlation_id},
    wire::Reader,
    HeaderError,
};

/// Produce versions this sink speaks: v3 is the oldest Kafka 4 accepts; v9+ are flexible and
/// v10+ carry tagged fields (leader hints) that this sink does not use, so v8 is enough.
pub const PRODUCE_MIN_VERSION: i16 = 3;
pub const PRODUCE_MAX_VERSION: i16 = 8;
/// Metadata versions: v4 is the first that asks for auto-creation; v9+ are flexible.
pub const METADATA_MIN_VERSION: i16 = 4;
pub const METADATA_MAX_VERSION: i16 = 8;
/// The ApiVersions version asked first (KIP-511: a broker that does not know it answers v0).
pub const API_VERSIONS_VERSION: i16 = 3;
/// Answers larger than this are refused (a Produce answer for one partition is tiny).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The partition every event goes to (no Metadata lookup: see the module docs of `kafka`).
pub const PARTITION: i32 = 0;
/// The record header carrying the event's `seq`.
pub const SEQ_HEADER: &str = "seq";

/// A request frame (length prefix included).
pub fn request_frame<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    body: &T,
) -> Result<Bytes, String> {
    let header = WireHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let mut buf = BytesMut::new();
    buf.put_i32(0); // the length, filled in below
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .and_then(|()| body.encode(&mut buf, version))
        .map_err(|e| format!("encoding a {api_key:?} request: {e}"))?;
    let len = i32::try_from(buf.len() - LENGTH_PREFIX)
        .map_err(|_| format!("{api_key:?} request too large"))?;
    buf[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// One uncompressed magic-2 record batch: key and `seq` header = the seq in decimal, value =
/// the JSON line, timestamp = the event's time.
pub fn record_batch(entries: &[Entry]) -> Result<Bytes, String> {
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let seq = Bytes::from(e.seq.to_string());
            let mut headers = IndexMap::new();
            headers.insert(StrBytes::from_static_str(SEQ_HEADER), Some(seq.clone()));
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The crate starts a new batch wherever offset − sequence changes; counting
                // up from -1 keeps one batch whose base sequence is -1, a plain producer's.
                sequence: NO_SEQUENCE.wrapping_add(i as i32),
                timestamp: e.time_ms,
                key: Some(seq),
                value: Some(e.line.clone()),
                headers,
            }
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding a record batch: {e}"))?;
    Ok(out.freeze())
}

pub fn produce_request(topic: &str, acks: i16, timeout_ms: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(PARTITION)
                .with_records(Some(records))])])
}

/// The Produce version to use: the highest both sides speak.
pub fn produce_version(versions: &ApiVersionsResponse) -> Result<i16, String> {
    pick_version(
        versions,
        ApiKey::Produce,
        PRODUCE_MIN_VERSION,
        PRODUCE_MAX_VERSION,
    )
}

/// The Metadata version to use: the highest both sides speak.
pub fn metadata_version(versions: &ApiVersionsResponse) -> Result<i16, String> {
    pick_version(
        versions,
        ApiKey::Metadata,
        METADATA_MIN_VERSION,
        METADATA_MAX_VERSION,
    )
}

fn pick_version(
    versions: &ApiVersionsResponse,
    api: ApiKey,
    min: i16,
    max: i16,
) -> Result<i16, String> {
    let offered = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == api as i16)
        .ok_or_else(|| format!("the broker does not offer {api:?}"))?;
    let version = offered.max_version.min(max);
    if version < min || version < offered.min_version {
        return Err(format!(
            "the broker offers {api:?} v{}-v{}; this sink speaks v{min}-v{max}",
            offered.min_version, offered.max_version
        ));
    }
    Ok(version)
}

/// Metadata for `topic`, asking the broker to create it if it does that.
pub fn metadata_request(topic: &str) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_owned())),
        ))]))
        .with_allow_auto_topic_creation(true)
}

/// What the broker says about partition 0 of the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionState {
    /// It exists; its leader's node id.
    Ready { leader: i32 },
    /// The topic or the partition has this error (UNKNOWN_TOPIC_OR_PARTITION,
    /// LEADER_NOT_AVAILABLE while being created, TOPIC_AUTHORIZATION_FAILED, ...).
    Error(i16),
    /// The topic exists without a partition 0 (cannot happen in Kafka).
    Missing,
}

/// Decodes a Metadata answer frame (length prefix included) for `topic` partition 0.
pub fn decode_metadata_response(
    frame: &Bytes,
    version: i16,
    topic: &str,
) -> Result<PartitionState, String> {
    if !(METADATA_MIN_VERSION..=METADATA_MAX_VERSION).contains(&version) {
        return Err(format!("Metadata v{version} answers are not decoded here"));
    }
    let fail = |e: HeaderError| format!("invalid Metadata answer: {e}");
    let offset = response_body_offset(frame, ApiKey::Metadata as i16, version).map_err(fail)?;
    let body = frame.slice(offset..);
    check_metadata_counts(&body, version).map_err(fail)?;
    let response = MetadataResponse::decode(&mut body.clone(), version)
        .map_err(|e| format!("invalid Metadata answer: {e}"))?;
    let Some(t) = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
    else {
        return Err(format!("the Metadata answer has no entry for {topic}"));
    };
    if t.error_code != 0 {
        return Ok(PartitionState::Error(t.error_code));
    }
    Ok(
        match t.partitions.iter().find(|p| p.partition_index == PARTITION) {
            None => PartitionState::Missing,
            Some(p) if p.error_code != 0 => PartitionState::Error(p.error_code),
            Some(p) => PartitionState::Ready {
                leader: p.leader_id.0,
            },
        },
    )
}

/// Walks a classic (v4–v8) Metadata response body the way the crate's decoder will,
/// checking every array count against the bytes left.
fn check_metadata_counts(body: &[u8], version: i16) -> Result<(), HeaderError> {
    let i32_array = |r: &mut Reader<'_>, what: &'static str| -> Result<(), HeaderError> {
        let n = r.count(false, 4, what)?;
        r.skip(n * 4, what)
    };
    let mut r = Reader::new(body);
    r.i32("throttle time")?;
    // A broker: node id, host (2+), port, rack (2+).
    let brokers = r.count(false, 12, "Metadata brokers")?;
    for _ in 0..brokers {
        r.i32("node id")?;
        r.string(false, "broker host")?;
        r.i32("broker port")?;
        r.nullable_string("broker rack")?;
    }
    r.nullable_string("cluster id")?;
    r.i32("controller id")?;
    // A topic: error code, name (2+), internal flag, partition count, [operations].
    let topic_min = 2 + 2 + 1 + 4 + if version >= 8 { 4 } else { 0 };
    // A partition: error code, index, leader, [leader epoch], replicas, isr, [offline].
    let partition_min =
        2 + 4 + 4 + if version >= 7 { 4 } else { 0 } + 4 + 4 + if version >= 5 { 4 } else { 0 };
    let topics = r.count(false, topic_min, "Metadata topics")?;
    for _ in 0..topics {
        r.i16("topic error code")?;
        r.nullable_string("topic name")?;
        r.u8("is internal")?;
        let partitions = r.count(false, partition_min, "Metadata partitions")?;
        for _ in 0..partitions {
            r.skip(2 + 4 + 4, "partition")?;
            if version >= 7 {
                r.i32("leader epoch")?;
            }
            i32_array(&mut r, "replica nodes")?;
            i32_array(&mut r, "isr nodes")?;
            if version >= 5 {
                i32_array(&mut r, "offline replicas")?;
            }
        }
        if version >= 8 {
            r.i32("topic authorized operations")?;
        }
    }
    if version >= 8 {
        r.i32("cluster authorized operations")?;
    }
    Ok(())
}

/// The broker's answer for the one partition a Produce wrote to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAnswer {
    pub error_code: i16,
    pub base_offset: i64,
    pub error_message: Option<String>,
}

/// Decodes a Produce answer frame (length prefix included) for `topic` partition 0.
pub fn decode_produce_response(
    frame: &Bytes,
    version: i16,
    topic: &str,
) -> Result<PartitionAnswer, String> {
    if !(PRODUCE_MIN_VERSION..=PRODUCE_MAX_VERSION).contains(&version) {
        return Err(format!("Produce v{version} answers are not decoded here"));
    }
    let fail = |e: HeaderError| format!("invalid Produce answer: {e}");
    let offset = response_body_offset(frame, ApiKey::Produce as i16, version).map_err(fail)?;
    let body = frame.slice(offset..);
    check_produce_counts(&body, version).map_err(fail)?;
    let response = ProduceResponse::decode(&mut body.clone(), version)
        .map_err(|e| format!("invalid Produce answer: {e}"))?;
    response
        .responses
        .iter()
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == PARTITION)
        .map(|p| PartitionAnswer {
            error_code: p.error_code,
            base_offset: p.base_offset,
            error_message: p
                .error_message
                .as_ref()
                .map(|m| crate::kafka::sasl::printable(m, 300)),
        })
        .ok_or_else(|| format!("the Produce answer has no entry for {topic}/{PARTITION}"))
}

/// Walks a classic (v3–v8) Produce response body the way the crate's decoder will, checking
/// every array count against the bytes left.
fn check_produce_counts(body: &[u8], version: i16) -> Result<(), HeaderError> {
    // Smallest encodings: a topic is a name (2) and a partition count (4); a partition is
    // index, error code, base offset, log append time, then log start offset (v5+), record
    // errors and error message (v8+); a record error is an index and a nullable string.
    let partition_min =
        4 + 2 + 8 + 8 + if version >= 5 { 8 } else { 0 } + if version >= 8 { 4 + 2 } else { 0 };
    let mut r = Reader::new(body);
    let topics = r.count(false, 6, "Produce topics")?;
    for _ in 0..topics {
        r.string(false, "topic name")?;
        let partitions = r.count(false, partition_min, "Produce partitions")?;
        for _ in 0..partitions {
            r.skip(4 + 2 + 8 + 8, "partition answer")?;
            if version >= 5 {
                r.i64("log start offset")?;
            }
            if version >= 8 {
                let errors = r.count(false, 6, "record errors")?;
                for _ in 0..errors {
                    r.i32("batch index")?;
                    r.nullable_string("record error message")?;
                }
                r.nullable_string("error message")?;
            }
        }
    }
    r.i32("throttle time")?;
    Ok(())
}

/// The correlation id of an answer frame.
pub fn correlation_id(frame: &[u8]) -> Result<i32, String> {
    response_correlation_id(frame).map_err(|e| format!("invalid answer: {e}"))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::{
        messages::produce_response::{PartitionProduceResponse, TopicProduceResponse},
        records::RecordBatchDecoder,
    };

    use super::*;
    use crate::audit::export::Severity;

    fn entry(seq: u64, line: &str) -> Entry {
        Entry {
            line: Bytes::copy_from_slice(line.as_bytes()),
            seq,
            time_ms: 1_700_000_000_000 + seq as i64,
            severity: Severity::Info,
            event: "decision",
        }
    }

    fn answer_frame(response: &ProduceResponse, version: i16, correlation_id: i32) -> Bytes {
        let mut body = BytesMut::new();
        response.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32((body.len() + 4) as i32);
        frame.put_i32(correlation_id);
        frame.extend_from_slice(&body);
        frame.freeze()
    }

    fn answer(topic: &str, code: i16) -> ProduceResponse {
        ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(0)
                .with_error_code(code)
                .with_base_offset(42)])])
    }

    #[test]
    fn the_batch_carries_seq_as_key_and_header_and_the_line_as_value() {
        let batch = record_batch(&[entry(7, "{\"seq\":7}"), entry(8, "{\"seq\":8}")]).unwrap();
        let sets = RecordBatchDecoder::decode_all(&mut batch.clone()).unwrap();
        let records: Vec<_> = sets.iter().flat_map(|s| &s.records).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key.as_deref(), Some(&b"7"[..]));
        assert_eq!(records[1].value.as_deref(), Some(&b"{\"seq\":8}"[..]));
        assert_eq!(
            records[1].headers.get(&StrBytes::from_static_str("seq")),
            Some(&Some(Bytes::from_static(b"8")))
        );
        assert_eq!(records[0].timestamp, 1_700_000_000_007);
        assert_eq!(records[1].offset, 1);
        assert_eq!(sets.len(), 1, "one batch");
        assert_eq!(sets[0].compression, Compression::None);
        let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
        assert_eq!(info[0].base_sequence, -1);
        assert_eq!(info[0].producer_id, -1);
        assert_eq!(info[0].record_count, 2);
    }

    #[test]
    fn answers_decode_at_every_version_spoken() {
        for version in PRODUCE_MIN_VERSION..=PRODUCE_MAX_VERSION {
            let frame = answer_frame(&answer("audit", 0), version, 9);
            assert_eq!(correlation_id(&frame).unwrap(), 9);
            let got = decode_produce_response(&frame, version, "audit").unwrap();
            assert_eq!(got.error_code, 0, "v{version}");
            assert_eq!(got.base_offset, 42);
            let err = decode_produce_response(&frame, version, "other").unwrap_err();
            assert!(err.contains("no entry"), "{err}");
        }
    }

    #[test]
    fn lying_counts_and_truncation_are_errors_not_allocations() {
        let frame = answer_frame(&answer("audit", 0), 8, 1);
        // The topic count (first i32 of the body, after prefix and correlation id).
        let mut lying = frame.to_vec();
        lying[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        let err = decode_produce_response(&Bytes::from(lying), 8, "audit").unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        for cut in 4..frame.len() {
            let mut short = frame[..cut].to_vec();
            short[..4].copy_from_slice(&((cut - 4) as i32).to_be_bytes());
            assert!(
                decode_produce_response(&Bytes::from(short), 8, "audit").is_err(),
                "cut at {cut}"
            );
        }
    }

    fn metadata_frame(response: &MetadataResponse, version: i16) -> Bytes {
        let mut body = BytesMut::new();
        response.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32((body.len() + 4) as i32);
        frame.put_i32(3);
        frame.extend_from_slice(&body);
        frame.freeze()
    }

    fn metadata(topic_error: i16, partitions: &[(i32, i16)]) -> MetadataResponse {
        use kafka_protocol::messages::{
            metadata_response::{
                MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
            },
            BrokerId,
        };
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(111))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(9092)])
            .with_topics(vec![MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("audit"))))
                .with_error_code(topic_error)
                .with_partitions(
                    partitions
                        .iter()
                        .map(|(index, code)| {
                            MetadataResponsePartition::default()
                                .with_partition_index(*index)
                                .with_error_code(*code)
                                .with_leader_id(BrokerId(111))
                                .with_replica_nodes(vec![BrokerId(111)])
                                .with_isr_nodes(vec![BrokerId(111)])
                        })
                        .collect(),
                )])
    }

    #[test]
    fn metadata_answers_tell_whether_partition_0_is_there() {
        for version in METADATA_MIN_VERSION..=METADATA_MAX_VERSION {
            let decode = |m: &MetadataResponse| {
                decode_metadata_response(&metadata_frame(m, version), version, "audit")
            };
            assert_eq!(
                decode(&metadata(0, &[(1, 0), (0, 0)])),
                Ok(PartitionState::Ready { leader: 111 }),
                "v{version}"
            );
            assert_eq!(decode(&metadata(3, &[])), Ok(PartitionState::Error(3)));
            assert_eq!(
                decode(&metadata(0, &[(0, 5)])),
                Ok(PartitionState::Error(5))
            );
            assert_eq!(decode(&metadata(0, &[(1, 0)])), Ok(PartitionState::Missing));
            let frame = metadata_frame(&metadata(0, &[(0, 0)]), version);
            for cut in 4..frame.len() {
                let mut short = frame[..cut].to_vec();
                short[..4].copy_from_slice(&((cut - 4) as i32).to_be_bytes());
                assert!(
                    decode_metadata_response(&Bytes::from(short), version, "audit").is_err(),
                    "v{version} cut at {cut}"
                );
            }
            // The replica list of partition 0: count 1, node 111.
            let mut lying = frame.to_vec();
            let at = lying
                .windows(8)
                .position(|w| w == [0, 0, 0, 1, 0, 0, 0, 111])
                .unwrap();
            lying[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
            let err = decode_metadata_response(&Bytes::from(lying), version, "audit").unwrap_err();
            assert!(err.contains("truncated"), "{err}");
        }
    }

    #[test]
    fn the_version_is_the_highest_both_speak() {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        let offer = |min, max| {
            ApiVersionsResponse::default().with_api_keys(vec![ApiVersion::default()
                .with_api_key(0)
                .with_min_version(min)
                .with_max_version(max)])
        };
        assert_eq!(produce_version(&offer(3, 12)), Ok(8));
        assert_eq!(produce_version(&offer(0, 7)), Ok(7));
        assert!(produce_version(&offer(9, 13)).is_err());
        assert!(produce_version(&offer(0, 2)).is_err());
        assert!(produce_version(&ApiVersionsResponse::default()).is_err());
    }
}
