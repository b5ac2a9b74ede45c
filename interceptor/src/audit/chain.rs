//! The hash chain that makes the audit trail tamper-evident, and the names of its files.
//!
//! Every line is one JSON object whose first two members are `"seq"` (1, 2, 3, ... across
//! files and restarts) and `"prev_hash"` (the `hash` of the line before; 64 zeros for the
//! first event ever), and whose last member is `"hash"`:
//!
//! ```text
//! {"seq":42,"prev_hash":"<64 hex>", ...the event... ,"hash":"<64 hex>"}
//! ```
//!
//! `hash` is SHA-256 (HMAC-SHA-256 when a chain key is configured) of the line's bytes up to,
//! not including, the `,"hash":` suffix. Hashing the bytes as written, not a re-serialisation,
//! means a verifier needs no canonical JSON: any edited byte changes the hash, a removed or
//! reordered line breaks `seq` and `prev_hash`.
//!
//! Files live in one directory, named `audit-<first seq, 20 digits>.jsonl`; the chain runs on
//! from the last line of one file to the first line of the next.

use std::path::Path;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// `prev_hash` of the first event ever written.
pub const GENESIS: [u8; 32] = [0; 32];

/// What follows the hashed part of a line: `,"hash":"` + 64 hex digits + `"}`.
const SUFFIX_LEN: usize = 9 + 64 + 2;

/// The file name prefix and extension of audit files.
const FILE_PREFIX: &str = "audit-";
const FILE_EXT: &str = ".jsonl";

/// How lines are hashed: plain SHA-256, or keyed so that only the key holder can re-chain.
#[derive(Clone)]
pub struct ChainHasher {
    key: Option<Vec<u8>>,
}

impl std::fmt::Debug for ChainHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainHasher")
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

impl ChainHasher {
    pub fn plain() -> Self {
        Self { key: None }
    }

    pub fn keyed(key: Vec<u8>) -> Self {
        Self { key: Some(key) }
    }

    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    /// The hash of a line's hashed part.
    pub fn digest(&self, hashed: &[u8]) -> [u8; 32] {
        match &self.key {
            None => Sha256::digest(hashed).into(),
            Some(key) => {
                // HMAC accepts keys of any length.
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                mac.update(hashed);
                mac.finalize().into_bytes().into()
            }
        }
    }

    /// Completes a line: `open` is the serialised event whose closing `}` has been removed
    /// (it starts with `{"seq":N,"prev_hash":"…"`). Appends the hash member, `}` and a
    /// newline, and returns the hash.
    pub fn seal(&self, open: &mut Vec<u8>) -> [u8; 32] {
        self.seal_from(open, 0)
    }

    /// [`seal`](Self::seal) for a line that starts at `start` in a buffer of several.
    pub fn seal_from(&self, open: &mut Vec<u8>, start: usize) -> [u8; 32] {
        let hash = self.digest(open.get(start..).unwrap_or_default());
        open.extend_from_slice(b",\"hash\":\"");
        push_hex(open, &hash);
        open.extend_from_slice(b"\"}\n");
        hash
    }
}

/// A line taken apart: the bytes its hash covers, and the members the chain checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link<'a> {
    pub hashed: &'a [u8],
    pub seq: u64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("the line does not end with a \"hash\" member of 64 hex digits")]
    NoHash,
    #[error("the line is not a JSON object with \"seq\" and \"prev_hash\": {0}")]
    Json(String),
    #[error("\"prev_hash\" is not 64 hex digits")]
    BadPrevHash,
    #[error("the line's hash does not match its content (the line was edited)")]
    HashMismatch,
}

/// Takes a line (without its newline) apart and checks its own hash.
pub fn parse_link<'a>(hasher: &ChainHasher, line: &'a [u8]) -> Result<Link<'a>, LinkError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < SUFFIX_LEN + 2 {
        return Err(LinkError::NoHash);
    }
    let (hashed, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    let hex = suffix
        .strip_prefix(b",\"hash\":\"")
        .and_then(|s| s.strip_suffix(b"\"}"))
        .ok_or(LinkError::NoHash)?;
    let hash = parse_hex(hex).ok_or(LinkError::NoHash)?;

    #[derive(Deserialize)]
    struct Head<'s> {
        seq: u64,
        #[serde(borrow)]
        prev_hash: &'s str,
    }
    let head: Head = serde_json::from_slice(line).map_err(|e| LinkError::Json(e.to_string()))?;
    let prev_hash = parse_hex(head.prev_hash.as_bytes()).ok_or(LinkError::BadPrevHash)?;
    if hasher.digest(hashed) != hash {
        return Err(LinkError::HashMismatch);
    }
    Ok(Link {
        hashed,
        seq: head.seq,
        prev_hash,
        hash,
    })
}

/// Lower-case hex of a hash.
pub fn hex(hash: &[u8; 32]) -> String {
    let mut out = Vec::with_capacity(64);
    push_hex(&mut out, hash);
    String::from_utf8(out).unwrap_or_default()
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// 64 hex digits (either case) to 32 bytes.
pub fn parse_hex(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// The name of the file whose first event is `first_seq`.
pub fn file_name(first_seq: u64) -> String {
    format!("{FILE_PREFIX}{first_seq:020}{FILE_EXT}")
}

/// The first seq a file name says its file starts with; `None` for other files.
pub fn file_first_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_EXT)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The audit files in `dir`, oldest first (by the seq in their names).
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(u64, std::path::PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(file_first_seq) {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(hasher: &ChainHasher, seq: u64, prev: &[u8; 32], body: &str) -> (Vec<u8>, [u8; 32]) {
        let mut open =
            format!("{{\"seq\":{seq},\"prev_hash\":\"{}\",{body}", hex(prev)).into_bytes();
        let hash = hasher.seal(&mut open);
        (open, hash)
    }

    #[test]
    fn a_sealed_line_parses_back_and_is_valid_json() {
        for hasher in [ChainHasher::plain(), ChainHasher::keyed(b"k".to_vec())] {
            let (bytes, hash) = line(&hasher, 7, &GENESIS, "\"event\":\"x\"");
            assert_eq!(bytes.last(), Some(&b'\n'));
            let text = &bytes[..bytes.len() - 1];
            let value: serde_json::Value = serde_json::from_slice(text).unwrap();
            assert_eq!(value["hash"], hex(&hash));
            let link = parse_link(&hasher, text).unwrap();
            assert_eq!((link.seq, link.prev_hash, link.hash), (7, GENESIS, hash));
        }
    }

    #[test]
    fn an_edited_byte_is_found() {
        let hasher = ChainHasher::plain();
        let (bytes, _) = line(
            &hasher,
            1,
            &GENESIS,
            "\"event\":\"decision\",\"decision\":\"deny\"",
        );
        let text = String::from_utf8(bytes[..bytes.len() - 1].to_vec()).unwrap();
        let edited = text.replace("deny", "allo");
        assert_eq!(
            parse_link(&hasher, edited.as_bytes()),
            Err(LinkError::HashMismatch)
        );
        // Without the key, a keyed line cannot be re-hashed to match.
        let keyed = ChainHasher::keyed(b"secret".to_vec());
        assert_eq!(
            parse_link(&keyed, text.as_bytes()),
            Err(LinkError::HashMismatch)
        );
        assert_eq!(parse_link(&hasher, b"{\"seq\":1}"), Err(LinkError::NoHash));
    }

    #[test]
    fn file_names_sort_by_seq() {
        assert_eq!(file_name(42), "audit-00000000000000000042.jsonl");
        assert_eq!(file_first_seq(&file_name(42)), Some(42));
        assert_eq!(file_first_seq("audit-42.jsonl"), None);
        assert_eq!(file_first_seq("notes.txt"), None);
        assert_eq!(parse_hex(hex(&[0xab; 32]).as_bytes()), Some([0xab; 32]));
        assert_eq!(parse_hex(b"zz"), None);
    }
}
