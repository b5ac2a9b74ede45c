//! Masking on fetch, per consumer: the broker's answer is read whole, and the records of each
//! partition whose topic has rules for this consumer are rewritten before the client sees
//! them: tokens put back for a consumer a rule's `reveal` names (values looked up in the vault
//! for the whole response at once), then the fetch rules that mask what this consumer gets.
//!
//! Fails closed per partition: records that cannot be read or rewritten, a topic id that
//! cannot be named, or a vault that cannot answer for a consumer owed a reveal, and that
//! partition goes out with no records (the consumer fetches the same offset again) and a
//! `withheld` audit event. A response that cannot be parsed at all closes the connection.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use bytes::Bytes;

use super::{
    audit_counts,
    produce::part_name,
    record::{edit_record, visit_record, PartOp},
    Masking,
};
use crate::{
    audit::{AuditEvent, AuditLog},
    kafka::{
        authz::{AuthzError, TopicIds},
        inflight::AsyncRewrite,
        records::{rewrite, RecordsError, RewriteError, RewriteScratch, Rewritten},
        transform::{self, RecordsField, TopicRef},
    },
    mask::{CollectingTokens, MacKey, MaskError, Part, Rule, Stats, Tokens},
    policy::{watch::ActivePolicy, FetchMasking, Subject},
};

/// What stands in for a value a fetch rule reads as JSON when it is not JSON.
const NOT_JSON: &[u8] = b"[REDACTED: not JSON]";

/// The consumer a response goes to.
#[derive(Clone)]
pub(crate) struct Consumer {
    pub session: u64,
    pub client: std::net::SocketAddr,
    pub principal: String,
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    pub source: IpAddr,
}

impl Consumer {
    fn subject(&self) -> Subject<'_> {
        Subject {
            principal: &self.principal,
            groups: &self.groups,
            client_id: self.client_id.as_deref(),
            source: self.source,
        }
    }
}

/// The rewrite of one Fetch (or ShareFetch) response for `consumer`.
pub(crate) struct FetchRewrite {
    pub masking: Arc<Masking>,
    pub policy: Arc<ActivePolicy>,
    pub consumer: Consumer,
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub topic_ids: Arc<TopicIds>,
    pub audit: AuditLog,
}

impl FetchRewrite {
    pub fn into_filter(self) -> AsyncRewrite {
        Box::new(move |frame| Box::pin(async move { self.apply(frame).await }))
    }

    async fn apply(self, frame: Bytes) -> Result<Bytes, AuthzError> {
        let api = if self.api_key == transform::SHARE_FETCH {
            "ShareFetch"
        } else {
            "Fetch"
        };
        let fail = |detail: String| AuthzError::Response { api, detail };
        let (fields, flexible) = if self.api_key == transform::SHARE_FETCH {
            (
                transform::share_fetch_records(&frame, self.api_version),
                transform::share_fetch_is_flexible(self.api_version),
            )
        } else {
            (
                transform::fetch_records(&frame, self.api_version),
                transform::fetch_is_flexible(self.api_version),
            )
        };
        let fields = fields.map_err(|e| fail(e.to_string()))?;
        let subject = self.consumer.subject();
        let mut plans = Vec::new();
        for field in fields {
            if field.null || field.records.is_empty() {
                continue;
            }
            let topic = match field.topic {
                TopicRef::Name(name) => Some(Arc::<str>::from(name)),
                TopicRef::Id(id) => self.topic_ids.name(&id),
            };
            let rules = match &topic {
                Some(topic) => self.policy.set.fetch_masking(topic, &subject),
                None => FetchMasking::default(),
            };
            let known = topic.is_some();
            if known && rules.is_empty() {
                continue;
            }
            plans.push(Plan {
                topic: topic.map_or_else(|| "(unknown topic id)".into(), |t| t.to_string()),
                known,
                field,
                rules,
                stats: Stats::default(),
                records_changed: 0,
                revealed: false,
                withheld: None,
            });
        }
        if plans.is_empty() {
            return Ok(frame);
        }
        let mut scratch = RewriteScratch::default();
        let options = self.masking.fetch_options();
        let key = self.masking.mac_key().cloned();

        // Pass 1: the tokens to reveal, looked up all at once.
        let mut wanted: Vec<String> = Vec::new();
        for plan in plans.iter_mut().filter(|p| !p.rules.reveal.is_empty()) {
            let records = frame.get(plan.field.records.clone()).unwrap_or_default();
            let found = rewrite(records, &options, &mut scratch, |_, record, _| {
                visit_record(
                    plan.rules.reveal.iter().map(|r| &*r.rule),
                    record,
                    |rule, part, bytes| rule.find_tokens(part, bytes, &mut wanted),
                );
                Ok::<(), MaskError>(())
            });
            if let Err(e) = found {
                plan.withhold(format!("unreadable records: {}", describe(&e)));
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut values: HashMap<String, Vec<u8>> = HashMap::new();
        let mut vault_down: Option<String> = None;
        if !wanted.is_empty() {
            match self.masking.vault() {
                None => vault_down = Some("no vault is configured".into()),
                Some(vault) => match vault.lookup(&wanted).await {
                    Ok(found) => {
                        values = found.into_iter().map(|(t, r)| (t, r.value)).collect();
                    }
                    Err(e) => vault_down = Some(e.to_string()),
                },
            }
        }

        // Pass 2: rewrite.
        let mut outputs: Vec<Option<Vec<u8>>> = Vec::with_capacity(plans.len());
        let dummy = MacKey([0; 32]);
        for plan in &mut plans {
            outputs.push(None);
            if plan.withheld.is_some() {
                continue;
            }
            if !plan.known {
                plan.withhold("the partition's topic id is not known".into());
                continue;
            }
            if let (Some(reason), false) = (&vault_down, plan.rules.reveal.is_empty()) {
                plan.withhold(format!("the vault cannot reveal tokens: {reason}"));
                continue;
            }
            let all = plan.rules.reveal.iter().chain(&plan.rules.mask);
            let key = match (&key, all.clone().any(|r| r.rule.needs_key())) {
                (Some(key), _) => key,
                (None, false) => &dummy,
                (None, true) => {
                    plan.withhold("no vault keyring is loaded".into());
                    continue;
                }
            };
            let counters = HashMap::new();
            let mut tokens = CollectingTokens {
                key,
                counters: &counters,
                new: Vec::new(),
            };
            let reveal_names: Vec<&str> = plan.rules.reveal.iter().map(|r| &*r.at.name).collect();
            let mut op = FetchOp {
                reveal: &reveal_names,
                values: &values,
                tokens: &mut tokens,
                stats: &mut plan.stats,
                revealed: false,
            };
            let records = frame.get(plan.field.records.clone()).unwrap_or_default();
            let result = rewrite(records, &options, &mut scratch, |_, record, edit| {
                edit_record(all.clone().map(|r| &*r.rule), record, edit, &mut op).map(|_| ())
            });
            let revealed = op.revealed;
            match result {
                Ok(done) => {
                    plan.records_changed = done.stats.records_changed as u64;
                    plan.revealed = revealed;
                    // This plan's slot, pushed as `None` at the top of the loop.
                    if let Some(slot) = outputs.last_mut() {
                        *slot = match done.records {
                            Rewritten::Changed(records) => Some(records),
                            Rewritten::Truncated { len } => {
                                Some(records.get(..len).unwrap_or_default().to_vec())
                            }
                            Rewritten::Unchanged | Rewritten::LegacyPassed => None,
                        };
                    }
                }
                Err(e) => plan.withhold(format!(
                    "records that masking cannot rewrite: {}",
                    describe(&e)
                )),
            }
        }

        let mut replacements: Vec<(RecordsField<'_>, Option<&[u8]>)> = Vec::new();
        for (plan, output) in plans.iter().zip(&outputs) {
            if plan.withheld.is_some() {
                replacements.push((plan.field.clone(), Some(&[][..])));
            } else if let Some(records) = output {
                replacements.push((plan.field.clone(), Some(records.as_slice())));
            }
        }
        let out = if replacements.is_empty() {
            frame.clone()
        } else {
            transform::replace_records(&frame, flexible, &replacements)
                .map_err(|e| fail(e.to_string()))?
        };
        for plan in &plans {
            self.emit(api, plan).await;
        }
        Ok(out)
    }

    async fn emit(&self, api: &'static str, plan: &Plan<'_>) {
        let (outcome, detail) = match &plan.withheld {
            Some(reason) => ("withheld", Some(reason.clone())),
            None if plan.records_changed == 0 => return,
            None if plan.revealed => ("revealed", None),
            None => ("masked", None),
        };
        if let Some(reason) = &detail {
            tracing::warn!(
                session = self.consumer.session,
                topic = %plan.topic,
                partition = plan.field.partition,
                "fetched records withheld: {reason}"
            );
        }
        self.audit
            .emit_under(
                AuditEvent::Transform {
                    session: self.consumer.session,
                    client: self.consumer.client,
                    principal: self.consumer.principal.clone(),
                    api,
                    correlation_id: self.correlation_id,
                    stage: "fetch",
                    topic: plan.topic.clone(),
                    partition: plan.field.partition,
                    outcome,
                    records: plan.records_changed,
                    fields: audit_counts(&plan.stats),
                    detail,
                },
                Arc::clone(&self.policy.version),
            )
            .await;
    }
}

fn describe(e: &RewriteError<MaskError>) -> String {
    match e {
        RewriteError::Records(RecordsError::LegacyFormat { .. }) => {
            "a legacy message set (masking.legacy_records = \"refuse\")".into()
        }
        other => other.to_string(),
    }
}

struct Plan<'f> {
    field: RecordsField<'f>,
    topic: String,
    known: bool,
    rules: FetchMasking,
    stats: Stats,
    records_changed: u64,
    revealed: bool,
    withheld: Option<String>,
}

impl Plan<'_> {
    fn withhold(&mut self, reason: String) {
        self.withheld.get_or_insert(reason);
    }
}

struct FetchOp<'a, 'k> {
    reveal: &'a [&'a str],
    values: &'a HashMap<String, Vec<u8>>,
    tokens: &'a mut CollectingTokens<'k>,
    stats: &'a mut Stats,
    revealed: bool,
}

impl PartOp for FetchOp<'_, '_> {
    fn apply(
        &mut self,
        rule: &Rule,
        part: Part,
        input: &[u8],
    ) -> Result<Option<Vec<u8>>, MaskError> {
        if self.reveal.contains(&&*rule.spec().name) {
            let out = rule.reveal(part, input, self.values, self.stats);
            self.revealed |= out.is_some();
            return Ok(out);
        }
        match rule.mask(part, input, self.tokens as &mut dyn Tokens, self.stats) {
            // A consumer never gets a value a rule could not read: redacted whole.
            Err(MaskError::Malformed { .. }) => {
                tracing::debug!("a fetched {} is not JSON: redacted", part_name(part));
                Ok(Some(NOT_JSON.to_vec()))
            }
            other => other,
        }
    }
}
