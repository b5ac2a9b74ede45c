//! The rules of a policy set once parsed: what each matches, and where it was written.

use std::{fmt, net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::{content::ContentRule, glob::Glob, Operation, Resource, ResourceKind, Subject};
use crate::mqtt::topic::TopicFilter;

/// The principal of sessions that never authenticated. Such sessions have no groups, and
/// `principals: ["*"]` does not match them: a rule must name `ANONYMOUS` to grant them anything.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// What an access rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    /// Wins over everything: any matching deny refuses the request.
    Deny,
    /// Reserved for human approval (a later release): parsed and validated, and until then
    /// refuses like a deny, after the deny rules and before the allow rules.
    Approve,
    Allow,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Approve => "approve",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Names a rule and where it is written, for audit events and explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub name: Arc<str>,
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.file, self.line)
    }
}

/// Who a rule is about. Identity (principals, groups) is required; client ids and networks,
/// when present, narrow it further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subjects {
    pub principals: Vec<String>,
    /// `principals: ["*"]`: every authenticated principal.
    pub any_principal: bool,
    pub groups: Vec<String>,
    pub client_ids: Option<Vec<Glob>>,
    pub networks: Option<Vec<IpNet>>,
}

impl Subjects {
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        let anonymous = s.principal == ANONYMOUS;
        let identity = (self.any_principal && !anonymous)
            || self.principals.iter().any(|p| p == s.principal)
            // Anonymous sessions have no groups, whatever the caller says.
            || (!anonymous && s.groups.iter().any(|g| self.groups.contains(g)));
        identity
            && self.client_ids.as_ref().is_none_or(|globs| {
                s.client_id
                    .is_some_and(|id| globs.iter().any(|g| g.matches(id)))
            })
            && self.networks.as_ref().is_none_or(|nets| {
                // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
                let ip: IpAddr = s.source.to_canonical();
                nets.iter().any(|n| n.contains(&ip))
            })
    }

    /// Every subject `other` matches, `self` matches too (proven, not guessed).
    pub fn covers(&self, other: &Subjects) -> bool {
        let principals = (!other.any_principal || self.any_principal)
            && other
                .principals
                .iter()
                .all(|p| self.principals.contains(p) || (self.any_principal && p != ANONYMOUS));
        let groups = other
            .groups
            .iter()
            .all(|g| self.any_principal || self.groups.contains(g));
        let clients = match (&self.client_ids, &other.client_ids) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|t| mine.iter().any(|m| m.covers(t))),
        };
        let networks = match (&self.networks, &other.networks) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|t| mine.iter().any(|m| m.contains(t))),
        };
        principals && groups && clients && networks
    }
}

/// What a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resources {
    pub topics: Vec<Glob>,
    pub groups: Vec<Glob>,
    pub transactional_ids: Vec<Glob>,
    pub cluster: bool,
    /// MQTT topic filters.
    pub mqtt_topics: Vec<TopicFilter>,
}

impl Resources {
    pub fn has_kind(&self, kind: ResourceKind) -> bool {
        match kind {
            ResourceKind::Cluster => self.cluster,
            ResourceKind::MqttTopic => !self.mqtt_topics.is_empty(),
            _ => !self.globs(kind).is_empty(),
        }
    }

    pub fn globs(&self, kind: ResourceKind) -> &[Glob] {
        match kind {
            ResourceKind::Topic => &self.topics,
            ResourceKind::Group => &self.groups,
            ResourceKind::TransactionalId => &self.transactional_ids,
            ResourceKind::Cluster | ResourceKind::MqttTopic => &[],
        }
    }

    pub fn matches(&self, r: Resource<'_>) -> bool {
        match r.kind {
            // There is one cluster; its name carries no information.
            ResourceKind::Cluster => self.cluster,
            ResourceKind::MqttTopic => self.mqtt_topics.iter().any(|f| f.matches(r.name)),
            kind => self.globs(kind).iter().any(|g| g.matches(r.name)),
        }
    }

    pub fn covers(&self, other: &Resources) -> bool {
        (!other.cluster || self.cluster)
            && other
                .mqtt_topics
                .iter()
                .all(|t| self.mqtt_topics.iter().any(|m| m.covers(t)))
            && [
                ResourceKind::Topic,
                ResourceKind::Group,
                ResourceKind::TransactionalId,
            ]
            .into_iter()
            .all(|k| {
                other
                    .globs(k)
                    .iter()
                    .all(|t| self.globs(k).iter().any(|m| m.covers(t)))
            })
    }
}

/// A set of operations as a bit mask: cheap containment tests for the whole-set checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct OpSet(u16);

impl OpSet {
    pub fn bit(op: Operation) -> u16 {
        let i = Operation::ALL.iter().position(|o| *o == op).unwrap_or(0);
        1 << i
    }

    pub fn insert(&mut self, op: Operation) -> bool {
        let had = self.contains(op);
        self.0 |= Self::bit(op);
        !had
    }

    pub fn contains(self, op: Operation) -> bool {
        self.0 & Self::bit(op) != 0
    }

    pub fn is_subset(self, other: OpSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }
}

/// An allow, deny or approve rule.
#[derive(Debug, Clone)]
pub(crate) struct AccessRule {
    pub at: RuleRef,
    pub column: usize,
    pub effect: Effect,
    pub subjects: Subjects,
    pub resources: Resources,
    pub operations: OpSet,
}

impl AccessRule {
    pub fn matches(&self, s: &Subject<'_>, op: Operation, r: Resource<'_>) -> bool {
        self.operations.contains(op)
            && op.applies_to().contains(&r.kind)
            && self.resources.matches(r)
            && self.subjects.matches(s)
    }

    /// Every request `other` matches, `self` matches too.
    pub fn covers(&self, other: &AccessRule) -> bool {
        // Cheapest test first: the whole-set check runs this for every pair of rules.
        other.operations.is_subset(self.operations)
            && self.subjects.covers(&other.subjects)
            && self.resources.covers(&other.resources)
    }

    /// Subjects, resources and operations as one canonical text (lists sorted, patterns
    /// normalized): two rules with the same key match exactly the same requests. Names cannot
    /// hold control characters, so `\0` separates fields unambiguously.
    pub fn scope_key(&self) -> String {
        fn sorted<I: IntoIterator<Item = String>>(items: I) -> String {
            let mut v: Vec<String> = items.into_iter().collect();
            v.sort();
            v.join("\u{1}")
        }
        fn globs(g: &[Glob]) -> String {
            sorted(g.iter().map(Glob::canonical))
        }
        let (s, r) = (&self.subjects, &self.resources);
        let client_ids = s.client_ids.as_deref().map(globs);
        let networks = s
            .networks
            .as_ref()
            .map(|n| sorted(n.iter().map(|n| n.to_string())));
        format!(
            "{:?}\0{}\0{}\0{}\0{:?}\0{:?}\0{}\0{}\0{}\0{}\0{}",
            self.operations,
            s.any_principal,
            sorted(s.principals.iter().cloned()),
            sorted(s.groups.iter().cloned()),
            client_ids,
            networks,
            r.cluster,
            globs(&r.topics),
            globs(&r.groups),
            globs(&r.transactional_ids),
            sorted(r.mqtt_topics.iter().map(|f| f.as_str().to_owned())),
        )
    }
}

/// A blocking rule on topics: immutability, size limits, forbidden content.
#[derive(Debug, Clone)]
pub(crate) struct BlockRule {
    pub at: RuleRef,
    pub column: usize,
    pub topics: Vec<Glob>,
    pub mqtt_topics: Vec<TopicFilter>,
    pub immutable: bool,
    pub max_record_bytes: Option<u64>,
    pub max_batch_bytes: Option<u64>,
    pub content: Vec<ContentRule>,
}

impl BlockRule {
    pub fn applies_to(&self, topic: &str) -> bool {
        self.topics.iter().any(|g| g.matches(topic))
    }

    pub fn applies_to_mqtt(&self, topic: &str) -> bool {
        self.mqtt_topics.iter().any(|f| f.matches(topic))
    }
}
