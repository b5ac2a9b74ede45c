//! Masking and tokenization of record fields: the value-level engine. Knows nothing of Kafka
//! or MQTT framing and nothing of who is asking: the policy decides which [`Rule`]s apply to a
//! record, the protocol layer hands each selected part (key, value, header value) to them.
//!
//! API CONTRACT (stub bodies; the engine fills them in). Callers rely on these signatures.

pub mod spec;

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

/// The token for (scope, value, counter): deterministic, so every node derives the same one.
pub fn derive_token(
    _key: &MacKey,
    _scope: &str,
    _value: &[u8],
    _counter: u32,
    _format_preserving: bool,
) -> String {
    String::new()
}

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

/// A compiled masking rule.
#[derive(Debug)]
pub struct Rule {
    spec: RuleSpec,
}

impl Rule {
    pub fn compile(spec: RuleSpec) -> Result<Rule, CompileError> {
        Ok(Rule { spec })
    }

    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// Whether any field or detector of the rule tokenizes (so its topics need the vault).
    pub fn tokenizes(&self) -> bool {
        false
    }

    /// Masks one record part. `Ok(None)`: nothing selected, the bytes stay as they are.
    pub fn mask(
        &self,
        _part: Part,
        _input: &[u8],
        _tokens: &mut dyn Tokens,
        _stats: &mut Stats,
    ) -> Result<Option<Vec<u8>>, MaskError> {
        Ok(None)
    }

    /// The tokens this rule would have made that appear in `input`, for a vault lookup.
    pub fn find_tokens(&self, _part: Part, _input: &[u8], _out: &mut Vec<String>) {}

    /// Puts the original values back for the tokens in `values`; others stay as they are.
    pub fn reveal(
        &self,
        _part: Part,
        _input: &[u8],
        _values: &HashMap<String, Vec<u8>>,
        _stats: &mut Stats,
    ) -> Option<Vec<u8>> {
        None
    }
}
