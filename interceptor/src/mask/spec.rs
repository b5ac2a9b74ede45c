//! What a masking rule asks for, as the policy loader hands it to the mask engine: plain data,
//! already checked for shape (known names, numbers in range); the engine compiles it into a
//! [`Rule`](super::Rule) and reports what it cannot compile (a bad field path) by field index.
//!
//! Shared by three parts that are built separately: the policy schema (`policy/`), the mask
//! engine (`mask/`) and the token vault (`vault/`). Change it only with all three in mind.

use std::sync::Arc;

/// One masking rule's transform: which parts of a record, which fields, which detectors, and
/// what to do with what they select. Who it applies to and on which topics is the policy's
/// business, not the engine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The rule's name, unique in the policy set. Part of every token scope.
    pub name: Arc<str>,
    /// How the payload is read.
    pub payload: Payload,
    /// The parts of a record the rule reads.
    pub parts: Parts,
    /// What to do when a `Json` payload does not parse as JSON.
    pub on_malformed: OnMalformed,
    /// JSON field selections, in the order written. Empty for `Payload::Any`.
    pub fields: Vec<FieldSpec>,
    /// Detectors: for `Json` payloads they run over every string value the field paths did not
    /// select (and over the whole text when `on_malformed: detect` applies); for `Any` payloads
    /// over the raw bytes.
    pub detectors: Vec<DetectorSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// UTF-8 JSON text: fields by path, detectors over string values.
    Json,
    /// Any bytes: detectors only.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub key: bool,
    pub value: bool,
    /// Header values (never header names).
    pub headers: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMalformed {
    /// Refuse the record (POLICY_VIOLATION on produce; on fetch the value is redacted whole).
    Reject,
    /// Treat the value as text and mask what the rule's detectors find (all built-in detectors
    /// when the rule lists none).
    Detect,
}

/// `path` selects values in a JSON document; `action` applies to each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// JSONPath subset: `$`, `.name`, `['name']`, `[N]`, `[*]`, `.*` (see `mask::path`).
    pub path: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorSpec {
    pub detector: Detector,
    pub action: Action,
}

/// The built-in detectors, and literal-prefixed custom ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detector {
    /// 13–19 digits, optionally grouped by single spaces or dashes, passing Luhn.
    CreditCard,
    /// AAA-GG-SSSS (dashes required), area not 000/666/9xx, group not 00, serial not 0000.
    UsSsn,
    /// Country code, two check digits, 11–30 alphanumerics (optionally in groups of four
    /// separated by spaces), mod-97 = 1, length per country where known.
    Iban,
    /// RFC 5321-shaped address: local@domain.tld.
    Email,
    /// E.164: `+`, then 8–15 digits, optionally separated by single spaces, dashes or dots.
    Phone,
    /// Three base64url parts, the first two decoding to JSON objects (`eyJ`…`.eyJ`…`.`…).
    Jwt,
    /// AKIA/ASIA + 16 uppercase alphanumerics.
    AwsAccessKey,
    /// AIza + 35 of [A-Za-z0-9_-].
    GcpApiKey,
    /// ghp_/gho_/ghu_/ghs_/ghr_ + 36 alphanumerics, github_pat_ + 82 of [A-Za-z0-9_].
    GithubToken,
    /// xoxb-/xoxa-/xoxp-/xoxr-/xoxs- + at least 10 of [A-Za-z0-9-].
    SlackToken,
    /// sk_live_/rk_live_ + at least 24 alphanumerics.
    StripeKey,
    /// `-----BEGIN … PRIVATE KEY-----` through the matching END line.
    PrivateKey,
    /// A literal prefix followed by `length` characters of `chars`.
    Custom {
        name: Arc<str>,
        prefix: String,
        chars: CharClass,
        length: usize,
    },
}

impl Detector {
    /// The name written in policy files, and used in audit events and token scopes.
    pub fn name(&self) -> &str {
        match self {
            Detector::CreditCard => "credit_card",
            Detector::UsSsn => "us_ssn",
            Detector::Iban => "iban",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Jwt => "jwt",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::GcpApiKey => "gcp_api_key",
            Detector::GithubToken => "github_token",
            Detector::SlackToken => "slack_token",
            Detector::StripeKey => "stripe_key",
            Detector::PrivateKey => "private_key",
            Detector::Custom { name, .. } => name,
        }
    }

    /// Every built-in detector, by its policy name.
    pub fn builtin(name: &str) -> Option<Detector> {
        Self::builtins().into_iter().find(|d| d.name() == name)
    }

    pub fn builtins() -> Vec<Detector> {
        vec![
            Detector::CreditCard,
            Detector::UsSsn,
            Detector::Iban,
            Detector::Email,
            Detector::Phone,
            Detector::Jwt,
            Detector::AwsAccessKey,
            Detector::GcpApiKey,
            Detector::GithubToken,
            Detector::SlackToken,
            Detector::StripeKey,
            Detector::PrivateKey,
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharClass {
    Digits,
    /// [A-Z0-9]
    UpperAlnum,
    /// [A-Za-z0-9]
    Alnum,
    /// [0-9a-f]
    Hex,
}

/// What happens to a selected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Replaced by a fixed text (a JSON string when the value was a JSON value).
    Redact { replacement: String },
    /// Letters and digits replaced by `mask_char` except the first `keep_first` and the last
    /// `keep_last` of them; separators (spaces, dashes, dots, `@`) kept.
    Partial {
        keep_first: usize,
        keep_last: usize,
        mask_char: char,
    },
    /// Keyed HMAC-SHA256 of the value: stable across records, nodes and restarts for one key,
    /// irreversible.
    Hash,
    /// A vault token: deterministic for (rule, field or detector, value), so equal values give
    /// equal tokens; reversible only through the vault.
    Tokenize { format_preserving: bool },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Redact { .. } => "redact",
            Action::Partial { .. } => "partial",
            Action::Hash => "hash",
            Action::Tokenize { .. } => "tokenize",
        }
    }
}

/// A token the vault must hold before the record carrying it goes to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewToken {
    pub token: String,
    /// `rule/field-path` or `rule/detector-name`: what the token stands for, so a reveal can
    /// be checked against the rule that made it.
    pub scope: String,
    pub value: Vec<u8>,
}
