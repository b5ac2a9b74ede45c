//! The documented example directory `policies/` loads cleanly and decides as its comments say.

use std::path::PathBuf;

use super::Who;
use crate::policy::{cli, Check, Operation, PolicySet, Resource};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

#[track_caller]
fn decides(
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
fn the_examples_load_without_warnings() {
    let set = PolicySet::load_dir(&dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.warnings().is_empty(), "{:?}", set.warnings());
    assert_eq!(set.file_count(), 5);
    let (report, ok) = cli::check(&dir());
    assert!(ok, "{report}");
    assert!(report.contains("ignored: README.md"), "{report}");
}

#[test]
fn the_examples_decide_as_documented() {
    use Check::*;
    use Operation::*;
    let set = PolicySet::load_dir(&dir()).unwrap();
    let t = Resource::topic;
    let svc = Who::new("svc-payments", &[]);
    decides(
        &set,
        &svc,
        Produce,
        t("payments.eu"),
        Allowed,
        Some("payments-produce"),
    );
    decides(
        &set,
        &svc,
        Transactions,
        Resource::transactional_id("payments-eu-1"),
        Allowed,
        Some("payments-produce"),
    );
    decides(&set, &svc, Produce, t("orders.eu"), Denied, None);
    decides(
        &set,
        &svc,
        IdempotentWrite,
        Resource::cluster(),
        Allowed,
        Some("idempotent-producers"),
    );

    let analyst = Who::new("ann", &["analysts"]).client("analytics-daily");
    decides(
        &set,
        &analyst,
        Consume,
        t("customers.emails"),
        Allowed,
        Some("analysts-read"),
    );
    decides(&set, &analyst, Produce, t("payments.eu"), Denied, None);
    let notebook = Who::new("ann", &["analysts"]).client("notebook-7");
    decides(
        &set,
        &notebook,
        Consume,
        t("orders.eu"),
        Allowed,
        Some("analysts-read"),
    );
    let other_client = Who::new("ann", &["analysts"]).client("kcat");
    decides(&set, &other_client, Consume, t("orders.eu"), Denied, None);

    let contractor = Who::new("cora", &["analysts", "contractors"]).client("analytics-x");
    decides(
        &set,
        &contractor,
        Consume,
        t("customers.emails"),
        Denied,
        Some("contractors-no-pii"),
    );
    decides(
        &set,
        &contractor,
        Describe,
        t("crm.pii"),
        Denied,
        Some("contractors-no-pii"),
    );
    decides(
        &set,
        &contractor,
        Consume,
        t("orders.eu"),
        Allowed,
        Some("analysts-read"),
    );

    let ops = Who::new("oscar", &["platform-ops"]).from("10.10.3.4");
    decides(&set, &ops, Delete, t("scratch"), Allowed, Some("ops-admin"));
    decides(
        &set,
        &ops,
        Delete,
        t("audit.log"),
        Violation,
        Some("audit-immutable"),
    );
    decides(
        &set,
        &ops,
        Alter,
        t("audit.log"),
        Violation,
        Some("audit-immutable"),
    );
    decides(&set, &ops, ClusterAction, Resource::cluster(), Denied, None);
    let ops_from_wifi = Who::new("oscar", &["platform-ops"]).from("172.16.0.9");
    decides(&set, &ops_from_wifi, Delete, t("scratch"), Denied, None);

    let payer = Who::new("pat", &["payments-team"]);
    decides(
        &set,
        &payer,
        Delete,
        t("payments.eu"),
        Denied,
        Some("payments-topic-deletion"),
    );
    decides(
        &set,
        &Who::new("ANONYMOUS", &[]),
        IdempotentWrite,
        Resource::cluster(),
        Denied,
        None,
    );
}

#[test]
fn the_example_blocking_rules() {
    let set = PolicySet::load_dir(&dir()).unwrap();
    let l = set.topic_limits("payments.eu");
    assert_eq!(
        l.max_record_bytes.as_ref().map(|(n, r)| (*n, &*r.name)),
        Some((64 << 10, "payments-size-limits"))
    );
    assert_eq!(l.max_batch_bytes.as_ref().map(|(n, _)| *n), Some(4 << 20));
    let secrets: Vec<_> = l.content.iter().map(|c| &*c.name).collect();
    assert_eq!(secrets, ["private-keys", "aws-access-keys"]);
    assert!(l.content[0].matches(b"x\n-----BEGIN RSA PRIVATE KEY-----\nMIIE"));
    assert!(l.content[1].matches(b"{\"key\":\"AKIAIOSFODNN7EXAMPLE\"}"));
    assert!(!l.content[1].in_key);
    assert!(set.topic_limits("audit.log").immutable.is_some());
    assert!(set.topic_limits("payments.eu").immutable.is_none());
}

#[test]
fn explain_on_the_examples() {
    let text = cli::explain(
        &dir(),
        "cora",
        &["analysts".to_string(), "contractors".to_string()],
        Some("analytics-x"),
        "10.0.0.1".parse().unwrap(),
        Operation::Consume,
        Resource::topic("customers.emails"),
    )
    .unwrap();
    assert!(
        text.contains("DENIED by contractors-no-pii (30-pii.yaml:"),
        "{text}"
    );
    assert!(
        text.contains("allow   analysts-read (20-analytics.yaml:5)"),
        "{text}"
    );
    let text = cli::explain(
        &dir(),
        "x",
        &[],
        None,
        "10.0.0.1".parse().unwrap(),
        Operation::Commit,
        Resource::topic("t"),
    )
    .unwrap();
    assert!(text.contains("never applies to a topic"), "{text}");
}
