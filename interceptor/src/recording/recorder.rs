//! The relay's side of a recording: cheap enough for the hot path. Each call takes a
//! timestamp, clones `Bytes` (reference counts, no payload copies), reads a few header bytes,
//! and offers the result to the writer's bounded queue with `try_send`. It never waits and
//! makes no system call: when the queue (by count or by bytes) is full the frames are dropped,
//! counted, and the count goes into the file with the next message that fits.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        mpsc::SyncSender,
        Arc, Mutex,
    },
    time::Instant,
};

use bytes::Bytes;

use super::format::{Kind, RequestFields};
use crate::{
    kafka::{inflight::Expected, RequestHeader},
    proxy::tap::Handling,
};

/// Api keys whose bodies carry credentials: recorded by their headers only, both ways, and
/// never kept raw. SASL tokens, passwords and SCRAM proofs (SaslHandshake 17 only names a
/// mechanism, but it is part of the same exchange); delegation token HMACs (38 create, 39
/// renew, 40 expire, 41 describe); SCRAM credentials being set (51).
pub const SECRET_APIS: [i16; 7] = [17, 36, 38, 39, 40, 41, 51];

pub fn is_secret_api(api_key: i16) -> bool {
    SECRET_APIS.contains(&api_key)
}

/// Shared by the writer and every recorder.
pub(crate) struct Hub {
    pub tx: SyncSender<Msg>,
    /// Payload bytes in messages not yet written: what the queue holds on to.
    pub queued_bytes: AtomicUsize,
    pub queue_bytes: usize,
    /// Whether a raw key is configured (raw frames are kept at all).
    pub raw: bool,
    pub dropped_frames: AtomicU64,
    pub dropped_bytes: AtomicU64,
    /// Sessions whose file could not be written (disk full, permissions).
    pub write_errors: AtomicU64,
}

/// One session, as the writer needs to know it.
pub(crate) struct SessionInfo {
    pub session: u64,
    /// An MQTT session: whole packets both ways, no Kafka framing.
    pub mqtt: bool,
    pub client: SocketAddr,
    pub started: Instant,
    pub started_unix_us: u64,
    pub dropped_frames: AtomicU64,
    pub dropped_bytes: AtomicU64,
    /// Messages of the response direction dropped: the writer restarts its framing after one.
    pub response_drops: AtomicU64,
}

pub(crate) struct Msg {
    pub info: Arc<SessionInfo>,
    pub at: Instant,
    /// The session's drop totals when this message was queued.
    pub dropped: (u64, u64),
    pub response_drops: u64,
    /// Payload bytes accounted in `Hub::queued_bytes`.
    pub bytes: usize,
    pub body: Body,
}

pub(crate) enum Body {
    Requests(Vec<Bytes>),
    Responses(Vec<Piece>),
    Refused {
        fields: RequestFields,
        handling: u8,
        frame_len: u64,
    },
    Identity(String),
    Raw {
        kind: Kind,
        frames: Vec<Bytes>,
    },
    End,
}

/// The response stream, split at frame boundaries on the relay side (so a dropped message
/// cannot make the writer lose track, and credentials never leave the relay).
pub(crate) enum Piece {
    /// The start of a frame (at least its length prefix and correlation id).
    Start {
        bytes: Bytes,
        frame_len: usize,
        correlation_id: i32,
    },
    /// More of the frame started last.
    Cont(Bytes),
    /// A frame whose body is not recorded (credentials); none of its bytes follow.
    Secret {
        frame_len: usize,
        correlation_id: i32,
    },
    /// The stream could not be split any more (a frame start cut before its correlation id,
    /// which the relay never does): nothing more of it is recorded.
    Lost,
}

/// Where the response stream is.
#[derive(Default)]
struct Framer {
    /// Bytes left of the current frame.
    remaining: usize,
    /// The current frame is a secret one: its bytes are skipped.
    secret: bool,
    lost: bool,
}

/// Raw frames waiting to be compared with what was sent: kept only when they differ.
const MAX_PENDING_RAW: usize = 256;
/// Correlation ids of credential-bearing requests whose answers are still due.
const MAX_SECRET_IDS: usize = 64;

/// Records one session's frames both ways. Created per session by
/// [`Recordings::recorder`](super::Recordings::recorder); dropping it ends the file.
pub struct Recorder {
    hub: Arc<Hub>,
    info: Arc<SessionInfo>,
    framer: Mutex<Framer>,
    secrets: Mutex<VecDeque<i32>>,
    has_secrets: AtomicBool,
    raw_requests: Mutex<VecDeque<Bytes>>,
    raw_responses: Mutex<VecDeque<Bytes>>,
    principal: Mutex<Option<String>>,
    /// Correlation id (high 32 bits) and length (low 32) of the last request read, for the
    /// size of a refused one.
    last_request: AtomicU64,
}

fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

fn api_key_of(frame: &[u8]) -> Option<i16> {
    frame.get(4..6).map(|b| i16::from_be_bytes([b[0], b[1]]))
}

fn correlation_id_of(frame: &[u8]) -> Option<i32> {
    frame
        .get(8..12)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn handling_code(handling: Handling) -> u8 {
    match handling {
        Handling::Allowed => 0,
        Handling::Partial => 1,
        Handling::Denied => 2,
        Handling::Authentication => 3,
    }
}

impl Recorder {
    pub(crate) fn new(hub: Arc<Hub>, session: u64, client: SocketAddr, mqtt: bool) -> Self {
        let started_unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self {
            hub,
            info: Arc::new(SessionInfo {
                session,
                mqtt,
                client,
                started: Instant::now(),
                started_unix_us,
                dropped_frames: AtomicU64::new(0),
                dropped_bytes: AtomicU64::new(0),
                response_drops: AtomicU64::new(0),
            }),
            framer: Mutex::new(Framer::default()),
            secrets: Mutex::new(VecDeque::new()),
            has_secrets: AtomicBool::new(false),
            raw_requests: Mutex::new(VecDeque::new()),
            raw_responses: Mutex::new(VecDeque::new()),
            principal: Mutex::new(None),
            last_request: AtomicU64::new(0),
        }
    }

    /// Who the session is: recorded when first known and whenever it changes
    /// (re-authentication as someone else).
    pub fn identity(&self, principal: &str) {
        let Ok(mut last) = self.principal.lock() else {
            return;
        };
        if last.as_deref() == Some(principal) {
            return;
        }
        *last = Some(principal.to_owned());
        drop(last);
        self.send(
            Instant::now(),
            Body::Identity(principal.to_owned()),
            1,
            0,
            false,
        );
    }

    /// A request frame as the client sent it, before anything decided about it. Its size is
    /// kept for [`refused_request`](Self::refused_request); with a raw key, the frame itself,
    /// until it is known whether what goes to the broker differs.
    pub fn raw_request(&self, header: &RequestHeader, frame: &Bytes) {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.last_request.store(
            (u64::from(header.correlation_id as u32) << 32) | u64::from(len),
            Relaxed,
        );
        if !self.hub.raw || is_secret_api(header.api_key) {
            return;
        }
        self.hold_raw(&self.raw_requests, frame, Kind::RawRequest);
    }

    /// A broker response read whole, before it is rewritten (masking, reveal, ApiVersions).
    /// Only with a raw key; responses streaming through are never rewritten, so what reaches
    /// the client is what the broker sent.
    pub fn raw_response(&self, expected: &Expected, frame: &Bytes) {
        if !self.hub.raw
            || is_secret_api(expected.api_key)
            || self.secret_due(expected.correlation_id)
        {
            return;
        }
        self.hold_raw(&self.raw_responses, frame, Kind::RawResponse);
    }

    fn hold_raw(&self, queue: &Mutex<VecDeque<Bytes>>, frame: &Bytes, kind: Kind) {
        let Ok(mut held) = queue.lock() else {
            return;
        };
        held.push_back(frame.clone());
        if held.len() > MAX_PENDING_RAW {
            // Never compared: kept as is (it may equal what was sent; that costs space only).
            let frames: Vec<Bytes> = held.drain(..).collect();
            drop(held);
            self.send_raw(kind, frames, Instant::now());
        }
    }

    /// Sends the held raw frames that differ from every frame in `sent` (the same `Bytes`
    /// means nothing rewrote it).
    fn release_raw(&self, queue: &Mutex<VecDeque<Bytes>>, sent: &[Bytes], kind: Kind, at: Instant) {
        let frames: Vec<Bytes> = {
            let Ok(mut held) = queue.lock() else {
                return;
            };
            if held.is_empty() {
                return;
            }
            held.drain(..)
                .filter(|raw| !sent.iter().any(|s| same(raw, s)))
                .collect()
        };
        if !frames.is_empty() {
            self.send_raw(kind, frames, at);
        }
    }

    fn send_raw(&self, kind: Kind, frames: Vec<Bytes>, at: Instant) {
        let bytes = frames.iter().map(Bytes::len).sum();
        let count = frames.len() as u64;
        self.send(at, Body::Raw { kind, frames }, count, bytes, false);
    }

    /// A request that was not forwarded: its header only (its body may hold what the policy
    /// refused to let through; with a raw key, the body is kept sealed).
    pub fn refused_request(&self, header: &RequestHeader, handling: Handling) {
        let at = Instant::now();
        if is_secret_api(header.api_key) {
            self.add_secret(header.correlation_id);
        }
        let last = self.last_request.load(Relaxed);
        let frame_len = if (last >> 32) as u32 == header.correlation_id as u32 {
            last & 0xffff_ffff
        } else {
            0
        };
        if self.hub.raw {
            let raw = self.raw_requests.lock().ok().and_then(|mut held| {
                let at = held
                    .iter()
                    .position(|f| correlation_id_of(f) == Some(header.correlation_id))?;
                held.remove(at)
            });
            if let Some(raw) = raw {
                self.send_raw(Kind::RawRequest, vec![raw], at);
            }
        }
        let fields = RequestFields {
            api_key: header.api_key,
            api_version: header.api_version,
            correlation_id: header.correlation_id,
            client_id: header
                .client_id
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        };
        let body = Body::Refused {
            fields,
            handling: handling_code(handling),
            frame_len,
        };
        self.send(at, body, 1, 0, false);
    }

    /// Frames as written to the broker (after masking), length prefixes included.
    pub fn to_broker(&self, frames: &[Bytes]) {
        let at = Instant::now();
        if self.hub.raw {
            self.release_raw(&self.raw_requests, frames, Kind::RawRequest, at);
        }
        let mut bytes = 0;
        for frame in frames {
            bytes += frame.len();
            if !self.info.mqtt && api_key_of(frame).is_some_and(is_secret_api) {
                if let Some(id) = correlation_id_of(frame) {
                    self.add_secret(id);
                }
            }
        }
        let count = frames.len() as u64;
        self.send(at, Body::Requests(frames.to_vec()), count, bytes, false);
    }

    /// Bytes as written to the client: whole response frames, or consecutive pieces of one
    /// streaming through.
    pub fn to_client(&self, chunks: &[Bytes]) {
        let at = Instant::now();
        if self.hub.raw {
            self.release_raw(&self.raw_responses, chunks, Kind::RawResponse, at);
        }
        let mut pieces = Vec::with_capacity(chunks.len());
        if self.info.mqtt {
            // The MQTT writer hands over whole packets.
            pieces.extend(chunks.iter().map(|c| Piece::Start {
                bytes: c.clone(),
                frame_len: c.len(),
                correlation_id: 0,
            }));
        } else {
            let Ok(mut framer) = self.framer.lock() else {
                return;
            };
            for chunk in chunks {
                self.split(&mut framer, chunk, &mut pieces);
            }
        }
        if pieces.is_empty() {
            return;
        }
        let mut bytes = 0;
        for piece in &pieces {
            if let Piece::Start { bytes: b, .. } | Piece::Cont(b) = piece {
                bytes += b.len();
            }
        }
        let count = pieces.len() as u64;
        self.send(at, Body::Responses(pieces), count, bytes, true);
    }

    /// Splits `chunk` at frame boundaries into `out`.
    fn split(&self, framer: &mut Framer, chunk: &Bytes, out: &mut Vec<Piece>) {
        let mut pos = 0;
        while pos < chunk.len() && !framer.lost {
            if framer.remaining > 0 {
                let take = framer.remaining.min(chunk.len() - pos);
                if !framer.secret {
                    out.push(Piece::Cont(chunk.slice(pos..pos + take)));
                }
                framer.remaining -= take;
                pos += take;
                continue;
            }
            let rest = &chunk[pos..];
            // The relay hands over a frame start only with its length prefix and correlation id
            // in (it checks them before anything is sent); anything else cannot be split.
            let header = rest.get(..8).map(|h| {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize + 4;
                (len, i32::from_be_bytes([h[4], h[5], h[6], h[7]]))
            });
            let Some((len, correlation_id)) = header.filter(|&(len, _)| len >= 8) else {
                framer.lost = true;
                out.push(Piece::Lost);
                return;
            };
            let take = len.min(rest.len());
            let secret = self.take_secret(correlation_id);
            if secret {
                out.push(Piece::Secret {
                    frame_len: len,
                    correlation_id,
                });
            } else {
                out.push(Piece::Start {
                    bytes: chunk.slice(pos..pos + take),
                    frame_len: len,
                    correlation_id,
                });
            }
            framer.secret = secret;
            framer.remaining = len - take;
            pos += take;
        }
    }

    fn add_secret(&self, correlation_id: i32) {
        if let Ok(mut ids) = self.secrets.lock() {
            if ids.len() == MAX_SECRET_IDS {
                ids.pop_front();
            }
            ids.push_back(correlation_id);
            self.has_secrets.store(true, Relaxed);
        }
    }

    fn secret_due(&self, correlation_id: i32) -> bool {
        self.has_secrets.load(Relaxed)
            && self
                .secrets
                .lock()
                .is_ok_and(|ids| ids.contains(&correlation_id))
    }

    /// Whether the response `correlation_id` answers a credential-bearing request. Answers come
    /// in request order: ids queued before it will not be answered any more.
    fn take_secret(&self, correlation_id: i32) -> bool {
        if !self.has_secrets.load(Relaxed) {
            return false;
        }
        let Ok(mut ids) = self.secrets.lock() else {
            // A poisoned lock: treat every answer as secret rather than risk recording one.
            return true;
        };
        let found = match ids.iter().position(|&id| id == correlation_id) {
            Some(at) => {
                ids.drain(..=at);
                true
            }
            None => false,
        };
        self.has_secrets.store(!ids.is_empty(), Relaxed);
        found
    }

    fn send(&self, at: Instant, body: Body, frames: u64, bytes: usize, response: bool) {
        let hub = &self.hub;
        let queued = hub.queued_bytes.fetch_add(bytes, Relaxed);
        if queued.saturating_add(bytes) > hub.queue_bytes {
            hub.queued_bytes.fetch_sub(bytes, Relaxed);
            self.lost(frames, bytes, response);
            return;
        }
        let msg = Msg {
            info: Arc::clone(&self.info),
            at,
            dropped: (
                self.info.dropped_frames.load(Relaxed),
                self.info.dropped_bytes.load(Relaxed),
            ),
            response_drops: self.info.response_drops.load(Relaxed),
            bytes,
            body,
        };
        if hub.tx.try_send(msg).is_err() {
            hub.queued_bytes.fetch_sub(bytes, Relaxed);
            self.lost(frames, bytes, response);
        }
    }

    /// Bytes queued for the writer and not written yet.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.hub.queued_bytes.load(Relaxed)
    }

    fn lost(&self, frames: u64, bytes: usize, response: bool) {
        let bytes = bytes as u64;
        self.info.dropped_frames.fetch_add(frames, Relaxed);
        self.info.dropped_bytes.fetch_add(bytes, Relaxed);
        self.hub.dropped_frames.fetch_add(frames, Relaxed);
        self.hub.dropped_bytes.fetch_add(bytes, Relaxed);
        if response {
            self.info.response_drops.fetch_add(1, Relaxed);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let at = Instant::now();
        // Raw frames never matched with a forwarded one (the connection ended first).
        for (queue, kind) in [
            (&self.raw_requests, Kind::RawRequest),
            (&self.raw_responses, Kind::RawResponse),
        ] {
            let frames: Vec<Bytes> = queue
                .lock()
                .map(|mut q| q.drain(..).collect())
                .unwrap_or_default();
            if !frames.is_empty() {
                self.send_raw(kind, frames, at);
            }
        }
        // If this does not fit, the writer notices the session is gone on its next sweep.
        self.send(at, Body::End, 0, 0, false);
    }
}
