//! `router simulate` on small synthetic traces (the PlanetLab format: one file per VM,
//! 288 integer CPU percents) written to a temp dir: it runs without a daemon, prints
//! the metrics, writes the SVG, and `--json` carries the same report. Also the errors
//! for a missing day and for a missing `--traces` (the traces are not part of wisp, so
//! there is no default to fall back on).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 40 VMs: half idle-ish (5 %), half with a daily wave (10–90 %).
fn write_traces(root: &Path, day: &str) {
    let dir = root.join("planetlab").join(day);
    std::fs::create_dir_all(&dir).unwrap();
    for vm in 0..40 {
        let lines: Vec<String> = (0..288)
            .map(|i| {
                let v = if vm % 2 == 0 {
                    5.0
                } else {
                    50.0 + 40.0
                        * ((i as f64 / 288.0 + vm as f64 / 40.0) * std::f64::consts::TAU).sin()
                };
                format!("{}", v.round() as i64)
            })
            .collect();
        std::fs::write(dir.join(format!("vm{vm:03}")), lines.join("\n") + "\n").unwrap();
    }
}

fn router() -> Command {
    Command::new(env!("CARGO_BIN_EXE_router"))
}

#[test]
fn simulate_runs_the_planner_on_traces_and_writes_the_plot() {
    let root = Dir(std::env::temp_dir().join(format!("wisp-sim-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    write_traces(&root.0, "20990101");
    let svg = root.0.join("plot.svg");
    // The API address is never used: no daemon is running.
    let out = router()
        .args(["--api", "127.0.0.1:9", "simulate", "--traces"])
        .arg(&root.0)
        .args(["--day", "20990101", "--svg"])
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("40 VMs"), "{stdout}");
    assert!(
        stdout.contains("energy") && stdout.contains("migrations"),
        "{stdout}"
    );
    assert!(stdout.contains("no published baseline"), "{stdout}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.trim_start().starts_with("<svg") || plot.starts_with("<?xml"),
        "{}",
        &plot[..80.min(plot.len())]
    );
    assert!(plot.contains("</svg>"));

    // --json: the same simulation, machine-readable; the realistic scenario adds standby.
    let out = router()
        .args(["simulate", "--json", "--scenario", "realistic", "--traces"])
        .arg(&root.0)
        .args(["--day", "20990101"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["day"], "20990101");
    assert_eq!(v["report"]["vms"], 40);
    assert_eq!(v["report"]["series"].as_array().unwrap().len(), 288);
    let e = v["report"]["energy_kwh"].as_f64().unwrap();
    assert!(e > 0.0, "{v}");
    assert!(v["report"]["standby_kwh"].as_f64().unwrap() >= 0.0);
}

#[test]
fn simulate_names_the_missing_day_directory() {
    let out = router()
        .args(["simulate", "--traces", "/nonexistent-wisp", "--day", "0303"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("/nonexistent-wisp/planetlab/20110303"),
        "{err}"
    );
}

#[test]
fn simulate_without_traces_says_where_to_get_them() {
    let out = router()
        .args(["simulate", "--day", "0303"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("--traces DIR"), "{err}");
    assert!(err.contains("Cloudslab/cloudsim"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
