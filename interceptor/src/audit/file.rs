//! JSON lines appended to a file.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use super::{AuditError, AuditRecord, AuditSink};

pub struct JsonLinesFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonLinesFile {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let io_error = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_error)?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    fn io_error(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl AuditSink for JsonLinesFile {
    fn write(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n").map_err(|e| self.io_error(e))
    }

    fn flush(&mut self) -> Result<(), AuditError> {
        self.out.flush().map_err(|e| self.io_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog, CloseReason};

    #[test]
    fn records_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let (log, writer) = AuditLog::start(JsonLinesFile::open(&path).unwrap(), 4);
        log.emit_blocking(AuditEvent::ConnectionOpen {
            session: 1,
            protocol: "kafka",
            client: "127.0.0.1:5000".parse().unwrap(),
            original_dst: "127.0.0.1:9092".parse().unwrap(),
            upstream: "127.0.0.1:9092".parse().unwrap(),
        });
        log.emit_blocking(AuditEvent::ConnectionClose {
            principal: None,
            session: 1,
            client: "127.0.0.1:5000".parse().unwrap(),
            original_dst: "127.0.0.1:9092".parse().unwrap(),
            bytes_from_client: 10,
            bytes_to_client: 20,
            duration_ms: 3,
            reason: CloseReason::ClientClosed,
            detail: None,
        });
        drop(log);
        writer.finish();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "connection_open");
        assert_eq!(lines[0]["original_dst"], "127.0.0.1:9092");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["event"], "connection_close");
        assert_eq!(lines[1]["bytes_to_client"], 20);
        assert_eq!(lines[1]["reason"], "client_closed");

        // A second writer appends, never truncates.
        let (log, writer) = AuditLog::start(JsonLinesFile::open(&path).unwrap(), 4);
        log.emit_blocking(AuditEvent::Kernel {
            kind: "dropped_no_listener",
            client: "127.0.0.1:5001".parse().unwrap(),
            original_dst: "127.0.0.1:9092".parse().unwrap(),
        });
        drop(log);
        writer.finish();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}
