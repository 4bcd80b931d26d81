//! Self-fencing lease: a genie that has not heard from the router for longer than the
//! lease kills every VM, so the router may restart them elsewhere after the lease
//! without ever running a VM twice.
//!
//! The last lease the router granted is persisted in `<vm_dir>/lease`, so a genie that
//! restarts and cannot reach the router still fences `lease_ms` after its start.
//! Time is tokio's, so tests drive it with `tokio::time::pause`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// What the lease kills; `VmManager` is the real one.
pub trait Fence: Send + Sync + 'static {
    /// SIGKILLs every VM of the host; returns how many were killed.
    fn kill_all(&self) -> usize;
}

/// Renews and configures the lease; cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaseHandle {
    base: Instant,
    /// ms since `base` when the router was last heard. An atomic rather than a
    /// message: renewals come at 5/s and must not wake the lease task each time.
    last_heard_ms: Arc<AtomicU64>,
    lease_ms: Arc<watch::Sender<u64>>,
    file: Option<PathBuf>,
}

impl LeaseHandle {
    /// The router was just heard from.
    pub fn renew(&self) {
        let now = Instant::now().duration_since(self.base).as_millis() as u64;
        self.last_heard_ms.store(now, Ordering::Relaxed);
    }

    /// The router granted `lease_ms` (0 = off); persisted for the next genie start.
    pub fn set_lease_ms(&self, lease_ms: u64) {
        let changed = self.lease_ms.send_if_modified(|v| {
            let c = *v != lease_ms;
            *v = lease_ms;
            c
        });
        if let (true, Some(f)) = (changed, &self.file) {
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

/// Starts the lease task. The clock starts now, as if the router had just been heard:
/// a freshly started genie gets one full lease to reach it.
pub fn spawn<F: Fence>(initial_lease_ms: u64, file: Option<PathBuf>, fence: F) -> LeaseHandle {
    let (tx, rx) = watch::channel(initial_lease_ms);
    let h = LeaseHandle {
        base: Instant::now(),
        last_heard_ms: Arc::new(AtomicU64::new(0)),
        lease_ms: Arc::new(tx),
        file,
    };
    tokio::spawn(run(h.base, h.last_heard_ms.clone(), rx, fence));
    h
}

async fn run<F: Fence>(
    base: Instant,
    last: Arc<AtomicU64>,
    mut lease_rx: watch::Receiver<u64>,
    fence: F,
) {
    loop {
        let lease_ms = *lease_rx.borrow_and_update();
        if lease_ms == 0 {
            if lease_rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let heard = last.load(Ordering::Relaxed);
        let deadline = base + Duration::from_millis(heard + lease_ms);
        if Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                r = lease_rx.changed() => if r.is_err() { return },
            }
            continue;
        }
        let n = fence.kill_all();
        if n > 0 {
            tracing::error!(
                lease_ms,
                silent_ms = Instant::now().duration_since(base).as_millis() as u64 - heard,
                killed = n,
                "SELF-FENCE: no word from the router for longer than the lease; killed every VM \
                 on this host so the router can safely restart them elsewhere"
            );
        }
        // Stay fenced while the router is silent: anything started meanwhile dies too.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(lease_ms.min(1000))) => {}
            r = lease_rx.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fakes::FakeFence;

    async fn advance(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
        // Let the lease task observe the new time.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_hold_off_the_fence_and_silence_triggers_it() {
        let f = FakeFence {
            vms: 2,
            ..Default::default()
        };
        let h = spawn(3000, None, f.clone());
        advance(2900).await;
        h.renew();
        advance(2900).await;
        assert_eq!(
            f.kills.load(Ordering::SeqCst),
            0,
            "renewed lease must not fence"
        );
        advance(200).await;
        assert_eq!(
            f.kills.load(Ordering::SeqCst),
            1,
            "expired lease must fence"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_lease_never_fences_and_persisted_lease_applies_from_start() {
        let f = FakeFence {
            vms: 1,
            ..Default::default()
        };
        let h = spawn(0, None, f.clone());
        advance(60_000).await;
        assert_eq!(f.kills.load(Ordering::SeqCst), 0);
        // The router now grants a lease; silence since the last renewal counts.
        h.renew();
        h.set_lease_ms(1000);
        advance(1100).await;
        assert_eq!(f.kills.load(Ordering::SeqCst), 1);

        let dir = std::env::temp_dir().join(format!("genie-lease-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lease");
        let h2 = spawn(0, Some(file.clone()), FakeFence::default());
        h2.set_lease_ms(2500);
        assert_eq!(read_lease_file(&file), 2500);
        let f3 = FakeFence {
            vms: 1,
            ..Default::default()
        };
        let _h3 = spawn(read_lease_file(&file), None, f3.clone());
        advance(2400).await;
        assert_eq!(f3.kills.load(Ordering::SeqCst), 0);
        advance(200).await;
        assert_eq!(
            f3.kills.load(Ordering::SeqCst),
            1,
            "restarted genie fences after the persisted lease"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
