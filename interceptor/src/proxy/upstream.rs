//! The daemon's connection to the broker, exempted from steering by its exact 4-tuple.

use std::{io, net::SocketAddr, time::Duration};

use thiserror::Error;
use tokio::net::{TcpSocket, TcpStream};

use crate::ebpf::{ExemptRegistry, Exemption, SteeringError};

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("cannot create a socket for {target}: {source}")]
    Socket {
        target: SocketAddr,
        source: io::Error,
    },
    #[error("cannot exempt the upstream socket: {0}")]
    Exempt(#[from] SteeringError),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: SocketAddr,
        source: io::Error,
    },
    #[error("connecting to {target} timed out after {timeout:?}")]
    Timeout {
        target: SocketAddr,
        timeout: Duration,
    },
}

/// An open upstream connection. Field order matters: the exemption is dropped (unlisted)
/// before the stream is closed, so the 4-tuple is never listed while another socket could
/// take it.
pub struct Upstream {
    _exemption: Exemption,
    pub stream: TcpStream,
}

/// Binds a socket, lists its 4-tuple as exempt, then connects. A broker on this host is
/// reached from its own address (any local address can reach itself); a broker elsewhere is
/// not subject to this host's steering, so its connection needs no exemption.
pub async fn connect(
    target: SocketAddr,
    exempt: &ExemptRegistry,
    timeout: Duration,
) -> Result<Upstream, UpstreamError> {
    let socket_error = |source| UpstreamError::Socket { target, source };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(socket_error)?;

    let mut exemption = exempt.register_none();
    if exempt.is_enabled() {
        match socket.bind(SocketAddr::new(target.ip(), 0)) {
            Ok(()) => {
                let local = socket.local_addr().map_err(socket_error)?;
                exemption = exempt.register(local, target)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                tracing::debug!(%target, "upstream is not a local address: no exemption needed");
            }
            Err(e) => return Err(socket_error(e)),
        }
    }
    let stream = match tokio::time::timeout(timeout, socket.connect(target)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(UpstreamError::Connect { target, source }),
        Err(_) => return Err(UpstreamError::Timeout { target, timeout }),
    };
    // Kafka requests are small and latency-bound; clients set this on their side too.
    stream.set_nodelay(true).map_err(socket_error)?;
    Ok(Upstream {
        _exemption: exemption,
        stream,
    })
}
