//! Metadata (3, v0–v13) and DescribeTopicPartitions (75, v0): who may see which topics.
//!
//! Metadata's answer always goes through the interceptor, decoded and re-encoded: it teaches
//! the shared topic-id map (Produce v13 and Fetch v13+ name topics by id), and an all-topics
//! answer keeps only the topics the subject may describe (checked when the answer arrives).
//! Topics named in the request that may not be described are cut out of the forwarded request
//! and come back with TOPIC_AUTHORIZATION_FAILED and nothing else: no id, no partitions, no
//! leaders.
//!
//! Auto-creation: Kafka creates a missing topic a Metadata request names when the broker
//! allows it and the request does (v4+ carries a flag; v0–v3 always ask). The interceptor's
//! own principal is the one the broker sees, so the subject's create permission is checked
//! here. Trade-off: v4+ has one flag for the whole request, so when any named topic may not be
//! created the flag is turned off for all of them (a topic the client may create is then
//! created by its next request or by CreateTopics, not by this one). v0–v3 cannot turn it off:
//! there, a topic the subject may describe but not create is cut out and answered
//! UNKNOWN_TOPIC_OR_PARTITION (what Kafka says of a missing topic it does not create, even if
//! the topic exists; Kafka 4 brokers no longer accept v0–v3, KIP-896).
//!
//! `topic_authorized_operations` and `cluster_authorized_operations` are the broker's answer
//! for the interceptor's principal, not the subject's: they are replaced by Kafka's "not
//! provided" value (i32::MIN), which admin clients read as unknown.

use std::{collections::HashMap, sync::Arc};

use kafka_protocol::messages::{
    describe_topic_partitions_response::{
        DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
    },
    metadata_response::MetadataResponseTopic,
    DescribeTopicPartitionsResponse, MetadataResponse,
};

use super::{
    answer, check_topics, name_of, parse_body, resolve_all, topic_entry, topic_name,
    topics_response, utf8, uuid, ArraySpan, Authorized, Checks, Key, Name, Plan, Refusal, TopicIds,
    TopicSpan, DESCRIBE_TOPIC_PARTITIONS, METADATA,
};
use crate::{
    kafka::{
        authz::{
            response::{decode_response, encode_response, UNKNOWN_TOPIC_OR_PARTITION},
            splice::Splice,
            Context, Outcome, Request,
        },
        wire::Reader,
        HeaderError,
    },
    policy::{AccessCheck, Check, Operation, Resource},
};

const API: &str = "Metadata";
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

struct Parsed<'a> {
    /// `None`: all topics.
    topics: Option<(ArraySpan, Vec<TopicSpan<'a>>)>,
    /// Where the v4+ auto-creation flag is, and its value.
    auto_create: Option<(usize, bool)>,
}

fn parse(frame: &[u8], body: usize, version: i16) -> Result<Parsed<'_>, HeaderError> {
    let flexible = version >= 9;
    let mut r = Reader::at(frame, body, "metadata body")?;
    let count_at = r.pos();
    let count = if version == 0 {
        Some(r.count(false, 2, "metadata topics")?)
    } else {
        r.nullable_count(flexible, 2, "metadata topics")?
    };
    let topics = match count {
        None => None,
        Some(0) if version == 0 => None, // v0: an empty list asks for every topic
        Some(n) => {
            let count = count_at..r.pos();
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let start = r.pos();
                let id = if version >= 10 {
                    r.uuid("topic id")?
                } else {
                    [0; 16]
                };
                let name = if version >= 10 {
                    r.nullable_str(flexible, "topic name")?
                } else {
                    Some(r.string(flexible, "topic name")?)
                };
                let name = name.map(|n| utf8(frame, n, "topic name")).transpose()?;
                r.tagged(flexible, "topic tagged fields")?;
                if name.is_none() && id == [0; 16] {
                    return Err(HeaderError::Invalid("topic with neither name nor id"));
                }
                topics.push(TopicSpan {
                    name,
                    id,
                    span: start..r.pos(),
                    parts_count: r.pos()..r.pos(),
                    parts: Vec::new(),
                });
            }
            Some((
                ArraySpan {
                    count,
                    end: r.pos(),
                },
                topics,
            ))
        }
    };
    let auto_create = if version >= 4 {
        let at = r.pos();
        Some((at, r.i8("allow auto topic creation")? != 0))
    } else {
        None
    };
    if (8..=10).contains(&version) {
        r.i8("include cluster authorized operations")?;
    }
    if version >= 8 {
        r.i8("include topic authorized operations")?;
    }
    r.tagged(flexible, "metadata tagged fields")?;
    Ok(Parsed {
        topics,
        auto_create,
    })
}

/// How one requested topic is answered.
#[derive(Debug, Clone)]
enum Asked {
    /// Forwarded; its entry is taken from the broker's answer.
    Forwarded {
        key: Key,
    },
    /// Named by an id the interceptor does not know: forwarded, checked by the name in the
    /// broker's answer.
    ForwardedUnchecked {
        id: [u8; 16],
    },
    Refused {
        key: Key,
        refusal: Refusal,
    },
}

pub(super) fn authorize(request: &Request<'_>, ctx: &mut Context<'_>) -> Authorized {
    let version = request.header.api_version;
    let frame: &[u8] = request.frame;
    let parsed = parse_body(request, parse)?;
    let learn = Arc::clone(ctx.topic_ids);
    let check = Arc::clone(ctx.check);
    let correlation_id = request.header.correlation_id;

    let Some((array, topics)) = &parsed.topics else {
        return Ok(Outcome::FilterResponse(Box::new(move |answer| {
            let (correlation_id, mut body): (i32, MetadataResponse) =
                decode_response(METADATA, version, &answer, API)?;
            learn_ids(&learn, &body.topics);
            body.topics
                .retain(|t| describable(&*check, name_str(&t.name)));
            hide_operations(&mut body);
            encode_response(METADATA, version, correlation_id, &body, API)
        })));
    };

    let names = resolve_all(topics, ctx.topic_ids);
    let mut describe = check_topics(topics, &names, &**ctx.check, Operation::Describe);
    // Unknown ids are not refused here: Metadata is how the interceptor learns them.
    for (refusal, topic) in describe.iter_mut().zip(topics) {
        if *refusal == Some(Refusal::UNKNOWN_TOPIC_ID) {
            debug_assert!(topic.name.is_none());
            *refusal = None;
        }
    }
    let asks_creation = parsed.auto_create.is_none_or(|(_, on)| on);
    let mut create_refused = vec![false; topics.len()];
    if asks_creation {
        let mut checks = Checks::new(&**ctx.check);
        for ((name, refusal), refused) in names.iter().zip(&describe).zip(&mut create_refused) {
            if let (Some(Name::Borrowed(name)), None) = (name, refusal) {
                *refused = checks.topic(Operation::Create, name) != Check::Allowed;
            }
        }
    }
    let turn_off_creation = create_refused.iter().any(|&r| r) && parsed.auto_create.is_some();
    let asked: Vec<Asked> = topics
        .iter()
        .zip(&describe)
        .zip(&create_refused)
        .map(|((topic, refusal), &create_refused)| match refusal {
            Some(refusal) => Asked::Refused {
                key: topic.key(),
                refusal: *refusal,
            },
            // v0–v3: the only way to keep the broker from creating it.
            None if create_refused && parsed.auto_create.is_none() => Asked::Refused {
                key: topic.key(),
                refusal: Refusal {
                    code: UNKNOWN_TOPIC_OR_PARTITION,
                    message: "",
                },
            },
            None if topic.name.is_none() && ctx.topic_ids.name(&topic.id).is_none() => {
                Asked::ForwardedUnchecked { id: topic.id }
            }
            None => Asked::Forwarded { key: topic.key() },
        })
        .collect();

    let keep: Vec<bool> = asked
        .iter()
        .map(|a| !matches!(a, Asked::Refused { .. }))
        .collect();
    let spliced = keep.iter().any(|k| !k);
    if version == 0 && !keep.iter().any(|&k| k) {
        // Nothing left to ask, and an empty v0 list would ask for every topic.
        let mut body = MetadataResponse::default();
        body.topics = merge(Vec::new(), &asked, &*check);
        let frame = encode_response(METADATA, version, correlation_id, &body, API)?;
        return Ok(Outcome::Respond(frame));
    }

    let rewrite: super::super::ResponseRewrite = Box::new(move |answer| {
        let (correlation_id, mut body): (i32, MetadataResponse) =
            decode_response(METADATA, version, &answer, API)?;
        learn_ids(&learn, &body.topics);
        body.topics = merge(std::mem::take(&mut body.topics), &asked, &*check);
        hide_operations(&mut body);
        encode_response(METADATA, version, correlation_id, &body, API)
    });
    if !spliced && !turn_off_creation {
        return Ok(Outcome::FilterResponse(rewrite));
    }
    let mut s = Splice::new(frame);
    if spliced {
        s = super::splice_topics(frame, array, topics, version >= 9, |t| keep[t], |_, _| true);
    }
    if let (true, Some((at, _))) = (turn_off_creation, parsed.auto_create) {
        s.copy_to(at);
        s.put(&[0]);
        s.skip_to(at + 1);
    }
    Ok(Outcome::Rewrite {
        frame: s.finish(),
        response: Some(rewrite),
    })
}

/// Asked when the broker's answer arrives: one check per topic, as each appears once.
fn describable(check: &dyn AccessCheck, name: Option<&str>) -> bool {
    name.is_some_and(|n| {
        check
            .check(Operation::Describe, Resource::topic(n))
            .is_allowed()
    })
}

fn learn_ids(ids: &TopicIds, topics: &[MetadataResponseTopic]) {
    for t in topics {
        if let (0, Some(name)) = (t.error_code, &t.name) {
            ids.learn(t.topic_id.into_bytes(), name);
        }
    }
}

fn hide_operations(body: &mut MetadataResponse) {
    body.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    for t in &mut body.topics {
        t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    }
}

fn refused_entry(key: &Key, refusal: Refusal) -> MetadataResponseTopic {
    let entry = MetadataResponseTopic::default().with_error_code(refusal.code);
    match key {
        Key::Name(name) => entry.with_name(Some(topic_name(name))),
        // Kafka's answer for a refused id names no topic.
        Key::Id(id) => entry.with_name(None).with_topic_id(uuid(*id)),
    }
}

/// The broker's entries in request order, refused topics in their places, and nothing about
/// a topic the subject may not describe.
fn merge(
    broker: Vec<MetadataResponseTopic>,
    asked: &[Asked],
    check: &dyn AccessCheck,
) -> Vec<MetadataResponseTopic> {
    let mut slots: Vec<Option<MetadataResponseTopic>> = broker.into_iter().map(Some).collect();
    let mut by_key: HashMap<Key, Vec<usize>> = HashMap::new();
    for (i, t) in slots.iter().enumerate().rev() {
        let Some(t) = t else { continue };
        if let Some(name) = &t.name {
            by_key
                .entry(Key::Name(name.to_string()))
                .or_default()
                .push(i);
        }
        by_key
            .entry(Key::Id(t.topic_id.into_bytes()))
            .or_default()
            .push(i);
    }
    let mut take = |key: &Key| -> Option<MetadataResponseTopic> {
        let positions = by_key.get_mut(key)?;
        while let Some(i) = positions.pop() {
            if let Some(entry) = slots.get_mut(i).and_then(Option::take) {
                return Some(entry);
            }
        }
        None
    };
    let describable = |name: Option<&str>| describable(check, name);
    let mut out = Vec::with_capacity(asked.len());
    for a in asked {
        match a {
            Asked::Refused { key, refusal } => out.push(refused_entry(key, *refusal)),
            Asked::Forwarded { key } => out.extend(take(key)),
            // Checked only now, by the name the broker gave (an error for the id, such as
            // UNKNOWN_TOPIC_ID, has nothing to hide).
            Asked::ForwardedUnchecked { id } => match take(&Key::Id(*id)) {
                None => {}
                Some(entry) if entry.error_code != 0 || describable(name_str(&entry.name)) => {
                    out.push(entry)
                }
                Some(_) => out.push(refused_entry(
                    &Key::Id(*id),
                    Refusal::topic(Check::Denied).unwrap_or(Refusal::UNKNOWN_TOPIC_ID),
                )),
            },
        }
    }
    // Entries for topics the request did not name: only what the subject may see.
    out.extend(
        slots
            .into_iter()
            .flatten()
            .filter(|t| describable(name_str(&t.name))),
    );
    out
}

/// DescribeTopicPartitions: an empty topic list asks for every topic.
pub(super) fn authorize_describe_partitions(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Authorized {
    const API: &str = "DescribeTopicPartitions";
    let frame: &[u8] = request.frame;
    let malformed = |e| request.malformed(e);
    let mut r = Reader::at(frame, request.header.body_offset, "body").map_err(malformed)?;
    let (array, topics) = super::parse_topic_array(&mut r, frame, true, super::Naming::Name, None)
        .map_err(malformed)?;
    let parse_rest = |r: &mut Reader<'_>| -> Result<(), HeaderError> {
        r.i32("response partition limit")?;
        if r.i8("cursor")? >= 0 {
            r.string(true, "cursor topic name")?;
            r.i32("cursor partition index")?;
            r.tagged(true, "cursor tagged fields")?;
        }
        r.tagged(true, "tagged fields")
    };
    parse_rest(&mut r).map_err(malformed)?;

    if topics.is_empty() {
        let learn = Arc::clone(ctx.topic_ids);
        let check = Arc::clone(ctx.check);
        return Ok(Outcome::FilterResponse(Box::new(move |answer| {
            let key = DESCRIBE_TOPIC_PARTITIONS;
            let (correlation_id, mut body): (i32, DescribeTopicPartitionsResponse) =
                decode_response(key, 0, &answer, API)?;
            body.topics.retain(|t| {
                if let (0, Some(name)) = (t.error_code, &t.name) {
                    learn.learn(t.topic_id.into_bytes(), name);
                }
                describable(&*check, name_str(&t.name))
            });
            for t in &mut body.topics {
                t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
            }
            encode_response(key, 0, correlation_id, &body, API)
        })));
    }
    let names = resolve_all(&topics, ctx.topic_ids);
    let refusals = check_topics(&topics, &names, &**ctx.check, Operation::Describe);
    let plans = topics
        .iter()
        .zip(refusals)
        .map(|(t, refusal)| Plan::whole(t, refusal))
        .collect();
    answer::<DescribeTopicPartitionsResponse>(request, &array, &topics, plans, true, false)
}

topics_response!(DescribeTopicPartitionsResponse => topics: DescribeTopicPartitionsResponseTopic);

topic_entry!(DescribeTopicPartitionsResponseTopic {
    parts: partitions: DescribeTopicPartitionsResponsePartition,
    index: partition_index,
    refused: |index, refusal| DescribeTopicPartitionsResponsePartition::default()
        .with_partition_index(index)
        .with_error_code(refusal.code),
} {
    fn key(&self, _by_id: bool) -> Key {
        Key::Name(name_str(&self.name).unwrap_or_default().to_owned())
    }

    fn new_entry(key: &Key, parts: Vec<DescribeTopicPartitionsResponsePartition>) -> Self {
        Self::default()
            .with_name(Some(name_of(key)))
            .with_partitions(parts)
    }

    /// Topics are refused whole (the request names no partitions): the refusal goes on the
    /// entry itself, which says nothing else.
    fn refused_entry(
        key: &Key,
        refusal: Refusal,
        _parts: Vec<DescribeTopicPartitionsResponsePartition>,
    ) -> Self {
        Self::new_entry(key, Vec::new()).with_error_code(refusal.code)
    }
});

fn name_str(name: &Option<kafka_protocol::messages::TopicName>) -> Option<&str> {
    name.as_ref().map(|n| &***n)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::{
        describe_topic_partitions_request::{Cursor, TopicRequest},
        metadata_request::MetadataRequestTopic,
        metadata_response::MetadataResponsePartition,
        ApiKey, DescribeTopicPartitionsRequest, MetadataRequest,
    };

    use super::super::test_support::*;
    use super::*;
    use crate::kafka::authz::response::TOPIC_AUTHORIZATION_FAILED;

    const VERSIONS: [i16; 7] = [0, 1, 4, 8, 9, 10, 13];

    fn request(version: i16, topics: Option<&[&str]>, auto_create: bool) -> Bytes {
        let body = MetadataRequest::default()
            .with_topics(topics.map(|t| {
                t.iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic(n))))
                    .collect()
            }))
            // v0–v3 have no flag: they always ask.
            .with_allow_auto_topic_creation(auto_create || version < 4)
            .with_include_topic_authorized_operations(version >= 8);
        frame(ApiKey::Metadata, version, &body)
    }

    fn entry(name: &str, id: u8) -> MetadataResponseTopic {
        MetadataResponseTopic::default()
            .with_name(Some(topic(name)))
            .with_topic_id(uuid_of(id))
            .with_partitions(vec![MetadataResponsePartition::default()
                .with_partition_index(0)
                .with_leader_id(1.into())])
    }

    fn broker(entries: Vec<MetadataResponseTopic>) -> MetadataResponse {
        MetadataResponse::default()
            .with_controller_id(1.into())
            .with_topics(entries)
    }

    fn rewrite_of(outcome: Outcome) -> (Option<Bytes>, super::super::super::ResponseRewrite) {
        match outcome {
            Outcome::FilterResponse(rewrite) => (None, rewrite),
            Outcome::Rewrite {
                frame,
                response: Some(rewrite),
            } => (Some(frame), rewrite),
            other => panic!("expected a response rewrite, got {other:?}"),
        }
    }

    fn summary(resp: &MetadataResponse) -> Vec<(String, i16, usize)> {
        resp.topics
            .iter()
            .map(|t| row(&t.name, t.error_code, t.partitions.len()))
            .collect()
    }

    fn row(
        name: &Option<kafka_protocol::messages::TopicName>,
        code: i16,
        parts: usize,
    ) -> (String, i16, usize) {
        (name_str(name).unwrap_or("<none>").to_owned(), code, parts)
    }

    #[test]
    fn answers_teach_topic_ids_and_hide_the_interceptors_own_operations() {
        for version in VERSIONS {
            let mut h = Harness::new(Fake::allow_all());
            let out = h.run(&request(version, Some(&["a", "b"]), false)).unwrap();
            let (frame, rewrite) = rewrite_of(out);
            // Auto-creation asked (always in v0–v3): create is checked, nothing changes.
            assert!(frame.is_none(), "v{version}");
            let mut answer = broker(vec![entry("b", 2), entry("a", 1)]);
            if version >= 8 {
                // What the broker lets the interceptor's own principal do.
                answer.topics[0].topic_authorized_operations = 0x0fff;
            }
            let merged = rewrite(broker_response(ApiKey::Metadata, version, &answer)).unwrap();
            let resp: MetadataResponse = decode_answer(ApiKey::Metadata, version, &merged);
            assert_eq!(summary(&resp), [("a".into(), 0, 1), ("b".into(), 0, 1)]);
            if version >= 8 {
                assert!(resp
                    .topics
                    .iter()
                    .all(|t| t.topic_authorized_operations == AUTHORIZED_OPERATIONS_OMITTED));
            }
            if version >= 10 {
                assert_eq!(h.ids.name(&uuid_of(1).into_bytes()).as_deref(), Some("a"));
                assert_eq!(h.ids.name(&uuid_of(2).into_bytes()).as_deref(), Some("b"));
            }
        }
    }

    #[test]
    fn refused_topics_are_cut_out_and_answered_without_metadata() {
        for version in VERSIONS {
            let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
            let out = h
                .run(&request(version, Some(&["a", "secret", "b"]), false))
                .unwrap();
            let (frame, rewrite) = rewrite_of(out);
            let fwd: MetadataRequest = decode_request(ApiKey::Metadata, &frame.unwrap());
            let names: Vec<_> = fwd
                .topics
                .unwrap()
                .iter()
                .map(|t| t.name.as_ref().unwrap().to_string())
                .collect();
            assert_eq!(names, ["a", "b"], "v{version}");
            let answer = broker(vec![entry("a", 1), entry("b", 2)]);
            let merged = rewrite(broker_response(ApiKey::Metadata, version, &answer)).unwrap();
            let resp: MetadataResponse = decode_answer(ApiKey::Metadata, version, &merged);
            assert_eq!(
                summary(&resp),
                [
                    ("a".into(), 0, 1),
                    ("secret".into(), TOPIC_AUTHORIZATION_FAILED, 0),
                    ("b".into(), 0, 1)
                ],
                "v{version}"
            );
            assert!(resp.topics[1].topic_id.is_nil());
            if version >= 1 {
                assert_eq!(resp.controller_id, 1);
            }
        }
    }

    #[test]
    fn auto_creation_is_turned_off_when_a_named_topic_may_not_be_created() {
        for version in [4, 9, 13] {
            let mut h = Harness::new(Fake::denying(&[(Operation::Create, "b")]));
            let out = h.run(&request(version, Some(&["a", "b"]), true)).unwrap();
            assert_eq!(
                h.fake.calls(),
                [
                    "describe topic:a",
                    "describe topic:b",
                    "create topic:a",
                    "create topic:b"
                ]
            );
            let (frame, _) = rewrite_of(out);
            let fwd: MetadataRequest = decode_request(ApiKey::Metadata, &frame.unwrap());
            assert!(!fwd.allow_auto_topic_creation, "v{version}");
            assert_eq!(fwd.topics.unwrap().len(), 2);
            assert_eq!(fwd.include_topic_authorized_operations, version >= 8);
            // Not asked: no create checks.
            let mut h = Harness::new(Fake::denying(&[(Operation::Create, "b")]));
            let out = h.run(&request(version, Some(&["a", "b"]), false)).unwrap();
            assert!(rewrite_of(out).0.is_none());
            assert_eq!(h.fake.calls().len(), 2);
        }
        // v1–v3 cannot say "do not create": the topic is cut out.
        let mut h = Harness::new(Fake::denying(&[(Operation::Create, "b")]));
        let (frame, rewrite) = rewrite_of(h.run(&request(1, Some(&["a", "b"]), true)).unwrap());
        let fwd: MetadataRequest = decode_request(ApiKey::Metadata, &frame.unwrap());
        assert_eq!(fwd.topics.unwrap().len(), 1);
        let merged = rewrite(broker_response(
            ApiKey::Metadata,
            1,
            &broker(vec![entry("a", 1)]),
        ))
        .unwrap();
        let resp: MetadataResponse = decode_answer(ApiKey::Metadata, 1, &merged);
        assert_eq!(
            summary(&resp),
            [
                ("a".into(), 0, 1),
                ("b".into(), UNKNOWN_TOPIC_OR_PARTITION, 0)
            ]
        );
    }

    #[test]
    fn all_topics_answers_keep_only_describable_topics() {
        for version in VERSIONS {
            let topics: Option<&[&str]> = if version == 0 { Some(&[]) } else { None };
            let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
            let (frame, rewrite) = rewrite_of(h.run(&request(version, topics, true)).unwrap());
            assert!(frame.is_none());
            assert!(h.fake.calls().is_empty(), "checks happen on the answer");
            let answer = broker(vec![entry("a", 1), entry("secret", 2), entry("b", 3)]);
            let merged = rewrite(broker_response(ApiKey::Metadata, version, &answer)).unwrap();
            let resp: MetadataResponse = decode_answer(ApiKey::Metadata, version, &merged);
            assert_eq!(summary(&resp), [("a".into(), 0, 1), ("b".into(), 0, 1)]);
            assert_eq!(h.fake.calls().len(), 3);
            if version >= 10 {
                // Learned even though this subject may not see it.
                assert!(h.ids.name(&uuid_of(2).into_bytes()).is_some());
            }
        }
    }

    #[test]
    fn a_v0_request_left_empty_is_answered_locally() {
        let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
        let out = respond_frame(h.run(&request(0, Some(&["secret"]), true)).unwrap());
        let resp: MetadataResponse = decode_answer(ApiKey::Metadata, 0, &out);
        assert_eq!(
            summary(&resp),
            [("secret".into(), TOPIC_AUTHORIZATION_FAILED, 0)]
        );
        // v1+: an empty list means no topics, so the broker is still asked (for brokers).
        let out = h.run(&request(1, Some(&["secret"]), true)).unwrap();
        let (frame, _) = rewrite_of(out);
        let fwd: MetadataRequest = decode_request(ApiKey::Metadata, &frame.unwrap());
        assert_eq!(fwd.topics.map(|t| t.len()), Some(0));
    }

    #[test]
    fn topics_asked_by_id_resolve_or_are_checked_on_the_answer() {
        let body = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_topic_id(uuid_of(1))
                    .with_name(None),
                MetadataRequestTopic::default()
                    .with_topic_id(uuid_of(2))
                    .with_name(None),
            ]))
            .with_allow_auto_topic_creation(true);
        let req = frame(ApiKey::Metadata, 12, &body);
        let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
        h.ids.learn(uuid_of(1).into_bytes(), "a");
        let (frame, rewrite) = rewrite_of(h.run(&req).unwrap());
        assert!(frame.is_none(), "ids never auto-create");
        assert_eq!(h.fake.calls(), ["describe topic:a"]);
        let answer = broker(vec![entry("a", 1), entry("secret", 2)]);
        let merged = rewrite(broker_response(ApiKey::Metadata, 12, &answer)).unwrap();
        let resp: MetadataResponse = decode_answer(ApiKey::Metadata, 12, &merged);
        assert_eq!(
            summary(&resp),
            [
                ("a".into(), 0, 1),
                ("<none>".into(), TOPIC_AUTHORIZATION_FAILED, 0)
            ]
        );
        assert_eq!(resp.topics[1].topic_id, uuid_of(2));
    }

    #[test]
    fn truncated_and_garbage_metadata_requests_are_malformed() {
        for version in VERSIONS {
            let frame = request(version, Some(&["a", "b"]), true);
            assert_truncations_are_malformed(&frame);
            assert_garbage_is_no_panic(&frame);
        }
    }

    fn dtp(topics: &[&str], cursor: Option<&str>) -> Bytes {
        let body = DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|n| TopicRequest::default().with_name(topic(n)))
                    .collect(),
            )
            .with_response_partition_limit(100)
            .with_cursor(cursor.map(|c| Cursor::default().with_topic_name(topic(c))));
        frame(ApiKey::DescribeTopicPartitions, 0, &body)
    }

    fn dtp_entry(name: &str, id: u8) -> DescribeTopicPartitionsResponseTopic {
        DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(topic(name)))
            .with_topic_id(uuid_of(id))
            .with_partitions(vec![DescribeTopicPartitionsResponsePartition::default()])
    }

    fn dtp_summary(resp: &DescribeTopicPartitionsResponse) -> Vec<(String, i16, usize)> {
        resp.topics
            .iter()
            .map(|t| row(&t.name, t.error_code, t.partitions.len()))
            .collect()
    }

    #[test]
    fn describe_topic_partitions_forward_refuse_merge_and_filter() {
        let key = ApiKey::DescribeTopicPartitions;
        let req = dtp(&["a", "secret", "b"], Some("a"));
        let mut h = Harness::new(Fake::allow_all());
        assert!(matches!(h.run(&req).unwrap(), Outcome::Forward));

        let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
        let (spliced, rewrite) = outcome_frame(h.run(&req).unwrap());
        let fwd: DescribeTopicPartitionsRequest = decode_request(key, &spliced);
        assert_eq!(fwd.topics.len(), 2);
        assert_eq!(
            fwd.cursor.unwrap().topic_name,
            topic("a"),
            "cursor left alone"
        );
        let answer = DescribeTopicPartitionsResponse::default()
            .with_topics(vec![dtp_entry("a", 1), dtp_entry("b", 3)]);
        let merged = rewrite.unwrap()(broker_response(key, 0, &answer)).unwrap();
        let resp: DescribeTopicPartitionsResponse = decode_answer(key, 0, &merged);
        assert_eq!(
            dtp_summary(&resp),
            [
                ("a".into(), 0, 1),
                ("secret".into(), TOPIC_AUTHORIZATION_FAILED, 0),
                ("b".into(), 0, 1)
            ]
        );

        let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
        let out = respond_frame(h.run(&dtp(&["secret"], None)).unwrap());
        let resp: DescribeTopicPartitionsResponse = decode_answer(key, 0, &out);
        assert_eq!(
            dtp_summary(&resp),
            [("secret".into(), TOPIC_AUTHORIZATION_FAILED, 0)]
        );

        // Every topic: filtered on the answer, ids learned.
        let mut h = Harness::new(Fake::denying(&[(Operation::Describe, "secret")]));
        let Outcome::FilterResponse(rewrite) = h.run(&dtp(&[], None)).unwrap() else {
            panic!("expected a response filter");
        };
        let answer = DescribeTopicPartitionsResponse::default().with_topics(vec![
            dtp_entry("a", 1),
            dtp_entry("secret", 2),
            dtp_entry("b", 3),
        ]);
        let merged = rewrite(broker_response(key, 0, &answer)).unwrap();
        let resp: DescribeTopicPartitionsResponse = decode_answer(key, 0, &merged);
        assert_eq!(dtp_summary(&resp), [("a".into(), 0, 1), ("b".into(), 0, 1)]);
        assert_eq!(h.ids.name(&uuid_of(3).into_bytes()).as_deref(), Some("b"));

        for frame in [dtp(&["a", "b"], Some("a")), dtp(&["a"], None)] {
            assert_truncations_are_malformed(&frame);
            assert_garbage_is_no_panic(&frame);
        }
    }
}
