//! The `masking:` section of a policy file: from a YAML tree to a [`mask::RuleSpec`] the engine
//! compiles, with an error (file, line, column) for everything that is not exactly right,
//! including what the engine refuses (mapped back to the field or detector entry).

use std::{collections::HashMap, sync::Arc};

use crate::mask::{
    self, Action, CharClass, CompileError, Detector, DetectorSpec, FieldSpec, OnMalformed, Parts,
    Payload, RuleSpec,
};

use super::{
    masking::{MaskStage, MaskingRule},
    model::RuleRef,
    schema::{
        boolean, checked_name, edit_distance, fields, list, places, rule_name, string,
        subjects_named, Ctx, Fields,
    },
    yaml::{Mark, Node, Value},
};

/// Most `fields` entries in one rule: each is a path walked in every masked record.
pub const MAX_MASK_FIELDS: usize = 256;
/// Most `detectors` entries in one rule: each scans every masked string.
pub const MAX_MASK_DETECTORS: usize = 64;
/// Largest `keep_first` / `keep_last`: more would keep whole values, which is no mask.
const MAX_KEEP: u64 = 64;
const MAX_REPLACEMENT_CHARS: usize = 256;
const MAX_PREFIX_CHARS: usize = 64;
const MAX_CUSTOM_LENGTH: u64 = 256;

const RULE_FIELDS: &[&str] = &[
    "name",
    "description",
    "topics",
    "mqtt_topics",
    "on",
    "subjects",
    "payload",
    "in",
    "on_malformed",
    "fields",
    "detectors",
    "reveal",
];
const FIELD_ENTRY_FIELDS: &[&str] = &[
    "path",
    "action",
    "format_preserving",
    "keep_first",
    "keep_last",
    "mask_char",
    "replacement",
];
const DETECTOR_ENTRY_FIELDS: &[&str] = &[
    "detector",
    "action",
    "format_preserving",
    "keep_first",
    "keep_last",
    "mask_char",
    "replacement",
];
const CUSTOM_DETECTOR_FIELDS: &[&str] = &["name", "prefix", "chars", "length"];
const ACTIONS: &[&str] = &["redact", "partial", "hash", "tokenize"];
/// Each action's options, so that an option under another action is an error, not ignored.
const ACTION_OPTIONS: &[(&str, &str)] = &[
    ("format_preserving", "tokenize"),
    ("keep_first", "partial"),
    ("keep_last", "partial"),
    ("mask_char", "partial"),
    ("replacement", "redact"),
];
const DEFAULT_REPLACEMENT: &str = "[REDACTED]";

pub(super) fn masking_rule(ctx: &mut Ctx<'_>, node: &Node) -> Option<MaskingRule> {
    let f = fields(ctx, node, "a masking rule", RULE_FIELDS)?;
    let mut ok = true;
    let name = f
        .require(ctx, "name", "masking rule")
        .and_then(|n| rule_name(ctx, n));
    if let Some(d) = f.get("description") {
        string(ctx, d, "description");
    }
    let (topics, mqtt_topics) = super::schema::topic_lists(ctx, &f, "masking rule");
    let stage = match f.get("on") {
        None => Some(MaskStage::Produce),
        Some(n) => string(ctx, n, "on").and_then(|t| match t {
            "produce" => Some(MaskStage::Produce),
            "fetch" => Some(MaskStage::Fetch),
            other => {
                ctx.error(
                    n.mark,
                    format!("unknown stage `{other}` in `on` (one of: produce, fetch)"),
                );
                None
            }
        }),
    };
    let subjects = match (stage, f.get_entry("subjects")) {
        (Some(MaskStage::Fetch), None) => {
            ctx.error(
                f.mark,
                "fetch masking rule has no `subjects`: name the consumers whose fetches it masks",
            );
            None
        }
        (Some(MaskStage::Produce), Some((key, n))) => {
            subjects_named(ctx, n, "subjects");
            ctx.error(
                key.mark,
                "`subjects` is not allowed on a produce masking rule: it rewrites records \
                 before the broker stores them, for every producer (to mask what some \
                 consumers receive, use `on: fetch`)",
            );
            ok = false;
            None
        }
        (_, Some((_, n))) => subjects_named(ctx, n, "subjects"),
        (_, None) => None,
    };
    let fields_entry = f.get_entry("fields");
    let payload = match f.get("payload") {
        // A rule with field paths reads JSON; one with detectors only reads any bytes.
        None if fields_entry.is_some() => Some(Payload::Json),
        None => Some(Payload::Any),
        Some(n) => string(ctx, n, "payload").and_then(|t| match t {
            "json" => Some(Payload::Json),
            "any" => Some(Payload::Any),
            other => {
                ctx.error(
                    n.mark,
                    format!("unknown payload `{other}` (one of: json, any)"),
                );
                None
            }
        }),
    };
    let parts = match f.get("in") {
        None => Some(Parts {
            key: false,
            value: true,
            headers: false,
        }),
        Some(n) => places(ctx, n).map(|(key, value, headers)| Parts {
            key,
            value,
            headers,
        }),
    };
    let on_malformed = match f.get_entry("on_malformed") {
        None => Some(OnMalformed::Reject),
        Some((key, n)) => {
            let parsed = string(ctx, n, "on_malformed").and_then(|t| match t {
                "reject" => Some(OnMalformed::Reject),
                "detect" => Some(OnMalformed::Detect),
                other => {
                    ctx.error(
                        n.mark,
                        format!("unknown `on_malformed` value `{other}` (one of: reject, detect)"),
                    );
                    None
                }
            });
            if payload == Some(Payload::Any) {
                ctx.error(
                    key.mark,
                    "`on_malformed` applies to `payload: json` only (this rule reads any bytes: \
                     it has no `fields`, or says `payload: any`)",
                );
                ok = false;
            }
            parsed
        }
    };
    let mut field_marks = Vec::new();
    let field_specs = match fields_entry {
        None => Some(Vec::new()),
        Some((key, n)) => {
            if payload == Some(Payload::Any) {
                ctx.error(
                    key.mark,
                    "`fields` selects JSON fields and needs `payload: json` (with `payload: \
                     any` the rule reads bytes: use `detectors`)",
                );
                ok = false;
            }
            field_entries(ctx, n, stage, &mut field_marks)
        }
    };
    let mut detector_marks = Vec::new();
    let detector_specs = match f.get("detectors") {
        None => Some(Vec::new()),
        Some(n) => detector_entries(ctx, n, stage, &mut detector_marks),
    };
    if fields_entry.is_none() && f.get("detectors").is_none() {
        ctx.error(
            f.mark,
            "masking rule selects nothing: list `fields` (JSON paths) or `detectors`",
        );
        ok = false;
    }
    let tokenizes = match (&field_specs, &detector_specs) {
        (Some(fs), Some(ds)) => Some(
            fs.iter()
                .map(|f| &f.action)
                .chain(ds.iter().map(|d| &d.action))
                .any(is_tokenize),
        ),
        _ => None,
    };
    let reveal = match f.get_entry("reveal") {
        None => None,
        Some((key, n)) => {
            let reveal = subjects_named(ctx, n, "reveal");
            if stage == Some(MaskStage::Fetch) {
                ctx.error(
                    key.mark,
                    "`reveal` applies to produce rules only: a fetch rule makes no tokens, and \
                     the consumers it does not name already get the original values",
                );
                ok = false;
            } else if tokenizes == Some(false) {
                ctx.error(
                    key.mark,
                    "`reveal` needs a `tokenize` action in this rule: redact, partial and hash \
                     cannot be undone",
                );
                ok = false;
            }
            if reveal.is_none() {
                ok = false;
            }
            reveal
        }
    };
    let (Some(name), Some(topics), Some(stage), Some(payload), Some(parts), Some(on_malformed)) =
        (name, topics, stage, payload, parts, on_malformed)
    else {
        return None;
    };
    let mqtt_topics = mqtt_topics?;
    let (Some(fields), Some(detectors), Some(tokenizes), true) =
        (field_specs, detector_specs, tokenizes, ok)
    else {
        return None;
    };
    if stage == MaskStage::Fetch && subjects.is_none() {
        return None;
    }
    let spec = RuleSpec {
        name: name.clone(),
        payload,
        parts,
        on_malformed,
        fields,
        detectors,
    };
    let rule = match mask::Rule::compile(spec) {
        Ok(rule) => rule,
        Err(e) => {
            let at = compile_error_mark(&e, f.mark, &field_marks, &detector_marks);
            ctx.error(at, e.message);
            return None;
        }
    };
    Some(MaskingRule {
        at: RuleRef {
            name,
            file: ctx.file.clone(),
            line: node.mark.line,
        },
        rule: Arc::new(rule),
        stage,
        column: node.mark.column,
        topics,
        mqtt_topics,
        subjects,
        reveal,
        tokenizes,
    })
}

fn is_tokenize(a: &Action) -> bool {
    matches!(a, Action::Tokenize { .. })
}

/// Where an error of the engine points: the field or detector entry it names, else the rule.
pub(super) fn compile_error_mark(
    e: &CompileError,
    rule: Mark,
    fields: &[Mark],
    detectors: &[Mark],
) -> Mark {
    let field = e.field.and_then(|i| fields.get(i));
    let detector = e.detector.and_then(|i| detectors.get(i));
    field.or(detector).copied().unwrap_or(rule)
}

/// A list of at most `max` entries.
fn bounded_list<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    field: &str,
    max: usize,
) -> Option<&'n [Node]> {
    let items = list(ctx, node, field)?;
    if items.len() > max {
        ctx.error(
            node.mark,
            format!("`{field}` has more than {max} entries (the most one masking rule may list)"),
        );
        return None;
    }
    Some(items)
}

/// The `fields` entries; `marks` gets each entry's position, index for index with the specs,
/// so that an engine error about field N points at entry N.
fn field_entries(
    ctx: &mut Ctx<'_>,
    node: &Node,
    stage: Option<MaskStage>,
    marks: &mut Vec<Mark>,
) -> Option<Vec<FieldSpec>> {
    let items = bounded_list(ctx, node, "fields", MAX_MASK_FIELDS)?;
    let mut out = Vec::with_capacity(items.len());
    // Token scopes are `rule/path`: a path listed twice would give two actions one scope.
    let mut seen: HashMap<&str, Mark> = HashMap::new();
    let mut ok = true;
    for item in items {
        let Some(f) = fields(ctx, item, "a `fields` entry", FIELD_ENTRY_FIELDS) else {
            ok = false;
            continue;
        };
        let path = f
            .require(ctx, "path", "`fields` entry")
            .and_then(|n| Some((n, string(ctx, n, "path")?)))
            .and_then(|(n, p)| {
                if !p.starts_with('$') {
                    ctx.error(
                        n.mark,
                        format!("field path `{p}` must start with `$` (the whole value), like `$.card.number`"),
                    );
                    return None;
                }
                if let Some(first) = seen.get(p) {
                    ctx.error(
                        n.mark,
                        format!(
                            "field path `{p}` is already listed in this rule (line {})",
                            first.line
                        ),
                    );
                    return None;
                }
                seen.insert(p, n.mark);
                Some(p)
            });
        let action = action(ctx, &f, "`fields` entry", stage);
        match (path, action) {
            (Some(path), Some(action)) => {
                out.push(FieldSpec {
                    path: path.to_string(),
                    action,
                });
                marks.push(item.mark);
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn detector_entries(
    ctx: &mut Ctx<'_>,
    node: &Node,
    stage: Option<MaskStage>,
    marks: &mut Vec<Mark>,
) -> Option<Vec<DetectorSpec>> {
    let items = bounded_list(ctx, node, "detectors", MAX_MASK_DETECTORS)?;
    let mut out = Vec::with_capacity(items.len());
    // Token scopes are `rule/detector`, and audit events count by detector name.
    let mut seen: HashMap<String, Mark> = HashMap::new();
    let mut ok = true;
    for item in items {
        let Some(f) = fields(ctx, item, "a `detectors` entry", DETECTOR_ENTRY_FIELDS) else {
            ok = false;
            continue;
        };
        let detector = f
            .require(ctx, "detector", "`detectors` entry")
            .and_then(|n| Some((n, detector(ctx, n)?)))
            .and_then(|(n, d)| {
                if let Some(first) = seen.get(d.name()) {
                    ctx.error(
                        n.mark,
                        format!(
                            "detector `{}` is already listed in this rule (line {})",
                            d.name(),
                            first.line
                        ),
                    );
                    return None;
                }
                seen.insert(d.name().to_string(), n.mark);
                Some(d)
            });
        let action = action(ctx, &f, "`detectors` entry", stage);
        match (detector, action) {
            (Some(detector), Some(action)) => {
                out.push(DetectorSpec { detector, action });
                marks.push(item.mark);
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn detector(ctx: &mut Ctx<'_>, node: &Node) -> Option<Detector> {
    if let Value::Map(_) = node.value {
        return custom_detector(ctx, node);
    }
    let name = string(ctx, node, "detector")?;
    if let Some(d) = Detector::builtin(name) {
        return Some(d);
    }
    let builtins: Vec<String> = Detector::builtins()
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    let hint = builtins
        .iter()
        .find(|b| edit_distance(b, name) <= 2)
        .map(|b| format!("did you mean `{b}`? "))
        .unwrap_or_default();
    ctx.error(
        node.mark,
        format!(
            "unknown detector `{name}` ({hint}built-in: {}; or a custom one: {{name, prefix, \
             chars, length}})",
            builtins.join(", ")
        ),
    );
    None
}

fn custom_detector(ctx: &mut Ctx<'_>, node: &Node) -> Option<Detector> {
    let f = fields(ctx, node, "a custom detector", CUSTOM_DETECTOR_FIELDS)?;
    let name = f
        .require(ctx, "name", "custom detector")
        .and_then(|n| Some((n, checked_name(ctx, n, "detector name")?)))
        .and_then(|(n, name)| {
            if Detector::builtin(&name).is_some() {
                ctx.error(
                    n.mark,
                    format!(
                        "`{name}` is the name of a built-in detector: name the custom one \
                         differently (audit events and token scopes name detectors)"
                    ),
                );
                return None;
            }
            Some(name)
        });
    let prefix = f
        .require(ctx, "prefix", "custom detector")
        .and_then(|n| Some((n, string(ctx, n, "prefix")?)))
        .and_then(|(n, p)| {
            let problem = if p.is_empty() {
                Some("is empty: a custom detector finds values by their literal prefix".into())
            } else if p.chars().count() > MAX_PREFIX_CHARS {
                Some(format!("is longer than {MAX_PREFIX_CHARS} characters"))
            } else if p.chars().any(char::is_control) {
                Some("contains a control character".to_string())
            } else {
                None
            };
            match problem {
                Some(problem) => {
                    ctx.error(n.mark, format!("`prefix` {problem}"));
                    None
                }
                None => Some(p.to_string()),
            }
        });
    let chars = f
        .require(ctx, "chars", "custom detector")
        .and_then(|n| Some((n, string(ctx, n, "chars")?)))
        .and_then(|(n, c)| match c {
            "digits" => Some(CharClass::Digits),
            "upper_alnum" => Some(CharClass::UpperAlnum),
            "alnum" => Some(CharClass::Alnum),
            "hex" => Some(CharClass::Hex),
            other => {
                ctx.error(
                    n.mark,
                    format!(
                        "unknown character class `{other}` (one of: digits, upper_alnum, \
                         alnum, hex)"
                    ),
                );
                None
            }
        });
    let length = f
        .require(ctx, "length", "custom detector")
        .and_then(|n| number(ctx, n, "length", 1, MAX_CUSTOM_LENGTH));
    Some(Detector::Custom {
        name: name?,
        prefix: prefix?,
        chars: chars?,
        length: length? as usize,
    })
}

/// The entry's action with its options; an option of another action is an error at the
/// option, so `keep_last` under `redact` is never silently ignored.
fn action(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    what: &str,
    stage: Option<MaskStage>,
) -> Option<Action> {
    let node = f.require(ctx, "action", what)?;
    let name = string(ctx, node, "action")?;
    if !ACTIONS.contains(&name) {
        let hint = ACTIONS
            .iter()
            .find(|a| edit_distance(a, name) <= 2)
            .map(|a| format!("did you mean `{a}`? "))
            .unwrap_or_default();
        ctx.error(
            node.mark,
            format!(
                "unknown action `{name}` ({hint}one of: {})",
                ACTIONS.join(", ")
            ),
        );
        return None;
    }
    let mut ok = true;
    for (option, owner) in ACTION_OPTIONS {
        if let Some((key, _)) = f.get_entry(option) {
            if *owner != name {
                ctx.error(
                    key.mark,
                    format!("`{option}` is an option of `action: {owner}`, not of `{name}`"),
                );
                ok = false;
            }
        }
    }
    if name == "tokenize" && stage == Some(MaskStage::Fetch) {
        ctx.error(
            node.mark,
            "`tokenize` is not available on fetch rules: tokens are made on produce, where the \
             vault stores them before the broker gets the record (fetch rules use redact, \
             partial or hash)",
        );
        ok = false;
    }
    let action = match name {
        "redact" => {
            let replacement = match f.get("replacement") {
                None => Some(DEFAULT_REPLACEMENT.to_string()),
                Some(n) => replacement(ctx, n),
            };
            replacement.map(|replacement| Action::Redact { replacement })
        }
        "partial" => {
            let count = |ctx: &mut Ctx<'_>, field: &str, default: u64| match f.get(field) {
                None => Some(default),
                Some(n) => number(ctx, n, field, 0, MAX_KEEP),
            };
            let keep_first = count(ctx, "keep_first", 0);
            let keep_last = count(ctx, "keep_last", 4);
            let mask_char = match f.get("mask_char") {
                None => Some('*'),
                Some(n) => mask_char(ctx, n),
            };
            match (keep_first, keep_last, mask_char) {
                (Some(first), Some(last), Some(mask_char)) => Some(Action::Partial {
                    keep_first: first as usize,
                    keep_last: last as usize,
                    mask_char,
                }),
                _ => None,
            }
        }
        "hash" => Some(Action::Hash),
        _ => match f.get("format_preserving") {
            None => Some(false),
            Some(n) => boolean(ctx, n, "format_preserving"),
        }
        .map(|format_preserving| Action::Tokenize { format_preserving }),
    };
    if !ok {
        return None;
    }
    action
}

fn replacement(ctx: &mut Ctx<'_>, node: &Node) -> Option<String> {
    let text = string(ctx, node, "replacement")?;
    let problem = if text.chars().count() > MAX_REPLACEMENT_CHARS {
        Some(format!("is longer than {MAX_REPLACEMENT_CHARS} characters"))
    } else if text.chars().any(char::is_control) {
        Some("contains a control character".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => {
            ctx.error(node.mark, format!("`replacement` {p}"));
            None
        }
        None => Some(text.to_string()),
    }
}

fn mask_char(ctx: &mut Ctx<'_>, node: &Node) -> Option<char> {
    let text = string(ctx, node, "mask_char")?;
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_control() => Some(c),
        _ => {
            ctx.error(
                node.mark,
                format!("`mask_char` must be one character (like \"*\" or \"#\"), found `{text}`"),
            );
            None
        }
    }
}

/// A whole number in `min..=max`, written plainly (`4`, not `"4"` or `4.0`).
fn number(ctx: &mut Ctx<'_>, node: &Node, field: &str, min: u64, max: u64) -> Option<u64> {
    let parsed = match &node.value {
        Value::Scalar { text, plain: true } if !node.is_null() => text.parse::<u64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            ctx.error(
                node.mark,
                format!("`{field}` must be a whole number from {min} to {max}"),
            );
            None
        }
    }
}
