//! Rule-level tests: masking JSON and text, malformed input, reveal round trips, stats, and
//! properties against serde_json on arbitrary documents.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::json::{walk, Leaf, Paths, Visit};
use super::*;

fn key() -> MacKey {
    MacKey([42; 32])
}

fn tok_fpe(fpe: bool) -> Action {
    Action::Tokenize {
        format_preserving: fpe,
    }
}

fn redact() -> Action {
    Action::Redact {
        replacement: "***".into(),
    }
}

fn partial(first: usize, last: usize) -> Action {
    Action::Partial {
        keep_first: first,
        keep_last: last,
        mask_char: '*',
    }
}

fn spec(
    payload: Payload,
    on_malformed: OnMalformed,
    fields: &[(&str, Action)],
    dets: &[(Detector, Action)],
) -> RuleSpec {
    RuleSpec {
        name: Arc::from("r"),
        payload,
        parts: Parts {
            key: false,
            value: true,
            headers: true,
        },
        on_malformed,
        fields: fields
            .iter()
            .map(|(p, a)| FieldSpec {
                path: p.to_string(),
                action: a.clone(),
            })
            .collect(),
        detectors: dets
            .iter()
            .map(|(d, a)| DetectorSpec {
                detector: d.clone(),
                action: a.clone(),
            })
            .collect(),
    }
}

fn json_rule(fields: &[(&str, Action)], dets: &[(Detector, Action)]) -> Rule {
    Rule::compile(spec(Payload::Json, OnMalformed::Reject, fields, dets)).unwrap()
}

struct Run {
    out: Option<Vec<u8>>,
    new: Vec<NewToken>,
    stats: Stats,
}

fn mask(rule: &Rule, input: &[u8]) -> Result<Run, MaskError> {
    let k = key();
    let counters = HashMap::new();
    let mut t = CollectingTokens {
        key: &k,
        counters: &counters,
        new: Vec::new(),
    };
    let mut stats = Stats::default();
    let out = rule.mask(Part::Value, input, &mut t, &mut stats)?;
    Ok(Run {
        out,
        new: t.new,
        stats,
    })
}

fn masked_json(rule: &Rule, doc: &Value) -> (Value, Run) {
    let input = serde_json::to_vec(doc).unwrap();
    let run = mask(rule, &input).unwrap();
    let out = run.out.clone().unwrap_or(input);
    (serde_json::from_slice(&out).expect("output is JSON"), run)
}

fn vault(new: &[NewToken]) -> HashMap<String, Vec<u8>> {
    new.iter()
        .map(|t| (t.token.clone(), t.value.clone()))
        .collect()
}

#[test]
fn masks_selected_fields_only() {
    let rule = json_rule(
        &[
            ("$.card.number", partial(0, 4)),
            ("$.users[*].email", tok_fpe(false)),
        ],
        &[],
    );
    let doc = json!({
        "card": {"number": "4111-1111-1111-1111", "exp": "12/29"},
        "users": [{"email": "a@b.co", "name": "A"}, {"email": "c@d.co"}],
        "ts": 1700000000000u64
    });
    let (out, run) = masked_json(&rule, &doc);
    assert_eq!(out["card"]["number"], "****-****-****-1111");
    assert_eq!(out["card"]["exp"], "12/29");
    assert_eq!(out["users"][1]["name"], Value::Null);
    assert_eq!(out["users"][0]["name"], "A");
    assert_eq!(out["ts"], 1700000000000u64);
    let t0 = out["users"][0]["email"].as_str().unwrap();
    assert_eq!(
        t0,
        derive_token(&key(), "r/$.users[*].email", b"a@b.co", 0, false)
    );
    assert_eq!(run.new.len(), 2);
    assert_eq!(run.new[0].scope, "r/$.users[*].email");
    assert_eq!(
        run.stats.entries,
        vec![
            StatEntry {
                rule: "r".into(),
                selector: "$.card.number".into(),
                action: "partial",
                count: 1
            },
            StatEntry {
                rule: "r".into(),
                selector: "$.users[*].email".into(),
                action: "tokenize",
                count: 2
            },
        ]
    );
    // Bytes outside the selected values are untouched.
    let input = br#"{ "card" : {"number":"4111111111111111"} ,"x":[1, 2.50]}"#;
    let out = mask(&rule, input).unwrap().out.unwrap();
    assert_eq!(
        out,
        br#"{ "card" : {"number":"************1111"} ,"x":[1, 2.50]}"#
    );
}

#[test]
fn equal_values_give_equal_tokens() {
    let rule = json_rule(&[("$[*].id", tok_fpe(false))], &[]);
    let (out, run) = masked_json(&rule, &json!([{"id": "x"}, {"id": "y"}, {"id": "x"}]));
    assert_eq!(out[0]["id"], out[2]["id"]);
    assert_ne!(out[0]["id"], out[1]["id"]);
    assert_eq!(run.new.len(), 2);
}

#[test]
fn containers_numbers_bools_null() {
    let rule = json_rule(
        &[
            ("$.secret", redact()),
            ("$.h", Action::Hash),
            ("$.p", partial(1, 0)),
            ("$.n", tok_fpe(true)),
            ("$.m", tok_fpe(false)),
            ("$.b", redact()),
            ("$.z", redact()),
        ],
        &[],
    );
    let doc = json!({
        "secret": {"a": [1, 2]}, "h": [1, "x"], "p": {"x": "abc", "y": 12},
        "n": 12345, "m": 7, "b": true, "z": null, "keep": "me"
    });
    let (out, _) = masked_json(&rule, &doc);
    assert_eq!(out["secret"], "***");
    assert_eq!(out["h"], hash_value(&key(), br#"[1,"x"]"#));
    assert_eq!(out["p"], json!({"x": "a**", "y": "1*"}));
    assert!(out["n"].is_u64(), "{}", out["n"]);
    assert_eq!(out["n"].to_string().len(), 5);
    assert!(out["m"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(out["b"], "***");
    assert_eq!(out["z"], Value::Null);
    assert_eq!(out["keep"], "me");
}

#[test]
fn escapes_in_values_and_replacements() {
    let rule = Rule::compile(spec(
        Payload::Json,
        OnMalformed::Reject,
        &[(
            "$.a",
            Action::Redact {
                replacement: "say \"no\"\\".into(),
            },
        )],
        &[],
    ))
    .unwrap();
    let (out, _) = masked_json(&rule, &json!({"a": "x", "b": "q\"uote"}));
    assert_eq!(out, json!({"a": "say \"no\"\\", "b": "q\"uote"}));
    let rule = json_rule(&[("$['k\"y']", partial(0, 1))], &[]);
    let out = mask(&rule, br#"{"k\u0022y":"ab\u0063"}"#)
        .unwrap()
        .out
        .unwrap();
    assert_eq!(out, br#"{"k\u0022y":"**c"}"#);
}

#[test]
fn detectors_in_unselected_strings() {
    let rule = json_rule(
        &[("$.note", redact())],
        &[
            (Detector::Email, partial(1, 0)),
            (Detector::CreditCard, tok_fpe(true)),
        ],
    );
    let doc = json!({
        "note": "alice@example.com",
        "msg": "write to bob@example.com, card 4111 1111 1111 1111",
        "esc": "line\nbob@example.com\tend",
        "alice@example.com": 1,
        "n": 4111111111111111u64
    });
    let (out, run) = masked_json(&rule, &doc);
    assert_eq!(out["note"], "***");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("write to b**@*******.***, card 4111 11"),
        "{msg}"
    );
    assert!(msg.ends_with(" 1111"));
    assert_ne!(msg, doc["msg"]);
    assert_eq!(out["esc"], "line\nb**@*******.***\tend");
    // Member names and numbers are not string values.
    assert_eq!(out["alice@example.com"], 1);
    assert_eq!(out["n"], 4111111111111111u64);
    assert_eq!(run.new.len(), 1);
    let mut s = run
        .stats
        .entries
        .iter()
        .map(|e| (e.selector.as_str(), e.count))
        .collect::<Vec<_>>();
    s.sort();
    assert_eq!(s, vec![("$.note", 1), ("credit_card", 1), ("email", 2)]);
}

#[test]
fn clean_json_with_detectors_is_unchanged() {
    let rule = json_rule(&[("$.nope", redact())], &[(Detector::CreditCard, redact())]);
    let input = br#"{"ts":1700000000000,"id":"a-1","note":"nothing \/ here"}"#;
    assert!(mask(&rule, input).unwrap().out.is_none());
}

#[test]
fn malformed_json() {
    let input = b"{\"email\": alice@example.com, card 4111111111111111";
    let reject = json_rule(&[("$.email", redact())], &[]);
    match mask(&reject, input) {
        Err(MaskError::Malformed { rule, part, .. }) => {
            assert_eq!((rule.as_str(), part), ("r", Part::Value));
        }
        Ok(_) => panic!("accepted malformed JSON"),
    }
    // Detect without detectors: every built-in one, redacting.
    let r = Rule::compile(spec(
        Payload::Json,
        OnMalformed::Detect,
        &[("$.email", redact())],
        &[],
    ))
    .unwrap();
    let run = mask(&r, input).unwrap();
    assert_eq!(
        run.out.unwrap(),
        b"{\"email\": [REDACTED], card [REDACTED]".to_vec()
    );
    assert_eq!(run.stats.entries.len(), 2);
    // Detect with the rule's own detectors.
    let r = Rule::compile(spec(
        Payload::Json,
        OnMalformed::Detect,
        &[],
        &[(Detector::Email, redact())],
    ))
    .unwrap();
    let out = mask(&r, input).unwrap().out.unwrap();
    assert_eq!(out, b"{\"email\": ***, card 4111111111111111".to_vec());
    // Too deep is malformed, not a crash.
    let deep = "[".repeat(1 << 20);
    assert!(mask(&reject, deep.as_bytes()).is_err());
}

#[test]
fn parts_and_empty_input() {
    let rule = json_rule(&[("$", redact())], &[]);
    let k = key();
    let counters = HashMap::new();
    let mut t = CollectingTokens {
        key: &k,
        counters: &counters,
        new: Vec::new(),
    };
    let mut st = Stats::default();
    assert_eq!(rule.mask(Part::Key, b"\"x\"", &mut t, &mut st), Ok(None));
    assert_eq!(
        rule.mask(Part::Header, b"\"x\"", &mut t, &mut st),
        Ok(Some(b"\"***\"".to_vec()))
    );
    assert_eq!(rule.mask(Part::Value, b"", &mut t, &mut st), Ok(None));
}

#[test]
fn compile_errors() {
    let e = Rule::compile(spec(
        Payload::Json,
        OnMalformed::Reject,
        &[("$.ok", redact()), ("$..bad", redact())],
        &[],
    ))
    .unwrap_err();
    assert_eq!((e.field, e.detector), (Some(1), None));
    let e = Rule::compile(spec(
        Payload::Any,
        OnMalformed::Reject,
        &[("$.a", redact())],
        &[],
    ))
    .unwrap_err();
    assert_eq!(e.field, Some(0));
    let custom = Detector::Custom {
        name: "c".into(),
        prefix: String::new(),
        chars: spec::CharClass::Digits,
        length: 4,
    };
    let e = Rule::compile(spec(
        Payload::Any,
        OnMalformed::Reject,
        &[],
        &[(Detector::Email, redact()), (custom, redact())],
    ))
    .unwrap_err();
    assert_eq!((e.field, e.detector), (None, Some(1)));
    assert!(!json_rule(&[("$.a", redact())], &[]).tokenizes());
    assert!(json_rule(&[], &[(Detector::Email, tok_fpe(false))]).tokenizes());
}

#[test]
fn any_payload_text() {
    let rule = Rule::compile(spec(
        Payload::Any,
        OnMalformed::Reject,
        &[],
        &[
            (Detector::UsSsn, partial(0, 4)),
            (Detector::AwsAccessKey, Action::Hash),
        ],
    ))
    .unwrap();
    let run = mask(&rule, b"ssn=123-45-6789 key=AKIAIOSFODNN7EXAMPLE \xff\xfe").unwrap();
    let want = format!(
        "ssn=***-**-6789 key={} \u{fffd}",
        hash_value(&key(), b"AKIAIOSFODNN7EXAMPLE")
    );
    let out = run.out.unwrap();
    assert_eq!(&out[..out.len() - 2], &want.as_bytes()[..want.len() - 3]);
    assert!(mask(&rule, b"nothing here 2024-01-01")
        .unwrap()
        .out
        .is_none());
}

#[test]
fn reveal_round_trip_json() {
    let rule = json_rule(
        &[
            ("$.user.email", tok_fpe(false)),
            ("$.card", tok_fpe(true)),
            ("$.acct", tok_fpe(true)),
            ("$.name", partial(1, 0)),
        ],
        &[
            (Detector::Email, tok_fpe(false)),
            (Detector::CreditCard, tok_fpe(true)),
            (Detector::UsSsn, tok_fpe(true)),
        ],
    );
    let input = br#"{"user":{"email":"al\"ice@example.com"},"card":"4111 1111 1111 1111","acct":98765,"name":"Al","msg":"mail bob@example.com, card 5555-5555-5555-4444, ssn 123-45-6789","esc":"tab\tcarol@example.org"}"#;
    let run = mask(&rule, input).unwrap();
    let masked = run.out.unwrap();
    let m: Value = serde_json::from_slice(&masked).unwrap();
    let card = m["card"].as_str().unwrap();
    assert!(
        card.starts_with("4111 11") && card.ends_with(" 1111") && card != "4111 1111 1111 1111"
    );
    assert!(m["acct"].is_u64());
    assert!(!String::from_utf8_lossy(&masked).contains("bob@"));
    assert!(!String::from_utf8_lossy(&masked).contains("123-45-6789"));

    let mut found = Vec::new();
    rule.find_tokens(Part::Value, &masked, &mut found);
    let mut want: Vec<String> = run.new.iter().map(|t| t.token.clone()).collect();
    want.sort();
    let mut got = found.clone();
    got.sort();
    assert_eq!(got, want);

    let values = vault(&run.new);
    let mut stats = Stats::default();
    let back = rule
        .reveal(Part::Value, &masked, &values, &mut stats)
        .unwrap();
    let mut orig: Value = serde_json::from_slice(input).unwrap();
    orig["name"] = json!("A*");
    assert_eq!(serde_json::from_slice::<Value>(&back).unwrap(), orig);
    let reveals: u64 = stats.entries.iter().map(|e| e.count).sum();
    assert_eq!(reveals, 7);
    assert!(stats.entries.iter().all(|e| e.action == "reveal"));
    // Unknown tokens stay.
    assert_eq!(
        rule.reveal(Part::Value, &masked, &HashMap::new(), &mut Stats::default()),
        None
    );
}

#[test]
fn reveal_is_bit_exact_without_escapes() {
    let rule = json_rule(
        &[("$.a", tok_fpe(false)), ("$.b[*]", tok_fpe(true))],
        &[
            (Detector::Phone, tok_fpe(true)),
            (Detector::Email, tok_fpe(false)),
        ],
    );
    let input = br#"{"a": "secret", "b": ["x-1", 42, "AKIAIOSFODNN7EXAMPLE"], "c": "call +1 415 555 2671 or a@b.io"}"#;
    let run = mask(&rule, input).unwrap();
    let masked = run.out.unwrap();
    let back = rule
        .reveal(
            Part::Value,
            &masked,
            &vault(&run.new),
            &mut Stats::default(),
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(back).unwrap(),
        String::from_utf8_lossy(input)
    );
}

#[test]
fn reveal_any_payload() {
    let rule = Rule::compile(spec(
        Payload::Any,
        OnMalformed::Reject,
        &[],
        &[
            (Detector::Email, tok_fpe(false)),
            (Detector::CreditCard, tok_fpe(true)),
            (Detector::AwsAccessKey, tok_fpe(true)),
        ],
    ))
    .unwrap();
    let input = b"from a@b.io card 4111111111111111 key AKIAIOSFODNN7EXAMPLE \x00\xff";
    let run = mask(&rule, input).unwrap();
    let masked = run.out.unwrap();
    assert!(masked.starts_with(b"from tok_"));
    let back = rule
        .reveal(
            Part::Value,
            &masked,
            &vault(&run.new),
            &mut Stats::default(),
        )
        .unwrap();
    assert_eq!(back, input.to_vec());
}

#[test]
fn counters_change_tokens() {
    let rule = json_rule(&[("$.a", tok_fpe(false))], &[]);
    let k = key();
    let mut counters = HashMap::new();
    counters.insert(("r/$.a".to_string(), b"v".to_vec()), 2);
    let mut t = CollectingTokens {
        key: &k,
        counters: &counters,
        new: Vec::new(),
    };
    let out = rule
        .mask(Part::Value, br#"{"a":"v"}"#, &mut t, &mut Stats::default())
        .unwrap()
        .unwrap();
    let want = derive_token(&k, "r/$.a", b"v", 2, false);
    assert_eq!(out, format!("{{\"a\":\"{want}\"}}").into_bytes());
    assert_ne!(want, derive_token(&k, "r/$.a", b"v", 0, false));
}

// ---- properties -------------------------------------------------------------------------

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[ -~\t\n\"\\\\é€😀]{0,16}".prop_map(Value::String),
        Just(Value::String("pay 4111 1111 1111 1111 to x@y.io".into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-c k]{1,2}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `v` as serde reads it back (floats do not round-trip exactly without `float_roundtrip`).
fn reparsed(v: Value) -> Value {
    serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap()
}

fn arb_text() -> impl Strategy<Value = Vec<u8>> {
    (arb_json(), any::<bool>()).prop_map(|(v, pretty)| {
        if pretty {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        }
    })
}

struct Nothing;
impl Visit for Nothing {
    fn whole_mask(&self) -> u64 {
        0
    }
    fn wants_strings(&self) -> bool {
        true
    }
    fn leaf(&mut self, _: &[u8], _: Option<u16>, _: Leaf, _: usize, _: usize) {}
    fn whole(&mut self, _: &[u8], _: u16, _: usize, _: usize) {}
}

fn serde_ok(b: &[u8]) -> Option<bool> {
    match serde_json::from_slice::<Value>(b) {
        Ok(_) => Some(true),
        // serde_json refuses numbers beyond f64; the walker does not parse them.
        Err(e) if e.to_string().contains("out of range") => None,
        Err(_) => Some(false),
    }
}

/// Partial applied leaf-wise, as the engine does to a selected subtree.
fn partial_value(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => Value::String(action::partial(s.as_bytes(), 1, 1, '*')),
        Value::Number(_) | Value::Bool(_) => {
            Value::String(action::partial(v.to_string().as_bytes(), 1, 1, '*'))
        }
        Value::Array(a) => Value::Array(a.iter().map(partial_value).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), partial_value(v)))
                .collect(),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn walker_accepts_what_serde_writes(text in arb_text()) {
        prop_assert!(walk(&text, &Paths::default(), &mut Nothing).is_ok());
    }

    #[test]
    fn walker_agrees_with_serde_on_mutations(
        text in arb_text(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, prop::sample::select(
            b"{}[]\",:\\ -+.e0123456789tfnu\x01\xc3\xa9\x80".to_vec())), 1..4),
    ) {
        let mut b = text;
        for (at, op, byte) in edits {
            let i = if b.is_empty() { 0 } else { at.index(b.len()) };
            match op {
                0 if !b.is_empty() => { b.remove(i); }
                1 => b.insert(i, byte),
                _ if !b.is_empty() => b[i] = byte,
                _ => b.push(byte),
            }
        }
        if let Some(ok) = serde_ok(&b) {
            prop_assert_eq!(walk(&b, &Paths::default(), &mut Nothing).is_ok(), ok, "{:?}", String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn nothing_selected_nothing_changed(text in arb_text()) {
        let rule = json_rule(&[("$.nope.x", redact())], &[(Detector::Jwt, redact())]);
        prop_assert!(mask(&rule, &text).unwrap().out.is_none());
    }

    #[test]
    fn selected_subtree_masked_rest_equal(doc in arb_json()) {
        let doc = reparsed(doc);
        let rule = json_rule(&[("$.k", partial(1, 1)), ("$[1]", partial(1, 1))], &[]);
        let (out, _) = masked_json(&rule, &doc);
        let mut want = doc.clone();
        match &mut want {
            Value::Object(o) => if let Some(v) = o.get_mut("k") { *v = partial_value(v) },
            Value::Array(a) => if let Some(v) = a.get_mut(1) { *v = partial_value(v) },
            _ => {}
        }
        prop_assert_eq!(out, want);
    }

    #[test]
    fn tokenize_then_reveal_round_trips(doc in arb_json(), secret in "[ -~é]{0,20}") {
        let rule = json_rule(
            &[("$.s", tok_fpe(false)), ("$.f", tok_fpe(true)), ("$.d.k", Action::Hash)],
            &[(Detector::Email, tok_fpe(false)), (Detector::CreditCard, tok_fpe(true))],
        );
        let orig = reparsed(json!({"s": secret, "f": secret, "d": doc, "t": "mail x@y.io now"}));
        let (masked, run) = masked_json(&rule, &orig);
        prop_assert!(!masked["t"].as_str().unwrap().contains("x@y.io"));
        let bytes = serde_json::to_vec(&masked).unwrap();
        let back = rule.reveal(Part::Value, &bytes, &vault(&run.new), &mut Stats::default());
        let back: Value = serde_json::from_slice(&back.unwrap_or(bytes)).unwrap();
        // Hashed values stay hashed; everything else is the original.
        let mut want = orig.clone();
        if orig["d"].get("k").is_some() {
            want["d"]["k"] = masked["d"]["k"].clone();
        }
        prop_assert_eq!(back, want);
    }

    #[test]
    fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let dets: Vec<_> = Detector::builtins().into_iter().map(|d| (d, tok_fpe(true))).collect();
        for payload in [Payload::Json, Payload::Any] {
            for om in [OnMalformed::Reject, OnMalformed::Detect] {
                let fields: &[(&str, Action)] = if payload == Payload::Json {
                    &[("$.*", Action::Hash)]
                } else {
                    &[]
                };
                let r = Rule::compile(spec(payload, om, fields, &dets)).unwrap();
                if let Ok(run) = mask(&r, &bytes) {
                    let out = run.out.unwrap_or(bytes.clone());
                    let mut f = Vec::new();
                    r.find_tokens(Part::Value, &out, &mut f);
                    let _ = r.reveal(Part::Value, &out, &vault(&run.new), &mut Stats::default());
                }
            }
        }
    }
}

/// A JSON walk that tokenized a field before proving the document malformed must not leave
/// that token behind for the vault: the text fallback's output does not carry it.
#[test]
fn a_malformed_document_keeps_no_tokens_from_the_abandoned_walk() {
    let rule = Rule::compile(RuleSpec {
        name: "r".into(),
        payload: Payload::Json,
        parts: Parts {
            key: false,
            value: true,
            headers: false,
        },
        on_malformed: OnMalformed::Detect,
        fields: vec![FieldSpec {
            path: "$.c[*].d".into(),
            action: Action::Tokenize {
                format_preserving: false,
            },
        }],
        detectors: vec![DetectorSpec {
            detector: Detector::CreditCard,
            action: Action::Tokenize {
                format_preserving: true,
            },
        }],
    })
    .unwrap();
    let key = MacKey([7; 32]);
    let counters = HashMap::new();
    let mut tokens = CollectingTokens {
        key: &key,
        counters: &counters,
        new: Vec::new(),
    };
    let input = br#"{"c":[{"d":"x@y.com"}],"g":a":{"b":"4111111111111111"}}"#;
    let out = rule
        .mask(Part::Value, input, &mut tokens, &mut Stats::default())
        .unwrap()
        .expect("the card is masked by the fallback");
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("x@y.com"), "{out}");
    assert_eq!(tokens.new.len(), 1, "{:?}", tokens.new);
    assert!(out.contains(&tokens.new[0].token));
}
