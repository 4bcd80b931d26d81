//! QEMU processes: runtime file names, the generated command line, starting a
//! daemonized qemu, and reading/killing it by pid through /proc.
//!
//! qemu is started with `-daemonize`: it detaches into its own session once it is
//! initialised (QMP socket listening, pid file written), so a genie stop or restart
//! never takes the VM down with it, and "the spawned process exited 0" means "ready".

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wisp_common::{wait, DiskFormat, MacAddr, VmId, VmSpec};

use crate::accel::Accel;

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
}

/// The runtime files of one VM in vm_dir (docs/CONTRACTS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    pub qmp: PathBuf,
    pub pid: PathBuf,
    pub json: PathBuf,
    pub log: PathBuf,
    /// The guest's serial console (a socket QEMU serves) and its bounded log.
    pub console: PathBuf,
    pub console_log: PathBuf,
}

impl VmPaths {
    pub fn new(vm_dir: &Path, vm: &VmId) -> Self {
        let f = |ext: &str| vm_dir.join(format!("{vm}.{ext}"));
        Self {
            qmp: f("qmp"),
            pid: f("pid"),
            json: f("json"),
            log: f("log"),
            console: f("console"),
            console_log: f("console.log"),
        }
    }

    /// Removes every runtime file; missing files are fine.
    pub fn remove_all(&self) {
        let old_console = crate::console::previous(&self.console_log);
        for p in [
            &self.qmp,
            &self.pid,
            &self.json,
            &self.log,
            &self.console,
            &self.console_log,
            &old_console,
        ] {
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

/// A spec made ready to run on this host: paths resolved and checked against
/// `image_dirs`, the disk's format known, a tap per NIC, the accelerator chosen.
/// Built by [`crate::launch::resolve`]; only this reaches the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub name: VmId,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub accel: Accel,
    pub cpu_model: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    pub disk: Option<(PathBuf, DiskFormat)>,
    pub nics: Vec<LaunchNic>,
    /// vhost-net for the NICs (KVM with /dev/vhost-net).
    pub vhost: bool,
}

/// One NIC: the tap QEMU creates and the guest's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchNic {
    pub tap: String,
    pub bridge: String,
    pub mac: MacAddr,
}

impl Launch {
    /// A VM with no disk, kernel or NIC under TCG (tests, tools).
    pub fn bare(spec: &VmSpec) -> Self {
        Self {
            name: spec.name.clone(),
            vcpus: spec.vcpus,
            mem_mib: spec.mem_mib,
            accel: Accel::Tcg,
            cpu_model: None,
            kernel: None,
            initrd: None,
            append: None,
            disk: None,
            nics: Vec::new(),
            vhost: false,
        }
    }
}

/// The qemu arguments (without the program) for `l`.
///
/// Nothing a user chose is parsed by QEMU as options: the disk goes in a `-blockdev`
/// JSON object (a comma in a file name is just a character), `-kernel`, `-initrd` and
/// `-append` take their argument whole, and the rest (tap names, MACs, CPU model
/// names, numbers) are generated or validated to contain no comma.
///
/// `incoming`: qemu waits for a migration (`-incoming defer`); the genie then picks the
/// port with `migrate-incoming`, which says when a port is in use, where a busy port on
/// the command line would only make qemu exit.
pub fn command_line(l: &Launch, paths: &VmPaths, incoming: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::with_capacity(40);
    let mut push = |s: &str| a.push(s.into());
    push("-name");
    push(l.name.as_str());
    push("-machine");
    push(&format!("q35,accel={}", l.accel.as_str()));
    if let Some(cpu) = &l.cpu_model {
        // enforce: a model this host cannot fully provide fails the start rather than
        // giving the guest a CPU that differs from the one on other hosts.
        push("-cpu");
        push(&format!("{cpu},enforce"));
    }
    push("-m");
    push(&l.mem_mib.to_string());
    push("-smp");
    push(&l.vcpus.max(1).to_string());
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
    // The serial console on a socket the genie reads (console.rs); wait=off: the guest
    // never blocks on a missing reader.
    let mut console = OsString::from("socket,id=ser0,path=");
    console.push(&paths.console);
    console.push(",server=on,wait=off");
    a.push("-chardev".into());
    a.push(console);
    a.push("-serial".into());
    a.push("chardev:ser0".into());
    for (flag, p) in [("-kernel", &l.kernel), ("-initrd", &l.initrd)] {
        if let Some(p) = p {
            a.push(flag.into());
            a.push(p.into());
        }
    }
    if let Some(append) = &l.append {
        a.push("-append".into());
        a.push(append.into());
    }
    if let Some((path, format)) = &l.disk {
        // cache.direct: O_DIRECT, no host page cache. With the image on shared
        // storage, a live migration's destination opens it while the source still
        // has it open; pages the destination's host cached earlier would be stale,
        // so no host cache at all (QEMU's cache=none). Writes still reach the
        // storage on the guest's flushes (no-flush stays off).
        let node = serde_json::json!({
            "driver": format.as_str(),
            "node-name": "disk0",
            "cache": {"direct": true, "no-flush": false},
            "file": {
                "driver": if is_block_device(path) { "host_device" } else { "file" },
                "filename": path.to_string_lossy(),
                "cache": {"direct": true, "no-flush": false},
            },
        });
        a.push("-blockdev".into());
        a.push(node.to_string().into());
        a.push("-device".into());
        a.push("virtio-blk-pci,drive=disk0,id=vblk0".into());
    }
    for (i, nic) in l.nics.iter().enumerate() {
        let vhost = if l.vhost { ",vhost=on" } else { "" };
        a.push("-netdev".into());
        a.push(
            format!(
                "tap,id=net{i},ifname={},script=no,downscript=no{vhost}",
                nic.tap
            )
            .into(),
        );
        a.push("-device".into());
        a.push(format!("virtio-net-pci,netdev=net{i},mac={},id=nic{i}", nic.mac).into());
    }
    if incoming {
        a.push("-incoming".into());
        a.push("defer".into());
    }
    a
}

fn is_block_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
}

/// The URI a source qemu migrates to, for a listener on `addr`:`port`.
pub fn migration_uri(addr: std::net::IpAddr, port: u16) -> String {
    // SocketAddr writes an IPv6 address in brackets, as QEMU wants it.
    format!("tcp:{}", std::net::SocketAddr::new(addr, port))
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
        let mut s = VmSpec::new(VmId::new("vm1").unwrap(), 2, 64);
        s.disk = Some("/d/disk.img".into());
        s.kernel = Some("/k/guest.elf".into());
        s
    }

    fn launch() -> Launch {
        let mut l = Launch::bare(&spec());
        l.kernel = Some("/k/guest.elf".into());
        l.disk = Some(("/d/disk.img".into(), DiskFormat::Raw));
        l
    }

    fn strs(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn command_line_follows_the_contract() {
        let p = VmPaths::new(Path::new("/v"), &VmId::new("vm1").unwrap());
        let a = strs(&command_line(&launch(), &p, false));
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
            "-chardev",
            "socket,id=ser0,path=/v/vm1.console,server=on,wait=off",
            "-serial",
            "chardev:ser0",
            "-kernel",
            "/k/guest.elf",
            "-blockdev",
            r#"{"cache":{"direct":true,"no-flush":false},"driver":"raw","file":{"cache":{"direct":true,"no-flush":false},"driver":"file","filename":"/d/disk.img"},"node-name":"disk0"}"#,
            "-device",
            "virtio-blk-pci,drive=disk0,id=vblk0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(a, want);
    }

    #[test]
    fn a_comma_in_a_disk_path_stays_inside_the_file_name() {
        let mut l = launch();
        l.disk = Some(("/d/x.img,readonly=on,snapshot=on".into(), DiskFormat::Qcow2));
        let p = VmPaths::new(Path::new("/v"), &l.name);
        let a = strs(&command_line(&l, &p, false));
        let i = a.iter().position(|x| x == "-blockdev").unwrap();
        let node: serde_json::Value = serde_json::from_str(&a[i + 1]).unwrap();
        assert_eq!(node["file"]["filename"], "/d/x.img,readonly=on,snapshot=on");
        assert_eq!(node["driver"], "qcow2");
        assert!(node.get("read-only").is_none() && node.get("snapshot").is_none());
        assert!(!a.iter().any(|x| x == "-drive"));
    }

    #[test]
    fn kvm_cpu_initrd_append_and_nics() {
        let mut l = launch();
        l.accel = Accel::Kvm;
        l.cpu_model = Some("Nehalem".into());
        l.initrd = Some("/k/initrd.gz".into());
        l.append = Some("console=ttyS0 wisp.ip=10.0.0.5/24".into());
        l.vhost = true;
        l.nics = vec![
            LaunchNic {
                tap: "wt00000001n0".into(),
                bridge: "br0".into(),
                mac: "02:00:00:00:00:01".parse().unwrap(),
            },
            LaunchNic {
                tap: "wt00000001n1".into(),
                bridge: "br1".into(),
                mac: "02:00:00:00:00:02".parse().unwrap(),
            },
        ];
        let p = VmPaths::new(Path::new("/v"), &l.name);
        let a = strs(&command_line(&l, &p, false)).join(" ");
        for want in [
            "-machine q35,accel=kvm -cpu Nehalem,enforce",
            "-initrd /k/initrd.gz -append console=ttyS0 wisp.ip=10.0.0.5/24",
            "-netdev tap,id=net0,ifname=wt00000001n0,script=no,downscript=no,vhost=on -device virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,id=nic0",
            "-netdev tap,id=net1,ifname=wt00000001n1,script=no,downscript=no,vhost=on -device virtio-net-pci,netdev=net1,mac=02:00:00:00:00:02,id=nic1",
        ] {
            assert!(a.contains(want), "{want} not in {a}");
        }
    }

    #[test]
    fn incoming_and_minimal_spec() {
        let l = Launch::bare(&spec());
        let p = VmPaths::new(Path::new("/v"), &l.name);
        let a = strs(&command_line(&l, &p, true));
        assert!(!a.contains(&"-kernel".to_string()));
        assert!(!a.contains(&"-blockdev".to_string()));
        assert!(!a.contains(&"-cpu".to_string()));
        assert_eq!(&a[a.len() - 2..], ["-incoming", "defer"]);
        assert_eq!(
            migration_uri("10.0.0.2".parse().unwrap(), 49152),
            "tcp:10.0.0.2:49152"
        );
        assert_eq!(
            migration_uri("fd00::2".parse().unwrap(), 49153),
            "tcp:[fd00::2]:49153"
        );
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
