//! The key cache over time: discovery, rotation, the unknown-kid refetch and its rate
//! limit, staleness while the issuer is down, response limits, and stopping the refresh.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::json;

use super::support::*;
use crate::identity::TokenError;

#[tokio::test]
async fn unknown_kid_refetches_once_and_finds_the_rotated_key() {
    let k1 = TestKey::p256("k1");
    let k2 = TestKey::p256("k2");
    let idp = Idp::start(&[&k1]).await;
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    v.start_refresh();
    eventually("first fetch", || v.fetch_attempts() >= 1).await;
    assert_eq!(idp.jwks_hits(), 1);
    v.validate(&k1.sign(&claims(&idp.issuer))).await.unwrap();

    // The issuer rotates in k2; its first token makes us look again, once.
    idp.set_keys(&[&k1, &k2]);
    let got = v.validate(&k2.sign(&claims(&idp.issuer))).await.unwrap();
    assert_eq!(got.key_id.as_deref(), Some("k2"));
    assert_eq!(idp.jwks_hits(), 2);
    v.validate(&k2.sign(&claims(&idp.issuer))).await.unwrap();
    assert_eq!(idp.jwks_hits(), 2);
    // Discovery is not repeated for each key fetch.
    assert_eq!(idp.discovery_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kids_within_the_rate_limit_fetch_once() {
    let k1 = TestKey::p256("k1");
    let idp = Idp::start(&[&k1]).await;
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    v.start_refresh();
    eventually("first fetch", || v.fetch_attempts() >= 1).await;
    assert_eq!(idp.jwks_hits(), 1);

    // Many concurrent tokens with unknown kids: one fetch between them.
    let strangers: Vec<String> = (0..8)
        .map(|i| TestKey::p256(&format!("stranger{i}")).sign(&claims(&idp.issuer)))
        .collect();
    let results = futures_join_all(&v, &strangers).await;
    for r in results {
        let err = r.unwrap_err();
        assert_eq!(err, TokenError::UnknownKid);
        assert_eq!(err.reason(), "unknown_kid");
    }
    assert_eq!(idp.jwks_hits(), 2);

    // And again later, still within jwks_min_refetch_secs: no fetch at all.
    let another = TestKey::p256("stranger-again").sign(&claims(&idp.issuer));
    assert_eq!(v.validate(&another).await, Err(TokenError::UnknownKid));
    assert_eq!(v.validate(&another).await, Err(TokenError::UnknownKid));
    assert_eq!(idp.jwks_hits(), 2);
}

/// Runs the validations concurrently on the multi-threaded runtime.
async fn futures_join_all(
    v: &crate::identity::TokenValidator,
    tokens: &[String],
) -> Vec<Result<crate::identity::ValidatedToken, TokenError>> {
    let handles: Vec<_> = tokens
        .iter()
        .map(|t| {
            let v = v.clone();
            let t = t.clone();
            tokio::spawn(async move { v.validate(&t).await })
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(h.await.expect("validation task"));
    }
    results
}

#[tokio::test]
async fn a_key_removed_at_the_issuer_stops_working_after_the_refresh() {
    let old = TestKey::rsa("old", Algorithm::RS256);
    let new = TestKey::ed25519("new");
    let idp = Idp::start(&[&old]).await;
    let mut c = config(vec![issuer_config(&idp.issuer)]);
    c.jwks_refresh_secs = 1;
    let v = validator(&c);
    v.start_refresh();
    eventually("first fetch", || v.fetch_attempts() >= 1).await;
    let old_token = old.sign(&claims(&idp.issuer));
    v.validate(&old_token).await.unwrap();

    idp.set_keys(&[&new]);
    eventually("periodic refresh", || v.fetch_attempts() >= 2).await;
    assert_eq!(v.validate(&old_token).await, Err(TokenError::UnknownKid));
    v.validate(&new.sign(&claims(&idp.issuer))).await.unwrap();
}

#[tokio::test]
async fn keys_outlive_a_down_issuer_until_max_stale() {
    let key = TestKey::p384("k1");
    let idp = Idp::start(&[&key]).await;
    let mut c = config(vec![issuer_config(&idp.issuer)]);
    c.jwks_refresh_secs = 1;
    c.jwks_max_stale_secs = 2;
    c.jwks_min_refetch_secs = 0;
    let v = validator(&c);
    v.start_refresh();
    eventually("first fetch", || v.fetch_attempts() >= 1).await;
    let token = key.sign(&claims(&idp.issuer));
    v.validate(&token).await.unwrap();

    idp.set_down(true);
    eventually("a failed refresh", || v.fetch_attempts() >= 2).await;
    v.validate(&token)
        .await
        .expect("previous keys stay usable while the issuer is down");

    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let err = v.validate(&token).await.unwrap_err();
    assert_eq!(err, TokenError::KeysUnavailable);
    assert_eq!(err.reason(), "keys_unavailable");

    // Back up: the next token fetches again and is accepted.
    idp.set_down(false);
    v.validate(&token).await.expect("issuer answers again");
}

#[tokio::test]
async fn an_issuer_never_reached_is_tried_once_per_rate_limit() {
    let key = TestKey::p256("k1");
    let idp = Idp::start(&[&key]).await;
    idp.set_down(true);
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    let token = key.sign(&claims(&idp.issuer));
    assert_eq!(v.validate(&token).await, Err(TokenError::KeysUnavailable));
    assert_eq!(idp.discovery_hits(), 1);
    assert_eq!(v.validate(&token).await, Err(TokenError::KeysUnavailable));
    assert_eq!(idp.discovery_hits(), 1);
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn an_unreachable_issuer_is_keys_unavailable() {
    let addr = dead_address().await;
    let issuer = format!("http://{addr}");
    let v = validator(&config(vec![issuer_config(&issuer)]));
    let token = TestKey::p256("k").sign(&claims(&issuer));
    assert_eq!(v.validate(&token).await, Err(TokenError::KeysUnavailable));
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let key = TestKey::p256("k1");
    let idp = Idp::start_at("/realms/a/", &[&key]).await;
    idp.set_discovery_issuer("http://evil.example/realms/a/");
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    let token = key.sign(&claims(&idp.issuer));
    assert_eq!(v.validate(&token).await, Err(TokenError::KeysUnavailable));
    assert_eq!(idp.discovery_hits(), 1);
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn discovery_handles_an_issuer_with_a_trailing_slash() {
    let key = TestKey::p256("k1");
    let idp = Idp::start_at("/realms/a/", &[&key]).await;
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    v.validate(&key.sign(&claims(&idp.issuer))).await.unwrap();
    assert_eq!(idp.discovery_hits(), 1);
}

#[tokio::test]
async fn a_configured_jwks_uri_skips_discovery() {
    let key = TestKey::ed25519("k1");
    let idp = Idp::start(&[&key]).await;
    idp.set_discovery_issuer("http://wrong.example");
    let mut issuer = issuer_config(&idp.issuer);
    issuer.jwks_uri = Some(idp.jwks_uri());
    let v = validator(&config(vec![issuer]));
    v.validate(&key.sign(&claims(&idp.issuer))).await.unwrap();
    assert_eq!(idp.discovery_hits(), 0);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn oversized_and_broken_key_sets_are_refused() {
    let key = TestKey::p256("k1");
    let idp = Idp::start(&[&key]).await;
    let mut issuer = issuer_config(&idp.issuer);
    issuer.jwks_uri = Some(idp.jwks_uri());
    let mut c = config(vec![issuer]);
    c.jwks_min_refetch_secs = 0;
    let v = validator(&c);
    let token = key.sign(&claims(&idp.issuer));

    let mut big = json!({"keys": [key.jwk()]});
    big["padding"] = json!("x".repeat(1 << 20));
    idp.set_jwks(&big);
    assert_eq!(v.validate(&token).await, Err(TokenError::KeysUnavailable));
    // Without Content-Length the limit applies while reading.
    idp.set_no_length(true);
    assert_eq!(v.validate(&token).await, Err(TokenError::KeysUnavailable));

    for broken in ["not json", "{\"keys\": 5}", "[]", ""] {
        idp.set_jwks_text(broken.into());
        assert_eq!(
            v.validate(&token).await,
            Err(TokenError::KeysUnavailable),
            "{broken}"
        );
    }

    // A just-under-the-limit body read to EOF works.
    idp.set_keys(&[&key]);
    v.validate(&token).await.unwrap();
    assert_eq!(idp.jwks_hits(), 7);
}

#[tokio::test]
async fn unusable_keys_are_skipped_and_the_others_work() {
    let good = TestKey::p256("good");
    let idp = Idp::start(&[]).await;
    idp.set_jwks(&json!({"keys": [
        {"kty": "RSA", "kid": "broken", "n": "@@", "e": "AQAB"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"},
        {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": good.jwk()["x"], "y": good.jwk()["y"]},
        "garbage",
        good.jwk(),
    ]}));
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    v.validate(&good.sign(&claims(&idp.issuer))).await.unwrap();
    // A key published only for encryption does not verify.
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("enc".into());
    let enc = good.sign_with(header, &claims(&idp.issuer));
    assert_eq!(v.validate(&enc).await, Err(TokenError::UnknownKid));
}

#[tokio::test]
async fn refresh_stops_when_the_last_validator_is_dropped() {
    let key = TestKey::p256("k1");
    let idp = Idp::start(&[&key]).await;
    let mut c = config(vec![issuer_config(&idp.issuer)]);
    c.jwks_refresh_secs = 1;
    let v = validator(&c);
    let clone = v.clone();
    v.start_refresh();
    v.start_refresh();
    eventually("first fetch", || v.fetch_attempts() >= 1).await;
    assert_eq!(
        idp.jwks_hits(),
        1,
        "a second start_refresh does not start more tasks"
    );
    drop(v);
    eventually("second fetch", || clone.fetch_attempts() >= 2).await;
    drop(clone);
    let hits = idp.jwks_hits();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(idp.jwks_hits(), hits);
}

#[tokio::test]
async fn shutdown_stops_the_refresh() {
    let key = TestKey::p256("k1");
    let idp = Idp::start(&[&key]).await;
    let mut c = config(vec![issuer_config(&idp.issuer)]);
    c.jwks_refresh_secs = 1;
    let v = validator(&c);
    v.start_refresh();
    eventually("first fetch", || v.fetch_attempts() >= 1).await;
    v.shutdown();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(idp.jwks_hits(), 1);
    // Validation still works with the fetched keys.
    v.validate(&key.sign(&claims(&idp.issuer))).await.unwrap();
}

#[test]
fn start_refresh_outside_a_runtime_does_nothing() {
    let v = validator(&config(vec![issuer_config("https://idp.example")]));
    v.start_refresh();
}

#[tokio::test]
async fn shutdown_before_start_means_no_refresh() {
    let key = TestKey::p256("k1");
    let idp = Idp::start(&[&key]).await;
    let v = validator(&config(vec![issuer_config(&idp.issuer)]));
    v.shutdown();
    v.start_refresh();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(idp.discovery_hits(), 0);
}
