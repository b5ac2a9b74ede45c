//! The OCSF-shaped common attributes of every audit line: class and activity, actor,
//! endpoints, resources, disposition, policy. Derived from the event when it is written, so
//! the events themselves stay plain Rust data. Mapping table: `docs/audit.md`.
//!
//! Classes used (OCSF 1.3): 4001 Network Activity, 3002 Authentication, 3004 Entity
//! Management (policy set changes), 6002 Application Lifecycle, 6003 API Activity.

use std::{borrow::Cow, net::SocketAddr, sync::OnceLock};

use serde::Serialize;

use super::event::{AuditEvent, AuthOutcome};

/// The OCSF schema version the lines are shaped after.
pub const OCSF_VERSION: &str = "1.3.0";

#[derive(Serialize)]
pub struct Envelope<'a> {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
    type_uid: u32,
    severity_id: u8,
    severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<Actor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<Resource<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<Policy<'a>>,
    metadata: Metadata,
}

#[derive(Serialize)]
struct Actor<'a> {
    user: User<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<Session>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_name: Option<&'a str>,
}

#[derive(Serialize)]
struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
}

#[derive(Serialize)]
struct Session {
    /// `<daemon instance>-<session number>`: unique across restarts.
    uid: String,
}

#[derive(Serialize)]
struct Endpoint {
    ip: std::net::IpAddr,
    port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self {
            ip: addr.ip(),
            port: addr.port(),
        }
    }
}

#[derive(Serialize)]
struct Resource<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    name: Cow<'a, str>,
}

#[derive(Serialize)]
struct Policy<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    /// Where the rule is written (`file:line`).
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    version: &'a str,
}

#[derive(Serialize)]
struct Metadata {
    version: &'static str,
    product: Product,
    log_name: &'static str,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    version: &'static str,
    /// This daemon process (changes with every start).
    uid: &'static str,
}

/// A random id for this daemon process, so session numbers (which restart at 1) stay unique
/// in the trail and recordings can be matched to their events.
pub fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

fn session(session: u64) -> Option<Session> {
    Some(Session {
        uid: format!("{}-{session}", instance_id()),
    })
}

/// OCSF class, category and activity.
struct Kind {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
}

const fn kind(class_uid: u32, activity_id: u32, activity_name: &'static str) -> Kind {
    let (class_name, category_uid, category_name) = match class_uid {
        4001 => ("Network Activity", 4, "Network Activity"),
        3002 => ("Authentication", 3, "Identity & Access Management"),
        3004 => ("Entity Management", 3, "Identity & Access Management"),
        6002 => ("Application Lifecycle", 6, "Application Activity"),
        _ => ("API Activity", 6, "Application Activity"),
    };
    Kind {
        class_uid,
        class_name,
        category_uid,
        category_name,
        activity_id,
        activity_name,
    }
}

const ALLOWED: (&str, u32) = ("Allowed", 1);
const BLOCKED: (&str, u32) = ("Blocked", 2);
const DROPPED: (&str, u32) = ("Dropped", 6);
const CORRECTED: (&str, u32) = ("Corrected", 11);
const OTHER: (&str, u32) = ("Other", 99);

/// The API Activity activity of a policy operation.
fn api_activity(operation: &str) -> Kind {
    match operation {
        "produce" | "create" | "idempotent-write" => kind(6003, 1, "Create"),
        "consume" | "describe" | "describe-configs" => kind(6003, 2, "Read"),
        "alter" | "alter-configs" | "commit" | "transactions" => kind(6003, 3, "Update"),
        "delete" | "delete-records" => kind(6003, 4, "Delete"),
        _ => kind(6003, 99, "Other"),
    }
}

struct Parts<'a> {
    kind: Kind,
    severity_id: u8,
    status: Option<&'static str>,
    disposition: Option<(&'static str, u32)>,
    actor: Option<Actor<'a>>,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    resources: Vec<Resource<'a>>,
    policy: Option<Policy<'a>>,
}

impl<'a> Parts<'a> {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            severity_id: 1,
            status: None,
            disposition: None,
            actor: None,
            src: None,
            dst: None,
            resources: Vec::new(),
            policy: None,
        }
    }
}

fn actor<'a>(
    name: Option<&'a str>,
    groups: &'a [String],
    session_no: Option<u64>,
    app: Option<&'a str>,
) -> Option<Actor<'a>> {
    Some(Actor {
        user: User { name, groups },
        session: session_no.and_then(session),
        app_name: app,
    })
}

fn topic(name: &str) -> Resource<'_> {
    Resource {
        kind: "topic",
        name: Cow::Borrowed(name),
    }
}

/// MQTT events name their stage `publish` or `delivery` (Kafka's: `produce`, `fetch`).
fn topic_of_stage<'a>(name: &'a str, stage: &str) -> Resource<'a> {
    match stage {
        "publish" | "delivery" => Resource {
            kind: "mqtt-topic",
            name: Cow::Borrowed(name),
        },
        _ => topic(name),
    }
}

impl<'a> Envelope<'a> {
    pub fn of(event: &'a AuditEvent, policy_version: &'a str) -> Self {
        let parts = parts(event, policy_version);
        let severity = match parts.severity_id {
            1 => "Informational",
            2 => "Low",
            3 => "Medium",
            4 => "High",
            5 => "Critical",
            _ => "Unknown",
        };
        let k = parts.kind;
        Envelope {
            class_uid: k.class_uid,
            class_name: k.class_name,
            category_uid: k.category_uid,
            category_name: k.category_name,
            activity_id: k.activity_id,
            activity_name: k.activity_name,
            type_uid: k.class_uid * 100 + k.activity_id,
            severity_id: parts.severity_id,
            severity,
            status: parts.status,
            disposition: parts.disposition.map(|d| d.0),
            disposition_id: parts.disposition.map(|d| d.1),
            actor: parts.actor,
            src_endpoint: parts.src.map(Endpoint::from),
            dst_endpoint: parts.dst.map(Endpoint::from),
            resources: parts.resources,
            policy: parts.policy,
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product {
                    name: "interceptor",
                    version: env!("CARGO_PKG_VERSION"),
                    uid: instance_id(),
                },
                log_name: "audit",
            },
        }
    }
}

/// The severity the line carries, without building the rest.
pub(super) fn severity_id(event: &AuditEvent, version: &str) -> u8 {
    parts(event, version).severity_id
}

fn parts<'a>(event: &'a AuditEvent, version: &'a str) -> Parts<'a> {
    use AuditEvent as E;
    match event {
        E::DaemonStart { .. } => Parts::new(kind(6002, 3, "Start")),
        E::DaemonStop { .. } => Parts::new(kind(6002, 4, "Stop")),
        E::AuditLoss { .. } => Parts {
            severity_id: 5,
            status: Some("Failure"),
            ..Parts::new(kind(6002, 99, "Other"))
        },
        E::ConnectionOpen {
            session: s,
            client,
            original_dst,
            ..
        } => Parts {
            disposition: Some(ALLOWED),
            actor: actor(None, &[], Some(*s), None),
            src: Some(*client),
            dst: Some(*original_dst),
            ..Parts::new(kind(4001, 1, "Open"))
        },
        E::ConnectionClose {
            session: s,
            client,
            original_dst,
            principal,
            ..
        } => Parts {
            actor: actor(principal.as_deref(), &[], Some(*s), None),
            src: Some(*client),
            dst: Some(*original_dst),
            ..Parts::new(kind(4001, 2, "Close"))
        },
        E::ConnectionRefused {
            session: s,
            client,
            original_dst,
            ..
        } => Parts {
            severity_id: 3,
            disposition: Some(BLOCKED),
            actor: actor(None, &[], Some(*s), None),
            src: Some(*client),
            dst: Some(*original_dst),
            ..Parts::new(kind(4001, 5, "Refuse"))
        },
        E::Kernel {
            kind: what,
            client,
            original_dst,
        } => {
            let (k, severity_id, disposition) = match *what {
                "steered" => (kind(4001, 6, "Traffic"), 1, ALLOWED),
                "passed_fail_open" => (kind(4001, 6, "Traffic"), 4, ALLOWED),
                _ => (kind(4001, 5, "Refuse"), 4, DROPPED),
            };
            Parts {
                severity_id,
                disposition: Some(disposition),
                src: Some(*client),
                dst: Some(*original_dst),
                ..Parts::new(k)
            }
        }
        E::Authentication {
            session: s,
            client,
            outcome,
            principal,
            groups,
            client_id,
            ..
        } => {
            let ok = *outcome == AuthOutcome::Success;
            Parts {
                severity_id: if ok { 1 } else { 3 },
                status: Some(if ok { "Success" } else { "Failure" }),
                disposition: Some(if ok { ALLOWED } else { BLOCKED }),
                actor: actor(principal.as_deref(), groups, Some(*s), client_id.as_deref()),
                src: Some(*client),
                ..Parts::new(kind(3002, 1, "Logon"))
            }
        }
        E::UpstreamAuthentication {
            session: s,
            upstream,
            ..
        } => Parts {
            severity_id: 4,
            status: Some("Failure"),
            actor: actor(Some("interceptor"), &[], Some(*s), None),
            dst: Some(*upstream),
            ..Parts::new(kind(3002, 1, "Logon"))
        },
        E::RequestRefused {
            session: s,
            client,
            principal,
            ..
        } => Parts {
            severity_id: 3,
            status: Some("Failure"),
            disposition: Some(BLOCKED),
            actor: actor(principal.as_deref(), &[], Some(*s), None),
            src: Some(*client),
            ..Parts::new(kind(6003, 99, "Other"))
        },
        E::Decision {
            session: s,
            client,
            principal,
            groups,
            client_id,
            operation,
            resource_type,
            resource,
            decision,
            rule,
            rule_source,
            ..
        } => {
            // A narrowed MQTT subscription is granted, its deliveries filtered.
            let narrowed = *decision == "narrowed";
            let allowed = *decision == "allow" || narrowed;
            Parts {
                severity_id: if narrowed {
                    2
                } else if allowed {
                    1
                } else {
                    3
                },
                status: Some(if allowed { "Success" } else { "Failure" }),
                disposition: Some(if allowed { ALLOWED } else { BLOCKED }),
                actor: actor(Some(principal), groups, Some(*s), client_id.as_deref()),
                src: Some(*client),
                resources: vec![Resource {
                    kind: resource_type,
                    name: Cow::Borrowed(resource),
                }],
                policy: Some(Policy {
                    name: rule.as_deref(),
                    uid: rule_source.as_deref(),
                    version,
                }),
                ..Parts::new(api_activity(operation))
            }
        }
        E::Transform {
            session: s,
            client,
            principal,
            topic: t,
            outcome,
            stage,
            ..
        } => {
            let (disposition, severity_id) = match *outcome {
                "masked" => (CORRECTED, 1),
                "revealed" => (ALLOWED, 1),
                "withheld" => (DROPPED, 3),
                "refused" => (BLOCKED, 3),
                _ => (OTHER, 1),
            };
            Parts {
                severity_id,
                disposition: Some(disposition),
                actor: actor(Some(principal), &[], Some(*s), None),
                src: Some(*client),
                resources: vec![topic_of_stage(t, stage)],
                ..Parts::new(kind(6003, 3, "Update"))
            }
        }
        E::Records {
            session: s,
            client,
            principal,
            client_id,
            stage,
            partitions,
            ..
        } => {
            let mut resources: Vec<Resource> = Vec::new();
            for p in partitions {
                if !resources.iter().any(|r| r.name == p.topic.as_str()) {
                    resources.push(topic_of_stage(&p.topic, stage));
                }
            }
            let k = if matches!(*stage, "produce" | "publish") {
                kind(6003, 1, "Create")
            } else {
                kind(6003, 2, "Read")
            };
            let any_ok = partitions.iter().any(|p| p.error_code == 0);
            Parts {
                status: Some(if any_ok || partitions.is_empty() {
                    "Success"
                } else {
                    "Failure"
                }),
                disposition: Some(ALLOWED),
                actor: actor(Some(principal), &[], Some(*s), client_id.as_deref()),
                src: Some(*client),
                resources,
                ..Parts::new(k)
            }
        }
        E::PolicyReload { outcome, .. } => {
            let loaded = *outcome != "rejected";
            Parts {
                severity_id: if loaded { 1 } else { 4 },
                status: Some(if loaded { "Success" } else { "Failure" }),
                disposition: Some(if loaded { ALLOWED } else { BLOCKED }),
                ..Parts::new(kind(3004, 3, "Update"))
            }
        }
        E::Detokenize {
            principal,
            groups,
            token_sha256,
            outcome,
            ..
        } => {
            let revealed = *outcome == "revealed";
            Parts {
                severity_id: if revealed { 2 } else { 3 },
                status: Some(if revealed { "Success" } else { "Failure" }),
                disposition: Some(if revealed { ALLOWED } else { BLOCKED }),
                actor: actor(Some(principal), groups, None, None),
                resources: vec![Resource {
                    kind: "token",
                    name: Cow::Borrowed(token_sha256),
                }],
                ..Parts::new(kind(6003, 2, "Read"))
            }
        }
    }
}
