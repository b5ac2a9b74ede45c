//! The two directions of one Kafka connection.
//!
//! Requests: read from the client, split frames, decode each header, ask the filter chain,
//! record what response is due, forward. Responses: for each entry due in order, either send
//! the interceptor's own response or read the broker's, check its correlation id, and send it.
//!
//! Backpressure: each direction writes what it has before it reads more, so a slow reader on
//! one side stops reading on the other; the in-flight queue bounds pipelined requests. Memory
//! per direction is the read buffer, which grows only to the frame being read (at most
//! `max_frame_bytes`).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::write::write_frames;
use crate::{
    audit::CloseReason,
    filter::{FilterChain, Verdict},
    kafka::{
        api_versions::trim_api_versions_response,
        inflight::{
            match_response, unsolicited, Expected, InFlightRx, InFlightTx, Pending, TryPushError,
        },
        produce::produce_acks,
        split_frame, RequestHeader,
    },
};

const API_PRODUCE: i16 = 0;
const API_VERSIONS: i16 = 18;

#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    pub max_frame_bytes: usize,
    pub read_buffer_bytes: usize,
}

/// Why a direction stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEnd {
    pub reason: CloseReason,
    pub detail: Option<String>,
}

impl RelayEnd {
    fn new(reason: CloseReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: Some(detail.into()),
        }
    }

    fn clean(reason: CloseReason) -> Self {
        Self {
            reason,
            detail: None,
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

/// Client → broker. Returns when the client closes (after half-closing the upstream) or on
/// the first error. `bytes_in` counts what the client sent.
pub async fn requests<R, W>(
    client: &mut R,
    upstream: &mut W,
    in_flight: InFlightTx,
    chain: &FilterChain,
    limits: RelayLimits,
    bytes_in: &mut u64,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(limits.read_buffer_bytes);
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        loop {
            let frame = match split_frame(&mut buf, limits.max_frame_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return RelayEnd::new(CloseReason::ClientProtocolError, e.to_string()),
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
            let pending = match chain.on_request(&header, frame) {
                Verdict::Forward(frame) => {
                    let due = match expects_response(&header, &frame) {
                        Ok(due) => due,
                        Err(detail) => {
                            return RelayEnd::new(CloseReason::ClientProtocolError, detail)
                        }
                    };
                    let pending = due.then_some(Pending::Upstream(Expected {
                        correlation_id: header.correlation_id,
                        api_key: header.api_key,
                        api_version: header.api_version,
                    }));
                    batch.push(frame);
                    pending
                }
                Verdict::Respond(response) => Some(Pending::Local(response)),
                Verdict::Drop => None,
                Verdict::Close(reason) => {
                    // What was accepted before this request still goes out.
                    let _ = write_frames(upstream, &mut batch).await;
                    return RelayEnd::new(CloseReason::FilterClosed, reason);
                }
            };
            if let Some(pending) = pending {
                if let Err(end) = record(&in_flight, pending, upstream, &mut batch).await {
                    return end;
                }
            }
        }
        if !batch.is_empty() {
            if let Err(e) = write_frames(upstream, &mut batch).await {
                return RelayEnd::new(CloseReason::UpstreamError, format!("write: {e}"));
            }
        }
        match fill(client, &mut buf, limits.read_buffer_bytes).await {
            Ok(0) if buf.is_empty() => {
                let _ = upstream.shutdown().await;
                return RelayEnd::clean(CloseReason::ClientClosed);
            }
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

/// Whether the broker will answer this request: only acks=0 Produce goes unanswered.
fn expects_response(header: &RequestHeader, frame: &[u8]) -> Result<bool, String> {
    if header.api_key != API_PRODUCE {
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
) -> Result<(), RelayEnd> {
    let pending = match in_flight.try_push(pending) {
        Ok(()) => return Ok(()),
        Err(TryPushError::Closed(_)) => return Err(RelayEnd::clean(CloseReason::UpstreamClosed)),
        Err(TryPushError::Full(pending)) => pending,
    };
    if let Err(e) = write_frames(upstream, batch).await {
        return Err(RelayEnd::new(
            CloseReason::UpstreamError,
            format!("write: {e}"),
        ));
    }
    in_flight
        .push(pending)
        .await
        .map_err(|_| RelayEnd::clean(CloseReason::UpstreamClosed))
}

/// Broker → client. Returns when every due response was sent and the request side is done,
/// when the broker closes, or on the first error. `bytes_out` counts what the client got.
pub async fn responses<R, W>(
    upstream: &mut R,
    client: &mut W,
    mut in_flight: InFlightRx,
    limits: RelayLimits,
    bytes_out: &mut u64,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(limits.read_buffer_bytes);
    let mut batch: Vec<Bytes> = Vec::new();
    let mut due: Option<Expected> = None;
    loop {
        // Send everything that can be sent without waiting.
        loop {
            if due.is_none() {
                match in_flight.try_next() {
                    Some(Pending::Local(frame)) => {
                        batch.push(frame);
                        continue;
                    }
                    Some(Pending::Upstream(expected)) => due = Some(expected),
                    None => {}
                }
            }
            let frame = match split_frame(&mut buf, limits.max_frame_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return RelayEnd::new(CloseReason::UpstreamProtocolError, e.to_string()),
            };
            let Some(expected) = due.take() else {
                return RelayEnd::new(
                    CloseReason::UpstreamProtocolError,
                    unsolicited(&frame).to_string(),
                );
            };
            if let Err(e) = match_response(&expected, &frame) {
                return RelayEnd::new(CloseReason::UpstreamProtocolError, e.to_string());
            }
            match response_frame(&expected, frame) {
                Ok(frame) => batch.push(frame),
                Err(detail) => return RelayEnd::new(CloseReason::UpstreamProtocolError, detail),
            }
        }
        if !batch.is_empty() {
            let len: usize = batch.iter().map(Bytes::len).sum();
            if let Err(e) = write_frames(client, &mut batch).await {
                return RelayEnd::new(CloseReason::ClientError, format!("write: {e}"));
            }
            *bytes_out += len as u64;
        }
        // Wait for the next due entry or more bytes from the broker.
        let read = if due.is_some() {
            fill(upstream, &mut buf, limits.read_buffer_bytes).await
        } else {
            tokio::select! {
                next = in_flight.next() => {
                    match next {
                        Some(Pending::Local(frame)) => batch.push(frame),
                        Some(Pending::Upstream(expected)) => due = Some(expected),
                        None => return RelayEnd::clean(CloseReason::ClientClosed),
                    }
                    continue;
                }
                read = fill(upstream, &mut buf, limits.read_buffer_bytes) => read,
            }
        };
        match read {
            Ok(0) => {
                return match due {
                    Some(expected) => RelayEnd::new(
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

/// The frame to send to the client for a broker response: the same bytes, except ApiVersions,
/// which advertises only versions this build can decode.
fn response_frame(expected: &Expected, frame: Bytes) -> Result<Bytes, String> {
    if expected.api_key != API_VERSIONS {
        return Ok(frame);
    }
    match trim_api_versions_response(&frame, expected.api_version) {
        Ok(Some(trimmed)) => Ok(trimmed),
        Ok(None) => Ok(frame),
        Err(e) => Err(format!("undecodable ApiVersions response: {e}")),
    }
}
