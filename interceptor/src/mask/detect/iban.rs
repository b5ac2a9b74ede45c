//! IBANs: country code, two check digits, the BBAN (11–30 uppercase alphanumerics, optionally
//! in space-separated groups of four), mod-97 = 1. Where the country's length is known only
//! that length is read, so a grouped IBAN followed by an uppercase word is still found.

use super::run::is_word;

/// Total IBAN lengths for the countries most records carry.
fn country_len(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AT" => 20,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"CH" => 21,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"EE" => 20,
        b"ES" => 24,
        b"FI" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NL" => 18,
        b"NO" => 15,
        b"PK" => 24,
        b"PL" => 28,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"SA" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        _ => return None,
    })
}

fn alnum_upper(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// The IBAN starting at `s` (its country code), if there is one: its end.
pub fn at(hay: &[u8], s: usize) -> Option<usize> {
    let n = hay.len();
    if s + 4 > n
        || !hay[s].is_ascii_uppercase()
        || !hay[s + 1].is_ascii_uppercase()
        || !hay[s + 2].is_ascii_digit()
        || !hay[s + 3].is_ascii_digit()
        || (s > 0 && is_word(hay[s - 1]))
    {
        return None;
    }
    let want = country_len([hay[s], hay[s + 1]]).map(|l| l - 4);
    let max = want.unwrap_or(30);
    let grouped = s + 5 < n && hay[s + 4] == b' ' && alnum_upper(hay[s + 5]);
    let mut chars = [0u8; 30];
    let mut k = 0;
    let mut i = s + 4;
    let mut in_group = 0;
    while k < max {
        if grouped && (in_group == 4 || (k == 0 && in_group == 0)) {
            if i + 1 < n && hay[i] == b' ' && alnum_upper(hay[i + 1]) {
                i += 1;
                in_group = 0;
            } else {
                break;
            }
        }
        if i < n && alnum_upper(hay[i]) {
            chars[k] = hay[i];
            k += 1;
            i += 1;
            in_group += 1;
        } else {
            break;
        }
    }
    if k < 11 || want.is_some_and(|w| k != w) {
        return None;
    }
    if i < n && is_word(hay[i]) {
        return None;
    }
    // BBAN, then country and check digits, letters as 10–35, mod 97 on the fly.
    let mut r: u32 = 0;
    let mut add = |c: u8| {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        r = if v >= 10 {
            (r * 100 + v) % 97
        } else {
            (r * 10 + v) % 97
        };
    };
    for &c in &chars[..k] {
        add(c);
    }
    for &c in &hay[s..s + 4] {
        add(c);
    }
    (r == 1).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::super::tests::found;
    use crate::mask::Detector;

    fn ibans(s: &str) -> Vec<String> {
        found(&[Detector::Iban], s)
    }

    #[test]
    fn valid() {
        for s in [
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "NO9386011117947",
            "CH9300762011623852957",
        ] {
            assert_eq!(ibans(&format!("iban: {s}, ok")), vec![s.to_string()], "{s}");
        }
        assert_eq!(
            ibans("GB82 WEST 1234 5698 7654 32 USD"),
            vec!["GB82 WEST 1234 5698 7654 32".to_string()]
        );
    }

    #[test]
    fn near_misses() {
        for s in [
            "GB83WEST12345698765432",     // check digits
            "GB82WEST12345698765433",     // checksum
            "GB82WEST1234569876543",      // too short for GB
            "GB82WEST123456987654321",    // too long for GB
            "XGB82WEST12345698765432",    // glued
            "GB82 WEST 1234 5698 7654 3", // grouped, short
            "AB12",
            "ID 12345",
        ] {
            assert!(ibans(s).is_empty(), "{s}");
        }
    }
}
