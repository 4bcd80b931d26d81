//! A VM claim never outlives its operation: a client that gives up on a long
//! operation (`router vm migrate` with Ctrl-C, or the CLI's own timeout) must not leave
//! the VM busy, or every later command answers 409 and the reconciler (failover
//! included) skips it until the router restarts.
//!
//! The router daemon runs on loopback; two genies are played by the test over the real
//! protocol: h1 runs the VM and holds every migration until the test lets it fail, h2
//! accepts incoming migrations. The client hangs up while the migration runs; the test
//! then checks that the migration ran to its end on its own, recorded its failure, and
//! released the VM. Nothing depends on timing: each step waits for the previous one.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use router::api::types::VmDetail;
use router::cli::{Client, ClientError};
use router::config::RouterConfig;
use support::sealed::{read_frame, write_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wisp_common::proto::{
    Command, GenieMsg, Outcome, Report, RouterMsg, VmStatus, MAX_FRAME_BYTES,
};
use wisp_common::{VmId, VmRunState};

const SECRET: &[u8] = b"test-cluster-secret-for-claims";

/// How long a step may take on a loaded machine before the test gives up.
const STEP: Duration = Duration::from_secs(30);

struct Router {
    link: SocketAddr,
    api: String,
    _stop: watch::Sender<bool>,
    dir: PathBuf,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_router() -> Router {
    let dir = std::env::temp_dir().join(format!("wisp-claims-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::File::create(&secret)
        .unwrap()
        .write_all(SECRET)
        .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = format!(
        "listen = \"127.0.0.1:1\"\napi_socket = \"{}\"\nstate_dir = \"{}\"\nsecret_file = \"{}\"\n",
        dir.join("router.sock").display(),
        dir.join("state").display(),
        secret.display()
    );
    for i in 1..=2 {
        text += &format!(
            "[[host]]\nname = \"h{i}\"\nmac = \"02:00:00:00:00:0{i}\"\naddress = \"127.0.0.1\"\nvcpus = 8\nmem_mib = 4096\n"
        );
    }
    let config = RouterConfig::parse(&dir.join("router.toml"), &text).unwrap();
    let link = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let link_addr = link.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(async move { router::daemon::run_on(config, link, api, rx).await.unwrap() });
    let sock = dir.join("router.sock");
    let deadline = std::time::Instant::now() + STEP;
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no API socket at {}",
            sock.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Router {
        link: link_addr,
        api: format!("unix:{}", dir.join("router.sock").display()),
        _stop: stop,
        dir,
    }
}

/// Plays a genie that runs what it is told to start, accepts incoming migrations, and
/// fails every outgoing one once `fail` turns true.
async fn genie(link: SocketAddr, host: &str, instance: u64, fail: watch::Receiver<bool>) {
    let s = support::genie_handshake(link, host, SECRET, instance)
        .await
        .unwrap_or_else(|e| panic!("{host} not welcomed: {e}"))
        .stream;
    let vms: Arc<Mutex<HashMap<VmId, u64>>> = Arc::default();
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<GenieMsg>(16);
    let vms2 = vms.clone();
    tokio::spawn(async move {
        while let Ok(Some(m)) = read_frame::<_, RouterMsg>(&mut rd, MAX_FRAME_BYTES).await {
            let RouterMsg::Command { id, command } = m else {
                continue;
            };
            let (tx, vms, mut fail) = (tx.clone(), vms2.clone(), fail.clone());
            tokio::spawn(async move {
                let outcome = match command {
                    Command::StartVm { spec, epoch } => {
                        vms.lock().unwrap().insert(spec.name, epoch);
                        Outcome::Done
                    }
                    Command::StopVm { vm, .. } | Command::DeleteVm { vm } => {
                        vms.lock().unwrap().remove(&vm);
                        Outcome::Done
                    }
                    Command::PrepareIncoming { .. } => Outcome::Incoming {
                        uri: "tcp:127.0.0.1:9".into(),
                    },
                    Command::Migrate { .. } => {
                        let _ = fail.wait_for(|f| *f).await;
                        Outcome::Failed {
                            error: "migration failed in this fake".into(),
                        }
                    }
                    _ => Outcome::Done,
                };
                let _ = tx.send(GenieMsg::Reply { id, outcome }).await;
            });
        }
    });
    let mut gen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                gen += 1;
                let list: Vec<VmStatus> = vms.lock().unwrap().iter().map(|(id, epoch)| VmStatus {
                    id: id.clone(),
                    state: VmRunState::Running,
                    vcpus: 1,
                    mem_mib: 64,
                    cpu_time_ms: 0,
                    pid: Some(1),
                    qmp_socket: format!("/nonexistent/{id}.qmp").into(),
                    epoch: *epoch,
                }).collect();
                let r = Report { gen, sent_at_ms: wisp_common::time::unix_ms(), metrics: None, vms: Some(list), ..Default::default() };
                if write_frame(&mut wr, &GenieMsg::Report(r), MAX_FRAME_BYTES).await.is_err() { return; }
            }
            m = rx.recv() => match m {
                Some(m) => if write_frame(&mut wr, &m, MAX_FRAME_BYTES).await.is_err() { return; },
                None => return,
            }
        }
    }
}

/// Runs a blocking CLI call off the runtime.
async fn call<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Polls `GET /v1/vms/vm1` until `pred` holds, or panics after `deadline`, saying what
/// it waited for.
async fn wait_detail(api: &str, what: &str, deadline: Duration, pred: fn(&VmDetail) -> bool) {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < deadline {
        let a = api.to_owned();
        if let Ok(d) = call(move || Client::new(&a, None).get::<VmDetail>("/v1/vms/vm1")).await {
            if pred(&d) {
                return;
            }
            last = Some(format!("op {:?}", d.op));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("waited {deadline:?} for {what}; last seen: {last:?}");
}

/// Sends `POST path` with a JSON body on a raw connection and returns it unread: the
/// test decides when this client hangs up.
async fn post_raw(api: &str, path: &str, body: &str) -> tokio::net::UnixStream {
    let sock = api.strip_prefix("unix:").expect("the API socket");
    let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_on_a_migration_leaves_no_claim_behind() {
    let r = start_router().await;
    let (fail, fail_rx) = watch::channel(false);
    tokio::spawn(genie(r.link, "h1", 11, fail_rx.clone()));
    tokio::spawn(genie(r.link, "h2", 12, fail_rx));

    // Both hosts up, then a VM on h1.
    let api = r.api.clone();
    let t0 = Instant::now();
    loop {
        let a = api.clone();
        let hosts = call(move || {
            Client::new(&a, None).get::<Vec<router::api::types::HostView>>("/v1/hosts")
        })
        .await
        .unwrap();
        if hosts
            .iter()
            .filter(|h| h.state == router::model::host::HostStatus::Up)
            .count()
            == 2
        {
            break;
        }
        assert!(t0.elapsed() < STEP, "hosts never came up: {hosts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = api.clone();
    call(move || {
        Client::new(&a, None).post::<_, serde_json::Value>(
            "/v1/vms",
            &serde_json::json!({
                "spec": {"name": "vm1", "vcpus": 1, "mem_mib": 64},
                "host": "h1"
            }),
        )
    })
    .await
    .unwrap();
    wait_detail(&api, "vm1 running and free", STEP, |d| {
        d.op.is_none() && d.views.iter().any(|v| v.state.is_running())
    })
    .await;

    // A client asks for the migration and hangs up while it runs (Ctrl-C, a timeout).
    let client = post_raw(&api, "/v1/vms/vm1/migrate", r#"{"to":"h2"}"#).await;
    wait_detail(&api, "the migration to hold vm1", STEP, |d| {
        matches!(d.op, Some(router::cluster::Op::Migrate { .. }))
    })
    .await;
    drop(client);

    // The migration runs on without its client: the VM stays held by it (the genie
    // has not answered yet)...
    let a = api.clone();
    let d = call(move || Client::new(&a, None).get::<VmDetail>("/v1/vms/vm1"))
        .await
        .unwrap();
    assert!(
        matches!(d.op, Some(router::cluster::Op::Migrate { .. })),
        "the migration should still hold vm1: {:?}",
        d.op
    );

    // ...and once the genie answers, the migration ends on its own, records its
    // failure, and releases the VM.
    fail.send(true).unwrap();
    wait_detail(
        &api,
        "the abandoned migration to end and release vm1",
        STEP,
        |d| d.op.is_none(),
    )
    .await;
    let a = api.clone();
    let d = call(move || Client::new(&a, None).get::<VmDetail>("/v1/vms/vm1"))
        .await
        .unwrap();
    assert!(
        d.events
            .iter()
            .any(|e| e.message.contains("migration of vm1 h1 -> h2 failed")),
        "the failure was not recorded, so the migration did not run to its end: {:?}",
        d.events
    );
    assert_eq!(
        d.record
            .as_ref()
            .and_then(|r| r.host.as_ref())
            .map(|h| h.as_str()),
        Some("h1"),
        "a failed migration must leave the placement on the source"
    );

    // The VM answers commands again: a stop succeeds (no 409 "busy").
    let a = api.clone();
    let stopped = call(move || {
        Client::new(&a, None)
            .post::<_, serde_json::Value>("/v1/vms/vm1/stop", &serde_json::json!({"force": true}))
    })
    .await;
    assert!(
        stopped.is_ok(),
        "stop after the abandoned migration: {stopped:?}"
    );
}
