//! The router daemon end to end on loopback, with genies played by the test over the
//! real protocol: authentication, status from report age, stale reports, and bad
//! peers that must not disturb anyone else.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use router::api::types::{HostView, StatusView};
use router::cli::{Client, ClientError};
use support::rig::TestRouter;
use support::sealed::write_frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wisp_common::proto::{GenieMsg, HostMetrics, Report, RouterMsg, MAX_FRAME_BYTES};

const SECRET: &[u8] = b"test-cluster-secret";

async fn start_router(tag: &str) -> TestRouter {
    TestRouter::builder().tag(tag).secret(SECRET).start().await
}

/// Plays a genie: handshake, then reports on demand.
struct FakeGenie {
    stream: support::sealed::SealedStream,
    gen: u64,
}

async fn connect(router: &TestRouter, host: &str, secret: &[u8]) -> Result<FakeGenie, String> {
    // A welcome means the router's proof verified with our secret, too.
    let w = support::genie_handshake(router.link, host, secret, 42).await?;
    assert_eq!(w.heartbeat_ms, 200);
    Ok(FakeGenie {
        stream: w.stream,
        gen: 0,
    })
}

impl FakeGenie {
    /// Sends a report with generation `gen`, or (None) the next one above every
    /// generation sent so far, as a real genie's only rise.
    async fn report(&mut self, gen: Option<u64>) {
        let gen = gen.unwrap_or(self.gen + 1);
        self.gen = self.gen.max(gen);
        let r = Report {
            gen,
            sent_at_ms: wisp_common::time::unix_ms(),
            metrics: Some(HostMetrics {
                cpu_percent: 7.5,
                mem_total_bytes: 1 << 30,
                ..Default::default()
            }),
            vms: Some(vec![]),
            ..Default::default()
        };
        write_frame(&mut self.stream, &GenieMsg::Report(r), MAX_FRAME_BYTES)
            .await
            .unwrap();
    }
}

async fn get<T: serde::de::DeserializeOwned + Send + 'static>(api: &str, path: &'static str) -> T {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || Client::new(&api, None).get(path).unwrap())
        .await
        .unwrap()
}

async fn host(api: &str, name: &str) -> HostView {
    let hosts: Vec<HostView> = get(api, "/v1/hosts").await;
    hosts.into_iter().find(|h| h.name.as_str() == name).unwrap()
}

/// Polls until `cond` holds for the host or the deadline passes.
async fn wait_host(
    api: &str,
    name: &str,
    what: &str,
    cond: impl Fn(&HostView) -> bool,
) -> HostView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let h = host(api, name).await;
        if cond(&h) {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {name} {what}: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporting_genie_is_up_and_closed_link_is_unreachable() {
    let r = start_router("up").await;
    let mut g = connect(&r, "h1", SECRET).await.unwrap();
    g.report(None).await;
    let h = wait_host(&r.api, "h1", "up with metrics", |h| {
        h.state.as_str() == "up" && h.mem_total_bytes == Some(1 << 30)
    })
    .await;
    assert_eq!(h.genie_version.as_deref(), Some("fake"));
    assert_eq!(host(&r.api, "h2").await.state.as_str(), "unreachable");

    drop(g);
    let t = std::time::Instant::now();
    wait_host(&r.api, "h1", "unreachable", |h| {
        h.state.as_str() == "unreachable"
    })
    .await;
    eprintln!("closed link seen as unreachable after {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_genie_goes_suspect_then_unreachable() {
    let r = start_router("silent").await;
    let mut g = connect(&r, "h1", SECRET).await.unwrap();
    g.report(None).await;
    wait_host(&r.api, "h1", "up", |h| h.state.as_str() == "up").await;
    // The link stays open but nothing is sent: age decides.
    wait_host(&r.api, "h1", "suspect or unreachable", |h| {
        h.state.as_str() != "up"
    })
    .await;
    wait_host(&r.api, "h1", "unreachable", |h| {
        h.state.as_str() == "unreachable"
    })
    .await;
    drop(g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_and_unknown_host_are_refused_with_reasons() {
    let r = start_router("auth").await;
    match support::stubborn_genie(r.link, "h1", b"not-the-secret").await {
        Some(RouterMsg::Refused { reason }) => {
            assert!(reason.contains("authentication failed"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let err = connect(&r, "h9", SECRET).await.err().unwrap();
    assert!(err.contains("not in the router's inventory"), "{err}");
    assert_eq!(host(&r.api, "h1").await.state.as_str(), "unreachable");
    let evs: Vec<router::events::Event> = get(&r.api, "/v1/events").await;
    assert!(
        evs.iter()
            .any(|e| e.message.contains("authentication failed")
                && e.host.as_ref().map(|h| h.as_str()) == Some("h1")),
        "{evs:?}"
    );
    // The secret itself never appears in what the API serves.
    let all = serde_json::to_string(&evs).unwrap();
    assert!(!all.contains("test-cluster-secret") && !all.contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reports_are_dropped_and_bad_frames_disturb_nobody() {
    let r = start_router("bad").await;
    let mut g = connect(&r, "h1", SECRET).await.unwrap();
    g.report(Some(10)).await;
    g.report(Some(5)).await; // older generation: dropped
    g.report(Some(11)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s: StatusView = get(&r.api, "/v1/status").await;
        if s.reports_accepted == 2 && s.reports_dropped == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Garbage, an oversized length and a half frame from three raw peers.
    for bytes in [
        b"\x00\x00\x00\x05{{{{{".to_vec(),
        u32::MAX.to_be_bytes().to_vec(),
        b"\x00\x00\x01\x00{\"type\"".to_vec(),
    ] {
        let mut raw = TcpStream::connect(r.link).await.unwrap();
        raw.write_all(&bytes).await.unwrap();
        drop(raw);
    }
    // The real genie keeps reporting and stays up throughout.
    for _ in 0..10 {
        g.report(None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(host(&r.api, "h1").await.state.as_str(), "up");
    }
    // A malformed frame after the handshake closes that genie's link only.
    let mut g2 = connect(&r, "h2", SECRET).await.unwrap();
    g2.report(None).await;
    wait_host(&r.api, "h2", "up", |h| h.state.as_str() == "up").await;
    g2.stream
        .raw()
        .write_all(b"\x00\x00\x00\x03abc")
        .await
        .unwrap();
    wait_host(&r.api, "h2", "unreachable", |h| {
        h.state.as_str() == "unreachable"
    })
    .await;
    g.report(None).await;
    assert_eq!(host(&r.api, "h1").await.state.as_str(), "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_an_unreachable_api_clearly() {
    let e = tokio::task::spawn_blocking(|| {
        Client::new("127.0.0.1:1", Some(Duration::from_secs(2)))
            .get::<Vec<HostView>>("/v1/hosts")
            .unwrap_err()
            .to_string()
    })
    .await
    .unwrap();
    assert!(
        e.contains("127.0.0.1:1") && e.contains("router serve"),
        "{e}"
    );
}

/// A body or id the API cannot parse is the client's fault: 400, and our JSON error
/// naming what was wrong (the CLI shows the `error` text; anything else it can only
/// show as `HTTP <status>: ...`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_with_a_json_error_naming_the_problem() {
    let r = start_router("badreq").await;
    let api = r.api.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let c = Client::new(&api, None);
        let post = |path: &str, body: serde_json::Value| {
            c.post::<_, serde_json::Value>(path, &body).unwrap_err()
        };
        vec![
            (
                "host id in a body",
                post("/v1/vms/vm1/migrate", serde_json::json!({"to": "bad host"})),
                "bad host",
            ),
            (
                "field of the wrong type",
                post("/v1/hosts/h1/maintenance", serde_json::json!({"on": "yes"})),
                "on: invalid type",
            ),
            (
                "missing field",
                post("/v1/vms/vm1/migrate", serde_json::json!({})),
                "missing field `to`",
            ),
            (
                "power action word",
                post("/v1/power/h1/halt", serde_json::json!({})),
                "unknown power action \"halt\"",
            ),
            (
                "id in the path",
                c.get::<serde_json::Value>("/v1/vms/bad%20vm").unwrap_err(),
                "bad vm",
            ),
        ]
    })
    .await
    .unwrap();
    for (what, err, names) in answers {
        match err {
            ClientError::Api { status, message } => {
                assert_eq!(status, 400, "{what}: {message}");
                assert!(!message.starts_with("HTTP "), "{what}: not JSON: {message}");
                assert!(message.contains(names), "{what}: {message}");
            }
            other => panic!("{what}: {other}"),
        }
    }
    r.stop().await;
}
