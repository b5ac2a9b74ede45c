//! The Kafka sink: the audit trail produced to a topic by the interceptor's own producer.
//!
//! - One connection to the configured broker, made like the daemon's upstream connections
//!   (its 4-tuple exempted from steering, so it is not sent back to the interceptor), then
//!   ApiVersions, then the interceptor's own SASL login when `[upstream_auth]` has one.
//! - Every event goes to partition 0 of the topic, whose leader the configured broker is
//!   assumed to be: no Metadata lookup is made. The topic must exist, or the broker must
//!   create it on produce; until it does, UNKNOWN_TOPIC_OR_PARTITION is retried and events
//!   wait in the buffer.
//! - One Produce request in flight at a time, and a batch is retried until it is answered,
//!   so the topic holds the events in `seq` order. Retriable errors and lost connections are
//!   retried with backoff (the same batch, which the broker may then hold twice: the record
//!   key and the `seq` header let a consumer drop repeats). A batch the broker finds too large
//!   is split; a single event it refuses for size is lost `too_large`; any other error that
//!   is not retriable loses the batch (`error`), logged with the broker's code.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use kafka_protocol::{
    error::ResponseError,
    messages::{ApiKey, ApiVersionsRequest},
    protocol::StrBytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    config::{KafkaSinkConfig, KAFKA_RECORD_OVERHEAD},
    kafka_wire::{self as wire, PartitionAnswer, PartitionState},
    sink::{step_timeout, Backoff, Entry, ExitGuard, LossReason, Sink},
};
use crate::{
    config::UpstreamMechanism,
    ebpf::ExemptRegistry,
    kafka::{api_versions::decode_api_versions_response, sasl},
    proxy::upstream::{self, Upstream},
};

/// The client id of the sink's requests (visible in broker logs and quotas).
pub const CLIENT_ID: &str = "interceptor-audit";
const UNSUPPORTED_VERSION: i16 = 35;
const MESSAGE_TOO_LARGE: i16 = 10;
const RECORD_LIST_TOO_LARGE: i16 = 18;

pub(crate) struct Settings {
    pub config: KafkaSinkConfig,
    pub exempt: ExemptRegistry,
    /// The interceptor's broker login, when the broker wants one.
    pub login: Option<(UpstreamMechanism, sasl::secrets::UpstreamSecrets)>,
}

struct Conn {
    upstream: Upstream,
    produce_version: i16,
    next_correlation_id: i32,
    /// When the broker's SASL session ends (KIP-368): the connection is replaced before.
    expires: Option<Instant>,
}

/// The worker: batches from the buffer, produced in order, until shutdown.
pub(crate) async fn run(sink: Arc<Sink>, s: Settings) {
    let _exit = ExitGuard(&sink);
    let c = &s.config;
    let linger = Duration::from_millis(c.linger_ms);
    let timeout = Duration::from_millis(c.timeout_ms);
    let cost = |e: &Entry| e.line.len() + KAFKA_RECORD_OVERHEAD;
    let mut conn: Option<Conn> = None;
    let mut backoff = Backoff::new();
    // Taken from the buffer, not settled yet; sent as prefixes of up to `limit` events.
    let mut pending: Vec<Entry> = Vec::new();
    let mut limit = c.batch_max_events;
    loop {
        if pending.is_empty() {
            limit = c.batch_max_events;
            if !sink.ready(linger, c.batch_max_events).await {
                return;
            }
            pending = sink.take(c.batch_max_events, c.batch_max_bytes, cost);
            continue;
        }
        let closing = sink.closing();
        if closing.is_some_and(|d| Instant::now() >= d) {
            return; // shutdown counts what is left
        }
        let step = step_timeout(timeout, closing);
        if conn
            .as_ref()
            .and_then(|c| c.expires)
            .is_some_and(|t| Instant::now() >= t)
        {
            conn = None; // log in again before the broker cuts the session
        }
        let Some(open_conn) = conn.as_mut() else {
            match tokio::time::timeout(step, open(&s, timeout)).await {
                Ok(Ok(c)) => {
                    sink.set_connected();
                    conn = Some(c);
                }
                Ok(Err(e)) => {
                    sink.failed(e);
                    if !backoff.wait(&sink).await {
                        return;
                    }
                }
                Err(_) => {
                    sink.failed(format!("connecting to {} timed out", c.broker));
                    if !backoff.wait(&sink).await {
                        return;
                    }
                }
            }
            continue;
        };
        let n = pending.len().min(limit);
        let answer = tokio::time::timeout(step, produce(open_conn, c, &pending[..n])).await;
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                sink.failed(e);
                sink.retried();
                conn = None;
                if !backoff.wait(&sink).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                sink.failed(format!(
                    "no Produce answer from {} within {step:?}",
                    c.broker
                ));
                sink.retried();
                conn = None;
                if !backoff.wait(&sink).await {
                    return;
                }
                continue;
            }
        };
        match answer.error_code {
            0 => {
                sink.delivered(n, line_bytes(&pending[..n]));
                pending.drain(..n);
                backoff.reset();
                continue;
            }
            MESSAGE_TOO_LARGE | RECORD_LIST_TOO_LARGE if n > 1 => {
                // Smaller requests until it fits; only an event alone can be too large.
                limit = n / 2;
                sink.retried();
                continue;
            }
            MESSAGE_TOO_LARGE | RECORD_LIST_TOO_LARGE => {
                sink.lost_in_flight(LossReason::TooLarge, 1, line_bytes(&pending[..1]));
                sink.rejected(broker_error(c, &answer));
                pending.remove(0);
                continue;
            }
            code if is_retriable(code) => {
                sink.rejected(broker_error(c, &answer));
                sink.retried();
            }
            _ => {
                sink.rejected(broker_error(c, &answer));
                sink.lost_in_flight(LossReason::Error, n, line_bytes(&pending[..n]));
                pending.drain(..n);
            }
        }
        if !backoff.wait(&sink).await {
            return;
        }
    }
}

fn line_bytes(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.line.len()).sum()
}

fn is_retriable(code: i16) -> bool {
    ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| "unknown error".to_owned())
}

fn broker_error(c: &KafkaSinkConfig, answer: &PartitionAnswer) -> String {
    let name = error_name(answer.error_code);
    format!(
        "{} refused a Produce to {}/{}: {name} ({}){}",
        c.broker,
        c.topic,
        wire::PARTITION,
        answer.error_code,
        answer
            .error_message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    )
}

/// Connects, learns the Produce versions, logs in.
async fn open(s: &Settings, timeout: Duration) -> Result<Conn, String> {
    let c = &s.config;
    let upstream = upstream::connect(c.broker, &s.exempt, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let mut conn = Conn {
        upstream,
        produce_version: wire::PRODUCE_MIN_VERSION,
        next_correlation_id: 1,
        expires: None,
    };
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let mut version = wire::API_VERSIONS_VERSION;
    let mut versions = conn.api_versions(&request, version).await?;
    if versions.error_code == UNSUPPORTED_VERSION {
        // KIP-511: the broker listed the ApiVersions versions it knows in a v0 body.
        version = versions
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::ApiVersions as i16)
            .map_or(0, |k| k.max_version.clamp(0, wire::API_VERSIONS_VERSION));
        versions = conn.api_versions(&request, version).await?;
    }
    if versions.error_code != 0 {
        return Err(format!(
            "{} answered ApiVersions with error {}",
            c.broker, versions.error_code
        ));
    }
    conn.produce_version =
        wire::produce_version(&versions).map_err(|e| format!("{}: {e}", c.broker))?;
    let metadata_version =
        wire::metadata_version(&versions).map_err(|e| format!("{}: {e}", c.broker))?;
    if let Some((mechanism, secrets)) = &s.login {
        let auth = sasl::upstream::authenticate(
            &mut conn.upstream.stream,
            *mechanism,
            secrets,
            CLIENT_ID,
            timeout,
        )
        .await
        .map_err(|e| format!("{}: {e}", c.broker))?;
        if auth.session_lifetime_ms > 0 {
            // Reconnect at 90% of the session, before the broker closes it mid-request.
            let lifetime = Duration::from_millis(auth.session_lifetime_ms.unsigned_abs());
            conn.expires = Some(Instant::now() + lifetime.mul_f64(0.9));
        }
    }
    // Before producing: the topic must be there (a broker that creates topics does so on
    // this request). Some brokers answer a Produce to a missing topic with success and
    // store nothing, so this is the one place a missing topic shows.
    let id = conn.correlation_id();
    let request = wire::metadata_request(&c.topic);
    let frame = wire::request_frame(ApiKey::Metadata, metadata_version, id, CLIENT_ID, &request)?;
    let answer = conn.round_trip(&frame, id).await?;
    match wire::decode_metadata_response(&answer, metadata_version, &c.topic)? {
        PartitionState::Ready { leader } => {
            tracing::debug!(broker = %c.broker, topic = %c.topic, leader, "audit export topic ready");
        }
        PartitionState::Error(code) => {
            return Err(format!(
                "{}: topic {} partition {}: {} ({code})",
                c.broker,
                c.topic,
                wire::PARTITION,
                error_name(code)
            ))
        }
        PartitionState::Missing => {
            return Err(format!(
                "{}: topic {} has no partition {}",
                c.broker,
                c.topic,
                wire::PARTITION
            ))
        }
    }
    Ok(conn)
}

/// One Produce request for `entries` and the broker's answer for partition 0.
async fn produce(
    conn: &mut Conn,
    c: &KafkaSinkConfig,
    entries: &[Entry],
) -> Result<PartitionAnswer, String> {
    let records = wire::record_batch(entries)?;
    let timeout_ms = i32::try_from(c.timeout_ms).unwrap_or(i32::MAX);
    let request = wire::produce_request(&c.topic, c.acks.wire(), timeout_ms, records);
    let version = conn.produce_version;
    let id = conn.correlation_id();
    let frame = wire::request_frame(ApiKey::Produce, version, id, CLIENT_ID, &request)?;
    let answer = conn.round_trip(&frame, id).await?;
    wire::decode_produce_response(&answer, version, &c.topic)
}

impl Conn {
    fn correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        // Stays clear of the ids the SASL exchange uses (from i32::MAX - 16).
        self.next_correlation_id = if id >= i32::MAX / 2 { 1 } else { id + 1 };
        id
    }

    async fn api_versions(
        &mut self,
        request: &ApiVersionsRequest,
        version: i16,
    ) -> Result<kafka_protocol::messages::ApiVersionsResponse, String> {
        let id = self.correlation_id();
        let frame = wire::request_frame(ApiKey::ApiVersions, version, id, CLIENT_ID, request)?;
        let answer = self.round_trip(&frame, id).await?;
        decode_api_versions_response(&answer, version)
            .map_err(|e| format!("invalid ApiVersions answer: {e}"))
    }

    /// Writes a request and reads its answer (length prefix included), bounded.
    async fn round_trip(&mut self, frame: &[u8], id: i32) -> Result<Bytes, String> {
        let stream = &mut self.upstream.stream;
        let io = |e: std::io::Error| format!("connection to the broker: {e}");
        stream.write_all(frame).await.map_err(io)?;
        let len = stream.read_i32().await.map_err(io)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (4..=wire::MAX_RESPONSE_BYTES).contains(l))
            .ok_or_else(|| format!("the broker sent an answer of {len} bytes"))?;
        let mut answer = vec![0u8; 4 + len];
        answer[..4].copy_from_slice(&(len as i32).to_be_bytes());
        stream.read_exact(&mut answer[4..]).await.map_err(io)?;
        let answer = Bytes::from(answer);
        let got = wire::correlation_id(&answer)?;
        if got != id {
            return Err(format!("the broker answered request {got}, expected {id}"));
        }
        Ok(answer)
    }
}
