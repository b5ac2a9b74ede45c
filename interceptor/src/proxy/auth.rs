//! SASL termination for one Kafka connection: who the client is, decided before anything it
//! sends reaches the broker.
//!
//! The interceptor answers SaslHandshake and SaslAuthenticate itself; the broker only ever
//! sees the interceptor's own credentials (see `kafka::sasl::upstream`). Until a client has
//! authenticated, only ApiVersions and the SASL exchange pass; anything else closes the
//! connection, which is what a Kafka broker does on a SASL listener. Failures are answered
//! with the protocol's own error code and message, then the connection closes (Kafka does the
//! same, and librdkafka reports the message).
//!
//! KIP-368: the successful SaslAuthenticate carries the session lifetime (the token's
//! remaining life, capped by `max_session_lifetime_secs`). A session that has not
//! re-authenticated by then is closed on its next request. Re-authentication must use the
//! same mechanism and keep the same principal.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use thiserror::Error;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    audit::{AuditEvent, AuditLog, AuthOutcome, CloseReason},
    config::{IdentityConfig, Listener},
    identity::{IdentityConfigError, TokenValidator},
    kafka::{
        api_versions::ServedApi,
        header::API_VERSIONS_KEY,
        sasl::{
            messages::{
                authenticate_response, decode_authenticate, decode_handshake, handshake_response,
            },
            oauthbearer, plain,
            scram::{ScramCredential, ScramMechanism, ScramServer},
            Mechanism, ILLEGAL_SASL_STATE, SASL_AUTHENTICATE_KEY, SASL_AUTHENTICATION_FAILED,
            SASL_HANDSHAKE_KEY, UNSUPPORTED_SASL_MECHANISM, UNSUPPORTED_VERSION,
        },
        RequestHeader,
    },
};

/// ApiVersions entries of a listener that offers SASL: the versions served here, whatever the
/// broker supports (it may have no SASL at all).
pub const SASL_SERVED: &[ServedApi] = &[
    ServedApi {
        api_key: SASL_HANDSHAKE_KEY,
        versions: Some((1, 1)),
    },
    ServedApi {
        api_key: SASL_AUTHENTICATE_KEY,
        versions: Some((0, 2)),
    },
];

/// ApiVersions entries of a listener that offers no SASL: the broker's own SASL is the
/// interceptor's business, never the client's.
pub const SASL_HIDDEN: &[ServedApi] = &[
    ServedApi {
        api_key: SASL_HANDSHAKE_KEY,
        versions: None,
    },
    ServedApi {
        api_key: SASL_AUTHENTICATE_KEY,
        versions: None,
    },
];

/// The principal of sessions on listeners that allow clients in without SASL.
pub const ANONYMOUS: &str = "ANONYMOUS";

#[derive(Debug, Error)]
pub enum AuthConfigError {
    #[error(transparent)]
    Identity(#[from] IdentityConfigError),
    #[error("identity.user[{index}] ({username}): credential {credential}: {message}")]
    Credential {
        index: usize,
        username: String,
        credential: usize,
        message: String,
    },
    #[error("identity.user[{index}]: username {username:?} appears twice")]
    DuplicateUser { index: usize, username: String },
}

/// Who a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: String,
    pub groups: Vec<String>,
    /// The token's issuer (OAUTHBEARER only).
    pub issuer: Option<String>,
    pub mechanism: &'static str,
}

/// A configured PLAIN/SCRAM user.
struct SaslUser {
    principal: String,
    groups: Vec<String>,
    credentials: Vec<ScramCredential>,
}

/// What every session's authentication shares: the token validator and the user table.
pub struct Authenticator {
    tokens: TokenValidator,
    users: HashMap<String, SaslUser>,
    max_session_lifetime: Duration,
}

impl Authenticator {
    pub fn new(config: &IdentityConfig) -> Result<Self, AuthConfigError> {
        let tokens = TokenValidator::new(config)?;
        let mut users = HashMap::new();
        for (index, user) in config.users.iter().enumerate() {
            let mut credentials = Vec::new();
            for (credential, text) in user.credentials.iter().enumerate() {
                let parsed =
                    text.parse::<ScramCredential>()
                        .map_err(|e| AuthConfigError::Credential {
                            index,
                            username: user.username.clone(),
                            credential,
                            message: e.to_string(),
                        })?;
                credentials.push(parsed);
            }
            let entry = SaslUser {
                principal: user
                    .principal
                    .clone()
                    .unwrap_or_else(|| user.username.clone()),
                groups: user.groups.clone(),
                credentials,
            };
            if users.insert(user.username.clone(), entry).is_some() {
                return Err(AuthConfigError::DuplicateUser {
                    index,
                    username: user.username.clone(),
                });
            }
        }
        Ok(Self {
            tokens,
            users,
            max_session_lifetime: Duration::from_secs(config.max_session_lifetime_secs),
        })
    }

    /// Starts the issuers' key refresh (discovery and JWKS) in the background.
    pub fn start(&self) {
        self.tokens.start_refresh();
    }

    /// Checks an OIDC access token presented outside Kafka (`interceptor detokenize`) exactly
    /// as an OAUTHBEARER login's.
    pub async fn validate_token(
        &self,
        token: &str,
    ) -> Result<crate::identity::ValidatedToken, crate::identity::TokenError> {
        self.tokens.validate(token).await
    }

    /// A configured user's password, outside SASL (the MQTT CONNECT password). Err: the
    /// audit reason, the same for an unknown user as for a wrong password towards the client.
    pub fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Identity, &'static str> {
        let Some(user) = self.users.get(username) else {
            return Err("unknown_user");
        };
        if !user.credentials.iter().any(|c| c.verify_password(password)) {
            return Err("bad_credentials");
        }
        Ok(Identity {
            principal: user.principal.clone(),
            groups: user.groups.clone(),
            issuer: None,
            mechanism: Mechanism::Plain.name(),
        })
    }

    /// The longest a session may last without authenticating again.
    pub fn max_session_lifetime(&self) -> Duration {
        self.max_session_lifetime
    }

    fn credential(&self, username: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.users.get(username).and_then(|u| {
            u.credentials
                .iter()
                .find(|c| c.mechanism == mechanism)
                .cloned()
        })
    }
}

/// What one listener offers its clients.
#[derive(Debug, Clone)]
pub struct ListenerAuth {
    pub mechanisms: Vec<Mechanism>,
    pub allow_anonymous: bool,
}

impl ListenerAuth {
    /// Mechanism names were checked when the config loaded; an unknown one is skipped.
    pub fn from_listener(listener: &Listener) -> Self {
        Self {
            mechanisms: listener
                .sasl_mechanisms
                .iter()
                .filter_map(|m| Mechanism::parse(m))
                .collect(),
            allow_anonymous: listener.allow_anonymous,
        }
    }

    /// What ApiVersions answers advertise for SASL on this listener.
    pub fn served_apis(&self) -> &'static [ServedApi] {
        if self.mechanisms.is_empty() {
            SASL_HIDDEN
        } else {
            SASL_SERVED
        }
    }

    fn names(&self) -> Vec<&'static str> {
        self.mechanisms.iter().map(|m| m.name()).collect()
    }
}

/// What the request direction does with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Authenticated (or ApiVersions, or anonymous): on to the filters and the broker.
    Pass,
    /// A SASL request, answered here.
    Respond(Bytes),
    /// Answer, then close once the answer is out.
    RespondThenClose(Bytes, CloseReason, String),
    /// Close now.
    Close(CloseReason, String),
}

/// Where one connection's SASL exchange stands.
enum State {
    /// Not authenticated yet.
    Start,
    /// SaslHandshake accepted: a SaslAuthenticate with this mechanism must follow.
    Handshaken(Mechanism),
    /// SCRAM server-first sent: the client's final message must follow.
    ScramFinal(Box<ScramServer>, Mechanism),
    /// Authenticated (or anonymous); requests pass until the session expires.
    Ready,
}

/// One connection's authentication, driven by the request direction.
pub struct SessionAuth {
    shared: Arc<Authenticator>,
    listener: ListenerAuth,
    audit: AuditLog,
    session: u64,
    client: SocketAddr,
    state: State,
    identity: Option<Identity>,
    /// When the session must have re-authenticated by (monotonic).
    expires: Option<Instant>,
}

/// A finished authentication, before it is accepted.
struct Authenticated {
    identity: Identity,
    token_expires: Option<SystemTime>,
    token_sha256: Option<String>,
    client_id: Option<String>,
}

/// A failed authentication, to answer and audit.
struct Failure {
    reason: &'static str,
    message: String,
    token_sha256: Option<String>,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            token_sha256: None,
        }
    }
}

impl SessionAuth {
    pub fn new(
        shared: Arc<Authenticator>,
        listener: ListenerAuth,
        audit: AuditLog,
        session: u64,
        client: SocketAddr,
    ) -> Self {
        Self {
            shared,
            listener,
            audit,
            session,
            client,
            state: State::Start,
            identity: None,
            expires: None,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Decides one request before anything else sees it.
    pub async fn on_request(&mut self, header: &RequestHeader, frame: &Bytes) -> AuthStep {
        match header.api_key {
            SASL_HANDSHAKE_KEY => self.handshake(header, frame).await,
            SASL_AUTHENTICATE_KEY => self.authenticate(header, frame).await,
            _ => self.other(header).await,
        }
    }

    async fn other(&mut self, header: &RequestHeader) -> AuthStep {
        match self.state {
            State::Ready => {
                if self.expires.is_some_and(|at| Instant::now() >= at) {
                    let detail = "the session's authentication expired and the client did not \
                                  re-authenticate"
                        .to_owned();
                    self.refuse(header, "session_expired", &detail).await;
                    return AuthStep::Close(CloseReason::SessionExpired, detail);
                }
                AuthStep::Pass
            }
            // ApiVersions comes first on every connection, SASL or not.
            State::Start if header.api_key == API_VERSIONS_KEY => AuthStep::Pass,
            State::Start if self.listener.allow_anonymous => {
                self.identity = Some(Identity {
                    principal: ANONYMOUS.into(),
                    groups: Vec::new(),
                    issuer: None,
                    mechanism: "ANONYMOUS",
                });
                self.state = State::Ready;
                self.audit_success(false, None, None).await;
                AuthStep::Pass
            }
            State::Start => {
                let detail = format!(
                    "api key {} before authentication (only ApiVersions and SASL are allowed)",
                    header.api_key
                );
                self.refuse(header, "unauthenticated", &detail).await;
                AuthStep::Close(CloseReason::Unauthenticated, detail)
            }
            State::Handshaken(_) | State::ScramFinal(..) => {
                let detail = format!(
                    "api key {} in the middle of a SASL exchange",
                    header.api_key
                );
                self.refuse(header, "sasl_in_progress", &detail).await;
                AuthStep::Close(CloseReason::AuthenticationFailed, detail)
            }
        }
    }

    async fn handshake(&mut self, header: &RequestHeader, frame: &Bytes) -> AuthStep {
        let offered = self.listener.names();
        let id = header.correlation_id;
        let version = header.api_version;
        let answer = |code| handshake_response(id, version, code, &offered);
        if version != 1 {
            // v0 means raw SASL tokens after the handshake, which no current client uses.
            let detail = format!("SaslHandshake v{version} (only v1 is served)");
            self.refuse(header, "unsupported_version", &detail).await;
            return AuthStep::RespondThenClose(
                answer(UNSUPPORTED_VERSION),
                CloseReason::AuthenticationFailed,
                detail,
            );
        }
        let requested = match decode_handshake(frame, header) {
            Ok(m) => m,
            Err(e) => {
                return AuthStep::Close(
                    CloseReason::ClientProtocolError,
                    format!("undecodable SaslHandshake: {e}"),
                )
            }
        };
        let mechanism = match self.choose(&requested) {
            Ok(m) => m,
            Err((code, reason, detail)) => {
                let name = Mechanism::parse(&requested)
                    .map(Mechanism::name)
                    .unwrap_or("unknown");
                let reauth = self.identity.is_some();
                self.audit_failure(name, reauth, &Failure::new(reason, detail.clone()))
                    .await;
                return AuthStep::RespondThenClose(
                    answer(code),
                    CloseReason::AuthenticationFailed,
                    detail,
                );
            }
        };
        self.state = State::Handshaken(mechanism);
        AuthStep::Respond(answer(0))
    }

    /// The mechanism a SaslHandshake may start, or the error code, reason and detail.
    fn choose(&self, requested: &str) -> Result<Mechanism, (i16, &'static str, String)> {
        if matches!(self.state, State::Handshaken(_) | State::ScramFinal(..)) {
            return Err((
                ILLEGAL_SASL_STATE,
                "second_handshake",
                "a second SaslHandshake before the first exchange finished".into(),
            ));
        }
        let Some(mechanism) = Mechanism::parse(requested) else {
            return Err((
                UNSUPPORTED_SASL_MECHANISM,
                "mechanism_not_enabled",
                format!("unknown mechanism {:?}", truncate(requested, 64)),
            ));
        };
        if !self.listener.mechanisms.contains(&mechanism) {
            return Err((
                UNSUPPORTED_SASL_MECHANISM,
                "mechanism_not_enabled",
                format!("mechanism {requested} is not enabled on this listener"),
            ));
        }
        match &self.identity {
            Some(identity) if identity.mechanism != mechanism.name() => Err((
                ILLEGAL_SASL_STATE,
                "reauthentication_mechanism_changed",
                format!(
                    "re-authentication with {} on a session authenticated with {}",
                    mechanism.name(),
                    identity.mechanism
                ),
            )),
            _ => Ok(mechanism),
        }
    }

    async fn authenticate(&mut self, header: &RequestHeader, frame: &Bytes) -> AuthStep {
        let id = header.correlation_id;
        let version = header.api_version;
        if !(0..=2).contains(&version) {
            let detail = format!("SaslAuthenticate v{version} (v0 to v2 are served)");
            self.refuse(header, "unsupported_version", &detail).await;
            return AuthStep::RespondThenClose(
                authenticate_response(id, 0, UNSUPPORTED_VERSION, Some(&detail), &[], 0),
                CloseReason::AuthenticationFailed,
                detail,
            );
        }
        let auth_bytes = match decode_authenticate(frame, header) {
            Ok(b) => b,
            Err(e) => {
                return AuthStep::Close(
                    CloseReason::ClientProtocolError,
                    format!("undecodable SaslAuthenticate: {e}"),
                )
            }
        };
        let state = std::mem::replace(&mut self.state, State::Start);
        let reauth = self.identity.is_some();
        let (mechanism, outcome) = match state {
            State::Handshaken(Mechanism::OAuthBearer) => {
                (Mechanism::OAuthBearer, self.oauthbearer(&auth_bytes).await)
            }
            State::Handshaken(Mechanism::Plain) => (Mechanism::Plain, self.plain(&auth_bytes)),
            State::Handshaken(m @ (Mechanism::ScramSha256 | Mechanism::ScramSha512)) => {
                let hash = match m {
                    Mechanism::ScramSha512 => ScramMechanism::Sha512,
                    _ => ScramMechanism::Sha256,
                };
                let mut server = Box::new(ScramServer::new(hash));
                let shared = Arc::clone(&self.shared);
                match server.client_first(&auth_bytes, |user| shared.credential(user, hash)) {
                    Ok(server_first) => {
                        self.state = State::ScramFinal(server, m);
                        return AuthStep::Respond(authenticate_response(
                            id,
                            version,
                            0,
                            None,
                            &server_first,
                            0,
                        ));
                    }
                    Err(e) => (m, Err(Failure::new("bad_scram_message", e.to_string()))),
                }
            }
            State::ScramFinal(mut server, m) => {
                let outcome = match server.client_final(&auth_bytes) {
                    Ok((username, server_final)) => self
                        .user_identity(&username, m)
                        .map(|a| (a, server_final))
                        .ok_or_else(|| Failure::new("unknown_user", "authentication failed")),
                    Err(e) => Err(Failure::new("bad_credentials", e.to_string())),
                };
                match outcome {
                    Ok((authenticated, server_final)) => {
                        return self
                            .accept(id, version, m, reauth, authenticated, &server_final)
                            .await
                    }
                    Err(f) => (m, Err(f)),
                }
            }
            State::Start | State::Ready => {
                // Restore: a failed exchange closes the connection anyway, but keep the
                // identity's state consistent for the audit below.
                self.state = state;
                let detail = "SaslAuthenticate without a SaslHandshake".to_owned();
                self.refuse(header, "illegal_sasl_state", &detail).await;
                return AuthStep::RespondThenClose(
                    authenticate_response(id, version, ILLEGAL_SASL_STATE, Some(&detail), &[], 0),
                    CloseReason::AuthenticationFailed,
                    detail,
                );
            }
        };
        match outcome {
            Ok(authenticated) => {
                self.accept(id, version, mechanism, reauth, authenticated, &[])
                    .await
            }
            Err(failure) => self.fail(id, version, mechanism, reauth, failure).await,
        }
    }

    async fn oauthbearer(&self, auth_bytes: &[u8]) -> Result<Authenticated, Failure> {
        let response = oauthbearer::parse_client_response(auth_bytes)
            .map_err(|e| Failure::new("bad_oauthbearer_message", e.to_string()))?;
        match self.shared.tokens.validate(&response.token).await {
            Ok(token) => Ok(Authenticated {
                identity: Identity {
                    principal: token.principal,
                    groups: token.groups,
                    issuer: Some(token.issuer),
                    mechanism: Mechanism::OAuthBearer.name(),
                },
                token_expires: Some(token.expires_at),
                token_sha256: Some(token.token_sha256),
                client_id: token.client_id,
            }),
            Err(e) => Err(Failure {
                reason: e.reason(),
                message: e.to_string(),
                token_sha256: Some(crate::identity::token_sha256(&response.token)),
            }),
        }
    }

    fn plain(&self, auth_bytes: &[u8]) -> Result<Authenticated, Failure> {
        let response = plain::parse(auth_bytes)
            .map_err(|e| Failure::new("bad_plain_message", e.to_string()))?;
        if response
            .authzid
            .as_deref()
            .is_some_and(|z| !z.is_empty() && z != response.username)
        {
            return Err(Failure::new(
                "authzid_refused",
                "acting as another user (authzid) is not allowed",
            ));
        }
        // The same answer for an unknown user as for a wrong password.
        let verified = self.shared.users.get(&response.username).is_some_and(|u| {
            u.credentials
                .iter()
                .any(|c| c.verify_password(&response.password))
        });
        if !verified {
            let reason = if self.shared.users.contains_key(&response.username) {
                "bad_credentials"
            } else {
                "unknown_user"
            };
            return Err(Failure::new(
                reason,
                "authentication failed: invalid username or password",
            ));
        }
        self.user_identity(&response.username, Mechanism::Plain)
            .ok_or_else(|| Failure::new("unknown_user", "authentication failed"))
    }

    fn user_identity(&self, username: &str, mechanism: Mechanism) -> Option<Authenticated> {
        self.shared.users.get(username).map(|u| Authenticated {
            identity: Identity {
                principal: u.principal.clone(),
                groups: u.groups.clone(),
                issuer: None,
                mechanism: mechanism.name(),
            },
            token_expires: None,
            token_sha256: None,
            client_id: None,
        })
    }

    async fn accept(
        &mut self,
        correlation_id: i32,
        version: i16,
        mechanism: Mechanism,
        reauth: bool,
        authenticated: Authenticated,
        auth_bytes: &[u8],
    ) -> AuthStep {
        if let Some(previous) = &self.identity {
            if previous.principal != authenticated.identity.principal {
                let failure = Failure::new(
                    "principal_changed",
                    format!(
                        "re-authentication as {} on a session of {} (the principal must not change)",
                        authenticated.identity.principal, previous.principal
                    ),
                );
                return self
                    .fail(correlation_id, version, mechanism, reauth, failure)
                    .await;
            }
        }
        let lifetime = session_lifetime(
            authenticated.token_expires,
            self.shared.max_session_lifetime,
            SystemTime::now(),
        );
        self.expires = Some(Instant::now() + lifetime);
        self.identity = Some(authenticated.identity);
        self.state = State::Ready;
        let expires_wall = SystemTime::now() + lifetime;
        self.audit_success(
            reauth,
            Some((expires_wall, authenticated.token_sha256)),
            authenticated.client_id,
        )
        .await;
        let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
        AuthStep::Respond(authenticate_response(
            correlation_id,
            version,
            0,
            None,
            auth_bytes,
            lifetime_ms,
        ))
    }

    async fn fail(
        &mut self,
        correlation_id: i32,
        version: i16,
        mechanism: Mechanism,
        reauth: bool,
        failure: Failure,
    ) -> AuthStep {
        self.audit_failure(mechanism.name(), reauth, &failure).await;
        let message = format!("Authentication failed: {}", failure.message);
        AuthStep::RespondThenClose(
            authenticate_response(
                correlation_id,
                version,
                SASL_AUTHENTICATION_FAILED,
                Some(&message),
                &[],
                0,
            ),
            CloseReason::AuthenticationFailed,
            format!("{} ({})", failure.message, failure.reason),
        )
    }

    async fn refuse(&self, header: &RequestHeader, reason: &'static str, detail: &str) {
        tracing::warn!(
            session = self.session, client = %self.client, api_key = header.api_key,
            "request refused: {detail}"
        );
        self.audit
            .emit(AuditEvent::RequestRefused {
                session: self.session,
                client: self.client,
                principal: self.identity.as_ref().map(|i| i.principal.clone()),
                api_key: header.api_key,
                api_version: header.api_version,
                correlation_id: header.correlation_id,
                reason,
                detail: detail.to_owned(),
            })
            .await;
    }

    async fn audit_success(
        &self,
        reauth: bool,
        expiry: Option<(SystemTime, Option<String>)>,
        client_id: Option<String>,
    ) {
        let Some(identity) = &self.identity else {
            return;
        };
        let (session_expires, token_sha256) = match expiry {
            Some((at, hash)) => (Some(rfc3339(at)), hash),
            None => (None, None),
        };
        tracing::info!(
            session = self.session, client = %self.client, principal = %identity.principal,
            mechanism = identity.mechanism, reauthentication = reauth, "authenticated"
        );
        self.audit
            .emit(AuditEvent::Authentication {
                session: self.session,
                client: self.client,
                mechanism: identity.mechanism.to_owned(),
                outcome: AuthOutcome::Success,
                reauthentication: reauth,
                principal: Some(identity.principal.clone()),
                groups: identity.groups.clone(),
                issuer: identity.issuer.clone(),
                client_id,
                session_expires,
                token_sha256,
                reason: None,
                detail: None,
            })
            .await;
    }

    async fn audit_failure(&self, mechanism: &str, reauth: bool, failure: &Failure) {
        tracing::warn!(
            session = self.session, client = %self.client, mechanism, reason = failure.reason,
            "authentication failed: {}", failure.message
        );
        self.audit
            .emit(AuditEvent::Authentication {
                session: self.session,
                client: self.client,
                mechanism: mechanism.to_owned(),
                outcome: AuthOutcome::Failure,
                reauthentication: reauth,
                principal: self.identity.as_ref().map(|i| i.principal.clone()),
                groups: Vec::new(),
                issuer: None,
                client_id: None,
                session_expires: None,
                token_sha256: failure.token_sha256.clone(),
                reason: Some(failure.reason),
                detail: Some(failure.message.clone()),
            })
            .await;
    }
}

/// How long a new authentication lasts: until the token expires, at most `max`, and at least
/// 1 ms (0 would tell the client it never needs to re-authenticate).
fn session_lifetime(token_expires: Option<SystemTime>, max: Duration, now: SystemTime) -> Duration {
    let remaining = token_expires
        .map(|at| at.duration_since(now).unwrap_or_default())
        .unwrap_or(max);
    remaining.min(max).max(Duration::from_millis(1))
}

pub(crate) fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        audit::MemorySink,
        config::SaslUserConfig,
        kafka::sasl::{
            messages::{
                authenticate_request, decode_authenticate_response, decode_handshake_response,
                handshake_request,
            },
            plain,
            scram::ScramClient,
        },
    };

    const PASSWORD: &str = "correct horse battery staple";

    fn authenticator(max_lifetime_secs: u64) -> Arc<Authenticator> {
        let credential = |m| ScramCredential::generate(m, PASSWORD, 4096).to_string();
        let config = IdentityConfig {
            max_session_lifetime_secs: max_lifetime_secs,
            users: vec![
                SaslUserConfig {
                    username: "alice".into(),
                    principal: Some("User:alice".into()),
                    groups: vec!["payments".into()],
                    credentials: vec![
                        credential(ScramMechanism::Sha256),
                        credential(ScramMechanism::Sha512),
                    ],
                },
                SaslUserConfig {
                    username: "bob".into(),
                    principal: None,
                    groups: vec![],
                    credentials: vec![credential(ScramMechanism::Sha256)],
                },
            ],
            ..IdentityConfig::default()
        };
        Arc::new(Authenticator::new(&config).unwrap())
    }

    fn session(mechanisms: &[Mechanism], anonymous: bool) -> (SessionAuth, MemorySink) {
        session_with(authenticator(3600), mechanisms, anonymous)
    }

    fn session_with(
        shared: Arc<Authenticator>,
        mechanisms: &[Mechanism],
        anonymous: bool,
    ) -> (SessionAuth, MemorySink) {
        let sink = MemorySink::default();
        // The writer thread ends when the last handle (inside the session) is dropped.
        let (audit, _writer) = AuditLog::start(sink.clone(), 64);
        let listener = ListenerAuth {
            mechanisms: mechanisms.to_vec(),
            allow_anonymous: anonymous,
        };
        let auth = SessionAuth::new(shared, listener, audit, 7, "10.0.0.1:5000".parse().unwrap());
        (auth, sink)
    }

    async fn send(auth: &mut SessionAuth, frame: Bytes) -> AuthStep {
        let header = RequestHeader::parse(&frame).unwrap();
        auth.on_request(&header, &frame).await
    }

    fn metadata(correlation_id: i32) -> Bytes {
        let mut f = Vec::new();
        f.extend_from_slice(&3i16.to_be_bytes());
        f.extend_from_slice(&1i16.to_be_bytes());
        f.extend_from_slice(&correlation_id.to_be_bytes());
        f.extend_from_slice(&(-1i16).to_be_bytes());
        f.extend_from_slice(&0i32.to_be_bytes());
        let mut out = (f.len() as i32).to_be_bytes().to_vec();
        out.extend(f);
        Bytes::from(out)
    }

    fn handshake_code(step: &AuthStep, version: i16) -> (i16, Vec<String>) {
        let frame = match step {
            AuthStep::Respond(f) | AuthStep::RespondThenClose(f, ..) => f,
            other => panic!("no answer: {other:?}"),
        };
        let r = decode_handshake_response(frame, version).unwrap();
        (r.error_code, r.mechanisms)
    }

    fn authenticate_answer(step: &AuthStep, version: i16) -> (i16, Vec<u8>, i64) {
        let frame = match step {
            AuthStep::Respond(f) | AuthStep::RespondThenClose(f, ..) => f,
            other => panic!("no answer: {other:?}"),
        };
        let r = decode_authenticate_response(frame, version).unwrap();
        (r.error_code, r.auth_bytes.to_vec(), r.session_lifetime_ms)
    }

    /// Waits for the audit writer, then returns the events of type `kind`.
    async fn events(sink: &MemorySink, kind: &str) -> Vec<serde_json::Value> {
        events_n(sink, kind, 1).await
    }

    /// Waits until at least `n` events of type `kind` are written; returns them all.
    async fn events_n(sink: &MemorySink, kind: &str, n: usize) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        for _ in 0..200 {
            found = sink
                .json()
                .into_iter()
                .filter(|e| e["event"] == kind)
                .collect();
            if found.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        found
    }

    async fn plain_login(auth: &mut SessionAuth, user: &str, password: &str) -> AuthStep {
        let step = send(auth, handshake_request(1, 1, "t", "PLAIN")).await;
        assert_eq!(handshake_code(&step, 1).0, 0);
        send(
            auth,
            authenticate_request(2, 1, "t", &plain::encode(None, user, password)),
        )
        .await
    }

    #[tokio::test]
    async fn only_api_versions_and_sasl_pass_before_authentication() {
        let (mut auth, sink) = session(&[Mechanism::OAuthBearer], false);
        let api_versions = {
            let mut f = vec![0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0];
            f.extend_from_slice(&[0, 0]);
            let mut out = (f.len() as i32).to_be_bytes().to_vec();
            out.extend(f);
            Bytes::from(out)
        };
        assert_eq!(send(&mut auth, api_versions).await, AuthStep::Pass);
        let step = send(&mut auth, metadata(2)).await;
        assert!(
            matches!(step, AuthStep::Close(CloseReason::Unauthenticated, _)),
            "{step:?}"
        );
        let refused = events(&sink, "request_refused").await;
        assert_eq!(refused[0]["reason"], "unauthenticated");
        assert_eq!(refused[0]["api_key"], 3);
    }

    #[tokio::test]
    async fn anonymous_listeners_let_clients_in_as_anonymous() {
        let (mut auth, sink) = session(&[], true);
        assert_eq!(send(&mut auth, metadata(1)).await, AuthStep::Pass);
        assert_eq!(auth.identity().unwrap().principal, ANONYMOUS);
        let auths = events(&sink, "authentication").await;
        assert_eq!(auths[0]["mechanism"], "ANONYMOUS");
        assert_eq!(auths[0]["outcome"], "success");
    }

    #[tokio::test]
    async fn handshakes_out_of_order_or_for_other_mechanisms_fail_and_close() {
        let (mut auth, sink) = session(&[Mechanism::OAuthBearer], false);
        let step = send(&mut auth, handshake_request(1, 1, "t", "PLAIN")).await;
        assert_eq!(
            handshake_code(&step, 1),
            (UNSUPPORTED_SASL_MECHANISM, vec!["OAUTHBEARER".to_owned()])
        );
        assert!(matches!(step, AuthStep::RespondThenClose(..)));
        let failures = events(&sink, "authentication").await;
        assert_eq!(failures[0]["reason"], "mechanism_not_enabled");

        let (mut auth, _) = session(&[Mechanism::OAuthBearer], false);
        let step = send(&mut auth, handshake_request(1, 1, "t", "GSSAPI")).await;
        assert_eq!(handshake_code(&step, 1).0, UNSUPPORTED_SASL_MECHANISM);

        let (mut auth, _) = session(&[Mechanism::OAuthBearer], false);
        let step = send(&mut auth, handshake_request(1, 1, "t", "OAUTHBEARER")).await;
        assert_eq!(handshake_code(&step, 1).0, 0);
        let step = send(&mut auth, handshake_request(2, 1, "t", "OAUTHBEARER")).await;
        assert_eq!(handshake_code(&step, 1).0, ILLEGAL_SASL_STATE);
        assert!(matches!(step, AuthStep::RespondThenClose(..)));

        let (mut auth, _) = session(&[Mechanism::OAuthBearer], false);
        let step = send(&mut auth, handshake_request(1, 0, "t", "OAUTHBEARER")).await;
        assert_eq!(handshake_code(&step, 0).0, UNSUPPORTED_VERSION);

        let (mut auth, _) = session(&[Mechanism::OAuthBearer], false);
        let step = send(&mut auth, authenticate_request(1, 1, "t", b"n,,\x01\x01")).await;
        assert_eq!(authenticate_answer(&step, 1).0, ILLEGAL_SASL_STATE);
    }

    #[tokio::test]
    async fn empty_or_garbage_bearer_tokens_fail_with_an_authentication_error() {
        for message in [
            &b"n,,\x01auth=Bearer \x01\x01"[..],
            b"n,,\x01\x01",
            b"garbage",
            b"n,,\x01auth=Bearer not.a.jwt\x01\x01",
        ] {
            let (mut auth, sink) = session(&[Mechanism::OAuthBearer], false);
            send(&mut auth, handshake_request(1, 1, "t", "OAUTHBEARER")).await;
            let step = send(&mut auth, authenticate_request(2, 2, "t", message)).await;
            assert_eq!(authenticate_answer(&step, 2).0, SASL_AUTHENTICATION_FAILED);
            assert!(matches!(
                step,
                AuthStep::RespondThenClose(_, CloseReason::AuthenticationFailed, _)
            ));
            let failure = &events(&sink, "authentication").await[0];
            assert_eq!(failure["outcome"], "failure");
            assert!(failure["reason"].is_string(), "{failure}");
            assert!(auth.identity().is_none());
            // Still unauthenticated: nothing else passes.
            assert!(matches!(
                send(&mut auth, metadata(3)).await,
                AuthStep::Close(..)
            ));
        }
    }

    #[tokio::test]
    async fn plain_users_map_to_their_principal_and_wrong_passwords_fail_alike() {
        let (mut auth, sink) = session(&[Mechanism::Plain], false);
        let step = plain_login(&mut auth, "alice", PASSWORD).await;
        let (code, _, lifetime) = authenticate_answer(&step, 1);
        assert_eq!(code, 0);
        assert!(lifetime > 0 && lifetime <= 3_600_000, "{lifetime}");
        let identity = auth.identity().unwrap();
        assert_eq!(identity.principal, "User:alice");
        assert_eq!(identity.groups, vec!["payments".to_owned()]);
        assert_eq!(send(&mut auth, metadata(3)).await, AuthStep::Pass);
        let ok = &events(&sink, "authentication").await[0];
        assert_eq!(ok["principal"], "User:alice");
        assert_eq!(ok["groups"][0], "payments");

        let mut messages = Vec::new();
        for (user, password) in [("alice", "wrong"), ("mallory", PASSWORD)] {
            let (mut auth, _) = session(&[Mechanism::Plain], false);
            let step = plain_login(&mut auth, user, password).await;
            let AuthStep::RespondThenClose(frame, CloseReason::AuthenticationFailed, _) = &step
            else {
                panic!("{step:?}")
            };
            let r = decode_authenticate_response(frame, 1).unwrap();
            assert_eq!(r.error_code, SASL_AUTHENTICATION_FAILED);
            messages.push(r.error_message);
        }
        assert_eq!(
            messages[0], messages[1],
            "unknown user looks like a bad password"
        );
    }

    async fn scram_login(
        auth: &mut SessionAuth,
        mechanism: Mechanism,
        hash: ScramMechanism,
        user: &str,
        password: &str,
    ) -> AuthStep {
        let step = send(auth, handshake_request(1, 1, "t", mechanism.name())).await;
        assert_eq!(handshake_code(&step, 1).0, 0);
        let mut client = ScramClient::new(hash, user, password);
        let step = send(
            auth,
            authenticate_request(2, 2, "t", &client.client_first()),
        )
        .await;
        let (code, server_first, _) = authenticate_answer(&step, 2);
        assert_eq!(code, 0, "{step:?}");
        let client_final = client.server_first(&server_first).unwrap();
        let step = send(auth, authenticate_request(3, 2, "t", &client_final)).await;
        if let (0, server_final, _) = authenticate_answer(&step, 2) {
            client.server_final(&server_final).unwrap();
        }
        step
    }

    #[tokio::test]
    async fn scram_users_authenticate_with_either_hash_and_bad_passwords_fail() {
        for (mechanism, hash) in [
            (Mechanism::ScramSha256, ScramMechanism::Sha256),
            (Mechanism::ScramSha512, ScramMechanism::Sha512),
        ] {
            let (mut auth, _) = session(&[mechanism], false);
            let step = scram_login(&mut auth, mechanism, hash, "alice", PASSWORD).await;
            assert_eq!(authenticate_answer(&step, 2).0, 0);
            assert_eq!(auth.identity().unwrap().principal, "User:alice");
            assert_eq!(auth.identity().unwrap().mechanism, mechanism.name());

            let (mut auth, _) = session(&[mechanism], false);
            let step = scram_login(&mut auth, mechanism, hash, "alice", "nope").await;
            assert_eq!(authenticate_answer(&step, 2).0, SASL_AUTHENTICATION_FAILED);
            assert!(auth.identity().is_none());
        }
        // bob has no SHA-512 credential.
        let (mut auth, _) = session(&[Mechanism::ScramSha512], false);
        let step = scram_login(
            &mut auth,
            Mechanism::ScramSha512,
            ScramMechanism::Sha512,
            "bob",
            PASSWORD,
        )
        .await;
        assert_eq!(authenticate_answer(&step, 2).0, SASL_AUTHENTICATION_FAILED);
    }

    #[tokio::test]
    async fn reauthentication_keeps_the_principal_and_the_mechanism() {
        let shared = authenticator(3600);
        let both = [Mechanism::Plain, Mechanism::ScramSha256];
        let (mut auth, sink) = session_with(Arc::clone(&shared), &both, false);
        assert_eq!(
            authenticate_answer(&plain_login(&mut auth, "alice", PASSWORD).await, 1).0,
            0
        );
        // Again as alice: fine, and audited as a re-authentication.
        assert_eq!(
            authenticate_answer(&plain_login(&mut auth, "alice", PASSWORD).await, 1).0,
            0
        );
        let auths = events_n(&sink, "authentication", 2).await;
        assert_eq!(auths[0]["reauthentication"], false);
        assert_eq!(auths[1]["reauthentication"], true);
        // As bob on alice's session: refused.
        let step = plain_login(&mut auth, "bob", PASSWORD).await;
        assert_eq!(authenticate_answer(&step, 1).0, SASL_AUTHENTICATION_FAILED);
        assert!(matches!(step, AuthStep::RespondThenClose(..)));

        // Another mechanism on re-authentication: refused at the handshake.
        let (mut auth, _) = session_with(shared, &both, false);
        plain_login(&mut auth, "alice", PASSWORD).await;
        let step = send(&mut auth, handshake_request(5, 1, "t", "SCRAM-SHA-256")).await;
        assert_eq!(handshake_code(&step, 1).0, ILLEGAL_SASL_STATE);
    }

    #[tokio::test]
    async fn an_expired_session_is_closed_on_its_next_request() {
        let (mut auth, sink) = session_with(authenticator(1), &[Mechanism::Plain], false);
        let step = plain_login(&mut auth, "alice", PASSWORD).await;
        assert_eq!(
            authenticate_answer(&step, 1).2,
            1000,
            "lifetime = the maximum"
        );
        assert_eq!(send(&mut auth, metadata(3)).await, AuthStep::Pass);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let step = send(&mut auth, metadata(4)).await;
        assert!(
            matches!(step, AuthStep::Close(CloseReason::SessionExpired, _)),
            "{step:?}"
        );
        let refused = events(&sink, "request_refused").await;
        assert_eq!(refused[0]["reason"], "session_expired");
        assert_eq!(refused[0]["principal"], "User:alice");
    }

    #[test]
    fn the_session_lifetime_is_the_tokens_rest_capped_and_never_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let max = Duration::from_secs(3600);
        let in_60 = Some(now + Duration::from_secs(60));
        assert_eq!(session_lifetime(in_60, max, now), Duration::from_secs(60));
        let in_2h = Some(now + Duration::from_secs(7200));
        assert_eq!(session_lifetime(in_2h, max, now), max);
        assert_eq!(session_lifetime(None, max, now), max);
        let past = Some(now - Duration::from_secs(5));
        assert_eq!(session_lifetime(past, max, now), Duration::from_millis(1));
    }

    #[test]
    fn bad_user_credentials_in_the_config_are_named() {
        let config = IdentityConfig {
            users: vec![SaslUserConfig {
                username: "carol".into(),
                principal: None,
                groups: vec![],
                credentials: vec!["SCRAM-SHA-256:1:xx".into()],
            }],
            ..IdentityConfig::default()
        };
        let err = Authenticator::new(&config).err().unwrap().to_string();
        assert!(err.contains("identity.user[0] (carol)"), "{err}");
    }
}
