//! A table of decisions: deny wins, globs, prefixes, groups, client ids, networks, approve,
//! immutable topics, default deny.

use super::{load, Who};
use crate::policy::{Check, Effect, Operation, PolicySet, Resource};

const POLICY: &str = r#"
rules:
  - name: team-write
    effect: allow
    subjects: {groups: [payments]}
    resources: {topics: ["payments.*"], transactional_ids: ["pay-?"]}
    operations: [produce, describe, transactions]
  - name: contractors-deny
    effect: deny
    subjects: {groups: [contractors]}
    resources: {topics: ["*.pii", "payments.cards"]}
    operations: [produce, consume, describe]
  - name: app-client-only
    effect: allow
    subjects: {principals: [svc-app], client_ids: ["app-[0-9]*"]}
    resources: {topics: [orders], groups: ["app-*"]}
    operations: [consume, commit]
  - name: office-net
    effect: allow
    subjects: {principals: ["*"], networks: [192.168.0.0/16, "2001:db8::/32"]}
    resources: {topics: [public]}
    operations: [consume]
  - name: anonymous-health
    effect: allow
    subjects: {principals: [ANONYMOUS]}
    resources: {topics: [health]}
    operations: [describe]
  - name: topic-delete-needs-approval
    effect: approve
    subjects: {groups: [payments]}
    resources: {topics: ["payments.archive.*"]}
    operations: [delete]
  - name: team-admin
    effect: allow
    subjects: {groups: [payments]}
    resources: {topics: ["payments.*"]}
    operations: [delete, alter-configs, delete-records]
  - name: ops-cluster
    effect: allow
    subjects: {groups: [ops]}
    resources: {cluster: true}
    operations: ["*"]
blocking:
  - name: ledger-immutable
    topics: [payments.ledger]
    immutable: true
"#;

fn set() -> PolicySet {
    load(POLICY).unwrap()
}

#[track_caller]
fn expect(
    set: &PolicySet,
    who: &Who,
    op: Operation,
    res: Resource<'_>,
    check: Check,
    rule: Option<&str>,
) {
    let d = set.decide(&who.subject(), op, res);
    assert_eq!(
        (d.check, d.rule.as_ref().map(|r| &*r.name)),
        (check, rule),
        "{} {op} {res}",
        who.principal
    );
}

#[test]
fn decision_table() {
    use Check::*;
    use Operation::*;
    let s = set();
    let payer = Who::new("bob", &["payments"]);
    let contractor = Who::new("carl", &["payments", "contractors"]);
    let ops = Who::new("o", &["ops"]);
    let nobody = Who::new("nobody", &[]);
    let t = Resource::topic;
    let cases: Vec<(&Who, Operation, Resource<'_>, Check, Option<&str>)> = vec![
        // Prefix globs.
        (
            &payer,
            Produce,
            t("payments.eu"),
            Allowed,
            Some("team-write"),
        ),
        (&payer, Produce, t("payments"), Denied, None),
        (&payer, Consume, t("payments.eu"), Denied, None),
        // Deny wins over allow, whatever the order in the file.
        (
            &contractor,
            Produce,
            t("payments.cards"),
            Denied,
            Some("contractors-deny"),
        ),
        (
            &contractor,
            Produce,
            t("payments.eu"),
            Allowed,
            Some("team-write"),
        ),
        (
            &contractor,
            Describe,
            t("payments.pii"),
            Denied,
            Some("contractors-deny"),
        ),
        // `?` globs on transactional ids.
        (
            &payer,
            Transactions,
            Resource::transactional_id("pay-1"),
            Allowed,
            Some("team-write"),
        ),
        (
            &payer,
            Transactions,
            Resource::transactional_id("pay-12"),
            Denied,
            None,
        ),
        // Approve refuses (for now), and ranks before allow.
        (
            &payer,
            Delete,
            t("payments.archive.2020"),
            Denied,
            Some("topic-delete-needs-approval"),
        ),
        (
            &payer,
            Delete,
            t("payments.tmp"),
            Allowed,
            Some("team-admin"),
        ),
        // Immutable topics: allowed by access rules, refused by the blocking rule.
        (
            &payer,
            Delete,
            t("payments.ledger"),
            Violation,
            Some("ledger-immutable"),
        ),
        (
            &payer,
            DeleteRecords,
            t("payments.ledger"),
            Violation,
            Some("ledger-immutable"),
        ),
        (
            &payer,
            AlterConfigs,
            t("payments.ledger"),
            Violation,
            Some("ledger-immutable"),
        ),
        (
            &payer,
            Produce,
            t("payments.ledger"),
            Allowed,
            Some("team-write"),
        ),
        // Operations only match resources they apply to.
        (
            &payer,
            Produce,
            Resource::group("payments.eu"),
            Denied,
            None,
        ),
        // The cluster, with `*` operations (but never cluster-action).
        (
            &ops,
            AlterConfigs,
            Resource::cluster(),
            Allowed,
            Some("ops-cluster"),
        ),
        (
            &ops,
            IdempotentWrite,
            Resource::cluster(),
            Allowed,
            Some("ops-cluster"),
        ),
        (&ops, ClusterAction, Resource::cluster(), Denied, None),
        // Default deny.
        (&nobody, Describe, t("anything"), Denied, None),
    ];
    for (who, op, res, check, rule) in cases {
        expect(&s, who, op, res, check, rule);
    }
}

#[test]
fn client_ids_narrow_and_a_missing_client_id_never_matches() {
    let s = set();
    let app = Who::new("svc-app", &[]);
    expect(
        &s,
        &app.client("app-1"),
        Operation::Consume,
        Resource::topic("orders"),
        Check::Allowed,
        Some("app-client-only"),
    );
    let app = Who::new("svc-app", &[]);
    expect(
        &s,
        &app.client("app-x"),
        Operation::Consume,
        Resource::topic("orders"),
        Check::Denied,
        None,
    );
    let app = Who::new("svc-app", &[]);
    expect(
        &s,
        &app,
        Operation::Consume,
        Resource::topic("orders"),
        Check::Denied,
        None,
    );
    let other = Who::new("mallory", &[]).client("app-1");
    expect(
        &s,
        &other,
        Operation::Commit,
        Resource::group("app-x"),
        Check::Denied,
        None,
    );
}

#[test]
fn networks_v4_v6_and_mapped() {
    let s = set();
    let public = Resource::topic("public");
    for (ip, allowed) in [
        ("192.168.4.5", true),
        ("::ffff:192.168.4.5", true),
        ("2001:db8::1", true),
        ("192.169.0.1", false),
        ("2001:db9::1", false),
        ("10.0.0.1", false),
    ] {
        let who = Who::new("alice", &[]).from(ip);
        let d = s.decide(&who.subject(), Operation::Consume, public);
        assert_eq!(d.check.is_allowed(), allowed, "{ip}");
    }
}

#[test]
fn anonymous_is_only_what_names_it() {
    let s = set();
    let anon = Who::new("ANONYMOUS", &[]).from("192.168.1.1");
    expect(
        &s,
        &anon,
        Operation::Describe,
        Resource::topic("health"),
        Check::Allowed,
        Some("anonymous-health"),
    );
    // `principals: ["*"]` is every authenticated principal, not the anonymous one.
    expect(
        &s,
        &anon,
        Operation::Consume,
        Resource::topic("public"),
        Check::Denied,
        None,
    );
    // Groups claimed for an anonymous session are ignored.
    let anon = Who::new("ANONYMOUS", &["payments"]);
    expect(
        &s,
        &anon,
        Operation::Produce,
        Resource::topic("payments.x"),
        Check::Denied,
        None,
    );
}

#[test]
fn decision_carries_effect_and_place() {
    let s = set();
    let who = Who::new("carl", &["contractors"]);
    let d = s.decide(&who.subject(), Operation::Produce, Resource::topic("x.pii"));
    assert_eq!(d.effect, Some(Effect::Deny));
    let rule = d.rule.unwrap();
    assert_eq!(rule.to_string(), "contractors-deny (t.yaml:8)");
    let d = s.decide(
        &Who::new("bob", &["payments"]).subject(),
        Operation::Delete,
        Resource::topic("payments.archive.x"),
    );
    assert_eq!((d.check, d.effect), (Check::Denied, Some(Effect::Approve)));
    let d = s.decide(
        &who.subject(),
        Operation::Produce,
        Resource::topic("nothing"),
    );
    assert_eq!((d.check, d.effect, d.rule), (Check::Denied, None, None));
}

#[test]
fn explain_lists_every_matching_rule() {
    let s = set();
    let who = Who::new("carl", &["payments", "contractors"]);
    let e = s.explain(
        &who.subject(),
        Operation::Produce,
        Resource::topic("payments.cards"),
    );
    let text = e.to_string();
    assert!(
        text.contains("decision: DENIED by contractors-deny (t.yaml:8)"),
        "{text}"
    );
    assert!(
        text.contains("deny    contractors-deny (t.yaml:8)"),
        "{text}"
    );
    assert!(text.contains("allow   team-write (t.yaml:3)"), "{text}");
    assert_eq!(e.matched.len(), 2);
    let payer = Who::new("bob", &["payments"]);
    let text = s
        .explain(
            &payer.subject(),
            Operation::Delete,
            Resource::topic("payments.ledger"),
        )
        .to_string();
    assert!(
        text.contains("POLICY_VIOLATION") && text.contains("ledger-immutable"),
        "{text}"
    );
    let text = s
        .explain(&payer.subject(), Operation::Consume, Resource::topic("zzz"))
        .to_string();
    assert!(
        text.contains("no rule matched (default deny)") && text.contains("matching rules: none"),
        "{text}"
    );
}

#[test]
fn the_empty_set_denies_everything() {
    let s = PolicySet::empty();
    assert_eq!(s.version(), "empty");
    let who = Who::new("root", &["ops"]);
    for op in Operation::ALL {
        for r in [
            Resource::topic("t"),
            Resource::group("g"),
            Resource::transactional_id("x"),
            Resource::cluster(),
        ] {
            assert_eq!(s.decide(&who.subject(), op, r).check, Check::Denied);
        }
    }
}

#[test]
fn topic_limits_merge_with_the_smallest_limit_winning() {
    let s = load(
        r#"
rules:
  - name: r
    effect: allow
    subjects: {principals: [a]}
    resources: {topics: ["*"]}
    operations: [produce]
blocking:
  - name: all
    topics: ["*"]
    max_record_bytes: 1 MiB
    max_batch_bytes: 1000000
  - name: small
    topics: ["small.*"]
    max_record_bytes: 1KiB
    max_batch_bytes: 2 MB
  - name: secrets
    topics: ["*"]
    forbidden_content:
      - name: aws
        patterns: [AKIA]
        in: [value]
      - name: pem
        patterns: ["begin rsa private key"]
        case_insensitive: true
"#,
    )
    .unwrap();
    let l = s.topic_limits("small.x");
    let (rec, rec_rule) = l.max_record_bytes.clone().unwrap();
    assert_eq!((rec, &*rec_rule.name), (1024, "small"));
    let (batch, batch_rule) = l.max_batch_bytes.clone().unwrap();
    assert_eq!((batch, &*batch_rule.name), (1_000_000, "all"));
    assert_eq!(l.content.len(), 2);
    let aws = &l.content[0];
    assert_eq!((&*aws.rule.name, &*aws.name), ("secrets", "aws"));
    assert!(!aws.in_key && aws.in_value && !aws.in_headers);
    assert!(aws.matches(b"key=AKIAIOSFODNN7EXAMPLE"));
    assert!(!aws.matches(b"key=akiaiosfodnn7example"));
    let pem = &l.content[1];
    assert!(pem.in_key && pem.in_value && pem.in_headers);
    assert!(pem.matches(b"-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(
        pem.find(b"xx Begin RSA Private Key"),
        Some("begin rsa private key")
    );
    assert!(l.immutable.is_none());
    let big = s.topic_limits("big");
    assert_eq!(big.max_record_bytes.as_ref().unwrap().0, 1 << 20);
    assert!(!big.is_empty());
    let none = load("rules:\n  - {name: r, effect: allow, subjects: {principals: [a]}, resources: {topics: [t]}, operations: [produce]}\n").unwrap();
    assert!(none.topic_limits("t").is_empty());
}
