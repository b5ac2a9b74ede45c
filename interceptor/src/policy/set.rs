//! The active policy set: loaded from a directory as one unit, validated, compiled for fast
//! decisions, and named by a version (a hash of its files) that audit events carry.

use std::{
    collections::HashMap,
    fmt, fs,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use sha2::{Digest, Sha256};

use crate::mqtt::topic::TopicFilter;

use super::{
    content::ContentRule,
    lint,
    masking::{FetchMasking, MaskStage, MaskingRule, RevealRefusal},
    model::{AccessRule, BlockRule, Effect, RuleRef},
    schema::{self, Budget, Ctx},
    Check, Operation, PolicyError, PolicyErrors, Resource, ResourceKind, Subject,
};

/// Largest policy file read; a bigger one is an error, never a memory hazard.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most rules (access, blocking and masking together) in one directory.
pub const MAX_RULES: usize = 10_000;
/// Most masking rules in one directory: the proxy walks them for every produced and fetched
/// partition.
pub const MAX_MASKING_RULES: usize = 1_000;
/// Most policy files in one directory.
pub const MAX_FILES: usize = 1_000;

const KINDS: usize = 5;

/// The answer for one operation on one resource, and the rule that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub check: Check,
    /// The deciding access rule's effect; None when no rule matched (default deny).
    pub effect: Option<Effect>,
    /// The deciding rule: the access rule, or the blocking rule for a [`Check::Violation`].
    pub rule: Option<RuleRef>,
}

impl Decision {
    const DEFAULT_DENY: Decision = Decision {
        check: Check::Denied,
        effect: None,
        rule: None,
    };
}

/// The blocking rules that apply to one topic, merged: the smallest limit wins, every content
/// rule applies.
#[derive(Debug, Clone, Default)]
pub struct TopicLimits {
    /// The topic is immutable (no delete, delete-records, alter or alter-configs).
    pub immutable: Option<RuleRef>,
    pub max_record_bytes: Option<(u64, RuleRef)>,
    pub max_batch_bytes: Option<(u64, RuleRef)>,
    pub content: Vec<ContentRule>,
}

impl TopicLimits {
    /// No limit applies: record batches to this topic need no inspection.
    pub fn is_empty(&self) -> bool {
        self.max_record_bytes.is_none() && self.max_batch_bytes.is_none() && self.content.is_empty()
    }
}

/// The answer for one MQTT subscription filter, from what it could receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// One allow rule covers every topic the filter matches, and no deny rule reaches any.
    Granted { rule: RuleRef },
    /// Allow rules reach some of the filter's topics but not all, or a deny rule reaches
    /// some: granted, and each delivery is checked (those not allowed are dropped).
    Narrowed {
        allow: RuleRef,
        denied_by: Option<RuleRef>,
    },
    /// No allow rule reaches any topic the filter matches, or a deny rule covers it.
    Denied(Decision),
}

/// Why a request gets the answer it gets: for `interceptor policy explain`.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The request, in words.
    pub request: String,
    pub decision: Decision,
    /// Every access rule that matched, deciding one first.
    pub matched: Vec<(Effect, RuleRef)>,
    /// The immutable blocking rule covering the resource, when it matters for the operation.
    pub immutable: Option<RuleRef>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "request:  {}", self.request)?;
        let d = &self.decision;
        match (d.check, d.effect, &d.rule) {
            (Check::Allowed, _, Some(rule)) => writeln!(f, "decision: ALLOWED by {rule}")?,
            (Check::Violation, _, Some(rule)) => writeln!(
                f,
                "decision: POLICY_VIOLATION: allowed, but blocking rule {rule} makes the topic \
                 immutable"
            )?,
            (Check::Denied, Some(Effect::Approve), Some(rule)) => writeln!(
                f,
                "decision: DENIED by approve rule {rule} (approval is not available yet: \
                 approve refuses)"
            )?,
            (Check::Denied, _, Some(rule)) => writeln!(f, "decision: DENIED by {rule}")?,
            (_, _, None) => writeln!(f, "decision: DENIED: no rule matched (default deny)")?,
        }
        if self.matched.is_empty() {
            writeln!(f, "matching rules: none")?;
        } else {
            writeln!(f, "matching rules:")?;
            for (effect, rule) in &self.matched {
                writeln!(f, "  {effect:<7} {rule}")?;
            }
        }
        if let Some(block) = &self.immutable {
            writeln!(f, "immutable: {block}")?;
        }
        Ok(())
    }
}

/// A validated, compiled policy directory. Immutable; share it in an `Arc`.
#[derive(Debug)]
pub struct PolicySet {
    version: String,
    files: usize,
    rules: Vec<AccessRule>,
    blocks: Vec<BlockRule>,
    /// Every masking rule, in file order (files by name, rules as written).
    masks: Vec<Arc<MaskingRule>>,
    /// The produce rules of `masks`, in the same order.
    produce_masks: Vec<Arc<MaskingRule>>,
    /// The produce rules with a `reveal` list, in the same order.
    revealing_masks: Vec<Arc<MaskingRule>>,
    /// The fetch rules of `masks`, in the same order.
    fetch_masks: Vec<Arc<MaskingRule>>,
    /// Rule name → index in `masks`, for reveals by token scope.
    mask_names: HashMap<Arc<str>, usize>,
    /// For each (operation, resource kind): the rules that can match, deny rules first, then
    /// approve, then allow, so the first match decides.
    index: Vec<Vec<u32>>,
    warnings: Vec<PolicyError>,
}

fn slot(op: Operation, kind: ResourceKind) -> usize {
    op as usize * KINDS + kind as usize
}

/// The outcome of loading a directory: the set when it is valid, and everything found.
pub(crate) struct Report {
    pub set: Option<PolicySet>,
    pub errors: Vec<PolicyError>,
    pub warnings: Vec<PolicyError>,
    /// Entries of the directory that are not policy files, with the reason.
    pub ignored: Vec<(String, &'static str)>,
}

impl Report {
    pub fn into_result(self) -> Result<PolicySet, PolicyErrors> {
        match self.set {
            Some(set) if self.errors.is_empty() => Ok(set),
            _ => Err(PolicyErrors(self.errors)),
        }
    }
}

impl PolicySet {
    /// Loads every `*.yaml` and `*.yml` file directly in `dir` (hidden files and
    /// subdirectories are not read) and validates them together.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
        load_report(dir).into_result()
    }

    /// Validates and compiles files given as (path relative to the directory, content).
    pub fn from_files(files: &[(PathBuf, String)]) -> Result<PolicySet, PolicyErrors> {
        compile(files.to_vec(), Vec::new(), Vec::new()).into_result()
    }

    /// Like [`PolicySet::from_files`] without the whole-set checks (shadowing, duplicates,
    /// names), so that a test can compare decisions for any rule set.
    #[cfg(test)]
    pub(crate) fn from_files_unchecked(
        files: &[(PathBuf, String)],
    ) -> Result<PolicySet, PolicyErrors> {
        compile_with(files.to_vec(), Vec::new(), Vec::new(), false).into_result()
    }

    #[cfg(test)]
    pub(crate) fn access_rules(&self) -> &[AccessRule] {
        &self.rules
    }

    /// No rules: everything is denied.
    pub fn empty() -> PolicySet {
        PolicySet {
            version: "empty".into(),
            files: 0,
            rules: Vec::new(),
            blocks: Vec::new(),
            masks: Vec::new(),
            produce_masks: Vec::new(),
            revealing_masks: Vec::new(),
            fetch_masks: Vec::new(),
            mask_names: HashMap::new(),
            index: vec![Vec::new(); Operation::ALL.len() * KINDS],
            warnings: Vec::new(),
        }
    }

    /// `sha256:` and 16 hex digits of a hash over the files' relative paths and contents.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn file_count(&self) -> usize {
        self.files
    }

    /// Access, blocking and masking rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len() + self.blocks.len() + self.masks.len()
    }

    pub fn warnings(&self) -> &[PolicyError] {
        &self.warnings
    }

    /// The decision for one operation on one resource. Allocates nothing (a [`RuleRef`] clone
    /// is a reference count).
    pub fn decide(&self, subject: &Subject<'_>, op: Operation, resource: Resource<'_>) -> Decision {
        let candidates = self
            .index
            .get(slot(op, resource.kind))
            .map_or(&[][..], Vec::as_slice);
        for &i in candidates {
            let Some(rule) = self.rules.get(i as usize) else {
                continue;
            };
            if rule.resources.matches(resource) && rule.subjects.matches(subject) {
                return self.decided(rule, op, resource);
            }
        }
        Decision::DEFAULT_DENY
    }

    fn decided(&self, rule: &AccessRule, op: Operation, resource: Resource<'_>) -> Decision {
        let check = match rule.effect {
            Effect::Deny | Effect::Approve => Check::Denied,
            Effect::Allow => {
                if let Some(block) = self.immutable_block(op, resource) {
                    return Decision {
                        check: Check::Violation,
                        effect: Some(Effect::Allow),
                        rule: Some(block.at.clone()),
                    };
                }
                Check::Allowed
            }
        };
        Decision {
            check,
            effect: Some(rule.effect),
            rule: Some(rule.at.clone()),
        }
    }

    fn immutable_block(&self, op: Operation, resource: Resource<'_>) -> Option<&BlockRule> {
        let changes = matches!(
            op,
            Operation::Delete
                | Operation::DeleteRecords
                | Operation::Alter
                | Operation::AlterConfigs
        );
        if !changes || resource.kind != ResourceKind::Topic {
            return None;
        }
        self.blocks
            .iter()
            .find(|b| b.immutable && b.applies_to(resource.name))
    }

    /// The decision with its reasons: every matching rule, and the blocking rule that made it
    /// a violation.
    pub fn explain(
        &self,
        subject: &Subject<'_>,
        op: Operation,
        resource: Resource<'_>,
    ) -> Explanation {
        let decision = self.decide(subject, op, resource);
        let mut matched: Vec<(Effect, RuleRef)> = self
            .rules
            .iter()
            .filter(|r| r.matches(subject, op, resource))
            .map(|r| (r.effect, r.at.clone()))
            .collect();
        matched.sort_by_key(|(effect, _)| *effect);
        let groups = if subject.groups.is_empty() {
            "no groups".to_string()
        } else {
            format!("groups {}", subject.groups.join(", "))
        };
        let request = format!(
            "principal {} ({groups}; client id {}; from {}) wants to {op} {resource}",
            subject.principal,
            subject.client_id.unwrap_or("(none)"),
            subject.source
        );
        Explanation {
            request,
            immutable: self.immutable_block(op, resource).map(|b| b.at.clone()),
            decision,
            matched,
        }
    }

    /// The blocking rules that apply to `topic`, merged.
    pub fn topic_limits(&self, topic: &str) -> TopicLimits {
        let mut out = TopicLimits::default();
        for block in self.blocks.iter().filter(|b| b.applies_to(topic)) {
            if block.immutable && out.immutable.is_none() {
                out.immutable = Some(block.at.clone());
            }
            merge_min(&mut out.max_record_bytes, block.max_record_bytes, &block.at);
            merge_min(&mut out.max_batch_bytes, block.max_batch_bytes, &block.at);
            out.content.extend(block.content.iter().cloned());
        }
        out
    }
}

impl PolicySet {
    /// Some masking rule exists: without one, the proxy skips every masking step.
    pub fn masks_anything(&self) -> bool {
        !self.masks.is_empty()
    }

    /// Every masking rule, in file order.
    pub fn masking_rules(&self) -> &[Arc<MaskingRule>] {
        &self.masks
    }

    /// The produce rules covering `topic`, in file order (files by name, rules as written): the
    /// order they rewrite a produced record in. Allocates nothing when none applies.
    pub fn produce_masking(&self, topic: &str) -> Vec<Arc<MaskingRule>> {
        self.produce_masks
            .iter()
            .filter(|r| r.applies_to(topic))
            .cloned()
            .collect()
    }

    /// What a fetch of `topic` by `subject` needs: the produce rules whose tokens it gets back
    /// as the original values (they tokenize and their `reveal` matches), then the fetch rules
    /// that mask what it receives (their `subjects` match), each in file order. Allocates
    /// nothing when neither applies.
    pub fn fetch_masking(&self, topic: &str, subject: &Subject<'_>) -> FetchMasking {
        let mut out = FetchMasking::default();
        if !self.masks_anything() {
            return out;
        }
        for r in &self.revealing_masks {
            if r.applies_to(topic) && r.reveals_to(subject) {
                out.reveal.push(r.clone());
            }
        }
        for r in &self.fetch_masks {
            if r.applies_to(topic) && r.masks_fetch_of(subject) {
                out.mask.push(r.clone());
            }
        }
        out
    }

    /// The produce rules covering MQTT `topic`, in file order: what a PUBLISH to it (or a will
    /// message) goes through before the broker.
    pub fn publish_masking(&self, topic: &str) -> Vec<Arc<MaskingRule>> {
        self.produce_masks
            .iter()
            .filter(|r| r.applies_to_mqtt(topic))
            .cloned()
            .collect()
    }

    /// What a delivery of MQTT `topic` to `subject` needs: reveals, then fetch rules (as
    /// [`fetch_masking`](Self::fetch_masking) for Kafka).
    pub fn delivery_masking(&self, topic: &str, subject: &Subject<'_>) -> FetchMasking {
        let mut out = FetchMasking::default();
        if !self.masks_anything() {
            return out;
        }
        for r in &self.revealing_masks {
            if r.applies_to_mqtt(topic) && r.reveals_to(subject) {
                out.reveal.push(r.clone());
            }
        }
        for r in &self.fetch_masks {
            if r.applies_to_mqtt(topic) && r.masks_fetch_of(subject) {
                out.mask.push(r.clone());
            }
        }
        out
    }

    /// The blocking rules with `mqtt_topics` matching `topic`, merged: `max_record_bytes`
    /// limits a payload, content rules (`in: value`) read it.
    pub fn mqtt_limits(&self, topic: &str) -> TopicLimits {
        let mut out = TopicLimits::default();
        for block in self.blocks.iter().filter(|b| b.applies_to_mqtt(topic)) {
            merge_min(&mut out.max_record_bytes, block.max_record_bytes, &block.at);
            merge_min(&mut out.max_batch_bytes, block.max_batch_bytes, &block.at);
            out.content.extend(block.content.iter().cloned());
        }
        out
    }

    /// One filter of an MQTT SUBSCRIBE, by what it could receive (see [`SubscribeDecision`]).
    pub fn decide_subscribe(
        &self,
        subject: &Subject<'_>,
        filter: &TopicFilter,
    ) -> SubscribeDecision {
        let candidates = self
            .index
            .get(slot(Operation::Subscribe, ResourceKind::MqttTopic))
            .map_or(&[][..], Vec::as_slice);
        let mut denied_by: Option<&AccessRule> = None;
        let mut covering_allow: Option<&AccessRule> = None;
        let mut overlapping_allow: Option<&AccessRule> = None;
        for &i in candidates {
            let Some(rule) = self.rules.get(i as usize) else {
                continue;
            };
            if !rule.subjects.matches(subject) {
                continue;
            }
            let mut covers = false;
            let mut overlaps = false;
            for f in &rule.resources.mqtt_topics {
                covers |= f.covers(filter);
                overlaps |= f.overlaps(filter);
            }
            if !overlaps {
                continue;
            }
            match rule.effect {
                Effect::Deny | Effect::Approve => {
                    if covers {
                        return SubscribeDecision::Denied(Decision {
                            check: Check::Denied,
                            effect: Some(rule.effect),
                            rule: Some(rule.at.clone()),
                        });
                    }
                    denied_by.get_or_insert(rule);
                }
                Effect::Allow => {
                    if covers {
                        covering_allow.get_or_insert(rule);
                    }
                    overlapping_allow.get_or_insert(rule);
                }
            }
        }
        match (covering_allow, overlapping_allow, denied_by) {
            (Some(allow), _, None) => SubscribeDecision::Granted {
                rule: allow.at.clone(),
            },
            (_, Some(allow), deny) => SubscribeDecision::Narrowed {
                allow: allow.at.clone(),
                denied_by: deny.map(|d| d.at.clone()),
            },
            (_, None, deny) => SubscribeDecision::Denied(Decision {
                check: Check::Denied,
                effect: deny.map(|d| d.effect),
                rule: deny.map(|d| d.at.clone()),
            }),
        }
    }

    /// Whether any fetch by `subject` can need rewriting (some reveal or fetch rule names it):
    /// when not, its Fetch responses stream through without being read whole.
    pub fn fetch_masking_possible(&self, subject: &Subject<'_>) -> bool {
        self.revealing_masks.iter().any(|r| r.reveals_to(subject))
            || self.fetch_masks.iter().any(|r| r.masks_fetch_of(subject))
    }

    /// For `interceptor detokenize`: the produce rule named `rule` (the part of a token's
    /// scope `rule/selector` before the `/`), when `subject` is in its `reveal` list.
    pub fn may_reveal(&self, rule: &str, subject: &Subject<'_>) -> Result<RuleRef, RevealRefusal> {
        let Some(r) = self.mask_names.get(rule).and_then(|&i| self.masks.get(i)) else {
            return Err(RevealRefusal::UnknownRule(rule.to_string()));
        };
        if r.stage != MaskStage::Produce || !r.tokenizes() {
            return Err(RevealRefusal::NoTokens(r.at.clone()));
        }
        if !r.reveals_to(subject) {
            return Err(RevealRefusal::NotRevealed(r.at.clone()));
        }
        Ok(r.at.clone())
    }
}

fn merge_min(slot: &mut Option<(u64, RuleRef)>, limit: Option<u64>, at: &RuleRef) {
    if let Some(limit) = limit {
        if slot.as_ref().is_none_or(|(current, _)| limit < *current) {
            *slot = Some((limit, at.clone()));
        }
    }
}

/// Reads the directory; every unreadable or oversized file is an error, not a stop.
pub(crate) fn load_report(dir: &Path) -> Report {
    let mut errors = Vec::new();
    let mut ignored = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(PolicyError::new(
                ".",
                1,
                1,
                format!("cannot read the policy directory {}: {e}", dir.display()),
            ));
            return compile(Vec::new(), errors, ignored);
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push(PolicyError::new(
                    ".",
                    1,
                    1,
                    format!("cannot list {}: {e}", dir.display()),
                ));
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            ignored.push((name, "hidden"));
            continue;
        }
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            ignored.push((name, "not *.yaml or *.yml"));
            continue;
        }
        // Follows symbolic links (configuration management and Kubernetes use them).
        match fs::metadata(entry.path()) {
            Ok(m) if m.is_dir() => {
                ignored.push((name, "a directory (subdirectories are not read)"));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                errors.push(PolicyError::new(&name, 1, 1, format!("cannot read: {e}")));
                continue;
            }
        }
        if files.len() >= MAX_FILES {
            errors.push(PolicyError::new(
                &name,
                1,
                1,
                format!("more than {MAX_FILES} policy files in the directory"),
            ));
            break;
        }
        match read_bounded(&entry.path()) {
            Ok(text) => files.push((PathBuf::from(&name), text)),
            Err(message) => errors.push(PolicyError::new(&name, 1, 1, message)),
        }
    }
    ignored.sort();
    compile(files, errors, ignored)
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// `sha256:` and the first 16 hex digits of a hash over (path, content) pairs in path order.
/// Lengths are hashed too, so no two different sets hash the same input.
fn version_of(files: &[(PathBuf, String)]) -> String {
    let mut h = Sha256::new();
    for (path, content) in files {
        let path = path.to_string_lossy();
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((content.len() as u64).to_le_bytes());
        h.update(content.as_bytes());
    }
    let digest = h.finalize();
    let mut out = String::from("sha256:");
    for b in digest.iter().take(8) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub(crate) fn compile(
    files: Vec<(PathBuf, String)>,
    errors: Vec<PolicyError>,
    ignored: Vec<(String, &'static str)>,
) -> Report {
    compile_with(files, errors, ignored, true)
}

fn compile_with(
    mut files: Vec<(PathBuf, String)>,
    mut errors: Vec<PolicyError>,
    ignored: Vec<(String, &'static str)>,
    whole_set_checks: bool,
) -> Report {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut warnings = Vec::new();
    let mut budget = Budget::new(MAX_RULES, MAX_MASKING_RULES);
    let mut rules = Vec::new();
    let mut blocks = Vec::new();
    let mut masks = Vec::new();
    for (path, src) in &files {
        let file: Arc<str> = path.to_string_lossy().into();
        if src.len() > MAX_FILE_BYTES {
            errors.push(PolicyError::new(
                path,
                1,
                1,
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
            continue;
        }
        let mut ctx = Ctx {
            file,
            errors: &mut errors,
            warnings: &mut warnings,
            budget: &mut budget,
        };
        let parsed = schema::parse_file(&mut ctx, src);
        rules.extend(parsed.access);
        blocks.extend(parsed.blocks);
        masks.extend(parsed.masks);
    }
    if whole_set_checks {
        lint::check_set(&rules, &blocks, &masks, &mut errors);
    }
    if rules.is_empty() {
        warnings.push(PolicyError::new(
            ".",
            1,
            1,
            "no access rules in the directory: every request is denied",
        ));
    }
    let by_place = |e: &PolicyError| (e.file.clone(), e.line, e.column);
    errors.sort_by_key(by_place);
    warnings.sort_by_key(by_place);
    if !errors.is_empty() {
        return Report {
            set: None,
            errors,
            warnings,
            ignored,
        };
    }
    let mut index = vec![Vec::new(); Operation::ALL.len() * KINDS];
    let mut order: Vec<usize> = (0..rules.len()).collect();
    // Stable: within one effect, file order then line order decides which rule is reported.
    order.sort_by_key(|&i| rules.get(i).map(|r| r.effect));
    for i in order {
        let Some(rule) = rules.get(i) else { continue };
        for op in rule.operations.iter() {
            for kind in op.applies_to() {
                if rule.resources.has_kind(*kind) {
                    if let Some(list) = index.get_mut(slot(op, *kind)) {
                        list.push(i as u32);
                    }
                }
            }
        }
    }
    let masks: Vec<Arc<MaskingRule>> = masks.into_iter().map(Arc::new).collect();
    let staged = |stage: MaskStage| -> Vec<Arc<MaskingRule>> {
        masks.iter().filter(|r| r.stage == stage).cloned().collect()
    };
    let mut mask_names = HashMap::with_capacity(masks.len());
    for (i, r) in masks.iter().enumerate() {
        // Names are unique once the whole-set checks passed; without them the first wins.
        mask_names.entry(r.at.name.clone()).or_insert(i);
    }
    let set = PolicySet {
        version: version_of(&files),
        files: files.len(),
        rules,
        blocks,
        produce_masks: staged(MaskStage::Produce),
        revealing_masks: masks.iter().filter(|r| r.has_reveal()).cloned().collect(),
        fetch_masks: staged(MaskStage::Fetch),
        masks,
        mask_names,
        index,
        warnings: warnings.clone(),
    };
    Report {
        set: Some(set),
        errors,
        warnings,
        ignored,
    }
}
