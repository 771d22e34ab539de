//! Shared-secret authentication (`--auth-file`): the secret, read the same way by kvsd, kvsctl
//! and kvs-bench; its constant-time check; and the gate every server connection passes
//! through before its first request is served. Pure apart from reading the secret file: the
//! server's connection code asks the gate, the gate never touches a socket.
//!
//! The rules (`docs/protocol.md`, "Authentication"): with a secret configured, a connection's
//! first request must be AUTH (op 0x07) with the secret as its body. Until then every other
//! request gets ERROR "authentication required", frames are capped at
//! `AUTH_FRAME_BYTES_MAX`, and after `AUTH_FAILURES_MAX` failures (wrong secrets and requests
//! sent before AUTH alike) the connection is closed. Without a secret, AUTH is a no-op OK so
//! that clients may always send it.

use std::io::Read;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::limits::{AUTH_FAILURES_MAX, AUTH_FRAME_BYTES_MAX, AUTH_SECRET_BYTES_MAX};
use crate::protocol::request::op;

/// The environment variable kvsctl and kvs-bench read the secret itself from when no
/// `--auth-file` is given (as redis-cli reads `REDISCLI_AUTH`).
pub const AUTH_ENV: &str = "KVS_AUTH";

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("cannot read the secret file {path}: {source} (--auth-file)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the secret file {path} is empty: put the secret (1 to {AUTH_SECRET_BYTES_MAX} bytes) in it (--auth-file)")]
    EmptyFile { path: PathBuf },
    #[error("the secret file {path} holds more than {AUTH_SECRET_BYTES_MAX} bytes: a secret is 1 to {AUTH_SECRET_BYTES_MAX} bytes (--auth-file)")]
    FileTooLong { path: PathBuf },
    #[error(
        "the secret in {AUTH_ENV} is {len} bytes: a secret is 1 to {AUTH_SECRET_BYTES_MAX} bytes"
    )]
    EnvTooLong { len: usize },
    #[error("{AUTH_ENV} is not valid UTF-8 text: use --auth-file for a binary secret")]
    EnvNotUnicode,
}

/// A secret of 1 to `AUTH_SECRET_BYTES_MAX` bytes. It is kept zero-padded to the maximum so
/// that checking a candidate takes the same time whatever the secret's length and content.
/// `Debug` shows neither.
#[derive(Clone)]
pub struct Secret {
    padded: Box<[u8; AUTH_SECRET_BYTES_MAX]>,
    len: usize,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A secret read from a file, and a warning for its owner if others may read the file.
#[derive(Debug)]
pub struct SecretFile {
    pub secret: Secret,
    pub warning: Option<String>,
}

impl Secret {
    /// `None` if `bytes` is empty or longer than `AUTH_SECRET_BYTES_MAX`.
    pub fn new(bytes: &[u8]) -> Option<Secret> {
        if bytes.is_empty() || bytes.len() > AUTH_SECRET_BYTES_MAX {
            return None;
        }
        let mut padded = Box::new([0u8; AUTH_SECRET_BYTES_MAX]);
        padded[..bytes.len()].copy_from_slice(bytes);
        Some(Secret {
            padded,
            len: bytes.len(),
        })
    }

    /// Reads the secret from `path`, once: its bytes less one trailing line end (`\n` or
    /// `\r\n`), so `echo secret > file` works. Refuses an empty or too long file. The warning
    /// says so if the file may be read by group or others.
    pub fn from_file(path: &Path) -> Result<SecretFile, SecretError> {
        let read_error = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        if !metadata.is_file() {
            let source = std::io::Error::other("not a regular file");
            return Err(read_error(source));
        }
        // One line end, and one byte more to tell a file that is too long.
        let mut bytes = Vec::with_capacity(AUTH_SECRET_BYTES_MAX + 3);
        file.take(AUTH_SECRET_BYTES_MAX as u64 + 3)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(SecretError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        let secret = Secret::new(&bytes).ok_or_else(|| SecretError::FileTooLong {
            path: path.to_path_buf(),
        })?;
        bytes.fill(0);
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        let warning = (mode & 0o077 != 0).then(|| {
            format!(
                "the secret file {} can be read by group or others (mode {mode:03o}): chmod 600 it",
                path.display()
            )
        });
        Ok(SecretFile { secret, warning })
    }

    /// A client's secret: from `auth_file` if given, else from `KVS_AUTH` (the secret itself;
    /// empty counts as unset), else none.
    pub fn for_client(auth_file: Option<&Path>) -> Result<Option<SecretFile>, SecretError> {
        if let Some(path) = auth_file {
            return Secret::from_file(path).map(Some);
        }
        match std::env::var(AUTH_ENV) {
            Ok(text) if text.is_empty() => Ok(None),
            Ok(text) => Secret::new(text.as_bytes())
                .map(|secret| {
                    Some(SecretFile {
                        secret,
                        warning: None,
                    })
                })
                .ok_or(SecretError::EnvTooLong { len: text.len() }),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode),
        }
    }

    /// The secret's bytes, to send in AUTH.
    pub fn bytes(&self) -> &[u8] {
        &self.padded[..self.len]
    }

    /// True if `candidate` is the secret. Takes the same time for every candidate of up to
    /// `AUTH_SECRET_BYTES_MAX` bytes, whatever the secret: both are compared zero-padded to
    /// the maximum, lengths included, without an early exit. (A longer candidate is refused
    /// at once; the maximum is public.)
    pub fn matches(&self, candidate: &[u8]) -> bool {
        if candidate.len() > AUTH_SECRET_BYTES_MAX {
            return false;
        }
        let mut padded = [0u8; AUTH_SECRET_BYTES_MAX];
        padded[..candidate.len()].copy_from_slice(candidate);
        let same_bytes = padded[..].ct_eq(&self.padded[..]);
        let same_len = (candidate.len() as u64).ct_eq(&(self.len as u64));
        padded.fill(0);
        bool::from(same_bytes & same_len)
    }
}

/// What the gate says of one request frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not AUTH, and the connection may send it: serve it as usual.
    Pass,
    /// AUTH with the right secret (or on a server without one): answer OK.
    Accepted,
    /// Answer ERROR with this message; if `close`, close the connection after it.
    Refused { message: String, close: bool },
}

/// One connection's authentication state.
#[derive(Debug)]
pub struct Gate<'a> {
    secret: Option<&'a Secret>,
    authenticated: bool,
    failures: u32,
}

impl<'a> Gate<'a> {
    /// A gate for a server with `secret` (`None`: no `--auth-file`, every request passes).
    pub fn new(secret: Option<&'a Secret>) -> Gate<'a> {
        Gate {
            secret,
            authenticated: false,
            failures: 0,
        }
    }

    /// Whether the server has a secret (`--auth-file`) at all.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// True once the connection may send any request.
    pub fn is_open(&self) -> bool {
        self.secret.is_none() || self.authenticated
    }

    /// The largest frame the connection may send now: the server's `configured` maximum once
    /// open, `AUTH_FRAME_BYTES_MAX` before.
    pub fn frame_bytes_max(&self, configured: u32) -> u32 {
        if self.is_open() {
            configured
        } else {
            configured.min(AUTH_FRAME_BYTES_MAX)
        }
    }

    /// Failures so far on this connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Judges one request frame (its op, flags and body).
    pub fn admit(&mut self, kind: u8, flags: u8, body: &[u8]) -> Verdict {
        if kind != op::AUTH {
            if self.is_open() {
                return Verdict::Pass;
            }
            return self.fail(format!(
                "authentication required: this server was started with --auth-file; send AUTH (op 0x07) with the secret before any other request (kvsctl and kvs-bench: --auth-file PATH or {AUTH_ENV}=secret)"
            ));
        }
        if flags != 0 {
            return Verdict::Refused {
                message: format!("unknown flag bits 0x{flags:02x} for AUTH"),
                close: false,
            };
        }
        match self.secret {
            None => Verdict::Accepted,
            Some(secret) if secret.matches(body) => {
                self.authenticated = true;
                Verdict::Accepted
            }
            Some(_) => self.fail(
                "authentication failed: wrong secret (it must equal the server's --auth-file)"
                    .to_string(),
            ),
        }
    }

    fn fail(&mut self, reason: String) -> Verdict {
        self.failures += 1;
        let close = self.failures >= AUTH_FAILURES_MAX;
        let message = if close {
            format!("{reason}; closing the connection after {AUTH_FAILURES_MAX} failed attempts")
        } else {
            let left = AUTH_FAILURES_MAX - self.failures;
            format!("{reason} ({left} attempt(s) left before the connection is closed)")
        };
        Verdict::Refused { message, close }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(verdict: Verdict) -> (bool, String) {
        match verdict {
            Verdict::Refused { message, close } => (close, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn secrets_match_only_themselves() {
        let secret = Secret::new(b"s3cret").unwrap();
        assert!(secret.matches(b"s3cret"));
        for wrong in [
            &b""[..],
            b"s3cre",
            b"s3cret\0",
            b"s3cret ",
            b"S3cret",
            b"x",
            &[0u8; 6],
            &[b'a'; AUTH_SECRET_BYTES_MAX],
            &[b'a'; AUTH_SECRET_BYTES_MAX + 1],
        ] {
            assert!(!secret.matches(wrong), "{wrong:?}");
        }
        // Zero bytes are part of a secret, not padding.
        let zeros = Secret::new(&[0, 0]).unwrap();
        assert!(zeros.matches(&[0, 0]));
        assert!(!zeros.matches(&[0]) && !zeros.matches(&[0, 0, 0]) && !zeros.matches(b""));
        let longest = Secret::new(&[7; AUTH_SECRET_BYTES_MAX]).unwrap();
        assert!(longest.matches(&[7; AUTH_SECRET_BYTES_MAX]));
        assert!(Secret::new(b"").is_none());
        assert!(Secret::new(&[1; AUTH_SECRET_BYTES_MAX + 1]).is_none());
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn secret_files_lose_one_line_end_and_refuse_empty_or_long() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let read = |path: &Path| Secret::from_file(path);
        let file = read(&write("plain", b"abc\n", 0o600)).unwrap();
        assert!(file.secret.matches(b"abc") && file.warning.is_none());
        let file = read(&write("crlf", b"abc\r\n", 0o400)).unwrap();
        assert!(file.secret.matches(b"abc"));
        let file = read(&write("two", b"abc\n\n", 0o600)).unwrap();
        assert!(file.secret.matches(b"abc\n"), "only one line end goes");
        let file = read(&write("bare", b" a b ", 0o600)).unwrap();
        assert!(file.secret.matches(b" a b "), "nothing else is trimmed");
        let file = read(&write("open", b"abc", 0o644)).unwrap();
        let warning = file.warning.expect("a world-readable file is warned about");
        assert!(
            warning.contains("644") && warning.contains("chmod 600"),
            "{warning}"
        );

        for empty in [&b""[..], b"\n", b"\r\n"] {
            let error = read(&write("empty", empty, 0o600)).unwrap_err();
            assert!(matches!(error, SecretError::EmptyFile { .. }), "{error}");
        }
        let longest = vec![b'x'; AUTH_SECRET_BYTES_MAX];
        let mut with_newline = longest.clone();
        with_newline.push(b'\n');
        assert!(read(&write("max", &with_newline, 0o600)).is_ok());
        let mut too_long = longest.clone();
        too_long.push(b'y');
        let error = read(&write("long", &too_long, 0o600)).unwrap_err();
        assert!(matches!(error, SecretError::FileTooLong { .. }), "{error}");
        let error = read(&dir.path().join("missing")).unwrap_err();
        assert!(error.to_string().contains("--auth-file"), "{error}");
        let error = read(dir.path()).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }

    #[test]
    fn without_a_secret_everything_passes_and_auth_is_a_no_op() {
        let mut gate = Gate::new(None);
        assert!(gate.is_open());
        assert_eq!(gate.frame_bytes_max(1 << 20), 1 << 20);
        assert_eq!(gate.admit(op::GET, 0, b"k"), Verdict::Pass);
        assert_eq!(gate.admit(op::AUTH, 0, b"anything"), Verdict::Accepted);
        assert_eq!(gate.admit(op::AUTH, 0, b""), Verdict::Accepted);
    }

    #[test]
    fn the_gate_opens_on_the_secret_and_closes_after_too_many_failures() {
        let secret = Secret::new(b"pw").unwrap();
        let mut gate = Gate::new(Some(&secret));
        assert!(!gate.is_open());
        assert_eq!(gate.frame_bytes_max(1 << 20), AUTH_FRAME_BYTES_MAX);
        assert_eq!(gate.frame_bytes_max(100), 100);
        let (close, message) = refused(gate.admit(op::GET, 0, b"k"));
        assert!(
            !close && message.contains("authentication required"),
            "{message}"
        );
        assert!(message.contains("--auth-file") && message.contains(AUTH_ENV));
        let (close, message) = refused(gate.admit(op::AUTH, 0, b"wrong"));
        assert!(
            !close && message.contains("authentication failed"),
            "{message}"
        );
        // Bad flags are a bad request, not a guess at the secret.
        let (close, _) = refused(gate.admit(op::AUTH, 1, b"pw"));
        assert!(!close && gate.failures() == 2);
        assert_eq!(gate.admit(op::AUTH, 0, b"pw"), Verdict::Accepted);
        assert!(gate.is_open());
        assert_eq!(gate.frame_bytes_max(1 << 20), 1 << 20);
        assert_eq!(gate.admit(op::SET, 0, b""), Verdict::Pass);

        let mut gate = Gate::new(Some(&secret));
        for attempt in 1..=AUTH_FAILURES_MAX {
            let (close, message) = refused(gate.admit(op::AUTH, 0, b"nope"));
            assert_eq!(close, attempt == AUTH_FAILURES_MAX, "{message}");
        }
        assert!(!gate.is_open());
    }
}
