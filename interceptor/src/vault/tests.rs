use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use redb::ReadableTable;

use super::*;

fn nt(token: &str, scope: &str, value: &[u8]) -> NewToken {
    NewToken {
        token: token.into(),
        scope: scope.into(),
        value: value.to_vec(),
    }
}

fn strings(tokens: &[&str]) -> Vec<String> {
    tokens.iter().map(|t| t.to_string()).collect()
}

/// Writes a keyring with keys `k1`..`kN` (key `kI` is 32 bytes of I) and the given current.
fn write_keyring(path: &Path, key_ids: &[u8], current: u8) {
    let mut text = format!(
        "mac_key = \"{}\"\ncurrent = \"k{current}\"\n[keys]\n",
        STANDARD.encode([42u8; 32])
    );
    for i in key_ids {
        text += &format!("k{i} = \"{}\"\n", STANDARD.encode([*i; 32]));
    }
    let _ = fs::remove_file(path);
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        write_keyring(&s.key_file(), &[1], 1);
        s
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("keyring.toml")
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("state/vault.redb")
    }

    fn config(&self, cache_entries: usize) -> VaultConfig {
        VaultConfig {
            backend: Backend::Embedded {
                path: self.db_path(),
            },
            key_file: self.key_file(),
            cache_entries,
            timeout: Duration::from_secs(5),
        }
    }

    async fn open(&self, cache_entries: usize) -> Vault {
        Vault::open(&self.config(cache_entries)).await.unwrap()
    }
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::test]
async fn futures_are_send_and_the_vault_is_cheap_to_clone() {
    let s = Setup::new();
    let vault = s.open(10).await;
    let clone = vault.clone();
    let tokens = [nt("t", "s", b"v")];
    let names = strings(&["t"]);
    let store = clone.store(&tokens);
    assert_send(&store);
    store.await.unwrap();
    let lookup = vault.lookup(&names);
    assert_send(&lookup);
    assert_eq!(lookup.await.unwrap()["t"].value, b"v");
    let rekey = vault.rekey();
    assert_send(&rekey);
    rekey.await.unwrap();
    // Usable from spawned tasks.
    let v = vault.clone();
    tokio::spawn(async move { v.lookup(&strings(&["t"])).await.unwrap() })
        .await
        .unwrap();
}

#[tokio::test]
async fn embedded_store_then_lookup_round_trips() {
    let s = Setup::new();
    let vault = s.open(100).await;
    assert_eq!(vault.mac_key().0, [42u8; 32]);
    let conflicts = vault
        .store(&[
            nt("tok-1", "pii/$.ssn", b"123-45-6789"),
            nt("tok-2", "pii/email", b"a@example.com"),
            nt("tok-3", "pii/$.blob", &[0u8, 255, 10, 0]),
        ])
        .await
        .unwrap();
    assert!(conflicts.is_empty());
    let found = vault
        .lookup(&strings(&["tok-1", "tok-3", "absent", "tok-1"]))
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["tok-1"].value, b"123-45-6789");
    assert_eq!(found["tok-1"].scope, "pii/$.ssn");
    assert_eq!(found["tok-3"].value, [0u8, 255, 10, 0]);
    assert!(!format!("{:?}", found["tok-1"]).contains("123-45"));

    let st = vault.status();
    assert!(st.healthy);
    assert_eq!(st.stored, 3);
    assert_eq!(st.revealed, 2);
    assert_eq!(st.looked_up, 4);
    assert!(st.cache_hits >= 2, "{st:?}");
    assert_eq!(st.cache_entries, 3);
    assert_eq!(st.current_key, "k1");
    assert!(st.backend.contains("vault.redb"), "{st:?}");

    // The file and its new directory are private.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.db_path()), 0o600);
    assert_eq!(mode(s.db_path().parent().unwrap()), 0o700);
    // No value in clear on disk.
    drop(vault);
    let bytes = fs::read(s.db_path()).unwrap();
    for v in [&b"123-45-6789"[..], b"a@example.com"] {
        assert!(!bytes.windows(v.len()).any(|w| w == v));
    }
}

#[tokio::test]
async fn conflicts_are_reported_and_same_values_are_idempotent() {
    let s = Setup::new();
    // Without a cache every answer comes from the database; with one, from memory: same
    // answers.
    for cache in [0, 100] {
        let _ = fs::remove_file(s.db_path());
        let vault = s.open(cache).await;
        assert!(vault
            .store(&[nt("t1", "r/a", b"v1")])
            .await
            .unwrap()
            .is_empty());
        // Same token, same value: already held, fine.
        assert!(vault
            .store(&[nt("t1", "r/a", b"v1")])
            .await
            .unwrap()
            .is_empty());
        // Same token for another value, or the same value under another scope: conflicts.
        let got = vault
            .store(&[
                nt("t2", "r/a", b"v2"),
                nt("t1", "r/a", b"other"),
                nt("t1", "r/b", b"v1"),
            ])
            .await
            .unwrap();
        assert_eq!(got, [1, 2], "cache {cache}");
        // Within one batch: the first occurrence wins, repeats follow it.
        let got = vault
            .store(&[
                nt("t3", "r/a", b"x"),
                nt("t3", "r/a", b"x"),
                nt("t3", "r/a", b"y"),
                nt("t1", "r/a", b"zzz"),
                nt("t1", "r/a", b"zzz"),
            ])
            .await
            .unwrap();
        assert_eq!(got, [2, 3, 4], "cache {cache}");
        // The value stays the first one.
        let found = vault.lookup(&strings(&["t1", "t3"])).await.unwrap();
        assert_eq!(found["t1"].value, b"v1");
        assert_eq!(found["t3"].value, b"x");
        let st = vault.status();
        assert_eq!(st.stored, 3, "cache {cache}: {st:?}");
        assert_eq!(st.conflicts, 5, "cache {cache}: {st:?}");
        assert_eq!(st.already_held, 2, "cache {cache}: {st:?}");
        drop(vault);
    }
}

#[tokio::test]
async fn stored_tokens_survive_a_reopen() {
    let s = Setup::new();
    let vault = s.open(100).await;
    let batch: Vec<NewToken> = (0..50)
        .map(|i| nt(&format!("tok-{i}"), "r/f", format!("value {i}").as_bytes()))
        .collect();
    assert!(vault.store(&batch).await.unwrap().is_empty());
    drop(vault);

    let vault = s.open(100).await;
    let names: Vec<String> = (0..50).map(|i| format!("tok-{i}")).collect();
    let found = vault.lookup(&names).await.unwrap();
    assert_eq!(found.len(), 50);
    assert_eq!(found["tok-7"].value, b"value 7");
    // Conflicts are known from disk, with a cold cache.
    assert_eq!(
        vault.store(&[nt("tok-3", "r/f", b"else")]).await.unwrap(),
        [0]
    );
    assert!(vault
        .store(&[nt("tok-3", "r/f", b"value 3")])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_second_vault_on_the_same_file_is_refused_naming_it() {
    let s = Setup::new();
    let _first = s.open(0).await;
    let err = Vault::open(&s.config(0)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, VaultError::Open { .. }), "{text}");
    assert!(
        text.contains("vault.redb") && text.contains("already open"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_keyrings_and_configs_fail_open() {
    let s = Setup::new();
    fs::set_permissions(s.key_file(), fs::Permissions::from_mode(0o644)).unwrap();
    let err = Vault::open(&s.config(0)).await.unwrap_err().to_string();
    assert!(
        err.contains("keyring.toml") && err.contains("0644"),
        "{err}"
    );
    fs::set_permissions(s.key_file(), fs::Permissions::from_mode(0o600)).unwrap();

    let mut config = s.config(0);
    config.timeout = Duration::ZERO;
    assert!(matches!(
        Vault::open(&config).await.unwrap_err(),
        VaultError::Config(_)
    ));
    config.timeout = Duration::from_secs(1);
    config.backend = Backend::Postgres {
        url: "postgres://u@127.0.0.1:1/db?sslmode=bogus".into(),
        password_file: None,
    };
    assert!(matches!(
        Vault::open(&config).await.unwrap_err(),
        VaultError::Config(_)
    ));
}

#[tokio::test]
async fn oversized_or_invalid_input_is_refused_before_anything_is_stored() {
    let s = Setup::new();
    let vault = s.open(10).await;
    let big = vec![b'x'; MAX_VALUE_BYTES + 1];
    let err = vault
        .store(&[nt("ok", "r/f", b"fine"), nt("big", "r/f", &big)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::TooLarge { what: "value", .. }),
        "{err}"
    );
    assert!(!err.is_retriable());
    assert!(vault.lookup(&strings(&["ok"])).await.unwrap().is_empty());
    // The largest allowed value works, and is read back from the database (too big to cache).
    let max = vec![b'y'; MAX_VALUE_BYTES];
    assert!(vault
        .store(&[nt("max", "r/f", &max)])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        vault.lookup(&strings(&["max"])).await.unwrap()["max"].value,
        max
    );
    for bad in [
        nt("", "r/f", b"v"),
        nt("a\0b", "r/f", b"v"),
        nt("t", "r\0f", b"v"),
        nt(&"t".repeat(MAX_TOKEN_BYTES + 1), "r/f", b"v"),
        nt("t", &"s".repeat(MAX_SCOPE_BYTES + 1), b"v"),
    ] {
        assert!(vault.store(&[bad]).await.is_err());
    }
    // Lookups of tokens that cannot exist are simply not found.
    assert!(vault
        .lookup(&strings(&["", &"t".repeat(MAX_TOKEN_BYTES + 1)]))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_cache_is_bounded_and_answers_repeats() {
    let s = Setup::new();
    let vault = s.open(2).await;
    let batch: Vec<NewToken> = (0..5).map(|i| nt(&format!("t{i}"), "r/f", &[i])).collect();
    assert!(vault.store(&batch).await.unwrap().is_empty());
    let st = vault.status();
    assert_eq!((st.cache_entries, st.cache_capacity), (2, 2));
    // The two most recent are answered from memory, the rest from the database.
    let before = vault.status().cache_hits;
    let found = vault.lookup(&strings(&["t3", "t4"])).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(vault.status().cache_hits - before, 2);
    let found = vault.lookup(&strings(&["t0"])).await.unwrap();
    assert_eq!(found["t0"].value, [0]);
    assert_eq!(vault.status().cache_hits - before, 2);
    // Store of a repeat skips the database.
    assert!(vault
        .store(&[nt("t0", "r/f", &[0])])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(vault.status().cache_hits - before, 3);
}

#[tokio::test]
async fn old_rows_decrypt_with_their_key_and_rekey_moves_them_to_the_current_one() {
    let s = Setup::new();
    // 1200 rows: more than two rekey batches.
    let batch: Vec<NewToken> = (0..1200)
        .map(|i| nt(&format!("tok-{i:05}"), "r/f", format!("v{i}").as_bytes()))
        .collect();
    let vault = s.open(0).await;
    assert!(vault.store(&batch).await.unwrap().is_empty());
    drop(vault);

    // Rotation: k2 becomes current, k1 stays to read the old rows.
    write_keyring(&s.key_file(), &[1, 2], 2);
    let vault = s.open(0).await;
    assert!(vault
        .store(&[nt("new", "r/f", b"under k2")])
        .await
        .unwrap()
        .is_empty());
    let found = vault
        .lookup(&strings(&["tok-00000", "tok-01199", "new"]))
        .await
        .unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(found["tok-01199"].value, b"v1199");
    let started = Instant::now();
    assert_eq!(vault.rekey().await.unwrap(), 1200);
    eprintln!("embedded rekey of 1200 rows: {:?}", started.elapsed());
    assert_eq!(vault.rekey().await.unwrap(), 0);
    drop(vault);

    // k1 gone: every row still reads.
    write_keyring(&s.key_file(), &[2], 2);
    let vault = s.open(0).await;
    let names: Vec<String> = batch.iter().map(|t| t.token.clone()).collect();
    let found = vault.lookup(&names).await.unwrap();
    assert_eq!(found.len(), 1200);
    assert_eq!(found["tok-00042"].value, b"v42");
    assert_eq!(vault.status().errors, 0);
}

#[tokio::test]
async fn rows_under_a_missing_key_are_not_revealed_and_stop_a_rekey() {
    let s = Setup::new();
    let vault = s.open(0).await;
    vault
        .store(&[nt("a", "r/f", b"va"), nt("b", "r/f", b"vb")])
        .await
        .unwrap();
    drop(vault);
    // Rotated and k1 dropped too early.
    write_keyring(&s.key_file(), &[2], 2);
    let vault = s.open(0).await;
    assert!(vault
        .lookup(&strings(&["a", "b"]))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(vault.status().errors, 2);
    let err = vault.rekey().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, VaultError::Crypto { .. }), "{text}");
    assert!(text.contains("\"a\"") && text.contains("k1"), "{text}");
    // The token still belongs to its value: no second value can take it.
    assert_eq!(vault.store(&[nt("a", "r/f", b"other")]).await.unwrap(), [0]);
}

#[tokio::test]
async fn rows_swapped_or_altered_on_disk_are_not_revealed() {
    let s = Setup::new();
    let vault = s.open(0).await;
    vault
        .store(&[
            nt("a", "r/f", b"value a"),
            nt("b", "r/f", b"value b"),
            nt("c", "r/f", b"value c"),
        ])
        .await
        .unwrap();
    drop(vault);

    // Someone with write access to the file swaps a's and b's rows and flips a bit of c's.
    {
        let db = redb::Database::create(s.db_path()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(embedded::TOKENS).unwrap();
            let a = table.get("a").unwrap().unwrap().value().to_vec();
            let b = table.get("b").unwrap().unwrap().value().to_vec();
            let mut c = table.get("c").unwrap().unwrap().value().to_vec();
            *c.last_mut().unwrap() ^= 1;
            table.insert("a", b.as_slice()).unwrap();
            table.insert("b", a.as_slice()).unwrap();
            table.insert("c", c.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let vault = s.open(0).await;
    let found = vault.lookup(&strings(&["a", "b", "c"])).await.unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(vault.status().errors, 3);
}

#[tokio::test]
async fn concurrent_stores_from_many_tasks_agree() {
    let s = Setup::new();
    let vault = s.open(1000).await;
    let mut tasks = Vec::new();
    for task in 0..8u8 {
        let v = vault.clone();
        tasks.push(tokio::spawn(async move {
            // Every task stores the same 20 tokens, half of them with its own value.
            let batch: Vec<NewToken> = (0..20u8)
                .map(|i| {
                    let value = if i % 2 == 0 { vec![i] } else { vec![i, task] };
                    nt(&format!("t{i}"), "r/f", &value)
                })
                .collect();
            v.store(&batch).await.unwrap()
        }));
    }
    let mut winners_per_token = [0usize; 20];
    for t in tasks {
        let conflicts = t.await.unwrap();
        for (i, winners) in winners_per_token.iter_mut().enumerate() {
            if !conflicts.contains(&i) {
                *winners += 1;
            }
        }
    }
    for (i, winners) in winners_per_token.iter().enumerate() {
        // Even tokens: one value for all, every task is fine. Odd: exactly one task won.
        assert_eq!(*winners, if i % 2 == 0 { 8 } else { 1 }, "token t{i}");
    }
}

/// A TCP server that accepts and never answers: the vault must give up within its timeout.
#[tokio::test]
async fn a_postgres_server_that_never_answers_is_unavailable_within_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let s = Setup::new();
    let config = VaultConfig {
        backend: Backend::Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            password_file: None,
        },
        key_file: s.key_file(),
        cache_entries: 10,
        timeout: Duration::from_millis(300),
    };
    let started = Instant::now();
    let vault = Vault::open(&config).await.unwrap();
    assert!(!vault.status().healthy);
    let err = vault.store(&[nt("t", "r/f", b"v")]).await.unwrap_err();
    assert!(matches!(err, VaultError::Unavailable { .. }), "{err}");
    assert!(err.is_retriable());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let err = vault.lookup(&strings(&["t"])).await.unwrap_err();
    assert!(matches!(err, VaultError::Unavailable { .. }), "{err}");
    // Open, store and lookup: three bounded waits.
    assert!(
        started.elapsed() < Duration::from_millis(300 * 3 + 700),
        "{:?}",
        started.elapsed()
    );
    assert!(vault.status().errors >= 2);
    hold.abort();
}

/// Store latency, one token per call, embedded. The PostgreSQL twin is in `postgres_tests`.
#[tokio::test]
async fn embedded_store_latency() {
    let s = Setup::new();
    let vault = s.open(0).await;
    let (single, batch) = measure(&vault, "emb").await;
    eprintln!("embedded: store 1 token {single:?}/call, 100 tokens {batch:?}/call");
}

/// Mean time of 50 one-token stores and of 10 hundred-token stores.
async fn measure(vault: &Vault, prefix: &str) -> (Duration, Duration) {
    let started = Instant::now();
    for i in 0..50 {
        vault
            .store(&[nt(
                &format!("{prefix}-single-{i}"),
                "r/f",
                b"0123456789abcdef",
            )])
            .await
            .unwrap();
    }
    let single = started.elapsed() / 50;
    let started = Instant::now();
    for b in 0..10 {
        let batch: Vec<NewToken> = (0..100)
            .map(|i| {
                nt(
                    &format!("{prefix}-batch-{b}-{i}"),
                    "r/f",
                    b"0123456789abcdef",
                )
            })
            .collect();
        vault.store(&batch).await.unwrap();
    }
    let batch = started.elapsed() / 10;
    // Concurrent callers: 8 tasks × 10 one-token stores.
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let v = vault.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                for i in 0..10 {
                    v.store(&[nt(
                        &format!("{prefix}-conc-{t}-{i}"),
                        "r/f",
                        b"0123456789abcdef",
                    )])
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "{prefix}: 80 one-token stores from 8 concurrent tasks in {:?}",
        started.elapsed()
    );
    (single, batch)
}

mod postgres_tests {
    use super::*;
    use interceptor_e2e::postgres::{require_postgres, PostgresServer};

    fn pg_config(s: &Setup, url: String, password_file: Option<PathBuf>) -> VaultConfig {
        VaultConfig {
            backend: Backend::Postgres { url, password_file },
            key_file: s.key_file(),
            cache_entries: 100,
            timeout: Duration::from_secs(2),
        }
    }

    fn server() -> Option<PostgresServer> {
        if !require_postgres() {
            return None;
        }
        Some(PostgresServer::start().unwrap())
    }

    /// Runs the test body; prints the server log when it fails.
    async fn with_log<F: std::future::Future<Output = ()>>(server: &PostgresServer, f: F) {
        struct LogOnPanic<'a>(&'a PostgresServer);
        impl Drop for LogOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    eprintln!("--- PostgreSQL log ---\n{}", self.0.log());
                }
            }
        }
        let _guard = LogOnPanic(server);
        f.await;
    }

    async fn raw_client(server: &PostgresServer) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    #[tokio::test]
    async fn two_vaults_on_one_database_resolve_each_others_tokens() {
        let Some(server) = server() else { return };
        with_log(&server, async {
            let s = Setup::new();
            // One node with the password in the URL, the other from a password file.
            let pw = s.dir.path().join("pg.password");
            fs::write(&pw, format!("{}\n", server.password())).unwrap();
            fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
            let a = Vault::open(&pg_config(&s, server.url(), None))
                .await
                .unwrap();
            let b = Vault::open(&pg_config(
                &s,
                server.url_without_password(),
                Some(pw.clone()),
            ))
            .await
            .unwrap();
            assert!(a.status().healthy && b.status().healthy);
            assert!(a.status().backend.contains(&server.port().to_string()));

            assert!(a
                .store(&[
                    nt("a1", "r/$.ssn", b"111-22-3333"),
                    nt("a2", "r/email", b"x@y.z")
                ])
                .await
                .unwrap()
                .is_empty());
            assert!(b
                .store(&[nt("b1", "r/$.ssn", b"999-88-7777")])
                .await
                .unwrap()
                .is_empty());
            let found = b.lookup(&strings(&["a1", "a2", "b1", "zz"])).await.unwrap();
            assert_eq!(found.len(), 3);
            assert_eq!(found["a1"].value, b"111-22-3333");
            assert_eq!(found["a2"].scope, "r/email");
            let found = a.lookup(&strings(&["b1"])).await.unwrap();
            assert_eq!(found["b1"].value, b"999-88-7777");

            // b knows a1 only from the database: a conflict and an idempotent repeat.
            let got = b
                .store(&[
                    nt("a1", "r/$.ssn", b"000-00-0000"),
                    nt("a1", "r/$.ssn", b"111-22-3333"),
                    nt("b2", "r/$.ssn", b"new"),
                ])
                .await
                .unwrap();
            assert_eq!(got, [0]);
            let st = b.status();
            assert_eq!(
                (st.conflicts, st.already_held, st.stored),
                (1, 1, 2),
                "{st:?}"
            );

            // At rest: no value in clear, in any column.
            let client = raw_client(&server).await;
            let rows = client
                .query(
                    "SELECT token, scope, fingerprint, key_id, nonce, ciphertext, created_at \
                     FROM interceptor_tokens ORDER BY token",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(rows.len(), 4);
            for row in &rows {
                let fp: Vec<u8> = row.get(2);
                let nonce: Vec<u8> = row.get(4);
                let ct: Vec<u8> = row.get(5);
                assert_eq!(fp.len(), 32);
                assert_eq!(nonce.len(), 24);
                assert_eq!(row.get::<_, String>(3), "k1");
                for v in [&b"111-22-3333"[..], b"999-88-7777", b"x@y.z"] {
                    assert!(!ct.windows(v.len()).any(|w| w == v));
                    assert!(!fp.windows(v.len()).any(|w| w == v));
                }
            }

            // A bad password file is refused at open.
            fs::set_permissions(&pw, fs::Permissions::from_mode(0o640)).unwrap();
            let err = Vault::open(&pg_config(
                &s,
                server.url_without_password(),
                Some(pw.clone()),
            ))
            .await
            .unwrap_err()
            .to_string();
            assert!(err.contains("pg.password") && err.contains("0640"), "{err}");
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_nodes_agree_on_who_holds_a_token() {
        let Some(server) = server() else { return };
        with_log(&server, async {
            let s = Setup::new();
            let mut nodes = Vec::new();
            for _ in 0..4 {
                nodes.push(
                    Vault::open(&pg_config(&s, server.url(), None))
                        .await
                        .unwrap(),
                );
            }
            let mut tasks = Vec::new();
            for (n, v) in nodes.iter().enumerate() {
                let v = v.clone();
                tasks.push(tokio::spawn(async move {
                    let batch: Vec<NewToken> = (0..30u8)
                        .map(|i| {
                            let value = if i % 3 == 0 {
                                vec![i, n as u8]
                            } else {
                                vec![i]
                            };
                            nt(&format!("t{i}"), "r/f", &value)
                        })
                        .collect();
                    v.store(&batch).await.unwrap()
                }));
            }
            let mut winners = [0usize; 30];
            for t in tasks {
                let conflicts = t.await.unwrap();
                for (i, w) in winners.iter_mut().enumerate() {
                    if !conflicts.contains(&i) {
                        *w += 1;
                    }
                }
            }
            for (i, w) in winners.iter().enumerate() {
                assert_eq!(*w, if i % 3 == 0 { 1 } else { 4 }, "token t{i}");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_stopped_server_is_unavailable_within_the_timeout_and_a_restarted_one_works() {
        let Some(server) = server() else { return };
        with_log(&server, async {
            let s = Setup::new();
            let mut config = pg_config(&s, server.url(), None);
            config.cache_entries = 0;
            config.timeout = Duration::from_secs(1);
            let vault = Vault::open(&config).await.unwrap();
            vault.store(&[nt("before", "r/f", b"v0")]).await.unwrap();

            server.stop().unwrap();
            for _ in 0..3 {
                let started = Instant::now();
                let err = vault
                    .store(&[nt("during", "r/f", b"v1")])
                    .await
                    .unwrap_err();
                assert!(matches!(err, VaultError::Unavailable { .. }), "{err}");
                assert!(
                    started.elapsed() < Duration::from_millis(1500),
                    "{:?}",
                    started.elapsed()
                );
                let err = vault.lookup(&strings(&["before"])).await.unwrap_err();
                assert!(matches!(err, VaultError::Unavailable { .. }), "{err}");
            }
            assert!(!vault.status().healthy);
            // A vault opened while the database is down opens, unhealthy.
            let late = Vault::open(&config).await.unwrap();
            assert!(!late.status().healthy);

            server.restart().unwrap();
            assert!(vault
                .store(&[nt("after", "r/f", b"v2")])
                .await
                .unwrap()
                .is_empty());
            assert!(vault.status().healthy);
            let found = late
                .lookup(&strings(&["before", "after", "during"]))
                .await
                .unwrap();
            assert_eq!(found.len(), 2);
            assert_eq!(found["before"].value, b"v0");
            assert!(late.status().healthy);
        })
        .await;
    }

    #[tokio::test]
    async fn rekey_on_postgres_moves_every_row_to_the_current_key() {
        let Some(server) = server() else { return };
        with_log(&server, async {
            let s = Setup::new();
            let batch: Vec<NewToken> = (0..1100)
                .map(|i| nt(&format!("tok-{i:05}"), "r/f", format!("v{i}").as_bytes()))
                .collect();
            let vault = Vault::open(&pg_config(&s, server.url(), None)).await.unwrap();
            assert!(vault.store(&batch).await.unwrap().is_empty());
            drop(vault);

            write_keyring(&s.key_file(), &[1, 2], 2);
            let vault = Vault::open(&pg_config(&s, server.url(), None)).await.unwrap();
            let started = Instant::now();
            assert_eq!(vault.rekey().await.unwrap(), 1100);
            eprintln!("postgres rekey of 1100 rows: {:?}", started.elapsed());
            assert_eq!(vault.rekey().await.unwrap(), 0);
            let client = raw_client(&server).await;
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE key_id = 'k2'), count(*) FROM interceptor_tokens",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1100, 1100));

            write_keyring(&s.key_file(), &[2], 2);
            let vault = Vault::open(&pg_config(&s, server.url(), None)).await.unwrap();
            let names: Vec<String> = batch.iter().map(|t| t.token.clone()).collect();
            let found = vault.lookup(&names).await.unwrap();
            assert_eq!(found.len(), 1100);
            assert_eq!(found["tok-00999"].value, b"v999");

            // A row moved to another token in the database does not open there.
            client
                .execute(
                    "UPDATE interceptor_tokens SET token = 'moved' WHERE token = 'tok-00001'",
                    &[],
                )
                .await
                .unwrap();
            assert!(vault.lookup(&strings(&["moved"])).await.unwrap().is_empty());
            assert_eq!(vault.status().errors, 1);
        })
        .await;
    }

    #[tokio::test]
    async fn postgres_store_latency() {
        let Some(server) = server() else { return };
        with_log(&server, async {
            let s = Setup::new();
            let mut config = pg_config(&s, server.url(), None);
            config.cache_entries = 0;
            let vault = Vault::open(&config).await.unwrap();
            let (single, batch) = measure(&vault, "pg").await;
            eprintln!("postgres: store 1 token {single:?}/call, 100 tokens {batch:?}/call");
        })
        .await;
    }
}
