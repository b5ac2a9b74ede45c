//! US social security numbers: AAA-GG-SSSS, dashes required (nine bare digits are too common
//! to call an SSN), area not 000, 666 or 9xx, group not 00, serial not 0000.

use super::run::Groups;

fn num(hay: &[u8], (s, e): (usize, usize)) -> u32 {
    hay[s..e]
        .iter()
        .fold(0, |a, &d| a * 10 + u32::from(d - b'0'))
}

pub fn find_in_groups(hay: &[u8], g: &Groups, mut emit: impl FnMut(usize, usize)) {
    if g.len < 3 {
        return;
    }
    for a in 0..g.len - 2 {
        let shape = g.glen(a) == 3
            && g.glen(a + 1) == 2
            && g.glen(a + 2) == 4
            && g.seps[a + 1] == b'-'
            && g.seps[a + 2] == b'-';
        // Part of a longer dashed number (a phone number, a part number) is not an SSN.
        let alone = (a == 0 || g.seps[a] != b'-') && (a + 3 >= g.len || g.seps[a + 3] != b'-');
        if !(shape && alone) {
            continue;
        }
        let area = num(hay, g.spans[a]);
        let group = num(hay, g.spans[a + 1]);
        let serial = num(hay, g.spans[a + 2]);
        if area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 {
            emit(g.spans[a].0, g.spans[a + 2].1);
        }
    }
}

/// Whether all of `value` is one SSN (for format-preserving tokens).
pub fn looks_like_ssn(value: &[u8]) -> bool {
    if value.len() != 11 || !value[0].is_ascii_digit() {
        return false;
    }
    let g = Groups::parse(value, 0);
    let mut whole = false;
    find_in_groups(value, &g, |s, e| whole |= s == 0 && e == value.len());
    whole
}

#[cfg(test)]
mod tests {
    use super::super::tests::found;
    use crate::mask::Detector;

    fn ssns(s: &str) -> Vec<String> {
        found(&[Detector::UsSsn], s)
    }

    #[test]
    fn valid() {
        for s in ["123-45-6789", "001-01-0001", "899-99-9999"] {
            assert_eq!(ssns(&format!("ssn {s}.")), vec![s.to_string()]);
        }
        assert_eq!(ssns("123-45-6789 2020"), vec!["123-45-6789".to_string()]);
    }

    #[test]
    fn near_misses() {
        for s in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123456789",
            "123 45 6789",
            "1123-45-6789",
            "123-45-67890",
            "123-45-6789-1",
            "555-123-45-6789",
            "a123-45-6789",
            "2024-01-15",
        ] {
            assert!(ssns(s).is_empty(), "{s}");
        }
    }
}
