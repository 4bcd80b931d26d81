//! The lease's decisions on a synthetic clock, then the real watchdog thread on short
//! real-time leases: renewals hold it off, silence fences (never early), a stalled
//! tokio runtime cannot delay it, and it ends with its last handle.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::fakes::FakeFence;

/// Generous: the watchdog may be late on a loaded machine, never early.
const LONG: Duration = Duration::from_secs(10);

fn fence(vms: usize) -> FakeFence {
    FakeFence {
        vms,
        ..Default::default()
    }
}

/// Polls (with plain thread sleeps: no runtime involved) until `f` or `LONG` passes.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < LONG {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

#[test]
fn renewals_move_the_deadline_and_silence_past_the_lease_fences() {
    // Lease 3000, heard at 0: wait until 3000.
    assert_eq!(step(3000, 0, 2900), Step::Wait { ms: 100 });
    // Renewed at 2900: 5800 is still inside the lease, 5900 is not.
    assert_eq!(step(3000, 2900, 5800), Step::Wait { ms: 100 });
    assert_eq!(step(3000, 2900, 5900), Step::Fence { silent_ms: 3000 });
    assert_eq!(step(3000, 2900, 6100), Step::Fence { silent_ms: 3200 });
    // Lease 0 is off, however long the silence.
    assert_eq!(step(0, 0, 60_000), Step::Idle);
}

#[test]
fn renewals_hold_off_the_real_watchdog_and_silence_triggers_it() {
    let f = fence(2);
    let h = spawn(1000, None, f.clone()).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        h.renew();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        f.kills.load(Ordering::SeqCst),
        0,
        "renewed lease must not fence"
    );
    h.renew();
    let silent = Instant::now();
    assert!(
        eventually(|| f.kills.load(Ordering::SeqCst) > 0),
        "expired lease must fence"
    );
    assert!(
        silent.elapsed() >= Duration::from_millis(1000),
        "fenced early: {:?}",
        silent.elapsed()
    );
}

#[tokio::test]
async fn a_stalled_runtime_cannot_delay_the_fence() {
    let f = fence(1);
    let _h = spawn(200, None, f.clone()).unwrap();
    // Block this (single-threaded) runtime, as blocking /proc work would: the
    // watchdog fences anyway, on time.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        eventually(|| f.kills.load(Ordering::SeqCst) > 0),
        "a blocked runtime held off the fence"
    );
}

#[test]
fn zero_lease_never_fences_until_one_is_granted() {
    let f = fence(1);
    let h = spawn(0, None, f.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(f.kills.load(Ordering::SeqCst), 0);
    // The router now grants a lease; silence since the last renewal counts.
    h.renew();
    let t0 = Instant::now();
    h.set_lease_ms(300);
    assert!(eventually(|| f.kills.load(Ordering::SeqCst) > 0));
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
    // Fenced, it stays fenced while the silence lasts.
    assert!(eventually(|| f.kills.load(Ordering::SeqCst) > 1));
}

#[test]
fn a_persisted_lease_applies_from_the_next_start() {
    let dir = std::env::temp_dir().join(format!("genie-lease-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lease");
    let h = spawn(0, Some(file.clone()), FakeFence::default()).unwrap();
    h.set_lease_ms(400);
    assert_eq!(read_lease_file(&file), 400);
    let f = fence(1);
    let t0 = Instant::now();
    let _h2 = spawn(read_lease_file(&file), None, f.clone()).unwrap();
    assert!(
        eventually(|| f.kills.load(Ordering::SeqCst) > 0),
        "restarted genie fences after the persisted lease"
    );
    // The lease runs on CLOCK_BOOTTIME, `Instant` on CLOCK_MONOTONIC, read at other
    // moments: a few ms of slack (CI saw 399.95 ms), far less than any early fence.
    assert!(
        t0.elapsed() >= Duration::from_millis(395),
        "{:?}",
        t0.elapsed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_watchdog_ends_with_its_last_handle() {
    let f = fence(1);
    let h = spawn(0, None, f.clone()).unwrap();
    let h2 = h.clone();
    drop(h);
    std::thread::sleep(Duration::from_millis(50));
    // The thread still holds its clone of the fence while a handle lives.
    assert_eq!(Arc::strong_count(&f.kills), 2);
    drop(h2);
    assert!(
        eventually(|| Arc::strong_count(&f.kills) == 1),
        "watchdog thread still running"
    );
}

#[test]
fn a_renewal_after_the_lease_ran_out_fences_first_then_the_lease_runs_normally() {
    // A handle whose watchdog thread never runs: it stands for a watchdog not yet
    // scheduled after a SIGCONT or a resume, while the runtime already renews.
    let f = fence(1);
    let shared = Arc::new(Shared::default());
    shared.lock().lease_ms = 200;
    let h = LeaseHandle {
        base: boottime_ms(),
        last_heard_ms: Arc::new(AtomicU64::new(0)),
        shared: shared.clone(),
        _owner: Arc::new(Owner(shared)),
        file: None,
        fence: FenceRef(Arc::new(f.clone())),
    };
    h.renew();
    assert_eq!(
        f.kills.load(Ordering::SeqCst),
        0,
        "a live lease renews quietly"
    );
    std::thread::sleep(Duration::from_millis(400));
    // The router is heard again 400 ms after a 200 ms lease: the renewal fences before
    // it counts, on this thread, before it returns.
    h.renew();
    assert_eq!(
        f.kills.load(Ordering::SeqCst),
        1,
        "renewal rescued an expired lease"
    );
    // From now on renewals keep the lease: VMs started after the resume are left alone.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(800) {
        h.renew();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(f.kills.load(Ordering::SeqCst), 1);
}

#[test]
fn after_a_fence_the_watchdog_lets_a_renewed_genie_run_vms_again() {
    let f = fence(1);
    let h = spawn(200, None, f.clone()).unwrap();
    h.renew();
    // Silence past the lease (as a frozen genie's): the watchdog fences.
    assert!(eventually(|| f.kills.load(Ordering::SeqCst) > 0));
    // The link comes back and renews at the heartbeat rate: after the renewal's own
    // fence (the lease had run out) nothing is killed any more.
    h.renew();
    let after = f.kills.load(Ordering::SeqCst);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        h.renew();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        f.kills.load(Ordering::SeqCst),
        after,
        "renewed lease still fences"
    );
}
