//! The data path: api keys that move or describe topic data (Produce, Fetch, ListOffsets,
//! Metadata, OffsetForLeaderEpoch, DescribeProducers, DescribeTopicPartitions).
//!
//! Each key's module parses the request in place with [`Reader`] (never with the crate's
//! decoder), asks the session's checker about every topic once, and answers with one of the
//! [`Outcome`]s. The pieces every key shares live here: the parsed shape of a topic array
//! ([`TopicSpan`]), the per-request check memo ([`Checks`]), splicing a topic array
//! ([`splice_topics`]) and merging the broker's per-topic answer with the interceptor's
//! refusals in request order ([`merge_topics`]).

mod fetch;
mod metadata;
mod offsets;
mod produce;
mod sessions;
#[cfg(test)]
mod test_support;

pub(crate) use super::checks::Checks;
use std::{
    collections::{HashMap, VecDeque},
    ops::{Deref, Range},
    sync::Arc,
};

use super::{
    response::{refusal_code, refusal_message, UNKNOWN_TOPIC_ID},
    splice::Splice,
    table::ApiAccess,
    AuthzError, Context, Outcome, Request, TopicIds,
};
use crate::{
    kafka::{wire::Reader, HeaderError},
    policy::{AccessCheck, Check, Operation, ResourceKind},
};
pub use sessions::FetchSessions;

pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const LIST_OFFSETS: i16 = 2;
pub const METADATA: i16 = 3;
pub const OFFSET_FOR_LEADER_EPOCH: i16 = 23;
pub const DESCRIBE_PRODUCERS: i16 = 61;
pub const DESCRIBE_TOPIC_PARTITIONS: i16 = 75;

pub const TABLE: &[ApiAccess] = &[
    ApiAccess {
        key: PRODUCE,
        name: "Produce",
        touches: &[
            (Operation::Produce, ResourceKind::Topic),
            (Operation::Transactions, ResourceKind::TransactionalId),
        ],
        max_version: 13,
        note: "records are checked per partition (size, content); v13 topic ids resolve \
               through ids learned from Metadata, unknown ids get UNKNOWN_TOPIC_ID",
    },
    ApiAccess {
        key: FETCH,
        name: "Fetch",
        touches: &[
            (Operation::Consume, ResourceKind::Topic),
            (Operation::ClusterAction, ResourceKind::Cluster),
        ],
        max_version: 18,
        note: "follower fetches need cluster-action; incremental fetch sessions authorized \
               under an older policy are answered FETCH_SESSION_ID_NOT_FOUND",
    },
    ApiAccess {
        key: LIST_OFFSETS,
        name: "ListOffsets",
        touches: &[(Operation::Describe, ResourceKind::Topic)],
        max_version: 10,
        note: "",
    },
    ApiAccess {
        key: METADATA,
        name: "Metadata",
        touches: &[
            (Operation::Describe, ResourceKind::Topic),
            (Operation::Create, ResourceKind::Topic),
        ],
        max_version: 13,
        note: "all-topics answers only list describable topics; auto-creation is turned off \
               for the whole request when a named topic may not be created",
    },
    ApiAccess {
        key: OFFSET_FOR_LEADER_EPOCH,
        name: "OffsetForLeaderEpoch",
        touches: &[
            (Operation::Describe, ResourceKind::Topic),
            (Operation::ClusterAction, ResourceKind::Cluster),
        ],
        max_version: 4,
        note: "replica requests need cluster-action",
    },
    ApiAccess {
        key: DESCRIBE_PRODUCERS,
        name: "DescribeProducers",
        touches: &[(Operation::Consume, ResourceKind::Topic)],
        max_version: 0,
        note: "Kafka's Read on the topic",
    },
    ApiAccess {
        key: DESCRIBE_TOPIC_PARTITIONS,
        name: "DescribeTopicPartitions",
        touches: &[(Operation::Describe, ResourceKind::Topic)],
        max_version: 0,
        note: "all-topics answers only list describable topics",
    },
];

/// What a key's authorization comes to.
pub(crate) type Authorized = Result<Outcome, AuthzError>;

/// `None` when the api key is not this module's.
pub(super) fn authorize(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Option<Result<Outcome, AuthzError>> {
    let version = request.header.api_version;
    let (min, max) = match request.header.api_key {
        PRODUCE => (3, 13),
        FETCH => (4, 18),
        LIST_OFFSETS => (1, 10),
        METADATA => (0, 13),
        OFFSET_FOR_LEADER_EPOCH => (2, 4),
        DESCRIBE_PRODUCERS | DESCRIBE_TOPIC_PARTITIONS => (0, 0),
        _ => return None,
    };
    if !(min..=max).contains(&version) {
        return Some(Err(AuthzError::UnsupportedVersion {
            api: request.api_name(),
            version,
        }));
    }
    Some(match request.header.api_key {
        PRODUCE => produce::authorize(request, ctx),
        FETCH => fetch::authorize(request, ctx),
        METADATA => metadata::authorize(request, ctx),
        DESCRIBE_TOPIC_PARTITIONS => metadata::authorize_describe_partitions(request, ctx),
        _ => offsets::authorize(request, ctx),
    })
}

/// One element of a request's topic array, as found in the frame.
#[derive(Debug, Clone)]
pub(crate) struct TopicSpan<'a> {
    /// `None` where the version names topics by id.
    pub name: Option<&'a str>,
    /// The nil id where the version (or the client) names topics by name.
    pub id: [u8; 16],
    /// The whole element.
    pub span: Range<usize>,
    /// The element's partition array count (an empty range at the element's end when it has
    /// no partition array).
    pub parts_count: Range<usize>,
    pub parts: Vec<PartSpan>,
}

#[derive(Debug, Clone)]
pub(crate) struct PartSpan {
    pub index: i32,
    pub span: Range<usize>,
    /// The partition's records (Produce); empty elsewhere.
    pub records: Range<usize>,
}

impl PartSpan {
    pub fn new(index: i32, span: Range<usize>) -> Self {
        Self {
            index,
            span,
            records: 0..0,
        }
    }
}

/// A request's topic array: its count and where it ends.
#[derive(Debug, Clone)]
pub(crate) struct ArraySpan {
    pub count: Range<usize>,
    pub end: usize,
}

/// A topic name from the frame, or from the shared id map.
#[derive(Debug, Clone)]
pub(crate) enum Name<'a> {
    Borrowed(&'a str),
    Shared(Arc<str>),
}

impl Deref for Name<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Name::Borrowed(s) => s,
            Name::Shared(s) => s,
        }
    }
}

impl TopicSpan<'_> {
    /// The name to authorize: the one in the frame, else the one the id was learned under.
    /// `None` for an id the interceptor has never seen.
    pub fn resolve(&self, ids: &TopicIds) -> Option<Name<'_>> {
        match self.name {
            Some(name) => Some(Name::Borrowed(name)),
            None => ids.name(&self.id).map(Name::Shared),
        }
    }

    /// The key the broker's answer names this topic by.
    pub fn key(&self) -> Key {
        match self.name {
            Some(name) => Key::Name(name.to_owned()),
            None => Key::Id(self.id),
        }
    }
}

/// Why an item was refused, as the client will read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: i16,
    pub message: &'static str,
}

impl Refusal {
    pub const UNKNOWN_TOPIC_ID: Refusal = Refusal {
        code: UNKNOWN_TOPIC_ID,
        message: "Topic id not known to the interceptor; refresh metadata",
    };

    /// `None` when allowed.
    pub fn of(check: Check, kind: ResourceKind) -> Option<Refusal> {
        (!check.is_allowed()).then(|| Refusal {
            code: refusal_code(check, kind),
            message: refusal_message(check),
        })
    }

    pub fn topic(check: Check) -> Option<Refusal> {
        Self::of(check, ResourceKind::Topic)
    }
}

/// Authorizes each topic for `op`: `None` = allowed, else why not. Topics named by an id the
/// interceptor does not know are refused without a check.
pub(crate) fn check_topics(
    topics: &[TopicSpan<'_>],
    names: &[Option<Name<'_>>],
    check: &dyn AccessCheck,
    op: Operation,
) -> Vec<Option<Refusal>> {
    let mut checks = Checks::new(check);
    topics
        .iter()
        .zip(names)
        .map(|(_, name)| match name {
            Some(name) => Refusal::topic(checks.topic(op, name)),
            None => Some(Refusal::UNKNOWN_TOPIC_ID),
        })
        .collect()
}

/// The request's body as `parse` reads it (from the frame, the body offset and the version);
/// what it cannot read makes the request malformed.
pub(crate) fn parse_body<'a, T>(
    request: &Request<'a>,
    parse: fn(&'a [u8], usize, i16) -> Result<T, HeaderError>,
) -> Result<T, AuthzError> {
    let header = request.header;
    parse(request.frame, header.body_offset, header.api_version).map_err(|e| request.malformed(e))
}

/// Resolves every topic's name (see [`TopicSpan::resolve`]).
pub(crate) fn resolve_all<'a>(
    topics: &'a [TopicSpan<'_>],
    ids: &TopicIds,
) -> Vec<Option<Name<'a>>> {
    topics.iter().map(|t| t.resolve(ids)).collect()
}

/// Copies the frame up to the end of the topic array, keeping the topics and partitions the
/// predicates keep (each topic's own fields and tagged fields are copied as they are). The
/// caller copies or patches the rest and finishes the frame.
pub(crate) fn splice_topics<'a>(
    frame: &'a [u8],
    array: &ArraySpan,
    topics: &[TopicSpan<'_>],
    flexible: bool,
    keep_topic: impl Fn(usize) -> bool,
    keep_part: impl Fn(usize, usize) -> bool,
) -> Splice<'a> {
    let mut s = Splice::new(frame);
    s.copy_to(array.count.start);
    s.put_count(
        (0..topics.len()).filter(|&t| keep_topic(t)).count(),
        flexible,
    );
    s.skip_to(array.count.end);
    for (t, topic) in topics.iter().enumerate() {
        if !keep_topic(t) {
            continue;
        }
        let kept = (0..topic.parts.len()).filter(|&p| keep_part(t, p)).count();
        if kept == topic.parts.len() {
            s.copy(topic.span.clone());
            continue;
        }
        s.copy(topic.span.start..topic.parts_count.start);
        s.put_count(kept, flexible);
        s.skip_to(topic.parts_count.end);
        for (p, part) in topic.parts.iter().enumerate() {
            if keep_part(t, p) {
                s.copy(part.span.clone());
            }
        }
        let tail = topic
            .parts
            .last()
            .map_or(topic.parts_count.end, |p| p.span.end);
        s.copy(tail..topic.span.end);
    }
    s.skip_to(array.end);
    s
}

/// How a topic of the request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Forwarded whole: the broker's entry is used as it is.
    Forwarded,
    /// Refused whole: an entry with these partitions, each with the refusal.
    Refused(Refusal, Vec<i32>),
    /// Some partitions refused: the broker's entry, with the refused partitions put in their
    /// request positions.
    Mixed(Vec<(i32, Option<Refusal>)>),
}

/// How responses name a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Name(String),
    Id([u8; 16]),
}

/// How to take apart and build one api's response topics, for [`merge_topics`].
pub(crate) trait TopicEntry: Sized {
    type Part;
    fn key(&self, by_id: bool) -> Key;
    fn parts(&mut self) -> &mut Vec<Self::Part>;
    fn part_index(part: &Self::Part) -> i32;
    fn refused_part(index: i32, refusal: Refusal) -> Self::Part;
    /// An entry for a topic the broker never saw.
    fn new_entry(key: &Key, parts: Vec<Self::Part>) -> Self;
    /// An entry for a topic refused whole.
    fn refused_entry(key: &Key, _refusal: Refusal, parts: Vec<Self::Part>) -> Self {
        Self::new_entry(key, parts)
    }
}

/// The broker's answer for the forwarded topics, merged with the refused ones, in request
/// order. Entries the broker sent that the request did not name are kept, at the end.
pub(crate) fn merge_topics<T: TopicEntry>(
    broker: Vec<T>,
    plan: &[(Key, Plan)],
    by_id: bool,
) -> Vec<T> {
    let mut slots = Slots::new(broker, |t: &T| t.key(by_id));
    let mut out = Vec::with_capacity(plan.len() + slots.items.len());
    for (key, plan) in plan {
        match plan {
            Plan::Forwarded => out.extend(slots.take(key)),
            Plan::Refused(refusal, parts) => out.push(T::refused_entry(
                key,
                *refusal,
                parts
                    .iter()
                    .map(|&index| T::refused_part(index, *refusal))
                    .collect(),
            )),
            Plan::Mixed(parts) => {
                let mut entry = slots
                    .take(key)
                    .unwrap_or_else(|| T::new_entry(key, Vec::new()));
                let mut broker_parts = Slots::new(std::mem::take(entry.parts()), T::part_index);
                let mut merged = Vec::with_capacity(parts.len());
                for &(index, refusal) in parts {
                    match refusal {
                        Some(refusal) => merged.push(T::refused_part(index, refusal)),
                        None => merged.extend(broker_parts.take(&index)),
                    }
                }
                merged.extend(broker_parts.rest());
                *entry.parts() = merged;
                out.push(entry);
            }
        }
    }
    out.extend(slots.rest());
    out
}

/// Items taken out by key, first come first served; the untaken ones stay in order.
struct Slots<K, T> {
    items: Vec<Option<T>>,
    by_key: HashMap<K, VecDeque<usize>>,
}

impl<K: std::hash::Hash + Eq, T> Slots<K, T> {
    fn new(items: Vec<T>, key: impl Fn(&T) -> K) -> Self {
        let mut by_key: HashMap<K, VecDeque<usize>> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            by_key.entry(key(item)).or_default().push_back(i);
        }
        Self {
            items: items.into_iter().map(Some).collect(),
            by_key,
        }
    }

    fn take(&mut self, key: &K) -> Option<T> {
        let i = self.by_key.get_mut(key)?.pop_front()?;
        self.items.get_mut(i)?.take()
    }

    fn rest(self) -> impl Iterator<Item = T> {
        self.items.into_iter().flatten()
    }
}

/// A topic name from the frame: Kafka topic names are ASCII, so bytes that are not UTF-8 are
/// refused as malformed rather than guessed at.
pub(crate) fn utf8<'a>(
    frame: &'a [u8],
    range: Range<usize>,
    what: &'static str,
) -> Result<&'a str, HeaderError> {
    let bytes = frame.get(range).ok_or(HeaderError::Truncated(what))?;
    std::str::from_utf8(bytes).map_err(|_| HeaderError::Invalid(what))
}

/// Reads a tagged-field section and returns the content of field `tag`, if present (the last
/// one, if a client repeats it, as Kafka's own parser keeps the last).
pub(crate) fn find_tag(
    r: &mut Reader<'_>,
    tag: u32,
    what: &'static str,
) -> Result<Option<Range<usize>>, HeaderError> {
    let count = r.uvarint(what)?;
    let mut found = None;
    for _ in 0..count {
        let this = r.uvarint(what)?;
        let size = r.uvarint(what)?;
        let range = r.take_range(crate::kafka::wire::to_usize(size), what)?;
        if this == tag {
            found = Some(range);
        }
    }
    Ok(found)
}

/// Smallest encodings of array elements, for checking counts against the bytes left: a
/// string (2 bytes classic, 1 compact), an i32 and a tag section.
pub(crate) fn min_bytes(flexible: bool, classic: usize, compact: usize) -> usize {
    if flexible {
        compact
    } else {
        classic
    }
}

/// Kafka's uuid as the crate's type.
pub(crate) fn uuid(id: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(id)
}

/// The refused error message where the version has the field.
pub(crate) fn message(refusal: Refusal) -> Option<kafka_protocol::protocol::StrBytes> {
    Some(kafka_protocol::protocol::StrBytes::from_static_str(
        refusal.message,
    ))
}

impl Plan {
    /// A topic refused or allowed as a whole.
    pub fn whole(topic: &TopicSpan<'_>, refusal: Option<Refusal>) -> Plan {
        match refusal {
            None => Plan::Forwarded,
            Some(refusal) => Plan::Refused(refusal, topic.parts.iter().map(|p| p.index).collect()),
        }
    }

    /// Whether anything of the topic is forwarded.
    pub fn forwards(&self) -> bool {
        match self {
            Plan::Forwarded => true,
            Plan::Refused(..) => false,
            Plan::Mixed(parts) => parts.iter().any(|(_, r)| r.is_none()),
        }
    }

    /// Whether the topic's `p`th partition is forwarded.
    pub fn forwards_part(&self, p: usize) -> bool {
        match self {
            Plan::Forwarded => true,
            Plan::Refused(..) => false,
            Plan::Mixed(parts) => parts.get(p).is_some_and(|(_, r)| r.is_none()),
        }
    }
}

/// What a request's plans come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    AllForwarded,
    NoneForwarded,
    Some,
}

pub(crate) fn verdict(plans: &[Plan]) -> Verdict {
    if plans.iter().all(|p| *p == Plan::Forwarded) {
        Verdict::AllForwarded
    } else if plans.iter().any(Plan::forwards) {
        Verdict::Some
    } else {
        Verdict::NoneForwarded
    }
}

/// The request's topics with their plans, keyed as the broker's answer names them.
pub(crate) fn keyed_plans(topics: &[TopicSpan<'_>], plans: Vec<Plan>) -> Vec<(Key, Plan)> {
    topics.iter().map(TopicSpan::key).zip(plans).collect()
}

/// A topic name as the crate's type.
pub(crate) fn topic_name(name: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::protocol::StrBytes::from_string(name.to_owned()).into()
}

/// The name for an entry that has no id field: its requests name topics by name only, so an
/// id key does not occur.
pub(crate) fn name_of(key: &Key) -> kafka_protocol::messages::TopicName {
    match key {
        Key::Name(name) => topic_name(name),
        Key::Id(_) => topic_name(""),
    }
}

/// The key of an entry that has both a name and an id field.
pub(crate) fn name_or_id(by_id: bool, name: &str, id: uuid::Uuid) -> Key {
    if by_id {
        Key::Id(id.into_bytes())
    } else {
        Key::Name(name.to_owned())
    }
}

/// How a topic array's elements name their topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    Name,
    Id,
}

/// Reads one partition element (tagged fields included) and returns its index.
pub(crate) type PartReader<'r, 'a> = &'r mut dyn FnMut(&mut Reader<'a>) -> Result<i32, HeaderError>;

/// Reads a topic array whose elements are a name or id, optionally a partition array read by
/// `part` (each at least `part_min` bytes), and tagged fields when flexible.
pub(crate) fn parse_topic_array<'a>(
    r: &mut Reader<'a>,
    frame: &'a [u8],
    flexible: bool,
    naming: Naming,
    mut part: Option<(PartReader<'_, 'a>, usize)>,
) -> Result<(ArraySpan, Vec<TopicSpan<'a>>), HeaderError> {
    let name_min = match naming {
        Naming::Id => 16,
        Naming::Name => min_bytes(flexible, 2, 1),
    };
    let topic_min =
        name_min + part.as_ref().map_or(0, |_| min_bytes(flexible, 4, 1)) + usize::from(flexible);
    let count_at = r.pos();
    let n = r.count(flexible, topic_min, "topics")?;
    let count = count_at..r.pos();
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let start = r.pos();
        let (name, id) = match naming {
            Naming::Id => (None, r.uuid("topic id")?),
            Naming::Name => {
                let range = r.string(flexible, "topic name")?;
                (Some(utf8(frame, range, "topic name")?), [0; 16])
            }
        };
        let parts_at = r.pos();
        let mut parts = Vec::new();
        if let Some((read, part_min)) = part.as_mut() {
            let np = r.count(flexible, *part_min, "partitions")?;
            parts.reserve_exact(np);
            for _ in 0..np {
                let part_start = r.pos();
                let index = read(r)?;
                parts.push(PartSpan::new(index, part_start..r.pos()));
            }
        }
        let parts_count = parts_at..parts.first().map_or(r.pos(), |p| p.span.start);
        r.tagged(flexible, "topic tagged fields")?;
        topics.push(TopicSpan {
            name,
            id,
            span: start..r.pos(),
            parts_count,
            parts,
        });
    }
    Ok((
        ArraySpan {
            count,
            end: r.pos(),
        },
        topics,
    ))
}

/// A response made of per-topic entries.
pub(crate) trait TopicsResponse:
    kafka_protocol::protocol::Encodable + kafka_protocol::protocol::Decodable + Default + 'static
{
    type Topic: TopicEntry;
    fn topics(&mut self) -> &mut Vec<Self::Topic>;
}

/// Implements [`TopicsResponse`] for responses whose topic entries are one field.
macro_rules! topics_response {
    ($($response:ty => $field:ident: $topic:ty),* $(,)?) => {$(
        impl $crate::kafka::authz::data::TopicsResponse for $response {
            type Topic = $topic;
            fn topics(&mut self) -> &mut Vec<$topic> {
                &mut self.$field
            }
        }
    )*};
}
pub(super) use topics_response;

/// Implements [`TopicEntry`] from the entry's partition field and its partition index field;
/// `refused` builds a refused partition, `key` and `new_entry` follow in braces. Entries
/// keyed by a name field only, with their partitions in `partitions`, take one row each:
/// `Topic[name field / its builder] => Part[index field / its builder]`, and
/// `+ with_error_message` where refused partitions carry the refusal's message.
macro_rules! topic_entry {
    ($(
        $topic:ty[$name:ident / $with_name:ident]
            => $part:ty[$index:ident / $with_index:ident] $(+ $message:ident)?;
    )+) => {$(
        $crate::kafka::authz::data::topic_entry!($topic {
            parts: partitions: $part,
            index: $index,
            refused: |index, refusal| <$part>::default()
                .$with_index(index)
                .with_error_code(refusal.code)
                $(.$message($crate::kafka::authz::data::message(refusal)))?,
        } {
            fn key(&self, _by_id: bool) -> $crate::kafka::authz::data::Key {
                $crate::kafka::authz::data::Key::Name(self.$name.to_string())
            }
            fn new_entry(key: &$crate::kafka::authz::data::Key, parts: Vec<$part>) -> Self {
                Self::default()
                    .$with_name($crate::kafka::authz::data::name_of(key))
                    .with_partitions(parts)
            }
        });
    )+};
    (
        $topic:ty {
            parts: $parts:ident: $part:ty,
            index: $index:ident,
            refused: |$i:ident, $r:ident| $refused:expr $(,)?
        } { $($rest:tt)* }
    ) => {
        impl $crate::kafka::authz::data::TopicEntry for $topic {
            type Part = $part;
            fn parts(&mut self) -> &mut Vec<$part> {
                &mut self.$parts
            }
            fn part_index(part: &$part) -> i32 {
                part.$index
            }
            fn refused_part($i: i32, $r: $crate::kafka::authz::data::Refusal) -> $part {
                $refused
            }
            $($rest)*
        }
    };
}
pub(super) use topic_entry;

/// The outcome for a request whose topics are answered per topic (and partition): forwarded
/// untouched, answered by the interceptor, or spliced with the broker's answer merged.
pub(crate) fn answer<R: TopicsResponse>(
    request: &Request<'_>,
    array: &ArraySpan,
    topics: &[TopicSpan<'_>],
    plans: Vec<Plan>,
    flexible: bool,
    by_id: bool,
) -> Authorized {
    let key = request.header.api_key;
    let version = request.header.api_version;
    let api = request.api_name();
    match verdict(&plans) {
        Verdict::AllForwarded => Ok(Outcome::Forward),
        Verdict::NoneForwarded => {
            let mut body = R::default();
            *body.topics() = merge_topics(Vec::new(), &keyed_plans(topics, plans), by_id);
            let frame = super::response::encode_response(
                key,
                version,
                request.header.correlation_id,
                &body,
                api,
            )?;
            Ok(Outcome::Respond(frame))
        }
        Verdict::Some => {
            let frame = splice_topics(
                request.frame,
                array,
                topics,
                flexible,
                |t| plans[t].forwards(),
                |t, p| plans[t].forwards_part(p),
            )
            .finish();
            let plan = keyed_plans(topics, plans);
            Ok(Outcome::Rewrite {
                frame,
                response: Some(Box::new(move |answer| {
                    let (correlation_id, mut body): (i32, R) =
                        super::response::decode_response(key, version, &answer, api)?;
                    let broker = std::mem::take(body.topics());
                    *body.topics() = merge_topics(broker, &plan, by_id);
                    super::response::encode_response(key, version, correlation_id, &body, api)
                })),
            })
        }
    }
}
