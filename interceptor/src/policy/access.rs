//! The vocabulary shared by policy files and the protocol layers: who asks ([`Subject`]), what
//! they want to do ([`Operation`]) and to what ([`Resource`]), and the answer ([`Check`]).
//!
//! Operations follow Kafka's own ACL model (KIP-11) where it has one, under names a security
//! engineer reads without the Kafka docs: `produce` is Kafka's Write on a topic, `consume` its
//! Read on a topic or a consumer group, `transactions` its Write on a transactional id.

use std::{fmt, net::IpAddr, str::FromStr};

/// One thing a request does to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Write records to a topic (Produce, AddPartitionsToTxn).
    Produce,
    /// Read records from a topic (Fetch, ShareFetch); on a group: be a member of it (JoinGroup,
    /// SyncGroup, Heartbeat, LeaveGroup, ConsumerGroupHeartbeat), as Kafka's Read on a group.
    Consume,
    /// See that a resource exists and its metadata, offsets or members.
    Describe,
    /// Create a topic (CreateTopics, or auto-creation through Metadata).
    Create,
    /// Delete a topic or a consumer group (or a group's committed offsets).
    Delete,
    /// Delete records from a topic up to an offset (DeleteRecords).
    DeleteRecords,
    /// Change a topic's partitions (CreatePartitions) or the cluster's layout and ACLs.
    Alter,
    /// Change configuration (AlterConfigs, IncrementalAlterConfigs, client quotas).
    AlterConfigs,
    /// Read configuration (DescribeConfigs, client quotas).
    DescribeConfigs,
    /// Commit a consumer group's offsets (OffsetCommit, TxnOffsetCommit, AddOffsetsToTxn).
    Commit,
    /// Produce idempotently without a transactional id (InitProducerId on the cluster).
    IdempotentWrite,
    /// Use a transactional id (InitProducerId, AddPartitionsToTxn, EndTxn, transactional
    /// Produce).
    Transactions,
    /// Broker-to-broker and controller requests. No client needs it.
    ClusterAction,
    /// MQTT: send a PUBLISH (or a will message) to a topic.
    Publish,
    /// MQTT: receive messages on a topic, through a SUBSCRIBE filter and each delivery.
    Subscribe,
    /// MQTT: publish with the RETAIN flag (a message kept for future subscribers), on top of
    /// `publish`.
    Retain,
}

impl Operation {
    pub const ALL: [Operation; 16] = [
        Operation::Produce,
        Operation::Consume,
        Operation::Describe,
        Operation::Create,
        Operation::Delete,
        Operation::DeleteRecords,
        Operation::Alter,
        Operation::AlterConfigs,
        Operation::DescribeConfigs,
        Operation::Commit,
        Operation::IdempotentWrite,
        Operation::Transactions,
        Operation::ClusterAction,
        Operation::Publish,
        Operation::Subscribe,
        Operation::Retain,
    ];

    /// The name used in policy files and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Describe => "describe",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::DeleteRecords => "delete-records",
            Operation::Alter => "alter",
            Operation::AlterConfigs => "alter-configs",
            Operation::DescribeConfigs => "describe-configs",
            Operation::Commit => "commit",
            Operation::IdempotentWrite => "idempotent-write",
            Operation::Transactions => "transactions",
            Operation::ClusterAction => "cluster-action",
            Operation::Publish => "publish",
            Operation::Subscribe => "subscribe",
            Operation::Retain => "retain",
        }
    }

    /// The resource kinds this operation can apply to; a rule naming any other is an error.
    pub fn applies_to(self) -> &'static [ResourceKind] {
        use ResourceKind::*;
        match self {
            Operation::Produce | Operation::Create | Operation::DeleteRecords => &[Topic],
            Operation::Consume => &[Topic, Group],
            Operation::Describe => &[Topic, Group, TransactionalId, Cluster],
            Operation::Delete => &[Topic, Group],
            Operation::Alter => &[Topic, Cluster],
            Operation::AlterConfigs | Operation::DescribeConfigs => &[Topic, Group, Cluster],
            Operation::Commit => &[Group],
            Operation::IdempotentWrite | Operation::ClusterAction => &[Cluster],
            Operation::Transactions => &[TransactionalId],
            Operation::Publish | Operation::Subscribe | Operation::Retain => &[MqttTopic],
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Operation::ALL.iter().map(|op| op.as_str()).collect();
                format!("unknown operation {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// The kinds of resource a Kafka request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Topic,
    /// A consumer group (classic, KIP-848 or share group).
    Group,
    TransactionalId,
    /// The cluster as a whole (one per broker node's cluster); its name is [`CLUSTER_NAME`].
    Cluster,
    /// An MQTT topic name (rules name MQTT topic filters).
    MqttTopic,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::TransactionalId => "transactional-id",
            ResourceKind::Cluster => "cluster",
            ResourceKind::MqttTopic => "mqtt-topic",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of the cluster resource, as Kafka's ACLs call it.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// One resource, borrowed from the request that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resource<'a> {
    pub kind: ResourceKind,
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    pub fn topic(name: &'a str) -> Self {
        Self {
            kind: ResourceKind::Topic,
            name,
        }
    }

    pub fn group(name: &'a str) -> Self {
        Self {
            kind: ResourceKind::Group,
            name,
        }
    }

    pub fn transactional_id(name: &'a str) -> Self {
        Self {
            kind: ResourceKind::TransactionalId,
            name,
        }
    }

    pub fn mqtt_topic(name: &'a str) -> Self {
        Self {
            kind: ResourceKind::MqttTopic,
            name,
        }
    }

    pub fn cluster() -> Resource<'static> {
        Resource {
            kind: ResourceKind::Cluster,
            name: CLUSTER_NAME,
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// Who sends a request: the authenticated identity and where it connects from.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub principal: &'a str,
    pub groups: &'a [String],
    /// The request header's client id; `None` when the client sent none (or a null one).
    pub client_id: Option<&'a str>,
    pub source: IpAddr,
}

/// The answer for one operation on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Allowed,
    /// Not allowed: the client gets the resource's *_AUTHORIZATION_FAILED error.
    Denied,
    /// Allowed in principle but refused by a blocking rule (immutable topic, size limit,
    /// forbidden content): the client gets POLICY_VIOLATION (44).
    Violation,
}

impl Check {
    pub fn is_allowed(self) -> bool {
        self == Check::Allowed
    }
}

/// Decides, for one session and one request, each operation the request performs. The
/// protocol layer calls it once per resource (and once per partition's records for Produce);
/// the implementation records every decision in the audit trail.
pub trait AccessCheck: Send + Sync {
    fn check(&self, op: Operation, resource: Resource<'_>) -> Check;

    /// The records a client produces to one partition of a topic it may write to (`records`
    /// is the partition's raw record-batch bytes): size limits and forbidden content.
    fn check_records(&self, topic: &str, partition: i32, records: &[u8]) -> Check;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
            assert!(!op.applies_to().is_empty());
        }
        assert!("write"
            .parse::<Operation>()
            .unwrap_err()
            .contains("produce"));
    }
}
