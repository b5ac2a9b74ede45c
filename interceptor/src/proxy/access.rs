//! The session's answer to "may this request do that": the policy set in force, the
//! session's identity and the request's client id, with every decision kept for the audit
//! trail. One per connection; the request direction points it at each request in turn
//! ([`SessionCheck::begin`]) and hands the decisions to the audit log after each
//! ([`SessionCheck::take_events`]); response rewrites that check (Metadata hiding topics) use
//! the same object from the response direction.

use std::{
    net::SocketAddr,
    ops::ControlFlow,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{
    auth::Identity,
    masking::{
        fetch::Consumer,
        produce::{mask_partition, Counters, MaskedPartition},
        Masking,
    },
};
use crate::{
    audit::AuditEvent,
    kafka::{
        authz::table::api_name,
        records::{self, RecordLimits, RewriteScratch},
        RequestHeader,
    },
    policy::{
        watch::ActivePolicy, AccessCheck, Check, ContentRule, Operation, Resource, RuleRef, Subject,
    },
};

pub struct SessionCheck {
    client: SocketAddr,
    record_limits: RecordLimits,
    masking: Arc<Masking>,
    state: Mutex<State>,
}

struct State {
    session: u64,
    client: SocketAddr,
    policy: Arc<ActivePolicy>,
    principal: String,
    groups: Vec<String>,
    client_id: Option<String>,
    api: &'static str,
    correlation_id: i32,
    events: Vec<AuditEvent>,
    /// Decompression buffer for content rules, kept across requests.
    scratch: Vec<u8>,
    /// Produce partitions masked while this request was checked.
    masked: Vec<MaskedPartition>,
    /// Buffers for rewriting masked records, kept across requests.
    rewrite_scratch: RewriteScratch,
}

impl SessionCheck {
    pub fn new(
        session: u64,
        client: SocketAddr,
        policy: Arc<ActivePolicy>,
        record_limits: RecordLimits,
        masking: Arc<Masking>,
    ) -> Self {
        Self {
            client,
            record_limits,
            masking,
            state: Mutex::new(State {
                session,
                client,
                policy,
                principal: String::new(),
                groups: Vec::new(),
                client_id: None,
                api: "",
                correlation_id: 0,
                events: Vec::new(),
                scratch: Vec::new(),
                masked: Vec::new(),
                rewrite_scratch: RewriteScratch::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written in a way that
        // matters (each field is replaced whole), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Points the check at the next request: the policy in force now, who sends it.
    pub fn begin(&self, policy: Arc<ActivePolicy>, identity: &Identity, header: &RequestHeader) {
        let mut s = self.state();
        s.policy = policy;
        if s.principal != identity.principal {
            s.principal.clone_from(&identity.principal);
        }
        if s.groups != identity.groups {
            s.groups.clone_from(&identity.groups);
        }
        let client_id = header.client_id.as_deref();
        if s.client_id.as_deref().map(str::as_bytes) != client_id {
            s.client_id = client_id.map(|c| String::from_utf8_lossy(c).into_owned());
        }
        s.api = api_name(header.api_key);
        s.correlation_id = header.correlation_id;
        // What an earlier request left (it failed before being forwarded) is not this one's.
        s.masked.clear();
    }

    /// The decisions made since the last call, with the version of the set that made them.
    pub fn take_events(&self) -> (Vec<AuditEvent>, Arc<str>) {
        let mut s = self.state();
        (std::mem::take(&mut s.events), Arc::clone(&s.policy.version))
    }

    /// The produce partitions masked while the last request was checked.
    pub(crate) fn take_masked(&self) -> Vec<MaskedPartition> {
        std::mem::take(&mut self.state().masked)
    }

    /// Who the session is now, for masking its fetches.
    pub(crate) fn consumer(&self, session: u64) -> Consumer {
        let s = self.state();
        Consumer {
            session,
            client: self.client,
            principal: s.principal.clone(),
            groups: s.groups.clone(),
            client_id: s.client_id.clone(),
            source: self.client.ip(),
        }
    }

    pub(crate) fn masking(&self) -> &Arc<Masking> {
        &self.masking
    }

    /// Masks a partition's records if the topic has produce rules; POLICY_VIOLATION when a
    /// rule refuses them.
    fn mask_records(
        s: &mut State,
        masking: &Masking,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> Check {
        let rules = s.policy.set.produce_masking(topic);
        if rules.is_empty() {
            return Check::Allowed;
        }
        let mut scratch = std::mem::take(&mut s.rewrite_scratch);
        let masked = mask_partition(masking, rules, records, &Counters::new(), &mut scratch);
        s.rewrite_scratch = scratch;
        match masked {
            Ok(state) => {
                s.masked.push(MaskedPartition {
                    topic: topic.to_owned(),
                    partition,
                    state,
                });
                Check::Allowed
            }
            Err(refusal) => {
                s.record(
                    Operation::Produce,
                    Resource::topic(topic),
                    Check::Violation,
                    Some(&refusal.rule),
                    Some(format!("partition {partition}: {}", refusal.detail)),
                );
                Check::Violation
            }
        }
    }
}

impl State {
    fn record(
        &mut self,
        op: Operation,
        resource: Resource<'_>,
        check: Check,
        rule: Option<&RuleRef>,
        detail: Option<String>,
    ) {
        let decision = match check {
            Check::Allowed => "allow",
            Check::Denied => "deny",
            Check::Violation => "violation",
        };
        self.events.push(AuditEvent::Decision {
            session: self.session,
            client: self.client,
            principal: self.principal.clone(),
            groups: self.groups.clone(),
            client_id: self.client_id.clone(),
            api: self.api,
            correlation_id: self.correlation_id,
            operation: op.as_str(),
            resource_type: resource.kind.as_str(),
            resource: resource.name.to_owned(),
            decision,
            rule: rule.map(|r| r.name.to_string()),
            rule_source: rule.map(|r| format!("{}:{}", r.file, r.line)),
            detail,
            messages: None,
            bytes: None,
            digest: None,
        });
    }
}

impl AccessCheck for SessionCheck {
    fn check(&self, op: Operation, resource: Resource<'_>) -> Check {
        let mut s = self.state();
        let decision = {
            let subject = Subject {
                principal: &s.principal,
                groups: &s.groups,
                client_id: s.client_id.as_deref(),
                source: self.client.ip(),
            };
            s.policy.set.decide(&subject, op, resource)
        };
        s.record(op, resource, decision.check, decision.rule.as_ref(), None);
        decision.check
    }

    fn check_records(&self, topic: &str, partition: i32, records: &[u8]) -> Check {
        let mut s = self.state();
        let limits = s.policy.set.topic_limits(topic);
        if limits.max_batch_bytes.is_none()
            && limits.max_record_bytes.is_none()
            && limits.content.is_empty()
        {
            return Self::mask_records(&mut s, &self.masking, topic, partition, records);
        }
        let mut scratch = std::mem::take(&mut s.scratch);
        let verdict = inspect(records, &limits, &self.record_limits, &mut scratch);
        s.scratch = scratch;
        match verdict {
            None => Self::mask_records(&mut s, &self.masking, topic, partition, records),
            Some((rule, detail)) => {
                let detail = format!("partition {partition}: {detail}");
                s.record(
                    Operation::Produce,
                    Resource::topic(topic),
                    Check::Violation,
                    Some(&rule),
                    Some(detail),
                );
                Check::Violation
            }
        }
    }
}

/// The first blocking rule the records break, and how. Records that cannot be read when a
/// rule needs to read them break that rule: nothing passes unchecked.
fn inspect(
    records: &[u8],
    limits: &crate::policy::TopicLimits,
    record_limits: &RecordLimits,
    scratch: &mut Vec<u8>,
) -> Option<(RuleRef, String)> {
    if let Some((max, rule)) = &limits.max_batch_bytes {
        for batch in records::batches(records) {
            match batch {
                Ok(b) if b.batch_bytes as u64 > *max => {
                    return Some((
                        rule.clone(),
                        format!("a batch of {} bytes exceeds {max}", b.batch_bytes),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Some((rule.clone(), format!("unreadable records: {e}"))),
            }
        }
    }
    if limits.max_record_bytes.is_none() && limits.content.is_empty() {
        return None;
    }
    let scanned = records::scan(records, record_limits, scratch, |batch, record| {
        if batch.control {
            return ControlFlow::Continue(());
        }
        if let Some((max, rule)) = &limits.max_record_bytes {
            let size = record.size();
            if size as u64 > *max {
                return ControlFlow::Break((
                    rule.clone(),
                    format!("a record of {size} bytes exceeds {max}"),
                ));
            }
        }
        for content in &limits.content {
            if let Some(field) = forbidden_in(content, record) {
                return ControlFlow::Break((
                    content.rule.clone(),
                    format!(
                        "forbidden content \"{}\" in the record {field}",
                        content.name
                    ),
                ));
            }
        }
        ControlFlow::Continue(())
    });
    match scanned {
        Ok(found) => found,
        Err(e) => {
            let rule = limits
                .max_record_bytes
                .as_ref()
                .map(|(_, r)| r.clone())
                .or_else(|| limits.content.first().map(|c| c.rule.clone()))?;
            Some((rule, format!("unreadable records: {e}")))
        }
    }
}

/// Which field of the record holds forbidden content, if any.
fn forbidden_in(rule: &ContentRule, record: &records::RecordView<'_>) -> Option<&'static str> {
    if rule.in_key && record.key.is_some_and(|k| rule.matches(k)) {
        return Some("key");
    }
    if rule.in_value && record.value.is_some_and(|v| rule.matches(v)) {
        return Some("value");
    }
    if rule.in_headers
        && record
            .headers()
            .any(|(_, value)| value.is_some_and(|v| rule.matches(v)))
    {
        return Some("header");
    }
    None
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::policy::{watch::PolicyHandle, PolicySet};

    const POLICY: &str = "\
rules:
  - name: writers
    effect: allow
    subjects:
      groups: [writers]
    resources:
      topics: [\"orders.*\"]
    operations: [produce]
  - name: no-archive
    effect: deny
    subjects:
      groups: [writers]
    resources:
      topics: [orders.archive]
    operations: [produce]
blocking:
  - name: small-records
    topics: [orders.small]
    max_record_bytes: 100
  - name: no-keys
    topics: [\"orders.*\"]
    forbidden_content:
      - name: aws
        patterns: [AKIA]
";

    fn session() -> SessionCheck {
        let set = PolicySet::from_files(&[("p.yaml".into(), POLICY.into())]).unwrap();
        let policy = PolicyHandle::fixed(set);
        let check = SessionCheck::new(
            7,
            "10.1.2.3:4000".parse().unwrap(),
            policy.current(),
            RecordLimits {
                max_decompressed_bytes: 1 << 20,
                max_records_per_batch: 1000,
            },
            Masking::without_vault(),
        );
        let identity = Identity {
            principal: "app".into(),
            groups: vec!["writers".into()],
            issuer: None,
            mechanism: "OAUTHBEARER",
        };
        let header = RequestHeader {
            api_key: 0,
            api_version: 9,
            correlation_id: 42,
            client_id: Some(Bytes::from_static(b"producer-1")),
            body_offset: 0,
        };
        check.begin(policy.current(), &identity, &header);
        check
    }

    /// One uncompressed record batch with one record, built with the crate's encoder.
    fn batch(value: &[u8]) -> Vec<u8> {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let record = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            delete_horizon: false,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        };
        let mut out = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        out.to_vec()
    }

    #[test]
    fn every_decision_is_kept_with_who_asked_the_rule_and_the_version() {
        let check = session();
        assert_eq!(
            check.check(Operation::Produce, Resource::topic("orders.eu")),
            Check::Allowed
        );
        assert_eq!(
            check.check(Operation::Produce, Resource::topic("orders.archive")),
            Check::Denied
        );
        assert_eq!(
            check.check(Operation::Consume, Resource::topic("orders.eu")),
            Check::Denied
        );
        let (events, version) = check.take_events();
        assert!(version.starts_with("sha256:"), "{version}");
        let json: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_eq!(json.len(), 3);
        assert_eq!(json[0]["decision"], "allow");
        assert_eq!(json[0]["rule"], "writers");
        assert_eq!(json[0]["rule_source"], "p.yaml:2");
        assert_eq!(json[0]["principal"], "app");
        assert_eq!(json[0]["groups"][0], "writers");
        assert_eq!(json[0]["client_id"], "producer-1");
        assert_eq!(json[0]["api"], "Produce");
        assert_eq!(json[0]["correlation_id"], 42);
        assert_eq!(json[0]["session"], 7);
        assert_eq!(json[1]["decision"], "deny");
        assert_eq!(json[1]["rule"], "no-archive");
        assert_eq!(json[2]["decision"], "deny");
        assert!(json[2].get("rule").is_none(), "default deny names no rule");
        assert!(check.take_events().0.is_empty(), "taken once");
    }

    #[test]
    fn records_are_held_to_the_topics_blocking_rules() {
        let check = session();
        let clean = batch(b"order 1");
        assert_eq!(check.check_records("orders.eu", 0, &clean), Check::Allowed);
        assert!(
            check.take_events().0.is_empty(),
            "an allowed batch adds nothing"
        );
        assert_eq!(
            check.check_records("orders.eu", 3, &batch(b"key=AKIAEXAMPLE")),
            Check::Violation
        );
        assert_eq!(
            check.check_records("orders.small", 0, &batch(&[b'x'; 200])),
            Check::Violation
        );
        assert_eq!(
            check.check_records("orders.small", 0, &batch(&[b'x'; 50])),
            Check::Allowed
        );
        // Unreadable records under a rule that must read them are refused, not passed.
        assert_eq!(
            check.check_records("orders.eu", 0, b"\0\0\0\0garbage"),
            Check::Violation
        );
        // A topic without blocking rules is not read at all.
        assert_eq!(
            check.check_records("payments", 0, b"garbage"),
            Check::Allowed
        );
        let (events, _) = check.take_events();
        let json: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_eq!(json.len(), 3);
        assert_eq!(json[0]["decision"], "violation");
        assert_eq!(json[0]["rule"], "no-keys");
        assert!(json[0]["detail"].as_str().unwrap().contains("partition 3"));
        assert!(json[0]["detail"].as_str().unwrap().contains("aws"));
        assert_eq!(json[1]["rule"], "small-records");
        assert!(json[2]["detail"].as_str().unwrap().contains("unreadable"));
    }
}
