//! `interceptor replay --resend-to ADDR`: the recorded Produce requests (as they went to the
//! broker, after masking) sent again to another broker, for forensics.
//!
//! - The connection is the operator's: ApiVersions, then optionally SASL with the operator's
//!   own credentials (`--sasl-secrets`, the daemon's upstream secrets format). The client's
//!   credentials were never recorded, so they cannot be replayed.
//! - Each request is decoded and re-encoded at its recorded version with a new correlation
//!   id and client id `interceptor-replay`; topics are renamed by `--topic-map`. A version the
//!   target does not support is skipped and reported; so are requests naming topics by id
//!   (Produce v13: ids differ between clusters).
//! - Idempotent and transactional batches carry the original producer's id, epoch and
//!   sequence, which another broker refuses (UNKNOWN_PRODUCER_ID, OUT_OF_ORDER_SEQUENCE...).
//!   By default every batch is rewritten as a plain producer's (producer id, epoch and base
//!   sequence -1, transactional flag off, CRC recomputed; records untouched) and the
//!   transactional id removed; `--keep-producer-ids` sends them as recorded. Control batches
//!   (transaction markers) are left out: brokers refuse them from clients.
//! - acks=0 requests are sent with acks=1, so that the target's answer can be reported.

use std::{path::Path, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, ProduceResponse,
        RequestHeader as WireHeader, TopicName,
    },
    protocol::{Decodable, Encodable, StrBytes},
};
use serde::Serialize;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::format::{self, Record};
use crate::{
    config::UpstreamMechanism,
    kafka::{
        authz::response::decode_response,
        records::batches,
        sasl::{secrets::UpstreamSecrets, upstream},
        transform::PRODUCE,
        RequestHeader,
    },
};

const CLIENT_ID: &str = "interceptor-replay";
const API_VERSIONS: i16 = 18;
const UNSUPPORTED_VERSION: i16 = 35;
/// The largest answer read from the target.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub struct ResendOptions {
    /// `host:port`.
    pub target: String,
    pub sasl: Option<(UpstreamMechanism, UpstreamSecrets)>,
    /// Topic renames, `old` → `new`.
    pub topic_map: Vec<(String, String)>,
    pub keep_producer_ids: bool,
    /// For connecting, authenticating and each answer.
    pub timeout: Duration,
}

#[derive(Debug, Error)]
pub enum ResendError {
    #[error("{0}")]
    Recording(#[from] format::FormatError),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connecting to {target}: {detail}")]
    Connect { target: String, detail: String },
    #[error("talking to {target}: {detail}")]
    Io { target: String, detail: String },
    #[error("the target broker: {0}")]
    Protocol(String),
    #[error(transparent)]
    Sasl(#[from] upstream::UpstreamAuthError),
    #[error("this is an MQTT session: only Kafka Produce requests can be re-sent")]
    Mqtt,
}

/// What happened to one recorded Produce request.
#[derive(Debug, Serialize)]
pub struct Resent {
    /// When it was recorded (µs since the session started) and under which correlation id.
    pub t_us: u64,
    pub recorded_correlation_id: i32,
    pub api_version: i16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<ResentPartition>,
}

#[derive(Debug, Serialize)]
pub struct ResentPartition {
    pub topic: String,
    pub partition: i32,
    /// Records sent (data batches only).
    pub records: u64,
    pub error_code: i16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_offset: Option<i64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub sent: u64,
    pub skipped: u64,
    pub partitions_ok: u64,
    pub partitions_failed: u64,
    /// Where reading the recording stopped early, if it did (what was read was resent).
    pub recording_incomplete: bool,
}

/// Resends the Produce requests recorded in `path`; `report` hears about each one.
pub async fn resend(
    path: &Path,
    options: &ResendOptions,
    mut report: impl FnMut(&Resent),
) -> Result<Summary, ResendError> {
    let (header, reader) = format::open(path)?;
    if header.mqtt {
        return Err(ResendError::Mqtt);
    }
    let mut conn = Conn::open(options).await?;
    let max_version = conn.produce_versions().await?;
    if let Some((mechanism, secrets)) = &options.sasl {
        upstream::authenticate(
            &mut conn.stream,
            *mechanism,
            secrets,
            CLIENT_ID,
            options.timeout,
        )
        .await?;
    }
    let mut summary = Summary::default();
    for entry in reader {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!("the recording stops early: {e}");
                summary.recording_incomplete = true;
                break;
            }
        };
        let Record::Request(frame) = entry.record else {
            continue;
        };
        let Ok(header) = RequestHeader::parse(&frame) else {
            continue;
        };
        if header.api_key != PRODUCE {
            continue;
        }
        let mut resent = Resent {
            t_us: entry.t_us,
            recorded_correlation_id: header.correlation_id,
            api_version: header.api_version,
            correlation_id: None,
            skipped: None,
            partitions: Vec::new(),
        };
        match prepare(&frame, &header, options, max_version) {
            Err(why) => {
                resent.skipped = Some(why);
                summary.skipped += 1;
            }
            Ok((request, counts)) => {
                let id = conn.next_id();
                resent.correlation_id = Some(id);
                let answer = conn.produce(id, header.api_version, &request).await?;
                summary.sent += 1;
                for topic in &answer.responses {
                    for p in &topic.partition_responses {
                        let name = topic.name.to_string();
                        let records = counts
                            .iter()
                            .find(|c| c.0 == name && c.1 == p.index)
                            .map_or(0, |c| c.2);
                        if p.error_code == 0 {
                            summary.partitions_ok += 1;
                        } else {
                            summary.partitions_failed += 1;
                        }
                        resent.partitions.push(ResentPartition {
                            topic: name,
                            partition: p.index,
                            records,
                            error_code: p.error_code,
                            error: (p.error_code != 0).then(|| error_name(p.error_code)),
                            base_offset: (p.error_code == 0).then_some(p.base_offset),
                        });
                    }
                }
            }
        }
        report(&resent);
    }
    Ok(summary)
}

fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("error {code}"),
    }
}

/// (topic, partition, records) of what is sent.
pub(super) type Counts = Vec<(String, i32, u64)>;

/// The request to send for a recorded one, or why it is not sent.
pub(super) fn prepare(
    frame: &Bytes,
    header: &RequestHeader,
    options: &ResendOptions,
    max_version: (i16, i16),
) -> Result<(ProduceRequest, Counts), String> {
    let version = header.api_version;
    if version > max_version.1 || version < max_version.0 {
        return Err(format!(
            "recorded as Produce v{version}; the target supports v{}-v{}",
            max_version.0, max_version.1
        ));
    }
    if version >= 13 {
        return Err(format!(
            "Produce v{version} names topics by id, which differ between clusters; not resent"
        ));
    }
    let mut body = frame.slice(header.body_offset.min(frame.len())..);
    let mut request = ProduceRequest::decode(&mut body, version)
        .map_err(|e| format!("the recorded request does not decode: {e}"))?;
    if !options.keep_producer_ids {
        request.transactional_id = None;
    }
    if request.acks == 0 {
        request.acks = 1;
    }
    let mut counts = Vec::new();
    for topic in &mut request.topic_data {
        if let Some((_, new)) = options
            .topic_map
            .iter()
            .find(|(old, _)| old.as_str() == topic.name.as_str())
        {
            topic.name = TopicName(StrBytes::from_string(new.clone()));
        }
        for p in &mut topic.partition_data {
            let Some(records) = &p.records else {
                continue;
            };
            let records = if options.keep_producer_ids {
                records.clone()
            } else {
                Bytes::from(plain_batches(records)?)
            };
            let count = batches(&records)
                .map_while(Result::ok)
                .filter(|b| !b.control)
                .map(|b| u64::try_from(b.record_count).unwrap_or(0))
                .sum();
            counts.push((topic.name.to_string(), p.index, count));
            p.records = Some(records);
        }
    }
    Ok((request, counts))
}

// Record batch v2 header offsets (KIP-98).
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const HEADER_BYTES: usize = 61;
const TRANSACTIONAL: u8 = 1 << 4;

/// The batches of `records` as a plain (non-idempotent, non-transactional) producer's, the
/// same length each; control batches left out.
pub fn plain_batches(records: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(records.len());
    for batch in batches(records) {
        let batch = batch.map_err(|e| format!("recorded batches: {e}"))?;
        if batch.control {
            continue;
        }
        let bytes = records
            .get(batch.position..batch.position + batch.batch_bytes)
            .filter(|b| b.len() >= HEADER_BYTES && b[MAGIC_AT] == 2)
            .ok_or("a recorded batch is not a magic v2 record batch")?;
        let start = out.len();
        out.extend_from_slice(bytes);
        let b = &mut out[start..];
        b[ATTRIBUTES_AT + 1] &= !TRANSACTIONAL;
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
        b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&(-1i16).to_be_bytes());
        b[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(out)
}

struct Conn {
    stream: TcpStream,
    target: String,
    next: i32,
    timeout: Duration,
}

impl Conn {
    async fn open(options: &ResendOptions) -> Result<Conn, ResendError> {
        let target = options.target.clone();
        let addrs: Vec<_> = tokio::net::lookup_host(&target)
            .await
            .map_err(|_| ResendError::Resolve(target.clone()))?
            .collect();
        let mut last = String::from("no address");
        for addr in addrs {
            match tokio::time::timeout(options.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Conn {
                        stream,
                        target,
                        next: 1,
                        timeout: options.timeout,
                    });
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {:?}", options.timeout),
            }
        }
        Err(ResendError::Connect {
            target,
            detail: last,
        })
    }

    fn next_id(&mut self) -> i32 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }

    fn io(&self, detail: impl ToString) -> ResendError {
        ResendError::Io {
            target: self.target.clone(),
            detail: detail.to_string(),
        }
    }

    /// Sends one request and reads its answer.
    async fn round_trip<T: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &T,
    ) -> Result<Bytes, ResendError> {
        let header = WireHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .and_then(|()| body.encode(&mut buf, version))
            .map_err(|e| ResendError::Protocol(format!("encoding the request: {e}")))?;
        let len = i32::try_from(buf.len())
            .map_err(|_| ResendError::Protocol("request too large".into()))?;
        let mut frame = BytesMut::with_capacity(buf.len() + 4);
        frame.put_i32(len);
        frame.extend_from_slice(&buf);
        let timeout = self.timeout;
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let len = self.stream.read_i32().await?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| (4..=MAX_RESPONSE_BYTES).contains(&l))
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("answer of {len} bytes"),
                    )
                })?;
            let mut answer = vec![0u8; len + 4];
            answer[..4].copy_from_slice(&(len as i32).to_be_bytes());
            self.stream.read_exact(&mut answer[4..]).await?;
            Ok::<_, std::io::Error>(Bytes::from(answer))
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(self.io(e)),
            Err(_) => return Err(self.io(format!("no answer within {timeout:?}"))),
        };
        let got = answer
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if got != Some(correlation_id) {
            return Err(ResendError::Protocol(format!(
                "answered correlation id {got:?} to request {correlation_id}"
            )));
        }
        Ok(answer)
    }

    /// The Produce versions the target supports.
    async fn produce_versions(&mut self) -> Result<(i16, i16), ResendError> {
        let id = self.next_id();
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let answer = self
            .round_trip(ApiKey::ApiVersions, 3, id, &request)
            .await?;
        // A broker that does not know v3 answers in v0 with UNSUPPORTED_VERSION (KIP-511).
        let decoded =
            decode_response::<ApiVersionsResponse>(API_VERSIONS, 3, &answer, "ApiVersions")
                .ok()
                .filter(|(_, r)| r.error_code != UNSUPPORTED_VERSION)
                .or_else(|| {
                    decode_response::<ApiVersionsResponse>(API_VERSIONS, 0, &answer, "ApiVersions")
                        .ok()
                });
        let Some((_, versions)) = decoded else {
            return Err(ResendError::Protocol(
                "undecodable ApiVersions answer".into(),
            ));
        };
        if versions.error_code != 0 {
            return Err(ResendError::Protocol(format!(
                "ApiVersions: {}",
                error_name(versions.error_code)
            )));
        }
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == PRODUCE)
            .map(|k| (k.min_version, k.max_version))
            .ok_or_else(|| ResendError::Protocol("it does not support Produce".into()))
    }

    async fn produce(
        &mut self,
        correlation_id: i32,
        version: i16,
        request: &ProduceRequest,
    ) -> Result<ProduceResponse, ResendError> {
        let answer = self
            .round_trip(ApiKey::Produce, version, correlation_id, request)
            .await?;
        decode_response::<ProduceResponse>(PRODUCE, version, &answer, "Produce")
            .map(|(_, r)| r)
            .map_err(|e| ResendError::Protocol(e.to_string()))
    }
}
