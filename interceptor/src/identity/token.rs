//! A first, unverified look at a compact JWS: just enough (algorithm, key id, issuer) to pick
//! the issuer and key that then verify it. Nothing read here is trusted beyond that choice.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{error::TokenError, settings::asymmetric_algorithm};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unverified {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub issuer: String,
}

pub(crate) fn inspect(token: &str) -> Result<Unverified, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("a JWT has three dot-separated parts"));
    };

    let header = decode_object(header, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(_) => return Err(TokenError::Malformed("header alg is not a string")),
        None => return Err(TokenError::Malformed("header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    if ["HS256", "HS384", "HS512"]
        .iter()
        .any(|hs| alg.eq_ignore_ascii_case(hs))
    {
        return Err(TokenError::HmacRefused);
    }
    let alg = asymmetric_algorithm(alg).ok_or(TokenError::AlgorithmNotAllowed)?;
    // RFC 7515 section 4.1.11: a recipient that does not understand a critical extension
    // must refuse the token, and we understand none (b64=false would even change what is
    // signed).
    if header.contains_key("crit") {
        return Err(TokenError::Malformed(
            "critical header extensions are not supported",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed("header kid is not a string")),
    };

    let payload = decode_object(payload, "payload")?;
    let issuer = match payload.get("iss") {
        Some(Value::String(iss)) => iss.clone(),
        Some(_) => return Err(TokenError::BadClaim("iss".into())),
        None => return Err(TokenError::MissingClaim("iss".into())),
    };
    Ok(Unverified { alg, kid, issuer })
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        TokenError::Malformed(match what {
            "header" => "header is not base64url",
            _ => "payload is not base64url",
        })
    })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(match what {
            "header" => "header is not a JSON object",
            _ => "payload is not a JSON object",
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    const PAYLOAD: &str = r#"{"iss":"https://idp.example","sub":"a"}"#;

    #[test]
    fn reads_alg_kid_and_issuer() {
        let t = inspect(&token(r#"{"alg":"ES256","kid":"k1"}"#, PAYLOAD)).unwrap();
        assert_eq!(
            t,
            Unverified {
                alg: Algorithm::ES256,
                kid: Some("k1".into()),
                issuer: "https://idp.example".into()
            }
        );
    }

    #[test]
    fn refuses_alg_none_in_any_case() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            let t = format!("{}.{}.", b64(&header), b64(PAYLOAD));
            assert_eq!(inspect(&t), Err(TokenError::AlgNone), "{alg}");
        }
    }

    #[test]
    fn refuses_hmac_and_unknown_algorithms() {
        for alg in ["HS256", "HS384", "HS512", "hs256"] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            assert_eq!(
                inspect(&token(&header, PAYLOAD)),
                Err(TokenError::HmacRefused)
            );
        }
        for alg in ["ES512", "rs256", "RSA-OAEP", ""] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            assert_eq!(
                inspect(&token(&header, PAYLOAD)),
                Err(TokenError::AlgorithmNotAllowed),
                "{alg}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let good_header = b64(r#"{"alg":"RS256"}"#);
        let good_payload = b64(PAYLOAD);
        let cases = [
            String::new(),
            ".".into(),
            "a.b".into(),
            format!("{good_header}.{good_payload}"),
            format!("{good_header}.{good_payload}.sig.extra"),
            format!("!!!.{good_payload}.sig"),
            format!("{good_header}.%%%.sig"),
            format!("{}.{good_payload}.sig", b64("not json")),
            format!("{}.{good_payload}.sig", b64("[1,2]")),
            format!("{good_header}.{}.sig", b64("\"str\"")),
            format!("{}.{good_payload}.sig", b64(r#"{"alg":5}"#)),
            format!("{}.{good_payload}.sig", b64(r#"{"typ":"JWT"}"#)),
            format!("{}.{good_payload}.sig", b64(r#"{"alg":"RS256","kid":7}"#)),
            format!(
                "{}.{good_payload}.sig",
                b64(r#"{"alg":"RS256","crit":["b64"],"b64":false}"#)
            ),
            // Padding is not part of base64url in JWS.
            format!("{good_header}=.{good_payload}.sig"),
        ];
        for t in cases {
            assert!(
                matches!(inspect(&t), Err(TokenError::Malformed(_))),
                "{t:?}: {:?}",
                inspect(&t)
            );
        }
    }

    #[test]
    fn issuer_must_be_a_string() {
        let header = r#"{"alg":"RS256"}"#;
        assert_eq!(
            inspect(&token(header, r#"{"sub":"a"}"#)),
            Err(TokenError::MissingClaim("iss".into()))
        );
        assert_eq!(
            inspect(&token(header, r#"{"iss":["a"]}"#)),
            Err(TokenError::BadClaim("iss".into()))
        );
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for t in [
            "\u{0}.\u{0}.\u{0}",
            "é.é.é",
            "....",
            "a..",
            "..a",
            "eyJ.eyJ.eyJ",
        ] {
            assert!(inspect(t).is_err(), "{t:?}");
        }
    }
}
