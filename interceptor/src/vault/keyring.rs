//! The vault keyring: the MAC key tokens and hashes derive from, and the encryption keys of the
//! stored values, by key id.
//!
//! ```toml
//! # interceptor vault keyring: keep 0600 (or 0400), owned by root or the daemon's user
//! mac_key = "<base64 32 bytes>"        # tokens and hashes derive from it: never rotate
//! current = "k2"
//! [keys]
//! k1 = "<base64 32 bytes>"
//! k2 = "<base64 32 bytes>"
//! ```
//!
//! Whoever reads this file can read every tokenized value (with a copy of the store), so it is
//! refused unless owned by root or the daemon's effective user with no group or other
//! permission bits. The checks are made on the opened file (fstat, `O_NOFOLLOW`), so it cannot
//! be swapped between check and read. Neither `Debug` nor any error shows key material.
//!
//! Rotation: add a key, point `current` at it, restart, run [`super::Vault::rekey`]; old keys
//! can be removed once no row uses them. `mac_key` never changes: every token already handed
//! out derives from it.

use std::{
    collections::BTreeMap,
    fmt,
    fs::OpenOptions,
    io::{Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use hmac::{Hmac, Mac};
use rand::{RngCore, TryRngCore};
use serde::Deserialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Row, VaultError};
use crate::{kafka::sasl::secrets::describe_toml_error, mask::MacKey};

/// Larger keyring files are refused: a few lines of base64.
const MAX_KEYRING_BYTES: u64 = 64 * 1024;
/// Key ids go into every row and every AAD: short, printable, unambiguous.
const MAX_KEY_ID_LEN: usize = 64;
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const FINGERPRINT_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The keys of one vault. Loaded once at start; cheap to share behind an `Arc`.
pub struct Keyring {
    path: Option<PathBuf>,
    mac_key: MacKey,
    /// HMAC key for row fingerprints, derived from `mac_key` so fingerprints are as stable as
    /// tokens, yet a fingerprint never equals a token or hash handed to clients.
    fingerprint_key: Zeroizing<[u8; 32]>,
    current: String,
    keys: BTreeMap<String, Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    mac_key: String,
    current: String,
    keys: BTreeMap<String, String>,
}

/// Why a stored row did not decrypt. Never carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("key id {0:?} is not in the keyring")]
    UnknownKey(String),
    #[error("nonce of {0} bytes (expected {NONCE_LEN})")]
    BadNonce(usize),
    #[error(
        "authentication failed: the row was altered, moved to another token or scope, or \
         sealed under another key"
    )]
    Tampered,
}

impl Keyring {
    /// Loads and checks the keyring file: owned by root or the effective user, no group or
    /// other permission bits, valid keys, `current` among them.
    pub fn load(path: &Path) -> Result<Keyring, VaultError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Self::load_owned_by(path, &[0, euid])
    }

    /// [`Keyring::load`] with the owners allowed given, so the owner check is testable.
    pub(crate) fn load_owned_by(path: &Path, owners: &[u32]) -> Result<Keyring, VaultError> {
        let bytes = read_private_file(path, owners, MAX_KEYRING_BYTES).map_err(|message| {
            VaultError::Keyring {
                path: path.to_owned(),
                message,
            }
        })?;
        let bad = |message: String| VaultError::Keyring {
            path: path.to_owned(),
            message,
        };
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| bad("not valid UTF-8".into()))?;
        let file: KeyringFile =
            toml::from_str(&text).map_err(|e| bad(describe_toml_error(&text, &e)))?;
        let mut keyring = Self::from_parts(&file).map_err(bad)?;
        keyring.path = Some(path.to_owned());
        Ok(keyring)
    }

    fn from_parts(file: &KeyringFile) -> Result<Keyring, String> {
        let mac_key = decode_key("mac_key", &file.mac_key)?;
        if file.keys.is_empty() {
            return Err("[keys] is empty: at least one encryption key is needed".into());
        }
        let mut keys = BTreeMap::new();
        for (id, b64) in &file.keys {
            check_key_id(id)?;
            keys.insert(id.clone(), decode_key(&format!("keys.{id}"), b64)?);
        }
        if !keys.contains_key(&file.current) {
            return Err(format!(
                "current = {:?} is not one of the keys in [keys] ({})",
                file.current,
                keys.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(Self::assemble(None, mac_key, file.current.clone(), keys))
    }

    fn assemble(
        path: Option<PathBuf>,
        mac_key: Zeroizing<[u8; 32]>,
        current: String,
        keys: BTreeMap<String, Zeroizing<[u8; 32]>>,
    ) -> Keyring {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(mac_key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"interceptor vault fingerprint v1");
        let fingerprint_key = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
        Keyring {
            path,
            mac_key: MacKey(*mac_key),
            fingerprint_key,
            current,
            keys,
        }
    }

    /// A new keyring: random MAC key, one encryption key `k1`, from the OS random source.
    pub fn generate() -> Result<Keyring, VaultError> {
        let mac_key = random_key()?;
        let mut keys = BTreeMap::new();
        keys.insert("k1".to_owned(), random_key()?);
        Ok(Self::assemble(None, mac_key, "k1".into(), keys))
    }

    /// Generates a keyring and writes it to `path` with mode 0600. Refuses to overwrite an
    /// existing file: replacing the MAC key would orphan every token already handed out.
    pub fn write_new(path: &Path) -> Result<Keyring, VaultError> {
        let mut keyring = Self::generate()?;
        let io = |what: &str, e: std::io::Error| VaultError::Keyring {
            path: path.to_owned(),
            message: format!("{what}: {e}"),
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => VaultError::Keyring {
                    path: path.to_owned(),
                    message: "already exists; refusing to overwrite it (its mac_key made the \
                              tokens already handed out)"
                        .into(),
                },
                _ => io("cannot create", e),
            })?;
        let text = Zeroizing::new(keyring.to_toml());
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("cannot write", e))?;
        // The new name must survive a crash too, or the daemon restarts without its keys.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        keyring.path = Some(path.to_owned());
        Ok(keyring)
    }

    fn to_toml(&self) -> String {
        let mut out = String::from(
            "# interceptor vault keyring: keep 0600 (or 0400), owned by root or the daemon's \
             user\n",
        );
        out += &format!(
            "mac_key = \"{}\"        # tokens and hashes derive from it: never rotate\n",
            STANDARD.encode(self.mac_key.0)
        );
        out += &format!("current = \"{}\"\n[keys]\n", self.current);
        for (id, key) in &self.keys {
            out += &format!("{id} = \"{}\"\n", STANDARD.encode(key.as_slice()));
        }
        out
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn mac_key(&self) -> &MacKey {
        &self.mac_key
    }

    /// The id new rows are sealed under.
    pub fn current(&self) -> &str {
        &self.current
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Keyed fingerprint of (scope, value): equal for equal inputs, so two nodes can tell
    /// whether a token is held for the same value without decrypting, and useless to whoever
    /// has the database but not the keyring.
    pub(crate) fn fingerprint(&self, scope: &str, value: &[u8]) -> [u8; FINGERPRINT_LEN] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.fingerprint_key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&(scope.len() as u64).to_be_bytes());
        mac.update(scope.as_bytes());
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// Encrypts `value` under the current key for this token and scope.
    pub(crate) fn seal(
        &self,
        token: &str,
        scope: &str,
        value: &[u8],
        fingerprint: [u8; FINGERPRINT_LEN],
    ) -> Result<Row, VaultError> {
        self.seal_with(&self.current, token, scope, value, fingerprint)
    }

    pub(crate) fn seal_with(
        &self,
        key_id: &str,
        token: &str,
        scope: &str,
        value: &[u8],
        fingerprint: [u8; FINGERPRINT_LEN],
    ) -> Result<Row, VaultError> {
        let key = self.keys.get(key_id).ok_or_else(|| VaultError::Crypto {
            token: token.to_owned(),
            reason: OpenError::UnknownKey(key_id.to_owned()).to_string(),
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        // Random 192-bit nonces: collisions are negligible without coordination between nodes.
        rand::rng().fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(**key));
        let aad = associated_data(key_id, token, scope);
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Crypto {
                token: token.to_owned(),
                reason: "encryption failed".into(),
            })?;
        Ok(Row {
            scope: scope.to_owned(),
            fingerprint: fingerprint.to_vec(),
            key_id: key_id.to_owned(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypts a row read back for `token`.
    pub(crate) fn open(&self, token: &str, row: &Row) -> Result<Vec<u8>, OpenError> {
        let key = self
            .keys
            .get(&row.key_id)
            .ok_or_else(|| OpenError::UnknownKey(row.key_id.clone()))?;
        let nonce: [u8; NONCE_LEN] = row
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| OpenError::BadNonce(row.nonce.len()))?;
        let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(**key));
        let aad = associated_data(&row.key_id, token, &row.scope);
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &row.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Tampered)
    }
}

/// What the AEAD binds besides the value: a row copied to another token, scope or key id
/// fails authentication instead of revealing its value under the wrong name.
fn associated_data(key_id: &str, token: &str, scope: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + key_id.len() + token.len() + scope.len());
    aad.extend_from_slice(b"interceptor vault v1\0");
    for part in [key_id, token, scope] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

fn random_key() -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng
        .try_fill_bytes(key.as_mut_slice())
        .map_err(|e| VaultError::Config(format!("the OS random source failed: {e}")))?;
    Ok(key)
}

fn decode_key(name: &str, b64: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(b64.trim())
            .map_err(|_| format!("{name} is not valid base64"))?,
    );
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "{name} decodes to {} bytes, a key is 32 bytes (generate one with `head -c 32 \
             /dev/urandom | base64`)",
            bytes.len()
        )
    })?;
    Ok(Zeroizing::new(key))
}

fn check_key_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key id {id:?}: use 1 to {MAX_KEY_ID_LEN} of [A-Za-z0-9_.-]"
        ))
    }
}

/// Reads a secret file after checking, on the opened handle, that it is a regular file owned
/// by one of `owners` with no group or other permission bits. The message names the fix.
pub fn read_private_file(
    path: &Path,
    owners: &[u32],
    max: u64,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let display = path.display();
    // O_NONBLOCK: a FIFO in its place must not hang the daemon (refused below).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                "is a symbolic link, which is refused; name the file itself".into()
            }
            _ => format!("cannot open: {e}"),
        })?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("is not a regular file".into());
    }
    let mode = meta.mode() & 0o7777;
    if !owners.contains(&meta.uid()) {
        let allowed: Vec<String> = owners.iter().map(u32::to_string).collect();
        return Err(format!(
            "is owned by uid {} (mode {mode:04o}), it must be owned by uid {}; fix: chown root \
             {display}; chmod 600 {display}",
            meta.uid(),
            allowed.join(" or ")
        ));
    }
    if mode & 0o077 != 0 {
        return Err(format!(
            "has mode {mode:04o}: group or others have access; fix: chmod 600 {display}"
        ));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("is larger than {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    fn me() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    fn key_b64(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    fn good_text() -> String {
        format!(
            "mac_key = \"{}\"\ncurrent = \"k2\"\n[keys]\nk1 = \"{}\"\nk2 = \"{}\"\n",
            key_b64(7),
            key_b64(1),
            key_b64(2)
        )
    }

    fn write(dir: &tempfile::TempDir, text: &str, mode: u32) -> PathBuf {
        let path = dir.path().join("keyring.toml");
        let _ = fs::remove_file(&path);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn load_err(path: &Path) -> String {
        let err = Keyring::load(path).unwrap_err();
        assert!(matches!(err, VaultError::Keyring { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        text
    }

    #[test]
    fn a_good_file_loads_for_0600_and_0400() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let path = write(&dir, &good_text(), mode);
            let k = Keyring::load(&path).unwrap();
            assert_eq!(k.current(), "k2");
            assert_eq!(k.key_ids().collect::<Vec<_>>(), ["k1", "k2"]);
            assert_eq!(k.mac_key().0, [7u8; 32]);
            assert_eq!(k.path(), Some(path.as_path()));
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, &good_text(), 0o600);
        let k = Keyring::load(&path).unwrap();
        let debug = format!("{k:?}");
        assert!(debug.contains("k2"), "{debug}");
        for b in [1, 2, 7] {
            assert!(!debug.contains(&key_b64(b)), "{debug}");
        }
        assert!(!debug.contains("[7, 7"), "{debug}");
        assert!(!debug.contains("[1, 1"), "{debug}");
    }

    #[test]
    fn group_or_other_access_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660, 0o606, 0o620, 0o602, 0o610] {
            let path = write(&dir, &good_text(), mode);
            let text = load_err(&path);
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
            assert!(text.contains("chmod 600"), "{text}");
        }
    }

    #[test]
    fn another_owner_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, &good_text(), 0o600);
        let err = Keyring::load_owned_by(&path, &[me().wrapping_add(1)]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("owned by uid {}", me())), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        // As root, a file really owned by someone else goes through the public entry point.
        if me() == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let text = load_err(&path);
            assert!(text.contains("owned by uid 65534"), "{text}");
        }
    }

    #[test]
    fn symlinks_directories_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = write(&dir, &good_text(), 0o600);
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(load_err(&link).contains("symbolic link"));
        assert!(load_err(dir.path()).contains("not a regular file"));
        assert!(load_err(&dir.path().join("absent.toml")).contains("cannot open"));
    }

    #[test]
    fn bad_contents_are_refused_without_showing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let secret = key_b64(9);
        let cases: Vec<(String, &str)> = vec![
            (
                good_text().replace(&key_b64(7), "not base64!!"),
                "mac_key is not valid base64",
            ),
            (
                good_text().replace(&key_b64(1), &STANDARD.encode([1u8; 16])),
                "keys.k1 decodes to 16 bytes",
            ),
            (
                good_text().replace("current = \"k2\"", "current = \"k9\""),
                "\"k9\" is not one",
            ),
            (
                format!("mac_key = \"{}\"\ncurrent = \"k1\"\n[keys]\n", key_b64(7)),
                "[keys] is empty",
            ),
            (
                format!("mac_key = \"{secret}\"\ncurrent = \"k1\"\n"),
                "missing field `keys`",
            ),
            (format!("mac_key = \"{secret}\" junk\n"), "line 1"),
            (
                format!("extra = \"{secret}\"\n{}", good_text()),
                "unknown field `extra`",
            ),
            (
                format!(
                    "mac_key = \"{secret}\"\ncurrent = \"k 1\"\n[keys]\n\"k 1\" = \"{secret}\"\n"
                ),
                "key id \"k 1\"",
            ),
        ];
        for (text, expect) in cases {
            let path = write(&dir, &text, 0o600);
            let msg = load_err(&path);
            assert!(msg.contains(expect), "{msg:?} should contain {expect:?}");
            assert!(!msg.contains(&secret), "{msg}");
            assert!(!msg.contains(&key_b64(7)), "{msg}");
        }
    }

    #[test]
    fn write_new_then_load_round_trips_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault-keys.toml");
        let written = Keyring::write_new(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Keyring::load(&path).unwrap();
        assert_eq!(loaded.mac_key().0, written.mac_key().0);
        assert_eq!(loaded.current(), "k1");
        assert_eq!(loaded.key_ids().collect::<Vec<_>>(), ["k1"]);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# interceptor vault keyring"), "{text}");
        // A row sealed by one opens with the other: same keys.
        let fp = written.fingerprint("r/f", b"v");
        assert_eq!(fp, loaded.fingerprint("r/f", b"v"));
        let row = written.seal("tok", "r/f", b"v", fp).unwrap();
        assert_eq!(loaded.open("tok", &row).unwrap(), b"v");

        let err = Keyring::write_new(&path).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn generated_keyrings_differ() {
        let a = Keyring::generate().unwrap();
        let b = Keyring::generate().unwrap();
        assert_ne!(a.mac_key().0, b.mac_key().0);
        assert_ne!(a.mac_key().0, [0u8; 32]);
    }

    fn two_key_ring(current: &str) -> Keyring {
        let mut keys = BTreeMap::new();
        keys.insert("k1".to_owned(), Zeroizing::new([1u8; 32]));
        keys.insert("k2".to_owned(), Zeroizing::new([2u8; 32]));
        Keyring::assemble(None, Zeroizing::new([7u8; 32]), current.into(), keys)
    }

    #[test]
    fn sealed_rows_open_only_for_their_token_scope_and_key() {
        let k = two_key_ring("k2");
        let fp = k.fingerprint("rule/$.ssn", b"123-45-6789");
        let row = k.seal("tok-a", "rule/$.ssn", b"123-45-6789", fp).unwrap();
        assert_eq!(row.key_id, "k2");
        assert_eq!(row.nonce.len(), NONCE_LEN);
        assert!(!row.ciphertext.windows(11).any(|w| w == b"123-45-6789"));
        assert_eq!(k.open("tok-a", &row).unwrap(), b"123-45-6789");

        // Swapped token: the row copied under another token does not open.
        assert_eq!(k.open("tok-b", &row), Err(OpenError::Tampered));
        // Another scope.
        let mut moved = row.clone();
        moved.scope = "rule/$.name".into();
        assert_eq!(k.open("tok-a", &moved), Err(OpenError::Tampered));
        // Wrong key id: another existing key, and one the keyring lacks.
        let mut relabeled = row.clone();
        relabeled.key_id = "k1".into();
        assert_eq!(k.open("tok-a", &relabeled), Err(OpenError::Tampered));
        relabeled.key_id = "k0".into();
        assert_eq!(
            k.open("tok-a", &relabeled),
            Err(OpenError::UnknownKey("k0".into()))
        );
        // Tampered ciphertext, tag, nonce.
        for at in [0, row.ciphertext.len() - 1] {
            let mut bad = row.clone();
            bad.ciphertext[at] ^= 1;
            assert_eq!(k.open("tok-a", &bad), Err(OpenError::Tampered));
        }
        let mut bad = row.clone();
        bad.nonce[3] ^= 0x80;
        assert_eq!(k.open("tok-a", &bad), Err(OpenError::Tampered));
        bad.nonce.pop();
        assert_eq!(k.open("tok-a", &bad), Err(OpenError::BadNonce(23)));

        // Old rows keep opening after the current key changes.
        let rotated = two_key_ring("k1");
        assert_eq!(rotated.open("tok-a", &row).unwrap(), b"123-45-6789");
        assert_eq!(rotated.seal("t", "s", b"v", fp).unwrap().key_id, "k1");
    }

    #[test]
    fn nonces_are_fresh_and_fingerprints_deterministic() {
        let k = two_key_ring("k1");
        let fp = k.fingerprint("s", b"v");
        let a = k.seal("t", "s", b"v", fp).unwrap();
        let b = k.seal("t", "s", b"v", fp).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(fp, k.fingerprint("s", b"v"));
        assert_ne!(fp, k.fingerprint("s", b"w"));
        assert_ne!(fp, k.fingerprint("s2", b"v"));
        // Length-prefixed scope: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(k.fingerprint("ab", b"c"), k.fingerprint("a", b"bc"));
    }
}
