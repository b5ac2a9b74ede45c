//! Test fixtures: signing keys of every supported type, a minimal OIDC issuer over HTTP
//! whose key set can be changed (rotation) or taken down, and token/config builders.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_core08::OsRng;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::{
    config::{IdentityConfig, IssuerConfig},
    identity::TokenValidator,
};

pub const AUDIENCE: &str = "kafka";

/// RSA key generation is the slow part of these tests: two keys per test binary.
fn rsa_key(which: usize) -> &'static rsa::RsaPrivateKey {
    static KEYS: [OnceLock<rsa::RsaPrivateKey>; 2] = [OnceLock::new(), OnceLock::new()];
    KEYS[which].get_or_init(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA keygen"))
}

/// A private key that signs tokens, with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKey {
    /// The first shared RSA key, signing with `alg` (RS* or PS*).
    pub fn rsa(kid: &str, alg: Algorithm) -> Self {
        Self::rsa_from(rsa_key(0), kid, alg)
    }

    /// A second, different RSA key.
    pub fn other_rsa(kid: &str, alg: Algorithm) -> Self {
        Self::rsa_from(rsa_key(1), kid, alg)
    }

    fn rsa_from(key: &rsa::RsaPrivateKey, kid: &str, alg: Algorithm) -> Self {
        use rsa::{pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
        let der = key.to_pkcs1_der().expect("pkcs1");
        Self {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA",
                "kid": kid,
                "use": "sig",
                "n": b64(&key.n().to_bytes_be()),
                "e": b64(&key.e().to_bytes_be()),
            }),
        }
    }

    /// The first shared RSA key's public key, PKCS#1 DER: what an RS/HS confusion attack
    /// uses as the HMAC secret.
    pub fn rsa_public_der() -> Vec<u8> {
        use rsa::pkcs1::EncodeRsaPublicKey;
        rsa_key(0)
            .to_public_key()
            .to_pkcs1_der()
            .expect("pkcs1")
            .as_bytes()
            .to_vec()
    }

    pub fn p256(kid: &str) -> Self {
        use p256::{elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey};
        let secret = p256::SecretKey::random(&mut OsRng);
        let point = secret.public_key().to_encoded_point(false);
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(secret.to_pkcs8_der().expect("pkcs8").as_bytes()),
            jwk: json!({
                "kty": "EC",
                "crv": "P-256",
                "kid": kid,
                "x": b64(point.x().expect("x")),
                "y": b64(point.y().expect("y")),
            }),
        }
    }

    pub fn p384(kid: &str) -> Self {
        use p384::{elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey};
        let secret = p384::SecretKey::random(&mut OsRng);
        let point = secret.public_key().to_encoded_point(false);
        Self {
            kid: kid.into(),
            alg: Algorithm::ES384,
            encoding: EncodingKey::from_ec_der(secret.to_pkcs8_der().expect("pkcs8").as_bytes()),
            jwk: json!({
                "kty": "EC",
                "crv": "P-384",
                "kid": kid,
                "x": b64(point.x().expect("x")),
                "y": b64(point.y().expect("y")),
            }),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let secret = ed25519_dalek::SigningKey::generate(&mut OsRng);
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(secret.to_pkcs8_der().expect("pkcs8").as_bytes()),
            jwk: json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": kid,
                "x": b64(&secret.verifying_key().to_bytes()),
            }),
        }
    }

    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// Signs `claims` with a header naming this key's `kid` and `alg`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    pub fn sign_without_kid(&self, claims: &Value) -> String {
        self.sign_with(Header::new(self.alg), claims)
    }

    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims that pass every check for `issuer`.
pub fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now() + 300,
        "iat": now(),
        "groups": ["payments", "audit"],
    })
}

/// A compact JWS from raw JSON parts and signature text, for tokens no library would sign.
pub fn raw_token(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    )
}

/// Settings for tests: refreshes rare unless a test asks, generous staleness.
pub fn config(issuers: Vec<IssuerConfig>) -> IdentityConfig {
    IdentityConfig {
        clock_skew_secs: 30,
        jwks_refresh_secs: 300,
        jwks_min_refetch_secs: 30,
        jwks_max_stale_secs: 86_400,
        http_timeout_ms: 2_000,
        issuers,
        ..IdentityConfig::default()
    }
}

pub fn issuer_config(issuer: &str) -> IssuerConfig {
    IssuerConfig {
        issuer: issuer.into(),
        audiences: vec![AUDIENCE.into()],
        jwks_uri: None,
        algorithms: Vec::new(),
        principal_claim: "sub".into(),
        groups_claims: vec!["groups".into()],
    }
}

pub fn validator(config: &IdentityConfig) -> TokenValidator {
    TokenValidator::new(config).expect("valid identity config")
}

/// Polls until `done` or five seconds pass (then panics).
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Default)]
struct IdpState {
    jwks: Mutex<String>,
    /// What discovery says the issuer is; the real one unless a test lies.
    discovery_issuer: Mutex<Option<String>>,
    /// Answer 503 to everything.
    down: AtomicBool,
    /// Send bodies without Content-Length (read to EOF).
    no_length: AtomicBool,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
}

/// A minimal issuer: discovery at `{issuer}/.well-known/openid-configuration`, keys at
/// `{issuer}/jwks`.
pub struct Idp {
    pub issuer: String,
    state: Arc<IdpState>,
    server: JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Idp {
    pub async fn start(keys: &[&TestKey]) -> Self {
        Self::start_at("", keys).await
    }

    /// An issuer URL with a path, as Keycloak's realms have.
    pub async fn start_at(path: &str, keys: &[&TestKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = format!("http://{addr}{path}");
        let state = Arc::new(IdpState::default());
        let server = tokio::spawn(serve(listener, issuer.clone(), Arc::clone(&state)));
        let idp = Self {
            issuer,
            state,
            server,
        };
        idp.set_keys(keys);
        idp
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer.trim_end_matches('/'))
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        let jwks: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
        self.set_jwks(&json!({ "keys": jwks }));
    }

    pub fn set_jwks(&self, doc: &Value) {
        self.set_jwks_text(doc.to_string());
    }

    pub fn set_jwks_text(&self, text: String) {
        *self.state.jwks.lock().expect("lock") = text;
    }

    pub fn set_discovery_issuer(&self, issuer: &str) {
        *self.state.discovery_issuer.lock().expect("lock") = Some(issuer.into());
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn set_no_length(&self, no_length: bool) {
        self.state.no_length.store(no_length, Ordering::SeqCst);
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }
}

async fn serve(listener: TcpListener, issuer: String, state: Arc<IdpState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(answer(stream, issuer.clone(), Arc::clone(&state)));
    }
}

async fn answer(mut stream: TcpStream, issuer: String, state: Arc<IdpState>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 16 * 1024 {
            return;
        }
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split(' ').nth(1).unwrap_or("/").to_owned();

    let (status, body) = if path.ends_with("/.well-known/openid-configuration") {
        state.discovery_hits.fetch_add(1, Ordering::SeqCst);
        let named = state
            .discovery_issuer
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| issuer.clone());
        let doc = json!({
            "issuer": named,
            "jwks_uri": format!("{}/jwks", issuer.trim_end_matches('/')),
        });
        ("200 OK", doc.to_string())
    } else if path.ends_with("/jwks") {
        state.jwks_hits.fetch_add(1, Ordering::SeqCst);
        ("200 OK", state.jwks.lock().expect("lock").clone())
    } else {
        ("404 Not Found", "{}".to_owned())
    };
    let (status, body) = if state.down.load(Ordering::SeqCst) {
        ("503 Service Unavailable", "{}".to_owned())
    } else {
        (status, body)
    };
    let length = if state.no_length.load(Ordering::SeqCst) {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The address a closed port had: connecting to it is refused.
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}
