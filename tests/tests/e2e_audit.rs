//! End to end, audit trail: real clients (librdkafka, kafka-python) through the kernel-steered
//! daemon in front of a real broker, with OIDC identities from the real IdP.
//!
//! - `interceptor audit query` answers "who wrote and who read topic X today, and what did
//!   they get" from the trail (records events with offsets and hashes), and finds a denial;
//!   `interceptor audit verify` finds the trail intact.
//! - kill -9 of the daemon under a steady producer: every offset the producer saw
//!   acknowledged is in the trail (events are durable before the acknowledgement is sent);
//!   the restarted daemon cuts a torn group, continues the chain, and verify still passes.
//!
//! Needs root and `cargo xtask deps` + `cargo xtask build`; fails loudly otherwise, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`.

use std::{collections::BTreeSet, fs, net::SocketAddr, time::Duration};

use interceptor_e2e::{
    idp::{Idp, IdpClient},
    oidc_and_scram_settings, peers, require_kernel, run_client, start_interceptor,
    start_tansu_scram, wait_until, write_broker_secrets, BrokerUser, DaemonConfig, Interceptor,
    Lib, Netns, Proc, WorkDir,
};
use serde_json::Value;

const BOOTSTRAP: &str = "127.0.0.1:9092";
const IDP: &str = "127.0.0.1:9400";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
const TOPIC: &str = "orders";
/// Where the daemon's Kafka exporter sends its copy of the trail (same broker).
const AUDIT_TOPIC: &str = "interceptor.audit";

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
const READER: Who = Who {
    id: "orders-reader",
    secret: "reader-secret",
    group: "readers",
};
const INTRUDER: Who = Who {
    id: "intruder",
    secret: "intruder-secret",
    group: "nobody",
};

const POLICY: &str = r#"rules:
  - name: writers
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: [orders]
    operations: [produce, describe]
  - name: readers
    effect: allow
    subjects:
      groups: [readers]
    resources:
      topics: [orders]
      groups: ["itest-unused-*"]
    operations: [consume, describe]
  - name: idempotent-writers
    effect: allow
    subjects:
      groups: [writers]
    resources:
      cluster: true
    operations: [idempotent-write]
  - name: auditors
    effect: allow
    subjects:
      groups: [readers]
    resources:
      topics: [interceptor.audit]
      groups: ["itest-unused-*"]
    operations: [consume, describe]
  - name: everyone-describes
    effect: allow
    subjects:
      principals: ["*"]
    resources:
      topics: [orders]
    operations: [describe]
"#;

struct Stack {
    daemon: Interceptor,
    idp: Idp,
    _tansu: Proc,
    work: WorkDir,
    ns: Netns,
}

fn stack(name: &str) -> Stack {
    stack_with(name, "")
}

fn stack_with(name: &str, extra: &str) -> Stack {
    let ns = Netns::new("itest-audit").expect("netns");
    let work = WorkDir::new(name).expect("work dir");
    let broker: SocketAddr = BOOTSTRAP.parse().expect("address");
    let user = BrokerUser {
        name: "interceptor".into(),
        password: "broker-side-secret".into(),
    };
    let tansu = start_tansu_scram(&ns, broker, &work, &user, &[TOPIC, AUDIT_TOPIC])
        .unwrap_or_else(|e| panic!("tansu: {e:#}"));
    let clients: Vec<IdpClient> = [&WRITER, &READER, &INTRUDER]
        .iter()
        .map(|w| IdpClient::new(w.id, w.secret, &[w.group]))
        .collect();
    let idp = Idp::start(&ns, IDP.parse().expect("address"), work.path(), &clients)
        .unwrap_or_else(|e| panic!("idp: {e:#}"));
    let secrets = write_broker_secrets(&work, &user);
    let policies = work.join("policies");
    fs::create_dir_all(&policies).expect("policy dir");
    fs::write(policies.join("orders.yaml"), POLICY).expect("policy");
    let config = DaemonConfig::kafka(&[broker])
        .listener_settings("sasl_mechanisms = [\"OAUTHBEARER\"]\n")
        .policy_dir(&policies)
        .extra(&oidc_and_scram_settings(&idp, &secrets))
        .extra(extra);
    let daemon = start_interceptor(&ns, &work, &config.body())
        .unwrap_or_else(|e| panic!("starting the daemon: {e:#}"));
    Stack {
        daemon,
        idp,
        _tansu: tansu,
        work,
        ns,
    }
}

impl Stack {
    fn oidc_args<'a>(&'a self, who: &'a Who, endpoint: &'a str) -> Vec<&'a str> {
        vec![
            "--bootstrap",
            BOOTSTRAP,
            "--oidc-token-url",
            endpoint,
            "--oidc-client-id",
            who.id,
            "--oidc-client-secret",
            who.secret,
        ]
    }

    fn client(&self, lib: Lib, who: &Who, op: &str, extra: &[&str]) -> Value {
        let endpoint = self.idp.token_endpoint();
        let mut args = vec![op];
        args.extend(self.oidc_args(who, &endpoint));
        args.extend(extra);
        match run_client(&self.ns, lib, &args, CLIENT_TIMEOUT) {
            Ok(v) => {
                let shown: String = v.to_string().chars().take(400).collect();
                eprintln!("{} {} {op}: {shown}", lib.name(), who.id);
                v
            }
            Err(e) => panic!("{e:#}\n{}", self.daemon.log_tail(60)),
        }
    }

    /// `interceptor audit ARGS` on this daemon's trail: exit code and stdout.
    fn audit_cli(&self, args: &[&str]) -> (i32, String) {
        let dir = self.daemon.audit_path().display().to_string();
        let mut full = vec!["audit", args[0], dir.as_str()];
        full.extend(&args[1..]);
        let out = self.daemon.cli(&full).expect("interceptor audit");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.is_empty() {
            eprintln!("interceptor {}: {stderr}", full.join(" "));
        }
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `interceptor audit query … --format json`: the events found.
    fn query(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["query"];
        full.extend(args);
        full.extend(["--format", "json"]);
        let (code, out) = self.audit_cli(&full);
        assert_eq!(code, 0, "audit query {args:?}: {out}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The offsets a set of `records` events covers, per partition.
fn covered(events: &[Value], stage: &str) -> BTreeSet<(i64, i64)> {
    let mut out = BTreeSet::new();
    for e in events
        .iter()
        .filter(|e| e["event"] == "records" && e["stage"] == stage)
    {
        for p in e["partitions"].as_array().into_iter().flatten() {
            if p["topic"] != TOPIC || p["error_code"] != 0 {
                continue;
            }
            let (Some(first), Some(last)) = (p["first_offset"].as_i64(), p["last_offset"].as_i64())
            else {
                continue;
            };
            let partition = p["partition"].as_i64().unwrap_or(-1);
            out.extend((first..=last).map(|o| (partition, o)));
        }
    }
    out
}

#[test]
fn the_trail_answers_who_wrote_and_read_a_topic_and_verifies() {
    if !require_kernel() {
        return;
    }
    // The daemon also exports its trail to a topic of the same broker, through its own
    // (exempted, SCRAM-authenticated) producer.
    let s = stack_with(
        "audit-query",
        &format!(
            "[[audit.export.kafka]]\nname = \"copy\"\nbroker = \"{BOOTSTRAP}\"\ntopic = \"{AUDIT_TOPIC}\"\nlinger_ms = 20\n"
        ),
    );
    let produced = s.client(
        Lib::Confluent,
        &WRITER,
        "produce",
        &[
            "--topic",
            TOPIC,
            "--count",
            "60",
            "--size",
            "200",
            "--timeout",
            "40",
        ],
    );
    assert_eq!(produced["produced"], 60, "{produced}");
    let read = s.client(
        Lib::KafkaPython,
        &READER,
        "consume",
        &[
            "--topic",
            TOPIC,
            "--count",
            "60",
            "--size",
            "200",
            "--timeout",
            "40",
        ],
    );
    assert_eq!(read["consumed"], 60, "{read}");
    let denied = s.client(
        Lib::Confluent,
        &INTRUDER,
        "probe-produce",
        &[
            "--topic",
            TOPIC,
            "--count",
            "1",
            "--acks",
            "1",
            "--timeout",
            "20",
        ],
    );
    eprintln!("intruder: {denied}");

    // Today, the topic: who wrote what, who read what.
    let today = time_today();
    let writes = s.query(&[
        "--topic",
        TOPIC,
        "--event",
        "records",
        "--since",
        &today,
        "--until",
        &today,
        "--principal",
        WRITER.id,
    ]);
    let written = covered(&writes, "produce");
    assert_eq!(
        written.len(),
        60,
        "the writer's acknowledged offsets: {writes:?}"
    );
    // Each partition's offsets run from 0 without a gap.
    let partitions: BTreeSet<i64> = written.iter().map(|(p, _)| *p).collect();
    for p in partitions {
        let offsets: Vec<i64> = written.iter().filter(|w| w.0 == p).map(|w| w.1).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
    }
    for e in &writes {
        assert_eq!(e["actor"]["user"]["name"], WRITER.id);
        assert_eq!(e["class_uid"], 6003);
        for p in e["partitions"].as_array().unwrap() {
            assert_eq!(p["digest"].as_str().unwrap().len(), 7 + 64, "{p}");
        }
    }
    let reads = s.query(&[
        "--topic",
        TOPIC,
        "--event",
        "records",
        "--principal",
        READER.id,
    ]);
    let fetched = covered(&reads, "fetch");
    assert!(
        written.is_subset(&fetched),
        "the reader got every offset written: {fetched:?}"
    );
    assert!(
        reads.iter().all(|e| e["stage"] == "fetch"),
        "the reader never produced"
    );
    // The intruder's refusal, by principal and decision.
    let refusals = s.query(&["--principal", INTRUDER.id, "--decision", "deny"]);
    assert!(
        refusals
            .iter()
            .any(|e| e["event"] == "decision" && e["operation"] == "produce"),
        "{refusals:?}"
    );
    assert!(s
        .query(&["--principal", INTRUDER.id, "--event", "records"])
        .is_empty());

    // Text output names the principal and the offsets.
    let (code, text) = s.audit_cli(&["query", "--topic", TOPIC, "--event", "records"]);
    assert_eq!(code, 0);
    assert!(
        text.contains(WRITER.id) && text.contains(READER.id),
        "{text}"
    );

    let (code, report) = s.audit_cli(&["verify"]);
    assert_eq!(code, 0, "verify: {report}");

    // The exported copy: every line the trail had a moment ago, byte for byte, in seq order.
    let trail = s.daemon.audit_text();
    let lines: Vec<&str> = trail.lines().collect();
    let copy = s.client(
        Lib::KafkaPython,
        &READER,
        "dump",
        &[
            "--topic",
            AUDIT_TOPIC,
            "--count",
            &lines.len().to_string(),
            "--timeout",
            "40",
        ],
    );
    let exported: Vec<String> = copy["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["value"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        exported.len() >= lines.len(),
        "{} exported, {} in the trail",
        exported.len(),
        lines.len()
    );
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            exported[i], *line,
            "exported line {i} differs from the trail"
        );
    }
    let status = s.daemon.status().expect("status");
    assert_eq!(status["export"][0]["name"], "copy", "{status}");
    assert_eq!(status["export"][0]["lost"]["full"], 0, "{status}");
}

/// `YYYY-MM-DD` in UTC.
fn time_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn kill_9_under_load_loses_no_event_for_an_acknowledged_produce() {
    if !require_kernel() {
        return;
    }
    let mut s = stack("audit-kill9");
    let progress = s.work.join("acked.txt");
    let endpoint = s.idp.token_endpoint();
    let progress_arg = progress.display().to_string();
    let mut args: Vec<&str> = vec!["produce-acks"];
    args.extend(s.oidc_args(&WRITER, &endpoint));
    args.extend([
        "--topic",
        TOPIC,
        "--count",
        "100000",
        "--size",
        "300",
        "--interval",
        "0.002",
        "--progress-file",
        &progress_arg,
        "--message-timeout-ms",
        "8000",
        "--timeout",
        "20",
    ]);
    let peers = peers();
    let mut cmd = s.ns.command(&peers.python);
    cmd.arg("-u")
        .arg(peers.clients.join("confluent_client.py"))
        .args(&args);
    let mut producer =
        Proc::spawn("producer", cmd, &s.work.join("producer.log")).expect("producer");

    let acked_lines = || {
        fs::read_to_string(&progress)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(60),
        "the producer to get 300 acknowledgements",
        || (acked_lines() >= 300).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}\n{}",
            producer.log_tail(30),
            s.daemon.log_tail(40)
        )
    });
    s.daemon.kill();
    // With the daemon gone the kernel refuses the producer's connections (fail closed), so no
    // acknowledgement can come any more; give in-flight callbacks a moment, then stop it.
    std::thread::sleep(Duration::from_secs(3));
    producer.kill();
    eprintln!("producer: {}", producer.log_tail(3));

    let acked: BTreeSet<(i64, i64)> = fs::read_to_string(&progress)
        .expect("progress")
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|n| n.parse::<i64>().ok());
            Some((it.next()??, it.next()??))
        })
        .collect();
    assert!(acked.len() >= 300, "{} acknowledged", acked.len());
    let trail = s.daemon.audit_events();
    let in_trail = covered(&trail, "produce");
    let missing: Vec<_> = acked.difference(&in_trail).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged offsets have no records event, first {:?}",
        missing.len(),
        acked.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "{} acknowledged offsets, all in the trail ({} produce offsets recorded)",
        acked.len(),
        in_trail.len()
    );

    // The restarted daemon continues the chain (a torn group, if any, was never acknowledged).
    s.daemon.start().expect("restart");
    let produced = s.client(
        Lib::Confluent,
        &WRITER,
        "produce",
        &["--topic", TOPIC, "--count", "5", "--timeout", "40"],
    );
    assert_eq!(produced["produced"], 5, "{produced}");
    let (code, report) = s.audit_cli(&["verify"]);
    assert_eq!(code, 0, "verify after kill -9 and restart: {report}");
}
