//! Keys decided once for the whole request, on the cluster: admin keys (`alter`, `describe`,
//! `alter-configs`, `describe-configs`) and the broker-to-broker and controller keys
//! (`cluster-action`). Most answers have a top-level error; the keys whose answers list their
//! items instead are in [`super::itemized`].

use kafka_protocol::messages::*;

use super::{
    itemized,
    partial::{respond, Refusal},
};
use crate::{
    kafka::authz::{AuthzError, Context, Outcome, Request},
    policy::{Operation, Resource},
};

/// Decides a request that is one operation on the cluster.
pub(super) fn authorize(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
    op: Operation,
) -> Result<Outcome, AuthzError> {
    // Keys whose refusal lists the request's items parse the body first, so a malformed
    // request is refused as such before any decision is recorded.
    let itemized = itemized::parse(request).map_err(|e| request.malformed(e))?;
    let resource = Resource::cluster();
    let Some(refusal) = Refusal::of(ctx.check.check(op, resource), resource) else {
        return Ok(Outcome::Forward);
    };
    match itemized {
        Some(items) => items.refuse(request, refusal),
        None => refuse(request, op, refusal),
    }
}

/// The whole answer to a refused request whose response has a top-level error; the
/// connection is closed for the keys whose response has none.
fn refuse(request: &Request<'_>, op: Operation, refusal: Refusal) -> Result<Outcome, AuthzError> {
    let version = request.header.api_version;
    let code = refusal.code;
    let message = refusal.message();
    macro_rules! answer {
        ($ty:ty) => {
            respond(request, &<$ty>::default().with_error_code(code))
        };
        ($ty:ty, message) => {
            respond(
                request,
                &<$ty>::default()
                    .with_error_code(code)
                    .with_error_message(message),
            )
        };
    }
    match ApiKey::try_from(request.header.api_key) {
        Ok(ApiKey::DescribeAcls) => answer!(DescribeAclsResponse, message),
        // v1-2 have no error field: Kafka answers an unauthorized request with no log dirs.
        Ok(ApiKey::DescribeLogDirs) => answer!(DescribeLogDirsResponse),
        Ok(ApiKey::CreateDelegationToken) => answer!(CreateDelegationTokenResponse),
        Ok(ApiKey::RenewDelegationToken) => answer!(RenewDelegationTokenResponse),
        Ok(ApiKey::ExpireDelegationToken) => answer!(ExpireDelegationTokenResponse),
        Ok(ApiKey::DescribeDelegationToken) => answer!(DescribeDelegationTokenResponse),
        Ok(ApiKey::AlterPartitionReassignments) => {
            answer!(AlterPartitionReassignmentsResponse, message)
        }
        Ok(ApiKey::ListPartitionReassignments) => {
            answer!(ListPartitionReassignmentsResponse, message)
        }
        Ok(ApiKey::DescribeClientQuotas) => answer!(DescribeClientQuotasResponse, message),
        Ok(ApiKey::DescribeUserScramCredentials) => {
            answer!(DescribeUserScramCredentialsResponse, message)
        }
        Ok(ApiKey::Vote) => answer!(VoteResponse),
        Ok(ApiKey::BeginQuorumEpoch) => answer!(BeginQuorumEpochResponse),
        Ok(ApiKey::EndQuorumEpoch) => answer!(EndQuorumEpochResponse),
        Ok(ApiKey::DescribeQuorum) if version >= 2 => answer!(DescribeQuorumResponse, message),
        Ok(ApiKey::DescribeQuorum) => answer!(DescribeQuorumResponse),
        Ok(ApiKey::AlterPartition) => answer!(AlterPartitionResponse),
        Ok(ApiKey::UpdateFeatures) => answer!(UpdateFeaturesResponse, message),
        Ok(ApiKey::Envelope) => answer!(EnvelopeResponse),
        Ok(ApiKey::FetchSnapshot) => answer!(FetchSnapshotResponse),
        Ok(ApiKey::DescribeCluster) => answer!(DescribeClusterResponse, message),
        Ok(ApiKey::BrokerRegistration) => answer!(BrokerRegistrationResponse),
        Ok(ApiKey::BrokerHeartbeat) => answer!(BrokerHeartbeatResponse),
        Ok(ApiKey::UnregisterBroker) => answer!(UnregisterBrokerResponse, message),
        Ok(ApiKey::AllocateProducerIds) => answer!(AllocateProducerIdsResponse),
        Ok(ApiKey::ControllerRegistration) => answer!(ControllerRegistrationResponse, message),
        Ok(ApiKey::AssignReplicasToDirs) => answer!(AssignReplicasToDirsResponse),
        Ok(ApiKey::ListConfigResources) => answer!(ListConfigResourcesResponse),
        Ok(ApiKey::AddRaftVoter) => answer!(AddRaftVoterResponse, message),
        Ok(ApiKey::RemoveRaftVoter) => answer!(RemoveRaftVoterResponse, message),
        Ok(ApiKey::UpdateRaftVoter) => answer!(UpdateRaftVoterResponse),
        // WriteTxnMarkers and the share-group state keys answer per item and nothing else.
        _ => Err(AuthzError::Refused {
            api: request.api_name(),
            reason: format!("{op} on the cluster refused; the answer has no error field to say so"),
        }),
    }
}
