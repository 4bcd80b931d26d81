//! A follower of a replicated router: it acts on nothing, but it is not a dead end.
//!
//! - **Its API is the leader's, forwarded.** It listens where a leader would (the TCP
//!   API, with TLS when `[api_tls]` is set, and the local Unix socket `api_socket`),
//!   through the same hardened server (`api::server`: connection cap, header, body and
//!   TLS timeouts) and behind the same token guard (`api::auth`) as the leader, so a
//!   bad token is refused here before anything is forwarded, and the CLI on a
//!   follower's own socket just works. What passes goes to the leader
//!   ([`super::forward`]); `GET /v1/status` also says that this router follows and
//!   who leads. With no leader known (an election under way) the answer is 503 saying
//!   so.
//! - **Its genie link turns genies away**, naming the leader's genie link, so that a
//!   genie listing every router finds the leader at once
//!   (`wisp_common::proto::handshake::redirect`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use wisp_common::proto::handshake::{self, LeaderRef};

use super::forward::{self, Ctx, Upstream};
use super::leader::{LeaderInfo, Role};
use crate::api::auth::{self, Guard};
use crate::api::{self, ApiListener};

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

    /// This router's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn leader(&self) -> Option<LeaderInfo> {
        self.leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set(&self, l: Option<LeaderInfo>) {
        *self.leader.lock().unwrap_or_else(PoisonError::into_inner) = l;
    }
}

/// How a follower's API is served, made once from router.toml: the leader's guard
/// and TLS, and what it presents to the leader.
#[derive(Clone)]
pub struct FollowerApi {
    pub guard: Guard,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub upstream: Arc<Upstream>,
}

impl std::fmt::Debug for FollowerApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowerApi")
            .field("guard", &self.guard)
            .field("tls", &self.tls.is_some())
            .field("upstream", &self.upstream)
            .finish()
    }
}

/// The follower's listeners for one phase.
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub socket: UnixListener,
    pub link: TcpListener,
}

/// Serves the follower's API (TCP and local socket) and genie link until this router
/// leads or `shutdown`; returns the link listener (the API listeners are consumed)
/// and the leader as last known.
pub async fn follow(
    listeners: Listeners,
    serving: &FollowerApi,
    known: Known,
    role: &mut watch::Receiver<Role>,
    mut shutdown: watch::Receiver<bool>,
) -> (TcpListener, Option<LeaderInfo>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = axum::Router::new()
        .route("/health", axum::routing::get(health))
        .fallback(forward::forward)
        .with_state(Ctx {
            known: known.clone(),
            upstream: serving.upstream.clone(),
        });
    // The guard goes on last, over the one route: as on the leader, nothing passes
    // it unchecked.
    let app = auth::secure(app, serving.guard.clone());
    let tcp = tokio::spawn(api::serve(
        ApiListener::Tcp {
            listener: listeners.api,
            tls: serving.tls.clone(),
        },
        app.clone(),
        stop_rx.clone(),
    ));
    let local = tokio::spawn(api::serve(
        ApiListener::Unix(listeners.socket),
        app,
        stop_rx.clone(),
    ));
    let turner = tokio::spawn(turn_genies_away(listeners.link, known.clone(), stop_rx));
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
    let _ = tcp.await;
    let _ = local.await;
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

/// The leader's address as a follower shows it in logs.
/// `GET /health` on a follower answers for this router itself (a forwarded one
/// would report the leader's health): it serves, and says whom it follows.
async fn health(
    axum::extract::State(ctx): axum::extract::State<forward::Ctx>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "status": "ok",
        "role": "follower",
        "router": ctx.known.me(),
        "leader": ctx.known.leader().map(|l| l.display_name().to_string()),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub fn describe(l: &Option<LeaderInfo>) -> String {
    match l {
        Some(l) => format!("{} (API {})", l.display_name(), l.api),
        None => "unknown".into(),
    }
}
