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
pub const DEFAULT_AUDIT_FILE: &str = "/var/lib/interceptor/audit.jsonl";

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
    /// Protected broker listeners. At least one.
    #[serde(rename = "listener")]
    pub listeners: Vec<Listener>,
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
    /// JSON-lines file the audit events are appended to.
    pub file: PathBuf,
    /// Events waiting to be written; a full queue makes sessions wait, it never drops events.
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from(DEFAULT_AUDIT_FILE),
            queue: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Kafka,
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
        let limits = &self.limits;
        let positive = [
            ("limits.max_frame_bytes", limits.max_frame_bytes),
            ("limits.max_connections", limits.max_connections),
            ("limits.max_in_flight", limits.max_in_flight),
            ("limits.read_buffer_bytes", limits.read_buffer_bytes),
            ("audit.queue", self.audit.queue),
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
        if limits.upstream_connect_timeout_ms == 0 {
            return Err(invalid(
                "limits.upstream_connect_timeout_ms",
                "must be greater than 0".into(),
            ));
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
[[listener]]
protocol = "kafka"
address = "127.0.0.1:9092"
upstream = "127.0.0.1:19092"
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
        assert_eq!(example.bpf_pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
        assert!(!example.fail_open);
        assert_eq!(example.worker_threads, 0);
    }
}
