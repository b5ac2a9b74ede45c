//! End to end: a real broker (tansu) on 127.0.0.1:9092 in a network namespace, the daemon
//! protecting that address, real clients (confluent-kafka/librdkafka, kafka-python, kcat)
//! connecting to 127.0.0.1:9092 and so steered through the interceptor by the kernel.
//!
//! Each test has its own namespace, broker and daemon, so tests run in parallel. tansu's memory
//! storage takes 20+ s to join a consumer group, so groups are exercised once, concurrently
//! with the admin calls.
//!
//! Needs root and `cargo xtask deps` + `cargo xtask build`; fails loudly otherwise, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use interceptor_e2e::{
    kcat, require_kernel, run_client, start_interceptor, start_tansu, wire, DaemonConfig,
    Interceptor, Lib, Netns, Proc, WorkDir,
};
use serde_json::Value;

const BOOTSTRAP: &str = "127.0.0.1:9092";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);

/// Drop order is field order: daemon, broker, files, namespace.
struct Kafka {
    daemon: Interceptor,
    tansu: Proc,
    work: WorkDir,
    ns: Netns,
}

fn kafka(name: &str) -> Kafka {
    let ns = Netns::new("itest").expect("netns");
    let work = WorkDir::new(name).expect("work dir");
    let broker: SocketAddr = BOOTSTRAP.parse().unwrap();
    let tansu = start_tansu(&ns, broker, &work).unwrap_or_else(|e| panic!("tansu: {e:#}"));
    let config = DaemonConfig::kafka(&[broker]);
    let daemon = start_interceptor(&ns, &work, &config.body())
        .unwrap_or_else(|e| panic!("starting the daemon: {e:#}"));
    Kafka {
        daemon,
        tansu,
        work,
        ns,
    }
}

impl Kafka {
    /// Runs a client script against the steered bootstrap address; panics (with the daemon's
    /// log) if it reports a mismatch or fails.
    fn client(&self, lib: Lib, op: &str, args: &[&str]) -> Value {
        let mut all = vec![op, "--bootstrap", BOOTSTRAP, "--timeout", "90"];
        all.extend_from_slice(args);
        match run_client(&self.ns, lib, &all, CLIENT_TIMEOUT) {
            Ok(v) => {
                eprintln!("{} {op}: {v}", lib.name());
                v
            }
            Err(e) => panic!("{e:#}\n{}", self.daemon.log_tail(60)),
        }
    }

    fn produce(&self, lib: Lib, topic: &str, seed: &str, count: usize, size: usize, codec: &str) {
        let (count, size) = (count.to_string(), size.to_string());
        let v = self.client(
            lib,
            "produce",
            &[
                "--topic", topic, "--seed", seed, "--count", &count, "--size", &size, "--codec",
                codec,
            ],
        );
        assert_eq!(v["produced"].as_u64(), count.parse().ok(), "{v}");
    }

    /// Consumes and checks every record; returns the digest of what was read.
    fn consume(&self, lib: Lib, topic: &str, seed: &str, count: usize, size: usize) -> String {
        let (count, size) = (count.to_string(), size.to_string());
        let v = self.client(
            lib,
            "consume",
            &[
                "--topic", topic, "--seed", seed, "--count", &count, "--size", &size,
            ],
        );
        assert_eq!(v["ok"], true, "{v}");
        v["digest"].as_str().expect("digest").to_string()
    }

    /// Waits until every connection the daemon opened has its close event; returns the events.
    fn settled_audit(&self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let events = self.daemon.audit_events();
            let opens = events
                .iter()
                .filter(|e| e["event"] == "connection_open")
                .count();
            let closes = events
                .iter()
                .filter(|e| e["event"] == "connection_close")
                .count();
            if opens > 0 && opens == closes {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "audit: {opens} connection_open vs {closes} connection_close\n{}",
                self.daemon.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn expected_digest(
    k: &Kafka,
    lib: Lib,
    topic: &str,
    seed: &str,
    count: usize,
    size: usize,
) -> String {
    // The producer's summary digest is computed from the deterministic payload; recompute it by
    // asking the consumer of the other library too, and compare both.
    let a = k.consume(lib, topic, seed, count, size);
    let other = if lib == Lib::Confluent {
        Lib::KafkaPython
    } else {
        Lib::Confluent
    };
    let b = k.consume(other, topic, seed, count, size);
    assert_eq!(a, b, "the two clients read different bytes from {topic}");
    a
}

fn sum(events: &[Value], event: &str, field: &str) -> u64 {
    events
        .iter()
        .filter(|e| e["event"] == event)
        .map(|e| e[field].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn ten_thousand_records_identical_bytes_through_the_interceptor() {
    if !require_kernel() {
        return;
    }
    let k = kafka("e2e-10k");
    const N: usize = 10_000;
    const SIZE: usize = 300;
    k.produce(Lib::Confluent, "ck-10k", "ck", N, SIZE, "none");
    let d1 = expected_digest(&k, Lib::Confluent, "ck-10k", "ck", N, SIZE);
    k.produce(Lib::KafkaPython, "kp-10k", "kp", N, SIZE, "none");
    let d2 = expected_digest(&k, Lib::KafkaPython, "kp-10k", "kp", N, SIZE);
    assert_ne!(d1, d2);

    let events = k.settled_audit();
    let opens: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "connection_open")
        .collect();
    assert!(
        opens.len() >= 6,
        "expected connections of 6 clients: {}",
        opens.len()
    );
    for e in &opens {
        assert_eq!(e["original_dst"], BOOTSTRAP, "{e}");
        assert_eq!(e["protocol"], "kafka", "{e}");
        assert!(
            e["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{e}"
        );
    }
    // Two producers sent at least the raw payload; four consumers received at least it.
    let from_clients = sum(&events, "connection_close", "bytes_from_client");
    let to_clients = sum(&events, "connection_close", "bytes_to_client");
    let raw = (2 * N * SIZE) as u64;
    assert!(
        from_clients >= raw,
        "bytes_from_client {from_clients} < {raw}"
    );
    assert!(
        to_clients >= 2 * raw,
        "bytes_to_client {to_clients} < {}",
        2 * raw
    );
    assert!(k.daemon.alive());
    let _ = (&k.tansu, &k.work);
}

/// acks=0 Produce requests get no response at all: the daemon must not wait for one, or every
/// later response on that connection would be matched to the wrong request.
#[test]
fn acks_zero_produce_keeps_responses_in_step() {
    if !require_kernel() {
        return;
    }
    let k = kafka("e2e-acks0");
    const N: usize = 2000;
    const SIZE: usize = 400;
    for (lib, topic) in [(Lib::Confluent, "ck-acks0"), (Lib::KafkaPython, "kp-acks0")] {
        let count = N.to_string();
        let size = SIZE.to_string();
        let v = k.client(
            lib,
            "produce",
            &[
                "--topic", topic, "--seed", topic, "--count", &count, "--size", &size, "--acks",
                "0",
            ],
        );
        assert_eq!(v["produced"].as_u64(), Some(N as u64), "{v}");
        k.consume(lib, topic, topic, N, SIZE);
    }
    let events = k.settled_audit();
    let broken: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["event"] == "connection_close"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("protocol_error"))
        })
        .collect();
    assert!(
        broken.is_empty(),
        "connections ended out of step: {broken:?}"
    );
    assert!(k.daemon.alive());
}

#[test]
fn all_four_codecs_both_clients() {
    if !require_kernel() {
        return;
    }
    let k = kafka("e2e-codecs");
    const N: usize = 1000;
    const SIZE: usize = 600;
    std::thread::scope(|s| {
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            let k = &k;
            s.spawn(move || {
                // Produced by one library, read back by the other.
                let t1 = format!("ck-{codec}");
                k.produce(Lib::Confluent, &t1, codec, N, SIZE, codec);
                k.consume(Lib::KafkaPython, &t1, codec, N, SIZE);
                let t2 = format!("kp-{codec}");
                k.produce(Lib::KafkaPython, &t2, codec, N, SIZE, codec);
                k.consume(Lib::Confluent, &t2, codec, N, SIZE);
            });
        }
    });
    // The batches really were compressed on the way through: what the clients sent is far
    // less than the raw payload (8 producers x N x SIZE).
    let events = k.settled_audit();
    let from_clients = sum(&events, "connection_close", "bytes_from_client");
    let raw = (8 * N * SIZE) as u64;
    eprintln!(
        "clients sent {from_clients} bytes through the interceptor for {raw} bytes of payload"
    );
    assert!(
        from_clients < raw / 2,
        "clients sent {from_clients} bytes for {raw} bytes of payload: not compressed?"
    );
    assert!(k.daemon.alive());
}

#[test]
fn consumer_groups_admin_and_kcat() {
    if !require_kernel() {
        return;
    }
    let k = kafka("e2e-groups");
    const N: usize = 2000;
    const SIZE: usize = 400;
    k.produce(Lib::Confluent, "grp", "grp", N, SIZE, "lz4");
    let (count, size) = (N.to_string(), SIZE.to_string());
    std::thread::scope(|s| {
        // Joining a group takes tansu 20+ s: both groups join while the admin calls run.
        let groups: Vec<_> = [(Lib::Confluent, "g-ck"), (Lib::KafkaPython, "g-kp")]
            .into_iter()
            .map(|(lib, group)| {
                let (k, count, size) = (&k, &count, &size);
                s.spawn(move || {
                    let v = k.client(
                        lib,
                        "group",
                        &[
                            "--topic", "grp", "--seed", "grp", "--count", count, "--size", size,
                            "--group", group,
                        ],
                    );
                    assert_eq!(v["ok"], true, "{v}");
                    assert_eq!(v["committed"], v["expected_committed"], "{v}");
                })
            })
            .collect();

        let v = k.client(
            Lib::Confluent,
            "admin",
            &["--create", "adm-ck-1,adm-ck-2", "--partitions", "3"],
        );
        assert_eq!(v["partitions"]["adm-ck-1"], 3, "{v}");
        let v = k.client(
            Lib::KafkaPython,
            "admin",
            &["--create", "adm-kp-1", "--partitions", "2"],
        );
        assert_eq!(v["partitions"]["adm-kp-1"], 2, "{v}");
        for name in ["adm-ck-1", "adm-ck-2", "adm-kp-1", "grp"] {
            assert!(
                v["listed"].as_array().unwrap().iter().any(|t| t == name),
                "{name} not listed: {v}"
            );
        }

        // kcat (Debian's, with the wheel's librdkafka): metadata, produce, consume.
        let metadata = kcat(&k.ns, &["-b", BOOTSTRAP, "-L"], Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", k.daemon.log_tail(40)));
        eprintln!("kcat -L:\n{metadata}");
        assert!(
            metadata.contains("broker 111 at 127.0.0.1:9092")
                || metadata.contains("at 127.0.0.1:9092"),
            "{metadata}"
        );
        assert!(
            metadata.contains("topic \"adm-ck-1\" with 3 partitions"),
            "{metadata}"
        );
        assert!(
            metadata.contains("topic \"adm-kp-1\" with 2 partitions"),
            "{metadata}"
        );
        let input = k.work.join("kcat-input.txt");
        std::fs::write(&input, "one\ntwo\nthree\n").unwrap();
        kcat(
            &k.ns,
            &[
                "-b",
                BOOTSTRAP,
                "-P",
                "-t",
                "kcat-topic",
                "-p",
                "0",
                "-l",
                input.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", k.daemon.log_tail(40)));
        let read = kcat(
            &k.ns,
            &[
                "-b",
                BOOTSTRAP,
                "-C",
                "-t",
                "kcat-topic",
                "-p",
                "0",
                "-o",
                "beginning",
                "-e",
                "-q",
            ],
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", k.daemon.log_tail(40)));
        assert_eq!(read, "one\ntwo\nthree\n");

        for g in groups {
            g.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
    });
    let events = k.settled_audit();
    assert!(sum(&events, "connection_close", "bytes_to_client") > (2 * N * SIZE) as u64 / 10);
    assert!(k.daemon.alive());
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// One misbehaving client: what it sends and how it leaves.
struct BadCase {
    name: &'static str,
    bytes: Vec<u8>,
    /// Half-close after sending (the daemon sees EOF mid-frame) instead of waiting for the
    /// daemon to close.
    finish: Finish,
    /// A detail the daemon's log line for this connection must carry (the offending length).
    log_mentions: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Finish {
    /// The daemon must close the connection by itself.
    DaemonCloses,
    /// We send FIN (shutdown write) and expect the daemon to close its side.
    HalfClose,
    /// We reset the connection mid-frame.
    Reset,
}

fn bad_cases() -> Vec<BadCase> {
    let metadata = wire::metadata_v1_request(99, "bad-client");
    let mut cases = vec![
        BadCase {
            name: "garbage: negative length prefix",
            bytes: b"\xff\xff\xff\xf0 this is not kafka at all \x00\x01\x02".to_vec(),
            finish: Finish::DaemonCloses,
            log_mentions: Some("-16"),
        },
        BadCase {
            name: "garbage: an HTTP request (length prefix 'GET ' = 1.2 GB)",
            bytes: b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n".to_vec(),
            finish: Finish::DaemonCloses,
            log_mentions: Some("1195725856"),
        },
        BadCase {
            name: "garbage: a frame too short for a request header",
            bytes: wire::frame(&[0x00, 0x03]),
            finish: Finish::DaemonCloses,
            log_mentions: None,
        },
        BadCase {
            name: "2 GiB length prefix (i32::MAX)",
            bytes: [&0x7fff_ffffi32.to_be_bytes()[..], &metadata[4..]].concat(),
            finish: Finish::DaemonCloses,
            log_mentions: Some("2147483647"),
        },
        BadCase {
            name: "2 GiB length prefix (0x80000000)",
            bytes: [&[0x80, 0, 0, 0][..], &metadata[4..]].concat(),
            finish: Finish::DaemonCloses,
            log_mentions: Some("-2147483648"),
        },
        BadCase {
            name: "truncated frame, then close",
            bytes: metadata[..metadata.len() - 6].to_vec(),
            finish: Finish::HalfClose,
            log_mentions: None,
        },
    ];
    // A frame announcing 1000 bytes of which 500 arrive, then a reset.
    let mut mid = 1000i32.to_be_bytes().to_vec();
    mid.extend_from_slice(&metadata[4..]);
    mid.resize(4 + 500, 0);
    cases.push(BadCase {
        name: "disconnect (reset) mid-frame",
        bytes: mid,
        finish: Finish::Reset,
        log_mentions: None,
    });
    cases
}

/// Sends a bad case; returns the client address and how the connection ended.
fn run_bad_case(ns: &Netns, case: &BadCase) -> (SocketAddr, String) {
    let (local, stream) = ns.run(|| {
        wire::connect_from(
            "127.0.0.1:0".parse().unwrap(),
            BOOTSTRAP.parse().unwrap(),
            Duration::from_secs(3),
        )
    });
    let mut stream: TcpStream = stream.unwrap_or_else(|e| panic!("{}: connect: {e}", case.name));
    stream
        .write_all(&case.bytes)
        .unwrap_or_else(|e| panic!("{}: write: {e}", case.name));
    let ended = match case.finish {
        Finish::Reset => {
            std::thread::sleep(Duration::from_millis(100));
            wire::reset(stream);
            "reset by us".to_string()
        }
        Finish::HalfClose | Finish::DaemonCloses => {
            if case.finish == Finish::HalfClose {
                stream.shutdown(Shutdown::Write).unwrap();
            }
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 256];
            match stream.read(&mut buf) {
                Ok(0) => format!("closed by the daemon after {:?}", started.elapsed()),
                Ok(n) => panic!(
                    "{}: the daemon answered {n} bytes: {:?}",
                    case.name,
                    &buf[..n]
                ),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "{}: the daemon kept the connection open for 10 s",
                        case.name
                    )
                }
                Err(e) => format!("reset by the daemon after {:?}: {e}", started.elapsed()),
            }
        }
    };
    (local, ended)
}

/// Runs one bad case and checks the daemon closed and logged it; returns a report line.
fn bad_case_checked(k: &Kafka, case: &BadCase) -> String {
    let (client, ended) = run_bad_case(&k.ns, case);
    // The daemon records the close with a reason and logs it, naming the connection.
    let needle = client.to_string();
    let close = k
        .daemon
        .wait_audit(Duration::from_secs(10), |e| {
            e["event"] == "connection_close" && e["client"] == needle.as_str()
        })
        .unwrap_or_else(|e| panic!("{}: no connection_close for {client}: {e:#}", case.name));
    let reason = close["reason"].as_str().unwrap_or("").to_string();
    assert!(
        !reason.is_empty(),
        "{}: close without a reason: {close}",
        case.name
    );
    let logged: Vec<String> = k
        .daemon
        .log()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect();
    assert!(
        !logged.is_empty(),
        "{}: nothing logged for {client}",
        case.name
    );
    if let Some(detail) = case.log_mentions {
        assert!(
            logged.iter().any(|l| l.contains(detail)),
            "{}: the log for {client} does not mention {detail:?}:\n{}",
            case.name,
            logged.join("\n")
        );
    }
    format!(
        "{:<55} {ended}; audit reason: {reason}\n    log: {}",
        case.name,
        logged.join("\n    log: ")
    )
}

#[test]
fn bad_input_closes_only_that_connection() {
    if !require_kernel() {
        return;
    }
    let k = kafka("e2e-bad");
    // A well-behaved raw connection that stays open through every bad case.
    let (_, good) = k.ns.run(|| {
        wire::connect_from(
            "127.0.0.1:0".parse().unwrap(),
            BOOTSTRAP.parse().unwrap(),
            Duration::from_secs(3),
        )
    });
    let mut good = good.expect("good connection");
    wire::metadata_round_trip(&mut good, 1).expect("metadata through the interceptor");

    std::thread::scope(|s| {
        // Real clients producing and consuming while the bad ones come and go.
        let load = s.spawn(|| {
            k.produce(Lib::Confluent, "during-bad", "bad", 20_000, 300, "none");
            k.consume(Lib::KafkaPython, "during-bad", "bad", 20_000, 300);
        });
        // Start once the producer is connected (the good connection is session one).
        k.daemon
            .wait_audit(Duration::from_secs(30), |e| {
                e["event"] == "connection_open" && e["session"].as_u64() > Some(1)
            })
            .unwrap_or_else(|e| panic!("the load never connected: {e:#}"));
        let mut correlation = 2;
        let mut report = Vec::new();
        let mut rounds = 0;
        // Every case at least once, and again and again while the load runs.
        while rounds == 0 || (!load.is_finished() && rounds < 30) {
            rounds += 1;
            for case in bad_cases() {
                let line = bad_case_checked(&k, &case);
                // Every other connection is still served.
                assert!(k.daemon.alive(), "{}: the daemon died", case.name);
                wire::metadata_round_trip(&mut good, correlation).unwrap_or_else(|e| {
                    panic!(
                        "{}: the good connection broke: {e}\n{}",
                        case.name,
                        k.daemon.log_tail(40)
                    )
                });
                correlation += 1;
                if rounds == 1 {
                    report.push(line);
                }
            }
        }
        eprintln!(
            "bad input cases ({rounds} rounds while the load ran; first round):\n{}",
            report.join("\n")
        );
        load.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
    // A 2 GiB length prefix must not have made the daemon allocate it.
    let pid = k.daemon.pid().unwrap();
    let rss = interceptor_e2e::rss_kib(pid);
    assert!(rss < 512 * 1024, "daemon RSS {rss} KiB after the bad input");
    wire::metadata_round_trip(&mut good, 1000).expect("good connection at the end");
    assert!(k.daemon.alive());
}
