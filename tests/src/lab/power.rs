//! A lab host's power: the one place that turns a host "on" (start its genie in its
//! namespace) or "off" (kill every process in its namespace).
//!
//! The chassis program called by `ipmi_sim`, the Wake-on-LAN listener and the lab's own
//! test helpers all go through these functions, so every path powers a host the same
//! way. Everything a power action needs is in the host directory ([`HostFile`]), so the
//! helper binaries take no other configuration. A lock file serialises concurrent
//! actions (a WoL wake racing an IPMI power-on).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::cmd::{self, CmdError};
use super::procs;

/// Name of the description file inside a host directory.
pub const HOST_FILE: &str = "lab-host.json";
const POWER_FILE: &str = "power";
const LOCK_FILE: &str = "power.lock";

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

/// Powers the host on: records `on` and starts its genie, fully detached
/// (`setsid -f`, stdio to the genie log) so the caller returns at once and no child
/// keeps the caller's stdout open (ipmi_sim waits for EOF on it). Returns false if the
/// host was already on (nothing done).
pub fn power_on(dir: &Path) -> Result<bool, PowerError> {
    let _guard = lock(dir)?;
    if state(dir)? == Power::On {
        return Ok(false);
    }
    let host = read_host_file(dir)?;
    record(dir, Power::On)?;
    start_genie(&host)?;
    Ok(true)
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
    /// Pull the plug: SIGKILL everything.
    Hard,
    /// ACPI soft-off: SIGTERM first, then SIGKILL what is left after a short grace
    /// (short because ipmi_sim waits for us).
    Soft,
    /// Suspend to RAM (recorded as `suspended`).
    Suspend,
}

/// Powers the host off: every process in its namespace (genie, qemu) dies. `except`
/// is a PID to spare (the suspend helper running inside the namespace).
pub fn power_off(dir: &Path, how: OffHow, except: Option<i32>) -> Result<(), PowerError> {
    let _guard = lock(dir)?;
    let host = read_host_file(dir)?;
    let err = |source| PowerError::Command {
        host: host.name.clone(),
        source,
    };
    if how == OffHow::Soft {
        let pids: Vec<i32> = procs::ns_pids(&host.ns)
            .map_err(err)?
            .into_iter()
            .filter(|&p| Some(p) != except)
            .collect();
        for &p in &pids {
            procs::signal(p, Signal::SIGTERM);
        }
        procs::wait_gone(&pids, Duration::from_millis(500));
    }
    procs::kill_ns(&host.ns, except, Duration::from_secs(3)).map_err(err)?;
    record(
        dir,
        if how == OffHow::Suspend {
            Power::Suspended
        } else {
            Power::Off
        },
    )
}

/// Records the power state without acting (the lab's setup of an initially-off host).
pub fn set_recorded(dir: &Path, p: Power) -> Result<(), PowerError> {
    let _guard = lock(dir)?;
    record(dir, p)
}
