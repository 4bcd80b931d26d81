//! `genie check-config FILE` as an operator runs it: "ok" and exit 0 for a good
//! genie.toml, one `error:` line naming the file and the key otherwise (here a cluster
//! secret too short to be safe).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const GENIE: &str = env!("CARGO_BIN_EXE_genie");

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn secret(d: &Path, content: &str) -> PathBuf {
    let p = d.join("cluster.secret");
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn genie_check_config_says_ok_or_names_the_problem() {
    let d = std::env::temp_dir().join(format!("wisp-genie-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let d = Dir(d);
    let s = secret(&d.0, "0123456789abcdef0123456789abcdef\n");
    let f = d.0.join("genie.toml");
    std::fs::write(
        &f,
        format!(
            "host = \"h1\"\nrouter = \"127.0.0.1:7100\"\nsecret_file = \"{}\"\nvm_dir = \"{}\"\n",
            s.display(),
            d.0.display()
        ),
    )
    .unwrap();
    let o = Command::new(GENIE)
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(": ok (host h1"), "{out}");

    secret(&d.0, "short\n");
    let o = Command::new(GENIE)
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("secret_file") && err.contains("holds 5 bytes"),
        "{err}"
    );
}

#[test]
fn genie_check_config_names_a_missing_sys_power_dir() {
    let d = std::env::temp_dir().join(format!("wisp-genie-check-pw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let d = Dir(d);
    let s = secret(&d.0, "0123456789abcdef0123456789abcdef\n");
    let f = d.0.join("genie.toml");
    let write = |power: &Path| {
        std::fs::write(
            &f,
            format!(
                "host = \"h1\"\nrouter = \"127.0.0.1:7100\"\nsecret_file = \"{}\"\nvm_dir = \"{}\"\nsys_power_dir = \"{}\"\n",
                s.display(),
                d.0.display(),
                power.display()
            ),
        )
        .unwrap();
    };
    write(&d.0.join("no-such-power-dir"));
    let o = Command::new(GENIE)
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ")
            && err.contains("sys_power_dir")
            && err.contains("no-such-power-dir"),
        "{err}"
    );
    // An existing directory (the lab's fake /sys/power) is fine.
    write(&d.0);
    let o = Command::new(GENIE)
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn genie_check_config_shows_migration_ports_and_names_a_bad_range() {
    let d = std::env::temp_dir().join(format!("wisp-genie-check-mp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let d = Dir(d);
    let s = secret(&d.0, "0123456789abcdef0123456789abcdef\n");
    let f = d.0.join("genie.toml");
    let check = |extra: &str| {
        std::fs::write(
            &f,
            format!(
                "host = \"h1\"\nrouter = \"127.0.0.1:7100\"\nsecret_file = \"{}\"\nvm_dir = \"{}\"\n{extra}",
                s.display(),
                d.0.display(),
            ),
        )
        .unwrap();
        Command::new(GENIE)
            .arg("check-config")
            .arg(&f)
            .output()
            .unwrap()
    };
    for (extra, shown) in [
        ("", "migration_ports 49152-49215"),
        (
            "migration_ports = \"50000-50003\"\n",
            "migration_ports 50000-50003",
        ),
        ("migration_ports = \"50000\"\n", "migration_ports 50000;"),
    ] {
        let o = check(extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(shown), "{extra}: {out}");
    }
    for (bad, says) in [
        (
            "\"50010-50000\"",
            "\"50010-50000\": the range starts at 50010, after its end 50000",
        ),
        ("\"0\"", "port 0"),
        ("\"5o000\"", "\"5o000\" is not a port"),
    ] {
        let o = check(&format!("migration_ports = {bad}\n"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ")
                && err.contains("genie.toml")
                && err.contains("`migration_ports`")
                && err.contains(says),
            "{bad}: {err}"
        );
    }
}
