//! One sink's buffer and counters, shared by the thread that offers lines (the audit writer),
//! the sink's worker task and whoever asks for stats.
//!
//! The writer thread only ever takes this mutex for a few pointer moves: it never waits for
//! the worker's I/O, which happens outside the lock. Every event that leaves the buffer other
//! than by being delivered is counted under one reason, and reported through `tracing` at
//! most once per [`LOSS_LOG_INTERVAL`] (the first loss at once), so no loss is silent.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;

use super::{config::OnFull, Severity};

/// Losses are logged at most this often per sink (with the count since the last report).
pub const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often an idle worker wakes to report losses that happened since the last report.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// One sealed line, as buffered: the JSON object without its newline (a copy: a queued line
/// never pins the writer's larger buffers).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub line: Bytes,
    pub seq: u64,
    pub time_ms: i64,
    pub severity: Severity,
    pub event: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Syslog,
    Kafka,
}

/// Why events were lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LostCounts {
    /// The buffer was full (`on_full` decided which event went).
    pub full: u64,
    /// The event alone is larger than the sink accepts (never split: that would break the
    /// JSON).
    pub too_large: u64,
    /// The collector refused it for good (a non-retriable Kafka error).
    pub error: u64,
    /// Still buffered or unconfirmed when shutdown's time ran out.
    pub shutdown: u64,
}

impl LostCounts {
    pub fn total(&self) -> u64 {
        self.full + self.too_large + self.error + self.shutdown
    }

    fn add(&mut self, reason: LossReason, n: u64) {
        let counter = match reason {
            LossReason::Full => &mut self.full,
            LossReason::TooLarge => &mut self.too_large,
            LossReason::Error => &mut self.error,
            LossReason::Shutdown => &mut self.shutdown,
        };
        *counter = counter.saturating_add(n);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossReason {
    Full,
    TooLarge,
    Error,
    Shutdown,
}

/// A sink's state as [`super::Exporters::stats`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    pub name: String,
    pub kind: SinkKind,
    /// The collector: `udp://…`, `tcp://…`, `unix://…` or `broker/topic`.
    pub target: String,
    /// Buffered plus in flight (sent but not yet confirmed, or being retried).
    pub queued: u64,
    /// Delivered: written to the socket (syslog) or acknowledged by the broker (Kafka).
    pub sent: u64,
    pub lost: LostCounts,
    /// Sends repeated after an error (a retriable Kafka error, a lost connection).
    pub retries: u64,
    pub last_error: Option<String>,
    pub connected: bool,
}

/// How much a sink buffers and what it accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub events: usize,
    pub bytes: usize,
    /// A line longer than this can never be delivered: lost `too_large` when offered.
    pub largest_line: usize,
    pub on_full: OnFull,
}

pub(crate) struct Sink {
    pub name: String,
    pub kind: SinkKind,
    pub target: String,
    limits: Limits,
    state: Mutex<State>,
    /// Wakes the worker: an event was offered, or shutdown began.
    wake: Notify,
    /// Wakes a worker waiting out a backoff when shutdown begins, so it tries once more
    /// right away instead of sleeping through the time it has to flush.
    closed: Notify,
    /// Signalled when the worker has ended.
    exited: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Entry>,
    queued_bytes: usize,
    /// Taken by the worker and not yet settled (sent or lost). They count against the
    /// buffer's limits too, so the limits bound everything the sink holds.
    in_flight: usize,
    in_flight_bytes: usize,
    sent: u64,
    lost: LostCounts,
    retries: u64,
    last_error: Option<String>,
    connected: bool,
    /// Shutdown began; the worker flushes until this deadline.
    closing: Option<Instant>,
    /// Shutdown counted what was left: later updates from a worker still unwinding are
    /// ignored so nothing is counted twice.
    finished: bool,
    worker_exited: bool,
    unlogged: LostCounts,
    last_loss_log: Option<Instant>,
}

impl Sink {
    pub fn new(name: String, kind: SinkKind, target: String, limits: Limits) -> Sink {
        Sink {
            name,
            kind,
            target,
            limits,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            closed: Notify::new(),
            exited: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before anything that could panic, so a
        // poisoned lock still holds good counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers `entry`, applying the loss policy when full. Never waits for I/O.
    pub fn offer(&self, entry: Entry) {
        let report = {
            let mut st = self.lock();
            if st.finished {
                return;
            }
            let len = entry.line.len();
            if len > self.limits.largest_line {
                st.lose(LossReason::TooLarge, 1);
            } else {
                let mut accept = true;
                while st.queue.len() + st.in_flight >= self.limits.events
                    || (st.queued_bytes + st.in_flight_bytes).saturating_add(len)
                        > self.limits.bytes
                {
                    let oldest = match self.limits.on_full {
                        OnFull::DropNewest => None,
                        OnFull::DropOldest => st.queue.pop_front(),
                    };
                    // Events in flight are not dropped (the worker is sending them): with
                    // none queued, the offered event goes.
                    let Some(oldest) = oldest else {
                        accept = false;
                        break;
                    };
                    st.queued_bytes -= oldest.line.len();
                    st.lose(LossReason::Full, 1);
                }
                if accept {
                    st.queued_bytes += len;
                    st.queue.push_back(entry);
                } else {
                    st.lose(LossReason::Full, 1);
                }
            }
            st.loss_report(Instant::now())
        };
        self.wake.notify_one();
        self.log_losses(report);
    }

    /// Moves up to `max_events` entries (and `max_bytes` by `cost`, at least one entry) from
    /// the buffer to the worker.
    pub fn take(
        &self,
        max_events: usize,
        max_bytes: usize,
        cost: impl Fn(&Entry) -> usize,
    ) -> Vec<Entry> {
        let mut st = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_events {
            let Some(next) = st.queue.front() else { break };
            let c = cost(next);
            if !out.is_empty() && bytes.saturating_add(c) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(c);
            let Some(entry) = st.queue.pop_front() else {
                break;
            };
            st.queued_bytes -= entry.line.len();
            out.push(entry);
        }
        st.in_flight += out.len();
        st.in_flight_bytes += out.iter().map(|e| e.line.len()).sum::<usize>();
        out
    }

    /// `n` in-flight events (`bytes` of lines) were delivered.
    pub fn delivered(&self, n: usize, bytes: usize) {
        let mut st = self.lock();
        if st.finished {
            return;
        }
        st.in_flight = st.in_flight.saturating_sub(n);
        st.in_flight_bytes = st.in_flight_bytes.saturating_sub(bytes);
        st.sent = st.sent.saturating_add(n as u64);
        st.connected = true;
    }

    /// `n` in-flight events (`bytes` of lines) were lost for `reason`.
    pub fn lost_in_flight(&self, reason: LossReason, n: usize, bytes: usize) {
        let report = {
            let mut st = self.lock();
            if st.finished {
                return;
            }
            st.in_flight = st.in_flight.saturating_sub(n);
            st.in_flight_bytes = st.in_flight_bytes.saturating_sub(bytes);
            st.lose(reason, n as u64);
            st.loss_report(Instant::now())
        };
        self.log_losses(report);
    }

    pub fn retried(&self) {
        let mut st = self.lock();
        st.retries = st.retries.saturating_add(1);
    }

    /// Records a failure that cost the connection; logged when it differs from the previous
    /// one (a collector that stays down is not logged at every retry).
    pub fn failed(&self, error: String) {
        self.record_failure(error, true);
    }

    /// Records a refusal on a connection that stays up (a broker's error code).
    pub fn rejected(&self, error: String) {
        self.record_failure(error, false);
    }

    fn record_failure(&self, error: String, disconnected: bool) {
        let changed = {
            let mut st = self.lock();
            let was_connected = st.connected;
            if disconnected {
                st.connected = false;
            }
            let changed =
                (was_connected && disconnected) || st.last_error.as_deref() != Some(error.as_str());
            st.last_error = Some(error.clone());
            changed
        };
        if changed {
            tracing::warn!(sink = %self.name, target = %self.target, "audit export: {error}");
        } else {
            tracing::debug!(sink = %self.name, target = %self.target, "audit export: {error}");
        }
    }

    pub fn set_connected(&self) {
        let was = std::mem::replace(&mut self.lock().connected, true);
        if !was {
            tracing::info!(sink = %self.name, target = %self.target, "audit export connected");
        }
    }

    /// When shutdown must be over, once it has begun.
    pub fn closing(&self) -> Option<Instant> {
        self.lock().closing
    }

    /// Waits until there is work: `true` when a batch should be taken (the buffer has
    /// `batch_events`, or its first entry has waited `linger`, or shutdown began), `false`
    /// when shutdown began and nothing is left. Reports losses while idle.
    pub async fn ready(&self, linger: Duration, batch_events: usize) -> bool {
        let mut first_seen: Option<Instant> = None;
        loop {
            let (len, closing) = {
                let st = self.lock();
                (st.queue.len(), st.closing)
            };
            let wait = if len == 0 {
                if closing.is_some() {
                    return false;
                }
                first_seen = None;
                IDLE_TICK
            } else {
                if closing.is_some() || len >= batch_events {
                    return true;
                }
                let since = *first_seen.get_or_insert_with(Instant::now);
                match linger.checked_sub(since.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return true,
                }
            };
            // A notification while nobody waits leaves a permit, so none is missed between
            // the check above and this wait.
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
            self.report_pending_losses();
        }
    }

    /// Logs losses not yet reported, if the interval allows.
    pub fn report_pending_losses(&self) {
        let report = self.lock().loss_report(Instant::now());
        self.log_losses(report);
    }

    fn log_losses(&self, report: Option<(LostCounts, LostCounts)>) {
        let Some((new, total)) = report else { return };
        tracing::warn!(
            sink = %self.name,
            target = %self.target,
            full = new.full,
            too_large = new.too_large,
            error = new.error,
            shutdown = new.shutdown,
            lost_total = total.total(),
            "audit export lost {} events since the last report",
            new.total()
        );
    }

    /// Shutdown begins: the worker flushes until `deadline`.
    pub fn close(&self, deadline: Instant) {
        {
            let mut st = self.lock();
            if st.closing.is_none_or(|d| deadline < d) {
                st.closing = Some(deadline);
            }
        }
        self.wake.notify_one();
        self.closed.notify_one();
    }

    /// Waits (blocking this thread) until the worker has ended or `deadline` passes; whether
    /// it ended.
    pub fn wait_exited(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        loop {
            if st.worker_exited {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            st = self
                .exited
                .wait_timeout(st, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Counts whatever is still buffered or in flight as lost and closes the books.
    pub fn finish(&self) -> SinkStats {
        let report = {
            let mut st = self.lock();
            if !st.finished {
                let left = st.queue.len() + st.in_flight;
                st.queue.clear();
                st.queued_bytes = 0;
                st.in_flight = 0;
                st.in_flight_bytes = 0;
                st.lose(LossReason::Shutdown, left as u64);
                st.finished = true;
            }
            // The final report is not rate-limited: nothing comes after it.
            st.last_loss_log = None;
            st.loss_report(Instant::now())
        };
        self.log_losses(report);
        self.stats()
    }

    pub fn worker_exited(&self) {
        self.lock().worker_exited = true;
        self.exited.notify_all();
    }

    pub fn stats(&self) -> SinkStats {
        let st = self.lock();
        SinkStats {
            name: self.name.clone(),
            kind: self.kind,
            target: self.target.clone(),
            queued: (st.queue.len() + st.in_flight) as u64,
            sent: st.sent,
            lost: st.lost,
            retries: st.retries,
            last_error: st.last_error.clone(),
            connected: st.connected,
        }
    }
}

impl State {
    fn lose(&mut self, reason: LossReason, n: u64) {
        self.lost.add(reason, n);
        self.unlogged.add(reason, n);
    }

    /// (new losses, totals) when a report is due.
    fn loss_report(&mut self, now: Instant) -> Option<(LostCounts, LostCounts)> {
        if self.unlogged.total() == 0 {
            return None;
        }
        if self
            .last_loss_log
            .is_some_and(|last| now.duration_since(last) < LOSS_LOG_INTERVAL)
        {
            return None;
        }
        self.last_loss_log = Some(now);
        Some((std::mem::take(&mut self.unlogged), self.lost))
    }
}

/// Marks the worker as ended when its task ends, however it ends (returned, aborted, or
/// dropped with the runtime), so shutdown never waits for a worker that is gone.
pub(crate) struct ExitGuard<'a>(pub &'a Sink);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        self.0.worker_exited();
    }
}

/// Exponential backoff between reconnections and retries.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Sleeps the next interval, cut short when shutdown begins (one more try then) and by
    /// its deadline; `false` when the deadline has passed (the worker should stop).
    pub async fn wait(&mut self, sink: &Sink) -> bool {
        let until = tokio::time::Instant::now() + self.next;
        self.next = (self.next * 2).min(Self::MAX);
        match sink.closing() {
            Some(deadline) => {
                let deadline = tokio::time::Instant::from_std(deadline);
                if deadline <= tokio::time::Instant::now() {
                    return false;
                }
                tokio::time::sleep_until(until.min(deadline)).await;
            }
            None => {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = sink.closed.notified() => {}
                }
            }
        }
        sink.closing().is_none_or(|d| Instant::now() < d)
    }
}

/// How long an I/O step may take: `timeout`, but never past shutdown's deadline.
pub(crate) fn step_timeout(timeout: Duration, closing: Option<Instant>) -> Duration {
    match closing {
        Some(deadline) => timeout.min(deadline.saturating_duration_since(Instant::now())),
        None => timeout,
    }
}
