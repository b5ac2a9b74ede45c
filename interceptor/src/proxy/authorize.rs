//! Policy decisions for one connection's requests: the session's [`SessionCheck`] pointed at
//! each request, the protocol layer's [`authz::authorize`], and the decisions handed to the
//! audit log before the request's effect (forwarding or answering) happens.

use std::sync::Arc;

use bytes::Bytes;

use super::{access::SessionCheck, auth::Identity};
use crate::{
    audit::AuditLog,
    kafka::{
        authz::{self, AuthzError, AuthzSettings, ConnectionState, Context, Outcome, TopicIds},
        inflight::AsyncRewrite,
        RequestHeader,
    },
    policy::{watch::PolicyHandle, AccessCheck},
};

pub struct RequestAuthz {
    check: Arc<SessionCheck>,
    as_dyn: Arc<dyn AccessCheck>,
    state: ConnectionState,
    topic_ids: Arc<TopicIds>,
    policy: PolicyHandle,
    settings: AuthzSettings,
    audit: AuditLog,
}

impl RequestAuthz {
    pub fn new(
        check: Arc<SessionCheck>,
        topic_ids: Arc<TopicIds>,
        policy: PolicyHandle,
        settings: AuthzSettings,
        audit: AuditLog,
    ) -> Self {
        Self {
            as_dyn: Arc::clone(&check) as Arc<dyn AccessCheck>,
            check,
            state: ConnectionState::default(),
            topic_ids,
            policy,
            settings,
            audit,
        }
    }

    /// The audit side of the response direction (rewrites that check, like Metadata's).
    pub fn response_audit(&self) -> ResponseAudit {
        ResponseAudit {
            check: Arc::clone(&self.check),
            audit: self.audit.clone(),
        }
    }

    /// Decides one request under the policy in force now; its decisions are in the audit
    /// queue when this returns. The second part rewrites the broker's answer after the
    /// outcome's own rewrite (masking of fetched records).
    pub async fn authorize(
        &mut self,
        identity: &Identity,
        header: &RequestHeader,
        frame: &Bytes,
    ) -> Result<(Outcome, Option<AsyncRewrite>), AuthzError> {
        let policy = self.policy.current();
        let generation = policy.generation;
        self.check.begin(policy, identity, header);
        let outcome = authz::authorize(
            &authz::Request { header, frame },
            &mut Context {
                check: &self.as_dyn,
                state: &mut self.state,
                topic_ids: &self.topic_ids,
                policy_generation: generation,
                settings: self.settings,
            },
        );
        flush(&self.check, &self.audit).await;
        outcome.map(|o| (o, None))
    }
}

/// Hands decisions made while rewriting responses to the audit log.
pub struct ResponseAudit {
    check: Arc<SessionCheck>,
    audit: AuditLog,
}

impl ResponseAudit {
    pub async fn flush(&self) {
        flush(&self.check, &self.audit).await;
    }
}

async fn flush(check: &SessionCheck, audit: &AuditLog) {
    let (events, version) = check.take_events();
    for event in events {
        audit.emit_under(event, Arc::clone(&version)).await;
    }
}
