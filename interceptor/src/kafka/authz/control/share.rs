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
    forward_part, insert_at, owned, parsed, per_item, refusal, respond, rewrite, After, Ask, Body,
    Refusal,
};
use super::groups::hidden_topic;
use super::offsets::{describe_groups_and_topics, fetch_topics, splice_groups, FetchGroup};
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
        let topics = body.nullable_array(&mut r, 1, "subscribed topic names", |r| {
            body.name(r, "subscribed topic name")
        })?;
        Ok((group, topics))
    })?;
    let mut ask = Ask::new(ctx.check);
    let refused = refusal(&mut ask, Consume, Resource::group(group)).or_else(|| {
        (topics.iter().flat_map(|t| &t.items))
            .find_map(|t| refusal(&mut ask, Describe, Resource::topic(t.value)))
    });
    match refused {
        None => Ok(Outcome::Forward),
        Some(refused) => respond(
            request,
            &ShareGroupHeartbeatResponse::default()
                .with_error_code(refused.code)
                .with_error_message(refused.message()),
        ),
    }
}

pub(super) fn share_group_describe(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let groups = parsed(request, || {
        body.names(&mut body.reader(request)?, "group ids")
    })?;
    let mut ask = Ask::new(ctx.check);
    let refusals: Vec<_> = (groups.items.iter())
        .map(|g| refusal(&mut ask, Describe, Resource::group(g.value)))
        .collect();
    per_item(
        request,
        &groups,
        &refusals,
        |&group, refused| {
            sgd::DescribedGroup::default()
                .with_group_id(GroupId(owned(group)))
                .with_error_code(refused.code)
                .with_error_message(refused.message())
        },
        |answer: &mut ShareGroupDescribeResponse| &mut answer.groups,
        hide_share_groups_with_hidden_topics(ask),
    )
}

/// As for consumer groups: a described group whose assignments name a topic the client may
/// not describe answers TOPIC_AUTHORIZATION_FAILED.
fn hide_share_groups_with_hidden_topics(mut ask: Ask) -> After<ShareGroupDescribeResponse> {
    Some(Box::new(move |answer: &mut ShareGroupDescribeResponse| {
        for group in answer.groups.iter_mut().filter(|g| g.error_code == 0) {
            let refused = (group.members.iter())
                .flat_map(|m| &m.assignment.topic_partitions)
                .find_map(|t| hidden_topic(&mut ask, &t.topic_name));
            if let Some(refused) = refused {
                *group = sgd::DescribedGroup::default()
                    .with_group_id(group.group_id.clone())
                    .with_error_code(refused.code)
                    .with_error_message(refused.message());
            }
        }
    }))
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
    let Some(refused) = refused else {
        return Ok(Outcome::Forward);
    };
    if fetch {
        respond(
            request,
            &ShareFetchResponse::default()
                .with_error_code(refused.code)
                .with_error_message(refused.message()),
        )
    } else {
        respond(
            request,
            &ShareAcknowledgeResponse::default()
                .with_error_code(refused.code)
                .with_error_message(refused.message()),
        )
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
    match refused {
        None => Ok(Outcome::Forward),
        Some(refused) if alter => respond(
            request,
            &AlterShareGroupOffsetsResponse::default()
                .with_error_code(refused.code)
                .with_error_message(refused.message()),
        ),
        Some(refused) => respond(
            request,
            &DeleteShareGroupOffsetsResponse::default()
                .with_error_code(refused.code)
                .with_error_message(refused.message()),
        ),
    }
}

/// What the merge does to one forwarded group.
struct KeptGroup {
    name: String,
    refused: Vec<(usize, DescribeShareGroupOffsetsResponseTopic)>,
    filter: bool,
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
    let changes = decisions.iter().any(|d| d.changes_request());
    let all_topics = groups.items.iter().any(|g| g.value.topics.is_none());
    if !changes && !all_topics {
        return Ok(Outcome::Forward);
    }
    let mut answered = Vec::new();
    let mut kept = Vec::new();
    for (at, (group, decision)) in groups.items.iter().zip(&decisions).enumerate() {
        let group = &group.value;
        let topic_entries: Vec<_> = (group.topics.iter().flat_map(|t| t.items.iter()))
            .zip(&decision.topics)
            .enumerate()
            .filter_map(|(at, (topic, refused))| {
                let (name, partitions) = &topic.value;
                refused.map(|r| (at, topic_entry(name, partitions, r)))
            })
            .collect();
        let entry = |refused: Option<Refusal>, topics| {
            DescribeShareGroupOffsetsResponseGroup::default()
                .with_group_id(GroupId(owned(group.name)))
                .with_error_code(refused.map_or(0, |r| r.code))
                .with_error_message(refused.and_then(Refusal::message))
                .with_topics(topics)
        };
        if decision.refused.is_some() {
            answered.push((at, entry(decision.refused, Vec::new())));
        } else if !decision.forwards(group) {
            let topics = topic_entries.into_iter().map(|(_, t)| t).collect();
            answered.push((at, entry(None, topics)));
        } else {
            kept.push(KeptGroup {
                name: group.name.to_owned(),
                refused: topic_entries,
                filter: group.topics.is_none(),
            });
        }
    }
    if kept.is_empty() {
        let answer = DescribeShareGroupOffsetsResponse::default()
            .with_groups(answered.into_iter().map(|(_, g)| g).collect());
        return respond(request, &answer);
    }
    let merge = move |answer: &mut DescribeShareGroupOffsetsResponse| {
        let mut from = 0;
        for group in kept {
            let found = (answer.groups.iter_mut().enumerate().skip(from))
                .find(|(_, g)| **g.group_id == *group.name);
            let Some((at, entry)) = found else { continue };
            from = at + 1;
            if group.filter {
                entry.topics.retain(|t| {
                    ask.check(Describe, Resource::topic(&t.topic_name))
                        .is_allowed()
                });
            }
            insert_at(&mut entry.topics, group.refused);
        }
        insert_at(&mut answer.groups, answered);
    };
    if !changes {
        return Ok(Outcome::FilterResponse(rewrite(request, merge)));
    }
    Ok(forward_part(
        request,
        splice_groups(request, &groups, &decisions),
        merge,
    ))
}

fn topic_entry(
    name: &str,
    partitions: &[i32],
    refused: Refusal,
) -> DescribeShareGroupOffsetsResponseTopic {
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
