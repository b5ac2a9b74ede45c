//! The local admin socket: `interceptor status` asks the running daemon what it is doing.
//!
//! A Unix socket (mode 0600, so only root and the daemon's user can ask) speaking just enough
//! HTTP/1.0 for `curl --unix-socket` to work too: `GET /status` answers a JSON document.
//! (Metrics and health come with the audit issue.)

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Serialize;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};

use crate::policy::watch::{PolicyHandle, ReloadStatus};

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path}: {message}")]
    Protocol { path: PathBuf, message: String },
}

/// What the daemon says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub pid: u32,
    pub mode: &'static str,
    pub started_at: String,
    pub fail_open: bool,
    pub protected: Vec<std::net::SocketAddr>,
    pub policy: PolicyStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub dir: PathBuf,
    pub version: String,
    pub generation: u64,
    pub loaded_at: String,
    pub files: usize,
    pub rules: usize,
    #[serde(flatten)]
    pub reload: ReloadStatus,
}

/// The parts of the status that do not change while the daemon runs.
pub struct StatusSource {
    pub base: Status,
    pub policy: PolicyHandle,
}

impl StatusSource {
    fn now(&self) -> Status {
        let active = self.policy.current();
        let mut status = self.base.clone();
        status.policy = PolicyStatus {
            dir: status.policy.dir,
            version: active.version.to_string(),
            generation: active.generation,
            loaded_at: active.loaded_at.clone(),
            files: active.set.file_count(),
            rules: active.set.rule_count(),
            reload: self.policy.status(),
        };
        status
    }
}

/// Binds the socket (replacing a stale one) and serves it until the task is aborted.
pub fn serve(path: &Path, source: StatusSource) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let io = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let source = Arc::new(source);
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let source = Arc::clone(&source);
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &source).await {
                            tracing::debug!("admin request: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("admin socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// Largest request read; anything longer is not a status request.
const MAX_REQUEST: usize = 4096;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

async fn answer(mut stream: UnixStream, source: &StatusSource) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    let read = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let mut chunk = [0u8; 512];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || buf.len() + n > MAX_REQUEST {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let first_line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let first_line = String::from_utf8_lossy(first_line);
    let mut parts = first_line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/status")) => match serde_json::to_string_pretty(&source.now()) {
            Ok(json) => ("200 OK", json),
            Err(e) => (
                "500 Internal Server Error",
                format!("{{\"error\":\"{e}\"}}"),
            ),
        },
        _ => ("404 Not Found", "{\"error\":\"GET /status\"}".to_owned()),
    };
    let response = format!(
        "HTTP/1.0 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// `interceptor status`: asks the daemon at `path`, returns its JSON answer.
pub fn query_status(path: &Path) -> Result<String, AdminError> {
    use std::io::{Read, Write};
    let io = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream
        .write_all(b"GET /status HTTP/1.0\r\n\r\n")
        .map_err(io)?;
    let mut response = String::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_string(&mut response)
        .map_err(io)?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Err(AdminError::Protocol {
            path: path.to_owned(),
            message: "answer without a header".into(),
        });
    };
    if !head.starts_with("HTTP/1.0 200") {
        return Err(AdminError::Protocol {
            path: path.to_owned(),
            message: head.lines().next().unwrap_or_default().to_owned(),
        });
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;

    fn source() -> StatusSource {
        StatusSource {
            base: Status {
                version: "test",
                pid: 1,
                mode: "listen",
                started_at: "now".into(),
                fail_open: false,
                protected: vec!["127.0.0.1:9092".parse().unwrap()],
                policy: PolicyStatus {
                    dir: "/etc/interceptor/policies".into(),
                    version: String::new(),
                    generation: 0,
                    loaded_at: String::new(),
                    files: 0,
                    rules: 0,
                    reload: ReloadStatus::default(),
                },
            },
            policy: PolicyHandle::fixed(PolicySet::empty()),
        }
    }

    #[tokio::test]
    async fn status_answers_with_the_policy_in_force_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.sock");
        let task = serve(&path, source()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let query = path.clone();
        let json = tokio::task::spawn_blocking(move || query_status(&query))
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["policy"]["version"], PolicySet::empty().version());
        assert_eq!(v["policy"]["generation"], 1);
        assert_eq!(v["protected"][0], "127.0.0.1:9092");
        task.abort();
    }

    #[tokio::test]
    async fn anything_but_get_status_is_not_found_and_long_requests_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let task = serve(&path, source()).unwrap();
        for request in [
            b"POST /status HTTP/1.0\r\n\r\n".to_vec(),
            vec![b'A'; 10_000],
        ] {
            let mut s = UnixStream::connect(&path).await.unwrap();
            // The server may stop reading (and reset) before all of a long request is in.
            let _ = s.write_all(&request).await;
            let _ = s.shutdown().await;
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer).await;
            assert!(!answer.contains("\"policy\""), "{answer}");
        }
        task.abort();
    }
}
