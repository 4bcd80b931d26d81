//! The lab: a small wisp cluster built from real parts on one machine.
//!
//! `Lab::start(LabSpec)` creates, for one test:
//! - a core namespace with bridge `br0` (10.77.0.1/24): the router's network;
//! - per host `i`: a namespace with `eth0` (MAC `02:77:00:00:<lab>:<i>`, 10.77.0.(10+i))
//!   on the bridge, a directory with genie.toml, a VM dir and the genie log;
//! - per host a BMC: `ipmi_sim` in its own namespace at 10.77.0.(100+i), port 623, user
//!   `admin` with a random password in a 0600 file, chassis power wired to the host by
//!   `wisp-lab-chassis` (off = every process of the host namespace killed, on = genie
//!   started in it);
//! - optionally the Wake-on-LAN listener `wisp-lab-wol` on `br0`, and the router.
//!
//! Dropping the `Lab` tears all of it down by PID and name, even after a failed
//! assertion: child processes, every process left in the lab's namespaces (genies,
//! qemu), the namespaces, and the temp dir (kept when `WISP_LAB_KEEP=1`).

pub mod api;
pub mod bins;
pub mod bmc;
pub mod capture;
pub mod cmd;
pub mod configs;
pub mod guest;
pub mod ha_ext;
pub mod names;
pub mod power;
pub mod procs;
pub mod qmp;
pub mod vm_ext;

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use api::{HostRow, VmRow};
pub use capture::{Capture, CaptureError};
pub use names::{mac_string, Names};
pub use power::{OffHow, Power};
pub use qmp::{query_status, Qmp, QmpError};

use bins::BinError;
use bmc::{BmcError, BmcFiles};
use cmd::CmdError;
use power::{HostFile, PowerError};

/// Generous deadline for anything the lab waits for on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// What the lab runs as a host's "operating system" when the host is powered on.
#[derive(Debug, Clone)]
pub enum GenieMode {
    /// The workspace's `genie` binary with the lab's genie.toml.
    Real,
    /// A stand-in command (e.g. `["sleep", "infinity"]`) for tests of the lab itself.
    StandIn(Vec<String>),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub hosts: usize,
    /// Start the Wake-on-LAN listener on the bridge.
    pub wol_listener: bool,
    pub start_router: bool,
    /// Extra top-level router.toml lines (override the lab's defaults of
    /// heartbeat/metrics/suspect/lease).
    pub router_extra_toml: String,
    pub genie: GenieMode,
    /// Power every host on at start (else they start off).
    pub hosts_on: bool,
    /// Where the binaries are (default: `$WISP_BIN_DIR` or the running executable's
    /// target dir).
    pub bin_dir: Option<PathBuf>,
}

impl Default for LabSpec {
    fn default() -> Self {
        Self {
            hosts: 3,
            wol_listener: true,
            start_router: true,
            router_extra_toml: String::new(),
            genie: GenieMode::Real,
            hosts_on: true,
            bin_dir: None,
        }
    }
}

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
    #[error("lab network setup failed")]
    Net(#[source] CmdError),
    #[error("lab command failed")]
    Cmd(#[from] CmdError),
    #[error("lab BMC setup failed")]
    Bmc(#[from] BmcError),
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

/// Everything about one lab host.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub index: usize,
    pub name: String,
    pub ns: String,
    pub bmc_ns: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub bmc_ip: Ipv4Addr,
    pub dir: PathBuf,
    pub vm_dir: PathBuf,
    pub genie_toml: PathBuf,
    pub genie_log: PathBuf,
    pub bmc: BmcFiles,
}

/// A VM the lab started.
#[derive(Debug, Clone)]
pub struct VmHandle {
    pub name: String,
    pub host: usize,
    /// The contract's QMP socket (`<vm_dir>/<vm>.qmp`): the genie holds it.
    pub qmp: PathBuf,
    /// A second QMP socket only tests use (outside vm_dir, so the genie ignores it).
    pub witness: PathBuf,
    pub pid: u32,
    pub log: PathBuf,
}

#[derive(Debug)]
struct Bins {
    chassis: PathBuf,
    wol: PathBuf,
    genie: Option<PathBuf>,
    router: Option<PathBuf>,
}

/// A running lab; dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    names: Names,
    dir: PathBuf,
    keep: bool,
    namespaces: Vec<String>,
    hosts: Vec<HostInfo>,
    bmcs: Vec<Option<Child>>,
    wol: Option<Child>,
    router: Option<Child>,
    bins: Bins,
    secret_file: PathBuf,
    router_toml: PathBuf,
    guest: PathBuf,
}

const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ipmi_sim", "openipmi"),
    ("ipmitool", "ipmitool"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("tcpdump", "tcpdump"),
    ("setsid", "util-linux"),
];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs `ip [-n ns] -batch -` with `lines` on stdin.
fn ip_batch(ns: Option<&str>, lines: &str) -> Result<(), CmdError> {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let describe = format!("{} <<< {lines:?}", cmd::describe(&c));
    let spawn_err = |source| CmdError::Spawn {
        command: describe.clone(),
        source,
    };
    let mut child = c.spawn().map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(lines.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(CmdError::Failed {
            command: describe,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

impl Lab {
    /// Builds and starts a lab. On error, whatever was already started is torn down.
    pub fn start(spec: LabSpec) -> Result<Lab, LabError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        for &(program, package) in TOOLS {
            if !on_path(program) {
                return Err(LabError::MissingTool { program, package });
            }
        }
        if spec.hosts == 0 || spec.hosts > names::MAX_HOSTS {
            return Err(LabError::BadHostCount { hosts: spec.hosts });
        }
        let bin_dir = bins::bin_dir(spec.bin_dir.as_deref())?;
        let bins = Bins {
            chassis: bins::find(&bin_dir, "wisp-lab-chassis")?,
            wol: bins::find(&bin_dir, "wisp-lab-wol")?,
            genie: match spec.genie {
                GenieMode::Real => Some(bins::find(&bin_dir, "genie")?),
                GenieMode::StandIn(_) => None,
            },
            router: if spec.start_router {
                Some(bins::find(&bin_dir, "router")?)
            } else {
                bins::find(&bin_dir, "router").ok()
            },
        };

        reap_stale_labs();
        let names = Names::fresh();
        let dir = std::env::temp_dir().join(format!("wisp-lab-{}", names.tag));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut lab = Lab {
            secret_file: dir.join("cluster.secret"),
            router_toml: dir.join("router.toml"),
            guest: dir.join("guest.elf"),
            names,
            dir,
            keep: std::env::var("WISP_LAB_KEEP").is_ok_and(|v| v == "1"),
            namespaces: Vec::new(),
            hosts: Vec::new(),
            bmcs: Vec::new(),
            wol: None,
            router: None,
            bins,
        };
        lab.setup(&spec)?;
        Ok(lab)
    }

    fn setup(&mut self, spec: &LabSpec) -> Result<(), LabError> {
        let n = spec.hosts;
        let core = self.names.core_ns();
        // Namespaces first, recorded before creation so a half-done setup is undone.
        let mut all = vec![core.clone()];
        for i in 1..=n {
            all.push(self.names.host_ns(i));
            all.push(self.names.bmc_ns(i));
        }
        self.namespaces = all.clone();
        let adds: String = all.iter().map(|ns| format!("netns add {ns}\n")).collect();
        ip_batch(None, &adds).map_err(LabError::Net)?;

        let mut core_cmds = format!(
            "link set lo up\nlink add br0 type bridge\naddr add {}/24 dev br0\nlink set br0 up\n",
            Names::router_ip()
        );
        for i in 1..=n {
            let mac = mac_string(&self.names.host_mac(i));
            core_cmds += &format!(
                "link add h{i} type veth peer name eth0 address {mac} netns {hns}\n\
                 link set h{i} master br0 up\n\
                 link add b{i} type veth peer name eth0 netns {bns}\n\
                 link set b{i} master br0 up\n",
                hns = self.names.host_ns(i),
                bns = self.names.bmc_ns(i),
            );
        }
        ip_batch(Some(&core), &core_cmds).map_err(LabError::Net)?;
        for i in 1..=n {
            for (ns, ip) in [
                (self.names.host_ns(i), Names::host_ip(i)),
                (self.names.bmc_ns(i), Names::bmc_ip(i)),
            ] {
                ip_batch(
                    Some(&ns),
                    &format!("link set lo up\naddr add {ip}/24 dev eth0\nlink set eth0 up\n"),
                )
                .map_err(LabError::Net)?;
            }
        }

        // Files: cluster secret, guest, per-host dirs and configs, BMCs.
        bmc::write_private(&self.secret_file, bmc::random_secret(32)?.as_bytes())?;
        fs::write(&self.guest, guest::elf()).map_err(io_err(&self.guest))?;
        for i in 1..=n {
            let name = Names::host_name(i);
            let hdir = self.dir.join(&name);
            let vm_dir = hdir.join("vms");
            fs::create_dir_all(&vm_dir).map_err(io_err(&vm_dir))?;
            let genie_toml = hdir.join("genie.toml");
            let genie_log = hdir.join("genie.log");
            let suspend = vec![
                self.bins.chassis.to_string_lossy().into_owned(),
                hdir.to_string_lossy().into_owned(),
                "suspend".to_owned(),
            ];
            fs::write(
                &genie_toml,
                configs::genie_toml(i, &self.secret_file, &vm_dir, &suspend),
            )
            .map_err(io_err(&genie_toml))?;
            let genie_argv = match (&spec.genie, &self.bins.genie) {
                (GenieMode::Real, Some(g)) => vec![
                    g.to_string_lossy().into_owned(),
                    "--config".to_owned(),
                    genie_toml.to_string_lossy().into_owned(),
                ],
                (GenieMode::StandIn(argv), _) => argv.clone(),
                (GenieMode::Real, None) => Vec::new(),
            };
            let ns = self.names.host_ns(i);
            power::write_host_file(
                &hdir,
                &HostFile {
                    name: name.clone(),
                    ns: ns.clone(),
                    genie_argv,
                    genie_log: genie_log.clone(),
                },
            )?;
            power::set_recorded(&hdir, Power::Off)?;
            let chassis_cmd = format!("{} {}", self.bins.chassis.display(), hdir.display());
            let bmc_dir = self.dir.join(format!("bmc-{name}"));
            let bmc = bmc::write_files(&bmc_dir, &name, Names::bmc_ip(i), &chassis_cmd, i)?;
            self.hosts.push(HostInfo {
                index: i,
                name,
                ns,
                bmc_ns: self.names.bmc_ns(i),
                mac: self.names.host_mac(i),
                ip: Names::host_ip(i),
                bmc_ip: Names::bmc_ip(i),
                dir: hdir,
                vm_dir,
                genie_toml,
                genie_log,
                bmc,
            });
        }
        let hosts: Vec<configs::RouterHost<'_>> = self
            .hosts
            .iter()
            .map(|h| configs::RouterHost {
                index: h.index,
                mac: h.mac,
                bmc_password_file: &h.bmc.password_file,
            })
            .collect();
        let state_dir = self.dir.join("router-state");
        fs::create_dir_all(&state_dir).map_err(io_err(&state_dir))?;
        let rt = configs::router_toml(
            &state_dir,
            &self.secret_file,
            &spec.router_extra_toml,
            &hosts,
        );
        fs::write(&self.router_toml, rt).map_err(io_err(&self.router_toml))?;
        self.write_lab_file()?;

        // Processes: BMCs (they take a moment), the WoL listener, the router, hosts.
        for h in self.hosts.clone() {
            let child = bmc::start(&h.bmc_ns, &h.name, &h.bmc)?;
            self.bmcs.push(Some(child));
        }
        if spec.wol_listener {
            self.start_wol()?;
        }
        if spec.start_router {
            self.start_router()?;
        }
        if spec.hosts_on {
            for i in 1..=n {
                self.power_on(i)?;
            }
        }
        for i in 1..=n {
            self.wait_bmc(i)?;
        }
        Ok(())
    }

    /// `<dir>/lab.json`: what the WoL listener needs (bridge, MACs, host dirs).
    fn write_lab_file(&self) -> Result<(), LabError> {
        let hosts: Vec<serde_json::Value> = self
            .hosts
            .iter()
            .map(|h| serde_json::json!({"mac": mac_string(&h.mac), "dir": h.dir}))
            .collect();
        let path = self.dir.join("lab.json");
        let v = serde_json::json!({"bridge": "br0", "hosts": hosts});
        fs::write(&path, v.to_string()).map_err(io_err(&path))
    }

    fn start_wol(&mut self) -> Result<(), LabError> {
        let log_path = self.dir.join("wol.log");
        let log = fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let log2 = log.try_clone().map_err(io_err(&log_path))?;
        let mut c = cmd::in_ns(&self.names.core_ns(), &self.bins.wol);
        c.arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = c.spawn().map_err(|source| CmdError::Spawn {
            command: cmd::describe(&c),
            source,
        })?;
        self.wol = Some(child);
        let wol = &mut self.wol;
        poll(WAIT, "the WoL listener to listen on br0", |last| {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            *last = text.trim().to_owned();
            if let Some(Ok(Some(_))) = wol.as_mut().map(|c| c.try_wait()) {
                return Some(Err(()));
            }
            text.contains("listening on").then_some(Ok(()))
        })?
        .map_err(|()| LabError::Timeout {
            what: "the WoL listener (it exited)".into(),
            secs: 0,
            detail: fs::read_to_string(&log_path).unwrap_or_default(),
        })
    }

    fn wait_bmc(&mut self, i: usize) -> Result<(), LabError> {
        let what = format!("the BMC of h{i} to answer ipmitool");
        poll(WAIT, &what, |last| {
            match self.ipmitool(i, &["chassis", "power", "status"]) {
                Ok(out) if out.status.success() => Some(()),
                Ok(out) => {
                    *last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                    None
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            }
        })
    }

    // ---- accessors ----

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn names(&self) -> &Names {
        &self.names
    }
    pub fn core_ns(&self) -> String {
        self.names.core_ns()
    }
    pub fn hosts(&self) -> &[HostInfo] {
        &self.hosts
    }
    /// Host `i` (1-based).
    pub fn host(&self, i: usize) -> Result<&HostInfo, LabError> {
        i.checked_sub(1)
            .and_then(|k| self.hosts.get(k))
            .ok_or(LabError::NoHost {
                index: i,
                hosts: self.hosts.len(),
            })
    }
    pub fn router_log(&self) -> PathBuf {
        self.dir.join("router.log")
    }
    pub fn wol_log(&self) -> PathBuf {
        self.dir.join("wol.log")
    }
    pub fn router_toml(&self) -> &Path {
        &self.router_toml
    }
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }
    pub fn guest_elf(&self) -> &Path {
        &self.guest
    }
    /// PID of the router process, if the lab runs one.
    pub fn router_pid(&self) -> Option<u32> {
        self.router.as_ref().map(Child::id)
    }
    /// PID of host `i`'s ipmi_sim, if running.
    pub fn bmc_pid(&self, i: usize) -> Option<u32> {
        self.bmcs.get(i.wrapping_sub(1))?.as_ref().map(Child::id)
    }
    /// PID of the WoL listener, if running.
    pub fn wol_pid(&self) -> Option<u32> {
        self.wol.as_ref().map(Child::id)
    }
    /// The lab's namespaces (core, then host and BMC namespaces).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    // ---- router ----

    /// Starts `router serve` in the core namespace and waits until its API answers.
    pub fn start_router(&mut self) -> Result<(), LabError> {
        let router = self.bins.router.clone().ok_or_else(|| {
            LabError::Bin(BinError::Missing {
                name: "router".into(),
                dir: self.dir.clone(),
            })
        })?;
        let log_path = self.router_log();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let log2 = log.try_clone().map_err(io_err(&log_path))?;
        let mut c = cmd::in_ns(&self.names.core_ns(), &router);
        c.arg("serve")
            .arg("--config")
            .arg(&self.router_toml)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = c.spawn().map_err(|source| CmdError::Spawn {
            command: cmd::describe(&c),
            source,
        })?;
        self.router = Some(child);
        poll(WAIT, "the router API to answer `router hosts`", |last| {
            if let Some(Ok(Some(st))) = self.router.as_mut().map(|c| c.try_wait()) {
                *last = format!(
                    "router exited {st}: {}",
                    fs::read_to_string(&log_path).unwrap_or_default().trim()
                );
                return Some(Err(()));
            }
            match self.router_cli(&["hosts", "--json"]) {
                Ok(o) if o.status.success() => Some(Ok(())),
                Ok(o) => {
                    *last = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                    None
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            }
        })?
        .map_err(|()| LabError::Cli {
            args: "serve".into(),
            stderr: fs::read_to_string(&log_path).unwrap_or_default(),
        })
    }

    /// SIGTERM to the router, then SIGKILL if it has not stopped within 10 s.
    pub fn stop_router(&mut self) {
        if let Some(mut c) = self.router.take() {
            procs::signal(c.id() as i32, Signal::SIGTERM);
            if !procs::wait_gone(&[c.id() as i32], Duration::from_secs(10)).is_empty() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// SIGKILL to the router (a crash).
    pub fn kill_router(&mut self) {
        if let Some(mut c) = self.router.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `router --api 127.0.0.1:7101 <args>` in the core namespace.
    pub fn router_cli(&self, args: &[&str]) -> Result<Output, LabError> {
        let router = self.bins.router.as_ref().ok_or(LabError::NoRouter)?;
        let mut c = cmd::in_ns(&self.names.core_ns(), router);
        c.args(["--api", configs::API_ADDR]).args(args);
        Ok(cmd::output(&mut c)?)
    }

    fn cli_json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T, LabError> {
        let out = self.router_cli(args)?;
        let joined = args.join(" ");
        if !out.status.success() {
            return Err(LabError::Cli {
                args: joined,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|source| LabError::BadJson {
            args: joined,
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
            source,
        })
    }

    /// `router hosts --json`, typed.
    pub fn hosts_json(&self) -> Result<Vec<HostRow>, LabError> {
        self.cli_json(&["hosts", "--json"])
    }

    /// `router vms --json`, typed.
    pub fn vms_json(&self) -> Result<Vec<VmRow>, LabError> {
        self.cli_json(&["vms", "--json"])
    }

    // ---- hosts: power, genie, links ----

    /// Powers host `i` on through the same action as IPMI and WoL.
    pub fn power_on(&self, i: usize) -> Result<bool, LabError> {
        Ok(power::power_on(&self.host(i)?.dir)?)
    }

    /// Powers host `i` off (hard) through the same action as IPMI.
    pub fn power_off(&self, i: usize) -> Result<(), LabError> {
        Ok(power::power_off(&self.host(i)?.dir, OffHow::Hard, None)?)
    }

    /// The power state the lab recorded for host `i`.
    pub fn power_state(&self, i: usize) -> Result<Power, LabError> {
        Ok(power::state(&self.host(i)?.dir)?)
    }

    /// PIDs of every live process in host `i`'s namespace.
    pub fn host_pids(&self, i: usize) -> Result<Vec<i32>, LabError> {
        Ok(procs::ns_pids(&self.host(i)?.ns)?)
    }

    /// PIDs of host `i`'s genie (processes whose command line starts like the genie's).
    pub fn genie_pids(&self, i: usize) -> Result<Vec<i32>, LabError> {
        let h = self.host(i)?;
        let hf = power::read_host_file(&h.dir)?;
        let Some(first) = hf.genie_argv.first() else {
            return Ok(Vec::new());
        };
        Ok(procs::ns_pids(&h.ns)?
            .into_iter()
            .filter(|p| {
                fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| c.split(|&b| b == 0).next() == Some(first.as_bytes()))
                    .unwrap_or(false)
            })
            .collect())
    }

    /// SIGKILLs host `i`'s genie (not its VMs) and waits until it is gone; returns the
    /// PIDs killed.
    pub fn kill_genie(&self, i: usize) -> Result<Vec<i32>, LabError> {
        let pids = self.genie_pids(i)?;
        for &p in &pids {
            procs::signal(p, Signal::SIGKILL);
        }
        let left = procs::wait_gone(&pids, WAIT);
        if !left.is_empty() {
            return Err(LabError::Timeout {
                what: format!("genie of h{i} to die"),
                secs: WAIT.as_secs(),
                detail: format!(" (still alive: {left:?})"),
            });
        }
        Ok(pids)
    }

    /// Starts host `i`'s genie again (the host stays on).
    pub fn start_genie(&self, i: usize) -> Result<(), LabError> {
        let hf = power::read_host_file(&self.host(i)?.dir)?;
        Ok(power::start_genie(&hf)?)
    }

    /// Starts a genie for host `i` whose secret file holds `secret` (a wrong one, for
    /// the authentication test). Returns its log file.
    pub fn start_genie_with_secret(&self, i: usize, secret: &str) -> Result<PathBuf, LabError> {
        let h = self.host(i)?;
        let genie = self.bins.genie.clone().ok_or_else(|| {
            LabError::Bin(BinError::Missing {
                name: "genie".into(),
                dir: self.dir.clone(),
            })
        })?;
        let secret_file = h.dir.join("other.secret");
        bmc::write_private(&secret_file, secret.as_bytes())?;
        let toml = fs::read_to_string(&h.genie_toml).map_err(io_err(&h.genie_toml))?;
        let toml = toml.replace(
            &configs::q(self.secret_file.to_string_lossy()),
            &configs::q(secret_file.to_string_lossy()),
        );
        let alt = h.dir.join("genie-other-secret.toml");
        fs::write(&alt, toml).map_err(io_err(&alt))?;
        let log = h.dir.join("genie-other-secret.log");
        power::start_genie(&HostFile {
            name: h.name.clone(),
            ns: h.ns.clone(),
            genie_argv: vec![
                genie.to_string_lossy().into_owned(),
                "--config".into(),
                alt.to_string_lossy().into_owned(),
            ],
            genie_log: log.clone(),
        })?;
        Ok(log)
    }

    fn set_port(&self, port: &str, up: bool) -> Result<(), LabError> {
        cmd::run(Command::new("ip").args([
            "-n",
            &self.names.core_ns(),
            "link",
            "set",
            port,
            if up { "up" } else { "down" },
        ]))?;
        Ok(())
    }

    /// Takes host `i`'s bridge port down: the host is alive but cut off.
    pub fn cut_host_link(&self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        self.set_port(&format!("h{i}"), false)
    }
    pub fn restore_host_link(&self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        self.set_port(&format!("h{i}"), true)
    }
    /// Takes BMC `i`'s bridge port down: the BMC stops answering.
    pub fn cut_bmc(&self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        self.set_port(&format!("b{i}"), false)
    }
    pub fn restore_bmc(&self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        self.set_port(&format!("b{i}"), true)
    }
    /// Kills BMC `i`'s ipmi_sim.
    pub fn stop_bmc(&mut self, i: usize) -> Result<(), LabError> {
        self.host(i)?;
        if let Some(mut c) = self.bmcs.get_mut(i - 1).and_then(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Runs `ipmitool -I lanplus -C 3` against BMC `i` from the core namespace, the
    /// password read from its file (never in argv).
    pub fn ipmitool(&self, i: usize, args: &[&str]) -> Result<Output, LabError> {
        let h = self.host(i)?;
        let mut c = cmd::in_ns(&self.names.core_ns(), "ipmitool");
        c.args([
            "-I",
            "lanplus",
            "-H",
            &h.bmc_ip.to_string(),
            "-U",
            "admin",
            "-f",
        ])
        .arg(&h.bmc.password_file)
        .args(["-C", "3", "-N", "1", "-R", "2"])
        .args(args);
        Ok(cmd::output(&mut c)?)
    }

    /// Runs `program args` in namespace `ns`.
    pub fn exec_in(&self, ns: &str, program: &str, args: &[&str]) -> Result<Output, LabError> {
        let mut c = cmd::in_ns(ns, program);
        c.args(args);
        Ok(cmd::output(&mut c)?)
    }

    /// Runs `program args` in `ns` with `input` on its stdin.
    pub fn exec_in_with_input(
        &self,
        ns: &str,
        program: &str,
        args: &[&str],
        input: &[u8],
    ) -> Result<Output, LabError> {
        let mut c = cmd::in_ns(ns, program);
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| {
            LabError::Cmd(CmdError::Spawn {
                command: format!("{program} {}", args.join(" ")),
                source,
            })
        };
        let mut child = c.spawn().map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).map_err(spawn_err)?;
        }
        child.wait_with_output().map_err(spawn_err)
    }

    /// Starts `tcpdump` on `iface` in `ns`; stop it to get the frames.
    pub fn tcpdump(&self, ns: &str, iface: &str, filter: &str) -> Result<Capture, LabError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Capture::start(
            ns,
            iface,
            filter,
            &self.dir,
            &format!("capture{n}"),
        )?)
    }

    // ---- VMs ----

    /// Starts a qemu VM with the tiny guest in host `i`'s namespace, with the runtime
    /// files of docs/CONTRACTS.md in the host's vm_dir (`<name>.qmp`, `.pid`, `.log`).
    /// qemu daemonizes (its own session), so genie restarts never touch it.
    pub fn start_qemu_vm(&self, i: usize, name: &str, mem_mib: u32) -> Result<VmHandle, LabError> {
        let h = self.host(i)?;
        let qmp = h.vm_dir.join(format!("{name}.qmp"));
        let pidfile = h.vm_dir.join(format!("{name}.pid"));
        let log = h.vm_dir.join(format!("{name}.log"));
        let witness = self.witness_qmp(i, name)?;
        if let Some(d) = witness.parent() {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let out = fs::File::create(&log).map_err(io_err(&log))?;
        let err = out.try_clone().map_err(io_err(&log))?;
        let mut c = cmd::in_ns(&h.ns, "qemu-system-x86_64");
        c.args(["-name", name, "-machine", "q35,accel=tcg", "-m"])
            .arg(mem_mib.to_string())
            .args(["-nodefaults", "-display", "none", "-daemonize", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", witness.display()))
            .arg("-pidfile")
            .arg(&pidfile)
            .arg("-kernel")
            .arg(&self.guest)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let status = c.status().map_err(|source| CmdError::Spawn {
            command: cmd::describe(&c),
            source,
        })?;
        if !status.success() {
            return Err(LabError::Qemu {
                vm: name.to_owned(),
                log: fs::read_to_string(&log).unwrap_or_default(),
            });
        }
        let pid = poll(WAIT, &format!("pidfile of VM {name}"), |_| {
            fs::read_to_string(&pidfile)
                .ok()?
                .trim()
                .parse::<u32>()
                .ok()
        })?;
        Ok(VmHandle {
            name: name.to_owned(),
            host: i,
            qmp,
            witness,
            pid,
            log,
        })
    }

    /// The QMP socket path of VM `name` on host `i`.
    pub fn vm_qmp(&self, i: usize, name: &str) -> Result<PathBuf, LabError> {
        Ok(self.host(i)?.vm_dir.join(format!("{name}.qmp")))
    }

    /// The witness QMP socket of a VM the lab started on host `i`.
    pub fn witness_qmp(&self, i: usize, name: &str) -> Result<PathBuf, LabError> {
        Ok(self
            .host(i)?
            .dir
            .join("witness")
            .join(format!("{name}.qmp")))
    }

    /// Reads the tiny guest's counter of VM `name` on host `i` over its witness QMP
    /// socket (only for VMs the lab started).
    pub fn read_counter(&self, i: usize, name: &str) -> Result<u32, LabError> {
        let path = self.witness_qmp(i, name)?;
        let qmp_err = |source| LabError::Qmp {
            vm: name.to_owned(),
            source,
        };
        Qmp::connect(&path)
            .and_then(|mut q| q.read_u32(guest::COUNTER_ADDR))
            .map_err(qmp_err)
    }

    // ---- teardown ----

    fn teardown(&mut self) {
        let mut children: Vec<Child> = Vec::new();
        children.extend(self.router.take());
        children.extend(self.wol.take());
        children.extend(self.bmcs.iter_mut().filter_map(Option::take));
        for c in &mut children {
            let _ = c.kill();
        }
        for c in &mut children {
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            if let Err(e) = procs::kill_ns(ns, None, Duration::from_secs(5)) {
                eprintln!("lab teardown: cannot empty namespace {ns}: {e}");
            }
        }
        let dels: String = self
            .namespaces
            .iter()
            .map(|ns| format!("netns del {ns}\n"))
            .collect();
        if !dels.is_empty() {
            // -force: continue past a namespace that was never created.
            let _ = ip_batch_force(&dels);
        }
        self.namespaces.clear();
        if self.keep {
            eprintln!("lab: WISP_LAB_KEEP=1, keeping {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Tears down what labs of dead processes left behind (a test binary killed by
/// SIGKILL or a timeout never runs `Drop`): namespaces named `wl<pid>x<n>-*` whose
/// creator PID is gone, every process in them, and their temp dirs. Labs of live
/// processes (parallel test binaries) are never touched.
fn reap_stale_labs() {
    let Ok(out) = cmd::run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    let mut stale: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ns| {
            let (tag, pid) = names::parse_ns(ns)?;
            let alive = i32::try_from(pid).is_ok_and(procs::is_alive);
            (!alive).then(|| (tag, ns.to_owned()))
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    stale.sort();
    for (_, ns) in &stale {
        eprintln!("lab: removing stale namespace {ns} (its creator is gone)");
        let _ = procs::kill_ns(ns, None, Duration::from_secs(5));
    }
    let dels: String = stale
        .iter()
        .map(|(_, ns)| format!("netns del {ns}\n"))
        .collect();
    let _ = ip_batch_force(&dels);
    stale.dedup_by(|a, b| a.0 == b.0);
    for (tag, _) in stale {
        let _ = fs::remove_dir_all(std::env::temp_dir().join(format!("wisp-lab-{tag}")));
    }
}

fn ip_batch_force(lines: &str) -> Result<(), CmdError> {
    let mut c = Command::new("ip");
    c.args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().map_err(|source| CmdError::Spawn {
        command: "ip -force -batch -".into(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(lines.as_bytes());
    }
    let _ = child.wait();
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}
