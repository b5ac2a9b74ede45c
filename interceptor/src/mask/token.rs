//! Tokens and hashes: keyed HMAC-SHA256 derivations, so every node holding the vault's MAC key
//! derives the same token for the same (scope, value) and nobody without it can.
//!
//! Formats (stable: tokens already stored in vaults depend on them):
//! - hash: lowercase hex of the first 16 bytes of
//!   `HMAC(key, "interceptor-mask/hash/v1\0" || value)` (32 characters). No scope, so equal
//!   values hash equally across fields and rules.
//! - token: `tok_` + 26 lowercase RFC 4648 base32 characters (130 bits) of
//!   `HMAC(key, "interceptor-mask/token/v1\0" || len(scope) || scope || counter || value)`.
//! - format-preserving token: every ASCII digit, lowercase and uppercase letter replaced by one
//!   of its own class drawn from an HMAC-SHA256 counter-mode stream seeded by
//!   `HMAC(key, "interceptor-mask/fpe/v1\0" || len(scope) || scope || counter || attempt ||
//!   value)`; everything else kept. This is deterministic pseudorandom substitution, not NIST
//!   FF1/FF3: it hides the value but is not a permutation, so distinct values can collide (the
//!   vault resolves that with the counter). A value that looks like a payment card keeps its
//!   first 6 and last 4 digits, and the digit before the last four is chosen to make the token
//!   Luhn-valid, so it is still a card to the detector that must find it again on reveal. A
//!   nonzero leading character never becomes `0` (a JSON integer stays a valid number), and a
//!   token equal to its value is re-drawn (`attempt`), so a value is never "masked" as itself.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::detect::{card, ssn};
use super::spec::NewToken;
use super::{CollectingTokens, MacKey, Tokens};

type HmacSha256 = Hmac<Sha256>;

pub const TOKEN_PREFIX: &str = "tok_";
/// Base32 characters after the prefix.
pub const TOKEN_BODY_LEN: usize = 26;
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + TOKEN_BODY_LEN;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

const HASH_DOMAIN: &[u8] = b"interceptor-mask/hash/v1\0";
const TOKEN_DOMAIN: &[u8] = b"interceptor-mask/token/v1\0";
const FPE_DOMAIN: &[u8] = b"interceptor-mask/fpe/v1\0";
const FPE_BLOCK_DOMAIN: &[u8] = b"interceptor-mask/fpe-block/v1\0";
/// Re-draws when a format-preserving token equals its value; 16 misses in a row on a card's
/// free digits is a 1e-16 event, and then the token is returned anyway.
const FPE_ATTEMPTS: u8 = 16;

thread_local! {
    /// The last key's HMAC state after its key blocks: cloning it saves two SHA-256
    /// compressions per token, a third of the cost of a short value's token.
    static KEYED: std::cell::RefCell<Option<([u8; 32], HmacSha256)>> =
        const { std::cell::RefCell::new(None) };
}

fn mac(key: &MacKey) -> HmacSha256 {
    KEYED.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((k, m)) = c.as_ref() {
            if k == &key.0 {
                return m.clone();
            }
        }
        // HMAC takes keys of any length; a 32-byte key cannot fail.
        let m = <HmacSha256 as Mac>::new_from_slice(&key.0).expect("HMAC accepts any key length");
        *c = Some((key.0, m.clone()));
        m
    })
}

fn scoped(m: &mut HmacSha256, domain: &[u8], scope: &str, counter: u32) {
    m.update(domain);
    // Length-prefixed so ("a/b", "c") and ("a", "/bc") cannot meet.
    m.update(&(scope.len() as u64).to_be_bytes());
    m.update(scope.as_bytes());
    m.update(&counter.to_be_bytes());
}

/// The keyed hash of `value` (see the module docs for the format).
pub fn hash_value(key: &MacKey, value: &[u8]) -> String {
    let mut m = mac(key);
    m.update(HASH_DOMAIN);
    m.update(value);
    let d = m.finalize().into_bytes();
    let mut s = String::with_capacity(32);
    for b in &d[..16] {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// The token for (scope, value, counter): deterministic, so every node derives the same one.
pub fn derive_token(
    key: &MacKey,
    scope: &str,
    value: &[u8],
    counter: u32,
    format_preserving: bool,
) -> String {
    if format_preserving {
        return fpe_token(key, scope, value, counter);
    }
    let mut m = mac(key);
    scoped(&mut m, TOKEN_DOMAIN, scope, counter);
    m.update(value);
    let d = m.finalize().into_bytes();
    let mut s = String::with_capacity(TOKEN_LEN);
    s.push_str(TOKEN_PREFIX);
    // 26 characters of 5 bits: the first 130 bits of the digest.
    for i in 0..TOKEN_BODY_LEN {
        let bit = i * 5;
        let (byte, shift) = (bit / 8, bit % 8);
        let pair = (u16::from(d[byte]) << 8) | u16::from(d[byte + 1]);
        let v = (pair >> (11 - shift)) & 31;
        s.push(char::from(BASE32[usize::from(v)]));
    }
    s
}

/// Whether `s` has the shape of a non-format-preserving token.
pub fn is_token(s: &[u8]) -> bool {
    s.len() == TOKEN_LEN
        && s.starts_with(TOKEN_PREFIX.as_bytes())
        && s[TOKEN_PREFIX.len()..].iter().all(|&b| is_base32(b))
}

pub fn is_base32(b: u8) -> bool {
    b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)
}

/// The HMAC counter-mode byte stream format-preserving tokens draw from.
struct Stream {
    key: HmacSha256,
    seed: [u8; 32],
    block: [u8; 32],
    block_no: u32,
    used: usize,
}

impl Stream {
    fn new(key: &MacKey, scope: &str, value: &[u8], counter: u32, attempt: u8) -> Stream {
        let base = mac(key);
        let mut m = base.clone();
        scoped(&mut m, FPE_DOMAIN, scope, counter);
        m.update(&[attempt]);
        m.update(value);
        let seed: [u8; 32] = m.finalize().into_bytes().into();
        Stream {
            key: base,
            seed,
            block: [0; 32],
            block_no: 0,
            used: 32,
        }
    }

    fn byte(&mut self) -> u8 {
        if self.used == self.block.len() {
            let mut m = self.key.clone();
            m.update(FPE_BLOCK_DOMAIN);
            m.update(&self.seed);
            m.update(&self.block_no.to_be_bytes());
            self.block = m.finalize().into_bytes().into();
            self.block_no = self.block_no.wrapping_add(1);
            self.used = 0;
        }
        let b = self.block[self.used];
        self.used += 1;
        b
    }

    /// Uniform in 0..n by rejection (n ≤ 26), so no class member is favoured.
    fn below(&mut self, n: u8) -> u8 {
        let limit = 256 - (256 % u16::from(n));
        loop {
            let b = self.byte();
            if u16::from(b) < limit {
                return b % n;
            }
        }
    }
}

/// Literal prefixes of the built-in secret detectors: kept, so a token of a key is still
/// found by the detector that found the key.
const KEPT_PREFIXES: [&[u8]; 16] = [
    b"AKIA",
    b"ASIA",
    b"AIza",
    b"ghp_",
    b"gho_",
    b"ghu_",
    b"ghs_",
    b"ghr_",
    b"github_pat_",
    b"xoxb-",
    b"xoxa-",
    b"xoxp-",
    b"xoxr-",
    b"xoxs-",
    b"sk_live_",
    b"rk_live_",
];

fn fpe_token(key: &MacKey, scope: &str, value: &[u8], counter: u32) -> String {
    let is_card = card::looks_like_card(value);
    let is_ssn = !is_card && ssn::looks_like_ssn(value);
    let keep = KEPT_PREFIXES
        .iter()
        .find(|p| value.starts_with(p))
        .map_or(0, |p| p.len());
    let mut out = value.to_vec();
    for attempt in 0..FPE_ATTEMPTS {
        let mut st = Stream::new(key, scope, value, counter, attempt);
        if is_card {
            card_substitute(&mut st, value, &mut out);
        } else {
            substitute(&mut st, &value[keep..], &mut out[keep..]);
        }
        // An SSN's token must be a valid SSN too, or reveal could not find it again.
        if out != value && (!is_ssn || ssn::looks_like_ssn(&out)) {
            break;
        }
    }
    // Only ASCII bytes were replaced by ASCII bytes, so UTF-8 input stays UTF-8; anything
    // else (Any payloads) degrades visibly rather than failing.
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn substitute(st: &mut Stream, value: &[u8], out: &mut [u8]) {
    for (i, (&b, o)) in value.iter().zip(out.iter_mut()).enumerate() {
        *o = match b {
            b'0'..=b'9' => {
                // The first digit of a run keeps being nonzero: a JSON integer stays a number,
                // a phone number's country code stays a country code.
                if b != b'0' && (i == 0 || !value[i - 1].is_ascii_digit()) {
                    b'1' + st.below(9)
                } else {
                    b'0' + st.below(10)
                }
            }
            b'a'..=b'z' => b'a' + st.below(26),
            b'A'..=b'Z' => b'A' + st.below(26),
            _ => b,
        };
    }
}

/// First six and last four digits kept, the rest drawn, one middle digit fixed for Luhn.
fn card_substitute(st: &mut Stream, value: &[u8], out: &mut [u8]) {
    let positions: Vec<usize> = value
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    let n = positions.len();
    out.copy_from_slice(value);
    if n < 11 {
        return;
    }
    for &p in &positions[6..n - 4] {
        out[p] = b'0' + st.below(10);
    }
    // The digit just before the last four: its Luhn weight is known from its position.
    let fix = positions[n - 5];
    out[fix] = b'0';
    let digits: Vec<u8> = positions.iter().map(|&p| out[p] - b'0').collect();
    let sum = card::luhn_sum(&digits);
    let need = (10 - sum % 10) % 10;
    // Position n-5 counted from the right (0-based) is 4: not doubled.
    out[fix] = b'0' + need as u8;
}

impl Tokens for CollectingTokens<'_> {
    fn token(&mut self, scope: &str, value: &[u8], format_preserving: bool) -> String {
        let counter = if self.counters.is_empty() {
            0
        } else {
            self.counters
                .get(&(scope.to_string(), value.to_vec()))
                .copied()
                .unwrap_or(0)
        };
        let token = derive_token(self.key, scope, value, counter, format_preserving);
        let seen = self
            .new
            .iter()
            .any(|t| t.token == token && t.scope == scope && t.value == value);
        if !seen {
            self.new.push(NewToken {
                token: token.clone(),
                scope: scope.to_string(),
                value: value.to_vec(),
            });
        }
        token
    }

    fn mark(&self) -> usize {
        self.new.len()
    }

    fn rollback(&mut self, mark: usize) {
        self.new.truncate(mark);
    }

    fn hash(&mut self, value: &[u8]) -> String {
        hash_value(self.key, value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn key() -> MacKey {
        MacKey([7; 32])
    }

    #[test]
    fn token_is_deterministic_and_scoped() {
        let k = key();
        let a = derive_token(&k, "r/$.a", b"alice", 0, false);
        assert_eq!(a, derive_token(&k, "r/$.a", b"alice", 0, false));
        assert!(is_token(a.as_bytes()), "{a}");
        assert_ne!(a, derive_token(&k, "r/$.b", b"alice", 0, false));
        assert_ne!(a, derive_token(&k, "r/$.a", b"alicf", 0, false));
        assert_ne!(a, derive_token(&k, "r/$.a", b"alice", 1, false));
        assert_ne!(
            a,
            derive_token(&MacKey([8; 32]), "r/$.a", b"alice", 0, false)
        );
    }

    #[test]
    fn hash_is_stable_hex_and_not_a_token() {
        let k = key();
        let h = hash_value(&k, b"alice");
        assert_eq!(h.len(), 32);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(h, hash_value(&k, b"alice"));
        assert_ne!(h, hash_value(&k, b"bob"));
    }

    #[test]
    fn fpe_keeps_length_and_classes() {
        let k = key();
        let v = "Ab-3x.Z9 é_q";
        let t = derive_token(&k, "r/x", v.as_bytes(), 0, true);
        assert_eq!(t.len(), v.len());
        assert_ne!(t, v);
        for (a, b) in v.chars().zip(t.chars()) {
            match a {
                '0'..='9' => assert!(b.is_ascii_digit()),
                'a'..='z' => assert!(b.is_ascii_lowercase()),
                'A'..='Z' => assert!(b.is_ascii_uppercase()),
                _ => assert_eq!(a, b),
            }
        }
        assert_eq!(t, derive_token(&k, "r/x", v.as_bytes(), 0, true));
        assert_ne!(t, derive_token(&k, "r/x", v.as_bytes(), 1, true));
    }

    #[test]
    fn fpe_keeps_leading_nonzero() {
        let k = key();
        for i in 0..200u32 {
            let v = format!("{}", 10 + i);
            let t = derive_token(&k, "r/n", v.as_bytes(), 0, true);
            assert_ne!(t.as_bytes()[0], b'0', "{v} -> {t}");
        }
    }

    #[test]
    fn card_fpe_is_a_card_with_same_bin_and_last4() {
        let k = key();
        for v in [
            "4111111111111111",
            "4111-1111-1111-1111",
            "5555 5555 5555 4444",
            "378282246310005",
            "4222222222222",
        ] {
            for counter in 0..20 {
                let t = derive_token(&k, "r/credit_card", v.as_bytes(), counter, true);
                assert_eq!(t.len(), v.len());
                assert_ne!(t, v);
                let d = |s: &str| s.bytes().filter(u8::is_ascii_digit).collect::<Vec<_>>();
                let (dv, dt) = (d(v), d(&t));
                assert_eq!(dv[..6], dt[..6]);
                assert_eq!(dv[dv.len() - 4..], dt[dt.len() - 4..]);
                assert!(card::looks_like_card(t.as_bytes()), "{v} -> {t}");
            }
        }
    }

    #[test]
    fn collecting_tokens_uses_counters_and_dedupes() {
        let k = key();
        let mut counters = HashMap::new();
        counters.insert(("r/$.a".to_string(), b"x".to_vec()), 3u32);
        let mut t = CollectingTokens {
            key: &k,
            counters: &counters,
            new: Vec::new(),
        };
        let a = t.token("r/$.a", b"x", false);
        assert_eq!(a, derive_token(&k, "r/$.a", b"x", 3, false));
        assert_eq!(t.token("r/$.a", b"x", false), a);
        let b = t.token("r/$.a", b"y", false);
        assert_eq!(b, derive_token(&k, "r/$.a", b"y", 0, false));
        assert_eq!(t.new.len(), 2);
        assert_eq!(t.new[0].value, b"x");
        assert_eq!(t.hash(b"x"), hash_value(&k, b"x"));
    }
}
