//! `router check-config FILE` as an operator runs it (the genie's twin is tested in
//! `genie/tests/check_config.rs`):
//! a good file says "ok" and exits 0; each bad value that the daemons used to accept
//! (a lease that kills every VM at once or overflows, infinite or NaN energy timings, a
//! one-byte or blank cluster secret) exits 1 with one `error:` line naming the file and
//! the key.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROUTER: &str = env!("CARGO_BIN_EXE_router");

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("wisp-check-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn secret(d: &Path, content: &str) -> PathBuf {
    let p = d.join("cluster.secret");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A router.toml with `extra` lines in its top table and `energy` as its energy table.
fn router_toml(d: &Path, extra: &str, energy: &str) -> PathBuf {
    let s = d.join("cluster.secret");
    let p = d.join("router.toml");
    std::fs::write(
        &p,
        format!(
            "listen = \"127.0.0.1:1\"\nstate_dir = \"{}\"\nsecret_file = \"{}\"\n{extra}\n\
             [[host]]\nname = \"h1\"\nmac = \"02:00:00:00:00:01\"\naddress = \"127.0.0.1\"\n\
             {energy}\n",
            d.join("state").display(),
            s.display()
        ),
    )
    .unwrap();
    p
}

/// Runs `router check-config FILE`: exit code, stdout, stderr.
fn check(file: &Path) -> (i32, String, String) {
    let o = Command::new(ROUTER)
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn a_good_config_is_ok() {
    let d = dir("good");
    secret(&d.0, "0123456789abcdef0123456789abcdef\n");
    let f = router_toml(&d.0, "lease_ms = 3000", "");
    let (code, out, err) = check(&f);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok (1 hosts"), "{out}");
    // Self-fencing off is a valid choice.
    let f = router_toml(&d.0, "lease_ms = 0", "");
    assert_eq!(check(&f).0, 0);
}

#[test]
fn values_the_daemon_used_to_accept_are_refused_by_key() {
    let d = dir("bad");
    secret(&d.0, "0123456789abcdef0123456789abcdef\n");
    let cases = [
        ("lease_ms = 1", "", "lease_ms"),
        ("lease_ms = 700", "", "lease_ms"),
        ("lease_ms = 9223372036854775807", "", "lease_ms"),
        ("lease_ms = 18446744073709551615", "", "lease_ms"),
        ("heartbeat_ms = 9223372036854775807", "", "heartbeat_ms"),
        ("", "[energy]\ninterval_s = inf", "energy.interval_s"),
        ("", "[energy]\ninterval_s = 1e30", "energy.interval_s"),
        ("", "[energy]\ninterval_s = nan", "energy.interval_s"),
        ("", "[energy]\nupper = nan", "energy.upper"),
        ("", "[energy]\nmin_awake_s = nan", "energy.min_awake_s"),
        ("", "[energy]\nidle_watts = inf", "energy.idle_watts"),
    ];
    for (extra, energy, key) in cases {
        let f = router_toml(&d.0, extra, energy);
        let (code, _out, err) = check(&f);
        assert_eq!(code, 1, "{extra}{energy}: accepted");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
        assert!(
            err.contains(&f.display().to_string()) && err.contains(key),
            "{extra}{energy}: the error must name the file and {key}: {err}"
        );
    }
}

#[test]
fn short_or_blank_cluster_secrets_are_refused() {
    let d = dir("secret");
    let f = router_toml(&d.0, "", "");
    for (content, says) in [
        ("x\n", "holds 1 bytes"),
        ("                \n", "only white space"),
    ] {
        let s = secret(&d.0, content);
        let (code, _out, err) = check(&f);
        assert_eq!(code, 1, "{content:?} accepted");
        assert!(
            err.contains(says) && err.contains(&s.display().to_string()),
            "{err}"
        );
    }
}
