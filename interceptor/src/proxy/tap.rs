//! What one connection's relay tells the rest of the interceptor about its traffic: the
//! `records` audit events (what a producer got acknowledged, what a consumer was sent), the
//! request metrics, and the session recording.
//!
//! Both directions share one tap. The request side notes every request that gets an answer,
//! in order; the response side takes the notes back in the same order (Kafka answers in
//! order), so a produce acknowledgement meets the hashes of the records that were forwarded,
//! and every answer its request's arrival time.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use kafka_protocol::messages::ProduceResponse;

use crate::{
    audit::{chain::hex, AuditEvent, AuditLog, PartitionRecords},
    kafka::{
        authz::{response::decode_response, TopicIds},
        inflight::Expected,
        records::batches,
        transform::{
            fetch_records, produce_records, share_fetch_records, RecordsField, TopicRef, FETCH,
            PRODUCE, SHARE_FETCH,
        },
        RequestHeader,
    },
    metrics::SessionMetrics,
    recording::Recorder,
};

use super::auth::Identity;

/// How the interceptor handled a request, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Forwarded as sent (or with an answer filtered).
    Allowed,
    /// Forwarded with a refused part taken out (the answer merges the refusal back).
    Partial,
    /// Answered by the interceptor with an error, or dropped.
    Denied,
    /// Part of authentication (SASL), answered by the interceptor.
    Authentication,
}

impl Handling {
    pub fn as_str(self) -> &'static str {
        match self {
            Handling::Allowed => "allow",
            Handling::Partial => "partial",
            Handling::Denied => "deny",
            Handling::Authentication => "auth",
        }
    }
}

/// Who is asking: stamped on `records` events.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<str>,
    pub client_id: Option<String>,
}

struct Note {
    correlation_id: i32,
    api_key: i16,
    handling: Handling,
    received: Instant,
    /// For records events: the caller, and for a produce the forwarded partitions.
    records: Option<(Caller, Vec<Forwarded>)>,
}

/// One partition of a forwarded produce request.
struct Forwarded {
    topic: String,
    partition: i32,
    records: u64,
    bytes: u64,
    digest: [u8; 32],
}

pub struct SessionTap {
    session: u64,
    client: SocketAddr,
    audit: AuditLog,
    topic_ids: Arc<TopicIds>,
    /// Whether `records` events are written.
    records: bool,
    notes: Mutex<VecDeque<Note>>,
    pub metrics: SessionMetrics,
    pub recorder: Option<Recorder>,
}

impl SessionTap {
    pub fn new(
        (session, client): (u64, SocketAddr),
        audit: AuditLog,
        topic_ids: Arc<TopicIds>,
        records: bool,
        recorder: Option<Recorder>,
    ) -> Self {
        Self {
            session,
            client,
            audit,
            topic_ids,
            records,
            notes: Mutex::new(VecDeque::new()),
            metrics: SessionMetrics::new(),
            recorder,
        }
    }

    /// The session's audit handle: waiting on it waits for this session's events.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Whether a response must be read whole (to be described in a `records` event).
    pub fn wants_whole(&self, expected: &Expected) -> bool {
        self.records && matches!(expected.api_key, PRODUCE | FETCH | SHARE_FETCH)
    }

    /// A request the interceptor is going to answer or forward. `forwarded` is the frame as
    /// it goes to the broker (after masking), when it goes there; `answered` says whether a
    /// response is due at all.
    pub fn request(
        &self,
        header: &RequestHeader,
        handling: Handling,
        forwarded: Option<&Bytes>,
        identity: Option<&Identity>,
        answered: bool,
    ) {
        self.metrics.request(header.api_key, handling);
        if let Some(recorder) = &self.recorder {
            if let Some(identity) = identity {
                recorder.identity(&identity.principal);
            }
            if forwarded.is_none() {
                recorder.refused_request(header, handling);
            }
        }
        if !answered {
            return;
        }
        let caller = |identity: &Identity| Caller {
            principal: Arc::from(identity.principal.as_str()),
            client_id: header
                .client_id
                .as_deref()
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        };
        let records = match (self.records, forwarded, identity) {
            (true, Some(frame), Some(identity)) if header.api_key == PRODUCE => {
                Some((caller(identity), self.forwarded_partitions(header, frame)))
            }
            (true, Some(_), Some(identity)) if matches!(header.api_key, FETCH | SHARE_FETCH) => {
                Some((caller(identity), Vec::new()))
            }
            _ => None,
        };
        let note = Note {
            correlation_id: header.correlation_id,
            api_key: header.api_key,
            handling,
            received: Instant::now(),
            records,
        };
        if let Ok(mut notes) = self.notes.lock() {
            notes.push_back(note);
        }
    }

    fn forwarded_partitions(&self, header: &RequestHeader, frame: &Bytes) -> Vec<Forwarded> {
        let Ok(fields) = produce_records(frame, header) else {
            // The policy layer parsed it already; a frame it passed but this cannot read
            // is described without partitions rather than not at all.
            return Vec::new();
        };
        fields
            .iter()
            .map(|field| {
                let summary = summarize(frame, field);
                Forwarded {
                    topic: self.topic_name(field.topic),
                    partition: field.partition,
                    records: summary.records,
                    bytes: summary.bytes,
                    digest: summary.digest,
                }
            })
            .collect()
    }

    fn topic_name(&self, topic: TopicRef<'_>) -> String {
        match topic {
            TopicRef::Name(name) => name.to_owned(),
            TopicRef::Id(id) => self
                .topic_ids
                .name(&id)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("id:{}", uuid::Uuid::from_bytes(id))),
        }
    }

    /// The answer to `expected` is about to be sent: describes it (a `records` event, queued
    /// for the writer; the caller syncs before sending), observes its latency, records it.
    pub async fn response(&self, expected: &Expected, frame: &Bytes) {
        let note = self.take_note(expected.correlation_id);
        if let Some(note) = &note {
            self.metrics
                .response(note.api_key, note.handling, note.received, frame.len());
        }
        let Some((caller, forwarded)) = note.and_then(|n| n.records) else {
            return;
        };
        let described = match expected.api_key {
            PRODUCE => self.produce_ack(expected, frame, forwarded),
            FETCH => fetch_records(frame, expected.api_version)
                .map(|fields| self.sent(frame, &fields))
                .map_err(|e| e.to_string()),
            SHARE_FETCH => share_fetch_records(frame, expected.api_version)
                .map(|fields| self.sent(frame, &fields))
                .map_err(|e| e.to_string()),
            _ => return,
        };
        let partitions = match described {
            Ok(partitions) => partitions,
            Err(e) => {
                tracing::warn!(
                    session = self.session,
                    "cannot describe the answer to request {}: {e}",
                    expected.correlation_id
                );
                Vec::new()
            }
        };
        if partitions.is_empty() && expected.api_key != PRODUCE {
            // An empty fetch (long poll timed out) tells an auditor nothing.
            return;
        }
        let (api, stage) = match expected.api_key {
            PRODUCE => ("Produce", "produce"),
            FETCH => ("Fetch", "fetch"),
            _ => ("ShareFetch", "fetch"),
        };
        self.audit
            .emit(AuditEvent::Records {
                session: self.session,
                client: self.client,
                principal: caller.principal.to_string(),
                client_id: caller.client_id,
                api,
                correlation_id: expected.correlation_id,
                stage,
                partitions,
            })
            .await;
    }

    /// The answer to `expected` streams through as it arrives (nothing describes it).
    pub fn response_streamed(&self, expected: &Expected, frame_len: usize) {
        if let Some(note) = self.take_note(expected.correlation_id) {
            self.metrics
                .response(note.api_key, note.handling, note.received, frame_len);
        }
    }

    /// An answer the interceptor made itself, about to be sent.
    pub fn local_response(&self, frame: &Bytes) {
        let Some(correlation_id) = frame
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_be_bytes)
        else {
            return;
        };
        if let Some(note) = self.take_note(correlation_id) {
            self.metrics
                .response(note.api_key, note.handling, note.received, frame.len());
        }
    }

    fn take_note(&self, correlation_id: i32) -> Option<Note> {
        let mut notes = self.notes.lock().ok()?;
        // Answers come in request order; a note in front of the one answered is for a
        // request whose answer never came (dropped): let it go.
        while let Some(note) = notes.pop_front() {
            if note.correlation_id == correlation_id {
                return Some(note);
            }
        }
        None
    }

    fn produce_ack(
        &self,
        expected: &Expected,
        frame: &Bytes,
        forwarded: Vec<Forwarded>,
    ) -> Result<Vec<PartitionRecords>, String> {
        let (_, body): (i32, ProduceResponse) =
            decode_response(PRODUCE, expected.api_version, frame, "Produce")
                .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for topic in &body.responses {
            let name = if topic.name.is_empty() {
                self.topic_name(TopicRef::Id(*topic.topic_id.as_bytes()))
            } else {
                topic.name.to_string()
            };
            for p in &topic.partition_responses {
                let sent = forwarded
                    .iter()
                    .find(|f| f.topic == name && f.partition == p.index);
                let records = sent.map_or(0, |f| f.records);
                let acked = p.error_code == 0 && p.base_offset >= 0;
                out.push(PartitionRecords {
                    topic: name.clone(),
                    partition: p.index,
                    error_code: p.error_code,
                    first_offset: acked.then_some(p.base_offset),
                    last_offset: (acked && records > 0)
                        .then(|| p.base_offset + i64::try_from(records).unwrap_or(0) - 1),
                    records,
                    bytes: sent.map_or(0, |f| f.bytes),
                    digest: sent.map(|f| payload_digest(&f.digest)).unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    /// A request frame as read from the client, before any decision (for the recording).
    pub fn raw_request(&self, header: &RequestHeader, frame: &Bytes) {
        if let Some(recorder) = &self.recorder {
            recorder.raw_request(header, frame);
        }
    }

    /// A broker response read whole, before any rewrite (for the recording).
    pub fn raw_response(&self, expected: &Expected, frame: &Bytes) {
        if let Some(recorder) = &self.recorder {
            recorder.raw_response(expected, frame);
        }
    }

    /// The partitions of a fetch answer that carry records.
    fn sent(&self, frame: &[u8], fields: &[RecordsField<'_>]) -> Vec<PartitionRecords> {
        fields
            .iter()
            .filter(|f| !f.records.is_empty())
            .map(|field| {
                let summary = summarize(frame, field);
                PartitionRecords {
                    topic: self.topic_name(field.topic),
                    partition: field.partition,
                    error_code: 0,
                    first_offset: summary.first_offset,
                    last_offset: summary.last_offset,
                    records: summary.records,
                    bytes: summary.bytes,
                    digest: payload_digest(&summary.digest),
                }
            })
            .collect()
    }
}

struct Summary {
    records: u64,
    bytes: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
    /// BLAKE3 of the record batches.
    digest: [u8; 32],
}

/// How a records digest is written: the algorithm, then the hex (`b3sum` computes the same).
fn payload_digest(digest: &[u8; 32]) -> String {
    format!("blake3:{}", hex(digest))
}

/// Counts, offsets and hash of one partition's record batches, from the batch headers only.
fn summarize(frame: &[u8], field: &RecordsField<'_>) -> Summary {
    let data = frame.get(field.records.clone()).unwrap_or_default();
    let mut summary = Summary {
        records: 0,
        bytes: data.len() as u64,
        first_offset: None,
        last_offset: None,
        digest: *blake3::hash(data).as_bytes(),
    };
    // A fetched partition may end with a partial batch (the broker cuts at the size limit):
    // the complete batches before it are what the consumer can read.
    for batch in batches(data).map_while(Result::ok) {
        if batch.control {
            continue;
        }
        summary.records += u64::try_from(batch.record_count).unwrap_or(0);
        summary.first_offset.get_or_insert(batch.base_offset);
        summary.last_offset = Some(batch.base_offset + i64::from(batch.last_offset_delta));
    }
    summary
}
