//! `router init` end to end (the binary, answers from flags and the BMC password on
//! stdin): the files it writes have the right modes and pass `check-config`, every
//! genie.toml it prints passes `genie check-config`, and it never replaces a file
//! without --force.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "bmc-pass-Zq81";

fn init(dir: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_router"))
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args([
            "--listen",
            "10.9.0.1",
            "--host",
            "h1=10.9.0.11,mac=02:09:00:00:00:01,bmc=10.9.1.11",
            "--host",
            "h2=10.9.0.12,mac=02:09:00:00:00:02,bmc=10.9.1.12:623",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    child.wait_with_output().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_a_config_that_passes_check_config() {
    let dir = std::env::temp_dir().join(format!("wisp-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = init(&dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "router init failed:\n{stderr}");
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "password printed"
    );
    for f in ["cluster.secret", "bmc-h1.password", "bmc-h2.password"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("bmc-h2.password"))
            .unwrap()
            .trim(),
        PASSWORD
    );
    let summary = router::config::check(&dir.join("router.toml"))
        .unwrap_or_else(|e| panic!("check-config: {}", wisp_common::error::chain(&e)));
    assert!(summary.contains("2 hosts, 2 with a BMC"), "{summary}");

    // Every printed genie.toml, with the secret where this test put it, passes the
    // genie's own check.
    let genie = PathBuf::from(env!("CARGO_BIN_EXE_router")).with_file_name("genie");
    assert!(genie.exists(), "run `cargo build --workspace --bins` first");
    let sections: Vec<&str> = stdout.split("# ---- genie.toml of ").skip(1).collect();
    assert_eq!(sections.len(), 2, "{stdout}");
    for (i, s) in sections.iter().enumerate() {
        let text = s.split_once('\n').unwrap().1.replace(
            "/etc/wisp/cluster.secret",
            dir.join("cluster.secret").to_str().unwrap(),
        );
        let path = dir.join(format!("genie-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let c = Command::new(&genie)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            c.status.success(),
            "genie check-config {}: {}",
            path.display(),
            String::from_utf8_lossy(&c.stderr)
        );
    }

    // A second run does not replace anything, unless told to.
    let secret = std::fs::read(dir.join("cluster.secret")).unwrap();
    let again = init(&dir, &[]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("cluster.secret")).unwrap(), secret);
    let forced = init(&dir, &["--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(dir.join("cluster.secret")).unwrap(), secret);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_says_what_is_missing() {
    let dir = std::env::temp_dir().join(format!("wisp-init-bad-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_router"))
        .args(["init", "--listen", "10.9.0.1", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--host"), "{err}");
    assert!(!dir.exists(), "nothing written on a bad answer");
}
