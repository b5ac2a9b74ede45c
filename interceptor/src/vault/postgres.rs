//! The PostgreSQL store: one table shared by every node of a cluster.
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS interceptor_tokens (
//!     token       text PRIMARY KEY,
//!     scope       text NOT NULL,
//!     fingerprint bytea NOT NULL,
//!     key_id      text NOT NULL,
//!     nonce       bytea NOT NULL,
//!     ciphertext  bytea NOT NULL,
//!     created_at  timestamptz NOT NULL DEFAULT now()
//! )
//! ```
//!
//! Inserts are `ON CONFLICT (token) DO NOTHING`; a token that was not inserted is compared by
//! fingerprint with the row that holds it, so a token taken by another value is detected
//! without decrypting anything. Commits are PostgreSQL's (durable with the server's default
//! `synchronous_commit`).
//!
//! One connection, shared (tokio-postgres pipelines concurrent queries on it), made on first
//! use and again after it fails. No TLS yet: the connection string must not ask for it, and the
//! database must be reached over a trusted network or a local socket.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_postgres::{config::Host, error::SqlState, Client, Config, NoTls, Statement};
use tracing::{debug, info, warn};

use super::{keyring::read_private_file, Insert, Keyring, Row, VaultError};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS interceptor_tokens (
    token text PRIMARY KEY,
    scope text NOT NULL,
    fingerprint bytea NOT NULL,
    key_id text NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

const INSERT: &str = "INSERT INTO interceptor_tokens
        (token, scope, fingerprint, key_id, nonce, ciphertext, created_at)
    SELECT t, s, f, k, n, c, now()
    FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bytea[], $6::bytea[])
        AS u(t, s, f, k, n, c)
    ON CONFLICT (token) DO NOTHING
    RETURNING token";

const HELD: &str = "SELECT token, scope, fingerprint FROM interceptor_tokens
    WHERE token = ANY($1::text[])";

const FETCH: &str = "SELECT token, scope, fingerprint, key_id, nonce, ciphertext
    FROM interceptor_tokens WHERE token = ANY($1::text[])";

/// Stale rows after a cursor, in primary-key order, so a rekey walks the table once.
const SCAN_STALE: &str = "SELECT token, scope, fingerprint, key_id, nonce, ciphertext
    FROM interceptor_tokens WHERE key_id <> $1 AND token > $2 ORDER BY token LIMIT $3";

/// Only rows still under the key they were read with: a node rekeying at the same time wins
/// the rows it got to first, and neither overwrites the other with an older state.
const UPDATE_KEY: &str = "UPDATE interceptor_tokens AS t
    SET key_id = $1, nonce = u.n, ciphertext = u.c
    FROM unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[]) AS u(tok, old, n, c)
    WHERE t.token = u.tok AND t.key_id = u.old";

/// A password file holds one line.
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

struct Conn {
    client: Client,
    insert: Statement,
    held: Statement,
    fetch: Statement,
    scan_stale: Statement,
    update_key: Statement,
}

/// A failure inside one database operation.
enum Fail {
    Pg(tokio_postgres::Error),
    /// The database answered, but not with what the schema promises.
    Data(String),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

pub(crate) struct PgStore {
    config: Config,
    name: Arc<str>,
    timeout: Duration,
    conn: Mutex<Option<Arc<Conn>>>,
    /// One connection attempt at a time: callers arriving meanwhile wait for its result
    /// instead of opening their own.
    connecting: tokio::sync::Mutex<()>,
}

impl PgStore {
    pub(crate) fn new(
        url: &str,
        password_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<PgStore, VaultError> {
        // The parse error never echoes the string: it may carry a password.
        let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            VaultError::Config(format!("vault postgres connection string: {e}"))
        })?;
        if let Some(path) = password_file {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let euid = unsafe { libc::geteuid() };
            let bytes = read_private_file(path, &[0, euid], MAX_PASSWORD_FILE_BYTES).map_err(
                |message| {
                    VaultError::Config(format!("vault password file {}: {message}", path.display()))
                },
            )?;
            let password = bytes
                .strip_suffix(b"\n")
                .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
                .unwrap_or(&bytes);
            if password.is_empty() {
                return Err(VaultError::Config(format!(
                    "vault password file {} is empty",
                    path.display()
                )));
            }
            config.password(password);
        }
        config
            .connect_timeout(timeout)
            .application_name("interceptor")
            .keepalives(true);
        let name = Arc::from(describe(&config));
        Ok(PgStore {
            config,
            name,
            timeout,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Connects now (bounded by the timeout); false, logged, if the server does not answer.
    pub(crate) async fn check(&self) -> bool {
        match self.run(|_c| async { Ok(()) }).await {
            Ok(()) => true,
            Err(e) => {
                warn!(backend = &*self.name, "vault store not reachable yet: {e}");
                false
            }
        }
    }

    fn current(&self) -> Option<Arc<Conn>> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.as_ref().filter(|c| !c.client.is_closed()).cloned()
    }

    /// Drops `failed` (or whatever connection is current) so the next call reconnects.
    fn forget(&self, failed: Option<&Arc<Conn>>) {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let same = match (failed, conn.as_ref()) {
            (Some(f), Some(c)) => Arc::ptr_eq(f, c),
            (None, _) => true,
            (Some(_), None) => false,
        };
        if same {
            *conn = None;
        }
    }

    /// The current connection, or a new one; `true` with a connection made by this call.
    async fn connection(&self) -> Result<(Arc<Conn>, bool), tokio_postgres::Error> {
        if let Some(c) = self.current() {
            return Ok((c, false));
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok((c, false));
        }
        let conn = Arc::new(self.connect().await?);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        info!(backend = &*self.name, "vault store connected");
        Ok((conn, true))
    }

    async fn connect(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(backend = &*name, "vault store connection ended: {e}");
            }
        });
        if let Err(e) = client.batch_execute(SCHEMA).await {
            // Two nodes creating the table at once: the loser sees the catalog's unique index
            // or the table itself, and the table is there either way.
            let raced = matches!(
                e.code(),
                Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE
            );
            if !raced {
                return Err(e);
            }
        }
        Ok(Conn {
            insert: client.prepare(INSERT).await?,
            held: client.prepare(HELD).await?,
            fetch: client.prepare(FETCH).await?,
            scan_stale: client.prepare(SCAN_STALE).await?,
            update_key: client.prepare(UPDATE_KEY).await?,
            client,
        })
    }

    /// Runs `op` on a connection, the whole call (connecting included) bounded by the timeout.
    /// A connection that turns out dead is replaced and `op` tried once more on the new one:
    /// every operation here is idempotent.
    /// `op` gets the connection by value and builds an owned future, so the caller's future
    /// stays `Send` (an async closure borrowing the connection would not prove it).
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, VaultError>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        let attempt = async {
            let mut retried = false;
            loop {
                let (conn, fresh) = self.connection().await.map_err(|e| self.unavailable(&e))?;
                match op(conn.clone()).await {
                    Ok(v) => return Ok(v),
                    Err(Fail::Data(reason)) => {
                        return Err(VaultError::Backend {
                            backend: self.name.to_string(),
                            reason,
                        })
                    }
                    Err(Fail::Pg(e)) if e.as_db_error().is_some() => {
                        return Err(VaultError::Backend {
                            backend: self.name.to_string(),
                            reason: describe_error(&e),
                        })
                    }
                    Err(Fail::Pg(e)) => {
                        self.forget(Some(&conn));
                        if fresh || retried {
                            return Err(self.unavailable(&e));
                        }
                        debug!(
                            backend = &*self.name,
                            "vault store connection lost, reconnecting: {e}"
                        );
                        retried = true;
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                // A server that stops answering mid-query leaves the connection stuck behind
                // it; start over with a new one.
                self.forget(None);
                Err(VaultError::Unavailable {
                    backend: self.name.to_string(),
                    reason: format!("no answer within {:?}", self.timeout),
                })
            }
        }
    }

    fn unavailable(&self, e: &tokio_postgres::Error) -> VaultError {
        VaultError::Unavailable {
            backend: self.name.to_string(),
            reason: describe_error(e),
        }
    }

    pub(crate) async fn insert(&self, rows: Vec<(String, Row)>) -> Result<Vec<Insert>, VaultError> {
        let rows = Arc::new(rows);
        self.run(|c| {
            let rows = rows.clone();
            async move { insert_rows(&c, &rows).await }
        })
        .await
    }

    pub(crate) async fn fetch(
        &self,
        tokens: Vec<String>,
    ) -> Result<Vec<(String, Row)>, VaultError> {
        let tokens = Arc::new(tokens);
        self.run(|c| {
            let tokens = tokens.clone();
            async move {
                let rows = c.client.query(&c.fetch, &[&*tokens]).await?;
                rows.iter().map(row_of).collect()
            }
        })
        .await
    }

    pub(crate) async fn rekey_batch(
        &self,
        keyring: &Keyring,
        after: Option<String>,
        batch: usize,
    ) -> Result<(usize, Option<String>), VaultError> {
        let current: Arc<str> = Arc::from(keyring.current());
        let after: Arc<str> = Arc::from(after.unwrap_or_default());
        let limit = batch as i64;
        let stale = self
            .run(|c| {
                let (current, after) = (current.clone(), after.clone());
                async move {
                    let rows = c
                        .client
                        .query(&c.scan_stale, &[&&*current, &&*after, &limit])
                        .await?;
                    rows.iter().map(row_of).collect::<Result<Vec<_>, Fail>>()
                }
            })
            .await?;
        let Some((last, _)) = stale.last() else {
            return Ok((0, None));
        };
        let next = (stale.len() >= batch).then(|| last.clone());
        let mut resealed = Vec::with_capacity(stale.len());
        for (token, row) in &stale {
            let crypto = |reason: String| VaultError::Crypto {
                token: token.clone(),
                reason,
            };
            let value = keyring
                .open(token, row)
                .map_err(|e| crypto(e.to_string()))?;
            let fp = row
                .fingerprint
                .as_slice()
                .try_into()
                .map_err(|_| crypto("fingerprint of the wrong length".into()))?;
            resealed.push(keyring.seal(token, &row.scope, &value, fp)?);
        }
        let stale = Arc::new(stale);
        let resealed = Arc::new(resealed);
        let changed = self
            .run(|c| {
                let (current, stale, resealed) = (current.clone(), stale.clone(), resealed.clone());
                async move { update_keys(&c, &current, &stale, &resealed).await }
            })
            .await?;
        Ok((changed as usize, next))
    }
}

async fn insert_rows(c: &Conn, rows: &[(String, Row)]) -> Result<Vec<Insert>, Fail> {
    let tokens: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    let scopes: Vec<&str> = rows.iter().map(|(_, r)| r.scope.as_str()).collect();
    let fingerprints: Vec<&[u8]> = rows.iter().map(|(_, r)| r.fingerprint.as_slice()).collect();
    let key_ids: Vec<&str> = rows.iter().map(|(_, r)| r.key_id.as_str()).collect();
    let nonces: Vec<&[u8]> = rows.iter().map(|(_, r)| r.nonce.as_slice()).collect();
    let ciphertexts: Vec<&[u8]> = rows.iter().map(|(_, r)| r.ciphertext.as_slice()).collect();
    let inserted = c
        .client
        .query(
            &c.insert,
            &[
                &tokens,
                &scopes,
                &fingerprints,
                &key_ids,
                &nonces,
                &ciphertexts,
            ],
        )
        .await?;
    let inserted: HashSet<String> = inserted
        .iter()
        .map(|r| col::<String>(r, 0))
        .collect::<Result<_, _>>()?;
    let others: Vec<&str> = tokens
        .iter()
        .copied()
        .filter(|t| !inserted.contains(*t))
        .collect();
    let mut held: HashMap<String, (String, Vec<u8>)> = HashMap::new();
    if !others.is_empty() {
        for r in c.client.query(&c.held, &[&others]).await? {
            held.insert(col(&r, 0)?, (col(&r, 1)?, col(&r, 2)?));
        }
    }
    tokens
        .iter()
        .map(|t| {
            if inserted.contains(*t) {
                return Ok(Insert::Inserted);
            }
            match held.remove(*t) {
                Some((scope, fingerprint)) => Ok(Insert::Held { scope, fingerprint }),
                None => Err(Fail::Data(format!(
                    "token {t:?} was neither inserted nor found (row deleted meanwhile?)"
                ))),
            }
        })
        .collect()
}

async fn update_keys(
    c: &Conn,
    current: &str,
    stale: &[(String, Row)],
    resealed: &[Row],
) -> Result<u64, Fail> {
    let tokens: Vec<&str> = stale.iter().map(|(t, _)| t.as_str()).collect();
    let old: Vec<&str> = stale.iter().map(|(_, r)| r.key_id.as_str()).collect();
    let nonces: Vec<&[u8]> = resealed.iter().map(|r| r.nonce.as_slice()).collect();
    let ciphertexts: Vec<&[u8]> = resealed.iter().map(|r| r.ciphertext.as_slice()).collect();
    Ok(c.client
        .execute(
            &c.update_key,
            &[&current, &tokens, &old, &nonces, &ciphertexts],
        )
        .await?)
}

fn row_of(r: &tokio_postgres::Row) -> Result<(String, Row), Fail> {
    Ok((
        col(r, 0)?,
        Row {
            scope: col(r, 1)?,
            fingerprint: col(r, 2)?,
            key_id: col(r, 3)?,
            nonce: col(r, 4)?,
            ciphertext: col(r, 5)?,
        },
    ))
}

/// A column of a row, a type mismatch being the table's fault, not the connection's.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    r: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, Fail> {
    r.try_get(i)
        .map_err(|e| Fail::Data(format!("interceptor_tokens column {i}: {e}")))
}

/// `postgres vault host:port/db`, for logs and status (never the password).
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("postgres vault {host}:{port}/{db}")
}

/// The error with its causes ("error connecting to server: Connection refused"), or the
/// server's own message for database errors.
fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}
