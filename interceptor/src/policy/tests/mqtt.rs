//! MQTT rules: the schema's checks with positions, publish/retain decisions, and how a
//! subscription filter is decided by what it could receive.

use super::{assert_error, load, Who};
use crate::{
    mqtt::topic::TopicFilter,
    policy::{Check, Operation, Resource, SubscribeDecision},
};

const RULES: &str = "\
rules:
  - name: read-a
    effect: allow
    subjects: {groups: [g]}
    resources: {mqtt_topics: [\"a/#\"]}
    operations: [subscribe]
  - name: read-b-one-level
    effect: allow
    subjects: {groups: [g]}
    resources: {mqtt_topics: [\"b/+\"]}
    operations: [subscribe]
  - name: no-a-secret
    effect: deny
    subjects: {groups: [g]}
    resources: {mqtt_topics: [\"a/secret/#\"]}
    operations: [subscribe]
  - name: sys
    effect: allow
    subjects: {groups: [admins]}
    resources: {mqtt_topics: [\"$SYS/#\", \"#\"]}
    operations: [subscribe, publish]
";

fn outcome(d: SubscribeDecision) -> (&'static str, String) {
    match d {
        SubscribeDecision::Granted { rule } => ("granted", rule.name.to_string()),
        SubscribeDecision::Narrowed { allow, .. } => ("narrowed", allow.name.to_string()),
        SubscribeDecision::Denied(d) => (
            "denied",
            d.rule.map(|r| r.name.to_string()).unwrap_or_default(),
        ),
    }
}

#[test]
fn subscriptions_are_decided_by_what_they_could_receive() {
    let set = load(RULES).unwrap();
    let g = Who::new("p", &["g"]);
    let admin = Who::new("root", &["admins"]);
    let cases: &[(&Who, &str, &str, &str)] = &[
        (&g, "a/b", "granted", "read-a"),
        (&g, "a/+/c", "narrowed", "read-a"), // reaches a/secret/c
        (&g, "a/#", "narrowed", "read-a"),
        (&g, "a/public/#", "granted", "read-a"),
        (&g, "a/secret/#", "denied", "no-a-secret"),
        (&g, "a/secret/x", "denied", "no-a-secret"),
        (&g, "b/x", "granted", "read-b-one-level"),
        (&g, "b/+", "granted", "read-b-one-level"),
        (&g, "b/#", "narrowed", "read-b-one-level"), // b and b/x/y are not readable
        (&g, "#", "narrowed", "read-a"),
        (&g, "+/x", "narrowed", "read-a"),
        (&g, "c/#", "denied", ""),
        (&g, "$SYS/#", "denied", ""),
        (&admin, "#", "granted", "sys"),
        (&admin, "$SYS/broker/load", "granted", "sys"),
    ];
    for (who, filter, want, rule) in cases {
        let f = TopicFilter::parse(filter).unwrap();
        let got = outcome(set.decide_subscribe(&who.subject(), &f));
        assert_eq!(
            got,
            (*want, rule.to_string()),
            "{} subscribes {filter}",
            who.principal
        );
    }
    // Deliveries are decided per topic: `#` (narrowed) gets a/x, never a/secret/x or $SYS.
    let d = |who: &Who, topic| {
        set.decide(
            &who.subject(),
            Operation::Subscribe,
            Resource::mqtt_topic(topic),
        )
        .check
    };
    assert_eq!(d(&g, "a/x"), Check::Allowed);
    assert_eq!(d(&g, "a/secret/x"), Check::Denied);
    assert_eq!(d(&admin, "$SYS/x"), Check::Allowed);
    // A `#` rule alone does not reach $SYS topics.
    let set = load(
        "rules:\n  - name: all\n    effect: allow\n    subjects: {groups: [g]}\n    resources: {mqtt_topics: [\"#\"]}\n    operations: [publish]\n",
    )
    .unwrap();
    let d = |topic| {
        set.decide(
            &g.subject(),
            Operation::Publish,
            Resource::mqtt_topic(topic),
        )
        .check
    };
    assert_eq!(d("x/y"), Check::Allowed);
    assert_eq!(d("$SYS/x"), Check::Denied);
}

#[test]
fn mqtt_rules_are_checked_with_positions() {
    assert_error(
        "rules:\n  - name: r\n    effect: allow\n    subjects: {groups: [g]}\n    resources:\n      mqtt_topics: [\"a/#/b\"]\n    operations: [publish]\n",
        6,
        21,
        "`a/#/b` is not an MQTT topic filter",
    );
    assert_error(
        "rules:\n  - name: r\n    effect: allow\n    subjects: {groups: [g]}\n    resources:\n      topics: [t]\n    operations: [publish]\n",
        7,
        18,
        "operation `publish` applies to none of this rule's resources",
    );
    assert_error(
        "rules:\n  - name: r\n    effect: allow\n    subjects: {groups: [g]}\n    resources:\n      mqtt_topics: [t]\n    operations: [produce]\n",
        7,
        18,
        "operation `produce` applies to none of this rule's resources",
    );
    assert_error(
        "blocking:\n  - name: b\n    mqtt_topics: [\"a/#\"]\n    immutable: true\n",
        2,
        5,
        "`immutable` is about Kafka topics",
    );
    assert_error(
        "blocking:\n  - name: b\n    max_record_bytes: 10\n",
        2,
        5,
        "a blocking rule needs `topics` (Kafka) or `mqtt_topics` (MQTT)",
    );
}

#[test]
fn blocking_rules_limit_mqtt_payloads() {
    let set = load(
        "blocking:\n  - name: small\n    mqtt_topics: [\"telemetry/#\"]\n    max_record_bytes: 100\n    forbidden_content:\n      - name: keys\n        patterns: [\"PRIVATE KEY\"]\n",
    )
    .unwrap();
    let limits = set.mqtt_limits("telemetry/1");
    assert_eq!(limits.max_record_bytes.map(|(n, _)| n), Some(100));
    assert_eq!(limits.content.len(), 1);
    assert!(set.mqtt_limits("other").is_empty());
    // Kafka topics of the same name are not limited by an MQTT rule.
    assert!(set.topic_limits("telemetry/1").is_empty());
}
