//! `router energy on|off|status` against a real daemon on loopback (no genies): the
//! config default applies until the operator chooses, the choice is stored and
//! survives a restart, and the status names every host. Also the `[energy]` config
//! rules.
#![allow(clippy::unwrap_used)]

mod support;

use router::api::types::{EnergyRequest, EnergyStatus, HostPower};
use router::cli::Client;
use router::config::RouterConfig;
use support::rig::{TestRouter, TestRouterBuilder};

/// Two hosts on loopback with `energy` as the `[energy]` table.
fn rig(energy: &str) -> TestRouterBuilder {
    TestRouter::builder()
        .tag("energy-api")
        .secret(b"energy-test-secret")
        .energy(energy)
}

async fn get(api: &str) -> EnergyStatus {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || {
        // The config default is stored by the energy task right after start: poll.
        let c = Client::new(&api, None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match c.get::<EnergyStatus>("/v1/energy") {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    })
    .await
    .unwrap()
}

async fn set(api: &str, on: bool) -> EnergyStatus {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || {
        Client::new(&api, None)
            .post::<_, EnergyStatus>("/v1/energy", &EnergyRequest { on })
            .unwrap()
    })
    .await
    .unwrap()
}

/// Polls until the stored mode is `want` (the task applies the default after start).
async fn wait_mode(api: &str, want: bool) -> EnergyStatus {
    for _ in 0..600 {
        let s = get(api).await;
        if s.enabled == want {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("energy mode never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_default_applies_until_the_operator_chooses() {
    let rig = rig("[energy]\nenabled = true\ninterval_s = 1\n");
    let dir = rig.dir();

    let d = rig.start_in(&dir).await;
    let s = wait_mode(&d.api, true).await;
    let names: Vec<&str> = s.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, ["h1", "h2"], "{s:?}");
    // No genie ever reported: the planner may not touch them.
    assert!(
        s.hosts.iter().all(|h| h.power == HostPower::Unavailable),
        "{s:?}"
    );
    assert_eq!((s.awake, s.asleep), (0, 0));
    let text = router::cli::energy::status_text(&s);
    assert!(
        text.contains("energy mode: on") && text.contains("h2"),
        "{text}"
    );

    let off = set(&d.api, false).await;
    assert!(!off.enabled);
    assert!(!get(&d.api).await.enabled);
    d.stop().await;

    // Restarted with the same config: the operator's "off" stands.
    let d = rig.start_in(&dir).await;
    // Give the task time to (wrongly) apply the default, then check it did not.
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(get(&d.api).await.enabled);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen.iter().all(|e| !e), "{seen:?}");
    assert!(set(&d.api, true).await.enabled);
    let s = wait_mode(&d.api, true).await;
    // With the mode on, the planner ran (after one interval) and said why.
    let mut last = s.last.clone();
    for _ in 0..100 {
        if last.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        last = get(&d.api).await.last;
    }
    let last = last.expect("a planner decision within 10 s");
    assert!(last.reason.contains("consolidation"), "{last:?}");
    assert!(last.migrations == 0 && last.wake.is_empty() && last.sleep.is_empty());
    d.stop().await;
}

/// A state_dir of the previous router kept the operator's choice in a marker file
/// beside state.json: the choice still stands, and now lives in state.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choice_recorded_by_an_older_router_still_stands() {
    let rig = rig("[energy]\nenabled = true\ninterval_s = 1\n");
    let dir = rig.dir();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("state.json"),
        r#"{"version":1,"vms":{},"hosts":{},"next_epoch":1,"energy_mode":false}"#,
    )
    .unwrap();
    std::fs::write(
        state.join("energy-mode-chosen"),
        "chosen by router energy on|off\n",
    )
    .unwrap();
    std::fs::write(state.join("sla.json"), r#"{"vms":{}}"#).unwrap();

    let d = rig.start_in(&dir).await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(get(&d.api).await.enabled);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().all(|e| !e),
        "the config default overrode the choice: {seen:?}"
    );
    d.stop().await;
    assert!(!state.join("energy-mode-chosen").exists());
    let text = std::fs::read_to_string(state.join("state.json")).unwrap();
    assert!(text.contains("\"energy_chosen\": true"), "{text}");
}

#[test]
fn energy_config_rules() {
    let dir = rig("").dir();
    let base = |energy: &str| {
        format!(
            "listen = \"127.0.0.1:1\"\nstate_dir = \"/tmp/x\"\nsecret_file = \"/tmp/s\"\n{energy}\n"
        )
    };
    let p = dir.path().join("router.toml");
    let c = RouterConfig::parse(&p, &base("")).unwrap();
    assert!(!c.energy.enabled);
    assert_eq!(c.energy.interval_s, 30.0);

    let c = RouterConfig::parse(
        &p,
        &base("[energy]\nlower = 0.3\nreserve_hosts = 0\n[energy.hosts.h1]\nidle_watts = 50\nmax_watts = 90\nstandby_watts = 2\n"),
    )
    .unwrap();
    assert_eq!(c.energy.policy().lower, 0.3);
    assert_eq!(c.energy.policy().reserve_hosts, 0);
    let h1 = wisp_common::HostId::new("h1").unwrap();
    assert_eq!(c.energy.power(&h1).standby_watts, 2.0);

    let e = RouterConfig::parse(&p, &base("[energy]\nlower = 0.9\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("energy.lower") && e.contains("hysteresis"),
        "{e}"
    );
    let e = RouterConfig::parse(&p, &base("[energy]\ninterval = 3\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("interval"), "{e}");
    let e = RouterConfig::parse(&p, &base("[energy]\nidle_watts = 300\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("energy.max_watts"), "{e}");
}
