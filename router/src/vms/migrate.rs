//! Live migration of a VM between two hosts, orchestrated by the router:
//! the destination genie starts qemu with `-incoming`, the source genie runs QMP
//! `migrate` and streams progress; on success the placement moves (with a new fencing
//! epoch), on failure the destination is cleaned up and the VM keeps running where it
//! was.

use std::time::Instant;

use tokio::sync::mpsc;
use wisp_common::proto::{Command, MigrationProgress, Outcome};
use wisp_common::{HostId, VmId};

use super::commands::{EndMigration, MigrationPlan, NoteProgress, PlanMigrate};
use super::VmError;
use crate::api::types::MigrationReport;
use crate::cluster::ClusterHandle;
use crate::config::MigrationConfig;
use crate::events::EventKind;

/// How long a finished migration waits for its last progress notes to be recorded.
const PROGRESS_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Live-migrates `vm` to host `to`.
pub async fn migrate(
    c: &ClusterHandle,
    vm: VmId,
    to: HostId,
    settings: MigrationConfig,
) -> Result<MigrationReport, VmError> {
    let t0 = Instant::now();
    // The claim is held until this function returns or is dropped: either way the VM
    // is released, so a client that gives up cannot leave it busy.
    let MigrationPlan {
        from,
        to,
        spec,
        epoch,
        src,
        dst,
        claim: _claim,
    } = c
        .run(PlanMigrate { vm: vm.clone(), to })
        .await
        .ok_or(VmError::Shutdown)??;

    let result = run(c, &vm, &from, &to, spec, epoch, &src, &dst, settings, t0).await;
    // The last progress note (drained by `run`) holds the bytes sent.
    let sent = c.snapshot().progress.get(&vm).map(|p| p.transferred_bytes);
    crate::metrics::registry::migration_ended(
        result.as_ref().ok().map(|(total, down, _)| (*total, *down)),
        sent.unwrap_or(0),
    );
    let recorded = c
        .run(EndMigration {
            vm: vm.clone(),
            to: to.clone(),
            epoch,
            completed: result.is_ok(),
            in_doubt: matches!(result, Err(VmError::SourceLost { .. })),
        })
        .await
        .ok_or(VmError::Shutdown)?;
    match (result, recorded) {
        (Ok((total_ms, downtime_ms, to_cmd)), Ok(())) => {
            let rep = MigrationReport {
                vm: vm.clone(),
                from: from.clone(),
                to: to.clone(),
                total_ms,
                downtime_ms,
                to_migrate_command_ms: to_cmd,
                elapsed_ms: t0.elapsed().as_millis() as u64,
            };
            c.record(
                EventKind::VmMigrated,
                Some(to.clone()),
                Some(vm.clone()),
                format!(
                    "{vm} migrated {from} -> {to}: total {total_ms} ms, downtime {downtime_ms} ms"
                ),
            )
            .await;
            Ok(rep)
        }
        (Err(e), _) => {
            c.record(
                EventKind::MigrationFailed,
                Some(from.clone()),
                Some(vm.clone()),
                format!(
                    "migration of {vm} {from} -> {to} failed: {}; it keeps running on {from}",
                    super::chain(&e)
                ),
            )
            .await;
            // A genie's own answer means the source was left running (or resumed) by
            // its genie: tell the user so, and which move failed. A lost link says
            // nothing about the source, so it is reported as it is.
            Err(match e {
                VmError::Genie { .. } => VmError::MigrationFailed {
                    vm,
                    from,
                    to,
                    source: Box::new(e),
                },
                e => e,
            })
        }
        (Ok(_), Err(e)) => {
            // QEMU finished: the VM now runs on `to`, but the placement is not stored.
            // The reconciler adopts the copy with the newer epoch once it can store it.
            c.record(
                EventKind::MigrationFailed,
                Some(to.clone()),
                Some(vm.clone()),
                format!(
                    "{vm} migrated {from} -> {to} but the new placement could not be stored: {}",
                    super::chain(&e)
                ),
            )
            .await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    c: &ClusterHandle,
    vm: &VmId,
    from: &HostId,
    to: &HostId,
    spec: wisp_common::VmSpec,
    epoch: u64,
    src: &crate::link::GenieLink,
    dst: &crate::link::GenieLink,
    settings: MigrationConfig,
    t0: Instant,
) -> Result<(u64, u64, u64), VmError> {
    let uri = match dst
        .command(Command::PrepareIncoming { spec, epoch }, None)
        .await
        .map_err(VmError::Link)?
    {
        Outcome::Incoming { uri } => uri,
        Outcome::Failed { error } => {
            return Err(VmError::Genie {
                vm: vm.clone(),
                host: to.clone(),
                message: format!("could not prepare the destination: {error}"),
            })
        }
        other => {
            return Err(VmError::Unexpected {
                vm: vm.clone(),
                host: to.clone(),
                answer: format!("{other:?}"),
            })
        }
    };
    let (ptx, mut prx) = mpsc::channel::<MigrationProgress>(16);
    let c2 = c.clone();
    let v2 = vm.clone();
    let progress_task = tokio::spawn(async move {
        while let Some(progress) = prx.recv().await {
            let vm = v2.clone();
            let _ = c2.run(NoteProgress { vm, progress }).await;
        }
    });
    let to_cmd = t0.elapsed().as_millis() as u64;
    let outcome = src
        .command(
            Command::Migrate {
                vm: vm.clone(),
                uri,
                max_bandwidth_mib_s: settings.max_bandwidth_mib_s,
                downtime_limit_ms: settings.downtime_limit_ms,
            },
            Some(ptx),
        )
        .await;
    // The sender went with the command: let the task drain what is queued, so no
    // late progress note lands after `EndMigration` dropped it (a finished migration
    // would otherwise show "setup" in `router vms` for good).
    let mut progress_task = progress_task;
    if tokio::time::timeout(PROGRESS_DRAIN, &mut progress_task)
        .await
        .is_err()
    {
        progress_task.abort();
    }
    let failure = match outcome {
        Ok(Outcome::Migrated {
            total_ms,
            downtime_ms,
        }) => return Ok((total_ms, downtime_ms, to_cmd)),
        Ok(Outcome::Failed { error }) => VmError::Genie {
            vm: vm.clone(),
            host: from.clone(),
            message: error,
        },
        Ok(other) => VmError::Unexpected {
            vm: vm.clone(),
            host: from.clone(),
            answer: format!("{other:?}"),
        },
        // The source genie is gone, but its qemu may still be streaming and may
        // complete: then the destination holds the only running copy, and cancelling
        // it would lose the VM. Leave both to the reconciler, which adopts a completed
        // move (newer copy running, source in postmigrate) or drops a destination that
        // never got the VM (still waiting while the source runs).
        Err(e) => {
            return Err(VmError::SourceLost {
                vm: vm.clone(),
                from: from.clone(),
                to: to.clone(),
                source: e,
            })
        }
    };
    // The source genie answered, so the VM stays at the source (its genie resumed it
    // if needed): remove the waiting destination qemu. If the destination is
    // unreachable, its incoming qemu exits when the stream breaks, and the reconciler
    // drops a copy that still waits.
    let _ = dst
        .command(Command::CancelIncoming { vm: vm.clone() }, None)
        .await;
    Err(failure)
}
