//! End to end, MQTT: paho-mqtt clients (3.1.1 and 5) and mosquitto_pub/sub through the
//! kernel-steered daemon in front of a real mosquitto that accepts only the interceptor's own
//! login, with OIDC access tokens from the real IdP in the CONNECT password.
//!
//! - `access`: tokens accepted, bad ones refused with the CONNACK codes of each version;
//!   allowed publish and subscribe; a denied publish answered with PUBACK 0x87 (5) or a
//!   disconnect (3.1.1); a denied subscription answered 0x87 / 0x80 in SUBACK; a subscription
//!   wider than the subscriber's rights narrowed (granted, deliveries filtered); `$SYS` not
//!   reached by `#`; retained messages need `retain`; a will on a forbidden topic refused at
//!   CONNECT and an allowed will delivered; an MQTT CONNECT on the Kafka port and a Kafka
//!   request on the MQTT port refused as protocol mismatches, audited.
//! - `qos2_and_sessions`: QoS 2 through the daemon with refusals interleaved (no loss, no
//!   duplicate, the broker's flows completed for filtered deliveries), and a persistent
//!   session resumed: queued messages delivered after reconnecting, and a session taken over
//!   by another principal's client gets only what that principal may read.
//! - `masking_audit_recording`: card numbers tokenized before the broker, revealed to fraud
//!   analysts, emails redacted for analysts; the audit trail's decisions, transforms and
//!   records; the session recording replayed.
//!
//! Needs root and `cargo xtask deps` + `cargo xtask build`; fails loudly otherwise, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`.

use std::{
    fs,
    io::{Read, Write},
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::Duration,
};

use interceptor_e2e::{
    idp::{Idp, IdpClient, AUDIENCE},
    interceptor_bin,
    mqtt::{
        mqtt_client, mqtt_client_at, secret_file, start_mosquitto, MOSQUITTO_PUB, MOSQUITTO_SUB,
    },
    require_kernel, run_with_timeout, start_interceptor, start_tansu, wait_until, BrokerUser,
    Interceptor, Netns, Proc, WorkDir,
};
use serde_json::Value;

const MQTT: &str = "127.0.0.1:1883";
const KAFKA: &str = "127.0.0.1:9092";
const IDP: &str = "127.0.0.1:9400";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// v5 reason codes as paho reports them (it reports 3.1.1 return codes the same way).
const NOT_AUTHORIZED: u64 = 0x87;
const BAD_USERNAME_OR_PASSWORD: u64 = 0x86;
const V3_SUBACK_FAILURE: u64 = 0x80;

struct Who {
    id: &'static str,
    secret: &'static str,
    group: &'static str,
}

const SENSOR: Who = Who {
    id: "sensor-7",
    secret: "sensor-secret",
    group: "sensors",
};
const OPERATOR: Who = Who {
    id: "operator",
    secret: "operator-secret",
    group: "operators",
};
const CONTRACTOR: Who = Who {
    id: "contractor",
    secret: "contractor-secret",
    group: "contractors",
};
const PAYER: Who = Who {
    id: "payments-app",
    secret: "payer-secret",
    group: "payments",
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

const EVERYONE: &[&Who] = &[&SENSOR, &OPERATOR, &CONTRACTOR, &PAYER, &FRAUD, &ANALYST];

const POLICY: &str = r#"# End-to-end MQTT tests.
rules:
  - name: sensors-publish
    effect: allow
    subjects:
      groups: [sensors]
    resources:
      mqtt_topics: ["sensors/+/telemetry", "sensors/+/location", "status/#"]
    operations: [publish]
  - name: sensors-retain-status
    effect: allow
    subjects:
      groups: [sensors]
    resources:
      mqtt_topics: ["status/#"]
    operations: [retain]
  - name: operators-read
    effect: allow
    subjects:
      groups: [operators]
    resources:
      mqtt_topics: ["sensors/#", "status/#", "payments/#", "wills/#"]
    operations: [subscribe]
  - name: operators-commands
    effect: allow
    subjects:
      groups: [operators]
    resources:
      mqtt_topics: ["commands/#", "wills/operators/#"]
    operations: [publish, subscribe]
  - name: contractors-sensors
    effect: allow
    subjects:
      groups: [contractors]
    resources:
      mqtt_topics: ["sensors/#"]
    operations: [subscribe]
  - name: contractors-no-location
    effect: deny
    subjects:
      groups: [contractors]
    resources:
      mqtt_topics: ["sensors/+/location"]
    operations: [subscribe]
  - name: payments-publish
    effect: allow
    subjects:
      groups: [payments]
    resources:
      mqtt_topics: ["payments/#"]
    operations: [publish]
  - name: payments-readers
    effect: allow
    subjects:
      groups: [fraud, analysts]
    resources:
      mqtt_topics: ["payments/#"]
    operations: [subscribe]

masking:
  - name: card-tokens
    description: Card numbers become vault tokens before the broker sees them.
    mqtt_topics: ["payments/#"]
    fields:
      - path: $.card
        action: tokenize
    reveal:
      groups: [fraud]
  - name: analysts-no-email
    on: fetch
    mqtt_topics: ["payments/#"]
    subjects:
      groups: [analysts]
    fields:
      - path: $.email
        action: redact
"#;

struct Stack {
    daemon: Interceptor,
    idp: Idp,
    _mosquitto: Proc,
    _tansu: Proc,
    work: WorkDir,
    ns: Netns,
}

fn stack(name: &str, mqtt_settings: &str) -> Stack {
    let ns = Netns::new("itest-mqtt").expect("netns");
    let work = WorkDir::new(name).expect("work dir");
    let user = BrokerUser {
        name: "interceptor".into(),
        password: "mosquitto-side-secret".into(),
    };
    let mqtt: SocketAddr = MQTT.parse().expect("address");
    let kafka: SocketAddr = KAFKA.parse().expect("address");
    let mosquitto = start_mosquitto(&ns, mqtt, work.path(), &user)
        .unwrap_or_else(|e| panic!("mosquitto: {e:#}"));
    let tansu = start_tansu(&ns, kafka, work.path()).unwrap_or_else(|e| panic!("tansu: {e:#}"));
    let clients: Vec<IdpClient> = EVERYONE
        .iter()
        .map(|w| IdpClient::new(w.id, w.secret, &[w.group]))
        .collect();
    let idp = Idp::start(&ns, IDP.parse().expect("address"), work.path(), &clients)
        .unwrap_or_else(|e| panic!("idp: {e:#}"));
    let secrets = work.join("mqtt-secrets.toml");
    fs::write(
        &secrets,
        format!(
            "username = \"{}\"\npassword = \"{}\"\n",
            user.name, user.password
        ),
    )
    .expect("secrets");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).expect("chmod");
    let policies = work.join("policies");
    fs::create_dir_all(&policies).expect("policy dir");
    fs::write(policies.join("mqtt.yaml"), POLICY).expect("policy");
    let keys = work.join("vault.keys");
    let out = Command::new(interceptor_bin())
        .args(["vault", "init"])
        .arg(&keys)
        .output()
        .expect("interceptor vault init");
    assert!(out.status.success(), "vault init: {out:?}");
    let body = format!(
        "fail_open = false\n\
         \n[[listener]]\nprotocol = \"mqtt\"\naddress = \"{mqtt}\"\nsasl_mechanisms = [\"OAUTHBEARER\"]\n\
         \n[[listener]]\nprotocol = \"kafka\"\naddress = \"{kafka}\"\nsasl_mechanisms = []\nallow_anonymous = true\n\
         \n[identity]\nclock_skew_secs = 1\njwks_min_refetch_secs = 1\n\
         [[identity.issuer]]\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\n\
         \n[mqtt]\nupstream_secrets_file = {secrets:?}\n{mqtt_settings}\n\
         \n[vault]\nbackend = \"embedded\"\npath = {vault:?}\nkey_file = {keys:?}\n\
         \n[recording]\nenabled = true\ndir = {recordings:?}\n\
         \n[policy]\ndir = {policies:?}\n",
        issuer = idp.issuer(),
        secrets = secrets.display().to_string(),
        vault = work.join("vault.redb").display().to_string(),
        keys = keys.display().to_string(),
        recordings = work.join("recordings").display().to_string(),
        policies = policies.display().to_string(),
    );
    let daemon = start_interceptor(&ns, &work, &body)
        .unwrap_or_else(|e| panic!("starting the daemon: {e:#}"));
    Stack {
        daemon,
        idp,
        _mosquitto: mosquitto,
        _tansu: tansu,
        work,
        ns,
    }
}

impl Stack {
    fn token_file(&self, who: &Who) -> PathBuf {
        let token = self
            .idp
            .fetch_token(&self.ns, who.id, who.secret)
            .unwrap_or_else(|e| panic!("token for {}: {e:#}", who.id));
        secret_file(self.work.path(), who.id, &token)
    }

    /// paho as `who` (token in the password): `op` with `args`; the client's summary.
    fn paho(&self, who: &Who, version: &str, op: &str, args: &[&str]) -> Value {
        let token = self.token_file(who);
        let token = token.display().to_string();
        let mut all = vec![
            op,
            "--version",
            version,
            "--username",
            who.id,
            "--password-file",
            &token,
        ];
        all.extend_from_slice(args);
        mqtt_client(&self.ns, &all, CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.daemon.log_tail(40)))
    }

    /// A subscriber running in the background until it has `count` messages or times out.
    fn subscriber(
        &self,
        who: &Who,
        version: &str,
        filters: &[&str],
        extra: &[&str],
    ) -> std::thread::JoinHandle<Value> {
        let token = self.token_file(who).display().to_string();
        let ready = self
            .work
            .join(&format!("ready-{}-{}", who.id, rand_suffix()));
        let mut args: Vec<String> = vec![
            "subscribe".into(),
            "--version".into(),
            version.into(),
            "--username".into(),
            who.id.into(),
            "--password-file".into(),
            token,
            "--ready-file".into(),
            ready.display().to_string(),
        ];
        for f in filters {
            args.push("--filter".into());
            args.push((*f).into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let ns_path = self.ns.path().to_path_buf();
        let handle = std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            mqtt_client_at(&ns_path, &args, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
        });
        wait_until(Duration::from_secs(30), "the subscriber's SUBACK", || {
            ready.exists().then_some(())
        })
        .expect("subscriber ready");
        handle
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn messages(summary: &Value) -> Vec<(String, String)> {
    summary["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["topic"].as_str().unwrap_or("").to_owned(),
                        m["payload"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn events<'a>(trail: &'a [Value], kind: &str) -> Vec<&'a Value> {
    trail.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn access() {
    if !require_kernel() {
        return;
    }
    let s = stack("mqtt-access", "");

    // Authentication: a garbage token, no password, and the broker's own login (which only
    // the interceptor may use) are all refused with "bad username or password".
    let garbage = secret_file(
        s.work.path(),
        "garbage",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl",
    );
    let garbage = garbage.display().to_string();
    for version in ["5", "3"] {
        let out = mqtt_client(
            &s.ns,
            &[
                "connect",
                "--version",
                version,
                "--username",
                "x",
                "--password-file",
                &garbage,
            ],
            CLIENT_TIMEOUT,
        )
        .expect("client");
        assert_eq!(out["connack"], BAD_USERNAME_OR_PASSWORD, "{version}: {out}");
    }
    let out = mqtt_client(&s.ns, &["connect", "--version", "5"], CLIENT_TIMEOUT).expect("client");
    assert_eq!(out["connack"], BAD_USERNAME_OR_PASSWORD, "{out}");
    let out = mqtt_client(
        &s.ns,
        &[
            "connect",
            "--version",
            "5",
            "--username",
            "interceptor",
            "--password",
            "mosquitto-side-secret",
        ],
        CLIENT_TIMEOUT,
    )
    .expect("client");
    assert_eq!(out["connack"], BAD_USERNAME_OR_PASSWORD, "{out}");

    // Allowed publish and subscribe, both versions; the contractor's `sensors/#` is narrowed:
    // granted, but location messages never reach it.
    let operator = s.subscriber(
        &OPERATOR,
        "5",
        &["sensors/#"],
        &["--qos", "1", "--count", "4", "--timeout", "20"],
    );
    let contractor = s.subscriber(
        &CONTRACTOR,
        "3",
        &["sensors/#", "sensors/+/location"],
        &["--qos", "1", "--count", "2", "--timeout", "8"],
    );
    for (topic, version) in [("sensors/7/telemetry", "5"), ("sensors/7/location", "3")] {
        let out = s.paho(
            &SENSOR,
            version,
            "publish",
            &["--topic", topic, "--qos", "1", "--count", "2"],
        );
        assert_eq!(out["acked"], 2, "{topic}: {out}");
        assert_eq!(out["acks"][0], 0, "{topic}: {out}");
    }
    let operator = operator.join().expect("operator");
    let contractor = contractor.join().expect("contractor");
    assert_eq!(operator["suback"][0], 1, "{operator}");
    assert_eq!(messages(&operator).len(), 4, "{operator}");
    // 3.1.1: the narrowed filter granted (QoS 1), the location filter refused (0x80).
    assert_eq!(contractor["suback"][0], 1, "{contractor}");
    assert_eq!(contractor["suback"][1], V3_SUBACK_FAILURE, "{contractor}");
    let got = messages(&contractor);
    assert_eq!(got.len(), 2, "{contractor}");
    assert!(
        got.iter().all(|(t, _)| t == "sensors/7/telemetry"),
        "{got:?}"
    );

    // A denied publish: PUBACK 0x87 in MQTT 5, the connection closed in 3.1.1.
    let out = s.paho(
        &SENSOR,
        "5",
        "publish",
        &["--topic", "commands/reboot", "--qos", "1", "--count", "3"],
    );
    assert_eq!(
        out["acks"],
        serde_json::json!(vec![NOT_AUTHORIZED; 3]),
        "{out}"
    );
    assert_eq!(out["disconnected"], true, "{out}");
    let out = s.paho(
        &SENSOR,
        "3",
        "publish",
        &[
            "--topic",
            "commands/reboot",
            "--qos",
            "1",
            "--count",
            "1",
            "--timeout",
            "5",
        ],
    );
    assert_eq!(out["acked"], 0, "3.1.1 has no negative PUBACK: {out}");
    assert_eq!(out["disconnected"], true, "{out}");

    // A denied subscription: SUBACK 0x87 (5); `#` does not reach $SYS, so `$SYS/#` is denied.
    let out = s.paho(
        &OPERATOR,
        "5",
        "subscribe",
        &[
            "--filter",
            "$SYS/#",
            "--filter",
            "commands/#",
            "--timeout",
            "1",
        ],
    );
    assert_eq!(
        out["suback"],
        serde_json::json!([NOT_AUTHORIZED, 0]),
        "{out}"
    );

    // Retained: status/# may be retained by sensors, sensors/... may not.
    let out = s.paho(
        &SENSOR,
        "5",
        "publish",
        &[
            "--topic",
            "status/7",
            "--qos",
            "1",
            "--retain",
            "--payload",
            "online",
        ],
    );
    // Success, or 0x10 (no matching subscribers): both below 0x80.
    assert!(out["acks"][0].as_u64().is_some_and(|c| c < 0x80), "{out}");
    let out = s.paho(
        &SENSOR,
        "5",
        "publish",
        &["--topic", "sensors/7/telemetry", "--qos", "1", "--retain"],
    );
    assert_eq!(out["acks"][0], NOT_AUTHORIZED, "{out}");
    let out = s.paho(
        &OPERATOR,
        "5",
        "subscribe",
        &[
            "--filter",
            "status/#",
            "--filter",
            "sensors/#",
            "--count",
            "1",
            "--timeout",
            "5",
            "--linger",
            "1",
        ],
    );
    assert_eq!(
        messages(&out),
        vec![("status/7".into(), "online".into())],
        "{out}"
    );

    // Wills: on a topic the client may not publish to, CONNECT is refused; an allowed will is
    // delivered when the client vanishes.
    let out = s.paho(
        &SENSOR,
        "5",
        "connect",
        &["--will-topic", "commands/all", "--will-payload", "gone"],
    );
    assert_eq!(out["connack"], NOT_AUTHORIZED, "{out}");
    let watcher = s.subscriber(
        &OPERATOR,
        "5",
        &["wills/#"],
        &["--count", "1", "--timeout", "20"],
    );
    let out = s.paho(
        &OPERATOR,
        "3",
        "connect",
        &[
            "--will-topic",
            "wills/operators/console",
            "--will-payload",
            "console lost",
            "--abort",
        ],
    );
    assert_eq!(out["connack"], 0, "{out}");
    let watcher = watcher.join().expect("watcher");
    assert_eq!(
        messages(&watcher),
        vec![("wills/operators/console".into(), "console lost".into())],
        "{watcher}"
    );

    // mosquitto's own clients, token in -P.
    let token = fs::read_to_string(s.token_file(&SENSOR)).expect("token");
    let op_token = fs::read_to_string(s.token_file(&OPERATOR)).expect("token");
    let mut sub = s.ns.command(MOSQUITTO_SUB);
    sub.args([
        "-h",
        "127.0.0.1",
        "-p",
        "1883",
        "-V",
        "mqttv311",
        "-q",
        "1",
        "-C",
        "1",
        "-W",
        "20",
    ])
    .args([
        "-u",
        OPERATOR.id,
        "-P",
        &op_token,
        "-t",
        "sensors/+/telemetry",
        "-i",
        "mosq-sub",
    ]);
    let sub = std::thread::spawn(move || run_with_timeout(sub, CLIENT_TIMEOUT));
    std::thread::sleep(Duration::from_secs(2));
    let mut publ = s.ns.command(MOSQUITTO_PUB);
    publ.args(["-h", "127.0.0.1", "-p", "1883", "-V", "mqttv5", "-q", "1"])
        .args([
            "-u",
            SENSOR.id,
            "-P",
            &token,
            "-t",
            "sensors/9/telemetry",
            "-m",
            "21.5C",
        ]);
    let published = run_with_timeout(publ, CLIENT_TIMEOUT).expect("mosquitto_pub");
    assert!(
        published.status.success(),
        "mosquitto_pub: {}",
        published.stderr
    );
    let got = sub
        .join()
        .expect("mosquitto_sub thread")
        .expect("mosquitto_sub");
    assert!(got.status.success(), "mosquitto_sub: {}", got.stderr);
    assert_eq!(got.stdout.trim(), "21.5C");

    // Protocol mismatch both ways: refused and audited.
    let mut kafka_port =
        s.ns.connect(KAFKA.parse().expect("address"), Duration::from_secs(5))
            .expect("connect to the Kafka port");
    // An MQTT 3.1.1 CONNECT: remaining length 12, "MQTT", level 4, clean, keep alive 60, no id.
    kafka_port
        .write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        .expect("write");
    let mut sink = Vec::new();
    let _ = kafka_port.read_to_end(&mut sink);
    let mut mqtt_port =
        s.ns.connect(MQTT.parse().expect("address"), Duration::from_secs(5))
            .expect("connect to the MQTT port");
    // Kafka ApiVersions v3 header: length 13, api key 18, version 3, correlation id 1, no id.
    mqtt_port
        .write_all(b"\x00\x00\x00\x0d\x00\x12\x00\x03\x00\x00\x00\x01\xff\xff\x00\x00\x00")
        .expect("write");
    let _ = mqtt_port.read_to_end(&mut sink);

    let trail = wait_until(Duration::from_secs(10), "the mismatch events", || {
        let trail = s.daemon.audit_events();
        let mismatches = trail
            .iter()
            .filter(|e| e["reason"] == "protocol_mismatch")
            .count();
        (mismatches >= 2).then_some(trail)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.daemon.log_tail(40)));
    let denied: Vec<&Value> = events(&trail, "decision")
        .into_iter()
        .filter(|e| e["decision"] == "deny" && e["resource"] == "commands/reboot")
        .collect();
    assert!(!denied.is_empty(), "no audited denial of commands/reboot");
    assert_eq!(denied[0]["resource_type"], "mqtt-topic");
    assert_eq!(denied[0]["operation"], "publish");
    assert_eq!(denied[0]["principal"], SENSOR.id);
    let narrowed = events(&trail, "decision")
        .into_iter()
        .any(|e| e["decision"] == "narrowed" && e["principal"] == CONTRACTOR.id);
    assert!(narrowed, "no narrowed subscription in the trail");
    let failures = events(&trail, "authentication")
        .into_iter()
        .filter(|e| e["outcome"] == "failure")
        .count();
    assert!(failures >= 4, "authentication failures audited: {failures}");
}

#[test]
fn qos2_and_sessions() {
    if !require_kernel() {
        return;
    }
    let s = stack("mqtt-qos2", "");
    const N: usize = 150;

    // The contractor subscribes at QoS 2 to everything under sensors/: its location
    // deliveries are completed with the broker here (PUBREC/PUBREL/PUBCOMP) and never sent.
    let contractor = s.subscriber(
        &CONTRACTOR,
        "5",
        &["sensors/#"],
        &[
            "--qos",
            "2",
            "--count",
            &N.to_string(),
            "--timeout",
            "60",
            "--linger",
            "2",
        ],
    );
    let operator = s.subscriber(
        &OPERATOR,
        "3",
        &["sensors/#"],
        &[
            "--qos",
            "2",
            "--count",
            &(2 * N).to_string(),
            "--timeout",
            "60",
            "--linger",
            "2",
        ],
    );
    let telemetry = s.paho(
        &SENSOR,
        "5",
        "publish",
        &[
            "--topic",
            "sensors/1/telemetry",
            "--qos",
            "2",
            "--count",
            &N.to_string(),
            "--payload",
            "t{i}",
        ],
    );
    let location = s.paho(
        &SENSOR,
        "3",
        "publish",
        &[
            "--topic",
            "sensors/1/location",
            "--qos",
            "2",
            "--count",
            &N.to_string(),
            "--payload",
            "l{i}",
        ],
    );
    // Refused QoS 2 publishes interleaved: a v5 PUBREC 0x87 ends each flow. paho sends a
    // PUBREL anyway and reports the PUBCOMP's code: the daemon answers it (0x92, no such
    // flow), the broker never sees it.
    let refused = s.paho(
        &SENSOR,
        "5",
        "publish",
        &["--topic", "commands/x", "--qos", "2", "--count", "20"],
    );
    assert_eq!(telemetry["acked"], N, "{telemetry}");
    assert_eq!(location["acked"], N, "{location}");
    assert_eq!(
        refused["acks"],
        serde_json::json!(vec![0x92; 20]),
        "{refused}"
    );
    let contractor = contractor.join().expect("contractor");
    let operator = operator.join().expect("operator");
    let expected: Vec<(String, String)> = (0..N)
        .map(|i| ("sensors/1/telemetry".to_string(), format!("t{i}")))
        .collect();
    assert_eq!(
        messages(&contractor),
        expected,
        "contractor: no loss, no duplicate, in order"
    );
    let got = messages(&operator);
    assert_eq!(got.len(), 2 * N, "operator: {} messages", got.len());
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 2 * N, "operator got duplicates");

    // A persistent session: subscribe, leave, messages queued by the broker meanwhile, come
    // back without subscribing: every queued message arrives through the daemon.
    let first = s.paho(
        &OPERATOR,
        "5",
        "subscribe",
        &[
            "--client-id",
            "console-1",
            "--no-clean",
            "--session-expiry",
            "300",
            "--filter",
            "sensors/#",
            "--qos",
            "1",
            "--timeout",
            "1",
        ],
    );
    assert_eq!(first["suback"][0], 1, "{first}");
    let out = s.paho(
        &SENSOR,
        "5",
        "publish",
        &[
            "--topic",
            "sensors/2/telemetry",
            "--qos",
            "1",
            "--count",
            "10",
            "--payload",
            "q{i}",
        ],
    );
    assert_eq!(out["acked"], 10, "{out}");
    let out = s.paho(
        &SENSOR,
        "5",
        "publish",
        &[
            "--topic",
            "sensors/2/location",
            "--qos",
            "1",
            "--count",
            "5",
            "--payload",
            "secret{i}",
        ],
    );
    assert_eq!(out["acked"], 5, "{out}");
    // The contractor takes over the operator's session: the broker hands it the queue, the
    // daemon hands over only what the contractor may read.
    let taken = s.paho(
        &CONTRACTOR,
        "5",
        "connect",
        &[
            "--client-id",
            "console-1",
            "--no-clean",
            "--session-expiry",
            "300",
            "--linger",
            "3",
        ],
    );
    assert_eq!(taken["connack"], 0, "{taken}");
    let trail = s.daemon.audit_events();
    let delivered: Vec<&Value> = events(&trail, "decision")
        .into_iter()
        .filter(|e| e["api"] == "DELIVERY" && e["principal"] == CONTRACTOR.id)
        .filter(|e| {
            e["resource"]
                .as_str()
                .unwrap_or("")
                .starts_with("sensors/2/")
        })
        .collect();
    // Allowed messages of one read share an event (`messages`); refusals have one each.
    let count = |d: &str| -> u64 {
        delivered
            .iter()
            .filter(|e| e["decision"] == d)
            .map(|e| e["messages"].as_u64().unwrap_or(1))
            .sum()
    };
    let (allowed, denied) = (count("allow"), count("deny"));
    assert_eq!(
        (allowed, denied),
        (10, 5),
        "deliveries of the taken-over session"
    );
    assert!(delivered
        .iter()
        .filter(|e| e["decision"] == "allow")
        .all(|e| e["resource"] == "sensors/2/telemetry"));
}

#[test]
fn masking_audit_recording() {
    if !require_kernel() {
        return;
    }
    let s = stack("mqtt-masking", "");
    let fraud = s.subscriber(
        &FRAUD,
        "5",
        &["payments/#"],
        &["--qos", "1", "--count", "2", "--timeout", "20"],
    );
    let analyst = s.subscriber(
        &ANALYST,
        "3",
        &["payments/#"],
        &["--qos", "1", "--count", "2", "--timeout", "20"],
    );
    let operator = s.subscriber(
        &OPERATOR,
        "5",
        &["payments/#"],
        &["--qos", "1", "--count", "2", "--timeout", "20"],
    );
    let payment =
        r#"{"id":"p{i}","card":"4111111111111111","email":"alice@example.com","amount":12.5}"#;
    let out = s.paho(
        &PAYER,
        "5",
        "publish",
        &[
            "--topic",
            "payments/eu",
            "--qos",
            "1",
            "--count",
            "2",
            "--payload",
            payment,
        ],
    );
    assert_eq!(out["acked"], 2, "{out}");
    let parse = |v: &Value| -> Vec<Value> {
        messages(v)
            .iter()
            .map(|(_, p)| serde_json::from_str(p).unwrap_or_else(|_| Value::String(p.clone())))
            .collect()
    };
    let fraud = parse(&fraud.join().expect("fraud"));
    let analyst = parse(&analyst.join().expect("analyst"));
    let operator = parse(&operator.join().expect("operator"));
    assert_eq!(fraud.len(), 2);
    assert_eq!(analyst.len(), 2);
    assert_eq!(operator.len(), 2);
    // The broker holds a token (what the operator, with no reveal, gets); fraud gets the card
    // back; analysts get the token and no email.
    let token = operator[0]["card"].as_str().expect("card").to_owned();
    assert_ne!(token, "4111111111111111", "the broker saw the card number");
    assert_eq!(
        operator[1]["card"],
        token.as_str(),
        "equal values, equal tokens"
    );
    assert_eq!(operator[0]["email"], "alice@example.com");
    assert_eq!(fraud[0]["card"], "4111111111111111");
    assert_eq!(analyst[0]["card"], token.as_str());
    assert_ne!(analyst[0]["email"], "alice@example.com");

    let trail = s.daemon.audit_events();
    let transforms = events(&trail, "transform");
    assert!(transforms
        .iter()
        .any(|e| e["stage"] == "publish" && e["outcome"] == "masked"));
    assert!(transforms.iter().any(|e| e["stage"] == "delivery"
        && e["outcome"] == "revealed"
        && e["principal"] == FRAUD.id));
    // Each allowed message is in a decision with the bytes and digest of what went on.
    let decisions = events(&trail, "decision");
    let count = |api: &str, who: &str| -> u64 {
        decisions
            .iter()
            .filter(|e| e["api"] == api && e["principal"] == who && e["decision"] == "allow")
            .inspect(|e| {
                assert!(
                    e["digest"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("blake3:")),
                    "no digest: {e}"
                )
            })
            .map(|e| e["messages"].as_u64().unwrap_or(1))
            .sum()
    };
    assert_eq!(count("PUBLISH", PAYER.id), 2, "the two publishes");
    for who in [FRAUD.id, ANALYST.id, OPERATOR.id] {
        assert_eq!(count("DELIVERY", who), 2, "the two deliveries to {who}");
    }

    // `audit query` answers who read payments/eu.
    let out = Command::new(interceptor_bin())
        .args(["audit", "query"])
        .arg(s.daemon.audit_path())
        .args([
            "--topic",
            "payments/eu",
            "--event",
            "decision",
            "--format",
            "json",
        ])
        .output()
        .expect("audit query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for who in [PAYER.id, FRAUD.id, ANALYST.id, OPERATOR.id] {
        assert!(text.contains(who), "audit query misses {who}:\n{text}");
    }

    // The recording of the payer's session replays its PUBLISH packets, masked.
    let dir = s.work.join("recordings");
    let files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("recordings")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    let mut found = false;
    for file in files {
        let out = Command::new(interceptor_bin())
            .arg("replay")
            .arg(&file)
            .arg("--records")
            .output()
            .expect("replay");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("PUBLISH") && text.contains("payments/eu") && text.contains(PAYER.id) {
            assert!(
                !text.contains("4111111111111111"),
                "the recording holds the card:\n{text}"
            );
            assert!(
                !text.contains("eyJ"),
                "the recording holds a token:\n{text}"
            );
            found = true;
        }
    }
    assert!(found, "no recording of the payer's session");
}
