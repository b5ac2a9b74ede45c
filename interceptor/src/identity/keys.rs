//! One issuer's cached key set: fetched by the background refresh and, when a token names a
//! key we do not have, once more on demand.
//!
//! Fetches for an issuer never run in parallel (one lock around them), and a validation
//! that waited for someone else's fetch uses that result instead of fetching again. Fetches
//! caused by tokens are rate limited so unknown `kid`s cannot make us hammer the issuer.
//! Keys outlive a failing issuer by `jwks_max_stale_secs` and no longer.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use tokio::sync::{watch, Mutex};

use super::{
    discovery,
    error::FetchError,
    http::HttpClient,
    jwks::KeySet,
    settings::{IssuerSettings, Settings},
};

/// The first retry after a failed background fetch; doubled up to the refresh interval.
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// The keys from one successful fetch.
#[derive(Debug)]
pub(crate) struct KeySnapshot {
    pub keys: KeySet,
    fetched_at: Instant,
}

#[derive(Debug, Default)]
struct FetchState {
    /// The last fetch a token asked for, for the rate limit.
    last_on_demand: Option<Instant>,
    /// From discovery; forgotten when the key set cannot be fetched from it, so that the
    /// next attempt discovers again.
    discovered_jwks_uri: Option<String>,
}

#[derive(Debug)]
pub(crate) struct IssuerKeys {
    settings: IssuerSettings,
    http: HttpClient,
    min_refetch: Duration,
    max_stale: Duration,
    current: RwLock<Option<Arc<KeySnapshot>>>,
    /// Completed fetch attempts; a waiter that sees it move knows a fetch finished meanwhile.
    attempts: AtomicU64,
    fetch: Mutex<FetchState>,
}

impl IssuerKeys {
    pub(crate) fn new(settings: IssuerSettings, shared: &Settings, http: HttpClient) -> Self {
        Self {
            settings,
            http,
            min_refetch: shared.min_refetch,
            max_stale: shared.max_stale,
            current: RwLock::new(None),
            attempts: AtomicU64::new(0),
            fetch: Mutex::new(FetchState::default()),
        }
    }

    pub(crate) fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// Read before [`Self::usable`]; passed to [`Self::refetch`].
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    /// The keys, unless none were ever fetched or the last success is older than
    /// `jwks_max_stale_secs`.
    pub(crate) fn usable(&self) -> Option<Arc<KeySnapshot>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        current.filter(|snapshot| snapshot.fetched_at.elapsed() <= self.max_stale)
    }

    /// A fetch on behalf of a token whose key is missing. `seen` is [`Self::attempts`] from
    /// before the caller looked at the keys: if a fetch completed since, its result is used
    /// as is. Otherwise fetches unless one was asked for within `jwks_min_refetch_secs`.
    pub(crate) async fn refetch(&self, seen: u64) -> Option<Arc<KeySnapshot>> {
        let mut state = self.fetch.lock().await;
        if self.attempts() == seen {
            let limited = state
                .last_on_demand
                .is_some_and(|at| at.elapsed() < self.min_refetch);
            if limited {
                tracing::debug!(
                    issuer = %self.settings.issuer,
                    "key set fetched recently; not fetching again for this token"
                );
            } else {
                state.last_on_demand = Some(Instant::now());
                // Failures are logged inside; the caller only needs the keys.
                let _ = self.fetch_locked(&mut state).await;
            }
        }
        drop(state);
        self.usable()
    }

    /// The periodic fetch; true if it succeeded.
    pub(crate) async fn refresh(&self) -> bool {
        let mut state = self.fetch.lock().await;
        self.fetch_locked(&mut state).await.is_ok()
    }

    async fn fetch_locked(&self, state: &mut FetchState) -> Result<(), FetchError> {
        let result = self.fetch_keys(state).await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        result
    }

    async fn fetch_keys(&self, state: &mut FetchState) -> Result<(), FetchError> {
        let issuer = self.settings.issuer.as_str();
        let jwks_uri = match (&self.settings.jwks_uri, &state.discovered_jwks_uri) {
            (Some(configured), _) => configured.clone(),
            (None, Some(discovered)) => discovered.clone(),
            (None, None) => {
                let url = self.settings.discovery_url.as_str();
                match discovery::jwks_uri(&self.http, issuer, url).await {
                    Ok(uri) => {
                        tracing::debug!(issuer, url, jwks_uri = %uri, "discovered key set");
                        state.discovered_jwks_uri = Some(uri.clone());
                        uri
                    }
                    Err(error) => {
                        tracing::warn!(issuer, url, %error, "OIDC discovery failed");
                        return Err(error);
                    }
                }
            }
        };
        let keys = self
            .http
            .get_json(&jwks_uri)
            .await
            .and_then(|doc| KeySet::parse(&doc, issuer));
        match keys {
            Ok(keys) => {
                if keys.is_empty() {
                    tracing::warn!(
                        issuer,
                        url = %jwks_uri,
                        "issuer's key set has no usable signature keys"
                    );
                } else {
                    tracing::debug!(issuer, url = %jwks_uri, keys = keys.len(), "fetched key set");
                }
                let snapshot = Arc::new(KeySnapshot {
                    keys,
                    fetched_at: Instant::now(),
                });
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(snapshot);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(issuer, url = %jwks_uri, %error, "fetching the key set failed");
                state.discovered_jwks_uri = None;
                Err(error)
            }
        }
    }
}

/// Fetches at once, then every `every`; after a failure, sooner (from one second, doubling)
/// so a restart while the issuer blips does not leave us without keys for a whole interval.
/// Returns once `stop` holds true or its sender is dropped.
pub(crate) async fn refresh_loop(
    keys: Arc<IssuerKeys>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = RETRY_FIRST.min(every);
    loop {
        let ok = tokio::select! {
            biased;
            _ = stop.wait_for(|&stopped| stopped) => return,
            ok = keys.refresh() => ok,
        };
        let wait = if ok {
            retry = RETRY_FIRST.min(every);
            every
        } else {
            let wait = retry;
            retry = retry.saturating_mul(2).min(every);
            wait
        };
        tokio::select! {
            biased;
            _ = stop.wait_for(|&stopped| stopped) => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
