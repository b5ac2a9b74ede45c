//! Recordings written through the real recorder and writer thread, read back with the
//! reader and the replay: every record kind, truncated and corrupt files, the cap, dropped
//! frames, credentials, raw frames with and without the key.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        produce_request::{PartitionProduceData, TopicProduceData},
        produce_response::{PartitionProduceResponse, TopicProduceResponse},
        ApiKey, ProduceRequest, ProduceResponse, RequestHeader as CrateHeader, ResponseHeader,
        SaslAuthenticateRequest, SaslAuthenticateResponse, TopicName,
    },
    protocol::{Encodable, StrBytes},
    records::{
        Compression as KpCompression, Record as KpRecord, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    },
};
use serde_json::Value;

use super::{
    format::{
        self, put_record_head, Elided, ElidedFrame, ElidedReason, Entry, Header, Kind, Note,
        RawKey, ReadProblem, Record, RecordReader, RequestFields,
    },
    replay::{self, Format, Options},
    Compression, Recorder, Recordings,
};
use crate::{
    config::RecordingConfig,
    kafka::{inflight::Expected, RequestHeader},
    proxy::tap::Handling,
};

const CLIENT: &str = "10.0.0.5:51234";
const CARD: &str = "4111111111111111";
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn config(dir: &Path) -> RecordingConfig {
    RecordingConfig {
        enabled: true,
        dir: dir.join("recordings"),
        compression: Compression::Zstd(3),
        ..RecordingConfig::default()
    }
}

fn key_file(dir: &Path, hex: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("raw-{}.key", &hex[..4]));
    std::fs::write(&path, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Records session 7 with `f`; returns the file and what the service counted.
fn record(config: &RecordingConfig, f: impl FnOnce(&Recorder)) -> (PathBuf, super::Stats) {
    let recordings = Recordings::start_as(config, "test").unwrap();
    let recorder = recordings.recorder(7, CLIENT.parse().unwrap());
    f(&recorder);
    drop(recorder);
    recordings.finish(Duration::from_secs(10));
    (config.dir.join("test-7.irec"), recordings.stats())
}

/// The record stream, decompressed.
fn body(path: &Path) -> Vec<u8> {
    let mut file = std::fs::File::open(path).unwrap();
    let header = Header::read(&mut file).unwrap();
    let mut out = Vec::new();
    if header.zstd {
        zstd::stream::read::Decoder::new(file)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
    } else {
        file.read_to_end(&mut out).unwrap();
    }
    out
}

fn entries(path: &Path) -> Vec<Entry> {
    let (_, reader) = format::open(path).unwrap();
    reader.map(Result::unwrap).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    memchr::memmem::find(haystack, needle.as_bytes()).is_some()
}

fn timeline(path: &Path, options: Options) -> (Vec<Value>, replay::Outcome) {
    let mut out = Vec::new();
    let outcome = replay::replay(path, &options, &mut out).unwrap();
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, outcome)
}

fn json(records: bool) -> Options {
    Options {
        format: Format::Json,
        audit: None,
        raw_key: None,
        records,
    }
}

fn text(path: &Path) -> String {
    let mut out = Vec::new();
    let options = Options {
        format: Format::Text,
        ..json(true)
    };
    replay::replay(path, &options, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn of_kind<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == kind).collect()
}

// ---------------------------------------------------------------------------------------------
// Frames

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let header = CrateHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    prefixed(&buf)
}

fn prefixed(body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32);
    out.extend_from_slice(body);
    out.freeze()
}

fn response<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Bytes {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, key.response_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    prefixed(&buf)
}

/// An uncompressed record batch; `producer`: (id, epoch, base sequence, transactional).
fn batch(values: &[(&str, &str)], producer: Option<(i64, i16, i32, bool)>) -> Bytes {
    batch_with(values, producer, KpCompression::None)
}

fn batch_with(
    values: &[(&str, &str)],
    producer: Option<(i64, i16, i32, bool)>,
    compression: KpCompression,
) -> Bytes {
    let (producer_id, producer_epoch, sequence, transactional) =
        producer.unwrap_or((-1, -1, -1, false));
    let records: Vec<KpRecord> = values
        .iter()
        .enumerate()
        .map(|(i, (k, v))| KpRecord {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if sequence < 0 {
                -1
            } else {
                sequence + i as i32
            },
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(k.to_string())),
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

fn produce(correlation_id: i32, topic: &str, partitions: &[(i32, Bytes)]) -> Bytes {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(
                partitions
                    .iter()
                    .map(|(p, records)| {
                        PartitionProduceData::default()
                            .with_index(*p)
                            .with_records(Some(records.clone()))
                    })
                    .collect(),
            )]);
    frame(ApiKey::Produce, 9, correlation_id, &request)
}

fn produce_ack(correlation_id: i32, topic: &str, partitions: &[(i32, i64)]) -> Bytes {
    let body = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(TopicName(StrBytes::from_string(topic.into())))
        .with_partition_responses(
            partitions
                .iter()
                .map(|(p, offset)| {
                    PartitionProduceResponse::default()
                        .with_index(*p)
                        .with_base_offset(*offset)
                })
                .collect(),
        )]);
    response(ApiKey::Produce, 9, correlation_id, &body)
}

fn header(frame: &Bytes) -> RequestHeader {
    RequestHeader::parse(frame).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The format

#[test]
fn every_record_kind_round_trips() {
    let records = vec![
        Record::Request(Bytes::from_static(b"\0\0\0\x08request!")),
        Record::Response(Bytes::from_static(b"piece")),
        Record::Refused {
            fields: RequestFields {
                api_key: 0,
                api_version: 9,
                correlation_id: -3,
                client_id: Some("app".into()),
            },
            handling: 2,
            frame_len: 1234,
        },
        Record::Refused {
            fields: RequestFields {
                client_id: None,
                ..RequestFields::default()
            },
            handling: 3,
            frame_len: 0,
        },
        Record::Identity("orders-writer".into()),
        Record::Note(Note::Truncated { cap: 1 << 40 }),
        Record::Note(Note::Dropped {
            frames: 3,
            bytes: 300_000,
        }),
        Record::Note(Note::ResponseGap),
        Record::Note(Note::ResponseFramingLost),
        Record::Note(Note::DaemonStopped),
        Record::Note(Note::WriteFailed),
        Record::Elided(Elided {
            reason: ElidedReason::Secret,
            frame_len: 99,
            what: ElidedFrame::Request(RequestFields {
                api_key: 36,
                api_version: 2,
                correlation_id: 5,
                client_id: Some(String::new()),
            }),
        }),
        Record::Elided(Elided {
            reason: ElidedReason::Cap,
            frame_len: 1 << 20,
            what: ElidedFrame::Response { correlation_id: 6 },
        }),
        Record::RawRequest(Bytes::from(vec![1; 50])),
        Record::RawResponse(Bytes::from(vec![2; 50])),
        Record::End {
            records: 16,
            dropped_frames: 2,
            dropped_bytes: 77,
        },
        Record::Unknown(200),
    ];
    let mut body = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let mut payload = Vec::new();
        record.encode_payload(&mut payload);
        put_record_head(
            &mut body,
            record.kind_byte(),
            i as u64 * 1_000_003,
            payload.len(),
        );
        body.extend_from_slice(&payload);
    }
    let back: Vec<Entry> = RecordReader::new(&body[..], false)
        .map(Result::unwrap)
        .collect();
    assert_eq!(back.len(), records.len());
    for (i, (entry, record)) in back.iter().zip(&records).enumerate() {
        assert_eq!(entry.index, i as u64);
        assert_eq!(entry.t_us, i as u64 * 1_000_003);
        assert_eq!(&entry.record, record);
    }

    let header = Header {
        zstd: true,
        mqtt: true,
        file_id: [9; 16],
        key_id: [1; 8],
        started_unix_us: 1_732_356_000_123_456,
        session: u64::MAX,
        instance: "0123456789abcdef".into(),
        client: "[::1]:9092".into(),
        software: "interceptor 0.1.0".into(),
    };
    let encoded = header.encode();
    assert_eq!(&encoded[..4], b"IREC");
    assert_eq!(Header::read(&mut &encoded[..]).unwrap(), header);
    assert_eq!(
        header.session_uid(),
        format!("0123456789abcdef-{}", u64::MAX)
    );
}

#[test]
fn truncated_and_corrupt_files_are_reported_where_they_stop() {
    let work = tempfile::tempdir().unwrap();
    for compression in [Compression::None, Compression::Zstd(3)] {
        let mut config = config(work.path());
        config.compression = compression;
        config.dir = work.path().join(format!("{compression:?}"));
        let (path, _) = record(&config, |r| {
            r.identity("someone");
            for id in 0..5 {
                let f = produce(id, "payments", &[(0, batch(&[("k", "some value")], None))]);
                r.to_broker(&[f]);
                r.to_client(&[produce_ack(id, "payments", &[(0, i64::from(id))])]);
            }
        });
        let whole = std::fs::read(&path).unwrap();
        let header_len = Header::read(&mut &whole[..]).unwrap().encode().len();
        let (lines, outcome) = timeline(&path, json(true));
        assert!(outcome.ended && outcome.error.is_none(), "{outcome:?}");
        assert_eq!(of_kind(&lines, "request").len(), 5);
        assert_eq!(of_kind(&lines, "response").len(), 5);

        let cut = work.path().join("cut.irec");
        for len in 0..whole.len() {
            std::fs::write(&cut, &whole[..len]).unwrap();
            let mut out = Vec::new();
            match replay::replay(&cut, &json(true), &mut out) {
                // Inside the header: refused as a whole.
                Err(replay::ReplayError::Open { .. }) => assert!(len < header_len, "{len}"),
                Err(e) => panic!("{e}"),
                Ok(outcome) => {
                    assert!(!outcome.ended, "cut at {len} of {}", whole.len());
                    let text = String::from_utf8(out).unwrap();
                    if let Some(e) = outcome.error {
                        assert!(text.contains("\"kind\":\"stopped\""), "{text}");
                        assert!(
                            matches!(e.problem, ReadProblem::Truncated),
                            "cut at {len}: {e}"
                        );
                    }
                }
            }
        }
        // Every byte flipped: read as far as it goes, never a panic.
        for at in 0..whole.len() {
            let mut bad = whole.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&cut, &bad).unwrap();
            let mut out = Vec::new();
            let _ = replay::replay(&cut, &json(true), &mut out);
            let _ = replay::replay(
                &cut,
                &Options {
                    format: Format::Text,
                    ..json(true)
                },
                &mut out,
            );
        }
    }
    // A length beyond any record the writer makes is refused before anything is allocated.
    let mut body = Vec::new();
    put_record_head(&mut body, Kind::Request as u8, 0, usize::MAX >> 8);
    let problem = RecordReader::new(&body[..], false)
        .next()
        .unwrap()
        .unwrap_err()
        .problem;
    assert!(matches!(problem, ReadProblem::Corrupt(_)), "{problem:?}");
}

// ---------------------------------------------------------------------------------------------
// What the client sent

#[test]
fn replay_shows_what_the_client_sent_and_what_it_got() {
    let work = tempfile::tempdir().unwrap();
    let p0 = [("k0", "{\"amount\":1}"), ("k1", "{\"amount\":2}")];
    let p2 = [("k2", "{\"amount\":3}")];
    // One partition's batch compressed: the replay decompresses it.
    let request = produce(
        17,
        "payments",
        &[
            (0, batch_with(&p0, None, KpCompression::Gzip)),
            (2, batch(&p2, None)),
        ],
    );
    let ack = produce_ack(17, "payments", &[(0, 40), (2, 7)]);
    let (path, stats) = record(&config(work.path()), |r| {
        r.identity("orders-writer");
        r.raw_request(&header(&request), &request);
        r.to_broker(std::slice::from_ref(&request));
        // The answer streams through in three pieces.
        r.to_client(&[ack.slice(..10)]);
        r.to_client(&[ack.slice(10..20), ack.slice(20..30)]);
        r.to_client(&[ack.slice(30..)]);
    });
    assert_eq!(stats, super::Stats::default());
    let (lines, outcome) = timeline(&path, json(true));
    assert!(outcome.ended);
    assert_eq!(lines[0]["kind"], "session");
    assert_eq!(lines[0]["session_uid"], "test-7");
    assert_eq!(lines[0]["client"], CLIENT);
    assert_eq!(of_kind(&lines, "identity")[0]["principal"], "orders-writer");
    let requests = of_kind(&lines, "request");
    assert_eq!(requests.len(), 1);
    let r = requests[0];
    assert_eq!(
        (
            r["api"].as_str(),
            r["api_version"].as_i64(),
            r["correlation_id"].as_i64()
        ),
        (Some("Produce"), Some(9), Some(17))
    );
    assert_eq!(r["client_id"], "rdkafka");
    assert_eq!(r["size"], request.len());
    let parts = r["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for (part, (index, sent)) in parts.iter().zip([(0, &p0[..]), (2, &p2[..])]) {
        assert_eq!(part["topic"], "payments");
        assert_eq!(part["partition"], index);
        assert_eq!(part["records"], sent.len());
        let values: Vec<(&str, &str)> = part["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["key"].as_str().unwrap(), v["value"].as_str().unwrap()))
            .collect();
        assert_eq!(values, sent);
    }
    let responses = of_kind(&lines, "response");
    assert_eq!(responses.len(), 1, "{lines:#?}");
    let offsets: Vec<(i64, i64)> = responses[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["base_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, [(0, 40), (2, 7)]);
    assert_eq!(responses[0]["size"], ack.len());
    // No raw key: nothing raw, though the hook saw the frame.
    assert!(of_kind(&lines, "raw_request").is_empty());

    let text = text(&path);
    assert!(text.contains("→ Produce v9 #17 client=rdkafka"), "{text}");
    assert!(text.contains("payments[0] 2 record(s)"), "{text}");
    assert!(text.contains("← Produce v9 #17"), "{text}");
    assert!(text.contains("payments[2] offset 7"), "{text}");
    assert!(text.contains("✓ identity orders-writer"), "{text}");
}

#[test]
fn refused_requests_keep_their_header_and_size_only() {
    let work = tempfile::tempdir().unwrap();
    let secret_body = produce(
        18,
        "forbidden",
        &[(0, batch(&[("k", "refused-content")], None))],
    );
    let (path, _) = record(&config(work.path()), |r| {
        let h = header(&secret_body);
        r.raw_request(&h, &secret_body);
        r.refused_request(&h, Handling::Denied);
    });
    assert!(!contains(&body(&path), "refused-content"));
    let (lines, _) = timeline(&path, json(false));
    let refused = of_kind(&lines, "refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["handling"], "deny");
    assert_eq!(refused[0]["correlation_id"], 18);
    assert_eq!(refused[0]["size"], secret_body.len());
    assert!(text(&path).contains("✗ Produce v9 #18 client=rdkafka"));
}

// ---------------------------------------------------------------------------------------------
// Bounds

#[test]
fn past_the_cap_only_headers_are_kept_and_the_file_says_so() {
    let work = tempfile::tempdir().unwrap();
    let mut config = config(work.path());
    let first = produce(1, "t", &[(0, batch(&[("k", "first-value")], None))]);
    config.max_session_bytes = first.len() as u64 + 20;
    let (path, _) = record(&config, |r| {
        r.to_broker(std::slice::from_ref(&first));
        for id in 2..5 {
            r.to_broker(&[produce(
                id,
                "t",
                &[(0, batch(&[("k", "later-value")], None))],
            )]);
        }
        r.to_client(&[produce_ack(1, "t", &[(0, 0)])]);
    });
    assert!(contains(&body(&path), "first-value"));
    assert!(!contains(&body(&path), "later-value"));
    let (lines, outcome) = timeline(&path, json(false));
    assert!(outcome.ended);
    assert_eq!(of_kind(&lines, "request").len(), 1);
    let notes = of_kind(&lines, "note");
    assert_eq!(notes.len(), 1, "{lines:#?}");
    assert_eq!(notes[0]["note"], "truncated");
    let elided = of_kind(&lines, "elided");
    assert_eq!(elided.len(), 4, "three requests and the answer: {lines:#?}");
    for e in &elided[..3] {
        assert_eq!(e["reason"], "session cap");
        assert_eq!(e["api"], "Produce");
        assert_eq!(e["direction"], "request");
    }
    assert_eq!(elided[3]["direction"], "response");
    assert_eq!(elided[3]["correlation_id"], 1);
}

#[test]
fn what_the_queue_cannot_hold_is_dropped_counted_and_noted() {
    let work = tempfile::tempdir().unwrap();
    let mut config = config(work.path());
    config.queue_bytes = 1000;
    let big = produce(1, "t", &[(0, batch(&[("k", &"x".repeat(2000))], None))]);
    let small = produce(2, "t", &[(0, batch(&[("k", "v")], None))]);
    // A response of 3000 bytes in three pieces; the middle one cannot fit.
    let long = prefixed(&[&3i32.to_be_bytes()[..], &[7u8; 2996]].concat());
    let after = produce_ack(4, "t", &[(0, 9)]);
    let (path, stats) = record(&config, |r| {
        // Each call waits for the writer, so that only the sizes decide what fits.
        let settle = || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while r.queued_bytes() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        r.to_broker(std::slice::from_ref(&big));
        settle();
        r.to_broker(std::slice::from_ref(&small));
        settle();
        r.to_broker(&[produce(3, "t", &[]), produce(4, "t", &[])]);
        settle();
        r.to_client(&[long.slice(..500)]);
        settle();
        r.to_client(&[long.slice(500..2500)]);
        settle();
        r.to_client(&[long.slice(2500..)]);
        settle();
        r.to_client(std::slice::from_ref(&after));
    });
    assert_eq!(stats.dropped_frames, 2);
    assert_eq!(stats.dropped_bytes, (big.len() + 2000) as u64);
    let (lines, outcome) = timeline(&path, json(false));
    assert!(outcome.ended);
    let notes = of_kind(&lines, "note");
    let names: Vec<&str> = notes.iter().map(|n| n["note"].as_str().unwrap()).collect();
    assert_eq!(names, ["dropped", "dropped", "response_gap"], "{lines:#?}");
    // The first drop is noted before the request after it.
    let at = |pred: &dyn Fn(&Value) -> bool| lines.iter().position(pred).unwrap();
    assert!(
        at(&|l| l["note"] == "dropped")
            < at(&|l| l["kind"] == "request" && l["correlation_id"] == 2)
    );
    assert_eq!(
        of_kind(&lines, "request")
            .iter()
            .map(|r| r["correlation_id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3, 4]
    );
    // After the gap the stream picks up at the next frame, which decodes.
    let responses = of_kind(&lines, "response");
    assert_eq!(responses.len(), 1, "{lines:#?}");
    assert_eq!(responses[0]["correlation_id"], 4);
    assert_eq!(responses[0]["partitions"][0]["base_offset"], 9);
    let end = of_kind(&lines, "end")[0];
    assert_eq!(end["dropped_frames"], 2);
    assert_eq!(end["dropped_bytes"], (big.len() + 2000) as u64);
}

// ---------------------------------------------------------------------------------------------
// Privacy

fn sasl_authenticate(correlation_id: i32, token: &str) -> Bytes {
    let body = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token.to_owned()));
    frame(ApiKey::SaslAuthenticate, 2, correlation_id, &body)
}

fn sasl_answer(correlation_id: i32, proof: &str) -> Bytes {
    let body = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(proof.to_owned()));
    response(ApiKey::SaslAuthenticate, 2, correlation_id, &body)
}

#[test]
fn credentials_are_never_recorded_in_any_form() {
    let work = tempfile::tempdir().unwrap();
    let mut config = config(work.path());
    config.raw_key_file = Some(key_file(work.path(), KEY_HEX));
    let local = sasl_authenticate(1, "CLIENT-TOKEN-eyJhbGciOi");
    let forwarded = sasl_authenticate(2, "CLIENT-PROOF-c2NyYW0");
    let after = produce(3, "t", &[(0, batch(&[("k", "v")], None))]);
    let (path, _) = record(&config, |r| {
        // Answered by the interceptor itself.
        r.raw_request(&header(&local), &local);
        r.refused_request(&header(&local), Handling::Authentication);
        // A SASL frame that went to the broker (the relay does not do that; the guard is on
        // the api key anyway), and its answers, whole and streamed.
        r.raw_request(&header(&forwarded), &forwarded);
        r.to_broker(&[forwarded.clone(), after.clone()]);
        let server = sasl_answer(1, "SERVER-FINAL-v=c2lnbmF0dXJl");
        r.to_client(std::slice::from_ref(&server));
        let broker = sasl_answer(2, "BROKER-PROOF-cHJvb2Y");
        let expected = Expected {
            correlation_id: 2,
            api_key: 36,
            api_version: 2,
        };
        r.raw_response(&expected, &broker);
        r.to_client(&[broker.slice(..12)]);
        r.to_client(&[broker.slice(12..)]);
        r.to_client(&[produce_ack(3, "t", &[(0, 1)])]);
    });
    let bytes = body(&path);
    for secret in [
        "CLIENT-TOKEN",
        "CLIENT-PROOF",
        "SERVER-FINAL",
        "BROKER-PROOF",
    ] {
        assert!(!contains(&bytes, secret), "{secret} is in the recording");
    }
    // Nor sealed: with the key, the raw records open, and none is a SASL frame.
    let options = Options {
        raw_key: Some(RawKey::load(config.raw_key_file.as_deref().unwrap()).unwrap()),
        ..json(false)
    };
    let (lines, _) = timeline(&path, options);
    assert!(of_kind(&lines, "raw_request").is_empty(), "{lines:#?}");
    assert!(of_kind(&lines, "raw_response").is_empty(), "{lines:#?}");
    let elided = of_kind(&lines, "elided");
    let what: Vec<(&str, i64, &str)> = elided
        .iter()
        .map(|e| {
            (
                e["direction"].as_str().unwrap(),
                e["correlation_id"].as_i64().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        what,
        [
            ("request", 2, "credentials"),
            ("response", 1, "credentials"),
            ("response", 2, "credentials")
        ]
    );
    assert_eq!(elided[0]["api"], "SaslAuthenticate");
    assert_eq!(elided[1]["api"], "SaslAuthenticate");
    let refused = of_kind(&lines, "refused");
    assert_eq!(refused[0]["handling"], "auth");
    // The session goes on normally after the exchange.
    assert_eq!(of_kind(&lines, "response")[0]["correlation_id"], 3);
}

/// A produce request as the client sent it and as it went on, masked.
fn masked_pair(correlation_id: i32) -> (Bytes, Bytes) {
    let original = produce(
        correlation_id,
        "payments",
        &[(
            0,
            batch(&[("k", &format!("{{\"card\":\"{CARD}\"}}"))], None),
        )],
    );
    let masked = produce(
        correlation_id,
        "payments",
        &[(0, batch(&[("k", "{\"card\":\"************1111\"}")], None))],
    );
    (original, masked)
}

#[test]
fn without_a_raw_key_nothing_unmasked_is_written() {
    let work = tempfile::tempdir().unwrap();
    let (original, masked) = masked_pair(5);
    let (path, _) = record(&config(work.path()), |r| {
        r.raw_request(&header(&original), &original);
        r.to_broker(std::slice::from_ref(&masked));
        let answer = produce_ack(5, "payments", &[(0, 0)]);
        let expected = Expected {
            correlation_id: 5,
            api_key: 0,
            api_version: 9,
        };
        r.raw_response(&expected, &answer);
        r.to_client(&[produce_ack(5, "payments", &[(0, 0)])]);
    });
    let bytes = body(&path);
    assert!(
        contains(&bytes, "************1111"),
        "the masked frame is recorded"
    );
    assert!(
        !contains(&bytes, CARD),
        "the original card number is in the recording"
    );
    assert!(entries(&path)
        .iter()
        .all(|e| !matches!(e.record, Record::RawRequest(_) | Record::RawResponse(_))));
    let mut file = std::fs::File::open(&path).unwrap();
    assert!(!Header::read(&mut file).unwrap().has_raw());
}

#[test]
fn raw_frames_are_sealed_and_open_only_with_the_key() {
    let work = tempfile::tempdir().unwrap();
    let mut config = config(work.path());
    config.compression = Compression::None;
    config.raw_key_file = Some(key_file(work.path(), KEY_HEX));
    let (original, masked) = masked_pair(5);
    let unchanged = produce(6, "other", &[(0, batch(&[("k", "plain")], None))]);
    let original_answer = produce_ack(5, "payments", &[(0, 41)]);
    let rewritten_answer = produce_ack(5, "payments", &[(0, 42)]);
    let (path, _) = record(&config, |r| {
        r.raw_request(&header(&original), &original);
        r.raw_request(&header(&unchanged), &unchanged);
        r.to_broker(&[masked.clone(), unchanged.clone()]);
        let expected = Expected {
            correlation_id: 5,
            api_key: 0,
            api_version: 9,
        };
        r.raw_response(&expected, &original_answer);
        r.to_client(std::slice::from_ref(&rewritten_answer));
    });
    // Uncompressed: the file's own bytes are what is on disk.
    let on_disk = std::fs::read(&path).unwrap();
    assert!(!contains(&on_disk, CARD));
    assert!(contains(&on_disk, "************1111"));

    // Without the key: listed, sealed, unread.
    let (lines, _) = timeline(&path, json(true));
    let raw = of_kind(&lines, "raw_request");
    assert_eq!(raw.len(), 1, "only the frame masking changed: {lines:#?}");
    assert!(raw[0].get("frame").is_none());
    assert!(raw[0]["sealed_size"].as_u64().unwrap() > original.len() as u64);
    assert!(text(&path).contains("sealed"));

    // With it: the client's original.
    let key = RawKey::load(config.raw_key_file.as_deref().unwrap()).unwrap();
    let (lines, _) = timeline(
        &path,
        Options {
            raw_key: Some(key),
            ..json(true)
        },
    );
    let raw = of_kind(&lines, "raw_request")[0];
    assert_eq!(raw["frame"]["correlation_id"], 5);
    assert_eq!(
        raw["frame"]["partitions"][0]["values"][0]["value"],
        format!("{{\"card\":\"{CARD}\"}}")
    );
    let raw = of_kind(&lines, "raw_response")[0];
    assert_eq!(raw["frame"]["partitions"][0]["base_offset"], 41);
    assert_eq!(
        of_kind(&lines, "response")[0]["partitions"][0]["base_offset"],
        42
    );

    // Another key: refused, nothing shown.
    let other = key_file(work.path(), &KEY_HEX.replace("00", "ff"));
    let (lines, _) = timeline(
        &path,
        Options {
            raw_key: Some(RawKey::load(&other).unwrap()),
            ..json(true)
        },
    );
    let raw = of_kind(&lines, "raw_request")[0];
    assert!(raw.get("frame").is_none());
    assert!(raw["error"].as_str().unwrap().contains("does not open"));

    // A raw record moved to another place in the file does not open either: the index is
    // bound. Swap the two raw records' payloads (same kind check aside) by re-encoding.
    let key = RawKey::load(config.raw_key_file.as_deref().unwrap()).unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let header = Header::read(&mut file).unwrap();
    let all = entries(&path);
    let sealed = all
        .iter()
        .find_map(|e| match &e.record {
            Record::RawRequest(s) => Some((e.index, s.clone())),
            _ => None,
        })
        .unwrap();
    assert!(key
        .open(&header.file_id, sealed.0, Kind::RawRequest, &sealed.1)
        .is_ok());
    assert!(key
        .open(&header.file_id, sealed.0 + 1, Kind::RawRequest, &sealed.1)
        .is_err());
    assert!(key
        .open(&header.file_id, sealed.0, Kind::RawResponse, &sealed.1)
        .is_err());
    assert!(key
        .open(&[0; 16], sealed.0, Kind::RawRequest, &sealed.1)
        .is_err());
}

#[test]
fn raw_keys_are_read_strictly() {
    assert!(RawKey::parse(KEY_HEX.as_bytes()).is_ok());
    assert!(RawKey::parse(format!("  {KEY_HEX}\n").as_bytes()).is_ok());
    assert!(RawKey::parse(&[7u8; 32]).is_ok());
    assert!(RawKey::parse(&[0u8; 32]).is_err());
    assert!(RawKey::parse(&KEY_HEX.as_bytes()[..62]).is_err());
    assert!(RawKey::parse(KEY_HEX.replace('0', "g").as_bytes()).is_err());
    assert_eq!(
        RawKey::parse(KEY_HEX.as_bytes()).unwrap().id(),
        RawKey::parse(&(0u8..32).collect::<Vec<_>>()).unwrap().id(),
        "hex and raw forms are the same key"
    );
    // Group-readable: refused, with the fix.
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let path = key_file(work.path(), KEY_HEX);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = RawKey::load(&path).unwrap_err().to_string();
    assert!(e.contains("chmod"), "{e}");
    // And the service does not start with it.
    let mut config = config(work.path());
    config.raw_key_file = Some(path);
    assert!(Recordings::start_as(&config, "test").is_err());
}

// ---------------------------------------------------------------------------------------------
// Audit interleaving, files, settings

#[test]
fn audit_events_of_the_session_follow_their_frames() {
    let work = tempfile::tempdir().unwrap();
    let request = produce(17, "payments", &[(0, batch(&[("k", "v")], None))]);
    let (path, _) = record(&config(work.path()), |r| {
        r.to_broker(std::slice::from_ref(&request));
        r.to_client(&[produce_ack(17, "payments", &[(0, 3)])]);
    });
    let audit = work.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    let line = |seq: u64, uid: &str, fields: Value| {
        let mut v = serde_json::json!({
            "seq": seq, "time": 1, "actor": {"session": {"uid": uid}},
        });
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        v.to_string()
    };
    let lines = [
        line(
            1,
            "test-7",
            serde_json::json!({"event": "authentication", "mechanism": "OAUTHBEARER", "outcome": "success", "principal": "w"}),
        ),
        line(
            2,
            "test-7",
            serde_json::json!({"event": "decision", "correlation_id": 17, "decision": "allow", "operation": "produce", "resource_type": "topic", "resource": "payments", "rule": "writers"}),
        ),
        line(
            3,
            "test-8",
            serde_json::json!({"event": "decision", "correlation_id": 17, "decision": "deny", "operation": "produce", "resource_type": "topic", "resource": "other"}),
        ),
        line(
            4,
            "test-7",
            serde_json::json!({"event": "records", "correlation_id": 17, "stage": "produce", "partitions": [{"topic": "payments", "partition": 0, "records": 1, "first_offset": 3, "last_offset": 3}]}),
        ),
    ];
    std::fs::write(
        audit.join("audit-00000000000000000001.jsonl"),
        lines.join("\n") + "\n" + &"x".repeat(2 << 20) + "\n",
    )
    .unwrap();
    let (timeline, _) = timeline(
        &path,
        Options {
            audit: Some(audit),
            ..json(false)
        },
    );
    let order: Vec<String> = timeline
        .iter()
        .map(|l| match l["kind"].as_str().unwrap() {
            "audit" => format!("audit {}", l["event"].as_str().unwrap()),
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(
        order,
        [
            "session",
            "audit authentication",
            "request",
            "audit decision",
            "response",
            "audit records",
            "end"
        ]
    );
    let decision = &timeline[3];
    assert_eq!(decision["audit"]["rule"], "writers");
    assert_eq!(
        decision["summary"],
        "decision allow produce topic payments rule writers"
    );
}

#[test]
fn files_are_named_for_the_audit_trail_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let config = config(work.path());
    let (path, _) = record(&config, |r| r.identity("x"));
    assert_eq!(path.file_name().unwrap(), "test-7.irec");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o640);
    assert_eq!(mode(&config.dir), 0o750);
    // A recorder dropped while the daemon stops: the file says so.
    let recordings = Recordings::start_as(&config, "stop").unwrap();
    let recorder = recordings.recorder(1, CLIENT.parse().unwrap());
    recorder.identity("still-open");
    recordings.finish(Duration::from_secs(10));
    let (lines, outcome) = timeline(&config.dir.join("stop-1.irec"), json(false));
    assert!(outcome.ended);
    assert_eq!(of_kind(&lines, "note")[0]["note"], "daemon_stopped");
    drop(recorder);
}

#[test]
fn the_shipped_example_states_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/interceptor.toml");
    let example = crate::config::Config::load(&path).unwrap();
    assert_eq!(example.recording, RecordingConfig::default());
    let parse = |value: &str| {
        toml::from_str::<RecordingConfig>(&format!("compression = {value}")).map(|c| c.compression)
    };
    assert_eq!(parse("\"none\"").unwrap(), Compression::None);
    assert_eq!(parse("\"zstd\"").unwrap(), Compression::Zstd(3));
    assert_eq!(parse("7").unwrap(), Compression::Zstd(7));
    assert!(parse("0").is_err());
    assert!(parse("\"gzip\"").is_err());
}

// ---------------------------------------------------------------------------------------------
// Re-sending

#[test]
fn batches_resent_as_a_plain_producer_keep_their_records_and_valid_crcs() {
    use crate::kafka::records::{batches, scan, RecordLimits};
    let values = [("a", "one"), ("b", "two")];
    let mut records = batch_with(&values, Some((4242, 3, 17, true)), KpCompression::Lz4).to_vec();
    records.extend_from_slice(&batch(&[("c", "three")], Some((4242, 3, 19, true))));
    let plain = super::resend::plain_batches(&records).unwrap();
    assert_eq!(plain.len(), records.len());
    let infos: Vec<_> = batches(&plain).map(Result::unwrap).collect();
    assert_eq!(infos.len(), 2);
    for info in &infos {
        assert_eq!(
            (
                info.producer_id,
                info.producer_epoch,
                info.base_sequence,
                info.transactional
            ),
            (-1, -1, -1, false)
        );
    }
    let mut seen = Vec::new();
    let limits = RecordLimits {
        max_decompressed_bytes: 1 << 20,
        max_records_per_batch: 100,
    };
    // `scan` checks each batch's CRC first.
    scan(&plain, &limits, &mut Vec::new(), |_, r| {
        seen.push((r.key.unwrap().to_vec(), r.value.unwrap().to_vec()));
        std::ops::ControlFlow::<()>::Continue(())
    })
    .unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = [("a", "one"), ("b", "two"), ("c", "three")]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(seen, expected);
    assert!(super::resend::plain_batches(b"not a batch at all, clearly not").is_err());
}

#[test]
fn resent_requests_are_renamed_made_plain_and_answerable() {
    use super::resend::{prepare, ResendOptions};
    let mut request = ProduceRequest::default()
        .with_transactional_id(Some(kafka_protocol::messages::TransactionalId(
            StrBytes::from_static_str("payments-tx"),
        )))
        .with_acks(0)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("payments")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(1)
                .with_records(Some(batch(
                    &[("k", "v"), ("l", "w")],
                    Some((7, 1, 0, true)),
                )))])]);
    let recorded = frame(ApiKey::Produce, 9, 33, &request);
    let options = |keep| ResendOptions {
        target: String::new(),
        sasl: None,
        topic_map: vec![("payments".into(), "copy".into())],
        keep_producer_ids: keep,
        timeout: Duration::from_secs(1),
    };
    let (sent, counts) = prepare(&recorded, &header(&recorded), &options(false), (3, 11)).unwrap();
    assert_eq!(counts, [("copy".to_owned(), 1, 2)]);
    assert_eq!(sent.acks, 1, "acks=0 is sent with acks=1, to get an answer");
    assert_eq!(sent.transactional_id, None);
    let topic = &sent.topic_data[0];
    assert_eq!(topic.name.as_str(), "copy");
    let records = topic.partition_data[0].records.clone().unwrap();
    let info = crate::kafka::records::batches(&records)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!((info.producer_id, info.transactional), (-1, false));

    let (kept, _) = prepare(&recorded, &header(&recorded), &options(true), (3, 11)).unwrap();
    assert!(kept.transactional_id.is_some());
    let records = kept.topic_data[0].partition_data[0]
        .records
        .clone()
        .unwrap();
    let info = crate::kafka::records::batches(&records)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!((info.producer_id, info.transactional), (7, true));

    // Versions the target does not have, and topic ids, are reasons to skip.
    let why = prepare(&recorded, &header(&recorded), &options(false), (3, 8)).unwrap_err();
    assert!(why.contains("supports v3-v8"), "{why}");
    request.topic_data[0].topic_id = uuid::Uuid::from_bytes([1; 16]);
    let v13 = frame(ApiKey::Produce, 13, 34, &request);
    let why = prepare(&v13, &header(&v13), &options(false), (3, 13)).unwrap_err();
    assert!(why.contains("by id"), "{why}");
}
