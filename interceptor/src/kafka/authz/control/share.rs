//! Share groups (KIP-932): membership, describing them, fetching and acknowledging records,
//! and their offsets. Except for describing, a refusal refuses the whole request (the table
//! notes say so): the client gets the first refused resource's error as the top-level error.

use kafka_protocol::messages::{
    describe_share_group_offsets_response::{
        DescribeShareGroupOffsetsResponse, DescribeShareGroupOffsetsResponseGroup,
        DescribeShareGroupOffsetsResponsePartition, DescribeShareGroupOffsetsResponseTopic,
    },
    share_group_describe_response::{self as sgd, ShareGroupDescribeResponse},
    AlterShareGroupOffsetsResponse, DeleteShareGroupOffsetsResponse, GroupId,
    ShareAcknowledgeResponse, ShareFetchResponse, ShareGroupHeartbeatResponse, TopicName,
};

use super::common::{
    forward_or_answer, owned, parsed, refusal, refused_with_message, Ask, Body, Refusal,
};
use super::groups::{describe_groups_hiding_topics, heartbeat_refusal, subscribed_topics};
use super::offsets::{
    describe_groups_and_topics, fetch_groups, fetch_topics, forwards_unchanged,
    group_offsets_fields, FetchGroup, GroupOffsetsAnswer,
};
use crate::kafka::authz::{response::UNKNOWN_TOPIC_ID, AuthzError, Context, Outcome, Request};
use crate::policy::{Operation::*, Resource};

pub(super) fn share_group_heartbeat(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let (group, topics) = parsed(request, || {
        let mut r = body.reader(request)?;
        let group = body.name(&mut r, "group id")?;
        body.skip_str(&mut r, "member id")?;
        r.i32("member epoch")?;
        body.skip_str(&mut r, "rack id")?;
        Ok((group, subscribed_topics(body, &mut r)?))
    })?;
    forward_or_answer(
        request,
        heartbeat_refusal(ctx, group, topics.as_ref()),
        |refused| refused_with_message!(ShareGroupHeartbeatResponse, refused),
    )
}

pub(super) fn share_group_describe(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    describe_groups_hiding_topics!(
        request,
        ctx,
        ShareGroupDescribeResponse,
        sgd::DescribedGroup,
        |m| &m.assignment.topic_partitions
    )
}

/// ShareFetch and ShareAcknowledge: Read on the group, Read on every topic (named by id).
/// Acknowledging is reading too (it moves the group's share of the partition on). Forgotten
/// topics are not checked: forgetting gives nothing.
pub(super) fn share_fetch_or_acknowledge(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let fetch = request.header.api_key == 78;
    let (group, topic_ids) = parsed(request, || {
        let mut r = body.reader(request)?;
        let group = body.nullable_name(&mut r, "group id")?;
        body.skip_str(&mut r, "member id")?;
        r.i32("share session epoch")?;
        if fetch {
            for what in [
                "max wait",
                "min bytes",
                "max bytes",
                "max records",
                "batch size",
            ] {
                r.i32(what)?;
            }
        }
        let topics = body.array(&mut r, 18, "topics", |r| {
            let id = r.uuid("topic id")?;
            body.array(r, 6, "partitions", |r| {
                r.i32("partition index")?;
                body.array(r, 18, "acknowledgement batches", |r| {
                    r.skip(8, "first offset")?;
                    r.skip(8, "last offset")?;
                    body.array(r, 1, "acknowledge types", |r| r.i8("acknowledge type"))?;
                    r.tagged(true, "batch tagged fields")
                })?;
                r.tagged(true, "partition tagged fields")
            })?;
            r.tagged(true, "topic tagged fields")?;
            Ok(id)
        })?;
        Ok((group, topics))
    })?;
    let mut ask = Ask::new(ctx.check);
    // A null group is the broker's to refuse (INVALID_REQUEST): it names nothing to check.
    let mut refused = group.and_then(|g| refusal(&mut ask, Consume, Resource::group(g)));
    for id in &topic_ids.items {
        if refused.is_some() {
            break;
        }
        refused = match ctx.topic_ids.name(&id.value) {
            // Fail closed: a topic the interceptor cannot name cannot be allowed.
            None => Some(Refusal::with_code(UNKNOWN_TOPIC_ID, "Unknown topic id")),
            Some(name) => refusal(&mut ask, Consume, Resource::topic(&name)),
        };
    }
    if fetch {
        forward_or_answer(request, refused, |refused| {
            refused_with_message!(ShareFetchResponse, refused)
        })
    } else {
        forward_or_answer(request, refused, |refused| {
            refused_with_message!(ShareAcknowledgeResponse, refused)
        })
    }
}

/// AlterShareGroupOffsets (Read on the group) and DeleteShareGroupOffsets (Delete on the
/// group), both Read on every topic: the whole request is refused with the first refusal.
pub(super) fn alter_or_delete_share_group_offsets(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let alter = request.header.api_key == 91;
    let (group, topics) = parsed(request, || {
        let mut r = body.reader(request)?;
        let group = body.name(&mut r, "group id")?;
        let topics = body.array(&mut r, 2, "topics", |r| {
            let name = body.name(r, "topic name")?;
            if alter {
                body.array(r, 13, "partitions", |r| {
                    r.i32("partition index")?;
                    r.skip(8, "start offset")?;
                    r.tagged(true, "partition tagged fields")
                })?;
            }
            r.tagged(true, "topic tagged fields")?;
            Ok(name)
        })?;
        Ok((group, topics))
    })?;
    let mut ask = Ask::new(ctx.check);
    let group_op = if alter { Consume } else { Delete };
    let refused = refusal(&mut ask, group_op, Resource::group(group)).or_else(|| {
        (topics.items.iter()).find_map(|t| refusal(&mut ask, Consume, Resource::topic(t.value)))
    });
    if alter {
        forward_or_answer(request, refused, |refused| {
            refused_with_message!(AlterShareGroupOffsetsResponse, refused)
        })
    } else {
        forward_or_answer(request, refused, |refused| {
            refused_with_message!(DeleteShareGroupOffsetsResponse, refused)
        })
    }
}

/// Like OffsetFetch v8+: Describe on each group and each named topic, refused ones answered
/// in place; a group asked for all its topics gets only those the client may describe.
pub(super) fn describe_share_group_offsets(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let groups = parsed(request, || {
        let mut r = body.reader(request)?;
        body.array(&mut r, 3, "groups", |r| {
            let name = body.name(r, "group id")?;
            let topics = fetch_topics(body, r)?;
            r.tagged(true, "group tagged fields")?;
            Ok(FetchGroup { name, topics })
        })
    })?;
    let mut ask = Ask::new(ctx.check);
    let decisions = describe_groups_and_topics(&mut ask, &groups);
    if forwards_unchanged(&groups, &decisions) {
        return Ok(Outcome::Forward);
    }
    fetch_groups::<DescribeShareGroupOffsetsResponse>(request, ask, &groups, &decisions)
}

impl GroupOffsetsAnswer for DescribeShareGroupOffsetsResponse {
    type Group = DescribeShareGroupOffsetsResponseGroup;
    type Topic = DescribeShareGroupOffsetsResponseTopic;

    group_offsets_fields!(topic_name);

    fn group_entry(name: &str, refused: Option<Refusal>, topics: Vec<Self::Topic>) -> Self::Group {
        DescribeShareGroupOffsetsResponseGroup::default()
            .with_group_id(GroupId(owned(name)))
            .with_error_code(refused.map_or(0, |r| r.code))
            .with_error_message(refused.and_then(Refusal::message))
            .with_topics(topics)
    }

    fn topic_entry(name: &str, partitions: &[i32], refused: Refusal) -> Self::Topic {
        DescribeShareGroupOffsetsResponseTopic::default()
            .with_topic_name(TopicName(owned(name)))
            .with_partitions(
                (partitions.iter())
                    .map(|&p| {
                        DescribeShareGroupOffsetsResponsePartition::default()
                            .with_partition_index(p)
                            .with_start_offset(-1)
                            .with_leader_epoch(-1)
                            .with_error_code(refused.code)
                            .with_error_message(refused.message())
                    })
                    .collect(),
            )
    }
}
