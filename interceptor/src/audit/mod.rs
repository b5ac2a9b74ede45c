//! Audit events, the queue they wait in, and the writer that makes them durable.
//!
//! Sessions hand events to an [`AuditLog`] handle and get a [`Ticket`]; one writer thread
//! takes everything queued, writes it as one group (hash-chained lines, then one fsync) and
//! publishes how far the trail is durable. A session waits for its own last ticket
//! ([`AuditLog::sync`]) before the effect an event describes reaches anyone: before a
//! request is forwarded, before a response is sent. Many sessions' events share one fsync
//! (group commit), so the wait costs one disk flush, not one per event.
//!
//! The queue is bounded: when the disk is slow the sessions wait. When the disk fails, the
//! configured [`OnFailure`] decides: `refuse` (default) makes every waiting session fail (it
//! closes its connection: no effect without its record) while the writer retries; `continue`
//! lets traffic go on, counts the events it could not write, and records that count in the
//! trail once writing works again. Nothing is dropped without being counted.

pub mod chain;
pub mod cli;
mod event;
pub mod export;
mod file;
mod memory;
mod ocsf;
pub mod query;
pub mod verify;

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, RwLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::sync::{watch, Notify};

pub use event::{
    AuditEvent, AuditRecord, AuthOutcome, CloseReason, PartitionRecords, TransformCount,
};
pub use file::{AfterWrite, ChainHead, ChainedFiles, FileSettings};
pub use memory::MemorySink;
pub use ocsf::{instance_id, OCSF_VERSION};

#[derive(Debug, Error)]
pub enum AuditError {
    #[error("audit file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("audit event cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("audit file {path}, line {line}: {problem}; run `interceptor audit verify` on the directory")]
    Chain {
        path: std::path::PathBuf,
        line: u64,
        problem: String,
    },
}

/// The trail could not be made durable, and the configuration says to refuse traffic then.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[error("the audit trail cannot be written (disk full or unwritable); refusing traffic")]
pub struct AuditUnavailable;

/// Somewhere audit records go.
pub trait AuditSink: Send + 'static {
    /// Writes the records in order and returns once they are durable (or fails as a whole:
    /// nothing of a failed group may count as written).
    fn write_group(&mut self, records: &[AuditRecord]) -> Result<(), AuditError>;
}

/// What happens when the trail cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// No traffic whose record cannot be written: waiting sessions close their connections.
    #[default]
    Refuse,
    /// Traffic goes on; the lost events are counted, logged and recorded afterwards.
    Continue,
}

/// The writer's counters, read by metrics and `interceptor status`.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub lost: AtomicU64,
    pub groups: AtomicU64,
    pub failures: AtomicU64,
    /// Write-and-fsync time of each group, in microseconds (sum and count give the mean;
    /// `group_micros_max` the worst since start).
    pub group_micros_sum: AtomicU64,
    pub group_micros_max: AtomicU64,
    /// Per-group durations for latency histograms: bucket upper bounds in
    /// [`GROUP_BUCKETS_MICROS`], the last counting everything above.
    pub group_buckets: [AtomicU64; GROUP_BUCKETS_MICROS.len() + 1],
    /// Writing fails now (and traffic is refused, with `on_failure = "refuse"`).
    pub failing: std::sync::atomic::AtomicBool,
}

/// Upper bounds (µs) of the group write-and-fsync latency buckets.
pub const GROUP_BUCKETS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

impl AuditStats {
    fn observe_group(&self, took: Duration, events: usize) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.written.fetch_add(events as u64, Ordering::Relaxed);
        self.group_micros_sum.fetch_add(micros, Ordering::Relaxed);
        self.group_micros_max.fetch_max(micros, Ordering::Relaxed);
        let bucket = GROUP_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(GROUP_BUCKETS_MICROS.len());
        self.group_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// An event's place in the queue: durable once the writer has published a mark at or past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    /// Every ticket up to this one is written (or, with `continue`, given up on).
    upto: u64,
    /// Writing fails now and traffic must be refused.
    failing: bool,
}

struct Queue {
    records: VecDeque<AuditRecord>,
    /// The ticket the next record gets; tickets are handed out in queue order, so the
    /// writer's progress is one number.
    next_ticket: u64,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    capacity: usize,
    on_failure: OnFailure,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes sessions waiting for room in the queue.
    room: Notify,
    durable: watch::Sender<Durable>,
    /// `durable.upto`, readable without touching the channel (the common case: already there).
    durable_upto: AtomicU64,
    failing: std::sync::atomic::AtomicBool,
    stats: Arc<AuditStats>,
    handles: AtomicU64,
}

/// Cheap, cloneable handle to the audit writer.
pub struct AuditLog {
    shared: Arc<Shared>,
    /// The version of the policy set in force, stamped on every record.
    policy_version: Arc<RwLock<Arc<str>>>,
    /// The last ticket emitted through this handle and its clones (one per session).
    mark: Arc<AtomicU64>,
}

impl Clone for AuditLog {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
            policy_version: Arc::clone(&self.policy_version),
            mark: Arc::clone(&self.mark),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut queue) = self.shared.queue.lock() {
                queue.closed = true;
            }
            self.shared.work.notify_one();
        }
    }
}

/// Owns the writer thread; [`AuditWriter::finish`] drains and writes everything queued.
pub struct AuditWriter {
    thread: JoinHandle<()>,
}

/// How the queue behaves.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub capacity: usize,
    pub on_failure: OnFailure,
    /// Most records written as one group.
    pub max_group: usize,
}

impl QueueSettings {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            on_failure: OnFailure::Refuse,
            max_group: 4096,
        }
    }
}

/// A queue of this many records, refusing traffic on failure.
impl From<usize> for QueueSettings {
    fn from(capacity: usize) -> Self {
        Self::new(capacity)
    }
}

/// How long a failing writer waits before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// After the last handle is gone, how long a failing writer keeps trying before it counts the
/// rest as lost (so a daemon with a dead disk can still stop).
const GIVE_UP_AT_SHUTDOWN: Duration = Duration::from_secs(5);

impl AuditLog {
    /// Starts the writer thread for `sink`.
    pub fn start(sink: impl AuditSink, settings: impl Into<QueueSettings>) -> (Self, AuditWriter) {
        let settings = settings.into();
        let (durable, _) = watch::channel(Durable {
            upto: 0,
            failing: false,
        });
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                records: VecDeque::new(),
                next_ticket: 1,
                closed: false,
            }),
            capacity: settings.capacity.max(1),
            on_failure: settings.on_failure,
            work: Condvar::new(),
            room: Notify::new(),
            durable,
            durable_upto: AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
            stats: Arc::new(AuditStats::default()),
            handles: AtomicU64::new(1),
        });
        let writer_shared = Arc::clone(&shared);
        let max_group = settings.max_group.max(1);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(sink, &writer_shared, max_group))
            .expect("spawning the audit writer thread");
        let log = Self {
            shared,
            policy_version: Arc::new(RwLock::new(Arc::from("none"))),
            mark: Arc::new(AtomicU64::new(0)),
        };
        (log, AuditWriter { thread })
    }

    /// A handle for one session: [`sync`](Self::sync) waits for what this handle and its
    /// clones emitted, not for other sessions' events.
    pub fn for_session(&self) -> Self {
        let mut handle = self.clone();
        handle.mark = Arc::new(AtomicU64::new(0));
        handle
    }

    pub fn stats(&self) -> Arc<AuditStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Whether writing fails now (readiness).
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Acquire)
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

    /// Queues an event; waits while the queue is full.
    pub async fn emit(&self, event: AuditEvent) -> Option<Ticket> {
        let version = self.current_version();
        self.emit_under(event, version).await
    }

    /// Queues an event made under a given policy version (a decision records the version of
    /// the set that made it, even if a reload has happened since). `None` when the event was
    /// lost (the writer failing with a full queue, or gone): counted and logged.
    pub async fn emit_under(&self, event: AuditEvent, policy_version: Arc<str>) -> Option<Ticket> {
        crate::metrics::global().on_event(&event);
        let mut record = Some(AuditRecord::now(event, policy_version));
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(&mut record) {
                Push::Queued(ticket) => return Some(ticket),
                Push::Lost => return None,
                Push::Full => room.await,
            }
        }
    }

    /// Queues an event from synchronous code (start-up, shutdown, the writer's own thread
    /// must not call this).
    pub fn emit_blocking(&self, event: AuditEvent) -> Option<Ticket> {
        crate::metrics::global().on_event(&event);
        let mut record = Some(AuditRecord::now(event, self.current_version()));
        loop {
            match self.try_push(&mut record) {
                Push::Queued(ticket) => return Some(ticket),
                Push::Lost => return None,
                Push::Full => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    fn try_push(&self, record: &mut Option<AuditRecord>) -> Push {
        let shared = &*self.shared;
        let Ok(mut queue) = shared.queue.lock() else {
            return self.lose(record.take(), "the audit queue lock is poisoned");
        };
        if queue.closed {
            drop(queue);
            return self.lose(record.take(), "the audit writer has stopped");
        }
        if queue.records.len() >= shared.capacity {
            if shared.failing.load(Ordering::Acquire) {
                // Refusing traffic already; waiting here would also block the events that
                // say so (connection closes). Count and log instead.
                drop(queue);
                return self.lose(record.take(), "the audit queue is full while writing fails");
            }
            return Push::Full;
        }
        let Some(record) = record.take() else {
            return Push::Lost;
        };
        queue.records.push_back(record);
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        shared
            .stats
            .queued
            .store(queue.records.len() as u64, Ordering::Relaxed);
        drop(queue);
        shared.work.notify_one();
        self.mark.fetch_max(ticket, Ordering::AcqRel);
        Push::Queued(Ticket(ticket))
    }

    fn lose(&self, record: Option<AuditRecord>, why: &str) -> Push {
        self.shared.stats.lost.fetch_add(1, Ordering::Relaxed);
        if let Some(record) = record {
            tracing::error!("audit event lost ({why}): {record:?}");
        }
        Push::Lost
    }

    /// Waits until every event emitted through this handle (and its clones) is durable.
    /// `Err` when writing fails and the configuration says to refuse traffic.
    pub async fn sync(&self) -> Result<(), AuditUnavailable> {
        let want = self.mark.load(Ordering::Acquire);
        self.wait_for(want).await
    }

    /// The ticket of the last event emitted through this handle (and its clones): waiting for
    /// it later waits for exactly those, not for what is emitted after.
    pub fn mark(&self) -> Ticket {
        Ticket(self.mark.load(Ordering::Acquire))
    }

    /// Waits until the event with this ticket is durable.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), AuditUnavailable> {
        self.wait_for(ticket.0).await
    }

    async fn wait_for(&self, want: u64) -> Result<(), AuditUnavailable> {
        let shared = &*self.shared;
        if shared.durable_upto.load(Ordering::Acquire) >= want {
            return Ok(());
        }
        let mut rx = shared.durable.subscribe();
        loop {
            let now = *rx.borrow_and_update();
            if now.upto >= want {
                return Ok(());
            }
            if now.failing {
                return Err(AuditUnavailable);
            }
            if rx.changed().await.is_err() {
                return Err(AuditUnavailable);
            }
        }
    }
}

enum Push {
    Queued(Ticket),
    Full,
    Lost,
}

fn write_loop(mut sink: impl AuditSink, shared: &Shared, max_group: usize) {
    // Events given up on (`continue`) since the last successful write: recorded as one
    // `audit_loss` event once writing works again.
    let mut unrecorded_loss = 0u64;
    loop {
        let (group, last_ticket, closed) = {
            let Ok(mut queue) = shared.queue.lock() else {
                tracing::error!("audit queue lock poisoned; the writer stops");
                return;
            };
            while queue.records.is_empty() && !queue.closed {
                queue = match shared.work.wait(queue) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if queue.records.is_empty() {
                return;
            }
            let take = queue.records.len().min(max_group);
            let group: Vec<AuditRecord> = queue.records.drain(..take).collect();
            let last = queue.next_ticket - 1 - queue.records.len() as u64;
            shared
                .stats
                .queued
                .store(queue.records.len() as u64, Ordering::Relaxed);
            (group, last, queue.closed)
        };
        shared.room.notify_waiters();
        let mut group = group;
        if unrecorded_loss > 0 {
            group.insert(
                0,
                AuditRecord::now(
                    AuditEvent::AuditLoss {
                        events: unrecorded_loss,
                    },
                    Arc::from("none"),
                ),
            );
        }
        let failing_since = Instant::now();
        loop {
            let started = Instant::now();
            match sink.write_group(&group) {
                Ok(()) => {
                    shared.stats.observe_group(started.elapsed(), group.len());
                    unrecorded_loss = 0;
                    shared.stats.failing.store(false, Ordering::Release);
                    if shared.failing.swap(false, Ordering::AcqRel) {
                        tracing::info!("the audit trail is writable again");
                    }
                    publish(shared, last_ticket, false);
                    break;
                }
                Err(e) => {
                    shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                    let real = group.len() as u64 - u64::from(unrecorded_loss > 0);
                    let shutting_down =
                        closed || shared.queue.lock().map(|q| q.closed).unwrap_or(true);
                    let give_up = shared.on_failure == OnFailure::Continue
                        || (shutting_down && failing_since.elapsed() > GIVE_UP_AT_SHUTDOWN);
                    if give_up {
                        tracing::error!(
                            "audit write failed: {e}; {real} event(s) lost (counted; the count \
                             is recorded in the trail when writing works again)"
                        );
                        shared.stats.lost.fetch_add(real, Ordering::Relaxed);
                        unrecorded_loss += real;
                        if shared.on_failure == OnFailure::Continue {
                            publish(shared, last_ticket, false);
                        } else {
                            publish(shared, 0, true);
                        }
                        break;
                    }
                    shared.stats.failing.store(true, Ordering::Release);
                    if !shared.failing.swap(true, Ordering::AcqRel) {
                        tracing::error!(
                            "audit write failed: {e}; refusing traffic until the trail is \
                             writable (retrying every {RETRY_AFTER:?})"
                        );
                    }
                    publish(shared, 0, true);
                    std::thread::sleep(RETRY_AFTER);
                }
            }
        }
    }
}

fn publish(shared: &Shared, upto: u64, failing: bool) {
    let upto = upto.max(shared.durable_upto.load(Ordering::Acquire));
    shared.durable_upto.store(upto, Ordering::Release);
    shared.durable.send_replace(Durable { upto, failing });
}

impl AuditWriter {
    /// Waits until every record sent before all handles were dropped is written.
    pub fn finish(self) {
        if self.thread.join().is_err() {
            tracing::error!("audit writer thread panicked");
        }
    }
}

#[cfg(test)]
mod tests;
