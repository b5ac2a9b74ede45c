//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, in one client message.
//!
//! PLAIN carries the password itself, so it is only offered where the operator enabled it; the
//! password is checked against the user's SCRAM credential
//! ([`ScramCredential::verify_password`](super::scram::ScramCredential::verify_password)), never
//! stored. RFC 4616 bounds each field to 255 bytes, which also bounds the work a client can
//! ask for. [`PlainResponse`]'s `Debug` hides the password.

use std::fmt;

use super::SaslError;

/// RFC 4616: each of authzid, authcid and passwd is at most 255 octets.
pub const MAX_FIELD_BYTES: usize = 255;

const WHAT: &str = "PLAIN message";

/// A client's PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainResponse {
    /// The identity to act as; `None` when empty (act as `username`).
    pub authzid: Option<String>,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for PlainResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainResponse")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses a PLAIN message: exactly two NULs, non-empty username and password, each field valid
/// UTF-8 of at most 255 bytes.
pub fn parse(bytes: &[u8]) -> Result<PlainResponse, SaslError> {
    let max = 3 * MAX_FIELD_BYTES + 2;
    if bytes.len() > max {
        return Err(SaslError::TooLarge {
            what: WHAT,
            len: bytes.len(),
            max,
        });
    }
    let mut fields = bytes.split(|&b| b == 0);
    let (Some(authzid), Some(username), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslError::malformed(
            WHAT,
            "expected authzid NUL username NUL password (exactly two NUL bytes)",
        ));
    };
    let authzid = field(authzid, "authorization id")?;
    let username = field(username, "username")?;
    let password = field(password, "password")?;
    if username.is_empty() {
        return Err(SaslError::malformed(WHAT, "empty username"));
    }
    if password.is_empty() {
        return Err(SaslError::malformed(WHAT, "empty password"));
    }
    Ok(PlainResponse {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

fn field<'a>(bytes: &'a [u8], name: &'static str) -> Result<&'a str, SaslError> {
    if bytes.len() > MAX_FIELD_BYTES {
        return Err(SaslError::malformed(
            WHAT,
            format!("{name} longer than {MAX_FIELD_BYTES} bytes"),
        ));
    }
    std::str::from_utf8(bytes)
        .map_err(|_| SaslError::malformed(WHAT, format!("{name} is not UTF-8")))
}

/// Encodes a PLAIN message (for the interceptor's own login to the broker). Brokers do not
/// apply RFC 4616's 255-byte bound, so neither does this.
pub fn encode(authzid: Option<&str>, username: &str, password: &str) -> Vec<u8> {
    let authzid = authzid.unwrap_or_default();
    let mut out = Vec::with_capacity(authzid.len() + username.len() + password.len() + 2);
    out.extend_from_slice(authzid.as_bytes());
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_authzid() {
        let got = parse(b"\0alice\0s3cret").unwrap();
        assert_eq!(
            got,
            PlainResponse {
                authzid: None,
                username: "alice".into(),
                password: "s3cret".into()
            }
        );
        let got = parse(b"admin\0alice\0s3cret").unwrap();
        assert_eq!(got.authzid.as_deref(), Some("admin"));
        // UTF-8 in every field (RFC 4616 section 4 example).
        let got = parse("\0Ursel\0kurt\u{e4}".as_bytes()).unwrap();
        assert_eq!(got.password, "kurtä");
        assert_eq!(
            parse(&encode(Some("z"), "u", "p"))
                .unwrap()
                .authzid
                .as_deref(),
            Some("z")
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let got = parse(b"\0alice\0hunter2").unwrap();
        let debug = format!("{got:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("alice"), "{debug}");
    }

    #[test]
    fn malformed_messages_are_refused_without_echoing_the_password() {
        let cases: &[&[u8]] = &[
            b"",
            b"alice",
            b"\0alice",
            b"\0alice\0",            // empty password
            b"\0\0hunter2",          // empty username
            b"\0alice\0hun\0ter2",   // three NULs
            b"\0alice\0\xffhunter2", // password not UTF-8
            b"\xc3\0alice\0hunter2", // authzid not UTF-8
        ];
        for case in cases {
            let err = parse(case).unwrap_err();
            assert!(
                matches!(err, SaslError::Malformed { .. }),
                "{case:?}: {err}"
            );
            assert!(!err.to_string().contains("hunter"), "{err}");
        }
    }

    #[test]
    fn fields_are_bounded_to_255_bytes() {
        let at_limit = format!("\0{}\0{}", "u".repeat(255), "p".repeat(255));
        assert!(parse(at_limit.as_bytes()).is_ok());
        let over = format!("\0{}\0p", "u".repeat(256));
        assert!(parse(over.as_bytes()).is_err());
        let over = format!("{}\0u\0p", "a".repeat(256));
        assert!(parse(over.as_bytes()).is_err());
        let huge = vec![b'x'; 100_000];
        assert!(matches!(parse(&huge), Err(SaslError::TooLarge { .. })));
    }
}
