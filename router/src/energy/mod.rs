//! Energy-saving mode: a reconciler that, while `energy_mode` is on, runs the pure
//! planner every `interval_s` on a view of the cluster and executes its plan (wake
//! ahead of need, pack VMs by live migration, put emptied hosts to sleep). It also
//! serves `Model::wake_wanted` (hosts the failover code wants woken) whether the mode
//! is on or not, and keeps the energy estimate behind `router energy status`.
//!
//! The task owns its records (CPU history, moves, power changes, the energy book) and
//! publishes an [`EnergyStatus`] on a `watch` channel that the API reads. A plan runs
//! in its own task so sampling and accounting go on during long migrations and wakes;
//! no new plan is made while one is executing.

pub mod api;
mod commands;
pub mod depth;
pub mod executor;
pub mod meter;
pub mod view;
pub mod waiting;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};
use wisp_common::time::unix_ms;
use wisp_common::{HostId, VmId};
use wisp_planner::{plan, Policy};

use crate::cluster::ClusterHandle;
use crate::config::energy::{EnergyConfig, SleepMode};
use crate::config::RouterConfig;
use crate::events::EventKind;
use crate::model::host::HostStatus;
use crate::power::PowerPlane;
use commands::{ApplyEnergyDefault, ForgetWakeRequests, LoadBook, Observe, SaveBook};
use executor::{execute, Actuator, ExecReport, Extras, RealActuator};
use meter::EnergyBook;
use view::{build, power_state, watts, Observed, Records};

/// How often the task samples VM CPU time and integrates power: once per genie
/// metrics report (1 s by default), so a rate needs no interpolation.
pub const SAMPLE: Duration = Duration::from_secs(1);

/// Seconds between stores of the energy book: a crash or a stop loses at most this
/// much of it (the last save at shutdown races the cluster task's own stop), and a
/// small state write every 10 s costs nothing.
pub const BOOK_SAVE_S: f64 = 10.0;

/// The planner's last decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at_ms: u64,
    pub migrations: usize,
    pub batches: usize,
    pub wake: Vec<HostId>,
    pub sleep: Vec<HostId>,
    pub unresolved_overloads: Vec<HostId>,
    pub unplaced: Vec<VmId>,
    /// The planner's one-line reason.
    pub reason: String,
    /// What the execution did, once it finished.
    pub outcome: Option<String>,
}

/// One host in `router energy status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostEnergy {
    pub host: HostId,
    pub state: HostStatus,
    /// The planner's view of its power.
    pub power: HostPower,
    pub vms: usize,
    /// Estimated draw now; null when the energy mode has no say (failed, maintenance).
    pub watts: Option<f64>,
    /// How deep it sleeps: `S3` (suspend to RAM) or `S5` (soft-off); null while awake.
    #[serde(default)]
    pub depth: Option<String>,
    /// Why the sleep-depth choice put it there (`[energy] sleep = "auto"`).
    #[serde(default)]
    pub depth_why: Option<String>,
}

/// A host's power as the energy planner sees it (`wisp_planner::PlanPower`, which has
/// no serde of its own), in the words of `router energy status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostPower {
    On,
    Asleep,
    Off,
    Waking,
    Unavailable,
}

impl HostPower {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Asleep => "asleep",
            Self::Off => "off",
            Self::Waking => "waking",
            Self::Unavailable => "unavailable",
        }
    }

    /// Asleep or off: drawing (almost) nothing.
    pub fn is_asleep(self) -> bool {
        matches!(self, Self::Asleep | Self::Off)
    }
}

impl std::fmt::Display for HostPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<wisp_planner::PlanPower> for HostPower {
    fn from(p: wisp_planner::PlanPower) -> Self {
        match p {
            wisp_planner::PlanPower::On => Self::On,
            wisp_planner::PlanPower::Asleep => Self::Asleep,
            wisp_planner::PlanPower::Off => Self::Off,
            wisp_planner::PlanPower::Waking => Self::Waking,
            wisp_planner::PlanPower::Unavailable => Self::Unavailable,
        }
    }
}

/// What `GET /v1/energy` returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnergyStatus {
    pub enabled: bool,
    pub interval_s: f64,
    /// Where the watts come from.
    pub power_source: String,
    pub hosts: Vec<HostEnergy>,
    pub awake: usize,
    pub asleep: usize,
    pub watts_now: f64,
    pub watts_all_on: f64,
    pub used_kwh: f64,
    pub all_on_kwh: f64,
    pub saved_kwh: f64,
    /// Seconds the energy book covers.
    pub accounted_s: f64,
    pub executing: bool,
    pub last: Option<Decision>,
    /// Plans made and executed since start.
    pub plans: u64,
    /// Why it is not doing anything now, in words (empty: nothing holds it back).
    #[serde(default)]
    pub waiting: Vec<String>,
}

/// Handle to the energy task.
#[derive(Debug, Clone)]
pub struct EnergyHandle {
    status: watch::Receiver<EnergyStatus>,
    kick: Arc<Notify>,
    cfg: Arc<EnergyConfig>,
}

impl EnergyHandle {
    /// The last published status (at most one sample period old).
    pub fn status(&self) -> EnergyStatus {
        self.status.borrow().clone()
    }

    /// The status with host states, mode and watts taken from `obs` (fresh).
    pub fn status_from(&self, obs: &Observed) -> EnergyStatus {
        let mut st = self.status();
        st.enabled = obs.energy_mode;
        let w = watts(obs, &self.cfg);
        let why = st
            .hosts
            .iter()
            .filter_map(|h| Some((h.host.clone(), h.depth_why.clone()?)))
            .collect();
        let (hosts, awake, asleep) = host_rows(obs, &w, &why);
        st.hosts = hosts;
        st.awake = awake;
        st.asleep = asleep;
        (st.watts_now, st.watts_all_on) = sum_watts(&w);
        st
    }

    /// Asks for a planner round now (after the mode changed).
    pub fn kick(&self) {
        self.kick.notify_one();
    }
}

/// Starts the energy task with the real power code and migrations.
pub fn spawn(
    cluster: ClusterHandle,
    power: Arc<PowerPlane>,
    cfg: &RouterConfig,
    shutdown: watch::Receiver<bool>,
) -> (EnergyHandle, JoinHandle<()>) {
    let act = Arc::new(RealActuator {
        cluster: cluster.clone(),
        power,
        wake_deadline: Duration::from_millis(cfg.wake_boot_ms),
        verify: Duration::from_millis(cfg.power_verify_ms),
        migration: cfg.migration,
        sleep_mode: cfg.energy.sleep,
    });
    spawn_with(cluster, act, cfg, shutdown)
}

/// Starts the energy task with the given effects (tests pass a fake).
pub fn spawn_with<A: Actuator>(
    cluster: ClusterHandle,
    act: Arc<A>,
    cfg: &RouterConfig,
    shutdown: watch::Receiver<bool>,
) -> (EnergyHandle, JoinHandle<()>) {
    let (tx, rx) = watch::channel(EnergyStatus {
        interval_s: cfg.energy.interval_s,
        power_source: "model".into(),
        ..Default::default()
    });
    let kick = Arc::new(Notify::new());
    let handle = EnergyHandle {
        status: rx,
        kick: kick.clone(),
        cfg: Arc::new(cfg.energy.clone()),
    };
    let task = Task {
        cluster,
        act,
        cfg: cfg.energy.clone(),
        policy: cfg.energy.policy(),
        rec: Records::default(),
        depth: depth::DepthBook::default(),
        book: EnergyBook::default(),
        last: None,
        plans: 0,
        running: None,
        tx,
        kick,
    };
    (handle, tokio::spawn(task.run(shutdown)))
}

type Running = JoinHandle<(ExecReport, Vec<HostId>)>;

struct Task<A: Actuator> {
    cluster: ClusterHandle,
    act: Arc<A>,
    cfg: EnergyConfig,
    policy: Policy,
    rec: Records,
    depth: depth::DepthBook,
    book: EnergyBook,
    last: Option<Decision>,
    plans: u64,
    running: Option<Running>,
    tx: watch::Sender<EnergyStatus>,
    kick: Arc<Notify>,
}

impl<A: Actuator> Task<A> {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if !self.apply_config_default().await {
            return;
        }
        match self.cluster.run(LoadBook).await {
            Some(Some(stored)) => self.book = EnergyBook::resume(stored),
            Some(None) => {}
            None => return,
        }
        let mut saved_at = 0.0;
        let start = Instant::now();
        let interval = self.cfg.interval_s;
        let mut tick = tokio::time::interval(SAMPLE.min(Duration::from_secs_f64(interval)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first round waits one interval: CPU demand needs readings first.
        let mut next_round = interval;
        loop {
            let mut kicked = false;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
                _ = self.kick.notified() => kicked = true,
            }
            let now_s = start.elapsed().as_secs_f64();
            let Some(obs) = self.cluster.run(Observe).await else {
                break;
            };
            self.rec.update(&obs, now_s);
            let w = watts(&obs, &self.cfg);
            let (actual, all_on) = sum_watts(&w);
            self.book.sample(now_s, actual, all_on);
            if now_s - saved_at >= BOOK_SAVE_S {
                saved_at = now_s;
                self.cluster.run(SaveBook(self.book.stored())).await;
            }
            self.collect(now_s).await;
            let due = now_s >= next_round || kicked;
            if self.running.is_none() && (due || !obs.wake_wanted.is_empty()) {
                if due {
                    self.rec.meter.end_round();
                    next_round = now_s + interval;
                }
                self.round(&obs, now_s, due).await;
            }
            self.publish(&obs, &w, now_s, next_round);
        }
        if let Some(r) = self.running.take() {
            r.abort();
        }
        // The last minute too (the cluster task may already be gone: then it is lost).
        self.cluster.run(SaveBook(self.book.stored())).await;
    }

    /// Applies `[energy] enabled` unless the operator chose the mode (the choice is
    /// stored with the mode, `PersistedState::energy_chosen`). False on shutdown.
    async fn apply_config_default(&self) -> bool {
        self.cluster
            .run(ApplyEnergyDefault {
                enabled: self.cfg.enabled,
            })
            .await
            .is_some()
    }

    /// Collects a finished execution.
    async fn collect(&mut self, now_s: f64) {
        if !self.running.as_ref().is_some_and(|r| r.is_finished()) {
            return;
        }
        let Some(r) = self.running.take() else { return };
        let (rep, served) = match r.await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "energy plan execution failed");
                return;
            }
        };
        for vm in &rep.moved {
            self.rec.moved_at.insert(vm.clone(), now_s);
        }
        let summary = rep.summary();
        if let Some(d) = self.last.as_mut() {
            d.outcome = Some(summary.clone());
        }
        let kind = if rep.errors.is_empty() {
            EventKind::Power
        } else {
            EventKind::Error
        };
        self.cluster
            .record(kind, None, None, format!("energy plan done: {summary}"))
            .await;
        if !served.is_empty() {
            self.cluster.run(ForgetWakeRequests { hosts: served }).await;
        }
    }

    /// One planner round (when `plan_now`; else only the failover code's wake requests).
    async fn round(&mut self, obs: &Observed, now_s: f64, plan_now: bool) {
        // Wake requests for hosts that can be woken; drop the rest (already up, or
        // failed: not ours to wake).
        let wanted: Vec<HostId> = obs
            .wake_wanted
            .iter()
            .filter(|h| {
                obs.hosts
                    .iter()
                    .find(|o| &o.id == *h)
                    .is_some_and(|o| power_state(o).wakeable())
            })
            .cloned()
            .collect();
        let dropped: Vec<HostId> = obs
            .wake_wanted
            .iter()
            .filter(|h| !wanted.contains(h))
            .cloned()
            .collect();
        if !dropped.is_empty() {
            self.cluster
                .run(ForgetWakeRequests { hosts: dropped })
                .await;
        }
        let snap = build(obs, &self.rec, &self.cfg, now_s);
        if plan_now {
            self.depth.record(&snap);
        }
        let p = if obs.energy_mode && plan_now {
            let p = plan(&snap.view, &self.policy);
            self.plans += 1;
            let d = Decision {
                at_ms: unix_ms(),
                migrations: p.migrations.len(),
                batches: p.batches(),
                wake: p.wake.iter().map(|h| snap.host(*h).clone()).collect(),
                sleep: p.sleep.iter().map(|h| snap.host(*h).clone()).collect(),
                unresolved_overloads: p
                    .unresolved_overloads
                    .iter()
                    .map(|h| snap.host(*h).clone())
                    .collect(),
                unplaced: p.unplaced.iter().map(|v| snap.vm(*v).clone()).collect(),
                reason: p.reason.clone(),
                outcome: if p.is_empty() && wanted.is_empty() {
                    Some("nothing to do".into())
                } else {
                    None
                },
            };
            if !p.is_empty() {
                info!(reason = %p.reason, "energy plan");
                self.cluster
                    .record(
                        EventKind::Power,
                        None,
                        None,
                        format!(
                            "energy plan: {} migration(s) in {} batch(es), wake [{}], sleep [{}]: {}",
                            d.migrations,
                            d.batches,
                            join(&d.wake),
                            join(&d.sleep),
                            d.reason
                        ),
                    )
                    .await;
            }
            self.last = Some(d);
            p
        } else {
            wisp_planner::Plan::default()
        };
        let mut extras = Extras {
            wakes: wanted,
            ..Extras::default()
        };
        if obs.energy_mode && plan_now && self.cfg.sleep == SleepMode::Auto {
            let chosen = self
                .depth
                .choose(&snap, obs, &self.cfg, &self.policy, &p.sleep);
            extras.depths = p
                .sleep
                .iter()
                .filter_map(|h| {
                    let id = snap.host(*h);
                    chosen.get(id).map(|c| (id.clone(), c.depth))
                })
                .collect();
            extras.deepen = depth::to_deepen(obs, &chosen);
        }
        if p.is_empty() && extras.wakes.is_empty() && extras.deepen.is_empty() {
            return;
        }
        let act = self.act.clone();
        self.running = Some(tokio::spawn(async move {
            let rep = execute(act, &snap, &p, &extras).await;
            (rep, extras.wakes)
        }));
    }

    fn publish(
        &self,
        obs: &Observed,
        w: &[(HostId, Option<meter::HostWatts>)],
        now_s: f64,
        next_round_s: f64,
    ) {
        let waiting = waiting::waiting(&waiting::WaitInput {
            obs,
            rec: &self.rec,
            min_awake_s: self.policy.min_awake_s,
            now_s,
            next_round_s,
            executing: self.running.is_some(),
        });
        let (watts_now, watts_all_on) = self.book.watts_now();
        let why = self
            .depth
            .last
            .iter()
            .map(|(h, c)| (h.clone(), c.why.clone()))
            .collect();
        let (hosts, awake, asleep) = host_rows(obs, w, &why);
        let status = EnergyStatus {
            enabled: obs.energy_mode,
            interval_s: self.cfg.interval_s,
            power_source: "model".into(),
            awake,
            asleep,
            hosts,
            watts_now,
            watts_all_on,
            used_kwh: self.book.used_kwh,
            all_on_kwh: self.book.all_on_kwh,
            saved_kwh: self.book.saved_kwh(),
            accounted_s: self.book.accounted_s(),
            executing: self.running.is_some(),
            last: self.last.clone(),
            plans: self.plans,
            waiting,
        };
        self.tx.send_replace(status);
    }
}

/// Estimated draw of the cluster: (now, with every host on), watts.
fn sum_watts(w: &[(HostId, Option<meter::HostWatts>)]) -> (f64, f64) {
    w.iter()
        .filter_map(|(_, w)| *w)
        .fold((0.0, 0.0), |a, w| (a.0 + w.actual, a.1 + w.all_on))
}

/// One row per host, and how many are awake and asleep.
/// `why` holds the last sleep-depth choice per host.
fn host_rows(
    obs: &Observed,
    w: &[(HostId, Option<meter::HostWatts>)],
    why: &BTreeMap<HostId, String>,
) -> (Vec<HostEnergy>, usize, usize) {
    let hosts: Vec<HostEnergy> = obs
        .hosts
        .iter()
        .zip(w)
        .map(|(h, (_, w))| {
            let power: HostPower = power_state(h).into();
            let depth = h.depth.filter(|_| power.is_asleep()).map(|d| {
                match d {
                    crate::api::types::SuspendMode::Ram => "S3",
                    crate::api::types::SuspendMode::SoftOff => "S5",
                }
                .to_owned()
            });
            HostEnergy {
                host: h.id.clone(),
                state: h.status,
                power,
                vms: h.vms.len(),
                watts: w.map(|w| w.actual),
                depth,
                depth_why: why.get(&h.id).cloned(),
            }
        })
        .collect();
    let awake = hosts.iter().filter(|h| h.power == HostPower::On).count();
    let asleep = hosts.iter().filter(|h| h.power.is_asleep()).count();
    (hosts, awake, asleep)
}

fn join(hs: &[HostId]) -> String {
    hs.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", ")
}
