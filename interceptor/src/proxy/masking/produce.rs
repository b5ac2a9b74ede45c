//! Masking on produce: each partition's records are rewritten while the request is checked
//! (so a record a rule refuses refuses its partition with POLICY_VIOLATION, like a blocking
//! rule), the tokens they now carry are stored in the vault, and only then is the request
//! forwarded with the rewritten records in place of the originals.
//!
//! Nothing passes in clear: a vault that cannot take the tokens (down, slow, no keys) refuses
//! the whole request with KAFKA_STORAGE_ERROR, which producers retry (an idempotent producer
//! with the same sequence numbers, so a retry after the vault comes back is not a duplicate).

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use kafka_protocol::messages::{
    produce_response::{PartitionProduceResponse, TopicProduceResponse},
    ProduceResponse, TopicName,
};

use super::{
    audit_counts,
    record::{edit_record, PartOp},
    Masking,
};
use crate::{
    audit::{AuditEvent, AuditLog},
    kafka::{
        authz::{response::encode_response, AuthzError, Outcome, TopicIds},
        produce::produce_acks,
        records::{RewriteError, RewriteScratch, Rewritten},
        transform::{self, RecordsField, TopicRef},
        RequestHeader,
    },
    mask::{CollectingTokens, MacKey, MaskError, NewToken, Part, Rule, Stats, Tokens},
    policy::{MaskingRule, RuleRef},
};

/// KAFKA_STORAGE_ERROR: retriable in every client; the vault is storage.
const VAULT_UNAVAILABLE: i16 = 56;
/// Rounds of re-deriving tokens a vault reported as taken by another value.
const MAX_CONFLICT_ROUNDS: usize = 8;

/// Counters for (scope, value) pairs whose first token belongs to another value.
pub(crate) type Counters = HashMap<(String, Vec<u8>), u32>;

/// One partition's records after masking, kept from the check until the request goes on.
pub(crate) struct MaskedPartition {
    pub topic: String,
    pub partition: i32,
    pub state: PartitionState,
}

pub(crate) enum PartitionState {
    Masked {
        /// `None`: no record changed.
        records: Option<Vec<u8>>,
        tokens: Vec<NewToken>,
        stats: Stats,
        records_changed: u64,
        rules: Vec<Arc<MaskingRule>>,
    },
    /// The rules need keys the daemon does not have: refused retriably.
    NoKeys(String),
}

/// A partition refused by a masking rule (POLICY_VIOLATION): the rule, and why.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub rule: RuleRef,
    pub detail: String,
}

/// Masks one partition's records with `rules` (in order). Called while the request is
/// checked, so synchronous; tokens are derived, not yet stored.
pub(crate) fn mask_partition(
    masking: &Masking,
    rules: Vec<Arc<MaskingRule>>,
    records: &[u8],
    counters: &Counters,
    scratch: &mut RewriteScratch,
) -> Result<PartitionState, Refusal> {
    let key = match (masking.mac_key(), rules.iter().any(|r| r.rule.needs_key())) {
        (Some(key), _) => key.clone(),
        (None, false) => MacKey([0; 32]),
        (None, true) => {
            return Ok(PartitionState::NoKeys(
                "the masking rules hash or tokenize, and no vault keyring is loaded".into(),
            ))
        }
    };
    let mut tokens = CollectingTokens {
        key: &key,
        counters,
        new: Vec::new(),
    };
    let mut stats = Stats::default();
    let mut op = MaskOp {
        tokens: &mut tokens,
        stats: &mut stats,
    };
    let options = masking.produce_options();
    let rewrite = crate::kafka::records::rewrite(records, &options, scratch, |_, record, edit| {
        edit_record(rules.iter().map(|r| &*r.rule), record, edit, &mut op).map(|_| ())
    });
    let rewrite = match rewrite {
        Ok(rewrite) => rewrite,
        Err(RewriteError::Edit(MaskError::Malformed { rule, part, detail })) => {
            let at = rules
                .iter()
                .find(|r| *r.at.name == *rule)
                .or(rules.first())
                .map(|r| r.at.clone());
            return Err(Refusal {
                rule: at.unwrap_or_else(unknown_rule),
                detail: format!("a record's {} is not JSON: {detail}", part_name(part)),
            });
        }
        Err(RewriteError::Records(e)) => {
            return Err(Refusal {
                rule: rules
                    .first()
                    .map(|r| r.at.clone())
                    .unwrap_or_else(unknown_rule),
                detail: format!("records that masking cannot rewrite: {e}"),
            })
        }
    };
    let new = std::mem::take(&mut tokens.new);
    let records = match rewrite.records {
        Rewritten::Changed(records) => Some(records),
        // Produce requests are refused when truncated; a legacy set passes only when the
        // operator said so.
        Rewritten::Unchanged | Rewritten::LegacyPassed | Rewritten::Truncated { .. } => None,
    };
    Ok(PartitionState::Masked {
        records,
        tokens: new,
        stats,
        records_changed: rewrite.stats.records_changed as u64,
        rules,
    })
}

fn unknown_rule() -> RuleRef {
    RuleRef {
        name: "masking".into(),
        file: "".into(),
        line: 0,
    }
}

pub(super) fn part_name(part: Part) -> &'static str {
    match part {
        Part::Key => "key",
        Part::Value => "value",
        Part::Header => "header value",
    }
}

struct MaskOp<'a, 'k> {
    tokens: &'a mut CollectingTokens<'k>,
    stats: &'a mut Stats,
}

impl PartOp for MaskOp<'_, '_> {
    fn apply(
        &mut self,
        rule: &Rule,
        part: Part,
        input: &[u8],
    ) -> Result<Option<Vec<u8>>, MaskError> {
        rule.mask(part, input, self.tokens as &mut dyn Tokens, self.stats)
    }
}

/// Who sent the request, for the audit events.
pub(crate) struct Sender<'a> {
    pub session: u64,
    pub client: SocketAddr,
    pub principal: &'a str,
    pub correlation_id: i32,
    pub policy_version: Arc<str>,
}

/// After the check: stores the tokens, puts the masked records into the frame that goes on,
/// and audits each masked partition. Refuses the whole request retriably when the vault
/// cannot take the tokens.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish(
    masking: &Masking,
    sender: &Sender<'_>,
    header: &RequestHeader,
    original: &Bytes,
    outcome: Outcome,
    mut masked: Vec<MaskedPartition>,
    topic_ids: &TopicIds,
    audit: &AuditLog,
) -> Result<Outcome, AuthzError> {
    let (forwarded, response) = match outcome {
        Outcome::Forward => (original.clone(), None),
        Outcome::Rewrite { frame, response } => (frame, response),
        // Nothing goes to the broker: nothing was masked.
        other => return Ok(other),
    };
    if let Err(reason) = store_tokens(masking, original, header, topic_ids, &mut masked).await {
        for m in &masked {
            emit(audit, sender, m, "refused", Some(reason.clone())).await;
        }
        tracing::warn!(
            session = sender.session,
            "produce refused, masking needs the vault: {reason}"
        );
        return refuse_retriably(header, original);
    }
    let fields =
        transform::produce_records(&forwarded, header).map_err(|e| AuthzError::Response {
            api: "Produce",
            detail: format!("cannot place masked records: {e}"),
        })?;
    let mut replacements: Vec<(RecordsField<'_>, Option<&[u8]>)> = Vec::new();
    for (field, m) in pair(fields, &masked, topic_ids) {
        if let PartitionState::Masked {
            records: Some(records),
            ..
        } = &masked[m].state
        {
            replacements.push((field, Some(records.as_slice())));
        }
    }
    let frame = if replacements.is_empty() {
        forwarded.clone()
    } else {
        transform::replace_records(
            &forwarded,
            transform::produce_is_flexible(header.api_version),
            &replacements,
        )
        .map_err(|e| AuthzError::Response {
            api: "Produce",
            detail: format!("cannot place masked records: {e}"),
        })?
    };
    for m in &masked {
        if let PartitionState::Masked {
            records_changed, ..
        } = &m.state
        {
            if *records_changed > 0 {
                emit(audit, sender, m, "masked", None).await;
            }
        }
    }
    Ok(Outcome::Rewrite { frame, response })
}

/// Each masked partition with its records field in `fields`, matched in order: the n-th
/// masked entry for a (topic, partition) is the n-th field naming it, so a partition named
/// twice in one request gets each of its own records back.
fn pair<'f>(
    fields: Vec<RecordsField<'f>>,
    masked: &[MaskedPartition],
    topic_ids: &TopicIds,
) -> Vec<(RecordsField<'f>, usize)> {
    let mut used = vec![false; masked.len()];
    let mut pairs = Vec::new();
    for field in fields {
        let Some(name) = topic_name(&field.topic, topic_ids) else {
            continue;
        };
        let found = masked
            .iter()
            .enumerate()
            .position(|(i, m)| !used[i] && m.partition == field.partition && *m.topic == *name);
        if let Some(i) = found {
            used[i] = true;
            pairs.push((field, i));
        }
    }
    pairs
}

fn topic_name(topic: &TopicRef<'_>, ids: &TopicIds) -> Option<Arc<str>> {
    match topic {
        TopicRef::Name(name) => Some(Arc::from(*name)),
        TopicRef::Id(id) => ids.name(id),
    }
}

/// Stores every token the masked partitions carry, re-deriving (and re-masking) those the
/// vault holds for another value. Err: why the request cannot go on.
async fn store_tokens(
    masking: &Masking,
    original: &Bytes,
    header: &RequestHeader,
    topic_ids: &TopicIds,
    masked: &mut [MaskedPartition],
) -> Result<(), String> {
    if let Some(reason) = masked.iter().find_map(|m| match &m.state {
        PartitionState::NoKeys(reason) => Some(reason.clone()),
        PartitionState::Masked { .. } => None,
    }) {
        return Err(reason);
    }
    let mut counters = Counters::new();
    for _round in 0..MAX_CONFLICT_ROUNDS {
        let tokens: Vec<NewToken> = masked
            .iter()
            .flat_map(|m| match &m.state {
                PartitionState::Masked { tokens, .. } => tokens.as_slice(),
                PartitionState::NoKeys(_) => &[],
            })
            .cloned()
            .collect();
        if tokens.is_empty() {
            return Ok(());
        }
        let Some(vault) = masking.vault() else {
            return Err("no vault is configured".into());
        };
        let conflicts = vault.store(&tokens).await.map_err(|e| e.to_string())?;
        if conflicts.is_empty() {
            return Ok(());
        }
        for &i in &conflicts {
            if let Some(t) = tokens.get(i) {
                *counters
                    .entry((t.scope.clone(), t.value.clone()))
                    .or_insert(0) += 1;
            }
        }
        tracing::info!(
            conflicts = conflicts.len(),
            "vault tokens taken by other values: deriving the next ones"
        );
        remask(masking, original, header, topic_ids, masked, &counters)?;
    }
    Err(format!(
        "tokens still taken by other values after {MAX_CONFLICT_ROUNDS} rounds"
    ))
}

/// Masks again, from the original records, every partition whose tokens met a conflict.
fn remask(
    masking: &Masking,
    original: &Bytes,
    header: &RequestHeader,
    topic_ids: &TopicIds,
    masked: &mut [MaskedPartition],
    counters: &Counters,
) -> Result<(), String> {
    let fields = transform::produce_records(original, header).map_err(|e| e.to_string())?;
    let ranges: Vec<(usize, std::ops::Range<usize>)> = pair(fields, masked, topic_ids)
        .into_iter()
        .map(|(field, m)| (m, field.records))
        .collect();
    let mut scratch = RewriteScratch::default();
    for (m, range) in ranges {
        let entry = &mut masked[m];
        let PartitionState::Masked { tokens, rules, .. } = &entry.state else {
            continue;
        };
        if !tokens
            .iter()
            .any(|t| counters.contains_key(&(t.scope.clone(), t.value.clone())))
        {
            continue;
        }
        let rules = rules.clone();
        let records = original.get(range).unwrap_or_default();
        entry.state = mask_partition(masking, rules, records, counters, &mut scratch)
            .map_err(|r| r.detail)?;
    }
    Ok(())
}

/// Every partition of the request answered KAFKA_STORAGE_ERROR (nothing for acks=0).
fn refuse_retriably(header: &RequestHeader, original: &Bytes) -> Result<Outcome, AuthzError> {
    let api = "Produce";
    let malformed = |e: String| AuthzError::Response { api, detail: e };
    if produce_acks(original, header).map_err(|e| malformed(e.to_string()))? == 0 {
        return Ok(Outcome::Drop);
    }
    let fields =
        transform::produce_records(original, header).map_err(|e| malformed(e.to_string()))?;
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    for field in &fields {
        let partition = PartitionProduceResponse::default()
            .with_index(field.partition)
            .with_error_code(VAULT_UNAVAILABLE)
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1);
        let same = |t: &TopicProduceResponse| match field.topic {
            TopicRef::Name(name) => *t.name == *name,
            TopicRef::Id(id) => t.topic_id == uuid::Uuid::from_bytes(id),
        };
        match topics.iter_mut().find(|t| same(t)) {
            Some(t) => t.partition_responses.push(partition),
            None => {
                let mut topic = TopicProduceResponse::default();
                match field.topic {
                    TopicRef::Name(name) => {
                        topic.name = TopicName(kafka_protocol::protocol::StrBytes::from_string(
                            name.to_owned(),
                        ))
                    }
                    TopicRef::Id(id) => topic.topic_id = uuid::Uuid::from_bytes(id),
                }
                topic.partition_responses.push(partition);
                topics.push(topic);
            }
        }
    }
    let body = ProduceResponse::default().with_responses(topics);
    encode_response(0, header.api_version, header.correlation_id, &body, api).map(Outcome::Respond)
}

async fn emit(
    audit: &AuditLog,
    sender: &Sender<'_>,
    m: &MaskedPartition,
    outcome: &'static str,
    detail: Option<String>,
) {
    let (records, fields) = match &m.state {
        PartitionState::Masked {
            records_changed,
            stats,
            ..
        } if outcome == "masked" => (*records_changed, audit_counts(stats)),
        _ => (0, Vec::new()),
    };
    audit
        .emit_under(
            AuditEvent::Transform {
                session: sender.session,
                client: sender.client,
                principal: sender.principal.to_owned(),
                api: "Produce",
                correlation_id: sender.correlation_id,
                stage: "produce",
                topic: m.topic.clone(),
                partition: m.partition,
                outcome,
                records,
                fields,
                detail,
            },
            Arc::clone(&sender.policy_version),
        )
        .await;
}
