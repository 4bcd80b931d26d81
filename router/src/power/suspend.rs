//! `router suspend HOST [--off]`: put a host to sleep on purpose. `Ram` asks its genie
//! to arm Wake-on-LAN and suspend; `SoftOff` asks the BMC for an ACPI soft-off.
//! Refused while VMs run there unless forced. The energy-saving reconciler calls
//! [`suspend`] too.
//!
//! The persisted `standby` flag is set before anything is sent, so the failover code
//! never mistakes the host going quiet for a failure. Suspend is verified as hardware
//! allows: the genie acknowledges just before it suspends, then the host must go
//! silent (no report for `suspect_after_ms`; a frozen host's TCP connection stays
//! open, so a closed link is not required), and where there is a BMC its word is
//! asked: power off is required for `SoftOff` and recorded for `Ram` (many BMCs
//! report S3 as on). The router then closes its end of the link. On a refusal or an
//! unverified suspend the flag is cleared.

use std::time::Duration;

use tokio::time::Instant;
use wisp_bmc::{PowerAction, PowerState};
use wisp_common::error::chain;
use wisp_common::proto::{Command, Outcome};
use wisp_common::wait::until;
use wisp_common::HostId;

use super::actions::bmc_of;
use super::commands::{PrepareSuspend, Prepared, RecordSleep, RecordSuspendFailure, Silent};
use super::status::{known, poll_power};
use super::wait::{ms, POLL};
use super::{PowerError, PowerPlane};
/// The mode is the API's word and `suspend`'s parameter alike.
pub use crate::api::types::SuspendMode;
use crate::api::types::SuspendOutcome;
use crate::cluster::ClusterHandle;
use crate::model::host::PowerKnown;

/// Puts `host` to sleep and verifies it went quiet within `verify`.
pub async fn suspend(
    cluster: &ClusterHandle,
    power: &PowerPlane,
    host: &HostId,
    mode: SuspendMode,
    force: bool,
    verify: Duration,
) -> Result<SuspendOutcome, PowerError> {
    let start = Instant::now();
    let bmc = match mode {
        SuspendMode::SoftOff => Some(bmc_of(cluster, power, host)?),
        SuspendMode::Ram => power.bmc(host),
    };
    // A host we could not wake again is not put to sleep: nothing is sent.
    if bmc.is_none() && (power.waker().is_none() || power.mac(host).is_none()) {
        return Err(PowerError::NoWakePath { host: host.clone() });
    }
    let Prepared { link, session, vms } = cluster
        .run(PrepareSuspend {
            host: host.clone(),
            mode,
            force,
        })
        .await
        .ok_or(PowerError::Shutdown)??;
    let result = send_and_verify(cluster, host, mode, link, session, bmc, verify, start).await;
    let vm_note = if vms.is_empty() {
        String::new()
    } else {
        format!(" (forced, with {} VM(s) on it)", vms.len())
    };
    match result {
        Ok((power_seen, verified)) => {
            let message = format!(
                "host {host} {} in {} ms{vm_note}: verified {verified}",
                match mode {
                    SuspendMode::Ram => "suspended to RAM",
                    SuspendMode::SoftOff => "soft-off",
                },
                ms(start.elapsed())
            );
            cluster
                .run(RecordSleep {
                    host: host.clone(),
                    power: power_seen,
                    message: message.clone(),
                })
                .await
                .ok_or(PowerError::Shutdown)?;
            Ok(SuspendOutcome {
                host: host.clone(),
                mode,
                vms,
                power: power_seen.map(known).unwrap_or(PowerKnown::Unknown),
                elapsed_ms: ms(start.elapsed()),
                message,
            })
        }
        Err(e) => {
            cluster
                .run(RecordSuspendFailure {
                    host: host.clone(),
                    message: chain(&e),
                })
                .await
                .ok_or(PowerError::Shutdown)?;
            Err(e)
        }
    }
}

/// Sends the request; returns the BMC's final answer (if any) and what was verified.
#[allow(clippy::too_many_arguments)]
async fn send_and_verify(
    cluster: &ClusterHandle,
    host: &HostId,
    mode: SuspendMode,
    link: Option<crate::link::GenieLink>,
    session: Option<u64>,
    bmc: Option<std::sync::Arc<dyn wisp_bmc::Bmc>>,
    verify: Duration,
    start: Instant,
) -> Result<(Option<PowerState>, String), PowerError> {
    let deadline = Instant::now() + verify;
    match (mode, &link, &bmc) {
        (SuspendMode::Ram, Some(link), _) => match link
            .command(Command::Suspend, None)
            .await
            .map_err(PowerError::Link)?
        {
            Outcome::Done => {}
            Outcome::Failed { error } => {
                return Err(PowerError::Genie {
                    host: host.clone(),
                    message: error,
                })
            }
            other => {
                return Err(PowerError::Genie {
                    host: host.clone(),
                    message: format!("unexpected answer {other:?}"),
                })
            }
        },
        (SuspendMode::SoftOff, _, Some(b)) => {
            b.power(PowerAction::Soft)
                .await
                .map_err(|source| PowerError::Bmc {
                    host: host.clone(),
                    action: "soft",
                    source,
                })?
        }
        _ => return Err(PowerError::NoBmc { host: host.clone() }),
    }
    // Silence: no report for the suspect time (the host's status turns `Standby`
    // once the request is out and it is silent), or its link gone.
    let quiet = until(
        deadline,
        POLL,
        format!("host {host} to go silent"),
        || async {
            cluster
                .run(Silent {
                    host: host.clone(),
                    session,
                })
                .await
                .flatten()
        },
    )
    .await;
    // The request went out on `link`; holding it longer would keep the connection.
    drop(link);
    let Ok(how) = quiet else {
        return Err(PowerError::SuspendUnverified {
            host: host.clone(),
            what: "it kept reporting".into(),
            after: verify,
        });
    };
    let mut verified = format!("{how} after {} ms", ms(start.elapsed()));
    let Some(b) = bmc else {
        return Ok((None, verified));
    };
    // Off as the BMC sees it: required for soft-off; for suspend-to-RAM many BMCs
    // report S3 as on, so the answer is recorded but not required.
    let want_off = mode == SuspendMode::SoftOff;
    let seen = poll_power(&b, host, deadline, |p| !want_off || p == PowerState::Off).await;
    match seen {
        Ok(p) => {
            verified.push_str(&format!(
                ", BMC {} reports power {p} after {} ms",
                b.address(),
                ms(start.elapsed())
            ));
            Ok((Some(p), verified))
        }
        Err(last) if want_off => Err(PowerError::NotConfirmed {
            host: host.clone(),
            bmc: b.address().to_string(),
            action: PowerAction::Soft,
            seen: last
                .map(|p| p.to_string())
                .unwrap_or_else(|| "nothing".into()),
            after: verify,
        }),
        Err(_) => {
            verified.push_str(&format!(", BMC {} did not answer", b.address()));
            Ok((None, verified))
        }
    }
}
