//! Liveness: `GET /health` answers 200 with a small JSON while the cluster task takes
//! commands, 503 when it does not answer within [`PING_TIMEOUT`]; the systemd watchdog
//! is fed by the same check, so a wedged router is restarted by systemd.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use tokio::sync::watch;
use tracing::warn;

use super::commands::Ping;
use super::MetricsState;
use crate::cluster::ClusterHandle;

/// The cluster task answers within 100 ms unless a command holds it (logged above
/// 100 ms); seconds of silence mean it is stuck.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_s: u64,
    /// How long the cluster task took to answer.
    pub answer_ms: u64,
}

/// True when the cluster task answered a no-op within [`PING_TIMEOUT`].
pub async fn alive(c: &ClusterHandle) -> Option<Duration> {
    let t0 = tokio::time::Instant::now();
    match tokio::time::timeout(PING_TIMEOUT, c.run(Ping)).await {
        Ok(Some(())) => Some(t0.elapsed()),
        _ => None,
    }
}

pub async fn health(State(s): State<MetricsState>) -> (StatusCode, Json<Health>) {
    let snap = s.cluster.snapshot();
    let uptime_s = snap
        .taken_at
        .saturating_duration_since(snap.router_started)
        .as_secs();
    let version = env!("CARGO_PKG_VERSION");
    match alive(&s.cluster).await {
        Some(d) => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                version,
                uptime_s,
                answer_ms: d.as_millis() as u64,
            }),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "cluster task not answering",
                version,
                uptime_s,
                answer_ms: PING_TIMEOUT.as_millis() as u64,
            }),
        ),
    }
}

/// Pings systemd's watchdog (`WatchdogSec=` in the unit) at half its period while the
/// cluster task answers; skips the ping when it does not, so systemd restarts a
/// wedged router. Does nothing when not run under a watchdog.
pub async fn watchdog(c: ClusterHandle, shutdown: watch::Receiver<bool>) {
    feed_watchdog(
        || async {
            let ok = alive(&c).await.is_some();
            if !ok {
                warn!("cluster task not answering: withholding the systemd watchdog ping");
            }
            ok
        },
        shutdown,
    )
    .await
}

/// The watchdog of a replicated router while it follows: no cluster task runs then
/// (the leader's term pings through [`watchdog`] while it leads), so the ping goes
/// out whenever `following()` says this router follows. Without it systemd would
/// restart every follower after `WatchdogSec`.
pub async fn watchdog_following(
    following: impl Fn() -> bool + Send + 'static,
    shutdown: watch::Receiver<bool>,
) {
    feed_watchdog(|| std::future::ready(following()), shutdown).await
}

/// Every half watchdog period until `shutdown`: a ping when `ping_now()` says so.
/// Returns at once when systemd set no watchdog.
async fn feed_watchdog<F, Fut>(mut ping_now: F, mut shutdown: watch::Receiver<bool>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) else {
        return;
    };
    loop {
        if ping_now().await {
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                warn!(error = %e, "could not ping the systemd watchdog");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(timeout / 2) => {}
            _ = shutdown.changed() => return,
        }
    }
}
