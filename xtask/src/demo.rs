//! `cargo xtask demo`: a real broker behind the interceptor, real clients, and what passed
//! through.
//!
//! In the network namespace `interceptor-demo`: tansu on 127.0.0.1:9092 requiring SCRAM from
//! the interceptor's own user, a real OIDC provider (oidc-provider) on 127.0.0.1:9400, the
//! daemon protecting the broker's address (kernel steering), then unchanged clients that connect
//! to 127.0.0.1:9092 as they would to any broker, authenticating with access tokens they fetch
//! from the provider themselves. Each client step is one entry in [`steps`]; the report groups the
//! audit's connections by step. Everything is stopped and removed at the end, also on failure
//! or Ctrl-C. The audit file and logs stay in `target/demo/`.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use interceptor_e2e::{
    audit_summary, broker_storage,
    idp::{Idp, IdpClient, AUDIENCE},
    interceptor_bin, kcat, run_client, start_tansu_scram, wire, BrokerUser, DaemonConfig,
    Interceptor, Lib, Netns, PinDir, Proc,
};
use serde_json::Value;

use crate::{
    build::{self, BuildArgs},
    deps,
    util::root,
};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Skip `deps` and `build` (use the daemon already in target/debug).
    #[arg(long)]
    pub no_build: bool,
}

const NETNS: &str = "interceptor-demo";
const PIN_DIR: &str = "/sys/fs/bpf/interceptor-demo";
const BROKER: &str = "127.0.0.1:9092";
const IDP: &str = "127.0.0.1:9400";
/// The demo's clients at the identity provider: a writer, and an analyst that may only read.
const CLIENT_ID: &str = "orders-app";
const CLIENT_SECRET: &str = "orders-app-secret";
const ANALYST_ID: &str = "analytics-app";
const ANALYST_SECRET: &str = "analytics-app-secret";
/// The fraud team's service: reads card payments with the card numbers revealed.
const FRAUD_ID: &str = "fraud-app";
const FRAUD_SECRET: &str = "fraud-app-secret";
/// The demo's card payment: a Visa test number, an email, an SSN.
const CARD: &str = "4111111111111111";

/// The demo's policy directory, one file: what each group may do, and a blocking rule.
const POLICY: &str = "\
# Written by `cargo xtask demo` into target/demo/policies/orders.yaml.
description: The demo's two teams.

rules:
  - name: writers-own-orders
    description: The orders service writes and reads its topics, in its consumer groups.
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: [orders, payments, cards]
      # itest-unused-*: the demo's readers assign partitions themselves, but librdkafka still
      # looks up the coordinator of the (unused) group they name.
      groups: [\"demo-*\", \"itest-unused-*\"]
    operations: [produce, consume, describe, create, commit]

  - name: writers-idempotent
    description: Idempotent producers need this on the cluster; listing brokers needs describe.
    effect: allow
    subjects:
      groups: [writers]
    resources:
      cluster: true
    operations: [idempotent-write, describe]

  - name: analysts-read-orders
    description: Analysts read orders and card payments in their own groups, and nothing else.
    effect: allow
    subjects:
      groups: [analysts]
    resources:
      topics: [orders, cards]
      groups: [\"analytics-*\", \"itest-unused-*\"]
    operations: [consume, describe, commit]

  - name: fraud-reads-cards
    description: The fraud team reads card payments.
    effect: allow
    subjects:
      groups: [fraud]
    resources:
      topics: [cards]
      groups: [\"itest-unused-*\"]
    operations: [consume, describe]

masking:
  - name: card-payments
    description: >
      Card numbers become format-preserving vault tokens before the broker stores them
      (first six and last four kept, Luhn-valid); emails become tokens; SSNs keep their last
      four. Only the fraud team gets the originals back.
    topics: [cards]
    fields:
      - path: $.card.number
        action: tokenize
        format_preserving: true
      - path: $.customer.email
        action: tokenize
      - path: $.customer.ssn
        action: partial
        keep_last: 4
    reveal:
      groups: [fraud]

blocking:
  - name: no-cloud-keys
    description: An AWS access key id never goes into a record.
    topics: [\"*\"]
    forbidden_content:
      - name: aws-access-key-id
        patterns: [AKIA]
        in: [key, value, headers]
";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// One thing a client does against the protected broker address.
pub struct Step {
    pub title: &'static str,
    pub run: fn(&Demo) -> Result<String>,
}

/// The demo's steps, in order. Later capabilities (a denied write, a masked record, an identity
/// provider) add theirs here.
pub fn steps() -> Vec<Step> {
    vec![
        Step {
            title: "a request before authentication is refused (hand-made Metadata frame)",
            run: |d| {
                let broker: SocketAddr = BROKER.parse()?;
                let mut stream = d.ns.run(move || {
                    wire::connect_from("127.0.0.1:0".parse().expect("addr"), broker, CLIENT_TIMEOUT)
                        .1
                })?;
                if wire::metadata_round_trip(&mut stream, 1).is_ok() {
                    bail!("Metadata was answered without authentication");
                }
                Ok("connection closed, as a Kafka broker closes a SASL connection; audited as request_refused".into())
            },
        },
        Step {
            title: "a forged token is refused (SaslAuthenticate with a token the IdP never signed)",
            run: |d| {
                let broker: SocketAddr = BROKER.parse()?;
                let mut stream = d.ns.run(move || {
                    wire::connect_from("127.0.0.1:0".parse().expect("addr"), broker, CLIENT_TIMEOUT)
                        .1
                })?;
                let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
                let answer = wire::oauthbearer(&mut stream, 1, forged)?;
                if answer.error_code != 58 {
                    bail!("expected SASL_AUTHENTICATION_FAILED (58), got {answer:?}");
                }
                Ok(format!(
                    "error 58 SASL_AUTHENTICATION_FAILED: {}",
                    answer.error_message.unwrap_or_default()
                ))
            },
        },
        Step {
            title: "create topics (confluent-kafka AdminClient, token from the IdP)",
            run: |d| {
                let v = d.client(
                    Lib::Confluent,
                    &[
                        "admin",
                        "--create",
                        "orders,payments,cards",
                        "--partitions",
                        "3",
                    ],
                )?;
                Ok(format!(
                    "created {}; partitions {}",
                    v["created"], v["partitions"]
                ))
            },
        },
        Step {
            title: "list topics and brokers (kcat -L, librdkafka's own OIDC flow)",
            run: |d| {
                let out = d.kcat(&["-L"])?;
                let lines: Vec<&str> = out
                    .lines()
                    .filter(|l| l.contains("broker ") || l.trim_start().starts_with("topic "))
                    .map(str::trim)
                    .collect();
                Ok(lines.join("; "))
            },
        },
        Step {
            title: "produce 1,000 records, zstd (confluent-kafka)",
            run: |d| {
                let v = d.client(
                    Lib::Confluent,
                    &[
                        "produce", "--topic", "orders", "--seed", "demo", "--count", "1000",
                        "--size", "512", "--codec", "zstd",
                    ],
                )?;
                Ok(format!("{} records delivered", v["produced"]))
            },
        },
        Step {
            title: "consume them back, checking every byte (confluent-kafka)",
            run: |d| {
                let v = d.client(
                    Lib::Confluent,
                    &[
                        "consume", "--topic", "orders", "--seed", "demo", "--count", "1000",
                        "--size", "512",
                    ],
                )?;
                Ok(format!(
                    "{} records, sha256 of every key/value/header identical",
                    v["consumed"]
                ))
            },
        },
        Step {
            title: "produce with kcat -P",
            run: |d| {
                let input = d.dir.join("kcat-input.txt");
                fs::write(&input, "payment 1: 12.50 EUR\npayment 2: 7.00 EUR\n")?;
                let file = input.to_string_lossy().into_owned();
                d.kcat(&["-P", "-t", "payments", "-p", "0", "-z", "gzip", "-l", &file])?;
                Ok("2 messages, gzip".into())
            },
        },
        Step {
            title: "consume with kcat -C",
            run: |d| {
                let out = d.kcat(&[
                    "-C",
                    "-t",
                    "payments",
                    "-p",
                    "0",
                    "-o",
                    "beginning",
                    "-e",
                    "-q",
                ])?;
                if !out.contains("payment 2: 7.00 EUR") {
                    bail!("kcat read {out:?}");
                }
                Ok(format!("read back: {:?}", out.trim_end()))
            },
        },
        Step {
            title:
                "the analyst (group analysts) writes to orders: refused by policy (confluent-kafka)",
            run: |d| {
                let refused = d.client_as(
                    ANALYST_ID,
                    ANALYST_SECRET,
                    Lib::Confluent,
                    &[
                        "produce",
                        "--topic",
                        "orders",
                        "--seed",
                        "analyst",
                        "--count",
                        "3",
                        "--acks",
                        "1",
                        "--timeout",
                        "20",
                    ],
                );
                match refused {
                    Ok(v) => bail!("the analyst's write was accepted: {v}"),
                    Err(e) if format!("{e:#}").contains("TOPIC_AUTHORIZATION_FAILED") => Ok(
                        "the client's own error: TOPIC_AUTHORIZATION_FAILED (29); audited as a \
                         decision, deny"
                            .into(),
                    ),
                    Err(e) => bail!("refused, but not with TOPIC_AUTHORIZATION_FAILED: {e:#}"),
                }
            },
        },
        Step {
            title: "the analyst reads orders: allowed (confluent-kafka)",
            run: |d| {
                let v = d.client_as(
                    ANALYST_ID,
                    ANALYST_SECRET,
                    Lib::Confluent,
                    &[
                        "consume", "--topic", "orders", "--seed", "demo", "--count", "1000",
                        "--size", "512",
                    ],
                )?;
                Ok(format!("{} records read by analytics-app", v["consumed"]))
            },
        },
        Step {
            title: "a record carrying an AWS key id is blocked (kcat -P, gzip)",
            run: |d| {
                let input = d.dir.join("kcat-secret.txt");
                fs::write(&input, "aws_access_key_id=AKIAEXAMPLEEXAMPLE12\n")?;
                let file = input.to_string_lossy().into_owned();
                match d.kcat(&["-P", "-t", "payments", "-p", "0", "-z", "gzip", "-l", &file]) {
                    Ok(out) => bail!("the record was accepted: {out}"),
                    // kcat reports error 44 as librdkafka names it: "Broker: Policy violation".
                    Err(e) if format!("{e:#}").contains("Policy violation") => {
                        Ok("POLICY_VIOLATION (44), rule no-cloud-keys in the audit trail".into())
                    }
                    Err(e) => bail!("refused, but not with POLICY_VIOLATION: {e:#}"),
                }
            },
        },
        Step {
            title: "a card payment is produced (confluent-kafka, lz4): masked before the broker",
            run: |d| {
                let record = serde_json::json!({
                    "id": "pay-1",
                    "amount": 42.5,
                    "card": {"number": CARD, "exp": "12/29"},
                    "customer": {"email": "alice@example.com", "ssn": "123-45-6789"},
                });
                let file = d.dir.join("card-payment.jsonl");
                let line = serde_json::json!({"key": "pay-1", "value": record.to_string()});
                fs::write(&file, format!("{line}\n"))?;
                let file = file.to_string_lossy().into_owned();
                let v = d.client(
                    Lib::Confluent,
                    &[
                        "produce-file",
                        "--topic",
                        "cards",
                        "--codec",
                        "lz4",
                        "--records",
                        &file,
                    ],
                )?;
                if v["complete"] != true {
                    bail!("the payment was not delivered: {v}");
                }
                let stored = broker_storage(&d.dir, "cards")?;
                let value = stored
                    .first()
                    .and_then(|r| r["value"].as_str())
                    .context("nothing stored in the broker")?
                    .to_owned();
                if value.contains(CARD) || value.contains("alice@example.com") {
                    bail!("stored in clear: {value}");
                }
                Ok(format!(
                    "the broker's own storage (tansu SQLite) holds: {value}"
                ))
            },
        },
        Step {
            title: "the analyst reads the payment: card number and email stay tokens",
            run: |d| {
                let v = d.client_as(
                    ANALYST_ID,
                    ANALYST_SECRET,
                    Lib::Confluent,
                    &["dump", "--topic", "cards", "--count", "1"],
                )?;
                let value = first_value(&v)?;
                if value.contains(CARD) {
                    bail!("the analyst got the card number: {value}");
                }
                Ok(format!("analytics-app got: {value}"))
            },
        },
        Step {
            title: "the fraud team reads the payment: the original card number (detokenized)",
            run: |d| {
                let v = d.client_as(
                    FRAUD_ID,
                    FRAUD_SECRET,
                    Lib::KafkaPython,
                    &["dump", "--topic", "cards", "--count", "1"],
                )?;
                let value = first_value(&v)?;
                if !value.contains(CARD) || !value.contains("alice@example.com") {
                    bail!("the fraud team did not get the originals: {value}");
                }
                Ok(format!(
                    "fraud-app got (kafka-python, CRCs checked): {value}"
                ))
            },
        },
        Step {
            title: "interceptor detokenize: the fraud team may, the analyst may not",
            run: |d| {
                let stored = broker_storage(&d.dir, "cards")?;
                let value: Value = serde_json::from_str(
                    stored
                        .first()
                        .and_then(|r| r["value"].as_str())
                        .context("nothing stored")?,
                )?;
                let token = value["customer"]["email"]
                    .as_str()
                    .context("no email token")?
                    .to_owned();
                let ask = |id: &str, secret: &str| -> Result<std::process::Output> {
                    let file = d.dir.join(format!("{id}.access-token"));
                    fs::write(&file, d.idp.fetch_token(&d.ns, id, secret)?)?;
                    d.daemon.cli(&[
                        "detokenize",
                        &token,
                        "--access-token-file",
                        &file.to_string_lossy(),
                    ])
                };
                let fraud = ask(FRAUD_ID, FRAUD_SECRET)?;
                let revealed = String::from_utf8_lossy(&fraud.stdout).trim().to_owned();
                if !fraud.status.success() || revealed != "alice@example.com" {
                    bail!(
                        "fraud-app could not detokenize: {}",
                        String::from_utf8_lossy(&fraud.stderr)
                    );
                }
                let analyst = ask(ANALYST_ID, ANALYST_SECRET)?;
                if analyst.status.success() {
                    bail!("the analyst detokenized {token}");
                }
                Ok(format!(
                    "{token} → {revealed} for fraud-app; analytics-app refused; both audited \
                     (detokenize events, never the value)"
                ))
            },
        },
        Step {
            title: "consumer group: join, consume, commit (confluent-kafka)",
            run: |d| {
                let v = d.client(
                    Lib::Confluent,
                    &[
                        "group",
                        "--topic",
                        "orders",
                        "--seed",
                        "demo",
                        "--count",
                        "1000",
                        "--size",
                        "512",
                        "--group",
                        "demo-group",
                    ],
                )?;
                Ok(format!("committed offsets {}", v["committed"]))
            },
        },
        Step {
            title: "who wrote and read the card payments: interceptor audit query --topic cards",
            run: |d| {
                let events = d.audit(&["query", "--topic", "cards", "--event", "records"])?;
                let mut who: Vec<String> = events
                    .iter()
                    .map(|e| {
                        let offsets: Vec<String> = e["partitions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| {
                                Some(format!(
                                    "{}-{}",
                                    p["first_offset"].as_i64()?,
                                    p["last_offset"].as_i64()?
                                ))
                            })
                            .collect();
                        format!(
                            "{} {} offsets {}",
                            text(&e["actor"]["user"]["name"]),
                            text(&e["stage"]),
                            offsets.join(",")
                        )
                    })
                    .collect();
                who.dedup();
                if !who
                    .iter()
                    .any(|w| w.starts_with(&format!("{FRAUD_ID} fetch")))
                {
                    bail!("the fraud team's read is not in the trail: {who:?}");
                }
                Ok(who.join("; "))
            },
        },
        Step {
            title: "the trail is intact (interceptor audit verify) and a session replays",
            run: |d| {
                let dir = d.daemon.audit_path().display().to_string();
                let verify = d.daemon.cli(&["audit", "verify", &dir])?;
                let report = String::from_utf8_lossy(&verify.stdout).trim().to_owned();
                if !verify.status.success() {
                    bail!("audit verify: {report}");
                }
                let recordings = d.dir.join("recordings");
                let mut files: Vec<PathBuf> = fs::read_dir(&recordings)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                files.sort_by_key(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0));
                let largest = files.last().context("no session was recorded")?;
                let replay =
                    d.daemon
                        .cli(&["replay", &largest.display().to_string(), "--audit", &dir])?;
                let timeline = String::from_utf8_lossy(&replay.stdout);
                Ok(format!(
                    "{}; replay of {} ({} timeline lines)",
                    report.lines().last().unwrap_or_default(),
                    largest.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                    timeline.lines().count()
                ))
            },
        },
    ]
}

/// The value of the first record of a `dump`.
fn first_value(dump: &Value) -> Result<String> {
    dump["records"]
        .get(0)
        .and_then(|r| r["value"].as_str())
        .map(str::to_owned)
        .context("no record read")
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The running demo. Drop order (field order) stops the daemon, then the broker, then removes
/// the namespace.
pub struct Demo {
    pub daemon: Interceptor,
    pub idp: Idp,
    pub tansu: Proc,
    pub ns: Netns,
    pub dir: PathBuf,
}

impl Demo {
    /// Runs a client script in the namespace against the protected address, as the writer;
    /// it fetches its own access token from the IdP.
    pub fn client(&self, lib: Lib, args: &[&str]) -> Result<Value> {
        self.client_as(CLIENT_ID, CLIENT_SECRET, lib, args)
    }

    /// The same as another client of the IdP.
    pub fn client_as(&self, id: &str, secret: &str, lib: Lib, args: &[&str]) -> Result<Value> {
        let token_url = self.idp.token_endpoint();
        let mut all = args.to_vec();
        all.extend_from_slice(&[
            "--bootstrap",
            BROKER,
            "--oidc-token-url",
            &token_url,
            "--oidc-client-id",
            id,
            "--oidc-client-secret",
            secret,
        ]);
        run_client(&self.ns, lib, &all, CLIENT_TIMEOUT)
    }

    /// `interceptor audit SUB DIR ARGS --format json` on the demo's trail: the events.
    pub fn audit(&self, args: &[&str]) -> Result<Vec<Value>> {
        let dir = self.daemon.audit_path().display().to_string();
        let mut all = vec!["audit", args[0], dir.as_str()];
        all.extend(&args[1..]);
        all.extend(["--format", "json"]);
        let out = self.daemon.cli(&all)?;
        if !out.status.success() {
            bail!(
                "interceptor {}: {}",
                all.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).context("audit query printed a line that is not JSON"))
            .collect()
    }

    /// kcat against the protected address with librdkafka's OIDC client-credentials flow.
    pub fn kcat(&self, args: &[&str]) -> Result<String> {
        let url = format!(
            "sasl.oauthbearer.token.endpoint.url={}",
            self.idp.token_endpoint()
        );
        let id = format!("sasl.oauthbearer.client.id={CLIENT_ID}");
        let secret = format!("sasl.oauthbearer.client.secret={CLIENT_SECRET}");
        let mut all = vec![
            "-b",
            BROKER,
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=OAUTHBEARER",
            "-X",
            "sasl.oauthbearer.method=oidc",
            "-X",
            &id,
            "-X",
            &secret,
            "-X",
            &url,
        ];
        all.extend_from_slice(args);
        kcat(&self.ns, &all, CLIENT_TIMEOUT)
    }
}

pub fn run(args: &DemoArgs) -> Result<()> {
    // Ctrl-C: finish the current step's cleanup instead of dying with the namespace left.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    if !args.no_build {
        say("installing what is missing (cargo xtask deps) and building (cargo xtask build)");
        deps::run()?;
        build::run(&BuildArgs::default())?;
    }
    let demo = start().context("starting the demo")?;
    let outcome = run_steps(&demo);
    report(&demo, &outcome);
    let stopped = shutdown(demo);
    let failed = outcome.iter().filter(|o| o.result.is_err()).count();
    if interrupted() {
        bail!("interrupted");
    }
    stopped?;
    if failed > 0 {
        bail!("{failed} demo step(s) failed");
    }
    say("done: every client went through the interceptor, and everything is stopped");
    Ok(())
}

fn say(what: &str) {
    println!("demo: {what}");
}

fn start() -> Result<Demo> {
    let dir = root().join("target/demo");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    if std::path::Path::new(PIN_DIR).exists() {
        say(&format!("removing {PIN_DIR} left by an earlier run"));
        fs::remove_dir_all(PIN_DIR).with_context(|| format!("removing {PIN_DIR}"))?;
    }
    let ns = Netns::named(NETNS)?;
    say(&format!(
        "network namespace {NETNS} (nothing on the host's own port 9092 is touched)"
    ));
    let broker: SocketAddr = BROKER.parse()?;
    let user = BrokerUser {
        name: "interceptor".into(),
        password: "demo-broker-secret".into(),
    };
    let tansu = start_tansu_scram(&ns, broker, &dir, &user, &[])?;
    say(&format!(
        "broker: tansu 0.6.0 on {BROKER} (SQLite storage), pid {}; it accepts only SCRAM-SHA-256 \
         user {:?}, the interceptor's own credentials (no client has them)",
        tansu.pid(),
        user.name
    ));
    let idp = Idp::start(
        &ns,
        IDP.parse()?,
        &dir,
        &[
            IdpClient::new(CLIENT_ID, CLIENT_SECRET, &["payments", "writers"]),
            IdpClient::new(ANALYST_ID, ANALYST_SECRET, &["analysts"]),
            IdpClient::new(FRAUD_ID, FRAUD_SECRET, &["fraud"]),
        ],
    )?;
    say(&format!(
        "identity provider: oidc-provider at {} (client-credentials grant, RS256 JWT access \
         tokens for audience {AUDIENCE:?} with a groups claim)",
        idp.issuer()
    ));
    let secrets = dir.join("secrets.toml");
    fs::write(
        &secrets,
        format!(
            "username = \"{}\"\npassword = \"{}\"\n",
            user.name, user.password
        ),
    )?;
    fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let policies = dir.join("policies");
    fs::create_dir_all(&policies)?;
    fs::write(policies.join("orders.yaml"), POLICY)?;
    say(&format!(
        "policy: {} — writers may produce and consume orders and payments, analysts may only \
         read orders and card payments (card numbers masked), the fraud team reads card \
         payments in clear, nobody may write an AWS key id; anything else is denied",
        policies.join("orders.yaml").display()
    ));
    let keys = dir.join("vault.keys");
    let made = std::process::Command::new(interceptor_bin())
        .args(["vault", "init"])
        .arg(&keys)
        .output()?;
    if !made.status.success() {
        bail!(
            "interceptor vault init: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    say(&format!(
        "token vault: embedded store {}, keyring {} (interceptor vault init)",
        dir.join("vault.redb").display(),
        keys.display()
    ));
    let config = DaemonConfig::kafka(&[broker])
        .policy_dir(&policies)
        .extra(&format!(
            "[vault]\nbackend = \"embedded\"\npath = {:?}\nkey_file = {:?}\n",
            dir.join("vault.redb").display().to_string(),
            keys.display().to_string()
        ))
        .extra(&format!(
            "[recording]\nenabled = true\ndir = {:?}\n",
            dir.join("recordings").display().to_string()
        ))
        .listener_settings("sasl_mechanisms = [\"OAUTHBEARER\"]\n")
        .extra(&format!(
            "[[identity.issuer]]\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n\
             [upstream_auth]\nmechanism = \"scram-sha-256\"\nsecrets_file = \"{}\"\n",
            idp.issuer(),
            secrets.display()
        ));
    let mut daemon = Interceptor::new(&ns, &dir, &config.body(), PinDir::at(PIN_DIR))?;
    daemon.start()?;
    say(&format!(
        "interceptor: pid {}, kernel steering of {BROKER} pinned at {PIN_DIR}; config {}",
        daemon.pid().unwrap_or(0),
        daemon.config_path().display()
    ));
    say(&format!(
        "clients below connect to {BROKER}, the broker's own address: the kernel hands each new \
         connection to the interceptor"
    ));
    Ok(Demo {
        daemon,
        idp,
        tansu,
        ns,
        dir,
    })
}

struct StepOutcome {
    title: &'static str,
    result: Result<String>,
    took: Duration,
    /// Audit events written while the step ran: [from, to).
    audit: (usize, usize),
}

fn run_steps(demo: &Demo) -> Vec<StepOutcome> {
    let all = steps();
    let n = all.len();
    let mut outcomes = Vec::new();
    for (i, step) in all.into_iter().enumerate() {
        if interrupted() {
            break;
        }
        println!("\n[{}/{n}] {}", i + 1, step.title);
        let from = demo.daemon.audit_events().len();
        let started = Instant::now();
        let result = (step.run)(demo);
        let took = started.elapsed();
        settle(demo, from);
        let to = demo.daemon.audit_events().len();
        match &result {
            Ok(detail) => println!("      ok ({:.1} s): {detail}", took.as_secs_f64()),
            Err(e) => println!("      FAILED ({:.1} s): {e:#}", took.as_secs_f64()),
        }
        let failed = result.is_err();
        outcomes.push(StepOutcome {
            title: step.title,
            result,
            took,
            audit: (from, to),
        });
        if failed {
            break;
        }
    }
    outcomes
}

/// Waits (briefly) until every connection opened since audit event `from` has its close event.
fn settle(demo: &Demo, from: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let events = demo.daemon.audit_events();
        let (opens, closes) = sessions(&events[from.min(events.len())..], &events);
        if opens.iter().all(|s| closes.contains_key(s)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sessions opened in `window`, and every close event (by session) in `all`.
fn sessions<'a>(window: &'a [Value], all: &'a [Value]) -> (Vec<u64>, BTreeMap<u64, &'a Value>) {
    let opens = window
        .iter()
        .filter(|e| e["event"] == "connection_open")
        .filter_map(|e| e["session"].as_u64())
        .collect();
    let closes = all
        .iter()
        .filter(|e| e["event"] == "connection_close")
        .filter_map(|e| Some((e["session"].as_u64()?, e)))
        .collect();
    (opens, closes)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 10 * 1024 * 1024 => format!("{:.1} MiB", n as f64 / 1048576.0),
        n if n >= 10 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn report(demo: &Demo, outcomes: &[StepOutcome]) {
    let events = demo.daemon.audit_events();
    println!("\n================ what passed through the interceptor ================");
    println!(
        "audit file {} ({} events), daemon log {}",
        demo.daemon.audit_path().display(),
        events.len(),
        demo.daemon
            .log_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    for (i, o) in outcomes.iter().enumerate() {
        let window = &events[o.audit.0.min(events.len())..o.audit.1.min(events.len())];
        let (opens, closes) = sessions(window, &events);
        let kernel = window.iter().filter(|e| e["event"] == "kernel").count();
        println!(
            "\n[{}] {} — {}, {:.1} s, {} connection(s), {} kernel event(s)",
            i + 1,
            o.title,
            if o.result.is_ok() { "ok" } else { "FAILED" },
            o.took.as_secs_f64(),
            opens.len(),
            kernel
        );
        let decisions: Vec<&Value> = window.iter().filter(|e| e["event"] == "decision").collect();
        let allowed = decisions
            .iter()
            .filter(|e| e["decision"] == "allow")
            .count();
        if !decisions.is_empty() {
            println!(
                "    policy {}: {} decision(s), {allowed} allowed",
                text(&decisions[0]["policy_version"]),
                decisions.len()
            );
        }
        for e in decisions
            .iter()
            .filter(|e| e["decision"] != "allow")
            .take(5)
        {
            println!(
                "    {} {} {} {}:{} for {} ({}) — rule {}",
                text(&e["decision"]).to_uppercase(),
                text(&e["api"]),
                text(&e["operation"]),
                text(&e["resource_type"]),
                text(&e["resource"]),
                text(&e["principal"]),
                text(&e["groups"]),
                e["rule"]
                    .as_str()
                    .map(|r| format!("{r} ({})", text(&e["rule_source"])))
                    .unwrap_or_else(|| "none matched: default deny".into()),
            );
        }
        for e in window
            .iter()
            .filter(|e| e["event"] == "transform" || e["event"] == "detokenize")
            .take(6)
        {
            if e["event"] == "detokenize" {
                println!(
                    "    DETOKENIZE by {} ({}) — rule {}: {}",
                    text(&e["principal"]),
                    text(&e["groups"]),
                    text(&e["rule"]),
                    text(&e["outcome"]),
                );
                continue;
            }
            let fields: Vec<String> = e["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{} {} ×{}",
                        text(&f["selector"]),
                        text(&f["action"]),
                        f["count"]
                    )
                })
                .collect();
            println!(
                "    {} {} {}/{} for {}: {} record(s) — {}",
                text(&e["outcome"]).to_uppercase(),
                text(&e["stage"]),
                text(&e["topic"]),
                e["partition"],
                text(&e["principal"]),
                e["records"],
                fields.join(", ")
            );
        }
        for e in window.iter().filter(|e| e["event"] == "connection_open") {
            let session = e["session"].as_u64().unwrap_or(0);
            let close = closes.get(&session);
            println!(
                "    session {:<4} {} -> {} (original destination), upstream {}: {} from client, {} to client, {}",
                session,
                text(&e["client"]),
                text(&e["original_dst"]),
                text(&e["upstream"]),
                close
                    .map(|c| bytes(c["bytes_from_client"].as_u64().unwrap_or(0)))
                    .unwrap_or_else(|| "?".into()),
                close
                    .map(|c| bytes(c["bytes_to_client"].as_u64().unwrap_or(0)))
                    .unwrap_or_else(|| "?".into()),
                close
                    .map(|c| format!("closed: {}", text(&c["reason"])))
                    .unwrap_or_else(|| "still open".into()),
            );
        }
    }
    let from: u64 = events
        .iter()
        .filter(|e| e["event"] == "connection_close")
        .map(|e| e["bytes_from_client"].as_u64().unwrap_or(0))
        .sum();
    let to: u64 = events
        .iter()
        .filter(|e| e["event"] == "connection_close")
        .map(|e| e["bytes_to_client"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "\ntotals: {} from clients, {} to clients",
        bytes(from),
        bytes(to)
    );
    let counts = audit_summary(&events);
    println!(
        "audit events: {}",
        counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let log = demo.daemon.log();
    let notable: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("WARN")
                || l.contains("ERROR")
                || l.contains("steering attached")
                || l.contains("interceptor ready")
        })
        .collect();
    println!(
        "daemon log: {} lines; start-up, warnings and errors:",
        log.lines().count()
    );
    for l in notable.iter().take(20) {
        println!("    {l}");
    }
    println!("=====================================================================");
}

/// Tries one TCP connection to the broker's address from inside the namespace.
fn probe(demo: &Demo) -> String {
    let (local, result) = demo.ns.run(|| {
        wire::connect_from(
            "127.0.0.1:0".parse().expect("address"),
            BROKER.parse().expect("address"),
            Duration::from_secs(2),
        )
    });
    match result {
        Ok(_) => format!("a connection from {local} to {BROKER} was accepted"),
        Err(e) => format!("a connection from {local} to {BROKER} failed: {e}"),
    }
}

/// What the broker says to a client that reaches it directly and asks for Metadata.
fn bypass(demo: &Demo) -> String {
    let stream = demo.ns.run(|| {
        wire::connect_from(
            "127.0.0.1:0".parse().expect("address"),
            BROKER.parse().expect("address"),
            Duration::from_secs(2),
        )
        .1
    });
    match stream.map(|mut s| wire::metadata_round_trip(&mut s, 1)) {
        Ok(Ok(_)) => "it answered Metadata without authentication".into(),
        Ok(Err(e)) => format!("Metadata without authentication: {e}"),
        Err(e) => format!("connect failed: {e}"),
    }
}

fn shutdown(mut demo: Demo) -> Result<()> {
    println!();
    say("stopping the interceptor (SIGTERM); the kernel programs stay attached");
    let stopped = demo.daemon.stop();
    if stopped.is_ok() && !interrupted() {
        say(&format!(
            "fail closed: {} (nobody may reach the broker around the interceptor)",
            probe(&demo)
        ));
    }
    say("removing the kernel programs (interceptor detach)");
    let detached = demo.daemon.detach();
    if detached.is_ok() && !interrupted() {
        say(&format!(
            "after detach: {} (the broker itself, which still wants the interceptor's SCRAM \
             credentials: {})",
            probe(&demo),
            bypass(&demo)
        ));
    }
    say("stopping the broker and the identity provider, removing the network namespace");
    demo.idp.stop();
    let _ = demo.tansu.stop(Duration::from_secs(10));
    drop(demo);
    stopped?;
    detached
}
