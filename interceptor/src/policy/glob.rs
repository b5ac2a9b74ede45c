//! Name patterns for topics, groups, transactional ids and client ids.
//!
//! `*` matches any run of characters (also none), `?` exactly one, `[abc]`, `[a-z]` and
//! `[!a-z]` one character of (or not of) a set, `\` takes the next character literally. A
//! pattern without metacharacters is an exact name; one whose only metacharacter is a trailing
//! `*` is a prefix. Both get a fast path, since they are what nearly every rule uses.

use std::fmt;

/// Longest pattern accepted, in characters: bounds the matcher's work per name.
const MAX_PATTERN_CHARS: usize = 1024;
/// Kafka's limit on topic name length.
pub(crate) const MAX_TOPIC_CHARS: usize = 249;

/// Which names a pattern is for: topic names have Kafka's restricted alphabet, the other
/// names are free-form strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameKind {
    Topic,
    Free,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Lit(char),
    One,
    Star,
    Class {
        negated: bool,
        ranges: Box<[(char, char)]>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Lit(l) => *l == c,
            Token::One => true,
            Token::Star => true,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Matcher {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Pattern(Box<[Token]>),
}

/// A compiled pattern; compares equal to another when both match the same names by the same
/// syntax (after escapes and repeated `*` are normalized).
#[derive(Clone)]
pub struct Glob {
    matcher: Matcher,
    source: Box<str>,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.matcher == other.matcher
    }
}

impl Eq for Glob {}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl Glob {
    /// Parses a pattern; the error says what is wrong and at which character (1-based).
    pub(crate) fn parse(src: &str, kind: NameKind) -> Result<Glob, String> {
        if src.is_empty() {
            return Err("empty pattern".into());
        }
        if src.chars().count() > MAX_PATTERN_CHARS {
            return Err(format!(
                "pattern longer than {MAX_PATTERN_CHARS} characters"
            ));
        }
        let mut tokens: Vec<Token> = Vec::new();
        let mut chars = src.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            let pos = i + 1;
            let token = match c {
                '*' => {
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::One,
                '\\' => match chars.next() {
                    Some((_, e)) => Token::Lit(e),
                    None => return Err(format!("`\\` at character {pos} escapes nothing")),
                },
                ']' => return Err(format!("`]` at character {pos} closes no `[`")),
                '[' => {
                    let negated = matches!(chars.peek(), Some((_, '!' | '^')));
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some((_, c)) = chars.next() {
                        if c == ']' {
                            closed = true;
                            break;
                        }
                        let lo = if c == '\\' {
                            match chars.next() {
                                Some((_, e)) => e,
                                None => break,
                            }
                        } else {
                            c
                        };
                        let hi = if matches!(chars.peek(), Some((_, '-'))) {
                            chars.next();
                            match chars.next() {
                                // `[a-]`: the dash is a member, not a range.
                                Some((_, ']')) => {
                                    ranges.push((lo, lo));
                                    ranges.push(('-', '-'));
                                    closed = true;
                                    break;
                                }
                                Some((_, h)) => h,
                                None => break,
                            }
                        } else {
                            lo
                        };
                        if hi < lo {
                            return Err(format!(
                                "range `{lo}-{hi}` in the `[` at character {pos} is backwards"
                            ));
                        }
                        ranges.push((lo, hi));
                    }
                    if !closed {
                        return Err(format!("`[` at character {pos} is never closed"));
                    }
                    if ranges.is_empty() {
                        return Err(format!("`[` at character {pos} is an empty set"));
                    }
                    Token::Class {
                        negated,
                        ranges: ranges.into(),
                    }
                }
                c => Token::Lit(c),
            };
            check_chars(&token, kind, pos)?;
            tokens.push(token);
        }
        if kind == NameKind::Topic {
            let fixed = tokens.iter().filter(|t| **t != Token::Star).count();
            if fixed > MAX_TOPIC_CHARS {
                return Err(format!(
                    "can never match: topic names have at most {MAX_TOPIC_CHARS} characters"
                ));
            }
            if src == "." || src == ".." {
                return Err(format!("`{src}` is not a valid topic name"));
            }
        }
        Ok(Glob {
            matcher: compile(tokens),
            source: src.into(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// A text equal for two globs exactly when they compare equal.
    pub(crate) fn canonical(&self) -> String {
        format!("{:?}", self.matcher)
    }

    /// True for `*` alone.
    pub fn is_any(&self) -> bool {
        self.matcher == Matcher::Any
    }

    /// The exact name, when the pattern has no metacharacters.
    pub fn exact(&self) -> Option<&str> {
        match &self.matcher {
            Matcher::Exact(s) => Some(s),
            _ => None,
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Exact(s) => **s == *name,
            Matcher::Prefix(p) => name.starts_with(&**p),
            Matcher::Pattern(tokens) => match_tokens(tokens, name),
        }
    }

    /// True when every name `other` matches is also matched by `self`. Conservative: false
    /// means "not proven", not "there is a name only `other` matches".
    pub fn covers(&self, other: &Glob) -> bool {
        if self.matcher == Matcher::Any || self.matcher == other.matcher {
            return true;
        }
        if let Matcher::Exact(name) = &other.matcher {
            return self.matches(name);
        }
        match &self.matcher {
            Matcher::Prefix(p) => other.starts_with_literal(p),
            _ => false,
        }
    }

    /// True when every name this pattern matches starts with `prefix`.
    fn starts_with_literal(&self, prefix: &str) -> bool {
        match &self.matcher {
            Matcher::Any => prefix.is_empty(),
            Matcher::Exact(s) | Matcher::Prefix(s) => s.starts_with(prefix),
            Matcher::Pattern(tokens) => {
                let mut tokens = tokens.iter();
                prefix
                    .chars()
                    .all(|c| matches!(tokens.next(), Some(Token::Lit(l)) if *l == c))
            }
        }
    }
}

fn check_chars(token: &Token, kind: NameKind, pos: usize) -> Result<(), String> {
    let bad = |c: char| match kind {
        NameKind::Topic => !topic_char(c),
        NameKind::Free => c.is_control(),
    };
    let offending = match token {
        Token::Lit(c) => bad(*c).then_some(*c),
        Token::Class { ranges, .. } => ranges
            .iter()
            .flat_map(|(lo, hi)| [*lo, *hi])
            .find(|c| bad(*c)),
        Token::One | Token::Star => None,
    };
    match (offending, kind) {
        (None, _) => Ok(()),
        (Some(c), NameKind::Topic) => Err(format!(
            "character {c:?} at {pos} cannot appear in a Kafka topic name \
             (letters, digits, `.`, `_`, `-`)"
        )),
        (Some(c), NameKind::Free) => Err(format!("control character {c:?} at {pos}")),
    }
}

fn compile(tokens: Vec<Token>) -> Matcher {
    let literal = |ts: &[Token]| -> Option<String> {
        ts.iter()
            .map(|t| match t {
                Token::Lit(c) => Some(*c),
                _ => None,
            })
            .collect()
    };
    if let Some(s) = literal(&tokens) {
        return Matcher::Exact(s.into());
    }
    if let Some((Token::Star, head)) = tokens.split_last() {
        if head.is_empty() {
            return Matcher::Any;
        }
        if let Some(p) = literal(head) {
            return Matcher::Prefix(p.into());
        }
    }
    Matcher::Pattern(tokens.into())
}

/// Wildcard matching with a single backtrack point: linear in the name for each `*`, no
/// allocation, no recursion.
fn match_tokens(tokens: &[Token], name: &str) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        let rest = name.get(t..).unwrap_or("");
        match tokens.get(p) {
            Some(Token::Star) => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(tok) => {
                if let Some(c) = rest.chars().next() {
                    if tok.matches(c) {
                        p += 1;
                        t += c.len_utf8();
                        continue;
                    }
                }
            }
            None if rest.is_empty() => return true,
            None => {}
        }
        let Some((sp, st)) = star else {
            return false;
        };
        let Some(c) = name.get(st..).and_then(|r| r.chars().next()) else {
            return false;
        };
        star = Some((sp, st + c.len_utf8()));
        p = sp;
        t = st + c.len_utf8();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Glob {
        Glob::parse(s, NameKind::Topic).unwrap()
    }

    fn free(s: &str) -> Glob {
        Glob::parse(s, NameKind::Free).unwrap()
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", true),
            ("payments", "payments", true),
            ("payments", "payments2", false),
            ("payments.*", "payments.eu", true),
            ("payments.*", "payments.", true),
            ("payments.*", "payments", false),
            ("payments.*", "paymentsXeu", false),
            ("*.pii", "crm.pii", true),
            ("*.pii", "crm.pii.x", false),
            ("*.pii.*", "a.pii.b", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*b*c", "abcabc", true),
            ("log-?", "log-1", true),
            ("log-?", "log-12", false),
            ("log-[0-9]", "log-7", true),
            ("log-[0-9]", "log-x", false),
            ("log-[!0-9]", "log-x", true),
            ("log-[!0-9]", "log-7", false),
            ("log-[ab-]", "log--", true),
            ("*-[0-9]*", "orders-2024", true),
            ("*-[0-9]*", "orders-x", false),
        ];
        for (pat, name, want) in cases {
            assert_eq!(topic(pat).matches(name), *want, "{pat} ~ {name}");
        }
        assert!(free("svc-\\*").matches("svc-*"));
        assert!(!free("svc-\\*").matches("svc-a"));
        assert!(free("éq*").matches("équipe"));
        assert!(free("?quipe").matches("équipe"));
    }

    #[test]
    fn fast_paths_are_chosen() {
        assert!(topic("*").is_any());
        assert!(topic("**").is_any());
        assert_eq!(topic("a.b").exact(), Some("a.b"));
        assert_eq!(topic("a.*").matcher, Matcher::Prefix("a.".into()));
        assert!(matches!(topic("a.*.b").matcher, Matcher::Pattern(_)));
    }

    #[test]
    fn bad_patterns_say_where() {
        let err = |s: &str, k| Glob::parse(s, k).unwrap_err();
        assert_eq!(err("", NameKind::Topic), "empty pattern");
        assert!(err("ab[cd", NameKind::Topic).contains("`[` at character 3 is never closed"));
        assert!(err("ab]", NameKind::Topic).contains("character 3"));
        assert!(err("a[]", NameKind::Topic).contains("empty set"));
        assert!(err("a[z-a]", NameKind::Topic).contains("backwards"));
        assert!(err("a b", NameKind::Topic).contains("' ' at 2"));
        assert!(err("a/b", NameKind::Topic).contains("topic name"));
        assert!(err("a[/]", NameKind::Topic).contains("topic name"));
        assert!(err("abc\\", NameKind::Free).contains("escapes nothing"));
        assert!(err("a\u{7}", NameKind::Free).contains("control"));
        assert!(err("..", NameKind::Topic).contains("not a valid topic"));
        assert!(err(&"a".repeat(250), NameKind::Topic).contains("249"));
        assert!(Glob::parse(&"a".repeat(249), NameKind::Topic).is_ok());
        assert!(Glob::parse(&"*".repeat(2000), NameKind::Free).is_err());
        assert!(Glob::parse("user/with space", NameKind::Free).is_ok());
    }

    #[test]
    fn covering() {
        let yes = [
            ("*", "a.*"),
            ("*", "a?"),
            ("a.*", "a.*"),
            ("a.*", "a.b.*"),
            ("a.*", "a.b"),
            ("a.*", "a.b?c"),
            ("a*", "a.*"),
            ("*.pii", "crm.pii"),
            ("a.[0-9]", "a.5"),
        ];
        for (a, b) in yes {
            assert!(topic(a).covers(&topic(b)), "{a} covers {b}");
        }
        let no = [
            ("a.*", "*"),
            ("a.b.*", "a.*"),
            ("a.b", "a.*"),
            ("a.*", "b.a"),
            ("*.pii", "*.pii.x"),
            // True, but not provable by this conservative check.
            ("a?", "a[bc]"),
        ];
        for (a, b) in no {
            assert!(!topic(a).covers(&topic(b)), "{a} does not cover {b}");
        }
    }
}
