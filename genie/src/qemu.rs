//! QEMU processes: runtime file names, the generated command line, starting a
//! daemonized qemu, and reading/killing it by pid through /proc.
//!
//! qemu is started with `-daemonize`: it detaches into its own session once it is
//! initialised (QMP socket listening, pid file written), so a genie stop or restart
//! never takes the VM down with it, and "the spawned process exited 0" means "ready".

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wisp_common::{wait, VmId, VmSpec};

/// How long qemu may take to initialise and daemonize. It takes 0.1–0.3 s here; a
/// loaded 2-core machine can be 50× slower, and anything beyond this is a hang.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// /proc reports CPU times in USER_HZ, which the kernel fixes at 100 for user space.
const USER_HZ: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot create runtime file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program} for VM {vm}")]
    Spawn {
        vm: VmId,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu for VM {vm} exited with {status}; log {log} ends with: {tail}")]
    Exited {
        vm: VmId,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "qemu for VM {vm} did not daemonize within {timeout_ms} ms; log {log} ends with: {tail}"
    )]
    StartTimeout {
        vm: VmId,
        timeout_ms: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("no free port on {addr} for an incoming migration of VM {vm}")]
    NoPort {
        vm: VmId,
        addr: std::net::IpAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The runtime files of one VM in vm_dir (docs/CONTRACTS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    pub qmp: PathBuf,
    pub pid: PathBuf,
    pub json: PathBuf,
    pub log: PathBuf,
}

impl VmPaths {
    pub fn new(vm_dir: &Path, vm: &VmId) -> Self {
        let f = |ext: &str| vm_dir.join(format!("{vm}.{ext}"));
        Self {
            qmp: f("qmp"),
            pid: f("pid"),
            json: f("json"),
            log: f("log"),
        }
    }

    /// Removes every runtime file; missing files are fine.
    pub fn remove_all(&self) {
        for p in [&self.qmp, &self.pid, &self.json, &self.log] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `<vm>.json`: the spec and fencing epoch the genie started the VM with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFile {
    pub spec: VmSpec,
    pub epoch: u64,
}

pub fn write_runtime_file(path: &Path, spec: &VmSpec, epoch: u64) -> Result<(), QemuError> {
    let body = serde_json::to_vec_pretty(&RuntimeFile {
        spec: spec.clone(),
        epoch,
    })
    .expect("VmSpec always serialises");
    // Write then rename, so a crash never leaves a half-written file that would hide
    // the epoch from a restarted genie.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| QemuError::File {
            path: path.to_owned(),
            source,
        })
}

/// The runtime file if present and readable (absent for a qemu someone else started).
pub fn read_runtime_file(path: &Path) -> Option<RuntimeFile> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The qemu arguments (without the program) for `spec`.
pub fn command_line(spec: &VmSpec, paths: &VmPaths, incoming: Option<SocketAddr>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::with_capacity(24);
    let mut push = |s: &str| a.push(s.into());
    push("-name");
    push(spec.name.as_str());
    push("-machine");
    // TCG: the KVM on our machines is a software one and much slower (ARCHITECTURE.md, QEMU).
    push("q35,accel=tcg");
    push("-m");
    push(&spec.mem_mib.to_string());
    push("-smp");
    push(&spec.vcpus.max(1).to_string());
    push("-nodefaults");
    push("-display");
    push("none");
    let mut qmp = OsString::from("unix:");
    qmp.push(&paths.qmp);
    qmp.push(",server=on,wait=off");
    let mut pid = OsString::new();
    pid.push(&paths.pid);
    a.push("-qmp".into());
    a.push(qmp);
    a.push("-pidfile".into());
    a.push(pid);
    a.push("-daemonize".into());
    if let Some(k) = &spec.kernel {
        a.push("-kernel".into());
        a.push(k.into());
    }
    if let Some(d) = &spec.disk {
        let mut drive = OsString::from("file=");
        drive.push(d);
        drive.push(",if=virtio");
        a.push("-drive".into());
        a.push(drive);
    }
    if let Some(addr) = incoming {
        a.push("-incoming".into());
        a.push(format!("tcp:{}:{}", addr.ip(), addr.port()).into());
    }
    a
}

/// A port on `addr` that was free a moment ago, for `-incoming`.
pub fn free_port(vm: &VmId, addr: std::net::IpAddr) -> Result<SocketAddr, QemuError> {
    let l = std::net::TcpListener::bind((addr, 0)).map_err(|source| QemuError::NoPort {
        vm: vm.clone(),
        addr,
        source,
    })?;
    l.local_addr().map_err(|source| QemuError::NoPort {
        vm: vm.clone(),
        addr,
        source,
    })
}

/// Runs qemu with `args`, stdout/stderr appended to the log, and waits until it has
/// daemonized. Errors carry the tail of qemu's log.
pub async fn start(
    qemu: &Path,
    vm: &VmId,
    args: &[OsString],
    paths: &VmPaths,
) -> Result<(), QemuError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|source| QemuError::File {
            path: paths.log.clone(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| QemuError::File {
        path: paths.log.clone(),
        source,
    })?;
    let mut child = tokio::process::Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Until it daemonizes, keep qemu out of our process group so a Ctrl-C aimed at
        // an interactive genie does not reach it either.
        .process_group(0)
        .spawn()
        .map_err(|source| QemuError::Spawn {
            vm: vm.clone(),
            program: qemu.to_owned(),
            source,
        })?;
    match tokio::time::timeout(START_TIMEOUT, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(QemuError::Exited {
            vm: vm.clone(),
            status: st.to_string(),
            log: paths.log.clone(),
            tail: log_tail(&paths.log),
        }),
        Ok(Err(source)) => Err(QemuError::Spawn {
            vm: vm.clone(),
            program: qemu.to_owned(),
            source,
        }),
        Err(_) => {
            let _ = child.start_kill();
            Err(QemuError::StartTimeout {
                vm: vm.clone(),
                timeout_ms: START_TIMEOUT.as_millis() as u64,
                log: paths.log.clone(),
                tail: log_tail(&paths.log),
            })
        }
    }
}

/// The last few lines of a log, on one line, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail.join(" | ")
    }
}

/// The pid in a `-pidfile`, if present.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Fields after the `(comm)` of /proc/<pid>/stat (comm may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// True if `pid` exists and is not a zombie. (`kill -0` is not enough: with no init
/// reaping orphans, a killed qemu lingers as a zombie for a while; ARCHITECTURE.md, The lab.)
pub fn is_alive(pid: u32) -> bool {
    match stat_fields(pid) {
        Some(f) => !matches!(f.first().map(String::as_str), Some("Z" | "X")),
        None => false,
    }
}

/// True if `pid` is alive and is the qemu of `vm` (guards against pid reuse before we
/// send it a signal).
pub fn is_our_qemu(pid: u32, vm: &VmId) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmd.split(|b| *b == 0);
    while let Some(a) = args.next() {
        if a == b"-name" {
            // `-name vm1` or `-name vm1,debug-threads=on` (or `guest=vm1,...`).
            let Some(v) = args.next() else { return false };
            let first = v.split(|b| *b == b',').next().unwrap_or_default();
            let first = first.strip_prefix(b"guest=").unwrap_or(first);
            return first == vm.as_str().as_bytes();
        }
    }
    false
}

/// utime + stime of `pid`, in ms.
pub fn cpu_time_ms(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    // After `(comm)`: state is field 3 of stat, utime 14, stime 15 → indexes 11, 12 here.
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ut + st) * 1000 / USER_HZ)
}

/// SIGKILL to `pid` if it is still the qemu of `vm`. True if a signal was sent.
pub fn kill(pid: u32, vm: &VmId) -> bool {
    if !is_our_qemu(pid, vm) {
        return false;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}

/// Polls until `pid` is gone (or a zombie) or `timeout` passes. True if gone.
/// Nothing announces a process's exit to us (qemu is not our child after a genie
/// restart), so asking every 20 ms is the way; a stop waits at most that much longer.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let gone = || std::future::ready((!is_alive(pid)).then_some(()));
    let what = format!("qemu pid {pid} to exit");
    wait::until(deadline, Duration::from_millis(20), what, gone)
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: VmId::new("vm1").unwrap(),
            vcpus: 2,
            mem_mib: 64,
            disk: Some("/d/disk.img".into()),
            kernel: Some("/k/guest.elf".into()),
            priority: 0,
        }
    }

    fn strs(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn command_line_follows_the_contract() {
        let p = VmPaths::new(Path::new("/v"), &VmId::new("vm1").unwrap());
        let a = strs(&command_line(&spec(), &p, None));
        let want: Vec<String> = [
            "-name",
            "vm1",
            "-machine",
            "q35,accel=tcg",
            "-m",
            "64",
            "-smp",
            "2",
            "-nodefaults",
            "-display",
            "none",
            "-qmp",
            "unix:/v/vm1.qmp,server=on,wait=off",
            "-pidfile",
            "/v/vm1.pid",
            "-daemonize",
            "-kernel",
            "/k/guest.elf",
            "-drive",
            "file=/d/disk.img,if=virtio",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(a, want);
    }

    #[test]
    fn incoming_and_minimal_spec() {
        let mut s = spec();
        s.kernel = None;
        s.disk = None;
        let p = VmPaths::new(Path::new("/v"), &s.name);
        let a = strs(&command_line(
            &s,
            &p,
            Some("10.0.0.2:4444".parse().unwrap()),
        ));
        assert!(!a.contains(&"-kernel".to_string()));
        assert!(!a.contains(&"-drive".to_string()));
        assert_eq!(&a[a.len() - 2..], ["-incoming", "tcp:10.0.0.2:4444"]);
    }

    #[test]
    fn runtime_file_round_trip_and_proc_reading() {
        let dir = std::env::temp_dir().join(format!("genie-qemu-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = VmPaths::new(&dir, &spec().name);
        write_runtime_file(&p.json, &spec(), 7).unwrap();
        let r = read_runtime_file(&p.json).unwrap();
        assert_eq!((r.spec, r.epoch), (spec(), 7));
        p.remove_all();
        assert!(!p.json.exists());
        std::fs::remove_dir_all(&dir).unwrap();

        let me = std::process::id();
        assert!(is_alive(me));
        assert!(cpu_time_ms(me).is_some());
        assert!(!is_our_qemu(me, &spec().name));
        assert!(!is_alive(u32::MAX / 2));
    }
}
