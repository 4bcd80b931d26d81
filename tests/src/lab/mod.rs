//! The lab: a small wisp cluster built from real parts on one machine.
//!
//! `Lab::start(LabSpec)` creates, for one test:
//! - a core namespace with bridge `br0` (10.77.0.1/24): the router's network;
//! - per host `i`: a namespace with `eth0` (MAC `02:77:00:00:<lab>:<i>`, 10.77.0.(10+i))
//!   on the bridge, a directory with genie.toml, a VM dir and the genie log;
//! - per host a BMC: `ipmi_sim` in its own namespace at 10.77.0.(100+i), port 623, user
//!   `admin` with a random password in a 0600 file, chassis power wired to the host by
//!   `wisp-lab-chassis` (off = every process of the host namespace killed, on = genie
//!   started in it, suspended = its processes frozen and its link cut);
//! - optionally the Wake-on-LAN listener `wisp-lab-wol` on `br0`, the router, and the
//!   witness QMP socket on every qemu (`Lab::start_with_witness`).
//!
//! Dropping the `Lab` tears all of it down by PID and name, even after a failed
//! assertion: child processes, every process left in the lab's namespaces (genies,
//! qemu), the namespaces, and the temp dir (kept when `WISP_LAB_KEEP=1`).
//!
//! Where things are, by concern:
//! - [`spec`]: what a lab is (the spec and its presets, hosts, names, the `Lab` itself);
//! - [`net`]: namespaces, bridge, veths, cutting and restoring links;
//! - [`hosts`]: the hosts' files and processes (genie, power as the chassis sees it,
//!   the Wake-on-LAN listener); [`bmc`]: their BMCs; [`power`]: the one power action,
//!   with [`freeze`] and [`link`] for sleep; [`sleep`]: sleep, wake and power loss for
//!   tests;
//! - [`router`]: the router process, its config and its CLI; [`api`]: the CLI's rows;
//! - [`vms`]: guests the lab or the router starts; [`guest`]: the guest images;
//! - [`witness`]: independent checks (the witness QMP socket, census, guest counters);
//! - plumbing: [`bins`], [`cmd`], [`configs`], [`names`], [`procs`], [`qmp`], [`capture`].
//!
//! This file holds what every part shares: the error type, the deadline and `poll`,
//! and the order in which a lab is brought up and torn down.

pub mod api;
pub mod bins;
pub mod bmc;
pub mod capture;
pub mod chaos;
pub mod cmd;
pub mod configs;
pub mod etcd;
pub mod freeze;
pub mod guest;
pub mod ha;
pub mod hosts;
pub mod link;
pub mod linux;
pub mod names;
pub mod net;
pub mod power;
pub mod procs;
pub mod qmp;
pub mod router;
pub mod sampler;
pub mod sleep;
pub mod spec;
pub mod vms;
pub mod witness;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use api::{EventRow, HostRow, MigrationRow, VmRow};
pub use capture::{Capture, CaptureError};
pub use names::{mac_string, Names};
pub use power::{OffHow, Power};
pub use qmp::{query_status, Qmp, QmpError};
pub use router::cli_result;
pub use spec::{GenieMode, HostInfo, Lab, LabSpec};
pub use vms::VmHandle;
pub use witness::{Census, CensusProbe, SeenVm};

use bins::BinError;
use cmd::CmdError;
use power::PowerError;
use wisp_bmc::testkit::TestkitError;

/// Generous deadline for anything the lab waits for on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces, raw sockets); run the tests as root")]
    NotRoot,
    #[error("`{program}` is not installed (not on PATH): install {package}")]
    MissingTool {
        program: &'static str,
        package: &'static str,
    },
    #[error("a lab has 1 to {max} hosts, not {hosts}", max = names::MAX_HOSTS)]
    BadHostCount { hosts: usize },
    #[error(transparent)]
    Bin(#[from] BinError),
    #[error("cannot create lab file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // getrandom's error implements std::error::Error only with its "std" feature.
    #[error("cannot get random bytes for a secret: {reason}")]
    Random { reason: String },
    #[error("lab network setup failed")]
    Net(#[source] CmdError),
    #[error("lab command failed")]
    Cmd(#[from] CmdError),
    #[error("lab BMC of {host} failed")]
    Bmc {
        host: String,
        #[source]
        source: TestkitError,
    },
    #[error("lab power action failed")]
    Power(#[from] PowerError),
    #[error("QMP of VM {vm}")]
    Qmp {
        vm: String,
        #[source]
        source: QmpError,
    },
    #[error("packet capture failed")]
    Capture(#[from] CaptureError),
    #[error("timed out after {secs} s waiting for {what}{detail}")]
    Timeout {
        what: String,
        secs: u64,
        detail: String,
    },
    #[error("qemu for VM {vm} failed to start: {log}")]
    Qemu { vm: String, log: String },
    #[error("no live qemu of VM {vm} in the namespace of h{host}")]
    NoQemu { vm: String, host: usize },
    #[error("{count} live qemu processes of VM {vm} in the namespace of h{host}: {pids:?}")]
    ManyQemu {
        vm: String,
        host: usize,
        count: usize,
        pids: Vec<i32>,
    },
    #[error("no host {index} in this lab of {hosts}")]
    NoHost { index: usize, hosts: usize },
    #[error("`router {args}` printed JSON that does not match the contract: {text}")]
    BadJson {
        args: String,
        text: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("`router {args}` failed: {stderr}")]
    Cli { args: String, stderr: String },
    #[error("the router is not running in this lab")]
    NoRouter,
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `timeout` with the
/// last state `f` described in `last` (for a useful message).
pub fn poll<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut(&mut String) -> Option<T>,
) -> Result<T, LabError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Some(v) = f(&mut last) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: what.to_owned(),
                secs: timeout.as_secs(),
                detail: if last.is_empty() {
                    String::new()
                } else {
                    format!(" (last: {last})")
                },
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Starts `c` with no stdin and its stdout and stderr in the file at `log` (appended
/// to, so a restarted process keeps its predecessor's lines).
fn spawn_logged(
    c: &mut std::process::Command,
    log: &Path,
) -> Result<std::process::Child, LabError> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(log))?;
    let err = out.try_clone().map_err(io_err(log))?;
    c.stdin(std::process::Stdio::null()).stdout(out).stderr(err);
    let child = c.spawn().map_err(|source| CmdError::Spawn {
        command: cmd::describe(c),
        source,
    })?;
    Ok(child)
}

/// Tools the lab runs; checked up front so a missing one fails the test loudly with
/// the package to install, instead of half-way through a scenario.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ipmi_sim", "openipmi"),
    ("ipmitool", "ipmitool"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("tcpdump", "tcpdump"),
    ("setsid", "util-linux"),
];

/// The full path of `program` on PATH.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Lab {
    /// Builds and starts a lab. On error, whatever was already started is torn down
    /// (the half-built `Lab` is dropped).
    pub fn start(spec: LabSpec) -> Result<Lab, LabError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        for &(program, package) in TOOLS {
            if find_on_path(program).is_none() {
                return Err(LabError::MissingTool { program, package });
            }
        }
        if spec.hosts == 0 || spec.hosts > names::MAX_HOSTS {
            return Err(LabError::BadHostCount { hosts: spec.hosts });
        }
        let bins = spec::Bins::find(&spec)?;
        // A test binary killed by SIGKILL never ran `Drop`: clean up after it first.
        net::reap_stale_labs();
        let names = Names::fresh();
        let dir = std::env::temp_dir().join(format!("wisp-lab-{}", names.tag));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut lab = Lab::empty(names, dir, bins);
        lab.setup(&spec)?;
        Ok(lab)
    }

    /// Files first (everything a process reads at start), then processes in the order
    /// they depend on each other.
    fn setup(&mut self, spec: &LabSpec) -> Result<(), LabError> {
        self.create_network(spec.hosts)?;
        self.write_shared_files()?;
        for i in 1..=spec.hosts {
            self.add_host(i, spec)?;
        }
        self.write_router_toml(&spec.router_extra_toml)?;
        self.write_lab_file()?;

        // BMCs take a moment to come up: start them all, then the rest, then wait.
        self.start_bmcs()?;
        if spec.wol_listener {
            self.start_wol()?;
        }
        if spec.start_router {
            self.start_router()?;
        }
        if spec.hosts_on {
            for i in 1..=spec.hosts {
                self.power_on(i)?;
            }
        }
        for i in 1..=spec.hosts {
            self.wait_bmc(i)?;
        }
        Ok(())
    }

    fn teardown(&mut self) {
        self.kill_children();
        self.remove_namespaces();
        if self.keep {
            eprintln!("lab: WISP_LAB_KEEP=1, keeping {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}
