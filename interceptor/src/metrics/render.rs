//! The Prometheus text exposition format (0.0.4).

use std::{fmt::Write, sync::atomic::Ordering};

use super::{Histogram, Metrics, API_SLOTS, HANDLINGS, LATENCY_BUCKETS_MICROS};
use crate::{
    audit::{AuditStats, GROUP_BUCKETS_MICROS},
    kafka::authz::table::api_name,
};

/// What the metrics module does not own but exports.
pub struct Extra<'a> {
    pub audit: Option<&'a AuditStats>,
    /// The audit exporters' counters.
    pub export: Vec<crate::audit::export::SinkStats>,
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
pub fn escape_for_test(value: &str) -> String {
    escape(value)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn seconds(micros: u64) -> String {
    format!("{}", micros as f64 / 1e6)
}

fn api_label(slot: usize) -> String {
    if slot == API_SLOTS - 1 {
        "other".into()
    } else {
        api_name(i16::try_from(slot).unwrap_or(-1)).to_owned()
    }
}

/// Renders every metric.
pub fn render(m: &Metrics, extra: &Extra<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;

    header(
        o,
        "interceptor_build_info",
        "gauge",
        "The daemon's version.",
    );
    let _ = writeln!(
        o,
        "interceptor_build_info{{version=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION"))
    );
    if let Some(start) = m.start_time() {
        header(
            o,
            "process_start_time_seconds",
            "gauge",
            "When the daemon started (Unix time).",
        );
        let _ = writeln!(o, "process_start_time_seconds {start}");
    }
    header(
        o,
        "interceptor_ready",
        "gauge",
        "1 once kernel programs, policy and listeners are up.",
    );
    let _ = writeln!(
        o,
        "interceptor_ready {}",
        u8::from(m.ready.load(Ordering::Relaxed))
    );

    header(
        o,
        "interceptor_requests_total",
        "counter",
        "Kafka requests by api and how the interceptor handled them (allow, partial, deny, auth).",
    );
    for (api, handling, count) in m.requests() {
        let _ = writeln!(
            o,
            "interceptor_requests_total{{api=\"{}\",decision=\"{}\"}} {count}",
            escape(&api_label(api)),
            handling.as_str()
        );
    }
    header(
        o,
        "interceptor_request_duration_seconds",
        "histogram",
        "From a request read to its answer sent, by api and decision.",
    );
    for (api, row) in m.latency.iter().enumerate() {
        for (h, histogram) in row.iter().enumerate() {
            if histogram.count() > 0 {
                let labels = format!(
                    "api=\"{}\",decision=\"{}\"",
                    escape(&api_label(api)),
                    HANDLINGS[h].as_str()
                );
                histogram_lines(
                    o,
                    "interceptor_request_duration_seconds",
                    &labels,
                    histogram,
                );
            }
        }
    }

    header(
        o,
        "interceptor_bytes_total",
        "counter",
        "Bytes written, by direction.",
    );
    let _ = writeln!(
        o,
        "interceptor_bytes_total{{direction=\"to_broker\"}} {}",
        m.bytes_to_broker.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        o,
        "interceptor_bytes_total{{direction=\"to_client\"}} {}",
        m.bytes_to_client.load(Ordering::Relaxed)
    );

    let opened = m.connections_opened.load(Ordering::Relaxed);
    let closed = m.connections_closed.load(Ordering::Relaxed);
    header(
        o,
        "interceptor_connections_total",
        "counter",
        "Client connections, by outcome.",
    );
    let _ = writeln!(
        o,
        "interceptor_connections_total{{outcome=\"opened\"}} {opened}"
    );
    let _ = writeln!(
        o,
        "interceptor_connections_total{{outcome=\"refused\"}} {}",
        m.connections_refused.load(Ordering::Relaxed)
    );
    header(
        o,
        "interceptor_connections_open",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(
        o,
        "interceptor_connections_open {}",
        opened.saturating_sub(closed)
    );

    header(
        o,
        "interceptor_authentications_total",
        "counter",
        "Client authentications, by outcome.",
    );
    for (label, v) in m.authentications.values().filter(|(l, _)| *l != "other") {
        let _ = writeln!(
            o,
            "interceptor_authentications_total{{outcome=\"{label}\"}} {v}"
        );
    }
    header(
        o,
        "interceptor_authentication_failures_total",
        "counter",
        "Failed client authentications, by reason.",
    );
    for (reason, v) in m.auth_failure_reasons() {
        let _ = writeln!(
            o,
            "interceptor_authentication_failures_total{{reason=\"{}\"}} {v}",
            escape(reason)
        );
    }
    header(
        o,
        "interceptor_upstream_authentication_failures_total",
        "counter",
        "Times the broker refused the interceptor's own credentials.",
    );
    let _ = writeln!(
        o,
        "interceptor_upstream_authentication_failures_total {}",
        m.upstream_auth_failures.load(Ordering::Relaxed)
    );
    header(
        o,
        "interceptor_requests_refused_total",
        "counter",
        "Requests refused without a policy decision (unauthenticated, expired session).",
    );
    let _ = writeln!(
        o,
        "interceptor_requests_refused_total {}",
        m.request_refusals.load(Ordering::Relaxed)
    );

    fixed(
        o,
        "interceptor_decisions_total",
        "Policy decisions.",
        "decision",
        m.decisions.values(),
    );
    header(
        o,
        "interceptor_transforms_total",
        "counter",
        "Masking steps on a partition's records.",
    );
    for (label, v) in m
        .transforms
        .values()
        .filter(|(l, v)| *l != "other" || *v > 0)
    {
        let (stage, outcome) = label.split_once('/').unwrap_or(("other", "other"));
        let _ = writeln!(
            o,
            "interceptor_transforms_total{{stage=\"{stage}\",outcome=\"{outcome}\"}} {v}"
        );
    }
    fixed(
        o,
        "interceptor_records_events_total",
        "Produce acknowledgements and fetch answers described in the audit trail.",
        "stage",
        m.records_events.values(),
    );
    fixed(
        o,
        "interceptor_kernel_events_total",
        "What the steering program did with new connections (dropped_no_listener: refused while no daemon listened).",
        "kind",
        m.kernel_events.values(),
    );
    fixed(
        o,
        "interceptor_policy_reloads_total",
        "Policy sets loaded or rejected.",
        "outcome",
        m.policy_reloads.values(),
    );
    fixed(
        o,
        "interceptor_detokenize_total",
        "interceptor detokenize requests.",
        "outcome",
        m.detokenize.values(),
    );

    if let Some(a) = extra.audit {
        header(
            o,
            "interceptor_audit_queue_depth",
            "gauge",
            "Audit events waiting for the writer.",
        );
        let _ = writeln!(
            o,
            "interceptor_audit_queue_depth {}",
            a.queued.load(Ordering::Relaxed)
        );
        header(
            o,
            "interceptor_audit_events_written_total",
            "counter",
            "Audit events made durable.",
        );
        let _ = writeln!(
            o,
            "interceptor_audit_events_written_total {}",
            a.written.load(Ordering::Relaxed)
        );
        header(
            o,
            "interceptor_audit_events_lost_total",
            "counter",
            "Audit events that could not be written (counted, never silent).",
        );
        let _ = writeln!(
            o,
            "interceptor_audit_events_lost_total {}",
            a.lost.load(Ordering::Relaxed)
        );
        header(
            o,
            "interceptor_audit_write_failures_total",
            "counter",
            "Failed group writes.",
        );
        let _ = writeln!(
            o,
            "interceptor_audit_write_failures_total {}",
            a.failures.load(Ordering::Relaxed)
        );
        header(
            o,
            "interceptor_audit_failing",
            "gauge",
            "1 while the trail cannot be written.",
        );
        let _ = writeln!(
            o,
            "interceptor_audit_failing {}",
            u8::from(a.failing.load(Ordering::Relaxed))
        );
        header(
            o,
            "interceptor_audit_fsync_seconds",
            "histogram",
            "Write and fsync time of each group of audit events.",
        );
        let mut cumulative = 0;
        for (i, bound) in GROUP_BUCKETS_MICROS.iter().enumerate() {
            cumulative += a.group_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "interceptor_audit_fsync_seconds_bucket{{le=\"{}\"}} {cumulative}",
                seconds(*bound)
            );
        }
        cumulative += a.group_buckets[GROUP_BUCKETS_MICROS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "interceptor_audit_fsync_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            o,
            "interceptor_audit_fsync_seconds_sum {}",
            seconds(a.group_micros_sum.load(Ordering::Relaxed))
        );
        let _ = writeln!(o, "interceptor_audit_fsync_seconds_count {cumulative}");
    }
    if !extra.export.is_empty() {
        header(
            o,
            "interceptor_export_sent_total",
            "counter",
            "Audit events delivered, by sink.",
        );
        for sink in &extra.export {
            let _ = writeln!(
                o,
                "interceptor_export_sent_total{{sink=\"{}\"}} {}",
                escape(&sink.name),
                sink.sent
            );
        }
        header(
            o,
            "interceptor_export_lost_total",
            "counter",
            "Audit events a sink gave up on, by reason (counted, never silent).",
        );
        for sink in &extra.export {
            let l = &sink.lost;
            for (reason, v) in [
                ("full", l.full),
                ("too_large", l.too_large),
                ("error", l.error),
                ("shutdown", l.shutdown),
            ] {
                let _ = writeln!(
                    o,
                    "interceptor_export_lost_total{{sink=\"{}\",reason=\"{reason}\"}} {v}",
                    escape(&sink.name)
                );
            }
        }
        header(
            o,
            "interceptor_export_queued",
            "gauge",
            "Audit events buffered or in flight, by sink.",
        );
        for sink in &extra.export {
            let _ = writeln!(
                o,
                "interceptor_export_queued{{sink=\"{}\"}} {}",
                escape(&sink.name),
                sink.queued
            );
        }
        header(
            o,
            "interceptor_export_connected",
            "gauge",
            "1 while the sink is connected.",
        );
        for sink in &extra.export {
            let _ = writeln!(
                o,
                "interceptor_export_connected{{sink=\"{}\"}} {}",
                escape(&sink.name),
                u8::from(sink.connected)
            );
        }
    }
    out
}

fn fixed(
    o: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'static str, u64)>,
) {
    header(o, name, "counter", help);
    for (value, v) in values.filter(|(l, v)| *l != "other" || *v > 0) {
        let _ = writeln!(o, "{name}{{{label}=\"{}\"}} {v}", escape(value));
    }
}

fn histogram_lines(o: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_MICROS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
            seconds(*bound)
        );
    }
    cumulative += h.buckets[LATENCY_BUCKETS_MICROS.len()].load(Ordering::Relaxed);
    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        o,
        "{name}_sum{{{labels}}} {}",
        seconds(h.sum_micros.load(Ordering::Relaxed))
    );
    let _ = writeln!(o, "{name}_count{{{labels}}} {cumulative}");
}
