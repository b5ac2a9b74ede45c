//! The Kafka sink against a scripted in-process broker (error handling: retriable errors,
//! batches too large, refusals, garbage) and against a real broker (memory-backed tansu from
//! the end-to-end harness, in its own network namespace, read back with kcat).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::BytesMut;
use kafka_protocol::{
    messages::{
        api_versions_response::ApiVersion,
        metadata_response::{MetadataResponsePartition, MetadataResponseTopic},
        produce_response::{PartitionProduceResponse, TopicProduceResponse},
        ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse, ProduceRequest,
        ProduceResponse, TopicName,
    },
    protocol::{Decodable, StrBytes},
    records::RecordBatchDecoder,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{
    tests::{context, line, runtime, wait_for},
    ExportConfig, Exporters, SinkStats,
};
use crate::{
    config::UpstreamMechanism,
    kafka::{
        authz::response::encode_response, sasl, sasl::secrets::UpstreamSecrets, split_frame,
        RequestHeader,
    },
};

const TOPIC: &str = "interceptor.audit";
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// What the scripted broker answers the n-th Produce (from 0), given its records' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Code(i16),
    /// An answer whose topic count claims two billion entries.
    Garbage,
    /// Closes the connection without answering.
    Close,
}

type Script = Arc<dyn Fn(usize, &[u64]) -> Answer + Send + Sync>;

#[derive(Default)]
struct Seen {
    /// Every Produce's record keys (seq), answered or not.
    produces: Vec<Vec<u64>>,
    /// Keys of the records answered with success: what the topic would hold.
    stored: Vec<u64>,
    connections: usize,
    client_ids: Vec<String>,
    metadata: usize,
    /// The first this many Metadata requests find no topic.
    topic_missing_for: usize,
    /// SASL PLAIN required: (user, password, session lifetime in ms).
    sasl: Option<(&'static str, &'static str, i64)>,
    logins: usize,
    refused_logins: usize,
}

struct FakeBroker {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl FakeBroker {
    fn start(rt: &tokio::runtime::Runtime, script: Script) -> FakeBroker {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                tokio::spawn(serve(stream, Arc::clone(&script), Arc::clone(&shared)));
            }
        });
        FakeBroker { addr, seen }
    }

    fn stored(&self) -> Vec<u64> {
        self.seen.lock().unwrap().stored.clone()
    }
}

async fn serve(mut stream: TcpStream, script: Script, seen: Arc<Mutex<Seen>>) {
    let mut buf = BytesMut::new();
    let sasl = seen.lock().unwrap().sasl;
    let mut logged_in = sasl.is_none();
    loop {
        let frame = loop {
            if let Some(frame) = split_frame(&mut buf, 1 << 24).unwrap() {
                break frame;
            }
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        let header = RequestHeader::parse(&frame).unwrap();
        seen.lock()
            .unwrap()
            .client_ids
            .push(header.client_id_lossy().into_owned());
        let (id, version) = (header.correlation_id, header.api_version);
        if !logged_in && ![17, 18, 36].contains(&header.api_key) {
            // A broker that requires SASL closes a connection that skips it.
            seen.lock()
                .unwrap()
                .client_ids
                .push("UNAUTHENTICATED".into());
            return;
        }
        let reply = match header.api_key {
            17 => {
                let mechanism = sasl::messages::decode_handshake(&frame, &header).unwrap();
                assert_eq!(mechanism, "PLAIN");
                sasl::messages::handshake_response(id, version, 0, &["PLAIN"])
            }
            36 => {
                let (user, password, lifetime) = sasl.unwrap();
                let token = sasl::messages::decode_authenticate(&frame, &header).unwrap();
                let plain = sasl::plain::parse(&token).unwrap();
                if plain.username == user && plain.password == password {
                    logged_in = true;
                    seen.lock().unwrap().logins += 1;
                    sasl::messages::authenticate_response(id, version, 0, None, b"", lifetime)
                } else {
                    seen.lock().unwrap().refused_logins += 1;
                    sasl::messages::authenticate_response(
                        id,
                        version,
                        58,
                        Some("Authentication failed"),
                        b"",
                        0,
                    )
                }
            }
            18 => {
                let body = ApiVersionsResponse::default().with_api_keys(vec![
                    ApiVersion::default()
                        .with_api_key(0)
                        .with_min_version(3)
                        .with_max_version(11),
                    ApiVersion::default()
                        .with_api_key(3)
                        .with_min_version(0)
                        .with_max_version(12),
                    ApiVersion::default()
                        .with_api_key(18)
                        .with_min_version(0)
                        .with_max_version(3),
                ]);
                encode_response(18, version, id, &body, "ApiVersions").unwrap()
            }
            0 => {
                assert_eq!(version, 8, "the highest version both speak");
                let mut body = frame.slice(header.body_offset..);
                let request = ProduceRequest::decode(&mut body, version).unwrap();
                assert_eq!(request.acks, -1);
                let topic = &request.topic_data[0];
                assert_eq!(topic.name.as_str(), TOPIC);
                let partition = &topic.partition_data[0];
                assert_eq!(partition.index, 0);
                let mut records = partition.records.clone().unwrap();
                let keys: Vec<u64> = RecordBatchDecoder::decode_all(&mut records)
                    .unwrap()
                    .iter()
                    .flat_map(|set| &set.records)
                    .map(|r| {
                        std::str::from_utf8(r.key.as_deref().unwrap())
                            .unwrap()
                            .parse()
                            .unwrap()
                    })
                    .collect();
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.produces.push(keys.clone());
                    seen.produces.len() - 1
                };
                match script(n, &keys) {
                    Answer::Close => return,
                    Answer::Garbage => {
                        let mut f = BytesMut::new();
                        f.extend_from_slice(&12i32.to_be_bytes());
                        f.extend_from_slice(&id.to_be_bytes());
                        f.extend_from_slice(&i32::MAX.to_be_bytes()); // topic count
                        f.extend_from_slice(&[0, 0, 0, 0]);
                        f.freeze()
                    }
                    Answer::Code(code) => {
                        if code == 0 {
                            seen.lock().unwrap().stored.extend(keys);
                        }
                        let body = ProduceResponse::default().with_responses(vec![
                            TopicProduceResponse::default()
                                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                                .with_partition_responses(vec![PartitionProduceResponse::default(
                                )
                                .with_index(0)
                                .with_error_code(code)]),
                        ]);
                        encode_response(0, version, id, &body, "Produce").unwrap()
                    }
                }
            }
            3 => {
                assert_eq!(version, 8, "the highest version both speak");
                let mut body = frame.slice(header.body_offset..);
                let request = MetadataRequest::decode(&mut body, version).unwrap();
                assert!(request.allow_auto_topic_creation);
                let topics = request.topics.unwrap();
                assert_eq!(topics[0].name.as_ref().unwrap().as_str(), TOPIC);
                let missing = {
                    let mut seen = seen.lock().unwrap();
                    seen.metadata += 1;
                    seen.metadata <= seen.topic_missing_for
                };
                let topic = if missing {
                    MetadataResponseTopic::default().with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
                } else {
                    MetadataResponseTopic::default().with_partitions(vec![
                        MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_leader_id(BrokerId(1)),
                    ])
                };
                let body = MetadataResponse::default().with_topics(vec![
                    topic.with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))
                ]);
                encode_response(3, version, id, &body, "Metadata").unwrap()
            }
            other => panic!("unexpected api key {other}"),
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

fn kafka_config(broker: SocketAddr, extra: &str) -> ExportConfig {
    toml::from_str(&format!(
        "[[kafka]]\nbroker = \"{broker}\"\ntopic = \"{TOPIC}\"\nlinger_ms = 5\ntimeout_ms = 2000\n{extra}"
    ))
    .unwrap()
}

fn offer(exporters: &Exporters, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        let (l, meta) = line(seq, 0);
        exporters.offer(&l, &meta);
    }
}

/// Runs `script` against `n` events; the final stats and what the broker saw.
fn scripted(n: u64, extra: &str, script: Script) -> (SinkStats, FakeBroker) {
    scripted_with(n, extra, 0, script)
}

fn scripted_with(
    n: u64,
    extra: &str,
    topic_missing_for: usize,
    script: Script,
) -> (SinkStats, FakeBroker) {
    let rt = runtime();
    let broker = FakeBroker::start(&rt, script);
    broker.seen.lock().unwrap().topic_missing_for = topic_missing_for;
    let exporters = Exporters::start(&kafka_config(broker.addr, extra), context(&rt)).unwrap();
    offer(&exporters, 1..=n);
    wait_for(Duration::from_secs(15), "every event settled", || {
        let s = &exporters.stats()[0];
        s.sent + s.lost.total() >= n
    });
    let stats = exporters.shutdown(Duration::from_secs(2)).remove(0);
    (stats, broker)
}

#[test]
fn retriable_errors_resend_the_same_batch_in_order() {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let (stats, broker) = scripted(
        40,
        "batch_max_events = 10",
        Arc::new(|n, _| {
            if n % 2 == 0 {
                Answer::Code(NOT_LEADER_OR_FOLLOWER)
            } else {
                Answer::Code(0)
            }
        }),
    );
    assert_eq!(broker.stored(), (1..=40).collect::<Vec<_>>());
    let seen = broker.seen.lock().unwrap();
    for pair in seen.produces.chunks(2) {
        assert_eq!(pair[0], pair[1], "a retry sends the same batch");
    }
    assert!(seen.client_ids.iter().all(|c| c == "interceptor-audit"));
    assert_eq!(seen.connections, 1, "retriable errors keep the connection");
    assert_eq!((stats.sent, stats.lost.total()), (40, 0), "{stats:?}");
    assert!(stats.retries >= 4, "{stats:?}");
}

#[test]
fn a_batch_too_large_is_split_and_an_event_too_large_is_lost() {
    const MESSAGE_TOO_LARGE: i16 = 10;
    // The broker takes at most 3 records per batch.
    let (stats, broker) = scripted(
        12,
        "",
        Arc::new(|_, keys| {
            if keys.len() > 3 {
                Answer::Code(MESSAGE_TOO_LARGE)
            } else {
                Answer::Code(0)
            }
        }),
    );
    assert_eq!(broker.stored(), (1..=12).collect::<Vec<_>>());
    assert_eq!((stats.sent, stats.lost.total()), (12, 0), "{stats:?}");
    assert!(stats.retries >= 1, "{stats:?}");

    // ...and event 3 is too large even alone.
    let (stats, broker) = scripted(
        6,
        "",
        Arc::new(|_, keys| {
            if keys.len() > 3 || keys.contains(&3) {
                Answer::Code(MESSAGE_TOO_LARGE)
            } else {
                Answer::Code(0)
            }
        }),
    );
    assert_eq!((stats.sent, stats.lost.too_large), (5, 1), "{stats:?}");
    assert_eq!(broker.stored(), vec![1, 2, 4, 5, 6]);
}

#[test]
fn refusals_for_good_are_counted_as_errors() {
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    let (stats, broker) = scripted(
        20,
        "batch_max_events = 5",
        Arc::new(|_, keys| {
            if keys.contains(&8) {
                Answer::Code(TOPIC_AUTHORIZATION_FAILED)
            } else {
                Answer::Code(0)
            }
        }),
    );
    let refused: Vec<u64> = {
        let seen = broker.seen.lock().unwrap();
        let batch = seen.produces.iter().find(|keys| keys.contains(&8)).unwrap();
        batch.clone()
    };
    assert_eq!(
        seen_once(&broker, &refused),
        1,
        "a refused batch is not retried"
    );
    let n = refused.len() as u64;
    assert_eq!((stats.sent, stats.lost.error), (20 - n, n), "{stats:?}");
    assert!(
        stats
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("TopicAuthorizationFailed (29)")),
        "{stats:?}"
    );
    let expected: Vec<u64> = (1..=20).filter(|k| !refused.contains(k)).collect();
    assert_eq!(broker.stored(), expected);
}

fn seen_once(broker: &FakeBroker, batch: &[u64]) -> usize {
    let seen = broker.seen.lock().unwrap();
    seen.produces
        .iter()
        .filter(|keys| keys.as_slice() == batch)
        .count()
}

#[test]
fn garbage_and_closed_connections_reconnect_and_resend() {
    let (stats, broker) = scripted(
        30,
        "batch_max_events = 10",
        Arc::new(|n, _| match n {
            0 => Answer::Garbage,
            2 => Answer::Close,
            _ => Answer::Code(0),
        }),
    );
    assert_eq!(broker.stored(), (1..=30).collect::<Vec<_>>());
    assert_eq!((stats.sent, stats.lost.total()), (30, 0), "{stats:?}");
    assert_eq!(broker.seen.lock().unwrap().connections, 3);
    assert!(stats.retries >= 2, "{stats:?}");
    assert!(stats.connected);
}

#[test]
fn events_wait_until_the_topic_exists() {
    let (stats, broker) = scripted_with(10, "", 2, Arc::new(|_, _| Answer::Code(0)));
    assert_eq!(broker.stored(), (1..=10).collect::<Vec<_>>());
    let seen = broker.seen.lock().unwrap();
    assert_eq!((seen.metadata, seen.connections), (3, 3));
    assert_eq!((stats.sent, stats.lost.total()), (10, 0), "{stats:?}");
    assert!(
        stats
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("UnknownTopicOrPartition (3)")),
        "the last failure stays visible: {stats:?}"
    );
}

#[test]
fn the_interceptors_own_login_comes_first_and_is_renewed_before_it_expires() {
    let rt = runtime();
    let broker = FakeBroker::start(&rt, Arc::new(|_, _| Answer::Code(0)));
    // Sessions of 300 ms: the sink reconnects at 90% of that.
    broker.seen.lock().unwrap().sasl = Some(("interceptor", "broker-pw", 300));
    let login = |password: &str| {
        let mut ctx = context(&rt);
        ctx.upstream_mechanism = UpstreamMechanism::Plain;
        ctx.broker_credentials = Some(UpstreamSecrets {
            username: "interceptor".into(),
            password: password.into(),
        });
        ctx
    };
    let exporters = Exporters::start(&kafka_config(broker.addr, ""), login("broker-pw")).unwrap();
    for round in 0..3 {
        offer(&exporters, round * 10 + 1..=round * 10 + 10);
        std::thread::sleep(Duration::from_millis(600));
    }
    wait_for(Duration::from_secs(10), "every event", || {
        exporters.stats()[0].sent == 30
    });
    let stats = exporters.shutdown(Duration::from_secs(1)).remove(0);
    assert_eq!(broker.stored(), (1..=30).collect::<Vec<_>>());
    {
        let seen = broker.seen.lock().unwrap();
        assert!(!seen.client_ids.iter().any(|c| c == "UNAUTHENTICATED"));
        assert!(seen.logins >= 3, "a new login per session: {}", seen.logins);
        assert_eq!(seen.logins, seen.connections);
    }
    assert_eq!(stats.lost.total(), 0, "{stats:?}");

    // Wrong credentials: nothing is produced, the refusal is visible, the events wait.
    let exporters = Exporters::start(&kafka_config(broker.addr, ""), login("wrong")).unwrap();
    offer(&exporters, 31..=35);
    wait_for(Duration::from_secs(5), "the refusal", || {
        exporters.stats()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused SASL PLAIN"))
    });
    let stats = exporters.shutdown(Duration::from_millis(200)).remove(0);
    assert_eq!((stats.sent, stats.lost.shutdown), (0, 5), "{stats:?}");
    assert_eq!(broker.stored().len(), 30);
    assert!(broker.seen.lock().unwrap().refused_logins >= 1);
}

#[test]
fn shutdown_gives_up_on_a_broker_that_never_answers_within_its_timeout() {
    let rt = runtime();
    let broker = FakeBroker::start(&rt, Arc::new(|_, _| Answer::Code(6)));
    let exporters = Exporters::start(&kafka_config(broker.addr, ""), context(&rt)).unwrap();
    offer(&exporters, 1..=10);
    wait_for(Duration::from_secs(5), "a retry", || {
        exporters.stats()[0].retries > 0
    });
    let started = std::time::Instant::now();
    let stats = exporters.shutdown(Duration::from_millis(500)).remove(0);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!((stats.sent, stats.lost.shutdown), (0, 10), "{stats:?}");
    assert!(broker.stored().is_empty());
}

// ---------------------------------------------------------------------------------------------
// A real broker

#[test]
fn tansu_stores_every_event_in_seq_order_even_when_it_starts_late() {
    use interceptor_e2e::{kcat, require_kernel, start_tansu, Netns, WorkDir};
    if !require_kernel() {
        return;
    }
    const BROKER: &str = "127.0.0.1:9092";
    const N: u64 = 1000;
    let ns = Netns::new("itest").unwrap();
    let work = WorkDir::new("export-kafka").unwrap();
    let broker: SocketAddr = BROKER.parse().unwrap();
    // The sink's sockets are made by runtime threads, which inherit the namespace of the
    // thread that starts them.
    let (exporters, rt) = ns.run(|| {
        let rt = runtime();
        let exporters = Exporters::start(
            &kafka_config(broker, "batch_max_events = 100\nbuffer = 2000"),
            context(&rt),
        )
        .unwrap();
        (exporters, rt)
    });
    // No broker yet: the events wait.
    offer(&exporters, 1..=100);
    wait_for(Duration::from_secs(5), "a failed connection", || {
        exporters.stats()[0].last_error.is_some()
    });
    let s = exporters.stats().remove(0);
    assert_eq!((s.sent, s.queued, s.connected), (0, 100, false), "{s:?}");

    let _tansu = start_tansu(&ns, broker, &work).unwrap();
    offer(&exporters, 101..=N);
    wait_for(Duration::from_secs(15), "every event at the broker", || {
        exporters.stats()[0].sent >= N
    });
    let stats = exporters.shutdown(Duration::from_secs(2)).remove(0);
    drop(rt);
    assert_eq!((stats.sent, stats.lost.total()), (N, 0), "{stats:?}");

    let read = kcat(
        &ns,
        &[
            "-b",
            BROKER,
            "-C",
            "-t",
            TOPIC,
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k|%h|%s\n",
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    let mut seqs = Vec::new();
    for record in read.lines() {
        let mut f = record.splitn(3, '|');
        let (key, headers, value) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let seq: u64 = key.parse().unwrap();
        assert_eq!(headers, format!("seq={seq}"));
        let (expected, _) = line(seq, 0);
        assert_eq!(value.as_bytes(), &expected[..expected.len() - 1]);
        seqs.push(seq);
    }
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "partition 0 holds every event in order"
    );
}
