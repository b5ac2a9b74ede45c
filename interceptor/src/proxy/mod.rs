//! Accepting client connections and running one session task per connection.

mod access;
mod auth;
mod authorize;
mod masking;
mod mqtt;
mod relay;
mod session;
pub mod tap;
pub(crate) mod upstream;
mod write;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};

pub use auth::Authenticator;
pub use masking::Masking;
pub use session::{Router, SessionContext};

/// Serves `listeners` until `shutdown` turns true, then ends every session and returns the
/// number of sessions that were still open.
pub async fn serve(
    listeners: Vec<TcpListener>,
    ctx: Arc<SessionContext>,
    mut shutdown: watch::Receiver<bool>,
) -> usize {
    let limit = Arc::new(Semaphore::new(ctx.config.limits.max_connections));
    let next_session = Arc::new(AtomicU64::new(1));
    let mut acceptors = JoinSet::new();
    for listener in listeners {
        acceptors.spawn(accept_loop(
            listener,
            Arc::clone(&ctx),
            Arc::clone(&limit),
            Arc::clone(&next_session),
            shutdown.clone(),
        ));
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    let mut open = 0;
    while let Some(result) = acceptors.join_next().await {
        match result {
            Ok(n) => open += n,
            Err(e) => tracing::error!("accept loop failed: {e}"),
        }
    }
    open
}

/// Accepts until shutdown; returns how many sessions were open at that moment.
async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<SessionContext>,
    limit: Arc<Semaphore>,
    next_session: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) -> usize {
    let mut sessions = JoinSet::new();
    loop {
        // Past the connection limit, new connections wait in the kernel's accept queue.
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
            // Reap finished sessions so the set does not grow with the connection count.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        match accepted {
            Ok((stream, _)) => {
                let session = next_session.fetch_add(1, Ordering::Relaxed);
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                sessions.spawn(async move {
                    session::serve(session, stream, ctx, shutdown).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    // Closing the listener first takes it out of the kernel's socket map: from here on
    // protected flows fail closed while the sessions wind down.
    drop(listener);
    let open = sessions.len();
    while sessions.join_next().await.is_some() {}
    open
}
