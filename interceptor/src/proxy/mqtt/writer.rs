//! One writer per side. It takes what is queued as one batch, waits until the session's audit
//! events (every decision behind those packets) are durable, then writes the batch. Under
//! load a batch holds many packets, so one wait covers them all.

use bytes::Bytes;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    sync::mpsc::Receiver,
};

use super::{End, Session};
use crate::audit::CloseReason;

/// Most packets or bytes written after one audit wait.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Broker,
}

/// Writes until the queue closes (Ok) or writing fails (Err, with why the session ends).
pub(super) async fn run<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: Receiver<Bytes>,
    s: &Session,
    side: Side,
    bytes: &mut u64,
) -> Result<(), End> {
    let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            let _ = wr.flush().await;
            return Ok(());
        };
        let mut size = first.len();
        batch.push(first);
        while batch.len() < MAX_BATCH && size < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(frame) => {
                    size += frame.len();
                    batch.push(frame);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = s.audit.sync().await {
            return Err(End::new(CloseReason::AuditUnavailable, e.to_string()));
        }
        for frame in &batch {
            if let Err(e) = wr.write_all(frame).await {
                let reason = match side {
                    Side::Client => CloseReason::ClientError,
                    Side::Broker => CloseReason::UpstreamError,
                };
                return Err(End::new(reason, e.to_string()));
            }
        }
        *bytes += size as u64;
        if let Some(recorder) = &s.recorder {
            match side {
                Side::Client => recorder.to_client(&batch),
                Side::Broker => recorder.to_broker(&batch),
            }
        }
        batch.clear();
    }
}
