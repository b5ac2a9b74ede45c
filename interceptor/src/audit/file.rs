//! The audit trail on disk: hash-chained JSON lines in a directory of size- and age-rotated
//! files, each group of events written and fsynced together.
//!
//! At start the chain's head (last seq and hash) is read back from the newest file, so the
//! chain runs on across restarts and rotations. A last line without its newline is what a
//! crash in the middle of a group leaves: that group was never acknowledged (nothing waits
//! less than the fsync), so the torn bytes are cut off. A last complete line whose hash does
//! not match is not a crash: the daemon refuses to start on it and says where.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    chain::{self, ChainHasher, GENESIS},
    AuditError, AuditRecord, AuditSink,
};

#[derive(Debug, Clone)]
pub struct FileSettings {
    pub dir: PathBuf,
    pub hasher: ChainHasher,
    /// A new file is started before a group when the current one has reached this size...
    pub rotate_bytes: u64,
    /// ...or has been open this long.
    pub rotate_after: Duration,
    /// fsync each group (off only for benchmarks that compare against it).
    pub fsync: bool,
}

/// Where the chain stands: the last event written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// Called with every line once its group is durable (exporters).
pub type AfterWrite = Box<dyn FnMut(u64, &[u8], &AuditRecord) + Send>;

pub struct ChainedFiles {
    settings: FileSettings,
    head: ChainHead,
    pub(super) current: Option<Current>,
    /// A file left with a torn group by a failed write: cut back to this length first.
    repair: Option<(PathBuf, u64)>,
    scratch: Vec<u8>,
    ends: Vec<usize>,
    after_write: Option<AfterWrite>,
}

pub(super) struct Current {
    path: PathBuf,
    pub(super) file: File,
    len: u64,
    opened: Instant,
}

impl ChainedFiles {
    /// Opens the directory (creating it, mode 0750) and finds the chain's head.
    pub fn open(settings: FileSettings) -> Result<Self, AuditError> {
        let dir = &settings.dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|e| io(dir, e))?;
        let (head, current) = recover(dir, &settings.hasher)?;
        Ok(Self {
            settings,
            head,
            current,
            repair: None,
            scratch: Vec::with_capacity(64 * 1024),
            ends: Vec::new(),
            after_write: None,
        })
    }

    pub fn head(&self) -> ChainHead {
        self.head
    }

    pub fn set_after_write(&mut self, hook: AfterWrite) {
        self.after_write = Some(hook);
    }

    fn rotate_if_due(&mut self) -> Result<(), AuditError> {
        let due = match &self.current {
            None => true,
            Some(c) => {
                c.len >= self.settings.rotate_bytes
                    || c.opened.elapsed() >= self.settings.rotate_after
            }
        };
        if !due {
            return Ok(());
        }
        let path = self.settings.dir.join(chain::file_name(self.head.seq + 1));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        // The new name must survive a crash as well as the lines in it.
        if self.settings.fsync {
            File::open(&self.settings.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(&self.settings.dir, e))?;
        }
        let len = file.metadata().map_err(|e| io(&path, e))?.len();
        self.current = Some(Current {
            path,
            file,
            len,
            opened: Instant::now(),
        });
        Ok(())
    }

    fn repair_torn(&mut self) -> Result<(), AuditError> {
        if let Some((path, len)) = self.repair.take() {
            let cut = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()));
            if let Err(e) = cut {
                self.repair = Some((path.clone(), len));
                return Err(io(&path, e));
            }
            self.current = None;
            // Reopen it as the current file if the chain still ends there.
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            self.current = Some(Current {
                path,
                file,
                len,
                opened: Instant::now(),
            });
        }
        Ok(())
    }
}

/// The wire form of one line before its hash: seq and prev_hash first, then the record.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    prev_hash: &'a str,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

impl AuditSink for ChainedFiles {
    fn write_group(&mut self, records: &[AuditRecord]) -> Result<(), AuditError> {
        self.repair_torn()?;
        self.rotate_if_due()?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        self.ends.clear();
        let mut head = self.head;
        for record in records {
            let seq = head.seq + 1;
            let start = buf.len();
            let prev = chain::hex(&head.hash);
            serde_json::to_writer(
                &mut buf,
                &Line {
                    seq,
                    prev_hash: &prev,
                    record,
                },
            )?;
            // `{...}`: reopen the object for the hash member.
            buf.pop();
            head = ChainHead {
                seq,
                hash: self.settings.hasher.seal_from(&mut buf, start),
            };
            self.ends.push(buf.len());
        }
        let fsync = self.settings.fsync;
        let Some(current) = self.current.as_mut() else {
            self.scratch = buf;
            return Err(io(
                &self.settings.dir,
                std::io::Error::other("no audit file open"),
            ));
        };
        let written = current.file.write_all(&buf).and_then(|()| {
            if fsync {
                current.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            let path = current.path.clone();
            self.repair = Some((path.clone(), current.len));
            self.current = None;
            self.scratch = buf;
            return Err(io(&path, e));
        }
        current.len += buf.len() as u64;
        self.head = head;
        if let Some(hook) = self.after_write.as_mut() {
            let mut start = 0;
            let first_seq = head.seq + 1 - records.len() as u64;
            for (i, (record, &end)) in records.iter().zip(&self.ends).enumerate() {
                hook(first_seq + i as u64, &buf[start..end], record);
                start = end;
            }
        }
        self.scratch = buf;
        Ok(())
    }
}

fn io(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Finds the head in the newest non-empty file; cuts a torn last line off.
fn recover(dir: &Path, hasher: &ChainHasher) -> Result<(ChainHead, Option<Current>), AuditError> {
    let files = chain::list_files(dir).map_err(|e| io(dir, e))?;
    for (first_seq, path) in files.iter().rev() {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        let len = file.metadata().map_err(|e| io(path, e))?.len();
        let Some((line, complete_len, line_no)) =
            last_line(&mut file, len).map_err(|e| io(path, e))?
        else {
            if len > 0 {
                tracing::warn!(file = %path.display(), "audit file holds only a torn line ({len} bytes): cut off");
                file.set_len(0).map_err(|e| io(path, e))?;
            }
            // An empty file: the chain ends in an earlier one (or starts here).
            if *first_seq > 1 && files.len() == 1 {
                return Err(AuditError::Chain {
                    path: path.clone(),
                    line: 0,
                    problem: format!(
                        "the only audit file is empty but named for seq {first_seq}: the chain's head is unknown"
                    ),
                });
            }
            std::fs::remove_file(path).map_err(|e| io(path, e))?;
            continue;
        };
        if complete_len < len {
            tracing::warn!(
                file = %path.display(),
                "audit file ends with {} bytes of a group torn by a crash (never acknowledged): cut off",
                len - complete_len
            );
            file.set_len(complete_len).map_err(|e| io(path, e))?;
            file.sync_all().map_err(|e| io(path, e))?;
        }
        let link = chain::parse_link(hasher, &line).map_err(|e| AuditError::Chain {
            path: path.clone(),
            line: line_no,
            problem: format!("the last event cannot continue the chain: {e}"),
        })?;
        let head = ChainHead {
            seq: link.seq,
            hash: link.hash,
        };
        let current = Current {
            path: path.clone(),
            file,
            len: complete_len,
            opened: Instant::now(),
        };
        return Ok((head, Some(current)));
    }
    Ok((
        ChainHead {
            seq: 0,
            hash: GENESIS,
        },
        None,
    ))
}

/// The last complete line of a file (without its newline), the length up to and including
/// its newline, and its 1-based line number when cheaply known (0 otherwise). Reads backwards
/// in growing windows, so a large file is not read whole.
fn last_line(file: &mut File, len: u64) -> std::io::Result<Option<(Vec<u8>, u64, u64)>> {
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        Read::by_ref(file)
            .take(len - start)
            .read_to_end(&mut tail)?;
        let Some(last_nl) = memchr::memrchr(b'\n', &tail) else {
            if start == 0 {
                return Ok(None);
            }
            window *= 4;
            continue;
        };
        let line_start = match memchr::memrchr(b'\n', &tail[..last_nl]) {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window *= 4;
                continue;
            }
        };
        let complete_len = start + last_nl as u64 + 1;
        let line_no = if start == 0 {
            memchr::memchr_iter(b'\n', &tail[..=last_nl]).count() as u64
        } else {
            0
        };
        return Ok(Some((
            tail[line_start..last_nl].to_vec(),
            complete_len,
            line_no,
        )));
    }
}
