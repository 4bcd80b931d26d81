//! The local API's Unix socket: its directory is created, a stale socket of a dead
//! router is replaced (a live router's never is), and the socket gets mode 0660 and
//! group `wisp` when that group exists, so exactly root and the `wisp` group can use
//! the CLI. Without the group it stays root's, and a log line says so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tracing::info;

/// The group whose members may use the local API.
pub const GROUP: &str = "wisp";

#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    #[error("cannot create the API socket's directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another router already serves the API socket {path}")]
    InUse { path: PathBuf },
    #[error("cannot listen on the API socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set the mode or group of the API socket {path}")]
    Perms {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the API socket at `path` with mode 0660 and group `wisp` (if it exists).
pub fn bind(path: &Path) -> Result<UnixListener, UnixSocketError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| UnixSocketError::Dir {
                path: dir.to_owned(),
                source,
            })?;
            // Others may traverse to the socket; the socket's own mode decides.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    if path.exists() {
        // A router that answers there is alive: never steal its socket.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(UnixSocketError::InUse {
                path: path.to_owned(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    // Bound under a temporary name and renamed into place once its mode and group
    // are right: a client never meets the socket with the umask's mode.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = UnixListener::bind(&tmp).map_err(|source| UnixSocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    let perms = |source| UnixSocketError::Perms {
        path: path.to_owned(),
        source,
    };
    let result = (|| {
        match nix::unistd::Group::from_name(GROUP) {
            Ok(Some(g)) => {
                nix::unistd::chown(&tmp, None, Some(g.gid)).map_err(|e| perms(e.into()))?;
            }
            _ => info!(
                socket = %path.display(),
                "no group {GROUP:?} on this system: the API socket stays root's group (mode 0660); \
                 create the group and add operators to it to let them use the CLI"
            ),
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660)).map_err(perms)?;
        std::fs::rename(&tmp, path).map_err(|source| UnixSocketError::Bind {
            path: path.to_owned(),
            source,
        })
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(l)
}
