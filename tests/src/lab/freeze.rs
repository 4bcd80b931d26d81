//! Freezing and thawing every process of a lab host, the way suspend-to-RAM freezes a
//! machine: the processes stop where they are, keep every file and socket, and carry
//! on from there when thawed (same PIDs).
//!
//! Two ways, chosen per lab when it is built:
//! - the cgroup v2 freezer (`cgroup.freeze`) on a cgroup per host, `<cgroup2
//!   mount>/wisp-lab/<host namespace>`: the processes are moved into it and frozen
//!   together; they cannot tell (no SIGCHLD to a parent, no state change a signal
//!   handler sees), which is closest to the kernel's own freezer. Frozen tasks show
//!   state `S` in `/proc`, so "frozen" is read from `cgroup.events`.
//! - SIGSTOP to every process, repeated until a listing finds them all stopped (a
//!   process may fork between our listing and our signal); SIGCONT thaws. Used where no
//!   writable cgroup2 hierarchy exists, or when `WISP_LAB_FREEZER=signals` asks for it.
//!
//! Either way a frozen process still dies of SIGKILL, which is how a BMC's power-off
//! of a sleeping host kills it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::cmd::CmdError;
use super::procs;

/// Environment variable that forces the SIGSTOP freezer (`signals`).
pub const FREEZER_ENV: &str = "WISP_LAB_FREEZER";
/// The lab's directory inside the cgroup2 hierarchy.
const CGROUP_DIR: &str = "wisp-lab";
/// How long freezing or thawing may take before it is an error.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("cannot list the processes of namespace {ns}")]
    List {
        ns: String,
        #[source]
        source: CmdError,
    },
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("namespace {ns}: {what} not done after {secs} s (left: {left:?})")]
    Timeout {
        ns: String,
        what: &'static str,
        secs: u64,
        left: Vec<i32>,
    },
}

/// The cgroup2 mount point, from `/proc/self/mounts` (`/sys/fs/cgroup` on a pure v2
/// system, `/sys/fs/cgroup/unified` on a hybrid one).
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// `<cgroup2 mount>/wisp-lab` if it exists (teardown never creates it).
fn lab_root() -> Option<PathBuf> {
    let root = cgroup2_mount()?.join(CGROUP_DIR);
    root.is_dir().then_some(root)
}

/// Creates host `ns`'s cgroup and returns it, or `None` when the SIGSTOP freezer is to
/// be used (forced by [`FREEZER_ENV`], or no writable cgroup2 freezer here).
///
/// The path returned goes through `/proc/<this process>/root`: the programs that
/// freeze and thaw (the chassis program, the WoL listener, the suspend helper) run
/// under `ip netns exec`, which mounts a fresh sysfs on `/sys` and so hides the cgroup
/// mounts below it; through the lab process's root they see the lab's mounts. The lab
/// process outlives every one of them.
pub fn create_host_cgroup(ns: &str) -> Option<PathBuf> {
    if std::env::var(FREEZER_ENV).is_ok_and(|v| v == "signals") {
        return None;
    }
    let mount = cgroup2_mount()?;
    let dir = mount.join(CGROUP_DIR).join(ns);
    // `cgroup.freeze` exists in every non-root cgroup of a kernel with the v2 freezer
    // (5.2+); without it, or without write access, fall back to signals.
    let usable = fs::create_dir_all(&dir).is_ok() && dir.join("cgroup.freeze").is_file();
    if !usable {
        let _ = fs::remove_dir(&dir);
        return None;
    }
    let rel = dir.strip_prefix("/").unwrap_or(&dir);
    Some(PathBuf::from(format!("/proc/{}/root", std::process::id())).join(rel))
}

/// The cgroup a suspend helper moves itself to, so that freezing the host's cgroup
/// does not freeze the helper doing it (it inherited the genie's cgroup).
fn spared_cgroup(cg: &Path) -> PathBuf {
    let mut name = cg.file_name().unwrap_or_default().to_owned();
    name.push("-spared");
    cg.with_file_name(name)
}

/// Removes host `ns`'s cgroups (at teardown, after its processes were killed; also for
/// the labs of dead test processes). Kills whatever is still in them first.
pub fn remove_host_cgroups(ns: &str) {
    let Some(root) = lab_root() else {
        return;
    };
    let cg = root.join(ns);
    for dir in [spared_cgroup(&cg), cg] {
        if !dir.is_dir() {
            continue;
        }
        let _ = fs::write(dir.join("cgroup.kill"), "1");
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
        // rmdir fails while a killed task is still exiting: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), FreezeError> {
    fs::write(path, value).map_err(|source| FreezeError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// PIDs in `cg` (its `cgroup.procs`).
fn members(cg: &Path) -> Result<BTreeSet<i32>, FreezeError> {
    let path = cg.join("cgroup.procs");
    let text = fs::read_to_string(&path).map_err(|source| FreezeError::Read { path, source })?;
    Ok(text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// True if `cg`'s `cgroup.events` says `frozen 1`.
fn cgroup_frozen(cg: &Path) -> Result<bool, FreezeError> {
    let path = cg.join("cgroup.events");
    let text = fs::read_to_string(&path).map_err(|source| FreezeError::Read { path, source })?;
    Ok(text.lines().any(|l| l.trim() == "frozen 1"))
}

fn live_pids(ns: &str, except: Option<i32>) -> Result<Vec<i32>, FreezeError> {
    Ok(procs::ns_pids(ns)
        .map_err(|source| FreezeError::List {
            ns: ns.to_owned(),
            source,
        })?
        .into_iter()
        .filter(|&p| Some(p) != except)
        .collect())
}

/// Freezes every process in `ns` but `except` (the suspend helper). Returns the PIDs
/// frozen. Repeats until a listing finds nothing unfrozen, because a process may fork
/// between our listing and our freezing it.
pub fn freeze(
    ns: &str,
    cgroup: Option<&Path>,
    except: Option<i32>,
) -> Result<Vec<i32>, FreezeError> {
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    if let (Some(cg), Some(me)) = (cgroup, except) {
        if members(cg)?.contains(&me) {
            let spared = spared_cgroup(cg);
            fs::create_dir_all(&spared).map_err(|source| FreezeError::Write {
                path: spared.clone(),
                value: "(mkdir)".into(),
                source,
            })?;
            write(&spared.join("cgroup.procs"), &me.to_string())?;
        }
    }
    loop {
        let pids = live_pids(ns, except)?;
        let left = match cgroup {
            Some(cg) => freeze_cgroup_once(cg, &pids, deadline)?,
            None => stop_once(&pids, deadline),
        };
        if left.is_empty() {
            // Frozen as listed: a new listing finding no newcomer means stable.
            let again = live_pids(ns, except)?;
            let newcomers: Vec<i32> = again
                .iter()
                .copied()
                .filter(|p| !pids.contains(p))
                .collect();
            if newcomers.is_empty() {
                return Ok(pids);
            }
        }
        if Instant::now() >= deadline {
            return Err(FreezeError::Timeout {
                ns: ns.to_owned(),
                what: "freezing",
                secs: FREEZE_TIMEOUT.as_secs(),
                left,
            });
        }
    }
}

/// Moves `pids` into `cg` and freezes it; returns those not frozen in it.
fn freeze_cgroup_once(cg: &Path, pids: &[i32], deadline: Instant) -> Result<Vec<i32>, FreezeError> {
    let inside = members(cg)?;
    for &p in pids.iter().filter(|p| !inside.contains(p)) {
        // A process that exited meanwhile cannot be moved (ESRCH): not an error.
        if let Err(e) = write(&cg.join("cgroup.procs"), &p.to_string()) {
            if procs::is_alive(p) {
                return Err(e);
            }
        }
    }
    write(&cg.join("cgroup.freeze"), "1")?;
    while !cgroup_frozen(cg)? && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let inside = members(cg)?;
    let frozen = cgroup_frozen(cg)?;
    Ok(pids
        .iter()
        .copied()
        .filter(|&p| procs::is_alive(p) && (!frozen || !inside.contains(&p)))
        .collect())
}

/// SIGSTOPs `pids` and waits until each is stopped (`T`); returns those not stopped.
fn stop_once(pids: &[i32], deadline: Instant) -> Vec<i32> {
    for &p in pids {
        if procs::state(p) != Some('T') {
            procs::signal(p, Signal::SIGSTOP);
        }
    }
    let stopped_or_gone = |p: i32| !procs::is_alive(p) || procs::state(p) == Some('T');
    loop {
        let left: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&p| !stopped_or_gone(p))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Thaws every process in `ns` (the same processes carry on).
pub fn thaw(ns: &str, cgroup: Option<&Path>) -> Result<(), FreezeError> {
    match cgroup {
        Some(cg) => {
            write(&cg.join("cgroup.freeze"), "0")?;
            let deadline = Instant::now() + FREEZE_TIMEOUT;
            while cgroup_frozen(cg)? {
                if Instant::now() >= deadline {
                    return Err(FreezeError::Timeout {
                        ns: ns.to_owned(),
                        what: "thawing",
                        secs: FREEZE_TIMEOUT.as_secs(),
                        left: members(cg)?.into_iter().collect(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        }
        None => {
            for p in live_pids(ns, None)? {
                procs::signal(p, Signal::SIGCONT);
            }
            Ok(())
        }
    }
}

/// Unfreezes `cgroup` without touching processes (after they were all killed), so a
/// process moved into it later is not frozen by a leftover state.
pub fn reset(cgroup: Option<&Path>) -> Result<(), FreezeError> {
    match cgroup {
        Some(cg) => write(&cg.join("cgroup.freeze"), "0"),
        None => Ok(()),
    }
}

/// True if `ns` has processes and every one of them is frozen (in the frozen cgroup,
/// or stopped).
pub fn is_frozen(ns: &str, cgroup: Option<&Path>) -> Result<bool, FreezeError> {
    let pids = live_pids(ns, None)?;
    if pids.is_empty() {
        return Ok(false);
    }
    match cgroup {
        Some(cg) => {
            let inside = members(cg)?;
            Ok(cgroup_frozen(cg)? && pids.iter().all(|p| inside.contains(p)))
        }
        None => Ok(pids.iter().all(|&p| procs::state(p) == Some('T'))),
    }
}
