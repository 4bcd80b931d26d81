//! Who may call the API, as one layer over the whole app ([`secure`]), so that every
//! route, those added later included, sits behind it.
//!
//! A request on the Unix socket is trusted: the socket's mode (0660) and group decide
//! who can connect, and the kernel tells us the caller's uid (SO_PEERCRED). A request
//! over TCP must carry `Authorization: Bearer <token>`: a `read` token may only GET (and
//! not upgrade a GET to an interactive console, which types into a VM), an `admin`
//! token may do everything; a missing or unknown token is a 401, a read token on a
//! write a 403, both as JSON `{"error": ...}`. Paths in the guard's public list (the
//! health check, a login page) are served to anyone. Every request that changes
//! something, a console opened included, is recorded in the event log with its caller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use subtle::ConstantTimeEq;
use wisp_common::secret::{Secret, SecretError};

use super::ApiError;
use crate::cluster::ClusterHandle;
use crate::config::api::{ApiTokenConfig, TokenRole};
use crate::events::EventKind;

/// The header in which a follower names the caller it forwards for (`ha::forward`).
const FORWARDED_FOR: &str = crate::ha::forward::FORWARDED_FOR;

/// Served without a token: liveness probes and a dashboard's login page must load
/// before anyone has logged in. Add to it with [`Guard::public`].
pub const PUBLIC_PATHS: &[&str] = &["/health"];

/// Where a connection came from, attached to each of its requests by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The Unix socket, with the kernel's word on who is calling.
    Local {
        uid: u32,
        pid: Option<i32>,
    },
    Tcp(SocketAddr),
}

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("api_token ({role}) {path}")]
    File {
        role: &'static str,
        path: PathBuf,
        #[source]
        source: SecretError,
    },
}

/// The tokens of the TCP API and who to tell about writes.
#[derive(Clone)]
pub struct Guard {
    tokens: Arc<Vec<(TokenRole, Secret)>>,
    public: Arc<Vec<String>>,
    events: Option<ClusterHandle>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("tokens", &self.tokens.len())
            .field("public", &self.public)
            .finish()
    }
}

impl Guard {
    /// Reads every token file: mode 0600 or stricter, at least 16 bytes, not blank
    /// (the same rules as the cluster secret, for the same reason: a short token is
    /// guessed).
    pub fn from_config(tokens: &[ApiTokenConfig]) -> Result<Self, TokenError> {
        let mut out = Vec::with_capacity(tokens.len());
        for t in tokens {
            let s = Secret::cluster_from_file(&t.file).map_err(|source| TokenError::File {
                role: t.role.as_str(),
                path: t.file.clone(),
                source,
            })?;
            out.push((t.role, s));
        }
        Ok(Self::new(out))
    }

    /// A guard over these tokens (tests build one without files).
    pub fn new(tokens: Vec<(TokenRole, Secret)>) -> Self {
        Self {
            tokens: Arc::new(tokens),
            public: Arc::new(PUBLIC_PATHS.iter().map(|p| (*p).to_owned()).collect()),
            events: None,
        }
    }

    /// Also serves `path` (exactly, or everything under it when it ends in `/`) without
    /// a token.
    pub fn public(mut self, path: &str) -> Self {
        Arc::make_mut(&mut self.public).push(path.to_owned());
        self
    }

    /// Records every write in this cluster's event log.
    pub fn record_to(mut self, cluster: ClusterHandle) -> Self {
        self.events = Some(cluster);
        self
    }

    fn is_public(&self, path: &str) -> bool {
        self.public
            .iter()
            // `/` itself is exact: as a prefix it would open everything.
            .any(|p| p == path || (p.len() > 1 && p.ends_with('/') && path.starts_with(p.as_str())))
    }

    /// The role of `presented`, comparing against every token in constant time (no
    /// early exit, so the timing does not tell which one nearly matched).
    fn role_of(&self, presented: &[u8]) -> Option<TokenRole> {
        let mut found = None;
        for (role, t) in self.tokens.iter() {
            if bool::from(t.expose().ct_eq(presented)) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Who made a request, as the event log says it.
#[derive(Debug, Clone, Copy)]
enum Caller {
    Local { uid: u32, pid: Option<i32> },
    Token(TokenRole, SocketAddr),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { uid, pid: Some(p) } => {
                write!(f, "uid {uid} (pid {p}) on the local socket")
            }
            Self::Local { uid, pid: None } => write!(f, "uid {uid} on the local socket"),
            Self::Token(role, addr) => write!(f, "{} token from {addr}", role.as_str()),
        }
    }
}

/// Puts `guard` in front of every route of `app`: call it last, after every merge.
pub fn secure(app: Router, guard: Guard) -> Router {
    app.layer(axum::middleware::from_fn_with_state(guard, check))
}

fn is_read(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Does `req` change something (or open a session that can)? A GET that asks for an
/// upgrade opens an interactive console: typing into a VM's serial port is a write,
/// for the token check and for the event log alike.
pub fn is_write(method: &Method, headers: &axum::http::HeaderMap) -> bool {
    !is_read(method) || headers.contains_key(header::UPGRADE)
}

async fn check(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().copied();
    let caller = match peer {
        Some(Peer::Local { uid, pid }) => Caller::Local { uid, pid },
        Some(Peer::Tcp(addr)) => {
            if g.is_public(req.uri().path()) {
                return next.run(req).await;
            }
            match bearer(&req).map(|t| g.role_of(t)) {
                None => {
                    return deny(
                        StatusCode::UNAUTHORIZED,
                        "missing bearer token: the TCP API needs `Authorization: Bearer <token>` \
                         (router --token-file FILE), or use the local Unix socket",
                    )
                }
                Some(None) => return deny(StatusCode::UNAUTHORIZED, "unknown bearer token"),
                Some(Some(role)) => {
                    if role == TokenRole::Read && is_write(req.method(), req.headers()) {
                        return deny(
                                StatusCode::FORBIDDEN,
                                "this token may only read: use an admin token for changes                                  and interactive consoles",
                            );
                    }
                    Caller::Token(role, addr)
                }
            }
        }
        // A server that forgot to say where its connection came from: refuse rather
        // than guess.
        None => {
            return deny(
                StatusCode::INTERNAL_SERVER_ERROR,
                "request without a known peer",
            )
        }
    };
    let write = is_write(req.method(), req.headers());
    let mut what = format!("{} {}", req.method(), req.uri().path());
    // A follower's forward names whom it served: said, not trusted (the token decided).
    if let (Caller::Token(..), Some(v)) = (caller, req.headers().get(FORWARDED_FOR)) {
        let v: String = String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(200)
            .collect();
        what = format!("{what} (forwarded for {v})");
    }
    let resp = next.run(req).await;
    if write {
        let msg = format!("{what} by {caller}: {}", resp.status().as_u16());
        match &g.events {
            Some(c) => c.record(EventKind::ApiRequest, None, None, msg).await,
            None => tracing::info!("{msg}"),
        }
    }
    resp
}

fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let rest = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    Some(rest.trim_ascii())
}

fn deny(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_public_paths() {
        let g = Guard::new(vec![
            (
                TokenRole::Read,
                Secret::from_bytes(b"read-token-0123456".to_vec()),
            ),
            (
                TokenRole::Admin,
                Secret::from_bytes(b"admin-token-012345".to_vec()),
            ),
        ])
        .public("/ui/");
        assert_eq!(g.role_of(b"read-token-0123456"), Some(TokenRole::Read));
        assert_eq!(g.role_of(b"admin-token-012345"), Some(TokenRole::Admin));
        assert_eq!(g.role_of(b"admin-token-01234"), None);
        assert_eq!(g.role_of(b""), None);
        assert!(g.is_public("/health"));
        assert!(g.is_public("/ui/login.html"));
        assert!(!g.is_public("/v1/hosts"));
        assert!(!g.is_public("/healthz"));
    }
}
