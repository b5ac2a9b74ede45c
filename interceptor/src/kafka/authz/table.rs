//! Which operations on which resources each api key performs: the contract between the
//! protocol parsers and the policy, printed by `interceptor policy api-keys` and checked by a
//! test to cover every key the `kafka-protocol` crate knows.

use crate::policy::{Operation, ResourceKind};

/// What one api key does.
#[derive(Debug, Clone, Copy)]
pub struct ApiAccess {
    pub key: i16,
    /// The api's name as Kafka's protocol guide spells it.
    pub name: &'static str,
    /// Every (operation, resource kind) a request of this key can be checked for. Empty for
    /// the keys the interceptor answers itself or passes without checks (see `note`).
    pub touches: &'static [(Operation, ResourceKind)],
    /// The highest version the interceptor parses; ApiVersions answers never advertise more.
    pub max_version: i16,
    /// Anything an operator should know about this key's mapping.
    pub note: &'static str,
}

impl ApiAccess {
    pub const fn new(
        key: i16,
        name: &'static str,
        touches: &'static [(Operation, ResourceKind)],
        max_version: i16,
        note: &'static str,
    ) -> Self {
        Self {
            key,
            name,
            touches,
            max_version,
            note,
        }
    }
}

/// Keys that carry no resource: the session answers ApiVersions and SASL itself (before and
/// after authentication); client telemetry (KIP-714) is on by default in librdkafka and the
/// Java client and carries only the client's own metrics, so refusing it would break ordinary
/// clients for nothing. It passes once the client is authenticated.
pub const UNCHECKED: &[ApiAccess] = &[
    ApiAccess {
        key: 17,
        name: "SaslHandshake",
        touches: &[],
        max_version: i16::MAX,
        note: "answered by the interceptor",
    },
    ApiAccess {
        key: 18,
        name: "ApiVersions",
        touches: &[],
        max_version: i16::MAX,
        note: "forwarded; the answer is trimmed to what the interceptor parses",
    },
    ApiAccess {
        key: 36,
        name: "SaslAuthenticate",
        touches: &[],
        max_version: i16::MAX,
        note: "answered by the interceptor",
    },
    ApiAccess {
        key: 71,
        name: "GetTelemetrySubscriptions",
        touches: &[],
        max_version: i16::MAX,
        note: "client metrics (KIP-714): passed after authentication",
    },
    ApiAccess {
        key: 72,
        name: "PushTelemetry",
        touches: &[],
        max_version: i16::MAX,
        note: "client metrics (KIP-714): passed after authentication",
    },
];

/// Every key's entry, in no particular order.
pub fn all() -> impl Iterator<Item = &'static ApiAccess> {
    UNCHECKED
        .iter()
        .chain(super::data::TABLE)
        .chain(super::control::TABLE)
        .chain(super::admin::TABLE)
}

/// The entry for `key`; `None` for keys outside the table (vendor keys, keys newer than this
/// build).
pub fn api_access(key: i16) -> Option<&'static ApiAccess> {
    all().find(|a| a.key == key)
}

/// The api's name, for errors and audit.
pub fn api_name(key: i16) -> &'static str {
    api_access(key).map_or("unknown api", |a| a.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_key_the_crate_knows_has_exactly_one_entry() {
        for key in ApiKey::iter() {
            let n = all().filter(|a| a.key == key as i16).count();
            assert_eq!(n, 1, "{key:?} ({}) has {n} entries", key as i16);
        }
        for entry in all() {
            assert!(
                ApiKey::try_from(entry.key).is_ok(),
                "{} ({}) is not a key the crate knows",
                entry.name,
                entry.key
            );
        }
    }

    #[test]
    fn every_operation_is_on_a_kind_it_applies_to() {
        for entry in all() {
            for (op, kind) in entry.touches {
                assert!(
                    op.applies_to().contains(kind),
                    "{}: {op} on {kind}",
                    entry.name
                );
            }
        }
    }
}
