//! The IpmiBmc handle with fake connectors: a panic or a hang inside the blocking
//! IPMI code can never stall or crash the caller, and the next call recovers.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wisp_bmc::ipmi::chassis::RawRequest;
use wisp_bmc::ipmi::worker::{Connector, Session, Settings};
use wisp_bmc::{Bmc, BmcError, IpmiBmc, PowerAction, PowerState};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    PanicOnCall,
    PanicOnConnect,
    HangOnCall,
    AuthFail,
    TimeoutOnCall,
}

#[derive(Default)]
struct Shared {
    connects: AtomicU32,
    calls: Mutex<Vec<(u8, u8, Vec<u8>)>>,
}

struct FakeConnector {
    mode: Arc<Mutex<Mode>>,
    shared: Arc<Shared>,
}

struct FakeSession {
    mode: Arc<Mutex<Mode>>,
    shared: Arc<Shared>,
}

fn addr() -> SocketAddr {
    "127.0.0.1:623".parse().unwrap()
}

impl Connector for FakeConnector {
    fn connect(&mut self, _read_timeout: Duration) -> Result<Box<dyn Session>, BmcError> {
        self.shared.connects.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::PanicOnConnect => panic!("fake panic in connect"),
            Mode::AuthFail => Err(BmcError::Auth {
                addr: addr(),
                user: "admin".into(),
                detail: "fake".into(),
            }),
            _ => Ok(Box::new(FakeSession {
                mode: self.mode.clone(),
                shared: self.shared.clone(),
            })),
        }
    }
}

impl Session for FakeSession {
    fn call(&mut self, req: &RawRequest) -> Result<Vec<u8>, BmcError> {
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::PanicOnCall => panic!("fake panic in call"),
            Mode::HangOnCall => loop {
                // A thread stuck forever (until the mode changes).
                std::thread::sleep(Duration::from_millis(5));
                if *self.mode.lock().unwrap() != Mode::HangOnCall {
                    break;
                }
            },
            Mode::TimeoutOnCall => {
                return Err(BmcError::Timeout {
                    addr: addr(),
                    after: Duration::ZERO,
                })
            }
            _ => {}
        }
        self.shared
            .calls
            .lock()
            .unwrap()
            .push((req.netfn, req.cmd, req.data.clone()));
        Ok(vec![0x01, 0, 0])
    }
}

fn bmc(mode: Mode, timeout: Duration, retries: u32) -> (IpmiBmc, Arc<Mutex<Mode>>, Arc<Shared>) {
    let mode = Arc::new(Mutex::new(mode));
    let shared = Arc::new(Shared::default());
    let (m, s) = (mode.clone(), shared.clone());
    let bmc = IpmiBmc::with_connector(
        addr(),
        Settings { timeout, retries },
        Box::new(move || {
            Box::new(FakeConnector {
                mode: m.clone(),
                shared: s.clone(),
            })
        }),
    );
    (bmc, mode, shared)
}

#[tokio::test]
async fn session_is_reused_between_calls() {
    let (bmc, _mode, shared) = bmc(Mode::Ok, Duration::from_secs(5), 2);
    for _ in 0..3 {
        assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);
    }
    bmc.power(PowerAction::Off).await.unwrap();
    assert_eq!(shared.connects.load(Ordering::SeqCst), 1);
    let calls = shared.calls.lock().unwrap().clone();
    assert_eq!(calls.last().unwrap(), &(0x00, 0x02, vec![0x00]));
    bmc.shutdown().await;
    // Close: Get Session Info, then Close Session by handle.
    let calls = shared.calls.lock().unwrap().clone();
    assert_eq!(calls[calls.len() - 2].1, 0x3d);
    assert_eq!(calls[calls.len() - 1], (0x06, 0x3c, vec![0, 0, 0, 0, 0x01]));
}

#[tokio::test]
async fn panic_inside_a_call_is_an_error_and_the_next_call_recovers() {
    let (bmc, mode, shared) = bmc(Mode::PanicOnCall, Duration::from_secs(5), 0);
    let err = bmc.power_status().await.unwrap_err();
    assert!(matches!(err, BmcError::Worker { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:623"));
    *mode.lock().unwrap() = Mode::Ok;
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);
    // The broken session was dropped: a second connect.
    assert_eq!(shared.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn panic_in_connect_is_an_error() {
    let (bmc, mode, _shared) = bmc(Mode::PanicOnConnect, Duration::from_secs(5), 1);
    let err = bmc.power_status().await.unwrap_err();
    assert!(matches!(err, BmcError::Worker { .. }), "{err:?}");
    *mode.lock().unwrap() = Mode::Ok;
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn hung_worker_cannot_stall_the_caller() {
    tokio::time::pause();
    let (bmc, mode, shared) = bmc(Mode::HangOnCall, Duration::from_secs(3), 0);
    // With the clock paused the async deadline passes at once even though the
    // worker thread is stuck in "ipmi-rs" for real.
    let err = bmc.power_status().await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    // The stuck worker was abandoned: the next call uses a fresh one, which also
    // hangs while the mode says so...
    let err = bmc.power_status().await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    // ...and works once the BMC behaves again.
    *mode.lock().unwrap() = Mode::Ok;
    tokio::time::resume();
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);
    // (How many sessions were opened depends on whether the abandoned workers got
    // to their jobs before the paused clock expired them; not asserted.)
    let _ = shared;
}

#[tokio::test]
async fn auth_failures_are_not_retried() {
    let (bmc, _mode, shared) = bmc(Mode::AuthFail, Duration::from_secs(5), 3);
    let err = bmc.power_status().await.unwrap_err();
    assert!(matches!(err, BmcError::Auth { .. }), "{err:?}");
    assert_eq!(shared.connects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn lost_replies_retry_status_and_idempotent_actions_but_not_cycle() {
    let (bmc, _mode, shared) = bmc(Mode::TimeoutOnCall, Duration::from_secs(5), 2);
    let err = bmc.power_status().await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    assert_eq!(
        shared.connects.load(Ordering::SeqCst),
        3,
        "1 try + 2 retries"
    );

    let err = bmc.power(PowerAction::Off).await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    assert_eq!(shared.connects.load(Ordering::SeqCst), 6);

    // A cycle may have reached the BMC: never sent twice.
    let err = bmc.power(PowerAction::Cycle).await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    assert_eq!(shared.connects.load(Ordering::SeqCst), 7);
}
