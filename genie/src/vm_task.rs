//! One task per VM: it owns the VM's QMP connection; everybody else holds a
//! [`VmHandle`] and talks to it over a channel with oneshot replies.
//!
//! The task keeps the VM's last known status in a watch channel, refreshes it on every
//! QMP event and on a slow poll, and pokes the shared `changes` notifier when the run
//! state changes so the link can send an immediate VM report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use wisp_common::proto::VmStatus;
use wisp_common::{VmId, VmRunState};

use crate::qemu::{self, VmPaths};
use crate::qmp::{self, Qmp, QmpError};

/// How often a VM's status is re-read without an event. Events (STOP, RESUME,
/// SHUTDOWN, …) trigger an immediate re-read, so this only catches what QEMU does not
/// announce and bounds how stale a report can be.
pub const POLL: Duration = Duration::from_secs(1);

/// A socket with no pid file that refuses connections (nobody listens on it) for this
/// long is a leftover of a qemu that is gone. A socket that accepts but does not answer
/// is a busy or hung monitor and is kept: deleting it would orphan a live qemu.
pub const ORPHAN_SOCKET_AFTER: Duration = Duration::from_secs(10);

enum Request {
    Execute {
        command: String,
        arguments: Option<Value>,
        reply: oneshot::Sender<Result<Value, QmpError>>,
    },
}

/// The handle others hold to a VM's task.
#[derive(Debug, Clone)]
pub struct VmHandle {
    pub id: VmId,
    pub paths: VmPaths,
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<VmStatus>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Execute { command, .. } => write!(f, "Execute({command})"),
        }
    }
}

impl VmHandle {
    /// Runs a QMP command on the VM's connection.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let (reply, rx) = oneshot::channel();
        let closed = || QmpError::Closed {
            path: self.paths.qmp.clone(),
        };
        self.tx
            .send(Request::Execute {
                command: command.to_owned(),
                arguments,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// The last status, with the qemu process's CPU time read now.
    pub fn status(&self) -> VmStatus {
        let mut s = self.status.borrow().clone();
        s.cpu_time_ms = s.pid.and_then(qemu::cpu_time_ms).unwrap_or(s.cpu_time_ms);
        s
    }

    pub fn state(&self) -> VmRunState {
        self.status.borrow().state.clone()
    }

    /// Waits until the state satisfies `pred` or `timeout` passes; returns the last state.
    /// Every state change is announced on the task's watch channel, so this waits for
    /// the announcement instead of polling (`wisp_common::wait` is for what is not).
    pub async fn wait_state(
        &self,
        timeout: Duration,
        pred: impl Fn(&VmRunState) -> bool,
    ) -> VmRunState {
        let mut rx = self.status.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| pred(&s.state))).await;
        let st = rx.borrow().state.clone();
        st
    }

    /// True once the task has ended (its qemu is gone).
    pub fn is_finished(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Starts the task of VM `id` and returns its handle.
pub fn spawn(id: VmId, paths: VmPaths, changes: Arc<Notify>) -> VmHandle {
    // Until QMP answers, the size comes from the spec we started the VM with (if we did).
    let runtime = qemu::read_runtime_file(&paths.json);
    let initial = VmStatus {
        id: id.clone(),
        state: VmRunState::Unreachable,
        vcpus: runtime.as_ref().map_or(0, |r| r.spec.vcpus),
        mem_mib: runtime.as_ref().map_or(0, |r| r.spec.mem_mib),
        cpu_time_ms: 0,
        pid: qemu::read_pid(&paths.pid),
        qmp_socket: paths.qmp.clone(),
        epoch: runtime.map_or(0, |r| r.epoch),
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (tx, rx) = mpsc::channel(8);
    let pid_file = paths.pid.clone();
    let console = tokio::spawn(crate::console::keep_reading(
        id.clone(),
        paths.console.clone(),
        paths.console_log.clone(),
        move || qemu::read_pid(&pid_file).is_some_and(qemu::is_alive),
    ));
    let task = VmTask {
        _console: AbortOnDrop(console),
        id: id.clone(),
        qmp_path: paths.qmp.clone(),
        paths: paths.clone(),
        status: status_tx,
        changes,
        qmp: None,
        started: Instant::now(),
        sized: false,
    };
    tokio::spawn(task.run(rx));
    VmHandle {
        id,
        paths,
        tx,
        status: status_rx,
    }
}

/// Ends the console reader with the VM's task.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct VmTask {
    _console: AbortOnDrop,
    id: VmId,
    qmp_path: PathBuf,
    paths: VmPaths,
    status: watch::Sender<VmStatus>,
    changes: Arc<Notify>,
    qmp: Option<Qmp>,
    started: Instant,
    sized: bool,
}

impl VmTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                req = rx.recv() => {
                    let Some(Request::Execute { command, arguments, reply }) = req else {
                        // Every handle dropped: the manager forgot this VM.
                        return;
                    };
                    let r = match self.connection().await {
                        Ok(q) => q.execute(&command, arguments).await,
                        Err(e) => Err(e),
                    };
                    if matches!(r, Err(ref e) if !matches!(e, QmpError::Command { .. })) {
                        self.qmp = None;
                    }
                    let _ = reply.send(r);
                }
                ev = next_event(&mut self.qmp) => {
                    if let Err(e) = ev {
                        tracing::debug!(vm = %self.id, error = %e, "QMP connection lost");
                        self.qmp = None;
                    }
                }
                _ = poll.tick() => {}
            }
            if rx.is_closed() {
                // Forgotten by the manager (stopped, replaced): the files may already
                // belong to a new qemu of the same name, so touch nothing.
                return;
            }
            if !self.refresh().await {
                tracing::info!(vm = %self.id, "qemu is gone; forgetting the VM");
                // Leftover socket and pid file would make the next scan rediscover it.
                let _ = std::fs::remove_file(&self.paths.qmp);
                let _ = std::fs::remove_file(&self.paths.pid);
                self.status.send_modify(|s| s.state = VmRunState::Stopped);
                self.changes.notify_one();
                return;
            }
        }
    }

    async fn connection(&mut self) -> Result<&mut Qmp, QmpError> {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.qmp_path).await?);
        }
        Ok(self.qmp.as_mut().expect("just connected"))
    }

    /// Re-reads the status; false when the qemu process is gone for good.
    async fn refresh(&mut self) -> bool {
        let pid = qemu::read_pid(&self.paths.pid);
        let state = match self.query().await {
            Ok(s) => s,
            Err(e) => {
                self.qmp = None;
                match pid {
                    Some(p) if !qemu::is_alive(p) => return false,
                    None if self.started.elapsed() > ORPHAN_SOCKET_AFTER && nobody_listens(&e) => {
                        return false
                    }
                    _ => {}
                }
                tracing::debug!(vm = %self.id, error = %e, "QMP socket does not answer");
                VmRunState::Unreachable
            }
        };
        let changed = self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            s.pid = pid;
            changed
        });
        if changed {
            self.changes.notify_one();
        }
        true
    }

    async fn query(&mut self) -> Result<VmRunState, QmpError> {
        let sized = self.sized;
        let q = self.connection().await?;
        let state = qmp::query_status(q).await?;
        if !sized {
            let (vcpus, mem_mib) = qmp::query_size(q).await?;
            self.status.send_modify(|s| {
                s.vcpus = vcpus;
                s.mem_mib = mem_mib;
            });
            self.sized = true;
        }
        // Events seen while querying are covered by the status we just read.
        if let Some(q) = self.qmp.as_mut() {
            q.take_events();
        }
        Ok(state)
    }
}

fn nobody_listens(e: &QmpError) -> bool {
    matches!(e, QmpError::Connect { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound))
}

async fn next_event(qmp: &mut Option<Qmp>) -> Result<qmp::QmpEvent, QmpError> {
    match qmp {
        Some(q) => q.next_event().await,
        None => std::future::pending().await,
    }
}
