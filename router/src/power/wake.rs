//! `router wake HOST`: Wake-on-LAN, verified by the host's genie registering; IPMI
//! power-on as the fallback when it has not registered within the deadline. The
//! energy-saving reconciler calls [`wake`] too.
//!
//! The host is `Waking` while we wait (a state `tick()` keeps until the genie reports),
//! and `Up` with its `standby` flag cleared once the genie registers. A host that
//! registers after neither path is marked (status `Down` if the BMC says off, else
//! `Unreachable`), an `error` event is recorded and the caller gets `WakeFailed`.

use std::time::Duration;

use tokio::time::Instant;
use wisp_bmc::PowerAction;
use wisp_common::error::chain;
use wisp_common::wait::until;
use wisp_common::HostId;

use super::commands::{GenieSession, RecordWake, RecordWakeFailure, RegisteredSince, StartWake};
use super::status::query;
use super::wait::{ms, POLL};
use super::{PowerError, PowerPlane};
/// The method is the API's word and the energy executor's alike.
pub use crate::api::types::WakeMethod;
use crate::api::types::WakeOutcome;
use crate::cluster::ClusterHandle;
use crate::events::EventKind;

/// The genie session a host has now (to tell a new registration from an old link).
async fn session_now(cluster: &ClusterHandle, host: &HostId) -> Result<Option<u64>, PowerError> {
    cluster
        .run(GenieSession { host: host.clone() })
        .await
        .ok_or(PowerError::Shutdown)?
        .ok_or_else(|| PowerError::UnknownHost {
            host: host.to_string(),
        })
}

/// Waits until `host` is `Up` on a genie session other than `old`.
async fn registered(
    cluster: &ClusterHandle,
    host: &HostId,
    old: Option<u64>,
    deadline: Instant,
) -> bool {
    until(
        deadline,
        POLL,
        format!("the genie of {host} to register"),
        || async {
            let up = cluster
                .run(RegisteredSince {
                    host: host.clone(),
                    old,
                })
                .await;
            up.filter(|up| *up)
        },
    )
    .await
    .is_ok()
}

/// Wakes `host` and verifies it by its genie registering within `deadline` per path.
pub async fn wake(
    cluster: &ClusterHandle,
    power: &PowerPlane,
    host: &HostId,
    deadline: Duration,
) -> Result<WakeOutcome, PowerError> {
    let start = Instant::now();
    let old = session_now(cluster, host).await?;
    let already_up = cluster
        .run(StartWake { host: host.clone() })
        .await
        .ok_or(PowerError::Shutdown)?
        .unwrap_or(false);
    if already_up {
        return Ok(WakeOutcome {
            host: host.clone(),
            method: WakeMethod::AlreadyUp,
            wol_packets: 0,
            wol_error: None,
            fallback: false,
            registered_ms: 0,
            message: format!("host {host} is already up (its genie is connected): nothing sent"),
        });
    }
    let bmc = power.bmc(host);
    let (waker, mac) = (power.waker(), power.mac(host));
    if bmc.is_none() && (waker.is_none() || mac.is_none()) {
        return Err(PowerError::NoWakePath { host: host.clone() });
    }

    // 1. Wake-on-LAN.
    let mut wol_packets = 0;
    let mut wol_error = None;
    match (&waker, mac) {
        (Some(w), Some(mac)) => match w.wake(mac).await {
            Ok(r) => wol_packets = r.raw_frames + r.udp_packets,
            Err(e) => wol_error = Some(chain(&e)),
        },
        _ => wol_error = Some("no wol_interface configured".into()),
    }
    cluster
        .record(
            EventKind::Wake,
            Some(host.clone()),
            None,
            match &wol_error {
                None => format!("host {host}: magic packets sent ({wol_packets}); waiting up to {} ms for its genie", ms(deadline)),
                Some(e) => format!("host {host}: Wake-on-LAN not sent ({e})"),
            },
        )
        .await;
    if wol_error.is_none() && registered(cluster, host, old, start + deadline).await {
        return finish(
            cluster,
            host,
            WakeMethod::Wol,
            wol_packets,
            wol_error,
            start,
        )
        .await;
    }

    // 2. IPMI power-on.
    let tried_wol = match &wol_error {
        None => format!(
            "Wake-on-LAN ({wol_packets} packets, no registration within {} ms)",
            ms(deadline)
        ),
        Some(e) => format!("Wake-on-LAN not sent ({e})"),
    };
    let Some(bmc) = bmc else {
        return fail(
            cluster,
            host,
            None,
            tried_wol + "; no BMC for a fallback",
            start,
        )
        .await;
    };
    cluster
        .record(
            EventKind::Wake,
            Some(host.clone()),
            None,
            format!("host {host}: {tried_wol}; falling back to IPMI power-on"),
        )
        .await;
    let fallback_start = Instant::now();
    if let Err(source) = bmc.power(PowerAction::On).await {
        let e = PowerError::Bmc {
            host: host.clone(),
            action: "on",
            source,
        };
        let tried = format!("{tried_wol}; IPMI power-on failed: {}", chain(&e));
        return fail(cluster, host, Some(&bmc), tried, start).await;
    }
    if registered(cluster, host, old, fallback_start + deadline).await {
        return finish(
            cluster,
            host,
            WakeMethod::Ipmi,
            wol_packets,
            wol_error,
            start,
        )
        .await;
    }
    let tried = format!(
        "{tried_wol}; IPMI power-on accepted by {} but no registration within {} ms",
        bmc.address(),
        ms(deadline)
    );
    fail(cluster, host, Some(&bmc), tried, start).await
}

async fn finish(
    cluster: &ClusterHandle,
    host: &HostId,
    method: WakeMethod,
    wol_packets: u32,
    wol_error: Option<String>,
    start: Instant,
) -> Result<WakeOutcome, PowerError> {
    let took = start.elapsed();
    let fallback = method == WakeMethod::Ipmi;
    let message = match method {
        WakeMethod::Ipmi => format!(
            "host {host} woke by IPMI power-on (fallback after {}): genie registered after {} ms",
            wol_error
                .as_deref()
                .map(|e| format!("Wake-on-LAN failed: {e}"))
                .unwrap_or_else(|| "Wake-on-LAN did not bring it up".into()),
            ms(took)
        ),
        _ => format!(
            "host {host} woke by Wake-on-LAN: genie registered after {} ms",
            ms(took)
        ),
    };
    cluster
        .run(RecordWake {
            host: host.clone(),
            message: message.clone(),
        })
        .await
        .ok_or(PowerError::Shutdown)?
        .map_err(PowerError::Store)?;
    Ok(WakeOutcome {
        host: host.clone(),
        method,
        wol_packets,
        wol_error,
        fallback,
        registered_ms: ms(took),
        message,
    })
}

async fn fail(
    cluster: &ClusterHandle,
    host: &HostId,
    bmc: Option<&std::sync::Arc<dyn wisp_bmc::Bmc>>,
    tried: String,
    start: Instant,
) -> Result<WakeOutcome, PowerError> {
    let seen = match bmc {
        Some(b) => query(b, host).await.ok(),
        None => None,
    };
    let after = start.elapsed();
    cluster
        .run(RecordWakeFailure {
            host: host.clone(),
            seen,
            message: format!("host {host} failed to wake after {} ms: {tried}", ms(after)),
        })
        .await
        .ok_or(PowerError::Shutdown)?;
    Err(PowerError::WakeFailed {
        host: host.clone(),
        tried,
        after,
    })
}
