//! The daemon's TOML configuration (`/etc/interceptor/interceptor.toml` by default).
//!
//! Unknown keys and bad values are errors that name the key and its line; nothing is guessed.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;

pub const DEFAULT_PATH: &str = "/etc/interceptor/interceptor.toml";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/interceptor";
pub const DEFAULT_AUDIT_DIR: &str = "/var/lib/interceptor/audit";
pub const DEFAULT_SECRETS_FILE: &str = "/etc/interceptor/secrets.toml";
pub const DEFAULT_POLICY_DIR: &str = "/etc/interceptor/policies";
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/interceptor/admin.sock";
pub const DEFAULT_VAULT_FILE: &str = "/var/lib/interceptor/vault.redb";
pub const DEFAULT_VAULT_KEYS: &str = "/etc/interceptor/vault.keys";
/// SASL mechanisms a listener can offer clients.
pub const SASL_MECHANISMS: [&str; 4] = ["OAUTHBEARER", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// While the daemon is down, pass protected flows to the broker unchecked instead of
    /// dropping them. Off by default: a stopped interceptor must not open the door.
    #[serde(default)]
    pub fail_open: bool,
    /// Where programs, maps and links are pinned (on a bpf filesystem).
    #[serde(default = "default_pin_dir")]
    pub bpf_pin_dir: PathBuf,
    /// The compiled kernel object; by default found next to the binary or under
    /// /usr/lib/interceptor/.
    #[serde(default)]
    pub bpf_object: Option<PathBuf>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Threads serving connections; 0 means one per CPU. The broker shares the node's cores,
    /// so operators may want to cap the interceptor's share.
    #[serde(default)]
    pub worker_threads: usize,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Who clients are: OIDC issuers whose access tokens are accepted, and the optional
    /// PLAIN/SCRAM users mapped to principals.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// How the interceptor itself authenticates to the broker.
    #[serde(default)]
    pub upstream_auth: UpstreamAuthConfig,
    /// Where the policy comes from and what the protocol layer does with it.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The local admin socket (`interceptor status`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// How masking rules rewrite record batches.
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Where tokenized values are kept, and the keys of tokens, hashes and encryption.
    #[serde(default)]
    pub vault: VaultSettings,
    /// Session recordings (`interceptor replay`).
    #[serde(default)]
    pub recording: RecordingConfig,
    /// MQTT listeners: limits, the username rule, the interceptor's own broker login.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Protected broker listeners. At least one.
    #[serde(rename = "listener")]
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The directory of YAML policy files. It must exist and load without errors for the
    /// daemon to start; later changes are picked up within a second, and a set that fails to
    /// load leaves the last good one in force.
    pub dir: PathBuf,
    /// Forward requests whose api key the interceptor does not know (vendor keys ≥ 10000,
    /// keys newer than this build) without checks. Off: such a request closes its connection.
    pub allow_unknown_api_keys: bool,
    /// Topic ids (KIP-516) remembered from Metadata responses, to name the topics of Produce
    /// and Fetch requests that carry only ids. An id not remembered is refused
    /// (UNKNOWN_TOPIC_ID), never passed unchecked.
    pub max_topic_ids: usize,
    /// Blocking rules on record content decompress each batch into a buffer of at most this
    /// many bytes; a batch that decompresses to more is refused (POLICY_VIOLATION).
    pub max_decompressed_batch_bytes: usize,
    /// Records per batch read for content rules; a batch claiming more is refused.
    pub max_records_per_batch: usize,
    /// Seconds between full re-reads of the directory, in case a change notification was
    /// missed (network filesystems, some editors). 0 turns it off.
    pub rescan_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_POLICY_DIR),
            allow_unknown_api_keys: false,
            max_topic_ids: 100_000,
            max_decompressed_batch_bytes: 64 * 1024 * 1024,
            max_records_per_batch: 1_000_000,
            rescan_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket for `interceptor status` (mode 0600: root only). Empty turns it off.
    pub socket: PathBuf,
    /// A TCP address serving only `/metrics`, `/healthz` and `/readyz` (for Prometheus);
    /// unset: none.
    pub http_address: Option<std::net::SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            http_address: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// Legacy message sets (magic 0 and 1) on a topic with masking rules cannot be rewritten:
    /// `refuse` them (POLICY_VIOLATION on produce; an empty partition on fetch) or `pass` them
    /// unmasked. Brokers have not written them by default since Kafka 0.11.
    pub legacy_records: LegacyRecords,
    /// The most bytes one partition's records may grow to when rewritten (tokens and revealed
    /// values can be longer than what they replace); past it the partition is refused.
    pub max_rewritten_bytes: usize,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            legacy_records: LegacyRecords::Refuse,
            max_rewritten_bytes: 128 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LegacyRecords {
    #[default]
    Refuse,
    Pass,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VaultSettings {
    /// `embedded`: a local database file at `path`, no server. `postgres`: a PostgreSQL
    /// database shared by every broker node's interceptor, so all of them resolve the same
    /// tokens.
    pub backend: VaultBackend,
    pub path: PathBuf,
    /// libpq-style connection string (`host=db1 port=5432 user=interceptor dbname=vault`).
    pub postgres_url: String,
    /// A file holding the database password (kept out of this file and of process lists).
    pub postgres_password_file: Option<PathBuf>,
    /// The keyring (`interceptor vault init FILE` makes one): the MAC key tokens and hashes
    /// derive from, and the encryption keys by id. Must be readable by the daemon's user only.
    /// Without it, masking rules that hash or tokenize refuse the records they cover.
    pub key_file: PathBuf,
    /// Tokens kept in memory, so repeated values skip the database.
    pub cache_entries: usize,
    /// How long one vault operation may take before the request that needs it fails
    /// (retriably for producers).
    pub timeout_ms: u64,
}

impl Default for VaultSettings {
    fn default() -> Self {
        Self {
            backend: VaultBackend::Embedded,
            path: PathBuf::from(DEFAULT_VAULT_FILE),
            postgres_url: String::new(),
            postgres_password_file: None,
            key_file: PathBuf::from(DEFAULT_VAULT_KEYS),
            cache_entries: 100_000,
            timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VaultBackend {
    #[default]
    Embedded,
    Postgres,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A frame longer than this closes its connection (Kafka's own default cap is 100 MiB).
    pub max_frame_bytes: usize,
    /// Client connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Requests awaiting their response per connection; a client that pipelines more is
    /// slowed down (not read) until responses come back.
    pub max_in_flight: usize,
    /// Initial read buffer per direction; grows up to the frame being read.
    pub read_buffer_bytes: usize,
    /// Time allowed to connect to the upstream broker.
    pub upstream_connect_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 100 * 1024 * 1024,
            max_connections: 4096,
            max_in_flight: 512,
            read_buffer_bytes: 64 * 1024,
            upstream_connect_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory of the hash-chained JSON-lines files (`audit-<first seq>.jsonl`).
    pub dir: PathBuf,
    /// Events waiting to be written; a full queue makes sessions wait, it never drops events.
    pub queue: usize,
    /// When the trail cannot be written (disk full, I/O error): `refuse` traffic (default)
    /// or `continue` and count the lost events.
    pub on_failure: crate::audit::OnFailure,
    /// A new file is started when the current one reaches this size...
    pub rotate_bytes: u64,
    /// ...or this age.
    pub rotate_secs: u64,
    /// fsync every group of events before the traffic they describe goes on. Only a
    /// benchmark comparing against it turns this off.
    pub fsync: bool,
    /// Key file (mode 0600) for a keyed chain (HMAC-SHA-256): without the key nobody can
    /// re-chain edited files. Unset: plain SHA-256.
    pub chain_key_file: Option<PathBuf>,
    /// A `records` event for every produce acknowledgement and fetch answer: partitions,
    /// offsets and a SHA-256 of the records. Off: decisions only.
    pub records: bool,
    /// `[audit.export]`: copies of the sealed trail to syslog and Kafka (none by default).
    #[serde(default)]
    pub export: crate::audit::export::ExportConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_AUDIT_DIR),
            queue: 65536,
            on_failure: crate::audit::OnFailure::Refuse,
            rotate_bytes: 64 * 1024 * 1024,
            rotate_secs: 24 * 3600,
            fsync: true,
            chain_key_file: None,
            records: true,
            export: Default::default(),
        }
    }
}

/// Session recording: each session's frames both ways, after masking (docs/recording.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    pub enabled: bool,
    /// Files `<instance>-<session>.irec` (mode 0640; the directory is created 0750).
    pub dir: PathBuf,
    /// Past this many payload bytes a session's frames are recorded by their headers only.
    pub max_session_bytes: u64,
    /// Messages (one per batch of frames) waiting for the writer, and the bytes they may hold
    /// on to. When either is full, frames are dropped and counted: the relay never waits.
    pub queue: usize,
    pub queue_bytes: usize,
    /// `"none"`, `"zstd"` or a zstd level (1-19).
    pub compression: crate::recording::Compression,
    /// 32-byte key (mode 0600): also keep the original frames, before masking, sealed with
    /// it. Unset: nothing unmasked is ever written.
    pub raw_key_file: Option<PathBuf>,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/var/lib/interceptor/recordings"),
            max_session_bytes: 1024 * 1024 * 1024,
            queue: 65536,
            queue_bytes: 256 * 1024 * 1024,
            compression: crate::recording::Compression::default(),
            raw_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Allowed difference between our clock and the issuer's for `exp` and `nbf`.
    pub clock_skew_secs: u64,
    /// A longer token is refused before it is parsed.
    pub max_token_bytes: usize,
    /// How often each issuer's key set is fetched again (key rotation).
    pub jwks_refresh_secs: u64,
    /// A token signed with an unknown key id triggers one fetch of the key set, at most this
    /// often per issuer (so unknown `kid`s cannot make us hammer the issuer).
    pub jwks_min_refetch_secs: u64,
    /// While an issuer cannot be reached, its last fetched keys stay in use this long after
    /// they were fetched; then tokens from it are refused until it answers again.
    pub jwks_max_stale_secs: u64,
    /// Time allowed for each request to an issuer (discovery, key set).
    pub http_timeout_ms: u64,
    /// A session must re-authenticate at least this often, even if its token lives longer.
    pub max_session_lifetime_secs: u64,
    #[serde(rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    /// PLAIN and SCRAM users (only on listeners that enable those mechanisms).
    #[serde(rename = "user")]
    pub users: Vec<SaslUserConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            clock_skew_secs: 30,
            max_token_bytes: 8192,
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 30,
            jwks_max_stale_secs: 86_400,
            http_timeout_ms: 5_000,
            max_session_lifetime_secs: 3_600,
            issuers: Vec::new(),
            users: Vec::new(),
        }
    }
}

/// One OIDC issuer whose access tokens are accepted.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exactly the token's `iss` claim (and the discovery document's `issuer`).
    pub issuer: String,
    /// The token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Where the key set is; by default found by discovery at
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Signature algorithms accepted from this issuer; by default every asymmetric one
    /// (RS256/384/512, PS256/384/512, ES256/384, EdDSA). HMAC algorithms are never accepted.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// The claim that names the principal (a dotted path into nested objects).
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// Claims whose values are the principal's groups: dotted paths (`realm_access.roles`);
    /// an array of strings or a space-separated string (`scope`).
    #[serde(default = "default_groups_claims")]
    pub groups_claims: Vec<String>,
}

fn default_principal_claim() -> String {
    "sub".into()
}

fn default_groups_claims() -> Vec<String> {
    vec!["groups".into()]
}

/// A PLAIN/SCRAM user and the principal it maps to. The credential is SCRAM's salted form
/// (`interceptor sasl-credential` makes one), never a password.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaslUserConfig {
    pub username: String,
    /// The principal policy sees; by default the username.
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// `SCRAM-SHA-256:iterations:salt:stored_key:server_key` (base64 parts); one per hash.
    pub credentials: Vec<String>,
}

/// The mechanism the interceptor uses towards the broker.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamMechanism {
    #[default]
    None,
    Plain,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamAuthConfig {
    pub mechanism: UpstreamMechanism,
    /// TOML with `username` and `password`; must be owned by root and mode 0600.
    pub secrets_file: PathBuf,
}

impl Default for UpstreamAuthConfig {
    fn default() -> Self {
        Self {
            mechanism: UpstreamMechanism::None,
            secrets_file: PathBuf::from(DEFAULT_SECRETS_FILE),
        }
    }
}

/// What the CONNECT username must be, next to a token in the password.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UsernameRule {
    /// Anything (or nothing): the token alone says who the client is.
    #[default]
    Any,
    /// The principal the token maps to (the issuer's `principal_claim`).
    Principal,
    /// The token's `sub`.
    Subject,
    /// The token's `client_id` (else `azp`).
    ClientId,
}

/// What a v3.1.1 client gets for a QoS 1 or 2 PUBLISH the policy refuses: 3.1.1 has no
/// negative acknowledgement.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum V3DeniedPublish {
    /// Close the connection (the spec's other choice; the client sees the refusal).
    #[default]
    Disconnect,
    /// Acknowledge and drop, as mosquitto does (the client never learns).
    Acknowledge,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// TOML with `username` and `password`: the interceptor's own login at the MQTT broker
    /// (root-owned, mode 0600). Unset: the interceptor connects without credentials.
    pub upstream_secrets_file: Option<PathBuf>,
    /// What the CONNECT username must match when the password carries a token.
    pub username: UsernameRule,
    /// Largest packet either side may send through the interceptor (fixed header included).
    pub max_packet_bytes: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_bytes: usize,
    /// Topic aliases a client may set up (MQTT 5); the interceptor resolves them, so each
    /// one costs memory here.
    pub max_topic_aliases: u16,
    /// How long a client has to send its CONNECT, and the broker its CONNACK.
    pub connect_timeout_ms: u64,
    pub v3_denied_publish: V3DeniedPublish,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            upstream_secrets_file: None,
            username: UsernameRule::Any,
            max_packet_bytes: 1024 * 1024,
            max_topic_bytes: 1024,
            max_topic_aliases: 64,
            connect_timeout_ms: 10_000,
            v3_denied_publish: V3DeniedPublish::Disconnect,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Kafka,
    Mqtt,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Kafka => "kafka",
            Protocol::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub protocol: Protocol,
    /// The broker address clients connect to. An unspecified address (`0.0.0.0:9092`,
    /// `[::]:9092`) protects the port on every local address of that family.
    pub address: SocketAddr,
    /// Where the interceptor forwards to; by default the client's original destination (the
    /// broker listens on the protected address itself and only the daemon's exempt upstream
    /// connections reach it).
    #[serde(default)]
    pub upstream: Option<SocketAddr>,
    /// SASL mechanisms offered to clients. PLAIN and SCRAM need `[[identity.user]]`s.
    #[serde(default = "default_sasl_mechanisms")]
    pub sasl_mechanisms: Vec<String>,
    /// Let clients that never authenticate in as the principal `ANONYMOUS`.
    #[serde(default)]
    pub allow_anonymous: bool,
}

fn default_sasl_mechanisms() -> Vec<String> {
    vec!["OAUTHBEARER".into()]
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.listeners.is_empty() {
            return Err(invalid(
                "listener",
                "at least one [[listener]] is required".into(),
            ));
        }
        self.audit
            .export
            .validate()
            .map_err(|e| invalid("audit.export", e.to_string()))?;
        if let Some(http) = self.admin.http_address {
            // The daemon's own listener must never be a protected broker address: the kernel
            // would steer the broker's clients to it.
            if self.listeners.iter().any(|l| l.address == http) {
                return Err(invalid(
                    "admin.http_address",
                    format!("{http} is a protected [[listener]] address"),
                ));
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.address.port() == 0 {
                return Err(invalid(
                    &format!("listener[{i}].address"),
                    "port 0 cannot be protected".into(),
                ));
            }
            if l.address.ip().is_unspecified() && l.upstream.is_some_and(|u| u.port() == 0) {
                return Err(invalid(
                    &format!("listener[{i}].upstream"),
                    "port 0 is not a broker".into(),
                ));
            }
            if let Some(j) = self.listeners[..i]
                .iter()
                .position(|o| o.address == l.address)
            {
                return Err(invalid(
                    &format!("listener[{i}].address"),
                    format!("{} is already listener[{j}]", l.address),
                ));
            }
        }
        self.validate_identity(path)?;
        let limits = &self.limits;
        let positive = [
            ("limits.max_frame_bytes", limits.max_frame_bytes),
            ("limits.max_connections", limits.max_connections),
            ("limits.max_in_flight", limits.max_in_flight),
            ("limits.read_buffer_bytes", limits.read_buffer_bytes),
            ("audit.queue", self.audit.queue),
            (
                "audit.rotate_bytes",
                usize::try_from(self.audit.rotate_bytes).unwrap_or(usize::MAX),
            ),
            (
                "audit.rotate_secs",
                usize::try_from(self.audit.rotate_secs).unwrap_or(usize::MAX),
            ),
            ("policy.max_topic_ids", self.policy.max_topic_ids),
            (
                "policy.max_decompressed_batch_bytes",
                self.policy.max_decompressed_batch_bytes,
            ),
            (
                "policy.max_records_per_batch",
                self.policy.max_records_per_batch,
            ),
            (
                "masking.max_rewritten_bytes",
                self.masking.max_rewritten_bytes,
            ),
            ("vault.cache_entries", self.vault.cache_entries),
            ("mqtt.max_packet_bytes", self.mqtt.max_packet_bytes),
            ("mqtt.max_topic_bytes", self.mqtt.max_topic_bytes),
            (
                "mqtt.connect_timeout_ms",
                usize::try_from(self.mqtt.connect_timeout_ms).unwrap_or(usize::MAX),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        if self.worker_threads > 1024 {
            return Err(invalid("worker_threads", "must be at most 1024".into()));
        }
        // Kafka frames carry an i32 length.
        if limits.max_frame_bytes > i32::MAX as usize {
            return Err(invalid(
                "limits.max_frame_bytes",
                format!("must be at most {}", i32::MAX),
            ));
        }
        // The remaining-length field holds at most 268,435,455; topics carry a u16 length.
        if self.mqtt.max_packet_bytes > 268_435_460 {
            return Err(invalid(
                "mqtt.max_packet_bytes",
                "must be at most 268435460 (MQTT's largest packet)".into(),
            ));
        }
        if self.mqtt.max_topic_bytes > 65_535 {
            return Err(invalid(
                "mqtt.max_topic_bytes",
                "must be at most 65535".into(),
            ));
        }
        if self.vault.timeout_ms == 0 {
            return Err(invalid("vault.timeout_ms", "must be greater than 0".into()));
        }
        if self.vault.backend == VaultBackend::Postgres && self.vault.postgres_url.is_empty() {
            return Err(invalid(
                "vault.postgres_url",
                "the postgres backend needs a connection string".into(),
            ));
        }
        if limits.upstream_connect_timeout_ms == 0 {
            return Err(invalid(
                "limits.upstream_connect_timeout_ms",
                "must be greater than 0".into(),
            ));
        }
        Ok(())
    }

    fn validate_identity(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let identity = &self.identity;
        for (i, l) in self.listeners.iter().enumerate() {
            let key = format!("listener[{i}].sasl_mechanisms");
            for (j, m) in l.sasl_mechanisms.iter().enumerate() {
                if !SASL_MECHANISMS.contains(&m.as_str()) {
                    return Err(invalid(
                        key,
                        format!(
                            "unknown mechanism {m:?} (known: {})",
                            SASL_MECHANISMS.join(", ")
                        ),
                    ));
                }
                // MQTT carries a password, not a SASL exchange: a token (OAUTHBEARER) or a
                // configured user's password (PLAIN).
                if l.protocol == Protocol::Mqtt && m.starts_with("SCRAM") {
                    return Err(invalid(
                        key,
                        format!("{m} is not available on an MQTT listener (OAUTHBEARER: the password is a token; PLAIN: a configured user's password)"),
                    ));
                }
                if l.sasl_mechanisms[..j].contains(m) {
                    return Err(invalid(key, format!("{m} is listed twice")));
                }
                if m == "OAUTHBEARER" && identity.issuers.is_empty() {
                    return Err(invalid(
                        key,
                        "OAUTHBEARER needs at least one [[identity.issuer]]".into(),
                    ));
                }
                if m != "OAUTHBEARER" && identity.users.is_empty() {
                    return Err(invalid(
                        key,
                        format!("{m} needs at least one [[identity.user]]"),
                    ));
                }
            }
            if l.sasl_mechanisms.is_empty() && !l.allow_anonymous {
                return Err(invalid(
                    key,
                    "no mechanism and allow_anonymous = false: no client could connect".into(),
                ));
            }
        }
        let positive = [
            ("identity.max_token_bytes", identity.max_token_bytes as u64),
            ("identity.jwks_refresh_secs", identity.jwks_refresh_secs),
            ("identity.jwks_max_stale_secs", identity.jwks_max_stale_secs),
            ("identity.http_timeout_ms", identity.http_timeout_ms),
            (
                "identity.max_session_lifetime_secs",
                identity.max_session_lifetime_secs,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key.into(), "must be greater than 0".into()));
            }
        }
        for (i, issuer) in identity.issuers.iter().enumerate() {
            if identity.issuers[..i]
                .iter()
                .any(|o| o.issuer == issuer.issuer)
            {
                return Err(invalid(
                    format!("identity.issuer[{i}].issuer"),
                    format!("{} is configured twice", issuer.issuer),
                ));
            }
            if issuer.audiences.is_empty() {
                return Err(invalid(
                    format!("identity.issuer[{i}].audiences"),
                    "at least one audience is required (tokens for other services must not \
                     work here)"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The listener protecting `dst`: an exact address match first, then a wildcard one.
    pub fn listener_for(&self, dst: SocketAddr) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.address == dst)
            .or_else(|| {
                self.listeners.iter().find(|l| {
                    l.address.ip().is_unspecified()
                        && l.address.port() == dst.port()
                        && l.address.is_ipv4() == dst.is_ipv4()
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    const MINIMAL: &str = r#"
[[listener]]
protocol = "kafka"
address = "127.0.0.1:9092"

[[identity.issuer]]
issuer = "https://idp.example.com"
audiences = ["kafka"]
"#;

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert!(!c.fail_open);
        assert_eq!(c.bpf_pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
        assert_eq!(c.limits.max_frame_bytes, 100 * 1024 * 1024);
        assert_eq!(c.listeners[0].upstream, None);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.worker_threads, 0);
        assert_eq!(
            c.listeners[0].sasl_mechanisms,
            vec!["OAUTHBEARER".to_owned()]
        );
        assert!(
            !c.listeners[0].allow_anonymous,
            "anonymous is off by default"
        );
        let issuer = &c.identity.issuers[0];
        assert_eq!(issuer.principal_claim, "sub");
        assert_eq!(issuer.groups_claims, vec!["groups".to_owned()]);
        assert_eq!(c.upstream_auth.mechanism, UpstreamMechanism::None);
    }

    #[test]
    fn identity_settings_are_checked_against_the_listeners() {
        let listener = "[[listener]]\nprotocol = \"kafka\"\naddress = \"127.0.0.1:9092\"\n";
        let err = parse(listener).unwrap_err().to_string();
        assert!(
            err.contains("OAUTHBEARER needs at least one [[identity.issuer]]"),
            "{err}"
        );
        let err = parse(&format!("{listener}sasl_mechanisms = []\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no client could connect"), "{err}");
        let err = parse(&format!("{listener}sasl_mechanisms = [\"GSSAPI\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown mechanism \"GSSAPI\""), "{err}");
        let err = parse(&format!("{listener}sasl_mechanisms = [\"PLAIN\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PLAIN needs at least one [[identity.user]]"),
            "{err}"
        );
        let err = parse(&format!(
            "{MINIMAL}[[identity.issuer]]\nissuer = \"https://idp.example.com\"\naudiences = [\"x\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("identity.issuer[1].issuer"), "{err}");
        let err = parse(&format!(
            "{listener}[[identity.issuer]]\nissuer = \"https://idp.example.com\"\naudiences = []\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("identity.issuer[0].audiences"), "{err}");
        let err = parse(&format!(
            "[upstream_auth]\nmechanism = \"scram-sha-1\"\n{MINIMAL}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("scram-sha-1"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let err = parse(&format!("fail_opn = true\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fail_opn"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let err = parse(&format!("[limits]\nmax_frame = 5\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_frame"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = parse("[[listener]]\nprotocol = \"kafka\"\naddress = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("address"), "{err}");
        let err = parse(&format!("[limits]\nmax_in_flight = -1\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_in_flight"), "{err}");
        let err = parse("[[listener]]\nprotocol = \"amqp\"\naddress = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("amqp"), "{err}");
    }

    #[test]
    fn mqtt_listeners_and_limits_are_checked() {
        let mqtt = "[[listener]]\nprotocol = \"mqtt\"\naddress = \"127.0.0.1:1883\"\n\
                    [[identity.issuer]]\nissuer = \"https://idp\"\naudiences = [\"mqtt\"]\n";
        let config = parse(mqtt).unwrap();
        assert_eq!(config.listeners[0].protocol, Protocol::Mqtt);
        assert_eq!(config.mqtt.username, UsernameRule::Any);
        let scram = mqtt.replace(
            "address = \"127.0.0.1:1883\"\n",
            "address = \"127.0.0.1:1883\"\nsasl_mechanisms = [\"SCRAM-SHA-256\"]\n",
        );
        let err = parse(&scram).unwrap_err().to_string();
        assert!(err.contains("not available on an MQTT listener"), "{err}");
        for (key, value) in [
            ("max_packet_bytes", "0"),
            ("max_packet_bytes", "300000000"),
            ("max_topic_bytes", "70000"),
            ("username", "\"nickname\""),
        ] {
            let err = parse(&format!("[mqtt]\n{key} = {value}\n{mqtt}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) || err.contains("nickname"),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let err = parse("fail_open = false\n").unwrap_err().to_string();
        assert!(err.contains("listener"), "{err}");
        let err = parse(&format!("[limits]\nmax_frame_bytes = 0\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_frame_bytes"), "{err}");
        let err = parse(&format!("{MINIMAL}{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listener[1].address"), "{err}");
        let err = parse("[[listener]]\nprotocol = \"kafka\"\naddress = \"127.0.0.1:0\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("port 0"), "{err}");
    }

    #[test]
    fn listener_lookup_prefers_exact_then_wildcard() {
        let c = parse(
            r#"
[[listener]]
protocol = "kafka"
address = "0.0.0.0:9092"
allow_anonymous = true
sasl_mechanisms = []
[[listener]]
protocol = "kafka"
address = "127.0.0.1:9092"
upstream = "127.0.0.1:19092"
allow_anonymous = true
sasl_mechanisms = []
"#,
        )
        .unwrap();
        let exact = c.listener_for("127.0.0.1:9092".parse().unwrap()).unwrap();
        assert_eq!(exact.upstream, Some("127.0.0.1:19092".parse().unwrap()));
        let wild = c.listener_for("10.1.2.3:9092".parse().unwrap()).unwrap();
        assert!(wild.address.ip().is_unspecified());
        assert!(c.listener_for("[::1]:9092".parse().unwrap()).is_none());
        assert!(c.listener_for("127.0.0.1:9093".parse().unwrap()).is_none());
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses_and_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/interceptor.toml");
        let example = Config::load(&path).unwrap();
        assert_eq!(example.limits, Limits::default());
        assert_eq!(example.audit, AuditConfig::default());
        assert_eq!(example.mqtt, MqttConfig::default());
        assert_eq!(example.bpf_pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
        assert!(!example.fail_open);
        assert_eq!(example.worker_threads, 0);
        let identity = IdentityConfig {
            issuers: example.identity.issuers.clone(),
            users: example.identity.users.clone(),
            ..IdentityConfig::default()
        };
        assert_eq!(example.identity, identity, "identity defaults as stated");
        assert_eq!(
            example.upstream_auth.secrets_file,
            PathBuf::from(DEFAULT_SECRETS_FILE)
        );
    }
}
