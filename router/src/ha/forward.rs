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
//! - **Streams and sessions pass through.** An answer is relayed as it comes (the
//!   dashboard's live stream never ends), and a request asking for an upgrade (the
//!   interactive console) is upgraded on both sides and relayed byte for byte. Either
//!   side going away closes the other.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
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

/// The longest the leader may take to begin its answer (long operations run detached
/// on the leader: a client cut off here does not cancel them). A stream or a console
/// session then lasts as long as both sides keep it.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);
/// The leader must accept the connection (and finish TLS) within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest status answer read whole (to add the follower's role): far above any real one.
const MAX_ANSWER: usize = 64 << 20;

/// The leader's answer headers a caller gets (hop-by-hop ones, and the length of a
/// body that is rewritten, are not relayed).
const RELAYED: [&str; 6] = [
    "content-type",
    "cache-control",
    "x-accel-buffering",
    "www-authenticate",
    "retry-after",
    crate::vms::api::CONSOLE_HOST_HEADER,
];

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

    /// The token to present for a local caller's request (`write`: it changes
    /// something or opens a console, `auth::is_write`).
    fn token_for(&self, write: bool) -> Option<&Secret> {
        self.admin
            .as_ref()
            .or(self.read.as_ref().filter(|_| !write))
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
pub async fn forward(State(ctx): State<Ctx>, mut req: Request) -> Response {
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
    let write = crate::api::auth::is_write(&method, req.headers());
    // A console asks for an upgrade: taken before the body, relayed once both sides
    // have switched.
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (authorization, caller) = match req.extensions().get::<Peer>().copied() {
        Some(Peer::Tcp(addr)) => (
            req.headers().get(header::AUTHORIZATION).cloned(),
            format!("{addr} via {me}"),
        ),
        Some(Peer::Local { uid, .. }) => {
            let Some(token) = ctx.upstream.token_for(write) else {
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
    if let Some(u) = &upgrade {
        out = out
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, u.clone());
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
    let Answer { mut resp, driver } = match sent {
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
    let status = resp.status();
    let mut relayed = Response::new(Body::empty());
    for name in RELAYED {
        if let Some(v) = resp.headers().get(name) {
            relayed.headers_mut().insert(name, v.clone());
        }
    }
    *relayed.status_mut() = status;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client), Some(u)) = (client_upgrade, resp.headers().get(header::UPGRADE)) else {
            return error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the leader {} switched protocols unasked",
                    leader.display_name()
                ),
            );
        };
        relayed
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        relayed.headers_mut().insert(header::UPGRADE, u.clone());
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(relay_session(client, upstream, driver, me));
        return relayed;
    }
    if is_status && status.is_success() {
        let body = match Limited::new(resp.into_body(), MAX_ANSWER).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the leader {}'s status answer was unreadable or above {MAX_ANSWER} \
                         bytes: {e}",
                        leader.display_name()
                    ),
                )
            }
        };
        *relayed.body_mut() = Body::from(with_role(&body, "follower", Some(leader.display_name())));
        return relayed;
    }
    *relayed.body_mut() = Body::new(Relayed {
        body: resp.into_body(),
        _driver: driver,
    });
    relayed
}

/// Relays an upgraded session (a console) between the caller and the leader until
/// either side closes.
async fn relay_session(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    driver: Driver,
    me: String,
) {
    let (client, upstream) = tokio::join!(client, upstream);
    let why = match (client, upstream) {
        (Ok(c), Ok(u)) => {
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            match tokio::io::copy_bidirectional(&mut c, &mut u).await {
                Ok((up, down)) => format!("closed after {up} bytes up, {down} bytes down"),
                Err(e) => format!("cut: {e}"),
            }
        }
        (Err(e), _) => format!("the caller's upgrade failed: {e}"),
        (_, Err(e)) => format!("the leader's upgrade failed: {e}"),
    };
    drop(driver);
    tracing::info!(router = %me, reason = %why, "forwarded console session ended");
}

/// The task driving one connection to the leader: aborted when dropped, so a caller
/// that goes away mid-stream closes the connection to the leader too.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The leader's answer as it began: its head and its body still to come.
struct Answer {
    resp: hyper::Response<Incoming>,
    driver: Driver,
}

/// The leader's answer body, relayed as it comes, keeping its connection alive.
struct Relayed {
    body: Incoming,
    _driver: Driver,
}

impl hyper::body::Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
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
}

async fn send(
    to: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<Answer, String> {
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

async fn exchange<I>(io: I, req: hyper::Request<Full<Bytes>>) -> Result<Answer, SendError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(SendError::Http)?;
    // The connection's driver: one request per connection, so it ends with the
    // answer's body, or hands the connection over to an upgrade.
    let driver = Driver(tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    }));
    let resp = sender.send_request(req).await.map_err(SendError::Http)?;
    Ok(Answer { resp, driver })
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TOKEN: &[u8] = b"forward-test-admin-token";
    /// Generous on a loaded machine.
    const WAIT: Duration = Duration::from_secs(20);

    /// Reads from `s` until `buf` contains `needle`.
    async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &str) {
        let found = |b: &[u8]| String::from_utf8_lossy(b).contains(needle);
        tokio::time::timeout(WAIT, async {
            while !found(buf) {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(
                    n > 0,
                    "closed before {needle:?}: {}",
                    String::from_utf8_lossy(buf)
                );
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} within {WAIT:?}"));
    }

    /// A leader stand-in speaking raw HTTP/1.1: an upgrade request gets a 101 and its
    /// bytes echoed; any other request a chunked body whose first chunk comes at once
    /// and whose end never does. Each connection's request head and, once it closes,
    /// "closed", go to the returned channel.
    async fn fake_leader() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    read_until(&mut s, &mut head, "\r\n\r\n").await;
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let _ = tx.send(head.clone());
                    if head.contains("upgrade: wisp-console") {
                        s.write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\
                              Upgrade: wisp-console\r\nx-wisp-host: h9\r\n\r\n",
                        )
                        .await
                        .unwrap();
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    } else {
                        s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                              transfer-encoding: chunked\r\n\r\n7\r\nfirst\n\n\r\n",
                        )
                        .await
                        .unwrap();
                        // The body never ends: wait for the other side to close.
                        let mut rest = [0u8; 64];
                        while s.read(&mut rest).await.is_ok_and(|n| n > 0) {}
                    }
                    let _ = tx.send("closed".into());
                });
            }
        });
        (addr, rx)
    }

    /// A follower's API (guard with one admin token, then the forward) on loopback,
    /// with `leader` as the known leader.
    async fn follower(leader: &str) -> (String, tokio::sync::watch::Sender<bool>) {
        let known = Known::new("rf");
        known.set(Some(super::super::leader::LeaderInfo::from(leader)));
        let app = axum::Router::new().fallback(forward).with_state(Ctx {
            known,
            upstream: Arc::new(Upstream::new(None, None)),
        });
        let guard = crate::api::auth::Guard::new(vec![(
            TokenRole::Admin,
            Secret::from_bytes(TOKEN.to_vec()),
        )]);
        let app = crate::api::auth::secure(app, guard);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(crate::api::server::serve(
            crate::api::ApiListener::Tcp {
                listener: l,
                tls: None,
            },
            app,
            rx,
        ));
        (addr, stop)
    }

    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the leader stand-in to say something")
            .unwrap()
    }

    #[tokio::test]
    async fn a_console_upgrade_is_relayed_both_ways_and_closes_with_its_caller() {
        let (leader, mut seen) = fake_leader().await;
        let (api, _stop) = follower(&leader).await;
        let mut c = TcpStream::connect(&api).await.unwrap();
        let token = String::from_utf8_lossy(TOKEN);
        c.write_all(
            format!(
                "GET /v1/vms/g1/console/attach HTTP/1.1\r\nHost: rf\r\n\
                 Authorization: Bearer {token}\r\nConnection: upgrade\r\n\
                 Upgrade: wisp-console\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        read_until(&mut c, &mut buf, "\r\n\r\n").await;
        let head = String::from_utf8_lossy(&buf).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains("upgrade: wisp-console") && head.contains("x-wisp-host: h9"),
            "{head}"
        );
        let asked = next(&mut seen).await;
        assert!(
            asked.starts_with("get /v1/vms/g1/console/attach")
                && asked.contains("x-wisp-forwarded-by: rf")
                && asked.contains("connection: upgrade"),
            "{asked}"
        );
        // Bytes both ways, after the switch.
        let mut echoed = Vec::new();
        c.write_all(b"typed into the console\n").await.unwrap();
        read_until(&mut c, &mut echoed, "typed into the console").await;
        c.write_all(b"and again\n").await.unwrap();
        read_until(&mut c, &mut echoed, "and again").await;
        // The caller goes: the follower's connection to the leader closes too.
        drop(c);
        assert_eq!(next(&mut seen).await, "closed");
    }

    #[tokio::test]
    async fn a_stream_is_relayed_as_it_comes_and_closes_with_its_caller() {
        let (leader, mut seen) = fake_leader().await;
        let (api, _stop) = follower(&leader).await;
        let mut c = TcpStream::connect(&api).await.unwrap();
        let token = String::from_utf8_lossy(TOKEN);
        c.write_all(
            format!("GET /ui/stream HTTP/1.1\r\nHost: rf\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        // The leader's answer has not ended (and never will): its first part arrives.
        let mut buf = Vec::new();
        read_until(&mut c, &mut buf, "first\n\n").await;
        let head = String::from_utf8_lossy(&buf).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(next(&mut seen).await.starts_with("get /ui/stream"));
        drop(c);
        assert_eq!(next(&mut seen).await, "closed");
    }

    #[tokio::test]
    async fn a_followers_read_token_cannot_open_a_console() {
        let r = Secret::from_bytes(b"r".to_vec());
        let read_only = Upstream::new(None, Some(r));
        let mut h = axum::http::HeaderMap::new();
        assert!(read_only
            .token_for(crate::api::auth::is_write(&Method::GET, &h))
            .is_some());
        h.insert(header::UPGRADE, HeaderValue::from_static("wisp-console"));
        assert!(read_only
            .token_for(crate::api::auth::is_write(&Method::GET, &h))
            .is_none());
    }

    #[test]
    fn a_local_caller_is_forwarded_with_an_admin_token_else_a_read_one_for_reads() {
        let a = Secret::from_bytes(b"a".to_vec());
        let r = Secret::from_bytes(b"r".to_vec());
        let both = Upstream::new(Some(a.clone()), Some(r.clone()));
        assert_eq!(both.token_for(true), Some(&a));
        assert_eq!(both.token_for(false), Some(&a));
        let read_only = Upstream::new(None, Some(r.clone()));
        assert_eq!(read_only.token_for(false), Some(&r));
        assert_eq!(read_only.token_for(true), None);
        assert!(!format!("{both:?}").contains('"'), "no token in Debug");
    }
}
