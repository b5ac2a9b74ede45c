//! Masking of one MQTT message payload: the same rules, detectors and vault as Kafka records,
//! with the payload as the record's value (a rule's `key` and `headers` parts have nothing to
//! read in MQTT).
//!
//! - On publish, before the broker: each produce rule in file order, tokens stored in the
//!   vault before the message goes on. A vault that cannot take them refuses the message.
//! - On delivery, per subscriber: tokens put back for a subscriber a rule's `reveal` names,
//!   then the fetch rules that mask what this subscriber gets. A payload a fetch rule reads as
//!   JSON that is not JSON is redacted whole; a reveal the vault cannot answer withholds the
//!   message.

use std::{collections::HashMap, sync::Arc};

use super::{produce::Counters, Masking};
use crate::{
    mask::{CollectingTokens, MacKey, MaskError, Part, Stats, Tokens},
    policy::{FetchMasking, MaskingRule, RuleRef},
};

/// Rounds of re-deriving tokens a vault reported as taken by another value.
const MAX_CONFLICT_ROUNDS: usize = 8;
/// What stands in for a payload a fetch rule reads as JSON when it is not JSON.
const NOT_JSON: &[u8] = b"[REDACTED: not JSON]";

/// A payload after the rules: `None` when no rule changed it.
#[derive(Debug, Default)]
pub(crate) struct MaskedPayload {
    pub payload: Option<Vec<u8>>,
    pub stats: Stats,
    /// Some token was put back (delivery only).
    pub revealed: bool,
}

/// Why a published payload does not go on.
#[derive(Debug)]
pub(crate) enum PublishRefusal {
    /// A rule cannot read the payload (not JSON where it names fields): the policy refuses it.
    Rule { rule: RuleRef, detail: String },
    /// The vault cannot take the tokens, or no keys are loaded: refused, the client may retry.
    Vault(String),
}

/// Masks a payload published to a topic with `rules` (produce rules, file order) and stores
/// the tokens it now carries.
pub(crate) async fn mask_publish(
    masking: &Masking,
    rules: &[Arc<MaskingRule>],
    payload: &[u8],
) -> Result<MaskedPayload, PublishRefusal> {
    let key = match (masking.mac_key(), rules.iter().any(|r| r.rule.needs_key())) {
        (Some(key), _) => key.clone(),
        (None, false) => MacKey([0; 32]),
        (None, true) => {
            return Err(PublishRefusal::Vault(
                "the masking rules hash or tokenize, and no vault keyring is loaded".into(),
            ))
        }
    };
    let mut counters = Counters::new();
    for _round in 0..MAX_CONFLICT_ROUNDS {
        let mut tokens = CollectingTokens {
            key: &key,
            counters: &counters,
            new: Vec::new(),
        };
        let mut stats = Stats::default();
        let mut current: Option<Vec<u8>> = None;
        for rule in rules.iter().filter(|r| r.rule.spec().parts.value) {
            let input = current.as_deref().unwrap_or(payload);
            match rule.rule.mask(
                Part::Value,
                input,
                &mut tokens as &mut dyn Tokens,
                &mut stats,
            ) {
                Ok(Some(out)) => current = Some(out),
                Ok(None) => {}
                Err(MaskError::Malformed { detail, .. }) => {
                    return Err(PublishRefusal::Rule {
                        rule: rule.at.clone(),
                        detail: format!("the payload is not JSON: {detail}"),
                    })
                }
            }
        }
        let new = std::mem::take(&mut tokens.new);
        if new.is_empty() {
            return Ok(MaskedPayload {
                payload: current,
                stats,
                revealed: false,
            });
        }
        let Some(vault) = masking.vault() else {
            return Err(PublishRefusal::Vault("no vault is configured".into()));
        };
        let conflicts = vault
            .store(&new)
            .await
            .map_err(|e| PublishRefusal::Vault(e.to_string()))?;
        if conflicts.is_empty() {
            return Ok(MaskedPayload {
                payload: current,
                stats,
                revealed: false,
            });
        }
        for &i in &conflicts {
            if let Some(t) = new.get(i) {
                *counters
                    .entry((t.scope.clone(), t.value.clone()))
                    .or_insert(0) += 1;
            }
        }
    }
    Err(PublishRefusal::Vault(format!(
        "tokens still taken by other values after {MAX_CONFLICT_ROUNDS} rounds"
    )))
}

/// Rewrites a payload for one subscriber. Err: why it is withheld.
pub(crate) async fn mask_delivery(
    masking: &Masking,
    rules: &FetchMasking,
    payload: &[u8],
) -> Result<MaskedPayload, String> {
    let mut wanted: Vec<String> = Vec::new();
    for rule in rules.reveal.iter().filter(|r| r.rule.spec().parts.value) {
        rule.rule.find_tokens(Part::Value, payload, &mut wanted);
    }
    let mut values: HashMap<String, Vec<u8>> = HashMap::new();
    if !wanted.is_empty() {
        let vault = masking
            .vault()
            .ok_or_else(|| "the vault cannot reveal tokens: no vault is configured".to_string())?;
        let found = vault
            .lookup(&wanted)
            .await
            .map_err(|e| format!("the vault cannot reveal tokens: {e}"))?;
        values = found.into_iter().map(|(t, r)| (t, r.value)).collect();
    }
    let dummy = MacKey([0; 32]);
    let needs_key = rules.mask.iter().any(|r| r.rule.needs_key());
    let key = match (masking.mac_key(), needs_key) {
        (Some(key), _) => key,
        (None, false) => &dummy,
        (None, true) => return Err("no vault keyring is loaded".into()),
    };
    let counters = HashMap::new();
    let mut tokens = CollectingTokens {
        key,
        counters: &counters,
        new: Vec::new(),
    };
    let mut out = MaskedPayload::default();
    let mut current: Option<Vec<u8>> = None;
    for rule in rules.reveal.iter().filter(|r| r.rule.spec().parts.value) {
        let input = current.as_deref().unwrap_or(payload);
        if let Some(revealed) = rule
            .rule
            .reveal(Part::Value, input, &values, &mut out.stats)
        {
            current = Some(revealed);
            out.revealed = true;
        }
    }
    for rule in rules.mask.iter().filter(|r| r.rule.spec().parts.value) {
        let input = current.as_deref().unwrap_or(payload);
        match rule.rule.mask(
            Part::Value,
            input,
            &mut tokens as &mut dyn Tokens,
            &mut out.stats,
        ) {
            Ok(Some(masked)) => current = Some(masked),
            Ok(None) => {}
            // A subscriber never gets a value a rule could not read: redacted whole.
            Err(_) => current = Some(NOT_JSON.to_vec()),
        }
    }
    out.payload = current;
    Ok(out)
}
