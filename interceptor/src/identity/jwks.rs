//! An issuer's published key set (RFC 7517), reduced to the signature-verification keys we
//! can use, and the choice of key for a token.
//!
//! Each key is checked here, when it is loaded, so that a key jsonwebtoken would choke on
//! (a short Ed25519 key even makes it panic) never reaches verification. A bad key is
//! skipped with a warning; the issuer's other keys stay usable.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::{
    error::FetchError,
    settings::{algorithm_name, asymmetric_algorithm},
};

/// RFC 7518 section 3.3 asks for at least 2048 bits; the rsa crate verifies at most 4096.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 4096;
/// The rsa crate's bound on the public exponent.
const RSA_MAX_EXPONENT: u64 = (1 << 33) - 1;
/// Issuers publish a handful of keys; loading is not free (EC and Ed25519 points are
/// checked), so a key set cannot make us spend long on thousands.
const MAX_KEYS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    fn supports(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

pub(crate) struct VerifyingKey {
    kid: Option<String>,
    key_type: KeyType,
    /// The JWK's own `alg`, which pins the key to that one algorithm.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl VerifyingKey {
    fn accepts(&self, alg: Algorithm) -> bool {
        self.key_type.supports(alg) && self.alg.is_none_or(|a| a == alg)
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The outcome of looking for a token's key.
#[derive(Debug)]
pub(crate) enum Selection<'a> {
    Found(&'a VerifyingKey),
    /// No key has the token's `kid`.
    UnknownKid,
    /// Keys with the token's `kid` exist but none fits its algorithm.
    AlgorithmMismatch,
    /// The token has no `kid` and several keys fit its algorithm.
    KidRequired,
    /// The token has no `kid` and no key fits its algorithm.
    NoCompatibleKey,
}

#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// Parses a JWKS document. Only a document without a `keys` array is an error; keys
    /// that cannot be used are left out (logged, naming `issuer`).
    pub(crate) fn parse(doc: &Value, issuer: &str) -> Result<Self, FetchError> {
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err(FetchError::NotAKeySet);
        };
        if entries.len() > MAX_KEYS {
            tracing::warn!(
                issuer,
                keys = entries.len(),
                "key set is very large; only its first {MAX_KEYS} entries are used"
            );
        }
        let mut keys = Vec::new();
        for (index, entry) in entries.iter().take(MAX_KEYS).enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str);
            match parse_key(entry) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(problem) => tracing::warn!(
                    issuer,
                    index,
                    kid,
                    problem,
                    "skipping unusable key in the issuer's key set"
                ),
            }
        }
        Ok(Self { keys })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection<'_> {
        match kid {
            Some(kid) => {
                let mut same_kid = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if same_kid.peek().is_none() {
                    return Selection::UnknownKid;
                }
                same_kid
                    .find(|k| k.accepts(alg))
                    .map_or(Selection::AlgorithmMismatch, Selection::Found)
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.accepts(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Selection::Found(key),
                    (None, _) => Selection::NoCompatibleKey,
                    (Some(_), Some(_)) => Selection::KidRequired,
                }
            }
        }
    }
}

/// `Ok(None)` for keys that are not for us (symmetric, encryption); `Err` names what is
/// wrong with a signature key we cannot use.
fn parse_key(entry: &Value) -> Result<Option<VerifyingKey>, String> {
    let Value::Object(jwk) = entry else {
        return Err("not a JSON object".into());
    };
    let kty = string_member(jwk, "kty")?.ok_or("no kty")?;
    // Symmetric keys would only ever verify HMAC tokens, which are refused; dropping them
    // here means no code path can confuse one with a public key.
    if kty == "oct" {
        return Ok(None);
    }
    match string_member(jwk, "use")? {
        None | Some("sig") => {}
        Some(_) => return Ok(None),
    }
    let kid = string_member(jwk, "kid")?.map(str::to_owned);
    let alg = match string_member(jwk, "alg")? {
        None => None,
        Some(name) => Some(
            asymmetric_algorithm(name)
                .ok_or_else(|| format!("alg {name:?} is not an accepted signature algorithm"))?,
        ),
    };

    let (key_type, key) = match kty {
        "RSA" => (KeyType::Rsa, rsa_key(jwk)?),
        "EC" => match string_member(jwk, "crv")? {
            Some("P-256") => (KeyType::P256, ec_key(jwk, 32, Algorithm::ES256)?),
            Some("P-384") => (KeyType::P384, ec_key(jwk, 48, Algorithm::ES384)?),
            Some(crv) => return Err(format!("unsupported EC curve {crv:?}")),
            None => return Err("EC key without crv".into()),
        },
        "OKP" => match string_member(jwk, "crv")? {
            Some("Ed25519") => (KeyType::Ed25519, ed25519_key(jwk)?),
            Some(crv) => return Err(format!("unsupported OKP curve {crv:?}")),
            None => return Err("OKP key without crv".into()),
        },
        other => return Err(format!("unsupported kty {other:?}")),
    };
    if let Some(alg) = alg {
        if !key_type.supports(alg) {
            return Err(format!(
                "alg {} does not fit a {key_type:?} key",
                algorithm_name(alg)
            ));
        }
    }
    Ok(Some(VerifyingKey {
        kid,
        key_type,
        alg,
        key,
    }))
}

fn string_member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

fn bytes_member(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = string_member(jwk, name)?.ok_or_else(|| format!("no {name}"))?;
    // Padding is not allowed by RFC 7517 but some issuers emit it; it carries no meaning.
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("{name} is not base64url"))
}

fn rsa_key(jwk: &Map<String, Value>) -> Result<DecodingKey, String> {
    let n = bytes_member(jwk, "n")?;
    let e = bytes_member(jwk, "e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = n
        .first()
        .map_or(0, |&b| n.len() * 8 - b.leading_zeros() as usize);
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(format!(
            "RSA modulus of {bits} bits (accepted: {RSA_MIN_BITS} to {RSA_MAX_BITS})"
        ));
    }
    if n.last().is_none_or(|b| b % 2 == 0) {
        return Err("RSA modulus is even".into());
    }
    let exponent = if e.len() <= 8 {
        e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    } else {
        u64::MAX
    };
    if !(3..=RSA_MAX_EXPONENT).contains(&exponent) || exponent % 2 == 0 {
        return Err("RSA public exponent is out of range".into());
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn ec_key(jwk: &Map<String, Value>, size: usize, alg: Algorithm) -> Result<DecodingKey, String> {
    let x = bytes_member(jwk, "x")?;
    let y = bytes_member(jwk, "y")?;
    if x.len() != size || y.len() != size {
        return Err(format!("EC coordinates are not {size} bytes"));
    }
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    // jsonwebtoken takes the SEC1 point as the EC "DER" key.
    probe(
        DecodingKey::from_ec_der(&point),
        alg,
        "EC point is not on the curve",
    )
}

fn ed25519_key(jwk: &Map<String, Value>) -> Result<DecodingKey, String> {
    let x = bytes_member(jwk, "x")?;
    if x.len() != 32 {
        return Err("Ed25519 key is not 32 bytes".into());
    }
    probe(
        DecodingKey::from_ed_der(&x),
        Algorithm::EdDSA,
        "Ed25519 key is not a curve point",
    )
}

/// jsonwebtoken builds the curve point only when it verifies; doing that once here (with an
/// empty signature, which cannot verify) finds invalid points at load time.
fn probe(key: DecodingKey, alg: Algorithm, problem: &str) -> Result<DecodingKey, String> {
    match jsonwebtoken::crypto::verify("", b"", &key, alg) {
        Ok(_) => Ok(key),
        Err(_) => Err(problem.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A 2048-bit odd modulus; these tests never verify with it.
    fn rsa_jwk(kid: &str) -> Value {
        let mut n = vec![0xc5u8; 256];
        n[255] = 0x01;
        json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"})
    }

    fn ed_jwk(kid: &str) -> Value {
        // The Ed25519 base point, a valid curve point.
        let mut x = [0u8; 32];
        x[0] = 0x58;
        x[1..].fill(0x66);
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&x)})
    }

    fn parse(keys: Vec<Value>) -> KeySet {
        KeySet::parse(&json!({ "keys": keys }), "test").unwrap()
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        for doc in [json!({}), json!([]), json!({"keys": {}}), json!(null)] {
            assert!(KeySet::parse(&doc, "test").is_err(), "{doc}");
        }
        assert_eq!(parse(Vec::new()).len(), 0);
    }

    #[test]
    fn only_the_first_keys_of_a_huge_set_are_loaded() {
        let keys: Vec<Value> = (0..MAX_KEYS + 5)
            .map(|i| rsa_jwk(&format!("k{i}")))
            .collect();
        let set = parse(keys);
        assert_eq!(set.len(), MAX_KEYS);
        assert!(matches!(
            set.select(Some(&format!("k{}", MAX_KEYS)), Algorithm::RS256),
            Selection::UnknownKid
        ));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_ignored() {
        let set = parse(vec![
            json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
            json!({"kty": "oct", "kid": "h2", "k": "c2VjcmV0", "alg": "HS256", "use": "sig"}),
            {
                let mut k = rsa_jwk("enc");
                k["use"] = json!("enc");
                k
            },
            rsa_jwk("sig"),
        ]);
        assert_eq!(set.len(), 1);
        assert!(matches!(
            set.select(Some("h"), Algorithm::RS256),
            Selection::UnknownKid
        ));
        assert!(matches!(
            set.select(Some("enc"), Algorithm::RS256),
            Selection::UnknownKid
        ));
        assert!(matches!(
            set.select(Some("sig"), Algorithm::RS256),
            Selection::Found(_)
        ));
    }

    #[test]
    fn broken_keys_are_skipped_and_the_rest_kept() {
        let short_rsa = json!({"kty": "RSA", "kid": "s", "n": b64(&[0xff; 128]), "e": "AQAB"});
        let even_e = json!({"kty": "RSA", "kid": "e", "n": rsa_jwk("x")["n"], "e": "AQAA"});
        let set = parse(vec![
            json!("not an object"),
            json!({"kid": "no-kty"}),
            json!({"kty": 5}),
            json!({"kty": "RSA", "kid": "no-n", "e": "AQAB"}),
            json!({"kty": "RSA", "kid": "bad-b64", "n": "!!", "e": "AQAB"}),
            short_rsa,
            even_e,
            json!({"kty": "EC", "crv": "P-256", "kid": "short", "x": b64(&[1; 31]), "y": b64(&[1; 32])}),
            json!({"kty": "EC", "crv": "P-256", "kid": "off-curve", "x": b64(&[1; 32]), "y": b64(&[1; 32])}),
            json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}),
            json!({"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed-short", "x": b64(&[9; 8])}),
            json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64(&[9; 32])}),
            {
                let mut k = rsa_jwk("alg-ec");
                k["alg"] = json!("ES256");
                k
            },
            {
                let mut k = rsa_jwk("alg-hs");
                k["alg"] = json!("HS256");
                k
            },
            {
                let mut k = rsa_jwk("kid-num");
                k["kid"] = json!(5);
                k
            },
            rsa_jwk("good"),
            ed_jwk("ed"),
        ]);
        assert_eq!(set.len(), 2, "{set:?}");
        assert!(matches!(
            set.select(Some("good"), Algorithm::PS256),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Some("ed"), Algorithm::EdDSA),
            Selection::Found(_)
        ));
    }

    #[test]
    fn the_key_must_fit_the_algorithm() {
        let mut pinned = rsa_jwk("pinned");
        pinned["alg"] = json!("RS256");
        let set = parse(vec![pinned, rsa_jwk("any"), ed_jwk("ed")]);
        assert!(matches!(
            set.select(Some("pinned"), Algorithm::RS256),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Some("pinned"), Algorithm::PS256),
            Selection::AlgorithmMismatch
        ));
        assert!(matches!(
            set.select(Some("any"), Algorithm::ES256),
            Selection::AlgorithmMismatch
        ));
        assert!(matches!(
            set.select(Some("ed"), Algorithm::RS256),
            Selection::AlgorithmMismatch
        ));
        assert!(matches!(
            set.select(Some("gone"), Algorithm::RS256),
            Selection::UnknownKid
        ));
    }

    #[test]
    fn a_token_without_kid_needs_exactly_one_fitting_key() {
        let set = parse(vec![rsa_jwk("a"), ed_jwk("ed")]);
        assert!(matches!(
            set.select(None, Algorithm::RS256),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(None, Algorithm::ES256),
            Selection::NoCompatibleKey
        ));
        let set = parse(vec![rsa_jwk("a"), rsa_jwk("b")]);
        assert!(matches!(
            set.select(None, Algorithm::RS256),
            Selection::KidRequired
        ));
    }
}
