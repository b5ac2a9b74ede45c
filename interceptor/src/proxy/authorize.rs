//! Policy decisions for one connection's requests: the session's [`SessionCheck`] pointed at
//! each request, the protocol layer's [`authz::authorize`], and the decisions handed to the
//! audit log before the request's effect (forwarding or answering) happens.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;

use super::{
    access::SessionCheck,
    auth::Identity,
    masking::{
        fetch::FetchRewrite,
        produce::{self, Sender},
    },
};
use crate::{
    audit::AuditLog,
    kafka::transform::{FETCH, SHARE_FETCH},
    kafka::{
        authz::{self, AuthzError, AuthzSettings, ConnectionState, Context, Outcome, TopicIds},
        inflight::AsyncRewrite,
        RequestHeader,
    },
    policy::{
        watch::{ActivePolicy, PolicyHandle},
        AccessCheck, Subject,
    },
};

pub struct RequestAuthz {
    session: u64,
    client: SocketAddr,
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
        (session, client): (u64, SocketAddr),
        check: Arc<SessionCheck>,
        topic_ids: Arc<TopicIds>,
        policy: PolicyHandle,
        settings: AuthzSettings,
        audit: AuditLog,
    ) -> Self {
        Self {
            session,
            client,
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
        let version = Arc::clone(&policy.version);
        let fetch_masking = matches!(header.api_key, FETCH | SHARE_FETCH)
            && policy.set.fetch_masking_possible(&Subject {
                principal: &identity.principal,
                groups: &identity.groups,
                client_id: header
                    .client_id
                    .as_deref()
                    .and_then(|c| std::str::from_utf8(c).ok()),
                source: self.client.ip(),
            });
        self.check.begin(Arc::clone(&policy), identity, header);
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
        let masked = self.check.take_masked();
        let outcome = match outcome {
            Ok(outcome) if !masked.is_empty() => {
                let sender = Sender {
                    session: self.session,
                    client: self.client,
                    principal: &identity.principal,
                    correlation_id: header.correlation_id,
                    policy_version: version,
                };
                produce::finish(
                    self.check.masking(),
                    &sender,
                    header,
                    frame,
                    outcome,
                    masked,
                    &self.topic_ids,
                    &self.audit,
                )
                .await
            }
            other => other,
        };
        let then = fetch_masking.then(|| self.fetch_filter(policy, header));
        outcome.map(|o| (o, then))
    }

    /// The masking of a Fetch or ShareFetch answer for this session's consumer.
    fn fetch_filter(&self, policy: Arc<ActivePolicy>, header: &RequestHeader) -> AsyncRewrite {
        FetchRewrite {
            masking: Arc::clone(self.check.masking()),
            policy,
            consumer: self.check.consumer(self.session),
            api_key: header.api_key,
            api_version: header.api_version,
            correlation_id: header.correlation_id,
            topic_ids: Arc::clone(&self.topic_ids),
            audit: self.audit.clone(),
        }
        .into_filter()
    }
}

#[cfg(test)]
impl RequestAuthz {
    /// The fetch masking filter `authorize` would attach for `identity`, without authorizing.
    pub fn consumer_filter(
        &mut self,
        identity: &Identity,
        header: &RequestHeader,
    ) -> Option<AsyncRewrite> {
        let policy = self.policy.current();
        self.check.begin(Arc::clone(&policy), identity, header);
        let subject = Subject {
            principal: &identity.principal,
            groups: &identity.groups,
            client_id: None,
            source: self.client.ip(),
        };
        policy
            .set
            .fetch_masking_possible(&subject)
            .then(|| self.fetch_filter(Arc::clone(&policy), header))
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
