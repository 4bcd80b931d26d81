//! What a lab is: the spec a test asks for (and the presets tests and benches share),
//! the hosts with their names and addresses, the binaries it runs, and the `Lab`
//! value that owns all of it.
//!
//! The `Lab`'s fields are private to the lab module: other files of the lab add
//! behaviour by concern (`impl Lab` in net.rs, hosts.rs, router.rs, ...), tests only
//! see the methods.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;

use wisp_bmc::testkit::SimFiles;

use super::bins::{self, BinError};
use super::{LabError, Names};

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
    /// Run every genie's qemu through the witness wrapper (see witness.rs), so tests
    /// can ask QEMU itself about VMs the router created. `Lab::start_with_witness`.
    pub witness: bool,
    /// Where the binaries are (default: `$WISP_BIN_DIR` or the running executable's
    /// target dir).
    pub bin_dir: Option<PathBuf>,
    /// Hosts (1-based) that cannot suspend to RAM: their `sys-power/state` is
    /// `freeze disk` (soft-off only, like many servers). See [`LabSpec::no_ram_suspend`].
    pub no_ram_suspend: Vec<usize>,
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
            witness: false,
            bin_dir: None,
            no_ram_suspend: Vec::new(),
        }
    }
}

impl LabSpec {
    /// The preset of the VM, HA and migration tests and benches: `hosts` hosts with
    /// real genies and the router, no Wake-on-LAN listener (nothing sleeps there).
    /// Start it with [`Lab::start_vms`] or [`Lab::start_with_witness`].
    pub fn vms(hosts: usize) -> Self {
        Self {
            hosts,
            wol_listener: false,
            ..Self::default()
        }
    }

    /// Extra router.toml lines (see [`LabSpec::router_extra_toml`]).
    pub fn router_toml(mut self, extra: &str) -> Self {
        self.router_extra_toml = extra.to_owned();
        self
    }

    /// Makes `hosts` (1-based) soft-off-only: no suspend-to-RAM in their
    /// `sys-power/state`.
    pub fn no_ram_suspend(mut self, hosts: Vec<usize>) -> Self {
        self.no_ram_suspend = hosts;
        self
    }

    /// For benches: they build in release, but `cargo build --workspace --bins`
    /// builds the lab's binaries in debug, so use `<target>/debug` unless
    /// `WISP_BIN_DIR` says otherwise.
    pub fn bench_bins(mut self) -> Self {
        self.bin_dir = bins::bench_bin_dir();
        self
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
    /// `<dir>/sys-power`: the host's `state` and `mem_sleep` (what it can sleep as).
    pub sys_power: PathBuf,
    /// The BMC's files (lan.conf, the 0600 admin password file, its log).
    pub bmc: SimFiles,
}

/// The binaries the lab runs, found before anything is created.
#[derive(Debug)]
pub(super) struct Bins {
    pub chassis: PathBuf,
    pub wol: PathBuf,
    pub genie: Option<PathBuf>,
    pub router: Option<PathBuf>,
}

impl Bins {
    pub(super) fn find(spec: &LabSpec) -> Result<Self, LabError> {
        let dir = bins::bin_dir(spec.bin_dir.as_deref())?;
        Ok(Self {
            chassis: bins::find(&dir, "wisp-lab-chassis")?,
            wol: bins::find(&dir, "wisp-lab-wol")?,
            genie: match spec.genie {
                GenieMode::Real => Some(bins::find(&dir, "genie")?),
                GenieMode::StandIn(_) => None,
            },
            // A lab without a running router still lets a test start one later.
            router: if spec.start_router {
                Some(bins::find(&dir, "router")?)
            } else {
                bins::find(&dir, "router").ok()
            },
        })
    }
}

/// A running lab; dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    pub(super) names: Names,
    pub(super) dir: PathBuf,
    pub(super) keep: bool,
    pub(super) namespaces: Vec<String>,
    pub(super) hosts: Vec<HostInfo>,
    pub(super) bmcs: Vec<Option<Child>>,
    pub(super) wol: Option<Child>,
    pub(super) router: Option<Child>,
    pub(super) bins: Bins,
    pub(super) secret_file: PathBuf,
    pub(super) router_toml: PathBuf,
    pub(super) guest: PathBuf,
}

impl Lab {
    /// A lab with nothing created yet but its directory.
    pub(super) fn empty(names: Names, dir: PathBuf, bins: Bins) -> Self {
        Self {
            secret_file: dir.join("cluster.secret"),
            router_toml: dir.join("router.toml"),
            guest: dir.join("images").join("guest.elf"),
            names,
            dir,
            keep: std::env::var("WISP_LAB_KEEP").is_ok_and(|v| v == "1"),
            namespaces: Vec::new(),
            hosts: Vec::new(),
            bmcs: Vec::new(),
            wol: None,
            router: None,
            bins,
        }
    }

    /// The preset of the VM tests and benches: [`Lab::start_with_witness`], then wait
    /// until every host is up with metrics (placement needs a host's capacity).
    pub fn start_vms(spec: LabSpec) -> Result<Lab, LabError> {
        let lab = Lab::start_with_witness(spec)?;
        lab.wait_all_up_with_metrics()?;
        Ok(lab)
    }

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
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }
    /// The lab's namespaces (core, then host and BMC namespaces).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The path of a binary the lab found, or the error telling what to build.
    pub(super) fn bin(&self, which: Option<&PathBuf>, name: &str) -> Result<PathBuf, LabError> {
        which.cloned().ok_or_else(|| {
            LabError::Bin(BinError::Missing {
                name: name.into(),
                dir: self.dir.clone(),
            })
        })
    }
}
