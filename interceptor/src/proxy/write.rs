//! Writing a batch of frames with as few syscalls as possible, without copying them.

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Slices handed to one writev; Linux takes up to 1024, a few dozen already amortise the call.
const MAX_SLICES: usize = 64;

/// Writes every frame in order and empties `frames`.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    out: &mut W,
    frames: &mut Vec<Bytes>,
) -> io::Result<()> {
    let mut start = 0;
    while start < frames.len() {
        let end = frames.len().min(start + MAX_SLICES);
        let slices: Vec<IoSlice<'_>> = frames[start..end].iter().map(|f| IoSlice::new(f)).collect();
        let mut written = out.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let frame = &mut frames[start];
            let step = written.min(frame.len());
            frame.advance(step);
            written -= step;
            if frame.is_empty() {
                start += 1;
            }
        }
        // Skip frames that were empty to begin with.
        while start < frames.len() && frames[start].is_empty() {
            start += 1;
        }
    }
    frames.clear();
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    /// Accepts at most `step` bytes per call, to exercise partial vectored writes.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_keep_every_byte_in_order() {
        for step in [1, 3, 7, 1000] {
            let mut frames: Vec<Bytes> = (0..200u8)
                .map(|i| Bytes::from(vec![i; usize::from(i % 5)]))
                .collect();
            let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
            let mut sink = Trickle {
                out: Vec::new(),
                step,
            };
            write_frames(&mut sink, &mut frames).await.unwrap();
            assert_eq!(sink.out, expected, "step {step}");
            assert!(frames.is_empty());
        }
    }
}
