//! The dashboard's routes on a real daemon over loopback: the pages and files it
//! embeds, the event stream's frames (the cluster picture with its hosts, again at
//! least every second), and a stream still open when the router stops, which must
//! end rather than hold the server's graceful shutdown. The page itself is tested in
//! a browser by the lab (`tests/tests/dashboard.rs`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::rig::TestRouter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Sends `GET path` and returns the connection, for reading the answer.
async fn get(api: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(api).await.unwrap();
    let token = String::from_utf8_lossy(support::rig::ADMIN_TOKEN);
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// The whole answer of a request that ends (`Connection: close`).
async fn fetch(api: &str, path: &str) -> String {
    let mut s = TcpStream::connect(api).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// Reads from `s` until `buf` holds one more complete `snap` event; returns its data.
async fn next_frame(s: &mut TcpStream, buf: &mut String) -> serde_json::Value {
    loop {
        if let Some(start) = buf.find("event: snap\ndata: ") {
            if let Some(len) = buf[start..].find("\n\n") {
                let data = buf[start + "event: snap\ndata: ".len()..start + len].to_owned();
                buf.drain(..start + len + 2);
                return serde_json::from_str(&data).unwrap();
            }
        }
        let mut chunk = [0u8; 16384];
        let n = timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a frame within 10 s")
            .unwrap();
        assert!(n > 0, "the stream ended early: {buf}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

#[tokio::test]
async fn pages_and_files_are_embedded_and_unknown_files_are_404() {
    let r = TestRouter::builder().tag("web-pages").start().await;
    let page = fetch(&r.tcp_api, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.to_lowercase().contains("content-type: text/html"),
        "{page}"
    );
    assert!(page.contains("/ui/assets/app.js"), "{page}");
    let login = fetch(&r.tcp_api, "/login").await;
    assert!(
        login.starts_with("HTTP/1.1 200") && login.contains("id=\"token\""),
        "{login}"
    );
    let js = fetch(&r.tcp_api, "/ui/assets/app.js").await;
    assert!(js.starts_with("HTTP/1.1 200"), "{js}");
    assert!(
        js.to_lowercase().contains("content-type: text/javascript"),
        "{js}"
    );
    let missing = fetch(&r.tcp_api, "/ui/assets/nope.js").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(
        missing.contains(r#"{"error":"no dashboard file \"nope.js\""}"#),
        "{missing}"
    );
    r.stop().await;
}

#[tokio::test]
async fn the_stream_sends_the_cluster_every_second_and_ends_when_the_router_stops() {
    let r = TestRouter::builder()
        .tag("web-stream")
        .hosts(2)
        .start()
        .await;
    let mut s = get(&r.tcp_api, "/ui/stream").await;
    let mut buf = String::new();
    let first = next_frame(&mut s, &mut buf).await;
    let hosts: Vec<&str> = first["snap"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 2, "{first}");
    assert!(first["snap"]["energy"].is_object(), "{first}");
    assert!(
        first["events"].is_array() && first["history"].is_array(),
        "{first}"
    );
    // The next frame comes on a change or, at the latest, with the one-second refresh.
    let t0 = std::time::Instant::now();
    let second = next_frame(&mut s, &mut buf).await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(second["snap"]["at_ms"].as_u64() > first["snap"]["at_ms"].as_u64());
    assert_eq!(
        second["history"],
        serde_json::json!([]),
        "sent once: {second}"
    );

    // The stream is open while the router stops: the stop completes and the stream ends.
    timeout(Duration::from_secs(5), r.stop())
        .await
        .expect("the router stops with a stream open");
    let mut rest = Vec::new();
    let read = timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the stream ended");
}
