//! Consumer groups (classic, KIP-848 and share groups) and transactions: which group,
//! transactional id and topic each request names, checked as Kafka's own authorizer checks
//! them (KafkaApis), and answered with the errors a broker gives for the refused part.
//!
//! Kafka's operations map onto ours: Read on a group is `consume` (membership) except when
//! committing offsets (`commit`); Read on a topic is `consume`; Describe is `describe`; Write
//! on a transactional id is `transactions`; Delete is `delete`.

mod common;
mod groups;
mod offsets;
mod share;
#[cfg(test)]
mod tests;
mod txn;

use kafka_protocol::messages::ApiKey;

use super::{table::ApiAccess, AuthzError, Context, Outcome, Request};
use crate::policy::{Operation::*, ResourceKind::*};

pub const TABLE: &[ApiAccess] = &[
    ApiAccess::new(8, "OffsetCommit", &[(Commit, Group), (Consume, Topic)], 9,
        "group refused: every partition fails; refused topics fail, the rest is committed; v10 (topic ids) is not parsed"),
    ApiAccess::new(9, "OffsetFetch", &[(Describe, Group), (Describe, Topic)], 9,
        "per group; named topics checked, all-topics answers filtered to describable topics; v10 (topic ids) is not parsed"),
    ApiAccess::new(10, "FindCoordinator", &[(Describe, Group), (Describe, TransactionalId), (ClusterAction, Cluster)], 6,
        "key type 0 group, 1 transactional id, 2 share coordinator (cluster-action); v4+ per key"),
    ApiAccess::new(11, "JoinGroup", &[(Consume, Group)], 9, ""),
    ApiAccess::new(12, "Heartbeat", &[(Consume, Group)], 4, ""),
    ApiAccess::new(13, "LeaveGroup", &[(Consume, Group)], 5, "refused: top-level error, as Kafka"),
    ApiAccess::new(14, "SyncGroup", &[(Consume, Group)], 5, ""),
    ApiAccess::new(15, "DescribeGroups", &[(Describe, Group)], 6,
        "authorized_operations in answers are the broker's view of the interceptor's own principal"),
    ApiAccess::new(16, "ListGroups", &[(Describe, Cluster), (Describe, Group)], 5,
        "describe on the cluster lists every group; otherwise the answer keeps describable groups"),
    ApiAccess::new(22, "InitProducerId", &[(Transactions, TransactionalId), (IdempotentWrite, Cluster)], 5,
        "without a transactional id: idempotent-write on the cluster (Kafka also accepts Write on any topic; grant idempotent-write to producers)"),
    ApiAccess::new(24, "AddPartitionsToTxn", &[(Transactions, TransactionalId), (Produce, Topic), (ClusterAction, Cluster)], 5,
        "v0-3: any refused topic fails the request (others OPERATION_NOT_ATTEMPTED, as Kafka); v4+ is broker-to-broker: cluster-action"),
    ApiAccess::new(25, "AddOffsetsToTxn", &[(Transactions, TransactionalId), (Commit, Group)], 4, ""),
    ApiAccess::new(26, "EndTxn", &[(Transactions, TransactionalId)], 5, ""),
    ApiAccess::new(28, "TxnOffsetCommit", &[(Transactions, TransactionalId), (Commit, Group), (Consume, Topic)], 5,
        "refused topics fail, the rest is committed"),
    ApiAccess::new(42, "DeleteGroups", &[(Delete, Group)], 2, ""),
    ApiAccess::new(47, "OffsetDelete", &[(Delete, Group), (Consume, Topic)], 0, ""),
    ApiAccess::new(65, "DescribeTransactions", &[(Describe, TransactionalId)], 0, ""),
    ApiAccess::new(66, "ListTransactions", &[(Describe, TransactionalId)], 2,
        "the answer keeps describable transactional ids"),
    ApiAccess::new(68, "ConsumerGroupHeartbeat", &[(Consume, Group), (Describe, Topic)], 1,
        "any refused subscribed topic: TOPIC_AUTHORIZATION_FAILED (as Kafka 4.0); a subscription regex is forwarded unchecked: Fetch and OffsetCommit enforce consume per topic"),
    ApiAccess::new(69, "ConsumerGroupDescribe", &[(Describe, Group), (Describe, Topic)], 1,
        "a group whose assignments name a topic the client may not describe answers TOPIC_AUTHORIZATION_FAILED (as Kafka 4.0)"),
    ApiAccess::new(76, "ShareGroupHeartbeat", &[(Consume, Group), (Describe, Topic)], 1,
        "whole request refused when the group or any subscribed topic is"),
    ApiAccess::new(77, "ShareGroupDescribe", &[(Describe, Group), (Describe, Topic)], 1,
        "a group whose assignments name a topic the client may not describe answers TOPIC_AUTHORIZATION_FAILED"),
    ApiAccess::new(78, "ShareFetch", &[(Consume, Group), (Consume, Topic)], 1,
        "whole request refused (top-level error) when the group or any topic is; unknown topic ids: UNKNOWN_TOPIC_ID; topics kept in the share session are not re-checked"),
    ApiAccess::new(79, "ShareAcknowledge", &[(Consume, Group), (Consume, Topic)], 1,
        "whole request refused (top-level error) when the group or any topic is; unknown topic ids: UNKNOWN_TOPIC_ID"),
    ApiAccess::new(90, "DescribeShareGroupOffsets", &[(Describe, Group), (Describe, Topic)], 0,
        "per group and topic, as OffsetFetch v8+; all-topics answers filtered to describable topics"),
    ApiAccess::new(91, "AlterShareGroupOffsets", &[(Consume, Group), (Consume, Topic)], 0,
        "whole request refused (top-level error) when the group or any topic is"),
    ApiAccess::new(92, "DeleteShareGroupOffsets", &[(Delete, Group), (Consume, Topic)], 0,
        "whole request refused (top-level error) when the group or any topic is"),
];

/// `None` when the api key is not this module's.
pub(super) fn authorize(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Option<Result<Outcome, AuthzError>> {
    let key = request.header.api_key;
    let access = TABLE.iter().find(|a| a.key == key)?;
    let version = request.header.api_version;
    let min = ApiKey::try_from(key).map_or(0, |k| k.valid_versions().min);
    if version < min || version > access.max_version {
        return Some(Err(AuthzError::UnsupportedVersion {
            api: access.name,
            version,
        }));
    }
    Some(match key {
        8 => offsets::offset_commit(request, ctx),
        9 => offsets::offset_fetch(request, ctx),
        10 => groups::find_coordinator(request, ctx),
        11..=14 => groups::membership(request, ctx),
        15 => groups::describe_groups(request, ctx),
        16 => groups::list_groups(request, ctx),
        22 => txn::init_producer_id(request, ctx),
        24 => txn::add_partitions_to_txn(request, ctx),
        25 => txn::add_offsets_to_txn(request, ctx),
        26 => txn::end_txn(request, ctx),
        28 => offsets::txn_offset_commit(request, ctx),
        42 => groups::delete_groups(request, ctx),
        47 => offsets::offset_delete(request, ctx),
        65 => txn::describe_transactions(request, ctx),
        66 => txn::list_transactions(request, ctx),
        68 => groups::consumer_group_heartbeat(request, ctx),
        69 => groups::consumer_group_describe(request, ctx),
        76 => share::share_group_heartbeat(request, ctx),
        77 => share::share_group_describe(request, ctx),
        78 | 79 => share::share_fetch_or_acknowledge(request, ctx),
        90 => share::describe_share_group_offsets(request, ctx),
        91 | 92 => share::alter_or_delete_share_group_offsets(request, ctx),
        _ => return None,
    })
}
