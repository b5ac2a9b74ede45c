//! The writer thread: one for all sessions. It takes messages off the bounded queue, applies
//! the session cap and the credential rule, seals raw frames, and appends records to each
//! session's file in blocks (each block one zstd frame; a file's blocks together are one
//! zstd stream).
//!
//! It polls the queue (sleeping a little when it is empty) instead of blocking on it: a
//! blocked receiver makes every sender wake it with a system call, on the relay's thread.
//! Only after a second without any message does it block, and the first message after that
//! pays one wake-up.

use std::{
    collections::HashMap,
    fs::{DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, TryRecvError},
        Arc,
    },
    time::{Duration, Instant},
};

use rand::RngCore;

use super::{
    format::{
        put_record_head, Compression, Elided, ElidedFrame, ElidedReason, Header, Kind, Note,
        RawKey, Record, RequestFields, EXTENSION, MAX_RECORD_BYTES,
    },
    recorder::{is_secret_api, Body, Hub, Msg, Piece, SessionInfo},
};

/// A session's records are written once this many are buffered...
const BLOCK_BYTES: usize = 64 * 1024;
/// ...or once the oldest buffered one is this old (what a crash can lose).
const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// Buffered records of all sessions together, beyond which everything is written.
const MAX_BUFFERED: usize = 32 * 1024 * 1024;
/// A payload this large is written (compressed) straight from its `Bytes`, not buffered.
const DIRECT_BYTES: usize = 32 * 1024;
/// Compression input per zstd frame: bounds the output buffer.
const SLICE_BYTES: usize = 1024 * 1024;
/// Files kept open between writes; past this, a file is opened for each write. The daemon
/// shares its descriptor limit with client and broker sockets.
const MAX_OPEN_FILES: usize = 256;
/// An open file unused this long is closed.
const CLOSE_IDLE: Duration = Duration::from_secs(10);
/// Housekeeping: time-based flushes, ended sessions, idle files.
const TICK: Duration = Duration::from_millis(500);
const MIN_SLEEP: Duration = Duration::from_millis(1);
const MAX_SLEEP: Duration = Duration::from_millis(20);
const BLOCK_AFTER_IDLE: Duration = Duration::from_secs(1);

pub(crate) struct Settings {
    pub dir: PathBuf,
    pub instance: String,
    pub max_session_bytes: u64,
    pub compression: Compression,
    pub key: Option<RawKey>,
}

/// Creates the directory (mode 0750) if it is missing.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o750).create(dir)
}

/// The writer loop; returns when `stop` is set (after writing everything queued) or when
/// every sender is gone.
pub(crate) fn run(rx: Receiver<Msg>, hub: Arc<Hub>, settings: Settings, stop: Arc<AtomicBool>) {
    let mut writer = Writer::new(hub, settings);
    let mut sleep = MIN_SLEEP;
    let mut last_tick = Instant::now();
    let mut last_msg = Instant::now();
    loop {
        let mut got = false;
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    writer.handle(msg);
                    got = true;
                    if last_tick.elapsed() >= TICK {
                        writer.tick();
                        last_tick = Instant::now();
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    writer.finish_all(false);
                    return;
                }
            }
        }
        if last_tick.elapsed() >= TICK {
            writer.tick();
            last_tick = Instant::now();
        }
        if stop.load(Ordering::Acquire) {
            while let Ok(msg) = rx.try_recv() {
                writer.handle(msg);
            }
            writer.finish_all(true);
            return;
        }
        if got {
            last_msg = Instant::now();
            sleep = MIN_SLEEP;
        } else {
            sleep = (sleep * 2).min(MAX_SLEEP);
        }
        if last_msg.elapsed() >= BLOCK_AFTER_IDLE && writer.idle() {
            match rx.recv_timeout(TICK) {
                Ok(msg) => {
                    writer.handle(msg);
                    last_msg = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    writer.finish_all(false);
                    return;
                }
            }
        } else {
            std::thread::sleep(sleep);
        }
    }
}

struct SessionFile {
    info: Arc<SessionInfo>,
    path: PathBuf,
    file: Option<File>,
    last_write: Instant,
    failed: bool,
    file_id: [u8; 16],
    /// Encoded records not written yet.
    pending: Vec<u8>,
    pending_since: Option<Instant>,
    /// Records so far: the next one's index.
    index: u64,
    /// Payload bytes kept (frames and raw records), against the cap.
    kept: u64,
    capped: bool,
    noted_dropped: (u64, u64),
    response_drops: u64,
    /// The response frame under way: whether it is kept, and how much of it is left.
    response: Option<(bool, usize)>,
    framing_lost: bool,
}

struct Writer {
    hub: Arc<Hub>,
    settings: Settings,
    sessions: HashMap<u64, SessionFile>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
    buffered: usize,
    open_files: usize,
    warned_failure: bool,
}

impl Writer {
    fn new(hub: Arc<Hub>, settings: Settings) -> Self {
        let compressor = match settings.compression {
            Compression::None => None,
            Compression::Zstd(level) => match zstd::bulk::Compressor::new(level) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("recording: zstd level {level}: {e}; writing uncompressed");
                    None
                }
            },
        };
        Self {
            hub,
            settings,
            sessions: HashMap::new(),
            compressor,
            out: Vec::new(),
            buffered: 0,
            open_files: 0,
            warned_failure: false,
        }
    }

    /// Nothing buffered: the loop may block until the next message.
    fn idle(&self) -> bool {
        self.buffered == 0
    }

    fn handle(&mut self, msg: Msg) {
        let bytes = msg.bytes;
        self.record(msg);
        // Released once the frames are: the queue's byte bound is about what is held.
        self.hub.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn record(&mut self, msg: Msg) {
        let Msg {
            info,
            at,
            dropped,
            response_drops,
            bytes: _,
            body,
        } = msg;
        let id = info.session;
        if !self.sessions.contains_key(&id) {
            let file = self.create(&info);
            self.sessions.insert(id, file);
        }
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        if s.failed {
            if !matches!(body, Body::End) {
                self.sessions.insert(id, s);
            }
            return;
        }
        let t = u64::try_from(at.saturating_duration_since(info.started).as_micros())
            .unwrap_or(u64::MAX);
        if dropped.0 > s.noted_dropped.0 || dropped.1 > s.noted_dropped.1 {
            s.noted_dropped = dropped;
            let note = Record::Note(Note::Dropped {
                frames: dropped.0,
                bytes: dropped.1,
            });
            self.small(&mut s, t, &note);
        }
        if response_drops != s.response_drops {
            s.response_drops = response_drops;
            if matches!(s.response, Some((true, remaining)) if remaining > 0) {
                self.small(&mut s, t, &Record::Note(Note::ResponseGap));
            }
            s.response = None;
        }
        let end = matches!(body, Body::End);
        match body {
            Body::Requests(frames) => {
                for frame in frames {
                    self.request(&mut s, t, &frame, info.mqtt);
                }
            }
            Body::Responses(pieces) => {
                for piece in pieces {
                    self.response(&mut s, t, piece);
                }
            }
            Body::Refused {
                fields,
                handling,
                frame_len,
            } => {
                let record = Record::Refused {
                    fields,
                    handling,
                    frame_len,
                };
                self.small(&mut s, t, &record);
            }
            Body::Identity(principal) => self.small(&mut s, t, &Record::Identity(principal)),
            Body::Raw { kind, frames } => {
                for frame in frames {
                    self.raw(&mut s, t, kind, &frame);
                }
            }
            Body::End => self.finish(&mut s, t, false),
        }
        if !end {
            if s.pending.len() >= BLOCK_BYTES {
                self.flush(&mut s);
            }
            self.sessions.insert(id, s);
            if self.buffered > MAX_BUFFERED {
                self.flush_all();
            }
        }
    }

    /// Creates the session's file (mode 0640, never over an existing one) with its header.
    fn create(&mut self, info: &Arc<SessionInfo>) -> SessionFile {
        let name = format!("{}-{}.{EXTENSION}", self.settings.instance, info.session);
        let path = self.settings.dir.join(name);
        let mut file_id = [0u8; 16];
        rand::rng().fill_bytes(&mut file_id);
        let mut s = SessionFile {
            info: Arc::clone(info),
            path,
            file: None,
            last_write: Instant::now(),
            failed: false,
            file_id,
            pending: Vec::new(),
            pending_since: None,
            index: 0,
            kept: 0,
            capped: false,
            noted_dropped: (0, 0),
            response_drops: 0,
            response: None,
            framing_lost: false,
        };
        let header = Header {
            zstd: self.compressor.is_some(),
            mqtt: info.mqtt,
            file_id,
            key_id: self.settings.key.as_ref().map_or([0; 8], RawKey::id),
            started_unix_us: info.started_unix_us,
            session: info.session,
            instance: self.settings.instance.clone(),
            client: info.client.to_string(),
            software: format!("interceptor {}", env!("CARGO_PKG_VERSION")),
        };
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&s.path)
            .and_then(|mut file| {
                file.write_all(&header.encode())?;
                Ok(file)
            });
        match created {
            Ok(file) => {
                if self.open_files < MAX_OPEN_FILES {
                    self.open_files += 1;
                    s.file = Some(file);
                }
            }
            Err(e) => self.failed(&mut s, &e),
        }
        s
    }

    fn failed(&mut self, s: &mut SessionFile, e: &io::Error) {
        // One warning per daemon run: a full disk would otherwise log once per session.
        if !self.warned_failure {
            self.warned_failure = true;
            tracing::warn!(
                session = s.info.session,
                path = %s.path.display(),
                "recording stopped for this session (and any other that fails the same way; \
                 see the write_errors count at shutdown): {e}"
            );
        }
        self.hub.write_errors.fetch_add(1, Ordering::Relaxed);
        s.failed = true;
        self.buffered -= s.pending.len().min(self.buffered);
        s.pending = Vec::new();
        s.pending_since = None;
        if s.file.take().is_some() {
            self.open_files -= 1;
        }
    }

    /// Appends a record with a small payload.
    fn small(&mut self, s: &mut SessionFile, t: u64, record: &Record) {
        let mut payload = Vec::new();
        record.encode_payload(&mut payload);
        self.put(s, record.kind_byte(), t, &payload);
    }

    /// Appends one record: buffered, or for a large payload written straight from it.
    fn put(&mut self, s: &mut SessionFile, kind: u8, t: u64, payload: &[u8]) {
        if s.failed {
            return;
        }
        let before = s.pending.len();
        put_record_head(&mut s.pending, kind, t, payload.len());
        s.index += 1;
        s.pending_since.get_or_insert_with(Instant::now);
        if payload.len() >= DIRECT_BYTES {
            self.buffered += s.pending.len() - before;
            self.flush(s);
            self.write_body(s, payload);
        } else {
            s.pending.extend_from_slice(payload);
            self.buffered += s.pending.len() - before;
        }
    }

    /// Whether a frame of `len` bytes may be kept whole; notes the cap the first time not.
    fn within_cap(&mut self, s: &mut SessionFile, t: u64, len: usize) -> bool {
        if !s.capped && s.kept.saturating_add(len as u64) <= self.settings.max_session_bytes {
            s.kept += len as u64;
            return true;
        }
        if !s.capped {
            s.capped = true;
            let cap = self.settings.max_session_bytes;
            self.small(s, t, &Record::Note(Note::Truncated { cap }));
        }
        false
    }

    fn request(&mut self, s: &mut SessionFile, t: u64, frame: &[u8], mqtt: bool) {
        // MQTT sessions hand over no credential-bearing packet (the CONNECT comes without its
        // password); their frames have no Kafka header to read.
        let fields = if mqtt {
            RequestFields::default()
        } else {
            RequestFields::of_frame(frame)
        };
        let reason = if !mqtt && is_secret_api(fields.api_key) {
            Some(ElidedReason::Secret)
        } else if frame.len() > MAX_RECORD_BYTES {
            Some(ElidedReason::TooLarge)
        } else if !self.within_cap(s, t, frame.len()) {
            Some(ElidedReason::Cap)
        } else {
            None
        };
        match reason {
            None => self.put(s, Kind::Request as u8, t, frame),
            Some(reason) => {
                let record = Record::Elided(Elided {
                    reason,
                    frame_len: frame.len() as u64,
                    what: ElidedFrame::Request(fields),
                });
                self.small(s, t, &record);
            }
        }
    }

    fn response(&mut self, s: &mut SessionFile, t: u64, piece: Piece) {
        if s.framing_lost {
            return;
        }
        match piece {
            Piece::Start {
                bytes,
                frame_len,
                correlation_id,
            } => {
                let reason = if frame_len > MAX_RECORD_BYTES {
                    Some(ElidedReason::TooLarge)
                } else if !self.within_cap(s, t, frame_len) {
                    Some(ElidedReason::Cap)
                } else {
                    None
                };
                let remaining = frame_len.saturating_sub(bytes.len());
                match reason {
                    None => {
                        s.response = Some((true, remaining));
                        self.put(s, Kind::Response as u8, t, &bytes);
                    }
                    Some(reason) => {
                        s.response = Some((false, remaining));
                        self.elided_response(s, t, reason, frame_len, correlation_id);
                    }
                }
            }
            Piece::Cont(bytes) => {
                // Without a frame under way its start was dropped: skipped.
                if let Some((keep, remaining)) = s.response {
                    s.response = Some((keep, remaining.saturating_sub(bytes.len())));
                    if keep {
                        self.put(s, Kind::Response as u8, t, &bytes);
                    }
                }
            }
            Piece::Secret {
                frame_len,
                correlation_id,
            } => {
                s.response = None;
                self.elided_response(s, t, ElidedReason::Secret, frame_len, correlation_id);
            }
            Piece::Lost => {
                s.framing_lost = true;
                self.small(s, t, &Record::Note(Note::ResponseFramingLost));
            }
        }
    }

    fn elided_response(
        &mut self,
        s: &mut SessionFile,
        t: u64,
        reason: ElidedReason,
        frame_len: usize,
        correlation_id: i32,
    ) {
        let record = Record::Elided(Elided {
            reason,
            frame_len: frame_len as u64,
            what: ElidedFrame::Response { correlation_id },
        });
        self.small(s, t, &record);
    }

    fn raw(&mut self, s: &mut SessionFile, t: u64, kind: Kind, frame: &[u8]) {
        // Belt and braces: without a key nothing raw is written, whatever arrives.
        if self.settings.key.is_none()
            || frame.len() > MAX_RECORD_BYTES - 64
            || !self.within_cap(s, t, frame.len())
        {
            return;
        }
        let Some(key) = &self.settings.key else {
            return;
        };
        let sealed = key.seal(&s.file_id, s.index, kind, frame);
        self.put(s, kind as u8, t, &sealed);
    }

    /// Writes the buffered records.
    fn flush(&mut self, s: &mut SessionFile) {
        if s.pending.is_empty() || s.failed {
            return;
        }
        let pending = std::mem::take(&mut s.pending);
        self.buffered -= pending.len().min(self.buffered);
        self.write_body(s, &pending);
        s.pending = pending;
        s.pending.clear();
        // One large frame must not keep its buffer's size for the life of the session.
        if s.pending.capacity() > 4 * BLOCK_BYTES {
            s.pending = Vec::new();
        }
        s.pending_since = None;
    }

    /// Writes record bytes to the file, compressed when configured.
    fn write_body(&mut self, s: &mut SessionFile, data: &[u8]) {
        if s.failed {
            return;
        }
        let mut result = Ok(());
        match self.compressor.as_mut() {
            None => result = write_to(&mut s.file, &s.path, &mut self.open_files, data),
            Some(compressor) => {
                for slice in data.chunks(SLICE_BYTES) {
                    self.out.clear();
                    self.out
                        .reserve(zstd::zstd_safe::compress_bound(slice.len()));
                    result = compressor
                        .compress_to_buffer(slice, &mut self.out)
                        .map(drop)
                        .and_then(|()| {
                            write_to(&mut s.file, &s.path, &mut self.open_files, &self.out)
                        });
                    if result.is_err() {
                        break;
                    }
                }
                if self.out.capacity() > 4 * SLICE_BYTES {
                    self.out = Vec::new();
                }
            }
        }
        s.last_write = Instant::now();
        if let Err(e) = result {
            self.failed(s, &e);
        }
    }

    /// Ends a session's file: the end record, the last block, the file closed.
    fn finish(&mut self, s: &mut SessionFile, t: u64, daemon_stopped: bool) {
        if daemon_stopped {
            self.small(s, t, &Record::Note(Note::DaemonStopped));
        }
        let (frames, bytes) = (
            s.info.dropped_frames.load(Ordering::Relaxed),
            s.info.dropped_bytes.load(Ordering::Relaxed),
        );
        let end = Record::End {
            records: s.index,
            dropped_frames: frames,
            dropped_bytes: bytes,
        };
        self.small(s, t, &end);
        self.flush(s);
        if s.file.take().is_some() {
            self.open_files -= 1;
        }
        if frames > 0 {
            tracing::warn!(
                session = s.info.session,
                path = %s.path.display(),
                "recording: {frames} frame(s), {bytes} bytes dropped (queue full); the file notes where"
            );
        }
    }

    /// Time-based work: blocks older than [`FLUSH_AFTER`], sessions whose recorder is gone
    /// without its end message having fitted in the queue, idle files.
    fn tick(&mut self) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let Some(mut s) = self.sessions.remove(&id) else {
                continue;
            };
            // Only the writer holds it: the recorder is gone and none of its messages is queued.
            if Arc::strong_count(&s.info) == 1 {
                if !s.failed {
                    let t = self.now_us(&s);
                    self.finish(&mut s, t, false);
                }
                continue;
            }
            if s.pending_since
                .is_some_and(|since| since.elapsed() >= FLUSH_AFTER)
            {
                self.flush(&mut s);
            }
            if s.file.is_some() && s.last_write.elapsed() >= CLOSE_IDLE {
                s.file = None;
                self.open_files -= 1;
            }
            self.sessions.insert(id, s);
        }
    }

    fn now_us(&self, s: &SessionFile) -> u64 {
        u64::try_from(s.info.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn flush_all(&mut self) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            if let Some(mut s) = self.sessions.remove(&id) {
                self.flush(&mut s);
                self.sessions.insert(id, s);
            }
        }
    }

    /// Ends every file: at shutdown (`daemon_stopped`: sessions still open say so).
    fn finish_all(&mut self, daemon_stopped: bool) {
        let sessions: Vec<SessionFile> = self.sessions.drain().map(|(_, s)| s).collect();
        for mut s in sessions {
            if s.failed {
                continue;
            }
            let t = self.now_us(&s);
            let open = daemon_stopped && Arc::strong_count(&s.info) > 1;
            self.finish(&mut s, t, open);
        }
    }
}

/// Appends `data` to the session's file, opening it if it is not kept open.
fn write_to(
    file: &mut Option<File>,
    path: &Path,
    open_files: &mut usize,
    data: &[u8],
) -> io::Result<()> {
    if let Some(f) = file.as_mut() {
        return f.write_all(data);
    }
    let mut f = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(data)?;
    if *open_files < MAX_OPEN_FILES {
        *open_files += 1;
        *file = Some(f);
    }
    Ok(())
}
