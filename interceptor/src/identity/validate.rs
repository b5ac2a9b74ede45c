//! [`TokenValidator`]: an access token in, a principal (or a precise refusal) out.
//!
//! The unverified look at the token only picks the issuer and key; jsonwebtoken then
//! verifies the signature with exactly the one algorithm the header names (after checking
//! it is allowed for the issuer and fits the key), and the issuer, audience and time claims.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::SystemTime,
};

use jsonwebtoken::{errors::ErrorKind, Algorithm};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{
    claims,
    error::{IdentityConfigError, TokenError},
    http::HttpClient,
    jwks::{Selection, VerifyingKey},
    keys::{self, IssuerKeys},
    settings::{self, algorithm_name, IssuerSettings, Settings},
    token,
};

/// A token that passed every check, and who it says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    /// From the issuer's `principal_claim`.
    pub principal: String,
    /// The union of the issuer's `groups_claims`, first-seen order, no duplicates.
    pub groups: Vec<String>,
    pub issuer: String,
    /// `sub`.
    pub subject: Option<String>,
    /// `client_id`, else `azp`.
    pub client_id: Option<String>,
    /// `exp`.
    pub expires_at: SystemTime,
    pub key_id: Option<String>,
    /// The JWS algorithm, e.g. `RS256`.
    pub algorithm: String,
    /// Lowercase hex SHA-256 of the token text, so audit can correlate a token without
    /// recording it.
    pub token_sha256: String,
}

/// Lowercase hex SHA-256 of `token`.
pub fn token_sha256(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Validates access tokens against the configured issuers. Cheap to clone; the clones share
/// key caches. Background refreshes stop when the last clone is dropped or on
/// [`TokenValidator::shutdown`].
#[derive(Debug, Clone)]
pub struct TokenValidator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    issuers: Vec<Arc<IssuerKeys>>,
    /// Dropping the sender (with the last clone) stops the refresh tasks too.
    stop: watch::Sender<bool>,
    refresh_started: AtomicBool,
}

impl TokenValidator {
    /// Checks the configuration; no network.
    pub fn new(config: &crate::config::IdentityConfig) -> Result<Self, IdentityConfigError> {
        let (settings, issuers) = settings::check(config)?;
        let http =
            HttpClient::new(settings.http_timeout).map_err(IdentityConfigError::HttpClient)?;
        let issuers = issuers
            .into_iter()
            .map(|issuer| Arc::new(IssuerKeys::new(issuer, &settings, http.clone())))
            .collect();
        let (stop, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                issuers,
                stop,
                refresh_started: AtomicBool::new(false),
            }),
        })
    }

    /// Spawns, on the current tokio runtime, one task per issuer that fetches its keys at
    /// once (after discovery, unless `jwks_uri` is configured) and then every
    /// `jwks_refresh_secs`. Failures are logged and retried. Calling it again does nothing;
    /// outside a runtime it logs and does nothing.
    pub fn start_refresh(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("identity key refresh not started: no tokio runtime");
            return;
        };
        if self.inner.refresh_started.swap(true, Ordering::AcqRel) {
            return;
        }
        for issuer in &self.inner.issuers {
            runtime.spawn(keys::refresh_loop(
                Arc::clone(issuer),
                self.inner.settings.refresh_every,
                self.inner.stop.subscribe(),
            ));
        }
    }

    /// Stops the background refreshes now (they also stop when the last clone is dropped).
    /// Validation keeps working with the keys already fetched, and on-demand fetches.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }

    pub fn has_issuers(&self) -> bool {
        !self.inner.issuers.is_empty()
    }

    /// Validates one access token.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, TokenError> {
        let max = self.inner.settings.max_token_bytes;
        if token.len() > max {
            return Err(TokenError::TooLarge { max });
        }
        let unverified = token::inspect(token)?;
        let issuer = self
            .inner
            .issuers
            .iter()
            .find(|keys| keys.settings().issuer == unverified.issuer)
            .ok_or(TokenError::UnknownIssuer)?;
        let config = issuer.settings();
        if !config.algorithms.contains(&unverified.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let kid = unverified.kid.as_deref();

        let seen = issuer.attempts();
        let mut snapshot = issuer.usable();
        let mut refetched = false;
        loop {
            let missing = match &snapshot {
                None => TokenError::KeysUnavailable,
                Some(snapshot) => match snapshot.keys.select(kid, unverified.alg) {
                    Selection::Found(key) => {
                        let claims = verify(token, key, unverified.alg, config)?;
                        return accept(token, &claims, &unverified, config);
                    }
                    Selection::AlgorithmMismatch => return Err(TokenError::AlgorithmNotAllowed),
                    Selection::KidRequired => return Err(TokenError::KidRequired),
                    Selection::UnknownKid | Selection::NoCompatibleKey => TokenError::UnknownKid,
                },
            };
            if refetched {
                return Err(missing);
            }
            snapshot = issuer.refetch(seen).await;
            refetched = true;
        }
    }
}

/// Signature, `iss`, `aud`, `exp` and `nbf`, by jsonwebtoken with exactly `alg`.
fn verify(
    token: &str,
    key: &VerifyingKey,
    alg: Algorithm,
    config: &IssuerSettings,
) -> Result<Value, TokenError> {
    let mut validation = config.validation.clone();
    validation.algorithms = vec![alg];
    match jsonwebtoken::decode::<Value>(token, key.decoding_key(), &validation) {
        Ok(data) => Ok(data.claims),
        Err(error) => Err(match error.into_kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim),
            ErrorKind::InvalidClaimFormat(claim) => TokenError::BadClaim(claim),
            ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => TokenError::Malformed("token could not be decoded"),
            // InvalidSignature, and key errors (keys are checked when loaded, so these would
            // mean the signature cannot be verified with this key either).
            _ => TokenError::BadSignature,
        }),
    }
}

fn accept(
    token: &str,
    claims: &Value,
    unverified: &token::Unverified,
    config: &IssuerSettings,
) -> Result<ValidatedToken, TokenError> {
    let client_id = match claims::optional_string(claims, "client_id")? {
        Some(id) => Some(id),
        None => claims::optional_string(claims, "azp")?,
    };
    Ok(ValidatedToken {
        principal: claims::principal(claims, &config.principal_claim)?,
        groups: claims::groups(claims, &config.groups_claims)?,
        issuer: config.issuer.clone(),
        subject: claims::optional_string(claims, "sub")?,
        client_id,
        expires_at: claims::expires_at(claims)?,
        key_id: unverified.kid.clone(),
        algorithm: algorithm_name(unverified.alg).to_owned(),
        token_sha256: token_sha256(token),
    })
}

#[cfg(test)]
impl TokenValidator {
    /// Completed key fetches (successful or not) over all issuers.
    pub(super) fn fetch_attempts(&self) -> u64 {
        self.inner.issuers.iter().map(|i| i.attempts()).sum()
    }
}
