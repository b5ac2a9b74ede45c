//! A group's committed offsets: committing them (plain and transactional), fetching and
//! deleting them.

use kafka_protocol::messages::{
    offset_commit_response::{
        OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    },
    offset_delete_response::{
        OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    },
    offset_fetch_response::{
        OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
        OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    },
    txn_offset_commit_response::{
        TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    },
    GroupId, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::common::{
    forward_part, insert_at, owned, parsed, per_item, refusal, respond, rewrite, whole, Array, Ask,
    Body, Item, Refusal,
};
use crate::kafka::{
    authz::{splice::Splice, AuthzError, Context, Outcome, Request},
    wire::Reader,
    HeaderError,
};
use crate::policy::{Operation::*, Resource};

/// A topic of a request and the partitions it names.
pub(super) type Topic<'f> = (&'f str, Vec<i32>);

/// The topics of an OffsetCommit or TxnOffsetCommit: each partition carries an offset, a
/// leader epoch (from `epoch_from`) and metadata.
fn commit_topics<'f>(
    body: Body<'f>,
    r: &mut Reader<'f>,
    version: i16,
    epoch_from: i16,
) -> Result<Array<Topic<'f>>, HeaderError> {
    body.array(r, 2, "topics", |r| {
        let name = body.name(r, "topic name")?;
        let partitions = body.array(r, 14, "partitions", |r| {
            let index = r.i32("partition index")?;
            r.skip(8, "committed offset")?;
            if version >= epoch_from {
                r.i32("committed leader epoch")?;
            }
            body.skip_str(r, "committed metadata")?;
            r.tagged(body.flexible, "partition tagged fields")?;
            Ok(index)
        })?;
        r.tagged(body.flexible, "topic tagged fields")?;
        Ok((
            name,
            partitions.items.into_iter().map(|p| p.value).collect(),
        ))
    })
}

/// The outcome of a commit or delete whose refused topics fail, each partition with the
/// refusal's code (see [`per_item`]). The generated types differ only by name.
macro_rules! failing_topics {
    ($request:expr, $topics:expr, $refusals:expr, $answer:ty, $topic:ty, $partition:ty) => {
        per_item(
            $request,
            $topics,
            $refusals,
            |(name, partitions), refused| {
                <$topic>::default()
                    .with_name(TopicName(owned(name)))
                    .with_partitions(
                        (partitions.iter())
                            .map(|&p| {
                                <$partition>::default()
                                    .with_partition_index(p)
                                    .with_error_code(refused.code)
                            })
                            .collect(),
                    )
            },
            |answer: &mut $answer| &mut answer.topics,
            None,
        )
    };
}

/// Refusals per topic: every topic gets the group's (or transactional id's) refusal if there
/// is one, else its own for `consume`.
fn topic_refusals(
    ask: &mut Ask,
    above: Option<Refusal>,
    topics: &Array<Topic<'_>>,
) -> Vec<Option<Refusal>> {
    (topics.items.iter())
        .map(|t| above.or_else(|| refusal(ask, Consume, Resource::topic(t.value.0))))
        .collect()
}

/// Kafka: Read (our `commit`) on the group, then Read (`consume`) on each topic; refused
/// topics fail, the others are committed.
pub(super) fn offset_commit(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let version = request.header.api_version;
    let (group, topics) = parsed(request, || {
        let mut r = body.reader(request)?;
        let group = body.name(&mut r, "group id")?;
        r.i32("generation id or member epoch")?;
        body.skip_str(&mut r, "member id")?;
        if version >= 7 {
            body.skip_str(&mut r, "group instance id")?;
        }
        if version <= 4 {
            r.skip(8, "retention time")?;
        }
        Ok((group, commit_topics(body, &mut r, version, 6)?))
    })?;
    let mut ask = Ask::new(ctx.check);
    let group_refused = refusal(&mut ask, Commit, Resource::group(group));
    let refusals = topic_refusals(&mut ask, group_refused, &topics);
    failing_topics!(
        request,
        &topics,
        &refusals,
        OffsetCommitResponse,
        OffsetCommitResponseTopic,
        OffsetCommitResponsePartition
    )
}

/// Kafka: Write on the transactional id, Read (`commit`) on the group, Read (`consume`) on
/// each topic; refused topics fail, the others are committed.
pub(super) fn txn_offset_commit(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let version = request.header.api_version;
    let (id, group, topics) = parsed(request, || {
        let mut r = body.reader(request)?;
        let id = body.name(&mut r, "transactional id")?;
        let group = body.name(&mut r, "group id")?;
        r.skip(8, "producer id")?;
        r.i16("producer epoch")?;
        if version >= 3 {
            r.i32("generation id")?;
            body.skip_str(&mut r, "member id")?;
            body.skip_str(&mut r, "group instance id")?;
        }
        Ok((id, group, commit_topics(body, &mut r, version, 2)?))
    })?;
    let mut ask = Ask::new(ctx.check);
    let above = refusal(&mut ask, Transactions, Resource::transactional_id(id))
        .or_else(|| refusal(&mut ask, Commit, Resource::group(group)));
    let refusals = topic_refusals(&mut ask, above, &topics);
    failing_topics!(
        request,
        &topics,
        &refusals,
        TxnOffsetCommitResponse,
        TxnOffsetCommitResponseTopic,
        TxnOffsetCommitResponsePartition
    )
}

/// Kafka: Delete on the group (refused: the answer's top-level error), Read (`consume`) on
/// each topic (refused: its partitions fail).
pub(super) fn offset_delete(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let (group, topics) = parsed(request, || {
        let mut r = body.reader(request)?;
        let group = body.name(&mut r, "group id")?;
        let topics = body.array(&mut r, 6, "topics", |r| {
            Ok((
                body.name(r, "topic name")?,
                body.partitions(r, "partitions")?,
            ))
        })?;
        Ok((group, topics))
    })?;
    let mut ask = Ask::new(ctx.check);
    if let Some(refused) = refusal(&mut ask, Delete, Resource::group(group)) {
        return respond(
            request,
            &OffsetDeleteResponse::default().with_error_code(refused.code),
        );
    }
    let refusals = topic_refusals(&mut ask, None, &topics);
    failing_topics!(
        request,
        &topics,
        &refusals,
        OffsetDeleteResponse,
        OffsetDeleteResponseTopic,
        OffsetDeleteResponsePartition
    )
}

/// One group of an OffsetFetch (v0-7 have exactly one, at the top level): `None` topics
/// asks for every committed topic.
pub(super) struct FetchGroup<'f> {
    pub name: &'f str,
    pub topics: Option<Array<Topic<'f>>>,
}

/// The decision on one group of an OffsetFetch.
pub(super) struct GroupDecision {
    pub refused: Option<Refusal>,
    pub topics: Vec<Option<Refusal>>,
}

impl GroupDecision {
    /// Whether forwarding this group can bring the client anything.
    pub(super) fn forwards(&self, group: &FetchGroup<'_>) -> bool {
        self.refused.is_none()
            && (group.topics.as_ref().is_none_or(|t| t.items.is_empty())
                || self.topics.iter().any(Option::is_none))
    }

    pub(super) fn changes_request(&self) -> bool {
        self.refused.is_some() || self.topics.iter().any(Option::is_some)
    }
}

pub(super) fn fetch_topics<'f>(
    body: Body<'f>,
    r: &mut Reader<'f>,
) -> Result<Option<Array<Topic<'f>>>, HeaderError> {
    body.nullable_array(r, 2, "topics", |r| {
        let name = body.name(r, "topic name")?;
        let partitions = body.partitions(r, "partition indexes")?;
        r.tagged(body.flexible, "topic tagged fields")?;
        Ok((name, partitions))
    })
}

/// Kafka: Describe on each group (refused: the group's error), then Describe on each named
/// topic (refused: its partitions fail); a group asked for all its topics gets only those
/// the client may describe.
pub(super) fn offset_fetch(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let version = request.header.api_version;
    let groups = parsed(request, || {
        let mut r = body.reader(request)?;
        if version <= 7 {
            let start = r.pos();
            let name = body.name(&mut r, "group id")?;
            let topics = fetch_topics(body, &mut r)?;
            let end = r.pos();
            // One group at the top level: an array of one, never spliced as an array.
            return Ok(Array {
                count_at: start,
                items: vec![Item {
                    range: start..end,
                    value: FetchGroup { name, topics },
                }],
                end,
            });
        }
        body.array(&mut r, 3, "groups", |r| {
            let name = body.name(r, "group id")?;
            if version >= 9 {
                body.skip_str(r, "member id")?;
                r.i32("member epoch")?;
            }
            let topics = fetch_topics(body, r)?;
            r.tagged(body.flexible, "group tagged fields")?;
            Ok(FetchGroup { name, topics })
        })
    })?;
    let mut ask = Ask::new(ctx.check);
    let decisions = describe_groups_and_topics(&mut ask, &groups);
    if forwards_unchanged(&groups, &decisions) {
        return Ok(Outcome::Forward);
    }
    if version <= 7 {
        fetch_one_group(request, ask, &groups, &decisions)
    } else {
        fetch_groups::<OffsetFetchResponse>(request, ask, &groups, &decisions)
    }
}

/// Describe on each group, then (if allowed) on each topic it names.
pub(super) fn describe_groups_and_topics(
    ask: &mut Ask,
    groups: &Array<FetchGroup<'_>>,
) -> Vec<GroupDecision> {
    (groups.items.iter())
        .map(|g| {
            let refused = refusal(ask, Describe, Resource::group(g.value.name));
            let topics = match (&g.value.topics, refused) {
                (Some(topics), None) => (topics.items.iter())
                    .map(|t| refusal(ask, Describe, Resource::topic(t.value.0)))
                    .collect(),
                _ => Vec::new(),
            };
            GroupDecision { refused, topics }
        })
        .collect()
}

fn fetch_partition(partition: i32, code: i16) -> OffsetFetchResponsePartition {
    OffsetFetchResponsePartition::default()
        .with_partition_index(partition)
        .with_committed_offset(-1)
        .with_metadata(Some(owned("")))
        .with_error_code(code)
}

fn fetch_partitions(partition: i32, code: i16) -> OffsetFetchResponsePartitions {
    OffsetFetchResponsePartitions::default()
        .with_partition_index(partition)
        .with_committed_offset(-1)
        .with_metadata(Some(owned("")))
        .with_error_code(code)
}

/// v1-7: one group, whose refusal is the top-level error (v2+) or every partition's (v1).
fn fetch_one_group(
    request: &Request<'_>,
    mut ask: Ask,
    groups: &Array<FetchGroup<'_>>,
    decisions: &[GroupDecision],
) -> Result<Outcome, AuthzError> {
    let (Some(group), Some(decision)) = (groups.items.first(), decisions.first()) else {
        return Ok(Outcome::Forward);
    };
    let group = &group.value;
    let version = request.header.api_version;
    let topic_entry = |(name, partitions): &Topic<'_>, code: i16| {
        OffsetFetchResponseTopic::default()
            .with_name(TopicName(owned(name)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| fetch_partition(p, code))
                    .collect(),
            )
    };
    if let Some(refused) = decision.refused {
        let mut answer = OffsetFetchResponse::default();
        if version >= 2 {
            answer.error_code = refused.code;
        } else {
            let topics = group.topics.iter().flat_map(|t| &t.items);
            answer.topics = topics
                .map(|t| topic_entry(&t.value, refused.code))
                .collect();
        }
        return respond(request, &answer);
    }
    let Some(topics) = &group.topics else {
        return Ok(Outcome::FilterResponse(rewrite(
            request,
            move |answer: &mut OffsetFetchResponse| {
                answer
                    .topics
                    .retain(|t| ask.check(Describe, Resource::topic(&t.name)).is_allowed());
            },
        )));
    };
    per_item(
        request,
        topics,
        &decision.topics,
        |topic, refused| topic_entry(topic, refused.code),
        |answer: &mut OffsetFetchResponse| &mut answer.topics,
        None,
    )
}

/// An answer of committed offsets per group and topic (OffsetFetch v8+ and
/// DescribeShareGroupOffsets): the generated types differ only by name.
pub(super) trait GroupOffsetsAnswer:
    Default + Decodable + Encodable + Send + 'static
{
    type Group: Send + 'static;
    type Topic: Send + 'static;
    fn groups(&mut self) -> &mut Vec<Self::Group>;
    fn group_id(group: &Self::Group) -> &str;
    fn topics(group: &mut Self::Group) -> &mut Vec<Self::Topic>;
    fn topic_name(topic: &Self::Topic) -> &str;
    /// A group the interceptor answers: refused, or with only refused topics.
    fn group_entry(name: &str, refused: Option<Refusal>, topics: Vec<Self::Topic>) -> Self::Group;
    /// A refused topic: each of its partitions fails.
    fn topic_entry(name: &str, partitions: &[i32], refused: Refusal) -> Self::Topic;
}

/// The [`GroupOffsetsAnswer`] accessors: the fields share their names but for the topic's
/// name (`$topic_name`).
macro_rules! group_offsets_fields {
    ($topic_name:ident) => {
        fn groups(&mut self) -> &mut Vec<Self::Group> {
            &mut self.groups
        }

        fn group_id(group: &Self::Group) -> &str {
            &group.group_id
        }

        fn topics(group: &mut Self::Group) -> &mut Vec<Self::Topic> {
            &mut group.topics
        }

        fn topic_name(topic: &Self::Topic) -> &str {
            &topic.$topic_name
        }
    };
}
pub(super) use group_offsets_fields;

impl GroupOffsetsAnswer for OffsetFetchResponse {
    type Group = OffsetFetchResponseGroup;
    type Topic = OffsetFetchResponseTopics;

    group_offsets_fields!(name);

    fn group_entry(name: &str, refused: Option<Refusal>, topics: Vec<Self::Topic>) -> Self::Group {
        OffsetFetchResponseGroup::default()
            .with_group_id(GroupId(owned(name)))
            .with_error_code(refused.map_or(0, |r| r.code))
            .with_topics(topics)
    }

    fn topic_entry(name: &str, partitions: &[i32], refused: Refusal) -> Self::Topic {
        OffsetFetchResponseTopics::default()
            .with_name(TopicName(owned(name)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| fetch_partitions(p, refused.code))
                    .collect(),
            )
    }
}

/// Whether the request can be forwarded as it is, its answer untouched: nothing refused,
/// and no group asking for all its topics (whose answer must be filtered).
pub(super) fn forwards_unchanged(
    groups: &Array<FetchGroup<'_>>,
    decisions: &[GroupDecision],
) -> bool {
    let all_topics = groups.items.iter().any(|g| g.value.topics.is_none());
    !decisions.iter().any(GroupDecision::changes_request) && !all_topics
}

/// What the merge does to one forwarded group.
struct KeptGroup<T> {
    name: String,
    /// Refused topics' entries, at their request positions.
    refused: Vec<(usize, T)>,
    /// The group asked for all its topics: keep those the client may describe.
    filter: bool,
}

/// Many groups (OffsetFetch v8+, DescribeShareGroupOffsets); refused groups get their error,
/// refused topics their partitions'.
pub(super) fn fetch_groups<R: GroupOffsetsAnswer>(
    request: &Request<'_>,
    mut ask: Ask,
    groups: &Array<FetchGroup<'_>>,
    decisions: &[GroupDecision],
) -> Result<Outcome, AuthzError> {
    let mut answered = Vec::new();
    let mut kept = Vec::new();
    for (at, (group, decision)) in groups.items.iter().zip(decisions).enumerate() {
        let group = &group.value;
        let topic_entries: Vec<_> = (group.topics.iter().flat_map(|t| t.items.iter()))
            .zip(&decision.topics)
            .enumerate()
            .filter_map(|(at, (topic, refused))| {
                let (name, partitions) = &topic.value;
                refused.map(|r| (at, R::topic_entry(name, partitions, r)))
            })
            .collect();
        if decision.refused.is_some() {
            answered.push((at, R::group_entry(group.name, decision.refused, Vec::new())));
        } else if !decision.forwards(group) {
            let topics = topic_entries.into_iter().map(|(_, t)| t).collect();
            answered.push((at, R::group_entry(group.name, None, topics)));
        } else {
            kept.push(KeptGroup {
                name: group.name.to_owned(),
                refused: topic_entries,
                filter: group.topics.is_none(),
            });
        }
    }
    if kept.is_empty() {
        let mut answer = R::default();
        answer.groups().extend(answered.into_iter().map(|(_, g)| g));
        return respond(request, &answer);
    }
    let merge = move |answer: &mut R| {
        let mut from = 0;
        for group in kept {
            let found = (answer.groups().iter_mut().enumerate().skip(from))
                .find(|(_, g)| R::group_id(g) == group.name);
            let Some((at, entry)) = found else { continue };
            from = at + 1;
            if group.filter {
                R::topics(entry).retain(|t| {
                    ask.check(Describe, Resource::topic(R::topic_name(t)))
                        .is_allowed()
                });
            }
            insert_at(R::topics(entry), group.refused);
        }
        insert_at(answer.groups(), answered);
    };
    if !decisions.iter().any(GroupDecision::changes_request) {
        return Ok(Outcome::FilterResponse(rewrite(request, merge)));
    }
    Ok(forward_part(
        request,
        splice_groups(request, groups, decisions),
        merge,
    ))
}

/// The groups a v8+ OffsetFetch still asks about, each with its allowed topics.
pub(super) fn splice_groups(
    request: &Request<'_>,
    groups: &Array<FetchGroup<'_>>,
    decisions: &[GroupDecision],
) -> bytes::Bytes {
    let flexible = request.flexible();
    let mut splice = Splice::new(request.frame);
    groups.splice_kept(
        &mut splice,
        flexible,
        |at, group| decisions.get(at).is_some_and(|d| d.forwards(group)),
        |splice, at, item| match (&item.value.topics, decisions.get(at)) {
            (Some(topics), Some(decision)) if decision.changes_request() => {
                topics.splice_kept(
                    splice,
                    flexible,
                    |at, _| decision.topics.get(at).is_some_and(Option::is_none),
                    whole,
                );
                splice.copy_to(item.range.end);
            }
            _ => whole(splice, at, item),
        },
    );
    splice.finish()
}
