//! `interceptor replay`: arguments and the command.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use super::{
    format::{RawKey, EXTENSION},
    replay::{self, Format, Options},
    resend::{self, ResendOptions},
};
use crate::{config::UpstreamMechanism, kafka::sasl::secrets};

/// Print a recorded session's timeline (requests, responses, decisions), or re-send its
/// produce requests to another broker.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A recording file, or a session uid (`<instance>-<session>`, as in the audit trail's
    /// actor.session.uid) looked up in --dir.
    pub session: String,
    /// The recordings directory (default: the configured [recording] dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// An audit directory: interleave the session's events (decisions, records, transforms).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also show the keys and values of produced and fetched records.
    #[arg(long)]
    pub records: bool,
    /// Open the sealed raw records (the original frames, before masking) with this key.
    #[arg(long)]
    pub raw_key_file: Option<PathBuf>,
    /// Re-send the recorded produce requests (after masking) to this broker (HOST:PORT)
    /// instead of printing the timeline.
    #[arg(long, value_name = "ADDR")]
    pub resend_to: Option<String>,
    /// Authenticate to --resend-to with these credentials (TOML username/password, mode
    /// 0600, owned by you or root: the daemon's upstream secrets format).
    #[arg(long, requires = "resend_to")]
    pub sasl_secrets: Option<PathBuf>,
    /// plain, scram-sha-256 or scram-sha-512.
    #[arg(long, default_value = "scram-sha-256", requires = "sasl_secrets")]
    pub sasl_mechanism: String,
    /// Rename a topic when re-sending: OLD=NEW (repeatable).
    #[arg(long = "topic-map", value_name = "OLD=NEW", requires = "resend_to", value_parser = topic_map)]
    pub topic_map: Vec<(String, String)>,
    /// Re-send batches with the original producer id, epoch and sequence (by default they
    /// are sent as a plain producer's, which another broker accepts).
    #[arg(long, requires = "resend_to")]
    pub keep_producer_ids: bool,
    /// Seconds allowed for connecting and for each answer when re-sending.
    #[arg(long, default_value_t = 30, requires = "resend_to")]
    pub timeout: u64,
}

fn topic_map(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => Ok((old.into(), new.into())),
        _ => Err("expected OLD=NEW".into()),
    }
}

/// Runs the command; exit 0 when the recording was read to its end (and, re-sending, every
/// request was accepted), 1 when it stops early or something was refused, 2 on bad usage.
pub fn run(args: &ReplayArgs, config_path: &Path) -> ExitCode {
    let path = match locate(args, config_path) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("interceptor replay: {e}");
            return ExitCode::from(2);
        }
    };
    match &args.resend_to {
        Some(target) => run_resend(args, &path, target),
        None => run_replay(args, &path),
    }
}

/// The file named, or the session uid's file in the recordings directory.
fn locate(args: &ReplayArgs, config_path: &Path) -> Result<PathBuf, String> {
    let given = PathBuf::from(&args.session);
    if given.is_file() {
        return Ok(given);
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        crate::config::Config::load(config_path)
            .map(|c| c.recording.dir)
            .unwrap_or_else(|_| crate::config::RecordingConfig::default().dir)
    });
    let uid = args.session.trim_end_matches(&format!(".{EXTENSION}"));
    let file = dir.join(format!("{uid}.{EXTENSION}"));
    if file.is_file() {
        return Ok(file);
    }
    // A bare session number: the files of every daemon run that had it.
    if uid.bytes().all(|b| b.is_ascii_digit()) {
        let suffix = format!("-{uid}.{EXTENSION}");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&suffix))
            })
            .collect();
        found.sort();
        match found.len() {
            1 => return Ok(found.remove(0)),
            0 => {}
            _ => {
                let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                return Err(format!(
                    "session {uid} was recorded by more than one daemon run; name one: {}",
                    names.join(", ")
                ));
            }
        }
    }
    Err(format!(
        "{} is not a file, and {} does not exist",
        args.session,
        file.display()
    ))
}

fn load_key(args: &ReplayArgs) -> Result<Option<RawKey>, String> {
    args.raw_key_file
        .as_deref()
        .map(RawKey::load)
        .transpose()
        .map_err(|e| e.to_string())
}

fn run_replay(args: &ReplayArgs, path: &Path) -> ExitCode {
    let raw_key = match load_key(args) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("interceptor replay: {e}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        format: args.format,
        audit: args.audit.clone(),
        raw_key,
        records: args.records,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = replay::replay(path, &options, &mut out);
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(outcome), Ok(())) => {
            if let Some(e) = outcome.error {
                eprintln!("interceptor replay: {}: {e}", path.display());
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        (Err(e), _) => {
            eprintln!("interceptor replay: {e}");
            ExitCode::FAILURE
        }
        // A closed pipe (`| head`) is not worth a message.
        (Ok(_), Err(_)) => ExitCode::FAILURE,
    }
}

fn run_resend(args: &ReplayArgs, path: &Path, target: &str) -> ExitCode {
    let sasl = match &args.sasl_secrets {
        None => None,
        Some(file) => {
            let mechanism = match args.sasl_mechanism.to_ascii_lowercase().as_str() {
                "plain" => UpstreamMechanism::Plain,
                "scram-sha-256" => UpstreamMechanism::ScramSha256,
                "scram-sha-512" => UpstreamMechanism::ScramSha512,
                other => {
                    eprintln!("interceptor replay: unknown --sasl-mechanism {other}");
                    return ExitCode::from(2);
                }
            };
            // SAFETY: geteuid has no preconditions and cannot fail.
            let euid = unsafe { libc::geteuid() };
            match secrets::load_owned_by(file, euid) {
                Ok(s) => Some((mechanism, s)),
                Err(e) => {
                    eprintln!("interceptor replay: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let options = ResendOptions {
        target: target.to_owned(),
        sasl,
        topic_map: args.topic_map.clone(),
        keep_producer_ids: args.keep_producer_ids,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("interceptor replay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let format = args.format;
    let result = runtime.block_on(resend::resend(path, &options, |r| match format {
        Format::Json => {
            if let Ok(line) = serde_json::to_string(r) {
                println!("{line}");
            }
        }
        Format::Text => println!("{}", resent_text(r)),
    }));
    match result {
        Ok(summary) => {
            match format {
                Format::Json => {
                    let line = serde_json::json!({ "summary": summary });
                    println!("{line}");
                }
                Format::Text => println!(
                    "resent {} request(s) to {target}, skipped {}; partitions: {} accepted, {} refused{}",
                    summary.sent,
                    summary.skipped,
                    summary.partitions_ok,
                    summary.partitions_failed,
                    if summary.recording_incomplete {
                        " (the recording stops early)"
                    } else {
                        ""
                    }
                ),
            }
            if summary.partitions_failed == 0
                && summary.skipped == 0
                && !summary.recording_incomplete
            {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("interceptor replay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resent_text(r: &resend::Resent) -> String {
    let head = format!(
        "+{:.3}ms Produce v{} #{}",
        r.t_us as f64 / 1000.0,
        r.api_version,
        r.recorded_correlation_id
    );
    if let Some(why) = &r.skipped {
        return format!("{head} skipped: {why}");
    }
    let parts: Vec<String> = r
        .partitions
        .iter()
        .map(|p| match (&p.error, p.base_offset) {
            (Some(e), _) => format!(
                "{}[{}] {} record(s) refused: {e}",
                p.topic, p.partition, p.records
            ),
            (None, Some(offset)) => format!(
                "{}[{}] {} record(s) at offset {offset}",
                p.topic, p.partition, p.records
            ),
            (None, None) => format!("{}[{}] {} record(s)", p.topic, p.partition, p.records),
        })
        .collect();
    format!(
        "{head} → #{}: {}",
        r.correlation_id.unwrap_or_default(),
        parts.join(", ")
    )
}
