//! The interceptor's own broker credentials (`upstream_auth.secrets_file`):
//!
//! ```toml
//! username = "interceptor"
//! password = "..."
//! ```
//!
//! Whoever reads this file can talk to the broker as the interceptor, past every check, so it
//! must be owned by root and readable by no one else (mode `0600` or stricter); anything else
//! is refused with the command that fixes it. The checks are made on the opened file (fstat),
//! not on the path, so the file cannot be swapped between check and read, and a symbolic link
//! as the last path component is refused (`O_NOFOLLOW`). Neither `Debug` nor any error shows
//! the password.

use std::{
    fmt,
    fs::OpenOptions,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;

/// A secrets file larger than this is refused: it holds two short strings.
pub const MAX_SECRETS_FILE_BYTES: u64 = 64 * 1024;

/// The interceptor's credentials towards the broker.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSecrets {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for UpstreamSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSecrets")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Error)]
pub enum SecretsError {
    #[error("cannot open secrets file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "secrets file {path} is a symbolic link, which is refused; point \
         upstream_auth.secrets_file at the file itself"
    )]
    Symlink { path: PathBuf },
    #[error("secrets file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "secrets file {path} is owned by uid {uid} (mode {mode:04o}), it must be owned by uid \
         {expected_uid}; fix: {fix}"
    )]
    Owner {
        path: PathBuf,
        uid: u32,
        expected_uid: u32,
        mode: u32,
        fix: String,
    },
    #[error(
        "secrets file {path} has mode {mode:04o} (owner uid {uid}): group or others have \
         access; fix: {fix}"
    )]
    Mode {
        path: PathBuf,
        uid: u32,
        mode: u32,
        fix: String,
    },
    #[error("cannot read secrets file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secrets file {path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("secrets file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("secrets file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: &'static str,
    },
}

/// Loads the secrets file, which must be owned by root (uid 0) with no group or other
/// permission bits.
pub fn load(path: &Path) -> Result<UpstreamSecrets, SecretsError> {
    load_owned_by(path, 0)
}

/// [`load`] with the required owner given (tests run as an ordinary user).
pub fn load_owned_by(path: &Path, uid: u32) -> Result<UpstreamSecrets, SecretsError> {
    let owned = || path.to_owned();
    // O_NOFOLLOW: a symlink as the last component fails with ELOOP. O_NONBLOCK: opening a FIFO
    // must not hang the daemon (it is refused below as not a regular file).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => SecretsError::Symlink { path: owned() },
            _ => SecretsError::Open {
                path: owned(),
                source,
            },
        })?;
    // fstat of the handle we read from: no window between the check and the read.
    let meta = file.metadata().map_err(|source| SecretsError::Read {
        path: owned(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(SecretsError::NotAFile { path: owned() });
    }
    let mode = meta.mode() & 0o7777;
    let display = path.display();
    let owner_fix = if uid == 0 {
        format!("chown root:root {display}; chmod 600 {display}")
    } else {
        format!("chown {uid} {display}; chmod 600 {display}")
    };
    if meta.uid() != uid {
        return Err(SecretsError::Owner {
            path: owned(),
            uid: meta.uid(),
            expected_uid: uid,
            mode,
            fix: owner_fix,
        });
    }
    if mode & 0o077 != 0 {
        return Err(SecretsError::Mode {
            path: owned(),
            uid: meta.uid(),
            mode,
            fix: format!("chmod 600 {display}"),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRETS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SecretsError::Read {
            path: owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SECRETS_FILE_BYTES {
        return Err(SecretsError::TooLarge {
            path: owned(),
            max: MAX_SECRETS_FILE_BYTES,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| SecretsError::Parse {
        path: owned(),
        message: "not valid UTF-8".into(),
    })?;
    parse(path, &text)
}

/// Parses the file's text. TOML errors name the line but never quote it: the line may hold the
/// password.
fn parse(path: &Path, text: &str) -> Result<UpstreamSecrets, SecretsError> {
    let secrets: UpstreamSecrets = toml::from_str(text).map_err(|e| SecretsError::Parse {
        path: path.to_owned(),
        message: describe_toml_error(text, &e),
    })?;
    let invalid = |key, message| SecretsError::Invalid {
        path: path.to_owned(),
        key,
        message,
    };
    for (key, value) in [
        ("username", &secrets.username),
        ("password", &secrets.password),
    ] {
        if value.is_empty() {
            return Err(invalid(key, "must not be empty"));
        }
        if value.contains('\0') {
            return Err(invalid(key, "must not contain NUL characters"));
        }
    }
    Ok(secrets)
}

/// "line N: <message>" from a TOML error, without its source snippet (which would print the
/// line, password or key included) and without values quoted in type errors. Also used for the
/// vault keyring.
pub(crate) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let message = if message.starts_with("invalid type") || message.starts_with("invalid value") {
        // serde quotes the offending value: "invalid type: integer `123`, expected a string".
        match message.rsplit_once(", expected ") {
            Some((_, expected)) => format!("invalid value (not shown), expected {expected}"),
            None => "invalid value (not shown)".to_owned(),
        }
    } else {
        message.to_owned()
    };
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    const GOOD: &str = "username = \"interceptor\"\npassword = \"hunter2-secret\"\n";

    fn me() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    fn write(dir: &tempfile::TempDir, text: &str, mode: u32) -> PathBuf {
        let path = dir.path().join("secrets.toml");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_good_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let path = write(&dir, GOOD, mode);
            let secrets = load_owned_by(&path, me()).unwrap();
            assert_eq!(secrets.username, "interceptor");
            assert_eq!(secrets.password, "hunter2-secret");
            let debug = format!("{secrets:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("interceptor"), "{debug}");
        }
    }

    #[test]
    fn group_or_world_access_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o660, 0o604, 0o644, 0o601, 0o610] {
            let path = write(&dir, GOOD, mode);
            let err = load_owned_by(&path, me()).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, SecretsError::Mode { .. }), "{text}");
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("chmod 600"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn the_wrong_owner_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, GOOD, 0o600);
        let other = me().wrapping_add(1);
        let err = load_owned_by(&path, other).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SecretsError::Owner { .. }), "{text}");
        assert!(text.contains(&format!("owned by uid {}", me())), "{text}");
        assert!(text.contains("0600"), "{text}");
        assert!(text.contains(&format!("chown {other}")), "{text}");
        // `load` requires root; unless the tests run as root, this file is refused, and the fix
        // names root.
        if me() != 0 {
            let text = load(&path).unwrap_err().to_string();
            assert!(text.contains("chown root:root"), "{text}");
            assert!(text.contains("chmod 600"), "{text}");
        }
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = load_owned_by(&path, me()).unwrap_err();
        assert!(matches!(err, SecretsError::Open { .. }));
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn symlinks_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = write(&dir, GOOD, 0o600);
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = load_owned_by(&link, me()).unwrap_err();
        assert!(matches!(err, SecretsError::Symlink { .. }), "{err}");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        let err = load_owned_by(&sub, me()).unwrap_err();
        assert!(matches!(err, SecretsError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn bad_toml_names_the_line_but_not_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "username = \"x\"\npassword = \"hunter2\n", 0o600);
        let err = load_owned_by(&path, me()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SecretsError::Parse { .. }), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        // A value of the wrong type: serde would quote it.
        let path = write(&dir, "username = \"x\"\npassword = 31415926\n", 0o600);
        let text = load_owned_by(&path, me()).unwrap_err().to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains("31415926"), "{text}");
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, &format!("{GOOD}pasword = \"x\"\n"), 0o600);
        let text = load_owned_by(&path, me()).unwrap_err().to_string();
        assert!(text.contains("pasword"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        let path = write(&dir, "username = \"x\"\n", 0o600);
        let text = load_owned_by(&path, me()).unwrap_err().to_string();
        assert!(text.contains("missing field `password`"), "{text}");
    }

    #[test]
    fn empty_values_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "username = \"x\"\npassword = \"\"\n", 0o600);
        let text = load_owned_by(&path, me()).unwrap_err().to_string();
        assert!(text.contains("password: must not be empty"), "{text}");
        let path = write(&dir, "username = \"a\\u0000b\"\npassword = \"p\"\n", 0o600);
        let text = load_owned_by(&path, me()).unwrap_err().to_string();
        assert!(text.contains("username: must not contain NUL"), "{text}");
        let big = format!("{GOOD}# {}\n", "x".repeat(MAX_SECRETS_FILE_BYTES as usize));
        let path = write(&dir, &big, 0o600);
        let err = load_owned_by(&path, me()).unwrap_err();
        assert!(matches!(err, SecretsError::TooLarge { .. }), "{err}");
        let path = write(&dir, "", 0o600);
        assert!(load_owned_by(&path, me()).is_err());
    }
}
