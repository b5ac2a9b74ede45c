//! The local admin socket: `interceptor status` asks the running daemon what it is doing.
//!
//! A Unix socket (mode 0600, so only root and the daemon's user can ask) speaking just enough
//! HTTP/1.0 for `curl --unix-socket` to work too: `GET /status` answers a JSON document;
//! `POST /detokenize` with `{"token": …, "access_token": …}` answers a vault token's value to
//! an identity the policy lets see it (see [`crate::detokenize`]).
//! `GET /metrics` (Prometheus text), `/healthz` and `/readyz` are served here too, and on an
//! optional TCP listener that serves only those three (never status or detokenize).

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
    net::UnixListener,
};

use crate::{
    detokenize::Detokenizer,
    policy::watch::{PolicyHandle, ReloadStatus},
};

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
    /// The token vault's health and counters; absent without a keyring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<crate::vault::VaultStatus>,
    /// Counts since start (the full set is `GET /metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::Summary>,
    /// Each audit exporter: sent, lost by reason, queued, connected, last error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export: Vec<crate::audit::export::SinkStats>,
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

/// The parts of the status that do not change while the daemon runs, and what answers
/// detokenize requests.
pub struct StatusSource {
    pub base: Status,
    pub policy: PolicyHandle,
    pub detokenizer: Option<Arc<Detokenizer>>,
    /// The audit writer's counters (metrics, readiness).
    pub audit: Option<Arc<crate::audit::AuditStats>>,
    /// The audit exporters (syslog, Kafka), once started.
    pub exports: Option<Arc<std::sync::Mutex<Option<crate::audit::export::Exporters>>>>,
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
        status.vault = self
            .detokenizer
            .as_ref()
            .and_then(|d| d.vault.as_ref())
            .map(crate::vault::Vault::status);
        status.metrics = Some(crate::metrics::global().summary(self.audit.as_deref()));
        status.export = self.export_stats();
        status
    }

    fn export_stats(&self) -> Vec<crate::audit::export::SinkStats> {
        self.exports
            .as_ref()
            .and_then(|e| e.lock().ok().map(|slot| slot.as_ref().map(|x| x.stats())))
            .flatten()
            .unwrap_or_default()
    }

    fn metrics(&self) -> String {
        crate::metrics::render(
            crate::metrics::global(),
            &crate::metrics::Extra {
                audit: self.audit.as_deref(),
                export: self.export_stats(),
            },
        )
    }

    /// Ready: started (kernel programs attached, policy loaded, listening) and the audit
    /// trail writable. The body names what is not.
    fn readiness(&self) -> (&'static str, String) {
        let started = crate::metrics::global()
            .ready
            .load(std::sync::atomic::Ordering::Acquire);
        let audit_failing = self
            .audit
            .as_ref()
            .is_some_and(|a| a.failing.load(std::sync::atomic::Ordering::Acquire));
        let mut not_ready = Vec::new();
        if !started {
            not_ready.push("starting");
        }
        if audit_failing {
            not_ready.push("audit trail not writable");
        }
        if not_ready.is_empty() {
            ("200 OK", "ready\n".into())
        } else {
            (
                "503 Service Unavailable",
                format!("not ready: {}\n", not_ready.join(", ")),
            )
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on a TCP address, for Prometheus.
pub async fn serve_http(
    address: std::net::SocketAddr,
    source: Arc<StatusSource>,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Io {
            path: PathBuf::from(address.to_string()),
            source,
        })?;
    Ok(tokio::spawn(accept_loop(Listener::Tcp(listener), source)))
}

/// Binds the socket (replacing a stale one) and serves it until the task is aborted.
pub fn serve(
    path: &Path,
    source: Arc<StatusSource>,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
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
    Ok(tokio::spawn(accept_loop(Listener::Unix(listener), source)))
}

/// The admin socket (everything) or the TCP listener (metrics and health only).
enum Listener {
    Unix(UnixListener),
    Tcp(tokio::net::TcpListener),
}

async fn accept_loop(listener: Listener, source: Arc<StatusSource>) {
    loop {
        let accepted = match &listener {
            Listener::Unix(l) => l
                .accept()
                .await
                .map(|(s, _)| spawn_answer(s, &source, false)),
            Listener::Tcp(l) => l
                .accept()
                .await
                .map(|(s, _)| spawn_answer(s, &source, true)),
        };
        if let Err(e) = accepted {
            tracing::warn!("admin listener accept: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn spawn_answer<S>(stream: S, source: &Arc<StatusSource>, read_only: bool)
where
    S: AsyncReadExt + AsyncWriteExt + Unpin + Send + 'static,
{
    let source = Arc::clone(source);
    tokio::spawn(async move {
        if let Err(e) = answer(stream, &source, read_only).await {
            tracing::debug!("admin request: {e}");
        }
    });
}

/// Largest request head read; anything longer is not a request of ours.
const MAX_REQUEST: usize = 4096;
/// Largest request body: a token and an access token.
const MAX_BODY: usize = 64 * 1024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

async fn answer<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut stream: S,
    source: &StatusSource,
    read_only: bool,
) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut stream).await else {
        return Ok(());
    };
    let first_line = head.lines().next().unwrap_or_default().to_owned();
    let mut parts = first_line.split_whitespace();
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
    let route = (parts.next(), parts.next());
    let (status, content_type, body) = match route {
        (Some("GET"), Some("/metrics")) => ("200 OK", TEXT, source.metrics()),
        (Some("GET"), Some("/healthz")) => ("200 OK", TEXT, "ok\n".to_owned()),
        (Some("GET"), Some("/readyz")) => {
            let (status, body) = source.readiness();
            (status, TEXT, body)
        }
        _ if read_only => (
            "404 Not Found",
            TEXT,
            "GET /metrics, /healthz or /readyz\n".to_owned(),
        ),
        _ => {
            let (status, body) = json_route(route, source, &body).await;
            (status, JSON, body)
        }
    };
    let response = format!(
        "HTTP/1.0 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The routes only the Unix socket serves.
async fn json_route(
    route: (Option<&str>, Option<&str>),
    source: &StatusSource,
    body: &[u8],
) -> (&'static str, String) {
    match route {
        (Some("GET"), Some("/status")) => match serde_json::to_string_pretty(&source.now()) {
            Ok(json) => ("200 OK", json),
            Err(e) => (
                "500 Internal Server Error",
                serde_json::json!({ "error": e.to_string() }).to_string(),
            ),
        },
        (Some("POST"), Some("/detokenize")) => detokenize(source, body).await,
        _ => (
            "404 Not Found",
            "{\"error\":\"GET /status, /metrics, /healthz, /readyz or POST /detokenize\"}"
                .to_owned(),
        ),
    }
}

/// The request head and body (`content-length` bytes, at most [`MAX_BODY`]); `None` for a
/// request too long, cut short or too slow.
async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) -> Option<(String, Vec<u8>)> {
    let read = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            if let Some(at) = find(&buf, b"\n\n") {
                break at + 2;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 || buf.len() + n > MAX_REQUEST + MAX_BODY {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if find(&buf, b"\n\n").is_none()
                && find(&buf, b"\r\n\r\n").is_none()
                && buf.len() > MAX_REQUEST
            {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if length > MAX_BODY {
            return None;
        }
        let mut body = buf.split_off(head_end);
        while body.len() < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        Some((head, body))
    })
    .await;
    read.ok().flatten()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(serde::Deserialize)]
struct DetokenizeRequest {
    token: String,
    access_token: String,
}

async fn detokenize(source: &StatusSource, body: &[u8]) -> (&'static str, String) {
    let error =
        |status, message: String| (status, serde_json::json!({ "error": message }).to_string());
    let Some(detokenizer) = &source.detokenizer else {
        return error(
            "503 Service Unavailable",
            "detokenize is not available".into(),
        );
    };
    let request: DetokenizeRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                "400 Bad Request",
                format!("expected {{token, access_token}}: {e}"),
            )
        }
    };
    match detokenizer
        .detokenize(&request.token, &request.access_token)
        .await
    {
        Ok(answer) => match serde_json::to_string(&answer) {
            Ok(json) => ("200 OK", json),
            Err(e) => error("500 Internal Server Error", e.to_string()),
        },
        Err(e) => error(e.status(), e.to_string()),
    }
}

/// `interceptor detokenize`: asks the daemon at `path` for `token`'s value, proving who asks
/// with `access_token`. Returns the daemon's JSON answer, or its error message.
pub fn query_detokenize(
    path: &Path,
    token: &str,
    access_token: &str,
) -> Result<String, AdminError> {
    let body = serde_json::json!({ "token": token, "access_token": access_token }).to_string();
    let request = format!(
        "POST /detokenize HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(path, request.as_bytes())
}

/// `interceptor status`: asks the daemon at `path`, returns its JSON answer.
pub fn query_status(path: &Path) -> Result<String, AdminError> {
    exchange(path, b"GET /status HTTP/1.0\r\n\r\n")
}

/// One request, one answer: the body of a 200, else the error the daemon gave.
fn exchange(path: &Path, request: &[u8]) -> Result<String, AdminError> {
    use std::io::{Read, Write};
    let io = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    // Detokenizing may wait for the identity provider's keys and the vault.
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT * 3))
        .map_err(io)?;
    stream.write_all(request).map_err(io)?;
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
        let status = head.lines().next().unwrap_or_default();
        let error = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(AdminError::Protocol {
            path: path.to_owned(),
            message: format!("{status}: {error}"),
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
                vault: None,
                metrics: None,
                export: Vec::new(),
            },
            policy: PolicyHandle::fixed(PolicySet::empty()),
            detokenizer: None,
            audit: None,
            exports: None,
        }
    }

    #[tokio::test]
    async fn status_answers_with_the_policy_in_force_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.sock");
        let task = serve(&path, Arc::new(source())).unwrap();
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
        let task = serve(&path, Arc::new(source())).unwrap();
        for request in [
            b"POST /status HTTP/1.0\r\n\r\n".to_vec(),
            vec![b'A'; 10_000],
        ] {
            let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
            // The server may stop reading (and reset) before all of a long request is in.
            let _ = s.write_all(&request).await;
            let _ = s.shutdown().await;
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer).await;
            assert!(!answer.contains("\"policy\""), "{answer}");
        }
        task.abort();
    }

    async fn get<S: AsyncReadExt + AsyncWriteExt + Unpin>(mut s: S, path: &str) -> String {
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        answer
    }

    #[tokio::test]
    async fn metrics_and_health_on_the_socket_and_only_those_over_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let mut with_audit = source();
        let stats = Arc::new(crate::audit::AuditStats::default());
        with_audit.audit = Some(Arc::clone(&stats));
        let source = Arc::new(with_audit);
        let unix = serve(&path, Arc::clone(&source)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let tcp = serve_http(address, Arc::clone(&source)).await.unwrap();

        let sock = || tokio::net::UnixStream::connect(&path);
        let metrics = get(sock().await.unwrap(), "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.0 200 OK"), "{metrics}");
        assert!(metrics.contains("content-type: text/plain; version=0.0.4"));
        assert!(metrics.contains("interceptor_audit_queue_depth 0"));
        assert!(get(sock().await.unwrap(), "/healthz")
            .await
            .ends_with("ok\n"));
        stats
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ready = get(sock().await.unwrap(), "/readyz").await;
        assert!(ready.starts_with("HTTP/1.0 503"), "{ready}");
        assert!(ready.contains("audit trail not writable"), "{ready}");

        let over_tcp = || tokio::net::TcpStream::connect(address);
        let metrics = get(over_tcp().await.unwrap(), "/metrics").await;
        assert!(metrics.contains("interceptor_requests_total"), "{metrics}");
        let status = get(over_tcp().await.unwrap(), "/status").await;
        assert!(status.starts_with("HTTP/1.0 404"), "{status}");
        assert!(!status.contains("\"policy\""));
        unix.abort();
        tcp.abort();
    }
}
