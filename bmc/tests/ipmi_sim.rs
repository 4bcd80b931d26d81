//! IpmiBmc against real OpenIPMI `ipmi_sim` BMCs on loopback, cross-checked with
//! `ipmitool` (password passed by file, never in argv). Needs ipmi_sim and ipmitool:
//! fails loudly when they are missing.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wisp_bmc::testkit::IpmiSim;
use wisp_bmc::{Bmc, BmcConfig, BmcError, IpmiBmc, PowerAction, PowerState};

fn client(sim: &IpmiSim, timeout: Duration) -> IpmiBmc {
    let mut cfg = BmcConfig::new(sim.addr(), IpmiSim::USER, sim.password());
    cfg.timeout = timeout;
    IpmiBmc::new(cfg)
}

fn ipmitool_status(sim: &IpmiSim) -> PowerState {
    let out = sim.ipmitool(&["chassis", "power", "status"]).unwrap();
    if out.contains("is on") {
        PowerState::On
    } else if out.contains("is off") {
        PowerState::Off
    } else {
        panic!("unexpected ipmitool output: {out}")
    }
}

/// Polls until `f` is true (power changes go through the chassis program).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_agrees_with_ipmitool() {
    let sim = IpmiSim::start("s3cret-pw", true).unwrap();
    let bmc = client(&sim, Duration::from_secs(10));
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);
    assert_eq!(ipmitool_status(&sim), PowerState::On);
    sim.set_power_file(false).unwrap();
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::Off);
    assert_eq!(ipmitool_status(&sim), PowerState::Off);
    bmc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_changes_state_seen_by_ipmitool() {
    let sim = IpmiSim::start("s3cret-pw", false).unwrap();
    let bmc = client(&sim, Duration::from_secs(10));

    bmc.power(PowerAction::On).await.unwrap();
    eventually("power on", || sim.power_file().unwrap()).await;
    assert_eq!(ipmitool_status(&sim), PowerState::On);
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);

    bmc.power(PowerAction::Off).await.unwrap();
    eventually("power off", || !sim.power_file().unwrap()).await;
    assert_eq!(ipmitool_status(&sim), PowerState::Off);

    bmc.power(PowerAction::Cycle).await.unwrap();
    // ipmi_sim turns a cycle into power 0 then power 1 (cycle of an off host: on).
    eventually("power on after cycle", || sim.power_file().unwrap()).await;
    assert_eq!(ipmitool_status(&sim), PowerState::On);

    bmc.power(PowerAction::Soft).await.unwrap();
    eventually("soft off", || !sim.power_file().unwrap()).await;
    assert_eq!(ipmitool_status(&sim), PowerState::Off);

    bmc.power(PowerAction::On).await.unwrap();
    eventually("power on", || sim.power_file().unwrap()).await;
    bmc.power(PowerAction::Reset).await.unwrap();
    eventually("reset", || sim.resets() >= 1).await;
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);
    bmc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_quick_auth_error_naming_the_bmc() {
    let sim = IpmiSim::start("right-password", true).unwrap();
    let mut cfg = BmcConfig::new(
        sim.addr(),
        IpmiSim::USER,
        "wrong-password".as_bytes().to_vec().into_secret(),
    );
    cfg.timeout = Duration::from_secs(10);
    let bmc = IpmiBmc::new(cfg);
    let start = Instant::now();
    let err = bmc.power_status().await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, BmcError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&sim.addr().to_string()), "{msg}");
    assert!(!msg.contains("wrong-password"), "{msg}");
    assert!(!format!("{err:?}").contains("wrong-password"));
    // No retries after an auth failure: well under the timeout even on a loaded box.
    assert!(took < Duration::from_secs(5), "auth error took {took:?}");

    // Wrong user too.
    let cfg = BmcConfig::new(sim.addr(), "nobody", sim.password());
    let err = IpmiBmc::new(cfg).power_status().await.unwrap_err();
    assert!(matches!(err, BmcError::Auth { .. }), "{err:?}");
}

trait IntoSecret {
    fn into_secret(self) -> wisp_common::secret::Secret;
}
impl IntoSecret for Vec<u8> {
    fn into_secret(self) -> wisp_common::secret::Secret {
        wisp_common::secret::Secret::from_bytes(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_bmc_times_out_within_the_timeout_and_recovers() {
    let sim = IpmiSim::start("pw", true).unwrap();
    let timeout = Duration::from_secs(2);
    let bmc = client(&sim, timeout);
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);

    sim.stop().unwrap(); // SIGSTOP: port open, nobody answers
    let start = Instant::now();
    let err = bmc.power_status().await.unwrap_err();
    let took = start.elapsed();
    sim.cont().unwrap();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains(&sim.addr().to_string()));
    // The deadline is enforced on the async side; allow scheduling slack only.
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");

    // Answers again once resumed (a fresh session).
    let mut ok = false;
    for _ in 0..10 {
        if bmc.power_status().await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "BMC did not recover after SIGCONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_bmc_is_refused_or_timeout_quickly() {
    let mut sim = IpmiSim::start("pw", true).unwrap();
    let addr = sim.addr();
    let timeout = Duration::from_secs(2);
    let bmc = client(&sim, timeout);
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);
    sim.kill();
    let start = Instant::now();
    let err = bmc.power_status().await.unwrap_err();
    let took = start.elapsed();
    // On loopback the kernel answers ICMP port unreachable: Refused.
    assert!(matches!(err, BmcError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()));
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bmc_does_not_slow_a_live_one() {
    let dead = IpmiSim::start("pw", true).unwrap();
    let live = IpmiSim::start("pw", false).unwrap();
    let timeout = Duration::from_secs(3);
    let dead_bmc = client(&dead, timeout);
    let live_bmc = client(&live, timeout);
    assert_eq!(live_bmc.power_status().await.unwrap(), PowerState::Off);
    dead.stop().unwrap();

    let dead_call = tokio::spawn(async move {
        let r = dead_bmc.power_status().await;
        (r, dead_bmc)
    });
    // Many status calls on the live BMC while the dead one hangs.
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(live_bmc.power_status().await.unwrap(), PowerState::Off);
    }
    let live_took = start.elapsed();
    let (r, _dead_bmc) = dead_call.await.unwrap();
    dead.cont().unwrap();
    assert!(matches!(r, Err(BmcError::Timeout { .. })), "{r:?}");
    // 5 calls on a live BMC finished before the dead one's timeout fired.
    assert!(
        live_took < timeout,
        "live calls took {live_took:?} while a BMC hung"
    );
}

/// ipmi_sim has a fixed table of sessions (63 in OpenIPMI's lanserv): if shutdown
/// did not send Close Session, opening 80 sessions one after another would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions() {
    let sim = IpmiSim::start("pw", true).unwrap();
    for i in 0..80 {
        let bmc = client(&sim, Duration::from_secs(10));
        let r = bmc.power_status().await;
        assert!(r.is_ok(), "session {i}: {r:?}");
        bmc.shutdown().await;
    }
}
