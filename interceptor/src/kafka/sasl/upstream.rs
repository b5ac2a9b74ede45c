//! The interceptor's own SASL login on a fresh upstream connection, before any client byte is
//! relayed: the broker then sees the interceptor's principal, never the client's credentials
//! (which the interceptor has already verified itself).
//!
//! SaslHandshake v1 names the mechanism; SaslAuthenticate v1 carries the tokens: PLAIN in one
//! round trip, SCRAM in two, with the broker's server signature verified so that a fake broker
//! cannot pass itself off as the real one. The exchange uses its own correlation ids (from
//! `i32::MAX - 16`); they never reach a client, since relaying starts only afterwards. Every
//! response is read with a 64 KiB frame bound, and the whole exchange with one deadline.

use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    messages::{
        authenticate_request, decode_authenticate_response, decode_handshake_response,
        handshake_request, AuthenticateResponse,
    },
    plain, printable,
    scram::ScramClient,
    secrets::UpstreamSecrets,
    Mechanism, SaslError,
};
use crate::config::UpstreamMechanism;
use crate::kafka::frame::LENGTH_PREFIX;

/// The first correlation id of the exchange.
pub const FIRST_CORRELATION_ID: i32 = i32::MAX - 16;
/// A broker response larger than this is refused (SASL responses are a few hundred bytes).
pub const MAX_RESPONSE_FRAME_BYTES: usize = 64 * 1024;
/// The versions used towards the broker (v0 of both was removed in Kafka 4).
pub const HANDSHAKE_VERSION: i16 = 1;
pub const AUTHENTICATE_VERSION: i16 = 1;

/// The outcome of a successful login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamAuth {
    /// From the last SaslAuthenticate response: the broker closes the connection after this
    /// long unless it re-authenticates (KIP-368); 0 when it does not expire sessions (and for
    /// `UpstreamMechanism::None`).
    pub session_lifetime_ms: i64,
}

#[derive(Debug, Error)]
pub enum UpstreamAuthError {
    #[error("upstream SASL authentication did not complete within {0:?}")]
    Timeout(Duration),
    #[error("I/O error during upstream SASL authentication: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "broker refused SASL mechanism {mechanism} (error code {code}); it enables: {}",
        list(enabled)
    )]
    MechanismRejected {
        mechanism: &'static str,
        code: i16,
        enabled: Vec<String>,
    },
    #[error(
        "broker refused SASL {mechanism} authentication as {username} (error code {code}): {}",
        message.as_deref().unwrap_or("no message")
    )]
    Rejected {
        mechanism: &'static str,
        username: String,
        code: i16,
        message: Option<String>,
    },
    #[error("broker sent an invalid SASL response: {0}")]
    Protocol(String),
    #[error("upstream SASL {mechanism}: {source}")]
    Sasl {
        mechanism: &'static str,
        source: SaslError,
    },
}

impl UpstreamAuthError {
    /// The Kafka error code the broker answered with, if it refused.
    pub fn broker_error_code(&self) -> Option<i16> {
        match self {
            UpstreamAuthError::MechanismRejected { code, .. }
            | UpstreamAuthError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".to_owned();
    }
    names
        .iter()
        .map(|n| printable(n, 64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Authenticates the interceptor to the broker on `stream` with `mechanism`; returns at once,
/// without I/O, for [`UpstreamMechanism::None`]. The whole exchange is bounded by `timeout`.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    mechanism: UpstreamMechanism,
    secrets: &UpstreamSecrets,
    client_id: &str,
    timeout: Duration,
) -> Result<UpstreamAuth, UpstreamAuthError> {
    let mechanism = match mechanism {
        UpstreamMechanism::None => {
            return Ok(UpstreamAuth {
                session_lifetime_ms: 0,
            })
        }
        UpstreamMechanism::Plain => Mechanism::Plain,
        UpstreamMechanism::ScramSha256 => Mechanism::ScramSha256,
        UpstreamMechanism::ScramSha512 => Mechanism::ScramSha512,
    };
    let mut conn = Conn {
        stream,
        client_id,
        next_correlation_id: FIRST_CORRELATION_ID,
        mechanism,
        username: &secrets.username,
    };
    match tokio::time::timeout(timeout, conn.login(secrets)).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamAuthError::Timeout(timeout)),
    }
}

struct Conn<'a, S> {
    stream: &'a mut S,
    client_id: &'a str,
    next_correlation_id: i32,
    mechanism: Mechanism,
    username: &'a str,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    async fn login(
        &mut self,
        secrets: &UpstreamSecrets,
    ) -> Result<UpstreamAuth, UpstreamAuthError> {
        let name = self.mechanism.name();
        let correlation_id = self.correlation_id();
        let request = handshake_request(correlation_id, HANDSHAKE_VERSION, self.client_id, name);
        let frame = self.round_trip(&request).await?;
        let response = decode_handshake_response(&frame, HANDSHAKE_VERSION).map_err(protocol)?;
        check_correlation(response.correlation_id, correlation_id)?;
        if response.error_code != 0 {
            return Err(UpstreamAuthError::MechanismRejected {
                mechanism: name,
                code: response.error_code,
                enabled: response.mechanisms,
            });
        }

        let last = match self.mechanism.scram() {
            None => {
                let token = plain::encode(None, &secrets.username, &secrets.password);
                self.authenticate(&token).await?
            }
            Some(hash) => {
                let mut client = ScramClient::new(hash, &secrets.username, &secrets.password);
                let server_first = self.authenticate(&client.client_first()).await?;
                let client_final = client
                    .server_first(&server_first.auth_bytes)
                    .map_err(|e| self.sasl_error(e))?;
                let server_final = self.authenticate(&client_final).await?;
                client
                    .server_final(&server_final.auth_bytes)
                    .map_err(|e| self.sasl_error(e))?;
                server_final
            }
        };
        Ok(UpstreamAuth {
            session_lifetime_ms: last.session_lifetime_ms,
        })
    }

    /// One SaslAuthenticate round trip; a broker error code is an error.
    async fn authenticate(
        &mut self,
        auth_bytes: &[u8],
    ) -> Result<AuthenticateResponse, UpstreamAuthError> {
        let correlation_id = self.correlation_id();
        let request = authenticate_request(
            correlation_id,
            AUTHENTICATE_VERSION,
            self.client_id,
            auth_bytes,
        );
        let frame = self.round_trip(&request).await?;
        let response =
            decode_authenticate_response(&frame, AUTHENTICATE_VERSION).map_err(protocol)?;
        check_correlation(response.correlation_id, correlation_id)?;
        if response.error_code != 0 {
            return Err(UpstreamAuthError::Rejected {
                mechanism: self.mechanism.name(),
                username: self.username.to_owned(),
                code: response.error_code,
                message: response.error_message.map(|m| printable(&m, 500)),
            });
        }
        Ok(response)
    }

    fn correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = id.wrapping_add(1);
        id
    }

    fn sasl_error(&self, source: SaslError) -> UpstreamAuthError {
        UpstreamAuthError::Sasl {
            mechanism: self.mechanism.name(),
            source,
        }
    }

    /// Writes a request and reads one response frame (length prefix included).
    async fn round_trip(&mut self, request: &[u8]) -> Result<Bytes, UpstreamAuthError> {
        self.stream.write_all(request).await?;
        self.stream.flush().await?;
        let mut prefix = [0u8; LENGTH_PREFIX];
        self.stream.read_exact(&mut prefix).await?;
        let len = i32::from_be_bytes(prefix);
        let len = usize::try_from(len)
            .map_err(|_| UpstreamAuthError::Protocol(format!("negative frame length {len}")))?;
        if len > MAX_RESPONSE_FRAME_BYTES {
            return Err(UpstreamAuthError::Protocol(format!(
                "response frame of {len} bytes exceeds {MAX_RESPONSE_FRAME_BYTES}"
            )));
        }
        let mut frame = Vec::with_capacity(LENGTH_PREFIX + len);
        frame.extend_from_slice(&prefix);
        frame.resize(LENGTH_PREFIX + len, 0);
        let body = frame.get_mut(LENGTH_PREFIX..).unwrap_or_default();
        self.stream.read_exact(body).await?;
        Ok(Bytes::from(frame))
    }
}

fn protocol(e: SaslError) -> UpstreamAuthError {
    UpstreamAuthError::Protocol(e.to_string())
}

fn check_correlation(got: i32, expected: i32) -> Result<(), UpstreamAuthError> {
    if got == expected {
        return Ok(());
    }
    Err(UpstreamAuthError::Protocol(format!(
        "correlation id {got} answers no request (expected {expected})"
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::BytesMut;
    use tokio::io::{duplex, DuplexStream};

    use super::*;
    use crate::kafka::{
        frame::split_frame,
        sasl::{
            messages::{
                authenticate_response, decode_authenticate, decode_handshake, handshake_response,
            },
            scram::{ScramCredential, ScramServer},
            SASL_AUTHENTICATE_KEY, SASL_AUTHENTICATION_FAILED, SASL_HANDSHAKE_KEY,
            UNSUPPORTED_SASL_MECHANISM,
        },
        RequestHeader,
    };

    const TIMEOUT: Duration = Duration::from_secs(10);
    const LIFETIME_MS: i64 = 3_600_000;

    #[derive(Clone, Copy, PartialEq)]
    enum Behaviour {
        Normal,
        /// Answer every SaslAuthenticate with error 58.
        RejectAuth,
        /// Send a wrong SCRAM server signature.
        BadServerSignature,
        /// Read, never answer.
        Silent,
        /// Answer with the wrong correlation id.
        WrongCorrelationId,
    }

    /// A fake broker: enables `mechanisms`, knows users' passwords (PLAIN) and SCRAM
    /// credentials (our own ScramServer).
    struct FakeBroker {
        mechanisms: Vec<&'static str>,
        passwords: HashMap<String, String>,
        behaviour: Behaviour,
    }

    impl FakeBroker {
        fn new(mechanisms: &[&'static str], behaviour: Behaviour) -> Self {
            Self {
                mechanisms: mechanisms.to_vec(),
                passwords: HashMap::from([("interceptor".into(), "broker-pw".into())]),
                behaviour,
            }
        }

        /// Serves one connection; returns the principal it authenticated, if any.
        async fn serve(self, mut stream: DuplexStream) -> Option<String> {
            let mut buf = BytesMut::new();
            let mut mechanism = None;
            let mut scram: Option<ScramServer> = None;
            loop {
                let frame = loop {
                    if let Some(frame) = split_frame(&mut buf, 1 << 20).unwrap() {
                        break frame;
                    }
                    if stream.read_buf(&mut buf).await.ok()? == 0 {
                        return None;
                    }
                };
                if self.behaviour == Behaviour::Silent {
                    continue;
                }
                let header = RequestHeader::parse(&frame).unwrap();
                let correlation_id = if self.behaviour == Behaviour::WrongCorrelationId {
                    header.correlation_id.wrapping_sub(1000)
                } else {
                    header.correlation_id
                };
                assert!(header.correlation_id >= FIRST_CORRELATION_ID);
                assert_eq!(header.client_id_lossy(), "interceptor-test");
                let reply = match header.api_key {
                    SASL_HANDSHAKE_KEY => {
                        let name = decode_handshake(&frame, &header).unwrap();
                        let code = if self.mechanisms.contains(&name.as_str()) {
                            mechanism = Mechanism::parse(&name);
                            0
                        } else {
                            UNSUPPORTED_SASL_MECHANISM
                        };
                        handshake_response(
                            correlation_id,
                            header.api_version,
                            code,
                            &self.mechanisms,
                        )
                    }
                    SASL_AUTHENTICATE_KEY => {
                        let auth = decode_authenticate(&frame, &header).unwrap();
                        let version = header.api_version;
                        let fail = |message: &str| {
                            authenticate_response(
                                correlation_id,
                                version,
                                SASL_AUTHENTICATION_FAILED,
                                Some(message),
                                b"",
                                0,
                            )
                        };
                        let ok = |bytes: &[u8]| {
                            authenticate_response(
                                correlation_id,
                                version,
                                0,
                                None,
                                bytes,
                                LIFETIME_MS,
                            )
                        };
                        if self.behaviour == Behaviour::RejectAuth {
                            fail("Authentication failed: Invalid username or password")
                        } else {
                            match mechanism? {
                                Mechanism::Plain => {
                                    let plain = plain::parse(&auth).unwrap();
                                    if self.passwords.get(&plain.username) == Some(&plain.password)
                                    {
                                        stream.write_all(&ok(b"")).await.ok()?;
                                        return Some(plain.username);
                                    }
                                    fail("Authentication failed: Invalid username or password")
                                }
                                Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                                    let hash = mechanism?.scram()?;
                                    match scram.take() {
                                        None => {
                                            let mut server = ScramServer::new(hash);
                                            let passwords = self.passwords.clone();
                                            let first = server
                                                .client_first(&auth, |user| {
                                                    passwords.get(user).map(|pw| {
                                                        ScramCredential::generate(hash, pw, 4096)
                                                    })
                                                })
                                                .unwrap();
                                            scram = Some(server);
                                            ok(&first)
                                        }
                                        Some(mut server) => match server.client_final(&auth) {
                                            Ok((user, mut server_final)) => {
                                                if self.behaviour == Behaviour::BadServerSignature {
                                                    server_final = b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_vec();
                                                }
                                                stream.write_all(&ok(&server_final)).await.ok()?;
                                                return Some(user);
                                            }
                                            Err(e) => fail(&e.to_string()),
                                        },
                                    }
                                }
                                Mechanism::OAuthBearer => return None,
                            }
                        }
                    }
                    other => panic!("unexpected api key {other}"),
                };
                stream.write_all(&reply).await.ok()?;
            }
        }
    }

    fn secrets(password: &str) -> UpstreamSecrets {
        UpstreamSecrets {
            username: "interceptor".into(),
            password: password.into(),
        }
    }

    /// Runs `authenticate` against `broker`; the result and the principal the broker saw.
    async fn run(
        broker: FakeBroker,
        mechanism: UpstreamMechanism,
        password: &str,
        timeout: Duration,
    ) -> (Result<UpstreamAuth, UpstreamAuthError>, Option<String>) {
        let (mut ours, theirs) = duplex(64 * 1024);
        let server = tokio::spawn(broker.serve(theirs));
        let result = authenticate(
            &mut ours,
            mechanism,
            &secrets(password),
            "interceptor-test",
            timeout,
        )
        .await;
        drop(ours);
        (result, server.await.unwrap())
    }

    const ALL: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

    #[tokio::test]
    async fn none_does_no_io() {
        let (mut ours, _theirs) = duplex(16);
        let got = authenticate(
            &mut ours,
            UpstreamMechanism::None,
            &secrets("x"),
            "c",
            Duration::from_millis(1),
        )
        .await
        .unwrap();
        assert_eq!(got.session_lifetime_ms, 0);
    }

    #[tokio::test]
    async fn scram_against_our_server_for_both_hashes() {
        for mechanism in [
            UpstreamMechanism::ScramSha256,
            UpstreamMechanism::ScramSha512,
        ] {
            let broker = FakeBroker::new(ALL, Behaviour::Normal);
            let (result, principal) = run(broker, mechanism, "broker-pw", TIMEOUT).await;
            assert_eq!(result.unwrap().session_lifetime_ms, LIFETIME_MS);
            assert_eq!(principal.as_deref(), Some("interceptor"));
        }
    }

    #[tokio::test]
    async fn plain() {
        let broker = FakeBroker::new(ALL, Behaviour::Normal);
        let (result, principal) = run(broker, UpstreamMechanism::Plain, "broker-pw", TIMEOUT).await;
        assert_eq!(result.unwrap().session_lifetime_ms, LIFETIME_MS);
        assert_eq!(principal.as_deref(), Some("interceptor"));
    }

    #[tokio::test]
    async fn wrong_password_is_the_brokers_error_58() {
        for mechanism in [UpstreamMechanism::Plain, UpstreamMechanism::ScramSha512] {
            let broker = FakeBroker::new(ALL, Behaviour::Normal);
            let (result, principal) = run(broker, mechanism, "wrong-pw", TIMEOUT).await;
            let err = result.unwrap_err();
            assert_eq!(err.broker_error_code(), Some(58), "{err}");
            let text = err.to_string();
            assert!(text.to_lowercase().contains("invalid"), "{text}");
            assert!(text.contains("as interceptor"), "{text}");
            assert!(!text.contains("wrong-pw"), "{text}");
            assert_eq!(principal, None);
        }
    }

    #[tokio::test]
    async fn a_rejected_mechanism_names_the_enabled_ones() {
        let broker = FakeBroker::new(&["GSSAPI", "OAUTHBEARER"], Behaviour::Normal);
        let (result, _) = run(broker, UpstreamMechanism::ScramSha256, "broker-pw", TIMEOUT).await;
        let err = result.unwrap_err();
        assert!(matches!(
            err,
            UpstreamAuthError::MechanismRejected { code: 33, .. }
        ));
        let text = err.to_string();
        assert!(text.contains("SCRAM-SHA-256"), "{text}");
        assert!(text.contains("GSSAPI, OAUTHBEARER"), "{text}");
    }

    #[tokio::test]
    async fn a_broker_error_58_is_reported_with_its_message() {
        let broker = FakeBroker::new(ALL, Behaviour::RejectAuth);
        let (result, _) = run(broker, UpstreamMechanism::ScramSha256, "broker-pw", TIMEOUT).await;
        let err = result.unwrap_err();
        match &err {
            UpstreamAuthError::Rejected { code, message, .. } => {
                assert_eq!(*code, 58);
                assert_eq!(
                    message.as_deref(),
                    Some("Authentication failed: Invalid username or password")
                );
            }
            other => panic!("{other}"),
        }
        assert!(!err.to_string().contains("broker-pw"));
    }

    #[tokio::test]
    async fn a_bad_server_signature_is_refused() {
        let broker = FakeBroker::new(ALL, Behaviour::BadServerSignature);
        let (result, _) = run(broker, UpstreamMechanism::ScramSha512, "broker-pw", TIMEOUT).await;
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamAuthError::Sasl {
                    source: SaslError::ServerSignatureMismatch,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_silent_broker_times_out() {
        let broker = FakeBroker::new(ALL, Behaviour::Silent);
        let timeout = Duration::from_millis(100);
        let started = std::time::Instant::now();
        let (result, _) = run(broker, UpstreamMechanism::Plain, "broker-pw", timeout).await;
        let err = result.unwrap_err();
        assert!(
            matches!(err, UpstreamAuthError::Timeout(t) if t == timeout),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_wrong_correlation_id_is_a_protocol_error() {
        let broker = FakeBroker::new(ALL, Behaviour::WrongCorrelationId);
        let (result, _) = run(broker, UpstreamMechanism::Plain, "broker-pw", TIMEOUT).await;
        let err = result.unwrap_err();
        assert!(matches!(err, UpstreamAuthError::Protocol(_)), "{err}");
        assert!(err.to_string().contains("correlation id"), "{err}");
    }

    #[tokio::test]
    async fn oversized_frames_and_closed_connections() {
        // A response prefix over 64 KiB.
        let (mut ours, mut theirs) = duplex(1024);
        let broker = tokio::spawn(async move {
            let mut request = [0u8; 256];
            let _ = theirs.read(&mut request).await;
            theirs.write_all(&(1i32 << 20).to_be_bytes()).await.unwrap();
            theirs
        });
        let err = authenticate(
            &mut ours,
            UpstreamMechanism::Plain,
            &secrets("p"),
            "c",
            TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        drop(broker.await.unwrap());
        // The broker closes the connection.
        let (mut ours, theirs) = duplex(1024);
        drop(theirs);
        let err = authenticate(
            &mut ours,
            UpstreamMechanism::Plain,
            &secrets("p"),
            "c",
            TIMEOUT,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UpstreamAuthError::Io(_)), "{err}");
    }
}
