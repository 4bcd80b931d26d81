//! The lease's decisions on a synthetic clock, then the real watchdog thread on short
//! real-time leases: renewals hold it off, silence fences (never early), a stalled
//! tokio runtime cannot delay it, and it ends with its last handle.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
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
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
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
