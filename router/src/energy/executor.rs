//! Carries out a `Plan`: wake hosts first (in parallel, each verified), then the
//! migrations batch by batch (a batch in parallel, bounded by the policy), then put
//! the emptied hosts to sleep. The effects sit behind [`Actuator`]: [`RealActuator`]
//! uses the power code (verified WoL with IPMI fallback; suspend through the genie or
//! IPMI soft-off) and `vms::migrate`; tests use a hand-written fake.
//!
//! A step whose premise failed is skipped, not forced: a migration to a host that did
//! not wake, a sleep of a host a migration out of did not empty.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use wisp_bmc::PowerAction;
use wisp_common::error::chain;
use wisp_common::{HostId, VmId};
use wisp_planner::{Plan, SleepDepth};

use super::commands::{RecordDeepened, SleepBlocker, StillAsleep};
use super::view::Snapshot;
use crate::cluster::ClusterHandle;
use crate::config::energy::SleepMode;
use crate::config::MigrationConfig;
use crate::power::actions::power_action;
use crate::power::suspend::{suspend, SuspendMode};
use crate::power::wake::{wake, WakeMethod};
use crate::power::{PowerError, PowerPlane};
use crate::vms::VmError;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("waking host {host}")]
    Wake {
        host: HostId,
        #[source]
        source: PowerError,
    },
    #[error("moving {vm} to {to}")]
    Migrate {
        vm: VmId,
        to: HostId,
        #[source]
        source: VmError,
    },
    #[error("putting host {host} to sleep")]
    Sleep {
        host: HostId,
        #[source]
        source: PowerError,
    },
    #[error("host {host} is not put to sleep: {why}")]
    NotEmpty { host: HostId, why: String },
    #[error("the router is shutting down")]
    Shutdown,
}

/// The effects a plan needs. Each returns a one-line description of what it did.
pub trait Actuator: Send + Sync + 'static {
    fn wake(&self, host: HostId) -> impl Future<Output = Result<String, ExecError>> + Send;
    fn migrate(
        &self,
        vm: VmId,
        to: HostId,
    ) -> impl Future<Output = Result<String, ExecError>> + Send;
    fn sleep(
        &self,
        host: HostId,
        depth: Option<SleepDepth>,
    ) -> impl Future<Output = Result<String, ExecError>> + Send;
    /// Powers off a suspended host (S3 to S5).
    fn deepen(&self, host: HostId) -> impl Future<Output = Result<String, ExecError>> + Send;
}

/// What an execution did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecReport {
    /// Hosts woken, with how (e.g. "woke by Wake-on-LAN ...").
    pub woken: Vec<(HostId, String)>,
    pub moved: Vec<VmId>,
    pub slept: Vec<HostId>,
    /// Suspended hosts powered off (S3 to S5).
    #[serde(default)]
    pub deepened: Vec<HostId>,
    /// Steps skipped because an earlier one failed.
    pub skipped: Vec<String>,
    /// Failures, each with its cause chain.
    pub errors: Vec<String>,
}

impl ExecReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} woken, {} moved, {} asleep",
            self.woken.len(),
            self.moved.len(),
            self.slept.len()
        );
        if !self.deepened.is_empty() {
            s.push_str(&format!(
                ", {} powered off from suspend",
                self.deepened.len()
            ));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!(", {} skipped", self.skipped.len()));
        }
        if !self.errors.is_empty() {
            s.push_str(&format!("; errors: {}", self.errors.join("; ")));
        }
        s
    }
}

/// What to do besides the plan: hosts the failover code asked to wake, the depth of
/// each host put to sleep (`None`: the configured mode decides), and suspended hosts
/// to power off.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub wakes: Vec<HostId>,
    pub depths: BTreeMap<HostId, SleepDepth>,
    pub deepen: Vec<HostId>,
}

/// Executes `plan` (made against `snap`) and `extras` with `act`.
pub async fn execute<A: Actuator>(
    act: Arc<A>,
    snap: &Snapshot,
    plan: &Plan,
    extras: &Extras,
) -> ExecReport {
    let extra_wakes = &extras.wakes;
    let mut rep = ExecReport::default();

    // 1. Wakes, all at once: each waits for its own genie to register.
    let mut wakes: Vec<HostId> = plan.wake.iter().map(|h| snap.host(*h).clone()).collect();
    for h in extra_wakes {
        if !wakes.contains(h) {
            wakes.push(h.clone());
        }
    }
    let mut set = JoinSet::new();
    for h in wakes {
        let a = act.clone();
        set.spawn(async move { (h.clone(), a.wake(h).await) });
    }
    let mut not_up = BTreeSet::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((h, Ok(msg))) => rep.woken.push((h, msg)),
            Ok((h, Err(e))) => {
                rep.errors.push(chain(&e));
                not_up.insert(h);
            }
            Err(e) => rep.errors.push(format!("wake task failed: {e}")),
        }
    }

    // 2. Migrations, batch by batch.
    let mut not_emptied = BTreeSet::new();
    for batch in 0..plan.batches() {
        let mut set = JoinSet::new();
        for m in plan.migrations.iter().filter(|m| m.batch == batch) {
            let (vm, from, to) = (
                snap.vm(m.vm).clone(),
                snap.host(m.from).clone(),
                snap.host(m.to).clone(),
            );
            if not_up.contains(&to) {
                rep.skipped
                    .push(format!("move of {vm} to {to}: {to} did not wake"));
                not_emptied.insert(from);
                continue;
            }
            let a = act.clone();
            set.spawn(async move { (vm.clone(), from, a.migrate(vm, to).await) });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok((vm, _, Ok(_))) => rep.moved.push(vm),
                Ok((_, from, Err(e))) => {
                    rep.errors.push(chain(&e));
                    not_emptied.insert(from);
                }
                Err(e) => rep.errors.push(format!("migration task failed: {e}")),
            }
        }
    }

    // 3. Sleep the emptied hosts (the actuator checks again that they are empty).
    for h in plan.sleep.iter().map(|h| snap.host(*h).clone()) {
        if not_emptied.contains(&h) {
            rep.skipped
                .push(format!("sleep of {h}: a move out of it did not happen"));
            continue;
        }
        let depth = extras.depths.get(&h).copied();
        match act.sleep(h.clone(), depth).await {
            Ok(_) => rep.slept.push(h),
            Err(e) => rep.errors.push(chain(&e)),
        }
    }

    // 4. Suspended hosts the depth choice moved to soft-off.
    for h in &extras.deepen {
        match act.deepen(h.clone()).await {
            Ok(_) => rep.deepened.push(h.clone()),
            Err(e) => rep.errors.push(chain(&e)),
        }
    }
    rep
}

/// The real effects: the router's power code and live migration.
#[derive(Debug, Clone)]
pub struct RealActuator {
    pub cluster: ClusterHandle,
    pub power: Arc<PowerPlane>,
    pub wake_deadline: Duration,
    pub verify: Duration,
    pub migration: MigrationConfig,
    pub sleep_mode: SleepMode,
}

impl RealActuator {
    /// Empty right now, by every account: reported VMs, placements, incoming moves.
    async fn empty_now(&self, host: &HostId) -> Result<(), ExecError> {
        let why = self
            .cluster
            .run(SleepBlocker { host: host.clone() })
            .await
            .ok_or(ExecError::Shutdown)?;
        match why {
            Some(why) => Err(ExecError::NotEmpty {
                host: host.clone(),
                why,
            }),
            None => Ok(()),
        }
    }
}

impl Actuator for RealActuator {
    async fn wake(&self, host: HostId) -> Result<String, ExecError> {
        let o = wake(&self.cluster, &self.power, &host, self.wake_deadline)
            .await
            .map_err(|source| ExecError::Wake {
                host: host.clone(),
                source,
            })?;
        Ok(match o.method {
            WakeMethod::AlreadyUp => format!("{host} was already up"),
            _ => o.message,
        })
    }

    async fn migrate(&self, vm: VmId, to: HostId) -> Result<String, ExecError> {
        let r = crate::vms::migrate::migrate(&self.cluster, vm.clone(), to.clone(), self.migration)
            .await
            .map_err(|source| ExecError::Migrate {
                vm: vm.clone(),
                to: to.clone(),
                source,
            })?;
        Ok(format!(
            "{vm} moved {} -> {} in {} ms (downtime {} ms)",
            r.from, r.to, r.total_ms, r.downtime_ms
        ))
    }

    async fn sleep(&self, host: HostId, depth: Option<SleepDepth>) -> Result<String, ExecError> {
        self.empty_now(&host).await?;
        let mode = match (self.sleep_mode, depth) {
            (SleepMode::Suspend, _) => SuspendMode::Ram,
            (SleepMode::Off, _) | (SleepMode::Auto, Some(SleepDepth::Off)) => SuspendMode::SoftOff,
            (SleepMode::Auto, _) => SuspendMode::Ram,
        };
        let o = suspend(&self.cluster, &self.power, &host, mode, false, self.verify)
            .await
            .map_err(|source| ExecError::Sleep {
                host: host.clone(),
                source,
            })?;
        Ok(o.message)
    }

    async fn deepen(&self, host: HostId) -> Result<String, ExecError> {
        // Still asleep and still empty: a host woken meanwhile is not powered off.
        self.empty_now(&host).await?;
        let still = self
            .cluster
            .run(StillAsleep { host: host.clone() })
            .await
            .ok_or(ExecError::Shutdown)?;
        if !still {
            return Err(ExecError::NotEmpty {
                host,
                why: "it is no longer asleep".into(),
            });
        }
        let r = power_action(
            &self.cluster,
            &self.power,
            &host,
            PowerAction::Off,
            self.verify,
        )
        .await
        .map_err(|source| ExecError::Sleep {
            host: host.clone(),
            source,
        })?;
        self.cluster
            .run(RecordDeepened { host: host.clone() })
            .await
            .ok_or(ExecError::Shutdown)?;
        Ok(format!(
            "{host} powered off from suspend (S3 to S5): {}",
            r.message
        ))
    }
}
