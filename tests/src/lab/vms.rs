//! Guests in the lab: the images (the lab's tick-counting guest, and the same guest
//! filling its memory first), qemu VMs the lab starts by itself in a host's namespace
//! (the lab's own tests, without a genie in the way), and VMs created and moved
//! through the router's CLI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::api::MigrationRow;
use super::cmd::{self, CmdError};
use super::{guest, io_err, poll, Lab, LabError, Names, WAIT};

/// A VM the lab started.
#[derive(Debug, Clone)]
pub struct VmHandle {
    pub name: String,
    pub host: usize,
    /// The contract's QMP socket (`<vm_dir>/<vm>.qmp`): the genie holds it.
    pub qmp: PathBuf,
    /// The witness QMP socket (outside vm_dir, so the genie ignores it): witness.rs.
    pub witness: PathBuf,
    pub pid: u32,
    pub log: PathBuf,
}

impl Lab {
    /// The lab's guest image (in the lab dir, which every host reaches: the lab's
    /// shared storage).
    pub fn guest_elf(&self) -> &Path {
        &self.guest
    }

    /// The lab's shared image directory: every lab genie's `image_dirs`.
    pub fn images_dir(&self) -> PathBuf {
        self.dir.join("images")
    }

    /// Writes the filled guest (see [`guest::filled_elf`]) into the images dir and
    /// returns its path.
    pub fn filled_guest(&self, fill_mib: u32) -> Result<PathBuf, LabError> {
        let path = self.images_dir().join(format!("guest-fill{fill_mib}.elf"));
        fs::write(&path, guest::filled_elf(fill_mib)).map_err(io_err(&path))?;
        Ok(path)
    }

    /// Starts a qemu VM with the tiny guest in host `i`'s namespace, with the runtime
    /// files of docs/CONTRACTS.md in the host's vm_dir (`<name>.qmp`, `.pid`, `.log`)
    /// and a witness QMP socket. qemu daemonizes (its own session), so genie restarts
    /// never touch it.
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

    /// The contract QMP socket path of VM `name` on host `i`.
    pub fn vm_qmp(&self, i: usize, name: &str) -> Result<PathBuf, LabError> {
        Ok(self.host(i)?.vm_dir.join(format!("{name}.qmp")))
    }

    /// `router vm create NAME --vcpus 1 --mem MIB --kernel KERNEL [--host HOST]`;
    /// returns the CLI's output.
    pub fn vm_create(
        &self,
        name: &str,
        mem_mib: u64,
        kernel: &Path,
        host: Option<&str>,
    ) -> Result<String, LabError> {
        let mem = mem_mib.to_string();
        let kernel = kernel.to_string_lossy();
        let mut args = vec![
            "vm", "create", name, "--vcpus", "1", "--mem", &mem, "--kernel", &kernel,
        ];
        if let Some(h) = host {
            args.extend(["--host", h]);
        }
        self.router_ok(&args)
    }

    /// `router vm create NAME --mem MEM --kernel <the lab guest> --priority P [--host hN]`
    /// (no `--vcpus`: the router's default).
    pub fn create_guest_vm(
        &self,
        name: &str,
        mem_mib: u32,
        host: Option<usize>,
        priority: u8,
    ) -> Result<(), LabError> {
        let mem = mem_mib.to_string();
        let prio = priority.to_string();
        let kernel = self.guest.to_string_lossy().into_owned();
        let hn = host.map(Names::host_name);
        let mut args = vec![
            "vm",
            "create",
            name,
            "--mem",
            &mem,
            "--kernel",
            &kernel,
            "--priority",
            &prio,
        ];
        if let Some(h) = &hn {
            args.extend(["--host", h.as_str()]);
        }
        self.cli_ok(&args)
    }

    /// `router vm migrate NAME --to HOST --json`, typed.
    pub fn vm_migrate(&self, name: &str, to: &str) -> Result<MigrationRow, LabError> {
        self.cli_json(&["vm", "migrate", name, "--to", to, "--json"])
    }
}
