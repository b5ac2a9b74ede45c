//! Payment card numbers: 13–19 digits, contiguous or in groups of 3–6 joined by one kind of
//! single separator, with a known brand prefix, a length that brand issues, and a valid Luhn
//! check digit. The brand check is what keeps epoch-millisecond timestamps (13 digits from 1)
//! and most order ids from being masked.

use super::run::Groups;

/// Luhn sum of `digits` (values 0–9, rightmost is the check digit); valid when ≡ 0 mod 10.
pub fn luhn_sum(digits: &[u8]) -> u32 {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let d = u32::from(d);
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
    }
    sum
}

/// Whether `digits` (values 0–9) have a brand prefix (IIN) and a length that brand issues.
pub fn brand_ok(digits: &[u8]) -> bool {
    let n = digits.len();
    let pre = |k: usize| digits[..k].iter().fold(0u32, |a, &d| a * 10 + u32::from(d));
    match digits[0] {
        // Visa
        4 => matches!(n, 13 | 16 | 19),
        // Mastercard 51–55, 2221–2720
        5 => (51..=55).contains(&pre(2)) && n == 16,
        2 => (2221..=2720).contains(&pre(4)) && n == 16,
        3 => {
            let p2 = pre(2);
            let p3 = pre(3);
            let p4 = pre(4);
            // Amex; Diners 36, 38, 300–305; JCB 3528–3589
            ((p2 == 34 || p2 == 37) && n == 15)
                || ((p2 == 36 || p2 == 38 || (300..=305).contains(&p3)) && (14..=19).contains(&n))
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&n))
        }
        6 => {
            let p2 = pre(2);
            let p3 = pre(3);
            // Discover 6011, 644–649, 65; UnionPay 62
            (pre(4) == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62)
                && (16..=19).contains(&n)
        }
        _ => false,
    }
}

fn valid(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && brand_ok(digits) && luhn_sum(digits) % 10 == 0
}

/// Collects the digits of groups a..=b into `buf`; returns how many.
fn gather(hay: &[u8], g: &Groups, a: usize, b: usize, buf: &mut [u8; 19]) -> usize {
    let mut k = 0;
    for i in a..=b {
        let (s, e) = g.spans[i];
        for &c in &hay[s..e] {
            if k == buf.len() {
                return k + 1;
            }
            buf[k] = c - b'0';
            k += 1;
        }
    }
    k
}

/// The card numbers in a bounded run of groups, as (start, end) byte ranges.
pub fn find_in_groups(hay: &[u8], g: &Groups, mut emit: impl FnMut(usize, usize)) {
    let mut buf = [0u8; 19];
    let mut a = 0;
    'outer: while a < g.len {
        // No brand starts with 0, 1, 7, 8 or 9: nothing to gather (epoch timestamps).
        if !matches!(hay[g.spans[a].0], b'2'..=b'6') {
            a += 1;
            continue;
        }
        let la = g.glen(a);
        if (13..=19).contains(&la) {
            let k = gather(hay, g, a, a, &mut buf);
            if valid(&buf[..k]) {
                emit(g.spans[a].0, g.spans[a].1);
                a += 1;
                continue;
            }
        }
        if la == 4 {
            // Longest window first: 4-4-4-4-3 before 4-4-4-4.
            let last = (a + 5).min(g.len - 1);
            let mut b = last;
            while b > a {
                let same_sep = (a + 2..=b).all(|i| g.seps[i] == g.seps[a + 1]);
                let sizes = (a + 1..=b).all(|i| (3..=6).contains(&g.glen(i)));
                let total: usize = (a..=b).map(|i| g.glen(i)).sum();
                if same_sep && sizes && (13..=19).contains(&total) {
                    let k = gather(hay, g, a, b, &mut buf);
                    if valid(&buf[..k]) {
                        emit(g.spans[a].0, g.spans[b].1);
                        a = b + 1;
                        continue 'outer;
                    }
                }
                b -= 1;
            }
        }
        a += 1;
    }
}

/// Whether all of `value` is one card number (for format-preserving tokens of JSON fields).
pub fn looks_like_card(value: &[u8]) -> bool {
    if value.is_empty() || !value[0].is_ascii_digit() || value.len() > 23 {
        return false;
    }
    let g = Groups::parse(value, 0);
    if g.end != value.len() || g.overflow {
        return false;
    }
    let mut whole = false;
    find_in_groups(value, &g, |s, e| whole |= s == 0 && e == value.len());
    whole
}

#[cfg(test)]
mod tests {
    use super::super::tests::found;
    use super::*;
    use crate::mask::Detector;

    fn cards(s: &str) -> Vec<String> {
        found(&[Detector::CreditCard], s)
    }

    #[test]
    fn valid_cards() {
        for c in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "3530111333300000",
            "30569309025904",
            "6200000000000005",
            "4222222222222",
        ] {
            assert_eq!(
                cards(&format!("card: {c}, thanks")),
                vec![c.to_string()],
                "{c}"
            );
            assert!(looks_like_card(c.as_bytes()), "{c}");
        }
    }

    #[test]
    fn near_misses() {
        for s in [
            "4111111111111112",       // Luhn
            "1700000000000",          // epoch millis (no brand)
            "1700000000000000",       // epoch micros
            "41111111111111111",      // visa with 17 digits
            "94111111111111111",      // embedded in a longer run
            "x4111111111111111",      // glued to a word
            "4111111111111111z",      // glued to a word
            "12.4111111111111111",    // decimal
            "4111111111111111.5",     // decimal
            "4111 1111-1111 1111",    // mixed separators
            "4111  1111 1111 1111",   // double space
            "5655555555554444",       // 56 is no brand
            "4111111111111111111111", // too long
            "order 1234567890123",    // Luhn-invalid id
            "2024-01-15 10:30:00",    // a date
        ] {
            assert!(cards(s).is_empty(), "{s}: {:?}", cards(s));
        }
        assert!(!looks_like_card(b"4111111111111111 "));
    }

    #[test]
    fn next_to_other_numbers() {
        assert_eq!(
            cards("4111 1111 1111 1111 2 items"),
            vec!["4111 1111 1111 1111".to_string()]
        );
        assert_eq!(
            cards("a 4111111111111111 b 5555555555554444"),
            vec![
                "4111111111111111".to_string(),
                "5555555555554444".to_string()
            ]
        );
    }
}
