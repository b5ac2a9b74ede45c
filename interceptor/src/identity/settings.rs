//! The `[identity]` configuration checked once, up front, and turned into the shapes
//! validation needs, so a bad issuer entry fails at startup instead of on the first token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use reqwest::Url;

use super::error::IdentityConfigError;
use crate::config::{IdentityConfig, IssuerConfig};

/// Every asymmetric algorithm jsonwebtoken verifies; an issuer without an explicit list
/// accepts these.
pub(crate) const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// jsonwebtoken computes `now - leeway` and `now + leeway` in u64; a day is far beyond any
/// sane clock difference and keeps that arithmetic away from overflow.
const MAX_CLOCK_SKEW_SECS: u64 = 86_400;

/// The name JWS uses for `alg`.
pub(crate) fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// An asymmetric signature algorithm by its exact JWS name.
pub(crate) fn asymmetric_algorithm(name: &str) -> Option<Algorithm> {
    DEFAULT_ALGORITHMS
        .into_iter()
        .find(|&alg| algorithm_name(alg) == name)
}

/// Timing and limits shared by all issuers.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub max_token_bytes: usize,
    pub refresh_every: Duration,
    pub min_refetch: Duration,
    pub max_stale: Duration,
    pub http_timeout: Duration,
}

/// One issuer, checked.
#[derive(Debug, Clone)]
pub(crate) struct IssuerSettings {
    pub issuer: String,
    /// Configured explicitly; otherwise discovered.
    pub jwks_uri: Option<String>,
    pub discovery_url: String,
    pub algorithms: Vec<Algorithm>,
    pub principal_claim: String,
    pub groups_claims: Vec<String>,
    /// Audience, issuer, leeway and required claims; the algorithm is set per token.
    pub validation: Validation,
}

pub(crate) fn check(
    config: &IdentityConfig,
) -> Result<(Settings, Vec<IssuerSettings>), IdentityConfigError> {
    let positive = [
        ("identity.max_token_bytes", config.max_token_bytes as u64),
        ("identity.jwks_refresh_secs", config.jwks_refresh_secs),
        ("identity.jwks_max_stale_secs", config.jwks_max_stale_secs),
        ("identity.http_timeout_ms", config.http_timeout_ms),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err(invalid(key, "must be greater than 0"));
        }
    }
    if config.clock_skew_secs > MAX_CLOCK_SKEW_SECS {
        return Err(invalid(
            "identity.clock_skew_secs",
            format!("must be at most {MAX_CLOCK_SKEW_SECS}"),
        ));
    }
    let settings = Settings {
        max_token_bytes: config.max_token_bytes,
        refresh_every: Duration::from_secs(config.jwks_refresh_secs),
        min_refetch: Duration::from_secs(config.jwks_min_refetch_secs),
        max_stale: Duration::from_secs(config.jwks_max_stale_secs),
        http_timeout: Duration::from_millis(config.http_timeout_ms),
    };
    let mut issuers: Vec<IssuerSettings> = Vec::with_capacity(config.issuers.len());
    for (i, issuer) in config.issuers.iter().enumerate() {
        let checked = check_issuer(i, issuer, config.clock_skew_secs)?;
        if let Some(j) = issuers.iter().position(|o| o.issuer == checked.issuer) {
            return Err(invalid(
                &format!("identity.issuer[{i}].issuer"),
                format!("{:?} is already identity.issuer[{j}]", checked.issuer),
            ));
        }
        issuers.push(checked);
    }
    Ok((settings, issuers))
}

fn check_issuer(
    i: usize,
    config: &IssuerConfig,
    clock_skew_secs: u64,
) -> Result<IssuerSettings, IdentityConfigError> {
    let key = |field: &str| format!("identity.issuer[{i}].{field}");

    let url = check_url(&config.issuer).map_err(|m| invalid(&key("issuer"), m))?;
    // The issuer identifier is compared as an exact string and extended with the discovery
    // path (OpenID Connect Discovery 1.0, section 4), which a query or fragment would break.
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(&key("issuer"), "must not have a query or fragment"));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        tracing::warn!(
            issuer = %config.issuer,
            "issuer uses plain HTTP: its keys can be replaced in transit"
        );
    }
    if let Some(uri) = &config.jwks_uri {
        check_url(uri).map_err(|m| invalid(&key("jwks_uri"), m))?;
    }

    if config.audiences.is_empty() {
        return Err(invalid(
            &key("audiences"),
            "at least one audience is required",
        ));
    }
    if config.audiences.iter().any(String::is_empty) {
        return Err(invalid(&key("audiences"), "an audience must not be empty"));
    }

    let algorithms = if config.algorithms.is_empty() {
        DEFAULT_ALGORITHMS.to_vec()
    } else {
        let mut algorithms = Vec::with_capacity(config.algorithms.len());
        for name in &config.algorithms {
            let alg = check_algorithm(name).map_err(|m| invalid(&key("algorithms"), m))?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        algorithms
    };

    check_claim_path(&config.principal_claim).map_err(|m| invalid(&key("principal_claim"), m))?;
    for path in &config.groups_claims {
        check_claim_path(path).map_err(|m| invalid(&key("groups_claims"), m))?;
    }

    // The algorithm is replaced by the token's own for each validation.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = clock_skew_secs;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_audience(&config.audiences);
    validation.set_issuer(&[&config.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);

    Ok(IssuerSettings {
        issuer: config.issuer.clone(),
        jwks_uri: config.jwks_uri.clone(),
        discovery_url: format!(
            "{}/.well-known/openid-configuration",
            config.issuer.trim_end_matches('/')
        ),
        algorithms,
        principal_claim: config.principal_claim.clone(),
        groups_claims: config.groups_claims.clone(),
        validation,
    })
}

/// An absolute http(s) URL with a host.
pub(crate) fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{text:?} is not an https or http URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_algorithm(name: &str) -> Result<Algorithm, String> {
    if let Some(alg) = asymmetric_algorithm(name) {
        return Ok(alg);
    }
    match name.parse::<Algorithm>() {
        Ok(alg) if alg.family() == AlgorithmFamily::Hmac => Err(format!(
            "{name} is a shared-secret (HMAC) algorithm, which is never accepted"
        )),
        _ => Err(format!(
            "unknown algorithm {name:?} (known: {})",
            DEFAULT_ALGORITHMS.map(algorithm_name).join(", ")
        )),
    }
}

fn check_claim_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("a claim path must not be empty".into());
    }
    if path.split('.').any(str::is_empty) {
        return Err(format!("{path:?} has an empty path segment"));
    }
    Ok(())
}

fn invalid(key: &str, message: impl Into<String>) -> IdentityConfigError {
    IdentityConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(url: &str) -> IssuerConfig {
        IssuerConfig {
            issuer: url.into(),
            audiences: vec!["kafka".into()],
            jwks_uri: None,
            algorithms: Vec::new(),
            principal_claim: "sub".into(),
            groups_claims: vec!["groups".into()],
        }
    }

    fn config(issuers: Vec<IssuerConfig>) -> IdentityConfig {
        IdentityConfig {
            issuers,
            ..IdentityConfig::default()
        }
    }

    fn error(c: &IdentityConfig) -> String {
        check(c).unwrap_err().to_string()
    }

    #[test]
    fn defaults_accept_every_asymmetric_algorithm() {
        let (_, issuers) = check(&config(vec![issuer("https://idp.example/realms/a/")])).unwrap();
        assert_eq!(issuers[0].algorithms, DEFAULT_ALGORITHMS.to_vec());
        assert_eq!(
            issuers[0].discovery_url,
            "https://idp.example/realms/a/.well-known/openid-configuration"
        );
    }

    #[test]
    fn bad_issuer_entries_name_their_key() {
        let err = error(&config(vec![issuer("idp.example")]));
        assert!(err.contains("identity.issuer[0].issuer"), "{err}");
        let err = error(&config(vec![issuer("ftp://idp.example")]));
        assert!(err.contains("identity.issuer[0].issuer"), "{err}");
        let err = error(&config(vec![issuer("https://idp.example?x=1")]));
        assert!(err.contains("query"), "{err}");

        let mut i = issuer("https://idp.example");
        i.audiences.clear();
        let err = error(&config(vec![i]));
        assert!(err.contains("identity.issuer[0].audiences"), "{err}");

        let mut i = issuer("https://idp.example");
        i.audiences = vec![String::new()];
        assert!(error(&config(vec![i])).contains("audiences"));

        let mut i = issuer("https://idp.example");
        i.jwks_uri = Some("not a url".into());
        assert!(error(&config(vec![i])).contains("identity.issuer[0].jwks_uri"));

        let mut i = issuer("https://idp.example");
        i.principal_claim = String::new();
        assert!(error(&config(vec![i])).contains("principal_claim"));

        let mut i = issuer("https://idp.example");
        i.groups_claims = vec!["realm_access..roles".into()];
        assert!(error(&config(vec![i])).contains("groups_claims"));

        let err = error(&config(vec![
            issuer("https://a.example"),
            issuer("https://a.example"),
        ]));
        assert!(err.contains("identity.issuer[1].issuer"), "{err}");
    }

    #[test]
    fn algorithms_must_be_known_and_asymmetric() {
        let mut i = issuer("https://idp.example");
        i.algorithms = vec!["RS256".into(), "ES256".into(), "RS256".into()];
        let (_, issuers) = check(&config(vec![i])).unwrap();
        assert_eq!(
            issuers[0].algorithms,
            vec![Algorithm::RS256, Algorithm::ES256]
        );

        for bad in ["HS256", "none", "rs256", "ES512", ""] {
            let mut i = issuer("https://idp.example");
            i.algorithms = vec![bad.into()];
            let err = error(&config(vec![i]));
            assert!(
                err.contains("identity.issuer[0].algorithms"),
                "{bad}: {err}"
            );
        }
        let mut i = issuer("https://idp.example");
        i.algorithms = vec!["HS512".into()];
        assert!(error(&config(vec![i])).contains("HMAC"));
    }

    #[test]
    fn global_values_are_bounded() {
        let mut c = config(Vec::new());
        c.jwks_refresh_secs = 0;
        assert!(error(&c).contains("identity.jwks_refresh_secs"));
        let mut c = config(Vec::new());
        c.http_timeout_ms = 0;
        assert!(error(&c).contains("identity.http_timeout_ms"));
        let mut c = config(Vec::new());
        c.clock_skew_secs = u64::MAX;
        assert!(error(&c).contains("identity.clock_skew_secs"));
        let mut c = config(Vec::new());
        c.jwks_min_refetch_secs = 0;
        assert!(check(&c).is_ok());
    }
}
