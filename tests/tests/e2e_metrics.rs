//! End to end, metrics and health: real clients through the kernel-steered daemon, then
//! `/metrics` scraped over the admin socket and over the TCP listener, parsed with
//! Prometheus' own Python parser (`prometheus_client.parser`), and the counts compared with
//! the traffic as the audit trail records it (one `records` event per acknowledged produce
//! request, one `authentication` failure per refused token, one `connection_open` per
//! connection).
//!
//! Needs root and `cargo xtask deps` + `cargo xtask build`; fails loudly otherwise, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::SocketAddr,
    os::unix::net::UnixStream,
    time::Duration,
};

use interceptor_e2e::{
    idp::{Idp, IdpClient},
    oidc_and_scram_settings, peers, require_kernel, run_client, run_with_timeout,
    start_interceptor, start_tansu_scram, write_broker_secrets, BrokerUser, DaemonConfig, Lib,
    Netns, WorkDir,
};
use serde_json::Value;

const BOOTSTRAP: &str = "127.0.0.1:9092";
const IDP: &str = "127.0.0.1:9400";
const METRICS: &str = "127.0.0.1:9464";

const POLICY: &str = r#"rules:
  - name: writers
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: [orders]
    operations: [produce, describe]
  - name: writers-idempotent
    effect: allow
    subjects:
      groups: [writers]
    resources:
      cluster: true
    operations: [idempotent-write]
  - name: everyone-describes
    effect: allow
    subjects:
      principals: ["*"]
    resources:
      topics: [orders]
    operations: [describe]
"#;

/// Scrapes `url` in the namespace and parses it with prometheus_client: samples as
/// `name{labels sorted}` → value.
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
src = sys.argv[1]
text = open(src[5:]).read() if src.startswith("file:") else urllib.request.urlopen(src, timeout=10).read().decode()
out = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;

fn scrape(ns: &Netns, source: &str, text: Option<&str>) -> BTreeMap<String, f64> {
    let peers = peers();
    let mut cmd = ns.command(&peers.python);
    let from_file;
    let source = match text {
        Some(text) => {
            let input = std::env::temp_dir().join(format!("metrics-{}.txt", std::process::id()));
            fs::write(&input, text).expect("scrape input");
            from_file = format!("file:{}", input.display());
            from_file.as_str()
        }
        None => source,
    };
    cmd.args(["-c", SCRAPE, source]);
    let done = run_with_timeout(cmd, Duration::from_secs(30)).expect("python scrape");
    assert!(done.status.success(), "scrape failed: {}", done.stderr);
    let parsed: BTreeMap<String, f64> =
        serde_json::from_str(done.stdout.trim()).expect("scrape printed JSON");
    parsed
}

/// `GET path` over the admin socket: status line and body.
fn admin_get(socket: &std::path::Path, path: &str) -> (String, String) {
    let mut s = UnixStream::connect(socket).expect("admin socket");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

fn sample(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn metrics_parse_with_prometheus_and_match_the_traffic() {
    if !require_kernel() {
        return;
    }
    let ns = Netns::new("itest-metrics").expect("netns");
    let work = WorkDir::new("metrics").expect("work dir");
    let broker: SocketAddr = BOOTSTRAP.parse().expect("address");
    let user = BrokerUser {
        name: "interceptor".into(),
        password: "broker-side-secret".into(),
    };
    let _tansu = start_tansu_scram(&ns, broker, &work, &user, &["orders"])
        .unwrap_or_else(|e| panic!("tansu: {e:#}"));
    let idp = Idp::start(
        &ns,
        IDP.parse().expect("address"),
        work.path(),
        &[
            IdpClient::new("writer", "writer-secret", &["writers"]),
            IdpClient::new("intruder", "intruder-secret", &["nobody"]),
        ],
    )
    .unwrap_or_else(|e| panic!("idp: {e:#}"));
    let secrets = write_broker_secrets(&work, &user);
    let policies = work.join("policies");
    fs::create_dir_all(&policies).expect("policy dir");
    fs::write(policies.join("orders.yaml"), POLICY).expect("policy");
    let config = DaemonConfig::kafka(&[broker])
        .listener_settings("sasl_mechanisms = [\"OAUTHBEARER\"]\n")
        .policy_dir(&policies)
        .extra(&oidc_and_scram_settings(&idp, &secrets))
        .extra(&format!("[admin]\nhttp_address = \"{METRICS}\"\n"));
    let daemon = start_interceptor(&ns, &work, &config.body())
        .unwrap_or_else(|e| panic!("starting the daemon: {e:#}"));

    let endpoint = idp.token_endpoint();
    let client = |lib: Lib, id: &str, secret: &str, args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.extend([
            "--bootstrap",
            BOOTSTRAP,
            "--oidc-token-url",
            &endpoint,
            "--oidc-client-id",
            id,
            "--oidc-client-secret",
            secret,
        ]);
        run_client(&ns, lib, &all, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", daemon.log_tail(40)))
    };
    let produced = client(
        Lib::Confluent,
        "writer",
        "writer-secret",
        &[
            "produce", "--topic", "orders", "--count", "200", "--size", "100",
        ],
    );
    assert_eq!(produced["produced"], 200, "{produced}");
    client(
        Lib::KafkaPython,
        "writer",
        "writer-secret",
        &[
            "produce", "--topic", "orders", "--count", "30", "--size", "100",
        ],
    );
    let denied = client(
        Lib::Confluent,
        "intruder",
        "intruder-secret",
        &[
            "probe-produce",
            "--topic",
            "orders",
            "--count",
            "1",
            "--acks",
            "1",
            "--timeout",
            "20",
        ],
    );
    eprintln!("intruder: {denied}");
    // A token the IdP never signed: refused at authentication.
    let forged = work.join("forged.token");
    fs::write(&forged, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2ln").expect("token");
    let forged_arg = forged.display().to_string();
    let refused = run_client(
        &ns,
        Lib::KafkaPython,
        &[
            "probe-produce",
            "--bootstrap",
            BOOTSTRAP,
            "--topic",
            "orders",
            "--count",
            "1",
            "--timeout",
            "15",
            "--sasl-token-file",
            &forged_arg,
        ],
        Duration::from_secs(60),
    );
    eprintln!("forged token: {refused:?}");

    // Settle: every connection closed and audited.
    std::thread::sleep(Duration::from_secs(1));
    let events = daemon.audit_events();
    let count = |pred: &dyn Fn(&Value) -> bool| events.iter().filter(|e| pred(e)).count() as f64;
    let produce_acks = count(&|e| e["event"] == "records" && e["stage"] == "produce");
    let auth_failures = count(&|e| e["event"] == "authentication" && e["outcome"] == "failure");
    let opened = count(&|e| e["event"] == "connection_open");
    let denied_produce =
        count(&|e| e["event"] == "decision" && e["api"] == "Produce" && e["decision"] != "allow");

    let over_tcp = scrape(&ns, &format!("http://{METRICS}/metrics"), None);
    let socket = daemon.config_path().with_file_name("admin.sock");
    let (status, text) = admin_get(&socket, "/metrics");
    assert!(status.contains("200"), "{status}");
    let over_socket = scrape(&ns, "socket", Some(&text));
    eprintln!(
        "{} samples over TCP, {} over the socket",
        over_tcp.len(),
        over_socket.len()
    );

    for (k, v) in over_tcp
        .iter()
        .filter(|(k, _)| k.starts_with("interceptor_requests_total"))
    {
        eprintln!("{k} {v}");
    }
    for m in [&over_tcp, &over_socket] {
        let produce_allowed = sample(m, "interceptor_requests_total{api=Produce,decision=allow}");
        assert!(produce_acks > 0.0);
        assert_eq!(
            produce_allowed, produce_acks,
            "allowed Produce requests vs produce acknowledgements in the trail"
        );
        let produce_denied = sample(m, "interceptor_requests_total{api=Produce,decision=deny}");
        assert!(
            produce_denied >= 1.0 && denied_produce >= 1.0,
            "{produce_denied}"
        );
        assert_eq!(
            sample(
                m,
                "interceptor_request_duration_seconds_count{api=Produce,decision=allow}"
            ),
            produce_allowed,
            "every allowed produce has a latency"
        );
        assert_eq!(
            sample(m, "interceptor_authentications_total{outcome=failure}"),
            auth_failures
        );
        assert!(auth_failures >= 1.0);
        let by_reason: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("interceptor_authentication_failures_total{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(by_reason, auth_failures);
        assert_eq!(
            sample(m, "interceptor_connections_total{outcome=opened}"),
            opened
        );
        assert_eq!(
            sample(m, "interceptor_records_events_total{stage=produce}"),
            produce_acks
        );
        assert!(sample(m, "interceptor_bytes_total{direction=to_broker}") > 200.0 * 100.0);
        assert!(sample(m, "interceptor_audit_events_written_total{}") >= events.len() as f64 - 5.0);
        assert_eq!(sample(m, "interceptor_audit_events_lost_total{}"), 0.0);
        assert!(sample(m, "interceptor_audit_fsync_seconds_count{}") >= 1.0);
        assert_eq!(sample(m, "interceptor_ready{}"), 1.0);
    }
    let (ready, _) = admin_get(&socket, "/readyz");
    assert!(ready.contains("200"), "{ready}");
    let (health, _) = admin_get(&socket, "/healthz");
    assert!(health.contains("200"), "{health}");
    let status = daemon.status().expect("status");
    assert!(
        status["metrics"]["requests"]["allow"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert_eq!(status["metrics"]["audit"]["lost"], 0);
}
