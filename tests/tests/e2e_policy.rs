//! End to end, policy: the broker (tansu with SQLite storage, SCRAM from the interceptor's own
//! user), the real OIDC provider, the daemon terminating OAUTHBEARER and deciding every request
//! from a directory of YAML policy files, and real clients (librdkafka through confluent-kafka,
//! the pure-Python kafka-python, and hand-made frames where a test needs one exact request).
//!
//! Three stacks, one per test function (tansu with SCRAM takes seconds to start): access rules
//! per identity, topic and group (mixed Produce requests, acks=0 included); blocking rules
//! (immutable topics, forbidden content in compressed records, record size); and policy
//! changes while the daemon runs (a broken file keeps the old set, an edit revokes a running
//! consumer at its next fetch).
//!
//! The client scripts' `probe-*` operations report what was answered (errors by the library's
//! own name and the Kafka code) instead of failing: the refusals are what is tested.
//!
//! Needs root and `cargo xtask deps` + `cargo xtask build`; fails loudly otherwise, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use interceptor_e2e::{
    idp::{Idp, IdpClient},
    oidc_and_scram_settings, require_kernel, run_client, start_interceptor, start_tansu_scram,
    wait_until, wire, write_broker_secrets, BrokerUser, DaemonConfig, Interceptor, Lib, Netns,
    Proc, WorkDir,
};
use serde_json::Value;

const BOOTSTRAP: &str = "127.0.0.1:9092";
const IDP: &str = "127.0.0.1:9400";
/// What a client script may take before the harness kills it; the scripts' own `--timeout` is
/// well below it, so a hang shows up as a failed assertion on the summary, not a kill.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);
/// Every stack creates these (3 partitions each; this tansu does not create topics on produce).
const TOPICS: &[&str] = &[
    "orders",
    "secret",
    "audit.trail",
    "scratch",
    "secure.events",
];

/// The identities of the tests: an OIDC client-credentials token's principal is its `sub`,
/// which the provider sets to the client id; its groups come from the `groups` claim.
struct Who {
    id: &'static str,
    secret: &'static str,
    group: &'static str,
}

const WRITER: Who = Who {
    id: "orders-writer",
    secret: "writer-secret",
    group: "writers",
};
const ANALYST: Who = Who {
    id: "orders-analyst",
    secret: "analyst-secret",
    group: "analysts",
};
const OPS: Who = Who {
    id: "ops-admin",
    secret: "ops-secret",
    group: "platform-ops",
};

fn idp_clients() -> Vec<IdpClient> {
    [&WRITER, &ANALYST, &OPS]
        .iter()
        .map(|w| IdpClient::new(w.id, w.secret, &[w.group]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Policies

/// Every set lets every principal produce idempotently (librdkafka's default). A macro,
/// because `concat!` takes only literals.
macro_rules! idempotent_producers_rule {
    () => {
        r#"  - name: idempotent-producers
    effect: allow
    subjects:
      principals: ["*"]
    resources:
      cluster: true
    operations: [idempotent-write]
"#
    };
}

/// Access rules: writers own `orders`, analysts read it, nobody writes `secret`.
const ACCESS_POLICY: &str = concat!(
    r#"# End-to-end policy tests: access rules.
description: Writers own the orders topic, analysts read it, ops read everything.

rules:
  - name: writers-orders
    description: Writers produce and read orders, in their own consumer groups.
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: [orders]
      groups: ["writers-*"]
    operations: [produce, consume, describe, commit]

  - name: writers-see-all-topics
    description: >
      Writers see every topic in metadata, so a client sends records to a topic it may not
      write and the Produce request itself is what gets refused.
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: ["*"]
    operations: [describe]

  - name: analysts-read-orders
    effect: allow
    subjects:
      groups: [analysts]
    resources:
      topics: [orders]
      groups: ["analysts-*"]
    operations: [consume, describe, commit]

  - name: ops-read-everything
    description: The tests' own checks read every topic.
    effect: allow
    subjects:
      groups: [platform-ops]
    resources:
      topics: ["*"]
      groups: ["ops-*"]
    operations: [consume, describe, commit]

"#,
    idempotent_producers_rule!()
);

/// Access for the blocking tests: ops may do everything, writers write `secure.*`.
const ADMIN_POLICY: &str = concat!(
    r#"# End-to-end policy tests: who may administer and write.
description: Ops administer everything; writers write the secure topics.

rules:
  - name: ops-everything
    effect: allow
    subjects:
      groups: [platform-ops]
    resources:
      topics: ["*"]
      groups: ["*"]
      transactional_ids: ["*"]
      cluster: true
    operations: ["*"]

  - name: writers-secure
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: ["secure.*"]
    operations: [produce, describe]

"#,
    idempotent_producers_rule!()
);

const BLOCKING_POLICY: &str = r#"# End-to-end policy tests: blocking rules.
description: An immutable topic, forbidden content and a record size limit.

blocking:
  - name: audit-immutable
    topics: ["audit.*"]
    immutable: true

  - name: no-aws-keys
    topics: ["secure.*"]
    forbidden_content:
      - name: aws-access-keys
        patterns: ["AKIA"]
        in: [value, headers]

  - name: small-records
    topics: ["secure.*"]
    max_record_bytes: 16 KiB
"#;

/// The reload tests' sets, before and after the edit: writers own `orders`, and the analysts'
/// rule is what the edit changes. A macro, because `concat!` takes only literals.
macro_rules! reload_set {
    ($title:literal, $analysts_rule:literal, $analysts_operations:literal) => {
        concat!(
            "# End-to-end policy tests: ",
            $title,
            r#"
rules:
  - name: writers-orders
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: [orders]
    operations: [produce, consume, describe]

  - name: "#,
            $analysts_rule,
            r#"
    effect: allow
    subjects:
      groups: [analysts]
    resources:
      topics: [orders]
      groups: ["analysts-*"]
    operations: "#,
            $analysts_operations,
            "\n\n",
            idempotent_producers_rule!()
        )
    };
}

/// Before the edit: analysts read `orders`.
const RELOAD_BEFORE: &str = reload_set!(
    "the set before the edit.",
    "analysts-read-orders",
    "[consume, describe, commit]"
);

/// After the edit: analysts may still see `orders` (metadata keeps working), not read it.
const RELOAD_AFTER: &str = reload_set!(
    "the set after the edit (analysts lost consume).",
    "analysts-see-orders",
    "[describe]"
);

/// A typo'd key (line 6, column 7): the whole set must be refused.
const BROKEN_POLICY: &str = r#"# A typo: this file must be refused and the set in force kept.
rules:
  - name: typo
    effect: allow
    subjects:
      priciples: [orders-analyst]
    resources:
      topics: [orders]
    operations: [produce]
"#;
const BROKEN_AT: &str = "99-broken.yaml:6:7";

// ---------------------------------------------------------------------------------------------
// The stack

/// Drop order is field order: daemon, IdP, broker, files, namespace.
struct Stack {
    daemon: Interceptor,
    idp: Idp,
    _tansu: Proc,
    policies: PathBuf,
    work: WorkDir,
    ns: Netns,
}

fn stack(name: &str, policy_files: &[(&str, &str)]) -> Stack {
    let ns = Netns::new("itest-pol").expect("netns");
    let work = WorkDir::new(name).expect("work dir");
    let broker: SocketAddr = BOOTSTRAP.parse().expect("address");
    let user = BrokerUser {
        name: "interceptor".into(),
        password: "broker-side-secret".into(),
    };
    let tansu = start_tansu_scram(&ns, broker, &work, &user, TOPICS)
        .unwrap_or_else(|e| panic!("tansu: {e:#}"));
    let idp = Idp::start(
        &ns,
        IDP.parse().expect("address"),
        work.path(),
        &idp_clients(),
    )
    .unwrap_or_else(|e| panic!("idp: {e:#}"));
    let secrets = write_broker_secrets(&work, &user);
    let policies = work.join("policies");
    fs::create_dir_all(&policies).expect("policy dir");
    for (file, text) in policy_files {
        fs::write(policies.join(file), text).expect("writing a policy file");
    }
    let config = DaemonConfig::kafka(&[broker])
        .listener_settings("sasl_mechanisms = [\"OAUTHBEARER\"]\n")
        .policy_dir(&policies)
        .extra(&oidc_and_scram_settings(&idp, &secrets));
    let daemon = start_interceptor(&ns, &work, &config.body())
        .unwrap_or_else(|e| panic!("starting the daemon: {e:#}"));
    Stack {
        daemon,
        idp,
        _tansu: tansu,
        policies,
        work,
        ns,
    }
}

impl Stack {
    /// Runs a client script operation as `who`; its summary. A script that could not run (or
    /// a check mode that found a mismatch) fails the test with the daemon's log.
    fn client(&self, lib: Lib, who: &Who, op: &str, extra: &[&str]) -> Value {
        let endpoint = self.idp.token_endpoint();
        let mut args: Vec<&str> = vec![
            op,
            "--bootstrap",
            BOOTSTRAP,
            "--oidc-token-url",
            &endpoint,
            "--oidc-client-id",
            who.id,
            "--oidc-client-secret",
            who.secret,
        ];
        if !extra.contains(&"--timeout") {
            args.extend(["--timeout", "40"]);
        }
        args.extend(extra);
        match run_client(&self.ns, lib, &args, CLIENT_TIMEOUT) {
            Ok(v) => {
                eprintln!("{} {} {op}: {v}", lib.name(), who.id);
                v
            }
            Err(e) => panic!("{e:#}\n{}", self.daemon.log_tail(60)),
        }
    }

    /// probe-produce: `count` records of `seed` to each topic.
    fn produce(&self, lib: Lib, who: &Who, topics: &str, seed: &str, extra: &[&str]) -> Value {
        let mut args = vec!["--topics", topics, "--seed", seed];
        if !extra.contains(&"--count") {
            args.extend(["--count", "5"]);
        }
        if !extra.contains(&"--size") {
            args.extend(["--size", "300"]);
        }
        args.extend(extra);
        self.client(lib, who, "probe-produce", &args)
    }

    /// probe-consume of `topic`, its partitions assigned or not, in `group` if one is given:
    /// at most `count` records within `timeout` seconds.
    fn consume(
        &self,
        lib: Lib,
        who: &Who,
        topic: &str,
        (assign, group): (bool, Option<&str>),
        (count, timeout): (&str, &str),
        extra: &[&str],
    ) -> Value {
        let mut args = vec!["--topic", topic];
        if assign {
            args.push("--assign");
        }
        if let Some(group) = group {
            args.extend(["--group", group]);
        }
        args.extend(["--count", count]);
        args.extend(extra);
        args.extend(["--timeout", timeout]);
        self.client(lib, who, "probe-consume", &args)
    }

    /// Everything ops can read of `topic` now (assigned partitions, from the beginning), for
    /// at most `expect` records or 10 s: its keys and high watermarks.
    fn read_all(&self, topic: &str, expect: usize) -> Value {
        let count = expect.to_string();
        self.consume(
            Lib::Confluent,
            &OPS,
            topic,
            (true, Some("ops-check")),
            (&count, "10"),
            &[],
        )
    }

    /// Asserts `topic` holds `total` records, among them `count` keyed `seed:…` for each
    /// (seed, count) of `seeds`; what was read.
    fn assert_stored(&self, topic: &str, total: u64, seeds: &[(&str, usize)]) -> Value {
        let read = self.read_all(topic, total as usize);
        assert_eq!(watermark_sum(&read), total, "{read}");
        for &(seed, count) in seeds {
            assert_eq!(keys_of(&read, seed).len(), count, "{seed}: {read}");
        }
        read
    }

    /// Asserts `topic` still holds the `before` records it had.
    fn assert_unchanged(&self, topic: &str, before: u64) {
        assert_eq!(
            watermark_sum(&self.read_all(topic, 0)),
            before,
            "{topic} is unchanged"
        );
    }

    /// Waits up to 5 s for a status `ready` accepts.
    fn wait_status(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        wait_until(Duration::from_secs(5), what, || {
            let st = self.status();
            ready(&st).then_some(st)
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", self.daemon.log_tail(40)))
    }

    /// The policy_reload audit event with this outcome.
    fn reload_event(&self, outcome: &str) -> Value {
        self.audit(&format!("policy_reload {outcome}"), |e| {
            e["event"] == "policy_reload" && e["outcome"] == outcome
        })
    }

    fn status(&self) -> Value {
        self.daemon
            .status()
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.daemon.log_tail(40)))
    }

    /// The first audit event matching `pred` (waiting up to 5 s).
    fn audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.daemon
            .wait_audit(Duration::from_secs(5), pred)
            .unwrap_or_else(|e| panic!("audit: {what}: {e:#}"))
    }

    fn token(&self, who: &Who) -> String {
        self.idp
            .fetch_token(&self.ns, who.id, who.secret)
            .unwrap_or_else(|e| panic!("token for {}: {e:#}", who.id))
    }

    /// A raw connection authenticated as `who` (correlation ids 1 and 2 used).
    fn raw_session(&self, who: &Who) -> TcpStream {
        let token = self.token(who);
        let addr: SocketAddr = BOOTSTRAP.parse().expect("address");
        let mut stream = self
            .ns
            .run(move || {
                wire::connect_from(
                    "127.0.0.1:0".parse().expect("address"),
                    addr,
                    Duration::from_secs(5),
                )
                .1
            })
            .expect("connect to the protected address");
        let answer = wire::oauthbearer(&mut stream, 1, &token).expect("OAUTHBEARER exchange");
        assert_eq!(answer.error_code, 0, "authentication: {answer:?}");
        stream
    }

    /// Replaces a policy file the way a careful tool does: written aside (a hidden name, which
    /// the daemon ignores), then renamed over the old one, so no half-written file is read.
    fn write_policy(&self, name: &str, text: &str) {
        let tmp = self.policies.join(format!(".{name}.tmp"));
        fs::write(&tmp, text).expect("writing a policy file");
        fs::rename(&tmp, self.policies.join(name)).expect("renaming a policy file");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the probes' summaries

/// The error a library reports for a Kafka error code: confluent-kafka (librdkafka) uses
/// Kafka's own names, kafka-python an exception class per code.
fn error_name(lib: Lib, code: i64) -> &'static str {
    match (lib, code) {
        (Lib::Confluent, 29) => "TOPIC_AUTHORIZATION_FAILED",
        (Lib::Confluent, 30) => "GROUP_AUTHORIZATION_FAILED",
        (Lib::Confluent, 44) => "POLICY_VIOLATION",
        (Lib::KafkaPython, 29) => "TopicAuthorizationFailedError",
        (Lib::KafkaPython, 30) => "GroupAuthorizationFailedError",
        (Lib::KafkaPython, 44) => "PolicyViolationError",
        _ => panic!("no expected name for error {code}"),
    }
}

/// Asserts every record of `topic` in a probe-produce summary was stored.
fn assert_delivered(v: &Value, topic: &str, count: u64) {
    let t = &v["topics"][topic];
    assert_eq!(t["delivered"], count, "{topic} delivered: {v}");
    assert_eq!(t["failed"], 0, "{topic} failed: {v}");
}

/// Asserts every record of `topic` in a probe-produce summary failed with `code`, reported by
/// the library under its own name for that code.
fn assert_refused(lib: Lib, v: &Value, topic: &str, count: u64, code: i64) {
    let name = error_name(lib, code);
    let t = &v["topics"][topic];
    assert_eq!(
        t["delivered"], 0,
        "{topic}: records stored despite the refusal: {v}"
    );
    assert_eq!(
        t["errors"][name], count,
        "{topic}: want {count} × {name}: {v}"
    );
    assert_eq!(v["codes"][name], code, "{name} has code {code}: {v}");
}

/// The keys of a probe-consume summary that start with `seed:`.
fn keys_of(v: &Value, seed: &str) -> Vec<String> {
    let prefix = format!("{seed}:");
    v["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .filter(|k| k.starts_with(&prefix))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts a probe-consume summary ends with the refusal `code`, reported by the library
/// under its own name for that code.
fn assert_consume_refused(lib: Lib, v: &Value, code: i64) {
    assert_eq!(v["refusal"]["code"], code, "{}: {v}", lib.name());
    assert_eq!(v["refusal"]["name"], error_name(lib, code), "{v}");
}

/// The version of the policy set a status reports.
fn policy_version(status: &Value) -> String {
    status["policy"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("status has no policy.version: {status}"))
        .to_owned()
}

/// Whether a status reports no errors from the last policy load.
fn no_policy_errors(status: &Value) -> bool {
    status["policy"]["last_errors"]
        .as_array()
        .is_none_or(Vec::is_empty)
}

fn watermark_sum(v: &Value) -> u64 {
    v["high_watermarks"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or_else(|| panic!("no high watermarks in {v}"))
}

fn is_decision(e: &Value, decision: &str, resource: &str) -> bool {
    e["event"] == "decision" && e["decision"] == decision && e["resource"] == resource
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Hand-made requests (kafka-protocol's encoder), for what one exact request shows

mod raw {
    use std::{io::Write, net::TcpStream};

    use bytes::{Bytes, BytesMut};
    use interceptor_e2e::wire;
    use kafka_protocol::{
        messages::{
            create_partitions_request::CreatePartitionsTopic,
            produce_request::{PartitionProduceData, TopicProduceData},
            ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, ProduceRequest,
            ProduceResponse, RequestHeader, ResponseHeader, TopicName,
        },
        protocol::{Decodable, Encodable, HeaderVersion, StrBytes},
        records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType},
    };

    /// Produce v7: record batches, not flexible; every broker of interest speaks it.
    const PRODUCE_VERSION: i16 = 7;
    pub const CLIENT_ID: &str = "itest-raw";

    /// One uncompressed batch (not idempotent: producer id -1) with these keys.
    pub fn batch(keys: &[String], value: &[u8]) -> Bytes {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now,
                key: Some(Bytes::from(k.clone().into_bytes())),
                value: Some(Bytes::copy_from_slice(value)),
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
        .expect("encoding a record batch");
        buf.freeze()
    }

    /// A Produce request writing `batch` to partition 0 of each topic, in this order.
    fn produce_request(acks: i16, parts: &[(&str, Bytes)]) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(
                parts
                    .iter()
                    .map(|(topic, batch)| {
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string((*topic).to_owned())))
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(batch.clone()))])
                    })
                    .collect(),
            )
    }

    /// One request, framed, with the raw client id.
    fn request_frame<Req: Encodable + HeaderVersion>(
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        request: &Req,
    ) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, Req::header_version(version))
            .expect("encoding the request header");
        request
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("encoding the {api_key:?} request: {e}"));
        wire::frame(&buf)
    }

    /// Sends one request and decodes its response (checking the correlation id).
    fn round_trip<Req, Resp>(
        stream: &mut TcpStream,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        request: &Req,
    ) -> Resp
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        stream
            .write_all(&request_frame(api_key, version, correlation_id, request))
            .unwrap_or_else(|e| panic!("sending {api_key:?}: {e}"));
        let body = wire::read_frame(stream)
            .unwrap_or_else(|e| panic!("reading the {api_key:?} response: {e}"));
        let mut buf = Bytes::from(body);
        let header = ResponseHeader::decode(&mut buf, Resp::header_version(version))
            .expect("decoding the response header");
        assert_eq!(
            header.correlation_id, correlation_id,
            "response to another request"
        );
        Resp::decode(&mut buf, version)
            .unwrap_or_else(|e| panic!("decoding the {api_key:?} response: {e}"))
    }

    /// CreatePartitions v1 (what librdkafka would send, had the broker advertised it; tansu
    /// does not, so the test sends it by hand): (error code, message) for `topic`.
    pub fn create_partitions(
        stream: &mut TcpStream,
        correlation_id: i32,
        topic: &str,
        count: i32,
    ) -> (i16, Option<String>) {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_count(count)]);
        let response: CreatePartitionsResponse = round_trip(
            stream,
            ApiKey::CreatePartitions,
            1,
            correlation_id,
            &request,
        );
        let result = response
            .results
            .iter()
            .find(|r| r.name.0.as_str() == topic)
            .unwrap_or_else(|| panic!("no result for {topic}: {response:?}"));
        (
            result.error_code,
            result.error_message.as_ref().map(|m| m.as_str().to_owned()),
        )
    }

    /// Sends a Produce request with acks != 0 and reads its answer: (topic, partition 0's
    /// error code) in the response's order.
    pub fn produce_round_trip(
        stream: &mut TcpStream,
        correlation_id: i32,
        acks: i16,
        parts: &[(&str, Bytes)],
    ) -> Vec<(String, i16)> {
        let response: ProduceResponse = round_trip(
            stream,
            ApiKey::Produce,
            PRODUCE_VERSION,
            correlation_id,
            &produce_request(acks, parts),
        );
        response
            .responses
            .iter()
            .flat_map(|t| {
                t.partition_responses
                    .iter()
                    .map(move |p| (t.name.0.as_str().to_owned(), p.error_code))
            })
            .collect()
    }

    /// Sends a Produce request with acks=0: the broker answers nothing.
    pub fn produce_no_ack(stream: &mut TcpStream, correlation_id: i32, parts: &[(&str, Bytes)]) {
        let request = produce_request(0, parts);
        stream
            .write_all(&request_frame(
                ApiKey::Produce,
                PRODUCE_VERSION,
                correlation_id,
                &request,
            ))
            .expect("sending Produce acks=0");
    }
}

fn keys(seed: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{seed}:{i:08}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn access_rules_decide_per_identity_topic_and_group() {
    if !require_kernel() {
        return;
    }
    let s = stack("pol-access", &[("10-orders.yaml", ACCESS_POLICY)]);
    let version = policy_version(&s.status());
    assert!(
        version.starts_with("sha256:"),
        "a loaded set's version: {version}"
    );

    // 1. The writer produces and the records can be read back, by the writer itself and by an
    // analyst (who may read orders).
    let v = s.produce(Lib::Confluent, &WRITER, "orders", "w1", &["--count", "20"]);
    assert_delivered(&v, "orders", 20);
    let read = s.consume(
        Lib::KafkaPython,
        &WRITER,
        "orders",
        (true, None),
        ("20", "30"),
        &[],
    );
    assert_eq!(
        keys_of(&read, "w1").len(),
        20,
        "the writer reads its records: {read}"
    );
    assert!(read["refusal"].is_null(), "{read}");
    let read = s.consume(
        Lib::Confluent,
        &ANALYST,
        "orders",
        (true, Some("analysts-read")),
        ("20", "30"),
        &[],
    );
    assert_eq!(
        keys_of(&read, "w1").len(),
        20,
        "the analyst reads orders: {read}"
    );

    // The analyst's produce is refused, each library reporting the error its own way.
    for (lib, seed) in [(Lib::Confluent, "a-ck"), (Lib::KafkaPython, "a-kp")] {
        let v = s.produce(lib, &ANALYST, "orders", seed, &["--timeout", "20"]);
        assert_refused(lib, &v, "orders", 5, 29);
    }
    // Nothing more than the writer's 20 records is stored.
    assert_eq!(
        watermark_sum(&s.read_all("orders", 20)),
        20,
        "orders holds the writer's records only"
    );
    // Audited: who, what, which rule (none: default deny) and under which policy.
    let deny = s.audit("the analyst's produce", |e| {
        is_decision(e, "deny", "orders") && e["principal"] == ANALYST.id && e["api"] == "Produce"
    });
    assert_eq!(deny["operation"], "produce", "{deny}");
    assert_eq!(deny["resource_type"], "topic", "{deny}");
    assert_eq!(deny["groups"], serde_json::json!([ANALYST.group]), "{deny}");
    assert!(
        deny.get("rule").is_none(),
        "default deny names no rule: {deny}"
    );
    assert_eq!(deny["policy_version"], version.as_str(), "{deny}");
    assert!(deny["client_id"].is_string(), "{deny}");
    // And the allowed produce names its rule and where it is.
    let allow = s.audit("the writer's produce", |e| {
        is_decision(e, "allow", "orders") && e["principal"] == WRITER.id && e["api"] == "Produce"
    });
    assert_eq!(allow["rule"], "writers-orders", "{allow}");
    assert!(
        allow["rule_source"]
            .as_str()
            .is_some_and(|src| src.contains("10-orders.yaml:")),
        "{allow}"
    );

    // 2. One Produce request for an allowed and a denied topic: the allowed part is stored,
    // the denied part refused. kafka-python sends every partition bound for one broker in one
    // request; librdkafka is given a long linger so both topics are ready together.
    let secret_before = watermark_sum(&s.read_all("secret", 0));
    for (lib, seed) in [(Lib::KafkaPython, "mx-kp"), (Lib::Confluent, "mx-ck")] {
        let v = s.produce(
            lib,
            &WRITER,
            "orders,secret",
            seed,
            &["--linger-ms", "1000", "--timeout", "20"],
        );
        assert_delivered(&v, "orders", 5);
        assert_refused(lib, &v, "secret", 5, 29);
    }
    s.assert_stored("orders", 30, &[("mx-kp", 5), ("mx-ck", 5)]);
    s.assert_unchanged("secret", secret_before);
    // The kafka-python request really carried both topics: one correlation id, both decisions.
    let events = s.daemon.audit_events();
    let produce_decisions = |decision: &str, topic: &str| -> Vec<(u64, i64)> {
        events
            .iter()
            .filter(|e| {
                is_decision(e, decision, topic)
                    && e["api"] == "Produce"
                    && e["client_id"] == "itest-kafka-python-probe"
            })
            .filter_map(|e| Some((e["session"].as_u64()?, e["correlation_id"].as_i64()?)))
            .collect()
    };
    let denied = produce_decisions("deny", "secret");
    let allowed = produce_decisions("allow", "orders");
    assert!(
        denied.iter().any(|d| allowed.contains(d)),
        "no kafka-python Produce request decided for both topics: denied {denied:?}, allowed {allowed:?}"
    );
    // The same, deterministically, with one hand-made request: secret first, then orders.
    let mut raw = s.raw_session(&WRITER);
    let answer = raw::produce_round_trip(
        &mut raw,
        3,
        -1,
        &[
            ("secret", raw::batch(&keys("raw-mx", 2), b"denied part")),
            ("orders", raw::batch(&keys("raw-mx", 3), b"allowed part")),
        ],
    );
    assert_eq!(
        answer,
        vec![("secret".to_owned(), 29), ("orders".to_owned(), 0)],
        "partition errors in request order\n{}",
        s.daemon.log_tail(30)
    );
    s.assert_stored("orders", 33, &[("raw-mx", 3)]);
    s.assert_unchanged("secret", secret_before);

    // 3. A consumer group the identity may not use: refused at once, not after the timeout.
    for lib in [Lib::Confluent, Lib::KafkaPython] {
        let started = Instant::now();
        let v = s.consume(
            lib,
            &ANALYST,
            "orders",
            (false, Some("writers-app")),
            ("1", "60"),
            &[],
        );
        assert_consume_refused(lib, &v, 30);
        let after = v["refusal_after"].as_f64().unwrap_or(f64::MAX);
        assert!(
            after < 20.0,
            "{}: the refusal took {after} s: {v}",
            lib.name()
        );
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{}: the client hung after the refusal ({:?})",
            lib.name(),
            started.elapsed()
        );
    }
    let deny = s.audit("the analyst's group", |e| {
        is_decision(e, "deny", "writers-app") && e["principal"] == ANALYST.id
    });
    assert_eq!(deny["resource_type"], "group", "{deny}");

    // 8. acks=0 to a denied topic: nothing stored, audited, the connection keeps working.
    // librdkafka, one producer: the denied topic first (flushed), then the allowed one.
    let v = s.produce(
        Lib::Confluent,
        &WRITER,
        "secret,orders",
        "ack0",
        &["--acks", "0", "--sequential", "--timeout", "20"],
    );
    // acks=0: the client counts a record delivered once it is sent.
    assert_eq!(v["topics"]["orders"]["delivered"], 5, "{v}");
    s.assert_stored("orders", 38, &[("ack0", 5)]);
    s.assert_unchanged("secret", secret_before);
    s.audit("the acks=0 produce", |e| {
        is_decision(e, "deny", "secret")
            && e["api"] == "Produce"
            && e["client_id"] == "itest-confluent-probe"
            && e["principal"] == WRITER.id
    });
    // By hand on one connection: no answer comes for the acks=0 request (the next frame
    // read is the Metadata response), and the next Produce on it is served.
    let mut raw = s.raw_session(&WRITER);
    raw::produce_no_ack(
        &mut raw,
        10,
        &[("secret", raw::batch(&keys("raw-ack0", 2), b"x"))],
    );
    wire::metadata_round_trip(&mut raw, 11).unwrap_or_else(|e| {
        panic!(
            "the connection after acks=0: {e}\n{}",
            s.daemon.log_tail(30)
        )
    });
    let answer = raw::produce_round_trip(
        &mut raw,
        12,
        1,
        &[("orders", raw::batch(&keys("raw-ack0", 2), b"after"))],
    );
    assert_eq!(answer, vec![("orders".to_owned(), 0)]);
    s.audit("the raw acks=0 produce", |e| {
        is_decision(e, "deny", "secret")
            && e["client_id"] == raw::CLIENT_ID
            && e["correlation_id"] == 10
    });
    s.assert_stored("orders", 40, &[("raw-ack0", 2)]);
    s.assert_unchanged("secret", secret_before);
}

#[test]
fn blocking_rules_protect_immutable_topics_and_refuse_records() {
    if !require_kernel() {
        return;
    }
    let s = stack(
        "pol-blocking",
        &[
            ("10-admin.yaml", ADMIN_POLICY),
            ("40-blocking.yaml", BLOCKING_POLICY),
        ],
    );

    // 4. Ops may do anything, but not to an immutable topic. CreatePartitions by hand: tansu
    // does not offer it, so librdkafka would refuse to send it.
    let mut raw = s.raw_session(&OPS);
    let (code, message) = raw::create_partitions(&mut raw, 3, "audit.trail", 4);
    assert_eq!(
        code, 44,
        "CreatePartitions on an immutable topic: {message:?}"
    );
    drop(raw);
    let v = s.client(
        Lib::Confluent,
        &OPS,
        "probe-admin",
        &[
            "--topic",
            "audit.trail",
            "--actions",
            "delete-topic,alter-config",
        ],
    );
    for result in v["results"].as_array().expect("results") {
        assert_eq!(result["error"]["code"], 44, "{result} in {v}");
        assert_eq!(result["error"]["name"], "POLICY_VIOLATION", "{result}");
    }
    assert_eq!(v["results"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["exists"], true, "the immutable topic survives: {v}");
    assert_eq!(v["partitions"], 3, "no partition added: {v}");
    for op in ["delete", "alter", "alter-configs"] {
        let e = s.audit(op, |e| {
            is_decision(e, "violation", "audit.trail") && e["operation"] == op
        });
        assert_eq!(e["rule"], "audit-immutable", "{e}");
        assert_eq!(e["principal"], OPS.id, "{e}");
    }
    // 7. Records: clean ones pass; a forbidden pattern inside compressed records is found;
    // a record over the size limit is refused.
    for (lib, seed, codec) in [
        (Lib::Confluent, "clean-ck", "gzip"),
        (Lib::KafkaPython, "clean-kp", "zstd"),
    ] {
        let v = s.produce(lib, &WRITER, "secure.events", seed, &["--codec", codec]);
        assert_delivered(&v, "secure.events", 5);
    }
    for (lib, seed, codec) in [
        (Lib::Confluent, "akia-ck", "gzip"),
        (Lib::KafkaPython, "akia-kp", "zstd"),
    ] {
        let v = s.produce(
            lib,
            &WRITER,
            "secure.events",
            seed,
            &[
                "--codec",
                codec,
                "--inject",
                "key=AKIAIOSFODNN7EXAMPLE",
                "--timeout",
                "20",
            ],
        );
        assert_refused(lib, &v, "secure.events", 5, 44);
    }
    for (lib, seed) in [(Lib::Confluent, "big-ck"), (Lib::KafkaPython, "big-kp")] {
        let v = s.produce(
            lib,
            &WRITER,
            "secure.events",
            seed,
            &[
                "--count",
                "1",
                "--size",
                "20000",
                "--codec",
                "lz4",
                "--timeout",
                "20",
            ],
        );
        assert_refused(lib, &v, "secure.events", 1, 44);
    }
    let read = s.read_all("secure.events", 10);
    assert_eq!(keys_of(&read, "clean-ck").len(), 5, "{read}");
    assert_eq!(keys_of(&read, "clean-kp").len(), 5, "{read}");
    for bad in ["akia-ck", "akia-kp", "big-ck", "big-kp"] {
        assert!(
            keys_of(&read, bad).is_empty(),
            "{bad} records stored: {read}"
        );
    }
    assert_eq!(watermark_sum(&read), 10, "only the clean records: {read}");
    let e = s.audit("forbidden content", |e| {
        is_decision(e, "violation", "secure.events") && e["rule"] == "no-aws-keys"
    });
    assert_eq!(e["principal"], WRITER.id, "{e}");
    assert_eq!(e["operation"], "produce", "{e}");
    s.audit("record size", |e| {
        is_decision(e, "violation", "secure.events") && e["rule"] == "small-records"
    });
    // The same identity deletes a topic no blocking rule covers (last: tansu's DeleteTopics
    // seemed to take other topics with it).
    let v = s.client(
        Lib::Confluent,
        &OPS,
        "probe-admin",
        &["--topic", "scratch", "--actions", "delete-topic"],
    );
    assert!(v["results"][0]["error"].is_null(), "{v}");
    assert_eq!(v["exists"], false, "{v}");
}

#[test]
fn policy_changes_apply_to_running_sessions_and_broken_sets_are_refused() {
    if !require_kernel() {
        return;
    }
    let s = stack("pol-reload", &[("10-orders.yaml", RELOAD_BEFORE)]);
    let before = s.status();
    let v1 = policy_version(&before);
    assert_eq!(before["policy"]["generation"], 1, "{before}");

    // 6. A broken file: refused whole, the old set stays in force.
    fs::write(s.policies.join("99-broken.yaml"), BROKEN_POLICY).expect("writing the broken file");
    let status = s.wait_status("the broken set refused", |st| !no_policy_errors(st));
    assert_eq!(status["policy"]["version"], v1.as_str(), "{status}");
    assert_eq!(status["policy"]["generation"], 1, "{status}");
    let errors = status["policy"]["last_errors"].to_string();
    assert!(
        errors.contains(BROKEN_AT),
        "errors point at {BROKEN_AT}: {errors}"
    );
    assert!(
        s.daemon.log().contains(BROKEN_AT),
        "the log names {BROKEN_AT}\n{}",
        s.daemon.log_tail(40)
    );
    let rejected = s.reload_event("rejected");
    assert_eq!(
        rejected["version"],
        v1.as_str(),
        "the version in force: {rejected}"
    );
    assert!(
        rejected["errors"].to_string().contains(BROKEN_AT),
        "{rejected}"
    );
    // What was allowed still is, what was denied still is.
    let v = s.produce(Lib::Confluent, &WRITER, "orders", "still-ok", &[]);
    assert_delivered(&v, "orders", 5);
    let v = s.produce(
        Lib::Confluent,
        &ANALYST,
        "orders",
        "still-no",
        &["--timeout", "20"],
    );
    assert_refused(Lib::Confluent, &v, "orders", 5, 29);
    let deny = s.audit("the analyst's produce under the old set", |e| {
        is_decision(e, "deny", "orders") && e["principal"] == ANALYST.id
    });
    assert_eq!(deny["policy_version"], v1.as_str(), "{deny}");

    // The file removed: the same set as before, errors cleared, no new generation.
    fs::remove_file(s.policies.join("99-broken.yaml")).expect("removing the broken file");
    let status = s.wait_status("the errors cleared", no_policy_errors);
    assert_eq!(status["policy"]["version"], v1.as_str(), "{status}");
    assert_eq!(status["policy"]["generation"], 1, "{status}");

    // 5. An edit revokes running consumers at their next fetch.
    let v = s.produce(
        Lib::Confluent,
        &WRITER,
        "orders",
        "live",
        &["--count", "10"],
    );
    assert_delivered(&v, "orders", 10);
    let edited_at = std::sync::Mutex::new(None::<f64>);
    let results: Vec<(Lib, Value)> = std::thread::scope(|scope| {
        let consumers: Vec<_> = [Lib::Confluent, Lib::KafkaPython]
            .into_iter()
            .map(|lib| {
                let progress = s.work.join(&format!("progress-{}", lib.name()));
                let handle = scope.spawn({
                    let progress = progress.clone();
                    let s = &s;
                    move || {
                        let progress = progress.to_str().expect("utf-8 path").to_owned();
                        let v = s.consume(
                            lib,
                            &ANALYST,
                            "orders",
                            (true, Some("analysts-live")),
                            ("15", "60"),
                            &["--until-error", "--progress-file", &progress],
                        );
                        (lib, v)
                    }
                });
                (lib, progress, handle)
            })
            .collect();
        // Both have read everything there is (10 live + 5 still-ok) before the edit.
        for (lib, progress, _) in &consumers {
            wait_until(Duration::from_secs(60), "the consumer caught up", || {
                let text = fs::read_to_string(progress).ok()?;
                let state: Value = serde_json::from_str(text.trim()).ok()?;
                (state["consumed"].as_u64()? >= 15).then_some(())
            })
            .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", lib.name(), s.daemon.log_tail(40)));
        }
        *edited_at.lock().expect("lock") = Some(now_secs());
        s.write_policy("10-orders.yaml", RELOAD_AFTER);
        consumers
            .into_iter()
            .map(|(_, _, handle)| {
                handle
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e))
            })
            .collect()
    });
    let edited_at = edited_at
        .into_inner()
        .expect("lock")
        .expect("the edit happened");
    for (lib, v) in &results {
        assert_consume_refused(*lib, v, 29);
        let after = v["refused_at"].as_f64().unwrap_or(f64::MAX) - edited_at;
        assert!(
            after < 5.0,
            "{}: refused {after:.1} s after the edit: {v}",
            lib.name()
        );
        assert!(v["consumed"].as_u64().is_some_and(|n| n >= 15), "{v}");
    }
    let after = s.status();
    let v2 = policy_version(&after);
    assert_ne!(v2, v1, "a new version: {after}");
    assert_eq!(after["policy"]["generation"], 2, "{after}");
    assert!(no_policy_errors(&after), "{after}");
    let loaded = s.reload_event("loaded");
    assert_eq!(loaded["version"], v2.as_str(), "{loaded}");
    assert_eq!(loaded["previous_version"], v1.as_str(), "{loaded}");
    let deny = s.audit("the analyst's fetch under the new set", |e| {
        is_decision(e, "deny", "orders") && e["principal"] == ANALYST.id && e["api"] == "Fetch"
    });
    assert_eq!(deny["policy_version"], v2.as_str(), "{deny}");
    assert_eq!(deny["operation"], "consume", "{deny}");
}
