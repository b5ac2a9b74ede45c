//! Actions: what a selected value becomes.

use super::spec::Action;
use super::Tokens;

/// The replacement text for `value` (the value's own text: a string's unescaped content, a
/// number's digits, a detector match's bytes).
pub fn apply(action: &Action, scope: &str, value: &[u8], tokens: &mut dyn Tokens) -> String {
    match action {
        Action::Redact { replacement } => replacement.clone(),
        Action::Partial {
            keep_first,
            keep_last,
            mask_char,
        } => partial(value, *keep_first, *keep_last, *mask_char),
        Action::Hash => tokens.hash(value),
        Action::Tokenize { format_preserving } => tokens.token(scope, value, *format_preserving),
    }
}

/// Letters and digits (and any non-ASCII character, so names in other scripts are masked
/// too) count; the first `keep_first` and last `keep_last` of them stay, the rest become
/// `mask_char`. Everything else (separators, punctuation) stays, so the shape stays readable.
/// When there are no more than keep_first + keep_last of them, all are masked: keeping them
/// would keep the whole value.
pub fn partial(value: &[u8], keep_first: usize, keep_last: usize, mask_char: char) -> String {
    if value.is_ascii() && mask_char.is_ascii() {
        return partial_ascii(value, keep_first, keep_last, mask_char as u8);
    }
    partial_chars(value, keep_first, keep_last, mask_char)
}

/// `partial` character by character, for any text.
fn partial_chars(value: &[u8], keep_first: usize, keep_last: usize, mask_char: char) -> String {
    let text = String::from_utf8_lossy(value);
    let counts = |c: char| c.is_ascii_alphanumeric() || !c.is_ascii();
    let total = text.chars().filter(|&c| counts(c)).count();
    let keep_all_masked = total <= keep_first.saturating_add(keep_last);
    let mut out = String::with_capacity(text.len());
    let mut k = 0;
    for c in text.chars() {
        if counts(c) {
            let kept = !keep_all_masked && (k < keep_first || k >= total - keep_last);
            out.push(if kept { c } else { mask_char });
            k += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// `partial` for ASCII values and mask characters: one byte per character.
fn partial_ascii(value: &[u8], keep_first: usize, keep_last: usize, mask: u8) -> String {
    let total = value.iter().filter(|c| c.is_ascii_alphanumeric()).count();
    let keep_all_masked = total <= keep_first.saturating_add(keep_last);
    let mut out = Vec::with_capacity(value.len());
    let mut k = 0;
    for &c in value {
        if c.is_ascii_alphanumeric() {
            let kept = !keep_all_masked && (k < keep_first || k >= total - keep_last);
            out.push(if kept { c } else { mask });
            k += 1;
        } else {
            out.push(c);
        }
    }
    // Only ASCII bytes went in.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_keeps_separators() {
        assert_eq!(
            partial(b"4111-1111-1111-1111", 0, 4, '*'),
            "****-****-****-1111"
        );
        assert_eq!(
            partial(b"4111 1111 1111 1111", 6, 4, '#'),
            "4111 11## #### 1111"
        );
        assert_eq!(
            partial(b"alice@example.com", 1, 0, '*'),
            "a****@*******.***"
        );
        assert_eq!(partial("José".as_bytes(), 1, 0, '*'), "J***");
        assert_eq!(partial(b"1234", 2, 2, '*'), "****");
        assert_eq!(partial(b"", 2, 2, '*'), "");
        assert_eq!(partial(b"12345", usize::MAX, 1, '*'), "*****");
    }

    proptest::proptest! {
        #[test]
        fn ascii_partial_agrees_with_chars(
            value in proptest::collection::vec(0u8..0x80, 0..40),
            keep_first in 0usize..6,
            keep_last in 0usize..6,
            mask in proptest::sample::select(vec!['*', '#', 'x']),
        ) {
            proptest::prop_assert_eq!(
                partial(&value, keep_first, keep_last, mask),
                partial_chars(&value, keep_first, keep_last, mask)
            );
        }
    }
}
