//! The token vault: token → original value, encrypted at rest, stored before the record that
//! carries the token goes to the broker.
//!
//! - [`keyring`]: the keyring file (MAC key, encryption keys by id, the current one).
//! - `embedded`: the default store, a redb file on this node.
//! - `postgres`: a PostgreSQL table shared by every node of a cluster, so each node's
//!   interceptor resolves the tokens the others made.
//!
//! Each row holds the scope, a keyed fingerprint of (scope, value), the key id, a random
//! 24-byte nonce and the XChaCha20-Poly1305 ciphertext of the value, with (key id, token,
//! scope) as associated data. Rows are written once and never change value (only `rekey`
//! re-encrypts them), which is what lets the in-memory cache answer without asking the
//! database again.
//!
//! Every database call is bounded by the configured timeout; a store that does not answer is
//! [`VaultError::Unavailable`], and callers refuse the record rather than forward it in clear.

pub mod keyring;

mod embedded;
mod postgres;

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    fmt,
    num::NonZeroUsize,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use lru::LruCache;
use serde::Serialize;
use thiserror::Error;
use tracing::{debug, error, info};

pub use keyring::{read_private_file, Keyring};

use crate::mask::{MacKey, NewToken};
use embedded::EmbeddedStore;
use keyring::FINGERPRINT_LEN;
use postgres::PgStore;

/// A value larger than this is refused: a record field, not a file.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Tokens and scopes are short derived strings; anything longer is not one of ours.
pub const MAX_TOKEN_BYTES: usize = 1024;
pub const MAX_SCOPE_BYTES: usize = 1024;
/// Values up to this size are kept in the cache, so a cache of N entries holds at most about
/// N × 4 KiB of values; larger ones are cached by fingerprint only (store skips the database,
/// lookup does not).
pub const MAX_CACHED_VALUE_BYTES: usize = 4 * 1024;
/// Rows re-encrypted per transaction by [`Vault::rekey`].
const REKEY_BATCH: usize = 500;

/// Where the rows live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A redb file on this node, e.g. `/var/lib/interceptor/vault.redb`.
    Embedded { path: PathBuf },
    /// A PostgreSQL database shared by the cluster. `url` is a libpq-style connection string
    /// (`postgres://user@host:5432/db` or `host=... user=...`); the password, if any, may come
    /// from `password_file` instead (same ownership and mode rules as the keyring). No TLS
    /// yet: reach the database over a trusted network or a local socket.
    Postgres {
        url: String,
        password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    pub backend: Backend,
    pub key_file: PathBuf,
    /// Tokens kept in memory; 0 turns the cache off.
    pub cache_entries: usize,
    /// Bound on every database call (including connecting).
    pub timeout: Duration,
}

/// A value read back from the vault.
#[derive(Clone, PartialEq, Eq)]
pub struct Revealed {
    /// The scope the token was made for (`rule/field` or `rule/detector`).
    pub scope: String,
    pub value: Vec<u8>,
}

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revealed")
            .field("scope", &self.scope)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

/// For `interceptor status`: counts, never tokens or values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultStatus {
    /// `embedded <path>` or `postgres <host:port/db>`.
    pub backend: String,
    /// Whether the last database call succeeded.
    pub healthy: bool,
    /// The key id new rows are sealed under.
    pub current_key: String,
    pub cache_entries: usize,
    pub cache_capacity: usize,
    /// Tokens written to the database.
    pub stored: u64,
    /// Tokens asked to be stored that were already held for the same value.
    pub already_held: u64,
    /// Tokens already held for another value (the caller re-derives).
    pub conflicts: u64,
    /// Tokens asked for by lookups.
    pub looked_up: u64,
    /// Tokens lookups found.
    pub revealed: u64,
    /// Tokens answered from the cache, by store or lookup.
    pub cache_hits: u64,
    /// Failed calls, and rows that did not decrypt.
    pub errors: u64,
}

#[derive(Debug, Error)]
pub enum VaultError {
    #[error("vault keyring {path}: {message}")]
    Keyring { path: PathBuf, message: String },
    #[error("vault configuration: {0}")]
    Config(String),
    /// The database could not be opened or created at start.
    #[error("cannot open {backend}: {reason}")]
    Open { backend: String, reason: String },
    /// The database did not answer in time or is unreachable; retry later.
    #[error("{backend} is unavailable: {reason}")]
    Unavailable { backend: String, reason: String },
    /// The database answered with an error.
    #[error("{backend} failed: {reason}")]
    Backend { backend: String, reason: String },
    #[error("{what} of {len} bytes is larger than the vault's limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A token or scope the vault cannot hold (empty, NUL inside).
    #[error("invalid {0}")]
    Invalid(String),
    /// A row that does not decrypt (rekey stops on it).
    #[error("vault row for token {token:?}: {reason}")]
    Crypto { token: String, reason: String },
}

impl VaultError {
    /// Whether the same call may succeed later (answer the producer with a retriable error).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            VaultError::Unavailable { .. } | VaultError::Backend { .. }
        )
    }
}

/// One stored row, as both stores keep it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub scope: String,
    pub fingerprint: Vec<u8>,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("scope", &self.scope)
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// What a store found for a token it was asked to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Insert {
    Inserted,
    /// A row was already there: its scope and fingerprint, for the caller to compare.
    Held {
        scope: String,
        fingerprint: Vec<u8>,
    },
}

enum Store {
    Embedded(EmbeddedStore),
    Postgres(Box<PgStore>),
}

impl Store {
    async fn insert(&self, rows: Vec<(String, Row)>) -> Result<Vec<Insert>, VaultError> {
        match self {
            Store::Embedded(s) => s.insert(rows).await,
            Store::Postgres(s) => s.insert(rows).await,
        }
    }

    async fn fetch(&self, tokens: Vec<String>) -> Result<Vec<(String, Row)>, VaultError> {
        match self {
            Store::Embedded(s) => s.fetch(tokens).await,
            Store::Postgres(s) => s.fetch(tokens).await,
        }
    }

    /// Re-encrypts under the current key the rows after `after` (in token order) that use
    /// another key, up to a batch; returns how many it changed and where to go on from (None:
    /// done).
    async fn rekey_batch(
        &self,
        keyring: &Arc<Keyring>,
        after: Option<String>,
    ) -> Result<(usize, Option<String>), VaultError> {
        match self {
            Store::Embedded(s) => s.rekey_batch(keyring.clone(), after, REKEY_BATCH).await,
            Store::Postgres(s) => s.rekey_batch(keyring, after, REKEY_BATCH).await,
        }
    }

    fn name(&self) -> &str {
        match self {
            Store::Embedded(s) => s.name(),
            Store::Postgres(s) => s.name(),
        }
    }
}

#[derive(Clone)]
struct CacheEntry {
    scope: Arc<str>,
    fingerprint: [u8; FINGERPRINT_LEN],
    /// None for values over [`MAX_CACHED_VALUE_BYTES`] and for rows only seen by fingerprint.
    value: Option<Arc<[u8]>>,
}

#[derive(Default)]
struct Counters {
    stored: AtomicU64,
    already_held: AtomicU64,
    conflicts: AtomicU64,
    looked_up: AtomicU64,
    revealed: AtomicU64,
    cache_hits: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

struct Inner {
    keyring: Arc<Keyring>,
    store: Store,
    cache: Option<Mutex<LruCache<String, CacheEntry>>>,
    counters: Counters,
    healthy: AtomicBool,
}

/// The token vault. Cheap to clone: every clone shares the keys, the store and the cache.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("backend", &self.inner.store.name())
            .field("keyring", &self.inner.keyring)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Loads the keyring and opens the store. The embedded store must open; a PostgreSQL
    /// server that does not answer yet is only logged (the vault reports unhealthy and
    /// connects on the next call), so a broker node can start while the database is down.
    pub async fn open(config: &VaultConfig) -> Result<Vault, VaultError> {
        let key_file = config.key_file.clone();
        let keyring = tokio::task::spawn_blocking(move || Keyring::load(&key_file))
            .await
            .map_err(|e| VaultError::Config(format!("loading the keyring: {e}")))??;
        Self::with_keyring(config, Arc::new(keyring)).await
    }

    /// [`Vault::open`] with a keyring already loaded.
    pub async fn with_keyring(
        config: &VaultConfig,
        keyring: Arc<Keyring>,
    ) -> Result<Vault, VaultError> {
        if config.timeout.is_zero() {
            return Err(VaultError::Config("timeout must be above zero".into()));
        }
        let (store, healthy) = match &config.backend {
            Backend::Embedded { path } => (
                Store::Embedded(EmbeddedStore::open(path, config.timeout).await?),
                true,
            ),
            Backend::Postgres { url, password_file } => {
                let store = PgStore::new(url, password_file.as_deref(), config.timeout)?;
                let healthy = store.check().await;
                (Store::Postgres(Box::new(store)), healthy)
            }
        };
        info!(
            backend = store.name(),
            current_key = keyring.current(),
            cache_entries = config.cache_entries,
            "token vault open"
        );
        let cache = NonZeroUsize::new(config.cache_entries).map(|n| Mutex::new(LruCache::new(n)));
        Ok(Vault {
            inner: Arc::new(Inner {
                keyring,
                store,
                cache,
                counters: Counters::default(),
                healthy: AtomicBool::new(healthy),
            }),
        })
    }

    pub fn mac_key(&self) -> &MacKey {
        self.inner.keyring.mac_key()
    }

    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    /// Stores every token; returns the indexes of tokens already held for ANOTHER value
    /// (the caller re-derives those with counter + 1 and stores again). Tokens already held for
    /// the same value are fine (idempotent). When it returns Ok, every token not in the
    /// returned list is durably stored. A token that appears twice in `tokens` with two values
    /// is stored for the first; the later one is a conflict.
    pub async fn store(&self, tokens: &[NewToken]) -> Result<Vec<usize>, VaultError> {
        for t in tokens {
            check_token(&t.token)?;
            check_len("scope", t.scope.len(), MAX_SCOPE_BYTES)?;
            if t.scope.contains('\0') {
                return Err(VaultError::Invalid("scope: contains NUL".into()));
            }
            check_len("value", t.value.len(), MAX_VALUE_BYTES)?;
        }
        let inner = &self.inner;
        let fingerprints: Vec<[u8; FINGERPRINT_LEN]> = tokens
            .iter()
            .map(|t| inner.keyring.fingerprint(&t.scope, &t.value))
            .collect();
        // The fingerprint each token is held for, from the cache or the database; every index
        // is then judged against it, so repeats of a token within the batch need no special
        // case.
        let mut holder: HashMap<&str, Vec<u8>> = HashMap::new();
        let mut pending: Vec<usize> = Vec::new();
        let mut hits = 0;
        for (i, t) in tokens.iter().enumerate() {
            let Entry::Vacant(slot) = holder.entry(&t.token) else {
                continue;
            };
            match inner.cached(&t.token) {
                Some(entry) => {
                    hits += 1;
                    slot.insert(entry.fingerprint.to_vec());
                }
                None => {
                    // Placeholder until the database answers; never equal to a fingerprint.
                    slot.insert(Vec::new());
                    pending.push(i);
                }
            }
        }
        Counters::add(&inner.counters.cache_hits, hits);

        let mut stored = 0;
        if !pending.is_empty() {
            let rows = pending
                .iter()
                .map(|&i| {
                    let t = &tokens[i];
                    let row = inner
                        .keyring
                        .seal(&t.token, &t.scope, &t.value, fingerprints[i])?;
                    Ok((t.token.clone(), row))
                })
                .collect::<Result<Vec<_>, VaultError>>()?;
            let outcomes = inner.observe(inner.store.insert(rows).await)?;
            for (&i, outcome) in pending.iter().zip(outcomes) {
                let t = &tokens[i];
                let (scope, fingerprint) = match outcome {
                    Insert::Inserted => {
                        stored += 1;
                        (t.scope.clone(), fingerprints[i].to_vec())
                    }
                    Insert::Held { scope, fingerprint } => (scope, fingerprint),
                };
                if let Ok(fp) = <[u8; FINGERPRINT_LEN]>::try_from(fingerprint.as_slice()) {
                    let value = (fp == fingerprints[i]).then_some(t.value.as_slice());
                    inner.remember(&t.token, &scope, fp, value);
                }
                holder.insert(&t.token, fingerprint);
            }
        }
        let conflict: Vec<bool> = tokens
            .iter()
            .zip(&fingerprints)
            .map(|(t, fp)| holder.get(t.token.as_str()).map(Vec::as_slice) != Some(fp.as_slice()))
            .collect();
        let held = conflict.iter().filter(|c| !**c).count() - stored;
        let conflicts: Vec<usize> = (0..tokens.len()).filter(|&i| conflict[i]).collect();
        Counters::add(&inner.counters.stored, stored);
        Counters::add(&inner.counters.already_held, held);
        Counters::add(&inner.counters.conflicts, conflicts.len());
        if !conflicts.is_empty() {
            // Counter bumps are rare (a truncated or format-preserving token space); worth a
            // trace, never with values.
            debug!(
                count = conflicts.len(),
                "vault tokens held for other values"
            );
        }
        Ok(conflicts)
    }

    /// The values of the tokens found; absent tokens are missing from the map. A row that does
    /// not decrypt (altered, or sealed under a key the keyring no longer has) is logged,
    /// counted as an error and left out: the reader sees the token, never a wrong value.
    pub async fn lookup(&self, tokens: &[String]) -> Result<HashMap<String, Revealed>, VaultError> {
        let inner = &self.inner;
        let mut found = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut missing: Vec<String> = Vec::new();
        let mut hits = 0;
        for token in tokens {
            if !seen.insert(token) || check_token(token).is_err() {
                continue;
            }
            match inner.cached(token) {
                Some(CacheEntry {
                    scope,
                    value: Some(value),
                    ..
                }) => {
                    hits += 1;
                    found.insert(
                        token.clone(),
                        Revealed {
                            scope: scope.to_string(),
                            value: value.to_vec(),
                        },
                    );
                }
                _ => missing.push(token.clone()),
            }
        }
        Counters::add(&inner.counters.looked_up, tokens.len());
        Counters::add(&inner.counters.cache_hits, hits);
        if !missing.is_empty() {
            let rows = inner.observe(inner.store.fetch(missing).await)?;
            for (token, row) in rows {
                match inner.keyring.open(&token, &row) {
                    Ok(value) => {
                        if let Ok(fp) =
                            <[u8; FINGERPRINT_LEN]>::try_from(row.fingerprint.as_slice())
                        {
                            inner.remember(&token, &row.scope, fp, Some(&value));
                        }
                        found.insert(
                            token,
                            Revealed {
                                scope: row.scope,
                                value,
                            },
                        );
                    }
                    Err(e) => {
                        inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                        error!(
                            backend = inner.store.name(),
                            token = %token,
                            key_id = %row.key_id,
                            "vault row does not decrypt: {e}"
                        );
                    }
                }
            }
        }
        Counters::add(&inner.counters.revealed, found.len());
        Ok(found)
    }

    /// Re-encrypts every row sealed under another key than the keyring's current one; returns
    /// how many it changed. Safe to run while the vault serves, and on several nodes at once
    /// (a row changed meanwhile is left to whoever changed it). Stops at the first row that
    /// does not decrypt, naming it. Every node must run with the same keyring and current key,
    /// or rekeys on two nodes would undo each other.
    pub async fn rekey(&self) -> Result<usize, VaultError> {
        let inner = &self.inner;
        let mut total = 0;
        let mut after = None;
        loop {
            let (n, next) = inner.observe(inner.store.rekey_batch(&inner.keyring, after).await)?;
            total += n;
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        info!(
            backend = inner.store.name(),
            current_key = inner.keyring.current(),
            rows = total,
            "vault rekey done"
        );
        Ok(total)
    }

    pub fn status(&self) -> VaultStatus {
        let inner = &self.inner;
        let (cache_entries, cache_capacity) = match &inner.cache {
            Some(cache) => {
                let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                (cache.len(), cache.cap().get())
            }
            None => (0, 0),
        };
        let c = &inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VaultStatus {
            backend: inner.store.name().to_owned(),
            healthy: inner.healthy.load(Ordering::Relaxed),
            current_key: inner.keyring.current().to_owned(),
            cache_entries,
            cache_capacity,
            stored: get(&c.stored),
            already_held: get(&c.already_held),
            conflicts: get(&c.conflicts),
            looked_up: get(&c.looked_up),
            revealed: get(&c.revealed),
            cache_hits: get(&c.cache_hits),
            errors: get(&c.errors),
        }
    }
}

impl Inner {
    fn cached(&self, token: &str) -> Option<CacheEntry> {
        let cache = self.cache.as_ref()?;
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(token).cloned()
    }

    fn remember(
        &self,
        token: &str,
        scope: &str,
        fingerprint: [u8; FINGERPRINT_LEN],
        value: Option<&[u8]>,
    ) {
        let Some(cache) = &self.cache else {
            return;
        };
        let entry = CacheEntry {
            scope: Arc::from(scope),
            fingerprint,
            value: value
                .filter(|v| v.len() <= MAX_CACHED_VALUE_BYTES)
                .map(Arc::from),
        };
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.put(token.to_owned(), entry);
    }

    /// Tracks health and errors from a database call's result.
    fn observe<T>(&self, result: Result<T, VaultError>) -> Result<T, VaultError> {
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    info!(backend = self.store.name(), "vault store answers again");
                }
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    error!(backend = self.store.name(), "vault store failed: {e}");
                } else {
                    debug!(
                        backend = self.store.name(),
                        "vault store still failing: {e}"
                    );
                }
            }
        }
        result
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), VaultError> {
    if len > max {
        return Err(VaultError::TooLarge { what, len, max });
    }
    Ok(())
}

fn check_token(token: &str) -> Result<(), VaultError> {
    if token.is_empty() {
        return Err(VaultError::Invalid("token: empty".into()));
    }
    check_len("token", token.len(), MAX_TOKEN_BYTES)?;
    // The embedded store's row format and PostgreSQL text both refuse NUL.
    if token.contains('\0') {
        return Err(VaultError::Invalid("token: contains NUL".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
