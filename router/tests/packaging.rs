//! What ships under `systemd/`: the example configs parse with the real loaders, and
//! the units pass `systemd-analyze verify` (with ExecStart pointed at the binaries
//! just built, since verify insists that the executable exists).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

#[test]
fn example_configs_parse() {
    let r = router::config::RouterConfig::load(&systemd_dir().join("router.toml"))
        .unwrap_or_else(|e| panic!("systemd/router.toml: {e}"));
    assert!(!r.hosts.is_empty());
    genie::config::GenieConfig::load(&systemd_dir().join("genie.toml"))
        .unwrap_or_else(|e| panic!("systemd/genie.toml: {e}"));
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: install the systemd package (tests/install-deps.sh does)"
    );
    let router_bin = PathBuf::from(env!("CARGO_BIN_EXE_router"));
    // The genie binary sits next to the router's in the same target directory.
    let genie_bin = router_bin.with_file_name("genie");
    assert!(
        genie_bin.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        genie_bin.display()
    );
    let dir = std::env::temp_dir().join(format!("wisp-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (unit, bin, real) in [
        ("wisp-router.service", "/usr/bin/router", &router_bin),
        ("wisp-genie.service", "/usr/bin/genie", &genie_bin),
    ] {
        let text = std::fs::read_to_string(systemd_dir().join(unit)).unwrap();
        assert!(text.contains(bin), "{unit} should start {bin}");
        assert!(
            text.contains("Type=notify"),
            "{unit}: the daemons send READY=1"
        );
        assert!(text.contains("Restart=always"), "{unit}");
        assert!(
            text.contains("WatchdogSec="),
            "{unit}: the daemons ping systemd's watchdog"
        );
        let path = dir.join(unit);
        std::fs::write(&path, text.replace(bin, real.to_str().unwrap())).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Without systemd as PID 1, verify still checks syntax but complains that it
        // cannot connect to the bus or find dependencies it would load from there.
        let real_problems: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                l.contains(unit)
                    || l.contains("Unknown")
                    || l.contains("Failed to parse")
                    || l.contains("bad-setting")
            })
            .filter(|l| !l.contains("network-online.target") && !l.contains("multi-user.target"))
            .collect();
        assert!(
            out.status.success() && real_problems.is_empty(),
            "systemd-analyze verify {unit} failed ({}):\n{stderr}",
            out.status
        );
    }
    let genie = std::fs::read_to_string(systemd_dir().join("wisp-genie.service")).unwrap();
    assert!(
        genie.contains("KillMode=process"),
        "stopping genie must not kill its VMs"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
