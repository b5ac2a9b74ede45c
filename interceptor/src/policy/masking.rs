//! Masking rules once parsed: which topics they cover, for whom, and who may see the original
//! values of the tokens they make. The transform itself is the mask engine's [`mask::Rule`].

use std::{fmt, sync::Arc};

use crate::mask;

use super::{glob::Glob, model::Subjects, RuleRef, Subject};

/// When a masking rule rewrites records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskStage {
    /// Before the broker stores them, for every producer: the broker never holds the values.
    Produce,
    /// On their way to the consumers the rule names: the broker holds the values.
    Fetch,
}

impl MaskStage {
    pub fn as_str(self) -> &'static str {
        match self {
            MaskStage::Produce => "produce",
            MaskStage::Fetch => "fetch",
        }
    }
}

impl fmt::Display for MaskStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A compiled masking rule of the policy set.
#[derive(Debug)]
pub struct MaskingRule {
    pub at: RuleRef,
    pub rule: Arc<mask::Rule>,
    pub stage: MaskStage,
    pub(super) column: usize,
    pub(super) topics: Vec<Glob>,
    /// MQTT topic filters whose payloads the rule masks.
    pub(super) mqtt_topics: Vec<crate::mqtt::topic::TopicFilter>,
    /// Fetch rules: the consumers whose fetches are masked. None for produce rules.
    pub(super) subjects: Option<Subjects>,
    /// Produce rules that tokenize: who gets the original values back.
    pub(super) reveal: Option<Subjects>,
    /// Worked out from the spec here rather than asked of the engine, so that the policy's
    /// answers do not depend on how the engine compiles.
    pub(super) tokenizes: bool,
}

impl MaskingRule {
    pub fn applies_to(&self, topic: &str) -> bool {
        self.topics.iter().any(|g| g.matches(topic))
    }

    pub fn topics(&self) -> &[Glob] {
        &self.topics
    }

    /// Whether the rule masks MQTT payloads published to `topic`.
    pub fn applies_to_mqtt(&self, topic: &str) -> bool {
        self.mqtt_topics.iter().any(|f| f.matches(topic))
    }

    /// Some field or detector of the rule has `action: tokenize`.
    pub fn tokenizes(&self) -> bool {
        self.tokenizes
    }

    /// The rule lists `reveal` subjects (only produce rules that tokenize may).
    pub fn has_reveal(&self) -> bool {
        self.reveal.is_some()
    }

    pub(super) fn reveals_to(&self, s: &Subject<'_>) -> bool {
        self.tokenizes && self.reveal.as_ref().is_some_and(|r| r.matches(s))
    }

    pub(super) fn masks_fetch_of(&self, s: &Subject<'_>) -> bool {
        self.stage == MaskStage::Fetch && self.subjects.as_ref().is_some_and(|r| r.matches(s))
    }

    /// `$.path action, detector action, …`: what the rule does, in one line.
    pub fn summary(&self) -> String {
        let spec = self.rule.spec();
        let fields = spec
            .fields
            .iter()
            .map(|f| format!("{} {}", f.path, f.action.name()));
        let detectors = spec
            .detectors
            .iter()
            .map(|d| format!("detector {} {}", d.detector.name(), d.action.name()));
        fields.chain(detectors).collect::<Vec<_>>().join(", ")
    }
}

/// What a consumer's fetch of one topic needs: tokens to put the original values back for,
/// then masks to apply. Both empty (and unallocated) when nothing applies.
#[derive(Debug, Default, Clone)]
pub struct FetchMasking {
    /// Produce rules whose tokens this consumer gets revealed, in file order.
    pub reveal: Vec<Arc<MaskingRule>>,
    /// Fetch rules that apply to this consumer, in file order; applied after the reveal.
    pub mask: Vec<Arc<MaskingRule>>,
}

impl FetchMasking {
    pub fn is_empty(&self) -> bool {
        self.reveal.is_empty() && self.mask.is_empty()
    }
}

/// Why `interceptor detokenize` (or a reveal through the vault) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevealRefusal {
    /// No masking rule of that name in the set in force: a token from a rule since removed or
    /// renamed, or a mistyped scope.
    UnknownRule(String),
    /// The rule makes no tokens (a fetch rule, or a produce rule without `tokenize`).
    NoTokens(RuleRef),
    /// The subject is not in the rule's `reveal` list, or the rule has none.
    NotRevealed(RuleRef),
}

impl fmt::Display for RevealRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevealRefusal::UnknownRule(name) => {
                write!(f, "no masking rule named `{name}` in the policy set")
            }
            RevealRefusal::NoTokens(at) => {
                write!(
                    f,
                    "masking rule {at} makes no tokens (it does not tokenize on produce)"
                )
            }
            RevealRefusal::NotRevealed(at) => {
                write!(
                    f,
                    "masking rule {at} does not reveal its tokens to this subject"
                )
            }
        }
    }
}

impl std::error::Error for RevealRefusal {}
