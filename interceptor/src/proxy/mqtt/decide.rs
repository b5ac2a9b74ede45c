//! The policy's answers for one MQTT session, each recorded as an audit event before the
//! packet it decides goes anywhere: publish (and retain) on a topic, a subscription filter,
//! and each delivery to this subscriber.

use std::sync::Arc;

use super::Session;
use crate::{
    audit::{AuditEvent, AuditLog},
    mqtt::topic::TopicFilter,
    policy::{
        watch::ActivePolicy, Check, Decision, Operation, Resource, RuleRef, SubscribeDecision,
    },
    proxy::masking::{audit_counts, payload::MaskedPayload},
};

/// `resource_type` of MQTT decisions.
pub(super) const MQTT_TOPIC: &str = "mqtt-topic";

/// The answer for one message.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Allowed, by these rules: recorded by the caller's [`Batch`](super::batch::Batch).
    Allow {
        publish: Option<RuleRef>,
        /// Present for a retained message: the rule allowing `retain`.
        retain: Option<Option<RuleRef>>,
    },
    /// No right (or a deny rule): "not authorized". Recorded here.
    Deny,
    /// Allowed, but a blocking rule refuses the payload (size, forbidden content). Recorded
    /// here.
    Violation,
}

impl Session {
    /// Publish (and, for a retained message, retain) rights on `topic`, then the blocking
    /// rules on the payload. Refusals are audited here; what is allowed, by the caller.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn check_publish(
        &self,
        audit: &AuditLog,
        policy: &ActivePolicy,
        api: &'static str,
        packet_id: u16,
        topic: &str,
        retain: bool,
        payload: &[u8],
    ) -> Verdict {
        let subject = self.subject();
        let decision = policy
            .set
            .decide(&subject, Operation::Publish, Resource::mqtt_topic(topic));
        if !decision.check.is_allowed() {
            self.decision_event(
                audit,
                policy,
                api,
                packet_id,
                Operation::Publish,
                topic,
                &decision,
                None,
            )
            .await;
            return Verdict::Deny;
        }
        let retained = if retain {
            let r = policy
                .set
                .decide(&subject, Operation::Retain, Resource::mqtt_topic(topic));
            if !r.check.is_allowed() {
                self.decision_event(
                    audit,
                    policy,
                    api,
                    packet_id,
                    Operation::Retain,
                    topic,
                    &r,
                    None,
                )
                .await;
                return Verdict::Deny;
            }
            Some(r.rule)
        } else {
            None
        };
        let limits = policy.set.mqtt_limits(topic);
        if !limits.is_empty() {
            let violation = match limits
                .max_record_bytes
                .as_ref()
                .filter(|(max, _)| payload.len() as u64 > *max)
            {
                Some((max, rule)) => Some((
                    rule.clone(),
                    format!("payload of {} bytes over the limit of {max}", payload.len()),
                )),
                None => limits.content.iter().filter(|c| c.in_value).find_map(|c| {
                    c.find(payload).map(|pattern| {
                        (
                            c.rule.clone(),
                            format!("forbidden content ({}: {pattern})", c.name),
                        )
                    })
                }),
            };
            if let Some((rule, detail)) = violation {
                let decision = Decision {
                    check: Check::Violation,
                    effect: decision.effect,
                    rule: Some(rule),
                };
                self.decision_event(
                    audit,
                    policy,
                    api,
                    packet_id,
                    Operation::Publish,
                    topic,
                    &decision,
                    Some(detail),
                )
                .await;
                return Verdict::Violation;
            }
        }
        Verdict::Allow {
            publish: decision.rule,
            retain: retained,
        }
    }

    /// Whether this subscriber may receive a message on `topic`: `Some(rule)` when it may
    /// (recorded by the caller), `None` when not (recorded here).
    pub(super) async fn check_delivery(
        &self,
        audit: &AuditLog,
        policy: &ActivePolicy,
        packet_id: u16,
        topic: &str,
    ) -> Option<Option<RuleRef>> {
        let decision = policy.set.decide(
            &self.subject(),
            Operation::Subscribe,
            Resource::mqtt_topic(topic),
        );
        if decision.check.is_allowed() {
            return Some(decision.rule);
        }
        self.decision_event(
            audit,
            policy,
            "DELIVERY",
            packet_id,
            Operation::Subscribe,
            topic,
            &decision,
            None,
        )
        .await;
        None
    }

    /// One filter of a SUBSCRIBE: granted, narrowed (granted, deliveries checked one by one)
    /// or denied. `text` is the filter as sent (with any `$share/` prefix).
    pub(super) async fn check_subscription(
        &self,
        audit: &AuditLog,
        policy: &ActivePolicy,
        packet_id: u16,
        text: &str,
        filter: &TopicFilter,
    ) -> bool {
        let subject = self.subject();
        let answer = policy.set.decide_subscribe(&subject, filter);
        let (decision, rule, detail): (&'static str, Option<RuleRef>, Option<String>) = match answer
        {
            SubscribeDecision::Granted { rule } => ("allow", Some(rule), None),
            SubscribeDecision::Narrowed { allow, denied_by } => (
                "narrowed",
                Some(allow),
                Some(match denied_by {
                    Some(deny) => format!(
                        "the filter reaches topics this subscriber may not read ({deny}): \
                             each delivery is checked"
                    ),
                    None => "the filter reaches topics no rule lets this subscriber read: \
                                 each delivery is checked"
                        .into(),
                }),
            ),
            SubscribeDecision::Denied(d) => ("deny", d.rule, None),
        };
        self.emit_decision(
            audit,
            policy,
            "SUBSCRIBE",
            packet_id,
            Operation::Subscribe,
            text,
            decision,
            rule.as_ref(),
            detail,
        )
        .await;
        decision != "deny"
    }

    /// A filter that is not a valid MQTT filter: refused, recorded.
    pub(super) async fn invalid_filter(
        &self,
        audit: &AuditLog,
        policy: &ActivePolicy,
        packet_id: u16,
        text: &str,
        why: String,
    ) {
        self.emit_decision(
            audit,
            policy,
            "SUBSCRIBE",
            packet_id,
            Operation::Subscribe,
            text,
            "deny",
            None,
            Some(why),
        )
        .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn decision_event(
        &self,
        audit: &AuditLog,
        policy: &ActivePolicy,
        api: &'static str,
        packet_id: u16,
        op: Operation,
        topic: &str,
        decision: &Decision,
        detail: Option<String>,
    ) {
        let name = match decision.check {
            Check::Allowed => "allow",
            Check::Denied => "deny",
            Check::Violation => "violation",
        };
        self.emit_decision(
            audit,
            policy,
            api,
            packet_id,
            op,
            topic,
            name,
            decision.rule.as_ref(),
            detail,
        )
        .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit_decision(
        &self,
        audit: &AuditLog,
        policy: &ActivePolicy,
        api: &'static str,
        packet_id: u16,
        op: Operation,
        resource: &str,
        decision: &'static str,
        rule: Option<&RuleRef>,
        detail: Option<String>,
    ) {
        if decision != "allow" {
            tracing::info!(
                session = self.id, principal = %self.identity.principal, api, operation = op.as_str(),
                topic = resource, decision, "mqtt {}", detail.as_deref().unwrap_or("")
            );
        }
        audit
            .emit_under(
                AuditEvent::Decision {
                    session: self.id,
                    client: self.client,
                    principal: self.identity.principal.clone(),
                    groups: self.identity.groups.clone(),
                    client_id: Some(self.client_id.clone()),
                    api,
                    correlation_id: i32::from(packet_id),
                    operation: op.as_str(),
                    resource_type: MQTT_TOPIC,
                    resource: resource.to_owned(),
                    decision,
                    rule: rule.map(|r| r.name.to_string()),
                    rule_source: rule.map(|r| format!("{}:{}", r.file, r.line)),
                    detail,
                    messages: None,
                    bytes: None,
                    digest: None,
                },
                Arc::clone(&policy.version),
            )
            .await;
    }

    /// Masking changed (or withheld) a payload: which rules, how many values.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn transform_event(
        &self,
        audit: &AuditLog,
        policy: &ActivePolicy,
        api: &'static str,
        packet_id: u16,
        stage: &'static str,
        topic: &str,
        masked: &MaskedPayload,
        withheld: Option<String>,
    ) {
        let outcome = match (&withheld, masked.revealed, masked.payload.is_some()) {
            (Some(_), _, _) => "withheld",
            (None, true, _) => "revealed",
            (None, false, true) => "masked",
            (None, false, false) => return,
        };
        audit
            .emit_under(
                AuditEvent::Transform {
                    session: self.id,
                    client: self.client,
                    principal: self.identity.principal.clone(),
                    api,
                    correlation_id: i32::from(packet_id),
                    stage,
                    topic: topic.to_owned(),
                    partition: -1,
                    outcome,
                    records: u64::from(withheld.is_none()),
                    fields: audit_counts(&masked.stats),
                    detail: withheld,
                },
                Arc::clone(&policy.version),
            )
            .await;
    }
}
