//! JSON string and number text: escaping replacements, unescaping values, number grammar.

/// Appends the content of a validated JSON string (without its quotes) unescaped.
pub fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let Some(p) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            return;
        };
        out.extend_from_slice(&raw[i..i + p]);
        i += p;
        let c = raw.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let simple = match c {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'u' => {
                let hi = hex4(raw, i);
                i += 4;
                let cp = if (0xD800..0xDC00).contains(&hi) && raw.get(i) == Some(&b'\\') {
                    let lo = hex4(raw, i + 2);
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3ff)
                } else {
                    hi
                };
                let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            other => other,
        };
        out.push(simple);
    }
}

/// The value of four hex digits at `i` (0 where the text is short; callers pass validated
/// text).
pub fn hex4(raw: &[u8], i: usize) -> u32 {
    let mut v = 0;
    for k in 0..4 {
        let d = match raw.get(i + k) {
            Some(&c @ b'0'..=b'9') => c - b'0',
            Some(&c @ b'a'..=b'f') => c - b'a' + 10,
            Some(&c @ b'A'..=b'F') => c - b'A' + 10,
            _ => return u32::MAX,
        };
        v = (v << 4) | u32::from(d);
    }
    v
}

/// Appends `s` as the content of a JSON string (no quotes). Bytes that are not UTF-8 become
/// U+FFFD: the output must stay JSON whatever a vault or policy hands back.
pub fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(s) {
        Ok(t) => escape_str(t, out),
        Err(_) => escape_str(&String::from_utf8_lossy(s), out),
    }
}

fn escape_str(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    if !b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\') {
        out.extend_from_slice(b);
        return;
    }
    let mut last = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[last..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{:04x}", c).as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        last = i + 1;
    }
    out.extend_from_slice(&b[last..]);
}

/// Appends `s` as a quoted JSON string.
pub fn quoted(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    escape_into(s, out);
    out.push(b'"');
}

/// The end of the JSON number starting at `i`, if one starts there.
pub fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i > s).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i)?,
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// Whether all of `s` is one JSON number.
pub fn is_number(s: &[u8]) -> bool {
    number_end(s, 0) == Some(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_roundtrips_through_serde() {
        let s = "a\"b\\c\n\t\u{1}\u{7f}é😀/";
        let mut out = Vec::new();
        quoted(s.as_bytes(), &mut out);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
        let mut un = Vec::new();
        unescape(&out[1..out.len() - 1], &mut un);
        assert_eq!(un, s.as_bytes());
        let mut un = Vec::new();
        unescape(br"\u00e9\ud83d\ude00\/", &mut un);
        assert_eq!(un, "é😀/".as_bytes());
    }

    #[test]
    fn numbers() {
        for n in ["0", "-0", "12", "1.5", "-1.5e10", "1E+2", "0.0e-1"] {
            assert!(is_number(n.as_bytes()), "{n}");
        }
        for n in ["", "-", "01", "1.", ".5", "1e", "+1", "1.5x", "0x10"] {
            assert!(!is_number(n.as_bytes()), "{n}");
        }
    }
}
