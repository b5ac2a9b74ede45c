//! `interceptor detokenize TOKEN`: the original value behind a vault token, for a person or
//! service the policy lets see it.
//!
//! Runs inside the daemon (the CLI asks over the admin socket), so the vault's keys never
//! leave the process that holds them. The caller proves who it is with an OIDC access token
//! from the same issuers Kafka clients use, and the token's masking rule must list that
//! identity under `reveal`. Root access to the admin socket alone is not enough. Every request
//! is audited (`detokenize` event), never with the value.

use std::{net::IpAddr, sync::Arc};

use serde::Serialize;
use thiserror::Error;

use crate::{
    audit::{AuditEvent, AuditLog},
    identity::token_sha256,
    policy::{watch::PolicyHandle, Subject},
    proxy::Authenticator,
    vault::Vault,
};

#[derive(Debug, Error)]
pub enum DetokenizeError {
    #[error("the access token was refused: {0}")]
    Unauthenticated(String),
    #[error("{principal} may not reveal tokens of masking rule {rule}: {reason}")]
    Denied {
        principal: String,
        rule: String,
        reason: String,
    },
    #[error("the vault holds no such token")]
    UnknownToken,
    #[error("no vault is configured (vault.key_file is missing or unreadable)")]
    NoVault,
    #[error("the vault is unavailable: {0}")]
    Unavailable(String),
}

impl DetokenizeError {
    /// The HTTP status the admin socket answers with.
    pub fn status(&self) -> &'static str {
        match self {
            DetokenizeError::Unauthenticated(_) => "401 Unauthorized",
            DetokenizeError::Denied { .. } => "403 Forbidden",
            DetokenizeError::UnknownToken => "404 Not Found",
            DetokenizeError::NoVault | DetokenizeError::Unavailable(_) => "503 Service Unavailable",
        }
    }
}

/// The answer: the value (text when it is UTF-8, else base64) and what made the token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detokenized {
    pub rule: String,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

pub struct Detokenizer {
    pub authenticator: Arc<Authenticator>,
    pub vault: Option<Vault>,
    pub policy: PolicyHandle,
    pub audit: AuditLog,
}

/// Requests come over the local socket: networks in `reveal` see loopback.
const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

impl Detokenizer {
    pub async fn detokenize(
        &self,
        token: &str,
        access_token: &str,
    ) -> Result<Detokenized, DetokenizeError> {
        let mut event = Outcome {
            principal: String::new(),
            groups: Vec::new(),
            token_sha256: token_sha256(token),
            rule: None,
            scope: None,
        };
        let result = self.reveal(token, access_token, &mut event).await;
        let (outcome, detail) = match &result {
            Ok(_) => ("revealed", None),
            Err(e @ DetokenizeError::Unauthenticated(_)) => {
                ("unauthenticated", Some(e.to_string()))
            }
            Err(e @ DetokenizeError::Denied { .. }) => ("denied", Some(e.to_string())),
            Err(DetokenizeError::UnknownToken) => ("unknown_token", None),
            Err(e) => ("error", Some(e.to_string())),
        };
        tracing::info!(
            principal = %event.principal,
            rule = event.rule.as_deref().unwrap_or("-"),
            outcome,
            "detokenize"
        );
        self.audit
            .emit(AuditEvent::Detokenize {
                principal: event.principal,
                groups: event.groups,
                token_sha256: event.token_sha256,
                rule: event.rule,
                scope: event.scope,
                outcome,
                detail,
            })
            .await;
        result
    }

    async fn reveal(
        &self,
        token: &str,
        access_token: &str,
        event: &mut Outcome,
    ) -> Result<Detokenized, DetokenizeError> {
        let identity = self
            .authenticator
            .validate_token(access_token)
            .await
            .map_err(|e| DetokenizeError::Unauthenticated(e.to_string()))?;
        event.principal.clone_from(&identity.principal);
        event.groups.clone_from(&identity.groups);
        let vault = self.vault.as_ref().ok_or(DetokenizeError::NoVault)?;
        let found = vault
            .lookup(&[token.to_owned()])
            .await
            .map_err(|e| DetokenizeError::Unavailable(e.to_string()))?;
        let revealed = found.get(token).ok_or(DetokenizeError::UnknownToken)?;
        let rule = revealed
            .scope
            .split_once('/')
            .map_or(revealed.scope.as_str(), |(rule, _)| rule)
            .to_owned();
        event.rule = Some(rule.clone());
        event.scope = Some(revealed.scope.clone());
        let policy = self.policy.current();
        let subject = Subject {
            principal: &identity.principal,
            groups: &identity.groups,
            client_id: identity.client_id.as_deref(),
            source: LOCAL,
        };
        policy
            .set
            .may_reveal(&rule, &subject)
            .map_err(|refusal| DetokenizeError::Denied {
                principal: identity.principal.clone(),
                rule: rule.clone(),
                reason: refusal.to_string(),
            })?;
        let (value, value_base64) = match std::str::from_utf8(&revealed.value) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(&revealed.value);
                (None, Some(b64))
            }
        };
        Ok(Detokenized {
            rule,
            scope: revealed.scope.clone(),
            value,
            value_base64,
        })
    }
}

/// What the audit event says, filled in as far as the request got.
struct Outcome {
    principal: String,
    groups: Vec<String>,
    token_sha256: String,
    rule: Option<String>,
    scope: Option<String>,
}
