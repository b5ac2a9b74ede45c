//! Prometheus metrics: process-wide atomics, rendered in the text exposition format on the
//! admin listener (`GET /metrics`).
//!
//! Two sources feed them. The relay reports each request and its answer
//! ([`SessionMetrics`]): counts and latency by api and handling, bytes. Everything else
//! (connections, authentications, decisions, transforms, kernel events, reloads) is counted
//! from the audit events as they are queued ([`Metrics::on_event`]), so the metrics and the
//! trail cannot disagree and no other code needs to know about metrics. Counters on the hot
//! path are fixed arrays of atomics; labelled counters with open-ended labels (authentication
//! failure reasons) take a lock, and only on failures.

mod render;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

pub use render::{render, Extra};

use crate::{
    audit::{AuditEvent, AuthOutcome},
    proxy::tap::Handling,
};

/// Api keys with their own slot; higher keys share the last one.
const API_SLOTS: usize = 96;
const HANDLINGS: [Handling; 4] = [
    Handling::Allowed,
    Handling::Partial,
    Handling::Denied,
    Handling::Authentication,
];
/// Upper bounds (µs) of the request latency buckets: 100 µs to 10 s.
pub const LATENCY_BUCKETS_MICROS: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// One latency histogram: cumulative rendering is done at scrape time.
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_MICROS.len() + 1],
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe_micros(&self, micros: u64) {
        let slot = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Counters keyed by a fixed list of label values; anything else goes to `other`.
pub struct Fixed<const N: usize> {
    labels: [&'static str; N],
    counts: [AtomicU64; N],
    other: AtomicU64,
}

impl<const N: usize> Fixed<N> {
    const fn new(labels: [&'static str; N]) -> Self {
        Self {
            labels,
            counts: [const { AtomicU64::new(0) }; N],
            other: AtomicU64::new(0),
        }
    }

    fn add(&self, label: &str) {
        self.add_n(label, 1);
    }

    fn add_n(&self, label: &str, n: u64) {
        match self.labels.iter().position(|l| *l == label) {
            Some(i) => self.counts[i].fetch_add(n, Ordering::Relaxed),
            None => self.other.fetch_add(n, Ordering::Relaxed),
        };
    }

    pub fn get(&self, label: &str) -> u64 {
        self.labels
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    fn values(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.labels
            .iter()
            .zip(&self.counts)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
            .chain(std::iter::once((
                "other",
                self.other.load(Ordering::Relaxed),
            )))
    }
}

/// Process-wide metrics.
pub struct Metrics {
    started: OnceCell,
    /// Set when the daemon is ready (kernel programs attached, policy loaded, listening).
    pub ready: AtomicBool,
    requests: [[AtomicU64; HANDLINGS.len()]; API_SLOTS],
    latency: [[Histogram; HANDLINGS.len()]; API_SLOTS],
    pub bytes_to_broker: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub connections_refused: AtomicU64,
    pub authentications: Fixed<2>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    pub decisions: Fixed<4>,
    pub transforms: Fixed<8>,
    pub records_events: Fixed<2>,
    pub kernel_events: Fixed<4>,
    pub policy_reloads: Fixed<2>,
    pub detokenize: Fixed<5>,
    pub request_refusals: AtomicU64,
    pub upstream_auth_failures: AtomicU64,
}

/// The process start time, set once.
struct OnceCell(std::sync::OnceLock<(Instant, f64)>);

static METRICS: Metrics = Metrics {
    started: OnceCell(std::sync::OnceLock::new()),
    ready: AtomicBool::new(false),
    requests: [const { [const { AtomicU64::new(0) }; HANDLINGS.len()] }; API_SLOTS],
    latency: [const { [const { Histogram::new() }; HANDLINGS.len()] }; API_SLOTS],
    bytes_to_broker: AtomicU64::new(0),
    bytes_to_client: AtomicU64::new(0),
    connections_opened: AtomicU64::new(0),
    connections_closed: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
    authentications: Fixed::new(["success", "failure"]),
    auth_failures: Mutex::new(BTreeMap::new()),
    decisions: Fixed::new(["allow", "deny", "violation", "narrowed"]),
    transforms: Fixed::new([
        "produce/masked",
        "produce/refused",
        "fetch/masked",
        "fetch/revealed",
        "fetch/withheld",
        "fetch/refused",
        "produce/revealed",
        "produce/withheld",
    ]),
    records_events: Fixed::new(["produce", "fetch"]),
    kernel_events: Fixed::new([
        "steered",
        "dropped_no_listener",
        "passed_fail_open",
        "assign_failed",
    ]),
    policy_reloads: Fixed::new(["loaded", "rejected"]),
    detokenize: Fixed::new([
        "revealed",
        "denied",
        "unknown_token",
        "unauthenticated",
        "error",
    ]),
    request_refusals: AtomicU64::new(0),
    upstream_auth_failures: AtomicU64::new(0),
};

pub fn global() -> &'static Metrics {
    &METRICS
}

fn slot(api_key: i16) -> usize {
    usize::try_from(api_key)
        .ok()
        .filter(|&k| k < API_SLOTS - 1)
        .unwrap_or(API_SLOTS - 1)
}

fn handling_slot(handling: Handling) -> usize {
    HANDLINGS.iter().position(|h| *h == handling).unwrap_or(0)
}

impl Metrics {
    /// Records the process start (for `process_start_time_seconds`).
    pub fn mark_start(&self) {
        let now = time::OffsetDateTime::now_utc();
        let _ = self
            .started
            .0
            .set((Instant::now(), now.unix_timestamp_nanos() as f64 / 1e9));
    }

    pub fn start_time(&self) -> Option<f64> {
        self.started.0.get().map(|s| s.1)
    }

    /// Every audit event passes here when it is queued.
    pub fn on_event(&self, event: &AuditEvent) {
        use AuditEvent as E;
        match event {
            E::ConnectionOpen { .. } => {
                self.connections_opened.fetch_add(1, Ordering::Relaxed);
            }
            E::ConnectionClose { .. } => {
                self.connections_closed.fetch_add(1, Ordering::Relaxed);
            }
            E::ConnectionRefused { .. } => {
                self.connections_refused.fetch_add(1, Ordering::Relaxed);
            }
            E::Authentication {
                outcome, reason, ..
            } => match outcome {
                AuthOutcome::Success => self.authentications.add("success"),
                AuthOutcome::Failure => {
                    self.authentications.add("failure");
                    if let Ok(mut reasons) = self.auth_failures.lock() {
                        // Reasons are a fixed set of codes in the identity layer: bounded.
                        *reasons.entry(reason.unwrap_or("unknown")).or_default() += 1;
                    }
                }
            },
            E::UpstreamAuthentication { .. } => {
                self.upstream_auth_failures.fetch_add(1, Ordering::Relaxed);
            }
            E::RequestRefused { .. } => {
                self.request_refusals.fetch_add(1, Ordering::Relaxed);
            }
            E::Decision {
                decision, messages, ..
            } => self.decisions.add_n(decision, messages.unwrap_or(1)),
            E::Transform { stage, outcome, .. } => {
                self.transforms.add(&format!("{stage}/{outcome}"));
            }
            E::Records { stage, .. } => self.records_events.add(stage),
            E::Kernel { kind, .. } => self.kernel_events.add(kind),
            E::PolicyReload { outcome, .. } => self.policy_reloads.add(outcome),
            E::Detokenize { outcome, .. } => self.detokenize.add(outcome),
            E::DaemonStart { .. } | E::DaemonStop { .. } | E::AuditLoss { .. } => {}
        }
    }

    /// Requests by api key and handling, across all api keys: (api key, handling, count).
    pub fn requests(&self) -> impl Iterator<Item = (usize, Handling, u64)> + '_ {
        self.requests.iter().enumerate().flat_map(|(api, row)| {
            row.iter()
                .enumerate()
                .map(move |(h, c)| (api, HANDLINGS[h], c.load(Ordering::Relaxed)))
                .filter(|(_, _, c)| *c > 0)
        })
    }

    pub fn requests_of(&self, handling: Handling) -> u64 {
        let h = handling_slot(handling);
        self.requests
            .iter()
            .map(|row| row[h].load(Ordering::Relaxed))
            .sum()
    }

    fn auth_failure_reasons(&self) -> Vec<(&'static str, u64)> {
        self.auth_failures
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }
}

/// One connection's request metrics (process-wide counters; the handle exists so that a
/// per-session view can be added without touching the relay).
#[derive(Default)]
pub struct SessionMetrics;

impl SessionMetrics {
    pub fn new() -> Self {
        Self
    }

    pub fn request(&self, api_key: i16, handling: Handling) {
        METRICS.requests[slot(api_key)][handling_slot(handling)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn response(&self, api_key: i16, handling: Handling, received: Instant, _bytes: usize) {
        let micros = u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
        METRICS.latency[slot(api_key)][handling_slot(handling)].observe_micros(micros);
    }

    pub fn bytes_to_broker(&self, bytes: usize) {
        METRICS
            .bytes_to_broker
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn bytes_to_client(&self, bytes: usize) {
        METRICS
            .bytes_to_client
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// A short summary for `interceptor status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub requests: BTreeMap<&'static str, u64>,
    pub connections_open: u64,
    pub connections_total: u64,
    pub connections_refused: u64,
    pub authentication_failures: u64,
    pub decisions: BTreeMap<&'static str, u64>,
    pub transforms: u64,
    pub records_events: u64,
    pub kernel_drops: u64,
    pub audit: Option<AuditSummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditSummary {
    pub queue_depth: u64,
    pub written: u64,
    pub lost: u64,
    pub failing: bool,
    pub fsync_mean_micros: u64,
    pub fsync_max_micros: u64,
}

impl Metrics {
    pub fn summary(&self, audit: Option<&crate::audit::AuditStats>) -> Summary {
        let opened = self.connections_opened.load(Ordering::Relaxed);
        let closed = self.connections_closed.load(Ordering::Relaxed);
        Summary {
            requests: HANDLINGS
                .iter()
                .map(|h| (h.as_str(), self.requests_of(*h)))
                .collect(),
            connections_open: opened.saturating_sub(closed),
            connections_total: opened,
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            authentication_failures: self.authentications.get("failure"),
            decisions: self.decisions.values().collect(),
            transforms: self.transforms.values().map(|(_, v)| v).sum(),
            records_events: self.records_events.values().map(|(_, v)| v).sum(),
            kernel_drops: self.kernel_events.get("dropped_no_listener"),
            audit: audit.map(|a| {
                let groups = a.groups.load(Ordering::Relaxed);
                AuditSummary {
                    queue_depth: a.queued.load(Ordering::Relaxed),
                    written: a.written.load(Ordering::Relaxed),
                    lost: a.lost.load(Ordering::Relaxed),
                    failing: a.failing.load(Ordering::Relaxed),
                    fsync_mean_micros: a.group_micros_sum.load(Ordering::Relaxed) / groups.max(1),
                    fsync_max_micros: a.group_micros_max.load(Ordering::Relaxed),
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests;
