//! A follower's API (issue 10/12) on a real etcd: it is served by the leader's own
//! hardened server behind the same token guard. A missing or wrong token is a 401 and
//! a read token's write a 403 from the follower itself, never forwarded (tokens the
//! leader would accept but the follower does not prove it). The CLI on a follower's
//! own socket, with no flags, shows the follower and its leader and forwards a write
//! the leader executes exactly once; a follower without an admin token says what to
//! configure; over TLS the follower reaches a TLS leader. Half-sent requests on a
//! follower are capped and cut by the header timeout as on the leader. The dashboard's
//! never-ending stream comes through a follower frame by frame, and a console's
//! upgrade request reaches the leader whole (a read token's is refused).
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use router::api::types::StatusView;
use router::cli::{Api, Client, ClientError};
use router::events::{Event, EventKind};
use support::loris;
use support::rig::{TestRouter, TestRouterBuilder, ADMIN_TOKEN, READ_TOKEN};
use wisp_tests::lab::etcd::EtcdCluster;

const SECRET: &[u8] = b"ha-follower-test-secret-0";
const ROUTER: &str = env!("CARGO_BIN_EXE_router");
/// Generous on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

/// A private dir and a 1-member etcd in it.
struct Etcd {
    dir: PathBuf,
    etcd: Option<EtcdCluster>,
}

impl Etcd {
    async fn start(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wisp-ha-fol-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let etcd = blocking({
            let dir = dir.clone();
            move || EtcdCluster::start(1, &dir).unwrap()
        })
        .await;
        Self {
            dir,
            etcd: Some(etcd),
        }
    }

    /// A replicated router named `name` on this etcd, with `extra` TOML after `[ha]`.
    fn router(&self, tag: &str, name: &str, extra: &str) -> TestRouterBuilder {
        let etcd = self.etcd.as_ref().unwrap();
        TestRouter::builder()
            .tag(tag)
            .secret(SECRET)
            .hosts(1)
            .energy(&format!(
                "{extra}\n[ha]\netcd = [\"{}\"]\ncluster = \"f{}\"\nname = \"{name}\"\n",
                etcd.endpoints()[0],
                std::process::id()
            ))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        drop(self.etcd.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 0600 token file in `dir`, as an `[[api_token]]` of `role`.
fn token_table(dir: &Path, file: &str, role: &str, token: &[u8]) -> String {
    let f = dir.join(file);
    std::fs::write(&f, token).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[[api_token]]\nrole = \"{role}\"\nfile = \"{}\"\n",
        f.display()
    )
}

/// Polls `api` (with `token`, or the local socket) until its status passes `ok`.
async fn wait_status(
    api: &Api,
    token: Option<&'static [u8]>,
    what: &str,
    ok: impl Fn(&StatusView) -> bool,
) -> StatusView {
    let deadline = Instant::now() + WAIT;
    let mut last: String;
    loop {
        let api2 = api.clone();
        let r = blocking(move || {
            let c = Client::new(&api2, None);
            let c = match token {
                Some(t) => c.with_token(t),
                None => c,
            };
            c.get::<StatusView>("/v1/status")
        })
        .await;
        match r {
            Ok(s) if ok(&s) => return s,
            Ok(s) => last = format!("{s:?}"),
            Err(e) => last = e.to_string(),
        }
        assert!(Instant::now() < deadline, "{what}: last status: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader's `api_request` events about `POST /v1/energy`.
async fn energy_writes(leader_socket: &str) -> Vec<String> {
    let api = leader_socket.to_owned();
    let events: Vec<Event> = blocking(move || {
        Client::new(&api, None)
            .get("/v1/events?limit=1000")
            .unwrap()
    })
    .await;
    events
        .into_iter()
        .filter(|e| e.kind == EventKind::ApiRequest && e.message.starts_with("POST /v1/energy"))
        .map(|e| e.message)
        .collect()
}

/// `router <args>` (the CLI binary, no token, no CA: the environment is cleared of
/// WISP_* so only the flags given count).
fn cli(args: &[&str]) -> std::process::Output {
    Command::new(ROUTER)
        .env_remove("WISP_API")
        .env_remove("WISP_TOKEN_FILE")
        .env_remove("WISP_CA_FILE")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_bad_tokens_itself_and_forwards_a_good_one() {
    let etcd = Etcd::start("tok").await;
    // Tokens the leader accepts as admin but the follower does not (X) or only as
    // read (Y): if the follower forwarded them, the leader would act.
    const X: &[u8] = b"leader-only-admin-token-0123";
    const Y: &[u8] = b"admin-there-read-here-token-0";
    let leader_tokens = token_table(&etcd.dir, "x.token", "admin", X)
        + &token_table(&etcd.dir, "y-admin.token", "admin", Y);
    let follower_tokens = token_table(&etcd.dir, "y-read.token", "read", Y);
    let a = etcd.router("tok-a", "ra", &leader_tokens).start().await;
    // Alone, it leads; then the other can only follow.
    wait_status(&Api::from(&a.api), None, "ra to lead", |s| {
        s.role == "leader"
    })
    .await;
    let b = etcd.router("tok-b", "rb", &follower_tokens).start().await;
    let s = wait_status(
        &Api::from(&b.tcp_api),
        Some(READ_TOKEN),
        "rb to follow ra",
        |s| s.leader.is_some(),
    )
    .await;
    assert_eq!(
        (s.role.as_str(), s.leader.as_deref()),
        ("follower", Some("ra"))
    );

    let tcp = b.tcp_api.clone();
    let (none, wrong, x, y, read) = blocking(move || {
        let on = |c: Client| {
            c.post::<_, serde_json::Value>("/v1/energy", &serde_json::json!({"on": true}))
        };
        (
            Client::new(&tcp, None).get::<StatusView>("/v1/status"),
            on(Client::new(&tcp, None).with_token(b"not-the-token-0123456789")),
            on(Client::new(&tcp, None).with_token(X)),
            on(Client::new(&tcp, None).with_token(Y)),
            on(Client::new(&tcp, None).with_token(READ_TOKEN)),
        )
    })
    .await;
    let (code, msg) = status_of(none);
    assert_eq!(code, 401);
    assert!(msg.contains("missing bearer token"), "{msg}");
    assert_eq!(status_of(wrong), (401, "unknown bearer token".into()));
    assert_eq!(status_of(x), (401, "unknown bearer token".into()));
    for r in [y, read] {
        let (code, msg) = status_of(r);
        assert_eq!(code, 403);
        assert!(msg.contains("may only read"), "{msg}");
    }
    // Nothing of that reached the leader.
    let s = wait_status(&Api::from(&a.api), None, "ra's status", |_| true).await;
    assert!(!s.energy_mode, "a refused write was executed: {s:?}");
    assert_eq!(energy_writes(&a.api).await, Vec::<String>::new());

    // The caller's own admin token is forwarded, and the leader records whom for.
    let tcp = b.tcp_api.clone();
    let on: serde_json::Value = blocking(move || {
        Client::new(&tcp, None)
            .with_token(ADMIN_TOKEN)
            .post("/v1/energy", &serde_json::json!({"on": true}))
            .unwrap()
    })
    .await;
    assert_eq!(on["enabled"], true, "{on}");
    let writes = energy_writes(&a.api).await;
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(
        writes[0].contains("via rb") && writes[0].contains("by admin token"),
        "{writes:?}"
    );

    // The dashboard's live stream comes through the follower as it goes (it never
    // ends): frames of the leader's picture, energy mode on since the write above.
    let mut stream = raw_get(&b.tcp_api, "/ui/stream", READ_TOKEN, "").await;
    let mut buf = String::new();
    read_until(&mut stream, &mut buf, |b| {
        b.matches("event: snap").count() >= 2
    })
    .await;
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(
        buf.contains("\"enabled\":true"),
        "the leader's picture: {buf}"
    );
    drop(stream);
    // An interactive console: refused to a read token by the follower itself; an admin
    // token's upgrade request reaches the leader whole (a plain GET would be a 400
    // there), which finds no such VM.
    let upgrade = "Connection: upgrade\r\nUpgrade: wisp-console\r\n";
    let mut c = raw_get(
        &b.tcp_api,
        "/v1/vms/nope/console/attach",
        READ_TOKEN,
        upgrade,
    )
    .await;
    let mut head = String::new();
    read_until(&mut c, &mut head, |b| b.contains("\r\n\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut c = raw_get(
        &b.tcp_api,
        "/v1/vms/nope/console/attach",
        ADMIN_TOKEN,
        upgrade,
    )
    .await;
    let mut head = String::new();
    read_until(&mut c, &mut head, |b| b.contains("no VM named nope")).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    b.stop().await;
    a.stop().await;
}

/// Sends `GET path` with `token` and `extra` header lines on a new connection.
async fn raw_get(api: &str, path: &str, token: &[u8], extra: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    let t = String::from_utf8_lossy(token);
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {t}\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Reads from `s` into `buf` until `done(buf)`.
async fn read_until(s: &mut tokio::net::TcpStream, buf: &mut String, done: impl Fn(&str) -> bool) {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(WAIT, async {
        while !done(buf) {
            let mut chunk = [0u8; 16384];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {buf}");
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not within {WAIT:?}: {buf}"));
}

/// A self-signed certificate for 127.0.0.1 (openssl), as PEM files in `dir`: every
/// router of the pair serves it, and each trusts it (its `cert_file`).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "2", "-subj", "/CN=wisp-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_on_a_followers_socket_shows_it_and_forwards_a_write_executed_once_over_tls() {
    let etcd = Etcd::start("sock").await;
    let (cert, key) = self_signed(&etcd.dir);
    let tls = format!(
        "[api_tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let a = etcd.router("sock-a", "ra", &tls).start().await;
    wait_status(&Api::from(&a.api), None, "ra to lead", |s| {
        s.role == "leader"
    })
    .await;
    let b = etcd.router("sock-b", "rb", &tls).start().await;
    wait_status(&Api::from(&b.api), None, "rb to follow ra", |s| {
        s.leader.is_some()
    })
    .await;

    // `router status --json` on the follower's socket, with no token and no CA: the
    // follower forwards it over TLS with its own admin token.
    let out = blocking({
        let sock = b.api.clone();
        move || cli(&["--api", &sock, "status", "--json"])
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (s["role"].as_str(), s["leader"].as_str()),
        (Some("follower"), Some("ra")),
        "{s}"
    );

    // Its health is its own, not the leader's.
    let health: serde_json::Value = blocking({
        let sock = b.api.clone();
        move || Client::new(&sock, None).get("/health").unwrap()
    })
    .await;
    assert_eq!(
        (
            health["role"].as_str(),
            health["router"].as_str(),
            health["leader"].as_str()
        ),
        (Some("follower"), Some("rb"), Some("ra")),
        "{health}"
    );

    // A write through it: the leader executes it, once, and says for whom.
    let out = blocking({
        let sock = b.api.clone();
        move || cli(&["--api", &sock, "energy", "on"])
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = wait_status(&Api::from(&a.api), None, "ra's status", |_| true).await;
    assert!(s.energy_mode, "{s:?}");
    let writes = energy_writes(&a.api).await;
    assert_eq!(writes.len(), 1, "executed once: {writes:?}");
    assert!(
        writes[0].contains("on rb's local socket") && writes[0].contains(": 200"),
        "{writes:?}"
    );

    // The follower's TCP API speaks TLS too; a token works there as on the leader.
    let port = b.tcp_api.rsplit_once(':').unwrap().1.to_owned();
    let https = Api::new(
        &format!("https://127.0.0.1:{port}"),
        None,
        Some(cert.clone()),
    )
    .unwrap();
    let s = wait_status(&https, Some(READ_TOKEN), "rb over https", |_| true).await;
    assert_eq!(
        (s.role.as_str(), s.leader.as_deref()),
        ("follower", Some("ra"))
    );

    // A follower without an admin token: reads go on with its read token, a local
    // write is refused saying what to configure, and nothing reaches the leader.
    let c = etcd
        .router("sock-c", "rc", &tls)
        .without_admin_token()
        .start()
        .await;
    wait_status(&Api::from(&c.api), None, "rc to follow ra", |s| {
        s.role == "follower" && s.leader.as_deref() == Some("ra")
    })
    .await;
    let out = blocking({
        let sock = c.api.clone();
        move || cli(&["--api", &sock, "energy", "off"])
    })
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("[[api_token]]") && err.contains("role = \"admin\""),
        "{err}"
    );
    assert_eq!(energy_writes(&a.api).await.len(), 1);
    c.stop().await;
    b.stop().await;
    a.stop().await;
}

/// 1,100 connections that send half a request each to a follower's TCP API: beyond
/// the cap they are closed at once, the rest when the header timeout passes;
/// meanwhile its local socket answers. (Its etcd is unreachable: it follows nobody,
/// which changes nothing for the server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_half_sent_requests_are_capped_and_timed_out() {
    let r = TestRouter::builder()
        .tag("fol-loris")
        .secret(SECRET)
        .hosts(1)
        .energy("[ha]\netcd = [\"127.0.0.1:9\"]\nname = \"lonely\"\n")
        .start()
        .await;
    let tcp = r.tcp_api.clone();
    let conns =
        blocking(move || loris::half_sent_requests(&tcp, "GET /v1/status HTTP/1.1", 1100)).await;
    let api = r.api.clone();
    let t = Instant::now();
    let local = blocking(move || Client::new(&api, None).get::<StatusView>("/v1/status")).await;
    let (code, msg) = status_of(local);
    assert_eq!(code, 503);
    assert!(msg.contains("lonely is not the leader"), "{msg}");
    let local_ms = t.elapsed().as_millis();
    let deadline = router::api::server::HEADER_TIMEOUT + Duration::from_secs(30);
    let open = blocking(move || loris::still_open_after(conns, deadline)).await;
    assert_eq!(
        open, 0,
        "half-sent connections to the follower still open after {deadline:?}"
    );
    eprintln!("follower's local API answered in {local_ms} ms under 1,100 half-sent TCP requests");
    r.stop().await;
}

/// A follower under systemd (`Type=notify`, `WatchdogSec=`): it says READY and keeps
/// pinging the watchdog although no cluster task runs in it, so systemd neither fails
/// its start nor restarts it. The real binary, with systemd's protocol played by the
/// test: a datagram socket as `NOTIFY_SOCKET`, a 400 ms `WATCHDOG_USEC`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_tells_systemd_it_is_ready_and_feeds_the_watchdog() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let builder = TestRouter::builder()
        .tag("fol-notify")
        .secret(SECRET)
        .hosts(1)
        .energy("[ha]\netcd = [\"127.0.0.1:9\"]\nname = \"lonely\"\n");
    let dir = builder.dir();
    let text = dir.text().replace(
        "listen = \"127.0.0.1:1\"",
        &format!("listen = \"{}\"\napi = \"{}\"", free(), free()),
    );
    let config = dir.path().join("router.toml");
    std::fs::write(&config, text).unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(ROUTER)
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("router.log")).unwrap())
        .spawn()
        .unwrap();
    let (mut ready, mut pings) = (false, 0);
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 512];
    while !(ready && pings >= 5) && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            ready |= msg.lines().any(|l| l == "READY=1");
            pings += msg.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("router.log")).unwrap_or_default();
    assert!(ready, "no READY=1 from a follower; log:\n{log}");
    assert!(
        pings >= 5,
        "{pings} watchdog pings from a follower; log:\n{log}"
    );
}
