//! What one read of a side produces: the packets to write, held until the audit events that
//! describe them are queued, and the allowed messages counted per (api, operation, topic,
//! rule) instead of one event each.
//!
//! MQTT has no batches of its own: a busy publisher sends thousands of small PUBLISH packets a
//! second, and an event (JSON, hash chain, write) per message costs more than relaying it.
//! Everything a read brought is decided first (and whatever arrived meanwhile, up to a bound);
//! then each group of allowed messages becomes one `decision` event with `messages: N` (and,
//! with `[audit] records`, their payload bytes and a digest of the payloads in order); then the
//! packets go to the writers, which wait for those events to be durable. A quiet session
//! still gets an event per message, since each read holds one. Refusals are never counted
//! together: each has its own event, written as it is decided.

use std::{future::Future, sync::Arc, task::Poll};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::mpsc::Sender,
};

use super::{End, Outgoing, Session};
use crate::{
    audit::{chain::hex, AuditEvent, AuditLog, CloseReason},
    policy::{Operation, RuleRef},
};

/// Most groups one read may hold; past it, events are written and counting starts again.
const MAX_TALLIES: usize = 64;
/// Most packets, and bytes, decided before their events are written and they go on: with the
/// writers' queues this bounds what a session holds (see `WRITE_QUEUE`).
const MAX_PACKETS: usize = 256;
const MAX_BYTES: usize = 256 * 1024;

/// Allowed messages of one kind in one read.
struct Tally {
    api: &'static str,
    op: Operation,
    topic: String,
    rule: Option<RuleRef>,
    version: Arc<str>,
    first_id: u16,
    messages: u64,
    /// Set when payloads are described (`records`).
    payloads: Option<(u64, blake3::Hasher)>,
}

/// Reads what has already arrived, without waiting, when the batch has packets and room:
/// under load a read returns as soon as one packet is in, and by the time it is decided more
/// are. `true` when bytes were read (decide them before writing anything).
pub(super) async fn read_more_now<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    batch: &Batch,
) -> bool {
    if batch.is_empty() || batch.len() >= MAX_PACKETS || batch.bytes >= MAX_BYTES {
        return false;
    }
    buf.reserve(8 * 1024);
    // The read polled once: ready data is taken, nothing is waited for (a zero timeout would
    // wait for the timer wheel's next millisecond). End of stream and errors are left for the
    // next, waiting, read, which sees them again.
    let mut read = std::pin::pin!(rd.read_buf(buf));
    let polled = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    matches!(polled, Poll::Ready(Ok(n)) if n > 0)
}

pub(super) struct Batch {
    /// This side's own audit handle: its writers wait for its own events only.
    pub audit: AuditLog,
    to_broker: Vec<Bytes>,
    to_client: Vec<Bytes>,
    /// Bytes of the packets held.
    bytes: usize,
    tallies: Vec<Tally>,
}

/// One allowed message, as the tally needs it.
pub(super) struct Allowed<'a> {
    pub api: &'static str,
    pub op: Operation,
    pub topic: &'a str,
    pub rule: Option<&'a RuleRef>,
    pub version: &'a Arc<str>,
    pub packet_id: u16,
    /// The payload as it goes on (after masking), for the records digest; `None` for
    /// operations that carry none of their own (retain).
    pub payload: Option<&'a [u8]>,
}

impl Batch {
    pub fn new(audit: AuditLog) -> Self {
        Self {
            audit,
            to_broker: Vec::new(),
            to_client: Vec::new(),
            bytes: 0,
            tallies: Vec::new(),
        }
    }

    pub fn send_broker(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.to_broker.push(frame);
    }

    pub fn send_client(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.to_client.push(frame);
    }

    /// Counts an allowed message (its events come at [`flush`](Self::flush)).
    pub async fn allowed(&mut self, s: &Session, a: Allowed<'_>) {
        let same = |t: &Tally| {
            t.api == a.api
                && t.op == a.op
                && t.topic == a.topic
                && Arc::ptr_eq(&t.version, a.version)
                && t.rule.as_ref().map(|r| &r.name) == a.rule.map(|r| &r.name)
        };
        let at = match self.tallies.iter().position(same) {
            Some(at) => at,
            None => {
                if self.tallies.len() >= MAX_TALLIES {
                    self.emit(s).await;
                }
                self.tallies.push(Tally {
                    api: a.api,
                    op: a.op,
                    topic: a.topic.to_owned(),
                    rule: a.rule.cloned(),
                    version: Arc::clone(a.version),
                    first_id: a.packet_id,
                    messages: 0,
                    payloads: None,
                });
                self.tallies.len() - 1
            }
        };
        let Some(t) = self.tallies.get_mut(at) else {
            return;
        };
        t.messages += 1;
        if let (true, Some(payload)) = (s.records, a.payload) {
            let (bytes, hasher) = t.payloads.get_or_insert_with(|| (0, blake3::Hasher::new()));
            *bytes += payload.len() as u64;
            hasher.update(payload);
        }
    }

    /// Writes the counted events, waits until they (this side's, not the other's) are durable,
    /// then hands the packets to the writers. While this side waits, what its peer sends piles
    /// up in the socket, and the next read decides all of it at once: measured on this machine,
    /// that beats deciding on while the disk works (smaller batches, more events). The ticket
    /// goes along so a writer could never write ahead of the events in any case.
    pub async fn flush(
        &mut self,
        s: &Session,
        to_broker: &Sender<Outgoing>,
        to_client: &Sender<Outgoing>,
    ) -> Result<(), End> {
        self.emit(s).await;
        self.bytes = 0;
        if self.to_broker.is_empty() && self.to_client.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.audit.sync().await {
            return Err(End::new(CloseReason::AuditUnavailable, e.to_string()));
        }
        let after = self.audit.mark();
        for (queue, frames) in [
            (to_broker, &mut self.to_broker),
            (to_client, &mut self.to_client),
        ] {
            if frames.is_empty() {
                continue;
            }
            let frames = std::mem::take(frames);
            queue
                .send(Outgoing { after, frames })
                .await
                .map_err(|_| End::clean(CloseReason::ClientClosed))?;
        }
        Ok(())
    }

    /// Writes the counted events now (what `flush` does first).
    pub async fn emit(&mut self, s: &Session) {
        for t in self.tallies.drain(..) {
            let messages = (t.messages > 1).then_some(t.messages);
            let (bytes, digest) = match t.payloads {
                Some((bytes, hasher)) => (
                    Some(bytes),
                    Some(format!("blake3:{}", hex(hasher.finalize().as_bytes()))),
                ),
                None => (None, None),
            };
            self.audit
                .emit_under(
                    AuditEvent::Decision {
                        session: s.id,
                        client: s.client,
                        principal: s.identity.principal.clone(),
                        groups: s.identity.groups.clone(),
                        client_id: Some(s.client_id.clone()),
                        api: t.api,
                        correlation_id: i32::from(t.first_id),
                        operation: t.op.as_str(),
                        resource_type: super::decide::MQTT_TOPIC,
                        resource: t.topic,
                        decision: "allow",
                        rule: t.rule.as_ref().map(|r| r.name.to_string()),
                        rule_source: t.rule.as_ref().map(|r| format!("{}:{}", r.file, r.line)),
                        detail: None,
                        messages,
                        bytes,
                        digest,
                    },
                    Arc::clone(&t.version),
                )
                .await;
        }
    }

    /// Packets waiting for the flush.
    pub fn len(&self) -> usize {
        self.to_broker.len() + self.to_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
