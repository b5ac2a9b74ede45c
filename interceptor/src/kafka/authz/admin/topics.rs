//! Topic administration, decided per topic: CreateTopics, DeleteTopics, DeleteRecords and
//! CreatePartitions. Refused topics get their error from the interceptor; the others go to
//! the broker, and the client gets one answer in request order.

use std::sync::Arc;

use kafka_protocol::messages::{
    create_partitions_response::CreatePartitionsTopicResult,
    create_topics_response::CreatableTopicResult,
    delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult},
    delete_topics_response::DeletableTopicResult,
    CreatePartitionsResponse, CreateTopicsResponse, DeleteRecordsResponse, DeleteTopicsResponse,
    TopicName,
};
use uuid::Uuid;

use super::partial::{
    decide, items, list_response, min_bytes, name, nullable_name, owned, reader, skip_array,
    skip_i32s, Checks, Items, ListResponse, Refusal, Refusals, INVALID_REQUEST,
};
use crate::{
    kafka::{
        authz::{response::UNKNOWN_TOPIC_ID, AuthzError, Context, Outcome, Request},
        wire::Reader,
        HeaderError,
    },
    policy::{Operation, Resource},
};

list_response! {
    CreateTopicsResponse => topics: CreatableTopicResult,
    DeleteTopicsResponse => responses: DeletableTopicResult,
    DeleteRecordsResponse => topics: DeleteRecordsTopicResult,
    CreatePartitionsResponse => results: CreatePartitionsTopicResult,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(owned(name))
}

/// CreateTopics v2+: `create` per topic.
pub(super) fn create_topics(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let topics = parse_create_topics(request).map_err(|e| request.malformed(e))?;
    per_topic::<CreateTopicsResponse>(ctx, request, topics, Operation::Create, |name, refusal| {
        CreatableTopicResult::default()
            .with_name(name)
            .with_error_code(refusal.code)
            .with_error_message(refusal.message())
    })
}

/// Each topic checked for `op`; `refused` answers a refused one.
fn per_topic<R: ListResponse>(
    ctx: &mut Context<'_>,
    request: &Request<'_>,
    topics: Items<&str>,
    op: Operation,
    refused: fn(TopicName, Refusal) -> R::Item,
) -> Result<Outcome, AuthzError> {
    let mut checks = Checks::new(ctx.check.as_ref());
    let items = topics.map(|topic| {
        checks
            .refusal(op, Resource::topic(topic))
            .map(|refusal| refused(topic_name(topic), refusal))
    });
    decide::<R>(request, items)
}

/// A request whose top-level array is of topics, each a name then what `rest` reads, then
/// tagged fields; after the array, a timeout, the validate-only flag where the key has one,
/// and tagged fields.
fn topics_array<'f, X>(
    request: &Request<'f>,
    min_topic_bytes: (usize, usize),
    validate_only: bool,
    mut rest: impl FnMut(&mut Reader<'f>, bool, &'f str) -> Result<X, HeaderError>,
) -> Result<Items<X>, HeaderError> {
    let (frame, flexible) = (&request.frame[..], request.flexible());
    let (classic, compact) = min_topic_bytes;
    let mut r = reader(request)?;
    let topics = items(
        &mut r,
        flexible,
        min_bytes(flexible, classic, compact),
        "topics",
        |r| {
            let topic = name(r, frame, flexible, "topic name")?;
            let x = rest(r, flexible, topic)?;
            r.tagged(flexible, "topic tagged fields")?;
            Ok(x)
        },
    )?;
    r.i32("timeout")?;
    if validate_only {
        r.i8("validate only")?;
    }
    r.tagged(flexible, "tagged fields")?;
    Ok(topics)
}

fn parse_create_topics<'f>(request: &Request<'f>) -> Result<Items<&'f str>, HeaderError> {
    topics_array(request, (16, 10), true, |r, flexible, topic| {
        r.i32("num partitions")?;
        r.i16("replication factor")?;
        skip_array(r, flexible, min_bytes(flexible, 8, 6), "assignments", |r| {
            r.i32("partition index")?;
            skip_i32s(r, flexible, "broker ids")?;
            r.tagged(flexible, "assignment tagged fields")
        })?;
        skip_array(r, flexible, min_bytes(flexible, 4, 3), "configs", |r| {
            r.string(flexible, "config name")?;
            r.nullable_str(flexible, "config value")?;
            r.tagged(flexible, "config tagged fields")
        })?;
        Ok(topic)
    })
}

/// What one DeleteTopics entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'f> {
    Name(&'f str, Uuid),
    Id(Uuid),
}

/// DeleteTopics v1+: `delete` per topic. v6 entries may name a topic by id only: the id is
/// resolved with `resolve` (what the interceptor learned from Metadata answers); an id it
/// does not know is answered UNKNOWN_TOPIC_ID rather than forwarded unchecked.
pub(super) fn delete_topics(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
    resolve: &dyn Fn(&[u8; 16]) -> Option<Arc<str>>,
) -> Result<Outcome, AuthzError> {
    let topics = parse_delete_topics(request).map_err(|e| request.malformed(e))?;
    // Resolved names live here so that the checks can borrow them like names in the frame.
    let resolved: Vec<Option<Arc<str>>> = topics
        .items
        .iter()
        .map(|(_, target)| match target {
            Target::Id(id) if !id.is_nil() => resolve(id.as_bytes()),
            _ => None,
        })
        .collect();
    let mut resolved = resolved.iter();
    let mut checks = Checks::new(ctx.check.as_ref());
    let items = topics.map(|target| {
        let known = resolved.next().and_then(|n| n.as_deref());
        let (refusal, name, id) = match target {
            Target::Name(topic, id) => (
                checks.refusal(Operation::Delete, Resource::topic(topic)),
                Some(topic_name(topic)),
                id,
            ),
            // A client that names a topic only by id learns no name from a refusal.
            Target::Id(id) => match known {
                Some(topic) => (
                    checks.refusal(Operation::Delete, Resource::topic(topic)),
                    None,
                    id,
                ),
                None if id.is_nil() => (
                    Some(Refusal {
                        code: INVALID_REQUEST,
                        message: "Neither topic name nor id were specified",
                    }),
                    None,
                    id,
                ),
                None => (
                    Some(Refusal {
                        code: UNKNOWN_TOPIC_ID,
                        message: "Topic id unknown to the interceptor",
                    }),
                    None,
                    id,
                ),
            },
        };
        refusal.map(|refusal| {
            DeletableTopicResult::default()
                .with_name(name)
                .with_topic_id(id)
                .with_error_code(refusal.code)
                .with_error_message(refusal.message())
        })
    });
    decide::<DeleteTopicsResponse>(request, items)
}

fn parse_delete_topics<'f>(request: &Request<'f>) -> Result<Items<Target<'f>>, HeaderError> {
    let (frame, flexible) = (&request.frame[..], request.flexible());
    let mut r = reader(request)?;
    let topics = if request.header.api_version >= 6 {
        items(&mut r, flexible, 18, "topics", |r| {
            let topic = nullable_name(r, frame, flexible, "topic name")?;
            let id = Uuid::from_bytes(r.uuid("topic id")?);
            r.tagged(flexible, "topic tagged fields")?;
            Ok(match topic {
                Some(topic) => Target::Name(topic, id),
                None => Target::Id(id),
            })
        })?
    } else {
        items(
            &mut r,
            flexible,
            min_bytes(flexible, 2, 1),
            "topic names",
            |r| {
                Ok(Target::Name(
                    name(r, frame, flexible, "topic name")?,
                    Uuid::nil(),
                ))
            },
        )?
    };
    r.i32("timeout")?;
    r.tagged(flexible, "tagged fields")?;
    Ok(topics)
}

/// DeleteRecords: `delete-records` per topic; a refused topic's partitions each carry the
/// error.
pub(super) fn delete_records(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let topics = parse_delete_records(request).map_err(|e| request.malformed(e))?;
    let mut checks = Checks::new(ctx.check.as_ref());
    let items = topics.map(|(topic, partitions)| {
        checks
            .refusal(Operation::DeleteRecords, Resource::topic(topic))
            .map(|refusal| {
                let partitions = partitions
                    .into_iter()
                    .map(|index| {
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(index)
                            .with_low_watermark(-1)
                            .with_error_code(refusal.code)
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(topic_name(topic))
                    .with_partitions(partitions)
            })
    });
    decide::<DeleteRecordsResponse>(request, items)
}

fn parse_delete_records<'f>(
    request: &Request<'f>,
) -> Result<Items<(&'f str, Vec<i32>)>, HeaderError> {
    topics_array(request, (6, 3), false, |r, flexible, topic| {
        let count = r.count(flexible, min_bytes(flexible, 12, 13), "partitions")?;
        let partitions = (0..count)
            .map(|_| {
                let index = r.i32("partition index")?;
                r.i64("offset")?;
                r.tagged(flexible, "partition tagged fields")?;
                Ok(index)
            })
            .collect::<Result<Vec<_>, HeaderError>>()?;
        Ok((topic, partitions))
    })
}

/// CreatePartitions: `alter` per topic.
pub(super) fn create_partitions(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let topics = parse_create_partitions(request).map_err(|e| request.malformed(e))?;
    per_topic::<CreatePartitionsResponse>(
        ctx,
        request,
        topics,
        Operation::Alter,
        |name, refusal| {
            CreatePartitionsTopicResult::default()
                .with_name(name)
                .with_error_code(refusal.code)
                .with_error_message(refusal.message())
        },
    )
}

fn parse_create_partitions<'f>(request: &Request<'f>) -> Result<Items<&'f str>, HeaderError> {
    topics_array(request, (10, 7), true, |r, flexible, topic| {
        r.i32("count")?;
        if let Some(count) = r.nullable_count(flexible, min_bytes(flexible, 4, 2), "assignments")? {
            for _ in 0..count {
                skip_i32s(r, flexible, "broker ids")?;
                r.tagged(flexible, "assignment tagged fields")?;
            }
        }
        Ok(topic)
    })
}
