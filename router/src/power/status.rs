//! `router power status [HOST]`: ask BMCs for chassis power, all hosts in parallel,
//! and record what they said in the cluster model.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use wisp_bmc::{Bmc, PowerState};
use wisp_common::wait::until;
use wisp_common::HostId;

use super::commands::RecordPowerStatus;
use super::wait::POLL;
use super::{PowerError, PowerPlane};
use crate::api::types::PowerStatusRow;
use crate::cluster::ClusterHandle;
use crate::model::host::PowerKnown;

/// What one BMC said (or why it was not asked), and how long asking took.
pub(crate) struct BmcAnswer {
    pub host: HostId,
    /// The BMC address asked (`None`: no BMC configured).
    pub bmc: Option<String>,
    /// `None` when there was no BMC to ask.
    pub answer: Option<Result<PowerState, PowerError>>,
    pub took: Duration,
}

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
                BmcAnswer {
                    host,
                    bmc: bmc.map(|b| b.address().to_string()),
                    answer,
                    took: start.elapsed(),
                },
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
    let answers = answers.into_iter().map(|(_, a)| a).collect();
    cluster
        .run(RecordPowerStatus { answers })
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
    // The last answer seen, for the caller's error; BMC errors leave it as it was.
    let last = Mutex::new(None);
    let accepted = until(
        deadline,
        POLL,
        format!("BMC of {host} to confirm"),
        || async {
            let p = query(bmc, host).await.ok()?;
            if ok(p) {
                return Some(p);
            }
            if let Ok(mut l) = last.lock() {
                *l = Some(p);
            }
            None
        },
    )
    .await;
    accepted.map_err(|_| last.into_inner().ok().flatten())
}
