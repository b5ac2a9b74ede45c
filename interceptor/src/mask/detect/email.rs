//! Email addresses, anchored on `@`: local@domain.tld with a dot-atom local part of at most
//! 64 characters and a domain of at least two labels ending in an alphabetic TLD.

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// The address around the `@` at `at`: (start, end).
pub fn around(hay: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut s = at;
    while s > 0 && is_local(hay[s - 1]) {
        s -= 1;
        if at - s > 64 {
            return None;
        }
    }
    while s < at && hay[s] == b'.' {
        s += 1;
    }
    let local = &hay[s..at];
    if local.is_empty() || local.ends_with(b".") || local.windows(2).any(|w| w == b"..") {
        return None;
    }
    let n = hay.len();
    let mut i = at + 1;
    let mut labels = 0;
    let mut last;
    loop {
        let ls = i;
        while i < n && (hay[i].is_ascii_alphanumeric() || hay[i] == b'-') && i - ls < 64 {
            i += 1;
        }
        if i == ls || hay[ls] == b'-' || hay[i - 1] == b'-' || i - at > 254 {
            return None;
        }
        labels += 1;
        last = (ls, i);
        if i + 1 < n && hay[i] == b'.' && hay[i + 1].is_ascii_alphanumeric() {
            i += 1;
        } else {
            break;
        }
    }
    let tld = &hay[last.0..last.1];
    if labels < 2 || tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    if i < n && (hay[i].is_ascii_alphanumeric() || hay[i] == b'_') {
        return None;
    }
    Some((s, i))
}

#[cfg(test)]
mod tests {
    use super::super::tests::found;
    use crate::mask::Detector;

    fn emails(s: &str) -> Vec<String> {
        found(&[Detector::Email], s)
    }

    #[test]
    fn valid() {
        assert_eq!(emails("mail alice@example.com."), vec!["alice@example.com"]);
        assert_eq!(
            emails("<john.doe+tag@mail.example.co.uk>"),
            vec!["john.doe+tag@mail.example.co.uk"]
        );
        assert_eq!(emails("a@b.io,c@d.org"), vec!["a@b.io", "c@d.org"]);
    }

    #[test]
    fn near_misses() {
        for s in [
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@example.c",
            "alice@example.123",
            "alice.@example.com",
            "al..ice@example.com",
            "alice@-example.com",
            "user @ example.com",
            "@@",
        ] {
            assert!(emails(s).is_empty(), "{s}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(emails(&long).is_empty());
    }
}
