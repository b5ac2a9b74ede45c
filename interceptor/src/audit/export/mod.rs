//! Copies of the sealed audit trail for a SIEM: syslog (RFC 5424 over UDP, TCP or a unix
//! datagram socket) and a Kafka topic written with the interceptor's own producer.
//!
//! The writer thread hands every line to [`Exporters::offer`] once its group is durable.
//! Offering never waits: each sink has its own bounded buffer (events and bytes) and worker
//! task, and a full buffer applies the sink's `on_full` policy. Every event that is not
//! delivered is counted by reason ([`LostCounts`]) and logged, rate-limited, so an export
//! can fall behind or lose events but never silently. The local files stay the record; the
//! exports are copies, so nothing here ever holds up traffic.
//!
//! Delivery is at least once, in `seq` order per sink: a batch whose fate is unknown (a
//! connection lost mid-write, a Produce without an answer) is sent again, so a collector may
//! see an event twice and can drop repeats by `seq`.

pub mod config;
mod kafka;
mod kafka_wire;
mod sink;
pub mod syslog;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_kafka;
#[cfg(test)]
mod tests_rsyslog;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use thiserror::Error;

pub use config::{
    Acks, ExportConfig, Facility, KafkaSinkConfig, OnFull, SyslogAddress, SyslogSinkConfig,
};
pub use sink::{LostCounts, SinkKind, SinkStats, LOSS_LOG_INTERVAL};

use crate::{
    config::UpstreamMechanism, ebpf::ExemptRegistry, kafka::sasl::secrets::UpstreamSecrets,
};
use sink::{Entry, Limits, Sink};

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("[audit.export] sink {sink:?}: {problem}")]
    Config { sink: String, problem: String },
}

/// The severity of an event, as syslog's PRI carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// 6: routine (a connection opened, a request allowed).
    Info,
    /// 5: normal but significant (a policy reload, a masking).
    Notice,
    /// 4: something was refused or failed.
    Warning,
}

impl Severity {
    /// RFC 5424 §6.2.1 severity number.
    pub fn code(self) -> u8 {
        match self {
            Severity::Warning => 4,
            Severity::Notice => 5,
            Severity::Info => 6,
        }
    }
}

/// What the writer knows about a line besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineMeta {
    pub seq: u64,
    /// When the event happened, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    pub severity: Severity,
    /// The event's name (`connection_open`, `decision`, ...): syslog's MSGID.
    pub event: &'static str,
}

/// What the workers need from the daemon.
pub struct ExportContext {
    /// Where the workers run (the daemon's runtime).
    pub runtime: tokio::runtime::Handle,
    /// Exempts the Kafka sinks' connections from steering.
    pub exempt: ExemptRegistry,
    /// The interceptor's own broker login (`None`: the broker wants none).
    pub broker_credentials: Option<UpstreamSecrets>,
    pub upstream_mechanism: UpstreamMechanism,
    /// RFC 5424 HOSTNAME (this node's name; sanitised to printable ASCII, 255 at most).
    pub hostname: String,
}

/// The configured sinks, owned by the writer thread.
pub struct Exporters {
    workers: Vec<Worker>,
}

struct Worker {
    sink: Arc<Sink>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporters {
    /// Starts one worker task per configured sink on `ctx.runtime`; fails on an invalid
    /// configuration, before anything starts.
    pub fn start(config: &ExportConfig, ctx: ExportContext) -> Result<Exporters, ExportError> {
        config.validate()?;
        let mut workers = Vec::new();
        let hostname = syslog::sanitize_hostname(&ctx.hostname);
        for c in &config.syslog {
            let limits = Limits {
                events: c.buffer,
                bytes: c.buffer_bytes,
                largest_line: c.max_message_bytes(),
                on_full: c.on_full,
            };
            let sink = Arc::new(Sink::new(
                c.name(),
                SinkKind::Syslog,
                c.address.to_string(),
                limits,
            ));
            let settings = syslog::Settings::new(c, hostname.clone());
            let task = ctx.runtime.spawn(syslog::run(Arc::clone(&sink), settings));
            workers.push(Worker { sink, task });
        }
        for c in &config.kafka {
            let limits = Limits {
                events: c.buffer,
                bytes: c.buffer_bytes,
                largest_line: c
                    .batch_max_bytes
                    .saturating_sub(config::KAFKA_RECORD_OVERHEAD),
                on_full: c.on_full,
            };
            let sink = Arc::new(Sink::new(
                c.name(),
                SinkKind::Kafka,
                format!("{}/{}", c.broker, c.topic),
                limits,
            ));
            let settings = kafka::Settings {
                config: c.clone(),
                exempt: ctx.exempt.clone(),
                login: ctx
                    .broker_credentials
                    .clone()
                    .filter(|_| ctx.upstream_mechanism != UpstreamMechanism::None)
                    .map(|secrets| (ctx.upstream_mechanism, secrets)),
            };
            let task = ctx.runtime.spawn(kafka::run(Arc::clone(&sink), settings));
            workers.push(Worker { sink, task });
        }
        for w in &workers {
            tracing::info!(sink = %w.sink.name, target = %w.sink.target, "audit export started");
        }
        Ok(Exporters { workers })
    }

    /// Nothing configured: offering costs nothing.
    pub fn none() -> Exporters {
        Exporters {
            workers: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Offers one sealed line (a JSON object, with or without its `\n`). Never blocks: a full
    /// sink buffer applies its loss policy.
    pub fn offer(&self, line: &Bytes, meta: &LineMeta) {
        if self.workers.is_empty() {
            return;
        }
        let json = line.strip_suffix(b"\n").unwrap_or(line);
        let entry = Entry {
            line: Bytes::copy_from_slice(json),
            seq: meta.seq,
            time_ms: meta.time_ms,
            severity: meta.severity,
            event: meta.event,
        };
        for w in &self.workers {
            w.sink.offer(entry.clone());
        }
    }

    pub fn stats(&self) -> Vec<SinkStats> {
        self.workers.iter().map(|w| w.sink.stats()).collect()
    }

    /// Delivers what is buffered within `timeout` (all sinks at once), then counts the rest
    /// as lost (`shutdown`) and stops the workers. Blocks the calling thread: call it from a
    /// thread that is not one of the runtime's.
    pub fn shutdown(mut self, timeout: Duration) -> Vec<SinkStats> {
        let deadline = Instant::now() + timeout;
        let workers = std::mem::take(&mut self.workers);
        for w in &workers {
            w.sink.close(deadline);
        }
        // A little grace past the deadline for a worker to notice it.
        let grace = deadline + Duration::from_millis(100);
        workers
            .into_iter()
            .map(|w| {
                if !w.sink.wait_exited(grace) {
                    w.task.abort();
                }
                let stats = w.sink.finish();
                tracing::info!(
                    sink = %stats.name,
                    sent = stats.sent,
                    lost = stats.lost.total(),
                    "audit export stopped"
                );
                stats
            })
            .collect()
    }
}

impl Drop for Exporters {
    /// Without [`Exporters::shutdown`]: the workers stop now, what they held counted as lost.
    fn drop(&mut self) {
        let now = Instant::now();
        for w in self.workers.drain(..) {
            w.sink.close(now);
            w.task.abort();
            w.sink.finish();
        }
    }
}
