//! Audit events and their sinks.
//!
//! Sessions hand events to an [`AuditLog`] handle; one writer thread owns the sink. The queue
//! between them is bounded: when the disk is slow the sessions wait, events are never dropped.
//! (Hash chaining, durability before effect and querying come with the audit issue.)

pub mod chain;
mod event;
mod file;
mod memory;

use std::{
    sync::{Arc, RwLock},
    thread::JoinHandle,
};

use thiserror::Error;
use tokio::sync::mpsc;

pub use event::{AuditEvent, AuditRecord, AuthOutcome, CloseReason, TransformCount};
pub use file::JsonLinesFile;
pub use memory::MemorySink;

#[derive(Debug, Error)]
pub enum AuditError {
    #[error("audit file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("audit event cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Somewhere audit records go.
pub trait AuditSink: Send + 'static {
    fn write(&mut self, record: &AuditRecord) -> Result<(), AuditError>;
    /// Called whenever the queue runs empty, so records do not sit in a buffer while idle.
    fn flush(&mut self) -> Result<(), AuditError>;
}

/// Cheap, cloneable handle to the audit writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditRecord>,
    /// The version of the policy set in force, stamped on every record.
    policy_version: Arc<RwLock<Arc<str>>>,
}

/// Owns the writer thread; [`AuditWriter::finish`] drains and flushes.
pub struct AuditWriter {
    thread: JoinHandle<()>,
}

impl AuditLog {
    /// Starts the writer thread for `sink` with a queue of `capacity` records.
    pub fn start(mut sink: impl AuditSink, capacity: usize) -> (Self, AuditWriter) {
        let (tx, mut rx) = mpsc::channel::<AuditRecord>(capacity);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(record) = rx.blocking_recv() {
                    if let Err(e) = sink.write(&record) {
                        tracing::error!("audit write failed: {e}; event: {record:?}");
                    }
                    if rx.is_empty() {
                        if let Err(e) = sink.flush() {
                            tracing::error!("audit flush failed: {e}");
                        }
                    }
                }
                if let Err(e) = sink.flush() {
                    tracing::error!("audit flush failed: {e}");
                }
            })
            .expect("spawning the audit writer thread");
        let policy_version = Arc::new(RwLock::new(Arc::from("none")));
        (Self { tx, policy_version }, AuditWriter { thread })
    }

    /// From now on, records not made by a decision carry this policy version.
    pub fn set_policy_version(&self, version: Arc<str>) {
        match self.policy_version.write() {
            Ok(mut v) => *v = version,
            Err(poisoned) => *poisoned.into_inner() = version,
        }
    }

    fn current_version(&self) -> Arc<str> {
        match self.policy_version.read() {
            Ok(v) => Arc::clone(&v),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Records an event; waits while the queue is full.
    pub async fn emit(&self, event: AuditEvent) {
        let version = self.current_version();
        self.emit_under(event, version).await;
    }

    /// Records an event made under a given policy version (a decision records the version of
    /// the set that made it, even if a reload has happened since).
    pub async fn emit_under(&self, event: AuditEvent, policy_version: Arc<str>) {
        if self
            .tx
            .send(AuditRecord::now(event, policy_version))
            .await
            .is_err()
        {
            tracing::error!("audit writer is gone; event lost");
        }
    }

    /// Records an event from synchronous code (start-up, shutdown).
    pub fn emit_blocking(&self, event: AuditEvent) {
        let record = AuditRecord::now(event, self.current_version());
        if self.tx.blocking_send(record).is_err() {
            tracing::error!("audit writer is gone; event lost");
        }
    }
}

impl AuditWriter {
    /// Waits until every record sent before all handles were dropped is written.
    pub fn finish(self) {
        if self.thread.join().is_err() {
            tracing::error!("audit writer thread panicked");
        }
    }
}
