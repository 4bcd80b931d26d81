//! `/metrics` and `/health` of a real daemon (`daemon::run_on` on loopback, a genie
//! played over the real protocol): the exposition passes `promtool check metrics`
//! (Debian's `prometheus` package; tests/install-deps.sh installs it) and says what
//! the cluster holds; `/health` answers 200 with a small JSON.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::rig::TestRouter;
use support::sealed::write_frame;
use wisp_common::proto::{GenieMsg, HostMetrics, Report, MAX_FRAME_BYTES};

const SECRET: &[u8] = b"test-cluster-secret";

/// A GET on the TCP API with the read token (a scraper's): status and body as text.
async fn get_text(api: &str, path: &str) -> (u16, String) {
    let url = format!("http://{api}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .timeout_global(Some(Duration::from_secs(30)))
                .build(),
        );
        let token = String::from_utf8_lossy(support::rig::READ_TOKEN).into_owned();
        let mut r = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap())
    })
    .await
    .unwrap()
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is missing ({e}): install the prometheus package (tests/install-deps.sh does)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_the_cluster() {
    let r = TestRouter::builder()
        .tag("metrics")
        .secret(SECRET)
        .start()
        .await;
    let mut g = support::genie_handshake(r.link, "h1", SECRET, 42)
        .await
        .unwrap();
    // Reports faster than the rig's 200 ms heartbeat keep h1 up.
    let genie = tokio::spawn(async move {
        for gen in 1.. {
            let report = Report {
                gen,
                sent_at_ms: wisp_common::time::unix_ms(),
                metrics: Some(HostMetrics {
                    cpu_percent: 5.0,
                    mem_total_bytes: 1 << 30,
                    ..Default::default()
                }),
                vms: Some(vec![]),
                ..Default::default()
            };
            if write_frame(&mut g.stream, &GenieMsg::Report(report), MAX_FRAME_BYTES)
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // The host shows as up once the report is applied (a tick publishes it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = get_text(&r.tcp_api, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        // Events are counted by a sampler that follows the snapshots.
        // Its power is what the rig's BMC says, once asked: on, or not known yet.
        let up = text.contains("wisp_hosts{state=\"up\",power=\"unknown\"} 1")
            || text.contains("wisp_hosts{state=\"up\",power=\"on\"} 1");
        if up && text.contains("wisp_events_total{kind=\"genie_connected\"} 1") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "h1 never counted as up (and its connection as an event) in /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for name in [
        "wisp_vms{state=\"running\"} 0",
        "# TYPE wisp_failovers_total counter",
        "# TYPE wisp_fences_total counter",
        "# TYPE wisp_detection_seconds histogram",
        "# TYPE wisp_vm_outage_seconds histogram",
        "# TYPE wisp_ipmi_request_seconds histogram",
        "# TYPE wisp_migrations_total counter",
        "# TYPE wisp_migration_bytes_total counter",
        "# TYPE wisp_migration_downtime_seconds histogram",
        "# TYPE wisp_power_watts gauge",
        "# TYPE wisp_energy_saved_joules_total counter",
        "# TYPE wisp_refused_connections_total counter",
    ] {
        assert!(text.contains(name), "no {name:?} in /metrics:\n{text}");
    }
    let (ok, lint) = promtool_check(&text);
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}\n---\n{text}"
    );
    // promtool does fail on a broken exposition (so the check above means something).
    let (ok, _) = promtool_check("wisp_x{ 1\n");
    assert!(!ok, "promtool accepted garbage");

    let (status, body) = get_text(&r.tcp_api, "/health").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok", "{body}");
    genie.abort();
    r.stop().await;
}
