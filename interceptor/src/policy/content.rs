//! Forbidden content: literal patterns searched for in record keys, values and headers.

use std::{fmt, sync::Arc};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::RuleRef;

/// One `forbidden_content` entry of a blocking rule, compiled once when the policy loads.
#[derive(Clone)]
pub struct ContentRule {
    /// The blocking rule this entry belongs to.
    pub rule: RuleRef,
    /// The entry's own name.
    pub name: Arc<str>,
    pub in_key: bool,
    pub in_value: bool,
    pub in_headers: bool,
    patterns: Arc<[String]>,
    matcher: Arc<AhoCorasick>,
}

impl ContentRule {
    pub(crate) fn new(
        rule: RuleRef,
        name: Arc<str>,
        patterns: Vec<String>,
        case_insensitive: bool,
        (in_key, in_value, in_headers): (bool, bool, bool),
    ) -> Result<Self, String> {
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(case_insensitive)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&patterns)
            .map_err(|e| format!("cannot compile the patterns: {e}"))?;
        Ok(Self {
            rule,
            name,
            in_key,
            in_value,
            in_headers,
            patterns: patterns.into(),
            matcher: Arc::new(matcher),
        })
    }

    /// True when any pattern occurs in `haystack` (a decompressed key, value or header value).
    pub fn matches(&self, haystack: &[u8]) -> bool {
        self.matcher.is_match(haystack)
    }

    /// The pattern found first in `haystack`, for the audit trail (the policy's own text,
    /// never the record's).
    pub fn find(&self, haystack: &[u8]) -> Option<&str> {
        let m = self.matcher.find(haystack)?;
        self.patterns
            .get(m.pattern().as_usize())
            .map(String::as_str)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl fmt::Debug for ContentRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentRule")
            .field("rule", &self.rule.name)
            .field("name", &self.name)
            .field("in_key", &self.in_key)
            .field("in_value", &self.in_value)
            .field("in_headers", &self.in_headers)
            .field("patterns", &self.patterns.len())
            .finish()
    }
}
