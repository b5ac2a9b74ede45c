//! `interceptor audit verify|query`: arguments and output.

use std::{io::Write, path::PathBuf, process::ExitCode};

use time::OffsetDateTime;

use super::{
    chain::ChainHasher,
    query::{self, Filter},
    verify,
};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of every file in an audit directory: exit 0 when intact, 1 with
    /// each edited, removed, reordered or inserted event (file, line, seq), 2 when the
    /// directory cannot be read. Prints the chain's head: compare it with an exported copy
    /// to see a cut tail.
    Verify {
        dir: PathBuf,
        /// The key of a keyed chain ([audit] chain_key_file).
        #[arg(long)]
        chain_key_file: Option<PathBuf>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the events that match every option given, oldest first. Does not verify the
    /// chain (audit verify does). Times: RFC 3339, a date (whole day with --since D
    /// --until D), or -30m / -1h / -2d.
    Query {
        dir: PathBuf,
        /// The authenticated principal (actor.user.name).
        #[arg(long)]
        principal: Option<String>,
        /// A topic among the event's resources; a trailing * matches a prefix.
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// allow, deny or violation (decisions), or a disposition: allowed, blocked,
        /// corrected, dropped.
        #[arg(long)]
        decision: Option<String>,
        /// An event type: decision, records, transform, authentication, connection_open, ...
        #[arg(long)]
        event: Option<String>,
        /// A session number or uid (<instance>-<session>).
        #[arg(long)]
        session: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// text (one line per event) or json (the lines as written).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
}

pub fn run(command: &AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify {
            dir,
            chain_key_file,
            json,
        } => {
            let hasher = match chain_key_file {
                None => ChainHasher::plain(),
                Some(path) => match read_key(path) {
                    Ok(key) => ChainHasher::keyed(key),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            let report = match verify::verify(dir, &hasher) {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                for f in &report.findings {
                    let seq = f.seq.map(|s| format!(" seq {s}")).unwrap_or_default();
                    println!(
                        "{}: {}:{}{seq}: {}",
                        serde_json::to_value(f.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        f.file.display(),
                        f.line,
                        f.detail
                    );
                }
                let verdict = if report.intact() {
                    "intact"
                } else {
                    "TAMPERED"
                };
                println!(
                    "{verdict}: {} events in {} files, seq {}..{}, head {} (compare the head \
                     with an exported copy to see a cut tail)",
                    report.events,
                    report.files,
                    report.first_seq.unwrap_or(0),
                    report.last_seq.unwrap_or(0),
                    report.head_hash.as_deref().unwrap_or("-")
                );
            }
            if report.intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        AuditCommand::Query {
            dir,
            principal,
            topic,
            since,
            until,
            decision,
            event,
            session,
            limit,
            format,
        } => {
            let now = OffsetDateTime::now_utc();
            let time = |t: &Option<String>, end: bool| {
                t.as_deref()
                    .map(|t| query::parse_time(t, end, now))
                    .transpose()
            };
            let (since_ms, until_ms) = match (time(since, false), time(until, true)) {
                (Ok(s), Ok(u)) => (s, u),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let filter = Filter {
                principal: principal.clone(),
                topic: topic.clone(),
                since_ms,
                until_ms,
                decision: decision.clone(),
                event: event.clone(),
                session: session.clone(),
            };
            let json = format == "json";
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut shown = 0usize;
            let result = query::query(dir, &filter, |line, value| {
                let written = if json {
                    out.write_all(line).and_then(|()| out.write_all(b"\n"))
                } else {
                    writeln!(out, "{}", query::text_line(value))
                };
                shown += 1;
                written.is_ok() && limit.is_none_or(|l| shown < l)
            });
            let _ = out.flush();
            match result {
                Ok(skipped) => {
                    if skipped > 0 {
                        eprintln!("warning: {skipped} line(s) skipped: not complete JSON events");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// A chain key file: mode 0600, owned by root or the caller; the trailing newline trimmed.
fn read_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let key = crate::vault::read_private_file(path, &[0, euid], 4096)
        .map_err(|e| format!("chain key file {}: {e}", path.display()))?;
    Ok(key.strip_suffix(b"\n").unwrap_or(&key).to_vec())
}
