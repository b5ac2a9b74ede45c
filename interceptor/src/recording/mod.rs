//! Session recording: per session, the frames both ways (after masking) with timestamps, in
//! one compact file, `<dir>/<instance>-<session>.irec`, named like the audit trail's
//! `actor.session.uid`. `interceptor replay` prints a decoded timeline and can re-send the
//! recorded produce requests to another broker. See `docs/recording.md`.
//!
//! - [`recorder`]: the relay's side, on the hot path: timestamps, `Bytes` clones and a
//!   `try_send` to a bounded queue, never a wait, never a system call.
//! - [`writer`]: one thread for all sessions: cap, credentials, sealing, compression, files.
//! - [`format`]: the file format, its reader, the raw key.
//! - [`replay`], [`resend`], [`cli`]: `interceptor replay`.
//!
//! Privacy: what is recorded is what crossed the interceptor after masking. The client's
//! original frames and the broker's original answers are kept only with a raw key, and then
//! only sealed (XChaCha20-Poly1305). Credentials (SASL and delegation-token bodies) are
//! never recorded, in any form.

pub mod cli;
pub mod format;
mod recorder;
pub mod replay;
mod replay_mqtt;
pub mod resend;
#[cfg(test)]
mod tests;
mod writer;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::sync_channel,
        Arc, Mutex, OnceLock,
    },
    thread::JoinHandle,
    time::Duration,
};

use thiserror::Error;

pub use format::Compression;
pub use recorder::{is_secret_api, Recorder, SECRET_APIS};

use crate::config::RecordingConfig;
use recorder::Hub;

#[derive(Debug, Error)]
pub enum RecordingError {
    #[error("recording.{key}: {message}")]
    Setting { key: &'static str, message: String },
    #[error("recording directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] format::KeyError),
    #[error("cannot start the recording writer thread: {0}")]
    Thread(std::io::Error),
}

/// What the recordings did, for the log at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub dropped_frames: u64,
    pub dropped_bytes: u64,
    pub write_errors: u64,
}

/// The recording service: the queue and its writer thread.
pub struct Recordings {
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Recordings {
    /// Checks the settings, reads the raw key, creates the directory, starts the writer.
    pub fn start(config: &RecordingConfig) -> Result<Recordings, RecordingError> {
        Self::start_as(config, crate::audit::instance_id())
    }

    /// [`start`](Self::start) with the instance id that names the files given.
    pub(crate) fn start_as(
        config: &RecordingConfig,
        instance: &str,
    ) -> Result<Recordings, RecordingError> {
        let positive = |key, value: u64| {
            if value == 0 {
                Err(RecordingError::Setting {
                    key,
                    message: "must be greater than 0".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("queue", config.queue as u64)?;
        positive("queue_bytes", config.queue_bytes as u64)?;
        positive("max_session_bytes", config.max_session_bytes)?;
        let key = config
            .raw_key_file
            .as_deref()
            .map(format::RawKey::load)
            .transpose()?;
        writer::create_dir(&config.dir).map_err(|source| RecordingError::Dir {
            dir: config.dir.clone(),
            source,
        })?;
        let (tx, rx) = sync_channel(config.queue);
        let hub = Arc::new(Hub {
            tx,
            queued_bytes: AtomicUsize::new(0),
            queue_bytes: config.queue_bytes,
            raw: key.is_some(),
            dropped_frames: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        let settings = writer::Settings {
            dir: config.dir.clone(),
            instance: instance.to_owned(),
            max_session_bytes: config.max_session_bytes,
            compression: config.compression,
            key,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (hub, stop) = (Arc::clone(&hub), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("recording".into())
                .spawn(move || writer::run(rx, hub, settings, stop))
                .map_err(RecordingError::Thread)?
        };
        Ok(Recordings {
            hub,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A recorder for one session.
    pub fn recorder(&self, session: u64, client: SocketAddr) -> Recorder {
        Recorder::new(Arc::clone(&self.hub), session, client, false)
    }

    /// A recorder for one MQTT session.
    pub fn mqtt_recorder(&self, session: u64, client: SocketAddr) -> Recorder {
        Recorder::new(Arc::clone(&self.hub), session, client, true)
    }

    /// Whether raw frames are kept (a raw key is configured).
    pub fn raw(&self) -> bool {
        self.hub.raw
    }

    pub fn stats(&self) -> Stats {
        Stats {
            dropped_frames: self.hub.dropped_frames.load(Ordering::Relaxed),
            dropped_bytes: self.hub.dropped_bytes.load(Ordering::Relaxed),
            write_errors: self.hub.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Writes everything queued, ends every file (sessions still open get a note saying the
    /// daemon stopped) and stops the writer; waits at most `timeout`.
    pub fn finish(&self, timeout: Duration) {
        self.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        let deadline = std::time::Instant::now() + timeout;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!("the recording writer did not finish within {timeout:?}");
        }
    }
}

/// The daemon's recordings, when enabled.
static DAEMON: OnceLock<Recordings> = OnceLock::new();

/// Starts the daemon's recordings if `[recording] enabled`. Called once at start-up, before
/// any session.
pub fn start(config: &RecordingConfig) -> Result<(), RecordingError> {
    if !config.enabled {
        return Ok(());
    }
    let recordings = Recordings::start(config)?;
    tracing::info!(
        dir = %config.dir.display(),
        raw = recordings.raw(),
        "recording sessions (after masking{})",
        if recordings.raw() { "; raw frames sealed with the raw key" } else { "" }
    );
    // A second call (tests starting a daemon twice in one process) keeps the first.
    let _ = DAEMON.set(recordings);
    Ok(())
}

/// A recorder for a new session, when recording is on.
pub fn session(session: u64, client: SocketAddr) -> Option<Recorder> {
    DAEMON.get().map(|r| r.recorder(session, client))
}

/// The daemon's recorder for one MQTT session.
pub fn mqtt_session(session: u64, client: SocketAddr) -> Option<Recorder> {
    DAEMON.get().map(|r| r.mqtt_recorder(session, client))
}

/// Ends the daemon's recordings (at shutdown, after the sessions).
pub fn finish() {
    if let Some(recordings) = DAEMON.get() {
        recordings.finish(Duration::from_secs(10));
        let stats = recordings.stats();
        if stats != Stats::default() {
            tracing::warn!(?stats, "recording: frames dropped or files not written");
        }
    }
}
