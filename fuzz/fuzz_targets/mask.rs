//! Arbitrary bytes as a record value through the masking engine: a JSON rule (field paths of
//! every shape, every action, `on_malformed` from the input) and a free-text rule with every
//! built-in detector. Beyond "no panic, no unbounded work" it asserts:
//! - what a JSON rule outputs for valid JSON is valid JSON (serde_json parses it);
//! - a value nothing selects comes back unchanged (`Ok(None)`), never rewritten;
//! - reveal with the tokens the mask made gives back JSON that parses, and the tokens
//!   `find_tokens` lists in the masked text include every token the mask made.
#![no_main]

use std::collections::HashMap;

use interceptor::mask::{
    Action, CollectingTokens, Detector, DetectorSpec, FieldSpec, MacKey, OnMalformed, Part, Parts,
    Payload, Rule, RuleSpec, Stats,
};
use libfuzzer_sys::fuzz_target;

fn rules(reject: bool) -> (Rule, Rule) {
    let field = |path: &str, action: Action| FieldSpec {
        path: path.into(),
        action,
    };
    let json = RuleSpec {
        name: "fuzz-json".into(),
        payload: Payload::Json,
        parts: Parts {
            key: false,
            value: true,
            headers: false,
        },
        on_malformed: if reject {
            OnMalformed::Reject
        } else {
            OnMalformed::Detect
        },
        fields: vec![
            field("$.a.b", Action::Tokenize { format_preserving: true }),
            field("$.c[*].d", Action::Tokenize { format_preserving: false }),
            field("$['e f']", Action::Hash),
            field("$.g[1]", Action::Partial {
                keep_first: 1,
                keep_last: 2,
                mask_char: '#',
            }),
            field("$.h.*", Action::Redact {
                replacement: "[x]".into(),
            }),
        ],
        detectors: vec![DetectorSpec {
            detector: Detector::CreditCard,
            action: Action::Tokenize { format_preserving: true },
        }],
    };
    let text = RuleSpec {
        name: "fuzz-text".into(),
        payload: Payload::Any,
        parts: json.parts,
        on_malformed: OnMalformed::Detect,
        fields: Vec::new(),
        detectors: Detector::builtins()
            .into_iter()
            .map(|detector| DetectorSpec {
                detector,
                action: Action::Tokenize {
                    format_preserving: false,
                },
            })
            .collect(),
    };
    (
        Rule::compile(json).expect("the fuzz JSON rule compiles"),
        Rule::compile(text).expect("the fuzz text rule compiles"),
    )
}

/// Compiled once per process (aho-corasick automata are costly to build).
static RULES: std::sync::OnceLock<[(Rule, Rule); 2]> = std::sync::OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&mode, value)) = data.split_first() else {
        return;
    };
    let [detect, reject] = RULES.get_or_init(|| [rules(false), rules(true)]);
    let (json, text) = if mode & 1 == 1 { reject } else { detect };
    let key = MacKey([7; 32]);
    let counters = HashMap::new();
    for rule in [json, text] {
        let mut tokens = CollectingTokens {
            key: &key,
            counters: &counters,
            new: Vec::new(),
        };
        let mut stats = Stats::default();
        let Ok(masked) = rule.mask(Part::Value, value, &mut tokens, &mut stats) else {
            continue;
        };
        let input_is_json = serde_json::from_slice::<serde_json::Value>(value).is_ok();
        let Some(out) = masked else {
            assert!(tokens.new.is_empty(), "tokens made for a value left unchanged");
            continue;
        };
        if std::ptr::eq(rule, json) && input_is_json {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&out).is_ok(),
                "masked JSON does not parse"
            );
        }
        let mut found = Vec::new();
        rule.find_tokens(Part::Value, &out, &mut found);
        let values: HashMap<String, Vec<u8>> = tokens
            .new
            .iter()
            .map(|t| (t.token.clone(), t.value.clone()))
            .collect();
        for t in tokens.new.iter().filter(|t| t.token.starts_with("tok_")) {
            assert!(found.contains(&t.token), "a token the mask made is not found again");
        }
        let revealed = rule.reveal(Part::Value, &out, &values, &mut stats);
        if let (Some(back), true) = (revealed, std::ptr::eq(rule, json) && input_is_json) {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&back).is_ok(),
                "revealed JSON does not parse"
            );
        }
    }
});
