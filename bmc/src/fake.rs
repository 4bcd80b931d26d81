//! Hand-written fakes of `Bmc` and `Waker` for unit tests of router logic: fault
//! injection (stop answering, wrong password, delay) and counters of what was done.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::bmc::{Bmc, BmcError, BoxFuture, PowerAction, PowerState};
use crate::wol::{MacAddr, WakeError, WakeReport, Waker};

/// A fault the fake BMC shows until changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeBmcFault {
    /// Answers normally.
    None,
    /// Never answers: every call fails with `Timeout` after the fake's timeout
    /// (use `tokio::time::pause` to make that instant in tests).
    Silent,
    /// Every call fails with `Auth`.
    WrongPassword,
    /// Every call fails with `Refused`.
    Refused,
}

#[derive(Debug)]
struct FakeBmcState {
    power: PowerState,
    fault: FakeBmcFault,
    delay: Duration,
    actions: Vec<PowerAction>,
}

/// A BMC in memory: `power` changes its state like a real chassis would at once.
#[derive(Debug)]
pub struct FakeBmc {
    addr: SocketAddr,
    timeout: Duration,
    state: Mutex<FakeBmcState>,
    status_calls: AtomicU64,
    shutdowns: AtomicU64,
}

impl FakeBmc {
    pub fn new(addr: SocketAddr, power: PowerState) -> Self {
        Self {
            addr,
            timeout: Duration::from_secs(5),
            state: Mutex::new(FakeBmcState {
                power,
                fault: FakeBmcFault::None,
                delay: Duration::ZERO,
                actions: Vec::new(),
            }),
            status_calls: AtomicU64::new(0),
            shutdowns: AtomicU64::new(0),
        }
    }

    /// The timeout after which a `Silent` fake reports `Timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeBmcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_fault(&self, fault: FakeBmcFault) {
        self.lock().fault = fault;
    }
    /// Delay before every answer (a slow BMC).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }
    /// Changes the power state behind the router's back (a human at the console).
    pub fn set_power(&self, power: PowerState) {
        self.lock().power = power;
    }
    pub fn power_state(&self) -> PowerState {
        self.lock().power
    }
    /// Every accepted `power` action, in order.
    pub fn actions(&self) -> Vec<PowerAction> {
        self.lock().actions.clone()
    }
    pub fn status_calls(&self) -> u64 {
        self.status_calls.load(Ordering::Relaxed)
    }
    pub fn shutdowns(&self) -> u64 {
        self.shutdowns.load(Ordering::Relaxed)
    }

    async fn answer(&self) -> Result<(), BmcError> {
        let (fault, delay) = {
            let s = self.lock();
            (s.fault, s.delay)
        };
        match fault {
            FakeBmcFault::None => {
                if delay >= self.timeout {
                    tokio::time::sleep(self.timeout).await;
                    return Err(BmcError::Timeout {
                        addr: self.addr,
                        after: self.timeout,
                    });
                }
                tokio::time::sleep(delay).await;
                Ok(())
            }
            FakeBmcFault::Silent => {
                tokio::time::sleep(self.timeout).await;
                Err(BmcError::Timeout {
                    addr: self.addr,
                    after: self.timeout,
                })
            }
            FakeBmcFault::WrongPassword => Err(BmcError::Auth {
                addr: self.addr,
                user: "admin".into(),
                detail: "wrong password (fake)".into(),
            }),
            FakeBmcFault::Refused => Err(BmcError::Refused { addr: self.addr }),
        }
    }
}

impl Bmc for FakeBmc {
    fn power_status(&self) -> BoxFuture<'_, Result<PowerState, BmcError>> {
        Box::pin(async move {
            self.status_calls.fetch_add(1, Ordering::Relaxed);
            self.answer().await?;
            Ok(self.lock().power)
        })
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BmcError>> {
        Box::pin(async move {
            self.answer().await?;
            let mut s = self.lock();
            s.actions.push(action);
            s.power = match action {
                PowerAction::Off | PowerAction::Soft => PowerState::Off,
                PowerAction::On | PowerAction::Cycle => PowerState::On,
                PowerAction::Reset => s.power,
            };
            Ok(())
        })
    }

    fn address(&self) -> SocketAddr {
        self.addr
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shutdowns.fetch_add(1, Ordering::Relaxed);
        })
    }
}

/// A waker that records wakes; `set_fail` makes it return an error instead.
#[derive(Debug, Default)]
pub struct FakeWaker {
    wakes: Mutex<Vec<MacAddr>>,
    fail: Mutex<bool>,
}

impl FakeWaker {
    pub fn new() -> Self {
        Self::default()
    }
    /// MACs woken so far, in order.
    pub fn wakes(&self) -> Vec<MacAddr> {
        self.wakes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn set_fail(&self, fail: bool) {
        *self.fail.lock().unwrap_or_else(|p| p.into_inner()) = fail;
    }
}

impl Waker for FakeWaker {
    fn wake(&self, mac: MacAddr) -> BoxFuture<'_, Result<WakeReport, WakeError>> {
        Box::pin(async move {
            if *self.fail.lock().unwrap_or_else(|p| p.into_inner()) {
                return Err(WakeError::NothingSent {
                    mac,
                    interface: "fake".into(),
                });
            }
            self.wakes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(mac);
            Ok(WakeReport {
                mac,
                raw_frames: 1,
                udp_packets: 1,
                elapsed: Duration::ZERO,
            })
        })
    }
}
