//! `router serve`: wires the store, the cluster task, the genie link and the API
//! together, tells systemd it is ready, and shuts everything down on SIGTERM/SIGINT.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use wisp_common::secret::{Secret, SecretError};

use crate::api::{self, ApiState};
use crate::cluster;
use crate::config::RouterConfig;
use crate::ha::gate::Gate;
use crate::link::{self, WelcomeParams};
use crate::power::PowerPlane;
use crate::store::{FileStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("router redundancy (etcd)")]
    Ha(#[source] crate::ha::replicated::HaError),
    #[error("cluster secret")]
    Secret(#[source] SecretError),
    #[error("power control")]
    Power(#[source] crate::power::PowerSetupError),
    #[error("state store")]
    Store(#[source] StoreError),
    #[error("API tokens")]
    Tokens(#[source] crate::api::auth::TokenError),
    #[error("API TLS")]
    Tls(#[source] crate::api::tls::TlsError),
    #[error("API socket")]
    Socket(#[source] crate::api::unix::UnixSocketError),
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        addr: std::net::SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` turns true.
pub async fn run(config: RouterConfig, shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    let link_listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: config.listen,
                what: "genie link",
                source,
            })?;
    let api_listener = TcpListener::bind(config.api)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.api,
            what: "API",
            source,
        })?;
    run_on(config, link_listener, api_listener, shutdown).await
}

/// Runs the daemon on listeners bound by the caller (tests bind port 0).
pub async fn run_on(
    config: RouterConfig,
    link_listener: TcpListener,
    api_listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    if config.ha.is_some() {
        return crate::ha::replicated::run(config, link_listener, api_listener, shutdown).await;
    }
    // Opening also brings a state_dir of an older router up to date; the cluster task
    // hands the store to its writer thread.
    let store = FileStore::open(&config.state_dir)
        .map_err(DaemonError::Store)?
        .with_event_limit(config.event_log_max_mib.saturating_mul(1 << 20));
    let persisted = store.load().map_err(DaemonError::Store)?;
    run_term(
        config,
        link_listener,
        api_listener,
        Box::new(store),
        persisted,
        Term::single(),
        shutdown,
    )
    .await
}

/// What sets a replicated router's term apart from a single router's life.
#[derive(Debug, Clone, Default)]
pub struct Term {
    /// Asked right before every action outside the store (IPMI, WoL, genie frames).
    pub gate: Gate,
    /// The leader's name, which its status shows; `None` for a single router.
    pub leader_name: Option<String>,
    /// The genies' etcd leases, the fence's proof without a BMC (replicated routers).
    pub liveness: Option<crate::ha::liveness::GenieLiveness>,
}

impl Term {
    pub fn single() -> Self {
        Self::default()
    }
}

/// Runs every part of the router on `store` until `shutdown` turns true: for a single
/// router its whole life, for a replicated one a term as leader.
pub async fn run_term(
    config: RouterConfig,
    link_listener: TcpListener,
    api_listener: TcpListener,
    store: Box<dyn Store>,
    persisted: crate::store::PersistedState,
    term: Term,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let secret =
        Arc::new(Secret::cluster_from_file(&config.secret_file).map_err(DaemonError::Secret)?);
    let power = PowerPlane::from_config(&config).map_err(DaemonError::Power)?;
    let power = Arc::new(crate::ha::gate::gated_plane(power, &config, &term.gate));
    let (guard, tls) = api_security(&config)?;
    let unix_listener = api::unix::bind(&config.api_socket).map_err(DaemonError::Socket)?;

    let link_listener_addr = link_listener.local_addr().ok();
    let api_addr = api_listener.local_addr().ok();
    let (cluster, cluster_task) = cluster::spawn(&config, store, persisted, shutdown.clone());
    let params = WelcomeParams {
        heartbeat_ms: config.heartbeat_ms,
        metrics_ms: config.metrics_ms,
        lease_ms: config.lease_ms,
        addresses: link::host_addresses(&config),
    };
    let link_task = tokio::spawn(link::serve(
        link_listener,
        secret,
        cluster.clone(),
        params,
        term.gate.clone(),
        shutdown.clone(),
    ));
    let (energy, energy_task) =
        crate::energy::spawn(cluster.clone(), power.clone(), &config, shutdown.clone());
    let drills = tokio::spawn(crate::power::drill::run(
        cluster.clone(),
        power.clone(),
        {
            let e = energy.clone();
            move || e.status().executing
        },
        shutdown.clone(),
    ));
    let mut app = api::app(ApiState {
        cluster: cluster.clone(),
        power: power.clone(),
    })
    .merge(crate::energy::api::routes(cluster.clone(), energy.clone()))
    .merge(crate::web::routes(
        cluster.clone(),
        energy.clone(),
        shutdown.clone(),
    ))
    .merge(crate::metrics::routes(cluster.clone(), Some(energy)));
    if let Some(name) = term.leader_name.clone() {
        app = crate::ha::status::as_leader(app, name);
    }
    // Every route is merged before the guard goes on: it covers exactly those.
    let app = api::auth::secure(app, guard.record_to(cluster.clone()));
    let api_task = tokio::spawn(api::serve(
        api::ApiListener::Tcp {
            listener: api_listener,
            tls,
        },
        app.clone(),
        shutdown.clone(),
    ));
    let unix_task = tokio::spawn(api::serve(
        api::ApiListener::Unix(unix_listener),
        app,
        shutdown.clone(),
    ));
    let fencer = tokio::spawn(crate::ha::fence::run(
        cluster.clone(),
        power.clone(),
        crate::ha::fence::FenceRules {
            genie_grace: std::time::Duration::from_millis(config.genie_grace_ms),
            lease: std::time::Duration::from_millis(config.lease_ms),
            lease_margin: std::time::Duration::from_millis(config.lease_margin_ms),
            liveness: term.liveness.clone(),
        },
        shutdown.clone(),
    ));
    let reconciler = tokio::spawn(crate::vms::reconcile::run(
        cluster.clone(),
        shutdown.clone(),
    ));
    // Telemetry and the systemd watchdog: detached, they end with the shutdown signal.
    tokio::spawn(crate::metrics::sampler::run(
        cluster.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::metrics::health::watchdog(
        cluster.clone(),
        shutdown.clone(),
    ));
    info!(listen = ?link_listener_addr, api = ?api_addr, socket = %config.api_socket.display(), hosts = config.hosts.len(), "router ready");
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!(error = %e, "could not notify systemd");
    }
    let _ = tokio::join!(
        link_task,
        api_task,
        unix_task,
        reconciler,
        fencer,
        energy_task,
        drills,
        cluster_task
    );
    power.shutdown().await;
    // A socket file left behind would only make the next start check it for a live
    // router; remove it while we know it is ours.
    let _ = std::fs::remove_file(&config.api_socket);
    info!("router stopped");
    Ok(())
}

/// The TCP API's guard (its tokens, the dashboard's public pages) and TLS, the same
/// for a single router, a leader and a follower.
pub fn api_security(
    config: &RouterConfig,
) -> Result<(api::auth::Guard, Option<tokio_rustls::TlsAcceptor>), DaemonError> {
    let mut guard =
        api::auth::Guard::from_config(&config.api_tokens).map_err(DaemonError::Tokens)?;
    // The dashboard's pages carry no data; its stream and every call need a token.
    for p in crate::web::PUBLIC_PATHS {
        guard = guard.public(p);
    }
    let tls = config
        .api_tls
        .as_ref()
        .map(api::tls::acceptor)
        .transpose()
        .map_err(DaemonError::Tls)?;
    Ok((guard, tls))
}

/// A shutdown signal fed by SIGTERM (systemd) and SIGINT (Ctrl-C).
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
        let _ = tx.send(true);
    });
    rx
}
