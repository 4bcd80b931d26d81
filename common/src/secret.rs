//! Secrets (the cluster secret, BMC passwords) read from files.
//!
//! A secret never appears in argv, logs or errors: `Secret`'s `Debug` prints a
//! placeholder, it has no `Display`, and errors name the file, never its content.
//! Files must not be readable by group or others (like ssh's private keys), because a
//! world-readable cluster secret lets anyone on the host impersonate a genie.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Bytes that must stay secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes taken from somewhere already trusted (tests, generated secrets).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Reads the cluster secret from `path`: like [`Secret::from_file`], and it must
    /// hold at least [`MIN_CLUSTER_SECRET_BYTES`] bytes that are not all white space.
    /// The secret keys the mutual authentication of every genie and router: a short
    /// one is guessed offline from one captured handshake.
    pub fn cluster_from_file(path: &Path) -> Result<Self, SecretError> {
        let s = Self::from_file(path)?;
        if s.0.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(SecretError::Blank {
                path: path.to_owned(),
            });
        }
        if s.0.len() < MIN_CLUSTER_SECRET_BYTES {
            return Err(SecretError::TooShort {
                path: path.to_owned(),
                len: s.0.len(),
            });
        }
        Ok(s)
    }

    /// Reads a secret from `path`: the file must be mode 0600 or stricter, and its
    /// content (less one trailing newline) must not be empty.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let meta = fs::metadata(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self(bytes))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The shortest cluster secret accepted.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret file {path} holds only white space; write a random secret into it (head -c 32 /dev/urandom | base64 > {path})")]
    Blank { path: PathBuf },
    #[error("secret file {path} holds {len} bytes; a cluster secret needs at least 16 random bytes (head -c 32 /dev/urandom | base64 > {path})")]
    TooShort { path: PathBuf, len: usize },
    #[error("cannot read secret file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path} has mode {mode:04o}: it must not be readable by group or others (chmod 600 {path})")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("secret file {path} is empty")]
    Empty { path: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn reads_private_file_and_hides_content() {
        let dir = std::env::temp_dir().join(format!("wisp-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = write(&dir, "ok", b"hunter2\n", 0o600);
        let s = Secret::from_file(&p).unwrap();
        assert_eq!(s.expose(), b"hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));

        let p = write(&dir, "open", b"hunter2", 0o644);
        let e = Secret::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        assert!(!e.contains("hunter2"));

        let p = write(&dir, "empty", b"\n", 0o600);
        assert!(matches!(
            Secret::from_file(&p),
            Err(SecretError::Empty { .. })
        ));
        assert!(matches!(
            Secret::from_file(&dir.join("missing")),
            Err(SecretError::Read { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cluster_secret_is_long_and_not_blank() {
        let dir = std::env::temp_dir().join(format!("wisp-secret-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = write(&dir, "short", b"x\n", 0o600);
        let e = Secret::cluster_from_file(&short).unwrap_err().to_string();
        assert!(
            e.contains("holds 1 bytes") && e.contains("at least 16"),
            "{e}"
        );
        let blank = write(&dir, "blank", b"                    \n", 0o600);
        let e = Secret::cluster_from_file(&blank).unwrap_err().to_string();
        assert!(e.contains("only white space"), "{e}");
        let good = write(&dir, "good", b"0123456789abcdef\n", 0o600);
        assert_eq!(Secret::cluster_from_file(&good).unwrap().expose().len(), 16);
        // A BMC password may be short: only the cluster secret has the rule.
        assert!(Secret::from_file(&short).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
