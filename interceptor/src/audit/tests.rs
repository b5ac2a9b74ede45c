//! The writer: group commit, durability waits, failure policies; the files: chain, rotation,
//! recovery; the schema of every event type.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use super::{
    chain::{self, ChainHasher, GENESIS},
    *,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn open_event(session: u64) -> AuditEvent {
    AuditEvent::ConnectionOpen {
        session,
        protocol: "kafka",
        client: addr("127.0.0.1:5000"),
        original_dst: addr("127.0.0.1:9092"),
        upstream: addr("127.0.0.1:9092"),
    }
}

/// A sink that can be told to fail, and remembers the size of every group.
#[derive(Clone, Default)]
struct Flaky {
    fail: Arc<AtomicBool>,
    groups: Arc<Mutex<Vec<usize>>>,
    written: Arc<Mutex<Vec<&'static str>>>,
    delay: Arc<Mutex<Duration>>,
}

impl AuditSink for Flaky {
    fn write_group(&mut self, records: &[AuditRecord]) -> Result<(), AuditError> {
        std::thread::sleep(*self.delay.lock().unwrap());
        if self.fail.load(Ordering::SeqCst) {
            return Err(AuditError::Io {
                path: "/full".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        self.groups.lock().unwrap().push(records.len());
        self.written
            .lock()
            .unwrap()
            .extend(records.iter().map(AuditRecord::name));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_sessions_share_few_fsyncs_and_each_waits_for_its_own_events() {
    let sink = Flaky::default();
    *sink.delay.lock().unwrap() = Duration::from_millis(5);
    let (log, writer) = AuditLog::start(sink.clone(), 10_000);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let session = log.for_session();
            tokio::spawn(async move {
                for _ in 0..20 {
                    session.emit(open_event(i)).await.unwrap();
                }
                session.sync().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = log.stats();
    assert_eq!(stats.written.load(Ordering::Relaxed), 1000);
    let groups = sink.groups.lock().unwrap().len();
    // 1000 events, 5 ms per group: without group commit this would take 1000 groups.
    assert!(groups < 200, "{groups} groups for 1000 events");
    assert_eq!(
        stats.groups.load(Ordering::Relaxed) as usize,
        groups,
        "every group is observed"
    );
    drop(log);
    writer.finish();
}

#[tokio::test]
async fn sync_returns_at_once_without_events_and_waits_for_a_slow_group() {
    let sink = Flaky::default();
    let (log, writer) = AuditLog::start(sink.clone(), 16);
    let session = log.for_session();
    session.sync().await.unwrap();
    *sink.delay.lock().unwrap() = Duration::from_millis(200);
    let ticket = session.emit(open_event(1)).await.unwrap();
    let started = std::time::Instant::now();
    session.sync().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(sink.written.lock().unwrap().contains(&"connection_open"));
    log.durable(ticket).await.unwrap();
    drop((log, session));
    writer.finish();
}

#[tokio::test]
async fn refuse_fails_waiters_while_the_disk_fails_then_recovers_without_losing_events() {
    let sink = Flaky::default();
    sink.fail.store(true, Ordering::SeqCst);
    let (log, writer) = AuditLog::start(sink.clone(), 16);
    let session = log.for_session();
    session.emit(open_event(1)).await.unwrap();
    assert_eq!(session.sync().await, Err(AuditUnavailable));
    assert!(log.is_failing());
    // The disk comes back: the event that waited is written, nothing was lost.
    sink.fail.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), async {
        while session.sync().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the writer retries");
    assert!(!log.is_failing());
    assert_eq!(*sink.written.lock().unwrap(), vec!["connection_open"]);
    assert_eq!(log.stats().lost.load(Ordering::Relaxed), 0);
    drop((log, session));
    writer.finish();
}

#[tokio::test]
async fn continue_lets_traffic_go_on_and_records_the_loss_afterwards() {
    let sink = Flaky::default();
    sink.fail.store(true, Ordering::SeqCst);
    let (log, writer) = AuditLog::start(
        sink.clone(),
        QueueSettings {
            on_failure: OnFailure::Continue,
            ..QueueSettings::new(16)
        },
    );
    let session = log.for_session();
    session.emit(open_event(1)).await.unwrap();
    session.sync().await.expect("continue does not refuse");
    assert_eq!(log.stats().lost.load(Ordering::Relaxed), 1);
    sink.fail.store(false, Ordering::SeqCst);
    session.emit(open_event(2)).await.unwrap();
    session.sync().await.unwrap();
    assert_eq!(
        *sink.written.lock().unwrap(),
        vec!["audit_loss", "connection_open"],
        "the loss is in the trail before the next event"
    );
    drop((log, session));
    writer.finish();
}

#[tokio::test]
async fn a_full_queue_makes_emitters_wait_not_drop() {
    let sink = Flaky::default();
    *sink.delay.lock().unwrap() = Duration::from_millis(20);
    let (log, writer) = AuditLog::start(sink.clone(), 2);
    for i in 0..20 {
        log.emit(open_event(i)).await.unwrap();
    }
    log.sync().await.unwrap();
    assert_eq!(sink.written.lock().unwrap().len(), 20);
    assert_eq!(log.stats().lost.load(Ordering::Relaxed), 0);
    drop(log);
    writer.finish();
}

fn settings(dir: &std::path::Path) -> FileSettings {
    FileSettings {
        dir: dir.to_owned(),
        hasher: ChainHasher::plain(),
        rotate_bytes: u64::MAX,
        rotate_after: Duration::from_secs(3600),
        fsync: true,
    }
}

fn record(session: u64) -> AuditRecord {
    AuditRecord::now(open_event(session), Arc::from("v1"))
}

/// Every line of every file, checked link by link; returns (seq, file index) per line.
fn walk_chain(dir: &std::path::Path, hasher: &ChainHasher) -> Vec<(u64, usize)> {
    let mut prev = GENESIS;
    let mut out = Vec::new();
    for (index, (first, path)) in chain::list_files(dir).unwrap().into_iter().enumerate() {
        let text = std::fs::read(&path).unwrap();
        assert_eq!(text.last(), Some(&b'\n'), "{}", path.display());
        for (i, line) in text[..text.len() - 1].split(|&b| b == b'\n').enumerate() {
            let link = chain::parse_link(hasher, line).unwrap();
            assert_eq!(link.prev_hash, prev, "line {i} of {}", path.display());
            if i == 0 {
                assert_eq!(link.seq, first, "file named for its first seq");
            }
            prev = link.hash;
            out.push((link.seq, index));
        }
    }
    out
}

#[test]
fn files_rotate_by_size_with_the_chain_carried_across() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = ChainedFiles::open(FileSettings {
        rotate_bytes: 2_000,
        ..settings(dir.path())
    })
    .unwrap();
    for i in 0..30 {
        files.write_group(&[record(i), record(i)]).unwrap();
    }
    let links = walk_chain(dir.path(), &ChainHasher::plain());
    let seqs: Vec<u64> = links.iter().map(|l| l.0).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    let file_count = links.last().unwrap().1 + 1;
    assert!(file_count >= 5, "{file_count} files");
    assert_eq!(files.head().seq, 60);
}

#[test]
fn files_rotate_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = ChainedFiles::open(FileSettings {
        rotate_after: Duration::from_millis(30),
        ..settings(dir.path())
    })
    .unwrap();
    files.write_group(&[record(1)]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    files.write_group(&[record(2)]).unwrap();
    assert_eq!(chain::list_files(dir.path()).unwrap().len(), 2);
    walk_chain(dir.path(), &ChainHasher::plain());
}

#[test]
fn a_restart_continues_the_chain_and_cuts_a_torn_group() {
    let dir = tempfile::tempdir().unwrap();
    let keyed = ChainHasher::keyed(b"0123456789abcdef".to_vec());
    let with_key = FileSettings {
        hasher: keyed.clone(),
        ..settings(dir.path())
    };
    {
        let mut files = ChainedFiles::open(with_key.clone()).unwrap();
        files.write_group(&[record(1), record(2)]).unwrap();
    }
    // A crash in the middle of the next group leaves part of a line.
    let (_, path) = chain::list_files(dir.path()).unwrap().pop().unwrap();
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"{\"seq\":3,\"prev_ha");
    std::fs::write(&path, &text).unwrap();

    let mut files = ChainedFiles::open(with_key.clone()).unwrap();
    assert_eq!(files.head().seq, 2);
    files.write_group(&[record(3)]).unwrap();
    let seqs: Vec<u64> = walk_chain(dir.path(), &keyed).iter().map(|l| l.0).collect();
    assert_eq!(seqs, vec![1, 2, 3]);

    // The wrong key: the head does not verify, and the daemon refuses to start on it.
    let wrong = FileSettings {
        hasher: ChainHasher::keyed(b"another key 1234".to_vec()),
        ..settings(dir.path())
    };
    match ChainedFiles::open(wrong) {
        Err(AuditError::Chain { line, problem, .. }) => {
            assert_eq!(line, 3);
            assert!(problem.contains("edited"), "{problem}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a head that does not verify was accepted"),
    }
}

#[test]
fn an_edited_last_line_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut files = ChainedFiles::open(settings(dir.path())).unwrap();
        files.write_group(&[record(1), record(2)]).unwrap();
    }
    let (_, path) = chain::list_files(dir.path()).unwrap().pop().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"session\":2", "\"session\":7")).unwrap();
    assert!(matches!(
        ChainedFiles::open(settings(dir.path())),
        Err(AuditError::Chain { .. })
    ));
}

#[test]
fn a_failed_write_leaves_no_torn_bytes_and_the_retry_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = ChainedFiles::open(settings(dir.path())).unwrap();
    files.write_group(&[record(1)]).unwrap();
    // Make the open file refuse writes by swapping its handle for a read-only one.
    let (_, path) = chain::list_files(dir.path()).unwrap().pop().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    files.current.as_mut().unwrap().file = std::fs::File::open(&path).unwrap();
    assert!(files.write_group(&[record(2)]).is_err());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    files.write_group(&[record(2)]).unwrap();
    let seqs: Vec<u64> = walk_chain(dir.path(), &ChainHasher::plain())
        .iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
}

#[test]
fn the_after_write_hook_sees_every_line_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = ChainedFiles::open(settings(dir.path())).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    files.set_after_write(Box::new(move |seq, line, record| {
        assert!((1..=3).contains(&seq));
        assert!(line.ends_with(b"\"}\n"));
        assert_eq!(record.name(), "connection_open");
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    files
        .write_group(&[record(1), record(2), record(3)])
        .unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

/// One of every event type, as the daemon emits them.
fn every_event() -> Vec<AuditEvent> {
    let client = addr("10.0.0.5:40000");
    let dst = addr("10.0.0.1:9092");
    vec![
        AuditEvent::DaemonStart {
            mode: "ebpf",
            fail_open: false,
            protected: vec![dst],
            version: "0.1.0",
        },
        AuditEvent::DaemonStop { sessions_open: 0 },
        open_event(1),
        AuditEvent::ConnectionClose {
            session: 1,
            client,
            original_dst: dst,
            principal: Some("alice".into()),
            bytes_from_client: 1,
            bytes_to_client: 2,
            duration_ms: 3,
            reason: CloseReason::ClientClosed,
            detail: None,
        },
        AuditEvent::ConnectionRefused {
            session: 2,
            client,
            original_dst: dst,
            reason: CloseReason::AuditUnavailable,
            detail: "x".into(),
        },
        AuditEvent::Authentication {
            session: 1,
            client,
            mechanism: "OAUTHBEARER".into(),
            outcome: AuthOutcome::Failure,
            reauthentication: false,
            principal: None,
            groups: vec![],
            issuer: None,
            client_id: None,
            session_expires: None,
            token_sha256: None,
            reason: Some("expired"),
            detail: None,
        },
        AuditEvent::RequestRefused {
            session: 1,
            client,
            principal: None,
            api_key: 0,
            api_version: 9,
            correlation_id: 4,
            reason: "unauthenticated",
            detail: "x".into(),
        },
        AuditEvent::UpstreamAuthentication {
            session: 1,
            upstream: dst,
            mechanism: "SCRAM-SHA-256",
            detail: "x".into(),
        },
        AuditEvent::Decision {
            session: 1,
            client,
            principal: "alice".into(),
            groups: vec!["payments".into()],
            client_id: Some("app".into()),
            api: "Produce",
            correlation_id: 5,
            operation: "produce",
            resource_type: "topic",
            resource: "payments".into(),
            decision: "deny",
            rule: Some("no-writes".into()),
            rule_source: Some("10-base.yaml:3".into()),
            detail: None,
            messages: None,
            bytes: None,
            digest: None,
        },
        AuditEvent::PolicyReload {
            outcome: "rejected",
            version: "v1".into(),
            previous_version: None,
            files: 1,
            rules: 2,
            errors: vec!["bad".into()],
        },
        AuditEvent::Transform {
            session: 1,
            client,
            principal: "alice".into(),
            api: "Produce",
            correlation_id: 5,
            stage: "produce",
            topic: "payments".into(),
            partition: 0,
            outcome: "masked",
            records: 3,
            fields: vec![],
            detail: None,
        },
        AuditEvent::Detokenize {
            principal: "fraud".into(),
            groups: vec![],
            token_sha256: "ab".into(),
            rule: None,
            scope: None,
            outcome: "revealed",
            detail: None,
        },
        AuditEvent::Records {
            session: 1,
            client,
            principal: "alice".into(),
            client_id: None,
            api: "Fetch",
            correlation_id: 6,
            stage: "fetch",
            partitions: vec![PartitionRecords {
                topic: "payments".into(),
                partition: 0,
                error_code: 0,
                first_offset: Some(10),
                last_offset: Some(12),
                records: 3,
                bytes: 200,
                digest: format!("blake3:{}", "00".repeat(32)),
            }],
        },
        AuditEvent::AuditLoss { events: 4 },
        AuditEvent::Kernel {
            kind: "dropped_no_listener",
            client,
            original_dst: dst,
        },
    ]
}

#[test]
fn every_event_type_has_the_common_ocsf_attributes() {
    let events = every_event();
    let mut names: Vec<&str> = events.iter().map(AuditEvent::name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), events.len(), "one of each type");
    for event in events {
        let name = event.name();
        let value = serde_json::to_value(AuditRecord::now(event, Arc::from("v9"))).unwrap();
        assert_eq!(value["event"], name);
        assert!(
            value["time"].as_i64().unwrap() > 1_700_000_000_000,
            "{value}"
        );
        assert!(value["time_dt"].as_str().unwrap().ends_with('Z'));
        let class = value["class_uid"].as_u64().unwrap();
        let activity = value["activity_id"].as_u64().unwrap();
        assert!(
            [3002, 3004, 4001, 6002, 6003].contains(&class),
            "{name}: {class}"
        );
        assert_eq!(value["type_uid"].as_u64().unwrap(), class * 100 + activity);
        assert!(value["class_name"].is_string() && value["activity_name"].is_string());
        assert!(value["severity_id"].is_u64());
        assert_eq!(value["metadata"]["version"], OCSF_VERSION);
        assert_eq!(value["metadata"]["product"]["uid"], instance_id());
        assert_eq!(value["policy_version"], "v9");
    }
}

#[test]
fn who_did_what_to_which_topic_is_in_the_common_attributes() {
    let events = every_event();
    let by_name = |name: &str| {
        let event = events.iter().find(|e| e.name() == name).unwrap().clone();
        serde_json::to_value(AuditRecord::now(event, Arc::from("v9"))).unwrap()
    };
    let decision = by_name("decision");
    assert_eq!(decision["actor"]["user"]["name"], "alice");
    assert_eq!(decision["actor"]["user"]["groups"][0], "payments");
    assert_eq!(decision["actor"]["app_name"], "app");
    assert_eq!(
        decision["actor"]["session"]["uid"],
        format!("{}-1", instance_id())
    );
    assert_eq!(decision["src_endpoint"]["ip"], "10.0.0.5");
    assert_eq!(decision["resources"][0]["type"], "topic");
    assert_eq!(decision["resources"][0]["name"], "payments");
    assert_eq!(decision["disposition"], "Blocked");
    assert_eq!(decision["policy"]["name"], "no-writes");
    assert_eq!(decision["policy"]["uid"], "10-base.yaml:3");
    assert_eq!(decision["activity_name"], "Create");

    let records = by_name("records");
    assert_eq!(records["class_uid"], 6003);
    assert_eq!(records["activity_name"], "Read");
    assert_eq!(records["resources"][0]["name"], "payments");
    assert_eq!(records["partitions"][0]["last_offset"], 12);

    let open = by_name("connection_open");
    assert_eq!(open["dst_endpoint"]["port"], 9092);
    let drop = by_name("kernel");
    assert_eq!(drop["disposition"], "Dropped");
    let masked = by_name("transform");
    assert_eq!(masked["disposition"], "Corrected");
}
