//! From a wake to the router hearing the genie again (goal ≤ 1 s): the genie binary is
//! frozen with SIGSTOP for longer than its gap threshold (as the lab suspends a host),
//! then SIGCONT; the time is from SIGCONT to the first report on the genie's new link
//! (which must say `resumed`). The router stub never closes the old link, as a router
//! that has not noticed yet would not.
//!
//! Run: `cargo bench -p genie --bench resume` (env BENCH_ROUNDS overrides the 5 rounds).

#[path = "../tests/common/sealed.rs"]
mod sealed;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sealed::{read_frame, write_frame};
use tokio::net::{TcpListener, TcpStream};
use wisp_common::proto::handshake::{self, Welcome};
use wisp_common::proto::{GenieMsg, Report, RouterMsg, MAX_FRAME_BYTES};
use wisp_common::secret::Secret;

const SECRET: &[u8] = b"bench-resume-cluster-secret-0123";
const HEARTBEAT_MS: u64 = 200;
/// Above the genie's gap threshold at 200 ms heartbeats (max(5 × 200 ms, 2 s)).
const FROZEN: Duration = Duration::from_millis(2500);
const GOAL: Duration = Duration::from_secs(1);

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(rounds));
}

/// Accepts one link, handshakes, and returns it.
async fn accept(l: &TcpListener) -> TcpStream {
    let secret = Secret::from_bytes(SECRET.to_vec());
    let (mut s, peer) = tokio::time::timeout(Duration::from_secs(30), l.accept())
        .await
        .expect("genie connects in time")
        .expect("accept");
    let greeted = handshake::accept(&mut s, peer, &secret, |_| true)
        .await
        .expect("genie authenticates");
    // Every frame after the handshake is sealed, the Welcome first.
    sealed::register(&s, greeted.keys);
    let welcome: RouterMsg = Welcome {
        session: 1,
        heartbeat_ms: HEARTBEAT_MS,
        metrics_ms: 1000,
        lease_ms: 0,
    }
    .into();
    write_frame(&mut s, &welcome, MAX_FRAME_BYTES)
        .await
        .expect("welcome");
    s
}

async fn first_report(s: &mut TcpStream) -> Report {
    loop {
        match read_frame::<_, GenieMsg>(s, MAX_FRAME_BYTES).await {
            Ok(Some(GenieMsg::Report(r))) => return r,
            Ok(Some(_)) => {}
            other => panic!("genie link ended: {other:?}"),
        }
    }
}

async fn bench(rounds: usize) {
    let dir = std::env::temp_dir().join(format!("genie-bench-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cfg = dir.join("genie.toml");
    std::fs::write(
        &cfg,
        format!(
            "host = \"h1\"\nrouter = \"{}\"\nsecret_file = \"{}\"\nvm_dir = \"{}\"\nheartbeat_ms = {HEARTBEAT_MS}\n",
            l.local_addr().expect("addr"),
            secret.display(),
            dir.join("vms").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_genie"))
        .args(["--config", cfg.to_str().expect("utf-8 path"), "run"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start genie");
    let pid = Pid::from_raw(child.id() as i32);
    let mut old = accept(&l).await;
    first_report(&mut old).await;
    let mut times = Vec::new();
    for _ in 0..rounds {
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        tokio::time::sleep(FROZEN).await;
        kill(pid, Signal::SIGCONT).expect("SIGCONT");
        let woke = Instant::now();
        let mut s = accept(&l).await;
        let r = first_report(&mut s).await;
        times.push(woke.elapsed());
        assert!(r.resumed.is_some(), "the first report says resumed: {r:?}");
        // The old link is dropped by the genie; keep the new one for the next round.
        old = s;
    }
    drop(old);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "resume → router hears the genie: median {median:?}, max {max:?} over {} rounds (frozen {FROZEN:?} each); goal ≤ {GOAL:?}: {}",
        times.len(),
        if max <= GOAL { "met" } else { "MISSED" }
    );
}
