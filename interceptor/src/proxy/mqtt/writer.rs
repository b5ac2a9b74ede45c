//! One writer per side: it writes what the readers queued, in order. The readers queue a
//! packet only once the events that decided it are durable (see `batch`).

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
    mut rx: Receiver<Bytes>,
    s: &Session,
    side: Side,
    bytes: &mut u64,
) -> Result<(), End> {
    let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_BATCH);
    let mut coalesced: Vec<u8> = Vec::new();
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
        // Small packets go out in one write: a system call each would cost more than the
        // relaying itself.
        let written = if batch.len() > 1 && size <= COALESCE_BYTES {
            coalesced.clear();
            for frame in &batch {
                coalesced.extend_from_slice(frame);
            }
            wr.write_all(&coalesced).await
        } else {
            let mut result = Ok(());
            for frame in &batch {
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
                Side::Client => recorder.to_client(&batch),
                Side::Broker => recorder.to_broker(&batch),
            }
        }
        batch.clear();
    }
}
