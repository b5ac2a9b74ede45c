//! The embedded store: one redb file on this node, token → encoded row. Every call runs on the
//! blocking pool (redb does file I/O and fsync), bounded by the vault's timeout; each insert
//! batch is one write transaction committed with immediate durability before it returns.

use std::{
    fs::{DirBuilder, OpenOptions},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
    sync::Arc,
    time::Duration,
};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::warn;

use super::{Insert, Keyring, Row, VaultError};

pub(super) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// First byte of every encoded row, so the format can change later.
const ROW_FORMAT: u8 = 1;

pub(crate) struct EmbeddedStore {
    db: Arc<Database>,
    name: Arc<str>,
    timeout: Duration,
}

/// An error inside a blocking closure, turned into a [`VaultError`] naming the store outside.
enum Fail {
    Db(redb::Error),
    Vault(VaultError),
}

fn db(e: impl Into<redb::Error>) -> Fail {
    Fail::Db(e.into())
}

impl EmbeddedStore {
    /// Opens (or creates, mode 0600, its directory 0700) the redb file at `path`.
    pub(crate) async fn open(path: &Path, timeout: Duration) -> Result<EmbeddedStore, VaultError> {
        let name: Arc<str> = Arc::from(format!("embedded vault {}", path.display()));
        let owned = path.to_owned();
        let open_name = name.clone();
        // Not bounded by the timeout: opening may repair a file after a crash, which takes as
        // long as it takes, and the daemon cannot serve tokenizing topics without it.
        let db = tokio::task::spawn_blocking(move || open_blocking(&owned))
            .await
            .map_err(|e| VaultError::Open {
                backend: open_name.to_string(),
                reason: format!("opening task failed: {e}"),
            })?
            .map_err(|reason| VaultError::Open {
                backend: name.to_string(),
                reason,
            })?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            name,
            timeout,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the blocking pool; past the timeout the caller gets `Unavailable` (the
    /// closure still finishes in the background: a commit is never cut in half).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, VaultError> {
        let db = self.db.clone();
        let task = tokio::task::spawn_blocking(move || f(&db));
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(VaultError::Unavailable {
                backend: self.name.to_string(),
                reason: format!("no answer within {:?}", self.timeout),
            }),
            Ok(Err(e)) => Err(VaultError::Backend {
                backend: self.name.to_string(),
                reason: format!("task failed: {e}"),
            }),
            Ok(Ok(Err(Fail::Db(e)))) => Err(VaultError::Backend {
                backend: self.name.to_string(),
                reason: e.to_string(),
            }),
            Ok(Ok(Err(Fail::Vault(e)))) => Err(e),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    pub(crate) async fn insert(&self, rows: Vec<(String, Row)>) -> Result<Vec<Insert>, VaultError> {
        let name = self.name.clone();
        self.blocking(move |rdb| {
            let mut txn = rdb.begin_write().map_err(db)?;
            txn.set_durability(Durability::Immediate).map_err(db)?;
            let mut out = Vec::with_capacity(rows.len());
            let mut inserted = false;
            {
                let mut table = txn.open_table(TOKENS).map_err(db)?;
                for (token, row) in &rows {
                    let existing = table
                        .get(token.as_str())
                        .map_err(db)?
                        .map(|v| decode(v.value()));
                    match existing {
                        Some(Ok(held)) => out.push(Insert::Held {
                            scope: held.scope,
                            fingerprint: held.fingerprint,
                        }),
                        Some(Err(reason)) => {
                            return Err(Fail::Vault(VaultError::Backend {
                                backend: name.to_string(),
                                reason: format!("row for token {token:?}: {reason}"),
                            }))
                        }
                        None => {
                            table
                                .insert(token.as_str(), encode(row).as_slice())
                                .map_err(db)?;
                            inserted = true;
                            out.push(Insert::Inserted);
                        }
                    }
                }
            }
            if inserted {
                txn.commit().map_err(db)?;
            } else {
                // Nothing new: no fsync for a batch that was already there.
                txn.abort().map_err(db)?;
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn fetch(
        &self,
        tokens: Vec<String>,
    ) -> Result<Vec<(String, Row)>, VaultError> {
        let name = self.name.clone();
        self.blocking(move |rdb| {
            let txn = rdb.begin_read().map_err(db)?;
            let table = txn.open_table(TOKENS).map_err(db)?;
            let mut out = Vec::new();
            for token in tokens {
                let Some(v) = table.get(token.as_str()).map_err(db)? else {
                    continue;
                };
                match decode(v.value()) {
                    Ok(row) => out.push((token, row)),
                    // Left out like an undecryptable row: the reader sees the token.
                    Err(reason) => {
                        warn!(backend = &*name, token = %token, "unreadable row: {reason}")
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn rekey_batch(
        &self,
        keyring: Arc<Keyring>,
        after: Option<String>,
        batch: usize,
    ) -> Result<(usize, Option<String>), VaultError> {
        self.blocking(move |rdb| {
            let mut txn = rdb.begin_write().map_err(db)?;
            txn.set_durability(Durability::Immediate).map_err(db)?;
            let mut changed = Vec::new();
            let mut last: Option<String> = None;
            let mut scanned = 0;
            {
                let mut table = txn.open_table(TOKENS).map_err(db)?;
                {
                    let range = match &after {
                        Some(a) => table.range::<&str>((
                            std::ops::Bound::Excluded(a.as_str()),
                            std::ops::Bound::Unbounded,
                        )),
                        None => table.range::<&str>(..),
                    }
                    .map_err(db)?;
                    for item in range {
                        let (k, v) = item.map_err(db)?;
                        let token = k.value().to_owned();
                        scanned += 1;
                        let row = decode(v.value()).map_err(|reason| {
                            Fail::Vault(VaultError::Crypto {
                                token: token.clone(),
                                reason: format!("unreadable row: {reason}"),
                            })
                        })?;
                        if row.key_id != keyring.current() {
                            let value = keyring.open(&token, &row).map_err(|e| {
                                Fail::Vault(VaultError::Crypto {
                                    token: token.clone(),
                                    reason: e.to_string(),
                                })
                            })?;
                            let fp = row.fingerprint.as_slice().try_into().map_err(|_| {
                                Fail::Vault(VaultError::Crypto {
                                    token: token.clone(),
                                    reason: "fingerprint of the wrong length".into(),
                                })
                            })?;
                            let resealed = keyring
                                .seal(&token, &row.scope, &value, fp)
                                .map_err(Fail::Vault)?;
                            changed.push((token.clone(), resealed));
                        }
                        last = Some(token);
                        if scanned >= batch {
                            break;
                        }
                    }
                }
                for (token, row) in &changed {
                    table
                        .insert(token.as_str(), encode(row).as_slice())
                        .map_err(db)?;
                }
            }
            if changed.is_empty() {
                txn.abort().map_err(db)?;
            } else {
                txn.commit().map_err(db)?;
            }
            let next = if scanned >= batch { last } else { None };
            Ok((changed.len(), next))
        })
        .await
    }
}

fn open_blocking(path: &Path) -> Result<Database, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
    }
    // Created 0600 before redb opens it: tokens and fingerprints are not for other users even
    // though values are encrypted.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create: {e}")),
    }
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            "already open (another interceptor process, or another vault in this one, uses it)"
                .to_owned()
        }
        e => e.to_string(),
    })?;
    // Create the table up front so readers never meet a missing table.
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.open_table(TOKENS).map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    Ok(db)
}

/// `[format][u16 scope len][scope][u8 fp len][fp][u8 key id len][key id][u8 nonce len][nonce]
/// [ciphertext...]`, integers big-endian.
fn encode(row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        8 + row.scope.len()
            + row.fingerprint.len()
            + row.key_id.len()
            + row.nonce.len()
            + row.ciphertext.len(),
    );
    out.push(ROW_FORMAT);
    out.extend_from_slice(&(row.scope.len() as u16).to_be_bytes());
    out.extend_from_slice(row.scope.as_bytes());
    for short in [
        row.fingerprint.as_slice(),
        row.key_id.as_bytes(),
        &row.nonce,
    ] {
        out.push(short.len() as u8);
        out.extend_from_slice(short);
    }
    out.extend_from_slice(&row.ciphertext);
    out
}

fn decode(bytes: &[u8]) -> Result<Row, String> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err("truncated row".into());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn short(&mut self) -> Result<&'a [u8], String> {
            let n = self.take(1)?[0] as usize;
            self.take(n)
        }
    }
    let mut c = Cursor(bytes);
    let format = c.take(1)?[0];
    if format != ROW_FORMAT {
        return Err(format!("unknown row format {format}"));
    }
    let len = c.take(2)?;
    let scope_len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let scope = String::from_utf8(c.take(scope_len)?.to_vec()).map_err(|_| "scope not UTF-8")?;
    let fingerprint = c.short()?.to_vec();
    let key_id = String::from_utf8(c.short()?.to_vec()).map_err(|_| "key id not UTF-8")?;
    let nonce = c.short()?.to_vec();
    Ok(Row {
        scope,
        fingerprint,
        key_id,
        nonce,
        ciphertext: c.0.to_vec(),
    })
}
