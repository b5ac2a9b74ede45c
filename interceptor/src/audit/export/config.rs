//! `[audit.export]`: where sealed audit lines are copied to besides the local files.
//!
//! Every sink has its own bounded buffer and loss policy. Values are checked by
//! [`ExportConfig::validate`] (also run by [`super::Exporters::start`]), so a bad setting stops
//! the daemon at start instead of losing events later.

use std::{collections::HashSet, fmt, net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use super::ExportError;

/// The largest UDP payload over IPv4 (65535 − 8 UDP − 20 IP header bytes): a syslog message
/// over UDP must fit in one datagram.
pub const UDP_MAX_PAYLOAD: usize = 65_507;
/// RFC 5424 §6.1: every receiver must accept messages of this size; a smaller limit would
/// make every event "too large".
pub const MIN_MESSAGE_BYTES: usize = 480;
/// Per-event overhead counted against a Kafka batch (record framing, key, `seq` header).
pub const KAFKA_RECORD_OVERHEAD: usize = 64;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `[[audit.export.syslog]]` sinks.
    pub syslog: Vec<SyslogSinkConfig>,
    /// `[[audit.export.kafka]]` sinks.
    pub kafka: Vec<KafkaSinkConfig>,
}

impl ExportConfig {
    pub fn is_empty(&self) -> bool {
        self.syslog.is_empty() && self.kafka.is_empty()
    }

    /// Checks every sink; names (given or derived) must be unique, since stats and log lines
    /// are told apart by name.
    pub fn validate(&self) -> Result<(), ExportError> {
        let mut names = HashSet::new();
        for sink in &self.syslog {
            sink.validate()?;
            if !names.insert(sink.name()) {
                return Err(invalid(&sink.name(), "the name is used by another sink"));
            }
        }
        for sink in &self.kafka {
            sink.validate()?;
            if !names.insert(sink.name()) {
                return Err(invalid(&sink.name(), "the name is used by another sink"));
            }
        }
        Ok(())
    }
}

/// What a full buffer does with the next event. Either way the lost event is counted and
/// logged.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The event offered is dropped; what is buffered stays (the export keeps the older,
    /// contiguous part of the trail).
    #[default]
    DropNewest,
    /// The oldest buffered event is dropped to make room (the export keeps the latest).
    DropOldest,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    /// For stats and logs; default `syslog:<address>`.
    #[serde(default)]
    pub name: Option<String>,
    /// `udp://host:port`, `tcp://host:port` (RFC 6587 octet counting) or `unix:///dev/log`
    /// (datagrams).
    pub address: SyslogAddress,
    /// RFC 5424 APP-NAME: 1 to 48 printable ASCII characters.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// RFC 5424 facility; the severity comes from each event.
    #[serde(default)]
    pub facility: Facility,
    /// Events buffered while the collector is slow or unreachable.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// ...and at most this many bytes of them.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    #[serde(default)]
    pub on_full: OnFull,
    /// The largest message sent (RFC 5424 header included). A longer event is never split or
    /// truncated (that would break its JSON): it is counted as lost `too_large`. Default 65536,
    /// and 65507 (one IPv4 datagram) for `udp://`, which is also its maximum.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Connecting and each write.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl SyslogSinkConfig {
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("syslog:{}", self.address))
    }

    pub fn max_message_bytes(&self) -> usize {
        match (self.max_message_bytes, &self.address) {
            (Some(n), _) => n,
            (None, SyslogAddress::Udp(_)) => UDP_MAX_PAYLOAD,
            (None, _) => 65_536,
        }
    }

    fn validate(&self) -> Result<(), ExportError> {
        let name = self.name();
        check_name(&name)?;
        if self.app_name.is_empty()
            || self.app_name.len() > 48
            || !self.app_name.bytes().all(is_print_us_ascii)
        {
            return Err(invalid(
                &name,
                "app_name must be 1 to 48 printable ASCII characters without spaces (RFC 5424)",
            ));
        }
        let max = self.max_message_bytes();
        let ceiling = match self.address {
            SyslogAddress::Udp(_) => UDP_MAX_PAYLOAD,
            _ => 16 * 1024 * 1024,
        };
        if !(MIN_MESSAGE_BYTES..=ceiling).contains(&max) {
            return Err(invalid(
                &name,
                &format!(
                    "max_message_bytes must be {MIN_MESSAGE_BYTES} to {ceiling} for {}",
                    self.address.scheme()
                ),
            ));
        }
        check_buffer(&name, self.buffer, self.buffer_bytes, max)?;
        check_timeout(&name, self.timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// For stats and logs; default `kafka:<broker>/<topic>`.
    #[serde(default)]
    pub name: Option<String>,
    /// A broker address (IP and port). Its connection is exempted from steering by its
    /// 4-tuple, like the daemon's other upstream connections. It must lead partition 0 of
    /// `topic`: no Metadata lookup is made.
    pub broker: SocketAddr,
    pub topic: String,
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: usize,
    #[serde(default)]
    pub on_full: OnFull,
    /// Events per Produce request.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Bytes per record batch (lines plus a fixed per-record overhead); an event alone over
    /// this is lost `too_large`. Keep it under the topic's `max.message.bytes`.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// How long the first event of a batch waits for more.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    #[serde(default)]
    pub acks: Acks,
    /// Connecting, logging in and each request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl KafkaSinkConfig {
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("kafka:{}/{}", self.broker, self.topic))
    }

    fn validate(&self) -> Result<(), ExportError> {
        let name = self.name();
        check_name(&name)?;
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self.topic != "."
            && self.topic != ".."
            && self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !topic_ok {
            return Err(invalid(
                &name,
                "topic must be 1 to 249 of [A-Za-z0-9._-], not \".\" or \"..\"",
            ));
        }
        if !(1..=10_000).contains(&self.batch_max_events) {
            return Err(invalid(&name, "batch_max_events must be 1 to 10000"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.batch_max_bytes) {
            return Err(invalid(&name, "batch_max_bytes must be 1 KiB to 64 MiB"));
        }
        if self.linger_ms > 10_000 {
            return Err(invalid(&name, "linger_ms must be at most 10000"));
        }
        check_buffer(&name, self.buffer, self.buffer_bytes, self.batch_max_bytes)?;
        check_timeout(&name, self.timeout_ms)
    }
}

/// The acknowledgement a Produce request asks for. `acks=0` is not offered: an export that
/// is never confirmed cannot count what it lost.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// Every in-sync replica has the batch (`acks=-1`).
    #[default]
    All,
    /// The partition leader has it (`acks=1`).
    Leader,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::Leader => 1,
        }
    }
}

/// Where a syslog sink sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SyslogAddress {
    /// `host:port`, resolved at each (re)connection.
    Udp(String),
    Tcp(String),
    Unix(PathBuf),
}

impl SyslogAddress {
    pub fn scheme(&self) -> &'static str {
        match self {
            SyslogAddress::Udp(_) => "udp",
            SyslogAddress::Tcp(_) => "tcp",
            SyslogAddress::Unix(_) => "unix",
        }
    }

    /// Whether the transport carries one message per datagram (no octet counting).
    pub fn is_datagram(&self) -> bool {
        !matches!(self, SyslogAddress::Tcp(_))
    }
}

impl TryFrom<String> for SyslogAddress {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let host_port = |rest: &str| -> Result<String, String> {
            let port = rest
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty())
                .map(|(_, port)| port)
                .ok_or_else(|| format!("{s:?}: expected host:port after the scheme"))?;
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?}: invalid port {port:?}"))?;
            Ok(rest.to_owned())
        };
        if let Some(rest) = s.strip_prefix("udp://") {
            Ok(SyslogAddress::Udp(host_port(rest)?))
        } else if let Some(rest) = s.strip_prefix("tcp://") {
            Ok(SyslogAddress::Tcp(host_port(rest)?))
        } else if let Some(rest) = s.strip_prefix("unix://") {
            if !rest.starts_with('/') {
                return Err(format!("{s:?}: a unix socket path must be absolute"));
            }
            Ok(SyslogAddress::Unix(PathBuf::from(rest)))
        } else {
            Err(format!(
                "{s:?}: expected udp://host:port, tcp://host:port or unix:///path"
            ))
        }
    }
}

impl fmt::Display for SyslogAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyslogAddress::Udp(a) => write!(f, "udp://{a}"),
            SyslogAddress::Tcp(a) => write!(f, "tcp://{a}"),
            SyslogAddress::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// RFC 5424 §6.2.1 facilities, by their usual syslog names.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    /// 4: security/authorization messages.
    #[default]
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    /// 10: security/authorization messages (private).
    Authpriv,
    Ftp,
    Ntp,
    /// 13: log audit.
    Audit,
    /// 14: log alert.
    Alert,
    /// 15: clock daemon.
    Clock,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility's number (0 to 23).
    pub fn code(self) -> u8 {
        self as u8
    }
}

fn default_app_name() -> String {
    "interceptor".to_owned()
}
fn default_buffer() -> usize {
    10_000
}
fn default_buffer_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_batch_max_events() -> usize {
    500
}
fn default_batch_max_bytes() -> usize {
    1_000_000
}
fn default_linger_ms() -> u64 {
    50
}

/// RFC 5424 PRINTUSASCII: `%d33-126`.
pub(crate) fn is_print_us_ascii(b: u8) -> bool {
    (33..=126).contains(&b)
}

fn invalid(sink: &str, problem: &str) -> ExportError {
    ExportError::Config {
        sink: sink.to_owned(),
        problem: problem.to_owned(),
    }
}

fn check_name(name: &str) -> Result<(), ExportError> {
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(invalid(
            name,
            "a sink name must be 1 to 200 characters, none of them control characters",
        ));
    }
    Ok(())
}

/// The buffer must hold at least one event of the largest size the sink accepts, or such an
/// event could never be queued.
fn check_buffer(
    name: &str,
    events: usize,
    bytes: usize,
    largest: usize,
) -> Result<(), ExportError> {
    if !(1..=10_000_000).contains(&events) {
        return Err(invalid(name, "buffer must be 1 to 10000000 events"));
    }
    if bytes < largest || bytes > 16 * 1024 * 1024 * 1024 {
        return Err(invalid(
            name,
            &format!(
                "buffer_bytes must be at least the largest event ({largest}) and at most 16 GiB"
            ),
        ));
    }
    Ok(())
}

fn check_timeout(name: &str, ms: u64) -> Result<(), ExportError> {
    if !(100..=300_000).contains(&ms) {
        return Err(invalid(name, "timeout_ms must be 100 to 300000"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ExportConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn the_documented_example_parses_with_its_defaults() {
        let c = parse(
            r#"
            [[syslog]]
            name = "siem"
            address = "udp://127.0.0.1:514"
            facility = "auth"
            [[syslog]]
            address = "tcp://collector.example:6514"
            on_full = "drop_oldest"
            [[syslog]]
            address = "unix:///dev/log"
            [[kafka]]
            broker = "127.0.0.1:9092"
            topic = "interceptor.audit"
            acks = "leader"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.syslog[0].name(), "siem");
        assert_eq!(c.syslog[0].max_message_bytes(), UDP_MAX_PAYLOAD);
        assert_eq!(c.syslog[1].name(), "syslog:tcp://collector.example:6514");
        assert_eq!(c.syslog[1].max_message_bytes(), 65_536);
        assert_eq!(c.syslog[1].on_full, OnFull::DropOldest);
        assert_eq!(c.syslog[1].facility, Facility::Auth);
        assert_eq!(c.syslog[2].address, SyslogAddress::Unix("/dev/log".into()));
        assert_eq!(c.kafka[0].name(), "kafka:127.0.0.1:9092/interceptor.audit");
        assert_eq!(c.kafka[0].batch_max_events, 500);
        assert_eq!(c.kafka[0].acks.wire(), 1);
        assert_eq!(Facility::Local7.code(), 23);
        assert_eq!(Facility::Authpriv.code(), 10);
    }

    #[test]
    fn the_example_in_the_shipped_configuration_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/interceptor.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let example: String = text
            .lines()
            .skip_while(|l| *l != "# [[audit.export.syslog]]")
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        assert!(example.contains("[[audit.export.kafka]]"), "{example}");
        let value: toml::Value = toml::from_str(&example).unwrap();
        let config: ExportConfig = value["audit"]["export"].clone().try_into().unwrap();
        config.validate().unwrap();
        assert_eq!((config.syslog.len(), config.kafka.len()), (1, 1));
        assert_eq!(config.syslog[0].name(), "siem");
        assert_eq!(config.kafka[0].acks, Acks::All);
    }

    #[test]
    fn bad_settings_are_refused() {
        for (text, needle) in [
            ("[[syslog]]\naddress = \"http://x:1\"", "expected udp://"),
            ("[[syslog]]\naddress = \"udp://x\"", "host:port"),
            ("[[syslog]]\naddress = \"tcp://x:0\"", "invalid port"),
            ("[[syslog]]\naddress = \"unix://dev/log\"", "absolute"),
            (
                "[[syslog]]\naddress = \"udp://x:1\"\nbogus = 1",
                "unknown field",
            ),
            (
                "[[syslog]]\naddress = \"udp://x:1\"\nfacility = \"nope\"",
                "unknown variant",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        for (text, needle) in [
            (
                "[[syslog]]\naddress = \"udp://x:1\"\nmax_message_bytes = 65536",
                "max_message_bytes",
            ),
            (
                "[[syslog]]\naddress = \"udp://x:1\"\napp_name = \"has space\"",
                "app_name",
            ),
            (
                "[[syslog]]\naddress = \"udp://x:1\"\nbuffer = 0",
                "buffer must",
            ),
            (
                "[[syslog]]\naddress = \"tcp://x:1\"\nbuffer_bytes = 1000",
                "buffer_bytes",
            ),
            (
                "[[syslog]]\naddress = \"udp://x:1\"\n[[syslog]]\naddress = \"udp://x:1\"",
                "used by another",
            ),
            (
                "[[kafka]]\nbroker = \"127.0.0.1:1\"\ntopic = \"a/b\"",
                "topic must",
            ),
            (
                "[[kafka]]\nbroker = \"127.0.0.1:1\"\ntopic = \"t\"\nbatch_max_events = 0",
                "batch_max_events",
            ),
            (
                "[[kafka]]\nbroker = \"127.0.0.1:1\"\ntopic = \"t\"\ntimeout_ms = 5",
                "timeout_ms",
            ),
        ] {
            let err = parse(text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
