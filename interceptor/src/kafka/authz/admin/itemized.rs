//! Cluster keys whose answers have no top-level error, only one per item of the request
//! (ACL creations and filters, partitions, quota entries, users): a refusal must list every
//! item with the error, so these requests are parsed as far as their items.

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::{
    alter_client_quotas_response::{EntityData, EntryData},
    alter_replica_log_dirs_response::{
        AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
    },
    alter_user_scram_credentials_response::AlterUserScramCredentialsResult,
    create_acls_response::AclCreationResult,
    delete_acls_response::DeleteAclsFilterResult,
    elect_leaders_response::{PartitionResult, ReplicaElectionResult},
    AlterClientQuotasResponse, AlterReplicaLogDirsResponse, AlterUserScramCredentialsResponse,
    ApiKey, CreateAclsResponse, DeleteAclsResponse, ElectLeadersResponse, TopicName,
};

use super::partial::{i32s, min_bytes, name, nullable_name, owned, reader, respond, Refusal};
use crate::kafka::{
    authz::{AuthzError, Outcome, Request},
    wire::Reader,
    HeaderError,
};

/// Topics and their partitions, in request order.
type TopicPartitions<'f> = Vec<(&'f str, Vec<i32>)>;

/// What a refusal of one of these requests has to list.
#[derive(Debug, PartialEq)]
pub(super) enum Itemized<'f> {
    CreateAcls(usize),
    DeleteAcls(usize),
    AlterReplicaLogDirs(TopicPartitions<'f>),
    /// `None`: the request elects leaders of every partition.
    ElectLeaders(Option<TopicPartitions<'f>>),
    /// Each entry's entity: (type, name) pairs.
    AlterClientQuotas(Vec<Vec<(&'f str, Option<&'f str>)>>),
    /// Distinct users, in request order.
    AlterUserScramCredentials(Vec<&'f str>),
}

/// The items of the keys that need them; `None` for every other key.
pub(super) fn parse<'f>(request: &Request<'f>) -> Result<Option<Itemized<'f>>, HeaderError> {
    let (frame, flexible) = (&request.frame[..], request.flexible());
    let version = request.header.api_version;
    let mut r = reader(request)?;
    let r = &mut r;
    let items = match ApiKey::try_from(request.header.api_key) {
        Ok(ApiKey::CreateAcls) => Itemized::CreateAcls(acls(r, flexible, false)?),
        Ok(ApiKey::DeleteAcls) => Itemized::DeleteAcls(acls(r, flexible, true)?),
        Ok(ApiKey::AlterReplicaLogDirs) => {
            Itemized::AlterReplicaLogDirs(log_dirs(r, frame, flexible)?)
        }
        Ok(ApiKey::ElectLeaders) => {
            if version >= 1 {
                r.i8("election type")?;
            }
            let topics = match r.nullable_count(flexible, min_bytes(flexible, 6, 3), "topics")? {
                Some(count) => Some(
                    (0..count)
                        .map(|_| {
                            let topic = name(r, frame, flexible, "topic")?;
                            let partitions = i32s(r, flexible, "partitions")?;
                            r.tagged(flexible, "topic tagged fields")?;
                            Ok((topic, partitions))
                        })
                        .collect::<Result<Vec<_>, HeaderError>>()?,
                ),
                None => None,
            };
            r.i32("timeout")?;
            Itemized::ElectLeaders(topics)
        }
        Ok(ApiKey::AlterClientQuotas) => {
            let count = r.count(flexible, min_bytes(flexible, 8, 3), "entries")?;
            let entries = (0..count)
                .map(|_| quota_entry(r, frame, flexible))
                .collect::<Result<Vec<_>, HeaderError>>()?;
            r.i8("validate only")?;
            Itemized::AlterClientQuotas(entries)
        }
        Ok(ApiKey::AlterUserScramCredentials) => {
            Itemized::AlterUserScramCredentials(scram_users(r, frame, flexible)?)
        }
        _ => return Ok(None),
    };
    r.tagged(flexible, "tagged fields")?;
    Ok(Some(items))
}

/// The number of ACL creations (or deletion filters, whose strings are nullable).
fn acls(r: &mut Reader<'_>, flexible: bool, filters: bool) -> Result<usize, HeaderError> {
    let what = if filters { "filters" } else { "creations" };
    let count = r.count(flexible, min_bytes(flexible, 10, 8), what)?;
    for _ in 0..count {
        r.i8("resource type")?;
        acl_string(r, flexible, filters, "resource name")?;
        r.i8("pattern type")?;
        acl_string(r, flexible, filters, "principal")?;
        acl_string(r, flexible, filters, "host")?;
        r.i8("operation")?;
        r.i8("permission type")?;
        r.tagged(flexible, "acl tagged fields")?;
    }
    Ok(count)
}

fn acl_string(
    r: &mut Reader<'_>,
    flexible: bool,
    nullable: bool,
    what: &'static str,
) -> Result<(), HeaderError> {
    if nullable {
        r.nullable_str(flexible, what)?;
    } else {
        r.string(flexible, what)?;
    }
    Ok(())
}

/// The partitions moved, by topic in first-seen order, each once (Kafka keys them by
/// partition whatever log dir they move to).
fn log_dirs<'f>(
    r: &mut Reader<'f>,
    frame: &'f [u8],
    flexible: bool,
) -> Result<TopicPartitions<'f>, HeaderError> {
    let mut topics: TopicPartitions<'f> = Vec::new();
    // Sets, not scans of the lists: a request may name very many partitions.
    let mut index: HashMap<&'f str, usize> = HashMap::new();
    let mut seen: HashSet<(usize, i32)> = HashSet::new();
    let dirs = r.count(flexible, min_bytes(flexible, 6, 3), "dirs")?;
    for _ in 0..dirs {
        r.string(flexible, "path")?;
        let count = r.count(flexible, min_bytes(flexible, 6, 3), "topics")?;
        for _ in 0..count {
            let topic = name(r, frame, flexible, "topic")?;
            let partitions = i32s(r, flexible, "partitions")?;
            r.tagged(flexible, "topic tagged fields")?;
            let at = *index.entry(topic).or_insert_with(|| {
                topics.push((topic, Vec::new()));
                topics.len() - 1
            });
            if let Some((_, known)) = topics.get_mut(at) {
                known.extend(partitions.into_iter().filter(|&p| seen.insert((at, p))));
            }
        }
        r.tagged(flexible, "dir tagged fields")?;
    }
    Ok(topics)
}

fn quota_entry<'f>(
    r: &mut Reader<'f>,
    frame: &'f [u8],
    flexible: bool,
) -> Result<Vec<(&'f str, Option<&'f str>)>, HeaderError> {
    let count = r.count(flexible, min_bytes(flexible, 4, 3), "entity")?;
    let entity = (0..count)
        .map(|_| {
            let entity_type = name(r, frame, flexible, "entity type")?;
            let entity_name = nullable_name(r, frame, flexible, "entity name")?;
            r.tagged(flexible, "entity tagged fields")?;
            Ok((entity_type, entity_name))
        })
        .collect::<Result<Vec<_>, HeaderError>>()?;
    let ops = r.count(flexible, min_bytes(flexible, 11, 11), "ops")?;
    for _ in 0..ops {
        r.string(flexible, "op key")?;
        r.i64("op value")?;
        r.i8("op remove")?;
        r.tagged(flexible, "op tagged fields")?;
    }
    r.tagged(flexible, "entry tagged fields")?;
    Ok(entity)
}

fn scram_users<'f>(
    r: &mut Reader<'f>,
    frame: &'f [u8],
    flexible: bool,
) -> Result<Vec<&'f str>, HeaderError> {
    let mut users: Vec<&'f str> = Vec::new();
    let mut seen: HashSet<&'f str> = HashSet::new();
    let mut add = |user: &'f str| {
        if seen.insert(user) {
            users.push(user);
        }
    };
    let deletions = r.count(flexible, min_bytes(flexible, 3, 3), "deletions")?;
    for _ in 0..deletions {
        add(name(r, frame, flexible, "user")?);
        r.i8("mechanism")?;
        r.tagged(flexible, "deletion tagged fields")?;
    }
    let upsertions = r.count(flexible, min_bytes(flexible, 15, 10), "upsertions")?;
    for _ in 0..upsertions {
        add(name(r, frame, flexible, "user")?);
        r.i8("mechanism")?;
        r.i32("iterations")?;
        r.nullable_bytes(flexible, "salt")?;
        r.nullable_bytes(flexible, "salted password")?;
        r.tagged(flexible, "upsertion tagged fields")?;
    }
    Ok(users)
}

/// A result carrying the refusal: the item result types differ only by name.
macro_rules! failed {
    ($result:ty, $refusal:expr) => {
        <$result>::default()
            .with_error_code($refusal.code)
            .with_error_message($refusal.message())
    };
}

/// Results for topics and their partitions: `topic` builds a topic's from its partitions'.
fn per_partition<T, P>(
    topics: Vec<(&str, Vec<i32>)>,
    topic: impl Fn(TopicName, Vec<P>) -> T,
    partition: impl Fn(i32) -> P,
) -> Vec<T> {
    topics
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions.into_iter().map(&partition).collect();
            topic(TopicName(owned(name)), partitions)
        })
        .collect()
}

impl Itemized<'_> {
    /// The local answer to the refused request: every item carries the error.
    pub(super) fn refuse(
        self,
        request: &Request<'_>,
        refusal: Refusal,
    ) -> Result<Outcome, AuthzError> {
        let code = refusal.code;
        match self {
            Itemized::CreateAcls(count) => {
                let result = failed!(AclCreationResult, refusal);
                respond(
                    request,
                    &CreateAclsResponse::default().with_results(vec![result; count]),
                )
            }
            Itemized::DeleteAcls(count) => {
                let result = failed!(DeleteAclsFilterResult, refusal);
                respond(
                    request,
                    &DeleteAclsResponse::default().with_filter_results(vec![result; count]),
                )
            }
            Itemized::AlterReplicaLogDirs(topics) => {
                let results = per_partition(
                    topics,
                    |topic, partitions| {
                        AlterReplicaLogDirTopicResult::default()
                            .with_topic_name(topic)
                            .with_partitions(partitions)
                    },
                    |p| {
                        AlterReplicaLogDirPartitionResult::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                    },
                );
                respond(
                    request,
                    &AlterReplicaLogDirsResponse::default().with_results(results),
                )
            }
            Itemized::ElectLeaders(topics) => {
                let version = request.header.api_version;
                // v0 answers have no top-level error: refusing an election of every
                // partition could only look like a success there.
                if version == 0 && topics.is_none() {
                    return Err(AuthzError::Refused {
                        api: request.api_name(),
                        reason: "electing the leaders of every partition refused; a v0 answer \
                                 has no error field to say so"
                            .into(),
                    });
                }
                let results = per_partition(
                    topics.unwrap_or_default(),
                    |topic, partitions| {
                        ReplicaElectionResult::default()
                            .with_topic(topic)
                            .with_partition_result(partitions)
                    },
                    |p| failed!(PartitionResult, refusal).with_partition_id(p),
                );
                let mut body =
                    ElectLeadersResponse::default().with_replica_election_results(results);
                if version >= 1 {
                    body.error_code = code;
                }
                respond(request, &body)
            }
            Itemized::AlterClientQuotas(entries) => {
                let entries = entries
                    .into_iter()
                    .map(|entity| {
                        failed!(EntryData, refusal).with_entity(
                            entity
                                .into_iter()
                                .map(|(entity_type, entity_name)| {
                                    EntityData::default()
                                        .with_entity_type(owned(entity_type))
                                        .with_entity_name(entity_name.map(owned))
                                })
                                .collect(),
                        )
                    })
                    .collect();
                respond(
                    request,
                    &AlterClientQuotasResponse::default().with_entries(entries),
                )
            }
            Itemized::AlterUserScramCredentials(users) => {
                let results = users
                    .into_iter()
                    .map(|user| {
                        failed!(AlterUserScramCredentialsResult, refusal).with_user(owned(user))
                    })
                    .collect();
                respond(
                    request,
                    &AlterUserScramCredentialsResponse::default().with_results(results),
                )
            }
        }
    }
}
