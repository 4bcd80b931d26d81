//! `router power status [HOST]`: ask BMCs for chassis power, all hosts in parallel,
//! and record what they said in the cluster model.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use wisp_bmc::{Bmc, PowerState};
use wisp_common::HostId;

use super::wait::ms;
use super::{PowerError, PowerPlane};
use crate::api::types::PowerStatusRow;
use crate::cluster::state::{HostStatus, PowerKnown};
use crate::cluster::ClusterHandle;
use crate::vms::chain;

pub(crate) fn known(p: PowerState) -> PowerKnown {
    match p {
        PowerState::On => PowerKnown::On,
        PowerState::Off => PowerKnown::Off,
    }
}

/// Asks one BMC.
pub async fn query(bmc: &Arc<dyn Bmc>, host: &HostId) -> Result<PowerState, PowerError> {
    bmc.power_status().await.map_err(|source| PowerError::Bmc {
        host: host.clone(),
        action: "status",
        source,
    })
}

/// Chassis power of `hosts` (every configured host when `None`), asked in parallel:
/// a BMC that does not answer costs its own timeout, not everyone's.
pub async fn status(
    cluster: &ClusterHandle,
    power: &PowerPlane,
    hosts: Option<Vec<HostId>>,
) -> Result<Vec<PowerStatusRow>, PowerError> {
    let inventory = cluster.inventory();
    let mut hosts = match hosts {
        Some(hs) => {
            for h in &hs {
                if !inventory.contains(h) {
                    return Err(PowerError::UnknownHost {
                        host: h.to_string(),
                    });
                }
            }
            hs
        }
        None => inventory.iter().cloned().collect(),
    };
    hosts.sort();
    let mut set = JoinSet::new();
    for (i, host) in hosts.iter().enumerate() {
        let bmc = power.bmc(host);
        let host = host.clone();
        set.spawn(async move {
            let start = Instant::now();
            let answer = match &bmc {
                Some(b) => Some(query(b, &host).await),
                None => None,
            };
            (
                i,
                host,
                bmc.map(|b| b.address().to_string()),
                answer,
                start.elapsed(),
            )
        });
    }
    let mut answers = Vec::with_capacity(hosts.len());
    while let Some(r) = set.join_next().await {
        // A panicking BMC client is a bug in wisp-bmc; the row is then missing
        // and the caller sees fewer rows, not a hung command.
        if let Ok(a) = r {
            answers.push(a);
        }
    }
    answers.sort_by_key(|a| a.0);
    cluster
        .with(move |m| {
            answers
                .into_iter()
                .map(|(_, host, bmc, answer, took)| {
                    let (power, error) = match answer {
                        Some(Ok(p)) => (known(p), None),
                        Some(Err(e)) => (PowerKnown::Unknown, Some(chain(&e))),
                        None => (
                            PowerKnown::Unknown,
                            Some(PowerError::NoBmc { host: host.clone() }.to_string()),
                        ),
                    };
                    let state = if power == PowerKnown::Unknown {
                        m.cluster.hosts.get(&host).map(|h| h.status())
                    } else {
                        let src = format!("BMC {}", bmc.as_deref().unwrap_or("?"));
                        m.mark_power(&host, power, &src)
                    };
                    PowerStatusRow {
                        state: state.unwrap_or(HostStatus::Unreachable),
                        host,
                        bmc,
                        power,
                        error,
                        elapsed_ms: ms(took),
                    }
                })
                .collect()
        })
        .await
        .ok_or(PowerError::Shutdown)
}

/// Asks `bmc` until its answer satisfies `ok` or `deadline` passes. Returns the
/// accepted answer, or `Err` with the last answer seen (BMC hiccups in between are
/// retried: one lost reply must not fail a verification).
pub async fn poll_power(
    bmc: &Arc<dyn Bmc>,
    host: &HostId,
    deadline: Instant,
    ok: impl Fn(PowerState) -> bool,
) -> Result<PowerState, Option<PowerState>> {
    let mut last = None;
    loop {
        if let Ok(p) = query(bmc, host).await {
            if ok(p) {
                return Ok(p);
            }
            last = Some(p);
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(
            super::wait::POLL.min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}
