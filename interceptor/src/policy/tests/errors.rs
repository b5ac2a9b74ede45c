//! Every kind of error in a policy file, with its line and column.

use std::path::PathBuf;

use super::{assert_error, errors, load};
use crate::policy::PolicySet;

const GOOD_RULE: &str = "\
rules:
  - name: r
    effect: allow
    subjects:
      principals: [alice]
    resources:
      topics: [t]
    operations: [produce]
";

#[test]
fn a_good_rule_loads() {
    let set = load(GOOD_RULE).unwrap();
    assert_eq!(set.rule_count(), 1);
    assert!(set.warnings().is_empty(), "{:?}", set.warnings());
}

#[test]
fn unknown_fields_at_every_level_with_hints() {
    assert_error(
        "rulez: []\n",
        1,
        1,
        "unknown field `rulez` in a policy file (did you mean `rules`?",
    );
    let src = GOOD_RULE.replace("    effect: allow", "    effect: allow\n    priority: 3");
    assert_error(&src, 4, 5, "unknown field `priority` in a rule");
    let src = GOOD_RULE.replace(
        "      principals: [alice]",
        "      principals: [alice]\n      user: [bob]",
    );
    assert_error(&src, 6, 7, "unknown field `user` in `subjects`");
    let src = GOOD_RULE.replace("      topics: [t]", "      topic: [t]");
    let errs = errors(&src);
    assert!(
        errs.iter()
            .any(|e| (e.line, e.column) == (7, 7) && e.message.contains("did you mean `topics`")),
        "{errs:?}"
    );
}

#[test]
fn missing_required_fields_point_at_the_rule() {
    let src = "rules:\n  - name: r\n    effect: allow\n    subjects: {principals: [a]}\n    operations: [produce]\n";
    assert_error(src, 2, 5, "rule has no `resources`");
    let src = "rules:\n  - effect: allow\n    subjects: {principals: [a]}\n    resources: {topics: [t]}\n    operations: [produce]\n";
    assert_error(src, 2, 5, "rule has no `name`");
}

#[test]
fn wrong_types() {
    assert_error("rules: {a: 1}\n", 1, 8, "`rules` must be a list");
    assert_error(
        "- a\n",
        1,
        1,
        "a policy file must be a mapping, found a list",
    );
    let src = GOOD_RULE.replace("principals: [alice]", "principals: alice");
    assert_error(&src, 5, 19, "`principals` must be a list");
    let src = GOOD_RULE.replace("name: r", "name: [r]");
    assert_error(&src, 2, 11, "`name` must be a string, found a list");
    let src = GOOD_RULE.replace("topics: [t]", "topics: [t]\n      cluster: \"true\"");
    assert_error(&src, 8, 16, "`cluster` must be true or false");
    let src = GOOD_RULE.replace("name: r", "name:");
    assert_error(&src, 2, 5, "`name` must be a string, found nothing");
}

#[test]
fn empty_lists_are_errors() {
    assert_error("rules: []\n", 1, 8, "`rules` is an empty list");
    let src = GOOD_RULE.replace("operations: [produce]", "operations: []");
    assert_error(&src, 8, 17, "`operations` is an empty list");
}

#[test]
fn unknown_effects_and_operations() {
    let src = GOOD_RULE.replace("effect: allow", "effect: permit");
    assert_error(&src, 3, 13, "unknown effect `permit`");
    let src = GOOD_RULE.replace("operations: [produce]", "operations: [produce, write]");
    assert_error(&src, 8, 27, "unknown operation \"write\"");
}

#[test]
fn operations_must_apply_to_the_resources() {
    let src = GOOD_RULE.replace("operations: [produce]", "operations: [produce, commit]");
    assert_error(
        &src,
        8,
        27,
        "operation `commit` applies to none of this rule's resources (it applies to: group)",
    );
    // A resource kind no listed operation applies to is dead text.
    let src = GOOD_RULE.replace("topics: [t]", "topics: [t]\n      groups: [g]");
    assert_error(
        &src,
        8,
        7,
        "none of this rule's operations applies to a group",
    );
    let src = GOOD_RULE.replace("topics: [t]", "cluster: false");
    assert_error(&src, 7, 7, "`resources` names nothing");
}

#[test]
fn bad_globs_names_and_networks() {
    let src = GOOD_RULE.replace("topics: [t]", "topics: [\"ok.*\", \"a[bc\"]");
    assert_error(
        &src,
        7,
        24,
        "bad pattern `a[bc` in `topics`: `[` at character 2 is never closed",
    );
    let src = GOOD_RULE.replace("topics: [t]", "topics: [\"\"]");
    assert_error(&src, 7, 16, "empty pattern");
    let src = GOOD_RULE.replace("topics: [t]", "topics: [\"a/b\"]");
    assert_error(&src, 7, 16, "cannot appear in a Kafka topic name");
    let long = "x".repeat(250);
    let src = GOOD_RULE.replace("topics: [t]", &format!("topics: [{long}]"));
    assert_error(&src, 7, 16, "at most 249 characters");
    let src = GOOD_RULE.replace("name: r", "name: \"my rule\"");
    assert_error(&src, 2, 11, "contains ' '");
    let src = GOOD_RULE.replace(
        "principals: [alice]",
        "principals: [alice]\n      networks: [10.0.0.1/8, 300.1.1.1, fd00::/8, \"fd00::/200\"]",
    );
    assert_error(&src, 6, 18, "has host bits set: did you mean `10.0.0.0/8`");
    assert_error(&src, 6, 30, "`300.1.1.1` is not an IP address");
    assert_error(&src, 6, 51, "not a CIDR block");
    assert_eq!(errors(&src).len(), 3);
    let src = GOOD_RULE.replace("principals: [alice]", "principals: [\"svc-*\"]");
    assert_error(&src, 5, 20, "principals and groups are exact names");
    let src = GOOD_RULE.replace("principals: [alice]", "groups: [\"*\"]");
    assert_error(&src, 5, 16, "use `principals: [\"*\"]`");
    let src = GOOD_RULE.replace("principals: [alice]", "client_ids: [app]");
    assert_error(&src, 5, 7, "names no principals and no groups");
}

#[test]
fn yaml_problems_have_positions() {
    assert_error(
        "rules:\n  - name: a\n    name: b\n",
        3,
        5,
        "duplicate key `name` (first at line 2, column 5)",
    );
    assert_error("rules: [\n", 2, 1, "YAML syntax");
    assert_error("base: &b {principals: [a]}\nrules: *b\n", 1, 10, "anchors");
    assert_error("base: &b {principals: [a]}\nrules: *b\n", 2, 8, "aliases");
}

#[test]
fn blocking_rule_errors() {
    assert_error(
        "blocking:\n  - name: b\n    topics: [t]\n",
        2,
        5,
        "blocking rule does nothing",
    );
    assert_error(
        "blocking:\n  - name: b\n    topics: [t]\n    max_record_bytes: 0\n",
        4,
        23,
        "at least 1 byte",
    );
    assert_error(
        "blocking:\n  - name: b\n    topics: [t]\n    max_record_bytes: 3 parsecs\n",
        4,
        23,
        "unknown unit `parsecs`",
    );
    assert_error(
        "blocking:\n  - name: b\n    topics: [t]\n    max_batch_bytes: 4 GiB\n",
        4,
        22,
        "above Kafka's largest size",
    );
    assert_error(
        "blocking:\n  - name: b\n    topics: [t]\n    immutable: yes\n",
        4,
        16,
        "`immutable` must be true or false",
    );
    let src = "\
blocking:
  - name: b
    topics: [t]
    forbidden_content:
      - name: keys
        patterns: [\"\", AKIA]
        in: [value, body]
      - name: keys
        patterns: [x]
";
    assert_error(src, 6, 20, "empty pattern");
    assert_error(src, 7, 21, "unknown place `body`");
    assert_error(
        src,
        8,
        15,
        "`keys` is already the name of an entry of this rule (line 5)",
    );
}

#[test]
fn duplicate_names_across_files_report_both_places() {
    let files = [
        (PathBuf::from("a.yaml"), GOOD_RULE.to_string()),
        (
            PathBuf::from("b.yaml"),
            format!("\n\n{}", GOOD_RULE.replace("[alice]", "[bob]")),
        ),
    ];
    let errs = PolicySet::from_files(&files).unwrap_err().0;
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "a.yaml:2:5: rule name `r` is used again at b.yaml:4"
    );
    assert_eq!(
        errs[1].to_string(),
        "b.yaml:4:5: rule name `r` is already used at a.yaml:2"
    );
}

#[test]
fn exact_duplicates_and_shadowed_allows() {
    let src = format!(
        "{GOOD_RULE}{}",
        &GOOD_RULE["rules:\n".len()..].replace("name: r", "name: r2")
    );
    assert_error(&src, 9, 5, "rule `r2` repeats rule `r` (t.yaml:2)");
    let src = "\
rules:
  - name: no-contractors
    effect: deny
    subjects: {groups: [contractors], principals: [\"*\"]}
    resources: {topics: [\"pii.*\", \"x\"]}
    operations: [consume, describe]
  - name: alice-pii
    effect: allow
    subjects: {principals: [alice], client_ids: [app]}
    resources: {topics: [pii.customers, \"pii.eu.*\"]}
    operations: [consume]
  - name: anon-pii
    effect: allow
    subjects: {principals: [ANONYMOUS]}
    resources: {topics: [pii.customers]}
    operations: [consume]
";
    let errs = errors(src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "t.yaml:7:5: allow rule `alice-pii` can never take effect: deny rule `no-contractors` \
         (t.yaml:2) covers all of its subjects, resources and operations"
    );
}

#[test]
fn duplicates_are_found_whatever_the_list_order_and_spelling() {
    let src = "\
rules:
  - name: a
    effect: deny
    subjects: {groups: [x, y], networks: [10.0.0.0/8, 192.168.0.0/16]}
    resources: {topics: [\"t.*\", u]}
    operations: [consume, describe]
  - name: b
    effect: deny
    subjects: {groups: [y, x], networks: [192.168.0.0/16, 10.0.0.0/8]}
    resources: {topics: [u, \"t.**\"]}
    operations: [describe, consume]
  - name: c
    effect: deny
    subjects: {groups: [y, x], networks: [192.168.0.0/16, 10.0.0.0/8]}
    resources: {topics: [u, \"t.**\"]}
    operations: [describe]
";
    let errs = errors(src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (7, 5));
    assert!(errs[0].message.contains("rule `b` repeats rule `a`"));
}

#[test]
fn not_provably_shadowed_is_not_reported() {
    let src = "\
rules:
  - name: d
    effect: deny
    subjects: {groups: [contractors], networks: [10.0.0.0/8]}
    resources: {topics: [\"pii.*\"]}
    operations: [consume]
  - name: wider-net
    effect: allow
    subjects: {groups: [contractors], networks: [0.0.0.0/0]}
    resources: {topics: [pii.a]}
    operations: [consume]
  - name: more-ops
    effect: allow
    subjects: {groups: [contractors]}
    resources: {topics: [pii.a]}
    operations: [consume, describe]
  - name: other-group
    effect: allow
    subjects: {groups: [contractors, staff]}
    resources: {topics: [pii.a]}
    operations: [consume]
";
    let set = load(src).unwrap();
    assert_eq!(set.rule_count(), 4);
}

#[test]
fn approve_shadows_allow_and_deny_shadows_approve() {
    let src = "\
rules:
  - name: needs-approval
    effect: approve
    subjects: {groups: [ops]}
    resources: {topics: [\"*\"]}
    operations: [delete]
  - name: ops-delete
    effect: allow
    subjects: {groups: [ops]}
    resources: {topics: [tmp.x]}
    operations: [delete]
";
    assert_error(
        src,
        7,
        5,
        "allow rule `ops-delete` can never take effect: approve rule `needs-approval`",
    );
}

#[test]
fn all_errors_are_reported_not_just_the_first() {
    let src = "\
rules:
  - name: a
    effect: maybe
    subjects: {principals: [x]}
    resources: {topics: [\"[\"]}
    operations: [fly]
  - name: b b
    effect: allow
";
    let errs = errors(src);
    let places: Vec<_> = errs.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        places,
        vec![(3, 13), (5, 26), (6, 18), (7, 5), (7, 5), (7, 5), (7, 11)],
        "{errs:?}"
    );
}

#[test]
fn size_limits_on_files_and_rules() {
    let huge = format!("# {}\n", "x".repeat(crate::policy::MAX_FILE_BYTES));
    assert_error(&huge, 1, 1, "larger than");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.yaml"), &huge).unwrap();
    let errs = PolicySet::load_dir(dir.path()).unwrap_err().0;
    assert_eq!(
        errs[0].to_string(),
        format!(
            "big.yaml:1:1: larger than {} bytes",
            crate::policy::MAX_FILE_BYTES
        )
    );

    let half = crate::policy::MAX_RULES / 2 + 1;
    let many = |prefix: &str| {
        let mut text = String::from("blocking:\n");
        for i in 0..half {
            text.push_str(&format!(
                "  - {{name: {prefix}{i}, topics: [t], immutable: true}}\n"
            ));
        }
        text
    };
    let files = [
        (PathBuf::from("a.yaml"), many("a")),
        (PathBuf::from("b.yaml"), many("b")),
    ];
    let errs = PolicySet::from_files(&files).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{:?}", &errs[..errs.len().min(3)]);
    assert!(
        errs[0].message.contains("more than 10000 rules"),
        "{}",
        errs[0]
    );
    // b.yaml's entries start on line 2; the budget ends after 10000 - half of them.
    assert_eq!(
        (errs[0].file.to_str(), errs[0].line),
        (Some("b.yaml"), crate::policy::MAX_RULES - half + 2)
    );
}

#[test]
fn directory_reading() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("a.yaml"), GOOD_RULE).unwrap();
    std::fs::write(p.join("README.md"), "rules: nonsense").unwrap();
    std::fs::write(p.join(".hidden.yaml"), "rules: nonsense").unwrap();
    std::fs::create_dir(p.join("sub.yml")).unwrap();
    let set = PolicySet::load_dir(p).unwrap();
    assert_eq!((set.file_count(), set.rule_count()), (1, 1));

    std::fs::write(p.join("bad.yml"), [0xff, 0xfe, b'\n']).unwrap();
    let errs = PolicySet::load_dir(p).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].file.to_str(), errs[0].line), (Some("bad.yml"), 1));
    assert!(errs[0].message.contains("not UTF-8"));

    let missing = PolicySet::load_dir(&p.join("nope")).unwrap_err().0;
    assert!(missing[0]
        .message
        .contains("cannot read the policy directory"));
}

#[test]
fn an_empty_directory_denies_everything_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let set = PolicySet::load_dir(dir.path()).unwrap();
    assert_eq!(set.rule_count(), 0);
    assert!(set
        .warnings()
        .iter()
        .any(|w| w.message.contains("every request is denied")));
    let set = load("# only a comment\n").unwrap();
    assert_eq!(set.warnings().len(), 2, "{:?}", set.warnings());
    assert!(set.version().starts_with("sha256:"));
}

#[test]
fn duplicates_in_lists_are_warnings() {
    let src = GOOD_RULE.replace("[produce]", "[produce, describe, produce]");
    let set = load(&src).unwrap();
    let w = &set.warnings()[0];
    assert_eq!((w.line, w.column), (8, 37));
    assert!(w.message.contains("`produce` is listed twice"));
}

#[test]
fn check_report_text_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        GOOD_RULE.replace("allow", "alow"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "").unwrap();
    let (text, ok) = crate::policy::cli::check(dir.path());
    assert!(!ok);
    assert!(
        text.starts_with("a.yaml:3:13: unknown effect `alow`"),
        "{text}"
    );
    assert!(text.contains("ignored: notes.txt"), "{text}");
    assert!(text.contains("invalid, 1 error(s)"), "{text}");
    std::fs::write(dir.path().join("a.yaml"), GOOD_RULE).unwrap();
    let (text, ok) = crate::policy::cli::check(dir.path());
    assert!(ok, "{text}");
    assert!(
        text.contains("valid, version sha256:") && text.contains("1 file(s), 1 rule(s)"),
        "{text}"
    );
}
