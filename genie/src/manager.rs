//! The VMs of this host: discovery from vm_dir, and the lifecycle operations the
//! router's commands map to (start, stop, delete, incoming/outgoing migration, kill).
//! Those operations are the [`Hypervisor`] impl and the self-fence kill is the
//! [`Fence`] impl, written there once rather than as inherent methods plus forwarders.
//!
//! The manager only keeps the map VmId → [`VmHandle`]; each VM's state lives in its own
//! task. The map sits behind a std mutex that is never held across an await.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use wisp_common::proto::{MigrationProgress, VmStatus};
use wisp_common::{VmId, VmRunState, VmSpec};

use crate::commands::Hypervisor;
use crate::launch::{self, LaunchError, VmOptions};
use crate::lease::Fence;
use crate::ports::{Attempt, Exhausted, PickError, PortPicker};
use crate::qemu::{self, QemuError, VmPaths};
use crate::qmp::QmpError;
use crate::taps::{self, TapError};
use crate::vm_task::{self, VmHandle};
use wisp_common::proto::VirtCaps;

/// How long a freshly started qemu may take to report `running` (or `inmigrate`).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `quit` and SIGKILL each get before we look again.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// query-migrate poll period: fine enough for progress, cheap for qemu.
const MIGRATE_POLL: Duration = Duration::from_millis(50);
/// A migration that has not finished in this long is cancelled: with our bandwidth
/// caps even a large VM finishes in minutes; beyond that it does not converge.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("QMP of VM {vm} failed")]
    Qmp {
        vm: VmId,
        #[source]
        source: QmpError,
    },
    #[error("VM {vm} is not on this host")]
    NotFound { vm: VmId },
    #[error("VM {vm} is {state}, expected {expected}; log {log}: {tail}")]
    BadState {
        vm: VmId,
        state: VmRunState,
        expected: &'static str,
        log: PathBuf,
        tail: String,
    },
    #[error("migration of VM {vm} to {uri} {status}: {reason}")]
    Migration {
        vm: VmId,
        uri: String,
        status: String,
        reason: String,
    },
    #[error("qemu of VM {vm} (pid {pid}) survived quit and SIGKILL")]
    Unkillable { vm: VmId, pid: u32 },
    #[error("no port for an incoming migration of VM {vm}")]
    NoMigrationPort {
        vm: VmId,
        #[source]
        source: Exhausted,
    },
}

/// A VM's operation lock, held; on release its entry leaves the map when nobody else
/// holds or waits for it, so the map does not keep every VM ever seen. Waiters clone
/// the lock under the map's mutex, and the count is read under it too: an entry that
/// someone may still lock is never removed.
struct OpGuard {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    vm: VmId,
    inner: Arc<Inner>,
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut ops = self.inner.ops.lock().unwrap_or_else(|e| e.into_inner());
        if ops.get(&self.vm).is_some_and(|l| Arc::strong_count(l) == 1) {
            ops.remove(&self.vm);
        }
    }
}

/// Handle to the VMs of this host (cheap to clone).
#[derive(Debug, Clone)]
pub struct VmManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    vm_dir: PathBuf,
    qemu: PathBuf,
    opts: VmOptions,
    /// What is reported about how VMs run here; the CPU models arrive once listed.
    virt: Mutex<VirtCaps>,
    vms: Mutex<HashMap<VmId, VmHandle>>,
    /// One lifecycle operation at a time per VM (see [`VmManager::op_guard`]).
    ops: Mutex<HashMap<VmId, Arc<tokio::sync::Mutex<()>>>>,
    changes: Arc<Notify>,
    /// Where incoming migrations listen (`opts.migration_ports`).
    ports: PortPicker,
}

/// QEMU's answer to `migrate-incoming` on a port somebody else holds: "Failed to find
/// an available port: Address already in use" (7.2; the strerror of EADDRINUSE is the
/// stable part). Any other failure is not about the port.
fn address_in_use(e: &QmpError) -> bool {
    matches!(e, QmpError::Command { desc, .. } if desc.contains("Address already in use"))
}

/// The announce-self after an incoming migration: 5 rounds, 50 ms then 150, 250, ...
/// (QEMU announces by itself after a migration too; this one also covers a switch
/// that missed those, and is what `announce-self` documents for the purpose).
const ANNOUNCE: (u64, u64, u64, u64) = (50, 550, 5, 100);

impl VmManager {
    /// `changes` is notified whenever a VM's run state changes or a VM comes or goes.
    /// Default options: TCG, no networks, no image_dirs (no disk or kernel allowed).
    pub fn new(vm_dir: &Path, qemu: &Path, changes: Arc<Notify>) -> Self {
        Self::with_options(vm_dir, qemu, changes, VmOptions::default(), None)
    }

    /// As [`new`](Self::new), with genie.toml's VM options; `accel_note` says why the
    /// accelerator is not the one asked for, if so.
    pub fn with_options(
        vm_dir: &Path,
        qemu: &Path,
        changes: Arc<Notify>,
        opts: VmOptions,
        accel_note: Option<String>,
    ) -> Self {
        let virt = VirtCaps {
            accel: opts.accel.as_str().to_owned(),
            accel_note,
            cpu_models: None,
            cpu_note: Some("not listed yet".into()),
            networks: Vec::new(),
        };
        Self {
            inner: Arc::new(Inner {
                vm_dir: vm_dir.to_owned(),
                qemu: qemu.to_owned(),
                ports: PortPicker::new(opts.migration_ports),
                opts,
                virt: Mutex::new(virt),
                vms: Mutex::new(HashMap::new()),
                ops: Mutex::new(HashMap::new()),
                changes,
            }),
        }
    }

    /// Lists the CPU models QEMU can give guests here (once, at start).
    pub async fn learn_cpu_models(&self) {
        let r = crate::accel::usable_cpu_models(&self.inner.qemu, self.inner.opts.accel).await;
        let mut v = self.inner.virt.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(models) => {
                v.cpu_models = Some(models);
                v.cpu_note = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the CPU models of this host");
                v.cpu_note = Some(e);
            }
        }
    }

    fn cpu_models(&self) -> Option<Vec<String>> {
        self.inner
            .virt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cpu_models
            .clone()
    }

    pub fn vm_dir(&self) -> &Path {
        &self.inner.vm_dir
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, VmHandle>> {
        // A panic while holding this lock leaves a map that is still consistent (inserts
        // and removes are single operations), so a poisoned lock is safe to reuse.
        self.inner.vms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no other lifecycle operation (start, stop, delete, incoming,
    /// dropping a stale copy) runs on `vm` here, and holds it off until the guard is
    /// dropped. Two routers can send the same command: a leader that dies while a start
    /// is in flight, and the new leader that sees the VM not running yet and starts it
    /// again (so does a router restarted in that window). Without this, both starts
    /// find no qemu and each launches one: the VM runs twice on this host. Serialized,
    /// the second finds the first one's qemu running and leaves it alone.
    ///
    /// An outgoing migration does not take it: a start sent meanwhile must find the VM
    /// running and do nothing, not wait and then start a copy beside the migrated one.
    /// The self-fence (`kill_all`) does not either: it must never wait.
    async fn op_guard(&self, vm: &VmId) -> OpGuard {
        let lock = self
            .inner
            .ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(vm.clone())
            .or_default()
            .clone();
        OpGuard {
            guard: Some(lock.lock_owned().await),
            vm: vm.clone(),
            inner: self.inner.clone(),
        }
    }

    fn register(&self, id: &VmId) -> VmHandle {
        let mut map = self.map();
        if let Some(h) = map.get(id).filter(|h| !h.is_finished()) {
            return h.clone();
        }
        let h = vm_task::spawn(
            id.clone(),
            VmPaths::new(&self.inner.vm_dir, id),
            self.inner.changes.clone(),
        );
        map.insert(id.clone(), h.clone());
        h
    }

    fn get(&self, id: &VmId) -> Option<VmHandle> {
        let mut map = self.map();
        if map.get(id).is_some_and(VmHandle::is_finished) {
            map.remove(id);
        }
        map.get(id).cloned()
    }

    fn forget(&self, id: &VmId) {
        self.map().remove(id);
        self.inner.changes.notify_one();
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every known VM has left the initial `unreachable` state or `timeout`
    /// passes (for one-shot reports right after a scan).
    pub async fn settle(&self, timeout: Duration) {
        let handles: Vec<VmHandle> = self.map().values().cloned().collect();
        for h in handles {
            h.wait_state(timeout, |s| *s != VmRunState::Unreachable)
                .await;
        }
    }

    async fn launch(&self, spec: &VmSpec, epoch: u64, incoming: bool) -> Result<(), VmError> {
        let vm = &spec.name;
        let paths = VmPaths::new(&self.inner.vm_dir, vm);
        if let Some(state) = self.get(vm).map(|h| h.state()) {
            if !incoming && state == VmRunState::Running {
                return Ok(());
            }
            // Anything else (an old incoming qemu, a paused leftover) is replaced. No
            // handle is held here, so the old task ends once the manager forgets it.
            self.kill_vm(vm).await?;
        }
        std::fs::create_dir_all(&self.inner.vm_dir).map_err(|source| QemuError::File {
            path: self.inner.vm_dir.clone(),
            source,
        })?;
        // Every check before anything starts: a refused spec leaves no trace.
        let l = launch::resolve(
            spec,
            &self.inner.opts,
            self.cpu_models().as_deref(),
            &self.inner.vm_dir,
        )?;
        for n in &l.nics {
            taps::remove_leftover(&n.tap).await;
        }
        // A stale socket from a dead qemu would make the new one fail to bind.
        let _ = std::fs::remove_file(&paths.qmp);
        let _ = std::fs::remove_file(&paths.pid);
        let _ = std::fs::remove_file(&paths.console);
        qemu::write_runtime_file(&paths.json, spec, epoch)?;
        let args = qemu::command_line(&l, &paths, incoming);
        qemu::start(&self.inner.qemu, vm, &args, &paths).await?;
        let h = self.register(vm);
        self.inner.changes.notify_one();
        for n in &l.nics {
            if let Err(e) = taps::attach(vm, &n.tap, &n.bridge).await {
                // A VM cut off from its network must not run: its taps go with it.
                let _ = self.kill_vm(vm).await;
                return Err(e.into());
            }
        }
        if incoming && !l.nics.is_empty() {
            self.announce_when_running(h.clone());
        }
        let (expected, want) = if incoming {
            ("inmigrate", VmRunState::Inmigrate)
        } else {
            ("running", VmRunState::Running)
        };
        let state = h.wait_state(READY_TIMEOUT, |s| *s == want).await;
        if state != want {
            return Err(VmError::BadState {
                vm: vm.clone(),
                state,
                expected,
                log: paths.log.clone(),
                tail: qemu::log_tail(&paths.log),
            });
        }
        Ok(())
    }

    /// After an incoming migration: once the VM runs here, `announce-self`, so the
    /// switches learn the guest's MACs at this host's port at once.
    fn announce_when_running(&self, h: VmHandle) {
        tokio::spawn(async move {
            let s = h
                .wait_state(MIGRATE_TIMEOUT, |s| *s == VmRunState::Running)
                .await;
            if s != VmRunState::Running {
                return;
            }
            let (initial, max, rounds, step) = ANNOUNCE;
            let args = json!({"initial": initial, "max": max, "rounds": rounds, "step": step});
            match h.execute("announce-self", Some(args)).await {
                Ok(_) => tracing::info!(vm = %h.id, "announced the migrated VM's NICs"),
                Err(e) => tracing::warn!(vm = %h.id, error = %e, "announce-self failed"),
            }
        });
    }

    /// `quit`, then SIGKILL, each with a grace period.
    async fn terminate(&self, vm: &VmId, pid: Option<u32>) -> Result<(), VmError> {
        if pid.is_some_and(|p| !qemu::is_alive(p)) {
            return Ok(());
        }
        if let Some(h) = self.get(vm) {
            // The socket may close before the reply arrives: qemu is exiting, fine.
            let _ = h.execute("quit", None).await;
        }
        let Some(p) = pid else { return Ok(()) };
        if qemu::wait_gone(p, EXIT_GRACE).await {
            return Ok(());
        }
        qemu::kill(p, vm);
        if qemu::wait_gone(p, EXIT_GRACE).await {
            Ok(())
        } else {
            Err(VmError::Unkillable {
                vm: vm.clone(),
                pid: p,
            })
        }
    }

    /// ACPI powerdown (unless `force`), then `quit` after `timeout`, then SIGKILL
    /// (the caller holds the VM's [`op_guard`](Self::op_guard)). Keeps `<vm>.json` so
    /// the VM can be started again with the same epoch.
    async fn stop_now(&self, vm: &VmId, force: bool, timeout: Duration) -> Result<(), VmError> {
        let paths = VmPaths::new(&self.inner.vm_dir, vm);
        let pid = qemu::read_pid(&paths.pid);
        if let (Some(h), false) = (self.get(vm), force) {
            match h.execute("system_powerdown", None).await {
                Ok(_) => {
                    if let Some(p) = pid {
                        qemu::wait_gone(p, timeout).await;
                    }
                }
                Err(e) => tracing::warn!(vm = %vm, error = %e, "system_powerdown failed; quitting"),
            }
        }
        self.terminate(vm, pid).await?;
        let _ = std::fs::remove_file(&paths.qmp);
        let _ = std::fs::remove_file(&paths.pid);
        self.forget(vm);
        Ok(())
    }

    /// SIGKILL first (the VM must not run one more instruction), then forget it.
    async fn kill_vm(&self, vm: &VmId) -> Result<(), VmError> {
        let paths = VmPaths::new(&self.inner.vm_dir, vm);
        let pid = qemu::read_pid(&paths.pid);
        if let Some(p) = pid {
            qemu::kill(p, vm);
        }
        self.terminate(vm, pid).await?;
        self.forget(vm);
        Ok(())
    }

    /// Has `vm`'s waiting qemu listen on a port of the range (`migrate-incoming`),
    /// moving on while QEMU says a port is in use.
    async fn listen_incoming(&self, vm: &VmId, addr: IpAddr) -> Result<u16, VmError> {
        let h = self
            .get(vm)
            .ok_or_else(|| VmError::NotFound { vm: vm.clone() })?;
        let listen = |port: u16| {
            let h = h.clone();
            async move {
                let uri = qemu::migration_uri(addr, port);
                match h
                    .execute("migrate-incoming", Some(json!({ "uri": uri })))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if address_in_use(&e) => Err(Attempt::InUse),
                    Err(source) => Err(Attempt::Failed(VmError::Qmp {
                        vm: h.id.clone(),
                        source,
                    })),
                }
            }
        };
        self.inner
            .ports
            .pick(addr, listen)
            .await
            .map_err(|e| match e {
                PickError::Exhausted(source) => VmError::NoMigrationPort {
                    vm: vm.clone(),
                    source,
                },
                PickError::Failed(e) => e,
            })
    }

    async fn run_migration(
        &self,
        h: &VmHandle,
        uri: &str,
        max_bandwidth_mib_s: u64,
        downtime_limit_ms: u64,
        progress: &mpsc::Sender<MigrationProgress>,
    ) -> Result<(u64, u64), VmError> {
        let vm = &h.id;
        let qmp_err = |source| VmError::Qmp {
            vm: vm.clone(),
            source,
        };
        let mut params = json!({});
        // 0 means "no limit" on our wire; QEMU's own default then applies.
        if max_bandwidth_mib_s > 0 {
            params["max-bandwidth"] = json!(max_bandwidth_mib_s * 1024 * 1024);
        }
        // The pause allowed starts short and rises only while the migration does not
        // converge (`downtime`): `downtime_limit_ms` is the most it may reach.
        let mut limit = crate::downtime::limit_after(0, downtime_limit_ms);
        if limit > 0 {
            params["downtime-limit"] = json!(limit);
        }
        h.execute("migrate-set-parameters", Some(params))
            .await
            .map_err(qmp_err)?;
        h.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map_err(qmp_err)?;
        let deadline = tokio::time::Instant::now() + MIGRATE_TIMEOUT;
        loop {
            let q = h.execute("query-migrate", None).await.map_err(qmp_err)?;
            let status = q
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("none")
                .to_owned();
            let ram = |k: &str| {
                q.get("ram")
                    .and_then(|r| r.get(k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            let p = MigrationProgress {
                status: status.clone(),
                transferred_bytes: ram("transferred"),
                remaining_bytes: ram("remaining"),
                total_bytes: ram("total"),
            };
            // Progress is advisory: drop it rather than stall the migration.
            let _ = progress.try_send(p);
            let want = crate::downtime::limit_after(ram("dirty-sync-count"), downtime_limit_ms);
            if want != limit && status == "active" {
                let set = json!({ "downtime-limit": want });
                match h.execute("migrate-set-parameters", Some(set)).await {
                    Ok(_) => {
                        tracing::info!(%vm, passes = ram("dirty-sync-count"), from_ms = limit,
                            to_ms = want, "migration not converging: allowed downtime raised");
                        limit = want;
                    }
                    // The migration goes on at the old limit; the next poll tries again.
                    Err(e) => {
                        tracing::warn!(%vm, error = %e, "could not raise the allowed downtime")
                    }
                }
            }
            let fail = |reason: String| VmError::Migration {
                vm: vm.clone(),
                uri: uri.to_owned(),
                status: status.clone(),
                reason,
            };
            match status.as_str() {
                "completed" => {
                    let n = |k: &str| q.get(k).and_then(Value::as_u64).unwrap_or(0);
                    return Ok((n("total-time"), n("downtime")));
                }
                "failed" | "cancelled" | "cancelling" => {
                    let reason = q
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("qemu gave no reason")
                        .to_owned();
                    return Err(fail(reason));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(format!(
                    "not finished after {} s",
                    MIGRATE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(MIGRATE_POLL).await;
        }
    }
}

/// The lifecycle operations the router's commands map to.
impl Hypervisor for VmManager {
    /// The status of every VM, sorted by id; VMs whose qemu is gone are dropped.
    fn statuses(&self) -> Vec<VmStatus> {
        let mut map = self.map();
        map.retain(|_, h| !h.is_finished());
        let mut v: Vec<VmStatus> = map.values().map(VmHandle::status).collect();
        drop(map);
        v.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Finds `*.qmp` sockets in vm_dir that have no task yet and starts one for each.
    /// Returns how many new VMs were found.
    fn scan(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(&self.inner.vm_dir) else {
            return 0;
        };
        let mut found = 0;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".qmp")) else {
                continue;
            };
            let Ok(id) = VmId::new(stem) else { continue };
            if self.get(&id).is_some() {
                continue;
            }
            self.register(&id);
            found += 1;
        }
        if found > 0 {
            self.inner.changes.notify_one();
        }
        found
    }

    /// Starts qemu for `spec` and waits until it runs. Idempotent: a VM that already
    /// runs here is left alone.
    async fn start(&self, spec: &VmSpec, epoch: u64) -> Result<(), VmError> {
        let _one = self.op_guard(&spec.name).await;
        self.launch(spec, epoch, false).await.map(|_| ())
    }

    /// ACPI powerdown (unless `force`), then `quit` after `timeout`, then SIGKILL.
    /// Keeps `<vm>.json` so the VM can be started again with the same epoch.
    async fn stop(&self, vm: &VmId, force: bool, timeout: Duration) -> Result<(), VmError> {
        let _one = self.op_guard(vm).await;
        self.stop_now(vm, force, timeout).await
    }

    /// Stops (forcefully) and removes every runtime file.
    async fn delete(&self, vm: &VmId) -> Result<(), VmError> {
        let _one = self.op_guard(vm).await;
        self.stop_now(vm, true, Duration::ZERO).await?;
        VmPaths::new(&self.inner.vm_dir, vm).remove_all();
        Ok(())
    }

    /// Starts qemu waiting for an incoming migration, listening on a free port of
    /// `migration_ports` on `addr`; returns the URI the source must migrate to.
    async fn prepare_incoming(
        &self,
        spec: &VmSpec,
        epoch: u64,
        addr: IpAddr,
    ) -> Result<String, VmError> {
        let vm = &spec.name;
        let _one = self.op_guard(vm).await;
        self.launch(spec, epoch, true).await?;
        match self.listen_incoming(vm, addr).await {
            Ok(port) => {
                let uri = qemu::migration_uri(addr, port);
                tracing::info!(vm = %vm, uri = %uri, "incoming migration listens");
                Ok(uri)
            }
            Err(e) => {
                // The router sends no cancel for a prepare that failed: the waiting
                // qemu goes now, or it would hold its memory for nothing. (Inline, not
                // `cancel_incoming`: this operation already holds the VM's lock.)
                match self.kill_vm(vm).await {
                    Ok(()) => VmPaths::new(&self.inner.vm_dir, vm).remove_all(),
                    Err(ce) => {
                        tracing::error!(vm = %vm, error = %ce, "cannot remove the qemu of a failed prepare")
                    }
                }
                Err(e)
            }
        }
    }

    /// Kills the waiting destination qemu and removes its files.
    async fn cancel_incoming(&self, vm: &VmId) -> Result<(), VmError> {
        let _one = self.op_guard(vm).await;
        self.kill_vm(vm).await?;
        VmPaths::new(&self.inner.vm_dir, vm).remove_all();
        Ok(())
    }

    /// Live-migrates `vm` to `uri`, sending progress on `progress`. On success the
    /// source qemu is quit and its files removed; returns (total_ms, downtime_ms). On
    /// failure the VM is kept running here.
    async fn migrate(
        &self,
        vm: &VmId,
        uri: &str,
        max_bandwidth_mib_s: u64,
        downtime_limit_ms: u64,
        progress: &mpsc::Sender<MigrationProgress>,
    ) -> Result<(u64, u64), VmError> {
        let h = self
            .get(vm)
            .ok_or_else(|| VmError::NotFound { vm: vm.clone() })?;
        match self
            .run_migration(&h, uri, max_bandwidth_mib_s, downtime_limit_ms, progress)
            .await
        {
            Ok(r) => {
                let paths = VmPaths::new(&self.inner.vm_dir, vm);
                let pid = qemu::read_pid(&paths.pid);
                if let Err(e) = self.terminate(vm, pid).await {
                    tracing::error!(vm = %vm, error = %e, "migrated VM's source qemu did not exit");
                }
                paths.remove_all();
                self.forget(vm);
                Ok(r)
            }
            Err(e) => {
                // Whatever went wrong, the VM must keep running here.
                let _ = h.execute("migrate_cancel", None).await;
                if let Ok(st) = h.execute("query-status", None).await {
                    if st.get("status").and_then(Value::as_str) != Some("running") {
                        if let Err(ce) = h.execute("cont", None).await {
                            tracing::error!(vm = %vm, error = %ce, "cannot resume VM after a failed migration");
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// The console log's tail; a VM never run here (no log at all) is not found.
    fn console_log(&self, vm: &VmId, max_bytes: usize) -> Result<String, VmError> {
        let paths = VmPaths::new(&self.inner.vm_dir, vm);
        let old = crate::console::previous(&paths.console_log);
        if !paths.console_log.exists() && !old.exists() && self.get(vm).is_none() {
            return Err(VmError::NotFound { vm: vm.clone() });
        }
        Ok(crate::console::tail(&paths.console_log, max_bytes))
    }

    fn virt(&self) -> Option<VirtCaps> {
        let mut v = self
            .inner
            .virt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Read each time: a bridge may be created or removed while the genie runs.
        v.networks = self
            .inner
            .opts
            .networks
            .iter()
            .filter(|(_, bridge)| taps::is_bridge(bridge))
            .map(|(name, _)| name.clone())
            .collect();
        Some(v)
    }

    /// VMs restarted elsewhere after a fence: kill them without grace and remove their
    /// files so they can never resume here.
    async fn drop_stale(&self, vms: &[VmId]) -> Result<(), VmError> {
        let mut first_err = None;
        for vm in vms {
            let _one = self.op_guard(vm).await;
            if let Err(e) = self.kill_vm(vm).await {
                first_err.get_or_insert(e);
            }
            VmPaths::new(&self.inner.vm_dir, vm).remove_all();
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl VmManager {
    /// The options VMs are started with.
    pub fn options(&self) -> &VmOptions {
        &self.inner.opts
    }
}

impl Fence for VmManager {
    /// Self-fence: SIGKILL every qemu with a pid file in vm_dir. Returns how many were
    /// signalled. Synchronous on purpose: it must not wait on anything that can hang.
    fn kill_all(&self) -> usize {
        let mut n = 0;
        let Ok(rd) = std::fs::read_dir(&self.inner.vm_dir) else {
            return 0;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".pid")) else {
                continue;
            };
            let Ok(vm) = VmId::new(stem) else { continue };
            if let Some(pid) = qemu::read_pid(&e.path()) {
                if qemu::kill(pid, &vm) {
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn manager() -> VmManager {
        VmManager::new(
            Path::new("/nonexistent-wisp-vm-dir"),
            Path::new("qemu-system-x86_64"),
            Default::default(),
        )
    }

    fn entries(m: &VmManager) -> usize {
        m.inner.ops.lock().unwrap().len()
    }

    /// One operation at a time per VM, others not held up; the lock's entry goes when
    /// the last holder or waiter is done, never while someone waits for it.
    #[tokio::test]
    async fn a_vms_operations_are_serialized_and_its_lock_entry_is_pruned() {
        let m = manager();
        let (a, b) = (VmId::new("a").unwrap(), VmId::new("b").unwrap());
        let first = m.op_guard(&a).await;
        // Another VM's operation does not wait.
        let other = tokio::time::timeout(Duration::from_secs(5), m.op_guard(&b))
            .await
            .expect("another VM's lock is free");
        drop(other);
        assert_eq!(entries(&m), 1, "b's entry is pruned once released");
        // A second operation on `a` waits for the first.
        let waiter = tokio::spawn({
            let (m, a) = (m.clone(), a.clone());
            async move { m.op_guard(&a).await }
        });
        // It is queued (holding its clone of the lock) before the first is released:
        // releasing must not remove the entry it waits on.
        tokio::time::timeout(Duration::from_secs(5), async {
            while Arc::strong_count(m.inner.ops.lock().unwrap().get(&a).unwrap()) < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the waiter queues on a's lock");
        assert!(!waiter.is_finished(), "ran beside the first operation");
        drop(first);
        assert_eq!(entries(&m), 1, "a's entry kept for its waiter");
        let second = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter runs once the first is done")
            .unwrap();
        // While the second holds it, a third must wait: still the same lock.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), m.op_guard(&a))
                .await
                .is_err(),
            "a third operation ran beside the second"
        );
        drop(second);
        assert_eq!(entries(&m), 0, "no entry left once nobody holds or waits");
    }
}
