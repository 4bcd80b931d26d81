//! How a follower forwards an API request to the leader, after its own guard
//! (`api::auth`) has let the request in.
//!
//! - **Authority the leader accepts.** A TCP caller's `Authorization` goes on as it
//!   came (the follower checked it with the same tokens). A caller on the local socket
//!   presented nothing (the socket's mode decided), so the follower presents a token
//!   of its own: its first `admin` `[[api_token]]` (for a read, a `read` one will do
//!   when it has no admin token); without one it answers 503 naming what to configure.
//!   The token is never logged, and marked sensitive in the header map.
//! - **TLS to the leader** when the leader's advertised API says `https://`, or is a
//!   bare address off loopback (a router's TCP API off loopback always speaks TLS: the
//!   config check requires `[api_tls]` there). The follower trusts `[api_tls] ca_file`,
//!   else the certificates of its own `cert_file`. An explicit `http://` leader off
//!   loopback is refused: a token would cross the network in clear text.
//! - **One hop only.** The forwarded request is marked; a follower never forwards a
//!   marked request again (a stale leader key naming another follower cannot loop).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use wisp_common::secret::{Secret, SecretError};

use super::follower::Known;
use super::status::with_role;
use crate::api::auth::Peer;
use crate::config::api::{ApiTlsConfig, TokenRole};
use crate::config::RouterConfig;

/// Marks a request a follower forwarded (its value: the follower's name).
pub const FORWARDED: &str = "x-wisp-forwarded-by";
/// Who the follower served, for the leader's event log (informative only: the
/// leader's own guard decides with the token).
pub const FORWARDED_FOR: &str = "x-wisp-forwarded-for";

/// The longest a forwarded request may take (long operations run detached on the
/// leader: a client cut off here does not cancel them).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);
/// The leader must accept the connection (and finish TLS) within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer relayed (event and VM lists): far above any real one.
const MAX_ANSWER: usize = 64 << 20;

/// Why the forwarding could not be set up from router.toml.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("api_token ({role}) {path}")]
    Token {
        role: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: SecretError,
    },
    #[error("api_tls: cannot read the certificates to trust in {path}")]
    Roots {
        path: std::path::PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("api_tls: {path} holds no usable certificate to trust")]
    NoRoots { path: std::path::PathBuf },
    #[error("api_tls: no usable TLS client configuration")]
    Config(#[source] rustls::Error),
}

/// What the follower presents to the leader on a local caller's behalf, and whom it
/// trusts there.
#[derive(Clone)]
pub struct Upstream {
    admin: Option<Secret>,
    read: Option<Secret>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("admin", &self.admin.is_some())
            .field("read", &self.read.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Upstream {
    /// From router.toml: the first token of each role, and the TLS roots.
    pub fn from_config(config: &RouterConfig) -> Result<Self, UpstreamError> {
        let first = |role: TokenRole| -> Result<Option<Secret>, UpstreamError> {
            config
                .api_tokens
                .iter()
                .find(|t| t.role == role)
                .map(|t| {
                    Secret::cluster_from_file(&t.file).map_err(|source| UpstreamError::Token {
                        role: role.as_str(),
                        path: t.file.clone(),
                        source,
                    })
                })
                .transpose()
        };
        Ok(Self {
            admin: first(TokenRole::Admin)?,
            read: first(TokenRole::Read)?,
            tls: config.api_tls.as_ref().map(client_tls).transpose()?,
        })
    }

    /// Tests: these tokens and no TLS.
    pub fn new(admin: Option<Secret>, read: Option<Secret>) -> Self {
        Self {
            admin,
            read,
            tls: None,
        }
    }

    fn token_for(&self, method: &Method) -> Option<&Secret> {
        let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        self.admin.as_ref().or(self.read.as_ref().filter(|_| read))
    }
}

fn client_tls(cfg: &ApiTlsConfig) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
    let path = cfg.ca_file.as_ref().unwrap_or(&cfg.cert_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| UpstreamError::Roots {
            path: path.clone(),
            source,
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(UpstreamError::NoRoots { path: path.clone() });
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(UpstreamError::Config)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What the follower's API handler shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub known: Known,
    pub upstream: Arc<Upstream>,
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The leader's API as the follower will reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port`
    addr: String,
    host: String,
    tls: bool,
}

/// Parses the leader's advertised API; `Err` says why it is not used.
fn target(api: &str) -> Result<Target, String> {
    let (rest, scheme) = if let Some(r) = api.strip_prefix("https://") {
        (r, Some(true))
    } else if let Some(r) = api.strip_prefix("http://") {
        (r, Some(false))
    } else {
        (api, None)
    };
    let addr = rest.split('/').next().unwrap_or_default().to_owned();
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => return Err(format!("{api:?} names no port")),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let tls = match scheme {
        Some(true) => true,
        Some(false) if !loopback => {
            return Err(format!(
                "{api} is plain HTTP off loopback: a token would cross the network in clear \
                 text (advertise the leader's API as https://)"
            ))
        }
        Some(false) => false,
        None => !loopback,
    };
    Ok(Target { addr, host, tls })
}

/// Forwards the request to the leader; the follower's API is this one handler.
pub async fn forward(State(ctx): State<Ctx>, req: Request) -> Response {
    let me = ctx.known.me().to_owned();
    if req.headers().contains_key(FORWARDED) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "router {me} does not lead either (a follower forwarded this request here); \
                 an election is probably under way: try again in a few seconds"
            ),
        );
    }
    let Some(leader) = ctx.known.leader() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "router {me} is not the leader, and no leader is known yet (an election is \
                 under way): try again in a few seconds"
            ),
        );
    };
    let method = req.method().clone();
    let (authorization, caller) = match req.extensions().get::<Peer>().copied() {
        Some(Peer::Tcp(addr)) => (
            req.headers().get(header::AUTHORIZATION).cloned(),
            format!("{addr} via {me}"),
        ),
        Some(Peer::Local { uid, .. }) => {
            let Some(token) = ctx.upstream.token_for(&method) else {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "router {me} follows {}: it forwards requests from its local socket \
                         with an admin token of its own, and has none: add an [[api_token]] \
                         with role = \"admin\" (a token the leader also accepts) to its \
                         router.toml, or call the leader's API",
                        leader.display_name()
                    ),
                );
            };
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(token.expose());
            let Ok(mut v) = HeaderValue::from_bytes(&v) else {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("router {me}: its api_token is not a valid HTTP header value"),
                );
            };
            v.set_sensitive(true);
            (Some(v), format!("uid {uid} on {me}'s local socket"))
        }
        None => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "request without a known peer".into(),
            )
        }
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let to = match target(&leader.api) {
        Ok(t) => t,
        Err(why) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "router {me} is not the leader and will not forward to the leader {}: {why}",
                    leader.display_name()
                ),
            )
        }
    };
    let mut out = hyper::Request::builder()
        .method(method.clone())
        .uri(&path)
        .header(header::HOST, &to.addr)
        .header(FORWARDED, me.as_str());
    if let Ok(v) = HeaderValue::from_str(&caller) {
        out = out.header(FORWARDED_FOR, v);
    }
    if let Some(a) = authorization {
        out = out.header(header::AUTHORIZATION, a);
    }
    for h in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = req.headers().get(&h) {
            out = out.header(h, v.clone());
        }
    }
    let is_status = method == Method::GET && req.uri().path() == "/v1/status";
    // The server read the body whole (bounded in size and time) before the guard ran.
    let body = match axum::body::to_bytes(req.into_body(), usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("request body not forwarded: {e}"),
            )
        }
    };
    let out = match out.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("request not forwarded: {e}"),
            )
        }
    };
    let tls = if to.tls {
        match &ctx.upstream.tls {
            Some(t) => Some(t.clone()),
            None => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "router {me} is not the leader, and the leader {}'s API {} speaks TLS: \
                         add [api_tls] (with ca_file, the CA that signed the routers' \
                         certificates) to this router's router.toml",
                        leader.display_name(),
                        leader.api
                    ),
                )
            }
        }
    } else {
        None
    };
    let sent = tokio::time::timeout(FORWARD_TIMEOUT, send(&to, tls, out)).await;
    let (status, headers, body) = match sent {
        Ok(Ok(x)) => x,
        Ok(Err(reason)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!(
                "router {me} is not the leader and could not reach the leader {} at {}: {reason}",
                leader.display_name(),
                leader.api
            ),
            )
        }
        Err(_) => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "router {me} forwarded this to the leader {}, which did not answer within \
                     {FORWARD_TIMEOUT:?} (a long operation goes on there: see `router events`)",
                    leader.display_name()
                ),
            )
        }
    };
    let body = if is_status && status.is_success() {
        with_role(&body, "follower", Some(leader.display_name()))
    } else {
        body
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    resp
}

/// Why the leader gave no answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no connection to {addr} within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout { addr: String },
    #[error("server name {0:?} is not valid for TLS")]
    Name(String),
    #[error("TLS with {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    #[error("answer unreadable or above {MAX_ANSWER} bytes: {0}")]
    Body(String),
}

async fn send(
    to: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let r = async {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&to.addr))
            .await
            .map_err(|_| SendError::ConnectTimeout {
                addr: to.addr.clone(),
            })?
            .map_err(|source| SendError::Connect {
                addr: to.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => exchange(TokioIo::new(tcp), req).await,
            Some(cfg) => {
                let name = ServerName::try_from(to.host.clone())
                    .map_err(|_| SendError::Name(to.host.clone()))?;
                let connector = tokio_rustls::TlsConnector::from(cfg);
                let s = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| SendError::ConnectTimeout {
                        addr: to.addr.clone(),
                    })?
                    .map_err(|source| SendError::Tls {
                        addr: to.addr.clone(),
                        source,
                    })?;
                exchange(TokioIo::new(s), req).await
            }
        }
    }
    .await;
    r.map_err(|e| wisp_common::error::chain(&e))
}

async fn exchange<I>(
    io: I,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes), SendError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(SendError::Http)?;
    // The connection's driver; it ends with the exchange (one request per connection).
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(SendError::Http)?;
    let (parts, body) = resp.into_parts();
    let bytes = Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| SendError::Body(e.to_string()))?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok((parts.status, parts.headers, bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn leaders_api_addresses() {
        let t = target("127.0.0.1:7101").unwrap();
        assert_eq!((t.addr.as_str(), t.tls), ("127.0.0.1:7101", false));
        let t = target("http://localhost:7101/").unwrap();
        assert_eq!((t.addr.as_str(), t.tls), ("localhost:7101", false));
        // Off loopback a router's API speaks TLS: so does the follower to it.
        let t = target("10.0.0.1:7101").unwrap();
        assert_eq!((t.host.as_str(), t.tls), ("10.0.0.1", true));
        let t = target("https://r1.example:7443").unwrap();
        assert_eq!((t.host.as_str(), t.tls), ("r1.example", true));
        let t = target("https://[::1]:7443").unwrap();
        assert_eq!((t.host.as_str(), t.tls), ("::1", true));
        let e = target("http://10.0.0.1:7101").unwrap_err();
        assert!(e.contains("clear text"), "{e}");
        assert!(target("r1.example").is_err());
    }

    #[test]
    fn a_local_caller_is_forwarded_with_an_admin_token_else_a_read_one_for_reads() {
        let a = Secret::from_bytes(b"a".to_vec());
        let r = Secret::from_bytes(b"r".to_vec());
        let both = Upstream::new(Some(a.clone()), Some(r.clone()));
        assert_eq!(both.token_for(&Method::POST), Some(&a));
        assert_eq!(both.token_for(&Method::GET), Some(&a));
        let read_only = Upstream::new(None, Some(r.clone()));
        assert_eq!(read_only.token_for(&Method::GET), Some(&r));
        assert_eq!(read_only.token_for(&Method::POST), None);
        assert!(!format!("{both:?}").contains('"'), "no token in Debug");
    }
}
