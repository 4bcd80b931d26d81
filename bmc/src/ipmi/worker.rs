//! The per-BMC worker thread: one OS thread owns one BMC's IPMI session and runs
//! requests one at a time, fed by a channel with oneshot replies.
//!
//! Why a thread: ipmi-rs does blocking I/O on a std `UdpSocket` and may panic
//! (`unwrap` on a send error). Each call into it is wrapped in `catch_unwind`; a
//! panic drops the session and the next request opens a fresh one. The caller's
//! deadline is enforced on the async side (see `mod.rs`), so even a thread stuck
//! forever cannot stall the router: the handle is then abandoned and replaced.
//!
//! Sessions are reused between requests (saves 4 round trips per call) until they
//! fail or sit idle longer than `SESSION_IDLE_MAX`, and are closed (Close Session)
//! when the worker stops.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::chassis::{self, RawRequest};
use crate::bmc::{BmcError, PowerAction, PowerState};

/// BMCs expire idle sessions (ipmi_sim after 60 s; real BMCs often 60 s or less).
/// Reopening before that avoids a request lost to a silently expired session, which
/// matters for `cycle`/`reset` that are not retried once they may have been sent.
pub const SESSION_IDLE_MAX: Duration = Duration::from_secs(20);

/// Floor for the per-reply wait: below this a loaded 2-core machine turns healthy
/// BMCs into timeouts.
const MIN_READ_TIMEOUT: Duration = Duration::from_millis(50);

/// Opens authenticated sessions to one BMC (the real one wraps ipmi-rs).
pub trait Connector: Send + 'static {
    /// Opens a session with privilege Administrator; every wait for a reply is
    /// bounded by `read_timeout`.
    fn connect(&mut self, read_timeout: Duration) -> Result<Box<dyn Session>, BmcError>;
}

/// An open IPMI session.
pub trait Session: Send {
    /// Sends one request and returns the reply data after a zero completion code;
    /// a non-zero code is `BmcError::Completion`.
    fn call(&mut self, req: &RawRequest) -> Result<Vec<u8>, BmcError>;

    /// The BMC's id of this session, for Close Session. Without it the worker
    /// closes by session handle (IPMI 2.0 allows it; ipmi_sim does not: cc 0x87).
    fn session_id(&self) -> Option<u32> {
        None
    }
}

/// What a caller asks of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Status,
    Power(PowerAction),
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(PowerState),
    Done,
}

#[derive(Debug)]
pub struct Job {
    pub op: Op,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Reply, BmcError>>,
}

/// Timing of one BMC's requests.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub timeout: Duration,
    pub retries: u32,
}

/// Starts the worker thread; it ends when the sender is dropped (after closing its
/// session).
pub fn spawn(
    addr: SocketAddr,
    settings: Settings,
    connector: Box<dyn Connector>,
) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(format!("ipmi {addr}"))
        .spawn(move || {
            let mut w = Worker {
                addr,
                settings,
                connector,
                session: None,
            };
            while let Ok(job) = rx.recv() {
                if job.reply.is_closed() {
                    continue; // the caller gave up: do not act on a stale request
                }
                let res = w.run(job.op, job.deadline);
                let _ = job.reply.send(res);
            }
            w.close_session();
        })?;
    Ok(tx)
}

struct Worker {
    addr: SocketAddr,
    settings: Settings,
    connector: Box<dyn Connector>,
    session: Option<(Box<dyn Session>, Instant)>,
}

/// Runs `f`, turning a panic into an error. ipmi-rs panics with the io error in its
/// message when a send fails: a refused port is reported as such.
fn guarded<T>(addr: SocketAddr, f: impl FnOnce() -> Result<T, BmcError>) -> Result<T, BmcError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".to_owned());
            if msg.contains("ConnectionRefused") {
                Err(BmcError::Refused { addr })
            } else {
                Err(BmcError::Worker {
                    addr,
                    what: format!("panic inside ipmi-rs: {msg}"),
                })
            }
        }
    }
}

impl Worker {
    fn run(&mut self, op: Op, deadline: Instant) -> Result<Reply, BmcError> {
        let start = Instant::now();
        if op == Op::Close {
            self.close_session();
            return Ok(Reply::Done);
        }
        let attempts = self.settings.retries.saturating_add(1);
        // Leave 10% of the budget so the worker's own error beats the caller's
        // deadline and the worker is not needlessly abandoned.
        let per_attempt = (self.settings.timeout.mul_f64(0.9) / attempts).max(MIN_READ_TIMEOUT);
        let retry_after_send = match op {
            Op::Power(a) => a.is_idempotent(),
            _ => true,
        };
        let mut last = None;
        for _ in 0..attempts {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let read_timeout = per_attempt.min(deadline - now).max(MIN_READ_TIMEOUT);
            if let Some((_, used)) = &self.session {
                if used.elapsed() > SESSION_IDLE_MAX {
                    self.close_session();
                }
            }
            let mut session = match self.session.take() {
                Some((s, _)) => s,
                None => {
                    let addr = self.addr;
                    let connector = &mut self.connector;
                    match guarded(addr, || connector.connect(read_timeout)) {
                        Ok(s) => s,
                        Err(e) if e.is_transient() => {
                            last = Some(e);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let res = guarded(self.addr, || execute(session.as_mut(), op, self.addr));
            match res {
                Ok(r) => {
                    self.session = Some((session, Instant::now()));
                    return Ok(r);
                }
                Err(e @ BmcError::Completion { .. }) => {
                    // The session works; the BMC said no.
                    self.session = Some((session, Instant::now()));
                    if e.is_transient() && retry_after_send {
                        last = Some(e);
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => {
                    // The session is broken or lost: drop it without Close Session.
                    drop(session);
                    if e.is_transient() && retry_after_send {
                        last = Some(e);
                        continue;
                    }
                    return Err(with_elapsed(e, start));
                }
            }
        }
        Err(with_elapsed(
            last.unwrap_or(BmcError::Timeout {
                addr: self.addr,
                after: start.elapsed(),
            }),
            start,
        ))
    }

    /// Best-effort Close Session, so BMCs with few session slots do not fill up.
    fn close_session(&mut self) {
        if let Some((mut s, _)) = self.session.take() {
            let r = guarded(self.addr, || {
                if let Some(id) = s.session_id() {
                    s.call(&chassis::close_session_id(id))?;
                    return Ok(());
                }
                let info = s.call(&chassis::get_session_info_current())?;
                if let Some(&handle) = info.first() {
                    s.call(&chassis::close_session(handle))?;
                }
                Ok(())
            });
            if let Err(e) = r {
                tracing::debug!(bmc = %self.addr, error = %e, "Close Session failed");
            }
        }
    }
}

fn with_elapsed(e: BmcError, start: Instant) -> BmcError {
    match e {
        BmcError::Timeout { addr, .. } => BmcError::Timeout {
            addr,
            after: start.elapsed(),
        },
        other => other,
    }
}

fn execute(session: &mut dyn Session, op: Op, addr: SocketAddr) -> Result<Reply, BmcError> {
    match op {
        Op::Status => {
            let req = chassis::get_chassis_status();
            let data = session.call(&req)?;
            chassis::parse_chassis_status(&data)
                .map(Reply::Status)
                .ok_or_else(|| BmcError::Protocol {
                    addr,
                    stage: req.name,
                    detail: "empty reply".into(),
                })
        }
        Op::Power(action) => {
            session.call(&chassis::chassis_control(action))?;
            Ok(Reply::Done)
        }
        Op::Close => Ok(Reply::Done),
    }
}
