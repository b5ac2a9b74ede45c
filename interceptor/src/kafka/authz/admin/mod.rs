//! Administration and cluster keys: topic administration (per topic, partially forwarded),
//! configs (per resource), ACLs, cluster-level admin keys and the broker-to-broker and
//! controller keys no client needs.
//!
//! Layout: [`partial`] holds what every per-item key shares (memoized checks, splicing the
//! allowed items, merging the broker's answer with the refused ones); [`topics`], [`configs`]
//! and [`cluster`] (with [`itemized`]) parse their keys' requests.

mod cluster;
mod configs;
mod itemized;
mod partial;
mod topics;

#[cfg(test)]
mod tests;

use kafka_protocol::messages::ApiKey;

use super::{table::ApiAccess, AuthzError, Context, Outcome, Request};
use crate::policy::{
    Operation::{self, *},
    ResourceKind::{self, *},
};

const ON_CLUSTER_DESCRIBE: &[(Operation, ResourceKind)] = &[(Describe, Cluster)];
const ON_CLUSTER_ALTER: &[(Operation, ResourceKind)] = &[(Alter, Cluster)];
const ON_CLUSTER_ACTION: &[(Operation, ResourceKind)] = &[(ClusterAction, Cluster)];
const CONFIG_KINDS_DESCRIBE: &[(Operation, ResourceKind)] = &[
    (DescribeConfigs, Topic),
    (DescribeConfigs, Group),
    (DescribeConfigs, Cluster),
];
const CONFIG_KINDS_ALTER: &[(Operation, ResourceKind)] = &[
    (AlterConfigs, Topic),
    (AlterConfigs, Group),
    (AlterConfigs, Cluster),
];

const CLUSTER_ACTION_CLOSES: &str =
    "broker-to-broker; refused: connection closed (the answer has no top-level error)";
const CLUSTER_ACTION_ANSWERS: &str =
    "broker-to-broker or controller; refused: CLUSTER_AUTHORIZATION_FAILED";
const CONFIG_NOTE: &str = "per resource: topic, group, or the cluster for broker, broker-logger \
                           and client-metrics resources; an unknown type gets INVALID_REQUEST";

/// Every key this module owns. `max_version` is the crate's highest version: every parser here
/// handles all versions from the crate's minimum to its maximum.
#[rustfmt::skip]
pub const TABLE: &[ApiAccess] = &[
    ApiAccess::new(19, "CreateTopics", &[(Create, Topic)], 7,
        "per topic; refused topics are answered by the interceptor, the rest forwarded"),
    ApiAccess::new(20, "DeleteTopics", &[(Delete, Topic)], 6,
        "per topic; v6 topic ids are resolved from learned Metadata, an unknown id gets \
         UNKNOWN_TOPIC_ID"),
    ApiAccess::new(21, "DeleteRecords", &[(DeleteRecords, Topic)], 2, "per topic"),
    ApiAccess::new(27, "WriteTxnMarkers", ON_CLUSTER_ACTION, 1, CLUSTER_ACTION_CLOSES),
    ApiAccess::new(29, "DescribeAcls", ON_CLUSTER_DESCRIBE, 3, "Kafka's Describe on the cluster"),
    ApiAccess::new(30, "CreateAcls", ON_CLUSTER_ALTER, 3,
        "Kafka's Alter on the cluster; refused: every creation carries the error"),
    ApiAccess::new(31, "DeleteAcls", ON_CLUSTER_ALTER, 3,
        "Kafka's Alter on the cluster; refused: every filter carries the error"),
    ApiAccess::new(32, "DescribeConfigs", CONFIG_KINDS_DESCRIBE, 4,
        CONFIG_NOTE),
    ApiAccess::new(33, "AlterConfigs", CONFIG_KINDS_ALTER, 2,
        CONFIG_NOTE),
    ApiAccess::new(34, "AlterReplicaLogDirs", ON_CLUSTER_ALTER, 2,
        "refused: every partition carries the error"),
    ApiAccess::new(35, "DescribeLogDirs", ON_CLUSTER_DESCRIBE, 4,
        "refused: v1-2 get an empty answer, as Kafka gives"),
    ApiAccess::new(37, "CreatePartitions", &[(Alter, Topic)], 3, "per topic"),
    ApiAccess::new(38, "CreateDelegationToken", ON_CLUSTER_ALTER, 3,
        "Kafka checks tokens per owner (CreateTokens on a user); the interceptor asks alter \
         on the cluster"),
    ApiAccess::new(39, "RenewDelegationToken", ON_CLUSTER_ALTER, 2,
        "Kafka checks the token's owner; the interceptor asks alter on the cluster"),
    ApiAccess::new(40, "ExpireDelegationToken", ON_CLUSTER_ALTER, 2,
        "Kafka checks the token's owner; the interceptor asks alter on the cluster"),
    ApiAccess::new(41, "DescribeDelegationToken", ON_CLUSTER_DESCRIBE, 3,
        "Kafka checks DescribeTokens per owner; the interceptor asks describe on the cluster"),
    ApiAccess::new(43, "ElectLeaders", ON_CLUSTER_ALTER, 2,
        "refused: every partition carries the error; a v0 election of all partitions closes \
         the connection"),
    ApiAccess::new(44, "IncrementalAlterConfigs", CONFIG_KINDS_ALTER, 1,
        CONFIG_NOTE),
    ApiAccess::new(45, "AlterPartitionReassignments", ON_CLUSTER_ALTER, 1, ""),
    ApiAccess::new(46, "ListPartitionReassignments", ON_CLUSTER_DESCRIBE, 0, ""),
    ApiAccess::new(48, "DescribeClientQuotas", &[(DescribeConfigs, Cluster)], 1, ""),
    ApiAccess::new(49, "AlterClientQuotas", &[(AlterConfigs, Cluster)], 1,
        "refused: every entry carries the error"),
    ApiAccess::new(50, "DescribeUserScramCredentials", ON_CLUSTER_DESCRIBE, 0, ""),
    ApiAccess::new(51, "AlterUserScramCredentials", ON_CLUSTER_ALTER, 0,
        "refused: every user carries the error"),
    ApiAccess::new(52, "Vote", ON_CLUSTER_ACTION, 2, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(53, "BeginQuorumEpoch", ON_CLUSTER_ACTION, 1, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(54, "EndQuorumEpoch", ON_CLUSTER_ACTION, 1, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(55, "DescribeQuorum", ON_CLUSTER_DESCRIBE, 2, ""),
    ApiAccess::new(56, "AlterPartition", ON_CLUSTER_ACTION, 3, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(57, "UpdateFeatures", ON_CLUSTER_ALTER, 2, ""),
    ApiAccess::new(58, "Envelope", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(59, "FetchSnapshot", ON_CLUSTER_ACTION, 1, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(60, "DescribeCluster", ON_CLUSTER_DESCRIBE, 2,
        "Kafka itself answers it without a check (Admin.describeCluster); the interceptor \
         asks describe on the cluster"),
    ApiAccess::new(62, "BrokerRegistration", ON_CLUSTER_ACTION, 4, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(63, "BrokerHeartbeat", ON_CLUSTER_ACTION, 1, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(64, "UnregisterBroker", ON_CLUSTER_ALTER, 0,
        "an admin operation (Admin.unregisterBroker): Kafka's Alter on the cluster"),
    ApiAccess::new(67, "AllocateProducerIds", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(70, "ControllerRegistration", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(73, "AssignReplicasToDirs", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(74, "ListConfigResources", &[(DescribeConfigs, Cluster)], 1,
        "formerly ListClientMetricsResources"),
    ApiAccess::new(80, "AddRaftVoter", ON_CLUSTER_ALTER, 0,
        "an admin operation (KIP-853): Kafka's Alter on the cluster"),
    ApiAccess::new(81, "RemoveRaftVoter", ON_CLUSTER_ALTER, 0,
        "an admin operation (KIP-853): Kafka's Alter on the cluster"),
    ApiAccess::new(82, "UpdateRaftVoter", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_ANSWERS),
    ApiAccess::new(83, "InitializeShareGroupState", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_CLOSES),
    ApiAccess::new(84, "ReadShareGroupState", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_CLOSES),
    ApiAccess::new(85, "WriteShareGroupState", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_CLOSES),
    ApiAccess::new(86, "DeleteShareGroupState", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_CLOSES),
    ApiAccess::new(87, "ReadShareGroupStateSummary", ON_CLUSTER_ACTION, 0, CLUSTER_ACTION_CLOSES),
];

/// `None` when the api key is not this module's.
pub(super) fn authorize(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Option<Result<Outcome, AuthzError>> {
    let entry = TABLE.iter().find(|a| a.key == request.header.api_key)?;
    Some(authorize_owned(entry, request, ctx))
}

fn authorize_owned(
    entry: &ApiAccess,
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let version = request.header.api_version;
    // Every key in TABLE is one the crate knows (a table test checks it).
    let min = ApiKey::try_from(entry.key).map_or(0, |k| k.valid_versions().min);
    if version < min || version > entry.max_version {
        return Err(AuthzError::UnsupportedVersion {
            api: entry.name,
            version,
        });
    }
    match entry.key {
        19 => topics::create_topics(request, ctx),
        20 => {
            let ids = ctx.topic_ids.clone();
            topics::delete_topics(request, ctx, &|id| ids.name(id))
        }
        21 => topics::delete_records(request, ctx),
        37 => topics::create_partitions(request, ctx),
        32 => configs::configs(request, ctx, configs::Kind::Describe),
        33 => configs::configs(request, ctx, configs::Kind::Alter),
        44 => configs::configs(request, ctx, configs::Kind::IncrementalAlter),
        _ => match entry.touches {
            [(op, Cluster)] => cluster::authorize(request, ctx, *op),
            // Unreachable: every other key in TABLE touches the cluster only.
            _ => Err(AuthzError::UnsupportedVersion {
                api: entry.name,
                version,
            }),
        },
    }
}
