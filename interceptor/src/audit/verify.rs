//! `interceptor audit verify DIR`: walks every file of the trail, line by line, and reports
//! each place where the chain is broken, and what kind of break it is.
//!
//! A line is checked on its own (its hash over its bytes) and against the line before it
//! (`seq` one more, `prev_hash` equal to that line's `hash`), also across files. What a break
//! means:
//!
//! - the line's own hash does not match: **edited**;
//! - `seq` jumps forward and `prev_hash` does not match: lines **removed**;
//! - `seq` goes back or repeats: lines **reordered** (or a line repeated);
//! - `seq` is right but `prev_hash` does not match: a line **inserted** or replaced by one
//!   whose own hash was recomputed;
//! - a file whose first line is not the seq its name says: a file **renamed**;
//! - a gap between files: a file **removed**.
//!
//! Files are read streaming, one line at a time, with a bound on the line length.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::chain::{self, ChainHasher, LinkError, GENESIS};

/// Lines longer than this are not events the daemon writes: reported, not buffered.
const MAX_LINE: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Edited,
    Removed,
    Reordered,
    Inserted,
    Unparsable,
    RenamedFile,
    RemovedFile,
    /// The newest file ends in a torn line: a crash while writing (not tampering; the daemon
    /// cuts it off when it starts).
    TornTail,
    /// The oldest file does not start at seq 1: earlier files were removed (retention).
    /// Information, not tampering: nothing before it can be checked.
    StartsLate,
}

impl FindingKind {
    /// Whether this finding is evidence of tampering.
    pub fn is_tampering(self) -> bool {
        !matches!(self, FindingKind::TornTail | FindingKind::StartsLate)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub file: PathBuf,
    /// 1-based line number in the file (0: the file as a whole).
    pub line: u64,
    /// The seq the line says it is, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub files: usize,
    pub events: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// The chain's head: compare it with an exported copy to see a cut tail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<String>,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        !self.findings.iter().any(|f| f.kind.is_tampering())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no audit files (audit-<seq>.jsonl) in this directory")]
    Empty(PathBuf),
}

/// Where the walk stands: the last good link.
struct Cursor {
    seq: Option<u64>,
    hash: [u8; 32],
}

pub fn verify(dir: &Path, hasher: &ChainHasher) -> Result<VerifyReport, VerifyError> {
    let io = |path: &Path, source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let files = chain::list_files(dir).map_err(|e| io(dir, e))?;
    if files.is_empty() {
        return Err(VerifyError::Empty(dir.to_owned()));
    }
    let mut report = VerifyReport {
        files: files.len(),
        ..VerifyReport::default()
    };
    let mut cursor = Cursor {
        seq: None,
        hash: GENESIS,
    };
    let newest = files.len() - 1;
    for (index, (named_seq, path)) in files.iter().enumerate() {
        let file = File::open(path).map_err(|e| io(path, e))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut line = Vec::new();
        let mut line_no = 0u64;
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| io(path, e))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            let complete = line.last() == Some(&b'\n');
            if !complete {
                let at_end = reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true);
                if at_end && index == newest && (line.len() as u64) <= MAX_LINE {
                    report.findings.push(finding(
                        FindingKind::TornTail,
                        path,
                        line_no,
                        None,
                        format!(
                            "the newest file ends in {} bytes without a newline: a write cut \
                             by a crash (the daemon removes it when it starts)",
                            line.len()
                        ),
                    ));
                    break;
                }
                report.findings.push(finding(
                    FindingKind::Unparsable,
                    path,
                    line_no,
                    None,
                    "a line longer than any event, or a file that ends inside a line".into(),
                ));
                // Skip the rest of this over-long line.
                if !at_end {
                    let mut sink = Vec::new();
                    reader
                        .read_until(b'\n', &mut sink)
                        .map_err(|e| io(path, e))?;
                }
                continue;
            }
            let text = &line[..line.len() - 1];
            check_line(
                hasher,
                text,
                (path, line_no, (line_no == 1).then_some(*named_seq)),
                &mut cursor,
                &mut report,
            );
        }
        if line_no == 0 {
            report.findings.push(finding(
                FindingKind::Unparsable,
                path,
                0,
                None,
                "an empty audit file".into(),
            ));
        }
    }
    report.last_seq = cursor.seq;
    report.head_hash = cursor.seq.map(|_| chain::hex(&cursor.hash));
    Ok(report)
}

fn finding(kind: FindingKind, file: &Path, line: u64, seq: Option<u64>, detail: String) -> Finding {
    Finding {
        kind,
        file: file.to_owned(),
        line,
        seq,
        detail,
    }
}

fn check_line(
    hasher: &ChainHasher,
    text: &[u8],
    (path, line_no, named_seq): (&Path, u64, Option<u64>),
    cursor: &mut Cursor,
    report: &mut VerifyReport,
) {
    let link = match chain::parse_link(hasher, text) {
        Ok(link) => link,
        Err(LinkError::HashMismatch) => {
            // Its own hash is wrong; still take its place in the chain, so that one edited
            // line is one finding and not also a break at the next line.
            let seq = seq_of(text);
            report.findings.push(finding(
                FindingKind::Edited,
                path,
                line_no,
                seq,
                "the line's hash does not match its content: the event was edited".into(),
            ));
            if let (Some(seq), Some(hash)) = (seq, claimed_hash(text)) {
                cursor.seq = Some(seq);
                cursor.hash = hash;
                report.events += 1;
            }
            return;
        }
        Err(e) => {
            report.findings.push(finding(
                FindingKind::Unparsable,
                path,
                line_no,
                seq_of(text),
                e.to_string(),
            ));
            return;
        }
    };
    report.events += 1;
    report.first_seq.get_or_insert(link.seq);
    if let Some(named) = named_seq {
        if named != link.seq {
            report.findings.push(finding(
                FindingKind::RenamedFile,
                path,
                line_no,
                Some(link.seq),
                format!(
                    "the file is named for seq {named} but starts with seq {}",
                    link.seq
                ),
            ));
        }
    }
    match cursor.seq {
        None => {
            if link.seq != 1 || link.prev_hash != GENESIS {
                report.findings.push(finding(
                    FindingKind::StartsLate,
                    path,
                    line_no,
                    Some(link.seq),
                    format!(
                        "the chain starts at seq {}: earlier files are absent (retention, or \
                         removed); it cannot be checked before this line",
                        link.seq
                    ),
                ));
            }
        }
        Some(prev_seq) => {
            let expected = prev_seq + 1;
            let linked = link.prev_hash == cursor.hash;
            let kind_detail = if link.seq == expected && linked {
                None
            } else if link.seq > expected {
                let missing = link.seq - expected;
                if named_seq.is_some() {
                    Some((
                        FindingKind::RemovedFile,
                        format!(
                            "seq {expected}..={} missing before this file: a file (or the end \
                             of the previous one) was removed",
                            link.seq - 1
                        ),
                    ))
                } else {
                    Some((
                        FindingKind::Removed,
                        format!(
                            "{missing} event(s) removed before this line (seq {expected}..={})",
                            link.seq - 1
                        ),
                    ))
                }
            } else if link.seq < expected {
                Some((
                    FindingKind::Reordered,
                    format!(
                        "seq {} after seq {prev_seq}: events reordered or repeated",
                        link.seq
                    ),
                ))
            } else {
                Some((
                    FindingKind::Inserted,
                    "seq is right but prev_hash is not the previous event's hash: an event \
                     was inserted or replaced (with its own hash recomputed)"
                        .into(),
                ))
            };
            if let Some((kind, detail)) = kind_detail {
                report
                    .findings
                    .push(finding(kind, path, line_no, Some(link.seq), detail));
            }
        }
    }
    cursor.seq = Some(link.seq);
    cursor.hash = link.hash;
}

fn seq_of(text: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(text).ok().map(|s| s.seq)
}

fn claimed_hash(text: &[u8]) -> Option<[u8; 32]> {
    let at = text.len().checked_sub(66)?;
    chain::parse_hex(text.get(at..at + 64)?)
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::audit::{AuditEvent, AuditRecord, AuditSink, ChainedFiles, FileSettings};

    fn trail(dir: &Path, hasher: ChainHasher, events: u64, rotate_bytes: u64) {
        let mut files = ChainedFiles::open(FileSettings {
            dir: dir.to_owned(),
            hasher,
            rotate_bytes,
            rotate_after: Duration::from_secs(3600),
            fsync: false,
        })
        .unwrap();
        for session in 1..=events {
            let event = AuditEvent::DaemonStop {
                sessions_open: session as usize,
            };
            files
                .write_group(&[AuditRecord::now(event, Arc::from("v1"))])
                .unwrap();
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    fn only_file(dir: &Path) -> PathBuf {
        chain::list_files(dir).unwrap().remove(0).1
    }

    fn kinds(report: &VerifyReport) -> Vec<(FindingKind, u64)> {
        report.findings.iter().map(|f| (f.kind, f.line)).collect()
    }

    #[test]
    fn an_intact_trail_across_rotations_verifies_and_names_its_head() {
        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 40, 1500);
        let report = verify(dir.path(), &ChainHasher::plain()).unwrap();
        assert!(report.files > 3, "{}", report.files);
        assert_eq!(
            (report.events, report.first_seq, report.last_seq),
            (40, Some(1), Some(40))
        );
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert!(report.intact());
        assert_eq!(report.head_hash.as_ref().map(String::len), Some(64));
    }

    #[test]
    fn an_edited_byte_is_one_finding_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 5, u64::MAX);
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l[2] = l[2].replace("\"sessions_open\":3", "\"sessions_open\":9");
        write_lines(&path, &l);
        let report = verify(dir.path(), &ChainHasher::plain()).unwrap();
        assert_eq!(kinds(&report), vec![(FindingKind::Edited, 3)]);
        assert!(!report.intact());
    }

    #[test]
    fn a_removed_line_is_found() {
        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 5, u64::MAX);
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l.remove(1);
        write_lines(&path, &l);
        let report = verify(dir.path(), &ChainHasher::plain()).unwrap();
        assert_eq!(kinds(&report), vec![(FindingKind::Removed, 2)]);
        assert_eq!(report.findings[0].seq, Some(3));
    }

    #[test]
    fn swapped_lines_are_found() {
        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 5, u64::MAX);
        let path = only_file(dir.path());
        let mut l = lines(&path);
        l.swap(1, 2);
        write_lines(&path, &l);
        let report = verify(dir.path(), &ChainHasher::plain()).unwrap();
        let found = kinds(&report);
        assert!(found.contains(&(FindingKind::Removed, 2)), "{found:?}");
        assert!(found.contains(&(FindingKind::Reordered, 3)), "{found:?}");
        assert!(!report.intact());
    }

    #[test]
    fn a_forged_line_with_a_valid_own_hash_is_found() {
        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 4, u64::MAX);
        let path = only_file(dir.path());
        let mut l = lines(&path);
        // Replace line 3 with a forged event that hashes correctly but links to nothing.
        let mut forged = format!(
            "{{\"seq\":3,\"prev_hash\":\"{}\",\"event\":\"forged\"",
            "ab".repeat(32)
        )
        .into_bytes();
        ChainHasher::plain().seal(&mut forged);
        l[2] = String::from_utf8(forged).unwrap().trim_end().to_owned();
        write_lines(&path, &l);
        let report = verify(dir.path(), &ChainHasher::plain()).unwrap();
        let found = kinds(&report);
        assert!(found.contains(&(FindingKind::Inserted, 3)), "{found:?}");
        // The real line 4 no longer links to what is now line 3.
        assert!(found.contains(&(FindingKind::Inserted, 4)), "{found:?}");
    }

    #[test]
    fn an_edited_hash_member_is_found() {
        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 3, u64::MAX);
        let path = only_file(dir.path());
        let mut l = lines(&path);
        let at = l[1].len() - 3;
        let digit = if &l[1][at..at + 1] == "0" { "1" } else { "0" };
        l[1].replace_range(at..at + 1, digit);
        write_lines(&path, &l);
        let found = kinds(&verify(dir.path(), &ChainHasher::plain()).unwrap());
        assert!(found.contains(&(FindingKind::Edited, 2)), "{found:?}");
    }

    #[test]
    fn a_removed_middle_file_and_a_renamed_file_are_found() {
        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 30, 1200);
        let files = chain::list_files(dir.path()).unwrap();
        assert!(files.len() >= 4);
        std::fs::remove_file(&files[1].1).unwrap();
        let report = verify(dir.path(), &ChainHasher::plain()).unwrap();
        let found = kinds(&report);
        assert!(found.contains(&(FindingKind::RemovedFile, 1)), "{found:?}");

        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 30, 1200);
        let files = chain::list_files(dir.path()).unwrap();
        let (seq, path) = &files[2];
        std::fs::rename(path, dir.path().join(chain::file_name(seq + 100))).unwrap();
        let found = kinds(&verify(dir.path(), &ChainHasher::plain()).unwrap());
        assert!(
            found.iter().any(|(k, _)| *k == FindingKind::RenamedFile),
            "{found:?}"
        );
    }

    #[test]
    fn a_torn_tail_warns_and_a_late_start_informs_without_failing() {
        let dir = tempfile::tempdir().unwrap();
        trail(dir.path(), ChainHasher::plain(), 30, 1200);
        let files = chain::list_files(dir.path()).unwrap();
        std::fs::remove_file(&files[0].1).unwrap();
        let newest = &files.last().unwrap().1;
        let mut text = std::fs::read(newest).unwrap();
        text.extend_from_slice(b"{\"seq\":31,\"prev");
        std::fs::write(newest, text).unwrap();
        let report = verify(dir.path(), &ChainHasher::plain()).unwrap();
        let found: Vec<FindingKind> = report.findings.iter().map(|f| f.kind).collect();
        assert_eq!(found, vec![FindingKind::StartsLate, FindingKind::TornTail]);
        assert!(report.intact());
    }

    #[test]
    fn a_keyed_chain_verifies_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = ChainHasher::keyed(b"0123456789abcdef".to_vec());
        trail(dir.path(), key.clone(), 3, u64::MAX);
        assert!(verify(dir.path(), &key).unwrap().intact());
        let wrong = verify(dir.path(), &ChainHasher::plain()).unwrap();
        assert_eq!(wrong.findings.len(), 3);
        assert!(wrong.findings.iter().all(|f| f.kind == FindingKind::Edited));
    }

    #[test]
    fn garbage_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(chain::file_name(1)),
            b"\xff\xfe not json\n{}\n{\"seq\":1}\n\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(chain::file_name(2)), b"").unwrap();
        let report = verify(dir.path(), &ChainHasher::plain()).unwrap();
        assert!(!report.intact());
        assert!(report
            .findings
            .iter()
            .all(|f| f.kind == FindingKind::Unparsable));
        assert!(matches!(
            verify(&dir.path().join("nope"), &ChainHasher::plain()),
            Err(VerifyError::Io { .. })
        ));
    }
}
