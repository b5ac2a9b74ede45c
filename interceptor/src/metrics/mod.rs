//! Prometheus metrics (placeholder: the counters arrive with the metrics work).

use std::time::Instant;

use crate::{audit::AuditEvent, proxy::tap::Handling};

/// Process-wide metrics.
pub struct Metrics;

static METRICS: Metrics = Metrics;

pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// Every audit event passes here when it is queued (connections, authentications,
    /// decisions, transforms and kernel events are counted from the trail's own events).
    pub fn on_event(&self, _event: &AuditEvent) {}
}

/// One connection's request metrics.
pub struct SessionMetrics;

impl SessionMetrics {
    pub fn new() -> Self {
        Self
    }

    pub fn request(&self, _api_key: i16, _handling: Handling) {}

    pub fn response(&self, _api_key: i16, _handling: Handling, _received: Instant, _bytes: usize) {}

    pub fn bytes_to_broker(&self, _bytes: usize) {}

    pub fn bytes_to_client(&self, _bytes: usize) {}
}

impl Default for SessionMetrics {
    fn default() -> Self {
        Self::new()
    }
}
