//! One writer per side: it writes the batches the readers queued, in order, each once the
//! audit event it carries the ticket of is durable (see `batch`).

use bytes::Bytes;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    sync::mpsc::Receiver,
};

use super::{End, Outgoing, Session};
use crate::audit::CloseReason;

/// Batches up to this size are copied into one buffer and written at once.
const COALESCE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Broker,
}

/// Writes until the queue closes (Ok) or writing fails (Err, with why the session ends).
pub(super) async fn run<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: Receiver<Outgoing>,
    s: &Session,
    side: Side,
    bytes: &mut u64,
) -> Result<(), End> {
    let mut coalesced: Vec<u8> = Vec::new();
    while let Some(Outgoing { after, frames }) = rx.recv().await {
        if let Err(e) = s.audit.durable(after).await {
            return Err(End::new(CloseReason::AuditUnavailable, e.to_string()));
        }
        let size: usize = frames.iter().map(Bytes::len).sum();
        // Small packets go out in one write: a system call each would cost more than the
        // relaying itself.
        let written = if frames.len() > 1 && size <= COALESCE_BYTES {
            coalesced.clear();
            for frame in &frames {
                coalesced.extend_from_slice(frame);
            }
            wr.write_all(&coalesced).await
        } else {
            let mut result = Ok(());
            for frame in &frames {
                result = wr.write_all(frame).await;
                if result.is_err() {
                    break;
                }
            }
            result
        };
        if let Err(e) = written {
            let reason = match side {
                Side::Client => CloseReason::ClientError,
                Side::Broker => CloseReason::UpstreamError,
            };
            return Err(End::new(reason, e.to_string()));
        }
        *bytes += size as u64;
        if let Some(recorder) = &s.recorder {
            match side {
                Side::Client => recorder.to_client(&frames),
                Side::Broker => recorder.to_broker(&frames),
            }
        }
    }
    let _ = wr.flush().await;
    Ok(())
}
