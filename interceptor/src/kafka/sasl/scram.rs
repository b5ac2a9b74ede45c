//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), both sides:
//!
//! - [`ScramServer`] authenticates clients against stored [`ScramCredential`]s (the salted
//!   form; the interceptor never stores passwords).
//! - [`ScramClient`] is the interceptor's own login to the broker.
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt b64>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<proof b64>
//! server-final  v=<server signature b64>        (or e=<error>)
//! ```
//!
//! Choices that matter for security:
//! - An unknown user still gets a plausible server-first (a salt derived from the username
//!   and a per-process secret, so it is stable across attempts) and fails at client-final with
//!   the very error a wrong password gets: usernames cannot be probed.
//! - Proofs and signatures are compared in constant time (`subtle`).
//! - Every message is bounded in size before it is parsed; iteration counts from a server are
//!   bounded (4096 to 1 000 000), so a hostile broker cannot make us spin.
//! - Channel binding (`p=`) is refused: a plaintext or proxy-terminated connection has none.
//!   The `c=` attribute must be the base64 of the client's own GS2 header (`biws` for `n,,`,
//!   `eSws` for `y,,`).
//! - Like Kafka, usernames and passwords are used as UTF-8 without SASLprep.
//! - Like Kafka, the `tokenauth` extension (delegation tokens) is refused, and an authzid must
//!   equal the username.

use std::{fmt, str::FromStr, sync::OnceLock};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use super::{oauthbearer::unescape_saslname, printable, Mechanism, SaslError};

/// Kafka's minimum (and default) iteration count.
pub const MIN_ITERATIONS: u32 = 4096;
/// An iteration count above this is refused: it would only serve to burn CPU.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// A client's SCRAM message longer than this is refused before it is parsed.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 1024;
/// A server's SCRAM message longer than this is refused before it is parsed.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 4096;
/// Salt length of generated credentials.
pub const SALT_BYTES: usize = 16;
/// Random bytes in each nonce (base64-encoded on the wire).
const NONCE_BYTES: usize = 24;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub fn name(self) -> &'static str {
        Mechanism::from(self).name()
    }

    /// `SCRAM-SHA-256` or `SCRAM-SHA-512` (exact, case-sensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Mechanism::parse(name).and_then(Mechanism::scram)
    }

    /// Length of the hash output, and so of keys, proofs and signatures.
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of every length: `new_from_slice` cannot fail.
        match self {
            ScramMechanism::Sha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                parts.iter().for_each(|p| mac.update(p));
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                parts.iter().for_each(|p| mac.update(p));
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, i) = PBKDF2 with HMAC of this hash.
    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.hash_len()];
        match self {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out)
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out)
            }
        }
        out
    }

    /// (ClientKey, ServerKey) from a salted password.
    fn keys(self, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (
            self.hmac(salted_password, &[b"Client Key"]),
            self.hmac(salted_password, &[b"Server Key"]),
        )
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<ScramMechanism> for Mechanism {
    fn from(m: ScramMechanism) -> Self {
        match m {
            ScramMechanism::Sha256 => Mechanism::ScramSha256,
            ScramMechanism::Sha512 => Mechanism::ScramSha512,
        }
    }
}

impl TryFrom<Mechanism> for ScramMechanism {
    type Error = Mechanism;

    /// The SCRAM hash of a SCRAM mechanism; the mechanism itself back otherwise.
    fn try_from(m: Mechanism) -> Result<Self, Mechanism> {
        m.scram().ok_or(m)
    }
}

/// A user's stored SCRAM credential: what the server needs, from which the password cannot be
/// recovered (short of guessing it). Written as
/// `SCRAM-SHA-256:<iterations>:<salt b64>:<stored key b64>:<server key b64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// A credential for `password` with a fresh random 16-byte salt. `iterations` is clamped to
    /// 4096..=1 000 000 (what [`FromStr`] accepts).
    pub fn generate(mechanism: ScramMechanism, password: &str, iterations: u32) -> Self {
        let mut salt = vec![0; SALT_BYTES];
        rand::rng().fill_bytes(&mut salt);
        Self::with_salt(mechanism, password, &salt, iterations)
    }

    /// A credential for `password` with the given salt (test vectors, migrations).
    /// `iterations` is clamped to 4096..=1 000 000.
    pub fn with_salt(
        mechanism: ScramMechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let iterations = iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS);
        let salted = mechanism.salted_password(password, salt, iterations);
        let (client_key, server_key) = mechanism.keys(&salted);
        Self {
            mechanism,
            iterations,
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key,
        }
    }

    /// Whether `password` is this credential's password (PLAIN against a SCRAM credential).
    /// Costs one PBKDF2 of `iterations`; compares in constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let salted = self
            .mechanism
            .salted_password(password, &self.salt, self.iterations);
        let (client_key, server_key) = self.mechanism.keys(&salted);
        let stored_key = self.mechanism.hash(&client_key);
        let ok = stored_key.ct_eq(&self.stored_key) & server_key.ct_eq(&self.server_key);
        ok.into()
    }
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}:{}",
            self.mechanism,
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }
}

impl FromStr for ScramCredential {
    type Err = SaslError;

    fn from_str(s: &str) -> Result<Self, SaslError> {
        let invalid = |reason: &str| SaslError::InvalidCredential(reason.to_owned());
        let parts: Vec<&str> = s.split(':').collect();
        let [mechanism, iterations, salt, stored_key, server_key] = parts[..] else {
            return Err(invalid(
                "expected SCRAM-SHA-256|SCRAM-SHA-512:<iterations>:<salt>:<stored key>:<server key>",
            ));
        };
        let mechanism = ScramMechanism::parse(mechanism)
            .ok_or_else(|| invalid("mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| invalid("iterations is not a number"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(SaslError::InvalidCredential(format!(
                "iterations {iterations} is outside {MIN_ITERATIONS} to {MAX_ITERATIONS}"
            )));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| invalid("salt is not base64"))?;
        if salt.is_empty() {
            return Err(invalid("salt is empty"));
        }
        let key = |text: &str, name: &str| {
            let key = B64
                .decode(text)
                .map_err(|_| SaslError::InvalidCredential(format!("{name} is not base64")))?;
            if key.len() != mechanism.hash_len() {
                return Err(SaslError::InvalidCredential(format!(
                    "{name} is {} bytes, {mechanism} needs {}",
                    key.len(),
                    mechanism.hash_len()
                )));
            }
            Ok(key)
        };
        Ok(Self {
            mechanism,
            iterations,
            stored_key: key(stored_key, "stored key")?,
            server_key: key(server_key, "server key")?,
            salt,
        })
    }
}

/// A random nonce: base64 of 24 random bytes (printable, no ',').
fn random_nonce() -> String {
    let mut bytes = [0; NONCE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// The per-process secret unknown users' fake salts are derived from.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0; 32];
        rand::rng().fill_bytes(&mut secret);
        secret
    })
}

/// RFC 5802 nonce characters: printable ASCII except ','.
fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// RFC 5802 saslname escaping: ',' → `=2C`, '=' → `=3D`.
fn escape_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn check_size<'a>(msg: &'a [u8], what: &'static str, max: usize) -> Result<&'a str, SaslError> {
    if msg.len() > max {
        return Err(SaslError::TooLarge {
            what,
            len: msg.len(),
            max,
        });
    }
    std::str::from_utf8(msg).map_err(|_| SaslError::malformed(what, "not UTF-8"))
}

/// The value of attribute `name` (`name=value`), or an error naming what was expected.
fn attribute<'a>(
    part: Option<&'a str>,
    name: char,
    what: &'static str,
) -> Result<&'a str, SaslError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or_else(|| SaslError::malformed(what, format!("expected attribute {name}=")))
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

const CLIENT_FIRST: &str = "SCRAM client-first message";
const CLIENT_FINAL: &str = "SCRAM client-final message";
const SERVER_FIRST: &str = "SCRAM server-first message";
const SERVER_FINAL: &str = "SCRAM server-final message";

/// Server side of one SCRAM exchange: `client_first`, then `client_final`.
pub struct ScramServer {
    mechanism: ScramMechanism,
    unknown_user_iterations: u32,
    /// Test hook: a fixed server nonce instead of a random one.
    server_nonce: Option<String>,
    state: ServerState,
}

enum ServerState {
    Initial,
    ServerFirstSent(Box<ServerFirstSent>),
    Finished,
}

struct ServerFirstSent {
    username: String,
    /// Whether the user exists; when not, the keys below are fake and never verify.
    known: bool,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
    /// The base64 of the client's GS2 header: what `c=` must be.
    channel_binding: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            ServerState::Initial => "initial",
            ServerState::ServerFirstSent(_) => "server-first sent",
            ServerState::Finished => "finished",
        };
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("state", &state)
            .finish()
    }
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> Self {
        Self {
            mechanism,
            unknown_user_iterations: MIN_ITERATIONS,
            server_nonce: None,
            state: ServerState::Initial,
        }
    }

    /// The iteration count shown to unknown users (default 4096, Kafka's default): set it to
    /// what real credentials use, so it does not tell unknown users apart.
    pub fn with_unknown_user_iterations(mut self, iterations: u32) -> Self {
        self.unknown_user_iterations = iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS);
        self
    }

    /// A server whose nonce part is fixed (test vectors only).
    #[cfg(test)]
    pub(crate) fn with_server_nonce(mechanism: ScramMechanism, nonce: &str) -> Self {
        Self {
            server_nonce: Some(nonce.to_owned()),
            ..Self::new(mechanism)
        }
    }

    /// Reads the client-first message and answers with the server-first message. `lookup`
    /// gives the user's credential for this mechanism; an unknown user (or a credential of the
    /// other hash) still gets a plausible answer and fails only at [`Self::client_final`].
    pub fn client_first(
        &mut self,
        msg: &[u8],
        lookup: impl Fn(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, SaslError> {
        if !matches!(self.state, ServerState::Initial) {
            return Err(SaslError::IllegalState(
                "client-first message already received",
            ));
        }
        self.state = ServerState::Finished; // until it succeeds
        let text = check_size(msg, CLIENT_FIRST, MAX_CLIENT_MESSAGE_BYTES)?;
        let malformed = |reason: &str| SaslError::malformed(CLIENT_FIRST, reason);

        // GS2 header: "n,," / "y,," / "n,a=<authzid>,"; "p=" is channel binding.
        let (flag, rest) = text
            .split_once(',')
            .ok_or_else(|| malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => return Err(SaslError::ChannelBindingNotSupported),
            _ => return Err(malformed("GS2 header flag is not \"n\" or \"y\"")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| malformed("GS2 header is not terminated by ','"))?;
        let authzid = match authzid {
            "" => None,
            a => Some(
                a.strip_prefix("a=")
                    .and_then(unescape_saslname)
                    .ok_or_else(|| malformed("invalid authzid"))?,
            ),
        };
        let gs2_header_len = text.len() - bare.len();
        let gs2_header = text.get(..gs2_header_len).unwrap_or_default();

        let mut attributes = bare.split(',');
        let first = attributes.next();
        if first.is_some_and(|a| a.starts_with("m=")) {
            return Err(malformed("mandatory extension (m=) is not supported"));
        }
        let username = attribute(first, 'n', CLIENT_FIRST)?;
        let username = unescape_saslname(username).ok_or_else(|| malformed("invalid username"))?;
        let client_nonce = attribute(attributes.next(), 'r', CLIENT_FIRST)?;
        if !is_nonce(client_nonce) {
            return Err(malformed("nonce is empty or not printable ASCII"));
        }
        for extension in attributes {
            let (key, value) = extension
                .split_once('=')
                .ok_or_else(|| malformed("extension without '='"))?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(malformed("extension name is not alphabetic"));
            }
            if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
                return Err(malformed("delegation tokens (tokenauth) are not supported"));
            }
        }
        if authzid.as_ref().is_some_and(|a| *a != username) {
            // Kafka refuses the same way: no acting as someone else.
            return Err(malformed("authorization id differs from the username"));
        }

        let credential = lookup(&username).filter(|c| c.mechanism == self.mechanism);
        let known = credential.is_some();
        let credential = credential.unwrap_or_else(|| self.fake_credential(&username));
        let nonce = format!(
            "{client_nonce}{}",
            self.server_nonce.clone().unwrap_or_else(random_nonce)
        );
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = ServerState::ServerFirstSent(Box::new(ServerFirstSent {
            username,
            known,
            stored_key: credential.stored_key,
            server_key: credential.server_key,
            channel_binding: B64.encode(gs2_header),
            nonce,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
        }));
        Ok(server_first.into_bytes())
    }

    /// What an unknown user is shown: a salt that is stable for the username (within this
    /// process) and keys that never verify.
    fn fake_credential(&self, username: &str) -> ScramCredential {
        let derive = |label: &[u8]| {
            ScramMechanism::Sha256.hmac(
                process_secret(),
                &[
                    label,
                    self.mechanism.name().as_bytes(),
                    b"\0",
                    username.as_bytes(),
                ],
            )
        };
        let mut salt = derive(b"salt");
        salt.truncate(SALT_BYTES);
        let mut stored_key = [derive(b"stored-key"), derive(b"stored-key-2")].concat();
        stored_key.truncate(self.mechanism.hash_len());
        let mut server_key = [derive(b"server-key"), derive(b"server-key-2")].concat();
        server_key.truncate(self.mechanism.hash_len());
        ScramCredential {
            mechanism: self.mechanism,
            iterations: self.unknown_user_iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// Reads the client-final message, verifies the proof, and returns the authenticated
    /// username and the server-final message. Unknown user and wrong password fail alike with
    /// [`SaslError::InvalidCredentials`].
    pub fn client_final(&mut self, msg: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
        let state = match std::mem::replace(&mut self.state, ServerState::Finished) {
            ServerState::ServerFirstSent(state) => state,
            ServerState::Initial => {
                return Err(SaslError::IllegalState("client-final before client-first"))
            }
            ServerState::Finished => {
                return Err(SaslError::IllegalState("SCRAM exchange already finished"))
            }
        };
        let text = check_size(msg, CLIENT_FINAL, MAX_CLIENT_MESSAGE_BYTES)?;
        let malformed = |reason: &str| SaslError::malformed(CLIENT_FINAL, reason);

        // The proof is the last attribute, and base64 has no ','.
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or_else(|| malformed("expected c=..,r=..,p=.."))?;
        let proof = attribute(Some(proof), 'p', CLIENT_FINAL)?;
        let mut attributes = without_proof.split(',');
        let channel_binding = attribute(attributes.next(), 'c', CLIENT_FINAL)?;
        if channel_binding != state.channel_binding {
            return Err(malformed(
                "channel binding (c=) does not match the GS2 header of the client-first message",
            ));
        }
        let nonce = attribute(attributes.next(), 'r', CLIENT_FINAL)?;
        if nonce != state.nonce {
            return Err(malformed(
                "nonce (r=) is not the one from the server-first message",
            ));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| malformed("proof (p=) is not base64"))?;

        let auth_message = format!(
            "{},{},{without_proof}",
            state.client_first_bare, state.server_first
        );
        let m = self.mechanism;
        let client_signature = m.hmac(&state.stored_key, &[auth_message.as_bytes()]);
        let client_key = xor(&proof, &client_signature);
        let length_ok = Choice::from(u8::from(proof.len() == m.hash_len()));
        let proof_ok = m.hash(&client_key).ct_eq(&state.stored_key);
        let known = Choice::from(u8::from(state.known));
        if !bool::from(length_ok & proof_ok & known) {
            return Err(SaslError::InvalidCredentials);
        }
        let server_signature = m.hmac(&state.server_key, &[auth_message.as_bytes()]);
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok((state.username, server_final.into_bytes()))
    }
}

/// Client side of one SCRAM exchange: `client_first`, `server_first`, `server_final`.
pub struct ScramClient {
    mechanism: ScramMechanism,
    username: String,
    password: String,
    client_nonce: String,
    /// The server signature expected in server-final, once client-final is built.
    server_signature: Option<Vec<u8>>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, username: &str, password: &str) -> Self {
        Self::with_nonce(mechanism, username, password, &random_nonce())
    }

    /// A client with a fixed nonce (test vectors only).
    pub(crate) fn with_nonce(
        mechanism: ScramMechanism,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> Self {
        Self {
            mechanism,
            username: username.to_owned(),
            password: password.to_owned(),
            client_nonce: nonce.to_owned(),
            server_signature: None,
        }
    }

    fn client_first_bare(&self) -> String {
        format!(
            "n={},r={}",
            escape_saslname(&self.username),
            self.client_nonce
        )
    }

    /// The client-first message: `n,,n=<user>,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    /// Reads the server-first message and returns the client-final message. Refuses a nonce
    /// that does not extend ours and an iteration count outside 4096..=1 000 000.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        let text = check_size(msg, SERVER_FIRST, MAX_SERVER_MESSAGE_BYTES)?;
        let malformed = |reason: &str| SaslError::malformed(SERVER_FIRST, reason);
        if let Some(error) = text.strip_prefix("e=") {
            return Err(SaslError::ServerError(printable(error, 200)));
        }
        let mut attributes = text.split(',');
        let first = attributes.next();
        if first.is_some_and(|a| a.starts_with("m=")) {
            return Err(malformed("mandatory extension (m=) is not supported"));
        }
        let nonce = attribute(first, 'r', SERVER_FIRST)?;
        if !is_nonce(nonce) {
            return Err(malformed("nonce is empty or not printable ASCII"));
        }
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(malformed("server nonce does not extend the client nonce"));
        }
        let salt = attribute(attributes.next(), 's', SERVER_FIRST)?;
        let salt = B64
            .decode(salt)
            .map_err(|_| malformed("salt (s=) is not base64"))?;
        if salt.is_empty() {
            return Err(malformed("empty salt"));
        }
        let iterations = attribute(attributes.next(), 'i', SERVER_FIRST)?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| malformed("iteration count (i=) is not a number"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(SaslError::IterationCount(iterations));
        }
        // Extensions after i= are allowed and ignored (RFC 5802 section 7).

        let m = self.mechanism;
        let salted = m.salted_password(&self.password, &salt, iterations);
        let (client_key, server_key) = m.keys(&salted);
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}"); // biws = base64("n,,")
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare());
        let client_signature = m.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof = xor(&client_key, &client_signature);
        self.server_signature = Some(m.hmac(&server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Verifies the server-final message: the server proves it knows the credential. An
    /// `e=` error is reported as [`SaslError::ServerError`].
    pub fn server_final(&self, msg: &[u8]) -> Result<(), SaslError> {
        let expected = self
            .server_signature
            .as_ref()
            .ok_or(SaslError::IllegalState("server-final before server-first"))?;
        let text = check_size(msg, SERVER_FINAL, MAX_SERVER_MESSAGE_BYTES)?;
        let first = text.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(SaslError::ServerError(printable(error, 200)));
        }
        let signature = attribute(Some(first), 'v', SERVER_FINAL)?;
        let signature = B64
            .decode(signature)
            .map_err(|_| SaslError::malformed(SERVER_FINAL, "signature (v=) is not base64"))?;
        if bool::from(signature.ct_eq(expected)) {
            Ok(())
        } else {
            Err(SaslError::ServerSignatureMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "user";
    const PASSWORD: &str = "pencil";
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    // RFC 7677 section 3.
    const CLIENT_FIRST_MSG: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST_MSG: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL_MSG: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL_MSG: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> ScramCredential {
        ScramCredential::with_salt(
            ScramMechanism::Sha256,
            PASSWORD,
            &B64.decode(SALT).unwrap(),
            4096,
        )
    }

    fn lookup_one(credential: ScramCredential) -> impl Fn(&str) -> Option<ScramCredential> {
        move |name| (name == USER).then(|| credential.clone())
    }

    #[test]
    fn rfc7677_client() {
        let mut client =
            ScramClient::with_nonce(ScramMechanism::Sha256, USER, PASSWORD, CLIENT_NONCE);
        assert_eq!(client.client_first(), CLIENT_FIRST_MSG.as_bytes());
        let client_final = client.server_first(SERVER_FIRST_MSG.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(client_final).unwrap(), CLIENT_FINAL_MSG);
        client.server_final(SERVER_FINAL_MSG.as_bytes()).unwrap();
    }

    #[test]
    fn rfc7677_server() {
        let mut server = ScramServer::with_server_nonce(ScramMechanism::Sha256, SERVER_NONCE);
        let server_first = server
            .client_first(CLIENT_FIRST_MSG.as_bytes(), lookup_one(rfc_credential()))
            .unwrap();
        assert_eq!(String::from_utf8(server_first).unwrap(), SERVER_FIRST_MSG);
        let (user, server_final) = server.client_final(CLIENT_FINAL_MSG.as_bytes()).unwrap();
        assert_eq!(user, USER);
        assert_eq!(String::from_utf8(server_final).unwrap(), SERVER_FINAL_MSG);
        // One exchange per server.
        assert!(matches!(
            server.client_final(CLIENT_FINAL_MSG.as_bytes()),
            Err(SaslError::IllegalState(_))
        ));
    }

    /// Runs a whole exchange; the username the server authenticated.
    fn exchange(
        mechanism: ScramMechanism,
        username: &str,
        password: &str,
        stored: &ScramCredential,
    ) -> Result<String, SaslError> {
        let mut client = ScramClient::new(mechanism, username, password);
        let mut server = ScramServer::new(mechanism);
        let wanted = username.to_owned();
        let stored = stored.clone();
        let server_first = server.client_first(&client.client_first(), |u| {
            (u == wanted).then(|| stored.clone())
        })?;
        let client_final = client.server_first(&server_first)?;
        let (user, server_final) = server.client_final(&client_final)?;
        client.server_final(&server_final)?;
        Ok(user)
    }

    #[test]
    fn client_against_server_for_both_hashes() {
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let stored = ScramCredential::generate(mechanism, "s3cret", 4096);
            assert_eq!(stored.salt.len(), SALT_BYTES);
            assert_eq!(stored.stored_key.len(), mechanism.hash_len());
            assert_eq!(
                exchange(mechanism, "alice", "s3cret", &stored).unwrap(),
                "alice"
            );
            // Names that need escaping.
            let stored = ScramCredential::generate(mechanism, "pw", 4096);
            assert_eq!(
                exchange(mechanism, "a,b=c", "pw", &stored).unwrap(),
                "a,b=c"
            );
            // Wrong password.
            assert_eq!(
                exchange(mechanism, "alice", "wrong", &stored),
                Err(SaslError::InvalidCredentials)
            );
        }
        // A credential of the other hash is treated as an unknown user.
        let stored = ScramCredential::generate(ScramMechanism::Sha512, "pw", 4096);
        assert_eq!(
            exchange(ScramMechanism::Sha256, "alice", "pw", &stored),
            Err(SaslError::InvalidCredentials)
        );
    }

    #[test]
    fn tampered_proof_fails() {
        let mut client =
            ScramClient::with_nonce(ScramMechanism::Sha256, USER, PASSWORD, CLIENT_NONCE);
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        let server_first = server
            .client_first(&client.client_first(), lookup_one(rfc_credential()))
            .unwrap();
        let client_final = String::from_utf8(client.server_first(&server_first).unwrap()).unwrap();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let mut proof = B64.decode(proof).unwrap();
        proof[0] ^= 1;
        let tampered = format!("{without_proof},p={}", B64.encode(&proof));
        assert_eq!(
            server.client_final(tampered.as_bytes()),
            Err(SaslError::InvalidCredentials)
        );
        // A truncated proof fails the same way.
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        let server_first = server
            .client_first(&client.client_first(), lookup_one(rfc_credential()))
            .unwrap();
        let client_final = String::from_utf8(client.server_first(&server_first).unwrap()).unwrap();
        let (without_proof, _) = client_final.rsplit_once(",p=").unwrap();
        let short = format!("{without_proof},p={}", B64.encode([0u8; 16]));
        assert_eq!(
            server.client_final(short.as_bytes()),
            Err(SaslError::InvalidCredentials)
        );
    }

    #[test]
    fn unknown_user_is_indistinguishable_until_final() {
        let known = rfc_credential();
        let first_for = |user: &str| {
            let mut server = ScramServer::new(ScramMechanism::Sha256);
            let msg = format!("n,,n={user},r={CLIENT_NONCE}");
            let reply = server
                .client_first(msg.as_bytes(), lookup_one(known.clone()))
                .unwrap();
            (server, String::from_utf8(reply).unwrap())
        };
        let (_, known_first) = first_for(USER);
        let (mut server, unknown_first) = first_for("mallory");
        // Same shape: r=<nonce>,s=<24 base64 chars>,i=4096.
        let shape = |s: &str| {
            let parts: Vec<_> = s.split(',').collect();
            (
                parts.len(),
                parts[1].len(),
                parts[2].to_owned(),
                parts[0].len(),
            )
        };
        assert_eq!(shape(&known_first), shape(&unknown_first));
        // The fake salt is stable per username, and differs between usernames.
        let salt = |s: &str| s.split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&unknown_first), salt(&first_for("mallory").1));
        assert_ne!(salt(&unknown_first), salt(&first_for("eve").1));
        // The client completes its side normally; the server fails like a bad password.
        let mut client =
            ScramClient::with_nonce(ScramMechanism::Sha256, "mallory", "guess", CLIENT_NONCE);
        let client_final = client.server_first(unknown_first.as_bytes()).unwrap();
        assert_eq!(
            server.client_final(&client_final),
            Err(SaslError::InvalidCredentials)
        );
        // The configured iteration count is used for unknown users.
        let mut server =
            ScramServer::new(ScramMechanism::Sha512).with_unknown_user_iterations(8192);
        let reply = server.client_first(b"n,,n=nobody,r=abc", |_| None).unwrap();
        assert!(String::from_utf8(reply).unwrap().ends_with(",i=8192"));
    }

    #[test]
    fn malformed_client_first_messages() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "GS2"),
            (b"n,,", "n="),
            (b"n,,r=abc", "n="),
            (b"n,,n=user", "r="),
            (b"n,,n=user,r=", "nonce"),
            (b"n,,n=,r=abc", "username"),
            (b"n,,n=us=er,r=abc", "username"),
            (b"n,,n=user,r=a\x7fb", "nonce"),
            (b"x,,n=user,r=abc", "flag"),
            (b"n,n=user,r=abc", "authzid"),
            (b"n,a=other,n=user,r=abc", "authorization id"),
            (b"n,,m=ext,n=user,r=abc", "mandatory"),
            (b"n,,n=user,r=abc,tokenauth=true", "delegation"),
            (b"n,,n=user,r=abc,bad", "extension"),
            (b"n,,n=\xff,r=abc", "UTF-8"),
        ];
        for (msg, expected) in cases {
            let mut server = ScramServer::new(ScramMechanism::Sha256);
            let err = server
                .client_first(msg, lookup_one(rfc_credential()))
                .unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{:?}: {err}",
                String::from_utf8_lossy(msg)
            );
            // A failed exchange stays failed.
            assert!(matches!(
                server.client_final(b"c=biws,r=abc,p=AAAA"),
                Err(SaslError::IllegalState(_))
            ));
        }
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert_eq!(
            server.client_first(b"p=tls-unique,,n=user,r=abc", |_| None),
            Err(SaslError::ChannelBindingNotSupported)
        );
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        let huge = vec![b'a'; MAX_CLIENT_MESSAGE_BYTES + 1];
        assert!(matches!(
            server.client_first(&huge, |_| None),
            Err(SaslError::TooLarge { .. })
        ));
        // authzid equal to the username, and "y,," are accepted.
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert!(server
            .client_first(b"y,a=user,n=user,r=abc", |_| None)
            .is_ok());
        // Unknown extensions are ignored.
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert!(server
            .client_first(b"n,,n=user,r=abc,x=1", |_| None)
            .is_ok());
    }

    #[test]
    fn malformed_client_final_messages() {
        let start = || {
            let mut server = ScramServer::with_server_nonce(ScramMechanism::Sha256, SERVER_NONCE);
            server
                .client_first(CLIENT_FIRST_MSG.as_bytes(), lookup_one(rfc_credential()))
                .unwrap();
            server
        };
        let nonce = format!("{CLIENT_NONCE}{SERVER_NONCE}");
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cases = [
            (String::new(), "c=..,r=..,p=.."),
            (format!("c=biws,r={nonce}"), "p="),
            (format!("c=eSws,r={nonce},p={proof}"), "channel binding"),
            (format!("c=biws,r={CLIENT_NONCE},p={proof}"), "nonce"),
            (format!("c=biws,r={nonce}x,p={proof}"), "nonce"),
            (format!("r={nonce},c=biws,p={proof}"), "c="),
            (format!("c=biws,r={nonce},p=!!!"), "base64"),
            (format!("c=biws,p={proof}"), "r="),
        ];
        for (msg, expected) in cases {
            let err = start().client_final(msg.as_bytes()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expected), "{msg}: {text}");
            assert!(!text.contains(proof), "{text}");
        }
        // Extensions between r= and p= are allowed (and part of the AuthMessage, so this
        // proof no longer verifies).
        let msg = format!("c=biws,r={nonce},x=1,p={proof}");
        assert_eq!(
            start().client_final(msg.as_bytes()),
            Err(SaslError::InvalidCredentials)
        );
        let huge = vec![b'a'; MAX_CLIENT_MESSAGE_BYTES + 1];
        assert!(matches!(
            start().client_final(&huge),
            Err(SaslError::TooLarge { .. })
        ));
    }

    #[test]
    fn gs2_header_with_authzid_binds_to_its_own_base64() {
        let stored = ScramCredential::generate(ScramMechanism::Sha256, "pw", 4096);
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        let server_first = String::from_utf8(
            server
                .client_first(b"n,a=alice,n=alice,r=abc", |_| Some(stored.clone()))
                .unwrap(),
        )
        .unwrap();
        // A client that sends c=biws despite its authzid is refused.
        let nonce = server_first
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("r=")
            .unwrap();
        let msg = format!("c=biws,r={nonce},p=AAAA");
        let err = server.client_final(msg.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("channel binding"), "{err}");
        assert_eq!(B64.encode("n,a=alice,"), "bixhPWFsaWNlLA==");
    }

    #[test]
    fn client_refuses_bad_server_first() {
        let client = || ScramClient::with_nonce(ScramMechanism::Sha256, USER, PASSWORD, "abc");
        let cases: &[(&str, &str)] = &[
            ("r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "extend"),
            ("r=xyzdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "extend"),
            ("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095", "4096"),
            ("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000001", "4096"),
            ("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1", "number"),
            ("r=abcdef,s=***,i=4096", "base64"),
            ("r=abcdef,s=,i=4096", "salt"),
            ("r=abcdef,i=4096", "s="),
            ("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==", "i="),
            (
                "m=x,r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "mandatory",
            ),
            ("e=unknown-user", "unknown-user"),
            ("", "r="),
        ];
        for (msg, expected) in cases {
            let err = client().server_first(msg.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(expected), "{msg}: {err}");
        }
        assert_eq!(
            client().server_first(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095"),
            Err(SaslError::IterationCount(4095))
        );
        let huge = vec![b'a'; MAX_SERVER_MESSAGE_BYTES + 1];
        assert!(matches!(
            client().server_first(&huge),
            Err(SaslError::TooLarge { .. })
        ));
    }

    #[test]
    fn client_checks_the_server_signature() {
        let mut client =
            ScramClient::with_nonce(ScramMechanism::Sha256, USER, PASSWORD, CLIENT_NONCE);
        assert!(matches!(
            client.server_final(SERVER_FINAL_MSG.as_bytes()),
            Err(SaslError::IllegalState(_))
        ));
        client.server_first(SERVER_FIRST_MSG.as_bytes()).unwrap();
        assert_eq!(
            client.server_final(b"v=6rriTRBi23WpRR/xtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::ServerSignatureMismatch)
        );
        assert_eq!(
            client.server_final(b"v=AAAA"),
            Err(SaslError::ServerSignatureMismatch)
        );
        assert_eq!(
            client.server_final(b"e=invalid-proof"),
            Err(SaslError::ServerError("invalid-proof".into()))
        );
        assert!(client.server_final(b"x=1").is_err());
        assert!(client.server_final(b"v=***").is_err());
        // Extensions after v= are ignored.
        let with_ext = format!("{SERVER_FINAL_MSG},x=1");
        client.server_final(with_ext.as_bytes()).unwrap();
    }

    #[test]
    fn credential_text_round_trips() {
        let credential = rfc_credential();
        let text = credential.to_string();
        assert!(
            text.starts_with("SCRAM-SHA-256:4096:W22ZaJ0SNY7soEsUEjb6gQ==:"),
            "{text}"
        );
        assert_eq!(text.parse::<ScramCredential>().unwrap(), credential);
        let sha512 = ScramCredential::generate(ScramMechanism::Sha512, "pw", 5000);
        assert_eq!(
            sha512.to_string().parse::<ScramCredential>().unwrap(),
            sha512
        );
        assert_eq!(sha512.iterations, 5000);
        // Debug hides the keys.
        let debug = format!("{credential:?}");
        assert!(
            !debug.contains(&B64.encode(&credential.stored_key)),
            "{debug}"
        );
    }

    #[test]
    fn credential_text_errors() {
        let good = rfc_credential().to_string();
        let parts: Vec<&str> = good.split(':').collect();
        let with = |i: usize, value: &str| {
            let mut p = parts.clone();
            p[i] = value;
            p.join(":")
        };
        let cases = [
            ("SCRAM-SHA-256:4096".to_owned(), "expected"),
            (format!("{good}:extra"), "expected"),
            (with(0, "SCRAM-SHA-1"), "mechanism"),
            (with(0, "scram-sha-256"), "mechanism"),
            (with(1, "4095"), "outside"),
            (with(1, "1000001"), "outside"),
            (with(1, "x"), "number"),
            (with(2, ""), "salt is empty"),
            (with(2, "***"), "salt"),
            (with(3, "AAAA"), "stored key is 3 bytes"),
            (with(4, "***"), "server key"),
            // A SHA-256 credential labelled SHA-512: key lengths do not match.
            (with(0, "SCRAM-SHA-512"), "needs 64"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<ScramCredential>().unwrap_err();
            assert!(matches!(err, SaslError::InvalidCredential(_)));
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn verify_password_against_a_credential() {
        let credential = rfc_credential();
        assert!(credential.verify_password(PASSWORD));
        assert!(!credential.verify_password("pencil "));
        assert!(!credential.verify_password(""));
        let sha512 = ScramCredential::generate(ScramMechanism::Sha512, "ünïcode", 4096);
        assert!(sha512.verify_password("ünïcode"));
        assert!(!sha512.verify_password("unicode"));
    }

    #[test]
    fn generate_clamps_iterations() {
        let c = ScramCredential::generate(ScramMechanism::Sha256, "pw", 1);
        assert_eq!(c.iterations, MIN_ITERATIONS);
        assert!(c.verify_password("pw"));
        let other = ScramCredential::generate(ScramMechanism::Sha256, "pw", 4096);
        assert_ne!(c.salt, other.salt, "salts are random");
    }

    #[test]
    fn mechanism_conversions() {
        assert_eq!(
            ScramMechanism::parse("SCRAM-SHA-256"),
            Some(ScramMechanism::Sha256)
        );
        assert_eq!(ScramMechanism::parse("PLAIN"), None);
        assert_eq!(
            ScramMechanism::try_from(Mechanism::ScramSha512),
            Ok(ScramMechanism::Sha512)
        );
        assert_eq!(
            ScramMechanism::try_from(Mechanism::Plain),
            Err(Mechanism::Plain)
        );
        assert_eq!(
            Mechanism::from(ScramMechanism::Sha256),
            Mechanism::ScramSha256
        );
        assert_eq!(ScramMechanism::Sha512.to_string(), "SCRAM-SHA-512");
    }

    #[test]
    fn debug_hides_the_password() {
        let client = ScramClient::new(ScramMechanism::Sha256, "alice", "hunter2");
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
