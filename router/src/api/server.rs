//! The API's own accept loop, for the Unix socket and for TCP (plain on loopback, TLS
//! elsewhere): each connection is tagged with its [`Peer`] for the auth layer, the
//! number of open connections is capped, a client must send its request headers
//! within [`HEADER_TIMEOUT`] and finish a TLS handshake within [`TLS_TIMEOUT`]. Without
//! these, 1,100 half-sent requests held 1,100 descriptors until the router could
//! register no genie (issue 12).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;
use tracing::{debug, info, warn};

use super::auth::Peer;
use super::ApiError;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use http_body_util::BodyExt;

/// A client gets this long to send a request's headers (and, on a kept-alive
/// connection, the next request's): enough for any real client, short for a loris.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS client gets this long to finish its handshake.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener. The CLI opens one per command and a dashboard a
/// few; far fewer than the 65,536 descriptors the unit allows, so a flood on one
/// listener leaves room for genies and for the other listener.
pub const MAX_CONNECTIONS: usize = 512;
/// Largest request head (and read buffer) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A request's body must arrive whole within this: bodies are small JSON, and a body
/// sent a byte at a time would otherwise hold its connection (and a slot) forever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (axum's own default): the API takes small JSON only.
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// One listener of the API.
pub enum ApiListener {
    Unix(UnixListener),
    Tcp {
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    },
}

impl std::fmt::Debug for ApiListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(l) => f.debug_tuple("Unix").field(l).finish(),
            Self::Tcp { listener, tls } => f
                .debug_struct("Tcp")
                .field("listener", listener)
                .field("tls", &tls.is_some())
                .finish(),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn serve(listener: ApiListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let over_cap = Arc::new(AtomicU64::new(0));
    let mut last_cap_log = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = accept(&listener) => a,
        };
        let (conn, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed on the API");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it at once; say so once a minute at most.
            let n = over_cap.fetch_add(1, Ordering::Relaxed) + 1;
            if last_cap_log.elapsed() >= Duration::from_secs(60) {
                last_cap_log = tokio::time::Instant::now();
                warn!(
                    refused_total = n,
                    limit = MAX_CONNECTIONS,
                    "API connection limit reached; closing new connections"
                );
            }
            continue;
        };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            match conn {
                Conn::Unix(s) => serve_io(s, peer, app, shutdown).await,
                Conn::Tcp(s, None) => serve_io(s, peer, app, shutdown).await,
                Conn::Tcp(s, Some(tls)) => {
                    match tokio::time::timeout(TLS_TIMEOUT, tls.accept(s)).await {
                        Ok(Ok(s)) => serve_io(s, peer, app, shutdown).await,
                        Ok(Err(e)) => debug!(?peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(?peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    info!("API listener stopped");
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream, Option<tokio_rustls::TlsAcceptor>),
}

async fn accept(l: &ApiListener) -> std::io::Result<(Conn, Peer)> {
    match l {
        ApiListener::Unix(l) => {
            let (s, _) = l.accept().await?;
            // SO_PEERCRED: the kernel's record of who connected.
            let cred = s.peer_cred()?;
            let peer = Peer::Local {
                uid: cred.uid(),
                pid: cred.pid(),
            };
            Ok((Conn::Unix(s), peer))
        }
        ApiListener::Tcp { listener, tls } => {
            let (s, addr) = listener.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Conn::Tcp(s, tls.clone()), Peer::Tcp(addr)))
        }
    }
}

/// How long a connection may finish its response once the shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn serve_io<I>(io: I, peer: Peer, app: Router, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        async move {
            // The body is read here, whole and in bounded time, before any route runs;
            // the route itself may then take as long as its operation needs.
            let (parts, body) = req.into_parts();
            let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
            let bytes = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => {
                    let too_large = e
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some();
                    return Ok(if too_large {
                        refuse(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request body above {MAX_BODY_BYTES} bytes"),
                        )
                    } else {
                        refuse(StatusCode::BAD_REQUEST, format!("request body: {e}"))
                    });
                }
                Err(_) => {
                    return Ok(refuse(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("request body not received within {BODY_TIMEOUT:?}"),
                    ))
                }
            };
            let mut req = hyper::Request::from_parts(parts, axum::body::Body::from(bytes));
            req.extensions_mut().insert(peer);
            app.oneshot(req).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    // Upgrades: the interactive console turns its request into a raw byte stream.
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { debug!(?peer, error = %e, "API connection ended") },
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(SHUTDOWN_GRACE, conn).await.is_err() {
                // Said, so that a response that holds a shutdown (a stream that does
                // not end) shows in the log rather than as a slow stop.
                warn!(?peer, "an API connection was still busy {SHUTDOWN_GRACE:?} after the shutdown began; closed");
            }
        }
    }
}

fn refuse(status: StatusCode, message: String) -> axum::response::Response {
    ApiError::new(status, message).into_response()
}
