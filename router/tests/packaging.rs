//! What ships under `systemd/`: the example configs parse with the real loaders, and
//! the units pass `systemd-analyze verify` (with ExecStart pointed at the binaries
//! just built, since verify insists that the executable exists); and the Debian
//! packages build, hold what they should and install into a throwaway root.
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

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (dpkg is part of every Debian system)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// packaging/build-debs.sh builds both packages from the binaries just built; they
/// hold what an operator needs, and install into a throwaway root with dpkg, whose
/// postinst creates the `wisp` group and the state directories.
#[test]
fn debian_packages_build_inspect_and_install() {
    let router_bin = PathBuf::from(env!("CARGO_BIN_EXE_router"));
    let bindir = router_bin.parent().unwrap();
    assert!(
        bindir.join("genie").exists(),
        "genie missing next to the router: run `cargo build --workspace --bins` first"
    );
    let tmp = std::env::temp_dir().join(format!("wisp-debs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = tmp.join("dist");
    let script = systemd_dir().join("../packaging/build-debs.sh");
    // gzip: xz of two binaries takes minutes on a loaded machine.
    let built = run(Command::new(&script)
        .arg(bindir)
        .arg(&out)
        .env("DEB_COMPRESS", "gzip"));
    let debs: Vec<PathBuf> = built.lines().map(PathBuf::from).collect();
    assert_eq!(debs.len(), 2, "{built}");
    let deb = |name: &str| {
        debs.iter()
            .find(|d| d.file_name().unwrap().to_str().unwrap().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} package in {built}"))
            .clone()
    };

    for (pkg, bin, pages) in [
        ("wisp-router_", "router", "router-vm-migrate.1.gz"),
        ("wisp-genie_", "genie", "genie.1.gz"),
    ] {
        let d = deb(pkg);
        let info = run(Command::new("dpkg-deb").arg("-I").arg(&d));
        assert!(info.contains("Version: "), "{info}");
        assert!(info.contains("postinst"), "{info}");
        let conffiles = run(Command::new("dpkg-deb")
            .args(["-I"])
            .arg(&d)
            .arg("conffiles"));
        assert_eq!(conffiles.trim(), format!("/etc/wisp/{bin}.toml"));
        let list = run(Command::new("dpkg-deb").arg("-c").arg(&d));
        for path in [
            format!("./usr/bin/{bin}"),
            format!("./lib/systemd/system/wisp-{bin}.service"),
            format!("./etc/wisp/{bin}.toml"),
            format!("./usr/share/man/man1/{pages}"),
            format!("./usr/share/bash-completion/completions/{bin}"),
            format!("./usr/share/zsh/vendor-completions/_{bin}"),
            format!("./usr/share/fish/vendor_completions.d/{bin}.fish"),
        ] {
            assert!(
                list.contains(&path),
                "{} lacks {path}:\n{list}",
                d.display()
            );
        }
    }

    // A throwaway root with an empty dpkg database and a group file of its own.
    let root = tmp.join("root");
    for d in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/gshadow"), "root:*::\n").unwrap();
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        // Maintainer scripts run outside the root with DPKG_ROOT set (the root has no
        // shell to chroot into); QEMU is not in the throwaway root.
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "-i",
        ])
        .args(&debs));
    let status = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "wisp-router"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("/etc/wisp/router.toml"),
        "conffile: {status}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("wisp:")),
        "no wisp group: {group}"
    );
    for d in ["var/lib/wisp/router", "var/lib/wisp/vms"] {
        assert!(root.join(d).is_dir(), "postinst did not create /{d}");
    }
    let version = run(Command::new(root.join("usr/bin/router")).arg("--version"));
    assert!(version.starts_with("router "), "{version}");
    // The packaged example config is what check-config and the loaders accept.
    router::config::RouterConfig::load(&root.join("etc/wisp/router.toml")).unwrap();
    // Installing again (an upgrade) keeps the group single and succeeds.
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "-i",
        ])
        .args(&debs));
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert_eq!(
        group.lines().filter(|l| l.starts_with("wisp:")).count(),
        1,
        "{group}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}
