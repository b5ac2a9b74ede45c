//! Masking rules: every error with its line and column, the specs handed to the engine, and
//! which rules apply to a produce, a fetch and a reveal.

use std::{path::PathBuf, sync::Arc};

use super::{assert_error, errors, load, Who};
use crate::{
    mask::{self, Action, CharClass, Detector, OnMalformed, Parts, Payload},
    policy::{MaskStage, MaskingRule, PolicySet, RevealRefusal},
};

const GOOD: &str = "\
masking:
  - name: m
    topics: [t]
    fields:
      - path: $.a
        action: redact
";

fn names(rules: &[Arc<MaskingRule>]) -> Vec<&str> {
    rules.iter().map(|r| &*r.at.name).collect()
}

#[test]
fn a_good_rule_loads_with_its_defaults() {
    let set = load(GOOD).unwrap();
    assert!(set.warnings().len() == 1, "{:?}", set.warnings()); // no access rules
    assert_eq!(set.rule_count(), 1);
    assert!(set.masks_anything());
    let r = &set.masking_rules()[0];
    assert_eq!(
        (r.stage, r.at.line, &*r.at.file),
        (MaskStage::Produce, 2, "t.yaml")
    );
    let spec = r.rule.spec();
    assert_eq!(&*spec.name, "m");
    assert_eq!(spec.payload, Payload::Json);
    assert_eq!(
        spec.parts,
        Parts {
            key: false,
            value: true,
            headers: false
        }
    );
    assert_eq!(spec.on_malformed, OnMalformed::Reject);
    assert_eq!(spec.fields[0].path, "$.a");
    assert_eq!(
        spec.fields[0].action,
        Action::Redact {
            replacement: "[REDACTED]".into()
        }
    );
    assert!(!r.tokenizes());

    // Without fields a rule reads any bytes.
    let set = load(
        "masking:\n  - {name: m, topics: [t], detectors: [{detector: email, action: hash}]}\n",
    )
    .unwrap();
    assert_eq!(set.masking_rules()[0].rule.spec().payload, Payload::Any);
}

#[test]
fn every_option_reaches_the_spec() {
    let src = r##"
masking:
  - name: m
    topics: ["a.*"]
    payload: json
    in: [key, headers]
    on_malformed: detect
    fields:
      - {path: $.r, action: redact, replacement: "[x]"}
      - {path: $.p, action: partial, keep_first: 2, keep_last: 3, mask_char: "#"}
      - {path: $.d, action: partial}
      - {path: $.h, action: hash}
      - {path: $.t, action: tokenize, format_preserving: true}
      - {path: $.u, action: tokenize}
    detectors:
      - {detector: us_ssn, action: partial, keep_last: 4}
      - detector: {name: emp, prefix: "EMP-", chars: upper_alnum, length: 6}
        action: tokenize
"##;
    let set = load(src).unwrap();
    let r = &set.masking_rules()[0];
    assert!(r.tokenizes());
    let spec = r.rule.spec();
    assert_eq!(
        spec.parts,
        Parts {
            key: true,
            value: false,
            headers: true
        }
    );
    assert_eq!(spec.on_malformed, OnMalformed::Detect);
    let actions: Vec<_> = spec.fields.iter().map(|f| f.action.clone()).collect();
    assert_eq!(
        actions,
        [
            Action::Redact {
                replacement: "[x]".into()
            },
            Action::Partial {
                keep_first: 2,
                keep_last: 3,
                mask_char: '#'
            },
            Action::Partial {
                keep_first: 0,
                keep_last: 4,
                mask_char: '*'
            },
            Action::Hash,
            Action::Tokenize {
                format_preserving: true
            },
            Action::Tokenize {
                format_preserving: false
            },
        ]
    );
    assert_eq!(spec.detectors[0].detector, Detector::UsSsn);
    assert_eq!(
        spec.detectors[1].detector,
        Detector::Custom {
            name: "emp".into(),
            prefix: "EMP-".into(),
            chars: CharClass::UpperAlnum,
            length: 6
        }
    );
    assert_eq!(
        r.summary(),
        "$.r redact, $.p partial, $.d partial, $.h hash, $.t tokenize, $.u tokenize, \
         detector us_ssn partial, detector emp tokenize"
    );
}

#[test]
fn unknown_keys_and_values_with_hints() {
    let src = GOOD.replace("    topics: [t]", "    topics: [t]\n    onn: fetch");
    assert_error(
        &src,
        4,
        5,
        "unknown field `onn` in a masking rule (did you mean `on`?",
    );
    let src = GOOD.replace("action: redact", "action: redact\n        keep_lst: 3");
    assert_error(
        &src,
        7,
        9,
        "unknown field `keep_lst` in a `fields` entry (did you mean `keep_last`?",
    );
    let src = GOOD.replace("action: redact", "action: redcat");
    assert_error(
        &src,
        6,
        17,
        "unknown action `redcat` (did you mean `redact`? one of: redact, partial, hash, tokenize)",
    );
    let src = GOOD.replace("    topics: [t]", "    topics: [t]\n    on: consume");
    assert_error(
        &src,
        4,
        9,
        "unknown stage `consume` in `on` (one of: produce, fetch)",
    );
    let src = GOOD.replace("    topics: [t]", "    topics: [t]\n    payload: xml");
    assert_error(&src, 4, 14, "unknown payload `xml` (one of: json, any)");
    let src = GOOD.replace("    topics: [t]", "    topics: [t]\n    on_malformed: drop");
    assert_error(&src, 4, 19, "unknown `on_malformed` value `drop`");
    let src = GOOD.replace("    topics: [t]", "    topics: [t]\n    in: [value, body]");
    assert_error(
        &src,
        4,
        17,
        "unknown place `body` (one of: key, value, headers)",
    );
    let src = "masking:\n  - name: m\n    topics: [t]\n    detectors:\n      - detector: emial\n        action: hash\n";
    assert_error(
        src,
        5,
        19,
        "unknown detector `emial` (did you mean `email`? built-in:",
    );
    let src = "masking:\n  - name: m\n    topics: [t]\n    detectors:\n      - detector: {name: e, prefix: x, chars: digits, length: 3, flags: i}\n        action: hash\n";
    assert_error(src, 5, 66, "unknown field `flags` in a custom detector");
}

#[test]
fn missing_and_mistyped_fields() {
    assert_error(
        "masking:\n  - name: m\n    fields: [{path: $.a, action: hash}]\n",
        2,
        5,
        "a masking rule needs `topics` (Kafka) or `mqtt_topics` (MQTT), or both",
    );
    assert_error(
        "masking:\n  - topics: [t]\n    fields: [{path: $.a, action: hash}]\n",
        2,
        5,
        "masking rule has no `name`",
    );
    assert_error(
        "masking:\n  - name: m\n    topics: [t]\n",
        2,
        5,
        "masking rule selects nothing: list `fields` (JSON paths) or `detectors`",
    );
    assert_error("masking: {name: m}\n", 1, 10, "`masking` must be a list");
    assert_error("masking: []\n", 1, 10, "`masking` is an empty list");
    let src = GOOD.replace(
        "      - path: $.a\n        action: redact\n",
        "      - path: $.a\n",
    );
    assert_error(&src, 5, 9, "`fields` entry has no `action`");
    let src = GOOD.replace("      - path: $.a\n", "      - action: redact\n");
    let src = src.replacen("        action: redact\n", "", 1);
    assert_error(&src, 5, 9, "`fields` entry has no `path`");
    let src = GOOD.replace("path: $.a", "path: a.b");
    assert_error(&src, 5, 15, "field path `a.b` must start with `$`");
    let src = GOOD.replace("    topics: [t]", "    topics: [t]\n    in: []");
    assert_error(&src, 4, 9, "`in` is an empty list");
    let src = GOOD.replace(
        "    fields:\n      - path: $.a\n        action: redact\n",
        "    fields: []\n",
    );
    assert_error(&src, 4, 13, "`fields` is an empty list");
    let src = GOOD.replace("action: redact", "action: partial\n        keep_last: -1");
    assert_error(
        &src,
        7,
        20,
        "`keep_last` must be a whole number from 0 to 64",
    );
    let src = GOOD.replace(
        "action: redact",
        "action: partial\n        keep_first: \"2\"",
    );
    assert_error(
        &src,
        7,
        21,
        "`keep_first` must be a whole number from 0 to 64",
    );
    let src = GOOD.replace(
        "action: redact",
        "action: partial\n        mask_char: \"**\"",
    );
    assert_error(
        &src,
        7,
        20,
        "`mask_char` must be one character (like \"*\" or \"#\"), found `**`",
    );
    let src = GOOD.replace(
        "action: redact",
        "action: tokenize\n        format_preserving: yes",
    );
    assert_error(&src, 7, 28, "`format_preserving` must be true or false");
    let src = GOOD.replace("action: redact", "action: redact\n        replacement: [x]");
    assert_error(&src, 7, 22, "`replacement` must be a string, found a list");
    let long = "x".repeat(257);
    let src = GOOD.replace(
        "action: redact",
        &format!("action: redact\n        replacement: {long}"),
    );
    assert_error(&src, 7, 22, "`replacement` is longer than 256 characters");
    let src = GOOD.replace("topics: [t]", "topics: [\"a/b\"]");
    assert_error(&src, 3, 14, "cannot appear in a Kafka topic name");
}

#[test]
fn options_belong_to_their_action() {
    let src = GOOD.replace("action: redact", "action: redact\n        keep_last: 4");
    assert_error(
        &src,
        7,
        9,
        "`keep_last` is an option of `action: partial`, not of `redact`",
    );
    let src = GOOD.replace(
        "action: redact",
        "action: hash\n        format_preserving: true",
    );
    assert_error(
        &src,
        7,
        9,
        "`format_preserving` is an option of `action: tokenize`, not of `hash`",
    );
    let src = GOOD.replace("action: redact", "action: partial\n        replacement: x");
    assert_error(
        &src,
        7,
        9,
        "`replacement` is an option of `action: redact`, not of `partial`",
    );
    let src = GOOD.replace(
        "action: redact",
        "action: tokenize\n        mask_char: \"#\"",
    );
    assert_error(
        &src,
        7,
        9,
        "`mask_char` is an option of `action: partial`, not of `tokenize`",
    );
    let src = "masking:\n  - name: m\n    topics: [t]\n    detectors:\n      - {detector: email, action: hash, keep_first: 1}\n";
    assert_error(
        src,
        5,
        41,
        "`keep_first` is an option of `action: partial`, not of `hash`",
    );
}

const FETCH: &str = "\
masking:
  - name: f
    topics: [t]
    on: fetch
    subjects:
      groups: [support]
    fields:
      - path: $.a
        action: hash
";

#[test]
fn fetch_and_produce_rules() {
    let set = load(FETCH).unwrap();
    assert_eq!(set.masking_rules()[0].stage, MaskStage::Fetch);

    let src = FETCH.replace("    subjects:\n      groups: [support]\n", "");
    assert_error(&src, 2, 5, "fetch masking rule has no `subjects`");
    let src = FETCH.replace("    on: fetch\n", "");
    assert_error(
        &src,
        4,
        5,
        "`subjects` is not allowed on a produce masking rule: it rewrites records before the \
         broker stores them, for every producer",
    );
    let src = FETCH.replace("action: hash", "action: tokenize");
    assert_error(
        &src,
        9,
        17,
        "`tokenize` is not available on fetch rules: tokens are made on produce",
    );
    let src = FETCH.replace("groups: [support]", "groups: [support]\n      users: [x]");
    assert_error(&src, 7, 7, "unknown field `users` in `subjects`");
    let src = FETCH.replace("groups: [support]", "client_ids: [x]");
    assert_error(&src, 6, 7, "`subjects` names no principals and no groups");
    let src = FETCH.replace("action: hash", "action: hash\n    reveal: {groups: [a]}");
    assert_error(&src, 10, 5, "`reveal` applies to produce rules only");
}

#[test]
fn payload_rules() {
    let src = GOOD.replace("    topics: [t]", "    topics: [t]\n    payload: any");
    assert_error(
        &src,
        5,
        5,
        "`fields` selects JSON fields and needs `payload: json`",
    );
    let src = "masking:\n  - name: m\n    topics: [t]\n    on_malformed: detect\n    detectors: [{detector: jwt, action: redact}]\n";
    assert_error(src, 4, 5, "`on_malformed` applies to `payload: json` only");
    let src = "masking:\n  - name: m\n    topics: [t]\n    payload: json\n    on_malformed: detect\n    detectors: [{detector: jwt, action: redact}]\n";
    let set = load(src).unwrap();
    let spec = set.masking_rules()[0].rule.spec();
    assert_eq!(
        (spec.payload, spec.on_malformed),
        (Payload::Json, OnMalformed::Detect)
    );
}

#[test]
fn reveal_needs_a_tokenize_action() {
    let src = GOOD.replace(
        "action: redact",
        "action: hash\n    reveal:\n      principals: [x]",
    );
    assert_error(
        &src,
        7,
        5,
        "`reveal` needs a `tokenize` action in this rule: redact, partial and hash cannot be undone",
    );
    let src = GOOD.replace(
        "action: redact",
        "action: tokenize\n    reveal:\n      networks: [10.0.0.0/8]",
    );
    assert_error(&src, 8, 7, "`reveal` names no principals and no groups");
    let src = GOOD.replace(
        "action: redact",
        "action: tokenize\n    reveal:\n      principals: [x]\n      principal: [y]",
    );
    assert_error(
        &src,
        9,
        7,
        "unknown field `principal` in `reveal` (did you mean `principals`?",
    );
    let src = GOOD.replace(
        "action: redact",
        "action: tokenize\n    reveal: {principals: [x]}",
    );
    assert!(load(&src).unwrap().masking_rules()[0].has_reveal());
}

#[test]
fn duplicates_within_a_rule() {
    let src = "\
masking:
  - name: m
    topics: [t]
    fields:
      - {path: $.a, action: hash}
      - {path: $.a, action: redact}
    detectors:
      - {detector: email, action: hash}
      - {detector: {name: c, prefix: C, chars: hex, length: 4}, action: hash}
      - {detector: email, action: redact}
      - {detector: {name: c, prefix: D, chars: hex, length: 4}, action: hash}
";
    assert_error(
        src,
        6,
        16,
        "field path `$.a` is already listed in this rule (line 5)",
    );
    assert_error(
        src,
        10,
        20,
        "detector `email` is already listed in this rule (line 8)",
    );
    assert_error(
        src,
        11,
        20,
        "detector `c` is already listed in this rule (line 9)",
    );
    assert_eq!(errors(src).len(), 3);
}

#[test]
fn custom_detector_errors() {
    let entry = |d: &str| {
        format!("masking:\n  - name: m\n    topics: [t]\n    detectors:\n      - detector: {d}\n        action: hash\n")
    };
    let src = entry("{name: email, prefix: x, chars: digits, length: 3}");
    assert_error(&src, 5, 26, "`email` is the name of a built-in detector");
    let src = entry("{name: \"a b\", prefix: x, chars: digits, length: 3}");
    assert_error(&src, 5, 26, "detector name `a b` contains ' '");
    let src = entry("{name: e, prefix: \"\", chars: digits, length: 3}");
    assert_error(&src, 5, 37, "`prefix` is empty");
    let src = entry("{name: e, prefix: x, chars: base64, length: 3}");
    assert_error(
        &src,
        5,
        47,
        "unknown character class `base64` (one of: digits, upper_alnum, alnum, hex)",
    );
    let src = entry("{name: e, prefix: x, chars: digits, length: 0}");
    assert_error(&src, 5, 63, "`length` must be a whole number from 1 to 256");
    let src = entry("{name: e, prefix: x, length: 3}");
    assert_error(&src, 5, 19, "custom detector has no `chars`");
    let src = entry("[email]");
    assert_error(&src, 5, 19, "`detector` must be a string, found a list");
}

#[test]
fn names_are_unique_across_rule_kinds() {
    let files = [
        (
            PathBuf::from("a.yaml"),
            "blocking:\n  - {name: m, topics: [t], immutable: true}\n".to_string(),
        ),
        (PathBuf::from("b.yaml"), GOOD.to_string()),
    ];
    let errs = PolicySet::from_files(&files).unwrap_err().0;
    assert_eq!(
        errs.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        [
            "a.yaml:2:5: rule name `m` is used again at b.yaml:2",
            "b.yaml:2:5: rule name `m` is already used at a.yaml:2",
        ]
    );
    let two = format!("{GOOD}{}", &GOOD["masking:\n".len()..]);
    assert_error(&two, 7, 5, "rule name `m` is already used at t.yaml:2");
}

#[test]
fn limits() {
    let mut src = String::from("masking:\n  - name: m\n    topics: [t]\n    fields:\n");
    for i in 0..=crate::policy::MAX_MASK_FIELDS {
        src.push_str(&format!("      - {{path: $.f{i}, action: hash}}\n"));
    }
    assert_error(&src, 5, 7, "`fields` has more than 256 entries");
    let mut src = String::from("masking:\n  - name: m\n    topics: [t]\n    detectors:\n");
    for i in 0..=crate::policy::MAX_MASK_DETECTORS {
        src.push_str(&format!(
            "      - {{detector: {{name: d{i}, prefix: P, chars: digits, length: 3}}, action: hash}}\n"
        ));
    }
    assert_error(&src, 5, 7, "`detectors` has more than 64 entries");

    let mut src = String::from("masking:\n");
    for i in 0..=crate::policy::MAX_MASKING_RULES {
        src.push_str(&format!(
            "  - {{name: m{i}, topics: [t], detectors: [{{detector: email, action: hash}}]}}\n"
        ));
    }
    let errs = errors(&src);
    assert_eq!(errs.len(), 1, "{:?}", &errs[..errs.len().min(3)]);
    assert_eq!(
        (errs[0].line, errs[0].column),
        (crate::policy::MAX_MASKING_RULES + 2, 5)
    );
    assert!(
        errs[0].message.contains("more than 1000 masking rules"),
        "{}",
        errs[0]
    );
}

#[test]
fn engine_errors_point_at_the_entry() {
    use super::super::{masking_schema::compile_error_mark, yaml::Mark};
    let m = |line, column| Mark { line, column };
    let rule = m(2, 5);
    let fields = [m(5, 9), m(7, 9)];
    let detectors = [m(10, 9)];
    let err = |field, detector| mask::CompileError {
        field,
        detector,
        message: "bad".into(),
    };
    assert_eq!(
        compile_error_mark(&err(Some(1), None), rule, &fields, &detectors),
        m(7, 9)
    );
    assert_eq!(
        compile_error_mark(&err(None, Some(0)), rule, &fields, &detectors),
        m(10, 9)
    );
    assert_eq!(
        compile_error_mark(&err(None, None), rule, &fields, &detectors),
        rule
    );
    // An index the policy never handed over falls back to the rule, never panics.
    assert_eq!(
        compile_error_mark(&err(Some(9), None), rule, &fields, &detectors),
        rule
    );
}

const SET: &str = r#"
masking:
  - name: cards
    topics: ["payments.*"]
    fields: [{path: $.card, action: tokenize, format_preserving: true}]
    reveal: {principals: [ledger], groups: [admins]}
  - name: emails
    topics: ["*"]
    detectors: [{detector: email, action: hash}]
  - name: orders-tokens
    topics: ["orders.?"]
    fields: [{path: $.id, action: tokenize}]
    reveal: {principals: [ledger], client_ids: ["ledger-*"]}
  - name: support-view
    topics: ["payments.*", "orders.*"]
    on: fetch
    subjects: {groups: [support]}
    fields: [{path: $.name, action: partial}]
  - name: support-eu-view
    topics: ["payments.eu"]
    on: fetch
    subjects: {groups: [support], networks: [10.0.0.0/8]}
    fields: [{path: $.iban, action: redact}]
  - name: cards-on-fetch-for-anonymous
    topics: ["payments.*"]
    on: fetch
    subjects: {principals: [ANONYMOUS]}
    fields: [{path: $.card, action: redact}]
"#;

#[test]
fn produce_masking_by_topic_in_file_order() {
    let set = load(SET).unwrap();
    assert!(set.masks_anything());
    assert_eq!(
        names(&set.produce_masking("payments.eu")),
        ["cards", "emails"]
    );
    assert_eq!(
        names(&set.produce_masking("orders.1")),
        ["emails", "orders-tokens"]
    );
    assert_eq!(names(&set.produce_masking("orders.12")), ["emails"]);
    assert_eq!(names(&set.produce_masking("payments")), ["emails"]);

    // Across files: by file name, then as written.
    let files = [
        (
            PathBuf::from("b.yaml"),
            GOOD.replace("name: m", "name: from-b"),
        ),
        (
            PathBuf::from("a.yaml"),
            GOOD.replace("name: m", "name: from-a"),
        ),
    ];
    let set = PolicySet::from_files(&files).unwrap();
    assert_eq!(names(&set.produce_masking("t")), ["from-a", "from-b"]);
    assert!(set.produce_masking("u").is_empty());

    let none = load("blocking:\n  - {name: b, topics: [t], immutable: true}\n").unwrap();
    assert!(!none.masks_anything());
    assert!(none.produce_masking("t").is_empty());
    assert!(none
        .fetch_masking("t", &Who::new("x", &[]).subject())
        .is_empty());
    assert!(!PolicySet::empty().masks_anything());
}

#[test]
fn fetch_masking_reveals_then_masks() {
    let set = load(SET).unwrap();
    let fetch = |who: &Who, topic: &str| {
        let m = set.fetch_masking(topic, &who.subject());
        (
            names(&m.reveal)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
            names(&m.mask)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    };
    let ledger = Who::new("ledger", &[]).client("ledger-1");
    assert_eq!(
        fetch(&ledger, "payments.eu"),
        (vec!["cards".into()], vec![])
    );
    assert_eq!(
        fetch(&ledger, "orders.1"),
        (vec!["orders-tokens".into()], vec![])
    );
    // The client id narrows orders-tokens' reveal, not cards'.
    let ledger_tool = Who::new("ledger", &[]).client("kcat");
    assert_eq!(fetch(&ledger_tool, "orders.1"), (vec![], vec![]));
    let admin = Who::new("ann", &["admins"]);
    assert_eq!(fetch(&admin, "payments.eu"), (vec!["cards".into()], vec![]));

    let support = Who::new("sam", &["support"]).from("10.2.3.4");
    assert_eq!(
        fetch(&support, "payments.eu"),
        (
            vec![],
            vec!["support-view".into(), "support-eu-view".into()]
        )
    );
    assert_eq!(
        fetch(&support, "payments.us"),
        (vec![], vec!["support-view".into()])
    );
    let support_home = Who::new("sam", &["support"]).from("192.168.1.1");
    assert_eq!(
        fetch(&support_home, "payments.eu"),
        (vec![], vec!["support-view".into()])
    );
    // Revealed and masked at once: the reveal comes first, the fetch rules apply after it.
    let both = Who::new("ledger", &["support"]);
    assert_eq!(
        fetch(&both, "payments.us"),
        (vec!["cards".into()], vec!["support-view".into()])
    );
    assert_eq!(fetch(&Who::new("x", &[]), "payments.eu"), (vec![], vec![]));
    assert_eq!(fetch(&support, "customers"), (vec![], vec![]));
    // ANONYMOUS is matched only by name, and never by its claimed groups.
    let anon = Who::new("ANONYMOUS", &["support", "admins"]);
    assert_eq!(
        fetch(&anon, "payments.eu"),
        (vec![], vec!["cards-on-fetch-for-anonymous".into()])
    );
}

#[test]
fn may_reveal_checks_the_rule_and_the_subject() {
    let set = load(SET).unwrap();
    let ledger = Who::new("ledger", &[]);
    let at = set.may_reveal("cards", &ledger.subject()).unwrap();
    assert_eq!((&*at.name, &*at.file, at.line), ("cards", "t.yaml", 3));
    assert!(set
        .may_reveal("cards", &Who::new("ann", &["admins"]).subject())
        .is_ok());
    match set.may_reveal("cards", &Who::new("eve", &["support"]).subject()) {
        Err(RevealRefusal::NotRevealed(r)) => assert_eq!(&*r.name, "cards"),
        other => panic!("{other:?}"),
    }
    // Without the client id its reveal names, the ledger may not reveal orders-tokens.
    assert!(matches!(
        set.may_reveal("orders-tokens", &ledger.subject()),
        Err(RevealRefusal::NotRevealed(_))
    ));
    assert!(set
        .may_reveal(
            "orders-tokens",
            &Who::new("ledger", &[]).client("ledger-7").subject()
        )
        .is_ok());
    let err = set.may_reveal("emails", &ledger.subject()).unwrap_err();
    assert!(matches!(err, RevealRefusal::NoTokens(_)));
    assert!(err.to_string().contains("makes no tokens"), "{err}");
    assert!(matches!(
        set.may_reveal("support-view", &ledger.subject()),
        Err(RevealRefusal::NoTokens(_))
    ));
    let err = set.may_reveal("nope", &ledger.subject()).unwrap_err();
    assert_eq!(err, RevealRefusal::UnknownRule("nope".into()));
    assert_eq!(
        err.to_string(),
        "no masking rule named `nope` in the policy set"
    );
}

#[test]
fn the_version_covers_the_masking_section() {
    let a = load(SET).unwrap();
    let b = load(&SET.replace("[ledger]", "[ledger2]")).unwrap();
    let c = load(&SET.replace("action: hash", "action: redact")).unwrap();
    assert_ne!(a.version(), b.version());
    assert_ne!(a.version(), c.version());
    assert_ne!(b.version(), c.version());
    assert_eq!(a.version(), load(SET).unwrap().version());
}
