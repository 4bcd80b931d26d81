//! `router vm console NAME`: an interactive serial console, relayed between the API
//! client (an upgraded HTTP/1.1 connection carrying raw bytes) and the genie of the
//! host that runs the VM (`Command::ConsoleAttach`/`ConsoleInput`/`ConsoleDetach` out,
//! `GenieMsg::ConsoleOutput`/`ConsoleClosed` in, routed here by the link).
//!
//! A session ends when the client closes, when the genie closes it (the VM stopped or
//! moved away, or the session fell behind), or when the link to the genie goes; the
//! client is told why in one last line before the connection closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use wisp_common::proto::{Command as GenieCommand, Outcome, MAX_CONSOLE_CHUNK};
use wisp_common::{HostId, VmId, VmRunState};

use super::{NotRunning, VmError};
use crate::cluster::{ClusterHandle, Command, Model};
use crate::link::GenieLink;

/// Output chunks queued per session before the client counts as too slow (~256 KiB).
const SESSION_QUEUE: usize = 64;

/// What the link hands a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Output(Vec<u8>),
    Closed(String),
}

static SESSIONS: LazyLock<Mutex<HashMap<u64, mpsc::Sender<Event>>>> = LazyLock::new(Mutex::default);
/// Session numbers start from the clock, so a restarted router does not reuse a number
/// a genie may still hold for a session of the previous process.
static NEXT: LazyLock<AtomicU64> = LazyLock::new(|| {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    AtomicU64::new(now)
});

fn sessions() -> std::sync::MutexGuard<'static, HashMap<u64, mpsc::Sender<Event>>> {
    SESSIONS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The link got `ConsoleOutput` for `session`. A client that does not keep up loses
/// its session (its queue closes) rather than holding up the link.
pub fn output(session: u64, bytes: Vec<u8>) {
    let mut s = sessions();
    if let Some(tx) = s.get(&session) {
        if tx.try_send(Event::Output(bytes)).is_err() {
            s.remove(&session);
        }
    }
}

/// The link got `ConsoleClosed` for `session`.
pub fn closed(session: u64, reason: String) {
    if let Some(tx) = sessions().remove(&session) {
        let _ = tx.try_send(Event::Closed(reason));
    }
}

/// A session attached on its genie, not yet relaying.
#[derive(Debug)]
pub struct Attached {
    pub vm: VmId,
    pub host: HostId,
    session: u64,
    link: GenieLink,
    events: mpsc::Receiver<Event>,
}

/// The host whose genie reports `vm` running, and its link.
#[derive(Debug)]
struct FindRunning {
    vm: VmId,
}

impl Command for FindRunning {
    type Output = Result<(HostId, GenieLink), VmError>;
    const NAME: &'static str = "find a running VM's console";

    fn apply(self, m: &mut Model) -> Self::Output {
        let seen = m.observed(&self.vm);
        if seen.is_empty() && !m.persisted.vms.contains_key(&self.vm) {
            return Err(VmError::NotFound { vm: self.vm });
        }
        let host = seen
            .iter()
            .find(|(_, s)| s.state == VmRunState::Running)
            .map(|(h, _)| h.clone())
            .ok_or_else(|| VmError::NotRunning {
                vm: self.vm.clone(),
                state: seen
                    .first()
                    .map(|(h, s)| NotRunning::Reported {
                        host: h.clone(),
                        state: s.state.clone(),
                    })
                    .unwrap_or(NotRunning::Nowhere),
            })?;
        let link = m.link_of(&host)?;
        Ok((host, link))
    }
}

/// Attaches a new session to `vm`'s console on the genie of the host that runs it.
pub async fn attach(c: &ClusterHandle, vm: VmId) -> Result<Attached, VmError> {
    let (host, link) = c
        .run(FindRunning { vm: vm.clone() })
        .await
        .ok_or(VmError::Shutdown)??;
    attach_via(vm, host, link).await
}

/// [`attach`] once the host is known (tests give a fake link).
pub async fn attach_via(vm: VmId, host: HostId, link: GenieLink) -> Result<Attached, VmError> {
    let session = NEXT.fetch_add(1, Ordering::Relaxed);
    let (tx, events) = mpsc::channel(SESSION_QUEUE);
    sessions().insert(session, tx);
    let cmd = GenieCommand::ConsoleAttach {
        vm: vm.clone(),
        session,
    };
    let answer = link.command(cmd, None).await;
    let fail = |e: VmError| {
        sessions().remove(&session);
        Err(e)
    };
    match answer {
        Ok(Outcome::Done) => Ok(Attached {
            vm,
            host,
            session,
            link,
            events,
        }),
        Ok(Outcome::Failed { error }) => fail(VmError::Genie {
            vm,
            host,
            message: error,
        }),
        Ok(other) => fail(VmError::Unexpected {
            vm,
            host,
            answer: format!("{other:?}"),
        }),
        Err(e) => fail(VmError::Link(e)),
    }
}

/// Relays bytes between `io` (the client) and the session until one side ends; returns
/// why. The genie's side is detached in every case.
pub async fn relay<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, mut a: Attached) -> String {
    let mut buf = vec![0u8; MAX_CONSOLE_CHUNK];
    let (reason, tell) = loop {
        tokio::select! {
            ev = a.events.recv() => match ev {
                Some(Event::Output(b)) => {
                    if io.write_all(&b).await.is_err() || io.flush().await.is_err() {
                        break ("the client went away".to_string(), false);
                    }
                }
                Some(Event::Closed(r)) => break (r, true),
                None => break ("the client fell behind the console's output".to_string(), true),
            },
            n = io.read(&mut buf) => match n {
                Ok(0) | Err(_) => break ("the client left".to_string(), false),
                Ok(n) => {
                    let cmd = GenieCommand::ConsoleInput { session: a.session, bytes: buf[..n].to_vec() };
                    // Waiting for each reply keeps keystrokes in order (the genie runs
                    // each command in its own task).
                    match a.link.command(cmd, None).await {
                        Ok(Outcome::Done) => {}
                        Ok(Outcome::Failed { error }) => break (error, true),
                        Ok(other) => break (format!("unexpected answer from the genie: {other:?}"), true),
                        Err(e) => break (e.to_string(), true),
                    }
                }
            },
            _ = a.link.closed() => break (format!("the link to host {} closed", a.host), true),
        }
    };
    if tell {
        let line = format!("\r\n[wisp: console of {} closed: {reason}]\r\n", a.vm);
        let _ = io.write_all(line.as_bytes()).await;
    }
    let _ = io.shutdown().await;
    abandon(a).await;
    reason
}

/// Ends a session here and on its genie (best effort: a genie that is gone has no
/// session left to end).
pub async fn abandon(a: Attached) {
    sessions().remove(&a.session);
    let _ = a
        .link
        .command(GenieCommand::ConsoleDetach { session: a.session }, None)
        .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vm() -> VmId {
        VmId::new("c1").unwrap()
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_a_genie_close_is_told_to_the_client() {
        let (link, mut genie) = GenieLink::fake("h1");
        let host = HostId::new("h1").unwrap();
        let fake_genie = tokio::spawn(async move {
            let mut session = 0;
            let mut inputs = Vec::new();
            while let Some(req) = genie.recv().await {
                match req.command() {
                    GenieCommand::ConsoleAttach { session: s, .. } => session = *s,
                    GenieCommand::ConsoleInput { bytes, .. } => {
                        inputs.extend_from_slice(bytes);
                        // Echo, as a shell on a serial line does.
                        output(session, bytes.clone());
                        if inputs.ends_with(b"bye\n") {
                            closed(session, "the VM stopped".into());
                        }
                    }
                    GenieCommand::ConsoleDetach { .. } => {
                        req.answer(Outcome::Done);
                        return inputs;
                    }
                    other => panic!("{other:?}"),
                }
                req.answer(Outcome::Done);
            }
            inputs
        });
        let a = attach_via(vm(), host, link).await.unwrap();
        let (mut client, server) = tokio::io::duplex(1024);
        let relay = tokio::spawn(relay(server, a));
        client.write_all(b"echo hi\n").await.unwrap();
        let mut got = vec![0u8; 8];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"echo hi\n");
        client.write_all(b"bye\n").await.unwrap();
        let mut rest = String::new();
        client.read_to_string(&mut rest).await.unwrap();
        assert!(rest.starts_with("bye\n"), "{rest}");
        assert!(rest.contains("closed: the VM stopped"), "{rest}");
        assert_eq!(relay.await.unwrap(), "the VM stopped");
        assert_eq!(fake_genie.await.unwrap(), b"echo hi\nbye\n");
    }

    #[tokio::test]
    async fn a_genie_refusal_is_an_error_and_leaves_no_session() {
        let (link, mut genie) = GenieLink::fake("h1");
        let (seen_tx, mut seen) = mpsc::channel(1);
        tokio::spawn(async move {
            while let Some(req) = genie.recv().await {
                if let GenieCommand::ConsoleAttach { session, .. } = req.command() {
                    let _ = seen_tx.send(*session).await;
                }
                req.answer(Outcome::Failed {
                    error: "VM c1 has no console reader on this host".into(),
                });
            }
        });
        let e = attach_via(vm(), HostId::new("h1").unwrap(), link)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no console reader"), "{e}");
        let session = seen.recv().await.unwrap();
        assert!(
            !sessions().contains_key(&session),
            "the session was left behind"
        );
    }
}
