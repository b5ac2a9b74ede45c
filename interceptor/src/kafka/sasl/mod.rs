//! SASL for Kafka: the mechanisms' message formats, SCRAM, the SaslHandshake/SaslAuthenticate
//! bodies, and the interceptor's own authentication to the broker.
//!
//! The interceptor terminates SASL itself: clients authenticate to it (OAUTHBEARER with an OIDC
//! token, or PLAIN/SCRAM against configured users), and it authenticates to the broker with its
//! own credentials on every upstream connection before relaying a single client byte. Every
//! parser here reads untrusted bytes, so none of them panics or allocates from a length it has
//! not checked against the bytes actually present; no error message ever carries a password,
//! proof or token.
//!
//! - [`messages`]: SaslHandshake / SaslAuthenticate requests and responses as whole frames.
//! - [`oauthbearer`], [`plain`], [`scram`]: the mechanisms' own messages (RFC 7628, 4616,
//!   5802/7677).
//! - [`secrets`]: the interceptor's broker credentials, from a root-owned file.
//! - [`upstream`]: the interceptor's SASL exchange with the broker.

use std::fmt;

use thiserror::Error;

pub mod messages;
pub mod oauthbearer;
pub mod plain;
pub mod scram;
pub mod secrets;
pub mod upstream;

pub use scram::ScramMechanism;

/// Kafka error code: the credentials (or token) did not authenticate.
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// Kafka error code: the mechanism asked for in SaslHandshake is not enabled.
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Kafka error code: a SASL request arrived when it was not expected.
pub const ILLEGAL_SASL_STATE: i16 = 34;
/// Kafka error code: the request's api version is not supported.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Api key of SaslHandshake.
pub const SASL_HANDSHAKE_KEY: i16 = 17;
/// Api key of SaslAuthenticate.
pub const SASL_AUTHENTICATE_KEY: i16 = 36;

/// SaslHandshake versions the interceptor serves. v0 means the SASL tokens that follow are
/// raw (unframed, not wrapped in SaslAuthenticate): not supported, and removed in Kafka 4.
pub const SASL_HANDSHAKE_MIN_VERSION: i16 = 1;
pub const SASL_HANDSHAKE_MAX_VERSION: i16 = 1;
/// SaslAuthenticate versions the interceptor serves (v2 is flexible).
pub const SASL_AUTHENTICATE_MIN_VERSION: i16 = 0;
pub const SASL_AUTHENTICATE_MAX_VERSION: i16 = 2;

/// A SASL mechanism the interceptor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    OAuthBearer,
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// Every mechanism, in the order listed to clients by default.
    pub const ALL: [Mechanism; 4] = [
        Mechanism::OAuthBearer,
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    /// The name as sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a SaslHandshake name: exact and case-sensitive, as Kafka compares.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash of a SCRAM mechanism.
    pub fn scram(self) -> Option<ScramMechanism> {
        match self {
            Mechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            Mechanism::ScramSha512 => Some(ScramMechanism::Sha512),
            Mechanism::OAuthBearer | Mechanism::Plain => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a SASL message was refused. Messages name what is wrong, never the secret values
/// (passwords, proofs, tokens) the message carried.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SaslError {
    /// The bytes do not follow the format of `what`.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{api} version {version} is not supported (supported: {min} to {max})")]
    UnsupportedVersion {
        api: &'static str,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("{what} is too large: {len} bytes, at most {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("channel binding is not supported (the client asked for it with \"p=\")")]
    ChannelBindingNotSupported,
    /// Wrong password, unknown user, bad proof: deliberately one and the same error.
    #[error("authentication failed: invalid username or password")]
    InvalidCredentials,
    /// The peer's SCRAM message carried `e=` (RFC 5802 server-error).
    #[error("SCRAM server reported an error: {0}")]
    ServerError(String),
    #[error("SCRAM server signature does not verify: the server does not know this password")]
    ServerSignatureMismatch,
    #[error("SCRAM iteration count {0} is outside the accepted range 4096 to 1000000")]
    IterationCount(u32),
    /// A step of an exchange was called out of order.
    #[error("SASL exchange out of order: {0}")]
    IllegalState(&'static str),
    /// A stored SCRAM credential (configuration) does not parse.
    #[error("invalid SCRAM credential: {0}")]
    InvalidCredential(String),
}

impl SaslError {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        SaslError::Malformed {
            what,
            reason: reason.into(),
        }
    }

    /// The Kafka error code a SaslAuthenticate (or SaslHandshake) response carries for this
    /// error.
    pub fn error_code(&self) -> i16 {
        match self {
            SaslError::UnsupportedVersion { .. } => UNSUPPORTED_VERSION,
            SaslError::IllegalState(_) => ILLEGAL_SASL_STATE,
            SaslError::Malformed { .. }
            | SaslError::TooLarge { .. }
            | SaslError::ChannelBindingNotSupported
            | SaslError::InvalidCredentials
            | SaslError::ServerError(_)
            | SaslError::ServerSignatureMismatch
            | SaslError::IterationCount(_)
            | SaslError::InvalidCredential(_) => SASL_AUTHENTICATION_FAILED,
        }
    }
}

/// Peer-supplied text made safe for an error message or a log line: control characters become
/// `?`, and it is cut to `max` characters.
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip_exactly() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Some(m));
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!(Mechanism::parse("plain"), None);
        assert_eq!(Mechanism::parse("SCRAM-SHA-1"), None);
        assert_eq!(Mechanism::parse("GSSAPI"), None);
        assert_eq!(Mechanism::parse(""), None);
        assert_eq!(Mechanism::parse("PLAIN "), None);
        assert_eq!(Mechanism::ScramSha512.scram(), Some(ScramMechanism::Sha512));
        assert_eq!(Mechanism::Plain.scram(), None);
        // The same list the configuration accepts.
        let names: Vec<_> = Mechanism::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, crate::config::SASL_MECHANISMS);
    }

    #[test]
    fn error_codes() {
        assert_eq!(SaslError::InvalidCredentials.error_code(), 58);
        assert_eq!(SaslError::IllegalState("x").error_code(), 34);
        let unsupported = SaslError::UnsupportedVersion {
            api: "SaslAuthenticate",
            version: 9,
            min: 0,
            max: 2,
        };
        assert_eq!(unsupported.error_code(), 35);
        assert_eq!(
            unsupported.to_string(),
            "SaslAuthenticate version 9 is not supported (supported: 0 to 2)"
        );
    }

    #[test]
    fn printable_strips_controls_and_cuts() {
        assert_eq!(printable("a\nb\x01c", 10), "a?b?c");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
    }
}
