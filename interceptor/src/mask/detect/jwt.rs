//! JSON Web Tokens: three base64url parts, the first two decoding to JSON objects.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A part long enough for any real header or claims set; longer is not worth decoding.
const MAX_PART: usize = 64 * 1024;

fn part_end(hay: &[u8], s: usize) -> usize {
    let mut i = s;
    while i < hay.len() && is_b64(hay[i]) && i - s <= MAX_PART {
        i += 1;
    }
    i
}

fn json_object(part: &[u8]) -> bool {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(part) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).is_ok()
}

/// The token starting at the `eyJ` at `s`: its end.
pub fn at(hay: &[u8], s: usize) -> Option<usize> {
    if s > 0 && (is_b64(hay[s - 1]) || hay[s - 1] == b'.') {
        return None;
    }
    let e1 = part_end(hay, s);
    if e1 >= hay.len() || hay[e1] != b'.' || !hay[e1 + 1..].starts_with(b"eyJ") {
        return None;
    }
    let e2 = part_end(hay, e1 + 1);
    if e2 >= hay.len() || hay[e2] != b'.' {
        return None;
    }
    let e3 = part_end(hay, e2 + 1);
    if e3 < hay.len() && (is_b64(hay[e3]) || hay[e3] == b'.') {
        return None;
    }
    (json_object(&hay[s..e1]) && json_object(&hay[e1 + 1..e2])).then_some(e3)
}

#[cfg(test)]
mod tests {
    use super::super::tests::found;
    use crate::mask::Detector;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn valid() {
        let s = format!("Authorization: Bearer {JWT}\n");
        assert_eq!(found(&[Detector::Jwt], &s), vec![JWT]);
        // alg none: empty signature
        let none = &JWT[..JWT.rfind('.').unwrap() + 1];
        assert_eq!(found(&[Detector::Jwt], &format!("t={none} ")), vec![none]);
    }

    #[test]
    fn near_misses() {
        for s in [
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJhbGciOiJIUzI1NiJ9.abc.def",
            "eyJub3Rqc29u.eyJub3Rqc29u.sig",
            &format!("x{JWT}"),
        ] {
            assert!(found(&[Detector::Jwt], s).is_empty(), "{s}");
        }
    }
}
