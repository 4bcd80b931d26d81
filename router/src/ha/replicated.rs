//! A replicated router (`[ha]` in router.toml, or `[cluster]`): several routers share
//! their state in etcd and one of them leads. The leader runs everything a single
//! router runs (the cluster task, the genie link, the fence and VM reconcilers, power
//! and energy, the API) on an [`EtcdStore`] whose every write is conditional on its
//! leadership, and every action outside etcd passes the fence check first
//! ([`super::gate`]). A follower serves the same API (TCP and the local socket, the
//! same guard and limits), forwards what passes to the leader, and turns genies away
//! naming the leader ([`super::follower`]). When the leader loses its lease (it
//! steps down on its own clock before etcd could elect another), its term ends and
//! every part of it stops; when a follower wins, it loads the state from etcd and
//! starts a term of its own.
//!
//! Genies that list etcd keep a liveness lease there; the leader's fence takes its
//! expiry (plus `lease_margin_ms`) as proof that a silent host without a BMC answer
//! runs nothing ([`super::liveness`]).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::follower::{self, FollowerApi, Known, Listeners};
use super::forward::{Upstream, UpstreamError};
use super::gate::Gate;
use super::leader::{Elector, ElectorConfig, LeaderError};
use super::liveness::GenieLiveness;
use crate::config::{HaConfig, RouterConfig};
use crate::daemon::{run_term, DaemonError, Term};
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
    #[error("cannot start watching the genies' etcd leases")]
    Liveness(#[source] std::io::Error),
    #[error("how a follower forwards to the leader")]
    Upstream(#[source] UpstreamError),
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
    // Followers forward here; with `[api_tls]` the scheme tells them to speak TLS.
    let advertise = ha
        .advertise_api
        .clone()
        .unwrap_or_else(|| match config.api_tls {
            Some(_) => format!("https://{api_addr}"),
            None => api_addr.to_string(),
        });
    let name = router_name(&ha, link_addr);
    let elector = {
        let mut cfg = ElectorConfig::new(&ha.cluster, &ha.etcd, &advertise);
        cfg.name = Some(name.clone());
        cfg.link = Some(
            ha.advertise_link
                .clone()
                .unwrap_or_else(|| link_addr.to_string()),
        );
        cfg.ttl = Duration::from_millis(ha.ttl_ms);
        tokio::task::spawn_blocking(move || Elector::start(cfg))
            .await
            .expect("elector start does not panic")
            .map_err(|e| DaemonError::Ha(HaError::Elector(e)))?
    };
    // Read once, as a single router reads them at start: a bad token or certificate
    // file stops this router before it serves anything.
    let serving = match follower_api(&config) {
        Ok(s) => s,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || elector.resign()).await;
            return Err(e);
        }
    };
    let mut role = elector.role();
    // Ready as soon as this router serves, whether it leads or follows: systemd's
    // Type=notify start would otherwise time out on every follower. A leader's term
    // notifies again, which systemd ignores.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!(error = %e, "could not notify systemd");
    }
    tokio::spawn(crate::metrics::health::watchdog_following(
        {
            let role = role.clone();
            move || !role.borrow().is_leader()
        },
        shutdown.clone(),
    ));
    let (mut link_l, mut api_l) = (Some(link_listener), Some(api_listener));
    let mut result = Ok(());
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Follower: forward the API, turn genies away, until this router leads.
        let api = api_l
            .take()
            .expect("the API listener is back after each phase");
        let link = link_l
            .take()
            .expect("the link listener is back after each phase");
        // The local socket is bound for each phase, by the follower as by the leader's
        // term, and removed when the phase ends: the CLI reaches whoever holds it.
        let socket = match crate::api::unix::bind(&config.api_socket) {
            Ok(s) => s,
            Err(e) => {
                result = Err(DaemonError::Socket(e));
                break;
            }
        };
        let listeners = Listeners { api, socket, link };
        let (link, leader) = follower::follow(
            listeners,
            &serving,
            Known::new(&name),
            &mut role,
            shutdown.clone(),
        )
        .await;
        let _ = std::fs::remove_file(&config.api_socket);
        link_l = Some(link);
        api_l = Some(rebind(api_addr).await?);
        if *shutdown.borrow() {
            break;
        }
        if !role.borrow().is_leader() {
            continue;
        }
        info!(router = %name, was = %follower::describe(&leader), "leading: loading the state from etcd");
        // Leader: load, then run a term until the lease is lost or shutdown.
        let store = {
            let (endpoints, cluster, fence) =
                (ha.etcd.clone(), ha.cluster.clone(), elector.fence());
            tokio::task::spawn_blocking(move || -> Result<(EtcdStore, _, _), HaError> {
                let client = EtcdClient::new(&endpoints, STORE_REQUEST).map_err(HaError::Etcd)?;
                let store =
                    EtcdStore::new(client.clone(), &cluster, fence).map_err(HaError::Keys)?;
                let persisted = store.load().map_err(HaError::Load)?;
                let liveness = GenieLiveness::spawn(client, &cluster).map_err(HaError::Liveness)?;
                Ok((store, persisted, liveness))
            })
            .await
            .expect("loading does not panic")
        };
        let (store, persisted, liveness) = match store {
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
            Term {
                gate: Gate::fenced(elector.fence()),
                leader_name: Some(name.clone()),
                liveness: Some(liveness.clone()),
            },
            term_rx,
        )
        .await;
        liveness.stop();
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

fn follower_api(config: &RouterConfig) -> Result<FollowerApi, DaemonError> {
    let (guard, tls) = crate::daemon::api_security(config)?;
    let upstream =
        Upstream::from_config(config).map_err(|e| DaemonError::Ha(HaError::Upstream(e)))?;
    Ok(FollowerApi {
        guard,
        tls,
        upstream: std::sync::Arc::new(upstream),
    })
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

/// This router's name: `name` in the config, else the host's name, else its link
/// address.
fn router_name(ha: &HaConfig, link: SocketAddr) -> String {
    ha.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| link.to_string())
    })
}
