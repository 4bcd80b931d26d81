//! A lab host's power: the one place that turns a host on (start its genie in its
//! namespace), off (kill every process in its namespace), to sleep (freeze them and cut
//! its link) and awake again (restore the link, thaw the same processes).
//!
//! The chassis program called by `ipmi_sim`, the Wake-on-LAN listener and the lab's own
//! test helpers all go through these functions, so every path powers a host the same
//! way. Everything a power action needs is in the host directory ([`HostFile`]), so the
//! helper binaries take no other configuration. A lock file serialises concurrent
//! actions (a WoL wake racing an IPMI power-on).
//!
//! What each state looks like from outside:
//! - `on`: the genie (or a stand-in) runs; the link is up.
//! - `suspended` (S3): every process frozen ([`freeze`]), the link cut ([`link`]);
//!   sockets are neither closed nor reset and nothing goes on the wire; the BMC says
//!   power off. A wake restores the link, then thaws: the same processes carry on with
//!   the same sockets. An IPMI power-off kills the frozen processes without a word
//!   (S3 to S5, as real BMCs do).
//! - `off`: nothing runs. A soft or hard power-off of a running host kills its
//!   processes, so their kernel closes their connections (FIN or RST): an orderly
//!   shutdown. A silent power loss ([`OffHow::PowerLoss`]) cuts the link first and
//!   destroys the sockets before the processes die: no FIN or RST reaches anyone.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::cmd::{self, CmdError};
use super::freeze::{self, FreezeError};
use super::{link, procs};

/// Name of the description file inside a host directory.
pub const HOST_FILE: &str = "lab-host.json";
const POWER_FILE: &str = "power";
const LOCK_FILE: &str = "power.lock";
/// Present while the WoL listener is to ignore magic packets for the host.
const WOL_IGNORED_FILE: &str = "wol-ignored";
/// How long a suspend lets data in flight be acknowledged before it cuts the link.
const DRAIN: Duration = Duration::from_secs(1);

/// What a power action needs to know about its host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostFile {
    /// Host name (`h1`).
    pub name: String,
    /// The host's network namespace.
    pub ns: String,
    /// What "the host's OS" runs when powered on: the genie command line (or a
    /// stand-in such as `sleep infinity` in tests that do not need a genie).
    pub genie_argv: Vec<String>,
    /// Where the genie's stdout and stderr go (appended).
    pub genie_log: PathBuf,
    /// The core namespace, which holds the bridge.
    pub core_ns: String,
    /// The host's port on the bridge (`h<i>` in the core namespace).
    pub port: String,
    /// The host's cgroup for the cgroup v2 freezer; `None`: SIGSTOP (see freeze.rs).
    pub cgroup: Option<PathBuf>,
}

/// Chassis power as the lab records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
    /// Suspended to RAM: off as IPMI sees it, woken by WoL or IPMI power-on.
    Suspended,
}

impl Power {
    fn as_str(self) -> &'static str {
        match self {
            Power::On => "on",
            Power::Off => "off",
            Power::Suspended => "suspended",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("cannot read lab host file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lab host file {path} is malformed")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("host {host}: the genie command line is empty")]
    NoGenie { host: String },
    #[error("host {host}: cannot start or stop its processes")]
    Command {
        host: String,
        #[source]
        source: CmdError,
    },
    #[error("host {host}: cannot freeze or thaw its processes")]
    Freeze {
        host: String,
        #[source]
        source: FreezeError,
    },
    #[error("host {host}: TCP sockets survived a power loss: {left:?}")]
    SocketsLeft { host: String, left: Vec<String> },
}

/// Writes the host file into `dir` (done by the lab at setup).
pub fn write_host_file(dir: &Path, host: &HostFile) -> Result<(), PowerError> {
    let path = dir.join(HOST_FILE);
    let json = serde_json::to_vec_pretty(host).map_err(|source| PowerError::Parse {
        path: path.clone(),
        source,
    })?;
    fs::write(&path, json).map_err(|source| PowerError::Write { path, source })
}

/// Reads the host file from `dir`.
pub fn read_host_file(dir: &Path) -> Result<HostFile, PowerError> {
    let path = dir.join(HOST_FILE);
    let bytes = fs::read(&path).map_err(|source| PowerError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| PowerError::Parse { path, source })
}

/// The recorded power state (off if never recorded).
pub fn state(dir: &Path) -> Result<Power, PowerError> {
    let path = dir.join(POWER_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(match s.trim() {
            "on" => Power::On,
            "suspended" => Power::Suspended,
            _ => Power::Off,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Power::Off),
        Err(source) => Err(PowerError::Read { path, source }),
    }
}

fn record(dir: &Path, p: Power) -> Result<(), PowerError> {
    let path = dir.join(POWER_FILE);
    fs::write(&path, p.as_str()).map_err(|source| PowerError::Write { path, source })
}

fn lock(dir: &Path) -> Result<Flock<File>, PowerError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| PowerError::Write {
            path: path.clone(),
            source,
        })?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, source)| PowerError::Lock { path, source })
}

/// Powers the host on. A host that is off boots: records `on` and starts its genie,
/// fully detached (`setsid -f`, stdio to the genie log) so the caller returns at once
/// and no child keeps the caller's stdout open (ipmi_sim waits for EOF on it). A
/// suspended host resumes: its link comes back, then the same processes are thawed
/// (devices resume before processes thaw, as in the kernel). Returns false if the host
/// was already on (nothing done).
pub fn power_on(dir: &Path) -> Result<bool, PowerError> {
    let _guard = lock(dir)?;
    let was = state(dir)?;
    if was == Power::On {
        return Ok(false);
    }
    let host = read_host_file(dir)?;
    // A link a power action cut and did not restore (say a helper killed mid-way)
    // would leave a booted host deaf: restore it either way.
    link::restore(&host, dir).map_err(cmd_err(&host))?;
    if was == Power::Suspended {
        freeze::thaw(&host.ns, host.cgroup.as_deref()).map_err(freeze_err(&host))?;
        return record(dir, Power::On).map(|()| true);
    }
    record(dir, Power::On)?;
    start_genie(&host)?;
    Ok(true)
}

fn cmd_err(host: &HostFile) -> impl FnOnce(CmdError) -> PowerError + '_ {
    move |source| PowerError::Command {
        host: host.name.clone(),
        source,
    }
}

fn freeze_err(host: &HostFile) -> impl FnOnce(FreezeError) -> PowerError + '_ {
    move |source| PowerError::Freeze {
        host: host.name.clone(),
        source,
    }
}

/// Starts the host's genie without touching the power state (the lab's
/// `start_genie`, a "restart the agent" on a running host).
pub fn start_genie(host: &HostFile) -> Result<(), PowerError> {
    let (prog, args) = host
        .genie_argv
        .split_first()
        .ok_or_else(|| PowerError::NoGenie {
            host: host.name.clone(),
        })?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&host.genie_log)
        .map_err(|source| PowerError::Write {
            path: host.genie_log.clone(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| PowerError::Write {
        path: host.genie_log.clone(),
        source,
    })?;
    let mut c = cmd::in_ns(&host.ns, "setsid");
    c.arg("-f").arg(prog).args(args);
    c.stdin(Stdio::null()).stdout(log).stderr(log2);
    let status = c.status().map_err(|source| PowerError::Command {
        host: host.name.clone(),
        source: CmdError::Spawn {
            command: cmd::describe(&c),
            source,
        },
    })?;
    if !status.success() {
        return Err(PowerError::Command {
            host: host.name.clone(),
            source: CmdError::Failed {
                command: cmd::describe(&c),
                status,
                stderr: format!("see {}", host.genie_log.display()),
            },
        });
    }
    Ok(())
}

/// How a host goes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffHow {
    /// IPMI hard power-off: SIGKILL everything (their kernel still closes their
    /// connections, as an orderly shutdown would).
    Hard,
    /// ACPI soft-off: SIGTERM first, then SIGKILL what is left after a short grace
    /// (short because ipmi_sim waits for us).
    Soft,
    /// Suspend to RAM (recorded as `suspended`): see [`suspend`].
    Suspend,
    /// The plug pulled for real: nothing says goodbye (see [`power_loss`]).
    PowerLoss,
}

/// Powers the host off, sleeps it or pulls its plug, as `how` says. `except` is a PID
/// to spare (the suspend helper running inside the namespace). A hard or soft
/// power-off of a suspended host kills it silently (S3 to S5: it cannot say goodbye).
pub fn power_off(dir: &Path, how: OffHow, except: Option<i32>) -> Result<(), PowerError> {
    match how {
        OffHow::Suspend => return suspend(dir, except),
        OffHow::PowerLoss => return power_loss(dir, except),
        OffHow::Hard | OffHow::Soft => {}
    }
    let _guard = lock(dir)?;
    let host = read_host_file(dir)?;
    if state(dir)? == Power::Suspended {
        return silent_kill(dir, &host, except);
    }
    if how == OffHow::Soft {
        let pids: Vec<i32> = procs::ns_pids(&host.ns)
            .map_err(cmd_err(&host))?
            .into_iter()
            .filter(|&p| Some(p) != except)
            .collect();
        for &p in &pids {
            procs::signal(p, Signal::SIGTERM);
        }
        procs::wait_gone(&pids, Duration::from_millis(500));
    }
    procs::kill_ns(&host.ns, except, Duration::from_secs(3)).map_err(cmd_err(&host))?;
    freeze::reset(host.cgroup.as_deref()).map_err(freeze_err(&host))?;
    record(dir, Power::Off)
}

/// Suspends a running host to RAM: freezes every process but `except`, lets data in
/// flight be acknowledged (at most [`DRAIN`]), cuts the link, records `suspended`.
/// Processes freeze before the link goes, as in the kernel (tasks freeze, then devices
/// suspend), so nothing a process does while being frozen can hit a dead link. Does
/// nothing to a host that is not on.
pub fn suspend(dir: &Path, except: Option<i32>) -> Result<(), PowerError> {
    let _guard = lock(dir)?;
    if state(dir)? != Power::On {
        return Ok(());
    }
    let host = read_host_file(dir)?;
    freeze::freeze(&host.ns, host.cgroup.as_deref(), except).map_err(freeze_err(&host))?;
    link::drain_send_queues(&host, DRAIN).map_err(cmd_err(&host))?;
    link::cut(&host, dir).map_err(cmd_err(&host))?;
    record(dir, Power::Suspended)
}

/// A silent power loss: cuts the link first, then freezes and kills every process
/// without any of their connections saying goodbye, restores the link (so a later
/// power-on boots normally) and records `off`.
pub fn power_loss(dir: &Path, except: Option<i32>) -> Result<(), PowerError> {
    let _guard = lock(dir)?;
    let host = read_host_file(dir)?;
    if state(dir)? == Power::On {
        link::cut(&host, dir).map_err(cmd_err(&host))?;
        freeze::freeze(&host.ns, host.cgroup.as_deref(), except).map_err(freeze_err(&host))?;
    }
    silent_kill(dir, &host, except)
}

/// Kills a host whose processes are frozen and whose link is cut, silently: its TCP
/// sockets are destroyed first (their RSTs die on the cut link), then the processes;
/// then the link comes back and `off` is recorded.
fn silent_kill(dir: &Path, host: &HostFile, except: Option<i32>) -> Result<(), PowerError> {
    link::cut(host, dir).map_err(cmd_err(host))?;
    link::destroy_sockets(host).map_err(cmd_err(host))?;
    procs::kill_ns(&host.ns, except, Duration::from_secs(3)).map_err(cmd_err(host))?;
    freeze::reset(host.cgroup.as_deref()).map_err(freeze_err(host))?;
    // A socket that was closing when the lab destroyed the others (or opened by a
    // process between the freeze and the kill) would send its FIN once the link is
    // back: destroy again, and refuse to restore the link while any is left.
    let left = link::destroy_sockets(host).map_err(cmd_err(host))?;
    if !left.is_empty() {
        return Err(PowerError::SocketsLeft {
            host: host.name.clone(),
            left,
        });
    }
    link::restore(host, dir).map_err(cmd_err(host))?;
    record(dir, Power::Off)
}

/// Whether the WoL listener ignores magic packets for the host (a NIC or switch that
/// loses them). Read by the listener for every packet.
pub fn wol_ignored(dir: &Path) -> bool {
    dir.join(WOL_IGNORED_FILE).exists()
}

/// Sets or clears [`wol_ignored`].
pub fn set_wol_ignored(dir: &Path, ignored: bool) -> Result<(), PowerError> {
    let path = dir.join(WOL_IGNORED_FILE);
    let r = if ignored {
        fs::write(&path, "")
    } else {
        match fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    };
    r.map_err(|source| PowerError::Write { path, source })
}

/// True if the host has processes and every one of them is frozen.
pub fn is_frozen(dir: &Path) -> Result<bool, PowerError> {
    let host = read_host_file(dir)?;
    freeze::is_frozen(&host.ns, host.cgroup.as_deref()).map_err(freeze_err(&host))
}

/// Records the power state without acting (the lab's setup of an initially-off host).
pub fn set_recorded(dir: &Path, p: Power) -> Result<(), PowerError> {
    let _guard = lock(dir)?;
    record(dir, p)
}
