//! The documented example directory `policies/` loads cleanly and decides as its comments say.

use std::path::PathBuf;

use super::Who;
use crate::{
    mask::{Action, Detector, Payload},
    policy::{cli, Check, MaskStage, MaskingRule, Operation, PolicySet, Resource, RevealRefusal},
};

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
    assert_eq!(set.file_count(), 7);
    let (report, ok) = cli::check(&dir());
    assert!(ok, "{report}");
    assert!(report.contains("ignored: README.md"), "{report}");
}

#[test]
fn the_mqtt_example_decides_as_documented() {
    use crate::{mqtt::topic::TopicFilter, policy::SubscribeDecision};
    use Check::*;
    use Operation::*;
    let set = PolicySet::load_dir(&dir()).unwrap();
    let m = Resource::mqtt_topic;
    let sensor = Who::new("sensor-7", &["sensors"]);
    let operator = Who::new("ops-1", &["operators"]);
    let contractor = Who::new("c-1", &["contractors"]);
    let rule = Some("sensors-publish-telemetry");
    decides(
        &set,
        &sensor,
        Publish,
        m("sensors/7/telemetry"),
        Allowed,
        rule,
    );
    decides(
        &set,
        &sensor,
        Publish,
        m("sensors/7/x/telemetry"),
        Denied,
        None,
    );
    decides(
        &set,
        &sensor,
        Retain,
        m("sensors/7/telemetry"),
        Denied,
        None,
    );
    decides(&set, &sensor, Publish, m("commands/all"), Denied, None);
    let rule = Some("operators-watch-and-command");
    decides(
        &set,
        &operator,
        Retain,
        m("commands/7/reboot"),
        Allowed,
        rule,
    );
    decides(
        &set,
        &contractor,
        Subscribe,
        m("sensors/7/telemetry"),
        Allowed,
        Some("contractors-read-sensors"),
    );
    decides(
        &set,
        &contractor,
        Subscribe,
        m("sensors/7/location"),
        Denied,
        Some("contractors-no-location"),
    );
    let f = |s: &str| TopicFilter::parse(s).unwrap();
    let sub = |who: &Who, filter: &str| set.decide_subscribe(&who.subject(), &f(filter));
    assert!(matches!(
        sub(&operator, "sensors/#"),
        SubscribeDecision::Granted { .. }
    ));
    assert!(matches!(
        sub(&contractor, "sensors/#"),
        SubscribeDecision::Narrowed {
            denied_by: Some(_),
            ..
        }
    ));
    assert!(matches!(
        sub(&contractor, "sensors/+/location"),
        SubscribeDecision::Denied(_)
    ));
    assert!(matches!(
        sub(&contractor, "#"),
        SubscribeDecision::Narrowed { .. }
    ));
    assert!(matches!(
        sub(&operator, "$SYS/#"),
        SubscribeDecision::Denied(_)
    ));
    // Masking: produce rule on payments/#, revealed to the ledger.
    assert_eq!(set.publish_masking("payments/pos/17").len(), 1);
    assert!(set.publish_masking("sensors/7/telemetry").is_empty());
    let ledger = Who::new("ledger", &["ledger"]);
    assert_eq!(
        set.delivery_masking("payments/pos/17", &ledger.subject())
            .reveal
            .len(),
        1
    );
    assert!(set
        .delivery_masking("payments/pos/17", &operator.subject())
        .is_empty());
    // Kafka rules never match MQTT topics, nor MQTT rules Kafka topics.
    decides(
        &set,
        &operator,
        Consume,
        Resource::topic("sensors/7/telemetry"),
        Denied,
        None,
    );
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

fn names(rules: &[std::sync::Arc<MaskingRule>]) -> Vec<&str> {
    rules.iter().map(|r| &*r.at.name).collect()
}

#[test]
fn the_example_masking_rules() {
    let set = PolicySet::load_dir(&dir()).unwrap();
    // Card numbers are tokenized on produce, for every producer, on every payments topic.
    assert_eq!(
        names(&set.produce_masking("payments.cards")),
        ["card-numbers"]
    );
    assert_eq!(names(&set.produce_masking("payments.eu")), ["card-numbers"]);
    assert!(set.produce_masking("orders.eu").is_empty());
    let cards = &set.produce_masking("payments.cards")[0];
    assert!(cards.tokenizes());
    let spec = cards.rule.spec();
    assert_eq!(spec.fields[0].path, "$.card.number");
    assert_eq!(
        spec.fields[0].action,
        Action::Tokenize {
            format_preserving: true
        }
    );
    assert_eq!(spec.fields[1].action, Action::Hash);
    assert_eq!(spec.detectors[0].detector, Detector::CreditCard);

    // The ledger gets the card numbers back; payments admins may detokenize.
    let ledger = Who::new("svc-ledger", &[]);
    let m = set.fetch_masking("payments.eu", &ledger.subject());
    assert_eq!(
        (names(&m.reveal), names(&m.mask)),
        (vec!["card-numbers"], vec![])
    );
    assert!(set
        .may_reveal(
            "card-numbers",
            &Who::new("pia", &["payments-admins"]).subject()
        )
        .is_ok());
    // Other consumers of payments topics see the tokens.
    let svc = Who::new("svc-payments", &[]);
    assert!(set.fetch_masking("payments.eu", &svc.subject()).is_empty());
    assert!(matches!(
        set.may_reveal("card-numbers", &svc.subject()),
        Err(RevealRefusal::NotRevealed(_))
    ));

    // Analysts: customer fields masked on fetch, on customer and payment topics.
    let analyst = Who::new("ann", &["analysts"]).client("analytics-daily");
    let m = set.fetch_masking("customers.emails", &analyst.subject());
    assert_eq!(
        (names(&m.reveal), names(&m.mask)),
        (vec![], vec!["analysts-customer-view"])
    );
    assert_eq!(m.mask[0].stage, MaskStage::Fetch);
    let m = set.fetch_masking("payments.eu", &analyst.subject());
    assert_eq!(names(&m.mask), ["analysts-customer-view"]);
    assert!(set
        .fetch_masking("orders.eu", &analyst.subject())
        .is_empty());
    assert!(matches!(
        set.may_reveal("analysts-customer-view", &analyst.subject()),
        Err(RevealRefusal::NoTokens(_))
    ));

    // Logs: bytes, value and headers, detectors only.
    let logs = set.produce_masking("logs.app");
    assert_eq!(names(&logs), ["log-secrets"]);
    let spec = logs[0].rule.spec();
    assert_eq!(spec.payload, Payload::Any);
    assert!(spec.parts.value && spec.parts.headers && !spec.parts.key);
    assert!(!logs[0].tokenizes());
}

#[test]
fn explain_shows_the_masking() {
    let explain = |who: &str, groups: &[&str], client: Option<&str>, op, topic| {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        cli::explain(
            &dir(),
            who,
            &groups,
            client,
            "10.0.0.1".parse().unwrap(),
            op,
            Resource::topic(topic),
        )
        .unwrap()
    };
    let text = explain("svc-payments", &[], None, Operation::Produce, "payments.eu");
    assert!(
        text.ends_with(
            "masking before the broker stores the records:\n  \
             mask    card-numbers (35-payments-masking.yaml:5): $.card.number tokenize, \
             $.customer.email hash, detector credit_card tokenize\n"
        ),
        "{text}"
    );
    let text = explain("svc-ledger", &[], None, Operation::Consume, "payments.eu");
    assert!(
        text.contains("masking of the records fetched:\n  reveal  card-numbers ("),
        "{text}"
    );
    let text = explain(
        "ann",
        &["analysts"],
        Some("analytics-1"),
        Operation::Consume,
        "payments.eu",
    );
    assert!(text.contains("  stored  card-numbers ("), "{text}");
    assert!(
        text.contains("  mask    analysts-customer-view (35-payments-masking.yaml:32): "),
        "{text}"
    );
    // A refused request moves no records: no masking is shown.
    let text = explain(
        "ann",
        &["analysts"],
        Some("kcat"),
        Operation::Consume,
        "payments.eu",
    );
    // (The first line names the directory, whose path may say anything.)
    let body = text.split_once('\n').unwrap().1;
    assert!(!body.contains("masking"), "{text}");
}
