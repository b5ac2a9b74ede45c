//! The daemon's own upstream connections, exempted from steering by exact 4-tuple.
//!
//! An entry exists only while its socket is open: it is inserted after `bind` and before
//! `connect`, and removed before the socket is closed, so no other process can ever hold a
//! 4-tuple while it is listed.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use aya::maps::{HashMap, MapData};
use interceptor_common::ExemptKey;

use crate::addr::exempt_key;

use super::SteeringError;

type ExemptMap = HashMap<MapData, ExemptKey, u8>;

/// Registers upstream 4-tuples; a no-op where nothing is steered (listen mode).
#[derive(Clone, Default)]
pub struct ExemptRegistry {
    map: Option<Arc<Mutex<ExemptMap>>>,
}

impl ExemptRegistry {
    pub fn new(map: ExemptMap) -> Self {
        Self {
            map: Some(Arc::new(Mutex::new(map))),
        }
    }

    /// A registry that exempts nothing, for modes without kernel steering.
    pub fn disabled() -> Self {
        Self::default()
    }

    pub fn is_enabled(&self) -> bool {
        self.map.is_some()
    }

    /// Lists `src → dst` until the returned guard is dropped.
    pub fn register(&self, src: SocketAddr, dst: SocketAddr) -> Result<Exemption, SteeringError> {
        let Some(map) = &self.map else {
            return Ok(Exemption { entry: None });
        };
        let key = exempt_key(src, dst);
        lock(map)
            .insert(key, 1, 0)
            .map_err(|e| SteeringError::Map("EXEMPT insert", e))?;
        Ok(Exemption {
            entry: Some((Arc::clone(map), key)),
        })
    }

    /// An exemption that lists nothing (no socket needs one).
    pub fn register_none(&self) -> Exemption {
        Exemption { entry: None }
    }

    /// Removes every entry: those left by a daemon that died name sockets that no longer exist.
    pub fn clear(&self) -> Result<usize, SteeringError> {
        let Some(map) = &self.map else { return Ok(0) };
        let mut map = lock(map);
        let keys: Vec<ExemptKey> = map.keys().filter_map(Result::ok).collect();
        for key in &keys {
            map.remove(key)
                .map_err(|e| SteeringError::Map("EXEMPT remove", e))?;
        }
        Ok(keys.len())
    }
}

fn lock(map: &Mutex<ExemptMap>) -> std::sync::MutexGuard<'_, ExemptMap> {
    // A panic while holding the lock cannot leave the kernel map half-updated (each call is
    // one syscall), so a poisoned lock is still safe to use.
    map.lock().unwrap_or_else(|p| p.into_inner())
}

/// One listed 4-tuple; dropping it removes the entry. Declare it before the socket it covers
/// in any struct, so it is dropped (unlisted) before the socket is closed.
pub struct Exemption {
    entry: Option<(Arc<Mutex<ExemptMap>>, ExemptKey)>,
}

impl Drop for Exemption {
    fn drop(&mut self) {
        if let Some((map, key)) = self.entry.take() {
            if let Err(e) = lock(&map).remove(&key) {
                tracing::error!(?key, "cannot remove exempt upstream 4-tuple: {e}");
            }
        }
    }
}
