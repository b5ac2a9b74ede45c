//! Secrets with a literal prefix: cloud and SaaS credentials, PEM private keys, and the
//! policy's custom detectors. Each is found by its prefix (the combined literal search in
//! `detect`) and checked here for the characters and length that follow.

use memchr::memmem;

use super::run::is_word;
use crate::mask::spec::CharClass;

/// How the characters after a prefix are checked.
#[derive(Debug, Clone, Copy)]
pub enum Tail {
    /// Exactly n characters from the set, not followed by another from it or a word char.
    Exact(usize, fn(u8) -> bool),
    /// At least n characters from the set, as many as there are (up to 256).
    AtLeast(usize, fn(u8) -> bool),
    /// Through the matching `-----END … PRIVATE KEY-----`.
    Pem,
    /// Validated by `jwt::at`.
    Jwt,
}

pub fn upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}
pub fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
pub fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}
pub fn word(b: u8) -> bool {
    is_word(b)
}
pub fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}
pub fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}
pub fn hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

pub fn class(c: CharClass) -> fn(u8) -> bool {
    match c {
        CharClass::Digits => digit,
        CharClass::UpperAlnum => upper_alnum,
        CharClass::Alnum => alnum,
        CharClass::Hex => hex,
    }
}

const MAX_TAIL: usize = 256;

/// The end of the secret whose prefix [s, s + prefix_len) was found.
pub fn at(hay: &[u8], s: usize, prefix_len: usize, tail: Tail) -> Option<usize> {
    let first = hay[s];
    if !matches!(tail, Tail::Jwt) && s > 0 && is_word(first) && is_word(hay[s - 1]) {
        return None;
    }
    let t = s + prefix_len;
    let n = hay.len();
    match tail {
        Tail::Exact(len, set) => {
            let e = t.checked_add(len)?;
            if e > n || !hay[t..e].iter().all(|&b| set(b)) {
                return None;
            }
            if e < n && (set(hay[e]) || is_word(hay[e])) {
                return None;
            }
            Some(e)
        }
        Tail::AtLeast(min, set) => {
            let mut e = t;
            while e < n && set(hay[e]) && e - t < MAX_TAIL {
                e += 1;
            }
            (e - t >= min).then_some(e)
        }
        Tail::Pem => pem(hay, t),
        Tail::Jwt => super::jwt::at(hay, s),
    }
}

/// After `-----BEGIN `: a label ending in `PRIVATE KEY-----`, then everything through the END
/// line. A key with no END line is masked to the end of the text: a truncated key is still a
/// secret.
fn pem(hay: &[u8], t: usize) -> Option<usize> {
    let mut i = t;
    while i < hay.len() && i - t < 64 && (hay[i].is_ascii_uppercase() || hay[i] == b' ') {
        i += 1;
    }
    if !hay[t..i].ends_with(b"PRIVATE KEY") || !hay[i..].starts_with(b"-----") {
        return None;
    }
    let body = i + 5;
    let Some(p) = memmem::find(&hay[body..], b"-----END ") else {
        return Some(hay.len());
    };
    let after = body + p + 9;
    match memmem::find(&hay[after..hay.len().min(after + 80)], b"-----") {
        Some(q) => Some(after + q + 5),
        None => Some(hay.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::found;
    use crate::mask::spec::CharClass;
    use crate::mask::Detector;

    #[test]
    fn aws() {
        let d = [Detector::AwsAccessKey];
        assert_eq!(
            found(&d, "key=AKIAIOSFODNN7EXAMPLE;"),
            vec!["AKIAIOSFODNN7EXAMPLE"]
        );
        assert_eq!(
            found(&d, "\"ASIAY34FZKBOKMUTVV7A\""),
            vec!["ASIAY34FZKBOKMUTVV7A"]
        );
        for s in [
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLEX",
            "XAKIAIOSFODNN7EXAMPLE",
            "AKIAiosfodnn7example",
        ] {
            assert!(found(&d, s).is_empty(), "{s}");
        }
    }

    #[test]
    fn gcp() {
        let d = [Detector::GcpApiKey];
        let k = "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe";
        assert_eq!(found(&d, &format!("k: {k} ")), vec![k]);
        assert!(found(&d, &k[..k.len() - 1]).is_empty());
        assert!(found(&d, &format!("{k}a")).is_empty());
    }

    #[test]
    fn github() {
        let d = [Detector::GithubToken];
        let k = format!("ghp_{}", "a1B2".repeat(9));
        assert_eq!(found(&d, &format!("token {k}")), vec![k.clone()]);
        let pat = format!("github_pat_{}", "A_b1".repeat(20) + "zz");
        assert_eq!(found(&d, &format!("{pat} ")), vec![pat]);
        assert!(found(&d, &format!("ghx_{}", "a".repeat(36))).is_empty());
        assert!(found(&d, &format!("ghp_{}", "a".repeat(35))).is_empty());
        assert!(found(&d, &format!("ghp_{}", "a".repeat(37))).is_empty());
    }

    #[test]
    fn slack_and_stripe() {
        let s = "xoxb-1234567890-abcdefABCDEF";
        assert_eq!(found(&[Detector::SlackToken], &format!("{s} ")), vec![s]);
        assert!(found(&[Detector::SlackToken], "xoxb-12345").is_empty());
        assert!(found(&[Detector::SlackToken], "xoxz-1234567890ab").is_empty());
        let k = format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc");
        assert_eq!(found(&[Detector::StripeKey], &k), vec![k.clone()]);
        assert!(found(&[Detector::StripeKey], "sk_test_4eC39HqLyjWDarjtT1zdp7dc").is_empty());
        assert!(found(&[Detector::StripeKey], "sk_live_short").is_empty());
    }

    #[test]
    fn pem() {
        let k = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            found(&[Detector::PrivateKey], &format!("x\n{k}\ny")),
            vec![k]
        );
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert!(found(&[Detector::PrivateKey], cert).is_empty());
        let cut = "-----BEGIN PRIVATE KEY-----\nMIIB";
        assert_eq!(found(&[Detector::PrivateKey], cut), vec![cut]);
    }

    #[test]
    fn custom() {
        let d = [Detector::Custom {
            name: "emp".into(),
            prefix: "EMP-".into(),
            chars: CharClass::Digits,
            length: 6,
        }];
        assert_eq!(found(&d, "id EMP-123456."), vec!["EMP-123456"]);
        assert!(found(&d, "EMP-12345").is_empty());
        assert!(found(&d, "EMP-1234567").is_empty());
        assert!(found(&d, "XEMP-123456").is_empty());
    }
}
