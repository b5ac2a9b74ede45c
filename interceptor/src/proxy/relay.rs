//! The two directions of one Kafka connection.
//!
//! Requests: read from the client, split frames, decode each header, ask the filter chain,
//! record what response is due, forward. Responses: for each entry due in order, either send
//! the interceptor's own response or the broker's, once its correlation id matches; a broker
//! response that nothing rewrites streams through as its bytes arrive.
//!
//! Backpressure: each direction writes what it has before it reads more, so a slow reader on
//! one side stops reading on the other; the in-flight queue bounds pipelined requests. Memory
//! per direction is the read buffer: it grows to a whole frame (at most `max_frame_bytes`)
//! only for requests and for responses that are rewritten, and to at most 1 MiB per read for
//! responses streaming through.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{
    auth::{AuthStep, SessionAuth},
    authorize::{RequestAuthz, ResponseAudit},
    tap::{Handling, SessionTap},
    write::write_frames,
};
use crate::{
    audit::CloseReason,
    filter::{FilterChain, Verdict},
    kafka::{
        api_versions::{
            can_decode_response, rewrite_api_versions_response, unsupported_version_response,
            ServedApi,
        },
        authz::{AuthzError, Outcome},
        frame::peek_frame_len,
        header::{response_correlation_id, API_VERSIONS_KEY},
        inflight::{
            match_response, unsolicited, Expected, InFlightRx, InFlightTx, Pending, ResponseFilter,
            TryPushError,
        },
        produce::{produce_acks, PRODUCE_KEY},
        split_frame, RequestHeader,
    },
};

#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    pub max_frame_bytes: usize,
    pub read_buffer_bytes: usize,
    /// acks=0 Produce ids remembered in case the broker answers them anyway.
    pub max_unanswered: usize,
    /// Api keys the interceptor answers itself: their ApiVersions entries are its own.
    pub served: &'static [ServedApi],
}

/// Why a direction stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEnd {
    pub reason: CloseReason,
    pub detail: Option<String>,
    /// The request direction queued a last answer (an authentication failure): the response
    /// direction must send everything queued before the connection closes.
    pub flush_responses: bool,
}

impl RelayEnd {
    fn new(reason: CloseReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: Some(detail.into()),
            flush_responses: false,
        }
    }

    fn clean(reason: CloseReason) -> Self {
        Self {
            reason,
            detail: None,
            flush_responses: false,
        }
    }
}

/// Reads more into `buf`, growing it by `chunk` when full. `Ok(0)` at end of stream.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    chunk: usize,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
    reader.read_buf(buf).await
}

/// What each request passes before it is forwarded: authentication, the policy, the filters.
pub struct Gates<'a> {
    pub auth: &'a mut SessionAuth,
    pub authz: &'a mut RequestAuthz,
    pub chain: &'a FilterChain,
    /// Audit of records, metrics, recording; its audit handle is the session's.
    pub tap: &'a SessionTap,
}

/// Client → broker. Returns when the client closes or on the first error. `bytes_in` counts what the client sent.
pub async fn requests<R, W>(
    client: &mut R,
    upstream: &mut W,
    in_flight: InFlightTx,
    gates: Gates<'_>,
    limits: RelayLimits,
    bytes_in: &mut u64,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Gates {
        auth,
        authz,
        chain,
        tap,
    } = gates;
    let mut buf = BytesMut::with_capacity(limits.read_buffer_bytes);
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        loop {
            let frame = match split_frame(&mut buf, limits.max_frame_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    // Another protocol on a Kafka port gets a name, not a framing error.
                    let seen = super::mqtt::detect::detect(&buf);
                    if !matches!(
                        seen,
                        super::mqtt::detect::Detected::Kafka
                            | super::mqtt::detect::Detected::Unknown
                    ) {
                        return RelayEnd::new(
                            CloseReason::ProtocolMismatch,
                            format!("{} on a Kafka listener ({e})", seen.name()),
                        );
                    }
                    return RelayEnd::new(CloseReason::ClientProtocolError, e.to_string());
                }
            };
            let header = match RequestHeader::parse(&frame) {
                Ok(header) => header,
                Err(e) => {
                    return RelayEnd::new(
                        CloseReason::ClientProtocolError,
                        format!("undecodable request header: {e}"),
                    )
                }
            };
            tap.raw_request(&header, &frame);
            match auth.on_request(&header, &frame).await {
                AuthStep::Pass => {}
                AuthStep::Respond(answer) => {
                    tap.request(&header, Handling::Authentication, None, None, true);
                    if let Err(end) = record(
                        &in_flight,
                        Pending::Local(answer),
                        upstream,
                        &mut batch,
                        tap,
                    )
                    .await
                    {
                        return end;
                    }
                    continue;
                }
                AuthStep::RespondThenClose(answer, reason, detail) => {
                    tap.request(&header, Handling::Authentication, None, None, true);
                    let _ = send_upstream(upstream, &mut batch, tap).await;
                    if let Err(end) = record(
                        &in_flight,
                        Pending::Local(answer),
                        upstream,
                        &mut batch,
                        tap,
                    )
                    .await
                    {
                        return end;
                    }
                    return RelayEnd {
                        flush_responses: true,
                        ..RelayEnd::new(reason, detail)
                    };
                }
                AuthStep::Close(reason, detail) => {
                    let _ = send_upstream(upstream, &mut batch, tap).await;
                    return RelayEnd::new(reason, detail);
                }
            }
            let mut handling = Handling::Allowed;
            let (verdict, rewrite) = if header.api_key == API_VERSIONS_KEY {
                if can_decode_response(header.api_version) {
                    (Verdict::Forward(frame), None)
                } else {
                    // KIP-511: a version newer than this build knows gets what a broker sends
                    // for a version newer than it knows (v0, UNSUPPORTED_VERSION, its ranges),
                    // and the client retries with one both understand.
                    let answer = unsupported_version_response(header.correlation_id);
                    (Verdict::Respond(answer), None)
                }
            } else {
                let Some(identity) = auth.identity() else {
                    // The authentication step passes nothing else before it has an identity.
                    return RelayEnd::new(
                        CloseReason::Unauthenticated,
                        "request without an identity",
                    );
                };
                match authz.authorize(identity, &header, &frame).await {
                    Ok((Outcome::Forward, then)) => (
                        chain.on_request(&header, frame),
                        ResponseFilter::new(None, then),
                    ),
                    Ok((Outcome::FilterResponse(rewrite), then)) => (
                        chain.on_request(&header, frame),
                        ResponseFilter::new(Some(rewrite), then),
                    ),
                    Ok((Outcome::Rewrite { frame, response }, then)) => {
                        handling = Handling::Partial;
                        (
                            chain.on_request(&header, frame),
                            ResponseFilter::new(response, then),
                        )
                    }
                    Ok((Outcome::Respond(answer), _)) => {
                        handling = Handling::Denied;
                        (Verdict::Respond(answer), None)
                    }
                    Ok((Outcome::Drop, _)) => {
                        handling = Handling::Denied;
                        (Verdict::Drop, None)
                    }
                    Err(e) => {
                        tap.request(&header, Handling::Denied, None, None, false);
                        let _ = send_upstream(upstream, &mut batch, tap).await;
                        return refused(e);
                    }
                }
            };
            let pending = match verdict {
                Verdict::Forward(frame) => {
                    let due = match expects_response(&header, &frame) {
                        Ok(due) => due,
                        Err(detail) => {
                            return RelayEnd::new(CloseReason::ClientProtocolError, detail)
                        }
                    };
                    let expected = Expected {
                        correlation_id: header.correlation_id,
                        api_key: header.api_key,
                        api_version: header.api_version,
                    };
                    let pending = match (due, rewrite) {
                        (false, _) => Pending::Unanswered(header.correlation_id),
                        (true, None) => Pending::Upstream(expected),
                        (true, Some(filter)) => Pending::Rewritten(expected, filter),
                    };
                    tap.request(&header, handling, Some(&frame), auth.identity(), due);
                    batch.push(frame);
                    Some(pending)
                }
                Verdict::Respond(response) => {
                    let handling = match handling {
                        Handling::Allowed => Handling::Denied,
                        other => other,
                    };
                    tap.request(&header, handling, None, auth.identity(), true);
                    Some(Pending::Local(response))
                }
                Verdict::Drop => {
                    tap.request(&header, Handling::Denied, None, auth.identity(), false);
                    None
                }
                Verdict::Close(reason) => {
                    // What was accepted before this request still goes out.
                    let _ = send_upstream(upstream, &mut batch, tap).await;
                    return RelayEnd::new(CloseReason::FilterClosed, reason);
                }
            };
            if let Some(pending) = pending {
                if let Err(end) = record(&in_flight, pending, upstream, &mut batch, tap).await {
                    return end;
                }
            }
        }
        if let Err(end) = send_upstream(upstream, &mut batch, tap).await {
            return end;
        }
        match fill(client, &mut buf, limits.read_buffer_bytes).await {
            // The session ends the upstream side (half-close, then drain).
            Ok(0) if buf.is_empty() => return RelayEnd::clean(CloseReason::ClientClosed),
            Ok(0) => {
                return RelayEnd::new(
                    CloseReason::ClientProtocolError,
                    format!(
                        "client closed in the middle of a frame ({} bytes pending)",
                        buf.len()
                    ),
                )
            }
            Ok(n) => *bytes_in += n as u64,
            // librdkafka and others reset instead of closing: a normal end, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && buf.is_empty() => {
                return RelayEnd::new(CloseReason::ClientClosed, "reset by the client")
            }
            Err(e) => return RelayEnd::new(CloseReason::ClientError, format!("read: {e}")),
        }
    }
}

/// How a request the policy layer cannot decide ends the connection. A client that sends
/// what it cannot parse broke the protocol; a key it does not know, or a refusal the protocol
/// has no error for, is the policy's refusal (the decision is in the audit trail).
fn refused(e: AuthzError) -> RelayEnd {
    let reason = match e {
        AuthzError::Malformed { .. } | AuthzError::UnsupportedVersion { .. } => {
            CloseReason::ClientProtocolError
        }
        AuthzError::UnknownApiKey(_) | AuthzError::Refused { .. } => CloseReason::PolicyRefused,
        AuthzError::Response { .. } => CloseReason::UpstreamProtocolError,
    };
    RelayEnd::new(reason, e.to_string())
}

/// Whether the broker will answer this request: only acks=0 Produce goes unanswered.
fn expects_response(header: &RequestHeader, frame: &[u8]) -> Result<bool, String> {
    if header.api_key != PRODUCE_KEY {
        return Ok(true);
    }
    produce_acks(frame, header)
        .map(|acks| acks != 0)
        .map_err(|e| format!("undecodable produce request: {e}"))
}

/// Queues the entry for the response direction. When the queue is full, the batched frames
/// are sent first: their responses are what will make room.
async fn record<W: AsyncWrite + Unpin>(
    in_flight: &InFlightTx,
    pending: Pending,
    upstream: &mut W,
    batch: &mut Vec<Bytes>,
    tap: &SessionTap,
) -> Result<(), RelayEnd> {
    let pending = match in_flight.try_push(pending) {
        Ok(()) => return Ok(()),
        Err(TryPushError::Closed(_)) => return Err(RelayEnd::clean(CloseReason::UpstreamClosed)),
        Err(TryPushError::Full(pending)) => pending,
    };
    send_upstream(upstream, batch, tap).await?;
    in_flight
        .push(pending)
        .await
        .map_err(|_| RelayEnd::clean(CloseReason::UpstreamClosed))
}

/// Sends what the request direction has batched, once every audit event of this session is
/// durable (the decisions allowing these requests among them). If the trail cannot be
/// written and the configuration says refuse, nothing is sent and the connection ends.
async fn send_upstream<W: AsyncWrite + Unpin>(
    upstream: &mut W,
    batch: &mut Vec<Bytes>,
    tap: &SessionTap,
) -> Result<(), RelayEnd> {
    if batch.is_empty() {
        return Ok(());
    }
    if let Err(e) = tap.audit().sync().await {
        batch.clear();
        return Err(RelayEnd::new(CloseReason::AuditUnavailable, e.to_string()));
    }
    if let Some(recorder) = &tap.recorder {
        recorder.to_broker(batch);
    }
    let len: usize = batch.iter().map(Bytes::len).sum();
    write_frames(upstream, batch)
        .await
        .map_err(|e| RelayEnd::new(CloseReason::UpstreamError, format!("write: {e}")))?;
    tap.metrics.bytes_to_broker(len);
    Ok(())
}

/// Largest read while a response streams through (fewer syscalls for multi-MB Fetch answers).
const MAX_STREAM_READ: usize = 1024 * 1024;

/// The rest of a response that is passing through as its bytes arrive.
struct Passing {
    remaining: usize,
    /// Forwarded to the client, or discarded (a broker's answer to an acks=0 Produce).
    forward: bool,
}

/// Broker → client. Returns when every due response was sent and the request side is done,
/// when the broker closes, or on the first error. `bytes_out` counts what the client got.
///
/// A response that nothing rewrites is forwarded as its bytes arrive (cut-through), once its
/// length and correlation id are in and checked: a multi-MB Fetch answer then crosses both
/// hops at once instead of one after the other. A response that must be rewritten (only
/// ApiVersions today) is read whole first.
pub async fn responses<R, W>(
    upstream: &mut R,
    client: &mut W,
    mut in_flight: InFlightRx,
    audit: Option<ResponseAudit>,
    tap: &SessionTap,
    limits: RelayLimits,
    bytes_out: &mut u64,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(limits.read_buffer_bytes);
    let mut batch: Vec<Bytes> = Vec::new();
    let mut due: Option<(Expected, Option<ResponseFilter>)> = None;
    let mut passing: Option<Passing> = None;
    // The length of the frame being read whole, once known.
    let mut awaiting = 0usize;
    let mut unanswered = Unanswered::new(limits.max_unanswered);
    loop {
        // Send everything that can be sent without waiting.
        loop {
            if let Some(pass) = passing.as_mut() {
                if buf.is_empty() {
                    break;
                }
                let chunk = buf.split_to(pass.remaining.min(buf.len()));
                pass.remaining -= chunk.len();
                if pass.forward {
                    batch.push(chunk.freeze());
                }
                if pass.remaining == 0 {
                    passing = None;
                }
                continue;
            }
            if due.is_none() {
                match in_flight.try_next() {
                    Some(Pending::Local(frame)) => {
                        tap.local_response(&frame);
                        batch.push(frame);
                        continue;
                    }
                    Some(Pending::Unanswered(id)) => {
                        unanswered.push(id);
                        continue;
                    }
                    Some(Pending::Upstream(expected)) => due = Some((expected, None)),
                    Some(Pending::Rewritten(expected, rewrite)) => {
                        due = Some((expected, Some(rewrite)))
                    }
                    None => {}
                }
            }
            // The next frame's length and correlation id.
            let frame_len = match peek_frame_len(&buf, limits.max_frame_bytes) {
                Ok(Some(len)) if len < RESPONSE_HEADER_MIN => {
                    return RelayEnd::new(
                        CloseReason::UpstreamProtocolError,
                        format!("response frame of {len} bytes cannot hold a correlation id"),
                    )
                }
                Ok(Some(len)) if buf.len() >= RESPONSE_HEADER_MIN => len,
                Ok(_) => break,
                Err(e) => return RelayEnd::new(CloseReason::UpstreamProtocolError, e.to_string()),
            };
            if unanswered.take_answer(&buf) {
                tracing::debug!("dropping the broker's answer to an acks=0 produce");
                passing = Some(Passing {
                    remaining: frame_len,
                    forward: false,
                });
                continue;
            }
            unanswered.clear();
            let Some((expected, rewrite)) = due.take() else {
                return RelayEnd::new(
                    CloseReason::UpstreamProtocolError,
                    unsolicited(&buf).to_string(),
                );
            };
            if let Err(e) = match_response(&expected, &buf) {
                return RelayEnd::new(CloseReason::UpstreamProtocolError, e.to_string());
            }
            if rewrite.is_none() && !needs_whole_frame(&expected) && !tap.wants_whole(&expected) {
                tap.response_streamed(&expected, frame_len);
                passing = Some(Passing {
                    remaining: frame_len,
                    forward: true,
                });
                continue;
            }
            match split_frame(&mut buf, limits.max_frame_bytes) {
                Ok(Some(frame)) => {
                    tap.raw_response(&expected, &frame);
                    let frame = match rewrite {
                        Some(filter) => {
                            let rewritten = filter.apply(frame).await;
                            if let Some(audit) = &audit {
                                audit.flush().await;
                            }
                            rewritten.map_err(|e| e.to_string())
                        }
                        None => response_frame(&expected, frame, limits.served),
                    };
                    match frame {
                        Ok(frame) => {
                            tap.response(&expected, &frame).await;
                            batch.push(frame)
                        }
                        Err(detail) => {
                            return RelayEnd::new(CloseReason::UpstreamProtocolError, detail)
                        }
                    }
                }
                Ok(None) => {
                    // Checked already; wait for the rest of it.
                    due = Some((expected, rewrite));
                    awaiting = frame_len;
                    break;
                }
                Err(e) => return RelayEnd::new(CloseReason::UpstreamProtocolError, e.to_string()),
            }
        }
        if !batch.is_empty() {
            // No answer reaches the client before the events describing it are durable.
            if let Err(e) = tap.audit().sync().await {
                return RelayEnd::new(CloseReason::AuditUnavailable, e.to_string());
            }
            if let Some(recorder) = &tap.recorder {
                recorder.to_client(&batch);
            }
            let len: usize = batch.iter().map(Bytes::len).sum();
            if let Err(e) = write_frames(client, &mut batch).await {
                return RelayEnd::new(CloseReason::ClientError, format!("write: {e}"));
            }
            tap.metrics.bytes_to_client(len);
            *bytes_out += len as u64;
        }
        // Wait for the next due entry or more bytes from the broker.
        let read = if let Some(pass) = &passing {
            let chunk = pass.remaining.clamp(
                limits.read_buffer_bytes,
                MAX_STREAM_READ.max(limits.read_buffer_bytes),
            );
            fill(upstream, &mut buf, chunk).await
        } else if due.is_some() {
            // A frame read whole: room for all of it at once, and large reads, instead of
            // growing the buffer (and copying what it holds) read by read.
            let missing = awaiting.saturating_sub(buf.len());
            if buf.capacity() - buf.len() < missing {
                buf.reserve(missing);
            }
            let chunk = missing.clamp(
                limits.read_buffer_bytes,
                MAX_STREAM_READ.max(limits.read_buffer_bytes),
            );
            fill(upstream, &mut buf, chunk).await
        } else {
            tokio::select! {
                next = in_flight.next() => {
                    match next {
                        Some(Pending::Local(frame)) => {
                            tap.local_response(&frame);
                            batch.push(frame)
                        }
                        Some(Pending::Unanswered(id)) => unanswered.push(id),
                        Some(Pending::Upstream(expected)) => due = Some((expected, None)),
                        Some(Pending::Rewritten(expected, rewrite)) => {
                            due = Some((expected, Some(rewrite)))
                        }
                        None => return RelayEnd::clean(CloseReason::ClientClosed),
                    }
                    continue;
                }
                read = fill(upstream, &mut buf, limits.read_buffer_bytes) => read,
            }
        };
        match read {
            Ok(0) if passing.is_some() => {
                return RelayEnd::new(
                    CloseReason::UpstreamClosed,
                    "broker closed in the middle of a response",
                )
            }
            Ok(0) => {
                return match due {
                    Some((expected, _)) => RelayEnd::new(
                        CloseReason::UpstreamClosed,
                        format!(
                            "broker closed with the response to correlation id {} due",
                            expected.correlation_id
                        ),
                    ),
                    None => RelayEnd::clean(CloseReason::UpstreamClosed),
                }
            }
            Ok(_) => {}
            Err(e) => return RelayEnd::new(CloseReason::UpstreamError, format!("read: {e}")),
        }
    }
}

/// Length prefix and correlation id: what must be in before a response can be matched.
const RESPONSE_HEADER_MIN: usize = 8;

/// Whether a response is rewritten, so it must be read whole before any of it is sent.
fn needs_whole_frame(expected: &Expected) -> bool {
    expected.api_key == API_VERSIONS_KEY
}

/// Correlation ids of acks=0 Produce requests since the last matched response. Kafka never
/// answers them; a broker that does answers in order, so an answer can only name one of these,
/// and once a later request's response has come none of them will be answered any more.
struct Unanswered {
    ids: std::collections::VecDeque<i32>,
    limit: usize,
}

impl Unanswered {
    fn new(limit: usize) -> Self {
        Self {
            ids: std::collections::VecDeque::new(),
            limit,
        }
    }

    fn push(&mut self, id: i32) {
        if self.ids.len() == self.limit {
            // The oldest: a broker that answers would have done so long ago.
            self.ids.pop_front();
        }
        self.ids.push_back(id);
    }

    /// Whether `frame` answers one of the unanswered requests; if so, it and every older one
    /// are settled.
    fn take_answer(&mut self, frame: &[u8]) -> bool {
        if self.ids.is_empty() {
            return false;
        }
        let Ok(id) = response_correlation_id(frame) else {
            return false;
        };
        match self.ids.iter().position(|&u| u == id) {
            Some(at) => {
                self.ids.drain(..=at);
                true
            }
            None => false,
        }
    }

    fn clear(&mut self) {
        self.ids.clear();
    }
}

/// The frame to send to the client for a broker response: the same bytes, except ApiVersions,
/// which advertises only versions this build can decode, and the interceptor's own SASL.
fn response_frame(
    expected: &Expected,
    frame: Bytes,
    served: &[ServedApi],
) -> Result<Bytes, String> {
    if expected.api_key != API_VERSIONS_KEY {
        return Ok(frame);
    }
    match rewrite_api_versions_response(&frame, expected.api_version, served) {
        Ok(Some(trimmed)) => Ok(trimmed),
        Ok(None) => Ok(frame),
        Err(e) => Err(format!("undecodable ApiVersions response: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::inflight::in_flight;

    const LIMITS: RelayLimits = RelayLimits {
        max_frame_bytes: 1024,
        read_buffer_bytes: 64,
        max_unanswered: 4,
        served: &[],
    };

    /// A tap without `records` events (the relay tests are about framing).
    fn tap() -> SessionTap {
        let (audit, _writer) =
            crate::audit::AuditLog::start(crate::audit::MemorySink::default(), 64);
        SessionTap::new(
            (1, "127.0.0.1:1".parse().unwrap()),
            audit,
            std::sync::Arc::new(crate::kafka::authz::TopicIds::new(16)),
            false,
            None,
        )
    }

    /// An anonymous session: the relay tests are about framing, not identity.
    fn anonymous() -> SessionAuth {
        let config = crate::config::IdentityConfig::default();
        let shared = std::sync::Arc::new(super::super::auth::Authenticator::new(&config).unwrap());
        let listener = super::super::auth::ListenerAuth {
            mechanisms: Vec::new(),
            allow_anonymous: true,
        };
        let (audit, _writer) =
            crate::audit::AuditLog::start(crate::audit::MemorySink::default(), 64);
        SessionAuth::new(shared, listener, audit, 1, "127.0.0.1:1".parse().unwrap())
    }

    /// A request frame with header v1: api key, version, correlation id, client id "t".
    fn request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&api_key.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&correlation_id.to_be_bytes());
        f.extend_from_slice(&1i16.to_be_bytes()); // client id length
        f.push(b't'); // client id
        f.extend_from_slice(body);
        framed(&f)
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    /// Produce v3 body start: null transactional id, then acks.
    fn produce_v3(correlation_id: i32, acks: i16) -> Vec<u8> {
        let mut body = (-1i16).to_be_bytes().to_vec(); // transactional_id: null
        body.extend_from_slice(&acks.to_be_bytes()); // acks
        body.extend_from_slice(&[0, 0, 0x75, 0x30, 0, 0, 0, 0]); // timeout, no topics
        request(0, 3, correlation_id, &body)
    }

    fn response(correlation_id: i32, body: &[u8]) -> Vec<u8> {
        let mut f = correlation_id.to_be_bytes().to_vec();
        f.extend_from_slice(body);
        framed(&f)
    }

    fn upstream(correlation_id: i32, api_key: i16, api_version: i16) -> Pending {
        Pending::Upstream(Expected {
            correlation_id,
            api_key,
            api_version,
        })
    }

    /// A policy that allows everything to everyone: the relay tests are about framing.
    const ALLOW_ALL: &str = "rules:
  - name: allow-everything
    effect: allow
    subjects:
      principals: [\"*\", ANONYMOUS]
    resources:
      topics: [\"*\"]
      groups: [\"*\"]
      transactional_ids: [\"*\"]
      cluster: true
    operations: [\"*\"]
";

    fn allow_all() -> RequestAuthz {
        let set = crate::policy::PolicySet::from_files(&[(
            std::path::PathBuf::from("all.yaml"),
            ALLOW_ALL.to_owned(),
        )])
        .expect("the allow-all policy loads");
        let policy = crate::policy::watch::PolicyHandle::fixed(set);
        let (audit, _writer) =
            crate::audit::AuditLog::start(crate::audit::MemorySink::default(), 64);
        let check = std::sync::Arc::new(super::super::access::SessionCheck::new(
            1,
            "127.0.0.1:1".parse().unwrap(),
            policy.current(),
            crate::kafka::records::RecordLimits {
                max_decompressed_bytes: 1 << 20,
                max_records_per_batch: 1000,
            },
            super::super::Masking::without_vault(),
        ));
        RequestAuthz::new(
            (1, "127.0.0.1:1".parse().unwrap()),
            check,
            std::sync::Arc::new(crate::kafka::authz::TopicIds::new(16)),
            policy,
            Default::default(),
            audit,
        )
    }

    /// Runs the request direction over `input`; returns its end, what reached the broker, and
    /// the entries it queued.
    async fn relay_requests(input: &[u8]) -> (RelayEnd, Vec<u8>, Vec<Pending>, u64) {
        let (tx, mut rx) = in_flight(16);
        let mut client = input;
        let mut broker = Vec::new();
        let mut bytes_in = 0;
        let end = requests(
            &mut client,
            &mut broker,
            tx,
            Gates {
                auth: &mut anonymous(),
                authz: &mut allow_all(),
                chain: &FilterChain::default(),
                tap: &tap(),
            },
            LIMITS,
            &mut bytes_in,
        )
        .await;
        let mut queued = Vec::new();
        while let Some(p) = rx.next().await {
            queued.push(p);
        }
        (end, broker, queued, bytes_in)
    }

    #[tokio::test]
    async fn requests_pass_byte_for_byte_and_acks0_produce_expects_nothing() {
        let mut input = request(3, 1, 1, b"\0\0\0\0"); // Metadata v1, all topics
        input.extend(produce_v3(2, 0));
        input.extend(produce_v3(3, 1));
        let (end, broker, queued, bytes_in) = relay_requests(&input).await;
        assert_eq!(end.reason, CloseReason::ClientClosed);
        assert_eq!(broker, input, "forwarded unchanged");
        assert_eq!(bytes_in, input.len() as u64);
        // Metadata answers are always filtered (topics the client may not describe, ids).
        let [Pending::Rewritten(metadata, _), rest @ ..] = &queued[..] else {
            panic!("Metadata's answer is rewritten: {queued:?}")
        };
        let Pending::Upstream(metadata_plain) = upstream(1, 3, 1) else {
            unreachable!()
        };
        assert_eq!(*metadata, metadata_plain);
        assert_eq!(rest, [Pending::Unanswered(2), upstream(3, 0, 3)]);
    }

    #[tokio::test]
    async fn api_versions_newer_than_this_build_is_answered_locally() {
        // ApiVersions v9, header v2: client id then an empty tagged-field section.
        let mut header = Vec::new();
        header.extend_from_slice(&18i16.to_be_bytes());
        header.extend_from_slice(&9i16.to_be_bytes());
        header.extend_from_slice(&77i32.to_be_bytes());
        header.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
        header.push(0); // no tagged fields
        let (end, broker, queued, _) = relay_requests(&framed(&header)).await;
        assert_eq!(end.reason, CloseReason::ClientClosed);
        assert!(broker.is_empty(), "not forwarded");
        let [Pending::Local(answer)] = &queued[..] else {
            panic!("one local answer, got {queued:?}")
        };
        assert_eq!(&answer[4..8], &77i32.to_be_bytes(), "correlation id");
        assert_eq!(&answer[8..10], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
    }

    #[tokio::test]
    async fn bad_client_input_ends_the_direction_with_a_protocol_error() {
        let oversized = framed(&[0; 2000]);
        let mut truncated = request(3, 1, 1, b"\0\0\0\0");
        truncated.truncate(truncated.len() - 2);
        let garbage = b"\xff\xff\xff\xffGET / HTTP/1.1\r\n".to_vec();
        let two_gib = [0x7f, 0xff, 0xff, 0xff, 0, 0];
        for input in [oversized, truncated, garbage, two_gib.to_vec()] {
            let (end, broker, queued, _) = relay_requests(&input).await;
            assert_eq!(end.reason, CloseReason::ClientProtocolError, "{end:?}");
            assert!(end.detail.is_some());
            assert!(broker.is_empty() && queued.is_empty());
        }
    }

    /// Runs the response direction with `due` queued (and the request side still open when
    /// `keep_open`); returns its end and what reached the client.
    async fn relay_responses(
        due: Vec<Pending>,
        broker: &[u8],
        keep_open: bool,
    ) -> (RelayEnd, Vec<u8>) {
        let (tx, rx) = in_flight(16);
        for p in due {
            tx.push(p).await.unwrap();
        }
        let _open = keep_open.then_some(tx);
        let mut upstream = broker;
        let mut client = Vec::new();
        let mut bytes_out = 0;
        let end = responses(
            &mut upstream,
            &mut client,
            rx,
            None,
            &tap(),
            LIMITS,
            &mut bytes_out,
        )
        .await;
        assert_eq!(bytes_out, client.len() as u64);
        (end, client)
    }

    #[tokio::test]
    async fn responses_keep_request_order_with_local_answers_in_their_place() {
        let local = response(2, b"local");
        let mut broker = response(1, b"first");
        broker.extend(response(3, b"third"));
        let due = vec![
            upstream(1, 3, 1),
            Pending::Local(Bytes::from(local.clone())),
            upstream(3, 3, 1),
        ];
        let (end, client) = relay_responses(due, &broker, false).await;
        let mut expected = response(1, b"first");
        expected.extend(local);
        expected.extend(response(3, b"third"));
        assert_eq!(client, expected);
        assert!(matches!(
            end.reason,
            CloseReason::ClientClosed | CloseReason::UpstreamClosed
        ));
    }

    #[tokio::test]
    async fn answers_to_acks0_produce_are_dropped_whether_or_not_they_come() {
        // Kafka: no answer for 2 and 4.
        let mut kafka = response(1, b"a");
        kafka.extend(response(3, b"c"));
        // A broker that answers acks=0 anyway (tansu 0.6).
        let mut chatty = response(1, b"a");
        chatty.extend(response(2, b"b"));
        chatty.extend(response(3, b"c"));
        chatty.extend(response(4, b"d"));
        for broker in [kafka, chatty] {
            let due = vec![
                upstream(1, 3, 1),
                Pending::Unanswered(2),
                upstream(3, 3, 1),
                Pending::Unanswered(4),
            ];
            let (end, client) = relay_responses(due, &broker, false).await;
            let mut expected = response(1, b"a");
            expected.extend(response(3, b"c"));
            assert_eq!(client, expected);
            assert_ne!(end.reason, CloseReason::UpstreamProtocolError, "{end:?}");
        }
    }

    #[tokio::test]
    async fn only_acks0_produce_never_fills_the_queue() {
        // More acks=0 requests than the queue holds, with no answers at all: the response side
        // keeps draining the markers, so the request side never blocks.
        let (tx, rx) = in_flight(2);
        // A broker that stays connected and never says anything.
        let (mut upstream, _broker) = tokio::io::duplex(64);
        let mut client = Vec::new();
        let mut bytes_out = 0;
        let tap = tap();
        let responses = responses(
            &mut upstream,
            &mut client,
            rx,
            None,
            &tap,
            LIMITS,
            &mut bytes_out,
        );
        let requests = async move {
            for id in 0..100 {
                tx.push(Pending::Unanswered(id)).await.unwrap();
            }
        };
        // The request side finishes (then, with the queue closed, so does the response side).
        let (end, ()) = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(responses, requests)
        })
        .await
        .expect("no deadlock");
        assert_eq!(end.reason, CloseReason::ClientClosed);
        assert!(client.is_empty());
    }

    #[tokio::test]
    async fn a_large_response_reaches_the_client_before_the_broker_has_sent_all_of_it() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (tx, rx) = in_flight(4);
        tx.push(upstream(1, 1, 16)).await.unwrap(); // Fetch v16
        let (mut up_rd, mut broker) = tokio::io::duplex(1 << 16);
        let (mut client_wr, mut client) = tokio::io::duplex(1 << 16);
        let answer = response(1, &[7; 20_000]);
        let relay = tokio::spawn(async move {
            let mut bytes_out = 0;
            let limits = RelayLimits {
                max_frame_bytes: 1 << 20,
                ..LIMITS
            };
            let end = responses(
                &mut up_rd,
                &mut client_wr,
                rx,
                None,
                &tap(),
                limits,
                &mut bytes_out,
            )
            .await;
            (end, bytes_out)
        });
        broker.write_all(&answer[..5_000]).await.unwrap();
        let mut first = vec![0; 5_000];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_exact(&mut first),
        )
        .await
        .expect("the first part is forwarded while the rest is still to come")
        .unwrap();
        assert_eq!(first, answer[..5_000]);
        broker.write_all(&answer[5_000..]).await.unwrap();
        let mut rest = vec![0; answer.len() - 5_000];
        client.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, answer[5_000..]);
        drop(tx);
        let (end, bytes_out) = relay.await.unwrap();
        assert_eq!(end.reason, CloseReason::ClientClosed);
        assert_eq!(bytes_out, answer.len() as u64);
    }

    #[tokio::test]
    async fn api_versions_answers_are_read_whole_before_anything_is_sent() {
        // A response that is not a valid ApiVersions body cannot be rewritten: nothing of it
        // may reach the client, so it must have been held back whole.
        let (end, client) =
            relay_responses(vec![upstream(4, 18, 3)], &response(4, &[0xff; 300]), true).await;
        assert_eq!(end.reason, CloseReason::UpstreamProtocolError, "{end:?}");
        assert!(client.is_empty(), "{} bytes leaked", client.len());
    }

    #[tokio::test]
    async fn malformed_or_cut_responses_end_the_direction() {
        // A frame too short to hold a correlation id (length 2), followed by more bytes.
        let (end, _) = relay_responses(
            vec![upstream(1, 3, 1)],
            &[0, 0, 0, 2, 0, 1, 0, 0, 0, 0],
            true,
        )
        .await;
        assert_eq!(end.reason, CloseReason::UpstreamProtocolError);
        // The broker closes after half a response.
        let answer = response(1, &[1; 500]);
        let (end, client) = relay_responses(vec![upstream(1, 3, 1)], &answer[..300], true).await;
        assert_eq!(end.reason, CloseReason::UpstreamClosed);
        assert!(end.detail.unwrap().contains("middle of a response"));
        assert_eq!(client, answer[..300]);
    }

    #[tokio::test]
    async fn a_broker_answering_out_of_turn_is_a_protocol_error() {
        let (end, client) = relay_responses(vec![upstream(1, 3, 1)], &response(2, b""), true).await;
        assert_eq!(end.reason, CloseReason::UpstreamProtocolError);
        assert!(client.is_empty());
        let (end, _) = relay_responses(vec![], &response(5, b""), true).await;
        assert_eq!(end.reason, CloseReason::UpstreamProtocolError);
        assert!(end.detail.unwrap().contains('5'));
    }

    #[tokio::test]
    async fn a_broker_closing_with_a_response_due_says_which() {
        let (end, _) = relay_responses(vec![upstream(9, 3, 1)], &[], true).await;
        assert_eq!(end.reason, CloseReason::UpstreamClosed);
        assert!(end.detail.unwrap().contains("correlation id 9"));
    }
}
