//! `router power on|off|soft|cycle|reset HOST`: one Chassis Control request, then
//! verification by asking the BMC again until it reports the expected power state.
//! A hard `off` also waits for the host's genie link to drop, so the host is recorded
//! `Down` (proven off) by the shared rule in `mark.rs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wisp_bmc::{Bmc, PowerAction, PowerState};
use wisp_common::error::chain;
use wisp_common::wait::until;
use wisp_common::HostId;

use super::commands::{GenieSession, RecordPowerAction};
use super::status::{known, poll_power};
use super::wait::{ms, POLL};
use super::{PowerError, PowerPlane};
use crate::api::types::ActionReport;
use crate::cluster::ClusterHandle;
use crate::events::EventKind;
use crate::model::host::HostStatus;

/// The power state an action should end in.
fn expected(action: PowerAction) -> PowerState {
    match action {
        PowerAction::Off | PowerAction::Soft => PowerState::Off,
        PowerAction::On | PowerAction::Cycle | PowerAction::Reset => PowerState::On,
    }
}

pub(crate) fn bmc_of(
    cluster: &ClusterHandle,
    power: &PowerPlane,
    host: &HostId,
) -> Result<Arc<dyn Bmc>, PowerError> {
    if !cluster.inventory().contains(host) {
        return Err(PowerError::UnknownHost {
            host: host.to_string(),
        });
    }
    power
        .bmc(host)
        .ok_or_else(|| PowerError::NoBmc { host: host.clone() })
}

/// Sends `action` to `host`'s BMC and verifies it within `verify`. A hard or soft
/// off that the BMC does not confirm in time is an error (`NotConfirmed`): the caller
/// must not believe the host is off.
pub async fn power_action(
    cluster: &ClusterHandle,
    power: &PowerPlane,
    host: &HostId,
    action: PowerAction,
    verify: Duration,
) -> Result<ActionReport, PowerError> {
    let bmc = bmc_of(cluster, power, host)?;
    let addr = bmc.address().to_string();
    let start = Instant::now();
    if let Err(source) = bmc.power(action).await {
        let e = PowerError::Bmc {
            host: host.clone(),
            action: action_name(action),
            source,
        };
        return fail(cluster, host, e).await;
    }
    let accepted = start.elapsed();
    let want = expected(action);
    let deadline = Instant::now() + verify;
    let confirmed = poll_power(&bmc, host, deadline, |p| p == want).await;
    let verified_after = start.elapsed();
    let seen = match confirmed {
        Ok(p) => p,
        Err(last) => {
            let e = PowerError::NotConfirmed {
                host: host.clone(),
                bmc: addr.clone(),
                action,
                seen: last
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "nothing".into()),
                after: verify,
            };
            return fail(cluster, host, e).await;
        }
    };
    // After an off, the genie's link drops as its processes die: wait for that (up to
    // the rest of the deadline) so the host is recorded as proven down.
    let mut link_note = String::new();
    if seen == PowerState::Off {
        let gone = until(
            deadline.max(Instant::now() + POLL * 10),
            POLL,
            format!("the genie link of {host} to close"),
            || async {
                let session = cluster.run(GenieSession { host: host.clone() }).await;
                // Known host, no genie connected.
                matches!(session, Some(Some(None))).then_some(())
            },
        )
        .await;
        if gone.is_err() {
            link_note = "; its genie link is still open".into();
        }
    }
    let source = format!("BMC {addr}, after power {action}");
    let took = start.elapsed();
    let message = format!(
        "Chassis Power Control: {} -- verified: BMC {addr} reports power {seen} after {} ms{link_note}",
        control_word(action),
        ms(verified_after)
    );
    let state = cluster
        .run(RecordPowerAction {
            host: host.clone(),
            power: known(seen),
            source,
            message: format!("host {host}: power {action}: {message}"),
        })
        .await
        .ok_or(PowerError::Shutdown)?
        .unwrap_or(HostStatus::Unreachable);
    Ok(ActionReport {
        host: host.clone(),
        action: action.into(),
        bmc: addr,
        power: known(seen),
        state,
        verified: true,
        accepted_ms: ms(accepted),
        elapsed_ms: ms(took),
        message,
    })
}

/// Records `e` as an `Error` event on `host`, then returns it.
async fn fail<T>(cluster: &ClusterHandle, host: &HostId, e: PowerError) -> Result<T, PowerError> {
    cluster
        .record(EventKind::Error, Some(host.clone()), None, chain(&e))
        .await;
    Err(e)
}

fn action_name(a: PowerAction) -> &'static str {
    match a {
        PowerAction::On => "on",
        PowerAction::Off => "off",
        PowerAction::Soft => "soft",
        PowerAction::Cycle => "cycle",
        PowerAction::Reset => "reset",
    }
}

/// ipmitool's words for each action.
fn control_word(a: PowerAction) -> &'static str {
    match a {
        PowerAction::On => "Up/On",
        PowerAction::Off => "Down/Off",
        PowerAction::Soft => "Soft",
        PowerAction::Cycle => "Cycle",
        PowerAction::Reset => "Reset",
    }
}
