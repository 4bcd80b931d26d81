//! The API's keys of router.toml: the Unix socket the local CLI uses, the bearer tokens
//! a TCP client must present, and the TLS certificate a TCP listener off loopback
//! must have (ARCHITECTURE.md, The router's core: the API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// GET (and HEAD) only.
    Read,
    /// Everything.
    Admin,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// One `[[api_token]]`: a file (mode 0600, at least 16 bytes) holding a token of `role`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    pub role: TokenRole,
    pub file: PathBuf,
}

/// `[api_tls]`: PEM files of the TCP API's certificate chain and private key, and the
/// certificates a follower trusts when it forwards to a leader's TLS API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// PEM certificates (the CA that signed every router's API certificate) a
    /// replicated router trusts when it forwards a request to the leader; default:
    /// those of `cert_file` (one certificate shared by the routers, or a chain that
    /// ends in the cluster's CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Where the local API's socket lives unless router.toml says otherwise; systemd's
/// RuntimeDirectory (or the router itself) creates the directory.
pub fn default_api_socket() -> PathBuf {
    PathBuf::from("/run/wisp/router.sock")
}

/// A TCP API off loopback must speak TLS: its tokens would otherwise cross the network
/// in clear text.
pub fn check_tcp(api: &SocketAddr, tls: Option<&ApiTlsConfig>) -> Result<(), (String, String)> {
    if !api.ip().is_loopback() && tls.is_none() {
        return Err((
            "api".into(),
            format!(
                "{api} is not a loopback address: a TCP API off loopback needs [api_tls] \
                 (cert_file, key_file), or bind it to 127.0.0.1 and use the Unix socket"
            ),
        ));
    }
    Ok(())
}

/// The socket path must be absolute (the daemon runs with / as working directory).
pub fn check_socket(path: &Path) -> Result<(), (String, String)> {
    if !path.is_absolute() {
        return Err((
            "api_socket".into(),
            format!("{} must be an absolute path", path.display()),
        ));
    }
    Ok(())
}
