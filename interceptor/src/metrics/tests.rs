//! Rendering and counting. The counters are process-wide, so tests compare before and after.

use std::{sync::atomic::Ordering, time::Instant};

use super::*;
use crate::audit::{AuditStats, CloseReason};

fn parse(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, v)| *v)
}

#[test]
fn requests_and_their_latency_are_rendered_as_counters_and_cumulative_histograms() {
    let before = parse(&render(
        global(),
        &Extra {
            audit: None,
            export: Vec::new(),
        },
    ));
    let session = SessionMetrics::new();
    for _ in 0..3 {
        session.request(0, Handling::Denied);
        session.response(0, Handling::Denied, Instant::now(), 10);
    }
    let after = parse(&render(
        global(),
        &Extra {
            audit: None,
            export: Vec::new(),
        },
    ));
    let name = "interceptor_requests_total{api=\"Produce\",decision=\"deny\"}";
    assert_eq!(value(&after, name) - value(&before, name), 3.0);
    let count = "interceptor_request_duration_seconds_count{api=\"Produce\",decision=\"deny\"}";
    assert_eq!(value(&after, count) - value(&before, count), 3.0);
    // Cumulative: +Inf equals the count, and buckets never decrease.
    let inf = "interceptor_request_duration_seconds_bucket{api=\"Produce\",decision=\"deny\",le=\"+Inf\"}";
    assert_eq!(value(&after, inf), value(&after, count));
    let buckets: Vec<f64> = after
        .iter()
        .filter(|(n, _)| {
            n.starts_with(
                "interceptor_request_duration_seconds_bucket{api=\"Produce\",decision=\"deny\"",
            )
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // A key beyond the slots is "other", never a panic.
    session.request(i16::MAX, Handling::Allowed);
    session.request(-1, Handling::Allowed);
    let text = render(
        global(),
        &Extra {
            audit: None,
            export: Vec::new(),
        },
    );
    assert!(text.contains("api=\"other\""));
}

#[test]
fn events_are_counted_by_their_labels() {
    let m = global();
    let before = m.connections_refused.load(Ordering::Relaxed);
    let deny_before = m.decisions.get("deny");
    m.on_event(&AuditEvent::ConnectionRefused {
        session: 1,
        client: "127.0.0.1:1".parse().unwrap(),
        original_dst: "127.0.0.1:2".parse().unwrap(),
        reason: CloseReason::NotProtected,
        detail: String::new(),
    });
    m.on_event(&AuditEvent::Kernel {
        kind: "dropped_no_listener",
        client: "127.0.0.1:1".parse().unwrap(),
        original_dst: "127.0.0.1:2".parse().unwrap(),
    });
    assert_eq!(m.connections_refused.load(Ordering::Relaxed), before + 1);
    assert!(m.kernel_events.get("dropped_no_listener") >= 1);
    assert_eq!(m.decisions.get("deny"), deny_before);
    let text = render(
        m,
        &Extra {
            audit: None,
            export: Vec::new(),
        },
    );
    assert!(text.contains("interceptor_kernel_events_total{kind=\"dropped_no_listener\"}"));
}

#[test]
fn audit_stats_render_with_an_fsync_histogram_and_labels_are_escaped() {
    let stats = AuditStats::default();
    stats.written.store(7, Ordering::Relaxed);
    stats.group_buckets[0].store(2, Ordering::Relaxed);
    stats.group_buckets[3].store(1, Ordering::Relaxed);
    stats.group_micros_sum.store(1_500, Ordering::Relaxed);
    let text = render(
        global(),
        &Extra {
            audit: Some(&stats),
            export: Vec::new(),
        },
    );
    let samples = parse(&text);
    assert_eq!(
        value(&samples, "interceptor_audit_events_written_total"),
        7.0
    );
    assert_eq!(
        value(
            &samples,
            "interceptor_audit_fsync_seconds_bucket{le=\"0.0001\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "interceptor_audit_fsync_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    assert_eq!(
        value(&samples, "interceptor_audit_fsync_seconds_sum"),
        0.0015
    );
    assert_eq!(render::escape_for_test("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}
