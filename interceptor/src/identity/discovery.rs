//! OpenID Connect discovery: where an issuer publishes its keys. The document must name
//! exactly the configured issuer (OpenID Connect Discovery 1.0, section 4.3), so a
//! misrouted or impersonating endpoint cannot hand us someone else's keys.

use serde_json::Value;

use super::{error::FetchError, http::HttpClient, settings::check_url};

/// Longest issuer string quoted back in a mismatch error (it comes from the network).
const QUOTE_MAX_CHARS: usize = 200;

/// Fetches `url` (the issuer's `/.well-known/openid-configuration`) and returns its
/// `jwks_uri`.
pub(crate) async fn jwks_uri(
    http: &HttpClient,
    issuer: &str,
    url: &str,
) -> Result<String, FetchError> {
    let doc = http.get_json(url).await?;
    jwks_uri_from(&doc, issuer)
}

fn jwks_uri_from(doc: &Value, issuer: &str) -> Result<String, FetchError> {
    let found = doc.get("issuer").and_then(Value::as_str);
    if found != Some(issuer) {
        return Err(FetchError::IssuerMismatch {
            found: found.map(|f| f.chars().take(QUOTE_MAX_CHARS).collect()),
        });
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or(FetchError::NoJwksUri)?;
    let url = check_url(uri).map_err(|_| FetchError::NoJwksUri)?;
    // Keys over plain HTTP would undo the TLS that protected discovery.
    if issuer.starts_with("https://") && url.scheme() != "https" {
        return Err(FetchError::InsecureJwksUri);
    }
    Ok(uri.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://idp.example/realms/a";

    #[test]
    fn takes_jwks_uri_when_the_issuer_matches_exactly() {
        let doc = json!({"issuer": ISSUER, "jwks_uri": "https://idp.example/certs"});
        assert_eq!(
            jwks_uri_from(&doc, ISSUER).unwrap(),
            "https://idp.example/certs"
        );
    }

    #[test]
    fn an_https_issuer_cannot_send_us_to_plain_http() {
        let doc = json!({"issuer": ISSUER, "jwks_uri": "http://idp.example/certs"});
        assert!(matches!(
            jwks_uri_from(&doc, ISSUER),
            Err(FetchError::InsecureJwksUri)
        ));
        let http_issuer = "http://127.0.0.1:8080";
        let doc = json!({"issuer": http_issuer, "jwks_uri": "http://127.0.0.1:8080/certs"});
        assert!(jwks_uri_from(&doc, http_issuer).is_ok());
    }

    #[test]
    fn refuses_another_issuer() {
        for found in [
            json!("https://idp.example/realms/a/"),
            json!(5),
            json!(null),
        ] {
            let doc = json!({"issuer": found, "jwks_uri": "https://idp.example/certs"});
            assert!(
                matches!(
                    jwks_uri_from(&doc, ISSUER),
                    Err(FetchError::IssuerMismatch { .. })
                ),
                "{doc}"
            );
        }
        let doc = json!({"jwks_uri": "https://idp.example/certs"});
        assert!(jwks_uri_from(&doc, ISSUER).is_err());
    }

    #[test]
    fn refuses_a_missing_or_bad_jwks_uri() {
        for uri in [
            json!(null),
            json!(1),
            json!("/certs"),
            json!("file:///etc/keys"),
        ] {
            let doc = json!({"issuer": ISSUER, "jwks_uri": uri});
            assert!(
                matches!(jwks_uri_from(&doc, ISSUER), Err(FetchError::NoJwksUri)),
                "{doc}"
            );
        }
    }
}
