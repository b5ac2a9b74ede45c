//! End to end, identity: a real OIDC provider (panva's oidc-provider) issuing JWT access
//! tokens by the client-credentials grant, a broker (tansu with SQLite storage) that requires
//! SCRAM-SHA-256 from the interceptor's own user, the daemon steering 127.0.0.1:9092, and real
//! clients (librdkafka fetching its own tokens, kafka-python with a token provider, kcat, and
//! hand-made frames for what no client would send).
//!
//! Needs root and `cargo xtask deps` + `cargo xtask build`; fails loudly otherwise, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt,
    time::Duration,
};

use interceptor_e2e::{
    idp::{decode_jwt, Idp, IdpClient, AUDIENCE},
    kcat, require_kernel, run_client, start_interceptor, start_tansu_scram, wire, BrokerUser,
    DaemonConfig, Interceptor, Lib, Netns, Proc, WorkDir,
};
use serde_json::Value;

const BOOTSTRAP: &str = "127.0.0.1:9092";
const IDP: &str = "127.0.0.1:9400";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);
const TOPICS: &[&str] = &["orders", "rotation", "reauth"];

/// Drop order is field order: daemon, IdP, broker, files, namespace.
struct Stack {
    daemon: Interceptor,
    idp: Idp,
    _tansu: Proc,
    work: WorkDir,
    ns: Netns,
}

fn clients() -> Vec<IdpClient> {
    vec![
        IdpClient::new("orders-app", "orders-secret", &["payments", "writers"]),
        IdpClient::new("short-lived", "short-secret", &["batch"]).ttl(8),
    ]
}

fn stack(name: &str) -> Stack {
    let ns = Netns::new("itest-id").expect("netns");
    let work = WorkDir::new(name).expect("work dir");
    let broker: SocketAddr = BOOTSTRAP.parse().unwrap();
    let user = BrokerUser {
        name: "interceptor".into(),
        password: "broker-side-secret".into(),
    };
    let tansu = start_tansu_scram(&ns, broker, &work, &user, TOPICS)
        .unwrap_or_else(|e| panic!("tansu: {e:#}"));
    let idp = Idp::start(&ns, IDP.parse().unwrap(), work.path(), &clients())
        .unwrap_or_else(|e| panic!("idp: {e:#}"));
    let secrets = work.join("secrets.toml");
    fs::write(
        &secrets,
        format!(
            "username = \"{}\"\npassword = \"{}\"\n",
            user.name, user.password
        ),
    )
    .unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).unwrap();
    let config = DaemonConfig::kafka(&[broker])
        .listener_settings("sasl_mechanisms = [\"OAUTHBEARER\"]\n")
        .extra(&format!(
            "[identity]\nclock_skew_secs = 1\njwks_min_refetch_secs = 1\n\
             [[identity.issuer]]\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n\
             [upstream_auth]\nmechanism = \"scram-sha-256\"\nsecrets_file = \"{}\"\n",
            idp.issuer(),
            secrets.display()
        ));
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
    fn oidc_args(&self, client: &str, secret: &str) -> Vec<String> {
        vec![
            "--oidc-token-url".into(),
            self.idp.token_endpoint(),
            "--oidc-client-id".into(),
            client.into(),
            "--oidc-client-secret".into(),
            secret.into(),
        ]
    }

    /// Runs a client script; returns its summary, or its failure (exit code and output).
    fn try_client(&self, lib: Lib, op: &str, args: &[String]) -> anyhow::Result<Value> {
        let mut all: Vec<&str> = vec![op, "--bootstrap", BOOTSTRAP, "--timeout", "60"];
        all.extend(args.iter().map(String::as_str));
        run_client(&self.ns, lib, &all, CLIENT_TIMEOUT)
    }

    fn client(&self, lib: Lib, op: &str, args: &[String]) -> Value {
        match self.try_client(lib, op, args) {
            Ok(v) => {
                eprintln!("{} {op}: {v}", lib.name());
                v
            }
            Err(e) => panic!("{e:#}\n{}", self.daemon.log_tail(60)),
        }
    }

    fn token(&self, client: &str, secret: &str) -> String {
        self.idp
            .fetch_token(&self.ns, client, secret)
            .unwrap_or_else(|e| panic!("token for {client}: {e:#}"))
    }

    fn connect(&self) -> TcpStream {
        let addr: SocketAddr = BOOTSTRAP.parse().unwrap();
        self.ns
            .run(move || {
                wire::connect_from("127.0.0.1:0".parse().unwrap(), addr, Duration::from_secs(5)).1
            })
            .expect("connect to the protected address")
    }

    /// The audit events, once one matches `want` (or after 5 s, for the assertion to fail).
    fn events_once(&self, want: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut events = Vec::new();
        for _ in 0..100 {
            events = self.daemon.audit_events();
            if events.iter().any(&want) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        events
    }

    /// Authentication events, once at least `n` are written.
    fn authentications(&self, n: usize) -> Vec<Value> {
        let mut found = Vec::new();
        for _ in 0..100 {
            found = self
                .daemon
                .audit_events()
                .into_iter()
                .filter(|e| e["event"] == "authentication")
                .collect();
            if found.len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        found
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_broker_takes_only_the_interceptors_credentials_and_oidc_clients_get_through() {
    if !require_kernel() {
        return;
    }
    let s = stack("id-happy");
    // The daemon reaches the broker with its own SCRAM user; clients bring OIDC tokens.
    let mut produce = s.oidc_args("orders-app", "orders-secret");
    produce.extend(args(&[
        "--topic", "orders", "--seed", "id1", "--count", "200", "--size", "300", "--codec", "lz4",
    ]));
    let v = s.client(Lib::Confluent, "produce", &produce);
    assert_eq!(v["produced"], 200, "{v}");

    let mut consume = s.oidc_args("orders-app", "orders-secret");
    consume.extend(args(&[
        "--topic", "orders", "--seed", "id1", "--count", "200", "--size", "300",
    ]));
    let v = s.client(Lib::KafkaPython, "consume", &consume);
    assert_eq!(v["consumed"], 200, "{v}");

    // kcat: librdkafka's own OIDC client-credentials flow.
    let token_url = format!(
        "sasl.oauthbearer.token.endpoint.url={}",
        s.idp.token_endpoint()
    );
    let listing = kcat(
        &s.ns,
        &[
            "-b",
            BOOTSTRAP,
            "-L",
            "-m",
            "30",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=OAUTHBEARER",
            "-X",
            "sasl.oauthbearer.method=oidc",
            "-X",
            "sasl.oauthbearer.client.id=orders-app",
            "-X",
            "sasl.oauthbearer.client.secret=orders-secret",
            "-X",
            &token_url,
        ],
        CLIENT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.daemon.log_tail(40)));
    assert!(listing.contains("topic \"orders\""), "{listing}");

    let auths = s.authentications(3);
    let ok: Vec<_> = auths.iter().filter(|e| e["outcome"] == "success").collect();
    assert!(ok.len() >= 3, "{auths:#?}");
    for e in &ok {
        assert_eq!(e["principal"], "orders-app", "{e}");
        assert_eq!(e["mechanism"], "OAUTHBEARER");
        assert_eq!(e["issuer"], s.idp.issuer());
        assert_eq!(e["groups"], serde_json::json!(["payments", "writers"]));
        assert!(
            e["token_sha256"].as_str().is_some_and(|h| h.len() == 64),
            "{e}"
        );
        assert!(e["session_expires"].is_string(), "{e}");
    }
    let closes: Vec<_> = s
        .daemon
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "connection_close" && e["principal"] == "orders-app")
        .collect();
    assert!(!closes.is_empty(), "closes name the principal");
    // No audit event carries a token.
    let audit = s.daemon.audit_text();
    let token = s.token("orders-app", "orders-secret");
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !audit.contains(signature),
        "a token reached the audit trail"
    );
    assert!(!audit.contains("broker-side-secret"));
}

#[test]
fn the_broker_refuses_clients_that_bypass_the_interceptor() {
    if !require_kernel() {
        return;
    }
    let s = stack("id-bypass");
    // With the daemon detached, connections reach the broker directly: it wants SCRAM, and no
    // client has the interceptor's credentials.
    let mut daemon = s.daemon;
    daemon.stop().unwrap();
    daemon.detach().unwrap();
    let v = run_client(
        &s.ns,
        Lib::Confluent,
        &[
            "produce",
            "--bootstrap",
            BOOTSTRAP,
            "--timeout",
            "15",
            "--topic",
            "orders",
            "--count",
            "1",
        ],
        CLIENT_TIMEOUT,
    );
    assert!(
        v.is_err(),
        "a client without credentials produced to the broker: {v:?}"
    );
}

#[test]
fn bad_tokens_and_early_requests_are_refused_with_an_authentication_error() {
    if !require_kernel() {
        return;
    }
    let s = stack("id-bad");
    let good = s.token("orders-app", "orders-secret");
    let (header, payload) = decode_jwt(&good).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |v: &Value| base64url(v.to_string().as_bytes());
    // alg none, with the same claims and no signature.
    let mut none_header = header.clone();
    none_header["alg"] = "none".into();
    let alg_none = format!("{}.{}.", b64(&none_header), parts[1]);
    // Claims changed under the original signature.
    let mut forged = payload.clone();
    forged["groups"] = serde_json::json!(["admins"]);
    let tampered = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
    // A token of an issuer the interceptor does not trust (same software, another port).
    let other_dir = s.work.join("other");
    fs::create_dir_all(&other_dir).unwrap();
    let other = Idp::start(
        &s.ns,
        "127.0.0.1:9401".parse().unwrap(),
        &other_dir,
        &clients(),
    )
    .unwrap_or_else(|e| panic!("second idp: {e:#}"));
    let foreign = other
        .fetch_token(&s.ns, "orders-app", "orders-secret")
        .unwrap();
    // A token past its expiry (8 s tokens; skew 1 s).
    let short = s.token("short-lived", "short-secret");

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", alg_none, "alg_none"),
        ("tampered claims", tampered, "bad_signature"),
        ("foreign issuer", foreign, "unknown_issuer"),
        ("garbage", "not-a-jwt".into(), "malformed"),
        ("oversized", "a".repeat(9000), "token_too_large"),
    ];
    for (what, token, reason) in &cases {
        let mut stream = s.connect();
        let answer = wire::oauthbearer(&mut stream, 1, token).unwrap();
        assert_eq!(answer.error_code, 58, "{what}: {answer:?}");
        assert!(answer.error_message.is_some(), "{what}");
        assert!(
            wire::is_closed(&mut stream),
            "{what}: connection closed after the error"
        );
        let events = s.authentications(1);
        assert!(
            events
                .iter()
                .any(|e| e["outcome"] == "failure" && e["reason"] == *reason),
            "{what}: no failure with reason {reason}: {events:#?}"
        );
    }
    // Empty token: refused by the OAUTHBEARER parser.
    let mut stream = s.connect();
    let answer = wire::oauthbearer(&mut stream, 1, "").unwrap();
    assert_eq!(answer.error_code, 58);

    // Before authentication: ApiVersions passes, Metadata closes the connection.
    let mut stream = s.connect();
    assert!(
        wire::metadata_round_trip(&mut stream, 5).is_err(),
        "metadata before auth"
    );
    // A second handshake in one exchange, and a mechanism the listener does not offer.
    let mut stream = s.connect();
    assert_eq!(
        wire::handshake(&mut stream, 1, "OAUTHBEARER")
            .unwrap()
            .error_code,
        0
    );
    assert_eq!(
        wire::handshake(&mut stream, 2, "OAUTHBEARER")
            .unwrap()
            .error_code,
        34
    );
    let mut stream = s.connect();
    let refused = wire::handshake(&mut stream, 1, "PLAIN").unwrap();
    assert_eq!(refused.error_code, 33);
    assert_eq!(refused.mechanisms, vec!["OAUTHBEARER".to_owned()]);

    // A real client with a bad token reports an authentication failure (not a timeout).
    let token_file = s.work.join("bad-token");
    fs::write(&token_file, &cases[1].1).unwrap();
    let err = s
        .try_client(
            Lib::Confluent,
            "admin",
            &args(&["--sasl-token-file", token_file.to_str().unwrap()]),
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("authentication"), "{err:#}");

    // Expired.
    std::thread::sleep(Duration::from_secs(10));
    let mut stream = s.connect();
    let answer = wire::oauthbearer(&mut stream, 1, &short).unwrap();
    assert_eq!(answer.error_code, 58, "expired: {answer:?}");

    let events = s.events_once(|e| e["event"] == "authentication" && e["reason"] == "expired");
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "request_refused" && e["reason"] == "unauthenticated")
        .collect();
    assert!(!refused.is_empty(), "metadata before auth is audited");
    assert!(events
        .iter()
        .any(|e| e["event"] == "authentication" && e["reason"] == "expired"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "authentication" && e["reason"] == "second_handshake"));
}

#[test]
fn key_rotation_and_short_lived_tokens_keep_sessions_working() {
    if !require_kernel() {
        return;
    }
    let mut s = stack("id-rotate");
    let before = s.token("orders-app", "orders-secret");
    let mut stream = s.connect();
    assert_eq!(
        wire::oauthbearer(&mut stream, 1, &before)
            .unwrap()
            .error_code,
        0
    );
    assert!(wire::metadata_round_trip(&mut stream, 3).is_ok());

    // The IdP signs with a new key: new sessions work (the daemon refetches on the unknown
    // kid), and once the old key is retired, the next refresh drops it.
    s.idp.rotate().unwrap();
    let after = s.token("orders-app", "orders-secret");
    let kid = |t: &str| decode_jwt(t).unwrap().0["kid"].clone();
    assert_ne!(kid(&before), kid(&after));
    let mut stream = s.connect();
    let answer = wire::oauthbearer(&mut stream, 1, &after).unwrap();
    assert_eq!(answer.error_code, 0, "token of the rotated key: {answer:?}");
    let mut produce = s.oidc_args("orders-app", "orders-secret");
    produce.extend(args(&[
        "--topic", "rotation", "--seed", "rot", "--count", "20",
    ]));
    assert_eq!(
        s.client(Lib::Confluent, "produce", &produce)["produced"],
        20
    );

    // Re-authentication on one connection (KIP-368): a short-lived token, the lifetime in
    // the answer, a fresh token before it ends, and the session goes on past the first expiry.
    let mut stream = s.connect();
    let first = s.token("short-lived", "short-secret");
    let answer = wire::oauthbearer(&mut stream, 1, &first).unwrap();
    assert_eq!(answer.error_code, 0);
    assert!(
        (1..=8_000).contains(&answer.session_lifetime_ms),
        "lifetime {answer:?}"
    );
    std::thread::sleep(Duration::from_secs(4));
    let second = s.token("short-lived", "short-secret");
    let answer = wire::oauthbearer(&mut stream, 10, &second).unwrap();
    assert_eq!(answer.error_code, 0, "re-authentication: {answer:?}");
    std::thread::sleep(Duration::from_secs(6)); // past the first token's expiry
    assert!(
        wire::metadata_round_trip(&mut stream, 20).is_ok(),
        "session continued"
    );
    // Not re-authenticating: closed on the next request after expiry, and audited.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        wire::metadata_round_trip(&mut stream, 21).is_err(),
        "expired session closed"
    );
    let events = s.events_once(|e| e["event"] == "request_refused");
    assert!(events.iter().any(|e| e["event"] == "request_refused"
        && e["reason"] == "session_expired"
        && e["principal"] == "short-lived"));
    assert!(events.iter().any(|e| e["event"] == "authentication"
        && e["principal"] == "short-lived"
        && e["reauthentication"] == true));

    // librdkafka re-authenticates by itself: a producer holding one connection for 20 s
    // with 8 s tokens keeps producing, and its session is never closed for expiry.
    let mut produce = s.oidc_args("short-lived", "short-secret");
    produce.extend(args(&[
        "--topic",
        "reauth",
        "--seed",
        "re",
        "--count",
        "20",
        "--interval",
        "1",
    ]));
    assert_eq!(
        s.client(Lib::Confluent, "produce", &produce)["produced"],
        20
    );
    let events = s.events_once(|e| {
        e["event"] == "connection_close"
            && e["principal"] == "short-lived"
            && e["reason"] != "session_expired"
    });
    let reauths = events
        .iter()
        .filter(|e| {
            e["event"] == "authentication"
                && e["principal"] == "short-lived"
                && e["outcome"] == "success"
                && e["reauthentication"] == true
        })
        .count();
    assert!(reauths >= 2, "librdkafka re-authenticated {reauths} times");
    let expired_closes = events
        .iter()
        .filter(|e| e["event"] == "connection_close" && e["reason"] == "session_expired")
        .count();
    assert_eq!(
        expired_closes, 1,
        "only the hand-made session above expired"
    );
}

fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
