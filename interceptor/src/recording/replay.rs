//! `interceptor replay`: a recording's decoded timeline, as text or JSON lines, optionally
//! with the session's audit events interleaved by correlation id.
//!
//! Requests are decoded from their headers; Produce and Fetch requests and responses down to
//! topics, partitions, record counts and offsets (with `records`, keys and values too). Other
//! apis show name, version, correlation id and size. The file is read as a stream, one
//! record at a time; reading stops at the first corrupt or missing byte and says where.

use std::{
    collections::{HashMap, VecDeque},
    io::{self, BufRead, Read, Write},
    ops::ControlFlow,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    error::ResponseError,
    messages::{FetchRequest, MetadataResponse, ProduceResponse},
    protocol::Decodable,
};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use super::format::{
    self, handling_name, Elided, ElidedFrame, Entry, FormatError, Header, Kind, Note, RawKey,
    ReadError, ReadProblem, Record, RequestFields, MAX_RECORD_BYTES,
};
use crate::kafka::{
    authz::{response::decode_response, table::api_name},
    records::{batches, scan, RecordLimits},
    transform::{fetch_records, produce_records, RecordsField, TopicRef, FETCH, PRODUCE},
    RequestHeader,
};

const METADATA: i16 = 3;
/// Requests remembered while their answers are due (acks=0 produce never gets one).
const MAX_DUE: usize = 100_000;
/// Audit events of one session kept for interleaving (a few hundred bytes each, parsed).
const MAX_AUDIT_EVENTS: usize = 100_000;
/// An audit line longer than this is skipped (events are a few hundred bytes).
const MAX_AUDIT_LINE: usize = 1024 * 1024;
/// Topic ids remembered from recorded Metadata answers.
const MAX_TOPIC_IDS: usize = 100_000;
/// Bounds on decoding records for `--records`.
const RECORD_LIMITS: RecordLimits = RecordLimits {
    max_decompressed_bytes: 64 * 1024 * 1024,
    max_records_per_batch: 1_000_000,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub struct Options {
    pub format: Format,
    /// Interleave the session's events from this audit directory.
    pub audit: Option<PathBuf>,
    /// Open raw records with this key.
    pub raw_key: Option<RawKey>,
    /// Show the keys and values of produced and fetched records.
    pub records: bool,
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: FormatError },
    #[error("audit directory {path}: {source}")]
    Audit { path: PathBuf, source: io::Error },
    #[error("writing the timeline: {0}")]
    Output(#[from] io::Error),
}

/// How reading went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The end record was read: the session ended and everything was written.
    pub ended: bool,
    /// Where reading stopped early.
    pub error: Option<ReadError>,
}

/// One timeline entry: what, and when (µs since the session started).
#[derive(Debug, Serialize)]
pub struct Line {
    pub t_us: u64,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    Session {
        session_uid: String,
        session: u64,
        client: String,
        started_unix_us: u64,
        software: String,
        compressed: bool,
        raw_records: bool,
    },
    Identity {
        principal: String,
    },
    Request(Frame),
    Response(Frame),
    /// One MQTT packet: `to_broker` or `to_client`.
    Mqtt {
        direction: &'static str,
        #[serde(flatten)]
        packet: MqttPacket,
    },
    Refused {
        #[serde(flatten)]
        request: Frame,
        handling: &'static str,
    },
    Elided {
        #[serde(flatten)]
        frame: Frame,
        direction: &'static str,
        reason: &'static str,
    },
    RawRequest(Raw),
    RawResponse(Raw),
    Note {
        note: &'static str,
        text: String,
    },
    Audit {
        event: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        correlation_id: Option<i64>,
        summary: String,
        audit: Value,
    },
    End {
        records: u64,
        dropped_frames: u64,
        dropped_bytes: u64,
    },
    Stopped {
        index: u64,
        offset: u64,
        truncated: bool,
        problem: String,
    },
    Unknown {
        record_kind: u8,
    },
}

/// An MQTT packet, decoded as far as this build can.
#[derive(Debug, Default, Serialize)]
pub struct MqttPacket {
    pub packet: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reason_codes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Text>,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
}

/// A request or response, decoded as far as this build can.
#[derive(Debug, Default, Serialize)]
pub struct Frame {
    pub api: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<i16>,
    pub correlation_id: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub size: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<Partition>,
    /// Why the body could not be decoded further.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<RecordValue>>,
}

#[derive(Debug, Serialize)]
pub struct RecordValue {
    pub offset_delta: i32,
    pub key: Text,
    pub value: Text,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, Text)>,
}

/// Bytes shown as text when they are UTF-8, else as base64.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Text {
    Null,
    Utf8(String),
    Base64 { base64: String },
}

impl Text {
    pub(super) fn of(bytes: Option<&[u8]>) -> Text {
        match bytes {
            None => Text::Null,
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => Text::Utf8(s.to_owned()),
                Err(_) => Text::Base64 {
                    base64: base64::engine::general_purpose::STANDARD.encode(b),
                },
            },
        }
    }

    pub(super) fn show(&self) -> String {
        match self {
            Text::Null => "null".into(),
            Text::Utf8(s) => format!("{s:?}"),
            Text::Base64 { base64 } => format!("base64:{base64}"),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Raw {
    pub sealed_size: u64,
    /// Opened with the key: the frame decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<Frame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Writes the timeline of the recording at `path` to `out`.
pub fn replay(path: &Path, options: &Options, out: &mut dyn Write) -> Result<Outcome, ReplayError> {
    let (header, reader) = format::open(path).map_err(|source| ReplayError::Open {
        path: path.to_owned(),
        source,
    })?;
    let audit = match &options.audit {
        Some(dir) => load_audit(dir, &header).map_err(|source| ReplayError::Audit {
            path: dir.clone(),
            source,
        })?,
        None => AuditIndex::default(),
    };
    let mut timeline = Timeline {
        options,
        header: &header,
        audit,
        due: VecDeque::new(),
        stream: BytesMut::new(),
        topic_ids: HashMap::new(),
        mqtt: super::replay_mqtt::Decoder::default(),
        out,
    };
    // First, whatever the audit events' times say.
    timeline.write(
        0,
        What::Session {
            session_uid: header.session_uid(),
            session: header.session,
            client: header.client.clone(),
            started_unix_us: header.started_unix_us,
            software: header.software.clone(),
            compressed: header.zstd,
            raw_records: header.has_raw(),
        },
    )?;
    if timeline.audit.truncated {
        let note = What::Note {
            note: "audit_truncated",
            text: format!(
                "the session has more than {MAX_AUDIT_EVENTS} audit events; only the first are \
                 interleaved"
            ),
        };
        timeline.write(0, note)?;
    }
    let mut outcome = Outcome {
        ended: false,
        error: None,
    };
    let mut last_t = 0;
    for entry in reader {
        match entry {
            Ok(entry) => {
                last_t = entry.t_us;
                if matches!(entry.record, Record::End { .. }) {
                    outcome.ended = true;
                }
                timeline.entry(entry)?;
            }
            Err(e) => {
                let what = What::Stopped {
                    index: e.index,
                    offset: e.offset,
                    truncated: e.problem == ReadProblem::Truncated,
                    problem: e.to_string(),
                };
                timeline.emit(last_t, what)?;
                outcome.error = Some(e);
                break;
            }
        }
    }
    if !outcome.ended && outcome.error.is_none() {
        let note = What::Note {
            note: "no_end",
            text: "the recording has no end record: the session was still open, or the daemon \
                   stopped without ending it"
                .into(),
        };
        timeline.emit(last_t, note)?;
    }
    timeline.rest_of_audit(last_t)?;
    Ok(outcome)
}

struct Timeline<'a> {
    options: &'a Options,
    header: &'a Header,
    audit: AuditIndex,
    /// Requests whose answers are due: correlation id, api key, version.
    due: VecDeque<(i32, i16, i16)>,
    /// The response stream not yet split into frames.
    stream: BytesMut,
    topic_ids: HashMap<[u8; 16], String>,
    /// MQTT sessions: the version, from the recorded CONNECT.
    mqtt: super::replay_mqtt::Decoder,
    out: &'a mut dyn Write,
}

impl Timeline<'_> {
    fn emit(&mut self, t_us: u64, what: What) -> io::Result<()> {
        let at = self.header.started_unix_us.saturating_add(t_us);
        while let Some(event) = self.audit.timed.front() {
            if event.0 > at {
                break;
            }
            if let Some((_, event)) = self.audit.timed.pop_front() {
                self.write(t_us, audit_entry(event))?;
            }
        }
        self.write(t_us, what)
    }

    fn write(&mut self, t_us: u64, what: What) -> io::Result<()> {
        let line = Line { t_us, what };
        match self.options.format {
            Format::Json => {
                serde_json::to_writer(&mut *self.out, &line)?;
                self.out.write_all(b"\n")
            }
            Format::Text => writeln!(self.out, "{}", text_line(&line)),
        }
    }

    fn entry(&mut self, entry: Entry) -> io::Result<()> {
        let t = entry.t_us;
        if self.header.mqtt {
            match &entry.record {
                Record::Request(frame) => {
                    let packet = self.mqtt.packet(frame, self.options.records);
                    return self.emit(
                        t,
                        What::Mqtt {
                            direction: "to_broker",
                            packet,
                        },
                    );
                }
                Record::Response(frame) => {
                    let packet = self.mqtt.packet(frame, self.options.records);
                    return self.emit(
                        t,
                        What::Mqtt {
                            direction: "to_client",
                            packet,
                        },
                    );
                }
                _ => {}
            }
        }
        match entry.record {
            Record::Request(frame) => {
                let decoded = self.request(&frame);
                if let (Some(key), Some(version)) = (decoded.api_key, decoded.api_version) {
                    self.remember(decoded.correlation_id, key, version);
                }
                let id = decoded.correlation_id;
                self.emit(t, What::Request(decoded))?;
                self.attached(t, id, false)
            }
            Record::Response(bytes) => self.response_bytes(t, &bytes),
            Record::Refused {
                fields,
                handling,
                frame_len,
            } => {
                self.remember(fields.correlation_id, fields.api_key, fields.api_version);
                let id = fields.correlation_id;
                let request = request_fields(&fields, frame_len);
                let what = What::Refused {
                    request,
                    handling: handling_name(handling),
                };
                self.emit(t, what)?;
                self.attached(t, id, false)
            }
            Record::Identity(principal) => self.emit(t, What::Identity { principal }),
            Record::Note(note) => {
                if note == Note::ResponseGap {
                    self.stream.clear();
                }
                let (name, text) = note_text(&note);
                self.emit(t, What::Note { note: name, text })
            }
            Record::Elided(elided) => self.elided(t, elided),
            Record::RawRequest(sealed) => {
                let raw = self.raw(entry.index, Kind::RawRequest, &sealed);
                self.emit(t, What::RawRequest(raw))
            }
            Record::RawResponse(sealed) => {
                let raw = self.raw(entry.index, Kind::RawResponse, &sealed);
                self.emit(t, What::RawResponse(raw))
            }
            Record::End {
                records,
                dropped_frames,
                dropped_bytes,
            } => self.emit(
                t,
                What::End {
                    records,
                    dropped_frames,
                    dropped_bytes,
                },
            ),
            Record::Unknown(kind) => self.emit(t, What::Unknown { record_kind: kind }),
        }
    }

    fn remember(&mut self, correlation_id: i32, api_key: i16, api_version: i16) {
        if self.due.len() == MAX_DUE {
            self.due.pop_front();
        }
        self.due.push_back((correlation_id, api_key, api_version));
    }

    /// The request a response answers. Answers come in request order, so requests queued
    /// before it were never answered (acks=0, dropped); an answer to a request the recording
    /// lost (queue full) matches nothing and leaves the queue as it is.
    fn answered(&mut self, correlation_id: i32) -> Option<(i16, i16)> {
        let at = self.due.iter().position(|d| d.0 == correlation_id)?;
        let (_, key, version) = self.due.drain(..=at).next_back()?;
        Some((key, version))
    }

    fn peek_due(&self, correlation_id: i32) -> Option<(i16, i16)> {
        self.due
            .iter()
            .find(|d| d.0 == correlation_id)
            .map(|d| (d.1, d.2))
    }

    /// Appends response bytes and emits every frame completed.
    fn response_bytes(&mut self, t: u64, bytes: &[u8]) -> io::Result<()> {
        self.stream.extend_from_slice(bytes);
        loop {
            let Some(len) = self
                .stream
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 4)
            else {
                return Ok(());
            };
            if !(8..=MAX_RECORD_BYTES).contains(&len) {
                self.stream.clear();
                let note = What::Note {
                    note: "bad_response_frame",
                    text: format!("a response frame of {len} bytes cannot be right; the rest of this piece is skipped"),
                };
                return self.emit(t, note);
            }
            if self.stream.len() < len {
                return Ok(());
            }
            let frame = self.stream.split_to(len).freeze();
            let decoded = self.response(&frame, true);
            let id = decoded.correlation_id;
            self.emit(t, What::Response(decoded))?;
            self.attached(t, id, true)?;
        }
    }

    fn elided(&mut self, t: u64, elided: Elided) -> io::Result<()> {
        let Elided {
            reason,
            frame_len,
            what,
        } = elided;
        let (frame, direction, id, response) = match what {
            ElidedFrame::Request(fields) => {
                self.remember(fields.correlation_id, fields.api_key, fields.api_version);
                let id = fields.correlation_id;
                (request_fields(&fields, frame_len), "request", id, false)
            }
            ElidedFrame::Response { correlation_id } => {
                // The stream resumes after this frame.
                self.stream.clear();
                let (api_key, api_version) = self.answered(correlation_id).unzip();
                let frame = Frame {
                    api: api_key.map_or("?", api_name),
                    api_key,
                    api_version,
                    correlation_id,
                    size: frame_len,
                    ..Frame::default()
                };
                (frame, "response", correlation_id, true)
            }
        };
        let what = What::Elided {
            frame,
            direction,
            reason: reason.as_str(),
        };
        self.emit(t, what)?;
        self.attached(t, id, response)
    }

    fn raw(&mut self, index: u64, kind: Kind, sealed: &[u8]) -> Raw {
        let mut raw = Raw {
            sealed_size: sealed.len() as u64,
            ..Raw::default()
        };
        let Some(key) = &self.options.raw_key else {
            return raw;
        };
        match key.open(&self.header.file_id, index, kind, sealed) {
            Ok(plain) => {
                let frame = Bytes::from(plain);
                raw.frame = Some(match kind {
                    Kind::RawRequest => self.request(&frame),
                    _ => self.response(&frame, false),
                });
            }
            Err(e) => raw.error = Some(e.to_string()),
        }
        raw
    }

    fn request(&mut self, frame: &Bytes) -> Frame {
        let header = match RequestHeader::parse(frame) {
            Ok(header) => header,
            Err(e) => {
                return Frame {
                    api: "?",
                    size: frame.len() as u64,
                    decode_error: Some(format!("request header: {e}")),
                    ..Frame::default()
                }
            }
        };
        let mut out = Frame {
            api: api_name(header.api_key),
            api_key: Some(header.api_key),
            api_version: Some(header.api_version),
            correlation_id: header.correlation_id,
            client_id: header
                .client_id
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned()),
            size: frame.len() as u64,
            ..Frame::default()
        };
        match header.api_key {
            PRODUCE => match produce_records(frame, &header) {
                Ok(fields) => {
                    out.partitions = fields
                        .iter()
                        .map(|f| self.records_partition(frame, f, true))
                        .collect()
                }
                Err(e) => out.decode_error = Some(e.to_string()),
            },
            FETCH => {
                let mut body = frame.slice(header.body_offset.min(frame.len())..);
                match FetchRequest::decode(&mut body, header.api_version) {
                    Ok(fetch) => {
                        for topic in &fetch.topics {
                            let name = if topic.topic.is_empty() {
                                self.topic_name(TopicRef::Id(*topic.topic_id.as_bytes()))
                            } else {
                                topic.topic.to_string()
                            };
                            for p in &topic.partitions {
                                out.partitions.push(Partition {
                                    topic: name.clone(),
                                    partition: p.partition,
                                    fetch_offset: Some(p.fetch_offset),
                                    ..Partition::default()
                                });
                            }
                        }
                    }
                    Err(e) => out.decode_error = Some(format!("fetch request: {e}")),
                }
            }
            _ => {}
        }
        out
    }

    /// `settle`: this is the response the client got (it takes its request off the due list);
    /// otherwise a raw copy, decoded against the same request.
    fn response(&mut self, frame: &Bytes, settle: bool) -> Frame {
        let correlation_id = frame
            .get(4..8)
            .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let request = if settle {
            self.answered(correlation_id)
        } else {
            self.peek_due(correlation_id)
        };
        let mut out = Frame {
            api: request.map_or("?", |r| api_name(r.0)),
            api_key: request.map(|r| r.0),
            api_version: request.map(|r| r.1),
            correlation_id,
            size: frame.len() as u64,
            ..Frame::default()
        };
        let Some((api_key, version)) = request else {
            out.decode_error = Some("its request is not in the recording".into());
            return out;
        };
        match api_key {
            PRODUCE => {
                match decode_response::<ProduceResponse>(PRODUCE, version, frame, "Produce") {
                    Ok((_, body)) => {
                        for topic in &body.responses {
                            let name = if topic.name.is_empty() {
                                self.topic_name(TopicRef::Id(*topic.topic_id.as_bytes()))
                            } else {
                                topic.name.to_string()
                            };
                            for p in &topic.partition_responses {
                                out.partitions.push(Partition {
                                    topic: name.clone(),
                                    partition: p.index,
                                    error_code: Some(p.error_code),
                                    base_offset: (p.error_code == 0).then_some(p.base_offset),
                                    ..Partition::default()
                                });
                            }
                        }
                    }
                    Err(e) => out.decode_error = Some(e.to_string()),
                }
            }
            FETCH => match fetch_records(frame, version) {
                Ok(fields) => {
                    out.partitions = fields
                        .iter()
                        .map(|f| self.records_partition(frame, f, false))
                        .collect()
                }
                Err(e) => out.decode_error = Some(e.to_string()),
            },
            METADATA => {
                if let Ok((_, body)) =
                    decode_response::<MetadataResponse>(METADATA, version, frame, "Metadata")
                {
                    for topic in &body.topics {
                        if let (Some(name), false) = (&topic.name, topic.topic_id.is_nil()) {
                            if self.topic_ids.len() < MAX_TOPIC_IDS {
                                self.topic_ids
                                    .insert(*topic.topic_id.as_bytes(), name.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }

    fn topic_name(&self, topic: TopicRef<'_>) -> String {
        match topic {
            TopicRef::Name(name) => name.to_owned(),
            TopicRef::Id(id) => self
                .topic_ids
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("id:{}", uuid::Uuid::from_bytes(id))),
        }
    }

    /// Counts (and with `records`, the records) of one partition's records field.
    fn records_partition(
        &self,
        frame: &[u8],
        field: &RecordsField<'_>,
        produce: bool,
    ) -> Partition {
        let data = frame.get(field.records.clone()).unwrap_or_default();
        let mut p = Partition {
            topic: self.topic_name(field.topic),
            partition: field.partition,
            bytes: Some(data.len() as u64),
            ..Partition::default()
        };
        let mut records = 0u64;
        // A fetched partition may end in a partial batch; the complete ones are counted.
        for batch in batches(data).map_while(Result::ok) {
            if batch.control {
                continue;
            }
            records += u64::try_from(batch.record_count).unwrap_or(0);
            if !produce {
                p.first_offset.get_or_insert(batch.base_offset);
                p.last_offset = Some(batch.base_offset + i64::from(batch.last_offset_delta));
            }
        }
        p.records = Some(records);
        if self.options.records {
            let mut values = Vec::new();
            let mut scratch = Vec::new();
            // An error ends the list where the records stop being readable.
            let _ = scan(data, &RECORD_LIMITS, &mut scratch, |_, r| {
                values.push(RecordValue {
                    offset_delta: r.offset_delta,
                    key: Text::of(r.key),
                    value: Text::of(r.value),
                    headers: r
                        .headers()
                        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), Text::of(v)))
                        .collect(),
                });
                ControlFlow::<()>::Continue(())
            });
            p.values = Some(values);
        }
        p
    }

    /// The audit events of `correlation_id` that belong with its request (decisions,
    /// produce-side transforms) or with its response (records, fetch-side transforms).
    fn attached(&mut self, t: u64, correlation_id: i32, response: bool) -> io::Result<()> {
        let events = self.audit.take(correlation_id, response);
        for event in events {
            self.write(t, audit_entry(event))?;
        }
        Ok(())
    }

    /// Audit events no recorded frame took (their frames were dropped or elided).
    fn rest_of_audit(&mut self, t: u64) -> io::Result<()> {
        let mut rest: Vec<Value> = self.audit.timed.drain(..).map(|(_, v)| v).collect();
        for (_, events) in self.audit.by_correlation.drain() {
            rest.extend(events.into_iter().map(|(_, v)| v));
        }
        rest.sort_by_key(|v| v["seq"].as_u64().unwrap_or(0));
        for event in rest {
            self.write(t, audit_entry(event))?;
        }
        Ok(())
    }
}

fn request_fields(fields: &RequestFields, frame_len: u64) -> Frame {
    Frame {
        api: api_name(fields.api_key),
        api_key: Some(fields.api_key),
        api_version: Some(fields.api_version),
        correlation_id: fields.correlation_id,
        client_id: fields.client_id.clone(),
        size: frame_len,
        ..Frame::default()
    }
}

fn note_text(note: &Note) -> (&'static str, String) {
    match note {
        Note::Truncated { cap } => (
            "truncated",
            format!("the session reached max_session_bytes ({cap}): frames from here on are recorded by their headers only"),
        ),
        Note::Dropped { frames, bytes } => (
            "dropped",
            format!("{frames} frame(s), {bytes} bytes dropped so far: the recording queue was full"),
        ),
        Note::ResponseGap => (
            "response_gap",
            "part of the response stream was dropped; the response under way is incomplete".into(),
        ),
        Note::ResponseFramingLost => (
            "response_framing_lost",
            "the response stream could not be split into frames any more; no response is recorded after this".into(),
        ),
        Note::DaemonStopped => ("daemon_stopped", "the daemon stopped while the session was open".into()),
        Note::WriteFailed => ("write_failed", "the recording could not be written any further".into()),
        Note::Unknown(code) => ("unknown", format!("note {code} (unknown to this build)")),
    }
}

/// The session's audit events: by correlation id, and the rest by time.
#[derive(Default)]
struct AuditIndex {
    /// (after the response?, event), in trail order.
    by_correlation: HashMap<i64, VecDeque<(bool, Value)>>,
    /// (Unix µs, event), in trail order.
    timed: VecDeque<(u64, Value)>,
    /// The session has more events than are kept.
    truncated: bool,
}

impl AuditIndex {
    fn take(&mut self, correlation_id: i32, response: bool) -> Vec<Value> {
        let key = i64::from(correlation_id);
        let Some(events) = self.by_correlation.get_mut(&key) else {
            return Vec::new();
        };
        // This request's events come first; a later request reusing the id has its own
        // after them. Take events up to the first one of the other side.
        let mut out = Vec::new();
        while let Some((after, _)) = events.front() {
            if *after != response {
                // Request-side events left over when a response is printed belonged to a
                // request that was not recorded: they go with this one anyway.
                if response {
                    if let Some((_, v)) = events.pop_front() {
                        out.push(v);
                    }
                    continue;
                }
                break;
            }
            if let Some((_, v)) = events.pop_front() {
                out.push(v);
            }
        }
        if events.is_empty() {
            self.by_correlation.remove(&key);
        }
        out
    }
}

/// Reads the events of `header`'s session from the audit files in `dir`.
fn load_audit(dir: &Path, header: &Header) -> io::Result<AuditIndex> {
    let uid = header.session_uid();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let mut index = AuditIndex::default();
    let mut kept = 0usize;
    for file in files {
        let mut reader = io::BufReader::new(std::fs::File::open(&file)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_AUDIT_LINE as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if line.len() > MAX_AUDIT_LINE {
                if !line.ends_with(b"\n") {
                    skip_line(&mut reader)?;
                }
                continue;
            }
            // Cheap filter before parsing: the uid appears verbatim in the session's lines.
            if memchr::memmem::find(&line, uid.as_bytes()).is_none()
                && memchr::memmem::find(&line, header.instance.as_bytes()).is_none()
            {
                continue;
            }
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if !belongs(&event, &uid, header) {
                continue;
            }
            if kept == MAX_AUDIT_EVENTS {
                index.truncated = true;
                break;
            }
            kept += 1;
            let name = event["event"].as_str().unwrap_or_default();
            match event["correlation_id"].as_i64() {
                Some(id) => {
                    let after_response = match name {
                        "records" => true,
                        "transform" => event["stage"].as_str() == Some("fetch"),
                        _ => false,
                    };
                    index
                        .by_correlation
                        .entry(id)
                        .or_default()
                        .push_back((after_response, event));
                }
                None => {
                    // Audit times are whole milliseconds, cut down: an event of the same
                    // millisecond as a frame most likely came after it (the connection's
                    // opening excepted, which comes before everything).
                    let ms = event["time"].as_u64().unwrap_or(0);
                    let us = if name == "connection_open" {
                        ms.saturating_mul(1000)
                    } else {
                        ms.saturating_mul(1000).saturating_add(999)
                    };
                    index.timed.push_back((us, event));
                }
            }
        }
    }
    Ok(index)
}

/// Consumes the rest of the current line.
fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match memchr::memchr(b'\n', buf) {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

fn belongs(event: &Value, uid: &str, header: &Header) -> bool {
    if event["actor"]["session"]["uid"].as_str() == Some(uid) {
        return true;
    }
    event["session"].as_u64() == Some(header.session)
        && event["metadata"]["product"]["uid"].as_str() == Some(header.instance.as_str())
}

fn audit_entry(event: Value) -> What {
    let name = event["event"].as_str().unwrap_or("?").to_owned();
    What::Audit {
        correlation_id: event["correlation_id"].as_i64(),
        summary: audit_summary(&name, &event),
        event: name,
        audit: event,
    }
}

/// One line saying what an audit event says.
fn audit_summary(name: &str, e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
    match name {
        "decision" => {
            let rule = e["rule"].as_str().map_or_else(
                || "(no rule: default deny)".to_owned(),
                |r| format!("rule {r}"),
            );
            format!(
                "decision {} {} {} {} {rule}",
                s("decision"),
                s("operation"),
                s("resource_type"),
                s("resource")
            )
        }
        "transform" => format!(
            "transform {} {}[{}] {} {} record(s){}",
            s("stage"),
            s("topic"),
            e["partition"],
            s("outcome"),
            e["records"],
            e["detail"]
                .as_str()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        "records" => {
            let parts: Vec<String> = e["partitions"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let offsets =
                                match (p["first_offset"].as_i64(), p["last_offset"].as_i64()) {
                                    (Some(a), Some(b)) => format!(" offsets {a}-{b}"),
                                    (Some(a), None) => format!(" offset {a}"),
                                    _ => String::new(),
                                };
                            format!(
                                "{}[{}] {} record(s){offsets}",
                                p["topic"].as_str().unwrap_or("?"),
                                p["partition"],
                                p["records"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("records {} {}", s("stage"), parts.join(", "))
        }
        "authentication" => format!(
            "authentication {} {} {}",
            s("mechanism"),
            s("outcome"),
            s("principal")
        ),
        "request_refused" => format!("request refused: {} {}", s("reason"), s("detail")),
        "connection_open" => format!("connection open {} → {}", s("client"), s("upstream")),
        "connection_close" => format!(
            "connection closed: {}{}",
            s("reason"),
            e["detail"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ),
        other => other.to_owned(),
    }
}

fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("error {code}"),
    }
}

fn partitions_text(partitions: &[Partition], request: bool) -> String {
    let parts: Vec<String> = partitions
        .iter()
        .map(|p| {
            let mut s = format!("{}[{}]", p.topic, p.partition);
            if let Some(offset) = p.fetch_offset {
                s.push_str(&format!(" from offset {offset}"));
            }
            if let Some(code) = p.error_code.filter(|&c| c != 0) {
                s.push_str(&format!(" {}", error_name(code)));
            }
            if let Some(offset) = p.base_offset {
                s.push_str(&format!(" offset {offset}"));
            }
            if let (Some(records), Some(bytes)) = (p.records, p.bytes) {
                if request || records > 0 {
                    s.push_str(&format!(" {records} record(s) {bytes} B"));
                }
            }
            if let (Some(a), Some(b)) = (p.first_offset, p.last_offset) {
                s.push_str(&format!(" offsets {a}-{b}"));
            }
            if let Some(values) = &p.values {
                for v in values {
                    s.push_str(&format!(
                        "\n              +{} key={} value={}",
                        v.offset_delta,
                        v.key.show(),
                        v.value.show()
                    ));
                }
            }
            s
        })
        .collect();
    parts.join(", ")
}

fn frame_text(f: &Frame, request: bool) -> String {
    let mut s = match f.api_version {
        Some(v) => format!("{} v{v} #{}", f.api, f.correlation_id),
        None => format!("{} #{}", f.api, f.correlation_id),
    };
    if let Some(client) = &f.client_id {
        s.push_str(&format!(" client={client}"));
    }
    s.push_str(&format!(" {} B", f.size));
    if !f.partitions.is_empty() {
        s.push_str(if request { " topics: " } else { " " });
        s.push_str(&partitions_text(&f.partitions, request));
    }
    if let Some(e) = &f.decode_error {
        s.push_str(&format!(" (not decoded: {e})"));
    }
    s
}

fn text_line(line: &Line) -> String {
    let time = format!("+{:.3}ms", line.t_us as f64 / 1000.0);
    let body = match &line.what {
        What::Session {
            session_uid,
            client,
            started_unix_us,
            software,
            compressed,
            raw_records,
            ..
        } => {
            let started = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(*started_unix_us) * 1000,
            )
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| started_unix_us.to_string());
            return format!(
                "session {session_uid} client {client} started {started} ({software}; {}; raw records: {})",
                if *compressed { "zstd" } else { "uncompressed" },
                if *raw_records { "sealed" } else { "none" }
            );
        }
        What::Identity { principal } => format!("✓ identity {principal}"),
        What::Request(f) => format!("→ {}", frame_text(f, true)),
        What::Mqtt { direction, packet } => format!(
            "{} {}",
            if *direction == "to_broker" { "→" } else { "←" },
            super::replay_mqtt::text(packet)
        ),
        What::Response(f) => format!("← {}", frame_text(f, false)),
        What::Refused { request, handling } => {
            if *handling == "auth" {
                format!("· {} answered by the interceptor (authentication)", frame_text(request, true))
            } else {
                format!("✗ {} refused ({handling})", frame_text(request, true))
            }
        }
        What::Elided {
            frame,
            direction,
            reason,
        } => format!(
            "{} {} not recorded ({reason})",
            if *direction == "request" { "→…" } else { "←…" },
            frame_text(frame, *direction == "request")
        ),
        What::RawRequest(raw) | What::RawResponse(raw) => {
            let direction = if matches!(line.what, What::RawRequest(_)) {
                "raw request (before masking)"
            } else {
                "raw response (before rewriting)"
            };
            match (&raw.frame, &raw.error) {
                (Some(f), _) => format!(
                    "⚿ {direction}: {}",
                    frame_text(f, matches!(line.what, What::RawRequest(_)))
                ),
                (None, Some(e)) => format!("⚿ {direction}: {e}"),
                (None, None) => format!("⚿ {direction}: sealed, {} B (give --raw-key-file to open)", raw.sealed_size),
            }
        }
        What::Note { text, .. } => format!("! {text}"),
        What::Audit { summary, .. } => format!("    audit: {summary}"),
        What::End {
            records,
            dropped_frames,
            dropped_bytes,
        } => format!(
            "end of session: {records} record(s); {dropped_frames} frame(s), {dropped_bytes} bytes dropped"
        ),
        What::Stopped { problem, truncated, .. } => format!(
            "!! the recording {} at {problem}",
            if *truncated { "is cut short" } else { "is unreadable" }
        ),
        What::Unknown { record_kind } => format!("? record of kind {record_kind} (unknown to this build)"),
    };
    format!("{time:>12} {body}")
}
