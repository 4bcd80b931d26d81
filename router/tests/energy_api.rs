//! `router energy on|off|status` against a real daemon on loopback (no genies): the
//! config default applies until the operator chooses, the choice is stored and
//! survives a restart, and the status names every host. Also the `[energy]` config
//! rules.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use router::cli::Client;
use router::config::RouterConfig;
use router::energy::api::EnergyRequest;
use router::energy::EnergyStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Daemon {
    api: String,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

/// A temp dir removed on drop (also when a test fails).
struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, energy: &str) -> RouterConfig {
    let secret = dir.join("secret");
    if !secret.exists() {
        std::fs::File::create(&secret)
            .unwrap()
            .write_all(b"energy-test-secret")
            .unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = format!(
        r#"listen = "127.0.0.1:1"
state_dir = "{}"
secret_file = "{}"
{energy}
[[host]]
name = "h1"
mac = "02:00:00:00:00:01"
address = "127.0.0.1"
[[host]]
name = "h2"
mac = "02:00:00:00:00:02"
address = "127.0.0.1"
"#,
        dir.join("state").display(),
        secret.display()
    );
    RouterConfig::parse(&dir.join("router.toml"), &text).unwrap()
}

async fn start(cfg: RouterConfig) -> Daemon {
    let link = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap().to_string();
    let (stop, rx) = watch::channel(false);
    let join =
        tokio::spawn(async move { router::daemon::run_on(cfg, link, api, rx).await.unwrap() });
    Daemon {
        api: api_addr,
        stop,
        join,
    }
}

impl Daemon {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.join.await.unwrap();
    }
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
    let dir = Dir(std::env::temp_dir().join(format!("wisp-energy-api-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let energy = "[energy]\nenabled = true\ninterval_s = 1\n";

    let d = start(config(&dir.0, energy)).await;
    let s = wait_mode(&d.api, true).await;
    let names: Vec<&str> = s.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, ["h1", "h2"], "{s:?}");
    // No genie ever reported: the planner may not touch them.
    assert!(s.hosts.iter().all(|h| h.power == "unavailable"), "{s:?}");
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
    let d = start(config(&dir.0, energy)).await;
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
    let dir = Dir(std::env::temp_dir().join(format!("wisp-energy-legacy-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let state = dir.0.join("state");
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

    let d = start(config(&dir.0, "[energy]\nenabled = true\ninterval_s = 1\n")).await;
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
    let dir = Dir(std::env::temp_dir().join(format!("wisp-energy-cfg-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let base = |energy: &str| {
        format!(
            "listen = \"127.0.0.1:1\"\nstate_dir = \"/tmp/x\"\nsecret_file = \"/tmp/s\"\n{energy}\n"
        )
    };
    let p = dir.0.join("router.toml");
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
