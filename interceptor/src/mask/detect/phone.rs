//! E.164 phone numbers, anchored on `+`: a country code not starting with 0, 8–15 digits in
//! all, optionally separated by single spaces, dashes or dots.

use super::run::is_word;

/// The number starting at the `+` at `s`: its end.
pub fn at(hay: &[u8], s: usize) -> Option<usize> {
    let n = hay.len();
    if s > 0 && (is_word(hay[s - 1]) || hay[s - 1] == b'+') {
        return None;
    }
    if s + 1 >= n || !(b'1'..=b'9').contains(&hay[s + 1]) {
        return None;
    }
    let mut i = s + 1;
    let mut digits = 0;
    // The longest prefix ending at a space-separated group boundary with ≤ 15 digits.
    let mut best = None;
    loop {
        let gs = i;
        while i < n && hay[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - gs;
        if digits > 15 {
            break;
        }
        let sep = if i < n { hay[i] } else { 0 };
        let next_digit = i + 1 < n && hay[i + 1].is_ascii_digit();
        if digits >= 8 && (i == n || !is_word(sep)) && !(sep == b'.' && next_digit) {
            best = Some(i);
        }
        if matches!(sep, b' ' | b'-' | b'.') && next_digit {
            i += 1;
        } else {
            break;
        }
    }
    if digits > 15 {
        // Only a space can end a phone number that is followed by more digits.
        return best.filter(|&e| hay[e] == b' ');
    }
    // A run that ends glued to a word is not a phone number.
    if i < n && is_word(hay[i]) {
        return None;
    }
    best.filter(|&e| e == i)
}

#[cfg(test)]
mod tests {
    use super::super::tests::found;
    use crate::mask::Detector;

    fn phones(s: &str) -> Vec<String> {
        found(&[Detector::Phone], s)
    }

    #[test]
    fn valid() {
        for s in [
            "+14155552671",
            "+1 415 555 2671",
            "+44-20-7946-0958",
            "+49.30.901820",
        ] {
            assert_eq!(
                phones(&format!("call {s}, now")),
                vec![s.to_string()],
                "{s}"
            );
        }
        assert_eq!(phones("+1 415 555 2671 12345678"), vec!["+1 415 555 2671"]);
    }

    #[test]
    fn near_misses() {
        for s in [
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "a+14155552671",
            "+14155552671x",
            "+1  415 555 2671",
            "1+1=2",
            "+1.5",
        ] {
            assert!(phones(s).is_empty(), "{s}: {:?}", phones(s));
        }
    }
}
