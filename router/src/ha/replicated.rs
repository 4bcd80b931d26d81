//! A replicated router (`[ha]` in router.toml): several routers share their state in
//! etcd and one of them leads. The leader runs everything a single router runs (the
//! cluster task, the genie link, the fence and VM reconcilers, power and energy, the
//! API) on an [`EtcdStore`] whose every write is conditional on its leadership; a
//! follower runs only an API that answers 503 naming the leader's API, and accepts no
//! genie. When the leader loses its lease (it steps down on its own clock before etcd
//! could elect another), its term ends and every part of it stops; when a follower
//! wins, it loads the state from etcd and starts a term of its own.
//!
//! Not done yet (issue 10): genies that know every router (today a genie names one
//! router; it must be the leader's address or a virtual IP that follows it), followers
//! forwarding requests instead of refusing them, and the genies' liveness lease in
//! etcd.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::leader::{Elector, ElectorConfig, LeaderError, Role};
use crate::config::RouterConfig;
use crate::daemon::{run_term, DaemonError};
use crate::store::etcd::client::{EtcdClient, EtcdError};
use crate::store::etcd::{EtcdStore, KeysError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("cannot start the leader election")]
    Elector(#[source] LeaderError),
    #[error("cannot talk to etcd")]
    Etcd(#[source] EtcdError),
    #[error("bad cluster name")]
    Keys(#[source] KeysError),
    #[error("cannot load the state from etcd")]
    Load(#[source] StoreError),
    #[error("cannot listen on {addr} again after a term")]
    Rebind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Each etcd request of the store gets this long (the elector bounds its own).
const STORE_REQUEST: Duration = Duration::from_millis(500);

/// Runs a replicated router until `shutdown`.
pub async fn run(
    config: RouterConfig,
    link_listener: TcpListener,
    api_listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let ha = config.ha.clone().expect("run only with [ha]");
    let link_addr = listener_addr(&link_listener)?;
    let api_addr = listener_addr(&api_listener)?;
    let advertise = ha
        .advertise_api
        .clone()
        .unwrap_or_else(|| api_addr.to_string());
    let elector = {
        let cfg = ElectorConfig::new(&ha.cluster, &ha.etcd, &advertise);
        tokio::task::spawn_blocking(move || Elector::start(cfg))
            .await
            .expect("elector start does not panic")
            .map_err(|e| DaemonError::Ha(HaError::Elector(e)))?
    };
    let mut role = elector.role();
    let (mut link_l, mut api_l) = (Some(link_listener), Some(api_listener));
    let mut result = Ok(());
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Follower: an API that names the leader, until this router leads.
        let api = api_l
            .take()
            .expect("the API listener is back after each phase");
        let leader_api = follower(api, &mut role, shutdown.clone()).await;
        api_l = Some(rebind(api_addr).await?);
        if *shutdown.borrow() {
            break;
        }
        if !role.borrow().is_leader() {
            continue;
        }
        info!(api = %leader_api.unwrap_or_default(), "leading: loading the state from etcd");
        // Leader: load, then run a term until the lease is lost or shutdown.
        let store = {
            let (endpoints, cluster, fence) =
                (ha.etcd.clone(), ha.cluster.clone(), elector.fence());
            tokio::task::spawn_blocking(move || -> Result<(EtcdStore, _), HaError> {
                let client = EtcdClient::new(&endpoints, STORE_REQUEST).map_err(HaError::Etcd)?;
                let store = EtcdStore::new(client, &cluster, fence).map_err(HaError::Keys)?;
                let persisted = store.load().map_err(HaError::Load)?;
                Ok((store, persisted))
            })
            .await
            .expect("loading does not panic")
        };
        let (store, persisted) = match store {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %wisp_common::error::chain(&e), "cannot start a term; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (term_tx, term_rx) = watch::channel(false);
        let watcher = {
            let (mut role, mut shutdown) = (role.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        r = role.changed() => if r.is_err() || !role.borrow().is_leader() { break },
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                }
                let _ = term_tx.send(true);
            })
        };
        let (link, api) = (
            link_l
                .take()
                .expect("the link listener is back after each term"),
            api_l
                .take()
                .expect("the API listener is back after each phase"),
        );
        let term = run_term(
            config.clone(),
            link,
            api,
            Box::new(store),
            persisted,
            term_rx,
        )
        .await;
        watcher.abort();
        if let Err(e) = term {
            result = Err(e);
            break;
        }
        info!("term over: following again");
        link_l = Some(rebind(link_addr).await?);
        api_l = Some(rebind(api_addr).await?);
    }
    // Resigning lets another router lead at once instead of after the lease.
    let _ = tokio::task::spawn_blocking(move || elector.resign()).await;
    result
}

fn listener_addr(l: &TcpListener) -> Result<SocketAddr, DaemonError> {
    l.local_addr().map_err(|source| DaemonError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        what: "listener address",
        source,
    })
}

async fn rebind(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    // The previous listener is gone; its address may linger a moment.
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(DaemonError::Ha(HaError::Rebind {
        addr,
        source: last.expect("at least one attempt"),
    }))
}

/// Serves the follower's API on `api` until this router leads or shutdown; returns
/// the leader's API address as last known.
async fn follower(
    api: TcpListener,
    role: &mut watch::Receiver<Role>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<String> {
    let leader = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let answer = {
        let leader = leader.clone();
        move || {
            let l = leader.lock().ok().and_then(|l| l.clone());
            async move {
                let msg = match l {
                    Some(a) => format!("this router is not the leader; the leader's API is at {a}"),
                    None => "this router is not the leader, and no leader is known yet".into(),
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({ "error": msg })),
                )
            }
        }
    };
    let app = axum::Router::new().fallback(answer);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = tokio::spawn(async move {
        let _ = axum::serve(api, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.changed().await;
            })
            .await;
    });
    loop {
        if let Role::Follower { leader: l } = &*role.borrow() {
            if let Ok(mut g) = leader.lock() {
                g.clone_from(l);
            }
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
    leader.lock().ok().and_then(|l| l.clone())
}
