//! One task feeds every open dashboard. Every [`LOOK`] it samples the energy history
//! and, only while someone watches, reads the published snapshot: when what a person
//! would see changed (a host's state, a VM's place or state, a migration's progress,
//! a new event, a planner decision) it publishes a new frame at once, otherwise one
//! each [`REFRESH`] so metrics and watts stay current. Browsers therefore never poll,
//! and a hundred of them cost one frame build, not a hundred.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use wisp_common::time::unix_ms;

use super::payload;
use crate::cluster::ClusterHandle;
use crate::energy::{EnergyHandle, EnergyStatus};
use crate::events::Event;
use crate::model::snapshot::Snapshot;

/// How often the hub looks for a change: a failover shows within this of the model
/// seeing it (the model itself publishes every 100 ms).
pub const LOOK: Duration = Duration::from_millis(250);

/// A frame at least this often while someone watches, for metrics and watts.
pub const REFRESH: Duration = Duration::from_secs(1);

/// One history sample this often...
pub const SAMPLE_EVERY_MS: u64 = 10_000;

/// ...and at most this many (six hours), about 200 kB: the router keeps no more.
pub const HISTORY_MAX: usize = 6 * 360;

/// The energy picture at one moment, for the "hosts asleep" plot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    pub awake: usize,
    pub asleep: usize,
    pub watts: f64,
    pub watts_all_on: f64,
}

/// What the hub publishes: the shared part as JSON once, plus the event tail and
/// history each client takes the new part of.
#[derive(Debug)]
pub struct Frame {
    pub snap_json: String,
    pub events: Arc<Vec<Event>>,
    pub history: Arc<VecDeque<Sample>>,
}

/// The energy saved today: the saved total minus its value when the day (UTC)
/// began, or when this router started if that was later.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Today {
    day: u64,
    base_kwh: f64,
    pub since_ms: u64,
}

impl Today {
    /// Moves to a new day when `now_ms` is in one; returns the kWh saved today.
    pub fn saved(&mut self, now_ms: u64, total_kwh: f64) -> f64 {
        let day = now_ms / 86_400_000;
        if day != self.day {
            *self = Today {
                day,
                base_kwh: total_kwh,
                since_ms: day * 86_400_000,
            };
        }
        (total_kwh - self.base_kwh).max(0.0)
    }

    fn start(now_ms: u64, total_kwh: f64) -> Self {
        Today {
            day: now_ms / 86_400_000,
            base_kwh: total_kwh,
            since_ms: now_ms,
        }
    }
}

/// The hub's handle: subscribe to its frames.
#[derive(Debug)]
pub struct Hub {
    frames: Arc<watch::Sender<Option<Arc<Frame>>>>,
    shutdown: watch::Receiver<bool>,
}

impl Hub {
    /// Starts the hub's task.
    pub fn spawn(
        cluster: ClusterHandle,
        energy: EnergyHandle,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (tx, _) = watch::channel(None);
        let frames = Arc::new(tx);
        tokio::spawn(run(cluster, energy, frames.clone(), shutdown.clone()));
        Self { frames, shutdown }
    }

    /// The router's shutdown signal: open streams must end on it, or the server's
    /// graceful shutdown would wait for them forever.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// A receiver of frames; the first may take up to [`LOOK`] to come.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Frame>>> {
        self.frames.subscribe()
    }
}

async fn run(
    cluster: ClusterHandle,
    energy: EnergyHandle,
    frames: Arc<watch::Sender<Option<Arc<Frame>>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut history = History::default();
    let mut today: Option<Today> = None;
    let mut last_key = None;
    let mut last_push = tokio::time::Instant::now();
    let mut look = tokio::time::interval(LOOK);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = look.tick() => {}
        }
        let now_ms = unix_ms();
        let st = energy.status();
        history.sample(now_ms, &st);
        let t = today.get_or_insert_with(|| Today::start(now_ms, st.saved_kwh));
        let saved_today = t.saved(now_ms, st.saved_kwh);
        // Nobody watching: no frame to build.
        if frames.receiver_count() == 0 {
            last_key = None;
            continue;
        }
        let snap = cluster.snapshot();
        let key = change_key(&snap, &st);
        if last_key == Some(key) && last_push.elapsed() < REFRESH {
            continue;
        }
        let snap_json = payload::build(&snap, &st, now_ms, saved_today, t.since_ms);
        frames.send_replace(Some(Arc::new(Frame {
            snap_json,
            events: snap.events.clone(),
            history: history.shared.clone(),
        })));
        last_key = Some(key);
        last_push = tokio::time::Instant::now();
    }
}

/// The bounded in-memory history, shared with frames as one `Arc` that is rebuilt
/// only when a sample is added (every [`SAMPLE_EVERY_MS`]).
#[derive(Debug, Default)]
struct History {
    shared: Arc<VecDeque<Sample>>,
}

impl History {
    fn sample(&mut self, now_ms: u64, st: &EnergyStatus) {
        if self
            .shared
            .back()
            .is_some_and(|s| now_ms < s.t_ms + SAMPLE_EVERY_MS)
        {
            return;
        }
        let mut h = (*self.shared).clone();
        h.push_back(Sample {
            t_ms: now_ms,
            awake: st.awake,
            asleep: st.asleep,
            watts: st.watts_now,
            watts_all_on: st.watts_all_on,
        });
        while h.len() > HISTORY_MAX {
            h.pop_front();
        }
        self.shared = Arc::new(h);
    }
}

/// A hash of what a person would notice changing (not metrics, ages or watts, which
/// the [`REFRESH`] frames carry).
fn change_key(snap: &Snapshot, st: &EnergyStatus) -> u64 {
    let mut h = DefaultHasher::new();
    for host in &snap.hosts {
        host.name.hash(&mut h);
        host.status.as_str().hash(&mut h);
        host.power.as_str().hash(&mut h);
        host.genie_version.is_some().hash(&mut h);
        host.quarantine.hash(&mut h);
        for v in &host.vms {
            v.id.hash(&mut h);
            v.state.as_str().hash(&mut h);
        }
    }
    for (vm, r) in &snap.records {
        vm.hash(&mut h);
        r.host.hash(&mut h);
        format!("{:?}", r.desired).hash(&mut h);
    }
    for (vm, op) in &snap.ops {
        vm.hash(&mut h);
        format!("{op:?}").hash(&mut h);
    }
    for (vm, p) in &snap.progress {
        vm.hash(&mut h);
        p.status.hash(&mut h);
        p.transferred_bytes.hash(&mut h);
    }
    snap.events.len().hash(&mut h);
    snap.events.last().map(|e| e.at_ms).hash(&mut h);
    snap.energy_mode.hash(&mut h);
    st.enabled.hash(&mut h);
    st.executing.hash(&mut h);
    st.last
        .as_ref()
        .map(|d| (d.at_ms, d.outcome.clone()))
        .hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_samples_every_ten_seconds_and_stays_bounded() {
        let mut h = History::default();
        let st = EnergyStatus {
            asleep: 2,
            ..Default::default()
        };
        h.sample(1_000, &st);
        h.sample(5_000, &st);
        assert_eq!(h.shared.len(), 1, "a second sample within 10 s is skipped");
        h.sample(11_000, &st);
        assert_eq!(h.shared.len(), 2);
        for i in 0..(HISTORY_MAX as u64 + 50) {
            h.sample(20_000 + i * SAMPLE_EVERY_MS, &st);
        }
        assert_eq!(h.shared.len(), HISTORY_MAX);
        assert_eq!(h.shared.back().map(|s| s.asleep), Some(2));
    }

    #[test]
    fn today_counts_from_start_then_from_midnight() {
        let day = 86_400_000;
        let mut t = Today::start(3 * day + 5_000, 10.0);
        assert_eq!(t.saved(3 * day + 9_000, 10.5), 0.5);
        assert_eq!(
            t.since_ms,
            3 * day + 5_000,
            "started today: counts since start"
        );
        assert_eq!(t.saved(4 * day + 1, 11.0), 0.0, "a new day starts at zero");
        assert_eq!(t.since_ms, 4 * day);
        assert!((t.saved(4 * day + 2, 11.25) - 0.25).abs() < 1e-9);
    }
}
