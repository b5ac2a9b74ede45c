//! The OIDC provider of the identity tests (`tests/idp/server.mjs`, oidc-provider on node) in a
//! fresh network namespace: discovery, the claims of its tokens, per-client lifetimes, refusal of
//! a wrong secret, and key rotation as a relying party sees it through `/jwks`.
//!
//! Needs root (network namespaces): fails loudly without, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`; and `cargo xtask deps` (node's `oidc-provider`).

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use interceptor_e2e::{
    idp::{decode_jwt, ClientAuth, Idp, IdpClient, AUDIENCE, SCOPE},
    require_kernel, Netns, WorkDir,
};
use serde_json::{json, Value};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Fetches a token (HTTP basic) and returns its header and payload.
fn token(idp: &Idp, ns: &Netns, id: &str, secret: &str) -> (Value, Value) {
    let token = idp.fetch_token(ns, id, secret).unwrap();
    decode_jwt(&token).unwrap()
}

#[test]
fn idp_issues_jwt_access_tokens_and_rotates_keys() {
    if !require_kernel() {
        return;
    }
    let ns = Netns::new("itest").unwrap();
    let work = WorkDir::new("idp-smoke").unwrap();
    let addr: SocketAddr = "127.0.0.1:9400".parse().unwrap();
    let clients = [
        IdpClient::new("alice", "alice-secret", &["readers", "writers"]),
        IdpClient::new("bob", "bob secret/with:odd+chars", &["admins"]),
        IdpClient::new("shorty", "shorty-secret", &[]).ttl(8),
    ];
    let mut idp = Idp::start(&ns, addr, work.path(), &clients).unwrap();

    let disco = idp.discovery(&ns).unwrap();
    assert_eq!(disco["issuer"], idp.issuer());
    assert_eq!(disco["token_endpoint"], idp.token_endpoint());
    assert_eq!(disco["jwks_uri"], idp.jwks_uri());
    assert_eq!(idp.issuer(), "http://127.0.0.1:9400");

    // alice, HTTP basic: every claim a broker-side validator looks at.
    let first_kid = idp.signing_kid();
    let (header, claims) = token(&idp, &ns, "alice", "alice-secret");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], first_kid.as_str());
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], "alice");
    assert_eq!(claims["scope"], SCOPE);
    assert_eq!(claims["groups"], json!(["readers", "writers"]));
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 300);
    assert!(iat.abs_diff(now()) <= 5, "iat {iat} vs now {}", now());

    // bob, secret in the form (client_secret_post), a secret that needs encoding.
    let (status, body) = idp
        .request_token(&ns, "bob", "bob secret/with:odd+chars", ClientAuth::Post)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let (_, claims) = decode_jwt(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["groups"], json!(["admins"]));
    let (_, claims) = token(&idp, &ns, "bob", "bob secret/with:odd+chars");
    assert_eq!(claims["sub"], "bob");

    // A short-lived client next to the 300 s ones.
    let (_, claims) = token(&idp, &ns, "shorty", "shorty-secret");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        8
    );
    assert_eq!(claims["groups"], json!([]));

    // Wrong secret, unknown client: refused, no token.
    for auth in [ClientAuth::Basic, ClientAuth::Post] {
        let (status, body) = idp.request_token(&ns, "alice", "wrong", auth).unwrap();
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_client");
        let (status, body) = idp.request_token(&ns, "mallory", "x", auth).unwrap();
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(idp.published_kids(&ns).unwrap(), [first_kid.as_str()]);

    // Rotation, step 1: a new key signs, both are published.
    idp.rotate().unwrap();
    let new_kid = idp.signing_kid();
    assert_ne!(new_kid, first_kid);
    assert_eq!(idp.kids(), [new_kid.clone(), first_kid.clone()]);
    assert_eq!(
        idp.published_kids(&ns).unwrap(),
        [new_kid.clone(), first_kid.clone()]
    );
    let (header, claims) = token(&idp, &ns, "alice", "alice-secret");
    assert_eq!(header["kid"], new_kid.as_str());
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["groups"], json!(["readers", "writers"]));

    // Step 2: the old key is gone.
    idp.retire_old().unwrap();
    assert_eq!(idp.published_kids(&ns).unwrap(), [new_kid.as_str()]);
    let (header, _) = token(&idp, &ns, "alice", "alice-secret");
    assert_eq!(header["kid"], new_kid.as_str());
    let jwks = idp.jwks(&ns).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert!(key.get("d").is_none(), "/jwks leaks the private key: {key}");

    // Down, then up again with the same key.
    idp.stop();
    assert!(idp.fetch_token(&ns, "alice", "alice-secret").is_err());
    idp.restart().unwrap();
    let (header, _) = token(&idp, &ns, "alice", "alice-secret");
    assert_eq!(header["kid"], new_kid.as_str());
    idp.stop();
}
