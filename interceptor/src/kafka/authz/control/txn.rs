//! Transactions: producer ids, the partitions and offsets a transaction covers, its end, and
//! describing and listing transactions.

use kafka_protocol::messages::{
    add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse,
        AddPartitionsToTxnTopicResult,
    },
    describe_transactions_response::{DescribeTransactionsResponse, TransactionState},
    AddOffsetsToTxnResponse, EndTxnResponse, InitProducerIdResponse, ListTransactionsResponse,
    ProducerId, TopicName, TransactionalId,
};

use super::common::{
    forward_or_answer, owned, parsed, per_name, refusal, respond, rewrite, Ask, Body,
};
use crate::kafka::{
    authz::{AuthzError, Context, Outcome, Request},
    wire::Reader,
    HeaderError,
};
use crate::policy::{Operation::*, Resource, ResourceKind};

/// Kafka's error for the partitions of a refused AddPartitionsToTxn that were not refused
/// themselves.
const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// With a transactional id: Write on it. Without: idempotent produce, Kafka's
/// IdempotentWrite on the cluster.
pub(super) fn init_producer_id(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let id = parsed(request, || {
        body.nullable_name(&mut body.reader(request)?, "transactional id")
    })?;
    let mut ask = Ask::new(ctx.check);
    let refused = match id {
        Some(id) => refusal(&mut ask, Transactions, Resource::transactional_id(id)),
        None => refusal(&mut ask, IdempotentWrite, Resource::cluster()),
    };
    forward_or_answer(request, refused, |refused| {
        InitProducerIdResponse::default()
            .with_error_code(refused.code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    })
}

/// v0-3 (clients): Write on the transactional id, then on every topic; Kafka refuses the
/// whole request when any topic is refused (the others get OPERATION_NOT_ATTEMPTED), so
/// nothing is ever forwarded in part. v4+ batches transactions between brokers: ClusterAction.
pub(super) fn add_partitions_to_txn(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let mut ask = Ask::new(ctx.check);
    if request.header.api_version >= 4 {
        return forward_or_answer(
            request,
            refusal(&mut ask, ClusterAction, Resource::cluster()),
            |refused| AddPartitionsToTxnResponse::default().with_error_code(refused.code),
        );
    }
    let body = Body::of(request);
    let (id, topics) = parsed(request, || {
        let mut r = body.reader(request)?;
        let id = transactional_producer(body, &mut r)?;
        let topics = body.array(&mut r, 2, "topics", |r| {
            let name = body.name(r, "topic name")?;
            let partitions = body.partitions(r, "partitions")?;
            r.tagged(body.flexible, "topic tagged fields")?;
            Ok((name, partitions))
        })?;
        r.tagged(body.flexible, "tagged fields")?;
        Ok((id, topics))
    })?;
    let id_refused = refusal(&mut ask, Transactions, Resource::transactional_id(id));
    let topic_codes: Vec<Option<i16>> = match id_refused {
        Some(refused) => vec![Some(refused.code); topics.items.len()],
        None => (topics.items.iter())
            .map(|t| refusal(&mut ask, Produce, Resource::topic(t.value.0)).map(|r| r.code))
            .collect(),
    };
    if topic_codes.iter().all(Option::is_none) {
        return Ok(Outcome::Forward);
    }
    let results = (topics.items.iter().zip(topic_codes))
        .map(|(topic, code)| {
            let (name, partitions) = &topic.value;
            AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(owned(name)))
                .with_results_by_partition(
                    (partitions.iter())
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code.unwrap_or(OPERATION_NOT_ATTEMPTED))
                        })
                        .collect(),
                )
        })
        .collect();
    respond(
        request,
        &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
    )
}

/// The transactional id and producer (id and epoch, skipped) that AddPartitionsToTxn v0-3
/// and AddOffsetsToTxn begin with.
fn transactional_producer<'f>(body: Body<'f>, r: &mut Reader<'f>) -> Result<&'f str, HeaderError> {
    let id = body.name(r, "transactional id")?;
    r.skip(8, "producer id")?;
    r.i16("producer epoch")?;
    Ok(id)
}

/// Write on the transactional id, then Read (our `commit`) on the group whose offsets join
/// the transaction.
pub(super) fn add_offsets_to_txn(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let (id, group) = parsed(request, || {
        let mut r = body.reader(request)?;
        let id = transactional_producer(body, &mut r)?;
        Ok((id, body.name(&mut r, "group id")?))
    })?;
    let mut ask = Ask::new(ctx.check);
    let refused = refusal(&mut ask, Transactions, Resource::transactional_id(id))
        .or_else(|| refusal(&mut ask, Commit, Resource::group(group)));
    forward_or_answer(request, refused, |refused| {
        AddOffsetsToTxnResponse::default().with_error_code(refused.code)
    })
}

pub(super) fn end_txn(request: &Request<'_>, ctx: &mut Context<'_>) -> Result<Outcome, AuthzError> {
    let body = Body::of(request);
    let id = parsed(request, || {
        body.name(&mut body.reader(request)?, "transactional id")
    })?;
    let refused = refusal(
        &mut Ask::new(ctx.check),
        Transactions,
        Resource::transactional_id(id),
    );
    forward_or_answer(request, refused, |refused| {
        EndTxnResponse::default().with_error_code(refused.code)
    })
}

pub(super) fn describe_transactions(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    per_name(
        request,
        ctx.check,
        "transactional ids",
        (Describe, ResourceKind::TransactionalId),
        |id, refused| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(owned(id)))
                .with_error_code(refused.code)
        },
        |answer: &mut DescribeTransactionsResponse| &mut answer.transaction_states,
    )
}

/// Kafka lists only the transactional ids the principal may describe.
pub(super) fn list_transactions(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Outcome, AuthzError> {
    let mut ask = Ask::new(ctx.check);
    Ok(Outcome::FilterResponse(rewrite(
        request,
        move |answer: &mut ListTransactionsResponse| {
            answer.transaction_states.retain(|t| {
                ask.check(Describe, Resource::transactional_id(&t.transactional_id))
                    .is_allowed()
            });
        },
    )))
}
