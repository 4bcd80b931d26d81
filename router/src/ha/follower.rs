//! A follower of a replicated router: it acts on nothing, but it is not a dead end.
//!
//! - **Its API forwards to the leader.** Every request (method, path and query, body,
//!   `Authorization` and `Content-Type`) is sent to the leader's API as the leader key
//!   names it, and the answer comes back as it is; `GET /v1/status` also says that this
//!   router follows and who leads. With no leader known (an election under way) the
//!   answer is 503 saying so. A request that a follower already forwarded is never
//!   forwarded again (a stale leader key naming another follower cannot make a loop).
//! - **Its genie link turns genies away**, naming the leader's genie link, so that a
//!   genie listing every router finds the leader at once
//!   (`wisp_common::proto::handshake::redirect`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use wisp_common::proto::handshake::{self, LeaderRef};

use super::leader::{LeaderInfo, Role};
use super::status::with_role;

/// Marks a request a follower forwarded.
const FORWARDED: &str = "x-wisp-forwarded-by";

/// The longest a forwarded request may take (long operations run detached on the
/// leader: a client cut off here does not cancel them).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest request body forwarded (the API's bodies are small JSON documents).
const MAX_BODY: usize = 1 << 20;

/// A genie must say Hello within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the follower's tasks share: its own name and the leader as last known.
#[derive(Debug, Clone)]
pub struct Known {
    me: String,
    leader: Arc<Mutex<Option<LeaderInfo>>>,
}

impl Known {
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            leader: Arc::new(Mutex::new(None)),
        }
    }

    pub fn leader(&self) -> Option<LeaderInfo> {
        self.leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, l: Option<LeaderInfo>) {
        *self.leader.lock().unwrap_or_else(PoisonError::into_inner) = l;
    }
}

/// Serves the follower's API and genie link until this router leads or `shutdown`;
/// returns the link listener (the API listener is consumed) and the leader as last
/// known.
pub async fn follow(
    api: TcpListener,
    link: TcpListener,
    known: Known,
    role: &mut watch::Receiver<Role>,
    mut shutdown: watch::Receiver<bool>,
) -> (TcpListener, Option<LeaderInfo>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(known.clone());
    let server = {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(api, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        })
    };
    let turner = tokio::spawn(turn_genies_away(link, known.clone(), stop_rx));
    loop {
        if let Role::Follower { leader } = &*role.borrow() {
            known.set(leader.clone());
        }
        if role.borrow().is_leader() || *shutdown.borrow() {
            break;
        }
        tokio::select! {
            r = role.changed() => if r.is_err() { break },
            _ = shutdown.changed() => {}
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    let link = turner.await.expect("the genie turner does not panic");
    (link, known.leader())
}

/// Answers every genie's Hello with `NotLeader`; hands the listener back when stopped.
async fn turn_genies_away(
    listener: TcpListener,
    known: Known,
    mut stop: watch::Receiver<bool>,
) -> TcpListener {
    loop {
        tokio::select! {
            _ = stop.changed() => return listener,
            accepted = listener.accept() => match accepted {
                Ok((mut stream, peer)) => {
                    let leader = known.leader().and_then(|l| {
                        Some(LeaderRef { name: l.display_name().to_owned(), link: l.link? })
                    });
                    let me = known.me.clone();
                    tokio::spawn(async move {
                        let r = tokio::time::timeout(
                            HELLO_TIMEOUT,
                            handshake::redirect(&mut stream, peer, &me, leader.clone()),
                        )
                        .await;
                        match r {
                            Ok(Ok(host)) => info!(%host, %peer, leader = ?leader.map(|l| l.name),
                                "genie turned away: this router does not lead"),
                            Ok(Err(e)) => debug!(error = %e, "genie turned away"),
                            Err(_) => debug!(%peer, "no hello in time"),
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed on the follower's genie link");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The leader's API as a base URL.
fn base_url(api: &str) -> String {
    if api.starts_with("http://") || api.starts_with("https://") {
        api.trim_end_matches('/').to_owned()
    } else {
        format!("http://{api}")
    }
}

async fn forward(State(known): State<Known>, req: Request) -> Response {
    if req.headers().contains_key(FORWARDED) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "router {} does not lead either (a follower forwarded this request here); \
                 an election is probably under way: try again in a few seconds",
                known.me
            ),
        );
    }
    let Some(leader) = known.leader() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "router {} is not the leader, and no leader is known yet (an election is \
                 under way): try again in a few seconds",
                known.me
            ),
        );
    };
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let keep = |h: header::HeaderName| req.headers().get(&h).map(|v| (h, v.clone()));
    let headers: Vec<_> = [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT]
        .into_iter()
        .filter_map(keep)
        .collect();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body not forwarded: {e}"),
            )
        }
    };
    let url = format!("{}{path}", base_url(&leader.api));
    let me = known.me.clone();
    let is_status = method == Method::GET && path == "/v1/status";
    let sent = tokio::task::spawn_blocking(move || send(&url, method, headers, body, &me)).await;
    let (status, content_type, body) = match sent {
        Ok(Ok(x)) => x,
        Ok(Err(reason)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "router {} is not the leader and could not reach the leader {} at {}: {reason}",
                    known.me,
                    leader.display_name(),
                    leader.api
                ),
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let body = if is_status && status.is_success() {
        with_role(&body, "follower", Some(leader.display_name()))
    } else {
        body
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// The forwarded request, on a blocking thread: (status, content type, body).
fn send(
    url: &str,
    method: Method,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    body: Bytes,
    me: &str,
) -> Result<(StatusCode, Option<HeaderValue>, Bytes), String> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(FORWARD_TIMEOUT))
        .proxy(None)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut b = ureq::http::Request::builder()
        .method(method.as_str())
        .uri(url)
        .header(FORWARDED, me);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_bytes());
    }
    let req = b.body(body.to_vec()).map_err(|e| e.to_string())?;
    let mut resp = agent.run(req).map_err(|e| e.to_string())?;
    let status = StatusCode::from_u16(resp.status().as_u16()).map_err(|e| e.to_string())?;
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY as u64 * 16)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok((status, ct, Bytes::from(bytes)))
}

/// The leader's address as a follower shows it in logs.
pub fn describe(l: &Option<LeaderInfo>) -> String {
    match l {
        Some(l) => format!("{} (API {})", l.display_name(), l.api),
        None => "unknown".into(),
    }
}
