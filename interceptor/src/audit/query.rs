//! `interceptor audit query DIR`: the events that match a principal, topic, time window,
//! decision, event type or session, from the trail's files.
//!
//! A scan, made fast enough for a day of events by two shortcuts: files wholly outside the
//! time window are skipped from their first line's time (files are written in time order),
//! and a line is parsed as JSON only when its raw bytes contain the principal or topic asked
//! for. Querying does not verify the chain (`audit verify` does).

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use memchr::memmem;
use serde_json::Value;
use time::{format_description::well_known::Rfc3339, Date, OffsetDateTime, Time};

use super::chain;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub principal: Option<String>,
    /// Exact, or a prefix when it ends in `*`.
    pub topic: Option<String>,
    /// Epoch milliseconds, inclusive.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// `allow`/`deny`/`violation` (the decision field) or a disposition (`blocked`, …).
    pub decision: Option<String>,
    pub event: Option<String>,
    /// The session number, or the session uid `<instance>-<n>`.
    pub session: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:?} is not a time: use 2026-11-23T10:00:00Z, 2026-11-23, or -1h / -30m / -2d")]
    Time(String),
}

/// Lines longer than this are skipped (no event is that long).
const MAX_LINE: u64 = 16 * 1024 * 1024;

/// Parses a `--since`/`--until` value; a bare date means the start of that day, or its end
/// for `--until` (`end_of_day`), so `--since D --until D` is the whole day.
pub fn parse_time(text: &str, end_of_day: bool, now: OffsetDateTime) -> Result<i64, QueryError> {
    let bad = || QueryError::Time(text.to_owned());
    let ms = |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(ms(t));
    }
    if let Some(rel) = text.strip_prefix('-') {
        let (digits, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(bad()),
        };
        return Ok(ms(now) - secs * 1000);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = Date::parse(text, &format).map_err(|_| bad())?;
    let at = if end_of_day {
        Time::from_hms_milli(23, 59, 59, 999).map_err(|_| bad())?
    } else {
        Time::MIDNIGHT
    };
    Ok(ms(date.with_time(at).assume_utc()))
}

/// Calls `found` with each matching line (without its newline) and its parsed event, oldest
/// first, until it returns false. Returns how many lines were skipped as unparsable.
pub fn query(
    dir: &Path,
    filter: &Filter,
    mut found: impl FnMut(&[u8], &Value) -> bool,
) -> Result<u64, QueryError> {
    let io = |path: &Path, source| QueryError::Io {
        path: path.to_owned(),
        source,
    };
    let files = chain::list_files(dir).map_err(|e| io(dir, e))?;
    let starts: Vec<Option<i64>> = files.iter().map(|(_, p)| first_time(p)).collect();
    let needles: Vec<Vec<u8>> = [&filter.principal, &filter.topic]
        .into_iter()
        .flatten()
        .map(|s| format!("\"{}", s.trim_end_matches('*')).into_bytes())
        .collect();
    let finders: Vec<memmem::Finder> = needles.iter().map(memmem::Finder::new).collect();
    let mut skipped = 0;
    for (i, (_, path)) in files.iter().enumerate() {
        // File i holds events from its first line's time up to the next file's.
        let next_start = starts.get(i + 1).copied().flatten();
        if let (Some(since), Some(next)) = (filter.since_ms, next_start) {
            if next < since {
                continue;
            }
        }
        if let (Some(until), Some(start)) = (filter.until_ms, starts[i]) {
            if start > until {
                break;
            }
        }
        let file = File::open(path).map_err(|e| io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .map_err(|e| io(path, e))?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // A torn or over-long line: not an event.
                skipped += 1;
                continue;
            }
            let text = &line[..line.len() - 1];
            if !finders.iter().all(|f| f.find(text).is_some()) {
                continue;
            }
            let Ok(event) = serde_json::from_slice::<Value>(text) else {
                skipped += 1;
                continue;
            };
            if matches(filter, &event) && !found(text, &event) {
                return Ok(skipped);
            }
        }
    }
    Ok(skipped)
}

fn first_time(path: &Path) -> Option<i64> {
    let mut line = Vec::new();
    BufReader::new(File::open(path).ok()?)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .ok()?;
    serde_json::from_slice::<Value>(line.strip_suffix(b"\n")?)
        .ok()?
        .get("time")?
        .as_i64()
}

/// Whether an event passes every given criterion.
pub fn matches(filter: &Filter, event: &Value) -> bool {
    let time = event["time"].as_i64().unwrap_or(0);
    if filter.since_ms.is_some_and(|since| time < since)
        || filter.until_ms.is_some_and(|until| time > until)
    {
        return false;
    }
    if let Some(p) = &filter.principal {
        if event["actor"]["user"]["name"].as_str() != Some(p.as_str()) {
            return false;
        }
    }
    if let Some(t) = &filter.topic {
        let wanted = |name: &str| match t.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == t,
        };
        let hit = event["resources"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                matches!(r["type"].as_str(), Some("topic" | "mqtt-topic"))
                    && r["name"].as_str().is_some_and(wanted)
            })
        });
        if !hit {
            return false;
        }
    }
    if let Some(d) = &filter.decision {
        let decision = event["decision"].as_str() == Some(d.as_str());
        let disposition = event["disposition"]
            .as_str()
            .is_some_and(|x| x.eq_ignore_ascii_case(d));
        if !decision && !disposition {
            return false;
        }
    }
    if let Some(e) = &filter.event {
        if event["event"].as_str() != Some(e.as_str()) {
            return false;
        }
    }
    if let Some(s) = &filter.session {
        let number = event["session"].as_u64().map(|n| n.to_string());
        let uid = event["actor"]["session"]["uid"].as_str();
        if number.as_deref() != Some(s.as_str()) && uid != Some(s.as_str()) {
            return false;
        }
    }
    true
}

/// One readable line per event.
pub fn text_line(event: &Value) -> String {
    let s = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_default();
    let mut out = format!(
        "{} {:<18} {}",
        s(&event["time_dt"]),
        s(&event["event"]),
        event["actor"]["user"]["name"].as_str().unwrap_or("-")
    );
    if let Some(activity) = event["activity_name"].as_str() {
        out.push_str(&format!(" {activity}"));
    }
    if let Some(op) = event["operation"].as_str() {
        out.push_str(&format!(" {op}"));
    }
    if let Some(resources) = event["resources"].as_array() {
        let names: Vec<String> = resources
            .iter()
            .map(|r| format!("{}:{}", s(&r["type"]), s(&r["name"])))
            .collect();
        if !names.is_empty() {
            out.push_str(&format!(" {}", names.join(",")));
        }
    }
    match (event["decision"].as_str(), event["disposition"].as_str()) {
        (Some(d), _) => out.push_str(&format!(" → {d}")),
        (None, Some(d)) => out.push_str(&format!(" → {}", d.to_lowercase())),
        _ => {}
    }
    if let Some(rule) = event["rule"].as_str() {
        out.push_str(&format!(" (rule {rule})"));
    }
    if let Some(parts) = event["partitions"].as_array() {
        let described: Vec<String> = parts
            .iter()
            .map(|p| {
                let range = match (p["first_offset"].as_i64(), p["last_offset"].as_i64()) {
                    (Some(a), Some(b)) => format!("@{a}..{b}"),
                    (Some(a), None) => format!("@{a}"),
                    _ => format!(" error {}", p["error_code"]),
                };
                format!(
                    "{}[{}]{range} {} rec",
                    s(&p["topic"]),
                    p["partition"],
                    p["records"]
                )
            })
            .collect();
        out.push_str(&format!(" {}", described.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::audit::{
        chain::ChainHasher, AuditEvent, AuditRecord, AuditSink, ChainedFiles, FileSettings,
        PartitionRecords,
    };

    fn records(principal: &str, topic: &str, stage: &'static str, at_ms: i64) -> AuditRecord {
        let mut record = AuditRecord::now(
            AuditEvent::Records {
                session: 7,
                client: "10.0.0.1:4000".parse().unwrap(),
                principal: principal.into(),
                client_id: None,
                api: "Fetch",
                correlation_id: 1,
                stage,
                partitions: vec![PartitionRecords {
                    topic: topic.into(),
                    partition: 0,
                    error_code: 0,
                    first_offset: Some(0),
                    last_offset: Some(9),
                    records: 10,
                    bytes: 100,
                    digest: "blake3:00".into(),
                }],
            },
            Arc::from("v1"),
        );
        record.time_ms = at_ms;
        record
    }

    fn write(dir: &Path, records: &[AuditRecord], rotate_bytes: u64) {
        let mut files = ChainedFiles::open(FileSettings {
            dir: dir.to_owned(),
            hasher: ChainHasher::plain(),
            rotate_bytes,
            rotate_after: Duration::from_secs(3600),
            fsync: false,
        })
        .unwrap();
        for r in records {
            files.write_group(std::slice::from_ref(r)).unwrap();
        }
    }

    fn run(dir: &Path, filter: &Filter) -> Vec<Value> {
        let mut out = Vec::new();
        query(dir, filter, |_, e| {
            out.push(e.clone());
            true
        })
        .unwrap();
        out
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn finds_who_read_a_topic_on_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let day = 1_763_856_000_000; // 2025-11-23T00:00:00Z
        write(
            dir.path(),
            &[
                records("alice", "payments", "fetch", day - 1),
                records("alice", "payments", "fetch", day + 10),
                records("bob", "orders", "fetch", day + 20),
                records("carol", "payments.eu", "produce", day + 30),
                records("alice", "payments", "fetch", day + DAY),
            ],
            600,
        );
        let now = OffsetDateTime::now_utc();
        let filter = Filter {
            topic: Some("payments".into()),
            since_ms: Some(parse_time("2025-11-23", false, now).unwrap()),
            until_ms: Some(parse_time("2025-11-23", true, now).unwrap()),
            ..Filter::default()
        };
        let found = run(dir.path(), &filter);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0]["actor"]["user"]["name"], "alice");

        let prefix = Filter {
            topic: Some("payments*".into()),
            event: Some("records".into()),
            ..Filter::default()
        };
        assert_eq!(run(dir.path(), &prefix).len(), 4);
        let by_principal = Filter {
            principal: Some("bob".into()),
            ..Filter::default()
        };
        let bob = run(dir.path(), &by_principal);
        assert_eq!(bob.len(), 1);
        assert!(
            text_line(&bob[0]).contains("orders[0]@0..9 10 rec"),
            "{}",
            text_line(&bob[0])
        );
        let allowed = Filter {
            decision: Some("allowed".into()),
            session: Some("7".into()),
            ..Filter::default()
        };
        assert_eq!(run(dir.path(), &allowed).len(), 5);
    }

    #[test]
    fn times_parse_as_documented() {
        let now = OffsetDateTime::from_unix_timestamp(1_763_935_200).unwrap();
        assert_eq!(
            parse_time("2025-11-23T22:00:00Z", false, now).unwrap(),
            1_763_935_200_000
        );
        assert_eq!(parse_time("-1h", false, now).unwrap(), 1_763_931_600_000);
        assert_eq!(
            parse_time("2025-11-23", true, now).unwrap()
                - parse_time("2025-11-23", false, now).unwrap(),
            DAY - 1
        );
        assert!(parse_time("yesterday", false, now).is_err());
        assert!(parse_time("-5y", false, now).is_err());
    }

    /// A day of events at a busy broker, scanned for one principal (release build):
    /// `cargo test --release -p interceptor --lib query_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn query_speed() {
        let dir = tempfile::tempdir().unwrap();
        let principals = ["alice", "bob", "carol", "dave", "erin"];
        let batch: Vec<AuditRecord> = (0..1000)
            .map(|i| {
                records(
                    principals[i % 5],
                    "orders",
                    "fetch",
                    1_763_856_000_000 + i as i64,
                )
            })
            .collect();
        let mut files = ChainedFiles::open(FileSettings {
            dir: dir.path().to_owned(),
            hasher: ChainHasher::plain(),
            rotate_bytes: 64 << 20,
            rotate_after: Duration::from_secs(3600),
            fsync: false,
        })
        .unwrap();
        for _ in 0..1000 {
            files.write_group(&batch).unwrap();
        }
        let bytes: u64 = chain::list_files(dir.path())
            .unwrap()
            .iter()
            .map(|(_, p)| std::fs::metadata(p).unwrap().len())
            .sum();
        let started = std::time::Instant::now();
        let filter = Filter {
            principal: Some("erin".into()),
            ..Filter::default()
        };
        let mut n = 0;
        query(dir.path(), &filter, |_, _| {
            n += 1;
            true
        })
        .unwrap();
        let took = started.elapsed().as_secs_f64();
        println!(
            "1,000,000 events ({:.0} MB): {n} matches in {took:.2} s ({:.0} MB/s)",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / took
        );
        assert_eq!(n, 200_000);
    }
}
