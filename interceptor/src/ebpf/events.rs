//! Reads the steering program's ring buffer: each event is logged and audited. Events of
//! connections dropped while no daemon was running wait in the pinned ring buffer and are read
//! by the next daemon when it starts.

use std::net::SocketAddr;

use aya::maps::{MapData, RingBuf};
use interceptor_common::{Event, EventKind};
use tokio::io::unix::AsyncFd;

use crate::{
    addr::from_words,
    audit::{AuditEvent, AuditLog},
};

/// Decodes one ring buffer record; `None` for a record of the wrong size or an unknown kind.
pub fn decode(bytes: &[u8]) -> Option<(EventKind, SocketAddr, SocketAddr)> {
    if bytes.len() != std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: the length matches and Event is plain old data (u32 fields, no padding);
    // read_unaligned because the ring buffer gives no alignment guarantee for &[u8].
    let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::from_u32(event.kind)?;
    let port = |p: u32| u16::try_from(p).ok();
    let src = SocketAddr::new(
        from_words(event.family, event.src_addr)?,
        port(event.src_port)?,
    );
    let dst = SocketAddr::new(
        from_words(event.family, event.dst_addr)?,
        port(event.dst_port)?,
    );
    Some((kind, src, dst))
}

pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Steered => "steered",
        EventKind::DroppedNoListener => "dropped_no_listener",
        EventKind::PassedFailOpen => "passed_fail_open",
        EventKind::AssignFailed => "assign_failed",
    }
}

/// Runs until the daemon stops.
pub async fn forward(ring: RingBuf<MapData>, audit: AuditLog) {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd owns the RingBuf.
    let mut fd = match unsafe { AsyncFd::register(ring) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!("cannot poll the kernel event ring buffer: {e}");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!("kernel event ring buffer: {e}");
                return;
            }
        };
        let mut batch = Vec::new();
        {
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                match decode(&item) {
                    Some(event) => batch.push(event),
                    None => tracing::warn!("undecodable kernel event of {} bytes", item.len()),
                }
            }
        }
        guard.clear_ready();
        for (kind, client, original_dst) in batch {
            match kind {
                EventKind::Steered => {
                    tracing::debug!(%client, %original_dst, "kernel: steered to the interceptor")
                }
                EventKind::DroppedNoListener => tracing::warn!(
                    %client, %original_dst,
                    "kernel: dropped a protected connection while no interceptor was listening"
                ),
                EventKind::PassedFailOpen => tracing::warn!(
                    %client, %original_dst,
                    "kernel: passed a protected connection UNCHECKED (fail_open, no interceptor listening)"
                ),
                EventKind::AssignFailed => tracing::error!(
                    %client, %original_dst,
                    "kernel: could not assign a protected connection to the interceptor; dropped"
                ),
            }
            audit
                .emit(AuditEvent::Kernel {
                    kind: kind_name(kind),
                    client,
                    original_dst,
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::to_words;
    use interceptor_common::AF_INET6;

    fn bytes_of(event: &Event) -> Vec<u8> {
        // SAFETY: Event is plain old data.
        unsafe {
            std::slice::from_raw_parts(
                (event as *const Event).cast::<u8>(),
                std::mem::size_of::<Event>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_an_ipv6_drop_event() {
        let event = Event {
            kind: EventKind::DroppedNoListener as u32,
            family: AF_INET6,
            src_port: 41000,
            dst_port: 9092,
            src_addr: to_words("::1".parse().unwrap()),
            dst_addr: to_words("::1".parse().unwrap()),
        };
        let (kind, src, dst) = decode(&bytes_of(&event)).unwrap();
        assert_eq!(kind, EventKind::DroppedNoListener);
        assert_eq!(src, "[::1]:41000".parse().unwrap());
        assert_eq!(dst, "[::1]:9092".parse().unwrap());
    }

    #[test]
    fn refuses_wrong_sizes_and_unknown_kinds() {
        assert!(decode(&[0; 7]).is_none());
        let mut event = Event {
            kind: 99,
            family: 2,
            src_port: 1,
            dst_port: 2,
            src_addr: [0; 4],
            dst_addr: [0; 4],
        };
        assert!(decode(&bytes_of(&event)).is_none());
        event.kind = 1;
        event.src_port = 70_000;
        assert!(decode(&bytes_of(&event)).is_none());
    }
}
