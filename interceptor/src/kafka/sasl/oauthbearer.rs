//! SASL OAUTHBEARER client response (RFC 7628 §3.1) as Kafka clients send it:
//!
//! ```text
//! gs2-header kvsep *kvpair kvsep       e.g. "n,,\x01auth=Bearer eyJ...\x01\x01"
//! gs2-header = ("n" / "y") "," ["a=" saslname] ","
//! kvpair     = key "=" value kvsep     key = 1*ALPHA; value = *(VCHAR / SP / HTAB / CR / LF)
//! kvsep      = %x01
//! ```
//!
//! The `auth` pair carries `Bearer <token>`; every other pair is a SASL extension (KIP-342).
//! Both the Java client (`OAuthBearerClientInitialResponse`) and librdkafka
//! (`rd_kafka_sasl_oauthbearer_build_client_first_message`) write exactly
//! `n,[a=authzid],\x01auth=Bearer <token>\x01[key=value\x01...]\x01`. Channel binding (`p=`) is
//! refused: the interceptor has none to offer.
//!
//! When a token is refused, the server may answer with an error challenge (a JSON status);
//! RFC 7628 then has the client reply with a lone kvsep ([`CLIENT_ERROR_ACK`]), after which the
//! server fails the exchange. The token never appears in an error or in `Debug`.

use std::fmt;

use super::SaslError;

/// The RFC 7628 separator between key/value pairs.
pub const KVSEP: u8 = 0x01;

/// What a client sends after an error challenge (RFC 7628 §3.2.3): a lone kvsep. The Java
/// client and librdkafka both send it.
pub const CLIENT_ERROR_ACK: &[u8] = b"\x01";

/// The key of the pair carrying the bearer token.
pub const AUTH_KEY: &str = "auth";

const WHAT: &str = "OAUTHBEARER client response";

/// A parsed OAUTHBEARER client response.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthBearerResponse {
    /// The bearer token (RFC 6750 `b64token`); never logged.
    pub token: String,
    /// The authorization identity from the GS2 header (`a=`), unescaped; `None` when absent.
    pub authzid: Option<String>,
    /// SASL extensions (every pair but `auth`), in the order sent.
    pub extensions: Vec<(String, String)>,
}

impl fmt::Debug for OAuthBearerResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthBearerResponse")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("authzid", &self.authzid)
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// Whether `bytes` is the client's reply to an error challenge ([`CLIENT_ERROR_ACK`]).
pub fn is_client_error_ack(bytes: &[u8]) -> bool {
    bytes == CLIENT_ERROR_ACK
}

/// Parses an OAUTHBEARER client response. The caller bounds its size (the token limit).
pub fn parse_client_response(bytes: &[u8]) -> Result<OAuthBearerResponse, SaslError> {
    if is_client_error_ack(bytes) {
        return Err(malformed(
            "a lone kvsep (the reply to an error challenge), not a client response",
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
    let (authzid, rest) = parse_gs2_header(text)?;
    let pairs = rest
        .strip_prefix('\x01')
        .ok_or_else(|| malformed("no kvsep (\\x01) after the GS2 header"))?;
    // The pairs each end with a kvsep, then one more kvsep ends the message.
    let pairs = pairs
        .strip_suffix('\x01')
        .ok_or_else(|| malformed("does not end with a kvsep (\\x01)"))?;
    let mut token = None;
    let mut extensions: Vec<(String, String)> = Vec::new();
    if !pairs.is_empty() {
        let pairs = pairs
            .strip_suffix('\x01')
            .ok_or_else(|| malformed("the last key/value pair is not followed by a kvsep"))?;
        for pair in pairs.split('\x01') {
            if pair.is_empty() {
                return Err(malformed(
                    "empty key/value pair (two kvseps before the end)",
                ));
            }
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| malformed("key/value pair without '='"))?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(malformed("a key is not 1*ALPHA"));
            }
            if key == AUTH_KEY {
                if token.is_some() {
                    return Err(malformed("more than one auth pair"));
                }
                token = Some(parse_auth(value)?);
                continue;
            }
            if !value.bytes().all(is_value_byte) {
                return Err(malformed(format!(
                    "the value of extension {key} has a character outside VCHAR, SP, HTAB, CR, LF"
                )));
            }
            if extensions.iter().any(|(k, _)| k == key) {
                return Err(malformed(format!("extension {key} appears more than once")));
            }
            extensions.push((key.to_owned(), value.to_owned()));
        }
    }
    let token = token.ok_or_else(|| malformed("no auth pair (auth=Bearer <token>)"))?;
    Ok(OAuthBearerResponse {
        token,
        authzid,
        extensions,
    })
}

/// Splits off the GS2 header: the optional authzid and the rest.
fn parse_gs2_header(text: &str) -> Result<(Option<String>, &str), SaslError> {
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed("no GS2 header (expected \"n,,\")"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(SaslError::ChannelBindingNotSupported),
        _ => return Err(malformed("GS2 header flag is not \"n\" or \"y\"")),
    }
    let (authzid, rest) = rest
        .split_once(',')
        .ok_or_else(|| malformed("GS2 header is not terminated by ','"))?;
    let authzid = match authzid {
        "" => None,
        _ => {
            let name = authzid
                .strip_prefix("a=")
                .ok_or_else(|| malformed("GS2 header authzid does not start with \"a=\""))?;
            Some(unescape_saslname(name).ok_or_else(|| malformed("invalid authzid"))?)
        }
    };
    Ok((authzid, rest))
}

/// RFC 5801 saslname: non-empty, `=2C` for ',' and `=3D` for '='; no other '=' and no NUL.
pub(crate) fn unescape_saslname(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find(['=', '\0']) {
        out.push_str(rest.get(..i)?);
        let escape = rest.get(i..i + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = rest.get(i + 3..)?;
    }
    out.push_str(rest);
    Some(out)
}

/// `Bearer <token>`: the scheme case-insensitive, one or more spaces, an RFC 6750 b64token.
fn parse_auth(value: &str) -> Result<String, SaslError> {
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| malformed("auth is not \"Bearer <token>\""))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed("auth scheme is not Bearer"));
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(malformed("empty bearer token"));
    }
    if !is_b64token(token) {
        return Err(malformed(
            "bearer token has characters outside the RFC 6750 b64token syntax",
        ));
    }
    Ok(token.to_owned())
}

/// RFC 6750: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// RFC 7628 value characters: VCHAR, SP, HTAB, CR, LF.
fn is_value_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7e | b' ' | b'\t' | b'\r' | b'\n')
}

fn malformed(reason: impl Into<String>) -> SaslError {
    SaslError::malformed(WHAT, reason)
}

/// Encodes a client response the way the Java client and librdkafka do (tests, tools).
pub fn encode_client_response(
    token: &str,
    authzid: Option<&str>,
    extensions: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = String::from("n,");
    if let Some(authzid) = authzid {
        out.push_str("a=");
        out.push_str(&authzid.replace('=', "=3D").replace(',', "=2C"));
    }
    out.push_str(",\x01auth=Bearer ");
    out.push_str(token);
    out.push('\x01');
    for (key, value) in extensions {
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('\x01');
    }
    out.push('\x01');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unsecured JWS as librdkafka's built-in token refresher makes it (alg none: ends with
    /// a '.'), from its unit tests.
    const RDKAFKA_TOKEN: &str =
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJmdWJhciIsImlhdCI6MS4wMDAsImV4cCI6MzYwMS4wMDB9.";
    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    #[test]
    fn librdkafka_message_without_extensions() {
        // "%s%sauth=Bearer %s%s" gs2_header="n,,", kvsep, token, kvsep; then the final kvsep.
        let bytes = format!("n,,\x01auth=Bearer {RDKAFKA_TOKEN}\x01\x01");
        let got = parse_client_response(bytes.as_bytes()).unwrap();
        assert_eq!(got.token, RDKAFKA_TOKEN);
        assert_eq!(got.authzid, None);
        assert!(got.extensions.is_empty());
    }

    #[test]
    fn librdkafka_message_with_extensions() {
        // Each extension as "%s=%s%s" name, value, kvsep, after the auth pair.
        let bytes = format!(
            "n,,\x01auth=Bearer {JWT}\x01logicalCluster=lkc-abc123\x01identityPoolId=pool-1\x01\x01"
        );
        let got = parse_client_response(bytes.as_bytes()).unwrap();
        assert_eq!(got.token, JWT);
        assert_eq!(
            got.extensions,
            [
                ("logicalCluster".to_owned(), "lkc-abc123".to_owned()),
                ("identityPoolId".to_owned(), "pool-1".to_owned())
            ]
        );
    }

    #[test]
    fn java_client_messages() {
        // OAuthBearerClientInitialResponse.toBytes: "n,%s,%sauth=Bearer %s%s%s%s" with authzid
        // "a=..." or "", SEPARATOR, token, SEPARATOR+extensions, SEPARATOR, SEPARATOR.
        let bytes = format!("n,a=alice,\x01auth=Bearer {JWT}\x01\x01");
        let got = parse_client_response(bytes.as_bytes()).unwrap();
        assert_eq!(got.authzid.as_deref(), Some("alice"));
        assert_eq!(got.token, JWT);
        let bytes = format!("n,,\x01auth=Bearer {JWT}\x01traceId=abc 123\t\x01scope=\x01\x01");
        let got = parse_client_response(bytes.as_bytes()).unwrap();
        assert_eq!(
            got.extensions,
            [
                ("traceId".to_owned(), "abc 123\t".to_owned()),
                ("scope".to_owned(), String::new())
            ]
        );
        assert_eq!(
            encode_client_response(JWT, Some("alice"), &[]),
            format!("n,a=alice,\x01auth=Bearer {JWT}\x01\x01").into_bytes()
        );
    }

    #[test]
    fn round_trips_through_the_encoder() {
        let bytes = encode_client_response(JWT, Some("a,b=c"), &[("k", "v v"), ("x", "y")]);
        let got = parse_client_response(&bytes).unwrap();
        assert_eq!(got.authzid.as_deref(), Some("a,b=c"));
        assert_eq!(got.token, JWT);
        assert_eq!(got.extensions.len(), 2);
    }

    #[test]
    fn scheme_is_case_insensitive_and_spaces_may_repeat() {
        for auth in ["bearer", "BEARER", "BeArEr"] {
            let bytes = format!("n,,\x01auth={auth}   {JWT}\x01\x01");
            assert_eq!(parse_client_response(bytes.as_bytes()).unwrap().token, JWT);
        }
        // y, (client supports channel binding, thinks the server does not) is fine.
        let bytes = format!("y,,\x01auth=Bearer {JWT}\x01\x01");
        assert!(parse_client_response(bytes.as_bytes()).is_ok());
        // RFC 6750 b64token: '~', '+', '/' and trailing '='.
        let bytes = "n,,\x01auth=Bearer ab~+/c==\x01\x01";
        assert_eq!(
            parse_client_response(bytes.as_bytes()).unwrap().token,
            "ab~+/c=="
        );
    }

    #[test]
    fn bad_messages_are_refused_with_clear_errors_that_never_show_the_token() {
        let secret = "SECRETTOKEN";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"n,,\x01auth=Bearer \x01\x01".to_vec(),
                "empty bearer token",
            ),
            (
                b"n,,\x01auth=Bearer    \x01\x01".to_vec(),
                "empty bearer token",
            ),
            (b"n,,\x01\x01".to_vec(), "no auth pair"),
            (b"n,,\x01k=v\x01\x01".to_vec(), "no auth pair"),
            (
                format!("n,,\x01auth=Basic {secret}\x01\x01").into_bytes(),
                "scheme",
            ),
            (
                format!("n,,\x01auth=Bearer{secret}\x01\x01").into_bytes(),
                "Bearer <token>",
            ),
            (
                format!("n,,\x01auth=Bearer {secret} \x01\x01").into_bytes(),
                "b64token",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01").into_bytes(),
                "kvsep",
            ),
            (format!("n,,\x01auth=Bearer {secret}").into_bytes(), "kvsep"),
            (
                format!("n,,auth=Bearer {secret}\x01\x01").into_bytes(),
                "after the GS2 header",
            ),
            (
                format!("n,\x01auth=Bearer {secret}\x01\x01").into_bytes(),
                "GS2",
            ),
            (
                format!("x,,\x01auth=Bearer {secret}\x01\x01").into_bytes(),
                "flag",
            ),
            (
                format!("n,b=x,\x01auth=Bearer {secret}\x01\x01").into_bytes(),
                "authzid",
            ),
            (
                format!("n,a=,\x01auth=Bearer {secret}\x01\x01").into_bytes(),
                "authzid",
            ),
            (
                format!("n,a=x=2,\x01auth=Bearer {secret}\x01\x01").into_bytes(),
                "authzid",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01auth=Bearer {secret}\x01\x01").into_bytes(),
                "more than one",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01\x01k=v\x01\x01").into_bytes(),
                "empty key/value",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01k1=v\x01\x01").into_bytes(),
                "1*ALPHA",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01=v\x01\x01").into_bytes(),
                "1*ALPHA",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01kv\x01\x01").into_bytes(),
                "without '='",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01k=\x7f\x01\x01").into_bytes(),
                "VCHAR",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01k=é\x01\x01").into_bytes(),
                "VCHAR",
            ),
            (
                format!("n,,\x01auth=Bearer {secret}\x01k=1\x01k=2\x01\x01").into_bytes(),
                "more than once",
            ),
            (b"n,,\x01auth=Bearer \xff\x01\x01".to_vec(), "UTF-8"),
            (b"\x01".to_vec(), "error challenge"),
            (Vec::new(), "GS2"),
        ];
        for (bytes, expected) in cases {
            let err = parse_client_response(&bytes).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(expected),
                "{:?}: {text}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(!text.contains(secret), "{text}");
            assert!(
                text.starts_with("malformed OAUTHBEARER client response"),
                "{text}"
            );
        }
    }

    #[test]
    fn channel_binding_is_refused() {
        let bytes = format!("p=tls-unique,,\x01auth=Bearer {JWT}\x01\x01");
        assert_eq!(
            parse_client_response(bytes.as_bytes()),
            Err(SaslError::ChannelBindingNotSupported)
        );
    }

    #[test]
    fn the_error_ack_is_recognised() {
        assert!(is_client_error_ack(b"\x01"));
        assert!(is_client_error_ack(CLIENT_ERROR_ACK));
        assert!(!is_client_error_ack(b"\x01\x01"));
        assert!(!is_client_error_ack(b""));
    }

    #[test]
    fn debug_hides_the_token() {
        let bytes = format!("n,,\x01auth=Bearer {JWT}\x01\x01");
        let got = parse_client_response(bytes.as_bytes()).unwrap();
        let debug = format!("{got:?}");
        assert!(!debug.contains(JWT), "{debug}");
        assert!(debug.contains(&format!("<{} bytes>", JWT.len())), "{debug}");
    }

    #[test]
    fn saslname_unescaping() {
        assert_eq!(unescape_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(unescape_saslname("plain").as_deref(), Some("plain"));
        assert_eq!(unescape_saslname(""), None);
        assert_eq!(unescape_saslname("a=2"), None);
        assert_eq!(unescape_saslname("a=2c"), None);
        assert_eq!(unescape_saslname("a="), None);
        assert_eq!(unescape_saslname("a\0b"), None);
        assert_eq!(unescape_saslname("é=3Dü").as_deref(), Some("é=ü"));
    }
}
