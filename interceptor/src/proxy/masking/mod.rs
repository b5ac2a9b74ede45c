//! Masking in the proxy: the policy's masking rules applied to the records of Produce
//! requests (before the broker) and of Fetch / ShareFetch responses (per consumer), with the
//! token vault behind them.
//!
//! - [`produce`]: records masked while the request is checked, tokens stored, the masked
//!   records put in place of the originals;
//! - [`fetch`]: each response rewritten for its consumer (tokens revealed, fetch rules applied);
//! - `record`: one record through a list of rules.
//!
//! Topics without masking rules never reach any of this: their records stay zero-copy.

pub(crate) mod fetch;
pub(crate) mod payload;
pub(crate) mod produce;
mod record;
#[cfg(test)]
mod tests;

use crate::{
    audit::TransformCount,
    config::{LegacyRecords, MaskingConfig},
    kafka::records::{LegacyFormat, RecordLimits, RewriteOptions, TrailingPartial},
    mask::{MacKey, Stats},
    vault::Vault,
};

/// What every session's masking shares.
pub struct Masking {
    vault: Option<Vault>,
    config: MaskingConfig,
    limits: RecordLimits,
}

impl Masking {
    pub fn new(vault: Option<Vault>, config: MaskingConfig, limits: RecordLimits) -> Self {
        Self {
            vault,
            config,
            limits,
        }
    }

    /// No vault, default limits: for tests of what does not tokenize.
    #[cfg(test)]
    pub fn without_vault() -> std::sync::Arc<Masking> {
        std::sync::Arc::new(Masking::new(
            None,
            MaskingConfig::default(),
            RecordLimits {
                max_decompressed_bytes: 1 << 20,
                max_records_per_batch: 1000,
            },
        ))
    }

    pub fn vault(&self) -> Option<&Vault> {
        self.vault.as_ref()
    }

    pub fn mac_key(&self) -> Option<&MacKey> {
        self.vault.as_ref().map(Vault::mac_key)
    }

    fn options(&self, trailing_partial: TrailingPartial) -> RewriteOptions {
        RewriteOptions {
            limits: self.limits,
            max_output_bytes: self.config.max_rewritten_bytes,
            legacy: match self.config.legacy_records {
                LegacyRecords::Refuse => LegacyFormat::Refuse,
                LegacyRecords::Pass => LegacyFormat::Pass,
            },
            trailing_partial,
        }
    }

    /// A Produce request with a cut batch is malformed.
    fn produce_options(&self) -> RewriteOptions {
        self.options(TrailingPartial::Error)
    }

    /// A Fetch response ends with a cut batch when the broker hit its byte limit.
    fn fetch_options(&self) -> RewriteOptions {
        self.options(TrailingPartial::Drop)
    }
}

pub(crate) fn audit_counts(stats: &Stats) -> Vec<TransformCount> {
    stats
        .entries
        .iter()
        .map(|e| TransformCount {
            rule: e.rule.clone(),
            selector: e.selector.clone(),
            action: e.action,
            count: e.count,
        })
        .collect()
}
