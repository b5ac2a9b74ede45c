//! Why a token, a configuration or a fetch from an issuer was refused.
//!
//! [`TokenError`]'s message goes back to the Kafka client, so it never repeats token content
//! or key material; its [`TokenError::reason`] is the stable code audit events carry.

use thiserror::Error;

/// The `[identity]` configuration cannot be used.
#[derive(Debug, Error)]
pub enum IdentityConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot set up the HTTP client for issuers: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("token is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgNone,
    #[error("HMAC-signed tokens are not accepted")]
    HmacRefused,
    #[error("token signature algorithm is not accepted for its issuer or key")]
    AlgorithmNotAllowed,
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    #[error("token signing key is not known to its issuer")]
    UnknownKid,
    #[error("token has no key id and its issuer has several keys")]
    KidRequired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token issuer does not match its signing issuer")]
    WrongIssuer,
    #[error("token lacks the required claim {0}")]
    MissingClaim(String),
    #[error("token claim {0} has an invalid value")]
    BadClaim(String),
    #[error("signing keys of the token's issuer are unavailable; try again later")]
    KeysUnavailable,
}

impl TokenError {
    /// A short stable snake_case code for audit events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "token_too_large",
            Self::Malformed(_) => "malformed",
            Self::AlgNone => "alg_none",
            Self::HmacRefused => "hmac_refused",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKid => "unknown_kid",
            Self::KidRequired => "kid_required",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::MissingClaim(_) => "missing_claim",
            Self::BadClaim(_) => "bad_claim",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// A discovery or key set fetch that failed; logged, never shown to clients.
#[derive(Debug, Error)]
pub(crate) enum FetchError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("response is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("discovery document names issuer {found:?}, not the configured one")]
    IssuerMismatch { found: Option<String> },
    #[error("discovery document has no usable jwks_uri")]
    NoJwksUri,
    #[error("discovery document of an https issuer names a jwks_uri that is not https")]
    InsecureJwksUri,
    #[error("key set document has no \"keys\" array")]
    NotAKeySet,
}

impl FetchError {
    /// reqwest's own message omits the cause ("connection refused", "timed out"), which is
    /// what an operator needs to see.
    pub(crate) fn request(error: &reqwest::Error) -> Self {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Request(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_single_lines() {
        let all = [
            TokenError::TooLarge { max: 8192 },
            TokenError::Malformed("x"),
            TokenError::AlgNone,
            TokenError::HmacRefused,
            TokenError::AlgorithmNotAllowed,
            TokenError::UnknownIssuer,
            TokenError::UnknownKid,
            TokenError::KidRequired,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongAudience,
            TokenError::WrongIssuer,
            TokenError::MissingClaim("sub".into()),
            TokenError::BadClaim("groups".into()),
            TokenError::KeysUnavailable,
        ];
        let mut reasons = std::collections::HashSet::new();
        for e in all {
            let message = e.to_string();
            assert!(!message.contains('\n'), "{message}");
            assert!(!message.is_empty());
            let reason = e.reason();
            assert!(
                reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{reason}"
            );
            assert!(reasons.insert(reason), "duplicate reason {reason}");
        }
    }
}
