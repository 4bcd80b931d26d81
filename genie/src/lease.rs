//! Self-fencing lease: a genie that has not heard from the router for longer than the
//! lease kills every VM, so the router may restart them elsewhere after the lease
//! without ever running a VM twice.
//!
//! The watchdog is an OS thread with its own deadline (see below for its clock), not a
//! task on the genie's runtime: that runtime is single-threaded and also does blocking
//! /proc and sysinfo work, and the router's safety proof is "the genie has killed its
//! VMs after lease + margin", so a stalled runtime must not be able to delay the kill.
//! (A stalled runtime stops renewing too, so it fences, as it should.)
//!
//! The last lease the router granted is persisted in `<vm_dir>/lease`, so a genie that
//! restarts and cannot reach the router still fences `lease_ms` after its start.
//!
//! Sleep and freezes. Silence is measured on CLOCK_BOOTTIME, which keeps counting while
//! the kernel is suspended (CLOCK_MONOTONIC, behind `Instant`, stops): the router's
//! clock ran on during our sleep, so the sleep is silence too. And a renewal never
//! rescues a lease that has already run out: `renew` fences first when the lease
//! expired since the router was last heard. That closes the race after a resume or a
//! SIGSTOP/SIGCONT, where the runtime may reconnect (or read Acks queued before the
//! freeze) before the watchdog thread is scheduled again: without it, VMs the router
//! already restarted elsewhere could survive. A host the router suspended is empty, so
//! this fence kills nothing; once renewed, the lease runs normally again and new VMs
//! are not touched (the watchdog re-checks at most every second while fenced and sees
//! the renewal).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::resume::sample_clocks;

/// What the lease kills; `VmManager` is the real one.
pub trait Fence: Send + Sync + 'static {
    /// SIGKILLs every VM of the host; returns how many were killed.
    fn kill_all(&self) -> usize;
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot start the self-fence watchdog thread; a genie without it must not run VMs")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
}

/// Renews and configures the lease; cheap to clone. When the last clone is dropped,
/// the watchdog thread ends.
#[derive(Debug, Clone)]
pub struct LeaseHandle {
    /// CLOCK_BOOTTIME (ms) when the lease was spawned.
    base: u64,
    /// ms since `base` when the router was last heard. An atomic rather than a
    /// message: renewals come at 5/s and must not wake the watchdog each time.
    last_heard_ms: Arc<AtomicU64>,
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
    file: Option<PathBuf>,
    /// `renew` fences through it when the lease ran out before the renewal.
    fence: FenceRef,
}

/// The fence, shared by the handles and the watchdog.
#[derive(Clone)]
struct FenceRef(Arc<dyn Fence>);

impl fmt::Debug for FenceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FenceRef")
    }
}

/// What the handles and the watchdog thread share besides the renewal time.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the lease changes or the last handle goes.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    lease_ms: u64,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields, consistent after any panic: reuse it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Dropped with the last handle: tells the watchdog to end.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_all();
    }
}

impl LeaseHandle {
    /// The router was just heard from. If the lease ran out since it was last heard
    /// (the watchdog has not got to it yet, e.g. right after a resume), fence first:
    /// a late word from the router must not save VMs it may have restarted elsewhere.
    pub fn renew(&self) {
        let now = ms_since(self.base);
        let lease_ms = self.shared.lock().lease_ms;
        let heard = self.last_heard_ms.load(Ordering::Relaxed);
        if let Step::Fence { silent_ms } = step(lease_ms, heard, now) {
            fence_now(&*self.fence.0, lease_ms, silent_ms);
        }
        self.last_heard_ms.store(now, Ordering::Relaxed);
    }

    /// The router granted `lease_ms` (0 = off); persisted for the next genie start.
    pub fn set_lease_ms(&self, lease_ms: u64) {
        let changed = {
            let mut st = self.shared.lock();
            let c = st.lease_ms != lease_ms;
            st.lease_ms = lease_ms;
            c
        };
        if !changed {
            return;
        }
        self.shared.changed.notify_all();
        if let Some(f) = &self.file {
            if let Err(e) = std::fs::write(f, format!("{lease_ms}\n")) {
                tracing::warn!(file = %f.display(), error = %e, "cannot persist the lease");
            }
        }
    }
}

/// The persisted lease of a previous run, 0 if none.
pub fn read_lease_file(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Starts the watchdog thread. The clock starts now, as if the router had just been
/// heard: a freshly started genie gets one full lease to reach it.
pub fn spawn<F: Fence>(
    initial_lease_ms: u64,
    file: Option<PathBuf>,
    fence: F,
) -> Result<LeaseHandle, LeaseError> {
    let shared = Arc::new(Shared::default());
    shared.lock().lease_ms = initial_lease_ms;
    let fence = FenceRef(Arc::new(fence));
    let h = LeaseHandle {
        base: boottime_ms(),
        last_heard_ms: Arc::new(AtomicU64::new(0)),
        shared: shared.clone(),
        _owner: Arc::new(Owner(shared.clone())),
        file,
        fence: fence.clone(),
    };
    let (base, last) = (h.base, h.last_heard_ms.clone());
    std::thread::Builder::new()
        .name("genie-lease".into())
        .spawn(move || watchdog(base, &last, &shared, &*fence.0))
        .map_err(|source| LeaseError::Spawn { source })?;
    Ok(h)
}

/// What the watchdog does next; all times are ms since the handle's base.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Self-fencing is off until a lease is granted.
    Idle,
    /// The router was heard recently enough; look again in `ms`.
    Wait { ms: u64 },
    /// The lease ran out `silent_ms` after the router was last heard.
    Fence { silent_ms: u64 },
}

fn step(lease_ms: u64, heard_ms: u64, now_ms: u64) -> Step {
    if lease_ms == 0 {
        return Step::Idle;
    }
    let deadline = heard_ms.saturating_add(lease_ms);
    if now_ms < deadline {
        Step::Wait {
            ms: deadline - now_ms,
        }
    } else {
        Step::Fence {
            silent_ms: now_ms - heard_ms,
        }
    }
}

/// The waits below are on CLOCK_MONOTONIC (std's condvar), so after a kernel suspend
/// the thread may sleep up to one more lease before it looks; `renew` covers that gap.
fn watchdog(base: u64, last: &AtomicU64, shared: &Shared, fence: &dyn Fence) {
    let mut st = shared.lock();
    while !st.closed {
        let lease_ms = st.lease_ms;
        // Wakes early when the lease changes or the handles are gone; renewals do not
        // wake it, they only move the deadline it computes next time.
        let unchanged = |s: &mut State| !s.closed && s.lease_ms == lease_ms;
        let wait = match step(lease_ms, last.load(Ordering::Relaxed), ms_since(base)) {
            Step::Idle => {
                st = shared
                    .changed
                    .wait_while(st, |s| unchanged(s))
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            Step::Wait { ms } => ms,
            Step::Fence { silent_ms } => {
                // Kill without the lock: set_lease_ms must never wait on a kill.
                drop(st);
                fence_now(fence, lease_ms, silent_ms);
                st = shared.lock();
                // Stay fenced while the router is silent: anything started meanwhile
                // dies too.
                lease_ms.min(1000)
            }
        };
        st = shared
            .changed
            .wait_timeout_while(st, Duration::from_millis(wait), |s| unchanged(s))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn fence_now(fence: &dyn Fence, lease_ms: u64, silent_ms: u64) {
    let n = fence.kill_all();
    if n > 0 {
        tracing::error!(
            lease_ms,
            silent_ms,
            killed = n,
            "SELF-FENCE: no word from the router for longer than the lease; killed every VM \
             on this host so the router can safely restart them elsewhere"
        );
    }
}

fn boottime_ms() -> u64 {
    sample_clocks().boottime_ms
}

/// ms of CLOCK_BOOTTIME since `base` (suspended time included).
fn ms_since(base: u64) -> u64 {
    boottime_ms().saturating_sub(base)
}

#[cfg(test)]
mod tests;
