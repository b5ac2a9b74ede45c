//! Masking and tokenization of record fields: the value-level engine. Knows nothing of Kafka
//! or MQTT framing and nothing of who is asking: the policy decides which [`Rule`]s apply to a
//! record, the protocol layer hands each selected part (key, value, header value) to them.
//!
//! - [`spec`]: the rule as the policy states it (shared with the policy loader and the vault).
//! - [`path`]: field paths (a JSONPath subset).
//! - [`json`]: a streaming JSON walker (no DOM) that validates, tracks the path, and reports
//!   selected values by byte range; output is the input with only those ranges rewritten.
//! - [`detect`]: detectors for free text, one combined prefilter pass for all of them.
//! - `action`: redact, partial, hash, tokenize. [`token`]: token and hash derivation (formats
//!   documented there).
//! - `rule`: [`Rule`], tying them together: mask, find tokens, reveal.
//!
//! Nothing here panics on input or recurses: inputs are network data.

mod action;
pub mod detect;
mod edit;
pub mod json;
pub mod path;
mod rule;
mod simd;
pub mod spec;
pub mod token;

use std::collections::HashMap;

use thiserror::Error;

pub use spec::{
    Action, CharClass, Detector, DetectorSpec, FieldSpec, NewToken, OnMalformed, Parts, Payload,
    RuleSpec,
};

/// Which part of a record a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Key,
    Value,
    Header,
}

/// A rule that cannot be compiled: `field` or `detector` is the index in the spec's list.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct CompileError {
    pub field: Option<usize>,
    pub detector: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum MaskError {
    /// A `Json` rule with `on_malformed: reject` met a value that is not JSON.
    #[error("rule {rule}: {part:?} is not valid JSON ({detail})")]
    Malformed {
        rule: String,
        part: Part,
        detail: String,
    },
}

/// The 32-byte key tokens and hashes are derived from (the vault keyring's MAC key).
#[derive(Clone)]
pub struct MacKey(pub [u8; 32]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

/// Where tokens and hashes come from while a record is masked.
pub trait Tokens {
    /// The token for `value` under `scope`.
    fn token(&mut self, scope: &str, value: &[u8], format_preserving: bool) -> String;
    /// The keyed hash of `value`.
    fn hash(&mut self, value: &[u8]) -> String;
    /// A point to go back to: tokens made after it can be forgotten with [`Tokens::rollback`].
    fn mark(&self) -> usize {
        0
    }
    /// Forgets the tokens made since `mark`: a JSON walk that proved malformed part way made
    /// tokens for values its output (the text fallback) no longer carries.
    fn rollback(&mut self, _mark: usize) {}
}

/// Derives tokens with counter 0, or the counter a vault conflict asked for, and remembers
/// every token made so the caller can store them in the vault before forwarding.
pub struct CollectingTokens<'a> {
    pub key: &'a MacKey,
    /// (scope, value) → counter, for values whose counter-0 token the vault holds for another
    /// value.
    pub counters: &'a HashMap<(String, Vec<u8>), u32>,
    pub new: Vec<NewToken>,
}

pub use action::partial;
pub use rule::FALLBACK_REPLACEMENT;
pub use token::{derive_token, hash_value};

/// What a rule did to one record part, for the audit trail: counts, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: Vec<StatEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatEntry {
    pub rule: String,
    /// The field path or detector name.
    pub selector: String,
    pub action: &'static str,
    pub count: u64,
}

impl Stats {
    /// Adds `count` to the entry for (rule, selector, action), creating it if needed.
    pub fn add(&mut self, rule: &str, selector: &str, action: &'static str, count: u64) {
        match self
            .entries
            .iter_mut()
            .find(|e| e.rule == rule && e.selector == selector && e.action == action)
        {
            Some(e) => e.count += count,
            None => self.entries.push(StatEntry {
                rule: rule.to_string(),
                selector: selector.to_string(),
                action,
                count,
            }),
        }
    }
}

/// A compiled masking rule.
#[derive(Debug)]
pub struct Rule {
    spec: RuleSpec,
    c: rule::Compiled,
}

impl Rule {
    /// Parses the field paths and builds the detector searches. Fails for a bad path, a
    /// `payload: any` rule with field paths, more than 64 paths, or a custom detector with an
    /// empty prefix or a length outside 1..=4096.
    pub fn compile(spec: RuleSpec) -> Result<Rule, CompileError> {
        let c = rule::compile(&spec)?;
        Ok(Rule { spec, c })
    }

    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// Whether any field or detector of the rule tokenizes (so its topics need the vault).
    pub fn tokenizes(&self) -> bool {
        self.spec_tokenizes()
    }

    /// Whether the rule needs the vault keyring's MAC key: it hashes or tokenizes.
    pub fn needs_key(&self) -> bool {
        let spec = self.spec();
        spec.fields
            .iter()
            .map(|f| &f.action)
            .chain(spec.detectors.iter().map(|d| &d.action))
            .any(|a| matches!(a, Action::Hash | Action::Tokenize { .. }))
    }

    /// Masks one record part. `Ok(None)`: nothing selected (or the rule does not read this
    /// part, or it is empty), the bytes stay as they are. JSON output differs from the input
    /// only in the selected values (a string with escapes in which a detector matched is
    /// re-escaped whole). Stats are added only when the call succeeds.
    pub fn mask(
        &self,
        part: Part,
        input: &[u8],
        tokens: &mut dyn Tokens,
        stats: &mut Stats,
    ) -> Result<Option<Vec<u8>>, MaskError> {
        self.mask_impl(part, input, tokens, stats)
    }

    /// The tokens this rule would have made that appear in `input`, for a vault lookup:
    /// values at tokenizing field paths, `tok_…` tokens in strings (or text) when a detector
    /// tokenizes, and matches of format-preserving tokenizing detectors. Each once.
    pub fn find_tokens(&self, part: Part, input: &[u8], out: &mut Vec<String>) {
        let mut found = Vec::new();
        self.reveal_impl(part, input, None, &mut found, &mut Stats::default());
        for t in found {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }

    /// Puts the original values back for the tokens in `values`; others stay as they are.
    /// Inside JSON strings originals are escaped; a number token whose original is a number
    /// goes back as a number. Stats count reveals (action `"reveal"`).
    pub fn reveal(
        &self,
        part: Part,
        input: &[u8],
        values: &HashMap<String, Vec<u8>>,
        stats: &mut Stats,
    ) -> Option<Vec<u8>> {
        self.reveal_impl(part, input, Some(values), &mut Vec::new(), stats)
    }
}

#[cfg(test)]
mod tests;
