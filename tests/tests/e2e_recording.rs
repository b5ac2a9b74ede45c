//! End to end, session recording: librdkafka produces JSON records with card numbers through
//! the daemon (recording on, a masking rule on the topic); `interceptor replay --audit
//! --format json` must show exactly the topics, partitions and records the client sent (as
//! masked) with their policy decisions; the recording never holds an original card number;
//! `--resend-to` a second, memory-backed tansu (renaming the topic) stores the same records
//! the first broker stored.
//!
//! Needs root and `cargo xtask deps` + `cargo xtask build`; fails loudly otherwise, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use interceptor_e2e::{
    interceptor_bin, require_kernel, run_client, run_with_timeout, start_interceptor, start_tansu,
    DaemonConfig, Interceptor, Lib, Netns, Proc, WorkDir, ALLOW_ALL_POLICY,
};
use serde_json::{json, Value};

const BOOTSTRAP: &str = "127.0.0.1:9092";
/// The second broker: not protected, reached directly.
const FORENSICS: &str = "127.0.0.1:9093";
const TOPIC: &str = "payments";
const COPY: &str = "payments-copy";
const RECORDS: usize = 12;
const CARDS: &[&str] = &["4111111111111111", "5555555555554444", "378282246310005"];
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);

const MASKING: &str = r#"
masking:
  - name: cards
    topics: [payments]
    fields:
      - path: $.card.number
        action: partial
        keep_last: 4
"#;

/// Drop order is field order: daemon, brokers, files, namespace.
struct Stack {
    daemon: Interceptor,
    _brokers: (Proc, Proc),
    work: WorkDir,
    ns: Netns,
}

impl Stack {
    fn client(&self, bootstrap: &str, op: &str, args: &[&str]) -> Value {
        let mut all = vec![op, "--bootstrap", bootstrap, "--timeout", "30"];
        all.extend_from_slice(args);
        run_client(&self.ns, Lib::Confluent, &all, CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.daemon.log_tail(60)))
    }

    /// `interceptor <args>` in the namespace; its stdout, whatever the exit status.
    fn interceptor(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = self.ns.command(interceptor_bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.daemon.config_path());
        let done = run_with_timeout(cmd, Duration::from_secs(60)).expect("interceptor runs");
        (done.status.success(), done.stdout, done.stderr)
    }

    /// (key, value) of every record of `topic` on `bootstrap`.
    fn dump(&self, bootstrap: &str, topic: &str) -> BTreeSet<(String, String)> {
        let v = self.client(
            bootstrap,
            "dump",
            &["--topic", topic, "--count", &RECORDS.to_string()],
        );
        v["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().expect("text key").to_owned(),
                    r["value"].as_str().expect("text value").to_owned(),
                )
            })
            .collect()
    }
}

fn stack() -> Stack {
    let ns = Netns::new("itest-rec").expect("netns");
    let work = WorkDir::new("recording").expect("work dir");
    let broker: SocketAddr = BOOTSTRAP.parse().unwrap();
    let first = start_tansu(&ns, broker, &work).unwrap_or_else(|e| panic!("tansu: {e:#}"));
    let second = start_tansu(&ns, FORENSICS.parse().unwrap(), &work)
        .unwrap_or_else(|e| panic!("second tansu: {e:#}"));
    let policies = work.join("policies");
    fs::create_dir_all(&policies).unwrap();
    fs::write(
        policies.join("policy.yaml"),
        format!("{ALLOW_ALL_POLICY}{MASKING}"),
    )
    .unwrap();
    // Uncompressed, so the test can search the files' own bytes; with a raw key, so the
    // originals are kept too, sealed.
    let key = raw_key(&work);
    let recording = format!(
        "[recording]\nenabled = true\ndir = {:?}\ncompression = \"none\"\nraw_key_file = {:?}\n",
        work.join("recordings").display().to_string(),
        key.display().to_string()
    );
    let config = DaemonConfig::kafka(&[broker])
        .policy_dir(&policies)
        .extra(&recording);
    let daemon = start_interceptor(&ns, &work, &config.body())
        .unwrap_or_else(|e| panic!("starting the daemon: {e:#}"));
    Stack {
        daemon,
        _brokers: (first, second),
        work,
        ns,
    }
}

fn raw_key(work: &WorkDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = work.join("recording.key");
    let hex: String = (0..32u8)
        .map(|b| format!("{:02x}", b.wrapping_mul(37) ^ 0x5c))
        .collect();
    fs::write(&path, hex).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn value(i: usize) -> String {
    json!({
        "id": i,
        "card": {"number": CARDS[i % CARDS.len()], "exp": "12/29"},
        "amount": 10 + i,
    })
    .to_string()
}

/// The replay's JSON lines; panics unless it exits 0.
fn replay(stack: &Stack, args: &[&str]) -> Vec<Value> {
    let (ok, stdout, stderr) = stack.interceptor(args);
    assert!(ok, "interceptor {}: {stderr}\n{stdout}", args.join(" "));
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn recordings(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "irec"));
    files.sort();
    files
}

#[test]
fn replay_matches_what_the_client_sent_and_resends_it() {
    if !require_kernel() {
        return;
    }
    let started = Instant::now();
    let stack = stack();
    let created = stack.client(
        BOOTSTRAP,
        "admin",
        &["--create", TOPIC, "--partitions", "3"],
    );
    assert_eq!(created["created"], json!([TOPIC]), "{created}");
    let created = stack.client(FORENSICS, "admin", &["--create", COPY, "--partitions", "3"]);
    assert_eq!(created["created"], json!([COPY]), "{created}");

    let sent: Vec<(String, String)> = (0..RECORDS).map(|i| (format!("k{i}"), value(i))).collect();
    let file = stack.work.join("records.jsonl");
    let lines: Vec<String> = sent
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}).to_string())
        .collect();
    fs::write(&file, lines.join("\n") + "\n").unwrap();
    let produced = stack.client(
        BOOTSTRAP,
        "produce-file",
        &[
            "--topic",
            TOPIC,
            "--codec",
            "lz4",
            "--records",
            &file.display().to_string(),
        ],
    );
    assert_eq!(produced["complete"], true, "{produced}");
    let stored = stack.dump(BOOTSTRAP, TOPIC);
    assert_eq!(stored.len(), RECORDS, "{stored:?}");

    // Every session of the producer (and of the rest) has ended its file.
    let dir = stack.work.join("recordings");
    let audit = stack.daemon.audit_path().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let timelines: Vec<Vec<Value>> = loop {
        let files = recordings(&dir);
        let timelines: Vec<Vec<Value>> = files
            .iter()
            .map(|f| {
                let f = f.display().to_string();
                replay(
                    &stack,
                    &[
                        "replay",
                        &f,
                        "--audit",
                        &audit,
                        "--format",
                        "json",
                        "--records",
                    ],
                )
            })
            .collect();
        let ended = timelines
            .iter()
            .all(|t| t.iter().any(|l| l["kind"] == "end"));
        if !files.is_empty() && ended {
            break timelines;
        }
        assert!(
            Instant::now() < deadline,
            "recordings not ended: {files:?}\n{}",
            stack.daemon.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // Not one original card number, in any file.
    for file in recordings(&dir) {
        let bytes = fs::read(&file).unwrap();
        for card in CARDS {
            assert!(
                !bytes.windows(card.len()).any(|w| w == card.as_bytes()),
                "{} holds {card}",
                file.display()
            );
        }
    }

    // The produce requests: what the client sent, as masked, partition by partition.
    let mut producer_files = Vec::new();
    let mut recorded: BTreeSet<(String, String)> = BTreeSet::new();
    let mut per_partition: BTreeMap<i64, u64> = BTreeMap::new();
    for (file, timeline) in recordings(&dir).iter().zip(&timelines) {
        let requests: Vec<&Value> = timeline
            .iter()
            .filter(|l| l["kind"] == "request" && l["api"] == "Produce")
            .collect();
        if requests.is_empty() {
            continue;
        }
        producer_files.push(file.clone());
        let uid = timeline[0]["session_uid"].as_str().expect("session uid");
        assert!(file.ends_with(format!("{uid}.irec")), "{file:?} vs {uid}");
        for r in &requests {
            let id = r["correlation_id"].as_i64().unwrap();
            for p in r["partitions"].as_array().expect("partitions") {
                assert_eq!(p["topic"], TOPIC, "{r}");
                let values = p["values"].as_array().expect("values");
                assert_eq!(p["records"].as_u64(), Some(values.len() as u64), "{p}");
                *per_partition
                    .entry(p["partition"].as_i64().unwrap())
                    .or_default() += values.len() as u64;
                for v in values {
                    let pair = (
                        v["key"].as_str().unwrap().to_owned(),
                        v["value"].as_str().unwrap().to_owned(),
                    );
                    assert!(recorded.insert(pair), "a record recorded twice: {v}");
                }
            }
            // Its decision, from the audit trail, right with it.
            let audit: Vec<&Value> = timeline
                .iter()
                .filter(|l| l["kind"] == "audit" && l["correlation_id"].as_i64() == Some(id))
                .collect();
            assert!(
                audit.iter().any(|a| a["event"] == "decision"
                    && a["audit"]["decision"] == "allow"
                    && a["audit"]["resource"] == TOPIC
                    && a["audit"]["operation"] == "produce"),
                "no allow decision for Produce #{id}: {audit:#?}"
            );
            assert!(
                audit.iter().any(|a| a["event"] == "transform"),
                "no masking event for Produce #{id}: {audit:#?}"
            );
            assert!(
                audit.iter().any(|a| a["event"] == "records"),
                "no records event for Produce #{id}: {audit:#?}"
            );
            let response = timeline
                .iter()
                .find(|l| l["kind"] == "response" && l["correlation_id"].as_i64() == Some(id))
                .unwrap_or_else(|| panic!("no answer to Produce #{id}"));
            for p in response["partitions"].as_array().unwrap() {
                assert_eq!(p["error_code"], 0, "{response}");
            }
        }
    }
    assert_eq!(
        recorded, stored,
        "the recording's records are the stored ones"
    );
    assert_eq!(per_partition.values().sum::<u64>(), RECORDS as u64);
    // Keys as sent, values as sent but for the masked card numbers.
    let sent_by_key: BTreeMap<&str, &str> =
        sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (key, value) in &recorded {
        let original: Value = serde_json::from_str(sent_by_key[key.as_str()]).unwrap();
        let masked: Value = serde_json::from_str(value).unwrap();
        let card = original["card"]["number"].as_str().unwrap();
        assert_eq!(
            masked["card"]["number"].as_str().unwrap(),
            format!("{}{}", "*".repeat(card.len() - 4), &card[card.len() - 4..])
        );
        let mut unmasked = masked.clone();
        unmasked["card"]["number"] = json!(card);
        assert_eq!(unmasked, original);
    }

    // The originals, sealed: listed without the key, the client's own records with it.
    let key = stack.work.join("recording.key").display().to_string();
    let mut originals: BTreeSet<(String, String)> = BTreeSet::new();
    for (file, timeline) in recordings(&dir).iter().zip(&timelines) {
        if !producer_files.contains(file) {
            continue;
        }
        let sealed: Vec<&Value> = timeline
            .iter()
            .filter(|l| l["kind"] == "raw_request")
            .collect();
        let produces = timeline
            .iter()
            .filter(|l| l["kind"] == "request" && l["api"] == "Produce")
            .count();
        assert_eq!(
            sealed.len(),
            produces,
            "one sealed original per masked produce"
        );
        assert!(
            sealed.iter().all(|r| r.get("frame").is_none()),
            "{sealed:?}"
        );
        let f = file.display().to_string();
        let opened = replay(
            &stack,
            &[
                "replay",
                &f,
                "--format",
                "json",
                "--records",
                "--raw-key-file",
                &key,
            ],
        );
        for raw in opened.iter().filter(|l| l["kind"] == "raw_request") {
            for p in raw["frame"]["partitions"].as_array().expect("opened") {
                for v in p["values"].as_array().unwrap() {
                    originals.insert((
                        v["key"].as_str().unwrap().to_owned(),
                        v["value"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    assert_eq!(originals, sent.iter().cloned().collect::<BTreeSet<_>>());

    // The text timeline, by session uid.
    let uid = producer_files[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (ok, text, stderr) = stack.interceptor(&[
        "replay",
        &uid,
        "--dir",
        &dir.display().to_string(),
        "--audit",
        &audit,
    ]);
    assert!(ok, "{stderr}");
    assert!(text.contains("→ Produce v"), "{text}");
    assert!(
        text.contains("audit: decision allow produce topic payments"),
        "{text}"
    );

    // Re-sent to the second broker under another name: the same records.
    let mut resent_records = 0;
    for file in &producer_files {
        let f = file.display().to_string();
        let (ok, stdout, stderr) = stack.interceptor(&[
            "replay",
            &f,
            "--resend-to",
            FORENSICS,
            "--topic-map",
            &format!("{TOPIC}={COPY}"),
            "--format",
            "json",
        ]);
        assert!(ok, "resend: {stderr}\n{stdout}");
        for line in stdout.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            for p in v["partitions"].as_array().into_iter().flatten() {
                assert_eq!(p["topic"], COPY, "{v}");
                assert_eq!(p["error_code"], 0, "{v}");
                resent_records += p["records"].as_u64().unwrap();
            }
        }
    }
    assert_eq!(resent_records, RECORDS as u64);
    assert_eq!(stack.dump(FORENSICS, COPY), stored);
    eprintln!("took {:?}", started.elapsed());
}
