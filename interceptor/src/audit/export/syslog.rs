//! The syslog sink: each event as one RFC 5424 message.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [interceptor@32473 seq="N"] {json}
//! ```
//!
//! - PRI = facility × 8 + the event's severity; TIMESTAMP is the event's time in UTC with
//!   milliseconds; PROCID is the daemon's pid; MSGID is the event name.
//! - STRUCTURED-DATA has one element whose SD-ID `interceptor@32473` uses 32473, the private
//!   enterprise number IANA reserves for documentation (RFC 5612): a deployment that owns a
//!   PEN can agree on its own with its SIEM; the `seq` parameter lets a collector order and
//!   de-duplicate.
//! - MSG is the sealed JSON line as written to the audit file (hash included, so a collector
//!   can check the chain), without a UTF-8 BOM: RFC 8259 forbids a BOM in front of JSON, and
//!   SIEM JSON parsers reject it, so the MSG is RFC 5424's MSG-ANY carrying UTF-8.
//!
//! Transports: UDP (one message per datagram), TCP with RFC 6587 octet counting
//! (`LEN SP MSG`, so a JSON line never needs escaping), and a unix datagram socket such as
//! `/dev/log`. A message over `max_message_bytes` is never truncated or split: it is lost
//! `too_large`.

use std::{
    io,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpStream, UdpSocket, UnixDatagram},
};

use super::{
    config::{is_print_us_ascii, Facility, SyslogAddress, SyslogSinkConfig},
    sink::{step_timeout, Backoff, Entry, ExitGuard, LossReason, Sink},
};

/// The SD-ID of the element every message carries (see the module docs for the PEN).
pub const SD_ID: &str = "interceptor@32473";
/// Events formatted and sent per round.
const BATCH_EVENTS: usize = 256;
/// Bytes per TCP write round.
const BATCH_BYTES: usize = 1024 * 1024;
const NILVALUE: &str = "-";
const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The header fields that do not change from event to event.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: SyslogAddress,
    pub facility: Facility,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub max_message_bytes: usize,
    pub timeout: Duration,
}

impl Settings {
    pub fn new(config: &SyslogSinkConfig, hostname: String) -> Settings {
        Settings {
            address: config.address.clone(),
            facility: config.facility,
            hostname,
            app_name: config.app_name.clone(),
            procid: std::process::id().to_string(),
            max_message_bytes: config.max_message_bytes(),
            timeout: Duration::from_millis(config.timeout_ms),
        }
    }
}

/// RFC 5424 PRI: facility × 8 + severity.
pub fn pri(facility: Facility, severity: super::Severity) -> u8 {
    facility.code() * 8 + severity.code()
}

/// The event time as RFC 5424 TIMESTAMP (UTC, milliseconds), or NILVALUE outside years
/// 0000–9999, which the format cannot express.
pub fn timestamp(time_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .ok()
        .filter(|t| (0..=9999).contains(&t.year()))
        .and_then(|t| t.format(TIMESTAMP).ok())
        .unwrap_or_else(|| NILVALUE.to_owned())
}

/// Appends an SD-PARAM value with `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
pub fn escape_param_value(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// HOSTNAME: at most 255 PRINTUSASCII; anything else becomes `_`, nothing at all NILVALUE.
pub fn sanitize_hostname(name: &str) -> String {
    header_field(name, 255)
}

/// A header field of at most `max` PRINTUSASCII characters.
fn header_field(value: &str, max: usize) -> String {
    let s: String = value
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii() && is_print_us_ascii(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        NILVALUE.to_owned()
    } else {
        s
    }
}

/// Formats one event into `out` (cleared first).
pub(crate) fn format(out: &mut Vec<u8>, s: &Settings, e: &Entry) {
    use std::io::Write;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "<{}>1 {} {} {} {} {} [{SD_ID} seq=\"",
        pri(s.facility, e.severity),
        timestamp(e.time_ms),
        s.hostname,
        s.app_name,
        s.procid,
        header_field(e.event, 32),
    );
    escape_param_value(out, &e.seq.to_string());
    out.extend_from_slice(b"\"] ");
    out.extend_from_slice(&e.line);
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

/// The worker: takes batches from the buffer and sends them until shutdown.
pub(crate) async fn run(sink: Arc<Sink>, s: Settings) {
    let _exit = ExitGuard(&sink);
    let mut conn: Option<Conn> = None;
    let mut backoff = Backoff::new();
    let mut scratch = Vec::new();
    while sink.ready(Duration::ZERO, BATCH_EVENTS).await {
        let batch = sink.take(BATCH_EVENTS, BATCH_BYTES, |e| e.line.len());
        // (message, the length of its line: what the buffer counted)
        let mut messages = Vec::with_capacity(batch.len());
        for e in &batch {
            format(&mut scratch, &s, e);
            if scratch.len() > s.max_message_bytes {
                sink.lost_in_flight(LossReason::TooLarge, 1, e.line.len());
            } else {
                messages.push((scratch.clone(), e.line.len()));
            }
        }
        drop(batch);
        let mut next = 0;
        while next < messages.len() {
            let closing = sink.closing();
            if closing.is_some_and(|d| Instant::now() >= d) {
                return; // shutdown counts what is left
            }
            let step = step_timeout(s.timeout, closing);
            if conn.is_none() {
                match tokio::time::timeout(step, connect(&s.address)).await {
                    Ok(Ok(c)) => {
                        conn = Some(c);
                        if !s.address.is_datagram() {
                            sink.set_connected();
                        }
                    }
                    Ok(Err(e)) => {
                        sink.failed(format!("cannot connect to {}: {e}", s.address));
                        if !backoff.wait(&sink).await {
                            return;
                        }
                        continue;
                    }
                    Err(_) => {
                        sink.failed(format!("connecting to {} timed out", s.address));
                        if !backoff.wait(&sink).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let result = tokio::time::timeout(step, send(c, &messages[next..])).await;
            let (done, error) = match result {
                Ok((done, error)) => (done, error),
                Err(_) => (0, Some(SendError::Io(io::ErrorKind::TimedOut.into()))),
            };
            if done > 0 {
                let bytes = messages[next..next + done].iter().map(|m| m.1).sum();
                sink.delivered(done, bytes);
                next += done;
                backoff.reset();
            }
            match error {
                None => {
                    if s.address.is_datagram() {
                        sink.set_connected();
                    }
                }
                Some(SendError::TooLarge) => {
                    // The socket refused this one message for its size (EMSGSIZE): it can
                    // never go, the next ones can.
                    if let Some((_, bytes)) = messages.get(next) {
                        sink.lost_in_flight(LossReason::TooLarge, 1, *bytes);
                    }
                    next += 1;
                }
                Some(SendError::Io(e)) => {
                    sink.failed(format!("sending to {}: {e}", s.address));
                    sink.retried();
                    conn = None;
                    if !backoff.wait(&sink).await {
                        return;
                    }
                }
            }
        }
    }
}

enum SendError {
    TooLarge,
    Io(io::Error),
}

async fn connect(address: &SyslogAddress) -> io::Result<Conn> {
    match address {
        SyslogAddress::Udp(host_port) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for addr in tokio::net::lookup_host(host_port.as_str()).await? {
                let local = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = UdpSocket::bind(local).await?;
                match socket.connect(addr).await {
                    Ok(()) => return Ok(Conn::Udp(socket)),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        SyslogAddress::Tcp(host_port) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for addr in tokio::net::lookup_host(host_port.as_str()).await? {
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        return Ok(Conn::Tcp(stream));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        SyslogAddress::Unix(path) => {
            let socket = UnixDatagram::unbound()?;
            socket.connect(PathBuf::from(path))?;
            Ok(Conn::Unix(socket))
        }
    }
}

/// Sends `messages` in order; how many went, and the error that stopped the rest. Over TCP
/// the batch is one write and counts only as a whole: after an error it is sent again.
async fn send(conn: &mut Conn, messages: &[(Vec<u8>, usize)]) -> (usize, Option<SendError>) {
    let datagram_error = |i: usize, e: io::Error| {
        if e.raw_os_error() == Some(libc::EMSGSIZE) {
            (i, Some(SendError::TooLarge))
        } else {
            (i, Some(SendError::Io(e)))
        }
    };
    match conn {
        Conn::Udp(socket) => {
            for (i, (m, _)) in messages.iter().enumerate() {
                if let Err(e) = socket.send(m).await {
                    return datagram_error(i, e);
                }
            }
            (messages.len(), None)
        }
        Conn::Unix(socket) => {
            for (i, (m, _)) in messages.iter().enumerate() {
                if let Err(e) = socket.send(m).await {
                    return datagram_error(i, e);
                }
            }
            (messages.len(), None)
        }
        Conn::Tcp(stream) => {
            if let Err(e) = peer_closed(stream) {
                return (0, Some(SendError::Io(e)));
            }
            let mut frames = Vec::with_capacity(messages.iter().map(|m| m.0.len() + 8).sum());
            for (m, _) in messages {
                frames.extend_from_slice(m.len().to_string().as_bytes());
                frames.push(b' ');
                frames.extend_from_slice(m);
            }
            match stream.write_all(&frames).await {
                Ok(()) => (messages.len(), None),
                Err(e) => (0, Some(SendError::Io(e))),
            }
        }
    }
}

/// A collector never writes to us, so anything readable means it closed (or reset) the
/// connection. Writing into such a socket would still succeed once, into the kernel buffer,
/// and those events would be lost without a trace: so the close is noticed before writing.
fn peer_closed(stream: &TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    // Bounded: a collector that keeps talking cannot hold the worker here.
    for _ in 0..16 {
        match stream.try_read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the collector closed the connection",
                ))
            }
            Ok(_) => continue, // unexpected data: ignored
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
