//! A compiled rule: mask, find tokens, reveal. JSON payloads go through the streaming walker;
//! everything else (and malformed JSON under `on_malformed: detect`) is text for detectors.

use std::collections::HashMap;

use memchr::memmem;

use super::action::apply;
use super::detect::{Detectors, Found};
use super::edit::Edit;
use super::json::scan::MAX_PATHS;
use super::json::text::{escape_into, is_number, quoted, unescape};
use super::json::{walk, Leaf, Paths, Visit};
use super::path;
use super::spec::{Action, Detector, DetectorSpec, OnMalformed, Payload, RuleSpec};
use super::token::{is_token, TOKEN_LEN, TOKEN_PREFIX};
use super::{CompileError, MaskError, Part, Stats, Tokens};

/// What `on_malformed: detect` does when the rule names no detectors: every built-in one,
/// redacting with this text.
pub const FALLBACK_REPLACEMENT: &str = "[REDACTED]";

/// Selector of a stat entry (and of a token's scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sel {
    Field(u16),
    Det(usize),
    Fallback(usize),
    /// `tok_…` tokens met in text on reveal, whichever detector made them.
    TextToken,
}

/// A detector list with its actions and token scopes.
#[derive(Debug)]
struct DetSet {
    dets: Detectors,
    specs: Vec<DetectorSpec>,
    scopes: Vec<String>,
}

impl DetSet {
    fn new(rule: &str, specs: Vec<DetectorSpec>) -> Result<DetSet, CompileError> {
        let list: Vec<Detector> = specs.iter().map(|d| d.detector.clone()).collect();
        let dets = Detectors::new(&list).map_err(|(i, message)| CompileError {
            field: None,
            detector: Some(i),
            message,
        })?;
        let scopes = list
            .iter()
            .map(|d| format!("{rule}/{}", d.name()))
            .collect();
        Ok(DetSet {
            dets,
            specs,
            scopes,
        })
    }
}

#[derive(Debug)]
pub(super) struct Compiled {
    paths: Paths,
    field_scopes: Vec<String>,
    /// Paths handed over whole when they select an object/array (redact, hash).
    whole: u64,
    dets: DetSet,
    /// All built-in detectors, for `on_malformed: detect` when the rule names none.
    fallback: Option<DetSet>,
    /// The detectors whose format-preserving tokens are found again by detection on reveal;
    /// `.1` maps their index here to the index in the spec.
    fpe_dets: Option<(Detectors, Vec<usize>)>,
    /// Some detector makes `tok_` tokens.
    text_tokens: bool,
}

pub(super) fn compile(spec: &RuleSpec) -> Result<Compiled, CompileError> {
    let field_err = |i: usize, message: String| CompileError {
        field: Some(i),
        detector: None,
        message,
    };
    if spec.payload == Payload::Any && !spec.fields.is_empty() {
        return Err(field_err(0, "field paths need `payload: json`".into()));
    }
    if spec.fields.len() > MAX_PATHS {
        return Err(field_err(
            MAX_PATHS,
            format!("at most {MAX_PATHS} field paths per rule"),
        ));
    }
    let mut segs = Vec::new();
    let mut whole = 0u64;
    for (i, f) in spec.fields.iter().enumerate() {
        segs.push(path::parse(&f.path).map_err(|m| field_err(i, m))?);
        if matches!(f.action, Action::Redact { .. } | Action::Hash) {
            whole |= 1 << i;
        }
    }
    let name = &spec.name;
    let dets = DetSet::new(name, spec.detectors.clone())?;
    let fallback = if spec.payload == Payload::Json
        && spec.on_malformed == OnMalformed::Detect
        && spec.detectors.is_empty()
    {
        let specs = Detector::builtins()
            .into_iter()
            .map(|detector| DetectorSpec {
                detector,
                action: Action::Redact {
                    replacement: FALLBACK_REPLACEMENT.into(),
                },
            })
            .collect();
        Some(DetSet::new(name, specs)?)
    } else {
        None
    };
    let mut fpe = (Vec::new(), Vec::new());
    let mut text_tokens = false;
    for (i, d) in spec.detectors.iter().enumerate() {
        match d.action {
            Action::Tokenize {
                format_preserving: true,
            } => {
                fpe.0.push(d.detector.clone());
                fpe.1.push(i);
            }
            Action::Tokenize {
                format_preserving: false,
            } => text_tokens = true,
            _ => {}
        }
    }
    let fpe_dets = if fpe.0.is_empty() {
        None
    } else {
        let d = Detectors::new(&fpe.0).map_err(|(i, message)| CompileError {
            field: None,
            detector: Some(fpe.1[i]),
            message,
        })?;
        Some((d, fpe.1))
    };
    Ok(Compiled {
        paths: Paths::new(segs),
        field_scopes: spec
            .fields
            .iter()
            .map(|f| format!("{name}/{}", f.path))
            .collect(),
        whole,
        dets,
        fallback,
        fpe_dets,
        text_tokens,
    })
}

/// Counts per selector for one call, merged into the caller's `Stats` only on success.
#[derive(Default)]
struct Counts(Vec<(Sel, &'static str, u64)>);

impl Counts {
    fn add(&mut self, sel: Sel, action: &'static str) {
        match self.0.iter_mut().find(|c| c.0 == sel && c.1 == action) {
            Some(c) => c.2 += 1,
            None => self.0.push((sel, action, 1)),
        }
    }
}

impl super::Rule {
    fn counts_into(&self, counts: Counts, stats: &mut Stats) {
        let c = &self.c;
        for (sel, action, n) in counts.0 {
            let selector = match sel {
                Sel::Field(f) => self.spec.fields[usize::from(f)].path.as_str(),
                Sel::Det(d) => c.dets.specs[d].detector.name(),
                Sel::Fallback(d) => c
                    .fallback
                    .as_ref()
                    .map_or("", |f| f.specs[d].detector.name()),
                Sel::TextToken => "tokens",
            };
            stats.add(&self.spec.name, selector, action, n);
        }
    }

    fn reads(&self, part: Part) -> bool {
        let p = &self.spec.parts;
        match part {
            Part::Key => p.key,
            Part::Value => p.value,
            Part::Header => p.headers,
        }
    }

    pub(super) fn mask_impl(
        &self,
        part: Part,
        input: &[u8],
        tokens: &mut dyn Tokens,
        stats: &mut Stats,
    ) -> Result<Option<Vec<u8>>, MaskError> {
        // Nothing to hide in nothing (and an empty key is not "malformed JSON" worth refusing).
        if !self.reads(part) || input.is_empty() {
            return Ok(None);
        }
        let mut counts = Counts::default();
        let out = match self.spec.payload {
            Payload::Any => mask_text(input, &self.c.dets, Sel::Det, tokens, &mut counts),
            Payload::Json => {
                let mark = tokens.mark();
                let mut m = Masker {
                    c: &self.c,
                    fields: &self.spec.fields,
                    tokens,
                    edit: Edit::new(input),
                    counts: Counts::default(),
                    strings: strings_need_detection(&self.c.dets.dets, input),
                    found: Vec::new(),
                    scratch: Vec::new(),
                };
                match walk(input, &self.c.paths, &mut m) {
                    Ok(()) => {
                        counts = m.counts;
                        m.edit.finish()
                    }
                    Err(detail) => {
                        let tokens = m.tokens;
                        tokens.rollback(mark);
                        match (&self.spec.on_malformed, &self.c.fallback) {
                            (OnMalformed::Reject, _) => {
                                return Err(MaskError::Malformed {
                                    rule: self.spec.name.to_string(),
                                    part,
                                    detail,
                                })
                            }
                            (OnMalformed::Detect, Some(fb)) => {
                                mask_text(input, fb, Sel::Fallback, tokens, &mut counts)
                            }
                            (OnMalformed::Detect, None) => {
                                mask_text(input, &self.c.dets, Sel::Det, tokens, &mut counts)
                            }
                        }
                    }
                }
            }
        };
        self.counts_into(counts, stats);
        Ok(out)
    }

    /// Tokens in text (JSON string content or raw bytes): `tok_…` where a detector makes
    /// them, and the matches of format-preserving tokenizing detectors. Sorted, disjoint.
    fn text_tokens(&self, hay: &[u8], out: &mut Vec<(usize, usize, Sel)>) {
        let first = out.len();
        if self.c.text_tokens {
            for s in memmem::find_iter(hay, TOKEN_PREFIX.as_bytes()) {
                let e = s + TOKEN_LEN;
                // A token ends after its fixed length; what follows only has to end the
                // word (a detector's match can end right before an `_`).
                let bounded = (s == 0 || !is_word(hay[s - 1]))
                    && (e >= hay.len() || !hay[e].is_ascii_alphanumeric());
                if e <= hay.len() && bounded && is_token(&hay[s..e]) {
                    out.push((s, e, Sel::TextToken));
                }
            }
        }
        if let Some((d, map)) = &self.c.fpe_dets {
            let mut found = Vec::new();
            d.find(hay, &mut found);
            for f in found {
                out.push((f.start, f.end, Sel::Det(map[f.det])));
            }
            let added = &mut out[first..];
            added.sort_by_key(|t| t.0);
            let mut keep = first;
            for i in first..out.len() {
                if keep == first || out[i].0 >= out[keep - 1].1 {
                    out[keep] = out[i];
                    keep += 1;
                }
            }
            out.truncate(keep);
        }
    }

    fn has_text_tokens(&self) -> bool {
        self.c.text_tokens || self.c.fpe_dets.is_some()
    }

    /// The shared walk of `find_tokens` and `reveal`: `values` None collects candidates.
    pub(super) fn reveal_impl(
        &self,
        part: Part,
        input: &[u8],
        values: Option<&HashMap<String, Vec<u8>>>,
        found: &mut Vec<String>,
        stats: &mut Stats,
    ) -> Option<Vec<u8>> {
        if !self.reads(part) || input.is_empty() || !self.spec_tokenizes() {
            return None;
        }
        let mut r = Revealer {
            rule: self,
            values,
            found,
            edit: Edit::new(input),
            counts: Counts::default(),
            strings: self.has_text_tokens()
                && (memchr::memchr(b'\\', input).is_some() || {
                    let mut t = Vec::new();
                    self.text_tokens(input, &mut t);
                    !t.is_empty()
                }),
            spans: Vec::new(),
            scratch: Vec::new(),
        };
        let out = match self.spec.payload {
            Payload::Any => r.text(input),
            Payload::Json => match walk(input, &self.c.paths, &mut r) {
                Ok(()) => r.edit.finish(),
                Err(_) if self.spec.on_malformed == OnMalformed::Detect => {
                    r.edit = Edit::new(input);
                    r.counts = Counts::default();
                    r.text(input)
                }
                Err(_) => None,
            },
        };
        self.counts_into(r.counts, stats);
        out
    }

    pub(super) fn spec_tokenizes(&self) -> bool {
        let t = |a: &Action| matches!(a, Action::Tokenize { .. });
        self.spec.fields.iter().any(|f| t(&f.action))
            || self.spec.detectors.iter().any(|d| t(&d.action))
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether JSON string values need detector scans: only when the whole text has a match, or
/// escapes that could hide one (a string's content is a substring of the text, bordered by
/// quotes, which every detector treats as a boundary). Clean records cost one scan.
fn strings_need_detection(dets: &Detectors, input: &[u8]) -> bool {
    if dets.is_empty() {
        return false;
    }
    if memchr::memchr(b'\\', input).is_some() {
        return true;
    }
    let mut found = Vec::new();
    dets.find(input, &mut found);
    !found.is_empty()
}

fn mask_text(
    input: &[u8],
    set: &DetSet,
    sel: fn(usize) -> Sel,
    tokens: &mut dyn Tokens,
    counts: &mut Counts,
) -> Option<Vec<u8>> {
    if set.dets.is_empty() {
        return None;
    }
    let mut found = Vec::new();
    set.dets.find(input, &mut found);
    if found.is_empty() {
        return None;
    }
    let mut edit = Edit::new(input);
    for f in found {
        let spec = &set.specs[f.det];
        let r = apply(
            &spec.action,
            &set.scopes[f.det],
            &input[f.start..f.end],
            tokens,
        );
        edit.splice(f.start, f.end).extend_from_slice(r.as_bytes());
        counts.add(sel(f.det), spec.action.name());
    }
    edit.finish()
}

struct Masker<'a, 't> {
    c: &'a Compiled,
    fields: &'a [super::spec::FieldSpec],
    tokens: &'t mut dyn Tokens,
    edit: Edit<'a>,
    counts: Counts,
    strings: bool,
    found: Vec<Found>,
    scratch: Vec<u8>,
}

impl Visit for Masker<'_, '_> {
    fn whole_mask(&self) -> u64 {
        self.c.whole
    }

    fn wants_strings(&self) -> bool {
        self.strings
    }

    fn leaf(&mut self, input: &[u8], sel: Option<u16>, kind: Leaf, s: usize, e: usize) {
        let Some(f) = sel else {
            if let Leaf::String { escaped } = kind {
                self.detect_in_string(input, s, e, escaped);
            }
            return;
        };
        let fi = usize::from(f);
        let action = &self.fields[fi].action;
        let scope = &self.c.field_scopes[fi];
        let r = match kind {
            Leaf::Null => return,
            Leaf::String { escaped } => {
                let raw = &input[s + 1..e - 1];
                if escaped {
                    self.scratch.clear();
                    unescape(raw, &mut self.scratch);
                    apply(action, scope, &self.scratch, self.tokens)
                } else {
                    apply(action, scope, raw, self.tokens)
                }
            }
            Leaf::Number | Leaf::Bool => {
                let r = apply(action, scope, &input[s..e], self.tokens);
                let keeps_number = kind == Leaf::Number
                    && matches!(
                        action,
                        Action::Tokenize {
                            format_preserving: true
                        }
                    )
                    && is_number(r.as_bytes());
                if keeps_number {
                    self.edit.splice(s, e).extend_from_slice(r.as_bytes());
                    self.counts.add(Sel::Field(f), action.name());
                    return;
                }
                r
            }
        };
        quoted(r.as_bytes(), self.edit.splice(s, e));
        self.counts.add(Sel::Field(f), action.name());
    }

    fn whole(&mut self, input: &[u8], f: u16, s: usize, e: usize) {
        let action = &self.fields[usize::from(f)].action;
        let scope = &self.c.field_scopes[usize::from(f)];
        let r = apply(action, scope, &input[s..e], self.tokens);
        quoted(r.as_bytes(), self.edit.splice(s, e));
        self.counts.add(Sel::Field(f), action.name());
    }
}

impl Masker<'_, '_> {
    fn detect_in_string(&mut self, input: &[u8], s: usize, e: usize, escaped: bool) {
        let set = &self.c.dets;
        let raw = &input[s + 1..e - 1];
        self.found.clear();
        if !escaped {
            set.dets.find(raw, &mut self.found);
            for m in &self.found {
                let spec = &set.specs[m.det];
                let r = apply(
                    &spec.action,
                    &set.scopes[m.det],
                    &raw[m.start..m.end],
                    self.tokens,
                );
                escape_into(
                    r.as_bytes(),
                    self.edit.splice(s + 1 + m.start, s + 1 + m.end),
                );
                self.counts.add(Sel::Det(m.det), spec.action.name());
            }
            return;
        }
        self.scratch.clear();
        unescape(raw, &mut self.scratch);
        set.dets.find(&self.scratch, &mut self.found);
        if self.found.is_empty() {
            return;
        }
        // Re-escaped whole: match offsets are in the unescaped text.
        let text = &self.scratch;
        let out = self.edit.splice(s, e);
        out.push(b'"');
        let mut last = 0;
        for m in &self.found {
            escape_into(&text[last..m.start], out);
            let spec = &set.specs[m.det];
            let r = apply(
                &spec.action,
                &set.scopes[m.det],
                &text[m.start..m.end],
                self.tokens,
            );
            escape_into(r.as_bytes(), out);
            self.counts.add(Sel::Det(m.det), spec.action.name());
            last = m.end;
        }
        escape_into(&text[last..], out);
        out.push(b'"');
    }
}

struct Revealer<'a> {
    rule: &'a super::Rule,
    values: Option<&'a HashMap<String, Vec<u8>>>,
    found: &'a mut Vec<String>,
    edit: Edit<'a>,
    counts: Counts,
    strings: bool,
    spans: Vec<(usize, usize, Sel)>,
    scratch: Vec<u8>,
}

impl<'a> Revealer<'a> {
    /// The original for `token`, or None; in collect mode records it and returns None.
    fn lookup(&mut self, token: &[u8]) -> Option<Vec<u8>> {
        let t = std::str::from_utf8(token).ok()?;
        match self.values {
            Some(v) => v.get(t).cloned(),
            None => {
                if !self.found.iter().any(|f| f == t) {
                    self.found.push(t.to_string());
                }
                None
            }
        }
    }

    fn text(&mut self, input: &'a [u8]) -> Option<Vec<u8>> {
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        self.rule.text_tokens(input, &mut spans);
        for &(s, e, sel) in &spans {
            if let Some(v) = self.lookup(&input[s..e]) {
                self.edit.splice(s, e).extend_from_slice(&v);
                self.counts.add(sel, "reveal");
            }
        }
        self.spans = spans;
        std::mem::replace(&mut self.edit, Edit::new(input)).finish()
    }

    fn in_string(&mut self, input: &[u8], s: usize, e: usize, escaped: bool) {
        let raw = &input[s + 1..e - 1];
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        if !escaped {
            self.rule.text_tokens(raw, &mut spans);
            for &(a, b, sel) in &spans {
                if let Some(v) = self.lookup(&raw[a..b]) {
                    escape_into(&v, self.edit.splice(s + 1 + a, s + 1 + b));
                    self.counts.add(sel, "reveal");
                }
            }
        } else {
            let mut text = std::mem::take(&mut self.scratch);
            text.clear();
            unescape(raw, &mut text);
            self.rule.text_tokens(&text, &mut spans);
            let mut originals = Vec::new();
            for &(a, b, sel) in &spans {
                if let Some(v) = self.lookup(&text[a..b]) {
                    originals.push((a, b, v));
                    self.counts.add(sel, "reveal");
                }
            }
            if !originals.is_empty() {
                let out = self.edit.splice(s, e);
                out.push(b'"');
                let mut last = 0;
                for (a, b, v) in originals {
                    escape_into(&text[last..a], out);
                    escape_into(&v, out);
                    last = b;
                }
                escape_into(&text[last..], out);
                out.push(b'"');
            }
            self.scratch = text;
        }
        self.spans = spans;
    }
}

impl Visit for Revealer<'_> {
    fn whole_mask(&self) -> u64 {
        // Redacted and hashed subtrees hold no tokens; their leaves are skipped below.
        0
    }

    fn wants_strings(&self) -> bool {
        self.strings
    }

    fn leaf(&mut self, input: &[u8], sel: Option<u16>, kind: Leaf, s: usize, e: usize) {
        let Some(f) = sel else {
            if let Leaf::String { escaped } = kind {
                self.in_string(input, s, e, escaped);
            }
            return;
        };
        if !matches!(
            self.rule.spec.fields[usize::from(f)].action,
            Action::Tokenize { .. }
        ) {
            return;
        }
        match kind {
            Leaf::String { escaped } => {
                let raw = &input[s + 1..e - 1];
                let v = if escaped {
                    let mut t = Vec::new();
                    unescape(raw, &mut t);
                    self.lookup(&t)
                } else {
                    self.lookup(raw)
                };
                if let Some(v) = v {
                    quoted(&v, self.edit.splice(s, e));
                    self.counts.add(Sel::Field(f), "reveal");
                }
            }
            Leaf::Number => {
                if let Some(v) = self.lookup(&input[s..e]) {
                    let out = self.edit.splice(s, e);
                    if is_number(&v) {
                        out.extend_from_slice(&v);
                    } else {
                        quoted(&v, out);
                    }
                    self.counts.add(Sel::Field(f), "reveal");
                }
            }
            Leaf::Bool | Leaf::Null => {}
        }
    }

    fn whole(&mut self, _: &[u8], _: u16, _: usize, _: usize) {}
}
