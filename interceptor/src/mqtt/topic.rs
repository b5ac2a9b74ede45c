//! MQTT topic names and topic filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7–4.8): validation,
//! matching, and the two set questions policy asks of filters: do two filters share a topic
//! (`overlaps`), and does one match every topic the other does (`covers`).
//!
//! - Levels are separated by `/`; empty levels are levels (`a//b` has three).
//! - `+` matches exactly one level, `#` (last, alone in its level) any number of levels
//!   including none: `a/#` matches `a`, `a/b`, `a/b/c`.
//! - A topic whose first character is `$` (`$SYS/...`) is matched by no filter whose first
//!   level is a wildcard (§4.7.2): `#` and `+/x` never reach `$SYS/x`.

use std::fmt;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("a topic or filter cannot be empty")]
    Empty,
    #[error("`#` must be the last level of a filter and alone in it")]
    MisplacedHash,
    #[error("`+` must be alone in its level")]
    MisplacedPlus,
    #[error("topic names cannot contain the wildcards `+` or `#`")]
    WildcardInName,
    #[error("topics cannot contain the NUL character")]
    Nul,
    #[error("a shared subscription is `$share/NAME/FILTER` with a non-empty NAME without `/`, `+` or `#`")]
    BadShare,
}

/// One level of a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Level {
    Exact(String),
    /// `+`
    One,
    /// `#`
    Rest,
}

/// A parsed topic filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    text: String,
    levels: Vec<Level>,
}

/// Checks a topic name (what a PUBLISH carries).
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.contains('\0') {
        return Err(TopicError::Nul);
    }
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// `$share/{name}/{filter}`: `Ok(Some((name, filter)))`; `Ok(None)` for an ordinary filter.
pub fn parse_shared(text: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = text.strip_prefix("$share/") else {
        return Ok(None);
    };
    let (name, filter) = rest.split_once('/').ok_or(TopicError::BadShare)?;
    if name.is_empty() || name.contains(['+', '#']) || filter.is_empty() {
        return Err(TopicError::BadShare);
    }
    Ok(Some((name, filter)))
}

impl TopicFilter {
    pub fn parse(text: &str) -> Result<TopicFilter, TopicError> {
        if text.is_empty() {
            return Err(TopicError::Empty);
        }
        if text.contains('\0') {
            return Err(TopicError::Nul);
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err(TopicError::MisplacedHash),
                "+" => Level::One,
                p if p.contains('#') => return Err(TopicError::MisplacedHash),
                p if p.contains('+') => return Err(TopicError::MisplacedPlus),
                p => Level::Exact(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(TopicFilter {
            text: text.to_owned(),
            levels,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn has_wildcards(&self) -> bool {
        self.levels.iter().any(|l| !matches!(l, Level::Exact(_)))
    }

    /// The filter starts with a wildcard: it reaches no `$` topic.
    fn wild_first(&self) -> bool {
        !matches!(self.levels.first(), Some(Level::Exact(_)))
    }

    /// A filter whose first level is an exact `$...`: it matches only `$` topics.
    fn dollar_first(&self) -> bool {
        matches!(self.levels.first(), Some(Level::Exact(l)) if l.starts_with('$'))
    }

    /// Whether the topic name `topic` is matched.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && self.wild_first() {
            return false;
        }
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return true,
                Level::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(want) => match parts.next() {
                    Some(part) if part == want => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// Some topic name is matched by both filters.
    pub fn overlaps(&self, other: &TopicFilter) -> bool {
        // A topic both match starts with `$` or not: if either filter needs `$` first, the
        // other must not start with a wildcard.
        if (self.dollar_first() && other.wild_first())
            || (other.dollar_first() && self.wild_first())
        {
            return false;
        }
        levels_overlap(&self.levels, &other.levels)
    }

    /// Every topic name `other` matches, `self` matches too.
    pub fn covers(&self, other: &TopicFilter) -> bool {
        // `other` may reach `$` topics (it starts with an exact `$` level, or with an exact
        // level that is not `$`-prefixed: then it reaches none). A wildcard-first `self`
        // reaches no `$` topic, so it cannot cover a filter that reaches some.
        if self.wild_first() && other.dollar_first() {
            return false;
        }
        levels_cover(&self.levels, &other.levels, true)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Some sequence of levels is matched by both patterns (the `$` rule aside).
fn levels_overlap(a: &[Level], b: &[Level]) -> bool {
    match (a.first(), b.first()) {
        (Some(Level::Rest), _) | (_, Some(Level::Rest)) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(x), Some(y)) => {
            let same = match (x, y) {
                (Level::Exact(p), Level::Exact(q)) => p == q,
                _ => true,
            };
            same && levels_overlap(&a[1..], &b[1..])
        }
    }
}

/// Every sequence of levels `b` matches, `a` matches (the `$` rule aside). `top`: no level
/// consumed yet, where a `#` cannot match zero levels (a topic has at least one).
fn levels_cover(a: &[Level], b: &[Level], top: bool) -> bool {
    match (a.first(), b.first()) {
        // `#` matches whatever is left, including nothing.
        (Some(Level::Rest), _) => true,
        // `b` matches the rest whatever it is: at the top that is "one level or more", which
        // `+/#` matches too; below it, "nothing or more", which only `#` matches.
        (_, Some(Level::Rest)) => top && matches!(a, [Level::One, Level::Rest]),
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(x), Some(y)) => {
            let ok = match (x, y) {
                (Level::One, _) => true,
                (Level::Exact(p), Level::Exact(q)) => p == q,
                _ => false,
            };
            ok && levels_cover(&a[1..], &b[1..], false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    #[test]
    fn the_specs_examples_match_as_written() {
        let cases: &[(&str, &str, bool)] = &[
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "sport/tennis", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/monitor/Clients", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(f(filter).matches(topic), *want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn bad_filters_and_names_are_refused() {
        for bad in ["", "a/#/b", "a#", "a/b#", "a+", "+a/b", "a\0b"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name("a/+").is_err());
        assert!(validate_topic_name("a/#").is_err());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("a/b").is_ok());
        assert_eq!(parse_shared("$share/g/a/#"), Ok(Some(("g", "a/#"))));
        assert_eq!(parse_shared("a/#"), Ok(None));
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/",
        ] {
            assert!(parse_shared(bad).is_err(), "{bad:?}");
        }
    }

    /// Every topic name up to four levels over a small alphabet (and the empty one).
    fn topics() -> Vec<String> {
        let alphabet = ["a", "b", "$SYS", ""];
        let mut out: Vec<String> = Vec::new();
        let mut layer: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &layer {
                for l in alphabet {
                    let mut p = prefix.clone();
                    p.push(l);
                    next.push(p);
                }
            }
            // The empty name ("" as one level) is no valid topic, but the set questions treat
            // it as one: that only makes them answer "overlaps" and "does not cover" a little
            // more often, which narrows a subscription instead of granting or refusing it.
            out.extend(next.iter().map(|t| t.join("/")));
            layer = next;
        }
        out.sort();
        out.dedup();
        out
    }

    /// Every valid filter up to three levels over a small alphabet with wildcards.
    fn filters() -> Vec<TopicFilter> {
        let alphabet = ["a", "b", "$SYS", "", "+", "#"];
        let mut out = Vec::new();
        let mut layer: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..3 {
            let mut next = Vec::new();
            for prefix in &layer {
                for l in alphabet {
                    let mut p = prefix.clone();
                    p.push(l);
                    next.push(p);
                }
            }
            for t in &next {
                if let Ok(filter) = TopicFilter::parse(&t.join("/")) {
                    out.push(filter);
                }
            }
            layer = next;
        }
        out
    }

    #[test]
    fn overlaps_and_covers_agree_with_enumeration() {
        let topics = topics();
        let filters = filters();
        for x in &filters {
            let mx: Vec<bool> = topics.iter().map(|t| x.matches(t)).collect();
            for y in &filters {
                let my: Vec<bool> = topics.iter().map(|t| y.matches(t)).collect();
                let overlap = mx.iter().zip(&my).any(|(a, b)| *a && *b);
                let cover = mx.iter().zip(&my).all(|(a, b)| *a || !*b);
                // Enumeration is bounded (4 levels): a filter ending in `#` reaches longer
                // topics too, which only strengthens "overlaps" and cannot break "covers" for
                // filters of at most three levels.
                assert_eq!(x.overlaps(y), overlap, "{x} overlaps {y}");
                assert_eq!(x.covers(y), cover, "{x} covers {y}");
            }
        }
    }
}
