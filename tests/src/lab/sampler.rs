//! A census taken over and over on a thread of its own while a test drives the lab
//! (kills a router, powers a host off...), so "never two copies of a VM" is checked at
//! every moment of a takeover, not only at its end.
//!
//! Each sample counts, per VM, its qemu instances on all hosts together (any QMP
//! status: a copy still starting or frozen counts too) and those QMP calls `running`.
//! An instance is a session: `qemu -daemonize` forks twice, and for a moment its
//! middle process (the session leader) and the daemon both carry the VM's command
//! line; both are one VM, a second start is a second session.
//! A census asks one qemu after the other, so across a live migration's switch-over it
//! can see the source still running and then the destination already running: two
//! copies that never ran at the same moment. A VM seen running twice is therefore asked
//! again at once; only copies running in both rounds count (each was running before
//! and after the others were asked, so all of them at one moment).
//! The sampler keeps the worst sample of each kind and the latest one, which the test
//! reads instead of taking a census of its own (a witness QMP socket serves one client
//! at a time, so two census takers would only slow each other down).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::witness::{Census, CensusProbe, SeenVm};

/// Pause between two samples: a census of a few VMs takes 10–50 ms already; this only
/// keeps a 2-core machine from spending a core on it.
const PAUSE: Duration = Duration::from_millis(10);

/// What the sampler saw of one VM.
#[derive(Debug, Clone, Default)]
pub struct VmWorst {
    /// Most qemu instances (sessions) at once, and the census that showed it.
    pub procs: usize,
    pub procs_census: Census,
    /// Most copies QMP called `running` at once, and the census that showed it.
    pub running: usize,
    pub running_census: Census,
}

/// Everything the sampler saw.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub count: usize,
    /// Census failures (an `ip netns` call that failed): none expected.
    pub errors: Vec<String>,
    pub worst: BTreeMap<String, VmWorst>,
    /// Every (host, session) ever seen per VM: a VM started once, never restarted,
    /// shows one; a live migration adds its destination, a failover its new copy.
    pub pids: BTreeMap<String, BTreeSet<(String, i32)>>,
    pub latest: Option<Census>,
    /// When the latest census was taken.
    pub latest_at: Option<Instant>,
}

impl Samples {
    fn add(&mut self, probe: &CensusProbe, vms: &[String], c: Census) {
        self.count += 1;
        for vm in vms {
            let mine: BTreeSet<(String, i32)> = c
                .seen
                .iter()
                .filter(|x| &x.vm == vm)
                .map(|x| (x.host.clone(), session(x.pid)))
                .collect();
            let procs = mine.len();
            self.pids.entry(vm.clone()).or_default().extend(mine);
            let w = self.worst.entry(vm.clone()).or_default();
            let first: Vec<&SeenVm> = c
                .seen
                .iter()
                .filter(|x| &x.vm == vm && x.status == "running")
                .collect();
            let sessions = |xs: &[&SeenVm]| {
                xs.iter()
                    .map(|x| (x.host.clone(), session(x.pid)))
                    .collect::<BTreeSet<_>>()
                    .len()
            };
            let mut running = sessions(&first);
            if running > 1 {
                let again: Vec<&SeenVm> = first
                    .iter()
                    .copied()
                    .filter(|x| probe.status_again(x) == "running")
                    .collect();
                running = sessions(&again);
            }
            if procs > w.procs {
                w.procs = procs;
                w.procs_census = c.clone();
            }
            if running > w.running {
                w.running = running;
                w.running_census = c.clone();
            }
        }
        self.latest = Some(c);
        self.latest_at = Some(Instant::now());
    }

    /// VMs that ever had more than `max` qemu instances at once, with the census.
    pub fn over_procs(&self, max: usize) -> Vec<(String, usize, Census)> {
        self.worst
            .iter()
            .filter(|(_, w)| w.procs > max)
            .map(|(vm, w)| (vm.clone(), w.procs, w.procs_census.clone()))
            .collect()
    }

    /// The distinct qemu instances (host, session) ever seen for `vm`.
    pub fn pids_of(&self, vm: &str) -> Vec<(String, i32)> {
        self.pids
            .get(vm)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// VMs that ever ran (QMP `running`) more than once at the same moment.
    pub fn ran_twice(&self) -> Vec<(String, usize, Census)> {
        self.worst
            .iter()
            .filter(|(_, w)| w.running > 1)
            .map(|(vm, w)| (vm.clone(), w.running, w.running_census.clone()))
            .collect()
    }
}

/// The session of `pid`, or `pid` itself once it is gone (a daemon's middle process,
/// gone, was its session's leader: the same number).
fn session(pid: i32) -> i32 {
    super::witness::sid(pid).unwrap_or(pid)
}

/// The sampling thread; [`Sampler::finish`] stops it and returns what it saw.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Samples>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `vms` with `probe`.
    pub fn start(probe: CensusProbe, vms: &[&str]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Samples::default()));
        let vms: Vec<String> = vms.iter().map(|v| v.to_string()).collect();
        let (s2, sh2) = (stop.clone(), shared.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let r = probe.take();
                let mut g = sh2.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(c) => g.add(&probe, &vms, c),
                    Err(e) => g.errors.push(e.to_string()),
                }
                drop(g);
                std::thread::sleep(PAUSE);
            }
        });
        Sampler {
            stop,
            shared,
            thread: Some(thread),
        }
    }

    /// What has been seen so far.
    pub fn now(&self) -> Samples {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A census taken after `t` (waits for the next sample). Panics, with the census
    /// errors, if none comes within a minute: the sampler is then blind.
    pub fn census_after(&self, t: Instant) -> Census {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.now();
            if let (Some(c), Some(at)) = (s.latest, s.latest_at) {
                if at > t {
                    return c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no census for a minute; errors: {:?}",
                s.errors
            );
            std::thread::sleep(PAUSE);
        }
    }

    /// A census taken from now on.
    pub fn fresh(&self) -> Census {
        self.census_after(Instant::now())
    }

    /// Stops the thread and returns everything it saw.
    pub fn finish(mut self) -> Samples {
        self.halt();
        self.now()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}
