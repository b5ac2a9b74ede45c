//! Tokens in, verdicts out: algorithms, signatures, time and audience claims, principal and
//! groups mapping, against an issuer served over HTTP.

use std::time::{Duration, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::support::*;
use crate::identity::{token_sha256, TokenError, ValidatedToken};

/// An issuer with one key of every type; the RSA key (`rsa`) signs with whatever alg the
/// token needs.
struct AllKeys {
    idp: Idp,
    p256: TestKey,
    p384: TestKey,
    ed: TestKey,
}

async fn all_keys() -> AllKeys {
    let rsa = TestKey::rsa("rsa", Algorithm::RS256);
    let p256 = TestKey::p256("p256");
    let p384 = TestKey::p384("p384");
    let ed = TestKey::ed25519("ed");
    let idp = Idp::start(&[&rsa, &p256, &p384, &ed]).await;
    AllKeys {
        idp,
        p256,
        p384,
        ed,
    }
}

/// An issuer with a single RSA key `k1`, and a validator for it.
async fn one_key() -> (Idp, TestKey, crate::identity::TokenValidator) {
    let key = TestKey::rsa("k1", Algorithm::RS256);
    let idp = Idp::start(&[&key]).await;
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    (idp, key, v)
}

fn with(mut claims: Value, changes: Value) -> Value {
    if let (Value::Object(c), Value::Object(changes)) = (&mut claims, changes) {
        for (k, v) in changes {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    claims
}

#[tokio::test]
async fn good_tokens_for_every_algorithm() {
    let k = all_keys().await;
    let v = validator(&config(vec![issuer_config(&k.idp.issuer)]));
    let rsa_algs = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];
    let mut signed: Vec<(String, &str, &str)> = rsa_algs
        .iter()
        .map(|&alg| {
            let key = TestKey::rsa("rsa", alg);
            let name = crate::identity::settings::algorithm_name(alg);
            (key.sign(&claims(&k.idp.issuer)), name, "rsa")
        })
        .collect();
    signed.push((k.p256.sign(&claims(&k.idp.issuer)), "ES256", "p256"));
    signed.push((k.p384.sign(&claims(&k.idp.issuer)), "ES384", "p384"));
    signed.push((k.ed.sign(&claims(&k.idp.issuer)), "EdDSA", "ed"));

    for (token, alg, kid) in signed {
        let got = v
            .validate(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        let exp = claims(&k.idp.issuer)["exp"].as_u64().unwrap();
        assert_eq!(
            got,
            ValidatedToken {
                principal: "alice".into(),
                groups: vec!["payments".into(), "audit".into()],
                issuer: k.idp.issuer.clone(),
                subject: Some("alice".into()),
                client_id: None,
                expires_at: got.expires_at,
                key_id: Some(kid.into()),
                algorithm: alg.into(),
                token_sha256: token_sha256(&token),
            }
        );
        let exp_at = UNIX_EPOCH + Duration::from_secs(exp);
        let drift = got
            .expires_at
            .duration_since(exp_at)
            .or_else(|_| exp_at.duration_since(got.expires_at))
            .unwrap();
        assert!(drift <= Duration::from_secs(2));
    }
    // One discovery and one key fetch served all of them.
    assert_eq!(k.idp.discovery_hits(), 1);
    assert_eq!(k.idp.jwks_hits(), 1);
    assert!(v.has_issuers());
}

#[test]
fn token_hash_is_lowercase_hex_sha256() {
    assert_eq!(
        token_sha256("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[tokio::test]
async fn time_claims_are_checked_with_the_skew() {
    let (idp, key, v) = one_key().await;
    let c = claims(&idp.issuer);
    let now = now();

    let expired = key.sign(&with(c.clone(), json!({"exp": now - 100})));
    assert_eq!(v.validate(&expired).await, Err(TokenError::Expired));
    assert_eq!(TokenError::Expired.reason(), "expired");

    let early = key.sign(&with(c.clone(), json!({"nbf": now + 100})));
    assert_eq!(v.validate(&early).await, Err(TokenError::NotYetValid));

    let inside = key.sign(&with(c.clone(), json!({"exp": now - 10, "nbf": now + 10})));
    v.validate(&inside).await.expect("within clock skew");

    let no_exp = key.sign(&with(c.clone(), json!({"exp": null})));
    assert_eq!(
        v.validate(&no_exp).await,
        Err(TokenError::MissingClaim("exp".into()))
    );
    let text_exp = key.sign(&with(c.clone(), json!({"exp": "tomorrow"})));
    assert!(v.validate(&text_exp).await.is_err());
    let bad_nbf = key.sign(&with(c.clone(), json!({"nbf": "soon"})));
    assert_eq!(
        v.validate(&bad_nbf).await,
        Err(TokenError::BadClaim("nbf".into()))
    );
    // iat is not required.
    let no_iat = key.sign(&with(c, json!({"iat": null})));
    v.validate(&no_iat).await.expect("iat is optional");
}

#[tokio::test]
async fn issuer_must_be_configured_exactly() {
    let (idp, key, v) = one_key().await;
    for iss in [
        format!("{}/", idp.issuer),
        format!("{}/other", idp.issuer),
        idp.issuer.to_uppercase(),
        "https://evil.example".into(),
    ] {
        let token = key.sign(&with(claims(&idp.issuer), json!({ "iss": iss })));
        let err = v.validate(&token).await.unwrap_err();
        assert_eq!(err, TokenError::UnknownIssuer, "{iss}");
        assert_eq!(err.reason(), "unknown_issuer");
    }
    // Deciding that needs no keys.
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn audience_must_contain_a_configured_one() {
    let (idp, key, v) = one_key().await;
    let c = claims(&idp.issuer);
    let wrong = key.sign(&with(c.clone(), json!({"aud": "billing"})));
    let err = v.validate(&wrong).await.unwrap_err();
    assert_eq!(err, TokenError::WrongAudience);
    assert_eq!(err.reason(), "wrong_audience");

    let array = key.sign(&with(c.clone(), json!({"aud": ["billing", AUDIENCE]})));
    v.validate(&array).await.expect("audience in array");
    let array_without = key.sign(&with(c.clone(), json!({"aud": ["billing", "web"]})));
    assert_eq!(
        v.validate(&array_without).await,
        Err(TokenError::WrongAudience)
    );
    let missing = key.sign(&with(c, json!({"aud": null})));
    assert_eq!(
        v.validate(&missing).await,
        Err(TokenError::MissingClaim("aud".into()))
    );
}

#[tokio::test]
async fn any_configured_audience_will_do() {
    let key = TestKey::rsa("k1", Algorithm::RS256);
    let idp = Idp::start(&[&key]).await;
    let mut issuer = issuer_config(&idp.issuer);
    issuer.audiences = vec!["a".into(), "b".into()];
    let v = validator(&config(vec![issuer]));
    let token = key.sign(&with(claims(&idp.issuer), json!({"aud": ["x", "b"]})));
    v.validate(&token).await.expect("second audience");
}

#[tokio::test]
async fn bad_signatures_are_refused() {
    let (idp, key, v) = one_key().await;
    let token = key.sign(&claims(&idp.issuer));
    v.validate(&token).await.expect("genuine token");

    // Payload changed after signing.
    let parts: Vec<&str> = token.split('.').collect();
    let forged = with(claims(&idp.issuer), json!({"sub": "mallory"}));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    let err = v.validate(&tampered).await.unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
    assert_eq!(err.reason(), "bad_signature");

    // Signed by another key that claims the same kid.
    let impostor = TestKey::other_rsa("k1", Algorithm::RS256);
    assert_eq!(
        v.validate(&impostor.sign(&claims(&idp.issuer))).await,
        Err(TokenError::BadSignature)
    );

    // Signature cut short, empty, or not base64url.
    let short = &token[..token.len() - 10];
    assert_eq!(v.validate(short).await, Err(TokenError::BadSignature));
    let empty = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(v.validate(&empty).await, Err(TokenError::BadSignature));
    let garbage = format!("{}.{}.!!!", parts[0], parts[1]);
    assert!(v.validate(&garbage).await.is_err());
}

#[tokio::test]
async fn ec_signature_by_another_key_with_the_same_kid_is_refused() {
    let key = TestKey::p256("ec");
    let idp = Idp::start(&[&key]).await;
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    let impostor = TestKey::p256("ec");
    assert_eq!(
        v.validate(&impostor.sign(&claims(&idp.issuer))).await,
        Err(TokenError::BadSignature)
    );
    v.validate(&key.sign(&claims(&idp.issuer))).await.unwrap();
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (idp, _key, v) = one_key().await;
    for alg in ["none", "None", "NONE"] {
        let token = raw_token(&json!({"alg": alg, "kid": "k1"}), &claims(&idp.issuer), "");
        let err = v.validate(&token).await.unwrap_err();
        assert_eq!(err, TokenError::AlgNone, "{alg}");
        assert_eq!(err.reason(), "alg_none");
    }
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_is_refused() {
    let rsa = TestKey::rsa("k1", Algorithm::RS256);
    let idp = Idp::start(&[&rsa]).await;
    // Even with a symmetric key published under the same kid, HMAC never gets a chance.
    let mut jwks = vec![rsa.jwk()];
    jwks.push(json!({
        "kty": "oct",
        "kid": "k1",
        "k": URL_SAFE_NO_PAD.encode(TestKey::rsa_public_der()),
    }));
    idp.set_jwks(&json!({ "keys": jwks }));
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));

    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let mut header = Header::new(alg);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(&idp.issuer),
            &EncodingKey::from_secret(&TestKey::rsa_public_der()),
        )
        .unwrap();
        let err = v.validate(&token).await.unwrap_err();
        assert_eq!(err, TokenError::HmacRefused);
        assert_eq!(err.reason(), "hmac_refused");
    }
    // The RSA key itself still works.
    v.validate(&rsa.sign(&claims(&idp.issuer))).await.unwrap();
}

#[tokio::test]
async fn algorithm_must_be_allowed_and_fit_the_key() {
    let rsa = TestKey::rsa("rsa", Algorithm::RS256);
    let ec = TestKey::p256("ec");
    let pinned = TestKey::other_rsa("pinned", Algorithm::RS256);
    let idp = Idp::start(&[]).await;
    let mut pinned_jwk = pinned.jwk();
    pinned_jwk["alg"] = json!("RS256");
    idp.set_jwks(&json!({"keys": [rsa.jwk(), ec.jwk(), pinned_jwk]}));
    let mut issuer = issuer_config(&idp.issuer);
    issuer.algorithms = vec!["RS256".into(), "PS256".into(), "ES256".into()];
    let v = validator(&config(vec![issuer]));
    let c = claims(&idp.issuer);

    // Not in the issuer's list.
    let rs512 = TestKey::rsa("rsa", Algorithm::RS512).sign(&c);
    let err = v.validate(&rs512).await.unwrap_err();
    assert_eq!(err, TokenError::AlgorithmNotAllowed);
    assert_eq!(err.reason(), "algorithm_not_allowed");

    // ES256 signature but the kid names an RSA key.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa".into());
    let mismatched = ec.sign_with(header, &c);
    assert_eq!(
        v.validate(&mismatched).await,
        Err(TokenError::AlgorithmNotAllowed)
    );

    // The JWK pins RS256; a PS256 token with that kid is refused, RS256 accepted.
    let ps = TestKey::other_rsa("pinned", Algorithm::PS256).sign(&c);
    assert_eq!(v.validate(&ps).await, Err(TokenError::AlgorithmNotAllowed));
    v.validate(&pinned.sign(&c)).await.unwrap();
    v.validate(&TestKey::rsa("rsa", Algorithm::PS256).sign(&c))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_without_kid_needs_a_single_fitting_key() {
    let rsa = TestKey::rsa("rsa", Algorithm::RS256);
    let ec = TestKey::p256("ec");
    let idp = Idp::start(&[&rsa, &ec]).await;
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    let c = claims(&idp.issuer);
    let got = v.validate(&rsa.sign_without_kid(&c)).await.unwrap();
    assert_eq!(got.key_id, None);
    v.validate(&ec.sign_without_kid(&c)).await.unwrap();

    let ec2 = TestKey::p256("ec2");
    idp.set_keys(&[&rsa, &ec, &ec2]);
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    let err = v.validate(&ec.sign_without_kid(&c)).await.unwrap_err();
    assert_eq!(err, TokenError::KidRequired);
    assert_eq!(err.reason(), "kid_required");
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_parsing() {
    let (idp, key, default_limit) = one_key().await;
    let mut c = config(vec![issuer_config(&idp.issuer)]);
    c.max_token_bytes = 600;
    let v = validator(&c);
    let big = key.sign(&with(claims(&idp.issuer), json!({"pad": "x".repeat(400)})));
    assert!(big.len() > 600);
    let err = v.validate(&big).await.unwrap_err();
    assert_eq!(err, TokenError::TooLarge { max: 600 });
    assert_eq!(err.reason(), "token_too_large");
    // Not even garbage is looked at.
    let garbage = "!".repeat(601);
    assert_eq!(
        v.validate(&garbage).await,
        Err(TokenError::TooLarge { max: 600 })
    );
    assert_eq!(idp.jwks_hits(), 0);
    default_limit
        .validate(&big)
        .await
        .expect("fits the default limit");
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let (idp, key, v) = one_key().await;
    let token = key.sign(&claims(&idp.issuer));
    let parts: Vec<&str> = token.split('.').collect();
    let cases = [
        "".to_owned(),
        "not a token".into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{token}.{}", parts[2]),
        format!("{}.!!!.{}", parts[0], parts[2]),
        format!("@@@.{}.{}", parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode("{nope"),
            parts[2]
        ),
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("[]"), parts[1], parts[2]),
    ];
    for t in cases {
        let err = v.validate(&t).await.unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{t:?}: {err:?}");
        assert_eq!(err.reason(), "malformed");
        assert!(!err.to_string().contains(&t) || t.is_empty());
    }
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn mangled_tokens_never_panic() {
    let (idp, key, v) = one_key().await;
    let token = key.sign(&claims(&idp.issuer));
    let bytes = token.as_bytes();
    // Every position: a character swapped, deleted, or a dot inserted.
    for i in (0..bytes.len()).step_by(3) {
        for replacement in [b'A', b'.', b'-', b'_', b'=', b' '] {
            let mut mangled = bytes.to_vec();
            mangled[i] = replacement;
            let mangled = String::from_utf8(mangled).unwrap();
            if mangled != token {
                let _ = v.validate(&mangled).await;
            }
        }
        let mut cut = bytes.to_vec();
        cut.remove(i);
        let _ = v.validate(std::str::from_utf8(&cut).unwrap()).await;
    }
}

#[tokio::test]
async fn principal_and_groups_follow_the_issuer_config() {
    let key = TestKey::rsa("k1", Algorithm::RS256);
    let idp = Idp::start(&[&key]).await;
    let c = claims(&idp.issuer);

    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    let no_sub = key.sign(&with(c.clone(), json!({"sub": null})));
    let err = v.validate(&no_sub).await.unwrap_err();
    assert_eq!(err, TokenError::MissingClaim("sub".into()));
    assert_eq!(err.reason(), "missing_claim");
    assert!(err.to_string().contains("sub"));
    let empty_sub = key.sign(&with(c.clone(), json!({"sub": ""})));
    assert_eq!(
        v.validate(&empty_sub).await,
        Err(TokenError::BadClaim("sub".into()))
    );
    // No groups claim: no groups.
    let no_groups = key.sign(&with(c.clone(), json!({"groups": null})));
    assert_eq!(
        v.validate(&no_groups).await.unwrap().groups,
        Vec::<String>::new()
    );
    // Groups of the wrong type.
    for bad in [json!(5), json!({"a": "b"}), json!(["ok", 1])] {
        let t = key.sign(&with(c.clone(), json!({ "groups": bad })));
        let err = v.validate(&t).await.unwrap_err();
        assert_eq!(err, TokenError::BadClaim("groups".into()), "{bad}");
        assert_eq!(err.reason(), "bad_claim");
    }

    // A client-credentials token: the principal is the client.
    let mut by_client = issuer_config(&idp.issuer);
    by_client.principal_claim = "client_id".into();
    let v = validator(&config(vec![by_client]));
    let service = key.sign(&with(
        c.clone(),
        json!({"sub": null, "client_id": "billing-service"}),
    ));
    let got = v.validate(&service).await.unwrap();
    assert_eq!(got.principal, "billing-service");
    assert_eq!(got.client_id.as_deref(), Some("billing-service"));
    assert_eq!(got.subject, None);

    // Keycloak-style nested roles plus the OAuth scope string.
    let mut keycloak = issuer_config(&idp.issuer);
    keycloak.principal_claim = "preferred_username".into();
    keycloak.groups_claims = vec!["realm_access.roles".into(), "scope".into()];
    let v = validator(&config(vec![keycloak]));
    let t = key.sign(&with(
        c,
        json!({
            "preferred_username": "alice@example.com",
            "azp": "kafka-cli",
            "realm_access": {"roles": ["producer", "consumer"]},
            "scope": "openid producer kafka:write",
        }),
    ));
    let got = v.validate(&t).await.unwrap();
    assert_eq!(got.principal, "alice@example.com");
    assert_eq!(got.subject.as_deref(), Some("alice"));
    assert_eq!(got.client_id.as_deref(), Some("kafka-cli"));
    assert_eq!(
        got.groups,
        vec!["producer", "consumer", "openid", "kafka:write"]
    );
}

#[tokio::test]
async fn two_issuers_each_with_their_own_keys() {
    let key_a = TestKey::rsa("a1", Algorithm::RS256);
    let key_b = TestKey::ed25519("b1");
    let idp_a = Idp::start(&[&key_a]).await;
    let idp_b = Idp::start_at("/realms/b", &[&key_b]).await;
    let mut c = config(vec![
        issuer_config(&idp_a.issuer),
        issuer_config(&idp_b.issuer),
    ]);
    c.issuers[1].groups_claims = vec!["roles".into()];
    let v = validator(&c);

    let a = v
        .validate(&key_a.sign(&claims(&idp_a.issuer)))
        .await
        .unwrap();
    assert_eq!(a.issuer, idp_a.issuer);
    let b_claims = with(claims(&idp_b.issuer), json!({"roles": ["r"]}));
    let b = v.validate(&key_b.sign(&b_claims)).await.unwrap();
    assert_eq!(b.issuer, idp_b.issuer);
    assert_eq!(b.groups, vec!["r"]);

    // Issuer A's key cannot speak for issuer B, whatever kid it claims.
    let cross = key_a.sign(&claims(&idp_b.issuer));
    assert_eq!(v.validate(&cross).await, Err(TokenError::UnknownKid));
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("b1".into());
    let impostor = TestKey::ed25519("b1").sign_with(header, &claims(&idp_b.issuer));
    assert_eq!(v.validate(&impostor).await, Err(TokenError::BadSignature));
}

#[tokio::test]
async fn no_issuers_means_every_token_is_refused() {
    let v = validator(&config(Vec::new()));
    assert!(!v.has_issuers());
    let key = TestKey::p256("k");
    let token = key.sign(&claims("https://idp.example"));
    assert_eq!(v.validate(&token).await, Err(TokenError::UnknownIssuer));
}

#[test]
fn bad_config_is_refused_without_network() {
    let mut issuer = issuer_config("https://idp.example");
    issuer.algorithms = vec!["HS256".into()];
    let err = crate::identity::TokenValidator::new(&config(vec![issuer])).unwrap_err();
    assert!(
        err.to_string().contains("identity.issuer[0].algorithms"),
        "{err}"
    );
}
