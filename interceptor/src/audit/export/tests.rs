//! RFC 5424 formatting, the loss policies and the UDP size limit.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{
    config::{Facility, OnFull, SyslogAddress},
    sink::{Entry, Limits, LossReason, Sink, SinkKind},
    syslog::{self, escape_param_value, pri, sanitize_hostname, timestamp, Settings},
    ExportConfig, ExportContext, Exporters, LineMeta, Severity,
};
use crate::{config::UpstreamMechanism, ebpf::ExemptRegistry};

fn entry(seq: u64, line: &str) -> Entry {
    Entry {
        line: Bytes::copy_from_slice(line.as_bytes()),
        seq,
        time_ms: 1_700_000_000_123,
        severity: Severity::Warning,
        event: "decision",
    }
}

/// A sealed line as the writer hands it over.
pub(super) fn line(seq: u64, padding: usize) -> (Bytes, LineMeta) {
    let text = format!(
        "{{\"seq\":{seq},\"prev_hash\":\"{}\",\"event\":\"decision\",\"note\":\"quote \\\" backslash \\\\ bracket ] é\",\"pad\":\"{}\",\"hash\":\"{}\"}}\n",
        "0".repeat(64),
        "x".repeat(padding),
        "f".repeat(64)
    );
    let meta = LineMeta {
        seq,
        time_ms: 1_700_000_000_000 + seq as i64,
        severity: Severity::Info,
        event: "decision",
    };
    (Bytes::from(text), meta)
}

pub(super) fn context(runtime: &tokio::runtime::Runtime) -> ExportContext {
    ExportContext {
        runtime: runtime.handle().clone(),
        exempt: ExemptRegistry::disabled(),
        broker_credentials: None,
        upstream_mechanism: UpstreamMechanism::None,
        hostname: "node-1.example".into(),
    }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(super) fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 5424

#[test]
fn pri_is_facility_times_eight_plus_severity() {
    assert_eq!(pri(Facility::Kern, Severity::Warning), 4);
    assert_eq!(pri(Facility::Auth, Severity::Info), 38);
    assert_eq!(pri(Facility::Authpriv, Severity::Notice), 85);
    assert_eq!(pri(Facility::Audit, Severity::Warning), 108);
    assert_eq!(pri(Facility::Local7, Severity::Info), 190);
}

#[test]
fn sd_param_values_escape_quote_backslash_and_bracket_only() {
    let mut out = Vec::new();
    escape_param_value(&mut out, r#"a"b\c]d[e=f é"#);
    assert_eq!(String::from_utf8(out).unwrap(), r#"a\"b\\c\]d[e=f é"#);
}

#[test]
fn timestamps_are_utc_with_milliseconds() {
    assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999Z");
    assert_eq!(timestamp(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    // Beyond what RFC 5424's four-digit year can say.
    assert_eq!(timestamp(253_402_300_800_000), "-");
    assert_eq!(timestamp(i64::MIN), "-");
}

#[test]
fn header_fields_are_printable_ascii() {
    assert_eq!(sanitize_hostname("node-1.example"), "node-1.example");
    assert_eq!(sanitize_hostname("bad host\té"), "bad_host__");
    assert_eq!(sanitize_hostname(""), "-");
    assert_eq!(sanitize_hostname(&"h".repeat(300)).len(), 255);
}

#[test]
fn a_message_is_header_structured_data_and_the_json_line() {
    let settings = Settings {
        address: SyslogAddress::Udp("127.0.0.1:514".into()),
        facility: Facility::Auth,
        hostname: "node-1".into(),
        app_name: "interceptor".into(),
        procid: "4242".into(),
        max_message_bytes: 65_507,
        timeout: Duration::from_secs(1),
    };
    let mut out = Vec::new();
    syslog::format(&mut out, &settings, &entry(17, r#"{"seq":17,"hash":"ab"}"#));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"<36>1 2023-11-14T22:13:20.123Z node-1 interceptor 4242 decision [interceptor@32473 seq="17"] {"seq":17,"hash":"ab"}"#
    );
    let mut long_event = entry(1, "{}");
    long_event.event = "an_event_name_longer_than_thirty_two_characters";
    let mut out = Vec::new();
    syslog::format(&mut out, &settings, &long_event);
    let text = String::from_utf8(out).unwrap();
    let msgid = text.split(' ').nth(5).unwrap();
    assert_eq!(msgid, "an_event_name_longer_than_thirty");
}

// ---------------------------------------------------------------------------------------------
// Loss policy (a sink with no worker never drains)

fn sink(on_full: OnFull, events: usize, bytes: usize) -> Sink {
    Sink::new(
        "test".into(),
        SinkKind::Syslog,
        "udp://test".into(),
        Limits {
            events,
            bytes,
            largest_line: 100,
            on_full,
        },
    )
}

fn queued_seqs(s: &Sink) -> Vec<u64> {
    s.take(usize::MAX, usize::MAX, |_| 0)
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn drop_newest_keeps_the_first_events_and_counts_the_rest() {
    let s = sink(OnFull::DropNewest, 10, 1 << 20);
    for seq in 1..=25 {
        s.offer(entry(seq, "{}"));
    }
    let stats = s.stats();
    assert_eq!(stats.queued, 10);
    assert_eq!(stats.lost.full, 15);
    assert_eq!(stats.lost.total(), 15);
    assert_eq!(queued_seqs(&s), (1..=10).collect::<Vec<_>>());
}

#[test]
fn drop_oldest_keeps_the_latest_events_and_counts_the_rest() {
    let s = sink(OnFull::DropOldest, 10, 1 << 20);
    for seq in 1..=25 {
        s.offer(entry(seq, "{}"));
    }
    let stats = s.stats();
    assert_eq!(stats.queued, 10);
    assert_eq!(stats.lost.full, 15);
    assert_eq!(queued_seqs(&s), (16..=25).collect::<Vec<_>>());
}

#[test]
fn the_byte_limit_counts_too_and_in_flight_events_hold_their_place() {
    // 10 bytes a line, 35 bytes allowed: three lines.
    let s = sink(OnFull::DropOldest, 100, 35);
    for seq in 1..=3 {
        s.offer(entry(seq, "0123456789"));
    }
    // The worker holds 1 and 2; drop_oldest can only drop 3, the one still queued.
    let taken = s.take(2, usize::MAX, |_| 0);
    assert_eq!(taken.len(), 2);
    s.offer(entry(4, "0123456789"));
    s.offer(entry(5, "0123456789"));
    let stats = s.stats();
    assert_eq!(stats.queued, 3);
    assert_eq!(stats.lost.full, 2);
    s.delivered(2, 20);
    assert_eq!(queued_seqs(&s), vec![5]);
    assert_eq!(s.stats().sent, 2);
}

#[test]
fn an_event_larger_than_the_sink_accepts_is_lost_too_large_when_offered() {
    let s = sink(OnFull::DropNewest, 10, 1 << 20);
    s.offer(entry(1, &"x".repeat(101)));
    s.offer(entry(2, &"x".repeat(100)));
    let stats = s.stats();
    assert_eq!(stats.lost.too_large, 1);
    assert_eq!(stats.queued, 1);
}

#[test]
fn shutdown_counts_what_is_left_once() {
    let s = sink(OnFull::DropNewest, 10, 1 << 20);
    for seq in 1..=5 {
        s.offer(entry(seq, "{}"));
    }
    let taken = s.take(2, usize::MAX, |_| 0);
    let stats = s.finish();
    assert_eq!(stats.lost.shutdown, 5);
    assert_eq!(stats.queued, 0);
    // A worker still unwinding cannot change the books any more.
    s.delivered(taken.len(), 4);
    s.lost_in_flight(LossReason::Error, 1, 2);
    s.offer(entry(6, "{}"));
    assert_eq!(s.stats(), stats);
}

#[test]
fn a_sink_that_never_drains_counts_every_loss_through_exporters() {
    // A TCP collector that is not there: the worker never delivers anything.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rt = runtime();
    for (policy, name) in [
        (OnFull::DropNewest, "newest"),
        (OnFull::DropOldest, "oldest"),
    ] {
        let config: ExportConfig = toml::from_str(&format!(
            "[[syslog]]\nname = \"{name}\"\naddress = \"tcp://127.0.0.1:{port}\"\nbuffer = 10\non_full = \"{}\"\n",
            if policy == OnFull::DropNewest { "drop_newest" } else { "drop_oldest" }
        ))
        .unwrap();
        let exporters = Exporters::start(&config, context(&rt)).unwrap();
        for seq in 1..=25 {
            let (l, meta) = line(seq, 0);
            exporters.offer(&l, &meta);
        }
        let stats = &exporters.stats()[0];
        assert_eq!(stats.name, name);
        assert_eq!(stats.queued, 10, "{stats:?}");
        assert_eq!(stats.lost.full, 15, "{stats:?}");
        assert_eq!(stats.sent, 0);
        wait_for(Duration::from_secs(5), "the connection error", || {
            exporters.stats()[0].last_error.is_some()
        });
        assert!(!exporters.stats()[0].connected);
        let started = Instant::now();
        let stats = exporters.shutdown(Duration::from_millis(300));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "shutdown is bounded"
        );
        assert_eq!(stats[0].lost.shutdown, 10, "{:?}", stats[0]);
        assert_eq!(stats[0].lost.total(), 25);
    }
}

#[test]
fn udp_events_over_the_size_limit_are_counted_not_split() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let addr = collector.local_addr().unwrap();
    let rt = runtime();
    let config: ExportConfig = toml::from_str(&format!(
        "[[syslog]]\naddress = \"udp://{addr}\"\nmax_message_bytes = 1000\nfacility = \"local3\"\n"
    ))
    .unwrap();
    let exporters = Exporters::start(&config, context(&rt)).unwrap();
    let (small, small_meta) = line(1, 0);
    // Its line fits the limit but not with the RFC 5424 header in front of it.
    let (tight, tight_meta) = line(2, 1000 - small.len());
    // Its line alone is over the limit: refused when offered.
    let (big, big_meta) = line(3, 5000);
    let (last, last_meta) = line(4, 10);
    for (l, m) in [
        (&small, &small_meta),
        (&tight, &tight_meta),
        (&big, &big_meta),
        (&last, &last_meta),
    ] {
        exporters.offer(l, m);
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 70_000];
    for _ in 0..2 {
        let n = collector.recv(&mut buf).unwrap();
        got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    assert!(got[0].starts_with("<158>1 2023-11-14T22:13:20.001Z node-1.example interceptor "));
    assert!(got[0].ends_with(std::str::from_utf8(&small[..small.len() - 1]).unwrap()));
    assert!(
        got[1].contains("[interceptor@32473 seq=\"4\"] {\"seq\":4,"),
        "{}",
        got[1]
    );
    assert!(got.iter().all(|m| m.len() <= 1000));
    wait_for(Duration::from_secs(5), "the counts", || {
        let s = &exporters.stats()[0];
        s.sent == 2 && s.lost.too_large == 2
    });
    let stats = exporters.shutdown(Duration::from_secs(1));
    assert_eq!(stats[0].lost.total(), 2);
    assert_eq!(stats[0].queued, 0);
    // Nothing else arrived (no fragment of the large ones).
    collector
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(collector.recv(&mut buf).is_err());
}

#[test]
fn no_exporters_cost_nothing() {
    let exporters = Exporters::none();
    let (l, m) = line(1, 0);
    exporters.offer(&l, &m);
    assert!(exporters.stats().is_empty());
    assert!(exporters.shutdown(Duration::ZERO).is_empty());
}

#[test]
fn the_daemon_configuration_embeds_audit_export() {
    let text = "[[listener]]\nprotocol = \"kafka\"\naddress = \"127.0.0.1:9092\"\n\
                sasl_mechanisms = []\nallow_anonymous = true\n\
                [audit]\nqueue = 100\n\
                [[audit.export.syslog]]\naddress = \"unix:///dev/log\"\n\
                [[audit.export.kafka]]\nbroker = \"127.0.0.1:9092\"\ntopic = \"audit\"\n";
    let path = std::path::Path::new("interceptor.toml");
    let config = crate::config::Config::parse(path, text).unwrap();
    assert_eq!(config.audit.export.syslog.len(), 1);
    assert_eq!(config.audit.export.kafka[0].topic, "audit");
    config.audit.export.validate().unwrap();
    let without =
        crate::config::Config::parse(path, &text[..text.find("[[audit").unwrap()]).unwrap();
    assert!(without.audit.export.is_empty());
    let err = crate::config::Config::parse(path, &format!("{text}bogus = 1\n")).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn shutdown_wakes_a_worker_waiting_out_its_backoff_to_flush() {
    use std::io::Read;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rt = runtime();
    let config: ExportConfig = toml::from_str(&format!(
        "[[syslog]]\naddress = \"tcp://127.0.0.1:{port}\"\n"
    ))
    .unwrap();
    let exporters = Exporters::start(&config, context(&rt)).unwrap();
    for seq in 1..=5 {
        let (l, meta) = line(seq, 0);
        exporters.offer(&l, &meta);
    }
    // Failed attempts at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s: the worker now sleeps 3.2 s.
    std::thread::sleep(Duration::from_millis(3300));
    assert_eq!(exporters.stats()[0].sent, 0);
    let collector = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = collector.accept().unwrap();
        let mut all = String::new();
        let _ = stream.read_to_string(&mut all);
        all
    });
    let stats = exporters.shutdown(Duration::from_secs(1)).remove(0);
    assert_eq!((stats.sent, stats.lost.total()), (5, 0), "{stats:?}");
    drop(rt); // closes the connection
    let received = reader.join().unwrap();
    assert_eq!(received.matches("[interceptor@32473 seq=").count(), 5);
}
