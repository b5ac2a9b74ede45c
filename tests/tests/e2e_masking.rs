//! End to end, masking: JSON records with card numbers, emails and SSNs produced through the
//! daemon by librdkafka (each codec, idempotent and transactional), the broker's own copy
//! read straight from its SQLite storage, and what three consumers get: one allowed to see
//! tokenized values (`reveal`), one whose fetches are masked further (a fetch rule), and one
//! that sees what the broker stored. Both client libraries read, and both check record-batch
//! CRCs, so a batch the daemon re-encodes wrongly fails the read.
//!
//! Two stacks: the embedded vault (masking, reveal, detokenize, malformed records, audit), and
//! a PostgreSQL vault shared by two daemons (the same token from both, a token made by one
//! revealed by the other, an outage refusing produce retriably with nothing stored in clear).
//!
//! Needs root and `cargo xtask deps` + `cargo xtask build`; fails loudly otherwise, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`. The PostgreSQL test needs `initdb`/`pg_ctl` (on PATH on
//! this machine kind).

use std::{collections::HashMap, fs, net::SocketAddr, path::Path, time::Duration};

use interceptor_e2e::{
    broker_storage,
    idp::{Idp, IdpClient},
    interceptor_bin, oidc_and_scram_settings,
    postgres::PostgresServer,
    require_kernel, run_client, start_interceptor, start_tansu_advertised, start_tansu_scram,
    write_broker_secrets, BrokerUser, DaemonConfig, Interceptor, Lib, Netns, PinDir, Proc, WorkDir,
};
use serde_json::{json, Value};

const BOOTSTRAP: &str = "127.0.0.1:9092";
const IDP: &str = "127.0.0.1:9400";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);
const TOPICS: &[&str] = &["payments", "payments.txn", "app.logs"];
/// The SQLite-backed tansu cannot serve snappy batches back (its fetch fails with
/// `UnexpectedType("Snappy")`); snappy is covered through the second daemon's memory-backed
/// broker in the PostgreSQL test.
const CODECS: &[&str] = &["none", "gzip", "lz4", "zstd"];

struct Who {
    id: &'static str,
    secret: &'static str,
    group: &'static str,
}

const WRITER: Who = Who {
    id: "payments-writer",
    secret: "writer-secret",
    group: "writers",
};
const FRAUD: Who = Who {
    id: "fraud-analyst",
    secret: "fraud-secret",
    group: "fraud",
};
const ANALYST: Who = Who {
    id: "bi-analyst",
    secret: "analyst-secret",
    group: "analysts",
};
const OPS: Who = Who {
    id: "ops-admin",
    secret: "ops-secret",
    group: "platform-ops",
};

fn idp_clients() -> Vec<IdpClient> {
    [&WRITER, &FRAUD, &ANALYST, &OPS]
        .iter()
        .map(|w| IdpClient::new(w.id, w.secret, &[w.group]))
        .collect()
}

/// Access for everyone in the test, and the masking rules under test.
const POLICY: &str = r#"# End-to-end masking tests.
rules:
  - name: writers-payments
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: ["payments*", app.logs]
      transactional_ids: ["payments-*"]
    operations: [produce, describe, transactions]
  - name: idempotent-producers
    effect: allow
    subjects:
      principals: ["*"]
    resources:
      cluster: true
    operations: [idempotent-write]
  - name: readers
    effect: allow
    subjects:
      groups: [fraud, analysts, platform-ops]
    resources:
      topics: ["payments*", app.logs]
      groups: ["itest-unused-*"]
    operations: [consume, describe]
  - name: ops-create
    effect: allow
    subjects:
      groups: [platform-ops]
    resources:
      topics: ["payments*"]
    operations: [create]

masking:
  - name: payments-pii
    description: Card numbers and emails become vault tokens; SSNs keep their last four.
    topics: ["payments*"]
    fields:
      - path: $.card.number
        action: tokenize
        format_preserving: true
      - path: $.customer.email
        action: tokenize
      - path: $.customer.ssn
        action: partial
        keep_last: 4
    detectors:
      - detector: credit_card
        action: partial
        keep_last: 4
    reveal:
      groups: [fraud]

  - name: analysts-see-no-names
    on: fetch
    topics: ["payments*"]
    subjects:
      groups: [analysts]
    fields:
      - path: $.customer.name
        action: redact

  - name: log-secrets
    topics: [app.logs]
    payload: any
    detectors:
      - detector: credit_card
        action: redact
        replacement: "[card]"
      - detector: aws_access_key
        action: redact
        replacement: "[aws-key]"
"#;

/// Valid test card numbers of four brands (Luhn-valid, real IIN ranges).
const CARDS: &[&str] = &[
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
];

/// Record `i` of a run: a payment whose card repeats every four records (equal values must
/// give equal tokens).
fn payment(run: &str, i: usize) -> Value {
    json!({
        "id": format!("{run}-{i}"),
        "amount": 12.5 + i as f64,
        "ts": 1_732_356_000_000u64 + i as u64,
        "card": {"number": CARDS[i % CARDS.len()], "exp": "12/29"},
        "customer": {
            "name": "Alice Example",
            "email": format!("user{}@example.com", i % 3),
            "ssn": "123-45-6789",
        },
        "note": "paid with 5500 0000 0000 0004 at 2026-11-23T10:00:00Z",
    })
}

/// One JSON line per record: a JSON string is the record's text as it is (free text, or not
/// JSON at all), anything else its JSON text.
fn write_records(path: &Path, values: &[Value]) {
    let lines: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            json!({"key": format!("k{i}"), "value": text}).to_string()
        })
        .collect();
    fs::write(path, lines.join("\n") + "\n").expect("writing records");
}

fn luhn_ok(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let mut d = c.to_digit(10).unwrap_or(99);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

struct Stack {
    daemon: Interceptor,
    idp: Idp,
    _tansu: Proc,
    work: WorkDir,
    ns: Netns,
}

/// Creates a vault keyring with the daemon's own command.
fn init_keys(path: &Path) {
    let out = std::process::Command::new(interceptor_bin())
        .args(["vault", "init"])
        .arg(path)
        .output()
        .expect("running interceptor vault init");
    assert!(
        out.status.success(),
        "interceptor vault init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stack(name: &str, vault_settings: impl FnOnce(&WorkDir) -> String) -> Stack {
    let ns = Netns::new("itest-mask").expect("netns");
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
    fs::write(policies.join("masking.yaml"), POLICY).expect("policy");
    let config = DaemonConfig::kafka(&[broker])
        .listener_settings("sasl_mechanisms = [\"OAUTHBEARER\"]\n")
        .policy_dir(&policies)
        .extra(&oidc_and_scram_settings(&idp, &secrets))
        .extra(&vault_settings(&work));
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

fn embedded_vault(work: &WorkDir) -> String {
    let keys = work.join("vault.keys");
    init_keys(&keys);
    format!(
        "[vault]\nbackend = \"embedded\"\npath = {:?}\nkey_file = {:?}\n",
        work.join("vault.redb").display().to_string(),
        keys.display().to_string()
    )
}

impl Stack {
    fn client(&self, lib: Lib, who: &Who, op: &str, extra: &[&str]) -> Value {
        run_as(
            &self.ns,
            &self.idp,
            &self.daemon,
            BOOTSTRAP,
            lib,
            who,
            op,
            extra,
        )
    }

    /// Produces `values` to `topic` with `codec`; the producer's summary.
    fn produce(&self, topic: &str, codec: &str, values: &[Value], extra: &[&str]) -> Value {
        produce_values(self, BOOTSTRAP, topic, codec, values, extra)
    }

    /// What `who` reads of `topic` with `lib`: the values parsed as JSON (text otherwise).
    fn read(&self, lib: Lib, who: &Who, topic: &str, count: usize, extra: &[&str]) -> Vec<Value> {
        let args = dump_args(topic, count, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        read_values(self.client(lib, who, "dump", &args))
    }

    fn stored(&self, topic: &str) -> Vec<Value> {
        let records = broker_storage(self.work.path(), topic)
            .unwrap_or_else(|e| panic!("broker storage: {e:#}"));
        read_values(json!({ "records": records }))
    }

    fn token(&self, who: &Who) -> String {
        self.idp
            .fetch_token(&self.ns, who.id, who.secret)
            .unwrap_or_else(|e| panic!("token for {}: {e:#}", who.id))
    }
}

#[allow(clippy::too_many_arguments)]
fn run_as(
    ns: &Netns,
    idp: &Idp,
    daemon: &Interceptor,
    bootstrap: &str,
    lib: Lib,
    who: &Who,
    op: &str,
    extra: &[&str],
) -> Value {
    let endpoint = idp.token_endpoint();
    let mut args: Vec<&str> = vec![
        op,
        "--bootstrap",
        bootstrap,
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
    match run_client(ns, lib, &args, CLIENT_TIMEOUT) {
        Ok(v) => {
            let shown: String = v.to_string().chars().take(600).collect();
            eprintln!("{} {} {op}: {shown}", lib.name(), who.id);
            v
        }
        Err(e) => panic!("{e:#}\n{}", daemon.log_tail(60)),
    }
}

fn dump_args(topic: &str, count: usize, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--topic".to_owned(),
        topic.to_owned(),
        "--count".to_owned(),
        count.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn produce_values(
    stack: &Stack,
    bootstrap: &str,
    topic: &str,
    codec: &str,
    values: &[Value],
    extra: &[&str],
) -> Value {
    let file = stack
        .work
        .join(&format!("records-{topic}-{codec}-{}.jsonl", values.len()));
    write_records(&file, values);
    let file = file.display().to_string();
    let mut args = vec!["--topic", topic, "--codec", codec, "--records", &file];
    args.extend(extra);
    run_as(
        &stack.ns,
        &stack.idp,
        &stack.daemon,
        bootstrap,
        Lib::Confluent,
        &WRITER,
        "produce-file",
        &args,
    )
}

/// The values of a dump (or of the broker's storage), JSON where they parse, ordered by
/// partition and offset.
fn read_values(dump: Value) -> Vec<Value> {
    let mut records = dump["records"].as_array().cloned().unwrap_or_default();
    records.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    records
        .iter()
        .map(|r| match r["value"].as_str() {
            Some(text) => serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
            None => r["value"].clone(),
        })
        .collect()
}

fn by_id(values: &[Value]) -> HashMap<String, Value> {
    values
        .iter()
        .filter_map(|v| Some((v["id"].as_str()?.to_owned(), v.clone())))
        .collect()
}

fn assert_complete(summary: &Value) {
    assert_eq!(summary["complete"], true, "{summary}");
}

/// The stored (masked) form of `original`, given the card token the broker holds for it.
fn check_stored(original: &Value, stored: &Value) {
    let card = original["card"]["number"].as_str().expect("card");
    let token = stored["card"]["number"]
        .as_str()
        .expect("stored card is a string");
    assert_ne!(token, card, "the card number reached the broker in clear");
    assert_eq!(token.len(), card.len(), "format preserved: {token}");
    assert!(token.chars().all(|c| c.is_ascii_digit()), "{token}");
    assert_eq!(&token[..6], &card[..6], "first six kept: {token}");
    assert_eq!(
        &token[token.len() - 4..],
        &card[card.len() - 4..],
        "last four kept"
    );
    assert!(luhn_ok(token), "card tokens stay Luhn-valid: {token}");
    let email = stored["customer"]["email"].as_str().expect("email");
    assert!(
        email.starts_with("tok_") && email.len() == 30,
        "email token: {email}"
    );
    assert_eq!(stored["customer"]["ssn"], "***-**-6789");
    assert_eq!(
        stored["note"], "paid with **** **** **** 0004 at 2026-11-23T10:00:00Z",
        "the detector masks card numbers in free text, not timestamps"
    );
    // Untouched: what no rule selects.
    for field in ["id", "amount", "ts"] {
        assert_eq!(stored[field], original[field], "{field}");
    }
    assert_eq!(stored["card"]["exp"], original["card"]["exp"]);
    assert_eq!(stored["customer"]["name"], original["customer"]["name"]);
}

#[test]
fn produced_records_are_masked_and_each_consumer_gets_what_policy_says() {
    if !require_kernel() {
        return;
    }
    let s = stack("mask-embedded", embedded_vault);

    // One run per codec, idempotent producer (librdkafka's enable.idempotence).
    let mut originals = Vec::new();
    for codec in CODECS {
        let values: Vec<Value> = (0..8).map(|i| payment(codec, i)).collect();
        assert_complete(&s.produce("payments", codec, &values, &[]));
        originals.extend(values);
    }
    let total = originals.len();
    let originals = by_id(&originals);

    // The broker's own copy: tokens and masks, no clear card number or email anywhere.
    let stored = s.stored("payments");
    assert_eq!(stored.len(), total, "every record stored once");
    let stored_text = serde_json::to_string(&stored).expect("json");
    for card in CARDS.iter().chain(["5500 0000 0000 0004"].iter()) {
        assert!(!stored_text.contains(card), "{card} stored in clear");
    }
    assert!(
        !stored_text.contains("@example.com"),
        "an email stored in clear"
    );
    let stored_by_id = by_id(&stored);
    let mut token_of_card: HashMap<String, String> = HashMap::new();
    for (id, original) in &originals {
        let kept = &stored_by_id[id];
        check_stored(original, kept);
        // Deterministic: one card, one token, whichever codec carried it.
        let card = original["card"]["number"]
            .as_str()
            .expect("card")
            .to_owned();
        let token = kept["card"]["number"].as_str().expect("token").to_owned();
        let first = token_of_card.entry(card).or_insert_with(|| token.clone());
        assert_eq!(*first, token, "equal values give equal tokens");
    }

    for lib in [Lib::Confluent, Lib::KafkaPython] {
        // Allowed to reveal: the original documents, exactly.
        let fraud = by_id(&s.read(lib, &FRAUD, "payments", total, &[]));
        for (id, original) in &originals {
            let mut expected = original.clone();
            expected["customer"]["ssn"] = json!("***-**-6789"); // partial is not reversible
            expected["note"] = stored_by_id[id]["note"].clone();
            assert_eq!(fraud[id], expected, "{} reveal of {id}", lib.name());
        }
        // A fetch rule: the stored form, names redacted on the way out.
        let analyst = by_id(&s.read(lib, &ANALYST, "payments", total, &[]));
        for (id, kept) in &stored_by_id {
            let mut expected = kept.clone();
            expected["customer"]["name"] = json!("[REDACTED]");
            assert_eq!(analyst[id], expected, "{} analyst view of {id}", lib.name());
        }
        // No rule for ops: exactly what the broker stored.
        let ops = by_id(&s.read(lib, &OPS, "payments", total, &[]));
        assert_eq!(ops, stored_by_id, "{} ops view", lib.name());
    }

    // Not JSON under a JSON rule (on_malformed: reject): refused, nothing stored.
    let bad = s.produce(
        "payments",
        "none",
        &[json!("not json {4111111111111111")],
        &["--message-timeout-ms", "10000"],
    );
    assert_eq!(bad["complete"], false, "{bad}");
    assert_eq!(bad["errors"][0]["name"], "POLICY_VIOLATION", "{bad}");
    assert_eq!(s.stored("payments").len(), total);

    // Free text: detectors over any payload.
    let logs = vec![
        json!("login ok card=4111 1111 1111 1111 key=AKIAIOSFODNN7EXAMPLE order=1732356000000"),
        json!("nothing to see here 2026-11-23"),
    ];
    assert_complete(&s.produce("app.logs", "zstd", &logs, &[]));
    let kept_logs = s.stored("app.logs");
    assert_eq!(
        kept_logs,
        vec![
            json!("login ok card=[card] key=[aws-key] order=1732356000000"),
            json!("nothing to see here 2026-11-23"),
        ]
    );

    // interceptor detokenize: the fraud analyst may, the BI analyst may not.
    let token = stored_by_id["gzip-1"]["customer"]["email"]
        .as_str()
        .expect("token")
        .to_owned();
    let detokenize = |who: &Who| {
        let file = s.work.join(&format!("{}.token", who.id));
        fs::write(&file, s.token(who)).expect("token file");
        s.daemon
            .cli(&[
                "detokenize",
                &token,
                "--access-token-file",
                &file.display().to_string(),
            ])
            .expect("detokenize")
    };
    let allowed = detokenize(&FRAUD);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&allowed.stdout).trim(),
        "user1@example.com"
    );
    let denied = detokenize(&ANALYST);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("may not reveal"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    // `interceptor status` reports the vault.
    let status = s
        .daemon
        .status()
        .unwrap_or_else(|e| panic!("status: {e:#}"));
    assert_eq!(status["vault"]["healthy"], true, "{status}");
    assert!(
        status["vault"]["stored"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );

    // The audit trail: every transform with its rule and counts, never a value.
    let events = s.daemon.audit_events();
    let transforms: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "transform")
        .collect();
    let produced = transforms
        .iter()
        .filter(|e| e["stage"] == "produce" && e["outcome"] == "masked" && e["topic"] == "payments")
        .map(|e| e["records"].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(
        produced, total as u64,
        "one masked record per produced record"
    );
    let fields: Vec<&Value> = transforms
        .iter()
        .flat_map(|e| e["fields"].as_array().into_iter().flatten())
        .collect();
    assert!(fields.iter().any(|f| f["rule"] == "payments-pii"
        && f["selector"] == "$.card.number"
        && f["action"] == "tokenize"));
    assert!(transforms.iter().any(|e| e["stage"] == "fetch"
        && e["outcome"] == "revealed"
        && e["principal"] == FRAUD.id));
    assert!(transforms
        .iter()
        .any(|e| e["stage"] == "fetch" && e["principal"] == ANALYST.id));
    let detokenized: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "detokenize")
        .collect();
    assert_eq!(detokenized.len(), 2, "{detokenized:?}");
    assert_eq!(detokenized[0]["outcome"], "revealed");
    assert_eq!(detokenized[1]["outcome"], "denied");
    let audit_text = s.daemon.audit_text();
    for secret in CARDS
        .iter()
        .chain(["user1@example.com", "123-45-6789"].iter())
    {
        assert!(!audit_text.contains(secret), "{secret} in the audit trail");
    }
}

/// The PostgreSQL vault: the daemon of the stack (kernel steering, SQLite broker) and a second
/// daemon (listen mode, its own broker) share one database.
#[test]
fn a_postgres_vault_is_shared_by_two_daemons_and_its_outage_refuses_produce() {
    if !require_kernel() {
        return;
    }
    // Over its unix socket: the daemons run in the test's network namespace.
    let pg = PostgresServer::start().unwrap_or_else(|e| panic!("postgres: {e:#}"));
    let keys_dir = WorkDir::new("mask-pg-keys").expect("work dir");
    let keys = keys_dir.join("vault.keys");
    init_keys(&keys);
    let vault = format!(
        "[vault]\nbackend = \"postgres\"\npostgres_url = {:?}\nkey_file = {:?}\ntimeout_ms = 1500\n",
        pg.socket_url(),
        keys.display().to_string()
    );
    let s = stack("mask-pg-a", |_| vault.clone());

    // The second daemon: listen mode on 19093, in front of its own broker on 9093 which
    // advertises the daemon's address.
    let b_work = WorkDir::new("mask-pg-b").expect("work dir");
    let b_listen: SocketAddr = "127.0.0.1:19093".parse().expect("address");
    let b_broker: SocketAddr = "127.0.0.1:9093".parse().expect("address");
    let _b_tansu = start_tansu_advertised(&s.ns, b_broker, b_listen, &b_work)
        .unwrap_or_else(|e| panic!("second tansu: {e:#}"));
    let b_policies = b_work.join("policies");
    fs::create_dir_all(&b_policies).expect("policy dir");
    fs::write(b_policies.join("masking.yaml"), POLICY).expect("policy");
    let issuer = format!(
        "[identity]\nclock_skew_secs = 1\n[[identity.issuer]]\nissuer = \"{}\"\naudiences = [\"{}\"]\n",
        s.idp.issuer(),
        interceptor_e2e::idp::AUDIENCE
    );
    let b_config = DaemonConfig::kafka(&[b_broker])
        .listener_settings("sasl_mechanisms = [\"OAUTHBEARER\"]\n")
        .policy_dir(&b_policies)
        .extra(&issuer)
        .extra(&vault);
    let mut b = Interceptor::new(&s.ns, &b_work, &b_config.body(), PinDir::new("itest-b"))
        .expect("second daemon config");
    b.set_run_args(&["--mode", "listen", "--listen", "127.0.0.1:19093"]);
    b.start().unwrap_or_else(|e| panic!("second daemon: {e:#}"));
    let b_bootstrap = "127.0.0.1:19093";
    let create = run_as(
        &s.ns,
        &s.idp,
        &b,
        b_bootstrap,
        Lib::KafkaPython,
        &OPS,
        "admin",
        &["--create", "payments,payments.txn", "--partitions", "1"],
    );
    assert_eq!(create["ok"], true, "{create}");

    // The same card through either daemon: the same token.
    let a_values: Vec<Value> = (0..4).map(|i| payment("a", i)).collect();
    assert_complete(&s.produce("payments", "lz4", &a_values, &[]));
    let b_values: Vec<Value> = (0..4).map(|i| payment("b", i)).collect();
    assert_complete(&produce_values(
        &s,
        b_bootstrap,
        "payments",
        "snappy",
        &b_values,
        &[],
    ));
    let a_stored = by_id(&s.stored("payments"));
    let dump = dump_args("payments", 4, &[]);
    let dump: Vec<&str> = dump.iter().map(String::as_str).collect();
    let b_seen = by_id(&read_values(run_as(
        &s.ns,
        &s.idp,
        &b,
        b_bootstrap,
        Lib::Confluent,
        &OPS,
        "dump",
        &dump,
    )));
    for i in 0..4 {
        let (a, b_rec) = (&a_stored[&format!("a-{i}")], &b_seen[&format!("b-{i}")]);
        check_stored(&b_values[i], b_rec);
        assert_eq!(a["card"]["number"], b_rec["card"]["number"], "record {i}");
        assert_eq!(a["customer"]["email"], b_rec["customer"]["email"]);
    }
    // Snappy batches re-encoded by the second daemon, revealed by it to the fraud analyst
    // (kafka-python checks the CRCs).
    let revealed = by_id(&read_values(run_as(
        &s.ns,
        &s.idp,
        &b,
        b_bootstrap,
        Lib::KafkaPython,
        &FRAUD,
        "dump",
        &dump,
    )));
    for original in &b_values {
        let id = original["id"].as_str().expect("id");
        assert_eq!(revealed[id]["card"], original["card"], "{id}");
        assert_eq!(
            revealed[id]["customer"]["email"],
            original["customer"]["email"]
        );
    }
    // A transactional producer (the SQLite-backed tansu does not offer EndTxn; the memory one
    // does): committed, masked, read with read_committed.
    let txn: Vec<Value> = (0..6).map(|i| payment("txn", i)).collect();
    assert_complete(&produce_values(
        &s,
        b_bootstrap,
        "payments.txn",
        "lz4",
        &txn,
        &["--transactional-id", "payments-txn-1"],
    ));
    let committed_args = dump_args("payments.txn", txn.len(), &["--read-committed"]);
    let committed_args: Vec<&str> = committed_args.iter().map(String::as_str).collect();
    let committed = by_id(&read_values(run_as(
        &s.ns,
        &s.idp,
        &b,
        b_bootstrap,
        Lib::Confluent,
        &OPS,
        "dump",
        &committed_args,
    )));
    for original in &txn {
        let id = original["id"].as_str().expect("id");
        check_stored(original, &committed[id]);
    }

    // A token only the first daemon made, revealed by the second.
    let fresh = json!({"id": "fresh", "card": {"number": "4000056655665556"},
                       "customer": {"email": "only-a@example.com"}});
    assert_complete(&s.produce("payments", "none", &[fresh], &[]));
    let token = by_id(&s.stored("payments"))["fresh"]["customer"]["email"]
        .as_str()
        .expect("token")
        .to_owned();
    let file = b_work.join("fraud.token");
    fs::write(&file, s.token(&FRAUD)).expect("token file");
    let out = b
        .cli(&[
            "detokenize",
            &token,
            "--access-token-file",
            &file.display().to_string(),
        ])
        .expect("detokenize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "only-a@example.com"
    );

    // The vault down: a produce that needs a new token is refused retriably, nothing stored.
    pg.stop().expect("stopping postgres");
    let before = s.stored("payments").len();
    let new_card = json!({"id": "outage", "card": {"number": "5105105105105100"},
                          "customer": {"email": "outage@example.com"}});
    let refused = s.produce(
        "payments",
        "none",
        std::slice::from_ref(&new_card),
        &["--message-timeout-ms", "6000"],
    );
    assert_eq!(refused["complete"], false, "{refused}");
    let stored_now = s.stored("payments");
    assert_eq!(
        stored_now.len(),
        before,
        "nothing stored while the vault is down"
    );
    assert!(!serde_json::to_string(&stored_now)
        .expect("json")
        .contains("5105105105105100"));
    s.daemon
        .wait_audit(Duration::from_secs(10), |e| {
            e["event"] == "transform" && e["outcome"] == "refused"
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Back up: the same record goes through.
    pg.restart().expect("restarting postgres");
    assert_complete(&s.produce("payments", "none", &[new_card], &[]));
    assert_eq!(s.stored("payments").len(), before + 1);
    drop(b);
}
