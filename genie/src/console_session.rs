//! Interactive console sessions: the serial output the genie already reads for the log
//! (`crate::console::keep_reading`) is fanned out to the sessions attached to that VM,
//! and their input is written to the same chardev socket (QEMU serves one client).
//!
//! Each session has a bounded queue; a session that falls behind is dropped, so it
//! never slows the reader or the log. Sessions live in a process-wide table keyed by
//! the session number the router chose.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use wisp_common::proto::GenieMsg;
use wisp_common::VmId;

/// Output chunks queued per session before it counts as fallen behind (~256 KiB).
const SESSION_QUEUE: usize = 64;
/// Input chunks queued for the serial port.
const INPUT_QUEUE: usize = 16;
/// A serial port that does not take input for this long fails the input.
const INPUT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("VM {vm} has no console reader on this host (not running here?)")]
    NoConsole { vm: VmId },
    #[error("console session {session} is not attached here")]
    NoSession { session: u64 },
    #[error("the serial port of VM {vm} is not connected (QEMU not listening yet?)")]
    NotConnected { vm: VmId },
    #[error("the serial port of VM {vm} did not take input within {} s", INPUT_TIMEOUT.as_secs())]
    InputStuck { vm: VmId },
}

struct Sub {
    tx: mpsc::Sender<Vec<u8>>,
    slow: Arc<AtomicBool>,
}

/// One VM's console: who listens, and where input goes.
struct Hub {
    /// Which reader owns this hub: a newer reader of the same VM replaces it.
    owner: u64,
    input: Option<mpsc::Sender<Vec<u8>>>,
    subs: HashMap<u64, Sub>,
}

#[derive(Default)]
struct Table {
    hubs: HashMap<VmId, Hub>,
    sessions: HashMap<u64, VmId>,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

fn table() -> std::sync::MutexGuard<'static, Table> {
    // A panic while holding the lock leaves plain maps behind: still usable.
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A console reader's registration; dropping it (the reader ends or is aborted with
/// its VM task) ends every session of the VM.
#[derive(Debug)]
pub struct Registration {
    vm: VmId,
    owner: u64,
}

/// Called by the console reader when it starts.
pub fn register(vm: &VmId) -> Registration {
    let owner = NEXT_OWNER.fetch_add(1, Ordering::Relaxed);
    let mut t = table();
    let old = t.hubs.insert(
        vm.clone(),
        Hub {
            owner,
            input: None,
            subs: HashMap::new(),
        },
    );
    // A stale reader's sessions follow the new one.
    if let Some(old) = old {
        if let Some(h) = t.hubs.get_mut(vm) {
            h.subs = old.subs;
        }
    }
    Registration {
        vm: vm.clone(),
        owner,
    }
}

impl Registration {
    /// The reader (dis)connected to the serial socket: where input goes now.
    pub fn set_input(&self, input: Option<mpsc::Sender<Vec<u8>>>) {
        if let Some(h) = table().hubs.get_mut(&self.vm) {
            if h.owner == self.owner {
                h.input = input;
            }
        }
    }

    /// Hands `bytes` to every session of the VM; a session whose queue is full is
    /// dropped (it learns why when its queue ends).
    pub fn publish(&self, bytes: &[u8]) {
        let mut guard = table();
        let Table { hubs, sessions } = &mut *guard;
        let Some(h) = hubs.get_mut(&self.vm) else {
            return;
        };
        if h.subs.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        for (id, s) in &h.subs {
            if let Err(e) = s.tx.try_send(bytes.to_vec()) {
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    s.slow.store(true, Ordering::Relaxed);
                }
                gone.push(*id);
            }
        }
        for id in gone {
            h.subs.remove(&id);
            sessions.remove(&id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = table();
        if t.hubs.get(&self.vm).is_some_and(|h| h.owner == self.owner) {
            if let Some(h) = t.hubs.remove(&self.vm) {
                for id in h.subs.keys() {
                    t.sessions.remove(id);
                }
            }
        }
    }
}

/// Attaches `session` to `vm`'s console; its output goes to `out` as
/// `ConsoleOutput` until it ends, then one `ConsoleClosed` says why.
pub fn attach(vm: &VmId, session: u64, out: mpsc::Sender<GenieMsg>) -> Result<(), SessionError> {
    let (tx, mut rx) = mpsc::channel(SESSION_QUEUE);
    let slow = Arc::new(AtomicBool::new(false));
    {
        let mut t = table();
        let h = t
            .hubs
            .get_mut(vm)
            .ok_or_else(|| SessionError::NoConsole { vm: vm.clone() })?;
        h.subs.insert(
            session,
            Sub {
                tx,
                slow: slow.clone(),
            },
        );
        t.sessions.insert(session, vm.clone());
    }
    let vm = vm.clone();
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if out
                .send(GenieMsg::ConsoleOutput { session, bytes })
                .await
                .is_err()
            {
                return;
            }
        }
        let reason = if slow.load(Ordering::Relaxed) {
            "the session fell behind the console's output".to_string()
        } else {
            format!("the console of {vm} closed (the VM stopped, moved away or the session ended)")
        };
        let _ = out.send(GenieMsg::ConsoleClosed { session, reason }).await;
    });
    Ok(())
}

/// Writes `bytes` to the serial port of `session`'s VM.
pub async fn input(session: u64, bytes: Vec<u8>) -> Result<(), SessionError> {
    let (vm, tx) = {
        let t = table();
        let vm = t
            .sessions
            .get(&session)
            .cloned()
            .ok_or(SessionError::NoSession { session })?;
        let tx = t.hubs.get(&vm).and_then(|h| h.input.clone());
        (vm, tx)
    };
    let tx = tx.ok_or_else(|| SessionError::NotConnected { vm: vm.clone() })?;
    match tokio::time::timeout(INPUT_TIMEOUT, tx.send(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SessionError::NotConnected { vm }),
        Err(_) => Err(SessionError::InputStuck { vm }),
    }
}

/// Ends `session` (its task then sends `ConsoleClosed`).
pub fn detach(session: u64) {
    let mut t = table();
    if let Some(vm) = t.sessions.remove(&session) {
        if let Some(h) = t.hubs.get_mut(&vm) {
            h.subs.remove(&session);
        }
    }
}

/// Ends every session: called when a new link to a router starts, since a router ends
/// its side of each session when the link that carried it closes.
pub fn detach_all() {
    let mut t = table();
    t.sessions.clear();
    for h in t.hubs.values_mut() {
        h.subs.clear();
    }
}

/// The queue a reader gives [`Registration::set_input`], and its receiving end.
pub fn input_channel() -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    mpsc::channel(INPUT_QUEUE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vm(n: &str) -> VmId {
        VmId::new(n).unwrap()
    }

    #[tokio::test]
    async fn output_fans_out_input_arrives_and_the_vm_end_closes_sessions() {
        let reg = register(&vm("cs-a"));
        let (in_tx, mut in_rx) = input_channel();
        reg.set_input(Some(in_tx));
        let (out, mut got) = mpsc::channel(16);
        attach(&vm("cs-a"), 901, out.clone()).unwrap();
        attach(&vm("cs-a"), 902, out).unwrap();
        reg.publish(b"hello");
        let mut seen = Vec::new();
        for _ in 0..2 {
            match got.recv().await.unwrap() {
                GenieMsg::ConsoleOutput { session, bytes } => {
                    assert_eq!(bytes, b"hello");
                    seen.push(session);
                }
                other => panic!("{other:?}"),
            }
        }
        seen.sort();
        assert_eq!(seen, [901, 902]);
        input(901, b"ls\n".to_vec()).await.unwrap();
        assert_eq!(in_rx.recv().await.unwrap(), b"ls\n");
        detach(902);
        assert!(matches!(
            input(902, b"x".to_vec()).await,
            Err(SessionError::NoSession { session: 902 })
        ));
        drop(reg);
        let mut closed = Vec::new();
        while closed.len() < 2 {
            if let GenieMsg::ConsoleClosed { session, .. } = got.recv().await.unwrap() {
                closed.push(session);
            }
        }
        closed.sort();
        assert_eq!(closed, [901, 902]);
        assert!(matches!(
            attach(&vm("cs-a"), 903, mpsc::channel(1).0),
            Err(SessionError::NoConsole { .. })
        ));
    }

    #[tokio::test]
    async fn a_session_that_falls_behind_is_dropped_and_told_why() {
        let reg = register(&vm("cs-b"));
        // The link's queue holds one message and nobody reads it yet.
        let (out, mut got) = mpsc::channel(1);
        attach(&vm("cs-b"), 911, out).unwrap();
        for _ in 0..(SESSION_QUEUE + 8) {
            reg.publish(b"x");
        }
        assert!(!table().sessions.contains_key(&911), "dropped");
        let reason = loop {
            if let GenieMsg::ConsoleClosed {
                session: 911,
                reason,
            } = got.recv().await.unwrap()
            {
                break reason;
            }
        };
        assert!(reason.contains("fell behind"), "{reason}");
    }
}
