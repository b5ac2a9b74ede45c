//! Consumer groups: finding their coordinator, membership (classic and KIP-848), describing,
//! listing and deleting them.

use kafka_protocol::messages::{
    consumer_group_describe_response::{self as cgd, ConsumerGroupDescribeResponse},
    delete_groups_response::{DeletableGroupResult, DeleteGroupsResponse},
    describe_groups_response::{DescribeGroupsResponse, DescribedGroup},
    find_coordinator_response::{Coordinator, FindCoordinatorResponse},
    BrokerId, ConsumerGroupHeartbeatResponse, GroupId, HeartbeatResponse, JoinGroupResponse,
    LeaveGroupResponse, ListGroupsResponse, SyncGroupResponse,
};

use super::common::{
    forward_or_answer, owned, parsed, per_item, per_name, refusal, refused_with_message, respond,
    rewrite, Array, Ask, Body, Refusal,
};
use crate::kafka::{
    authz::{AuthzError, Context, Outcome, Request},
    wire::Reader,
    HeaderError,
};
use crate::policy::{Operation::*, Resource, ResourceKind};

pub(super) fn find_coordinator(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let version = request.header.api_version;
    let mut ask = Ask::new(ctx.check);
    if version <= 3 {
        let (key, key_type) = parsed(request, || {
            let mut r = body.reader(request)?;
            let key = body.name(&mut r, "coordinator key")?;
            let key_type = if version >= 1 { r.i8("key type")? } else { 0 };
            Ok((key, key_type))
        })?;
        let Some(refused) = coordinator_refusal(&mut ask, key_type, key) else {
            return Ok(Outcome::Forward);
        };
        let mut answer = FindCoordinatorResponse::default()
            .with_error_code(refused.code)
            .with_node_id(BrokerId(-1))
            .with_port(-1);
        if version >= 1 {
            answer.error_message = refused.message();
        }
        return respond(request, &answer);
    }
    let (key_type, keys) = parsed(request, || {
        let mut r = body.reader(request)?;
        let key_type = r.i8("key type")?;
        Ok((key_type, body.names(&mut r, "coordinator keys")?))
    })?;
    let refusals: Vec<_> = (keys.items.iter())
        .map(|key| coordinator_refusal(&mut ask, key_type, key.value))
        .collect();
    per_item(
        request,
        &keys,
        &refusals,
        |&key, refused| {
            Coordinator::default()
                .with_key(owned(key))
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(refused.code)
                .with_error_message(refused.message())
        },
        |answer: &mut FindCoordinatorResponse| &mut answer.coordinators,
        None,
    )
}

/// Kafka: Describe on the group (0) or transactional id (1); the share coordinator (2, whose
/// keys are "group:topic id:partition") is for brokers only. Other key types are left to
/// the broker, which refuses them (INVALID_REQUEST).
fn coordinator_refusal(ask: &mut Ask, key_type: i8, key: &str) -> Option<Refusal> {
    match key_type {
        0 => refusal(ask, Describe, Resource::group(key)),
        1 => refusal(ask, Describe, Resource::transactional_id(key)),
        2 => refusal(ask, ClusterAction, Resource::cluster()),
        _ => None,
    }
}

/// JoinGroup, Heartbeat, LeaveGroup and SyncGroup: the group id comes first, and a refusal
/// is the answer's one error code (Kafka's LeaveGroup v3+ error answer has no members
/// either).
pub(super) fn membership(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let group = parsed(request, || {
        body.name(&mut body.reader(request)?, "group id")
    })?;
    let Some(refused) = refusal(&mut Ask::new(ctx.check), Consume, Resource::group(group)) else {
        return Ok(Outcome::Forward);
    };
    let code = refused.code;
    match request.header.api_key {
        11 => respond(request, &JoinGroupResponse::default().with_error_code(code)),
        12 => respond(request, &HeartbeatResponse::default().with_error_code(code)),
        13 => respond(
            request,
            &LeaveGroupResponse::default().with_error_code(code),
        ),
        _ => respond(request, &SyncGroupResponse::default().with_error_code(code)),
    }
}

pub(super) fn describe_groups(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let with_message = request.header.api_version >= 6;
    per_name(
        request,
        ctx.check,
        "groups",
        (Describe, ResourceKind::Group),
        |group, refused| {
            let mut entry = DescribedGroup::default()
                .with_group_id(GroupId(owned(group)))
                .with_error_code(refused.code);
            if with_message {
                entry.error_message = refused.message();
            }
            entry
        },
        |answer: &mut DescribeGroupsResponse| &mut answer.groups,
    )
}

/// Kafka lists every group to a principal that may describe the cluster, and otherwise
/// the groups it may describe: the second needs the broker's answer.
pub(super) fn list_groups(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let mut ask = Ask::new(ctx.check);
    if ask.check(Describe, Resource::cluster()).is_allowed() {
        return Ok(Outcome::Forward);
    }
    Ok(Outcome::FilterResponse(rewrite(
        request,
        move |answer: &mut ListGroupsResponse| {
            answer.groups.retain(|g| {
                ask.check(Describe, Resource::group(&g.group_id))
                    .is_allowed()
            });
        },
    )))
}

pub(super) fn delete_groups(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    per_name(
        request,
        ctx.check,
        "groups",
        (Delete, ResourceKind::Group),
        |group, refused| {
            DeletableGroupResult::default()
                .with_group_id(GroupId(owned(group)))
                .with_error_code(refused.code)
        },
        |answer: &mut DeleteGroupsResponse| &mut answer.results,
    )
}

/// KIP-848 heartbeat: Read on the group, then Describe on every subscribed topic (Kafka 4.0
/// refuses the whole heartbeat with TOPIC_AUTHORIZATION_FAILED if any is refused). A
/// subscription regex is resolved by the broker, out of the interceptor's sight: it is
/// forwarded, and Fetch and OffsetCommit check `consume` on every topic it brings.
pub(super) fn consumer_group_heartbeat(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let (group, topics) = parsed(request, || {
        let mut r = body.reader(request)?;
        let group = body.name(&mut r, "group id")?;
        body.skip_str(&mut r, "member id")?;
        r.i32("member epoch")?;
        body.skip_str(&mut r, "instance id")?;
        body.skip_str(&mut r, "rack id")?;
        r.i32("rebalance timeout")?;
        Ok((group, subscribed_topics(body, &mut r)?))
    })?;
    forward_or_answer(
        request,
        heartbeat_refusal(ctx, group, topics.as_ref()),
        |refused| refused_with_message!(ConsumerGroupHeartbeatResponse, refused),
    )
}

/// The topic names a KIP-848 or share group heartbeat subscribes to (null: unchanged).
pub(super) fn subscribed_topics<'f>(
    body: Body<'f>,
    r: &mut Reader<'f>,
) -> Result<Option<Array<&'f str>>, HeaderError> {
    body.nullable_array(r, 1, "subscribed topic names", |r| {
        body.name(r, "subscribed topic name")
    })
}

/// Read on the group, then Describe on every subscribed topic: the first refusal refuses
/// the whole heartbeat.
pub(super) fn heartbeat_refusal(
    ctx: &mut Context<'_>,
    group: &str,
    topics: Option<&Array<&str>>,
) -> Option<Refusal> {
    let mut ask = Ask::new(ctx.check);
    refusal(&mut ask, Consume, Resource::group(group)).or_else(|| {
        (topics.iter().flat_map(|t| &t.items))
            .find_map(|t| refusal(&mut ask, Describe, Resource::topic(t.value)))
    })
}

/// KIP-848 and share group describes: Describe on each group, refused ones answered in
/// place. Kafka 4.0 answers TOPIC_AUTHORIZATION_FAILED for a described group whose members'
/// assignments (`$assigned`: a member's assigned topics) name a topic the client may not
/// describe, rather than leak the topic. The generated types differ only by name.
macro_rules! describe_groups_hiding_topics {
    ($request:expr, $ctx:expr, $answer:ty, $group:ty, $assigned:expr) => {{
        use super::common::{checked_names, owned, per_item, refused_with_message, Ask};
        let mut ask = Ask::new($ctx.check);
        let (groups, refusals) = checked_names(
            $request,
            &mut ask,
            "group ids",
            crate::policy::Operation::Describe,
            crate::policy::ResourceKind::Group,
        )?;
        per_item(
            $request,
            &groups,
            &refusals,
            |&group, refused| {
                refused_with_message!($group, refused)
                    .with_group_id(kafka_protocol::messages::GroupId(owned(group)))
            },
            |answer: &mut $answer| &mut answer.groups,
            Some(Box::new(move |answer: &mut $answer| {
                for group in answer.groups.iter_mut().filter(|g| g.error_code == 0) {
                    let refused = (group.members.iter())
                        .flat_map($assigned)
                        .find_map(|t| super::groups::hidden_topic(&mut ask, &t.topic_name));
                    if let Some(refused) = refused {
                        *group = refused_with_message!($group, refused)
                            .with_group_id(group.group_id.clone());
                    }
                }
            })),
        )
    }};
}
pub(super) use describe_groups_hiding_topics;

pub(super) fn consumer_group_describe(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    describe_groups_hiding_topics!(
        request,
        ctx,
        ConsumerGroupDescribeResponse,
        cgd::DescribedGroup,
        |m| { (m.assignment.topic_partitions.iter()).chain(&m.target_assignment.topic_partitions) }
    )
}

/// The refusal to describe a topic named in a broker's answer (an empty name is a topic
/// the broker could not name: nothing to hide).
pub(super) fn hidden_topic(ask: &mut Ask, topic: &str) -> Option<Refusal> {
    if topic.is_empty() {
        return None;
    }
    refusal(ask, Describe, Resource::topic(topic))
}
