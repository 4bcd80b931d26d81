//! What this host can do about sleeping and waking ([`PowerCaps`]), learned from the
//! kernel (`<sys_power_dir>/state`, `<sys_power_dir>/mem_sleep`) and from `ethtool IFACE`
//! for the configured `wol_interface`. Whatever cannot be learned is left empty and a
//! note says why, so the router never mistakes "unknown" for "cannot".
//!
//! The parsing is pure and tested on real outputs; [`CapsProbe`] is the effect, so the
//! link's tests use a fake.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use wisp_common::proto::{PowerCaps, WolCaps};

/// How long `ethtool IFACE` may take; it answers in milliseconds unless a driver hangs.
pub const ETHTOOL_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the link learns the power abilities again (an operator may run
/// `ethtool -s`, a kernel update may change sleep states).
pub const RELEARN_EVERY: Duration = Duration::from_secs(60);

/// Learns the host's power abilities. Never fails: what is unknown gets a note.
pub trait CapsProbe: Send + Sync + 'static {
    fn learn(&self) -> impl Future<Output = PowerCaps> + Send;
}

/// The words of a sysfs list file such as `/sys/power/state` (`freeze mem disk`) or
/// `mem_sleep` (`s2idle [deep]`, brackets kept: they mark the kernel's choice).
pub fn parse_words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// The Wake-on-LAN lines of `ethtool IFACE`'s output, or None when it has none (a
/// virtual NIC such as a veth, or a driver that does not implement WoL).
pub fn parse_ethtool(interface: &str, out: &str) -> Option<WolCaps> {
    let field = |name: &str| {
        out.lines().find_map(|l| {
            l.trim()
                .strip_prefix(name)
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
    };
    // "Supports Wake-on:" does not start with "Wake-on", so each prefix finds its line.
    let supported = field("Supports Wake-on")?;
    let armed = field("Wake-on")?;
    Some(WolCaps {
        interface: interface.to_owned(),
        supported,
        armed,
    })
}

/// Reads one sysfs list file; Err is the note to send.
pub fn read_words(path: &Path) -> Result<Vec<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let w = parse_words(&t);
            if w.is_empty() {
                Err(format!(
                    "{} is empty (no sleep state offered, or a restricted sysfs)",
                    path.display()
                ))
            } else {
                Ok(w)
            }
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Puts the pieces together: the two sysfs files' contents (or why they are unknown)
/// and, when a WoL interface is configured, ethtool's output (or why it failed).
pub fn assemble(
    state: Result<Vec<String>, String>,
    mem_sleep: Result<Vec<String>, String>,
    ethtool: Option<(&str, Result<String, String>)>,
) -> PowerCaps {
    let mut caps = PowerCaps::default();
    match state {
        Ok(w) => caps.sleep_states = w,
        Err(n) => caps.notes.push(n),
    }
    match mem_sleep {
        Ok(w) => caps.mem_sleep = w,
        // Without `mem`, mem_sleep has nothing to say; only note it when it matters.
        Err(n) if caps.can_suspend_to_ram() => caps.notes.push(n),
        Err(_) => {}
    }
    match ethtool {
        None => caps
            .notes
            .push("no wol_interface configured: Wake-on-LAN unknown".into()),
        Some((iface, Ok(out))) => match parse_ethtool(iface, &out) {
            Some(w) => caps.wol = Some(w),
            None => caps.notes.push(format!(
                "ethtool shows no Wake-on for {iface} (a virtual NIC, or a driver without WoL)"
            )),
        },
        Some((iface, Err(why))) => caps
            .notes
            .push(format!("cannot ask ethtool about {iface}: {why}")),
    }
    caps
}

/// Runs `ethtool IFACE` (C locale, bounded in time); Err is a one-line reason.
pub async fn run_ethtool(interface: &str) -> Result<String, String> {
    let child = tokio::process::Command::new("ethtool")
        .arg(interface)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(ETHTOOL_TIMEOUT, child).await {
        Err(_) => return Err(format!("no answer within {ETHTOOL_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot run ethtool: {e}")),
        Ok(Ok(o)) => o,
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // ethtool exits non-zero when some of its queries fail (e.g. "Cannot get wake-on-lan
    // settings: Operation not permitted") but may still print the rest: parse what came.
    if out.status.success() || stdout.contains("Wake-on") {
        Ok(stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "ethtool {interface} failed with {}: {}",
            out.status,
            err.lines().next().unwrap_or("").trim()
        ))
    }
}

/// The real probe: sysfs files under `dir`, ethtool for `wol_interface`.
pub async fn learn_system(dir: &Path, wol_interface: Option<&str>) -> PowerCaps {
    let state = read_words(&dir.join("state"));
    let mem_sleep = read_words(&dir.join("mem_sleep"));
    let ethtool = match wol_interface {
        Some(i) => Some((i, run_ethtool(i).await)),
        None => None,
    };
    assemble(state, mem_sleep, ethtool)
}

/// Learns the power abilities now, then every [`RELEARN_EVERY`] or when poked;
/// the link reads the latest from `tx`'s receiver. Runs until aborted.
pub async fn keep_learning<P: CapsProbe>(
    p: Arc<P>,
    tx: watch::Sender<Option<PowerCaps>>,
    stale: Arc<Notify>,
) {
    loop {
        let caps = p.learn().await;
        tx.send_if_modified(|c| {
            let changed = c.as_ref() != Some(&caps);
            if changed {
                tracing::info!(states = ?caps.sleep_states, mem_sleep = ?caps.mem_sleep,
                    wol = ?caps.wol, notes = ?caps.notes, "host power abilities");
                *c = Some(caps);
            }
            changed
        });
        tokio::select! {
            _ = tokio::time::sleep(RELEARN_EVERY) => {}
            _ = stale.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `ethtool eno1` on a server with an Intel I350 (igb); e1000e prints the same lines.
    const IGB: &str = "Settings for eno1:
\tSupported ports: [ TP ]
\tSupported link modes:   10baseT/Half 10baseT/Full
\t                        100baseT/Half 100baseT/Full
\t                        1000baseT/Full
\tSupported pause frame use: Symmetric
\tSupports auto-negotiation: Yes
\tSupported FEC modes: Not reported
\tAdvertised link modes:  10baseT/Half 10baseT/Full
\t                        100baseT/Half 100baseT/Full
\t                        1000baseT/Full
\tAdvertised pause frame use: Symmetric
\tAdvertised auto-negotiation: Yes
\tAdvertised FEC modes: Not reported
\tSpeed: 1000Mb/s
\tDuplex: Full
\tAuto-negotiation: on
\tPort: Twisted Pair
\tPHYAD: 1
\tTransceiver: internal
\tMDI-X: off (auto)
\tSupports Wake-on: pumbg
\tWake-on: g
        Current message level: 0x00000007 (7)
                               drv probe link
\tLink detected: yes
";

    /// A veth: no Wake-on lines at all.
    const VETH: &str = "Settings for eth0:
\tSupported ports: [ ]
\tSupported link modes:   Not reported
\tSupported pause frame use: No
\tSupports auto-negotiation: No
\tSupported FEC modes: Not reported
\tAdvertised link modes:  Not reported
\tAdvertised pause frame use: No
\tAdvertised auto-negotiation: No
\tAdvertised FEC modes: Not reported
\tSpeed: 10000Mb/s
\tDuplex: Full
\tAuto-negotiation: off
\tPort: Twisted Pair
\tPHYAD: 0
\tTransceiver: internal
\tMDI-X: Unknown
\tLink detected: yes
";

    #[test]
    fn igb_output_gives_supported_and_armed_letters() {
        let w = parse_ethtool("eno1", IGB).unwrap();
        assert_eq!(
            w,
            WolCaps {
                interface: "eno1".into(),
                supported: "pumbg".into(),
                armed: "g".into(),
            }
        );
        let caps = assemble(
            Ok(vec!["mem".into()]),
            Ok(vec![]),
            Some(("eno1", Ok(IGB.into()))),
        );
        assert_eq!(caps.wol_armed(), Some(true));
    }

    #[test]
    fn disarmed_wol_is_d() {
        // e1000e after boot on many distributions: supported, not armed.
        let out = IGB.replace("\tWake-on: g", "\tWake-on: d");
        let w = parse_ethtool("eno1", &out).unwrap();
        assert_eq!((w.supported.as_str(), w.armed.as_str()), ("pumbg", "d"));
        let caps = assemble(Ok(vec![]), Ok(vec![]), Some(("eno1", Ok(out))));
        assert_eq!(caps.wol_armed(), Some(false));
    }

    #[test]
    fn a_veth_has_no_wol_and_says_so() {
        assert_eq!(parse_ethtool("eth0", VETH), None);
        let caps = assemble(
            Ok(parse_words("freeze mem\n")),
            Ok(parse_words("s2idle\n")),
            Some(("eth0", Ok(VETH.into()))),
        );
        assert_eq!(caps.wol, None);
        assert_eq!(caps.wol_armed(), None);
        assert!(
            caps.notes
                .iter()
                .any(|n| n.contains("eth0") && n.contains("no Wake-on")),
            "{:?}",
            caps.notes
        );
    }

    #[test]
    fn sysfs_words_keep_the_kernels_choice_in_brackets() {
        assert_eq!(parse_words("freeze mem disk\n"), ["freeze", "mem", "disk"]);
        assert_eq!(parse_words("s2idle [deep]\n"), ["s2idle", "[deep]"]);
        assert!(parse_words("\n").is_empty());
        let caps = assemble(
            Ok(parse_words("freeze mem disk\n")),
            Ok(parse_words("s2idle [deep]\n")),
            None,
        );
        assert!(caps.can_suspend_to_ram());
        assert_eq!(caps.mem_sleep, ["s2idle", "[deep]"]);
        assert!(caps.notes.iter().any(|n| n.contains("no wol_interface")));
        // freeze only (a VM, a container): no suspend to RAM.
        let caps = assemble(Ok(parse_words("freeze\n")), Err("x".into()), None);
        assert!(!caps.can_suspend_to_ram());
    }

    #[test]
    fn missing_or_empty_files_are_noted_not_assumed() {
        let dir = std::env::temp_dir().join(format!("genie-caps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let e = read_words(&dir.join("state")).unwrap_err();
        assert!(e.contains("cannot read") && e.contains("state"), "{e}");
        std::fs::write(dir.join("state"), "\n").unwrap();
        let e = read_words(&dir.join("state")).unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        std::fs::write(dir.join("state"), "freeze mem\n").unwrap();
        assert_eq!(read_words(&dir.join("state")).unwrap(), ["freeze", "mem"]);
        // mem offered, mem_sleep missing: noted, since it matters.
        let caps = assemble(
            read_words(&dir.join("state")),
            read_words(&dir.join("mem_sleep")),
            Some(("eth9", Err("cannot run ethtool: No such file".into()))),
        );
        assert_eq!(caps.sleep_states, ["freeze", "mem"]);
        assert!(caps.mem_sleep.is_empty());
        assert!(
            caps.notes.iter().any(|n| n.contains("mem_sleep")),
            "{:?}",
            caps.notes
        );
        assert!(caps.notes.iter().any(|n| n.contains("eth9")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_real_probe_reads_a_fake_sysfs_dir() {
        let dir = std::env::temp_dir().join(format!("genie-caps-real-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state"), "freeze mem disk\n").unwrap();
        std::fs::write(dir.join("mem_sleep"), "s2idle [deep]\n").unwrap();
        let caps = learn_system(&dir, Some("wisp-no-such-if0")).await;
        assert_eq!(caps.sleep_states, ["freeze", "mem", "disk"]);
        assert_eq!(caps.mem_sleep, ["s2idle", "[deep]"]);
        assert_eq!(caps.wol, None);
        assert!(
            caps.notes.iter().any(|n| n.contains("wisp-no-such-if0")),
            "{:?}",
            caps.notes
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
