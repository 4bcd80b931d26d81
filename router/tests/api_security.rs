//! The API is its operators' only (issue 12): the local socket refuses users outside
//! root and the `wisp` group (here `nobody`), records who changed something; the TCP
//! API wants a bearer token (401 without or with a wrong one, 403 for a read token's
//! write) and speaks TLS when configured; half-sent requests cannot hold descriptors.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use router::api::types::HostView;
use router::cli::{Api, Client, ClientError};
use support::loris;
use support::rig::{TestRouter, ADMIN_TOKEN, READ_TOKEN};

const SECRET: &[u8] = b"api-security-test-secret";
const ROUTER: &str = env!("CARGO_BIN_EXE_router");

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Err(ClientError::Api { status, .. }) => status,
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

fn socket_path(api: &str) -> &Path {
    Path::new(api.strip_prefix("unix:").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_root_and_group_only_and_writes_are_recorded_with_the_uid() {
    let r = TestRouter::builder()
        .tag("sock")
        .secret(SECRET)
        .start()
        .await;
    let sock = socket_path(&r.api).to_owned();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode");
    // The test's dir must be traversable, so that only the socket's mode decides.
    let dir = sock.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    // root, through the CLI's own transport: reads and writes.
    let api = r.api.clone();
    let hosts: Vec<HostView> =
        blocking(move || Client::new(&api, None).get("/v1/hosts").unwrap()).await;
    assert_eq!(hosts.len(), 2);
    let api = r.api.clone();
    let wake = blocking(move || {
        Client::new(&api, None)
            .post::<_, serde_json::Value>("/v1/hosts/zz/wake", &serde_json::json!({}))
    })
    .await;
    assert_eq!(status_of(wake), 404, "an unknown host");

    // nobody: the same CLI, refused by the socket's mode before any HTTP.
    for args in [&["hosts"][..], &["vm", "stop", "vm1", "--force"][..]] {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", ROUTER, "--api", &r.api])
            .args(args)
            .output()
            .expect("runuser runs (util-linux)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nobody ran `router {args:?}`: {err}");
        assert!(err.contains("Permission denied"), "{args:?}: {err}");
    }

    // The write is in the event log with root's uid; nobody's attempts never got in.
    let api = r.api.clone();
    let evs: Vec<router::events::Event> =
        blocking(move || Client::new(&api, None).get("/v1/events?limit=500").unwrap()).await;
    let writes: Vec<&str> = evs
        .iter()
        .filter(|e| e.kind == router::events::EventKind::ApiRequest)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(
        writes[0].contains("POST /v1/hosts/zz/wake")
            && writes[0].contains("uid 0")
            && writes[0].contains("404"),
        "{writes:?}"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_needs_a_token_and_a_read_token_cannot_write() {
    let r = TestRouter::builder()
        .tag("tok")
        .secret(SECRET)
        .start()
        .await;
    let tcp = r.tcp_api.clone();
    let (none, wrong, read_get, read_write, admin_write, public) = blocking(move || {
        let get = |c: Client| c.get::<Vec<HostView>>("/v1/hosts");
        let none = get(Client::new(&tcp, None));
        let wrong = get(Client::new(&tcp, None).with_token(b"not-the-token-0123456789"));
        let read_get = get(Client::new(&tcp, None).with_token(READ_TOKEN));
        let write = |t: &[u8]| {
            Client::new(&tcp, None)
                .with_token(t)
                .post::<_, serde_json::Value>("/v1/hosts/zz/wake", &serde_json::json!({}))
        };
        // A public path passes the guard without a token: the health check answers.
        let public = Client::new(&tcp, None).get::<serde_json::Value>("/health");
        (
            none,
            wrong,
            read_get,
            write(READ_TOKEN),
            write(ADMIN_TOKEN),
            public,
        )
    })
    .await;
    assert_eq!(status_of(none), 401);
    assert_eq!(status_of(wrong), 401);
    assert_eq!(read_get.unwrap().len(), 2);
    assert_eq!(status_of(read_write), 403);
    assert_eq!(
        status_of(admin_write),
        404,
        "admin passes the guard; the host is unknown"
    );
    let public = public.expect("/health needs no token");
    assert_eq!(public["status"], "ok", "{public}");

    // An interactive console types into a VM: a read token may not open one, an
    // admin token passes the guard (the VM is unknown), and the attempt is logged.
    let attach = |token: &[u8]| {
        let mut s = std::net::TcpStream::connect(&r.tcp_api).unwrap();
        let t = String::from_utf8_lossy(token);
        s.write_all(
            format!(
                "GET /v1/vms/zz/console/attach HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {t}\r\nConnection: upgrade\r\n\
                 Upgrade: wisp-console\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut answer = [0u8; 512];
        let n = s.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    let read_console = attach(READ_TOKEN);
    assert!(read_console.starts_with("HTTP/1.1 403"), "{read_console}");
    assert!(
        read_console.contains("interactive consoles"),
        "{read_console}"
    );
    let admin_console = attach(ADMIN_TOKEN);
    assert!(admin_console.starts_with("HTTP/1.1 404"), "{admin_console}");
    let api = r.api.clone();
    let events: Vec<router::events::Event> =
        blocking(move || Client::new(&api, None).get("/v1/events?limit=50").unwrap()).await;
    assert!(
        events.iter().any(|e| e
            .message
            .contains("GET /v1/vms/zz/console/attach by admin token")),
        "{events:?}"
    );

    // The 401 is JSON naming what is missing.
    let mut s = std::net::TcpStream::connect(&r.tcp_api).unwrap();
    s.write_all(b"GET /v1/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.contains("{\"error\":\"missing bearer token"),
        "{answer}"
    );
    r.stop().await;
}

/// A self-signed certificate for 127.0.0.1 (openssl), as PEM files in `dir`.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=wisp-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // A leaf, not a CA: rustls refuses a CA certificate as a server's.
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
async fn the_tcp_api_answers_over_tls_when_configured() {
    let certs = std::env::temp_dir().join(format!("wisp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = self_signed(&certs);
    let tls = format!(
        "[api_tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let r = TestRouter::builder()
        .tag("tls")
        .secret(SECRET)
        .energy(&tls)
        .start()
        .await;
    let port = r.tcp_api.rsplit_once(':').unwrap().1.to_owned();
    let url = format!("https://127.0.0.1:{port}");
    let (hosts, untrusted, plain) = blocking({
        let (url, cert, tcp) = (url.clone(), cert.clone(), r.tcp_api.clone());
        move || {
            let api = Api::new(&url, None, Some(cert)).unwrap();
            let hosts = Client::new(&api, None)
                .with_token(READ_TOKEN)
                .get::<Vec<HostView>>("/v1/hosts");
            // Without the certificate to trust, no connection.
            let untrusted = Client::new(&url, None)
                .with_token(READ_TOKEN)
                .get::<Vec<HostView>>("/v1/hosts");
            // Plain HTTP to the TLS port gets no HTTP answer.
            let plain = Client::new(&tcp, Some(Duration::from_secs(5)))
                .with_token(READ_TOKEN)
                .get::<Vec<HostView>>("/v1/hosts");
            (hosts, untrusted, plain)
        }
    })
    .await;
    assert_eq!(hosts.unwrap().len(), 2);
    assert!(
        matches!(untrusted, Err(ClientError::Unreachable { .. })),
        "{untrusted:?}"
    );
    assert!(
        !matches!(plain, Ok(_) | Err(ClientError::Api { .. })),
        "{plain:?}"
    );
    r.stop().await;
    let _ = std::fs::remove_dir_all(&certs);
}

/// 1,100 connections that send half a request each: beyond the cap they are closed at
/// once, the rest when the header timeout passes; meanwhile the local socket answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_capped_and_timed_out() {
    let r = TestRouter::builder()
        .tag("loris")
        .secret(SECRET)
        .start()
        .await;
    let tcp = r.tcp_api.clone();
    let conns =
        blocking(move || loris::half_sent_requests(&tcp, "GET /v1/hosts HTTP/1.1", 1100)).await;
    let api = r.api.clone();
    let t = Instant::now();
    let hosts: Vec<HostView> =
        blocking(move || Client::new(&api, None).get("/v1/hosts").unwrap()).await;
    assert_eq!(hosts.len(), 2);
    let local_ms = t.elapsed().as_millis();
    // Every half-sent connection is closed by the router within the header timeout
    // and a generous margin (a loaded machine).
    let deadline = router::api::server::HEADER_TIMEOUT + Duration::from_secs(30);
    let open = blocking(move || loris::still_open_after(conns, deadline)).await;
    assert_eq!(
        open, 0,
        "half-sent connections still open after {deadline:?}"
    );
    eprintln!("local API answered in {local_ms} ms under 1,100 half-sent TCP requests");
    r.stop().await;
}

/// A token file others can read is refused by `router check-config` (and so by the
/// daemon, which loads the same way), naming the file and the fix.
#[test]
fn a_group_or_world_readable_token_file_is_refused() {
    let rig = TestRouter::builder().tag("tokmode");
    let dir = rig.dir();
    let toml = dir.path().join("router.toml");
    std::fs::write(&toml, dir.text()).unwrap();
    let token = dir.path().join("admin.token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(ROUTER)
        .arg("check-config")
        .arg(&toml)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(
        err.contains("api_token (admin)")
            && err.contains(&token.display().to_string())
            && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(ROUTER)
        .arg("check-config")
        .arg(&toml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A body sent slower than the body timeout gets a 408 and its connection back; one
/// above the limit a 413; neither reaches a route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_huge_bodies_are_refused() {
    let r = TestRouter::builder()
        .tag("body")
        .secret(SECRET)
        .start()
        .await;
    let sock = socket_path(&r.api).to_owned();
    let (slow, huge) = blocking(move || {
        let talk = |head: &str, body: &[u8]| {
            let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            s.set_read_timeout(Some(router::api::server::BODY_TIMEOUT + Duration::from_secs(30)))
                .unwrap();
            s.write_all(head.as_bytes()).unwrap();
            let _ = s.write_all(body);
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        };
        let slow = talk(
            "POST /v1/energy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            b"{\"on\":",
        );
        let huge = talk(
            "POST /v1/energy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n",
            &vec![b' '; 3 << 20],
        );
        (slow, huge)
    })
    .await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    // Neither reached the energy route: the mode is unchanged and no write recorded.
    let api = r.api.clone();
    let evs: Vec<router::events::Event> =
        blocking(move || Client::new(&api, None).get("/v1/events?limit=500").unwrap()).await;
    assert!(
        evs.iter()
            .all(|e| e.kind != router::events::EventKind::ApiRequest),
        "{evs:?}"
    );
    r.stop().await;
}
