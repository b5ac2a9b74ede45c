//! The recording file: `<dir>/<instance>-<session>.irec`.
//!
//! ```text
//! header (never compressed, so `file`/`xxd` and a reader can identify it):
//!   magic "IREC" | version u8 (1) | flags u8 (bit 0: body is zstd; bit 1: MQTT) | rest_len
//!   u16 BE | rest
//!   rest: file_id [16] | raw key id [8] (zeros: no raw records) | started, Unix µs u64 BE
//!         | session u64 BE | instance (u8 len + UTF-8) | client address (u8 len + UTF-8)
//!         | interceptor version (u8 len + UTF-8)
//! body (zstd: a concatenation of zstd frames, i.e. one zstd stream):
//!   record*: kind u8 | µs since the session started (varint) | len (varint) | payload [len]
//! ```
//!
//! Varints are unsigned LEB128. Every record has a length, so a reader skips kinds it does
//! not know. A record's index (0, 1, ... in file order) is part of what a raw record's
//! encryption binds, with the file id, so raw records cannot be moved within or between
//! files. Payloads by kind are documented on [`Kind`] and in `docs/recording.md`.

use std::{
    fmt,
    io::{self, Read},
    path::Path,
};

use bytes::Bytes;
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

pub const MAGIC: &[u8; 4] = b"IREC";
pub const VERSION: u8 = 1;
pub const FLAG_ZSTD: u8 = 1;
/// The session spoke MQTT: requests are the packets sent to the broker, responses the packets
/// sent to the client, each record one whole packet.
pub const FLAG_MQTT: u8 = 2;
/// File name extension.
pub const EXTENSION: &str = "irec";
/// The largest record written or read. A frame larger than this (the daemon's frame limit
/// can be raised up to 2 GiB) is recorded by its header only; a reader refuses to allocate
/// more for one record.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// The header after its fixed part: a few short strings.
const MAX_HEADER_REST: usize = 4096;
/// XChaCha20-Poly1305: 24-byte nonce, 16-byte tag.
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// Record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A whole request frame (length prefix included) as written to the broker, after masking.
    Request = 1,
    /// Bytes written to the client, in order: whole response frames or consecutive pieces of
    /// one. Concatenated they are the response stream, re-framed by the length prefixes.
    Response = 2,
    /// A request the interceptor did not forward: api key i16, api version i16, correlation
    /// id i32, handling u8, frame length varint, client id (varint length + 1, 0 = null).
    Refused = 3,
    /// The session's principal (UTF-8), when it is first known and when it changes.
    Identity = 4,
    /// Something the reader must know about the recording itself ([`Note`]).
    Note = 5,
    /// A frame recorded by its header only ([`Elided`]).
    Elided = 6,
    /// The client's request as it arrived, before masking: sealed (see [`RawKey`]).
    RawRequest = 7,
    /// The broker's response as it arrived, before masking or reveal: sealed.
    RawResponse = 8,
    /// The session ended: records before this one varint, frames dropped varint, bytes
    /// dropped varint.
    End = 9,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Refused,
            4 => Kind::Identity,
            5 => Kind::Note,
            6 => Kind::Elided,
            7 => Kind::RawRequest,
            8 => Kind::RawResponse,
            9 => Kind::End,
            _ => return None,
        })
    }
}

/// Notes: note code u8, then its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The session reached `max_session_bytes` (varint): from here on frames are recorded
    /// by their headers only.
    Truncated { cap: u64 },
    /// Totals so far of what the queue to the writer had no room for (varints: frames,
    /// bytes). The relay never waits for the recording; what did not fit is lost.
    Dropped { frames: u64, bytes: u64 },
    /// Part of the response stream was dropped: a partly recorded response frame before
    /// this note is incomplete; the stream resumes at the next frame.
    ResponseGap,
    /// The response stream could no longer be split into frames; no response is recorded
    /// after this note.
    ResponseFramingLost,
    /// The daemon stopped while the session was open.
    DaemonStopped,
    /// The writer could not keep up with the file system and stopped recording this session.
    WriteFailed,
    /// A code this build does not know.
    Unknown(u8),
}

impl Note {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Note::Truncated { cap } => {
                out.push(1);
                put_varint(out, *cap);
            }
            Note::Dropped { frames, bytes } => {
                out.push(2);
                put_varint(out, *frames);
                put_varint(out, *bytes);
            }
            Note::ResponseGap => out.push(3),
            Note::ResponseFramingLost => out.push(4),
            Note::DaemonStopped => out.push(5),
            Note::WriteFailed => out.push(6),
            Note::Unknown(code) => out.push(*code),
        }
    }

    fn decode(p: &mut Cursor<'_>) -> Result<Note, String> {
        Ok(match p.u8("note code")? {
            1 => Note::Truncated {
                cap: p.varint("cap")?,
            },
            2 => Note::Dropped {
                frames: p.varint("dropped frames")?,
                bytes: p.varint("dropped bytes")?,
            },
            3 => Note::ResponseGap,
            4 => Note::ResponseFramingLost,
            5 => Note::DaemonStopped,
            6 => Note::WriteFailed,
            code => Note::Unknown(code),
        })
    }
}

/// Why a frame was recorded by its header only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElidedReason {
    /// Authentication (SASL tokens, passwords, SCRAM proofs) or other credentials.
    Secret = 1,
    /// Past `max_session_bytes`.
    Cap = 2,
    /// Larger than [`MAX_RECORD_BYTES`].
    TooLarge = 3,
}

impl ElidedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ElidedReason::Secret => "credentials",
            ElidedReason::Cap => "session cap",
            ElidedReason::TooLarge => "too large",
        }
    }
}

/// A frame recorded by its header only: direction u8 (0 request, 1 response), reason u8,
/// frame length varint, then for a request the fields of [`RequestFields`], for a response
/// the correlation id i32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elided {
    pub reason: ElidedReason,
    pub frame_len: u64,
    pub what: ElidedFrame,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElidedFrame {
    Request(RequestFields),
    Response { correlation_id: i32 },
}

/// A request header as recorded for refused and elided requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestFields {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

impl RequestFields {
    /// From a request frame (length prefix included); what cannot be read stays 0/None.
    pub fn of_frame(frame: &[u8]) -> RequestFields {
        let i16_at = |at: usize| {
            frame
                .get(at..at + 2)
                .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]))
        };
        let correlation_id = frame
            .get(8..12)
            .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let client_id = usize::try_from(i16_at(12)).ok().and_then(|len| {
            frame
                .get(14..14 + len)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        });
        RequestFields {
            api_key: i16_at(4),
            api_version: i16_at(6),
            correlation_id,
            client_id,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.api_key.to_be_bytes());
        out.extend_from_slice(&self.api_version.to_be_bytes());
        out.extend_from_slice(&self.correlation_id.to_be_bytes());
        put_client_id(out, self.client_id.as_deref());
    }

    fn decode(p: &mut Cursor<'_>) -> Result<RequestFields, String> {
        let api_key = p.i16("api key")?;
        let api_version = p.i16("api version")?;
        let correlation_id = p.i32("correlation id")?;
        let client_id = match p.varint("client id length")? {
            0 => None,
            n => {
                let len = usize::try_from(n - 1).map_err(|_| "client id length")?;
                Some(String::from_utf8_lossy(p.take(len, "client id")?).into_owned())
            }
        };
        Ok(RequestFields {
            api_key,
            api_version,
            correlation_id,
            client_id,
        })
    }
}

/// Varint length + 1 (0 for null), then the bytes.
fn put_client_id(out: &mut Vec<u8>, client_id: Option<&str>) {
    match client_id {
        None => put_varint(out, 0),
        Some(id) => {
            put_varint(out, id.len() as u64 + 1);
            out.extend_from_slice(id.as_bytes());
        }
    }
}

/// How the interceptor handled a refused request (the tap's [`Handling`] as a byte).
///
/// [`Handling`]: crate::proxy::tap::Handling
pub fn handling_name(code: u8) -> &'static str {
    match code {
        0 => "allow",
        1 => "partial",
        2 => "deny",
        3 => "auth",
        _ => "unknown",
    }
}

/// The fixed facts of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub zstd: bool,
    /// An MQTT session (else Kafka).
    pub mqtt: bool,
    pub file_id: [u8; 16],
    /// Which raw key sealed the raw records; zeros when there are none.
    pub key_id: [u8; 8],
    pub started_unix_us: u64,
    pub session: u64,
    pub instance: String,
    pub client: String,
    pub software: String,
}

impl Header {
    /// `<instance>-<session>`: the audit trail's `actor.session.uid`.
    pub fn session_uid(&self) -> String {
        format!("{}-{}", self.instance, self.session)
    }

    pub fn has_raw(&self) -> bool {
        self.key_id != [0; 8]
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut rest = Vec::with_capacity(128);
        rest.extend_from_slice(&self.file_id);
        rest.extend_from_slice(&self.key_id);
        rest.extend_from_slice(&self.started_unix_us.to_be_bytes());
        rest.extend_from_slice(&self.session.to_be_bytes());
        for s in [&self.instance, &self.client, &self.software] {
            let s = truncate_utf8(s, 255);
            rest.push(s.len() as u8);
            rest.extend_from_slice(s.as_bytes());
        }
        let mut out = Vec::with_capacity(8 + rest.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let mut flags = 0;
        if self.zstd {
            flags |= FLAG_ZSTD;
        }
        if self.mqtt {
            flags |= FLAG_MQTT;
        }
        out.push(flags);
        out.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        out.extend_from_slice(&rest);
        out
    }

    /// Reads the header from the start of `r`.
    pub fn read(r: &mut impl Read) -> Result<Header, FormatError> {
        let mut fixed = [0u8; 8];
        read_exact_or(r, &mut fixed, "the header")?;
        if &fixed[..4] != MAGIC {
            return Err(FormatError::NotARecording);
        }
        if fixed[4] != VERSION {
            return Err(FormatError::Version(fixed[4]));
        }
        let zstd = fixed[5] & FLAG_ZSTD != 0;
        let mqtt = fixed[5] & FLAG_MQTT != 0;
        let rest_len = usize::from(u16::from_be_bytes([fixed[6], fixed[7]]));
        if rest_len > MAX_HEADER_REST {
            return Err(FormatError::Header(format!("{rest_len} header bytes")));
        }
        let mut rest = vec![0u8; rest_len];
        read_exact_or(r, &mut rest, "the header")?;
        let mut p = Cursor::new(&rest);
        let bad = FormatError::Header;
        let file_id: [u8; 16] = p.array("file id").map_err(bad)?;
        let key_id: [u8; 8] = p.array("key id").map_err(bad)?;
        let started_unix_us = p.u64("start time").map_err(bad)?;
        let session = p.u64("session").map_err(bad)?;
        let mut string = |what| -> Result<String, FormatError> {
            let len = usize::from(p.u8(what).map_err(bad)?);
            Ok(String::from_utf8_lossy(p.take(len, what).map_err(bad)?).into_owned())
        };
        let instance = string("instance")?;
        let client = string("client")?;
        let software = string("software version")?;
        Ok(Header {
            zstd,
            mqtt,
            file_id,
            key_id,
            started_unix_us,
            session,
            instance,
            client,
            software,
        })
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), FormatError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FormatError::Header(format!("file ends inside {what}")),
        _ => FormatError::Io(e.to_string()),
    })
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a session recording (no IREC magic)")]
    NotARecording,
    #[error("recording format version {0} is not one this build reads (it reads {VERSION})")]
    Version(u8),
    #[error("bad recording header: {0}")]
    Header(String),
    #[error("{0}")]
    Io(String),
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position of the record in the file, from 0.
    pub index: u64,
    /// Microseconds since the session started.
    pub t_us: u64,
    pub record: Record,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Request(Bytes),
    Response(Bytes),
    Refused {
        fields: RequestFields,
        handling: u8,
        frame_len: u64,
    },
    Identity(String),
    Note(Note),
    Elided(Elided),
    /// Sealed: nonce and ciphertext (see [`RawKey::open`]).
    RawRequest(Bytes),
    RawResponse(Bytes),
    End {
        records: u64,
        dropped_frames: u64,
        dropped_bytes: u64,
    },
    Unknown(u8),
}

impl Record {
    pub fn kind_byte(&self) -> u8 {
        match self {
            Record::Request(_) => Kind::Request as u8,
            Record::Response(_) => Kind::Response as u8,
            Record::Refused { .. } => Kind::Refused as u8,
            Record::Identity(_) => Kind::Identity as u8,
            Record::Note(_) => Kind::Note as u8,
            Record::Elided(_) => Kind::Elided as u8,
            Record::RawRequest(_) => Kind::RawRequest as u8,
            Record::RawResponse(_) => Kind::RawResponse as u8,
            Record::End { .. } => Kind::End as u8,
            Record::Unknown(k) => *k,
        }
    }

    /// The payload of the small kinds (everything but frames and raw records, whose payload
    /// is their bytes as they are).
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Record::Request(b)
            | Record::Response(b)
            | Record::RawRequest(b)
            | Record::RawResponse(b) => out.extend_from_slice(b),
            Record::Refused {
                fields,
                handling,
                frame_len,
            } => {
                out.extend_from_slice(&fields.api_key.to_be_bytes());
                out.extend_from_slice(&fields.api_version.to_be_bytes());
                out.extend_from_slice(&fields.correlation_id.to_be_bytes());
                out.push(*handling);
                put_varint(out, *frame_len);
                put_client_id(out, fields.client_id.as_deref());
            }
            Record::Identity(p) => out.extend_from_slice(p.as_bytes()),
            Record::Note(n) => n.encode(out),
            Record::Elided(e) => {
                out.push(match e.what {
                    ElidedFrame::Request(_) => 0,
                    ElidedFrame::Response { .. } => 1,
                });
                out.push(e.reason as u8);
                put_varint(out, e.frame_len);
                match &e.what {
                    ElidedFrame::Request(fields) => fields.encode(out),
                    ElidedFrame::Response { correlation_id } => {
                        out.extend_from_slice(&correlation_id.to_be_bytes())
                    }
                }
            }
            Record::End {
                records,
                dropped_frames,
                dropped_bytes,
            } => {
                put_varint(out, *records);
                put_varint(out, *dropped_frames);
                put_varint(out, *dropped_bytes);
            }
            Record::Unknown(_) => {}
        }
    }

    fn decode(kind: u8, payload: Bytes) -> Result<Record, String> {
        let Some(kind) = Kind::from_u8(kind) else {
            return Ok(Record::Unknown(kind));
        };
        let mut p = Cursor::new(&payload);
        let record = match kind {
            Kind::Request => return Ok(Record::Request(payload)),
            Kind::Response => return Ok(Record::Response(payload)),
            Kind::RawRequest => return Ok(Record::RawRequest(payload)),
            Kind::RawResponse => return Ok(Record::RawResponse(payload)),
            Kind::Identity => {
                return Ok(Record::Identity(
                    String::from_utf8_lossy(&payload).into_owned(),
                ))
            }
            Kind::Refused => {
                let api_key = p.i16("api key")?;
                let api_version = p.i16("api version")?;
                let correlation_id = p.i32("correlation id")?;
                let handling = p.u8("handling")?;
                let frame_len = p.varint("frame length")?;
                let client_id = match p.varint("client id length")? {
                    0 => None,
                    n => {
                        let len = usize::try_from(n - 1).map_err(|_| "client id length")?;
                        Some(String::from_utf8_lossy(p.take(len, "client id")?).into_owned())
                    }
                };
                Record::Refused {
                    fields: RequestFields {
                        api_key,
                        api_version,
                        correlation_id,
                        client_id,
                    },
                    handling,
                    frame_len,
                }
            }
            Kind::Note => Record::Note(Note::decode(&mut p)?),
            Kind::Elided => {
                let direction = p.u8("direction")?;
                let reason = match p.u8("reason")? {
                    1 => ElidedReason::Secret,
                    2 => ElidedReason::Cap,
                    3 => ElidedReason::TooLarge,
                    other => return Err(format!("unknown elision reason {other}")),
                };
                let frame_len = p.varint("frame length")?;
                let what = match direction {
                    0 => ElidedFrame::Request(RequestFields::decode(&mut p)?),
                    1 => ElidedFrame::Response {
                        correlation_id: p.i32("correlation id")?,
                    },
                    other => return Err(format!("unknown direction {other}")),
                };
                Record::Elided(Elided {
                    reason,
                    frame_len,
                    what,
                })
            }
            Kind::End => Record::End {
                records: p.varint("record count")?,
                dropped_frames: p.varint("dropped frames")?,
                dropped_bytes: p.varint("dropped bytes")?,
            },
        };
        Ok(record)
    }
}

/// Appends a record's kind, time and length; its `len` payload bytes follow.
pub fn put_record_head(out: &mut Vec<u8>, kind: u8, t_us: u64, len: usize) {
    out.push(kind);
    put_varint(out, t_us);
    put_varint(out, len as u64);
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Where reading stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("record {index} (byte {offset} of the {stream}): {problem}")]
pub struct ReadError {
    pub index: u64,
    /// Offset in the (decompressed) record stream where the record starts.
    pub offset: u64,
    pub stream: &'static str,
    pub problem: ReadProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadProblem {
    /// The file ends inside a record: the session was still being recorded, or the daemon
    /// stopped abruptly.
    #[error("the file ends inside this record")]
    Truncated,
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Io(String),
}

/// Reads records one by one from the body of a recording. Memory: one record at a time,
/// at most [`MAX_RECORD_BYTES`].
pub struct RecordReader<R> {
    src: R,
    offset: u64,
    index: u64,
    stream: &'static str,
    failed: bool,
}

impl<R: Read> RecordReader<R> {
    pub fn new(src: R, zstd: bool) -> Self {
        Self {
            src,
            offset: 0,
            index: 0,
            stream: if zstd { "decompressed body" } else { "body" },
            failed: false,
        }
    }

    fn fail(&mut self, start: u64, problem: ReadProblem) -> Option<Result<Entry, ReadError>> {
        self.failed = true;
        Some(Err(ReadError {
            index: self.index,
            offset: start,
            stream: self.stream,
            problem,
        }))
    }

    fn byte(&mut self) -> Result<Option<u8>, ReadProblem> {
        let mut b = [0u8; 1];
        loop {
            return match self.src.read(&mut b) {
                Ok(0) => Ok(None),
                Ok(_) => {
                    self.offset += 1;
                    Ok(Some(b[0]))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(io_problem(e)),
            };
        }
    }

    fn varint(&mut self) -> Result<u64, ReadProblem> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?.ok_or(ReadProblem::Truncated)?;
            v |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ReadProblem::Corrupt("varint longer than 10 bytes".into()))
    }
}

/// zstd reports a stream cut short as an error of its own; both mean "truncated".
fn io_problem(e: io::Error) -> ReadProblem {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadProblem::Truncated,
        _ if e.to_string().contains("incomplete frame") => ReadProblem::Truncated,
        _ => ReadProblem::Io(e.to_string()),
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<Entry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let start = self.offset;
        let kind = match self.byte() {
            Ok(Some(kind)) => kind,
            Ok(None) => return None,
            Err(problem) => return self.fail(start, problem),
        };
        let head = self.varint().and_then(|t| Ok((t, self.varint()?)));
        let (t_us, len) = match head {
            Ok(head) => head,
            Err(problem) => return self.fail(start, problem),
        };
        let len = match usize::try_from(len) {
            Ok(len) if len <= MAX_RECORD_BYTES => len,
            _ => {
                return self.fail(
                    start,
                    ReadProblem::Corrupt(format!(
                        "length {len} is over the {MAX_RECORD_BYTES}-byte record limit"
                    )),
                )
            }
        };
        // Read in steps, so a corrupt length on a short file does not allocate it all.
        let mut payload = Vec::with_capacity(len.min(1 << 20));
        match (&mut self.src).take(len as u64).read_to_end(&mut payload) {
            Ok(n) if n == len => {}
            Ok(_) => return self.fail(start, ReadProblem::Truncated),
            Err(e) => return self.fail(start, io_problem(e)),
        }
        self.offset += len as u64;
        match Record::decode(kind, Bytes::from(payload)) {
            Ok(record) => {
                let entry = Entry {
                    index: self.index,
                    t_us,
                    record,
                };
                self.index += 1;
                Some(Ok(entry))
            }
            Err(e) => self.fail(start, ReadProblem::Corrupt(e)),
        }
    }
}

/// Opens a recording: its header, and a reader of its records.
pub fn open(path: &Path) -> Result<(Header, RecordReader<Box<dyn Read>>), FormatError> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::Io(e.to_string()))?;
    let mut file = io::BufReader::with_capacity(256 * 1024, file);
    let header = Header::read(&mut file)?;
    let body: Box<dyn Read> = if header.zstd {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(file)
                .map_err(|e| FormatError::Io(e.to_string()))?,
        )
    } else {
        Box::new(file)
    };
    let reader = RecordReader::new(body, header.zstd);
    Ok((header, reader))
}

/// A bounds-checked reader over a record's payload.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(format!("{what}: {n} bytes past the end"));
        };
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{what}: varint too long"))
    }
}

/// How the record stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zstd at this level.
    Zstd(i32),
}

impl Default for Compression {
    /// Level 1: the recording shares the broker node's cores with the relay; masked Kafka
    /// frames (JSON, repeated headers) compress well already at the fastest level.
    fn default() -> Self {
        Compression::Zstd(1)
    }
}

impl<'de> Deserialize<'de> for Compression {
    /// `"none"`, `"zstd"` (level 3) or a zstd level, 1–19.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Setting {
            Level(i64),
            Name(String),
        }
        let bad = || {
            serde::de::Error::custom("compression must be \"none\", \"zstd\" or a zstd level 1-19")
        };
        match Setting::deserialize(d)? {
            Setting::Name(n) if n == "none" => Ok(Compression::None),
            Setting::Name(n) if n == "zstd" => Ok(Compression::Zstd(3)),
            Setting::Level(l) if (1..=19).contains(&l) => Ok(Compression::Zstd(l as i32)),
            _ => Err(bad()),
        }
    }
}

/// The key raw records are sealed with (XChaCha20-Poly1305). The file holds 32 bytes: raw,
/// or as 64 hex digits (`head -c 32 /dev/urandom > F`, or `openssl rand -hex 32 > F`).
pub struct RawKey {
    key: Zeroizing<[u8; 32]>,
    id: [u8; 8],
}

impl fmt::Debug for RawKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawKey")
            .field("id", &hex(&self.id))
            .finish()
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("raw recording key file {path}: {message}")]
    File { path: String, message: String },
    #[error("raw record {index} does not open with this key (wrong key, or the record was altered or moved)")]
    Open { index: u64 },
    #[error("raw record {index} is too short to be sealed")]
    Short { index: u64 },
}

impl RawKey {
    /// Reads the key file, which must be a regular file of root or the current user, mode
    /// 0600 or stricter (whoever reads it reads every raw frame).
    pub fn load(path: &Path) -> Result<RawKey, KeyError> {
        let fail = |message: String| KeyError::File {
            path: path.display().to_string(),
            message,
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        let bytes = crate::vault::read_private_file(path, &[0, euid], 4096).map_err(fail)?;
        Self::parse(&bytes).map_err(|m| fail(m.into()))
    }

    /// 32 raw bytes, or 64 hex digits with optional surrounding whitespace.
    pub fn parse(bytes: &[u8]) -> Result<RawKey, &'static str> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() == 32 {
            key.copy_from_slice(bytes);
        } else {
            let text = bytes.trim_ascii();
            if text.len() != 64 {
                return Err("must hold 32 bytes, raw or as 64 hex digits");
            }
            for (i, pair) in text.chunks(2).enumerate() {
                let digit = |c: u8| (c as char).to_digit(16);
                match (digit(pair[0]), digit(pair[1])) {
                    (Some(h), Some(l)) => key[i] = (h * 16 + l) as u8,
                    _ => return Err("must hold 32 bytes, raw or as 64 hex digits"),
                }
            }
        }
        if key.iter().all(|&b| b == 0) {
            return Err("is all zeros");
        }
        let mut h = Sha256::new();
        h.update(b"interceptor recording key id\0");
        h.update(*key);
        let digest = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Ok(RawKey { key, id })
    }

    /// Identifies the key in file headers without revealing it.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*self.key))
    }

    /// nonce ‖ ciphertext+tag of `plain`, bound to the file, the record's index and kind.
    pub fn seal(&self, file_id: &[u8; 16], index: u64, kind: Kind, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random 192-bit nonces: no counter to keep across files and restarts.
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(file_id, index, kind);
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            // Encryption fails only for inputs of more than 2^38 bytes.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(
        &self,
        file_id: &[u8; 16],
        index: u64,
        kind: Kind,
        sealed: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::Short { index });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = associated_data(file_id, index, kind);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| KeyError::Short { index })?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Open { index })
    }
}

fn associated_data(file_id: &[u8; 16], index: u64, kind: Kind) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"interceptor recording v1\0");
    aad.extend_from_slice(file_id);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(kind as u8);
    aad
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
